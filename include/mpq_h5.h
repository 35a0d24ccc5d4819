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
