/* run_block_vars.c: the block loss's variables besides the rounding
 * offsets (run_block_loss.c): the scale factors (round.block_scales) and
 * the bias corrections (round.learn_bias).
 *
 * A bias correction d[r] is added to the bias of output channel r of a
 * layer with a bias slot (mpq_layer_info.bias_tensor), rounded once to
 * float: the value the checkpoint stores. It starts at 0, so step 0 is the layer
 * rounding's solution, and takes signed steps of the offsets' rate in
 * units of u[r] = |w0[r] - w[r]| rho, the norm of the row's quantization
 * error at the start times the rms rho of the layer's full-precision
 * input: about the spread of the channel's output error, which the
 * correction can at most shift by its mean. With the default rate the
 * steps add up to at most one unit. Its gradient is the column sum of the
 * layer output's gradient (the family's backward pass); the sums go the
 * offsets' way (fixed point with their own scale, integer sums), and rho
 * is summed per chunk in chunk order, so the corrections are the same
 * bits for any rank count.
 *
 * With round.block_momentum = beta, a step follows the running average m
 * = beta m + (1 - beta) g of the summed gradients g instead of g (signed
 * steps with momentum): with few rows per step the sign of one step's sum
 * is noisy, and the average's changes less often. g is the same integer
 * sum on every rank and m is updated the same way everywhere, so the
 * steps stay the same bits for any rank count. */
#include <math.h>
#include <string.h>

#include "block_loss_internal.h"
#include "mpq_log.h"

mpq_err mpq_bl_scales_init(mpq_ctx *ctx, bl_layer *x) {
    const mpq_qparams *P = x->q->params;
    if (P->gpr <= 0)
        return MPQ_OK;
    x->ng = P->ngroups;
    MPQ_ALLOC(x->s0, x->ng);
    MPQ_ALLOC(x->m, x->ng);
    MPQ_ALLOC(x->sacc, x->ng);
    MPQ_ALLOC(x->sbest, x->ng);
    for (int64_t g = 0; g < x->ng; g++) {
        x->s0[g] = (double)mpq_qscale_of(P, g);
        x->m[g] = 1.0;
        x->sbest[g] = P->scale[g];
    }
    return MPQ_OK;
}

void mpq_bl_scale_grad(const bl_state *S, bl_layer *x, double *gmax) {
    const mpq_qparams *P = x->q->params;
    for (int64_t r = 0; r < x->rows; r++) {
        for (int64_t g0 = 0; g0 < P->gpr; g0++) {
            const int64_t c0 = g0 * P->gcols;
            const int64_t c1 = c0 + P->gcols < x->cols ? c0 + P->gcols : x->cols;
            double v = 0.0;
            for (int64_t c = c0; c < c1; c++)
                v += (double)x->dw[r * x->cols + c] * (double)x->w[r * x->cols + c];
            if (gmax) {
                *gmax = fabs(v) > *gmax ? fabs(v) : *gmax;
                continue;
            }
            x->sacc[mpq_qgroup_of(P, r, c0)] += mpq_bl_fixed(S, v, S->sscale);
        }
    }
}

mpq_err mpq_bl_momentum_init(mpq_ctx *ctx, bl_layer *x) {
    MPQ_ALLOC(x->mo, x->n > 0 ? x->n : 1);
    MPQ_ALLOC(x->smo, x->ng > 0 ? x->ng : 1);
    MPQ_ALLOC(x->bmo, x->nb > 0 ? x->nb : 1);
    return MPQ_OK;
}

void mpq_bl_momentum_free(bl_layer *x) {
    mpq_free(x->mo);
    mpq_free(x->smo);
    mpq_free(x->bmo);
}

/* m[k] = beta m[k] + (1 - beta) acc[k], and acc[k] its sign: all a step
 * reads without descent (and with round.block_comm = int8 acc is a sign
 * already). */
static void blend(int64_t *acc, float *m, int64_t n, double beta) {
    for (int64_t k = 0; k < n; k++) {
        m[k] = (float)(beta * (double)m[k] + (1.0 - beta) * (double)acc[k]);
        acc[k] = m[k] > 0.0f ? 1 : m[k] < 0.0f ? -1 : 0;
    }
}

void mpq_bl_momentum(bl_state *S) {
    for (int64_t j = 0; S->momentum > 0.0 && j < S->nl; j++) {
        bl_layer *x = &S->L[j];
        blend(x->acc, x->mo, x->n, S->momentum);
        blend(x->sacc, x->smo, x->ng, S->momentum);
        blend(x->bacc, x->bmo, x->nb, S->momentum);
    }
}

mpq_err mpq_bl_bias_init(mpq_ctx *ctx, const mpq_family_info *fi, bl_layer *x) {
    if (!fi->layers[x->l].bias_tensor[0])
        return MPQ_OK;
    x->nb = x->rows;
    MPQ_ALLOC(x->bd, x->nb);
    MPQ_ALLOC(x->bunit, x->nb);
    MPQ_ALLOC(x->db, x->nb);
    MPQ_ALLOC(x->bbest, x->nb);
    MPQ_ALLOC(x->bacc, x->nb);
    memset(x->bd, 0, (size_t)x->nb * sizeof *x->bd);
    memset(x->bbest, 0, (size_t)x->nb * sizeof *x->bbest);
    return MPQ_OK;
}

mpq_err mpq_bl_bias_hook(mpq_ctx *ctx, void *ud, int64_t layer, const float *x, int64_t rows,
                         int64_t cols) {
    (void)ctx;
    bl_state *S = ud;
    for (int64_t j = 0; j < S->nl; j++) {
        if (S->L[j].l != layer || S->L[j].nb == 0)
            continue;
        double ss = 0.0;
        for (int64_t i = 0; i < rows * cols; i++)
            ss += (double)x[i] * (double)x[i];
        S->msq[2 * (j * S->nchunks + S->hk)] += ss / (double)(cols > 0 ? cols : 1);
        S->msq[2 * (j * S->nchunks + S->hk) + 1] += (double)rows;
    }
    return MPQ_OK;
}

mpq_err mpq_bl_bias_units(bl_state *S) {
    mpq_ctx *ctx = S->ctx;
    const int64_t n = 2 * S->nl * S->nchunks;
    if (ctx->size > 1 && n > 0)
        MPQ_CHECK(n <= INT32_MAX && MPI_Allreduce(MPI_IN_PLACE, S->msq, (int)n, MPI_DOUBLE, MPI_SUM,
                                                  ctx->comm) == MPI_SUCCESS,
                  MPQ_ERR_MPI, "block loss: cannot sum the layers' input energies");
    for (int64_t j = 0; j < S->nl; j++) {
        bl_layer *x = &S->L[j];
        if (x->nb == 0)
            continue;
        double ss = 0.0, rows = 0.0; /* chunk order: each chunk's sums come from one rank */
        for (int64_t k = 0; k < S->nchunks; k++) {
            ss += S->msq[2 * (j * S->nchunks + k)];
            rows += S->msq[2 * (j * S->nchunks + k) + 1];
        }
        const double rho = sqrt(ss / (rows > 0.0 ? rows : 1.0));
        for (int64_t r = 0; r < x->nb; r++) {
            double e = 0.0;
            for (int64_t c = 0; c < x->cols; c++) {
                const double d = (double)x->w0[r * x->cols + c] - (double)x->w[r * x->cols + c];
                e += d * d;
            }
            x->bunit[r] = (float)(sqrt(e) * rho);
        }
    }
    return MPQ_OK;
}

void mpq_bl_bias_grad(const bl_state *S, bl_layer *x, double *gmax) {
    for (int64_t r = 0; r < x->nb; r++) {
        double v = (double)x->db[r];
        if (gmax) {
            *gmax = fabs(v) > *gmax ? fabs(v) : *gmax;
            continue;
        }
        x->bacc[r] += mpq_bl_fixed(S, v, S->bscale);
    }
}

void mpq_bl_bias_step(bl_layer *x, double lr) {
    for (int64_t r = 0; r < x->nb; r++)
        if (x->bacc[r] != 0)
            x->bd[r] -= (float)((x->bacc[r] > 0 ? lr : -lr) * (double)x->bunit[r]);
}

mpq_err mpq_bl_bias_sum(bl_state *S) {
    mpq_ctx *ctx = S->ctx;
    for (int64_t j = 0; ctx->size > 1 && j < S->nl; j++)
        if (S->L[j].nb > 0)
            MPQ_CHECK(S->L[j].nb <= INT32_MAX &&
                          MPI_Allreduce(MPI_IN_PLACE, S->L[j].bacc, (int)S->L[j].nb, MPI_INT64_T,
                                        MPI_SUM, ctx->comm) == MPI_SUCCESS,
                      MPQ_ERR_MPI, "block loss: cannot sum the bias gradients");
    return MPQ_OK;
}

mpq_err mpq_bl_bias_finish(bl_state *S, bl_layer *x) {
    mpq_ctx *ctx = S->ctx;
    if (x->nb == 0)
        return MPQ_OK;
    mpq_run_layer *rl = &S->s->res->layers[x->l];
    if (!rl->bias)
        MPQ_ALLOC(rl->bias, x->nb);
    memcpy(rl->bias, x->bbest, (size_t)x->nb * sizeof *x->bbest);
    MPQ_CALL(mpq_family_set_bias_delta(ctx, S->s->ses->fq, x->l, rl->bias));
    return MPQ_OK;
}

void mpq_bl_bias_log(const bl_state *S) {
    mpq_ctx *ctx = S->ctx;
    int64_t nl = 0, nch = 0;
    double su = 0.0;
    for (int64_t j = 0; j < S->nl; j++) {
        const bl_layer *x = &S->L[j];
        nl += x->nb > 0;
        for (int64_t r = 0; r < x->nb; r++, nch++)
            su += x->bunit[r] > 0.0f ? fabs((double)x->bbest[r]) / (double)x->bunit[r] : 0.0;
    }
    MPQ_INFO("block %lld: bias corrections of %lld layers, %lld channels: mean |correction| "
             "%.3f units of the output error",
             (long long)S->b, (long long)nl, (long long)nch, nch > 0 ? su / (double)nch : 0.0);
}
