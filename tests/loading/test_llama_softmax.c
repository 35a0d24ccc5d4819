/* test_llama_softmax.c: the causal softmax of the Llama attention
 * (mpq_llama_softmax_tile, whose exponential is a vectorizable polynomial)
 * against a double-precision softmax written here: on tiles of scores
 * spread over [-120, 30] (far below the row's maximum, where the
 * exponential is clamped, included), every probability within 8 float ulp
 * of the reference (plus 1e-37 absolute; the reference takes the shifted
 * scores rounded to float, as the tile does), every row summing
 * to 1 within 1e-6, zeros above the diagonal, and a NaN score giving NaN. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "family_llama_internal.h"
#include "test_io_util.h"

static mpq_ctx *g_ctx;
static uint64_t g_rng = 777;

static double urand(void) { /* uniform in [0, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

static void test_against_double(void **state) {
    (void)state;
    const int64_t i1 = 300, tq = 64;
    float *sc = malloc(sizeof(float) * (size_t)(tq * i1));
    float *orig = malloc(sizeof(float) * (size_t)(tq * i1));
    double worst = 0.0;
    for (int64_t i0 = 0; i0 + tq <= i1; i0 += 236) {
        for (int64_t k = 0; k < tq * i1; k++)
            sc[k] = orig[k] = (float)(-120.0 + 150.0 * urand());
        mpq_llama_softmax_tile(sc, tq, i0, i1);
        for (int64_t r = 0; r < tq; r++) {
            const int64_t i = i0 + r;
            const float *o = orig + r * i1, *p = sc + r * i1;
            double mx = o[0], tot = 0.0, sum = 0.0;
            for (int64_t j = 1; j <= i; j++)
                mx = o[j] > mx ? o[j] : mx;
            /* the shifted scores as the tile computes them, in float */
            for (int64_t j = 0; j <= i; j++)
                tot += exp((double)(o[j] - (float)mx));
            for (int64_t j = 0; j < i1; j++) {
                if (j > i) {
                    assert_true(p[j] == 0.0f);
                    continue;
                }
                const double ref = exp((double)(o[j] - (float)mx)) / tot;
                const double err = fabs((double)p[j] - ref);
                if (err > 8.0 * 0x1p-24 * ref + 1e-37)
                    fail_msg("row %lld, score %lld (%.9g, max %.9g): %.9g, reference %.9g",
                             (long long)i, (long long)j, (double)o[j], mx, (double)p[j], ref);
                worst = ref > 1e-30 && err / ref > worst ? err / ref : worst;
                sum += p[j];
            }
            assert_true(fabs(sum - 1.0) < 1e-6);
        }
    }
    printf("softmax: worst relative error %.3g (%.2f ulp)\n", worst, worst / 0x1p-24);
    /* a NaN score makes its row NaN, as expf would */
    for (int64_t k = 0; k < i1; k++)
        sc[k] = (float)(-urand());
    sc[3] = NAN;
    mpq_llama_softmax_tile(sc, 1, i1 - 1, i1);
    assert_true(isnan(sc[0]) && isnan(sc[i1 - 1]));
    free(sc);
    free(orig);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_against_double)};
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
