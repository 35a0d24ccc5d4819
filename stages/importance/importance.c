/* importance.c: the importance stage (mpq_importance.h): the measurement
 * table, the registry of estimators, the scores, the layer energies and the
 * choice of the probed candidate. The sensitivity probe is in
 * sensitivity.c. */
#include <math.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_config.h"
#include "mpq_importance.h"
#include "mpq_registry.h"
#include "mpq_round.h"

/* ---- the measurement table -------------------------------------------------------- */

mpq_err mpq_measure_table_alloc(mpq_ctx *ctx, mpq_measure_table *t, int64_t nl, int64_t ncol) {
    const int64_t n = nl * ncol > 0 ? nl * ncol : 1;
    MPQ_ALLOC(t->loss, n);
    MPQ_ALLOC(t->rtn, n);
    MPQ_ALLOC(t->bits, n);
    MPQ_ALLOC(t->coded, n);
    MPQ_ALLOC(t->q, n);
    MPQ_ALLOC(t->energy, nl > 0 ? nl : 1);
    MPQ_ALLOC(t->sens, nl > 0 ? nl : 1);
    t->nl = nl;
    t->ncol = ncol;
    return MPQ_OK;
}

void mpq_measure_table_free(mpq_measure_table *t) {
    mpq_free(t->loss);
    mpq_free(t->rtn);
    mpq_free(t->bits);
    mpq_free(t->coded);
    for (int64_t i = 0; t->q && i < t->nl * t->ncol; i++)
        mpq_qlayer_destroy(&t->q[i]);
    mpq_free(t->q);
    mpq_free(t->energy);
    mpq_free(t->sens);
    memset(t, 0, sizeof *t);
}

/* ---- the estimators ------------------------------------------------------------------ */

static double score_error(const mpq_measure_table *t, int64_t l, int64_t col) {
    return t->loss[l * t->ncol + col];
}

static double score_normalized(const mpq_measure_table *t, int64_t l, int64_t col) {
    const double v = t->loss[l * t->ncol + col];
    return t->energy[l] > 0.0 ? v / t->energy[l] : v;
}

static double score_sensitivity(const mpq_measure_table *t, int64_t l, int64_t col) {
    return t->loss[l * t->ncol + col] * t->sens[l];
}

static const mpq_importance_method importance_error = {.name = "error", .score = score_error};
static const mpq_importance_method importance_normalized = {.name = "normalized",
                                                            .score = score_normalized};
static const mpq_importance_method importance_sensitivity = {
    .name = "sensitivity", .needs_sensitivity = 1, .score = score_sensitivity};

const mpq_importance_method *const mpq_importance_methods[] = {
    &importance_error, &importance_normalized, &importance_sensitivity, NULL};

static const char *method_name_at(int64_t i) {
    return mpq_importance_methods[i] ? mpq_importance_methods[i]->name : NULL;
}

const mpq_registry mpq_importance_reg = {.what = "importance method", .name_at = method_name_at};

const mpq_importance_method *mpq_importance_find(const char *name) {
    int64_t i = mpq_registry_index(&mpq_importance_reg, name);
    return i < 0 ? NULL : mpq_importance_methods[i];
}

mpq_err mpq_importance_from_config(mpq_ctx *ctx, const mpq_config *cfg,
                                   const mpq_importance_method **out) {
    *out = mpq_importance_find(cfg->importance.method);
    MPQ_CHECK(*out, MPQ_ERR_CONFIG, "%s: importance.method: unknown method '%s'", cfg->source,
              cfg->importance.method);
    return MPQ_OK;
}

mpq_err mpq_importance_scores(mpq_ctx *ctx, const mpq_importance_method *m,
                              const mpq_measure_table *t, const mpq_family_info *fi, int64_t nk,
                              const int32_t *nc, const int32_t *col, const uint8_t *skip,
                              double *score) {
    for (int64_t l = 0; l < t->nl; l++) {
        const int64_t n = nc ? nc[l] : nk;
        for (int64_t k = 0; k < n; k++) {
            const double v = m->score(t, l, col ? col[k] : k);
            MPQ_CHECK((skip && skip[l]) || (isfinite(v) && v >= 0.0), MPQ_ERR_NUMERIC,
                      "importance: score of layer %s candidate %lld is %g", fi->layers[l].name,
                      (long long)k, v);
            score[l * nk + k] = v;
        }
    }
    return MPQ_OK;
}

/* ---- the layer energies -------------------------------------------------------------- */

mpq_err mpq_importance_energy(mpq_ctx *ctx, const mpq_family_info *fi, int64_t nj,
                              const int64_t *lay, float *const *W, const mpq_hstat *const *H,
                              const mpq_hset *own, double *energy) {
    mpq_err err = MPQ_OK;
    float *zero = NULL;
    double *rl = NULL, *e = NULL;
    MPQ_ALLOC_TRY(e, nj > 0 ? nj : 1);
    for (int64_t j = 0; j < nj; j++) {
        if ((own ? own[j].first : (int)(j % ctx->size)) != ctx->rank)
            continue;
        const mpq_layer_info *li = &fi->layers[lay[j]];
        MPQ_ALLOC_TRY(zero, li->out * li->in);
        MPQ_ALLOC_TRY(rl, li->out);
        MPQ_TRY(mpq_round_loss(ctx, li->in, H[j]->H, li->out, W[j], zero, rl));
        for (int64_t r = 0; r < li->out; r++)
            e[j] += rl[r];
        MPQ_FREE(zero);
        MPQ_FREE(rl);
    }
cleanup:
    mpq_free(zero);
    mpq_free(rl);
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK)
        err = mpq_sum_owned(ctx, e, nj, MPI_DOUBLE, "measurements");
    for (int64_t j = 0; err == MPQ_OK && j < nj; j++)
        energy[lay[j]] = e[j];
    mpq_free(e);
    return err;
}

/* ---- the probed candidate ------------------------------------------------------------ */

mpq_err mpq_importance_probe_candidate(mpq_ctx *ctx, const mpq_config *cfg,
                                       const mpq_family_info *fi, int32_t ncand,
                                       const mpq_qspec *cand, const mpq_qspec *want, int32_t *k) {
    if (want) {
        for (int32_t c = 0; c < ncand; c++)
            if (mpq_qspec_equal(&cand[c], want)) {
                *k = c;
                return MPQ_OK;
            }
        return MPQ_ERROR(MPQ_ERR_CONFIG,
                         "%s: importance.sensitivity_spec: \"%s\" is not one of quant.candidates",
                         cfg->source, cfg->importance.sensitivity_spec);
    }
    int64_t best = -1;
    for (int32_t c = 0; c < ncand; c++) {
        int64_t tot = 0;
        for (int64_t l = 0; l < fi->nlayers; l++) {
            int64_t b;
            MPQ_CALL(
                mpq_quant_storage_bits(ctx, &cand[c], fi->layers[l].out, fi->layers[l].in, &b));
            tot += b;
        }
        if (best < 0 || tot < best) {
            best = tot;
            *k = c;
        }
    }
    return MPQ_OK;
}
