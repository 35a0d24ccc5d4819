/* pass.c: the steps of a block-sequential pass (pass_internal.h): the
 * Hessian statistics of each block, its rounding jobs, the rounding, the
 * measured results, propagation and hessian.load / hessian.save. */
#include <string.h>

#include "mpq_ckpt.h"
#include "mpq_coll.h"
#include "mpq_config.h"
#include "mpq_robust.h"
#include "pass_internal.h"

void mpq_pass_destroy(mpq_pass **pp) {
    if (!pp || !*pp)
        return;
    mpq_pass *p = *pp;
    mpq_hstats_free(p->nkept, &p->kept);
    mpq_free(p->bst);
    mpq_free(p->bgr);
    mpq_free(p->bown);
    if (p->results)
        mpq_round_results_free(p->njobs, p->results);
    mpq_free(p->results);
    mpq_free(p->jobs);
    mpq_free(p->jk);
    mpq_free(p->jl);
    for (int64_t i = 0; p->W && i < p->nlb; i++)
        mpq_free(p->W[i]);
    mpq_free(p->W);
    mpq_free(p->H);
    mpq_free(p->own);
    mpq_free(p->lay);
    mpq_hstats_free(p->nstats, &p->stats);
    mpq_free(p->groups);
    mpq_calib_destroy(&p->calib);
    mpq_calib_destroy(&p->calib_fp);
    mpq_free(p->ones);
    mpq_free(p);
    *pp = NULL;
}

/* Local. The pass and its per-block arrays. */
static mpq_err alloc_pass(mpq_ctx *ctx, const mpq_session *ses, const mpq_pass_opts *o,
                          mpq_pass **out) {
    const int64_t nl = ses->info->nlayers;
    const int64_t cap = nl * o->ncol + 1;
    mpq_pass *p = NULL;
    MPQ_ALLOC(p, 1);
    *out = p;
    MPQ_ALLOC(p->lay, nl + 1);
    MPQ_ALLOC(p->W, nl + 1);
    MPQ_ALLOC(p->H, nl + 1);
    MPQ_ALLOC(p->own, nl + 1);
    MPQ_ALLOC(p->jobs, cap);
    MPQ_ALLOC(p->results, cap);
    MPQ_ALLOC(p->jk, cap);
    MPQ_ALLOC(p->jl, cap);
    MPQ_ALLOC(p->bst, nl + 1);
    MPQ_ALLOC(p->bgr, nl + 1);
    MPQ_ALLOC(p->bown, nl + 1);
    if (o->data_free) {
        int64_t w = 1;
        for (int64_t l = 0; l < nl; l++)
            w = ses->info->layers[l].in > w ? ses->info->layers[l].in : w;
        MPQ_ALLOC(p->ones, w);
        for (int64_t c = 0; c < w; c++)
            p->ones[c] = 1.0;
    }
    return MPQ_OK;
}

mpq_err mpq_pass_create(mpq_ctx *ctx, const mpq_session *ses, const mpq_pass_opts *o,
                        mpq_pass **out) {
    mpq_err err = MPQ_OK;
    mpq_pass *p = NULL;
    /* Local allocations first, agreed before the first collective. */
    MPQ_TRY(mpq_agree(ctx, alloc_pass(ctx, ses, o, &p)));
    p->ses = ses;
    p->o = *o;
    /* Saved statistics describe full-precision block inputs: they serve,
     * and are saved from, passes with full-precision propagation only. */
    p->load = o->advance && o->hload && o->hload[0];
    p->save = o->advance && !p->load && o->hsave && o->hsave[0];
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_HESSIAN));
    /* every rank reports the accumulation's own time, 0 where none */
    MPQ_TRY(mpq_stage_add(ctx, MPQ_STAGE_HESSIAN_ACCUMULATE, 0.0));
    if (o->data_free)
        ; /* nothing to load or embed */
    else if (p->load)
        MPQ_TRY(mpq_hstats_load(ctx, o->hload, MPQ_HSTAT_ALL, &p->nkept, &p->kept));
    else
        MPQ_TRY(mpq_agree(/* local: agreed before the first block's collectives */
                          ctx, mpq_calib_create(ctx, ses->fq, ses->set,
                                                ses->cfg->hessian.chunk_samples, &p->calib)));
    if (!o->data_free && !p->load && o->keep_fp)
        MPQ_TRY(mpq_agree(ctx, mpq_calib_create(ctx, ses->ffp, ses->set,
                                                ses->cfg->hessian.chunk_samples, &p->calib_fp)));
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_HESSIAN));
    mpq_progress_begin(ctx, &p->prog, o->label, "blocks", ses->info->nblocks);
    *out = p;
    return MPQ_OK;
cleanup:
    mpq_pass_destroy(&p);
    return err;
}

/* The saved statistics of block b's input groups. The statistic of each
 * group is named after the group's first layer (mpq_calibrate.h). */
static mpq_err loaded_stats(mpq_ctx *ctx, mpq_pass *p, int64_t b) {
    const mpq_family_info *fi = p->ses->info;
    for (int64_t l = 0; l < fi->nlayers; l++) {
        const mpq_layer_info *li = &fi->layers[l];
        if (li->block != b || li->group != l)
            continue;
        int64_t k = 0;
        while (k < p->nkept && strcmp(p->kept[k]->name, li->name) != 0)
            k++;
        MPQ_CHECK(k < p->nkept && p->kept[k]->d == li->in, MPQ_ERR_FORMAT,
                  "%s: hessian.load: '%s' has no statistics of width %lld for the input of "
                  "layer %s (saved for another model?)",
                  p->ses->cfg->source, p->o.hload, (long long)li->in, li->name);
        p->bst[p->nb] = p->kept[k];
        p->bgr[p->nb++] = l;
    }
    return MPQ_OK;
}

/* The owners of block b's input groups (p->bown, in the order of the
 * statistics): each group's cost is that of rounding its layers with
 * GPTQ (rows x cols x (cols + MPQ_ROUND_GPTQ_ELEM)) plus its factor
 * (MPQ_ROUND_FACTOR_COST), which is also the setup every owner pays: a
 * factorisation shared over the owners' grid is collective, so each of them
 * spends its whole wall time in it (on a few ranks about that of one rank's
 * LAPACK). An end rank whose share of a group is below that leaves the
 * group, which may then be factored by one owner alone. */
static mpq_err plan_owners(mpq_ctx *ctx, mpq_pass *p, int64_t b) {
    const mpq_family_info *fi = p->ses->info;
    double *cost = NULL;
    MPQ_ALLOC(cost, 2 * (fi->nlayers + 1));
    double *setup = cost + fi->nlayers + 1;
    int64_t n = 0;
    for (int64_t g = 0; g < fi->nlayers; g++) {
        const mpq_layer_info *gi = &fi->layers[g];
        if (gi->block != b || gi->group != g)
            continue;
        double in = (double)gi->in;
        cost[n] = MPQ_ROUND_FACTOR_COST(gi->in);
        setup[n] = cost[n];
        for (int64_t l = g; l < fi->nlayers; l++)
            if (fi->layers[l].group == g && !p->ses->excl[l])
                cost[n] += (double)fi->layers[l].out * in * (in + MPQ_ROUND_GPTQ_ELEM);
        n++;
    }
    const int nranks = ctx->comm == MPI_COMM_NULL ? 1 : ctx->size;
    mpq_round_owners(n, cost, setup, nranks, p->bown);
    mpq_free(cost);
    return MPQ_OK;
}

mpq_err mpq_pass_hessian(mpq_ctx *ctx, mpq_pass *p, int64_t b) {
    const mpq_config *cfg = p->ses->cfg;
    p->nb = 0;
    MPQ_CALL(mpq_stage_start(ctx, MPQ_STAGE_HESSIAN));
    MPQ_CALL(mpq_agree(ctx, plan_owners(ctx, p, b)));
    if (p->o.data_free) {
        /* no statistics: the block's input groups only, for their owners */
        const mpq_family_info *fi = p->ses->info;
        for (int64_t g = 0; g < fi->nlayers; g++)
            if (fi->layers[g].block == b && fi->layers[g].group == g) {
                p->bst[p->nb] = NULL;
                p->bgr[p->nb++] = g;
            }
    } else if (p->load) {
        MPQ_CALL(loaded_stats(ctx, p, b));
    } else {
        MPQ_CALL(mpq_calib_block_owned(ctx, p->calib, b, (int)cfg->hessian.bound_log2, p->bown, 1,
                                       p->o.advance, &p->nstats, &p->stats, &p->groups));
        for (int64_t k = 0; k < p->nstats; k++) {
            p->bst[k] = p->stats[k];
            p->bgr[k] = p->groups[k];
            /* Fewer calibration rows than input channels: H is rank
             * deficient (a warning naming the layer; damping copes). */
            if (p->o.warn_rows)
                mpq_check_calibration_rows(ctx, p->stats[k]->name, p->stats[k]->count,
                                           p->stats[k]->d);
        }
        p->nb = p->nstats;
    }
    MPQ_CALL(mpq_stage_stop(ctx, MPQ_STAGE_HESSIAN));
    return MPQ_OK;
}

/* Index of layer li's statistic among the block's (one per input group), or -1. */
static int64_t stat_of(const mpq_pass *p, const mpq_layer_info *li) {
    for (int64_t k = 0; k < p->nb; k++)
        if (p->bgr[k] == li->group)
            return k;
    return -1;
}

/* Local. p->W[i]: layer p->lay[i]'s weights from the working model. */
static mpq_err fetch_weights(mpq_ctx *ctx, mpq_pass *p, int64_t i) {
    const mpq_layer_info *li = &p->ses->info->layers[p->lay[i]];
    MPQ_CALL(mpq_malloc(ctx, li->out * li->in, sizeof *p->W[i], (void **)&p->W[i]));
    return mpq_family_get_weight(ctx, p->ses->fq, p->lay[i], p->W[i]);
}

mpq_err mpq_pass_layers(mpq_ctx *ctx, mpq_pass *p, int64_t b) {
    mpq_err err = MPQ_OK;
    const mpq_family_info *fi = p->ses->info;
    p->nlb = 0;
    p->njobs = 0;
    for (int64_t l = 0; l < fi->nlayers && err == MPQ_OK; l++) {
        const mpq_layer_info *li = &fi->layers[l];
        if (li->block != b || p->ses->excl[l])
            continue;
        const int64_t k = stat_of(p, li);
        const mpq_hstat *st = k >= 0 ? p->bst[k] : NULL;
        const mpq_hset *own = k >= 0 ? &p->bown[k] : NULL;
        const int owner = own && mpq_hset_has(own, ctx->rank);
        if (!own ||
            (!p->o.data_free && (!st || !st->sumsq || (owner && !st->H) || st->d != li->in))) {
            err = MPQ_ERROR(MPQ_ERR_INTERNAL, "%s: no statistic of width %lld for layer %s",
                            p->o.who, (long long)li->in, li->name);
            break;
        }
        /* the weights on the ranks that round the layer (its input's
         * owners), or on every rank with o.weights_all */
        const mpq_hset rounders = mpq_hset_or_all(*own, ctx->size);
        p->W[p->nlb] = NULL;
        p->H[p->nlb] = st;
        p->own[p->nlb] = *own;
        p->lay[p->nlb++] = l;
        if (p->o.weights_all || mpq_hset_has(&rounders, ctx->rank))
            err = fetch_weights(ctx, p, p->nlb - 1);
    }
    return mpq_agree(ctx, err);
}

void mpq_pass_add_job(mpq_ctx *ctx, mpq_pass *p, int64_t i, int32_t k, const mpq_qspec *spec,
                      const mpq_round_method *method, double rate) {
    const mpq_layer_info *li = &p->ses->info->layers[p->lay[i]];
    mpq_round_job *jb = &p->jobs[p->njobs];
    /* a spec with whole-layer values is fitted on every rank that holds a
     * result (mpq_round_block_owned): every rank, or with o.owned the
     * owners, which have the weights already */
    if (!p->W[i] && !p->o.owned && p->add_err == MPQ_OK && mpq_round_fits_whole(spec))
        p->add_err = fetch_weights(ctx, p, i);
    jb->name = li->name;
    jb->rows = li->out;
    jb->cols = li->in;
    jb->W = p->W[i];
    jb->H = p->H[i] ? p->H[i]->H : NULL;
    jb->diag = p->H[i] ? p->H[i]->sumsq : p->ones;
    jb->owners = p->own[i];
    jb->spec = *spec;
    jb->method = method;
    jb->has_rate = rate >= 0.0;
    jb->rate_lambda = jb->has_rate ? rate : 0.0;
    p->jl[p->njobs] = p->lay[i];
    p->jk[p->njobs++] = k;
}

mpq_err mpq_pass_round(mpq_ctx *ctx, mpq_pass *p, mpq_stage stage) {
    const mpq_err added = p->add_err;
    p->add_err = MPQ_OK;
    MPQ_CALL(mpq_agree(ctx, added));
    MPQ_CALL(mpq_stage_start(ctx, stage));
    MPQ_CALL(mpq_round_block_owned(ctx, &p->ses->ro, p->njobs, p->jobs, p->o.owned, p->results));
    MPQ_CALL(mpq_stage_stop(ctx, stage));
    return MPQ_OK;
}

/* Collective. t->coded of every job: measured on a rank that holds its
 * codes, the largest value over ranks (0 elsewhere). */
static mpq_err keep_coded(mpq_ctx *ctx, mpq_pass *p, mpq_measure_table *t) {
    int64_t *c = NULL; /* [njobs] one reduction for the block */
    mpq_err err = mpq_malloc(ctx, p->njobs > 0 ? p->njobs : 1, sizeof *c, (void **)&c);
    for (int64_t j = 0; err == MPQ_OK && j < p->njobs; j++)
        if (p->results[j].q)
            err = mpq_ckpt_coded_bits(ctx, p->results[j].q, &c[j]);
    MPQ_TRY(mpq_agree(ctx, err));
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1 && p->njobs > 0)
        MPQ_MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, c, (int)p->njobs, MPI_INT64_T, MPI_MAX, ctx->comm));
    for (int64_t j = 0; j < p->njobs; j++)
        t->coded[p->jl[j] * t->ncol + p->jk[j]] = c[j];
cleanup:
    mpq_free(c);
    return err;
}

mpq_err mpq_pass_keep(mpq_ctx *ctx, mpq_pass *p, mpq_measure_table *t) {
    MPQ_CALL(
        mpq_importance_energy(ctx, p->ses->info, p->nlb, p->lay, p->W, p->H, p->own, t->energy));
    if (p->o.coded)
        MPQ_CALL(keep_coded(ctx, p, t));
    for (int64_t j = 0; j < p->njobs; j++) {
        mpq_round_result *rr = &p->results[j];
        const int64_t x = p->jl[j] * t->ncol + p->jk[j];
        t->loss[x] = rr->loss;
        t->rtn[x] = rr->rtn_loss;
        t->bits[x] = rr->bits;
        t->q[x] = rr->q;
        rr->q = NULL;
    }
    return mpq_pass_results_done(ctx, p, MPQ_OK);
}

mpq_err mpq_pass_results_done(mpq_ctx *ctx, mpq_pass *p, mpq_err err) {
    mpq_round_results_free(p->njobs, p->results);
    p->njobs = 0;
    MPQ_CALL(mpq_agree(ctx, err));
    return MPQ_OK;
}

mpq_err mpq_pass_propagate(mpq_ctx *ctx, mpq_pass *p, int64_t b) {
    if (p->o.advance || p->o.data_free)
        return MPQ_OK;
    MPQ_CALL(mpq_stage_start(ctx, MPQ_STAGE_PROPAGATE));
    MPQ_CALL(mpq_calib_advance(ctx, p->calib, b));
    if (p->calib_fp)
        MPQ_CALL(mpq_calib_advance(ctx, p->calib_fp, b));
    MPQ_CALL(mpq_stage_stop(ctx, MPQ_STAGE_PROPAGATE));
    return MPQ_OK;
}

mpq_err mpq_pass_skip(mpq_ctx *ctx, mpq_pass *p, int64_t b) {
    mpq_progress_skip(ctx, &p->prog, b + 1); /* the rate counts this run's blocks */
    if (p->load || p->o.data_free)
        return MPQ_OK;
    if (p->save)
        return mpq_pass_hessian(ctx, p, b);
    MPQ_CALL(mpq_stage_start(ctx, MPQ_STAGE_PROPAGATE));
    MPQ_CALL(mpq_agree(ctx, mpq_calib_advance(ctx, p->calib, b)));
    if (p->calib_fp)
        MPQ_CALL(mpq_agree(ctx, mpq_calib_advance(ctx, p->calib_fp, b)));
    MPQ_CALL(mpq_stage_stop(ctx, MPQ_STAGE_PROPAGATE));
    return MPQ_OK;
}

mpq_err mpq_pass_next(mpq_ctx *ctx, mpq_pass *p, int64_t b) {
    for (int64_t i = 0; i < p->nlb; i++)
        MPQ_FREE(p->W[i]);
    p->nlb = 0;
    if (p->save && p->nstats > 0) {
        /* Keep the block's statistics for hessian.save. */
        mpq_err err =
            mpq_realloc(ctx, p->nkept, p->nkept + p->nstats, sizeof *p->kept, (void **)&p->kept);
        if (err == MPQ_OK) {
            for (int64_t k = 0; k < p->nstats; k++)
                p->kept[p->nkept++] = p->stats[k];
            MPQ_FREE(p->stats);
            p->nstats = 0;
        }
        MPQ_CALL(mpq_agree(ctx, err));
    }
    mpq_hstats_free(p->nstats, &p->stats);
    MPQ_FREE(p->groups);
    p->nstats = 0;
    mpq_progress_update(ctx, &p->prog, b + 1);
    return MPQ_OK;
}

mpq_err mpq_pass_finish(mpq_ctx *ctx, mpq_pass *p) {
    mpq_progress_end(ctx, &p->prog);
    if (!p->save)
        return MPQ_OK;
    MPQ_CALL(mpq_stage_start(ctx, MPQ_STAGE_HESSIAN));
    MPQ_CALL(mpq_hstats_save(ctx, p->o.hsave, p->nkept, p->kept));
    MPQ_CALL(mpq_stage_stop(ctx, MPQ_STAGE_HESSIAN));
    mpq_log(ctx, MPQ_LOG_INFO, "saved the Hessian statistics of %lld layer inputs to %s",
            (long long)p->nkept, p->o.hsave);
    return MPQ_OK;
}
