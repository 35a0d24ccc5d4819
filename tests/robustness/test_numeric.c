/* test_numeric.c: numerical fault checks (mpq_robust.h).
 *
 * - mpq_check_finite: a clean array passes; NaN, +Inf, -Inf planted at
 *   known positions of a [64][172] matrix are counted exactly (against a
 *   brute-force count) and the message names the layer, the count and the
 *   first position [row][col]; a flat array reports a flat index.
 * - policy: error -> MPQ_ERR_NUMERIC; skip -> MPQ_OK, *skip = 1, one
 *   warning that names the layer and says it stays in full precision;
 *   clean data never skips or warns.
 * - robust.nonfinite: default "error", "skip" accepted, anything else is a
 *   configuration error naming the key; the policy parser agrees.
 * - calibration too small: rows < width warns naming the layer and the
 *   numbers; rows >= width is silent.
 * (A Hessian that no damping rescues, and a rank-deficient H that damping
 * does, are tested in tests/hessian/test_hfactor.c.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_config.h"
#include "mpq_robust.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx;

typedef struct {
    int nwarn;
    char last[1024];
} captured;

static void sink(void *ud, mpq_log_level level, const char *line) {
    captured *c = ud;
    if (level == MPQ_LOG_WARN) {
        c->nwarn++;
        snprintf(c->last, sizeof c->last, "%s", line);
    }
}

static float *matrix(int64_t rows, int64_t cols) {
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++)
        w[i] = (float)sin((double)i) * 0.1f;
    return w;
}

static int64_t brute_count(const float *w, int64_t n) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
        c += isnan(w[i]) || isinf(w[i]);
    return c;
}

static void test_check_finite(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int64_t R = 64, C = 172;
    float *w = matrix(R, C);
    int64_t nbad = -1;
    MPQ_ASSERT_OK(ctx, mpq_check_finite(ctx, w, R * C, C, "layer L (weights)", &nbad));
    assert_int_equal(nbad, 0);
    w[5 * C + 17] = NAN;
    w[40 * C + 0] = INFINITY;
    w[63 * C + 171] = -INFINITY;
    assert_int_equal(
        mpq_check_finite(ctx, w, R * C, C, "layer model.layers.3.mlp.up_proj.weight", &nbad),
        MPQ_ERR_NUMERIC);
    assert_int_equal(nbad, brute_count(w, R * C));
    assert_int_equal(nbad, 3);
    const char *msg = mpq_err_message(ctx);
    assert_non_null(strstr(msg, "model.layers.3.mlp.up_proj.weight"));
    assert_non_null(strstr(msg, "3 non-finite values in 64 x 172"));
    assert_non_null(strstr(msg, "NaN at [5][17]"));
    mpq_err_clear(ctx);
    /* First is now +Inf at [40][0]. */
    w[5 * C + 17] = 1.0f;
    assert_int_equal(mpq_check_finite(ctx, w, R * C, C, "x", &nbad), MPQ_ERR_NUMERIC);
    assert_non_null(strstr(mpq_err_message(ctx), "2 non-finite values"));
    assert_non_null(strstr(mpq_err_message(ctx), "+Inf at [40][0]"));
    mpq_err_clear(ctx);
    /* Flat: -Inf at the last index. */
    w[40 * C] = 0.0f;
    assert_int_equal(mpq_check_finite(ctx, w, R * C, 0, "bias", NULL), MPQ_ERR_NUMERIC);
    char want[64];
    snprintf(want, sizeof want, "1 non-finite value in %lld (first: -Inf at [%lld])",
             (long long)(R * C), (long long)(R * C - 1));
    assert_non_null(strstr(mpq_err_message(ctx), want));
    mpq_err_clear(ctx);
    /* Empty is clean. */
    MPQ_ASSERT_OK(ctx, mpq_check_finite(ctx, NULL, 0, 0, "empty", &nbad));
    assert_int_equal(nbad, 0);
    free(w);
}

static void test_policy(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    captured cap = {0};
    mpq_log_set_sink(ctx, sink, &cap);
    mpq_log_level old = ctx->log_level;
    mpq_log_set_level(ctx, MPQ_LOG_INFO);
    float *w = matrix(4, 8);
    int skip = -1;
    MPQ_ASSERT_OK(ctx,
                  mpq_check_finite_policy(ctx, MPQ_NONFINITE_SKIP, w, 32, 8, "layer A", &skip));
    assert_int_equal(skip, 0);
    MPQ_ASSERT_OK(ctx,
                  mpq_check_finite_policy(ctx, MPQ_NONFINITE_ERROR, w, 32, 8, "layer A", &skip));
    assert_int_equal(skip, 0);
    assert_int_equal(cap.nwarn, 0);
    w[9] = NAN;
    assert_int_equal(
        mpq_check_finite_policy(ctx, MPQ_NONFINITE_ERROR, w, 32, 8, "layer fc1.weight", &skip),
        MPQ_ERR_NUMERIC);
    assert_int_equal(skip, 0);
    assert_non_null(strstr(mpq_err_message(ctx), "layer fc1.weight: 1 non-finite value"));
    assert_non_null(strstr(mpq_err_message(ctx), "NaN at [1][1]"));
    mpq_err_clear(ctx);
    MPQ_ASSERT_OK(
        ctx, mpq_check_finite_policy(ctx, MPQ_NONFINITE_SKIP, w, 32, 8, "layer fc1.weight", &skip));
    assert_int_equal(skip, 1);
    assert_int_equal(cap.nwarn, ctx->rank == 0 ? 1 : 0);
    if (ctx->rank == 0) {
        assert_non_null(strstr(cap.last, "layer fc1.weight"));
        assert_non_null(strstr(cap.last, "stays in full precision"));
    }
    assert_string_equal(mpq_err_message(ctx), ""); /* handled: no error left behind */
    free(w);
    mpq_log_set_sink(ctx, NULL, NULL);
    mpq_log_set_level(ctx, old);
}

static void test_config_key(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "t.cfg", "", 0, NULL, &cfg));
    assert_string_equal(cfg->robust.nonfinite, "error");
    mpq_nonfinite_policy p = MPQ_NONFINITE_SKIP;
    MPQ_ASSERT_OK(ctx, mpq_nonfinite_policy_parse(ctx, cfg->robust.nonfinite, &p));
    assert_int_equal(p, MPQ_NONFINITE_ERROR);
    mpq_config_destroy(&cfg);
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "t.cfg", "robust = { nonfinite = \"skip\"; };\n", 0,
                                        NULL, &cfg));
    assert_string_equal(cfg->robust.nonfinite, "skip");
    MPQ_ASSERT_OK(ctx, mpq_nonfinite_policy_parse(ctx, cfg->robust.nonfinite, &p));
    assert_int_equal(p, MPQ_NONFINITE_SKIP);
    mpq_config_destroy(&cfg);
    char *over[] = {"robust.nonfinite=ignore"};
    assert_int_not_equal(mpq_config_parse(ctx, "t.cfg", "", 1, over, &cfg), MPQ_OK);
    assert_non_null(strstr(mpq_err_message(ctx), "robust.nonfinite"));
    assert_null(cfg);
    mpq_err_clear(ctx);
    assert_int_equal(mpq_nonfinite_policy_parse(ctx, "ignore", &p), MPQ_ERR_CONFIG);
    assert_non_null(strstr(mpq_err_message(ctx), "robust.nonfinite"));
    mpq_err_clear(ctx);
}

static void test_calibration_rows(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    captured cap = {0};
    mpq_log_set_sink(ctx, sink, &cap);
    mpq_log_level old = ctx->log_level;
    mpq_log_set_level(ctx, MPQ_LOG_INFO);
    assert_int_equal(
        mpq_check_calibration_rows(ctx, "model.layers.0.mlp.down_proj.weight", 172, 172), 0);
    assert_int_equal(
        mpq_check_calibration_rows(ctx, "model.layers.0.mlp.down_proj.weight", 4096, 172), 0);
    assert_int_equal(cap.nwarn, 0);
    assert_int_equal(
        mpq_check_calibration_rows(ctx, "model.layers.0.mlp.down_proj.weight", 100, 172), 1);
    if (ctx->rank == 0) {
        assert_int_equal(cap.nwarn, 1);
        assert_non_null(strstr(cap.last, "model.layers.0.mlp.down_proj.weight"));
        assert_non_null(strstr(cap.last, "100 input rows for an input of width 172"));
    }
    mpq_log_set_sink(ctx, NULL, NULL);
    mpq_log_set_level(ctx, old);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_finite),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_config_key),
        cmocka_unit_test(test_calibration_rows),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
