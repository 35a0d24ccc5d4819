/* test_ckpt_util.c: see test_ckpt_util.h. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "mpq_coll.h"
#include "test_ckpt_util.h"

/* A mix that exercises zero-points, short last groups (172 columns),
 * per-channel scales, channel signs and a per-tensor fp32. */
const char *const ckpt_specs[] = {"int:bits=4,group=32", "nf4:group=64",
                                  "int:bits=8,sym=true,gran=channel", "signed_binary", "nvfp4"};
const int ckpt_nspecs = (int)(sizeof ckpt_specs / sizeof ckpt_specs[0]);

void ckpt_fixture_free(ckpt_fixture *fx) {
    for (int64_t i = 0; i < fx->n; i++)
        mpq_qlayer_destroy(&fx->qlayers[i]);
    mpq_free(fx->qlayers);
    mpq_free(fx->descs);
    mpq_free(fx->owners);
    mpq_free(fx->names);
    memset(fx, 0, sizeof *fx);
}

mpq_err ckpt_fixture_build(mpq_ctx *ctx, mpq_family *f, ckpt_fixture *fx) {
    mpq_err err = MPQ_OK;
    float *w = NULL;
    memset(fx, 0, sizeof *fx);
    const mpq_family_info *fi = mpq_family_get_info(f);
    MPQ_ALLOC_TRY(fx->descs, fi->nlayers);
    MPQ_ALLOC_TRY(fx->qlayers, fi->nlayers);
    MPQ_ALLOC_TRY(fx->owners, fi->nlayers);
    MPQ_ALLOC_TRY(fx->names, fi->nlayers);
    for (int64_t i = 0; i < fi->nlayers; i++) {
        if (i % 5 == 4)
            continue;
        const mpq_layer_info *li = &fi->layers[i];
        int64_t k = fx->n++;
        snprintf(fx->names[k], MPQ_TENSOR_NAME_MAX, "%s", li->tensor);
        fx->descs[k].tensor = fx->names[k];
        fx->descs[k].method = "rtn";
        fx->descs[k].loss = NAN;
        fx->owners[k] = (int)(i % ctx->size);
        if (fx->owners[k] != ctx->rank)
            continue;
        mpq_qspec spec;
        MPQ_TRY(mpq_qspec_parse(ctx, ckpt_specs[i % ckpt_nspecs], &spec));
        MPQ_TRY(mpq_realloc(ctx, 0, li->out * li->in, sizeof *w, (void **)&w));
        MPQ_TRY(mpq_family_get_weight(ctx, f, i, w));
        MPQ_TRY(mpq_qlayer_create(ctx, &spec, li->out, li->in, &fx->qlayers[k]));
        MPQ_TRY(mpq_qlayer_quantize(ctx, fx->qlayers[k], w, NULL));
        fx->descs[k].loss = mpq_quant_error(fx->qlayers[k]->params, w, NULL);
        MPQ_FREE(w);
    }
cleanup:
    mpq_free(w);
    err = mpq_agree(ctx, err);
    /* The losses are the owners' numbers: share them so that descs are
     * the same everywhere (only the owner's desc is written anyway). */
    for (int64_t k = 0; err == MPQ_OK && k < fx->n; k++)
        if (MPI_Bcast(&fx->descs[k].loss, 1, MPI_DOUBLE, fx->owners[k], ctx->comm) != MPI_SUCCESS)
            err = MPQ_ERROR(MPQ_ERR_MPI, "broadcast of a loss failed");
    if (err != MPQ_OK)
        ckpt_fixture_free(fx);
    return err;
}

mpq_err ckpt_fixture_write(mpq_ctx *ctx, const mpq_model *m, const ckpt_fixture *fx,
                           const char *path, int overwrite, const char *date, const char *times,
                           int64_t kill_after) {
    mpq_err err = MPQ_OK;
    mpq_ckpt_writer *w = NULL;
    const char *inputs[] = {mpq_model_path(m)};
    MPQ_CALL(mpq_ckpt_writer_create(ctx, path, overwrite, inputs, 1, &w));
    MPQ_TRY(mpq_ckpt_write_arch(ctx, w, mpq_model_arch(m)));
    if (kill_after < 0) {
        MPQ_TRY(mpq_ckpt_write_model(ctx, w, m, fx->n, fx->descs,
                                     (const mpq_qlayer *const *)fx->qlayers, fx->owners));
    } else {
        /* The same walk as mpq_ckpt_write_model, with a crash in the middle. */
        for (int64_t i = 0; i < mpq_model_ntensors(m); i++) {
            if (i == kill_after) {
                MPI_Barrier(ctx->comm);
                if (ctx->rank == 0)
                    raise(SIGKILL);
                MPI_Barrier(ctx->comm); /* the others wait to be killed by mpirun */
            }
            const mpq_tensor *t = mpq_model_tensor_at(m, i);
            int64_t j = 0;
            while (j < fx->n && strcmp(fx->descs[j].tensor, t->name) != 0)
                j++;
            if (j < fx->n)
                MPQ_TRY(mpq_ckpt_write_layer(ctx, w, &fx->descs[j], fx->qlayers[j], fx->owners[j]));
            else
                MPQ_TRY(mpq_ckpt_write_tensor(ctx, w, t, (int)(i % ctx->size)));
        }
    }
    char assignment[256];
    snprintf(assignment, sizeof assignment, "{\"layers\": %lld, \"specs\": %d}", (long long)fx->n,
             ckpt_nspecs);
    mpq_ckpt_provenance p = {
        .config = "# test configuration\nmodel = { path = \"stories260K.bin\"; };\n",
        .date = date,
        .stage_times = times,
        .eval = "{\"ppl\": 0}",
        .assignment = assignment,
    };
    MPQ_TRY(mpq_ckpt_write_provenance(ctx, w, &p));
    MPQ_TRY(mpq_ckpt_commit(ctx, &w));
cleanup:
    mpq_ckpt_abort(ctx, &w);
    return err;
}
