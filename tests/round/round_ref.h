/* round_ref.h: deterministic test problems and naive references for the
 * rounding tests (written independently of stages/round). */
#ifndef MPQ_TEST_ROUND_REF_H
#define MPQ_TEST_ROUND_REF_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_quant.h"

static inline uint64_t rr_mix(uint64_t z) {
    z += UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1) from (seed, i). */
static inline double rr_unif(uint64_t seed, uint64_t i) {
    return (double)(rr_mix(seed * UINT64_C(0x632be59bd9b4e019) + rr_mix(i)) >> 11) * 0x1p-52 * 2.0 -
           1.0;
}

/* Roughly Gaussian (sum of 4 uniforms), unit variance. */
static inline double rr_gauss(uint64_t seed, uint64_t i) {
    double s = 0.0;
    for (int k = 0; k < 4; k++)
        s += rr_unif(seed, 4 * i + (uint64_t)k);
    return s * 0.8660254037844386;
}

/* Weights [rows][cols]: Gaussian with scale 0.05 and a few outliers. */
static inline void rr_weights(uint64_t seed, int64_t rows, int64_t cols, float *W) {
    for (int64_t i = 0; i < rows * cols; i++) {
        double v = 0.05 * rr_gauss(seed, (uint64_t)i);
        if (rr_unif(seed + 1, (uint64_t)i) > 0.97)
            v *= 4.0;
        W[i] = (float)v;
    }
}

/* H = X^T X for X [m][cols] with correlated columns of different scales
 * (m = 3 cols + 5, so H is positive definite unless columns are dead).
 * Columns c with dead_mod > 0 and c % dead_mod == dead_mod - 1 are zero. */
static inline void rr_hessian(uint64_t seed, int64_t cols, int dead_mod, double *H) {
    int64_t m = 3 * cols + 5;
    double *X = calloc((size_t)(m * cols), sizeof *X);
    for (int64_t r = 0; r < m; r++) {
        double common = rr_gauss(seed + 7, (uint64_t)r);
        for (int64_t c = 0; c < cols; c++) {
            double sc = 0.3 + 2.0 * fabs(rr_unif(seed + 3, (uint64_t)c));
            double v = sc * (rr_gauss(seed + 5, (uint64_t)(r * cols + c)) + 0.6 * common);
            if (dead_mod > 0 && c % dead_mod == dead_mod - 1)
                v = 0.0;
            X[r * cols + c] = v;
        }
    }
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < cols; j++) {
            double s = 0.0;
            for (int64_t r = 0; r < m; r++)
                s += X[r * cols + i] * X[r * cols + j];
            H[i * cols + j] = s;
        }
    free(X);
}

/* Naive triple loop: sum_r (w_r - q_r) H (w_r - q_r)^T for rows [r0, r1). */
static inline double rr_loss(int64_t r0, int64_t r1, int64_t cols, const float *W, const float *Q,
                             const double *H) {
    double total = 0.0;
    for (int64_t r = r0; r < r1; r++) {
        double s = 0.0;
        for (int64_t i = 0; i < cols; i++) {
            double di = (double)W[r * cols + i] - (double)Q[r * cols + i];
            for (int64_t j = 0; j < cols; j++)
                s += di * H[i * cols + j] * ((double)W[r * cols + j] - (double)Q[r * cols + j]);
        }
        total += s;
    }
    return total;
}

/* Relative difference |a - b| / max(|a|, |b|, tiny). */
static inline double rr_rel(double a, double b) {
    double m = fmax(fabs(a), fabs(b));
    return m < 1e-300 ? 0.0 : fabs(a - b) / m;
}

#endif
