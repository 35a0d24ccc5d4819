/* test_quant_stories.c: every quantizer on the real weights of stories260K,
 * layer by layer (the 35 linear layers and the token embedding), with the
 * (layer, quantizer) pairs spread over the ranks and summed to every rank.
 * Checks ordering facts that must hold on real weights:
 *   - uniform asymmetric g32: error(8 bit) < error(4) < error(3) < error(2),
 *     on every layer;
 *   - fit=search <= fit=minmax on every layer (int4, int2 g32);
 *   - per-group g32 beats per-channel at 4 bits (sum over layers);
 *   - FP8 beats every 4-bit quantizer and binary is the worst (sums);
 *   - bits per weight equal the format's arithmetic.
 * The weights are read with a small llama2.c reader of its own (7 int32
 * header, fp32 arrays in the order of shared/README.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_quant.h"
#include "mpq_test.h"

static mpq_ctx *ctx;

typedef struct layer {
    char name[32];
    int64_t rows, cols;
    const float *w;
} layer;

#define MAXL 64
static layer layers[MAXL];
static int nlayers;
static float *blob;

static const char *const specs[] = {
    "int:bits=8,group=32",            /* 0 */
    "int:bits=4,group=32",            /* 1 */
    "int:bits=3,group=32",            /* 2 */
    "int:bits=2,group=32",            /* 3 */
    "int:bits=4,group=32,fit=search", /* 4 */
    "int:bits=2,group=32,fit=search", /* 5 */
    "int:bits=4,gran=channel",        /* 6 */
    "fp8",                            /* 7 */
    "binary",                         /* 8 */
    "int:bits=4,sym=true,group=32",
    "nf4:group=32",
    "fp4:group=32",
    "mxfp4",
    "nvfp4",
    "pow2:bits=4,group=32",
    "powerexp:bits=4,group=32,a=auto",
    "ternary:group=32",
    "ternary_seq:group=32,fit=search",
    "seq2:group=32,fit=search",
    "binary:group=32",
    "signed_binary",
    "int:bits=3,group=128",
};
#define NSPECS ((int)(sizeof specs / sizeof specs[0]))

static void load(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    int32_t h[7];
    assert_int_equal(fread(h, 4, 7, f), 7);
    int64_t dim = h[0], hid = h[1], L = h[2], nh = h[3], nkv = h[4], vocab = abs(h[5]);
    int64_t kv = dim * nkv / nh;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 28, SEEK_SET);
    int64_t nfloat = (size - 28) / 4;
    blob = malloc((size_t)nfloat * 4);
    assert_non_null(blob);
    assert_int_equal(fread(blob, 4, (size_t)nfloat, f), (size_t)nfloat);
    fclose(f);
    const float *p = blob;
    const float *emb = p;
    p += vocab * dim;
    p += L * dim; /* rms_att */
    const float *wq = p;
    p += L * dim * dim;
    const float *wk = p;
    p += L * kv * dim;
    const float *wv = p;
    p += L * kv * dim;
    const float *wo = p;
    p += L * dim * dim;
    p += L * dim; /* rms_ffn */
    const float *w1 = p;
    p += L * hid * dim;
    const float *w2 = p;
    p += L * dim * hid;
    const float *w3 = p;
    p += L * hid * dim;
    assert_true(p - blob <= nfloat);
    for (int64_t l = 0; l < L; l++) {
        struct {
            const char *n;
            const float *base;
            int64_t r, c;
        } m[7] = {{"wq", wq, dim, dim}, {"wk", wk, kv, dim},  {"wv", wv, kv, dim},
                  {"wo", wo, dim, dim}, {"w1", w1, hid, dim}, {"w2", w2, dim, hid},
                  {"w3", w3, hid, dim}};
        for (int k = 0; k < 7; k++) {
            layer *y = &layers[nlayers++];
            snprintf(y->name, sizeof y->name, "%s.%lld", m[k].n, (long long)l);
            y->rows = m[k].r;
            y->cols = m[k].c;
            y->w = m[k].base + l * m[k].r * m[k].c;
        }
    }
    layer *y = &layers[nlayers++];
    snprintf(y->name, sizeof y->name, "embedding");
    y->rows = vocab;
    y->cols = dim;
    y->w = emb;
    assert_int_equal(nlayers, 36);
    assert_int_equal(hid, 172);
}

static void test_stories(void **state) {
    (void)state;
    char path[1024];
    mpq_test_shared("data/models/stories260K/stories260K.bin", path, sizeof path);
    load(path);
    /* err[l][s]: relative squared error; bits[l][s]: storage bits. */
    static double err[MAXL][NSPECS], bits[MAXL][NSPECS], norm[MAXL];
    memset(err, 0, sizeof err);
    memset(bits, 0, sizeof bits);
    for (int l = 0; l < nlayers; l++) {
        double s = 0;
        for (int64_t i = 0; i < layers[l].rows * layers[l].cols; i++)
            s += (double)layers[l].w[i] * layers[l].w[i];
        norm[l] = s;
    }
    int job = 0;
    for (int l = 0; l < nlayers; l++)
        for (int k = 0; k < NSPECS; k++, job++) {
            if (job % ctx->size != ctx->rank)
                continue;
            mpq_qspec spec;
            mpq_qlayer *q = NULL;
            MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, specs[k], &spec));
            MPQ_ASSERT_OK(ctx, mpq_qlayer_create(ctx, &spec, layers[l].rows, layers[l].cols, &q));
            MPQ_ASSERT_OK(ctx, mpq_qlayer_quantize(ctx, q, layers[l].w, NULL));
            int64_t n = layers[l].rows * layers[l].cols;
            float *d = malloc((size_t)n * sizeof *d);
            mpq_qlayer_dequantize(q, d);
            double e = 0;
            for (int64_t i = 0; i < n; i++) {
                double x = (double)layers[l].w[i] - d[i];
                e += x * x;
            }
            err[l][k] = e / norm[l];
            bits[l][k] = (double)mpq_qlayer_bits(q);
            free(d);
            mpq_qlayer_destroy(&q);
        }
    MPI_Allreduce(MPI_IN_PLACE, err, MAXL * NSPECS, MPI_DOUBLE, MPI_SUM, ctx->comm);
    MPI_Allreduce(MPI_IN_PLACE, bits, MAXL * NSPECS, MPI_DOUBLE, MPI_SUM, ctx->comm);

    /* per-layer facts */
    for (int l = 0; l < nlayers; l++) {
        const double *e = err[l];
        if (ctx->rank == 0)
            printf("{\"test\":\"quant_stories\",\"layer\":\"%s\",\"shape\":[%lld,%lld],"
                   "\"int_g32_rel_mse\":{\"8\":%.4g,\"4\":%.4g,\"3\":%.4g,\"2\":%.4g},"
                   "\"search_rel_mse\":{\"4\":%.4g,\"2\":%.4g}}\n",
                   layers[l].name, (long long)layers[l].rows, (long long)layers[l].cols, e[0], e[1],
                   e[2], e[3], e[4], e[5]);
        if (!(e[0] < e[1] && e[1] < e[2] && e[2] < e[3]))
            fail_msg("%s: int g32 errors not ordered: 8b %.3g 4b %.3g 3b %.3g 2b %.3g",
                     layers[l].name, e[0], e[1], e[2], e[3]);
        if (!(e[4] <= e[1] && e[5] <= e[3]))
            fail_msg("%s: search worse than minmax: 4b %.4g > %.4g or 2b %.4g > %.4g",
                     layers[l].name, e[4], e[1], e[5], e[3]);
        /* bits per weight: int4 g32 asym fp16 = 4 bits/weight + (16 + 4) bits per group */
        int64_t n = layers[l].rows * layers[l].cols,
                ng = layers[l].rows * ((layers[l].cols + 31) / 32);
        double want = 8.0 * ((n * 4 + 7) / 8 + 2 * ng + (ng * 4 + 7) / 8);
        if (bits[l][1] != want)
            fail_msg("%s: int4 g32 storage %.0f bits, expected %.0f", layers[l].name, bits[l][1],
                     want);
    }
    /* sums over the layers, weighted by each layer's squared norm */
    double tot[NSPECS] = {0}, bpw[NSPECS] = {0}, ntot = 0, wtot = 0;
    for (int l = 0; l < nlayers; l++) {
        ntot += norm[l];
        wtot += (double)(layers[l].rows * layers[l].cols);
        for (int k = 0; k < NSPECS; k++) {
            tot[k] += err[l][k] * norm[l];
            bpw[k] += bits[l][k];
        }
    }
    for (int k = 0; k < NSPECS; k++) {
        tot[k] /= ntot;
        bpw[k] /= wtot;
        if (ctx->rank == 0)
            printf("{\"test\":\"quant_stories\",\"spec\":\"%s\",\"rel_mse\":%.6g,\"bits_per_"
                   "weight\":%.6g}\n",
                   specs[k], tot[k], bpw[k]);
    }
    if (!(tot[1] < tot[6]))
        fail_msg("int4: g32 %.4g not better than per-channel %.4g", tot[1], tot[6]);
    for (int k = 0; k < NSPECS; k++) {
        if (k != 7 && k != 0 && !(tot[7] < tot[k]) && bpw[k] < 6.0)
            fail_msg("fp8 (%.4g) not better than %s (%.4g)", tot[7], specs[k], tot[k]);
        if (bpw[k] >= 2.0 && !(tot[8] > tot[k]))
            fail_msg("binary per channel (%.4g) not worse than %s (%.4g)", tot[8], specs[k],
                     tot[k]);
    }
    /* one sign per channel loses the other half of the weights */
    if (!(tot[20] > tot[8]))
        fail_msg("signed binary (%.4g) not worse than binary (%.4g)", tot[20], tot[8]);
    free(blob);
}

int main(int argc, char **argv) {
    ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&ctx, failures);
}
