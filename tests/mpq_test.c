/* mpq_test.c: helpers shared by mpquant's C tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq_cli.h"
#include "mpq_test.h"

const char *mpq_test_shared(const char *rel, char *buf, size_t len) {
    const char *dir = getenv("MPQ_SHARED_DIR");
    if (!dir || !*dir)
        dir = "../shared";
    snprintf(buf, len, "%s/%s", dir, rel);
    if (access(buf, R_OK) != 0) {
        const char *ci = getenv("CI");
        if (ci && strcmp(ci, "true") == 0) {
            fprintf(stderr, "FAILED: shared data file '%s' is missing (CI=true)\n", buf);
            exit(1);
        }
        fprintf(stderr, "SKIPPED: shared data file '%s' is missing\n", buf);
        exit(MPQ_TEST_SKIP);
    }
    return buf;
}

mpq_ctx *mpq_test_init(int *argc, char ***argv) {
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "MPI_Init failed\n");
        exit(1);
    }
    mpq_ctx *ctx = NULL;
    if (mpq_ctx_create(MPI_COMM_WORLD, &ctx) != MPQ_OK) {
        fprintf(stderr, "cannot create the context\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (!getenv("MPQ_TEST_VERBOSE"))
        mpq_log_set_level(ctx, MPQ_LOG_WARN);
    /* As the program does at start-up: the configuration's allowed values
     * of the keys that name a variant come from the registries. */
    if (mpq_cli_register_registries(ctx) != MPQ_OK) {
        fprintf(stderr, "cannot register the registries: %s\n", ctx->err_msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return ctx;
}

int mpq_test_finish(mpq_ctx **ctx, int failures) {
    int mine = failures != 0, any = mine;
    if ((*ctx)->comm != MPI_COMM_NULL)
        MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, (*ctx)->comm);
    int rank = (*ctx)->rank;
    mpq_ctx_destroy(ctx);
    MPI_Finalize();
    if (rank == 0)
        printf("%s\n", any ? "FAILED" : "PASSED");
    return any ? 1 : 0;
}
