/* family_cnn_bwd.c: the backward pass of one block of the sequential CNN
 * family (mpq_family_block_backward), for block-wise reconstruction.
 *
 * The block's forward pass is recomputed with the forward's own op kernels
 * (family_cnn.c), keeping the input of every op of the block for the whole
 * batch in the family's scratch (cnn.acts). The gradient then runs back
 * through the ops, last to first, in two gradient buffers [n][widest op].
 * Every op is the transpose of its forward, batched over all images:
 *   conv    dgout [co][(img, pos)] = dout regrouped;
 *           dW += dgout cols^T (one SGEMM over all images and positions);
 *           db += the rows of dgout summed;
 *           dcols = W^T dgout (one SGEMM), then col2im (the transpose of
 *           im2col: overlapping patches add up, padding drops out);
 *   linear  dW += dout^T in, din = dout W (SGEMMs over the images);
 *           db += dout summed over the images;
 *   affine  (standalone batch norm) din = dout * scale[c];
 *   relu    din = dout where the input is > 0, else 0;
 *   maxpool each output's gradient goes to the element the forward picked
 *           (the first maximum in window order; overlapping windows add up);
 *   flatten a copy.
 * A batch norm folded into a conv/linear is part of that op's weight, so
 * its gradient is the gradient of the folded weight (what get_weight
 * returns), and the gradient of a learned bias correction is that of the
 * folded bias. Gradients are float (the bias sums are taken in double). */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "family_cnn_internal.h"
#include "mpq_ctx.h"

/* Adds dcols [(c, ky, kx)][(img, oy, ox)] back onto the images
 * din [n][ci][hi][wi] (zeroed first): the transpose of mpq_cnn_im2col_cols. */
static void col2im_cols(const float *cols, int64_t n, const cnn_op *o, float *din) {
    int64_t hw = o->ho * o->wo, rows = n * hw, isz = o->ci * o->hi * o->wi;
    memset(din, 0, sizeof(float) * (size_t)(n * isz));
    for (int64_t c = 0; c < o->ci; c++)
        for (int64_t ky = 0; ky < o->k; ky++)
            for (int64_t kx = 0; kx < o->k; kx++) {
                const float *src = cols + ((c * o->k + ky) * o->k + kx) * rows;
                /* Output columns whose input column lies inside [0, wi). */
                int64_t lo = 0, hi = o->wo;
                while (lo < o->wo && lo * o->stride - o->pad + kx < 0)
                    lo++;
                while (hi > lo && (hi - 1) * o->stride - o->pad + kx >= o->wi)
                    hi--;
                for (int64_t img = 0; img < n; img++) {
                    float *im = din + img * isz + c * o->hi * o->wi;
                    for (int64_t oy = 0; oy < o->ho; oy++) {
                        int64_t iy = oy * o->stride - o->pad + ky;
                        if (iy < 0 || iy >= o->hi)
                            continue;
                        const float *s = src + img * hw + oy * o->wo;
                        float *drow = im + iy * o->wi - o->pad + kx;
                        for (int64_t ox = lo; ox < hi; ox++)
                            drow[ox * o->stride] += s[ox];
                    }
                }
            }
}

mpq_err mpq_cnn_bwd_conv(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                         const float *dout, float *din, float *dw, float *db) {
    int64_t osz = cnn_op_out(o), hw = o->ho * o->wo, kc = o->ci * o->k * o->k, rows = 0;
    MPQ_CALL(mpq_mul64(ctx, n, hw, "conv rows", &rows));
    int ir = 0;
    MPQ_CALL(mpq_to_int(ctx, rows * (kc > o->co ? kc : o->co), "conv GEMM size", &ir));
    MPQ_CALL(mpq_cnn_grow(ctx, &C->patches, &C->cap_patch, rows, kc));
    MPQ_CALL(mpq_cnn_grow(ctx, &C->gout, &C->cap_gout, rows, o->co));
    /* dgout [co][(img, pos)]: the forward's GEMM output layout. */
    for (int64_t img = 0; img < n; img++)
        for (int64_t oc = 0; oc < o->co; oc++)
            memcpy(C->gout + oc * rows + img * hw, dout + img * osz + oc * hw,
                   sizeof(float) * (size_t)hw);
    for (int64_t oc = 0; db && oc < o->co; oc++) {
        double sum = 0.0;
        for (int64_t r = 0; r < rows; r++)
            sum += C->gout[oc * rows + r];
        db[oc] += (float)sum;
    }
    if (dw) {
        mpq_cnn_im2col_cols(in, n, o, C->patches);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)o->co, (int)kc, (int)rows, 1.0f,
                    C->gout, (int)rows, C->patches, (int)rows, 1.0f, dw, (int)kc);
    }
    if (din) {
        /* The columns are no longer needed: dcols takes their place. */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kc, (int)rows, (int)o->co, 1.0f,
                    o->w, (int)kc, C->gout, (int)rows, 0.0f, C->patches, (int)rows);
        col2im_cols(C->patches, n, o, din);
    }
    return MPQ_OK;
}

mpq_err mpq_cnn_bwd_linear(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                           const float *dout, float *din, float *dw, float *db) {
    (void)C;
    int64_t isz = cnn_op_in(o), osz = cnn_op_out(o);
    int ir = 0;
    MPQ_CALL(mpq_to_int(ctx, n * (isz > osz ? isz : osz), "linear GEMM size", &ir));
    MPQ_CALL(mpq_to_int(ctx, isz * osz, "linear weight size", &ir));
    for (int64_t oc = 0; db && oc < osz; oc++) {
        double sum = 0.0;
        for (int64_t img = 0; img < n; img++)
            sum += dout[img * osz + oc];
        db[oc] += (float)sum;
    }
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)osz, (int)isz, (int)n, 1.0f, dout,
                    (int)osz, in, (int)isz, 1.0f, dw, (int)isz);
    if (din)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)isz, (int)osz, 1.0f,
                    dout, (int)osz, o->w, (int)isz, 0.0f, din, (int)isz);
    return MPQ_OK;
}

mpq_err mpq_cnn_bwd_affine(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                           const float *dout, float *din, float *dw, float *db) {
    (void)ctx, (void)C, (void)in, (void)dw, (void)db;
    if (!din)
        return MPQ_OK;
    int64_t isz = cnn_op_in(o), hw = o->hi * o->wi;
    for (int64_t img = 0; img < n; img++)
        for (int64_t c = 0; c < o->ci; c++) {
            int64_t at = img * isz + c * hw;
            for (int64_t p = 0; p < hw; p++)
                din[at + p] = dout[at + p] * o->scale[c];
        }
    return MPQ_OK;
}

mpq_err mpq_cnn_bwd_relu(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                         const float *dout, float *din, float *dw, float *db) {
    (void)ctx, (void)C, (void)dw, (void)db;
    if (!din)
        return MPQ_OK;
    int64_t isz = cnn_op_in(o);
    for (int64_t i = 0; i < n * isz; i++)
        din[i] = in[i] > 0.0f ? dout[i] : 0.0f;
    return MPQ_OK;
}

mpq_err mpq_cnn_bwd_flat(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                         const float *dout, float *din, float *dw, float *db) {
    (void)ctx, (void)C, (void)in, (void)dw, (void)db;
    if (din)
        memcpy(din, dout, sizeof(float) * (size_t)(n * cnn_op_in(o)));
    return MPQ_OK;
}

mpq_err mpq_cnn_bwd_pool(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                         const float *dout, float *din, float *dw, float *db) {
    (void)ctx, (void)C, (void)dw, (void)db;
    if (!din)
        return MPQ_OK;
    int64_t isz = cnn_op_in(o), osz = cnn_op_out(o);
    memset(din, 0, sizeof(float) * (size_t)(n * isz));
    for (int64_t img = 0; img < n; img++)
        for (int64_t c = 0; c < o->ci; c++) {
            const float *src = in + img * isz + c * o->hi * o->wi;
            float *dst = din + img * isz + c * o->hi * o->wi;
            const float *g = dout + img * osz + c * o->ho * o->wo;
            for (int64_t oy = 0; oy < o->ho; oy++)
                for (int64_t ox = 0; ox < o->wo; ox++) {
                    /* The forward's choice: the first strictly larger value
                     * in window order (the window's first element when none
                     * beats -inf). */
                    int64_t at = oy * o->stride * o->wi + ox * o->stride;
                    float mx = -INFINITY;
                    for (int64_t ky = 0; ky < o->k; ky++)
                        for (int64_t kx = 0; kx < o->k; kx++) {
                            int64_t i = (oy * o->stride + ky) * o->wi + ox * o->stride + kx;
                            if (src[i] > mx) {
                                mx = src[i];
                                at = i;
                            }
                        }
                    dst[at] += g[oy * o->wo + ox];
                }
        }
    return MPQ_OK;
}

/* Sizes the backward scratch for n images of ops [first, last): the inputs
 * of ops first+1 .. last-1 (nacts floats per image) and two gradient
 * buffers of the widest op. */
static mpq_err bwd_scratch(mpq_ctx *ctx, cnn *C, int64_t n, int64_t first, int64_t last) {
    int64_t nacts = 0, wmax = 0;
    for (int64_t i = first; i < last; i++) {
        const cnn_op *o = &C->ops[i];
        if (i > first)
            MPQ_CALL(mpq_add64(ctx, nacts, cnn_op_in(o), "CNN block activations", &nacts));
        wmax = cnn_op_in(o) > wmax ? cnn_op_in(o) : wmax;
        wmax = cnn_op_out(o) > wmax ? cnn_op_out(o) : wmax;
    }
    MPQ_CALL(mpq_cnn_grow(ctx, &C->acts, &C->cap_acts, n, nacts > 0 ? nacts : 1));
    int64_t cap0 = C->cap_grad, cap1 = C->cap_grad;
    mpq_err e = mpq_cnn_grow(ctx, &C->grad[0], &cap0, n, wmax);
    if (e == MPQ_OK)
        e = mpq_cnn_grow(ctx, &C->grad[1], &cap1, n, wmax);
    C->cap_grad = cap0 < cap1 ? cap0 : cap1; /* a failed growth shrinks it: regrow next time */
    MPQ_CALL(e);
    return MPQ_OK;
}

mpq_err mpq_cnn_block_backward(mpq_ctx *ctx, void *state, int64_t b, const mpq_batch *batch,
                               const float *x_in, const float *dy, float *dx, float *const *dw,
                               float *const *db) {
    cnn *C = state;
    const int64_t n = batch->nseq, first = C->bstart[b], last = C->bstart[b + 1];
    MPQ_CHECK(batch->rows == n, MPQ_ERR_ARG,
              "CNN block %lld backward: the batch has %lld rows for %lld images (one row each)",
              (long long)b, (long long)batch->rows, (long long)n);
    for (int64_t i = first; i < last; i++)
        MPQ_CHECK(C->ops[i].type->backward, MPQ_ERR_ARG,
                  "%s:%d: model.cnn: op '%s' (block %lld) has no backward pass", C->src,
                  C->ops[i].line, C->ops[i].type->name, (long long)b);
    /* The lowest op whose gradients are wanted: the first when dx is, else
     * the first quantizable op whose weight or bias gradient is. */
    int64_t lo = dx ? first : last;
    for (int64_t i = first, j = 0; i < last && lo == last; i++)
        if (C->ops[i].type->quantizable) {
            if ((dw && dw[j]) || (db && db[j]))
                lo = i;
            j++;
        }
    if (n == 0 || lo == last)
        return MPQ_OK;
    MPQ_CALL(bwd_scratch(ctx, C, n, first, last));

    /* Forward: the input of op i > first is stored in acts, in op order. */
    const float *cur = x_in;
    float *slot = C->acts;
    for (int64_t i = first; i + 1 < last; i++) {
        const cnn_op *o = &C->ops[i];
        MPQ_CALL(o->type->run(ctx, C, o, n, cur, slot, NULL, NULL));
        cur = slot;
        slot += n * cnn_op_out(o);
    }

    /* Backward: g [n][op_out(i)] is the gradient at op i's output. */
    int64_t nq = 0;
    for (int64_t i = first; i < last; i++)
        nq += C->ops[i].type->quantizable;
    const float *g = dy;
    int which = 0;
    for (int64_t i = last - 1; i >= lo; i--) {
        const cnn_op *o = &C->ops[i];
        const float *in = x_in;
        if (i > first) {
            slot -= n * cnn_op_in(o);
            in = slot;
        }
        float *din = i == first ? dx : i > lo ? C->grad[which] : NULL;
        float *dwi = NULL, *dbi = NULL;
        if (o->type->quantizable) {
            nq--; /* index of this layer within the block */
            dwi = dw ? dw[nq] : NULL;
            dbi = db ? db[nq] : NULL;
        }
        MPQ_CALL(o->type->backward(ctx, C, o, n, in, g, din, dwi, dbi));
        g = din;
        which = 1 - which;
    }
    return MPQ_OK;
}
