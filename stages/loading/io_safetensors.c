/* io_safetensors.c: safetensors checkpoints, single-file or sharded, with
 * an optional Hugging Face config.json describing a Llama-family model.
 *
 * File layout: uint64 LE header length N, N bytes of JSON
 *   {"__metadata__": {...}, "name": {"dtype": "F32", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * then the data section; offsets are relative to its start. Every tensor is
 * checked: dtype known, end - begin == numel * dtype size, and the
 * tensors tile the data section exactly (sorted, no overlap, no gap, no
 * trailing bytes), as the reference implementation requires. Tensors of
 * dtypes other than F32/F16/BF16 (I64, U8, ...) are checked alike and kept
 * aside (mpq_foreign_tensor): only a model that uses one is refused.
 *
 * Sharded: model.safetensors.index.json maps tensor names to shard files in
 * the same directory ("weight_map"). Shard names are checked lexically
 * (no absolute paths, no ".." component, no backslash) so that an index
 * cannot point outside the model's directory; symbolic links inside it are
 * followed (the Hugging Face cache is made of them).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "family_internal.h"
#include "io_internal.h"
#include "mpq_text.h"

/* Larger JSON headers are rejected before anything is allocated for them. */
#define ST_MAX_HEADER ((uint64_t)100 * 1024 * 1024)
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE     "model.safetensors"
#define ST_PATH_MAX   4096

/* ---- one file -------------------------------------------------------------- */

typedef struct {
    int64_t begin, end; /* relative to the data section */
    int64_t tensor;     /* index in m->tensors; -1 - index in m->foreign */
} st_extent;

static int cmp_extent(const void *a, const void *b) {
    const st_extent *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static int json_uint(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0) || floor(d) != d)
        return 0;
    *out = (int64_t)d;
    return 1;
}

/* The safetensors dtypes the model cannot compute with, and their element
 * sizes: their tensors are checked like any other and kept aside
 * (mpq_foreign_tensor), so that e.g. the I64 num_batches_tracked of a
 * batch norm does not refuse the whole file. Sub-byte types (F4, F6_*)
 * are not among them: unknown, refused. */
static const struct {
    const char *name;
    int64_t size;
} foreign_dtypes[] = {
    {"F64", 8}, {"I64", 8}, {"I32", 4},  {"I16", 2},     {"I8", 1},      {"U64", 8},     {"U32", 4},
    {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1}, {"C64", 8},
};

/* *out = the dtype (mpq_dtype), or -1 for a foreign one of *fsize bytes per
 * element. */
static mpq_err parse_dtype(mpq_ctx *ctx, const char *file, const char *tname, const cJSON *v,
                           int *out, int64_t *fsize) {
    MPQ_CHECK(cJSON_IsString(v), MPQ_ERR_FORMAT,
              "%s: tensor '%s': \"dtype\" is missing or not a string", file, tname);
    const char *s = v->valuestring;
    for (int d = 0; d < MPQ_DTYPE_COUNT; d++) {
        if (strcmp(s, mpq_dtype_name((mpq_dtype)d)) == 0) {
            *out = d;
            return MPQ_OK;
        }
    }
    for (size_t i = 0; i < sizeof foreign_dtypes / sizeof foreign_dtypes[0]; i++) {
        if (strcmp(s, foreign_dtypes[i].name) == 0) {
            *out = -1;
            *fsize = foreign_dtypes[i].size;
            return MPQ_OK;
        }
    }
    return MPQ_ERROR(MPQ_ERR_FORMAT, "%s: tensor '%s' has an unknown dtype \"%.32s\"", file, tname,
                     s);
}

/* A tensor of a foreign dtype (fsize bytes per element) at data + b, e - b
 * bytes: the same checks as mpq_tensor_init, then kept aside in m. */
static mpq_err add_foreign(mpq_ctx *ctx, mpq_model *m, const char *file, const char *tname,
                           const char *dtype, int ndim, const int64_t *shape, int64_t fsize,
                           int64_t nbytes) {
    mpq_foreign_tensor ft;
    memset(&ft, 0, sizeof ft);
    size_t nlen = strlen(tname);
    MPQ_CHECK(nlen > 0 && nlen < MPQ_TENSOR_NAME_MAX, MPQ_ERR_FORMAT,
              "%s: tensor name '%.60s...' is empty or longer than %d bytes", file, tname,
              MPQ_TENSOR_NAME_MAX - 1);
    int64_t numel = 1, need = 0;
    for (int d = 0; d < ndim; d++)
        MPQ_CALL(mpq_mul64(ctx, numel, shape[d], tname, &numel));
    MPQ_CALL(mpq_mul64(ctx, numel, fsize, tname, &need));
    MPQ_CHECK(need == nbytes, MPQ_ERR_FORMAT,
              "%s: tensor '%s': %s shape of %lld elements needs %lld bytes, data_offsets give "
              "%lld",
              file, tname, dtype, (long long)numel, (long long)need, (long long)nbytes);
    memcpy(ft.name, tname, nlen + 1);
    snprintf(ft.dtype, sizeof ft.dtype, "%s", dtype);
    ft.ndim = ndim;
    for (int d = 0; d < ndim; d++)
        ft.shape[d] = shape[d];
    ft.file = file;
    MPQ_CALL(mpq_model_add_foreign(ctx, m, &ft));
    return MPQ_OK;
}

/* A JSON object's keys must be unique: JSON readers disagree on which of
 * two equal keys wins, so a repeated tensor name or config.json key is an
 * error, not a silent choice. Nested objects are checked too. */
static mpq_err check_unique_keys(mpq_ctx *ctx, const char *file, const char *where,
                                 const cJSON *obj) {
    for (const cJSON *a = obj ? obj->child : NULL; a; a = a->next) {
        for (const cJSON *b = a->next; b && a->string; b = b->next)
            MPQ_CHECK(!b->string || strcmp(a->string, b->string) != 0, MPQ_ERR_FORMAT,
                      "%s: %s: key '%s' appears twice", file, where, a->string);
        if (cJSON_IsObject(a))
            MPQ_CALL(check_unique_keys(ctx, file, a->string ? a->string : where, a));
    }
    return MPQ_OK;
}

/* cJSON turns a \u0000 escape (or a raw NUL byte) inside a string into a
 * NUL that ends the C string: a shard name "a.safetensors\u0000x" would be
 * read as "a.safetensors", a tensor name cut short. Such strings are
 * refused, naming the string up to the NUL. */
static mpq_err check_no_nul(mpq_ctx *ctx, const char *file, const char *text, size_t len) {
    int in = 0;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        const char c = text[i];
        if (!in) {
            in = c == '"';
            start = i + 1;
            continue;
        }
        int nul = c == '\0';
        const size_t at = i;
        if (c == '\\' && i + 1 < len) {
            nul = i + 5 < len && text[i + 1] == 'u' && strncmp(text + i + 2, "0000", 4) == 0;
            i++; /* the escaped character cannot end the string */
        } else if (c == '"') {
            in = 0;
        }
        MPQ_CHECK(!nul, MPQ_ERR_FORMAT,
                  "%s: byte %lld: the JSON string \"%.*s\" continues after a NUL character "
                  "(\\u0000): names holding NUL are refused",
                  file, (long long)at, (int)(at - start < 80 ? at - start : 80), text + start);
    }
    return MPQ_OK;
}

/* Maps one safetensors file and appends its tensors to m. When `weight_map`
 * is given (sharded model), each tensor must be listed there for `shard`. */
static mpq_err st_read_file(mpq_ctx *ctx, mpq_model *m, const char *path, const cJSON *weight_map,
                            const char *shard, const char *index_path) {
    mpq_err err = MPQ_OK;
    cJSON *root = NULL;
    st_extent *ext = NULL;
    const mpq_io_map *map = NULL;
    MPQ_TRY(mpq_io_map_file(ctx, m, path, &map));
    const char *file = map->path;
    MPQ_ENSURE(map->size >= 8, MPQ_ERR_FORMAT,
               "%s: truncated: %zu bytes, not even the 8-byte header length", file, map->size);
    uint64_t hlen = mpq_io_le64(map->base);
    MPQ_ENSURE(hlen <= ST_MAX_HEADER, MPQ_ERR_FORMAT,
               "%s: header length %llu exceeds the limit of %llu bytes", file,
               (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    MPQ_ENSURE(hlen <= map->size - 8, MPQ_ERR_FORMAT,
               "%s: header length %llu points past the end of the file (%zu bytes): truncated?",
               file, (unsigned long long)hlen, map->size);
    MPQ_ENSURE(hlen >= 2, MPQ_ERR_FORMAT, "%s: header length %llu is too short for a JSON object",
               file, (unsigned long long)hlen);
    const char *hdr = (const char *)map->base + 8;
    const unsigned char *data = map->base + 8 + hlen;
    int64_t data_size = (int64_t)(map->size - 8 - hlen);
    const char *end = NULL;
    MPQ_TRY(check_no_nul(ctx, file, hdr, (size_t)hlen));
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= hdr && at <= hdr + hlen ? (long)(at - hdr) : -1;
        MPQ_ENSURE(0, MPQ_ERR_FORMAT, "%s: header is not valid JSON (error near header byte %ld)",
                   file, off);
    }
    MPQ_ENSURE(cJSON_IsObject(root), MPQ_ERR_FORMAT, "%s: header is not a JSON object", file);
    /* The header may be padded with spaces after the object, nothing else. */
    for (const char *q = end; q && q < hdr + hlen; q++)
        MPQ_ENSURE(*q == ' ', MPQ_ERR_FORMAT,
                   "%s: %lld bytes after the header's JSON object are not space padding "
                   "(byte %lld is 0x%02x)",
                   file, (long long)(hdr + hlen - end), (long long)(q - hdr), (unsigned char)*q);
    MPQ_TRY(check_unique_keys(ctx, file, "header", root));
    int64_t nitems = cJSON_GetArraySize(root);
    MPQ_ALLOC_TRY(ext, nitems + 1);
    int64_t next = 0;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, root) {
        const char *tname = it->string ? it->string : "";
        if (strcmp(tname, "__metadata__") == 0) {
            MPQ_ENSURE(cJSON_IsObject(it) || cJSON_IsNull(it), MPQ_ERR_FORMAT,
                       "%s: \"__metadata__\" is not an object", file);
            continue;
        }
        MPQ_ENSURE(cJSON_IsObject(it), MPQ_ERR_FORMAT, "%s: tensor '%s': entry is not an object",
                   file, tname);
        int dtype = MPQ_DTYPE_F32; /* set by parse_dtype on success; -1: foreign */
        int64_t fsize = 0;
        const cJSON *jdt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        MPQ_TRY(parse_dtype(ctx, file, tname, jdt, &dtype, &fsize));
        const cJSON *shp = cJSON_GetObjectItemCaseSensitive(it, "shape");
        MPQ_ENSURE(cJSON_IsArray(shp), MPQ_ERR_FORMAT,
                   "%s: tensor '%s': \"shape\" is missing or not an array", file, tname);
        int ndim = cJSON_GetArraySize(shp);
        MPQ_ENSURE(ndim <= MPQ_TENSOR_MAXDIM, MPQ_ERR_FORMAT,
                   "%s: tensor '%s' has %d dimensions (at most %d are supported)", file, tname,
                   ndim, MPQ_TENSOR_MAXDIM);
        int64_t shape[MPQ_TENSOR_MAXDIM] = {0};
        for (int d = 0; d < ndim; d++)
            MPQ_ENSURE(json_uint(cJSON_GetArrayItem(shp, d), &shape[d]), MPQ_ERR_FORMAT,
                       "%s: tensor '%s': shape[%d] is not a non-negative integer", file, tname, d);
        const cJSON *offs = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        int64_t b = 0, e = 0;
        MPQ_ENSURE(cJSON_IsArray(offs) && cJSON_GetArraySize(offs) == 2 &&
                       json_uint(cJSON_GetArrayItem(offs, 0), &b) &&
                       json_uint(cJSON_GetArrayItem(offs, 1), &e),
                   MPQ_ERR_FORMAT,
                   "%s: tensor '%s': \"data_offsets\" is not a pair of non-negative integers", file,
                   tname);
        MPQ_ENSURE(b <= e, MPQ_ERR_FORMAT,
                   "%s: tensor '%s': data_offsets [%lld, %lld) are reversed", file, tname,
                   (long long)b, (long long)e);
        MPQ_ENSURE(e <= data_size, MPQ_ERR_FORMAT,
                   "%s: tensor '%s': data_offsets [%lld, %lld) point past the end of the data "
                   "section (%lld bytes): truncated file?",
                   file, tname, (long long)b, (long long)e, (long long)data_size);
        mpq_tensor t;
        if (dtype >= 0) {
            MPQ_TRY(mpq_tensor_init(ctx, &t, tname, (mpq_dtype)dtype, ndim, shape, data + b, file));
            MPQ_ENSURE((int64_t)t.nbytes == e - b, MPQ_ERR_FORMAT,
                       "%s: tensor '%s': %s shape of %lld elements needs %zu bytes, data_offsets "
                       "give %lld",
                       file, tname, mpq_dtype_name((mpq_dtype)dtype), (long long)t.numel, t.nbytes,
                       (long long)(e - b));
        }
        if (weight_map) {
            const cJSON *w = cJSON_GetObjectItemCaseSensitive(weight_map, tname);
            MPQ_ENSURE(w, MPQ_ERR_FORMAT, "%s: tensor '%s' is not listed in %s", file, tname,
                       index_path);
            MPQ_ENSURE(cJSON_IsString(w) && strcmp(w->valuestring, shard) == 0, MPQ_ERR_FORMAT,
                       "%s: tensor '%s' is listed in %s for another shard", file, tname,
                       index_path);
        }
        if (dtype < 0) {
            ext[next++] = (st_extent){.begin = b, .end = e, .tensor = -1 - m->nforeign};
            MPQ_TRY(add_foreign(ctx, m, file, tname, jdt->valuestring, ndim, shape, fsize, e - b));
            continue;
        }
        ext[next] = (st_extent){.begin = b, .end = e, .tensor = m->ntensors};
        next++;
        MPQ_TRY(mpq_model_add_tensor(ctx, m, &t));
    }
    /* The tensors must tile the data section: sorted by offset, each starts
     * where the previous one ended and the last ends at the end of file. */
    qsort(ext, (size_t)next, sizeof *ext, cmp_extent);
    int64_t pos = 0;
    const char *prev = NULL;
    for (int64_t i = 0; i < next; i++) {
        const char *tname = ext[i].tensor >= 0 ? m->tensors[ext[i].tensor].name
                                               : m->foreign[-1 - ext[i].tensor].name;
        MPQ_ENSURE(ext[i].begin >= pos, MPQ_ERR_FORMAT,
                   "%s: tensor '%s' (bytes [%lld, %lld)) overlaps tensor '%s' (ending at %lld)",
                   file, tname, (long long)ext[i].begin, (long long)ext[i].end, prev,
                   (long long)pos);
        MPQ_ENSURE(ext[i].begin == pos, MPQ_ERR_FORMAT,
                   "%s: %lld unused bytes before tensor '%s' in the data section", file,
                   (long long)(ext[i].begin - pos), tname);
        pos = ext[i].end;
        prev = tname;
    }
    MPQ_ENSURE(pos == data_size, MPQ_ERR_FORMAT,
               "%s: %lld trailing bytes after the last tensor in the data section", file,
               (long long)(data_size - pos));
cleanup:
    mpq_free(ext);
    cJSON_Delete(root);
    return err;
}

/* ---- JSON side files ------------------------------------------------------ */

static mpq_err read_json_file(mpq_ctx *ctx, const char *path, cJSON **out) {
    mpq_err err = MPQ_OK;
    char *text = NULL;
    *out = NULL;
    struct stat st;
    MPQ_CHECK(stat(path, &st) == 0, MPQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    MPQ_CHECK((uint64_t)st.st_size <= ST_MAX_HEADER, MPQ_ERR_FORMAT,
              "%s: %lld bytes, larger than the %llu-byte limit for JSON files", path,
              (long long)st.st_size, (unsigned long long)ST_MAX_HEADER);
    int64_t len = 0;
    MPQ_TRY(mpq_text_read(ctx, path, &text, &len));
    MPQ_TRY(check_no_nul(ctx, path, text, (size_t)len));
    cJSON *root = cJSON_ParseWithLength(text, (size_t)len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= text && at <= text + len ? (long)(at - text) : -1;
        MPQ_ENSURE(0, MPQ_ERR_FORMAT, "%s: not valid JSON (error near byte %ld)", path, off);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        MPQ_ENSURE(0, MPQ_ERR_FORMAT, "%s: not a JSON object", path);
    }
    err = check_unique_keys(ctx, path, "JSON", root);
    if (err != MPQ_OK) {
        cJSON_Delete(root);
        goto cleanup;
    }
    *out = root;
cleanup:
    mpq_free(text);
    return err;
}

/* The name a key has inside its object: "parent.key" names a key of a
 * nested object in messages and is looked up as "key". */
static const char *cfg_leaf(const char *key) {
    const char *d = strrchr(key, '.');
    return d ? d + 1 : key;
}

/* A required positive integer of config.json. */
static mpq_err cfg_int(mpq_ctx *ctx, const char *path, const cJSON *cfg, const char *key,
                       int64_t def, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, cfg_leaf(key));
    if (!v || cJSON_IsNull(v)) {
        MPQ_CHECK(def > 0, MPQ_ERR_FORMAT, "%s: required key \"%s\" is missing", path, key);
        *out = def;
        return MPQ_OK;
    }
    int64_t x = 0;
    MPQ_CHECK(json_uint(v, &x) && x > 0 && x <= INT32_MAX, MPQ_ERR_FORMAT,
              "%s: key \"%s\" must be a positive integer below 2^31", path, key);
    *out = x;
    return MPQ_OK;
}

static mpq_err cfg_real(mpq_ctx *ctx, const char *path, const cJSON *cfg, const char *key,
                        double def, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, cfg_leaf(key));
    if (!v || cJSON_IsNull(v)) {
        MPQ_CHECK(def > 0, MPQ_ERR_FORMAT, "%s: required key \"%s\" is missing", path, key);
        *out = def;
        return MPQ_OK;
    }
    MPQ_CHECK(cJSON_IsNumber(v) && v->valuedouble > 0 && isfinite(v->valuedouble), MPQ_ERR_FORMAT,
              "%s: key \"%s\" must be a positive number", path, key);
    *out = v->valuedouble;
    return MPQ_OK;
}

/* The Llama-family variants config.json may name, by model_type or by the
 * first entry of architectures. All share the Llama forward pass. */
static const struct {
    const char *model_type;
    const char *architecture;
    int qkv_bias;
} llama_variants[] = {
    {"llama", "LlamaForCausalLM", 0},
    {"mistral", "MistralForCausalLM", 0},
    {"qwen2", "Qwen2ForCausalLM", 1},
    {"smollm", "SmolLMForCausalLM", 0}, /* SmolLM ships as model_type "llama"; accepted anyway */
};

/* rope_scaling: null, or an object whose "rope_type" (or older "type")
 * is "default" (no scaling), "linear" or "dynamic" (factor) or "llama3"
 * (factor, low_freq_factor, high_freq_factor,
 * original_max_position_embeddings). Other types are refused, naming them. */
static mpq_err read_rope_scaling(mpq_ctx *ctx, const char *path, const cJSON *cfg, mpq_arch *a) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
    a->rope_scaling = MPQ_ROPE_NONE;
    if (!rs || cJSON_IsNull(rs))
        return MPQ_OK;
    MPQ_CHECK(cJSON_IsObject(rs), MPQ_ERR_FORMAT,
              "%s: key \"rope_scaling\" must be an object or null", path);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!ty)
        ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
    MPQ_CHECK(cJSON_IsString(ty), MPQ_ERR_FORMAT,
              "%s: key \"rope_scaling\" has no string \"rope_type\" (or \"type\")", path);
    const char *t = ty->valuestring;
    if (strcmp(t, "default") == 0)
        return MPQ_OK;
    const int kind = mpq_rope_scaling_find(t);
    MPQ_CHECK(kind > 0, MPQ_ERR_FORMAT,
              "%s: key \"rope_scaling\": rope_type \"%.40s\" is not supported (supported: "
              "default, linear, llama3, dynamic)",
              path, t);
    a->rope_scaling = kind;
    MPQ_CALL(cfg_real(ctx, path, rs, "rope_scaling.factor", 0.0, &a->rope_factor));
    MPQ_CHECK(a->rope_factor >= 1.0, MPQ_ERR_FORMAT,
              "%s: key \"rope_scaling.factor\" is %g; it must be at least 1", path, a->rope_factor);
    if (a->rope_scaling != MPQ_ROPE_LLAMA3)
        return MPQ_OK;
    MPQ_CALL(cfg_real(ctx, path, rs, "rope_scaling.low_freq_factor", 0.0, &a->rope_low_freq));
    MPQ_CALL(cfg_real(ctx, path, rs, "rope_scaling.high_freq_factor", 0.0, &a->rope_high_freq));
    MPQ_CALL(cfg_int(ctx, path, rs, "rope_scaling.original_max_position_embeddings", 0,
                     &a->rope_orig_max));
    MPQ_CHECK(a->rope_high_freq > a->rope_low_freq, MPQ_ERR_FORMAT,
              "%s: key \"rope_scaling\": high_freq_factor %g must be above low_freq_factor %g",
              path, a->rope_high_freq, a->rope_low_freq);
    return MPQ_OK;
}

static mpq_err read_config(mpq_ctx *ctx, const char *path, mpq_arch *a) {
    mpq_err err = MPQ_OK;
    cJSON *cfg = NULL;
    MPQ_TRY(read_json_file(ctx, path, &cfg));
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(cfg, "architectures");
    const char *arch0 = cJSON_IsArray(archs) && cJSON_IsString(cJSON_GetArrayItem(archs, 0))
                            ? cJSON_GetArrayItem(archs, 0)->valuestring
                            : NULL;
    MPQ_ENSURE(cJSON_IsString(mt) || arch0, MPQ_ERR_FORMAT,
               "%s: required key \"model_type\" is missing (and no \"architectures\")", path);
    int variant = -1;
    for (size_t i = 0; i < sizeof llama_variants / sizeof llama_variants[0] && variant < 0; i++)
        if (cJSON_IsString(mt) ? strcmp(mt->valuestring, llama_variants[i].model_type) == 0
                               : strcmp(arch0, llama_variants[i].architecture) == 0)
            variant = (int)i;
    MPQ_ENSURE(variant >= 0, MPQ_ERR_FORMAT,
               "%s: model %s \"%.40s\" is not supported (supported: llama, mistral, qwen2, "
               "smollm)",
               path, cJSON_IsString(mt) ? "model_type" : "architecture",
               cJSON_IsString(mt) ? mt->valuestring : arch0);
    snprintf(a->family, sizeof a->family, "%s", mpq_family_llama_ops.name);
    snprintf(a->model_type, sizeof a->model_type, "%s", llama_variants[variant].model_type);
    a->qkv_bias = llama_variants[variant].qkv_bias;
    a->rope_interleaved = 0;
    MPQ_TRY(cfg_int(ctx, path, cfg, "hidden_size", 0, &a->dim));
    MPQ_TRY(cfg_int(ctx, path, cfg, "num_attention_heads", 0, &a->n_heads));
    MPQ_TRY(cfg_int(ctx, path, cfg, "num_key_value_heads", a->n_heads, &a->n_kv_heads));
    MPQ_TRY(cfg_int(ctx, path, cfg, "intermediate_size", 0, &a->hidden_dim));
    MPQ_TRY(cfg_int(ctx, path, cfg, "num_hidden_layers", 0, &a->n_layers));
    MPQ_TRY(cfg_int(ctx, path, cfg, "vocab_size", 0, &a->vocab_size));
    MPQ_TRY(cfg_int(ctx, path, cfg, "max_position_embeddings", 0, &a->seq_len));
    MPQ_TRY(cfg_real(ctx, path, cfg, "rms_norm_eps", 0.0, &a->norm_eps));
    MPQ_TRY(cfg_real(ctx, path, cfg, "rope_theta", 10000.0, &a->rope_theta));
    MPQ_ENSURE(a->dim % a->n_heads == 0 || cJSON_GetObjectItemCaseSensitive(cfg, "head_dim"),
               MPQ_ERR_FORMAT, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld",
               path, (long long)a->dim, (long long)a->n_heads);
    MPQ_TRY(cfg_int(ctx, path, cfg, "head_dim", a->dim / a->n_heads, &a->head_dim));
    /* Checked here, where the key is known, not later against the tensors
     * (whose messages would name a shard). */
    MPQ_ENSURE(a->n_heads % a->n_kv_heads == 0, MPQ_ERR_FORMAT,
               "%s: key \"num_key_value_heads\" is %lld, which does not divide "
               "num_attention_heads %lld",
               path, (long long)a->n_kv_heads, (long long)a->n_heads);
    MPQ_ENSURE(a->head_dim % 2 == 0, MPQ_ERR_FORMAT,
               "%s: key \"%s\" is %lld: rotary embeddings need an even head dimension", path,
               cJSON_GetObjectItemCaseSensitive(cfg, "head_dim")
                   ? "head_dim"
                   : "hidden_size / num_attention_heads",
               (long long)a->head_dim);
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings");
    MPQ_ENSURE(!tie || cJSON_IsBool(tie) || cJSON_IsNull(tie), MPQ_ERR_FORMAT,
               "%s: key \"tie_word_embeddings\" must be true or false", path);
    a->tied_embeddings = cJSON_IsTrue(tie);
    MPQ_TRY(read_rope_scaling(ctx, path, cfg, a));
    /* Sliding-window attention (Mistral v0.1; Qwen2 with use_sliding_window)
     * is not implemented: refuse it rather than compute full attention. A
     * window at least the context length is full attention. */
    const cJSON *usw = cJSON_GetObjectItemCaseSensitive(cfg, "use_sliding_window");
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(cfg, "sliding_window");
    if (sw && !cJSON_IsNull(sw) && !cJSON_IsFalse(usw)) {
        int64_t win = 0;
        MPQ_TRY(cfg_int(ctx, path, cfg, "sliding_window", 0, &win));
        MPQ_ENSURE(win >= a->seq_len, MPQ_ERR_FORMAT,
                   "%s: key \"sliding_window\" is %lld, below max_position_embeddings %lld: "
                   "sliding-window attention is not supported",
                   path, (long long)win, (long long)a->seq_len);
    }
    /* Llama's attention_bias: q/k/v and o_proj biases (Qwen2 has q/k/v
     * biases whatever the key says). */
    const cJSON *abias = cJSON_GetObjectItemCaseSensitive(cfg, "attention_bias");
    MPQ_ENSURE(!abias || cJSON_IsBool(abias) || cJSON_IsNull(abias), MPQ_ERR_FORMAT,
               "%s: key \"attention_bias\" must be true or false", path);
    if (cJSON_IsTrue(abias) && !a->qkv_bias) {
        MPQ_ENSURE(strcmp(a->model_type, "mistral") != 0, MPQ_ERR_FORMAT,
                   "%s: key \"attention_bias\" is true, but mistral has no attention biases "
                   "(llama: q/k/v/o biases; qwen2: q/k/v)",
                   path);
        a->qkv_bias = a->o_bias = 1;
    }
    const cJSON *mbias = cJSON_GetObjectItemCaseSensitive(cfg, "mlp_bias");
    MPQ_ENSURE(!cJSON_IsTrue(mbias), MPQ_ERR_FORMAT,
               "%s: key \"mlp_bias\" is true; MLP biases are not supported", path);
cleanup:
    cJSON_Delete(cfg);
    return err;
}

/* The hooks of the GPTQ reader (io_internal.h). */
mpq_err mpq_io_read_json(mpq_ctx *ctx, const char *path, cJSON **out) {
    MPQ_CALL(read_json_file(ctx, path, out));
    return MPQ_OK;
}

mpq_err mpq_io_read_hf_config(mpq_ctx *ctx, const char *path, mpq_arch *a) {
    MPQ_CALL(read_config(ctx, path, a));
    return MPQ_OK;
}

/* ---- sharded models ------------------------------------------------------- */

/* A shard name from the index must name a file inside the model directory. */
static mpq_err check_shard_name(mpq_ctx *ctx, const char *index_path, const char *tname,
                                const char *shard) {
    MPQ_CHECK(shard[0] != '\0', MPQ_ERR_FORMAT, "%s: tensor '%s': empty shard file name",
              index_path, tname);
    MPQ_CHECK(shard[0] != '/' && !strchr(shard, '\\'), MPQ_ERR_FORMAT,
              "%s: tensor '%s': shard name \"%s\" must be a plain file name inside the model "
              "directory (absolute path or backslash)",
              index_path, tname, shard);
    for (const char *p = shard; *p;) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        MPQ_CHECK(!(n == 2 && p[0] == '.' && p[1] == '.'), MPQ_ERR_FORMAT,
                  "%s: tensor '%s': shard name \"%s\" has a '..' component that leaves the model "
                  "directory",
                  index_path, tname, shard);
        p += n + (q ? 1 : 0);
    }
    return MPQ_OK;
}

/* 1 when the resolved path rp lies below the resolved directory d. */
static int below(const char *rp, const char *d) {
    size_t n = strlen(d);
    return strncmp(rp, d, n) == 0 && rp[n] == '/';
}

/* The shard file, symbolic links resolved, must lie inside the model
 * directory (also resolved), or in the `blobs` folder of a Hugging Face
 * cache when the directory is one of its snapshots
 * (<repo>/snapshots/<revision>/ links to <repo>/blobs/<hash>). Any other
 * link out of the directory is refused. */
static mpq_err check_shard_inside(mpq_ctx *ctx, const char *index_path, const char *dir,
                                  const char *path) {
    char rd[PATH_MAX], rp[PATH_MAX], blobs[PATH_MAX + 16], rb[PATH_MAX];
    MPQ_CHECK(realpath(dir, rd), MPQ_ERR_IO, "%s: cannot resolve the model directory: %s", dir,
              strerror(errno));
    if (!realpath(path, rp))
        return MPQ_OK; /* missing: reported by the reader with its own message */
    if (below(rp, rd))
        return MPQ_OK;
    const char *snap = strstr(rd, "/snapshots/");
    int cache = snap && !strchr(snap + strlen("/snapshots/"), '/');
    if (cache) {
        snprintf(blobs, sizeof blobs, "%.*s/blobs", (int)(snap - rd), rd);
        cache = realpath(blobs, rb) && below(rp, rb);
    }
    MPQ_CHECK(cache, MPQ_ERR_FORMAT,
              "%s: shard '%s' resolves to '%s', outside the model directory '%s' (and not in "
              "the blobs of a Hugging Face cache)",
              index_path, path, rp, rd);
    return MPQ_OK;
}

static mpq_err st_read_sharded(mpq_ctx *ctx, mpq_model *m, const char *dir,
                               const char *index_path) {
    mpq_err err = MPQ_OK;
    cJSON *idx = NULL;
    const char **shards = NULL;
    MPQ_TRY(read_json_file(ctx, index_path, &idx));
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    MPQ_ENSURE(cJSON_IsObject(wm), MPQ_ERR_FORMAT,
               "%s: required key \"weight_map\" is missing or not an object", index_path);
    int64_t nw = cJSON_GetArraySize(wm);
    MPQ_ENSURE(nw > 0, MPQ_ERR_FORMAT, "%s: \"weight_map\" is empty", index_path);
    MPQ_ALLOC_TRY(shards, nw);
    int64_t nshards = 0;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, wm) {
        MPQ_ENSURE(cJSON_IsString(it), MPQ_ERR_FORMAT,
                   "%s: weight_map entry of tensor '%s' is not a file name", index_path,
                   it->string);
        MPQ_TRY(check_shard_name(ctx, index_path, it->string, it->valuestring));
        int seen = 0;
        for (int64_t s = 0; s < nshards && !seen; s++)
            seen = strcmp(shards[s], it->valuestring) == 0;
        if (!seen)
            shards[nshards++] = it->valuestring;
    }
    for (int64_t s = 0; s < nshards; s++) {
        char path[2 * ST_PATH_MAX];
        MPQ_ENSURE(snprintf(path, sizeof path, "%s/%s", dir, shards[s]) < (int)sizeof path,
                   MPQ_ERR_ARG, "%s: shard path too long", index_path);
        MPQ_TRY(check_shard_inside(ctx, index_path, dir, path));
        MPQ_TRY(st_read_file(ctx, m, path, wm, shards[s], index_path));
    }
    cJSON_ArrayForEach(it, wm) {
        MPQ_ENSURE(mpq_model_find(m, it->string) || mpq_io_find_foreign(m, it->string),
                   MPQ_ERR_FORMAT,
                   "%s: tensor '%s' is listed for shard %s, which does not contain it", index_path,
                   it->string, it->valuestring);
    }
cleanup:
    mpq_free(shards);
    cJSON_Delete(idx);
    return err;
}

/* ---- open ----------------------------------------------------------------- */

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static mpq_err st_open(mpq_ctx *ctx, mpq_model *m, const char *path) {
    char dir[ST_PATH_MAX], file[ST_PATH_MAX + 64], cfg[ST_PATH_MAX + 64];
    struct stat st;
    MPQ_CHECK(stat(path, &st) == 0, MPQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    MPQ_CHECK(strlen(path) + sizeof ST_INDEX_NAME + 2 < sizeof dir, MPQ_ERR_ARG,
              "%s: path too long", path);
    int sharded = 0;
    if (S_ISDIR(st.st_mode)) {
        snprintf(dir, sizeof dir, "%s", path);
        snprintf(file, sizeof file, "%s/%s", dir, ST_INDEX_NAME);
        sharded = file_exists(file);
        if (!sharded) {
            snprintf(file, sizeof file, "%s/%s", dir, ST_SINGLE);
            MPQ_CHECK(file_exists(file), MPQ_ERR_IO, "%s: directory holds neither %s nor %s", path,
                      ST_INDEX_NAME, ST_SINGLE);
        }
    } else {
        snprintf(file, sizeof file, "%s", path);
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(dir, sizeof dir, ".");
        sharded = ends_with(path, ".json");
    }
    snprintf(m->arch.format, sizeof m->arch.format, "safetensors");
    if (sharded)
        MPQ_CALL(st_read_sharded(ctx, m, dir, file));
    else
        MPQ_CALL(st_read_file(ctx, m, file, NULL, NULL, NULL));
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    struct stat cst;
    /* anything named config.json is read (a device, FIFO or dangling link
     * is an error naming it, not a model without a configuration) */
    if (lstat(cfg, &cst) == 0) {
        MPQ_CALL(read_config(ctx, cfg, &m->arch));
        MPQ_CALL(mpq_io_set_arch_source(ctx, m, cfg));
        MPQ_CALL(mpq_io_check_llama(ctx, m));
    }
    return MPQ_OK;
}

static int st_probe(const char *path, int is_dir, const unsigned char *head, size_t nhead) {
    if (is_dir || ends_with(path, ".safetensors") || ends_with(path, ".json"))
        return 1;
    return nhead >= 9 && head[8] == '{' && mpq_io_le64(head) <= ST_MAX_HEADER;
}

const mpq_model_format mpq_format_safetensors = {
    .name = "safetensors",
    .probe = st_probe,
    .open = st_open,
};
