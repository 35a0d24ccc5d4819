/* io_gguf_internal.h: the ggml tensor types a GGUF file may hold, shared by
 * the GGUF reader (io_gguf.c) and its block dequantizers
 * (io_gguf_dequant.c). Everything here is local and reentrant.
 */
#ifndef MPQ_IO_GGUF_INTERNAL_H
#define MPQ_IO_GGUF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_model.h"

/* Traits of one ggml type (ggml_type in ggml.h; GGML_QUANT_SIZES in
 * gguf-py). A tensor row of ne0 elements is ne0 / block blocks of `bytes`
 * bytes each. */
typedef struct mpq_gguf_type {
    const char *name; /* "Q4_K"; NULL for ids ggml does not define */
    int64_t block;    /* elements per block */
    int64_t bytes;    /* bytes per block */
    int keep;         /* 1: kept as the mpq dtype `dtype` (F32, F16, BF16) */
    mpq_dtype dtype;
    /* Dequantizes one block into `block` floats, computed in float as
     * ggml's reference dequantize_row_* does; NULL: not supported. */
    void (*dequant)(const unsigned char *blk, float *out);
} mpq_gguf_type;

/* The traits of ggml type id `type`, NULL when the id is unknown. */
const mpq_gguf_type *mpq_gguf_type_get(uint32_t type);

#endif
