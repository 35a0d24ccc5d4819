/* mpq_quant.h: the quantizer library. Every quantization function (uniform
 * integer, binary, signed binary, ternary, stretched-elastic, power-of-two,
 * power-exponent, FP4/MXFP4/NVFP4, FP8, NF4) is one registered ops table
 * (STYLE.md rule 9), selected by a textual spec such as
 *   "int:bits=4,sym=false,group=32,scale=fp16,fit=search"
 * and applied to one weight matrix W [rows = out][cols = in] (row-major).
 *
 * The model of every quantizer: a layer is split into groups (the whole
 * tensor, one output channel, or g consecutive input weights of a row, the
 * last group of a row possibly shorter). Each group has a positive scale s
 * (and for asymmetric integers a zero-point z); each code c has a normalized
 * level L[c] taken from a per-layer table, and dequantizes to
 *     value = s * (L[c] - z)            (float arithmetic, mpq_qval below)
 * The distinct levels, sorted, form the group's grid; quantization picks the
 * grid point nearest to w in the weight domain (ties go to the lower value),
 * and the "neighbours" of w are the grid points just below and just above it.
 * Grids that are uniform (integers) or tabulated (FP4, FP8, NF4, power-of-two,
 * power-exponent) are handled alike.
 *
 * Every function here is local (no communication) and thread-compatible.
 */
#ifndef MPQ_QUANT_H
#define MPQ_QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "mpq_err.h"
#include "mpq_registry.h"

struct mpq_ctx;

/* ---- the spec ------------------------------------------------------------- */

typedef enum mpq_qgran {
    MPQ_QGRAN_TENSOR = 0, /* one scale for the whole matrix */
    MPQ_QGRAN_CHANNEL,    /* one scale per output channel (row) */
    MPQ_QGRAN_GROUP,      /* one scale per `group` consecutive input weights of a row */
    MPQ_QGRAN_COUNT
} mpq_qgran;

typedef enum mpq_qfit {
    MPQ_QFIT_MINMAX = 0, /* range of the group (min/max or max |w|) */
    MPQ_QFIT_MEAN,       /* scale = (importance-weighted) mean |w| (binary families) */
    MPQ_QFIT_THRESHOLD,  /* ternary: threshold 0.7 mean |w|, scale = mean |w| above it */
    MPQ_QFIT_SEARCH,     /* the closed forms above plus a sweep of clipping ratios,
                            keeping the candidate of least (weighted) squared error */
    MPQ_QFIT_COUNT
} mpq_qfit;

typedef enum mpq_qscale {
    MPQ_QSCALE_FP16 = 0, /* IEEE half, 2 bytes per group */
    MPQ_QSCALE_FP32,     /* IEEE single, 4 bytes per group */
    MPQ_QSCALE_E8M0,     /* power of two, 1 byte per group (MXFP4) */
    MPQ_QSCALE_E4M3,     /* FP8 E4M3, 1 byte per group, times an fp32 tensor scale (NVFP4) */
    MPQ_QSCALE_FP16Z,    /* IEEE half with 11 - bits significant bits (asymmetric int): scale
                            times any zero-point is itself a half, so the group is also
                            exactly d * q + m with half d and m (GGUF Q4_1 / Q5_1) */
    MPQ_QSCALE_COUNT
} mpq_qscale;

struct mpq_quant_ops;

/* A parsed quantizer spec: plain data, copyable. */
typedef struct mpq_qspec {
    const struct mpq_quant_ops *ops; /* the family (never NULL after parsing) */
    int bits;                        /* bits per code before packing (1..8) */
    int sym;                         /* int: symmetric (no zero-point) */
    mpq_qgran gran;
    int64_t group; /* columns per group when gran == GROUP, else 0 */
    mpq_qfit fit;
    mpq_qscale scale;
    double a;  /* powerexp exponent in (0, 1]; 0 = fitted ("auto") */
    int base3; /* ternary families: 5 codes per byte (1.6 bits) */
} mpq_qspec;

#define MPQ_QSPEC_MAX 160 /* buffer size that always holds a formatted spec */
/* ... and a candidate's text: the spec and ";rate=LAMBDA" (mpq_session_spec_text) */
#define MPQ_QSPEC_TEXT_MAX (MPQ_QSPEC_MAX + 32)

/* Parses "family[:key=value,...]". Keys: bits, sym, gran (tensor|channel|
 * group), group (g >= 1; implies gran=group), scale (fp16|fp32), fit
 * (minmax|mean|threshold|search), a (auto or a number in (0, 1]), pack
 * (codes|base3). Keys a family does not take, unknown keys and bad values are
 * MPQ_ERR_CONFIG errors naming the spec, the field and the valid choices.
 * Unset keys take the family's defaults. Local. */
mpq_err mpq_qspec_parse(struct mpq_ctx *ctx, const char *text, mpq_qspec *out);
/* Writes the canonical text of spec (every key the family takes) into buf;
 * mpq_qspec_parse of it gives back an equal spec. Returns buf. Local. */
char *mpq_qspec_format(const mpq_qspec *spec, char *buf, size_t len);
/* 1 when the two specs describe the same quantizer. */
int mpq_qspec_equal(const mpq_qspec *a, const mpq_qspec *b);
/* 1 when fitting spec's parameters reads the input channels' importance
 * (diag H): every fit but minmax, and powerexp's automatic exponent. */
int mpq_qspec_reads_importance(const mpq_qspec *spec);
/* 1 when the spec stores per-group zero-points (asymmetric int). */
int mpq_qspec_has_zero(const mpq_qspec *spec);

/* ---- the registry ----------------------------------------------------- */

struct mpq_qgroup_fit; /* private to stages/quant */
struct mpq_qparams;

/* One quantizer family. Fields are read-only; the registry owns the tables. */
typedef struct mpq_quant_ops {
    const char *name;    /* spec name: "int", "nf4", ... */
    const char *summary; /* one line for documentation */
    unsigned keys;       /* MPQ_QKEY_* bits the spec may set */
    unsigned grans;      /* 1u << mpq_qgran allowed */
    unsigned fits;       /* 1u << mpq_qfit allowed */
    int min_bits, max_bits;
    /* defaults */
    int def_bits;
    mpq_qgran def_gran;
    int64_t def_group;
    mpq_qfit def_fit;
    mpq_qscale def_scale;
    int has_zero;              /* per-group zero-points (int; not when sym) */
    int has_sign;              /* per-channel sign (signed binary) */
    int has_tensor;            /* one fp32 per tensor (NVFP4 tensor scale, powerexp exponent) */
    mpq_qfit sweep;            /* closed form that the search sweeps with ratios */
    double sweep_lo, sweep_hi; /* ratio range of the sweep */
    /* Fills level[code] for every code 0 .. 2^bits-1 (NaN for an unused code)
     * for the spec, the layer exponent `expo` and the channel sign (+1/-1). */
    void (*levels)(const mpq_qspec *s, float expo, int sign, float *level);
    /* Closed-form fit of one group (see stages/quant/quant_internal.h) with
     * method `how` and the range or mean scaled by `ratio`: the stored scale,
     * the zero-point and (signed binary) the channel sign. */
    void (*init)(const struct mpq_qparams *p, const struct mpq_qgroup_fit *g, mpq_qfit how,
                 double ratio, float *scale, int32_t *zero, int *sign);
} mpq_quant_ops;

#define MPQ_QKEY_BITS  (1u << 0)
#define MPQ_QKEY_SYM   (1u << 1)
#define MPQ_QKEY_GRAN  (1u << 2) /* gran and group */
#define MPQ_QKEY_SCALE (1u << 3)
#define MPQ_QKEY_FIT   (1u << 4)
#define MPQ_QKEY_A     (1u << 5)
#define MPQ_QKEY_PACK  (1u << 6)

/* The registered families, in documentation order: *count of them,
 * followed by NULL. Local. */
const mpq_quant_ops *const *mpq_quant_registry(int *count);
/* Its descriptor (mpq_registry.h) and the family of that name, or NULL. */
extern const mpq_registry mpq_quant_reg;
const mpq_quant_ops *mpq_quant_find(const char *name);

const char *mpq_qgran_name(mpq_qgran g);   /* "tensor", "channel", "group" */
const char *mpq_qfit_name(mpq_qfit f);     /* "minmax", "mean", "threshold", "search" */
const char *mpq_qscale_name(mpq_qscale s); /* "fp16", "fp32", "e8m0", "e4m3" */

/* ---- parameters of one layer ------------------------------------------- */

#define MPQ_QMAXCODES 256

/* The grid of a layer in normalized units: level of every code, and the
 * distinct levels sorted ascending with the smallest code giving each. */
typedef struct mpq_qtable {
    int ncodes;                      /* 2^bits */
    int n;                           /* distinct levels (grid points per group) */
    int uniform;                     /* sorted[j] == sorted[0] + j exactly */
    int step0;                       /* largest power of two <= n - 1 (0 if n == 1) */
    int ident;                       /* uniform and code[j] == j: the integer grids */
    float level[MPQ_QMAXCODES];      /* [ncodes] level of each code; NaN: unused code */
    float sorted[MPQ_QMAXCODES + 4]; /* [n] distinct levels, ascending, then +inf */
    uint8_t code[MPQ_QMAXCODES];     /* [n] canonical (smallest) code of sorted[j] */
} mpq_qtable;

/* Fitted parameters of one layer. Scales are stored already rounded to their
 * storage format (fp16, E8M0, ...), so the floats here are exactly what the
 * serialized bytes give back. */
typedef struct mpq_qparams {
    mpq_qspec spec;
    int64_t rows, cols; /* layer shape [out][in] */
    int64_t gcols;      /* columns per group (cols for tensor and channel) */
    int64_t gpr;        /* groups per row (ceil(cols / gcols)); 0 for tensor */
    int64_t ngroups;    /* scales stored: 1, rows, or rows * gpr */
    float *scale;       /* [ngroups] > 0, in storage precision */
    int32_t *zero;      /* [ngroups] zero-points in [0, 2^bits - 1], or NULL */
    int8_t *sign;       /* [rows] +1 / -1 per channel, or NULL */
    float tensor_scale; /* multiplies every scale (NVFP4); 1 otherwise */
    float expo;         /* powerexp exponent a; 1 otherwise */
    mpq_qtable tab[2];  /* [0] levels; [1] levels of channels with sign -1 */
} mpq_qparams;

/* Allocates parameters for a [rows][cols] layer (scales 1, zero-points 0,
 * signs +1). Fails on a granularity the family does not take or a bad shape.
 * Owner: caller (mpq_qparams_destroy). Local. */
mpq_err mpq_qparams_create(struct mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                           mpq_qparams **out);
/* NULL-safe; sets *p to NULL. */
void mpq_qparams_destroy(mpq_qparams **p);
/* Deep copy of src into dst (same spec and shape). */
mpq_err mpq_qparams_copy(struct mpq_ctx *ctx, const mpq_qparams *src, mpq_qparams *dst);

/* Fits the parameters to w [rows][cols] with the spec's fit method,
 * minimising sum imp[col] * (w - Q(w))^2 when searching; imp [cols] (e.g. the
 * Hessian diagonal) may be NULL for weight 1. NaN/Inf weights or negative
 * importances are errors naming the position. Local. */
mpq_err mpq_quant_fit(struct mpq_ctx *ctx, mpq_qparams *p, const float *w, const float *imp);

/* Groups whose stored scale sits at the top of its storage format (fp16
 * 65504, E8M0 2^127, fp32 1e38; E4M3 scales under a tensor scale never
 * clamp) while the group's weights reach beyond the grid: the scale the
 * weights need was clamped, and quantization clips them to the grid. */
typedef struct mpq_qclamp {
    int64_t groups;           /* how many */
    int64_t group, row, col0; /* the first one: group index, row, first column */
    int64_t col1;             /* its columns [col0, col1) (the whole row for gran=tensor) */
    float amax, reach;        /* its max |w|, and the largest |value| of its grid */
} mpq_qclamp;
/* Local. The clamped groups of p fitted to w [rows][cols]. */
void mpq_quant_clamped(const mpq_qparams *p, const float *w, mpq_qclamp *out);
/* Local. Logs a warning naming the layer, the count and the first group
 * when p fitted to w has clamped scales (mpq_quant_clamped); returns the
 * count. here = 1: printed by the calling rank (a layer only one rank holds),
 * else by rank 0 as every log line. */
int64_t mpq_quant_warn_clamped(struct mpq_ctx *ctx, const char *layer, const mpq_qparams *p,
                               const float *w, int here);

/* Nearest codes of the whole matrix: codes [rows][cols]. Local. */
void mpq_quant_quantize(const mpq_qparams *p, const float *w, uint8_t *codes);
/* Dequantized matrix out [rows][cols] from codes [rows][cols]. Local. */
void mpq_quant_dequantize(const mpq_qparams *p, const uint8_t *codes, float *out);
/* sum imp[col] * (w - dequantize(quantize(w)))^2 over the matrix (imp NULL:
 * weight 1), accumulated in double. Local. */
double mpq_quant_error(const mpq_qparams *p, const float *w, const float *imp);
/* Fails with MPQ_ERR_FORMAT naming the first position whose code is unused
 * by the quantizer (e.g. an FP8 NaN). Local. */
mpq_err mpq_quant_check_codes(struct mpq_ctx *ctx, const mpq_qparams *p, const uint8_t *codes);

/* Row forms (row r, all cols). Neighbours: lo/hi codes and values with
 * vlo <= w <= vhi; at the ends of the grid and on a grid point lo == hi. */
void mpq_quant_row_nearest(const mpq_qparams *p, int64_t r, const float *w, uint8_t *codes);
void mpq_quant_row_dequant(const mpq_qparams *p, int64_t r, const uint8_t *codes, float *out);
void mpq_quant_row_neighbours(const mpq_qparams *p, int64_t r, const float *w, uint8_t *lo,
                              uint8_t *hi, float *vlo, float *vhi);

/* The grid of the group holding (r, c): its n distinct values ascending and
 * their canonical codes; values and codes need MPQ_QMAXCODES entries. */
void mpq_quant_grid(const mpq_qparams *p, int64_t r, int64_t c, float *values, uint8_t *codes,
                    int *n);
/* For uniform grids (int): value = scale * (code - zero) for the group of
 * (r, c). Returns 0 for non-uniform grids (then scale/zero are not set). */
int mpq_quant_uniform(const mpq_qparams *p, int64_t r, int64_t c, float *scale, float *zero);

/* ---- per-element inline forms (for rounding methods) --------------------- */

/* Group index of weight (r, c). */
static inline int64_t mpq_qgroup_of(const mpq_qparams *p, int64_t r, int64_t c) {
    return p->gpr == 0 ? 0 : r * p->gpr + c / p->gcols;
}
/* Effective scale of group g. */
static inline float mpq_qscale_of(const mpq_qparams *p, int64_t g) {
    return p->scale[g] * p->tensor_scale;
}
static inline float mpq_qzero_of(const mpq_qparams *p, int64_t g) {
    return p->zero ? (float)p->zero[g] : 0.0f;
}
static inline const mpq_qtable *mpq_qtable_of(const mpq_qparams *p, int64_t r) {
    return (p->sign && p->sign[r] < 0) ? &p->tab[1] : &p->tab[0];
}
/* The one formula that maps a normalized level to a weight value. */
static inline float mpq_qval(float s, float level, float z) {
    return s * (level - z);
}

/* Sorted-grid indices lo <= hi bracketing w, and their values vlo <= w <=
 * vhi (lo == hi on a grid point or outside the grid), for a group with scale
 * s (> 0), zero z and inv = 1 / s (only used for the first guess). */
static inline void mpq_qlocate(const mpq_qtable *t, float s, float inv, float z, float w, int *lo,
                               int *hi, float *vlo, float *vhi) {
    const int n = t->n;
    float u = w * inv + z;
    int j;
    if (t->uniform) {
        float x = u - t->sorted[0];
        j = !(x > 0.0f) ? 0 : (x >= (float)(n - 1) ? n - 1 : (int)x);
    } else {
        /* largest j with sorted[j] <= u (or 0); sorted[] is padded with
         * +inf up to MPQ_QMAXCODES so the probes need no bound check */
        j = 0;
        for (int step = t->step0; step > 0; step >>= 1)
            j += t->sorted[j + step] <= u ? step : 0;
    }
    /* The guess may be off by one after rounding; settle in the weight domain,
     * with exactly the values that dequantization produces. */
    float v = mpq_qval(s, t->sorted[j], z);
    while (j > 0 && v > w)
        v = mpq_qval(s, t->sorted[--j], z);
    if (v >= w || j == n - 1) { /* on the grid point, below the grid, or above it */
        *lo = *hi = j;
        *vlo = *vhi = v;
        return;
    }
    float vn = mpq_qval(s, t->sorted[j + 1], z);
    while (vn <= w && j + 2 < n) {
        j++;
        v = vn;
        vn = mpq_qval(s, t->sorted[j + 1], z);
    }
    if (vn <= w) { /* at or above the top point */
        *lo = *hi = j + 1;
        *vlo = *vhi = vn;
        return;
    }
    if (v == w) {
        *lo = *hi = j;
        *vlo = *vhi = v;
        return;
    }
    *lo = j;
    *hi = j + 1;
    *vlo = v;
    *vhi = vn;
}

/* Sorted-grid index of the grid point nearest to w (ties: the lower one),
 * and its value. Branch-free: a first guess (rounded index for uniform
 * grids, a search in the normalized domain otherwise) is within one point of
 * the answer, so the nearest of the 3 (uniform) or 4 candidates around it,
 * compared with exactly the dequantized values, is the brute-force answer.
 * Candidates past the top land on the +inf padding and never win. */
static inline int mpq_qnearest(const mpq_qtable *t, float s, float inv, float z, float w,
                               float *val) {
    const int top = t->n - 1;
    float u = w * inv + z;
    int j, ncand;
    if (t->uniform) {
        float x = u - t->sorted[0] + 0.5f;
        x = x > 0.0f ? x : 0.0f;
        x = x < (float)top ? x : (float)top;
        j = (int)x;
        ncand = 3;
    } else {
        j = 0;
        for (int step = t->step0; step > 0; step >>= 1)
            j += t->sorted[j + step] <= u ? step : 0;
        ncand = 4;
    }
    j = j > 0 ? j - 1 : 0;
    int best = j;
    float bv = mpq_qval(s, t->sorted[j], z), bd = fabsf(w - bv);
    for (int k = 1; k < ncand; k++) {
        float v = mpq_qval(s, t->sorted[j + k], z), d = fabsf(w - v);
        int better = d < bd;
        best = better ? j + k : best;
        bv = better ? v : bv;
        bd = better ? d : bd;
    }
    *val = bv;
    return best;
}

/* Nearest point of an integer grid (t->ident: level j = l0 + j, code j,
 * top = n - 1) to w and its value: mpq_qnearest's three-candidate rule
 * with the levels computed instead of loaded (l0 + (float)j equals
 * sorted[j] exactly, checked when the table is built), so that loops over
 * it vectorize; the same code and value as mpq_qnearest. */
static inline uint8_t mpq_qnearest_int(float s, float inv, float z, float l0, float top, float w,
                                       float *val) {
    /* every operation unconditional, only selects after: the loop if-converts */
    float x = w * inv + z - l0 + 0.5f;
    x = x > 0.0f ? x : 0.0f;
    x = x < top ? x : top;
    const float t = (float)(int)x, tm = t - 1.0f;
    const float j = t > 0.0f ? tm : 0.0f, j1 = j + 1.0f, j2 = j + 2.0f;
    const float v0 = s * ((l0 + j) - z), v1 = s * ((l0 + j1) - z), v2 = s * ((l0 + j2) - z);
    const float e1 = fabsf(w - v1), e2 = fabsf(w - v2), d0 = fabsf(w - v0);
    const float d1 = j1 <= top ? e1 : INFINITY, d2 = j2 <= top ? e2 : INFINITY;
    float best = j, bd = d0, bv = v0;
    best = d1 < bd ? j1 : best;
    bv = d1 < bd ? v1 : bv;
    bd = d1 < bd ? d1 : bd;
    best = d2 < bd ? j2 : best;
    bv = d2 < bd ? v2 : bv;
    *val = bv;
    return (uint8_t)(int)best;
}

/* Nearest code of w at (r, c) and its value. */
static inline uint8_t mpq_quant_nearest_at(const mpq_qparams *p, int64_t r, int64_t c, float w,
                                           float *value) {
    int64_t g = mpq_qgroup_of(p, r, c);
    const mpq_qtable *t = mpq_qtable_of(p, r);
    float s = mpq_qscale_of(p, g), z = mpq_qzero_of(p, g), v;
    int j = mpq_qnearest(t, s, 1.0f / s, z, w, &v);
    if (value)
        *value = v;
    return t->code[j];
}
/* Value of code at (r, c). */
static inline float mpq_quant_value_at(const mpq_qparams *p, int64_t r, int64_t c, uint8_t code) {
    int64_t g = mpq_qgroup_of(p, r, c);
    return mpq_qval(mpq_qscale_of(p, g), mpq_qtable_of(p, r)->level[code], mpq_qzero_of(p, g));
}
/* The two grid points bracketing w at (r, c) (equal on a grid point or
 * outside the grid). */
static inline void mpq_quant_neighbours_at(const mpq_qparams *p, int64_t r, int64_t c, float w,
                                           uint8_t *lo_code, uint8_t *hi_code, float *vlo,
                                           float *vhi) {
    int64_t g = mpq_qgroup_of(p, r, c);
    const mpq_qtable *t = mpq_qtable_of(p, r);
    float s = mpq_qscale_of(p, g), z = mpq_qzero_of(p, g);
    int lo, hi;
    mpq_qlocate(t, s, 1.0f / s, z, w, &lo, &hi, vlo, vhi);
    *lo_code = t->code[lo];
    *hi_code = t->code[hi];
}

/* ---- packing, serialization, storage cost --------------------------------- */

/* Bytes of the packed code stream of n codes: ceil(n * bits / 8), or
 * ceil(n / 5) with base-3 packing. */
int64_t mpq_quant_packed_bytes(const mpq_qspec *spec, int64_t n);
/* Packs n codes (each < 2^bits; < 3 for base3) LSB-first into out
 * [mpq_quant_packed_bytes]. Fails on a code out of range. Local. */
mpq_err mpq_quant_pack(struct mpq_ctx *ctx, const mpq_qspec *spec, const uint8_t *codes, int64_t n,
                       uint8_t *out);
/* Inverse of mpq_quant_pack; nbytes must equal mpq_quant_packed_bytes. */
mpq_err mpq_quant_unpack(struct mpq_ctx *ctx, const mpq_qspec *spec, const uint8_t *in,
                         int64_t nbytes, int64_t n, uint8_t *codes);

/* Bytes of the serialized parameters of a [rows][cols] layer: scales
 * (2/4/1 bytes each), zero-points packed at `bits` bits each, signs at 1 bit
 * per channel, and 4 bytes for a per-tensor fp32 (NVFP4 scale, powerexp a).
 * Fails on a bad shape. Local. */
mpq_err mpq_qparams_nbytes(struct mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                           int64_t *nbytes);
/* Writes the parameters (little-endian) into out [mpq_qparams_nbytes]. */
mpq_err mpq_qparams_serialize(struct mpq_ctx *ctx, const mpq_qparams *p, uint8_t *out);
/* Rebuilds parameters from serialized bytes; validates the length and every
 * value (positive finite scales, zero-points in range, ...), naming the
 * field and group of a bad one. Owner: caller. */
mpq_err mpq_qparams_deserialize(struct mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows,
                                int64_t cols, const uint8_t *in, int64_t nbytes, mpq_qparams **out);

/* Exact storage of a [rows][cols] layer in bits: 8 * (packed code bytes +
 * serialized parameter bytes). Depends on spec and shape only. Local. */
mpq_err mpq_quant_storage_bits(struct mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows,
                               int64_t cols, int64_t *bits);

/* ---- the quantized layer ---------------------------------------------- */

typedef struct mpq_qlayer {
    mpq_qspec spec;
    int64_t rows, cols;
    mpq_qparams *params;
    uint8_t *codes;  /* [rows * cols] one code per weight */
    uint8_t *packed; /* [packed_bytes] the packed code stream */
    int64_t packed_bytes;
    uint8_t *param_bytes; /* [nparam_bytes] serialized parameters */
    int64_t nparam_bytes;
} mpq_qlayer;

/* Owner: caller (mpq_qlayer_destroy). Local. */
mpq_err mpq_qlayer_create(struct mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                          mpq_qlayer **out);
void mpq_qlayer_destroy(mpq_qlayer **l);
/* Fit (imp may be NULL), nearest codes, pack, serialize. Local. */
mpq_err mpq_qlayer_quantize(struct mpq_ctx *ctx, mpq_qlayer *l, const float *w, const float *imp);
/* Re-packs and re-serializes after a rounding method changed codes or params. */
mpq_err mpq_qlayer_finish(struct mpq_ctx *ctx, mpq_qlayer *l);
/* out [rows][cols] = the dequantized layer. */
void mpq_qlayer_dequantize(const mpq_qlayer *l, float *out);
/* 8 * (packed_bytes + nparam_bytes). */
int64_t mpq_qlayer_bits(const mpq_qlayer *l);

/* ---- number formats used by scales and grids ------------------------------ */

/* Round a finite x > 0 to the nearest value of the format (ties to even),
 * clamped to the format's smallest positive and largest finite value. */
float mpq_round_fp16(float x);
float mpq_round_e4m3(float x);
/* Largest power of two <= x, exponent clamped to [-127, 127]. */
float mpq_floor_e8m0(float x);
/* Bit patterns of exactly representable non-negative values, and back. */
uint16_t mpq_fp16_bits(float v);
float mpq_fp16_value(uint16_t h);
uint8_t mpq_e4m3_bits(float v);
float mpq_e4m3_value(uint8_t b); /* NaN for the NaN patterns */

/* The 16 NF4 levels, ascending, in [-1, 1] with an exact 0. */
extern const float mpq_nf4_levels[16];

#endif
