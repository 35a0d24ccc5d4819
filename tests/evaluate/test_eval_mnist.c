/* test_eval_mnist.c: mnist-cnn-small through configs/mnist-cnn-small.cfg
 * (run at 1, 2 and 4 ranks): exactly 9,862 of the 10,000 test images
 * correct (shared/README.md), the family's logits against a naive direct
 * forward written here from the README's description, and agreement with a
 * reference model and the KL divergence from it (against a softmax written
 * here). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_config.h"
#include "mpq_eval.h"
#include "mpq_family.h"
#include "mpq_model.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx;
static char g_cfgpath[4096], g_img[4096], g_lab[4096], g_model[4096];

typedef struct fixture {
    mpq_config *cfg;
    mpq_model *m;
    mpq_family *f, *f2;
} fixture;

static int setup(void **state) {
    mpq_ctx *ctx = g_ctx;
    fixture *x = calloc(1, sizeof *x);
    if (mpq_config_load(ctx, g_cfgpath, 0, NULL, &x->cfg) != MPQ_OK ||
        mpq_model_open(ctx, x->cfg->model.path, x->cfg->model.format, &x->m) != MPQ_OK ||
        mpq_family_create(ctx, x->m, x->cfg, NULL, &x->f) != MPQ_OK ||
        mpq_family_create(ctx, x->m, x->cfg, NULL, &x->f2) != MPQ_OK) {
        fprintf(stderr, "setup: %s\n", ctx->err_msg);
        return -1;
    }
    *state = x;
    return 0;
}

static int teardown(void **state) {
    fixture *x = *state;
    mpq_family_destroy(&x->f2);
    mpq_family_destroy(&x->f);
    mpq_model_close(&x->m);
    mpq_config_destroy(&x->cfg);
    free(x);
    return 0;
}

static void test_accuracy_reference(void **state) {
    fixture *x = *state;
    mpq_ctx *ctx = g_ctx;
    mpq_cls_result r;
    MPQ_ASSERT_OK(ctx, mpq_eval_idx(ctx, x->f, NULL, x->cfg->eval.images, x->cfg->eval.labels, 0, 0,
                                    500, &r));
    if (ctx->rank == 0)
        printf("ranks %d: %lld / %lld correct\n", ctx->size, (long long)r.correct,
               (long long)r.total);
    assert_int_equal(r.total, 10000);
    assert_int_equal(r.correct, 9862);
    assert_true(r.accuracy == 0.9862);
}

/* The mean KL(P_ref || P_model) of the class distributions over images
 * [first, first + n), from one forward pass of each model over all of them
 * and a softmax written here in double precision. */
static double naive_kld(mpq_family *ref, mpq_family *model, int first, int n) {
    mpq_ctx *ctx = g_ctx;
    FILE *fp = fopen(g_img, "rb");
    assert_non_null(fp);
    unsigned char *px = malloc((size_t)n * 784);
    float *raw = malloc(sizeof(float) * (size_t)n * 784), *lr = malloc(sizeof(float) * n * 10),
          *lm = malloc(sizeof(float) * n * 10);
    fseek(fp, 16 + (long)first * 784, SEEK_SET);
    assert_int_equal(fread(px, 1, (size_t)n * 784, fp), (size_t)n * 784);
    fclose(fp);
    for (int i = 0; i < n * 784; i++)
        raw[i] = px[i];
    mpq_batch b = {.nseq = n, .rows = n, .input = raw};
    MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, ref, &b, lr));
    MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, model, &b, lm));
    double tot = 0.0;
    for (int i = 0; i < n; i++) {
        double p[10], q[10], sp = 0.0, sq = 0.0;
        for (int c = 0; c < 10; c++) {
            p[c] = exp((double)lr[i * 10 + c]);
            q[c] = exp((double)lm[i * 10 + c]);
            sp += p[c];
            sq += q[c];
        }
        for (int c = 0; c < 10; c++)
            tot += p[c] / sp * log((p[c] / sp) / (q[c] / sq));
    }
    free(px);
    free(raw);
    free(lr);
    free(lm);
    return tot / n;
}

static void test_agreement(void **state) {
    fixture *x = *state;
    mpq_ctx *ctx = g_ctx;
    mpq_cls_result r;
    MPQ_ASSERT_OK(ctx, mpq_eval_idx(ctx, x->f2, x->f, g_img, g_lab, 100, 1000, 64, &r));
    assert_int_equal(r.total, 1000);
    assert_int_equal(r.agree, 1000);
    assert_true(r.agreement == 1.0);
    assert_true(r.kld == 0.0);
    /* Coarsely rounded fc1 weights: some predictions change. */
    const mpq_family_info *fi = mpq_family_get_info(x->f2);
    assert_int_equal(fi->nlayers, 3);
    int64_t n = fi->layers[2].out * fi->layers[2].in;
    float *w = malloc(sizeof(float) * (size_t)n);
    MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, x->f2, 2, w));
    for (int64_t i = 0; i < n; i++)
        w[i] = roundf(w[i] * 2.0f) / 2.0f;
    MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, x->f2, 2, w));
    free(w);
    MPQ_ASSERT_OK(ctx, mpq_eval_idx(ctx, x->f2, x->f, g_img, g_lab, 100, 1000, 64, &r));
    if (ctx->rank == 0)
        printf("rounded fc1: agreement %.3f accuracy %.3f\n", r.agreement, r.accuracy);
    assert_true(r.agree < 1000 && r.agree > 0);
    double kl = naive_kld(x->f, x->f2, 100, 1000);
    if (ctx->rank == 0)
        printf("rounded fc1: KL divergence %.9g, naive %.9g\n", r.kld, kl);
    assert_true(kl > 1e-3 && fabs(r.kld - kl) <= 1e-6 * kl);
    /* The reference's own accuracy from the same pass equals evaluating it
     * alone. */
    mpq_cls_result alone, own;
    MPQ_ASSERT_OK(ctx, mpq_eval_idx(ctx, x->f, NULL, g_img, g_lab, 100, 1000, 64, &alone));
    mpq_eval_cls_reference(&r, &own);
    assert_int_equal(own.total, alone.total);
    assert_int_equal(own.correct, alone.correct);
    assert_true(own.accuracy == alone.accuracy);
    assert_true(own.correct != r.correct);
}

/* Naive forward from the README: conv 3x3 pad 1, ReLU, 2x2 max-pool, twice,
 * flatten CHW, fc1. */
static void conv3(const float *in, int ci, int hw, const float *w, const float *b, int co,
                  float *out) {
    for (int o = 0; o < co; o++)
        for (int y = 0; y < hw; y++)
            for (int xx = 0; xx < hw; xx++) {
                double s = b[o];
                for (int c = 0; c < ci; c++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int iy = y + ky - 1, ix = xx + kx - 1;
                            if (iy >= 0 && iy < hw && ix >= 0 && ix < hw)
                                s += (double)w[((o * ci + c) * 3 + ky) * 3 + kx] *
                                     in[(c * hw + iy) * hw + ix];
                        }
                out[(o * hw + y) * hw + xx] = s > 0 ? (float)s : 0.0f; /* with ReLU */
            }
}

static void pool2(const float *in, int c, int hw, float *out) {
    int h2 = hw / 2;
    for (int i = 0; i < c; i++)
        for (int y = 0; y < h2; y++)
            for (int xx = 0; xx < h2; xx++) {
                const float *p = in + (i * hw + 2 * y) * hw + 2 * xx;
                out[(i * h2 + y) * h2 + xx] = fmaxf(fmaxf(p[0], p[1]), fmaxf(p[hw], p[hw + 1]));
            }
}

static void test_logits_match_naive(void **state) {
    fixture *x = *state;
    mpq_ctx *ctx = g_ctx;
    const float *c1w = mpq_model_find(x->m, "conv1.weight")->data;
    const float *c1b = mpq_model_find(x->m, "conv1.bias")->data;
    const float *c2w = mpq_model_find(x->m, "conv2.weight")->data;
    const float *c2b = mpq_model_find(x->m, "conv2.bias")->data;
    const float *fw = mpq_model_find(x->m, "fc1.weight")->data;
    const float *fb = mpq_model_find(x->m, "fc1.bias")->data;
    FILE *fp = fopen(g_img, "rb");
    assert_non_null(fp);
    enum { N = 50 };
    unsigned char px[N * 784];
    fseek(fp, 16, SEEK_SET);
    assert_int_equal(fread(px, 1, sizeof px, fp), sizeof px);
    fclose(fp);
    float raw[N * 784], got[N * 10];
    for (int i = 0; i < N * 784; i++)
        raw[i] = px[i];
    mpq_batch b = {.nseq = N, .rows = N, .input = raw};
    MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, x->f, &b, got));
    double md = 0.0;
    for (int n = 0; n < N; n++) {
        float in[784], a[8 * 784], p1[8 * 196], c[16 * 196], p2[784];
        for (int i = 0; i < 784; i++)
            in[i] = (float)(raw[n * 784 + i] / 255.0);
        conv3(in, 1, 28, c1w, c1b, 8, a);
        pool2(a, 8, 28, p1);
        conv3(p1, 8, 14, c2w, c2b, 16, c);
        pool2(c, 16, 14, p2);
        for (int o = 0; o < 10; o++) {
            double s = fb[o];
            for (int i = 0; i < 784; i++)
                s += (double)fw[o * 784 + i] * p2[i];
            double d = fabs(got[n * 10 + o] - s) / (1.0 + fabs(s));
            md = d > md ? d : md;
        }
    }
    if (ctx->rank == 0)
        printf("mnist logits vs naive: max relative difference %.3g\n", md);
    assert_true(md < 1e-4); /* fp32 GEMMs over up to 784 terms vs double sums */
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    mpq_test_shared("data/models/mnist-cnn-small/model-mnist.safetensors", g_model, sizeof g_model);
    mpq_test_shared("data/mnist/t10k-images-idx3-ubyte", g_img, sizeof g_img);
    mpq_test_shared("data/mnist/t10k-labels-idx1-ubyte", g_lab, sizeof g_lab);
    const char *src = getenv("MPQ_SOURCE_DIR");
    snprintf(g_cfgpath, sizeof g_cfgpath, "%s/configs/mnist-cnn-small.cfg", src ? src : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accuracy_reference),
        cmocka_unit_test(test_agreement),
        cmocka_unit_test(test_logits_match_naive),
    };
    int fails = cmocka_run_group_tests(tests, setup, teardown);
    return mpq_test_finish(&g_ctx, fails);
}
