/* test_run_loss.c: the per-layer losses that `mpquant run` reports are those
 * of the final codes. A small stories260K run (16 calibration segments of
 * 128 tokens, adaround from GPTQ, 30 steps) with block inputs propagated
 * through the quantized blocks, then, block by block, the same calibration
 * (same chunks: the pipeline's H bits) on a fresh model whose earlier
 * blocks carry the reported dequantized weights: for every layer the loss
 * recomputed naively in double from the dequantized weights,
 * sum_r (w_r - q_r) H (w_r - q_r)^T, equals the reported loss within 1e-9
 * relative, and never exceeds the reported RTN loss (learned rounding from
 * GPTQ keeps its best iterate and the RTN guard). Also with propagate = fp.
 * Runs at 1, 2 and 4 ranks. */
#include <math.h>
#include <string.h>

#include "mpq_calibrate.h"
#include "mpq_tokenizer.h"
#include "run_util.h"

static mpq_ctx *g_ctx;

static double naive_loss(int64_t rows, int64_t cols, const float *W, const float *Q,
                         const double *H) {
    double tot = 0.0;
    double *d = malloc((size_t)cols * sizeof *d);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++)
            d[c] = (double)W[r * cols + c] - (double)Q[r * cols + c];
        for (int64_t i = 0; i < cols; i++) {
            double s = 0.0;
            for (int64_t j = 0; j < cols; j++)
                s += H[i * cols + j] * d[j];
            tot += d[i] * s;
        }
    }
    free(d);
    return tot;
}

static void check(const char *propagate) {
    mpq_ctx *ctx = g_ctx;
    char prop[64];
    snprintf(prop, sizeof prop, "calibration.propagate=%s", propagate);
    char *over[] = {prop,
                    "calibration.segments=16",
                    "calibration.seq_len=128",
                    "quant.method=adaround",
                    "round.iters=30",
                    "round.init=gptq"};
    mpq_config *cfg = rt_config(ctx, "stories260K-w3.cfg", 6, over);
    mpq_run_result *r = rt_run(ctx, cfg, 0, 0);

    mpq_model *m = NULL;
    mpq_family *f = NULL, *fp = NULL;
    mpq_tokenizer *tok = NULL;
    mpq_calib_set *set = NULL;
    mpq_calib *c = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, cfg->model.path, "auto", &m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, m, cfg, NULL, &f));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, m, cfg, NULL, &fp));
    const mpq_family_info *fi = mpq_family_get_info(f);
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, cfg->model.tokenizer, fi->vocab_size, &tok));
    MPQ_ASSERT_OK(ctx, mpq_calib_set_from_config(ctx, cfg, fi, tok, &set));
    MPQ_ASSERT_OK(ctx, mpq_calib_create(ctx, f, set, cfg->hessian.chunk_samples, &c));
    int fpprop = strcmp(propagate, "fp") == 0;
    double worst = 0.0;
    assert_int_equal(r->nlayers, fi->nlayers);
    for (int64_t b = 0; b < fi->nblocks; b++) {
        int64_t n = 0, *groups = NULL;
        mpq_hstat **st = NULL;
        MPQ_ASSERT_OK(ctx, mpq_calib_block(ctx, c, b, (int)cfg->hessian.bound_log2, MPQ_HSTAT_ALL,
                                           fpprop, &n, &st, &groups));
        for (int64_t l = 0; l < fi->nlayers; l++) {
            const mpq_layer_info *li = &fi->layers[l];
            if (li->block != b)
                continue;
            const double *H = NULL;
            for (int64_t k = 0; k < n; k++)
                if (groups[k] == li->group)
                    H = st[k]->H;
            assert_non_null(H);
            const mpq_run_layer *rl = &r->layers[l];
            assert_non_null(rl->q);
            float *W = malloc((size_t)(li->out * li->in) * sizeof *W);
            float *Q = malloc((size_t)(li->out * li->in) * sizeof *Q);
            MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, fp, l, W));
            mpq_qlayer_dequantize(rl->q, Q);
            double ref = naive_loss(li->out, li->in, W, Q, H);
            double rel = fabs(ref - rl->loss) / fmax(fabs(ref), 1e-300);
            worst = rel > worst ? rel : worst;
            if (rel >= 1e-9)
                fprintf(stderr, "%s: reported loss %.17g, recomputed %.17g\n", rl->name, rl->loss,
                        ref);
            assert_true(rel < 1e-9);
            assert_true(rl->loss <= rl->rtn_loss);
            MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, f, l, Q));
            free(W);
            free(Q);
        }
        if (!fpprop)
            MPQ_ASSERT_OK(ctx, mpq_calib_advance(ctx, c, b));
        mpq_hstats_free(n, &st);
        mpq_free(groups);
    }
    if (ctx->rank == 0)
        printf("propagate %s: %lld layers, largest relative loss difference %.3g\n", propagate,
               (long long)fi->nlayers, worst);
    mpq_calib_destroy(&c);
    mpq_calib_set_destroy(&set);
    mpq_tokenizer_destroy(&tok);
    mpq_family_destroy(&fp);
    mpq_family_destroy(&f);
    mpq_model_close(&m);
    mpq_run_result_destroy(&r);
    mpq_config_destroy(&cfg);
}

static void test_quantized(void **state) {
    (void)state;
    check("quantized");
}

static void test_fp(void **state) {
    (void)state;
    check("fp");
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_quantized), cmocka_unit_test(test_fp)};
    int f = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, f);
}
