/* mpq_run.h: the whole quantization pipeline of `mpquant run`: load,
 * calibrate, Hessian, (measure, importance, budget,) round, evaluate and
 * assemble the checkpoint. It builds on the session (mpq_session.h: model,
 * candidates, layer selection, calibration samples, evaluation, budget)
 * that `mpquant sweep` shares, and composes the stage modules (the
 * importance estimators are mpq_importance.h); it adds no numerics of its
 * own. One function of pipeline/driver/run.c, run_stages, shows the stages
 * in order.
 *
 * ---- Which layers ------------------------------------------------------------
 * Every quantizable layer of the family (mpq_family.h) is quantized: for
 * Llama q, k, v, o, gate, up and down of every block; for the CNN every conv
 * and linear weight. The token embedding and the output head are not block
 * layers and stay full precision, as do norms and biases. budget.exclude
 * keeps matching layers in full precision too.
 *
 * ---- Uniform precision (quant.candidates = []) -------------------------------
 * One pass over the blocks b = 0 .. B-1: measure H of every input group of
 * block b on the calibration samples (mpq_calib_block), round every layer of
 * the block with quant.method at quant.spec (or its budget.pin spec) over
 * the ranks (mpq_round_block), substitute the dequantized weights into the
 * working model and, with calibration.propagate = quantized (default), run
 * block b again on the substituted weights to get block b+1's inputs (the
 * inputs a quantized model really sees); with propagate = fp the inputs come
 * from the full-precision block.
 *
 * ---- Mixed precision (quant.candidates = [spec, ...]) -------------------------
 *  1. measure: one pass with full-precision propagation; for every layer and
 *     every candidate (plus a pinned spec that is not a candidate) the
 *     rounding method runs on H and records the layer error L (the
 *     objective tr((W-Q) H (W-Q)^T)), the RTN error and the exact storage
 *     bits (codes + scales + zero-points, mpq_quant_storage_bits). Inputs
 *     do not depend on any choice, so every candidate sees the same H.
 *  2. importance (importance.method): score = L ("error"); L / tr(W H W^T)
 *     ("normalized"); or s_l * L ("sensitivity") with s_l = KL_l / L_l(c*),
 *     where KL_l is the mean KL divergence of the model's output
 *     distribution from the full-precision one on the first
 *     importance.samples calibration samples when only layer l is quantized
 *     (with the measured codes of candidate c* = importance.sensitivity_spec,
 *     default the smallest candidate). s_l converts a layer's output error
 *     into model-output damage, which makes layers comparable.
 *  3. budget (rank 0, mpq_budget.h): one candidate per layer minimising the
 *     summed score under budget.avg_bits or budget.bytes; the assignment is
 *     broadcast.
 *  4. final rounding: with propagate = quantized, a block-sequential pass as
 *     in the uniform case with the chosen spec per layer (block b's H comes
 *     from the already-quantized blocks before it, so codes differ from the
 *     measured ones, and the reported loss is that of the final codes). With
 *     propagate = fp the measured codes of the chosen candidates are the
 *     final ones (same H, deterministic method): nothing is recomputed.
 * measure.save writes the measurements (HDF5); measure.load skips step 1
 * (and the sensitivity probes) and always runs step 4 as a pass.
 *
 * ---- Evaluation and output -----------------------------------------------------
 * The full-precision model and the quantized one (a second family instance
 * whose layers carry the dequantized weights) are evaluated on the eval
 * section's data (mpq_eval.h); the quantized one also against the full-
 * precision one (KLD, top-1 agreement). With output.path the checkpoint
 * (mpq_ckpt.h) holds the chosen codes, every other tensor as is, the
 * configuration, the evaluation and the per-layer assignment.
 *
 * Everything is bit-identical for any number of ranks: H (exact
 * reduction), rounding (fixed tiles), KL sums and evaluations (ordered
 * sums), and the budget (solved on rank 0 and broadcast).
 */
#ifndef MPQ_RUN_H
#define MPQ_RUN_H

#include <stdint.h>

#include "mpq_budget.h"
#include "mpq_ctx.h"
#include "mpq_eval.h"
#include "mpq_family.h"
#include "mpq_quant.h"
#include "mpq_round.h"
#include "mpq_session.h"

struct mpq_config;
struct cJSON;

/* Options that are not configuration keys (set by drivers and tests). */
typedef struct mpq_run_opts {
    int eval_fp;        /* evaluate the full-precision model (default 1) */
    int eval_quantized; /* evaluate the quantized model (default 1) */
    /* Called on every rank before the checkpoint writer writes tensor i of
     * the model (i counts tensors in model order); NULL: none. A test hook
     * (it can kill the job in the middle of the write). */
    void (*write_hook)(mpq_ctx *ctx, int64_t i, void *ud);
    void *write_ud;
    /* 1: keep every layer's codes in the result also when they are written
     * to a checkpoint (memory then grows with the model; for tests). */
    int keep_codes;
} mpq_run_opts;

/* Local. The defaults above. */
void mpq_run_opts_default(mpq_run_opts *o);

/* One quantizable layer's outcome (identical on every rank). */
typedef struct mpq_run_layer {
    char name[MPQ_TENSOR_NAME_MAX];   /* family layer name */
    char tensor[MPQ_TENSOR_NAME_MAX]; /* checkpoint tensor it replaces */
    int64_t rows, cols;               /* [out][in] */
    int excluded;                     /* 1: kept in full precision (no fields below) */
    int pinned;                       /* 1: spec fixed by budget.pin */
    char spec[MPQ_QSPEC_TEXT_MAX];    /* chosen quantizer (canonical text, ;rate=) */
    int bits_per_code;
    int64_t group;      /* columns per group (0: tensor / channel) */
    int64_t bits;       /* exact storage bits of codes + parameters */
    int64_t coded_bits; /* bits stored in the checkpoint (output.code_coding = zstd) */
    double rtn_loss;    /* layer objective of nearest rounding, same H */
    double loss;        /* layer objective of the final codes */
    double score;       /* importance score of the chosen candidate (mixed; else loss) */
    double sensitivity; /* s_l (importance sensitivity), else 0 */
    double energy;      /* tr(W H W^T) on the measurement H (mixed), else 0 */
    int64_t iters;
    double seconds;
    double code_entropy; /* empirical entropy of the codes (bits per code), when entropy_set */
    int entropy_set;     /* 1: code_entropy is known (the layer was rounded or restored) */
    /* The final codes and parameters (owned). With output.path they are
     * written to the partial checkpoint block by block and leave memory
     * (q is NULL) unless mpq_run_opts.keep_codes is set. */
    mpq_qlayer *q;
    /* round.learn_bias: the learned correction of the output bias [rows]
     * (owned; NULL: none), kept in memory on every rank */
    float *bias;
} mpq_run_layer;

/* An evaluation: language model or classifier figures (mpq_session.h). */
typedef mpq_session_eval mpq_run_eval;

typedef struct mpq_run_result {
    int mixed;                            /* 1: quant.candidates given */
    const char *method;                   /* rounding method name (static) */
    const mpq_round_method *round_method; /* the method and the options it ran with */
    mpq_round_opts round_opts;
    const char *propagate;
    int64_t nlayers;
    mpq_run_layer *layers; /* [nlayers] in family layer order */
    int64_t bits;          /* sum of the quantized layers' bits */
    int64_t weights;       /* their weight count */
    double bpw;            /* bits / weights */
    int coded;             /* 1: checkpoint written with output.code_coding = zstd */
    int64_t coded_bits;    /* then: sum of the layers' coded_bits */
    double coded_bpw;      /* coded_bits / weights */
    int has_budget;
    mpq_budget_result budget; /* solver figures (choice not kept: NULL) */
    int budget_codes;         /* 1: the budget counted packed codes only (budget.count) */
    int budget_coded;         /* 1: it counted the measured zstd-coded sizes */
    int64_t ncand;
    char (*candidates)[MPQ_QSPEC_TEXT_MAX]; /* [ncand] candidate texts (canonical) */
    mpq_run_eval fp, quant;
    char *checkpoint; /* output path written, or NULL */
    /* The analytic minimum of memory per rank (MiB): one block's weights in
     * fp32 (4 P, P the largest block's quantizable weights), the rank's share
     * of the block's Hessians (8 sum d_g^2 / ranks over its distinct layer
     * inputs), the rank's share of the calibration activations, input and
     * output of a block (8 rows w / ranks, w the widest activation), and
     * the output head as stored (its bytes in the model file, read in
     * place; the embedding is read a row at a time). */
    double rss_min_mib;
} mpq_run_result;

/* Collective over ctx->comm. Runs the pipeline configured by cfg (see
 * above), logging per layer and emitting events, and returns the result on
 * every rank. opts may be NULL (defaults). Owner of *out: caller
 * (mpq_run_result_destroy). */
/* Local. Every check `mpquant run` makes of the configuration before it
 * loads anything (budget, saved statistics and propagation, candidates and
 * specs); `mpquant check` runs it too, so that check passes only what run
 * would start. */
mpq_err mpq_run_check(mpq_ctx *ctx, const struct mpq_config *cfg);

mpq_err mpq_run(mpq_ctx *ctx, const struct mpq_config *cfg, const mpq_run_opts *opts,
                mpq_run_result **out);
/* NULL-safe; sets *r to NULL. */
void mpq_run_result_destroy(mpq_run_result **r);

/* Local. JSON of an evaluation ({"ppl", "mean_nll", "predictions", "docs",
 * "kld", "top1_agreement"} or {"accuracy", "correct", "total",
 * "top1_agreement"}); NULL on allocation failure. */
struct cJSON *mpq_run_eval_json(const mpq_run_eval *e);
/* Local. JSON of the per-layer assignment (deterministic: no times):
 * {"mode", "method", "propagate", "candidates", "budget": {...}, "layers":
 * [{"layer", "tensor", "spec", "bits", "weights", "loss", "rtn_loss",
 * "score", ...}]}. NULL on allocation failure. */
struct cJSON *mpq_run_assignment_json(const mpq_run_result *r);

#endif
