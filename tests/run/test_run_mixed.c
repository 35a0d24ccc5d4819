/* test_run_mixed.c: mixed precision on the real models (label mixed).
 *  - stories260K: mixed precision (candidates int asym g32 at 2/3/4/8 bits,
 *    GPTQ, sensitivity scores) under a budget of exactly the bytes of
 *    uniform 3-bit g32 (3.61 bits per weight with scales and zero-points)
 *    uses no more bits, is closer to the full-precision model (KL
 *    divergence on the 500 evaluation documents) and has a lower perplexity
 *    than uniform 3 bits.
 *  - mnist-cnn-small: mixed precision at an average of 2.5 bits per weight
 *    (per-channel candidates at 2/3/4/8 bits) classifies more of images
 *    1024-9999 correctly than uniform per-channel 2 bits (learned rounding,
 *    150 steps, both). */
#include <math.h>
#include <string.h>

#include "run_util.h"

static mpq_ctx *g_ctx;

static void test_stories_mixed_vs_w3(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cu = rt_config(ctx, "stories260K-w3.cfg", 0, NULL);
    mpq_run_result *u = rt_run(ctx, cu, 0, 1);
    char bytes[64];
    assert_int_equal(u->bits % 8, 0);
    snprintf(bytes, sizeof bytes, "budget.bytes=%lld", (long long)(u->bits / 8));
    char *over[] = {"budget.avg_bits=0", bytes};
    mpq_config *cm = rt_config(ctx, "stories260K-mixed3.cfg", 2, over);
    mpq_run_result *m = rt_run(ctx, cm, 0, 1);
    if (ctx->rank == 0)
        printf("stories260K at %lld bits: uniform W3 PPL %.3f KLD %.5f; mixed %lld bits PPL %.3f "
               "KLD %.5f (bound gap %.3g)\n",
               (long long)u->bits, u->quant.lm.ppl, u->quant.lm.kld, (long long)m->bits,
               m->quant.lm.ppl, m->quant.lm.kld, m->budget.rel_gap);
    assert_true(m->bits <= u->bits);
    assert_int_equal(m->bits, m->budget.bits_used);
    assert_true(m->quant.lm.kld < u->quant.lm.kld);
    assert_true(m->quant.lm.ppl < u->quant.lm.ppl);
    mpq_run_result_destroy(&m);
    mpq_run_result_destroy(&u);
    mpq_config_destroy(&cm);
    mpq_config_destroy(&cu);
}

static void test_mnist_mixed_vs_w2(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char *over[] = {"round.iters=150", "eval.also_all=false"};
    mpq_config *cu = rt_config(ctx, "mnist-cnn-small-w2.cfg", 2, over);
    mpq_config *cm = rt_config(ctx, "mnist-cnn-small-w2.5-mixed.cfg", 2, over);
    mpq_run_result *u = rt_run(ctx, cu, 0, 1), *m = rt_run(ctx, cm, 0, 1);
    if (ctx->rank == 0)
        printf("mnist-cnn-small images 1024-9999: uniform W2 %.4f (%.3f bpw), mixed %.4f (%.3f "
               "bpw, budget 2.5)\n",
               u->quant.cls.accuracy, u->bpw, m->quant.cls.accuracy, m->bpw);
    assert_true(m->bpw <= 2.5);
    assert_true(m->quant.cls.accuracy > u->quant.cls.accuracy);
    mpq_run_result_destroy(&m);
    mpq_run_result_destroy(&u);
    mpq_config_destroy(&cm);
    mpq_config_destroy(&cu);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_mnist_mixed_vs_w2),
                                       cmocka_unit_test(test_stories_mixed_vs_w3)};
    int f = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, f);
}
