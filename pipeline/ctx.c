/* ctx.c: context creation, error agreement, checked allocation and casts,
 * MPI helpers and the 2-D process grid. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_ctx.h"
#include "mpq_scalapack.h"

mpq_err mpq_timers_create_(mpq_ctx *ctx, mpq_timers **out);
void mpq_timers_destroy_(mpq_timers **t);

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

mpq_err mpq_agree(mpq_ctx *ctx, mpq_err local) {
    if (ctx->comm == MPI_COMM_NULL || ctx->size == 1) {
        if (local != MPQ_OK && ctx->err_rank < 0)
            ctx->err_rank = ctx->rank;
        return local;
    }
    /* Lowest failing rank (INT_MAX when none). */
    int mine = local != MPQ_OK ? ctx->rank : INT_MAX, first = INT_MAX;
    int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, ctx->comm);
    if (rc != MPI_SUCCESS)
        return mpq_mpi_check(ctx, rc, "MPI_Allreduce(error flag)", __FILE__, __LINE__, __func__);
    if (first == INT_MAX)
        return MPQ_OK;
    /* The failing rank broadcasts code, message and traceback. */
    struct {
        int code;
        int origin; /* rank that raised the error (an earlier agreement may have
                       copied another rank's error here) */
        char msg[MPQ_ERRMSG_MAX];
        char trace[MPQ_TRACE_MAX];
    } report;
    memset(&report, 0, sizeof report);
    if (ctx->rank == first) {
        report.code = (int)local;
        report.origin = ctx->err_rank >= 0 ? ctx->err_rank : ctx->rank;
        memcpy(report.msg, ctx->err_msg, sizeof report.msg);
        memcpy(report.trace, ctx->err_trace, sizeof report.trace);
        if (!report.msg[0])
            snprintf(report.msg, sizeof report.msg, "%s", mpq_err_name(local));
    }
    rc = MPI_Bcast(&report, (int)sizeof report, MPI_BYTE, first, ctx->comm);
    if (rc != MPI_SUCCESS)
        return mpq_mpi_check(ctx, rc, "MPI_Bcast(error report)", __FILE__, __LINE__, __func__);
    ctx->err_code = (mpq_err)report.code;
    ctx->err_rank = report.origin;
    report.msg[sizeof report.msg - 1] = '\0';
    report.trace[sizeof report.trace - 1] = '\0';
    memcpy(ctx->err_msg, report.msg, sizeof ctx->err_msg);
    memcpy(ctx->err_trace, report.trace, sizeof ctx->err_trace);
    return ctx->err_code != MPQ_OK ? ctx->err_code : MPQ_ERR_REMOTE;
}

/* ---- allocation ---------------------------------------------------------- */

#define MPQ_ALIGN 64

mpq_err mpq_malloc(mpq_ctx *ctx, int64_t n, size_t elsize, void **out) {
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
            return MPQ_ERROR(MPQ_ERR_NOMEM, "out of memory allocating %zu bytes (test allocator)",
                             bytes);
        }
        ctx->alloc_fail_countdown--;
    }
    void *p = aligned_alloc(MPQ_ALIGN, rounded);
    MPQ_CHECK(p, MPQ_ERR_NOMEM, "out of memory allocating %zu bytes (%.3f GiB)", bytes,
              (double)bytes / (1024.0 * 1024.0 * 1024.0));
    memset(p, 0, rounded);
    *out = p;
    return MPQ_OK;
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

mpq_err mpq_bcast_bytes(mpq_ctx *ctx, int root, char **buf, int64_t *len) {
    if (ctx->comm == MPI_COMM_NULL || ctx->size == 1)
        return MPQ_OK;
    int64_t n = ctx->rank == root ? *len : 0;
    MPQ_MPI(MPI_Bcast(&n, 1, MPI_INT64_T, root, ctx->comm));
    mpq_err err = MPQ_OK;
    if (ctx->rank != root) {
        *buf = NULL;
        err = mpq_malloc(ctx, n + 1, 1, (void **)buf);
        *len = n;
    }
    /* Every rank must be able to receive before the data moves. */
    MPQ_CALL(mpq_agree(ctx, err));
    const int64_t piece = (int64_t)1 << 30;
    for (int64_t off = 0; off < n; off += piece) {
        int64_t m = n - off < piece ? n - off : piece;
        MPQ_MPI(MPI_Bcast(*buf + off, (int)m, MPI_BYTE, root, ctx->comm));
    }
    return MPQ_OK;
}

/* ---- process grid -------------------------------------------------------- */

mpq_err mpq_grid_create(mpq_ctx *ctx, int nprow, int npcol, mpq_grid **out) {
    *out = NULL;
    MPQ_CHECK(ctx->comm != MPI_COMM_NULL, MPQ_ERR_ARG, "a process grid needs an MPI context");
    if (nprow <= 0 || npcol <= 0) {
        nprow = 1;
        for (int r = 1; r * r <= ctx->size; r++)
            if (ctx->size % r == 0)
                nprow = r;
        npcol = ctx->size / nprow;
    }
    MPQ_CHECK((int64_t)nprow * npcol <= ctx->size, MPQ_ERR_ARG,
              "a %d x %d process grid needs %d ranks but only %d exist", nprow, npcol,
              nprow * npcol, ctx->size);
    mpq_grid *g = calloc(1, sizeof *g);
    MPQ_CHECK(g, MPQ_ERR_NOMEM, "cannot allocate a process grid");
    g->nprow = nprow;
    g->npcol = npcol;
    g->row_comm = MPI_COMM_NULL;
    g->col_comm = MPI_COMM_NULL;
    g->blacs_ctxt = -1;
    int inside = ctx->rank < nprow * npcol;
    g->myrow = inside ? ctx->rank / npcol : -1;
    g->mycol = inside ? ctx->rank % npcol : -1;
    mpq_err err = MPQ_OK;
    MPQ_MPI_TRY(
        MPI_Comm_split(ctx->comm, inside ? g->myrow : MPI_UNDEFINED, g->mycol, &g->row_comm));
    MPQ_MPI_TRY(
        MPI_Comm_split(ctx->comm, inside ? g->mycol : MPI_UNDEFINED, g->myrow, &g->col_comm));
    /* BLACS context over the grid's own ranks (never MPI_COMM_WORLD);
     * gridinit is collective over the ranks of the system handle. Ranks
     * outside the grid do not call BLACS at all: on a rank left out of
     * every grid BLACS allocates its global request and status buffers
     * again at each gridinit and loses the previous ones. */
    MPI_Comm members = MPI_COMM_NULL;
    MPQ_MPI_TRY(MPI_Comm_split(ctx->comm, inside ? 0 : MPI_UNDEFINED, ctx->rank, &members));
    if (inside) {
        int handle = Csys2blacs_handle(members);
        int ctxt = handle;
        Cblacs_gridinit(&ctxt, "Row", nprow, npcol);
        Cfree_blacs_system_handle(handle);
        MPI_Comm_free(&members);
        g->blacs_ctxt = ctxt; /* released by mpq_grid_destroy, also on the error below */
        int pr, pc, r, c;
        Cblacs_gridinfo(ctxt, &pr, &pc, &r, &c);
        MPQ_ENSURE(pr == nprow && pc == npcol && r == g->myrow && c == g->mycol, MPQ_ERR_LIB,
                   "BLACS grid %dx%d at (%d,%d) differs from the requested %dx%d at (%d,%d)", pr,
                   pc, r, c, nprow, npcol, g->myrow, g->mycol);
    }
    *out = g;
    return MPQ_OK;
cleanup:
    mpq_grid_destroy(ctx, &g);
    return err;
}

void mpq_grid_destroy(mpq_ctx *ctx, mpq_grid **pg) {
    (void)ctx;
    if (!pg || !*pg)
        return;
    mpq_grid *g = *pg;
    if (g->blacs_ctxt >= 0)
        Cblacs_gridexit(g->blacs_ctxt);
    if (g->row_comm != MPI_COMM_NULL)
        MPI_Comm_free(&g->row_comm);
    if (g->col_comm != MPI_COMM_NULL)
        MPI_Comm_free(&g->col_comm);
    free(g);
    *pg = NULL;
}
