/* sweep_internal.h: state shared by the sources of the sweep
 * (stages/sweep*.c). Not a public interface. */
#ifndef MPQ_SWEEP_INTERNAL_H
#define MPQ_SWEEP_INTERNAL_H

#include <stdint.h>

#include "mpq_calibrate.h"
#include "mpq_config.h"
#include "mpq_model.h"
#include "mpq_round.h"
#include "mpq_sweep.h"
#include "mpq_tokenizer.h"
#include "measure_internal.h"

/* A measured configuration: one rounding method at one spec. */
typedef struct sweep_conf {
    const mpq_round_method *method;
    mpq_qspec spec;
} sweep_conf;

enum { SWEEP_BUDGET = 1, SWEEP_UNIFORM, SWEEP_COMPARE };

typedef struct sweep_plan_point {
    int kind;      /* SWEEP_* */
    double budget; /* SWEEP_BUDGET: average bits per weight */
    int32_t conf;  /* SWEEP_UNIFORM / SWEEP_COMPARE: the configuration of every layer */
} sweep_plan_point;

/* What to measure and which points to build: a function of the
 * configuration alone (identical on every rank). */
typedef struct sweep_plan {
    const mpq_round_method *method; /* quant.method */
    int64_t nconf;
    sweep_conf *conf; /* [nconf] measured configurations */
    int64_t ncand;
    int32_t *cand; /* [ncand] configuration of candidate k of quant.candidates */
    int64_t npts;
    sweep_plan_point *pts; /* [npts] */
} sweep_plan;

/* Local. Builds the plan; errors name the file and the key. */
mpq_err mpq_sweep_plan_build(mpq_ctx *ctx, const mpq_config *cfg, sweep_plan *p);
void mpq_sweep_plan_free(sweep_plan *p);

struct mpq_sweep {
    const mpq_config *cfg;
    sweep_plan plan;
    mpq_model *m;
    mpq_family *fq;  /* working model: the points' quantized weights */
    mpq_family *ffp; /* full precision: reference, sensitivity probes */
    const mpq_family_info *info;
    mpq_tokenizer *tok;
    mpq_calib_set *set; /* NULL unless created with_calib */
    mpq_round_opts ro;

    int64_t nl;
    uint8_t *excl;       /* [nl] 1: kept in full precision (budget.exclude) */
    int64_t other_bytes; /* fp32 bytes of every tensor that is not a quantized layer */
    int64_t fp_bytes;    /* fp32 bytes of every tensor */

    /* Measurements: column c of layer l is configuration c of the plan
     * (the codes of every measured layer are kept for the points). */
    measure_table meas;
    double *score;     /* [nl][ncand] importance scores of the candidates */
    int32_t sens_cand; /* candidate probed for the sensitivities */
    int have;          /* 1: measured or loaded */

    char metric[16];
    mpq_sweep_point ref; /* the full-precision row */
};

/* Local. The meta JSON text that identifies a measurement (model,
 * calibration, rounding, configurations, layers). Owner: caller (cJSON_free). */
char *mpq_sweep_meta(const mpq_sweep *sw);
/* Local. Scores of the candidates from loss / energy / sens. */
mpq_err mpq_sweep_scores(mpq_ctx *ctx, mpq_sweep *sw);

#endif
