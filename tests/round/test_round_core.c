/* test_round_core.c: the rounding objective against a naive triple loop and
 * finite differences; RTN against the quantizer's nearest codes; GPTQ
 * against a naive optimal-brain-quantizer reference that inverts the
 * remaining Hessian at every step (act_order, static and refitted groups,
 * dead columns); a tiny problem against brute force over every rounding;
 * configuration errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_config.h"
#include "mpq_round.h"
#include "mpq_test.h"
#include "round_ref.h"

static mpq_ctx *g_ctx;

/* Runs `method` on rows [0, rows) as one tile; p is created and fitted by the
 * driver. */
static void run_one(const mpq_round_opts *o, const char *method, const char *spec_text,
                    int64_t rows, int64_t cols, const float *W, const double *H, mpq_qparams **p,
                    uint8_t *codes, mpq_round_stats *st, mpq_round_problem **pb_out) {
    mpq_ctx *ctx = g_ctx;
    mpq_qspec spec;
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, spec_text, &spec));
    const mpq_round_method *m = mpq_round_method_find(method);
    assert_non_null(m);
    mpq_round_problem *pb = NULL;
    MPQ_ASSERT_OK(ctx, mpq_round_problem_create(ctx, o, m, "test", &spec, rows, cols, W, H, &pb));
    MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, rows, cols, p));
    MPQ_ASSERT_OK(ctx, mpq_round_tile(ctx, o, m, pb, *p, 0, rows, codes, st));
    if (pb_out)
        *pb_out = pb;
    else
        mpq_round_problem_destroy(&pb);
}

static void test_loss_naive(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int64_t rows = 7, cols = 23;
    float *W = malloc(rows * cols * sizeof *W), *Q = malloc(rows * cols * sizeof *Q);
    double *H = malloc(cols * cols * sizeof *H), loss[7];
    rr_weights(11, rows, cols, W);
    rr_weights(12, rows, cols, Q);
    rr_hessian(13, cols, 0, H);
    MPQ_ASSERT_OK(ctx, mpq_round_loss(ctx, cols, H, rows, W, Q, loss));
    for (int64_t r = 0; r < rows; r++) {
        double ref = rr_loss(r, r + 1, cols, W, Q, H);
        assert_true(ref > 0.0);
        assert_true(rr_rel(loss[r], ref) < 1e-12);
    }
    free(W);
    free(Q);
    free(H);
}

/* L is quadratic in Q, so a central difference is exact up to rounding. */
static void test_grad_fd(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int64_t rows = 3, cols = 17;
    float W[3 * 17], Q[3 * 17], Qp[3 * 17];
    double H[17 * 17], G[3 * 17], lp[3], lm[3];
    rr_weights(21, rows, cols, W);
    rr_weights(22, rows, cols, Q);
    rr_hessian(23, cols, 0, H);
    MPQ_ASSERT_OK(ctx, mpq_round_grad(ctx, cols, H, rows, W, Q, G));
    const float h = 0x1p-6f;
    for (int64_t k = 0; k < rows * cols; k += 2) {
        memcpy(Qp, Q, sizeof Q);
        Qp[k] = Q[k] + h;
        MPQ_ASSERT_OK(ctx, mpq_round_loss(ctx, cols, H, rows, W, Qp, lp));
        Qp[k] = Q[k] - h;
        MPQ_ASSERT_OK(ctx, mpq_round_loss(ctx, cols, H, rows, W, Qp, lm));
        int64_t r = k / cols;
        double fd = (lp[r] - lm[r]) / (2.0 * (double)h);
        assert_true(fabs(fd - G[k]) <= 1e-7 * (fabs(G[k]) + 1.0));
    }
}

static void test_rtn_nearest(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const char *specs[] = {"int:bits=3,sym=false,group=8", "nf4:group=16", "fp4:gran=channel",
                           "pow2:bits=3,gran=tensor", "ternary:fit=threshold"};
    const int64_t rows = 9, cols = 37;
    float W[9 * 37], Q[9 * 37];
    double H[37 * 37];
    uint8_t codes[9 * 37], ref[9 * 37];
    rr_weights(31, rows, cols, W);
    rr_hessian(32, cols, 0, H);
    mpq_round_opts o;
    mpq_round_opts_default(&o);
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++) {
        mpq_qparams *p = NULL, *pr = NULL;
        mpq_round_stats st;
        run_one(&o, "rtn", specs[s], rows, cols, W, H, &p, codes, &st, NULL);
        /* Independent path: the quantizer's own fit (importance diag H) and
         * nearest codes of the whole matrix. */
        float imp[37];
        for (int64_t c = 0; c < cols; c++)
            imp[c] = (float)H[c * cols + c];
        mpq_qspec spec;
        MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, specs[s], &spec));
        MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, rows, cols, &pr));
        MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, pr, W, imp));
        mpq_quant_quantize(pr, W, ref);
        assert_memory_equal(codes, ref, sizeof codes);
        assert_memory_equal(p->scale, pr->scale, (size_t)pr->ngroups * sizeof *pr->scale);
        mpq_quant_dequantize(p, codes, Q);
        assert_true(rr_rel(st.loss, rr_loss(0, rows, cols, W, Q, H)) < 1e-9);
        assert_true(st.loss == st.rtn_loss);
        mpq_qparams_destroy(&p);
        mpq_qparams_destroy(&pr);
    }
}

/* ---- naive GPTQ ------------------------------------------------------------- */

/* In-place Gauss-Jordan inverse of the k x k matrix a (partial pivoting). */
static void gj_inverse(int64_t k, double *a, double *inv) {
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < k; j++)
            inv[i * k + j] = i == j;
    for (int64_t c = 0; c < k; c++) {
        int64_t piv = c;
        for (int64_t r = c + 1; r < k; r++)
            if (fabs(a[r * k + c]) > fabs(a[piv * k + c]))
                piv = r;
        for (int64_t j = 0; j < k; j++) {
            double t = a[c * k + j];
            a[c * k + j] = a[piv * k + j];
            a[piv * k + j] = t;
            t = inv[c * k + j];
            inv[c * k + j] = inv[piv * k + j];
            inv[piv * k + j] = t;
        }
        double d = a[c * k + c];
        for (int64_t j = 0; j < k; j++) {
            a[c * k + j] /= d;
            inv[c * k + j] /= d;
        }
        for (int64_t r = 0; r < k; r++) {
            if (r == c)
                continue;
            double f = a[r * k + c];
            for (int64_t j = 0; j < k; j++) {
                a[r * k + j] -= f * a[c * k + j];
                inv[r * k + j] -= f * inv[c * k + j];
            }
        }
    }
}

/* Optimal brain quantization, one column at a time in the order `order`,
 * with the exact inverse of the remaining damped Hessian: after rounding
 * column c, w_k -= (w_c - q_c) Hinv[c][k] / Hinv[c][c] for the remaining k.
 * refit: a group's parameters are refitted (quantizer library, importance
 * diag H) on its current weights when its first column comes up. */
static void naive_gptq(mpq_ctx *ctx, const mpq_qspec *spec, mpq_qparams *p, int64_t rows,
                       int64_t cols, const float *W, const double *H, double damping,
                       const int64_t *order, int refit, uint8_t *codes) {
    double *Hd = malloc((size_t)(cols * cols) * sizeof *Hd);
    double *sub = malloc((size_t)(cols * cols) * sizeof *sub);
    double *inv = malloc((size_t)(cols * cols) * sizeof *inv);
    int64_t *act = malloc((size_t)cols * sizeof *act);
    double *w = malloc((size_t)cols * sizeof *w);
    float imp[256];
    memcpy(Hd, H, (size_t)(cols * cols) * sizeof *Hd);
    double mean = 0.0;
    for (int64_t i = 0; i < cols; i++) {
        imp[i] = (float)H[i * cols + i];
        if (Hd[i * cols + i] == 0.0)
            Hd[i * cols + i] = 1.0;
        mean += Hd[i * cols + i];
    }
    mean /= (double)cols;
    for (int64_t i = 0; i < cols; i++)
        Hd[i * cols + i] += damping * mean;
    for (int64_t r = 0; r < rows; r++) {
        int fitted[64] = {0};
        for (int64_t c = 0; c < cols; c++)
            w[c] = W[r * cols + c];
        int64_t nact = cols;
        for (int64_t c = 0; c < cols; c++)
            act[c] = 1;
        for (int64_t s = 0; s < cols; s++) {
            int64_t c = order[s];
            if (refit && !fitted[c / p->gcols]) {
                int64_t g = c / p->gcols, c0 = g * p->gcols;
                int64_t len = c0 + p->gcols < cols ? p->gcols : cols - c0;
                fitted[g] = 1;
                mpq_qspec s1 = *spec;
                s1.group = len;
                mpq_qparams *t = NULL;
                float buf[256];
                for (int64_t k = 0; k < len; k++)
                    buf[k] = (float)w[c0 + k];
                MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &s1, 1, len, &t));
                MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, t, buf, imp + c0));
                p->scale[mpq_qgroup_of(p, r, c0)] = t->scale[0];
                if (p->zero)
                    p->zero[mpq_qgroup_of(p, r, c0)] = t->zero[0];
                mpq_qparams_destroy(&t);
            }
            /* Inverse of the remaining submatrix. */
            int64_t idx[256], k = 0, ci = -1;
            for (int64_t j = 0; j < cols; j++)
                if (act[j]) {
                    if (j == c)
                        ci = k;
                    idx[k++] = j;
                }
            for (int64_t a = 0; a < k; a++)
                for (int64_t b = 0; b < k; b++)
                    sub[a * k + b] = Hd[idx[a] * cols + idx[b]];
            gj_inverse(k, sub, inv);
            float v;
            codes[r * cols + c] = mpq_quant_nearest_at(p, r, c, (float)w[c], &v);
            double e = w[c] - (double)v;
            for (int64_t b = 0; b < k; b++)
                if (b != ci)
                    w[idx[b]] -= e * inv[ci * k + b] / inv[ci * k + ci];
            act[c] = 0;
            nact--;
        }
    }
    free(Hd);
    free(sub);
    free(inv);
    free(act);
    free(w);
}

/* The codes of GPTQ in both of its forms (round_gptq.c) against the naive
 * reference: static groups and channels go through V, groups fitted in
 * the sweep through U. */
static void check_gptq(const char *spec_text, int act_order, int static_groups, int dead_mod,
                       int64_t block) {
    mpq_ctx *ctx = g_ctx;
    const int64_t rows = 6, cols = 29;
    float W[6 * 29], Q[6 * 29];
    double H[29 * 29];
    uint8_t codes[6 * 29], ref[6 * 29];
    rr_weights(41, rows, cols, W);
    rr_hessian(42, cols, dead_mod, H);
    mpq_round_opts o;
    mpq_round_opts_default(&o);
    o.act_order = act_order;
    o.static_groups = static_groups;
    o.block_size = block;
    o.rtn_guard = 0;
    mpq_qparams *p = NULL, *pr = NULL;
    mpq_round_stats st;
    mpq_round_problem *pb = NULL;
    run_one(&o, "gptq", spec_text, rows, cols, W, H, &p, codes, &st, &pb);
    /* Reference: starting parameters from the quantizer's own fit. */
    mpq_qspec spec;
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, spec_text, &spec));
    MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &spec, rows, cols, &pr));
    MPQ_ASSERT_OK(ctx, mpq_quant_fit(ctx, pr, W, pb->imp));
    int64_t order[29];
    for (int64_t c = 0; c < cols; c++)
        order[c] = c;
    if (act_order) /* decreasing diag H, ties by index (insertion sort) */
        for (int64_t i = 1; i < cols; i++)
            for (int64_t j = i;
                 j > 0 && H[order[j] * cols + order[j]] > H[order[j - 1] * cols + order[j - 1]];
                 j--) {
                int64_t t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
    int refit = !static_groups && spec.gran == MPQ_QGRAN_GROUP;
    /* groups fitted during the sweep need the U form; the rest the V form */
    assert_int_equal(pb->vform, !refit);
    naive_gptq(ctx, &spec, pr, rows, cols, W, H, o.hf.damping, order, refit, ref);
    int64_t diff = 0;
    for (int64_t k = 0; k < rows * cols; k++)
        diff += codes[k] != ref[k];
    if (diff)
        fprintf(stderr, "gptq %s act_order=%d static=%d dead=%d: %lld codes differ\n", spec_text,
                act_order, static_groups, dead_mod, (long long)diff);
    for (int64_t k = 0; k < rows * cols && getenv("DBG"); k++)
        if (codes[k] != ref[k])
            fprintf(stderr, "  r%lld c%lld %d vs %d\n", (long long)(k / cols),
                    (long long)(k % cols), codes[k], ref[k]);
    if (getenv("DBG"))
        goto dbg;
    assert_int_equal(diff, 0);
    assert_memory_equal(p->scale, pr->scale, (size_t)pr->ngroups * sizeof *pr->scale);
    mpq_quant_dequantize(p, codes, Q);
    for (int64_t k = 0; k < rows * cols; k++)
        assert_true(isfinite(Q[k]));
    assert_true(rr_rel(st.loss, rr_loss(0, rows, cols, W, Q, H)) < 1e-9);
    /* Dead columns: no coupling, so nearest rounding of the weight. */
    for (int64_t c = 0; c < cols; c++)
        if (H[c * cols + c] == 0.0)
            for (int64_t r = 0; r < rows; r++) {
                float v;
                assert_int_equal(codes[r * cols + c],
                                 mpq_quant_nearest_at(p, r, c, W[r * cols + c], &v));
            }
dbg:
    mpq_round_problem_destroy(&pb);
    mpq_qparams_destroy(&p);
    mpq_qparams_destroy(&pr);
}

static void test_gptq_naive(void **state) {
    (void)state;
    const char *specs[] = {"int:bits=3,sym=false,group=8", "int:bits=2,sym=true,gran=channel",
                           "nf4:group=16", "fp4:group=8,fit=search"};
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++)
        for (int ao = 0; ao < 2; ao++)
            for (int sg = 0; sg < 2; sg++) {
                check_gptq(specs[s], ao, sg, 0, 128);
                check_gptq(specs[s], ao, sg, 0, 5); /* lazy blocks crossing groups */
            }
    check_gptq("int:bits=3,sym=false,group=8", 1, 0, 4, 7); /* dead columns */
    check_gptq("int:bits=3,sym=false,group=8", 0, 1, 5, 128);
}

/* round.gptq_precision = "auto" picks float32 from 1024 input columns on
 * and double below; "float" and "double" are kept as set. Narrow layers in
 * auto mode give the bits of double. */
static void test_gptq_precision_auto(void **state) {
    (void)state;
    mpq_round_opts o;
    mpq_round_opts_default(&o);
    assert_int_equal(o.gptq_float, -1);
    assert_int_equal(mpq_round_gptq_float(&o, 1023), 0);
    assert_int_equal(mpq_round_gptq_float(&o, 1024), 1);
    assert_int_equal(mpq_round_gptq_float(&o, 11008), 1);
    o.gptq_float = 0;
    assert_int_equal(mpq_round_gptq_float(&o, 4096), 0);
    o.gptq_float = 1;
    assert_int_equal(mpq_round_gptq_float(&o, 16), 1);
    const int64_t rows = 24, cols = 96;
    float *W = malloc(sizeof(float) * (size_t)(rows * cols));
    double *H = malloc(sizeof(double) * (size_t)(cols * cols));
    uint8_t *ca = malloc((size_t)(rows * cols)), *cd = malloc((size_t)(rows * cols));
    rr_weights(31, rows, cols, W);
    rr_hessian(32, cols, 0, H);
    mpq_qparams *pa = NULL, *pd = NULL;
    mpq_round_stats sa, sd;
    mpq_round_problem *pb = NULL;
    o.gptq_float = -1;
    run_one(&o, "gptq", "int:bits=3,sym=false,group=32", rows, cols, W, H, &pa, ca, &sa, &pb);
    assert_null(pb->Mf);
    o.gptq_float = 0;
    run_one(&o, "gptq", "int:bits=3,sym=false,group=32", rows, cols, W, H, &pd, cd, &sd, NULL);
    assert_memory_equal(ca, cd, (size_t)(rows * cols));
    assert_true(sa.loss == sd.loss);
    mpq_round_problem_destroy(&pb);
    mpq_qparams_destroy(&pa);
    mpq_qparams_destroy(&pd);
    free(W);
    free(H);
    free(ca);
    free(cd);
}

/* round.gptq_precision = "float", in both forms (groups fitted in the
 * sweep: U; static groups and channels: V): the lazy updates in float32
 * give a layer loss within 1e-4 relative of the double computation (the
 * criterion for offering it), the loss it reports (from its errors) is the
 * product with H of its own codes within 1e-5, and a tile gives the same
 * bits as the whole layer. */
static void test_gptq_float(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const int64_t rows = 48, cols = 192;
    float *W = malloc(sizeof(float) * (size_t)(rows * cols));
    float *Q = malloc(sizeof(float) * (size_t)(rows * cols));
    double *H = malloc(sizeof(double) * (size_t)(cols * cols));
    uint8_t *cd = malloc((size_t)(rows * cols)), *cf = malloc((size_t)(rows * cols));
    uint8_t *ct = malloc((size_t)(rows * cols));
    rr_weights(21, rows, cols, W);
    rr_hessian(22, cols, 0, H);
    const char *specs[] = {"int:bits=3,sym=false,group=32", "nf4:group=16",
                           "int:bits=4,sym=false,group=32", "int:bits=2,sym=true,gran=channel"};
    for (int s = 0; s < 4; s++)
        for (int ao = 0; ao < 2; ao++) {
            mpq_round_opts o;
            mpq_round_opts_default(&o);
            o.act_order = ao;
            o.static_groups = s == 2;
            o.block_size = 40; /* blocks crossing groups */
            mpq_qparams *p = NULL, *pf = NULL;
            mpq_round_stats sd, sf;
            run_one(&o, "gptq", specs[s], rows, cols, W, H, &p, cd, &sd, NULL);
            o.gptq_float = 1;
            mpq_round_problem *pb = NULL;
            run_one(&o, "gptq", specs[s], rows, cols, W, H, &pf, cf, &sf, &pb);
            /* float32 in natural order fits groups through V as well */
            assert_int_equal(pb->vform, s >= 2 || !ao);
            if (!(rr_rel(sf.loss, sd.loss) < 1e-4))
                fail_msg("%s act_order %d: float loss %.9g, double %.9g", specs[s], ao, sf.loss,
                         sd.loss);
            mpq_quant_dequantize(pf, cf, Q);
            const double exact = rr_loss(0, rows, cols, W, Q, H);
            if (!(rr_rel(sf.loss, exact) < 1e-5))
                fail_msg("%s act_order %d: float loss %.9g, product with H %.9g", specs[s], ao,
                         sf.loss, exact);
            /* two tiles, rows [0, 17) and [17, rows) */
            mpq_round_stats st;
            MPQ_ASSERT_OK(ctx, mpq_round_tile(ctx, &o, mpq_round_method_find("gptq"), pb, pf, 0, 17,
                                              ct, &st));
            MPQ_ASSERT_OK(ctx, mpq_round_tile(ctx, &o, mpq_round_method_find("gptq"), pb, pf, 17,
                                              rows, ct + 17 * cols, &st));
            assert_memory_equal(ct, cf, (size_t)(rows * cols));
            mpq_round_problem_destroy(&pb);
            mpq_qparams_destroy(&p);
            mpq_qparams_destroy(&pf);
        }
    free(W), free(Q), free(H), free(cd), free(cf), free(ct);
}

/* GPTQ's losses go through its factor (the RTN loss: a triangular solve
 * with U or a triangular product with V; the final loss: its errors; both
 * less the damping's share): equal to the product with H within 1e-9
 * relative on a rank-deficient H (40 samples for 160 columns, every 9th
 * channel dead, the shape of a wide MLP input with few calibration rows),
 * with and without act_order, in both forms (static groups: V), for the
 * final and the RTN codes. */
static void test_loss_factor(void **state) {
    (void)state;
    const int64_t rows = 12, cols = 160, m = 40;
    float *W = malloc(sizeof(float) * rows * cols), *Q = malloc(sizeof(float) * rows * cols);
    double *H = calloc((size_t)(cols * cols), sizeof *H), *x = malloc(sizeof(double) * cols);
    uint8_t *codes = malloc((size_t)(rows * cols));
    rr_weights(51, rows, cols, W);
    for (int64_t r = 0; r < m; r++) {
        for (int64_t c = 0; c < cols; c++)
            x[c] = c % 9 == 8 ? 0.0 : (0.2 + c % 7) * rr_gauss(52, (uint64_t)(r * cols + c));
        for (int64_t i = 0; i < cols; i++)
            for (int64_t j = 0; j < cols; j++)
                H[i * cols + j] += x[i] * x[j];
    }
    double worst = 0.0;
    for (int run = 0; run < 4; run++) {
        mpq_round_opts o;
        mpq_round_opts_default(&o);
        o.act_order = run % 2;
        o.static_groups = run / 2;
        o.rtn_guard = 1; /* RTN's loss through the factor is measured for the guard */
        mpq_qparams *p = NULL;
        mpq_round_stats gq, rtn;
        run_one(&o, "gptq", "int:bits=3,sym=false,group=32", rows, cols, W, H, &p, codes, &gq,
                NULL);
        mpq_quant_dequantize(p, codes, Q);
        worst = fmax(worst, rr_rel(gq.loss, rr_loss(0, rows, cols, W, Q, H)));
        mpq_qparams_destroy(&p);
        run_one(&o, "rtn", "int:bits=3,sym=false,group=32", rows, cols, W, H, &p, codes, &rtn,
                NULL);
        worst = fmax(worst, rr_rel(gq.rtn_loss, rtn.loss));
        assert_true(gq.loss < 0.8 * gq.rtn_loss);
        mpq_qparams_destroy(&p);
    }
    printf("loss through the factor, rank-deficient H: worst relative difference %.3g\n", worst);
    assert_true(worst < 1e-9);
    free(codes);
    free(x);
    free(H);
    free(Q);
    free(W);
}

/* 1 row x 6 columns, 2-bit: every one of the 4^6 roundings (global optimum
 * with the fitted parameters), and every choice between the two grid
 * neighbours of each weight (the search space of learned rounding from RTN). */
static void test_bruteforce(void **state) {
    (void)state;
    const int64_t cols = 6;
    const int trials = 24;
    int hits = 0;
    double ex_rtn = 0.0, ex_ada = 0.0, ex_gptq = 0.0, worst_factor = 0.0;
    for (int trial = 0; trial < trials; trial++) {
        float W[6], Q[6];
        double H[36];
        uint8_t codes[6], lo[6], hi[6];
        rr_weights(100 + (uint64_t)trial, 1, cols, W);
        rr_hessian(200 + (uint64_t)trial, cols, 0, H);
        mpq_round_opts o;
        mpq_round_opts_default(&o);
        o.rtn_guard = 0;
        o.act_order = 0;
        mpq_qparams *p = NULL;
        mpq_round_stats rtn, gq, gqg, ada, adag;
        const char *spec = "int:bits=2,sym=false,gran=channel";
        run_one(&o, "rtn", spec, 1, cols, W, H, &p, codes, &rtn, NULL);
        double best = INFINITY, nbest = INFINITY;
        for (int m = 0; m < 4096; m++) {
            for (int c = 0; c < 6; c++)
                Q[c] = mpq_quant_value_at(p, 0, c, (uint8_t)((m >> (2 * c)) & 3));
            best = fmin(best, rr_loss(0, 1, cols, W, Q, H));
        }
        for (int c = 0; c < 6; c++) {
            float vl, vh;
            mpq_quant_neighbours_at(p, 0, c, W[c], &lo[c], &hi[c], &vl, &vh);
        }
        for (int m = 0; m < 64; m++) {
            for (int c = 0; c < 6; c++)
                Q[c] = mpq_quant_value_at(p, 0, c, ((m >> c) & 1) ? hi[c] : lo[c]);
            nbest = fmin(nbest, rr_loss(0, 1, cols, W, Q, H));
        }
        mpq_qparams_destroy(&p);
        run_one(&o, "gptq", spec, 1, cols, W, H, &p, codes, &gq, NULL);
        /* GPTQ's losses go through its factor: the same as the product with H */
        mpq_quant_dequantize(p, codes, Q);
        worst_factor = fmax(worst_factor, rr_rel(gq.loss, rr_loss(0, 1, cols, W, Q, H)));
        mpq_qparams_destroy(&p);
        o.init = MPQ_RINIT_RTN;
        o.iters = 300;
        run_one(&o, "adaround", spec, 1, cols, W, H, &p, codes, &ada, NULL);
        mpq_quant_dequantize(p, codes, Q);
        assert_true(rr_rel(ada.loss, rr_loss(0, 1, cols, W, Q, H)) < 1e-9);
        mpq_qparams_destroy(&p);
        o.rtn_guard = 1;
        o.init = MPQ_RINIT_GPTQ;
        run_one(&o, "adaround", spec, 1, cols, W, H, &p, codes, &adag, NULL);
        mpq_qparams_destroy(&p);
        run_one(&o, "gptq", spec, 1, cols, W, H, &p, codes, &gqg, NULL);
        mpq_qparams_destroy(&p);
        /* Without the guard RTN's loss is not measured, except by RTN
         * itself; with it, GPTQ measures the same RTN loss through its
         * factor, and a row left unguarded keeps the same solution. */
        assert_true(isnan(gq.rtn_loss) && isnan(ada.rtn_loss));
        assert_true(rtn.rtn_loss == rtn.loss);
        assert_true(rr_rel(gqg.rtn_loss, rtn.loss) < 1e-9);
        assert_true(gqg.rows_guarded == 1 || gqg.loss == gq.loss);
        /* Nothing beats brute force; starting points and the guard hold. */
        assert_true(best <= nbest && nbest <= rtn.loss);
        assert_true(gq.loss >= best * (1 - 1e-12));
        assert_true(ada.loss >= nbest * (1 - 1e-12));
        assert_true(ada.loss <= rtn.loss);
        assert_true(gqg.loss <= rtn.loss * (1 + 1e-9));
        assert_true(adag.loss <= gqg.loss * (1 + 1e-9)); /* losses by two formulas */
        hits += ada.loss <= nbest * (1 + 1e-9);
        ex_rtn += rtn.loss / nbest - 1.0;
        ex_ada += ada.loss / nbest - 1.0;
        ex_gptq += gq.loss / best - 1.0;
    }
    printf("bruteforce: learned (from RTN) at its optimum in %d/%d; mean excess over the "
           "neighbour optimum: rtn %.4f learned %.4f; gptq over the global optimum %.4f\n",
           hits, trials, ex_rtn / trials, ex_ada / trials, ex_gptq / trials);
    printf("bruteforce: GPTQ loss through the factor vs the product with H: worst relative "
           "difference %.3g\n",
           worst_factor);
    assert_true(worst_factor < 1e-9);
    /* Observed: 7/24 at the optimum, excess 5.58 -> 1.26 (a soft relaxation
     * of a strongly correlated 6-variable problem); margins below that. */
    assert_true(ex_ada < 0.3 * ex_rtn);
    assert_true(hits >= 5);
}

static void test_config(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    mpq_round_opts o;
    mpq_qspec spec;
    const mpq_round_method *m = NULL;
    char *over[] = {"quant.method=signround", "round.optimizer=sgdm", "round.tile_rows=16"};
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "t.cfg", "", 3, over, &cfg));
    MPQ_ASSERT_OK(ctx, mpq_round_from_config(ctx, cfg, &o, &spec, &m));
    assert_string_equal(m->name, "signround");
    assert_int_equal(o.optimizer, MPQ_ROPT_SGDM);
    assert_int_equal(o.tile_rows, 16);
    assert_int_equal(o.block_size, 128);
    assert_int_equal(spec.bits, 4);
    assert_int_equal(spec.group, 32);
    mpq_config_destroy(&cfg);
    char *bad[] = {"quant.spec=int:bits=4,grup=32"};
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "t.cfg", "", 1, bad, &cfg));
    assert_int_equal(mpq_round_from_config(ctx, cfg, &o, &spec, &m), MPQ_ERR_CONFIG);
    assert_non_null(strstr(ctx->err_msg, "quant.spec"));
    assert_non_null(strstr(ctx->err_msg, "grup"));
    mpq_err_clear(ctx);
    mpq_config_destroy(&cfg);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_naive),  cmocka_unit_test(test_grad_fd),
        cmocka_unit_test(test_rtn_nearest), cmocka_unit_test(test_gptq_naive),
        cmocka_unit_test(test_gptq_float),  cmocka_unit_test(test_gptq_precision_auto),
        cmocka_unit_test(test_bruteforce),  cmocka_unit_test(test_loss_factor),
        cmocka_unit_test(test_config),
    };
    int f = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, f);
}
