/* session_files.c: the files a command reads and writes (mpq_session.h):
 * the inputs the configuration names, the inputs a run reads, and the
 * check that no output replaces an input or another output. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "mpq_outfile.h"
#include "session_internal.h"

/* 1 when the configuration came from a file (mpq_config_parse of text in
 * memory names a source that need not exist). */
static int config_is_file(const mpq_config *cfg) {
    struct stat st;
    return cfg->text_len > 0 && stat(cfg->source, &st) == 0 && S_ISREG(st.st_mode);
}

/* Appends a set path; past MPQ_SESSION_MAX_FILES it counts without
 * storing, so that the caller sees the overflow (n > MPQ_SESSION_MAX_FILES). */
static void add_file(mpq_session_file *f, int64_t *n, const char *key, const char *path) {
    if (!path || !path[0])
        return;
    if (*n < MPQ_SESSION_MAX_FILES)
        f[*n] = (mpq_session_file){key, path};
    (*n)++;
}

const char *mpq_session_tokenizer(const mpq_config *cfg) {
    struct stat st;
    char json[4096];
    if (cfg->model.tokenizer[0] || stat(cfg->model.path, &st) != 0 || !S_ISDIR(st.st_mode))
        return cfg->model.tokenizer;
    snprintf(json, sizeof json, "%s/tokenizer.json", cfg->model.path);
    return stat(json, &st) == 0 && S_ISREG(st.st_mode) ? cfg->model.path : cfg->model.tokenizer;
}

int64_t mpq_session_named_inputs(const mpq_config *cfg, mpq_session_file *f) {
    int64_t n = 0;
    if (config_is_file(cfg))
        add_file(f, &n, "the configuration file", cfg->source);
    for (int i = 0; i < mpq_config_nkeys; i++) {
        const mpq_key_spec *k = &mpq_config_keys[i];
        if (k->type == MPQ_KEY_PATH)
            add_file(f, &n, k->key, *(char *const *)((const char *)cfg + k->offset));
    }
    return n;
}

int64_t mpq_session_read_inputs(const mpq_session *s, int evaluated, int mixed,
                                const char **paths) {
    const mpq_config *cfg = s->cfg;
    const int lm = s->info->task == MPQ_TASK_LM;
    mpq_session_file f[MPQ_SESSION_MAX_FILES];
    int64_t n = 0;
    if (config_is_file(cfg))
        add_file(f, &n, "the configuration file", cfg->source);
    add_file(f, &n, "model.path", cfg->model.path);
    if (lm)
        add_file(f, &n, "model.tokenizer", mpq_session_tokenizer(cfg));
    const mpq_calib_source *src = mpq_calib_source_find(cfg->calibration.source);
    if (src && src->input)
        add_file(f, &n, src->input_key, src->input(cfg));
    if (evaluated) {
        if (lm) {
            if (!mpq_session_eval_generated(cfg))
                add_file(f, &n, "eval.text", cfg->eval.text);
        } else {
            add_file(f, &n, "eval.images", cfg->eval.images);
            add_file(f, &n, "eval.labels", cfg->eval.labels);
        }
    }
    add_file(f, &n, "hessian.load", cfg->hessian.load);
    if (mixed)
        add_file(f, &n, "measure.load", cfg->measure.load);
    for (int64_t i = 0; i < n; i++)
        paths[i] = f[i].path;
    return n;
}

mpq_err mpq_session_check_output(mpq_ctx *ctx, const mpq_config *cfg, const mpq_session_file *out,
                                 const mpq_session_file *in, int64_t ni) {
    for (int64_t i = 0; i < ni; i++)
        MPQ_CHECK(!mpq_outfile_same_file(out->path, in[i].path), MPQ_ERR_CONFIG,
                  "%s: %s: '%s' is the same file as %s ('%s'); an output may not replace an input",
                  cfg->source, out->key, out->path, in[i].key, in[i].path);
    return MPQ_OK;
}

mpq_err mpq_session_check_files(mpq_ctx *ctx, const mpq_config *cfg, const mpq_session_opts *opts) {
    mpq_session_file in[MPQ_SESSION_MAX_FILES];
    const int64_t ni = mpq_session_named_inputs(cfg, in);
    MPQ_CHECK(ni <= MPQ_SESSION_MAX_FILES, MPQ_ERR_INTERNAL,
              "%lld input paths, more than MPQ_SESSION_MAX_FILES (%d): raise it", (long long)ni,
              MPQ_SESSION_MAX_FILES);
    const mpq_session_file *out = opts->outputs;
    for (int64_t o = 0; o < opts->noutputs; o++) {
        if (!out[o].path[0])
            continue;
        MPQ_CALL(mpq_session_check_output(ctx, cfg, &out[o], in, ni));
        for (int64_t j = 0; j < o; j++)
            MPQ_CHECK(!mpq_outfile_same_file(out[o].path, out[j].path), MPQ_ERR_CONFIG,
                      "%s: %s: '%s' is the same file as %s ('%s'); two outputs may not share a "
                      "file",
                      cfg->source, out[o].key, out[o].path, out[j].key, out[j].path);
    }
    if (opts->checkpoint && cfg->output.path[0]) {
        mpq_outfile_opts oo = {.overwrite = cfg->output.overwrite};
        MPQ_CALL(mpq_outfile_check(ctx, cfg->output.path, &oo));
    }
    return MPQ_OK;
}
