/* fuzz_model.h: invariants of a model that a reader accepted. Every tensor
 * must lie inside one of the model's mappings (so no crafted offset can
 * make later stages read outside the files), its byte count must match its
 * shape, and every element must convert to fp32 (reads every byte). */
#ifndef MPQ_FUZZ_MODEL_H
#define MPQ_FUZZ_MODEL_H

#include "fuzz_common.h"
#include "io_internal.h"
#include "mpq_model.h"

static inline void fuzz_check_model(fuzz_env *env, const mpq_model *m) {
    mpq_ctx *ctx = env->ctx;
    float buf[256];
    for (int64_t i = 0; i < mpq_model_ntensors(m); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        if (t->numel < 0 || t->ndim < 0 || t->ndim > MPQ_TENSOR_MAXDIM)
            fuzz_fail("tensor with a negative size or too many dimensions");
        if ((uint64_t)t->numel * mpq_dtype_size(t->dtype) != t->nbytes)
            fuzz_fail("tensor byte count differs from numel * dtype size");
        int inside = 0;
        for (int64_t k = 0; k < m->nmaps && !inside; k++) {
            const unsigned char *b = m->maps[k]->base, *p = t->data;
            inside = t->nbytes == 0 || (p >= b && p <= b + m->maps[k]->size &&
                                        t->nbytes <= (size_t)(b + m->maps[k]->size - p));
        }
        if (!inside)
            fuzz_fail("tensor data outside every mapping");
        if (mpq_model_find(m, t->name) != t)
            fuzz_fail("tensor names not unique");
        /* Reading is cheap for fuzz-sized inputs; cap it all the same. */
        int64_t limit = t->numel < (1 << 16) ? t->numel : (1 << 16);
        for (int64_t j = 0; j < limit; j += 256) {
            int64_t n = limit - j < 256 ? limit - j : 256;
            if (mpq_tensor_read_f32(ctx, t, j, n, buf) != MPQ_OK)
                fuzz_fail("reading an accepted tensor failed");
        }
    }
    /* Tensors of dtypes no model computes with are listed apart and never
     * handed out. */
    for (int64_t i = 0; i < mpq_model_nforeign(m); i++) {
        const mpq_foreign_tensor *f = mpq_model_foreign_at(m, i);
        const mpq_tensor *t = NULL;
        if (f->ndim < 0 || f->ndim > MPQ_TENSOR_MAXDIM || !f->dtype[0] || !f->name[0])
            fuzz_fail("foreign tensor with a bad shape, dtype or name");
        if (mpq_model_find(m, f->name))
            fuzz_fail("a name is both a tensor and a foreign tensor");
        if (mpq_model_get(ctx, m, f->name, 0, NULL, &t) == MPQ_OK || t)
            fuzz_fail("a tensor of a foreign dtype was handed out");
        mpq_err_clear(ctx);
    }
}

#endif
