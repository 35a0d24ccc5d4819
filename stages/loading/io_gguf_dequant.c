/* io_gguf_dequant.c: the ggml tensor types and the dequantization of the
 * block-quantized ones, written from the block layouts of ggml's
 * ggml-common.h (the block_* structs) and the formulas of its reference
 * dequantize_row_* functions. Every value is computed in float in the same
 * order as there (a scale times a level, minus a scaled minimum), so that
 * the result equals ggml's and gguf-py's dequantization bit for bit; the
 * build has no FMA contraction (ISO C mode, x86-64 baseline).
 *
 * Layouts (little-endian; d, m, dmin are IEEE half floats):
 *   Q4_0 (32)  d, qs[16]: element j low nibble of qs[j], j+16 high; d*(q-8)
 *   Q4_1 (32)  d, m, qs[16]: d*q + m
 *   Q5_0 (32)  d, qh[4], qs[16]: bit j of qh (uint32) is bit 4 of q_j; d*(q-16)
 *   Q5_1 (32)  d, m, qh[4], qs[16]: d*q + m
 *   Q8_0 (32)  d, int8 qs[32]: d*q
 *   Q2_K (256) scales[16], qs[64], d, dmin: 16 groups of 16; scale nibble
 *              low = level scale, high = min scale; 2-bit levels
 *   Q3_K (256) hmask[32], qs[64], scales[12] (16 6-bit scales), d: 2-bit
 *              levels, minus 4 where the hmask bit is clear; d*(s-32)*q
 *   Q4_K (256) d, dmin, scales[12] (8 6-bit scales and mins), qs[128]
 *   Q5_K (256) d, dmin, scales[12], qh[32], qs[128]
 *   Q6_K (256) ql[128], qh[64], int8 scales[16], d: 6-bit levels - 32
 */
#include <string.h>

#include "io_gguf_internal.h"
#include "io_internal.h"

#define QK   32
#define QK_K 256

static float half(const unsigned char *p) {
    return mpq_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

/* ---- 32-element blocks ------------------------------------------------------ */

static void dq_q4_0(const unsigned char *b, float *y) {
    const float d = half(b);
    const unsigned char *qs = b + 2;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = (float)((qs[j] & 0x0f) - 8) * d;
        y[j + QK / 2] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static void dq_q4_1(const unsigned char *b, float *y) {
    const float d = half(b), m = half(b + 2);
    const unsigned char *qs = b + 4;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = (float)(qs[j] & 0x0f) * d + m;
        y[j + QK / 2] = (float)(qs[j] >> 4) * d + m;
    }
}

static void dq_q5_0(const unsigned char *b, float *y) {
    const float d = half(b);
    const uint32_t qh = mpq_io_le32(b + 2);
    const unsigned char *qs = b + 6;
    for (int j = 0; j < QK / 2; j++) {
        const int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)(((qs[j] & 0x0f) | h0) - 16) * d;
        y[j + QK / 2] = (float)(((qs[j] >> 4) | h1) - 16) * d;
    }
}

static void dq_q5_1(const unsigned char *b, float *y) {
    const float d = half(b), m = half(b + 2);
    const uint32_t qh = mpq_io_le32(b + 4);
    const unsigned char *qs = b + 8;
    for (int j = 0; j < QK / 2; j++) {
        const int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)((qs[j] & 0x0f) | h0) * d + m;
        y[j + QK / 2] = (float)((qs[j] >> 4) | h1) * d + m;
    }
}

static void dq_q8_0(const unsigned char *b, float *y) {
    const float d = half(b);
    for (int j = 0; j < QK; j++)
        y[j] = (float)(int8_t)b[2 + j] * d;
}

/* ---- 256-element super-blocks ---------------------------------------------- */

static void dq_q2_k(const unsigned char *b, float *y) {
    const unsigned char *scales = b, *qs = b + 16;
    const float d = half(b + 80), dmin = half(b + 82);
    for (int e = 0; e < QK_K; e++) {
        const int h = e / 128, s = (e % 128) / 32, k = e % 32;
        const int sc = scales[e / 16];
        const float dl = d * (float)(sc & 0x0f), ml = dmin * (float)(sc >> 4);
        const int q = (qs[h * 32 + k] >> (2 * s)) & 3;
        y[e] = dl * (float)q - ml;
    }
}

static void dq_q3_k(const unsigned char *b, float *y) {
    const unsigned char *hmask = b, *qs = b + 32, *s = b + 96;
    const float d = half(b + 108);
    int sc[16];
    for (int i = 0; i < 16; i++) {
        const int low = i < 8 ? s[i] & 0x0f : s[i - 8] >> 4;
        const int high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        sc[i] = (low | high << 4) - 32;
    }
    for (int e = 0; e < QK_K; e++) {
        const int h = e / 128, sh = (e % 128) / 32, k = e % 32;
        const int ql = (qs[h * 32 + k] >> (2 * sh)) & 3;
        const int q = ql - (((hmask[k] >> (e / 32)) & 1) ? 0 : 4);
        const float dl = d * (float)sc[e / 16];
        y[e] = dl * (float)q;
    }
}

/* The 8 6-bit scales and mins of Q4_K and Q5_K from their 12 bytes. */
static void k_scale_min(const unsigned char *s, int *sc, int *mn) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            sc[j] = s[j] & 63;
            mn[j] = s[j + 4] & 63;
        } else {
            sc[j] = (s[j + 4] & 0x0f) | (s[j - 4] >> 6) << 4;
            mn[j] = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
        }
    }
}

static void dq_q4_k(const unsigned char *b, float *y) {
    const float d = half(b), dmin = half(b + 2);
    const unsigned char *qs = b + 16;
    int sc[8], mn[8];
    k_scale_min(b + 4, sc, mn);
    for (int j = 0; j < 8; j++) {
        const float d1 = d * (float)sc[j], m1 = dmin * (float)mn[j];
        const unsigned char *q = qs + (j / 2) * 32;
        const int shift = 4 * (j % 2);
        for (int k = 0; k < 32; k++)
            y[j * 32 + k] = d1 * (float)((q[k] >> shift) & 0x0f) - m1;
    }
}

static void dq_q5_k(const unsigned char *b, float *y) {
    const float d = half(b), dmin = half(b + 2);
    const unsigned char *qh = b + 16, *qs = b + 48;
    int sc[8], mn[8];
    k_scale_min(b + 4, sc, mn);
    for (int j = 0; j < 8; j++) {
        const float d1 = d * (float)sc[j], m1 = dmin * (float)mn[j];
        const unsigned char *q = qs + (j / 2) * 32;
        const int shift = 4 * (j % 2);
        for (int k = 0; k < 32; k++) {
            const int v = ((q[k] >> shift) & 0x0f) | ((qh[k] >> j) & 1) << 4;
            y[j * 32 + k] = d1 * (float)v - m1;
        }
    }
}

static void dq_q6_k(const unsigned char *b, float *y) {
    const unsigned char *ql = b, *qh = b + 128;
    const signed char *scales = (const signed char *)(b + 192);
    const float d = half(b + 208);
    for (int e = 0; e < QK_K; e++) {
        const int h = e / 128, r = e % 128;
        const int lo = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
        const int hi = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 3;
        const float dl = d * (float)scales[e / 16];
        y[e] = dl * (float)((lo | hi << 4) - 32);
    }
}

/* ---- the type table --------------------------------------------------------- */

#define KEEP(n, b, dt)                                                                             \
    { .name = n, .block = 1, .bytes = b, .keep = 1, .dtype = dt }
#define QUANT(n, k, b, f)                                                                          \
    { .name = n, .block = k, .bytes = b, .dequant = f }
#define UNSUPPORTED(n, k, b)                                                                       \
    { .name = n, .block = k, .bytes = b }

static const mpq_gguf_type types[] = {
    [0] = KEEP("F32", 4, MPQ_DTYPE_F32),      [1] = KEEP("F16", 2, MPQ_DTYPE_F16),
    [2] = QUANT("Q4_0", QK, 18, dq_q4_0),     [3] = QUANT("Q4_1", QK, 20, dq_q4_1),
    [6] = QUANT("Q5_0", QK, 22, dq_q5_0),     [7] = QUANT("Q5_1", QK, 24, dq_q5_1),
    [8] = QUANT("Q8_0", QK, 34, dq_q8_0),     [9] = UNSUPPORTED("Q8_1", QK, 40),
    [10] = QUANT("Q2_K", QK_K, 84, dq_q2_k),  [11] = QUANT("Q3_K", QK_K, 110, dq_q3_k),
    [12] = QUANT("Q4_K", QK_K, 144, dq_q4_k), [13] = QUANT("Q5_K", QK_K, 176, dq_q5_k),
    [14] = QUANT("Q6_K", QK_K, 210, dq_q6_k), [15] = UNSUPPORTED("Q8_K", QK_K, 292),
    [16] = UNSUPPORTED("IQ2_XXS", QK_K, 66),  [17] = UNSUPPORTED("IQ2_XS", QK_K, 74),
    [18] = UNSUPPORTED("IQ3_XXS", QK_K, 98),  [19] = UNSUPPORTED("IQ1_S", QK_K, 50),
    [20] = UNSUPPORTED("IQ4_NL", QK, 18),     [21] = UNSUPPORTED("IQ3_S", QK_K, 110),
    [22] = UNSUPPORTED("IQ2_S", QK_K, 82),    [23] = UNSUPPORTED("IQ4_XS", QK_K, 136),
    [24] = UNSUPPORTED("I8", 1, 1),           [25] = UNSUPPORTED("I16", 1, 2),
    [26] = UNSUPPORTED("I32", 1, 4),          [27] = UNSUPPORTED("I64", 1, 8),
    [28] = UNSUPPORTED("F64", 1, 8),          [29] = UNSUPPORTED("IQ1_M", QK_K, 56),
    [30] = KEEP("BF16", 2, MPQ_DTYPE_BF16),   [34] = UNSUPPORTED("TQ1_0", QK_K, 54),
    [35] = UNSUPPORTED("TQ2_0", QK_K, 66),    [39] = UNSUPPORTED("MXFP4", QK, 17),
    [40] = UNSUPPORTED("NVFP4", 64, 36),      [41] = UNSUPPORTED("Q1_0", 128, 18),
};

const mpq_gguf_type *mpq_gguf_type_get(uint32_t type) {
    if (type >= sizeof types / sizeof types[0] || !types[type].name)
        return NULL;
    return &types[type];
}
