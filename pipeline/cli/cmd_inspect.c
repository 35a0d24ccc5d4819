/* cmd_inspect.c: `mpquant inspect FILE`: what a model or data file holds:
 * format, family, architecture, every tensor (name, dtype, shape, numel) and
 * the parameter count; IDX files show their shape.
 *
 * Every rank opens the file (the readers are local and map it read-only), so
 * that a file one rank cannot read fails the command on every rank through
 * the error agreement in main; rank 0 prints. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "mpq_infile.h"
#include "mpq_ckpt.h"
#include "mpq_cli.h"
#include "mpq_family.h"
#include "mpq_idx.h"
#include "mpq_model.h"
#include "mpq_model_format.h"
#include "mpq_tokenizer.h"

/* An IDX file starts with 0x00 0x00 0x08 and a dimension count of 1 to 4. */
static int idx_probe(const char *path) {
    unsigned char h[4] = {0};
    FILE *f = mpq_infile_stream(path);
    if (!f)
        return 0;
    size_t n = fread(h, 1, sizeof h, f);
    fclose(f);
    return n == 4 && h[0] == 0 && h[1] == 0 && h[2] == 0x08 && h[3] >= 1 && h[3] <= MPQ_IDX_MAXDIM;
}

static void shape_text(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && used < len; d++)
        used +=
            (size_t)snprintf(buf + used, len - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

static cJSON *shape_json(int ndim, const int64_t *shape) {
    cJSON *a = cJSON_CreateArray();
    for (int d = 0; d < ndim; d++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)shape[d]));
    return a;
}

static mpq_err inspect_idx(mpq_ctx *ctx, const mpq_cli *cli, const char *path) {
    mpq_idx *x = NULL;
    MPQ_CALL(mpq_idx_open(ctx, path, &x));
    const char *kind = x->ndim == 3 ? "images" : x->ndim == 1 ? "labels" : "array";
    char shp[128];
    shape_text(x->ndim, x->dims, shp, sizeof shp);
    if (ctx->rank == 0) {
        printf("file:    %s\n", path);
        printf("format:  idx (unsigned bytes, %d dimension%s)\n", x->ndim, x->ndim == 1 ? "" : "s");
        printf("content: %s, %lld items, shape %s, %lld bytes\n", kind, (long long)x->dims[0], shp,
               (long long)x->numel);
        fflush(stdout);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "command", "inspect");
    cJSON_AddStringToObject(o, "path", path);
    cJSON_AddStringToObject(o, "format", "idx");
    cJSON_AddStringToObject(o, "content", kind);
    cJSON_AddNumberToObject(o, "items", (double)x->dims[0]);
    cJSON_AddItemToObject(o, "shape", shape_json(x->ndim, x->dims));
    cJSON_AddNumberToObject(o, "numel", (double)x->numel);
    mpq_cli_emit_json(ctx, cli, o);
    mpq_idx_close(&x);
    return MPQ_OK;
}

/* ---- the Llama architecture, printed and as JSON --------------------------- */

void mpq_cli_arch_print(const mpq_arch *a) {
    printf("architecture: dim %lld, hidden_dim %lld, n_layers %lld, n_heads %lld, "
           "n_kv_heads %lld, head_dim %lld, vocab_size %lld, seq_len %lld\n",
           (long long)a->dim, (long long)a->hidden_dim, (long long)a->n_layers,
           (long long)a->n_heads, (long long)a->n_kv_heads, (long long)a->head_dim,
           (long long)a->vocab_size, (long long)a->seq_len);
    printf("              norm_eps %g, rope_theta %g, rope %s, tied_embeddings %s, "
           "qkv_bias %s, o_bias %s\n",
           a->norm_eps, a->rope_theta, a->rope_interleaved ? "interleaved" : "half-rotation",
           a->tied_embeddings ? "yes" : "no", a->qkv_bias ? "yes" : "no", a->o_bias ? "yes" : "no");
    if (a->rope_scaling == MPQ_ROPE_LINEAR || a->rope_scaling == MPQ_ROPE_DYNAMIC)
        printf("              rope_scaling %s, factor %g\n", mpq_rope_scaling_name(a->rope_scaling),
               a->rope_factor);
    else if (a->rope_scaling == MPQ_ROPE_LLAMA3)
        printf("              rope_scaling llama3, factor %g, low_freq_factor %g, "
               "high_freq_factor %g, original_max_position_embeddings %lld\n",
               a->rope_factor, a->rope_low_freq, a->rope_high_freq, (long long)a->rope_orig_max);
}

void mpq_cli_arch_json(const mpq_arch *a, cJSON *parent) {
    cJSON *j = cJSON_AddObjectToObject(parent, "arch");
    cJSON_AddNumberToObject(j, "dim", (double)a->dim);
    cJSON_AddNumberToObject(j, "hidden_dim", (double)a->hidden_dim);
    cJSON_AddNumberToObject(j, "n_layers", (double)a->n_layers);
    cJSON_AddNumberToObject(j, "n_heads", (double)a->n_heads);
    cJSON_AddNumberToObject(j, "n_kv_heads", (double)a->n_kv_heads);
    cJSON_AddNumberToObject(j, "head_dim", (double)a->head_dim);
    cJSON_AddNumberToObject(j, "vocab_size", (double)a->vocab_size);
    cJSON_AddNumberToObject(j, "seq_len", (double)a->seq_len);
    cJSON_AddNumberToObject(j, "norm_eps", a->norm_eps);
    cJSON_AddNumberToObject(j, "rope_theta", a->rope_theta);
    cJSON_AddBoolToObject(j, "rope_interleaved", a->rope_interleaved);
    cJSON_AddBoolToObject(j, "tied_embeddings", a->tied_embeddings);
    cJSON_AddBoolToObject(j, "qkv_bias", a->qkv_bias);
    cJSON_AddBoolToObject(j, "o_bias", a->o_bias);
    mpq_rope_scaling_json(a, j);
}

/* 1 when m's family keeps its hyper-parameters in mpq_arch (printed). */
static int has_llama_arch(const mpq_model *m) {
    const mpq_family_ops *fam = mpq_family_of_model(m);
    return fam && fam->llama_layout;
}

static void print_model(const mpq_model *m) {
    const mpq_arch *a = mpq_model_arch(m);
    printf("file:    %s\n", mpq_model_path(m));
    printf("format:  %s\n", a->format);
    printf("family:  %s%s%s%s\n", a->family[0] ? a->family : "(none: plain tensor container)",
           a->model_type[0] ? " (" : "", a->model_type, a->model_type[0] ? ")" : "");
    if (has_llama_arch(m)) {
        mpq_cli_arch_print(a);
    }
    int64_t n = mpq_model_ntensors(m), params = 0;
    size_t wname = 4;
    for (int64_t i = 0; i < n; i++) {
        size_t l = strlen(mpq_model_tensor_at(m, i)->name);
        wname = l > wname ? l : wname;
    }
    const int64_t nf = mpq_model_nforeign(m);
    for (int64_t i = 0; i < nf; i++) {
        size_t l = strlen(mpq_model_foreign_at(m, i)->name);
        wname = l > wname ? l : wname;
    }
    printf("tensors: %lld\n", (long long)n);
    printf("  %-*s  %-5s  %-20s  %12s\n", (int)wname, "name", "dtype", "shape", "numel");
    for (int64_t i = 0; i < n; i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        char shp[128];
        shape_text(t->ndim, t->shape, shp, sizeof shp);
        printf("  %-*s  %-5s  %-20s  %12lld\n", (int)wname, t->name, mpq_dtype_name(t->dtype), shp,
               (long long)t->numel);
        params += t->numel;
    }
    printf("parameters: %lld\n", (long long)params);
    /* Tensors of dtypes no model computes with (a batch norm's I64
     * num_batches_tracked): listed apart, outside the parameter count. */
    if (nf > 0)
        printf("unused:  %lld (dtypes the model cannot compute with; an error if it uses one)\n",
               (long long)nf);
    for (int64_t i = 0; i < nf; i++) {
        const mpq_foreign_tensor *t = mpq_model_foreign_at(m, i);
        char shp[128];
        shape_text(t->ndim, t->shape, shp, sizeof shp);
        printf("  %-*s  %-5s  %s\n", (int)wname, t->name, t->dtype, shp);
    }
}

static cJSON *model_json(const mpq_model *m) {
    const mpq_arch *a = mpq_model_arch(m);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "command", "inspect");
    cJSON_AddStringToObject(o, "path", mpq_model_path(m));
    cJSON_AddStringToObject(o, "format", a->format);
    cJSON_AddStringToObject(o, "family", a->family);
    cJSON_AddStringToObject(o, "model_type", a->model_type);
    if (has_llama_arch(m)) {
        mpq_cli_arch_json(a, o);
    }
    cJSON *ts = cJSON_AddArrayToObject(o, "tensors");
    int64_t params = 0;
    for (int64_t i = 0; i < mpq_model_ntensors(m); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", t->name);
        cJSON_AddStringToObject(e, "dtype", mpq_dtype_name(t->dtype));
        cJSON_AddItemToObject(e, "shape", shape_json(t->ndim, t->shape));
        cJSON_AddNumberToObject(e, "numel", (double)t->numel);
        cJSON_AddItemToArray(ts, e);
        params += t->numel;
    }
    cJSON_AddNumberToObject(o, "n_tensors", (double)mpq_model_ntensors(m));
    cJSON_AddNumberToObject(o, "parameters", (double)params);
    cJSON *us = cJSON_AddArrayToObject(o, "unused_tensors");
    for (int64_t i = 0; i < mpq_model_nforeign(m); i++) {
        const mpq_foreign_tensor *t = mpq_model_foreign_at(m, i);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", t->name);
        cJSON_AddStringToObject(e, "dtype", t->dtype);
        cJSON_AddItemToObject(e, "shape", shape_json(t->ndim, t->shape));
        cJSON_AddItemToArray(us, e);
    }
    return o;
}

/* Entries of a llama2.c tokenizer file (int32 max_token_length, then per
 * token: float score, int32 length in 0..max_token_length, the bytes) that
 * end exactly at the end of the file, by the rules of the loader
 * (mpq_tokenizer_load); -1 when the file is not one, with the reason in
 * why[len] (as the loader words it). Local. */
static int64_t tokenizer_entries(const char *path, char *why, size_t len) {
    FILE *f = mpq_infile_stream(path);
    snprintf(why, len, "cannot open it");
    if (!f)
        return -1;
    int32_t maxlen = 0, n = 0;
    float score;
    int64_t id = 0, pos = 4, size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    int ok = size >= 4 && fseek(f, 0, SEEK_SET) == 0 && fread(&maxlen, sizeof maxlen, 1, f) == 1;
    if (!ok)
        snprintf(why, len, "truncated: %lld bytes, no max_token_length", (long long)size);
    else if (maxlen <= 0 || maxlen > size)
        snprintf(why, len,
                 "max_token_length = %d must be positive and at most the file size "
                 "(%lld bytes)",
                 (int)maxlen, (long long)size);
    ok = ok && maxlen > 0 && maxlen <= size;
    for (; ok && pos < size; id++) {
        ok = size - pos >= 8 && fread(&score, sizeof score, 1, f) == 1 &&
             fread(&n, sizeof n, 1, f) == 1;
        if (!ok) {
            snprintf(why, len,
                     "truncated at token %lld (offset %lld): %lld bytes left, an "
                     "entry takes at least 8",
                     (long long)id, (long long)pos, (long long)(size - pos));
            break;
        }
        pos += 8;
        if (n < 0 || n > maxlen)
            snprintf(why, len, "token %lld has length %d outside [0, max_token_length = %d]",
                     (long long)id, (int)n, (int)maxlen);
        else if (size - pos < n)
            snprintf(why, len, "truncated inside token %lld (%d bytes announced, %lld left)",
                     (long long)id, (int)n, (long long)(size - pos));
        ok = n >= 0 && n <= maxlen && size - pos >= n && fseek(f, n, SEEK_CUR) == 0;
        pos += ok ? n : 0;
    }
    fclose(f);
    if (ok && id == 0)
        snprintf(why, len, "no token after max_token_length");
    return ok && id > 0 ? id : -1;
}

/* A Hugging Face tokenizer as mpq_tokenizer_load tells it: a directory, a
 * *.json file, or a file opening a JSON object ('{' then '"' or '}'). */
/* --format=tokenizer on a Hugging Face tokenizer: the loader's reasons. Its
 * ids are bounded by no model here. */
static mpq_err inspect_hf_tokenizer(mpq_ctx *ctx, const mpq_cli *cli, const char *path) {
    mpq_tokenizer *tok = NULL;
    MPQ_CALL(mpq_tokenizer_load(ctx, path, INT32_MAX, &tok));
    const int64_t n = mpq_tokenizer_vocab_size(tok);
    if (ctx->rank == 0) {
        printf("file:    %s\nformat:  Hugging Face tokenizer (%s%s)\n", path,
               mpq_tokenizer_kind_name(tok), mpq_tokenizer_byte_level(tok) ? ", byte-level" : "");
        printf("vocab:   %lld ids, bos %d, eos %d, add_bos %s\n", (long long)n,
               (int)mpq_tokenizer_bos(tok), (int)mpq_tokenizer_eos(tok),
               mpq_tokenizer_add_bos(tok) ? "yes" : "no");
        fflush(stdout);
    }
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "command", "inspect");
        cJSON_AddStringToObject(o, "path", path);
        cJSON_AddStringToObject(o, "format", "tokenizer");
        cJSON_AddStringToObject(o, "kind", mpq_tokenizer_kind_name(tok));
        cJSON_AddNumberToObject(o, "vocab_size", (double)n);
    }
    mpq_tokenizer_destroy(&tok);
    MPQ_CHECK(o, MPQ_ERR_NOMEM, "cannot allocate the JSON result");
    mpq_cli_emit_json(ctx, cli, o);
    return MPQ_OK;
}

static mpq_err inspect_tokenizer(mpq_ctx *ctx, const mpq_cli *cli, const char *path) {
    if (mpq_tokenizer_looks_hf(path))
        return inspect_hf_tokenizer(ctx, cli, path);
    char why[160];
    int64_t n = tokenizer_entries(path, why, sizeof why);
    mpq_tokenizer *tok = NULL;
    MPQ_CHECK(n > 0, MPQ_ERR_FORMAT, "%s: not a llama2.c tokenizer file: %s", path, why);
    MPQ_CALL(mpq_tokenizer_load(ctx, path, n, &tok));
    if (ctx->rank == 0) {
        printf("file:    %s\nformat:  llama2.c tokenizer\n", path);
        printf("vocab:   %lld tokens, longest %lld bytes\n", (long long)n,
               (long long)mpq_tokenizer_max_token_length(tok));
        printf("  id     score  token\n");
        for (int32_t id = 0; id < n && id < 12; id++) {
            size_t len = 0;
            const char *t = mpq_tokenizer_token(tok, id, &len);
            printf("  %-5d %7.2f  '", (int)id, (double)mpq_tokenizer_score(tok, id));
            for (size_t i = 0; i < len; i++)
                putchar(t[i] >= 32 && t[i] < 127 ? t[i] : '?');
            printf("'\n");
        }
        if (n > 12)
            printf("  ...\n");
        fflush(stdout);
    }
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "command", "inspect");
        cJSON_AddStringToObject(o, "path", path);
        cJSON_AddStringToObject(o, "format", "tokenizer");
        cJSON_AddNumberToObject(o, "vocab_size", (double)n);
        cJSON_AddNumberToObject(o, "max_token_length", (double)mpq_tokenizer_max_token_length(tok));
    }
    mpq_tokenizer_destroy(&tok);
    MPQ_CHECK(o, MPQ_ERR_NOMEM, "cannot allocate the JSON result");
    mpq_cli_emit_json(ctx, cli, o);
    return MPQ_OK;
}

static mpq_err inspect_model(mpq_ctx *ctx, const mpq_cli *cli, const char *path,
                             const char *format) {
    mpq_model *m = NULL;
    MPQ_CALL(mpq_model_open(ctx, path, format, &m));
    if (ctx->rank == 0) {
        print_model(m);
        fflush(stdout);
    }
    mpq_cli_emit_json(ctx, cli, model_json(m));
    mpq_model_close(&m);
    return MPQ_OK;
}

/* ---- what inspect reads besides models ----------------------------------------- */

/* A kind of file `inspect` describes itself rather than as a model: --format
 * NAME picks it; with --format auto, the ones with a `probe` are tried in
 * order before the model formats and the ones with a `fallback` after a
 * model fails to open. */
typedef struct inspector {
    const char *name;
    int (*probe)(const char *path);
    int (*fallback)(const char *path);
    mpq_err (*run)(mpq_ctx *ctx, const mpq_cli *cli, const char *path);
} inspector;

/* A llama2.c tokenizer is recognised by its structure. */
static int tokenizer_probe(const char *path) {
    char why[160];
    return tokenizer_entries(path, why, sizeof why) > 0;
}

static const inspector inspect_idx_entry = {.name = "idx", .probe = idx_probe, .run = inspect_idx};
/* An mpquant checkpoint gets its summary (layers, specs, provenance), not
 * the model view of its dequantized tensors. */
static const inspector inspect_ckpt_entry = {
    .name = "mpqckpt", .probe = mpq_ckpt_probe, .run = mpq_cmd_inspect_ckpt};
static const inspector inspect_tokenizer_entry = {
    .name = "tokenizer", .fallback = tokenizer_probe, .run = inspect_tokenizer};

static const inspector *const inspectors[] = {&inspect_idx_entry, &inspect_ckpt_entry,
                                              &inspect_tokenizer_entry, NULL};

static const char *inspector_name_at(int64_t i) {
    return inspectors[i] ? inspectors[i]->name : NULL;
}

static const mpq_registry inspector_reg = {.what = "file kind", .name_at = inspector_name_at};

mpq_err mpq_cmd_inspect(mpq_ctx *ctx, const mpq_cli *cli) {
    const char *path = cli->pos[0];
    const char *format = mpq_cli_opt(cli, "format");
    if (!format || !*format)
        format = mpq_model_format_reg.also;
    /* Anything but a model directory must be a regular file: a FIFO or a
     * device is refused here, before any probe reads it. */
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode))
        MPQ_CALL(mpq_infile_check(ctx, path, NULL));
    int64_t k = mpq_registry_index(&inspector_reg, format);
    if (k >= 0)
        return inspectors[k]->run(ctx, cli, path);
    const int detect = strcmp(format, mpq_model_format_reg.also) == 0;
    if (!detect && mpq_registry_index(&mpq_model_format_reg, format) < 0) {
        /* Known: the model formats, then the other kinds of file. */
        char known[512];
        size_t used = strlen(mpq_registry_names(&mpq_model_format_reg, ", ", known, sizeof known));
        for (int i = 0; inspectors[i] && used < sizeof known; i++)
            if (mpq_registry_index(&mpq_model_format_reg, inspectors[i]->name) < 0)
                used += (size_t)snprintf(known + used, sizeof known - used, ", %s",
                                         inspectors[i]->name);
        return MPQ_ERROR(MPQ_ERR_ARG, "inspect: unknown --format '%s' (known: %s)", format, known);
    }
    for (int i = 0; detect && inspectors[i]; i++)
        if (inspectors[i]->probe && inspectors[i]->probe(path))
            return inspectors[i]->run(ctx, cli, path);
    mpq_err e = inspect_model(ctx, cli, path, format);
    for (int i = 0; e != MPQ_OK && detect && inspectors[i]; i++)
        if (inspectors[i]->fallback && inspectors[i]->fallback(path)) {
            mpq_err_clear(ctx);
            return inspectors[i]->run(ctx, cli, path);
        }
    MPQ_CALL(e);
    return MPQ_OK;
}
