/* test_block_net.c: the prediction term of round.loss = "network"
 * (pipeline/driver/run_block_net.c) on a tiny random Hugging Face Llama
 * (2 blocks, 24 wide, vocabulary 32) and a batch of two sequences:
 *  - the KL divergence against a naive one computed here from
 *    mpq_family_block and mpq_family_head (softmax in double);
 *  - the gradient with respect to the block's output against central
 *    finite differences of the KL on every entry, for block 0 (through
 *    block 1 and the head) and block 1 (the head alone);
 *  - KL 0 and gradient 0 when both outputs are equal; the gradient is
 *    added to dy, scaled by coef. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_family.h"
#include "mpq_model.h"
#include "mpq_test.h"
#include "run_internal.h"
#include "tiny_writer.h"

static mpq_ctx *g_ctx;
static uint64_t g_rng = 777;

static double urand(void) { /* uniform in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) / 4503599627370496.0 - 1.0;
}

typedef struct fx {
    char dir[4096];
    mpq_model *m;
    mpq_family *f;
    int64_t len[2], rows, D, V;
} fx;

static void fx_open(fx *F) {
    mpq_ctx *ctx = g_ctx;
    memset(F, 0, sizeof *F);
    tw_llama m = {.dim = 24,
                  .hidden = 40,
                  .layers = 2,
                  .heads = 4,
                  .kv_heads = 2,
                  .vocab = 32,
                  .seq_len = 64,
                  .rope_theta = 100.0,
                  .norm_eps = 1e-5};
    assert_int_equal(tw_llama_random(&m, 5), 0);
    assert_int_equal(tw_tempdir(F->dir, sizeof F->dir), 0);
    assert_int_equal(tw_write_hf(F->dir, &m, "llama", "F32", 1), 0);
    tw_llama_free(&m);
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, F->dir, "auto", &F->m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, F->m, NULL, "llama", &F->f));
    F->len[0] = 5;
    F->len[1] = 3;
    F->rows = 8;
    F->D = 24;
    F->V = mpq_family_get_info(F->f)->out_width;
}

static void fx_close(fx *F) {
    mpq_family_destroy(&F->f);
    mpq_model_close(&F->m);
    tw_rmtree(F->dir);
}

/* The naive KL: blocks after b, head, softmax in double. */
static double naive_kl(fx *F, int64_t b, const float *yq, const float *yfp) {
    mpq_ctx *ctx = g_ctx;
    mpq_batch bt = {.nseq = 2, .len = F->len, .rows = F->rows};
    const int64_t n = F->rows * F->D;
    float *a = malloc(sizeof(float) * (size_t)n), *c = malloc(sizeof(float) * (size_t)n);
    float *lq = malloc(sizeof(float) * (size_t)(F->rows * F->V));
    float *lp = malloc(sizeof(float) * (size_t)(F->rows * F->V));
    const float *src[2] = {yq, yfp};
    float *dst[2] = {lq, lp};
    for (int s = 0; s < 2; s++) {
        memcpy(a, src[s], sizeof(float) * (size_t)n);
        for (int64_t k = b + 1; k < 2; k++) {
            MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, F->f, k, &bt, a, c, NULL, NULL));
            memcpy(a, c, sizeof(float) * (size_t)n);
        }
        MPQ_ASSERT_OK(ctx, mpq_family_head(ctx, F->f, a, F->rows, dst[s]));
    }
    double kl = 0.0;
    for (int64_t r = 0; r < F->rows; r++) {
        double zq = 0.0, zp = 0.0;
        for (int64_t v = 0; v < F->V; v++) {
            zq += exp((double)lq[r * F->V + v]);
            zp += exp((double)lp[r * F->V + v]);
        }
        for (int64_t v = 0; v < F->V; v++) {
            const double p = exp((double)lp[r * F->V + v]) / zp;
            const double q = exp((double)lq[r * F->V + v]) / zq;
            kl += p * (log(p) - log(q));
        }
    }
    free(a);
    free(c);
    free(lq);
    free(lp);
    return kl;
}

static void check_block(int64_t b) {
    mpq_ctx *ctx = g_ctx;
    fx F;
    fx_open(&F);
    mpq_batch bt = {.nseq = 2, .len = F.len, .rows = F.rows};
    const int64_t n = F.rows * F.D;
    float *yq = malloc(sizeof(float) * (size_t)n), *yfp = malloc(sizeof(float) * (size_t)n);
    float *dy = calloc((size_t)n, sizeof(float)), *yp = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        yfp[i] = (float)(1.5 * urand());
        yq[i] = yfp[i] + (float)(0.3 * urand());
    }
    mpq_block_net *net = NULL;
    MPQ_ASSERT_OK(ctx, mpq_block_net_create(ctx, F.f, b, F.rows, &net));
    double kl = -1.0;
    /* dy starts at 1: the gradient is added, times coef = 2 */
    for (int64_t i = 0; i < n; i++)
        dy[i] = 1.0f;
    MPQ_ASSERT_OK(ctx, mpq_block_net_kl(ctx, net, F.f, &bt, yq, yfp, 2.0, dy, &kl));
    const double ref = naive_kl(&F, b, yq, yfp);
    if (!(kl > 0.0) || fabs(kl - ref) > 1e-4 * ref)
        fail_msg("block %lld: KL %.9g, naive %.9g", (long long)b, kl, ref);
    double gmax = 0.0;
    for (int64_t i = 0; i < n; i++)
        gmax = fmax(gmax, fabs((dy[i] - 1.0) / 2.0));
    assert_true(gmax > 0.0);
    memcpy(yp, yq, sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        double k2[2];
        for (int s = 0; s < 2; s++) {
            yp[i] = (float)((double)yq[i] + (s ? -0.01 : 0.01));
            MPQ_ASSERT_OK(ctx, mpq_block_net_kl(ctx, net, F.f, &bt, yp, yfp, 0.0, NULL, &k2[s]));
        }
        yp[i] = yq[i];
        const double h =
            (double)(float)((double)yq[i] + 0.01) - (double)(float)((double)yq[i] - 0.01);
        const double fd = (k2[0] - k2[1]) / h, g = ((double)dy[i] - 1.0) / 2.0;
        const double den = fmax(fabs(fd), 0.1 * gmax);
        if (fabs(g - fd) / den > 3e-2)
            fail_msg("block %lld entry %lld: gradient %.7g, finite difference %.7g", (long long)b,
                     (long long)i, g, fd);
    }
    /* equal outputs: KL 0 (to rounding), gradient 0 */
    memset(dy, 0, sizeof(float) * (size_t)n);
    MPQ_ASSERT_OK(ctx, mpq_block_net_kl(ctx, net, F.f, &bt, yfp, yfp, 1.0, dy, &kl));
    assert_true(fabs(kl) < 1e-9);
    for (int64_t i = 0; i < n; i++)
        assert_true(fabs(dy[i]) < 1e-6);
    mpq_block_net_destroy(&net);
    free(yq);
    free(yfp);
    free(dy);
    free(yp);
    fx_close(&F);
}

static void test_block0(void **state) {
    (void)state;
    check_block(0);
}

static void test_block1(void **state) {
    (void)state;
    check_block(1);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_block0),
                                       cmocka_unit_test(test_block1)};
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
