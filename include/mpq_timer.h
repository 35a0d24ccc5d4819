/* mpq_timer.h: named wall-clock timers (one per pipeline stage), reported as
 * min/mean/max over ranks. */
#ifndef MPQ_TIMER_H
#define MPQ_TIMER_H

#include "mpq_err.h"

struct mpq_ctx;
struct cJSON;

typedef struct mpq_timers mpq_timers;

/* Local. Accumulates the elapsed time between start and stop under `name`
 * (created on first use; at most 64 names of at most 47 characters). Start
 * also emits a "stage_start" event, stop a "stage_end" event. */
mpq_err mpq_timer_start(struct mpq_ctx *ctx, const char *name);
mpq_err mpq_timer_stop(struct mpq_ctx *ctx, const char *name);
/* Local. Adds seconds to `name` (created on first use) without events: for
 * work timed in many small pieces. */
mpq_err mpq_timer_add(struct mpq_ctx *ctx, const char *name, double seconds);
/* Local: accumulated seconds of `name` on this rank (0 if unknown). */
double mpq_timer_seconds(const struct mpq_ctx *ctx, const char *name);

/* Collective over ctx->comm. Reduces every timer of rank 0 (a timer a rank
 * never started counts as 0 s there) to min/mean/max over ranks, logs a table
 * on rank 0, emits one "timers" event, and, if out is not NULL, returns on
 * every rank a cJSON object {"name": {"min":..,"mean":..,"max":..}, ...}
 * owned by the caller. */
mpq_err mpq_timers_report(struct mpq_ctx *ctx, struct cJSON **out);

/* ---- peak resident memory (pipeline/rss.c) ---- */

/* Local. This process's peak resident set size so far, in MiB
 * (getrusage(RUSAGE_SELF).ru_maxrss, KiB on Linux). */
mpq_err mpq_peak_rss_mib(struct mpq_ctx *ctx, double *mib);
/* Collective over ctx->comm. Every rank's peak resident memory reduced to
 * min/mean/max (MiB), logged on rank 0 as a "peak_rss" line after the
 * timers' table, emitted as one "peak_rss_mib" event (with "per_rank": every
 * rank's figure), and, if out is not NULL, returned on every rank as a
 * cJSON object {"min":..,"mean":..,"max":..} owned by the caller. */
mpq_err mpq_peak_rss_report(struct mpq_ctx *ctx, struct cJSON **out);

/* ---- stage timers ------------------------------------------------------------------- */

/* Every stage timer of the pipeline, the stages and the commands, in
 * pipeline order: the one place where a timer's name is spelled
 * (pipeline/runtime/stage.c). */
typedef enum mpq_stage {
    MPQ_STAGE_LOAD,       /* model, families, tokenizer, layer selection */
    MPQ_STAGE_CALIBRATE,  /* the calibration samples */
    MPQ_STAGE_HESSIAN,    /* block forwards on the samples and H (or hessian.load / save) */
    MPQ_STAGE_MEASURE,    /* rounding every candidate (mixed precision, sweep) */
    MPQ_STAGE_IMPORTANCE, /* the sensitivity probes */
    MPQ_STAGE_BUDGET,     /* the knapsack */
    MPQ_STAGE_ROUND,      /* the final rounding */
    MPQ_STAGE_PROPAGATE,  /* block forwards on the quantized weights */
    MPQ_STAGE_EVAL,       /* evaluations */
    MPQ_STAGE_ASSEMBLE,   /* the checkpoint (run); a point's quantized model (sweep) */
    /* The commands' own timers (not pipeline stages: not in stage_times). */
    MPQ_STAGE_SWEEP_MEASURE, /* `sweep --stage measure` as a whole */
    MPQ_STAGE_TOTAL,         /* a whole `mpquant run` */
    MPQ_STAGE_EVAL_LOAD,     /* `mpquant eval`: model, tokenizer and data */
    MPQ_STAGE_EVAL_TOKENIZE, /* evaluation: the text into token documents */
    MPQ_STAGE_EVAL_FORWARD,  /* evaluation: the forward passes */
    /* The local work of H accumulation inside stage hessian (the rows into
     * double, the chunk GEMMs and the fixed-point fold; not the reductions):
     * added piece by piece with mpq_stage_add. */
    MPQ_STAGE_HESSIAN_ACCUMULATE,
    MPQ_STAGE_COUNT
} mpq_stage;

/* Local. The timer name of a stage ("load", ...; "?" out of range). */
const char *mpq_stage_name(mpq_stage s);
/* Local. mpq_timer_start / mpq_timer_stop of the stage's timer. */
mpq_err mpq_stage_start(struct mpq_ctx *ctx, mpq_stage s);
mpq_err mpq_stage_stop(struct mpq_ctx *ctx, mpq_stage s);
/* Local. mpq_timer_add of the stage's timer. */
mpq_err mpq_stage_add(struct mpq_ctx *ctx, mpq_stage s, double seconds);
/* Local. {"load": seconds, ..., "assemble": seconds}: this rank's
 * accumulated seconds of every pipeline stage (a stage that did not run:
 * 0), in pipeline order. NULL on allocation failure; owner: caller. */
struct cJSON *mpq_stage_times_json(const struct mpq_ctx *ctx);

#endif
