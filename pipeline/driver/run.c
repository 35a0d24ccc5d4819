/* run.c: the pipeline of `mpquant run` (see mpq_run.h): setup, the
 * measurement pass, the budget, the final block-sequential rounding pass,
 * the evaluations and the checkpoint. */
#include <cjson/cJSON.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "mpq_coll.h"
#include "mpq_ckpt.h"
#include "mpq_config.h"
#include "mpq_log.h"
#include "mpq_outfile.h"
#include "mpq_robust.h"
#include "mpq_timer.h"
#include "run_internal.h"

void mpq_run_opts_default(mpq_run_opts *o) {
    memset(o, 0, sizeof *o);
    o->eval_fp = 1;
    o->eval_quantized = 1;
}

void mpq_run_result_destroy(mpq_run_result **r) {
    if (!r || !*r)
        return;
    mpq_run_result *x = *r;
    for (int64_t l = 0; x->layers && l < x->nlayers; l++)
        mpq_qlayer_destroy(&x->layers[l].q);
    mpq_free(x->layers);
    mpq_free(x->candidates);
    mpq_free(x->checkpoint);
    mpq_free(x);
    *r = NULL;
}

static void state_free(run_state *s) {
    mpq_measure_table_free(&s->meas);
    MPQ_FREE(s->choice);
    MPQ_FREE(s->score);
    MPQ_FREE(s->excl);
    MPQ_FREE(s->pin);
    MPQ_FREE(s->extra);
    MPQ_FREE(s->nc);
    MPQ_FREE(s->cand);
    mpq_calib_set_destroy(&s->set);
    mpq_tokenizer_destroy(&s->tok);
    mpq_family_destroy(&s->ffp);
    mpq_family_destroy(&s->fq);
    mpq_model_close(&s->m);
}

/* ---- setup ------------------------------------------------------------------------ */

/* Parses a spec from the configuration; errors name the file and the key. */
static mpq_err parse_spec(mpq_ctx *ctx, const mpq_config *cfg, const char *key, const char *text,
                          mpq_qspec *spec) {
    mpq_err e = mpq_qspec_parse(ctx, text, spec);
    if (e == MPQ_OK)
        return MPQ_OK;
    char msg[MPQ_ERRMSG_MAX];
    snprintf(msg, sizeof msg, "%s", ctx->err_msg);
    mpq_err_clear(ctx);
    return MPQ_ERROR(MPQ_ERR_CONFIG, "%s: %s: \"%s\": %s", cfg->source, key, text, msg);
}

static int layer_matches(const mpq_layer_info *li, const char *pattern) {
    return fnmatch(pattern, li->name, 0) == 0 || fnmatch(pattern, li->tensor, 0) == 0;
}

/* Candidates, pins and exclusions (identical on every rank: every rank
 * parses the same configuration). */
static mpq_err setup_layers(mpq_ctx *ctx, run_state *s) {
    const mpq_config *cfg = s->cfg;
    const mpq_family_info *fi = s->info;
    s->nl = fi->nlayers;
    /* A budget without candidates means the default candidates: asymmetric
     * int at 2, 3, 4 and 8 bits with quant.spec's granularity and scales. */
    static const int default_bits[] = {2, 3, 4, 8};
    const int defaults =
        cfg->quant.candidates.n == 0 && (cfg->budget.avg_bits > 0.0 || cfg->budget.bytes > 0);
    s->mixed = cfg->quant.candidates.n > 0 || defaults;
    s->ncand = cfg->quant.candidates.n > 0 ? cfg->quant.candidates.n : (defaults ? 4 : 1);
    s->maxc = (int32_t)s->ncand + 1;
    MPQ_CHECK(s->ncand <= 1000, MPQ_ERR_CONFIG,
              "%s: quant.candidates: %lld candidates (at most 1000)", cfg->source,
              (long long)s->ncand);
    MPQ_ALLOC(s->cand, s->ncand);
    if (cfg->quant.candidates.n > 0) {
        for (int64_t k = 0; k < s->ncand; k++) {
            char key[64];
            snprintf(key, sizeof key, "quant.candidates[%lld]", (long long)k);
            MPQ_CALL(parse_spec(ctx, cfg, key, cfg->quant.candidates.v[k], &s->cand[k]));
            for (int64_t j = 0; j < k; j++)
                MPQ_CHECK(!mpq_qspec_equal(&s->cand[j], &s->cand[k]), MPQ_ERR_CONFIG,
                          "%s: quant.candidates: items %lld and %lld are the same quantizer",
                          cfg->source, (long long)j, (long long)k);
        }
    } else if (defaults) {
        mpq_qspec base;
        MPQ_CALL(parse_spec(ctx, cfg, "quant.spec", cfg->quant.spec, &base));
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
            MPQ_CALL(parse_spec(ctx, cfg, "quant.candidates (default)", text, &s->cand[k]));
        }
    } else {
        MPQ_CALL(parse_spec(ctx, cfg, "quant.spec", cfg->quant.spec, &s->cand[0]));
    }
    int64_t nl1 = s->nl > 0 ? s->nl : 1;
    MPQ_ALLOC(s->nc, nl1);
    MPQ_ALLOC(s->extra, nl1);
    MPQ_ALLOC(s->pin, nl1);
    MPQ_ALLOC(s->excl, nl1);
    MPQ_ALLOC(s->choice, nl1);
    for (int64_t l = 0; l < s->nl; l++) {
        s->nc[l] = (int32_t)s->ncand;
        s->pin[l] = -1;
        s->choice[l] = -1;
    }
    for (int64_t i = 0; i < cfg->budget.exclude.n; i++) {
        int64_t hits = 0;
        for (int64_t l = 0; l < s->nl; l++)
            if (layer_matches(&fi->layers[l], cfg->budget.exclude.v[i])) {
                s->excl[l] = 1;
                hits++;
            }
        MPQ_CHECK(hits > 0, MPQ_ERR_CONFIG,
                  "%s: budget.exclude: pattern \"%s\" matches no quantizable layer (e.g. \"%s\")",
                  cfg->source, cfg->budget.exclude.v[i], s->nl > 0 ? fi->layers[0].name : "");
    }
    for (int64_t i = 0; i < cfg->budget.pin.n; i++) {
        const char *item = cfg->budget.pin.v[i];
        const char *eq = strchr(item, '=');
        MPQ_CHECK(eq && eq > item && eq[1], MPQ_ERR_CONFIG,
                  "%s: budget.pin: item \"%s\" is not \"layer-pattern=spec\"", cfg->source, item);
        char pattern[MPQ_TENSOR_NAME_MAX];
        MPQ_CHECK((size_t)(eq - item) < sizeof pattern, MPQ_ERR_CONFIG,
                  "%s: budget.pin: pattern of \"%s\" is too long", cfg->source, item);
        memcpy(pattern, item, (size_t)(eq - item));
        pattern[eq - item] = '\0';
        mpq_qspec spec;
        MPQ_CALL(parse_spec(ctx, cfg, "budget.pin", eq + 1, &spec));
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
                  cfg->source, pattern, s->nl > 0 ? fi->layers[0].name : "");
    }
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

/* ---- input and output files ---------------------------------------------------- */

/* Room for every input path key of the key table and the configuration file. */
#define RUN_MAX_FILES 32

/* A file of the run and what names it (a key, or "the configuration file"). */
typedef struct run_file {
    const char *key;
    const char *path;
} run_file;

/* 1 when the configuration came from a file (mpq_config_parse of text in
 * memory names a source that need not exist). */
static int config_is_file(const mpq_config *cfg) {
    struct stat st;
    return cfg->text_len > 0 && stat(cfg->source, &st) == 0 && S_ISREG(st.st_mode);
}

/* Appends a set path; past RUN_MAX_FILES it counts without storing, so
 * that the caller sees the overflow (n > RUN_MAX_FILES). */
static void add_file(run_file *f, int64_t *n, const char *key, const char *path) {
    if (!path || !path[0])
        return;
    if (*n < RUN_MAX_FILES)
        f[*n] = (run_file){key, path};
    (*n)++;
}

/* Every input the configuration names, read by this run or not (every set
 * input path key and the configuration file): no output may replace one. */
static int64_t named_inputs(const mpq_config *cfg, run_file *f) {
    int64_t n = 0;
    if (config_is_file(cfg))
        add_file(f, &n, "the configuration file", cfg->source);
    for (int i = 0; i < mpq_config_nkeys; i++) {
        const mpq_key_spec *k = &mpq_config_keys[i];
        if (k->type == MPQ_KEY_PATH)
            add_file(f, &n, k->key, *(char *const *)((const char *)cfg + k->offset));
    }
    return n;
}

/* The files this run read (hashed into the checkpoint's provenance): the
 * configuration file, the model, the tokenizer of a language model, the
 * calibration source, the evaluation data when it evaluated, and the saved
 * statistics it was told to load: at most 10 paths, well within
 * RUN_MAX_FILES. */
static int64_t read_inputs(const run_state *s, const char **paths) {
    const mpq_config *cfg = s->cfg;
    const int lm = s->info->task == MPQ_TASK_LM;
    run_file f[RUN_MAX_FILES];
    int64_t n = 0;
    if (config_is_file(cfg))
        add_file(f, &n, "the configuration file", cfg->source);
    add_file(f, &n, "model.path", cfg->model.path);
    if (lm)
        add_file(f, &n, "model.tokenizer", cfg->model.tokenizer);
    if (strcmp(cfg->calibration.source, "text") == 0)
        add_file(f, &n, "calibration.text", cfg->calibration.text);
    else if (strcmp(cfg->calibration.source, "images") == 0)
        add_file(f, &n, "calibration.images", cfg->calibration.images);
    if (s->opts.eval_fp || s->opts.eval_quantized) {
        if (lm) {
            add_file(f, &n, "eval.text", cfg->eval.text);
        } else {
            add_file(f, &n, "eval.images", cfg->eval.images);
            add_file(f, &n, "eval.labels", cfg->eval.labels);
        }
    }
    add_file(f, &n, "hessian.load", cfg->hessian.load);
    if (s->mixed)
        add_file(f, &n, "measure.load", cfg->measure.load);
    for (int64_t i = 0; i < n; i++)
        paths[i] = f[i].path;
    return n;
}

/* Local (rank 0), before any work. No output file (output.path,
 * hessian.save, measure.save) may be an input the configuration names or
 * another output (same inode or same canonical path), and the checkpoint
 * must be writable: its directory exists and it does not exist unless
 * output.overwrite (checked again when it is written: it may appear
 * meanwhile). */
static mpq_err check_files(mpq_ctx *ctx, const mpq_config *cfg) {
    run_file in[RUN_MAX_FILES];
    const int64_t ni = named_inputs(cfg, in);
    MPQ_CHECK(ni <= RUN_MAX_FILES, MPQ_ERR_INTERNAL,
              "%lld input paths, more than RUN_MAX_FILES (%d): raise it", (long long)ni,
              RUN_MAX_FILES);
    const run_file out[] = {{"output.path", cfg->output.path},
                            {"hessian.save", cfg->hessian.save},
                            {"measure.save", cfg->measure.save}};
    const int64_t no = (int64_t)(sizeof out / sizeof out[0]);
    for (int64_t o = 0; o < no; o++) {
        if (!out[o].path[0])
            continue;
        for (int64_t i = 0; i < ni; i++)
            MPQ_CHECK(!mpq_outfile_same_file(out[o].path, in[i].path), MPQ_ERR_CONFIG,
                      "%s: %s: '%s' is the same file as %s ('%s'); an output may not replace an "
                      "input",
                      cfg->source, out[o].key, out[o].path, in[i].key, in[i].path);
        for (int64_t j = 0; j < o; j++)
            MPQ_CHECK(!mpq_outfile_same_file(out[o].path, out[j].path), MPQ_ERR_CONFIG,
                      "%s: %s: '%s' is the same file as %s ('%s'); two outputs may not share a "
                      "file",
                      cfg->source, out[o].key, out[o].path, out[j].key, out[j].path);
    }
    if (cfg->output.path[0]) {
        mpq_outfile_opts oo = {.overwrite = cfg->output.overwrite};
        MPQ_CALL(mpq_outfile_check(ctx, cfg->output.path, &oo));
    }
    return MPQ_OK;
}

/* Opens the model twice as families, the tokenizer and the calibration
 * samples; every rank agrees on the outcome. */
static mpq_err setup(mpq_ctx *ctx, run_state *s) {
    const mpq_config *cfg = s->cfg;
    mpq_err err = MPQ_OK;
    if (ctx->rank == 0) {
        err = mpq_config_check_paths(ctx, cfg);
        if (err == MPQ_OK)
            err = check_files(ctx, cfg);
    }
    MPQ_CALL(mpq_agree(ctx, err));
    MPQ_CALL(mpq_timer_start(ctx, "load"));
    err = mpq_model_open(ctx, cfg->model.path, cfg->model.format, &s->m);
    if (err == MPQ_OK)
        err = mpq_family_create(ctx, s->m, cfg, NULL, &s->fq);
    if (err == MPQ_OK)
        err = mpq_family_create(ctx, s->m, cfg, NULL, &s->ffp);
    if (err == MPQ_OK) {
        s->info = mpq_family_get_info(s->fq);
        if (s->info->task == MPQ_TASK_LM) {
            if (!cfg->model.tokenizer[0])
                err = MPQ_ERROR(MPQ_ERR_CONFIG,
                                "%s: model.tokenizer: a language model needs a tokenizer",
                                cfg->source);
            else
                err = mpq_tokenizer_load(ctx, cfg->model.tokenizer, s->info->vocab_size, &s->tok);
        }
    }
    if (err == MPQ_OK)
        err = mpq_round_from_config(ctx, cfg, &s->ro, NULL, &s->method);
    if (err == MPQ_OK)
        err = setup_layers(ctx, s);
    if (err == MPQ_OK && cfg->quant.candidates.n > 0 && cfg->budget.avg_bits <= 0.0 &&
        cfg->budget.bytes <= 0)
        err = MPQ_ERROR(MPQ_ERR_CONFIG,
                        "%s: quant.candidates is set (mixed precision) but no budget: set "
                        "budget.avg_bits or budget.bytes",
                        cfg->source);
    if (err == MPQ_OK && cfg->budget.avg_bits > 0.0 && cfg->budget.bytes > 0)
        err = MPQ_ERROR(MPQ_ERR_CONFIG,
                        "%s: budget.avg_bits and budget.bytes are both set; set only one",
                        cfg->source);
    if (err == MPQ_OK && cfg->output.path[0] && strcmp(cfg->model.family, "cnn") == 0) {
        for (int64_t i = 0; i < cfg->model.cnn.n; i++)
            if (strcmp(cfg->model.cnn.v[i].op, "batchnorm") == 0)
                err = MPQ_ERROR(MPQ_ERR_CONFIG,
                                "%s: output.path: a CNN with batchnorm (line %d) has BN-folded "
                                "weights, which the checkpoint cannot store beside the BN tensors",
                                cfg->source, cfg->model.cnn.v[i].line);
    }
    MPQ_CALL(mpq_agree(ctx, err));
    MPQ_CALL(mpq_timer_stop(ctx, "load"));
    MPQ_INFO("model %s: family %s, %lld blocks, %lld quantizable layers", cfg->model.path,
             mpq_family_name(s->fq), (long long)s->info->nblocks, (long long)s->info->nlayers);

    MPQ_CALL(mpq_timer_start(ctx, "calibrate"));
    err = mpq_calib_set_from_config_family(ctx, cfg, s->ffp, s->tok, &s->set);
    MPQ_CALL(mpq_agree(ctx, err));
    MPQ_CALL(mpq_timer_stop(ctx, "calibrate"));
    int64_t rows = s->set->offset[s->set->nsamples];
    MPQ_INFO("calibration: %lld samples, %lld rows; propagation %s", (long long)s->set->nsamples,
             (long long)rows, cfg->calibration.propagate);
    return MPQ_OK;
}

/* ---- the block passes ------------------------------------------------------------- */

/* Candidate k of layer l, rounded with quant.method. */
static void run_conf(const void *ud, int64_t l, int32_t k, mpq_qspec *spec,
                     const mpq_round_method **method) {
    const run_state *s = ud;
    *spec = *run_spec(s, l, k);
    *method = s->method;
}

/* Measuring: every candidate of the layer; a pinned layer needs its pinned
 * candidate only. */
static void measured_columns(const void *ud, int64_t l, int32_t *k0, int32_t *k1) {
    const run_state *s = ud;
    *k0 = s->pin[l] >= 0 ? s->pin[l] : 0;
    *k1 = s->pin[l] >= 0 ? s->pin[l] + 1 : s->nc[l];
}

/* The final rounding: the chosen candidate. */
static void chosen_columns(const void *ud, int64_t l, int32_t *k0, int32_t *k1) {
    const run_state *s = ud;
    *k0 = s->choice[l];
    *k1 = s->choice[l] + 1;
}

/* Local. Puts the codes of layer l's result (s->res->layers[l].q),
 * dequantized, into the working model. */
static mpq_err install_layer(mpq_ctx *ctx, run_state *s, int64_t l) {
    const mpq_run_layer *rl = &s->res->layers[l];
    float *deq = NULL;
    MPQ_ALLOC(deq, rl->rows * rl->cols);
    mpq_qlayer_dequantize(rl->q, deq);
    mpq_err err = mpq_family_set_weight(ctx, s->fq, l, deq);
    mpq_free(deq);
    return err;
}

/* The final rounding's result of layer l: the layer's result, and its
 * weights in the working model (the next blocks' inputs with quantized
 * propagation). */
static mpq_err take_rounded(mpq_ctx *ctx, void *ud, int64_t l, int32_t k, mpq_round_result *rr) {
    run_state *s = ud;
    mpq_run_layer *rl = &s->res->layers[l];
    rl->loss = rr->loss;
    rl->rtn_loss = rr->rtn_loss;
    rl->iters = rr->iters;
    rl->seconds = rr->seconds;
    rl->bits = mpq_qlayer_bits(rr->q);
    rl->q = rr->q;
    rr->q = NULL;
    return install_layer(ctx, s, l);
}

static const block_pass_ops measure_ops = {.columns = measured_columns, .conf = run_conf};
static const block_pass_ops round_ops = {
    .columns = chosen_columns, .conf = run_conf, .take = take_rounded};

/* Collective. One pass over the blocks (mpq_block_pass). measure = 1: every
 * candidate of every layer, full-precision propagation, results into
 * s->meas. measure = 0: the chosen candidate, results into s->res->layers
 * and the working model, propagation as configured. */
static mpq_err run_pass(mpq_ctx *ctx, run_state *s, int measure) {
    block_pass p = {.cfg = s->cfg,
                    .f = s->fq,
                    .set = s->set,
                    .ro = &s->ro,
                    .excl = s->excl,
                    .ncol = s->maxc,
                    .advance = measure || !s->propagate_q,
                    .hload = s->cfg->hessian.load,
                    .hsave = s->cfg->hessian.save,
                    .warn_rows = 1,
                    .who = "run",
                    .label = measure ? "measure" : "round",
                    .timer = measure ? "measure" : "round",
                    .tab = measure ? &s->meas : NULL,
                    .ops = measure ? &measure_ops : &round_ops,
                    .ud = s};
    return mpq_block_pass(ctx, &p);
}

/* ---- budget ------------------------------------------------------------------------- */

static mpq_err solve_budget(mpq_ctx *ctx, run_state *s) {
    mpq_err err = MPQ_OK;
    const mpq_config *cfg = s->cfg;
    mpq_budget_problem *p = NULL;
    mpq_budget_result *br = NULL;
    int64_t *cost = NULL;
    const int codes_only = strcmp(cfg->budget.count, "codes") == 0;
    if (ctx->rank == 0) {
        err = mpq_budget_problem_create(ctx, s->nl, s->maxc, &p);
        if (err == MPQ_OK)
            err = mpq_malloc(ctx, s->maxc, sizeof *cost, (void **)&cost);
        for (int64_t l = 0; l < s->nl && err == MPQ_OK; l++) {
            const mpq_layer_info *li = &s->info->layers[l];
            if (s->excl[l]) {
                err = mpq_budget_exclude(ctx, p, l, 1);
                continue;
            }
            /* budget.count = "codes": the packed code stream alone (the nominal
             * bit-width); otherwise the measured storage, parameters included. */
            for (int32_t k = 0; k < s->nc[l]; k++)
                cost[k] = codes_only
                              ? 8 * mpq_quant_packed_bytes(run_spec(s, l, k), li->out * li->in)
                              : s->meas.bits[l * s->maxc + k];
            err = mpq_budget_set_layer(ctx, p, l, li->out * li->in, s->nc[l], cost,
                                       s->score + l * s->maxc);
            if (err == MPQ_OK && s->pin[l] >= 0)
                err = mpq_budget_pin(ctx, p, l, s->pin[l]);
        }
        mpq_budget_spec bs = {.kind = MPQ_BUDGET_AVG_BITS, .avg_bits = cfg->budget.avg_bits};
        if (cfg->budget.bytes > 0) {
            bs.kind = MPQ_BUDGET_BYTES;
            bs.amount = cfg->budget.bytes;
        }
        if (err == MPQ_OK) {
            err = mpq_budget_solve(ctx, p, &bs, &br);
            if (err != MPQ_OK) {
                char msg[MPQ_ERRMSG_MAX];
                snprintf(msg, sizeof msg, "%s", ctx->err_msg);
                mpq_err_clear(ctx);
                err = MPQ_ERROR(err, "%s: budget.%s: %s", cfg->source,
                                cfg->budget.bytes > 0 ? "bytes" : "avg_bits", msg);
            }
        }
    }
    MPQ_TRY(mpq_agree(ctx, err));
    MPQ_TRY(mpq_budget_bcast(ctx, &br));
    for (int64_t l = 0; l < s->nl; l++)
        s->choice[l] = s->excl[l] ? -1 : br->choice[l];
    s->res->has_budget = 1;
    s->res->budget_codes = codes_only;
    s->res->budget = *br;
    s->res->budget.choice = NULL;
    MPQ_INFO("budget: objective %.6g, lower bound %.6g (gap %.3g, relative %.3g), %lld %sbits of "
             "%lld, %.4f %sbits per weight",
             br->objective, br->lower_bound, br->gap, br->rel_gap, (long long)br->bits_used,
             codes_only ? "code " : "", (long long)br->budget_bits, br->avg_bits,
             codes_only ? "code " : "");
cleanup:
    mpq_free(cost);
    mpq_budget_result_destroy(&br);
    mpq_budget_problem_destroy(&p);
    return err;
}

/* ---- evaluation -------------------------------------------------------------------- */

static mpq_err evaluate(mpq_ctx *ctx, run_state *s, mpq_family *f, mpq_family *ref,
                        mpq_run_eval *e) {
    const mpq_config *cfg = s->cfg;
    e->task = s->info->task;
    if (e->task == MPQ_TASK_LM) {
        MPQ_CHECK(cfg->eval.text[0], MPQ_ERR_CONFIG, "%s: eval.text: no text file to evaluate on",
                  cfg->source);
        MPQ_CALL(mpq_eval_lm_text(ctx, f, ref, s->tok, cfg->eval.text, cfg->eval.docs, &e->lm));
    } else {
        MPQ_CALL(mpq_eval_idx(ctx, f, ref, cfg->eval.images, cfg->eval.labels, cfg->eval.first,
                              cfg->eval.count, cfg->eval.batch, &e->cls));
        if (cfg->eval.also_all) {
            MPQ_CALL(mpq_eval_idx(ctx, f, ref, cfg->eval.images, cfg->eval.labels, 0, 0,
                                  cfg->eval.batch, &e->cls_all));
            e->has_all = 1;
        }
    }
    e->done = 1;
    return MPQ_OK;
}

/* ---- checkpoint ---------------------------------------------------------------------- */

static char *json_text(cJSON *o) {
    char *t = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return t;
}

static mpq_err write_checkpoint(mpq_ctx *ctx, run_state *s) {
    mpq_err err = MPQ_OK;
    const mpq_config *cfg = s->cfg;
    mpq_ckpt_writer *w = NULL;
    char *eval = NULL, *assign = NULL, *times = NULL, *effective = NULL, *over = NULL;
    const char *inputs[RUN_MAX_FILES];
    const int64_t ni = read_inputs(s, inputs);
    MPQ_CALL(mpq_ckpt_writer_create(ctx, cfg->output.path, cfg->output.overwrite, inputs, ni, &w));
    MPQ_TRY(mpq_ckpt_write_arch(ctx, w, mpq_model_arch(s->m)));
    for (int64_t i = 0; i < mpq_model_ntensors(s->m); i++) {
        if (s->opts.write_hook)
            s->opts.write_hook(ctx, i, s->opts.write_ud);
        const mpq_tensor *t = mpq_model_tensor_at(s->m, i);
        int64_t l = 0;
        while (l < s->nl && (s->excl[l] || strcmp(s->info->layers[l].tensor, t->name) != 0))
            l++;
        if (l == s->nl) {
            MPQ_TRY(mpq_ckpt_write_tensor(ctx, w, t, (int)(i % ctx->size)));
            continue;
        }
        const mpq_run_layer *rl = &s->res->layers[l];
        mpq_ckpt_layer_desc d = {.tensor = t->name, .method = s->method->name, .loss = rl->loss};
        if (t->numel == rl->rows * rl->cols) {
            d.ndim = t->ndim;
            memcpy(d.shape, t->shape, sizeof d.shape);
        }
        MPQ_TRY(mpq_ckpt_write_layer(ctx, w, &d, rl->q, (int)(l % ctx->size)));
    }
    cJSON *ev = cJSON_CreateObject();
    if (ev) {
        cJSON_AddItemToObject(ev, "fp", mpq_run_eval_json(&s->res->fp));
        cJSON_AddItemToObject(ev, "quantized", mpq_run_eval_json(&s->res->quant));
    }
    eval = json_text(ev);
    assign = json_text(mpq_run_assignment_json(s->res));
    cJSON *tm = cJSON_CreateObject();
    static const char *const stages[] = {"load",    "calibrate",  "hessian",
                                         "measure", "importance", "budget",
                                         "round",   "propagate",  "eval"};
    for (size_t k = 0; tm && k < sizeof stages / sizeof stages[0]; k++)
        cJSON_AddNumberToObject(tm, stages[k], mpq_timer_seconds(ctx, stages[k]));
    times = json_text(tm);
    cJSON *ov = cJSON_CreateArray();
    for (int64_t i = 0; ov && i < cfg->overrides.n; i++)
        cJSON_AddItemToArray(ov, cJSON_CreateString(cfg->overrides.v[i]));
    over = json_text(ov);
    MPQ_ENSURE(eval && assign && times && over, MPQ_ERR_NOMEM,
               "cannot format the checkpoint provenance");
    /* What ran: the file's values with the defaults and the -o overrides
     * applied (the raw file and the overrides are kept beside it). */
    MPQ_TRY(mpq_config_format(ctx, cfg, &effective));
    mpq_ckpt_provenance p = {.config = effective,
                             .config_file = cfg->text,
                             .overrides = over,
                             .stage_times = times,
                             .eval = eval,
                             .assignment = assign};
    MPQ_TRY(mpq_ckpt_write_provenance(ctx, w, &p));
    MPQ_TRY(mpq_ckpt_commit(ctx, &w));
    MPQ_TRY(mpq_strdup(ctx, cfg->output.path, &s->res->checkpoint));
    MPQ_INFO("checkpoint written: %s", cfg->output.path);
cleanup:
    mpq_ckpt_abort(ctx, &w);
    cJSON_free(eval);
    cJSON_free(assign);
    cJSON_free(times);
    cJSON_free(over);
    mpq_free(effective);
    return err;
}

/* ---- the pipeline ------------------------------------------------------------------- */

static mpq_err alloc_result(mpq_ctx *ctx, run_state *s) {
    mpq_run_result *r = NULL;
    MPQ_ALLOC(r, 1);
    s->res = r;
    r->mixed = s->mixed;
    r->method = s->method->name;
    r->round_method = s->method;
    r->round_opts = s->ro;
    r->propagate = s->propagate_q ? "quantized" : "fp";
    r->nlayers = s->nl;
    MPQ_ALLOC(r->layers, s->nl > 0 ? s->nl : 1);
    r->ncand = s->ncand;
    MPQ_ALLOC(r->candidates, s->ncand);
    for (int64_t k = 0; k < s->ncand; k++)
        mpq_qspec_format(&s->cand[k], r->candidates[k], MPQ_QSPEC_MAX);
    for (int64_t l = 0; l < s->nl; l++) {
        const mpq_layer_info *li = &s->info->layers[l];
        mpq_run_layer *rl = &r->layers[l];
        snprintf(rl->name, sizeof rl->name, "%s", li->name);
        snprintf(rl->tensor, sizeof rl->tensor, "%s", li->tensor);
        rl->rows = li->out;
        rl->cols = li->in;
        rl->excluded = s->excl[l];
        rl->pinned = s->pin[l] >= 0;
    }
    return MPQ_OK;
}

static mpq_err alloc_measure(mpq_ctx *ctx, run_state *s) {
    MPQ_CALL(mpq_measure_table_alloc(ctx, &s->meas, s->nl, s->maxc));
    MPQ_ALLOC(s->score, s->nl * s->maxc);
    return MPQ_OK;
}

static const mpq_qspec *cand_spec(const void *ud, int32_t k) {
    return &((const run_state *)ud)->cand[k];
}

/* Candidate probed for the sensitivities: the configured one, or the
 * smallest (mpq_measure_probe_candidate). */
static mpq_err pick_sens_cand(mpq_ctx *ctx, run_state *s) {
    const mpq_config *cfg = s->cfg;
    const char *text = cfg->importance.sensitivity_spec;
    mpq_qspec want;
    if (text[0])
        MPQ_CALL(parse_spec(ctx, cfg, "importance.sensitivity_spec", text, &want));
    return mpq_measure_probe_candidate(ctx, cfg, s->info, (int32_t)s->ncand, cand_spec, s,
                                       text[0] ? &want : NULL, &s->sens_cand);
}

/* Mixed precision: measure (or load), score, solve. */
static mpq_err mixed_choose(mpq_ctx *ctx, run_state *s) {
    const mpq_config *cfg = s->cfg;
    MPQ_CALL(alloc_measure(ctx, s));
    MPQ_CALL(pick_sens_cand(ctx, s));
    if (cfg->measure.load[0]) {
        MPQ_CALL(mpq_run_measure_load(ctx, s, cfg->measure.load));
    } else {
        MPQ_INFO("measure: %lld candidates x %lld layers with %s", (long long)s->ncand,
                 (long long)s->nl, s->method->name);
        MPQ_CALL(run_pass(ctx, s, 1));
        s->measured = 1;
        if (strcmp(cfg->importance.method, "sensitivity") == 0) {
            MPQ_CALL(mpq_timer_start(ctx, "importance"));
            MPQ_CALL(mpq_run_sensitivity(ctx, s));
            MPQ_CALL(mpq_timer_stop(ctx, "importance"));
        }
        if (cfg->measure.save[0])
            MPQ_CALL(mpq_run_measure_save(ctx, s, cfg->measure.save));
    }
    MPQ_CALL(mpq_run_scores(ctx, s));
    MPQ_CALL(mpq_timer_start(ctx, "budget"));
    MPQ_CALL(solve_budget(ctx, s));
    MPQ_CALL(mpq_timer_stop(ctx, "budget"));
    return MPQ_OK;
}

/* Mixed precision with full-precision propagation: the measured codes of
 * the chosen candidates are final. */
static mpq_err take_measured(mpq_ctx *ctx, run_state *s) {
    measure_table *t = &s->meas;
    mpq_err err = MPQ_OK;
    /* Local work (each rank installs every layer): agreed before the
     * collective evaluation that follows. */
    for (int64_t l = 0; l < s->nl && err == MPQ_OK; l++) {
        if (s->excl[l])
            continue;
        int64_t x = l * t->ncol + s->choice[l];
        mpq_run_layer *rl = &s->res->layers[l];
        rl->q = t->q[x];
        t->q[x] = NULL;
        rl->loss = t->loss[x];
        rl->rtn_loss = t->rtn[x];
        rl->bits = t->bits[x];
        err = install_layer(ctx, s, l);
    }
    return mpq_agree(ctx, err);
}

static void print_assignment(mpq_ctx *ctx, const run_state *s) {
    if (ctx->rank != 0)
        return;
    MPQ_INFO("%-44s %-44s %10s %12s", "layer", "configuration", "bits", "score");
    for (int64_t l = 0; l < s->nl; l++) {
        const mpq_run_layer *rl = &s->res->layers[l];
        if (rl->excluded) {
            MPQ_INFO("%-44s %-44s %10s %12s", rl->name, "full precision (excluded)", "-", "-");
            continue;
        }
        MPQ_INFO("%-44s %-44s %10lld %12.5g%s", rl->name, rl->spec, (long long)rl->bits, rl->score,
                 rl->pinned ? " (pinned)" : "");
    }
}

static mpq_err run_pipeline(mpq_ctx *ctx, run_state *s) {
    const mpq_config *cfg = s->cfg;
    /* Saved statistics describe full-precision block inputs: they serve the
     * measuring pass of mixed precision, or a uniform run with FP
     * propagation; a uniform run with quantized propagation must measure H
     * on its own quantized activations. */
    MPQ_CHECK(!(!s->mixed && s->propagate_q && (cfg->hessian.load[0] || cfg->hessian.save[0])),
              MPQ_ERR_CONFIG,
              "%s: hessian.%s needs calibration.propagate = \"fp\" (or quant.candidates): with "
              "quantized propagation H depends on the earlier blocks' rounding",
              cfg->source, cfg->hessian.load[0] ? "load" : "save");
    MPQ_CALL(setup(ctx, s));
    MPQ_CALL(alloc_result(ctx, s));
    mpq_run_result *r = s->res;
    if (r->mixed) {
        MPQ_CALL(mixed_choose(ctx, s));
    } else {
        for (int64_t l = 0; l < s->nl; l++)
            s->choice[l] = s->excl[l] ? -1 : (s->pin[l] >= 0 ? s->pin[l] : 0);
    }
    for (int64_t l = 0; l < s->nl; l++) {
        if (s->excl[l])
            continue;
        mpq_run_layer *rl = &r->layers[l];
        const mpq_qspec *sp = run_spec(s, l, s->choice[l]);
        mpq_qspec_format(sp, rl->spec, sizeof rl->spec);
        rl->bits_per_code = sp->bits;
        rl->group = sp->group;
        if (r->mixed) {
            rl->score = s->score[l * s->maxc + s->choice[l]];
            rl->sensitivity = s->meas.sens[l];
            rl->energy = s->meas.energy[l];
        }
    }
    if (r->mixed && s->measured && !s->propagate_q) {
        MPQ_CALL(take_measured(ctx, s));
    } else {
        MPQ_INFO("round: %s, %lld layers, propagation %s", s->method->name, (long long)s->nl,
                 r->propagate);
        MPQ_CALL(run_pass(ctx, s, 0));
    }
    for (int64_t l = 0; l < s->nl; l++) {
        mpq_run_layer *rl = &r->layers[l];
        if (rl->excluded)
            continue;
        if (!r->mixed)
            rl->score = rl->loss;
        r->bits += rl->bits;
        r->weights += rl->rows * rl->cols;
    }
    r->bpw = r->weights > 0 ? (double)r->bits / (double)r->weights : 0.0;
    if (r->mixed)
        print_assignment(ctx, s);
    MPQ_INFO("quantized %lld weights with %lld bits: %.4f bits per weight", (long long)r->weights,
             (long long)r->bits, r->bpw);

    MPQ_CALL(mpq_timer_start(ctx, "eval"));
    if (s->opts.eval_fp)
        MPQ_CALL(evaluate(ctx, s, s->ffp, NULL, &r->fp));
    if (s->opts.eval_quantized)
        MPQ_CALL(evaluate(ctx, s, s->fq, s->ffp, &r->quant));
    MPQ_CALL(mpq_timer_stop(ctx, "eval"));
    if (cfg->output.path[0]) {
        MPQ_CALL(mpq_timer_start(ctx, "assemble"));
        MPQ_CALL(write_checkpoint(ctx, s));
        MPQ_CALL(mpq_timer_stop(ctx, "assemble"));
    }
    return MPQ_OK;
}

mpq_err mpq_run(mpq_ctx *ctx, const mpq_config *cfg, const mpq_run_opts *opts,
                mpq_run_result **out) {
    *out = NULL;
    run_state s;
    memset(&s, 0, sizeof s);
    s.cfg = cfg;
    if (opts)
        s.opts = *opts;
    else
        mpq_run_opts_default(&s.opts);
    s.propagate_q = strcmp(cfg->calibration.propagate, "fp") != 0;
    mpq_err err = run_pipeline(ctx, &s);
    if (err == MPQ_OK) {
        *out = s.res;
        s.res = NULL;
    }
    mpq_run_result_destroy(&s.res);
    state_free(&s);
    return err;
}
