/* timer_internal.h: the timer table's constructor and destructor, which only
 * the context (ctx.c) calls: a context owns its timers (mpq_ctx.timers). */
#ifndef MPQ_TIMER_INTERNAL_H
#define MPQ_TIMER_INTERNAL_H

#include "mpq_ctx.h"
#include "mpq_timer.h"

/* Owner: the context (released with mpq_timers_destroy_). */
mpq_err mpq_timers_create_(mpq_ctx *ctx, mpq_timers **out);
/* NULL-safe; sets *t to NULL. */
void mpq_timers_destroy_(mpq_timers **t);

#endif
