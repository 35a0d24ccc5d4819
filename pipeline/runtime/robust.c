/* robust.c: numerical fault checks (see mpq_robust.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mpq_ctx.h"
#include "mpq_registry.h"
#include "mpq_robust.h"

/* The policies, indexed by mpq_nonfinite_policy. */
static const char *const nonfinite_names[] = {
    [MPQ_NONFINITE_ERROR] = "error",
    [MPQ_NONFINITE_SKIP] = "skip",
    NULL,
};

static const char *nonfinite_name_at(int64_t i) {
    return nonfinite_names[i];
}

const mpq_registry mpq_nonfinite_policy_reg = {.what = "non-finite policy",
                                               .name_at = nonfinite_name_at};

mpq_err mpq_nonfinite_policy_parse(mpq_ctx *ctx, const char *name, mpq_nonfinite_policy *out) {
    int64_t i = 0;
    MPQ_CALL(mpq_registry_lookup(ctx, &mpq_nonfinite_policy_reg, name, MPQ_ERR_CONFIG,
                                 "robust.nonfinite: unknown policy", &i));
    *out = (mpq_nonfinite_policy)i;
    return MPQ_OK;
}

mpq_err mpq_check_finite(mpq_ctx *ctx, const float *w, int64_t n, int64_t cols, const char *what,
                         int64_t *nbad) {
    if (nbad)
        *nbad = 0;
    MPQ_CHECK(n >= 0 && (n == 0 || w), MPQ_ERR_ARG, "%s: invalid array (n = %lld)", what,
              (long long)n);
    /* Branch-free count first (vectorises; the common case is a clean
     * layer), the position only when something was found. */
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += !isfinite(w[i]);
    if (nbad)
        *nbad = bad;
    if (bad == 0)
        return MPQ_OK;
    int64_t first = 0;
    while (isfinite(w[first]))
        first++;
    const char *kind = isnan(w[first]) ? "NaN" : (w[first] > 0 ? "+Inf" : "-Inf");
    if (cols > 0)
        return MPQ_ERROR(MPQ_ERR_NUMERIC,
                         "%s: %lld non-finite value%s in %lld x %lld (first: %s at [%lld][%lld])",
                         what, (long long)bad, bad == 1 ? "" : "s", (long long)(n / cols),
                         (long long)cols, kind, (long long)(first / cols),
                         (long long)(first % cols));
    return MPQ_ERROR(MPQ_ERR_NUMERIC, "%s: %lld non-finite value%s in %lld (first: %s at [%lld])",
                     what, (long long)bad, bad == 1 ? "" : "s", (long long)n, kind,
                     (long long)first);
}

mpq_err mpq_check_finite_policy(mpq_ctx *ctx, mpq_nonfinite_policy policy, const float *w,
                                int64_t n, int64_t cols, const char *what, int *skip) {
    *skip = 0;
    mpq_err e = mpq_check_finite(ctx, w, n, cols, what, NULL);
    if (e == MPQ_OK)
        return MPQ_OK;
    if (e != MPQ_ERR_NUMERIC || policy != MPQ_NONFINITE_SKIP)
        return mpq_err_trace(ctx, e, __FILE__, __LINE__, __func__);
    mpq_log(ctx, MPQ_LOG_WARN, "%s; robust.nonfinite = skip: the layer stays in full precision",
            ctx->err_msg);
    mpq_err_clear(ctx);
    *skip = 1;
    return MPQ_OK;
}

int mpq_check_calibration_rows(mpq_ctx *ctx, const char *layer, int64_t rows, int64_t width) {
    if (rows >= width)
        return 0;
    mpq_log(ctx, MPQ_LOG_WARN,
            "layer %s: the calibration set gives %lld input rows for an input of width "
            "%lld: H has rank at most %lld and only damping makes it invertible; use more "
            "calibration samples (calibration.segments / seq_len)",
            layer, (long long)rows, (long long)width, (long long)rows);
    return 1;
}
