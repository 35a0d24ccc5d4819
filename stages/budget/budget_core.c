/* budget_core.c: the workspace (Pareto lists and lower convex hulls), the
 * Lagrangian walk, the greedy incumbent and the frontier dynamic programme
 * of the budget solver; the method is described in budget.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "budget_internal.h"

/* ---- workspace ------------------------------------------------------------ */

void budget_ws_free(budget_ws *w) {
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
mpq_err budget_ws_build(mpq_ctx *ctx, const mpq_budget_problem *p, budget_ws *w) {
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
    budget_ws_free(w);
    return err;
}

/* Maximises the Lagrangian dual for budget B (B >= w->cmin or not: the walk
 * simply ends at the cheapest hull vertices). On return pos[a] is the Pareto
 * index (within layer a) of the largest-lambda argmin, i.e. all hull steps
 * with rho <= lambda taken: feasible when B >= cmin. */
void budget_ws_lagrange(const budget_ws *w, int64_t B, double *lambda, double *bound,
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
    MPQ_CALL(budget_ws_build(ctx, p, &w));
    mpq_err err = MPQ_OK;
    MPQ_ENSURE(w.cmin <= budget_bits, MPQ_ERR_CONFIG,
               "budget: %lld bits is below the smallest achievable size of %lld bits "
               "(the Lagrangian dual is unbounded)",
               (long long)budget_bits, (long long)w.cmin);
    MPQ_ALLOC_TRY(pos, w.na);
    budget_ws_lagrange(&w, budget_bits, &lam, bound, pos);
    if (lambda)
        *lambda = lam;
cleanup:
    mpq_free(pos);
    budget_ws_free(&w);
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
mpq_err budget_improve_incumbent(mpq_ctx *ctx, const budget_ws *w, int64_t B, int32_t *pos) {
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

void budget_dp_free(budget_dp *d) {
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
mpq_err budget_dp_run(mpq_ctx *ctx, budget_dp *d, double T, int32_t *pos, int *found) {
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
