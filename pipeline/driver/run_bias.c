/* run_bias.c: the learned bias corrections (round.learn_bias) in the
 * checkpoint. A layer's correction is added to the tensor that holds its
 * output bias (mpq_layer_info.bias_tensor): the model's own values, or
 * what the family stores for it (a CNN's folded bias). A Llama model
 * without attention biases has no such tensors: the checkpoint then gains
 * them, for every q/k/v/o projection (the correction, or zeros where none
 * was learned), and its architecture says so (qkv_bias and o_bias), which
 * is the attention_bias variant that the Hugging Face and GGUF exports and
 * the loaders know. */
#include <stdio.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_log.h"
#include "run_internal.h"

int64_t mpq_run_bias_layer(const run_state *s, const char *name) {
    const mpq_session *ses = s->ses;
    for (int64_t l = 0; l < ses->nl; l++)
        if (s->res->layers[l].bias && strcmp(ses->info->layers[l].bias_tensor, name) == 0)
            return l;
    return -1;
}

mpq_err mpq_run_bias_values(mpq_ctx *ctx, const run_state *s, const mpq_tensor *t, int64_t l,
                            float **vals) {
    const mpq_run_layer *rl = &s->res->layers[l];
    MPQ_CHECK(t->numel == rl->rows, MPQ_ERR_FORMAT,
              "tensor '%s', the bias of layer %s, has %lld values, not %lld", t->name, rl->name,
              (long long)t->numel, (long long)rl->rows);
    if (!*vals) {
        MPQ_ALLOC(*vals, t->numel);
        mpq_err err = mpq_tensor_read_f32(ctx, t, 0, t->numel, *vals);
        if (err != MPQ_OK) {
            MPQ_FREE(*vals);
            return err;
        }
    }
    for (int64_t i = 0; i < t->numel; i++)
        (*vals)[i] += rl->bias[i];
    return MPQ_OK;
}

/* Is layer l's bias tensor one that the model lacks (the checkpoint adds
 * it)? */
static int added(const run_state *s, int64_t l) {
    const char *name = s->ses->info->layers[l].bias_tensor;
    return name[0] && !mpq_model_find(s->ses->m, name);
}

static int adds_any(const run_state *s) {
    for (int64_t l = 0; l < s->ses->nl; l++)
        if (s->res->layers[l].bias && added(s, l))
            return 1;
    return 0;
}

mpq_arch mpq_run_bias_arch(const run_state *s) {
    mpq_arch a = *mpq_model_arch(s->ses->m);
    if (adds_any(s))
        a.qkv_bias = a.o_bias = 1;
    return a;
}

mpq_err mpq_run_bias_write_added(mpq_ctx *ctx, const run_state *s, mpq_ckpt_writer *w) {
    if (!adds_any(s))
        return MPQ_OK;
    float *zeros = NULL;
    int64_t nz = 0, count = 0;
    for (int64_t l = 0; l < s->ses->nl; l++)
        nz = added(s, l) && s->res->layers[l].rows > nz ? s->res->layers[l].rows : nz;
    MPQ_CALL(mpq_agree(ctx, mpq_malloc(ctx, nz > 0 ? nz : 1, sizeof *zeros, (void **)&zeros)));
    memset(zeros, 0, (size_t)nz * sizeof *zeros);
    mpq_err err = MPQ_OK;
    for (int64_t l = 0; l < s->ses->nl && err == MPQ_OK; l++) {
        if (!added(s, l))
            continue;
        const mpq_run_layer *rl = &s->res->layers[l];
        mpq_tensor t = {.dtype = MPQ_DTYPE_F32,
                        .ndim = 1,
                        .shape = {rl->rows},
                        .numel = rl->rows,
                        .data = rl->bias ? rl->bias : zeros,
                        .nbytes = (size_t)rl->rows * sizeof(float)};
        snprintf(t.name, sizeof t.name, "%s", s->ses->info->layers[l].bias_tensor);
        err = mpq_ckpt_write_tensor_noted(ctx, w, &t, (int)(count++ % ctx->size),
                                          rl->bias ? "learned bias (round.learn_bias)"
                                                   : "bias added as zeros (round.learn_bias)");
    }
    mpq_free(zeros);
    MPQ_CALL(err);
    MPQ_INFO("checkpoint: %lld attention bias tensors added for the learned bias corrections "
             "(architecture now with q/k/v and o biases)",
             (long long)count);
    return MPQ_OK;
}
