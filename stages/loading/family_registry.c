/* family_registry.c: the registry of model families and the generic family
 * object (ops table + state + scratch for whole-network forward passes). */
#include <math.h>
#include <string.h>

#include "family_internal.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_family.h"

const mpq_family_ops *const mpq_family_registry[] = {&mpq_family_llama_ops, &mpq_family_cnn_ops,
                                                     NULL};

static const char *family_name_at(int64_t i) {
    return mpq_family_registry[i] ? mpq_family_registry[i]->name : NULL;
}

const mpq_registry mpq_family_reg = {
    .what = "model family", .also = "auto", .name_at = family_name_at};

struct mpq_family {
    const mpq_family_ops *ops;
    void *state;
    mpq_family_info info;
    /* Scratch of mpq_family_forward: two activation buffers of cap floats. */
    float *act[2];
    int64_t act_cap;
    /* Where a block's weights come from when they are not held (see
     * mpq_family_set_block_source); NULL: the family holds them. */
    mpq_block_source source;
    void *source_ud;
};

void mpq_family_set_block_source(mpq_family *f, mpq_block_source fn, void *ud) {
    f->source = fn;
    f->source_ud = ud;
}

mpq_err mpq_family_block_enter(mpq_ctx *ctx, mpq_family *f, int64_t b) {
    if (f->source)
        MPQ_CALL(f->source(ctx, f->source_ud, f, b, 1));
    return MPQ_OK;
}

mpq_err mpq_family_block_leave(mpq_ctx *ctx, mpq_family *f, int64_t b) {
    if (f->source)
        MPQ_CALL(f->source(ctx, f->source_ud, f, b, 0));
    return MPQ_OK;
}

const mpq_family_ops *mpq_family_find(const char *name) {
    int64_t i = mpq_registry_index(&mpq_family_reg, name);
    return i < 0 ? NULL : mpq_family_registry[i];
}

const mpq_family_ops *mpq_family_of_model(const mpq_model *m) {
    return mpq_family_find(mpq_model_arch(m)->family);
}

mpq_err mpq_family_create(mpq_ctx *ctx, const mpq_model *m, const mpq_config *cfg, const char *name,
                          mpq_family **out) {
    *out = NULL;
    mpq_err err = MPQ_OK;
    mpq_family *f = NULL;
    if (!name)
        name = cfg ? cfg->model.family : "auto";
    const mpq_family_ops *ops = NULL;
    if (strcmp(name, mpq_family_reg.also) == 0) {
        for (int i = 0; mpq_family_registry[i] && !ops; i++)
            if (mpq_family_registry[i]->detect(m, cfg))
                ops = mpq_family_registry[i];
        MPQ_CHECK(ops, MPQ_ERR_CONFIG,
                  "%s: cannot tell the model family (no Llama architecture found and no "
                  "model.cnn description in the configuration); set model.family",
                  mpq_model_path(m));
    } else {
        int64_t i = 0;
        MPQ_CALL(mpq_registry_lookup(ctx, &mpq_family_reg, name, MPQ_ERR_CONFIG, NULL, &i));
        ops = mpq_family_registry[i];
    }
    MPQ_ALLOC_TRY(f, 1);
    f->ops = ops;
    MPQ_TRY(ops->create(ctx, m, cfg, &f->state, &f->info));
    *out = f;
    f = NULL;
cleanup:
    mpq_family_destroy(&f);
    return err;
}

void mpq_family_destroy(mpq_family **pf) {
    if (!pf || !*pf)
        return;
    mpq_family *f = *pf;
    if (f->ops && f->state)
        f->ops->destroy(&f->state);
    mpq_free(f->info.layers);
    mpq_free(f->act[0]);
    mpq_free(f->act[1]);
    mpq_free(f);
    *pf = NULL;
}

const char *mpq_family_name(const mpq_family *f) {
    return f->ops->name;
}

const mpq_family_info *mpq_family_get_info(const mpq_family *f) {
    return &f->info;
}

int64_t mpq_family_width(const mpq_family *f, int64_t b) {
    return f->ops->width(f->state, b);
}

mpq_err mpq_family_embed(mpq_ctx *ctx, mpq_family *f, const mpq_batch *batch, float *x) {
    MPQ_CHECK(batch->rows >= 0 && batch->nseq >= 0, MPQ_ERR_ARG, "negative batch size");
    MPQ_CALL(f->ops->embed(ctx, f->state, batch, x));
    return MPQ_OK;
}

mpq_err mpq_family_block(mpq_ctx *ctx, mpq_family *f, int64_t b, const mpq_batch *batch,
                         const float *x_in, float *x_out, mpq_layer_hook hook, void *ud) {
    MPQ_CHECK(b >= 0 && b < f->info.nblocks, MPQ_ERR_ARG, "block %lld out of range [0, %lld)",
              (long long)b, (long long)f->info.nblocks);
    MPQ_CALL(f->ops->block(ctx, f->state, b, batch, x_in, x_out, hook, ud));
    return MPQ_OK;
}

mpq_err mpq_family_block_backward(mpq_ctx *ctx, mpq_family *f, int64_t b, const mpq_batch *batch,
                                  const float *x_in, const float *dy, float *dx, float *const *dw,
                                  float *const *db) {
    MPQ_CHECK(b >= 0 && b < f->info.nblocks, MPQ_ERR_ARG, "block %lld out of range [0, %lld)",
              (long long)b, (long long)f->info.nblocks);
    MPQ_CHECK(f->ops->block_backward, MPQ_ERR_ARG, "the %s family has no backward pass",
              f->ops->name);
    MPQ_CALL(f->ops->block_backward(ctx, f->state, b, batch, x_in, dy, dx, dw, db));
    return MPQ_OK;
}

mpq_err mpq_family_block_fit_grad(mpq_ctx *ctx, mpq_family *f, int64_t b, const mpq_batch *batch,
                                  const float *x_in, const float *target, float *y, float *dy,
                                  float *const *dw, float *const *db) {
    MPQ_CHECK(b >= 0 && b < f->info.nblocks, MPQ_ERR_ARG, "block %lld out of range [0, %lld)",
              (long long)b, (long long)f->info.nblocks);
    if (f->ops->block_fit_backward)
        return f->ops->block_fit_backward(ctx, f->state, b, batch, x_in, target, y, dy, dw, db);
    MPQ_CALL(mpq_family_block(ctx, f, b, batch, x_in, y, NULL, NULL));
    const int64_t n = batch->rows * mpq_family_width(f, b + 1);
    for (int64_t i = 0; i < n; i++)
        dy[i] = 2.0f * (y[i] - target[i]);
    return mpq_family_block_backward(ctx, f, b, batch, x_in, dy, NULL, dw, db);
}

mpq_err mpq_family_head_backward(mpq_ctx *ctx, mpq_family *f, const float *x, int64_t rows,
                                 const float *dlogits, float *dx) {
    MPQ_CHECK(f->ops->head_backward, MPQ_ERR_ARG, "family %s has no backward pass of its head",
              f->ops->name);
    MPQ_CALL(f->ops->head_backward(ctx, f->state, x, rows, dlogits, dx));
    return MPQ_OK;
}

mpq_err mpq_family_head(mpq_ctx *ctx, mpq_family *f, const float *x, int64_t rows, float *logits) {
    MPQ_CALL(f->ops->head(ctx, f->state, x, rows, logits));
    return MPQ_OK;
}

/* Runs embed and every block; leaves the last block's output in f->act[*which]. */
static mpq_err run_blocks(mpq_ctx *ctx, mpq_family *f, const mpq_batch *batch, int *which) {
    int64_t wmax = 0;
    for (int64_t b = 0; b <= f->info.nblocks; b++) {
        int64_t w = f->ops->width(f->state, b);
        wmax = w > wmax ? w : wmax;
    }
    int64_t need = 0;
    MPQ_CALL(mpq_mul64(ctx, batch->rows, wmax, "activation buffer", &need));
    if (need > f->act_cap) {
        for (int i = 0; i < 2; i++) {
            mpq_free(f->act[i]);
            f->act[i] = NULL;
        }
        f->act_cap = 0;
        MPQ_CALL(mpq_malloc(ctx, need, sizeof(float), (void **)&f->act[0]));
        MPQ_CALL(mpq_malloc(ctx, need, sizeof(float), (void **)&f->act[1]));
        f->act_cap = need;
    }
    int cur = 0;
    MPQ_CALL(mpq_family_embed(ctx, f, batch, f->act[cur]));
    for (int64_t b = 0; b < f->info.nblocks; b++) {
        MPQ_CALL(mpq_family_block_enter(ctx, f, b));
        mpq_err err =
            f->ops->block(ctx, f->state, b, batch, f->act[cur], f->act[1 - cur], NULL, NULL);
        mpq_err e2 = mpq_family_block_leave(ctx, f, b);
        MPQ_CALL(err != MPQ_OK ? err : e2);
        cur = 1 - cur;
    }
    *which = cur;
    return MPQ_OK;
}

mpq_err mpq_family_forward(mpq_ctx *ctx, mpq_family *f, const mpq_batch *batch, float *logits) {
    int cur = 0;
    MPQ_CALL(run_blocks(ctx, f, batch, &cur));
    MPQ_CALL(f->ops->head(ctx, f->state, f->act[cur], batch->rows, logits));
    return MPQ_OK;
}

mpq_err mpq_family_forward_last(mpq_ctx *ctx, mpq_family *f, const mpq_batch *batch,
                                float *logits) {
    int cur = 0;
    MPQ_CALL(run_blocks(ctx, f, batch, &cur));
    int64_t w = f->ops->width(f->state, f->info.nblocks);
    int64_t row = 0;
    for (int64_t s = 0; s < batch->nseq; s++) {
        int64_t len = batch->len ? batch->len[s] : 1;
        MPQ_CHECK(len > 0, MPQ_ERR_ARG, "sequence %lld is empty", (long long)s);
        row += len;
        MPQ_CALL(f->ops->head(ctx, f->state, f->act[cur] + (row - 1) * w, 1,
                              logits + s * f->info.out_width));
    }
    return MPQ_OK;
}

mpq_err mpq_family_get_weight(mpq_ctx *ctx, mpq_family *f, int64_t layer, float *w) {
    MPQ_CHECK(layer >= 0 && layer < f->info.nlayers, MPQ_ERR_ARG,
              "layer %lld out of range [0, %lld)", (long long)layer, (long long)f->info.nlayers);
    MPQ_CALL(f->ops->get_weight(ctx, f->state, layer, w));
    return MPQ_OK;
}

mpq_err mpq_family_stored_tensor(mpq_ctx *ctx, mpq_family *f, const mpq_tensor *t, float **out,
                                 char *note, size_t len) {
    *out = NULL;
    if (len)
        note[0] = '\0';
    if (f->ops->stored_tensor)
        MPQ_CALL(f->ops->stored_tensor(ctx, f->state, t, out, note, len));
    return MPQ_OK;
}

mpq_err mpq_family_set_weight(mpq_ctx *ctx, mpq_family *f, int64_t layer, const float *w) {
    MPQ_CHECK(layer >= 0 && layer < f->info.nlayers, MPQ_ERR_ARG,
              "layer %lld out of range [0, %lld)", (long long)layer, (long long)f->info.nlayers);
    const mpq_layer_info *li = &f->info.layers[layer];
    MPQ_CHECK(w || f->ops->llama_layout, MPQ_ERR_ARG,
              "set_weight %s: family %s cannot release a substituted weight", li->name,
              f->ops->name);
    for (int64_t i = 0; w && i < li->out * li->in; i++)
        MPQ_CHECK(isfinite(w[i]), MPQ_ERR_NUMERIC, "set_weight %s: element %lld is not finite",
                  li->name, (long long)i);
    MPQ_CALL(f->ops->set_weight(ctx, f->state, layer, w));
    return MPQ_OK;
}

mpq_err mpq_family_set_bias_delta(mpq_ctx *ctx, mpq_family *f, int64_t layer, const float *delta) {
    MPQ_CHECK(layer >= 0 && layer < f->info.nlayers, MPQ_ERR_ARG,
              "layer %lld out of range [0, %lld)", (long long)layer, (long long)f->info.nlayers);
    const mpq_layer_info *li = &f->info.layers[layer];
    MPQ_CHECK(f->ops->set_bias_delta && li->bias_tensor[0], MPQ_ERR_ARG,
              "layer %s takes no output bias (family %s)", li->name, f->ops->name);
    for (int64_t i = 0; delta && i < li->out; i++)
        MPQ_CHECK(isfinite(delta[i]), MPQ_ERR_NUMERIC,
                  "bias correction of %s: element %lld is not finite", li->name, (long long)i);
    MPQ_CALL(f->ops->set_bias_delta(ctx, f->state, layer, delta));
    return MPQ_OK;
}

/* ---- shared kernels --------------------------------------------------------- */

void mpq_rmsnorm(float *out, const float *x, const float *w, int64_t rows, int64_t n, double eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++)
            ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / (double)n + eps));
        for (int64_t i = 0; i < n; i++)
            o[i] = w[i] * (inv * xr[i]);
    }
}

void mpq_im2col(const float *img, int64_t nimg, int64_t c, int64_t h, int64_t w, int64_t k_h,
                int64_t k_w, int64_t stride, int64_t padding, float *patches) {
    int64_t ho = (h + 2 * padding - k_h) / stride + 1;
    int64_t wo = (w + 2 * padding - k_w) / stride + 1;
    int64_t kcols = c * k_h * k_w;
    for (int64_t n = 0; n < nimg; n++) {
        const float *im = img + n * c * h * w;
        for (int64_t oy = 0; oy < ho; oy++)
            for (int64_t ox = 0; ox < wo; ox++) {
                float *row = patches + ((n * ho + oy) * wo + ox) * kcols;
                for (int64_t ch = 0; ch < c; ch++)
                    for (int64_t ky = 0; ky < k_h; ky++) {
                        int64_t iy = oy * stride - padding + ky;
                        float *dst = row + (ch * k_h + ky) * k_w;
                        if (iy < 0 || iy >= h) {
                            memset(dst, 0, sizeof(float) * (size_t)k_w);
                            continue;
                        }
                        const float *src = im + (ch * h + iy) * w;
                        for (int64_t kx = 0; kx < k_w; kx++) {
                            int64_t ix = ox * stride - padding + kx;
                            dst[kx] = ix < 0 || ix >= w ? 0.0f : src[ix];
                        }
                    }
            }
    }
}
