/* session.c: the set-up that `mpquant run` and `mpquant sweep` share
 * (mpq_session.h): the model, tokenizer, rounding method, importance
 * estimator, candidates, layer selection, calibration samples and the
 * evaluation. The file checks are in session_files.c, the budget in
 * session_budget.c. */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_config.h"
#include "mpq_log.h"
#include "mpq_robust.h"
#include "mpq_session.h"
#include "session_internal.h"

void mpq_session_destroy(mpq_session **sp) {
    if (!sp || !*sp)
        return;
    mpq_session *s = *sp;
    mpq_free(s->excl);
    mpq_free(s->pin);
    mpq_free(s->extra);
    mpq_free(s->nc);
    mpq_free(s->cand);
    mpq_free(s->cand_rate);
    mpq_calib_set_destroy(&s->set);
    mpq_tokenizer_destroy(&s->tok);
    mpq_family_destroy(&s->ffp);
    mpq_family_destroy(&s->fq);
    mpq_model_close(&s->m);
    mpq_free(s);
    *sp = NULL;
}

mpq_err mpq_session_parse_spec(mpq_ctx *ctx, const mpq_config *cfg, const char *key,
                               const char *text, mpq_qspec *spec) {
    mpq_err e = mpq_qspec_parse(ctx, text, spec);
    if (e == MPQ_OK)
        return MPQ_OK;
    char msg[MPQ_ERRMSG_MAX];
    snprintf(msg, sizeof msg, "%s", ctx->err_msg);
    mpq_err_clear(ctx);
    /* A long text is cut so that the reason stays in the message. */
    return MPQ_ERROR(MPQ_ERR_CONFIG, "%s: %s: \"%.80s%s\": %s", cfg->source, key, text,
                     strlen(text) > 80 ? "..." : "", msg);
}

/* ---- candidates and layers ---------------------------------------------------------- */

static mpq_err setup_candidates(mpq_ctx *ctx, mpq_session *s, int uniform_spec);

mpq_err mpq_session_check_candidates(mpq_ctx *ctx, const mpq_config *cfg) {
    mpq_session s;
    memset(&s, 0, sizeof s);
    s.cfg = cfg;
    mpq_err err = setup_candidates(ctx, &s, 1);
    mpq_free(s.cand);
    mpq_free(s.cand_rate);
    return err;
}

const char *mpq_session_item_text(const mpq_qspec *spec, double rate, char *buf, size_t n) {
    mpq_qspec_format(spec, buf, n);
    if (rate >= 0.0) {
        const size_t len = strlen(buf);
        snprintf(buf + len, n - len, ";rate=%g", rate);
    }
    return buf;
}

const char *mpq_session_spec_text(const mpq_session *s, int64_t l, int32_t k, char *buf, size_t n) {
    return mpq_session_item_text(mpq_session_spec(s, l, k), mpq_session_cand_rate(s, k), buf, n);
}

double mpq_session_cand_rate(const mpq_session *s, int32_t k) {
    return k >= 0 && k < s->ncand && s->cand_rate ? s->cand_rate[k] : -1.0;
}

mpq_err mpq_session_parse_item(mpq_ctx *ctx, const mpq_config *cfg, const char *list,
                               const char *key, const char *item, const char *method,
                               mpq_qspec *out, double *rate) {
    char spec[MPQ_QSPEC_MAX], where[600];
    const char *semi = strchr(item, ';');
    *rate = -1.0;
    if (!semi)
        return mpq_session_parse_spec(ctx, cfg, key, item, out);
    mpq_config_origin(cfg, list, where, sizeof where);
    MPQ_CHECK((size_t)(semi - item) < sizeof spec, MPQ_ERR_CONFIG, "%s: %s: \"%.80s...\": too long",
              where, key, item);
    memcpy(spec, item, (size_t)(semi - item));
    spec[semi - item] = '\0';
    char *end = NULL;
    const double lam = strncmp(semi + 1, "rate=", 5) == 0 ? strtod(semi + 6, &end) : -1.0;
    MPQ_CHECK(end && end != semi + 6 && *end == '\0' && lam >= 0.0 && lam <= 1e6, MPQ_ERR_CONFIG,
              "%s: %s: \"%.200s\": after ';' expected rate=LAMBDA, 0 <= LAMBDA <= 1e6 (a "
              "rate-constrained candidate)",
              where, key, item);
    MPQ_CHECK(strcmp(cfg->round.loss, "layer") == 0, MPQ_ERR_CONFIG,
              "%s: %s: \"%.200s\": a rate-constrained candidate needs round.loss = \"layer\" "
              "(got \"%s\")",
              where, key, item, cfg->round.loss);
    MPQ_CHECK(strcmp(method, "gptq") == 0, MPQ_ERR_CONFIG,
              "%s: %s: \"%.200s\": a rate-constrained candidate is rounded by gptq only (got "
              "\"%s\")",
              where, key, item, method);
    *rate = lam;
    return mpq_session_parse_spec(ctx, cfg, key, spec, out);
}

/* Candidate item k: "spec", or "spec;rate=LAMBDA" for a rate-constrained
 * candidate (GPTQ with its own round.rate_lambda). */
static mpq_err parse_candidate(mpq_ctx *ctx, mpq_session *s, int64_t k) {
    const mpq_config *cfg = s->cfg;
    char key[64];
    snprintf(key, sizeof key, "quant.candidates[%lld]", (long long)k);
    return mpq_session_parse_item(ctx, cfg, "quant.candidates", key, cfg->quant.candidates.v[k],
                                  cfg->quant.method, &s->cand[k], &s->cand_rate[k]);
}

/* The candidates (identical on every rank: every rank parses the same
 * configuration). */
static mpq_err setup_candidates(mpq_ctx *ctx, mpq_session *s, int uniform_spec) {
    const mpq_config *cfg = s->cfg;
    /* A budget without candidates means the default candidates: asymmetric
     * int at 2, 3, 4 and 8 bits with quant.spec's granularity and scales. */
    static const int default_bits[] = {2, 3, 4, 8};
    const int listed = cfg->quant.candidates.n > 0;
    const int defaults =
        uniform_spec && !listed && (cfg->budget.avg_bits > 0.0 || cfg->budget.bytes > 0);
    s->mixed = listed || defaults;
    s->ncand = listed ? cfg->quant.candidates.n : (defaults ? 4 : uniform_spec);
    s->maxc = (int32_t)s->ncand + 1;
    MPQ_CHECK(s->ncand <= 1000, MPQ_ERR_CONFIG,
              "%s: quant.candidates: %lld candidates (at most 1000)", cfg->source,
              (long long)s->ncand);
    MPQ_ALLOC(s->cand, s->ncand > 0 ? s->ncand : 1);
    MPQ_ALLOC(s->cand_rate, s->ncand > 0 ? s->ncand : 1);
    for (int64_t k = 0; k < s->ncand; k++)
        s->cand_rate[k] = -1.0;
    if (listed) {
        for (int64_t k = 0; k < s->ncand; k++) {
            MPQ_CALL(parse_candidate(ctx, s, k));
            for (int64_t j = 0; j < k; j++)
                MPQ_CHECK(!mpq_qspec_equal(&s->cand[j], &s->cand[k]) ||
                              s->cand_rate[j] != s->cand_rate[k],
                          MPQ_ERR_CONFIG,
                          "%s: quant.candidates: items %lld and %lld are the same quantizer",
                          cfg->source, (long long)j, (long long)k);
        }
    } else if (defaults) {
        mpq_qspec base;
        MPQ_CALL(mpq_session_parse_spec(ctx, cfg, "quant.spec", cfg->quant.spec, &base));
        MPQ_CHECK(strcmp(base.ops->name, "int") == 0, MPQ_ERR_CONFIG,
                  "%s: quant.candidates: empty with a budget, so the default candidates (int "
                  "asymmetric at 2, 3, 4 and 8 bits) take quant.spec's granularity, but "
                  "quant.spec \"%s\" is not an int spec: list the candidates",
                  cfg->source, cfg->quant.spec);
        for (int k = 0; k < 4; k++) {
            char text[MPQ_QSPEC_MAX];
            s->cand[k] = base;
            s->cand[k].bits = default_bits[k];
            s->cand[k].sym = 0;
            /* Through the canonical text, so that the spec is validated. */
            mpq_qspec_format(&s->cand[k], text, sizeof text);
            MPQ_CALL(
                mpq_session_parse_spec(ctx, cfg, "quant.candidates (default)", text, &s->cand[k]));
        }
    } else if (uniform_spec) {
        MPQ_CALL(mpq_session_parse_spec(ctx, cfg, "quant.spec", cfg->quant.spec, &s->cand[0]));
    }
    return MPQ_OK;
}

static int layer_matches(const mpq_layer_info *li, const char *pattern) {
    return fnmatch(pattern, li->name, 0) == 0 || fnmatch(pattern, li->tensor, 0) == 0;
}

/* budget.pin item "pattern=spec": the layers it matches get the spec, as
 * candidate k when it is one, else as their extra candidate. */
static mpq_err pin_layers(mpq_ctx *ctx, mpq_session *s, const char *item) {
    const mpq_config *cfg = s->cfg;
    const mpq_family_info *fi = s->info;
    const char *eq = strchr(item, '=');
    char where[600]; /* for messages: the file's line or the -o that set budget.pin */
    MPQ_CHECK(eq && eq > item && eq[1], MPQ_ERR_CONFIG,
              "%s: budget.pin: item \"%s\" is not \"layer-pattern=spec\"",
              mpq_config_origin(cfg, "budget.pin", where, sizeof where), item);
    char pattern[MPQ_TENSOR_NAME_MAX];
    MPQ_CHECK((size_t)(eq - item) < sizeof pattern, MPQ_ERR_CONFIG,
              "%s: budget.pin: pattern of \"%s\" is too long",
              mpq_config_origin(cfg, "budget.pin", where, sizeof where), item);
    memcpy(pattern, item, (size_t)(eq - item));
    pattern[eq - item] = '\0';
    mpq_qspec spec;
    MPQ_CALL(mpq_session_parse_spec(ctx, cfg, "budget.pin", eq + 1, &spec));
    int32_t k = -1;
    for (int32_t j = 0; j < s->ncand; j++)
        if (mpq_qspec_equal(&s->cand[j], &spec))
            k = j;
    int64_t hits = 0;
    for (int64_t l = 0; l < s->nl; l++) {
        if (!layer_matches(&fi->layers[l], pattern))
            continue;
        hits++;
        if (k >= 0) {
            s->pin[l] = k;
            s->nc[l] = (int32_t)s->ncand;
        } else {
            s->extra[l] = spec;
            s->pin[l] = (int32_t)s->ncand;
            s->nc[l] = (int32_t)s->ncand + 1;
        }
    }
    MPQ_CHECK(hits > 0, MPQ_ERR_CONFIG,
              "%s: budget.pin: pattern \"%s\" matches no quantizable layer (e.g. \"%s\")",
              mpq_config_origin(cfg, "budget.pin", where, sizeof where), pattern,
              s->nl > 0 ? fi->layers[0].name : "");
    return MPQ_OK;
}

/* Candidates, pins and exclusions (identical on every rank). */
static mpq_err setup_layers(mpq_ctx *ctx, mpq_session *s, int uniform_spec) {
    const mpq_config *cfg = s->cfg;
    const mpq_family_info *fi = s->info;
    s->nl = fi->nlayers;
    MPQ_CALL(setup_candidates(ctx, s, uniform_spec));
    int64_t nl1 = s->nl > 0 ? s->nl : 1;
    MPQ_ALLOC(s->nc, nl1);
    MPQ_ALLOC(s->extra, nl1);
    MPQ_ALLOC(s->pin, nl1);
    MPQ_ALLOC(s->excl, nl1);
    for (int64_t l = 0; l < s->nl; l++) {
        s->nc[l] = (int32_t)s->ncand;
        s->pin[l] = -1;
    }
    for (int64_t i = 0; i < cfg->budget.exclude.n; i++) {
        int64_t hits = 0;
        for (int64_t l = 0; l < s->nl; l++)
            if (layer_matches(&fi->layers[l], cfg->budget.exclude.v[i])) {
                s->excl[l] = 1;
                hits++;
            }
        char where[600];
        MPQ_CHECK(hits > 0, MPQ_ERR_CONFIG,
                  "%s: budget.exclude: pattern \"%s\" matches no quantizable layer (e.g. \"%s\")",
                  mpq_config_origin(cfg, "budget.exclude", where, sizeof where),
                  cfg->budget.exclude.v[i], s->nl > 0 ? fi->layers[0].name : "");
    }
    for (int64_t i = 0; i < cfg->budget.pin.n; i++)
        MPQ_CALL(pin_layers(ctx, s, cfg->budget.pin.v[i]));
    /* Weights with NaN/Inf: an error naming the layer, or (robust.nonfinite
     * = "skip") the layer stays full precision. Every rank reads the same
     * weights, so every rank decides alike. */
    mpq_nonfinite_policy pol;
    MPQ_CALL(mpq_nonfinite_policy_parse(ctx, cfg->robust.nonfinite, &pol));
    for (int64_t l = 0; l < s->nl; l++) {
        const mpq_layer_info *li = &fi->layers[l];
        float *w = NULL;
        int skip = 0;
        MPQ_ALLOC(w, li->out * li->in);
        mpq_err e = mpq_family_get_weight(ctx, s->fq, l, w);
        if (e == MPQ_OK)
            e = mpq_check_finite_policy(ctx, pol, w, li->out * li->in, li->in, li->name, &skip);
        mpq_free(w);
        MPQ_CALL(e);
        if (skip)
            s->excl[l] = 1;
    }
    int64_t nq = 0;
    for (int64_t l = 0; l < s->nl; l++)
        nq += !s->excl[l];
    MPQ_CHECK(nq > 0, MPQ_ERR_CONFIG, "%s: budget.exclude leaves no layer to quantize",
              cfg->source);
    return MPQ_OK;
}

/* ---- create ------------------------------------------------------------------------ */

/* The name of the context length in the model's own file, for messages. */
static const char *context_key(const mpq_model *m) {
    const char *f = mpq_model_arch(m)->format;
    if (strncmp(f, "llama2c", 7) == 0)
        return "seq_len of the llama2.c header";
    if (strcmp(f, "gguf") == 0)
        return "llama.context_length of the GGUF file";
    if (strcmp(f, "safetensors") == 0 || strcmp(f, "gptq") == 0)
        return "max_position_embeddings of config.json";
    return "seq_len of the model";
}

/* A calibration segment longer than the model's context would run the
 * forward pass past the positions it was trained for: refused, naming the
 * key and both lengths. The default is cut to the context by the sources
 * that make their own sequences (random, generated), as before. Depends on
 * the configuration and the model only: every rank decides alike. */
static mpq_err check_seq_len(mpq_ctx *ctx, const mpq_session *s) {
    const mpq_config *cfg = s->cfg;
    const int64_t want = cfg->calibration.seq_len, have = s->info->max_seq;
    if (s->info->task != MPQ_TASK_LM || want <= have)
        return MPQ_OK;
    char where[600];
    mpq_config_origin(cfg, "calibration.seq_len", where, sizeof where);
    const char *src = cfg->calibration.source;
    const int cut = strcmp(src, "random") == 0 || strcmp(src, "generated") == 0;
    if (cut && strstr(where, " (default)"))
        return MPQ_OK;
    return MPQ_ERROR(MPQ_ERR_CONFIG,
                     "%s: calibration.seq_len = %lld is longer than the model's context of %lld "
                     "tokens (%s, %s)",
                     where, (long long)want, (long long)have, context_key(s->m), cfg->model.path);
}

/* The stage "load" (every step local; the caller agrees on the outcome). */
static mpq_err load(mpq_ctx *ctx, mpq_session *s, const mpq_session_opts *o) {
    const mpq_config *cfg = s->cfg;
    MPQ_CALL(mpq_model_open(ctx, cfg->model.path, cfg->model.format, &s->m));
    MPQ_CALL(mpq_family_create(ctx, s->m, cfg, NULL, &s->fq));
    MPQ_CALL(mpq_family_create(ctx, s->m, cfg, NULL, &s->ffp));
    s->info = mpq_family_get_info(s->fq);
    MPQ_CALL(check_seq_len(ctx, s));
    /* A language model needs its tokenizer to calibrate on text or on
     * sequences it generates from BOS, and to be evaluated; random
     * calibration without evaluation needs none. */
    const char *src = cfg->calibration.source;
    const int needs = o->evaluates || strcmp(src, "text") == 0 || strcmp(src, "generated") == 0;
    const char *tok = mpq_session_tokenizer(cfg);
    if (s->info->task == MPQ_TASK_LM && (needs || tok[0])) {
        MPQ_CHECK(tok[0], MPQ_ERR_CONFIG,
                  "%s: model.tokenizer: a language model needs a tokenizer for %s (only "
                  "calibration.source = \"random\" with eval.enabled = false goes without)",
                  cfg->source,
                  o->evaluates ? "its evaluation"
                               : "calibration.source = \"text\" or \"generated\"");
        MPQ_CALL(mpq_tokenizer_load(ctx, tok, s->info->vocab_size, &s->tok));
    }
    MPQ_CALL(mpq_round_from_config(ctx, cfg, &s->ro, NULL, &s->method));
    MPQ_CALL(mpq_importance_from_config(ctx, cfg, &s->importance));
    MPQ_CALL(setup_layers(ctx, s, o->uniform_spec));
    return MPQ_OK;
}

mpq_err mpq_session_create(mpq_ctx *ctx, const mpq_config *cfg, const mpq_session_opts *opts,
                           mpq_session **out) {
    *out = NULL;
    mpq_session *s = NULL;
    mpq_err err = mpq_malloc(ctx, 1, sizeof *s, (void **)&s);
    if (err == MPQ_OK && ctx->rank == 0) {
        err = mpq_config_check_paths(ctx, cfg);
        if (err == MPQ_OK)
            err = mpq_session_check_files(ctx, cfg, opts);
    }
    MPQ_TRY(mpq_agree(ctx, err));
    s->cfg = cfg;
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_LOAD));
    MPQ_TRY(mpq_agree(ctx, load(ctx, s, opts)));
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_LOAD));
    MPQ_INFO("model %s: family %s, %lld blocks, %lld quantizable layers", cfg->model.path,
             mpq_family_name(s->fq), (long long)s->info->nblocks, (long long)s->info->nlayers);
    *out = s;
    return MPQ_OK;
cleanup:
    mpq_session_destroy(&s);
    return err;
}

mpq_err mpq_session_calibrate(mpq_ctx *ctx, mpq_session *s) {
    const mpq_config *cfg = s->cfg;
    MPQ_CALL(mpq_stage_start(ctx, MPQ_STAGE_CALIBRATE));
    mpq_err err = mpq_calib_set_from_config_family(ctx, cfg, s->ffp, s->tok, &s->set);
    MPQ_CALL(mpq_agree(ctx, err));
    MPQ_CALL(mpq_stage_stop(ctx, MPQ_STAGE_CALIBRATE));
    int64_t rows = s->set->offset[s->set->nsamples];
    MPQ_INFO("calibration: %lld samples, %lld rows; propagation %s", (long long)s->set->nsamples,
             (long long)rows, cfg->calibration.propagate);
    return MPQ_OK;
}

mpq_err mpq_session_probe_candidate(mpq_ctx *ctx, const mpq_session *s, int32_t *k) {
    const mpq_config *cfg = s->cfg;
    const char *text = cfg->importance.sensitivity_spec;
    mpq_qspec want;
    *k = 0;
    if (s->ncand == 0)
        return MPQ_OK;
    if (text[0])
        MPQ_CALL(mpq_session_parse_spec(ctx, cfg, "importance.sensitivity_spec", text, &want));
    return mpq_importance_probe_candidate(ctx, cfg, s->info, (int32_t)s->ncand, s->cand,
                                          text[0] ? &want : NULL, k);
}

/* ---- evaluation ---------------------------------------------------------------------- */

/* Collective. The evaluation of mpq_session_evaluate. */
static mpq_err evaluate(mpq_ctx *ctx, const mpq_session *s, mpq_family *f, mpq_family *ref,
                        int also_all, mpq_session_eval *e) {
    const mpq_config *cfg = s->cfg;
    if (e->task == MPQ_TASK_LM) {
        MPQ_CALL(mpq_session_eval_lm(ctx, cfg, cfg->eval.docs, f, ref, s->tok, &e->lm));
    } else {
        MPQ_CALL(mpq_eval_idx(ctx, f, ref, cfg->eval.images, cfg->eval.labels, cfg->eval.first,
                              cfg->eval.count, cfg->eval.batch, &e->cls));
        if (also_all && cfg->eval.also_all) {
            MPQ_CALL(mpq_eval_idx(ctx, f, ref, cfg->eval.images, cfg->eval.labels, 0, 0,
                                  cfg->eval.batch, &e->cls_all));
            e->has_all = 1;
        }
    }
    return MPQ_OK;
}

mpq_err mpq_session_evaluate(mpq_ctx *ctx, const mpq_session *s, mpq_family *f, mpq_family *ref,
                             int also_all, mpq_session_eval *e) {
    memset(e, 0, sizeof *e);
    e->task = s->info->task;
    /* a non-finite finding names the model: the quantized one is no file yet */
    char qname[MPQ_ERRMSG_MAX / 4];
    snprintf(qname, sizeof qname, "the quantized model of %s", s->cfg->model.path);
    MPQ_CALL(mpq_session_eval_named(ctx, evaluate(ctx, s, f, ref, also_all, e),
                                    f == s->ffp ? s->cfg->model.path : qname,
                                    ref ? s->cfg->model.path : NULL));
    e->done = 1;
    return MPQ_OK;
}

void mpq_session_eval_reference(const mpq_session_eval *e, mpq_session_eval *ref) {
    *ref = *e;
    mpq_eval_lm_reference(&e->lm, &ref->lm);
    mpq_eval_cls_reference(&e->cls, &ref->cls);
    mpq_eval_cls_reference(&e->cls_all, &ref->cls_all);
}
