/* mpq_coll.h: the collective helpers every layer uses (one module,
 * pipeline/runtime/coll.c): error agreement, broadcasts of byte buffers,
 * exact sums of values owned by one rank each, and the 2-D process grid of
 * ScaLAPACK. Every function here is collective over ctx->comm unless it
 * says otherwise; a serial context (MPI_COMM_NULL) makes each a no-op. */
#ifndef MPQ_COLL_H
#define MPQ_COLL_H

#include <stdint.h>

#include "mpq_ctx.h"

/* Collective: every rank passes its local status; returns MPQ_OK on all ranks
 * if all passed MPQ_OK. Otherwise the message and traceback of the lowest
 * failing rank are copied into every rank's context (err_rank set) and all
 * ranks return that rank's code. Call before every collective that follows
 * work that may fail on some ranks only. */
mpq_err mpq_agree(mpq_ctx *ctx, mpq_err local);

/* Collective broadcast of a byte buffer of any length from root (lengths
 * above INT_MAX are sent in pieces). On non-root ranks *buf is allocated
 * with mpq_malloc (plus a terminating NUL) and *len set. */
mpq_err mpq_bcast_bytes(mpq_ctx *ctx, int root, char **buf, int64_t *len);

/* In-place sum over ranks of n elements of an MPI type, where every
 * element has at most one non-zero contributor: the sum is then exact
 * whatever the reduction order, so results do not depend on the rank
 * count. n may exceed INT_MAX (sent in pieces). `what` names the data in
 * errors. */
mpq_err mpq_sum_owned(mpq_ctx *ctx, void *buf, int64_t n, MPI_Datatype type, const char *what);

/* ---- 2-D process grid --------------------------------------------------- */

typedef struct mpq_grid {
    int nprow, npcol;  /* grid shape */
    int myrow, mycol;  /* this rank's coordinates (-1 if outside the grid) */
    MPI_Comm row_comm; /* ranks of my grid row */
    MPI_Comm col_comm; /* ranks of my grid column */
    int blacs_ctxt;    /* BLACS context (-1 if outside the grid) */
    int first;         /* rank of grid process (0, 0); process (r, c) is rank first + r npcol + c */
} mpq_grid;

/* Collective over ctx->comm. Builds an nprow x npcol row-major grid over the
 * first nprow*npcol ranks (nprow = npcol = 0: the squarest grid using all
 * ranks). Ranks beyond the grid get myrow = mycol = -1. Owner: caller. */
mpq_err mpq_grid_create(mpq_ctx *ctx, int nprow, int npcol, mpq_grid **out);
/* Collective over ctx->comm. The same over the ranks [first, first + count)
 * alone (nprow = npcol = 0: the squarest grid using all count of them). */
mpq_err mpq_grid_create_range(mpq_ctx *ctx, int first, int count, int nprow, int npcol,
                              mpq_grid **out);
/* Collective. NULL-safe. */
void mpq_grid_destroy(mpq_ctx *ctx, mpq_grid **grid);

#endif
