/* test_ef_sum.c: compressed sums with error feedback (mpq_ef_sum) at 1, 2
 * and 4 ranks: on one rank (or a serial context) the identity; on more,
 * the decoded sums accumulated over many messages stay within size / 2
 * quanta per element of the exact ones with error feedback and drift
 * without it; the same bits on every rank and on every run; the traffic
 * counted; a non-finite value refused on every rank; allocation failures. */
#include <math.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx;

#define N_EL  1000 /* four blocks, the last one partial (232 elements) */
#define N_MSG 1000

/* Every rank's out holds the same bits. */
static void assert_same_on_ranks(mpq_ctx *ctx, const double *out, int64_t n) {
    if (ctx->size == 1)
        return;
    double *lo = NULL, *hi = NULL;
    MPQ_ASSERT_OK(ctx, mpq_malloc(ctx, n, sizeof *lo, (void **)&lo));
    MPQ_ASSERT_OK(ctx, mpq_malloc(ctx, n, sizeof *hi, (void **)&hi));
    assert_int_equal(MPI_Allreduce(out, lo, (int)n, MPI_DOUBLE, MPI_MIN, ctx->comm), MPI_SUCCESS);
    assert_int_equal(MPI_Allreduce(out, hi, (int)n, MPI_DOUBLE, MPI_MAX, ctx->comm), MPI_SUCCESS);
    assert_memory_equal(lo, out, (size_t)n * sizeof *out);
    assert_memory_equal(hi, out, (size_t)n * sizeof *out);
    mpq_free(lo);
    mpq_free(hi);
}

/* One rank, a serial context too: the exact values, nothing sent. */
static void test_identity_one_rank(void **state) {
    (void)state;
    mpq_ctx *serial = NULL;
    assert_int_equal(mpq_ctx_create(MPI_COMM_NULL, &serial), MPQ_OK);
    mpq_ctx *ctxs[2] = {serial, g_ctx->size == 1 ? g_ctx : NULL};
    for (int c = 0; c < 2 && ctxs[c]; c++) {
        mpq_ctx *ctx = ctxs[c];
        mpq_ef *ef = NULL;
        MPQ_ASSERT_OK(ctx, mpq_ef_create(ctx, N_EL, 1, &ef));
        double in[N_EL], out[N_EL];
        for (int t = 0; t < 3; t++) {
            for (int k = 0; k < N_EL; k++)
                in[k] = sin(0.37 * k + t) * (k % 7 == 0 ? 1e6 : 1e-3);
            MPQ_ASSERT_OK(ctx, mpq_ef_sum(ctx, ef, in, out, "test"));
            assert_memory_equal(in, out, sizeof in);
        }
        assert_true(ef->sent == 0 && ef->exact == 0 && ef->nmsg == 0);
        mpq_ef_destroy(&ef);
        assert_null(ef);
    }
    mpq_ctx_destroy(&serial);
}

/* N_MSG messages of a biased signal: the first element of each block is
 * 127 (the scale is then exactly 1), the others 0.3 and -0.45 on every
 * rank, values that round to code 0 every time without feedback.
 * Returns the largest |decoded - exact| of the accumulated sums, in
 * quanta. */
static double accumulated_error(mpq_ctx *ctx, int feedback) {
    mpq_ef *ef = NULL;
    MPQ_ASSERT_OK(ctx, mpq_ef_create(ctx, N_EL, feedback, &ef));
    double in[N_EL], out[N_EL], acc_q[N_EL] = {0}, acc_x[N_EL] = {0};
    for (int k = 0; k < N_EL; k++)
        in[k] = k % MPQ_EF_BLOCK == 0 ? 127.0 : k % 2 ? -0.45 : 0.3;
    for (int t = 0; t < N_MSG; t++) {
        MPQ_ASSERT_OK(ctx, mpq_ef_sum(ctx, ef, in, out, "test"));
        for (int k = 0; k < N_EL; k++) {
            acc_q[k] += out[k];
            acc_x[k] += in[k] * ctx->size;
        }
    }
    assert_same_on_ranks(ctx, acc_q, N_EL);
    double worst = 0.0;
    for (int k = 0; k < N_EL; k++)
        worst = fmax(worst, fabs(acc_q[k] - acc_x[k])); /* the scale is 1: in quanta */
    if (ctx->size > 1) {
        /* codes as int16 and four scales per message, against 8 bytes per element */
        assert_true(ef->nmsg == N_MSG);
        assert_true(ef->sent == (size_t)N_MSG * (4 * 8 + 2 * N_EL));
        assert_true(ef->exact == (size_t)N_MSG * 8 * N_EL);
        assert_true((double)ef->exact / (double)ef->sent > 3.8);
    }
    mpq_ef_destroy(&ef);
    return worst;
}

static void test_feedback_bounds_the_error(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const double with = accumulated_error(ctx, 1);
    const double without = accumulated_error(ctx, 0);
    if (ctx->size == 1) {
        assert_true(with == 0.0 && without == 0.0);
        return;
    }
    /* each rank's residual is at most half a quantum: one quantum at 2 ranks */
    assert_true(with <= 0.5 * ctx->size + 1e-9);
    /* without feedback every message decodes to 0 there: 0.3 x size x N_MSG */
    assert_true(without > 100.0);
}

/* Values that differ per rank, element and message, over many orders of
 * magnitude: the accumulated error stays within size / 2 of the last
 * message's quanta, and a second run with a fresh state repeats the bits. */
static void run_random(mpq_ctx *ctx, double *acc_q, double *worst_q) {
    mpq_ef *ef = NULL;
    MPQ_ASSERT_OK(ctx, mpq_ef_create(ctx, N_EL, 1, &ef));
    double in[N_EL], out[N_EL], acc_x[N_EL] = {0};
    memset(acc_q, 0, N_EL * sizeof *acc_q);
    uint64_t z = 12345;
    for (int t = 0; t < 200; t++) {
        for (int r = 0; r < ctx->size; r++)
            for (int k = 0; k < N_EL; k++) {
                z = z * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
                const double u = (double)(z >> 11) * 0x1p-53 - 0.5;
                const double v = u * ldexp(1.0, (k / MPQ_EF_BLOCK) * 10 - 15);
                acc_x[k] += v;
                if (r == ctx->rank)
                    in[k] = v;
            }
        MPQ_ASSERT_OK(ctx, mpq_ef_sum(ctx, ef, in, out, "test"));
        for (int k = 0; k < N_EL; k++)
            acc_q[k] += out[k];
    }
    assert_same_on_ranks(ctx, acc_q, N_EL);
    *worst_q = 0.0;
    for (int k = 0; k < N_EL; k++) {
        const double s = ctx->size > 1 ? ef->scale[k / MPQ_EF_BLOCK] : 1.0;
        *worst_q = fmax(*worst_q, fabs(acc_q[k] - acc_x[k]) / s);
    }
    mpq_ef_destroy(&ef);
}

static void test_random_signal(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    double a[N_EL], b[N_EL], wa = 0.0, wb = 0.0;
    run_random(ctx, a, &wa);
    run_random(ctx, b, &wb);
    assert_memory_equal(a, b, sizeof a);
    assert_true(wa <= 0.5 * ctx->size + 1e-6);
}

/* A NaN or an infinity on one rank: every rank fails, naming the block. */
static void test_nonfinite(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    if (ctx->size == 1)
        return;
    for (int kind = 0; kind < 2; kind++) {
        mpq_err_clear(ctx);
        mpq_ef *ef = NULL;
        MPQ_ASSERT_OK(ctx, mpq_ef_create(ctx, N_EL, 1, &ef));
        double in[N_EL] = {0}, out[N_EL];
        if (ctx->rank == ctx->size - 1)
            in[300] = kind ? -INFINITY : NAN;
        assert_int_equal(mpq_ef_sum(ctx, ef, in, out, "test gradients"), MPQ_ERR_NUMERIC);
        assert_non_null(strstr(ctx->err_msg, "test gradients: a value among elements 256 to 511 "
                                             "is not finite on some rank"));
        mpq_ef_destroy(&ef);
    }
    mpq_err_clear(ctx);
}

/* Every allocation of mpq_ef_create failing in turn: an error, no leak. */
static void test_alloc_failures(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int nalloc = ctx->size > 1 ? 4 : 1;
    for (int k = 0; k < nalloc; k++) {
        mpq_ef *ef = NULL;
        mpq_alloc_fail_after(ctx, k);
        assert_int_equal(mpq_ef_create(ctx, N_EL, 1, &ef), MPQ_ERR_NOMEM);
        assert_null(ef);
    }
    mpq_alloc_fail_after(ctx, -1);
    mpq_ef *ef = NULL;
    MPQ_ASSERT_OK(ctx, mpq_ef_create(ctx, N_EL, 1, &ef));
    mpq_ef_destroy(&ef);
    mpq_ef_destroy(&ef); /* NULL-safe */
    assert_int_equal(mpq_ef_create(ctx, -1, 1, &ef), MPQ_ERR_ARG);
    mpq_err_clear(ctx);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_one_rank), cmocka_unit_test(test_feedback_bounds_the_error),
        cmocka_unit_test(test_random_signal),     cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_alloc_failures),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failed);
}
