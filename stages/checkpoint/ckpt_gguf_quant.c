/* ckpt_gguf_quant.c: mpquant's integer layers as ggml blocks.
 *
 *   Q8_0  fp16 d, int8 q[32]                        w = d * q
 *   Q4_0  fp16 d, nibbles q[32]                     w = d * (q - 8)
 *   Q5_0  fp16 d, uint32 high bits, nibbles q[32]   w = d * (q - 16)
 *   Q4_1  fp16 d, fp16 m, nibbles q[32]             w = d * q + m
 *   Q5_1  fp16 d, fp16 m, high bits, nibbles q[32]  w = d * q + m
 *
 *   Q6_K  256 weights: 6-bit q in nibbles and 2-bit pairs, int8 sub-scales
 *         sc[16] (one per 16 weights), fp16 d       w = (d * sc) * (q - 32)
 *   Q4_K  256 weights: fp16 d, fp16 dmin, 6-bit sc[8] and m[8] (one per 32
 *   Q5_K  weights) in 12 bytes, [Q5_K: high bits], nibbles
 *                                                   w = (d * sc) * q - dmin * m
 *
 * Nibble byte j holds weight j (low) and weight j + 16 (high); bit j of the
 * little-endian uint32 is bit 4 of weight j. A symmetric int group (value =
 * s * (code - 2^(bits-1))) maps exactly: d = s, q = code. An asymmetric one
 * (value = s * (code - z)) takes d = s, q = code, m = fp16(-s * z); that is
 * exact only where float d * q + m rounds like s * (code - z), which every
 * weight is checked for. A symmetric int6 layer in groups of 16 becomes
 * Q6_K with d = fp16(max scale / 127) and sc = round(scale / d): a
 * conversion, exact only when every scale is a multiple of d. With
 * --kquants an int4 / int5 layer in groups of 32 (sym or asym) with rows of
 * a multiple of 256 becomes Q4_K / Q5_K instead, also a conversion: per
 * super-block of 8 groups, q = code (sym: level + 2^(bits-1)), each group's
 * w = s * q - min with min = s * zero (sym: s * 2^(bits-1)), d = fp16(max s
 * / 63) and dmin = fp16(max min / 63) (one step up if the largest would
 * round to 64), sc and m the nearest integers to s / d and min / dmin or
 * their other neighbours, whichever pair gives the group the least squared
 * error. Values are compared as float32 computed in the reader's order
 * (products left to right, then the sum or difference). */
#include <math.h>
#include <string.h>

#include "ckpt_gguf.h"

static const struct {
    int type, bits, sym, offset; /* stored q = level + offset (sym) or code (asym) */
    size_t bytes;
    const char *name;
    int group, qk;    /* the quantizer's group, weights per block */
    int kq;           /* 1: a K-quant taken only with --kquants (sym -1: either kind) */
    const char *conv; /* a conversion: why a layer stays F32 without --lossy */
} block_types[] = {
    /* with --kquants these come first; without, they are skipped */
    {MPQ_GGML_Q4_K, 4, -1, 8, 144, "Q4_K", 32, 256, 1,
     "Q4_K would re-express its scales and minimums as 6-bit sub-scales (--lossy converts it)"},
    {MPQ_GGML_Q5_K, 5, -1, 16, 176, "Q5_K", 32, 256, 1,
     "Q5_K would re-express its scales and minimums as 6-bit sub-scales (--lossy converts it)"},
    /* Q8_0: q is the level itself, as int8 */
    {MPQ_GGML_Q8_0, 8, 1, 0, 34, "Q8_0", 32, 32, 0, NULL},
    {MPQ_GGML_Q4_0, 4, 1, 8, 18, "Q4_0", 32, 32, 0, NULL},
    {MPQ_GGML_Q5_0, 5, 1, 16, 22, "Q5_0", 32, 32, 0, NULL},
    {MPQ_GGML_Q4_1, 4, 0, 0, 20, "Q4_1", 32, 32, 0, NULL},
    {MPQ_GGML_Q5_1, 5, 0, 0, 24, "Q5_1", 32, 32, 0, NULL},
    {MPQ_GGML_Q6_K, 6, 1, 32, 210, "Q6_K", 16, 256, 0,
     "Q6_K would re-express its scales as 8-bit sub-scales (--lossy converts it)"},
};

#define NBLOCK_TYPES (sizeof block_types / sizeof block_types[0])

static int find_type(int t) {
    for (size_t i = 0; i < NBLOCK_TYPES; i++)
        if (block_types[i].type == t)
            return (int)i;
    return -1;
}

int mpq_gguf_block_type(const mpq_qspec *spec, int64_t cols, int kquants, const char **why) {
    if (strcmp(spec->ops->name, "int") != 0) {
        *why = "quantizer family has no ggml block type";
        return MPQ_GGML_F32;
    }
    if (spec->scale != MPQ_QSCALE_FP16 && spec->scale != MPQ_QSCALE_FP32 &&
        spec->scale != MPQ_QSCALE_FP16Z) {
        *why = "scale format is neither fp16 (or fp16z) nor fp32";
        return MPQ_GGML_F32;
    }
    for (size_t i = 0; i < NBLOCK_TYPES; i++) {
        if (block_types[i].bits != spec->bits ||
            (block_types[i].sym >= 0 && block_types[i].sym != (spec->sym != 0)))
            continue;
        if (block_types[i].kq) {
            /* a K-quant where asked for and the rows hold whole super-blocks,
             * else the 32-weight type below */
            if (kquants && spec->gran == MPQ_QGRAN_GROUP && spec->group == block_types[i].group &&
                cols % block_types[i].qk == 0)
                return block_types[i].type;
            continue;
        }
        if (spec->gran != MPQ_QGRAN_GROUP || spec->group != block_types[i].group) {
            *why = block_types[i].group == 16 ? "int6 is held in groups of 16 only"
                                              : "not grouped by 32 columns";
            return MPQ_GGML_F32;
        }
        if (cols % block_types[i].qk != 0) {
            *why = block_types[i].qk == 256 ? "row length is not a multiple of 256"
                                            : "row length is not a multiple of 32";
            return MPQ_GGML_F32;
        }
        return block_types[i].type;
    }
    *why = spec->sym ? "symmetric int is held for bits 4, 5, 6 and 8 only"
                     : "asymmetric int is held for bits 4 and 5 only";
    return MPQ_GGML_F32;
}

size_t mpq_gguf_block_bytes(int t) {
    int i = find_type(t);
    return i < 0 ? 0 : block_types[i].bytes;
}

int64_t mpq_gguf_block_weights(int t) {
    int i = find_type(t);
    return i < 0 ? 0 : block_types[i].qk;
}

const char *mpq_gguf_block_converts(int t) {
    int i = find_type(t);
    return i < 0 ? NULL : block_types[i].conv;
}

const char *mpq_gguf_type_name(int t) {
    int i = find_type(t);
    return i >= 0               ? block_types[i].name
           : t == MPQ_GGML_F16  ? "F16"
           : t == MPQ_GGML_BF16 ? "BF16"
                                : "F32";
}

/* fp16 bits of a finite float x, rounded to nearest (sign kept). */
static uint16_t half_bits(float x) {
    if (x == 0.0f)
        return 0;
    uint16_t sign = x < 0 ? 0x8000u : 0u;
    float a = x < 0 ? -x : x;
    return (uint16_t)(sign | mpq_fp16_bits(mpq_round_fp16(a)));
}

static float half_value(uint16_t h) {
    float a = mpq_fp16_value((uint16_t)(h & 0x7fffu));
    return (h & 0x8000u) ? -a : a;
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xffu);
    p[1] = (uint8_t)(v >> 8);
}

/* Stores the 32 values q[] of one block after its d (and m) header bytes. */
static void pack_block(int bits, const int32_t *q, uint8_t *body) {
    if (bits == 8) {
        for (int j = 0; j < MPQ_GGML_QK; j++)
            body[j] = (uint8_t)(int8_t)q[j];
        return;
    }
    uint8_t *qs = body;
    if (bits == 5) {
        uint32_t qh = 0;
        for (int j = 0; j < MPQ_GGML_QK; j++)
            qh |= (uint32_t)((q[j] >> 4) & 1) << j;
        for (int k = 0; k < 4; k++)
            body[k] = (uint8_t)(qh >> (8 * k));
        qs = body + 4;
    }
    for (int j = 0; j < MPQ_GGML_QK / 2; j++)
        qs[j] = (uint8_t)((q[j] & 0x0f) | ((q[j + MPQ_GGML_QK / 2] & 0x0f) << 4));
}

/* The value the ggml reader computes for stored q: float32 product, then sum. */
static float block_value(int sym, int offset, float d, float m, int32_t q) {
    if (sym)
        return d * (float)(q - offset);
    float prod = d * (float)q;
    return prod + m;
}

static void add_stat(mpq_gguf_qstat *st, float got, float want, int64_t pos) {
    uint32_t a, b;
    memcpy(&a, &got, 4);
    memcpy(&b, &want, 4);
    double diff = (double)got - (double)want;
    st->n++;
    if (a != b) {
        st->mismatches++;
        if (st->first_bad < 0)
            st->first_bad = pos;
    }
    diff = diff < 0 ? -diff : diff;
    st->max_abs = diff > st->max_abs ? diff : st->max_abs;
    st->sum_sq += diff * diff;
}

/* The stored q of code (level + offset for sym, the code for asym), checked
 * to be an integer in the block type's range. */
static mpq_err stored_q(mpq_ctx *ctx, const mpq_qtable *tab, uint8_t code, int bt, int sym,
                        int64_t row, int32_t *q) {
    const int off = block_types[bt].offset, bits = block_types[bt].bits;
    const int lo = bits == 8 ? -128 : 0; /* Q8_0 stores int8 */
    const float lev = tab->level[code];
    *q = sym ? (int32_t)lev + off : (int32_t)code;
    MPQ_CHECK((sym ? (float)(*q - off) == lev : lev == (float)code) && *q >= lo &&
                  *q < lo + (1 << bits),
              MPQ_ERR_INTERNAL, "gguf: code %u of row %lld (level %g) does not fit a %s block",
              (unsigned)code, (long long)row, (double)lev, block_types[bt].name);
    return MPQ_OK;
}

/* The 32-weight types: one group per block. */
static mpq_err encode_32(mpq_ctx *ctx, const mpq_qlayer *l, int bt, const int64_t *rowmap,
                         uint8_t *out, mpq_gguf_qstat *st) {
    const mpq_qparams *p = l->params;
    const int sym = block_types[bt].sym, off = block_types[bt].offset, bits = block_types[bt].bits;
    const size_t bbytes = block_types[bt].bytes, head = sym ? 2 : 4;
    const int64_t nb = l->cols / MPQ_GGML_QK;
    int32_t q[MPQ_GGML_QK];
    for (int64_t r = 0; r < l->rows; r++) {
        const int64_t rs = rowmap ? rowmap[r] : r;
        const mpq_qtable *tab = mpq_qtable_of(p, rs);
        for (int64_t b = 0; b < nb; b++) {
            const int64_t c0 = b * MPQ_GGML_QK, g = mpq_qgroup_of(p, rs, c0);
            const float s = mpq_qscale_of(p, g);
            const uint16_t dh = half_bits(s);
            const float d = half_value(dh);
            st->bad_scales += d != s;
            const uint16_t mh = sym ? 0 : half_bits(-s * mpq_qzero_of(p, g));
            const float m = half_value(mh);
            uint8_t *blk = out + (r * nb + b) * (int64_t)bbytes;
            put16(blk, dh);
            if (!sym)
                put16(blk + 2, mh);
            for (int j = 0; j < MPQ_GGML_QK; j++) {
                const uint8_t code = l->codes[rs * l->cols + c0 + j];
                MPQ_CALL(stored_q(ctx, tab, code, bt, sym, rs, &q[j]));
                add_stat(st, block_value(sym, off, d, m, q[j]),
                         mpq_quant_value_at(p, rs, c0 + j, code), rs * l->cols + c0 + j);
            }
            pack_block(bits, q, blk + head);
        }
    }
    return MPQ_OK;
}

/* Q6_K: ql[128] low nibbles, qh[64] high bit pairs, int8 sc[16], fp16 d.
 * Weight i of half h (i < 128): nibble i / 64 of ql[64 h + i % 64], bits
 * 2 (i / 32) of qh[32 h + i % 32]. */
static mpq_err encode_q6k(mpq_ctx *ctx, const mpq_qlayer *l, int bt, const int64_t *rowmap,
                          uint8_t *out, mpq_gguf_qstat *st) {
    const mpq_qparams *p = l->params;
    const int64_t nb = l->cols / MPQ_GGML_QKK;
    for (int64_t r = 0; r < l->rows; r++) {
        const int64_t rs = rowmap ? rowmap[r] : r;
        const mpq_qtable *tab = mpq_qtable_of(p, rs);
        for (int64_t b = 0; b < nb; b++) {
            const int64_t c0 = b * MPQ_GGML_QKK;
            uint8_t *blk = out + (r * nb + b) * (int64_t)block_types[bt].bytes;
            uint8_t *ql = blk, *qh = blk + 128, *sc = blk + 192;
            memset(blk, 0, block_types[bt].bytes);
            float smax = 0;
            for (int j = 0; j < 16; j++) {
                float s = mpq_qscale_of(p, mpq_qgroup_of(p, rs, c0 + 16 * j));
                smax = s > smax ? s : smax;
            }
            const uint16_t dh = half_bits(smax / 127.0f);
            const float d = half_value(dh);
            put16(blk + 208, dh);
            for (int j = 0; j < 16; j++) {
                float s = mpq_qscale_of(p, mpq_qgroup_of(p, rs, c0 + 16 * j));
                long k = d > 0 ? lroundf(s / d) : 0;
                k = k > 127 ? 127 : k;
                sc[j] = (uint8_t)(int8_t)k;
                const float ds = d * (float)k;
                for (int i = 16 * j; i < 16 * j + 16; i++) {
                    const uint8_t code = l->codes[rs * l->cols + c0 + i];
                    int32_t q;
                    MPQ_CALL(stored_q(ctx, tab, code, bt, 1, rs, &q));
                    const int h = i / 128, w = i % 128;
                    ql[64 * h + w % 64] |= (uint8_t)((q & 0x0f) << (4 * (w / 64)));
                    qh[32 * h + w % 32] |= (uint8_t)(((q >> 4) & 3) << (2 * (w / 32)));
                    add_stat(st, ds * (float)(q - 32), mpq_quant_value_at(p, rs, c0 + i, code),
                             rs * l->cols + c0 + i);
                }
            }
        }
    }
    return MPQ_OK;
}

/* Q4_K / Q5_K: fp16 d, fp16 dmin, scales[12] (8 6-bit sub-scales sc and
 * minimums m, one per 32 weights), [Q5_K: qh[32], bit j of qh[k] is bit 4
 * of weight 32 j + k], qs[128]: weight 32 j + k in nibble j % 2 of
 * qs[32 (j / 2) + k]. Weight value (d * sc) * q - dmin * m. */

/* fp16 bits of x / 63 (x >= 0), one step up while x / d would round above
 * 63: the largest sub-scale (or minimum) then fits its 6 bits. */
static uint16_t k_super(float x) {
    uint16_t h = half_bits(x / 63.0f);
    while (x > 0 && half_value(h) * 63.5f <= x)
        h++;
    return h;
}

/* The value ggml computes: float products, then the difference. */
static float k_value(float d1, float m1, int32_t q) {
    const float prod = d1 * (float)q;
    return prod - m1;
}

/* Sub-scale *sc and minimum *m (0..63) of one group of 32 weights with
 * scale s and minimum mn (w = s * q - mn, want[] mpquant's values of the
 * stored q[]): each of the two nearest integers to s / d and mn / dmin,
 * the pair with the least squared error over the group (nearest first on
 * ties). */
static void k_pick(float d, float dmin, float s, float mn, const int32_t *q, const float *want,
                   int *sc, int *m) {
    const float xs = d > 0 ? s / d : 0, xm = dmin > 0 ? mn / dmin : 0;
    const long s0 = lroundf(xs), m0 = lroundf(xm);
    const long cs[2] = {s0, xs >= (float)s0 ? s0 + 1 : s0 - 1};
    const long cm[2] = {m0, xm >= (float)m0 ? m0 + 1 : m0 - 1};
    double best = -1;
    for (int a = 0; a < 4; a++) {
        long ks = cs[a / 2], km = cm[a % 2];
        ks = ks < 0 ? 0 : ks > 63 ? 63 : ks;
        km = km < 0 ? 0 : km > 63 ? 63 : km;
        const float d1 = d * (float)ks, m1 = dmin * (float)km;
        double e = 0;
        for (int k = 0; k < 32; k++) {
            const double diff = (double)k_value(d1, m1, q[k]) - (double)want[k];
            e += diff * diff;
        }
        if (best < 0 || e < best) {
            best = e;
            *sc = (int)ks;
            *m = (int)km;
        }
    }
}

/* The 12 bytes of 8 6-bit sub-scales and minimums: j < 4 in the low 6 bits
 * of bytes j and j + 4, j >= 4 in the nibbles of byte j + 4 with their top
 * 2 bits in the high bits of bytes j - 4 and j. */
static void k_pack_scales(const int *sc, const int *m, uint8_t *out) {
    for (int j = 0; j < 4; j++) {
        out[j] = (uint8_t)((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
        out[j + 4] = (uint8_t)((m[j] & 63) | (m[j + 4] >> 4) << 6);
        out[j + 8] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
}

/* One super-block of 256 weights from column c0 of source row rs. */
static mpq_err encode_k_block(mpq_ctx *ctx, const mpq_qlayer *l, int bt, int64_t rs, int64_t c0,
                              uint8_t *blk, mpq_gguf_qstat *st) {
    const mpq_qparams *p = l->params;
    const mpq_qtable *tab = mpq_qtable_of(p, rs);
    const int bits = block_types[bt].bits, sym = l->spec.sym != 0;
    int32_t q[MPQ_GGML_QKK];
    float want[MPQ_GGML_QKK], s[8], mn[8], smax = 0, mmax = 0;
    int sc[8], m[8];
    memset(blk, 0, block_types[bt].bytes);
    for (int j = 0; j < 8; j++) {
        const int64_t g = mpq_qgroup_of(p, rs, c0 + 32 * j);
        s[j] = mpq_qscale_of(p, g);
        /* sym: s * (code - 2^(bits-1)) = s * code - s * 2^(bits-1) */
        mn[j] = s[j] * (sym ? (float)(1 << (bits - 1)) : mpq_qzero_of(p, g));
        smax = s[j] > smax ? s[j] : smax;
        mmax = mn[j] > mmax ? mn[j] : mmax;
    }
    for (int i = 0; i < MPQ_GGML_QKK; i++) {
        const uint8_t code = l->codes[rs * l->cols + c0 + i];
        MPQ_CALL(stored_q(ctx, tab, code, bt, sym, rs, &q[i]));
        want[i] = mpq_quant_value_at(p, rs, c0 + i, code);
    }
    const uint16_t dh = k_super(smax), mh = k_super(mmax);
    const float d = half_value(dh), dmin = half_value(mh);
    put16(blk, dh);
    put16(blk + 2, mh);
    for (int j = 0; j < 8; j++)
        k_pick(d, dmin, s[j], mn[j], q + 32 * j, want + 32 * j, &sc[j], &m[j]);
    k_pack_scales(sc, m, blk + 4);
    uint8_t *qh = blk + 16, *qs = blk + (bits == 5 ? 48 : 16);
    for (int i = 0; i < MPQ_GGML_QKK; i++) {
        const int j = i / 32, k = i % 32;
        qs[32 * (j / 2) + k] |= (uint8_t)((q[i] & 15) << (4 * (j % 2)));
        if (bits == 5)
            qh[k] |= (uint8_t)(((q[i] >> 4) & 1) << j);
        add_stat(st, k_value(d * (float)sc[j], dmin * (float)m[j], q[i]), want[i],
                 rs * l->cols + c0 + i);
    }
    return MPQ_OK;
}

static mpq_err encode_k(mpq_ctx *ctx, const mpq_qlayer *l, int bt, const int64_t *rowmap,
                        uint8_t *out, mpq_gguf_qstat *st) {
    const int64_t nb = l->cols / MPQ_GGML_QKK;
    for (int64_t r = 0; r < l->rows; r++)
        for (int64_t b = 0; b < nb; b++)
            MPQ_CALL(encode_k_block(ctx, l, bt, rowmap ? rowmap[r] : r, b * MPQ_GGML_QKK,
                                    out + (r * nb + b) * (int64_t)block_types[bt].bytes, st));
    return MPQ_OK;
}

mpq_err mpq_gguf_encode(mpq_ctx *ctx, const mpq_qlayer *l, int t, const int64_t *rowmap,
                        uint8_t *out, mpq_gguf_qstat *st) {
    const int bt = find_type(t);
    MPQ_CHECK(bt >= 0 && l->cols % block_types[bt].qk == 0 &&
                  l->params->gcols == block_types[bt].group,
              MPQ_ERR_INTERNAL, "gguf: layer [%lld x %lld] cannot be encoded as %s",
              (long long)l->rows, (long long)l->cols, mpq_gguf_type_name(t));
    memset(st, 0, sizeof *st);
    st->first_bad = -1;
    if (t == MPQ_GGML_Q6_K)
        MPQ_CALL(encode_q6k(ctx, l, bt, rowmap, out, st));
    else if (t == MPQ_GGML_Q4_K || t == MPQ_GGML_Q5_K)
        MPQ_CALL(encode_k(ctx, l, bt, rowmap, out, st));
    else
        MPQ_CALL(encode_32(ctx, l, bt, rowmap, out, st));
    return MPQ_OK;
}
