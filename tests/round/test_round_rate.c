/* test_round_rate.c: rate-aware GPTQ (round.rate_lambda). lambda = 0 keeps
 * GPTQ's codes; with growing lambda the codes' empirical entropy falls and
 * the layer loss rises; every code chosen minimises the documented
 * per-weight objective (error through the factor plus lambda x its length
 * under the layer's RTN histogram, recomputed here) over the two grid
 * points around the value GPTQ propagated to it; the learned methods refuse
 * a positive lambda, naming both keys. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_config.h"
#include "mpq_round.h"
#include "mpq_test.h"
#include "round_internal.h"
#include "round_ref.h"

static mpq_ctx *g_ctx;

/* -sum p log2 p of n codes. */
static double entropy_of(const uint8_t *codes, int64_t n) {
    double cnt[256] = {0}, h = 0.0;
    for (int64_t k = 0; k < n; k++)
        cnt[codes[k]] += 1.0;
    for (int k = 0; k < 256; k++)
        if (cnt[k] > 0.0)
            h -= cnt[k] / (double)n * log2(cnt[k] / (double)n);
    return h;
}

/* GPTQ over the whole layer as one tile with rate_lambda lam; codes and
 * the exact loss (checked against the naive product). */
static double run_gptq(const char *spec_text, double lam, int guard, int64_t rows, int64_t cols,
                       const float *W, const double *H, uint8_t *codes, double *loss) {
    mpq_ctx *ctx = g_ctx;
    mpq_qspec spec;
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, spec_text, &spec));
    mpq_round_opts o;
    mpq_round_opts_default(&o);
    o.rate_lambda = lam;
    o.rtn_guard = guard;
    mpq_round_problem *pb = NULL;
    mpq_qparams *p = NULL;
    mpq_round_stats st;
    MPQ_ASSERT_OK(ctx, mpq_round_problem_create(ctx, &o, &mpq_round_gptq, "rate", &spec, rows, cols,
                                                W, H, &pb));
    assert_true((pb->rate_len != NULL) == (lam > 0.0));
    MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, rows, cols, &p));
    MPQ_ASSERT_OK(ctx, mpq_round_tile(ctx, &o, &mpq_round_gptq, pb, p, 0, rows, codes, &st));
    float *Q = malloc((size_t)(rows * cols) * sizeof *Q);
    mpq_quant_dequantize(p, codes, Q);
    assert_true(rr_rel(st.loss, rr_loss(0, rows, cols, W, Q, H)) < 1e-9);
    free(Q);
    *loss = st.loss;
    mpq_qparams_destroy(&p);
    mpq_round_problem_destroy(&pb);
    return entropy_of(codes, rows * cols);
}

/* lambda = 0: the codes of plain GPTQ (no rate_len, the same bits as
 * before the option existed: round_core checks those against a naive
 * reference); growing lambda: entropy down, loss up, strictly overall. */
static void test_monotone(void **state) {
    (void)state;
    const char *specs[] = {"int:bits=2,sym=false,group=16", "int:bits=3,sym=true,gran=channel",
                           "nf4:group=16"};
    const double lams[] = {0.0, 0.5, 1.0, 1.5};
    const int64_t rows = 48, cols = 64;
    float *W = malloc((size_t)(rows * cols) * sizeof *W);
    double *H = malloc((size_t)(cols * cols) * sizeof *H);
    uint8_t *c0 = malloc((size_t)(rows * cols)), *c = malloc((size_t)(rows * cols));
    rr_weights(71, rows, cols, W);
    rr_hessian(72, cols, 0, H);
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++)
        for (int guard = 0; guard < 2; guard++) {
            double l0, lp = 0.0, hp = 0.0;
            double h0 = run_gptq(specs[s], 0.0, guard, rows, cols, W, H, c0, &l0);
            for (size_t k = 0; k < sizeof lams / sizeof lams[0]; k++) {
                double l, h = run_gptq(specs[s], lams[k], guard, rows, cols, W, H, c, &l);
                printf("rate %s guard=%d lambda=%g: entropy %.4f bits/code, loss %.6g\n", specs[s],
                       guard, lams[k], h, l);
                if (k == 0) {
                    assert_memory_equal(c, c0, (size_t)(rows * cols));
                    assert_true(h == h0 && l == l0);
                } else {
                    assert_true(h < hp);
                    /* GPTQ is greedy: a small push may cost nothing (here
                     * up to 0.1 % less at lambda 0.5), not more */
                    assert_true(l >= lp * (k == 1 ? 1 - 1e-3 : 1 - 1e-12));
                }
                lp = l;
                hp = h;
            }
            assert_true(hp < h0 - 0.01); /* a real drop at the largest lambda */
            assert_true(lp > l0 * 1.005);
        }
    free(c);
    free(c0);
    free(H);
    free(W);
}

/* Each code GPTQ picked minimises dd (w' - v_k)^2 + lam len[k] over the
 * two grid points around w', the value GPTQ propagated to it (wq), dd the squared diagonal
 * of V (V form) or 1 / U_jj^2 (U form), len from the layer's RTN codes'
 * histogram rebuilt here. */
static void check_pick(const char *spec_text, int static_groups, double rate) {
    mpq_ctx *ctx = g_ctx;
    const int64_t rows = 7, cols = 33;
    float W[7 * 33], wq[7 * 33];
    double H[33 * 33];
    uint8_t codes[7 * 33], rtn[33];
    rr_weights(81, rows, cols, W);
    rr_hessian(82, cols, 0, H);
    mpq_qspec spec;
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, spec_text, &spec));
    mpq_round_opts o;
    mpq_round_opts_default(&o);
    o.rate_lambda = rate;
    o.static_groups = static_groups;
    o.block_size = 5; /* lazy blocks crossing groups */
    mpq_round_problem *pb = NULL;
    mpq_qparams *p = NULL, *pr = NULL;
    MPQ_ASSERT_OK(ctx, mpq_round_problem_create(ctx, &o, &mpq_round_gptq, "pick", &spec, rows, cols,
                                                W, H, &pb));
    /* the histogram of the RTN codes, Laplace-smoothed over the codes in use */
    MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, rows, cols, &pr));
    MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, pr, W, pb->imp));
    double cnt[256] = {0}, total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        mpq_quant_row_nearest(pr, r, W + r * cols, rtn);
        for (int64_t k = 0; k < cols; k++)
            cnt[rtn[k]] += 1.0;
    }
    const mpq_qtable *tb = mpq_qtable_of(pr, 0);
    for (int k = 0; k < tb->ncodes; k++)
        total += isnan(tb->level[k]) ? 0.0 : cnt[k] + 1.0;
    for (int k = 0; k < tb->ncodes; k++)
        if (!isnan(tb->level[k]))
            assert_true(rr_rel(pb->rate_len[k], -log2((cnt[k] + 1.0) / total)) < 1e-12);
    /* lambda per bit in units of the mean error of nearest rounding per
     * weight through the factor: mean_j dd_j x step^2 / 12 */
    double unit = 0.0;
    for (int64_t j = 0; j < cols; j++)
        unit += pb->vform ? pb->mdiag[j] * pb->mdiag[j] : 1.0 / (pb->mdiag[j] * pb->mdiag[j]);
    unit /= 12.0 * (double)cols;
    MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, rows, cols, &p));
    MPQ_ASSERT_OK(ctx, mpq_round_fit_rows(ctx, pb, p, 0, rows));
    MPQ_ASSERT_OK(ctx, mpq_round_gptq_rows(ctx, &o, pb, p, 0, rows, rate, codes, wq, NULL));
    int64_t moved = 0;
    for (int64_t j = 0; j < cols; j++) {
        const int64_t c = pb->perm[j];
        const double d = pb->mdiag[j], dd = pb->vform ? d * d : 1.0 / (d * d);
        for (int64_t r = 0; r < rows; r++) {
            const double w = wq[r * cols + c];
            const mpq_qtable *t = mpq_qtable_of(p, r);
            const double step = (double)mpq_qscale_of(p, mpq_qgroup_of(p, r, c)) *
                                (t->sorted[t->n - 1] - t->sorted[0]) / (t->n - 1);
            const double lam = rate * unit * step * step;
            double best = INFINITY, got = NAN;
            uint8_t nb[2];
            float vn[2];
            mpq_quant_neighbours_at(p, r, c, (float)w, &nb[0], &nb[1], &vn[0], &vn[1]);
            assert_true(codes[r * cols + c] == nb[0] || codes[r * cols + c] == nb[1]);
            for (int q = 0; q < 2; q++) {
                const int k = nb[q];
                const double e = w - (double)mpq_quant_value_at(p, r, c, (uint8_t)k);
                const double f = dd * e * e + lam * pb->rate_len[k];
                best = fmin(best, f);
                got = k == codes[r * cols + c] ? f : got;
            }
            /* wq is the float of GPTQ's double: ties within its rounding */
            assert_true(got <= best + 1e-6 * (best + lam));
            float v;
            moved += codes[r * cols + c] != mpq_quant_nearest_at(p, r, c, (float)w, &v);
        }
    }
    printf("rate pick %s static=%d vform=%d lambda=%g: %lld of %lld codes off the nearest\n",
           spec_text, static_groups, pb->vform, rate, (long long)moved, (long long)(rows * cols));
    assert_true(moved > 0);
    mpq_qparams_destroy(&pr);
    mpq_qparams_destroy(&p);
    mpq_round_problem_destroy(&pb);
}

static void test_pick(void **state) {
    (void)state;
    check_pick("int:bits=2,sym=false,group=8", 0, 0.5); /* U form (groups refitted) */
    check_pick("int:bits=2,sym=false,group=8", 1, 0.5); /* V form */
    check_pick("nf4:group=16", 1, 0.5);
    check_pick("int:bits=3,sym=true,gran=channel", 0, 0.5);
}

/* round.rate_lambda with a learned method: refused, naming both keys; a
 * negative value: refused by the key's range. */
static void test_config(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    mpq_round_opts o;
    mpq_qspec spec;
    const mpq_round_method *m = NULL;
    char *ok[] = {"quant.method=gptq", "round.rate_lambda=0.5"};
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "t.cfg", "", 2, ok, &cfg));
    MPQ_ASSERT_OK(ctx, mpq_round_from_config(ctx, cfg, &o, &spec, &m));
    assert_true(o.rate_lambda == 0.5);
    mpq_config_destroy(&cfg);
    const char *methods[] = {"quant.method=adaround", "quant.method=signround", "quant.method=rtn"};
    for (int k = 0; k < 3; k++) {
        char *bad[] = {(char *)methods[k], "round.rate_lambda=0.5"};
        MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "t.cfg", "", 2, bad, &cfg));
        assert_int_equal(mpq_round_from_config(ctx, cfg, &o, &spec, &m), MPQ_ERR_CONFIG);
        assert_non_null(strstr(ctx->err_msg, "t.cfg"));
        assert_non_null(strstr(ctx->err_msg, "round.rate_lambda"));
        assert_non_null(strstr(ctx->err_msg, "quant.method"));
        assert_non_null(strstr(ctx->err_msg, methods[k] + strlen("quant.method=")));
        mpq_err_clear(ctx);
        mpq_config_destroy(&cfg);
    }
    char *blk[] = {"round.loss=block", "round.rate_lambda=1"};
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "t.cfg", "", 2, blk, &cfg));
    assert_int_equal(mpq_round_from_config(ctx, cfg, &o, &spec, &m), MPQ_ERR_CONFIG);
    assert_non_null(strstr(ctx->err_msg, "round.rate_lambda"));
    assert_non_null(strstr(ctx->err_msg, "round.loss"));
    mpq_err_clear(ctx);
    mpq_config_destroy(&cfg);
    char *neg[] = {"round.rate_lambda=-1"};
    assert_int_equal(mpq_config_parse(ctx, "t.cfg", "", 1, neg, &cfg), MPQ_ERR_CONFIG);
    assert_non_null(strstr(ctx->err_msg, "round.rate_lambda"));
    mpq_err_clear(ctx);
    mpq_config_destroy(&cfg);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_monotone),
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_config),
    };
    int f = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, f);
}
