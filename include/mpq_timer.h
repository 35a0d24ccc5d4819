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

#endif
