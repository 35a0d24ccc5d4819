/* mpq_importance.h: the importance stage. Measuring rounds every candidate
 * quantizer of every layer and records what it found in a table; the
 * importance estimators turn the table into the score of each (layer,
 * candidate) pair that the budget (mpq_budget.h) minimises.
 *
 * Estimators (importance.method), one entry each in one registry:
 *   error        the layer error L = tr((W-Q) H (W-Q)^T) of the candidate
 *   normalized   L / tr(W H W^T), the layer error relative to the layer's
 *                output energy (L itself where the energy is 0)
 *   sensitivity  s_l * L with s_l = KL_l / L_l(c*): KL_l is the mean KL
 *                divergence of the model's output distribution from the
 *                full-precision one when only layer l carries the codes of
 *                the probed candidate c* (mpq_importance_sensitivity); it
 *                turns a layer's output error into model-output damage,
 *                which makes layers comparable.
 * The energies come with the measurement (mpq_importance_energy, for every
 * block as it is rounded); the sensitivities need the probe, which only
 * the estimators that say so (needs_sensitivity) ask for.
 *
 * Everything is bit-identical for any number of ranks: energies are
 * ordered sums of per-layer rows, and the probe's KL sums are ordered over
 * samples.
 */
#ifndef MPQ_IMPORTANCE_H
#define MPQ_IMPORTANCE_H

#include <stdint.h>

#include "mpq_calibrate.h"
#include "mpq_ctx.h"
#include "mpq_family.h"
#include "mpq_hessian.h"
#include "mpq_quant.h"

struct mpq_config;

/* ---- the measurement table ------------------------------------------------------ */

/* What measuring found, column k of layer l at [l * ncol + k]. What a column
 * is belongs to the caller (mpquant run: its candidates, plus a pinned spec
 * that is none; mpquant sweep: its measured configurations). */
typedef struct mpq_measure_table {
    int64_t nl;     /* layers */
    int64_t ncol;   /* columns per layer */
    double *loss;   /* [nl][ncol] layer error of the rounding */
    double *rtn;    /* [nl][ncol] nearest-rounding error, same H */
    int64_t *bits;  /* [nl][ncol] exact storage bits */
    int64_t *coded; /* [nl][ncol] storage bits with zstd-coded codes, 0 where not
                     * measured (budget.count = "coded" only) */
    mpq_qlayer **q; /* [nl][ncol] measured codes (owned), NULL where not measured */
    double *energy; /* [nl] tr(W H W^T) */
    double *sens;   /* [nl] sensitivity s_l, 0 where not probed */
} mpq_measure_table;

/* Local. Allocates the table's arrays, zeroed (at least one element each). */
mpq_err mpq_measure_table_alloc(mpq_ctx *ctx, mpq_measure_table *t, int64_t nl, int64_t ncol);
/* Local. Frees the arrays and the codes and zeroes *t. Safe on a zeroed
 * table. */
void mpq_measure_table_free(mpq_measure_table *t);

/* ---- the estimators --------------------------------------------------------------- */

typedef struct mpq_importance_method {
    const char *name;      /* importance.method */
    int needs_sensitivity; /* 1: the table's sens must be probed first */
    /* Local. The score of column col of layer l (>= 0 for a sane table). */
    double (*score)(const mpq_measure_table *t, int64_t l, int64_t col);
} mpq_importance_method;

/* The registry, NULL-terminated, and its descriptor (mpq_registry.h). */
extern const mpq_importance_method *const mpq_importance_methods[];
extern const struct mpq_registry mpq_importance_reg;

/* Local. The estimator called name, or NULL. */
const mpq_importance_method *mpq_importance_find(const char *name);
/* Local. The estimator of importance.method; an unknown name is an
 * MPQ_ERR_CONFIG error naming the file. */
mpq_err mpq_importance_from_config(mpq_ctx *ctx, const struct mpq_config *cfg,
                                   const mpq_importance_method **out);

/* Local. score[l * nk + k] = m's score of column col[k] (col NULL: k) of
 * layer l, for k < nc[l] (nc NULL: nk). A score that is negative or not
 * finite is an MPQ_ERR_NUMERIC error naming the layer (fi) and candidate,
 * except in layers with skip[l] set (skip may be NULL). */
mpq_err mpq_importance_scores(mpq_ctx *ctx, const mpq_importance_method *m,
                              const mpq_measure_table *t, const mpq_family_info *fi, int64_t nk,
                              const int32_t *nc, const int32_t *col, const uint8_t *skip,
                              double *score);

/* ---- the measurements the estimators read --------------------------------------- */

/* Collective. energy[lay[j]] = tr(W H W^T) of nj layers of one block: layer
 * lay[j] with weights W[j] [out][in] and statistic H[j], computed on rank
 * own[j].first, which must hold H[j]->H (own NULL: rank j % size, every
 * rank holding H) -- rows summed in order, so the number does not depend
 * on the rank count -- and summed exactly. */
mpq_err mpq_importance_energy(mpq_ctx *ctx, const mpq_family_info *fi, int64_t nj,
                              const int64_t *lay, float *const *W, const mpq_hstat *const *H,
                              const mpq_hset *own, double *energy);

typedef struct mpq_importance_probe {
    mpq_family *ffp;          /* full-precision model: probed, then restored */
    const mpq_calib_set *set; /* calibration samples */
    int64_t samples;          /* importance.samples: <= 0 or more than the set holds: all */
    const uint8_t *excl;      /* [nl] 1: not probed */
    const int32_t *pin;       /* [nl] >= 0: pinned, not probed; NULL: no pins */
    int64_t col;              /* the table's column probed (the same for every layer) */
    /* Messages: who ("importance", "sweep importance") starts the log line;
     * alone (or NULL) names the probed quantizer in it; log_layers = 1 adds a
     * debug line per layer. */
    const char *who, *alone;
    int log_layers;
    /* Where t->q holds no codes for a probed layer (they were written to
     * disk): reads layer l's codes of column col into *q (freed by the
     * probe after use). Local. NULL: every probed layer must be in t->q. */
    mpq_err (*codes)(mpq_ctx *ctx, void *ud, int64_t l, int64_t col, mpq_qlayer **q);
    void *codes_ud;
} mpq_importance_probe;

/* Collective. For every probed layer l: substitutes the dequantized codes
 * of column p->col into the full-precision model, measures the mean KL
 * divergence KL_l of the outputs from the full-precision ones over the
 * first p->samples calibration samples (forwarded in the groups of
 * mpq_eval_groups, whole groups per rank, and an ordered sum of per-sample
 * sums, so the number does not depend on the rank count), restores
 * the weights and sets t->sens[l] = KL_l / L_l, L_l = t->loss of the column
 * (0 where L_l = 0). The full-precision logits of this rank's samples are
 * computed once and kept. */
mpq_err mpq_importance_sensitivity(mpq_ctx *ctx, const mpq_importance_probe *p,
                                   mpq_measure_table *t);

/* Local. The candidate probed for the sensitivities: the one of cand[0 ..
 * ncand) equal to `want` (importance.sensitivity_spec parsed, or NULL when
 * not set; a spec that is no candidate is an MPQ_ERR_CONFIG error), else the
 * one of fewest storage bits over all layers of fi (the first on ties). */
mpq_err mpq_importance_probe_candidate(mpq_ctx *ctx, const struct mpq_config *cfg,
                                       const mpq_family_info *fi, int32_t ncand,
                                       const mpq_qspec *cand, const mpq_qspec *want, int32_t *k);

#endif
