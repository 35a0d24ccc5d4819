/* round_gptq.c: GPTQ (Hessian-based rounding with error feedback) on a tile
 * of output rows.
 *
 * With U the upper Cholesky factor of the damped inverse Hessian in the
 * processing order (H^-1 = U^T U), column j is rounded, its scaled error
 * e = (w_j - q_j) / U[j][j] is spread over the later columns as
 * w_k -= e * U[j][k]. Lazy batch updates on two levels: inside a
 * sub-block of GPTQ_SUB columns the update is applied at once; the rest of
 * the block of B columns receives the sub-block's errors with one GEMM when
 * the sub-block ends, and the columns after the block receive the block's
 * errors with one GEMM when it ends. The scalar work is rows x cols x
 * GPTQ_SUB / 2 instead of rows x cols x B / 2. Every row is independent, so
 * a tile gives the same bits as the whole layer. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <string.h>

#include "mpq_ctx.h"
#include "round_internal.h"

#define GPTQ_SUB 16 /* columns per sub-block (fixed: part of the bits) */

mpq_err mpq_round_gptq_rows(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_problem *pb,
                            mpq_qparams *p, int64_t r0, int64_t r1, uint8_t *codes, float *wq,
                            double *loss) {
    mpq_err err = MPQ_OK;
    double *Wd = NULL, *Err = NULL;
    int64_t *pos = NULL;
    uint8_t *fitted = NULL;
    float *gbuf = NULL;
    mpq_qparams *tmp = NULL;
    const int64_t n = pb->cols, nr = r1 - r0;
    const int64_t B = o->block_size < 1 ? 1 : (o->block_size > n ? n : o->block_size);
    const double *U = pb->U;
    const int64_t *perm = pb->perm;
    MPQ_CHECK(U, MPQ_ERR_INTERNAL, "round: layer '%s': GPTQ without a factor", pb->name);
    int nri, ni, Bi;
    MPQ_CALL(mpq_to_int(ctx, nr, "tile rows (BLAS)", &nri));
    MPQ_CALL(mpq_to_int(ctx, n, "layer width (BLAS)", &ni));
    MPQ_CALL(mpq_to_int(ctx, B, "GPTQ block size", &Bi));
    const int refit = pb->refit_ok && !o->static_groups;

    MPQ_ALLOC_TRY(Wd, nr * n);
    MPQ_ALLOC_TRY(Err, nr * B);
    MPQ_ALLOC_TRY(pos, n);
    for (int64_t j = 0; j < n; j++)
        pos[perm[j]] = j;
    for (int64_t i = 0; i < nr; i++) {
        const float *w = pb->W + (r0 + i) * n;
        for (int64_t j = 0; j < n; j++)
            Wd[i * n + j] = (double)w[perm[j]];
    }
    if (loss)
        for (int64_t i = 0; i < nr; i++)
            loss[i] = 0.0;
    if (refit) {
        MPQ_ALLOC_TRY(fitted, p->gpr);
        MPQ_ALLOC_TRY(gbuf, nr * p->gcols);
    }

    for (int64_t j1 = 0; j1 < n; j1 += B) {
        const int64_t j2 = j1 + B < n ? j1 + B : n, nb = j2 - j1;
        for (int64_t s1 = j1; s1 < j2; s1 += GPTQ_SUB) {
            const int64_t s2 = s1 + GPTQ_SUB < j2 ? s1 + GPTQ_SUB : j2;
            for (int64_t j = s1; j < s2; j++) {
                const int64_t c = perm[j];
                if (refit && !fitted[c / p->gcols]) {
                    /* First column of this group in the processing order: fit the
                     * group on its current weights, adding the updates of this
                     * block that are still pending for columns past its end. */
                    const int64_t k = c / p->gcols, c0 = k * p->gcols;
                    const int64_t len = c0 + p->gcols < n ? p->gcols : n - c0;
                    fitted[k] = 1;
                    for (int64_t i = 0; i < nr; i++) {
                        for (int64_t cc = c0; cc < c0 + len; cc++) {
                            const int64_t jj = pos[cc];
                            double v = Wd[i * n + jj];
                            /* pending: the block's errors after it, the
                             * sub-block's in the rest of the block */
                            const int64_t t0 = jj >= j2 ? j1 : jj >= s2 ? s1 : j;
                            for (int64_t t = t0; t < j; t++)
                                v -= Err[i * B + (t - j1)] * U[t * n + jj];
                            gbuf[i * len + (cc - c0)] = (float)v;
                        }
                    }
                    MPQ_TRY(mpq_round_refit_group(ctx, pb, p, r0, r1, c0, len, gbuf, &tmp));
                }
                const double d = U[j * n + j];
                const double *urow = U + j * n;
                for (int64_t i = 0; i < nr; i++) {
                    double *row = Wd + i * n;
                    const double w = row[j];
                    float v;
                    codes[i * n + c] = mpq_quant_nearest_at(p, r0 + i, c, (float)w, &v);
                    if (wq)
                        wq[i * n + c] = (float)w;
                    const double e = (w - (double)v) / d;
                    Err[i * B + (j - j1)] = e;
                    if (loss) {
                        const double dw = (double)pb->W[(r0 + i) * n + c] - (double)v;
                        loss[i] += e * e - pb->added[j] * dw * dw;
                    }
                    for (int64_t jj = j + 1; jj < s2; jj++)
                        row[jj] -= e * urow[jj];
                }
            }
            if (s2 < j2)
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nri, (int)(j2 - s2),
                            (int)(s2 - s1), -1.0, Err + (s1 - j1), Bi, U + s1 * n + s2, ni, 1.0,
                            Wd + s2, ni);
        }
        if (j2 < n)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nri, ni - (int)j2, (int)nb, -1.0,
                        Err, Bi, U + j1 * n + j2, ni, 1.0, Wd + j2, ni);
    }
cleanup:
    mpq_qparams_destroy(&tmp);
    MPQ_FREE(gbuf);
    MPQ_FREE(fitted);
    MPQ_FREE(pos);
    MPQ_FREE(Err);
    MPQ_FREE(Wd);
    return err;
}

static int gptq_needs(const mpq_round_opts *o) {
    (void)o;
    return 1;
}

static double gptq_cost(const mpq_round_opts *o, int64_t nr, int64_t cols) {
    (void)o;
    return (double)nr * (double)cols * ((double)cols + MPQ_ROUND_GPTQ_ELEM);
}

static mpq_err gptq_run(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_problem *pb,
                        mpq_qparams *p, int64_t r0, int64_t r1, uint8_t *codes,
                        mpq_round_stats *st) {
    st->iters = 0;
    if (st->row_loss && pb->added) {
        MPQ_CALL(mpq_round_gptq_rows(ctx, o, pb, p, r0, r1, codes, NULL, st->row_loss));
        for (int64_t i = 0; i < r1 - r0; i++)
            st->row_loss[i] = st->row_loss[i] > 0.0 ? st->row_loss[i] : 0.0;
        st->row_loss_set = 1;
        return MPQ_OK;
    }
    return mpq_round_gptq_rows(ctx, o, pb, p, r0, r1, codes, NULL, NULL);
}

void mpq_round_gptq_settings(const mpq_round_opts *o, cJSON *out) {
    cJSON_AddNumberToObject(out, "block_size", (double)o->block_size);
    cJSON_AddBoolToObject(out, "act_order", o->act_order);
    cJSON_AddBoolToObject(out, "static_groups", o->static_groups);
    cJSON_AddNumberToObject(out, "damping", o->hf.damping);
}

const mpq_round_method mpq_round_gptq = {
    .name = "gptq",
    .summary = "Hessian-based rounding with error feedback (lazy blocks, act_order, groups)",
    .needs_factor = gptq_needs,
    .cost = gptq_cost,
    .run = gptq_run,
    .settings = mpq_round_gptq_settings,
};
