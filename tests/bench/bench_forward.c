/* bench_forward.c: forward-pass throughput of the model families, as a
 * ratio to this machine's SGEMM rate measured in the same run.
 *
 * Prints JSON lines:
 *   {"bench":"sgemm", "m":..,"gflops":..}
 *   {"bench":"forward","family":"llama","model":"stories260K","seq_len":..,
 *    "tokens_per_s":..,"gflops":..,"sgemm_gflops":..,"ratio":..}
 *   {"bench":"forward","family":"cnn","model":"mnist-cnn-small","batch":..,
 *    "images_per_s":..,"gflops":..,"sgemm_gflops":..,"ratio":..}
 * gflops counts the multiply-adds of the network's GEMMs (2 flops each,
 * attention included); ratio = gflops / sgemm_gflops. Not a test: no
 * assertion on speed. Single rank. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "mpq_config.h"
#include "mpq_family.h"
#include "mpq_log.h"
#include "mpq_model.h"
#include "mpq_test.h"

/* Best-of-3 SGEMM rate on square n x n matrices, GFLOP/s. */
static double sgemm_gflops(int n) {
    float *a = malloc(sizeof(float) * (size_t)n * n), *b = malloc(sizeof(float) * (size_t)n * n);
    float *c = malloc(sizeof(float) * (size_t)n * n);
    for (int64_t i = 0; i < (int64_t)n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = mpq_now();
        int iters = 0;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                        n);
            iters++;
        } while (mpq_now() - t0 < 0.3);
        double g = 2.0 * n * (double)n * n * iters / (mpq_now() - t0) / 1e9;
        best = g > best ? g : best;
    }
    free(a), free(b), free(c);
    return best;
}

int main(int argc, char **argv) {
    mpq_ctx *ctx = mpq_test_init(&argc, &argv);
    char mpath[4096], cpath[4096], cfgpath[4096];
    mpq_test_shared("data/models/stories260K/stories260K.bin", mpath, sizeof mpath);
    mpq_test_shared("data/models/mnist-cnn-small/model-mnist.safetensors", cpath, sizeof cpath);
    const char *src = getenv("MPQ_SOURCE_DIR");
    snprintf(cfgpath, sizeof cfgpath, "%s/configs/mnist-cnn-small.cfg", src ? src : ".");
    int fails = 0;

    double sg = sgemm_gflops(512);
    printf("{\"bench\":\"sgemm\",\"m\":512,\"gflops\":%.3f}\n", sg);

    /* Llama: batches of 4 sequences of 256 tokens. */
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    if (mpq_model_open(ctx, mpath, "auto", &m) != MPQ_OK ||
        mpq_family_create(ctx, m, NULL, "llama", &f) != MPQ_OK) {
        fprintf(stderr, "bench_forward: %s\n", ctx->err_msg);
        fails++;
    } else {
        const mpq_family_info *fi = mpq_family_get_info(f);
        const mpq_arch *a = mpq_model_arch(m);
        enum { NSEQ = 4, L = 256 };
        int64_t lens[NSEQ], rows = NSEQ * L;
        int32_t *tok = malloc(sizeof(int32_t) * (size_t)rows);
        float *logits = malloc(sizeof(float) * (size_t)(rows * fi->out_width));
        unsigned s = 1;
        for (int i = 0; i < NSEQ; i++)
            lens[i] = L;
        for (int64_t i = 0; i < rows; i++) {
            s = s * 1103515245u + 12345u;
            tok[i] = (int32_t)((s >> 8) % (unsigned)fi->vocab_size);
        }
        /* Multiply-adds per token: the 7 projections, the head, and
         * attention (scores + values over the L x L causal square computed
         * as a full square by the GEMMs). */
        double per_tok = 0.0;
        for (int64_t l = 0; l < fi->nlayers; l++)
            per_tok += (double)fi->layers[l].out * (double)fi->layers[l].in;
        per_tok += (double)a->dim * (double)fi->out_width;
        double hd = a->head_dim > 0 ? (double)a->head_dim : (double)(a->dim / a->n_heads);
        per_tok += (double)a->n_layers * (double)a->n_heads * 2.0 * L * hd;
        mpq_batch b = {.nseq = NSEQ, .len = lens, .rows = rows, .tokens = tok};
        mpq_family_forward(ctx, f, &b, logits); /* warm-up */
        double t0 = mpq_now();
        int iters = 0;
        do {
            if (mpq_family_forward(ctx, f, &b, logits) != MPQ_OK) {
                fails++;
                break;
            }
            iters++;
        } while (mpq_now() - t0 < 2.0);
        double dt = mpq_now() - t0;
        double tps = (double)rows * iters / dt, gf = 2.0 * per_tok * tps / 1e9;
        printf("{\"bench\":\"forward\",\"family\":\"llama\",\"model\":\"stories260K\","
               "\"seq_len\":%d,\"batch_seqs\":%d,\"tokens_per_s\":%.1f,\"gflops\":%.3f,"
               "\"sgemm_gflops\":%.3f,\"ratio\":%.4f}\n",
               L, NSEQ, tps, gf, sg, gf / sg);
        free(tok);
        free(logits);
    }
    mpq_family_destroy(&f);
    mpq_model_close(&m);

    /* CNN: batches of 256 images. */
    mpq_config *cfg = NULL;
    if (mpq_config_load(ctx, cfgpath, 0, NULL, &cfg) != MPQ_OK ||
        mpq_model_open(ctx, cfg->model.path, cfg->model.format, &m) != MPQ_OK ||
        mpq_family_create(ctx, m, cfg, NULL, &f) != MPQ_OK) {
        fprintf(stderr, "bench_forward: %s\n", ctx->err_msg);
        fails++;
    } else {
        const mpq_family_info *fi = mpq_family_get_info(f);
        enum { NB = 256 };
        float *in = malloc(sizeof(float) * (size_t)(NB * fi->input_numel));
        float *out = malloc(sizeof(float) * (size_t)(NB * fi->out_width));
        for (int64_t i = 0; i < NB * fi->input_numel; i++)
            in[i] = (float)((i * 37) % 256);
        /* Multiply-adds per image: each conv/linear layer over its output
         * positions (width of the next block / out channels). */
        double per_img = 0.0;
        for (int64_t l = 0; l < fi->nlayers; l++) {
            const mpq_layer_info *li = &fi->layers[l];
            double positions = 1.0;
            if (li->kind == MPQ_LAYER_CONV) {
                /* Output positions: the conv's output numel / channels; the
                 * block's output width is after pooling, so recompute from
                 * the block input (same padding keeps h x w). */
                double hw = (double)mpq_family_width(f, li->block) / (double)li->c_in;
                positions = hw; /* stride 1, "same" padding in this model */
            }
            per_img += positions * (double)li->out * (double)li->in;
        }
        mpq_batch b = {.nseq = NB, .rows = NB, .input = in};
        mpq_family_forward(ctx, f, &b, out);
        double t0 = mpq_now();
        int iters = 0;
        do {
            if (mpq_family_forward(ctx, f, &b, out) != MPQ_OK) {
                fails++;
                break;
            }
            iters++;
        } while (mpq_now() - t0 < 2.0);
        double dt = mpq_now() - t0;
        double ips = (double)NB * iters / dt, gf = 2.0 * per_img * ips / 1e9;
        printf("{\"bench\":\"forward\",\"family\":\"cnn\",\"model\":\"mnist-cnn-small\","
               "\"batch\":%d,\"images_per_s\":%.1f,\"gflops\":%.3f,\"sgemm_gflops\":%.3f,"
               "\"ratio\":%.4f}\n",
               NB, ips, gf, sg, gf / sg);
        free(in);
        free(out);
    }
    mpq_family_destroy(&f);
    mpq_model_close(&m);
    mpq_config_destroy(&cfg);
    fflush(stdout);
    return mpq_test_finish(&ctx, fails);
}
