/* test_cnn_backward.c: the CNN family's block backward pass
 * (mpq_family_block_backward) against central finite differences of
 * L = sum(dy .* block(x_in)) on every block of a small synthetic network
 * (standalone and folded batch norms, conv with stride 2 and padding, relu,
 * overlapping max-pool, flatten, linear) and of mnist-cnn-small on MNIST
 * images; the full dW and dx of the two conv blocks against a naive
 * double-precision backward written here; max-pool ties routed to the
 * element the forward picked; accumulation into dw, NULL dx / dw, bitwise
 * repeatability, argument errors and an allocation-failure sweep. The
 * learned bias corrections (mpq_family_set_bias_delta): each layer's
 * bias_tensor, the forward with and without one, and db against finite
 * differences and against dy summed per channel. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_config.h"
#include "mpq_family.h"
#include "mpq_idx.h"
#include "mpq_model.h"
#include "mpq_test.h"
#include "tiny_writer.h"

static mpq_ctx *g_ctx;
static char g_dir[4096], g_st[4200];

/* The synthetic network, input [2][7][6]:
 *   block 0: bn0 (standalone) -> conv a (2->4, k3, stride 2, pad 1) -> bn1 (folded) -> relu
 *            -> bn2 (standalone)                                    [4][4][3]
 *   block 1: conv b (4->3, k2) -> relu -> maxpool k2 stride 1 -> flatten   [3][3][2] -> 6
 *   block 2: linear (6->5) -> bn3 (folded) -> relu
 * and a tie network, input [1][4][4]: maxpool 2 -> flatten -> linear t (4->2). */
enum { CI = 2, H = 7, W = 6, CA = 4, KA = 3, HA = 4, WA = 3, CB = 3, KB = 2, HB = 3, WB = 2 };
enum { HP = 2, WP = 1, FLAT = CB * HP * WP, NOUT = 5, NIMG = 4, BNMAX = 5 };

static float wa[CA * CI * KA * KA], ba[CA], wb[CB * CA * KB * KB], bb[CB], wl[NOUT * FLAT],
    bl[NOUT], wt[2 * 4];
/* Batch norms: gamma, beta, mean, var of each channel (the first CI, CA or NOUT used). */
static float bn0[4][BNMAX], bn1[4][BNMAX], bn2[4][BNMAX], bn3[4][BNMAX];

static const char *cfg_text =
    "model = { family = \"cnn\"; input_shape = [2, 7, 6]; input_scale = 0.01;\n"
    "  input_mean = [0.25, -0.5]; input_std = [2.0];\n"
    "  cnn = (\n"
    "    { op = \"batchnorm\"; weight = \"bn0.weight\"; bias = \"bn0.bias\"; mean = \"bn0.mean\";\n"
    "      var = \"bn0.var\"; },\n"
    "    { op = \"conv2d\"; weight = \"a.weight\"; bias = \"a.bias\"; stride = 2; padding = 1; },\n"
    "    { op = \"batchnorm\"; weight = \"bn1.weight\"; bias = \"bn1.bias\"; mean = \"bn1.mean\";\n"
    "      var = \"bn1.var\"; eps = 0.001; },\n"
    "    { op = \"relu\"; },\n"
    "    { op = \"batchnorm\"; weight = \"bn2.weight\"; bias = \"bn2.bias\"; mean = \"bn2.mean\";\n"
    "      var = \"bn2.var\"; },\n"
    "    { op = \"conv2d\"; weight = \"b.weight\"; bias = \"b.bias\"; },\n"
    "    { op = \"relu\"; },\n"
    "    { op = \"maxpool\"; kernel = 2; stride = 1; },\n"
    "    { op = \"flatten\"; },\n"
    "    { op = \"linear\"; weight = \"l.weight\"; bias = \"l.bias\"; },\n"
    "    { op = \"batchnorm\"; weight = \"bn3.weight\"; bias = \"bn3.bias\"; mean = \"bn3.mean\";\n"
    "      var = \"bn3.var\"; },\n"
    "    { op = \"relu\"; }\n"
    "  );\n"
    "};\n";

static const char *tie_cfg_text =
    "model = { family = \"cnn\"; input_shape = [1, 4, 4];\n"
    "  cnn = ( { op = \"maxpool\"; kernel = 2; }, { op = \"flatten\"; },\n"
    "    { op = \"linear\"; weight = \"t.weight\"; } );\n"
    "};\n";

/* conv a without a bias tensor, bn1 folded into it: the output bias is
 * bn1's beta, and the conv's output is the block's. */
static const char *nobias_cfg_text =
    "model = { family = \"cnn\"; input_shape = [2, 7, 6]; input_scale = 0.01;\n"
    "  cnn = ( { op = \"conv2d\"; weight = \"a.weight\"; stride = 2; padding = 1; },\n"
    "    { op = \"batchnorm\"; weight = \"bn1.weight\"; bias = \"bn1.bias\"; mean = \"bn1.mean\";\n"
    "      var = \"bn1.var\"; } );\n"
    "};\n";

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) / 16777216.0 * 2.0 - 1.0);
}

static void fill(float *x, int64_t n, unsigned *s, float lo, float hi) {
    for (int64_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * (frand(s) + 1.0f) / 2.0f;
}

static void fill_bn(float bn[4][BNMAX], int c, unsigned *s) {
    for (int i = 0; i < c; i++) {
        bn[0][i] = 0.5f + (frand(s) + 1.0f) / 2.0f;
        bn[1][i] = 0.3f * frand(s);
        bn[2][i] = 0.3f * frand(s);
        bn[3][i] = 0.2f + (frand(s) + 1.0f);
    }
}

static int write_model(void) {
    unsigned s = 11;
    fill(wa, CA * CI * KA * KA, &s, -0.5f, 0.5f);
    fill(ba, CA, &s, -0.2f, 0.2f);
    fill(wb, CB * CA * KB * KB, &s, -0.5f, 0.5f);
    fill(bb, CB, &s, -0.2f, 0.2f);
    fill(wl, NOUT * FLAT, &s, -0.5f, 0.5f);
    fill(bl, NOUT, &s, -0.2f, 0.2f);
    fill(wt, 8, &s, -1.0f, 1.0f);
    fill_bn(bn0, CI, &s);
    fill_bn(bn1, CA, &s);
    fill_bn(bn2, CA, &s);
    fill_bn(bn3, NOUT, &s);
    tw_tensor t[24];
    int n = 0;
#define T(nm, d, nd, s0, s1, s2, s3) tw_f32(&t[n++], nm, d, nd, s0, s1, s2, s3)
    T("a.weight", wa, 4, CA, CI, KA, KA);
    T("a.bias", ba, 1, CA, 0, 0, 0);
    T("b.weight", wb, 4, CB, CA, KB, KB);
    T("b.bias", bb, 1, CB, 0, 0, 0);
    T("l.weight", wl, 2, NOUT, FLAT, 0, 0);
    T("l.bias", bl, 1, NOUT, 0, 0, 0);
    T("t.weight", wt, 2, 2, 4, 0, 0);
    const char *part[4] = {"weight", "bias", "mean", "var"};
    char nm[32];
    for (int i = 0; i < 4; i++) {
        snprintf(nm, sizeof nm, "bn0.%s", part[i]);
        T(nm, bn0[i], 1, CI, 0, 0, 0);
        snprintf(nm, sizeof nm, "bn1.%s", part[i]);
        T(nm, bn1[i], 1, CA, 0, 0, 0);
        snprintf(nm, sizeof nm, "bn2.%s", part[i]);
        T(nm, bn2[i], 1, CA, 0, 0, 0);
        snprintf(nm, sizeof nm, "bn3.%s", part[i]);
        T(nm, bn3[i], 1, NOUT, 0, 0, 0);
    }
#undef T
    return tw_write_safetensors(g_st, t, n);
}

/* ---- finite differences ---------------------------------------------------- */

/* One block's loss L = sum(dy .* block(x)) in double, and what a finite
 * difference perturbs: an entry of x, or (layer >= 0) of the layer's
 * weight w, put in place with set_weight (delta: w is the layer's bias
 * correction [out], put in place with set_bias_delta). */
typedef struct fd_block {
    mpq_family *f;
    int64_t b, layer;
    int delta;
    const mpq_batch *batch;
    float *x, *w, *y; /* x [rows][width(b)], w [out][in] (its current weight), y scratch */
    const float *dy;  /* [rows][width(b+1)] */
    int64_t ny;
} fd_block;

static void fd_put(fd_block *c) {
    mpq_ctx *ctx = g_ctx;
    if (c->layer >= 0 && c->delta)
        MPQ_ASSERT_OK(ctx, mpq_family_set_bias_delta(ctx, c->f, c->layer, c->w));
    else if (c->layer >= 0)
        MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, c->f, c->layer, c->w));
}

static double fd_loss(fd_block *c, float *p, float v) {
    mpq_ctx *ctx = g_ctx;
    float old = *p;
    *p = v;
    fd_put(c);
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, c->f, c->b, c->batch, c->x, c->y, NULL, NULL));
    *p = old;
    fd_put(c);
    double L = 0.0;
    for (int64_t i = 0; i < c->ny; i++)
        L += (double)c->dy[i] * c->y[i];
    return L;
}

typedef struct fd_stat {
    double worst;   /* largest relative error of a checked entry */
    int64_t tried;  /* entries sampled */
    int64_t kinks;  /* skipped: the one-sided differences disagree (relu / max-pool kink) */
    int64_t failed; /* relative error above the tolerance */
} fd_stat;

/* Tolerance of a gradient entry against its central difference, and of
 * the two one-sided differences against each other (a kink within the step
 * that they miss moves the central difference by at most half of it). */
#define FD_TOL   2e-2
#define KINK_TOL 4e-3

/* Checks g[k] = dL/dv[k] for `nsample` entries k of v[0..nv) (all when
 * nv <= nsample). The block is piecewise linear in v, so each one-sided
 * difference is exact up to float rounding unless a kink lies within the
 * step: where the two disagree the step shrinks (8x, twice), and an entry
 * still straddling a kink is skipped. Errors are relative to
 * max(|g|, |fd|, 1e-2 max|g|), so that tiny gradients count absolutely. */
static void fd_check(fd_block *c, float *v, int64_t nv, const float *g, int64_t nsample,
                     unsigned seed, fd_stat *st) {
    double gmax = 0.0, vmean = 0.0;
    for (int64_t i = 0; i < nv; i++) {
        gmax = fmax(gmax, fabs(g[i]));
        vmean += fabs(v[i]) / (double)nv;
    }
    const double floor_g = 1e-2 * gmax;
    double L0 = fd_loss(c, v, v[0]);
    for (int64_t t = 0; t < (nv < nsample ? nv : nsample); t++) {
        int64_t k = nv <= nsample ? t : (int64_t)((frand(&seed) + 1.0f) / 2.0f * (float)nv) % nv;
        float base = v[k];
        double h = 4e-2 * fmax(fabs(base), vmean > 0 ? vmean : 1.0), err = -1.0;
        st->tried++;
        for (int a = 0; a < 3 && err < 0; a++, h /= 8.0) {
            float vp = (float)(base + h), vm = (float)(base - h);
            double Lp = fd_loss(c, &v[k], vp), Lm = fd_loss(c, &v[k], vm);
            double dp = (Lp - L0) / ((double)vp - base), dm = (L0 - Lm) / (base - (double)vm);
            if (fabs(dp - dm) > KINK_TOL * fmax(fmax(fabs(dp), fabs(dm)), floor_g))
                continue;
            double fd = (Lp - Lm) / ((double)vp - vm);
            err = fabs(fd - g[k]) / fmax(fmax(fabs(fd), fabs(g[k])), floor_g);
        }
        if (err < 0) {
            st->kinks++;
            continue;
        }
        st->worst = fmax(st->worst, err);
        if (err > FD_TOL) {
            st->failed++;
            printf("  entry %lld: gradient %.6g, error %.3g\n", (long long)k, g[k], err);
        }
    }
}

/* Finite differences on every block of f for the block inputs of `batch`,
 * with a random bias correction in [-0.1, 0.1] on every layer that takes
 * one (removed at the end): every layer's dW (nw sampled entries), db (all
 * entries; the same bits from a backward that wants nothing else) and
 * dx_in (nx sampled entries), at most a fraction kink_x of the dx entries
 * at kinks (and a quarter of the dW and db entries), at least 16 dW and dx
 * entries checked. */
static void fd_all_blocks(mpq_family *f, const mpq_batch *batch, int64_t nw, int64_t nx,
                          double kink_x, const char *what) {
    mpq_ctx *ctx = g_ctx;
    const mpq_family_info *fi = mpq_family_get_info(f);
    const int64_t n = batch->rows;
    float *x = NULL;
    x = malloc(sizeof(float) * (size_t)(n * mpq_family_width(f, 0)));
    MPQ_ASSERT_OK(ctx, mpq_family_embed(ctx, f, batch, x));
    float **d = calloc((size_t)fi->nlayers, sizeof *d);
    unsigned seed = 1234, dseed = 4321;
    for (int64_t l = 0; l < fi->nlayers; l++)
        if (fi->layers[l].bias_tensor[0]) {
            d[l] = malloc(sizeof(float) * (size_t)fi->layers[l].out);
            fill(d[l], fi->layers[l].out, &dseed, -0.1f, 0.1f);
            MPQ_ASSERT_OK(ctx, mpq_family_set_bias_delta(ctx, f, l, d[l]));
        }
    fd_stat sb = {0}; /* db, over all blocks */
    for (int64_t b = 0; b < fi->nblocks; b++) {
        int64_t wi = mpq_family_width(f, b), wo = mpq_family_width(f, b + 1);
        float *dy = malloc(sizeof(float) * (size_t)(n * wo));
        float *y = malloc(sizeof(float) * (size_t)(n * wo));
        float *dx = malloc(sizeof(float) * (size_t)(n * wi));
        fill(dy, n * wo, &seed, -1.0f, 1.0f);
        fd_block c = {
            .f = f, .b = b, .layer = -1, .batch = batch, .x = x, .y = y, .dy = dy, .ny = n * wo};
        fd_stat sx = {0}, sw = {0};
        for (int64_t l = 0; l < fi->nlayers; l++) {
            if (fi->layers[l].block != b)
                continue;
            const mpq_layer_info *li = &fi->layers[l];
            float *w = malloc(sizeof(float) * (size_t)(li->out * li->in));
            float *dw = calloc((size_t)(li->out * li->in), sizeof(float));
            float *db = calloc((size_t)li->out, sizeof(float));
            float *db1 = calloc((size_t)li->out, sizeof(float));
            float *dws[1] = {dw}, *dbs[1] = {db}, *dbs1[1] = {db1};
            MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, f, l, w));
            MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, b, batch, x, dy, dx, dws,
                                                         d[l] ? dbs : NULL));
            c.layer = l;
            c.w = w;
            fd_check(&c, w, li->out * li->in, dw, nw, seed + 7, &sw);
            if (d[l]) {
                MPQ_ASSERT_OK(ctx,
                              mpq_family_block_backward(ctx, f, b, batch, x, dy, NULL, NULL, dbs1));
                assert_memory_equal(db1, db, sizeof(float) * (size_t)li->out);
                c.delta = 1;
                c.w = d[l];
                fd_check(&c, d[l], li->out, db, li->out, seed + 3, &sb);
                c.delta = 0;
            }
            c.layer = -1;
            free(w), free(dw), free(db), free(db1);
        }
        MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, b, batch, x, dy, dx, NULL, NULL));
        fd_check(&c, x, n * wi, dx, nx, seed + 13, &sx);
        printf("%s block %lld: dW %lld entries (%lld at kinks) worst relative error %.3g; "
               "dx %lld entries (%lld at kinks) worst %.3g\n",
               what, (long long)b, (long long)sw.tried, (long long)sw.kinks, sw.worst,
               (long long)sx.tried, (long long)sx.kinks, sx.worst);
        assert_int_equal(sw.failed, 0);
        assert_int_equal(sx.failed, 0);
        /* Most entries are checked, not skipped as kinks. */
        assert_true(sw.kinks <= 0.25 * (double)sw.tried && sw.tried - sw.kinks >= 16);
        assert_true(sx.kinks <= kink_x * (double)sx.tried && sx.tried - sx.kinks >= 16);
        /* Next block's input. */
        float *xn = malloc(sizeof(float) * (size_t)(n * wo));
        MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, f, b, batch, x, xn, NULL, NULL));
        free(x);
        x = xn;
        free(dy), free(y), free(dx);
    }
    printf("%s: db %lld entries (%lld at kinks) worst relative error %.3g\n", what,
           (long long)sb.tried, (long long)sb.kinks, sb.worst);
    assert_int_equal(sb.failed, 0);
    assert_true(sb.kinks <= 0.25 * (double)sb.tried);
    for (int64_t l = 0; l < fi->nlayers; l++) {
        if (d[l])
            MPQ_ASSERT_OK(ctx, mpq_family_set_bias_delta(ctx, f, l, NULL));
        free(d[l]);
    }
    free(d), free(x);
}

/* ---- naive double-precision reference ------------------------------------- */

/* in [ci][h][w] -> out [co][ho][wo] += direct convolution (no bias). */
static void dconv(const double *in, int ci, int h, int w, const double *wk, int co, int k, int st,
                  int pd, double *out, int ho, int wo) {
    for (int o = 0; o < co; o++)
        for (int y = 0; y < ho; y++)
            for (int x = 0; x < wo; x++)
                for (int c = 0; c < ci; c++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = y * st - pd + ky, ix = x * st - pd + kx;
                            if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                out[(o * ho + y) * wo + x] += wk[((o * ci + c) * k + ky) * k + kx] *
                                                              in[(c * h + iy) * w + ix];
                        }
}

/* The conv's transpose for gz [co][ho][wo]: dW [co][ci*k*k] += gz * patch,
 * din [ci][h][w] += W^T gz, with the same loops as dconv. */
static void dconv_bwd(const double *in, int ci, int h, int w, const double *wk, int co, int k,
                      int st, int pd, const double *gz, int ho, int wo, double *dW, double *din) {
    for (int o = 0; o < co; o++)
        for (int y = 0; y < ho; y++)
            for (int x = 0; x < wo; x++)
                for (int c = 0; c < ci; c++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = y * st - pd + ky, ix = x * st - pd + kx;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                continue;
                            double g = gz[(o * ho + y) * wo + x];
                            dW[((o * ci + c) * k + ky) * k + kx] += g * in[(c * h + iy) * w + ix];
                            din[(c * h + iy) * w + ix] += g * wk[((o * ci + c) * k + ky) * k + kx];
                        }
}

/* Batch-norm scale and shift in double. */
static void bn_ss(float bn[4][BNMAX], int c, double eps, double *s, double *t) {
    for (int i = 0; i < c; i++) {
        s[i] = bn[0][i] / sqrt((double)bn[3][i] + eps);
        t[i] = bn[1][i] - bn[2][i] * s[i];
    }
}

/* Block 0 by hand: u = bn0(x); z = conv(u, wa*s1) + (ba - mean1)*s1 + beta1;
 * y = bn2(relu(z)); dW (folded weight) and dx for dy. */
static void naive_block0(const float *x, const float *dy, double *dW, double *dx) {
    double s0[CI], t0[CI], s1[CA], t1[CA], s2[CA], t2[CA], wf[CA * CI * KA * KA];
    bn_ss(bn0, CI, 1e-5, s0, t0);
    bn_ss(bn1, CA, 1e-3, s1, t1);
    bn_ss(bn2, CA, 1e-5, s2, t2);
    for (int o = 0; o < CA; o++)
        for (int j = 0; j < CI * KA * KA; j++)
            wf[o * CI * KA * KA + j] = wa[o * CI * KA * KA + j] * s1[o];
    memset(dW, 0, sizeof(double) * CA * CI * KA * KA);
    for (int n = 0; n < NIMG; n++) {
        double u[CI * H * W], z[CA * HA * WA], gz[CA * HA * WA], du[CI * H * W] = {0};
        for (int c = 0; c < CI; c++)
            for (int p = 0; p < H * W; p++)
                u[c * H * W + p] = x[n * CI * H * W + c * H * W + p] * s0[c] + t0[c];
        for (int o = 0; o < CA; o++)
            for (int p = 0; p < HA * WA; p++)
                z[o * HA * WA + p] = ba[o] * s1[o] + t1[o];
        dconv(u, CI, H, W, wf, CA, KA, 2, 1, z, HA, WA);
        for (int o = 0; o < CA; o++)
            for (int p = 0; p < HA * WA; p++) {
                int i = o * HA * WA + p;
                gz[i] = z[i] > 0 ? dy[n * CA * HA * WA + i] * s2[o] : 0.0;
            }
        dconv_bwd(u, CI, H, W, wf, CA, KA, 2, 1, gz, HA, WA, dW, du);
        for (int c = 0; c < CI; c++)
            for (int p = 0; p < H * W; p++)
                dx[n * CI * H * W + c * H * W + p] = du[c * H * W + p] * s0[c];
    }
}

/* Block 1 by hand: z = conv(x, wb) + bb; r = relu(z); y = maxpool 2 stride
 * 1 (the first maximum); dW and dx for dy. */
static void naive_block1(const float *x, const float *dy, double *dW, double *dx) {
    double wd[CB * CA * KB * KB];
    for (int i = 0; i < CB * CA * KB * KB; i++)
        wd[i] = wb[i];
    memset(dW, 0, sizeof(double) * CB * CA * KB * KB);
    for (int n = 0; n < NIMG; n++) {
        double xin[CA * HA * WA], z[CB * HB * WB], gz[CB * HB * WB] = {0}, din[CA * HA * WA] = {0};
        for (int i = 0; i < CA * HA * WA; i++)
            xin[i] = x[n * CA * HA * WA + i];
        for (int o = 0; o < CB; o++)
            for (int p = 0; p < HB * WB; p++)
                z[o * HB * WB + p] = bb[o];
        dconv(xin, CA, HA, WA, wd, CB, KB, 1, 0, z, HB, WB);
        for (int c = 0; c < CB; c++)
            for (int py = 0; py < HP; py++)
                for (int px = 0; px < WP; px++) {
                    int best = -1;
                    double m = -INFINITY;
                    for (int ky = 0; ky < 2; ky++)
                        for (int kx = 0; kx < 2; kx++) {
                            int i = (c * HB + py + ky) * WB + px + kx;
                            double r = z[i] > 0 ? z[i] : 0.0;
                            if (r > m)
                                m = r, best = i;
                        }
                    if (z[best] > 0)
                        gz[best] += dy[n * FLAT + (c * HP + py) * WP + px];
                }
        dconv_bwd(xin, CA, HA, WA, wd, CB, KB, 1, 0, gz, HB, WB, dW, din);
        for (int i = 0; i < CA * HA * WA; i++)
            dx[n * CA * HA * WA + i] = din[i];
    }
}

/* Largest |a - ref| relative to max |ref|. */
static double max_rel(const float *a, const double *ref, int64_t n) {
    double m = 0.0, d = 0.0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(ref[i]));
    for (int64_t i = 0; i < n; i++)
        d = fmax(d, fabs(a[i] - ref[i]));
    return d / (m > 0 ? m : 1.0);
}

/* ---- tests ------------------------------------------------------------------ */

typedef struct fixture {
    mpq_config *cfg;
    mpq_model *m;
    mpq_family *f;
} fixture;

static void open_family(const char *text, fixture *x) {
    mpq_ctx *ctx = g_ctx;
    memset(x, 0, sizeof *x);
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "synthetic.cfg", text, 0, NULL, &x->cfg));
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, g_st, "auto", &x->m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, x->m, x->cfg, NULL, &x->f));
}

static void close_family(fixture *x) {
    mpq_family_destroy(&x->f);
    mpq_model_close(&x->m);
    mpq_config_destroy(&x->cfg);
}

static void raw_images(float *raw, int64_t n, unsigned seed) {
    fill(raw, n, &seed, -100.0f, 150.0f);
}

static void test_synthetic_fd(void **state) {
    (void)state;
    fixture x;
    open_family(cfg_text, &x);
    const mpq_family_info *fi = mpq_family_get_info(x.f);
    assert_int_equal(fi->nblocks, 3);
    assert_int_equal(mpq_family_width(x.f, 1), CA * HA * WA);
    assert_int_equal(mpq_family_width(x.f, 2), FLAT);
    float raw[NIMG * CI * H * W];
    raw_images(raw, NIMG * CI * H * W, 5);
    mpq_batch b = {.nseq = NIMG, .rows = NIMG, .input = raw};
    assert_string_equal(fi->layers[0].bias_tensor, "a.bias"); /* its own, bn1 folded in */
    assert_string_equal(fi->layers[1].bias_tensor, "b.bias");
    assert_string_equal(fi->layers[2].bias_tensor, "l.bias"); /* its own, bn3 folded in */
    fd_all_blocks(x.f, &b, 200, 200, 0.25, "synthetic");
    close_family(&x);
}

/* The conv blocks' full dW and dx against the naive double backward; then
 * accumulation, NULL arguments and repeatability on block 1. */
static void test_synthetic_naive(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    fixture fx;
    open_family(cfg_text, &fx);
    mpq_family *f = fx.f;
    float raw[NIMG * CI * H * W], x0[NIMG * CI * H * W], x1[NIMG * CA * HA * WA];
    float dy0[NIMG * CA * HA * WA], dy1[NIMG * FLAT];
    raw_images(raw, NIMG * CI * H * W, 9);
    mpq_batch b = {.nseq = NIMG, .rows = NIMG, .input = raw};
    MPQ_ASSERT_OK(ctx, mpq_family_embed(ctx, f, &b, x0));
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, f, 0, &b, x0, x1, NULL, NULL));
    unsigned s = 77;
    fill(dy0, NIMG * CA * HA * WA, &s, -1.0f, 1.0f);
    fill(dy1, NIMG * FLAT, &s, -1.0f, 1.0f);

    float dw0[CA * CI * KA * KA] = {0}, dx0[NIMG * CI * H * W];
    float *d0[1] = {dw0};
    double rw0[CA * CI * KA * KA], rx0[NIMG * CI * H * W];
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 0, &b, x0, dy0, dx0, d0, NULL));
    naive_block0(x0, dy0, rw0, rx0);
    double e0w = max_rel(dw0, rw0, CA * CI * KA * KA), e0x = max_rel(dx0, rx0, NIMG * CI * H * W);

    float dw1[CB * CA * KB * KB] = {0}, dx1[NIMG * CA * HA * WA];
    float *d1[1] = {dw1};
    double rw1[CB * CA * KB * KB], rx1[NIMG * CA * HA * WA];
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 1, &b, x1, dy1, dx1, d1, NULL));
    naive_block1(x1, dy1, rw1, rx1);
    double e1w = max_rel(dw1, rw1, CB * CA * KB * KB), e1x = max_rel(dx1, rx1, NIMG * CA * HA * WA);
    printf("naive double backward: block 0 dW %.3g dx %.3g; block 1 dW %.3g dx %.3g "
           "(max error / max |gradient|)\n",
           e0w, e0x, e1w, e1x);
    assert_true(e0w < 1e-5 && e0x < 1e-5 && e1w < 1e-5 && e1x < 1e-5);

    /* dw accumulates: a second call adds the same gradient again. */
    float acc[CB * CA * KB * KB];
    memcpy(acc, dw1, sizeof acc);
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 1, &b, x1, dy1, NULL, d1, NULL));
    for (int i = 0; i < CB * CA * KB * KB; i++)
        assert_true(fabs(dw1[i] - 2.0 * acc[i]) <= 1e-6 * (fabs(acc[i]) + 1e-6));
    /* Same input, same bits: dW alone, dx alone, both, and again. */
    float wa1[CB * CA * KB * KB] = {0}, wb1[CB * CA * KB * KB] = {0};
    float xa[NIMG * CA * HA * WA], xb[NIMG * CA * HA * WA];
    float *pa[1] = {wa1}, *pb[1] = {wb1}, *pnull[1] = {NULL};
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 1, &b, x1, dy1, NULL, pa, NULL));
    assert_memory_equal(wa1, acc, sizeof acc);
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 1, &b, x1, dy1, xa, NULL, NULL));
    assert_memory_equal(xa, dx1, sizeof xa);
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 1, &b, x1, dy1, xb, pnull, NULL));
    assert_memory_equal(xb, dx1, sizeof xb);
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 1, &b, x1, dy1, xb, pb, NULL));
    assert_memory_equal(wb1, acc, sizeof acc);
    assert_memory_equal(xb, dx1, sizeof xb);
    /* Nothing wanted, or an empty batch: nothing written, no error. */
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 1, &b, x1, dy1, NULL, NULL, NULL));
    mpq_batch empty = {.nseq = 0, .rows = 0, .input = raw};
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 1, &empty, x1, dy1, xb, pb, NULL));
    assert_memory_equal(wb1, acc, sizeof acc);

    /* The weight in use is the substituted one: zero weights of conv b
     * give dx = W^T dgout = 0. */
    float zero[CB * CA * KB * KB] = {0};
    MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, f, 1, zero));
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 1, &b, x1, dy1, xa, NULL, NULL));
    for (int i = 0; i < NIMG * CA * HA * WA; i++)
        assert_true(xa[i] == 0.0f);

    /* Argument errors. */
    mpq_err e = mpq_family_block_backward(ctx, f, 3, &b, x1, dy1, xa, NULL, NULL);
    assert_int_equal(e, MPQ_ERR_ARG);
    assert_non_null(strstr(ctx->err_msg, "block 3 out of range"));
    mpq_err_clear(ctx);
    mpq_batch bad = {.nseq = NIMG, .rows = NIMG + 1, .input = raw};
    e = mpq_family_block_backward(ctx, f, 1, &bad, x1, dy1, xa, NULL, NULL);
    assert_int_equal(e, MPQ_ERR_ARG);
    assert_non_null(strstr(ctx->err_msg, "rows"));
    mpq_err_clear(ctx);
    close_family(&fx);
}

/* Allocation-failure sweep: on a fresh family, the k-th allocation of the
 * backward's scratch fails (for every k until none does) with
 * MPQ_ERR_NOMEM; the next call then succeeds with the gradients of an
 * undisturbed family, bit for bit. */
static void test_alloc_failures(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    fixture ref;
    open_family(cfg_text, &ref);
    enum { WMAX = NIMG * CI * H * W }; /* the widest block boundary */
    float raw[NIMG * CI * H * W], x[WMAX], dy[WMAX], dx[WMAX], rdx[WMAX], dw[128], rdw[128];
    raw_images(raw, NIMG * CI * H * W, 21);
    mpq_batch b = {.nseq = NIMG, .rows = NIMG, .input = raw};
    unsigned s = 5;
    fill(dy, WMAX, &s, -1.0f, 1.0f);
    for (int64_t blk = 0; blk < 3; blk++) {
        /* Block inputs need not come from the network: random ones do. */
        fill(x, WMAX, &s, -1.0f, 1.0f);
        memset(rdw, 0, sizeof rdw);
        float *pr[1] = {rdw}, *pw[1] = {dw};
        MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, ref.f, blk, &b, x, dy, rdx, pr, NULL));
        int64_t wi = NIMG * mpq_family_width(ref.f, blk);
        int fails = 0;
        for (int64_t k = 0; k < 64; k++) {
            mpq_family *f = NULL;
            MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, ref.m, ref.cfg, NULL, &f));
            memset(dw, 0, sizeof dw);
            mpq_alloc_fail_after(ctx, k);
            mpq_err e = mpq_family_block_backward(ctx, f, blk, &b, x, dy, dx, pw, NULL);
            mpq_alloc_fail_after(ctx, -1);
            if (e != MPQ_OK) {
                assert_int_equal(e, MPQ_ERR_NOMEM);
                mpq_err_clear(ctx);
                fails++;
                memset(dw, 0, sizeof dw);
                MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, blk, &b, x, dy, dx, pw, NULL));
            }
            assert_memory_equal(dx, rdx, sizeof(float) * (size_t)wi);
            assert_memory_equal(dw, rdw, sizeof dw);
            mpq_family_destroy(&f);
            if (e == MPQ_OK)
                break;
        }
        printf("block %lld: %d allocation failures swept\n", (long long)blk, fails);
        assert_true(fails >= 3); /* activations and two gradient buffers at least */
    }
    close_family(&ref);
}

/* Max-pool ties: the gradient goes to the element the forward picked (the
 * first maximum in window order), and only to it. */
static void test_pool_ties(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    fixture fx;
    open_family(tie_cfg_text, &fx);
    enum { N = 3 };
    /* Images of 0s and 1s: every window has ties. */
    float raw[N * 16], dy[N * 2], dx[N * 16], dw[2 * 4] = {0};
    unsigned s = 3;
    for (int i = 0; i < N * 16; i++)
        raw[i] = frand(&s) > 0.0f ? 1.0f : 0.0f;
    raw[0] = raw[1] = raw[4] = raw[5] = 1.0f; /* one window of four equal maxima */
    fill(dy, N * 2, &s, -1.0f, 1.0f);
    mpq_batch b = {.nseq = N, .rows = N, .input = raw};
    float *pw[1] = {dw};
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, fx.f, 0, &b, raw, dy, dx, pw, NULL));
    for (int n = 0; n < N; n++)
        for (int py = 0; py < 2; py++)
            for (int px = 0; px < 2; px++) {
                int pos = py * 2 + px, first = -1;
                float m = -INFINITY;
                for (int ky = 0; ky < 2; ky++)
                    for (int kx = 0; kx < 2; kx++) {
                        int i = (2 * py + ky) * 4 + 2 * px + kx;
                        if (raw[n * 16 + i] > m)
                            m = raw[n * 16 + i], first = i;
                    }
                double g = (double)dy[n * 2] * wt[pos] + (double)dy[n * 2 + 1] * wt[4 + pos];
                for (int ky = 0; ky < 2; ky++)
                    for (int kx = 0; kx < 2; kx++) {
                        int i = (2 * py + ky) * 4 + 2 * px + kx;
                        double want = i == first ? g : 0.0;
                        assert_true(fabs(dx[n * 16 + i] - want) <= 1e-6);
                    }
            }
    /* dW = dy^T pooled. */
    for (int o = 0; o < 2; o++)
        for (int pos = 0; pos < 4; pos++) {
            double want = 0.0;
            for (int n = 0; n < N; n++) {
                int py = pos / 2, px = pos % 2;
                float m = -INFINITY;
                for (int ky = 0; ky < 2; ky++)
                    for (int kx = 0; kx < 2; kx++)
                        m = fmaxf(m, raw[n * 16 + (2 * py + ky) * 4 + 2 * px + kx]);
                want += (double)dy[n * 2 + o] * m;
            }
            assert_true(fabs(dw[o * 4 + pos] - want) <= 1e-6);
        }
    /* Without dx the ops before the linear layer are not differentiated:
     * the same dW bits. */
    float dw2[2 * 4] = {0};
    float *pw2[1] = {dw2};
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, fx.f, 0, &b, raw, dy, NULL, pw2, NULL));
    assert_memory_equal(dw2, dw, sizeof dw);
    close_family(&fx);
}

/* Learned bias corrections where the conv's output is the block's, its
 * bias_tensor a folded batch norm's beta (and none: refused): the forward
 * with a correction is the output plus the correction (NULL restores it
 * bit for bit), db = dy summed per channel and accumulates; then finite
 * differences. */
static void test_bias_delta(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    enum { NY = NIMG * CA * HA * WA, HW = HA * WA };
    float raw[NIMG * CI * H * W], x[NIMG * CI * H * W], w[CA * CI * KA * KA], dlt[CA];
    float y0[NY], y1[NY], y2[NY], dy[NY], db[CA] = {0}, acc[CA];
    float *pdb[1] = {db};
    raw_images(raw, NIMG * CI * H * W, 17);
    mpq_batch b = {.nseq = NIMG, .rows = NIMG, .input = raw};
    unsigned s = 23;
    fill(dlt, CA, &s, -0.5f, 0.5f);
    fill(dy, NY, &s, -1.0f, 1.0f);
    fixture fx;
    open_family(tie_cfg_text, &fx);
    assert_string_equal(mpq_family_get_info(fx.f)->layers[0].bias_tensor, "");
    assert_int_equal(mpq_family_set_bias_delta(ctx, fx.f, 0, dlt), MPQ_ERR_ARG);
    mpq_err_clear(ctx);
    close_family(&fx);
    open_family(nobias_cfg_text, &fx);
    mpq_family *f = fx.f;
    assert_string_equal(mpq_family_get_info(f)->layers[0].bias_tensor, "bn1.bias");
    MPQ_ASSERT_OK(ctx, mpq_family_embed(ctx, f, &b, x));
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, f, 0, &b, x, y0, NULL, NULL));
    MPQ_ASSERT_OK(ctx, mpq_family_set_bias_delta(ctx, f, 0, dlt));
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, f, 0, &b, x, y1, NULL, NULL));
    for (int i = 0; i < NY; i++) /* y1 adds b + delta rounded once, y0 + delta rounds twice */
        assert_true(fabs(y1[i] - ((double)y0[i] + dlt[i / HW % CA])) <=
                    1e-6 * (1.0 + fabs(y0[i]) + fabs(y1[i])));
    /* set_weight keeps the correction; NULL removes it. */
    MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, f, 0, w));
    MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, f, 0, w));
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, f, 0, &b, x, y2, NULL, NULL));
    assert_memory_equal(y2, y1, sizeof y1);
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 0, &b, x, dy, NULL, NULL, pdb));
    for (int c = 0; c < CA; c++) {
        double want = 0.0;
        for (int i = 0; i < NY; i++)
            want += i / HW % CA == c ? dy[i] : 0.0;
        assert_true(fabs(db[c] - want) <= 1e-5 * (1.0 + fabs(want)));
    }
    memcpy(acc, db, sizeof acc);
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, f, 0, &b, x, dy, NULL, NULL, pdb));
    for (int c = 0; c < CA; c++)
        assert_true(db[c] == 2.0f * acc[c]);
    MPQ_ASSERT_OK(ctx, mpq_family_set_bias_delta(ctx, f, 0, NULL));
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, f, 0, &b, x, y2, NULL, NULL));
    assert_memory_equal(y2, y0, sizeof y0);
    fd_all_blocks(f, &b, 200, 200, 0.25, "conv + folded batch norm");
    close_family(&fx);
}

/* mnist-cnn-small on the first MNIST test images. */
static void test_mnist_fd(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char model[4096], img[4096], cfgpath[4200];
    mpq_test_shared("data/models/mnist-cnn-small/model-mnist.safetensors", model, sizeof model);
    mpq_test_shared("data/mnist/t10k-images-idx3-ubyte", img, sizeof img);
    const char *src = getenv("MPQ_SOURCE_DIR");
    snprintf(cfgpath, sizeof cfgpath, "%s/configs/mnist-cnn-small.cfg", src ? src : ".");
    fixture fx;
    memset(&fx, 0, sizeof fx);
    MPQ_ASSERT_OK(ctx, mpq_config_load(ctx, cfgpath, 0, NULL, &fx.cfg));
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, fx.cfg->model.path, fx.cfg->model.format, &fx.m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, fx.m, fx.cfg, NULL, &fx.f));
    const mpq_family_info *fi = mpq_family_get_info(fx.f);
    assert_int_equal(fi->nblocks, 3);
    assert_string_equal(fi->layers[0].bias_tensor, "conv1.bias");
    assert_string_equal(fi->layers[1].bias_tensor, "conv2.bias");
    assert_string_equal(fi->layers[2].bias_tensor, "fc1.bias");
    mpq_idx *ix = NULL;
    MPQ_ASSERT_OK(ctx, mpq_idx_open_images(ctx, img, &ix));
    enum { N = 4 };
    /* Pixels plus a small noise: the exact images' uniform background makes
     * exact ties in the max-pools, where the loss is not differentiable
     * (the one-sided differences of a background pixel differ, and can
     * agree by chance, so no finite difference checks them). */
    float raw[N * 784];
    unsigned s = 99;
    for (int i = 0; i < N * 784; i++)
        raw[i] = ix->data[i] + 5.0f * (frand(&s) + 1.0f);
    mpq_idx_close(&ix);
    mpq_batch b = {.nseq = N, .rows = N, .input = raw};
    fd_all_blocks(fx.f, &b, 64, 200, 0.25, "mnist-cnn-small");
    close_family(&fx);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    if (tw_tempdir(g_dir, sizeof g_dir) != 0)
        return 1;
    snprintf(g_st, sizeof g_st, "%s/cnn.safetensors", g_dir);
    if (write_model() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synthetic_fd), cmocka_unit_test(test_synthetic_naive),
        cmocka_unit_test(test_pool_ties),    cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_bias_delta),   cmocka_unit_test(test_mnist_fd),
    };
    int fails = cmocka_run_group_tests(tests, NULL, NULL);
    tw_rmtree(g_dir);
    return mpq_test_finish(&g_ctx, fails);
}
