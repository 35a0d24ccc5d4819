/* run_importance.c: importance scores of (layer, candidate) pairs for the
 * mixed-precision budget (see mpq_run.h): raw layer error, error normalised
 * by the layer's output energy, and error weighted by the model's measured
 * sensitivity to that layer. */
#include <math.h>
#include <string.h>

#include "mpq_log.h"
#include "run_internal.h"

/* Collective. For every non-excluded, non-pinned layer l: substitutes the
 * measured dequantized weights of candidate s->sens_cand into the
 * full-precision model, measures the mean KL divergence from the
 * full-precision outputs over the first importance.samples calibration
 * samples (one sample per forward pass, so a sample's sum does not depend
 * on the rank; sums added in sample order), restores the weights and sets
 * s_l = KL_l / L_l. The full-precision logits of this rank's samples are
 * computed once and kept. */
mpq_err mpq_run_sensitivity(mpq_ctx *ctx, run_state *s) {
    mpq_err err = MPQ_OK;
    const mpq_calib_set *set = s->set;
    const mpq_family_info *fi = s->info;
    int64_t n = s->cfg->importance.samples;
    if (n <= 0 || n > set->nsamples)
        n = set->nsamples;
    int64_t lo, hi;
    mpq_eval_range(ctx, n, &lo, &hi);
    int64_t rows = 0, maxrows = 0, maxw = 0;
    for (int64_t i = lo; i < hi; i++) {
        rows += set->len[i];
        maxrows = set->len[i] > maxrows ? set->len[i] : maxrows;
    }
    for (int64_t l = 0; l < s->nl; l++)
        maxw = fi->layers[l].out * fi->layers[l].in > maxw ? fi->layers[l].out * fi->layers[l].in
                                                           : maxw;
    const int64_t nout = fi->out_width;
    float *ref = NULL, *logits = NULL, *wfp = NULL, *wq = NULL;
    double *mine = NULL, *sums = NULL;
    MPQ_ALLOC_TRY(ref, (rows > 0 ? rows : 1) * nout);
    MPQ_ALLOC_TRY(logits, (maxrows > 0 ? maxrows : 1) * nout);
    MPQ_ALLOC_TRY(wfp, maxw);
    MPQ_ALLOC_TRY(wq, maxw);
    MPQ_ALLOC_TRY(mine, 2 * (hi - lo > 0 ? hi - lo : 1));
    MPQ_ALLOC_TRY(sums, 2);
    for (int64_t i = lo, at = 0; i < hi; i++) {
        mpq_batch b;
        mpq_calib_sample_batch(set, i, &b);
        MPQ_TRY(mpq_family_forward(ctx, s->ffp, &b, ref + at * nout));
        at += set->len[i];
    }
    MPQ_INFO("importance: sensitivity of %lld layers on %lld calibration samples (%s alone)",
             (long long)s->nl, (long long)n, s->res->candidates[s->sens_cand]);
    for (int64_t l = 0; l < s->nl; l++) {
        if (s->excl[l] || s->pin[l] >= 0)
            continue;
        const mpq_qlayer *q = s->meas.q[l * s->maxc + s->sens_cand];
        MPQ_ENSURE(q, MPQ_ERR_INTERNAL, "sensitivity: layer %lld has no measured codes",
                   (long long)l);
        MPQ_TRY(mpq_family_get_weight(ctx, s->ffp, l, wfp));
        mpq_qlayer_dequantize(q, wq);
        MPQ_TRY(mpq_family_set_weight(ctx, s->ffp, l, wq));
        mpq_err e = MPQ_OK;
        for (int64_t i = lo, at = 0; i < hi && e == MPQ_OK; i++) {
            mpq_batch b;
            mpq_calib_sample_batch(set, i, &b);
            e = mpq_family_forward(ctx, s->ffp, &b, logits);
            mine[2 * (i - lo)] =
                e == MPQ_OK ? mpq_kl_rows(ref + at * nout, logits, b.rows, nout) : 0;
            mine[2 * (i - lo) + 1] = (double)b.rows;
            at += set->len[i];
        }
        /* Restore the full-precision weights whatever happened. */
        mpq_err e2 = mpq_family_set_weight(ctx, s->ffp, l, wfp);
        MPQ_TRY(mpq_agree(ctx, e != MPQ_OK ? e : e2));
        MPQ_TRY(mpq_eval_ordered_sum(ctx, n, 2, mine, sums));
        double kl = sums[1] > 0.0 ? sums[0] / sums[1] : 0.0;
        double L = s->meas.loss[l * s->maxc + s->sens_cand];
        s->meas.sens[l] = L > 0.0 ? kl / L : 0.0;
        MPQ_DEBUG("importance %s: KL %.6g, layer error %.6g, sensitivity %.6g", fi->layers[l].name,
                  kl, L, s->meas.sens[l]);
    }
cleanup:
    mpq_free(sums);
    mpq_free(mine);
    mpq_free(wq);
    mpq_free(wfp);
    mpq_free(logits);
    mpq_free(ref);
    return err;
}

mpq_err mpq_run_scores(mpq_ctx *ctx, run_state *s) {
    const char *m = s->cfg->importance.method;
    int normalized = strcmp(m, "normalized") == 0, sensitivity = strcmp(m, "sensitivity") == 0;
    MPQ_CHECK(normalized || sensitivity || strcmp(m, "error") == 0, MPQ_ERR_CONFIG,
              "%s: importance.method: unknown method '%s'", s->cfg->source, m);
    for (int64_t l = 0; l < s->nl; l++) {
        for (int32_t k = 0; k < s->nc[l]; k++) {
            int64_t x = l * s->maxc + k;
            double v = s->meas.loss[x];
            if (normalized)
                v = s->meas.energy[l] > 0.0 ? v / s->meas.energy[l] : v;
            else if (sensitivity)
                v = v * s->meas.sens[l];
            MPQ_CHECK(isfinite(v) && v >= 0.0, MPQ_ERR_NUMERIC,
                      "importance: score of layer %s candidate %d is %g", s->info->layers[l].name,
                      k, v);
            s->score[x] = v;
        }
    }
    return MPQ_OK;
}
