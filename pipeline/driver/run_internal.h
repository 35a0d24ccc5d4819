/* run_internal.h: state shared by the sources of `mpquant run`
 * (pipeline/driver/run*.c). Not a public interface. */
#ifndef MPQ_RUN_INTERNAL_H
#define MPQ_RUN_INTERNAL_H

#include <stdint.h>

#include "measure_internal.h"
#include "mpq_importance.h"
#include "mpq_run.h"
#include "mpq_session.h"

typedef struct run_state {
    mpq_run_opts opts;
    mpq_session *ses; /* model, families, candidates, layers, calibration samples */
    int propagate_q;  /* calibration.propagate = quantized */

    /* Measurements (mixed precision): column k of layer l is candidate k
     * (ses->ncand: the pinned spec); the codes are kept for reuse and probes. */
    mpq_measure_table meas;
    double *score;     /* [nl][maxc] importance score of each candidate */
    int32_t sens_cand; /* candidate probed for the sensitivity */
    int measured;      /* 1: measured in this run (meas.q valid) */

    int32_t *choice; /* [nl] chosen candidate (-1 excluded) */
    mpq_run_result *res;
} run_state;

/* Collective. Saves / loads the measurements (run_measure_io.c). */
mpq_err mpq_run_measure_save(mpq_ctx *ctx, const run_state *s, const char *path);
mpq_err mpq_run_measure_load(mpq_ctx *ctx, run_state *s, const char *path);

#endif
