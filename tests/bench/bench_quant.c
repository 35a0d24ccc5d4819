/* bench_quant.c: throughput of every quantizer, in GB/s of fp32 input.
 *
 * For each spec, on a [rows][cols] matrix of normal weights (default
 * 1024 x 4096, 16 MiB; override with argv[1], argv[2]; argv[3] runs one
 * spec instead of the list): the time of
 * quantize + pack with fitted parameters (nearest codes, then the packed
 * stream) and of fit + quantize + pack, best of 3. The yardstick, measured in
 * the same run, is memcpy of the same 16 MiB buffer (best of 5); ratio =
 * quantize+pack bandwidth / memcpy bandwidth. One JSON line per spec. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_log.h"
#include "mpq_quant.h"
#include "mpq_test.h"

static const char *const specs[] = {
    "int:bits=8,group=128",
    "int:bits=4,group=128",
    "int:bits=4,group=32",
    "int:bits=3,group=128",
    "int:bits=2,group=64",
    "int:bits=4,sym=true,gran=channel",
    "int:bits=4,group=128,fit=search",
    "binary",
    "signed_binary",
    "ternary",
    "ternary:pack=base3",
    "ternary_seq",
    "seq2",
    "pow2:bits=4",
    "powerexp:bits=4,a=0.5",
    "fp4",
    "mxfp4",
    "nvfp4",
    "fp8",
    "nf4",
};

static mpq_err bench(mpq_ctx *ctx, const char *text, const float *w, int64_t rows, int64_t cols,
                     double memcpy_gbps) {
    mpq_err err = MPQ_OK;
    mpq_qlayer *L = NULL;
    mpq_qspec spec;
    MPQ_TRY(mpq_qspec_parse(ctx, text, &spec));
    MPQ_TRY(mpq_qlayer_create(ctx, &spec, rows, cols, &L));
    double bytes = 4.0 * (double)rows * (double)cols, best_q = INFINITY, best_all = INFINITY;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = mpq_now();
        MPQ_TRY(mpq_quant_fit(ctx, L->params, w, NULL));
        double t1 = mpq_now();
        mpq_quant_quantize(L->params, w, L->codes);
        MPQ_TRY(mpq_quant_pack(ctx, &spec, L->codes, rows * cols, L->packed));
        double t2 = mpq_now();
        best_q = fmin(best_q, t2 - t1);
        best_all = fmin(best_all, t2 - t0);
    }
    double gq = bytes / best_q / 1e9, ga = bytes / best_all / 1e9;
    if (ctx->rank == 0)
        printf("{\"bench\":\"quant\",\"spec\":\"%s\",\"rows\":%lld,\"cols\":%lld,"
               "\"bits_per_weight\":%.4f,\"quant_pack_gbps\":%.4f,\"fit_quant_pack_gbps\":%.4f,"
               "\"memcpy_gbps\":%.3f,\"ratio\":%.4f,\"ratio_with_fit\":%.4f}\n",
               text, (long long)rows, (long long)cols,
               (double)mpq_qlayer_bits(L) / ((double)rows * (double)cols), gq, ga, memcpy_gbps,
               gq / memcpy_gbps, ga / memcpy_gbps);
cleanup:
    mpq_qlayer_destroy(&L);
    return err;
}

int main(int argc, char **argv) {
    mpq_ctx *ctx = mpq_test_init(&argc, &argv);
    int64_t rows = argc > 1 ? atoll(argv[1]) : 1024, cols = argc > 2 ? atoll(argv[2]) : 4096;
    int64_t n = rows * cols;
    float *w = NULL, *copy = NULL;
    mpq_err err = MPQ_OK;
    MPQ_ALLOC_TRY(w, n);
    MPQ_ALLOC_TRY(copy, n);
    uint64_t s = 12345;
    for (int64_t i = 0; i < n; i += 2) { /* Box-Muller normals */
        double u[2];
        for (int k = 0; k < 2; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            u[k] = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
        }
        double r = 0.02 * sqrt(-2.0 * log(u[0]));
        w[i] = (float)(r * cos(6.283185307179586 * u[1]));
        if (i + 1 < n)
            w[i + 1] = (float)(r * sin(6.283185307179586 * u[1]));
    }
    double best = INFINITY;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = mpq_now();
        memcpy(copy, w, (size_t)n * sizeof *w);
        best = fmin(best, mpq_now() - t0);
    }
    /* memcpy reads and writes: count the bytes read, like the quantizers */
    double memcpy_gbps = 4.0 * (double)n / best / 1e9;
    if (copy[n / 2] != w[n / 2])
        err = MPQ_ERR_INTERNAL;
    if (argc > 3) /* one spec given on the command line */
        MPQ_TRY(bench(ctx, argv[3], w, rows, cols, memcpy_gbps));
    for (size_t i = 0; argc <= 3 && i < sizeof specs / sizeof specs[0]; i++)
        MPQ_TRY(bench(ctx, specs[i], w, rows, cols, memcpy_gbps));
cleanup:
    if (err != MPQ_OK)
        fprintf(stderr, "bench_quant: %s\n%s\n", ctx->err_msg, ctx->err_trace);
    mpq_free(w);
    mpq_free(copy);
    return mpq_test_finish(&ctx, err != MPQ_OK);
}
