/* run_util.h: helpers of the `mpquant run` tests: a shipped configuration
 * loaded with overrides, and one pipeline run. */
#ifndef MPQ_RUN_TEST_UTIL_H
#define MPQ_RUN_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include "mpq_config.h"
#include "mpq_run.h"
#include "mpq_test.h"

/* Loads configs/<name> of the source tree with n overrides (collective).
 * Skips the test when the shared data is missing (fails under CI=true). */
static inline mpq_config *rt_config(mpq_ctx *ctx, const char *name, int n, char **over) {
    char buf[4096], path[4096];
    mpq_test_shared("data/models/stories260K/stories260K.bin", buf, sizeof buf);
    mpq_test_shared("data/mnist/t10k-images-idx3-ubyte", buf, sizeof buf);
    mpq_test_shared("data/text/wikitext2-valid.txt", buf, sizeof buf);
    const char *src = getenv("MPQ_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/configs/%s", src ? src : "..", name);
    mpq_config *cfg = NULL;
    MPQ_ASSERT_OK(ctx, mpq_config_load(ctx, path, n, over, &cfg));
    return cfg;
}

/* Runs the pipeline; eval_fp / eval_q select the evaluations. */
static inline mpq_run_result *rt_run(mpq_ctx *ctx, const mpq_config *cfg, int eval_fp, int eval_q) {
    mpq_run_opts o;
    mpq_run_opts_default(&o);
    o.eval_fp = eval_fp;
    o.eval_quantized = eval_q;
    o.keep_codes = 1; /* tests compare the codes with the checkpoint */
    mpq_run_result *r = NULL;
    MPQ_ASSERT_OK(ctx, mpq_run(ctx, cfg, &o, &r));
    return r;
}

#endif
