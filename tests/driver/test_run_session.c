/* test_run_session.c: the parts of the session (mpq_session.h) that need no
 * model.
 *  - the stage table: every stage has its own name; the checkpoint's
 *    stage_times lists the pipeline stages in order, load first and
 *    assemble last, with this rank's accumulated seconds, and not the
 *    commands' own timers (total, measure_stage);
 *  - the inputs a configuration names: the configuration file and every
 *    set input path key, with its key;
 *  - an output that is an input (the same path, a symbolic link, a hard
 *    link) is refused naming both keys; another file is not.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq_config.h"
#include "mpq_session.h"
#include "mpq_test.h"
#include "mpq_timer.h"

static mpq_ctx *g_ctx;

static void test_stages(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    for (int a = 0; a < MPQ_STAGE_COUNT; a++) {
        assert_string_not_equal(mpq_stage_name((mpq_stage)a), "?");
        for (int b = 0; b < a; b++)
            assert_string_not_equal(mpq_stage_name((mpq_stage)a), mpq_stage_name((mpq_stage)b));
    }
    assert_string_equal(mpq_stage_name(MPQ_STAGE_COUNT), "?");
    MPQ_ASSERT_OK(ctx, mpq_stage_start(ctx, MPQ_STAGE_ASSEMBLE));
    usleep(20000);
    MPQ_ASSERT_OK(ctx, mpq_stage_stop(ctx, MPQ_STAGE_ASSEMBLE));
    MPQ_ASSERT_OK(ctx, mpq_stage_start(ctx, MPQ_STAGE_TOTAL));
    MPQ_ASSERT_OK(ctx, mpq_stage_stop(ctx, MPQ_STAGE_TOTAL));
    cJSON *o = mpq_stage_times_json(ctx);
    assert_non_null(o);
    const char *want[] = {"load",   "calibrate", "hessian",   "measure", "importance",
                          "budget", "round",     "propagate", "eval",    "assemble"};
    int n = 0;
    for (cJSON *x = o->child; x; x = x->next, n++) {
        assert_true(n < 10);
        assert_string_equal(x->string, want[n]);
        assert_true(cJSON_IsNumber(x));
        if (strcmp(x->string, "assemble") == 0)
            assert_true(x->valuedouble >= 0.015 &&
                        x->valuedouble == mpq_timer_seconds(ctx, "assemble"));
        else
            assert_true(x->valuedouble == 0.0);
    }
    assert_int_equal(n, 10);
    cJSON_Delete(o);
}

/* A scratch directory with files a (the model) and c.cfg, and links to a. */
static char g_dir[256];

static void path_of(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", g_dir, name);
}

static void test_files(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char a[512], sym[512], hard[512], other[512], cfgpath[512], text[2048];
    path_of(a, sizeof a, "model.bin");
    path_of(sym, sizeof sym, "sym.bin");
    path_of(hard, sizeof hard, "hard.bin");
    path_of(other, sizeof other, "out.h5");
    path_of(cfgpath, sizeof cfgpath, "c.cfg");
    FILE *f = fopen(a, "w");
    assert_non_null(f);
    fputs("not a model", f);
    fclose(f);
    assert_int_equal(symlink(a, sym), 0);
    assert_int_equal(link(a, hard), 0);
    snprintf(text, sizeof text,
             "model = { path = \"%s\"; tokenizer = \"\"; };\n"
             "calibration = { source = \"random\"; text = \"\"; images = \"\"; };\n"
             "eval = { text = \"\"; images = \"\"; labels = \"\"; };\n",
             a);
    f = fopen(cfgpath, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    mpq_config *cfg = NULL;
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, cfgpath, text, 0, NULL, &cfg));
    mpq_session_file in[MPQ_SESSION_MAX_FILES];
    const int64_t ni = mpq_session_named_inputs(cfg, in);
    assert_int_equal(ni, 2);
    assert_string_equal(in[0].key, "the configuration file");
    assert_string_equal(in[0].path, cfgpath);
    assert_string_equal(in[1].key, "model.path");
    assert_string_equal(in[1].path, a);

    const char *same[] = {a, sym, hard, cfgpath};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        mpq_session_file out = {"sweep.output_dir", same[i]};
        assert_int_equal(mpq_session_check_output(ctx, cfg, &out, in, ni), MPQ_ERR_CONFIG);
        char want[4096];
        snprintf(want, sizeof want,
                 "%s: sweep.output_dir: '%s' is the same file as %s ('%s'); an "
                 "output may not replace an input",
                 cfgpath, same[i], i < 3 ? "model.path" : "the configuration file",
                 i < 3 ? a : cfgpath);
        if (!strstr(ctx->err_msg, want))
            fail_msg("message '%s', expected '%s'", ctx->err_msg, want);
        mpq_err_clear(ctx);
    }
    mpq_session_file out = {"output.path", other};
    MPQ_ASSERT_OK(ctx, mpq_session_check_output(ctx, cfg, &out, in, ni));
    mpq_config_destroy(&cfg);
    unlink(sym);
    unlink(hard);
    unlink(a);
    unlink(cfgpath);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/mpq-session-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stages),
        cmocka_unit_test(test_files),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(g_dir);
    return mpq_test_finish(&g_ctx, failed);
}
