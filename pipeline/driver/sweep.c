/* sweep.c: the engine of `mpquant sweep` (mpq_sweep.h): the plan of
 * measured configurations and points, the one measurement pass, the
 * sensitivity probes, and the assembly and evaluation of one point. */
#include <cjson/cJSON.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_budget.h"
#include "mpq_eval.h"
#include "mpq_log.h"
#include "mpq_timer.h"
#include "sweep_internal.h"

/* ---- the plan ------------------------------------------------------------------ */

static mpq_err parse_spec(mpq_ctx *ctx, const mpq_config *cfg, const char *key, int64_t i,
                          const char *text, mpq_qspec *spec) {
    mpq_err e = mpq_qspec_parse(ctx, text, spec);
    if (e == MPQ_OK)
        return MPQ_OK;
    char msg[MPQ_ERRMSG_MAX];
    snprintf(msg, sizeof msg, "%s", ctx->err_msg);
    mpq_err_clear(ctx);
    return MPQ_ERROR(MPQ_ERR_CONFIG, "%s: %s[%lld]: \"%s\": %s", cfg->source, key, (long long)i,
                     text, msg);
}

/* Index of (method, spec) among the configurations, added if new. */
static int32_t conf_add(sweep_plan *p, const mpq_round_method *m, const mpq_qspec *spec) {
    for (int64_t c = 0; c < p->nconf; c++)
        if (p->conf[c].method == m && mpq_qspec_equal(&p->conf[c].spec, spec))
            return (int32_t)c;
    p->conf[p->nconf].method = m;
    p->conf[p->nconf].spec = *spec;
    return (int32_t)p->nconf++;
}

void mpq_sweep_plan_free(sweep_plan *p) {
    MPQ_FREE(p->conf);
    MPQ_FREE(p->cand);
    MPQ_FREE(p->pts);
    memset(p, 0, sizeof *p);
}

mpq_err mpq_sweep_plan_build(mpq_ctx *ctx, const mpq_config *cfg, sweep_plan *p) {
    mpq_err err = MPQ_OK;
    memset(p, 0, sizeof *p);
    const mpq_strlist *cands = &cfg->quant.candidates;
    const mpq_strlist *uni = cfg->sweep.uniform.n > 0 ? &cfg->sweep.uniform : cands;
    const char *ukey = cfg->sweep.uniform.n > 0 ? "sweep.uniform" : "quant.candidates";
    const mpq_strlist *cmp = cfg->sweep.compare.n > 0 ? &cfg->sweep.compare : uni;
    const char *ckey = cfg->sweep.compare.n > 0 ? "sweep.compare" : ukey;
    const mpq_strlist *meth = &cfg->sweep.methods;
    MPQ_ENSURE(
        cands->n <= 1000 && uni->n <= 1000 && cmp->n <= 1000 && meth->n <= 16, MPQ_ERR_CONFIG,
        "%s: sweep: too many items (at most 1000 specs per list and 16 methods)", cfg->source);
    p->method = mpq_round_method_find(cfg->quant.method);
    MPQ_ENSURE(p->method, MPQ_ERR_CONFIG, "%s: quant.method: unknown method '%s'", cfg->source,
               cfg->quant.method);
    MPQ_ENSURE(cfg->sweep.budgets.n == 0 || cands->n > 0, MPQ_ERR_CONFIG,
               "%s: sweep.budgets is set but quant.candidates is empty: list the candidate specs "
               "the budget points choose from",
               cfg->source);
    int64_t maxconf = cands->n + uni->n + meth->n * cmp->n + 1;
    MPQ_ALLOC_TRY(p->conf, maxconf);
    MPQ_ALLOC_TRY(p->cand, cands->n + 1);
    MPQ_ALLOC_TRY(p->pts, cfg->sweep.budgets.n + uni->n + meth->n * cmp->n + 1);
    for (int64_t k = 0; k < cands->n; k++) {
        mpq_qspec s;
        MPQ_TRY(parse_spec(ctx, cfg, "quant.candidates", k, cands->v[k], &s));
        int64_t before = p->nconf;
        p->cand[k] = conf_add(p, p->method, &s);
        MPQ_ENSURE(p->nconf > before, MPQ_ERR_CONFIG,
                   "%s: quant.candidates: item %lld is the same quantizer as item %d", cfg->source,
                   (long long)k, p->cand[k]);
    }
    p->ncand = cands->n;
    for (int64_t i = 0; i < cfg->sweep.budgets.n; i++) {
        for (int64_t j = 0; j < i; j++)
            MPQ_ENSURE(cfg->sweep.budgets.v[j] != cfg->sweep.budgets.v[i], MPQ_ERR_CONFIG,
                       "%s: sweep.budgets: items %lld and %lld are both %g", cfg->source,
                       (long long)j, (long long)i, cfg->sweep.budgets.v[i]);
        p->pts[p->npts].kind = SWEEP_BUDGET;
        p->pts[p->npts++].budget = cfg->sweep.budgets.v[i];
    }
    int64_t first_uni = p->npts;
    for (int64_t i = 0; i < uni->n; i++) {
        mpq_qspec s;
        MPQ_TRY(parse_spec(ctx, cfg, ukey, i, uni->v[i], &s));
        int32_t c = conf_add(p, p->method, &s);
        for (int64_t j = first_uni; j < p->npts; j++)
            MPQ_ENSURE(p->pts[j].conf != c, MPQ_ERR_CONFIG, "%s: %s: item %lld repeats item %lld",
                       cfg->source, ukey, (long long)i, (long long)(j - first_uni));
        p->pts[p->npts].kind = SWEEP_UNIFORM;
        p->pts[p->npts++].conf = c;
    }
    int64_t end_uni = p->npts;
    for (int64_t mi = 0; mi < meth->n; mi++) {
        const mpq_round_method *m = mpq_round_method_find(meth->v[mi]);
        MPQ_ENSURE(m, MPQ_ERR_CONFIG,
                   "%s: sweep.methods[%lld]: unknown rounding method '%s' (rtn, gptq, adaround, "
                   "signround)",
                   cfg->source, (long long)mi, meth->v[mi]);
        for (int64_t j = 0; j < mi; j++)
            MPQ_ENSURE(strcmp(meth->v[j], meth->v[mi]) != 0, MPQ_ERR_CONFIG,
                       "%s: sweep.methods: '%s' is listed twice", cfg->source, meth->v[mi]);
        for (int64_t i = 0; i < cmp->n; i++) {
            mpq_qspec s;
            MPQ_TRY(parse_spec(ctx, cfg, ckey, i, cmp->v[i], &s));
            int32_t c = conf_add(p, m, &s);
            int dup = 0;
            for (int64_t j = first_uni; j < p->npts; j++)
                dup |= p->pts[j].conf == c;
            if (dup) {
                /* Already a uniform point (same method and spec), or a
                 * repeated compare spec: one point is enough. */
                int rep = 0;
                for (int64_t j = end_uni; j < p->npts; j++)
                    rep |= p->pts[j].conf == c;
                MPQ_ENSURE(!rep, MPQ_ERR_CONFIG, "%s: %s: item %lld (\"%s\") is listed twice",
                           cfg->source, ckey, (long long)i, cmp->v[i]);
                continue;
            }
            p->pts[p->npts].kind = SWEEP_COMPARE;
            p->pts[p->npts++].conf = c;
        }
    }
    MPQ_ENSURE(p->npts > 0, MPQ_ERR_CONFIG,
               "%s: sweep: nothing to sweep: set sweep.budgets (with quant.candidates), "
               "sweep.uniform or quant.candidates, or sweep.methods",
               cfg->source);
    return MPQ_OK;
cleanup:
    mpq_sweep_plan_free(p);
    return err;
}

/* ---- create / destroy ---------------------------------------------------------------- */

int64_t mpq_sweep_npoints(const mpq_sweep *sw) {
    return sw->plan.npts;
}

const mpq_sweep_point *mpq_sweep_reference(const mpq_sweep *sw) {
    return &sw->ref;
}

void mpq_sweep_destroy(mpq_sweep **swp) {
    if (!swp || !*swp)
        return;
    mpq_sweep *sw = *swp;
    mpq_measure_table_free(&sw->meas);
    MPQ_FREE(sw->score);
    MPQ_FREE(sw->excl);
    mpq_sweep_plan_free(&sw->plan);
    mpq_calib_set_destroy(&sw->set);
    mpq_tokenizer_destroy(&sw->tok);
    mpq_family_destroy(&sw->ffp);
    mpq_family_destroy(&sw->fq);
    mpq_model_close(&sw->m);
    mpq_free(sw);
    *swp = NULL;
}

static int layer_matches(const mpq_layer_info *li, const char *pattern) {
    return fnmatch(pattern, li->name, 0) == 0 || fnmatch(pattern, li->tensor, 0) == 0;
}

/* Exclusions and the byte counts of the model-size definition. */
static mpq_err setup_layers(mpq_ctx *ctx, mpq_sweep *sw) {
    const mpq_config *cfg = sw->cfg;
    const mpq_family_info *fi = sw->info;
    sw->nl = fi->nlayers;
    MPQ_ALLOC(sw->excl, sw->nl > 0 ? sw->nl : 1);
    MPQ_CHECK(cfg->budget.pin.n == 0, MPQ_ERR_CONFIG,
              "%s: budget.pin: pinned layers are not supported by mpquant sweep (every point "
              "sets every layer); use budget.exclude or run the pinned setting with mpquant run",
              cfg->source);
    MPQ_CHECK(strcmp(cfg->budget.count, "all") == 0, MPQ_ERR_CONFIG,
              "%s: budget.count: \"%s\" is not supported by mpquant sweep (its budgets and its "
              "size axis count the whole storage: codes + scales + zero-points); use \"all\"",
              cfg->source, cfg->budget.count);
    for (int64_t i = 0; i < cfg->budget.exclude.n; i++) {
        int64_t hits = 0;
        for (int64_t l = 0; l < sw->nl; l++)
            if (layer_matches(&fi->layers[l], cfg->budget.exclude.v[i])) {
                sw->excl[l] = 1;
                hits++;
            }
        MPQ_CHECK(hits > 0, MPQ_ERR_CONFIG,
                  "%s: budget.exclude: pattern \"%s\" matches no quantizable layer (e.g. \"%s\")",
                  cfg->source, cfg->budget.exclude.v[i], sw->nl > 0 ? fi->layers[0].name : "");
    }
    int64_t nq = 0;
    for (int64_t l = 0; l < sw->nl; l++)
        nq += !sw->excl[l];
    MPQ_CHECK(nq > 0, MPQ_ERR_CONFIG, "%s: budget.exclude leaves no layer to quantize",
              cfg->source);
    /* Sizes: every tensor of the file at fp32, minus the quantized layers. */
    for (int64_t i = 0; i < mpq_model_ntensors(sw->m); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(sw->m, i);
        int64_t b = 4 * t->numel;
        sw->fp_bytes += b;
        int quantized = 0;
        for (int64_t l = 0; l < sw->nl; l++)
            quantized |= !sw->excl[l] && strcmp(fi->layers[l].tensor, t->name) == 0;
        if (!quantized)
            sw->other_bytes += b;
    }
    return MPQ_OK;
}

static const char *auto_metric(const mpq_config *cfg, mpq_task task) {
    if (strcmp(cfg->sweep.metric, "auto") != 0)
        return cfg->sweep.metric;
    return task == MPQ_TASK_LM ? "ppl" : "accuracy";
}

static mpq_err setup(mpq_ctx *ctx, mpq_sweep *sw, int with_calib) {
    const mpq_config *cfg = sw->cfg;
    mpq_err err = MPQ_OK;
    if (ctx->rank == 0)
        err = mpq_config_check_paths(ctx, cfg);
    MPQ_CALL(mpq_agree(ctx, err));
    err = mpq_sweep_plan_build(ctx, cfg, &sw->plan);
    if (err == MPQ_OK)
        err = mpq_model_open(ctx, cfg->model.path, cfg->model.format, &sw->m);
    if (err == MPQ_OK)
        err = mpq_family_create(ctx, sw->m, cfg, NULL, &sw->fq);
    if (err == MPQ_OK)
        err = mpq_family_create(ctx, sw->m, cfg, NULL, &sw->ffp);
    if (err == MPQ_OK) {
        sw->info = mpq_family_get_info(sw->fq);
        if (sw->info->task == MPQ_TASK_LM) {
            if (!cfg->model.tokenizer[0])
                err = MPQ_ERROR(MPQ_ERR_CONFIG,
                                "%s: model.tokenizer: a language model needs a tokenizer",
                                cfg->source);
            else
                err = mpq_tokenizer_load(ctx, cfg->model.tokenizer, sw->info->vocab_size, &sw->tok);
        }
    }
    if (err == MPQ_OK)
        err = mpq_round_from_config(ctx, cfg, &sw->ro, NULL, NULL);
    if (err == MPQ_OK)
        err = setup_layers(ctx, sw);
    if (err == MPQ_OK) {
        const char *m = auto_metric(cfg, sw->info->task);
        int lm = strcmp(m, "ppl") == 0 || strcmp(m, "nll") == 0 || strcmp(m, "kld") == 0;
        int cls = strcmp(m, "accuracy") == 0;
        if ((sw->info->task == MPQ_TASK_LM && cls) || (sw->info->task != MPQ_TASK_LM && lm))
            err = MPQ_ERROR(MPQ_ERR_CONFIG,
                            "%s: sweep.metric: '%s' does not apply to a %s (use ppl, nll, kld or "
                            "agreement for language models; accuracy or agreement for "
                            "classifiers)",
                            cfg->source, m,
                            sw->info->task == MPQ_TASK_LM ? "language model" : "classifier");
        snprintf(sw->metric, sizeof sw->metric, "%s", m);
    }
    if (err == MPQ_OK && sw->info->task == MPQ_TASK_LM && !cfg->eval.text[0])
        err = MPQ_ERROR(MPQ_ERR_CONFIG, "%s: eval.text: no text file to evaluate on", cfg->source);
    MPQ_CALL(mpq_agree(ctx, err));
    if (with_calib) {
        err = mpq_calib_set_from_config_family(ctx, cfg, sw->ffp, sw->tok, &sw->set);
        MPQ_CALL(mpq_agree(ctx, err));
    }
    MPQ_CALL(mpq_measure_table_alloc(ctx, &sw->meas, sw->nl, sw->plan.nconf));
    MPQ_ALLOC(sw->score, sw->nl * sw->plan.ncand + 1);
    return MPQ_OK;
}

mpq_err mpq_sweep_create(mpq_ctx *ctx, const mpq_config *cfg, int with_calib, mpq_sweep **out) {
    *out = NULL;
    mpq_sweep *sw = NULL;
    MPQ_ALLOC(sw, 1);
    sw->cfg = cfg;
    mpq_err err = setup(ctx, sw, with_calib);
    if (err != MPQ_OK) {
        mpq_sweep_destroy(&sw);
        return err;
    }
    MPQ_INFO("sweep: model %s (%s), %lld layers, %lld measured configurations, %lld points",
             cfg->model.path, mpq_family_name(sw->fq), (long long)sw->nl, (long long)sw->plan.nconf,
             (long long)sw->plan.npts);
    *out = sw;
    return MPQ_OK;
}

/* ---- the measurement pass --------------------------------------------------------- */

/* Every configuration of every layer: column c is configuration c. */
static void all_columns(const void *ud, int64_t l, int32_t *k0, int32_t *k1) {
    const mpq_sweep *sw = ud;
    *k0 = 0;
    *k1 = (int32_t)sw->plan.nconf;
}

/* Column c: the spec and rounding method of configuration c. */
static void conf_of(const void *ud, int64_t l, int32_t k, mpq_qspec *spec,
                    const mpq_round_method **method) {
    const sweep_conf *c = &((const mpq_sweep *)ud)->plan.conf[k];
    *spec = c->spec;
    *method = c->method;
}

static const block_pass_ops sweep_ops = {.columns = all_columns, .conf = conf_of};

/* Collective. Every configuration of every layer, block by block,
 * full-precision propagation (the working model keeps its full-precision
 * weights): the same pass as mpquant run's measurement. */
static mpq_err measure_pass(mpq_ctx *ctx, mpq_sweep *sw) {
    block_pass p = {.cfg = sw->cfg,
                    .f = sw->fq,
                    .set = sw->set,
                    .ro = &sw->ro,
                    .excl = sw->excl,
                    .ncol = (int32_t)sw->plan.nconf,
                    .advance = 1,
                    .who = "sweep",
                    .label = "sweep measure",
                    .timer = "measure",
                    .tab = &sw->meas,
                    .ops = &sweep_ops,
                    .ud = sw};
    return mpq_block_pass(ctx, &p);
}

/* ---- importance ----------------------------------------------------------------- */

static const mpq_qspec *cand_spec(const void *ud, int32_t k) {
    const sweep_plan *p = ud;
    return &p->conf[p->cand[k]].spec;
}

/* The candidate probed for the sensitivities, as mpquant run picks it
 * (mpq_measure_probe_candidate); 0 without candidates. */
static mpq_err pick_sens_cand(mpq_ctx *ctx, mpq_sweep *sw) {
    const mpq_config *cfg = sw->cfg;
    const char *text = cfg->importance.sensitivity_spec;
    mpq_qspec want;
    sw->sens_cand = 0;
    if (sw->plan.ncand == 0)
        return MPQ_OK;
    if (text[0])
        MPQ_CALL(parse_spec(ctx, cfg, "importance.sensitivity_spec", 0, text, &want));
    return mpq_measure_probe_candidate(ctx, cfg, sw->info, (int32_t)sw->plan.ncand, cand_spec,
                                       &sw->plan, text[0] ? &want : NULL, &sw->sens_cand);
}

/* Collective. The same probe as mpquant run's importance "sensitivity"
 * (measure_internal.h): every layer that is not excluded, with the probed
 * candidate alone. */
static mpq_err sensitivity(mpq_ctx *ctx, mpq_sweep *sw) {
    measure_probe p = {.ffp = sw->ffp,
                       .set = sw->set,
                       .samples = sw->cfg->importance.samples,
                       .excl = sw->excl,
                       .col = sw->plan.cand[sw->sens_cand],
                       .who = "sweep importance"};
    return mpq_measure_sensitivity(ctx, &p, &sw->meas);
}

mpq_err mpq_sweep_scores(mpq_ctx *ctx, mpq_sweep *sw) {
    measure_score kind;
    MPQ_CALL(mpq_measure_score_kind(ctx, sw->cfg, &kind));
    for (int64_t l = 0; l < sw->nl; l++) {
        for (int64_t k = 0; k < sw->plan.ncand; k++) {
            double v = mpq_measure_score(&sw->meas, kind, l, sw->plan.cand[k]);
            MPQ_CHECK(sw->excl[l] || (isfinite(v) && v >= 0.0), MPQ_ERR_NUMERIC,
                      "importance: score of layer %s candidate %lld is %g",
                      sw->info->layers[l].name, (long long)k, v);
            sw->score[l * sw->plan.ncand + k] = v;
        }
    }
    return MPQ_OK;
}

/* ---- evaluation ---------------------------------------------------------------------- */

typedef struct sweep_eval {
    mpq_lm_result lm;
    mpq_cls_result cls;
} sweep_eval;

static mpq_err evaluate(mpq_ctx *ctx, mpq_sweep *sw, mpq_family *f, mpq_family *ref,
                        sweep_eval *e) {
    const mpq_config *cfg = sw->cfg;
    memset(e, 0, sizeof *e);
    MPQ_CALL(mpq_timer_start(ctx, "eval"));
    if (sw->info->task == MPQ_TASK_LM)
        MPQ_CALL(mpq_eval_lm_text(ctx, f, ref, sw->tok, cfg->eval.text, cfg->eval.docs, &e->lm));
    else
        MPQ_CALL(mpq_eval_idx(ctx, f, ref, cfg->eval.images, cfg->eval.labels, cfg->eval.first,
                              cfg->eval.count, cfg->eval.batch, &e->cls));
    MPQ_CALL(mpq_timer_stop(ctx, "eval"));
    return MPQ_OK;
}

static double metric_of(const mpq_sweep *sw, const sweep_eval *e, int is_ref) {
    const char *m = sw->metric;
    if (strcmp(m, "ppl") == 0)
        return e->lm.ppl;
    if (strcmp(m, "nll") == 0)
        return e->lm.mean_nll;
    if (strcmp(m, "kld") == 0)
        return is_ref ? 0.0 : e->lm.kld;
    if (strcmp(m, "accuracy") == 0)
        return e->cls.accuracy;
    /* agreement */
    if (is_ref)
        return 1.0;
    return sw->info->task == MPQ_TASK_LM ? e->lm.top1_agreement : e->cls.agreement;
}

static void fill_eval(const mpq_sweep *sw, const sweep_eval *e, int is_ref, mpq_sweep_point *pt) {
    snprintf(pt->metric, sizeof pt->metric, "%s", sw->metric);
    pt->value = metric_of(sw, e, is_ref);
    if (is_ref) {
        pt->kld = 0.0;
        pt->agreement = 1.0;
    } else if (sw->info->task == MPQ_TASK_LM) {
        pt->kld = e->lm.kld;
        pt->agreement = e->lm.top1_agreement;
    } else {
        pt->agreement = e->cls.agreement;
    }
}

mpq_err mpq_sweep_measure(mpq_ctx *ctx, mpq_sweep *sw) {
    MPQ_CHECK(sw->set, MPQ_ERR_INTERNAL, "sweep: created without calibration samples");
    double t0 = mpq_now();
    MPQ_INFO("sweep measure: %lld configurations x %lld layers, %lld calibration samples, "
             "full-precision propagation",
             (long long)sw->plan.nconf, (long long)sw->nl, (long long)sw->set->nsamples);
    MPQ_CALL(measure_pass(ctx, sw));
    MPQ_CALL(pick_sens_cand(ctx, sw));
    if (sw->plan.ncand > 0 && strcmp(sw->cfg->importance.method, "sensitivity") == 0) {
        MPQ_CALL(mpq_timer_start(ctx, "importance"));
        MPQ_CALL(sensitivity(ctx, sw));
        MPQ_CALL(mpq_timer_stop(ctx, "importance"));
    }
    MPQ_CALL(mpq_sweep_scores(ctx, sw));
    double t1 = mpq_now();
    sweep_eval e;
    MPQ_CALL(evaluate(ctx, sw, sw->ffp, NULL, &e));
    mpq_sweep_point *r = &sw->ref;
    memset(r, 0, sizeof *r);
    r->index = -1;
    snprintf(r->kind, sizeof r->kind, "fp");
    snprintf(r->label, sizeof r->label, "full precision");
    snprintf(r->method, sizeof r->method, "-");
    snprintf(r->family, sizeof r->family, "fp32");
    snprintf(r->spec, sizeof r->spec, "fp32");
    for (int64_t l = 0; l < sw->nl; l++)
        if (!sw->excl[l])
            r->weights += sw->info->layers[l].out * sw->info->layers[l].in;
    r->bits = 32 * r->weights;
    r->bpw = 32.0;
    r->size_bytes = sw->fp_bytes;
    fill_eval(sw, &e, 1, r);
    r->reference = r->value;
    r->seconds = mpq_now() - t1;
    sw->have = 1;
    MPQ_INFO("sweep measure: done in %.2f s; full precision %s = %.6g", t1 - t0, r->metric,
             r->value);
    return MPQ_OK;
}

/* ---- one point --------------------------------------------------------------------- */

/* What rank 0 found about a budget, broadcast as one block. */
typedef struct budget_range {
    int64_t budget_bits;        /* the budget as the solver counts it */
    int64_t min_bits, max_bits; /* smallest and largest achievable totals */
    int64_t weights;            /* quantized weights */
} budget_range;

/* Rank 0 solves the knapsack over the candidates; every rank gets the
 * choice (candidate per layer, -1 excluded). A budget below the smallest
 * achievable size is not an error: *infeasible = 1 on every rank, *range
 * says why, and choice is left alone. */
static mpq_err solve_budget(mpq_ctx *ctx, mpq_sweep *sw, double avg_bits, int32_t *choice,
                            int *infeasible, budget_range *range) {
    mpq_err err = MPQ_OK;
    const sweep_plan *p = &sw->plan;
    mpq_budget_problem *bp = NULL;
    mpq_budget_result *br = NULL;
    int64_t *cb = NULL;
    memset(range, 0, sizeof *range);
    *infeasible = 0;
    if (ctx->rank == 0) {
        err = mpq_budget_problem_create(ctx, sw->nl, (int32_t)p->ncand, &bp);
        if (err == MPQ_OK)
            err = mpq_malloc(ctx, p->ncand, sizeof *cb, (void **)&cb);
        for (int64_t l = 0; l < sw->nl && err == MPQ_OK; l++) {
            if (sw->excl[l]) {
                err = mpq_budget_exclude(ctx, bp, l, 1);
                continue;
            }
            for (int64_t k = 0; k < p->ncand; k++)
                cb[k] = sw->meas.bits[l * p->nconf + p->cand[k]];
            err = mpq_budget_set_layer(ctx, bp, l, sw->info->layers[l].out * sw->info->layers[l].in,
                                       (int32_t)p->ncand, cb, sw->score + l * p->ncand);
        }
        mpq_budget_spec bs = {.kind = MPQ_BUDGET_AVG_BITS, .avg_bits = avg_bits};
        if (err == MPQ_OK)
            err = mpq_budget_bits(ctx, bp, &bs, &range->budget_bits);
        if (err == MPQ_OK)
            err = mpq_budget_range(ctx, bp, &range->min_bits, &range->max_bits, &range->weights);
        if (err == MPQ_OK && range->budget_bits < range->min_bits)
            *infeasible = 1;
        if (err == MPQ_OK && !*infeasible) {
            err = mpq_budget_solve(ctx, bp, &bs, &br);
            if (err != MPQ_OK) {
                char msg[MPQ_ERRMSG_MAX];
                snprintf(msg, sizeof msg, "%s", ctx->err_msg);
                mpq_err_clear(ctx);
                err = MPQ_ERROR(err, "%s: sweep.budgets: %g bits per weight: %s", sw->cfg->source,
                                avg_bits, msg);
            }
        }
    }
    MPQ_TRY(mpq_agree(ctx, err));
    MPQ_MPI_TRY(MPI_Bcast(infeasible, 1, MPI_INT, 0, ctx->comm));
    MPQ_MPI_TRY(MPI_Bcast(range, (int)sizeof *range, MPI_BYTE, 0, ctx->comm));
    if (*infeasible)
        goto cleanup;
    MPQ_TRY(mpq_budget_bcast(ctx, &br));
    for (int64_t l = 0; l < sw->nl; l++)
        choice[l] = sw->excl[l] ? -1 : br->choice[l];
cleanup:
    mpq_free(cb);
    mpq_budget_result_destroy(&br);
    mpq_budget_problem_destroy(&bp);
    return err;
}

mpq_err mpq_sweep_run_point(mpq_ctx *ctx, mpq_sweep *sw, int64_t i, mpq_sweep_point *pt) {
    mpq_err err = MPQ_OK;
    const sweep_plan *p = &sw->plan;
    int32_t *conf = NULL; /* [nl] configuration of each layer, -1 excluded */
    float *deq = NULL;
    MPQ_CHECK(sw->have, MPQ_ERR_INTERNAL, "sweep: no measurement (measure or load first)");
    MPQ_CHECK(i >= 0 && i < p->npts, MPQ_ERR_ARG, "sweep: point %lld out of range (0 .. %lld)",
              (long long)i, (long long)p->npts - 1);
    double t0 = mpq_now();
    const sweep_plan_point *pp = &p->pts[i];
    memset(pt, 0, sizeof *pt);
    pt->index = i;
    MPQ_ALLOC_TRY(conf, sw->nl + 1);
    char buf[MPQ_QSPEC_MAX];
    if (pp->kind == SWEEP_BUDGET) {
        int infeasible = 0;
        budget_range br;
        MPQ_TRY(solve_budget(ctx, sw, pp->budget, conf, &infeasible, &br));
        for (int64_t l = 0; l < sw->nl && !infeasible; l++)
            conf[l] = conf[l] < 0 ? -1 : p->cand[conf[l]];
        snprintf(pt->kind, sizeof pt->kind, "budget");
        snprintf(pt->label, sizeof pt->label, "avg %g bits", pp->budget);
        snprintf(pt->method, sizeof pt->method, "%s", p->method->name);
        /* One family name when every candidate shares it. */
        const char *fam = p->conf[p->cand[0]].spec.ops->name;
        for (int64_t k = 1; k < p->ncand; k++)
            if (strcmp(p->conf[p->cand[k]].spec.ops->name, fam) != 0)
                fam = "mixed";
        snprintf(pt->family, sizeof pt->family, "%s", fam);
        snprintf(pt->spec, sizeof pt->spec, "mixed");
        pt->budget = pp->budget;
        if (infeasible) {
            /* A scaling study often lists budgets below what the menu can
             * reach; one such point must not cost the others (nor block the
             * merge job of a Slurm array): it is reported, not evaluated. */
            double w = br.weights > 0 ? (double)br.weights : 1.0;
            pt->infeasible = 1;
            pt->weights = br.weights;
            pt->min_bpw = (double)br.min_bits / w;
            pt->max_bpw = (double)br.max_bits / w;
            snprintf(pt->metric, sizeof pt->metric, "%s", sw->metric);
            pt->reference = sw->ref.value;
            pt->seconds = mpq_now() - t0;
            MPQ_WARN("sweep point %lld: budget %g bits per weight is infeasible: quant.candidates "
                     "reach %.4f .. %.4f bits per weight (%lld .. %lld bits for %lld weights); "
                     "the point is skipped and marked infeasible in the report",
                     (long long)i, pp->budget, pt->min_bpw, pt->max_bpw, (long long)br.min_bits,
                     (long long)br.max_bits, (long long)br.weights);
            goto cleanup;
        }
    } else {
        const sweep_conf *c = &p->conf[pp->conf];
        for (int64_t l = 0; l < sw->nl; l++)
            conf[l] = sw->excl[l] ? -1 : pp->conf;
        snprintf(pt->kind, sizeof pt->kind, "%s",
                 pp->kind == SWEEP_UNIFORM ? "uniform" : "compare");
        mpq_qspec_format(&c->spec, buf, sizeof buf);
        snprintf(pt->spec, sizeof pt->spec, "%s", buf);
        snprintf(pt->method, sizeof pt->method, "%s", c->method->name);
        snprintf(pt->family, sizeof pt->family, "%s", c->spec.ops->name);
        snprintf(pt->label, sizeof pt->label, "%s %s", c->method->name, buf);
    }
    int64_t maxw = 1;
    for (int64_t l = 0; l < sw->nl; l++)
        if (sw->info->layers[l].out * sw->info->layers[l].in > maxw)
            maxw = sw->info->layers[l].out * sw->info->layers[l].in;
    MPQ_ALLOC_TRY(deq, maxw);
    for (int64_t l = 0; l < sw->nl; l++) {
        if (conf[l] < 0)
            continue;
        const mpq_qlayer *q = sw->meas.q[l * p->nconf + conf[l]];
        MPQ_ENSURE(q, MPQ_ERR_INTERNAL, "sweep: layer %s has no measured codes",
                   sw->info->layers[l].name);
        mpq_qlayer_dequantize(q, deq);
        MPQ_TRY(mpq_family_set_weight(ctx, sw->fq, l, deq));
        pt->bits += sw->meas.bits[l * p->nconf + conf[l]];
        pt->weights += sw->info->layers[l].out * sw->info->layers[l].in;
    }
    pt->bpw = pt->weights > 0 ? (double)pt->bits / (double)pt->weights : 0.0;
    pt->size_bytes = pt->bits / 8 + sw->other_bytes;
    sweep_eval e;
    MPQ_TRY(evaluate(ctx, sw, sw->fq, sw->ffp, &e));
    fill_eval(sw, &e, 0, pt);
    pt->reference = sw->ref.value;
    pt->rel_change = pt->reference != 0.0 ? (pt->value - pt->reference) / fabs(pt->reference) : 0.0;
    pt->seconds = mpq_now() - t0;
    MPQ_INFO("sweep point %lld (%s %s): %.4f bits per weight, %lld bytes, %s %.6g (%+.2f%%)",
             (long long)i, pt->kind, pt->label, pt->bpw, (long long)pt->size_bytes, pt->metric,
             pt->value, 100.0 * pt->rel_change);
cleanup:
    mpq_free(deq);
    mpq_free(conf);
    return err;
}
