/* measure_internal.h: what `mpquant run` (stages/pipeline/run*.c) and
 * `mpquant sweep` (stages/sweep*.c) share to measure a model: the table of
 * measured (layer, configuration) pairs, the block-sequential rounding pass
 * that fills it (run also rounds its final model with it), the sensitivity
 * probe, the importance scores, and the table's datasets in the HDF5 files
 * of both commands. One
 * implementation, so that a sweep point and `mpquant run` agree bit for bit.
 * Not a public interface. */
#ifndef MPQ_MEASURE_INTERNAL_H
#define MPQ_MEASURE_INTERNAL_H

#include <stdint.h>

#include "mpq_calibrate.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_model.h"
#include "mpq_round.h"

/* ---- the table (measure.c) ---------------------------------------------------- */

/* What measuring found, column k of layer l at [l * ncol + k]. What a column
 * is belongs to the caller: run's candidates (plus a pinned spec), the
 * sweep's measured configurations. */
typedef struct measure_table {
    int64_t nl;     /* layers */
    int64_t ncol;   /* columns per layer */
    double *loss;   /* [nl][ncol] layer error of the rounding */
    double *rtn;    /* [nl][ncol] nearest-rounding error, same H */
    int64_t *bits;  /* [nl][ncol] exact storage bits */
    mpq_qlayer **q; /* [nl][ncol] measured codes (owned), NULL where not measured */
    double *energy; /* [nl] tr(W H W^T) */
    double *sens;   /* [nl] sensitivity s_l, 0 where not probed */
} measure_table;

/* Local. Allocates the table's arrays, zeroed (at least one element each). */
mpq_err mpq_measure_table_alloc(mpq_ctx *ctx, measure_table *t, int64_t nl, int64_t ncol);
/* Frees the arrays and the codes and zeroes *t. Safe on a zeroed table. */
void mpq_measure_table_free(measure_table *t);

/* ---- the block pass (measure.c) ----------------------------------------------- */

/* The caller's part of a block pass: which (layer, column) pairs are rounded,
 * how, and (when not measuring) what becomes of each result. `ud` is
 * block_pass.ud. */
typedef struct block_pass_ops {
    /* Local. Layer l (not excluded) gets a job for each column k0 <= k < k1. */
    void (*columns)(const void *ud, int64_t l, int32_t *k0, int32_t *k1);
    /* Local. The quantizer and the rounding method of column k of layer l. */
    void (*conf)(const void *ud, int64_t l, int32_t k, mpq_qspec *spec,
                 const mpq_round_method **method);
    /* Local; the pass agrees on the outcome after the block's results. Only
     * when not measuring (block_pass.tab NULL): takes the result of column k
     * of layer l, and r->q with it (set to NULL) if it keeps the codes. */
    mpq_err (*take)(mpq_ctx *ctx, void *ud, int64_t l, int32_t k, mpq_round_result *r);
} block_pass_ops;

typedef struct block_pass {
    const mpq_config *cfg;    /* hessian.chunk_samples, hessian.bound_log2; source in errors */
    mpq_family *f;            /* the weights rounded; calibrated through */
    const mpq_calib_set *set; /* calibration samples */
    const mpq_round_opts *ro;
    const uint8_t *excl; /* [nlayers] 1: kept in full precision, no job */
    int32_t ncol;        /* the most columns of one layer */
    /* 1: every block's input comes from the full-precision blocks before it
     * (f is not changed during the pass); 0: from f after the earlier
     * blocks' results were taken (quantized propagation). */
    int advance;
    /* Hessian statistics from this file (hessian.load) instead of
     * calibrating, or kept and written to this one at the end
     * (hessian.save); "" or NULL: none. Only with advance = 1: saved
     * statistics describe full-precision block inputs. */
    const char *hload, *hsave;
    int warn_rows; /* 1: warn of statistics with fewer rows than input channels */
    /* Names in messages: who ("run", "sweep") in internal errors, label in
     * the progress lines, timer for the rounding's timer. */
    const char *who, *label, *timer;
    /* Measuring: every result into the table, and the layers' energies;
     * NULL: every result to ops->take. */
    measure_table *tab;
    const block_pass_ops *ops;
    void *ud;
} block_pass;

/* Collective. One pass over the blocks in order: the Hessian statistics of
 * the block's layer inputs, one rounding job per (layer, column) the ops
 * ask for, all of the block's jobs rounded together (mpq_round_block: every
 * rank gets every result), then the results taken. Local failures are
 * agreed before every collective step. */
mpq_err mpq_block_pass(mpq_ctx *ctx, const block_pass *p);

/* ---- the sensitivity probe (measure.c) ---------------------------------------- */

typedef struct measure_probe {
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
} measure_probe;

/* Collective. For every probed layer l: substitutes the dequantized codes
 * of column p->col into the full-precision model, measures the mean KL
 * divergence KL_l of the outputs from the full-precision ones over the
 * first p->samples calibration samples (one sample per forward pass and an
 * ordered sum, so the number does not depend on the rank count), restores
 * the weights and sets tab->sens[l] = KL_l / L_l, L_l = tab->loss of the
 * column (0 where L_l = 0). The full-precision logits of this rank's
 * samples are computed once and kept. */
mpq_err mpq_measure_sensitivity(mpq_ctx *ctx, const measure_probe *p, measure_table *tab);

/* ---- importance (measure.c) --------------------------------------------------- */

/* importance.method: how a layer's error becomes the score the budget
 * minimises. */
typedef enum measure_score {
    MEASURE_SCORE_ERROR,      /* the layer error */
    MEASURE_SCORE_NORMALIZED, /* divided by the layer's energy (when positive) */
    MEASURE_SCORE_SENSITIVITY /* times the layer's sensitivity */
} measure_score;

/* Local. The score of importance.method; an unknown name is an
 * MPQ_ERR_CONFIG error naming the file. */
mpq_err mpq_measure_score_kind(mpq_ctx *ctx, const mpq_config *cfg, measure_score *kind);
/* Local. The score of column col of layer l. */
double mpq_measure_score(const measure_table *t, measure_score kind, int64_t l, int64_t col);

/* Local. The candidate probed for the sensitivities: the one equal to
 * `want` (importance.sensitivity_spec parsed, or NULL when not set; a spec
 * that is no candidate is an MPQ_ERR_CONFIG error), else the one of fewest
 * storage bits over all layers of fi (the first on ties). spec(ud, k) is
 * candidate k of ncand. */
mpq_err mpq_measure_probe_candidate(mpq_ctx *ctx, const mpq_config *cfg, const mpq_family_info *fi,
                                    int32_t ncand,
                                    const mpq_qspec *(*spec)(const void *ud, int32_t k),
                                    const void *ud, const mpq_qspec *want, int32_t *k);

/* ---- HDF5 (measure_io.c) --------------------------------------------------------- */

/* The files of run (measure.save) and sweep (measure.h5) are written by one
 * rank alone (mpq_h5.h, not collective); `what` names the file in errors.
 * Identifiers are hid_t, passed as int64_t (as in mpq_h5.h). */

/* Local. Creates (truncates) the HDF5 file `tmp` with the root attributes
 * format (fixed-length string) and version (int32). *file is the file, or
 * negative when it was not created; on failure the caller abandons it
 * (mpq_h5_discard). */
mpq_err mpq_measure_h5_create(mpq_ctx *ctx, const char *tmp, const char *format, int32_t version,
                              const char *what, int64_t *file);
/* Local. Writes the 1-D byte dataset `name` of n bytes (uint8). */
mpq_err mpq_measure_h5_write_bytes(mpq_ctx *ctx, int64_t file, const char *name, const void *data,
                                   int64_t n, const char *what);
/* Local. Writes the table: /loss, /rtn_loss, /bits [nl][ncol] and /energy,
 * /sensitivity [nl], in that order. */
mpq_err mpq_measure_h5_write_table(mpq_ctx *ctx, int64_t file, const measure_table *t,
                                   const char *what);
/* Local. Reads the byte dataset `name`, which must hold exactly n bytes. */
mpq_err mpq_measure_h5_read_bytes(mpq_ctx *ctx, int64_t file, const char *path, const char *name,
                                  int64_t n, void *out);
/* Local. Reads the datasets of mpq_measure_h5_write_table into t, whose
 * sizes they must have. */
mpq_err mpq_measure_h5_read_table(mpq_ctx *ctx, int64_t file, const char *path, measure_table *t);
/* Local. A byte dataset of 1 byte to 64 MiB as a NUL-terminated string.
 * A missing dataset is the error "<path><missing> (no '<name>' dataset)".
 * Owner: caller (mpq_free). */
mpq_err mpq_measure_h5_read_text(mpq_ctx *ctx, int64_t file, const char *path, const char *name,
                                 const char *missing, char **out);

#endif
