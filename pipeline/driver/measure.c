/* measure.c: the measurement shared by `mpquant run` and `mpquant sweep`
 * (measure_internal.h): the table of measured (layer, configuration) pairs,
 * the block-sequential rounding pass, the sensitivity probe and the
 * importance scores. */
#include <string.h>

#include "mpq_coll.h"
#include "measure_internal.h"
#include "mpq_eval.h"
#include "mpq_log.h"
#include "mpq_robust.h"
#include "mpq_timer.h"

/* ---- the table ---------------------------------------------------------------------- */

mpq_err mpq_measure_table_alloc(mpq_ctx *ctx, measure_table *t, int64_t nl, int64_t ncol) {
    const int64_t n = nl * ncol > 0 ? nl * ncol : 1;
    MPQ_ALLOC(t->loss, n);
    MPQ_ALLOC(t->rtn, n);
    MPQ_ALLOC(t->bits, n);
    MPQ_ALLOC(t->q, n);
    MPQ_ALLOC(t->energy, nl > 0 ? nl : 1);
    MPQ_ALLOC(t->sens, nl > 0 ? nl : 1);
    t->nl = nl;
    t->ncol = ncol;
    return MPQ_OK;
}

void mpq_measure_table_free(measure_table *t) {
    mpq_free(t->loss);
    mpq_free(t->rtn);
    mpq_free(t->bits);
    for (int64_t i = 0; t->q && i < t->nl * t->ncol; i++)
        mpq_qlayer_destroy(&t->q[i]);
    mpq_free(t->q);
    mpq_free(t->energy);
    mpq_free(t->sens);
    memset(t, 0, sizeof *t);
}

/* ---- the block pass ------------------------------------------------------------------ */

/* Statistic of layer li among the block's n statistics (one per input group). */
static const mpq_hstat *stat_of(const mpq_layer_info *li, int64_t n, mpq_hstat *const *stats,
                                const int64_t *groups) {
    for (int64_t k = 0; k < n; k++)
        if (groups[k] == li->group)
            return stats[k];
    return NULL;
}

/* Collective. energy[lay[j]] = tr(W H W^T) of the block's layers, layer j
 * on rank j % size (rows summed in order, so the number does not depend on
 * the rank count). */
static mpq_err block_energy(mpq_ctx *ctx, const mpq_family_info *fi, int64_t nj, const int64_t *lay,
                            float *const *W, const mpq_hstat *const *H, double *energy) {
    mpq_err err = MPQ_OK;
    float *zero = NULL;
    double *rl = NULL, *e = NULL;
    MPQ_ALLOC_TRY(e, nj > 0 ? nj : 1);
    for (int64_t j = 0; j < nj; j++) {
        if (j % ctx->size != ctx->rank)
            continue;
        const mpq_layer_info *li = &fi->layers[lay[j]];
        MPQ_ALLOC_TRY(zero, li->out * li->in);
        MPQ_ALLOC_TRY(rl, li->out);
        MPQ_TRY(mpq_round_loss(ctx, li->in, H[j]->H, li->out, W[j], zero, rl));
        for (int64_t r = 0; r < li->out; r++)
            e[j] += rl[r];
        MPQ_FREE(zero);
        MPQ_FREE(rl);
    }
cleanup:
    mpq_free(zero);
    mpq_free(rl);
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK)
        err = mpq_sum_owned(ctx, e, nj, MPI_DOUBLE, "measurements");
    for (int64_t j = 0; err == MPQ_OK && j < nj; j++)
        energy[lay[j]] = e[j];
    mpq_free(e);
    return err;
}

mpq_err mpq_block_pass(mpq_ctx *ctx, const block_pass *p) {
    mpq_err err = MPQ_OK;
    const mpq_family_info *fi = mpq_family_get_info(p->f);
    const mpq_config *cfg = p->cfg;
    const int64_t nl = fi->nlayers;
    mpq_calib *calib = NULL;
    mpq_hstat **stats = NULL;
    int64_t nstats = 0, *groups = NULL, *lay = NULL;
    float **W = NULL;
    const mpq_hstat **H = NULL;
    mpq_round_job *jobs = NULL;
    mpq_round_result *results = NULL;
    int32_t *jk = NULL; /* [job] column */
    int64_t *jl = NULL; /* [job] layer */
    int64_t njobs = 0, nlb = 0;
    int64_t cap = nl * p->ncol + 1;
    /* Saved statistics describe full-precision block inputs: they serve,
     * and are saved from, passes with full-precision propagation only. */
    const int load = p->advance && p->hload && p->hload[0];
    const int save = p->advance && !load && p->hsave && p->hsave[0];
    mpq_hstat **kept = NULL; /* loaded, or kept for saving */
    int64_t nkept = 0;
    mpq_hstat **bst = NULL; /* [nl] statistics of the current block (views) */
    int64_t *bgr = NULL;
    /* Local allocations first, agreed before the first collective. */
    do {
        if ((err = mpq_malloc(ctx, nl + 1, sizeof *lay, (void **)&lay)) ||
            (err = mpq_malloc(ctx, nl + 1, sizeof *W, (void **)&W)) ||
            (err = mpq_malloc(ctx, nl + 1, sizeof *H, (void **)&H)) ||
            (err = mpq_malloc(ctx, cap, sizeof *jobs, (void **)&jobs)) ||
            (err = mpq_malloc(ctx, cap, sizeof *results, (void **)&results)) ||
            (err = mpq_malloc(ctx, cap, sizeof *jk, (void **)&jk)) ||
            (err = mpq_malloc(ctx, cap, sizeof *jl, (void **)&jl)) ||
            (err = mpq_malloc(ctx, nl + 1, sizeof *bst, (void **)&bst)) ||
            (err = mpq_malloc(ctx, nl + 1, sizeof *bgr, (void **)&bgr)))
            break;
    } while (0);
    MPQ_TRY(mpq_agree(ctx, err));
    MPQ_TRY(mpq_timer_start(ctx, "hessian"));
    if (load)
        MPQ_TRY(mpq_hstats_load(ctx, p->hload, MPQ_HSTAT_ALL, &nkept, &kept));
    else
        MPQ_TRY(mpq_agree(/* local: agreed before the first block's collectives */
                          ctx,
                          mpq_calib_create(ctx, p->f, p->set, cfg->hessian.chunk_samples, &calib)));
    MPQ_TRY(mpq_timer_stop(ctx, "hessian"));
    mpq_progress prog;
    mpq_progress_begin(ctx, &prog, p->label, "blocks", fi->nblocks);
    for (int64_t b = 0; b < fi->nblocks; b++) {
        int64_t nb = 0;
        MPQ_TRY(mpq_timer_start(ctx, "hessian"));
        if (load) {
            /* The statistic of each input group is named after the group's
             * first layer (mpq_calibrate.h). */
            for (int64_t l = 0; l < nl && err == MPQ_OK; l++) {
                const mpq_layer_info *li = &fi->layers[l];
                if (li->block != b || li->group != l)
                    continue;
                int64_t k = 0;
                while (k < nkept && strcmp(kept[k]->name, li->name) != 0)
                    k++;
                if (k == nkept || kept[k]->d != li->in)
                    err = MPQ_ERROR(MPQ_ERR_FORMAT,
                                    "%s: hessian.load: '%s' has no statistics of width %lld for "
                                    "the input of layer %s (saved for another model?)",
                                    cfg->source, p->hload, (long long)li->in, li->name);
                else {
                    bst[nb] = kept[k];
                    bgr[nb++] = l;
                }
            }
            MPQ_TRY(err);
        } else {
            MPQ_TRY(mpq_calib_block(ctx, calib, b, (int)cfg->hessian.bound_log2, MPQ_HSTAT_ALL,
                                    p->advance, &nstats, &stats, &groups));
            for (int64_t k = 0; k < nstats; k++) {
                bst[k] = stats[k];
                bgr[k] = groups[k];
                /* Fewer calibration rows than input channels: H is rank
                 * deficient (a warning naming the layer; damping copes). */
                if (p->warn_rows)
                    mpq_check_calibration_rows(ctx, stats[k]->name, stats[k]->count, stats[k]->d);
            }
            nb = nstats;
        }
        MPQ_TRY(mpq_timer_stop(ctx, "hessian"));
        /* Jobs: the block's layers x their columns. Local work, agreed
         * before the collective rounding. */
        nlb = 0;
        njobs = 0;
        for (int64_t l = 0; l < nl && err == MPQ_OK; l++) {
            const mpq_layer_info *li = &fi->layers[l];
            if (li->block != b || p->excl[l])
                continue;
            const mpq_hstat *st = stat_of(li, nb, bst, bgr);
            if (!st || !st->H || st->d != li->in) {
                err = MPQ_ERROR(MPQ_ERR_INTERNAL, "%s: no statistic of width %lld for layer %s",
                                p->who, (long long)li->in, li->name);
                break;
            }
            if ((err = mpq_malloc(ctx, li->out * li->in, sizeof *W[nlb], (void **)&W[nlb])) ||
                (err = mpq_family_get_weight(ctx, p->f, l, W[nlb]))) {
                nlb += W[nlb] != NULL;
                break;
            }
            H[nlb] = st;
            lay[nlb] = l;
            int32_t k0, k1;
            p->ops->columns(p->ud, l, &k0, &k1);
            for (int32_t k = k0; k < k1; k++) {
                mpq_round_job *jb = &jobs[njobs];
                jb->name = li->name;
                jb->rows = li->out;
                jb->cols = li->in;
                jb->W = W[nlb];
                jb->H = st->H;
                p->ops->conf(p->ud, l, k, &jb->spec, &jb->method);
                jl[njobs] = l;
                jk[njobs++] = k;
            }
            nlb++;
        }
        MPQ_TRY(mpq_agree(ctx, err));
        MPQ_TRY(mpq_timer_start(ctx, p->timer));
        MPQ_TRY(mpq_round_block(ctx, p->ro, njobs, jobs, results));
        MPQ_TRY(mpq_timer_stop(ctx, p->timer));
        if (p->tab)
            MPQ_TRY(block_energy(ctx, fi, nlb, lay, W, H, p->tab->energy));
        for (int64_t j = 0; j < njobs && err == MPQ_OK; j++) {
            mpq_round_result *rr = &results[j];
            if (!p->tab) {
                err = p->ops->take(ctx, p->ud, jl[j], jk[j], rr);
                continue;
            }
            int64_t x = jl[j] * p->tab->ncol + jk[j];
            p->tab->loss[x] = rr->loss;
            p->tab->rtn[x] = rr->rtn_loss;
            p->tab->bits[x] = mpq_qlayer_bits(rr->q);
            p->tab->q[x] = rr->q;
            rr->q = NULL;
        }
        mpq_round_results_free(njobs, results);
        njobs = 0;
        MPQ_TRY(mpq_agree(ctx, err));
        if (!p->advance) {
            MPQ_TRY(mpq_timer_start(ctx, "propagate"));
            MPQ_TRY(mpq_calib_advance(ctx, calib, b));
            MPQ_TRY(mpq_timer_stop(ctx, "propagate"));
        }
        for (int64_t i = 0; i < nlb; i++)
            MPQ_FREE(W[i]);
        nlb = 0;
        if (save && nstats > 0) {
            /* Keep the block's statistics for hessian.save. */
            err = mpq_realloc(ctx, nkept, nkept + nstats, sizeof *kept, (void **)&kept);
            if (err == MPQ_OK) {
                for (int64_t k = 0; k < nstats; k++)
                    kept[nkept++] = stats[k];
                MPQ_FREE(stats);
                nstats = 0;
            }
            MPQ_TRY(mpq_agree(ctx, err));
        }
        mpq_hstats_free(nstats, &stats);
        MPQ_FREE(groups);
        nstats = 0;
        mpq_progress_update(ctx, &prog, b + 1);
    }
    mpq_progress_end(ctx, &prog);
    if (save) {
        MPQ_TRY(mpq_timer_start(ctx, "hessian"));
        MPQ_TRY(mpq_hstats_save(ctx, p->hsave, nkept, kept));
        MPQ_TRY(mpq_timer_stop(ctx, "hessian"));
        mpq_log(ctx, MPQ_LOG_INFO, "saved the Hessian statistics of %lld layer inputs to %s",
                (long long)nkept, p->hsave);
    }
cleanup:
    mpq_hstats_free(nkept, &kept);
    mpq_free(bst);
    mpq_free(bgr);
    if (results)
        mpq_round_results_free(njobs, results);
    mpq_free(results);
    mpq_free(jobs);
    mpq_free(jk);
    mpq_free(jl);
    for (int64_t i = 0; W && i < nlb; i++)
        mpq_free(W[i]);
    mpq_free(W);
    mpq_free(H);
    mpq_free(lay);
    mpq_hstats_free(nstats, &stats);
    mpq_free(groups);
    mpq_calib_destroy(&calib);
    return err;
}

/* ---- the sensitivity probe --------------------------------------------------------- */

mpq_err mpq_measure_sensitivity(mpq_ctx *ctx, const measure_probe *p, measure_table *tab) {
    mpq_err err = MPQ_OK;
    const mpq_calib_set *set = p->set;
    const mpq_family_info *fi = mpq_family_get_info(p->ffp);
    int64_t n = p->samples;
    if (n <= 0 || n > set->nsamples)
        n = set->nsamples;
    int64_t lo, hi;
    mpq_eval_range(ctx, n, &lo, &hi);
    int64_t rows = 0, maxrows = 0, maxw = 0;
    for (int64_t i = lo; i < hi; i++) {
        rows += set->len[i];
        maxrows = set->len[i] > maxrows ? set->len[i] : maxrows;
    }
    for (int64_t l = 0; l < tab->nl; l++)
        maxw = fi->layers[l].out * fi->layers[l].in > maxw ? fi->layers[l].out * fi->layers[l].in
                                                           : maxw;
    const int64_t nout = fi->out_width;
    float *ref = NULL, *logits = NULL, *wfp = NULL, *wq = NULL;
    double *mine = NULL, sums[2];
    /* Local set-up (buffers, this rank's reference logits), agreed before
     * the first collective: a rank failing here must not leave the others
     * waiting in the sums below. */
    mpq_err e = mpq_malloc(ctx, (rows > 0 ? rows : 1) * nout, sizeof *ref, (void **)&ref);
    if (e == MPQ_OK)
        e = mpq_malloc(ctx, (maxrows > 0 ? maxrows : 1) * nout, sizeof *logits, (void **)&logits);
    if (e == MPQ_OK)
        e = mpq_malloc(ctx, maxw, sizeof *wfp, (void **)&wfp);
    if (e == MPQ_OK)
        e = mpq_malloc(ctx, maxw, sizeof *wq, (void **)&wq);
    if (e == MPQ_OK)
        e = mpq_malloc(ctx, 2 * (hi - lo > 0 ? hi - lo : 1), sizeof *mine, (void **)&mine);
    for (int64_t i = lo, at = 0; e == MPQ_OK && i < hi; i++) {
        mpq_batch b;
        mpq_calib_sample_batch(set, i, &b);
        e = mpq_family_forward(ctx, p->ffp, &b, ref + at * nout);
        at += set->len[i];
    }
    MPQ_TRY(mpq_agree(ctx, e));
    if (p->alone)
        MPQ_INFO("%s: sensitivity of %lld layers on %lld calibration samples (%s alone)", p->who,
                 (long long)tab->nl, (long long)n, p->alone);
    else
        MPQ_INFO("%s: sensitivity of %lld layers on %lld calibration samples", p->who,
                 (long long)tab->nl, (long long)n);
    for (int64_t l = 0; l < tab->nl; l++) {
        if (p->excl[l] || (p->pin && p->pin[l] >= 0))
            continue;
        const int64_t x = l * tab->ncol + p->col;
        const mpq_qlayer *q = tab->q[x];
        /* Every step up to the sums is local: its status is agreed first. */
        e = q ? MPQ_OK
              : MPQ_ERROR(MPQ_ERR_INTERNAL, "sensitivity: layer %lld has no measured codes",
                          (long long)l);
        if (e == MPQ_OK)
            e = mpq_family_get_weight(ctx, p->ffp, l, wfp);
        const int saved = e == MPQ_OK;
        if (e == MPQ_OK) {
            mpq_qlayer_dequantize(q, wq);
            e = mpq_family_set_weight(ctx, p->ffp, l, wq);
        }
        for (int64_t i = lo, at = 0; i < hi && e == MPQ_OK; i++) {
            mpq_batch b;
            mpq_calib_sample_batch(set, i, &b);
            e = mpq_family_forward(ctx, p->ffp, &b, logits);
            mine[2 * (i - lo)] =
                e == MPQ_OK ? mpq_kl_rows(ref + at * nout, logits, b.rows, nout) : 0;
            mine[2 * (i - lo) + 1] = (double)b.rows;
            at += set->len[i];
        }
        /* Restore the full-precision weights whatever happened. */
        mpq_err e2 = saved ? mpq_family_set_weight(ctx, p->ffp, l, wfp) : MPQ_OK;
        MPQ_TRY(mpq_agree(ctx, e != MPQ_OK ? e : e2));
        MPQ_TRY(mpq_eval_ordered_sum(ctx, n, 2, mine, sums));
        double kl = sums[1] > 0.0 ? sums[0] / sums[1] : 0.0;
        double L = tab->loss[x];
        tab->sens[l] = L > 0.0 ? kl / L : 0.0;
        if (p->log_layers)
            MPQ_DEBUG("%s %s: KL %.6g, layer error %.6g, sensitivity %.6g", p->who,
                      fi->layers[l].name, kl, L, tab->sens[l]);
    }
cleanup:
    mpq_free(mine);
    mpq_free(wq);
    mpq_free(wfp);
    mpq_free(logits);
    mpq_free(ref);
    return err;
}

/* ---- importance ------------------------------------------------------------------ */

mpq_err mpq_measure_score_kind(mpq_ctx *ctx, const mpq_config *cfg, measure_score *kind) {
    static const char *const names[] = {[MEASURE_SCORE_ERROR] = "error",
                                        [MEASURE_SCORE_NORMALIZED] = "normalized",
                                        [MEASURE_SCORE_SENSITIVITY] = "sensitivity"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(cfg->importance.method, names[i]) == 0) {
            *kind = (measure_score)i;
            return MPQ_OK;
        }
    return MPQ_ERROR(MPQ_ERR_CONFIG, "%s: importance.method: unknown method '%s'", cfg->source,
                     cfg->importance.method);
}

double mpq_measure_score(const measure_table *t, measure_score kind, int64_t l, int64_t col) {
    double v = t->loss[l * t->ncol + col];
    if (kind == MEASURE_SCORE_NORMALIZED)
        return t->energy[l] > 0.0 ? v / t->energy[l] : v;
    if (kind == MEASURE_SCORE_SENSITIVITY)
        return v * t->sens[l];
    return v;
}

mpq_err mpq_measure_probe_candidate(mpq_ctx *ctx, const mpq_config *cfg, const mpq_family_info *fi,
                                    int32_t ncand,
                                    const mpq_qspec *(*spec)(const void *ud, int32_t k),
                                    const void *ud, const mpq_qspec *want, int32_t *k) {
    if (want) {
        for (int32_t c = 0; c < ncand; c++)
            if (mpq_qspec_equal(spec(ud, c), want)) {
                *k = c;
                return MPQ_OK;
            }
        return MPQ_ERROR(MPQ_ERR_CONFIG,
                         "%s: importance.sensitivity_spec: \"%s\" is not one of quant.candidates",
                         cfg->source, cfg->importance.sensitivity_spec);
    }
    int64_t best = -1;
    for (int32_t c = 0; c < ncand; c++) {
        int64_t tot = 0;
        for (int64_t l = 0; l < fi->nlayers; l++) {
            int64_t b;
            MPQ_CALL(
                mpq_quant_storage_bits(ctx, spec(ud, c), fi->layers[l].out, fi->layers[l].in, &b));
            tot += b;
        }
        if (best < 0 || tot < best) {
            best = tot;
            *k = c;
        }
    }
    return MPQ_OK;
}
