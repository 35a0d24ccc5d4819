/* quant_core.c: layer parameters, fitting (closed forms and the error-
 * minimising search), nearest rounding, neighbours, dequantization and grids,
 * shared by every quantizer family. */
#include <math.h>
#include <string.h>

#include "mpq_ctx.h"
#include "mpq_log.h"
#include "quant_internal.h"

/* Ratios tried by fit=search along the family's sweep (plus its closed forms). */
#define MPQ_QSWEEP_STEPS 32
/* Exponents tried for powerexp with a=auto: 0.25, 0.30, ..., 1.00. */
#define MPQ_QEXPO_STEPS 16
#define MPQ_QEXPO_MIN   0.25

/* ---- tables -------------------------------------------------------------- */

static void build_table(const mpq_qspec *s, float expo, int sign, mpq_qtable *t) {
    int nc = 1 << s->bits;
    t->ncodes = nc;
    for (int c = 0; c < MPQ_QMAXCODES; c++)
        t->level[c] = NAN;
    s->ops->levels(s, expo, sign, t->level);
    /* Insertion sort of the used codes by (level, code); keep the first code
     * of each distinct level, so -0 patterns map to the +0 code. */
    int n = 0;
    for (int c = 0; c < nc; c++) {
        float v = t->level[c];
        if (isnan(v))
            continue;
        int j = n;
        while (j > 0 && t->sorted[j - 1] > v) {
            t->sorted[j] = t->sorted[j - 1];
            t->code[j] = t->code[j - 1];
            j--;
        }
        t->sorted[j] = v;
        t->code[j] = (uint8_t)c;
        n++;
    }
    int m = 0;
    for (int j = 0; j < n; j++) {
        if (m > 0 && t->sorted[m - 1] == t->sorted[j])
            continue;
        t->sorted[m] = t->sorted[j];
        t->code[m] = t->code[j];
        m++;
    }
    t->n = m;
    for (int j = m; j < MPQ_QMAXCODES + 4; j++)
        t->sorted[j] = INFINITY;
    t->step0 = 0;
    while (2 * t->step0 <= m - 1)
        t->step0 = t->step0 ? 2 * t->step0 : 1;
    t->uniform = 1;
    for (int j = 1; j < m; j++)
        if (t->sorted[j] != t->sorted[0] + (float)j)
            t->uniform = 0;
    t->ident = t->uniform;
    for (int j = 0; j < m; j++)
        if (t->code[j] != j)
            t->ident = 0;
}

void mpq_qparams_tables(mpq_qparams *p) {
    build_table(&p->spec, p->expo, 1, &p->tab[0]);
    if (p->spec.ops->has_sign)
        build_table(&p->spec, p->expo, -1, &p->tab[1]);
    else
        p->tab[1] = p->tab[0];
}

/* ---- create / destroy ------------------------------------------------------ */

mpq_err mpq_qparams_create(mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                           mpq_qparams **out) {
    mpq_err err = MPQ_OK;
    mpq_qparams *p = NULL;
    MPQ_CHECK(spec && spec->ops, MPQ_ERR_ARG, "quantizer spec is not set");
    const mpq_quant_ops *ops = spec->ops;
    MPQ_CHECK(rows >= 1 && cols >= 1, MPQ_ERR_ARG,
              "quantizer '%s': layer shape [%lld][%lld] is not a matrix", ops->name,
              (long long)rows, (long long)cols);
    MPQ_CHECK(ops->grans & (1u << spec->gran), MPQ_ERR_ARG, "quantizer '%s' does not take gran=%s",
              ops->name, mpq_qgran_name(spec->gran));
    MPQ_CHECK(spec->bits >= ops->min_bits && spec->bits <= ops->max_bits, MPQ_ERR_ARG,
              "quantizer '%s': bits=%d outside [%d, %d]", ops->name, spec->bits, ops->min_bits,
              ops->max_bits);
    MPQ_CHECK(spec->gran != MPQ_QGRAN_GROUP || spec->group >= 1, MPQ_ERR_ARG,
              "quantizer '%s': group=%lld is not >= 1", ops->name, (long long)spec->group);
    MPQ_ALLOC(p, 1);
    p->spec = *spec;
    p->rows = rows;
    p->cols = cols;
    switch (spec->gran) {
        case MPQ_QGRAN_TENSOR:
            p->gcols = cols;
            p->gpr = 0;
            p->ngroups = 1;
            break;
        case MPQ_QGRAN_CHANNEL:
            p->gcols = cols;
            p->gpr = 1;
            p->ngroups = rows;
            break;
        default:
            p->gcols = spec->group < cols ? spec->group : cols;
            p->gpr = (cols + p->gcols - 1) / p->gcols;
            MPQ_TRY(mpq_mul64(ctx, rows, p->gpr, "number of quantization groups", &p->ngroups));
            break;
    }
    MPQ_ALLOC_TRY(p->scale, p->ngroups);
    for (int64_t g = 0; g < p->ngroups; g++)
        p->scale[g] = 1.0f;
    if (mpq_qspec_has_zero(spec))
        MPQ_ALLOC_TRY(p->zero, p->ngroups);
    if (ops->has_sign) {
        MPQ_ALLOC_TRY(p->sign, rows);
        for (int64_t r = 0; r < rows; r++)
            p->sign[r] = 1;
    }
    p->tensor_scale = 1.0f;
    p->expo = spec->a > 0.0 ? (float)spec->a : 1.0f;
    mpq_qparams_tables(p);
    *out = p;
    return MPQ_OK;
cleanup:
    mpq_qparams_destroy(&p);
    return err;
}

void mpq_qparams_destroy(mpq_qparams **p) {
    if (!p || !*p)
        return;
    MPQ_FREE((*p)->scale);
    MPQ_FREE((*p)->zero);
    MPQ_FREE((*p)->sign);
    MPQ_FREE(*p);
}

mpq_err mpq_qparams_copy(mpq_ctx *ctx, const mpq_qparams *src, mpq_qparams *dst) {
    MPQ_CHECK(mpq_qspec_equal(&src->spec, &dst->spec) && src->rows == dst->rows &&
                  src->cols == dst->cols,
              MPQ_ERR_ARG, "mpq_qparams_copy: spec or shape differ");
    memcpy(dst->scale, src->scale, (size_t)src->ngroups * sizeof *src->scale);
    if (src->zero)
        memcpy(dst->zero, src->zero, (size_t)src->ngroups * sizeof *src->zero);
    if (src->sign)
        memcpy(dst->sign, src->sign, (size_t)src->rows * sizeof *src->sign);
    dst->tensor_scale = src->tensor_scale;
    dst->expo = src->expo;
    dst->tab[0] = src->tab[0];
    dst->tab[1] = src->tab[1];
    return MPQ_OK;
}

/* ---- scale storage ----------------------------------------------------------- */

float mpq_qscale_store(const mpq_qparams *p, double raw) {
    switch (p->spec.scale) {
        case MPQ_QSCALE_FP16:
            return mpq_round_fp16(raw > 0.0 && raw < 1e30 ? (float)raw : (raw > 0 ? 1e30f : 0.0f));
        case MPQ_QSCALE_FP16Z: {
            /* a half rounded to 11 - bits significant bits, so that its
             * product with a zero-point (bits bits) needs at most 11 */
            const float h =
                mpq_round_fp16(raw > 0.0 && raw < 1e30 ? (float)raw : (raw > 0 ? 1e30f : 0.0f));
            int e = 0;
            const double m = frexp((double)h, &e), k = ldexp(1.0, 11 - p->spec.bits);
            const float r = mpq_round_fp16((float)ldexp(nearbyint(m * k) / k, e));
            return r > 0.0f ? r : h;
        }
        case MPQ_QSCALE_E8M0:
            return mpq_floor_e8m0(raw > 0.0 && raw < 1e38 ? (float)raw : (raw > 0 ? 1e38f : 0.0f));
        case MPQ_QSCALE_E4M3: {
            double x = raw / (double)p->tensor_scale;
            return mpq_round_e4m3(x > 0.0 && x < 1e30 ? (float)x : (x > 0 ? 1e30f : 0.0f));
        }
        default: {
            /* fp32: keep well inside the normal range so that scale * level
             * never underflows and two grid points never merge. */
            float v = raw > 0.0 && raw < 1e38 ? (float)raw : (raw > 0 ? 1e38f : 0.0f);
            return v < 0x1p-100f ? 0x1p-100f : v;
        }
    }
}

/* ---- group errors and fitting ------------------------------------------------- */

double mpq_qgroup_error(const mpq_qparams *p, const mpq_qgroup_fit *g, const mpq_qtable *t, float s,
                        float z) {
    float inv = 1.0f / s;
    double e = 0.0;
    for (int64_t r = g->r0; r < g->r1; r++) {
        const float *row = g->w + r * g->ld;
        double er = 0.0;
        for (int64_t c = g->c0; c < g->c1; c++) {
            float w = row[c];
            float v;
            mpq_qnearest(t, s, inv, z, w, &v);
            float d = w - v;
            er += (double)mpq_qgf_imp(g, c) * (double)d * (double)d;
        }
        e += er;
    }
    return e;
}

static void group_stats(mpq_qgroup_fit *g) {
    float mn = INFINITY, mx = -INFINITY;
    double sp = 0, sn = 0, cp = 0, cn = 0, ct = 0;
    for (int64_t r = g->r0; r < g->r1; r++) {
        const float *row = g->w + r * g->ld;
        for (int64_t c = g->c0; c < g->c1; c++) {
            float w = row[c];
            double wt = mpq_qgf_imp(g, c);
            mn = w < mn ? w : mn;
            mx = w > mx ? w : mx;
            ct += wt;
            if (w > 0) {
                sp += wt * w;
                cp += wt;
            } else if (w < 0) {
                sn += wt * -(double)w;
                cn += wt;
            }
        }
    }
    g->min = mn;
    g->max = mx;
    g->amax = fmaxf(fabsf(mn), fabsf(mx));
    g->wsum_pos = sp;
    g->wsum_neg = sn;
    g->wcnt_pos = cp;
    g->wcnt_neg = cn;
    g->wcnt = ct;
}

/* Fits group index gi covering the rectangle of gf; signs live per row
 * (families with a sign only take gran=channel, so gi is the row). */
static void fit_group(mpq_qparams *p, mpq_qgroup_fit *gf, int64_t gi) {
    const mpq_quant_ops *ops = p->spec.ops;
    float s;
    int32_t z = 0;
    int sg = 1;
    group_stats(gf);
    if (p->spec.fit != MPQ_QFIT_SEARCH) {
        ops->init(p, gf, p->spec.fit, 1.0, &s, &z, &sg);
    } else {
        double best = INFINITY;
        float bs = 1.0f;
        int32_t bz = 0;
        int bsg = 1;
        /* Candidates: the default closed form first, the other closed forms,
         * then the sweep; strict improvement keeps the earliest on ties, so
         * the search is never worse than any closed form. */
        mpq_qfit order[MPQ_QFIT_COUNT];
        int nf = 0;
        order[nf++] = ops->def_fit == MPQ_QFIT_SEARCH ? MPQ_QFIT_MINMAX : ops->def_fit;
        for (int f = 0; f < MPQ_QFIT_COUNT; f++)
            if (f != MPQ_QFIT_SEARCH && f != (int)order[0] && (ops->fits & (1u << f)))
                order[nf++] = (mpq_qfit)f;
        for (int k = 0; k < nf + MPQ_QSWEEP_STEPS; k++) {
            mpq_qfit how = k < nf ? order[k] : ops->sweep;
            double ratio = 1.0;
            if (k >= nf)
                ratio = ops->sweep_lo +
                        (ops->sweep_hi - ops->sweep_lo) * (k - nf) / (MPQ_QSWEEP_STEPS - 1);
            float cs;
            int32_t cz = 0;
            int csg = 1;
            ops->init(p, gf, how, ratio, &cs, &cz, &csg);
            double e = mpq_qgroup_error(p, gf, csg < 0 ? &p->tab[1] : &p->tab[0], cs, (float)cz);
            if (e < best) {
                best = e;
                bs = cs;
                bz = cz;
                bsg = csg;
            }
        }
        s = bs;
        z = bz;
        sg = bsg;
    }
    p->scale[gi] = s;
    if (p->zero)
        p->zero[gi] = z;
    if (p->sign)
        p->sign[gi] = (int8_t)(sg < 0 ? -1 : 1);
}

static void fit_groups(mpq_qparams *p, const float *w, const float *imp) {
    mpq_qgroup_fit gf = {.w = w, .ld = p->cols, .imp = imp};
    if (p->spec.gran == MPQ_QGRAN_TENSOR) {
        gf.r0 = 0;
        gf.r1 = p->rows;
        gf.c0 = 0;
        gf.c1 = p->cols;
        fit_group(p, &gf, 0);
        return;
    }
    for (int64_t r = 0; r < p->rows; r++) {
        for (int64_t c0 = 0; c0 < p->cols; c0 += p->gcols) {
            gf.r0 = r;
            gf.r1 = r + 1;
            gf.c0 = c0;
            gf.c1 = c0 + p->gcols < p->cols ? c0 + p->gcols : p->cols;
            fit_group(p, &gf, mpq_qgroup_of(p, r, c0));
        }
    }
}

mpq_err mpq_quant_fit(mpq_ctx *ctx, mpq_qparams *p, const float *w, const float *imp) {
    MPQ_CHECK(p && w, MPQ_ERR_ARG, "mpq_quant_fit: NULL parameters or weights");
    /* max |w| and whether every weight is finite, in one loop that
     * vectorizes: |w| as bits is an unsigned integer in the order of the
     * values, and above FLT_MAX's exactly for Inf and NaN; the first bad
     * weight is looked for only when there is one */
    uint32_t mbits = 0;
    for (int64_t r = 0; r < p->rows; r++) {
        const float *row = w + r * p->cols;
        for (int64_t c = 0; c < p->cols; c++) {
            uint32_t b;
            memcpy(&b, &row[c], sizeof b);
            b &= 0x7fffffffu;
            mbits = b > mbits ? b : mbits;
        }
    }
    const int finite = mbits <= 0x7f7fffffu;
    float amax;
    memcpy(&amax, &mbits, sizeof amax);
    for (int64_t i = 0; !finite && i < p->rows * p->cols; i++)
        MPQ_CHECK(isfinite(w[i]), MPQ_ERR_NUMERIC, "quantizer '%s': weight [%lld][%lld] is %s",
                  p->spec.ops->name, (long long)(i / p->cols), (long long)(i % p->cols),
                  isnan(w[i]) ? "NaN" : "infinite");
    if (imp)
        for (int64_t c = 0; c < p->cols; c++)
            MPQ_CHECK(isfinite(imp[c]) && imp[c] >= 0.0f, MPQ_ERR_NUMERIC,
                      "quantizer '%s': importance of input channel %lld is %g (must be finite "
                      "and >= 0)",
                      p->spec.ops->name, (long long)c, (double)imp[c]);

    /* NVFP4: the fp32 tensor scale puts the largest group scale (max |w| / 6)
     * at the top of E4M3 (448). */
    if (p->spec.scale == MPQ_QSCALE_E4M3)
        p->tensor_scale = amax > 0.0f ? (float)((double)amax / (6.0 * 448.0)) : 1.0f;

    if ((p->spec.ops->keys & MPQ_QKEY_A) && p->spec.a == 0.0) {
        /* powerexp, a=auto: the exponent of least total error, then refit. */
        double best = INFINITY;
        float best_a = 1.0f;
        for (int k = 0; k < MPQ_QEXPO_STEPS; k++) {
            float a = (float)(1.0 - (1.0 - MPQ_QEXPO_MIN) * k / (MPQ_QEXPO_STEPS - 1));
            p->expo = a;
            mpq_qparams_tables(p);
            fit_groups(p, w, imp);
            double e = mpq_quant_error(p, w, imp);
            if (e < best) {
                best = e;
                best_a = a;
            }
        }
        p->expo = best_a;
    }
    mpq_qparams_tables(p);
    fit_groups(p, w, imp);
    return MPQ_OK;
}

/* ---- rounding, dequantization, neighbours ------------------------------------- */

/* Nearest codes of w[c0..c1) for an integer grid (mpq_qnearest_int: the
 * loop vectorizes). */
static void row_nearest_int(const mpq_qtable *t, float s, float z, const float *w, int64_t c0,
                            int64_t c1, uint8_t *codes) {
    const float l0 = t->sorted[0], top = (float)(t->n - 1), inv = 1.0f / s;
    for (int64_t c = c0; c < c1; c++) {
        float v;
        codes[c] = mpq_qnearest_int(s, inv, z, l0, top, w[c], &v);
    }
}

void mpq_quant_row_nearest(const mpq_qparams *p, int64_t r, const float *w, uint8_t *codes) {
    const mpq_qtable *t = mpq_qtable_of(p, r);
    if (t->ident) {
        for (int64_t c0 = 0; c0 < p->cols; c0 += p->gcols) {
            int64_t g = mpq_qgroup_of(p, r, c0);
            row_nearest_int(t, mpq_qscale_of(p, g), mpq_qzero_of(p, g), w, c0,
                            c0 + p->gcols < p->cols ? c0 + p->gcols : p->cols, codes);
        }
        return;
    }
    for (int64_t c0 = 0; c0 < p->cols; c0 += p->gcols) {
        int64_t g = mpq_qgroup_of(p, r, c0), c1 = c0 + p->gcols < p->cols ? c0 + p->gcols : p->cols;
        float s = mpq_qscale_of(p, g), z = mpq_qzero_of(p, g), inv = 1.0f / s;
        for (int64_t c = c0; c < c1; c++) {
            float v;
            codes[c] = t->code[mpq_qnearest(t, s, inv, z, w[c], &v)];
        }
    }
}

void mpq_quant_row_dequant(const mpq_qparams *p, int64_t r, const uint8_t *codes, float *out) {
    const mpq_qtable *t = mpq_qtable_of(p, r);
    for (int64_t c0 = 0; c0 < p->cols; c0 += p->gcols) {
        int64_t g = mpq_qgroup_of(p, r, c0), c1 = c0 + p->gcols < p->cols ? c0 + p->gcols : p->cols;
        float s = mpq_qscale_of(p, g), z = mpq_qzero_of(p, g);
        for (int64_t c = c0; c < c1; c++)
            out[c] = mpq_qval(s, t->level[codes[c]], z);
    }
}

void mpq_quant_row_neighbours(const mpq_qparams *p, int64_t r, const float *w, uint8_t *lo,
                              uint8_t *hi, float *vlo, float *vhi) {
    const mpq_qtable *t = mpq_qtable_of(p, r);
    for (int64_t c0 = 0; c0 < p->cols; c0 += p->gcols) {
        int64_t g = mpq_qgroup_of(p, r, c0), c1 = c0 + p->gcols < p->cols ? c0 + p->gcols : p->cols;
        float s = mpq_qscale_of(p, g), z = mpq_qzero_of(p, g), inv = 1.0f / s;
        for (int64_t c = c0; c < c1; c++) {
            int a, b;
            mpq_qlocate(t, s, inv, z, w[c], &a, &b, &vlo[c], &vhi[c]);
            lo[c] = t->code[a];
            hi[c] = t->code[b];
        }
    }
}

void mpq_quant_quantize(const mpq_qparams *p, const float *w, uint8_t *codes) {
    for (int64_t r = 0; r < p->rows; r++)
        mpq_quant_row_nearest(p, r, w + r * p->cols, codes + r * p->cols);
}

void mpq_quant_dequantize(const mpq_qparams *p, const uint8_t *codes, float *out) {
    for (int64_t r = 0; r < p->rows; r++)
        mpq_quant_row_dequant(p, r, codes + r * p->cols, out + r * p->cols);
}

double mpq_quant_error(const mpq_qparams *p, const float *w, const float *imp) {
    double e = 0.0;
    for (int64_t r = 0; r < p->rows; r++) {
        mpq_qgroup_fit gf = {.w = w, .ld = p->cols, .imp = imp, .r0 = r, .r1 = r + 1};
        const mpq_qtable *t = mpq_qtable_of(p, r);
        for (int64_t c0 = 0; c0 < p->cols; c0 += p->gcols) {
            int64_t g = mpq_qgroup_of(p, r, c0);
            gf.c0 = c0;
            gf.c1 = c0 + p->gcols < p->cols ? c0 + p->gcols : p->cols;
            e += mpq_qgroup_error(p, &gf, t, mpq_qscale_of(p, g), mpq_qzero_of(p, g));
        }
    }
    return e;
}

/* ---- clamped scales --------------------------------------------------------------- */

/* The largest stored scale of the format, 0 where none clamps (E4M3 sits
 * under an fp32 tensor scale fitted to the layer). Matches mpq_qscale_store. */
static float scale_top(const mpq_qparams *p) {
    switch (p->spec.scale) {
        case MPQ_QSCALE_FP16:
        case MPQ_QSCALE_FP16Z:
            return 65504.0f;
        case MPQ_QSCALE_E8M0:
            return 0x1p127f;
        case MPQ_QSCALE_E4M3:
            return 0.0f;
        default:
            return 1e38f;
    }
}

void mpq_quant_clamped(const mpq_qparams *p, const float *w, mpq_qclamp *out) {
    memset(out, 0, sizeof *out);
    const float top = scale_top(p);
    int64_t last = -1; /* the last group counted (gran=tensor: one group, many rows) */
    for (int64_t r = 0; top > 0.0f && r < p->rows; r++) {
        const mpq_qtable *t = mpq_qtable_of(p, r);
        for (int64_t c0 = 0; c0 < p->cols; c0 += p->gcols) {
            const int64_t g = mpq_qgroup_of(p, r, c0),
                          c1 = c0 + p->gcols < p->cols ? c0 + p->gcols : p->cols;
            if (p->scale[g] < top || g == last)
                continue;
            const float s = mpq_qscale_of(p, g), z = mpq_qzero_of(p, g);
            const float reach = fmaxf(fabsf(mpq_qval(s, t->sorted[0], z)),
                                      fabsf(mpq_qval(s, t->sorted[t->n - 1], z)));
            float amax = 0.0f;
            for (int64_t c = c0; c < c1; c++)
                amax = fmaxf(amax, fabsf(w[r * p->cols + c]));
            /* a scale at the top that the weights do not need is no clamp */
            if (!(amax > reach * (1.0f + 0x1p-10f)))
                continue;
            if (out->groups++ == 0) {
                out->group = g;
                out->row = r;
                out->col0 = c0;
                out->col1 = c1;
                out->amax = amax;
                out->reach = reach;
            }
            last = g;
        }
    }
}

int64_t mpq_quant_warn_clamped(mpq_ctx *ctx, const char *layer, const mpq_qparams *p,
                               const float *w, int here) {
    mpq_qclamp cl;
    mpq_quant_clamped(p, w, &cl);
    if (cl.groups == 0)
        return 0;
    (here ? mpq_log_here : mpq_log)(
        ctx, MPQ_LOG_WARN,
        "layer %s: %lld quantization group%s with the scale clamped to the largest %s value "
        "%g (first: group %lld, row %lld, columns %lld..%lld, max |w| %g, the grid reaches "
        "+-%g): the weights beyond the grid are clipped to it",
        layer, (long long)cl.groups, cl.groups == 1 ? "" : "s", mpq_qscale_name(p->spec.scale),
        (double)scale_top(p), (long long)cl.group, (long long)cl.row, (long long)cl.col0,
        (long long)cl.col1 - 1, (double)cl.amax, (double)cl.reach);
    return cl.groups;
}

mpq_err mpq_quant_check_codes(mpq_ctx *ctx, const mpq_qparams *p, const uint8_t *codes) {
    for (int64_t r = 0; r < p->rows; r++) {
        const mpq_qtable *t = mpq_qtable_of(p, r);
        for (int64_t c = 0; c < p->cols; c++) {
            uint8_t k = codes[r * p->cols + c];
            MPQ_CHECK((int)k < t->ncodes && !isnan(t->level[k]), MPQ_ERR_FORMAT,
                      "quantizer '%s': code %u of weight [%lld][%lld] is not a valid code",
                      p->spec.ops->name, (unsigned)k, (long long)r, (long long)c);
        }
    }
    return MPQ_OK;
}

void mpq_quant_grid(const mpq_qparams *p, int64_t r, int64_t c, float *values, uint8_t *codes,
                    int *n) {
    int64_t g = mpq_qgroup_of(p, r, c);
    const mpq_qtable *t = mpq_qtable_of(p, r);
    float s = mpq_qscale_of(p, g), z = mpq_qzero_of(p, g);
    for (int j = 0; j < t->n; j++) {
        values[j] = mpq_qval(s, t->sorted[j], z);
        codes[j] = t->code[j];
    }
    *n = t->n;
}

int mpq_quant_uniform(const mpq_qparams *p, int64_t r, int64_t c, float *scale, float *zero) {
    const mpq_qtable *t = mpq_qtable_of(p, r);
    if (!t->uniform || t->n != t->ncodes || p->sign)
        return 0;
    for (int j = 0; j < t->n; j++)
        if (t->code[j] != j)
            return 0;
    int64_t g = mpq_qgroup_of(p, r, c);
    *scale = mpq_qscale_of(p, g);
    *zero = mpq_qzero_of(p, g) - t->sorted[0];
    return 1;
}
