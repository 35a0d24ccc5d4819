/* err.c: recording, tracing and naming errors. */
#include <stdio.h>
#include <string.h>

#include "mpq_ctx.h"
#include "mpq_err.h"

static const char *const mpq_err_names[MPQ_ERR_COUNT] = {
    [MPQ_OK] = "MPQ_OK",
    [MPQ_ERR_ARG] = "MPQ_ERR_ARG",
    [MPQ_ERR_NOMEM] = "MPQ_ERR_NOMEM",
    [MPQ_ERR_IO] = "MPQ_ERR_IO",
    [MPQ_ERR_FORMAT] = "MPQ_ERR_FORMAT",
    [MPQ_ERR_CONFIG] = "MPQ_ERR_CONFIG",
    [MPQ_ERR_MPI] = "MPQ_ERR_MPI",
    [MPQ_ERR_LIB] = "MPQ_ERR_LIB",
    [MPQ_ERR_NUMERIC] = "MPQ_ERR_NUMERIC",
    [MPQ_ERR_RANGE] = "MPQ_ERR_RANGE",
    [MPQ_ERR_REMOTE] = "MPQ_ERR_REMOTE",
    [MPQ_ERR_INTERNAL] = "MPQ_ERR_INTERNAL",
    [MPQ_ERR_STOPPED] = "MPQ_ERR_STOPPED",
};

const char *mpq_err_name(mpq_err code) {
    if ((int)code < 0 || code >= MPQ_ERR_COUNT)
        return "MPQ_ERR_UNKNOWN";
    return mpq_err_names[code];
}

/* Appends a formatted frame to the traceback, silently truncating. */
static void trace_append(mpq_ctx *ctx, const char *file, int line, const char *func) {
    size_t used = strlen(ctx->err_trace);
    if (used + 1 >= sizeof ctx->err_trace)
        return;
    snprintf(ctx->err_trace + used, sizeof ctx->err_trace - used, "%s  at %s:%d %s()",
             used ? "\n" : "", file, line, func);
}

mpq_err mpq_err_vraise(mpq_ctx *ctx, mpq_err code, const char *file, int line, const char *func,
                       const char *fmt, va_list ap) {
    if (!ctx) {
        fprintf(stderr, "mpquant: error: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n  at %s:%d %s()\n", file, line, func);
        return code;
    }
    /* Format into a temporary first: the arguments may include the
     * context's own previous message (wrapping an error in context). */
    char msg[MPQ_ERRMSG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    memcpy(ctx->err_msg, msg, sizeof msg);
    ctx->err_code = code;
    ctx->err_rank = ctx->rank;
    ctx->err_trace[0] = '\0';
    trace_append(ctx, file, line, func);
    return code;
}

mpq_err mpq_err_raise(mpq_ctx *ctx, mpq_err code, const char *file, int line, const char *func,
                      const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    mpq_err rc = mpq_err_vraise(ctx, code, file, line, func, fmt, ap);
    va_end(ap);
    return rc;
}

mpq_err mpq_err_trace(mpq_ctx *ctx, mpq_err code, const char *file, int line, const char *func) {
    if (ctx)
        trace_append(ctx, file, line, func);
    return code;
}

void mpq_err_clear(mpq_ctx *ctx) {
    if (!ctx)
        return;
    ctx->err_code = MPQ_OK;
    ctx->err_rank = -1;
    ctx->err_msg[0] = '\0';
    ctx->err_trace[0] = '\0';
}

const char *mpq_err_message(const mpq_ctx *ctx) {
    return ctx ? ctx->err_msg : "";
}

const char *mpq_err_traceback(const mpq_ctx *ctx) {
    return ctx ? ctx->err_trace : "";
}
