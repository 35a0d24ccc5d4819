/* ckpt_export_run.c: an export as a step of a parallel command: rank 0
 * opens the model and writes it, every rank returns the agreed outcome
 * (`mpquant export`, and `mpquant run` with output.exports). */
#include <stdio.h>
#include <string.h>

#include "mpq_ckpt.h"
#include "mpq_coll.h"

mpq_err mpq_export_run(mpq_ctx *ctx, const char *in, const mpq_export_format *fmt, const char *out,
                       const mpq_export_opts *o, int64_t *ntensors) {
    mpq_err err = MPQ_OK;
    mpq_model *m = NULL;
    if (ntensors)
        *ntensors = 0;
    if (ctx->rank == 0) {
        err = mpq_model_open(ctx, in, "auto", &m);
        if (err == MPQ_OK)
            err = fmt->write(ctx, m, out, o);
        if (err == MPQ_OK && ntensors)
            *ntensors = mpq_model_ntensors(m);
        mpq_model_close(&m);
    }
    MPQ_CALL(mpq_agree(ctx, err));
    return MPQ_OK;
}

mpq_err mpq_export_entry_parse(mpq_ctx *ctx, const char *where, const char *entry,
                               const mpq_export_format **fmt, const char **path) {
    const char *colon = strchr(entry, ':');
    char name[64], names[256];
    mpq_registry_names(&mpq_export_format_reg, ", ", names, sizeof names);
    MPQ_CHECK(colon && colon > entry && colon[1], MPQ_ERR_CONFIG,
              "%s: \"%s\" is not FORMAT:PATH (formats: %s)", where, entry, names);
    const size_t n = (size_t)(colon - entry);
    MPQ_CHECK(n < sizeof name, MPQ_ERR_CONFIG, "%s: \"%s\": unknown export format (formats: %s)",
              where, entry, names);
    memcpy(name, entry, n);
    name[n] = '\0';
    *fmt = mpq_export_format_find(name);
    MPQ_CHECK(*fmt, MPQ_ERR_CONFIG, "%s: \"%s\": unknown export format '%s' (formats: %s)", where,
              entry, name, names);
    *path = colon + 1;
    return MPQ_OK;
}
