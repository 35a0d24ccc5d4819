/* ctx.c: context creation, checked allocation and casts, MPI error text.
 * The collectives (agreement, broadcasts, sums, the process grid) are in
 * coll.c. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mpq_ctx.h"
#include "timer_internal.h"

mpq_err mpq_ctx_create(MPI_Comm comm, mpq_ctx **out) {
    *out = NULL;
    mpq_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return mpq_err_raise(NULL, MPQ_ERR_NOMEM, __FILE__, __LINE__, __func__,
                             "cannot allocate the context (%zu bytes)", sizeof *c);
    c->comm = MPI_COMM_NULL;
    c->node_comm = MPI_COMM_NULL;
    c->rank = 0;
    c->size = 1;
    c->node_rank = 0;
    c->node_size = 1;
    c->err_rank = -1;
    c->log_level = MPQ_LOG_INFO;
    c->alloc_fail_countdown = -1;
    c->t_created = mpq_now();
    c->progress_interval = 5.0;
    mpq_ctx *ctx = c; /* for the macros */
    mpq_err err = MPQ_OK;
    if (comm != MPI_COMM_NULL) {
        MPQ_MPI_TRY(MPI_Comm_dup(comm, &c->comm));
        MPQ_MPI_TRY(MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN));
        MPQ_MPI_TRY(MPI_Comm_rank(c->comm, &c->rank));
        MPQ_MPI_TRY(MPI_Comm_size(c->comm, &c->size));
        MPQ_MPI_TRY(MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL,
                                        &c->node_comm));
        MPQ_MPI_TRY(MPI_Comm_set_errhandler(c->node_comm, MPI_ERRORS_RETURN));
        MPQ_MPI_TRY(MPI_Comm_rank(c->node_comm, &c->node_rank));
        MPQ_MPI_TRY(MPI_Comm_size(c->node_comm, &c->node_size));
    }
    MPQ_TRY(mpq_timers_create_(c, &c->timers));
    *out = c;
    return MPQ_OK;
cleanup:
    fprintf(stderr, "mpquant: %s\n", c->err_msg);
    mpq_ctx_destroy(&c);
    return err;
}

void mpq_ctx_destroy(mpq_ctx **pctx) {
    if (!pctx || !*pctx)
        return;
    mpq_ctx *c = *pctx;
    mpq_event_close(c);
    mpq_timers_destroy_(&c->timers);
    if (c->node_comm != MPI_COMM_NULL)
        MPI_Comm_free(&c->node_comm);
    if (c->comm != MPI_COMM_NULL)
        MPI_Comm_free(&c->comm);
    free(c);
    *pctx = NULL;
}

/* ---- allocation ---------------------------------------------------------- */

#define MPQ_ALIGN     64
#define MPQ_HUGE_PAGE ((size_t)2 << 20)
#define MPQ_HUGE_MIN  ((size_t)32 << 20)

/* The allocation of mpq_malloc, zeroed (zero = 1) or left as it comes. */
static mpq_err alloc_aligned(mpq_ctx *ctx, int64_t n, size_t elsize, int zero, void **out) {
    *out = NULL;
    MPQ_CHECK(n >= 0, MPQ_ERR_NOMEM, "allocation of a negative count (%lld) of %zu-byte elements",
              (long long)n, elsize);
    MPQ_CHECK(elsize == 0 || (uint64_t)n <= (SIZE_MAX - MPQ_ALIGN) / elsize, MPQ_ERR_NOMEM,
              "allocation of %lld x %zu bytes overflows size_t", (long long)n, elsize);
    size_t bytes = (size_t)n * elsize;
    size_t rounded = (bytes + MPQ_ALIGN - 1) / MPQ_ALIGN * MPQ_ALIGN;
    if (rounded == 0)
        rounded = MPQ_ALIGN;
    if (ctx->alloc_fail_countdown >= 0) {
        if (ctx->alloc_fail_countdown == 0) {
            ctx->alloc_fail_countdown = -1;
            return MPQ_ERROR(MPQ_ERR_NOMEM,
                             "out of memory allocating %lld x %zu bytes (test allocator: an "
                             "injected failure, MPQ_FAULT_ALLOC)",
                             (long long)n, elsize);
        }
        ctx->alloc_fail_countdown--;
    }
    /* Large buffers (factors, H, a layer's weights) on 2 MiB boundaries,
     * offered to the kernel as transparent huge pages: first touching a
     * GiB-sized matrix then costs 512 times fewer page faults. */
    const int huge = rounded >= MPQ_HUGE_MIN;
    if (huge)
        rounded = (rounded + MPQ_HUGE_PAGE - 1) / MPQ_HUGE_PAGE * MPQ_HUGE_PAGE;
    void *p = aligned_alloc(huge ? MPQ_HUGE_PAGE : MPQ_ALIGN, rounded);
    MPQ_CHECK(p, MPQ_ERR_NOMEM, "out of memory allocating %zu bytes (%.3f GiB)", bytes,
              (double)bytes / (1024.0 * 1024.0 * 1024.0));
#ifdef MADV_HUGEPAGE
    if (huge)
        (void)madvise(p, rounded, MADV_HUGEPAGE); /* advice only: failure changes nothing */
#endif
    if (zero)
        memset(p, 0, rounded);
    *out = p;
    return MPQ_OK;
}

mpq_err mpq_malloc(mpq_ctx *ctx, int64_t n, size_t elsize, void **out) {
    return alloc_aligned(ctx, n, elsize, 1, out);
}

mpq_err mpq_malloc_raw(mpq_ctx *ctx, int64_t n, size_t elsize, void **out) {
    return alloc_aligned(ctx, n, elsize, 0, out);
}

mpq_err mpq_realloc(mpq_ctx *ctx, int64_t old_n, int64_t new_n, size_t elsize, void **p) {
    void *q = NULL;
    MPQ_CALL(mpq_malloc(ctx, new_n, elsize, &q));
    int64_t keep = old_n < new_n ? old_n : new_n;
    if (*p && keep > 0)
        memcpy(q, *p, (size_t)keep * elsize);
    free(*p);
    *p = q;
    return MPQ_OK;
}

void mpq_free(void *p) {
    free(p);
}

mpq_err mpq_strdup(mpq_ctx *ctx, const char *s, char **out) {
    size_t n = strlen(s) + 1;
    MPQ_CALL(mpq_malloc(ctx, (int64_t)n, 1, (void **)out));
    memcpy(*out, s, n);
    return MPQ_OK;
}

void mpq_alloc_fail_after(mpq_ctx *ctx, int64_t successes) {
    ctx->alloc_fail_countdown = successes;
}

/* ---- checked arithmetic -------------------------------------------------- */

mpq_err mpq_to_int(mpq_ctx *ctx, int64_t v, const char *what, int *out) {
    MPQ_CHECK(v >= INT_MIN && v <= INT_MAX, MPQ_ERR_RANGE,
              "%s = %lld does not fit in a C int (MPI/ScaLAPACK limit)", what, (long long)v);
    *out = (int)v;
    return MPQ_OK;
}

mpq_err mpq_mul64(mpq_ctx *ctx, int64_t a, int64_t b, const char *what, int64_t *out) {
    MPQ_CHECK(a >= 0 && b >= 0, MPQ_ERR_RANGE, "%s: negative factor (%lld x %lld)", what,
              (long long)a, (long long)b);
    MPQ_CHECK(a == 0 || b <= INT64_MAX / a, MPQ_ERR_RANGE, "%s: %lld x %lld overflows 64 bits",
              what, (long long)a, (long long)b);
    *out = a * b;
    return MPQ_OK;
}

mpq_err mpq_add64(mpq_ctx *ctx, int64_t a, int64_t b, const char *what, int64_t *out) {
    MPQ_CHECK(a >= 0 && b >= 0, MPQ_ERR_RANGE, "%s: negative term (%lld + %lld)", what,
              (long long)a, (long long)b);
    MPQ_CHECK(a <= INT64_MAX - b, MPQ_ERR_RANGE, "%s: %lld + %lld overflows 64 bits", what,
              (long long)a, (long long)b);
    *out = a + b;
    return MPQ_OK;
}

/* ---- MPI ------------------------------------------------------------------- */

mpq_err mpq_mpi_check(mpq_ctx *ctx, int rc, const char *call, const char *file, int line,
                      const char *func) {
    if (rc == MPI_SUCCESS)
        return MPQ_OK;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", rc);
    return mpq_err_raise(ctx, MPQ_ERR_MPI, file, line, func, "%s failed: %s", call, text);
}
