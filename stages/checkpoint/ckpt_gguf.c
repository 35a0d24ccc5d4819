/* ckpt_gguf.c: `mpquant export --format gguf`: a Llama model as a GGUF v3
 * file for llama.cpp (architecture "llama"), with the tokenizer embedded.
 *
 * File: "GGUF", version 3, tensor count, KV count (little-endian u32, u32,
 * u64, u64); the KV pairs (string key, u32 value type, value; strings are
 * u64 length + bytes, arrays u32 element type + u64 count + elements); one
 * info per tensor (name, u32 n_dims, u64 ne[n_dims] with ne[0] the number of
 * columns, u32 ggml type, u64 offset into the data section); zero padding to
 * general.alignment (32); the data, every tensor starting at a multiple of 32.
 *
 * A quantized layer of a checkpoint is written as ggml blocks when its
 * quantizer maps to one (ckpt_gguf_quant.c), else as F32; other matrices
 * keep a stored F16/BF16 type, everything else is F32. q/k
 * rows go in the interleaved RoPE order llama.cpp's "llama" graph expects. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt_gguf.h"
#include "mpq_ckpt.h"
#include "mpq_family.h"
#include "mpq_outfile.h"
#include "mpq_tokenizer.h"

#define GGUF_ALIGN 32
#define CHUNK      ((int64_t)1 << 20) /* floats per conversion buffer */

/* ---- the tensor plan ------------------------------------------------------------- */

typedef struct gg_tensor {
    char name[MPQ_TENSOR_NAME_MAX]; /* GGUF name */
    const mpq_tensor *t;            /* the model's tensor; NULL: rope_freqs */
    int64_t entry;                  /* checkpoint entry when written as blocks, else -1 */
    int64_t *rowmap;                /* q/k: source row of every destination row, else NULL */
    int type;
    int nd;
    int64_t ne[MPQ_TENSOR_MAXDIM];
    int64_t rows, cols; /* as a matrix: rows = product of ne[1..], cols = ne[0] */
    int64_t offset, nbytes;
    mpq_gguf_qstat st;
    const char *why; /* F32 tensors of a checkpoint's quantized layers: the reason */
    int64_t key;     /* file order: embedding, rope_freqs, blocks, output norm, output */
} gg_tensor;

typedef struct gg_plan {
    gg_tensor *v;
    int64_t n;
    float *rope_freqs; /* [head_dim / 2] llama3 frequency factors, or NULL */
    int64_t data_bytes;
} gg_plan;

static const struct {
    const char *hf, *gguf;
} layer_names[] = {
    {"input_layernorm", "attn_norm"},    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},      {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate_proj", "ffn_gate"},       {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
};

/* The GGUF name of Hugging Face tensor name `hf` into out; 0 when it has none. */
static int gguf_name(const char *hf, char *out, size_t len) {
    static const char *const top[][2] = {{"model.embed_tokens.weight", "token_embd.weight"},
                                         {"model.norm.weight", "output_norm.weight"},
                                         {"lm_head.weight", "output.weight"}};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (strcmp(hf, top[i][0]) == 0) {
            snprintf(out, len, "%s", top[i][1]);
            return 1;
        }
    const char *pre = "model.layers.";
    if (strncmp(hf, pre, strlen(pre)) != 0)
        return 0;
    const char *p = hf + strlen(pre);
    char *end = NULL;
    long long layer = strtoll(p, &end, 10);
    if (end == p || *end != '.' || layer < 0)
        return 0;
    p = end + 1;
    for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++) {
        size_t k = strlen(layer_names[i].hf);
        if (strncmp(p, layer_names[i].hf, k) == 0 &&
            (strcmp(p + k, ".weight") == 0 || strcmp(p + k, ".bias") == 0)) {
            snprintf(out, len, "blk.%lld.%s%s", layer, layer_names[i].gguf, p + k);
            return 1;
        }
    }
    return 0;
}

/* Sort key of GGUF name `name` (from gguf_name) times 2^20 plus the model
 * position `pos`: llama.cpp's converter order. */
static int64_t order_key(const char *name, int64_t pos) {
    int64_t k = 0;
    if (strncmp(name, "rope_freqs", 10) == 0)
        k = 1;
    else if (strncmp(name, "blk.", 4) == 0) {
        char *end = NULL;
        long long layer = strtoll(name + 4, &end, 10);
        int kind = 0;
        for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++) {
            size_t n = strlen(layer_names[i].gguf);
            if (strncmp(end + 1, layer_names[i].gguf, n) == 0 && end[1 + n] == '.')
                kind = (int)i;
        }
        k = 2 + layer * 32 + 2 * kind + (strstr(end, ".bias") != NULL);
    } else if (strncmp(name, "output_norm", 11) == 0)
        k = INT64_C(1) << 40;
    else if (strncmp(name, "output", 6) == 0)
        k = (INT64_C(1) << 40) + 1;
    return (k << 20) + pos;
}

static int cmp_key(const void *a, const void *b) {
    int64_t ka = ((const gg_tensor *)a)->key, kb = ((const gg_tensor *)b)->key;
    return ka < kb ? -1 : ka > kb;
}

static void plan_free(gg_plan *pl) {
    for (int64_t i = 0; i < pl->n; i++)
        mpq_free(pl->v[i].rowmap);
    mpq_free(pl->v);
    mpq_free(pl->rope_freqs);
    memset(pl, 0, sizeof *pl);
}

/* Destination row r of a q/k tensor with heads of hd rows takes source row
 * rowmap[r]: the Hugging Face rotate-half order (i, i + hd/2) becomes the
 * interleaved pairs (2i, 2i+1). */
static mpq_err qk_rowmap(mpq_ctx *ctx, const mpq_model *m, const mpq_tensor *t, int64_t hd,
                         int64_t **out) {
    const int64_t rows = t->shape[0], half = hd / 2;
    MPQ_CHECK(hd >= 2 && hd % 2 == 0 && rows % hd == 0, MPQ_ERR_FORMAT,
              "%s: tensor '%s' [%lld rows] is not a whole number of heads of %lld rows",
              mpq_model_path(m), t->name, (long long)rows, (long long)hd);
    MPQ_ALLOC(*out, rows);
    for (int64_t r = 0; r < rows; r++) {
        int64_t h = r / hd, j = r % hd;
        (*out)[r] = h * hd + (j % 2) * half + j / 2;
    }
    return MPQ_OK;
}

/* llama.cpp's rope_freqs for llama3 scaling: divisor of each pair's
 * frequency, computed as Hugging Face's rule (mpq_rope_inv_freq). */
static mpq_err llama3_factors(mpq_ctx *ctx, const mpq_arch *a, float **out) {
    const int64_t half = a->head_dim / 2;
    MPQ_ALLOC(*out, half);
    const double lo_wl = (double)a->rope_orig_max / a->rope_low_freq;
    const double hi_wl = (double)a->rope_orig_max / a->rope_high_freq;
    for (int64_t i = 0; i < half; i++) {
        double f = pow(a->rope_theta, -2.0 * (double)i / (double)a->head_dim);
        double wl = 2.0 * M_PI / f, ff;
        if (wl < hi_wl)
            ff = 1.0;
        else if (wl > lo_wl)
            ff = a->rope_factor;
        else {
            double s = ((double)a->rope_orig_max / wl - a->rope_low_freq) /
                       (a->rope_high_freq - a->rope_low_freq);
            ff = 1.0 / ((1.0 - s) / a->rope_factor + s);
        }
        (*out)[i] = (float)ff;
    }
    return MPQ_OK;
}

/* Decides how quantized layer `e` of the checkpoint is written (blocks or
 * F32) by encoding it once and comparing with mpquant's values. */
static mpq_err plan_layer(mpq_ctx *ctx, const mpq_ckpt *ck, int64_t ei, gg_tensor *g,
                          const mpq_export_opts *o) {
    const mpq_ckpt_entry *e = &ck->entries[ei];
    mpq_err err = MPQ_OK;
    mpq_qlayer *l = NULL;
    uint8_t *blocks = NULL;
    const char *why = NULL;
    const int lossy = o->lossy;
    int type = mpq_gguf_block_type(&e->spec, e->cols, o->kquants, &why);
    if (type == MPQ_GGML_F32 || e->rows != g->rows || e->cols != g->cols) {
        g->why = why ? why : "the layer's matrix is not the tensor's [rows][cols]";
        return MPQ_OK;
    }
    const int64_t nblk = g->rows * (g->cols / mpq_gguf_block_weights(type));
    MPQ_TRY(mpq_ckpt_read_layer(ctx, ck, ei, &l));
    MPQ_TRY(mpq_malloc(ctx, nblk, mpq_gguf_block_bytes(type), (void **)&blocks));
    MPQ_TRY(mpq_gguf_encode(ctx, l, type, g->rowmap, blocks, &g->st));
    if (g->st.bad_scales > 0) {
        g->why = "fp32 scales that are not fp16 values";
        goto cleanup;
    }
    if (g->st.mismatches > 0 && mpq_gguf_block_converts(type) && !lossy) {
        g->why = mpq_gguf_block_converts(type);
        goto cleanup;
    }
    if (g->st.mismatches > 0 && e->spec.sym && !mpq_gguf_block_converts(type)) {
        g->why = "the blocks do not reproduce the layer bit for bit";
        goto cleanup;
    }
    if (g->st.mismatches > 0 && !lossy) {
        int64_t pos = g->st.first_bad;
        MPQ_ENSURE(0, MPQ_ERR_ARG,
                   "%s: layer '%s' (%s): %s holds its values d * q + m with fp16 m = -scale * "
                   "zero, which differs from scale * (code - zero) at %lld of %lld weights (first "
                   "[%lld][%lld]); pass --lossy to convert it anyway, reporting the error",
                   ck->path, e->name, e->spec_text, mpq_gguf_type_name(type),
                   (long long)g->st.mismatches, (long long)g->st.n, (long long)(pos / e->cols),
                   (long long)(pos % e->cols));
    }
    g->type = type;
    g->entry = ei;
    g->nbytes = nblk * (int64_t)mpq_gguf_block_bytes(type);
cleanup:
    mpq_free(blocks);
    mpq_qlayer_destroy(&l);
    return err;
}

/* One plan entry per model tensor (GGUF-named, q/k row maps), the
 * llama3 rope_freqs, the types and the offsets. ck: the checkpoint when m
 * is one, else NULL. */
static mpq_err plan_build(mpq_ctx *ctx, const mpq_model *m, const mpq_ckpt *ck,
                          const mpq_export_opts *o, gg_plan *pl) {
    const mpq_arch *a = mpq_model_arch(m);
    const int64_t nt = mpq_model_ntensors(m);
    MPQ_ALLOC(pl->v, nt + 1);
    if (a->rope_scaling == MPQ_ROPE_LLAMA3) {
        gg_tensor *g = &pl->v[pl->n++];
        snprintf(g->name, sizeof g->name, "rope_freqs.weight");
        g->entry = -1;
        g->nd = 1;
        g->ne[0] = g->cols = a->head_dim / 2;
        g->rows = 1;
        g->nbytes = 4 * g->cols;
        MPQ_CALL(llama3_factors(ctx, a, &pl->rope_freqs));
    }
    for (int64_t i = 0; i < nt; i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        gg_tensor *g = &pl->v[pl->n++];
        MPQ_CHECK(gguf_name(t->name, g->name, sizeof g->name), MPQ_ERR_ARG,
                  "%s: tensor '%s' has no place in llama.cpp's llama architecture",
                  mpq_model_path(m), t->name);
        MPQ_CHECK(t->ndim >= 1 && t->ndim <= 2, MPQ_ERR_ARG,
                  "%s: tensor '%s' has %d dimensions; GGUF llama tensors have 1 or 2",
                  mpq_model_path(m), t->name, t->ndim);
        g->t = t;
        g->entry = -1;
        g->type = MPQ_GGML_F32;
        g->nd = t->ndim;
        for (int d = 0; d < t->ndim; d++)
            g->ne[d] = t->shape[t->ndim - 1 - d];
        g->cols = g->ne[0];
        g->rows = t->ndim == 2 ? g->ne[1] : 1;
        g->nbytes = 4 * t->numel;
        if (!a->rope_interleaved &&
            (strstr(t->name, ".self_attn.q_proj.") || strstr(t->name, ".self_attn.k_proj.")))
            MPQ_CALL(qk_rowmap(ctx, m, t, a->head_dim, &g->rowmap));
        int64_t ei = ck ? mpq_ckpt_find(ck, t->name) : -1;
        if (ei >= 0 && ck->entries[ei].quantized)
            MPQ_CALL(plan_layer(ctx, ck, ei, g, o));
        else if (t->ndim == 2 && (t->dtype == MPQ_DTYPE_F16 || t->dtype == MPQ_DTYPE_BF16)) {
            /* a matrix stored as 16-bit floats stays so (exact); vectors
             * are F32, as llama.cpp's norms and biases expect */
            g->type = t->dtype == MPQ_DTYPE_F16 ? MPQ_GGML_F16 : MPQ_GGML_BF16;
            g->nbytes = 2 * t->numel;
        }
    }
    for (int64_t i = 0; i < pl->n; i++)
        pl->v[i].key = order_key(pl->v[i].name, i);
    qsort(pl->v, (size_t)pl->n, sizeof *pl->v, cmp_key);
    for (int64_t i = 0; i < pl->n; i++) {
        pl->v[i].offset = pl->data_bytes;
        int64_t padded = (pl->v[i].nbytes + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
        MPQ_CALL(mpq_add64(ctx, pl->data_bytes, padded, "GGUF data size", &pl->data_bytes));
    }
    return MPQ_OK;
}

/* ---- metadata --------------------------------------------------------------------- */

/* llama_ftype of the block type holding the most weights (Q4_K and Q5_K as
 * their _M variants, MOSTLY_Q4_K_M 15 and MOSTLY_Q5_K_M 17); without blocks,
 * MOSTLY_F16 / MOSTLY_BF16 when a matrix is so stored, else ALL_F32. */
static int64_t file_type(const gg_plan *pl) {
    static const int types[] = {MPQ_GGML_Q4_0, MPQ_GGML_Q4_1, MPQ_GGML_Q5_0, MPQ_GGML_Q5_1,
                                MPQ_GGML_Q8_0, MPQ_GGML_Q6_K, MPQ_GGML_Q4_K, MPQ_GGML_Q5_K,
                                MPQ_GGML_F16,  MPQ_GGML_BF16};
    static const int64_t ftypes[] = {2, 3, 8, 9, 7, 18, 15, 17, 1, 32};
    int64_t best = 0, ft = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        int64_t w = 0;
        for (int64_t i = 0; i < pl->n; i++)
            w += pl->v[i].type == types[k] ? pl->v[i].rows * pl->v[i].cols : 0;
        if (types[k] == MPQ_GGML_F16 && ft != 0)
            break; /* blocks decide where there are any */
        if (w > best) {
            best = w;
            ft = ftypes[k];
        }
    }
    return ft;
}

static void write_arch_kv(mpq_gguf_buf *b, const mpq_model *m, const gg_plan *pl) {
    const mpq_arch *a = mpq_model_arch(m);
    const char *path = mpq_model_path(m), *base = strrchr(path, '/');
    char name[256];
    snprintf(name, sizeof name, "%s", base && base[1] ? base + 1 : path);
    char *dot = strrchr(name, '.');
    if (dot && dot != name)
        *dot = '\0';
    mpq_gguf_kv_str(b, "general.architecture", "llama");
    mpq_gguf_kv_str(b, "general.name", name);
    mpq_gguf_kv_u32(b, "general.file_type", file_type(pl));
    mpq_gguf_kv_u32(b, "general.quantization_version", 2);
    mpq_gguf_kv_u32(b, "general.alignment", GGUF_ALIGN);
    mpq_gguf_kv_u32(b, "llama.context_length", a->seq_len);
    mpq_gguf_kv_u32(b, "llama.embedding_length", a->dim);
    mpq_gguf_kv_u32(b, "llama.block_count", a->n_layers);
    mpq_gguf_kv_u32(b, "llama.feed_forward_length", a->hidden_dim);
    mpq_gguf_kv_u32(b, "llama.rope.dimension_count", a->head_dim);
    mpq_gguf_kv_u32(b, "llama.attention.head_count", a->n_heads);
    mpq_gguf_kv_u32(b, "llama.attention.head_count_kv", a->n_kv_heads);
    mpq_gguf_kv_f32(b, "llama.attention.layer_norm_rms_epsilon", a->norm_eps);
    mpq_gguf_kv_f32(b, "llama.rope.freq_base", a->rope_theta);
    mpq_gguf_kv_u32(b, "llama.vocab_size", a->vocab_size);
    if (a->head_dim * a->n_heads != a->dim) {
        mpq_gguf_kv_u32(b, "llama.attention.key_length", a->head_dim);
        mpq_gguf_kv_u32(b, "llama.attention.value_length", a->head_dim);
    }
    if (a->rope_scaling == MPQ_ROPE_LINEAR) {
        mpq_gguf_kv_str(b, "llama.rope.scaling.type", "linear");
        mpq_gguf_kv_f32(b, "llama.rope.scaling.factor", a->rope_factor);
    }
}

static mpq_err write_padding(mpq_ctx *ctx, mpq_outfile *f, int64_t nbytes) {
    static const uint8_t zeros[GGUF_ALIGN];
    int64_t pad = (GGUF_ALIGN - nbytes % GGUF_ALIGN) % GGUF_ALIGN;
    if (pad)
        MPQ_CALL(mpq_outfile_write(ctx, f, zeros, (size_t)pad));
    return MPQ_OK;
}

/* n values of g's tensor from element off, in g's float type (a 16-bit
 * type holds them exactly: the tensor is stored so). */
static mpq_err write_values(mpq_ctx *ctx, mpq_outfile *f, const gg_tensor *g, int64_t off,
                            int64_t n, float *buf, uint16_t *hbuf) {
    MPQ_CALL(mpq_tensor_read_f32(ctx, g->t, off, n, buf));
    if (g->type == MPQ_GGML_F32)
        return mpq_outfile_write(ctx, f, buf, (size_t)n * sizeof *buf);
    for (int64_t i = 0; i < n; i++)
        hbuf[i] = g->type == MPQ_GGML_F16 ? mpq_f32_to_f16(buf[i]) : mpq_f32_to_bf16(buf[i]);
    return mpq_outfile_write(ctx, f, hbuf, (size_t)n * sizeof *hbuf);
}

/* Tensor g's data: blocks re-encoded from the checkpoint, or its values
 * (rows permuted by g->rowmap), then the padding to the next tensor. buf
 * and hbuf hold CHUNK values. */
static mpq_err write_tensor(mpq_ctx *ctx, mpq_outfile *f, const mpq_ckpt *ck, const gg_plan *pl,
                            const gg_tensor *g, float *buf, uint16_t *hbuf) {
    if (!g->t) {
        MPQ_CALL(mpq_outfile_write(ctx, f, pl->rope_freqs, (size_t)g->nbytes));
    } else if (g->entry >= 0) {
        mpq_err err = MPQ_OK;
        mpq_qlayer *l = NULL;
        uint8_t *blocks = NULL;
        mpq_gguf_qstat st;
        MPQ_TRY(mpq_ckpt_read_layer(ctx, ck, g->entry, &l));
        MPQ_TRY(mpq_malloc(ctx, g->nbytes, 1, (void **)&blocks));
        MPQ_TRY(mpq_gguf_encode(ctx, l, g->type, g->rowmap, blocks, &st));
        MPQ_TRY(mpq_outfile_write(ctx, f, blocks, (size_t)g->nbytes));
    cleanup:
        mpq_free(blocks);
        mpq_qlayer_destroy(&l);
        if (err != MPQ_OK)
            return err;
    } else if (g->rowmap) {
        MPQ_CHECK(g->cols <= CHUNK, MPQ_ERR_RANGE, "gguf: tensor '%s' has rows of %lld values",
                  g->t->name, (long long)g->cols);
        for (int64_t r = 0; r < g->rows; r++)
            MPQ_CALL(write_values(ctx, f, g, g->rowmap[r] * g->cols, g->cols, buf, hbuf));
    } else {
        for (int64_t o = 0; o < g->t->numel; o += CHUNK) {
            int64_t n = g->t->numel - o < CHUNK ? g->t->numel - o : CHUNK;
            MPQ_CALL(write_values(ctx, f, g, o, n, buf, hbuf));
        }
    }
    MPQ_CALL(write_padding(ctx, f, g->nbytes));
    return MPQ_OK;
}

/* Header, KV pairs (already in kv) and tensor infos, padded to the data. */
static void build_header(mpq_gguf_buf *h, const mpq_gguf_buf *kv, const gg_plan *pl) {
    mpq_gguf_put(h, "GGUF", 4);
    mpq_gguf_uint(h, 3, 4);
    mpq_gguf_uint(h, (uint64_t)pl->n, 8);
    mpq_gguf_uint(h, (uint64_t)kv->nkv, 8);
    mpq_gguf_put(h, kv->p, (size_t)kv->n);
    for (int64_t i = 0; i < pl->n; i++) {
        const gg_tensor *g = &pl->v[i];
        mpq_gguf_str(h, g->name, strlen(g->name));
        mpq_gguf_uint(h, (uint64_t)g->nd, 4);
        for (int d = 0; d < g->nd; d++)
            mpq_gguf_uint(h, (uint64_t)g->ne[d], 8);
        mpq_gguf_uint(h, (uint64_t)g->type, 4);
        mpq_gguf_uint(h, (uint64_t)g->offset, 8);
    }
    static const uint8_t zeros[GGUF_ALIGN];
    mpq_gguf_put(h, zeros, (size_t)((GGUF_ALIGN - h->n % GGUF_ALIGN) % GGUF_ALIGN));
}

/* One line per tensor and the totals, on stdout. */
static void report(const gg_plan *pl, const char *path) {
    int64_t exact = 0, lossy = 0, dense_q = 0, plain = 0, nlossy = 0;
    double max_abs = 0, sum_sq = 0;
    for (int64_t i = 0; i < pl->n; i++) {
        const gg_tensor *g = &pl->v[i];
        printf("gguf: %-28s %-5s ", g->name, mpq_gguf_type_name(g->type));
        if (g->entry >= 0 && g->st.mismatches == 0) {
            exact++;
            printf("exact\n");
        } else if (g->entry >= 0) {
            lossy++;
            nlossy += g->st.n;
            max_abs = g->st.max_abs > max_abs ? g->st.max_abs : max_abs;
            sum_sq += g->st.sum_sq;
            printf("lossy: %lld of %lld weights differ, added max |err| %.9g, rms %.9g\n",
                   (long long)g->st.mismatches, (long long)g->st.n, g->st.max_abs,
                   sqrt(g->st.sum_sq / (double)(g->st.n ? g->st.n : 1)));
        } else if (g->why) {
            dense_q++;
            printf("dense, exact (quantized layer: %s)\n", g->why);
        } else {
            plain++;
            printf("dense, exact\n");
        }
    }
    printf("gguf: %s: %lld tensors, %lld quantized layers as blocks bit-exact, %lld converted "
           "with added error (max |err| %.9g, rms %.9g over their weights), %lld quantized layers "
           "dense F32, %lld other tensors dense in their stored float type; general.file_type "
           "%lld\n",
           path, (long long)pl->n, (long long)exact, (long long)lossy, max_abs,
           sqrt(sum_sq / (double)(nlossy ? nlossy : 1)), (long long)dense_q, (long long)plain,
           (long long)file_type(pl));
    fflush(stdout);
}

static mpq_err check_model(mpq_ctx *ctx, const mpq_model *m, const mpq_export_opts *o) {
    const mpq_arch *a = mpq_model_arch(m);
    const mpq_family_ops *fam = mpq_family_of_model(m);
    const char *p = mpq_model_path(m);
    MPQ_CHECK(fam && fam->llama_layout, MPQ_ERR_ARG,
              "%s: gguf export needs a Llama-family model (this one is '%s')", p,
              a->family[0] ? a->family : "a plain tensor container");
    MPQ_CHECK(o->tokenizer && o->tokenizer[0], MPQ_ERR_ARG,
              "%s: gguf export needs the model's tokenizer: pass --tokenizer PATH (llama2.c "
              "tokenizer.bin or a Hugging Face tokenizer.json)",
              p);
    MPQ_CHECK(a->head_dim >= 2 && a->head_dim % 2 == 0, MPQ_ERR_ARG,
              "%s: gguf export: head_dim %lld is not even", p, (long long)a->head_dim);
    const int64_t v[] = {a->dim,        a->hidden_dim, a->n_layers, a->n_heads,
                         a->n_kv_heads, a->vocab_size, a->seq_len,  a->head_dim};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        MPQ_CHECK(v[i] > 0 && v[i] <= (int64_t)UINT32_MAX, MPQ_ERR_RANGE,
                  "%s: gguf export: an architecture value (%lld) does not fit uint32", p,
                  (long long)v[i]);
    return MPQ_OK;
}

/* The files an export may not replace: the model's path and files, its
 * directory's config.json, the tokenizer (and a tokenizer directory's
 * files). Pointers into m, o and names [3][4096]. */
static mpq_err gguf_inputs(mpq_ctx *ctx, const mpq_model *m, const mpq_export_opts *o,
                           char (*names)[4096], const char ***list, int64_t *n) {
    const char *path = mpq_model_path(m);
    const int64_t nf = mpq_model_nfiles(m);
    struct stat st;
    MPQ_CALL(mpq_malloc(ctx, nf + 6, sizeof **list, (void **)list));
    *n = 0;
    (*list)[(*n)++] = path;
    for (int64_t i = 0; i < nf; i++)
        if (mpq_model_file_at(m, i))
            (*list)[(*n)++] = mpq_model_file_at(m, i);
    (*list)[(*n)++] = o->tokenizer;
    const int dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    const char *slash = strrchr(path, '/');
    if (dir)
        snprintf(names[0], 4096, "%s/config.json", path);
    else
        snprintf(names[0], 4096, "%.*sconfig.json", slash ? (int)(slash - path + 1) : 0, path);
    snprintf(names[1], 4096, "%s/tokenizer.json", o->tokenizer);
    snprintf(names[2], 4096, "%s/tokenizer_config.json", o->tokenizer);
    for (int k = 0; k < 3; k++)
        if (stat(names[k], &st) == 0)
            (*list)[(*n)++] = names[k];
    return MPQ_OK;
}

static mpq_err write_gguf(mpq_ctx *ctx, const mpq_model *m, const char *path,
                          const mpq_export_opts *o) {
    mpq_err err = MPQ_OK;
    mpq_ckpt *ck = NULL;
    mpq_tokenizer *tk = NULL;
    gg_plan pl = {0};
    mpq_gguf_buf kv = {.ctx = ctx}, hdr = {.ctx = ctx};
    mpq_outfile *f = NULL;
    float *buf = NULL;
    uint16_t *hbuf = NULL;
    const char **inputs = NULL;
    int64_t ninputs = 0;
    char names[3][4096];
    const mpq_arch *a = mpq_model_arch(m);
    MPQ_CALL(check_model(ctx, m, o));
    MPQ_CALL(gguf_inputs(ctx, m, o, names, &inputs, &ninputs));
    mpq_outfile_opts oo = {o->overwrite, inputs, ninputs};
    MPQ_TRY(mpq_outfile_check(ctx, path, &oo));
    MPQ_TRY(mpq_tokenizer_load(ctx, o->tokenizer, a->vocab_size, &tk));
    if (strcmp(a->format, "mpqckpt") == 0)
        MPQ_TRY(mpq_ckpt_open(ctx, mpq_model_path(m), &ck));
    MPQ_TRY(plan_build(ctx, m, ck, o, &pl));
    write_arch_kv(&kv, m, &pl);
    MPQ_TRY(mpq_gguf_tokenizer_kv(ctx, &kv, tk, o->tokenizer, a->vocab_size));
    MPQ_TRY(kv.err);
    build_header(&hdr, &kv, &pl);
    MPQ_TRY(hdr.err);
    MPQ_ALLOC_TRY(buf, CHUNK);
    MPQ_ALLOC_TRY(hbuf, CHUNK);
    MPQ_TRY(mpq_outfile_open(ctx, path, &oo, &f));
    MPQ_TRY(mpq_outfile_write(ctx, f, hdr.p, (size_t)hdr.n));
    for (int64_t i = 0; i < pl.n; i++)
        MPQ_TRY(write_tensor(ctx, f, ck, &pl, &pl.v[i], buf, hbuf));
    MPQ_TRY(mpq_outfile_commit(ctx, &f));
    report(&pl, path);
cleanup:
    mpq_outfile_abort(&f);
    mpq_free(buf);
    mpq_free(hbuf);
    mpq_free(inputs);
    mpq_free(kv.p);
    mpq_free(hdr.p);
    plan_free(&pl);
    mpq_ckpt_close(&ck);
    mpq_tokenizer_destroy(&tk);
    return err;
}

const mpq_export_format mpq_export_gguf = {
    .name = "gguf",
    .summary = "GGUF v3 for llama.cpp (Llama models; quantized int layers as ggml blocks)",
    .write = write_gguf,
};
