/* budget_internal.h: what the two sources of the budget solver share:
 * budget.c (problem, range, solve, broadcast) and budget_core.c (the
 * workspace of Pareto lists and hulls, the Lagrangian walk, the greedy
 * incumbent and the frontier dynamic programme). See budget.c for the
 * method. Not a public interface. */
#ifndef MPQ_BUDGET_INTERNAL_H
#define MPQ_BUDGET_INTERNAL_H

#include <stdint.h>

#include "mpq_budget.h"

#define MPQ_BUDGET_MAX_CAND 1024

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

/* Growable arrays recording, for every kept state of every core stage, its
 * parent state in the previous stage and the survivor it chose. */
typedef struct budget_trail {
    int32_t *parent;
    uint16_t *sub;
    int64_t n, cap;
} budget_trail;

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

/* Builds the workspace of the non-excluded layers of p. */
mpq_err budget_ws_build(mpq_ctx *ctx, const mpq_budget_problem *p, budget_ws *w);
void budget_ws_free(budget_ws *w);
/* The Lagrangian walk to budget B: *lambda, the bound *bound and the
 * hull position reached per active layer (pos, may be NULL). */
void budget_ws_lagrange(const budget_ws *w, int64_t B, double *lambda, double *bound, int32_t *pos);
/* Greedy improvement of the configuration pos into the bits left under B. */
mpq_err budget_improve_incumbent(mpq_ctx *ctx, const budget_ws *w, int64_t B, int32_t *pos);
/* One threshold of the iterative deepening: *found = 1 when a state
 * survives, pos then holds the best configuration. */
mpq_err budget_dp_run(mpq_ctx *ctx, budget_dp *d, double T, int32_t *pos, int *found);
void budget_dp_free(budget_dp *d);

#endif
