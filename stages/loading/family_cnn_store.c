/* family_cnn_store.c: what a checkpoint stores for the sequential CNN
 * family (family_cnn.c): the tensors of a batch norm folded into a conv or
 * linear op (the folded weight and bias, the batch norm as an identity that
 * folds again exactly), and which tensor holds each quantizable layer's
 * output bias (mpq_layer_info.bias_tensor, where a learned bias correction,
 * round.learn_bias, goes). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "family_cnn_internal.h"
#include "mpq_config.h"
#include "mpq_ctx.h"

void mpq_cnn_bias_tensor(const cnn_op *o, char *name, size_t len) {
    const char *bias = mpq_op_get(o->cfg, "bias")->s;
    /* Without a bias tensor of its own, a folded batch norm's beta holds
     * the folded bias (mpq_cnn_stored_tensor). */
    if (!bias[0] && o->bn)
        bias = mpq_op_get(o->bn, "bias")->s;
    snprintf(name, len, "%s", bias);
}

/* The variance that makes a batch norm of gamma 1, beta 0, mean 0 fold as
 * exactly 1: bn_affine's (family_cnn.c) float(1 / sqrt(var + eps)) == 1.0f. */
static mpq_err bn_unit_var(mpq_ctx *ctx, const cnn *C, const cnn_op *o, float *var) {
    const double eps = mpq_op_get(o->bn, "eps")->f;
    const float v = (float)(1.0 - eps), up = nextafterf(v, INFINITY), dn = nextafterf(v, -INFINITY);
    const float cand[5] = {v, up, dn, nextafterf(up, INFINITY), nextafterf(dn, -INFINITY)};
    for (int k = 0; k < 5; k++)
        if ((double)cand[k] + eps > 0.0 && (float)(1.0 / sqrt((double)cand[k] + eps)) == 1.0f) {
            *var = cand[k];
            return MPQ_OK;
        }
    return MPQ_ERROR(MPQ_ERR_NUMERIC,
                     "%s:%d: model.cnn: batchnorm eps %g: no float variance folds as exactly 1",
                     C->src, o->bn->line, eps);
}

/* What a checkpoint stores for plain tensor t where a batch norm was folded
 * into a conv/linear op, whose weight (quantized) is the folded one: the
 * op's folded weight and bias, and the batch norm as the identity that
 * folds again exactly (gamma 1, mean 0, the variance of bn_unit_var, beta
 * 0, or the folded bias when the op has no bias tensor). A reader that
 * folds it as this family does gets the same weights and biases bit for
 * bit. *out [t->numel] (caller: mpq_free); NULL: t is stored as is. note
 * [len]: the tensor's `folded` attribute. */
mpq_err mpq_cnn_stored_tensor(mpq_ctx *ctx, void *state, const mpq_tensor *t, float **out,
                              char *note, size_t len) {
    cnn *C = state;
    *out = NULL;
    for (int64_t i = 0; i < C->nops; i++) {
        const cnn_op *o = &C->ops[i];
        if (!o->bn)
            continue;
        const char *bias = mpq_op_get(o->cfg, "bias")->s;
        static const char *const bn_fields[] = {"weight", "bias", "mean", "var"};
        int f = -1;
        for (int k = 0; k < 4 && f < 0; k++)
            if (strcmp(t->name, mpq_op_get(o->bn, bn_fields[k])->s) == 0)
                f = k;
        const int64_t nw = o->co * o->ci * o->k * o->k;
        const float *src = NULL;
        float fill = 0.0f;
        if (strcmp(t->name, mpq_op_get(o->cfg, "weight")->s) == 0)
            src = o->w;
        else if ((bias[0] && strcmp(t->name, bias) == 0) || (f == 1 && !bias[0]))
            src = o->b;
        else if (f == 0)
            fill = 1.0f;
        else if (f == 3)
            MPQ_CALL(bn_unit_var(ctx, C, o, &fill));
        else if (f < 0)
            continue;
        MPQ_CHECK(t->numel == (src == o->w ? nw : o->co), MPQ_ERR_INTERNAL,
                  "model.cnn: tensor '%s' has %lld values", t->name, (long long)t->numel);
        MPQ_ALLOC(*out, t->numel);
        for (int64_t j = 0; j < t->numel; j++)
            (*out)[j] = src ? src[j] : fill;
        const char *wname = mpq_op_get(o->cfg, "weight")->s;
        if (f >= 0)
            snprintf(note, len, "batch norm folded into %s: stored as the identity%s", wname,
                     src ? ", its bias the folded bias" : "");
        else
            snprintf(note, len, "%s with batch norm %s folded in", src == o->w ? "weight" : "bias",
                     mpq_op_get(o->bn, "weight")->s);
        return MPQ_OK;
    }
    return MPQ_OK;
}
