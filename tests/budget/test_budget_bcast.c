/* test_budget_bcast.c: mpq_budget_bcast at 1, 2 and 4 ranks.
 * Rank 0 solves and broadcasts; every rank also solves the same instance
 * itself, and the received assignment must equal its own bit for bit (the
 * solver is deterministic). A missing result on rank 0 must fail on every
 * rank with the same error, not hang. */
#include <math.h>
#include <string.h>

#include "mpq_budget.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx; /* the test driver's context */

static mpq_budget_problem *instance(mpq_ctx *ctx, int64_t L) {
    mpq_budget_problem *p = NULL;
    MPQ_ASSERT_OK(ctx, mpq_budget_problem_create(ctx, L, 4, &p));
    uint64_t s = 42;
    for (int64_t l = 0; l < L; l++) {
        int64_t c[4];
        double sc[4];
        for (int j = 0; j < 4; j++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            c[j] = 4096 * 4096 * (int64_t)(2 + j) + (int64_t)(s >> 54);
            sc[j] = (double)(s >> 11) / 9007199254740992.0 * pow(4.0, -j);
        }
        MPQ_ASSERT_OK(ctx, mpq_budget_set_layer(ctx, p, l, 4096 * 4096, 4, c, sc));
    }
    MPQ_ASSERT_OK(ctx, mpq_budget_exclude(ctx, p, 3, 1));
    return p;
}

static void test_bcast_matches_local(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_budget_problem *p = instance(ctx, 500);
    mpq_budget_spec spec = {MPQ_BUDGET_AVG_BITS, 3.25, 0};
    mpq_budget_result *mine = NULL, *got = NULL;
    MPQ_ASSERT_OK(ctx, mpq_budget_solve(ctx, p, &spec, &mine));
    if (ctx->rank == 0)
        MPQ_ASSERT_OK(ctx, mpq_budget_solve(ctx, p, &spec, &got));
    MPQ_ASSERT_OK(ctx, mpq_budget_bcast(ctx, &got));
    assert_non_null(got);
    assert_int_equal(got->n_layers, mine->n_layers);
    assert_memory_equal(got->choice, mine->choice, (size_t)mine->n_layers * sizeof *mine->choice);
    assert_true(got->objective == mine->objective);
    assert_int_equal(got->bits_used, mine->bits_used);
    assert_int_equal(got->budget_bits, mine->budget_bits);
    assert_true(got->lower_bound == mine->lower_bound);
    assert_true(got->avg_bits == mine->avg_bits && got->avg_bits <= 3.25);
    assert_int_equal(got->choice[3], -1);
    mpq_budget_result_destroy(&got);
    mpq_budget_result_destroy(&mine);
    mpq_budget_problem_destroy(&p);
}

static void test_bcast_missing_root(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_budget_result *got = NULL;
    mpq_err e = mpq_budget_bcast(ctx, &got);
    assert_int_equal(e, MPQ_ERR_ARG);
    assert_non_null(strstr(ctx->err_msg, "rank 0 has no solved assignment"));
    assert_null(got);
    mpq_err_clear(ctx);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bcast_matches_local),
        cmocka_unit_test(test_bcast_missing_root),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failed);
}
