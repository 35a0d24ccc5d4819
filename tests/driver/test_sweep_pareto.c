/* test_sweep_pareto.c: mpq_sweep_pareto against a brute-force O(n^2)
 * dominance check on constructed examples: a hand-made set with known
 * answer, random sets with many exact ties in size and quality, NaNs, and
 * the empty set; and the report writer's Pareto flags on a small report. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq_sweep.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx;

/* i is dominated when some j is no worse in both and better in one. */
static void brute(int64_t n, const double *s, const double *q, uint8_t *front) {
    for (int64_t i = 0; i < n; i++) {
        int dom = isnan(s[i]) || isnan(q[i]);
        for (int64_t j = 0; j < n && !dom; j++) {
            if (j == i || isnan(s[j]) || isnan(q[j]))
                continue;
            if (s[j] <= s[i] && q[j] <= q[i] && (s[j] < s[i] || q[j] < q[i]))
                dom = 1;
        }
        front[i] = !dom;
    }
}

static void test_hand(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    /* size, quality (lower better):
     * 0 (1, 9) front (smallest), 1 (2, 5) front, 2 (2, 6) dominated by 1,
     * 3 (3, 5) dominated by 1 (same quality, larger), 4 (4, 1) front,
     * 5 (4, 1) front (exact twin of 4), 6 (5, 3) dominated by 4,
     * 7 (NaN, 0) never, 8 (0.5, NaN) never. */
    const double s[] = {1, 2, 2, 3, 4, 4, 5, NAN, 0.5};
    const double q[] = {9, 5, 6, 5, 1, 1, 3, 0, NAN};
    const uint8_t want[] = {1, 1, 0, 0, 1, 1, 0, 0, 0};
    uint8_t front[9];
    MPQ_ASSERT_OK(ctx, mpq_sweep_pareto(ctx, 9, s, q, front));
    for (int i = 0; i < 9; i++)
        assert_int_equal(front[i], want[i]);
    MPQ_ASSERT_OK(ctx, mpq_sweep_pareto(ctx, 0, s, q, front));
}

static void test_random(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    srand(12345);
    double s[200], q[200];
    uint8_t a[200], b[200];
    for (int trial = 0; trial < 500; trial++) {
        int n = 1 + rand() % 200;
        int levels = 2 + rand() % 20; /* few distinct values: many ties */
        for (int i = 0; i < n; i++) {
            s[i] = rand() % levels;
            q[i] = (rand() % levels) * 0.25 - 1.0;
            if (rand() % 50 == 0)
                q[i] = NAN;
        }
        MPQ_ASSERT_OK(ctx, mpq_sweep_pareto(ctx, n, s, q, a));
        brute(n, s, q, b);
        for (int i = 0; i < n; i++)
            if (a[i] != b[i])
                fail_msg("trial %d, n %d, point %d (%g, %g): front %d, brute force %d", trial, n, i,
                         s[i], q[i], a[i], b[i]);
    }
}

static void test_report_flags(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    /* Accuracy: higher is better, so the writer negates it. */
    mpq_sweep_point ref, pts[3];
    memset(&ref, 0, sizeof ref);
    memset(pts, 0, sizeof pts);
    snprintf(ref.kind, sizeof ref.kind, "fp");
    ref.index = -1;
    ref.size_bytes = 1000;
    ref.value = 0.98;
    const int64_t sizes[] = {100, 200, 300};
    const double acc[] = {0.90, 0.97, 0.96};
    for (int i = 0; i < 3; i++) {
        snprintf(pts[i].kind, sizeof pts[i].kind, "uniform");
        pts[i].index = i;
        pts[i].size_bytes = sizes[i];
        pts[i].value = acc[i];
        snprintf(pts[i].metric, sizeof pts[i].metric, "accuracy");
    }
    snprintf(ref.metric, sizeof ref.metric, "accuracy");
    char dir[] = "/tmp/mpq-sweep-pareto-XXXXXX";
    assert_non_null(mkdtemp(dir));
    MPQ_ASSERT_OK(ctx, mpq_sweep_report_write(ctx, dir, "test", &ref, 3, pts, 0));
    assert_int_equal(pts[0].pareto, 1);
    assert_int_equal(pts[1].pareto, 1);
    assert_int_equal(pts[2].pareto, 0); /* larger and worse than point 1 */
    char path[512];
    const char *files[] = {"report.csv", "report.md", "report.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        fclose(f);
        remove(path);
    }
    rmdir(dir);
    assert_int_equal(mpq_sweep_metric_higher_better("accuracy"), 1);
    assert_int_equal(mpq_sweep_metric_higher_better("ppl"), 0);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_report_flags),
    };
    int f = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, f);
}
