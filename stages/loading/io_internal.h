/* io_internal.h: what the model-format readers of stages/models/ share and
 * nothing outside that folder needs: the layout of mpq_model, read-only file
 * mappings, and the registry entry of one checkpoint format.
 *
 * A reader maps its files through mpq_io_map (the model owns the mappings),
 * appends tensors with mpq_io_add_tensor and fills m->arch. mpq_model_open
 * then checks that tensor names are unique. Everything here is local.
 */
#ifndef MPQ_IO_INTERNAL_H
#define MPQ_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_ctx.h"
#include "mpq_model.h"

/* One read-only, private mapping of a whole file. */
typedef struct mpq_io_map {
    char *path;                /* as opened (for messages) */
    const unsigned char *base; /* PROT_READ, MAP_PRIVATE */
    size_t size;               /* bytes */
} mpq_io_map;

struct mpq_model {
    char *path; /* as given to mpq_model_open */
    mpq_arch arch;
    int64_t nmaps, cap_maps;
    mpq_io_map **maps; /* [cap_maps], the first nmaps used; each allocated alone so that
                          pointers to a mapping stay valid while more are added */
    int64_t ntensors, cap_tensors;
    mpq_tensor *tensors; /* [cap_tensors], the first ntensors used */
};

/* Maps `path` read-only into m and returns the mapping (owned by m). An
 * empty, missing or unreadable file is an error naming the path. */
mpq_err mpq_io_map_file(mpq_ctx *ctx, mpq_model *m, const char *path, const mpq_io_map **out);

/* Appends a copy of t (its name must fit MPQ_TENSOR_NAME_MAX). */
mpq_err mpq_io_add_tensor(mpq_ctx *ctx, mpq_model *m, const mpq_tensor *t);

/* Fills a tensor record: name, dtype, shape (ndim entries), data, file.
 * numel and nbytes are computed with overflow checks. */
mpq_err mpq_io_tensor_init(mpq_ctx *ctx, mpq_tensor *t, const char *name, mpq_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, const char *file);

/* Checks that the Llama-family tensors described by m->arch are all present
 * with the shapes the architecture implies (q/k/v biases when qkv_bias,
 * lm_head unless tied). Errors name the model's file and the tensor. */
mpq_err mpq_io_check_llama(mpq_ctx *ctx, const mpq_model *m);

/* A checkpoint format: `probe` returns nonzero if the file or directory
 * looks like this format (head: its first bytes, nhead of them, 0 for a
 * directory); `open` reads path into the empty model m. */
typedef struct mpq_model_format {
    const char *name;
    int (*probe)(const char *path, int is_dir, const unsigned char *head, size_t nhead);
    mpq_err (*open)(mpq_ctx *ctx, mpq_model *m, const char *path);
} mpq_model_format;

extern const mpq_model_format mpq_format_llama2c;
extern const mpq_model_format mpq_format_safetensors;
extern const mpq_model_format mpq_format_mpqckpt; /* stages/ckpt/ckpt_model.c */

/* Little-endian loads from unaligned bytes. */
static inline uint32_t mpq_io_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t mpq_io_le64(const unsigned char *p) {
    return (uint64_t)mpq_io_le32(p) | (uint64_t)mpq_io_le32(p + 4) << 32;
}

#endif
