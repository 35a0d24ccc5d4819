/* quant_formats.c: the small number formats of scales and grids (fp16, FP8
 * E4M3, E8M0): rounding of positive values and exact bit patterns. */
#include <math.h>

#include "mpq_quant.h"

/* Nearest value (ties to even) of a binary format with `mbits` mantissa bits,
 * smallest normal exponent emin (subnormal step 2^(emin - mbits)) and largest
 * finite value vmax; non-positive or NaN inputs give the smallest subnormal,
 * larger ones vmax. x / step is exact (division by a power of two). */
static float round_format(float x, int mbits, int emin, float vmax) {
    float tiny = ldexpf(1.0f, emin - mbits);
    if (!(x > 0.0f))
        return tiny;
    if (x >= vmax)
        return vmax;
    int k;
    frexpf(x, &k); /* x = f * 2^k, f in [0.5, 1) */
    int e = k - 1;
    float step = ldexpf(1.0f, (e < emin ? emin : e) - mbits);
    float v = rintf(x / step) * step;
    if (v < tiny)
        v = tiny;
    return v > vmax ? vmax : v;
}

float mpq_round_fp16(float x) {
    return round_format(x, 10, -14, 65504.0f);
}

float mpq_round_e4m3(float x) {
    return round_format(x, 3, -6, 448.0f);
}

float mpq_floor_e8m0(float x) {
    if (!(x > 0.0f))
        return ldexpf(1.0f, -127);
    int k;
    frexpf(x, &k);
    int e = k - 1;
    e = e < -127 ? -127 : (e > 127 ? 127 : e);
    return ldexpf(1.0f, e);
}

/* Bit pattern of an exactly representable v >= 0 in a format with `mbits`
 * mantissa bits, exponent bias `bias` (no sign handling: scales are > 0). */
static unsigned encode_format(float v, int mbits, int bias) {
    int emin = 1 - bias;
    if (!(v > 0.0f))
        return 0;
    int k;
    float f = frexpf(v, &k);
    int e = k - 1;
    if (e < emin) /* subnormal */
        return (unsigned)lrintf(ldexpf(v, mbits - emin));
    unsigned m = (unsigned)lrintf(ldexpf(2.0f * f - 1.0f, mbits));
    return ((unsigned)(e + bias) << mbits) | m;
}

uint16_t mpq_fp16_bits(float v) {
    return (uint16_t)encode_format(v, 10, 15);
}

float mpq_fp16_value(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 31)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexpf((float)m, -24);
    else
        v = ldexpf(1.0f + (float)m / 1024.0f, e - 15);
    return (h & 0x8000) ? -v : v;
}

uint8_t mpq_e4m3_bits(float v) {
    return (uint8_t)encode_format(v, 3, 7);
}

float mpq_e4m3_value(uint8_t b) {
    int e = (b >> 3) & 15, m = b & 7;
    float v;
    if (e == 15 && m == 7)
        return NAN;
    if (e == 0)
        v = ldexpf((float)m, -9);
    else
        v = ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return (b & 0x80) ? -v : v;
}
