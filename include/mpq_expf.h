/* mpq_expf.h: e^x for x <= 0 in a form the compiler vectorizes, and the
 * shifted exponentials of a softmax with their sum (attention, the network
 * loss's prediction). */
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

/* The exponentials of a softmax: e[j] = e^(x[j] - m) for j < n (n >= 1), m
 * the largest x[j], set into *max; returns the sum of the e[j] in double. e
 * may be x. The maximum and the sum run in four interleaved chains, which
 * proceed in parallel where one chain would wait on every step, and add in
 * a fixed order: the same bits on every run. */
static inline double mpq_exp_shifted(const float *x, float *e, int64_t n, float *max) {
    float m4[4] = {x[0], x[0], x[0], x[0]};
    int64_t j = 1;
    for (; j + 3 < n; j += 4)
        for (int k = 0; k < 4; k++)
            m4[k] = x[j + k] > m4[k] ? x[j + k] : m4[k];
    for (; j < n; j++)
        m4[0] = x[j] > m4[0] ? x[j] : m4[0];
    const float mx01 = m4[1] > m4[0] ? m4[1] : m4[0], mx23 = m4[3] > m4[2] ? m4[3] : m4[2];
    const float mx = mx23 > mx01 ? mx23 : mx01;
    for (j = 0; j < n; j++)
        e[j] = mpq_exp_nonpos(x[j] - mx);
    double t4[4] = {0.0, 0.0, 0.0, 0.0};
    for (j = 0; j + 3 < n; j += 4)
        for (int k = 0; k < 4; k++)
            t4[k] += (double)e[j + k];
    for (; j < n; j++)
        t4[0] += (double)e[j];
    *max = mx;
    return (t4[0] + t4[1]) + (t4[2] + t4[3]);
}

#endif
