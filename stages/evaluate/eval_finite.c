/* eval_finite.c: evaluation refuses non-finite numbers. A NaN or Inf in a
 * model's tensors, activations or logits would otherwise turn into an NLL
 * that is not finite, or into arg-maxes that are silently wrong (an
 * accuracy computed from logits of +Inf); these checks name the file and
 * the tensor, or the document or image, and the first stage whose output
 * went bad. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "eval_internal.h"
#include "mpq_coll.h"
#include "mpq_ctx.h"
#include "mpq_eval.h"
#include "mpq_model.h"

int64_t mpq_eval_first_nonfinite(const float *x, int64_t n) {
    /* Branch-free count first (vectorises; the common case is clean). */
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += !isfinite(x[i]);
    if (bad == 0)
        return -1;
    int64_t i = 0;
    while (isfinite(x[i]))
        i++;
    return i;
}

const char *mpq_eval_nonfinite_kind(float v) {
    return isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
}

void mpq_eval_block_name(const mpq_family *f, int64_t b, char *buf, size_t len) {
    const mpq_family_info *fi = mpq_family_get_info(f);
    if (b < 0) {
        snprintf(buf, len, "the embedding");
        return;
    }
    if (b >= fi->nblocks) {
        snprintf(buf, len, "the output head");
        return;
    }
    const char *first = NULL;
    size_t n = 0; /* length of the common prefix of the block's layer names */
    for (int64_t l = 0; l < fi->nlayers; l++) {
        const char *name = fi->layers[l].name;
        if (fi->layers[l].block != b)
            continue;
        if (!first) {
            first = name;
            n = strlen(name);
            continue;
        }
        size_t k = 0;
        while (k < n && first[k] == name[k])
            k++;
        n = k;
    }
    /* a block of several layers: cut at the last '.' of the common prefix */
    if (first && first[n] != '\0')
        while (n > 0 && first[n - 1] != '.')
            n--;
    while (first && n > 0 && first[n - 1] == '.')
        n--;
    if (!first || n == 0)
        snprintf(buf, len, "block %lld", (long long)b);
    else
        snprintf(buf, len, "block %lld (%.*s)", (long long)b, (int)n, first);
}

/* Local. The first non-finite value of x [rows][w] as an error naming the
 * stage, the image and the channel; MPQ_OK when every value is finite. */
static mpq_err image_check(mpq_ctx *ctx, mpq_family *f, int64_t b, const float *x, int64_t rows,
                           int64_t w, int64_t first, const char *images, const char *who) {
    const int64_t at = mpq_eval_first_nonfinite(x, rows * w);
    if (at < 0)
        return MPQ_OK;
    char stage[MPQ_TENSOR_NAME_MAX + 32];
    mpq_eval_block_name(f, b, stage, sizeof stage);
    return MPQ_ERROR(MPQ_ERR_NUMERIC,
                     "image %lld of %s: the output of %s of %s is not finite (%s at value %lld of "
                     "%lld): a weight is not finite or an activation overflows fp32",
                     (long long)(first + at / w), images, stage, who,
                     mpq_eval_nonfinite_kind(x[at]), (long long)(at % w), (long long)w);
}

mpq_err mpq_eval_locate_nonfinite(mpq_ctx *ctx, mpq_family *f, const mpq_batch *batch,
                                  int64_t first, const char *images, const char *who) {
    mpq_err err = MPQ_OK;
    const mpq_family_info *fi = mpq_family_get_info(f);
    float *x = NULL, *y = NULL, *t = NULL; /* [rows][widest activation] */
    int64_t wmax = fi->out_width, n = 0;
    for (int64_t b = 0; b <= fi->nblocks; b++)
        wmax = mpq_family_width(f, b) > wmax ? mpq_family_width(f, b) : wmax;
    MPQ_TRY(mpq_mul64(ctx, batch->rows, wmax, "activations", &n));
    MPQ_TRY(mpq_malloc_raw(ctx, n, sizeof *x, (void **)&x));
    MPQ_TRY(mpq_malloc_raw(ctx, n, sizeof *y, (void **)&y));
    MPQ_TRY(mpq_family_embed(ctx, f, batch, x));
    MPQ_TRY(image_check(ctx, f, -1, x, batch->rows, mpq_family_width(f, 0), first, images, who));
    for (int64_t b = 0; b < fi->nblocks; b++) {
        MPQ_TRY(mpq_family_block_enter(ctx, f, b));
        err = mpq_family_block(ctx, f, b, batch, x, y, NULL, NULL);
        mpq_err e2 = mpq_family_block_leave(ctx, f, b);
        MPQ_TRY(err != MPQ_OK ? err : e2);
        MPQ_TRY(
            image_check(ctx, f, b, y, batch->rows, mpq_family_width(f, b + 1), first, images, who));
        t = x;
        x = y;
        y = t;
    }
    MPQ_TRY(mpq_family_head(ctx, f, x, batch->rows, y));
    MPQ_TRY(image_check(ctx, f, fi->nblocks, y, batch->rows, fi->out_width, first, images, who));
    /* the whole pass gave non-finite logits, block by block it did not */
    err = MPQ_ERROR(MPQ_ERR_NUMERIC, "images %lld..%lld of %s: the logits of %s are not finite",
                    (long long)first, (long long)(first + batch->rows - 1), images, who);
cleanup:
    mpq_free(x);
    mpq_free(y);
    return err;
}

/* Local. Tensor t of the model: an error naming its file and name at its
 * first non-finite value, with the count. buf holds `chunk` floats. */
static mpq_err tensor_check(mpq_ctx *ctx, const mpq_tensor *t, float *buf, int64_t chunk) {
    int64_t bad = 0, first = -1;
    float fv = 0.0f;
    for (int64_t at = 0; at < t->numel; at += chunk) {
        const int64_t n = t->numel - at < chunk ? t->numel - at : chunk;
        MPQ_CALL(mpq_tensor_read_f32(ctx, t, at, n, buf));
        const int64_t i = mpq_eval_first_nonfinite(buf, n);
        if (i < 0)
            continue;
        if (first < 0) {
            first = at + i;
            fv = buf[i];
        }
        for (int64_t j = i; j < n; j++)
            bad += !isfinite(buf[j]);
    }
    if (bad == 0)
        return MPQ_OK;
    const int64_t cols = t->ndim >= 2 ? t->shape[t->ndim - 1] : 0;
    if (cols > 0)
        return MPQ_ERROR(MPQ_ERR_NUMERIC,
                         "%s: tensor '%s': %lld non-finite value%s (first: %s at [%lld][%lld] of "
                         "%lld x %lld)",
                         t->file ? t->file : "(model)", t->name, (long long)bad,
                         bad == 1 ? "" : "s", mpq_eval_nonfinite_kind(fv),
                         (long long)(first / cols), (long long)(first % cols),
                         (long long)(t->numel / cols), (long long)cols);
    return MPQ_ERROR(MPQ_ERR_NUMERIC,
                     "%s: tensor '%s': %lld non-finite value%s (first: %s at [%lld] of %lld)",
                     t->file ? t->file : "(model)", t->name, (long long)bad, bad == 1 ? "" : "s",
                     mpq_eval_nonfinite_kind(fv), (long long)first, (long long)t->numel);
}

mpq_err mpq_eval_check_model(mpq_ctx *ctx, const mpq_model *m) {
    enum { CHUNK = 1 << 16 };
    mpq_err err = MPQ_OK;
    float *buf = NULL;
    /* Tensor i is read by rank i mod size: every rank reads a share. The
     * error of the lowest failing rank is everyone's. */
    err = mpq_malloc_raw(ctx, CHUNK, sizeof *buf, (void **)&buf);
    for (int64_t i = ctx->rank; err == MPQ_OK && i < mpq_model_ntensors(m); i += ctx->size)
        err = tensor_check(ctx, mpq_model_tensor_at(m, i), buf, CHUNK);
    mpq_free(buf);
    return mpq_agree(ctx, err);
}
