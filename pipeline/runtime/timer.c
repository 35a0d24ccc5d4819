/* timer.c: named per-stage wall-clock timers and their min/mean/max report. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_ctx.h"
#include "timer_internal.h"
#include "mpq_timer.h"

#define MPQ_TIMERS_MAX 64
#define MPQ_TIMER_NAME 48

struct mpq_timers {
    int n;
    char name[MPQ_TIMERS_MAX][MPQ_TIMER_NAME];
    double total[MPQ_TIMERS_MAX];   /* accumulated seconds */
    double started[MPQ_TIMERS_MAX]; /* start time, or < 0 when stopped */
};

mpq_err mpq_timers_create_(mpq_ctx *ctx, mpq_timers **out) {
    *out = calloc(1, sizeof **out);
    MPQ_CHECK(*out, MPQ_ERR_NOMEM, "cannot allocate timers (%zu bytes)", sizeof **out);
    return MPQ_OK;
}

void mpq_timers_destroy_(mpq_timers **t) {
    if (t && *t) {
        free(*t);
        *t = NULL;
    }
}

static int timer_find(const mpq_timers *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->name[i], name) == 0)
            return i;
    return -1;
}

/* The index of timer `name`, created (stopped, 0 s) on first use. */
static mpq_err timer_get(mpq_ctx *ctx, const char *name, int *out) {
    mpq_timers *t = ctx->timers;
    MPQ_CHECK(strlen(name) < MPQ_TIMER_NAME, MPQ_ERR_ARG, "timer name '%s' is too long", name);
    int i = timer_find(t, name);
    if (i < 0) {
        MPQ_CHECK(t->n < MPQ_TIMERS_MAX, MPQ_ERR_INTERNAL, "more than %d timers", MPQ_TIMERS_MAX);
        i = t->n++;
        snprintf(t->name[i], MPQ_TIMER_NAME, "%s", name);
        t->started[i] = -1;
    }
    *out = i;
    return MPQ_OK;
}

mpq_err mpq_timer_add(mpq_ctx *ctx, const char *name, double seconds) {
    int i;
    MPQ_CALL(timer_get(ctx, name, &i));
    ctx->timers->total[i] += seconds;
    return MPQ_OK;
}

mpq_err mpq_timer_start(mpq_ctx *ctx, const char *name) {
    mpq_timers *t = ctx->timers;
    int i;
    MPQ_CALL(timer_get(ctx, name, &i));
    MPQ_CHECK(t->started[i] < 0, MPQ_ERR_INTERNAL, "timer '%s' started twice", name);
    t->started[i] = mpq_now();
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "stage", name);
    mpq_event(ctx, "stage_start", f);
    return MPQ_OK;
}

mpq_err mpq_timer_stop(mpq_ctx *ctx, const char *name) {
    mpq_timers *t = ctx->timers;
    int i = timer_find(t, name);
    MPQ_CHECK(i >= 0 && t->started[i] >= 0, MPQ_ERR_INTERNAL, "timer '%s' stopped but not started",
              name);
    double dt = mpq_now() - t->started[i];
    t->total[i] += dt;
    t->started[i] = -1;
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "stage", name);
    cJSON_AddNumberToObject(f, "seconds", dt);
    mpq_event(ctx, "stage_end", f);
    return MPQ_OK;
}

double mpq_timer_seconds(const mpq_ctx *ctx, const char *name) {
    int i = timer_find(ctx->timers, name);
    return i < 0 ? 0.0 : ctx->timers->total[i];
}

mpq_err mpq_timers_report(mpq_ctx *ctx, cJSON **out) {
    if (out)
        *out = NULL;
    mpq_timers *t = ctx->timers;
    /* Rank 0's list of names defines the report. */
    char names[MPQ_TIMERS_MAX][MPQ_TIMER_NAME];
    int n = t->n;
    memcpy(names, t->name, sizeof names);
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1) {
        MPQ_MPI(MPI_Bcast(&n, 1, MPI_INT, 0, ctx->comm));
        MPQ_MPI(MPI_Bcast(names, (int)sizeof names, MPI_CHAR, 0, ctx->comm));
    }
    double mine[MPQ_TIMERS_MAX], mn[MPQ_TIMERS_MAX], mx[MPQ_TIMERS_MAX], sum[MPQ_TIMERS_MAX];
    for (int i = 0; i < n; i++) {
        names[i][MPQ_TIMER_NAME - 1] = '\0';
        mine[i] = mpq_timer_seconds(ctx, names[i]);
        mn[i] = mx[i] = sum[i] = mine[i];
    }
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1 && n > 0) {
        MPQ_MPI(MPI_Allreduce(mine, mn, n, MPI_DOUBLE, MPI_MIN, ctx->comm));
        MPQ_MPI(MPI_Allreduce(mine, mx, n, MPI_DOUBLE, MPI_MAX, ctx->comm));
        MPQ_MPI(MPI_Allreduce(mine, sum, n, MPI_DOUBLE, MPI_SUM, ctx->comm));
    }
    cJSON *obj = cJSON_CreateObject();
    MPQ_CHECK(obj, MPQ_ERR_NOMEM, "cannot allocate the timer report");
    if (n > 0)
        mpq_log(ctx, MPQ_LOG_INFO, "%-24s %10s %10s %10s  (seconds over %d rank%s)", "stage", "min",
                "mean", "max", ctx->size, ctx->size == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        double mean = sum[i] / ctx->size;
        mpq_log(ctx, MPQ_LOG_INFO, "%-24s %10.3f %10.3f %10.3f", names[i], mn[i], mean, mx[i]);
        cJSON *s = cJSON_AddObjectToObject(obj, names[i]);
        cJSON_AddNumberToObject(s, "min", mn[i]);
        cJSON_AddNumberToObject(s, "mean", mean);
        cJSON_AddNumberToObject(s, "max", mx[i]);
    }
    mpq_event(ctx, "timers", cJSON_Duplicate(obj, 1));
    if (out)
        *out = obj;
    else
        cJSON_Delete(obj);
    return MPQ_OK;
}
