/* test_run_stories.c: quality of `mpquant run` on the real stories260K
 * model (uniform asymmetric int, groups of 32, every linear layer of every
 * block; configs/stories260K-w*.cfg).
 *  - RTN at 4 bits on the first 500 tinyshakespeare documents reproduces
 *    the independent implementation's PPL 130.2 within 1 % (RTN does not
 *    depend on calibration: a check of quantizer + substitution + eval).
 *  - At 4, 3 and 2 bits, GPTQ and learned rounding (adaround from GPTQ)
 *    give a lower perplexity than RTN on the same 500 documents, with the
 *    shipped configurations (128 calibration segments of 256 tokens, 200
 *    learning steps: fewer steps can lose to RTN in perplexity at 3 bits
 *    although the layer losses are lower). signround's numbers are in the
 *    README.
 *  - GPTQ lands in the independent GPTQ's ranges: W4 126-131 and W2
 *    590-780 with the min-max fit, W3 131-137 with the search fit. */
#include <math.h>
#include <string.h>

#include "run_util.h"

static mpq_ctx *g_ctx;

static double ppl_of(mpq_ctx *ctx, int bits, const char *method, int n, char **extra) {
    char cfgname[64], m[64];
    snprintf(cfgname, sizeof cfgname, "stories260K-w%d.cfg", bits);
    snprintf(m, sizeof m, "quant.method=%s", method);
    char *over[8] = {m};
    for (int i = 0; i < n; i++)
        over[1 + i] = extra[i];
    mpq_config *cfg = rt_config(ctx, cfgname, 1 + n, over);
    mpq_run_result *r = rt_run(ctx, cfg, 0, 1);
    assert_int_equal(r->quant.lm.predictions, 41817);
    double ppl = r->quant.lm.ppl;
    mpq_run_result_destroy(&r);
    mpq_config_destroy(&cfg);
    return ppl;
}

static void test_methods_beat_rtn(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    /* RTN does not use the calibration: 8 segments are enough. */
    char *rtn_over[] = {"calibration.segments=8"};
    char *learn_over[] = {"round.iters=200"};
    for (int bits = 4; bits >= 2; bits--) {
        double rtn = ppl_of(ctx, bits, "rtn", 1, rtn_over);
        double gptq = ppl_of(ctx, bits, "gptq", 0, NULL);
        double ada = ppl_of(ctx, bits, "adaround", 1, learn_over);
        if (ctx->rank == 0)
            printf("stories260K W%d g32, 500 docs: PPL rtn %.3f gptq %.3f adaround "
                   "%.3f\n",
                   bits, rtn, gptq, ada);
        if (bits == 4) /* the independent implementation's RTN W4 */
            assert_true(fabs(rtn - 130.2) / 130.2 < 0.01);
        /* the independent GPTQ's ranges (min-max fit): W4 126-131, W2 590-780 */
        if (bits == 4)
            assert_true(gptq >= 126.0 && gptq <= 131.0);
        if (bits == 2)
            assert_true(gptq >= 590.0 && gptq <= 780.0);
        assert_true(gptq < rtn);
        assert_true(ada < rtn);
    }
    /* W3: with the min-max fit GPTQ lies above the independent 131-137 on
     * the shipped calibration seed (README); with the error-minimising fit
     * it lands inside. */
    char *search_over[] = {"quant.spec=int:bits=3,sym=false,group=32,fit=search"};
    double g3 = ppl_of(ctx, 3, "gptq", 1, search_over);
    if (ctx->rank == 0)
        printf("stories260K W3 g32 fit=search, 500 docs: PPL gptq %.3f\n", g3);
    assert_true(g3 >= 131.0 && g3 <= 137.0);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_methods_beat_rtn)};
    int f = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, f);
}
