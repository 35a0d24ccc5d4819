/* mpq_ctx.h: the context object that is the first argument of every mpquant
 * function (STYLE.md rule 5), checked allocation (rule 7), checked casts
 * (rule 8) and MPI error wrappers. Error agreement between ranks (rule 4)
 * and the other collectives are in mpq_coll.h.
 *
 * The fields of mpq_ctx are public for reading; they are set by
 * mpq_ctx_create and must not be changed by callers.
 */
#ifndef MPQ_CTX_H
#define MPQ_CTX_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mpq_err.h"
#include "mpq_log.h"
#include "mpq_timer.h"

#define MPQ_ERRMSG_MAX 2048
#define MPQ_TRACE_MAX  4096

typedef struct mpq_ctx {
    /* Communication. comm is a duplicate of the user's communicator, or
     * MPI_COMM_NULL for a serial context (rank 0 of 1, no MPI calls). */
    MPI_Comm comm;
    int rank;
    int size;
    MPI_Comm node_comm; /* ranks sharing this node (MPI_COMM_NULL if serial) */
    int node_rank;
    int node_size;

    /* Error state of this rank (see mpq_err.h). */
    mpq_err err_code;
    int err_rank; /* rank that raised the error (after mpq_agree) */
    char err_msg[MPQ_ERRMSG_MAX];
    char err_trace[MPQ_TRACE_MAX];

    /* Logger. */
    mpq_log_level log_level;
    int log_all_ranks;
    mpq_log_sink log_sink;
    void *log_userdata;
    FILE *event_file;
    double t_created;         /* mpq_now() at creation */
    double progress_interval; /* seconds between progress lines (log.progress_interval) */

    mpq_timers *timers;

    /* Test allocator: when >= 0, the allocation after this many successful
     * ones fails (then the countdown is disabled again). -1: off. */
    int64_t alloc_fail_countdown;
} mpq_ctx;

/* Collective over comm (unless comm is MPI_COMM_NULL). Duplicates comm,
 * builds the node-local communicator and sets MPI_ERRORS_RETURN on both.
 * The caller owns *out; release with mpq_ctx_destroy. */
mpq_err mpq_ctx_create(MPI_Comm comm, mpq_ctx **out);
/* Collective. NULL-safe; sets *ctx to NULL. */
void mpq_ctx_destroy(mpq_ctx **ctx);

/* ---- allocation --------------------------------------------------------- */

/* Allocates n elements of elsize bytes, zeroed, 64-byte aligned. Fails with
 * MPQ_ERR_NOMEM naming the requested size when n < 0, n*elsize overflows or
 * memory is exhausted. Free with mpq_free. Local. */
mpq_err mpq_malloc(mpq_ctx *ctx, int64_t n, size_t elsize, void **out);
/* The same, not zeroed: for large buffers written in full before they are
 * read (a zero fill touches every page, so the memory is committed at once
 * and the fill costs a pass over it). */
mpq_err mpq_malloc_raw(mpq_ctx *ctx, int64_t n, size_t elsize, void **out);
/* Resizes a buffer from mpq_malloc holding old_n elements to new_n elements
 * (new elements zeroed). On failure *p is left unchanged. */
mpq_err mpq_realloc(mpq_ctx *ctx, int64_t old_n, int64_t new_n, size_t elsize, void **p);
void mpq_free(void *p);
/* Duplicates a string with mpq_malloc. */
mpq_err mpq_strdup(mpq_ctx *ctx, const char *s, char **out);

#define MPQ_ALLOC(ptr, n)     MPQ_CALL(mpq_malloc(ctx, (n), sizeof *(ptr), (void **)&(ptr)))
#define MPQ_ALLOC_TRY(ptr, n) MPQ_TRY(mpq_malloc(ctx, (n), sizeof *(ptr), (void **)&(ptr)))
#define MPQ_FREE(ptr)                                                                              \
    do {                                                                                           \
        mpq_free(ptr);                                                                             \
        (ptr) = NULL;                                                                              \
    } while (0)

/* Arms the test allocator (see alloc_fail_countdown). */
void mpq_alloc_fail_after(mpq_ctx *ctx, int64_t successes);

/* ---- checked arithmetic and casts --------------------------------------- */

/* *out = v if it fits in int, else MPQ_ERR_RANGE naming `what`. */
mpq_err mpq_to_int(mpq_ctx *ctx, int64_t v, const char *what, int *out);
/* *out = a*b (a, b >= 0) or MPQ_ERR_RANGE on overflow. */
mpq_err mpq_mul64(mpq_ctx *ctx, int64_t a, int64_t b, const char *what, int64_t *out);
mpq_err mpq_add64(mpq_ctx *ctx, int64_t a, int64_t b, const char *what, int64_t *out);

/* ---- limits ------------------------------------------------------------- */

/* Local, at start-up. Under an address-space limit (ulimit -v) proves that
 * room remains for OpenBLAS's buffers (an MPQ_ERR_NOMEM error naming the
 * limit otherwise: OpenBLAS itself would loop forever), then allocates
 * those buffers with a small BLAS call so that later calls need no more. */
mpq_err mpq_check_limits(mpq_ctx *ctx);

/* ---- MPI ---------------------------------------------------------------- */

/* Raises MPQ_ERR_MPI with MPI's own text for rc when rc != MPI_SUCCESS. */
mpq_err mpq_mpi_check(mpq_ctx *ctx, int rc, const char *call, const char *file, int line,
                      const char *func);
#define MPQ_MPI(call)     MPQ_CALL(mpq_mpi_check(ctx, (call), #call, __FILE__, __LINE__, __func__))
#define MPQ_MPI_TRY(call) MPQ_TRY(mpq_mpi_check(ctx, (call), #call, __FILE__, __LINE__, __func__))

#endif
