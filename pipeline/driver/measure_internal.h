/* measure_internal.h: the measurement table (mpq_importance.h) in the HDF5
 * files of `mpquant run` (measure.save, run_measure_io.c) and `mpquant
 * sweep` (measure.h5, sweep_io.c): one implementation of the shared
 * datasets (measure_io.c). Not a public interface. */
#ifndef MPQ_MEASURE_INTERNAL_H
#define MPQ_MEASURE_INTERNAL_H

#include <stdint.h>

#include "mpq_ctx.h"
#include "mpq_importance.h"

/* ---- HDF5 (measure_io.c) --------------------------------------------------------- */

/* The files of run (measure.save) and sweep (measure.h5) are written by one
 * rank alone (mpq_h5.h, not collective); `what` names the file in errors.
 * Identifiers are hid_t, passed as int64_t (as in mpq_h5.h). */

/* Local. Creates (truncates) the HDF5 file `tmp` with the root attributes
 * format (fixed-length string) and version (int32). *file is the file, or
 * negative when it was not created; on failure the caller abandons it
 * (mpq_h5_discard). */
mpq_err mpq_measure_h5_create(mpq_ctx *ctx, const char *tmp, const char *format, int32_t version,
                              const char *what, int64_t *file);
/* Local. Writes the 1-D byte dataset `name` of n bytes (uint8). */
mpq_err mpq_measure_h5_write_bytes(mpq_ctx *ctx, int64_t file, const char *name, const void *data,
                                   int64_t n, const char *what);
/* Local. Writes the table: /loss, /rtn_loss, /bits [nl][ncol] and /energy,
 * /sensitivity [nl], in that order. */
mpq_err mpq_measure_h5_write_table(mpq_ctx *ctx, int64_t file, const mpq_measure_table *t,
                                   const char *what);
/* Local. Reads the byte dataset `name`, which must hold exactly n bytes. */
mpq_err mpq_measure_h5_read_bytes(mpq_ctx *ctx, int64_t file, const char *path, const char *name,
                                  int64_t n, void *out);
/* Local. Reads the datasets of mpq_measure_h5_write_table into t, whose
 * sizes they must have. */
mpq_err mpq_measure_h5_read_table(mpq_ctx *ctx, int64_t file, const char *path,
                                  mpq_measure_table *t);
/* Local. A byte dataset of 1 byte to 64 MiB as a NUL-terminated string.
 * A missing dataset is the error "<path><missing> (no '<name>' dataset)".
 * Owner: caller (mpq_free). */
mpq_err mpq_measure_h5_read_text(mpq_ctx *ctx, int64_t file, const char *path, const char *name,
                                 const char *missing, char **out);

#endif
