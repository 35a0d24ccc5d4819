/* test_hstat.c: accumulation and exact reduction of Hessian statistics on
 * synthetic activations with awkward sizes (d = 61, 37 samples of 3..13
 * rows, chunks of 4 samples, so neither rows nor chunks divide by the rank
 * count).
 *
 * Checks: H equals a naive double loop within 1e-12 (relative to
 * sqrt(H_ii H_jj)); count, absmax, sumsq exact; dead channels exactly zero;
 * the reduced H is bit-identical to a serial recomputation (serial context,
 * all chunks on one rank), for two different chunk-to-rank assignments, for
 * reduction to one rank or all, and for any split of a chunk's rows into
 * calls; a streamed statistic (d = 300, two panels, summed onto its root
 * chunk round by chunk round, ranks past their last chunk taking part with
 * no rows) gives the same bits as the serial one while only the root holds
 * the accumulator; every error path.
 *
 * With --dump FILE [--assign rr|block] it only writes H, count and absmax
 * (rank 0) for the cross-rank-count comparison of test_bitident.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_hessian.h"
#include "mpq_test.h"
#include "synth.h"

#define D     61
#define NS    37
#define CHUNK 4
#define SEED  12345u
#define MAXR  16

static mpq_ctx *g_ctx;

static int ctx_rank0(void) {
    return g_ctx->rank == 0;
}

static int64_t nchunks(void) {
    return (NS + CHUNK - 1) / CHUNK;
}

/* Feeds this rank's chunks (assignment round-robin or in contiguous blocks;
 * split: one accumulate call per row). */
static mpq_err feed(mpq_ctx *ctx, mpq_hstat *st, int rank, int size, int blocked, int split) {
    float x[MAXR * D];
    int64_t nc = nchunks();
    for (int64_t c = 0; c < nc; c++) {
        int owner = blocked ? (int)(c * size / nc) : (int)(c % size);
        if (owner != rank)
            continue;
        MPQ_CALL(mpq_hstat_begin_chunk(ctx, st));
        for (int64_t s = c * CHUNK; s < (c + 1) * CHUNK && s < NS; s++) {
            synth_sample(SEED, s, D, x);
            int64_t rows = synth_rows(s);
            if (split) {
                for (int64_t r = 0; r < rows; r++)
                    MPQ_CALL(mpq_hstat_accumulate(ctx, st, x + r * D, 1, D));
            } else {
                MPQ_CALL(mpq_hstat_accumulate(ctx, st, x, rows, D));
            }
        }
        MPQ_CALL(mpq_hstat_end_chunk(ctx, st));
    }
    return MPQ_OK;
}

static mpq_hstat *measure(mpq_ctx *ctx, int blocked, int split, int target, int bound) {
    mpq_hstat *st = NULL;
    MPQ_ASSERT_OK(ctx, mpq_hstat_create(ctx, "blk0.attn_in", D, bound, &st));
    MPQ_ASSERT_OK(ctx, feed(ctx, st, ctx->rank, ctx->size, blocked, split));
    MPQ_ASSERT_OK(ctx, mpq_hstat_reduce(ctx, st, target));
    return st;
}

/* Naive reference over every sample in order. */
static void naive(double *H, double *absmax, int64_t *count) {
    float x[MAXR * D];
    memset(H, 0, sizeof(double) * D * D);
    memset(absmax, 0, sizeof(double) * D);
    *count = 0;
    for (int64_t s = 0; s < NS; s++) {
        synth_sample(SEED, s, D, x);
        for (int64_t r = 0; r < synth_rows(s); r++) {
            for (int i = 0; i < D; i++) {
                double xi = x[r * D + i];
                if (fabs(xi) > absmax[i])
                    absmax[i] = fabs(xi);
                for (int j = 0; j < D; j++)
                    H[i * D + j] += xi * (double)x[r * D + j];
            }
            (*count)++;
        }
    }
}

static void check_against_naive(const mpq_hstat *st) {
    static double Href[D * D], aref[D];
    int64_t cref = 0;
    naive(Href, aref, &cref);
    assert_int_equal(st->count, cref);
    assert_int_equal(st->nchunks, nchunks());
    double worst = 0.0;
    for (int i = 0; i < D; i++) {
        assert_true(st->absmax[i] == aref[i]);
        assert_memory_equal(&st->sumsq[i], &st->H[i * D + i], sizeof(double));
        for (int j = 0; j < D; j++) {
            double h = st->H[i * D + j];
            assert_memory_equal(&h, &st->H[j * D + i], sizeof h); /* symmetric */
            double scale = sqrt(Href[i * D + i] * Href[j * D + j]);
            if (scale == 0.0) {
                assert_true(h == 0.0); /* dead channel: exactly zero */
                continue;
            }
            double rel = fabs(h - Href[i * D + j]) / scale;
            if (rel > worst)
                worst = rel;
        }
    }
    if (ctx_rank0())
        print_message("H vs naive: worst relative difference %.3e (tolerance 1e-12)\n", worst);
    if (worst > 1e-12)
        fail_msg("H differs from the naive reference by %.3e (relative), tolerance 1e-12", worst);
}

static void test_matches_naive(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_hstat *st = measure(ctx, 0, 0, MPQ_HSTAT_ALL, 16);
    check_against_naive(st);
    /* A tighter bound (|x| <= 2^8 holds: values stay below 151) changes the
     * grid but not the accuracy. */
    mpq_hstat *st8 = measure(ctx, 0, 0, MPQ_HSTAT_ALL, 8);
    check_against_naive(st8);
    mpq_hstat_destroy(&st8);
    mpq_hstat_destroy(&st);
    assert_null(st);
    mpq_hstat_destroy(&st); /* NULL-safe */
}

static void test_rank_independent(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    /* Serial recomputation: a context without communicator, every chunk on
     * this rank, rows fed one by one. */
    mpq_ctx *serial = NULL;
    assert_int_equal(mpq_ctx_create(MPI_COMM_NULL, &serial), MPQ_OK);
    mpq_hstat *ref = NULL;
    MPQ_ASSERT_OK(serial, mpq_hstat_create(serial, "blk0.attn_in", D, 16, &ref));
    MPQ_ASSERT_OK(serial, feed(serial, ref, 0, 1, 0, 1));
    MPQ_ASSERT_OK(serial, mpq_hstat_reduce(serial, ref, MPQ_HSTAT_ALL));

    mpq_hstat *rr = measure(ctx, 0, 0, MPQ_HSTAT_ALL, 16);
    mpq_hstat *blk = measure(ctx, 1, 1, MPQ_HSTAT_ALL, 16);
    int target = ctx->size - 1;
    mpq_hstat *one = measure(ctx, 0, 0, target, 16);
    assert_memory_equal(rr->H, ref->H, sizeof(double) * D * D);
    assert_memory_equal(blk->H, ref->H, sizeof(double) * D * D);
    assert_memory_equal(rr->absmax, ref->absmax, sizeof(double) * D);
    assert_int_equal(rr->count, ref->count);
    if (ctx->rank == target) {
        assert_non_null(one->H);
        assert_memory_equal(one->H, ref->H, sizeof(double) * D * D);
        assert_memory_equal(one->sumsq, ref->sumsq, sizeof(double) * D);
    } else {
        assert_null(one->H);
    }
    /* count, absmax and sumsq (the diagonal's own exact sum) everywhere */
    assert_int_equal(one->count, ref->count);
    assert_memory_equal(one->absmax, ref->absmax, sizeof(double) * D);
    assert_memory_equal(one->sumsq, ref->sumsq, sizeof(double) * D);
    /* A set of owners: the last ranks but the first (rank 0 alone at 1 rank). */
    int first = ctx->size > 1 ? 1 : 0, count = ctx->size > 1 ? ctx->size - 1 : 1;
    mpq_hstat *set = NULL;
    MPQ_ASSERT_OK(ctx, mpq_hstat_create(ctx, "blk0.attn_in", D, 16, &set));
    MPQ_ASSERT_OK(ctx, feed(ctx, set, ctx->rank, ctx->size, 0, 0));
    MPQ_ASSERT_OK(ctx, mpq_hstat_reduce_set(ctx, set, first, count));
    if (ctx->rank >= first) {
        assert_non_null(set->H);
        assert_memory_equal(set->H, ref->H, sizeof(double) * D * D);
    } else {
        assert_null(set->H);
    }
    assert_null(set->acc);
    assert_memory_equal(set->sumsq, ref->sumsq, sizeof(double) * D);
    assert_int_equal(set->count, ref->count);
    mpq_hstat_destroy(&set);
    mpq_hstat_destroy(&one);
    mpq_hstat_destroy(&blk);
    mpq_hstat_destroy(&rr);
    mpq_hstat_destroy(&ref);
    mpq_ctx_destroy(&serial);
}

static void expect(mpq_ctx *ctx, mpq_err got, mpq_err want, const char *needle) {
    if (got != want)
        fail_msg("expected %s, got %s (%s)", mpq_err_name(want), mpq_err_name(got), ctx->err_msg);
    if (needle && !strstr(ctx->err_msg, needle))
        fail_msg("message '%s' lacks '%s'", ctx->err_msg, needle);
    mpq_err_clear(ctx);
}

static void test_errors(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_hstat *st = NULL;
    float x[2 * 5] = {0};
    expect(ctx, mpq_hstat_create(ctx, "a/b", 5, 16, &st), MPQ_ERR_ARG, "a/b");
    expect(ctx, mpq_hstat_create(ctx, "w", 0, 16, &st), MPQ_ERR_ARG, "width");
    expect(ctx, mpq_hstat_create(ctx, "w", 5, 99, &st), MPQ_ERR_ARG, "bound_log2");
    assert_null(st);
    MPQ_ASSERT_OK(ctx, mpq_hstat_create(ctx, "blk1.mlp_in", 5, 3, &st));
    expect(ctx, mpq_hstat_accumulate(ctx, st, x, 2, 5), MPQ_ERR_ARG, "outside a chunk");
    expect(ctx, mpq_hstat_end_chunk(ctx, st), MPQ_ERR_ARG, "without begin_chunk");
    MPQ_ASSERT_OK(ctx, mpq_hstat_begin_chunk(ctx, st));
    expect(ctx, mpq_hstat_begin_chunk(ctx, st), MPQ_ERR_ARG, "inside a chunk");
    expect(ctx, mpq_hstat_accumulate(ctx, st, x, 2, 4), MPQ_ERR_ARG, "width 4");
    x[7] = 9.0f; /* > 2^3 */
    expect(ctx, mpq_hstat_accumulate(ctx, st, x, 2, 5), MPQ_ERR_RANGE, "blk1.mlp_in");
    x[7] = NAN;
    expect(ctx, mpq_hstat_accumulate(ctx, st, x, 2, 5), MPQ_ERR_NUMERIC, "channel 2");
    x[7] = 8.0f; /* exactly the bound: allowed */
    MPQ_ASSERT_OK(ctx, mpq_hstat_accumulate(ctx, st, x, 2, 5));
    /* Reduce with a chunk open: every rank is in the same state, so every
     * rank gets the error (agreed, no hang). */
    expect(ctx, mpq_hstat_reduce(ctx, st, MPQ_HSTAT_ALL), MPQ_ERR_ARG, "chunk still open");
    MPQ_ASSERT_OK(ctx, mpq_hstat_end_chunk(ctx, st));
    MPQ_ASSERT_OK(ctx, mpq_hstat_reduce(ctx, st, MPQ_HSTAT_ALL));
    assert_true(st->H[2 * 5 + 2] == 64.0 * ctx->size);
    assert_int_equal(st->count, 2 * ctx->size);
    expect(ctx, mpq_hstat_begin_chunk(ctx, st), MPQ_ERR_ARG, "after the reduction");
    expect(ctx, mpq_hstat_reduce(ctx, st, MPQ_HSTAT_ALL), MPQ_ERR_ARG, "already reduced");
    mpq_hstat_destroy(&st);
    /* Only rank 0 sees a bad row: the error must reach every rank through
     * the reduction's agreement instead of a hang. */
    MPQ_ASSERT_OK(ctx, mpq_hstat_create(ctx, "blk2.down_in", 5, 3, &st));
    MPQ_ASSERT_OK(ctx, mpq_hstat_begin_chunk(ctx, st));
    x[7] = 1.0f;
    mpq_err e = mpq_hstat_accumulate(ctx, st, x, 2, 5);
    if (ctx->rank == 0)
        e = mpq_hstat_reduce(ctx, st, 0); /* open chunk: local error on rank 0 only */
    else {
        MPQ_ASSERT_OK(ctx, e);
        MPQ_ASSERT_OK(ctx, mpq_hstat_end_chunk(ctx, st));
        e = mpq_hstat_reduce(ctx, st, 0);
    }
    expect(ctx, e, MPQ_ERR_ARG, "chunk still open");
    mpq_hstat_destroy(&st);
    /* Allocation failure is reported, not crashed on. */
    mpq_alloc_fail_after(ctx, 1);
    expect(ctx, mpq_hstat_create(ctx, "w", 5, 3, &st), MPQ_ERR_NOMEM, NULL);
    assert_null(st);
}

/* Streamed statistic (mpq_hstat_create_at) of width DW (two panels),
 * chunks fed round by round (round-robin: in the last round some ranks
 * have no chunk and take part with no rows), reduced to target (a rank or
 * MPQ_HSTAT_ALL) with the root as given. */
#define DW 300
static mpq_err feed_rounds(mpq_ctx *ctx, mpq_hstat *st, float *x) {
    int64_t nc = nchunks(), rounds = (nc + ctx->size - 1) / ctx->size;
    for (int64_t r = 0; r < rounds; r++) {
        int64_t c = r * ctx->size + ctx->rank;
        MPQ_CALL(mpq_hstat_begin_chunk(ctx, st));
        for (int64_t s = c * CHUNK; c < nc && s < (c + 1) * CHUNK && s < NS; s++) {
            synth_sample(SEED, s, DW, x);
            MPQ_CALL(mpq_hstat_accumulate(ctx, st, x, synth_rows(s), DW));
        }
        MPQ_CALL(mpq_hstat_end_chunk(ctx, st));
    }
    return MPQ_OK;
}

static void test_streamed(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    float *x = malloc(sizeof(float) * MAXR * DW);
    assert_non_null(x);
    mpq_ctx *serial = NULL;
    assert_int_equal(mpq_ctx_create(MPI_COMM_NULL, &serial), MPQ_OK);
    mpq_hstat *ref = NULL;
    MPQ_ASSERT_OK(serial, mpq_hstat_create(serial, "blk0.wide_in", DW, 16, &ref));
    MPQ_ASSERT_OK(serial, feed_rounds(serial, ref, x));
    MPQ_ASSERT_OK(serial, mpq_hstat_reduce(serial, ref, MPQ_HSTAT_ALL));
    const int root = ctx->size - 1;
    /* reduced to the root alone, to every rank, to every rank as a set */
    for (int mode = 0; mode < 3; mode++) {
        const int all = mode == 1, whole = mode == 2;
        mpq_hstat *st = NULL;
        MPQ_ASSERT_OK(ctx, mpq_hstat_create_at(ctx, "blk0.wide_in", DW, 16, root, &st));
        /* only the root holds the accumulator */
        if (ctx->size > 1 && ctx->rank != root) {
            assert_null(st->acc);
            assert_non_null(st->fxbuf);
        } else {
            assert_non_null(st->acc);
        }
        MPQ_ASSERT_OK(ctx, feed_rounds(ctx, st, x));
        if (all)
            MPQ_ASSERT_OK(ctx, mpq_hstat_reduce(ctx, st, MPQ_HSTAT_ALL));
        else if (whole)
            MPQ_ASSERT_OK(ctx, mpq_hstat_reduce_set(ctx, st, 0, ctx->size));
        else
            MPQ_ASSERT_OK(ctx, mpq_hstat_reduce_set(ctx, st, root, 1));
        if (all || whole || ctx->rank == root)
            assert_memory_equal(st->H, ref->H, sizeof(double) * DW * DW);
        else
            assert_null(st->H);
        assert_memory_equal(st->sumsq, ref->sumsq, sizeof(double) * DW);
        assert_memory_equal(st->absmax, ref->absmax, sizeof(double) * DW);
        assert_int_equal(st->count, ref->count);
        assert_int_equal(st->nchunks, ref->nchunks);
        mpq_hstat_destroy(&st);
    }
    /* a streamed statistic goes to its root, and the root must be a rank */
    mpq_hstat *st = NULL;
    MPQ_ASSERT_OK(ctx, mpq_hstat_create_at(ctx, "w", 5, 3, 0, &st));
    if (ctx->size > 1)
        expect(ctx, mpq_hstat_reduce_set(ctx, st, 1, 1), MPQ_ERR_ARG,
               "summed on rank 0, reduced to ranks [1, 2)");
    mpq_hstat_destroy(&st);
    expect(ctx, mpq_hstat_create_at(ctx, "w", 5, 3, ctx->size, &st), MPQ_ERR_ARG, "is not a rank");
    mpq_hstat_destroy(&ref);
    mpq_ctx_destroy(&serial);
    free(x);
}

static int dump(mpq_ctx *ctx, const char *path, int blocked) {
    mpq_hstat *st = measure(ctx, blocked, 0, 0, 16);
    if (ctx->rank == 0) {
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(st->H, sizeof(double), D * D, f) != D * D ||
            fwrite(&st->count, sizeof st->count, 1, f) != 1 ||
            fwrite(st->absmax, sizeof(double), D, f) != D || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", path);
            return 1;
        }
    }
    mpq_hstat_destroy(&st);
    return 0;
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    if (argc >= 3 && strcmp(argv[1], "--dump") == 0) {
        int blocked =
            argc >= 5 && strcmp(argv[3], "--assign") == 0 && strcmp(argv[4], "block") == 0;
        return mpq_test_finish(&g_ctx, dump(g_ctx, argv[2], blocked));
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_naive),
        cmocka_unit_test(test_rank_independent),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_streamed),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
