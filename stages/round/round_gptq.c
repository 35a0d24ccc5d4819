/* round_gptq.c: GPTQ (Hessian-based rounding with error feedback) on a tile
 * of output rows.
 *
 * GPTQ as usually written (the U form) takes U upper with Hd^-1 = U^T U in
 * the processing order, rounds column j and spreads its scaled error
 * (w'_j - q_j) / U[j][j] over the later columns through row j of U; the
 * result satisfies W - Q = E U, E the scaled errors. With V = U^-1 (upper,
 * Hd = V V^T) that is E = (W - Q) V, which gives the weight column k has
 * when it is rounded from the original weights alone: w'_k = w_k +
 * sum_{j<k} (w_j - q_j) V[j][k] / V[k][k]. The V form spreads the
 * difference w_j - q_j through row j of M (V with its columns divided by
 * their diagonal entry); V is one Cholesky factorisation, with no
 * triangular inverse (half the work of U). Both give the same codes up to
 * rounding. Only the weights of a column at its turn are the same: a
 * group fitted when the sweep reaches it reads the weights of its later
 * columns as the U form has updated them so far. In natural column order
 * a group's columns follow each other, and the U form's weights there are
 * the V form's corrected by one triangular solve with the group's diagonal
 * block of M (round_gptq_loop.h, GPTQ_VFIT), so with float32 updates those
 * specs use the V form too; in double (the bits of the small models) and
 * in activation order they use the U form, every other spec the V form
 * (mpq_round_gptq_vform). In the loop, Err holds what is spread (the
 * difference, or the negated scaled error) and M the factor (M or U), so
 * the updates are the same code.
 *
 * Lazy batch updates on two levels: inside a
 * sub-block of GPTQ_SUB columns the update is applied at once; the rest of
 * the block of B columns receives the sub-block's errors with one GEMM when
 * the sub-block ends, and the columns after the block receive the block's
 * errors with one GEMM when it ends. The scalar work is rows x cols x
 * GPTQ_SUB / 2 instead of rows x cols x B / 2; it runs on panels of
 * GPTQ_ROWS rows copied column after column, so that each column's error
 * is spread over contiguous rows. Every row is independent, so a tile
 * gives the same bits as the whole layer. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "mpq_ctx.h"
#include "round_internal.h"

#define GPTQ_SUB  16 /* columns per sub-block (fixed: part of the bits) */
#define GPTQ_ROWS 64 /* rows per panel of a sub-block (any: not part of the bits) */

/* Work space of a group's gather (round_gptq_loop.h): the rows of M a
 * group needs [B][gcols], one row's values, the columns' order. */
typedef struct {
    double *ug, *v;
    int64_t *ord;
} gptq_scratch;

/* Rate-aware choice for weight (r, c) at its updated value w: the code k
 * minimising dd (w - v_k)^2 + lam len[k] over the two grid points around
 * w, dd the weight of its squared error in the loss (V[j][j]^2), starting
 * from the nearest code k0 (ties keep it). Codes further away are not
 * tried: with every code of the grid, a large lambda pulls weights several
 * steps, GPTQ's feedback pushes the next columns' values outwards and
 * both the loss and the entropy grow (seen on round_rate's problems).
 * *v: the value of the code chosen. */
static uint8_t gptq_rate_pick(const mpq_qparams *p, const double *len, int64_t r, int64_t c,
                              double w, double dd, double lam, uint8_t k0, float *v) {
    double best = dd * (w - (double)*v) * (w - (double)*v) + lam * len[k0];
    uint8_t kb = k0, nb[2];
    float vn[2];
    mpq_quant_neighbours_at(p, r, c, (float)w, &nb[0], &nb[1], &vn[0], &vn[1]);
    for (int t = 0; t < 2; t++) {
        const int k = nb[t];
        if (k == k0 || !(lam * len[k] < best))
            continue;
        const float vk = vn[t];
        const double e = w - (double)vk, f = dd * e * e + lam * len[k];
        if (f < best) {
            best = f;
            kb = (uint8_t)k;
            *v = vk;
        }
    }
    return kb;
}

#define GPTQ_REAL    double
#define GPTQ_GEMM    cblas_dgemm
#define GPTQ_LOOP    gptq_loop_f64
#define GPTQ_GATHER  gptq_gather_f64
#define GPTQ_SEGMENT gptq_segment_f64
#define GPTQ_SEG     gptq_seg_f64
#define GPTQ_VFIT    gptq_vfit_f64
#define GPTQ_TRSM    cblas_dtrsm
#include "round_gptq_loop.h"
#undef GPTQ_REAL
#undef GPTQ_GEMM
#undef GPTQ_LOOP
#undef GPTQ_GATHER
#undef GPTQ_VFIT
#undef GPTQ_TRSM
#undef GPTQ_SEGMENT
#undef GPTQ_SEG
#define GPTQ_REAL    float
#define GPTQ_GEMM    cblas_sgemm
#define GPTQ_LOOP    gptq_loop_f32
#define GPTQ_GATHER  gptq_gather_f32
#define GPTQ_SEGMENT gptq_segment_f32
#define GPTQ_SEG     gptq_seg_f32
#define GPTQ_VFIT    gptq_vfit_f32
#define GPTQ_TRSM    cblas_strsm
#include "round_gptq_loop.h"
#undef GPTQ_REAL
#undef GPTQ_GEMM
#undef GPTQ_LOOP
#undef GPTQ_GATHER
#undef GPTQ_VFIT
#undef GPTQ_TRSM
#undef GPTQ_SEGMENT
#undef GPTQ_SEG

mpq_err mpq_round_gptq_rows(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_problem *pb,
                            mpq_qparams *p, int64_t r0, int64_t r1, double rate, uint8_t *codes,
                            float *wq, double *loss) {
    MPQ_CHECK(pb->M || pb->Mf, MPQ_ERR_INTERNAL, "round: layer '%s': GPTQ without a factor",
              pb->name);
    MPQ_CHECK(rate == 0.0 || pb->rate_len, MPQ_ERR_INTERNAL,
              "round: layer '%s': rate-aware GPTQ without code lengths", pb->name);
    if (pb->Mf)
        return gptq_loop_f32(ctx, o, pb, pb->Mf, p, r0, r1, rate, codes, wq, loss);
    return gptq_loop_f64(ctx, o, pb, pb->M, p, r0, r1, rate, codes, wq, loss);
}

/* ---- rate-aware rounding ------------------------------------------------------ */

/* The histogram is that of the layer's RTN codes, fixed before any tile
 * runs: the tiles of a layer run on different ranks at the same time, so a
 * histogram updated as codes are decided would depend on the tiling and
 * the order of the ranks; this one is the same everywhere (bit-identity at
 * any rank count). A code no weight takes keeps the count 1 (Laplace), so
 * its length is finite. */
mpq_err mpq_round_rate_lengths(mpq_ctx *ctx, mpq_round_problem *pb) {
    mpq_err err = MPQ_OK;
    mpq_qparams *p = NULL;
    uint8_t *row = NULL;
    double cnt[MPQ_QMAXCODES] = {0};
    const int64_t n = pb->cols;
    MPQ_TRY(mpq_qparams_create(ctx, &pb->spec, pb->rows, n, &p));
    MPQ_TRY(mpq_round_fit_rows(ctx, pb, p, 0, pb->rows));
    MPQ_ALLOC_TRY(row, n);
    MPQ_ALLOC_TRY(pb->rate_len, MPQ_QMAXCODES);
    for (int64_t r = 0; r < pb->rows; r++) {
        mpq_quant_row_nearest(p, r, pb->W + r * n, row);
        for (int64_t c = 0; c < n; c++)
            cnt[row[c]] += 1.0;
    }
    double total = 0.0;
    for (int k = 0; k < MPQ_QMAXCODES; k++) {
        const int used = k < p->tab[0].ncodes &&
                         (!isnan(p->tab[0].level[k]) || (p->sign && !isnan(p->tab[1].level[k])));
        cnt[k] = used ? cnt[k] + 1.0 : 0.0;
        total += cnt[k];
    }
    for (int k = 0; k < MPQ_QMAXCODES; k++)
        pb->rate_len[k] = cnt[k] > 0.0 ? -log2(cnt[k] / total) : INFINITY;
    /* the error weight of column j in the loss: V_jj^2 (x = V_jj (w' - q)) */
    double dd = 0.0;
    for (int64_t j = 0; pb->mdiag && j < n; j++)
        dd += pb->vform ? pb->mdiag[j] * pb->mdiag[j] : 1.0 / (pb->mdiag[j] * pb->mdiag[j]);
    pb->rate_unit = dd / (double)n / 12.0;
cleanup:
    MPQ_FREE(row);
    mpq_qparams_destroy(&p);
    return err;
}

double mpq_round_rate_cost(const mpq_round_problem *pb, const mpq_qparams *p, int64_t r,
                           const uint8_t *codes) {
    double s = 0.0;
    for (int64_t c = 0; c < pb->cols; c++)
        s += mpq_round_rate_weight(pb, p, r, c) * pb->rate_len[codes[c]];
    return s;
}

int mpq_round_gptq_float(const mpq_round_opts *o, int64_t cols) {
    return o->gptq_float >= 0 ? o->gptq_float : cols >= MPQ_GPTQ_FLOAT_MIN_COLS;
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
    /* lambda per bit in units of the layer's mean error of nearest
     * rounding per weight through the factor (mpq_round_rate_weight) */
    const double rate = pb->rate_len ? o->rate_lambda : 0.0;
    st->iters = 0;
    if (st->row_loss && pb->added) {
        MPQ_CALL(mpq_round_gptq_rows(ctx, o, pb, p, r0, r1, rate, codes, NULL, st->row_loss));
        for (int64_t i = 0; i < r1 - r0; i++)
            st->row_loss[i] = st->row_loss[i] > 0.0 ? st->row_loss[i] : 0.0;
        st->row_loss_set = 1;
        return MPQ_OK;
    }
    return mpq_round_gptq_rows(ctx, o, pb, p, r0, r1, rate, codes, NULL, NULL);
}

void mpq_round_gptq_settings(const mpq_round_opts *o, cJSON *out) {
    cJSON_AddNumberToObject(out, "block_size", (double)o->block_size);
    cJSON_AddBoolToObject(out, "act_order", o->act_order);
    cJSON_AddBoolToObject(out, "static_groups", o->static_groups);
    cJSON_AddStringToObject(out, "precision",
                            o->gptq_float < 0 ? "auto"
                            : o->gptq_float   ? "float"
                                              : "double");
    cJSON_AddNumberToObject(out, "damping", o->hf.damping);
    if (o->rate_lambda > 0.0)
        cJSON_AddNumberToObject(out, "rate_lambda", o->rate_lambda);
}

const mpq_round_method mpq_round_gptq = {
    .name = "gptq",
    .summary = "Hessian-based rounding with error feedback (lazy blocks, act_order, groups)",
    .needs_factor = gptq_needs,
    .cost = gptq_cost,
    .run = gptq_run,
    .settings = mpq_round_gptq_settings,
};
