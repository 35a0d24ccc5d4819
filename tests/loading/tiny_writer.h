/* tiny_writer.h: test-side writers of small model files: random Llama
 * weights written as llama2.c checkpoints (legacy and version 1 export) and
 * as Hugging Face safetensors models (single file or sharded with an index,
 * F32/F16/BF16, plus config.json), a generic safetensors writer and raw
 * helpers for crafting corrupted files.
 *
 * These are independent of the readers under test: they write the formats
 * from their specifications with stdio and cJSON. Functions return 0 on
 * success and -1 (with a message on stderr) on failure.
 */
#ifndef TINY_WRITER_H
#define TINY_WRITER_H

#include <stddef.h>
#include <stdint.h>

/* A random Llama network in llama2.c's layout (interleaved RoPE pairs).
 * Matrices are [out][in] row-major; per-layer arrays are stacked [layer].
 * With hd = tw_llama_head_dim(m): q_dim = heads * hd, kv_dim = kv_heads * hd.
 * The fields after norm_eps are Hugging Face features llama2.c cannot store
 * (tw_write_llama2c refuses them); all default to 0/NULL: as before. */
typedef struct tw_llama {
    int64_t dim, hidden, layers, heads, kv_heads, vocab, seq_len;
    int tied;          /* classifier shares the embedding */
    int qkv_bias;      /* q/k/v biases (HF Qwen2 only; llama2.c cannot store them) */
    double rope_theta; /* config.json rope_theta (0: 10000, llama2.c's fixed value) */
    double norm_eps;   /* config.json rms_norm_eps (0: 1e-5, llama2.c's fixed value) */
    int64_t head_dim;  /* config.json head_dim when nonzero (0: dim / heads, not written) */
    int attn_bias;     /* Llama's "attention_bias": true: q/k/v biases and an o_proj bias */
    int mlp_bias;      /* writes "mlp_bias": true into config.json (no tensors) */
    /* config.json "rope_scaling": {"rope_type": rope_type, "factor": rope_factor,
     * "low_freq_factor": rope_low_freq, "high_freq_factor": rope_high_freq,
     * "original_max_position_embeddings": rope_orig_max}; no key when rope_type
     * is NULL, and each number only when nonzero (so tests can leave one out).
     * Any type string is written as given. */
    const char *rope_type;
    double rope_factor, rope_low_freq, rope_high_freq;
    int64_t rope_orig_max;
    float *embed;      /* [vocab][dim] */
    float *attn_norm;  /* [layers][dim] */
    float *wq;         /* [layers][q_dim][dim] */
    float *wk, *wv;    /* [layers][kv_dim][dim] */
    float *wo;         /* [layers][dim][q_dim] */
    float *ffn_norm;   /* [layers][dim] */
    float *w1, *w3;    /* [layers][hidden][dim] (gate, up) */
    float *w2;         /* [layers][dim][hidden] (down) */
    float *final_norm; /* [dim] */
    float *cls;        /* [vocab][dim], NULL when tied */
    float *bq;         /* [layers][q_dim] when qkv_bias or attn_bias */
    float *bk, *bv;    /* [layers][kv_dim] when qkv_bias or attn_bias */
    float *bo;         /* [layers][dim] when attn_bias */
} tw_llama;

/* The head dimension: m->head_dim, or dim / heads when that is 0. */
int64_t tw_llama_head_dim(const tw_llama *m);

/* Allocates and fills the weights from a deterministic generator: matrices
 * uniform in +-1/sqrt(in), norm weights in [0.5, 1.5]. */
int tw_llama_random(tw_llama *m, uint64_t seed);
void tw_llama_free(tw_llama *m);

/* version 0: legacy (7 int32 header, RoPE tables, negative vocab_size when
 * the classifier is separate); version 1: the "ak42" 256-byte header export.
 * Fails for head_dim != dim / heads, attn_bias, mlp_bias or a rope_type
 * (llama2.c cannot store them); q/k/v biases of qkv_bias are left out. */
int tw_write_llama2c(const char *path, const tw_llama *m, int version);

/* Rows of a q or k projection [heads * head_dim][cols] reordered from
 * llama2.c's interleaved pairs to Hugging Face's halves: within each head,
 * HF row j * head_dim/2 + i is llama2.c row 2 i + j. */
void tw_permute_to_hf(const float *src, float *dst, int64_t heads, int64_t head_dim, int64_t cols);

/* The Hugging Face directory dir (created if needed): config.json
 * (model_type, e.g. "llama", "mistral" or "qwen2"; the keys of the fields
 * above), and model.safetensors (nshards <= 1)
 * or nshards files model-0000k-of-0000n.safetensors with
 * model.safetensors.index.json. dtype: "F32", "F16" or "BF16". */
int tw_write_hf(const char *dir, const tw_llama *m, const char *model_type, const char *dtype,
                int nshards);

/* Round-to-nearest-even conversions computed with frexp/rint in double
 * (a reference independent of the library's bit manipulation). */
uint16_t tw_f32_to_f16(float x);
uint16_t tw_f32_to_bf16(float x);

/* One tensor for the generic writer: fp32 values stored as `dtype`. */
typedef struct tw_tensor {
    char name[160];
    const char *dtype; /* "F32", "F16", "BF16" */
    int ndim;
    int64_t shape[4];
    const float *data;
} tw_tensor;

/* Fills t as an F32 tensor named name (truncated to fit) of ndim
 * dimensions shape[0..ndim) taken from s0..s3. */
void tw_f32(tw_tensor *t, const char *name, const float *data, int ndim, int64_t s0, int64_t s1,
            int64_t s2, int64_t s3);

/* A safetensors file of n tensors, data in the given order, header padded
 * with spaces to a multiple of 8 bytes. */
int tw_write_safetensors(const char *path, const tw_tensor *t, int n);

/* A safetensors file from a literal JSON header followed by data_bytes
 * bytes of data (value = offset & 0xff): for corrupted headers. */
int tw_write_st_header(const char *path, const char *json, size_t data_bytes);

/* Writes n bytes; appends when `append`. */
int tw_write_bytes(const char *path, const void *p, size_t n, int append);
/* Writes a text file. */
int tw_write_text(const char *path, const char *text);
/* Copies the first n bytes of src to dst (n = -1: all). */
int tw_copy_prefix(const char *src, const char *dst, long n);

/* A fresh temporary directory (mkdtemp) under $TMPDIR or /tmp; path in buf. */
int tw_tempdir(char *buf, size_t len);
/* Removes a directory tree created by the tests (rm -rf semantics). */
void tw_rmtree(const char *path);

#endif
