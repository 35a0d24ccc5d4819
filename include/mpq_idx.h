/* mpq_idx.h: IDX files (the MNIST distribution format), memory-mapped.
 *
 * Layout: a big-endian uint32 magic 0x000008NN (0x08: unsigned bytes, NN the
 * number of dimensions), NN big-endian uint32 dimensions, then the bytes in
 * row-major order. MNIST images are 0x00000803 [n][28][28], labels
 * 0x00000801 [n]. The file size must match the dimensions exactly.
 * All functions are local.
 */
#ifndef MPQ_IDX_H
#define MPQ_IDX_H

#include <stdint.h>

#include "mpq_err.h"

struct mpq_ctx;

#define MPQ_IDX_MAXDIM 4

typedef struct mpq_idx {
    char *path;
    int ndim;
    int64_t dims[MPQ_IDX_MAXDIM]; /* dims[0] is the number of items */
    int64_t numel;                /* product of dims */
    const uint8_t *data;          /* numel bytes inside the mapping */
    const void *map_base;         /* the read-only mapping (private) */
    size_t map_size;
} mpq_idx;

/* Maps an unsigned-byte IDX file of 1 to MPQ_IDX_MAXDIM dimensions. Errors
 * name the file and the problem (magic, dimension, size mismatch).
 * Owner: caller (mpq_idx_close). */
mpq_err mpq_idx_open(struct mpq_ctx *ctx, const char *path, mpq_idx **out);
/* Like mpq_idx_open but requires images [n][rows][cols] (magic 0x803). */
mpq_err mpq_idx_open_images(struct mpq_ctx *ctx, const char *path, mpq_idx **out);
/* Like mpq_idx_open but requires labels [n] (magic 0x801), each below
 * n_classes (0: no check). */
mpq_err mpq_idx_open_labels(struct mpq_ctx *ctx, const char *path, int n_classes, mpq_idx **out);
/* NULL-safe; unmaps; sets *x to NULL. */
void mpq_idx_close(mpq_idx **x);

#endif
