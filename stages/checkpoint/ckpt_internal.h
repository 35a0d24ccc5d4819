/* ckpt_internal.h: what the checkpoint sources of stages/ckpt/ share. */
#ifndef MPQ_CKPT_INTERNAL_H
#define MPQ_CKPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_ctx.h"

/* A fixed-length, NUL-padded HDF5 string type of len bytes (at least 1).
 * Owner: caller (H5Tclose). Local. */
mpq_err mpq_ckpt_h5_strtype(mpq_ctx *ctx, size_t len, int64_t *type);

#endif
