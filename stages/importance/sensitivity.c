/* sensitivity.c: the sensitivity probe of the importance stage
 * (mpq_importance.h): how much the model's output moves when one layer
 * alone carries its measured codes. */
#include <stdio.h>

#include "mpq_coll.h"
#include "mpq_eval.h"
#include "mpq_importance.h"
#include "mpq_log.h"

mpq_err mpq_importance_sensitivity(mpq_ctx *ctx, const mpq_importance_probe *p,
                                   mpq_measure_table *tab) {
    mpq_err err = MPQ_OK;
    const mpq_calib_set *set = p->set;
    const mpq_family_info *fi = mpq_family_get_info(p->ffp);
    int64_t n = p->samples;
    if (n <= 0 || n > set->nsamples)
        n = set->nsamples;
    /* Samples go through the model in groups (mpq_eval_groups: fixed by
     * their lengths, whole groups per rank), so a sample's logits do not
     * depend on the number of ranks. */
    int64_t *g0 = NULL, ng = 0, glo = 0, ghi = 0;
    err = mpq_agree(ctx, mpq_eval_groups(ctx, set->len, n, &g0, &ng));
    if (err != MPQ_OK) {
        mpq_free(g0);
        return err;
    }
    mpq_eval_range(ctx, ng, &glo, &ghi);
    const int64_t lo = g0[glo], hi = g0[ghi];
    int64_t rows = set->offset[hi] - set->offset[lo], maxrows = 0, maxw = 0;
    for (int64_t g = glo; g < ghi; g++) {
        const int64_t r = set->offset[g0[g + 1]] - set->offset[g0[g]];
        maxrows = r > maxrows ? r : maxrows;
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
    for (int64_t g = glo; e == MPQ_OK && g < ghi; g++) {
        mpq_batch b;
        mpq_calib_range_batch(set, g0[g], g0[g + 1], &b);
        e = mpq_family_forward(ctx, p->ffp, &b,
                               ref + (set->offset[g0[g]] - set->offset[lo]) * nout);
    }
    MPQ_TRY(mpq_agree(ctx, e));
    if (p->alone)
        MPQ_INFO("%s: sensitivity of %lld layers on %lld calibration samples (%s alone)", p->who,
                 (long long)tab->nl, (long long)n, p->alone);
    else
        MPQ_INFO("%s: sensitivity of %lld layers on %lld calibration samples", p->who,
                 (long long)tab->nl, (long long)n);
    /* One forward pass over the samples per probed layer: progress with an
     * ETA, as the Hessian and round passes report theirs. */
    int64_t nprobe = 0, nprobed = 0;
    for (int64_t l = 0; l < tab->nl; l++)
        nprobe += !(p->excl[l] || (p->pin && p->pin[l] >= 0));
    mpq_progress prog;
    char what[64];
    snprintf(what, sizeof what, "%s: sensitivity probes", p->who);
    mpq_progress_begin(ctx, &prog, what, "layers", nprobe);
    for (int64_t l = 0; l < tab->nl; l++) {
        if (p->excl[l] || (p->pin && p->pin[l] >= 0))
            continue;
        const int64_t x = l * tab->ncol + p->col;
        const mpq_qlayer *q = tab->q[x];
        mpq_qlayer *loaded = NULL; /* codes kept on disk, read for this layer */
        /* Every step up to the sums is local: its status is agreed first. */
        e = MPQ_OK;
        if (!q && p->codes) {
            e = p->codes(ctx, p->codes_ud, l, p->col, &loaded);
            q = loaded;
        }
        if (e == MPQ_OK && !q)
            e = MPQ_ERROR(MPQ_ERR_INTERNAL, "sensitivity: layer %lld has no measured codes",
                          (long long)l);
        if (e == MPQ_OK)
            e = mpq_family_get_weight(ctx, p->ffp, l, wfp);
        const int saved = e == MPQ_OK;
        if (e == MPQ_OK) {
            mpq_qlayer_dequantize(q, wq);
            e = mpq_family_set_weight(ctx, p->ffp, l, wq);
        }
        mpq_qlayer_destroy(&loaded);
        for (int64_t g = glo; g < ghi && e == MPQ_OK; g++) {
            mpq_batch b;
            mpq_calib_range_batch(set, g0[g], g0[g + 1], &b);
            e = mpq_family_forward(ctx, p->ffp, &b, logits);
            for (int64_t i = g0[g]; i < g0[g + 1] && e == MPQ_OK; i++) {
                const int64_t at = set->offset[i] - set->offset[lo];
                const int64_t in = set->offset[i] - set->offset[g0[g]];
                mine[2 * (i - lo)] =
                    mpq_kl_rows(ref + at * nout, logits + in * nout, set->len[i], nout);
                mine[2 * (i - lo) + 1] = (double)set->len[i];
            }
        }
        /* Restore the full-precision weights whatever happened. */
        mpq_err e2 = saved ? mpq_family_set_weight(ctx, p->ffp, l, wfp) : MPQ_OK;
        MPQ_TRY(mpq_agree(ctx, e != MPQ_OK ? e : e2));
        MPQ_TRY(mpq_eval_ordered_sum_at(ctx, n, lo, hi, 2, mine, sums));
        double kl = sums[1] > 0.0 ? sums[0] / sums[1] : 0.0;
        double L = tab->loss[x];
        tab->sens[l] = L > 0.0 ? kl / L : 0.0;
        if (p->log_layers)
            MPQ_DEBUG("%s %s: KL %.6g, layer error %.6g, sensitivity %.6g", p->who,
                      fi->layers[l].name, kl, L, tab->sens[l]);
        mpq_progress_update(ctx, &prog, ++nprobed);
    }
    mpq_progress_end(ctx, &prog);
cleanup:
    mpq_free(mine);
    mpq_free(wq);
    mpq_free(wfp);
    mpq_free(logits);
    mpq_free(ref);
    mpq_free(g0);
    return err;
}
