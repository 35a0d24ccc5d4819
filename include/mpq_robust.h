/* mpq_robust.h: numerical fault checks shared by the stages: NaN/Inf in
 * weights or activations (named by layer, with a configurable policy), and
 * calibration sets too small for a layer.
 *
 * Policy (configuration key robust.nonfinite):
 *   "error" (default): a non-finite value is an MPQ_ERR_NUMERIC error naming
 *                      the layer, the first bad element [row][col], its value
 *                      and how many there are;
 *   "skip":            the same finding is a warning and the caller keeps
 *                      the layer in full precision (*skip = 1).
 * Everything here is local. Warnings are printed by rank 0 (mpq_log), so
 * call the policy check on every rank with the same data (model weights
 * are mapped on every rank) so that every rank takes the same skip
 * decision; rank-local data (activations of a rank's samples) should use
 * the error policy and agree (mpq_agree) before the next collective.
 */
#ifndef MPQ_ROBUST_H
#define MPQ_ROBUST_H

#include <stdint.h>

#include "mpq_err.h"
#include "mpq_registry.h"

struct mpq_ctx;

typedef enum mpq_nonfinite_policy {
    MPQ_NONFINITE_ERROR = 0,
    MPQ_NONFINITE_SKIP,
} mpq_nonfinite_policy;

/* The policies (robust.nonfinite), index = mpq_nonfinite_policy: error,
 * skip. */
extern const mpq_registry mpq_nonfinite_policy_reg;

/* Local. "error" | "skip" -> policy; anything else is MPQ_ERR_CONFIG naming
 * the key robust.nonfinite and listing the policies. */
mpq_err mpq_nonfinite_policy_parse(struct mpq_ctx *ctx, const char *name,
                                   mpq_nonfinite_policy *out);

/* Local. Counts the NaN/Inf values of w [n] (treated as [n / cols][cols]
 * when cols > 0, for the position in messages; cols <= 0: flat index).
 * *nbad (may be NULL) receives the count. Returns MPQ_ERR_NUMERIC when
 * there is any, with the message
 *   "<what>: 3 non-finite values in 64 x 172 (first: NaN at [5][17])".
 * `what` names the layer and the data ("layer model.layers.0.mlp.up_proj.weight
 * (weights)"). */
mpq_err mpq_check_finite(struct mpq_ctx *ctx, const float *w, int64_t n, int64_t cols,
                         const char *what, int64_t *nbad);

/* Local. mpq_check_finite under a policy: finite data gives MPQ_OK with
 * *skip = 0; non-finite data gives the error (policy error) or a warning
 * "<message>; robust.nonfinite = skip: the layer stays in full precision"
 * and MPQ_OK with *skip = 1 (policy skip). */
mpq_err mpq_check_finite_policy(struct mpq_ctx *ctx, mpq_nonfinite_policy policy, const float *w,
                                int64_t n, int64_t cols, const char *what, int *skip);

/* Local. A calibration set gives `rows` input vectors (tokens or patches)
 * to a layer whose input has `width` channels; rows < width makes H rank
 * deficient (damping keeps the factorisation possible, but the rounding
 * has little to go on). Logs a warning naming the layer and returns 1 in
 * that case, else returns 0. Never fails. */
int mpq_check_calibration_rows(struct mpq_ctx *ctx, const char *layer, int64_t rows, int64_t width);

#endif
