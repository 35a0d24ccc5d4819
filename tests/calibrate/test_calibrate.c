/* test_calibrate.c: the block-sequential calibration loop on the real
 * models of shared/ (stories260K on TinyShakespeare text segments,
 * mnist-cnn-small on MNIST test images).
 *
 * For every block and every distinct layer input:
 *  - H equals a naive double loop over the layer inputs captured by an
 *    independent hook (same chunk batches, serial) within 1e-12 relative
 *    to sqrt(H_ii H_jj); count = rows seen;
 *  - H is bit-identical to a serial run of the driver (one rank, every
 *    chunk in order), i.e. the same for any number of ranks;
 *  - advance = 0 + mpq_calib_advance gives the same statistics as
 *    advance = 1 (propagation without substitution);
 *  - the rank-deficient fc1 input of the CNN (40 images < 784 channels)
 *    factorises with the default damping;
 *  - automatic chunks (hessian.chunk_samples = 0): the size follows the
 *    samples only; with fewer chunks than ranks (8 samples of 256 tokens:
 *    one chunk) the ranks share a chunk: every rank runs some of its rows
 *    through each block and folds some of its panels, each panel once, and
 *    H keeps its bits (the same checks as above). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_calibrate.h"
#include "mpq_text.h"
#include "mpq_config.h"
#include "mpq_model.h"
#include "mpq_test.h"
#include "mpq_tokenizer.h"

static mpq_ctx *g_ctx;

typedef struct naive_state {
    const mpq_family_info *info;
    double **H; /* per layer (group leaders only) */
    int64_t *count;
} naive_state;

static mpq_err naive_hook(mpq_ctx *ctx, void *ud, int64_t layer, const float *x, int64_t rows,
                          int64_t cols) {
    (void)ctx;
    naive_state *s = ud;
    if (s->info->layers[layer].group != layer)
        return MPQ_OK;
    double *H = s->H[layer];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < cols; i++) {
            double xi = x[r * cols + i];
            if (xi == 0.0)
                continue;
            for (int64_t j = 0; j < cols; j++)
                H[i * cols + j] += xi * (double)x[r * cols + j];
        }
    s->count[layer] += rows;
    return MPQ_OK;
}

/* Naive H of every group leader, block by block over the same chunk
 * batches (serial, independent of the driver). */
static void naive_all(mpq_ctx *ctx, mpq_family *f, const mpq_calib_set *set, int64_t chunk,
                      naive_state *ns) {
    const mpq_family_info *info = mpq_family_get_info(f);
    int64_t rows = set->offset[set->nsamples], maxw = 0;
    for (int64_t b = 0; b <= info->nblocks; b++)
        if (mpq_family_width(f, b) > maxw)
            maxw = mpq_family_width(f, b);
    float *x = malloc(sizeof(float) * rows * maxw), *y = malloc(sizeof(float) * rows * maxw);
    int64_t nch = (set->nsamples + chunk - 1) / chunk;
    for (int64_t b = -1; b < info->nblocks; b++) {
        int64_t win = b >= 0 ? mpq_family_width(f, b) : 0, wout = mpq_family_width(f, b + 1);
        for (int64_t c = 0; c < nch; c++) {
            int64_t s0 = c * chunk, s1 = s0 + chunk < set->nsamples ? s0 + chunk : set->nsamples;
            int64_t r0 = set->offset[s0];
            mpq_batch bt = {.nseq = s1 - s0,
                            .len = set->len + s0,
                            .rows = set->offset[s1] - r0,
                            .tokens = set->tokens ? set->tokens + r0 : NULL,
                            .input = set->input ? set->input + s0 * set->input_numel : NULL};
            if (b < 0)
                MPQ_ASSERT_OK(ctx, mpq_family_embed(ctx, f, &bt, y + r0 * wout));
            else
                MPQ_ASSERT_OK(ctx, mpq_family_block(ctx, f, b, &bt, x + r0 * win, y + r0 * wout,
                                                    naive_hook, ns));
        }
        float *t = x;
        x = y;
        y = t;
    }
    free(x);
    free(y);
}

static void check_model(mpq_ctx *ctx, mpq_family *f, const mpq_calib_set *set, int64_t chunk,
                        const char *what) {
    const mpq_family_info *info = mpq_family_get_info(f);
    naive_state ns = {.info = info};
    ns.H = calloc((size_t)info->nlayers, sizeof *ns.H);
    ns.count = calloc((size_t)info->nlayers, sizeof *ns.count);
    for (int64_t l = 0; l < info->nlayers; l++)
        if (info->layers[l].group == l)
            ns.H[l] = calloc((size_t)(info->layers[l].in * info->layers[l].in), sizeof(double));
    naive_all(ctx, f, set,
              mpq_calib_chunk_samples(chunk, set->nsamples, set->offset[set->nsamples]), &ns);

    mpq_ctx *serial = NULL;
    assert_int_equal(mpq_ctx_create(MPI_COMM_NULL, &serial), MPQ_OK);
    mpq_calib *c = NULL, *cs = NULL, *c0 = NULL;
    MPQ_ASSERT_OK(ctx, mpq_calib_create(ctx, f, set, chunk, &c));
    MPQ_ASSERT_OK(ctx, mpq_calib_create(ctx, f, set, chunk, &c0));
    MPQ_ASSERT_OK(serial, mpq_calib_create(serial, f, set, chunk, &cs));
    double worst = 0.0;
    int64_t nchecked = 0;
    for (int64_t b = 0; b < info->nblocks; b++) {
        int64_t n = 0, ns_ = 0, n0 = 0, *g = NULL, *gs = NULL, *g0 = NULL;
        mpq_hstat **st = NULL, **sts = NULL, **st0 = NULL;
        MPQ_ASSERT_OK(ctx, mpq_calib_block(ctx, c, b, 16, MPQ_HSTAT_ALL, 1, &n, &st, &g));
        MPQ_ASSERT_OK(serial,
                      mpq_calib_block(serial, cs, b, 16, MPQ_HSTAT_ALL, 1, &ns_, &sts, &gs));
        MPQ_ASSERT_OK(ctx, mpq_calib_block(ctx, c0, b, 16, 0, 0, &n0, &st0, &g0));
        MPQ_ASSERT_OK(ctx, mpq_calib_advance(ctx, c0, b));
        assert_int_equal(mpq_calib_next_block(c0), b + 1);
        assert_int_equal(n, ns_);
        assert_int_equal(n, n0);
        for (int64_t k = 0; k < n; k++) {
            int64_t l = g[k], d = st[k]->d;
            assert_int_equal(l, gs[k]);
            assert_string_equal(st[k]->name, info->layers[l].name);
            assert_int_equal(d, info->layers[l].in);
            assert_int_equal(st[k]->count, ns.count[l]);
            assert_memory_equal(st[k]->H, sts[k]->H, sizeof(double) * d * d);
            if (ctx->rank == 0)
                assert_memory_equal(st0[k]->H, sts[k]->H, sizeof(double) * d * d);
            for (int64_t i = 0; i < d; i++)
                for (int64_t j = 0; j < d; j++) {
                    double ref = ns.H[l][i * d + j];
                    double scale = sqrt(ns.H[l][i * d + i] * ns.H[l][j * d + j]);
                    if (scale == 0.0) {
                        assert_true(st[k]->H[i * d + j] == 0.0);
                        continue;
                    }
                    worst = fmax(worst, fabs(st[k]->H[i * d + j] - ref) / scale);
                }
            nchecked++;
        }
        mpq_hstats_free(n, &st);
        mpq_hstats_free(ns_, &sts);
        mpq_hstats_free(n0, &st0);
        mpq_free(g);
        mpq_free(gs);
        mpq_free(g0);
    }
    if (ctx->rank == 0)
        print_message("%s: %lld layer inputs, worst relative difference to naive %.3e\n", what,
                      (long long)nchecked, worst);
    if (worst > 1e-12)
        fail_msg("%s: H differs from the naive reference by %.3e (tolerance 1e-12)", what, worst);
    mpq_calib_destroy(&c);
    mpq_calib_destroy(&c0);
    mpq_calib_destroy(&cs);
    mpq_ctx_destroy(&serial);
    for (int64_t l = 0; l < info->nlayers; l++)
        free(ns.H[l]);
    free(ns.H);
    free(ns.count);
}

/* stories260K and its Llama family. */
static void open_stories(mpq_ctx *ctx, mpq_model **m, mpq_family **f) {
    char mp[1024];
    mpq_test_shared("data/models/stories260K/stories260K.bin", mp, sizeof mp);
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, mp, "auto", m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, *m, NULL, "auto", f));
}

static void test_stories260k(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char tp[1024], xp[1024];
    mpq_test_shared("data/models/stories260K/tok512.bin", tp, sizeof tp);
    mpq_test_shared("data/text/tinyshakespeare.txt", xp, sizeof xp);
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    mpq_tokenizer *tok = NULL;
    mpq_calib_set *set = NULL;
    open_stories(ctx, &m, &f);
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, tp, 512, &tok));
    /* 13 segments of up to 48 tokens, chunks of 2 samples: 7 chunks, the
     * last one short; neither divides by 2, 3 or 4 ranks evenly. */
    MPQ_ASSERT_OK(ctx, mpq_calib_set_text(ctx, tok, xp, 48, 13, 2024, &set));
    assert_int_equal(set->nsamples, 13);
    check_model(ctx, f, set, 2, "stories260K");
    mpq_calib_set_destroy(&set);
    /* Random tokens as a source. */
    MPQ_ASSERT_OK(ctx, mpq_calib_set_random(ctx, mpq_family_get_info(f), NULL, 5, 17, 9, &set));
    assert_int_equal(set->offset[5], 85);
    check_model(ctx, f, set, 3, "stories260K random");
    mpq_calib_set_destroy(&set);
    /* From the configuration. */
    mpq_config *cfg = NULL;
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "/tmp/calib.cfg",
                                        "calibration = { source = \"random\"; segments = 3; "
                                        "seq_len = 9; seed = 5; };",
                                        0, NULL, &cfg));
    MPQ_ASSERT_OK(ctx, mpq_calib_set_from_config(ctx, cfg, mpq_family_get_info(f), tok, &set));
    assert_int_equal(set->nsamples, 3);
    assert_int_equal(set->offset[3], 27);
    assert_int_equal(set->tokens[9], MPQ_TOKEN_BOS);
    mpq_calib_set_destroy(&set);
    mpq_config_destroy(&cfg);
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "/tmp/calib.cfg",
                                        "calibration = { source = \"images\"; };", 0, NULL, &cfg));
    assert_int_equal(mpq_calib_set_from_config(ctx, cfg, mpq_family_get_info(f), tok, &set),
                     MPQ_ERR_CONFIG);
    assert_null(set);
    mpq_err_clear(ctx);
    mpq_config_destroy(&cfg);
    mpq_tokenizer_destroy(&tok);
    mpq_family_destroy(&f);
    mpq_model_close(&m);
}

static void test_mnist_cnn(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char mp[1024], ip[1024], cp[1024];
    mpq_test_shared("data/models/mnist-cnn-small/model-mnist.safetensors", mp, sizeof mp);
    mpq_test_shared("data/mnist/t10k-images-idx3-ubyte", ip, sizeof ip);
    const char *src = getenv("MPQ_SOURCE_DIR");
    snprintf(cp, sizeof cp, "%s/configs/mnist-cnn-small.cfg", src ? src : ".");
    mpq_config *cfg = NULL;
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    mpq_calib_set *set = NULL;
    MPQ_ASSERT_OK(ctx, mpq_config_load(ctx, cp, 0, NULL, &cfg));
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, mp, "auto", &m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, m, cfg, NULL, &f));
    MPQ_ASSERT_OK(ctx, mpq_calib_set_images(ctx, ip, 100, 40, &set));
    check_model(ctx, f, set, 6, "mnist-cnn-small");

    /* fc1 sees 40 rows of width 784: rank-deficient, still factorable. */
    mpq_calib *c = NULL;
    const mpq_family_info *info = mpq_family_get_info(f);
    MPQ_ASSERT_OK(ctx, mpq_calib_create(ctx, f, set, 6, &c));
    for (int64_t b = 0; b < info->nblocks; b++) {
        int64_t n = 0, *g = NULL;
        mpq_hstat **st = NULL;
        MPQ_ASSERT_OK(ctx, mpq_calib_block(ctx, c, b, 16, 0, 1, &n, &st, &g));
        for (int64_t k = 0; k < n; k++) {
            if (st[k]->d != 784)
                continue;
            assert_int_equal(st[k]->count, 40);
            mpq_hfactor_opts o;
            mpq_hfactor_opts_default(&o);
            mpq_hfactor *hf = NULL;
            MPQ_ASSERT_OK(ctx, mpq_hfactor_compute(ctx, &o, st[k]->name, st[k]->d, st[k]->H, 0,
                                                   MPQ_HF_INV_CHOL, &hf));
            assert_int_equal(hf->retries, 0);
            mpq_hfactor_destroy(&hf);
        }
        mpq_hstats_free(n, &st);
        mpq_free(g);
    }
    mpq_calib_destroy(&c);
    mpq_calib_set_destroy(&set);
    mpq_family_destroy(&f);
    mpq_model_close(&m);
    mpq_config_destroy(&cfg);
}

static int same_set(const mpq_calib_set *a, const mpq_calib_set *b) {
    if (a->nsamples != b->nsamples || a->offset[a->nsamples] != b->offset[b->nsamples])
        return 0;
    if (a->tokens)
        return memcmp(a->tokens, b->tokens, (size_t)a->offset[a->nsamples] * sizeof *a->tokens) ==
               0;
    return memcmp(a->input, b->input, (size_t)(a->nsamples * a->input_numel) * sizeof *a->input) ==
           0;
}

/* Each calibration source is deterministic for a seed, changes with it, and
 * gives what it promises: text segments are BOS + seq_len - 1 consecutive
 * tokens of the document stream (found by a brute-force search in the stream
 * encoded here), random tokens are BOS + valid ids, images are the IDX file's
 * pixels [first, first + count) read here byte by byte. (Independence of the
 * rank count: check_model above compares H over 1-4 ranks.) */
static void test_sources(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char tp[1024], xp[1024], ip[1024];
    mpq_test_shared("data/models/stories260K/tok512.bin", tp, sizeof tp);
    mpq_test_shared("data/text/wikitext2-valid.txt", xp, sizeof xp);
    mpq_test_shared("data/mnist/t10k-images-idx3-ubyte", ip, sizeof ip);
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    mpq_tokenizer *tok = NULL;
    open_stories(ctx, &m, &f);
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, tp, 512, &tok));

    /* text */
    mpq_calib_set *a = NULL, *b = NULL, *c = NULL;
    MPQ_ASSERT_OK(ctx, mpq_calib_set_text(ctx, tok, xp, 64, 12, 7, &a));
    MPQ_ASSERT_OK(ctx, mpq_calib_set_text(ctx, tok, xp, 64, 12, 7, &b));
    MPQ_ASSERT_OK(ctx, mpq_calib_set_text(ctx, tok, xp, 64, 12, 8, &c));
    assert_true(same_set(a, b));
    assert_false(same_set(a, c));
    char *text = NULL;
    int64_t len = 0, ndocs = 0, *offs = NULL;
    mpq_span *docs = NULL;
    int32_t *toks = NULL;
    MPQ_ASSERT_OK(ctx, mpq_text_read(ctx, xp, &text, &len));
    MPQ_ASSERT_OK(ctx, mpq_text_split_docs(ctx, text, len, 0, &docs, &ndocs));
    MPQ_ASSERT_OK(ctx, mpq_text_encode_docs(ctx, tok, text, docs, ndocs, 0, &toks, &offs));
    const int64_t total = offs[ndocs];
    for (int64_t k = 0; k < a->nsamples; k++) {
        const int32_t *seg = a->tokens + a->offset[k];
        assert_int_equal(a->len[k], 64);
        assert_int_equal(seg[0], MPQ_TOKEN_BOS);
        int found = 0;
        for (int64_t p = 0; p + 63 <= total && !found; p++)
            found = memcmp(toks + p, seg + 1, 63 * sizeof *seg) == 0;
        assert_true(found);
    }
    mpq_free(text);
    mpq_free(docs);
    mpq_free(toks);
    mpq_free(offs);
    mpq_calib_set_destroy(&a);
    mpq_calib_set_destroy(&b);
    mpq_calib_set_destroy(&c);

    /* random tokens */
    const mpq_family_info *info = mpq_family_get_info(f);
    MPQ_ASSERT_OK(ctx, mpq_calib_set_random(ctx, info, NULL, 6, 20, 3, &a));
    MPQ_ASSERT_OK(ctx, mpq_calib_set_random(ctx, info, NULL, 6, 20, 3, &b));
    MPQ_ASSERT_OK(ctx, mpq_calib_set_random(ctx, info, NULL, 6, 20, 4, &c));
    assert_true(same_set(a, b));
    assert_false(same_set(a, c));
    for (int64_t k = 0; k < 6; k++) {
        assert_int_equal(a->tokens[a->offset[k]], MPQ_TOKEN_BOS);
        for (int64_t t = a->offset[k]; t < a->offset[k + 1]; t++)
            assert_true(a->tokens[t] >= 0 && a->tokens[t] < info->vocab_size);
    }
    mpq_calib_set_destroy(&a);
    mpq_calib_set_destroy(&b);
    mpq_calib_set_destroy(&c);

    /* images: the raw bytes of images 5000..5009 */
    MPQ_ASSERT_OK(ctx, mpq_calib_set_images(ctx, ip, 5000, 10, &a));
    assert_int_equal(a->input_numel, 784);
    FILE *fp = fopen(ip, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 16 + 5000L * 784, SEEK_SET), 0);
    unsigned char px[784];
    for (int64_t k = 0; k < 10; k++) {
        assert_int_equal(fread(px, 1, sizeof px, fp), sizeof px);
        for (int64_t j = 0; j < 784; j++)
            assert_true(a->input[k * 784 + j] == (float)px[j]);
    }
    fclose(fp);
    mpq_calib_set_destroy(&a);
    mpq_tokenizer_destroy(&tok);
    mpq_family_destroy(&f);
    mpq_model_close(&m);
}

static void test_auto_chunks(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    /* {requested, samples, rows, expected}: samples / 16, raised to chunks
     * of about 2048 rows, within [1, 8]; an explicit size is kept */
    const int64_t table[][4] = {{0, 1, 100, 1},      {0, 8, 16384, 1},  {0, 64, 131072, 4},
                                {0, 128, 262144, 8}, {0, 5000, 1e7, 8}, {0, 32, 8192, 8},
                                {0, 16, 2048, 8},    {0, 64, 64, 8},    {0, 24, 24 * 700, 3},
                                {5, 8, 100, 5},      {3, 1, 1, 3}};
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++)
        assert_int_equal(mpq_calib_chunk_samples(table[k][0], table[k][1], table[k][2]),
                         table[k][3]);
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    mpq_calib_set *set = NULL;
    mpq_calib *c = NULL;
    open_stories(ctx, &m, &f);
    /* 16 samples of 512 tokens: chunks of four samples (2048 rows), so no
     * rank of up to 4 sits idle */
    MPQ_ASSERT_OK(ctx, mpq_calib_set_random(ctx, mpq_family_get_info(f), NULL, 16, 512, 3, &set));
    MPQ_ASSERT_OK(ctx, mpq_calib_create(ctx, f, set, 0, &c));
    assert_int_equal(mpq_calib_rows(c), 2048 * ((4 - ctx->rank + ctx->size - 1) / ctx->size));
    assert_true(ctx->size > 4 || mpq_calib_rows(c) > 0);
    mpq_calib_destroy(&c);
    check_model(ctx, f, set, 0, "stories260K random, automatic chunks");
    mpq_calib_set_destroy(&set);
    /* 8 samples of 256 tokens: one chunk (8 units), shared by every rank:
     * each runs some of its units and folds some of its panels (stories260K
     * has four inputs of one panel each), H keeps its bits (check_model) */
    MPQ_ASSERT_OK(ctx, mpq_calib_set_random(ctx, mpq_family_get_info(f), NULL, 8, 256, 5, &set));
    check_model(ctx, f, set, 0, "stories260K random, 8 samples: one shared chunk");
    MPQ_ASSERT_OK(ctx, mpq_calib_create(ctx, f, set, 0, &c));
    for (int64_t b = 0; b < mpq_family_get_info(f)->nblocks; b++) {
        int64_t n = 0, *g = NULL, rows = 0, folded = 0;
        mpq_hstat **st = NULL;
        MPQ_ASSERT_OK(ctx, mpq_calib_block(ctx, c, b, 16, MPQ_HSTAT_ALL, 1, &n, &st, &g));
        for (int64_t k = 0; k < n; k++)
            folded += st[k]->folded;
        rows = mpq_calib_rows_run(c);
        assert_true(rows > 0);
        assert_true(folded > 0 || ctx->size > n);
        MPI_Allreduce(MPI_IN_PLACE, &rows, 1, MPI_INT64_T, MPI_SUM, ctx->comm);
        MPI_Allreduce(MPI_IN_PLACE, &folded, 1, MPI_INT64_T, MPI_SUM, ctx->comm);
        assert_int_equal(rows, 8 * 256);
        assert_int_equal(folded, n); /* each panel folded once */
        mpq_hstats_free(n, &st);
        mpq_free(g);
    }
    mpq_calib_destroy(&c);
    mpq_calib_set_destroy(&set);
    mpq_family_destroy(&f);
    mpq_model_close(&m);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_mnist_cnn),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_auto_chunks),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
