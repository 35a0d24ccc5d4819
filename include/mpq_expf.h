/* mpq_expf.h: e^x for x <= 0 in a form the compiler vectorizes, for the
 * shifted scores of a softmax (attention, the network loss's prediction). */
#ifndef MPQ_EXPF_H
#define MPQ_EXPF_H

#include <stdint.h>
#include <string.h>

/* e^x for x <= 0 in plain float and integer arithmetic, which the compiler
 * vectorizes where a call to expf cannot be: x = n ln2 + r with |r| <= ln2
 * / 2 (ln2 split in two parts, so that n ln2 is exact), e^r by its Taylor
 * series to r^7 (truncation below 6e-9 relative), times 2^n put into the
 * exponent bits. Within 2 ulp of e^x. Below -87 (e^x under 2^-125, a
 * score's share under 1e-37) it gives e^-87; the clamp compares the bits
 * as integers (those of a negative float grow with its magnitude), which,
 * unlike a float comparison, does not stop the vectorization. A NaN stays
 * NaN. */
static inline float mpq_exp_nonpos(float x0) {
    uint32_t xb;
    memcpy(&xb, &x0, sizeof xb);
    xb = xb > 0xc2ae0000u ? 0xc2ae0000u : xb; /* -87.0f */
    float x;
    memcpy(&x, &xb, sizeof x);
    const int32_t n = (int32_t)(x * 1.44269504f - 0.5f); /* round(x / ln2), x <= 0 */
    const float fn = (float)n;
    const float r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const uint32_t bits = (uint32_t)(n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n + (x0 - x0);
}

#endif
