/* test_io_llama2c.c: the llama2.c reader on the shared stories260K
 * checkpoint (checked against values read directly from the file at the
 * offsets the format documents) and on tiny generated checkpoints in both
 * the legacy and the version 1 formats (bit-for-bit equal to the weights
 * written), plus every rejected corruption. */
#include <stdlib.h>

#include "mpq_model.h"
#include "test_io_util.h"
#include "tiny_writer.h"

static mpq_ctx *g_ctx;

/* Reads n floats at float index `at` after the 28-byte header. */
static void read_floats(const char *path, long header, long at, float *out, long n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, header + 4 * at, SEEK_SET), 0);
    assert_int_equal(fread(out, 4, (size_t)n, f), (size_t)n);
    fclose(f);
}

static void test_stories260k(void **state) {
    mpq_ctx *ctx = g_ctx;
    char path[4096];
    mpq_test_shared("data/models/stories260K/stories260K.bin", path, sizeof path);
    mpq_model *m = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, path, "auto", &m));
    const mpq_arch *a = mpq_model_arch(m);
    /* shared/README.md: dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4,
     * vocab_size=512, seq_len=512, shared classifier, theta 10000. */
    assert_string_equal(a->family, "llama");
    assert_string_equal(a->format, "llama2c");
    assert_int_equal(a->dim, 64);
    assert_int_equal(a->hidden_dim, 172);
    assert_int_equal(a->n_layers, 5);
    assert_int_equal(a->n_heads, 8);
    assert_int_equal(a->n_kv_heads, 4);
    assert_int_equal(a->head_dim, 8);
    assert_int_equal(a->vocab_size, 512);
    assert_int_equal(a->seq_len, 512);
    assert_int_equal(a->tied_embeddings, 1);
    assert_int_equal(a->rope_interleaved, 1);
    assert_int_equal(a->qkv_bias, 0);
    assert_true(a->norm_eps == 1e-5 && a->rope_theta == 10000.0);
    /* embed + final norm + 9 per layer; no lm_head (tied) and no RoPE tables */
    assert_int_equal(mpq_model_ntensors(m), 2 + 9 * 5);
    assert_null(mpq_model_find(m, "lm_head.weight"));
    int64_t params = 0;
    for (int64_t i = 0; i < mpq_model_ntensors(m); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        assert_int_equal(t->dtype, MPQ_DTYPE_F32);
        params += t->numel;
    }
    /* (file size - header) / 4 minus the two RoPE tables of 512 x 4 floats */
    assert_int_equal(params, (1056540 - 28) / 4 - 2 * 512 * 4);

    /* Array starts in floats, summed in file order (shared/README.md). */
    const long v = 512, d = 64, L = 5, kv = 32, h = 172;
    const long sizes[] = {v * d, L * d,     L * d * d, L * kv * d, L * kv * d, L * d * d,
                          L * d, L * h * d, L * d * h, L * h * d,  d};
    const char *names[] = {"model.embed_tokens.weight",
                           "model.layers.%d.input_layernorm.weight",
                           "model.layers.%d.self_attn.q_proj.weight",
                           "model.layers.%d.self_attn.k_proj.weight",
                           "model.layers.%d.self_attn.v_proj.weight",
                           "model.layers.%d.self_attn.o_proj.weight",
                           "model.layers.%d.post_attention_layernorm.weight",
                           "model.layers.%d.mlp.gate_proj.weight",
                           "model.layers.%d.mlp.down_proj.weight",
                           "model.layers.%d.mlp.up_proj.weight",
                           "model.norm.weight"};
    long start = 0;
    for (int k = 0; k < 11; k++) {
        int per_layer = strstr(names[k], "%d") != NULL;
        long one = per_layer ? sizes[k] / L : sizes[k];
        for (int l = 0; l < (per_layer ? (int)L : 1); l++) {
            char nm[160];
            snprintf(nm, sizeof nm, names[k], l);
            float *ref = malloc((size_t)one * sizeof *ref);
            read_floats(path, 28, start + l * one, ref, one);
            test_io_expect_data(ctx, mpq_model_find(m, nm), ref, one);
            free(ref);
        }
        start += sizes[k];
    }
    /* Shape checks through mpq_model_get. */
    const mpq_tensor *t = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_get(ctx, m, "model.layers.2.mlp.down_proj.weight", 2,
                                     (int64_t[]){64, 172}, &t));
    test_io_expect(
        ctx,
        mpq_model_get(ctx, m, "model.layers.2.mlp.down_proj.weight", 2, (int64_t[]){172, 64}, &t),
        MPQ_ERR_FORMAT, "down_proj", "[64, 172]", "[172, 64]");
    test_io_expect(ctx, mpq_model_get(ctx, m, "model.layers.9.mlp.down_proj.weight", 0, NULL, &t),
                   MPQ_ERR_FORMAT, "model.layers.9.mlp.down_proj.weight", "missing", NULL);
    /* Conversions of element ranges and out-of-range requests. */
    float x[3];
    t = mpq_model_find(m, "model.norm.weight");
    MPQ_ASSERT_OK(ctx, mpq_tensor_read_f32(ctx, t, 61, 3, x));
    test_io_expect(ctx, mpq_tensor_read_f32(ctx, t, 62, 3, x), MPQ_ERR_ARG, "model.norm.weight",
                   NULL, NULL);
    mpq_model_close(&m);
    assert_null(m);
    mpq_model_close(&m); /* NULL-safe */
}

static tw_llama tiny(int tied) {
    tw_llama m = {.dim = 32,
                  .hidden = 40,
                  .layers = 2,
                  .heads = 4,
                  .kv_heads = 2,
                  .vocab = 300,
                  .seq_len = 16,
                  .tied = tied};
    assert_int_equal(tw_llama_random(&m, 1234 + (uint64_t)tied), 0);
    return m;
}

/* Every tensor of the opened file equals the generator's arrays. */
static void check_tiny(mpq_ctx *ctx, const mpq_model *mm, const tw_llama *m) {
    int64_t L = m->layers, d = m->dim, h = m->hidden, kv = d / m->heads * m->kv_heads;
    const mpq_arch *a = mpq_model_arch(mm);
    assert_int_equal(a->dim, d);
    assert_int_equal(a->hidden_dim, h);
    assert_int_equal(a->n_kv_heads, m->kv_heads);
    assert_int_equal(a->vocab_size, m->vocab);
    assert_int_equal(a->tied_embeddings, m->tied);
    assert_int_equal(mpq_model_ntensors(mm), 2 + 9 * L + (m->tied ? 0 : 1));
    test_io_expect_data(ctx, mpq_model_find(mm, "model.embed_tokens.weight"), m->embed,
                        m->vocab * d);
    test_io_expect_data(ctx, mpq_model_find(mm, "model.norm.weight"), m->final_norm, d);
    if (!m->tied)
        test_io_expect_data(ctx, mpq_model_find(mm, "lm_head.weight"), m->cls, m->vocab * d);
    for (int64_t l = 0; l < L; l++) {
        char nm[160];
#define CHK(SUFFIX, ARR, N)                                                                        \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, SUFFIX);                     \
        test_io_expect_data(ctx, mpq_model_find(mm, nm), (ARR) + l * (N), N);                      \
    } while (0)
        CHK("input_layernorm.weight", m->attn_norm, d);
        CHK("self_attn.q_proj.weight", m->wq, d * d);
        CHK("self_attn.k_proj.weight", m->wk, kv * d);
        CHK("self_attn.v_proj.weight", m->wv, kv * d);
        CHK("self_attn.o_proj.weight", m->wo, d * d);
        CHK("post_attention_layernorm.weight", m->ffn_norm, d);
        CHK("mlp.gate_proj.weight", m->w1, h * d);
        CHK("mlp.down_proj.weight", m->w2, d * h);
        CHK("mlp.up_proj.weight", m->w3, h * d);
#undef CHK
    }
}

static void test_tiny_roundtrip(void **state) {
    mpq_ctx *ctx = g_ctx;
    char dir[4096], path[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    for (int tied = 0; tied < 2; tied++) {
        tw_llama m = tiny(tied);
        for (int version = 0; version < 2; version++) {
            snprintf(path, sizeof path, "%s/tiny-%d-%d.bin", dir, tied, version);
            assert_int_equal(tw_write_llama2c(path, &m, version), 0);
            mpq_model *mm = NULL;
            MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, path, version ? "auto" : "llama2c", &mm));
            assert_string_equal(mpq_model_arch(mm)->format, version ? "llama2c-v1" : "llama2c");
            check_tiny(ctx, mm, &m);
            mpq_model_close(&mm);
        }
        tw_llama_free(&m);
    }
    tw_rmtree(dir);
}

/* Writes `good` with bytes [at, at+n) replaced by p. */
static void patch(const char *good, const char *bad, long at, const void *p, size_t n) {
    assert_int_equal(tw_copy_prefix(good, bad, -1), 0);
    FILE *f = fopen(bad, "r+b");
    assert_non_null(f);
    fseek(f, at, SEEK_SET);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void test_corrupt(void **state) {
    mpq_ctx *ctx = g_ctx;
    char dir[4096], good[4200], good1[4200], bad[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    tw_llama m = tiny(0);
    snprintf(good, sizeof good, "%s/good.bin", dir);
    snprintf(good1, sizeof good1, "%s/good-v1.bin", dir);
    snprintf(bad, sizeof bad, "%s/bad.bin", dir);
    assert_int_equal(tw_write_llama2c(good, &m, 0), 0);
    assert_int_equal(tw_write_llama2c(good1, &m, 1), 0);
    FILE *f = fopen(good, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);

    /* truncated by one byte, and by most of the file */
    assert_int_equal(tw_copy_prefix(good, bad, size - 1), 0);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "truncated", NULL);
    assert_int_equal(tw_copy_prefix(good, bad, 20), 0);
    test_io_expect_open(ctx, bad, "llama2c", MPQ_ERR_FORMAT, bad, "truncated", NULL);
    assert_int_equal(tw_copy_prefix(good1, bad, 200), 0);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "truncated", NULL);
    /* one byte too many */
    assert_int_equal(tw_copy_prefix(good, bad, -1), 0);
    assert_int_equal(tw_write_bytes(bad, "x", 1, 1), 0);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "trailing bytes", NULL);
    /* empty file */
    assert_int_equal(tw_write_bytes(bad, "", 0, 0), 0);
    test_io_expect_open(ctx, bad, "llama2c", MPQ_ERR_FORMAT, bad, "empty", NULL);
    /* inconsistent header: n_heads 3 does not divide dim 32 */
    int32_t three = 3, zero = 0, neg = -5, two = 2, huge = 0x7fffffff;
    patch(good, bad, 12, &three, 4);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "n_heads", NULL);
    patch(good, bad, 0, &zero, 4);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "dim = 0", NULL);
    patch(good, bad, 8, &neg, 4);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "n_layers = -5", NULL);
    /* Huge sizes fail on the size check, not on an allocation. */
    patch(good, bad, 4, &huge, 4);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "truncated", NULL);
    /* version 2 (Q8_0) and unknown versions */
    patch(good1, bad, 4, &two, 4);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "version 2", NULL);
    int32_t nine = 9;
    patch(good1, bad, 4, &nine, 4);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "version 9", NULL);
    /* non-zero padding and a bad shared flag in the version 1 header */
    unsigned char one = 1, seven = 7;
    patch(good1, bad, 100, &one, 1);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "padding", NULL);
    patch(good1, bad, 36, &seven, 1);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "shared_classifier", NULL);
    /* A version 1 file claiming a shared classifier is one matrix too long. */
    patch(good1, bad, 36, &one, 1);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_FORMAT, bad, "trailing bytes", NULL);
    /* missing file, unknown format name */
    snprintf(bad, sizeof bad, "%s/missing.bin", dir);
    test_io_expect_open(ctx, bad, "auto", MPQ_ERR_IO, bad, NULL, NULL);
    test_io_expect_open(ctx, good, "onnx", MPQ_ERR_ARG, "onnx", NULL, NULL);
    /* The test allocator: every allocation failure is reported, nothing leaks. */
    for (int64_t k = 0; k < 8; k++) {
        mpq_model *mm = NULL;
        mpq_alloc_fail_after(ctx, k);
        mpq_err e = mpq_model_open(ctx, good, "auto", &mm);
        mpq_alloc_fail_after(ctx, -1);
        if (e == MPQ_OK) {
            mpq_model_close(&mm);
            continue;
        }
        assert_null(mm);
        test_io_expect(ctx, e, MPQ_ERR_NOMEM, "test allocator", NULL, NULL);
    }
    tw_llama_free(&m);
    tw_rmtree(dir);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_tiny_roundtrip),
        cmocka_unit_test(test_corrupt),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
