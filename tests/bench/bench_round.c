/* bench_round.c: speed of the rounding stage.
 *
 * Prints JSON lines:
 *   {"bench":"gemm"}       DGEMM and SGEMM rates (n = 1024, best of 3), the
 *                          yardstick of this run;
 *   {"bench":"gptq"}       GPTQ on rows x cols (square 1024, 2048, 4096 and
 *                          4096 x 11008; --quick: 1024 and 2048 only):
 *                          factorisation time, rounding time, and the
 *                          rate of its flops (rows cols^2 for the updates,
 *                          as many for RTN's loss under the guard) as a
 *                          fraction of the DGEMM and SGEMM rates, and with
 *                          the factorisation (its time and the cols^3 / 3
 *                          flops of a Cholesky) as a fraction of the rate
 *                          of its precision's GEMM;
 *   {"bench":"learn"}      learned-rounding steps per second on 1024 x 1024,
 *                          flops 4 rows cols^2 per step, as a fraction of DGEMM;
 *   {"bench":"scaling"}    mpq_round_block on 8 layers of 512 x 512 (GPTQ and
 *                          adaround) on rank 0 alone and on all ranks:
 *                          speed-up = t(1 rank) / t(all ranks).
 * Run under mpirun -n 2 for the scaling line (registered that way).
 * `--gptq ROWS COLS` prints the gemm line and GPTQ on that shape only (one
 * rank; the peer benchmark bench_peer.sh uses it); `--natural` runs it with
 * the columns in their natural order instead of activation order. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_round.h"
#include "mpq_test.h"
#include "../round/round_ref.h"

static double gemm_rate(int dbl) {
    const int n = 1024;
    double best = 1e30;
    void *a = calloc((size_t)n * n, 8), *b = calloc((size_t)n * n, 8),
         *c = calloc((size_t)n * n, 8);
    for (int i = 0; i < n * n; i++) {
        if (dbl) {
            ((double *)a)[i] = rr_unif(1, (uint64_t)i);
            ((double *)b)[i] = rr_unif(2, (uint64_t)i);
        } else {
            ((float *)a)[i] = (float)rr_unif(1, (uint64_t)i);
            ((float *)b)[i] = (float)rr_unif(2, (uint64_t)i);
        }
    }
    for (int rep = 0; rep < 3; rep++) {
        double t0 = mpq_now();
        if (dbl)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c,
                        n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                        c, n);
        double t = mpq_now() - t0;
        best = t < best ? t : best;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * n * (double)n * n / best / 1e9;
}

static void make(int64_t rows, int64_t cols, float **W, double **H) {
    *W = malloc((size_t)(rows * cols) * sizeof **W);
    *H = malloc((size_t)(cols * cols) * sizeof **H);
    rr_weights(9, rows, cols, *W);
    /* A cheap SPD H: diagonal-dominant with smooth correlations. */
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < cols; j++)
            (*H)[i * cols + j] = (i == j ? (double)cols : 0.0) +
                                 0.5 * rr_unif(3, (uint64_t)(i < j ? i * cols + j : j * cols + i));
}

/* GPTQ on rows x cols, in tiles of round.tile_rows rows as a run's tasks
 * round them, with round.gptq_precision double, then float, for
 * groups fitted when the sweep reaches them ("groups":"refit") and for
 * static groups, in activation order or natural order, with the RTN guard;
 * last float with refit groups and round.rtn_guard = false (no product for
 * RTN's loss: GPTQ's own work alone); "form" says which
 * factor GPTQ used (U: a Cholesky and a triangular inverse; V: one
 * Cholesky, round_gptq.c) and "factor_precision" whether it was computed in
 * float32 (hfactor.c). Each float line adds its layer loss relative to the
 * double one's with the same groups. */
static mpq_err bench_gptq(mpq_ctx *ctx, int64_t rows, int64_t cols, double dgemm, double sgemm,
                          int act_order) {
    mpq_err err = MPQ_OK;
    float *W = NULL;
    double *H = NULL;
    mpq_round_problem *pb = NULL;
    mpq_qparams *p = NULL;
    uint8_t *codes = NULL;
    mpq_round_opts o;
    mpq_round_opts_default(&o);
    o.act_order = act_order;
    mpq_qspec spec;
    make(rows, cols, &W, &H);
    codes = malloc((size_t)(rows * cols));
    MPQ_TRY(mpq_qspec_parse(ctx, "int:bits=4,sym=false,group=128", &spec));
    double loss_double = 0.0, rtn_loss = 0.0;
    for (int run = 0; run < 5; run++) {
        const int fl = run % 2 || run == 4;
        o.gptq_float = fl;
        o.static_groups = run / 2 == 1;
        o.rtn_guard = run < 4;
        double t0 = mpq_now();
        MPQ_TRY(mpq_round_problem_create(ctx, &o, mpq_round_method_find("gptq"), "bench", &spec,
                                         rows, cols, W, H, &pb));
        double tf = mpq_now() - t0;
        MPQ_TRY(mpq_qparams_create(ctx, &spec, rows, cols, &p));
        mpq_round_stats st;
        t0 = mpq_now();
        memset(&st, 0, sizeof st);
        for (int64_t r0 = 0; r0 < rows; r0 += o.tile_rows) { /* as a run's tasks */
            const int64_t r1 = r0 + o.tile_rows < rows ? r0 + o.tile_rows : rows;
            mpq_round_stats ts;
            MPQ_TRY(mpq_round_tile(ctx, &o, mpq_round_method_find("gptq"), pb, p, r0, r1,
                                   codes + r0 * cols, &ts));
            st.loss += ts.loss;
            st.rtn_loss += ts.rtn_loss;
        }
        double tr = mpq_now() - t0;
        /* flops: GPTQ's updates rows cols^2, RTN's loss as many */
        const double work = (o.rtn_guard ? 2.0 : 1.0) * rows * (double)cols * cols;
        double rate = work / tr / 1e9;
        loss_double = fl ? loss_double : st.loss;
        /* unguarded: the last guarded run's RTN loss (the same RTN codes) */
        rtn_loss = o.rtn_guard ? st.rtn_loss : rtn_loss;
        printf("{\"bench\":\"gptq\",\"precision\":\"%s\",\"groups\":\"%s\",\"order\":\"%s\","
               "\"rtn_guard\":%s,"
               "\"form\":\"%s\",\"factor_precision\":\"%s\",\"rows\":%lld,\"cols\":%lld,"
               "\"factor_s\":%.3f,\"round_s\":%.3f,\"gflops\":%.2f,\"dgemm_gflops\":%.2f,"
               "\"sgemm_gflops\":%.2f,\"fraction_of_dgemm\":%.3f,\"fraction_of_sgemm\":%.3f,"
               "\"with_factor_of_gemm\":%.3f,\"loss_vs_rtn\":%.4f,\"loss_rel_vs_double\":%.2e}\n",
               fl ? "float" : "double", o.static_groups ? "static" : "refit",
               act_order ? "act" : "natural", o.rtn_guard ? "true" : "false", pb->vform ? "V" : "U",
               pb->factor_single ? "float" : "double", (long long)rows, (long long)cols, tf, tr,
               rate, dgemm, sgemm, rate / dgemm, rate / sgemm,
               (work + (double)cols * cols * cols / 3.0) / (tf + tr) / 1e9 / (fl ? sgemm : dgemm),
               st.loss / rtn_loss, fabs(st.loss - loss_double) / loss_double);
        fflush(stdout);
        mpq_qparams_destroy(&p);
        mpq_round_problem_destroy(&pb);
    }
cleanup:
    mpq_qparams_destroy(&p);
    mpq_round_problem_destroy(&pb);
    free(codes);
    free(W);
    free(H);
    return err;
}

static mpq_err bench_learn(mpq_ctx *ctx, double dgemm) {
    mpq_err err = MPQ_OK;
    const int64_t rows = 1024, cols = 1024;
    float *W = NULL;
    double *H = NULL;
    mpq_round_problem *pb = NULL;
    mpq_qparams *p = NULL;
    uint8_t *codes = NULL;
    mpq_round_opts o;
    mpq_round_opts_default(&o);
    o.iters = 20;
    o.init = MPQ_RINIT_RTN;
    mpq_qspec spec;
    make(rows, cols, &W, &H);
    codes = malloc((size_t)(rows * cols));
    MPQ_TRY(mpq_qspec_parse(ctx, "int:bits=4,sym=false,group=128", &spec));
    const char *names[] = {"adaround", "signround"};
    for (int k = 0; k < 2; k++) {
        const mpq_round_method *m = mpq_round_method_find(names[k]);
        MPQ_TRY(mpq_round_problem_create(ctx, &o, m, "bench", &spec, rows, cols, W, H, &pb));
        MPQ_TRY(mpq_qparams_create(ctx, &spec, rows, cols, &p));
        mpq_round_stats st;
        double t0 = mpq_now();
        MPQ_TRY(mpq_round_tile(ctx, &o, m, pb, p, 0, rows, codes, &st));
        double t = mpq_now() - t0;
        double ips = (double)o.iters / t, rate = ips * 4.0 * rows * (double)cols * cols / 1e9;
        printf("{\"bench\":\"learn\",\"method\":\"%s\",\"rows\":%lld,\"cols\":%lld,\"iters\":%lld,"
               "\"seconds\":%.3f,\"iters_per_s\":%.2f,\"gflops\":%.2f,\"dgemm_gflops\":%.2f,"
               "\"fraction_of_dgemm\":%.3f}\n",
               names[k], (long long)rows, (long long)cols, (long long)o.iters, t, ips, rate, dgemm,
               rate / dgemm);
        fflush(stdout);
        mpq_qparams_destroy(&p);
        mpq_round_problem_destroy(&pb);
    }
cleanup:
    mpq_qparams_destroy(&p);
    mpq_round_problem_destroy(&pb);
    free(codes);
    free(W);
    free(H);
    return err;
}

/* The same block on rank 0 alone (serial context) and on every rank. */
static mpq_err bench_scaling(mpq_ctx *ctx) {
    mpq_err err = MPQ_OK;
    enum { NL = 8 };
    const int64_t n = 512;
    float *W[NL] = {0};
    double *H[NL] = {0};
    mpq_round_job jobs[NL];
    memset(jobs, 0, sizeof jobs);
    mpq_round_result res[NL];
    mpq_ctx *solo = NULL;
    mpq_round_opts o;
    mpq_round_opts_default(&o);
    o.iters = 10;
    for (int l = 0; l < NL; l++) {
        make(n, n, &W[l], &H[l]);
        jobs[l].name = "bench";
        jobs[l].rows = n;
        jobs[l].cols = n;
        jobs[l].W = W[l];
        jobs[l].H = H[l];
        MPQ_TRY(mpq_qspec_parse(ctx, "int:bits=3,sym=false,group=64", &jobs[l].spec));
        jobs[l].method = mpq_round_method_find(l % 2 ? "adaround" : "gptq");
    }
    double t1 = 0.0;
    if (ctx->rank == 0) {
        MPQ_TRY(mpq_ctx_create(MPI_COMM_NULL, &solo));
        mpq_log_set_level(solo, MPQ_LOG_WARN);
        double t0 = mpq_now();
        MPQ_TRY(mpq_round_block(solo, &o, NL, jobs, res));
        t1 = mpq_now() - t0;
        mpq_round_results_free(NL, res);
    }
    MPQ_MPI_TRY(MPI_Barrier(ctx->comm));
    double t0 = mpq_now();
    MPQ_TRY(mpq_round_block(ctx, &o, NL, jobs, res));
    double tn = mpq_now() - t0;
    mpq_round_results_free(NL, res);
    if (ctx->rank == 0)
        printf("{\"bench\":\"scaling\",\"layers\":%d,\"rows\":%lld,\"cols\":%lld,\"ranks\":%d,"
               "\"seconds_1rank\":%.3f,\"seconds_all\":%.3f,\"speedup\":%.3f}\n",
               NL, (long long)n, (long long)n, ctx->size, t1, tn, t1 / tn);
cleanup:
    mpq_ctx_destroy(&solo);
    for (int l = 0; l < NL; l++) {
        free(W[l]);
        free(H[l]);
    }
    return err;
}

int main(int argc, char **argv) {
    mpq_ctx *ctx = mpq_test_init(&argc, &argv);
    int quick = 0;
    int64_t only[2] = {0, 0};
    int act_order = 1;
    for (int i = 1; i < argc; i++) {
        quick |= strcmp(argv[i], "--quick") == 0;
        act_order &= strcmp(argv[i], "--natural") != 0;
        if (strcmp(argv[i], "--gptq") == 0 && i + 2 < argc) {
            only[0] = atoll(argv[i + 1]);
            only[1] = atoll(argv[i + 2]);
        }
    }
    mpq_err err = MPQ_OK;
    if (only[0] > 0 && only[1] > 0) {
        double dg = gemm_rate(1), sg = gemm_rate(0);
        printf("{\"bench\":\"gemm\",\"n\":1024,\"dgemm_gflops\":%.2f,\"sgemm_gflops\":%.2f}\n", dg,
               sg);
        err = bench_gptq(ctx, only[0], only[1], dg, sg, act_order);
        if (err != MPQ_OK)
            fprintf(stderr, "bench_round: %s\n%s\n", ctx->err_msg, ctx->err_trace);
        return mpq_test_finish(&ctx, err != MPQ_OK);
    }
    if (ctx->rank == 0) {
        double dg = gemm_rate(1), sg = gemm_rate(0);
        printf("{\"bench\":\"gemm\",\"n\":1024,\"dgemm_gflops\":%.2f,\"sgemm_gflops\":%.2f}\n", dg,
               sg);
        static const int64_t shapes[4][2] = {
            {1024, 1024}, {2048, 2048}, {4096, 4096}, {4096, 11008}};
        for (int s = 0; s < (quick ? 2 : 4) && err == MPQ_OK; s++)
            err = bench_gptq(ctx, shapes[s][0], shapes[s][1], dg, sg, 1);
        if (err == MPQ_OK)
            err = bench_learn(ctx, dg);
    }
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK)
        err = bench_scaling(ctx);
    err = mpq_agree(ctx, err);
    if (err != MPQ_OK && ctx->rank == 0)
        fprintf(stderr, "bench_round: %s\n%s\n", ctx->err_msg, ctx->err_trace);
    return mpq_test_finish(&ctx, err != MPQ_OK);
}
