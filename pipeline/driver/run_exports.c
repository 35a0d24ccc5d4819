/* run_exports.c: output.exports, the exports `mpquant run` writes from its
 * checkpoint once it is in place, so that one job goes from a model to the
 * files an inference engine loads. Every entry is checked before anything
 * is loaded: a known format, a destination that is no input, no other
 * output and (unless output.overwrite) no existing file. */
#include <stdio.h>
#include <string.h>

#include "mpq_ckpt.h"
#include "mpq_config.h"
#include "mpq_log.h"
#include "mpq_outfile.h"
#include "mpq_session.h"
#include "run_internal.h"

mpq_err mpq_run_exports_outputs(mpq_ctx *ctx, const mpq_config *cfg, mpq_session_file *out,
                                int64_t *n) {
    for (int64_t i = 0; i < cfg->output.exports.n; i++) {
        char where[256];
        const mpq_export_format *fmt = NULL;
        const char *path = NULL;
        snprintf(where, sizeof where, "%s: output.exports[%lld]", cfg->source, (long long)i);
        MPQ_CALL(mpq_export_entry_parse(ctx, where, cfg->output.exports.v[i], &fmt, &path));
        MPQ_CHECK(cfg->output.path[0], MPQ_ERR_CONFIG,
                  "%s: \"%s\" needs output.path: exports are written from the checkpoint", where,
                  cfg->output.exports.v[i]);
        if (!out)
            continue;
        mpq_outfile_opts oo = {.overwrite = cfg->output.overwrite};
        MPQ_CALL(mpq_outfile_check(ctx, path, &oo));
        out[(*n)++] = (mpq_session_file){"output.exports", path};
    }
    return MPQ_OK;
}

mpq_err mpq_run_write_exports(mpq_ctx *ctx, const mpq_config *cfg) {
    const char *tok = mpq_session_tokenizer(cfg);
    const mpq_export_opts o = {
        .overwrite = cfg->output.overwrite, .write_config = 1, .tokenizer = tok[0] ? tok : NULL};
    for (int64_t i = 0; i < cfg->output.exports.n; i++) {
        const mpq_export_format *fmt = NULL;
        const char *path = NULL;
        MPQ_CALL(
            mpq_export_entry_parse(ctx, "output.exports", cfg->output.exports.v[i], &fmt, &path));
        MPQ_CALL(mpq_export_run(ctx, cfg->output.path, fmt, path, &o, NULL));
        MPQ_INFO("export written: %s (%s)", path, fmt->name);
    }
    return MPQ_OK;
}
