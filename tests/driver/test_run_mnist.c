/* test_run_mnist.c: quality of `mpquant run` on the real mnist-cnn-small
 * (configs/mnist-cnn-small-w*.cfg: per-channel asymmetric int, calibration
 * on test images 0-1023): at 2 and 3 bits, learned rounding (adaround and
 * signround, started from GPTQ; 150 steps here, with the layer loss alone)
 * classifies more of images 1024-9999 correctly than RTN. */
#include "run_util.h"

static mpq_ctx *g_ctx;

static double acc_of(mpq_ctx *ctx, int bits, const char *method) {
    char cfgname[64], m[64];
    snprintf(cfgname, sizeof cfgname, "mnist-cnn-small-w%d.cfg", bits);
    snprintf(m, sizeof m, "quant.method=%s", method);
    char *over[] = {m, "round.iters=150", "round.loss=layer", "eval.also_all=false"};
    mpq_config *cfg = rt_config(ctx, cfgname, 4, over);
    mpq_run_result *r = rt_run(ctx, cfg, 0, 1);
    assert_int_equal(r->quant.cls.total, 8976);
    double a = r->quant.cls.accuracy;
    mpq_run_result_destroy(&r);
    mpq_config_destroy(&cfg);
    return a;
}

static void test_learned_beats_rtn(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    for (int bits = 2; bits <= 3; bits++) {
        double rtn = acc_of(ctx, bits, "rtn"), ada = acc_of(ctx, bits, "adaround"),
               sr = acc_of(ctx, bits, "signround");
        if (ctx->rank == 0)
            printf("mnist-cnn-small W%d per-channel, images 1024-9999: rtn %.4f adaround %.4f "
                   "signround %.4f\n",
                   bits, rtn, ada, sr);
        assert_true(ada > rtn);
        assert_true(sr > rtn);
    }
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_learned_beats_rtn)};
    int f = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, f);
}
