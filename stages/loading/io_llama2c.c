/* io_llama2c.c: llama2.c checkpoints, read in place from a read-only mapping.
 *
 * Legacy format: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads,
 * n_kv_heads, vocab_size, seq_len), then fp32 arrays: token embedding
 * [vocab][dim], attention norms [L][dim], wq [L][dim][dim], wk [L][kv][dim],
 * wv [L][kv][dim], wo [L][dim][dim], FFN norms [L][dim], w1 [L][hid][dim],
 * w2 [L][dim][hid], w3 [L][hid][dim], final norm [dim], two RoPE tables
 * [seq_len][head_size/2] (ignored), then the classifier [vocab][dim] only
 * when the stored vocab_size is negative.
 *
 * Versioned export, version 1: a 256-byte header (uint32 magic "ak42" =
 * 0x616b3432, int32 version, the same 7 int32, uint8 shared_classifier,
 * zero padding), then fp32: attention norms, FFN norms, final norm, token
 * embedding, wq, wk, wv, wo, w1, w2, w3, classifier unless shared.
 *
 * The file must have exactly the size these shapes imply. llama2.c applies
 * RoPE to interleaved pairs and uses eps 1e-5 and theta 10000.
 */
#include <stdio.h>
#include <string.h>

#include "family_internal.h"
#include "io_internal.h"

#define LLAMA2C_MAGIC      0x616b3432u
#define LLAMA2C_V1_HEADER  256
#define LLAMA2C_LEGACY_HDR 28

/* The arrays of a checkpoint in file order. `per_layer` arrays hold n_layers
 * consecutive matrices, exposed as one tensor per layer. */
typedef enum {
    A_EMBED,
    A_ATTN_NORM,
    A_WQ,
    A_WK,
    A_WV,
    A_WO,
    A_FFN_NORM,
    A_W1,
    A_W2,
    A_W3,
    A_FINAL_NORM,
    A_ROPE,
    A_CLASSIFIER,
    A_COUNT
} l2c_array;

static const l2c_array legacy_order[] = {A_EMBED,      A_ATTN_NORM, A_WQ,        A_WK, A_WV,
                                         A_WO,         A_FFN_NORM,  A_W1,        A_W2, A_W3,
                                         A_FINAL_NORM, A_ROPE,      A_CLASSIFIER};
static const l2c_array v1_order[] = {A_ATTN_NORM, A_FFN_NORM, A_FINAL_NORM, A_EMBED,
                                     A_WQ,        A_WK,       A_WV,         A_WO,
                                     A_W1,        A_W2,       A_W3,         A_CLASSIFIER};

typedef struct {
    const char *name; /* canonical name; "%lld" is the layer */
    int per_layer;
    int ndim;
    int64_t shape[2]; /* of one layer's tensor */
    int present;
} l2c_array_info;

static void describe_arrays(const mpq_arch *a, int has_classifier, l2c_array_info *info) {
    int64_t kv = a->n_kv_heads * a->head_dim, q = a->n_heads * a->head_dim;
    l2c_array_info v[A_COUNT] = {
        [A_EMBED] = {"model.embed_tokens.weight", 0, 2, {a->vocab_size, a->dim}, 1},
        [A_ATTN_NORM] = {"model.layers.%lld.input_layernorm.weight", 1, 1, {a->dim, 0}, 1},
        [A_WQ] = {"model.layers.%lld.self_attn.q_proj.weight", 1, 2, {q, a->dim}, 1},
        [A_WK] = {"model.layers.%lld.self_attn.k_proj.weight", 1, 2, {kv, a->dim}, 1},
        [A_WV] = {"model.layers.%lld.self_attn.v_proj.weight", 1, 2, {kv, a->dim}, 1},
        [A_WO] = {"model.layers.%lld.self_attn.o_proj.weight", 1, 2, {a->dim, q}, 1},
        [A_FFN_NORM] = {"model.layers.%lld.post_attention_layernorm.weight", 1, 1, {a->dim, 0}, 1},
        [A_W1] = {"model.layers.%lld.mlp.gate_proj.weight", 1, 2, {a->hidden_dim, a->dim}, 1},
        [A_W2] = {"model.layers.%lld.mlp.down_proj.weight", 1, 2, {a->dim, a->hidden_dim}, 1},
        [A_W3] = {"model.layers.%lld.mlp.up_proj.weight", 1, 2, {a->hidden_dim, a->dim}, 1},
        [A_FINAL_NORM] = {"model.norm.weight", 0, 1, {a->dim, 0}, 1},
        /* two tables [seq_len][head_dim/2], skipped */
        [A_ROPE] = {NULL, 0, 1, {a->seq_len * a->head_dim, 0}, 1},
        [A_CLASSIFIER] = {"lm_head.weight", 0, 2, {a->vocab_size, a->dim}, has_classifier},
    };
    memcpy(info, v, sizeof v);
}

/* Validates the 7 header values and fills the architecture. */
static mpq_err read_params(mpq_ctx *ctx, const char *path, const unsigned char *p, mpq_arch *a,
                           int *negative_vocab) {
    int32_t v[7];
    for (int i = 0; i < 7; i++)
        v[i] = (int32_t)mpq_io_le32(p + 4 * i);
    static const char *const names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                         "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        if (i == 5)
            continue;
        MPQ_CHECK(v[i] > 0, MPQ_ERR_FORMAT, "%s: header field %s = %d must be positive", path,
                  names[i], (int)v[i]);
    }
    MPQ_CHECK(v[5] != 0 && v[5] != INT32_MIN, MPQ_ERR_FORMAT,
              "%s: header field vocab_size = %d is invalid", path, (int)v[5]);
    MPQ_CHECK(v[0] % v[3] == 0, MPQ_ERR_FORMAT,
              "%s: header field dim = %d is not a multiple of n_heads = %d", path, (int)v[0],
              (int)v[3]);
    MPQ_CHECK(v[4] <= v[3] && v[3] % v[4] == 0, MPQ_ERR_FORMAT,
              "%s: header field n_heads = %d is not a multiple of n_kv_heads = %d", path, (int)v[3],
              (int)v[4]);
    MPQ_CHECK((v[0] / v[3]) % 2 == 0, MPQ_ERR_FORMAT,
              "%s: head size dim / n_heads = %d must be even", path, (int)(v[0] / v[3]));
    snprintf(a->family, sizeof a->family, "%s", mpq_family_llama_ops.name);
    snprintf(a->model_type, sizeof a->model_type, "llama2.c");
    a->dim = v[0];
    a->hidden_dim = v[1];
    a->n_layers = v[2];
    a->n_heads = v[3];
    a->n_kv_heads = v[4];
    a->vocab_size = v[5] < 0 ? -(int64_t)v[5] : v[5];
    a->seq_len = v[6];
    a->head_dim = a->dim / a->n_heads;
    a->norm_eps = 1e-5;
    a->rope_theta = 10000.0;
    a->rope_interleaved = 1;
    a->qkv_bias = 0;
    *negative_vocab = v[5] < 0;
    return MPQ_OK;
}

/* Elements of one array (all layers). */
static mpq_err array_numel(mpq_ctx *ctx, const mpq_arch *a, const l2c_array_info *ai,
                           int64_t *out) {
    int64_t n = 1;
    for (int d = 0; d < ai->ndim; d++)
        MPQ_CALL(mpq_mul64(ctx, n, ai->shape[d], "llama2.c array size", &n));
    if (ai->per_layer)
        MPQ_CALL(mpq_mul64(ctx, n, a->n_layers, "llama2.c array size", &n));
    *out = n;
    return MPQ_OK;
}

static mpq_err l2c_open(mpq_ctx *ctx, mpq_model *m, const char *path) {
    const mpq_io_map *map = NULL;
    MPQ_CALL(mpq_io_map_file(ctx, m, path, &map));
    const unsigned char *base = map->base;
    size_t size = map->size;
    mpq_arch *a = &m->arch;
    int versioned = size >= 8 && mpq_io_le32(base) == LLAMA2C_MAGIC;
    size_t offset = 0;
    int has_classifier = 0;
    const l2c_array *order = legacy_order;
    size_t norder = sizeof legacy_order / sizeof legacy_order[0];
    if (versioned) {
        int32_t version = (int32_t)mpq_io_le32(base + 4);
        MPQ_CHECK(version == 1, MPQ_ERR_FORMAT,
                  "%s: llama2.c export version %d is not supported (only version 1, fp32%s)", path,
                  (int)version, version == 2 ? "; version 2 is int8 Q8_0" : "");
        MPQ_CHECK(size >= LLAMA2C_V1_HEADER, MPQ_ERR_FORMAT,
                  "%s: truncated: %zu bytes, the version 1 header alone is %d bytes", path, size,
                  LLAMA2C_V1_HEADER);
        int neg = 0;
        MPQ_CALL(read_params(ctx, path, base + 8, a, &neg));
        MPQ_CHECK(!neg, MPQ_ERR_FORMAT,
                  "%s: header field vocab_size = %lld must be positive in the version 1 format",
                  path, -(long long)a->vocab_size);
        unsigned shared = base[36];
        MPQ_CHECK(shared <= 1, MPQ_ERR_FORMAT,
                  "%s: header field shared_classifier = %u is not 0 or 1", path, shared);
        for (size_t i = 37; i < LLAMA2C_V1_HEADER; i++)
            MPQ_CHECK(base[i] == 0, MPQ_ERR_FORMAT,
                      "%s: header padding byte %zu is %u, expected 0 (not a version 1 file?)", path,
                      i, (unsigned)base[i]);
        has_classifier = !shared;
        offset = LLAMA2C_V1_HEADER;
        order = v1_order;
        norder = sizeof v1_order / sizeof v1_order[0];
        snprintf(a->format, sizeof a->format, "llama2c-v1");
    } else {
        MPQ_CHECK(size >= LLAMA2C_LEGACY_HDR, MPQ_ERR_FORMAT,
                  "%s: truncated: %zu bytes, the llama2.c header alone is %d bytes", path, size,
                  LLAMA2C_LEGACY_HDR);
        MPQ_CALL(read_params(ctx, path, base, a, &has_classifier));
        offset = LLAMA2C_LEGACY_HDR;
        snprintf(a->format, sizeof a->format, "llama2c");
    }
    a->tied_embeddings = !has_classifier;

    l2c_array_info info[A_COUNT];
    describe_arrays(a, has_classifier, info);
    /* Expected size first, so that a truncated file is reported as such
     * before any tensor is created. */
    int64_t expect = (int64_t)offset;
    for (size_t k = 0; k < norder; k++) {
        const l2c_array_info *ai = &info[order[k]];
        if (!ai->present)
            continue;
        int64_t n = 0;
        MPQ_CALL(array_numel(ctx, a, ai, &n));
        MPQ_CALL(mpq_mul64(ctx, n, 4, "llama2.c file size", &n));
        MPQ_CALL(mpq_add64(ctx, expect, n, "llama2.c file size", &expect));
    }
    MPQ_CHECK((uint64_t)expect == (uint64_t)size, MPQ_ERR_FORMAT,
              "%s: %s: the header (dim %lld, hidden_dim %lld, n_layers %lld, n_heads %lld, "
              "n_kv_heads %lld, vocab_size %lld%s, seq_len %lld) implies %lld bytes, the file has "
              "%zu",
              path, (uint64_t)expect > size ? "truncated" : "trailing bytes", (long long)a->dim,
              (long long)a->hidden_dim, (long long)a->n_layers, (long long)a->n_heads,
              (long long)a->n_kv_heads, (long long)a->vocab_size,
              has_classifier ? " with classifier" : "", (long long)a->seq_len, (long long)expect,
              size);

    for (size_t k = 0; k < norder; k++) {
        const l2c_array_info *ai = &info[order[k]];
        if (!ai->present)
            continue;
        int64_t n = 0;
        MPQ_CALL(array_numel(ctx, a, ai, &n));
        if (ai->name) {
            int64_t nl = ai->per_layer ? a->n_layers : 1;
            size_t one = (size_t)(n / nl) * 4;
            for (int64_t l = 0; l < nl; l++) {
                char name[MPQ_TENSOR_NAME_MAX];
                snprintf(name, sizeof name, ai->name, (long long)l);
                mpq_tensor t;
                MPQ_CALL(mpq_tensor_init(ctx, &t, name, MPQ_DTYPE_F32, ai->ndim, ai->shape,
                                         base + offset + (size_t)l * one, map->path));
                MPQ_CALL(mpq_model_add_tensor(ctx, m, &t));
            }
        }
        offset += (size_t)n * 4;
    }
    MPQ_CALL(mpq_io_check_llama(ctx, m));
    return MPQ_OK;
}

/* Fallback for any regular file that is not recognisably something else:
 * the legacy format has no magic. */
static int l2c_probe(const char *path, int is_dir, const unsigned char *head, size_t nhead) {
    return !is_dir && nhead >= 4;
}

const mpq_model_format mpq_format_llama2c = {
    .name = "llama2c",
    .fallback = 1,
    .probe = l2c_probe,
    .open = l2c_open,
};
