/* session_eval.c: a language model's evaluation as the configuration asks
 * for it (mpquant run and mpquant eval): a text in documents or windows, or
 * the generated protocol, where the evaluation set is sampled from the
 * full-precision model itself (stages/calibrate's generated source with
 * its own seed), so that perplexity, KL divergence and top-1 agreement are
 * measured in the model's training domain without any text. */
#include <stdio.h>
#include <string.h>

#include "mpq_calibrate.h"
#include "mpq_config.h"
#include "mpq_eval.h"
#include "mpq_session.h"

int mpq_session_eval_generated(const mpq_config *cfg) {
    return strcmp(cfg->eval.protocol, "generated") == 0;
}

mpq_err mpq_session_eval_named(mpq_ctx *ctx, mpq_err err, const char *model, const char *ref) {
    if (err != MPQ_ERR_NUMERIC)
        return err;
    char msg[MPQ_ERRMSG_MAX];
    snprintf(msg, sizeof msg, "%s", ctx->err_msg);
    mpq_err_clear(ctx);
    return MPQ_ERROR(MPQ_ERR_NUMERIC, "evaluating %s%s%s%s: %s", model, ref ? " (reference " : "",
                     ref ? ref : "", ref ? ")" : "", msg);
}

mpq_err mpq_session_eval_check(mpq_ctx *ctx, const mpq_config *cfg, int64_t docs) {
    if (!mpq_session_eval_generated(cfg)) {
        MPQ_CHECK(cfg->eval.text[0], MPQ_ERR_CONFIG, "%s: eval.text: no text file to evaluate on",
                  cfg->source);
        return MPQ_OK;
    }
    MPQ_CHECK(docs > 0, MPQ_ERR_CONFIG,
              "%s: eval.docs: the generated protocol needs a number of sequences (> 0)",
              cfg->source);
    MPQ_CHECK(!(strcmp(cfg->calibration.source, "generated") == 0 &&
                cfg->eval.seed == cfg->calibration.seed),
              MPQ_ERR_CONFIG,
              "%s: eval.seed %lld equals calibration.seed with generated calibration: the "
              "evaluation sequences would be the calibration sequences; choose another eval.seed",
              cfg->source, (long long)cfg->eval.seed);
    return MPQ_OK;
}

mpq_err mpq_session_eval_lm(mpq_ctx *ctx, const mpq_config *cfg, int64_t docs, mpq_family *f,
                            mpq_family *ref, const mpq_tokenizer *tok, mpq_lm_result *out) {
    MPQ_CALL(mpq_session_eval_check(ctx, cfg, docs));
    if (!mpq_session_eval_generated(cfg)) {
        const mpq_lm_protocol p = {.text = cfg->eval.text,
                                   .windows = strcmp(cfg->eval.protocol, "windows") == 0,
                                   .max_items = docs,
                                   .window = cfg->eval.window};
        MPQ_CALL(mpq_eval_lm(ctx, f, ref, tok, &p, out));
        return MPQ_OK;
    }
    mpq_calib_set *set = NULL;
    const int64_t ctxlen = mpq_family_get_info(f)->max_seq;
    const int64_t len =
        cfg->eval.window > 0 && cfg->eval.window < ctxlen ? cfg->eval.window : ctxlen;
    MPQ_CALL(mpq_calib_set_generated(ctx, ref ? ref : f, tok, docs, len, cfg->eval.temperature,
                                     (uint64_t)cfg->eval.seed, &set));
    mpq_err err = mpq_eval_lm_tokens(ctx, f, ref, set->tokens, set->offset, set->nsamples, out);
    mpq_calib_set_destroy(&set);
    MPQ_CALL(err);
    out->generated = 1;
    return MPQ_OK;
}
