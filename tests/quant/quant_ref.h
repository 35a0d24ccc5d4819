/* quant_ref.h: independent reference material for the quantizer tests: a
 * deterministic random generator, test matrices, and every family's grid
 * written out from its definition (not from the library's tables). */
#ifndef MPQ_QUANT_REF_H
#define MPQ_QUANT_REF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "mpq_quant.h"

typedef struct qr_rng {
    uint64_t s;
} qr_rng;

static inline uint64_t qr_next(qr_rng *r) {
    /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double qr_unif(qr_rng *r) { /* (0, 1) */
    return ((double)(qr_next(r) >> 11) + 0.5) / 9007199254740992.0;
}
static inline double qr_normal(qr_rng *r) {
    double u = qr_unif(r), v = qr_unif(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* kind 0: normal(0, 0.05); kind 1: heavy-tailed (normal times a log-normal
 * scale, with occasional 20x outliers), and a few exact zeros. */
static inline void qr_fill(qr_rng *r, int kind, float *w, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double x = 0.05 * qr_normal(r);
        if (kind == 1) {
            x *= exp(1.2 * qr_normal(r));
            if (qr_unif(r) < 0.01)
                x *= 20.0;
        }
        if (qr_unif(r) < 0.02)
            x = 0.0;
        w[i] = (float)x;
    }
}

/* A grid in normalized units: (code, level) pairs of distinct levels. */
typedef struct qr_grid {
    int n;
    double level[256];
    int code[256];
} qr_grid;

static inline void qr_add(qr_grid *g, int code, double level) {
    for (int i = 0; i < g->n; i++)
        if (g->level[i] == level)
            return; /* keep the first (smallest) code of a level */
    g->code[g->n] = code;
    g->level[g->n] = level;
    g->n++;
}

/* Standard normal quantile by bisection on erfc. */
static inline double qr_norm_ppf(double p) {
    double lo = -12.0, hi = 12.0;
    for (int i = 0; i < 200; i++) {
        double m = 0.5 * (lo + hi);
        if (0.5 * erfc(-m / sqrt(2.0)) < p)
            lo = m;
        else
            hi = m;
    }
    return 0.5 * (lo + hi);
}

/* NF4 levels from their definition (QLoRA): see quant_families.c. */
static inline void qr_nf4(double *lv) {
    double d = 1.0 - 0.5 * (1.0 / 32.0 + 1.0 / 30.0), top = qr_norm_ppf(d);
    int n = 0;
    for (int i = 0; i < 8; i++)
        lv[n++] = qr_norm_ppf(d + (0.5 - d) * i / 8.0) / top;
    for (int i = 0; i < 7; i++)
        lv[n++] = -qr_norm_ppf(d + (0.5 - d) * i / 7.0) / top;
    lv[n++] = 0.0;
    for (int i = 1; i < 16; i++) /* sort */
        for (int j = i; j > 0 && lv[j - 1] > lv[j]; j--) {
            double t = lv[j];
            lv[j] = lv[j - 1];
            lv[j - 1] = t;
        }
}

/* The grid of row r (levels in normalized units) from each family's
 * definition. Codes in ascending code order so duplicates keep the
 * smallest. */
static inline void qr_family_grid(const mpq_qparams *p, int64_t r, qr_grid *g) {
    const char *f = p->spec.ops->name;
    int b = p->spec.bits;
    g->n = 0;
    if (!strcmp(f, "int")) {
        for (int q = 0; q < (1 << b); q++)
            qr_add(g, q, p->spec.sym ? q - (1 << (b - 1)) : q);
    } else if (!strcmp(f, "binary")) {
        qr_add(g, 0, -1.0);
        qr_add(g, 1, 1.0);
    } else if (!strcmp(f, "signed_binary")) {
        qr_add(g, 0, 0.0);
        qr_add(g, 1, p->sign[r] < 0 ? -1.0 : 1.0);
    } else if (!strcmp(f, "ternary")) {
        qr_add(g, 0, -1.0);
        qr_add(g, 1, 0.0);
        qr_add(g, 2, 1.0);
    } else if (!strcmp(f, "ternary_seq")) {
        qr_add(g, 0, -(double)(2.0f / 3.0f));
        qr_add(g, 1, 0.0);
        qr_add(g, 2, (double)(2.0f / 3.0f));
    } else if (!strcmp(f, "seq2")) {
        qr_add(g, 0, -0.75);
        qr_add(g, 1, -0.25);
        qr_add(g, 2, 0.25);
        qr_add(g, 3, 0.75);
    } else if (!strcmp(f, "pow2")) {
        int half = 1 << (b - 1), M = half - 1;
        qr_add(g, 0, 0.0);
        for (int k = 0; k < M; k++) { /* +-2^-k with m = M - k */
            qr_add(g, M - k, pow(2.0, -k));
            qr_add(g, half | (M - k), -pow(2.0, -k));
        }
    } else if (!strcmp(f, "powerexp")) {
        int qmax = (1 << (b - 1)) - 1;
        for (int q = -qmax; q <= qmax; q++) {
            double v = pow(fabs((double)q) / qmax, 1.0 / (double)p->expo);
            qr_add(g, q + qmax, (double)(float)(q < 0 ? -v : v));
        }
    } else if (!strcmp(f, "fp4") || !strcmp(f, "mxfp4") || !strcmp(f, "nvfp4")) {
        static const double e2m1[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
        for (int c = 0; c < 16; c++)
            qr_add(g, c, (c & 8) ? -e2m1[c & 7] : e2m1[c & 7]);
    } else if (!strcmp(f, "fp8")) {
        for (int c = 0; c < 256; c++) {
            int e = (c >> 3) & 15, m = c & 7;
            if (e == 15 && m == 7)
                continue; /* NaN */
            double v = e == 0 ? m / 8.0 * pow(2.0, -6) : (1.0 + m / 8.0) * pow(2.0, e - 7);
            qr_add(g, c, (c & 128) ? -v : v);
        }
    } else if (!strcmp(f, "nf4")) {
        double lv[16];
        qr_nf4(lv);
        for (int c = 0; c < 16; c++)
            qr_add(g, c, (double)(float)lv[c]);
    }
    /* sort by level */
    for (int i = 1; i < g->n; i++)
        for (int j = i; j > 0 && g->level[j - 1] > g->level[j]; j--) {
            double t = g->level[j];
            int c = g->code[j];
            g->level[j] = g->level[j - 1];
            g->code[j] = g->code[j - 1];
            g->level[j - 1] = t;
            g->code[j - 1] = c;
        }
}

#endif
