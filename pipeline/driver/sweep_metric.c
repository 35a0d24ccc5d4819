/* sweep_metric.c: the registry of sweep metrics (sweep.metric), one entry
 * each: the quality axis of the sweep's report. */
#include <string.h>

#include "mpq_registry.h"
#include "sweep_internal.h"

static double metric_ppl(const mpq_session_eval *e, int is_ref) {
    return e->lm.ppl;
}

static double metric_nll(const mpq_session_eval *e, int is_ref) {
    return e->lm.mean_nll;
}

static double metric_kld(const mpq_session_eval *e, int is_ref) {
    return is_ref ? 0.0 : e->lm.kld;
}

static double metric_accuracy(const mpq_session_eval *e, int is_ref) {
    return e->cls.accuracy;
}

static double metric_agreement(const mpq_session_eval *e, int is_ref) {
    if (is_ref)
        return 1.0;
    return e->task == MPQ_TASK_LM ? e->lm.top1_agreement : e->cls.agreement;
}

/* Perplexity is multiplicative and KLD spans decades (8-bit points near
 * 1e-5 nats, 2-bit ones near 1): a log axis keeps the good points apart
 * when a poor one is orders of magnitude up. */
static const sweep_metric metrics[] = {
    {.name = "ppl", .lm = 1, .log_axis = 1, .value = metric_ppl},
    {.name = "nll", .lm = 1, .value = metric_nll},
    {.name = "kld", .lm = 1, .log_axis = 1, .value = metric_kld},
    {.name = "accuracy", .cls = 1, .higher_better = 1, .value = metric_accuracy},
    {.name = "agreement", .lm = 1, .cls = 1, .higher_better = 1, .value = metric_agreement},
};

static const char *metric_name_at(int64_t i) {
    return i < (int64_t)(sizeof metrics / sizeof metrics[0]) ? metrics[i].name : NULL;
}

/* "auto" picks the task's default metric (mpq_sweep_metric_from_config). */
const mpq_registry mpq_sweep_metric_reg = {
    .what = "sweep metric", .also = "auto", .name_at = metric_name_at};

const sweep_metric *mpq_sweep_metric_find(const char *name) {
    int64_t i = mpq_registry_index(&mpq_sweep_metric_reg, name);
    if (i >= 0)
        return &metrics[i];
    return NULL;
}

int mpq_sweep_metric_higher_better(const char *metric) {
    const sweep_metric *m = mpq_sweep_metric_find(metric);
    return m && m->higher_better;
}

mpq_err mpq_sweep_metric_from_config(mpq_ctx *ctx, const mpq_config *cfg, mpq_task task,
                                     const sweep_metric **out) {
    const int lm = task == MPQ_TASK_LM;
    const char *name = cfg->sweep.metric;
    /* A language model's default is the KL divergence from the full-precision
     * model: perplexity on a text outside the training domain can rank a
     * 4-bit model above full precision. A classifier's evaluation has no KL
     * divergence (its labels are in-domain): accuracy. */
    if (strcmp(name, "auto") == 0)
        name = lm ? "kld" : "accuracy";
    const sweep_metric *m = mpq_sweep_metric_find(name);
    MPQ_CHECK(m, MPQ_ERR_CONFIG, "%s: sweep.metric: unknown metric '%s'", cfg->source, name);
    MPQ_CHECK(lm ? m->lm : m->cls, MPQ_ERR_CONFIG,
              "%s: sweep.metric: '%s' does not apply to a %s (use ppl, nll, kld or agreement for "
              "language models; accuracy or agreement for classifiers)",
              cfg->source, name, lm ? "language model" : "classifier");
    *out = m;
    return MPQ_OK;
}
