/* bench_budget.c: speed of the exact budget solver on 7B-style instances.
 *
 * Layers cycle through the seven linear layers of a Llama-7B block (q, k, v,
 * o: 4096x4096; gate, up: 11008x4096; down: 4096x11008); each has 8
 * candidates: 2/3/4/8 bits with groups of 128 or 64 (an fp16 scale and zero
 * per group: 32 bits per group). Scores follow the usual error model
 * importance * n * 4^-bits with noise. For 1000, 4000 and 10000 layers and
 * three budgets, prints one JSON line with the solve time (best of 3) and,
 * as a machine-independent yardstick measured in the same run, the time of
 * qsort on as many doubles as there are candidates; ratio = solve / qsort.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "mpq_budget.h"
#include "mpq_test.h"

static int dcmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t next(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 11;
}

static double unif(uint64_t *s) {
    return (double)next(s) / 9007199254740992.0;
}

static mpq_err run(mpq_ctx *ctx, int64_t L) {
    static const int64_t rows[7] = {4096, 4096, 4096, 4096, 11008, 11008, 4096};
    static const int64_t cols[7] = {4096, 4096, 4096, 4096, 4096, 4096, 11008};
    static const int bitw[4] = {2, 3, 4, 8};
    const int K = 8;
    mpq_err err = MPQ_OK;
    mpq_budget_problem *p = NULL;
    mpq_budget_result *res = NULL;
    double *ref = NULL, *work = NULL;
    uint64_t seed = 2024 + (uint64_t)L;
    MPQ_TRY(mpq_budget_problem_create(ctx, L, K, &p));
    MPQ_ALLOC_TRY(ref, L * K);
    MPQ_ALLOC_TRY(work, L * K);
    for (int64_t l = 0; l < L; l++) {
        int64_t n = rows[l % 7] * cols[l % 7], c[8];
        double s[8], imp = exp(3.0 * unif(&seed));
        for (int j = 0; j < K; j++) {
            int64_t g = j < 4 ? 128 : 64;
            c[j] = n * bitw[j % 4] + rows[l % 7] * ((cols[l % 7] + g - 1) / g) * 32;
            s[j] = imp * (double)n * pow(4.0, -bitw[j % 4]) * (g == 64 ? 0.85 : 1.0) *
                   (0.9 + 0.2 * unif(&seed));
            ref[l * K + j] = s[j];
        }
        MPQ_TRY(mpq_budget_set_layer(ctx, p, l, n, K, c, s));
    }
    const double avgs[3] = {2.5, 3.5, 4.25};
    for (int b = 0; b < 3; b++) {
        mpq_budget_spec spec = {MPQ_BUDGET_AVG_BITS, avgs[b], 0};
        double best = INFINITY, best_ref = INFINITY;
        for (int rep = 0; rep < 3; rep++) {
            mpq_budget_result_destroy(&res);
            double t0 = mpq_now();
            MPQ_TRY(mpq_budget_solve(ctx, p, &spec, &res));
            best = fmin(best, mpq_now() - t0);
            for (int64_t i = 0; i < L * K; i++)
                work[i] = ref[i];
            t0 = mpq_now();
            qsort(work, (size_t)(L * K), sizeof *work, dcmp);
            best_ref = fmin(best_ref, mpq_now() - t0);
        }
        printf("{\"bench\":\"budget\",\"layers\":%lld,\"candidates\":%d,\"avg_bits\":%.2f,"
               "\"solve_s\":%.6f,\"ref\":\"qsort_%lld_doubles\",\"ref_s\":%.6f,\"ratio\":%.2f,"
               "\"achieved_avg\":%.6f,\"rel_gap\":%.3e,\"core_layers\":%lld,"
               "\"max_frontier\":%lld}\n",
               (long long)L, K, avgs[b], best, (long long)(L * K), best_ref, best / best_ref,
               res->avg_bits, res->rel_gap, (long long)res->core_layers,
               (long long)res->max_frontier);
        fflush(stdout);
    }
cleanup:
    mpq_budget_result_destroy(&res);
    mpq_budget_problem_destroy(&p);
    mpq_free(ref);
    mpq_free(work);
    return err;
}

int main(int argc, char **argv) {
    mpq_ctx *ctx = mpq_test_init(&argc, &argv);
    int failed = 0;
    const int64_t sizes[3] = {1000, 4000, 10000};
    for (int i = 0; i < 3 && !failed; i++) {
        mpq_err e = run(ctx, sizes[i]);
        if (e != MPQ_OK) {
            fprintf(stderr, "bench_budget: %s\n%s\n", ctx->err_msg, ctx->err_trace);
            failed = 1;
        }
    }
    return mpq_test_finish(&ctx, failed);
}
