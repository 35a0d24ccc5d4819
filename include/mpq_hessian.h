/* mpq_hessian.h: Hessian statistics of layer inputs, their exact
 * rank-independent reduction, damped factorisations (LAPACK on one rank or
 * ScaLAPACK over a process grid) and HDF5 save/load.
 *
 * ---- What is measured ----------------------------------------------------
 * For one distinct layer input of width d (q/k/v share one, gate/up share
 * one), over all calibration tokens x (rows of the input matrix X [rows][d]):
 *   H[i][j]   = sum x_i x_j      (d x d, double, symmetric)
 *   count     = number of rows (int64)
 *   sumsq[i]  = sum x_i^2  (= H[i][i]; mean of squares = sumsq / count)
 *   absmax[i] = max |x_i|
 *
 * ---- Exact, rank-independent reduction ------------------------------------
 * Calibration samples are grouped into chunks of a fixed number of samples
 * (hessian.chunk_samples); a chunk's rows go through fixed forward units,
 * and every panel of its partial is folded by one rank from all its rows
 * (one rank for the whole chunk, or several sharing it: mpq_hshare).
 * Within a chunk, rows are buffered in double until end_chunk, which forms
 * the chunk partial X^T X panel by panel of MPQ_HSTAT_PANEL columns (one
 * DGEMM over all the chunk's rows per panel, into a panel-sized scratch).
 * The chunk partial therefore depends only on the chunk's rows (not on the
 * rank, nor on how the caller split the rows into accumulate calls). Every
 * entry of a panel's upper triangle is rounded (to nearest, ties to even)
 * onto a fixed-point grid
 * with spacing 2^lsb_exp and added to a 192-bit two's-complement integer
 * accumulator (3 x 64-bit words per entry). Integer addition is exact and
 * associative, so the final sum, over ranks by MPI_Reduce/MPI_Allreduce
 * with an integer-addition operator, has the same bits for any number of
 * ranks and any assignment of chunks to ranks. The integer is rounded to
 * double once at the end.
 *
 * Range limits. The grid is fixed per statistic from a bound on the inputs:
 * |x| <= 2^b with b = hessian.bound_log2 (default 16). Then every partial
 * and total satisfies |H_ij| <= count * 2^(2b) < 2^(2b+63), and the grid is
 * lsb_exp = 2b - 127, which leaves one bit of headroom in 191 magnitude
 * bits. A row with |x| > 2^b is rejected (MPQ_ERR_RANGE naming the layer
 * and channel), as is a NaN/Inf (MPQ_ERR_NUMERIC). Resolution: each chunk
 * partial entry is perturbed by at most 2^(2b-128) absolute (2^-96 for
 * b = 16), far below double rounding for entries above ~2^(2b-75).
 * Assumption: the BLAS gives the same DGEMM bits for the same arguments
 * on every rank (same library and CPU kernel; mpquant runs OpenBLAS with
 * one thread per rank). Ranks on different CPU types with a dynamic-arch
 * BLAS could break bit-identity (not the accuracy).
 * Memory per statistic while accumulating: 24 bytes * d(d+1)/2 for the
 * accumulator, 8 d for each row of the open chunk, 8 d * MPQ_HSTAT_PANEL
 * for the panel; then 8 d^2 for H where it is materialised: with
 * mpq_hstat_reduce_set only on the ranks that own it (the rounding of a
 * block reduces each input's H to the ranks that round its layers).
 *
 * ---- Factorisations ------------------------------------------------------
 * Given H (d x d) and relative damping lambda: dead channels (H_ii == 0)
 * get H_ii = 1 and are reported (the caller decides what to do with the
 * matching weight columns; the rounding methods round them to nearest, as
 * no calibration input reaches them); then lambda * mean(diag H) is added to the
 * diagonal; Cholesky. If Cholesky (of H or of H^-1) fails, the damping is
 * multiplied by 10 (starting from 1e-6 when it was 0) and the attempt
 * repeated while it stays <= damping_max, each retry logged at warn level;
 * then MPQ_ERR_NUMERIC naming the layer. Outputs (row-major d x d on the
 * root): chol = R upper with Hd = R^T R, inv = Hd^-1 (both triangles),
 * inv_chol = U upper with Hd^-1 = U^T U (requested alone, U = J R'^-T J
 * from the Cholesky factor R' of the reversed J Hd J, without Hd^-1),
 * rchol = V upper with Hd = V V^T (what GPTQ needs; requested alone, V =
 * J R'^T J = U^-1: one Cholesky, no inverse).
 * Backends (a registry): "lapack" (dpotrf/dpotri on the root) and
 * "scalapack" (H block-cyclic over a BLACS grid, pdpotrf/pdpotri/pdpotrf;
 * scattered from and gathered to the root with MPI). hessian.scalapack =
 * auto picks ScaLAPACK for d >= hessian.scalapack_min_width.
 *
 * ---- HDF5 layout (format version 1) --------------------------------------
 *   /                 attrs format = "mpquant-hstats", version = 1 (int32),
 *                     n_layers (int64), creator = "mpquant <ver> <commit>"
 *   /<name>/          one group per layer input; attrs name (string),
 *                     index (int64, order of the save call), width (int64),
 *                     bound_log2 (int32)
 *   /<name>/H         float64 [width][width] (row-major, symmetric)
 *   /<name>/count     int64 scalar
 *   /<name>/sumsq     float64 [width]
 *   /<name>/absmax    float64 [width]
 * Written collectively (MPI-IO) to "<path>.tmp", renamed by rank 0 when
 * every rank has closed it.
 */
#ifndef MPQ_HESSIAN_H
#define MPQ_HESSIAN_H

#include <stdint.h>

#include "mpq_err.h"
#include "mpq_registry.h"

struct mpq_ctx;
struct mpq_config;

#define MPQ_HSTAT_NAME_MAX 160
#define MPQ_HSTAT_PANEL    256  /* columns per GEMM panel of a chunk (fixed: part of the bits) */
#define MPQ_HSTAT_ALL      (-1) /* reduce/load target: every rank */
#define MPQ_HSTAT_LOCAL    (-2) /* mpq_hstat_create_at: each rank accumulates its own sum */

/* Statistics of one layer input. Fields are public for reading. */
typedef struct mpq_hstat {
    char name[MPQ_HSTAT_NAME_MAX]; /* layer input name (no '/'), e.g. "layers.0.attn_in" */
    int64_t d;                     /* width */
    int bound_log2;                /* inputs satisfy |x| <= 2^bound_log2 */
    int lsb_exp;                   /* fixed-point grid spacing 2^lsb_exp */

    /* Before mpq_hstat_reduce: this rank's partial count and absmax.
     * After: global values, identical on every rank. */
    int64_t count;   /* rows (tokens) */
    double *absmax;  /* [d] max |x_i| */
    int64_t nchunks; /* chunks folded in (local before reduce, global after) */

    /* After reduce/load: H on the target rank(s) only (else NULL); sumsq
     * on every rank after a reduction, on the target rank(s) after a load. */
    double *H;     /* [d][d] symmetric, both triangles */
    double *sumsq; /* [d] sum of x_i^2 (= diag H, the same bits) */
    int reduced;

    /* Private accumulation state. */
    int root;           /* rank summing every chunk as it ends, or MPQ_HSTAT_LOCAL */
    uint64_t *acc;      /* [d(d+1)/2][3] packed upper triangle, column by column (not
                           on the other ranks of a streamed statistic) */
    uint64_t *fxbuf;    /* streamed, not root: one panel's entries on their way out */
    uint64_t *fxmore;   /* streamed, not root, shared chunks: a second panel, and zeros */
    double *part;       /* [MPQ_HSTAT_PANEL][<= d] column-major panel of the chunk partial */
    double *rowbuf;     /* [rowbuf_cap][d] the open chunk's rows, in double */
    int64_t rowbuf_n;   /* rows in rowbuf */
    int64_t rowbuf_cap; /* rows rowbuf has room for */
    int64_t chunk_rows; /* rows in the open chunk */
    int64_t folded;     /* chunk panels this rank folded (local, never reduced) */
    int in_chunk;
} mpq_hstat;

/* Local. A new, empty statistic for an input of width d with the bound
 * |x| <= 2^bound_log2 (-60..60). name must be non-empty, without '/', and
 * shorter than MPQ_HSTAT_NAME_MAX. Owner: caller (mpq_hstat_destroy). */
mpq_err mpq_hstat_create(struct mpq_ctx *ctx, const char *name, int64_t d, int bound_log2,
                         mpq_hstat **out);
/* Local. Like mpq_hstat_create, and with root >= 0 (and more than one
 * rank) the statistic is streamed: each chunk's fixed-point partial is
 * summed onto rank root as the chunk ends, so only root holds the 24-byte
 * accumulator entries and every other rank one panel of them (24 x 256 x d
 * bytes at most). mpq_hstat_end_chunk is then collective: every rank calls
 * it the same number of times, with or without rows. The bits of H do not
 * change. root = MPQ_HSTAT_LOCAL: mpq_hstat_create. */
mpq_err mpq_hstat_create_at(struct mpq_ctx *ctx, const char *name, int64_t d, int bound_log2,
                            int root, mpq_hstat **out);
/* Local. NULL-safe; sets *st to NULL. */
void mpq_hstat_destroy(mpq_hstat **st);

/* Local. Opens a chunk (one fixed group of calibration samples). */
mpq_err mpq_hstat_begin_chunk(struct mpq_ctx *ctx, mpq_hstat *st);
/* Local. Adds rows of x [rows][d] (row-major fp32) to the open chunk. The
 * split of a chunk's rows into calls does not change any bit. Checks the
 * bound and NaN/Inf (errors name the layer, row and channel). */
mpq_err mpq_hstat_accumulate(struct mpq_ctx *ctx, mpq_hstat *st, const float *x, int64_t rows,
                             int64_t d);
/* Local (collective when streamed, see mpq_hstat_create_at; errors are then
 * agreed). Closes the chunk and folds its partial exactly into the
 * fixed-point accumulator. An empty chunk is allowed (adds nothing). */
mpq_err mpq_hstat_end_chunk(struct mpq_ctx *ctx, mpq_hstat *st);

/* A chunk shared by several ranks (mpq_calibrate.h): each accumulates the
 * rows it computed, the rows go to the ranks that fold, and each of those
 * folds some of the panels of MPQ_HSTAT_PANEL columns. Every panel's
 * partial is the same GEMM over all the chunk's rows whichever rank
 * computes it, and the fixed-point sums are exact, so H keeps its bits.
 * Panel p is folded by worker ((p + offset) % step) % nworkers; a streamed
 * statistic goes step panels at a time (each worker folding its panels of
 * the step, then the step's reductions), so the workers fold at once and
 * hold two panels at most. The plain case: {0, 1, 1, 0}. */
typedef struct mpq_hshare {
    int worker, nworkers, step;
    int64_t offset;
} mpq_hshare;
static inline int mpq_hshare_worker(const mpq_hshare *s, int64_t p) {
    return (int)(((p + s->offset) % s->step) % s->nworkers);
}
/* The panels of the triangle: ceil(d / MPQ_HSTAT_PANEL). */
int64_t mpq_hstat_npanels(const mpq_hstat *st);
/* Local. The open chunk's rows so far become rows [first, first + n) of a
 * chunk of `total` rows (moved there; first + n <= total), room is made for
 * all of them, and *rows points at the chunk's rows in double [total][d],
 * where the other ranks' rows are to be received as those ranks hold them. */
mpq_err mpq_hstat_chunk_place(struct mpq_ctx *ctx, mpq_hstat *st, int64_t first, int64_t total,
                              double **rows);
/* Like mpq_hstat_end_chunk, folding only this worker's panels (sh NULL:
 * all), which need every row of the chunk in place; the chunk adds `count`
 * rows to the count (and one chunk when count > 0), so that one of the
 * ranks sharing it counts it. Every rank of a streamed statistic passes the
 * same step. mpq_hstat_end_chunk is this with NULL and the rows
 * accumulated. */
mpq_err mpq_hstat_end_chunk_part(struct mpq_ctx *ctx, mpq_hstat *st, const mpq_hshare *sh,
                                 int64_t count);

/* Collective over ctx->comm (every rank calls it for the same statistics in
 * the same order). Sums the accumulators exactly; target = MPQ_HSTAT_ALL
 * gives H on every rank, target = r only on rank r. count, nchunks, absmax
 * and sumsq (the diagonal, summed exactly on its own) become global on
 * every rank. Frees the accumulation state; no chunk may be open. */
mpq_err mpq_hstat_reduce(struct mpq_ctx *ctx, mpq_hstat *st, int target);
/* Collective, like mpq_hstat_reduce, with H on the ranks [first, first +
 * count) only (first = MPQ_HSTAT_ALL: every rank): the exact sum goes to
 * rank first, which rounds it once and sends H to the others of the set.
 * The ranks outside the set never hold H, and hold the accumulator only
 * until the sum has left them. A streamed statistic is reduced to a set
 * that contains its root, or to every rank; the root rounds H and sends it
 * to the others. */
mpq_err mpq_hstat_reduce_set(struct mpq_ctx *ctx, mpq_hstat *st, int first, int count);

/* Ranks [first, first + count): the owners of one statistic. */
typedef struct mpq_hset {
    int first, count;
} mpq_hset;

/* 1 when rank is one of the set's. */
static inline int mpq_hset_has(const mpq_hset *s, int rank) {
    return rank >= s->first && rank < s->first + s->count;
}

/* s among nranks ranks, or every rank when s is empty or reaches past them
 * (a job or statistic without owners). */
static inline mpq_hset mpq_hset_or_all(mpq_hset s, int nranks) {
    if (s.count < 1 || s.first < 0 || s.first + s.count > nranks)
        return (mpq_hset){.first = 0, .count = nranks};
    return s;
}

/* ---- factorisations --------------------------------------------------- */

enum {
    MPQ_HF_CHOL = 1u,     /* R upper, Hd = R^T R */
    MPQ_HF_INV = 2u,      /* Hd^-1 */
    MPQ_HF_INV_CHOL = 4u, /* U upper, Hd^-1 = U^T U */
    MPQ_HF_RCHOL = 8u,    /* V upper, Hd = V V^T (requested alone) */
};

typedef struct mpq_hfactor_opts {
    double damping;              /* relative damping lambda */
    double damping_max;          /* retries stop above this */
    const char *scalapack;       /* backend policy: "auto" | "always" | "never" */
    int64_t scalapack_min_width; /* auto threshold */
    int block_size;              /* ScaLAPACK block size */
    int nprow, npcol;            /* ScaLAPACK grid; 0, 0 = squarest over all ranks */
    int single; /* 1: LAPACK's U or V alone in float32 when its probe passes (hfactor_single.c) */
} mpq_hfactor_opts;

/* Local. Defaults (0.01, 1.0, auto, 4096, 64, squarest grid). */
void mpq_hfactor_opts_default(mpq_hfactor_opts *o);
/* Local. Options from the configuration's hessian section. */
void mpq_hfactor_opts_from_config(const struct mpq_config *cfg, mpq_hfactor_opts *o);

/* The result of a factorisation. Matrices are row-major n x n, allocated
 * on the root only for the requested outputs (NULL otherwise). */
typedef struct mpq_hfactor {
    int64_t n;
    double *chol;         /* R upper (strict lower part zero) */
    double *inv;          /* Hd^-1, both triangles */
    double *inv_chol;     /* U upper (strict lower part zero) */
    double *rchol;        /* V upper (strict lower part zero) */
    int64_t n_dead;       /* dead channels (H_ii == 0), every rank */
    int64_t *dead;        /* [n_dead] their indices, ascending, every rank */
    double damping;       /* relative damping finally used */
    double lambda;        /* absolute value added to the diagonal */
    int retries;          /* failed attempts before success */
    const char *backend;  /* "lapack" or "scalapack" (static string) */
    int nprow, npcol, nb; /* grid used (1, 1, 0 for LAPACK) */
    int single;           /* 1: factored in float32 (opts.single and the probe passed) */
    float *factor_f;      /* then U or V (the one requested) in float32, row-major upper,
                           * and inv_chol / rchol stay NULL */
    double probe;         /* the float32 factor's probe residual (0: not tried) */
} mpq_hfactor;

/* Local. What damping adds to a diagonal entry h of H with absolute damping
 * lambda: 1 more for a dead channel (h = 0), then lambda. The factors are of
 * the matrix whose diagonal is h + this; GPTQ's loss through its factor
 * subtracts it again (stages/round). */
static inline double mpq_hfactor_added(double h, double lambda) {
    return (h == 0.0 ? 1.0 : 0.0) + lambda;
}

/* A factorisation backend (registry entry). */
typedef struct mpq_hfactor_backend {
    const char *name;
    int collective; /* 1: every rank of ctx->comm takes part */
    /* One attempt on the damped matrix a (column-major n x n on the root
     * set->first, or with set->count > 0 the same on every rank of the set;
     * only the lower triangle is read). *notpd = 0 on success, 1 when the
     * Cholesky of Hd failed, 2 when the Cholesky of Hd^-1 failed (agreed on
     * every rank for collective backends). Fills the requested outputs of
     * f on the root (on every rank of the set). */
    mpq_err (*attempt)(struct mpq_ctx *ctx, const mpq_hfactor_opts *o, int64_t n, double *a,
                       const struct mpq_hset *set, unsigned what, mpq_hfactor *f, int *notpd);
} mpq_hfactor_backend;

/* The backends (NULL-terminated): lapack, scalapack; descriptor, lookup. */
extern const mpq_hfactor_backend *const mpq_hfactor_backends[];
extern const mpq_registry mpq_hfactor_backend_reg;
const mpq_hfactor_backend *mpq_hfactor_backend_find(const char *name);

/* A backend policy (hessian.scalapack): which backend factorises an H of
 * width n. A serial context (no communicator) always gets lapack unless the
 * policy insists on ScaLAPACK (then factorising fails with a clear error). */
typedef struct mpq_hfactor_policy {
    const char *name;
    const char *summary;
    const mpq_hfactor_backend *(*choose)(struct mpq_ctx *ctx, const mpq_hfactor_opts *o, int64_t n);
} mpq_hfactor_policy;

/* The policies (NULL-terminated): auto (ScaLAPACK from scalapack_min_width
 * on), always, never; descriptor (hessian.scalapack) and lookup. */
extern const mpq_hfactor_policy *const mpq_hfactor_policies[];
extern const mpq_registry mpq_hfactor_policy_reg;
const mpq_hfactor_policy *mpq_hfactor_policy_find(const char *name);

/* Local. The backend the options' policy chooses for width n; NULL when
 * o->scalapack names no policy. */
const mpq_hfactor_backend *mpq_hfactor_choose_backend(struct mpq_ctx *ctx,
                                                      const mpq_hfactor_opts *o, int64_t n);
/* Local. Its name ("lapack" or "scalapack"; NULL for an unknown policy). */
const char *mpq_hfactor_choose(struct mpq_ctx *ctx, const mpq_hfactor_opts *o, int64_t n);

/* Collective over ctx->comm. Factorises H (row-major n x n, read on `root`
 * only; other ranks may pass NULL) for layer `name` with the backend the
 * options choose; outputs `what` (MPQ_HF_* flags) on the root. Owner:
 * caller (mpq_hfactor_destroy) on every rank. */
mpq_err mpq_hfactor_compute(struct mpq_ctx *ctx, const mpq_hfactor_opts *o, const char *name,
                            int64_t n, const double *H, int root, unsigned what, mpq_hfactor **out);
/* Collective over ctx->comm. The same with H present, identical, on every
 * rank of [first, first + count) (others may pass NULL): with ScaLAPACK the
 * grid is made of those ranks alone (hessian.nprow x npcol when it fits,
 * else the squarest over them), each fills its own block-cyclic piece from
 * its copy (nothing is scattered), and the pieces of the outputs are
 * exchanged among them, so that the outputs exist on every rank of the set
 * and nowhere else. With LAPACK each rank of the set factorises alone.
 * perm (NULL: none) factorises H with rows and columns in the order perm
 * [n] without a permuted copy of H (dead channels are then positions in
 * that order). */
mpq_err mpq_hfactor_compute_set(struct mpq_ctx *ctx, const mpq_hfactor_opts *o, const char *name,
                                int64_t n, const double *H, const int64_t *perm, int first,
                                int count, unsigned what, mpq_hfactor **out);
/* Local: the LAPACK path on the calling rank only (for layers spread over
 * ranks, each rank factoring its own). */
mpq_err mpq_hfactor_local(struct mpq_ctx *ctx, const mpq_hfactor_opts *o, const char *name,
                          int64_t n, const double *H, unsigned what, mpq_hfactor **out);
/* Local. The same with rows and columns of H in the order perm [n] (as for
 * mpq_hfactor_compute_set), without a permuted copy. */
mpq_err mpq_hfactor_local_perm(struct mpq_ctx *ctx, const mpq_hfactor_opts *o, const char *name,
                               int64_t n, const double *H, const int64_t *perm, unsigned what,
                               mpq_hfactor **out);
/* NULL-safe; sets *f to NULL. */
void mpq_hfactor_destroy(mpq_hfactor **f);

/* ---- HDF5 ------------------------------------------------------------- */

/* Collective. Writes n reduced statistics (same list on every rank; H must
 * be present on at least one rank per statistic) to `path` in the layout
 * above, atomically (temporary name, then rename). */
mpq_err mpq_hstats_save(struct mpq_ctx *ctx, const char *path, int64_t n, mpq_hstat *const *stats);

/* Collective. Reads every statistic of `path` in saved order; H and sumsq
 * on `target` (MPQ_HSTAT_ALL: every rank), the rest everywhere. Validates
 * the format, version, shapes and types; errors name the file and the
 * dataset. Owner: caller (mpq_hstats_free). */
mpq_err mpq_hstats_load(struct mpq_ctx *ctx, const char *path, int target, int64_t *n,
                        mpq_hstat ***stats);
/* Destroys n statistics and the array. NULL-safe; sets *stats to NULL. */
void mpq_hstats_free(int64_t n, mpq_hstat ***stats);

#endif
