/* test_io_safetensors.c: the safetensors reader.
 *  - fp16/bf16 conversions: exhaustive over all 16-bit patterns against an
 *    ldexp reference, and fp32 -> 16-bit rounding against the writer's
 *    frexp/rint reference on midpoints and random bit patterns;
 *  - the shared MNIST CNN opens as a plain tensor container;
 *  - a tiny Hugging Face Llama (F32/F16/BF16, single file and two shards)
 *    holds exactly the weights of the same network written as llama2.c
 *    (q/k rows permuted back), and a Qwen2 variant with biases;
 *  - every corruption gives its specific error naming file and tensor;
 *  - config.json's rope_scaling, mlp_bias and attention_bias keys of Llama
 *    variants: refused where not computed, accepted when off. */
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpq_model.h"
#include "test_io_util.h"
#include "tiny_writer.h"

static mpq_ctx *g_ctx;

/* ---- conversions ---------------------------------------------------------- */

static double ref_f16(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

static double ref_bf16(uint16_t h) {
    int e = (h >> 7) & 255, m = h & 127;
    double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
    return (h & 0x8000) ? -v : v;
}

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_conversions(void **state) {
    for (uint32_t u = 0; u < 65536; u++) {
        uint16_t h = (uint16_t)u;
        double r = ref_f16(h);
        float f = mpq_f16_to_f32(h);
        if (isnan(r)) {
            assert_true(isnan(f));
            assert_true(isnan(mpq_bf16_to_f32(h)) == isnan(ref_bf16(h)));
            continue;
        }
        assert_true((double)f == r && !signbit(f) == !signbit(r));
        assert_int_equal(mpq_f32_to_f16(f), h); /* exact values round-trip */
        double rb = ref_bf16(h);
        if (!isnan(rb)) {
            assert_true((double)mpq_bf16_to_f32(h) == rb);
            assert_int_equal(mpq_f32_to_bf16(mpq_bf16_to_f32(h)), h);
        }
        /* the midpoint to the next larger magnitude and its neighbours */
        uint16_t up = (uint16_t)(h + 1);
        if ((h & 0x7fff) < 0x7bff) {
            double mid = 0.5 * (r + ref_f16(up));
            float fm = (float)mid; /* exact: 16-bit midpoints fit in fp32 */
            float probes[3] = {nextafterf(fm, 0.0f), fm, nextafterf(fm, 2.0f * fm)};
            for (int k = 0; k < 3; k++)
                if (mpq_f32_to_f16(probes[k]) != tw_f32_to_f16(probes[k]))
                    fail_msg("f16 rounding of %.10g: 0x%04x, reference 0x%04x", (double)probes[k],
                             mpq_f32_to_f16(probes[k]), tw_f32_to_f16(probes[k]));
        }
    }
    uint64_t s = 42;
    for (int i = 0; i < 2000000; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float f = bits_to_f32((uint32_t)(s >> 32));
        if (isnan(f)) {
            assert_true(isnan(mpq_f16_to_f32(mpq_f32_to_f16(f))));
            assert_true(isnan(mpq_bf16_to_f32(mpq_f32_to_bf16(f))));
            continue;
        }
        if (mpq_f32_to_f16(f) != tw_f32_to_f16(f) || mpq_f32_to_bf16(f) != tw_f32_to_bf16(f))
            fail_msg("rounding of %.10g: f16 0x%04x ref 0x%04x, bf16 0x%04x ref 0x%04x", (double)f,
                     mpq_f32_to_f16(f), tw_f32_to_f16(f), mpq_f32_to_bf16(f), tw_f32_to_bf16(f));
    }
    assert_int_equal(mpq_f32_to_f16(65520.0f), 0x7c00); /* ties to even: infinity */
    assert_int_equal(mpq_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(mpq_f32_to_bf16(1.00390625f), 0x3f80); /* tie 1 + 2^-8 -> 1 (even) */
}

/* ---- the shared MNIST model ------------------------------------------------ */

static void test_mnist(void **state) {
    mpq_ctx *ctx = g_ctx;
    char path[4096];
    mpq_test_shared("data/models/mnist-cnn-small/model-mnist.safetensors", path, sizeof path);
    mpq_model *m = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, path, "auto", &m));
    assert_string_equal(mpq_model_arch(m)->family, "");
    assert_string_equal(mpq_model_arch(m)->format, "safetensors");
    assert_int_equal(mpq_model_ntensors(m), 6);
    const struct {
        const char *name;
        int ndim;
        int64_t shape[4];
    } want[] = {{"conv1.weight", 4, {8, 1, 3, 3}},  {"conv1.bias", 1, {8}},
                {"conv2.weight", 4, {16, 8, 3, 3}}, {"conv2.bias", 1, {16}},
                {"fc1.weight", 2, {10, 784}},       {"fc1.bias", 1, {10}}};
    for (int i = 0; i < 6; i++) {
        const mpq_tensor *t = NULL;
        MPQ_ASSERT_OK(ctx, mpq_model_get(ctx, m, want[i].name, want[i].ndim, want[i].shape, &t));
        assert_int_equal(t->dtype, MPQ_DTYPE_F32);
    }
    mpq_model_close(&m);
}

/* ---- tiny Hugging Face models ---------------------------------------------- */

/* The model at path opens (and is closed again). */
static void expect_opens(mpq_ctx *ctx, const char *path) {
    mpq_model *m = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, path, "auto", &m));
    mpq_model_close(&m);
}

static tw_llama tiny(int tied, int qkv_bias) {
    tw_llama m = {.dim = 32,
                  .hidden = 48,
                  .layers = 2,
                  .heads = 4,
                  .kv_heads = 2,
                  .vocab = 260,
                  .seq_len = 32,
                  .tied = tied,
                  .qkv_bias = qkv_bias};
    assert_int_equal(tw_llama_random(&m, 99 + (uint64_t)tied), 0);
    return m;
}

/* Values as stored in `dtype`, back in fp32 (through the reference decoders). */
static float *rounded(const float *x, int64_t n, const char *dtype) {
    float *r = malloc((size_t)n * sizeof *r);
    for (int64_t i = 0; i < n; i++)
        r[i] = strcmp(dtype, "F16") == 0    ? (float)ref_f16(tw_f32_to_f16(x[i]))
               : strcmp(dtype, "BF16") == 0 ? (float)ref_bf16(tw_f32_to_bf16(x[i]))
                                            : x[i];
    return r;
}

/* Every tensor of the HF model equals the llama2.c model's tensor, with the
 * q/k rows permuted to the HF order, after rounding to `dtype`. */
static void compare_models(mpq_ctx *ctx, const mpq_model *hf, const mpq_model *l2c,
                           const char *dtype) {
    const mpq_arch *a = mpq_model_arch(hf), *b = mpq_model_arch(l2c);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->hidden_dim, b->hidden_dim);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->seq_len, b->seq_len);
    assert_int_equal(a->tied_embeddings, b->tied_embeddings);
    assert_true(a->norm_eps == b->norm_eps && a->rope_theta == b->rope_theta);
    assert_int_equal(a->rope_interleaved, 0);
    assert_int_equal(b->rope_interleaved, 1);
    assert_int_equal(mpq_model_ntensors(hf), mpq_model_ntensors(l2c));
    for (int64_t i = 0; i < mpq_model_ntensors(l2c); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(l2c, i);
        const mpq_tensor *u = mpq_model_find(hf, t->name);
        if (!u)
            fail_msg("tensor '%s' missing from the safetensors model", t->name);
        assert_string_equal(mpq_dtype_name(u->dtype), dtype);
        assert_int_equal(u->ndim, t->ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(u->shape[d], t->shape[d]);
        float *src = malloc((size_t)t->numel * sizeof *src);
        MPQ_ASSERT_OK(ctx, mpq_tensor_read_f32(ctx, t, 0, t->numel, src));
        int is_q = strstr(t->name, "q_proj.weight") != NULL;
        int is_k = strstr(t->name, "k_proj.weight") != NULL;
        if (is_q || is_k) {
            float *p = malloc((size_t)t->numel * sizeof *p);
            tw_permute_to_hf(src, p, is_q ? a->n_heads : a->n_kv_heads, a->head_dim, a->dim);
            free(src);
            src = p;
        }
        float *ref = rounded(src, t->numel, dtype);
        test_io_expect_data(ctx, u, ref, t->numel);
        free(ref);
        free(src);
    }
}

static void test_hf_vs_llama2c(void **state) {
    mpq_ctx *ctx = g_ctx;
    char dir[4096], path[4200], sub[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    const char *dtypes[] = {"F32", "F16", "BF16"};
    for (int tied = 0; tied < 2; tied++) {
        tw_llama m = tiny(tied, 0);
        snprintf(path, sizeof path, "%s/tiny-%d.bin", dir, tied);
        assert_int_equal(tw_write_llama2c(path, &m, 0), 0);
        mpq_model *l2c = NULL;
        MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, path, "auto", &l2c));
        for (int k = 0; k < 3; k++) {
            for (int shards = 1; shards <= 2; shards++) {
                snprintf(sub, sizeof sub, "%s/hf-%d-%s-%d", dir, tied, dtypes[k], shards);
                assert_int_equal(tw_write_hf(sub, &m, "llama", dtypes[k], shards), 0);
                /* the directory, and the index or the single file directly */
                for (int how = 0; how < 2; how++) {
                    char p[4400];
                    if (how == 0)
                        snprintf(p, sizeof p, "%s", sub);
                    else
                        snprintf(p, sizeof p, "%s/%s", sub,
                                 shards > 1 ? "model.safetensors.index.json" : "model.safetensors");
                    mpq_model *hf = NULL;
                    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, p, how ? "auto" : "safetensors", &hf));
                    assert_string_equal(mpq_model_arch(hf)->format, "safetensors");
                    assert_string_equal(mpq_model_arch(hf)->family, "llama");
                    assert_string_equal(mpq_model_arch(hf)->model_type, "llama");
                    compare_models(ctx, hf, l2c, dtypes[k]);
                    if (shards > 1) { /* tensors come from both files */
                        const char *f0 = mpq_model_tensor_at(hf, 0)->file;
                        const char *fl = mpq_model_tensor_at(hf, mpq_model_ntensors(hf) - 1)->file;
                        assert_true(strstr(f0, "model-00001-of-00002.safetensors") != NULL);
                        assert_true(strstr(fl, "model-00002-of-00002.safetensors") != NULL);
                    }
                    mpq_model_close(&hf);
                }
            }
        }
        mpq_model_close(&l2c);
        tw_llama_free(&m);
    }
    /* Qwen2: q/k/v biases */
    tw_llama q = tiny(1, 1);
    snprintf(sub, sizeof sub, "%s/qwen2", dir);
    assert_int_equal(tw_write_hf(sub, &q, "qwen2", "F32", 2), 0);
    mpq_model *hf = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, sub, "auto", &hf));
    assert_int_equal(mpq_model_arch(hf)->qkv_bias, 1);
    assert_string_equal(mpq_model_arch(hf)->model_type, "qwen2");
    test_io_expect_data(ctx, mpq_model_find(hf, "model.layers.1.self_attn.v_proj.bias"), q.bv + 16,
                        16);
    mpq_model_close(&hf);
    tw_llama_free(&q);
    tw_rmtree(dir);
}

/* ---- corruptions ----------------------------------------------------------- */

/* Replaces the first occurrence of `from` by `to` in a text file. */
static void edit(const char *path, const char *from, const char *to) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *at = strstr(buf, from);
    if (!at)
        fail_msg("'%s' not found in %s", from, path);
    char out[70000];
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - buf), buf, to, at + strlen(from));
    assert_int_equal(tw_write_text(path, out), 0);
}

static void test_corrupt_files(void **state) {
    mpq_ctx *ctx = g_ctx;
    char dir[4096], p[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    snprintf(p, sizeof p, "%s/x.safetensors", dir);
    const char *A = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},";

    /* well-formed, to make sure the cases below differ in one thing only */
    char json[1024];
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[16,24]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    mpq_model *m = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, p, "auto", &m));
    assert_int_equal(mpq_model_ntensors(m), 2);
    mpq_model_close(&m);

    /* truncated: the last tensor ends past the data */
    assert_int_equal(tw_write_st_header(p, json, 23), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "'b'", "past the end");
    /* truncated inside the header */
    char cut[4300];
    snprintf(cut, sizeof cut, "%s/cut.safetensors", dir);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    assert_int_equal(tw_copy_prefix(p, cut, 40), 0);
    test_io_expect_open(ctx, cut, "auto", MPQ_ERR_FORMAT, cut, "header length", "past the end");
    assert_int_equal(tw_copy_prefix(p, cut, 5), 0);
    test_io_expect_open(ctx, cut, "safetensors", MPQ_ERR_FORMAT, cut, "truncated", NULL);
    /* a huge header length is refused before any allocation */
    uint64_t huge = (uint64_t)1 << 40;
    assert_int_equal(tw_write_bytes(cut, &huge, 8, 0), 0);
    assert_int_equal(tw_write_bytes(cut, "{}", 2, 1), 0);
    test_io_expect_open(ctx, cut, "safetensors", MPQ_ERR_FORMAT, cut, "exceeds the limit", NULL);
    /* overlapping tensors */
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[8,16]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 16), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "overlaps", "'a'");
    /* a gap, and trailing bytes */
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[20,28]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 28), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "unused bytes", "'b'");
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[16,24]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 30), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "trailing bytes", NULL);
    /* a dtype the model cannot use (a batch norm's I64 num_batches_tracked)
     * opens, kept aside; asking for the tensor names file, tensor and dtype */
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[16,24]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, p, "auto", &m));
    assert_int_equal(mpq_model_ntensors(m), 1);
    assert_int_equal(mpq_model_nforeign(m), 1);
    assert_string_equal(mpq_model_foreign_at(m, 0)->name, "b");
    assert_string_equal(mpq_model_foreign_at(m, 0)->dtype, "I64");
    assert_null(mpq_model_foreign_at(m, 1));
    const mpq_tensor *tb = NULL;
    test_io_expect(ctx, mpq_model_get(ctx, m, "b", 0, NULL, &tb), MPQ_ERR_FORMAT, p, "'b'",
                   "dtype I64");
    mpq_model_close(&m);
    /* ... but it must still be the size its shape says, and tile the data */
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[16,24]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "'b'", "needs 16 bytes");
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[12,16]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 16), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "overlaps", "'a'");
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[16,24]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "'b'", "unknown dtype");
    /* dtype and shape inconsistent with the byte size */
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,24]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "'b'", "needs 16 bytes");
    /* malformed entries */
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"F16\",\"shape\":[-4],\"data_offsets\":[16,24]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "'b'", "shape[0]");
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"F16\",\"shape\":[1,1,1,1,4],\"data_offsets\":[16,24]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "'b'", "5 dimensions");
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,16]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "'b'", "reversed");
    snprintf(json, sizeof json, "%s\"b\":{\"dtype\":\"F16\",\"shape\":[4]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "'b'", "data_offsets");
    /* not JSON, not an object, duplicated name */
    assert_int_equal(tw_write_st_header(p, "{\"a\":{\"dtype\":", 24), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "not valid JSON", NULL);
    assert_int_equal(tw_write_st_header(p, "[1, 2]", 0), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "not a JSON object", NULL);
    snprintf(json, sizeof json,
             "%s\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[16,24]}}", A);
    assert_int_equal(tw_write_st_header(p, json, 24), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, "'a'", "appears twice", NULL);
    /* bytes after the header's JSON object other than space padding */
    const char *one = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    snprintf(json, sizeof json, "%s   x", one);
    assert_int_equal(tw_write_st_header(p, json, 8), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_FORMAT, p, "not space padding", NULL);
    snprintf(json, sizeof json, "%s      ", one);
    assert_int_equal(tw_write_st_header(p, json, 8), 0);
    expect_opens(ctx, p);
    tw_rmtree(dir);
}

static void test_corrupt_models(void **state) {
    mpq_ctx *ctx = g_ctx;
    char dir[4096], sub[4200], idx[4300], cfg[4300], p[4300];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    tw_llama m = tiny(0, 0);
    snprintf(sub, sizeof sub, "%s/hf", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", sub);
    snprintf(cfg, sizeof cfg, "%s/config.json", sub);
    const char *shard2 = "\"model-00002-of-00002.safetensors\"";
#define FRESH() assert_int_equal(tw_write_hf(sub, &m, "llama", "F32", 2), 0)

    /* shard names escaping the directory */
    FRESH();
    edit(idx, shard2, "\"../model-00002-of-00002.safetensors\"");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, idx, "'..'", "model.");
    FRESH();
    edit(idx, shard2, "\"sub/../../etc/passwd\"");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, idx, "'..'", NULL);
    FRESH();
    edit(idx, shard2, "\"/etc/passwd\"");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, idx, "absolute", NULL);
    /* a missing shard file */
    FRESH();
    edit(idx, shard2, "\"model-00003-of-00002.safetensors\"");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_IO, "model-00003-of-00002.safetensors", NULL,
                        NULL);
    /* the index lists a tensor its shard does not hold */
    FRESH();
    edit(idx, "\"model.norm.weight\"",
         "\"model.nrom.weight\": "
         "\"model-00002-of-00002.safetensors\",\n    \"model.norm.weight\"");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, idx, "'model.nrom.weight'",
                        "does not contain");
    /* a shard holds a tensor the index does not list */
    FRESH();
    edit(idx, "\"model.norm.weight\"", "\"model.norm.weight.unused\"");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, "'model.norm.weight'", "not listed",
                        NULL);
    /* a shard that is a symbolic link out of the model directory */
    FRESH();
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", sub);
    char outside[4300];
    snprintf(outside, sizeof outside, "%s/outside.safetensors", dir);
    assert_int_equal(rename(p, outside), 0);
    assert_int_equal(symlink(outside, p), 0);
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, idx, "outside the model directory", NULL);
    unlink(p);
    unlink(outside);
    /* ... but the layout of a Hugging Face cache is accepted: the snapshot's
     * files link to the repository's blobs */
    {
        char repo[4300], snap[4400], blob[4400], cmd[24000];
        snprintf(repo, sizeof repo, "%s/models--x", dir);
        snprintf(snap, sizeof snap, "%s/snapshots/rev1", repo);
        snprintf(blob, sizeof blob, "%s/blobs", repo);
        FRESH();
        snprintf(cmd, sizeof cmd,
                 "mkdir -p '%s' '%s' && for f in '%s'/*; do b=$(basename \"$f\"); "
                 "mv \"$f\" '%s'/\"h-$b\" && ln -s ../../blobs/\"h-$b\" '%s'/\"$b\"; done",
                 snap, blob, sub, blob, snap);
        assert_int_equal(system(cmd), 0);
        expect_opens(ctx, snap);
        tw_rmtree(repo);
    }
    /* a key twice in config.json (readers disagree on which one wins) */
    FRESH();
    edit(cfg, "\"hidden_size\":\t32", "\"hidden_size\":\t32,\"hidden_size\":\t64");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "'hidden_size' appears twice", NULL);
    /* index without weight_map */
    FRESH();
    edit(idx, "\"weight_map\"", "\"weights\"");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, idx, "weight_map", NULL);
    /* config.json: missing keys, unsupported model, inconsistent shapes, bad JSON */
    const char *keys[] = {
        "hidden_size", "num_attention_heads", "intermediate_size",      "num_hidden_layers",
        "vocab_size",  "rms_norm_eps",        "max_position_embeddings"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        FRESH();
        char from[64], to[64];
        snprintf(from, sizeof from, "\"%s\"", keys[k]);
        snprintf(to, sizeof to, "\"x_%s\"", keys[k]);
        edit(cfg, from, to);
        char needle[80];
        snprintf(needle, sizeof needle, "\"%s\" is missing", keys[k]);
        test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, needle, NULL);
    }
    FRESH();
    edit(cfg, "\"llama\"", "\"gpt2\"");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "gpt2", "not supported");
    FRESH();
    edit(cfg, "\"intermediate_size\":\t48", "\"intermediate_size\":\t40");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, "mlp.gate_proj.weight", "[40, 32]",
                        "architecture needs");
    FRESH();
    edit(cfg, "\"hidden_size\":\t32", "\"hidden_size\":\t-32");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "hidden_size", "positive integer");
    FRESH();
    edit(cfg, "\"tie_word_embeddings\":\tfalse",
         "\"tie_word_embeddings\":\ttrue,\"rope_scaling\": {}");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "rope_scaling", NULL);
    /* sliding-window attention shorter than the context is refused; a window
     * of the whole context, or one switched off, is full attention */
    FRESH();
    edit(cfg, "\"tie_word_embeddings\":\tfalse",
         "\"tie_word_embeddings\":\tfalse,\"sliding_window\": 4");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "sliding_window",
                        "sliding-window attention is not supported");
    FRESH();
    edit(cfg, "\"tie_word_embeddings\":\tfalse",
         "\"tie_word_embeddings\":\tfalse,\"sliding_window\": 4,\"use_sliding_window\": false");
    expect_opens(ctx, sub);
    FRESH();
    edit(cfg, "\"tie_word_embeddings\":\tfalse",
         "\"tie_word_embeddings\":\tfalse,\"sliding_window\": 32");
    expect_opens(ctx, sub);
    FRESH();
    edit(cfg, "{", "{{");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "not valid JSON", NULL);
    /* untied model without lm_head: the tensor is missing */
    FRESH();
    edit(idx, "\"lm_head.weight\"", "\"lm_head.weight.x\"");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, "'lm_head.weight'", NULL, NULL);
    /* a directory holding no model */
    snprintf(p, sizeof p, "%s/empty", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    test_io_expect_open(ctx, p, "auto", MPQ_ERR_IO, p, "model.safetensors", NULL);
#undef FRESH
    tw_llama_free(&m);
    tw_rmtree(dir);
}

/* config.json keys of Llama variants. rope_scaling types other than the
 * ones the Llama family computes ("linear", "llama3"; "dynamic", which
 * changes nothing within the context) are refused naming the type (YaRN,
 * LongRoPE), as is a "llama3" scaling lacking one of its parameters, and
 * "mlp_bias": true (no MLP biases are read); "rope_scaling": null, a
 * "default" scaling and false mlp_bias / attention_bias are plain Llama.
 * "attention_bias": true needs the bias tensors, and is refused for Mistral
 * (whose attention has no biases in Hugging Face's definition). */
static void test_config_variants(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dir[4096], sub[4200], cfg[4300];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    snprintf(sub, sizeof sub, "%s/hf", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", sub);
    tw_llama m = tiny(0, 0);
    /* YaRN and LongRoPE scaling; dynamic NTK opens */
    m.rope_type = "yarn";
    m.rope_factor = 4;
    m.rope_orig_max = 16;
    assert_int_equal(tw_write_hf(sub, &m, "llama", "F32", 1), 0);
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "rope_scaling", "yarn");
    m.rope_type = "longrope";
    assert_int_equal(tw_write_hf(sub, &m, "llama", "F32", 1), 0);
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "rope_scaling", "longrope");
    m.rope_type = "dynamic";
    assert_int_equal(tw_write_hf(sub, &m, "llama", "F32", 1), 0);
    expect_opens(ctx, sub);
    /* llama3 without low_freq_factor (a zero field is not written) */
    m.rope_type = "llama3";
    m.rope_factor = 8;
    m.rope_high_freq = 4;
    assert_int_equal(tw_write_hf(sub, &m, "llama", "F32", 1), 0);
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "low_freq_factor", NULL);
    /* {"rope_type": "default"} is no scaling */
    m.rope_type = "default";
    m.rope_factor = m.rope_high_freq = 0;
    m.rope_orig_max = 0;
    assert_int_equal(tw_write_hf(sub, &m, "llama", "F32", 1), 0);
    expect_opens(ctx, sub);
    m.rope_type = NULL;
    m.mlp_bias = 1;
    assert_int_equal(tw_write_hf(sub, &m, "llama", "F32", 1), 0);
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "mlp_bias", NULL);
    m.mlp_bias = 0;
    assert_int_equal(tw_write_hf(sub, &m, "llama", "F32", 1), 0);
    edit(cfg, "\"tie_word_embeddings\":\tfalse",
         "\"tie_word_embeddings\":\tfalse,\"rope_scaling\": null,\"mlp_bias\": false,"
         "\"attention_bias\": false");
    expect_opens(ctx, sub);
    /* attention_bias without the bias tensors: the first one is missing */
    assert_int_equal(tw_write_hf(sub, &m, "llama", "F32", 1), 0);
    edit(cfg, "\"tie_word_embeddings\":\tfalse",
         "\"tie_word_embeddings\":\tfalse,\"attention_bias\": true");
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, "'model.layers.0.self_attn.",
                        "_proj.bias'", NULL);
    /* Mistral with attention_bias (and the tensors) */
    tw_llama_free(&m);
    m.attn_bias = 1;
    assert_int_equal(tw_llama_random(&m, 5), 0);
    assert_int_equal(tw_write_hf(sub, &m, "mistral", "F32", 1), 0);
    test_io_expect_open(ctx, sub, "auto", MPQ_ERR_FORMAT, cfg, "attention_bias", "mistral");
    tw_llama_free(&m);
    tw_rmtree(dir);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conversions),    cmocka_unit_test(test_mnist),
        cmocka_unit_test(test_hf_vs_llama2c),  cmocka_unit_test(test_corrupt_files),
        cmocka_unit_test(test_corrupt_models), cmocka_unit_test(test_config_variants),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
