/* round_core.c: options, the method registry, the layer problem (column
 * order, factor of the damped inverse Hessian, whole-layer fits), the exact
 * objective, the tile driver with its RTN guard, and the RTN method. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "round_internal.h"

/* ---- options ----------------------------------------------------------------- */

void mpq_round_opts_default(mpq_round_opts *o) {
    memset(o, 0, sizeof *o);
    o->block_size = 128;
    o->gptq_float = -1;
    o->act_order = 1;
    o->static_groups = 0;
    mpq_hfactor_opts_default(&o->hf);
    o->iters = 200;
    o->lr = 0.0;
    o->lr_scale = 0.0;
    o->lambda = 100.0;
    o->beta_start = 20.0;
    o->beta_end = 2.0;
    o->warmup = 0.2;
    o->init = MPQ_RINIT_GPTQ;
    o->optimizer = MPQ_ROPT_AUTO;
    o->momentum = 0.9;
    o->learn_scales = -1;
    o->variable = MPQ_RVAR_AUTO;
    o->seed = 0;
    o->init_noise = 0.0;
    o->tile_rows = 128;
    o->rtn_guard = 1;
}

static int pick(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

mpq_err mpq_round_from_config(mpq_ctx *ctx, const mpq_config *cfg, mpq_round_opts *o,
                              mpq_qspec *spec, const mpq_round_method **method) {
    static const char *const opt_names[] = {"auto", "adam", "signsgd", "sgdm"};
    static const char *const var_names[] = {"auto", "sigmoid", "offset"};
    static const char *const init_names[] = {"rtn", "gptq"};
    static const char *const ls_names[] = {"off", "on", "auto"};
    mpq_round_opts_default(o);
    mpq_hfactor_opts_from_config(cfg, &o->hf);
    o->block_size = cfg->round.block_size;
    o->act_order = cfg->round.act_order;
    o->static_groups = cfg->round.static_groups;
    o->gptq_float = strcmp(cfg->round.gptq_precision, "float") == 0    ? 1
                    : strcmp(cfg->round.gptq_precision, "double") == 0 ? 0
                                                                       : -1;
    o->iters = cfg->round.iters;
    o->lr = cfg->round.lr;
    o->lr_scale = cfg->round.lr_scale;
    o->lambda = cfg->round.lambda;
    o->beta_start = cfg->round.beta_start;
    o->beta_end = cfg->round.beta_end;
    o->warmup = cfg->round.warmup;
    o->momentum = cfg->round.momentum;
    o->seed = (uint64_t)cfg->round.seed;
    o->init_noise = cfg->round.init_noise;
    o->tile_rows = cfg->round.tile_rows;
    o->rtn_guard = cfg->round.rtn_guard;
    o->rate_lambda = cfg->round.rate_lambda;
    int k = pick(cfg->round.optimizer, opt_names, 4);
    int v = pick(cfg->round.variable, var_names, 3);
    int in = pick(cfg->round.init, init_names, 2);
    int ls = pick(cfg->round.learn_scales, ls_names, 3);
    MPQ_CHECK(k >= 0 && v >= 0 && in >= 0 && ls >= 0, MPQ_ERR_CONFIG,
              "%s: round: invalid optimizer '%s', variable '%s', init '%s' or learn_scales '%s'",
              cfg->source, cfg->round.optimizer, cfg->round.variable, cfg->round.init,
              cfg->round.learn_scales);
    o->optimizer = (mpq_ropt)k;
    o->variable = (mpq_rvar)v;
    o->init = (mpq_rinit)in;
    o->learn_scales = ls == 2 ? -1 : ls;

    if (spec) {
        mpq_err e = mpq_qspec_parse(ctx, cfg->quant.spec, spec);
        if (e != MPQ_OK) {
            char msg[MPQ_ERRMSG_MAX];
            snprintf(msg, sizeof msg, "%s", ctx->err_msg);
            mpq_err_clear(ctx);
            return MPQ_ERROR(MPQ_ERR_CONFIG, "%s: quant.spec = \"%s\": %s", cfg->source,
                             cfg->quant.spec, msg);
        }
    }
    if (method) {
        int64_t i = 0;
        char lead[512];
        snprintf(lead, sizeof lead, "%s: quant.method: unknown method", cfg->source);
        MPQ_CALL(mpq_registry_lookup(ctx, &mpq_round_method_reg, cfg->quant.method, MPQ_ERR_CONFIG,
                                     lead, &i));
        *method = mpq_round_methods[i];
        /* the code lengths enter GPTQ's per-weight choice alone (README) */
        MPQ_CHECK(o->rate_lambda == 0.0 || *method == &mpq_round_gptq, MPQ_ERR_CONFIG,
                  "%s: round.rate_lambda = %g needs quant.method = gptq (got '%s'): rate-aware "
                  "rounding is not implemented for the other methods",
                  cfg->source, o->rate_lambda, cfg->quant.method);
        /* the block loss's refinement would move the codes without the rate */
        MPQ_CHECK(o->rate_lambda == 0.0 || strcmp(cfg->round.loss, "layer") == 0, MPQ_ERR_CONFIG,
                  "%s: round.rate_lambda = %g needs round.loss = \"layer\" (the block loss's "
                  "refinement does not weigh the code lengths)",
                  cfg->source, o->rate_lambda);
    }
    return MPQ_OK;
}

/* ---- registry ------------------------------------------------------------------ */

const mpq_round_method *const mpq_round_methods[] = {
    &mpq_round_rtn, &mpq_round_gptq, &mpq_round_adaround, &mpq_round_signround, NULL};

static const char *method_name_at(int64_t i) {
    return mpq_round_methods[i] ? mpq_round_methods[i]->name : NULL;
}

const mpq_registry mpq_round_method_reg = {.what = "rounding method", .name_at = method_name_at};

const mpq_round_method *mpq_round_method_find(const char *name) {
    int64_t i = mpq_registry_index(&mpq_round_method_reg, name);
    return i < 0 ? NULL : mpq_round_methods[i];
}

/* ---- the problem ------------------------------------------------------------------ */

/* Sort key of act_order: decreasing diag H, then increasing index, so the
 * order is a pure function of H. */
typedef struct diag_key {
    double d;
    int64_t i;
} diag_key;

static int cmp_diag(const void *a, const void *b) {
    const diag_key *x = a, *y = b;
    if (x->d != y->d)
        return x->d > y->d ? -1 : 1;
    return x->i < y->i ? -1 : (x->i > y->i ? 1 : 0);
}

/* The column order of a problem: by decreasing H diagonal (dg[c * stride])
 * with act_order (ties by index), else natural. perm [cols]. Local. */
static mpq_err column_order(mpq_ctx *ctx, int act_order, int64_t cols, const double *dg,
                            int64_t stride, int64_t *perm) {
    diag_key *keys = NULL;
    MPQ_ALLOC(keys, cols);
    for (int64_t c = 0; c < cols; c++) {
        keys[c].d = act_order ? dg[c * stride] : 0.0;
        keys[c].i = c;
    }
    qsort(keys, (size_t)cols, sizeof *keys, cmp_diag);
    for (int64_t c = 0; c < cols; c++)
        perm[c] = keys[c].i;
    mpq_free(keys);
    return MPQ_OK;
}

int mpq_round_shared_factor(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_method *method,
                            int64_t cols) {
    if (!method || !method->needs_factor || !method->needs_factor(o))
        return 0;
    if (ctx->comm == MPI_COMM_NULL)
        return 0;
    /* A collective backend factorises on every rank: the factor is shared. */
    const mpq_hfactor_backend *be = mpq_hfactor_choose_backend(ctx, &o->hf, cols);
    return be && be->collective;
}

int mpq_round_factor_local(const mpq_round_opts *o, const mpq_hset *set) {
    return set->count == 1 && strcmp(o->hf.scalapack, "auto") == 0;
}

/* 1 when the spec has per-tensor values (parameters fitted on the whole
 * layer). */
static int spec_tensor_level(const mpq_qspec *spec) {
    return spec->gran == MPQ_QGRAN_TENSOR || spec->ops->has_tensor ||
           spec->scale == MPQ_QSCALE_E4M3;
}

/* 1 when the spec's groups may be refitted by GPTQ: group granularity
 * without per-tensor values. */
static int spec_refit_ok(const mpq_qspec *spec) {
    return spec->gran == MPQ_QGRAN_GROUP && !spec_tensor_level(spec);
}

int mpq_round_gptq_vform(const mpq_round_opts *o, const mpq_qspec *spec, int64_t cols) {
    return o->static_groups || !spec_refit_ok(spec) ||
           (!o->act_order && mpq_round_gptq_float(o, cols));
}

/* The factorisation output GPTQ's form needs, and taking it out of f. */
static unsigned gptq_factor_kind(int vform) {
    return vform ? MPQ_HF_RCHOL : MPQ_HF_INV_CHOL;
}

/* The factorisation options of a GPTQ layer of width cols: in float32
 * (checked, hfactor.c) where the updates are (round.gptq_precision). */
static mpq_hfactor_opts gptq_hf(const mpq_round_opts *o, int64_t cols) {
    mpq_hfactor_opts hf = o->hf;
    hf.single = mpq_round_gptq_float(o, cols);
    return hf;
}

/* The factor out of f: float32 (f->factor_f) when f->single, else double. */
static void *take_gptq_factor(mpq_hfactor *f, int vform) {
    if (f->factor_f) {
        float *m = f->factor_f;
        f->factor_f = NULL;
        return m;
    }
    double **p = vform ? &f->rchol : &f->inv_chol;
    double *m = *p;
    *p = NULL;
    return m;
}

mpq_err mpq_round_factor_shared(mpq_ctx *ctx, const mpq_round_opts *o, const char *name,
                                int64_t cols, const double *H, const mpq_hset *set, int vform,
                                void **V, mpq_round_damp *damp) {
    const unsigned what = gptq_factor_kind(vform);
    mpq_err err = MPQ_OK;
    int64_t *perm = NULL;
    mpq_hfactor *f = NULL;
    *V = NULL;
    *damp = (mpq_round_damp){0.0, 0.0, 0};
    /* Every owner holds H and computes the column order itself. */
    if (mpq_hset_has(set, ctx->rank)) {
        err = mpq_malloc(ctx, cols, sizeof *perm, (void **)&perm);
        if (err == MPQ_OK)
            err = column_order(ctx, o->act_order, cols, H, cols + 1, perm);
    }
    if (mpq_round_factor_local(o, set)) {
        /* one owner: LAPACK on it alone, no collective step (the other
         * ranks go on with their own work) */
        const mpq_hfactor_opts hf = gptq_hf(o, cols);
        if (err == MPQ_OK && mpq_hset_has(set, ctx->rank))
            err = mpq_hfactor_local_perm(ctx, &hf, name, cols, H, perm, what, &f);
        if (err != MPQ_OK || !f)
            goto cleanup;
    } else {
        MPQ_TRY(mpq_agree(ctx, err));
        MPQ_TRY(mpq_hfactor_compute_set(ctx, &o->hf, name, cols, H, perm, set->first, set->count,
                                        what, &f));
    }
    MPQ_INFO("round %s: H (%lld x %lld) factored with %s on a %d x %d grid of ranks %d to %d, "
             "block %d, damping %g",
             name, (long long)cols, (long long)cols, f->backend, f->nprow, f->npcol, set->first,
             set->first + set->count - 1, f->nb, f->damping);
    *V = take_gptq_factor(f, vform); /* on the owners only */
    *damp = (mpq_round_damp){f->damping, f->lambda, f->single};
cleanup:
    mpq_hfactor_destroy(&f);
    mpq_free(perm);
    return err;
}

/* V (row-major upper, Hd = V V^T) into M in place: every column above the
 * diagonal divided by its diagonal entry diag[k], which stays
 * (mpq_round_problem). */
static void scale_factor(int64_t n, const double *diag, double *v) {
    for (int64_t j = 0; j < n; j++)
        for (int64_t k = j + 1; k < n; k++)
            v[j * n + k] /= diag[k];
}

/* GPTQ's factor of pb: V when given (factored once over the process grid,
 * mpq_round_factor_shared; copied), else LAPACK on this rank (below the
 * ScaLAPACK width the factor must not depend on a process grid:
 * bit-identity across rank counts); float32 when damp.single (f->single),
 * else double. Its diagonal goes to pb->mdiag, the V form's columns are
 * divided by it (scale_factor); with float32 updates only pb->Mf is kept
 * (a float32 factor of this rank's becomes it in place), else the double
 * pb->M. dg, stride: H's diagonal. */
static mpq_err problem_factor(mpq_ctx *ctx, const mpq_round_opts *o, mpq_round_problem *pb,
                              const double *H, const double *dg, int64_t stride, const void *V,
                              mpq_round_damp damp) {
    mpq_err err = MPQ_OK;
    mpq_hfactor *f = NULL;
    void *own = NULL;
    const int64_t cols = pb->cols;
    pb->vform = mpq_round_gptq_vform(o, &pb->spec, cols);
    if (V) {
        pb->damping = damp.damping;
        pb->lambda = damp.lambda;
        pb->factor_single = damp.single;
    } else {
        const mpq_hfactor_opts hf = gptq_hf(o, cols);
        MPQ_TRY(mpq_hfactor_local_perm(ctx, &hf, pb->name, cols, H, pb->perm,
                                       gptq_factor_kind(pb->vform), &f));
        own = take_gptq_factor(f, pb->vform);
        pb->damping = f->damping;
        pb->lambda = f->lambda;
        pb->factor_single = f->single;
        V = own;
    }
    const float *Vs = pb->factor_single ? V : NULL;
    const double *Vd = pb->factor_single ? NULL : V;
    MPQ_ALLOC_TRY(pb->mdiag, cols);
    for (int64_t j = 0; j < cols; j++)
        pb->mdiag[j] = Vs ? (double)Vs[j * cols + j] : Vd[j * cols + j];
    if (mpq_round_gptq_float(o, cols)) {
        /* this rank's float32 factor becomes Mf in place: only the V form's
         * columns above the diagonal change */
        const int in_place = Vs && own;
        if (in_place) {
            pb->Mf = own;
            own = NULL;
        } else {
            MPQ_ALLOC_TRY(pb->Mf, cols * cols);
        }
        for (int64_t j = 0; j < cols && (!in_place || pb->vform); j++)
            for (int64_t k = in_place ? j + 1 : 0; k < cols; k++) {
                const double v = Vs ? (double)Vs[j * cols + k] : Vd[j * cols + k];
                pb->Mf[j * cols + k] = (float)(pb->vform && k > j ? v / pb->mdiag[k] : v);
            }
    } else {
        if (Vd && own) {
            pb->M = own;
            own = NULL;
        } else {
            MPQ_ALLOC_TRY(pb->M, cols * cols);
            for (int64_t i = 0; i < cols * cols; i++)
                pb->M[i] = Vs ? (double)Vs[i] : Vd[i];
        }
        if (pb->vform)
            scale_factor(cols, pb->mdiag, pb->M);
    }
    /* What the damping added to each diagonal entry, in the column order:
     * the loss through M subtracts it (codes_loss). */
    MPQ_ALLOC_TRY(pb->added, cols);
    for (int64_t j = 0; j < cols; j++)
        pb->added[j] = mpq_hfactor_added(dg[pb->perm[j] * stride], pb->lambda);
cleanup:
    mpq_free(own);
    mpq_hfactor_destroy(&f);
    return err;
}

mpq_err mpq_round_problem_create(mpq_ctx *ctx, const mpq_round_opts *o,
                                 const mpq_round_method *method, const char *name,
                                 const mpq_qspec *spec, int64_t rows, int64_t cols, const float *W,
                                 const double *H, mpq_round_problem **out) {
    return mpq_round_problem_create_ex(ctx, o, method, name, spec, rows, cols, W, H, NULL, NULL,
                                       (mpq_round_damp){0.0, 0.0, 0}, out);
}

mpq_err mpq_round_problem_create_ex(mpq_ctx *ctx, const mpq_round_opts *o,
                                    const mpq_round_method *method, const char *name,
                                    const mpq_qspec *spec, int64_t rows, int64_t cols,
                                    const float *W, const double *H, const double *diag,
                                    const void *V, mpq_round_damp damp, mpq_round_problem **out) {
    mpq_err err = MPQ_OK;
    mpq_round_problem *pb = NULL;
    /* RTN alone may go without H: unweighted (diag) and without losses */
    const int needs_h = method != NULL && method != &mpq_round_rtn;
    MPQ_CHECK(rows >= 1 && cols >= 1 && W && (H || (diag && !needs_h)) && spec && spec->ops,
              MPQ_ERR_ARG,
              "round: layer '%s': bad shape [%lld][%lld] or missing weights/statistics",
              name ? name : "?", (long long)rows, (long long)cols);
    MPQ_ALLOC(pb, 1);
    snprintf(pb->name, sizeof pb->name, "%s", name ? name : "layer");
    pb->rows = rows;
    pb->cols = cols;
    pb->W = W;
    pb->H = H;
    pb->spec = *spec;
    pb->damping = o->hf.damping;
    MPQ_ALLOC_TRY(pb->imp, cols);
    MPQ_ALLOC_TRY(pb->perm, cols);
    const double *dg = diag ? diag : H;
    const int64_t stride = diag ? 1 : cols + 1;
    for (int64_t c = 0; c < cols; c++) {
        double d = dg[c * stride];
        MPQ_ENSURE(isfinite(d) && d >= 0.0, MPQ_ERR_NUMERIC,
                   "round: layer '%s': H[%lld][%lld] = %g (must be finite and >= 0)", pb->name,
                   (long long)c, (long long)c, d);
        pb->imp[c] = d > 3e38 ? 3e38f : (float)d;
        pb->n_dead += d == 0.0;
    }
    MPQ_TRY(column_order(ctx, o->act_order, cols, dg, stride, pb->perm));

    if (method && method->needs_factor && method->needs_factor(o))
        MPQ_TRY(problem_factor(ctx, o, pb, H, dg, stride, V, damp));

    pb->tensor_level = spec_tensor_level(spec);
    pb->refit_ok = spec_refit_ok(spec);
    if (pb->tensor_level) {
        MPQ_TRY(mpq_qparams_create(ctx, spec, rows, cols, &pb->base));
        MPQ_TRY(mpq_quant_fit(ctx, pb->base, W, pb->imp));
    }
    if (o->rate_lambda > 0.0 && method == &mpq_round_gptq)
        MPQ_TRY(mpq_round_rate_lengths(ctx, pb));
    *out = pb;
cleanup:
    if (err != MPQ_OK)
        mpq_round_problem_destroy(&pb);
    return err;
}

void mpq_round_problem_destroy(mpq_round_problem **pb) {
    if (!pb || !*pb)
        return;
    MPQ_FREE((*pb)->imp);
    MPQ_FREE((*pb)->perm);
    MPQ_FREE((*pb)->M);
    MPQ_FREE((*pb)->Mf);
    MPQ_FREE((*pb)->mdiag);
    MPQ_FREE((*pb)->added);
    MPQ_FREE((*pb)->rate_len);
    mpq_qparams_destroy(&(*pb)->base);
    MPQ_FREE(*pb);
}

/* ---- fitting ------------------------------------------------------------------------ */

/* Groups of rows [r0, r1) are the contiguous range [g0, g0 + n) of the
 * parameter arrays (per-row groups are stored row-major). */
static void row_groups(const mpq_qparams *p, int64_t r0, int64_t r1, int64_t *g0, int64_t *n) {
    if (p->gpr == 0) {
        *g0 = 0;
        *n = 1;
    } else {
        *g0 = r0 * p->gpr;
        *n = (r1 - r0) * p->gpr;
    }
}

static void copy_rows(mpq_qparams *dst, const mpq_qparams *src, int64_t dr0, int64_t sr0,
                      int64_t nr) {
    int64_t dg, sg, n;
    row_groups(dst, dr0, dr0 + nr, &dg, &n);
    row_groups(src, sr0, sr0 + nr, &sg, &n);
    memcpy(dst->scale + dg, src->scale + sg, (size_t)n * sizeof *dst->scale);
    if (dst->zero)
        memcpy(dst->zero + dg, src->zero + sg, (size_t)n * sizeof *dst->zero);
    if (dst->sign)
        memcpy(dst->sign + dr0, src->sign + sr0, (size_t)nr * sizeof *dst->sign);
}

mpq_err mpq_round_fit_rows(mpq_ctx *ctx, const mpq_round_problem *pb, mpq_qparams *p, int64_t r0,
                           int64_t r1) {
    mpq_err err = MPQ_OK;
    mpq_qparams *t = NULL;
    if (pb->base) {
        p->tensor_scale = pb->base->tensor_scale;
        p->expo = pb->base->expo;
        p->tab[0] = pb->base->tab[0];
        p->tab[1] = pb->base->tab[1];
        copy_rows(p, pb->base, r0, r0, r1 - r0);
        return MPQ_OK;
    }
    /* Groups never span rows and the tables depend on the spec only, so a
     * fit of the rows alone gives the bits of a whole-layer fit. */
    MPQ_TRY(mpq_qparams_create(ctx, &pb->spec, r1 - r0, pb->cols, &t));
    MPQ_TRY(mpq_quant_fit(ctx, t, pb->W + r0 * pb->cols, pb->imp));
    copy_rows(p, t, r0, 0, r1 - r0);
cleanup:
    mpq_qparams_destroy(&t);
    return err;
}

mpq_err mpq_round_refit_group(mpq_ctx *ctx, const mpq_round_problem *pb, mpq_qparams *p, int64_t r0,
                              int64_t r1, int64_t c0, int64_t len, const float *w,
                              mpq_qparams **tmp) {
    int64_t nr = r1 - r0;
    if (!*tmp || (*tmp)->cols != len || (*tmp)->rows != nr) {
        mpq_qparams_destroy(tmp);
        mpq_qspec s = pb->spec;
        s.group = len;
        MPQ_CALL(mpq_qparams_create(ctx, &s, nr, len, tmp));
    }
    MPQ_CALL(mpq_quant_fit(ctx, *tmp, w, pb->imp + c0));
    for (int64_t i = 0; i < nr; i++) {
        int64_t g = mpq_qgroup_of(p, r0 + i, c0);
        p->scale[g] = (*tmp)->scale[i];
        if (p->zero)
            p->zero[g] = (*tmp)->zero[i];
    }
    return MPQ_OK;
}

float mpq_round_store_scale(const mpq_qparams *p, double eff) {
    double raw = eff;
    if (!(raw > 0.0))
        raw = 0x1p-100;
    if (raw > 1e30)
        raw = 1e30;
    switch (p->spec.scale) {
        case MPQ_QSCALE_FP16:
            return mpq_round_fp16((float)raw);
        case MPQ_QSCALE_E8M0:
            /* Nearest power of two in the log domain. */
            return mpq_floor_e8m0((float)(raw * 1.4142135623730951));
        case MPQ_QSCALE_E4M3:
            return mpq_round_e4m3((float)(raw / (double)p->tensor_scale));
        default: {
            float v = (float)raw;
            return v < 0x1p-100f ? 0x1p-100f : v;
        }
    }
}

/* ---- the objective ----------------------------------------------------------------- */

mpq_err mpq_round_loss_d(mpq_ctx *ctx, int64_t cols, const double *H, int64_t nr, const double *D,
                         double *T, double *loss) {
    int n, m;
    MPQ_CALL(mpq_to_int(ctx, cols, "layer width (BLAS)", &n));
    MPQ_CALL(mpq_to_int(ctx, nr, "tile rows (BLAS)", &m));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, n, 1.0, D, n, H, n, 0.0, T, n);
    for (int64_t r = 0; r < nr; r++) {
        const double *d = D + r * cols, *t = T + r * cols;
        double s = 0.0;
        for (int64_t c = 0; c < cols; c++)
            s += d[c] * t[c];
        loss[r] = s;
    }
    return MPQ_OK;
}

static mpq_err loss_or_grad(mpq_ctx *ctx, int64_t cols, const double *H, int64_t nr, const float *W,
                            const float *Q, double *loss, double *G) {
    mpq_err err = MPQ_OK;
    double *D = NULL, *T = NULL;
    int64_t n;
    MPQ_CALL(mpq_mul64(ctx, nr, cols, "tile size", &n));
    MPQ_ALLOC_TRY(D, n);
    if (!G)
        MPQ_ALLOC_TRY(T, n);
    for (int64_t i = 0; i < n; i++)
        D[i] = G ? 2.0 * ((double)Q[i] - (double)W[i]) : (double)W[i] - (double)Q[i];
    if (G) {
        int ni, mi;
        MPQ_TRY(mpq_to_int(ctx, cols, "layer width (BLAS)", &ni));
        MPQ_TRY(mpq_to_int(ctx, nr, "tile rows (BLAS)", &mi));
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mi, ni, ni, 1.0, D, ni, H, ni, 0.0,
                    G, ni);
    } else {
        MPQ_TRY(mpq_round_loss_d(ctx, cols, H, nr, D, T, loss));
    }
cleanup:
    MPQ_FREE(T);
    MPQ_FREE(D);
    return err;
}

mpq_err mpq_round_loss(mpq_ctx *ctx, int64_t cols, const double *H, int64_t nr, const float *W,
                       const float *Q, double *loss) {
    return loss_or_grad(ctx, cols, H, nr, W, Q, loss, NULL);
}

mpq_err mpq_round_grad(mpq_ctx *ctx, int64_t cols, const double *H, int64_t nr, const float *W,
                       const float *Q, double *G) {
    return loss_or_grad(ctx, cols, H, nr, W, Q, NULL, G);
}

/* ---- the tile driver ------------------------------------------------------------------ */

/* Row losses d H d^T through the factor: with Hd = H + diag(added) =
 * V V^T (column order perm), d Hd d^T = |d_perm V|^2, one triangular
 * product (half the flops of the product with H): with pb->vform, d_perm
 * times M with a unit diagonal, each column k then scaled by V[k][k] =
 * M[k][k]; else V = U^-1, a triangular solve with U; less
 * d diag(added) d^T. Equal to the product up to rounding; a row whose
 * difference rounds below zero gets 0. With GPTQ in float (pb->Mf) the
 * product is in float too, at twice the rate, in D's first half. */
static mpq_err loss_via_factor(mpq_ctx *ctx, const mpq_round_problem *pb, const mpq_qparams *p,
                               int64_t r0, int64_t r1, const uint8_t *codes, float *qrow, double *D,
                               double *loss) {
    const int64_t n = pb->cols, nr = r1 - r0;
    float *Df = pb->Mf ? (float *)D : NULL;
    int ni, mi;
    MPQ_CALL(mpq_to_int(ctx, n, "layer width (BLAS)", &ni));
    MPQ_CALL(mpq_to_int(ctx, nr, "tile rows (BLAS)", &mi));
    for (int64_t i = 0; i < nr; i++) {
        const float *w = pb->W + (r0 + i) * n;
        double s = 0.0;
        mpq_quant_row_dequant(p, r0 + i, codes + i * n, qrow);
        for (int64_t j = 0; j < n; j++) {
            const int64_t c = pb->perm[j];
            const double d = (double)w[c] - (double)qrow[c];
            if (Df)
                Df[i * n + j] = (float)d;
            else
                D[i * n + j] = d;
            s += pb->added[j] * d * d;
        }
        loss[i] = s;
    }
    if (Df && pb->vform)
        cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasUnit, mi, ni, 1.0f,
                    pb->Mf, ni, Df, ni);
    else if (pb->vform)
        cblas_dtrmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasUnit, mi, ni, 1.0,
                    pb->M, ni, D, ni);
    else if (Df)
        cblas_strsm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, mi, ni, 1.0f,
                    pb->Mf, ni, Df, ni);
    else
        cblas_dtrsm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, mi, ni, 1.0,
                    pb->M, ni, D, ni);
    for (int64_t i = 0; i < nr; i++) {
        double s = 0.0;
        for (int64_t j = 0; j < n; j++) {
            double x = Df ? (double)Df[i * n + j] : D[i * n + j];
            x = pb->vform ? x * pb->mdiag[j] : x;
            s += x * x;
        }
        loss[i] = s > loss[i] ? s - loss[i] : 0.0;
    }
    return MPQ_OK;
}

/* Row losses of codes for rows [r0, r1) with the current p. */
static mpq_err codes_loss(mpq_ctx *ctx, const mpq_round_problem *pb, const mpq_qparams *p,
                          int64_t r0, int64_t r1, const uint8_t *codes, float *qrow, double *D,
                          double *T, double *loss) {
    int64_t n = pb->cols;
    if (pb->M || pb->Mf)
        return loss_via_factor(ctx, pb, p, r0, r1, codes, qrow, D, loss);
    for (int64_t i = 0; i < r1 - r0; i++) {
        const float *w = pb->W + (r0 + i) * n;
        mpq_quant_row_dequant(p, r0 + i, codes + i * n, qrow);
        for (int64_t c = 0; c < n; c++)
            D[i * n + c] = (double)w[c] - (double)qrow[c];
    }
    return mpq_round_loss_d(ctx, n, pb->H, r1 - r0, D, T, loss);
}

mpq_err mpq_round_tile(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_method *method,
                       const mpq_round_problem *pb, mpq_qparams *p, int64_t r0, int64_t r1,
                       uint8_t *codes, mpq_round_stats *st) {
    mpq_err err = MPQ_OK;
    uint8_t *rcodes = NULL;
    float *qrow = NULL;
    double *D = NULL, *T = NULL, *lr = NULL, *lm = NULL, *rr = NULL;
    mpq_qparams *saved = NULL;
    const int64_t n = pb->cols, nr = r1 - r0;
    double t0 = mpq_now();
    MPQ_CHECK(r0 >= 0 && r1 <= pb->rows && r0 < r1 && p->rows == pb->rows && p->cols == n &&
                  mpq_qspec_equal(&p->spec, &pb->spec),
              MPQ_ERR_ARG, "round: layer '%s': bad tile [%lld, %lld) or parameters", pb->name,
              (long long)r0, (long long)r1);
    memset(st, 0, sizeof *st);
    /* Without H (RTN without calibration) no loss is measured: NaN. */
    const int measured = pb->H || pb->M || pb->Mf;
    MPQ_ALLOC_TRY(qrow, n);
    if (measured) /* with pb->Mf the differences are float32: half of it */
        MPQ_ALLOC_TRY(D, pb->Mf ? (nr * n + 1) / 2 : nr * n);
    if (measured && !pb->M && !pb->Mf)
        MPQ_ALLOC_TRY(T, nr * n);
    MPQ_ALLOC_TRY(lr, nr);
    MPQ_ALLOC_TRY(lm, nr);
    MPQ_TRY(mpq_round_fit_rows(ctx, pb, p, r0, r1));
    /* RTN's loss costs a product as large as GPTQ's own updates: it is
     * measured for the guard only (round.rtn_guard = false: NaN, except for
     * the rtn method, whose loss it is) */
    const int is_rtn = strcmp(method->name, "rtn") == 0;
    if (measured && o->rtn_guard) {
        MPQ_ALLOC_TRY(rcodes, nr * n);
        for (int64_t i = 0; i < nr; i++)
            mpq_quant_row_nearest(p, r0 + i, pb->W + (r0 + i) * n, rcodes + i * n);
        MPQ_TRY(codes_loss(ctx, pb, p, r0, r1, rcodes, qrow, D, T, lr));
    } else {
        for (int64_t i = 0; i < nr; i++)
            lr[i] = lm[i] = NAN;
    }
    if (o->rtn_guard && measured) {
        MPQ_TRY(mpq_qparams_create(ctx, &pb->spec, nr, n, &saved));
        copy_rows(saved, p, 0, r0, nr);
    }
    /* with rate-aware rounding the guard compares loss + rate: RTN's rate
     * under the parameters it was rounded with */
    const int rate = o->rtn_guard && measured && pb->rate_len && o->rate_lambda > 0.0;
    if (rate) {
        MPQ_ALLOC_TRY(rr, nr);
        for (int64_t i = 0; i < nr; i++)
            rr[i] = o->rate_lambda * mpq_round_rate_cost(pb, p, r0 + i, rcodes + i * n);
    }

    st->init_loss = NAN;
    st->row_loss = lm;
    MPQ_TRY(method->run(ctx, o, pb, p, r0, r1, codes, st));
    for (int64_t i = 0; i < nr; i++) {
        const mpq_qtable *tb = mpq_qtable_of(p, r0 + i);
        for (int64_t c = 0; c < n; c++) {
            uint8_t k = codes[i * n + c];
            MPQ_ENSURE(k < tb->ncodes && !isnan(tb->level[k]), MPQ_ERR_INTERNAL,
                       "round: layer '%s': method %s produced unused code %u at [%lld][%lld]",
                       pb->name, method->name, (unsigned)k, (long long)(r0 + i), (long long)c);
        }
    }
    if (!st->row_loss_set && measured && is_rtn && o->rtn_guard)
        memcpy(lm, lr, (size_t)nr * sizeof *lm); /* rtn's codes are rcodes, measured above */
    else if (!st->row_loss_set && measured)
        MPQ_TRY(codes_loss(ctx, pb, p, r0, r1, codes, qrow, D, T, lm));
    st->row_loss = NULL;
    double loss = 0.0, rtn = 0.0;
    for (int64_t i = 0; i < nr; i++) {
        MPQ_ENSURE(isfinite(lm[i]) || !measured, MPQ_ERR_NUMERIC,
                   "round: layer '%s': method %s gave a non-finite loss in row %lld", pb->name,
                   method->name, (long long)(r0 + i));
        const double jm =
            rate ? lm[i] + o->rate_lambda * mpq_round_rate_cost(pb, p, r0 + i, codes + i * n)
                 : lm[i];
        if (o->rtn_guard && measured && jm > (rate ? lr[i] + rr[i] : lr[i])) {
            memcpy(codes + i * n, rcodes + i * n, (size_t)n);
            copy_rows(p, saved, r0 + i, i, 1);
            lm[i] = lr[i];
            st->rows_guarded++;
        }
        loss += lm[i];
        rtn += is_rtn ? lm[i] : lr[i];
    }
    st->loss = loss;
    st->rtn_loss = rtn;
    if (isnan(st->init_loss))
        st->init_loss = loss;
    st->seconds = mpq_now() - t0;
cleanup:
    mpq_qparams_destroy(&saved);
    MPQ_FREE(rr);
    MPQ_FREE(lm);
    MPQ_FREE(lr);
    MPQ_FREE(T);
    MPQ_FREE(D);
    MPQ_FREE(qrow);
    MPQ_FREE(rcodes);
    return err;
}

/* ---- RTN ---------------------------------------------------------------------------------- */

static int no_factor(const mpq_round_opts *o) {
    (void)o;
    return 0;
}

static double rtn_cost(const mpq_round_opts *o, int64_t nr, int64_t cols) {
    (void)o;
    return (double)nr * (double)cols;
}

static mpq_err rtn_run(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_problem *pb,
                       mpq_qparams *p, int64_t r0, int64_t r1, uint8_t *codes,
                       mpq_round_stats *st) {
    (void)ctx;
    (void)o;
    for (int64_t i = 0; i < r1 - r0; i++)
        mpq_quant_row_nearest(p, r0 + i, pb->W + (r0 + i) * pb->cols, codes + i * pb->cols);
    st->iters = 0;
    return MPQ_OK;
}

cJSON *mpq_round_settings_json(const mpq_round_opts *o, const mpq_round_method *m) {
    cJSON *out = cJSON_CreateObject();
    if (!out)
        return NULL;
    cJSON_AddStringToObject(out, "method", m ? m->name : "?");
    if (m && m->settings)
        m->settings(o, out);
    cJSON_AddNumberToObject(out, "tile_rows", (double)o->tile_rows);
    cJSON_AddBoolToObject(out, "rtn_guard", o->rtn_guard);
    return out;
}

const mpq_round_method mpq_round_rtn = {
    .name = "rtn",
    .summary = "nearest grid point of every weight",
    .needs_factor = no_factor,
    .cost = rtn_cost,
    .run = rtn_run,
};
