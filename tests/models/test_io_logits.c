/* test_io_logits.c: the same random Llama network written as a llama2.c
 * checkpoint (interleaved RoPE, llama2.c q/k row order) and as a Hugging Face
 * safetensors model (rotate-half RoPE, permuted q/k rows; F32 single file,
 * F16 and BF16 in two shards with an index) gives the same logits through
 * the Llama family. For F16/BF16 the llama2.c file holds the weights
 * already rounded to that dtype, so both sides describe one network. */
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

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_logits),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
