/* mpq_model.h: a model checkpoint opened read-only: named tensors over
 * memory-mapped files, plus the architecture read from the checkpoint.
 *
 * Every format reader (llama2.c legacy and versioned export, safetensors
 * single-file or sharded with model.safetensors.index.json + config.json)
 * produces the same thing: tensors under canonical names and an mpq_arch.
 * Canonical names for the Llama family follow Hugging Face:
 *   model.embed_tokens.weight                 [vocab][dim]
 *   model.layers.{i}.input_layernorm.weight   [dim]
 *   model.layers.{i}.self_attn.q_proj.weight  [n_heads*head_dim][dim]   (.bias for Qwen2)
 *   model.layers.{i}.self_attn.k_proj.weight  [kv_dim][dim]             (.bias)
 *   model.layers.{i}.self_attn.v_proj.weight  [kv_dim][dim]             (.bias)
 *   model.layers.{i}.self_attn.o_proj.weight  [dim][n_heads*head_dim]
 *   model.layers.{i}.post_attention_layernorm.weight [dim]
 *   model.layers.{i}.mlp.gate_proj.weight     [hidden][dim]   (llama2.c w1)
 *   model.layers.{i}.mlp.up_proj.weight       [hidden][dim]   (llama2.c w3)
 *   model.layers.{i}.mlp.down_proj.weight     [dim][hidden]   (llama2.c w2)
 *   model.norm.weight                         [dim]
 *   lm_head.weight                            [vocab][dim]    (absent when tied)
 * Other families (the sequential CNN) keep the checkpoint's own names.
 * Matrices are [out][in] row-major. Weights are never copied at open time.
 */
#ifndef MPQ_MODEL_H
#define MPQ_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_err.h"

struct mpq_ctx;
struct cJSON;

typedef enum mpq_dtype {
    MPQ_DTYPE_F32 = 0,
    MPQ_DTYPE_F16,
    MPQ_DTYPE_BF16,
    MPQ_DTYPE_COUNT
} mpq_dtype;

const char *mpq_dtype_name(mpq_dtype t); /* "F32", "F16", "BF16" */
size_t mpq_dtype_size(mpq_dtype t);      /* bytes per element */

#define MPQ_TENSOR_NAME_MAX 160
#define MPQ_TENSOR_MAXDIM   4

typedef struct mpq_tensor {
    char name[MPQ_TENSOR_NAME_MAX]; /* canonical name */
    mpq_dtype dtype;
    int ndim;
    int64_t shape[MPQ_TENSOR_MAXDIM];
    int64_t numel;
    const void *data; /* inside a read-only mapping owned by the model */
    size_t nbytes;
    const char *file; /* the file it lives in (for messages); owned by the model */
} mpq_tensor;

/* Architecture hyper-parameters. Fields a family does not use are 0. */
typedef struct mpq_arch {
    char family[16];    /* "llama" or "cnn" */
    char format[16];    /* "llama2c", "llama2c-v1", "safetensors" */
    int64_t dim;        /* hidden size */
    int64_t hidden_dim; /* MLP intermediate size */
    int64_t n_layers;
    int64_t n_heads;
    int64_t n_kv_heads;
    int64_t head_dim; /* dim / n_heads unless the config says otherwise */
    int64_t vocab_size;
    int64_t seq_len;     /* maximum context */
    double norm_eps;     /* RMSNorm epsilon (llama2.c: 1e-5) */
    double rope_theta;   /* 10000 for llama2.c */
    int tied_embeddings; /* output head shares model.embed_tokens.weight */
    int qkv_bias;        /* q/k/v projections have biases (Qwen2, Llama attention_bias) */
    int o_bias;          /* o_proj has a bias too (Llama attention_bias) */
    /* RoPE frequency scaling (config.json rope_scaling, mpq_rope_inv_freq) */
    int rope_scaling;      /* MPQ_ROPE_NONE, _LINEAR, _LLAMA3 or _DYNAMIC */
    double rope_factor;    /* linear, llama3 and dynamic: factor */
    double rope_low_freq;  /* llama3: low_freq_factor */
    double rope_high_freq; /* llama3: high_freq_factor */
    int64_t rope_orig_max; /* llama3: original_max_position_embeddings */
    int rope_interleaved;  /* 1: rotate pairs (2i, 2i+1) as llama2.c does;
                              0: rotate halves (i, i + head_dim/2) as Hugging Face does */
    char model_type[16];   /* for display: config.json's model_type ("llama", "mistral",
                              "qwen2"), "llama2.c" for llama2.c files, "" when unknown */
} mpq_arch;

enum { MPQ_ROPE_NONE = 0, MPQ_ROPE_LINEAR = 1, MPQ_ROPE_LLAMA3 = 2, MPQ_ROPE_DYNAMIC = 3 };

/* Local. The rotary frequency of pair i (0 <= i < head_dim / 2) of a:
 * theta^(-2i / head_dim), divided by rope_factor for linear scaling; for
 * llama3 scaling, with wavelength w = 2 pi / f, unchanged when w is below
 * rope_orig_max / rope_high_freq, divided by rope_factor above
 * rope_orig_max / rope_low_freq, and in between the mix (1 - s) f / factor
 * + s f with s = (rope_orig_max / w - low) / (high - low). Dynamic (NTK)
 * scaling changes the frequencies only for sequences longer than seq_len,
 * which the Llama family refuses: unchanged. */
double mpq_rope_inv_freq(const mpq_arch *a, int64_t i);
/* Local. "none", "linear", "llama3" or "dynamic"; and the kind of such a
 * name, -1 for any other. */
const char *mpq_rope_scaling_name(int kind);
int mpq_rope_scaling_find(const char *name);
/* Local. Adds config.json's "rope_scaling" object (rope_type, factor, and
 * llama3's parameters) to obj when a scales RoPE; nothing otherwise. */
void mpq_rope_scaling_json(const mpq_arch *a, struct cJSON *obj);

typedef struct mpq_model mpq_model;

/* Local (each rank opens and maps the files itself; read-only, shared pages).
 * `format` is "auto", "llama2c" or "safetensors"; `path` a file, or a
 * directory with model.safetensors(.index.json) and config.json. Validates
 * everything it reads: an error names the file, the tensor and the problem.
 * Owner: caller (mpq_model_close). */
mpq_err mpq_model_open(struct mpq_ctx *ctx, const char *path, const char *format, mpq_model **out);
/* NULL-safe; sets *m to NULL. Unmaps the files. */
void mpq_model_close(mpq_model **m);

const mpq_arch *mpq_model_arch(const mpq_model *m);
/* The source path given to mpq_model_open. */
const char *mpq_model_path(const mpq_model *m);
/* The files the model's tensors are mapped from (shards; not anonymous
 * buffers): i in [0, mpq_model_nfiles), NULL outside. */
int64_t mpq_model_nfiles(const mpq_model *m);
const char *mpq_model_file_at(const mpq_model *m, int64_t i);
int64_t mpq_model_ntensors(const mpq_model *m);
const mpq_tensor *mpq_model_tensor_at(const mpq_model *m, int64_t i);
/* NULL when absent. */
const mpq_tensor *mpq_model_find(const mpq_model *m, const char *name);
/* A tensor of the file the model cannot compute with (a safetensors dtype
 * other than F32, F16 and BF16, e.g. the I64 num_batches_tracked of every
 * PyTorch batch norm): kept aside, not among the tensors above, so that a
 * model which never asks for it opens; mpq_model_get of its name is an
 * error naming the file, the tensor and the dtype. */
typedef struct mpq_foreign_tensor {
    char name[MPQ_TENSOR_NAME_MAX];
    char dtype[16]; /* as the file spells it: "I64", "U8", ... */
    int ndim;
    int64_t shape[MPQ_TENSOR_MAXDIM];
    const char *file; /* owned by the model */
} mpq_foreign_tensor;
/* i in [0, mpq_model_nforeign); NULL outside. */
int64_t mpq_model_nforeign(const mpq_model *m);
const mpq_foreign_tensor *mpq_model_foreign_at(const mpq_model *m, int64_t i);
/* Like find, but an absent tensor, or one whose shape differs from the
 * expected one (ndim entries of `shape`; pass ndim 0 to skip the check), is
 * an error naming the model file and the tensor. */
mpq_err mpq_model_get(struct mpq_ctx *ctx, const mpq_model *m, const char *name, int ndim,
                      const int64_t *shape, const mpq_tensor **out);

/* Converts n elements starting at element `first` of t to fp32 into dst. */
mpq_err mpq_tensor_read_f32(struct mpq_ctx *ctx, const mpq_tensor *t, int64_t first, int64_t n,
                            float *dst);

/* Local. *out = tensor t of model m as fp32: the mapping itself when t is
 * aligned F32, else one converted copy owned by the model and shared by
 * every caller (both family instances of a run use one copy); valid until
 * mpq_model_close. */
mpq_err mpq_model_f32(struct mpq_ctx *ctx, const mpq_model *m, const mpq_tensor *t,
                      const float **out);

/* Local. Drops the resident pages of t's bytes when t lives in a mapped
 * file (never in a buffer the model filled): a later read faults them in
 * again from the page cache or the file. Use it after converting a tensor,
 * so that a model's pages do not stay in a rank's memory. */
void mpq_model_release_tensor(const mpq_model *m, const mpq_tensor *t);

/* fp16 / bf16 <-> fp32 conversions (round to nearest even). */
float mpq_f16_to_f32(uint16_t h);
uint16_t mpq_f32_to_f16(float f);
float mpq_bf16_to_f32(uint16_t h);
uint16_t mpq_f32_to_bf16(float f);

#endif
