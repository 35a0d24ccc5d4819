/* mpq_coll.h: the collective helpers every layer uses (one module,
 * pipeline/runtime/coll.c): error agreement, broadcasts of byte buffers,
 * exact sums of values owned by one rank each, compressed sums with error
 * feedback, and the 2-D process grid of ScaLAPACK. Every function here is
 * collective over ctx->comm unless it says otherwise; a serial context
 * (MPI_COMM_NULL) makes each a no-op. */
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

/* ---- compressed sums with error feedback -------------------------------- */

/* A vector of n doubles summed over ranks many times (the same n every
 * time), sent as 8-bit codes with one scale per block of MPQ_EF_BLOCK
 * elements, agreed over the ranks (the largest |value| of the block on any
 * rank / 127). What a rank's codes leave out (value - code x scale) is kept
 * in its residual and added to its next message (error feedback), so the
 * decoded sums accumulated over many messages stay within size / 2 quanta
 * per element of the exact ones instead of drifting.
 * The codes are summed as 16-bit integers (32-bit above
 * MPQ_EF_MAX_RANKS16 ranks): the sum is exact, so every rank gets the same
 * bits whatever the reduction order, and a run repeats them; but the codes
 * depend on how the values are split over the ranks, so results differ
 * from one rank count to another. On one rank (or MPI_COMM_NULL) nothing
 * is quantized: the sum is the identity. */
#define MPQ_EF_BLOCK       256
#define MPQ_EF_MAX_RANKS16 258 /* 127 x 258 fits an int16 */
typedef struct mpq_ef {
    int64_t n;     /* elements per message */
    int feedback;  /* 0: the residual is dropped after each message (plain int8) */
    int wide;      /* codes summed as int32 (more than MPQ_EF_MAX_RANKS16 ranks) */
    double *res;   /* [n] this rank's residual, then v = input + residual */
    double *scale; /* [ceil(n / MPQ_EF_BLOCK)] agreed block scales of one message */
    void *codes;   /* [min(n, piece)] int16_t or int32_t codes being summed */
    int64_t nmsg;  /* messages summed (on more than one rank) */
    size_t sent;   /* bytes this rank sent: codes and scales */
    size_t exact;  /* bytes the exact sum of doubles would have sent (8 per element) */
} mpq_ef;

/* Local. A state for messages of n elements (n >= 0), residual zero;
 * feedback = 0 drops the residual (tests show the difference). Memory: 8
 * bytes per element plus 1/32 for the scales, plus at most 4 MiB of codes,
 * on more than one rank (one rank: nothing). Owner: caller
 * (mpq_ef_destroy). */
mpq_err mpq_ef_create(mpq_ctx *ctx, int64_t n, int feedback, mpq_ef **out);
/* Local. NULL-safe; sets *ef to NULL. */
void mpq_ef_destroy(mpq_ef **ef);
/* Collective: every rank passes its n values `in`; `out` (may be `in`)
 * gets the decoded sum, the same bits on every rank. A value that is not
 * finite on any rank is MPQ_ERR_NUMERIC on every rank (naming `what` and
 * the element), and the residual is then no longer meaningful. */
mpq_err mpq_ef_sum(mpq_ctx *ctx, mpq_ef *ef, const double *in, double *out, const char *what);

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
