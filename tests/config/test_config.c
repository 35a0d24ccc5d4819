/* test_config.c: the configuration parser and validator, serial.
 * Each class of error must be reported with file:line (or the override) and
 * the key; valid input must give the typed values; printing the effective
 * configuration and parsing it again must be a fixed point. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq_config.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx; /* the test driver's context */

/* Parses text; expects failure with `code` and every needle in the message. */
static void expect_error(const char *text, int n_over, char *const *over, mpq_err code,
                         const char *needle1, const char *needle2) {
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    mpq_err_clear(ctx);
    mpq_err e = mpq_config_parse(ctx, "/tmp/dir/test.cfg", text, n_over, over, &cfg);
    if (e != code)
        fail_msg("expected %s, got %s (%s) for:\n%s", mpq_err_name(code), mpq_err_name(e),
                 ctx->err_msg, text);
    assert_null(cfg);
    if (needle1 && !strstr(ctx->err_msg, needle1))
        fail_msg("message '%s' lacks '%s'", ctx->err_msg, needle1);
    if (needle2 && !strstr(ctx->err_msg, needle2))
        fail_msg("message '%s' lacks '%s'", ctx->err_msg, needle2);
}

static void test_defaults(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, NULL, NULL, 0, NULL, &cfg));
    assert_string_equal(cfg->model.format, "auto");
    assert_string_equal(cfg->log.level, "info");
    assert_int_equal(cfg->log.all_ranks, 0);
    assert_string_equal(cfg->log.event_log, "");
    assert_true(cfg->log.progress_interval == 5.0);
    /* ${MPQ_SHARED_DIR} expanded from the environment. */
    setenv("MPQ_SHARED_DIR", "/opt/shared", 1);
    mpq_config_destroy(&cfg);
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, NULL, NULL, 0, NULL, &cfg));
    assert_string_equal(cfg->model.path, "/opt/shared/data/models/stories260K/stories260K.bin");
    mpq_config_destroy(&cfg);
    assert_null(cfg);
    mpq_config_destroy(&cfg); /* NULL-safe */
}

static void test_values_and_paths(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    const char *text =
        "model = { path = \"m.bin\"; format = \"llama2c\"; tokenizer = \"/abs/t.bin\"; };\n"
        "log = { level = \"debug\"; all_ranks = true; progress_interval = 2; };\n";
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "/tmp/dir/test.cfg", text, 0, NULL, &cfg));
    assert_string_equal(cfg->model.path, "/tmp/dir/m.bin"); /* relative to the file */
    assert_string_equal(cfg->model.tokenizer, "/abs/t.bin");
    assert_string_equal(cfg->model.format, "llama2c");
    assert_string_equal(cfg->log.level, "debug");
    assert_int_equal(cfg->log.all_ranks, 1);
    assert_true(cfg->log.progress_interval == 2.0); /* an int is accepted for a float */
    mpq_config_destroy(&cfg);
}

static void test_syntax_error(void **state) {
    (void)state;
    expect_error("log = {\n  level = \"info\";\n  all_ranks = = true;\n};\n", 0, NULL,
                 MPQ_ERR_CONFIG, "/tmp/dir/test.cfg:3", "syntax error");
}

static void test_unknown_key(void **state) {
    (void)state;
    expect_error("model = {\n  formt = \"auto\";\n};\n", 0, NULL, MPQ_ERR_CONFIG,
                 "/tmp/dir/test.cfg:2: unknown key 'model.formt'", "did you mean 'model.format'");
    expect_error("log = { levle = \"info\"; };\n", 0, NULL, MPQ_ERR_CONFIG, "test.cfg:1",
                 "did you mean 'log.level'");
    expect_error("\n\nmodl = { path = \"x\"; };\n", 0, NULL, MPQ_ERR_CONFIG,
                 "test.cfg:3: unknown section 'modl'", "did you mean 'model'");
    expect_error("level = \"info\";\n", 0, NULL, MPQ_ERR_CONFIG, "unknown key 'level'",
                 "did you mean 'log.level'");
}

static void test_wrong_type(void **state) {
    (void)state;
    expect_error("log = {\n progress_interval = \"fast\";\n};\n", 0, NULL, MPQ_ERR_CONFIG,
                 "test.cfg:2: log.progress_interval", "expected a number, got a string");
    expect_error("log = { all_ranks = 1; };\n", 0, NULL, MPQ_ERR_CONFIG, "log.all_ranks",
                 "expected a boolean");
    expect_error("model = { path = 3; };\n", 0, NULL, MPQ_ERR_CONFIG, "model.path",
                 "expected a path string, got an integer");
    expect_error("log = { level = { a = 1; }; };\n", 0, NULL, MPQ_ERR_CONFIG, "log.level",
                 "nested groups");
}

static void test_out_of_range(void **state) {
    (void)state;
    expect_error("log = {\n\n progress_interval = 0.01;\n};\n", 0, NULL, MPQ_ERR_CONFIG,
                 "test.cfg:3: log.progress_interval", "out of range [0.1, 3600]");
    expect_error("log = { level = \"loud\"; };\n", 0, NULL, MPQ_ERR_CONFIG,
                 "log.level: 'loud' is not one of", "error|warn|info|debug|trace");
}

static void test_overrides(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    char *ok[] = {"log.level=trace", "log.progress_interval=0.5", "log.all_ranks=true",
                  "model.path=rel/m.bin", "model.format=\"safetensors\""};
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "/tmp/dir/test.cfg", "log = { level = \"warn\"; };", 5,
                                        ok, &cfg));
    assert_string_equal(cfg->log.level, "trace"); /* override wins over the file */
    assert_true(cfg->log.progress_interval == 0.5);
    assert_int_equal(cfg->log.all_ranks, 1);
    char cwd[4096], want[4200];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(want, sizeof want, "%s/rel/m.bin", cwd);
    assert_string_equal(cfg->model.path, want); /* relative to the working directory */
    assert_string_equal(cfg->model.format, "safetensors");
    mpq_config_destroy(&cfg);

    /* list items as long as real paths (a fixed 64-byte item once refused them) */
    char longov[1200], item[520];
    memset(item, 'd', sizeof item - 1);
    item[sizeof item - 1] = '\0';
    snprintf(longov, sizeof longov, "output.exports=[\"gguf:/%s/a.gguf\", \"gptq:/%s/b\"]", item,
             item);
    char *lists[] = {longov};
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "/tmp/dir/test.cfg", "", 1, lists, &cfg));
    assert_int_equal(cfg->output.exports.n, 2);
    assert_int_equal(strlen(cfg->output.exports.v[0]), strlen(item) + 13);
    assert_true(strncmp(cfg->output.exports.v[1], "gptq:/ddd", 9) == 0);
    mpq_config_destroy(&cfg);

    char *unknown[] = {"log.lvl=info"};
    expect_error("", 1, unknown, MPQ_ERR_CONFIG, "override '-o log.lvl=info'",
                 "did you mean 'log.level'");
    char *badtype[] = {"log.progress_interval=soon"};
    expect_error("", 1, badtype, MPQ_ERR_CONFIG, "log.progress_interval",
                 "expected a number, got 'soon'");
    char *badbool[] = {"log.all_ranks=yes"};
    expect_error("", 1, badbool, MPQ_ERR_CONFIG, "log.all_ranks", "expected a boolean");
    char *range[] = {"log.progress_interval=1e9"};
    expect_error("", 1, range, MPQ_ERR_CONFIG, "override '-o log.progress_interval=1e9'",
                 "out of range");
    char *noeq[] = {"log.level"};
    expect_error("", 1, noeq, MPQ_ERR_CONFIG, "expected section.key=value", NULL);
    char *badenum[] = {"model.format=onnx"};
    expect_error("", 1, badenum, MPQ_ERR_CONFIG, "'onnx' is not one of", "auto|llama2c");
}

static void test_include_rejected(void **state) {
    (void)state;
    expect_error("log = { level = \"info\"; };\n@include \"/etc/passwd\"\n", 0, NULL,
                 MPQ_ERR_CONFIG, "test.cfg:2", "@include is not supported");
}

static void test_unset_variable(void **state) {
    (void)state;
    unsetenv("MPQ_TEST_UNSET_VARIABLE");
    expect_error("model = { path = \"${MPQ_TEST_UNSET_VARIABLE}/m.bin\"; };\n", 0, NULL,
                 MPQ_ERR_CONFIG, "model.path", "MPQ_TEST_UNSET_VARIABLE");
}

/* Printing the effective configuration gives text that parses back to the
 * same effective configuration. */
static void test_print_roundtrip(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *a = NULL, *b = NULL;
    char *over[] = {"log.progress_interval=0.3", "model.path=/x/\"q\".bin"};
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, NULL, NULL, 2, over, &a));
    char *t1 = NULL, *t2 = NULL;
    size_t n1 = 0, n2 = 0;
    FILE *f = open_memstream(&t1, &n1);
    mpq_config_print(a, f);
    fclose(f);
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "/printed.cfg", t1, 0, NULL, &b));
    f = open_memstream(&t2, &n2);
    mpq_config_print(b, f);
    fclose(f);
    assert_string_equal(t1, t2);
    assert_true(b->log.progress_interval == 0.3);
    assert_string_equal(b->model.path, "/x/\"q\".bin");
    free(t1);
    free(t2);
    mpq_config_destroy(&a);
    mpq_config_destroy(&b);
}

/* Every allocation made while parsing can fail: the parser must then return
 * MPQ_ERR_NOMEM and release what it had (checked by ASan builds). */
static void test_allocation_failures(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const char *text = "model = { path = \"m.bin\"; };\nlog = { level = \"debug\"; };\n";
    int failures_seen = 0;
    for (int64_t k = 0; k < 200; k++) {
        mpq_config *cfg = NULL;
        mpq_alloc_fail_after(ctx, k);
        mpq_err e = mpq_config_parse(ctx, "/tmp/t.cfg", text, 0, NULL, &cfg);
        int armed = ctx->alloc_fail_countdown >= 0;
        mpq_alloc_fail_after(ctx, -1);
        if (armed) { /* the failure point was never reached: parse completed */
            MPQ_ASSERT_OK(ctx, e);
            mpq_config_destroy(&cfg);
            break;
        }
        assert_int_equal(e, MPQ_ERR_NOMEM);
        assert_null(cfg);
        if (!strstr(ctx->err_msg, "test allocator"))
            fail_msg("allocation %d: message '%s'", (int)k, ctx->err_msg);
        failures_seen++;
    }
    assert_true(failures_seen > 5);
}

static void test_edit_distance(void **state) {
    (void)state;
    assert_int_equal(mpq_edit_distance("kitten", "sitting"), 3);
    assert_int_equal(mpq_edit_distance("", "abc"), 3);
    assert_int_equal(mpq_edit_distance("same", "same"), 0);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_values_and_paths),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_include_rejected),
        cmocka_unit_test(test_unset_variable),
        cmocka_unit_test(test_print_roundtrip),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_edit_distance),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failed);
}
