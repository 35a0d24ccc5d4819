/* bench_hessian.c: speed and memory of the Hessian statistics engine.
 *
 *   mpirun -n P bench_hessian [--d 2048] [--rows 16384] [--chunk-rows 2048]
 *                             [--sizes 2048,4096,8192] [--no-factor]
 *
 * Prints JSON lines (rank 0; the memory line on every rank):
 *  - hessian_accumulate: H accumulation rate of mpq_hstat (float rows ->
 *    double blocks -> DSYRK -> exact fixed-point fold per chunk) in GFLOP/s,
 *    next to one DSYRK (k = all rows, data already double) and one DGEMM
 *    of the same product timed in the same run; ratio = accumulate/DSYRK.
 *    Flops are counted as rows * d * (d + 1) (the symmetric product).
 *    Every rank runs it at the same time on its own data (the per-rank
 *    rate of a real calibration); rank 0 reports.
 *  - hessian_factor: chol(Hd), Hd^-1 and chol(Hd^-1) of an n x n SPD
 *    matrix with ScaLAPACK on the squarest grid of the P ranks (scatter
 *    and gathers from rank 0 included), and with LAPACK on rank 0 alone;
 *    ratio = lapack_s / scalapack_s (> 1: ScaLAPACK is faster).
 *  - hessian_memory: peak RSS of each rank during each phase (VmHWM,
 *    reset at the phase start; getrusage's lifetime peak where the reset
 *    is unavailable), against the analytic minimum of that phase's
 *    buffers (the RSS also holds the program, MPI and BLAS, ~30-60 MiB).
 * Run at 1, 2 and 4 ranks to compare: mpirun -n 1|2|4 bench_hessian. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "mpq_hessian.h"
#include "mpq_test.h"
#include "../hessian/synth.h"

/* Outside cmocka: report the error and fail the run. */
#define BENCH_OK(e)                                                                                \
    do {                                                                                           \
        if ((e) != MPQ_OK) {                                                                       \
            fprintf(stderr, "bench_hessian: %s\n%s\n", ctx->err_msg, ctx->err_trace);              \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

/* Peak resident set of this process in MiB since the last reset_peak():
 * VmHWM of /proc/self/status (resettable through clear_refs), else the
 * lifetime peak from getrusage. */
static double peak_rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kib = -1.0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kib = atof(line + 6);
    if (f)
        fclose(f);
    if (kib < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kib = (double)ru.ru_maxrss; /* KiB on Linux */
    }
    return kib / 1024.0;
}

static void reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static void memory_line(mpq_ctx *ctx, const char *phase, double min_mib) {
    double rss = peak_rss_mib();
    for (int r = 0; r < ctx->size; r++) {
        if (r == ctx->rank)
            printf("{\"bench\":\"hessian_memory\",\"phase\":\"%s\",\"rank\":%d,\"ranks\":%d,"
                   "\"peak_rss_mib\":%.1f,\"analytic_min_mib\":%.1f,\"ratio\":%.3f}\n",
                   phase, ctx->rank, ctx->size, rss, min_mib, rss / min_mib);
        fflush(stdout);
        MPI_Barrier(ctx->comm);
    }
}

static int bench_accumulate(mpq_ctx *ctx, int64_t d, int64_t rows, int64_t chunk_rows) {
    float *x = malloc(sizeof(float) * rows * d);
    double *xd = malloc(sizeof(double) * rows * d), *C = calloc((size_t)(d * d), sizeof(double));
    if (!x || !xd || !C)
        return 1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < d; c++) {
            x[r * d + c] = (float)synth_unif(7 + (uint64_t)ctx->rank, 0, r, c);
            xd[r * d + c] = x[r * d + c];
        }
    const double flops = (double)rows * (double)d * (double)(d + 1);

    /* Warm-up, then three alternating repetitions of the reference DSYRK
     * (one call over all rows), the DGEMM of the same product and the
     * accumulation; the fastest of each is reported (robust to other load
     * on the machine). */
    cblas_dsyrk(CblasColMajor, CblasUpper, CblasNoTrans, (int)d, (int)(d < rows ? d : rows), 1.0,
                xd, (int)d, 0.0, C, (int)d);
    double t_syrk = 1e300, t_gemm = 1e300, t_acc = 1e300, t0 = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        MPI_Barrier(ctx->comm);
        t0 = mpq_now();
        cblas_dsyrk(CblasColMajor, CblasUpper, CblasNoTrans, (int)d, (int)rows, 1.0, xd, (int)d,
                    0.0, C, (int)d);
        t_syrk = fmin(t_syrk, mpq_now() - t0);
        MPI_Barrier(ctx->comm);
        t0 = mpq_now();
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, (int)d, (int)d, (int)rows, 1.0, xd,
                    (int)d, xd, (int)d, 0.0, C, (int)d);
        t_gemm = fmin(t_gemm, mpq_now() - t0);
        mpq_hstat *st = NULL;
        BENCH_OK(mpq_hstat_create(ctx, "bench", d, 16, &st));
        MPI_Barrier(ctx->comm);
        t0 = mpq_now();
        for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
            int64_t n = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
            BENCH_OK(mpq_hstat_begin_chunk(ctx, st));
            BENCH_OK(mpq_hstat_accumulate(ctx, st, x + r0 * d, n, d));
            BENCH_OK(mpq_hstat_end_chunk(ctx, st));
        }
        t_acc = fmin(t_acc, mpq_now() - t0);
        mpq_hstat_destroy(&st);
    }
    free(C);
    free(xd);

    /* Memory and reduction: a fresh pass without the double copy. */
    reset_peak();
    mpq_hstat *st = NULL;
    BENCH_OK(mpq_hstat_create(ctx, "bench", d, 16, &st));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
        int64_t n = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
        BENCH_OK(mpq_hstat_begin_chunk(ctx, st));
        BENCH_OK(mpq_hstat_accumulate(ctx, st, x + r0 * d, n, d));
        BENCH_OK(mpq_hstat_end_chunk(ctx, st));
    }
    MPI_Barrier(ctx->comm);
    t0 = mpq_now();
    BENCH_OK(mpq_hstat_reduce(ctx, st, 0));
    double t_red = mpq_now() - t0;
    if (ctx->rank == 0)
        printf("{\"bench\":\"hessian_accumulate\",\"ranks\":%d,\"d\":%lld,\"rows_per_rank\":%lld,"
               "\"chunk_rows\":%lld,\"accumulate_s\":%.4f,\"gflops\":%.2f,\"dsyrk_gflops\":%.2f,"
               "\"dgemm_gflops\":%.2f,\"ratio_vs_dsyrk\":%.3f,\"reduce_s\":%.4f}\n",
               ctx->size, (long long)d, (long long)rows, (long long)chunk_rows, t_acc,
               flops / t_acc * 1e-9, flops / t_syrk * 1e-9, 2.0 * rows * d * d / t_gemm * 1e-9,
               t_syrk / t_acc, t_red);
    fflush(stdout);
    mpq_hstat_destroy(&st);
    /* Minimum: the float rows, the accumulator (24 B per packed entry), one
     * chunk's rows and a panel in double, and H on the target (a d x d
     * double matrix, materialised once the accumulation buffers are gone). */
    double min_mib = ((double)rows * d * 4 + 12.0 * d * (d + 1) + 8.0 * d * d +
                      8.0 * (double)(chunk_rows + MPQ_HSTAT_PANEL) * d) /
                     1048576.0;
    free(x);
    memory_line(ctx, "accumulate", min_mib);
    return 0;
}

static int bench_factor(mpq_ctx *ctx, int64_t n) {
    reset_peak();
    double *H = NULL;
    if (ctx->rank == 0) {
        H = malloc(sizeof(double) * n * n);
        if (!H)
            return 1;
        /* SPD: symmetric with entries in [-1, 1), diagonal n. */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j <= i; j++) {
                double v = i == j ? (double)n : synth_unif(11, 0, i, j);
                H[i * n + j] = H[j * n + i] = v;
            }
    }
    const unsigned what = MPQ_HF_CHOL | MPQ_HF_INV | MPQ_HF_INV_CHOL;
    mpq_hfactor_opts o;
    mpq_hfactor_opts_default(&o);
    o.scalapack = "always";
    mpq_hfactor *f = NULL;
    MPI_Barrier(ctx->comm);
    double t0 = mpq_now();
    BENCH_OK(mpq_hfactor_compute(ctx, &o, "bench", n, H, 0, what, &f));
    MPI_Barrier(ctx->comm);
    double t_sca = mpq_now() - t0;
    int nprow = f->nprow, npcol = f->npcol;
    mpq_hfactor_destroy(&f);
    double t_lap = 0.0;
    if (ctx->rank == 0) {
        o.scalapack = "never";
        t0 = mpq_now();
        BENCH_OK(mpq_hfactor_local(ctx, &o, "bench", n, H, what, &f));
        t_lap = mpq_now() - t0;
        mpq_hfactor_destroy(&f);
        printf("{\"bench\":\"hessian_factor\",\"ranks\":%d,\"n\":%lld,\"grid\":\"%dx%d\","
               "\"nb\":%d,\"scalapack_s\":%.3f,\"lapack_s\":%.3f,\"ratio_lapack_over_scalapack\":"
               "%.3f}\n",
               ctx->size, (long long)n, nprow, npcol, o.block_size, t_sca, t_lap, t_lap / t_sca);
        fflush(stdout);
    }
    free(H);
    /* Minimum on rank 0: H, the damped copy, the three outputs (n^2 each)
     * and its local piece (n^2 / P); elsewhere the local piece. */
    double piece = 8.0 * n * n / ctx->size / 1048576.0;
    memory_line(ctx, "factor", ctx->rank == 0 ? 5.0 * 8.0 * n * n / 1048576.0 + piece : piece);
    return 0;
}

int main(int argc, char **argv) {
    mpq_ctx *ctx = mpq_test_init(&argc, &argv);
    int64_t d = 2048, rows = 16384, chunk_rows = 2048;
    const char *sizes = "2048,4096,8192";
    int factor = 1;
    for (int k = 1; k < argc; k++) {
        if (!strcmp(argv[k], "--d") && k + 1 < argc)
            d = atoll(argv[++k]);
        else if (!strcmp(argv[k], "--rows") && k + 1 < argc)
            rows = atoll(argv[++k]);
        else if (!strcmp(argv[k], "--chunk-rows") && k + 1 < argc)
            chunk_rows = atoll(argv[++k]);
        else if (!strcmp(argv[k], "--sizes") && k + 1 < argc)
            sizes = argv[++k];
        else if (!strcmp(argv[k], "--no-factor"))
            factor = 0;
    }
    int fail = bench_accumulate(ctx, d, rows, chunk_rows);
    if (factor) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", sizes);
        for (char *tok = strtok(buf, ","); tok && !fail; tok = strtok(NULL, ","))
            fail = bench_factor(ctx, atoll(tok));
    }
    return mpq_test_finish(&ctx, fail);
}
