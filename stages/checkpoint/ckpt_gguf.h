/* ckpt_gguf.h: what the GGUF export's two sources share (ckpt_gguf.c writes
 * the file, ckpt_gguf_quant.c encodes quantized layers as ggml blocks). */
#ifndef MPQ_CKPT_GGUF_H
#define MPQ_CKPT_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_ctx.h"
#include "mpq_quant.h"
#include "mpq_tokenizer.h"

/* ggml tensor types written by the export (ggml.h numbering). */
enum {
    MPQ_GGML_F32 = 0,
    MPQ_GGML_F16 = 1,
    MPQ_GGML_Q4_0 = 2,
    MPQ_GGML_Q4_1 = 3,
    MPQ_GGML_Q5_0 = 6,
    MPQ_GGML_Q5_1 = 7,
    MPQ_GGML_Q8_0 = 8,
    MPQ_GGML_Q4_K = 12,
    MPQ_GGML_Q5_K = 13,
    MPQ_GGML_Q6_K = 14,
    MPQ_GGML_BF16 = 30,
};

#define MPQ_GGML_QK  32  /* weights per block of the 32-weight types */
#define MPQ_GGML_QKK 256 /* weights per block of the K-quants (Q4_K, Q5_K, Q6_K) */

/* The block type that holds a layer of spec with rows of `cols` weights
 * (int, fp16 or fp32 scales; group 32: sym bits 4/5/8 or asym bits 4/5,
 * cols a multiple of 32; group 16: sym bits 6, cols a multiple of 256), or
 * MPQ_GGML_F32 with *why set to the reason it cannot be held. kquants
 * (--kquants): int4 / int5 in groups of 32 with cols a multiple of 256 take
 * Q4_K / Q5_K instead of Q4_0/Q4_1 / Q5_0/Q5_1. */
int mpq_gguf_block_type(const mpq_qspec *spec, int64_t cols, int kquants, const char **why);
/* Bytes and weights of one block of type t (0 for F32). */
size_t mpq_gguf_block_bytes(int t);
int64_t mpq_gguf_block_weights(int t);
/* When type t re-expresses the layer's scales (Q6_K: 8-bit sub-scales under
 * an fp16 scale; Q4_K, Q5_K: 6-bit sub-scales and mins under fp16 d and
 * dmin), so that exactness is the exception: the reason a layer is written
 * F32 without --lossy (static text). NULL for the other types. */
const char *mpq_gguf_block_converts(int t);
/* "F32", "F16", "BF16", "Q4_0", ... */
const char *mpq_gguf_type_name(int t);

/* How the blocks of one layer compare with mpquant's own dequantized values. */
typedef struct mpq_gguf_qstat {
    int64_t n;          /* weights compared */
    int64_t mismatches; /* weights whose ggml value differs (bits) from mpquant's */
    int64_t bad_scales; /* groups whose scale is not an fp16 value (d would round) */
    int64_t first_bad;  /* first differing weight (row-major in the source), -1 if none */
    double max_abs;     /* largest |ggml value - mpquant value| */
    double sum_sq;      /* sum of squared differences */
} mpq_gguf_qstat;

/* Encodes layer l as blocks of type t (from mpq_gguf_block_type) into
 * out [rows][cols / mpq_gguf_block_weights blocks]: destination row r holds source row
 * rowmap[r] (rowmap NULL: the identity). Fills *st. Local. */
mpq_err mpq_gguf_encode(mpq_ctx *ctx, const mpq_qlayer *l, int t, const int64_t *rowmap,
                        uint8_t *out, mpq_gguf_qstat *st);

/* SentencePiece token types as llama.cpp numbers them. */
enum {
    MPQ_GGUF_TT_NORMAL = 1,
    MPQ_GGUF_TT_UNKNOWN = 2,
    MPQ_GGUF_TT_CONTROL = 3,
    MPQ_GGUF_TT_USER = 4,
    MPQ_GGUF_TT_UNUSED = 5,
    MPQ_GGUF_TT_BYTE = 6,
};

/* ---- the metadata writer (ckpt_gguf_kv.c) ------------------------------------------ */

enum { /* GGUF metadata value types */
       MPQ_GV_U8 = 0,
       MPQ_GV_U32 = 4,
       MPQ_GV_I32 = 5,
       MPQ_GV_F32 = 6,
       MPQ_GV_BOOL = 7,
       MPQ_GV_STR = 8,
       MPQ_GV_ARR = 9,
       MPQ_GV_U64 = 10
};

/* Appends never fail individually: the first error sticks in err and later
 * appends do nothing; check err once at the end. */
typedef struct mpq_gguf_buf {
    mpq_ctx *ctx;
    uint8_t *p;
    int64_t n, cap;
    int64_t nkv; /* KV pairs started */
    mpq_err err;
} mpq_gguf_buf;

void mpq_gguf_put(mpq_gguf_buf *b, const void *data, size_t len);
void mpq_gguf_uint(mpq_gguf_buf *b, uint64_t v, int bytes); /* the low `bytes` bytes of v */
void mpq_gguf_f32(mpq_gguf_buf *b, float v);
void mpq_gguf_str(mpq_gguf_buf *b, const char *s, size_t len); /* u64 length + bytes */
/* A KV pair: its key and type; the value follows (the helpers below write
 * both). An array's elements follow mpq_gguf_kv_array. */
void mpq_gguf_kv_head(mpq_gguf_buf *b, const char *key, int type);
void mpq_gguf_kv_u32(mpq_gguf_buf *b, const char *key, int64_t v);
void mpq_gguf_kv_f32(mpq_gguf_buf *b, const char *key, double v);
void mpq_gguf_kv_bool(mpq_gguf_buf *b, const char *key, int v);
void mpq_gguf_kv_str(mpq_gguf_buf *b, const char *key, const char *s);
void mpq_gguf_kv_array(mpq_gguf_buf *b, const char *key, int elem_type, int64_t count);

/* Local (ckpt_gguf_vocab.c). The tokenizer.ggml.* pairs of tokenizer tk
 * (loaded from path) for a model of `vocab` ids: a SentencePiece-style
 * vocabulary (llama2.c, or a Hugging Face BPE without byte-level mapping) as
 * "llama", a byte-level BPE as "gpt2" with its merges and the name of the
 * llama.cpp pre-tokenizer that splits text the same way (refused, naming the
 * pre-tokenizer, when none does). */
mpq_err mpq_gguf_tokenizer_kv(mpq_ctx *ctx, mpq_gguf_buf *b, const mpq_tokenizer *tk,
                              const char *path, int64_t vocab);

#endif
