/* test_run_llama.c: the batched Llama forward pass (family "llama") against
 * a naive token-at-a-time reference written here from the llama2.c
 * description in shared/README.md (own file parsing, KV cache,
 * matrix-vector products, interleaved RoPE), on stories260K. Also checks
 * the layer list, the calibration hook and weight substitution. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_family.h"
#include "mpq_model.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx;
static char g_path[4096];

/* ---- naive reference ------------------------------------------------------ */

typedef struct ref_model {
    int dim, hidden, nl, nh, nkv, vocab, seq;
    float *data; /* whole file as floats after the header */
    const float *emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final;
} ref_model;

static void ref_load(ref_model *r, const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    int hdr[7];
    assert_int_equal(fread(hdr, sizeof(int), 7, f), 7);
    r->dim = hdr[0];
    r->hidden = hdr[1];
    r->nl = hdr[2];
    r->nh = hdr[3];
    r->nkv = hdr[4];
    r->vocab = abs(hdr[5]);
    r->seq = hdr[6];
    fseek(f, 0, SEEK_END);
    long sz = ftell(f) - 28;
    fseek(f, 28, SEEK_SET);
    r->data = malloc((size_t)sz);
    assert_int_equal(fread(r->data, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    int kv = r->dim * r->nkv / r->nh;
    const float *p = r->data;
    r->emb = p;
    p += (size_t)r->vocab * r->dim;
    r->rms_att = p;
    p += (size_t)r->nl * r->dim;
    r->wq = p;
    p += (size_t)r->nl * r->dim * r->dim;
    r->wk = p;
    p += (size_t)r->nl * kv * r->dim;
    r->wv = p;
    p += (size_t)r->nl * kv * r->dim;
    r->wo = p;
    p += (size_t)r->nl * r->dim * r->dim;
    r->rms_ffn = p;
    p += (size_t)r->nl * r->dim;
    r->w1 = p;
    p += (size_t)r->nl * r->hidden * r->dim;
    r->w2 = p;
    p += (size_t)r->nl * r->dim * r->hidden;
    r->w3 = p;
    p += (size_t)r->nl * r->hidden * r->dim;
    r->rms_final = p;
}

static void matvec(float *y, const float *x, const float *w, int out, int in) {
    for (int o = 0; o < out; o++) {
        double s = 0.0;
        for (int i = 0; i < in; i++)
            s += (double)w[(size_t)o * in + i] * x[i];
        y[o] = (float)s;
    }
}

static void rmsn(float *o, const float *x, const float *w, int n) {
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; i++)
        o[i] = (float)(w[i] * (x[i] * inv));
}

/* logits [n][vocab] of tokens[0..n) processed one at a time. */
static void ref_forward(const ref_model *r, const int32_t *tokens, int n, float *logits) {
    int D = r->dim, hs = D / r->nh, kv = D * r->nkv / r->nh, H = r->hidden;
    float *x = calloc((size_t)D, 4), *xb = calloc((size_t)D, 4), *q = calloc((size_t)D, 4);
    float *att = calloc((size_t)D, 4), *tmp = calloc((size_t)D, 4);
    float *h1 = calloc((size_t)H, 4), *h3 = calloc((size_t)H, 4);
    float *kc = calloc((size_t)r->nl * n * kv, 4), *vc = calloc((size_t)r->nl * n * kv, 4);
    double *sc = calloc((size_t)n, 8);
    for (int pos = 0; pos < n; pos++) {
        memcpy(x, r->emb + (size_t)tokens[pos] * D, (size_t)D * 4);
        for (int l = 0; l < r->nl; l++) {
            rmsn(xb, x, r->rms_att + (size_t)l * D, D);
            float *k = kc + ((size_t)l * n + pos) * kv, *v = vc + ((size_t)l * n + pos) * kv;
            matvec(q, xb, r->wq + (size_t)l * D * D, D, D);
            matvec(k, xb, r->wk + (size_t)l * kv * D, kv, D);
            matvec(v, xb, r->wv + (size_t)l * kv * D, kv, D);
            for (int i = 0; i < D; i += 2) {
                double fr = 1.0 / pow(10000.0, (double)(i % hs) / hs), a = pos * fr;
                double c = cos(a), s = sin(a);
                for (int t = 0; t < (i < kv ? 2 : 1); t++) {
                    float *vec = t == 0 ? q : k;
                    double v0 = vec[i], v1 = vec[i + 1];
                    vec[i] = (float)(v0 * c - v1 * s);
                    vec[i + 1] = (float)(v0 * s + v1 * c);
                }
            }
            for (int h = 0; h < r->nh; h++) {
                int kh = h / (r->nh / r->nkv);
                double mx = -1e300, tot = 0.0;
                for (int t = 0; t <= pos; t++) {
                    const float *kt = kc + ((size_t)l * n + t) * kv + kh * hs;
                    double s = 0.0;
                    for (int i = 0; i < hs; i++)
                        s += (double)q[h * hs + i] * kt[i];
                    sc[t] = s / sqrt((double)hs);
                    mx = sc[t] > mx ? sc[t] : mx;
                }
                for (int t = 0; t <= pos; t++) {
                    sc[t] = exp(sc[t] - mx);
                    tot += sc[t];
                }
                for (int i = 0; i < hs; i++) {
                    double s = 0.0;
                    for (int t = 0; t <= pos; t++)
                        s += sc[t] / tot * vc[((size_t)l * n + t) * kv + kh * hs + i];
                    att[h * hs + i] = (float)s;
                }
            }
            matvec(tmp, att, r->wo + (size_t)l * D * D, D, D);
            for (int i = 0; i < D; i++)
                x[i] += tmp[i];
            rmsn(xb, x, r->rms_ffn + (size_t)l * D, D);
            matvec(h1, xb, r->w1 + (size_t)l * H * D, H, D);
            matvec(h3, xb, r->w3 + (size_t)l * H * D, H, D);
            for (int i = 0; i < H; i++)
                h1[i] = (float)(h1[i] / (1.0 + exp(-(double)h1[i])) * h3[i]);
            matvec(tmp, h1, r->w2 + (size_t)l * D * H, D, H);
            for (int i = 0; i < D; i++)
                x[i] += tmp[i];
        }
        rmsn(xb, x, r->rms_final, D);
        matvec(logits + (size_t)pos * r->vocab, xb, r->emb, r->vocab, D);
    }
    free(x), free(xb), free(q), free(att), free(tmp), free(h1), free(h3), free(kc), free(vc);
    free(sc);
}

/* Largest |a - b| / (1 + |b|). */
static double max_rel(const float *a, const float *b, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (1.0 + fabs((double)b[i]));
        m = d > m ? d : m;
    }
    return m;
}

static void make_tokens(int32_t *t, int n, int vocab, unsigned seed) {
    t[0] = 1;
    for (int i = 1; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        t[i] = (int32_t)((seed >> 8) % (unsigned)vocab);
    }
}

/* ---- tests ------------------------------------------------------------------ */

static void test_batched_matches_naive(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    ref_model r;
    ref_load(&r, g_path);
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, g_path, "auto", &m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, m, NULL, "auto", &f));
    assert_string_equal(mpq_family_name(f), "llama");
    const mpq_family_info *fi = mpq_family_get_info(f);
    assert_int_equal(fi->nblocks, 5);
    assert_int_equal(fi->nlayers, 35);
    assert_int_equal(fi->out_width, 512);

    /* Three sequences in one batch, and each alone. */
    int64_t lens[3] = {17, 150, 5}; /* 150 spans several attention tiles */
    int64_t rows = lens[0] + lens[1] + lens[2];
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)rows);
    make_tokens(tok, (int)lens[0], r.vocab, 7);
    make_tokens(tok + lens[0], (int)lens[1], r.vocab, 11);
    make_tokens(tok + lens[0] + lens[1], (int)lens[2], r.vocab, 13);
    float *got = malloc(sizeof(float) * (size_t)(rows * r.vocab));
    float *want = malloc(sizeof(float) * (size_t)(rows * r.vocab));
    mpq_batch b = {.nseq = 3, .len = lens, .rows = rows, .tokens = tok};
    MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, f, &b, got));
    int64_t off = 0;
    for (int s = 0; s < 3; s++) {
        ref_forward(&r, tok + off, (int)lens[s], want + off * r.vocab);
        off += lens[s];
    }
    double d = max_rel(got, want, rows * r.vocab);
    printf("batched vs naive: max relative logit difference %.3g\n", d);
    assert_true(d < 1e-4);

    /* forward_last gives the last row of each sequence. */
    float *last = malloc(sizeof(float) * 3 * (size_t)r.vocab);
    MPQ_ASSERT_OK(ctx, mpq_family_forward_last(ctx, f, &b, last));
    off = 0;
    for (int s = 0; s < 3; s++) {
        off += lens[s];
        assert_true(max_rel(last + s * r.vocab, want + (off - 1) * r.vocab, r.vocab) < 1e-4);
    }
    free(last);
    free(tok);
    free(got);
    free(want);
    mpq_family_destroy(&f);
    assert_null(f);
    mpq_model_close(&m);
    free(r.data);
}

/* Hook bookkeeping: calls per layer and the input each layer received. */
typedef struct hook_log {
    int calls[64];
    const float *ptr[64];
    int64_t rows[64], cols[64];
} hook_log;

static mpq_err log_hook(mpq_ctx *ctx, void *ud, int64_t layer, const float *x, int64_t rows,
                        int64_t cols) {
    (void)ctx;
    hook_log *h = ud;
    h->calls[layer]++;
    h->ptr[layer] = x;
    h->rows[layer] = rows;
    h->cols[layer] = cols;
    return MPQ_OK;
}

static void test_layers_hook_and_substitution(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    ref_model r;
    ref_load(&r, g_path);
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, g_path, "auto", &m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, m, NULL, "llama", &f));
    const mpq_family_info *fi = mpq_family_get_info(f);
    /* Layer list: shapes and groups of block 2. */
    const mpq_layer_info *L = fi->layers + 2 * 7;
    assert_string_equal(L[0].tensor, "model.layers.2.self_attn.q_proj.weight");
    assert_int_equal(L[1].out, 32); /* kv_dim */
    assert_int_equal(L[6].in, 172);
    assert_int_equal(L[0].group, 14);
    assert_int_equal(L[2].group, 14);
    assert_int_equal(L[3].group, 17);
    assert_int_equal(L[5].group, 18);
    assert_int_equal(L[6].group, 20);
    for (int j = 0; j < 7; j++)
        assert_int_equal(L[j].block, 2);

    /* Hook: every layer of the block once, the right shapes, shared inputs. */
    int64_t len = 23;
    int32_t tok[23];
    make_tokens(tok, 23, r.vocab, 5);
    mpq_batch b = {.nseq = 1, .len = &len, .rows = len, .tokens = tok};
    float *x = malloc(sizeof(float) * 23 * 64), *y = malloc(sizeof(float) * 23 * 64);
    MPQ_ASSERT_OK(ctx, mpq_family_embed(ctx, f, &b, x));
    hook_log h;
    memset(&h, 0, sizeof h);
    MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, f, 0, &b, x, y, log_hook, &h));
    for (int j = 0; j < 7; j++) {
        assert_int_equal(h.calls[j], 1);
        assert_int_equal(h.rows[j], 23);
        assert_int_equal(h.cols[j], fi->layers[j].in);
    }
    assert_ptr_equal(h.ptr[0], h.ptr[2]);
    assert_ptr_equal(h.ptr[4], h.ptr[5]);
    assert_int_equal(h.calls[7], 0);

    /* get_weight is the checkpoint's w2 of layer 2; substituting 0.5 * w2
     * matches the naive reference with a halved w2. */
    float *w = malloc(sizeof(float) * 64 * 172);
    MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, f, 2 * 7 + 6, w));
    assert_memory_equal(w, r.w2 + 2 * 64 * 172, sizeof(float) * 64 * 172);
    for (int i = 0; i < 64 * 172; i++)
        w[i] *= 0.5f;
    MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, f, 2 * 7 + 6, w));
    float *w2 = (float *)r.w2 + 2 * 64 * 172; /* our private copy of the file */
    for (int i = 0; i < 64 * 172; i++)
        w2[i] *= 0.5f;
    float *got = malloc(sizeof(float) * 23 * 512), *want = malloc(sizeof(float) * 23 * 512);
    MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, f, &b, got));
    ref_forward(&r, tok, 23, want);
    assert_true(max_rel(got, want, 23 * 512) < 1e-4);
    /* The mapped checkpoint itself is untouched. */
    const mpq_tensor *t = mpq_model_find(m, "model.layers.2.mlp.down_proj.weight");
    assert_non_null(t);
    assert_true(((const float *)t->data)[0] == w2[0] * 2.0f);

    /* Bad input: a token outside the vocabulary is an error. */
    tok[3] = 512;
    assert_int_equal(mpq_family_forward(ctx, f, &b, got), MPQ_ERR_ARG);
    mpq_err_clear(ctx);
    free(w), free(x), free(y), free(got), free(want);
    mpq_family_destroy(&f);
    mpq_model_close(&m);
    free(r.data);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    mpq_test_shared("data/models/stories260K/stories260K.bin", g_path, sizeof g_path);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_matches_naive),
        cmocka_unit_test(test_layers_hook_and_substitution),
    };
    int fails = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, fails);
}
