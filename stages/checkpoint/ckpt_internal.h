/* ckpt_internal.h: what the checkpoint sources of stages/ckpt/ share. */
#ifndef MPQ_CKPT_INTERNAL_H
#define MPQ_CKPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_ckpt.h"
#include "mpq_ctx.h"
#include "mpq_model.h"
#include "mpq_quant.h"

/* A fixed-length, NUL-padded HDF5 string type of len bytes (at least 1).
 * Owner: caller (H5Tclose). Local. */
mpq_err mpq_ckpt_h5_strtype(mpq_ctx *ctx, size_t len, int64_t *type);

/* The self-description of one quantized layer, stored as attributes of
 * /layers/<name> so that a reader needs no mpquant source (README.md,
 * "Reading a checkpoint without mpquant"). Everything but the level table
 * follows from the spec and the shape alone; plain data (broadcast as
 * bytes by the writer). */
typedef struct mpq_ckpt_layout {
    char packing[8];         /* "bits" (code_bits per code, LSB first) or "base3" */
    char scale_format[8];    /* "fp16", "fp32", "e8m0" or "e4m3" */
    int64_t group_cols;      /* columns per group (cols for tensor and channel) */
    int64_t groups_per_row;  /* 0 for tensor, 1 for channel */
    int64_t n_groups;        /* scales stored: g = r * groups_per_row + c / group_cols */
    char params_layout[256]; /* the sections of the params blob, in order */
    char dequant[96];        /* the formula of one weight */
    int32_t level_rows;      /* 2 for a per-channel sign (signed_binary), else 1 */
    int32_t ncodes;          /* 2^code_bits: entries per row of the level table */
} mpq_ckpt_layout;

/* Fills *out for spec and a [rows][cols] layer. Fails on a bad shape or a
 * layout that does not fit its buffers. Local. */
mpq_err mpq_ckpt_describe(mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                          mpq_ckpt_layout *out);

/* The level table of p as the `levels` attribute stores it: lev [level_rows]
 * [ncodes] float32, row 1 the table of channels with sign -1 (NaN: unused
 * code). Local. */
void mpq_ckpt_levels(const mpq_qparams *p, const mpq_ckpt_layout *lay, float *lev);

/* CRC-32 (zlib's, the polynomial of gzip and PNG) of buf [n bytes]: the
 * `codes_crc32`, `params_crc32` and `crc32` attributes. Local. */
uint32_t mpq_ckpt_crc32(const void *buf, int64_t n);

/* Local. buf [n], just read from dataset dset of file path, against the
 * CRC-32 `want` that attribute attr records (-1: none, not checked); a
 * mismatch names the file, the dataset, the attribute and what (the
 * "codes", ...) is damaged. */
mpq_err mpq_ckpt_check_crc(mpq_ctx *ctx, const char *path, const char *dset, const char *attr,
                           int64_t want, const void *buf, int64_t n, const char *what);

/* Local. The `levels` attribute of layer e of ck, where present, equals
 * the level table of the parameters p read from it. */
mpq_err mpq_ckpt_check_levels(mpq_ctx *ctx, const mpq_ckpt *ck, const mpq_ckpt_entry *e,
                              const mpq_qparams *p);

/* ---- entropy-coded codes (ckpt_coding.c; all local) ---- */

/* The `codes_coding` attribute of a layer (absent: fixed). */
enum {
    MPQ_CKPT_CODING_FIXED, /* codes: the packed stream (mpq_quant_pack) */
    MPQ_CKPT_CODING_ZSTD,  /* codes: one zstd frame of the codes in byte-aligned fields */
    MPQ_CKPT_CODING_COUNT
};
/* Name of a coding ("?" when out of range); coding of a name, -1 when unknown. */
const char *mpq_ckpt_coding_name(int coding);
int mpq_ckpt_coding_find(const char *name);
/* Bits of a code's field in a zstd frame: the smallest of 1, 2, 4, 8 that
 * holds a code (8 / field codes per byte, LSB first). */
int mpq_ckpt_field_bits(const mpq_qspec *spec);
/* Bytes a stream of coding decodes to for a [rows][cols] layer of spec. */
int64_t mpq_ckpt_decoded_bytes(int coding, const mpq_qspec *spec, int64_t rows, int64_t cols);
/* The smallest stored form of l's codes: *coding, and *buf [*len] (caller:
 * mpq_free; NULL for fixed, whose bytes are l->packed). */
mpq_err mpq_ckpt_encode_codes(mpq_ctx *ctx, const mpq_qlayer *l, int *coding, uint8_t **buf,
                              int64_t *len);
/* The stored length of e's coded codes can hold what the layer needs;
 * errors name path and group where. */
mpq_err mpq_ckpt_check_coded_len(mpq_ctx *ctx, const char *path, const char *where,
                                 const mpq_ckpt_entry *e);
/* src [n] starts with a zstd frame header declaring want decoded bytes;
 * errors name path and dataset dset. */
mpq_err mpq_ckpt_check_frame(mpq_ctx *ctx, const char *path, const char *dset, const uint8_t *src,
                             int64_t n, int64_t want);
/* Decodes the stored stream src [n] of coding (a zstd one) into l->codes
 * and l->packed (l made for the layer's spec and shape). A damaged stream
 * (not one whole frame, a wrong decoded length, bytes after the frame, a
 * code out of range) is an error naming path, dset and the offset or
 * zstd's reason. */
mpq_err mpq_ckpt_decode_codes(mpq_ctx *ctx, const char *path, const char *dset, int coding,
                              const uint8_t *src, int64_t n, mpq_qlayer *l);

/* ---- what the exports share (ckpt_export.c; all local) ---- */

struct cJSON;
struct mpq_outfile;

/* The Hugging Face config.json object of a Llama-layout model a.
 * Owner: caller (cJSON_Delete); NULL when out of memory. */
struct cJSON *mpq_ckpt_hf_config(const mpq_arch *a);
/* "<directory of path>/<name>" into buf [len]. */
void mpq_ckpt_sibling(const char *path, const char *name, char *buf, size_t len);
/* Every file model m was read from (its path, mapped files, and the
 * config.json and safetensors index of its directory when they exist),
 * none of which an export may replace. *list (caller: mpq_free) points
 * into m and into cfg and idx [4096 each]. */
mpq_err mpq_ckpt_source_files(mpq_ctx *ctx, const mpq_model *m, char *cfg, char *idx,
                              const char ***list, int64_t *n);
/* Writes text to path atomically (never replacing one of inputs [n]). */
/* The safetensors header of hdr (length, JSON padded to 8 bytes) into f;
 * errors name path. */
mpq_err mpq_ckpt_write_st_header(mpq_ctx *ctx, struct mpq_outfile *f, const struct cJSON *hdr,
                                 const char *path);
mpq_err mpq_ckpt_write_text_file(mpq_ctx *ctx, const char *path, const char *text, int overwrite,
                                 const char *const *inputs, int64_t n);
/* 1 when m's family keeps a Llama decoder under the canonical names. */
int mpq_ckpt_llama_layout(const mpq_model *m);
/* 1 when tensor `name` is a q or k projection (weight or bias). */
int mpq_ckpt_is_qk(const char *name);
/* The source row of destination row r when interleaved RoPE rows (llama2.c)
 * are put in rotate-half order, in heads of hd rows. */
int64_t mpq_ckpt_half_src(int64_t r, int64_t hd);
/* Streams tensor t as F32 into f, its rows in rotate-half order when
 * to_half (t then has a whole number of heads of hd rows); buf [cap]. */
mpq_err mpq_ckpt_write_f32(mpq_ctx *ctx, struct mpq_outfile *f, const mpq_tensor *t, int to_half,
                           int64_t hd, float *buf, int64_t cap);

#endif
