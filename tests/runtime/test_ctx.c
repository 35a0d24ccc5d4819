/* test_ctx.c: the context at 1, 2 and 4 ranks: error agreement (a failure on
 * one rank reaches every rank with the raising rank's message), byte
 * broadcast, process grids, checked allocation and casts, tracebacks. */
#include <limits.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_scalapack.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx;

static mpq_err fail_here(mpq_ctx *ctx, int value) {
    MPQ_CHECK(value < 10, MPQ_ERR_NUMERIC, "value %d is too large on rank %d", value, ctx->rank);
    return MPQ_OK;
}

static mpq_err call_fail_here(mpq_ctx *ctx, int value) {
    MPQ_CALL(fail_here(ctx, value));
    return MPQ_OK;
}

static void test_agree_ok(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_err_clear(ctx);
    assert_int_equal(mpq_agree(ctx, MPQ_OK), MPQ_OK);
}

/* Only the last rank fails; every rank must learn the code, the message and
 * the rank. */
static void test_agree_one_rank_fails(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_err_clear(ctx);
    int bad = ctx->size - 1;
    mpq_err e = call_fail_here(ctx, ctx->rank == bad ? 42 : 1);
    assert_int_equal(e, ctx->rank == bad ? MPQ_ERR_NUMERIC : MPQ_OK);
    e = mpq_agree(ctx, e);
    assert_int_equal(e, MPQ_ERR_NUMERIC);
    assert_int_equal(ctx->err_rank, bad);
    char want[128];
    snprintf(want, sizeof want, "value 42 is too large on rank %d", bad);
    assert_string_equal(ctx->err_msg, want);
    /* The traceback has both frames, innermost first. */
    const char *t1 = strstr(ctx->err_trace, "fail_here()");
    const char *t2 = strstr(ctx->err_trace, "call_fail_here()");
    assert_non_null(t1);
    assert_non_null(t2);
    assert_true(t1 < t2);
    assert_non_null(strstr(ctx->err_trace, "test_ctx.c:"));
}

/* Several ranks fail with different codes: the lowest failing rank wins. */
static void test_agree_lowest_rank_wins(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_err_clear(ctx);
    mpq_err mine = MPQ_OK;
    if (ctx->rank >= ctx->size / 2)
        mine = mpq_err_raise(ctx, ctx->rank % 2 ? MPQ_ERR_IO : MPQ_ERR_FORMAT, __FILE__, __LINE__,
                             __func__, "failure of rank %d", ctx->rank);
    mpq_err e = mpq_agree(ctx, mine);
    int first = ctx->size / 2;
    assert_int_equal(e, first % 2 ? MPQ_ERR_IO : MPQ_ERR_FORMAT);
    assert_int_equal(ctx->err_rank, first);
    char want[64];
    snprintf(want, sizeof want, "failure of rank %d", first);
    assert_string_equal(ctx->err_msg, want);
    mpq_err_clear(ctx);
}

static void test_bcast_bytes(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char text[] = "configuration bytes \x01\x02 with a NUL \0 inside";
    int64_t len = (int64_t)sizeof text;
    char *buf = ctx->rank == 0 ? text : NULL;
    MPQ_ASSERT_OK(ctx, mpq_bcast_bytes(ctx, 0, &buf, &len));
    assert_int_equal(len, (int64_t)sizeof text);
    assert_memory_equal(buf, text, sizeof text);
    if (ctx->rank != 0)
        mpq_free(buf);
}

static void test_grid(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_grid *g = NULL;
    MPQ_ASSERT_OK(ctx, mpq_grid_create(ctx, 0, 0, &g));
    assert_int_equal(g->nprow * g->npcol, ctx->size);
    assert_true(g->nprow <= g->npcol);
    assert_int_equal(g->myrow, ctx->rank / g->npcol);
    assert_int_equal(g->mycol, ctx->rank % g->npcol);
    int n = 0;
    MPI_Comm_size(g->row_comm, &n);
    assert_int_equal(n, g->npcol);
    MPI_Comm_size(g->col_comm, &n);
    assert_int_equal(n, g->nprow);
    int pr, pc, r, c;
    Cblacs_gridinfo(g->blacs_ctxt, &pr, &pc, &r, &c);
    assert_int_equal(pr, g->nprow);
    assert_int_equal(r, g->myrow);
    mpq_grid_destroy(ctx, &g);
    assert_null(g);
    mpq_grid_destroy(ctx, &g); /* NULL-safe */

    /* A 1 x 1 grid leaves every other rank outside. */
    MPQ_ASSERT_OK(ctx, mpq_grid_create(ctx, 1, 1, &g));
    assert_int_equal(g->myrow, ctx->rank == 0 ? 0 : -1);
    assert_int_equal(g->blacs_ctxt >= 0, ctx->rank == 0);
    mpq_grid_destroy(ctx, &g);

    /* Too many ranks requested: an error on every rank (local check). */
    mpq_err e = mpq_grid_create(ctx, ctx->size + 1, 1, &g);
    assert_int_equal(e, MPQ_ERR_ARG);
    assert_null(g);
    assert_non_null(strstr(ctx->err_msg, "needs"));
    mpq_err_clear(ctx);
}

static void test_alloc_and_casts(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    double *p = NULL;
    MPQ_ASSERT_OK(ctx, mpq_malloc(ctx, 1000, sizeof *p, (void **)&p));
    assert_int_equal((uintptr_t)p % 64, 0);
    for (int i = 0; i < 1000; i++)
        assert_true(p[i] == 0.0);
    MPQ_ASSERT_OK(ctx, mpq_realloc(ctx, 1000, 2000, sizeof *p, (void **)&p));
    assert_true(p[1999] == 0.0);
    mpq_free(p);

    void *q = NULL;
    assert_int_equal(mpq_malloc(ctx, INT64_MAX / 2, 16, &q), MPQ_ERR_NOMEM);
    assert_null(q);
    assert_non_null(strstr(ctx->err_msg, "overflows"));
    assert_int_equal(mpq_malloc(ctx, -1, 4, &q), MPQ_ERR_NOMEM);

    mpq_alloc_fail_after(ctx, 1);
    MPQ_ASSERT_OK(ctx, mpq_malloc(ctx, 10, 1, &q));
    mpq_free(q);
    assert_int_equal(mpq_malloc(ctx, 10, 1, &q), MPQ_ERR_NOMEM);
    assert_non_null(strstr(ctx->err_msg, "test allocator"));
    MPQ_ASSERT_OK(ctx, mpq_malloc(ctx, 10, 1, &q)); /* disarmed again */
    mpq_free(q);

    int out = 0;
    MPQ_ASSERT_OK(ctx, mpq_to_int(ctx, INT_MAX, "n", &out));
    assert_int_equal(out, INT_MAX);
    assert_int_equal(mpq_to_int(ctx, (int64_t)INT_MAX + 1, "rows", &out), MPQ_ERR_RANGE);
    assert_non_null(strstr(ctx->err_msg, "rows = 2147483648"));
    int64_t r = 0;
    assert_int_equal(mpq_mul64(ctx, INT64_MAX / 3, 4, "bytes", &r), MPQ_ERR_RANGE);
    MPQ_ASSERT_OK(ctx, mpq_mul64(ctx, 1 << 20, 1 << 20, "bytes", &r));
    assert_int_equal(r, (int64_t)1 << 40);
    assert_int_equal(mpq_add64(ctx, INT64_MAX, 1, "offset", &r), MPQ_ERR_RANGE);
    mpq_err_clear(ctx);
}

static void test_err_names(void **state) {
    (void)state;
    assert_string_equal(mpq_err_name(MPQ_ERR_IO), "MPQ_ERR_IO");
    assert_string_equal(mpq_err_name(MPQ_ERR_COUNT), "MPQ_ERR_UNKNOWN");
    for (int i = 0; i < MPQ_ERR_COUNT; i++)
        assert_non_null(strstr(mpq_err_name((mpq_err)i), "MPQ_"));
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agree_ok),
        cmocka_unit_test(test_agree_one_rank_fails),
        cmocka_unit_test(test_agree_lowest_rank_wins),
        cmocka_unit_test(test_bcast_bytes),
        cmocka_unit_test(test_grid),
        cmocka_unit_test(test_alloc_and_casts),
        cmocka_unit_test(test_err_names),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failed);
}
