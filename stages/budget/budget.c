/* budget.c: exact multiple-choice knapsack for the per-layer bit budget.
 *
 * Notation: active layers a = 0..na-1 (excluded layers removed), candidate k
 * of layer a costs c[a][k] bits (int64, exact) and scores s[a][k] >= 0. We
 * minimise sum_a s[a][x_a] subject to sum_a c[a][x_a] <= B.
 *
 * 1. Per layer, dominated candidates (another one is no more expensive and
 *    no worse) are dropped: an optimum never needs them. What is left, the
 *    layer's Pareto list, is sorted by cost with strictly falling scores.
 * 2. Lagrangian dual g(lambda) = sum_a min_k (s + lambda c) - lambda B is
 *    concave and piecewise linear; its breakpoints are the slopes of the
 *    lower convex hulls of the layers. Walking the hull steps in increasing
 *    "score added per bit saved" until the cost fits gives the maximiser
 *    lambda* exactly (the classic LP greedy for this problem); g(lambda*) is
 *    the lower bound LB and the configuration reached is feasible.
 * 3. That configuration, improved greedily into the leftover bits, is the
 *    incumbent with score UB.
 * 4. Reduction: with r[a][k] = s + lambda c - min_k(s + lambda c) >= 0, every
 *    feasible x has score(x) >= LB + sum_a r[a][x_a]. So a solution scoring
 *    <= UB uses only candidates with r <= UB - LB. Layers left with one
 *    candidate are fixed; the others form the core.
 * 5. The core is solved by a dynamic programme over Pareto frontiers: after
 *    each core layer we keep the non-dominated (total bits, total score)
 *    states, with exact int64 bit totals, and drop states that cannot fit the
 *    budget or whose bound LB + sum r (+ lambda times the bits that must stay
 *    unused) exceeds UB. Dominance and both prunings only remove states that
 *    cannot lead to a solution better than one kept, so the best final state
 *    (or the incumbent) is optimal.
 * 6. Iterative deepening: steps 4-5 run first with a threshold T much below
 *    UB - LB (prune when the bound exceeds LB + T). Any solution scoring at
 *    most LB + T survives, and every surviving final state scores at most
 *    LB + T, so if one survives the best is optimal; otherwise T grows 8x,
 *    up to UB - LB. A small T shrinks the core by orders of magnitude
 *    because the greedy incumbent is usually much further from the optimum
 *    than the optimum is from the bound.
 *
 * Floating-point scores are compared with a small slack in the prunings
 * (keeping a few more states than needed), never in the dominance test on
 * exact bit totals, so rounding cannot remove the optimum.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_budget.h"

#define MPQ_BUDGET_MAX_CAND 1024

/* ---- problem ------------------------------------------------------------- */

mpq_err mpq_budget_problem_create(mpq_ctx *ctx, int64_t n_layers, int32_t max_cand,
                                  mpq_budget_problem **out) {
    *out = NULL;
    MPQ_CHECK(n_layers >= 0, MPQ_ERR_ARG, "budget problem: negative layer count %lld",
              (long long)n_layers);
    MPQ_CHECK(max_cand >= 1 && max_cand <= MPQ_BUDGET_MAX_CAND, MPQ_ERR_ARG,
              "budget problem: max_cand = %d is outside 1..%d", (int)max_cand, MPQ_BUDGET_MAX_CAND);
    mpq_err err = MPQ_OK;
    mpq_budget_problem *p = NULL;
    int64_t cells = 0;
    MPQ_TRY(mpq_mul64(ctx, n_layers, max_cand, "budget problem candidates", &cells));
    MPQ_ALLOC_TRY(p, 1);
    p->n_layers = n_layers;
    p->max_cand = max_cand;
    MPQ_ALLOC_TRY(p->n_weights, n_layers);
    MPQ_ALLOC_TRY(p->n_cand, n_layers);
    MPQ_ALLOC_TRY(p->bits, cells);
    MPQ_ALLOC_TRY(p->score, cells);
    MPQ_ALLOC_TRY(p->pinned, n_layers);
    MPQ_ALLOC_TRY(p->excluded, n_layers);
    for (int64_t l = 0; l < n_layers; l++)
        p->pinned[l] = -1;
    *out = p;
    return MPQ_OK;
cleanup:
    mpq_budget_problem_destroy(&p);
    return err;
}

void mpq_budget_problem_destroy(mpq_budget_problem **pp) {
    if (!pp || !*pp)
        return;
    mpq_budget_problem *p = *pp;
    mpq_free(p->n_weights);
    mpq_free(p->n_cand);
    mpq_free(p->bits);
    mpq_free(p->score);
    mpq_free(p->pinned);
    mpq_free(p->excluded);
    mpq_free(p);
    *pp = NULL;
}

mpq_err mpq_budget_set_layer(mpq_ctx *ctx, mpq_budget_problem *p, int64_t l, int64_t n_weights,
                             int32_t k, const int64_t *bits, const double *score) {
    MPQ_CHECK(l >= 0 && l < p->n_layers, MPQ_ERR_ARG, "budget: layer %lld is outside 0..%lld",
              (long long)l, (long long)p->n_layers - 1);
    MPQ_CHECK(k >= 1 && k <= p->max_cand, MPQ_ERR_ARG,
              "budget: layer %lld has %d candidates, expected 1..%d", (long long)l, (int)k,
              (int)p->max_cand);
    MPQ_CHECK(n_weights >= 0, MPQ_ERR_ARG, "budget: layer %lld has a negative weight count %lld",
              (long long)l, (long long)n_weights);
    for (int32_t j = 0; j < k; j++) {
        MPQ_CHECK(bits[j] >= 0, MPQ_ERR_ARG,
                  "budget: layer %lld candidate %d costs %lld bits (< 0)", (long long)l, (int)j,
                  (long long)bits[j]);
        MPQ_CHECK(isfinite(score[j]) && score[j] >= 0.0, MPQ_ERR_NUMERIC,
                  "budget: layer %lld candidate %d has score %g (must be finite and >= 0)",
                  (long long)l, (int)j, score[j]);
    }
    int64_t off = l * p->max_cand;
    memcpy(p->bits + off, bits, (size_t)k * sizeof *bits);
    memcpy(p->score + off, score, (size_t)k * sizeof *score);
    p->n_cand[l] = k;
    p->n_weights[l] = n_weights;
    if (p->pinned[l] >= k)
        p->pinned[l] = -1;
    return MPQ_OK;
}

mpq_err mpq_budget_pin(mpq_ctx *ctx, mpq_budget_problem *p, int64_t l, int32_t k) {
    MPQ_CHECK(l >= 0 && l < p->n_layers, MPQ_ERR_ARG, "budget: layer %lld is outside 0..%lld",
              (long long)l, (long long)p->n_layers - 1);
    MPQ_CHECK(k >= -1 && k < p->n_cand[l], MPQ_ERR_ARG,
              "budget: cannot pin layer %lld to candidate %d (it has %d)", (long long)l, (int)k,
              (int)p->n_cand[l]);
    p->pinned[l] = k;
    return MPQ_OK;
}

mpq_err mpq_budget_exclude(mpq_ctx *ctx, mpq_budget_problem *p, int64_t l, int excluded) {
    MPQ_CHECK(l >= 0 && l < p->n_layers, MPQ_ERR_ARG, "budget: layer %lld is outside 0..%lld",
              (long long)l, (long long)p->n_layers - 1);
    p->excluded[l] = excluded ? 1 : 0;
    return MPQ_OK;
}

static int64_t total_weights(const mpq_budget_problem *p) {
    int64_t w = 0;
    for (int64_t l = 0; l < p->n_layers; l++)
        if (!p->excluded[l])
            w += p->n_weights[l];
    return w;
}

mpq_err mpq_budget_range(mpq_ctx *ctx, const mpq_budget_problem *p, int64_t *min_bits,
                         int64_t *max_bits, int64_t *n_weights) {
    int64_t lo = 0, hi = 0;
    for (int64_t l = 0; l < p->n_layers; l++) {
        if (p->excluded[l])
            continue;
        const int64_t *c = p->bits + l * p->max_cand;
        int64_t cl = INT64_MAX, ch = 0;
        for (int32_t k = 0; k < p->n_cand[l]; k++)
            if (p->pinned[l] < 0 || p->pinned[l] == k) {
                cl = c[k] < cl ? c[k] : cl;
                ch = c[k] > ch ? c[k] : ch;
            }
        MPQ_CHECK(cl != INT64_MAX, MPQ_ERR_ARG, "budget: layer %lld has no candidate",
                  (long long)l);
        MPQ_CALL(mpq_add64(ctx, lo, cl, "budget: smallest total bits", &lo));
        MPQ_CALL(mpq_add64(ctx, hi, ch, "budget: largest total bits", &hi));
    }
    *min_bits = lo;
    *max_bits = hi;
    if (n_weights)
        *n_weights = total_weights(p);
    return MPQ_OK;
}

mpq_err mpq_budget_bits(mpq_ctx *ctx, const mpq_budget_problem *p, const mpq_budget_spec *spec,
                        int64_t *budget_bits) {
    int64_t w = 0;
    for (int64_t l = 0; l < p->n_layers; l++)
        if (!p->excluded[l])
            MPQ_CALL(mpq_add64(ctx, w, p->n_weights[l], "budget: total weights", &w));
    switch (spec->kind) {
        case MPQ_BUDGET_AVG_BITS: {
            MPQ_CHECK(isfinite(spec->avg_bits) && spec->avg_bits > 0.0, MPQ_ERR_CONFIG,
                      "budget: average bits per weight %g must be finite and > 0", spec->avg_bits);
            MPQ_CHECK(w > 0, MPQ_ERR_CONFIG,
                      "budget: an average-bits budget needs the weight counts of the quantized "
                      "layers, but they total 0");
            double b = floor(spec->avg_bits * (double)w);
            MPQ_CHECK(b < 9.2e18, MPQ_ERR_RANGE,
                      "budget: %g bits/weight x %lld weights overflows 64 bits", spec->avg_bits,
                      (long long)w);
            *budget_bits = (int64_t)b;
            return MPQ_OK;
        }
        case MPQ_BUDGET_BYTES:
            MPQ_CHECK(spec->amount >= 0, MPQ_ERR_CONFIG, "budget: negative size %lld bytes",
                      (long long)spec->amount);
            MPQ_CALL(mpq_mul64(ctx, spec->amount, 8, "budget: bytes to bits", budget_bits));
            return MPQ_OK;
        case MPQ_BUDGET_BITS:
            MPQ_CHECK(spec->amount >= 0, MPQ_ERR_CONFIG, "budget: negative size %lld bits",
                      (long long)spec->amount);
            *budget_bits = spec->amount;
            return MPQ_OK;
    }
    return MPQ_ERROR(MPQ_ERR_ARG, "budget: unknown budget kind %d", (int)spec->kind);
}

/* ---- workspace ------------------------------------------------------------ */

/* One hull step of an active layer: moving from hull vertex i+1 down to
 * vertex i saves dc bits and adds rho * dc score. */
typedef struct budget_step {
    double rho; /* score added per bit saved (> 0) */
    int64_t a;  /* active layer */
    int32_t i;  /* index of the cheaper hull vertex */
} budget_step;

typedef struct budget_ws {
    int64_t na;      /* active (not excluded) layers */
    int64_t *act;    /* [na] problem layer of each active layer */
    int64_t *po;     /* [na+1] offsets of the Pareto lists */
    int64_t *pc;     /* [po[na]] cost in bits, rising within a layer */
    double *ps;      /* [po[na]] score, strictly falling within a layer */
    int32_t *pk;     /* [po[na]] candidate index in the problem */
    int64_t *ho;     /* [na+1] offsets of the hulls */
    int32_t *hv;     /* [ho[na]] hull vertex -> index within the layer's Pareto list */
    budget_step *st; /* [nsteps] */
    int64_t nsteps;
    int64_t cmin, cmax; /* smallest and largest achievable total bits */
} budget_ws;

static void ws_free(budget_ws *w) {
    mpq_free(w->act);
    mpq_free(w->po);
    mpq_free(w->pc);
    mpq_free(w->ps);
    mpq_free(w->pk);
    mpq_free(w->ho);
    mpq_free(w->hv);
    mpq_free(w->st);
    memset(w, 0, sizeof *w);
}

static int step_cmp(const void *x, const void *y) {
    const budget_step *a = x, *b = y;
    if (a->rho != b->rho)
        return a->rho < b->rho ? -1 : 1;
    if (a->a != b->a)
        return a->a < b->a ? -1 : 1;
    return a->i > b->i ? -1 : (a->i < b->i);
}

/* Builds the Pareto lists, hulls and sorted hull steps of p. Local. */
static mpq_err ws_build(mpq_ctx *ctx, const mpq_budget_problem *p, budget_ws *w) {
    memset(w, 0, sizeof *w);
    mpq_err err = MPQ_OK;
    int32_t *idx = NULL;
    int64_t na = 0, ncand = 0;
    for (int64_t l = 0; l < p->n_layers; l++) {
        if (p->excluded[l])
            continue;
        MPQ_CHECK(p->n_cand[l] > 0, MPQ_ERR_ARG,
                  "budget: layer %lld has no candidates (set it or exclude it)", (long long)l);
        na++;
        ncand += p->pinned[l] >= 0 ? 1 : p->n_cand[l];
    }
    w->na = na;
    MPQ_ALLOC_TRY(w->act, na);
    MPQ_ALLOC_TRY(w->po, na + 1);
    MPQ_ALLOC_TRY(w->pc, ncand);
    MPQ_ALLOC_TRY(w->ps, ncand);
    MPQ_ALLOC_TRY(w->pk, ncand);
    MPQ_ALLOC_TRY(w->ho, na + 1);
    MPQ_ALLOC_TRY(w->hv, ncand);
    MPQ_ALLOC_TRY(w->st, ncand);
    MPQ_ALLOC_TRY(idx, p->max_cand);

    int64_t a = 0, np = 0, nh = 0;
    for (int64_t l = 0; l < p->n_layers; l++) {
        if (p->excluded[l])
            continue;
        const int64_t *c = p->bits + l * p->max_cand;
        const double *s = p->score + l * p->max_cand;
        int32_t k = 0, kmax = 0;
        if (p->pinned[l] >= 0) {
            idx[k++] = p->pinned[l];
        } else {
            for (int32_t j = 0; j < p->n_cand[l]; j++)
                idx[k++] = j;
        }
        for (int32_t j = 0; j < k; j++)
            if (c[idx[j]] > c[idx[kmax]])
                kmax = j;
        MPQ_TRY(mpq_add64(ctx, w->cmax, c[idx[kmax]], "budget: largest total bits", &w->cmax));
        /* Insertion sort by (cost, score, index): k is small. */
        for (int32_t j = 1; j < k; j++) {
            int32_t v = idx[j], q = j;
            while (q > 0 &&
                   (c[idx[q - 1]] > c[v] ||
                    (c[idx[q - 1]] == c[v] &&
                     (s[idx[q - 1]] > s[v] || (s[idx[q - 1]] == s[v] && idx[q - 1] > v))))) {
                idx[q] = idx[q - 1];
                q--;
            }
            idx[q] = v;
        }
        w->act[a] = l;
        w->po[a] = np;
        w->cmin += c[idx[0]]; /* <= cmax, which did not overflow */
        for (int32_t j = 0; j < k; j++) {
            if (np > w->po[a] && s[idx[j]] >= w->ps[np - 1])
                continue; /* dominated: costs no less and scores no better */
            w->pc[np] = c[idx[j]];
            w->ps[np] = s[idx[j]];
            w->pk[np] = idx[j];
            np++;
        }
        /* Lower convex hull of the Pareto list (monotone chain). */
        int64_t h0 = nh;
        w->ho[a] = h0;
        for (int64_t q = w->po[a]; q < np; q++) {
            while (nh - h0 >= 2) {
                int64_t u = w->po[a] + w->hv[nh - 2], v = w->po[a] + w->hv[nh - 1];
                double cross = (double)(w->pc[v] - w->pc[u]) * (w->ps[q] - w->ps[u]) -
                               (w->ps[v] - w->ps[u]) * (double)(w->pc[q] - w->pc[u]);
                if (cross > 0.0)
                    break;
                nh--;
            }
            w->hv[nh++] = (int32_t)(q - w->po[a]);
        }
        for (int64_t i = h0; i + 1 < nh; i++) {
            int64_t u = w->po[a] + w->hv[i], v = w->po[a] + w->hv[i + 1];
            budget_step *t = &w->st[w->nsteps++];
            t->rho = (w->ps[u] - w->ps[v]) / (double)(w->pc[v] - w->pc[u]);
            t->a = a;
            t->i = (int32_t)(i - h0);
        }
        a++;
    }
    w->po[na] = np;
    w->ho[na] = nh;
    if (w->nsteps > 1)
        qsort(w->st, (size_t)w->nsteps, sizeof *w->st, step_cmp);
    mpq_free(idx);
    return MPQ_OK;
cleanup:
    mpq_free(idx);
    ws_free(w);
    return err;
}

/* Maximises the Lagrangian dual for budget B (B >= w->cmin or not: the walk
 * simply ends at the cheapest hull vertices). On return pos[a] is the Pareto
 * index (within layer a) of the largest-lambda argmin, i.e. all hull steps
 * with rho <= lambda taken: feasible when B >= cmin. */
static void ws_lagrange(const budget_ws *w, int64_t B, double *lambda, double *bound,
                        int32_t *pos) {
    int64_t C = 0;
    int32_t *hpos = pos; /* hull positions first, translated at the end */
    for (int64_t a = 0; a < w->na; a++) {
        hpos[a] = (int32_t)(w->ho[a + 1] - w->ho[a] - 1);
        C += w->pc[w->po[a] + w->hv[w->ho[a] + hpos[a]]];
    }
    double lam = 0.0;
    if (C > B) {
        int64_t t = 0;
        for (; t < w->nsteps; t++) {
            const budget_step *st = &w->st[t];
            if (st->i < hpos[st->a]) {
                const int64_t base = w->po[st->a], hb = w->ho[st->a];
                C -= w->pc[base + w->hv[hb + hpos[st->a]]] - w->pc[base + w->hv[hb + st->i]];
                hpos[st->a] = st->i;
            }
            if (C <= B) {
                lam = st->rho;
                break;
            }
        }
        /* Steps tied with lambda belong to the same argmin set: take them so
         * the configuration is the cheapest argmin. */
        for (t = t + 1; t < w->nsteps && w->st[t].rho <= lam; t++)
            if (w->st[t].i < hpos[w->st[t].a])
                hpos[w->st[t].a] = w->st[t].i;
        if (C > B && w->nsteps > 0)
            lam = w->st[w->nsteps - 1].rho;
    }
    double g = 0.0;
    for (int64_t a = 0; a < w->na; a++) {
        double m = INFINITY;
        for (int64_t q = w->po[a]; q < w->po[a + 1]; q++) {
            double v = w->ps[q] + lam * (double)w->pc[q];
            if (v < m)
                m = v;
        }
        g += m;
        pos[a] = w->hv[w->ho[a] + hpos[a]];
    }
    *lambda = lam;
    *bound = g - lam * (double)B;
}

mpq_err mpq_budget_lagrangian(mpq_ctx *ctx, const mpq_budget_problem *p, int64_t budget_bits,
                              double *bound, double *lambda) {
    budget_ws w;
    int32_t *pos = NULL;
    double lam = 0.0;
    MPQ_CALL(ws_build(ctx, p, &w));
    mpq_err err = MPQ_OK;
    MPQ_ENSURE(w.cmin <= budget_bits, MPQ_ERR_CONFIG,
               "budget: %lld bits is below the smallest achievable size of %lld bits "
               "(the Lagrangian dual is unbounded)",
               (long long)budget_bits, (long long)w.cmin);
    MPQ_ALLOC_TRY(pos, w.na);
    ws_lagrange(&w, budget_bits, &lam, bound, pos);
    if (lambda)
        *lambda = lam;
cleanup:
    mpq_free(pos);
    ws_free(&w);
    return err;
}

/* ---- incumbent ------------------------------------------------------------ */

typedef struct budget_move {
    double gain;
    int64_t a;
    int32_t to;
} budget_move;

static int move_cmp(const void *x, const void *y) {
    const budget_move *a = x, *b = y;
    if (a->gain != b->gain)
        return a->gain > b->gain ? -1 : 1;
    return a->a < b->a ? -1 : (a->a > b->a);
}

/* Greedy fill: spends the unused bits B - C on the upgrades with the largest
 * score reduction that still fit. A few passes; the result only has to be
 * good, not optimal (it seeds the pruning). */
static mpq_err improve_incumbent(mpq_ctx *ctx, const budget_ws *w, int64_t B, int32_t *pos) {
    budget_move *mv = NULL;
    MPQ_ALLOC(mv, w->na);
    int64_t C = 0;
    for (int64_t a = 0; a < w->na; a++)
        C += w->pc[w->po[a] + pos[a]];
    for (int pass = 0; pass < 4 && C < B; pass++) {
        int64_t n = 0;
        for (int64_t a = 0; a < w->na; a++) {
            const int64_t base = w->po[a], cur = base + pos[a];
            int64_t best = -1;
            for (int64_t q = cur + 1; q < w->po[a + 1] && w->pc[q] - w->pc[cur] <= B - C; q++)
                best = q;
            if (best >= 0)
                mv[n++] = (budget_move){w->ps[cur] - w->ps[best], a, (int32_t)(best - base)};
        }
        if (n == 0)
            break;
        qsort(mv, (size_t)n, sizeof *mv, move_cmp);
        for (int64_t j = 0; j < n; j++) {
            const int64_t base = w->po[mv[j].a], cur = base + pos[mv[j].a];
            /* Largest upgrade of this layer that still fits. */
            int64_t best = -1;
            for (int64_t q = cur + 1; q <= base + mv[j].to && w->pc[q] - w->pc[cur] <= B - C; q++)
                best = q;
            if (best < 0)
                continue;
            C += w->pc[best] - w->pc[cur];
            pos[mv[j].a] = (int32_t)(best - base);
        }
    }
    mpq_free(mv);
    return MPQ_OK;
}

/* ---- frontier DP ---------------------------------------------------------- */

/* Growable arrays recording, for every kept state of every core stage, its
 * parent state in the previous stage and the survivor it chose. */
typedef struct budget_trail {
    int32_t *parent;
    uint16_t *sub;
    int64_t n, cap;
} budget_trail;

static mpq_err trail_push(mpq_ctx *ctx, budget_trail *t, int64_t parent, int32_t sub) {
    if (t->n == t->cap) {
        int64_t cap = t->cap ? 2 * t->cap : 4096;
        MPQ_CALL(mpq_realloc(ctx, t->n, cap, sizeof *t->parent, (void **)&t->parent));
        MPQ_CALL(mpq_realloc(ctx, t->n, cap, sizeof *t->sub, (void **)&t->sub));
        t->cap = cap;
    }
    t->parent[t->n] = (int32_t)parent;
    t->sub[t->n] = (uint16_t)sub;
    t->n++;
    return MPQ_OK;
}

/* ---- solve ---------------------------------------------------------------- */

/* The reduced problem for one threshold T: candidates with reduced cost
 * r <= T (+tol) survive; layers with one survivor are fixed; the frontier DP
 * runs over the rest, dropping states whose bound exceeds LB + T. */
typedef struct budget_dp {
    const budget_ws *w;
    int64_t B;
    double lam, tol;
    double *m;                /* [na] min_k (s + lam c) */
    double *rr;               /* [po[na]] reduced cost of the survivors */
    int64_t *surv;            /* [po[na]] survivors: Pareto index within the layer */
    int64_t *so;              /* [na+1] offsets of the survivors */
    int32_t *core;            /* [na] core layers in processing order */
    int64_t *sufmin, *sufmax; /* [na+1] cheapest/dearest survivor bits of core j.. */
    int64_t *stage_off;       /* [na+1] offsets of the stages in the trail */
    int64_t *head;            /* [max_cand] merge heads */
    budget_trail tr;
    int64_t ncore, max_front;
} budget_dp;

static void dp_free(budget_dp *d) {
    mpq_free(d->m);
    mpq_free(d->rr);
    mpq_free(d->surv);
    mpq_free(d->so);
    mpq_free(d->core);
    mpq_free(d->sufmin);
    mpq_free(d->sufmax);
    mpq_free(d->stage_off);
    mpq_free(d->head);
    mpq_free(d->tr.parent);
    mpq_free(d->tr.sub);
}

/* Runs the DP for threshold T. On success *found says whether a feasible
 * state survived; then pos[] holds the best one, which is optimal: every
 * feasible solution scoring below LB + T survives the prunings. */
static mpq_err dp_run(mpq_ctx *ctx, budget_dp *d, double T, int32_t *pos, int *found) {
    const budget_ws *w = d->w;
    mpq_err err = MPQ_OK;
    int64_t *fc = NULL, *nc = NULL;
    double *fs = NULL, *fr = NULL, *nsc = NULL, *nr = NULL;
    *found = 0;
    d->tr.n = 0;
    d->ncore = 0;
    int64_t nsurv = 0, base_c = 0;
    double base_r = 0.0;
    for (int64_t a = 0; a < w->na; a++) {
        d->so[a] = nsurv;
        for (int64_t q = w->po[a]; q < w->po[a + 1]; q++) {
            double r = fmax(0.0, w->ps[q] + d->lam * (double)w->pc[q] - d->m[a]);
            if (r <= T + d->tol) {
                d->rr[nsurv] = r;
                d->surv[nsurv++] = q - w->po[a];
            }
        }
        if (nsurv - d->so[a] == 1) {
            base_c += w->pc[w->po[a] + d->surv[d->so[a]]];
            base_r += d->rr[d->so[a]];
        } else {
            d->core[d->ncore++] = (int32_t)a;
        }
    }
    d->so[w->na] = nsurv;
    const int64_t ncore = d->ncore;
    d->sufmin[ncore] = d->sufmax[ncore] = 0;
    for (int64_t j = ncore - 1; j >= 0; j--) {
        int32_t a = d->core[j];
        d->sufmin[j] = d->sufmin[j + 1] + w->pc[w->po[a] + d->surv[d->so[a]]];
        d->sufmax[j] = d->sufmax[j + 1] + w->pc[w->po[a] + d->surv[d->so[a + 1] - 1]];
    }
    int64_t fn = 0;
    MPQ_ALLOC_TRY(fc, 1);
    MPQ_ALLOC_TRY(fs, 1);
    MPQ_ALLOC_TRY(fr, 1);
    if (base_c + d->sufmin[0] <= d->B)
        fn = 1; /* the empty core: 0 bits, score 0, reduced cost 0 */
    d->max_front = fn;
    for (int64_t j = 0; j < ncore && fn > 0; j++) {
        const int32_t a = d->core[j];
        const int64_t k = d->so[a + 1] - d->so[a];
        const int64_t *sv = d->surv + d->so[a];
        const double *sr = d->rr + d->so[a];
        const int64_t limit = d->B - base_c - d->sufmin[j + 1]; /* max core bits now */
        const int64_t rest_max = base_c + d->sufmax[j + 1];
        int64_t cap = 0;
        MPQ_TRY(mpq_mul64(ctx, fn, k, "budget: frontier size", &cap));
        MPQ_ENSURE(cap < INT32_MAX, MPQ_ERR_NOMEM,
                   "budget: the Pareto frontier grew beyond %d states at layer %lld", INT32_MAX,
                   (long long)w->act[a]);
        MPQ_ALLOC_TRY(nc, cap);
        MPQ_ALLOC_TRY(nsc, cap);
        MPQ_ALLOC_TRY(nr, cap);
        d->stage_off[j] = d->tr.n;
        for (int64_t t = 0; t < k; t++)
            d->head[t] = 0;
        int64_t nn = 0;
        double last = INFINITY;
        for (;;) {
            /* Stream t is the frontier shifted by survivor t: merge by
             * (bits, score), keeping strictly falling scores. */
            int64_t bt = -1, bc = 0;
            double bs = 0.0;
            for (int64_t t = 0; t < k; t++) {
                if (d->head[t] >= fn)
                    continue;
                int64_t q = w->po[a] + sv[t];
                int64_t c = fc[d->head[t]] + w->pc[q];
                double s = fs[d->head[t]] + w->ps[q];
                if (c > limit) {
                    d->head[t] = fn; /* the stream rises in bits: nothing more fits */
                    continue;
                }
                if (bt < 0 || c < bc || (c == bc && s < bs)) {
                    bt = t;
                    bc = c;
                    bs = s;
                }
            }
            if (bt < 0)
                break;
            int64_t parent = d->head[bt]++;
            if (!(bs < last))
                continue; /* dominated by a kept state with no more bits */
            double r = fr[parent] + sr[bt];
            int64_t unused = d->B - bc - rest_max; /* bits that must stay unused */
            double bound = base_r + r + (unused > 0 ? d->lam * (double)unused : 0.0);
            if (bound > T + d->tol)
                continue;
            nc[nn] = bc;
            nsc[nn] = bs;
            nr[nn] = r;
            MPQ_TRY(trail_push(ctx, &d->tr, parent, (int32_t)bt));
            nn++;
            last = bs;
        }
        mpq_free(fc);
        mpq_free(fs);
        mpq_free(fr);
        fc = nc;
        fs = nsc;
        fr = nr;
        nc = NULL;
        nsc = NULL;
        nr = NULL;
        fn = nn;
        if (fn > d->max_front)
            d->max_front = fn;
    }
    if (fn > 0) {
        /* States are sorted by bits with falling scores: the last is best. */
        *found = 1;
        for (int64_t a = 0; a < w->na; a++)
            if (d->so[a + 1] - d->so[a] == 1)
                pos[a] = (int32_t)d->surv[d->so[a]];
        int64_t i = fn - 1;
        for (int64_t j = ncore - 1; j >= 0; j--) {
            int32_t a = d->core[j];
            int64_t e = d->stage_off[j] + i;
            pos[a] = (int32_t)d->surv[d->so[a] + d->tr.sub[e]];
            i = d->tr.parent[e];
        }
    }
cleanup:
    mpq_free(fc);
    mpq_free(fs);
    mpq_free(fr);
    mpq_free(nc);
    mpq_free(nsc);
    mpq_free(nr);
    return err;
}

static void fmt_size(char *buf, size_t len, int64_t bits, int64_t weights) {
    long long bytes = (long long)((bits + 7) / 8);
    if (weights > 0)
        snprintf(buf, len, "%.6f bits/weight (%lld bytes)", (double)bits / (double)weights, bytes);
    else
        snprintf(buf, len, "%lld bytes", bytes);
}

mpq_err mpq_budget_solve(mpq_ctx *ctx, const mpq_budget_problem *p, const mpq_budget_spec *spec,
                         mpq_budget_result **out) {
    *out = NULL;
    mpq_err err = MPQ_OK;
    budget_ws w;
    memset(&w, 0, sizeof w);
    budget_dp d;
    memset(&d, 0, sizeof d);
    mpq_budget_result *res = NULL;
    int32_t *pos = NULL, *best = NULL;

    int64_t B = 0;
    MPQ_TRY(mpq_budget_bits(ctx, p, spec, &B));
    MPQ_TRY(ws_build(ctx, p, &w));
    const int64_t W = total_weights(p);
    if (w.cmin > B) {
        char sb[96], smin[96], smax[96];
        fmt_size(sb, sizeof sb, B, W);
        fmt_size(smin, sizeof smin, w.cmin, W);
        fmt_size(smax, sizeof smax, w.cmax, W);
        MPQ_ENSURE(0, MPQ_ERR_CONFIG,
                   "budget: a budget of %lld bits = %s is infeasible for the %lld quantized "
                   "layers: the smallest achievable size is %s, the largest is %s",
                   (long long)B, sb, (long long)w.na, smin, smax);
    }

    MPQ_ALLOC_TRY(res, 1);
    res->n_layers = p->n_layers;
    MPQ_ALLOC_TRY(res->choice, p->n_layers);
    MPQ_ALLOC_TRY(pos, w.na);
    MPQ_ALLOC_TRY(best, w.na);

    /* Steps 2-3: bound and incumbent. */
    double lam = 0.0, lb = 0.0;
    ws_lagrange(&w, B, &lam, &lb, best);
    MPQ_TRY(improve_incumbent(ctx, &w, B, best));
    double ub = 0.0, scale = 1.0;
    for (int64_t a = 0; a < w.na; a++) {
        ub += w.ps[w.po[a] + best[a]];
        scale += w.ps[w.po[a] + best[a]] + lam * (double)w.pc[w.po[a + 1] - 1];
    }
    const double gap = ub - lb;

    /* Steps 4-5 with iterative deepening of the threshold T: the DP for T
     * finds the optimum whenever the optimum scores at most LB + T, and
     * otherwise finds nothing; T grows by 8x up to the full gap UB - LB, for
     * which the incumbent itself qualifies. Small T keeps the core small. */
    d.w = &w;
    d.B = B;
    d.lam = lam;
    d.tol = 1e-9 * scale; /* slack for rounding in the prunings */
    MPQ_ALLOC_TRY(d.m, w.na);
    MPQ_ALLOC_TRY(d.rr, w.po[w.na]);
    MPQ_ALLOC_TRY(d.surv, w.po[w.na]);
    MPQ_ALLOC_TRY(d.so, w.na + 1);
    MPQ_ALLOC_TRY(d.core, w.na);
    MPQ_ALLOC_TRY(d.sufmin, w.na + 1);
    MPQ_ALLOC_TRY(d.sufmax, w.na + 1);
    MPQ_ALLOC_TRY(d.stage_off, w.na + 1);
    MPQ_ALLOC_TRY(d.head, p->max_cand);
    for (int64_t a = 0; a < w.na; a++) {
        d.m[a] = INFINITY;
        for (int64_t q = w.po[a]; q < w.po[a + 1]; q++)
            d.m[a] = fmin(d.m[a], w.ps[q] + lam * (double)w.pc[q]);
    }
    int rounds = 0, found = 0;
    for (double T = gap / 4096.0;; T *= 8.0) {
        if (T > gap)
            T = gap;
        rounds++;
        MPQ_TRY(dp_run(ctx, &d, T, pos, &found));
        if (found || T >= gap)
            break;
    }
    if (found) {
        double s = 0.0;
        for (int64_t a = 0; a < w.na; a++)
            s += w.ps[w.po[a] + pos[a]];
        if (s < ub)
            memcpy(best, pos, (size_t)w.na * sizeof *pos);
    }

    for (int64_t l = 0; l < p->n_layers; l++)
        res->choice[l] = -1;
    for (int64_t a = 0; a < w.na; a++)
        res->choice[w.act[a]] = w.pk[w.po[a] + best[a]];
    /* Objective and bits recomputed from the problem in layer order. */
    for (int64_t l = 0; l < p->n_layers; l++) {
        if (res->choice[l] < 0)
            continue;
        res->objective += p->score[l * p->max_cand + res->choice[l]];
        res->bits_used += p->bits[l * p->max_cand + res->choice[l]];
    }
    MPQ_ENSURE(res->bits_used <= B, MPQ_ERR_INTERNAL,
               "budget: solution uses %lld bits over the budget of %lld", (long long)res->bits_used,
               (long long)B);
    res->budget_bits = B;
    res->n_weights = W;
    res->avg_bits = W > 0 ? (double)res->bits_used / (double)W : 0.0;
    res->lower_bound = lb;
    res->lambda = lam;
    res->gap = res->objective - lb;
    res->rel_gap = res->gap > 0.0 ? res->gap / fmax(res->objective, 1e-300) : 0.0;
    res->core_layers = d.ncore;
    res->max_frontier = d.max_front;
    MPQ_DEBUG("budget: %lld layers (%lld core), frontier <= %lld, %d rounds, objective %.12g, "
              "incumbent %.12g, bound %.12g, gap %.3g",
              (long long)w.na, (long long)d.ncore, (long long)d.max_front, rounds, res->objective,
              ub, lb, res->gap);
    *out = res;
    res = NULL;
cleanup:
    mpq_budget_result_destroy(&res);
    ws_free(&w);
    dp_free(&d);
    mpq_free(pos);
    mpq_free(best);
    return err;
}

void mpq_budget_result_destroy(mpq_budget_result **r) {
    if (!r || !*r)
        return;
    mpq_free((*r)->choice);
    mpq_free(*r);
    *r = NULL;
}

/* ---- broadcast ------------------------------------------------------------ */

/* Wire format: the scalar fields in a fixed struct, then choice[n_layers]. */
typedef struct budget_wire {
    int64_t n_layers, bits_used, budget_bits, n_weights, core_layers, max_frontier;
    double objective, avg_bits, lower_bound, lambda, gap, rel_gap;
} budget_wire;

mpq_err mpq_budget_bcast(mpq_ctx *ctx, mpq_budget_result **res) {
    mpq_err err = MPQ_OK;
    char *buf = NULL;
    int64_t len = 0;
    mpq_budget_result *r = NULL;
    const int parallel = ctx->comm != MPI_COMM_NULL && ctx->size > 1;
    /* Phase 1: rank 0 packs its result; everyone agrees it could. */
    if (ctx->rank == 0) {
        if (!*res) {
            err = MPQ_ERROR(MPQ_ERR_ARG, "budget broadcast: rank 0 has no solved assignment");
        } else if (parallel) {
            const mpq_budget_result *s = *res;
            budget_wire h = {s->n_layers,    s->bits_used,    s->budget_bits, s->n_weights,
                             s->core_layers, s->max_frontier, s->objective,   s->avg_bits,
                             s->lower_bound, s->lambda,       s->gap,         s->rel_gap};
            len = (int64_t)sizeof h + s->n_layers * (int64_t)sizeof *s->choice;
            err = mpq_malloc(ctx, len, 1, (void **)&buf);
            if (err == MPQ_OK) {
                memcpy(buf, &h, sizeof h);
                memcpy(buf + sizeof h, s->choice, (size_t)s->n_layers * sizeof *s->choice);
            }
        }
    } else if (*res) {
        err =
            MPQ_ERROR(MPQ_ERR_ARG, "budget broadcast: rank %d must pass a NULL result", ctx->rank);
    }
    MPQ_TRY(mpq_agree(ctx, err));
    if (!parallel)
        goto cleanup;
    /* Phase 2: move the bytes (agrees on the receive buffers itself). */
    MPQ_TRY(mpq_bcast_bytes(ctx, 0, &buf, &len));
    /* Phase 3: unpack, then agree once more so no rank returns success
     * while another failed. */
    if (ctx->rank != 0) {
        budget_wire h;
        memset(&h, 0, sizeof h);
        if (len >= (int64_t)sizeof h)
            memcpy(&h, buf, sizeof h);
        if (len < (int64_t)sizeof h ||
            len != (int64_t)sizeof h + h.n_layers * (int64_t)sizeof *r->choice)
            err = MPQ_ERROR(MPQ_ERR_INTERNAL,
                            "budget broadcast: message of %lld bytes is "
                            "malformed",
                            (long long)len);
        if (err == MPQ_OK)
            err = mpq_malloc(ctx, 1, sizeof *r, (void **)&r);
        if (err == MPQ_OK)
            err = mpq_malloc(ctx, h.n_layers, sizeof *r->choice, (void **)&r->choice);
        if (err == MPQ_OK) {
            memcpy(r->choice, buf + sizeof h, (size_t)h.n_layers * sizeof *r->choice);
            r->n_layers = h.n_layers;
            r->bits_used = h.bits_used;
            r->budget_bits = h.budget_bits;
            r->n_weights = h.n_weights;
            r->core_layers = h.core_layers;
            r->max_frontier = h.max_frontier;
            r->objective = h.objective;
            r->avg_bits = h.avg_bits;
            r->lower_bound = h.lower_bound;
            r->lambda = h.lambda;
            r->gap = h.gap;
            r->rel_gap = h.rel_gap;
        }
    }
    MPQ_TRY(mpq_agree(ctx, err));
    if (ctx->rank != 0) {
        *res = r;
        r = NULL;
    }
cleanup:
    mpq_free(buf);
    mpq_budget_result_destroy(&r);
    return err;
}
