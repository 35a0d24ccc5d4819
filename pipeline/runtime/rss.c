/* rss.c: each rank's peak resident memory (getrusage), reported at the end
 * of a run next to the stage timers. The peak is what a job must request
 * (Slurm --mem-per-cpu), so it is the figure to show, not the current size. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "mpq_coll.h"
#include "mpq_ctx.h"
#include "mpq_log.h"
#include "mpq_timer.h"

mpq_err mpq_peak_rss_mib(mpq_ctx *ctx, double *mib) {
    struct rusage ru;
    *mib = 0.0;
    MPQ_CHECK(getrusage(RUSAGE_SELF, &ru) == 0, MPQ_ERR_IO, "getrusage: %s", strerror(errno));
    /* ru_maxrss is in KiB on Linux (bytes on macOS; Linux is the target). */
    *mib = (double)ru.ru_maxrss / 1024.0;
    return MPQ_OK;
}

mpq_err mpq_peak_rss_report(mpq_ctx *ctx, cJSON **out) {
    mpq_err err = MPQ_OK;
    double *all = NULL; /* [size] every rank's peak (MiB) */
    cJSON *obj = NULL, *ev = NULL;
    if (out)
        *out = NULL;
    double mine = 0.0;
    mpq_err local = mpq_peak_rss_mib(ctx, &mine);
    if (local == MPQ_OK)
        local = mpq_malloc(ctx, ctx->size, sizeof *all, (void **)&all);
    MPQ_CALL(mpq_agree(ctx, local));
    /* One exchange: every rank gets every figure and reduces it itself. */
    all[0] = mine;
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1)
        MPQ_MPI_TRY(MPI_Allgather(&mine, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, ctx->comm));
    double mn = all[0], mx = all[0], sum = 0.0;
    for (int r = 0; r < ctx->size; r++) {
        mn = all[r] < mn ? all[r] : mn;
        mx = all[r] > mx ? all[r] : mx;
        sum += all[r];
    }
    const double mean = sum / ctx->size;
    mpq_log(ctx, MPQ_LOG_INFO,
            "%-24s %10.1f %10.1f %10.1f  (peak resident memory, MiB over %d rank%s)", "peak_rss",
            mn, mean, mx, ctx->size, ctx->size == 1 ? "" : "s");
    obj = cJSON_CreateObject();
    MPQ_ENSURE(obj, MPQ_ERR_NOMEM, "cannot allocate the memory report");
    cJSON_AddNumberToObject(obj, "min", mn);
    cJSON_AddNumberToObject(obj, "mean", mean);
    cJSON_AddNumberToObject(obj, "max", mx);
    /* The event log keeps every rank's figure: a lopsided rank is what a
     * min/mean/max hides the identity of. */
    ev = cJSON_Duplicate(obj, 1);
    if (ev) {
        cJSON *pr = cJSON_AddArrayToObject(ev, "per_rank");
        for (int r = 0; pr && r < ctx->size; r++)
            cJSON_AddItemToArray(pr, cJSON_CreateNumber(all[r]));
    }
    mpq_event(ctx, "peak_rss_mib", ev);
    ev = NULL;
    if (out) {
        *out = obj;
        obj = NULL;
    }
cleanup:
    cJSON_Delete(obj);
    mpq_free(all);
    return err;
}
