/* round_internal.h: helpers shared by the rounding methods in stages/round. */
#ifndef MPQ_ROUND_INTERNAL_H
#define MPQ_ROUND_INTERNAL_H

#include <stdint.h>

#include "mpq_round.h"

/* Effective settings of the learned-rounding engine after resolving AUTO. */
typedef struct mpq_learn_cfg {
    mpq_rvar variable;
    mpq_ropt optimizer;
    int learn_scales;
    double lr, lr_scale;
    double mmin, mmax; /* range of the scale multiplier */
} mpq_learn_cfg;

/* Adds GPTQ's settings (block_size, act_order, static_groups, damping) to
 * out (a cJSON object); used by gptq and by the learned methods started
 * from GPTQ. */
void mpq_round_gptq_settings(const mpq_round_opts *o, struct cJSON *out);

/* Local. 1 when the layer's factor is computed once over the process grid
 * (ScaLAPACK: the method needs a factor, ctx has a communicator and
 * hessian.scalapack / scalapack_min_width choose it for this width). The
 * same answer on every rank. */
/* The damping of a factor: relative (hessian.damping after retries) and
 * the absolute value added to H's diagonal (dead channels get 1 first),
 * and the factor's precision. */
typedef struct mpq_round_damp {
    double damping, lambda;
    int single; /* 1: the factor was computed in float32 */
} mpq_round_damp;

int mpq_round_shared_factor(struct mpq_ctx *ctx, const mpq_round_opts *o,
                            const struct mpq_round_method *method, int64_t cols);
/* 1 when mpq_round_factor_shared is local: one owner and hessian.scalapack
 * auto (a 1 x 1 grid runs at about 0.6 of LAPACK's speed, bench_hessian). */
int mpq_round_factor_local(const mpq_round_opts *o, const mpq_hset *set);
/* 1 when GPTQ with these options works through V (Hd = V V^T, one
 * Cholesky) for spec on a layer of cols columns; 0 when it needs U (Hd^-1
 * = U^T U, a Cholesky and a triangular inverse): groups fitted when the
 * sweep reaches them, whose fit reads the weights as GPTQ has updated them
 * so far, in double, or in float32 with act_order (round_gptq.c). */
int mpq_round_gptq_vform(const mpq_round_opts *o, const mpq_qspec *spec, int64_t cols);
/* Collective, or local to its one owner (mpq_round_factor_local). GPTQ's
 * factor for the damped H in the problem's column order (act_order): V
 * upper with Hd = V V^T (MPQ_HF_RCHOL) when vform, else U upper with
 * Hd^-1 = U^T U (MPQ_HF_INV_CHOL); computed once by the ranks of set (the
 * layer's owners, each holding H) with the backend the options choose
 * (mpq_hfactor_compute_set: ScaLAPACK on a grid of those ranks; LAPACK when
 * local): *V [cols][cols] on the ranks of set (owner: caller, mpq_free; NULL
 * elsewhere), float32 when damp->single (a local LAPACK factor whose
 * probe passed, hfactor.c), else double; *damp the damping finally used
 * (every rank of a collective call; the owner of a local one). */
mpq_err mpq_round_factor_shared(struct mpq_ctx *ctx, const mpq_round_opts *o, const char *name,
                                int64_t cols, const double *H, const mpq_hset *set, int vform,
                                void **V, mpq_round_damp *damp);
/* Local. mpq_round_problem_create with an optional factor from
 * mpq_round_factor_shared (copied, of the form mpq_round_gptq_vform gives
 * for spec; NULL: factored here with LAPACK) and
 * an optional diagonal diag [cols] of H (NULL: read from H). Without a
 * method (the whole-layer fit alone) H may be NULL when diag is given. */
mpq_err mpq_round_problem_create_ex(struct mpq_ctx *ctx, const mpq_round_opts *o,
                                    const struct mpq_round_method *method, const char *name,
                                    const mpq_qspec *spec, int64_t rows, int64_t cols,
                                    const float *W, const double *H, const double *diag,
                                    const void *V, mpq_round_damp damp, mpq_round_problem **out);
/* Fits the parameters of rows [r0, r1) of p on W (whole-layer copy from
 * pb->base for tensor-level specs). Local. */
mpq_err mpq_round_fit_rows(struct mpq_ctx *ctx, const mpq_round_problem *pb, mpq_qparams *p,
                           int64_t r0, int64_t r1);

/* Refits, for rows [r0, r1), the group starting at column c0 with len
 * columns from w [(r1 - r0)][len] (current weights of those columns).
 * tmp caches a temporary parameter object of that width (created on first
 * use, replaced when the width changes). Local. */
mpq_err mpq_round_refit_group(struct mpq_ctx *ctx, const mpq_round_problem *pb, mpq_qparams *p,
                              int64_t r0, int64_t r1, int64_t c0, int64_t len, const float *w,
                              mpq_qparams **tmp);

/* Per-row losses of D [nr][cols] (double, W - Q) with scratch T [nr][cols]. */
mpq_err mpq_round_loss_d(struct mpq_ctx *ctx, int64_t cols, const double *H, int64_t nr,
                         const double *D, double *T, double *loss);

/* Rate-aware GPTQ (round.rate_lambda): pb->rate_len from the histogram of
 * the RTN codes of the whole layer (every row fitted as mpq_round_tile
 * fits it), Laplace-smoothed over the codes in use. Local; the same on
 * every rank. */
mpq_err mpq_round_rate_lengths(struct mpq_ctx *ctx, mpq_round_problem *pb);
/* The weight of a bit at weight (r, c) of p in loss units: pb->rate_unit
 * x the squared mean step of the grid of its group (its scale times the
 * span of the levels over n - 1), i.e. the mean error of nearest rounding
 * through GPTQ's factor, mean_j V_jj^2 x step^2 / 12. */
static inline double mpq_round_rate_weight(const mpq_round_problem *pb, const mpq_qparams *p,
                                           int64_t r, int64_t c) {
    const mpq_qtable *t = mpq_qtable_of(p, r);
    if (t->n < 2)
        return 0.0;
    const double step = (double)mpq_qscale_of(p, mpq_qgroup_of(p, r, c)) *
                        ((double)t->sorted[t->n - 1] - (double)t->sorted[0]) / (double)(t->n - 1);
    return pb->rate_unit * step * step;
}
/* sum_c mpq_round_rate_weight(r, c) x pb->rate_len[codes[c]] over one row
 * of codes [pb->cols] (row r of p): the row's rate term per unit lambda. */
double mpq_round_rate_cost(const mpq_round_problem *pb, const mpq_qparams *p, int64_t r,
                           const uint8_t *codes);

/* GPTQ on rows [r0, r1): codes [(r1 - r0)][cols] and, when wq is not NULL,
 * wq [(r1 - r0)][cols] the updated weight each column had when it was
 * rounded (original column order); when loss is not NULL, loss [r1 - r0]
 * the rows' losses from the errors GPTQ has (mpq_round_problem's added
 * must exist): (W - Q) V = (W - Q) U^-1 has column j (w'_j - q_j) / U[j][j]
 * = V[j][j] (w'_j - q_j), w'_j the updated weight, so (W - Q) Hd (W - Q)^T
 * is the sum of their squares, less the damping's share. With rate > 0
 * (and pb->rate_len) each weight (r, c) gets the code k minimising
 * x_k^2 + rate mpq_round_rate_weight(r, c) pb->rate_len[k], x_k its
 * column of (W - Q) V (above) with code k, over the two grid points
 * around the weight's updated value
 * (0: the nearest). Local. */
mpq_err mpq_round_gptq_rows(struct mpq_ctx *ctx, const mpq_round_opts *o,
                            const mpq_round_problem *pb, mpq_qparams *p, int64_t r0, int64_t r1,
                            double rate, uint8_t *codes, float *wq, double *loss);

/* The learned-rounding engine (adaround and signround). */
mpq_err mpq_round_learn_rows(struct mpq_ctx *ctx, const mpq_round_opts *o, const mpq_learn_cfg *lc,
                             const mpq_round_problem *pb, mpq_qparams *p, int64_t r0, int64_t r1,
                             uint8_t *codes, mpq_round_stats *st);

extern const mpq_round_method mpq_round_rtn;
extern const mpq_round_method mpq_round_gptq;
extern const mpq_round_method mpq_round_adaround;
extern const mpq_round_method mpq_round_signround;

#endif
