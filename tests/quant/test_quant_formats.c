/* test_quant_formats.c: the scale and grid number formats (fp16, FP8 E4M3,
 * E8M0) against brute force over every representable value decoded
 * independently from bit fields, the NF4 table against the normal
 * quantiles it is defined by, fp16z scales against what GGUF's Q4_1 /
 * Q5_1 compute, and the scales clamped at the top of their format. */
#include <stdio.h>
#include <string.h>

#include "mpq_quant.h"
#include "mpq_test.h"
#include "quant_ref.h"

static mpq_ctx *ctx;

/* Positive finite values of a format with `eb` exponent bits, `mb` mantissa
 * bits and bias (all-ones exponent reserved when ieee, else only the
 * all-ones pattern), ascending, with their bit patterns. */
static int enumerate(int eb, int mb, int bias, int ieee, double *v, unsigned *bits) {
    int n = 0;
    for (unsigned b = 1; b < (1u << (eb + mb)); b++) {
        unsigned e = b >> mb, m = b & ((1u << mb) - 1);
        if (ieee && e == (1u << eb) - 1)
            continue;
        if (!ieee && b == (1u << (eb + mb)) - 1)
            continue;
        double x =
            e == 0 ? ldexp((double)m, 1 - bias - mb) : ldexp(1.0 + ldexp(m, -mb), (int)e - bias);
        v[n] = x;
        bits[n] = b;
        n++;
    }
    return n;
}

/* Nearest of the ascending values (ties: even pattern). */
static double nearest(const double *v, const unsigned *bits, int n, double x) {
    int best = 0;
    for (int i = 1; i < n; i++) {
        double d = fabs(x - v[i]), db = fabs(x - v[best]);
        if (d < db || (d == db && (bits[i] & 1) == 0))
            best = i;
    }
    return v[best];
}

static void check_rounding(float (*fn)(float), int eb, int mb, int bias, int ieee,
                           const char *name) {
    static double v[65536];
    static unsigned bits[65536];
    int n = enumerate(eb, mb, bias, ieee, v, bits);
    qr_rng rng = {21};
    double lo = log(v[0] / 4), hi = log(v[n - 1] * 1.01);
    int checked = 0;
    for (int i = 0; i < n + 3000; i++) {
        float x;
        if (i < n - 1) /* midpoints between neighbours: the ties */
            x = (float)(0.5 * (v[i] + v[i + 1]));
        else if (i == n - 1)
            x = (float)v[n - 1] * 1.0001f;
        else
            x = (float)exp(lo + (hi - lo) * qr_unif(&rng));
        double want = nearest(v, bits, n, (double)x);
        float got = fn(x);
        if ((double)got != want)
            fail_msg("%s(%.9g) = %.9g, expected %.9g", name, (double)x, (double)got, want);
        /* one ulp either side of a midpoint */
        if (i < n - 1) {
            float a = nextafterf(x, 0.0f), b = nextafterf(x, INFINITY);
            assert_true((double)fn(a) == nearest(v, bits, n, (double)a));
            assert_true((double)fn(b) == nearest(v, bits, n, (double)b));
        }
        checked++;
    }
    assert_true(checked > 100);
}

static void test_fp16(void **state) {
    (void)state;
    check_rounding(mpq_round_fp16, 5, 10, 15, 1, "fp16");
    static double v[65536];
    static unsigned bits[65536];
    int n = enumerate(5, 10, 15, 1, v, bits);
    assert_int_equal(n, 31 * 1024 - 1);
    for (int i = 0; i < n; i++) {
        assert_int_equal(mpq_fp16_bits((float)v[i]), bits[i]);
        assert_true((double)mpq_fp16_value((uint16_t)bits[i]) == v[i]);
    }
    assert_true(mpq_round_fp16(1e9f) == 65504.0f);
    assert_true(mpq_round_fp16(0.0f) == ldexpf(1.0f, -24));
}

static void test_e4m3(void **state) {
    (void)state;
    check_rounding(mpq_round_e4m3, 4, 3, 7, 0, "e4m3");
    static double v[256];
    static unsigned bits[256];
    int n = enumerate(4, 3, 7, 0, v, bits);
    assert_int_equal(n, 126);
    assert_true(v[n - 1] == 448.0);
    for (int i = 0; i < n; i++) {
        assert_int_equal(mpq_e4m3_bits((float)v[i]), bits[i]);
        assert_true((double)mpq_e4m3_value((uint8_t)bits[i]) == v[i]);
        assert_true((double)mpq_e4m3_value((uint8_t)(bits[i] | 0x80)) == -v[i]);
    }
    assert_true(isnan(mpq_e4m3_value(0x7F)) && isnan(mpq_e4m3_value(0xFF)));
}

static void test_e8m0(void **state) {
    (void)state;
    qr_rng rng = {22};
    for (int i = 0; i < 5000; i++) {
        float x = (float)exp(-80.0 + 160.0 * qr_unif(&rng));
        float f = mpq_floor_e8m0(x);
        int k;
        float m = frexpf(f, &k);
        assert_true(m == 0.5f);
        assert_true(f <= x && x < 2.0f * f);
    }
    assert_true(mpq_floor_e8m0(1.0f) == 1.0f);
    assert_true(mpq_floor_e8m0(6.0f) == 4.0f);
}

static void test_nf4(void **state) {
    (void)state;
    double lv[16];
    qr_nf4(lv);
    for (int i = 0; i < 16; i++)
        if (fabs(lv[i] - (double)mpq_nf4_levels[i]) > 1e-7)
            fail_msg("NF4 level %d: table %.9g, normal quantile %.9g", i, (double)mpq_nf4_levels[i],
                     lv[i]);
    assert_true(mpq_nf4_levels[0] == -1.0f && mpq_nf4_levels[15] == 1.0f &&
                mpq_nf4_levels[7] == 0.0f);
}

/* fp16z: on random layers of asymmetric int4 and int5 in groups of 32 (every
 * fit), each scale is a half with at most 11 - bits significant bits, m =
 * -scale * zero is a half, and for every code q the float d * q + m (ggml's
 * Q4_1 / Q5_1 dequantization, two roundings) equals mpquant's value
 * scale * (q - zero), bit for bit; plain fp16 scales fail that somewhere. */
static int q41_exact(const mpq_qparams *p, int *sigbits_ok) {
    int exact = 1;
    *sigbits_ok = 1;
    for (int64_t g = 0; g < p->ngroups; g++) {
        const float s = p->scale[g], z = (float)p->zero[g];
        int e = 0;
        const double m = frexp((double)s, &e);
        *sigbits_ok &= ldexp(m, 11 - p->spec.bits) == nearbyint(ldexp(m, 11 - p->spec.bits));
        const float mn = -(s * z);
        exact &= mpq_round_fp16(s * z) == s * z; /* m is a half (rounding of positives) */
        for (int q = 0; q < (1 << p->spec.bits); q++) {
            volatile float dq = s * (float)q; /* no fused multiply-add */
            exact &= (float)(dq + mn) == mpq_qval(s, (float)q, z);
        }
    }
    return exact;
}

static void test_fp16z(void **state) {
    (void)state;
    const char *specs[] = {"int:bits=4,group=32,scale=fp16z", "int:bits=5,group=32,scale=fp16z",
                           "int:bits=4,group=32,scale=fp16z,fit=search",
                           "int:bits=4,group=32,scale=fp16"};
    float *w = NULL;
    const int64_t rows = 64, cols = 256;
    MPQ_ASSERT_OK(ctx, mpq_malloc(ctx, rows * cols, sizeof *w, (void **)&w));
    uint64_t st = 42;
    for (int64_t i = 0; i < rows * cols; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        w[i] = (float)((double)(st >> 11) * 0x1p-53 - 0.3) * 0.05f;
    }
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        mpq_qspec spec;
        mpq_qparams *p = NULL;
        MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, specs[k], &spec));
        MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, rows, cols, &p));
        MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, p, w, NULL));
        int sig = 0;
        const int exact = q41_exact(p, &sig);
        if (k < 3) {
            assert_true(sig);
            assert_true(exact);
        } else {
            assert_false(exact); /* the check can fail */
        }
        mpq_qparams_destroy(&p);
    }
    mpq_free(w);
    mpq_qspec spec;
    assert_int_equal(mpq_qspec_parse(ctx, "int:bits=4,sym=true,scale=fp16z", &spec),
                     MPQ_ERR_CONFIG);
    assert_non_null(strstr(ctx->err_msg, "scale = fp16z shapes scales for a zero-point"));
    mpq_err_clear(ctx);
}

/* Groups of 32 of one row of 128: group 1 holds 1e7 (a scale of 1e7 / 7.5
 * is beyond fp16's 65504: clamped, the grid reaches 65504 * 15), group 2
 * holds 4e5 (needs 53333: within fp16), group 3 the other finite extreme
 * (3e38). NVFP4's E4M3 scales sit under a tensor scale and fp32 scales
 * reach 1e38: neither clamps. */
static void test_clamped(void **state) {
    (void)state;
    enum { COLS = 128 };
    float w[COLS];
    for (int c = 0; c < COLS; c++)
        w[c] = 0.01f * (float)(c % 7) - 0.03f;
    w[40] = 1e7f;
    w[70] = 4e5f;
    w[100] = -3e38f;
    const struct {
        const char *spec;
        int64_t groups, first;
    } cases[] = {{"int:bits=4,group=32", 2, 1},
                 {"int:bits=4,group=32,scale=fp16z", 2, 1},
                 {"int:bits=4,group=32,scale=fp32", 0, 0},
                 {"nvfp4", 0, 0},
                 {"int:bits=4,group=32,fit=search", 2, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        mpq_qspec spec;
        mpq_qparams *p = NULL;
        mpq_qclamp cl;
        MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, cases[k].spec, &spec));
        MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, 1, COLS, &p));
        MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, p, w, NULL));
        mpq_quant_clamped(p, w, &cl);
        assert_int_equal(cl.groups, cases[k].groups);
        if (cl.groups) {
            assert_int_equal(cl.group, cases[k].first);
            assert_int_equal(cl.col0, 32 * cases[k].first);
            assert_int_equal(cl.col1, 32 * cases[k].first + 32);
            assert_true(cl.amax > cl.reach);
        }
        assert_int_equal(mpq_quant_warn_clamped(ctx, "test.layer", p, w, 0), cases[k].groups);
        mpq_qparams_destroy(&p);
    }
    /* the same 1e7 in a whole-tensor group: one group, whatever the rows */
    float w2[2 * COLS];
    memcpy(w2, w, sizeof w);
    memcpy(w2 + COLS, w, sizeof w);
    w2[100] = w2[COLS + 100] = 0.0f;
    mpq_qspec spec;
    mpq_qparams *p = NULL;
    mpq_qclamp cl;
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "int:bits=4,gran=tensor", &spec));
    MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, 2, COLS, &p));
    MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, p, w2, NULL));
    mpq_quant_clamped(p, w2, &cl);
    assert_int_equal(cl.groups, 1);
    assert_int_equal(cl.row, 0);
    mpq_qparams_destroy(&p);
}

int main(int argc, char **argv) {
    ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16), cmocka_unit_test(test_e4m3),  cmocka_unit_test(test_e8m0),
        cmocka_unit_test(test_nf4),  cmocka_unit_test(test_fp16z), cmocka_unit_test(test_clamped),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&ctx, failures);
}
