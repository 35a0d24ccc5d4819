/* test_budget.c: the exact multiple-choice knapsack solver, serial.
 *
 * References, all independent of stages/budget.c:
 * - brute-force enumeration of every assignment for small random instances
 *   (pinned, excluded, tight, infeasible budgets; ties in scores and costs);
 * - the Lagrangian dual evaluated at every pairwise breakpoint of every layer
 *   (its maximum over those points is the exact maximum of the dual);
 * - a plain array DP over bit totals in units of a common divisor for a
 *   2000-layer instance with large (realistic) bit counts.
 * Tolerances: objectives 1e-12 relative (1e-9 for the 2000-layer sums,
 * which add thousands of doubles in different orders).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_budget.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx; /* the test driver's context */

/* xorshift64*: deterministic random numbers for the instances. */
typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnext(rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}
static int64_t rint_(rng *r, int64_t n) { /* 0..n-1 */
    return (int64_t)(rnext(r) % (uint64_t)n);
}
static double runif(rng *r) {
    return (double)(rnext(r) >> 11) / 9007199254740992.0;
}

/* A small instance as plain arrays (the reference's view). */
#define SL 8
#define SK 4
typedef struct small {
    int L;
    int k[SL];
    int64_t w[SL];
    int64_t c[SL][SK];
    double s[SL][SK];
    int pin[SL];
    int exc[SL];
} small;

typedef struct brute {
    int feasible;
    double best;
    int64_t cmin, cmax;
} brute;

static brute brute_force(const small *in, int64_t B) {
    brute b = {0, INFINITY, 0, 0};
    int idx[SL] = {0};
    for (int l = 0; l < in->L; l++) {
        if (in->exc[l])
            continue;
        int64_t lo = INT64_MAX, hi = 0;
        for (int j = 0; j < in->k[l]; j++) {
            if (in->pin[l] >= 0 && j != in->pin[l])
                continue;
            lo = in->c[l][j] < lo ? in->c[l][j] : lo;
            hi = in->c[l][j] > hi ? in->c[l][j] : hi;
        }
        b.cmin += lo;
        b.cmax += hi;
    }
    for (;;) {
        int ok = 1;
        int64_t c = 0;
        double s = 0.0;
        for (int l = 0; l < in->L; l++) {
            if (in->exc[l])
                continue;
            if (in->pin[l] >= 0 && idx[l] != in->pin[l])
                ok = 0;
            c += in->c[l][idx[l]];
            s += in->s[l][idx[l]];
        }
        if (ok && c <= B && s < b.best) {
            b.best = s;
            b.feasible = 1;
        }
        int l = 0;
        while (l < in->L && ++idx[l] == in->k[l])
            idx[l++] = 0;
        if (l == in->L)
            break;
    }
    return b;
}

/* max over lambda >= 0 of the Lagrangian dual, by evaluating it at 0 and
 * at every pairwise intersection of two candidates of one layer (the
 * function is piecewise linear with kinks only there). */
static double dual_max(const small *in, int64_t B) {
    double best = -INFINITY;
    for (int la = -1; la < in->L; la++) {
        for (int i = 0; i < SK; i++) {
            for (int j = 0; j < SK; j++) {
                double lam = 0.0;
                if (la >= 0) {
                    if (in->exc[la] || i >= in->k[la] || j >= in->k[la] ||
                        in->c[la][i] >= in->c[la][j])
                        continue;
                    lam = (in->s[la][i] - in->s[la][j]) / (double)(in->c[la][j] - in->c[la][i]);
                    if (!(lam > 0.0))
                        continue;
                }
                double g = -lam * (double)B;
                for (int l = 0; l < in->L; l++) {
                    if (in->exc[l])
                        continue;
                    double m = INFINITY;
                    for (int q = 0; q < in->k[l]; q++)
                        if (in->pin[l] < 0 || q == in->pin[l])
                            m = fmin(m, in->s[l][q] + lam * (double)in->c[l][q]);
                    g += m;
                }
                best = fmax(best, g);
                if (la < 0)
                    break;
            }
            if (la < 0)
                break;
        }
    }
    return best;
}

static void random_small(rng *r, small *in) {
    memset(in, 0, sizeof *in);
    in->L = 1 + (int)rint_(r, SL);
    /* Large-cost instances: multiples of a big unit plus a per-layer offset,
     * like out*in*bits plus parameter bits. */
    int big = rint_(r, 2) == 0;
    int int_scores = rint_(r, 3) == 0; /* small integers: many ties */
    for (int l = 0; l < in->L; l++) {
        in->k[l] = 1 + (int)rint_(r, SK);
        in->w[l] = 1 + rint_(r, 1000);
        int64_t off = big ? rint_(r, 1 << 20) : 0;
        for (int j = 0; j < in->k[l]; j++) {
            int64_t q = rint_(r, 40);
            in->c[l][j] = big ? off + q * ((int64_t)1 << 26) : q;
            in->s[l][j] = int_scores ? (double)rint_(r, 5) : runif(r) * 100.0;
        }
        in->pin[l] = rint_(r, 7) == 0 ? (int)rint_(r, in->k[l]) : -1;
        in->exc[l] = rint_(r, 10) == 0;
    }
}

static mpq_budget_problem *make_problem(mpq_ctx *ctx, const small *in) {
    mpq_budget_problem *p = NULL;
    MPQ_ASSERT_OK(ctx, mpq_budget_problem_create(ctx, in->L, SK, &p));
    for (int l = 0; l < in->L; l++) {
        MPQ_ASSERT_OK(ctx, mpq_budget_set_layer(ctx, p, l, in->w[l], in->k[l], in->c[l], in->s[l]));
        if (in->pin[l] >= 0)
            MPQ_ASSERT_OK(ctx, mpq_budget_pin(ctx, p, l, in->pin[l]));
        if (in->exc[l])
            MPQ_ASSERT_OK(ctx, mpq_budget_exclude(ctx, p, l, 1));
    }
    return p;
}

/* Checks a solved result against the instance and the brute-force optimum. */
static void check_result(const small *in, const mpq_budget_result *res, int64_t B, double opt) {
    int64_t c = 0, W = 0;
    double s = 0.0;
    for (int l = 0; l < in->L; l++) {
        if (in->exc[l]) {
            assert_int_equal(res->choice[l], -1);
            continue;
        }
        W += in->w[l];
        assert_true(res->choice[l] >= 0 && res->choice[l] < in->k[l]);
        if (in->pin[l] >= 0)
            assert_int_equal(res->choice[l], in->pin[l]);
        c += in->c[l][res->choice[l]];
        s += in->s[l][res->choice[l]];
    }
    assert_true(c <= B);
    assert_int_equal(res->bits_used, c);
    assert_int_equal(res->budget_bits, B);
    assert_int_equal(res->n_weights, W);
    double tol = 1e-12 * fmax(1.0, fabs(opt));
    if (fabs(res->objective - opt) > tol || fabs(s - opt) > tol)
        fail_msg("objective %.17g (recomputed %.17g) != brute force %.17g", res->objective, s, opt);
    if (W > 0)
        assert_true(fabs(res->avg_bits - (double)c / (double)W) <= 1e-12 * res->avg_bits);
    if (res->lower_bound > opt + tol)
        fail_msg("Lagrangian bound %.17g above the optimum %.17g", res->lower_bound, opt);
    double dm = dual_max(in, B);
    if (fabs(res->lower_bound - dm) > 1e-9 * fmax(1.0, fabs(dm)))
        fail_msg("bound %.17g is not the dual maximum %.17g", res->lower_bound, dm);
    assert_true(res->gap >= -tol);
}

static void test_small_vs_brute_force(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    rng r = {0x9e3779b97f4a7c15ULL};
    int n_infeasible = 0, n_tight = 0, n_solved = 0;
    for (int trial = 0; trial < 4000; trial++) {
        small in;
        random_small(&r, &in);
        brute ref0 = brute_force(&in, INT64_MAX);
        int64_t W = 0;
        for (int l = 0; l < in.L; l++)
            W += in.exc[l] ? 0 : in.w[l];
        /* Budget: random in range, exactly the minimum, exactly an achievable
         * total, one bit short of the minimum, or above the maximum. */
        int64_t B = 0;
        int mode = (int)rint_(&r, 6);
        if (mode == 0)
            B = ref0.cmin + rint_(&r, ref0.cmax - ref0.cmin + 1);
        else if (mode == 1)
            B = ref0.cmin;
        else if (mode == 2) {
            B = 0;
            for (int l = 0; l < in.L; l++)
                if (!in.exc[l])
                    B += in.c[l][in.pin[l] >= 0 ? in.pin[l] : (int)rint_(&r, in.k[l])];
        } else if (mode == 3)
            B = ref0.cmin - 1;
        else if (mode == 4)
            B = ref0.cmax + rint_(&r, 100);
        else
            B = ref0.cmin + (ref0.cmax - ref0.cmin) / 3;
        mpq_budget_spec spec = {MPQ_BUDGET_BITS, 0.0, B};
        int how = (int)rint_(&r, 3);
        if (how == 1 && W > 0 && B >= 0) {
            /* Average bits: the solver must use floor(avg * W). */
            spec.kind = MPQ_BUDGET_AVG_BITS;
            spec.avg_bits = ((double)B + runif(&r) * 0.99) / (double)W;
            B = (int64_t)floor(spec.avg_bits * (double)W);
        } else if (how == 2 && B >= 0) {
            spec.kind = MPQ_BUDGET_BYTES;
            spec.amount = B / 8;
            B = 8 * (B / 8);
        }
        if (B < 0)
            B = 0, spec = (mpq_budget_spec){MPQ_BUDGET_BITS, 0.0, 0};
        brute ref = brute_force(&in, B);
        mpq_budget_problem *p = make_problem(ctx, &in);
        /* The achievable range (pins and exclusions) as enumerated. */
        int64_t rmin = -1, rmax = -1, rw = -1;
        MPQ_ASSERT_OK(ctx, mpq_budget_range(ctx, p, &rmin, &rmax, &rw));
        assert_int_equal(rmin, ref.cmin);
        assert_int_equal(rmax, ref.cmax);
        assert_int_equal(rw, W);
        mpq_budget_result *res = NULL;
        /* The check from costs alone agrees with the enumeration, and
         * refuses with the solver's own message. */
        mpq_err_clear(ctx);
        const mpq_err ec = mpq_budget_check(ctx, p, &spec);
        char check_msg[MPQ_ERRMSG_MAX];
        snprintf(check_msg, sizeof check_msg, "%s", ctx->err_msg);
        assert_int_equal(ec, ref.feasible ? MPQ_OK : MPQ_ERR_CONFIG);
        mpq_err_clear(ctx);
        mpq_err e = mpq_budget_solve(ctx, p, &spec, &res);
        if (!ref.feasible && strcmp(check_msg, ctx->err_msg) != 0)
            fail_msg("check: '%s', solve: '%s'", check_msg, ctx->err_msg);
        if (!ref.feasible) {
            n_infeasible++;
            if (e != MPQ_ERR_CONFIG)
                fail_msg("trial %d: infeasible budget %lld (min %lld) gave %s", trial, (long long)B,
                         (long long)ref.cmin, mpq_err_name(e));
            assert_null(res);
            char want[64];
            if (W > 0) {
                snprintf(want, sizeof want, "%.6f bits/weight", (double)ref.cmin / (double)W);
                if (!strstr(ctx->err_msg, want))
                    fail_msg("message '%s' lacks the smallest average '%s'", ctx->err_msg, want);
                snprintf(want, sizeof want, "%.6f bits/weight", (double)ref.cmax / (double)W);
                if (!strstr(ctx->err_msg, want))
                    fail_msg("message '%s' lacks the largest average '%s'", ctx->err_msg, want);
            }
            snprintf(want, sizeof want, "(%lld bytes)", (long long)((ref.cmin + 7) / 8));
            if (!strstr(ctx->err_msg, want))
                fail_msg("message '%s' lacks the smallest size '%s'", ctx->err_msg, want);
            /* The bound alone refuses the same budget. */
            double lb = 0.0;
            assert_int_equal(mpq_budget_lagrangian(ctx, p, B, &lb, NULL), MPQ_ERR_CONFIG);
        } else {
            MPQ_ASSERT_OK(ctx, e);
            n_solved++;
            n_tight += res->bits_used == B;
            check_result(&in, res, B, ref.best);
            double lb = 0.0, lam = -1.0;
            MPQ_ASSERT_OK(ctx, mpq_budget_lagrangian(ctx, p, B, &lb, &lam));
            assert_true(lb == res->lower_bound && lam == res->lambda && lam >= 0.0);
        }
        mpq_budget_result_destroy(&res);
        mpq_budget_problem_destroy(&p);
        assert_null(p);
    }
    /* The generator must have exercised every branch. */
    assert_true(n_infeasible > 200);
    assert_true(n_tight > 200);
    assert_true(n_solved > 2000);
    mpq_err_clear(ctx);
}

/* ---- 2000 layers against an array DP ------------------------------------- */

typedef struct big {
    int64_t L, K;
    int64_t *c; /* [L][K] */
    int64_t *q; /* [L][K] (c - base) / unit */
    double *s;  /* [L][K] */
    int64_t *w; /* [L] */
    int *pin;   /* [L] */
    int *exc;   /* [L] */
} big;

/* Minimum total score with sum of q <= cap, by the textbook DP. */
static double array_dp(const big *b, int64_t cap) {
    double *dp = malloc((size_t)(cap + 1) * sizeof *dp);
    double *nx = malloc((size_t)(cap + 1) * sizeof *nx);
    assert_non_null(dp);
    assert_non_null(nx);
    for (int64_t x = 0; x <= cap; x++)
        dp[x] = 0.0;
    for (int64_t l = 0; l < b->L; l++) {
        if (b->exc[l])
            continue;
        for (int64_t x = 0; x <= cap; x++) {
            double m = INFINITY;
            for (int64_t j = 0; j < b->K; j++) {
                if (b->pin[l] >= 0 && j != b->pin[l])
                    continue;
                int64_t qq = b->q[l * b->K + j];
                if (qq <= x && dp[x - qq] + b->s[l * b->K + j] < m)
                    m = dp[x - qq] + b->s[l * b->K + j];
            }
            nx[x] = m;
        }
        double *t = dp;
        dp = nx;
        nx = t;
    }
    double best = dp[cap];
    free(dp);
    free(nx);
    return best;
}

static void test_large_vs_array_dp(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    rng r = {12345};
    const int64_t unit = (int64_t)1 << 20;
    big b = {2000, 6, NULL, NULL, NULL, NULL, NULL, NULL};
    b.c = calloc((size_t)(b.L * b.K), sizeof *b.c);
    b.q = calloc((size_t)(b.L * b.K), sizeof *b.q);
    b.s = calloc((size_t)(b.L * b.K), sizeof *b.s);
    b.w = calloc((size_t)b.L, sizeof *b.w);
    b.pin = calloc((size_t)b.L, sizeof *b.pin);
    b.exc = calloc((size_t)b.L, sizeof *b.exc);
    for (int64_t l = 0; l < b.L; l++) {
        int64_t base = rint_(&r, (int64_t)1 << 30);
        double imp = 0.1 + runif(&r) * 10.0;
        for (int64_t j = 0; j < b.K; j++) {
            int64_t qq = 1 + rint_(&r, 12);
            b.q[l * b.K + j] = qq;
            b.c[l * b.K + j] = base + qq * unit;
            /* Roughly falling with the bits, plus noise (not always monotone). */
            b.s[l * b.K + j] = imp * exp(-0.45 * (double)qq) * (0.8 + 0.4 * runif(&r));
        }
        b.w[l] = 4096 * (1 + rint_(&r, 3));
        b.pin[l] = rint_(&r, 50) == 0 ? (int)rint_(&r, b.K) : -1;
        b.exc[l] = rint_(&r, 40) == 0;
    }
    mpq_budget_problem *p = NULL;
    MPQ_ASSERT_OK(ctx, mpq_budget_problem_create(ctx, b.L, (int32_t)b.K, &p));
    int64_t sbase = 0; /* sum of the per-layer offsets c - q*unit */
    for (int64_t l = 0; l < b.L; l++) {
        MPQ_ASSERT_OK(ctx, mpq_budget_set_layer(ctx, p, l, b.w[l], (int32_t)b.K, b.c + l * b.K,
                                                b.s + l * b.K));
        if (b.pin[l] >= 0)
            MPQ_ASSERT_OK(ctx, mpq_budget_pin(ctx, p, l, b.pin[l]));
        if (b.exc[l])
            MPQ_ASSERT_OK(ctx, mpq_budget_exclude(ctx, p, l, 1));
        else
            sbase += b.c[l * b.K] - b.q[l * b.K] * unit;
    }
    /* Three budgets: tight, middle, generous; each off the unit grid. */
    const int64_t caps[3] = {2000 * 3, 2000 * 6, 2000 * 10};
    for (int t = 0; t < 3; t++) {
        int64_t B = sbase + caps[t] * unit + unit / 3;
        mpq_budget_spec spec = {MPQ_BUDGET_BITS, 0.0, B};
        mpq_budget_result *res = NULL;
        MPQ_ASSERT_OK(ctx, mpq_budget_solve(ctx, p, &spec, &res));
        double ref = array_dp(&b, caps[t]);
        int64_t c = 0;
        for (int64_t l = 0; l < b.L; l++) {
            if (b.exc[l]) {
                assert_int_equal(res->choice[l], -1);
                continue;
            }
            if (b.pin[l] >= 0)
                assert_int_equal(res->choice[l], b.pin[l]);
            c += b.c[l * b.K + res->choice[l]];
        }
        assert_true(c <= B);
        if (fabs(res->objective - ref) > 1e-9 * fabs(ref))
            fail_msg("budget %d: frontier DP %.15g != array DP %.15g", t, res->objective, ref);
        assert_true(res->lower_bound <= res->objective + 1e-9 * fabs(ref));
        print_message("layers 2000, budget %d: objective %.10g bound %.10g gap %.3g core %lld "
                      "frontier %lld\n",
                      t, res->objective, res->lower_bound, res->rel_gap,
                      (long long)res->core_layers, (long long)res->max_frontier);
        mpq_budget_result_destroy(&res);
    }
    mpq_budget_problem_destroy(&p);
    free(b.c);
    free(b.q);
    free(b.s);
    free(b.w);
    free(b.pin);
    free(b.exc);
}

/* A 7B-style instance: exact optimality is checked above; here the result
 * must be feasible, consistent, and close to its own bound. */
static void test_realistic_gap(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    rng r = {777};
    const int64_t rows[7] = {4096, 4096, 4096, 4096, 11008, 11008, 4096};
    const int64_t cols[7] = {4096, 4096, 4096, 4096, 4096, 4096, 11008};
    const int bitw[4] = {2, 3, 4, 8};
    const int64_t L = 32 * 7;
    mpq_budget_problem *p = NULL;
    MPQ_ASSERT_OK(ctx, mpq_budget_problem_create(ctx, L, 8, &p));
    int64_t W = 0;
    for (int64_t l = 0; l < L; l++) {
        int64_t n = rows[l % 7] * cols[l % 7];
        int64_t c[8];
        double s[8];
        double imp = exp(2.0 * runif(&r));
        for (int j = 0; j < 8; j++) {
            int64_t g = j < 4 ? 128 : 64;
            c[j] = n * bitw[j % 4] + rows[l % 7] * ((cols[l % 7] + g - 1) / g) * 32;
            s[j] = imp * (double)n * pow(4.0, -bitw[j % 4]) * (g == 64 ? 0.85 : 1.0) *
                   (0.9 + 0.2 * runif(&r));
        }
        MPQ_ASSERT_OK(ctx, mpq_budget_set_layer(ctx, p, l, n, 8, c, s));
        W += n;
    }
    mpq_budget_spec spec = {MPQ_BUDGET_AVG_BITS, 3.5, 0};
    mpq_budget_result *res = NULL;
    MPQ_ASSERT_OK(ctx, mpq_budget_solve(ctx, p, &spec, &res));
    assert_int_equal(res->budget_bits, (int64_t)floor(3.5 * (double)W));
    assert_true(res->bits_used <= res->budget_bits);
    assert_true(res->avg_bits <= 3.5 && res->avg_bits > 3.4);
    assert_true(res->lower_bound <= res->objective * (1 + 1e-12));
    assert_true(res->rel_gap < 1e-2);
    print_message("7B-style: avg %.6f bits/weight, rel gap %.3g, core %lld, frontier %lld\n",
                  res->avg_bits, res->rel_gap, (long long)res->core_layers,
                  (long long)res->max_frontier);
    mpq_budget_result_destroy(&res);
    mpq_budget_problem_destroy(&p);
}

/* ---- input validation and error paths ------------------------------------ */

static void test_errors(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_budget_problem *p = NULL;
    mpq_budget_result *res = NULL;
    MPQ_ASSERT_OK(ctx, mpq_budget_problem_create(ctx, 3, 2, &p));
    const int64_t c[2] = {10, 20};
    const int64_t cneg[2] = {10, -1};
    const double s[2] = {1.0, 0.5};
    const double snan[2] = {1.0, NAN};
    assert_int_equal(mpq_budget_set_layer(ctx, p, 0, 5, 2, cneg, s), MPQ_ERR_ARG);
    assert_non_null(strstr(ctx->err_msg, "layer 0 candidate 1"));
    assert_int_equal(mpq_budget_set_layer(ctx, p, 1, 5, 2, c, snan), MPQ_ERR_NUMERIC);
    assert_non_null(strstr(ctx->err_msg, "layer 1 candidate 1"));
    assert_int_equal(mpq_budget_set_layer(ctx, p, 3, 5, 2, c, s), MPQ_ERR_ARG);
    assert_int_equal(mpq_budget_set_layer(ctx, p, 0, 5, 3, c, s), MPQ_ERR_ARG);
    MPQ_ASSERT_OK(ctx, mpq_budget_set_layer(ctx, p, 0, 5, 2, c, s));
    MPQ_ASSERT_OK(ctx, mpq_budget_set_layer(ctx, p, 1, 5, 2, c, s));
    assert_int_equal(mpq_budget_pin(ctx, p, 0, 2), MPQ_ERR_ARG);
    /* Layer 2 never set: named in the error. */
    mpq_budget_spec spec = {MPQ_BUDGET_BITS, 0.0, 100};
    assert_int_equal(mpq_budget_solve(ctx, p, &spec, &res), MPQ_ERR_ARG);
    assert_non_null(strstr(ctx->err_msg, "layer 2"));
    assert_null(res);
    MPQ_ASSERT_OK(ctx, mpq_budget_exclude(ctx, p, 2, 1));
    /* Bad budgets. */
    spec = (mpq_budget_spec){MPQ_BUDGET_AVG_BITS, -1.0, 0};
    assert_int_equal(mpq_budget_solve(ctx, p, &spec, &res), MPQ_ERR_CONFIG);
    spec = (mpq_budget_spec){MPQ_BUDGET_AVG_BITS, NAN, 0};
    assert_int_equal(mpq_budget_solve(ctx, p, &spec, &res), MPQ_ERR_CONFIG);
    spec = (mpq_budget_spec){MPQ_BUDGET_BYTES, 0.0, -3};
    assert_int_equal(mpq_budget_solve(ctx, p, &spec, &res), MPQ_ERR_CONFIG);
    spec = (mpq_budget_spec){MPQ_BUDGET_BYTES, 0.0, INT64_MAX / 4};
    assert_int_equal(mpq_budget_solve(ctx, p, &spec, &res), MPQ_ERR_RANGE);
    /* avg 3 bits/weight over 10 weights = 30 bits: one layer at 20 bits. */
    spec = (mpq_budget_spec){MPQ_BUDGET_AVG_BITS, 3.0, 0};
    MPQ_ASSERT_OK(ctx, mpq_budget_solve(ctx, p, &spec, &res));
    assert_int_equal(res->budget_bits, 30);
    assert_int_equal(res->bits_used, 30);
    assert_true(res->objective == 1.5);
    assert_int_equal(res->choice[2], -1);
    assert_true(res->avg_bits == 3.0);
    mpq_budget_result_destroy(&res);
    /* Every allocation of a solve may fail: clean error, no result. */
    for (int64_t n = 0; n < 40; n++) {
        mpq_alloc_fail_after(ctx, n);
        mpq_err e = mpq_budget_solve(ctx, p, &spec, &res);
        mpq_alloc_fail_after(ctx, -1);
        if (e == MPQ_OK) {
            assert_true(res->objective == 1.5);
            mpq_budget_result_destroy(&res);
            break;
        }
        assert_int_equal(e, MPQ_ERR_NOMEM);
        assert_null(res);
    }
    mpq_budget_problem_destroy(&p);
    mpq_budget_problem_destroy(&p); /* NULL-safe */
    mpq_budget_result_destroy(&res);
    mpq_err_clear(ctx);
}

/* All layers excluded: an empty, feasible assignment. */
static void test_empty(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_budget_problem *p = NULL;
    mpq_budget_result *res = NULL;
    MPQ_ASSERT_OK(ctx, mpq_budget_problem_create(ctx, 2, 1, &p));
    MPQ_ASSERT_OK(ctx, mpq_budget_exclude(ctx, p, 0, 1));
    MPQ_ASSERT_OK(ctx, mpq_budget_exclude(ctx, p, 1, 1));
    mpq_budget_spec spec = {MPQ_BUDGET_BYTES, 0.0, 0};
    MPQ_ASSERT_OK(ctx, mpq_budget_solve(ctx, p, &spec, &res));
    assert_int_equal(res->choice[0], -1);
    assert_int_equal(res->choice[1], -1);
    assert_int_equal(res->bits_used, 0);
    assert_true(res->objective == 0.0);
    mpq_budget_result_destroy(&res);
    /* An average needs weights. */
    spec = (mpq_budget_spec){MPQ_BUDGET_AVG_BITS, 4.0, 0};
    assert_int_equal(mpq_budget_solve(ctx, p, &spec, &res), MPQ_ERR_CONFIG);
    mpq_budget_problem_destroy(&p);
    mpq_err_clear(ctx);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_vs_brute_force),
        cmocka_unit_test(test_large_vs_array_dp),
        cmocka_unit_test(test_realistic_gap),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_empty),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failed);
}
