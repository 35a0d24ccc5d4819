/* mpq_session.h: what `mpquant run` (mpq_run.h) and `mpquant sweep`
 * (mpq_sweep.h) both set up before they quantize: the configuration, the
 * model (twice as a family: a working instance and a full-precision one),
 * the tokenizer, the rounding options and method, the importance
 * estimator, the candidate quantizers, the layer selection (budget.exclude,
 * budget.pin, robust.nonfinite), the calibration samples, the evaluation,
 * the budget solve and the checks of the files a command reads and writes.
 * One implementation, so that both commands accept and refuse the same
 * things and a sweep point equals `mpquant run` bit for bit.
 *
 * The stage timers (mpq_stage) are in mpq_timer.h.
 */
#ifndef MPQ_SESSION_H
#define MPQ_SESSION_H

#include <stdint.h>

#include "mpq_budget.h"
#include "mpq_calibrate.h"
#include "mpq_ctx.h"
#include "mpq_eval.h"
#include "mpq_family.h"
#include "mpq_importance.h"
#include "mpq_model.h"
#include "mpq_quant.h"
#include "mpq_round.h"
#include "mpq_timer.h"
#include "mpq_tokenizer.h"

struct mpq_config;
struct cJSON;

/* ---- files ------------------------------------------------------------------------- */

/* A file of a command and what names it (a key, or "the configuration file"). */
typedef struct mpq_session_file {
    const char *key;
    const char *path;
} mpq_session_file;

/* Room for every input path key of the key table and the configuration file. */
#define MPQ_SESSION_MAX_FILES 32

/* Local. Every input the configuration names, read by the command or not
 * (the configuration file when it is one, every set input path key): no
 * output may replace one. Returns the count; past MPQ_SESSION_MAX_FILES it
 * counts without storing (the caller sees the overflow). */
int64_t mpq_session_named_inputs(const struct mpq_config *cfg, mpq_session_file *f);

/* The tokenizer a language model uses: model.tokenizer when set; else the
 * model directory itself when model.path is a directory holding a
 * tokenizer.json (a Hugging Face model directory); else "" (none). Points
 * into cfg. Local (every rank looks at the file system). */
const char *mpq_session_tokenizer(const struct mpq_config *cfg);

/* Language-model evaluation as the configuration asks (session_eval.c),
 * over `docs` documents, windows or sequences (eval.docs, or --docs).
 * eval.protocol docs or windows: eval.text (mpq_eval_lm). generated:
 * eval.docs sequences of up to eval.window tokens (0: the context) sampled
 * from ref (f when ref is NULL) with eval.seed and eval.temperature, then
 * evaluated like documents (out->generated = 1). Collective. The check
 * (local, also run before loading) refuses a missing eval.text, eval.docs
 * 0 with generated, and an eval.seed equal to calibration.seed when the
 * calibration is generated too. */
int mpq_session_eval_generated(const struct mpq_config *cfg);
/* Local. err as it is, except that a non-finite finding (MPQ_ERR_NUMERIC)
 * of an evaluation gets the models in front of its message: "evaluating
 * MODEL (reference REF): ..." (ref NULL: none), since the evaluation names
 * the document or image and the block but knows no file. Call on every
 * rank with the agreed status. */
mpq_err mpq_session_eval_named(struct mpq_ctx *ctx, mpq_err err, const char *model,
                               const char *ref);
mpq_err mpq_session_eval_check(struct mpq_ctx *ctx, const struct mpq_config *cfg, int64_t docs);
mpq_err mpq_session_eval_lm(struct mpq_ctx *ctx, const struct mpq_config *cfg, int64_t docs,
                            mpq_family *f, mpq_family *ref, const mpq_tokenizer *tok,
                            mpq_lm_result *out);
/* Local. Output out must not be the same file (inode or canonical path) as
 * any of in[0 .. ni): an MPQ_ERR_CONFIG error naming both. */
mpq_err mpq_session_check_output(mpq_ctx *ctx, const struct mpq_config *cfg,
                                 const mpq_session_file *out, const mpq_session_file *in,
                                 int64_t ni);

/* ---- the session -------------------------------------------------------------------- */

typedef struct mpq_session_opts {
    /* Files the command writes (paths "" are skipped): none may be an input
     * the configuration names or another of them. */
    const mpq_session_file *outputs;
    int64_t noutputs;
    /* 1: output.path is the command's checkpoint: its directory must exist
     * and it must not exist unless output.overwrite. */
    int checkpoint;
    /* The candidates without quant.candidates: 1 (run) a budget means the
     * default candidates (int asymmetric at 2, 3, 4 and 8 bits with
     * quant.spec's granularity), no budget quant.spec alone; 0 (sweep)
     * none. */
    int uniform_spec;
    /* 1: the command evaluates the language model (it needs a tokenizer
     * even when its calibration does not) */
    int evaluates;
} mpq_session_opts;

typedef struct mpq_session {
    const struct mpq_config *cfg;
    mpq_model *m;
    mpq_family *fq;  /* working model: calibrated through; carries the quantized weights */
    mpq_family *ffp; /* full precision: reference, sensitivity probes */
    const mpq_family_info *info;
    mpq_tokenizer *tok; /* language models */
    mpq_calib_set *set; /* NULL until mpq_session_calibrate */
    mpq_round_opts ro;
    const mpq_round_method *method;          /* quant.method */
    const mpq_importance_method *importance; /* importance.method */

    int mixed;       /* candidates listed, or a budget with the default ones (uniform_spec) */
    int64_t ncand;   /* global candidates (uniform: 1, quant.spec) */
    mpq_qspec *cand; /* [ncand] */
    /* [ncand] a rate-constrained candidate's round.rate_lambda (item
     * "spec;rate=LAMBDA"), -1 for the others */
    double *cand_rate;
    int32_t maxc; /* ncand + 1: room for a pinned spec that is not a candidate */

    int64_t nl;       /* quantizable layers */
    int32_t *nc;      /* [nl] candidates of layer l (ncand, or ncand + 1) */
    mpq_qspec *extra; /* [nl] the pinned spec at index ncand where nc[l] = ncand + 1 */
    int32_t *pin;     /* [nl] pinned candidate, or -1 */
    uint8_t *excl;    /* [nl] 1: full precision (budget.exclude, or non-finite skipped) */
} mpq_session;

/* The spec of candidate k of layer l. */
static inline const mpq_qspec *mpq_session_spec(const mpq_session *s, int64_t l, int32_t k) {
    return k < s->ncand ? &s->cand[k] : &s->extra[l];
}

/* Collective. Rank 0 checks the configuration's paths and the command's
 * files (opts); then the stage "load": the model, both family instances,
 * the tokenizer of a language model, the rounding options, the importance
 * estimator, the candidates and the layer selection. Every rank agrees on
 * the outcome. Errors name the configuration file and key. Owner of *out:
 * caller (mpq_session_destroy). */
mpq_err mpq_session_create(mpq_ctx *ctx, const struct mpq_config *cfg, const mpq_session_opts *opts,
                           mpq_session **out);
/* Local. The text of candidate k of layer l into buf [n]: its canonical
 * spec, followed by ";rate=LAMBDA" for a rate-constrained candidate.
 * Returns buf. */
const char *mpq_session_spec_text(const mpq_session *s, int64_t l, int32_t k, char *buf, size_t n);
/* Local. The text of a list item into buf [n]: spec's canonical text, with
 * rate >= 0 followed by ";rate=LAMBDA" (what mpq_session_parse_item
 * reads). Returns buf. */
const char *mpq_session_item_text(const mpq_qspec *spec, double rate, char *buf, size_t n);
/* Local. Candidate k's own round.rate_lambda, or -1 (none, or k not a
 * candidate). */
double mpq_session_cand_rate(const mpq_session *s, int32_t k);
/* Local. NULL-safe; sets *s to NULL. */
void mpq_session_destroy(mpq_session **s);
/* Collective. The stage "calibrate": the calibration samples (s->set). */
mpq_err mpq_session_calibrate(mpq_ctx *ctx, mpq_session *s);

/* Local. The candidate checks of mpq_session_create without a model:
 * quant.spec, quant.candidates (each parsed, no two the same) or the
 * default candidates of a budget. For `mpquant check`. */
mpq_err mpq_session_check_candidates(mpq_ctx *ctx, const struct mpq_config *cfg);
/* Local. Parses a spec from the configuration; errors name the file, the
 * key and the text. */
mpq_err mpq_session_parse_spec(mpq_ctx *ctx, const struct mpq_config *cfg, const char *key,
                               const char *text, mpq_qspec *spec);
/* Local. A list item "spec" (*rate = -1) or "spec;rate=LAMBDA" (a
 * rate-constrained quantizer: *rate = LAMBDA, which needs round.loss =
 * "layer" and rounding method `method` gptq); errors name where the list
 * was set, key (the item) and the text. */
mpq_err mpq_session_parse_item(mpq_ctx *ctx, const struct mpq_config *cfg, const char *list,
                               const char *key, const char *item, const char *method,
                               mpq_qspec *out, double *rate);
/* Local. The candidate probed for the sensitivities
 * (mpq_importance_probe_candidate over s->cand with
 * importance.sensitivity_spec); 0 without candidates. */
mpq_err mpq_session_probe_candidate(mpq_ctx *ctx, const mpq_session *s, int32_t *k);

/* Local. The files a run reads, hashed into its checkpoint: the
 * configuration file, the model, the tokenizer of a language model, the
 * calibration source, the evaluation data when evaluated, hessian.load,
 * and measure.load when mixed. At most 10 paths. */
int64_t mpq_session_read_inputs(const mpq_session *s, int evaluated, int mixed, const char **paths);

/* ---- evaluation ---------------------------------------------------------------------- */

/* An evaluation: language model or classifier figures. */
typedef struct mpq_session_eval {
    int done;
    mpq_task task;
    mpq_lm_result lm;
    mpq_cls_result cls;
    int has_all; /* classifiers with eval.also_all: cls_all on every image */
    mpq_cls_result cls_all;
} mpq_session_eval;

/* Collective. Evaluates f (against ref when not NULL: KLD, agreement) on
 * the eval section's data; also_all = 1 adds a classifier's whole image
 * file when eval.also_all is set. */
mpq_err mpq_session_evaluate(mpq_ctx *ctx, const mpq_session *s, mpq_family *f, mpq_family *ref,
                             int also_all, mpq_session_eval *e);
/* Local. The reference's own figures from e, an evaluation against it:
 * what evaluating the reference alone gives, without its second forward. */
void mpq_session_eval_reference(const mpq_session_eval *e, mpq_session_eval *ref);

/* ---- the budget ---------------------------------------------------------------------- */

/* A multiple-choice knapsack over the session's layers (excluded layers
 * take no part). */
typedef struct mpq_session_knapsack {
    int32_t ncol;        /* columns of a row of cost and score */
    const int32_t *nc;   /* [nl] candidates of layer l (<= ncol); NULL: ncol each */
    const int64_t *cost; /* [nl][ncol] storage bits of each candidate */
    const double *score; /* [nl][ncol] importance score of each candidate */
    const int32_t *pin;  /* [nl] pinned candidate or -1; NULL: none */
    mpq_budget_spec spec;
    /* 1: a budget below the smallest achievable total is no error: the
     * range says so (infeasible) and no choice is made. */
    int allow_infeasible;
    /* 1: only the feasibility test, from cost alone (score may be NULL);
     * the error of an infeasible budget, no choice. */
    int check_only;
    const char *what; /* names the budget in errors ("budget.avg_bits") */
} mpq_session_knapsack;

/* What rank 0 found about a budget (allow_infeasible). */
typedef struct mpq_session_range {
    int32_t infeasible;         /* 1: budget_bits < min_bits */
    int64_t budget_bits;        /* the budget as the solver counts it */
    int64_t min_bits, max_bits; /* smallest and largest achievable totals */
    int64_t weights;            /* quantized weights */
} mpq_session_range;

/* Collective (cost, score and pin matter on rank 0). Rank 0 solves; every
 * rank gets choice[l] (the candidate, -1 for excluded layers) and, when
 * figures is not NULL, the solver's figures (figures->choice NULL), and,
 * when range is not NULL, the range (allow_infeasible; else zero). With
 * k->check_only, choice and figures are not touched. */
mpq_err mpq_session_budget(mpq_ctx *ctx, const mpq_session *s, const mpq_session_knapsack *k,
                           int32_t *choice, mpq_budget_result *figures, mpq_session_range *range);

#endif
