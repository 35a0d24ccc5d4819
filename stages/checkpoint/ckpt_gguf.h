/* ckpt_gguf.h: what the GGUF export's two sources share (ckpt_gguf.c writes
 * the file, ckpt_gguf_quant.c encodes quantized layers as ggml blocks). */
#ifndef MPQ_CKPT_GGUF_H
#define MPQ_CKPT_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_ctx.h"
#include "mpq_quant.h"

/* ggml tensor types written by the export (ggml.h numbering). */
enum {
    MPQ_GGML_F32 = 0,
    MPQ_GGML_Q4_0 = 2,
    MPQ_GGML_Q4_1 = 3,
    MPQ_GGML_Q5_0 = 6,
    MPQ_GGML_Q5_1 = 7,
    MPQ_GGML_Q8_0 = 8,
    MPQ_GGML_Q6_K = 14,
};

#define MPQ_GGML_QK  32  /* weights per block of the 32-weight types */
#define MPQ_GGML_QKK 256 /* weights per block of the K-quants (Q6_K) */

/* The block type that holds a layer of spec with rows of `cols` weights
 * (int, fp16 or fp32 scales; group 32: sym bits 4/5/8 or asym bits 4/5,
 * cols a multiple of 32; group 16: sym bits 6, cols a multiple of 256), or
 * MPQ_GGML_F32 with *why set to the reason it cannot be held. */
int mpq_gguf_block_type(const mpq_qspec *spec, int64_t cols, const char **why);
/* Bytes and weights of one block of type t (0 for F32). */
size_t mpq_gguf_block_bytes(int t);
int64_t mpq_gguf_block_weights(int t);
/* 1 when type t re-expresses the layer's scales (Q6_K: 8-bit sub-scales
 * under an fp16 scale), so that exactness is the exception. */
int mpq_gguf_block_converts(int t);
/* "F32", "Q4_0", ... */
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

/* Local (ckpt_gguf_vocab.c). Types the added tokens of the Hugging Face
 * tokenizer at `tokenizer` (a directory holding tokenizer.json, or the
 * file): those whose types[id] is still MPQ_GGUF_TT_NORMAL become control
 * (special) or user-defined tokens; ids outside [0, vocab) are ignored. */
mpq_err mpq_gguf_added_types(mpq_ctx *ctx, const char *tokenizer, int64_t vocab, int32_t *types);

#endif
