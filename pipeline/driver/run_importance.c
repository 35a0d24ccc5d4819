/* run_importance.c: importance scores of (layer, candidate) pairs for the
 * mixed-precision budget (see mpq_run.h): raw layer error, error normalised
 * by the layer's output energy, and error weighted by the model's measured
 * sensitivity to that layer. */
#include <math.h>
#include <string.h>

#include "mpq_log.h"
#include "run_internal.h"

/* Collective. The probe of measure_internal.h for every non-excluded,
 * non-pinned layer, with candidate s->sens_cand alone. */
mpq_err mpq_run_sensitivity(mpq_ctx *ctx, run_state *s) {
    measure_probe p = {.ffp = s->ffp,
                       .set = s->set,
                       .samples = s->cfg->importance.samples,
                       .excl = s->excl,
                       .pin = s->pin, /* a pinned layer measured only its pinned candidate */
                       .col = s->sens_cand,
                       .who = "importance",
                       .alone = s->res->candidates[s->sens_cand],
                       .log_layers = 1};
    return mpq_measure_sensitivity(ctx, &p, &s->meas);
}

mpq_err mpq_run_scores(mpq_ctx *ctx, run_state *s) {
    measure_score kind;
    MPQ_CALL(mpq_measure_score_kind(ctx, s->cfg, &kind));
    for (int64_t l = 0; l < s->nl; l++) {
        for (int32_t k = 0; k < s->nc[l]; k++) {
            double v = mpq_measure_score(&s->meas, kind, l, k);
            MPQ_CHECK(isfinite(v) && v >= 0.0, MPQ_ERR_NUMERIC,
                      "importance: score of layer %s candidate %d is %g", s->info->layers[l].name,
                      k, v);
            s->score[l * s->maxc + k] = v;
        }
    }
    return MPQ_OK;
}
