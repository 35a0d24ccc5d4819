/* test_llama_backward.c: the Llama block's backward pass
 * (mpq_family_block_backward) on tiny random Hugging Face Llama models with
 * grouped-query attention (4 heads, 2 kv heads), q/k/v/o biases and a batch
 * of two sequences of different lengths.
 *
 * The loss is L = sum(dy .* block(x_in)) for a fixed random dy. Checked:
 *  - central finite differences through the family's own float forward
 *    (mpq_family_block, weights perturbed with mpq_family_set_weight) on a
 *    sample of entries of every layer's dW and of dx, plus each one's
 *    largest entry (steps: 3% of the layer's rms weight, 0.01 for x, whose
 *    entries are uniform in +-1.5);
 *  - a naive double-precision forward pass of the block written here from
 *    the Llama definitions (token by token, no tiling): its output against
 *    the family's, the full down-projection gradient dy^T h from its h, and
 *    double-precision central differences of every (or every k-th) entry of
 *    every dW and of dx;
 *  - dw accumulates, NULL dx / dw / dw entries, identical bits on repeated
 *    calls, and errors for a bad block index or batch;
 *  - the head's backward pass (final norm and output head,
 *    mpq_family_head_backward) against central finite differences of
 *    L = sum(dl .* head(x)) on every entry of x;
 *  - the gradients of learned bias corrections (test_bias_delta).
 * Cases: rotate-half RoPE (block 0, head_dim 6); interleaved pairs with
 * llama3 RoPE scaling, head_dim 8 != hidden / heads and substituted weights
 * (block 1); and BF16 weights with a 70-token sequence spanning two
 * attention tiles. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_family.h"
#include "mpq_model.h"
#include "mpq_model_format.h"
#include "test_io_util.h"
#include "tiny_writer.h"

static mpq_ctx *g_ctx;

/* Tolerances on err = |grad - fd| / max(|fd|, 0.1 * largest |grad| of the
 * array): float finite differences carry the float rounding of the loss
 * divided by 2h; double ones are exact to ~1e-8, leaving the float
 * rounding of the analytic gradient. */
#define TOL_FD_FLOAT  2e-2
#define TOL_FD_DOUBLE 1e-4

/* ---- the fixture: model, family, inputs ----------------------------------- */

typedef struct fx {
    char dir[4096];
    mpq_model *m;
    mpq_family *f;
    int64_t b, l0; /* block under test and its first layer */
    int64_t nseq, len[2], rows, D;
    float *x, *dy; /* [rows][D] */
    float *w[7];   /* the block's weights as the family uses them */
    int64_t wn[7]; /* their sizes */
} fx;

typedef struct fx_case {
    int interleaved; /* switch the model to llama2.c pair order */
    const char *rope_type, *dtype;
    int64_t head_dim, block, len0, len1;
    int substitute; /* replace the block's weights through set_weight */
} fx_case;

static uint64_t g_rng = 12345;

static double urand(void) { /* uniform in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) / 4503599627370496.0 - 1.0;
}

static void fx_open(fx *F, const fx_case *c) {
    mpq_ctx *ctx = g_ctx;
    memset(F, 0, sizeof *F);
    tw_llama m = {.dim = 24,
                  .hidden = 40,
                  .layers = 2,
                  .heads = 4,
                  .kv_heads = 2,
                  .vocab = 32,
                  .seq_len = 128,
                  .attn_bias = 1,
                  .rope_theta = 100.0,
                  .norm_eps = 1e-5,
                  .head_dim = c->head_dim,
                  .rope_type = c->rope_type,
                  .rope_factor = c->rope_type ? 8.0 : 0.0,
                  .rope_low_freq = c->rope_type ? 1.0 : 0.0,
                  .rope_high_freq = c->rope_type ? 4.0 : 0.0,
                  .rope_orig_max = c->rope_type ? 64 : 0};
    assert_int_equal(tw_llama_random(&m, 99 + (uint64_t)c->block), 0);
    assert_int_equal(tw_tempdir(F->dir, sizeof F->dir), 0);
    assert_int_equal(tw_write_hf(F->dir, &m, "llama", c->dtype, 1), 0);
    tw_llama_free(&m);
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, F->dir, "auto", &F->m));
    if (c->interleaved) {
        /* The same tensors read with llama2.c's pair order: another valid
         * network, which is all a gradient check needs. */
        mpq_arch a = *mpq_model_arch(F->m);
        a.rope_interleaved = 1;
        mpq_model_set_arch(F->m, &a);
    }
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, F->m, NULL, "llama", &F->f));
    F->b = c->block;
    F->l0 = c->block * 7;
    F->nseq = 2;
    F->len[0] = c->len0;
    F->len[1] = c->len1;
    F->rows = c->len0 + c->len1;
    F->D = 24;
    F->x = malloc(sizeof(float) * (size_t)(F->rows * F->D));
    F->dy = malloc(sizeof(float) * (size_t)(F->rows * F->D));
    for (int64_t i = 0; i < F->rows * F->D; i++) {
        F->x[i] = (float)(1.5 * urand());
        F->dy[i] = (float)urand();
    }
    const mpq_family_info *fi = mpq_family_get_info(F->f);
    for (int j = 0; j < 7; j++) {
        const mpq_layer_info *li = &fi->layers[F->l0 + j];
        assert_int_equal(li->block, F->b);
        F->wn[j] = li->out * li->in;
        F->w[j] = malloc(sizeof(float) * (size_t)F->wn[j]);
        MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, F->f, F->l0 + j, F->w[j]));
        if (c->substitute) {
            for (int64_t i = 0; i < F->wn[j]; i++)
                F->w[j][i] = (float)(F->w[j][i] * 1.25 + 0.05 * urand());
            MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, F->f, F->l0 + j, F->w[j]));
        }
    }
}

static void fx_close(fx *F) {
    for (int j = 0; j < 7; j++)
        free(F->w[j]);
    free(F->x);
    free(F->dy);
    mpq_family_destroy(&F->f);
    mpq_model_close(&F->m);
    tw_rmtree(F->dir);
}

static mpq_batch fx_batch(const fx *F) {
    return (mpq_batch){.nseq = F->nseq, .len = F->len, .rows = F->rows};
}

/* L = sum(dy .* block(x)) through the family's float forward. */
static double loss_float(fx *F, const float *x) {
    mpq_ctx *ctx = g_ctx;
    mpq_batch bt = fx_batch(F);
    float *out = malloc(sizeof(float) * (size_t)(F->rows * F->D));
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, F->f, F->b, &bt, x, out, NULL, NULL));
    double s = 0.0;
    for (int64_t i = 0; i < F->rows * F->D; i++)
        s += (double)F->dy[i] * out[i];
    free(out);
    return s;
}

/* The analytic gradients: dw[j] zeroed then accumulated, dx written. */
typedef struct grads {
    float *dw[7], *dx;
} grads;

static void grads_alloc(const fx *F, grads *G) {
    for (int j = 0; j < 7; j++)
        G->dw[j] = calloc((size_t)F->wn[j], sizeof(float));
    G->dx = malloc(sizeof(float) * (size_t)(F->rows * F->D));
}

static void grads_free(grads *G) {
    for (int j = 0; j < 7; j++)
        free(G->dw[j]);
    free(G->dx);
}

static void backward(fx *F, float *const *dw, float *dx) {
    mpq_ctx *ctx = g_ctx;
    mpq_batch bt = fx_batch(F);
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, F->f, F->b, &bt, F->x, F->dy, dx, dw, NULL));
}

static double max_abs(const float *a, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        m = fabs((double)a[i]) > m ? fabs((double)a[i]) : m;
    return m;
}

static int64_t argmax_abs(const float *a, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 1; i < n; i++)
        if (fabs((double)a[i]) > fabs((double)a[k]))
            k = i;
    return k;
}

/* err of one entry; fails with a message naming it above tol. */
static double check_entry(const char *what, int64_t i, double g, double fd, double gmax,
                          double tol) {
    double den = fabs(fd) > 0.1 * gmax ? fabs(fd) : 0.1 * gmax;
    double err = fabs(g - fd) / (den > 0.0 ? den : 1.0);
    if (err > tol)
        fail_msg("%s entry %lld: gradient %.7g, finite difference %.7g (err %.3g > %.3g)", what,
                 (long long)i, g, fd, err, tol);
    return err;
}

static const char *const lname[7] = {"q", "k", "v", "o", "gate", "up", "down"};

/* Float central differences through the family on `ns` random entries and
 * the largest one of every dW and of dx; returns the worst err. */
static double check_float_fd(fx *F, const grads *G, int ns) {
    mpq_ctx *ctx = g_ctx;
    double worst = 0.0;
    for (int j = 0; j < 7; j++) {
        double rms = 0.0;
        for (int64_t i = 0; i < F->wn[j]; i++)
            rms += (double)F->w[j][i] * F->w[j][i];
        float h = (float)(3e-2 * sqrt(rms / (double)F->wn[j]));
        double gmax = max_abs(G->dw[j], F->wn[j]);
        for (int s = 0; s <= ns; s++) {
            int64_t e = s == ns ? argmax_abs(G->dw[j], F->wn[j])
                                : (int64_t)((urand() + 1.0) * 0.5 * (double)F->wn[j]);
            float w0 = F->w[j][e];
            F->w[j][e] = w0 + h;
            MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, F->f, F->l0 + j, F->w[j]));
            double lp = loss_float(F, F->x);
            F->w[j][e] = w0 - h;
            MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, F->f, F->l0 + j, F->w[j]));
            double lm = loss_float(F, F->x);
            F->w[j][e] = w0;
            MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, F->f, F->l0 + j, F->w[j]));
            /* the step actually taken, after float rounding of w0 +- h */
            double step = (double)(w0 + h) - (double)(w0 - h);
            double err =
                check_entry(lname[j], e, G->dw[j][e], (lp - lm) / step, gmax, TOL_FD_FLOAT);
            worst = err > worst ? err : worst;
        }
    }
    int64_t nx = F->rows * F->D;
    double gmax = max_abs(G->dx, nx);
    float *xp = malloc(sizeof(float) * (size_t)nx);
    memcpy(xp, F->x, sizeof(float) * (size_t)nx);
    for (int s = 0; s <= 2 * ns; s++) {
        int64_t e = s == 2 * ns ? argmax_abs(G->dx, nx) : (int64_t)((urand() + 1.0) * 0.5 * nx);
        float x0 = F->x[e], h = 1e-2f;
        xp[e] = x0 + h;
        double lp = loss_float(F, xp);
        xp[e] = x0 - h;
        double lm = loss_float(F, xp);
        xp[e] = x0;
        double step = (double)(x0 + h) - (double)(x0 - h);
        double err = check_entry("dx", e, G->dx[e], (lp - lm) / step, gmax, TOL_FD_FLOAT);
        worst = err > worst ? err : worst;
    }
    free(xp);
    return worst;
}

/* ---- naive double-precision reference ------------------------------------- */

typedef struct ref {
    int64_t D, H, nh, nkv, hd, qd, kvd;
    double eps;
    int inter;
    double *w[7];              /* [out][in] */
    double *n1, *n2;           /* [D] norm weights */
    double *bq, *bk, *bv, *bo; /* biases */
    double *freq;              /* [hd/2] */
    const int64_t *len;
    int64_t nseq, rows;
} ref;

static double *read_tensor(const fx *F, const char *fmt, int64_t layer, int64_t n) {
    mpq_ctx *ctx = g_ctx;
    char name[MPQ_TENSOR_NAME_MAX];
    snprintf(name, sizeof name, fmt, (long long)layer);
    const mpq_tensor *t = mpq_model_find(F->m, name);
    assert_non_null(t);
    assert_int_equal(t->numel, n);
    float *tmp = malloc(sizeof(float) * (size_t)n);
    double *out = malloc(sizeof(double) * (size_t)n);
    MPQ_ASSERT_OK(ctx, mpq_tensor_read_f32(ctx, t, 0, n, tmp));
    for (int64_t i = 0; i < n; i++)
        out[i] = tmp[i];
    free(tmp);
    return out;
}

static void ref_load(ref *r, const fx *F) {
    const mpq_arch *a = mpq_model_arch(F->m);
    r->D = a->dim;
    r->H = a->hidden_dim;
    r->nh = a->n_heads;
    r->nkv = a->n_kv_heads;
    r->hd = a->head_dim;
    r->qd = r->nh * r->hd;
    r->kvd = r->nkv * r->hd;
    r->eps = a->norm_eps;
    r->inter = a->rope_interleaved;
    for (int j = 0; j < 7; j++) {
        r->w[j] = malloc(sizeof(double) * (size_t)F->wn[j]);
        for (int64_t i = 0; i < F->wn[j]; i++)
            r->w[j][i] = F->w[j][i];
    }
    r->n1 = read_tensor(F, "model.layers.%lld.input_layernorm.weight", F->b, r->D);
    r->n2 = read_tensor(F, "model.layers.%lld.post_attention_layernorm.weight", F->b, r->D);
    r->bq = read_tensor(F, "model.layers.%lld.self_attn.q_proj.bias", F->b, r->qd);
    r->bk = read_tensor(F, "model.layers.%lld.self_attn.k_proj.bias", F->b, r->kvd);
    r->bv = read_tensor(F, "model.layers.%lld.self_attn.v_proj.bias", F->b, r->kvd);
    r->bo = read_tensor(F, "model.layers.%lld.self_attn.o_proj.bias", F->b, r->D);
    r->freq = malloc(sizeof(double) * (size_t)(r->hd / 2));
    for (int64_t j = 0; j < r->hd / 2; j++)
        r->freq[j] = mpq_rope_inv_freq(a, j);
    r->len = F->len;
    r->nseq = F->nseq;
    r->rows = F->rows;
}

static void ref_free(ref *r) {
    for (int j = 0; j < 7; j++)
        free(r->w[j]);
    double *p[] = {r->n1, r->n2, r->bq, r->bk, r->bv, r->bo, r->freq};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        free(p[i]);
}

/* y[out] = W x (+ b) */
static void mv(double *y, const double *w, const double *x, const double *b, int64_t out,
               int64_t in) {
    for (int64_t o = 0; o < out; o++) {
        double s = b ? b[o] : 0.0;
        for (int64_t i = 0; i < in; i++)
            s += w[o * in + i] * x[i];
        y[o] = s;
    }
}

static void rms(double *y, const double *x, const double *w, int64_t n, double eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = w[i] * x[i] * inv;
}

static void rotate(const ref *r, double *v, int64_t nheads, int64_t pos) {
    int64_t half = r->hd / 2;
    for (int64_t h = 0; h < nheads; h++)
        for (int64_t j = 0; j < half; j++) {
            int64_t i0 = h * r->hd + (r->inter ? 2 * j : j);
            int64_t i1 = h * r->hd + (r->inter ? 2 * j + 1 : j + half);
            double c = cos((double)pos * r->freq[j]), s = sin((double)pos * r->freq[j]);
            double a0 = v[i0], a1 = v[i1];
            v[i0] = a0 * c - a1 * s;
            v[i1] = a0 * s + a1 * c;
        }
}

/* y [rows][D] = block(x); hh [rows][H] = silu(g) * u when non-NULL. */
static void ref_forward(const ref *r, const double *x, double *y, double *hh) {
    int64_t R = r->rows, D = r->D, H = r->H, qd = r->qd, kvd = r->kvd;
    double *q = malloc(sizeof(double) * (size_t)(R * qd));
    double *k = malloc(sizeof(double) * (size_t)(R * kvd));
    double *v = malloc(sizeof(double) * (size_t)(R * kvd));
    double *t = malloc(sizeof(double) * (size_t)(D + 2 * H + qd + R));
    double *nx = t, *g = t + D, *u = t + D + H, *att = t + D + 2 * H, *p = att + qd;
    for (int64_t s = 0, r0 = 0; s < r->nseq; r0 += r->len[s++])
        for (int64_t i = 0; i < r->len[s]; i++) {
            int64_t row = r0 + i;
            rms(nx, x + row * D, r->n1, D, r->eps);
            mv(q + row * qd, r->w[0], nx, r->bq, qd, D);
            mv(k + row * kvd, r->w[1], nx, r->bk, kvd, D);
            mv(v + row * kvd, r->w[2], nx, r->bv, kvd, D);
            rotate(r, q + row * qd, r->nh, i);
            rotate(r, k + row * kvd, r->nkv, i);
        }
    for (int64_t s = 0, r0 = 0; s < r->nseq; r0 += r->len[s++])
        for (int64_t i = 0; i < r->len[s]; i++) {
            int64_t row = r0 + i;
            for (int64_t h = 0; h < r->nh; h++) {
                int64_t kh = h / (r->nh / r->nkv);
                double mx = -1e300, tot = 0.0;
                for (int64_t j = 0; j <= i; j++) {
                    double d = 0.0;
                    for (int64_t e = 0; e < r->hd; e++)
                        d += q[row * qd + h * r->hd + e] * k[(r0 + j) * kvd + kh * r->hd + e];
                    p[j] = d / sqrt((double)r->hd);
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int64_t j = 0; j <= i; j++) {
                    p[j] = exp(p[j] - mx);
                    tot += p[j];
                }
                for (int64_t e = 0; e < r->hd; e++) {
                    double a = 0.0;
                    for (int64_t j = 0; j <= i; j++)
                        a += p[j] / tot * v[(r0 + j) * kvd + kh * r->hd + e];
                    att[h * r->hd + e] = a;
                }
            }
            double *yr = y + row * D;
            mv(yr, r->w[3], att, r->bo, D, qd);
            for (int64_t e = 0; e < D; e++)
                yr[e] += x[row * D + e];
            rms(nx, yr, r->n2, D, r->eps);
            mv(g, r->w[4], nx, NULL, H, D);
            mv(u, r->w[5], nx, NULL, H, D);
            for (int64_t e = 0; e < H; e++)
                g[e] = g[e] / (1.0 + exp(-g[e])) * u[e];
            if (hh)
                memcpy(hh + row * H, g, sizeof(double) * (size_t)H);
            mv(u, r->w[6], g, NULL, D, H);
            for (int64_t e = 0; e < D; e++)
                yr[e] += u[e];
        }
    free(q), free(k), free(v), free(t);
}

static double ref_loss(const ref *r, const double *x, const float *dy, double *y) {
    ref_forward(r, x, y, NULL);
    double s = 0.0;
    for (int64_t i = 0; i < r->rows * r->D; i++)
        s += (double)dy[i] * y[i];
    return s;
}

/* Double central differences of every stride-th entry of every dW and dx
 * (offset varies per array); also the naive forward against the family's
 * and the full down gradient dy^T h. Returns the worst err. */
static double check_double(fx *F, const grads *G, int64_t stride, double *worst_down) {
    ref r;
    ref_load(&r, F);
    int64_t nx = F->rows * F->D;
    double *xd = malloc(sizeof(double) * (size_t)nx), *y = malloc(sizeof(double) * (size_t)nx);
    double *hh = malloc(sizeof(double) * (size_t)(F->rows * r.H));
    for (int64_t i = 0; i < nx; i++)
        xd[i] = F->x[i];

    /* the reference computes the family's function */
    ref_forward(&r, xd, y, hh);
    mpq_batch bt = fx_batch(F);
    float *out = malloc(sizeof(float) * (size_t)nx);
    MPQ_ASSERT_OK(g_ctx, mpq_family_block(g_ctx, F->f, F->b, &bt, F->x, out, NULL, NULL));
    for (int64_t i = 0; i < nx; i++)
        if (fabs(out[i] - y[i]) > 1e-4 * (1.0 + fabs(y[i])))
            fail_msg("forward entry %lld: family %.7g, reference %.7g", (long long)i,
                     (double)out[i], y[i]);
    free(out);

    /* full dW_down = dy^T h */
    double gmax = max_abs(G->dw[6], F->wn[6]);
    *worst_down = 0.0;
    for (int64_t o = 0; o < r.D; o++)
        for (int64_t i = 0; i < r.H; i++) {
            double s = 0.0;
            for (int64_t row = 0; row < F->rows; row++)
                s += (double)F->dy[row * r.D + o] * hh[row * r.H + i];
            double err =
                check_entry("down (dy^T h)", o * r.H + i, G->dw[6][o * r.H + i], s, gmax, 1e-4);
            *worst_down = err > *worst_down ? err : *worst_down;
        }

    double worst = 0.0, h = 1e-5;
    for (int j = 0; j <= 7; j++) {
        double *p = j < 7 ? r.w[j] : xd;
        const float *g = j < 7 ? G->dw[j] : G->dx;
        int64_t n = j < 7 ? F->wn[j] : nx;
        gmax = max_abs(g, n);
        for (int64_t e = j % stride; e < n; e += stride) {
            double p0 = p[e];
            p[e] = p0 + h;
            double lp = ref_loss(&r, xd, F->dy, y);
            p[e] = p0 - h;
            double lm = ref_loss(&r, xd, F->dy, y);
            p[e] = p0;
            double err = check_entry(j < 7 ? lname[j] : "dx", e, g[e], (lp - lm) / (2 * h), gmax,
                                     TOL_FD_DOUBLE);
            worst = err > worst ? err : worst;
        }
    }
    free(xd), free(y), free(hh);
    ref_free(&r);
    return worst;
}

/* ---- tests ------------------------------------------------------------------ */

static void run_case(const fx_case *c, const char *what, int ns, int64_t stride) {
    fx F;
    fx_open(&F, c);
    grads G;
    grads_alloc(&F, &G);
    backward(&F, G.dw, G.dx);
    double wd = 0.0;
    double wdbl = check_double(&F, &G, stride, &wd);
    double wf = check_float_fd(&F, &G, ns);
    printf("%s: worst err: float FD %.3g, double FD %.3g, dy^T h %.3g\n", what, wf, wdbl, wd);
    grads_free(&G);
    fx_close(&F);
}

static void test_halves(void **state) {
    (void)state;
    fx_case c = {.dtype = "F32", .block = 0, .len0 = 5, .len1 = 9};
    run_case(&c, "rotate-half, block 0", 12, 1);
}

static void test_interleaved_llama3(void **state) {
    (void)state;
    fx_case c = {.interleaved = 1,
                 .rope_type = "llama3",
                 .dtype = "F32",
                 .head_dim = 8,
                 .block = 1,
                 .len0 = 9,
                 .len1 = 5,
                 .substitute = 1};
    run_case(&c, "interleaved llama3 head_dim 8, block 1, substituted", 12, 2);
}

static void test_two_tiles_bf16(void **state) {
    (void)state;
    fx_case c = {.dtype = "BF16", .block = 1, .len0 = 70, .len1 = 6};
    run_case(&c, "BF16, 70 + 6 tokens", 6, 23);
}

static int bits_equal(const float *a, const float *b, int64_t n) {
    return memcmp(a, b, sizeof(float) * (size_t)n) == 0;
}

static void test_accumulate_null_bits(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    fx_case c = {.dtype = "F32", .block = 1, .len0 = 5, .len1 = 9};
    fx F;
    fx_open(&F, &c);
    int64_t nx = F.rows * F.D;
    double l_before = loss_float(&F, F.x);
    grads A, B;
    grads_alloc(&F, &A);
    grads_alloc(&F, &B);
    backward(&F, A.dw, A.dx);
    /* same input, same bits */
    backward(&F, B.dw, B.dx);
    for (int j = 0; j < 7; j++)
        assert_true(bits_equal(A.dw[j], B.dw[j], F.wn[j]));
    assert_true(bits_equal(A.dx, B.dx, nx));
    /* a second call adds: 2 dw */
    backward(&F, B.dw, NULL);
    for (int j = 0; j < 7; j++)
        for (int64_t i = 0; i < F.wn[j]; i++)
            if (fabs(B.dw[j][i] - 2.0 * A.dw[j][i]) > 1e-6 * fabs(A.dw[j][i]))
                fail_msg("%s entry %lld: %.9g after two calls, %.9g after one", lname[j],
                         (long long)i, (double)B.dw[j][i], (double)A.dw[j][i]);
    /* NULL dw: the same dx */
    memset(B.dx, 0, sizeof(float) * (size_t)nx);
    backward(&F, NULL, B.dx);
    assert_true(bits_equal(A.dx, B.dx, nx));
    /* NULL entries: only the wanted ones, the same bits; others untouched;
     * with and without the attention part (q/k/v, dx) */
    for (int variant = 0; variant < 2; variant++) {
        float *sel[7] = {NULL};
        for (int j = 0; j < 7; j++)
            memset(B.dw[j], 0, sizeof(float) * (size_t)F.wn[j]);
        sel[variant ? 4 : 1] = B.dw[variant ? 4 : 1];
        sel[6] = B.dw[6];
        backward(&F, sel, NULL);
        for (int j = 0; j < 7; j++) {
            if (sel[j])
                assert_true(bits_equal(A.dw[j], B.dw[j], F.wn[j]));
            else
                assert_true(max_abs(B.dw[j], F.wn[j]) == 0.0);
        }
    }
    /* the backward leaves the forward as it was */
    assert_true(loss_float(&F, F.x) == l_before);

    /* errors */
    mpq_batch bt = fx_batch(&F);
    test_io_expect(ctx, mpq_family_block_backward(ctx, F.f, 2, &bt, F.x, F.dy, A.dx, A.dw, NULL),
                   MPQ_ERR_ARG, "block 2 out of range", NULL, NULL);
    bt.rows = F.rows + 1;
    test_io_expect(ctx, mpq_family_block_backward(ctx, F.f, 0, &bt, F.x, F.dy, A.dx, A.dw, NULL),
                   MPQ_ERR_ARG, "sequence lengths sum to", NULL, NULL);
    grads_free(&A);
    grads_free(&B);
    fx_close(&F);
}

/* mpq_family_block_fit_grad (Llama's fused pass) against the block's
 * forward, then mpq_family_block_backward from dy = 2 (y - target): the
 * same bits for y, dy and every dw. */
static void test_fit_grad(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    fx_case c = {.dtype = "F32", .block = 0, .len0 = 7, .len1 = 4};
    fx F;
    fx_open(&F, &c);
    const int64_t n = F.rows * F.D;
    mpq_batch bt = fx_batch(&F);
    float *target = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    float *dy = malloc(sizeof(float) * (size_t)n), *yr = malloc(sizeof(float) * (size_t)n);
    float *dyr = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        target[i] = (float)sin(0.37 * (double)i);
    grads A, B;
    grads_alloc(&F, &A);
    grads_alloc(&F, &B);
    MPQ_ASSERT_OK(ctx,
                  mpq_family_block_fit_grad(ctx, F.f, F.b, &bt, F.x, target, y, dy, A.dw, NULL));
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, F.f, F.b, &bt, F.x, yr, NULL, NULL));
    for (int64_t i = 0; i < n; i++)
        dyr[i] = 2.0f * (yr[i] - target[i]);
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, F.f, F.b, &bt, F.x, dyr, NULL, B.dw, NULL));
    assert_true(bits_equal(y, yr, n));
    assert_true(bits_equal(dy, dyr, n));
    for (int j = 0; j < 7; j++)
        if (!bits_equal(A.dw[j], B.dw[j], F.wn[j]))
            fail_msg("%s: the fused gradient differs from forward + backward", lname[j]);
    assert_true(max_abs(A.dw[0], F.wn[0]) > 0.0);
    test_io_expect(ctx, mpq_family_block_fit_grad(ctx, F.f, 2, &bt, F.x, target, y, dy, A.dw, NULL),
                   MPQ_ERR_ARG, "block 2 out of range", NULL, NULL);
    grads_free(&A);
    grads_free(&B);
    free(target);
    free(y);
    free(dy);
    free(yr);
    free(dyr);
    fx_close(&F);
}

/* The learned bias corrections (round.learn_bias): the q/k/v/o layers name
 * their bias tensors and the MLP's none (and refuse a correction); the
 * gradients db of random corrections against float central differences of
 * the family's forward (h = 0.01, every entry); the fused pass gives the
 * same db bits; removing the corrections restores the output's bits. */
static void test_bias_delta(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    fx_case c = {.dtype = "F32", .block = 1, .len0 = 6, .len1 = 5};
    fx F;
    fx_open(&F, &c);
    const mpq_family_info *fi = mpq_family_get_info(F.f);
    const double l_plain = loss_float(&F, F.x);
    float *d[7] = {NULL}, *db[7] = {NULL}, *db2[7] = {NULL};
    for (int j = 0; j < 7; j++) {
        const mpq_layer_info *li = &fi->layers[F.l0 + j];
        char want[MPQ_TENSOR_NAME_MAX + 8] = "";
        if (j <= 3)
            snprintf(want, sizeof want, "%s.bias", li->name);
        assert_string_equal(li->bias_tensor, want);
        if (j > 3) {
            float one = 1.0f;
            test_io_expect(ctx, mpq_family_set_bias_delta(ctx, F.f, F.l0 + j, &one), MPQ_ERR_ARG,
                           "takes no output bias", NULL, NULL);
            continue;
        }
        d[j] = malloc(sizeof(float) * (size_t)li->out);
        db[j] = calloc((size_t)li->out, sizeof(float));
        db2[j] = calloc((size_t)li->out, sizeof(float));
        for (int64_t i = 0; i < li->out; i++)
            d[j][i] = (float)(0.2 * urand());
        MPQ_ASSERT_OK(ctx, mpq_family_set_bias_delta(ctx, F.f, F.l0 + j, d[j]));
    }
    assert_true(loss_float(&F, F.x) != l_plain);
    mpq_batch bt = fx_batch(&F);
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, F.f, F.b, &bt, F.x, F.dy, NULL, NULL, db));
    for (int j = 0; j < 4; j++) {
        const int64_t n = fi->layers[F.l0 + j].out;
        const double gmax = max_abs(db[j], n);
        assert_true(gmax > 0.0);
        for (int64_t i = 0; i < n; i++) {
            const float d0 = d[j][i];
            double l[2];
            for (int s = 0; s < 2; s++) {
                d[j][i] = d0 + (s ? -0.01f : 0.01f);
                MPQ_ASSERT_OK(ctx, mpq_family_set_bias_delta(ctx, F.f, F.l0 + j, d[j]));
                l[s] = loss_float(&F, F.x);
            }
            d[j][i] = d0;
            MPQ_ASSERT_OK(ctx, mpq_family_set_bias_delta(ctx, F.f, F.l0 + j, d[j]));
            const double h = (double)(d0 + 0.01f) - (double)(d0 - 0.01f);
            check_entry(lname[j], i, db[j][i], (l[0] - l[1]) / h, gmax, TOL_FD_FLOAT);
        }
    }
    /* the fused pass: the same db */
    const int64_t n = F.rows * F.D;
    float *target = calloc((size_t)n, sizeof(float)), *y = malloc(sizeof(float) * (size_t)n);
    float *dy = malloc(sizeof(float) * (size_t)n), *db3[7] = {NULL};
    MPQ_ASSERT_OK(ctx,
                  mpq_family_block_fit_grad(ctx, F.f, F.b, &bt, F.x, target, y, dy, NULL, db2));
    for (int j = 0; j < 4; j++)
        db3[j] = calloc((size_t)fi->layers[F.l0 + j].out, sizeof(float));
    MPQ_ASSERT_OK(ctx, mpq_family_block_backward(ctx, F.f, F.b, &bt, F.x, dy, NULL, NULL, db3));
    for (int j = 0; j < 4; j++)
        assert_true(bits_equal(db2[j], db3[j], fi->layers[F.l0 + j].out));
    for (int j = 0; j < 4; j++)
        MPQ_ASSERT_OK(ctx, mpq_family_set_bias_delta(ctx, F.f, F.l0 + j, NULL));
    assert_true(loss_float(&F, F.x) == l_plain);
    for (int j = 0; j < 7; j++) {
        free(d[j]);
        free(db[j]);
        free(db2[j]);
        free(db3[j]);
    }
    free(target);
    free(y);
    free(dy);
    fx_close(&F);
}

/* mpq_family_head_backward against central differences (h = 0.01) of the
 * family's own head on every entry of x. */
static void test_head_backward(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    fx_case c = {.dtype = "F32", .block = 0, .len0 = 3, .len1 = 2};
    fx F;
    fx_open(&F, &c);
    const int64_t V = mpq_family_get_info(F.f)->out_width, n = F.rows * F.D;
    float *dl = malloc(sizeof(float) * (size_t)(F.rows * V));
    float *lg = malloc(sizeof(float) * (size_t)(F.rows * V));
    float *dx = malloc(sizeof(float) * (size_t)n);
    float *xp = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < F.rows * V; i++)
        dl[i] = (float)urand();
    MPQ_ASSERT_OK(ctx, mpq_family_head_backward(ctx, F.f, F.x, F.rows, dl, dx));
    const double gmax = max_abs(dx, n);
    assert_true(gmax > 0.0);
    memcpy(xp, F.x, sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        double l[2];
        for (int s = 0; s < 2; s++) {
            xp[i] = (float)((double)F.x[i] + (s ? -0.01 : 0.01));
            MPQ_ASSERT_OK(ctx, mpq_family_head(ctx, F.f, xp, F.rows, lg));
            l[s] = 0.0;
            for (int64_t k = 0; k < F.rows * V; k++)
                l[s] += (double)dl[k] * (double)lg[k];
        }
        xp[i] = F.x[i];
        const double h =
            (double)(float)((double)F.x[i] + 0.01) - (double)(float)((double)F.x[i] - 0.01);
        check_entry("head dx", i, dx[i], (l[0] - l[1]) / h, gmax, TOL_FD_FLOAT);
    }
    free(dl);
    free(lg);
    free(dx);
    free(xp);
    fx_close(&F);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_halves),         cmocka_unit_test(test_interleaved_llama3),
        cmocka_unit_test(test_two_tiles_bf16), cmocka_unit_test(test_accumulate_null_bits),
        cmocka_unit_test(test_fit_grad),       cmocka_unit_test(test_head_backward),
        cmocka_unit_test(test_bias_delta),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
