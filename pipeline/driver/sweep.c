/* sweep.c: the engine of `mpquant sweep` (mpq_sweep.h), built on the
 * session (mpq_session.h) that `mpquant run` shares: the plan of measured
 * configurations and points, the one measurement pass, the sensitivity
 * probes, and the choice, assembly and evaluation of one point. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_log.h"
#include "mpq_timer.h"
#include "pass_internal.h"
#include "sweep_internal.h"

/* ---- the plan ------------------------------------------------------------------ */

/* Item i of the list `key`, a spec or "spec;rate=LAMBDA"
 * (mpq_session_parse_item, naming "key[i]"), rounded by method m. */
static mpq_err parse_spec(mpq_ctx *ctx, const mpq_config *cfg, const char *key, int64_t i,
                          const char *text, const mpq_round_method *m, sweep_conf *c) {
    char item[64];
    snprintf(item, sizeof item, "%s[%lld]", key, (long long)i);
    c->method = m;
    return mpq_session_parse_item(ctx, cfg, key, item, text, m->name, &c->spec, &c->rate);
}

/* Index of configuration x (method, spec, rate) among the configurations,
 * added if new. */
static int32_t conf_add(sweep_plan *p, const sweep_conf *x) {
    for (int64_t c = 0; c < p->nconf; c++)
        if (p->conf[c].method == x->method && mpq_qspec_equal(&p->conf[c].spec, &x->spec) &&
            p->conf[c].rate == x->rate)
            return (int32_t)c;
    p->conf[p->nconf] = *x;
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
        sweep_conf s;
        MPQ_TRY(parse_spec(ctx, cfg, "quant.candidates", k, cands->v[k], p->method, &s));
        int64_t before = p->nconf;
        p->cand[k] = conf_add(p, &s);
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
        sweep_conf s;
        MPQ_TRY(parse_spec(ctx, cfg, ukey, i, uni->v[i], p->method, &s));
        int32_t c = conf_add(p, &s);
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
            sweep_conf s;
            MPQ_TRY(parse_spec(ctx, cfg, ckey, i, cmp->v[i], m, &s));
            int32_t c = conf_add(p, &s);
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
    mpq_sweep_plan_free(&sw->plan);
    mpq_session_destroy(&sw->ses);
    mpq_free(sw);
    *swp = NULL;
}

mpq_err mpq_sweep_check_files(mpq_ctx *ctx, const mpq_config *cfg, int64_t npoints) {
    static const char *const fixed[] = {"measure.h5",  "points/fp.json", "report.csv",
                                        "report.json", "report.md",      "report-plot.dat",
                                        "report.gp",   "report.png"};
    const int64_t nfixed = cfg->sweep.plot ? 8 : 5; /* the plot's files are the last three */
    mpq_session_file in[MPQ_SESSION_MAX_FILES];
    const int64_t ni = mpq_session_named_inputs(cfg, in);
    MPQ_CHECK(ni <= MPQ_SESSION_MAX_FILES, MPQ_ERR_INTERNAL,
              "%lld input paths, more than MPQ_SESSION_MAX_FILES (%d): raise it", (long long)ni,
              MPQ_SESSION_MAX_FILES);
    const char *dir = mpq_sweep_output_dir(cfg);
    char path[4096];
    mpq_session_file out = {"sweep.output_dir", path};
    for (int64_t i = 0; i < nfixed + npoints; i++) {
        if (i < nfixed)
            snprintf(path, sizeof path, "%s/%s", dir, fixed[i]);
        else
            snprintf(path, sizeof path, "%s/points/point-%04lld.json", dir,
                     (long long)(i - nfixed));
        MPQ_CALL(mpq_session_check_output(ctx, cfg, &out, in, ni));
    }
    return MPQ_OK;
}

/* Local (every rank alike). What the sweep refuses beyond the session's
 * rules, then the plan. */
static mpq_err check_config(mpq_ctx *ctx, mpq_sweep *sw) {
    const mpq_config *cfg = sw->cfg;
    MPQ_CHECK(cfg->budget.pin.n == 0, MPQ_ERR_CONFIG,
              "%s: budget.pin: pinned layers are not supported by mpquant sweep (every point "
              "sets every layer); use budget.exclude or run the pinned setting with mpquant run",
              cfg->source);
    MPQ_CHECK(strcmp(cfg->budget.count, "codes") != 0, MPQ_ERR_CONFIG,
              "%s: budget.count: \"%s\" is not supported by mpquant sweep (its budgets and its "
              "size axis count the whole storage: codes + scales + zero-points); use \"all\", "
              "or \"coded\" for the zstd-coded storage",
              cfg->source, cfg->budget.count);
    sw->coded = strcmp(cfg->budget.count, "coded") == 0;
    MPQ_CHECK(!sw->coded || strcmp(cfg->output.code_coding, "zstd") == 0, MPQ_ERR_CONFIG,
              "%s: budget.count = \"coded\" needs output.code_coding = \"zstd\" (the sweep's "
              "sizes are then those of zstd-coded codes; got \"%s\")",
              cfg->source, cfg->output.code_coding);
    MPQ_CALL(mpq_sweep_plan_build(ctx, cfg, &sw->plan));
    return MPQ_OK;
}

/* Local. The metric, and the byte counts of the model-size definition:
 * every tensor of the file at fp32, minus the quantized layers. */
static mpq_err setup_sizes(mpq_ctx *ctx, mpq_sweep *sw) {
    const mpq_session *ses = sw->ses;
    const mpq_config *cfg = sw->cfg;
    MPQ_CALL(mpq_sweep_metric_from_config(ctx, cfg, ses->info->task, &sw->metric));
    MPQ_CHECK(ses->info->task != MPQ_TASK_LM || cfg->eval.text[0], MPQ_ERR_CONFIG,
              "%s: eval.text: no text file to evaluate on", cfg->source);
    for (int64_t i = 0; i < mpq_model_ntensors(ses->m); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(ses->m, i);
        int64_t b = 4 * t->numel;
        sw->fp_bytes += b;
        int quantized = 0;
        for (int64_t l = 0; l < ses->nl; l++)
            quantized |= !ses->excl[l] && strcmp(ses->info->layers[l].tensor, t->name) == 0;
        if (!quantized)
            sw->other_bytes += b;
    }
    MPQ_CALL(mpq_measure_table_alloc(ctx, &sw->meas, ses->nl, sw->plan.nconf));
    MPQ_ALLOC(sw->score, ses->nl * sw->plan.ncand + 1);
    return MPQ_OK;
}

mpq_err mpq_sweep_create(mpq_ctx *ctx, const mpq_config *cfg, int with_calib, mpq_sweep **out) {
    *out = NULL;
    mpq_sweep *sw = NULL;
    mpq_err err = mpq_malloc(ctx, 1, sizeof *sw, (void **)&sw);
    if (err == MPQ_OK) {
        sw->cfg = cfg;
        err = check_config(ctx, sw);
    }
    MPQ_TRY(mpq_agree(ctx, err));
    if (ctx->rank == 0)
        err = mpq_sweep_check_files(ctx, cfg, sw->plan.npts);
    MPQ_TRY(mpq_agree(ctx, err));
    /* The candidates are quant.candidates alone; the sweep writes no
     * checkpoint and its own files were checked above. */
    const mpq_session_opts so = {.uniform_spec = 0, .evaluates = 1};
    MPQ_TRY(mpq_session_create(ctx, cfg, &so, &sw->ses));
    MPQ_TRY(mpq_agree(ctx, setup_sizes(ctx, sw)));
    if (with_calib)
        MPQ_TRY(mpq_session_calibrate(ctx, sw->ses));
    MPQ_INFO("sweep: model %s (%s), %lld layers, %lld measured configurations, %lld points",
             cfg->model.path, mpq_family_name(sw->ses->fq), (long long)sw->ses->nl,
             (long long)sw->plan.nconf, (long long)sw->plan.npts);
    *out = sw;
    return MPQ_OK;
cleanup:
    mpq_sweep_destroy(&sw);
    return err;
}

/* ---- the measurement ----------------------------------------------------------------- */

/* Every configuration of the block's layers: column c is configuration c. */
static void add_conf_jobs(mpq_ctx *ctx, const mpq_sweep *sw, mpq_pass *p) {
    for (int64_t i = 0; i < p->nlb; i++)
        for (int32_t c = 0; c < sw->plan.nconf; c++) {
            const sweep_conf *x = &sw->plan.conf[c];
            mpq_pass_add_job(ctx, p, i, c, &x->spec, x->method, x->rate);
        }
}

/* Collective. measure: every configuration of every layer, block by block
 * with full-precision propagation (the working model keeps its
 * full-precision weights): per block calibrate and Hessian (the forward
 * also propagates), round, keep. The same pass as mpquant run's
 * measurement. */
static mpq_err measure_pass(mpq_ctx *ctx, mpq_sweep *sw) {
    mpq_err err = MPQ_OK;
    mpq_pass *p = NULL;
    const mpq_pass_opts po = {.advance = 1,
                              .who = "sweep",
                              .label = "sweep measure",
                              .ncol = (int32_t)sw->plan.nconf,
                              .coded = sw->coded};
    MPQ_TRY(mpq_pass_create(ctx, sw->ses, &po, &p));
    for (int64_t b = 0; b < sw->ses->info->nblocks; b++) {
        MPQ_TRY(mpq_pass_hessian(ctx, p, b));
        MPQ_TRY(mpq_pass_layers(ctx, p, b));
        add_conf_jobs(ctx, sw, p);
        MPQ_TRY(mpq_pass_round(ctx, p, MPQ_STAGE_MEASURE));
        MPQ_TRY(mpq_pass_keep(ctx, p, &sw->meas));
        MPQ_TRY(mpq_pass_next(ctx, p, b));
    }
    MPQ_TRY(mpq_pass_finish(ctx, p));
cleanup:
    mpq_pass_destroy(&p);
    return err;
}

/* Collective. The same probe as mpquant run's (mpq_importance.h): every
 * layer that is not excluded, with the probed candidate alone, when the
 * estimator reads it. */
static mpq_err sensitivity(mpq_ctx *ctx, mpq_sweep *sw) {
    const mpq_session *ses = sw->ses;
    if (sw->plan.ncand == 0 || !ses->importance->needs_sensitivity)
        return MPQ_OK;
    mpq_importance_probe p = {.ffp = ses->ffp,
                              .set = ses->set,
                              .samples = sw->cfg->importance.samples,
                              .excl = ses->excl,
                              .col = sw->plan.cand[sw->sens_cand],
                              .who = "sweep importance"};
    MPQ_CALL(mpq_stage_start(ctx, MPQ_STAGE_IMPORTANCE));
    MPQ_CALL(mpq_importance_sensitivity(ctx, &p, &sw->meas));
    MPQ_CALL(mpq_stage_stop(ctx, MPQ_STAGE_IMPORTANCE));
    return MPQ_OK;
}

mpq_err mpq_sweep_scores(mpq_ctx *ctx, mpq_sweep *sw) {
    const mpq_session *ses = sw->ses;
    MPQ_CALL(mpq_importance_scores(ctx, ses->importance, &sw->meas, ses->info, sw->plan.ncand, NULL,
                                   sw->plan.cand, ses->excl, sw->score));
    return MPQ_OK;
}

/* ---- evaluation ---------------------------------------------------------------------- */

static mpq_err evaluate(mpq_ctx *ctx, mpq_sweep *sw, mpq_family *f, mpq_family *ref,
                        mpq_session_eval *e) {
    MPQ_CALL(mpq_stage_start(ctx, MPQ_STAGE_EVAL));
    MPQ_CALL(mpq_session_evaluate(ctx, sw->ses, f, ref, 0, e));
    MPQ_CALL(mpq_stage_stop(ctx, MPQ_STAGE_EVAL));
    return MPQ_OK;
}

static void fill_eval(const mpq_sweep *sw, const mpq_session_eval *e, int is_ref,
                      mpq_sweep_point *pt) {
    snprintf(pt->metric, sizeof pt->metric, "%s", sw->metric->name);
    pt->value = sw->metric->value(e, is_ref);
    /* Perplexity beside whatever the metric is: the figure readers know,
     * though on an out-of-domain text it can rank a point above full
     * precision (the reason KLD is the default metric). */
    pt->ppl = e->task == MPQ_TASK_LM ? e->lm.ppl : 0.0;
    if (is_ref) {
        pt->kld = 0.0;
        pt->agreement = 1.0;
    } else if (e->task == MPQ_TASK_LM) {
        pt->kld = e->lm.kld;
        pt->agreement = e->lm.top1_agreement;
    } else {
        pt->agreement = e->cls.agreement;
    }
}

mpq_err mpq_sweep_measure(mpq_ctx *ctx, mpq_sweep *sw) {
    const mpq_session *ses = sw->ses;
    MPQ_CHECK(ses->set, MPQ_ERR_INTERNAL, "sweep: created without calibration samples");
    double t0 = mpq_now();
    MPQ_INFO("sweep measure: %lld configurations x %lld layers, %lld calibration samples, "
             "full-precision propagation",
             (long long)sw->plan.nconf, (long long)ses->nl, (long long)ses->set->nsamples);
    MPQ_CALL(measure_pass(ctx, sw));
    MPQ_CALL(mpq_session_probe_candidate(ctx, ses, &sw->sens_cand));
    MPQ_CALL(sensitivity(ctx, sw));
    MPQ_CALL(mpq_sweep_scores(ctx, sw));
    double t1 = mpq_now();
    mpq_session_eval e;
    MPQ_CALL(evaluate(ctx, sw, ses->ffp, NULL, &e));
    mpq_sweep_point *r = &sw->ref;
    memset(r, 0, sizeof *r);
    r->index = -1;
    snprintf(r->kind, sizeof r->kind, "fp");
    snprintf(r->label, sizeof r->label, "full precision");
    snprintf(r->method, sizeof r->method, "-");
    snprintf(r->family, sizeof r->family, "fp32");
    snprintf(r->spec, sizeof r->spec, "fp32");
    for (int64_t l = 0; l < ses->nl; l++)
        if (!ses->excl[l])
            r->weights += ses->info->layers[l].out * ses->info->layers[l].in;
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

/* The storage bits of configuration c of layer l that the sweep counts:
 * stored (fixed-length codes), or zstd-coded with budget.count = "coded". */
static int64_t sweep_bits(const mpq_sweep *sw, int64_t l, int64_t c) {
    const int64_t x = l * sw->plan.nconf + c;
    return sw->coded ? sw->meas.coded[x] : sw->meas.bits[x];
}

/* Collective. The budget point's choice: rank 0 solves the knapsack over
 * the candidates (stage "budget"); conf[l] is the configuration of layer l
 * (-1 excluded). A budget below the smallest achievable size is not an
 * error: range->infeasible = 1 on every rank and conf is left alone. */
static mpq_err solve_budget(mpq_ctx *ctx, mpq_sweep *sw, double avg_bits, int32_t *conf,
                            mpq_session_range *range) {
    const mpq_session *ses = sw->ses;
    const sweep_plan *p = &sw->plan;
    int64_t *cost = NULL;
    mpq_err err = mpq_malloc(ctx, ses->nl * p->ncand + 1, sizeof *cost, (void **)&cost);
    for (int64_t l = 0; l < ses->nl && err == MPQ_OK; l++)
        for (int64_t k = 0; k < p->ncand && !ses->excl[l]; k++)
            cost[l * p->ncand + k] = sweep_bits(sw, l, p->cand[k]);
    char what[64];
    snprintf(what, sizeof what, "sweep.budgets: %g bits per weight", avg_bits);
    const mpq_session_knapsack k = {.ncol = (int32_t)p->ncand,
                                    .cost = cost,
                                    .score = sw->score,
                                    .spec = {.kind = MPQ_BUDGET_AVG_BITS, .avg_bits = avg_bits},
                                    .allow_infeasible = 1,
                                    .what = what};
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK)
        err = mpq_stage_start(ctx, MPQ_STAGE_BUDGET);
    if (err == MPQ_OK)
        err = mpq_session_budget(ctx, ses, &k, conf, NULL, range);
    if (err == MPQ_OK)
        err = mpq_stage_stop(ctx, MPQ_STAGE_BUDGET);
    for (int64_t l = 0; err == MPQ_OK && l < ses->nl && !range->infeasible; l++)
        conf[l] = conf[l] < 0 ? -1 : p->cand[conf[l]];
    mpq_free(cost);
    return err;
}

/* Collective (budget points), else local. The point's configuration of
 * every layer (budget points: the knapsack's choice) and its label fields. */
static mpq_err choose_point(mpq_ctx *ctx, mpq_sweep *sw, const sweep_plan_point *pp, int32_t *conf,
                            mpq_session_range *range, mpq_sweep_point *pt) {
    const sweep_plan *p = &sw->plan;
    char buf[MPQ_QSPEC_TEXT_MAX];
    if (pp->kind == SWEEP_BUDGET) {
        MPQ_CALL(solve_budget(ctx, sw, pp->budget, conf, range));
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
        return MPQ_OK;
    }
    const sweep_conf *c = &p->conf[pp->conf];
    for (int64_t l = 0; l < sw->ses->nl; l++)
        conf[l] = sw->ses->excl[l] ? -1 : pp->conf;
    snprintf(pt->kind, sizeof pt->kind, "%s", pp->kind == SWEEP_UNIFORM ? "uniform" : "compare");
    mpq_session_item_text(&c->spec, c->rate, buf, sizeof buf);
    snprintf(pt->spec, sizeof pt->spec, "%s", buf);
    snprintf(pt->method, sizeof pt->method, "%s", c->method->name);
    snprintf(pt->family, sizeof pt->family, "%s", c->spec.ops->name);
    snprintf(pt->label, sizeof pt->label, "%s %s", c->method->name, buf);
    return MPQ_OK;
}

/* Local. assemble: the measured codes of each layer's configuration,
 * dequantized, into the working model (stage "assemble"). */
static mpq_err assemble_point(mpq_ctx *ctx, mpq_sweep *sw, const int32_t *conf,
                              mpq_sweep_point *pt) {
    mpq_err err = MPQ_OK;
    const mpq_session *ses = sw->ses;
    const int64_t nconf = sw->plan.nconf;
    float *deq = NULL;
    int64_t maxw = 1;
    for (int64_t l = 0; l < ses->nl; l++)
        if (ses->info->layers[l].out * ses->info->layers[l].in > maxw)
            maxw = ses->info->layers[l].out * ses->info->layers[l].in;
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_ASSEMBLE));
    MPQ_ALLOC_TRY(deq, maxw);
    for (int64_t l = 0; l < ses->nl; l++) {
        if (conf[l] < 0)
            continue;
        const mpq_qlayer *q = sw->meas.q[l * nconf + conf[l]];
        MPQ_ENSURE(q, MPQ_ERR_INTERNAL, "sweep: layer %s has no measured codes",
                   ses->info->layers[l].name);
        mpq_qlayer_dequantize(q, deq);
        MPQ_TRY(mpq_family_set_weight(ctx, ses->fq, l, deq));
        pt->bits += sweep_bits(sw, l, conf[l]);
        pt->weights += ses->info->layers[l].out * ses->info->layers[l].in;
    }
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_ASSEMBLE));
    pt->bpw = pt->weights > 0 ? (double)pt->bits / (double)pt->weights : 0.0;
    pt->size_bytes = pt->bits / 8 + sw->other_bytes;
cleanup:
    mpq_free(deq);
    return err;
}

mpq_err mpq_sweep_run_point(mpq_ctx *ctx, mpq_sweep *sw, int64_t i, mpq_sweep_point *pt) {
    mpq_err err = MPQ_OK;
    const sweep_plan *p = &sw->plan;
    int32_t *conf = NULL; /* [nl] configuration of each layer, -1 excluded */
    MPQ_CHECK(sw->have, MPQ_ERR_INTERNAL, "sweep: no measurement (measure or load first)");
    MPQ_CHECK(i >= 0 && i < p->npts, MPQ_ERR_ARG, "sweep: point %lld out of range (0 .. %lld)",
              (long long)i, (long long)p->npts - 1);
    double t0 = mpq_now();
    const sweep_plan_point *pp = &p->pts[i];
    memset(pt, 0, sizeof *pt);
    pt->index = i;
    mpq_session_range range;
    memset(&range, 0, sizeof range);
    MPQ_TRY(mpq_agree(ctx, mpq_malloc(ctx, sw->ses->nl + 1, sizeof *conf, (void **)&conf)));
    /* the choice (budget: importance scores, knapsack) */
    MPQ_TRY(choose_point(ctx, sw, pp, conf, &range, pt));
    if (range.infeasible) {
        /* A scaling study often lists budgets below what the menu can
         * reach; one such point must not cost the others (nor block the
         * merge job of a Slurm array): it is reported, not evaluated. */
        double w = range.weights > 0 ? (double)range.weights : 1.0;
        pt->infeasible = 1;
        pt->weights = range.weights;
        pt->min_bpw = (double)range.min_bits / w;
        pt->max_bpw = (double)range.max_bits / w;
        snprintf(pt->metric, sizeof pt->metric, "%s", sw->metric->name);
        pt->reference = sw->ref.value;
        pt->seconds = mpq_now() - t0;
        MPQ_WARN("sweep point %lld: budget %g bits per weight is infeasible: quant.candidates "
                 "reach %.4f .. %.4f bits per weight (%lld .. %lld bits for %lld weights); "
                 "the point is skipped and marked infeasible in the report",
                 (long long)i, pp->budget, pt->min_bpw, pt->max_bpw, (long long)range.min_bits,
                 (long long)range.max_bits, (long long)range.weights);
        goto cleanup;
    }
    /* assemble, evaluate */
    MPQ_TRY(mpq_agree(ctx, assemble_point(ctx, sw, conf, pt)));
    mpq_session_eval e;
    MPQ_TRY(evaluate(ctx, sw, sw->ses->fq, sw->ses->ffp, &e));
    fill_eval(sw, &e, 0, pt);
    pt->reference = sw->ref.value;
    pt->rel_change = pt->reference != 0.0 ? (pt->value - pt->reference) / fabs(pt->reference) : 0.0;
    pt->seconds = mpq_now() - t0;
    MPQ_INFO("sweep point %lld (%s %s): %.4f bits per weight, %lld bytes, %s %.6g (%+.2f%%)",
             (long long)i, pt->kind, pt->label, pt->bpw, (long long)pt->size_bytes, pt->metric,
             pt->value, 100.0 * pt->rel_change);
cleanup:
    mpq_free(conf);
    return err;
}
