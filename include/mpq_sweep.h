/* mpq_sweep.h: scaling studies of the size/quality trade-off (`mpquant
 * sweep`): one calibration and one measurement pass, then many points
 * (mixed-precision budgets, uniform settings, method/family comparisons),
 * each assembled from the measured codes and evaluated, and a report (CSV,
 * JSON, Markdown, PNG plot with the Pareto front).
 *
 * ---- The measurement ---------------------------------------------------------
 * One block-sequential pass with full-precision propagation (the inputs of
 * block b come from the full-precision blocks before it, so they do not
 * depend on any choice): for every quantizable layer and every measured
 * configuration (method, spec) the rounding method runs on the layer's H
 * and the codes, the layer error L = tr((W-Q) H (W-Q)^T), the RTN error and
 * the exact storage bits are kept. The measured configurations are the
 * union, without duplicates, of
 *   (quant.method, c) for c in quant.candidates   (the budget points' menu)
 *   (quant.method, u) for u in sweep.uniform      (default: the candidates)
 *   (m, s) for m in sweep.methods, s in sweep.compare (default: sweep.uniform).
 * With importance.method = sensitivity the model's sensitivity to every
 * layer is probed as `mpquant run` does (mpq_run.h): both build on one
 * session (mpq_session.h: model, layer selection, calibration samples,
 * evaluation, budget solve) and one importance stage (mpq_importance.h).
 * Everything here is bit-identical for any number of ranks.
 *
 * ---- The points --------------------------------------------------------------
 * In this order: one per sweep.budgets entry B (kind "budget": the exact
 * knapsack over quant.candidates under an average of B bits per weight,
 * scores by importance.method), one per uniform spec (kind "uniform": every
 * layer at that spec with quant.method), one per (method, compare spec)
 * pair not already a uniform point (kind "compare"). A point's quantized
 * model carries the measured codes of its configuration(s); nothing is
 * rounded again. So a point equals `mpquant run` of the same setting with
 * calibration.propagate = fp (same H, deterministic rounding, same codes,
 * same evaluation), whatever calibration.propagate says in the sweep's
 * configuration (the sweep always propagates full precision).
 *
 * ---- Sizes -------------------------------------------------------------------
 * bits: exact storage of the quantized layers (packed codes + scales +
 * zero-points, mpq_quant_storage_bits); bpw = bits / quantized weights.
 * size_bytes: the whole model as stored by the point: bits / 8 for the
 * quantized layers plus 4 bytes (fp32, as evaluated) per element of every
 * other tensor of the model file (embedding, norms, biases, excluded
 * layers, tables). The full-precision reference is every tensor at 4 bytes.
 *
 * ---- Files (under sweep.output_dir) ----------------------------------------
 *   measure.h5          the measurement (mpq_sweep_save, layout in sweep_io.c)
 *   points/fp.json      the full-precision reference row
 *   points/point-NNNN.json  point NNNN (mpq_sweep_point_to_json)
 *   report.csv, report.json, report.md, report.png (+ report.gp, the
 *   gnuplot script)      written by the merge (mpq_sweep_merge)
 * None of them may be an input the configuration names (the configuration
 * file, any input path key): every stage that writes checks all of them
 * before any work, as `mpquant run` checks its outputs.
 */
#ifndef MPQ_SWEEP_H
#define MPQ_SWEEP_H

#include <stdint.h>

#include "mpq_ctx.h"
#include "mpq_quant.h"

struct mpq_config;
struct cJSON;

#define MPQ_SWEEP_LABEL_MAX 200

/* One row of the report (identical on every rank). */
typedef struct mpq_sweep_point {
    int64_t index;                   /* point number; -1 for the reference */
    char kind[16];                   /* fp | budget | uniform | compare */
    char label[MPQ_SWEEP_LABEL_MAX]; /* short human name, e.g. "avg 2.5 bits" */
    char method[32];                 /* rounding method ("-" for fp) */
    char family[32];                 /* quantizer family name, "mixed" or "fp32" */
    char spec[MPQ_QSPEC_TEXT_MAX];   /* canonical spec (";rate=" too); "mixed", "fp32" */
    double budget;                   /* target average bits (budget points), else 0 */
    int64_t bits;                    /* storage bits of the quantized layers */
    int64_t weights;                 /* quantized weights */
    double bpw;                      /* bits / weights (32 for fp) */
    int64_t size_bytes;              /* the whole model (see above) */
    char metric[16];                 /* kld | ppl | nll | accuracy | agreement */
    double value;                    /* the metric of this point */
    double reference;                /* the metric of the full-precision model */
    double rel_change;               /* (value - reference) / |reference| (0 if reference 0) */
    double ppl;                      /* LM: perplexity (whatever the metric), else 0 */
    double kld;                      /* LM: mean KL divergence from FP (nats), else 0 */
    double agreement;                /* top-1 agreement with the FP model */
    double seconds;                  /* wall time of the point (assemble + evaluate) */
    int pareto;                      /* 1: on the Pareto front (set by the merge) */
    /* 1: a budget point whose budget is below the smallest size the
     * candidates reach: skipped, not evaluated. Only index, kind, label,
     * method, family, spec, budget, weights, metric, reference, seconds and
     * the range below hold values; the report marks the row "infeasible"
     * and leaves it out of the plot and the Pareto front. */
    int infeasible;
    double min_bpw, max_bpw; /* infeasible: the achievable average bits per weight */
} mpq_sweep_point;

/* ---- the engine (collective over ctx->comm unless stated) ------------------- */

typedef struct mpq_sweep mpq_sweep;

/* Opens the model (two family instances: working and full precision), the
 * tokenizer, parses and plans the measured configurations and the points.
 * with_calib = 1 also builds the calibration samples (needed by
 * mpq_sweep_measure). Errors name the configuration file and key. Owner of
 * *out: caller (mpq_sweep_destroy). */
mpq_err mpq_sweep_create(mpq_ctx *ctx, const struct mpq_config *cfg, int with_calib,
                         mpq_sweep **out);
/* NULL-safe; sets *sw to NULL. Local. */
void mpq_sweep_destroy(mpq_sweep **sw);
/* Local. Number of points (excluding the full-precision reference). */
int64_t mpq_sweep_npoints(const mpq_sweep *sw);

/* The measurement pass (and the sensitivity probes) and the evaluation of
 * the full-precision reference. */
mpq_err mpq_sweep_measure(mpq_ctx *ctx, mpq_sweep *sw);
/* Writes the measurement (errors, bits, codes, reference row) to path
 * (HDF5, rank 0, atomic). */
mpq_err mpq_sweep_save(mpq_ctx *ctx, const mpq_sweep *sw, const char *path);
/* Reads a measurement written by mpq_sweep_save on every rank; refuses a
 * file measured with another model, calibration, rounding, quantizer or
 * layer list, naming the file and what differs. */
mpq_err mpq_sweep_load(mpq_ctx *ctx, mpq_sweep *sw, const char *path);

/* Point i (0 <= i < npoints): assemble, evaluate, fill *pt on every rank.
 * Needs a measurement (measured or loaded). A budget point whose budget is
 * below the smallest achievable size is not an error: it logs a warning
 * naming the budget and the achievable range and returns MPQ_OK with
 * pt->infeasible = 1 (a budget above the largest size is feasible: every
 * layer gets its largest candidate). */
mpq_err mpq_sweep_run_point(mpq_ctx *ctx, mpq_sweep *sw, int64_t i, mpq_sweep_point *pt);
/* Local. The full-precision reference row (after measure or load). */
const mpq_sweep_point *mpq_sweep_reference(const mpq_sweep *sw);

/* ---- points as files, and the report ----------------------------------------- */

/* Local. JSON object of a point (every field; doubles round-trip exactly).
 * NULL on allocation failure. */
struct cJSON *mpq_sweep_point_to_json(const mpq_sweep_point *pt);
/* Local. Parses a point; errors name `source` and the missing or bad field. */
mpq_err mpq_sweep_point_from_json(mpq_ctx *ctx, const struct cJSON *o, const char *source,
                                  mpq_sweep_point *pt);
/* Rank 0 writes pt as JSON to path (atomic); every rank agrees. */
mpq_err mpq_sweep_point_write(mpq_ctx *ctx, const mpq_sweep_point *pt, const char *path);

/* Local. The Pareto front of n points: front[i] = 1 when no other point j
 * has size[j] <= size[i] and quality[j] <= quality[i] with at least one of
 * the two strict (quality: lower is better; negate a higher-is-better
 * metric). Points with a NaN size or quality are never on the front, and
 * never dominate. Exactly equal points are both on the front. O(n log n). */
mpq_err mpq_sweep_pareto(mpq_ctx *ctx, int64_t n, const double *size, const double *quality,
                         uint8_t *front);
/* Local. 1 when a larger value of the metric is better (accuracy,
 * agreement), 0 when smaller is better (ppl, nll, kld). */
int mpq_sweep_metric_higher_better(const char *metric);

/* Local. Writes report.csv, report.json, report.md under dir from the
 * reference and n points (in index order; their pareto flags are computed
 * here over the reference and the points), and with plot = 1 report.gp and
 * report.png through gnuplot (an error naming gnuplot if it fails).
 * title: a heading for the Markdown and the plot. */
mpq_err mpq_sweep_report_write(mpq_ctx *ctx, const char *dir, const char *title,
                               const mpq_sweep_point *ref, int64_t n, mpq_sweep_point *pts,
                               int plot);

/* Collective (rank 0 works, every rank agrees). Reads points/fp.json and
 * points/point-0000.json .. point-(npoints-1).json under
 * cfg->sweep.output_dir (a missing or damaged file is an error naming it)
 * and writes the report. npoints: the plan's count (mpq_sweep_plan_count).
 * report (may be NULL): on rank 0 the object of report.json (title,
 * metric, higher_is_better, reference, points, pareto), NULL elsewhere and
 * on error; owner: caller (cJSON_Delete). */
mpq_err mpq_sweep_merge(mpq_ctx *ctx, const struct mpq_config *cfg, int64_t npoints,
                        struct cJSON **report);

/* Local. The sweep's directory: sweep.output_dir, or "sweep-out" (in the
 * working directory) when it is "". */
const char *mpq_sweep_output_dir(const struct mpq_config *cfg);

/* Local. The number of points the configuration's sweep section plans
 * (needs no model: specs are parsed and de-duplicated). Errors name the
 * file and key. */
mpq_err mpq_sweep_plan_count(mpq_ctx *ctx, const struct mpq_config *cfg, int64_t *npoints);

/* The registry of sweep metrics (sweep.metric; also "auto": the task's
 * default), for the configuration's allowed values (mpq_registry.h). */
extern const struct mpq_registry mpq_sweep_metric_reg;

#endif
