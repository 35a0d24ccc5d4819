/* test_eval_lm.c: language-model evaluation on stories260K (run at 1, 2 and
 * 4 ranks): the perplexity protocol's reference numbers from
 * shared/README.md, KLD/top-1 agreement of a model against itself and
 * against a perturbed copy, the windows protocol on WikiText-2, and greedy
 * generation from BOS. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_eval.h"
#include "mpq_family.h"
#include "mpq_model.h"
#include "mpq_test.h"
#include "mpq_text.h"
#include "mpq_tokenizer.h"

static mpq_ctx *g_ctx;
static char g_model[4096], g_tok[4096], g_text[4096], g_wiki[4096], g_short[4096];

typedef struct fixture {
    mpq_model *m;
    mpq_family *f, *f2;
    mpq_tokenizer *tok;
} fixture;

static int setup(void **state) {
    mpq_ctx *ctx = g_ctx;
    fixture *x = calloc(1, sizeof *x);
    if (mpq_model_open(ctx, g_model, "auto", &x->m) != MPQ_OK ||
        mpq_family_create(ctx, x->m, NULL, "auto", &x->f) != MPQ_OK ||
        mpq_family_create(ctx, x->m, NULL, "auto", &x->f2) != MPQ_OK ||
        mpq_tokenizer_load(ctx, g_tok, 512, &x->tok) != MPQ_OK) {
        fprintf(stderr, "setup: %s\n", ctx->err_msg);
        return -1;
    }
    *state = x;
    return 0;
}

static int teardown(void **state) {
    fixture *x = *state;
    mpq_tokenizer_destroy(&x->tok);
    mpq_family_destroy(&x->f2);
    mpq_family_destroy(&x->f);
    mpq_model_close(&x->m);
    free(x);
    return 0;
}

static void test_perplexity_reference(void **state) {
    fixture *x = *state;
    mpq_ctx *ctx = g_ctx;
    mpq_lm_result r;
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_text(ctx, x->f, NULL, x->tok, g_text, 500, &r));
    if (ctx->rank == 0)
        printf("ranks %d: docs %lld predictions %lld mean_nll %.7f ppl %.4f\n", ctx->size,
               (long long)r.docs, (long long)r.predictions, r.mean_nll, r.ppl);
    assert_int_equal(r.docs, 500);
    assert_int_equal(r.predictions, 41817);
    assert_true(fabs(r.mean_nll - 4.811407) / 4.811407 <= 1e-4);
    assert_true(fabs(r.ppl - 122.9044) / 122.9044 <= 1e-3);
    assert_false(r.has_ref);
    /* Every rank holds the same bits. */
    double mine[2] = {r.mean_nll, r.ppl}, mx[2], mn[2];
    MPI_Allreduce(mine, mx, 2, MPI_DOUBLE, MPI_MAX, ctx->comm);
    MPI_Allreduce(mine, mn, 2, MPI_DOUBLE, MPI_MIN, ctx->comm);
    assert_true(mx[0] == mn[0] && mx[1] == mn[1]);
}

/* NLL, KLD and top-1 of mpq_eval_lm_tokens against sums written here in
 * long double from the two models' logits, on 40 documents. */
static void test_lm_figures_vs_direct(void **state) {
    fixture *x = *state;
    mpq_ctx *ctx = g_ctx;
    char *text = NULL;
    int64_t len = 0, nd = 0;
    mpq_span *docs = NULL;
    int32_t *tok = NULL;
    int64_t *off = NULL;
    MPQ_ASSERT_OK(ctx, mpq_text_read(ctx, g_text, &text, &len));
    MPQ_ASSERT_OK(ctx, mpq_text_split_docs(ctx, text, len, 40, &docs, &nd));
    MPQ_ASSERT_OK(ctx, mpq_text_encode_docs(ctx, x->tok, text, docs, nd, 512, &tok, &off));
    /* A perturbed second model: scale one layer's weights. */
    const mpq_family_info *fi = mpq_family_get_info(x->f2);
    int64_t nw = fi->layers[6].out * fi->layers[6].in;
    float *w = malloc(sizeof(float) * (size_t)nw), *w0 = malloc(sizeof(float) * (size_t)nw);
    MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, x->f2, 6, w0));
    for (int64_t i = 0; i < nw; i++)
        w[i] = w0[i] * 1.3f;
    MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, x->f2, 6, w));
    mpq_lm_result r;
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_tokens(ctx, x->f2, x->f, tok, off, nd, &r));

    /* The documents go through the model in the evaluation's groups (at
     * most MPQ_EVAL_BATCH_TOKENS tokens of consecutive documents), here
     * whole networks on each group's batch. */
    long double nll = 0, kl = 0, nll0 = 0, kl0 = 0;
    int64_t npred = 0, agree = 0, ngroups = 0, npred0 = 0, agree0 = 0;
    int64_t lens[40], g0[41];
    assert_true(nd <= 40);
    for (int64_t d = 0, rows = 0; d < nd; d++) {
        if (d == 0 || rows + off[d + 1] - off[d] > MPQ_EVAL_BATCH_TOKENS)
            g0[ngroups++] = d, rows = 0;
        rows += off[d + 1] - off[d];
    }
    g0[ngroups] = nd;
    assert_true(ngroups >= 2); /* more than one group, and more than one document in one */
    assert_true(ngroups < nd);
    float *lq = malloc(sizeof(float) * MPQ_EVAL_BATCH_TOKENS * 512);
    float *lp = malloc(sizeof(float) * MPQ_EVAL_BATCH_TOKENS * 512);
    for (int64_t g = 0; g < ngroups; g++) {
        for (int64_t d = g0[g]; d < g0[g + 1]; d++)
            lens[d - g0[g]] = off[d + 1] - off[d];
        mpq_batch b = {.nseq = g0[g + 1] - g0[g],
                       .len = lens,
                       .rows = off[g0[g + 1]] - off[g0[g]],
                       .tokens = tok + off[g0[g]]};
        MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, x->f2, &b, lq));
        MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, x->f, &b, lp));
        for (int64_t d = g0[g]; d < g0[g + 1]; d++)
            for (int64_t i = 0, n = off[d + 1] - off[d]; i + 1 < n; i++) {
                const int64_t row = off[d] - off[g0[g]] + i;
                const float *q = lq + row * 512, *p = lp + row * 512;
                long double zq = 0, zp = 0;
                int aq = 0, ap = 0;
                for (int v = 0; v < 512; v++) {
                    zq += expl((long double)q[v]);
                    zp += expl((long double)p[v]);
                    aq = q[v] > q[aq] ? v : aq;
                    ap = p[v] > p[ap] ? v : ap;
                }
                nll += logl(zq) - q[tok[off[d] + i + 1]];
                for (int v = 0; v < 512; v++) {
                    long double pv = expl((long double)p[v]) / zp,
                                qv = expl((long double)q[v]) / zq;
                    kl += pv * logl(pv / qv);
                }
                agree += aq == ap;
                npred++;
            }
        if (g == 0)
            nll0 = nll, kl0 = kl, npred0 = npred, agree0 = agree;
    }
    assert_int_equal(r.predictions, npred);
    assert_true(fabsl(r.nll - nll) <= 1e-9L * fabsl(nll));
    assert_true(fabsl(r.kld - kl / npred) <= 1e-6L * fabsl(kl / npred) + 1e-12L);
    assert_true(fabs(r.top1_agreement - (double)agree / (double)npred) < 1e-15);
    assert_true(r.kld > 0.0);
    /* The first group alone: on 2 and 4 ranks its model and its reference
     * run on different ranks (eval.c, split roles), the figures as above. */
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_tokens(ctx, x->f2, x->f, tok, off, g0[1], &r));
    assert_int_equal(r.predictions, npred0);
    assert_true(fabsl(r.nll - nll0) <= 1e-9L * fabsl(nll0));
    assert_true(fabsl(r.kld - kl0 / npred0) <= 1e-6L * fabsl(kl0 / npred0) + 1e-12L);
    assert_true(fabs(r.top1_agreement - (double)agree0 / (double)npred0) < 1e-15);
    double mine[3] = {r.nll, r.kld, r.top1_agreement}, mx[3], mn[3];
    MPI_Allreduce(mine, mx, 3, MPI_DOUBLE, MPI_MAX, ctx->comm);
    MPI_Allreduce(mine, mn, 3, MPI_DOUBLE, MPI_MIN, ctx->comm);
    assert_true(mx[0] == mn[0] && mx[1] == mn[1] && mx[2] == mn[2]);
    MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, x->f2, 6, w0)); /* restore */
    free(w), free(w0), free(lq), free(lp);
    mpq_free(text), mpq_free(docs), mpq_free(tok), mpq_free(off);
}

static void test_kld_self_and_perturbed(void **state) {
    fixture *x = *state;
    mpq_ctx *ctx = g_ctx;
    mpq_lm_result r;
    /* Against an identical second instance: KLD exactly 0, agreement 1. */
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_text(ctx, x->f2, x->f, x->tok, g_text, 60, &r));
    assert_true(r.has_ref);
    assert_true(r.predictions > 0);
    assert_true(fabs(r.kld) < 1e-12);
    assert_true(r.top1_agreement == 1.0);

    /* Perturb one layer of f2 by rounding its weights coarsely: KLD > 0,
     * agreement < 1, and the perturbed model's NLL differs. */
    const mpq_family_info *fi = mpq_family_get_info(x->f2);
    for (int64_t l = 0; l < fi->nlayers; l++) {
        int64_t n = fi->layers[l].out * fi->layers[l].in;
        float *w = malloc(sizeof(float) * (size_t)n);
        MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, x->f2, l, w));
        for (int64_t i = 0; i < n; i++)
            w[i] = roundf(w[i] * 16.0f) / 16.0f; /* a coarse 1/16 grid */
        MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, x->f2, l, w));
        free(w);
    }
    mpq_lm_result q, base;
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_text(ctx, x->f2, x->f, x->tok, g_text, 60, &q));
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_text(ctx, x->f, NULL, x->tok, g_text, 60, &base));
    if (ctx->rank == 0)
        printf("perturbed: kld %.5f top1 %.4f nll %.4f (fp %.4f)\n", q.kld, q.top1_agreement,
               q.mean_nll, base.mean_nll);
    assert_int_equal(q.predictions, base.predictions);
    assert_true(q.kld > 1e-3);
    assert_true(q.top1_agreement < 1.0 && q.top1_agreement > 0.0);
    assert_true(q.mean_nll != base.mean_nll);
    /* The reference's own figures from the same pass: the bits of
     * evaluating it alone. */
    mpq_lm_result own;
    mpq_eval_lm_reference(&q, &own);
    assert_int_equal(own.predictions, base.predictions);
    assert_true(own.nll == base.nll && own.mean_nll == base.mean_nll && own.ppl == base.ppl);
}

static void test_greedy_generation(void **state) {
    fixture *x = *state;
    mpq_ctx *ctx = g_ctx;
    /* Generation is local: every rank checks it. */
    int32_t toks[101];
    int64_t n = 0;
    MPQ_ASSERT_OK(ctx, mpq_generate_greedy(ctx, x->f, x->tok, 100, toks, &n));
    assert_int_equal(toks[0], MPQ_TOKEN_BOS);
    char *text = NULL;
    size_t len = 0;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_decode(ctx, x->tok, toks + 1, n - 1, 1, &text, &len));
    const char *want = "Once upon a time, there was a little girl named Lily. She loved to play "
                       "outside in the park. One day, she saw a big, red ball. She wanted to play "
                       "with it, but it was too high.";
    if (ctx->rank == 0)
        printf("generated: %s\n", text);
    assert_true(strncmp(text, want, strlen(want)) == 0);
    mpq_free(text);
}

/* The windows protocol on WikiText-2 (24 windows of 128 tokens) against
 * the definition computed here: the whole text encoded once with BOS, cut
 * at multiples of 128, each window forwarded alone and its 127 next-token
 * NLLs summed in long double; a perturbed copy against it on the same
 * windows. The figures are the same bits on every rank. Errors:
 * a window beyond the model's context, a text shorter than one window. */
static void test_windows_protocol(void **state) {
    fixture *x = *state;
    mpq_ctx *ctx = g_ctx;
    const int64_t W = 128, NW = 24;
    mpq_lm_result r, s;
    const mpq_lm_protocol p = {.text = g_wiki, .windows = 1, .max_items = NW, .window = W};
    MPQ_ASSERT_OK(ctx, mpq_eval_lm(ctx, x->f, NULL, x->tok, &p, &r));
    assert_int_equal(r.docs, NW);
    assert_int_equal(r.window, W);
    assert_int_equal(r.predictions, NW * (W - 1));
    char *text = NULL;
    int64_t len = 0, n = 0;
    int32_t *tok = NULL;
    MPQ_ASSERT_OK(ctx, mpq_text_read(ctx, g_wiki, &text, &len));
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, x->tok, text, (size_t)len, 1, 0, &tok, &n));
    assert_true(n >= NW * W);
    assert_int_equal(tok[0], 1); /* BOS once, at the start of the stream */
    float *lg = malloc(sizeof(float) * (size_t)(W * 512));
    long double nll = 0;
    for (int64_t w = 0; w < NW; w++) {
        int64_t lens[1] = {W};
        mpq_batch b = {.nseq = 1, .len = lens, .rows = W, .tokens = tok + w * W};
        MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, x->f, &b, lg));
        for (int64_t i = 0; i + 1 < W; i++) {
            long double z = 0;
            for (int v = 0; v < 512; v++)
                z += expl((long double)lg[i * 512 + v]);
            nll += logl(z) - lg[i * 512 + tok[w * W + i + 1]];
        }
    }
    if (ctx->rank == 0)
        printf("windows: %lld x %lld tokens, mean_nll %.7f (direct %.7Lf), ppl %.4f\n",
               (long long)r.docs, (long long)r.window, r.mean_nll, nll / (NW * (W - 1)), r.ppl);
    assert_true(fabsl(r.nll - nll) <= 1e-6L * fabsl(nll));
    double mine[2] = {r.nll, r.ppl}, mx[2], mn[2];
    MPI_Allreduce(mine, mx, 2, MPI_DOUBLE, MPI_MAX, ctx->comm);
    MPI_Allreduce(mine, mn, 2, MPI_DOUBLE, MPI_MIN, ctx->comm);
    assert_true(mx[0] == mn[0] && mx[1] == mn[1]);
    /* f2, perturbed by test_kld_self_and_perturbed, against f on the same
     * windows: KLD > 0, and the reference's own NLL is the bits of f alone */
    MPQ_ASSERT_OK(ctx, mpq_eval_lm(ctx, x->f2, x->f, x->tok, &p, &s));
    mpq_lm_result own;
    mpq_eval_lm_reference(&s, &own);
    assert_true(s.has_ref && s.kld > 1e-3 && s.top1_agreement < 1.0);
    assert_true(own.nll == r.nll && s.window == W && s.predictions == r.predictions);
    mpq_lm_protocol bad = p;
    bad.window = 513; /* stories260K's context is 512 */
    assert_int_equal(mpq_eval_lm(ctx, x->f, NULL, x->tok, &bad, &s), MPQ_ERR_CONFIG);
    assert_non_null(strstr(ctx->err_msg, "eval.window"));
    mpq_err_clear(ctx);
    bad = p;
    bad.window = 512;
    bad.text = g_short;
    assert_int_equal(mpq_eval_lm(ctx, x->f, NULL, x->tok, &bad, &s), MPQ_ERR_FORMAT);
    assert_non_null(strstr(ctx->err_msg, "fewer than one window"));
    mpq_err_clear(ctx);
    free(lg);
    mpq_free(tok);
    mpq_free(text);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    mpq_test_shared("data/models/stories260K/stories260K.bin", g_model, sizeof g_model);
    mpq_test_shared("data/models/stories260K/tok512.bin", g_tok, sizeof g_tok);
    mpq_test_shared("data/text/tinyshakespeare.txt", g_text, sizeof g_text);
    mpq_test_shared("data/text/wikitext2-test.txt", g_wiki, sizeof g_wiki);
    mpq_test_shared("data/text/wikitext2-README", g_short, sizeof g_short);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perplexity_reference),   cmocka_unit_test(test_lm_figures_vs_direct),
        cmocka_unit_test(test_kld_self_and_perturbed), cmocka_unit_test(test_windows_protocol),
        cmocka_unit_test(test_greedy_generation),
    };
    int fails = cmocka_run_group_tests(tests, setup, teardown);
    return mpq_test_finish(&g_ctx, fails);
}
