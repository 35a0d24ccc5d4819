/* quant_families.c: the registered quantizer families. Each is an ops table
 * of level definitions and closed-form group fits; everything else (search,
 * nearest rounding, neighbours, packing, storage) is shared in quant_core.c
 * and quant_pack.c. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"

/* NF4: the 16 levels of QLoRA's 4-bit NormalFloat, derived as follows (the
 * test recomputes them from the normal quantile function):
 *   d = 1 - (1/32 + 1/30) / 2;
 *   8 non-negative-side levels  Phi^-1(d + (0.5 - d) * i / 8), i = 0..7,
 *   7 negative-side levels     -Phi^-1(d + (0.5 - d) * i / 7), i = 0..6,
 *   plus an exact 0; everything divided by Phi^-1(d) so the ends are -1, +1.
 * The asymmetric split gives 8 positive and 7 negative levels and a true zero. */
const float mpq_nf4_levels[16] = {
    -1.0f,
    -0.6961928056323431f,
    -0.5250729594465008f,
    -0.39491742591990736f,
    -0.28444130892108227f,
    -0.1847734028004558f,
    -0.09104997598578048f,
    0.0f,
    0.07958031495840909f,
    0.16093014438029074f,
    0.2461122513474596f,
    0.33791513671312795f,
    0.4407097318642166f,
    0.5626168879699852f,
    0.7229566441594739f,
    1.0f,
};

/* ---- shared closed forms --------------------------------------------------- */

/* scale = ratio * amax / top, the min-max fit of a symmetric grid whose
 * largest level is `top` (in units of the scale). */
static float init_amax(const mpq_qparams *p, const mpq_qgroup_fit *g, double ratio, double top) {
    return mpq_qscale_store(p, ratio * (double)g->amax / top);
}

/* (Weighted) mean |w| of the group; falls back to the unweighted amax when
 * every importance is 0. */
static double mean_abs(const mpq_qgroup_fit *g) {
    if (g->wcnt > 0.0)
        return (g->wsum_pos + g->wsum_neg) / g->wcnt;
    return (double)g->amax;
}

/* ---- uniform integer --------------------------------------------------------- */

static void int_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    int n = 1 << s->bits;
    int off = s->sym ? n / 2 : 0;
    for (int c = 0; c < n; c++)
        level[c] = (float)(c - off);
}

/* Asymmetric: the range [min(w,0), max(w,0)] (times ratio) spread over
 * 2^bits - 1 steps; the zero-point makes 0 exactly representable.
 * Symmetric: max |w| at level 2^(bits-1) - 1; codes also reach -2^(bits-1). */
static void int_init(const mpq_qparams *p, const mpq_qgroup_fit *g, mpq_qfit how, double ratio,
                     float *scale, int32_t *zero, int *sign) {
    int bits = p->spec.bits;
    if (p->spec.sym) {
        *scale = init_amax(p, g, ratio, (double)((1 << (bits - 1)) - 1));
        *zero = 0;
        return;
    }
    double lo = ratio * fmin((double)g->min, 0.0), hi = ratio * fmax((double)g->max, 0.0);
    int qmax = (1 << bits) - 1;
    float s = mpq_qscale_store(p, (hi - lo) / qmax);
    double z = nearbyint(-lo / (double)s);
    *scale = s;
    *zero = (int32_t)(z < 0 ? 0 : (z > qmax ? qmax : z));
}

/* ---- binary and signed binary ------------------------------------------------- */

static void binary_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    level[0] = -1.0f;
    level[1] = 1.0f;
}

/* alpha = mean |w| (importance-weighted): the least-squares alpha for
 * alpha * sign(w). */
static void binary_init(const mpq_qparams *p, const mpq_qgroup_fit *g, mpq_qfit how, double ratio,
                        float *scale, int32_t *zero, int *sign) {
    if (how == MPQ_QFIT_MINMAX)
        *scale = init_amax(p, g, ratio, 1.0);
    else
        *scale = mpq_qscale_store(p, ratio * mean_abs(g));
    *zero = 0;
}

static void sbinary_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    level[0] = 0.0f;
    level[1] = sign < 0 ? -1.0f : 1.0f;
}

/* For each sign s, alpha = ratio * mean |w| over the weights of sign s; the
 * channel keeps the sign whose (weighted) error is smaller. */
static void sbinary_init(const mpq_qparams *p, const mpq_qgroup_fit *g, mpq_qfit how, double ratio,
                         float *scale, int32_t *zero, int *sign) {
    double mpos = g->wcnt_pos > 0 ? g->wsum_pos / g->wcnt_pos : (double)g->max;
    double mneg = g->wcnt_neg > 0 ? g->wsum_neg / g->wcnt_neg : -(double)g->min;
    if (how == MPQ_QFIT_MINMAX) {
        mpos = (double)g->max;
        mneg = -(double)g->min;
    }
    float spos = mpq_qscale_store(p, ratio * mpos), sneg = mpq_qscale_store(p, ratio * mneg);
    double epos = mpq_qgroup_error(p, g, &p->tab[0], spos, 0.0f);
    double eneg = mpq_qgroup_error(p, g, &p->tab[1], sneg, 0.0f);
    *zero = 0;
    if (eneg < epos) {
        *sign = -1;
        *scale = sneg;
    } else {
        *sign = 1;
        *scale = spos;
    }
}

/* ---- ternary --------------------------------------------------------------- */

static void ternary_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    level[0] = -1.0f;
    level[1] = 0.0f;
    level[2] = 1.0f;
    level[3] = NAN;
}

/* threshold: delta = 0.7 mean |w|, alpha = mean |w| over |w| > delta (the
 * ternary-weight-networks rule, importance-weighted); minmax: alpha = max |w|. */
static void ternary_init(const mpq_qparams *p, const mpq_qgroup_fit *g, mpq_qfit how, double ratio,
                         float *scale, int32_t *zero, int *sign) {
    *zero = 0;
    if (how != MPQ_QFIT_THRESHOLD) {
        *scale = init_amax(p, g, ratio, 1.0);
        return;
    }
    double delta = 0.7 * mean_abs(g), sum = 0.0, cnt = 0.0;
    for (int64_t r = g->r0; r < g->r1; r++) {
        const float *row = g->w + r * g->ld;
        for (int64_t c = g->c0; c < g->c1; c++) {
            double a = fabs((double)row[c]);
            if (a > delta) {
                double wt = mpq_qgf_imp(g, c);
                sum += wt * a;
                cnt += wt;
            }
        }
    }
    *scale = mpq_qscale_store(p, ratio * (cnt > 0 ? sum / cnt : (double)g->amax));
}

/* ParetoQ stretched-elastic ternary: levels -2/3, 0, 2/3 of a scale
 * initialised at max |w|. */
static void tseq_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    level[0] = -2.0f / 3.0f;
    level[1] = 0.0f;
    level[2] = 2.0f / 3.0f;
    level[3] = NAN;
}

/* Families whose min-max fit puts max |w| at level 1 (scale = max |w|). */
static void amax1_init(const mpq_qparams *p, const mpq_qgroup_fit *g, mpq_qfit how, double ratio,
                       float *scale, int32_t *zero, int *sign) {
    *scale = init_amax(p, g, ratio, 1.0);
    *zero = 0;
}

/* ParetoQ 2-bit SEQ: +-0.25, +-0.75 of the scale, no zero level. */
static void seq2_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    level[0] = -0.75f;
    level[1] = -0.25f;
    level[2] = 0.25f;
    level[3] = 0.75f;
}

/* ---- power of two ------------------------------------------------------------ */

/* code = sign << (bits-1) | m; m = 0 is zero, m = 1..M is 2^-(M-m), M =
 * 2^(bits-1) - 1: levels 0 and +-2^-k, k = 0..M-1 (a product is a shift). */
static void pow2_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    int half = 1 << (s->bits - 1), M = half - 1;
    for (int c = 0; c < 2 * half; c++) {
        int m = c & M;
        float v = m == 0 ? 0.0f : ldexpf(1.0f, m - M);
        level[c] = (c & half) ? -v : v;
    }
}

/* ---- power exponent ------------------------------------------------------- */

/* code = q + qmax for q = -qmax..qmax, qmax = 2^(bits-1) - 1: level =
 * sign(q) * (|q| / qmax)^(1/a), the image of a uniform grid on
 * t = sign(u) |u|^a. The last code is unused. */
static void powexp_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    int n = 1 << s->bits, qmax = n / 2 - 1;
    for (int c = 0; c < n; c++) {
        int q = c - qmax;
        if (c == n - 1) {
            level[c] = NAN;
            continue;
        }
        double v = pow((double)abs(q) / qmax, 1.0 / (double)expo);
        level[c] = (float)(q < 0 ? -v : v);
    }
}

/* ---- FP4 E2M1 ----------------------------------------------------------- */

/* The standard E2M1 bit patterns: s e e m. */
static void e2m1_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    for (int c = 0; c < 16; c++) {
        int e = (c >> 1) & 3, m = c & 1;
        float v = e == 0 ? 0.5f * (float)m : ldexpf(1.0f + 0.5f * (float)m, e - 1);
        level[c] = (c & 8) ? -v : v;
    }
}

static void fp4_init(const mpq_qparams *p, const mpq_qgroup_fit *g, mpq_qfit how, double ratio,
                     float *scale, int32_t *zero, int *sign) {
    *scale = init_amax(p, g, ratio, 6.0);
    *zero = 0;
}

/* MX rule: the shared scale is 2^(floor(log2 max|w|) - 2), i.e. max |w| maps
 * into [4, 8) and values above 6 clip. */
static void mxfp4_init(const mpq_qparams *p, const mpq_qgroup_fit *g, mpq_qfit how, double ratio,
                       float *scale, int32_t *zero, int *sign) {
    *scale = init_amax(p, g, ratio, 4.0);
    *zero = 0;
}

/* ---- FP8 E4M3 ----------------------------------------------------------- */

static void e4m3_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    for (int c = 0; c < 256; c++)
        level[c] = mpq_e4m3_value((uint8_t)c);
}

static void fp8_init(const mpq_qparams *p, const mpq_qgroup_fit *g, mpq_qfit how, double ratio,
                     float *scale, int32_t *zero, int *sign) {
    *scale = init_amax(p, g, ratio, 448.0);
    *zero = 0;
}

/* ---- NF4 ---------------------------------------------------------------- */

static void nf4_levels(const mpq_qspec *s, float expo, int sign, float *level) {
    memcpy(level, mpq_nf4_levels, sizeof mpq_nf4_levels);
}

/* ---- the registry ------------------------------------------------------- */

#define GR(x)       (1u << MPQ_QGRAN_##x)
#define FT(x)       (1u << MPQ_QFIT_##x)
#define ALL_GRANS   (GR(TENSOR) | GR(CHANNEL) | GR(GROUP))
#define COMMON_KEYS (MPQ_QKEY_GRAN | MPQ_QKEY_SCALE | MPQ_QKEY_FIT)
#define MINMAX_FITS (FT(MINMAX) | FT(SEARCH))

static const mpq_quant_ops ops_int = {
    .name = "int",
    .summary = "uniform integer, 1-8 bits, asymmetric (b-bit zero-point) or symmetric",
    .keys = COMMON_KEYS | MPQ_QKEY_BITS | MPQ_QKEY_SYM,
    .grans = ALL_GRANS,
    .fits = MINMAX_FITS,
    .min_bits = 1,
    .max_bits = 8,
    .def_bits = 4,
    .def_gran = MPQ_QGRAN_CHANNEL,
    .def_fit = MPQ_QFIT_MINMAX,
    .def_scale = MPQ_QSCALE_FP16,
    .has_zero = 1, /* unless sym: see mpq_qspec_has_zero */
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.3,
    .sweep_hi = 1.0,
    .levels = int_levels,
    .init = int_init,
};

static const mpq_quant_ops ops_binary = {
    .name = "binary",
    .summary = "alpha * sign(w), alpha = mean |w| of the group",
    .keys = COMMON_KEYS,
    .grans = ALL_GRANS,
    .fits = FT(MEAN) | FT(MINMAX) | FT(SEARCH),
    .min_bits = 1,
    .max_bits = 1,
    .def_bits = 1,
    .def_gran = MPQ_QGRAN_CHANNEL,
    .def_fit = MPQ_QFIT_MEAN,
    .def_scale = MPQ_QSCALE_FP16,
    .sweep = MPQ_QFIT_MEAN,
    .sweep_lo = 0.5,
    .sweep_hi = 1.5,
    .levels = binary_levels,
    .init = binary_init,
};

static const mpq_quant_ops ops_sbinary = {
    .name = "signed_binary",
    .summary = "per-channel sign s, weights 0 or s * alpha (1 bit + sign + scale per channel)",
    .keys = COMMON_KEYS,
    .grans = GR(CHANNEL),
    .fits = FT(MEAN) | FT(MINMAX) | FT(SEARCH),
    .min_bits = 1,
    .max_bits = 1,
    .def_bits = 1,
    .def_gran = MPQ_QGRAN_CHANNEL,
    .def_fit = MPQ_QFIT_MEAN,
    .def_scale = MPQ_QSCALE_FP16,
    .has_sign = 1,
    .sweep = MPQ_QFIT_MEAN,
    .sweep_lo = 0.5,
    .sweep_hi = 2.5,
    .levels = sbinary_levels,
    .init = sbinary_init,
};

static const mpq_quant_ops ops_ternary = {
    .name = "ternary",
    .summary = "1.58-bit {-alpha, 0, +alpha}, threshold fit; 2-bit codes or 5 per byte",
    .keys = COMMON_KEYS | MPQ_QKEY_PACK,
    .grans = ALL_GRANS,
    .fits = FT(THRESHOLD) | FT(MINMAX) | FT(SEARCH),
    .min_bits = 2,
    .max_bits = 2,
    .def_bits = 2,
    .def_gran = MPQ_QGRAN_CHANNEL,
    .def_fit = MPQ_QFIT_THRESHOLD,
    .def_scale = MPQ_QSCALE_FP16,
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.05,
    .sweep_hi = 1.0,
    .levels = ternary_levels,
    .init = ternary_init,
};

static const mpq_quant_ops ops_tseq = {
    .name = "ternary_seq",
    .summary = "ParetoQ stretched-elastic ternary: {-2/3, 0, 2/3} * scale, scale from max |w|",
    .keys = COMMON_KEYS | MPQ_QKEY_PACK,
    .grans = ALL_GRANS,
    .fits = MINMAX_FITS,
    .min_bits = 2,
    .max_bits = 2,
    .def_bits = 2,
    .def_gran = MPQ_QGRAN_CHANNEL,
    .def_fit = MPQ_QFIT_MINMAX,
    .def_scale = MPQ_QSCALE_FP16,
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.1,
    .sweep_hi = 1.0,
    .levels = tseq_levels,
    .init = amax1_init,
};

static const mpq_quant_ops ops_seq2 = {
    .name = "seq2",
    .summary = "ParetoQ 2-bit stretched elastic: {+-0.25, +-0.75} * scale, no zero level",
    .keys = COMMON_KEYS,
    .grans = ALL_GRANS,
    .fits = MINMAX_FITS,
    .min_bits = 2,
    .max_bits = 2,
    .def_bits = 2,
    .def_gran = MPQ_QGRAN_CHANNEL,
    .def_fit = MPQ_QFIT_MINMAX,
    .def_scale = MPQ_QSCALE_FP16,
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.1,
    .sweep_hi = 1.0,
    .levels = seq2_levels,
    .init = amax1_init,
};

static const mpq_quant_ops ops_pow2 = {
    .name = "pow2",
    .summary = "logarithmic: sign + exponent code, levels alpha * 2^-k and 0",
    .keys = COMMON_KEYS | MPQ_QKEY_BITS,
    .grans = ALL_GRANS,
    .fits = MINMAX_FITS,
    .min_bits = 2,
    .max_bits = 8,
    .def_bits = 4,
    .def_gran = MPQ_QGRAN_CHANNEL,
    .def_fit = MPQ_QFIT_MINMAX,
    .def_scale = MPQ_QSCALE_FP16,
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.3,
    .sweep_hi = 1.0,
    .levels = pow2_levels,
    .init = amax1_init,
};

static const mpq_quant_ops ops_powexp = {
    .name = "powerexp",
    .summary = "power-exponent non-uniform: uniform grid on sign(u)|u|^a, a fitted per layer",
    .keys = COMMON_KEYS | MPQ_QKEY_BITS | MPQ_QKEY_A,
    .grans = ALL_GRANS,
    .fits = MINMAX_FITS,
    .min_bits = 2,
    .max_bits = 8,
    .def_bits = 4,
    .def_gran = MPQ_QGRAN_CHANNEL,
    .def_fit = MPQ_QFIT_MINMAX,
    .def_scale = MPQ_QSCALE_FP16,
    .has_tensor = 1,
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.3,
    .sweep_hi = 1.0,
    .levels = powexp_levels,
    .init = amax1_init,
};

static const mpq_quant_ops ops_fp4 = {
    .name = "fp4",
    .summary = "FP4 E2M1 {0, .5, 1, 1.5, 2, 3, 4, 6} with an fp16/fp32 scale per group",
    .keys = COMMON_KEYS,
    .grans = ALL_GRANS,
    .fits = MINMAX_FITS,
    .min_bits = 4,
    .max_bits = 4,
    .def_bits = 4,
    .def_gran = MPQ_QGRAN_GROUP,
    .def_group = 32,
    .def_fit = MPQ_QFIT_MINMAX,
    .def_scale = MPQ_QSCALE_FP16,
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.3,
    .sweep_hi = 1.0,
    .levels = e2m1_levels,
    .init = fp4_init,
};

static const mpq_quant_ops ops_mxfp4 = {
    .name = "mxfp4",
    .summary = "OCP MXFP4: E2M1 codes, groups of 32 sharing an E8M0 power-of-two scale",
    .keys = MPQ_QKEY_GRAN | MPQ_QKEY_FIT,
    .grans = GR(GROUP),
    .fits = MINMAX_FITS,
    .min_bits = 4,
    .max_bits = 4,
    .def_bits = 4,
    .def_gran = MPQ_QGRAN_GROUP,
    .def_group = 32,
    .def_fit = MPQ_QFIT_MINMAX,
    .def_scale = MPQ_QSCALE_E8M0,
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.5,
    .sweep_hi = 1.0,
    .levels = e2m1_levels,
    .init = mxfp4_init,
};

static const mpq_quant_ops ops_nvfp4 = {
    .name = "nvfp4",
    .summary = "NVFP4: E2M1 codes, groups of 16 with an E4M3 scale, times an fp32 tensor scale",
    .keys = MPQ_QKEY_GRAN | MPQ_QKEY_FIT,
    .grans = GR(GROUP),
    .fits = MINMAX_FITS,
    .min_bits = 4,
    .max_bits = 4,
    .def_bits = 4,
    .def_gran = MPQ_QGRAN_GROUP,
    .def_group = 16,
    .def_fit = MPQ_QFIT_MINMAX,
    .def_scale = MPQ_QSCALE_E4M3,
    .has_tensor = 1,
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.3,
    .sweep_hi = 1.0,
    .levels = e2m1_levels,
    .init = fp4_init,
};

static const mpq_quant_ops ops_fp8 = {
    .name = "fp8",
    .summary = "FP8 E4M3 (max 448, no infinities) with a scale per channel",
    .keys = COMMON_KEYS,
    .grans = ALL_GRANS,
    .fits = MINMAX_FITS,
    .min_bits = 8,
    .max_bits = 8,
    .def_bits = 8,
    .def_gran = MPQ_QGRAN_CHANNEL,
    .def_fit = MPQ_QFIT_MINMAX,
    .def_scale = MPQ_QSCALE_FP32,
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.5,
    .sweep_hi = 1.0,
    .levels = e4m3_levels,
    .init = fp8_init,
};

static const mpq_quant_ops ops_nf4 = {
    .name = "nf4",
    .summary = "NormalFloat4: 16 normal-quantile levels in [-1, 1], absmax scale per group",
    .keys = COMMON_KEYS,
    .grans = ALL_GRANS,
    .fits = MINMAX_FITS,
    .min_bits = 4,
    .max_bits = 4,
    .def_bits = 4,
    .def_gran = MPQ_QGRAN_GROUP,
    .def_group = 64,
    .def_fit = MPQ_QFIT_MINMAX,
    .def_scale = MPQ_QSCALE_FP16,
    .sweep = MPQ_QFIT_MINMAX,
    .sweep_lo = 0.3,
    .sweep_hi = 1.0,
    .levels = nf4_levels,
    .init = amax1_init,
};

static const mpq_quant_ops *const registry[] = {
    &ops_int,    &ops_binary, &ops_sbinary, &ops_ternary, &ops_tseq, &ops_seq2, &ops_pow2,
    &ops_powexp, &ops_fp4,    &ops_mxfp4,   &ops_nvfp4,   &ops_fp8,  &ops_nf4,  NULL,
};

const mpq_quant_ops *const *mpq_quant_registry(int *count) {
    if (count)
        *count = (int)(sizeof registry / sizeof registry[0]) - 1;
    return registry;
}

static const char *quant_name_at(int64_t i) {
    return registry[i] ? registry[i]->name : NULL;
}

const mpq_registry mpq_quant_reg = {.what = "quantizer", .name_at = quant_name_at};

const mpq_quant_ops *mpq_quant_find(const char *name) {
    int64_t i = mpq_registry_index(&mpq_quant_reg, name);
    return i < 0 ? NULL : registry[i];
}
