/* main.c: the `mpquant` program. The only place that names MPI_COMM_WORLD
 * and the only place that turns a status into an exit code. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "mpq_coll.h"
#include "mpq_cli.h"
#include "mpq_stop.h"

/* Test hook (documented in the README): MPQ_FAULT_ALLOC="RANK:N" makes the
 * allocation after N successful ones fail on rank RANK, to exercise error
 * paths and error agreement in end-to-end tests. */
static void arm_fault_injection(mpq_ctx *ctx) {
    const char *spec = getenv("MPQ_FAULT_ALLOC");
    int rank = -1;
    long long n = 0;
    if (spec && sscanf(spec, "%d:%lld", &rank, &n) == 2 && rank == ctx->rank && n >= 0)
        mpq_alloc_fail_after(ctx, n);
}

/* One BLAS thread per rank unless OPENBLAS_NUM_THREADS says otherwise: ranks
 * are the unit of parallelism, and a multi-threaded OpenBLAS may take other
 * kernel paths, which would make results depend on the threads per rank
 * (results are bit-identical across rank counts for a fixed thread count). */
static void set_blas_threads(void) {
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    if (!env || !*env)
        openblas_set_num_threads(1);
}

int main(int argc, char **argv) {
    /* First of all: SIGUSR1 (a time-limit warning a batch script passes on,
     * which may come while MPI starts) is recorded, never fatal. */
    mpq_stop_arm(0);
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "mpquant: error: MPI_Init failed\n");
        return 1;
    }
    mpq_ctx *ctx = NULL;
    if (mpq_ctx_create(MPI_COMM_WORLD, &ctx) != MPQ_OK) {
        MPI_Abort(MPI_COMM_WORLD, 1); /* no context, no agreement possible */
        return 1;
    }
    arm_fault_injection(ctx);
    set_blas_threads();
    mpq_err err = mpq_agree(ctx, mpq_check_limits(ctx));
    if (err == MPQ_OK)
        err = mpq_cli_main(ctx, argc, argv);
    err = mpq_agree(ctx, err);
    int rc = 0;
    if (err != MPQ_OK) {
        rc = err == MPQ_ERR_ARG ? 2 : err == MPQ_ERR_STOPPED ? MPQ_EXIT_RESUMABLE : 1;
        if (ctx->rank == 0) {
            fflush(stdout);
            if (err == MPQ_ERR_STOPPED)
                fprintf(stderr, "mpquant: %s\n", ctx->err_msg);
            else if (ctx->size > 1)
                fprintf(stderr, "mpquant: error (rank %d of %d): %s\n", ctx->err_rank, ctx->size,
                        ctx->err_msg);
            else
                fprintf(stderr, "mpquant: error: %s\n", ctx->err_msg);
            if (ctx->err_trace[0] && ctx->log_level >= MPQ_LOG_DEBUG)
                fprintf(stderr, "traceback (most recent call first):\n%s\n", ctx->err_trace);
            else if (err != MPQ_ERR_ARG && err != MPQ_ERR_STOPPED)
                fprintf(stderr, "  (%s; --log-level debug shows the traceback)\n",
                        mpq_err_name(err));
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "code", mpq_err_name(err));
            cJSON_AddNumberToObject(f, "error_rank", ctx->err_rank);
            cJSON_AddStringToObject(f, "message", ctx->err_msg);
            cJSON_AddStringToObject(f, "traceback", ctx->err_trace);
            mpq_event(ctx, "error", f);
        }
    }
    cJSON *f = cJSON_CreateObject();
    cJSON_AddNumberToObject(f, "exit_code", rc);
    mpq_event(ctx, "run_end", f);
    mpq_ctx_destroy(&ctx);
    MPI_Finalize();
    return rc;
}
