/* mpq_log.h: levelled logging, progress lines with rate and ETA, and the
 * JSON-lines event log (STYLE.md rule 11).
 *
 * Log lines go to stderr (standard output is kept for results and the final
 * --json line). By default only rank 0 prints; in all-ranks mode every rank
 * prints with a "[rank/size]" prefix. The sink can be swapped for tests.
 * Every function here is local (no communication) unless stated.
 */
#ifndef MPQ_LOG_H
#define MPQ_LOG_H

#include "mpq_err.h"

#include <stdint.h>
#include <stdio.h>

struct mpq_ctx;
struct cJSON;

typedef enum mpq_log_level {
    MPQ_LOG_ERROR = 0,
    MPQ_LOG_WARN,
    MPQ_LOG_INFO,
    MPQ_LOG_DEBUG,
    MPQ_LOG_TRACE,
    MPQ_LOG_LEVEL_COUNT
} mpq_log_level;

/* Receives one finished log line (no trailing newline). */
typedef void (*mpq_log_sink)(void *userdata, mpq_log_level level, const char *line);

/* Parses "error", "warn", "info", "debug", "trace". Returns 0 on success. */
int mpq_log_level_parse(const char *name, mpq_log_level *out);
const char *mpq_log_level_name(mpq_log_level level);

/* Logger settings; part of the context. */
void mpq_log_set_level(struct mpq_ctx *ctx, mpq_log_level level);
void mpq_log_set_all_ranks(struct mpq_ctx *ctx, int all_ranks);
/* sink NULL restores the default (stderr). */
void mpq_log_set_sink(struct mpq_ctx *ctx, mpq_log_sink sink, void *userdata);

/* Prints on rank 0 (or on every rank in all-ranks mode) if level is enabled. */
void mpq_log(struct mpq_ctx *ctx, mpq_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prints on the calling rank whatever its rank (prefixed "[rank/size]"). */
void mpq_log_here(struct mpq_ctx *ctx, mpq_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define MPQ_INFO(...)  mpq_log(ctx, MPQ_LOG_INFO, __VA_ARGS__)
#define MPQ_WARN(...)  mpq_log(ctx, MPQ_LOG_WARN, __VA_ARGS__)
#define MPQ_DEBUG(...) mpq_log(ctx, MPQ_LOG_DEBUG, __VA_ARGS__)

/* ---- event log (JSON lines) ------------------------------------------- */

/* Opens PATH for appending events (rank 0 only writes; other ranks ignore).
 * Local; call on every rank. PATH is created when missing; an existing
 * PATH must be a regular file (a FIFO, device or socket is refused without
 * blocking). Whether PATH is an input or another output is the caller's
 * check (mpq_cli). Errors name the file and the reason. */
mpq_err mpq_event_open(struct mpq_ctx *ctx, const char *path);
void mpq_event_close(struct mpq_ctx *ctx);
/* Emits one event {"time":..., "elapsed_s":..., "event": type, "rank": r,
 * ...fields}. Takes ownership of fields (a cJSON object, may be NULL).
 * Written by the calling rank only when it is rank 0 or when `any_rank`. */
void mpq_event(struct mpq_ctx *ctx, const char *type, struct cJSON *fields);
void mpq_event_any_rank(struct mpq_ctx *ctx, const char *type, struct cJSON *fields);

/* ---- progress --------------------------------------------------------- */

/* A long loop: mpq_progress_begin, then mpq_progress_update(done) as often
 * as convenient; a line with count, rate and ETA is printed (and a progress
 * event emitted) at most every `interval_s` seconds, and at the end. */
typedef struct mpq_progress {
    char what[64];
    const char *unit; /* "tokens", "layers", ... */
    int64_t total;
    int64_t done;
    double t_start;
    double t_last;
    double interval_s;
    int64_t base; /* items done before this run (mpq_progress_skip): not in the rate */
    /* Which model the items belong to, when a loop runs more than one
     * (evaluation: "quantized model", "full-precision reference"): printed
     * after `what` and set as the event's "model"; NULL: none. A static
     * string (not copied). */
    const char *model;
} mpq_progress;

void mpq_progress_begin(struct mpq_ctx *ctx, mpq_progress *p, const char *what, const char *unit,
                        int64_t total);
void mpq_progress_update(struct mpq_ctx *ctx, mpq_progress *p, int64_t done);
void mpq_progress_end(struct mpq_ctx *ctx, mpq_progress *p);
/* Items 0 .. done-1 were done by an earlier run (a resume): they count as
 * done, but the rate and the ETA are measured from here on. */
void mpq_progress_skip(struct mpq_ctx *ctx, mpq_progress *p, int64_t done);
/* The model the next lines are for (see mpq_progress.model); local. */
void mpq_progress_model(mpq_progress *p, const char *model);

/* Seconds since an arbitrary fixed point (monotonic). */
double mpq_now(void);

#endif
