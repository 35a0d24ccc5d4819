/* test_run_mixed.c: mixed precision on the real models (label driver).
 *  - stories260K, candidates int asym g32 at 2/3/4/8 bits, GPTQ, sensitivity
 *    scores, against uniform 3-bit g32 with the same method:
 *    * the shipped configuration, an average of 3.0 code bits per weight
 *      (budget.count = "codes"), has a lower KL divergence from the
 *      full-precision model (500 evaluation documents) and a lower
 *      perplexity than uniform 3 bits;
 *    * under a budget of exactly the bytes of uniform 3-bit g32 (3.61 bits
 *      per weight with scales and zero-points, budget.count = "all") it uses
 *      no more bits and again has the lower KL divergence and perplexity.
 *  - mnist-cnn-small: mixed precision at an average of 2.5 bits per weight
 *    (per-channel candidates at 2/3/4/8 bits) classifies more of images
 *    1024-9999 correctly than uniform per-channel 2 bits (learned rounding,
 *    150 steps, both). */
#include <math.h>
#include <string.h>

#include "run_util.h"

static mpq_ctx *g_ctx;

static void check_better(mpq_ctx *ctx, const char *what, const mpq_run_result *m,
                         const mpq_run_result *u) {
    if (ctx->rank == 0)
        printf("stories260K %s: %lld bits (%.4f bits/weight, budget %.4f %s bits/weight), PPL "
               "%.3f KLD %.5f (bound gap %.3g); uniform W3 %lld bits PPL %.3f KLD %.5f\n",
               what, (long long)m->bits, m->bpw, m->budget.avg_bits,
               m->budget_codes ? "code" : "storage", m->quant.lm.ppl, m->quant.lm.kld,
               m->budget.rel_gap, (long long)u->bits, u->quant.lm.ppl, u->quant.lm.kld);
    assert_true(m->quant.lm.kld < u->quant.lm.kld);
    assert_true(m->quant.lm.ppl < u->quant.lm.ppl);
}

static void test_stories_mixed_vs_w3(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cu = rt_config(ctx, "stories260K-w3.cfg", 0, NULL);
    mpq_run_result *u = rt_run(ctx, cu, 0, 1);

    /* The shipped configuration: 3.0 code bits per weight on average. */
    mpq_config *c3 = rt_config(ctx, "stories260K-mixed3.cfg", 0, NULL);
    mpq_run_result *m3 = rt_run(ctx, c3, 0, 1);
    assert_true(m3->budget_codes);
    assert_true(m3->budget.avg_bits <= 3.0);
    assert_true(m3->budget.avg_bits > 2.99);
    check_better(ctx, "mixed at 3.0 code bits/weight", m3, u);

    /* The same storage as uniform W3, scales and zero-points counted. */
    char bytes[64];
    assert_int_equal(u->bits % 8, 0);
    snprintf(bytes, sizeof bytes, "budget.bytes=%lld", (long long)(u->bits / 8));
    char *over[] = {"budget.avg_bits=0", bytes, "budget.count=all"};
    mpq_config *cm = rt_config(ctx, "stories260K-mixed3.cfg", 3, over);
    mpq_run_result *m = rt_run(ctx, cm, 0, 1);
    assert_false(m->budget_codes);
    assert_true(m->bits <= u->bits);
    assert_int_equal(m->bits, m->budget.bits_used);
    check_better(ctx, "mixed at the storage of W3", m, u);
    mpq_run_result_destroy(&m);
    mpq_run_result_destroy(&m3);
    mpq_run_result_destroy(&u);
    mpq_config_destroy(&cm);
    mpq_config_destroy(&c3);
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
