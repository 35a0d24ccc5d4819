/* mpq_err.h: the single status type of mpquant and the macros that raise,
 * propagate and trace errors (STYLE.md rules 1-3).
 *
 * Every function that can fail returns an mpq_err; results leave through
 * pointer arguments. The macros below assume a variable `ctx` (mpq_ctx *) in
 * scope; the goto forms (MPQ_TRY, MPQ_ENSURE) also assume `mpq_err err` and a
 * `cleanup:` label. An error records its message once, where it is raised, and
 * every frame it passes through appends "file:line function" to the traceback.
 */
#ifndef MPQ_ERR_H
#define MPQ_ERR_H

#include <stdarg.h>

typedef enum mpq_err {
    MPQ_OK = 0,
    MPQ_ERR_ARG,      /* invalid argument or command-line usage */
    MPQ_ERR_NOMEM,    /* allocation failed or size overflowed */
    MPQ_ERR_IO,       /* file missing, unreadable, unwritable, disk full */
    MPQ_ERR_FORMAT,   /* malformed input file */
    MPQ_ERR_CONFIG,   /* invalid configuration */
    MPQ_ERR_MPI,      /* an MPI call failed */
    MPQ_ERR_LIB,      /* HDF5, LAPACK, ScaLAPACK or another library failed */
    MPQ_ERR_NUMERIC,  /* NaN/Inf, matrix not positive definite, ... */
    MPQ_ERR_RANGE,    /* a value does not fit its target type */
    MPQ_ERR_REMOTE,   /* another rank failed; its message is in the context */
    MPQ_ERR_INTERNAL, /* a broken invariant: a bug in mpquant */
    MPQ_ERR_STOPPED,  /* stopped on request (a signal) at a resumable point */
    MPQ_ERR_COUNT
} mpq_err;

struct mpq_ctx;

/* Name of a status code ("MPQ_ERR_IO", ...). Never NULL. */
const char *mpq_err_name(mpq_err code);

/* Records a new error in ctx (message from fmt, first traceback frame) and
 * returns code. Local. ctx may be NULL (then the message goes to stderr). */
mpq_err mpq_err_raise(struct mpq_ctx *ctx, mpq_err code, const char *file, int line,
                      const char *func, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
mpq_err mpq_err_vraise(struct mpq_ctx *ctx, mpq_err code, const char *file, int line,
                       const char *func, const char *fmt, va_list ap);

/* Appends a traceback frame to the error recorded in ctx and returns code. */
mpq_err mpq_err_trace(struct mpq_ctx *ctx, mpq_err code, const char *file, int line,
                      const char *func);

/* Forgets the recorded error (used after an error has been handled). */
void mpq_err_clear(struct mpq_ctx *ctx);

/* The message and traceback of the last recorded error ("" when none). */
const char *mpq_err_message(const struct mpq_ctx *ctx);
const char *mpq_err_traceback(const struct mpq_ctx *ctx);

#define MPQ_ERROR(code, ...) mpq_err_raise(ctx, (code), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* Return forms. */
#define MPQ_CHECK(cond, code, ...)                                                                 \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return MPQ_ERROR(code, __VA_ARGS__);                                                   \
    } while (0)
#define MPQ_CALL(expr)                                                                             \
    do {                                                                                           \
        mpq_err mpq_e_ = (expr);                                                                   \
        if (mpq_e_ != MPQ_OK)                                                                      \
            return mpq_err_trace(ctx, mpq_e_, __FILE__, __LINE__, __func__);                       \
    } while (0)

/* Goto forms: need `mpq_err err` and a `cleanup:` label in the function. */
#define MPQ_ENSURE(cond, code, ...)                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            err = MPQ_ERROR(code, __VA_ARGS__);                                                    \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)
#define MPQ_TRY(expr)                                                                              \
    do {                                                                                           \
        err = (expr);                                                                              \
        if (err != MPQ_OK) {                                                                       \
            mpq_err_trace(ctx, err, __FILE__, __LINE__, __func__);                                 \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

#endif
