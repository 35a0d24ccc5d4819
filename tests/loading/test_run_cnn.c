/* test_run_cnn.c: the sequential CNN family on a small synthetic network
 * written as safetensors: the im2col + GEMM forward against a naive direct
 * convolution written here, batch-norm folding against the unfolded
 * computation, the calibration hook's im2col patches, weight substitution,
 * and the errors of the model.cnn op-list configuration key. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_config.h"
#include "mpq_family.h"
#include "mpq_model.h"
#include "mpq_test.h"
#include "tiny_writer.h"

static mpq_ctx *g_ctx;
static char g_dir[4096], g_st[4200];

/* The synthetic network: input [2][7][6];
 * conv a (2->4, k3, stride 2, pad 1) -> bn1 (folded) -> relu -> bn2 (standalone)
 * -> conv b (4->3, k2, stride 1, pad 0) -> maxpool 2 -> flatten -> linear (3*? -> 5)
 * -> bn3 (folded into the linear). */
enum { CI = 2, H = 7, W = 6, CA = 4, KA = 3, CB = 3, KB = 2, NOUT = 5 };
/* conv a: Ho = (7+2-3)/2+1 = 4, Wo = (6+2-3)/2+1 = 3; conv b: 3x2; pool 2: 1x1. */
enum { HA = 4, WA = 3, HB = 3, WB = 2, HP = 1, WP = 1, FLAT = CB * HP * WP };

static float wa[CA * CI * KA * KA], ba[CA], wb[CB * CA * KB * KB], bb[CB], wl[NOUT * FLAT],
    bl[NOUT];
static float bn1[4][CA], bn2[4][CA], bn3[4][NOUT]; /* gamma, beta, mean, var */

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) / 16777216.0 * 2.0 - 1.0);
}

static void fill(float *x, int n, unsigned *s, float lo, float hi) {
    for (int i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * (frand(s) + 1.0f) / 2.0f;
}

static const char *cfg_text =
    "model = { family = \"cnn\"; input_shape = [2, 7, 6]; input_scale = 0.5;\n"
    "  input_mean = [0.25, -0.5]; input_std = [2.0];\n"
    "  cnn = (\n"
    "    { op = \"conv2d\"; weight = \"a.weight\"; bias = \"a.bias\"; stride = 2; padding = 1; },\n"
    "    { op = \"batchnorm\"; weight = \"bn1.weight\"; bias = \"bn1.bias\"; mean = \"bn1.mean\";\n"
    "      var = \"bn1.var\"; eps = 0.001; },\n"
    "    { op = \"relu\"; },\n"
    "    { op = \"batchnorm\"; weight = \"bn2.weight\"; bias = \"bn2.bias\"; mean = \"bn2.mean\";\n"
    "      var = \"bn2.var\"; },\n"
    "    { op = \"conv2d\"; weight = \"b.weight\"; bias = \"b.bias\"; },\n"
    "    { op = \"maxpool\"; kernel = 2; },\n"
    "    { op = \"flatten\"; },\n"
    "    { op = \"linear\"; weight = \"l.weight\"; bias = \"l.bias\"; },\n"
    "    { op = \"batchnorm\"; weight = \"bn3.weight\"; bias = \"bn3.bias\"; mean = \"bn3.mean\";\n"
    "      var = \"bn3.var\"; }\n"
    "  );\n"
    "};\n";

static int write_model(void) {
    unsigned s = 42;
    fill(wa, CA * CI * KA * KA, &s, -0.5f, 0.5f);
    fill(ba, CA, &s, -0.2f, 0.2f);
    fill(wb, CB * CA * KB * KB, &s, -0.5f, 0.5f);
    fill(bb, CB, &s, -0.2f, 0.2f);
    fill(wl, NOUT * FLAT, &s, -0.5f, 0.5f);
    fill(bl, NOUT, &s, -0.2f, 0.2f);
    for (int c = 0; c < CA; c++) {
        bn1[0][c] = 0.5f + (frand(&s) + 1.0f) / 2.0f;
        bn1[1][c] = 0.3f * frand(&s);
        bn1[2][c] = 0.3f * frand(&s);
        bn1[3][c] = 0.2f + (frand(&s) + 1.0f);
        bn2[0][c] = 0.5f + (frand(&s) + 1.0f) / 2.0f;
        bn2[1][c] = 0.3f * frand(&s);
        bn2[2][c] = 0.3f * frand(&s);
        bn2[3][c] = 0.2f + (frand(&s) + 1.0f);
    }
    for (int c = 0; c < NOUT; c++) {
        bn3[0][c] = 0.5f + (frand(&s) + 1.0f) / 2.0f;
        bn3[1][c] = 0.3f * frand(&s);
        bn3[2][c] = 0.3f * frand(&s);
        bn3[3][c] = 0.2f + (frand(&s) + 1.0f);
    }
    tw_tensor t[20];
    int n = 0;
#define T(nm, d, nd, s0, s1, s2, s3) tw_f32(&t[n++], nm, d, nd, s0, s1, s2, s3)
    T("a.weight", wa, 4, CA, CI, KA, KA);
    T("a.bias", ba, 1, CA, 0, 0, 0);
    T("b.weight", wb, 4, CB, CA, KB, KB);
    T("b.bias", bb, 1, CB, 0, 0, 0);
    T("l.weight", wl, 2, NOUT, FLAT, 0, 0);
    T("l.bias", bl, 1, NOUT, 0, 0, 0);
    const char *part[4] = {"weight", "bias", "mean", "var"};
    static char names[12][32];
    for (int i = 0; i < 4; i++) {
        snprintf(names[i], 32, "bn1.%s", part[i]);
        T(names[i], bn1[i], 1, CA, 0, 0, 0);
        snprintf(names[4 + i], 32, "bn2.%s", part[i]);
        T(names[4 + i], bn2[i], 1, CA, 0, 0, 0);
        snprintf(names[8 + i], 32, "bn3.%s", part[i]);
        T(names[8 + i], bn3[i], 1, NOUT, 0, 0, 0);
    }
#undef T
    return tw_write_safetensors(g_st, t, n);
}

/* ---- naive reference: direct loops, batch norms applied as written ------- */

static void naive_conv(const float *in, int ci, int h, int w, const float *wt, const float *b,
                       int co, int k, int stride, int pad, float *out, int ho, int wo) {
    for (int o = 0; o < co; o++)
        for (int y = 0; y < ho; y++)
            for (int x = 0; x < wo; x++) {
                double s = b[o];
                for (int c = 0; c < ci; c++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = y * stride - pad + ky, ix = x * stride - pad + kx;
                            if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                s += (double)wt[((o * ci + c) * k + ky) * k + kx] *
                                     in[(c * h + iy) * w + ix];
                        }
                out[(o * ho + y) * wo + x] = (float)s;
            }
}

static void naive_bn(float *x, int c, int hw, float bn[4][CA > NOUT ? CA : NOUT], double eps) {
    for (int i = 0; i < c; i++)
        for (int p = 0; p < hw; p++) {
            float *v = &x[i * hw + p];
            *v = (float)((*v - bn[2][i]) / sqrt(bn[3][i] + eps) * bn[0][i] + bn[1][i]);
        }
}

/* logits [NOUT] of one raw input [CI][H][W]. */
static void naive_forward(const float *raw, float *logits) {
    float x[CI * H * W], a[CA * HA * WA], b[CB * HB * WB], p[FLAT];
    const float mean[2] = {0.25f, -0.5f};
    for (int c = 0; c < CI; c++)
        for (int i = 0; i < H * W; i++)
            x[c * H * W + i] = (float)((raw[c * H * W + i] * 0.5 - mean[c]) / 2.0);
    naive_conv(x, CI, H, W, wa, ba, CA, KA, 2, 1, a, HA, WA);
    float t1[4][NOUT > CA ? NOUT : CA], t2[4][NOUT > CA ? NOUT : CA], t3[4][NOUT > CA ? NOUT : CA];
    for (int j = 0; j < 4; j++) {
        memcpy(t1[j], bn1[j], sizeof bn1[j]);
        memcpy(t2[j], bn2[j], sizeof bn2[j]);
        memcpy(t3[j], bn3[j], sizeof bn3[j]);
    }
    naive_bn(a, CA, HA * WA, t1, 1e-3);
    for (int i = 0; i < CA * HA * WA; i++)
        a[i] = a[i] > 0 ? a[i] : 0;
    naive_bn(a, CA, HA * WA, t2, 1e-5);
    naive_conv(a, CA, HA, WA, wb, bb, CB, KB, 1, 0, b, HB, WB);
    for (int c = 0; c < CB; c++) { /* 2x2 max-pool, stride 2 */
        float m = -INFINITY;
        for (int y = 0; y < 2; y++)
            for (int x2 = 0; x2 < 2; x2++)
                m = fmaxf(m, b[(c * HB + y) * WB + x2]);
        p[c] = m;
    }
    for (int o = 0; o < NOUT; o++) {
        double s = bl[o];
        for (int i = 0; i < FLAT; i++)
            s += (double)wl[o * FLAT + i] * p[i];
        logits[o] = (float)s;
    }
    naive_bn(logits, NOUT, 1, t3, 1e-5);
}

/* ---- tests ------------------------------------------------------------------ */

typedef struct hook_rec {
    int calls[4];
    float *x[4];
    int64_t rows[4], cols[4];
} hook_rec;

static mpq_err rec_hook(mpq_ctx *ctx, void *ud, int64_t layer, const float *x, int64_t rows,
                        int64_t cols) {
    (void)ctx;
    hook_rec *h = ud;
    h->calls[layer]++;
    h->rows[layer] = rows;
    h->cols[layer] = cols;
    free(h->x[layer]);
    h->x[layer] = malloc(sizeof(float) * (size_t)(rows * cols));
    memcpy(h->x[layer], x, sizeof(float) * (size_t)(rows * cols));
    return MPQ_OK;
}

static void test_forward_matches_naive(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "synthetic.cfg", cfg_text, 0, NULL, &cfg));
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, g_st, "auto", &m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, m, cfg, NULL, &f));
    const mpq_family_info *fi = mpq_family_get_info(f);
    assert_string_equal(mpq_family_name(f), "cnn");
    assert_int_equal(fi->nblocks, 3);
    assert_int_equal(fi->nlayers, 3);
    assert_int_equal(fi->out_width, NOUT);
    assert_int_equal(fi->layers[0].kind, MPQ_LAYER_CONV);
    assert_int_equal(fi->layers[0].in, CI * KA * KA);
    assert_int_equal(fi->layers[1].in, CA * KB * KB);
    assert_int_equal(fi->layers[2].kind, MPQ_LAYER_LINEAR);
    assert_string_equal(fi->layers[2].name, "l");
    assert_int_equal(mpq_family_width(f, 1), CA * HA * WA);
    assert_int_equal(mpq_family_width(f, 3), NOUT);

    enum { NIMG = 5 };
    float raw[NIMG * CI * H * W], got[NIMG * NOUT], want[NOUT];
    unsigned s = 7;
    fill(raw, NIMG * CI * H * W, &s, 0.0f, 255.0f);
    mpq_batch b = {.nseq = NIMG, .rows = NIMG, .input = raw};
    MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, f, &b, got));
    double md = 0.0;
    for (int i = 0; i < NIMG; i++) {
        naive_forward(raw + i * CI * H * W, want);
        for (int o = 0; o < NOUT; o++) {
            double d = fabs(got[i * NOUT + o] - want[o]) / (1.0 + fabs(want[o]));
            md = d > md ? d : md;
        }
    }
    printf("CNN im2col/folded vs naive direct/unfolded: max relative difference %.3g\n", md);
    assert_true(md < 1e-5);

    /* Folded weight of conv a: w * gamma / sqrt(var + eps) per output channel. */
    float wf[CA * CI * KA * KA];
    MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, f, 0, wf));
    for (int o = 0; o < CA; o++)
        for (int j = 0; j < CI * KA * KA; j++) {
            double e = wa[o * CI * KA * KA + j] * bn1[0][o] / sqrt(bn1[3][o] + 1e-3);
            assert_true(fabs(wf[o * CI * KA * KA + j] - e) <= 1e-6 * (1.0 + fabs(e)));
        }

    /* Hook: conv b sees im2col patches [(img, y, x)][(c, ky, kx)] of its
     * input, and patches W^T + bias is the conv output. */
    hook_rec h;
    memset(&h, 0, sizeof h);
    float *x0 = malloc(sizeof(float) * NIMG * CI * H * W);
    float *x1 = malloc(sizeof(float) * NIMG * CA * HA * WA);
    float *x2 = malloc(sizeof(float) * NIMG * CB * HB * WB);
    MPQ_ASSERT_OK(ctx, mpq_family_embed(ctx, f, &b, x0));
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, f, 0, &b, x0, x1, rec_hook, &h));
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, f, 1, &b, x1, x2, rec_hook, &h));
    assert_int_equal(h.calls[0], 1);
    assert_int_equal(h.calls[1], 1);
    assert_int_equal(h.rows[0], NIMG * HA * WA);
    assert_int_equal(h.cols[0], CI * KA * KA);
    assert_int_equal(h.rows[1], NIMG * HB * WB);
    assert_int_equal(h.cols[1], CA * KB * KB);
    /* Independent check: a direct conv of block 1's input at every output
     * position equals patches W^T + b. */
    float direct[CB * HB * WB];
    for (int i = 0; i < NIMG; i++) {
        naive_conv(x1 + i * CA * HA * WA, CA, HA, WA, wb, bb, CB, KB, 1, 0, direct, HB, WB);
        for (int o = 0; o < CB; o++)
            for (int p = 0; p < HB * WB; p++) {
                const float *row = h.x[1] + (i * HB * WB + p) * CA * KB * KB;
                double sdot = bb[o];
                for (int j = 0; j < CA * KB * KB; j++)
                    sdot += (double)row[j] * wb[o * CA * KB * KB + j];
                assert_true(fabs(sdot - direct[o * HB * WB + p]) < 1e-5);
            }
    }
    for (int i = 0; i < 4; i++)
        free(h.x[i]);

    /* Substituting zero weights for the linear layer leaves only its folded
     * bias: (bl - mean) * gamma / sqrt(var + eps) + beta. */
    float zero[NOUT * FLAT] = {0};
    MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, f, 2, zero));
    MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, f, &b, got));
    for (int o = 0; o < NOUT; o++) {
        double e = (bl[o] - bn3[2][o]) / sqrt(bn3[3][o] + 1e-5) * bn3[0][o] + bn3[1][o];
        assert_true(fabs(got[o] - e) < 1e-5);
    }
    free(x0), free(x1), free(x2);
    mpq_family_destroy(&f);
    mpq_model_close(&m);
    mpq_config_destroy(&cfg);
}

static void test_im2col_direct(void **state) {
    (void)state;
    /* mpq_im2col + a plain GEMM loop vs direct convolution, odd sizes. */
    enum { N = 2, C = 3, HH = 5, WW = 4, K = 3, ST = 2, PD = 2, CO = 2 };
    int ho = (HH + 2 * PD - K) / ST + 1, wo = (WW + 2 * PD - K) / ST + 1;
    float in[N * C * HH * WW], w[CO * C * K * K], bias[CO] = {0.1f, -0.2f};
    unsigned s = 3;
    fill(in, N * C * HH * WW, &s, -1, 1);
    fill(w, CO * C * K * K, &s, -1, 1);
    float *pt = malloc(sizeof(float) * (size_t)(N * ho * wo * C * K * K));
    mpq_im2col(in, N, C, HH, WW, K, K, ST, PD, pt);
    float direct[CO * 64];
    for (int n = 0; n < N; n++) {
        naive_conv(in + n * C * HH * WW, C, HH, WW, w, bias, CO, K, ST, PD, direct, ho, wo);
        for (int o = 0; o < CO; o++)
            for (int p = 0; p < ho * wo; p++) {
                double acc = bias[o];
                for (int j = 0; j < C * K * K; j++)
                    acc += (double)pt[((size_t)n * ho * wo + p) * C * K * K + j] *
                           w[o * C * K * K + j];
                assert_true(fabs(acc - direct[o * ho * wo + p]) < 1e-5);
            }
    }
    free(pt);
}

/* Parses `text` and expects an error whose message holds `want`. */
static void expect_cfg_error(const char *text, const char *want) {
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    mpq_err e = mpq_config_parse(ctx, "/tmp/x/cnn.cfg", text, 0, NULL, &cfg);
    if (e == MPQ_OK || !strstr(ctx->err_msg, want))
        fail_msg("expected an error containing '%s', got %s: '%s'", want, mpq_err_name(e),
                 ctx->err_msg);
    assert_int_equal(e, MPQ_ERR_CONFIG);
    assert_null(cfg);
    mpq_err_clear(ctx);
}

static void test_oplist_config(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    /* Defaults are filled in; lines are recorded. */
    mpq_config *cfg = NULL;
    MPQ_ASSERT_OK(ctx,
                  mpq_config_parse(ctx, "c.cfg",
                                   "model = { cnn = (\n { op = \"conv2d\"; weight = \"w\"; },\n"
                                   " { op = \"maxpool\"; } ); };\n",
                                   0, NULL, &cfg));
    assert_int_equal(cfg->model.cnn.n, 2);
    const mpq_op *c0 = &cfg->model.cnn.v[0];
    assert_string_equal(c0->op, "conv2d");
    assert_int_equal(c0->line, 2);
    assert_string_equal(mpq_op_get(c0, "weight")->s, "w");
    assert_string_equal(mpq_op_get(c0, "bias")->s, "");
    assert_int_equal(mpq_op_get(c0, "stride")->i, 1);
    assert_int_equal(mpq_op_get(c0, "padding")->i, 0);
    assert_int_equal(mpq_op_get(&cfg->model.cnn.v[1], "kernel")->i, 2);
    assert_null(mpq_op_get(c0, "kernel"));
    mpq_config_destroy(&cfg);

    expect_cfg_error("model = { cnn = ( { op = \"conv3d\"; } ); };",
                     "cnn.cfg:1: model.cnn: item 0: unknown op 'conv3d' (known: conv2d,");
    expect_cfg_error(
        "model = { cnn = ( { op = \"relu\"; },\n { op = \"conv2d\"; bias = \"b\"; } ); };",
        "cnn.cfg:2: model.cnn: op 'conv2d': missing required field 'weight'");
    expect_cfg_error("model = { cnn = ( { op = \"conv2d\"; weight = \"w\";\n strides = 2; } ); };",
                     "cnn.cfg:2: model.cnn: op 'conv2d': unknown field 'strides'");
    expect_cfg_error("model = { cnn = ( { op = \"conv2d\"; weight = \"w\"; stride = \"2\"; } ); };",
                     "field 'stride' must be an integer");
    expect_cfg_error("model = { cnn = ( { op = \"maxpool\"; kernel = -2; } ); };",
                     "field 'kernel' must not be negative");
    expect_cfg_error("model = { cnn = ( { op = \"relu\"; }, \"relu\" ); };",
                     "model.cnn: item 1: expected a group");
    expect_cfg_error("model = { cnn = ( { weight = \"w\"; } ); };", "missing string field 'op'");
    expect_cfg_error("model = { cnn = 3; };", "expected a list of groups");
    /* Not settable from the command line. */
    char *ov[1] = {"model.cnn=relu"};
    mpq_err e = mpq_config_parse(ctx, NULL, NULL, 1, ov, &cfg);
    assert_int_equal(e, MPQ_ERR_CONFIG);
    assert_non_null(strstr(ctx->err_msg, "set in the configuration file only"));
    mpq_err_clear(ctx);

    /* Errors found when the family is built name the op's line. */
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "bad.cfg",
                                        "model = { input_shape = [2, 7, 6];\n cnn = (\n"
                                        " { op = \"conv2d\"; weight = \"b.weight\"; } ); };\n",
                                        0, NULL, &cfg));
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, g_st, "auto", &m));
    e = mpq_family_create(ctx, m, cfg, "cnn", &f);
    assert_int_equal(e, MPQ_ERR_CONFIG);
    assert_non_null(strstr(ctx->err_msg, "bad.cfg:3: model.cnn: conv2d weight 'b.weight' expects "
                                         "4 input channels, its input has 2"));
    assert_null(f);
    mpq_err_clear(ctx);
    mpq_config_destroy(&cfg);
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "bad.cfg",
                                        "model = { input_shape = [2, 7];\n cnn = (\n"
                                        " { op = \"conv2d\"; weight = \"a.weight\"; } ); };\n",
                                        0, NULL, &cfg));
    e = mpq_family_create(ctx, m, cfg, "cnn", &f);
    assert_int_equal(e, MPQ_ERR_CONFIG);
    assert_non_null(strstr(ctx->err_msg, "model.input_shape: expected [channels, height, width]"));
    mpq_err_clear(ctx);
    mpq_config_destroy(&cfg);
    mpq_model_close(&m);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    if (tw_tempdir(g_dir, sizeof g_dir) != 0)
        return 1;
    snprintf(g_st, sizeof g_st, "%s/cnn.safetensors", g_dir);
    if (write_model() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_naive),
        cmocka_unit_test(test_im2col_direct),
        cmocka_unit_test(test_oplist_config),
    };
    int fails = cmocka_run_group_tests(tests, NULL, NULL);
    tw_rmtree(g_dir);
    return mpq_test_finish(&g_ctx, fails);
}
