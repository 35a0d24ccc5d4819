/* sweep_internal.h: state shared by the sources of the sweep
 * (pipeline/driver/sweep*.c). Not a public interface. */
#ifndef MPQ_SWEEP_INTERNAL_H
#define MPQ_SWEEP_INTERNAL_H

#include <stdint.h>

#include "measure_internal.h"
#include "mpq_config.h"
#include "mpq_importance.h"
#include "mpq_round.h"
#include "mpq_session.h"
#include "mpq_sweep.h"

/* A measured configuration: one rounding method at one spec. */
typedef struct sweep_conf {
    const mpq_round_method *method;
    mpq_qspec spec;
    double rate; /* round.rate_lambda of a "spec;rate=LAMBDA" item, else -1 */
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

/* A sweep metric (sweep.metric): one entry of the registry in
 * sweep_metric.c. */
typedef struct sweep_metric {
    const char *name;
    int lm, cls;       /* 1: applies to language models / classifiers */
    int higher_better; /* 1: a larger value is better */
    int log_axis;      /* 1: the plot's quality axis is logarithmic */
    /* Local. The value of an evaluation (is_ref: of the full-precision
     * model itself). */
    double (*value)(const mpq_session_eval *e, int is_ref);
} sweep_metric;

/* Local. The metric called name, or NULL. */
const sweep_metric *mpq_sweep_metric_find(const char *name);
/* Local. The metric of sweep.metric for a model of the task ("auto": kld
 * for language models, accuracy for classifiers); one that does not apply
 * to the task is an MPQ_ERR_CONFIG error naming the file. */
mpq_err mpq_sweep_metric_from_config(mpq_ctx *ctx, const mpq_config *cfg, mpq_task task,
                                     const sweep_metric **out);

struct mpq_sweep {
    const mpq_config *cfg;
    sweep_plan plan;
    mpq_session *ses; /* model, families, layers (no pins), calibration samples */

    int64_t other_bytes; /* fp32 bytes of every tensor that is not a quantized layer */
    int64_t fp_bytes;    /* fp32 bytes of every tensor */

    /* Measurements: column c of layer l is configuration c of the plan
     * (the codes of every measured layer are kept for the points). */
    mpq_measure_table meas;
    double *score;     /* [nl][ncand] importance scores of the candidates */
    int32_t sens_cand; /* candidate probed for the sensitivities */
    int have;          /* 1: measured or loaded */
    int coded;         /* budget.count = "coded": sizes are zstd-coded sizes (meas.coded) */

    const sweep_metric *metric;
    mpq_sweep_point ref; /* the full-precision row */
};

/* Local. The meta JSON text that identifies a measurement (model,
 * calibration, rounding, configurations, layers). Owner: caller (cJSON_free). */
char *mpq_sweep_meta(const mpq_sweep *sw);
/* Local. Scores of the candidates from loss / energy / sens. */
mpq_err mpq_sweep_scores(mpq_ctx *ctx, mpq_sweep *sw);
/* Local (rank 0), before any work: no file that the sweep writes under
 * its directory (by any stage: measure.h5, the point files of npoints
 * points, the report files) may be an input the configuration names. */
mpq_err mpq_sweep_check_files(mpq_ctx *ctx, const mpq_config *cfg, int64_t npoints);

#endif
