/* run_internal.h: state shared by the sources of the run pipeline
 * (stages/pipeline/run*.c). Not a public interface. */
#ifndef MPQ_RUN_INTERNAL_H
#define MPQ_RUN_INTERNAL_H

#include <stdint.h>

#include "measure_internal.h"
#include "mpq_calibrate.h"
#include "mpq_config.h"
#include "mpq_model.h"
#include "mpq_round.h"
#include "mpq_run.h"
#include "mpq_tokenizer.h"

typedef struct run_state {
    const mpq_config *cfg;
    mpq_run_opts opts;
    mpq_model *m;
    mpq_family *fq;  /* working model: calibration, then the quantized model */
    mpq_family *ffp; /* full precision: reference, sensitivity probes */
    const mpq_family_info *info;
    mpq_tokenizer *tok; /* language models */
    mpq_calib_set *set;
    mpq_round_opts ro;
    const mpq_round_method *method;
    int propagate_q; /* calibration.propagate = quantized */

    int mixed;       /* mixed precision: candidates listed, or a budget with the defaults */
    int64_t ncand;   /* global candidates (1 in uniform mode: quant.spec) */
    mpq_qspec *cand; /* [ncand] */
    int32_t maxc;    /* ncand + 1: room for a pinned spec that is not a candidate */

    int64_t nl;       /* quantizable layers */
    int32_t *nc;      /* [nl] candidates of layer l (ncand, or ncand + 1) */
    mpq_qspec *extra; /* [nl] the pinned spec at index ncand where nc[l] = ncand + 1 */
    int32_t *pin;     /* [nl] pinned candidate, or -1 */
    uint8_t *excl;    /* [nl] 1: full precision */

    /* Measurements (mixed precision): column k of layer l is candidate k
     * (ncand: the pinned spec); the codes are kept for reuse and probes. */
    measure_table meas;
    double *score;     /* [nl][maxc] importance score of each candidate */
    int32_t sens_cand; /* candidate probed for the sensitivity */
    int measured;      /* 1: measured in this run (meas.q valid) */

    int32_t *choice; /* [nl] chosen candidate (-1 excluded) */
    mpq_run_result *res;
} run_state;

/* The spec of candidate k of layer l. */
static inline const mpq_qspec *run_spec(const run_state *s, int64_t l, int32_t k) {
    return k < s->ncand ? &s->cand[k] : &s->extra[l];
}

/* Collective. s->sens[l] for every non-excluded layer (run_importance.c). */
mpq_err mpq_run_sensitivity(mpq_ctx *ctx, run_state *s);
/* Collective. Fills s->score from s->loss / energy / sens by the method. */
mpq_err mpq_run_scores(mpq_ctx *ctx, run_state *s);
/* Collective. Saves / loads the measurements (run_measure_io.c). */
mpq_err mpq_run_measure_save(mpq_ctx *ctx, const run_state *s, const char *path);
mpq_err mpq_run_measure_load(mpq_ctx *ctx, run_state *s, const char *path);

#endif
