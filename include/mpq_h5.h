/* mpq_h5.h: HDF5 error wrappers (STYLE.md rule 2) shared by every module that
 * reads or writes HDF5 (Hessian statistics, checkpoints).
 *
 * HDF5 reports failure by a negative return value (herr_t, hid_t, htri_t)
 * and, by default, prints its error stack to stderr. mpq_h5_quiet turns the
 * printing off; the wrappers then fetch the stack's messages and record
 * them in the context as an MPQ_ERR_LIB error, so the message reaches the
 * user through the normal error path. Like mpq_err.h, the macros assume
 * `ctx` in scope (and `err` + `cleanup:` for the _TRY forms).
 */
#ifndef MPQ_H5_H
#define MPQ_H5_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_err.h"

struct mpq_ctx;

/* Local. Disables HDF5's automatic error printing on the default error
 * stack (call before the first HDF5 call of a module; idempotent). */
void mpq_h5_quiet(void);

/* Local. When rc < 0: raises MPQ_ERR_LIB with the message
 * "<what>: <call> failed: <HDF5 error stack, innermost first>", clears the
 * HDF5 stack and returns MPQ_ERR_LIB; otherwise returns MPQ_OK. `what`
 * (may be NULL) names the file/dataset concerned. */
mpq_err mpq_h5_check(struct mpq_ctx *ctx, int64_t rc, const char *what, const char *call,
                     const char *file, int line, const char *func);

/* Local. Writes the messages of HDF5's current error stack (innermost
 * first) into buf and clears the stack. For callers that raise their own
 * error code (e.g. MPQ_ERR_FORMAT for a file that is not HDF5). */
void mpq_h5_error_text(char *buf, size_t len);

/* Writing files that can fail cleanly. HDF5 1.10 cannot recover from a
 * failed metadata flush (every later flush fails too, the file can never be
 * closed, and the library crashes on it when it shuts down at
 * MPI_Finalize), and with the MPI-IO driver a write that fails on one rank
 * leaves the ranks' HDF5 states different, so the collective close hangs.
 * So no write may be the first to meet a full disk: space is reserved
 * before data is written, and abandoned files are closed into memory.
 *
 * `collective`: the file was opened with the MPI-IO driver on ctx->comm and
 * every rank calls (rank 0 does the file-system work and shares the
 * result); 0: a file of this rank alone.
 *
 * mpq_h5_reserve: allocates the disk blocks of the file from *reserved up
 * to the end of dataset `dset`'s raw data plus a margin for the metadata
 * created with it (parallel HDF5 allocates a contiguous dataset when it is
 * created), and advances *reserved. Call after creating a dataset, before
 * writing it. dset < 0: up to the file's size as the sec2 driver knows it
 * (nothing with the MPI-IO driver). A full disk or quota is an MPQ_ERR_IO
 * error naming `what`, on every rank alike. On a file system without
 * fallocate nothing is reserved and the call succeeds.
 *
 * mpq_h5_close_written: reserves the rest (reserved may be NULL: from 0),
 * flushes and closes. On failure the file is abandoned as by
 * mpq_h5_discard and the error raised (MPQ_ERR_IO or MPQ_ERR_LIB).
 *
 * mpq_h5_discard: closes a file that is being abandoned (the caller deletes
 * it) without writing to it: this process's descriptors on it are first
 * pointed at an anonymous in-memory file (Linux memfd), so the close's
 * flush cannot fail. Collective like H5Fclose. Negative `file`: nothing. */
mpq_err mpq_h5_reserve(struct mpq_ctx *ctx, int64_t file, int64_t dset, int collective,
                       uint64_t *reserved, const char *what);
mpq_err mpq_h5_close_written(struct mpq_ctx *ctx, int64_t file, int collective, uint64_t *reserved,
                             const char *what);
void mpq_h5_discard(int64_t file);

/* Local. Fails (MPQ_ERR_FORMAT, naming path and the link) when the open
 * file holds any link other than a hard link: a soft link, an external link
 * to another file or a user-defined link. Readers call it right after
 * opening, so that no object is ever read from a file the user did not
 * name, nor through a path that leaves the file's own tree. */
mpq_err mpq_h5_only_hard_links(struct mpq_ctx *ctx, int64_t file, const char *path);

/* Return forms: MPQ_H5(call) for any HDF5 call returning herr_t/hid_t/htri_t. */
#define MPQ_H5(call)                                                                               \
    MPQ_CALL(mpq_h5_check(ctx, (int64_t)(call), NULL, #call, __FILE__, __LINE__, __func__))
#define MPQ_H5_W(call, what)                                                                       \
    MPQ_CALL(mpq_h5_check(ctx, (int64_t)(call), (what), #call, __FILE__, __LINE__, __func__))

/* Goto forms (need `mpq_err err` and `cleanup:`). MPQ_H5_ID assigns the
 * returned identifier to `id` before checking it, so cleanup can close it. */
#define MPQ_H5_TRY(call, what)                                                                     \
    MPQ_TRY(mpq_h5_check(ctx, (int64_t)(call), (what), #call, __FILE__, __LINE__, __func__))
#define MPQ_H5_ID(id, call, what)                                                                  \
    do {                                                                                           \
        (id) = (call);                                                                             \
        MPQ_TRY(mpq_h5_check(ctx, (int64_t)(id), (what), #call, __FILE__, __LINE__, __func__));    \
    } while (0)

#endif
