/* synth.h: deterministic synthetic activations for the Hessian tests.
 * Every value is a pure function of (seed, sample, row, column), so any rank
 * can regenerate any sample and a naive reference can see them all. */
#ifndef MPQ_TEST_SYNTH_H
#define MPQ_TEST_SYNTH_H

#include <stdint.h>

static inline uint64_t synth_mix(uint64_t z) {
    z += UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline double synth_unif(uint64_t seed, int64_t s, int64_t r, int64_t c) {
    uint64_t h = synth_mix(
        seed ^ synth_mix((uint64_t)s * 1000003u + synth_mix((uint64_t)r * 7919u + (uint64_t)c)));
    return (double)(h >> 11) * 0x1p-52 - 1.0;
}

/* Rows of sample s: between 3 and 13, not a multiple of anything useful. */
static inline int64_t synth_rows(int64_t s) {
    return 3 + (s * 7) % 11;
}

/* Sample s, rows x [synth_rows(s)][d]. Columns c with c % 13 == 5 are dead
 * (always 0); column scales span 1e-3..1e2 so that H has a wide dynamic
 * range; a shared component makes the channels correlated. */
static inline void synth_sample(uint64_t seed, int64_t s, int64_t d, float *x) {
    int64_t rows = synth_rows(s);
    for (int64_t r = 0; r < rows; r++) {
        double common = synth_unif(seed, s, r, -1);
        for (int64_t c = 0; c < d; c++) {
            double scale = c % 7 == 0 ? 100.0 : c % 7 == 1 ? 1e-3 : 1.0;
            double v = (synth_unif(seed, s, r, c) + 0.5 * common) * scale;
            x[r * d + c] = c % 13 == 5 ? 0.0f : (float)v;
        }
    }
}

#endif
