/* cmd_eval.c: `mpquant eval`: evaluates the configured model (perplexity,
 * KLD and top-1 agreement against a reference, greedy generation for
 * language models; accuracy and agreement for classifiers). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_cli.h"
#include "mpq_eval.h"
#include "mpq_family.h"
#include "mpq_model.h"
#include "mpq_session.h"
#include "mpq_tokenizer.h"
#include "mpq_timer.h"

/* Opens a model and builds its family on every rank; all ranks agree. A
 * tensor with NaN or Inf (a checkpoint's dequantized layer included) is an
 * error naming the file and the tensor. */
static mpq_err open_family(mpq_ctx *ctx, const mpq_config *cfg, const char *path,
                           const char *format, mpq_model **m, mpq_family **f) {
    mpq_err err = mpq_model_open(ctx, path, format, m);
    if (err == MPQ_OK)
        err = mpq_family_create(ctx, *m, cfg, NULL, f);
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK)
        err = mpq_eval_check_model(ctx, *m);
    if (err != MPQ_OK) {
        mpq_family_destroy(f);
        mpq_model_close(m);
    }
    return err;
}

static mpq_err eval_lm(mpq_ctx *ctx, const mpq_config *cfg, mpq_family *f, mpq_family *ref,
                       int64_t docs, int64_t gen, cJSON *o) {
    mpq_err err = MPQ_OK;
    mpq_tokenizer *tok = NULL;
    int32_t *gtoks = NULL;
    char *gtext = NULL;
    const mpq_family_info *fi = mpq_family_get_info(f);
    const char *tpath = mpq_session_tokenizer(cfg);
    if (!tpath[0])
        err = MPQ_ERROR(MPQ_ERR_CONFIG, "%s: model.tokenizer: a language model needs a tokenizer",
                        cfg->source);
    else
        err = mpq_session_eval_check(ctx, cfg, docs);
    if (err == MPQ_OK)
        err = mpq_tokenizer_load(ctx, tpath, fi->vocab_size, &tok);
    MPQ_TRY(mpq_agree(ctx, err));
    mpq_lm_result r;
    MPQ_TRY(mpq_session_eval_named(ctx, mpq_session_eval_lm(ctx, cfg, docs, f, ref, tok, &r),
                                   cfg->model.path, ref ? cfg->eval.reference : NULL));
    const char *protocol = r.generated ? "generated" : r.window ? "windows" : "docs";
    if (ctx->rank == 0) {
        if (r.generated)
            printf("generated: %lld sequences, seed %lld, temperature %g, from the %s\n",
                   (long long)r.docs, (long long)cfg->eval.seed, cfg->eval.temperature,
                   ref ? "reference" : "model itself");
        else
            printf("text: %s\n", cfg->eval.text);
        if (r.window)
            printf("windows: %lld of %lld tokens\n", (long long)r.docs, (long long)r.window);
        else
            printf("documents: %lld\n", (long long)r.docs);
        printf("predictions: %lld\nmean_nll: %.6f\nppl: %.4f\n", (long long)r.predictions,
               r.mean_nll, r.ppl);
        if (r.has_ref)
            printf("kld: %.6g\ntop1_agreement: %.6f\nreference_ppl: %.4f\n", r.kld,
                   r.top1_agreement, exp(r.ref_nll / (double)(r.predictions ? r.predictions : 1)));
        fflush(stdout);
    }
    if (!r.generated)
        cJSON_AddStringToObject(o, "text", cfg->eval.text);
    else
        cJSON_AddNumberToObject(o, "seed", (double)cfg->eval.seed);
    cJSON_AddStringToObject(o, "protocol", protocol);
    cJSON_AddNumberToObject(o, "docs", (double)r.docs);
    if (r.window)
        cJSON_AddNumberToObject(o, "window", (double)r.window);
    cJSON_AddNumberToObject(o, "predictions", (double)r.predictions);
    cJSON_AddNumberToObject(o, "mean_nll", r.mean_nll);
    cJSON_AddNumberToObject(o, "ppl", r.ppl);
    if (r.has_ref) {
        cJSON_AddNumberToObject(o, "kld", r.kld);
        cJSON_AddNumberToObject(o, "top1_agreement", r.top1_agreement);
        mpq_lm_result fp;
        mpq_eval_lm_reference(&r, &fp);
        cJSON_AddNumberToObject(o, "reference_mean_nll", fp.mean_nll);
        cJSON_AddNumberToObject(o, "reference_ppl", fp.ppl);
    }
    if (gen > 0) {
        /* Generation is local and cheap: rank 0 does it alone. */
        int64_t n = 0;
        size_t len = 0;
        if (ctx->rank == 0) {
            err = mpq_malloc(ctx, gen + 1, sizeof *gtoks, (void **)&gtoks);
            if (err == MPQ_OK)
                err = mpq_generate_greedy(ctx, f, tok, gen, gtoks, &n);
            if (err == MPQ_OK)
                err = mpq_tokenizer_decode(ctx, tok, gtoks + 1, n - 1, 1, &gtext, &len);
            if (err == MPQ_OK) {
                printf("generated (%lld tokens): %s\n", (long long)(n - 1), gtext);
                fflush(stdout);
                cJSON_AddStringToObject(o, "generated", gtext);
            }
        }
        MPQ_TRY(mpq_agree(ctx, err));
    }
cleanup:
    mpq_free(gtoks);
    mpq_free(gtext);
    mpq_tokenizer_destroy(&tok);
    return err;
}

static mpq_err eval_cls(mpq_ctx *ctx, const mpq_config *cfg, mpq_family *f, mpq_family *ref,
                        cJSON *o) {
    mpq_cls_result r;
    MPQ_CALL(
        mpq_session_eval_named(ctx,
                               mpq_eval_idx(ctx, f, ref, cfg->eval.images, cfg->eval.labels,
                                            cfg->eval.first, cfg->eval.count, cfg->eval.batch, &r),
                               cfg->model.path, ref ? cfg->eval.reference : NULL));
    if (ctx->rank == 0) {
        printf("images: %s\ncorrect: %lld\ntotal: %lld\naccuracy: %.4f%%\n", cfg->eval.images,
               (long long)r.correct, (long long)r.total, 100.0 * r.accuracy);
        if (r.has_ref)
            printf("kld: %.6g\nagreement: %.4f%%\n", r.kld, 100.0 * r.agreement);
        fflush(stdout);
    }
    cJSON_AddNumberToObject(o, "correct", (double)r.correct);
    cJSON_AddNumberToObject(o, "total", (double)r.total);
    cJSON_AddNumberToObject(o, "accuracy", r.accuracy);
    if (r.has_ref) {
        cJSON_AddNumberToObject(o, "kld", r.kld);
        cJSON_AddNumberToObject(o, "top1_agreement", r.agreement);
    }
    return MPQ_OK;
}

mpq_err mpq_cmd_eval(mpq_ctx *ctx, const mpq_cli *cli) {
    mpq_err err = MPQ_OK;
    mpq_config *cfg = NULL;
    mpq_model *m = NULL, *rm = NULL;
    mpq_family *f = NULL, *rf = NULL;
    cJSON *o = NULL, *timers = NULL;
    /* The quick form's options become overrides after the command line's. */
    static const char *const quick[][2] = {
        {"model", "model.path"},         {"tokenizer", "model.tokenizer"}, {"text", "eval.text"},
        {"protocol", "eval.protocol"},   {"window", "eval.window"},        {"seed", "eval.seed"},
        {"reference", "eval.reference"}, {"family", "model.family"}};
    enum { NQUICK = sizeof quick / sizeof quick[0] };
    char obuf[NQUICK][4096];
    mpq_cli c2 = *cli;
    for (int i = 0; i < NQUICK; i++) {
        const char *v = mpq_cli_opt(cli, quick[i][0]);
        if (!v)
            continue;
        MPQ_CHECK(v[0], MPQ_ERR_ARG, "eval: option --%s needs a value", quick[i][0]);
        MPQ_CHECK(c2.n_over < MPQ_CLI_MAX, MPQ_ERR_ARG, "too many overrides");
        int w = snprintf(obuf[i], sizeof obuf[i], "%s=%s", quick[i][1], v);
        MPQ_CHECK(w > 0 && (size_t)w < sizeof obuf[i], MPQ_ERR_ARG, "eval: --%s is too long",
                  quick[i][0]);
        c2.overrides[c2.n_over++] = obuf[i];
    }
    MPQ_CHECK(cli->npos == 1 || mpq_cli_opt(cli, "model"), MPQ_ERR_ARG,
              "eval: expected a configuration file, or --model FILE --tokenizer FILE --text FILE");
    MPQ_CALL(mpq_cli_load_config(ctx, &c2, cli->npos == 1 ? cli->pos[0] : NULL, &cfg));
    int64_t docs = 0, gen = 0;
    MPQ_TRY(mpq_cli_opt_int(ctx, cli, "docs", cfg->eval.docs, 0, INT64_MAX, &docs));
    MPQ_TRY(mpq_cli_opt_int(ctx, cli, "generate", cfg->eval.generate_tokens, 0, 1000000, &gen));
    if (ctx->rank == 0)
        err = mpq_config_check_paths(ctx, cfg);
    MPQ_TRY(mpq_agree(ctx, err));

    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_EVAL_LOAD));
    MPQ_TRY(open_family(ctx, cfg, cfg->model.path, cfg->model.format, &m, &f));
    /* model.format is the model's format only: the reference (often the
     * full-precision original of a checkpoint) is detected on its own. */
    if (cfg->eval.reference[0])
        MPQ_TRY(open_family(ctx, cfg, cfg->eval.reference, "auto", &rm, &rf));
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_EVAL_LOAD));
    const mpq_family_info *fi = mpq_family_get_info(f);
    MPQ_INFO("model %s: family %s, %lld blocks, %lld quantizable layers", cfg->model.path,
             mpq_family_name(f), (long long)fi->nblocks, (long long)fi->nlayers);

    o = cJSON_CreateObject();
    MPQ_ENSURE(o, MPQ_ERR_NOMEM, "cannot allocate the JSON result");
    cJSON_AddStringToObject(o, "command", "eval");
    cJSON_AddStringToObject(o, "model", cfg->model.path);
    cJSON_AddStringToObject(o, "family", mpq_family_name(f));
    cJSON_AddNumberToObject(o, "ranks", ctx->size);
    if (fi->task == MPQ_TASK_LM)
        MPQ_TRY(eval_lm(ctx, cfg, f, rf, docs, gen, o));
    else
        MPQ_TRY(eval_cls(ctx, cfg, f, rf, o));
    MPQ_TRY(mpq_timers_report(ctx, &timers));
    cJSON_AddItemToObject(o, "timers", timers);
    timers = NULL;
    mpq_cli_emit_json(ctx, cli, o);
    o = NULL;
cleanup:
    cJSON_Delete(o);
    cJSON_Delete(timers);
    mpq_family_destroy(&rf);
    mpq_family_destroy(&f);
    mpq_model_close(&rm);
    mpq_model_close(&m);
    mpq_config_destroy(&cfg);
    return err;
}
