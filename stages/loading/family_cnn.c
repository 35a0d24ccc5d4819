/* family_cnn.c: the sequential CNN family. The network is the op list of
 * model.cnn (conv2d, batchnorm, relu, maxpool, flatten, linear) over the
 * checkpoint's named tensors, applied to inputs preprocessed as
 * (raw * input_scale - mean[c]) / std[c].
 *
 * Activations are one row per image holding its [c][h][w] tensor. A conv is
 * im2col + one SGEMM over the whole batch. A batch norm that directly
 * follows a conv or linear op is folded into that op's weight and bias when
 * the family is built (w' = w * s, b' = (b - mean) * s + beta with
 * s = gamma / sqrt(var + eps) per output channel); elsewhere it stays a
 * per-channel affine op. Block b starts at the b-th conv/linear op (block 0
 * also holds any ops before the first one), so every block has exactly one
 * quantizable layer. A conv/linear op may carry a learned correction of its
 * output bias (set_bias_delta, round.learn_bias), added to its bias as
 * b + bdelta. The backward pass is in family_cnn_bwd.c, the checkpoint's
 * view of folded tensors in family_cnn_store.c. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "family_cnn_internal.h"
#include "family_internal.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_family.h"

static int cnn_detect(const mpq_model *m, const mpq_config *cfg) {
    (void)m;
    return cfg && cfg->model.cnn.n > 0;
}

static void cnn_destroy(void **state) {
    if (!state || !*state)
        return;
    cnn *C = *state;
    for (int64_t i = 0; C->ops && i < C->cap_ops; i++) {
        mpq_free(C->ops[i].w_own);
        mpq_free(C->ops[i].b_own);
        mpq_free(C->ops[i].bdelta);
        mpq_free(C->ops[i].scale);
        mpq_free(C->ops[i].shift);
    }
    mpq_free(C->ops);
    mpq_free(C->bstart);
    mpq_free(C->in_mean);
    mpq_free(C->in_std);
    mpq_free(C->buf[0]);
    mpq_free(C->buf[1]);
    mpq_free(C->patches);
    mpq_free(C->gout);
    mpq_free(C->acts);
    mpq_free(C->grad[0]);
    mpq_free(C->grad[1]);
    mpq_free(C);
    *state = NULL;
}

/* Reads tensor `name` as fp32 into a new buffer, checking its shape. */
static mpq_err read_tensor(mpq_ctx *ctx, const cnn *C, const mpq_op *op, const char *field,
                           int ndim, const int64_t *shape, float **out) {
    const char *name = mpq_op_get(op, field)->s;
    const mpq_tensor *t = NULL;
    mpq_err e = mpq_model_get(ctx, C->m, name, ndim, shape, &t);
    if (e != MPQ_OK)
        return MPQ_ERROR(e, "%s:%d: model.cnn: %s %s: %s", C->src, op->line, op->op, field,
                         ctx->err_msg);
    float *buf = NULL;
    MPQ_ALLOC(buf, t->numel);
    e = mpq_tensor_read_f32(ctx, t, 0, t->numel, buf);
    if (e != MPQ_OK) {
        mpq_free(buf);
        return mpq_err_trace(ctx, e, __FILE__, __LINE__, __func__);
    }
    *out = buf;
    return MPQ_OK;
}

/* Per-channel affine form of a batch norm: scale = gamma / sqrt(var + eps),
 * shift = beta - mean * scale, both [c]. */
static mpq_err bn_affine(mpq_ctx *ctx, const cnn *C, const mpq_op *op, int64_t c, float **scale,
                         float **shift) {
    mpq_err err = MPQ_OK;
    float *g = NULL, *be = NULL, *mu = NULL, *var = NULL;
    int64_t sh[1] = {c};
    MPQ_TRY(read_tensor(ctx, C, op, "weight", 1, sh, &g));
    MPQ_TRY(read_tensor(ctx, C, op, "bias", 1, sh, &be));
    MPQ_TRY(read_tensor(ctx, C, op, "mean", 1, sh, &mu));
    MPQ_TRY(read_tensor(ctx, C, op, "var", 1, sh, &var));
    double eps = mpq_op_get(op, "eps")->f;
    for (int64_t i = 0; i < c; i++) {
        MPQ_ENSURE(var[i] + eps > 0.0, MPQ_ERR_NUMERIC,
                   "%s:%d: model.cnn: batchnorm '%s': variance + eps of channel %lld is not "
                   "positive",
                   C->src, op->line, mpq_op_get(op, "var")->s, (long long)i);
        double s = g[i] / sqrt((double)var[i] + eps);
        g[i] = (float)s;
        be[i] = (float)(be[i] - mu[i] * s);
    }
    *scale = g;
    *shift = be;
    g = be = NULL;
cleanup:
    mpq_free(g);
    mpq_free(be);
    mpq_free(mu);
    mpq_free(var);
    return err;
}

static int64_t cnn_width(const void *state, int64_t b) {
    const cnn *C = state;
    if (b >= C->nblocks)
        return cnn_op_out(&C->ops[C->nops - 1]);
    return b == 0 ? C->in_c * C->in_h * C->in_w : cnn_op_in(&C->ops[C->bstart[b]]);
}

mpq_err mpq_cnn_grow(mpq_ctx *ctx, float **buf, int64_t *cap, int64_t a, int64_t b) {
    int64_t n = 0;
    MPQ_CALL(mpq_mul64(ctx, a, b, "CNN scratch", &n));
    if (n <= *cap)
        return MPQ_OK;
    mpq_free(*buf);
    *buf = NULL;
    *cap = 0;
    MPQ_CALL(mpq_malloc(ctx, n, sizeof(float), (void **)buf));
    *cap = n;
    return MPQ_OK;
}

static mpq_err cnn_embed(mpq_ctx *ctx, void *state, const mpq_batch *batch, float *x) {
    cnn *C = state;
    int64_t per = C->in_h * C->in_w, numel = C->in_c * per;
    MPQ_CHECK(batch->input || batch->nseq == 0, MPQ_ERR_ARG, "CNN batch without input");
    for (int64_t n = 0; n < batch->nseq; n++)
        for (int64_t c = 0; c < C->in_c; c++) {
            const float *src = batch->input + n * numel + c * per;
            float *dst = x + n * numel + c * per;
            for (int64_t i = 0; i < per; i++)
                dst[i] = (float)(((double)src[i] * C->in_scale - C->in_mean[c]) / C->in_std[c]);
        }
    return MPQ_OK;
}

void mpq_cnn_im2col_cols(const float *in, int64_t n, const cnn_op *o, float *cols) {
    int64_t hw = o->ho * o->wo, rows = n * hw;
    for (int64_t c = 0; c < o->ci; c++)
        for (int64_t ky = 0; ky < o->k; ky++)
            for (int64_t kx = 0; kx < o->k; kx++) {
                float *dst = cols + ((c * o->k + ky) * o->k + kx) * rows;
                /* Output columns ox whose input column ix = ox*stride - pad + kx
                 * lies inside [0, wi): ox in [lo, hi). */
                int64_t lo = 0, hi = o->wo;
                while (lo < o->wo && lo * o->stride - o->pad + kx < 0)
                    lo++;
                while (hi > lo && (hi - 1) * o->stride - o->pad + kx >= o->wi)
                    hi--;
                for (int64_t img = 0; img < n; img++) {
                    const float *src = in + (img * o->ci + c) * o->hi * o->wi;
                    for (int64_t oy = 0; oy < o->ho; oy++) {
                        float *d = dst + img * hw + oy * o->wo;
                        int64_t iy = oy * o->stride - o->pad + ky;
                        if (iy < 0 || iy >= o->hi) {
                            memset(d, 0, sizeof(float) * (size_t)o->wo);
                            continue;
                        }
                        const float *srow = src + iy * o->wi - o->pad + kx;
                        for (int64_t ox = 0; ox < lo; ox++)
                            d[ox] = 0.0f;
                        if (o->stride == 1)
                            memcpy(d + lo, srow + lo, sizeof(float) * (size_t)(hi - lo));
                        else
                            for (int64_t ox = lo; ox < hi; ox++)
                                d[ox] = srow[ox * o->stride];
                        for (int64_t ox = hi; ox < o->wo; ox++)
                            d[ox] = 0.0f;
                    }
                }
            }
}

/* ---- building the network: one entry per op type ------------------------- */

/* Where the build of the op list stands: the shape entering the next op and
 * the quantizable layers so far (info->layers [nq]). */
typedef struct cnn_build {
    cnn *C;
    mpq_family_info *info;
    int64_t nq;
} cnn_build;

/* conv2d / linear: checks the weight against the input, reads weight and
 * bias, and registers the quantizable layer. */
static mpq_err setup_weighted(mpq_ctx *ctx, cnn_build *b, const mpq_op *op, cnn_op *o) {
    cnn *C = b->C;
    const char *src = C->src;
    const int conv = o->type->kind == MPQ_LAYER_CONV;
    const int64_t c = o->ci, h = o->hi, w = o->wi;
    const char *wname = mpq_op_get(op, "weight")->s;
    const mpq_tensor *t = NULL;
    MPQ_CALL(mpq_model_get(ctx, C->m, wname, 0, NULL, &t));
    if (conv) {
        MPQ_CHECK(t->ndim == 4 && t->shape[2] == t->shape[3], MPQ_ERR_CONFIG,
                  "%s:%d: model.cnn: conv2d weight '%s' must be [c_out][c_in][k][k]", src, op->line,
                  wname);
        MPQ_CHECK(t->shape[1] == c, MPQ_ERR_CONFIG,
                  "%s:%d: model.cnn: conv2d weight '%s' expects %lld input channels, "
                  "its input has %lld",
                  src, op->line, wname, (long long)t->shape[1], (long long)c);
        o->k = t->shape[2];
        o->stride = mpq_op_get(op, "stride")->i;
        o->pad = mpq_op_get(op, "padding")->i;
        MPQ_CHECK(o->stride >= 1, MPQ_ERR_CONFIG,
                  "%s:%d: model.cnn: conv2d stride must be at least 1", src, op->line);
        MPQ_CHECK(h + 2 * o->pad >= o->k && w + 2 * o->pad >= o->k, MPQ_ERR_CONFIG,
                  "%s:%d: model.cnn: conv2d kernel %lld is larger than its padded "
                  "input %lldx%lld",
                  src, op->line, (long long)o->k, (long long)h, (long long)w);
        o->co = t->shape[0];
        o->ho = (h + 2 * o->pad - o->k) / o->stride + 1;
        o->wo = (w + 2 * o->pad - o->k) / o->stride + 1;
    } else {
        MPQ_CHECK(h == 1 && w == 1, MPQ_ERR_CONFIG,
                  "%s:%d: model.cnn: linear '%s' needs a flat input (add op flatten "
                  "before it); its input is [%lld][%lld][%lld]",
                  src, op->line, wname, (long long)c, (long long)h, (long long)w);
        MPQ_CHECK(t->ndim == 2 && t->shape[1] == c, MPQ_ERR_CONFIG,
                  "%s:%d: model.cnn: linear weight '%s' must be [out][%lld]", src, op->line, wname,
                  (long long)c);
        o->k = 1;
        o->co = t->shape[0];
        o->ho = o->wo = 1;
    }
    int64_t in = conv ? c * o->k * o->k : c;
    int64_t wsh[4] = {o->co, c, o->k, o->k};
    MPQ_CALL(read_tensor(ctx, C, op, "weight", conv ? 4 : 2, wsh, &o->w_own));
    MPQ_ALLOC(o->b_own, o->co);
    if (mpq_op_get(op, "bias")->s[0]) {
        float *bias = NULL;
        int64_t bsh[1] = {o->co};
        MPQ_CALL(read_tensor(ctx, C, op, "bias", 1, bsh, &bias));
        memcpy(o->b_own, bias, sizeof(float) * (size_t)o->co);
        mpq_free(bias);
    }
    o->w = o->w_own;
    o->b = o->b_own;
    o->cfg = op;
    o->layer = b->nq;
    mpq_layer_info *LI = &b->info->layers[b->nq];
    snprintf(LI->tensor, sizeof LI->tensor, "%s", wname);
    size_t ln = strlen(wname);
    if (ln > 7 && strcmp(wname + ln - 7, ".weight") == 0)
        ln -= 7;
    snprintf(LI->name, sizeof LI->name, "%.*s", (int)ln, wname);
    LI->kind = o->type->kind;
    LI->out = o->co;
    LI->in = in;
    LI->block = b->nq;
    LI->group = b->nq;
    if (conv) {
        LI->c_in = c;
        LI->k_h = LI->k_w = o->k;
        LI->stride = o->stride;
        LI->padding = o->pad;
    }
    b->nq++;
    return MPQ_OK;
}

static mpq_err setup_conv_linear(mpq_ctx *ctx, cnn_build *b, const mpq_op *op, cnn_op *o,
                                 cnn_op *prev, int *folded) {
    (void)prev;
    *folded = 0;
    MPQ_CALL(setup_weighted(ctx, b, op, o));
    return MPQ_OK;
}

static mpq_err setup_bn(mpq_ctx *ctx, cnn_build *b, const mpq_op *op, cnn_op *o, cnn_op *prev,
                        int *folded) {
    *folded = 0;
    o->co = o->ci;
    o->ho = o->hi;
    o->wo = o->wi;
    float *scale = NULL, *shift = NULL;
    MPQ_CALL(bn_affine(ctx, b->C, op, o->ci, &scale, &shift));
    if (prev && prev->type->quantizable && !prev->scale) {
        /* Fold into the preceding conv/linear; `scale` marks it folded
         * so that a second batch norm stays separate. */
        int64_t per = prev->k * prev->k * prev->ci;
        for (int64_t oc = 0; oc < prev->co; oc++) {
            for (int64_t j = 0; j < per; j++)
                prev->w_own[oc * per + j] *= scale[oc];
            prev->b_own[oc] = prev->b_own[oc] * scale[oc] + shift[oc];
        }
        prev->scale = scale;
        prev->bn = op;
        mpq_free(shift);
        *folded = 1; /* no op of its own */
        return MPQ_OK;
    }
    o->scale = scale;
    o->shift = shift;
    return MPQ_OK;
}

static mpq_err setup_same_shape(mpq_ctx *ctx, cnn_build *b, const mpq_op *op, cnn_op *o,
                                cnn_op *prev, int *folded) {
    (void)ctx, (void)b, (void)op, (void)prev;
    *folded = 0;
    o->co = o->ci;
    o->ho = o->hi;
    o->wo = o->wi;
    return MPQ_OK;
}

static mpq_err setup_pool(mpq_ctx *ctx, cnn_build *b, const mpq_op *op, cnn_op *o, cnn_op *prev,
                          int *folded) {
    (void)prev;
    *folded = 0;
    const int64_t h = o->hi, w = o->wi;
    o->k = mpq_op_get(op, "kernel")->i;
    o->stride = mpq_op_get(op, "stride")->i;
    if (o->stride == 0)
        o->stride = o->k;
    MPQ_CHECK(o->k >= 1 && o->k <= h && o->k <= w, MPQ_ERR_CONFIG,
              "%s:%d: model.cnn: maxpool kernel %lld does not fit its input %lldx%lld", b->C->src,
              op->line, (long long)o->k, (long long)h, (long long)w);
    o->co = o->ci;
    o->ho = (h - o->k) / o->stride + 1;
    o->wo = (w - o->k) / o->stride + 1;
    return MPQ_OK;
}

static mpq_err setup_flat(mpq_ctx *ctx, cnn_build *b, const mpq_op *op, cnn_op *o, cnn_op *prev,
                          int *folded) {
    (void)ctx, (void)b, (void)op, (void)prev;
    *folded = 0;
    o->co = o->ci * o->hi * o->wi;
    o->ho = o->wo = 1;
    return MPQ_OK;
}

/* ---- running the ops: in [n][op_in] -> out [n][op_out] --------------------- */

static mpq_err run_conv(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                        float *out, mpq_layer_hook hook, void *ud) {
    int64_t osz = cnn_op_out(o);
    int64_t hw = o->ho * o->wo, kc = o->ci * o->k * o->k, rows = 0;
    MPQ_CALL(mpq_mul64(ctx, n, hw, "conv rows", &rows));
    int ir = 0;
    MPQ_CALL(mpq_to_int(ctx, rows * (kc > o->co ? kc : o->co), "conv GEMM size", &ir));
    MPQ_CALL(mpq_cnn_grow(ctx, &C->patches, &C->cap_patch, rows, kc));
    MPQ_CALL(mpq_cnn_grow(ctx, &C->gout, &C->cap_gout, rows, o->co));
    /* Column layout cols [(c, ky, kx)][(img, oy, ox)]: its rows are
     * contiguous copies of input rows, and gout [co][(img, pos)] =
     * W cols is already channel-major. */
    mpq_cnn_im2col_cols(in, n, o, C->patches);
    if (hook) {
        /* The hook wants the row layout [(img, pos)][(c, ky, kx)]:
         * the transpose, in the gout buffer's place if it fits. */
        float *rowsbuf = NULL;
        MPQ_CALL(mpq_malloc(ctx, rows * kc, sizeof(float), (void **)&rowsbuf));
        for (int64_t k = 0; k < kc; k++)
            for (int64_t r = 0; r < rows; r++)
                rowsbuf[r * kc + k] = C->patches[k * rows + r];
        mpq_err e = hook(ctx, ud, o->layer, rowsbuf, rows, kc);
        mpq_free(rowsbuf);
        MPQ_CALL(e);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)o->co, (int)rows, (int)kc, 1.0f,
                o->w, (int)kc, C->patches, (int)rows, 0.0f, C->gout, (int)rows);
    for (int64_t img = 0; img < n; img++)
        for (int64_t oc = 0; oc < o->co; oc++) {
            float *dst = out + img * osz + oc * hw;
            const float *src = C->gout + oc * rows + img * hw;
            /* With a correction the bias is b + bdelta, rounded once as a
             * checkpoint storing the learned bias holds it. */
            float bias = o->bdelta ? o->b[oc] + o->bdelta[oc] : o->b[oc];
            for (int64_t p = 0; p < hw; p++)
                dst[p] = src[p] + bias;
        }
    return MPQ_OK;
}

static mpq_err run_linear(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                          float *out, mpq_layer_hook hook, void *ud) {
    (void)C;
    int64_t isz = cnn_op_in(o), osz = cnn_op_out(o);
    int ir = 0;
    MPQ_CALL(mpq_to_int(ctx, n * (isz > osz ? isz : osz), "linear GEMM size", &ir));
    if (hook)
        MPQ_CALL(hook(ctx, ud, o->layer, in, n, isz));
    for (int64_t img = 0; img < n; img++) {
        float *dst = out + img * osz;
        if (o->bdelta) /* the bias b + bdelta, as for a conv */
            for (int64_t oc = 0; oc < osz; oc++)
                dst[oc] = o->b[oc] + o->bdelta[oc];
        else
            memcpy(dst, o->b, sizeof(float) * (size_t)osz);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)osz, (int)isz, 1.0f, in,
                (int)isz, o->w, (int)isz, 1.0f, out, (int)osz);
    return MPQ_OK;
}

static mpq_err run_bn(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in, float *out,
                      mpq_layer_hook hook, void *ud) {
    (void)ctx, (void)C, (void)hook, (void)ud;
    int64_t isz = cnn_op_in(o), hw = o->hi * o->wi;
    for (int64_t img = 0; img < n; img++)
        for (int64_t c = 0; c < o->ci; c++)
            for (int64_t p = 0; p < hw; p++) {
                int64_t i = img * isz + c * hw + p;
                out[i] = in[i] * o->scale[c] + o->shift[c];
            }
    return MPQ_OK;
}

static mpq_err run_relu(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                        float *out, mpq_layer_hook hook, void *ud) {
    (void)ctx, (void)C, (void)hook, (void)ud;
    int64_t isz = cnn_op_in(o);
    for (int64_t i = 0; i < n * isz; i++)
        out[i] = in[i] > 0.0f ? in[i] : 0.0f;
    return MPQ_OK;
}

static mpq_err run_flat(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                        float *out, mpq_layer_hook hook, void *ud) {
    (void)ctx, (void)C, (void)hook, (void)ud;
    memcpy(out, in, sizeof(float) * (size_t)(n * cnn_op_in(o)));
    return MPQ_OK;
}

static mpq_err run_pool(mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                        float *out, mpq_layer_hook hook, void *ud) {
    (void)ctx, (void)C, (void)hook, (void)ud;
    int64_t isz = cnn_op_in(o), osz = cnn_op_out(o);
    for (int64_t img = 0; img < n; img++)
        for (int64_t c = 0; c < o->ci; c++) {
            const float *src = in + img * isz + c * o->hi * o->wi;
            float *dst = out + img * osz + c * o->ho * o->wo;
            for (int64_t oy = 0; oy < o->ho; oy++)
                for (int64_t ox = 0; ox < o->wo; ox++) {
                    float mx = -INFINITY;
                    for (int64_t ky = 0; ky < o->k; ky++)
                        for (int64_t kx = 0; kx < o->k; kx++) {
                            float v = src[(oy * o->stride + ky) * o->wi + ox * o->stride + kx];
                            mx = v > mx ? v : mx;
                        }
                    dst[oy * o->wo + ox] = mx;
                }
        }
    return MPQ_OK;
}

/* ---- the op registry (model.cnn) -------------------------------------------------- */

static const cnn_op_type op_conv2d = {
    .name = "conv2d",
    .fields = "weight:s,bias:s=,stride:i=1,padding:i=0",
    .quantizable = 1,
    .kind = MPQ_LAYER_CONV,
    .setup = setup_conv_linear,
    .run = run_conv,
    .backward = mpq_cnn_bwd_conv,
};
static const cnn_op_type op_batchnorm = {
    .name = "batchnorm",
    .fields = "weight:s,bias:s,mean:s,var:s,eps:f=1e-5",
    .setup = setup_bn,
    .run = run_bn,
    .backward = mpq_cnn_bwd_affine,
};
static const cnn_op_type op_relu = {.name = "relu",
                                    .fields = "",
                                    .setup = setup_same_shape,
                                    .run = run_relu,
                                    .backward = mpq_cnn_bwd_relu};
static const cnn_op_type op_maxpool = {.name = "maxpool",
                                       .fields = "kernel:i=2,stride:i=0",
                                       .setup = setup_pool,
                                       .run = run_pool,
                                       .backward = mpq_cnn_bwd_pool};
static const cnn_op_type op_flatten = {.name = "flatten",
                                       .fields = "",
                                       .setup = setup_flat,
                                       .run = run_flat,
                                       .backward = mpq_cnn_bwd_flat};
static const cnn_op_type op_linear = {
    .name = "linear",
    .fields = "weight:s,bias:s=",
    .quantizable = 1,
    .kind = MPQ_LAYER_LINEAR,
    .setup = setup_conv_linear,
    .run = run_linear,
    .backward = mpq_cnn_bwd_linear,
};

static const cnn_op_type *const cnn_op_types[] = {&op_conv2d,  &op_batchnorm, &op_relu, &op_maxpool,
                                                  &op_flatten, &op_linear,    NULL};

static const char *cnn_op_name_at(int64_t i) {
    return cnn_op_types[i] ? cnn_op_types[i]->name : NULL;
}

static const char *cnn_op_fields_at(int64_t i) {
    return cnn_op_types[i] ? cnn_op_types[i]->fields : NULL;
}

const mpq_registry mpq_cnn_op_reg = {
    .what = "CNN op", .name_at = cnn_op_name_at, .fields_at = cnn_op_fields_at};

/* The input [in_c][in_h][in_w] and its preprocessing, from the configuration. */
static mpq_err cnn_input(mpq_ctx *ctx, const mpq_config *cfg, cnn *C) {
    const char *src = cfg->source;
    const mpq_floatlist *shp = &cfg->model.input_shape;
    MPQ_CHECK(shp->n == 3, MPQ_ERR_CONFIG,
              "%s: model.input_shape: expected [channels, height, width], got %lld values", src,
              (long long)shp->n);
    for (int i = 0; i < 3; i++)
        MPQ_CHECK(shp->v[i] >= 1 && shp->v[i] == floor(shp->v[i]), MPQ_ERR_CONFIG,
                  "%s: model.input_shape: item %d (%g) is not a positive integer", src, i,
                  shp->v[i]);
    C->in_c = (int64_t)shp->v[0];
    C->in_h = (int64_t)shp->v[1];
    C->in_w = (int64_t)shp->v[2];
    C->in_scale = cfg->model.input_scale;
    const mpq_floatlist *mean = &cfg->model.input_mean, *sd = &cfg->model.input_std;
    MPQ_CHECK(mean->n == 0 || mean->n == 1 || mean->n == C->in_c, MPQ_ERR_CONFIG,
              "%s: model.input_mean: expected 1 or %lld values, got %lld", src, (long long)C->in_c,
              (long long)mean->n);
    MPQ_CHECK(sd->n == 0 || sd->n == 1 || sd->n == C->in_c, MPQ_ERR_CONFIG,
              "%s: model.input_std: expected 1 or %lld values, got %lld", src, (long long)C->in_c,
              (long long)sd->n);
    MPQ_ALLOC(C->in_mean, C->in_c);
    MPQ_ALLOC(C->in_std, C->in_c);
    for (int64_t c = 0; c < C->in_c; c++) {
        C->in_mean[c] = mean->n ? (float)mean->v[mean->n == 1 ? 0 : c] : 0.0f;
        C->in_std[c] = sd->n ? (float)sd->v[sd->n == 1 ? 0 : c] : 1.0f;
    }
    return MPQ_OK;
}

/* Blocks: block b starts at the b-th quantizable op (block 0 also holds the
 * ops before the first one). */
static mpq_err cnn_blocks(mpq_ctx *ctx, cnn *C, int64_t nq) {
    C->nblocks = nq;
    MPQ_ALLOC(C->bstart, nq + 1);
    for (int64_t i = 0, b = 0; i < C->nops; i++)
        if (C->ops[i].type->quantizable) {
            C->bstart[b] = b == 0 ? 0 : i;
            b++;
        }
    C->bstart[nq] = C->nops;
    return MPQ_OK;
}

static mpq_err cnn_create(mpq_ctx *ctx, const mpq_model *m, const mpq_config *cfg, void **state,
                          mpq_family_info *info) {
    *state = NULL;
    mpq_err err = MPQ_OK;
    cnn *C = NULL;
    MPQ_CHECK(cfg && cfg->model.cnn.n > 0, MPQ_ERR_CONFIG,
              "family cnn needs the network description model.cnn in the configuration");
    const char *src = cfg->source;
    MPQ_ALLOC_TRY(C, 1);
    C->m = m;
    C->src = src;
    MPQ_TRY(cnn_input(ctx, cfg, C));

    const mpq_oplist *L = &cfg->model.cnn;
    MPQ_ALLOC_TRY(C->ops, L->n);
    C->cap_ops = L->n;
    MPQ_ALLOC_TRY(info->layers, L->n);
    cnn_build b = {.C = C, .info = info, .nq = 0};
    int64_t c = C->in_c, h = C->in_h, w = C->in_w;
    for (int64_t i = 0; i < L->n; i++) {
        const mpq_op *op = &L->v[i];
        int64_t k = mpq_registry_index(&mpq_cnn_op_reg, op->op);
        MPQ_ENSURE(k >= 0, MPQ_ERR_CONFIG, "%s:%d: model.cnn: op '%s' is not implemented", src,
                   op->line, op->op);
        cnn_op *prev = C->nops ? &C->ops[C->nops - 1] : NULL;
        cnn_op *o = &C->ops[C->nops];
        memset(o, 0, sizeof *o);
        o->type = cnn_op_types[k];
        o->line = op->line;
        o->ci = c;
        o->hi = h;
        o->wi = w;
        int folded = 0;
        MPQ_TRY(o->type->setup(ctx, &b, op, o, prev, &folded));
        if (folded)
            continue;
        c = o->co;
        h = o->ho;
        w = o->wo;
        C->nops++;
    }
    MPQ_ENSURE(b.nq > 0, MPQ_ERR_CONFIG, "%s: model.cnn has no conv2d or linear op", src);
    /* Folded batch norms kept their scale only as a marker. The tensor of
     * each layer's output bias is known once its batch norm is folded. */
    for (int64_t i = 0; i < C->nops; i++)
        if (C->ops[i].type->quantizable) {
            mpq_free(C->ops[i].scale);
            C->ops[i].scale = NULL;
            mpq_layer_info *LI = &info->layers[C->ops[i].layer];
            mpq_cnn_bias_tensor(&C->ops[i], LI->bias_tensor, sizeof LI->bias_tensor);
        }
    MPQ_TRY(cnn_blocks(ctx, C, b.nq));
    info->task = MPQ_TASK_CLASSIFIER;
    info->nblocks = b.nq;
    info->nlayers = b.nq;
    info->out_width = c * h * w;
    info->input_numel = C->in_c * C->in_h * C->in_w;
    *state = C;
    C = NULL;
cleanup:
    if (err != MPQ_OK) {
        mpq_free(info->layers);
        info->layers = NULL;
    }
    void *p = C;
    cnn_destroy(&p);
    return err;
}

static mpq_err cnn_block(mpq_ctx *ctx, void *state, int64_t b, const mpq_batch *batch,
                         const float *x_in, float *x_out, mpq_layer_hook hook, void *ud) {
    cnn *C = state;
    int64_t n = batch->nseq, wmax = 0;
    int64_t first = C->bstart[b], last = C->bstart[b + 1];
    for (int64_t i = first; i < last; i++)
        wmax = cnn_op_out(&C->ops[i]) > wmax ? cnn_op_out(&C->ops[i]) : wmax;
    /* Both buffers share one capacity: after a failed growth it is the
     * smaller of the two, so that the next call grows again. */
    int64_t cap0 = C->cap_buf, cap1 = C->cap_buf;
    mpq_err e = mpq_cnn_grow(ctx, &C->buf[0], &cap0, n, wmax);
    if (e == MPQ_OK)
        e = mpq_cnn_grow(ctx, &C->buf[1], &cap1, n, wmax);
    C->cap_buf = cap0 < cap1 ? cap0 : cap1;
    MPQ_CALL(e);
    const float *cur = x_in;
    int which = 0;
    for (int64_t i = first; i < last; i++) {
        float *dst = i == last - 1 ? x_out : C->buf[which];
        MPQ_CALL(C->ops[i].type->run(ctx, C, &C->ops[i], n, cur, dst, hook, ud));
        cur = dst;
        which = 1 - which;
    }
    return MPQ_OK;
}

static mpq_err cnn_head(mpq_ctx *ctx, void *state, const float *x, int64_t rows, float *logits) {
    cnn *C = state;
    int64_t w = cnn_op_out(&C->ops[C->nops - 1]);
    if (logits != x)
        memcpy(logits, x, sizeof(float) * (size_t)(rows * w));
    return MPQ_OK;
}

/* The head is a copy: so is its backward pass. */
static mpq_err cnn_head_bwd(mpq_ctx *ctx, void *state, const float *x, int64_t rows,
                            const float *dlogits, float *dx) {
    (void)ctx;
    (void)x;
    cnn *C = state;
    int64_t w = cnn_op_out(&C->ops[C->nops - 1]);
    if (dx != dlogits)
        memcpy(dx, dlogits, sizeof(float) * (size_t)(rows * w));
    return MPQ_OK;
}

static cnn_op *layer_op(cnn *C, int64_t layer) {
    for (int64_t i = 0; i < C->nops; i++)
        if (C->ops[i].type->quantizable && C->ops[i].layer == layer)
            return &C->ops[i];
    return NULL;
}

static mpq_err cnn_get_weight(mpq_ctx *ctx, void *state, int64_t layer, float *w) {
    cnn_op *o = layer_op(state, layer);
    MPQ_CHECK(o, MPQ_ERR_INTERNAL, "no op for layer %lld", (long long)layer);
    memcpy(w, o->w, sizeof(float) * (size_t)(o->co * o->ci * o->k * o->k));
    return MPQ_OK;
}

static mpq_err cnn_set_weight(mpq_ctx *ctx, void *state, int64_t layer, const float *w) {
    cnn_op *o = layer_op(state, layer);
    MPQ_CHECK(o, MPQ_ERR_INTERNAL, "no op for layer %lld", (long long)layer);
    memcpy(o->w_own, w, sizeof(float) * (size_t)(o->co * o->ci * o->k * o->k));
    return MPQ_OK;
}

/* The correction is kept apart from b (and from set_weight's buffers), so
 * that NULL restores the original bias bit for bit. */
static mpq_err cnn_set_bias_delta(mpq_ctx *ctx, void *state, int64_t layer, const float *delta) {
    cnn_op *o = layer_op(state, layer);
    MPQ_CHECK(o, MPQ_ERR_INTERNAL, "no op for layer %lld", (long long)layer);
    if (!delta) {
        MPQ_FREE(o->bdelta);
        return MPQ_OK;
    }
    if (!o->bdelta)
        MPQ_ALLOC(o->bdelta, o->co);
    memcpy(o->bdelta, delta, sizeof(float) * (size_t)o->co);
    return MPQ_OK;
}

const mpq_family_ops mpq_family_cnn_ops = {
    .name = "cnn",
    .llama_layout = 0,
    .check_model = NULL,
    .check_checkpoint = NULL,
    .stored_tensor = mpq_cnn_stored_tensor,
    .detect = cnn_detect,
    .create = cnn_create,
    .destroy = cnn_destroy,
    .width = cnn_width,
    .embed = cnn_embed,
    .block = cnn_block,
    .head = cnn_head,
    .get_weight = cnn_get_weight,
    .set_weight = cnn_set_weight,
    .set_bias_delta = cnn_set_bias_delta,
    .block_backward = mpq_cnn_block_backward,
    .head_backward = cnn_head_bwd,
};
