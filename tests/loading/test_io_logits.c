/* test_io_logits.c: the same random Llama network written as a llama2.c
 * checkpoint (interleaved RoPE, llama2.c q/k row order) and as a Hugging Face
 * safetensors model (rotate-half RoPE, permuted q/k rows; F32 single file,
 * F16 and BF16 in two shards with an index) gives the same logits through
 * the Llama family. For F16/BF16 the llama2.c file holds the weights
 * already rounded to that dtype, so both sides describe one network.
 * Hugging Face variants llama2.c cannot hold (biases, rope_theta, head_dim,
 * rope_scaling) are checked against a naive double-precision forward pass
 * written from the Hugging Face definitions. */
#include <math.h>
#include <stdlib.h>

#include "mpq_family.h"
#include "mpq_model.h"
#include "test_io_util.h"
#include "tiny_writer.h"

static mpq_ctx *g_ctx;

/* Max relative tolerance on logits: both sides compute in fp32 with a
 * different RoPE pairing and summation order. */
#define LOGIT_TOL 1e-4

static void round_all(tw_llama *m, const char *dtype) {
    int64_t L = m->layers, d = m->dim, h = m->hidden, v = m->vocab;
    int64_t kv = d / m->heads * m->kv_heads;
    struct {
        float *p;
        int64_t n;
    } arr[] = {{m->embed, v * d},    {m->attn_norm, L * d}, {m->wq, L * d * d},
               {m->wk, L * kv * d},  {m->wv, L * kv * d},   {m->wo, L * d * d},
               {m->ffn_norm, L * d}, {m->w1, L * h * d},    {m->w2, L * d * h},
               {m->w3, L * h * d},   {m->final_norm, d},    {m->cls, m->cls ? v * d : 0}};
    int bf = strcmp(dtype, "BF16") == 0;
    for (size_t k = 0; k < sizeof arr / sizeof arr[0]; k++)
        for (int64_t i = 0; i < arr[k].n; i++)
            arr[k].p[i] = bf ? mpq_bf16_to_f32(tw_f32_to_bf16(arr[k].p[i]))
                             : mpq_f16_to_f32(tw_f32_to_f16(arr[k].p[i]));
}

/* Logits [rows][vocab] of a fixed batch of two sequences (7 and 12 tokens). */
static float *run_logits(mpq_ctx *ctx, const char *path, int64_t vocab, int64_t *rows) {
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, path, "auto", &m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, m, NULL, "llama", &f));
    const int64_t len[2] = {7, 12};
    int32_t tok[19];
    for (int i = 0; i < 19; i++)
        tok[i] = (int32_t)((i * 37 + 11) % vocab);
    mpq_batch b = {.nseq = 2, .len = len, .rows = 19, .tokens = tok};
    float *logits = malloc((size_t)(19 * vocab) * sizeof *logits);
    MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, f, &b, logits));
    mpq_family_destroy(&f);
    mpq_model_close(&m);
    *rows = 19;
    return logits;
}

static void compare(const float *a, const float *b, int64_t n, const char *what) {
    double maxabs = 0, maxdiff = 0;
    for (int64_t i = 0; i < n; i++) {
        maxabs = fmax(maxabs, fabs((double)a[i]));
        maxdiff = fmax(maxdiff, fabs((double)a[i] - (double)b[i]));
    }
    if (!(maxdiff <= LOGIT_TOL * fmax(1.0, maxabs)))
        fail_msg("%s: logits differ by %.3g (max |logit| %.3g)", what, maxdiff, maxabs);
    assert_true(maxabs > 0.1); /* a non-trivial network */
}

static void test_same_logits(void **state) {
    mpq_ctx *ctx = g_ctx;
    char dir[4096], l2c[4200], hf[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    const char *dtypes[] = {"F32", "F16", "BF16"};
    for (int tied = 0; tied < 2; tied++) {
        for (int k = 0; k < 3; k++) {
            tw_llama m = {.dim = 32,
                          .hidden = 40,
                          .layers = 2,
                          .heads = 4,
                          .kv_heads = 2,
                          .vocab = 300,
                          .seq_len = 32,
                          .tied = tied};
            assert_int_equal(tw_llama_random(&m, 2024 + (uint64_t)(3 * tied + k)), 0);
            if (k > 0)
                round_all(&m, dtypes[k]);
            snprintf(l2c, sizeof l2c, "%s/m-%d-%d.bin", dir, tied, k);
            snprintf(hf, sizeof hf, "%s/hf-%d-%d", dir, tied, k);
            assert_int_equal(tw_write_llama2c(l2c, &m, k == 1 ? 1 : 0), 0);
            assert_int_equal(tw_write_hf(hf, &m, "llama", dtypes[k], k == 0 ? 1 : 2), 0);
            int64_t ra = 0, rb = 0;
            float *a = run_logits(ctx, l2c, m.vocab, &ra);
            float *b = run_logits(ctx, hf, m.vocab, &rb);
            assert_int_equal(ra, rb);
            char what[64];
            snprintf(what, sizeof what, "%s %s", dtypes[k], tied ? "tied" : "untied");
            compare(a, b, ra * m.vocab, what);
            free(a);
            free(b);
            tw_llama_free(&m);
        }
    }
    tw_rmtree(dir);
}

/* dx of the head's backward pass for fixed x [rows][dim] and dlogits
 * [rows][vocab] (both from `seed`). */
static float *run_head_backward(mpq_ctx *ctx, const char *path, int64_t dim, int64_t vocab,
                                int64_t rows) {
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, path, "auto", &m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, m, NULL, "llama", &f));
    float *x = malloc((size_t)(rows * dim) * sizeof *x);
    float *dl = malloc((size_t)(rows * vocab) * sizeof *dl);
    float *dx = malloc((size_t)(rows * dim) * sizeof *dx);
    assert_true(x && dl && dx);
    for (int64_t i = 0; i < rows * dim; i++)
        x[i] = (float)sin(0.37 * (double)i + 0.1);
    for (int64_t i = 0; i < rows * vocab; i++)
        dl[i] = (float)cos(0.011 * (double)i);
    MPQ_ASSERT_OK(ctx, mpq_family_head_backward(ctx, f, x, rows, dl, dx));
    free(x);
    free(dl);
    mpq_family_destroy(&f);
    mpq_model_close(&m);
    return dx;
}

/* A BF16 head larger than one pass of the family's head (HEAD_TILE = 2^20
 * elements: 40000 x 32 takes two, the second partial) gives the logits and
 * the head's backward pass of the same network held as F32 in a llama2.c
 * file, whose mapped head is used in one pass; tied and untied. */
static void test_head_tiles(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dir[4096], l2c[4200], hf[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    for (int tied = 0; tied < 2; tied++) {
        tw_llama m = {.dim = 32,
                      .hidden = 40,
                      .layers = 1,
                      .heads = 4,
                      .kv_heads = 2,
                      .vocab = 40000,
                      .seq_len = 32,
                      .tied = tied};
        assert_true(m.vocab * m.dim > (1 << 20) && m.vocab * m.dim < (2 << 20));
        assert_int_equal(tw_llama_random(&m, 77 + (uint64_t)tied), 0);
        round_all(&m, "BF16");
        snprintf(l2c, sizeof l2c, "%s/big-%d.bin", dir, tied);
        snprintf(hf, sizeof hf, "%s/big-hf-%d", dir, tied);
        assert_int_equal(tw_write_llama2c(l2c, &m, 0), 0);
        assert_int_equal(tw_write_hf(hf, &m, "llama", "BF16", 1), 0);
        int64_t ra = 0, rb = 0;
        float *a = run_logits(ctx, l2c, m.vocab, &ra);
        float *b = run_logits(ctx, hf, m.vocab, &rb);
        assert_int_equal(ra, rb);
        compare(a, b, ra * m.vocab, tied ? "BF16 head in tiles, tied" : "BF16 head in tiles");
        free(a);
        free(b);
        a = run_head_backward(ctx, l2c, m.dim, m.vocab, 5);
        b = run_head_backward(ctx, hf, m.dim, m.vocab, 5);
        compare(a, b, 5 * m.dim, "head backward, BF16 head in tiles");
        free(a);
        free(b);
        tw_llama_free(&m);
    }
    tw_rmtree(dir);
}

/* ---- a naive forward pass, written from the architecture's definition --- */

static void ref_rmsnorm(const double *x, const float *w, int64_t d, double eps, double *out) {
    double ss = 0;
    for (int64_t i = 0; i < d; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / (double)d + eps);
    for (int64_t i = 0; i < d; i++)
        out[i] = x[i] * r * w[i];
}

/* y [out] = W [out][in] x (+ b) */
static void ref_matvec(const float *W, const float *b, const double *x, int64_t out, int64_t in,
                       double *y) {
    for (int64_t o = 0; o < out; o++) {
        double acc = b ? b[o] : 0.0;
        for (int64_t i = 0; i < in; i++)
            acc += (double)W[o * in + i] * x[i];
        y[o] = acc;
    }
}

/* The RoPE frequencies inv[i], i < hd/2, as Hugging Face defines them:
 * theta^(-2i/hd), and with m->rope_type "linear" divided by the factor f;
 * with "llama3" (f, low/high_freq_factor lo/hi, original context N) by
 * wavelength 2 pi / inv[i]: below N/hi unchanged, above N/lo divided by f,
 * in between (1 - s) inv[i] / f + s inv[i] with s = (N / wavelength - lo) /
 * (hi - lo). "dynamic" (NTK) changes nothing up to max_position_embeddings
 * (the only lengths ref_forward takes with it). branch (may be NULL) counts
 * the llama3 cases taken: [0] unchanged, [1] smoothed, [2] divided. */
static void ref_inv_freq(const tw_llama *m, int64_t hd, double *inv, int branch[3]) {
    const double theta = m->rope_theta > 0 ? m->rope_theta : 10000.0, pi = acos(-1.0);
    const char *type = m->rope_type ? m->rope_type : "default";
    const double f = m->rope_factor, lo = m->rope_low_freq, hi = m->rope_high_freq;
    const double n = (double)m->rope_orig_max;
    for (int64_t i = 0; i < hd / 2; i++) {
        double fr = pow(theta, -2.0 * (double)i / (double)hd);
        if (strcmp(type, "linear") == 0) {
            fr /= f;
        } else if (strcmp(type, "llama3") == 0) {
            double wl = 2.0 * pi / fr, s = (n / wl - lo) / (hi - lo);
            int b = wl < n / hi ? 0 : wl > n / lo ? 2 : 1;
            fr = b == 0 ? fr : b == 2 ? fr / f : (1.0 - s) * fr / f + s * fr;
            if (branch)
                branch[b]++;
        } else if (strcmp(type, "dynamic") != 0) {
            assert_string_equal(type, "default");
        }
        inv[i] = fr;
    }
}

/* Rotates the interleaved pairs (2i, 2i+1) of each head of v [nh][hd] by
 * pos * inv[i] (llama2.c's layout of the weights in m). */
static void ref_rope(double *v, int64_t nh, int64_t hd, int64_t pos, const double *inv) {
    for (int64_t h = 0; h < nh; h++)
        for (int64_t i = 0; i < hd / 2; i++) {
            double ang = (double)pos * inv[i];
            double a = v[h * hd + 2 * i], b = v[h * hd + 2 * i + 1];
            v[h * hd + 2 * i] = a * cos(ang) - b * sin(ang);
            v[h * hd + 2 * i + 1] = a * sin(ang) + b * cos(ang);
        }
}

/* logits [T][vocab] of one sequence, token by token with a KV cache:
 * q/k/v biases with qkv_bias or attn_bias, an o_proj bias with attn_bias,
 * heads of tw_llama_head_dim(m), scores scaled by 1/sqrt(head_dim). */
static double *ref_forward(const tw_llama *m, const int32_t *tok, int64_t T) {
    const int64_t d = m->dim, L = m->layers, H = m->heads, KV = m->kv_heads,
                  hd = tw_llama_head_dim(m), qd = H * hd, kvd = KV * hd, hid = m->hidden,
                  V = m->vocab;
    const double eps = m->norm_eps > 0 ? m->norm_eps : 1e-5;
    const int qkvb = m->qkv_bias || m->attn_bias;
    double *x = calloc((size_t)d, sizeof *x), *xb = calloc((size_t)d, sizeof *xb);
    double *q = calloc((size_t)qd, sizeof *q), *att = calloc((size_t)qd, sizeof *att);
    double *inv = calloc((size_t)(hd / 2), sizeof *inv);
    double *o = calloc((size_t)d, sizeof *o), *h1 = calloc((size_t)hid, sizeof *h1);
    double *h3 = calloc((size_t)hid, sizeof *h3), *sc = calloc((size_t)T, sizeof *sc);
    double *kc = calloc((size_t)(L * T * kvd), sizeof *kc);
    double *vc = calloc((size_t)(L * T * kvd), sizeof *vc);
    double *logits = calloc((size_t)(T * V), sizeof *logits);
    assert_true(x && xb && q && att && inv && o && h1 && h3 && sc && kc && vc && logits);
    assert_true(!m->rope_type || strcmp(m->rope_type, "dynamic") != 0 || T <= m->seq_len);
    ref_inv_freq(m, hd, inv, NULL);
    for (int64_t t = 0; t < T; t++) {
        for (int64_t i = 0; i < d; i++)
            x[i] = m->embed[tok[t] * d + i];
        for (int64_t l = 0; l < L; l++) {
            double *k = kc + (l * T + t) * kvd, *v = vc + (l * T + t) * kvd;
            ref_rmsnorm(x, m->attn_norm + l * d, d, eps, xb);
            ref_matvec(m->wq + l * qd * d, qkvb ? m->bq + l * qd : NULL, xb, qd, d, q);
            ref_matvec(m->wk + l * kvd * d, qkvb ? m->bk + l * kvd : NULL, xb, kvd, d, k);
            ref_matvec(m->wv + l * kvd * d, qkvb ? m->bv + l * kvd : NULL, xb, kvd, d, v);
            ref_rope(q, H, hd, t, inv);
            ref_rope(k, KV, hd, t, inv);
            for (int64_t h = 0; h < H; h++) {
                int64_t kh = h / (H / KV);
                double mx = -INFINITY, tot = 0;
                for (int64_t j = 0; j <= t; j++) {
                    const double *kj = kc + (l * T + j) * kvd + kh * hd;
                    double dot = 0;
                    for (int64_t i = 0; i < hd; i++)
                        dot += q[h * hd + i] * kj[i];
                    sc[j] = dot / sqrt((double)hd);
                    mx = fmax(mx, sc[j]);
                }
                for (int64_t j = 0; j <= t; j++)
                    tot += (sc[j] = exp(sc[j] - mx));
                for (int64_t i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int64_t j = 0; j <= t; j++)
                        acc += sc[j] / tot * vc[(l * T + j) * kvd + kh * hd + i];
                    att[h * hd + i] = acc;
                }
            }
            ref_matvec(m->wo + l * d * qd, m->attn_bias ? m->bo + l * d : NULL, att, d, qd, o);
            for (int64_t i = 0; i < d; i++)
                x[i] += o[i];
            ref_rmsnorm(x, m->ffn_norm + l * d, d, eps, xb);
            ref_matvec(m->w1 + l * hid * d, NULL, xb, hid, d, h1);
            ref_matvec(m->w3 + l * hid * d, NULL, xb, hid, d, h3);
            for (int64_t i = 0; i < hid; i++)
                h1[i] = h1[i] / (1.0 + exp(-h1[i])) * h3[i];
            ref_matvec(m->w2 + l * d * hid, NULL, h1, d, hid, o);
            for (int64_t i = 0; i < d; i++)
                x[i] += o[i];
        }
        ref_rmsnorm(x, m->final_norm, d, eps, xb);
        ref_matvec(m->tied ? m->embed : m->cls, NULL, xb, V, d, logits + t * V);
    }
    free(x), free(xb), free(q), free(att), free(inv), free(o), free(h1), free(h3), free(sc),
        free(kc), free(vc);
    return logits;
}

/* The logits of run_logits on the model at `path` (the network m) match
 * the naive forward pass on m's weights, sequence by sequence. */
static void expect_ref_logits(mpq_ctx *ctx, const char *path, const tw_llama *m, const char *what) {
    int64_t rows = 0;
    float *got = run_logits(ctx, path, m->vocab, &rows);
    /* run_logits' batch: sequences of 7 and 12 tokens, back to back */
    int32_t tok[19];
    for (int i = 0; i < 19; i++)
        tok[i] = (int32_t)((i * 37 + 11) % m->vocab);
    double *r1 = ref_forward(m, tok, 7), *r2 = ref_forward(m, tok + 7, 12);
    float *want = malloc((size_t)(19 * m->vocab) * sizeof *want);
    assert_non_null(want);
    for (int64_t i = 0; i < 7 * m->vocab; i++)
        want[i] = (float)r1[i];
    for (int64_t i = 0; i < 12 * m->vocab; i++)
        want[7 * m->vocab + i] = (float)r2[i];
    compare(want, got, rows * m->vocab, what);
    free(r1);
    free(r2);
    free(want);
    free(got);
}

/* Hugging Face models (F32) with what llama2.c cannot express: Qwen2 q/k/v
 * biases, rope_theta 1e6 and rms_norm_eps 1e-6, and a Mistral config with
 * rope_theta 5e5, against the naive double-precision forward pass above on
 * the same weights (the two sequences of run_logits). */
static void test_naive_reference(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dir[4096], hf[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    const struct {
        const char *type;
        int bias;
        double theta, eps;
    } cases[] = {{"qwen2", 1, 1e6, 1e-6}, {"mistral", 0, 5e5, 1e-5}, {"llama", 0, 0, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tw_llama m = {.dim = 32,
                      .hidden = 40,
                      .layers = 2,
                      .heads = 4,
                      .kv_heads = 2,
                      .vocab = 300,
                      .seq_len = 32,
                      .tied = (int)(c == 2),
                      .qkv_bias = cases[c].bias,
                      .rope_theta = cases[c].theta,
                      .norm_eps = cases[c].eps};
        assert_int_equal(tw_llama_random(&m, 77 + (uint64_t)c), 0);
        snprintf(hf, sizeof hf, "%s/ref-%zu", dir, c);
        assert_int_equal(tw_write_hf(hf, &m, cases[c].type, "F32", 1), 0);
        expect_ref_logits(ctx, hf, &m, cases[c].type);
        tw_llama_free(&m);
    }
    tw_rmtree(dir);
}

/* Hugging Face configs beyond llama2.c (F32), against the naive forward
 * pass with Hugging Face's definitions (ref_inv_freq, ref_forward):
 *  (a) Llama with head_dim 16 != hidden_size / heads = 8, attention_bias
 *      (q/k/v and o_proj biases) and rope_scaling "linear" x4;
 *  (b) Llama with rope_scaling "llama3" (factor 8, low/high_freq_factor 1/4,
 *      original_max_position_embeddings 160): of the 4 frequencies of
 *      head_dim 8 (wavelengths 6.3, 63, 628, 6283) the first is unchanged,
 *      the second smoothed (s = 0.52), the others divided;
 *  (c) Mistral with head_dim 12 (q_dim 48 > hidden 32) and rope_theta 1e6
 *      (Mistral has no attention biases: test_io_safetensors checks that
 *      "attention_bias": true is refused for it);
 *  (d) Llama with rope_scaling "dynamic" x4 and max_position_embeddings 12:
 *      within the context the frequencies are unchanged. */
static void test_hf_variants(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dir[4096], hf[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    const struct {
        const char *type, *what, *rope;
        int64_t head_dim, seq_len, orig;
        int bias;
        double factor, lo, hi, theta;
    } cases[] = {
        {"llama", "llama head_dim 16 attention_bias linear", "linear", 16, 32, 0, 1, 4, 0, 0, 0},
        {"llama", "llama llama3 rope_scaling", "llama3", 0, 256, 160, 0, 8, 1, 4, 0},
        {"mistral", "mistral head_dim 12", NULL, 12, 32, 0, 0, 0, 0, 0, 1e6},
        {"llama", "llama dynamic rope_scaling", "dynamic", 0, 12, 0, 0, 4, 0, 0, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tw_llama m = {.dim = 32,
                      .hidden = 40,
                      .layers = 2,
                      .heads = 4,
                      .kv_heads = 2,
                      .vocab = 300,
                      .seq_len = cases[c].seq_len,
                      .tied = (int)(c == 1),
                      .rope_theta = cases[c].theta,
                      .head_dim = cases[c].head_dim,
                      .attn_bias = cases[c].bias,
                      .rope_type = cases[c].rope,
                      .rope_factor = cases[c].factor,
                      .rope_low_freq = cases[c].lo,
                      .rope_high_freq = cases[c].hi,
                      .rope_orig_max = cases[c].orig};
        if (cases[c].rope && strcmp(cases[c].rope, "llama3") == 0) {
            /* the case covers all three bands of the llama3 formula */
            int branch[3] = {0, 0, 0};
            double inv[64];
            assert_true(tw_llama_head_dim(&m) / 2 <= 64);
            ref_inv_freq(&m, tw_llama_head_dim(&m), inv, branch);
            if (!(branch[0] > 0 && branch[1] > 0 && branch[2] > 0))
                fail_msg("llama3 case: %d unchanged, %d smoothed, %d divided frequencies",
                         branch[0], branch[1], branch[2]);
        }
        assert_int_equal(tw_llama_random(&m, 300 + (uint64_t)c), 0);
        snprintf(hf, sizeof hf, "%s/var-%zu", dir, c);
        assert_int_equal(tw_write_hf(hf, &m, cases[c].type, "F32", 1), 0);
        expect_ref_logits(ctx, hf, &m, cases[c].what);
        tw_llama_free(&m);
    }
    tw_rmtree(dir);
}

/* With rope_scaling "dynamic" (which changes the frequencies past
 * max_position_embeddings) a longer sequence is refused, not computed with
 * the unscaled frequencies: a 12-token sequence for a context of 8. */
static void test_dynamic_rope_context(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dir[4096], hf[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    tw_llama m = {.dim = 32,
                  .hidden = 40,
                  .layers = 1,
                  .heads = 4,
                  .kv_heads = 2,
                  .vocab = 64,
                  .seq_len = 8,
                  .rope_type = "dynamic",
                  .rope_factor = 2};
    assert_int_equal(tw_llama_random(&m, 404), 0);
    snprintf(hf, sizeof hf, "%s/dyn", dir);
    assert_int_equal(tw_write_hf(hf, &m, "llama", "F32", 1), 0);
    mpq_model *mm = NULL;
    mpq_family *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, hf, "auto", &mm));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, mm, NULL, "llama", &f));
    const int64_t len = 12;
    int32_t tok[12];
    for (int i = 0; i < 12; i++)
        tok[i] = (int32_t)(i * 5 % m.vocab);
    mpq_batch b = {.nseq = 1, .len = &len, .rows = 12, .tokens = tok};
    float *logits = malloc((size_t)(12 * m.vocab) * sizeof *logits);
    assert_non_null(logits);
    test_io_expect(ctx, mpq_family_forward(ctx, f, &b, logits), MPQ_ERR_ARG,
                   "max_position_embeddings", "dynamic", NULL);
    free(logits);
    mpq_family_destroy(&f);
    mpq_model_close(&mm);
    tw_llama_free(&m);
    tw_rmtree(dir);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_logits),          cmocka_unit_test(test_head_tiles),
        cmocka_unit_test(test_naive_reference),      cmocka_unit_test(test_hf_variants),
        cmocka_unit_test(test_dynamic_rope_context),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
