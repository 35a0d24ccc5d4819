/* mpq_budget.h: the mixed-precision budget solver, an exact multiple-choice
 * knapsack.
 *
 * Every quantizable layer l has K_l candidate configurations (bit-width,
 * group size, ...). Candidate k costs bits[l][k] bits in the checkpoint (codes
 * plus scales and zero-points, an exact integer) and has an error score
 * score[l][k] >= 0. The solver picks exactly one candidate per layer so that
 * the summed score is minimal and the summed bits fit the budget. Layers may
 * be pinned (their candidate is fixed but its bits count) or excluded (not
 * quantized: no candidate, no bits, no weights in the average).
 *
 * Method (see stages/budget.c): the Lagrangian dual is maximised exactly over
 * the breakpoints of the per-layer lower convex hulls; it gives the lower
 * bound and the multiplier lambda. A greedy feasible solution gives an upper
 * bound; for a threshold T (growing geometrically up to that gap)
 * candidates whose reduced cost exceeds T are dropped and the remaining
 * "core" layers are solved by a Pareto-frontier dynamic programme over exact
 * int64 bit totals with dominance and bound pruning; the first T for which a
 * feasible state survives yields the optimum. The answer is optimal, not
 * approximate.
 *
 * Everything here is local (the root calls it) except mpq_budget_bcast.
 */
#ifndef MPQ_BUDGET_H
#define MPQ_BUDGET_H

#include <stdint.h>

#include "mpq_ctx.h"

/* How the budget is given. */
typedef enum mpq_budget_kind {
    MPQ_BUDGET_AVG_BITS = 0, /* average bits per weight over the quantized layers:
                                budget_bits = floor(avg_bits * total_weights) */
    MPQ_BUDGET_BYTES = 1,    /* total bytes of the quantized layers: budget_bits = 8 * bytes */
    MPQ_BUDGET_BITS = 2      /* total bits, as given */
} mpq_budget_kind;

typedef struct mpq_budget_spec {
    mpq_budget_kind kind;
    double avg_bits; /* for MPQ_BUDGET_AVG_BITS: bits per weight (> 0) */
    int64_t amount;  /* for MPQ_BUDGET_BYTES (bytes) and MPQ_BUDGET_BITS (bits), >= 0 */
} mpq_budget_spec;

/* The problem: n_layers layers of at most max_cand candidates each. Fields
 * are public for reading; fill them through the functions below. */
typedef struct mpq_budget_problem {
    int64_t n_layers;
    int32_t max_cand;
    int64_t *n_weights; /* [n_layers] weights of each layer (for the average) */
    int32_t *n_cand;    /* [n_layers] candidates set (0: layer not set yet) */
    int64_t *bits;      /* [n_layers][max_cand] cost in bits */
    double *score;      /* [n_layers][max_cand] error score, >= 0 */
    int32_t *pinned;    /* [n_layers] fixed candidate, or -1 */
    uint8_t *excluded;  /* [n_layers] 1: not quantized */
} mpq_budget_problem;

/* The answer. Owner: the caller; release with mpq_budget_result_destroy. */
typedef struct mpq_budget_result {
    int64_t n_layers;
    int32_t *choice;      /* [n_layers] chosen candidate, -1 for excluded layers */
    double objective;     /* sum of the chosen scores */
    int64_t bits_used;    /* sum of the chosen bits */
    int64_t budget_bits;  /* the budget the solver used, in bits */
    int64_t n_weights;    /* weights of the quantized (not excluded) layers */
    double avg_bits;      /* bits_used / n_weights (0 when n_weights is 0) */
    double lower_bound;   /* Lagrangian bound: max over lambda >= 0 of
                             sum_l min_k (score + lambda*bits) - lambda*budget */
    double lambda;        /* the maximising multiplier (score units per bit) */
    double gap;           /* objective - lower_bound (>= 0 up to rounding) */
    double rel_gap;       /* gap / max(objective, tiny) */
    int64_t core_layers;  /* layers left with more than one candidate after
                             reduction (solved by the frontier DP) */
    int64_t max_frontier; /* largest Pareto frontier the DP held */
} mpq_budget_result;

/* Local. Creates an empty problem. n_layers >= 0, 1 <= max_cand <= 1024.
 * Every layer must be set (or excluded) before solving. Owner: caller. */
mpq_err mpq_budget_problem_create(mpq_ctx *ctx, int64_t n_layers, int32_t max_cand,
                                  mpq_budget_problem **out);
/* Local. NULL-safe; sets *p to NULL. */
void mpq_budget_problem_destroy(mpq_budget_problem **p);

/* Local. Sets layer l: n_weights >= 0 weights, k candidates with bits[k] >= 0
 * bits and finite scores score[k] >= 0 (copied; NULL: all 0, enough for
 * mpq_budget_check). Errors name the layer and candidate. */
mpq_err mpq_budget_set_layer(mpq_ctx *ctx, mpq_budget_problem *p, int64_t l, int64_t n_weights,
                             int32_t k, const int64_t *bits, const double *score);
/* Local. Fixes layer l to candidate k (its bits still count); k = -1 unpins. */
mpq_err mpq_budget_pin(mpq_ctx *ctx, mpq_budget_problem *p, int64_t l, int32_t k);
/* Local. Marks layer l as not quantized (excluded = 1) or quantized again (0). */
mpq_err mpq_budget_exclude(mpq_ctx *ctx, mpq_budget_problem *p, int64_t l, int excluded);

/* Local. The smallest and largest achievable totals in bits (pinned layers
 * at their pin, excluded layers not counted) and the quantized weights
 * (n_weights may be NULL): a budget below *min_bits is infeasible, which
 * is mpq_budget_solve's own test. */
mpq_err mpq_budget_range(mpq_ctx *ctx, const mpq_budget_problem *p, int64_t *min_bits,
                         int64_t *max_bits, int64_t *n_weights);
/* Local. The budget in bits for spec over problem p (validates spec). */
mpq_err mpq_budget_bits(mpq_ctx *ctx, const mpq_budget_problem *p, const mpq_budget_spec *spec,
                        int64_t *budget_bits);

/* Local. MPQ_OK when spec's budget is at least the smallest achievable
 * total of p, else mpq_budget_solve's infeasibility error. Needs the costs
 * only (scores are not read): a run checks this before measuring. */
mpq_err mpq_budget_check(mpq_ctx *ctx, const mpq_budget_problem *p, const mpq_budget_spec *spec);

/* Local. Solves p exactly under spec. An infeasible budget gives
 * MPQ_ERR_CONFIG with a message stating the smallest and the largest
 * achievable sizes (bits per weight and bytes). Owner of *out: caller. */
mpq_err mpq_budget_solve(mpq_ctx *ctx, const mpq_budget_problem *p, const mpq_budget_spec *spec,
                         mpq_budget_result **out);

/* Local. The Lagrangian lower bound alone for a budget in bits (maximised
 * exactly over the hull breakpoints); *lambda receives the maximiser (may be
 * NULL). A budget below the smallest achievable size gives
 * MPQ_ERR_CONFIG (the dual is unbounded there). */
mpq_err mpq_budget_lagrangian(mpq_ctx *ctx, const mpq_budget_problem *p, int64_t budget_bits,
                              double *bound, double *lambda);

/* Collective: rank 0's *res is broadcast to every rank. On rank 0 *res must
 * be a solved result; on the other ranks *res must be NULL and receives a new
 * result (owner: caller). If rank 0 passes NULL every rank fails with the
 * same error. */
mpq_err mpq_budget_bcast(mpq_ctx *ctx, mpq_budget_result **res);

/* Local. NULL-safe; sets *r to NULL. */
void mpq_budget_result_destroy(mpq_budget_result **r);

#endif
