/* coll.c: every MPI collective helper of mpquant: error agreement, byte
 * broadcasts, exact sums of owned values, compressed sums with error
 * feedback and the 2-D process grid. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_scalapack.h"

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

/* In-place all-reduce of n elements of `type` with `op`, in pieces whose
 * count fits an int, whatever n is. */
static mpq_err allreduce_pieces(mpq_ctx *ctx, void *buf, int64_t n, MPI_Datatype type, MPI_Op op,
                                const char *what) {
    int size = 0;
    MPQ_MPI(MPI_Type_size(type, &size));
    const int64_t piece = (int64_t)1 << 28;
    for (int64_t off = 0; off < n; off += piece) {
        int cnt;
        MPQ_CALL(mpq_to_int(ctx, n - off < piece ? n - off : piece, what, &cnt));
        MPQ_MPI(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)off * (size_t)size, cnt, type, op,
                              ctx->comm));
    }
    return MPQ_OK;
}

mpq_err mpq_sum_owned(mpq_ctx *ctx, void *buf, int64_t n, MPI_Datatype type, const char *what) {
    if (ctx->comm == MPI_COMM_NULL || ctx->size == 1 || n <= 0)
        return MPQ_OK;
    MPQ_CALL(allreduce_pieces(ctx, buf, n, type, MPI_SUM, what));
    return MPQ_OK;
}

/* ---- compressed sums with error feedback ---------------------------------- */

/* Codes summed per MPI call: whole blocks, at most 4 MiB of int32 codes. */
#define EF_PIECE ((int64_t)1 << 20)

static int64_t ef_nblocks(int64_t n) {
    return (n + MPQ_EF_BLOCK - 1) / MPQ_EF_BLOCK;
}

mpq_err mpq_ef_create(mpq_ctx *ctx, int64_t n, int feedback, mpq_ef **out) {
    *out = NULL;
    MPQ_CHECK(n >= 0, MPQ_ERR_ARG, "a compressed sum of %lld elements", (long long)n);
    mpq_ef *ef = NULL;
    MPQ_ALLOC(ef, 1);
    ef->n = n;
    ef->feedback = feedback;
    ef->wide = ctx->size > MPQ_EF_MAX_RANKS16;
    mpq_err err = MPQ_OK;
    /* one rank sums nothing: no residual, no codes */
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1 && n > 0) {
        MPQ_ALLOC_TRY(ef->res, n);
        MPQ_ALLOC_TRY(ef->scale, ef_nblocks(n));
        MPQ_TRY(mpq_malloc(ctx, n < EF_PIECE ? n : EF_PIECE,
                           ef->wide ? sizeof(int32_t) : sizeof(int16_t), &ef->codes));
    }
    *out = ef;
    return MPQ_OK;
cleanup:
    mpq_ef_destroy(&ef);
    return err;
}

void mpq_ef_destroy(mpq_ef **pef) {
    if (!pef || !*pef)
        return;
    mpq_free((*pef)->res);
    mpq_free((*pef)->scale);
    mpq_free((*pef)->codes);
    mpq_free(*pef);
    *pef = NULL;
}

/* Local. v = in + residual into ef->res, and each block's largest |v|
 * into ef->scale (infinite where a v is not finite, so that every rank
 * sees it after the all-reduce). */
static void ef_prepare(mpq_ef *ef, const double *in) {
    for (int64_t b = 0; b < ef_nblocks(ef->n); b++) {
        const int64_t k0 = b * MPQ_EF_BLOCK;
        const int64_t k1 = k0 + MPQ_EF_BLOCK < ef->n ? k0 + MPQ_EF_BLOCK : ef->n;
        double m = 0.0;
        for (int64_t k = k0; k < k1; k++) {
            const double v = in[k] + (ef->feedback ? ef->res[k] : 0.0);
            ef->res[k] = v;
            m = !isfinite(v) ? INFINITY : fabs(v) > m ? fabs(v) : m;
        }
        ef->scale[b] = m;
    }
}

/* Local. The codes of elements [p0, p1) into ef->codes, round(v / s) in
 * [-127, 127] with s = block max / 127, and what they leave out into the
 * residual. */
static void ef_encode(mpq_ef *ef, int64_t p0, int64_t p1) {
    for (int64_t k = p0; k < p1; k++) {
        const double s = ef->scale[k / MPQ_EF_BLOCK];
        long q = s > 0.0 ? lround(ef->res[k] / s) : 0;
        q = q > 127 ? 127 : q < -127 ? -127 : q;
        ef->res[k] = ef->feedback ? ef->res[k] - (double)q * s : 0.0;
        if (ef->wide)
            ((int32_t *)ef->codes)[k - p0] = (int32_t)q;
        else
            ((int16_t *)ef->codes)[k - p0] = (int16_t)q;
    }
}

mpq_err mpq_ef_sum(mpq_ctx *ctx, mpq_ef *ef, const double *in, double *out, const char *what) {
    const int64_t n = ef->n, nb = ef_nblocks(n);
    if (ctx->comm == MPI_COMM_NULL || ctx->size == 1 || n == 0) {
        if (out != in && n > 0)
            memmove(out, in, (size_t)n * sizeof *out);
        return MPQ_OK;
    }
    ef_prepare(ef, in);
    MPQ_CALL(allreduce_pieces(ctx, ef->scale, nb, MPI_DOUBLE, MPI_MAX, what));
    for (int64_t b = 0; b < nb; b++) {
        MPQ_CHECK(isfinite(ef->scale[b]), MPQ_ERR_NUMERIC,
                  "%s: a value among elements %lld to %lld is not finite on some rank", what,
                  (long long)(b * MPQ_EF_BLOCK),
                  (long long)((b + 1) * MPQ_EF_BLOCK < n ? (b + 1) * MPQ_EF_BLOCK : n) - 1);
        ef->scale[b] /= 127.0;
    }
    const MPI_Datatype type = ef->wide ? MPI_INT32_T : MPI_INT16_T;
    for (int64_t p0 = 0; p0 < n; p0 += EF_PIECE) {
        const int64_t p1 = n - p0 < EF_PIECE ? n : p0 + EF_PIECE;
        ef_encode(ef, p0, p1);
        /* integers: the sum is exact, the same bits on every rank */
        MPQ_CALL(allreduce_pieces(ctx, ef->codes, p1 - p0, type, MPI_SUM, what));
        for (int64_t k = p0; k < p1; k++) {
            const double q = ef->wide ? (double)((int32_t *)ef->codes)[k - p0]
                                      : (double)((int16_t *)ef->codes)[k - p0];
            out[k] = q * ef->scale[k / MPQ_EF_BLOCK];
        }
    }
    ef->nmsg++;
    ef->sent += (size_t)nb * sizeof(double) + (size_t)n * (ef->wide ? 4 : 2);
    ef->exact += (size_t)n * sizeof(double);
    return MPQ_OK;
}

/* ---- process grid -------------------------------------------------------- */

mpq_err mpq_grid_create(mpq_ctx *ctx, int nprow, int npcol, mpq_grid **out) {
    *out = NULL;
    MPQ_CHECK(ctx->comm != MPI_COMM_NULL, MPQ_ERR_ARG, "a process grid needs an MPI context");
    MPQ_CALL(mpq_grid_create_range(ctx, 0, ctx->size, nprow, npcol, out));
    return MPQ_OK;
}

mpq_err mpq_grid_create_range(mpq_ctx *ctx, int first, int count, int nprow, int npcol,
                              mpq_grid **out) {
    *out = NULL;
    MPQ_CHECK(ctx->comm != MPI_COMM_NULL, MPQ_ERR_ARG, "a process grid needs an MPI context");
    MPQ_CHECK(first >= 0 && count >= 1 && count <= ctx->size - first, MPQ_ERR_ARG,
              "a process grid over ranks [%d, %d) of %d", first, first + count, ctx->size);
    if (nprow <= 0 || npcol <= 0) {
        nprow = 1;
        for (int r = 1; r * r <= count; r++)
            if (count % r == 0)
                nprow = r;
        npcol = count / nprow;
    }
    MPQ_CHECK((int64_t)nprow * npcol <= count, MPQ_ERR_ARG,
              "a %d x %d process grid needs %d ranks but only %d exist", nprow, npcol,
              nprow * npcol, count);
    mpq_grid *g = calloc(1, sizeof *g);
    MPQ_CHECK(g, MPQ_ERR_NOMEM, "cannot allocate a process grid");
    g->nprow = nprow;
    g->npcol = npcol;
    g->row_comm = MPI_COMM_NULL;
    g->col_comm = MPI_COMM_NULL;
    g->blacs_ctxt = -1;
    g->first = first;
    const int me = ctx->rank - first;
    int inside = me >= 0 && me < nprow * npcol;
    g->myrow = inside ? me / npcol : -1;
    g->mycol = inside ? me % npcol : -1;
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
