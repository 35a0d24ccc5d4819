/* hfactor_single.c: the float32 factor of hfactor.c (opts.single, the
 * LAPACK backend's direct requests: V or U alone).
 *
 * The damped matrix goes from H straight into float32, reversed (J Hd J,
 * the order hfactor.c's direct requests factor) and column-major, with no
 * double copy of it: n^2 floats instead of n^2 doubles, half the memory
 * of the attempt and of the fresh pages it touches. The probe's right-hand
 * side A x comes from H in double (one symmetric matrix-vector product
 * through the permutation and the reversal), so the check is against the
 * double matrix as before. The float32 values are the ones a double copy
 * rounded to float gives: the same factor bits. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#include "mpq_ctx.h"
#include "mpq_hessian.h"
#include "hfactor_internal.h"

/* The float32 factor's largest accepted probe residual (below). */
#define SINGLE_PROBE_TOL 1e-5

/* Row r of the permuted H (perm NULL: as it is). */
static const double *hrow(const double *H, const int64_t *perm, int64_t n, int64_t r) {
    return H + (perm ? perm[r] : r) * n;
}

/* af = J Hd J in float32 (symmetric: row- and column-major alike), Hd the
 * permuted H with its diagonal damped (mpq_hfactor_added). */
static void fill(int64_t n, const double *H, const int64_t *perm, double lambda, float *af) {
    for (int64_t i = 0; i < n; i++) {
        const int64_t r = n - 1 - i;
        const double *h = hrow(H, perm, n, r);
        float *out = af + i * n;
        for (int64_t j = 0; j < n; j++) {
            const int64_t c = n - 1 - j;
            double v = h[perm ? perm[c] : c];
            if (c == r)
                v += mpq_hfactor_added(v, lambda);
            out[j] = (float)v;
        }
    }
}

/* y = (J Hd J) x in double from H: w[perm[n-1-j]] = x[j], v = H w, y_i =
 * v[perm[n-1-i]] + added_i x_i. w, v: scratch [n]. */
static void probe_rhs(int64_t n, const double *H, const int64_t *perm, double lambda,
                      const double *x, double *w, double *v, double *y) {
    for (int64_t j = 0; j < n; j++)
        w[perm ? perm[n - 1 - j] : n - 1 - j] = x[j];
    cblas_dsymv(CblasRowMajor, CblasUpper, (int)n, 1.0, H, (int)n, w, 1, 0.0, v, 1);
    for (int64_t i = 0; i < n; i++) {
        const int64_t k = perm ? perm[n - 1 - i] : n - 1 - i;
        y[i] = v[k] + mpq_hfactor_added(H[k * n + k], lambda) * x[i];
    }
}

mpq_err mpq_hfactor_single(mpq_ctx *ctx, int64_t n, const double *H, const int64_t *perm,
                           double lambda, int kind, float *af, mpq_hfactor *f, int *ok) {
    mpq_err err = MPQ_OK;
    double *x = NULL, *y = NULL, *w = NULL, *v = NULL;
    float *t = NULL;
    const lapack_int ln = (lapack_int)n;
    *ok = 0;
    f->probe = 0.0;
    MPQ_CHECK((int64_t)ln == n && n <= INT32_MAX, MPQ_ERR_RANGE,
              "width %lld does not fit LAPACK's integer", (long long)n);
    MPQ_ALLOC_TRY(x, n);
    MPQ_ALLOC_TRY(y, n);
    MPQ_ALLOC_TRY(w, n);
    MPQ_ALLOC_TRY(v, n);
    MPQ_ALLOC_TRY(t, n);
    for (int64_t i = 0; i < n; i++)
        x[i] = 1.0 + (double)((i * 7919) % 97) / 97.0;
    probe_rhs(n, H, perm, lambda, x, w, v, y);
    fill(n, H, perm, lambda, af);
    lapack_int info = LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'U', ln, af, ln);
    if (info == 0 && kind == 2)
        info = LAPACKE_strtri_work(LAPACK_COL_MAJOR, 'U', 'N', ln, af, ln);
    MPQ_ENSURE(info >= 0, MPQ_ERR_INTERNAL, "spotrf/strtri: illegal argument %d", (int)-info);
    if (info > 0)
        goto cleanup;
    /* V: |R^T R x - A x| / |A x|; U: |R^-1 R^-T A x - x| / |x| */
    const double *want = kind == 1 ? y : x;
    for (int64_t i = 0; i < n; i++)
        t[i] = (float)(kind == 1 ? x[i] : y[i]);
    cblas_strmv(CblasColMajor, CblasUpper, kind == 1 ? CblasNoTrans : CblasTrans, CblasNonUnit, ln,
                af, ln, t, 1);
    cblas_strmv(CblasColMajor, CblasUpper, kind == 1 ? CblasTrans : CblasNoTrans, CblasNonUnit, ln,
                af, ln, t, 1);
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)t[i] - want[i]) * ((double)t[i] - want[i]);
        den += want[i] * want[i];
    }
    f->probe = sqrt(num / den);
    *ok = f->probe <= SINGLE_PROBE_TOL;
    if (!*ok)
        goto cleanup;
    /* R (or R^-1) column-major read row-major is its transpose; reversed,
     * V (or U) row-major, upper: the strict lower part cleared */
    for (int64_t k = 0, m = n * n - 1; k < m; k++, m--) {
        const float s = af[k];
        af[k] = af[m];
        af[m] = s;
    }
    for (int64_t i = 0; i < n; i++)
        memset(af + i * n, 0, (size_t)i * sizeof *af);
    f->single = 1;
cleanup:
    MPQ_FREE(t);
    MPQ_FREE(v);
    MPQ_FREE(w);
    MPQ_FREE(y);
    MPQ_FREE(x);
    return err;
}
