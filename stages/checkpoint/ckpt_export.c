/* ckpt_export.c: exports of a model (typically an opened checkpoint, whose
 * quantized layers are already dequantized) to safetensors + config.json
 * and to the llama2.c legacy checkpoint. Local; written through the atomic
 * output helper. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "ckpt_internal.h"
#include "mpq_ckpt.h"
#include "mpq_family.h"
#include "mpq_outfile.h"

/* ---- RoPE row order ---------------------------------------------------------- */

/* Which q/k permutation a tensor needs: the rows of a q or k projection
 * (weight or bias) come in heads of head_dim rows. Interleaved order pairs
 * rows (2i, 2i+1) of a head, rotate-half order pairs (i, i + head_dim/2). */
typedef enum { PERM_NONE = 0, PERM_TO_HALF, PERM_TO_INTERLEAVED } perm_kind;

int mpq_ckpt_is_qk(const char *name) {
    return strstr(name, ".self_attn.q_proj.") || strstr(name, ".self_attn.k_proj.");
}

/* Source row of destination row r under the permutation. */
static int64_t perm_src(perm_kind k, int64_t r, int64_t hd) {
    int64_t h = r / hd, j = r % hd, half = hd / 2;
    if (k == PERM_TO_HALF) /* dest (t, i) <- src 2i + t */
        return h * hd + 2 * (j % half) + j / half;
    /* PERM_TO_INTERLEAVED: dest 2i + t <- src t * half + i */
    return h * hd + (j % 2) * half + j / 2;
}

/* Rows [r0, r0 + nr) of tensor t as fp32 into out [nr][cols], permuted. */
static mpq_err read_rows(mpq_ctx *ctx, const mpq_tensor *t, perm_kind k, int64_t hd, int64_t r0,
                         int64_t nr, int64_t cols, float *out) {
    if (k == PERM_NONE)
        return mpq_tensor_read_f32(ctx, t, r0 * cols, nr * cols, out);
    for (int64_t r = 0; r < nr; r++)
        MPQ_CALL(mpq_tensor_read_f32(ctx, t, perm_src(k, r0 + r, hd) * cols, cols, out + r * cols));
    return MPQ_OK;
}

/* Streams tensor t as fp32 (permuted as asked) into the output file. */
static mpq_err write_tensor_f32(mpq_ctx *ctx, mpq_outfile *f, const mpq_tensor *t, perm_kind k,
                                int64_t hd, float *buf, int64_t cap) {
    int64_t rows = t->ndim >= 1 ? t->shape[0] : 1;
    int64_t cols = rows > 0 ? t->numel / rows : 0;
    if (t->numel == 0)
        return MPQ_OK;
    MPQ_CHECK(k == PERM_NONE || (rows % hd == 0 && cols <= cap), MPQ_ERR_FORMAT,
              "%s: tensor '%s' [%lld rows] is not a whole number of heads of %lld rows",
              t->file ? t->file : "?", t->name, (long long)rows, (long long)hd);
    if (k == PERM_NONE) { /* any shape: flat chunks */
        for (int64_t o = 0; o < t->numel; o += cap) {
            int64_t n = t->numel - o < cap ? t->numel - o : cap;
            MPQ_CALL(mpq_tensor_read_f32(ctx, t, o, n, buf));
            MPQ_CALL(mpq_outfile_write(ctx, f, buf, (size_t)n * sizeof *buf));
        }
        return MPQ_OK;
    }
    int64_t per = cap / cols;
    for (int64_t r = 0; r < rows; r += per) {
        int64_t nr = rows - r < per ? rows - r : per;
        MPQ_CALL(read_rows(ctx, t, k, hd, r, nr, cols, buf));
        MPQ_CALL(mpq_outfile_write(ctx, f, buf, (size_t)(nr * cols) * sizeof *buf));
    }
    return MPQ_OK;
}

#define CHUNK ((int64_t)1 << 20) /* floats per conversion buffer (4 MiB) */

/* ---- safetensors --------------------------------------------------------------- */

/* 1 when m's family keeps a Llama decoder under the canonical names. */
int mpq_ckpt_llama_layout(const mpq_model *m) {
    const mpq_family_ops *fam = mpq_family_of_model(m);
    return fam && fam->llama_layout;
}

/* The Hugging Face model types a Llama-layout export is written as. A model
 * takes the entry of its own model_type with its biases, else the first
 * entry with those biases (llama; qwen2 with q/k/v biases; llama with
 * attention_bias for q/k/v/o biases). */
static const struct {
    const char *model_type, *architecture;
    int bias;               /* 0 none, 1 q/k/v, 2 q/k/v and o */
    int attention_bias_key; /* config.json names "attention_bias" */
} hf_types[] = {
    {"llama", "LlamaForCausalLM", 0, 1},
    {"mistral", "MistralForCausalLM", 0, 0},
    {"qwen2", "Qwen2ForCausalLM", 1, 0},
    {"llama", "LlamaForCausalLM", 2, 1},
};

#define NHF_TYPES (sizeof hf_types / sizeof hf_types[0])

static size_t hf_type_of(const mpq_arch *a) {
    size_t first = NHF_TYPES;
    for (size_t i = 0; i < NHF_TYPES; i++) {
        if (hf_types[i].bias != (a->o_bias ? 2 : a->qkv_bias ? 1 : 0))
            continue;
        if (strcmp(a->model_type, hf_types[i].model_type) == 0)
            return i;
        if (first == NHF_TYPES)
            first = i;
    }
    return first; /* every bias setting has an entry */
}

cJSON *mpq_ckpt_hf_config(const mpq_arch *a) {
    const size_t t = hf_type_of(a);
    const char *mt = hf_types[t].model_type, *arch = hf_types[t].architecture;
    cJSON *o = cJSON_CreateObject();
    cJSON *as = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(as, cJSON_CreateString(arch));
    cJSON_AddStringToObject(o, "model_type", mt);
    cJSON_AddNumberToObject(o, "hidden_size", (double)a->dim);
    cJSON_AddNumberToObject(o, "intermediate_size", (double)a->hidden_dim);
    cJSON_AddNumberToObject(o, "num_hidden_layers", (double)a->n_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", (double)a->n_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", (double)a->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", (double)a->head_dim);
    cJSON_AddNumberToObject(o, "vocab_size", (double)a->vocab_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", (double)a->seq_len);
    cJSON_AddNumberToObject(o, "rms_norm_eps", a->norm_eps);
    cJSON_AddNumberToObject(o, "rope_theta", a->rope_theta);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", a->tied_embeddings);
    if (hf_types[t].attention_bias_key)
        cJSON_AddBoolToObject(o, "attention_bias", hf_types[t].bias == 2);
    mpq_rope_scaling_json(a, o);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddStringToObject(o, "torch_dtype", "float32");
    return o;
}

/* "<dir of path>/<name>" into buf. */
void mpq_ckpt_sibling(const char *path, const char *name, char *buf, size_t len) {
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(buf, len, "%.*s/%s", (int)(slash - path), path, name);
    else
        snprintf(buf, len, "%s", name);
}

/* Every file the source model was read from, none of which an export may
 * replace: its path, the files it maps, and the config.json and
 * safetensors index of its directory (the path itself, or the file's)
 * when they exist. *list (mpq_malloc, caller frees) points into m and into
 * cfg and idx [4096]. */
mpq_err mpq_ckpt_source_files(mpq_ctx *ctx, const mpq_model *m, char *cfg, char *idx,
                              const char ***list, int64_t *n) {
    const char *path = mpq_model_path(m);
    struct stat st;
    const int dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    const int64_t nf = mpq_model_nfiles(m);
    MPQ_CALL(mpq_malloc(ctx, nf + 3, sizeof **list, (void **)list));
    if (dir) {
        snprintf(cfg, 4096, "%s/config.json", path);
        snprintf(idx, 4096, "%s/model.safetensors.index.json", path);
    } else {
        mpq_ckpt_sibling(path, "config.json", cfg, 4096);
        mpq_ckpt_sibling(path, "model.safetensors.index.json", idx, 4096);
    }
    *n = 0;
    (*list)[(*n)++] = path;
    for (int64_t i = 0; i < nf; i++)
        if (mpq_model_file_at(m, i))
            (*list)[(*n)++] = mpq_model_file_at(m, i);
    if (stat(cfg, &st) == 0)
        (*list)[(*n)++] = cfg;
    if (stat(idx, &st) == 0)
        (*list)[(*n)++] = idx;
    return MPQ_OK;
}

/* The safetensors header of hdr into f: its length (8 bytes, little-endian)
 * and the JSON text, padded with spaces so that the data starts 8-byte
 * aligned. */
mpq_err mpq_ckpt_write_st_header(mpq_ctx *ctx, mpq_outfile *f, const cJSON *hdr, const char *path) {
    mpq_err err = MPQ_OK;
    char *text = cJSON_PrintUnformatted(hdr), *padded = NULL;
    MPQ_ENSURE(text, MPQ_ERR_NOMEM, "cannot format the safetensors header of %s", path);
    const size_t hlen = strlen(text), plen = (hlen + 7) / 8 * 8;
    MPQ_TRY(mpq_malloc(ctx, (int64_t)plen + 1, 1, (void **)&padded));
    memcpy(padded, text, hlen);
    memset(padded + hlen, ' ', plen - hlen);
    unsigned char len8[8];
    for (int k = 0; k < 8; k++)
        len8[k] = (unsigned char)((uint64_t)plen >> (8 * k));
    MPQ_TRY(mpq_outfile_write(ctx, f, len8, sizeof len8));
    MPQ_TRY(mpq_outfile_write(ctx, f, padded, plen));
cleanup:
    mpq_free(padded);
    cJSON_free(text);
    return err;
}

mpq_err mpq_ckpt_write_text_file(mpq_ctx *ctx, const char *path, const char *text, int overwrite,
                                 const char *const *inputs, int64_t n_inputs) {
    mpq_outfile *f = NULL;
    mpq_outfile_opts opts = {overwrite, inputs, n_inputs};
    MPQ_CALL(mpq_outfile_open(ctx, path, &opts, &f));
    mpq_err err = mpq_outfile_write(ctx, f, text, strlen(text));
    if (err != MPQ_OK) {
        mpq_outfile_abort(&f);
        return mpq_err_trace(ctx, err, __FILE__, __LINE__, __func__);
    }
    MPQ_CALL(mpq_outfile_commit(ctx, &f));
    return MPQ_OK;
}

mpq_err mpq_export_safetensors(mpq_ctx *ctx, const mpq_model *m, const char *path, int overwrite,
                               int write_config) {
    mpq_err err = MPQ_OK;
    cJSON *hdr = NULL, *cfg = NULL;
    char *cfg_text = NULL;
    float *buf = NULL;
    mpq_outfile *f = NULL;
    const mpq_arch *a = mpq_model_arch(m);
    const int llama = mpq_ckpt_llama_layout(m);
    const perm_kind perm = llama && a->rope_interleaved ? PERM_TO_HALF : PERM_NONE;
    char cfg_path[4096], src_cfg[4096], src_idx[4096];
    const char **inputs = NULL;
    int64_t ninputs = 0;
    mpq_ckpt_sibling(path, "config.json", cfg_path, sizeof cfg_path);
    /* a model without a config.json (a checkpoint) may be exported into its
     * own directory; no file the source was read from is ever replaced */
    MPQ_CALL(mpq_ckpt_source_files(ctx, m, src_cfg, src_idx, &inputs, &ninputs));
    write_config = write_config && llama;
    /* Fail on a bad config.json destination before the large file. */
    if (write_config) {
        mpq_outfile_opts copts = {overwrite, inputs, ninputs};
        MPQ_TRY(mpq_outfile_check(ctx, cfg_path, &copts));
    }

    hdr = cJSON_CreateObject();
    MPQ_ENSURE(hdr, MPQ_ERR_NOMEM, "cannot allocate the safetensors header");
    cJSON *meta = cJSON_AddObjectToObject(hdr, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    int64_t offset = 0;
    for (int64_t i = 0; i < mpq_model_ntensors(m); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        cJSON *e = cJSON_AddObjectToObject(hdr, t->name);
        MPQ_ENSURE(e, MPQ_ERR_NOMEM, "cannot add tensor '%s' to the safetensors header", t->name);
        cJSON_AddStringToObject(e, "dtype", "F32");
        cJSON *shp = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(shp, cJSON_CreateNumber((double)t->shape[d]));
        int64_t end = 0;
        MPQ_TRY(mpq_add64(ctx, offset, 4 * t->numel, "safetensors data size", &end));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)end));
        offset = end;
    }
    MPQ_ALLOC_TRY(buf, CHUNK);
    mpq_outfile_opts opts = {overwrite, inputs, ninputs};
    MPQ_TRY(mpq_outfile_open(ctx, path, &opts, &f));
    MPQ_TRY(mpq_ckpt_write_st_header(ctx, f, hdr, path));
    for (int64_t i = 0; i < mpq_model_ntensors(m); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        MPQ_TRY(write_tensor_f32(ctx, f, t, mpq_ckpt_is_qk(t->name) ? perm : PERM_NONE, a->head_dim,
                                 buf, CHUNK));
    }
    MPQ_TRY(mpq_outfile_commit(ctx, &f));
    if (write_config) {
        cfg = mpq_ckpt_hf_config(a);
        cfg_text = cfg ? cJSON_Print(cfg) : NULL;
        MPQ_ENSURE(cfg_text, MPQ_ERR_NOMEM, "cannot format %s", cfg_path);
        MPQ_TRY(mpq_ckpt_write_text_file(ctx, cfg_path, cfg_text, overwrite, inputs, ninputs));
    }
cleanup:
    mpq_outfile_abort(&f);
    mpq_free(inputs);
    mpq_free(buf);
    cJSON_free(cfg_text);
    cJSON_Delete(hdr);
    cJSON_Delete(cfg);
    return err;
}

/* ---- llama2.c -------------------------------------------------------------------- */

static mpq_err check_llama2c(mpq_ctx *ctx, const mpq_model *m) {
    const mpq_arch *a = mpq_model_arch(m);
    const char *p = mpq_model_path(m);
    MPQ_CHECK(mpq_ckpt_llama_layout(m), MPQ_ERR_ARG,
              "%s: llama2.c export needs a Llama-family model (this one is '%s')", p,
              a->family[0] ? a->family : "a plain tensor container");
    MPQ_CHECK(!a->qkv_bias, MPQ_ERR_ARG,
              "%s: llama2.c export: the model has q/k/v biases, which llama2.c cannot hold", p);
    MPQ_CHECK(a->rope_scaling == MPQ_ROPE_NONE, MPQ_ERR_ARG,
              "%s: llama2.c export: the model scales RoPE (%s), which llama2.c cannot express", p,
              mpq_rope_scaling_name(a->rope_scaling));
    MPQ_CHECK(a->n_heads * a->head_dim == a->dim, MPQ_ERR_ARG,
              "%s: llama2.c export: head_dim %lld * n_heads %lld != dim %lld (llama2.c derives "
              "head_dim from dim)",
              p, (long long)a->head_dim, (long long)a->n_heads, (long long)a->dim);
    MPQ_CHECK(fabs(a->norm_eps - 1e-5) <= 1e-12, MPQ_ERR_ARG,
              "%s: llama2.c export: norm_eps is %g but llama2.c always uses 1e-5", p, a->norm_eps);
    MPQ_CHECK(a->rope_theta == 10000.0, MPQ_ERR_ARG,
              "%s: llama2.c export: rope_theta is %g but llama2.c always uses 10000", p,
              a->rope_theta);
    const int64_t v[] = {a->dim,        a->hidden_dim, a->n_layers, a->n_heads,
                         a->n_kv_heads, a->vocab_size, a->seq_len};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        MPQ_CHECK(v[i] > 0 && v[i] <= INT32_MAX, MPQ_ERR_RANGE,
                  "%s: llama2.c export: a header value (%lld) does not fit int32", p,
                  (long long)v[i]);
    return MPQ_OK;
}

mpq_err mpq_export_llama2c(mpq_ctx *ctx, const mpq_model *m, const char *path, int overwrite) {
    mpq_err err = MPQ_OK;
    float *buf = NULL;
    mpq_outfile *f = NULL;
    MPQ_CALL(check_llama2c(ctx, m));
    const mpq_arch *a = mpq_model_arch(m);
    const int shared = a->tied_embeddings || !mpq_model_find(m, "lm_head.weight");
    const perm_kind perm = a->rope_interleaved ? PERM_NONE : PERM_TO_INTERLEAVED;
    char src_cfg[4096], src_idx[4096];
    const char **inputs = NULL;
    int64_t ninputs = 0;
    MPQ_CALL(mpq_ckpt_source_files(ctx, m, src_cfg, src_idx, &inputs, &ninputs));
    mpq_outfile_opts opts = {overwrite, inputs, ninputs};
    int64_t rope_n = a->seq_len * (a->head_dim / 2);
    MPQ_ALLOC_TRY(buf, CHUNK > rope_n ? CHUNK : rope_n);
    MPQ_TRY(mpq_outfile_open(ctx, path, &opts, &f));
    int32_t hdr[7] = {(int32_t)a->dim,        (int32_t)a->hidden_dim,
                      (int32_t)a->n_layers,   (int32_t)a->n_heads,
                      (int32_t)a->n_kv_heads, (int32_t)(shared ? a->vocab_size : -a->vocab_size),
                      (int32_t)a->seq_len};
    unsigned char h8[28];
    for (int i = 0; i < 7; i++)
        for (int k = 0; k < 4; k++)
            h8[4 * i + k] = (unsigned char)((uint32_t)hdr[i] >> (8 * k));
    MPQ_TRY(mpq_outfile_write(ctx, f, h8, sizeof h8));

    /* Arrays in file order; "%lld" is the layer. */
    static const char *const order[] = {"model.embed_tokens.weight",
                                        "model.layers.%lld.input_layernorm.weight",
                                        "model.layers.%lld.self_attn.q_proj.weight",
                                        "model.layers.%lld.self_attn.k_proj.weight",
                                        "model.layers.%lld.self_attn.v_proj.weight",
                                        "model.layers.%lld.self_attn.o_proj.weight",
                                        "model.layers.%lld.post_attention_layernorm.weight",
                                        "model.layers.%lld.mlp.gate_proj.weight",
                                        "model.layers.%lld.mlp.down_proj.weight",
                                        "model.layers.%lld.mlp.up_proj.weight",
                                        "model.norm.weight"};
    char name[MPQ_TENSOR_NAME_MAX];
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        int per_layer = strstr(order[k], "%lld") != NULL;
        for (int64_t l = 0; l < (per_layer ? a->n_layers : 1); l++) {
            snprintf(name, sizeof name, order[k], (long long)l);
            const mpq_tensor *t = NULL;
            MPQ_TRY(mpq_model_get(ctx, m, name, 0, NULL, &t));
            MPQ_TRY(write_tensor_f32(ctx, f, t, mpq_ckpt_is_qk(name) ? perm : PERM_NONE,
                                     a->head_dim, buf, CHUNK));
        }
    }
    /* The RoPE tables llama2.c's legacy format carries (run.c skips them):
     * cos and sin of pos * theta^(-2i/head_dim), [seq_len][head_dim/2]. */
    int64_t half = a->head_dim / 2;
    for (int s = 0; s < 2; s++) {
        for (int64_t p = 0; p < a->seq_len; p++)
            for (int64_t i = 0; i < half; i++) {
                double ang = (double)p * pow(a->rope_theta, -2.0 * (double)i / (double)a->head_dim);
                buf[p * half + i] = (float)(s == 0 ? cos(ang) : sin(ang));
            }
        MPQ_TRY(mpq_outfile_write(ctx, f, buf, (size_t)rope_n * sizeof *buf));
    }
    if (!shared) {
        const mpq_tensor *t = NULL;
        MPQ_TRY(mpq_model_get(ctx, m, "lm_head.weight", 0, NULL, &t));
        MPQ_TRY(write_tensor_f32(ctx, f, t, PERM_NONE, a->head_dim, buf, CHUNK));
    }
    MPQ_TRY(mpq_outfile_commit(ctx, &f));
cleanup:
    mpq_outfile_abort(&f);
    mpq_free(inputs);
    mpq_free(buf);
    return err;
}

/* ---- shared with the other exports (ckpt_internal.h) ---------------------------- */

int64_t mpq_ckpt_half_src(int64_t r, int64_t hd) {
    return perm_src(PERM_TO_HALF, r, hd);
}

mpq_err mpq_ckpt_write_f32(mpq_ctx *ctx, mpq_outfile *f, const mpq_tensor *t, int to_half,
                           int64_t hd, float *buf, int64_t cap) {
    MPQ_CALL(write_tensor_f32(ctx, f, t, to_half ? PERM_TO_HALF : PERM_NONE, hd, buf, cap));
    return MPQ_OK;
}

/* ---- the registry ------------------------------------------------------------- */

static mpq_err write_safetensors(mpq_ctx *ctx, const mpq_model *m, const char *path,
                                 const mpq_export_opts *o) {
    MPQ_CALL(mpq_export_safetensors(ctx, m, path, o->overwrite, o->write_config));
    return MPQ_OK;
}

static mpq_err write_llama2c(mpq_ctx *ctx, const mpq_model *m, const char *path,
                             const mpq_export_opts *o) {
    MPQ_CALL(mpq_export_llama2c(ctx, m, path, o->overwrite));
    return MPQ_OK;
}

static const mpq_export_format export_safetensors = {
    .name = "safetensors",
    .summary = "F32 safetensors, with a Hugging Face config.json beside it for Llama models",
    .write = write_safetensors,
};

static const mpq_export_format export_llama2c = {
    .name = "llama2c",
    .summary = "llama2.c legacy checkpoint (run.c format; Llama models only)",
    .write = write_llama2c,
};

const mpq_export_format *const mpq_export_formats[] = {&export_safetensors, &export_llama2c,
                                                       &mpq_export_gguf,    &mpq_export_gptq,
                                                       &mpq_export_gptq_v2, NULL};

static const char *export_name_at(int64_t i) {
    return mpq_export_formats[i] ? mpq_export_formats[i]->name : NULL;
}

const mpq_registry mpq_export_format_reg = {.what = "export format", .name_at = export_name_at};

const mpq_export_format *mpq_export_format_find(const char *name) {
    int64_t i = mpq_registry_index(&mpq_export_format_reg, name);
    return i < 0 ? NULL : mpq_export_formats[i];
}
