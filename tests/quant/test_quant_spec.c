/* test_quant_spec.c: parsing and canonical formatting of quantizer specs,
 * defaults, and error messages that name the field and the valid choices. */
#include <stdio.h>
#include <string.h>

#include "mpq_quant.h"
#include "mpq_test.h"

static mpq_ctx *ctx;

static void roundtrip(const char *text) {
    mpq_qspec a, b;
    char buf[MPQ_QSPEC_MAX], buf2[MPQ_QSPEC_MAX];
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, text, &a));
    mpq_qspec_format(&a, buf, sizeof buf);
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, buf, &b));
    if (!mpq_qspec_equal(&a, &b))
        fail_msg("'%s' -> '%s' does not parse back to the same spec", text, buf);
    mpq_qspec_format(&b, buf2, sizeof buf2);
    assert_string_equal(buf, buf2);
}

static void test_roundtrip(void **state) {
    (void)state;
    const char *specs[] = {
        "int:bits=4,sym=false,group=32,scale=fp16,fit=search",
        "int:bits=8,sym=true,gran=tensor,scale=fp32",
        "int:bits=1",
        "ternary:fit=threshold,group=64",
        "ternary:pack=base3,gran=tensor",
        "ternary_seq",
        "seq2",
        "binary",
        "signed_binary",
        "pow2:bits=4",
        "powerexp:bits=4,a=auto",
        "powerexp:bits=3,a=0.4375",
        "powerexp:bits=3,a=0.3",
        "fp4",
        "mxfp4",
        "nvfp4:fit=search",
        "fp8",
        "nf4:group=64",
        " int : bits = 3 , group = 172 ",
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        roundtrip(specs[i]);
    int n;
    const mpq_quant_ops *const *reg = mpq_quant_registry(&n);
    for (int i = 0; i < n; i++) {
        roundtrip(reg[i]->name);
        assert_ptr_equal(mpq_quant_find(reg[i]->name), reg[i]);
    }
}

static void test_fields(void **state) {
    (void)state;
    mpq_qspec s;
    char buf[MPQ_QSPEC_MAX];
    MPQ_ASSERT_OK(ctx,
                  mpq_qspec_parse(ctx, "int:bits=4,sym=false,group=32,scale=fp16,fit=search", &s));
    assert_string_equal(s.ops->name, "int");
    assert_int_equal(s.bits, 4);
    assert_int_equal(s.sym, 0);
    assert_int_equal(s.gran, MPQ_QGRAN_GROUP);
    assert_int_equal(s.group, 32);
    assert_int_equal(s.scale, MPQ_QSCALE_FP16);
    assert_int_equal(s.fit, MPQ_QFIT_SEARCH);
    assert_string_equal(mpq_qspec_format(&s, buf, sizeof buf),
                        "int:bits=4,sym=false,group=32,scale=fp16,fit=search");
    /* defaults */
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "int", &s));
    assert_string_equal(mpq_qspec_format(&s, buf, sizeof buf),
                        "int:bits=4,sym=false,gran=channel,scale=fp16,fit=minmax");
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "mxfp4", &s));
    assert_int_equal(s.group, 32);
    assert_int_equal(s.scale, MPQ_QSCALE_E8M0);
    assert_int_equal(s.bits, 4);
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "nvfp4", &s));
    assert_int_equal(s.group, 16);
    assert_int_equal(s.scale, MPQ_QSCALE_E4M3);
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "nf4", &s));
    assert_int_equal(s.group, 64);
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "ternary", &s));
    assert_int_equal(s.fit, MPQ_QFIT_THRESHOLD);
    assert_int_equal(s.bits, 2);
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "powerexp", &s));
    assert_true(s.a == 0.0);
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "int:group=64,gran=group", &s));
    assert_int_equal(s.group, 64);
}

/* Every bad spec fails with MPQ_ERR_CONFIG and a message holding each of the
 * given fragments. */
static void expect_error(const char *text, const char *f1, const char *f2) {
    mpq_qspec s;
    mpq_err e = mpq_qspec_parse(ctx, text, &s);
    if (e != MPQ_ERR_CONFIG)
        fail_msg("'%s' gave %s, expected MPQ_ERR_CONFIG", text, mpq_err_name(e));
    if ((f1 && !strstr(ctx->err_msg, f1)) || (f2 && !strstr(ctx->err_msg, f2)))
        fail_msg("'%s': message '%s' lacks '%s' / '%s'", text, ctx->err_msg, f1, f2 ? f2 : "");
    mpq_err_clear(ctx);
}

static void test_errors(void **state) {
    (void)state;
    expect_error("foo:bits=4", "unknown quantizer 'foo'", "int, binary, signed_binary");
    expect_error("", "unknown quantizer ''", "nf4");
    expect_error("int:bitz=4", "unknown key 'bitz'", "bits, sym, gran, group, scale, fit, a, pack");
    expect_error("int:bits=9", "bits = '9'", "[1, 8]");
    expect_error("int:bits=four", "bits = 'four'", "[1, 8]");
    expect_error("pow2:bits=1", "bits = '1'", "[2, 8]");
    expect_error("fp8:sym=true", "takes no key 'sym'", "gran, group, scale, fit");
    expect_error("mxfp4:scale=fp16", "takes no key 'scale'", NULL);
    expect_error("mxfp4:gran=channel", "gran = 'channel'", "valid: group");
    expect_error("signed_binary:group=8", "does not take gran=group", "valid: channel");
    expect_error("int:gran=channel,group=4", "group is only valid with gran=group", NULL);
    expect_error("int:bits=1,sym=true", "symmetric int needs bits >= 2", NULL);
    expect_error("int:bits", "field 'bits' is not key=value", NULL);
    expect_error("int:bits=4,bits=3", "key 'bits' given twice", NULL);
    expect_error("powerexp:a=1.5", "a = '1.5'", "(0, 1]");
    expect_error("ternary:pack=zip", "pack = 'zip'", "codes|base3");
    expect_error("ternary:fit=mean", "fit = 'mean'", "minmax|threshold|search");
    expect_error("int:scale=bf16", "scale = 'bf16'", "fp16|fp32");
    expect_error("int:group=0", "group = '0'", ">= 1");
    expect_error("int:sym=maybe", "sym = 'maybe'", "true or false");
}

int main(int argc, char **argv) {
    ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_errors),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&ctx, failures);
}
