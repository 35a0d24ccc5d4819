/* bench_forward.c: forward-pass throughput of the model families, as a
 * ratio to this machine's SGEMM rate measured in the same run.
 *
 * Prints JSON lines:
 *   {"bench":"sgemm", "m":..,"gflops":..}
 *   {"bench":"forward","family":"llama","model":"stories260K","seq_len":..,
 *    "tokens_per_s":..,"gflops":..,"sgemm_gflops":..,"ratio":..}
 *   {"bench":"forward","family":"cnn","model":"mnist-cnn-small","batch":..,
 *    "images_per_s":..,"gflops":..,"sgemm_gflops":..,"ratio":..}
 *   {"bench":"forward_llama","hidden":..,"intermediate":..,"batch_seqs":..,
 *    "seq_len":..,"tokens_per_s":..,"gflops":..,"sgemm_gflops":..,"ratio":..}
 * gflops counts the multiply-adds of the network's GEMMs (2 flops each,
 * attention included); ratio = gflops / sgemm_gflops. Not a test: no
 * assertion on speed. Single rank.
 *
 * With the path of mpq_mkllama as its argument it also times one-block
 * Llama models of the widths users bring (hidden 1024, 2048 and 4096 with
 * the usual intermediate sizes, random weights, vocabulary 512 so that the
 * block dominates) on a batch of 8 sequences of 256 tokens (the evaluation
 * and calibration batches) and on one sequence (a single short document),
 * against SGEMM of the projections' shape (2048 x hidden x hidden); and
 * the output head of a BF16 model (hidden 2048, vocabulary 32000), which
 * the family converts a tile at a time:
 *   {"bench":"head","rows":..,"seconds_per_pass":..,"ratio":..,
 *    "rss_growth_mib":..,"head_bf16_mib":..,"head_fp32_mib":..}
 * (ratio against SGEMM of the same shape with an fp32 head; the growth of
 * resident memory from opening the model to after the passes, against the
 * head's size in BF16 and fp32). */
#include <stdint.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mpq_config.h"
#include "mpq_family.h"
#include "mpq_log.h"
#include "mpq_model.h"
#include "mpq_test.h"
#include "mpq_tokenizer.h"

/* Best-of-3 SGEMM rate of [m][k] x [k][n]^T, GFLOP/s, each of the three
 * repeating the product for at least secs seconds. */
static double sgemm_shape_gflops(int m, int n, int k, double secs) {
    float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)n * k);
    float *c = malloc(sizeof(float) * (size_t)m * n);
    for (int64_t i = 0; i < (int64_t)m * k; i++)
        a[i] = (float)(i % 7) * 0.1f;
    for (int64_t i = 0; i < (int64_t)n * k; i++)
        b[i] = (float)(i % 5) * 0.1f;
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = mpq_now();
        int iters = 0;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c,
                        n);
            iters++;
        } while (mpq_now() - t0 < secs);
        double g = 2.0 * m * (double)n * k * iters / (mpq_now() - t0) / 1e9;
        best = g > best ? g : best;
    }
    free(a), free(b), free(c);
    return best;
}

/* Best-of-3 SGEMM rate on square n x n matrices, GFLOP/s. */
static double sgemm_gflops(int n) {
    return sgemm_shape_gflops(n, n, n, 0.3);
}

/* Tokens per second of f's whole forward pass on nseq sequences of len
 * tokens (random ids), at least 2 s of repetitions after a warm-up. */
static double llama_tokens_per_s(mpq_ctx *ctx, mpq_family *f, int nseq, int len) {
    const mpq_family_info *fi = mpq_family_get_info(f);
    int64_t lens[8], rows = (int64_t)nseq * len;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)rows);
    float *logits = malloc(sizeof(float) * (size_t)(rows * fi->out_width));
    unsigned s = 7;
    for (int i = 0; i < nseq; i++)
        lens[i] = len;
    for (int64_t i = 0; i < rows; i++) {
        s = s * 1103515245u + 12345u;
        tok[i] = i % len == 0 ? MPQ_TOKEN_BOS : (int32_t)((s >> 8) % (unsigned)fi->vocab_size);
    }
    mpq_batch b = {.nseq = nseq, .len = lens, .rows = rows, .tokens = tok};
    double tps = 0.0;
    if (mpq_family_forward(ctx, f, &b, logits) == MPQ_OK) {
        double t0 = mpq_now();
        int iters = 0;
        do {
            if (mpq_family_forward(ctx, f, &b, logits) != MPQ_OK)
                break;
            iters++;
        } while (mpq_now() - t0 < 2.0);
        tps = (double)rows * iters / (mpq_now() - t0);
    }
    free(tok);
    free(logits);
    return tps;
}

/* A one-block Llama of hidden h / intermediate inter / heads a /
 * vocabulary v written by mkllama into a new directory dir (a mkdtemp
 * template); 0 or 1 failure. */
static int generate(const char *mkllama, char *dir, int h, int inter, int heads, int v) {
    char cmd[8192];
    if (!mkdtemp(dir))
        return 1;
    snprintf(cmd, sizeof cmd,
             "'%s' '%s/m' --hidden %d --intermediate %d --layers 1 --heads %d --vocab %d "
             "--context 256 >/dev/null",
             mkllama, dir, h, inter, heads, v);
    return system(cmd) != 0;
}

/* Opens dir's model and its Llama family; 0 or 1 failure. */
static int open_generated(mpq_ctx *ctx, const char *dir, mpq_model **m, mpq_family **f) {
    char mdir[4200];
    snprintf(mdir, sizeof mdir, "%s/m", dir);
    if (mpq_model_open(ctx, mdir, "auto", m) != MPQ_OK ||
        mpq_family_create(ctx, *m, NULL, "llama", f) != MPQ_OK) {
        fprintf(stderr, "bench_forward: %s\n", ctx->err_msg);
        return 1;
    }
    return 0;
}

/* Closes them and removes dir; 0 or 1 failure. */
static int drop_generated(const char *dir, mpq_model **m, mpq_family **f) {
    char cmd[4200];
    mpq_family_destroy(f);
    mpq_model_close(m);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) != 0;
}

/* One generated block of hidden h / intermediate i / heads a; 0 or 1 failure. */
static int bench_llama_shape(mpq_ctx *ctx, const char *mkllama, int h, int inter, int heads) {
    char dir[] = "/tmp/mpq-bench-forward.XXXXXX";
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    int fails = generate(mkllama, dir, h, inter, heads, 512);
    fails = fails || open_generated(ctx, dir, &m, &f);
    if (!fails) {
        const mpq_family_info *fi = mpq_family_get_info(f);
        const double sg = sgemm_shape_gflops(2048, h, h, 0.5);
        const int shapes[2][2] = {{8, 256}, {1, 256}};
        for (int k = 0; k < 2; k++) {
            const int nseq = shapes[k][0], len = shapes[k][1];
            double per_tok = (double)h * fi->out_width + 2.0 * len / 2.0 * h; /* head, attention */
            for (int64_t l = 0; l < fi->nlayers; l++)
                per_tok += (double)fi->layers[l].out * (double)fi->layers[l].in;
            const double tps = llama_tokens_per_s(ctx, f, nseq, len);
            const double gf = 2.0 * per_tok * tps / 1e9;
            fails += tps <= 0.0;
            printf("{\"bench\":\"forward_llama\",\"hidden\":%d,\"intermediate\":%d,"
                   "\"batch_seqs\":%d,\"seq_len\":%d,\"tokens_per_s\":%.1f,\"gflops\":%.3f,"
                   "\"sgemm_gflops\":%.3f,\"ratio\":%.4f}\n",
                   h, inter, nseq, len, tps, gf, sg, gf / sg);
            fflush(stdout);
        }
    }
    return fails + drop_generated(dir, &m, &f);
}

/* Resident memory now (MiB), from /proc/self/statm; -1 when unknown. */
static double rss_now_mib(void) {
    long pages = -1, res = -1;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1.0;
    int ok = fscanf(f, "%ld %ld", &pages, &res) == 2;
    fclose(f);
    return ok ? (double)res * (double)sysconf(_SC_PAGESIZE) / 1048576.0 : -1.0;
}

/* The output head of a generated BF16 model (hidden 2048, vocabulary
 * 32000, one small block), which the family converts a tile at a time:
 * mpq_family_head on `rows` rows against SGEMM of the same shape with an
 * fp32 head, and the growth of resident memory from before the model is
 * opened to after the passes (measured before the SGEMM's own buffers
 * exist: the family's scratch for the rows and whatever it holds of the
 * head) against the head's size in BF16 and in fp32; 0 or 1 failure. */
static int bench_head(mpq_ctx *ctx, const char *mkllama) {
    enum { H = 2048, V = 32000 };
    char dir[] = "/tmp/mpq-bench-head.XXXXXX";
    int fails = generate(mkllama, dir, H, 256, 16, V);
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    const int rows_of[2] = {512, 8};
    float *x = malloc(sizeof(float) * (size_t)(512 * H));
    float *logits = malloc(sizeof(float) * (size_t)(512 * V));
    fails += !x || !logits;
    for (int64_t i = 0; !fails && i < 512 * H; i++)
        x[i] = (float)((i * 37) % 101) * 0.01f;
    for (int64_t i = 0; !fails && i < (int64_t)512 * V; i++)
        logits[i] = 0.0f;
    const double rss0 = rss_now_mib();
    fails = fails || open_generated(ctx, dir, &m, &f);
    for (int k = 0; k < 2 && !fails; k++) {
        const int rows = rows_of[k];
        double t0 = mpq_now(), dt = 0.0;
        int iters = 0;
        do {
            if (mpq_family_head(ctx, f, x, rows, logits) != MPQ_OK) {
                fails++;
                break;
            }
            iters++;
            dt = mpq_now() - t0;
        } while (dt < 2.0);
        const double gf = 2.0 * rows * (double)V * H * iters / dt / 1e9;
        const double grown = rss_now_mib() - rss0;
        const double sg = sgemm_shape_gflops(rows, V, H, 0.5);
        printf("{\"bench\":\"head\",\"hidden\":%d,\"vocab\":%d,\"dtype\":\"BF16\",\"rows\":%d,"
               "\"seconds_per_pass\":%.4f,\"gflops\":%.3f,\"sgemm_gflops\":%.3f,\"ratio\":%.4f,"
               "\"rss_growth_mib\":%.1f,\"head_bf16_mib\":%.1f,\"head_fp32_mib\":%.1f}\n",
               H, V, rows, dt / iters, gf, sg, gf / sg, grown, 2.0 * V * H / 1048576.0,
               4.0 * V * H / 1048576.0);
        fflush(stdout);
    }
    free(x);
    free(logits);
    return fails + drop_generated(dir, &m, &f);
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

    /* Llama blocks of the widths users bring. */
    if (argc > 1) {
        fails += bench_head(ctx, argv[1]);
        fails += bench_llama_shape(ctx, argv[1], 1024, 2816, 16);
        fails += bench_llama_shape(ctx, argv[1], 2048, 5632, 16);
        fails += bench_llama_shape(ctx, argv[1], 4096, 11008, 32);
    }
    return mpq_test_finish(&ctx, fails);
}
