/* run.c: the pipeline of `mpquant run` (see mpq_run.h). run_stages shows
 * every stage in order: load, calibrate, (measure, importance, budget,) the
 * final pass block by block (calibrate, Hessian, round, propagate),
 * evaluate, assemble; the functions above it are its steps. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "mpq_ckpt.h"
#include "mpq_coll.h"
#include "mpq_config.h"
#include "mpq_log.h"
#include "mpq_stop.h"
#include "pass_internal.h"
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
    for (int64_t l = 0; x->layers && l < x->nlayers; l++) {
        mpq_qlayer_destroy(&x->layers[l].q);
        mpq_free(x->layers[l].bias);
    }
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
    mpq_partial_free(&s->part);
    mpq_session_destroy(&s->ses);
}

/* ---- set-up -------------------------------------------------------------------------- */

/* Local (every rank alike). What only a run refuses: its configuration
 * rules beyond the session's. */
static mpq_err check_config(mpq_ctx *ctx, const mpq_config *cfg, int propagate_q) {
    const int mixed =
        cfg->quant.candidates.n > 0 || cfg->budget.avg_bits > 0.0 || cfg->budget.bytes > 0;
    /* Saved statistics describe full-precision block inputs: they serve the
     * measuring pass of mixed precision, or a uniform run with FP
     * propagation; a uniform run with quantized propagation must measure H
     * on its own quantized activations. */
    MPQ_CHECK(!(!mixed && propagate_q && (cfg->hessian.load[0] || cfg->hessian.save[0])),
              MPQ_ERR_CONFIG,
              "%s: hessian.%s needs calibration.propagate = \"fp\" (or quant.candidates): with "
              "quantized propagation H depends on the earlier blocks' rounding",
              cfg->source, cfg->hessian.load[0] ? "load" : "save");
    MPQ_CHECK(
        !(cfg->quant.candidates.n > 0 && cfg->budget.avg_bits <= 0.0 && cfg->budget.bytes <= 0),
        MPQ_ERR_CONFIG,
        "%s: quant.candidates is set (mixed precision) but no budget: set "
        "budget.avg_bits or budget.bytes",
        cfg->source);
    MPQ_CHECK(!(cfg->budget.avg_bits > 0.0 && cfg->budget.bytes > 0), MPQ_ERR_CONFIG,
              "%s: budget.avg_bits and budget.bytes are both set; set only one", cfg->source);
    MPQ_CHECK(strcmp(cfg->budget.count, "coded") != 0 ||
                  strcmp(cfg->output.code_coding, "zstd") == 0,
              MPQ_ERR_CONFIG,
              "%s: budget.count = \"coded\" needs output.code_coding = \"zstd\" (the budget "
              "counts the sizes that coding stores; got \"%s\")",
              cfg->source, cfg->output.code_coding);
    const mpq_family_ops *fam = mpq_family_find(cfg->model.family); /* NULL for auto */
    if (cfg->output.path[0] && fam && fam->check_checkpoint)
        MPQ_CALL(fam->check_checkpoint(ctx, cfg));
    MPQ_CALL(mpq_run_exports_outputs(ctx, cfg, NULL, NULL));
    const int block = strcmp(cfg->round.loss, "layer") != 0;
    MPQ_CHECK(strcmp(cfg->round.loss, "network") != 0 || !(cfg->round.input_drop > 0.0),
              MPQ_ERR_CONFIG,
              "%s: round.loss = \"network\" takes no round.input_drop (got %g): its prediction "
              "term follows the quantized model's own inputs",
              cfg->source, cfg->round.input_drop);
    MPQ_CHECK(block || strcmp(cfg->round.learn_bias, "on") != 0, MPQ_ERR_CONFIG,
              "%s: round.learn_bias = \"on\" needs round.loss = \"block\" or \"network\" (the "
              "bias corrections are learned against the block's output)",
              cfg->source);
    MPQ_CHECK(block || strcmp(cfg->round.block_descent, "on") != 0, MPQ_ERR_CONFIG,
              "%s: round.block_descent = \"on\" needs round.loss = \"block\" or \"network\"",
              cfg->source);
    MPQ_CHECK(strcmp(cfg->round.block_descent, "on") != 0 || !(cfg->round.block_mom > 0.0),
              MPQ_ERR_CONFIG,
              "%s: round.block_descent = \"on\" judges each step by its own gradient: it takes "
              "no round.block_momentum (got %g)",
              cfg->source, cfg->round.block_mom);
    /* a sample is at least one row: fewer rows per step than samples is
     * always a window (the exact test needs the samples' rows, at the block) */
    MPQ_CHECK(strcmp(cfg->round.block_descent, "on") != 0 || cfg->round.block_rows == 0 ||
                  cfg->round.block_rows >= cfg->calibration.segments,
              MPQ_ERR_CONFIG,
              "%s: round.block_descent = \"on\" needs every step to see every calibration "
              "sample: round.block_rows = %lld is fewer rows than the %lld samples (set "
              "round.block_rows = 0)",
              cfg->source, (long long)cfg->round.block_rows, (long long)cfg->calibration.segments);
    MPQ_CHECK(!block || propagate_q, MPQ_ERR_CONFIG,
              "%s: round.loss = \"%s\" needs calibration.propagate = \"quantized\" (the "
              "block is refined on the inputs the quantized model gives it)",
              cfg->source, cfg->round.loss);
    if (cfg->eval.enabled && mpq_session_eval_generated(cfg))
        MPQ_CALL(mpq_session_eval_check(ctx, cfg, cfg->eval.docs));
    return MPQ_OK;
}

static mpq_err alloc_result(mpq_ctx *ctx, run_state *s) {
    const mpq_session *ses = s->ses;
    mpq_run_result *r = NULL;
    MPQ_ALLOC(r, 1);
    s->res = r;
    r->mixed = ses->mixed;
    r->method = ses->method->name;
    r->round_method = ses->method;
    r->round_opts = ses->ro;
    r->propagate = s->propagate_q ? "quantized" : "fp";
    r->nlayers = ses->nl;
    MPQ_ALLOC(r->layers, ses->nl > 0 ? ses->nl : 1);
    r->ncand = ses->ncand;
    MPQ_ALLOC(r->candidates, ses->ncand);
    for (int64_t k = 0; k < ses->ncand; k++)
        mpq_session_spec_text(ses, 0, (int32_t)k, r->candidates[k], MPQ_QSPEC_TEXT_MAX);
    for (int64_t l = 0; l < ses->nl; l++) {
        const mpq_layer_info *li = &ses->info->layers[l];
        mpq_run_layer *rl = &r->layers[l];
        snprintf(rl->name, sizeof rl->name, "%s", li->name);
        snprintf(rl->tensor, sizeof rl->tensor, "%s", li->tensor);
        rl->rows = li->out;
        rl->cols = li->in;
        rl->excluded = ses->excl[l];
        rl->pinned = ses->pin[l] >= 0;
    }
    MPQ_ALLOC(s->choice, ses->nl > 0 ? ses->nl : 1);
    for (int64_t l = 0; l < ses->nl; l++)
        s->choice[l] = -1;
    return MPQ_OK;
}

/* Mixed precision: the measurement table and the candidate that the
 * sensitivity probes use. */
static mpq_err alloc_measure(mpq_ctx *ctx, run_state *s) {
    MPQ_CALL(mpq_measure_table_alloc(ctx, &s->meas, s->ses->nl, s->ses->maxc));
    MPQ_ALLOC(s->score, s->ses->nl * s->ses->maxc);
    MPQ_CALL(mpq_session_probe_candidate(ctx, s->ses, &s->sens_cand));
    return MPQ_OK;
}

/* ---- block passes ------------------------------------------------------------------ */

/* 1 when a pass's codes go to disk from their owners alone: a partial
 * checkpoint, codes not kept, and no rank needs them in memory (measured
 * candidates; final codes of a language model under full-precision
 * propagation, which the evaluation reads back block by block). */
static int owned_codes(const run_state *s, int measure) {
    if (!s->part || s->opts.keep_codes)
        return 0;
    return measure || (!s->propagate_q && s->ses->info->task == MPQ_TASK_LM);
}

/* The block passes; measuring: every candidate with full-precision
 * propagation, else as configured. */
static mpq_pass_opts pass_opts(const run_state *s, int measure) {
    const mpq_config *cfg = s->ses->cfg;
    return (mpq_pass_opts){.advance = measure || !s->propagate_q,
                           .hload = cfg->hessian.load,
                           .hsave = cfg->hessian.save,
                           .warn_rows = 1,
                           .data_free = !measure && s->data_free,
                           .who = "run",
                           .label = measure ? "measure" : "round",
                           .ncol = s->ses->maxc,
                           .owned = owned_codes(s, measure),
                           /* the block loss refines every layer on every rank */
                           .weights_all = !measure && strcmp(cfg->round.loss, "layer") != 0,
                           .keep_fp = !measure && strcmp(cfg->round.loss, "layer") != 0 &&
                                      (cfg->round.input_drop > 0.0 || mpq_run_kl_model_target(cfg)),
                           .coded = measure && strcmp(cfg->budget.count, "coded") == 0};
}

/* Measuring: every candidate of the block's layers (a pinned layer needs
 * its pinned candidate only), rounded with quant.method. */
static void add_measure_jobs(mpq_ctx *ctx, const run_state *s, mpq_pass *p) {
    const mpq_session *ses = s->ses;
    for (int64_t i = 0; i < p->nlb; i++) {
        const int64_t l = p->lay[i];
        int32_t k0, k1;
        mpq_run_measure_range(ses, l, &k0, &k1);
        for (int32_t k = k0; k < k1; k++)
            mpq_pass_add_job(ctx, p, i, k, mpq_session_spec(ses, l, k), ses->method,
                             mpq_session_cand_rate(ses, k));
    }
}

/* The final rounding: the chosen candidate of the block's layers. */
static void add_chosen_jobs(mpq_ctx *ctx, const run_state *s, mpq_pass *p) {
    for (int64_t i = 0; i < p->nlb; i++) {
        const int64_t l = p->lay[i];
        const int32_t k = s->choice[l];
        mpq_pass_add_job(ctx, p, i, k, mpq_session_spec(s->ses, l, k), s->ses->method,
                         mpq_session_cand_rate(s->ses, k));
    }
}

/* Collective. The final rounding's results of the block: each layer's
 * result, and its weights in the working model (the next blocks' inputs
 * with quantized propagation). */
static mpq_err take_rounded(mpq_ctx *ctx, run_state *s, mpq_pass *p) {
    mpq_err err = MPQ_OK;
    for (int64_t j = 0; j < p->njobs && err == MPQ_OK; j++) {
        mpq_round_result *rr = &p->results[j];
        const int64_t l = p->jl[j];
        mpq_run_layer *rl = &s->res->layers[l];
        rl->loss = rr->loss;
        rl->rtn_loss = rr->rtn_loss;
        rl->iters = rr->iters;
        rl->seconds = rr->seconds;
        rl->bits = rr->bits;
        rl->code_entropy = rr->entropy;
        rl->entropy_set = 1;
        rl->q = rr->q; /* NULL but on the first owner with owned codes */
        rr->q = NULL;
        /* weights beyond the range of the scales' format: said, with the group */
        /* said by the job's first owner, which holds the weights (and with
         * owned codes the result) */
        if (rl->q && ctx->rank == mpq_hset_or_all(p->jobs[j].owners, ctx->size).first)
            mpq_quant_warn_clamped(ctx, rl->name, rl->q->params, p->jobs[j].W, 1);
        if (!p->o.owned) /* owned: nothing runs on these weights before the evaluation */
            err = mpq_run_install_layer(ctx, s, l, rl->q);
    }
    return mpq_pass_results_done(ctx, p, err);
}

/* ---- importance and budget ------------------------------------------------------------ */

/* Collective. The sensitivity probes (stage "importance"), when the
 * estimator reads them: every layer that is not excluded nor pinned (a
 * pinned layer measured only its pinned candidate), with candidate
 * s->sens_cand alone. */
static mpq_err probe_sensitivity(mpq_ctx *ctx, run_state *s) {
    const mpq_session *ses = s->ses;
    if (!ses->importance->needs_sensitivity)
        return MPQ_OK;
    mpq_importance_probe p = {.ffp = ses->ffp,
                              .set = ses->set,
                              .samples = ses->cfg->importance.samples,
                              .excl = ses->excl,
                              .pin = ses->pin,
                              .col = s->sens_cand,
                              .who = "importance",
                              .alone = s->res->candidates[s->sens_cand],
                              .log_layers = 1,
                              .codes = mpq_run_measured_codes,
                              .codes_ud = s};
    MPQ_CALL(mpq_stage_start(ctx, MPQ_STAGE_IMPORTANCE));
    MPQ_CALL(mpq_importance_sensitivity(ctx, &p, &s->meas));
    MPQ_CALL(mpq_stage_stop(ctx, MPQ_STAGE_IMPORTANCE));
    return MPQ_OK;
}

/* Collective. Rank 0 solves the knapsack over the candidates' scores;
 * every rank gets s->choice. budget.count = "codes" counts the packed code
 * stream alone (the nominal bit-width); otherwise the measured storage,
 * parameters included. */
/* Local. cost[nl][maxc]: what the budget counts of every candidate, from
 * spec and shape alone (budget.count: the code bits, or the exact storage
 * of codes and parameters, mpq_quant_storage_bits). */
static mpq_err budget_costs(mpq_ctx *ctx, const mpq_session *ses, const mpq_measure_table *t,
                            int64_t *cost) {
    const int codes_only = strcmp(ses->cfg->budget.count, "codes") == 0;
    const int coded = strcmp(ses->cfg->budget.count, "coded") == 0;
    for (int64_t l = 0; l < ses->nl; l++) {
        if (ses->excl[l])
            continue;
        const mpq_layer_info *li = &ses->info->layers[l];
        for (int32_t k = 0; k < ses->nc[l]; k++) {
            const mpq_qspec *q = mpq_session_spec(ses, l, k);
            int64_t *c = cost + l * ses->maxc + k;
            const int64_t packed = 8 * mpq_quant_packed_bytes(q, li->out * li->in);
            if (codes_only) {
                *c = packed;
            } else if (coded && t && t->coded[l * t->ncol + k] > 0) {
                *c = t->coded[l * t->ncol + k];
            } else {
                MPQ_CALL(mpq_quant_storage_bits(ctx, q, li->out, li->in, c));
                /* coded, not measured (the check before measuring, a
                 * candidate a pin rules out): the parameters alone bound it
                 * from below */
                if (coded)
                    *c -= packed;
            }
        }
    }
    return MPQ_OK;
}

/* Collective. The budget's knapsack over the candidates' costs (scores
 * NULL: only checked); check = 1 tests feasibility alone, before anything
 * is measured, else the choice goes into s->choice. */
static mpq_err budget_knapsack(mpq_ctx *ctx, run_state *s, int check) {
    const mpq_config *cfg = s->ses->cfg;
    const mpq_session *ses = s->ses;
    int64_t *cost = NULL;
    mpq_err err = mpq_malloc(ctx, ses->nl * ses->maxc + 1, sizeof *cost, (void **)&cost);
    if (err == MPQ_OK)
        err = budget_costs(ctx, ses, check ? NULL : &s->meas, cost);
    mpq_session_knapsack k = {
        .ncol = ses->maxc,
        .nc = ses->nc,
        .cost = cost,
        .score = check ? NULL : s->score,
        .pin = ses->pin,
        .spec = {.kind = MPQ_BUDGET_AVG_BITS, .avg_bits = cfg->budget.avg_bits},
        .check_only = check,
        .what = cfg->budget.bytes > 0 ? "budget.bytes" : "budget.avg_bits"};
    if (cfg->budget.bytes > 0) {
        k.spec.kind = MPQ_BUDGET_BYTES;
        k.spec.amount = cfg->budget.bytes;
    }
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK)
        err = mpq_session_budget(ctx, ses, &k, s->choice, &s->res->budget, NULL);
    mpq_free(cost);
    return err;
}

static mpq_err solve_budget(mpq_ctx *ctx, run_state *s) {
    const mpq_config *cfg = s->ses->cfg;
    const int codes_only = strcmp(cfg->budget.count, "codes") == 0;
    const int coded = strcmp(cfg->budget.count, "coded") == 0;
    MPQ_CALL(budget_knapsack(ctx, s, 0));
    mpq_run_result *r = s->res;
    r->has_budget = 1;
    r->budget_codes = codes_only;
    r->budget_coded = coded;
    const mpq_budget_result *br = &r->budget;
    const char *what = codes_only ? "code " : coded ? "coded " : "";
    MPQ_INFO("budget: objective %.6g, lower bound %.6g (gap %.3g, relative %.3g), %lld %sbits of "
             "%lld, %.4f %sbits per weight",
             br->objective, br->lower_bound, br->gap, br->rel_gap, (long long)br->bits_used, what,
             (long long)br->budget_bits, br->avg_bits, what);
    return MPQ_OK;
}

/* Local. The choice into the result: each layer's spec, and (mixed) its
 * score, sensitivity and energy. */
static void describe_choice(run_state *s) {
    const mpq_session *ses = s->ses;
    for (int64_t l = 0; l < ses->nl; l++) {
        if (ses->excl[l])
            continue;
        mpq_run_layer *rl = &s->res->layers[l];
        const mpq_qspec *sp = mpq_session_spec(ses, l, s->choice[l]);
        mpq_session_spec_text(ses, l, s->choice[l], rl->spec, sizeof rl->spec);
        rl->bits_per_code = sp->bits;
        rl->group = sp->group;
        if (ses->mixed) {
            rl->score = s->score[l * ses->maxc + s->choice[l]];
            rl->sensitivity = s->meas.sens[l];
            rl->energy = s->meas.energy[l];
        }
    }
}

/* Local. The totals of the final codes, logged (the per-layer assignment
 * is printed once, by the command: mpquant run's result table). */
static void summarize(mpq_ctx *ctx, run_state *s) {
    mpq_run_result *r = s->res;
    for (int64_t l = 0; l < r->nlayers; l++) {
        mpq_run_layer *rl = &r->layers[l];
        if (rl->excluded)
            continue;
        if (!r->mixed)
            rl->score = rl->loss;
        r->bits += rl->bits;
        r->weights += rl->rows * rl->cols;
    }
    r->bpw = r->weights > 0 ? (double)r->bits / (double)r->weights : 0.0;
    MPQ_INFO("quantized %lld weights with %lld bits: %.4f bits per weight", (long long)r->weights,
             (long long)r->bits, r->bpw);
}

/* ---- assemble ---------------------------------------------------------------------- */

static char *json_text(cJSON *o) {
    char *t = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return t;
}

/* Collective. Tensor i of the model: a quantized layer's chosen codes
 * (from memory, or read from its block file by the writing rank), or the
 * tensor as is. */
static mpq_err write_entry(mpq_ctx *ctx, run_state *s, mpq_ckpt_writer *w, int64_t i, mpq_ckpt **ck,
                           int64_t *ck_block) {
    const mpq_session *ses = s->ses;
    if (s->opts.write_hook)
        s->opts.write_hook(ctx, i, s->opts.write_ud);
    const mpq_tensor *t = mpq_model_tensor_at(ses->m, i);
    int64_t l = 0;
    while (l < ses->nl && (ses->excl[l] || strcmp(ses->info->layers[l].tensor, t->name) != 0))
        l++;
    if (l == ses->nl) {
        /* The family may store other values (a CNN's BN-folded biases);
         * every rank holds the family, all compute the same. */
        float *vals = NULL;
        char note[MPQ_CKPT_NOTE_MAX];
        mpq_err err = mpq_agree(ctx, mpq_family_stored_tensor(ctx, ses->ffp ? ses->ffp : ses->fq, t,
                                                              &vals, note, sizeof note));
        const int64_t lb = mpq_run_bias_layer(s, t->name); /* a learned bias correction */
        if (err == MPQ_OK && lb >= 0) {
            err = mpq_agree(ctx, mpq_run_bias_values(ctx, s, t, lb, &vals));
            snprintf(note + strlen(note), sizeof note - strlen(note), "%slearned correction added",
                     note[0] ? "; " : "");
        }
        mpq_tensor st = *t;
        if (vals) {
            st.dtype = MPQ_DTYPE_F32;
            st.data = vals;
            st.nbytes = (size_t)t->numel * sizeof(float);
        }
        if (err == MPQ_OK)
            err = mpq_ckpt_write_tensor_noted(ctx, w, &st, (int)(i % ctx->size), note);
        mpq_free(vals);
        MPQ_CALL(err);
        return MPQ_OK;
    }
    const mpq_run_layer *rl = &s->res->layers[l];
    mpq_ckpt_layer_desc d = {.tensor = t->name, .method = ses->method->name, .loss = rl->loss};
    if (t->numel == rl->rows * rl->cols) {
        d.ndim = t->ndim;
        memcpy(d.shape, t->shape, sizeof d.shape);
    }
    const int owner = (int)(l % ctx->size);
    mpq_qlayer *read = NULL;
    mpq_err err = MPQ_OK;
    if (!rl->q && ctx->rank == owner)
        err = mpq_run_layer_codes(ctx, s, l, ck, ck_block, &read);
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK)
        err = mpq_ckpt_write_layer(ctx, w, &d, rl->q ? rl->q : read, owner);
    /* The size the file really holds (entropy-coded codes when asked). */
    s->res->layers[l].coded_bits = mpq_ckpt_writer_last_bits(w);
    mpq_qlayer_destroy(&read);
    MPQ_CALL(err);
    return MPQ_OK;
}

/* Collective. Creates the checkpoint and writes every tensor of the model:
 * the chosen codes for the quantized layers, the rest as is. */
static mpq_err write_tensors(mpq_ctx *ctx, run_state *s, mpq_ckpt_writer **w) {
    const mpq_session *ses = s->ses;
    const mpq_config *cfg = ses->cfg;
    const char *inputs[MPQ_SESSION_MAX_FILES];
    const int64_t ni =
        mpq_session_read_inputs(ses, s->opts.eval_fp || s->opts.eval_quantized, ses->mixed, inputs);
    MPQ_CALL(mpq_ckpt_writer_create_hashed(ctx, cfg->output.path, cfg->output.overwrite, inputs, ni,
                                           s->part ? s->part->hashes : NULL, w));
    MPQ_CALL(mpq_ckpt_writer_set_coding(ctx, *w, cfg->output.code_coding));
    const mpq_arch arch = mpq_run_bias_arch(s);
    MPQ_CALL(mpq_ckpt_write_arch(ctx, *w, &arch));
    mpq_ckpt *ck = NULL; /* the block file read last */
    int64_t ck_block = -1;
    mpq_err err = MPQ_OK;
    for (int64_t i = 0; i < mpq_model_ntensors(ses->m) && err == MPQ_OK; i++)
        err = write_entry(ctx, s, *w, i, &ck, &ck_block);
    mpq_ckpt_close(&ck);
    MPQ_CALL(err);
    MPQ_CALL(mpq_run_bias_write_added(ctx, s, *w));
    mpq_run_result *r = s->res;
    r->coded = strcmp(cfg->output.code_coding, "zstd") == 0;
    r->coded_bits = 0;
    for (int64_t l = 0; l < r->nlayers; l++)
        r->coded_bits += r->layers[l].excluded ? 0 : r->layers[l].coded_bits;
    r->coded_bpw = r->weights > 0 ? (double)r->coded_bits / (double)r->weights : 0.0;
    if (r->coded)
        MPQ_INFO("checkpoint codes entropy-coded: %lld bits stored, %.4f bits per weight",
                 (long long)r->coded_bits, r->coded_bpw);
    return MPQ_OK;
}

/* Collective. The provenance (configuration, overrides, evaluation,
 * assignment, stage times), then the commit. */
static mpq_err write_provenance(mpq_ctx *ctx, run_state *s, mpq_ckpt_writer **w) {
    mpq_err err = MPQ_OK;
    const mpq_config *cfg = s->ses->cfg;
    char *eval = NULL, *assign = NULL, *times = NULL, *effective = NULL, *over = NULL;
    cJSON *ev = cJSON_CreateObject();
    if (ev) {
        cJSON_AddItemToObject(ev, "fp", mpq_run_eval_json(&s->res->fp));
        cJSON_AddItemToObject(ev, "quantized", mpq_run_eval_json(&s->res->quant));
    }
    eval = json_text(ev);
    assign = json_text(mpq_run_assignment_json(s->res));
    times = json_text(mpq_stage_times_json(ctx));
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
    MPQ_TRY(mpq_ckpt_write_provenance(ctx, *w, &p));
    MPQ_TRY(mpq_ckpt_commit(ctx, w));
    MPQ_TRY(mpq_strdup(ctx, cfg->output.path, &s->res->checkpoint));
    MPQ_INFO("checkpoint written: %s", cfg->output.path);
cleanup:
    cJSON_free(eval);
    cJSON_free(assign);
    cJSON_free(times);
    cJSON_free(over);
    mpq_free(effective);
    return err;
}

/* Collective. The checkpoint (stage "assemble"). Its stage_times count the
 * assemble stage up to the provenance (the timer is stopped there, then
 * runs again for the provenance and the commit). */
static mpq_err assemble(mpq_ctx *ctx, run_state *s) {
    mpq_err err = MPQ_OK;
    mpq_ckpt_writer *w = NULL;
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_ASSEMBLE));
    MPQ_TRY(write_tensors(ctx, s, &w));
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_ASSEMBLE));
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_ASSEMBLE));
    MPQ_TRY(write_provenance(ctx, s, &w));
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_ASSEMBLE));
cleanup:
    mpq_ckpt_abort(ctx, &w);
    return err;
}

/* ---- the pipeline ------------------------------------------------------------------- */

/* Collective. The final pass: every block rounded with its chosen
 * candidates (and refined with the block loss), saved, propagated. */
static mpq_err final_pass(mpq_ctx *ctx, run_state *s, const mpq_config *cfg) {
    mpq_err err = MPQ_OK;
    mpq_pass *p = NULL;
    const mpq_session *ses = s->ses;
    const int64_t nblocks = ses->info->nblocks;
    MPQ_INFO("round: %s, %lld layers, propagation %s", ses->method->name, (long long)ses->nl,
             s->res->propagate);
    const mpq_pass_opts po = pass_opts(s, 0);
    mpq_run_resume_log(ctx, s, MPQ_PHASE_ROUND);
    MPQ_TRY(mpq_pass_create(ctx, ses, &po, &p));
    for (int64_t b = 0; b < nblocks; b++) {
        if (b < mpq_run_done(s, MPQ_PHASE_ROUND)) {
            /* rounded by an earlier run: read back and installed */
            MPQ_TRY(mpq_run_skip_block(ctx, s, p, b, MPQ_PHASE_ROUND));
            MPQ_TRY(mpq_pass_next(ctx, p, b));
            continue;
        }
        MPQ_TRY(mpq_pass_hessian(ctx, p, b));
        mpq_partial_test_kill(ctx, MPQ_PHASE_ROUND, b, "compute");
        MPQ_TRY(mpq_pass_layers(ctx, p, b));
        add_chosen_jobs(ctx, s, p);
        MPQ_TRY(mpq_pass_round(ctx, p, MPQ_STAGE_ROUND));
        MPQ_TRY(take_rounded(ctx, s, p));
        if (strcmp(cfg->round.loss, "layer") != 0) { /* block or network; stage "round" */
            MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_ROUND));
            MPQ_TRY(mpq_run_block_refine(ctx, s, p, b));
            MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_ROUND));
        }
        /* the block's codes to disk (with output.path), then out of memory */
        MPQ_TRY(mpq_run_save_block(ctx, s, p, b, MPQ_PHASE_ROUND));
        MPQ_TRY(mpq_pass_propagate(ctx, p, b));
        MPQ_TRY(mpq_agree(ctx, mpq_run_release_block(ctx, s, b)));
        MPQ_TRY(mpq_pass_next(ctx, p, b));
        MPQ_TRY(mpq_run_block_done(ctx, s, b, MPQ_PHASE_ROUND));
    }
    MPQ_TRY(mpq_pass_finish(ctx, p));
cleanup:
    mpq_pass_destroy(&p);
    return err;
}

/* Collective. The whole run, every stage in order. */
static mpq_err run_stages(mpq_ctx *ctx, run_state *s, const mpq_config *cfg) {
    mpq_err err = MPQ_OK;
    mpq_pass *p = NULL;
    mpq_session_file *outputs = NULL;
    int64_t nout = 3;
    /* Local steps, agreed before the first collective: an allocation that
     * fails on one rank must stop every rank. */
    MPQ_TRY(mpq_agree(
        ctx, mpq_malloc(ctx, 3 + cfg->output.exports.n, sizeof *outputs, (void **)&outputs)));
    outputs[0] = (mpq_session_file){"output.path", cfg->output.path};
    outputs[1] = (mpq_session_file){"hessian.save", cfg->hessian.save};
    outputs[2] = (mpq_session_file){"measure.save", cfg->measure.save};

    /* load: model, families, tokenizer, candidates, layer selection;
     * calibrate: the calibration samples. */
    MPQ_TRY(mpq_agree(ctx, check_config(ctx, cfg, s->propagate_q)));
    MPQ_TRY(mpq_agree(ctx, mpq_run_exports_outputs(ctx, cfg, outputs, &nout)));
    const mpq_session_opts so = {.outputs = outputs,
                                 .noutputs = nout,
                                 .checkpoint = 1,
                                 .uniform_spec = 1,
                                 .evaluates = cfg->eval.enabled};
    MPQ_TRY(mpq_session_create(ctx, cfg, &so, &s->ses));
    mpq_session *ses = s->ses;
    const int64_t nblocks = ses->info->nblocks;
    MPQ_TRY(mpq_agree(ctx, alloc_result(ctx, s)));
    /* An infeasible budget is known from specs and shapes: refused now,
     * not after calibrating and measuring. */
    if (ses->mixed)
        MPQ_TRY(budget_knapsack(ctx, s, 1));
    /* RTN reads no calibration data unless something reads it: its losses
     * (round.rtn_loss), a fit weighted by diag H, hessian.load / save. */
    s->data_free = !ses->mixed && strcmp(ses->method->name, "rtn") == 0 && !cfg->round.rtn_loss &&
                   !cfg->hessian.load[0] && !cfg->hessian.save[0] &&
                   strcmp(cfg->round.loss, "layer") == 0;
    for (int64_t l = 0; l < ses->nl && s->data_free; l++)
        if (!ses->excl[l])
            s->data_free = !mpq_qspec_reads_importance(
                mpq_session_spec(ses, l, ses->pin[l] >= 0 ? ses->pin[l] : 0));
    if (s->data_free)
        MPQ_INFO("calibration: none (rtn with minmax fits and no losses; round.rtn_loss = true "
                 "measures them)");
    else
        MPQ_TRY(mpq_session_calibrate(ctx, ses));
    s->res->rss_min_mib = mpq_run_memory_minimum(ses, ctx->size);
    /* with output.path: the partial checkpoint (resume) */
    MPQ_TRY(mpq_run_resume_open(ctx, s));

    if (ses->mixed) {
        MPQ_TRY(mpq_agree(ctx, alloc_measure(ctx, s)));
        if (cfg->measure.load[0]) {
            MPQ_TRY(mpq_run_measure_load(ctx, s, cfg->measure.load));
        } else {
            /* measure: every candidate of every layer, one pass with
             * full-precision propagation (the inputs do not depend on any
             * choice). Per block: calibrate and Hessian (the forward also
             * propagates), round, keep. */
            MPQ_INFO("measure: %lld candidates x %lld layers with %s", (long long)ses->ncand,
                     (long long)ses->nl, ses->method->name);
            const mpq_pass_opts po = pass_opts(s, 1);
            mpq_run_resume_log(ctx, s, MPQ_PHASE_MEASURE);
            MPQ_TRY(mpq_pass_create(ctx, ses, &po, &p));
            for (int64_t b = 0; b < nblocks; b++) {
                if (b < mpq_run_done(s, MPQ_PHASE_MEASURE)) {
                    /* measured by an earlier run: read back */
                    MPQ_TRY(mpq_run_skip_block(ctx, s, p, b, MPQ_PHASE_MEASURE));
                    MPQ_TRY(mpq_pass_next(ctx, p, b));
                    continue;
                }
                MPQ_TRY(mpq_pass_hessian(ctx, p, b));
                mpq_partial_test_kill(ctx, MPQ_PHASE_MEASURE, b, "compute");
                MPQ_TRY(mpq_pass_layers(ctx, p, b));
                add_measure_jobs(ctx, s, p);
                MPQ_TRY(mpq_pass_round(ctx, p, MPQ_STAGE_MEASURE));
                MPQ_TRY(mpq_pass_keep(ctx, p, &s->meas));
                MPQ_TRY(mpq_run_save_block(ctx, s, p, b, MPQ_PHASE_MEASURE));
                MPQ_TRY(mpq_pass_next(ctx, p, b));
                MPQ_TRY(mpq_run_block_done(ctx, s, b, MPQ_PHASE_MEASURE));
            }
            MPQ_TRY(mpq_pass_finish(ctx, p));
            mpq_pass_destroy(&p);
            s->measured = 1;
            /* importance: the sensitivity probes, when the estimator reads them */
            MPQ_TRY(probe_sensitivity(ctx, s));
            if (cfg->measure.save[0])
                MPQ_TRY(mpq_run_measure_save(ctx, s, cfg->measure.save));
        }
        /* importance: the score of every (layer, candidate) */
        MPQ_TRY(mpq_importance_scores(ctx, ses->importance, &s->meas, ses->info, ses->maxc, ses->nc,
                                      NULL, ses->excl, s->score));
        /* budget: one candidate per layer */
        MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_BUDGET));
        MPQ_TRY(solve_budget(ctx, s));
        MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_BUDGET));
    } else {
        /* uniform: quant.spec, or the pinned spec */
        for (int64_t l = 0; l < ses->nl; l++)
            s->choice[l] = ses->excl[l] ? -1 : (ses->pin[l] >= 0 ? ses->pin[l] : 0);
    }
    describe_choice(s);

    /* the final pass: the chosen candidate of every layer */
    if (ses->mixed && s->measured && !s->propagate_q) {
        /* full-precision propagation: the measured codes are the final ones */
        MPQ_TRY(mpq_run_take_measured(ctx, s));
    } else {
        MPQ_TRY(final_pass(ctx, s, cfg));
    }
    summarize(ctx, s);

    /* evaluate: the quantized model against full precision, whose own
     * figures come from the same forward passes */
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_EVAL));
    mpq_run_stream_blocks(s, 1); /* the quantized blocks come back one at a time */
    if (s->opts.eval_quantized)
        MPQ_TRY(mpq_session_evaluate(ctx, ses, ses->fq, ses->ffp, 1, &s->res->quant));
    if (s->opts.eval_fp && s->opts.eval_quantized)
        mpq_session_eval_reference(&s->res->quant, &s->res->fp);
    else if (s->opts.eval_fp)
        MPQ_TRY(mpq_session_evaluate(ctx, ses, ses->ffp, NULL, 1, &s->res->fp));
    mpq_run_stream_blocks(s, 0);
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_EVAL));

    /* assemble: the checkpoint */
    if (cfg->output.path[0]) {
        MPQ_TRY(assemble(ctx, s));
        mpq_partial_remove(ctx, s->part);
        MPQ_TRY(mpq_run_write_exports(ctx, cfg));
    }
cleanup:
    mpq_free(outputs);
    mpq_pass_destroy(&p);
    return err;
}

mpq_err mpq_run_check(mpq_ctx *ctx, const mpq_config *cfg) {
    MPQ_CALL(check_config(ctx, cfg, strcmp(cfg->calibration.propagate, "fp") != 0));
    MPQ_CALL(mpq_session_check_candidates(ctx, cfg));
    return MPQ_OK;
}

mpq_err mpq_run(mpq_ctx *ctx, const mpq_config *cfg, const mpq_run_opts *opts,
                mpq_run_result **out) {
    *out = NULL;
    run_state s;
    memset(&s, 0, sizeof s);
    if (opts)
        s.opts = *opts;
    else
        mpq_run_opts_default(&s.opts);
    if (!cfg->eval.enabled)
        s.opts.eval_fp = s.opts.eval_quantized = 0;
    s.propagate_q = strcmp(cfg->calibration.propagate, "fp") != 0;
    mpq_err err = run_stages(ctx, &s, cfg);
    mpq_stop_disarm();
    if (err == MPQ_OK) {
        *out = s.res;
        s.res = NULL;
    }
    mpq_run_result_destroy(&s.res);
    state_free(&s);
    return err;
}
