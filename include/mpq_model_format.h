/* mpq_model_format.h: the registry of model (checkpoint) formats behind
 * mpq_model_open, and what a format reader needs to fill a model. The
 * readers of stages/loading (llama2.c, safetensors) and of other stages (the
 * mpquant checkpoint read as a model, stages/checkpoint/ckpt_model.c)
 * register through this interface alone.
 *
 * A reader's open receives an empty model: it adds memory it fills itself
 * (mpq_model_add_buffer) or maps files (stages/loading only), appends
 * tensors that point into that memory (mpq_tensor_init,
 * mpq_model_add_tensor) and sets the architecture (mpq_model_set_arch).
 * mpq_model_open then checks that tensor names are unique. Everything here
 * is local.
 */
#ifndef MPQ_MODEL_FORMAT_H
#define MPQ_MODEL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_err.h"
#include "mpq_model.h"
#include "mpq_registry.h"

struct mpq_ctx;

/* A checkpoint format: `probe` returns nonzero if the file or directory
 * looks like this format (head: its first bytes, nhead of them, 0 for a
 * directory); `open` reads path into the empty model m. */
typedef struct mpq_model_format {
    const char *name; /* model.format, mpq_model_open's `format` */
    /* 1 when the format has no magic, so its probe accepts almost any file:
     * format "auto" tries it only after every other format. */
    int fallback;
    int (*probe)(const char *path, int is_dir, const unsigned char *head, size_t nhead);
    mpq_err (*open)(struct mpq_ctx *ctx, mpq_model *m, const char *path);
} mpq_model_format;

/* The registry (NULL-terminated; model.format), its descriptor (also:
 * "auto") and lookup by name (NULL when unknown). */
extern const mpq_model_format *const mpq_model_formats[];
extern const mpq_registry mpq_model_format_reg;
const mpq_model_format *mpq_model_format_find(const char *name);

/* The mpquant checkpoint as a model (stages/checkpoint/ckpt_model.c). */
extern const mpq_model_format mpq_format_mpqckpt;

/* Adds size bytes of zeroed, writable memory to m, owned by m (released by
 * mpq_model_close), 64-byte aligned, for tensors a reader computes rather
 * than maps. Errors name m's path. */
mpq_err mpq_model_add_buffer(struct mpq_ctx *ctx, mpq_model *m, size_t size, unsigned char **base);
/* Makes the buffers added so far read-only, like file mappings. */
mpq_err mpq_model_seal_buffers(struct mpq_ctx *ctx, mpq_model *m);

/* Fills a tensor record: name, dtype, shape (ndim entries), data, file.
 * numel and nbytes are computed with overflow checks. */
mpq_err mpq_tensor_init(struct mpq_ctx *ctx, mpq_tensor *t, const char *name, mpq_dtype dtype,
                        int ndim, const int64_t *shape, const void *data, const char *file);
/* Appends a copy of t (its data must live in memory m owns). */
mpq_err mpq_model_add_tensor(struct mpq_ctx *ctx, mpq_model *m, const mpq_tensor *t);
/* Sets the architecture read from the checkpoint. */
void mpq_model_set_arch(mpq_model *m, const mpq_arch *a);

#endif
