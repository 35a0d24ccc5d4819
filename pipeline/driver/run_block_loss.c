/* run_block_loss.c: round.loss = "block": after the layers of a block are
 * rounded (each against its own output error), their codes are refined
 * together against the output of the whole block.
 *
 * round.loss = "network" adds the KL divergence of the model's prediction
 * (run_block_net.c): the objective is the block error over its step-0
 * value plus round.kl_weight times the KL over its step-0 value; a step's
 * gradient with respect to the block output is both terms', brought
 * through the block by mpq_family_block_backward. The KL's target is the
 * prediction of the full-precision block's output on the full-precision
 * model's own activations (round.kl_target = "model", kept by the pass as
 * calib_fp): through the later blocks, still full precision, that is the
 * full-precision model's prediction, so the block also learns to make up
 * for the error the rounded blocks before it left. With "block" it is the
 * prediction of the full-precision block's output on the same quantized
 * inputs (the block error's own target).
 *
 * Objective: sum over this block's calibration inputs X (the quantized
 * model's activations, as propagated) of |block_Q(X) - block_FP(X)|^2,
 * where block_FP runs the original weights on the same inputs.
 *
 * Variables: every weight w0 keeps the two grid points a <= w0 <= b around
 * its original value and an offset o in [-0.5, 0.5]; it takes b when
 * u0 + o > 0.5, u0 = (w0 - a) / (b - a), else a (the signed-gradient
 * rounding of AutoRound on a block). The offsets start where the layer's
 * own rounding left the code, so step 0 is exactly that solution; a weight
 * whose code is neither neighbour (GPTQ may move further), or that sits on
 * a grid point, keeps its code. The forward pass uses the hard codes, the
 * gradient goes straight through: dL/do = dL/dw * (b - a), from the
 * family's block backward pass.
 *
 * Steps: o -= lr_t * sign(sum of dL/do over the step's samples), with lr_t
 * decaying linearly to 0. A step's samples are a window of about
 * round.block_rows activation rows (whole samples: sequences or images):
 * step t takes the B samples from t * B on, in the global sample order
 * (chunk by chunk), wrapping around, so that successive steps sweep the
 * calibration set (block_rows = 0, or a window as large as the set: every
 * sample at every step). The block loss on the whole calibration set is
 * measured at step 0, at every quarter of the steps and at the end (at
 * every step when each step sees every sample, where it comes with the
 * gradient), and the hard solution of least loss measured is kept, so the
 * block loss never ends above the layer rounding's on the calibration
 * data. The steps report progress with an ETA (log.progress_interval).
 *
 * With round.input_drop = p (QDrop), the gradient of a step comes from a
 * mixed input instead: each element of the block's input is the
 * full-precision model's activation (kept by the pass, calib_fp) with
 * probability p, drawn anew every step from (seed, step, chunk, element),
 * and the target is the full-precision block's output on that same mixed
 * input. The loss that picks the best solution stays the one on the
 * quantized model's own inputs.
 *
 * With round.block_scales = on, each group's (or channel's) scale is a
 * variable too: s = s0 m, s0 the layer rounding's, m in [0.5, 1.5] starting
 * at 1, stored in the spec's scale format at every step (the forward pass
 * sees what the checkpoint will hold). Every dequantized weight is s times
 * a value of its code, so dL/dm m = sum over the group of dL/dw w, from
 * the same backward pass; m takes signed steps of half the offsets' rate
 * (at most 0.5 over all steps). The sums go the offsets' way (fixed point,
 * own scale, integer sums: the same bits for any rank count), and the best
 * solution keeps its scales. The codes keep their two candidates: with a
 * scale moved, a weight still chooses between the codes around its
 * original value.
 *
 * With round.block_descent = on (every step sees every sample), a step
 * that raises the loss is undone and the next is smaller
 * (run_block_descent.c).
 *
 * With round.learn_bias = on, every layer with a bias slot also learns a
 * correction of its output bias, by signed steps in units of its output
 * error per channel (run_block_vars.c); the best solution keeps its
 * corrections, which the checkpoint adds to the layer's bias.
 *
 * Determinism: the gradient of each chunk's part of the window is computed
 * alone (chunks hold the same samples on any number of ranks), turned into
 * 64-bit fixed point with one scale agreed at the start (2^k from the
 * largest first-step gradient, with room for every chunk; larger values
 * later are clamped), and summed as integers, so the sum, its sign and the
 * codes are the same bits for any rank count. Block losses are summed per
 * chunk in chunk order.
 *
 * With round.block_comm = int8 the integer sums of each step go through
 * mpq_ef_sum instead (mpq_coll.h): 8-bit codes with a scale per 256
 * weights, about 4x less traffic, and error feedback: what a rank's codes
 * leave out is added to its next step's gradient, one residual per weight
 * for the whole block. The codes are the same bits on every run at a
 * given rank count, but depend on how the chunks are split over the
 * ranks: the property above is given up under this option (on one rank it
 * is the exact sum). One line per block logs the bytes sent per rank and
 * what the exact sum would send.
 *
 * With round.block_momentum > 0 the steps follow a running average of
 * the sums instead (run_block_vars.c).
 *
 * Memory, every rank: the block's quantized layers' variables (about 26
 * bytes per weight, 4 more with round.block_momentum; 34 with block_comm =
 * int8 on more than one rank, plus 8 bytes per weight of the largest
 * layer) and the full-precision outputs of its own chunks (twice with
 * round.kl_target = "model", whose pass also keeps the full-precision
 * model's activations). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mpq_calibrate.h"
#include "mpq_coll.h"
#include "mpq_log.h"
#include "pass_internal.h"
#include "run_internal.h"
#include "block_loss_internal.h"

static void layer_free(bl_layer *x) {
    mpq_free(x->ca);
    mpq_free(x->cb);
    mpq_free(x->best);
    mpq_free(x->u0);
    mpq_free(x->o);
    mpq_free(x->dv);
    mpq_free(x->w);
    mpq_free(x->dw);
    mpq_free(x->acc);
    mpq_free(x->s0);
    mpq_free(x->m);
    mpq_free(x->sacc);
    mpq_free(x->sbest);
    mpq_free(x->bd);
    mpq_free(x->bunit);
    mpq_free(x->db);
    mpq_free(x->bbest);
    mpq_free(x->bacc);
    mpq_free(x->obest);
    mpq_free(x->mbest);
    mpq_free(x->tabu);
    mpq_bl_momentum_free(x);
    mpq_ef_destroy(&x->ef);
}

static void state_free(bl_state *S) {
    for (int64_t i = 0; S->L && i < S->nl; i++)
        layer_free(&S->L[i]);
    mpq_free(S->L);
    for (int64_t i = 0; S->yfp && i < S->mine; i++) {
        if (S->ykl && S->ykl[i] != S->yfp[i])
            mpq_free(S->ykl[i]);
        mpq_free(S->yfp[i]);
    }
    mpq_free(S->yfp);
    mpq_free(S->ykl);
    mpq_free(S->dwp);
    mpq_free(S->dbp);
    mpq_free(S->msq);
    mpq_free(S->y);
    mpq_free(S->dy);
    mpq_free(S->xmix);
    mpq_free(S->tmix);
    mpq_free(S->closs);
    mpq_free(S->ckl);
    mpq_block_net_destroy(&S->net);
    mpq_free(S->cstart);
    mpq_free(S->g);
}

/* The variables of one layer from its original weights w0 and its codes. */
static mpq_err layer_init(mpq_ctx *ctx, bl_layer *x, const float *w0) {
    const mpq_qparams *P = x->q->params;
    const int64_t n = x->n;
    MPQ_ALLOC(x->ca, n);
    MPQ_ALLOC(x->cb, n);
    MPQ_ALLOC(x->best, n);
    MPQ_ALLOC(x->u0, n);
    MPQ_ALLOC(x->o, n);
    MPQ_ALLOC(x->dv, n);
    MPQ_ALLOC(x->w, n);
    MPQ_ALLOC(x->dw, n);
    MPQ_ALLOC(x->acc, n);
    float *va = NULL, *vb = NULL;
    MPQ_ALLOC(va, x->cols);
    mpq_err err = mpq_malloc(ctx, x->cols, sizeof *vb, (void **)&vb);
    for (int64_t r = 0; err == MPQ_OK && r < x->rows; r++) {
        const int64_t r0 = r * x->cols;
        mpq_quant_row_neighbours(P, r, w0 + r0, x->ca + r0, x->cb + r0, va, vb);
        for (int64_t c = 0; c < x->cols; c++) {
            const int64_t k = r0 + c;
            const uint8_t code = x->q->codes[k];
            x->best[k] = code;
            if (vb[c] <= va[c] || (code != x->ca[k] && code != x->cb[k])) {
                x->u0[k] = 0.0f; /* fixed: a = b = the code */
                x->o[k] = NAN;
                x->dv[k] = 0.0f;
                x->ca[k] = x->cb[k] = code;
                continue;
            }
            const float u = (w0[k] - va[c]) / (vb[c] - va[c]);
            x->u0[k] = u;
            x->dv[k] = vb[c] - va[c];
            /* the offset that reproduces the layer rounding's choice */
            x->o[k] = code == x->cb[k] ? fmaxf(0.0f, 0.5f - u + 1e-4f) : fminf(0.0f, 0.5f - u);
        }
    }
    mpq_free(va);
    mpq_free(vb);
    return err;
}

/* Hard codes of the current offsets (and scales) into the layer and its
 * weights into the working model. */
static mpq_err install(bl_state *S, bl_layer *x) {
    mpq_ctx *ctx = S->ctx;
    for (int64_t k = 0; k < x->n; k++)
        if (!isnan(x->o[k]))
            x->q->codes[k] = mpq_bl_takes_b(x, k, x->o[k]) ? x->cb[k] : x->ca[k];
    for (int64_t g = 0; g < x->ng; g++)
        x->q->params->scale[g] = mpq_round_store_scale(x->q->params, x->s0[g] * x->m[g]);
    mpq_quant_dequantize(x->q->params, x->q->codes, x->w);
    MPQ_CALL(mpq_family_set_weight(ctx, S->s->ses->fq, x->l, x->w));
    if (x->nb > 0)
        MPQ_CALL(mpq_family_set_bias_delta(ctx, S->s->ses->fq, x->l, x->bd));
    return MPQ_OK;
}

/* Uniform in [0, 1) from (seed, step, chunk, element): the same draw on any
 * number of ranks. */
static double draw(uint64_t seed, int64_t t, int64_t k, int64_t i) {
    uint64_t z = seed ^ ((uint64_t)t * UINT64_C(0x9e3779b97f4a7c15)) ^
                 ((uint64_t)k * UINT64_C(0xc2b2ae3d27d4eb4f)) ^
                 ((uint64_t)i * UINT64_C(0x165667b19e3779f9));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-53;
}

/* QDrop's training input of rows r0.. of chunk i (global index k), batch
 * bt, at step S->t: each
 * element from the full-precision activations with probability S->drop,
 * and the full-precision block's output on it as the target. *x and *y
 * point to the input and target to train on. */
static mpq_err mix_input(bl_state *S, int64_t i, int64_t k, int64_t r0, const mpq_batch *bt,
                         const float **x, const float **y) {
    mpq_ctx *ctx = S->ctx;
    if (!(S->drop > 0.0))
        return MPQ_OK;
    mpq_batch bf;
    const float *xf = NULL;
    mpq_calib_chunk_at(S->cfp, i, &bf, &xf);
    const int64_t m = bt->rows * S->win, e0 = r0 * S->win;
    for (int64_t e = 0; e < m; e++)
        S->xmix[e] = draw(S->seed, S->t, k, e0 + e) < S->drop ? xf[e0 + e] : (*x)[e];
    MPQ_CALL(mpq_family_block(ctx, S->s->ses->ffp, S->b, bt, S->xmix, S->tmix, NULL, NULL));
    *x = S->xmix;
    *y = S->tmix;
    return MPQ_OK;
}

/* Samples [j0, j1) of chunk batch bt (input x) as a batch of their own. */
static void sub_batch(const bl_state *S, const mpq_batch *bt, const float *x, int64_t j0,
                      int64_t j1, mpq_batch *sb, const float **sx) {
    int64_t r0 = 0, r1 = 0;
    for (int64_t j = 0; j < j1; j++) {
        const int64_t n = bt->len ? bt->len[j] : bt->rows / (bt->nseq > 0 ? bt->nseq : 1);
        r0 += j < j0 ? n : 0;
        r1 += n;
    }
    *sb = (mpq_batch){.nseq = j1 - j0,
                      .len = bt->len ? bt->len + j0 : NULL,
                      .rows = r1 - r0,
                      .tokens = bt->tokens ? bt->tokens + r0 : NULL,
                      .input = NULL}; /* only the embedding reads input */
    *sx = x + r0 * S->win;
}

/* The samples of chunk k (global sample range [c0, c1)) in step t's window,
 * as up to two ranges of chunk-local samples. Returns how many. */
static int window_part(const bl_state *S, int64_t t, int64_t c0, int64_t c1, int64_t part[2][2]) {
    int n = 0;
    const int64_t w0 = (t * S->B) % S->nsamples, w1 = w0 + S->B;
    const int64_t iv[2][2] = {{w0, w1 < S->nsamples ? w1 : S->nsamples},
                              {0, w1 > S->nsamples ? w1 - S->nsamples : 0}};
    for (int k = 0; k < 2; k++) {
        const int64_t a = iv[k][0] > c0 ? iv[k][0] : c0, b = iv[k][1] < c1 ? iv[k][1] : c1;
        if (a < b) {
            part[n][0] = a - c0;
            part[n][1] = b - c0;
            n++;
        }
    }
    return n;
}

/* The gradient of one part of a chunk's samples (its rows from r0 of chunk
 * i, global index k: batch bt, input x, full-precision output yt) added in fixed point to the
 * layers' acc (and sacc), or with gmax (the probe before the first step) only the largest
 * |dL/do| (gmax[0]) and |dL/dm m| (gmax[1]). */
static mpq_err part_grad(bl_state *S, int64_t i, int64_t k, int64_t r0, const mpq_batch *bt,
                         const float *x, const float *yt, const float *yk, double *gmax) {
    mpq_ctx *ctx = S->ctx;
    if (S->drop > 0.0) /* train on the mixed input: its own output and target */
        MPQ_CALL(mix_input(S, i, k, r0, bt, &x, &yt));
    for (int64_t j = 0; j < S->nl; j++) {
        memset(S->L[j].dw, 0, (size_t)S->L[j].n * sizeof *S->L[j].dw);
        if (S->L[j].nb > 0)
            memset(S->L[j].db, 0, (size_t)S->L[j].nb * sizeof *S->L[j].db);
    }
    if (S->net) {
        /* d(block / mse0 + beta KL / kl0)/dy, then back through the block */
        mpq_family *fq = S->s->ses->fq;
        MPQ_CALL(mpq_family_block(ctx, fq, S->b, bt, x, S->y, NULL, NULL));
        for (int64_t r = 0; r < bt->rows * S->wout; r++)
            S->dy[r] = (float)(2.0 * ((double)S->y[r] - (double)yt[r]) / S->mse0);
        MPQ_CALL(mpq_block_net_kl(ctx, S->net, fq, bt, S->y, yk, S->beta / S->kl0, S->dy, NULL));
        MPQ_CALL(mpq_family_block_backward(ctx, fq, S->b, bt, x, S->dy, NULL, S->dwp, S->dbp));
    } else {
        MPQ_CALL(mpq_family_block_fit_grad(ctx, S->s->ses->fq, S->b, bt, x, yt, S->y, S->dy, S->dwp,
                                           S->dbp));
    }
    for (int64_t j = 0; j < S->nl; j++) {
        bl_layer *L = &S->L[j];
        for (int64_t t = 0; t < L->n; t++) {
            if (isnan(L->o[t]))
                continue;
            const double g = (double)L->dw[t] * (double)L->dv[t];
            if (gmax) {
                gmax[0] = fabs(g) > gmax[0] ? fabs(g) : gmax[0];
                continue;
            }
            L->acc[t] += mpq_bl_fixed(S, g, S->scale);
        }
        if (L->ng > 0)
            mpq_bl_scale_grad(S, L, gmax ? gmax + 1 : NULL);
        if (L->nb > 0)
            mpq_bl_bias_grad(S, L, gmax ? gmax + 2 : NULL);
    }
    return MPQ_OK;
}

/* One pass over this rank's chunks on the current hard weights. With loss,
 * the block loss of each whole chunk (S->closs, by global chunk index);
 * with grad, the dL/do of step t's window summed in fixed point (x->acc),
 * or with gmax only their largest |value|. */
static mpq_err chunk_pass(bl_state *S, int loss, int grad, int64_t t, double *gmax) {
    mpq_ctx *ctx = S->ctx;
    memset(S->closs, 0, (size_t)S->nchunks * sizeof *S->closs);
    if (S->net)
        memset(S->ckl, 0, (size_t)S->nchunks * sizeof *S->ckl);
    for (int64_t j = 0; j < S->nl; j++) {
        memset(S->L[j].acc, 0, (size_t)S->L[j].n * sizeof *S->L[j].acc);
        if (S->L[j].ng > 0)
            memset(S->L[j].sacc, 0, (size_t)S->L[j].ng * sizeof *S->L[j].sacc);
        if (S->L[j].nb > 0)
            memset(S->L[j].bacc, 0, (size_t)S->L[j].nb * sizeof *S->L[j].bacc);
    }
    for (int64_t i = 0; i < S->mine; i++) {
        mpq_batch bt;
        const float *x = NULL;
        const int64_t k = mpq_calib_chunk_at(S->c, i, &bt, &x);
        if (loss) {
            MPQ_CALL(mpq_family_block(ctx, S->s->ses->fq, S->b, &bt, x, S->y, NULL, NULL));
            double e = 0.0;
            for (int64_t r = 0; r < bt.rows * S->wout; r++) {
                const double d = (double)S->y[r] - (double)S->yfp[i][r];
                e += d * d;
            }
            S->closs[k] = e;
            if (S->net)
                MPQ_CALL(mpq_block_net_kl(ctx, S->net, S->s->ses->fq, &bt, S->y, S->ykl[i], 0.0,
                                          NULL, &S->ckl[k]));
        }
        int64_t part[2][2];
        const int np = grad ? window_part(S, t, S->cstart[k], S->cstart[k + 1], part) : 0;
        for (int q = 0; q < np; q++) {
            mpq_batch sb;
            const float *sx = NULL;
            sub_batch(S, &bt, x, part[q][0], part[q][1], &sb, &sx);
            const int64_t r0 = (sx - x) / S->win;
            MPQ_CALL(part_grad(S, i, k, r0, &sb, sx, S->yfp[i] + r0 * S->wout,
                               S->ykl[i] + r0 * S->wout, gmax));
        }
    }
    return MPQ_OK;
}

/* Collective. Layer x's integer gradient sums over the ranks through its
 * compressed, error-feedback sum (round.block_comm = int8). Only their
 * sign is kept: all that step() reads. */
static mpq_err sum_int8(bl_state *S, bl_layer *x) {
    mpq_ctx *ctx = S->ctx;
    for (int64_t k = 0; k < x->n; k++)
        S->g[k] = (double)x->acc[k];
    MPQ_CALL(mpq_ef_sum(ctx, x->ef, S->g, S->g, "block loss: the gradients"));
    for (int64_t k = 0; k < x->n; k++)
        x->acc[k] = S->g[k] > 0.0 ? 1 : S->g[k] < 0.0 ? -1 : 0;
    return MPQ_OK;
}

/* Collective. With loss, the block loss of the current codes (every
 * chunk's, summed in chunk order, into *loss); with grad, step t's integer
 * gradient sums over all ranks. */
static mpq_err eval_step(bl_state *S, int loss_too, int grad, int64_t t, double *loss) {
    mpq_ctx *ctx = S->ctx;
    MPQ_CALL(mpq_agree(ctx, chunk_pass(S, loss_too, grad, t, NULL)));
    if (ctx->size > 1) {
        MPQ_CHECK(MPI_Allreduce(MPI_IN_PLACE, S->closs, (int)S->nchunks, MPI_DOUBLE, MPI_SUM,
                                ctx->comm) == MPI_SUCCESS,
                  MPQ_ERR_MPI, "block loss: cannot sum the chunks' losses");
        if (S->net)
            MPQ_CHECK(MPI_Allreduce(MPI_IN_PLACE, S->ckl, (int)S->nchunks, MPI_DOUBLE, MPI_SUM,
                                    ctx->comm) == MPI_SUCCESS,
                      MPQ_ERR_MPI, "network loss: cannot sum the chunks' divergences");
        for (int64_t j = 0; grad && j < S->nl; j++)
            if (S->L[j].ng > 0 && S->L[j].ng <= INT32_MAX)
                MPQ_CHECK(MPI_Allreduce(MPI_IN_PLACE, S->L[j].sacc, (int)S->L[j].ng, MPI_INT64_T,
                                        MPI_SUM, ctx->comm) == MPI_SUCCESS,
                          MPQ_ERR_MPI, "block loss: cannot sum the scale gradients");
        if (grad)
            MPQ_CALL(mpq_bl_bias_sum(S));
        for (int64_t j = 0; grad && S->comm8 && j < S->nl; j++)
            MPQ_CALL(sum_int8(S, &S->L[j]));
        for (int64_t j = 0; grad && !S->comm8 && j < S->nl; j++)
            for (int64_t o = 0; o < S->L[j].n; o += INT32_MAX / 2) {
                const int64_t cnt = S->L[j].n - o < INT32_MAX / 2 ? S->L[j].n - o : INT32_MAX / 2;
                MPQ_CHECK(MPI_Allreduce(MPI_IN_PLACE, S->L[j].acc + o, (int)cnt, MPI_INT64_T,
                                        MPI_SUM, ctx->comm) == MPI_SUCCESS,
                          MPQ_ERR_MPI, "block loss: cannot sum the gradients");
            }
    }
    double tot = 0.0, kl = 0.0;
    for (int64_t k = 0; k < S->nchunks; k++) {
        tot += S->closs[k];
        kl += S->net ? S->ckl[k] : 0.0;
    }
    if (loss_too) {
        S->mse = tot;
        S->kl = kl;
        *loss = S->net ? tot / S->mse0 + S->beta * kl / S->kl0 : tot;
    }
    return MPQ_OK;
}

/* Collective. The fixed-point scales: the largest first-step |dL/do| (and
 * |dL/dm m|, |dL/dbd|) of any chunk's part, 16 times over, fits 2^62 /
 * chunks. */
static mpq_err fix_scale(bl_state *S) {
    mpq_ctx *ctx = S->ctx;
    double gmax[3] = {0.0, 0.0, 0.0};
    MPQ_CALL(mpq_agree(ctx, chunk_pass(S, 0, 1, 0, gmax)));
    if (ctx->size > 1)
        MPQ_CHECK(MPI_Allreduce(MPI_IN_PLACE, gmax, 3, MPI_DOUBLE, MPI_MAX, ctx->comm) ==
                      MPI_SUCCESS,
                  MPQ_ERR_MPI, "block loss: cannot agree on the gradient scale");
    const double room = ldexp(1.0, 62) / (double)(S->nchunks > 0 ? S->nchunks : 1);
    S->clampv = room;
    S->scale = gmax[0] > 0.0 ? ldexp(1.0, (int)floor(log2(room / (16.0 * gmax[0])))) : 1.0;
    S->sscale = gmax[1] > 0.0 ? ldexp(1.0, (int)floor(log2(room / (16.0 * gmax[1])))) : 1.0;
    S->bscale = gmax[2] > 0.0 ? ldexp(1.0, (int)floor(log2(room / (16.0 * gmax[2])))) : 1.0;
    return MPQ_OK;
}

/* Collective. The global sample order (S->cstart from the chunks' sample
 * counts, in S->cstart[k + 1]) and the window: about block_rows rows of
 * whole samples (rows: this rank's activation rows). */
static mpq_err sample_layout(bl_state *S, int64_t rows, int64_t block_rows) {
    mpq_ctx *ctx = S->ctx;
    int64_t tot[2] = {rows, 0};
    if (ctx->size > 1) {
        MPQ_CHECK(MPI_Allreduce(MPI_IN_PLACE, S->cstart + 1, (int)S->nchunks, MPI_INT64_T, MPI_SUM,
                                ctx->comm) == MPI_SUCCESS &&
                      MPI_Allreduce(MPI_IN_PLACE, tot, 1, MPI_INT64_T, MPI_SUM, ctx->comm) ==
                          MPI_SUCCESS,
                  MPQ_ERR_MPI, "block loss: cannot agree on the sample layout");
    }
    for (int64_t k = 0; k < S->nchunks; k++)
        S->cstart[k + 1] += S->cstart[k];
    S->nsamples = S->cstart[S->nchunks];
    S->rows_all = tot[0];
    const double per = S->nsamples > 0 ? (double)tot[0] / (double)S->nsamples : 1.0;
    S->B = block_rows > 0 ? (int64_t)ceil((double)block_rows / per) : S->nsamples;
    S->B = S->B < 1 ? 1 : S->B > S->nsamples ? S->nsamples : S->B;
    return MPQ_OK;
}

/* Collective (the sample layout). The block's layers, the gradient slots,
 * the outputs of the full-precision block on this rank's chunks. */
static mpq_err setup(bl_state *S, mpq_pass *p, int64_t block_rows) {
    mpq_ctx *ctx = S->ctx;
    const mpq_session *ses = S->s->ses;
    const mpq_family_info *fi = ses->info;
    int64_t first = -1, maxrows = 0, rows = 0, nmax = 0;
    for (int64_t l = 0; l < fi->nlayers; l++)
        if (fi->layers[l].block == S->b) {
            first = first < 0 ? l : first;
            S->nper++;
        }
    S->wout = mpq_family_width(ses->fq, S->b + 1);
    S->win = mpq_family_width(ses->fq, S->b);
    S->nchunks = mpq_calib_nchunks(S->c);
    S->mine = mpq_calib_nchunks_mine(S->c);
    MPQ_ALLOC(S->L, p->nlb > 0 ? p->nlb : 1);
    MPQ_ALLOC(S->dwp, S->nper > 0 ? S->nper : 1);
    MPQ_ALLOC(S->dbp, S->nper > 0 ? S->nper : 1);
    MPQ_ALLOC(S->closs, S->nchunks > 0 ? S->nchunks : 1);
    for (int64_t i = 0; i < p->nlb; i++) {
        bl_layer *x = &S->L[S->nl++];
        const mpq_run_layer *rl = &S->s->res->layers[p->lay[i]];
        MPQ_CHECK(rl->q, MPQ_ERR_INTERNAL, "block loss: layer %s has no codes on this rank",
                  rl->name);
        *x = (bl_layer){.l = p->lay[i],
                        .j = p->lay[i] - first,
                        .rows = rl->rows,
                        .cols = rl->cols,
                        .n = rl->rows * rl->cols,
                        .q = rl->q,
                        .w0 = p->W[i]};
        MPQ_CALL(layer_init(ctx, x, p->W[i]));
        if (S->scales)
            MPQ_CALL(mpq_bl_scales_init(ctx, x));
        if (S->biases)
            MPQ_CALL(mpq_bl_bias_init(ctx, fi, x));
        if (S->momentum > 0.0)
            MPQ_CALL(mpq_bl_momentum_init(ctx, x));
        S->dwp[x->j] = x->dw;
        S->dbp[x->j] = x->nb > 0 ? x->db : NULL;
        if (S->comm8)
            MPQ_CALL(mpq_ef_create(ctx, x->n, 1, &x->ef));
        nmax = x->n > nmax ? x->n : nmax;
    }
    if (S->comm8 && ctx->size > 1)
        MPQ_ALLOC(S->g, nmax > 0 ? nmax : 1);
    MPQ_ALLOC(S->cstart, S->nchunks + 1);
    MPQ_ALLOC(S->yfp, S->mine > 0 ? S->mine : 1);
    MPQ_ALLOC(S->ykl, S->mine > 0 ? S->mine : 1);
    if (S->biases)
        MPQ_ALLOC(S->msq, 2 * S->nl * S->nchunks > 0 ? 2 * S->nl * S->nchunks : 1);
    for (int64_t i = 0; i < S->mine; i++) {
        mpq_batch bt;
        const float *xin = NULL;
        const int64_t k = mpq_calib_chunk_at(S->c, i, &bt, &xin);
        maxrows = bt.rows > maxrows ? bt.rows : maxrows;
        S->cstart[k + 1] = bt.nseq; /* summed over the ranks below */
        rows += bt.rows;
        MPQ_ALLOC(S->yfp[i], bt.rows * S->wout > 0 ? bt.rows * S->wout : 1);
        S->hk = k; /* round.learn_bias: the hook sums the layers' squared inputs */
        MPQ_CALL(mpq_family_block(ctx, ses->ffp, S->b, &bt, xin, S->yfp[i],
                                  S->biases ? mpq_bl_bias_hook : NULL, S));
        if (!S->model_target) {
            S->ykl[i] = S->yfp[i];
            continue;
        }
        /* the full-precision block on the full-precision model's own
         * activations: the model's prediction through the later blocks */
        mpq_batch bf;
        const float *xf = NULL;
        mpq_calib_chunk_at(S->cfp, i, &bf, &xf);
        MPQ_ALLOC(S->ykl[i], bt.rows * S->wout > 0 ? bt.rows * S->wout : 1);
        MPQ_CALL(mpq_family_block(ctx, ses->ffp, S->b, &bf, xf, S->ykl[i], NULL, NULL));
    }
    MPQ_CALL(sample_layout(S, rows, block_rows));
    if (strcmp(ses->cfg->round.loss, "network") == 0) {
        MPQ_ALLOC(S->ckl, S->nchunks > 0 ? S->nchunks : 1);
        MPQ_CALL(mpq_block_net_create(ctx, ses->fq, S->b, maxrows, &S->net));
        S->beta = ses->cfg->round.kl_weight;
        S->mse0 = S->kl0 = 1.0;
    }
    MPQ_ALLOC(S->y, maxrows * S->wout > 0 ? maxrows * S->wout : 1);
    MPQ_ALLOC(S->dy, maxrows * S->wout > 0 ? maxrows * S->wout : 1);
    if (S->drop > 0.0) {
        MPQ_CHECK(S->cfp, MPQ_ERR_INTERNAL, "block loss: no full-precision activations");
        MPQ_ALLOC(S->xmix, maxrows * S->win > 0 ? maxrows * S->win : 1);
        MPQ_ALLOC(S->tmix, maxrows * S->wout > 0 ? maxrows * S->wout : 1);
    }
    return MPQ_OK;
}

/* Local. One signed step of every learned offset, except that a weight
 * the step would flip only moves with |gradient sum| >= thr (descent; 0:
 * all), and of the scale factors and bias corrections at rho times their
 * rate; the number of weights that changed side. */
static int64_t step(bl_state *S, double lr, int64_t thr, double rho) {
    int64_t flips = 0;
    for (int64_t j = 0; j < S->nl; j++) {
        bl_layer *x = &S->L[j];
        for (int64_t k = 0; k < x->n; k++) {
            if (isnan(x->o[k]) || x->acc[k] == 0)
                continue;
            const int before = mpq_bl_takes_b(x, k, x->o[k]);
            const float o = mpq_bl_moved(x, k, lr);
            const int flip = mpq_bl_takes_b(x, k, o) != before;
            if (flip && (mpq_bl_mag(x, k) < thr || (x->tabu && x->tabu[k] == 1)))
                continue;
            x->o[k] = o;
            flips += flip;
            if (flip && x->tabu)
                x->tabu[k] = 2;
        }
        /* the scale factors: signed steps of lr / 2 (at most 0.5 over the
         * steps), kept in [0.5, 1.5] */
        for (int64_t g = 0; g < x->ng; g++) {
            if (x->sacc[g] == 0)
                continue;
            const double m = x->m[g] - (x->sacc[g] > 0 ? 0.5 * rho * lr : -0.5 * rho * lr);
            x->m[g] = m < 0.5 ? 0.5 : m > 1.5 ? 1.5 : m;
        }
        mpq_bl_bias_step(x, rho * lr);
    }
    return flips;
}

/* The int8 sums' traffic of the block, one line. */
static void log_traffic(bl_state *S) {
    mpq_ctx *ctx = S->ctx;
    size_t sent = 0, exact = 0;
    for (int64_t j = 0; j < S->nl; j++) {
        sent += S->L[j].ef->sent;
        exact += S->L[j].ef->exact;
    }
    MPQ_INFO("block %lld: int8 gradient sums: %zu bytes sent per rank, exact would send %zu "
             "(%.2fx less)%s",
             (long long)S->b, sent, exact, sent > 0 ? (double)exact / (double)sent : 1.0,
             ctx->size > 1 ? "" : " (one rank: the exact sum, nothing sent)");
}

static void keep_best(bl_state *S) {
    for (int64_t j = 0; j < S->nl; j++) {
        memcpy(S->L[j].best, S->L[j].q->codes, (size_t)S->L[j].n);
        if (S->L[j].ng > 0)
            memcpy(S->L[j].sbest, S->L[j].q->params->scale,
                   (size_t)S->L[j].ng * sizeof *S->L[j].sbest);
        if (S->L[j].nb > 0)
            memcpy(S->L[j].bbest, S->L[j].bd, (size_t)S->L[j].nb * sizeof *S->L[j].bbest);
    }
}

/* The steps of one block's refinement and what they did. */
typedef struct bl_run {
    int64_t T;                             /* steps (round.block_iters) */
    double lr0;                            /* the offsets' first rate */
    int descent;                           /* round.block_descent in effect */
    double first, best, kl_first, kl_best; /* losses at step 0 and of the kept solution */
    int64_t flips, measured, undone, stop;
} bl_run;

/* Collective. Steps 0..T: the block loss measured (at every step when each
 * step sees every sample, else at step 0, every quarter and the end), the
 * best hard solution kept, signed steps of the window's gradient; with
 * round.block_descent in effect, the judged steps of run_block_descent.c. */
static mpq_err refine_steps(bl_state *S, bl_run *r) {
    mpq_ctx *ctx = S->ctx;
    const int64_t T = r->T, every = S->B >= S->nsamples ? 1 : (T + 3) / 4;
    const int on = strcmp(S->s->ses->cfg->round.block_descent, "on") == 0;
    MPQ_CHECK(!on || every == 1, MPQ_ERR_CONFIG,
              "round.block_descent = \"on\" needs every step to see every calibration sample: "
              "round.block_rows = %lld takes %lld of the %lld samples per step (set "
              "round.block_rows = 0)",
              (long long)S->s->ses->cfg->round.block_rows, (long long)S->B, (long long)S->nsamples);
    r->descent = on;
    r->stop = -1;
    mpq_progress pr; /* the steps, with an ETA (log.progress_interval) */
    char what[64];
    snprintf(what, sizeof what, "block %lld: %s loss", (long long)S->b,
             S->net ? "network" : "block");
    mpq_progress_begin(ctx, &pr, what, "steps", T);
    double rho = 1.0;
    int64_t tried = 0, singles = 0;
    int regrad = 0; /* this pass only takes the gradient at the restored best solution */
    if (r->descent)
        MPQ_CALL(mpq_bl_descent_init(S));
    for (int64_t t = 0; t <= T; t++) {
        double loss = 0.0;
        const int measure = !regrad && (t == T || t % every == 0);
        MPQ_CALL(eval_step(S, measure, t < T, t, &loss));
        r->measured += measure;
        regrad = 0;
        /* descent keeps a step that leaves the loss as it was (offsets that
         * moved without flipping) */
        if (measure && (t == 0 || loss < r->best || (r->descent && loss == r->best))) {
            r->best = loss;
            r->kl_best = S->kl;
            keep_best(S);
            if (r->descent) {
                singles = 0;
                rho = rho < 0.5 ? 2.0 * rho : 1.0;
                mpq_bl_descent_keep(S);
            }
        } else if (measure && r->descent) {
            /* the step raised the loss: undone, and a smaller one from the best solution */
            r->undone++;
            mpq_bl_descent_restore(S, tried == 1);
            for (int64_t j = 0; j < S->nl; j++)
                MPQ_CALL(install(S, &S->L[j]));
            singles = tried <= 1 ? singles + 1 : 0;
            if (singles >= 16) { /* 16 single flips in a row undone */
                r->stop = t;
                break;
            }
            rho = tried == 1 ? rho : 0.25 * rho; /* a single flip is left out instead */
            regrad = t < T;
            S->t = t + 1;
            mpq_progress_update(ctx, &pr, t + 1);
            continue;
        }
        r->kl_first = t == 0 ? S->kl : r->kl_first;
        r->first = t == 0 ? loss : r->first;
        if (t == T)
            break;
        const double lr = r->lr0 * (1.0 - (double)t / (double)T);
        const int64_t thr = r->descent ? mpq_bl_flip_threshold(S, lr, rho) : 0;
        mpq_bl_momentum(S);
        tried = step(S, lr, thr, r->descent ? rho : 1.0);
        r->flips += tried;
        S->t = t + 1;
        for (int64_t j = 0; j < S->nl; j++)
            MPQ_CALL(install(S, &S->L[j]));
        mpq_progress_update(ctx, &pr, t + 1);
    }
    mpq_progress_end(ctx, &pr);
    return MPQ_OK;
}

mpq_err mpq_run_block_refine(mpq_ctx *ctx, run_state *s, mpq_pass *p, int64_t b) {
    const mpq_config *cfg = s->ses->cfg;
    if (p->nlb == 0)
        return MPQ_OK;
    bl_state S = {.ctx = ctx,
                  .s = s,
                  .c = p->calib,
                  .cfp = p->calib_fp,
                  .drop = cfg->round.input_drop,
                  .comm8 = strcmp(cfg->round.block_comm, "int8") == 0,
                  .momentum = cfg->round.block_mom,
                  .scales = strcmp(cfg->round.block_scales, "on") == 0,
                  .biases = strcmp(cfg->round.learn_bias, "on") == 0,
                  .model_target = mpq_run_kl_model_target(cfg),
                  .seed = (uint64_t)cfg->calibration.seed ^ UINT64_C(0x51d7),
                  .b = b};
    mpq_err err = MPQ_OK;
    const double t0 = mpq_now();
    MPQ_CHECK(S.c, MPQ_ERR_INTERNAL, "block loss: no calibration activations");
    MPQ_CHECK(S.cfp || !S.model_target, MPQ_ERR_INTERNAL,
              "network loss: no full-precision activations for round.kl_target = \"model\"");
    MPQ_TRY(mpq_agree(ctx, setup(&S, p, cfg->round.block_rows)));
    for (int64_t j = 0; j < S.nl; j++)
        MPQ_TRY(install(&S, &S.L[j]));
    if (S.biases)
        MPQ_TRY(mpq_bl_bias_units(&S));
    if (S.net) {
        /* the normalisers: both terms' sums at the start */
        double l0;
        MPQ_TRY(eval_step(&S, 1, 0, 0, &l0));
        S.mse0 = S.mse > 0.0 ? S.mse : 1.0;
        S.kl0 = S.kl > 0.0 ? S.kl : 1.0;
    }
    MPQ_TRY(fix_scale(&S));
    bl_run r = {.T = cfg->round.block_iters};
    r.lr0 = cfg->round.block_lr > 0.0 ? cfg->round.block_lr : 2.0 / (double)r.T;
    MPQ_TRY(refine_steps(&S, &r));
    int64_t learned = 0;
    for (int64_t j = 0; j < S.nl; j++) {
        bl_layer *x = &S.L[j];
        for (int64_t k = 0; k < x->n; k++)
            learned += !isnan(x->o[k]);
        memcpy(x->q->codes, x->best, (size_t)x->n);
        if (x->ng > 0)
            memcpy(x->q->params->scale, x->sbest, (size_t)x->ng * sizeof *x->sbest);
        MPQ_TRY(mpq_qlayer_finish(ctx, x->q));
        MPQ_TRY(mpq_run_install_layer(ctx, s, x->l, x->q));
        MPQ_TRY(mpq_bl_bias_finish(&S, x));
    }
    if (S.biases)
        mpq_bl_bias_log(&S);
    MPQ_INFO("block %lld: block loss %.6g -> %.6g (%.2f%%), %lld steps of %lld of %lld samples, "
             "loss measured %lld times, %lld offset flips over %lld learned weights, %.2fs",
             (long long)b, r.first, r.best,
             r.first > 0.0 ? 100.0 * (r.best - r.first) / r.first : 0.0, (long long)r.T,
             (long long)S.B, (long long)S.nsamples, (long long)r.measured, (long long)r.flips,
             (long long)learned, mpq_now() - t0);
    if (r.descent && r.stop >= 0)
        MPQ_INFO("block %lld: descent: %lld steps undone, stopped at step %lld: 16 single flips "
                 "in a row raised the loss",
                 (long long)b, (long long)r.undone, (long long)r.stop);
    else if (r.descent)
        MPQ_INFO("block %lld: descent: %lld steps undone", (long long)b, (long long)r.undone);
    if (S.net)
        MPQ_INFO("block %lld: network loss: KL divergence of the prediction %.6g -> %.6g nats "
                 "per row (weight %g)",
                 (long long)b, r.kl_first / (double)(S.rows_all > 0 ? S.rows_all : 1),
                 r.kl_best / (double)(S.rows_all > 0 ? S.rows_all : 1), S.beta);
    if (S.comm8)
        log_traffic(&S);
cleanup:
    state_free(&S);
    return err;
}
