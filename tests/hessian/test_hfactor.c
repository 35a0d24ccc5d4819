/* test_hfactor.c: damped factorisations of H.
 *
 * - ScaLAPACK and LAPACK agree within 1e-10 (relative to the largest
 *   entry) for n = 100, 257, 512 (257 and 100 not divisible by the block
 *   size) on every grid that fits (1x1, 1x2, 2x1, 2x2), with the root
 *   outside rank 0 when possible; and the LAPACK results are checked
 *   independently: R^T R = Hd, Hd * inv = I, U^T U = inv.
 * - non-positive-definite H: logged retries, then MPQ_ERR_NUMERIC naming
 *   the layer; a matrix that a retry rescues reports the damping used.
 * - rank-deficient H (fewer samples than the width, measured with the
 *   statistics engine) factorises with the default damping.
 * - dead channels are reported and handled (GPTQ convention).
 * - non-finite H and bad options are clear errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_hessian.h"
#include "mpq_test.h"
#include "synth.h"

static mpq_ctx *g_ctx;

/* A well-conditioned SPD matrix: A^T A / m + 0.1 I with A [m][n] random. */
static double *make_spd(int64_t n, uint64_t seed) {
    int64_t m = n + 10;
    double *A = malloc(sizeof(double) * m * n), *H = calloc((size_t)(n * n), sizeof(double));
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++)
            A[r * n + c] = synth_unif(seed, 0, r, c);
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++)
                H[i * n + j] += A[r * n + i] * A[r * n + j] / (double)m;
    for (int64_t i = 0; i < n; i++)
        H[i * n + i] += 0.1;
    free(A);
    return H;
}

static double max_abs(int64_t n, const double *a) {
    double m = 0.0;
    for (int64_t k = 0; k < n * n; k++)
        m = fmax(m, fabs(a[k]));
    return m;
}

static double rel_diff(int64_t n, const double *a, const double *b) {
    double m = 0.0;
    for (int64_t k = 0; k < n * n; k++)
        m = fmax(m, fabs(a[k] - b[k]));
    return m / max_abs(n, b);
}

/* C = op(A) * B with op = transpose when ta (naive, row-major n x n). */
static void matmul(int64_t n, const double *A, int ta, const double *B, double *C) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < n; k++)
                s += (ta ? A[k * n + i] : A[i * n + k]) * B[k * n + j];
            C[i * n + j] = s;
        }
}

/* Independent checks of a factorisation of H with absolute damping lambda. */
static void verify(int64_t n, const double *H, const mpq_hfactor *f) {
    double *Hd = malloc(sizeof(double) * n * n), *P = malloc(sizeof(double) * n * n);
    memcpy(Hd, H, sizeof(double) * n * n);
    for (int64_t k = 0; k < f->n_dead; k++)
        Hd[f->dead[k] * n + f->dead[k]] = 1.0;
    for (int64_t i = 0; i < n; i++)
        Hd[i * n + i] += f->lambda;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) {
            assert_true(f->chol[i * n + j] == 0.0); /* upper triangular */
            assert_true(f->inv_chol[i * n + j] == 0.0);
        }
    matmul(n, f->chol, 1, f->chol, P); /* R^T R */
    double e1 = rel_diff(n, P, Hd);
    matmul(n, Hd, 0, f->inv, P); /* Hd inv */
    double e2 = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            e2 = fmax(e2, fabs(P[i * n + j] - (i == j)));
    matmul(n, f->inv_chol, 1, f->inv_chol, P); /* U^T U */
    double e3 = rel_diff(n, P, f->inv);
    if (e1 > 1e-12 || e2 > 1e-9 || e3 > 1e-12)
        fail_msg("n=%lld: |R^T R - Hd| %.2e, |Hd inv - I| %.2e, |U^T U - inv| %.2e", (long long)n,
                 e1, e2, e3);
    free(P);
    free(Hd);
}

static const unsigned ALL = MPQ_HF_CHOL | MPQ_HF_INV | MPQ_HF_INV_CHOL;

/* rchol V (requested alone, in f) against the factors of ref (ALL, same
 * H and damping): upper, V V^T = Hd = R^T R, and V U = I. */
static void verify_rchol(int64_t n, const mpq_hfactor *f, const mpq_hfactor *ref) {
    const double *V = f->rchol;
    assert_non_null(V);
    assert_null(f->inv_chol);
    assert_true(f->lambda == ref->lambda);
    double *P = calloc((size_t)(n * n), sizeof(double));
    double *Hd = calloc((size_t)(n * n), sizeof(double));
    assert_true(P && Hd);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++)
            assert_true(V[i * n + j] == 0.0);
    matmul(n, ref->chol, 1, ref->chol, Hd); /* R^T R = Hd */
    for (int64_t i = 0; i < n; i++)         /* V V^T */
        for (int64_t j = 0; j < n; j++) {
            double t = 0.0;
            for (int64_t k = 0; k < n; k++)
                t += V[i * n + k] * V[j * n + k];
            P[i * n + j] = t;
        }
    const double e1 = rel_diff(n, P, Hd);
    matmul(n, V, 0, ref->inv_chol, P); /* V U */
    double e2 = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            e2 = fmax(e2, fabs(P[i * n + j] - (i == j)));
    if (e1 > 1e-12 || e2 > 1e-9)
        fail_msg("n=%lld: |V V^T - Hd| %.2e, |V U - I| %.2e", (long long)n, e1, e2);
    free(Hd);
    free(P);
}

static void test_scalapack_matches_lapack(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int64_t sizes[] = {100, 257, 512};
    const int grids[][2] = {{1, 1}, {1, 2}, {2, 1}, {2, 2}};
    const int nbs[] = {64, 32};
    int ncases = 0;
    for (int si = 0; si < 3; si++) {
        int64_t n = sizes[si];
        double *H = make_spd(n, 77 + (uint64_t)n);
        int root = ctx->size - 1;
        mpq_hfactor_opts o;
        mpq_hfactor_opts_default(&o);
        o.scalapack = "never";
        mpq_hfactor *ref = NULL;
        MPQ_ASSERT_OK(ctx, mpq_hfactor_compute(ctx, &o, "ref", n, H, root, ALL, &ref));
        assert_string_equal(ref->backend, "lapack");
        assert_int_equal(ref->retries, 0);
        if (ctx->rank == root)
            verify(n, H, ref);
        else
            assert_null(ref->chol);
        for (int gi = 0; gi < 4; gi++) {
            if (grids[gi][0] * grids[gi][1] > ctx->size)
                continue;
            for (int bi = 0; bi < 2; bi++) {
                if (n != 257 && bi == 1)
                    continue; /* block 32 only once */
                mpq_hfactor_opts so = o;
                so.scalapack = "always";
                so.nprow = grids[gi][0];
                so.npcol = grids[gi][1];
                so.block_size = nbs[bi];
                mpq_hfactor *f = NULL;
                MPQ_ASSERT_OK(ctx, mpq_hfactor_compute(ctx, &so, "sca", n, H, root, ALL, &f));
                assert_string_equal(f->backend, "scalapack");
                assert_int_equal(f->nprow, grids[gi][0]);
                assert_int_equal(f->npcol, grids[gi][1]);
                if (ctx->rank == root) {
                    double e1 = rel_diff(n, f->chol, ref->chol);
                    double e2 = rel_diff(n, f->inv, ref->inv);
                    double e3 = rel_diff(n, f->inv_chol, ref->inv_chol);
                    if (e1 > 1e-10 || e2 > 1e-10 || e3 > 1e-10)
                        fail_msg("n=%lld grid %dx%d nb %d: chol %.2e inv %.2e inv_chol %.2e",
                                 (long long)n, grids[gi][0], grids[gi][1], nbs[bi], e1, e2, e3);
                }
                assert_true(f->lambda == ref->lambda || ctx->rank != root);
                mpq_hfactor_destroy(&f);
                ncases++;
            }
        }
        /* Only what is asked for is computed. */
        mpq_hfactor_opts so = o;
        so.scalapack = "always";
        mpq_hfactor *f = NULL;
        MPQ_ASSERT_OK(ctx, mpq_hfactor_compute(ctx, &so, "sca", n, H, root, MPQ_HF_INV_CHOL, &f));
        assert_null(f->chol);
        assert_null(f->inv);
        if (ctx->rank == root)
            assert_true(rel_diff(n, f->inv_chol, ref->inv_chol) <= 1e-10);
        mpq_hfactor_destroy(&f);
        /* V (Hd = V V^T, GPTQ's factor): alone, by both backends. */
        MPQ_ASSERT_OK(ctx, mpq_hfactor_compute(ctx, &so, "sca", n, H, root, MPQ_HF_RCHOL, &f));
        if (ctx->rank == root)
            verify_rchol(n, f, ref);
        else
            assert_null(f->rchol);
        mpq_hfactor_destroy(&f);
        MPQ_ASSERT_OK(ctx, mpq_hfactor_local(ctx, &o, "loc", n, H, MPQ_HF_RCHOL, &f));
        if (ctx->rank == root)
            verify_rchol(n, f, ref);
        mpq_hfactor_destroy(&f);
        assert_int_equal(mpq_hfactor_local(ctx, &o, "both", n, H, MPQ_HF_RCHOL | MPQ_HF_CHOL, &f),
                         MPQ_ERR_ARG);
        assert_null(f);
        /* The local (per-rank) LAPACK path gives the same bits as compute. */
        mpq_hfactor *loc = NULL;
        MPQ_ASSERT_OK(ctx, mpq_hfactor_local(ctx, &o, "loc", n, H, ALL, &loc));
        if (ctx->rank == root)
            assert_memory_equal(loc->inv_chol, ref->inv_chol, sizeof(double) * n * n);
        mpq_hfactor_destroy(&loc);
        mpq_hfactor_destroy(&ref);
        free(H);
    }
    assert_true(ncases >= 4);
}

/* A factorisation over a set of ranks, each holding H: the outputs on every
 * rank of the set (against LAPACK) and nowhere else. */
static void test_scalapack_set(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int64_t n = 257;
    double *H = make_spd(n, 99);
    mpq_hfactor_opts o;
    mpq_hfactor_opts_default(&o);
    o.scalapack = "never";
    mpq_hfactor *ref = NULL;
    MPQ_ASSERT_OK(ctx, mpq_hfactor_local(ctx, &o, "ref", n, H, ALL, &ref));
    const int last = ctx->size > 1 ? ctx->size - 1 : 1;
    const int sets[][4] = {/* first, count, nprow, npcol */
                           {0, ctx->size, 0, 0},
                           {ctx->size > 1 ? 1 : 0, last, 0, 0},
                           {0, ctx->size, 1, 1},
                           {ctx->size - 1, 1, 0, 0}};
    for (int k = 0; k < 4; k++) {
        const int first = sets[k][0], count = sets[k][1];
        const int mine = ctx->rank >= first && ctx->rank < first + count;
        mpq_hfactor_opts so = o;
        so.scalapack = "always";
        so.nprow = sets[k][2];
        so.npcol = sets[k][3];
        so.block_size = 32;
        mpq_hfactor *f = NULL;
        MPQ_ASSERT_OK(ctx, mpq_hfactor_compute_set(ctx, &so, "set", n, mine ? H : NULL, NULL, first,
                                                   count, ALL, &f));
        assert_string_equal(f->backend, "scalapack");
        assert_true(f->lambda == ref->lambda);
        if (so.nprow == 0)
            assert_int_equal(f->nprow * f->npcol, count); /* the set's ranks alone */
        if (mine) {
            double e1 = rel_diff(n, f->chol, ref->chol);
            double e2 = rel_diff(n, f->inv, ref->inv);
            double e3 = rel_diff(n, f->inv_chol, ref->inv_chol);
            if (e1 > 1e-10 || e2 > 1e-10 || e3 > 1e-10)
                fail_msg("set [%d, %d): chol %.2e inv %.2e inv_chol %.2e", first, first + count, e1,
                         e2, e3);
        } else {
            assert_null(f->chol);
            assert_null(f->inv_chol);
        }
        mpq_hfactor_destroy(&f);
    }
    mpq_hfactor_destroy(&ref);
    free(H);
}

/* A permutation given to the factorisation equals factoring the permuted
 * copy, bit for bit (LAPACK on one rank, ScaLAPACK over every rank). */
static void test_permuted(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int64_t n = 131;
    double *H = make_spd(n, 5), *Hp = malloc(sizeof(double) * n * n);
    int64_t perm[131];
    for (int64_t i = 0; i < n; i++)
        perm[i] = (i * 37) % n; /* 37 is prime to 131 */
    for (int64_t k = 0; k < n; k++)
        H[7 * n + k] = H[k * n + 7] = 0.0; /* a dead channel (input 7) */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            Hp[i * n + j] = H[perm[i] * n + perm[j]];
    mpq_hfactor_opts o;
    mpq_hfactor_opts_default(&o);
    mpq_hfactor *a = NULL, *b = NULL;
    MPQ_ASSERT_OK(ctx, mpq_hfactor_local(ctx, &o, "copy", n, Hp, MPQ_HF_INV_CHOL, &a));
    MPQ_ASSERT_OK(ctx, mpq_hfactor_local_perm(ctx, &o, "perm", n, H, perm, MPQ_HF_INV_CHOL, &b));
    assert_memory_equal(a->inv_chol, b->inv_chol, sizeof(double) * n * n);
    assert_int_equal(a->n_dead, 1);
    assert_int_equal(b->n_dead, 1);
    assert_int_equal(a->dead[0], b->dead[0]);
    assert_true(a->lambda == b->lambda);
    mpq_hfactor_destroy(&a);
    mpq_hfactor_destroy(&b);
    o.scalapack = "always";
    o.block_size = 16;
    MPQ_ASSERT_OK(ctx, mpq_hfactor_compute_set(ctx, &o, "copy", n, Hp, NULL, 0, ctx->size,
                                               MPQ_HF_INV_CHOL, &a));
    MPQ_ASSERT_OK(ctx, mpq_hfactor_compute_set(ctx, &o, "perm", n, H, perm, 0, ctx->size,
                                               MPQ_HF_INV_CHOL, &b));
    assert_memory_equal(a->inv_chol, b->inv_chol, sizeof(double) * n * n);
    mpq_hfactor_destroy(&a);
    mpq_hfactor_destroy(&b);
    free(Hp);
    free(H);
}

/* Log sink counting retry lines. */
typedef struct log_count {
    int retries;
} log_count;

static void count_sink(void *ud, mpq_log_level level, const char *line) {
    log_count *c = ud;
    if (level == MPQ_LOG_WARN && strstr(line, "retrying with damping"))
        c->retries++;
}

static void test_not_positive_definite(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    /* Eigenvalues 4 and -2: no damping up to 1.0 (mean diag 1, so at most
     * +1 on the diagonal) makes it definite. */
    double H[4] = {1.0, 3.0, 3.0, 1.0};
    const char *modes[2] = {"never", "always"};
    for (int m = 0; m < 2; m++) {
        mpq_hfactor_opts o;
        mpq_hfactor_opts_default(&o);
        o.scalapack = modes[m];
        log_count lc = {0};
        mpq_log_set_sink(ctx, count_sink, &lc);
        mpq_hfactor *f = NULL;
        mpq_err e = mpq_hfactor_compute(ctx, &o, "blk3.bad_layer", 2, H, 0, ALL, &f);
        mpq_log_set_sink(ctx, NULL, NULL);
        assert_int_equal(e, MPQ_ERR_NUMERIC);
        assert_null(f);
        if (!strstr(ctx->err_msg, "blk3.bad_layer") || !strstr(ctx->err_msg, "damping_max"))
            fail_msg("message lacks the layer or the limit: %s", ctx->err_msg);
        if (ctx->rank == 0)
            assert_int_equal(lc.retries, 2); /* 0.01 -> 0.1 -> 1.0, then give up */
        mpq_err_clear(ctx);
    }
    /* Eigenvalue -0.05: damping 0.01 fails, 0.1 succeeds. */
    double H2[4] = {1.0, 1.05, 1.05, 1.0};
    for (int m = 0; m < 2; m++) {
        mpq_hfactor_opts o;
        mpq_hfactor_opts_default(&o);
        o.scalapack = modes[m];
        mpq_hfactor *f = NULL;
        MPQ_ASSERT_OK(ctx, mpq_hfactor_compute(ctx, &o, "blk3.rescued", 2, H2, 0, ALL, &f));
        assert_int_equal(f->retries, 1);
        assert_true(fabs(f->damping - 0.1) < 1e-15);
        assert_true(fabs(f->lambda - 0.1) < 1e-15); /* mean diag = 1 */
        if (ctx->rank == 0)
            verify(2, H2, f);
        mpq_hfactor_destroy(&f);
    }
}

static void test_rank_deficient(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    /* 10 rows of width 40 (one sample of rows 10: synth_rows(1) = 10):
     * rank(H) <= 10 < 40. Measured with the engine over all ranks. */
    const int64_t d = 40;
    assert_int_equal(synth_rows(1), 10);
    mpq_hstat *st = NULL;
    MPQ_ASSERT_OK(ctx, mpq_hstat_create(ctx, "blk0.wide_in", d, 16, &st));
    float x[10 * 40];
    if (ctx->rank == ctx->size - 1) {
        synth_sample(99, 1, d, x);
        MPQ_ASSERT_OK(ctx, mpq_hstat_begin_chunk(ctx, st));
        MPQ_ASSERT_OK(ctx, mpq_hstat_accumulate(ctx, st, x, 10, d));
        MPQ_ASSERT_OK(ctx, mpq_hstat_end_chunk(ctx, st));
    }
    MPQ_ASSERT_OK(ctx, mpq_hstat_reduce(ctx, st, 0));
    assert_int_equal(st->count, 10);
    mpq_hfactor_opts o;
    mpq_hfactor_opts_default(&o);
    for (int m = 0; m < 2; m++) {
        o.scalapack = m ? "always" : "never";
        mpq_hfactor *f = NULL;
        MPQ_ASSERT_OK(ctx, mpq_hfactor_compute(ctx, &o, st->name, d, st->H, 0, ALL, &f));
        assert_int_equal(f->retries, 0); /* damping alone makes it definite */
        /* columns 5, 18, 31 of synth data are dead */
        assert_int_equal(f->n_dead, 3);
        assert_int_equal(f->dead[0], 5);
        assert_int_equal(f->dead[1], 18);
        assert_int_equal(f->dead[2], 31);
        if (ctx->rank == 0)
            verify(d, st->H, f);
        mpq_hfactor_destroy(&f);
    }
    mpq_hstat_destroy(&st);
}

/* opts.single: U and V alone in float32 where the probe passes, within
 * float32's accuracy of the double factor; an ill-conditioned H falls back
 * to double, with the double factor's bits. */
static void test_single(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int64_t n = 96;
    double *H = make_spd(n, 41);
    double *Hbad = calloc((size_t)(n * n), sizeof(double));
    for (int64_t r = 0; r < 4; r++) /* rank 4, damped by 1e-10 of its mean diagonal */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++)
                Hbad[i * n + j] += synth_unif(43, 0, r, i) * synth_unif(43, 0, r, j);
    const unsigned kinds[2] = {MPQ_HF_RCHOL, MPQ_HF_INV_CHOL};
    for (int k = 0; k < 2; k++)
        for (int bad = 0; bad < 2; bad++) {
            mpq_hfactor_opts o;
            mpq_hfactor_opts_default(&o);
            o.damping = bad ? 1e-10 : 0.01;
            mpq_hfactor *fd = NULL, *fs = NULL;
            const double *h = bad ? Hbad : H;
            MPQ_ASSERT_OK(ctx, mpq_hfactor_local(ctx, &o, "single", n, h, kinds[k], &fd));
            o.single = 1;
            MPQ_ASSERT_OK(ctx, mpq_hfactor_local(ctx, &o, "single", n, h, kinds[k], &fs));
            const double *md = k ? fd->inv_chol : fd->rchol, *ms = k ? fs->inv_chol : fs->rchol;
            assert_int_equal(fd->single, 0);
            assert_null(fd->factor_f);
            assert_int_equal(fs->single, !bad);
            assert_true(fs->damping == fd->damping && fs->lambda == fd->lambda);
            if (bad) {
                assert_null(fs->factor_f);
                assert_memory_equal(ms, md, sizeof(double) * (size_t)(n * n));
            } else {
                /* the float32 factor alone, upper, within 1e-5 of double */
                assert_null(ms);
                assert_non_null(fs->factor_f);
                assert_true(fs->probe > 0.0 && fs->probe <= 1e-5);
                double *wide = malloc(sizeof(double) * (size_t)(n * n));
                for (int64_t i = 0; i < n * n; i++)
                    wide[i] = (double)fs->factor_f[i];
                const double e = rel_diff(n, wide, md);
                free(wide);
                if (!(e < 1e-5))
                    fail_msg("kind %d: float32 factor off the double one by %.2e", k, e);
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = 0; j < i; j++)
                        assert_true(fs->factor_f[i * n + j] == 0.0f);
            }
            mpq_hfactor_destroy(&fs);
            mpq_hfactor_destroy(&fd);
        }
    free(Hbad);
    free(H);
}

/* opts.single with a column order (mpq_hfactor_local_perm) and a dead
 * channel: the float32 factor has the bits of the one of the permuted copy
 * of H, and its probe passes on both. */
static void test_single_perm(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int64_t n = 96;
    double *H = make_spd(n, 47), *Hp = malloc(sizeof(double) * (size_t)(n * n));
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t j = 0; j < n; j++) /* dead channel 5 */
        H[5 * n + j] = H[j * n + 5] = 0.0;
    for (int64_t i = 0; i < n; i++)
        perm[i] = (i * 37 + 11) % n; /* 37 is prime to 96: a permutation */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            Hp[i * n + j] = H[perm[i] * n + perm[j]];
    const unsigned kinds[2] = {MPQ_HF_RCHOL, MPQ_HF_INV_CHOL};
    for (int k = 0; k < 2; k++) {
        mpq_hfactor_opts o;
        mpq_hfactor_opts_default(&o);
        o.single = 1;
        mpq_hfactor *fa = NULL, *fb = NULL;
        MPQ_ASSERT_OK(ctx, mpq_hfactor_local_perm(ctx, &o, "perm", n, H, perm, kinds[k], &fa));
        MPQ_ASSERT_OK(ctx, mpq_hfactor_local(ctx, &o, "copy", n, Hp, kinds[k], &fb));
        assert_int_equal(fa->single, 1);
        assert_int_equal(fb->single, 1);
        assert_int_equal(fa->n_dead, 1);
        assert_memory_equal(fa->factor_f, fb->factor_f, sizeof(float) * (size_t)(n * n));
        assert_true(fa->probe > 0.0 && fa->probe <= 1e-5 && fb->probe > 0.0 && fb->probe <= 1e-5);
        mpq_hfactor_destroy(&fa);
        mpq_hfactor_destroy(&fb);
    }
    free(perm);
    free(Hp);
    free(H);
}

static void test_dead_channels(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int64_t n = 9;
    double *H = make_spd(n, 5);
    const int64_t dead[2] = {0, 6};
    for (int k = 0; k < 2; k++)
        for (int64_t j = 0; j < n; j++)
            H[dead[k] * n + j] = H[j * n + dead[k]] = 0.0;
    mpq_hfactor_opts o;
    mpq_hfactor_opts_default(&o);
    o.damping = 0.0;
    for (int m = 0; m < 2; m++) {
        o.scalapack = m ? "always" : "never";
        mpq_hfactor *f = NULL;
        MPQ_ASSERT_OK(ctx, mpq_hfactor_compute(ctx, &o, "blk0.dead", n, H, 0, ALL, &f));
        assert_int_equal(f->n_dead, 2);
        assert_int_equal(f->dead[0], 0);
        assert_int_equal(f->dead[1], 6);
        assert_true(f->lambda == 0.0);
        if (ctx->rank == 0) {
            verify(n, H, f);
            /* The dead block of the inverse is the identity. */
            for (int k = 0; k < 2; k++)
                for (int64_t j = 0; j < n; j++)
                    assert_true(fabs(f->inv[dead[k] * n + j] - (j == dead[k])) < 1e-15);
        }
        mpq_hfactor_destroy(&f);
    }
    free(H);
}

static void test_errors(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    double H[4] = {1.0, NAN, NAN, 1.0};
    mpq_hfactor_opts o;
    mpq_hfactor_opts_default(&o);
    mpq_hfactor *f = NULL;
    mpq_err e = mpq_hfactor_compute(ctx, &o, "blk9.nan", 2, H, 0, ALL, &f);
    assert_int_equal(e, MPQ_ERR_NUMERIC);
    assert_non_null(strstr(ctx->err_msg, "blk9.nan"));
    mpq_err_clear(ctx);
    double H1[1] = {-1.0};
    e = mpq_hfactor_compute(ctx, &o, "blk9.neg", 1, H1, 0, ALL, &f);
    assert_int_equal(e, MPQ_ERR_NUMERIC);
    assert_non_null(strstr(ctx->err_msg, "not a Gram matrix"));
    mpq_err_clear(ctx);
    assert_int_equal(mpq_hfactor_compute(ctx, &o, "x", 2, H, ctx->size, ALL, &f), MPQ_ERR_ARG);
    mpq_err_clear(ctx);
    o.nprow = 3;
    o.npcol = 3; /* more ranks than exist */
    o.scalapack = "always";
    double I2[4] = {1, 0, 0, 1};
    assert_int_equal(mpq_hfactor_compute(ctx, &o, "x", 2, I2, 0, ALL, &f), MPQ_ERR_ARG);
    assert_null(f);
    mpq_err_clear(ctx);
    /* Backend choice. */
    mpq_hfactor_opts_default(&o);
    assert_string_equal(mpq_hfactor_choose(ctx, &o, 4095), "lapack");
    assert_string_equal(mpq_hfactor_choose(ctx, &o, 4096), "scalapack");
    o.scalapack = "never";
    assert_string_equal(mpq_hfactor_choose(ctx, &o, 1 << 20), "lapack");
    assert_non_null(mpq_hfactor_backend_find("scalapack"));
    assert_null(mpq_hfactor_backend_find("cusolver"));
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalapack_matches_lapack),
        cmocka_unit_test(test_scalapack_set),
        cmocka_unit_test(test_permuted),
        cmocka_unit_test(test_not_positive_definite),
        cmocka_unit_test(test_rank_deficient),
        cmocka_unit_test(test_single),
        cmocka_unit_test(test_single_perm),
        cmocka_unit_test(test_dead_channels),
        cmocka_unit_test(test_errors),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
