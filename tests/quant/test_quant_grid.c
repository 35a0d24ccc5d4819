/* test_quant_grid.c: every quantizer at every granularity it takes, on
 * random and heavy-tailed data, against a brute-force nearest-grid-point
 * search over the grid written from the family's definition (quant_ref.h):
 * codes and dequantized values equal; dequantize(quantize(x)) a fixed point;
 * every value on the grid; neighbours bracketing and adjacent; storage cost
 * equal to the packed codes plus the serialized parameters (and to the
 * format's formula); parameters surviving serialization bit for bit; the
 * search fit never worse than the closed-form fits. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mpq_quant.h"
#include "mpq_test.h"
#include "quant_ref.h"

static mpq_ctx *ctx;

/* Shape with cols not a multiple of 8, 16, 32 or the groups used. */
#define ROWS 6
#define COLS 75

/* Families and their spec variants (granularity is added by the test). */
static const char *const variants[] = {
    "int:bits=1",
    "int:bits=2",
    "int:bits=3",
    "int:bits=4",
    "int:bits=5",
    "int:bits=6",
    "int:bits=7",
    "int:bits=8",
    "int:bits=2,sym=true",
    "int:bits=3,sym=true",
    "int:bits=4,sym=true",
    "int:bits=8,sym=true",
    "int:bits=4,scale=fp32",
    "int:bits=3,fit=search",
    "binary",
    "binary:fit=search,scale=fp32",
    "signed_binary",
    "signed_binary:fit=search",
    "ternary",
    "ternary:pack=base3",
    "ternary:fit=search",
    "ternary_seq",
    "ternary_seq:pack=base3,fit=search",
    "seq2",
    "seq2:fit=search",
    "pow2:bits=2",
    "pow2:bits=3",
    "pow2:bits=4",
    "pow2:bits=8",
    "powerexp:bits=3",
    "powerexp:bits=4",
    "powerexp:bits=4,a=0.5",
    "powerexp:bits=5,fit=search",
    "fp4",
    "fp4:scale=fp32,fit=search",
    "mxfp4",
    "mxfp4:fit=search",
    "nvfp4",
    "nvfp4:fit=search",
    "fp8",
    "fp8:scale=fp16",
    "nf4",
    "nf4:fit=search",
};
#define NVARIANTS ((int)(sizeof variants / sizeof variants[0]))

static const char *const grans[] = {"gran=tensor", "gran=channel", "group=32", "group=7",
                                    "group=16"};

static int spec_for(const char *variant, const char *gran, mpq_qspec *spec) {
    char text[200];
    snprintf(text, sizeof text, "%s%s%s", variant, strchr(variant, ':') ? "," : ":", gran);
    mpq_err e = mpq_qspec_parse(ctx, text, spec);
    if (e != MPQ_OK)
        mpq_err_clear(ctx); /* the family does not take this granularity */
    return e == MPQ_OK;
}

/* Expected byte count from the storage formats, written independently. */
static int64_t expected_bytes(const mpq_qparams *p) {
    const mpq_qspec *s = &p->spec;
    int64_t n = p->rows * p->cols, ng;
    if (s->gran == MPQ_QGRAN_TENSOR)
        ng = 1;
    else if (s->gran == MPQ_QGRAN_CHANNEL)
        ng = p->rows;
    else
        ng = p->rows * ((p->cols + s->group - 1) / s->group);
    int64_t codes = s->base3 ? (n + 4) / 5 : (n * s->bits + 7) / 8;
    int sb = s->scale == MPQ_QSCALE_FP16 ? 2 : s->scale == MPQ_QSCALE_FP32 ? 4 : 1;
    int64_t bytes = codes + ng * sb;
    if (!strcmp(s->ops->name, "int") && !s->sym)
        bytes += (ng * s->bits + 7) / 8;
    if (!strcmp(s->ops->name, "signed_binary"))
        bytes += (p->rows + 7) / 8;
    if (!strcmp(s->ops->name, "nvfp4") || !strcmp(s->ops->name, "powerexp"))
        bytes += 4;
    return bytes;
}

/* Runs every check on one spec and data kind; returns the number of
 * failures (printed). */
static int check_one(const mpq_qspec *spec, int kind, uint64_t seed) {
    char name[MPQ_QSPEC_MAX];
    mpq_qspec_format(spec, name, sizeof name);
    int fails = 0;
#define FAILF(...)                                                                                 \
    do {                                                                                           \
        if (fails++ < 5) {                                                                         \
            printf("  %s [%s]: ", name, kind ? "heavy" : "normal");                                \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)
    float w[ROWS * COLS], deq[ROWS * COLS], deq2[ROWS * COLS], vlo[COLS], vhi[COLS];
    uint8_t codes2[ROWS * COLS], lo[COLS], hi[COLS], unpacked[ROWS * COLS];
    qr_rng rng = {seed};
    qr_fill(&rng, kind, w, ROWS * COLS);
    /* a few weights exactly on the boundary of the range */
    w[3] = 0.0f;

    mpq_qlayer *L = NULL;
    mpq_qparams *back = NULL;
    MPQ_ASSERT_OK(ctx, mpq_qlayer_create(ctx, spec, ROWS, COLS, &L));
    MPQ_ASSERT_OK(ctx, mpq_qlayer_quantize(ctx, L, w, NULL));
    const mpq_qparams *p = L->params;
    mpq_qlayer_dequantize(L, deq);

    for (int64_t r = 0; r < ROWS; r++) {
        qr_grid ref;
        qr_family_grid(p, r, &ref);
        mpq_quant_row_neighbours(p, r, w + r * COLS, lo, hi, vlo, vhi);
        for (int64_t c = 0; c < COLS; c++) {
            int64_t g = mpq_qgroup_of(p, r, c);
            float s = p->scale[g] * p->tensor_scale, z = p->zero ? (float)p->zero[g] : 0.0f;
            /* the grid: library enumeration == definition */
            float gv[MPQ_QMAXCODES];
            uint8_t gc[MPQ_QMAXCODES];
            int gn;
            mpq_quant_grid(p, r, c, gv, gc, &gn);
            float rv[256];
            for (int j = 0; j < ref.n; j++)
                rv[j] = s * ((float)ref.level[j] - z);
            if (c == 0 || c % p->gcols == 0) {
                if (gn != ref.n) {
                    FAILF("grid of [%lld][%lld] has %d points, definition %d", (long long)r,
                          (long long)c, gn, ref.n);
                } else {
                    for (int j = 0; j < gn; j++)
                        if (gv[j] != rv[j] || gc[j] != ref.code[j])
                            FAILF("grid point %d: (%u, %.9g) vs definition (%d, %.9g)", j, gc[j],
                                  (double)gv[j], ref.code[j], (double)rv[j]);
                }
            }
            /* brute-force nearest (ties to the lower value) */
            float x = w[r * COLS + c];
            int best = 0;
            for (int j = 1; j < ref.n; j++)
                if (fabsf(x - rv[j]) < fabsf(x - rv[best]))
                    best = j;
            uint8_t code = L->codes[r * COLS + c];
            if (code != ref.code[best] || deq[r * COLS + c] != rv[best])
                FAILF("w[%lld][%lld] = %.9g: code %u value %.9g, brute force code %d value %.9g",
                      (long long)r, (long long)c, (double)x, code, (double)deq[r * COLS + c],
                      ref.code[best], (double)rv[best]);
            /* neighbours: on the grid, bracketing, adjacent */
            int jl = -1, jh = -1;
            for (int j = 0; j < ref.n; j++) {
                if (rv[j] == vlo[c] && ref.code[j] == lo[c])
                    jl = j;
                if (rv[j] == vhi[c] && ref.code[j] == hi[c])
                    jh = j;
            }
            int ok = jl >= 0 && jh >= 0;
            if (ok && x < rv[0])
                ok = jl == 0 && jh == 0;
            else if (ok && x > rv[ref.n - 1])
                ok = jl == ref.n - 1 && jh == ref.n - 1;
            else if (ok)
                ok = vlo[c] <= x && x <= vhi[c] && (jh == jl + 1 || (jl == jh && rv[jl] == x));
            if (!ok)
                FAILF("w[%lld][%lld] = %.9g: neighbours (%u, %.9g) (%u, %.9g) do not bracket it",
                      (long long)r, (long long)c, (double)x, lo[c], (double)vlo[c], hi[c],
                      (double)vhi[c]);
            /* the per-element forms agree with the row forms */
            float ve;
            if (mpq_quant_nearest_at(p, r, c, x, &ve) != code || ve != deq[r * COLS + c] ||
                mpq_quant_value_at(p, r, c, code) != deq[r * COLS + c])
                FAILF("per-element forms differ at [%lld][%lld]", (long long)r, (long long)c);
            /* integer grids: the vectorizable form GPTQ's panels use, code and value */
            const mpq_qtable *tb = mpq_qtable_of(p, r);
            if (tb->ident) {
                const float sc = mpq_qscale_of(p, mpq_qgroup_of(p, r, c));
                const float zc = mpq_qzero_of(p, mpq_qgroup_of(p, r, c));
                float vi;
                const uint8_t ki =
                    mpq_qnearest_int(sc, 1.0f / sc, zc, tb->sorted[0], (float)(tb->n - 1), x, &vi);
                if (ki != code || vi != deq[r * COLS + c])
                    FAILF("mpq_qnearest_int at [%lld][%lld]: code %u value %.9g, row form %u %.9g",
                          (long long)r, (long long)c, ki, (double)vi, code,
                          (double)deq[r * COLS + c]);
            }
        }
    }

    /* fixed point */
    mpq_quant_quantize(p, deq, codes2);
    mpq_quant_dequantize(p, codes2, deq2);
    if (memcmp(codes2, L->codes, sizeof codes2) != 0 || memcmp(deq2, deq, sizeof deq) != 0)
        FAILF("dequantize(quantize(x)) is not a fixed point");
    if (mpq_quant_check_codes(ctx, p, L->codes) != MPQ_OK)
        FAILF("valid codes rejected: %s", ctx->err_msg);

    /* storage: real bytes == reported cost == formula */
    int64_t bits;
    MPQ_ASSERT_OK(ctx, mpq_quant_storage_bits(ctx, spec, ROWS, COLS, &bits));
    if (bits != 8 * (L->packed_bytes + L->nparam_bytes) || bits != mpq_qlayer_bits(L) ||
        bits != 8 * expected_bytes(p))
        FAILF("storage %lld bits, packed %lld + params %lld bytes, formula %lld bytes",
              (long long)bits, (long long)L->packed_bytes, (long long)L->nparam_bytes,
              (long long)expected_bytes(p));

    /* round trip through the bytes */
    MPQ_ASSERT_OK(ctx,
                  mpq_quant_unpack(ctx, spec, L->packed, L->packed_bytes, ROWS * COLS, unpacked));
    if (memcmp(unpacked, L->codes, sizeof unpacked) != 0)
        FAILF("unpack(pack(codes)) differs");
    MPQ_ASSERT_OK(ctx, mpq_qparams_deserialize(ctx, spec, ROWS, COLS, L->param_bytes,
                                               L->nparam_bytes, &back));
    if (memcmp(back->scale, p->scale, (size_t)p->ngroups * sizeof(float)) != 0 ||
        (p->zero && memcmp(back->zero, p->zero, (size_t)p->ngroups * sizeof(int32_t)) != 0) ||
        (p->sign && memcmp(back->sign, p->sign, ROWS) != 0) ||
        back->tensor_scale != p->tensor_scale || back->expo != p->expo)
        FAILF("parameters differ after serialize/deserialize");
    mpq_quant_dequantize(back, unpacked, deq2);
    if (memcmp(deq2, deq, sizeof deq) != 0)
        FAILF("dequantized layer differs after the byte round trip");
    mpq_qparams_destroy(&back);
    mpq_qlayer_destroy(&L);
    return fails;
#undef FAILF
}

static void test_brute_force(void **state) {
    (void)state;
    int fails = 0, runs = 0;
    for (int v = 0; v < NVARIANTS; v++)
        for (int gi = 0; gi < (int)(sizeof grans / sizeof grans[0]); gi++) {
            mpq_qspec spec;
            if (!spec_for(variants[v], grans[gi], &spec))
                continue;
            for (int kind = 0; kind < 2; kind++) {
                fails += check_one(&spec, kind, 1000u + (uint64_t)(v * 10 + gi) * 2 + kind);
                runs++;
            }
        }
    printf("brute force: %d spec x data runs, %d failures\n", runs, fails);
    assert_true(runs > 150);
    assert_int_equal(fails, 0);
}

/* Each family is exercised at each granularity it claims. */
static void test_every_family_covered(void **state) {
    (void)state;
    int n;
    const mpq_quant_ops *const *reg = mpq_quant_registry(&n);
    assert_int_equal(n, 13);
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (int v = 0; v < NVARIANTS; v++)
            if (!strncmp(variants[v], reg[i]->name, strlen(reg[i]->name)) &&
                (variants[v][strlen(reg[i]->name)] == '\0' ||
                 variants[v][strlen(reg[i]->name)] == ':'))
                found = 1;
        if (!found)
            fail_msg("quantizer '%s' is not in the test list", reg[i]->name);
    }
}

/* fit=search is never worse than any closed-form fit, on the error it
 * minimises (importance-weighted or not). */
static void test_search_not_worse(void **state) {
    (void)state;
    enum { R = 8, C = 75 };
    float w[R * C], imp[C];
    qr_rng rng = {77};
    int n, compared = 0;
    const mpq_quant_ops *const *reg = mpq_quant_registry(&n);
    for (int i = 0; i < n; i++) {
        for (int kind = 0; kind < 2; kind++)
            for (int wt = 0; wt < 2; wt++) {
                qr_fill(&rng, kind, w, R * C);
                for (int c = 0; c < C; c++)
                    imp[c] = (float)(0.1 + 3.0 * qr_unif(&rng));
                const float *ip = wt ? imp : NULL;
                char text[64];
                snprintf(text, sizeof text, "%s:fit=search", reg[i]->name);
                mpq_qspec ss;
                MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, text, &ss));
                mpq_qparams *ps = NULL, *pc = NULL;
                MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &ss, R, C, &ps));
                MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, ps, w, ip));
                double es = mpq_quant_error(ps, w, ip);
                for (int f = 0; f < MPQ_QFIT_COUNT; f++) {
                    if (f == MPQ_QFIT_SEARCH || !(reg[i]->fits & (1u << f)))
                        continue;
                    mpq_qspec sc = ss;
                    sc.fit = (mpq_qfit)f;
                    MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &sc, R, C, &pc));
                    MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, pc, w, ip));
                    double ec = mpq_quant_error(pc, w, ip);
                    if (!(es <= ec))
                        fail_msg("%s (%s data, %s): search error %.9g > %s error %.9g",
                                 reg[i]->name, kind ? "heavy" : "normal",
                                 wt ? "weighted" : "unweighted", es, mpq_qfit_name(sc.fit), ec);
                    compared++;
                    mpq_qparams_destroy(&pc);
                }
                mpq_qparams_destroy(&ps);
            }
    }
    assert_true(compared >= 4 * 13);
}

/* The uniform-grid accessor matches the dequantized values for int and is
 * refused for non-uniform grids. */
static void test_uniform_accessor(void **state) {
    (void)state;
    const char *specs[] = {"int:bits=3,group=7", "int:bits=4,sym=true", "nf4", "binary"};
    int expect[] = {1, 1, 0, 0};
    float w[ROWS * COLS];
    uint8_t codes[ROWS * COLS];
    qr_rng rng = {5};
    qr_fill(&rng, 0, w, ROWS * COLS);
    for (int i = 0; i < 4; i++) {
        mpq_qspec s;
        mpq_qparams *p = NULL;
        MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, specs[i], &s));
        MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &s, ROWS, COLS, &p));
        MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, p, w, NULL));
        mpq_quant_quantize(p, w, codes);
        float sc, z;
        assert_int_equal(mpq_quant_uniform(p, 2, 9, &sc, &z), expect[i]);
        if (expect[i])
            for (int c = 0; c < COLS; c++) {
                assert_true(mpq_quant_uniform(p, 2, c, &sc, &z));
                assert_true(sc * ((float)codes[2 * COLS + c] - z) ==
                            mpq_quant_value_at(p, 2, c, codes[2 * COLS + c]));
            }
        mpq_qparams_destroy(&p);
    }
}

/* Bad inputs: NaN weights, negative importance, invalid codes, corrupted
 * parameter bytes, wrong lengths. */
static void test_errors(void **state) {
    (void)state;
    mpq_qspec s;
    mpq_qparams *p = NULL;
    float w[2 * 5] = {0.1f, -0.2f, 0.3f, 0.0f, 0.5f, 1, 2, 3, 4, 5};
    float imp[5] = {1, 1, -1, 1, 1};
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "fp8", &s));
    MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &s, 2, 5, &p));
    w[7] = NAN;
    assert_int_equal(mpq_quant_fit(ctx, p, w, NULL), MPQ_ERR_NUMERIC);
    assert_non_null(strstr(ctx->err_msg, "[1][2]"));
    w[7] = 3;
    assert_int_equal(mpq_quant_fit(ctx, p, w, imp), MPQ_ERR_NUMERIC);
    assert_non_null(strstr(ctx->err_msg, "importance of input channel 2"));
    uint8_t codes[10] = {0, 1, 2, 0x7F, 4, 5, 6, 7, 8, 9};
    assert_int_equal(mpq_quant_check_codes(ctx, p, codes), MPQ_ERR_FORMAT);
    assert_non_null(strstr(ctx->err_msg, "[0][3]"));
    uint8_t bytes[64];
    int64_t nb;
    MPQ_ASSERT_OK(ctx, mpq_qparams_nbytes(ctx, &s, 2, 5, &nb));
    assert_int_equal(nb, 8);
    memset(bytes, 0, sizeof bytes); /* scale 0 */
    mpq_qparams *q = NULL;
    assert_int_equal(mpq_qparams_deserialize(ctx, &s, 2, 5, bytes, nb, &q), MPQ_ERR_FORMAT);
    assert_non_null(strstr(ctx->err_msg, "scale of group 0"));
    assert_int_equal(mpq_qparams_deserialize(ctx, &s, 2, 5, bytes, nb - 1, &q), MPQ_ERR_FORMAT);
    assert_null(q);
    mpq_qparams_destroy(&p);
    mpq_qparams_destroy(&p); /* NULL-safe */
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "signed_binary", &s));
    s.gran = MPQ_QGRAN_GROUP;
    s.group = 4;
    assert_int_equal(mpq_qparams_create(ctx, &s, 2, 5, &p), MPQ_ERR_ARG);
    assert_null(p);
    /* allocation failure unwinds cleanly */
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "int:bits=4,group=2", &s));
    for (int k = 0; k < 4; k++) {
        mpq_qlayer *l = NULL;
        mpq_alloc_fail_after(ctx, k);
        mpq_err e = mpq_qlayer_create(ctx, &s, 2, 5, &l);
        mpq_alloc_fail_after(ctx, -1);
        if (e == MPQ_OK)
            mpq_qlayer_destroy(&l);
        else
            assert_int_equal(e, MPQ_ERR_NOMEM);
        assert_null(l);
    }
}

/* fp16 rounding written here (normal range, ties to even), independent of
 * the library's converter. */
static double ref_fp16(double x) {
    int e;
    double m = frexp(x, &e); /* x = m 2^e, m in [0.5, 1) */
    return ldexp(nearbyint(m * 2048.0), e - 11);
}

/* The closed-form fits, recomputed here from their definitions on a 5 x 20
 * layer in groups of 8 (the last group of each row has 4 weights): int
 * asymmetric (range [min(w,0), max(w,0)] over 2^b - 1 steps, rounded
 * zero-point) and symmetric (max |w| at 2^(b-1) - 1), binary (mean |w|),
 * ternary threshold (mean |w| above 0.7 mean |w|), ParetoQ SEQ ternary and
 * 2-bit and NF4 (max |w|), FP4 (max |w| / 6), MXFP4 (2^(floor(log2 max|w|)
 * - 2)), and per-channel FP8 (max |w| / 448, fp32). */
static void test_closed_forms(void **state) {
    (void)state;
    enum { R = 5, C = 20, G = 8 };
    float w[R * C];
    qr_rng seed = {99};
    for (int i = 0; i < R * C; i++)
        w[i] = (float)(qr_normal(&seed) * 0.05 + (i % 7 == 0 ? 0.02 : 0.0));
    const char *specs[] = {"int:bits=3,sym=false,group=8",
                           "int:bits=4,sym=true,group=8",
                           "binary:group=8",
                           "ternary:group=8",
                           "ternary_seq:group=8",
                           "seq2:group=8",
                           "nf4:group=8",
                           "fp4:group=8",
                           "mxfp4:group=8",
                           "fp8:gran=channel"};
    for (size_t k = 0; k < sizeof specs / sizeof *specs; k++) {
        mpq_qspec spec;
        mpq_qparams *p = NULL;
        MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, specs[k], &spec));
        MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, R, C, &p));
        MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, p, w, NULL));
        const char *fam = spec.ops->name;
        const int64_t gc = strcmp(fam, "fp8") == 0 ? C : G;
        for (int64_t r = 0; r < R; r++)
            for (int64_t c0 = 0; c0 < C; c0 += gc) {
                int64_t c1 = c0 + gc < C ? c0 + gc : C, n = c1 - c0;
                double mn = 0, mx = 0, amax = 0, sabs = 0;
                for (int64_t c = c0; c < c1; c++) {
                    double v = w[r * C + c];
                    mn = fmin(mn, v);
                    mx = fmax(mx, v);
                    amax = fmax(amax, fabs(v));
                    sabs += fabs(v);
                }
                double want, got = p->scale[gc == C ? r : r * p->gpr + c0 / G];
                int32_t wz = 0;
                if (strcmp(fam, "int") == 0 && !spec.sym) {
                    want = ref_fp16((mx - mn) / 7.0);
                    wz = (int32_t)nearbyint(-mn / want);
                    wz = wz < 0 ? 0 : (wz > 7 ? 7 : wz);
                } else if (strcmp(fam, "int") == 0) {
                    want = ref_fp16(amax / 7.0);
                } else if (strcmp(fam, "binary") == 0) {
                    want = ref_fp16(sabs / (double)n);
                } else if (strcmp(fam, "ternary") == 0) {
                    double delta = 0.7 * sabs / (double)n, sum = 0, cnt = 0;
                    for (int64_t c = c0; c < c1; c++)
                        if (fabs(w[r * C + c]) > delta) {
                            sum += fabs(w[r * C + c]);
                            cnt += 1;
                        }
                    want = ref_fp16(sum / cnt);
                } else if (strcmp(fam, "fp4") == 0) {
                    want = ref_fp16(amax / 6.0);
                } else if (strcmp(fam, "mxfp4") == 0) {
                    want = ldexp(1.0, (int)floor(log2(amax)) - 2);
                } else if (strcmp(fam, "fp8") == 0) {
                    want = (float)(amax / 448.0);
                } else { /* ternary_seq, seq2, nf4 */
                    want = ref_fp16(amax);
                }
                if (got != want)
                    fprintf(stderr, "%s row %lld cols %lld..%lld: scale %.9g, expected %.9g\n",
                            specs[k], (long long)r, (long long)c0, (long long)c1, got, want);
                assert_true(got == want);
                if (p->zero)
                    assert_int_equal(p->zero[r * p->gpr + c0 / G], wz);
            }
        mpq_qparams_destroy(&p);
    }
}

/* The search fit uses the importance vector: with importance concentrated
 * on a few columns, the fit given it has a weighted error no larger than the
 * fit without it, for every family, and strictly smaller for int 3-bit. */
static void test_search_uses_importance(void **state) {
    (void)state;
    enum { R = 16, C = 64 };
    float w[R * C], imp[C];
    qr_rng rng = {7};
    for (int i = 0; i < R * C; i++)
        w[i] = (float)(0.05 * qr_normal(&rng) * (i % 5 == 0 ? 4.0 : 1.0));
    for (int c = 0; c < C; c++)
        imp[c] = c % 8 == 3 ? 1000.0f : 1.0f;
    int nf = 0;
    const mpq_quant_ops *const *reg = mpq_quant_registry(&nf);
    for (int f = 0; f < nf; f++) {
        char text[96];
        mpq_qspec spec;
        snprintf(text, sizeof text, "%s:fit=search", reg[f]->name);
        if (mpq_qspec_parse(ctx, text, &spec) != MPQ_OK) { /* a family without search */
            mpq_err_clear(ctx);
            continue;
        }
        mpq_qparams *a = NULL, *b = NULL;
        MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, R, C, &a));
        MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, R, C, &b));
        MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, a, w, imp));
        MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, b, w, NULL));
        double ea = mpq_quant_error(a, w, imp), eb = mpq_quant_error(b, w, imp);
        printf("%-14s weighted error: fit with importance %.6g, without %.6g\n", text, ea, eb);
        assert_true(ea <= eb * (1 + 1e-12));
        if (strcmp(reg[f]->name, "int") == 0)
            assert_true(ea < 0.99 * eb);
        mpq_qparams_destroy(&a);
        mpq_qparams_destroy(&b);
    }
}

int main(int argc, char **argv) {
    ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_family_covered),
        cmocka_unit_test(test_brute_force),
        cmocka_unit_test(test_search_not_worse),
        cmocka_unit_test(test_uniform_accessor),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_closed_forms),
        cmocka_unit_test(test_search_uses_importance),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&ctx, failures);
}
