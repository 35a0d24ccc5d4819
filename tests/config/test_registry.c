/* test_registry.c: every registry of variants (mpq_registry.h) and the
 * configuration keys that take their allowed values from one, serial.
 *
 * For each registry: names are non-empty and unique, the descriptor's
 * lookup finds every entry at its index and the registry's own find
 * function returns that entry, an unknown name gives an error that lists
 * every name, and the name list is cut cleanly when the buffer is short.
 * For the configuration: each variant key's allowed values are exactly the
 * registry's names (also first), its default is one of them, an unknown
 * value is rejected with the list, and mpq_config_set_registries refuses
 * incomplete or wrong tables. */
#include <stdio.h>
#include <string.h>

#include "mpq_calibrate.h"
#include "mpq_ckpt.h"
#include "mpq_cli.h"
#include "mpq_config.h"
#include "mpq_family.h"
#include "mpq_hessian.h"
#include "mpq_model_format.h"
#include "mpq_quant.h"
#include "mpq_registry.h"
#include "mpq_robust.h"
#include "mpq_round.h"
#include "mpq_importance.h"
#include "mpq_sweep.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx; /* the test driver's context */

/* A registry, its own find function (as a pointer to the entry), and the
 * entry at index i of its array. */
typedef struct reg_case {
    const char *label;
    const mpq_registry *reg;
    const void *(*find)(const char *name);
    const void *(*at)(int64_t i);
    int64_t min_count;
} reg_case;

#define FIND(fn)                                                                                   \
    static const void *find_##fn(const char *name) {                                               \
        return fn(name);                                                                           \
    }
FIND(mpq_family_find)
FIND(mpq_model_format_find)
FIND(mpq_export_format_find)
FIND(mpq_hfactor_backend_find)
FIND(mpq_hfactor_policy_find)
FIND(mpq_round_method_find)
FIND(mpq_quant_find)
FIND(mpq_calib_source_find)

static const void *at_family(int64_t i) {
    return mpq_family_registry[i];
}
static const void *at_model_format(int64_t i) {
    return mpq_model_formats[i];
}
static const void *at_export_format(int64_t i) {
    return mpq_export_formats[i];
}
static const void *at_backend(int64_t i) {
    return mpq_hfactor_backends[i];
}
static const void *at_policy(int64_t i) {
    return mpq_hfactor_policies[i];
}
static const void *at_method(int64_t i) {
    return mpq_round_methods[i];
}
static const void *at_quant(int64_t i) {
    return mpq_quant_registry(NULL)[i];
}
static const void *at_source(int64_t i) {
    return mpq_calib_sources[i];
}

static const reg_case cases[] = {
    {"model families", &mpq_family_reg, find_mpq_family_find, at_family, 2},
    {"model formats", &mpq_model_format_reg, find_mpq_model_format_find, at_model_format, 3},
    {"export formats", &mpq_export_format_reg, find_mpq_export_format_find, at_export_format, 2},
    {"Hessian backends", &mpq_hfactor_backend_reg, find_mpq_hfactor_backend_find, at_backend, 2},
    {"ScaLAPACK policies", &mpq_hfactor_policy_reg, find_mpq_hfactor_policy_find, at_policy, 3},
    {"rounding methods", &mpq_round_method_reg, find_mpq_round_method_find, at_method, 4},
    {"quantizers", &mpq_quant_reg, find_mpq_quant_find, at_quant, 13},
    {"calibration sources", &mpq_calib_source_reg, find_mpq_calib_source_find, at_source, 4},
    {"CNN ops", &mpq_cnn_op_reg, NULL, NULL, 6},
    {"non-finite policies", &mpq_nonfinite_policy_reg, NULL, NULL, 2},
    {"non-finite policies", &mpq_nonfinite_policy_reg, NULL, NULL, 2},
};
#define NCASES (sizeof cases / sizeof cases[0])

/* Names unique and non-empty; index and find agree with the arrays; the
 * array ends (NULL) where the names end. */
static void test_names_unique_and_found(void **state) {
    (void)state;
    for (size_t c = 0; c < NCASES; c++) {
        const reg_case *rc = &cases[c];
        int64_t n = mpq_registry_count(rc->reg);
        if (n < rc->min_count)
            fail_msg("%s: %lld entries, expected at least %lld", rc->label, (long long)n,
                     (long long)rc->min_count);
        assert_non_null(rc->reg->what);
        for (int64_t i = 0; i < n; i++) {
            const char *name = rc->reg->name_at(i);
            assert_non_null(name);
            assert_true(name[0] != '\0');
            for (int64_t j = 0; j < i; j++)
                if (strcmp(name, rc->reg->name_at(j)) == 0)
                    fail_msg("%s: name '%s' appears twice", rc->label, name);
            if (rc->reg->also && strcmp(name, rc->reg->also) == 0)
                fail_msg("%s: entry '%s' shadows the extra value", rc->label, name);
            assert_int_equal(mpq_registry_index(rc->reg, name), i);
            if (rc->find) {
                assert_non_null(rc->at(i));
                assert_ptr_equal(rc->find(name), rc->at(i));
            }
            if (rc->reg->fields_at)
                assert_non_null(rc->reg->fields_at(i));
        }
        if (rc->at)
            assert_null(rc->at(n));
        assert_int_equal(mpq_registry_index(rc->reg, "no-such-variant"), -1);
        assert_int_equal(mpq_registry_index(rc->reg, NULL), -1);
        if (rc->reg->also)
            assert_int_equal(mpq_registry_index(rc->reg, rc->reg->also), -1);
        if (rc->find)
            assert_null(rc->find("no-such-variant"));
    }
}

/* mpq_registry_lookup: the index of a known name; for an unknown one, the
 * requested code and a message that names it and lists every name. */
static void test_lookup_lists_names(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    for (size_t c = 0; c < NCASES; c++) {
        const mpq_registry *r = cases[c].reg;
        int64_t i = -2;
        MPQ_ASSERT_OK(ctx, mpq_registry_lookup(ctx, r, r->name_at(0), MPQ_ERR_CONFIG, NULL, &i));
        assert_int_equal(i, 0);
        mpq_err_clear(ctx);
        assert_int_equal(mpq_registry_lookup(ctx, r, "bogus", MPQ_ERR_ARG, NULL, &i), MPQ_ERR_ARG);
        assert_int_equal(i, -1);
        char want[128];
        snprintf(want, sizeof want, "unknown %s 'bogus' (known: ", r->what);
        if (!strstr(ctx->err_msg, want))
            fail_msg("%s: message '%s' lacks '%s'", cases[c].label, ctx->err_msg, want);
        for (int64_t k = 0; r->name_at(k); k++)
            if (!strstr(ctx->err_msg, r->name_at(k)))
                fail_msg("%s: message '%s' lacks '%s'", cases[c].label, ctx->err_msg,
                         r->name_at(k));
        if (r->also && !strstr(ctx->err_msg, r->also))
            fail_msg("%s: message '%s' lacks '%s'", cases[c].label, ctx->err_msg, r->also);
        mpq_err_clear(ctx);
    }
    int64_t i = 0;
    assert_int_equal(mpq_registry_lookup(ctx, &mpq_export_format_reg, "onnx", MPQ_ERR_ARG,
                                         "export: unknown --format", &i),
                     MPQ_ERR_ARG);
    assert_string_equal(
        ctx->err_msg,
        "export: unknown --format 'onnx' (known: safetensors, llama2c, gguf, gptq, gptq-v2)");
    mpq_err_clear(ctx);
}

static void test_names_list(void **state) {
    (void)state;
    char buf[256];
    assert_string_equal(mpq_registry_names(&mpq_family_reg, "|", buf, sizeof buf),
                        "auto|llama|cnn");
    assert_string_equal(mpq_registry_names(&mpq_round_method_reg, ", ", buf, sizeof buf),
                        "rtn, gptq, adaround, signround");
    /* Cut at the buffer, always terminated, never a partial separator run
     * past the end. */
    char small[8];
    mpq_registry_names(&mpq_round_method_reg, ", ", small, sizeof small);
    assert_true(strlen(small) <= sizeof small - 1);
    assert_int_equal(strncmp(small, "rtn, gp", strlen(small)), 0);
    char none[1] = {'x'};
    mpq_registry_names(&mpq_round_method_reg, ", ", none, sizeof none);
    assert_int_equal(none[0], '\0');
}

/* The configuration keys that name a variant and the registry of each. */
static const struct {
    const char *key;
    const mpq_registry *reg;
} keys[] = {
    {"model.format", &mpq_model_format_reg},
    {"model.family", &mpq_family_reg},
    {"model.cnn", &mpq_cnn_op_reg},
    {"hessian.scalapack", &mpq_hfactor_policy_reg},
    {"quant.method", &mpq_round_method_reg},
    {"calibration.source", &mpq_calib_source_reg},
    {"robust.nonfinite", &mpq_nonfinite_policy_reg},
    {"importance.method", &mpq_importance_reg},
    {"sweep.metric", &mpq_sweep_metric_reg}, /* one key per line */
};
#define NKEYS (sizeof keys / sizeof keys[0])

static const mpq_key_spec *key_spec(const char *key) {
    for (int i = 0; i < mpq_config_nkeys; i++)
        if (strcmp(mpq_config_keys[i].key, key) == 0)
            return &mpq_config_keys[i];
    fail_msg("no key %s", key);
    return NULL;
}

/* Allowed values = the registry's names; the default is one of them; an
 * unknown value is an error listing them; every name is accepted. */
static void test_config_values_from_registries(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    for (size_t k = 0; k < NKEYS; k++) {
        const mpq_key_spec *ks = key_spec(keys[k].key);
        assert_null(ks->choices); /* typed nowhere but in the registry */
        char got[512], want[512];
        mpq_config_choices(ks, got, sizeof got);
        mpq_registry_names(keys[k].reg, "|", want, sizeof want);
        assert_string_equal(got, want);
        if (ks->type != MPQ_KEY_ENUM)
            continue;
        assert_true(mpq_registry_index(keys[k].reg, ks->def) >= 0 ||
                    (keys[k].reg->also && strcmp(keys[k].reg->also, ks->def) == 0));
        char ov[128];
        char *over[1] = {ov};
        mpq_config *cfg = NULL;
        snprintf(ov, sizeof ov, "%s=bogus", ks->key);
        assert_int_equal(mpq_config_parse(ctx, NULL, NULL, 1, over, &cfg), MPQ_ERR_CONFIG);
        assert_null(cfg);
        char needle[640];
        snprintf(needle, sizeof needle, "%s: 'bogus' is not one of %s", ks->key, want);
        if (!strstr(ctx->err_msg, needle))
            fail_msg("message '%s' lacks '%s'", ctx->err_msg, needle);
        mpq_err_clear(ctx);
        for (int64_t i = 0; keys[k].reg->name_at(i); i++) {
            snprintf(ov, sizeof ov, "%s=%s", ks->key, keys[k].reg->name_at(i));
            MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, NULL, NULL, 1, over, &cfg));
            mpq_config_destroy(&cfg);
        }
    }
}

/* An op list takes its ops and their fields from the registry. */
static void test_config_oplist_from_registry(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    const char *text = "model = { cnn = ( { op = \"maxpool\"; }, { op = \"relu\"; } ); };";
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "/tmp/t.cfg", text, 0, NULL, &cfg));
    assert_int_equal(cfg->model.cnn.n, 2);
    /* maxpool's fields with their defaults, as its registry entry lists them. */
    assert_int_equal(mpq_op_get(&cfg->model.cnn.v[0], "kernel")->i, 2);
    assert_int_equal(mpq_op_get(&cfg->model.cnn.v[0], "stride")->i, 0);
    assert_int_equal(cfg->model.cnn.v[1].nfields, 0);
    mpq_config_destroy(&cfg);
    assert_int_equal(mpq_config_parse(ctx, "/tmp/t.cfg",
                                      "model = { cnn = ( { op = \"conv3d\"; } ); };", 0, NULL,
                                      &cfg),
                     MPQ_ERR_CONFIG);
    char names[256], needle[300];
    snprintf(needle, sizeof needle, "unknown op 'conv3d' (known: %s)",
             mpq_registry_names(&mpq_cnn_op_reg, ", ", names, sizeof names));
    if (!strstr(ctx->err_msg, needle))
        fail_msg("message '%s' lacks '%s'", ctx->err_msg, needle);
    mpq_err_clear(ctx);
}

/* Incomplete or wrong tables are refused (and leave the registered table in
 * place); the program's own table is accepted again. */
static void test_set_registries_checks(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const mpq_config_registry missing[] = {{"quant.method", &mpq_round_method_reg}};
    assert_int_equal(mpq_config_set_registries(ctx, missing, 1), MPQ_ERR_INTERNAL);
    assert_non_null(strstr(ctx->err_msg, "none is given"));
    mpq_err_clear(ctx);
    mpq_config_registry table[NKEYS + 1];
    for (size_t k = 0; k < NKEYS; k++)
        table[k] = (mpq_config_registry){keys[k].key, keys[k].reg};
    table[NKEYS] = (mpq_config_registry){"log.level", &mpq_round_method_reg};
    assert_int_equal(mpq_config_set_registries(ctx, table, (int)NKEYS + 1), MPQ_ERR_INTERNAL);
    assert_non_null(strstr(ctx->err_msg, "log.level"));
    mpq_err_clear(ctx);
    table[NKEYS] = table[0];
    assert_int_equal(mpq_config_set_registries(ctx, table, (int)NKEYS + 1), MPQ_ERR_INTERNAL);
    assert_non_null(strstr(ctx->err_msg, "two registries"));
    mpq_err_clear(ctx);
    /* An op list needs a registry of ops (with fields). */
    for (size_t k = 0; k < NKEYS; k++)
        if (strcmp(table[k].key, "model.cnn") == 0)
            table[k].reg = &mpq_round_method_reg;
    assert_int_equal(mpq_config_set_registries(ctx, table, (int)NKEYS), MPQ_ERR_INTERNAL);
    mpq_err_clear(ctx);
    /* Still the program's table: a default configuration parses. */
    mpq_config *cfg = NULL;
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, NULL, NULL, 0, NULL, &cfg));
    mpq_config_destroy(&cfg);
    MPQ_ASSERT_OK(ctx, mpq_cli_register_registries(ctx));
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv); /* registers the registries */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_unique_and_found),
        cmocka_unit_test(test_lookup_lists_names),
        cmocka_unit_test(test_names_list),
        cmocka_unit_test(test_config_values_from_registries),
        cmocka_unit_test(test_config_oplist_from_registry),
        cmocka_unit_test(test_set_registries_checks),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failed);
}
