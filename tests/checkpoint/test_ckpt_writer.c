/* test_ckpt_writer.c: writes a checkpoint of stories260K (layers quantized
 * with the quantizer library, spread over the ranks) for the script tests:
 *   test_ckpt_writer OUTPUT [--date D] [--times JSON] [--kill-after N] [--overwrite]
 * --kill-after N: rank 0 kills itself (SIGKILL) after N entries are written.
 * Exit status 0 on success, 1 on error (message on stderr), 77 when the
 * shared model is missing (outside CI). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_test.h"
#include "test_ckpt_util.h"

int main(int argc, char **argv) {
    mpq_ctx *ctx = mpq_test_init(&argc, &argv);
    const char *out = NULL, *date = NULL, *times = NULL;
    int64_t kill_after = -1;
    int overwrite = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--date") == 0 && i + 1 < argc)
            date = argv[++i];
        else if (strcmp(argv[i], "--times") == 0 && i + 1 < argc)
            times = argv[++i];
        else if (strcmp(argv[i], "--kill-after") == 0 && i + 1 < argc)
            kill_after = atoll(argv[++i]);
        else if (strcmp(argv[i], "--overwrite") == 0)
            overwrite = 1;
        else
            out = argv[i];
    }
    if (!out) {
        fprintf(stderr, "usage: %s OUTPUT [--date D] [--times JSON] [--kill-after N]\n", argv[0]);
        return mpq_test_finish(&ctx, 1);
    }
    char model_path[1024];
    mpq_test_shared("data/models/stories260K/stories260K.bin", model_path, sizeof model_path);
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    ckpt_fixture fx = {0};
    mpq_err err = mpq_model_open(ctx, model_path, "auto", &m);
    if (err == MPQ_OK)
        err = mpq_family_create(ctx, m, NULL, "auto", &f);
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK)
        err = ckpt_fixture_build(ctx, f, &fx);
    if (err == MPQ_OK)
        err = ckpt_fixture_write(ctx, m, &fx, out, overwrite, date, times, kill_after);
    if (err != MPQ_OK && ctx->rank == 0)
        fprintf(stderr, "test_ckpt_writer: %s: %s\n%s", mpq_err_name(err), ctx->err_msg,
                ctx->err_trace);
    ckpt_fixture_free(&fx);
    mpq_family_destroy(&f);
    mpq_model_close(&m);
    return mpq_test_finish(&ctx, err != MPQ_OK);
}
