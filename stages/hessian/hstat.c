/* hstat.c: accumulation of H = sum x x^T per layer input, chunk by chunk,
 * into an exact 192-bit fixed-point accumulator, and its rank-independent
 * reduction (see mpq_hessian.h for the scheme and its range limits). */
#include <cblas.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mpq_coll.h"
#include "mpq_ctx.h"
#include "mpq_hessian.h"
#include "mpq_log.h"
#include "mpq_timer.h"

#define FX_WORDS 3 /* 64-bit words per fixed-point entry */

/* Entries per MPI reduction call: keeps counts far below INT_MAX and the
 * temporary buffers of the MPI library at 384 MiB at most. */
#define FX_REDUCE_PIECE ((int64_t)1 << 24)

static int64_t packed_index(int64_t i, int64_t j) {
    /* upper triangle (i <= j), column by column */
    return j * (j + 1) / 2 + i;
}

/* ---- 192-bit fixed point ------------------------------------------------ */

/* w += q (3 words, little-endian word order, two's complement). */
static void fx_add3(uint64_t *w, const uint64_t *q) {
    uint64_t s0 = w[0] + q[0];
    uint64_t c0 = s0 < q[0];
    uint64_t s1 = w[1] + q[1];
    uint64_t c1 = s1 < q[1];
    s1 += c0;
    c1 |= s1 < c0;
    w[0] = s0;
    w[1] = s1;
    w[2] = w[2] + q[2] + c1;
}

/* Adds round(v / 2^lsb) (nearest, ties to even, symmetric in sign) to w.
 * Returns 0, or -1 when |v| does not fit 191 magnitude bits (the bound
 * check of accumulate makes that impossible unless a bug slips through). */
static int fx_add_double(uint64_t *w, double v, int lsb) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    int neg = (int)(bits >> 63);
    int ef = (int)((bits >> 52) & 0x7ff);
    uint64_t m = bits & ((UINT64_C(1) << 52) - 1);
    if (ef == 0x7ff)
        return -1;
    if (ef == 0) {
        if (m == 0)
            return 0;
        ef = 1; /* subnormal: no hidden bit, exponent of the smallest normal */
    } else {
        m |= UINT64_C(1) << 52;
    }
    /* |v| = m * 2^(ef - 1075); in grid units m * 2^sh. */
    int sh = ef - 1075 - lsb;
    uint64_t q[FX_WORDS] = {0, 0, 0};
    if (sh >= 0) {
        if (sh + 53 > 191)
            return -1;
        /* m << sh over the words, with selects rather than an index: which
         * word a value starts in varies from entry to entry */
        const int wi = sh / 64, b = sh % 64;
        const uint64_t lo = m << b, hi = (m >> 1) >> (63 - b); /* hi: 0 when b = 0 */
        q[0] = wi == 0 ? lo : 0;
        q[1] = wi == 0 ? hi : wi == 1 ? lo : 0;
        q[2] = wi == 1 ? hi : wi == 2 ? lo : 0; /* wi = 2: hi is 0 (sh + 53 <= 191) */
    } else {
        int k = -sh;
        uint64_t r = 0;
        if (k < 64) {
            uint64_t rem = m & ((UINT64_C(1) << k) - 1);
            uint64_t half = UINT64_C(1) << (k - 1);
            r = m >> k;
            if (rem > half || (rem == half && (r & 1)))
                r++;
        } /* k >= 64: m < 2^53 is below half a unit: rounds to 0 */
        q[0] = r;
    }
    /* w += neg ? -q : q, as w + (q ^ mask) + neg with mask all ones when
     * negative (-q = ~q + 1 modulo 2^192): no branch on the sign, which is
     * unpredictable for H's off-diagonal entries. */
    const uint64_t mask = (uint64_t)0 - (uint64_t)neg;
    const uint64_t a0 = q[0] ^ mask, a1 = q[1] ^ mask, a2 = q[2] ^ mask;
    const uint64_t s0 = w[0] + a0, t0 = s0 + (uint64_t)neg;
    const uint64_t c0 = (uint64_t)(s0 < a0) + (uint64_t)(t0 < s0); /* at most 1 */
    const uint64_t s1 = w[1] + a1, t1 = s1 + c0;
    const uint64_t c1 = (uint64_t)(s1 < a1) + (uint64_t)(t1 < s1);
    w[0] = t0;
    w[1] = t1;
    w[2] = w[2] + a2 + c1;
    return 0;
}

/* x 2^e: a product by the power of two when both it and every result here
 * are normal (x is an integer of at most 64 bits, at least 1), which is
 * exact and so equals ldexp; ldexp otherwise. */
static double scale2(double x, int e) {
    if (e < -1022 || e > 1023 - 64)
        return ldexp(x, e);
    const uint64_t bits = (uint64_t)(e + 1023) << 52;
    double p;
    memcpy(&p, &bits, sizeof p);
    return x * p;
}

/* The double nearest (ties to even) to the fixed-point value w * 2^lsb. */
static double fx_to_double(const uint64_t *w, int lsb) {
    uint64_t a[FX_WORDS] = {w[0], w[1], w[2]};
    int neg = (int)(a[2] >> 63);
    if (neg) {
        a[0] = ~a[0];
        a[1] = ~a[1];
        a[2] = ~a[2];
        static const uint64_t one[FX_WORDS] = {1, 0, 0};
        fx_add3(a, one);
    }
    int top = FX_WORDS - 1;
    while (top >= 0 && a[top] == 0)
        top--;
    if (top < 0)
        return 0.0;
    int nbits = top * 64 + (64 - __builtin_clzll(a[top]));
    double r;
    if (nbits <= 64) {
        r = scale2((double)a[0], lsb); /* uint64 -> double rounds to nearest */
    } else {
        /* The top 64 bits, with a sticky bit for everything below them:
         * the sticky bit sits far below double's rounding position, so the
         * conversion rounds exactly as the full-width value would. */
        int s = nbits - 64, wi = s / 64, b = s % 64;
        uint64_t t = a[wi] >> b;
        if (b && wi + 1 < FX_WORDS)
            t |= a[wi + 1] << (64 - b);
        int sticky = b ? (a[wi] & ((UINT64_C(1) << b) - 1)) != 0 : 0;
        for (int k = 0; k < wi; k++)
            sticky |= a[k] != 0;
        t |= (uint64_t)sticky;
        r = scale2((double)t, s + lsb);
    }
    return neg ? -r : r;
}

/* MPI user operation: element-wise exact sum of 3-word integers. Integer
 * addition is associative and commutative, so the reduction order chosen
 * by MPI cannot change the result. */
static void fx_sum_op(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint64_t *a = in;
    uint64_t *b = inout;
    for (int64_t k = 0; k < *len; k++)
        fx_add3(b + FX_WORDS * k, a + FX_WORDS * k);
}

/* ---- create / destroy ---------------------------------------------------- */

mpq_err mpq_hstat_create(mpq_ctx *ctx, const char *name, int64_t d, int bound_log2,
                         mpq_hstat **out) {
    return mpq_hstat_create_at(ctx, name, d, bound_log2, MPQ_HSTAT_LOCAL, out);
}

/* 1 when chunks are summed onto st->root as they end (collective end_chunk). */
static int streamed(const mpq_ctx *ctx, const mpq_hstat *st) {
    return st->root >= 0 && ctx->comm != MPI_COMM_NULL && ctx->size > 1;
}

mpq_err mpq_hstat_create_at(mpq_ctx *ctx, const char *name, int64_t d, int bound_log2, int root,
                            mpq_hstat **out) {
    *out = NULL;
    MPQ_CHECK(name && name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 &&
                  strlen(name) < MPQ_HSTAT_NAME_MAX,
              MPQ_ERR_ARG,
              "Hessian statistic name '%s' must be non-empty, shorter than %d bytes "
              "and contain no '/'",
              name ? name : "(null)", MPQ_HSTAT_NAME_MAX);
    MPQ_CHECK(d > 0, MPQ_ERR_ARG, "Hessian statistic '%s': width %lld must be positive", name,
              (long long)d);
    MPQ_CHECK(bound_log2 >= -60 && bound_log2 <= 60, MPQ_ERR_ARG,
              "Hessian statistic '%s': bound_log2 = %d is outside -60..60", name, bound_log2);
    MPQ_CHECK(root == MPQ_HSTAT_LOCAL || (root >= 0 && root < ctx->size), MPQ_ERR_ARG,
              "Hessian statistic '%s': accumulating rank %d is not a rank of %d", name, root,
              ctx->size);
    int64_t dd = 0, npacked = 0;
    MPQ_CALL(mpq_mul64(ctx, d, d, "H entries", &dd)); /* H, once reduced */
    MPQ_CALL(mpq_mul64(ctx, d, d + 1, "H packed entries", &npacked));
    npacked /= 2;
    mpq_hstat *st = NULL;
    mpq_err err = MPQ_OK;
    MPQ_ALLOC(st, 1);
    snprintf(st->name, sizeof st->name, "%s", name);
    st->d = d;
    st->bound_log2 = bound_log2;
    st->lsb_exp = 2 * bound_log2 - 127;
    st->root = root;
    MPQ_ALLOC_TRY(st->absmax, d);
    MPQ_ALLOC_TRY(st->part, d * (d < MPQ_HSTAT_PANEL ? d : MPQ_HSTAT_PANEL));
    if (!streamed(ctx, st) || ctx->rank == root) {
        MPQ_ALLOC_TRY(st->acc, npacked * FX_WORDS);
    } else {
        /* the largest panel of the triangle: the last one */
        int64_t j0 = d > MPQ_HSTAT_PANEL ? d - MPQ_HSTAT_PANEL : 0;
        MPQ_ALLOC_TRY(st->fxbuf, (npacked - packed_index(0, j0)) * FX_WORDS);
    }
    *out = st;
    return MPQ_OK;
cleanup:
    mpq_hstat_destroy(&st);
    return err;
}

void mpq_hstat_destroy(mpq_hstat **pst) {
    if (!pst || !*pst)
        return;
    mpq_hstat *st = *pst;
    mpq_free(st->absmax);
    mpq_free(st->H);
    mpq_free(st->sumsq);
    mpq_free(st->acc);
    mpq_free(st->fxbuf);
    mpq_free(st->fxmore);
    mpq_free(st->part);
    mpq_free(st->rowbuf);
    mpq_free(st);
    *pst = NULL;
}

/* ---- accumulation -------------------------------------------------------- */

mpq_err mpq_hstat_begin_chunk(mpq_ctx *ctx, mpq_hstat *st) {
    MPQ_CHECK(!st->reduced && (st->acc || st->fxbuf), MPQ_ERR_ARG,
              "Hessian statistic '%s': begin_chunk after the reduction", st->name);
    MPQ_CHECK(!st->in_chunk, MPQ_ERR_ARG, "Hessian statistic '%s': begin_chunk inside a chunk",
              st->name);
    st->rowbuf_n = 0;
    st->chunk_rows = 0;
    st->in_chunk = 1;
    return MPQ_OK;
}

/* Room for n more rows in rowbuf (grown by doubling, kept between chunks). */
static mpq_err reserve_rows(mpq_ctx *ctx, mpq_hstat *st, int64_t n) {
    int64_t want = st->rowbuf_n + n;
    if (want <= st->rowbuf_cap)
        return MPQ_OK;
    int64_t cap = st->rowbuf_cap > 0 ? st->rowbuf_cap : 256;
    while (cap < want)
        cap *= 2;
    int64_t old_n = 0, new_n = 0;
    MPQ_CALL(mpq_mul64(ctx, st->rowbuf_cap, st->d, "Hessian chunk rows", &old_n));
    MPQ_CALL(mpq_mul64(ctx, cap, st->d, "Hessian chunk rows", &new_n));
    MPQ_CALL(mpq_realloc(ctx, old_n, new_n, sizeof *st->rowbuf, (void **)&st->rowbuf));
    st->rowbuf_cap = cap;
    return MPQ_OK;
}

mpq_err mpq_hstat_accumulate(mpq_ctx *ctx, mpq_hstat *st, const float *x, int64_t rows, int64_t d) {
    MPQ_CHECK(st->in_chunk, MPQ_ERR_ARG,
              "Hessian statistic '%s': accumulate outside a chunk (call begin_chunk first)",
              st->name);
    MPQ_CHECK(d == st->d, MPQ_ERR_ARG, "Hessian statistic '%s': rows of width %lld, expected %lld",
              st->name, (long long)d, (long long)st->d);
    MPQ_CHECK(rows >= 0 && (rows == 0 || x), MPQ_ERR_ARG,
              "Hessian statistic '%s': invalid rows (%lld) or NULL data", st->name,
              (long long)rows);
    MPQ_CALL(reserve_rows(ctx, st, rows));
    const double t0 = mpq_now();
    const double bound = ldexp(1.0, st->bound_log2);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        double *dst = st->rowbuf + st->rowbuf_n * d;
        int bad = 0;
        for (int64_t i = 0; i < d; i++) {
            double v = (double)xr[i];
            double a = fabs(v);
            dst[i] = v;
            bad |= !(a <= bound); /* also catches NaN */
            if (a > st->absmax[i])
                st->absmax[i] = a;
        }
        if (bad) {
            for (int64_t i = 0; i < d; i++) {
                double v = (double)xr[i];
                MPQ_CHECK(isfinite(v), MPQ_ERR_NUMERIC,
                          "Hessian statistic '%s': non-finite input %g at chunk row %lld, "
                          "channel %lld",
                          st->name, v, (long long)(st->chunk_rows + r), (long long)i);
                MPQ_CHECK(fabs(v) <= bound, MPQ_ERR_RANGE,
                          "Hessian statistic '%s': input %g at chunk row %lld, channel %lld "
                          "exceeds the bound 2^%d of the exact reduction (raise "
                          "hessian.bound_log2)",
                          st->name, v, (long long)(st->chunk_rows + r), (long long)i,
                          st->bound_log2);
            }
        }
        st->rowbuf_n++;
    }
    st->chunk_rows += rows;
    return mpq_stage_add(ctx, MPQ_STAGE_HESSIAN_ACCUMULATE, mpq_now() - t0);
}

static mpq_err reduce_words(mpq_ctx *ctx, uint64_t *p0, int64_t n, int target);

/* Columns [*j0, *j1) of panel p of a width-d triangle. */
static void panel_cols(int64_t d, int64_t p, int64_t *j0, int64_t *j1) {
    *j0 = p * MPQ_HSTAT_PANEL;
    *j1 = *j0 + MPQ_HSTAT_PANEL < d ? *j0 + MPQ_HSTAT_PANEL : d;
}

/* The chunk's partial of panel [j0, j1) onto the fixed-point entries at dst. */
static void fold_panel(mpq_ctx *ctx, mpq_hstat *st, int k, int64_t j0, int64_t j1, uint64_t *dst,
                       int *bad) {
    const int64_t d = st->d, p0 = packed_index(0, j0);
    const int m = (int)j1, w = (int)(j1 - j0);
    const double t0 = mpq_now();
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, m, w, k, 1.0, st->rowbuf, (int)d,
                st->rowbuf + j0, (int)d, 0.0, st->part, m);
    for (int64_t j = j0; j < j1; j++) {
        const double *col = st->part + (j - j0) * m;
        uint64_t *a = dst + FX_WORDS * (packed_index(0, j) - p0);
        for (int64_t i = 0; i <= j; i++)
            *bad |= fx_add_double(a + FX_WORDS * i, col[i], st->lsb_exp);
    }
    (void)mpq_stage_add(ctx, MPQ_STAGE_HESSIAN_ACCUMULATE, mpq_now() - t0);
    st->folded++;
}

/* Folds the k rows of the open chunk into the triangle. rowbuf is k rows
 * of d doubles = a column-major d x k matrix A, and A A^T = X^T X. Panel by
 * panel of columns [j0, j1): the rows [0, j1) of those columns (the upper
 * triangle and the panel's diagonal block) in one GEMM over the whole
 * chunk, then onto the fixed-point grid: locally into acc. Streamed, the
 * panels go sh->step at a time: this rank folds its panels of the step
 * (into acc on the root, else into fxbuf / fxmore), then each panel's
 * entries go onto the root's acc (in place there) with one reduction, so
 * every rank takes part in every panel even with no rows or an error. */
static mpq_err fold_chunk(mpq_ctx *ctx, mpq_hstat *st, int k, const mpq_hshare *sh, int *bad,
                          mpq_err *local) {
    const int64_t d = st->d, npan = mpq_hstat_npanels(st);
    const int stream = streamed(ctx, st);
    int64_t step = stream && sh ? sh->step : 1;
    const int64_t big =
        packed_index(0, d) - packed_index(0, d > MPQ_HSTAT_PANEL ? d - MPQ_HSTAT_PANEL : 0);
    if (stream && !st->acc && step > 1 && !st->fxmore) {
        /* a failure is reported after the reductions, which go on with zeros */
        mpq_err e = mpq_malloc(ctx, 2 * big * FX_WORDS, sizeof *st->fxmore, (void **)&st->fxmore);
        if (e != MPQ_OK) {
            *local = *local == MPQ_OK ? e : *local;
            k = 0;
            step = 1;
        }
    }
    for (int64_t t0 = 0; t0 < npan; t0 += step) {
        const int64_t t1 = t0 + step < npan ? t0 + step : npan;
        uint64_t *src[2] = {st->fxbuf, st->fxmore};
        int64_t held[2] = {-1, -1};
        int nheld = 0;
        for (int64_t p = t0; p < t1; p++) {
            int64_t j0, j1;
            panel_cols(d, p, &j0, &j1);
            const int64_t np = packed_index(0, j1) - packed_index(0, j0);
            if (k == 0 || (sh && mpq_hshare_worker(sh, p) != sh->worker))
                continue;
            uint64_t *dst = st->acc ? st->acc + FX_WORDS * packed_index(0, j0) : NULL;
            if (!dst && nheld == 2) { /* the plans never give more */
                *local = *local == MPQ_OK ? MPQ_ERROR(MPQ_ERR_INTERNAL,
                                                      "Hessian statistic '%s': more than two "
                                                      "panels of a step",
                                                      st->name)
                                          : *local;
                continue;
            }
            if (!dst) {
                held[nheld] = p;
                dst = src[nheld++];
                memset(dst, 0, (size_t)np * FX_WORDS * sizeof *dst);
            }
            fold_panel(ctx, st, k, j0, j1, dst, bad);
        }
        for (int64_t p = t0; p < t1 && stream; p++) {
            int64_t j0, j1;
            panel_cols(d, p, &j0, &j1);
            const int64_t p0 = packed_index(0, j0), np = packed_index(0, j1) - p0;
            uint64_t *dst = st->acc ? st->acc + FX_WORDS * p0 : NULL;
            if (!dst) {
                dst = held[0] == p ? src[0] : held[1] == p ? src[1] : NULL;
                if (!dst) { /* nothing folded here: zeros */
                    dst = step > 1 ? st->fxmore + big * FX_WORDS : st->fxbuf;
                    memset(dst, 0, (size_t)np * FX_WORDS * sizeof *dst);
                }
            }
            MPQ_CALL(reduce_words(ctx, dst, np, st->root));
        }
    }
    return MPQ_OK;
}

int64_t mpq_hstat_npanels(const mpq_hstat *st) {
    return (st->d + MPQ_HSTAT_PANEL - 1) / MPQ_HSTAT_PANEL;
}

mpq_err mpq_hstat_chunk_place(mpq_ctx *ctx, mpq_hstat *st, int64_t first, int64_t total,
                              double **rows) {
    *rows = NULL;
    const int64_t n = st->rowbuf_n;
    MPQ_CHECK(st->in_chunk && first >= 0 && first + n <= total, MPQ_ERR_ARG,
              "Hessian statistic '%s': %lld rows cannot start at row %lld of a chunk of %lld",
              st->name, (long long)n, (long long)first, (long long)total);
    MPQ_CALL(reserve_rows(ctx, st, total - n));
    if (first > 0 && n > 0)
        memmove(st->rowbuf + first * st->d, st->rowbuf, (size_t)(n * st->d) * sizeof *st->rowbuf);
    st->rowbuf_n = total;
    st->chunk_rows = total;
    *rows = st->rowbuf;
    return MPQ_OK;
}

mpq_err mpq_hstat_end_chunk(mpq_ctx *ctx, mpq_hstat *st) {
    return mpq_hstat_end_chunk_part(ctx, st, NULL, st->chunk_rows);
}

mpq_err mpq_hstat_end_chunk_part(mpq_ctx *ctx, mpq_hstat *st, const mpq_hshare *sh, int64_t count) {
    MPQ_CHECK(st->in_chunk, MPQ_ERR_ARG, "Hessian statistic '%s': end_chunk without begin_chunk",
              st->name);
    st->in_chunk = 0;
    const int stream = streamed(ctx, st);
    if (st->chunk_rows == 0 && count == 0 && !stream)
        return MPQ_OK;
    mpq_err local = MPQ_OK;
    int n = 0, k = 0, bad = 0;
    local = mpq_to_int(ctx, st->d, "Hessian width (BLAS)", &n);
    if (local == MPQ_OK)
        local = mpq_to_int(ctx, st->rowbuf_n, "Hessian chunk rows (BLAS)", &k);
    MPQ_CALL(fold_chunk(ctx, st, local == MPQ_OK ? k : 0, sh, &bad, &local));
    if (local == MPQ_OK && bad)
        local = MPQ_ERROR(MPQ_ERR_INTERNAL,
                          "Hessian statistic '%s': a chunk partial does not fit the fixed-point "
                          "range",
                          st->name);
    if (local == MPQ_OK)
        local = mpq_add64(ctx, st->count, count, "Hessian token count", &st->count);
    if (local == MPQ_OK && count > 0)
        st->nchunks++;
    st->chunk_rows = 0;
    st->rowbuf_n = 0;
    return stream ? mpq_agree(ctx, local) : local;
}

/* ---- reduction ----------------------------------------------------------- */

/* The 3-word integer type and the exact-sum operator of the reductions. */
static mpq_err fx_mpi(mpq_ctx *ctx, MPI_Datatype *t, MPI_Op *op) {
    MPQ_MPI(MPI_Type_contiguous(FX_WORDS, MPI_UINT64_T, t));
    MPQ_MPI(MPI_Type_commit(t));
    MPQ_MPI(MPI_Op_create(fx_sum_op, 1, op));
    return MPQ_OK;
}

static void fx_mpi_free(MPI_Datatype *t, MPI_Op *op) {
    if (*op != MPI_OP_NULL)
        MPI_Op_free(op);
    if (*t != MPI_DATATYPE_NULL)
        MPI_Type_free(t);
}

/* Exact sum of n accumulator entries at p: on `target` (or all ranks). */
static mpq_err reduce_words(mpq_ctx *ctx, uint64_t *p0, int64_t n, int target) {
    MPI_Datatype t = MPI_DATATYPE_NULL;
    MPI_Op op = MPI_OP_NULL;
    mpq_err err = MPQ_OK;
    MPQ_TRY(fx_mpi(ctx, &t, &op));
    for (int64_t off = 0; off < n; off += FX_REDUCE_PIECE) {
        int64_t len = n - off < FX_REDUCE_PIECE ? n - off : FX_REDUCE_PIECE;
        uint64_t *p = p0 + FX_WORDS * off;
        if (target == MPQ_HSTAT_ALL)
            MPQ_MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, p, (int)len, t, op, ctx->comm));
        else if (ctx->rank == target)
            MPQ_MPI_TRY(MPI_Reduce(MPI_IN_PLACE, p, (int)len, t, op, target, ctx->comm));
        else
            MPQ_MPI_TRY(MPI_Reduce(p, NULL, (int)len, t, op, target, ctx->comm));
    }
cleanup:
    fx_mpi_free(&t, &op);
    return err;
}

/* n 8-byte items of type t (MPI_UINT64_T or MPI_DOUBLE) from root to every
 * rank, in pieces. */
static mpq_err bcast_pieces(mpq_ctx *ctx, void *p0, int64_t n, MPI_Datatype t, int root) {
    char *p = p0;
    for (int64_t off = 0; off < n; off += FX_REDUCE_PIECE) {
        int len = (int)(n - off < FX_REDUCE_PIECE ? n - off : FX_REDUCE_PIECE);
        MPQ_MPI(MPI_Bcast(p + 8 * off, len, t, root, ctx->comm));
    }
    return MPQ_OK;
}

/* sumsq on every rank: the exact sum of the diagonal entries alone.
 * Collective (the local allocations are agreed first). */
static mpq_err reduce_diagonal(mpq_ctx *ctx, mpq_hstat *st, int serial, int stream) {
    mpq_err err = MPQ_OK;
    uint64_t *dg = NULL;
    const int64_t d = st->d;
    err = mpq_malloc(ctx, d, sizeof *st->sumsq, (void **)&st->sumsq);
    if (err == MPQ_OK)
        err = mpq_malloc(ctx, d * FX_WORDS, sizeof *dg, (void **)&dg);
    MPQ_TRY(mpq_agree(ctx, err));
    if (st->acc)
        for (int64_t j = 0; j < d; j++)
            memcpy(dg + FX_WORDS * j, st->acc + FX_WORDS * packed_index(j, j),
                   FX_WORDS * sizeof *dg);
    if (stream) /* the root holds the whole sum already */
        MPQ_TRY(bcast_pieces(ctx, dg, d * FX_WORDS, MPI_UINT64_T, st->root));
    else if (!serial)
        MPQ_TRY(reduce_words(ctx, dg, d, MPQ_HSTAT_ALL));
    for (int64_t j = 0; j < d; j++)
        st->sumsq[j] = fx_to_double(dg + FX_WORDS * j, st->lsb_exp);
cleanup:
    mpq_free(dg);
    return err;
}

/* H [d][d] from the summed accumulator, in the accumulator's own buffer
 * (24 bytes per packed entry: 12 d (d + 1) bytes, more than H's 8 d^2), so
 * that the two never coexist (20 d^2 bytes: 16 GiB at d = 28672). Packed
 * column j goes into row j, both contiguous, the last row first, row j at
 * byte o + 8 j d with o = 12 d (d + 1) - 8 d^2 (H ends where the buffer
 * ends): the columns still to read, 0 .. j - 1, end at byte 12 j (j + 1) <=
 * o + 8 j d for every 0 <= j < d, and column j is read into row (d
 * doubles) first. H then moves to the buffer's start, its other half is
 * mirrored tile by tile (no loop writes with a stride of d across the whole
 * matrix), and the pages past it go back to the system. On success st->H
 * owns the buffer and st->acc is NULL. */
static mpq_err materialise(mpq_ctx *ctx, mpq_hstat *st) {
    const int64_t d = st->d, T = 64;
    double *row = NULL;
    MPQ_CALL(mpq_malloc_raw(ctx, d, sizeof *row, (void **)&row));
    unsigned char *buf = (unsigned char *)st->acc;
    const size_t total = (size_t)(d * (d + 1) / 2) * FX_WORDS * sizeof *st->acc;
    const size_t hbytes = (size_t)(d * d) * sizeof(double), o = total - hbytes;
    for (int64_t j = d - 1; j >= 0; j--) {
        const uint64_t *w = st->acc + FX_WORDS * packed_index(0, j);
        for (int64_t i = 0; i <= j; i++)
            row[i] = fx_to_double(w + FX_WORDS * i, st->lsb_exp);
        memcpy(buf + o + (size_t)(j * d) * sizeof(double), row, (size_t)(j + 1) * sizeof *row);
    }
    mpq_free(row);
    memmove(buf, buf + o, hbytes);
    double *H = (double *)buf;
    st->acc = NULL;
    st->H = H;
    for (int64_t i0 = 0; i0 < d; i0 += T)
        for (int64_t j0 = i0; j0 < d; j0 += T) {
            const int64_t i1 = i0 + T < d ? i0 + T : d, j1 = j0 + T < d ? j0 + T : d;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0 > i + 1 ? j0 : i + 1; j < j1; j++)
                    H[i * d + j] = H[j * d + i];
        }
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t from = (hbytes + page - 1) / page * page, to = total / page * page;
    if (to > from)
        (void)madvise(buf + from, to - from, MADV_DONTNEED);
    return MPQ_OK;
}

/* Rank root sends H to the other ranks of [first, first + count), in pieces. */
static mpq_err share_h(mpq_ctx *ctx, mpq_hstat *st, int root, int first, int count) {
    const int64_t n = st->d * st->d;
    for (int r = first; r < first + count; r++) {
        if (r == root)
            continue;
        for (int64_t off = 0; off < n; off += FX_REDUCE_PIECE) {
            int len = (int)(n - off < FX_REDUCE_PIECE ? n - off : FX_REDUCE_PIECE);
            if (ctx->rank == root)
                MPQ_MPI(MPI_Send(st->H + off, len, MPI_DOUBLE, r, 71, ctx->comm));
            else if (ctx->rank == r)
                MPQ_MPI(
                    MPI_Recv(st->H + off, len, MPI_DOUBLE, root, 71, ctx->comm, MPI_STATUS_IGNORE));
        }
    }
    return MPQ_OK;
}

mpq_err mpq_hstat_reduce(mpq_ctx *ctx, mpq_hstat *st, int target) {
    if (target == MPQ_HSTAT_ALL)
        return mpq_hstat_reduce_set(ctx, st, MPQ_HSTAT_ALL, 0);
    return mpq_hstat_reduce_set(ctx, st, target, 1);
}

mpq_err mpq_hstat_reduce_set(mpq_ctx *ctx, mpq_hstat *st, int first, int count) {
    mpq_err local = MPQ_OK;
    const int all = first == MPQ_HSTAT_ALL;
    if (st->reduced || (!st->acc && !st->fxbuf))
        local = MPQ_ERROR(MPQ_ERR_ARG, "Hessian statistic '%s' is already reduced", st->name);
    else if (st->in_chunk)
        local = MPQ_ERROR(MPQ_ERR_ARG, "Hessian statistic '%s': reduce with a chunk still open",
                          st->name);
    else if (!all && (first < 0 || count < 1 || count > ctx->size - first))
        local = MPQ_ERROR(MPQ_ERR_ARG,
                          "Hessian statistic '%s': reduce target ranks [%d, %d) are not ranks "
                          "of %d",
                          st->name, first, first + count, ctx->size);
    else if (streamed(ctx, st) && !all && (st->root < first || st->root >= first + count))
        local = MPQ_ERROR(MPQ_ERR_ARG,
                          "Hessian statistic '%s': summed on rank %d, reduced to ranks [%d, %d)",
                          st->name, st->root, first, first + count);
    MPQ_CALL(mpq_agree(ctx, local));

    const int64_t d = st->d;
    const int64_t npacked = d * (d + 1) / 2;
    int serial = ctx->comm == MPI_COMM_NULL || ctx->size == 1;
    const int stream = streamed(ctx, st);
    const int root = stream ? st->root : first; /* the rank that materialises H */
    const mpq_hset set = {.first = first, .count = count};
    const int mine = all || mpq_hset_has(&set, ctx->rank);
    /* The chunk buffers are no longer needed: free them before the MPI
     * library allocates its reduction buffers and before H exists. */
    mpq_free(st->part);
    st->part = NULL;
    mpq_free(st->rowbuf);
    st->rowbuf = NULL;
    mpq_free(st->fxbuf);
    st->fxbuf = NULL;
    mpq_free(st->fxmore);
    st->fxmore = NULL;
    mpq_err err = reduce_diagonal(ctx, st, serial, stream);
    MPQ_TRY(mpq_agree(ctx, err));
    if (!serial) {
        if (!stream)
            MPQ_TRY(reduce_words(ctx, st->acc, npacked, all ? MPQ_HSTAT_ALL : first));
        int64_t cnt[2] = {st->count, st->nchunks};
        MPQ_MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, cnt, 2, MPI_INT64_T, MPI_SUM, ctx->comm));
        st->count = cnt[0];
        st->nchunks = cnt[1];
        for (int64_t off = 0; off < d; off += FX_REDUCE_PIECE) {
            int len = (int)(d - off < FX_REDUCE_PIECE ? d - off : FX_REDUCE_PIECE);
            MPQ_MPI_TRY(
                MPI_Allreduce(MPI_IN_PLACE, st->absmax + off, len, MPI_DOUBLE, MPI_MAX, ctx->comm));
        }
    }
    /* Only the root (the first of the set, or a streamed statistic's root)
     * holds the sum: the others of the set get H from it, everyone else
     * frees the accumulator now. */
    if ((stream || !all) && ctx->rank != root) {
        mpq_free(st->acc);
        st->acc = NULL;
    }
    /* H is written in full (materialised, received or broadcast) before it
     * is read: no zero fill of its d x d doubles; materialised in the
     * accumulator's buffer. */
    if (mine && st->acc)
        err = materialise(ctx, st);
    else if (mine)
        err = mpq_malloc_raw(ctx, d * d, sizeof *st->H, (void **)&st->H);
    mpq_free(st->acc);
    st->acc = NULL;
    MPQ_TRY(mpq_agree(ctx, err));
    if (all && stream)
        MPQ_TRY(bcast_pieces(ctx, st->H, d * d, MPI_DOUBLE, root));
    else if (!all && count > 1 && !serial)
        MPQ_TRY(share_h(ctx, st, root, first, count));
cleanup:
    mpq_free(st->acc);
    st->acc = NULL;
    st->reduced = 1;
    return mpq_agree(ctx, err);
}
