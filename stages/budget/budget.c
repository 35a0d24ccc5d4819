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
#include "budget_internal.h"

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
        MPQ_CHECK(!score || (isfinite(score[j]) && score[j] >= 0.0), MPQ_ERR_NUMERIC,
                  "budget: layer %lld candidate %d has score %g (must be finite and >= 0)",
                  (long long)l, (int)j, score ? score[j] : 0.0);
    }
    int64_t off = l * p->max_cand;
    memcpy(p->bits + off, bits, (size_t)k * sizeof *bits);
    for (int32_t j = 0; j < k; j++)
        p->score[off + j] = score ? score[j] : 0.0;
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

static void fmt_size(char *buf, size_t len, int64_t bits, int64_t weights) {
    long long bytes = (long long)((bits + 7) / 8);
    if (weights > 0)
        snprintf(buf, len, "%.6f bits/weight (%lld bytes)", (double)bits / (double)weights, bytes);
    else
        snprintf(buf, len, "%lld bytes", bytes);
}

mpq_err mpq_budget_check(mpq_ctx *ctx, const mpq_budget_problem *p, const mpq_budget_spec *spec) {
    int64_t B = 0, lo = 0, hi = 0, W = 0, na = 0;
    MPQ_CALL(mpq_budget_bits(ctx, p, spec, &B));
    MPQ_CALL(mpq_budget_range(ctx, p, &lo, &hi, &W));
    if (lo <= B)
        return MPQ_OK;
    for (int64_t l = 0; l < p->n_layers; l++)
        na += !p->excluded[l];
    char sb[96], smin[96], smax[96];
    fmt_size(sb, sizeof sb, B, W);
    fmt_size(smin, sizeof smin, lo, W);
    fmt_size(smax, sizeof smax, hi, W);
    return MPQ_ERROR(MPQ_ERR_CONFIG,
                     "budget: a budget of %lld bits = %s is infeasible for the %lld quantized "
                     "layers: the smallest achievable size is %s, the largest is %s",
                     (long long)B, sb, (long long)na, smin, smax);
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
    MPQ_TRY(mpq_budget_check(ctx, p, spec));
    MPQ_TRY(mpq_budget_bits(ctx, p, spec, &B));
    MPQ_TRY(budget_ws_build(ctx, p, &w));
    const int64_t W = total_weights(p);

    MPQ_ALLOC_TRY(res, 1);
    res->n_layers = p->n_layers;
    MPQ_ALLOC_TRY(res->choice, p->n_layers);
    MPQ_ALLOC_TRY(pos, w.na);
    MPQ_ALLOC_TRY(best, w.na);

    /* Steps 2-3: bound and incumbent. */
    double lam = 0.0, lb = 0.0;
    budget_ws_lagrange(&w, B, &lam, &lb, best);
    MPQ_TRY(budget_improve_incumbent(ctx, &w, B, best));
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
        MPQ_TRY(budget_dp_run(ctx, &d, T, pos, &found));
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
    budget_ws_free(&w);
    budget_dp_free(&d);
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
