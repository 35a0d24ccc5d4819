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
