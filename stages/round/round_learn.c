/* round_learn.c: learned rounding on a tile of output rows, the engine of
 * the adaround and signround methods.
 *
 * Every weight chooses between two neighbouring grid points a <= b of the
 * starting point: the neighbours of w (init rtn) or of the GPTQ-updated
 * weight the column had when GPTQ rounded it (init gptq), with the
 * fractional position u0 in [0, 1] between them. The hard choice of the
 * starting point is therefore the nearest point, i.e. RTN or GPTQ itself.
 *
 *   sigmoid: h = clip(1.2 sig(V) - 0.1, 0, 1), V0 with h(V0) = u0; forward
 *            value a + h (b - a) (soft); hard: b when h > 0.5.
 *   offset:  o in [-0.5, 0.5], o0 = 0; forward value b when u0 + o > 0.5
 *            else a (hard), gradient through it as if it were linear.
 *
 * Per row r the objective is cols * L_r(Q) / L_r(start) + lambda * sum_c
 * (1 - |2h - 1|^beta) (regulariser for the sigmoid variable after the
 * warm-up), so that rates do not depend on the scale of H. The hard solution
 * is evaluated exactly (stored scales, dequantization arithmetic) at the
 * start, every `eval_every` steps (every step when the forward pass is
 * already the hard solution) and at the end; each row keeps its best one. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "mpq_ctx.h"
#include "round_internal.h"

static double sigm(double v) {
    return 1.0 / (1.0 + exp(-v));
}

/* Uniform in [-1, 1) from (seed, row, column): independent of the tiling. */
static double jitter(uint64_t seed, int64_t r, int64_t c) {
    uint64_t z = seed ^ ((uint64_t)r * UINT64_C(0x9e3779b97f4a7c15)) ^
                 ((uint64_t)c * UINT64_C(0xc2b2ae3d27d4eb4f));
    z += UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-52 - 1.0;
}

typedef struct optim {
    mpq_ropt kind;
    double lr, mom;
    double *m1, *m2;
} optim;

/* One step on x [n] with gradient g; lr_t already decayed for signsgd. */
static void optim_step(const optim *op, int64_t t, double lr_t, double *x, const double *g,
                       int64_t k) {
    switch (op->kind) {
        case MPQ_ROPT_ADAM: {
            const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
            double c1 = 1.0 - pow(b1, (double)(t + 1)), c2 = 1.0 - pow(b2, (double)(t + 1));
            op->m1[k] = b1 * op->m1[k] + (1 - b1) * g[k];
            op->m2[k] = b2 * op->m2[k] + (1 - b2) * g[k] * g[k];
            x[k] -= lr_t * (op->m1[k] / c1) / (sqrt(op->m2[k] / c2) + eps);
            break;
        }
        case MPQ_ROPT_SIGNSGD:
            x[k] -= lr_t * (g[k] > 0 ? 1.0 : (g[k] < 0 ? -1.0 : 0.0));
            break;
        default:
            op->m1[k] = op->mom * op->m1[k] + g[k];
            x[k] -= lr_t * op->m1[k];
            break;
    }
}

/* Hard codes of the current variables into hc, stored scales into p for the
 * tile's groups, and exact row losses into loss. */
typedef struct learn_state {
    const mpq_round_problem *pb;
    mpq_qparams *p;
    int64_t r0, nr, n, g0, ng;
    mpq_rvar var;
    uint8_t *ca, *cb;
    float *u0;
    double *x;
    double *s0, *mult;
    int learn_scales;
} learn_state;

static void hard_codes(learn_state *S, uint8_t *hc) {
    for (int64_t k = 0; k < S->nr * S->n; k++) {
        int up;
        if (S->var == MPQ_RVAR_SIGMOID) {
            double h = 1.2 * sigm(S->x[k]) - 0.1;
            up = h > 0.5;
        } else {
            up = (double)S->u0[k] + S->x[k] > 0.5;
        }
        hc[k] = up ? S->cb[k] : S->ca[k];
    }
    if (S->learn_scales)
        for (int64_t g = 0; g < S->ng; g++)
            S->p->scale[S->g0 + g] = mpq_round_store_scale(S->p, S->s0[g] * S->mult[g]);
}

static mpq_err hard_loss(mpq_ctx *ctx, learn_state *S, const uint8_t *hc, float *qrow, double *D,
                         double *T, double *loss) {
    const int64_t n = S->n;
    for (int64_t i = 0; i < S->nr; i++) {
        const float *w = S->pb->W + (S->r0 + i) * n;
        mpq_quant_row_dequant(S->p, S->r0 + i, hc + i * n, qrow);
        for (int64_t c = 0; c < n; c++)
            D[i * n + c] = (double)w[c] - (double)qrow[c];
    }
    return mpq_round_loss_d(ctx, n, S->pb->H, S->nr, D, T, loss);
}

/* Keeps, per row, the better of the best so far and the solution hc. */
static void keep_best(learn_state *S, const uint8_t *hc, const double *loss, double *best,
                      uint8_t *bcodes, float *bscale) {
    const int64_t n = S->n, gpr = S->p->gpr == 0 ? 0 : S->p->gpr;
    for (int64_t i = 0; i < S->nr; i++) {
        if (!(loss[i] < best[i]))
            continue;
        best[i] = loss[i];
        memcpy(bcodes + i * n, hc + i * n, (size_t)n);
        if (S->learn_scales && gpr > 0)
            memcpy(bscale + i * gpr, S->p->scale + S->g0 + i * gpr, (size_t)gpr * sizeof *bscale);
    }
}

/* The optimiser of n variables (the rounding variables, or the scale
 * factors when they are learned) with learning rate lr. */
static mpq_err optim_init(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_learn_cfg *lc, optim *op,
                          double lr, int64_t n) {
    op->kind = lc->optimizer;
    op->lr = lr;
    op->mom = o->momentum;
    MPQ_CALL(mpq_malloc(ctx, n, sizeof *op->m1, (void **)&op->m1));
    if (lc->optimizer == MPQ_ROPT_ADAM)
        MPQ_CALL(mpq_malloc(ctx, n, sizeof *op->m2, (void **)&op->m2));
    return MPQ_OK;
}

/* Evaluates the hard solution of the current variables exactly and keeps,
 * per row, the better of it and the best so far. */
static mpq_err eval_hard(mpq_ctx *ctx, learn_state *S, uint8_t *hc, float *qrow, double *D,
                         double *T, double *loss, double *best, uint8_t *bcodes, float *bscale) {
    hard_codes(S, hc);
    MPQ_CALL(hard_loss(ctx, S, hc, qrow, D, T, loss));
    keep_best(S, hc, loss, best, bcodes, bscale);
    return MPQ_OK;
}

/* Scale factors of the tile's groups: starting scales s0, multipliers 1,
 * the best scales so far, and gw[g] = 1 / (weights of group g in this tile):
 * SGD with momentum steps a scale factor by the mean, not the sum, of its
 * weights' gradients, so that its step does not grow with the group (a
 * channel has `cols` weights); Adam and sign-SGD are invariant to that
 * factor. */
static void init_scales(learn_state *S, const mpq_learn_cfg *lc, double *gw, float *bscale) {
    const int64_t nr = S->nr, n = S->n, r0 = S->r0;
    const mpq_qparams *p = S->p;
    double *s0 = S->s0, *mult = S->mult;
    for (int64_t i = 0; i < nr; i++)
        for (int64_t c = 0; c < n; c++)
            gw[mpq_qgroup_of(p, r0 + i, c) - S->g0] += 1.0;
    for (int64_t g = 0; g < S->ng; g++)
        gw[g] = lc->optimizer == MPQ_ROPT_SGDM && gw[g] > 0.0 ? 1.0 / gw[g] : 1.0;
    for (int64_t g = 0; g < S->ng; g++) {
        s0[g] = (double)mpq_qscale_of(p, S->g0 + g);
        mult[g] = 1.0;
        bscale[g] = p->scale[S->g0 + g];
    }
}

/* The neighbours ca <= cb of every starting weight (levels La, Lb), the
 * fractional position u0 between them (with the optional jitter) and the
 * variable x that reproduces it. */
static void init_relaxation(learn_state *S, const mpq_round_opts *o, const mpq_learn_cfg *lc,
                            const float *base, float *La, float *Lb) {
    const int64_t nr = S->nr, n = S->n, r0 = S->r0;
    const mpq_qparams *p = S->p;
    uint8_t *ca = S->ca, *cb = S->cb;
    float *u0 = S->u0;
    double *x = S->x;
    for (int64_t i = 0; i < nr; i++) {
        const mpq_qtable *tb = mpq_qtable_of(p, r0 + i);
        for (int64_t c = 0; c < n; c++) {
            const int64_t k = i * n + c;
            float va, vb;
            mpq_quant_neighbours_at(p, r0 + i, c, base[k], &ca[k], &cb[k], &va, &vb);
            La[k] = tb->level[ca[k]];
            Lb[k] = tb->level[cb[k]];
            double u = vb > va ? ((double)base[k] - va) / ((double)vb - va) : 0.0;
            if (o->init_noise > 0.0 && ca[k] != cb[k])
                u += o->init_noise * jitter(o->seed, r0 + i, c);
            u = u < 0.0 ? 0.0 : (u > 1.0 ? 1.0 : u);
            u0[k] = (float)u;
            if (lc->variable == MPQ_RVAR_SIGMOID) {
                double s = (u + 0.1) / 1.2;
                x[k] = log(s / (1.0 - s));
            } else {
                x[k] = u - (double)u0[k]; /* 0 up to the float rounding of u0 */
            }
        }
    }
}

/* Forward pass: E = Q - W, with dQ/dx in dq and (L - z) in lz kept for the
 * gradients. */
static void forward(const learn_state *S, const mpq_learn_cfg *lc, const float *La, const float *Lb,
                    double *E, double *dq, double *lz) {
    const int64_t nr = S->nr, n = S->n, r0 = S->r0;
    const mpq_qparams *p = S->p;
    const mpq_round_problem *pb = S->pb;
    const float *u0 = S->u0;
    const double *x = S->x, *s0 = S->s0, *mult = S->mult;
    for (int64_t i = 0; i < nr; i++) {
        const float *w = pb->W + (r0 + i) * n;
        for (int64_t c = 0; c < n; c++) {
            const int64_t k = i * n + c, gi = mpq_qgroup_of(p, r0 + i, c) - S->g0;
            const float z = mpq_qzero_of(p, S->g0 + gi);
            const float s = S->learn_scales ? (float)(s0[gi] * mult[gi]) : (float)s0[gi];
            float L;
            if (lc->variable == MPQ_RVAR_SIGMOID) {
                const double sg = sigm(x[k]), h = 1.2 * sg - 0.1;
                const double hc1 = h < 0.0 ? 0.0 : (h > 1.0 ? 1.0 : h);
                L = La[k] + (float)hc1 * (Lb[k] - La[k]);
                dq[k] =
                    (h > 0.0 && h < 1.0) ? (double)s * (Lb[k] - La[k]) * 1.2 * sg * (1 - sg) : 0.0;
            } else {
                L = (double)u0[k] + x[k] > 0.5 ? Lb[k] : La[k];
                dq[k] = (double)s * (Lb[k] - La[k]);
            }
            lz[k] = (double)L - (double)z;
            E[k] = (double)mpq_qval(s, L, z) - (double)w[c];
        }
    }
}

/* Gradients of step t: gx for the variables (the normalised loss through G
 * = E H, plus the regulariser after the warm-up), gm for the scale
 * factors. */
static void gradients(const learn_state *S, const mpq_round_opts *o, const mpq_learn_cfg *lc,
                      int64_t t, int64_t warm, const double *norm, const double *G,
                      const double *dq, const double *lz, double *gx, double *gm) {
    const int64_t nr = S->nr, n = S->n, r0 = S->r0, T = o->iters;
    const mpq_qparams *p = S->p;
    const uint8_t *ca = S->ca, *cb = S->cb;
    const double *x = S->x, *s0 = S->s0;
    const int reg = lc->variable == MPQ_RVAR_SIGMOID && t >= warm && o->lambda > 0.0;
    double beta = o->beta_end;
    if (reg && T > warm)
        beta = o->beta_end +
               (o->beta_start - o->beta_end) * (1.0 - (double)(t - warm) / (double)(T - warm));
    for (int64_t g = 0; g < S->ng; g++)
        gm[g] = 0.0;
    for (int64_t i = 0; i < nr; i++) {
        for (int64_t c = 0; c < n; c++) {
            const int64_t k = i * n + c;
            const double dl = norm[i] * 2.0 * G[k];
            double gk = dl * dq[k];
            if (reg && ca[k] != cb[k]) {
                const double sg = sigm(x[k]), h = 1.2 * sg - 0.1;
                if (h > 0.0 && h < 1.0) {
                    const double a = 2.0 * h - 1.0, aa = fabs(a);
                    const double dr = -beta * pow(aa, beta - 1.0) * (a > 0 ? 2.0 : -2.0);
                    gk += o->lambda * dr * 1.2 * sg * (1 - sg);
                }
            }
            gx[k] = ca[k] == cb[k] || norm[i] == 0.0 ? 0.0 : gk;
            if (S->learn_scales && norm[i] != 0.0) {
                const int64_t gi = mpq_qgroup_of(p, r0 + i, c) - S->g0;
                gm[gi] += dl * lz[k] * s0[gi];
            }
        }
    }
}

/* The optimiser steps of step t on the variables (clipped to their range)
 * and on the scale factors (clipped to [mmin, mmax]). */
static void take_steps(learn_state *S, const mpq_learn_cfg *lc, optim *ox, optim *om, int64_t t,
                       int64_t T, const double *gx, double *gm, const double *gw) {
    const int64_t N = S->nr * S->n;
    double *x = S->x, *mult = S->mult;
    const double decay = 1.0 - (double)t / (double)T;
    const double lrx = lc->optimizer == MPQ_ROPT_SIGNSGD ? ox->lr * decay : ox->lr;
    for (int64_t k = 0; k < N; k++) {
        if (gx[k] == 0.0 && lc->optimizer != MPQ_ROPT_SGDM)
            continue;
        optim_step(ox, t, lrx, x, gx, k);
        if (lc->variable == MPQ_RVAR_OFFSET)
            x[k] = x[k] < -0.5 ? -0.5 : (x[k] > 0.5 ? 0.5 : x[k]);
        else
            x[k] = x[k] < -12.0 ? -12.0 : (x[k] > 12.0 ? 12.0 : x[k]);
    }
    if (S->learn_scales) {
        const double lrm = lc->optimizer == MPQ_ROPT_SIGNSGD ? om->lr * decay : om->lr;
        for (int64_t g = 0; g < S->ng; g++) {
            gm[g] *= gw[g];
            optim_step(om, t, lrm, mult, gm, g);
            mult[g] = mult[g] < lc->mmin ? lc->mmin : (mult[g] > lc->mmax ? lc->mmax : mult[g]);
        }
    }
}

mpq_err mpq_round_learn_rows(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_learn_cfg *lc,
                             const mpq_round_problem *pb, mpq_qparams *p, int64_t r0, int64_t r1,
                             uint8_t *codes, mpq_round_stats *st) {
    mpq_err err = MPQ_OK;
    const int64_t n = pb->cols, nr = r1 - r0, N = nr * n;
    float *base = NULL, *u0 = NULL, *qrow = NULL, *La = NULL, *Lb = NULL, *bscale = NULL;
    uint8_t *ca = NULL, *cb = NULL, *hc = NULL, *bcodes = NULL;
    double *x = NULL, *gx = NULL, *E = NULL, *G = NULL, *dq = NULL, *lz = NULL, *loss = NULL,
           *best = NULL, *norm = NULL, *s0 = NULL, *mult = NULL, *gm = NULL, *gw = NULL;
    optim ox = {0}, om = {0};
    int nri, ni;
    MPQ_CALL(mpq_to_int(ctx, nr, "tile rows (BLAS)", &nri));
    MPQ_CALL(mpq_to_int(ctx, n, "layer width (BLAS)", &ni));

    MPQ_ALLOC_TRY(base, N);
    MPQ_ALLOC_TRY(u0, N);
    MPQ_ALLOC_TRY(La, N);
    MPQ_ALLOC_TRY(Lb, N);
    MPQ_ALLOC_TRY(ca, N);
    MPQ_ALLOC_TRY(cb, N);
    MPQ_ALLOC_TRY(hc, N);
    MPQ_ALLOC_TRY(bcodes, N);
    MPQ_ALLOC_TRY(x, N);
    MPQ_ALLOC_TRY(gx, N);
    MPQ_ALLOC_TRY(E, N);
    MPQ_ALLOC_TRY(G, N);
    MPQ_ALLOC_TRY(dq, N);
    MPQ_ALLOC_TRY(lz, N);
    MPQ_ALLOC_TRY(qrow, n);
    MPQ_ALLOC_TRY(loss, nr);
    MPQ_ALLOC_TRY(best, nr);
    MPQ_ALLOC_TRY(norm, nr);

    /* Starting point. */
    if (o->init == MPQ_RINIT_GPTQ) {
        MPQ_TRY(mpq_round_gptq_rows(ctx, o, pb, p, r0, r1, 0.0, hc, base, NULL));
    } else {
        memcpy(base, pb->W + r0 * n, (size_t)N * sizeof *base);
    }

    learn_state S = {.pb = pb,
                     .p = p,
                     .r0 = r0,
                     .nr = nr,
                     .n = n,
                     .var = lc->variable,
                     .ca = ca,
                     .cb = cb,
                     .u0 = u0,
                     .x = x,
                     .learn_scales = lc->learn_scales && p->gpr > 0};
    S.g0 = p->gpr == 0 ? 0 : r0 * p->gpr;
    S.ng = p->gpr == 0 ? 1 : nr * p->gpr;
    MPQ_ALLOC_TRY(s0, S.ng);
    MPQ_ALLOC_TRY(mult, S.ng);
    MPQ_ALLOC_TRY(gm, S.ng);
    /* gw[g]: 1 / (weights of group g in this tile): SGD with momentum steps
     * the scale factor by the mean, not the sum, of its weights' gradients,
     * so that its step does not grow with the group (a channel has `cols`
     * weights); Adam and sign-SGD are invariant to that factor. */
    MPQ_ALLOC_TRY(gw, S.ng);
    MPQ_ALLOC_TRY(bscale, S.ng);
    S.s0 = s0;
    S.mult = mult;
    init_scales(&S, lc, gw, bscale);

    init_relaxation(&S, o, lc, base, La, Lb);

    /* The starting point's exact loss: the first best, and the row scale. */
    hard_codes(&S, hc);
    MPQ_TRY(hard_loss(ctx, &S, hc, qrow, E, G, loss));
    for (int64_t i = 0; i < nr; i++) {
        best[i] = INFINITY;
        norm[i] = loss[i] > 0.0 ? (double)n / loss[i] : 0.0;
    }
    keep_best(&S, hc, loss, best, bcodes, bscale);
    double init_loss = 0.0;
    for (int64_t i = 0; i < nr; i++)
        init_loss += loss[i];

    const int64_t T = o->iters;
    const int exact = lc->variable == MPQ_RVAR_OFFSET && !S.learn_scales;
    const int64_t eval_every = T / 20 > 1 ? T / 20 : 1;
    const int64_t warm = (int64_t)(o->warmup * (double)T);
    MPQ_TRY(optim_init(ctx, o, lc, &ox, lc->lr, N));
    if (S.learn_scales)
        MPQ_TRY(optim_init(ctx, o, lc, &om, lc->lr_scale, S.ng));

    for (int64_t t = 0; t < T; t++) {
        forward(&S, lc, La, Lb, E, dq, lz);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nri, ni, ni, 1.0, E, ni, pb->H, ni,
                    0.0, G, ni);
        if (exact) {
            /* The forward values are the dequantized ones: exact losses. */
            for (int64_t i = 0; i < nr; i++) {
                double sum = 0.0;
                for (int64_t c = 0; c < n; c++)
                    sum += E[i * n + c] * G[i * n + c];
                loss[i] = sum;
            }
            hard_codes(&S, hc);
            keep_best(&S, hc, loss, best, bcodes, bscale);
        }

        gradients(&S, o, lc, t, warm, norm, G, dq, lz, gx, gm);
        take_steps(&S, lc, &ox, &om, t, T, gx, gm, gw);
        if (!exact && ((t + 1) % eval_every == 0 || t + 1 == T)) {
            MPQ_TRY(eval_hard(ctx, &S, hc, qrow, E, G, loss, best, bcodes, bscale));
        }
    }
    if (exact) {
        MPQ_TRY(eval_hard(ctx, &S, hc, qrow, E, G, loss, best, bcodes, bscale));
    }

    /* The best solution of every row. */
    memcpy(codes, bcodes, (size_t)N);
    if (S.learn_scales)
        memcpy(p->scale + S.g0, bscale, (size_t)S.ng * sizeof *bscale);
    st->iters = T;
    st->init_loss = init_loss;
cleanup:
    MPQ_FREE(om.m2);
    MPQ_FREE(om.m1);
    MPQ_FREE(ox.m2);
    MPQ_FREE(ox.m1);
    MPQ_FREE(bscale);
    MPQ_FREE(gm);
    MPQ_FREE(gw);
    MPQ_FREE(mult);
    MPQ_FREE(s0);
    MPQ_FREE(norm);
    MPQ_FREE(best);
    MPQ_FREE(loss);
    MPQ_FREE(qrow);
    MPQ_FREE(lz);
    MPQ_FREE(dq);
    MPQ_FREE(G);
    MPQ_FREE(E);
    MPQ_FREE(gx);
    MPQ_FREE(x);
    MPQ_FREE(bcodes);
    MPQ_FREE(hc);
    MPQ_FREE(cb);
    MPQ_FREE(ca);
    MPQ_FREE(Lb);
    MPQ_FREE(La);
    MPQ_FREE(u0);
    MPQ_FREE(base);
    return err;
}

/* ---- the two methods ------------------------------------------------------------ */

static void resolve(const mpq_round_opts *o, int signround, mpq_learn_cfg *lc) {
    lc->variable = o->variable != MPQ_RVAR_AUTO ? o->variable
                                                : (signround ? MPQ_RVAR_OFFSET : MPQ_RVAR_SIGMOID);
    lc->optimizer = o->optimizer != MPQ_ROPT_AUTO ? o->optimizer
                                                  : (signround ? MPQ_ROPT_SIGNSGD : MPQ_ROPT_ADAM);
    lc->learn_scales = o->learn_scales >= 0 ? o->learn_scales : signround;
    const int sig = lc->variable == MPQ_RVAR_SIGMOID;
    const double T = (double)(o->iters > 0 ? o->iters : 1);
    double lr, lrs;
    switch (lc->optimizer) {
        case MPQ_ROPT_ADAM:
            lr = sig ? 0.05 : 0.005;
            lrs = 0.002;
            break;
        case MPQ_ROPT_SIGNSGD:
            /* AutoRound: 1/iterations, decaying linearly to zero. */
            lr = sig ? 10.0 / T : 1.0 / T;
            lrs = 1.0 / T;
            break;
        default:
            lr = sig ? 0.01 : 0.001;
            lrs = 0.0002;
            break;
    }
    lc->lr = o->lr > 0.0 ? o->lr : lr;
    lc->lr_scale = o->lr_scale > 0.0 ? o->lr_scale : lrs;
    /* AutoRound clips the range (factors <= 1); AdaRound-style scale learning
     * may also widen it. */
    lc->mmin = 0.5;
    lc->mmax = signround ? 1.0 : 1.5;
}

static void learn_settings(const mpq_round_opts *o, int signround, cJSON *out) {
    static const char *const var_names[] = {"auto", "sigmoid", "offset"};
    static const char *const opt_names[] = {"auto", "adam", "signsgd", "sgdm"};
    mpq_learn_cfg lc;
    resolve(o, signround, &lc);
    cJSON_AddStringToObject(out, "init", o->init == MPQ_RINIT_GPTQ ? "gptq" : "rtn");
    if (o->init == MPQ_RINIT_GPTQ)
        mpq_round_gptq_settings(o, out);
    cJSON_AddNumberToObject(out, "iters", (double)o->iters);
    cJSON_AddStringToObject(out, "variable", var_names[lc.variable]);
    cJSON_AddStringToObject(out, "optimizer", opt_names[lc.optimizer]);
    cJSON_AddNumberToObject(out, "lr", lc.lr);
    if (lc.optimizer == MPQ_ROPT_SGDM)
        cJSON_AddNumberToObject(out, "momentum", o->momentum);
    cJSON_AddBoolToObject(out, "learn_scales", lc.learn_scales);
    if (lc.learn_scales) {
        cJSON_AddNumberToObject(out, "lr_scale", lc.lr_scale);
        cJSON_AddNumberToObject(out, "scale_factor_min", lc.mmin);
        cJSON_AddNumberToObject(out, "scale_factor_max", lc.mmax);
    }
    if (lc.variable == MPQ_RVAR_SIGMOID) {
        cJSON_AddNumberToObject(out, "lambda", o->lambda);
        cJSON_AddNumberToObject(out, "beta_start", o->beta_start);
        cJSON_AddNumberToObject(out, "beta_end", o->beta_end);
        cJSON_AddNumberToObject(out, "warmup", o->warmup);
    }
    cJSON_AddNumberToObject(out, "seed", (double)o->seed);
    cJSON_AddNumberToObject(out, "init_noise", o->init_noise);
}

static void adaround_settings(const mpq_round_opts *o, cJSON *out) {
    learn_settings(o, 0, out);
}

static void signround_settings(const mpq_round_opts *o, cJSON *out) {
    learn_settings(o, 1, out);
}

static int learn_needs(const mpq_round_opts *o) {
    return o->init == MPQ_RINIT_GPTQ;
}

static double learn_cost(const mpq_round_opts *o, int64_t nr, int64_t cols) {
    double it = (double)(o->iters > 0 ? o->iters : 1) * 2.0;
    if (o->init == MPQ_RINIT_GPTQ)
        it += 1.0;
    return it * (double)nr * (double)cols * (double)cols;
}

/* The code lengths enter GPTQ's per-weight choice alone (README): refused
 * here too, for methods named elsewhere than quant.method. */
static mpq_err no_rate(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_problem *pb) {
    MPQ_CHECK(o->rate_lambda == 0.0, MPQ_ERR_CONFIG,
              "round: layer '%s': round.rate_lambda = %g needs quant.method = gptq (learned "
              "rounding does not implement rate-aware rounding)",
              pb->name, o->rate_lambda);
    return MPQ_OK;
}

static mpq_err adaround_run(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_problem *pb,
                            mpq_qparams *p, int64_t r0, int64_t r1, uint8_t *codes,
                            mpq_round_stats *st) {
    mpq_learn_cfg lc;
    resolve(o, 0, &lc);
    MPQ_CALL(no_rate(ctx, o, pb));
    return mpq_round_learn_rows(ctx, o, &lc, pb, p, r0, r1, codes, st);
}

static mpq_err signround_run(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_problem *pb,
                             mpq_qparams *p, int64_t r0, int64_t r1, uint8_t *codes,
                             mpq_round_stats *st) {
    mpq_learn_cfg lc;
    resolve(o, 1, &lc);
    MPQ_CALL(no_rate(ctx, o, pb));
    return mpq_round_learn_rows(ctx, o, &lc, pb, p, r0, r1, codes, st);
}

const mpq_round_method mpq_round_adaround = {
    .name = "adaround",
    .summary = "AdaRound-style learned rounding (rectified sigmoid, annealed regulariser, Adam)",
    .needs_factor = learn_needs,
    .cost = learn_cost,
    .run = adaround_run,
    .settings = adaround_settings,
};

const mpq_round_method mpq_round_signround = {
    .name = "signround",
    .summary = "AutoRound-style signed-gradient rounding (offset, clipping factors, sign SGD)",
    .needs_factor = learn_needs,
    .cost = learn_cost,
    .run = signround_run,
    .settings = signround_settings,
};
