/* fuzz_common.h: what every mpquant fuzz target shares.
 *
 * Each target defines LLVMFuzzerTestOneInput and feeds the bytes to one file
 * reader through its public API with a serial context (MPI_COMM_NULL: no MPI
 * call is made, so no MPI_Init is needed). Readers take paths, so the bytes
 * go to files in a private temporary directory first.
 *
 * The same sources build two ways:
 *  - with clang -fsanitize=fuzzer (MPQ_FUZZ=ON, tests/fuzz/run-fuzz.sh):
 *    libFuzzer provides main();
 *  - with the normal compiler: fuzz_replay.c provides a main() that runs
 *    every file named on the command line once (regression replay), so the
 *    committed crashers and seeds run in the ordinary and sanitizer suites.
 *
 * A reader may reject any input (that is the point); what must never happen
 * is a crash, a sanitizer report, a hang or an accepted model whose
 * tensors lie outside its files. Targets call fuzz_fail() (abort) when an
 * invariant of an accepted input is broken, which libFuzzer reports as a
 * crash.
 */
#ifndef MPQ_FUZZ_COMMON_H
#define MPQ_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpq_cli.h"
#include "mpq_ctx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The harness state: created once per process (fuzzers run one input after
 * another in the same process). Harness code, not library code: a static
 * is the simplest correct thing here. */
typedef struct fuzz_env {
    mpq_ctx *ctx;
    char dir[256]; /* private temporary directory, removed at exit */
} fuzz_env;

static fuzz_env fuzz_env_g;

static inline void fuzz_fail(const char *what) {
    fprintf(stderr, "fuzz: invariant broken: %s\n", what);
    abort();
}

static void fuzz_cleanup_dir(void) {
    mpq_ctx_destroy(&fuzz_env_g.ctx);
    if (!fuzz_env_g.dir[0])
        return;
    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_env_g.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", fuzz_env_g.dir);
}

/* The context and the temporary directory (created on first use). */
static inline fuzz_env *fuzz_env_get(void) {
    if (!fuzz_env_g.ctx) {
        if (mpq_ctx_create(MPI_COMM_NULL, &fuzz_env_g.ctx) != MPQ_OK)
            fuzz_fail("cannot create a serial context");
        fuzz_env_g.ctx->log_level = MPQ_LOG_ERROR;
        /* The configuration's allowed values of variant keys (fuzz_config). */
        if (mpq_cli_register_registries(fuzz_env_g.ctx) != MPQ_OK)
            fuzz_fail("cannot register the registries");
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_env_g.dir, sizeof fuzz_env_g.dir, "%s/mpq-fuzz-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(fuzz_env_g.dir))
            fuzz_fail("cannot create the temporary directory");
        atexit(fuzz_cleanup_dir);
    }
    return &fuzz_env_g;
}

/* Writes n bytes to dir/name; path receives the full name. */
static inline void fuzz_write(const char *dir, const char *name, const void *data, size_t n,
                              char *path, size_t len) {
    snprintf(path, len, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        fuzz_fail("cannot create a temporary file");
    if (n > 0 && fwrite(data, 1, n, f) != n)
        fuzz_fail("cannot write a temporary file");
    if (fclose(f) != 0)
        fuzz_fail("cannot close a temporary file");
}

/* After each input: forget the error the reader may have raised
 * (MPQ_FUZZ_VERBOSE=1 prints it first: how a seed is judged). */
static inline void fuzz_done(fuzz_env *env) {
    if (getenv("MPQ_FUZZ_VERBOSE"))
        fprintf(stderr, "  -> %s\n", env->ctx->err_msg[0] ? env->ctx->err_msg : "accepted");
    mpq_err_clear(env->ctx);
}

#endif
