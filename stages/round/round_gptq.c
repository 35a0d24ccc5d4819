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
 * columns as the U form has updated them so far, so those specs use the U
 * form and every other spec the V form (mpq_round_gptq_vform). In the
 * loop, Err holds what is spread (the difference, or the negated scaled
 * error) and M the factor (M or U), so the updates are the same code.
 *
 * Lazy batch updates on two levels: inside a
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

/* Work space of a group's gather (round_gptq_loop.h): the rows of M a
 * group needs [B][gcols], one row's values, the columns' order. */
typedef struct {
    double *ug, *v;
    int64_t *ord;
} gptq_scratch;

#define GPTQ_REAL   double
#define GPTQ_GEMM   cblas_dgemm
#define GPTQ_LOOP   gptq_loop_f64
#define GPTQ_GATHER gptq_gather_f64
#include "round_gptq_loop.h"
#undef GPTQ_REAL
#undef GPTQ_GEMM
#undef GPTQ_LOOP
#undef GPTQ_GATHER
#define GPTQ_REAL   float
#define GPTQ_GEMM   cblas_sgemm
#define GPTQ_LOOP   gptq_loop_f32
#define GPTQ_GATHER gptq_gather_f32
#include "round_gptq_loop.h"
#undef GPTQ_REAL
#undef GPTQ_GEMM
#undef GPTQ_LOOP
#undef GPTQ_GATHER

mpq_err mpq_round_gptq_rows(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_problem *pb,
                            mpq_qparams *p, int64_t r0, int64_t r1, uint8_t *codes, float *wq,
                            double *loss) {
    MPQ_CHECK(pb->M, MPQ_ERR_INTERNAL, "round: layer '%s': GPTQ without a factor", pb->name);
    if (pb->Mf)
        return gptq_loop_f32(ctx, o, pb, pb->Mf, p, r0, r1, codes, wq, loss);
    return gptq_loop_f64(ctx, o, pb, pb->M, p, r0, r1, codes, wq, loss);
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
    cJSON_AddStringToObject(out, "precision",
                            o->gptq_float < 0 ? "auto"
                            : o->gptq_float   ? "float"
                                              : "double");
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
