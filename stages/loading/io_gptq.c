/* io_gptq.c: GPTQ checkpoints (AutoGPTQ / GPTQModel / transformers layout,
 * as `mpquant export --format gptq` writes them) read as a Llama model whose
 * quantized modules are dequantized to F32 `<module>.weight` tensors.
 *
 * A directory (or its model.safetensors) whose config.json has
 * quantization_config.quant_method "gptq". Per quantized module <m>, with
 * the module's bits b (quantization_config, or its "dynamic" override):
 *   <m>.qweight I32 [in * b / 32][out]  codes of output column j: one
 *               LSB-first bit stream of b-bit fields along the input rows
 *   <m>.qzeros  I32 [groups][out * b / 32]  zero-points packed the same way
 *               along the outputs; checkpoint_format "gptq" (v1, default)
 *               stores zero - 1, "gptq_v2" the zero itself
 *   <m>.scales  F16 (or F32, BF16) [groups][out]
 *   <m>.g_idx   I32 [in]  group of each input row (absent: row / group_size)
 * weight[j][i] = scale[g][j] * (q - zero[g][j]) in float32, g = g_idx[i].
 * "dynamic" keys are regular expressions matched from the start of the
 * module name (Python's re.match): "-:<re>" leaves the module unquantized,
 * "+:<re>" (or a bare <re>) overrides bits, group_size and sym; the first
 * matching key wins. Every other tensor is read as the safetensors reader
 * reads it (F32, F16, BF16). Sharded GPTQ checkpoints are not read. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <pcre2.h>

#include "io_internal.h"

#define GQ_PATH_MAX 4096
#define GQ_I32      MPQ_DTYPE_COUNT /* the one dtype mpq_dtype lacks */

/* One tensor of the file's header. */
typedef struct gq_entry {
    const char *name; /* in the parsed header */
    int dtype;        /* mpq_dtype or GQ_I32 */
    int ndim;
    int64_t shape[MPQ_TENSOR_MAXDIM];
    int64_t begin, end; /* bytes, relative to the data section */
    const unsigned char *data;
    int used; /* consumed as part of a quantized module */
} gq_entry;

/* The quantization settings of one module. */
typedef struct gq_setting {
    int bits, sym;
    int64_t group_size; /* -1: one group over all input rows */
} gq_setting;

typedef struct gq_file {
    const char *path;  /* the .safetensors file */
    const char *cpath; /* its config.json */
    int v2;            /* checkpoint_format gptq_v2 */
    gq_setting base;
    const cJSON *dynamic; /* object or NULL */
    gq_entry *e;
    int64_t n;
} gq_file;

/* ---- small helpers --------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The directory of the model, its .safetensors file and its config.json. */
static void gq_paths(const char *path, int is_dir, char *file, char *cfg, size_t len) {
    char dir[GQ_PATH_MAX];
    if (is_dir) {
        snprintf(dir, sizeof dir, "%s", path);
        snprintf(file, len, "%s/model.safetensors", dir);
    } else {
        snprintf(file, len, "%s", path);
        const char *slash = strrchr(path, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    }
    snprintf(cfg, len, "%s/config.json", dir);
}

/* A JSON number that is an exact integer in [lo, hi]. */
static int json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out) {
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble || v->valuedouble < lo ||
        v->valuedouble > hi)
        return 0;
    *out = (int64_t)v->valuedouble;
    return 1;
}

/* Reads bits / group_size / sym of obj into *s where present. where: for messages. */
static mpq_err read_setting(mpq_ctx *ctx, const char *cpath, const char *where, const cJSON *obj,
                            gq_setting *s) {
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(obj, "bits");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(obj, "group_size");
    const cJSON *y = cJSON_GetObjectItemCaseSensitive(obj, "sym");
    int64_t v = 0;
    if (b) {
        MPQ_CHECK(json_int(b, 2, 8, &v) && (v == 2 || v == 3 || v == 4 || v == 8), MPQ_ERR_FORMAT,
                  "%s: %s: \"bits\" must be 2, 3, 4 or 8", cpath, where);
        s->bits = (int)v;
    }
    if (g) {
        MPQ_CHECK(json_int(g, -1, INT32_MAX, &v) && v != 0, MPQ_ERR_FORMAT,
                  "%s: %s: \"group_size\" must be -1 or a positive integer", cpath, where);
        s->group_size = v;
    }
    if (y) {
        MPQ_CHECK(cJSON_IsBool(y), MPQ_ERR_FORMAT, "%s: %s: \"sym\" must be true or false", cpath,
                  where);
        s->sym = cJSON_IsTrue(y);
    }
    return MPQ_OK;
}

/* quantization_config of the parsed config.json cfg. */
static mpq_err read_qconfig(mpq_ctx *ctx, gq_file *f, const cJSON *cfg) {
    const char *cp = f->cpath;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config");
    MPQ_CHECK(cJSON_IsObject(q), MPQ_ERR_FORMAT, "%s: \"quantization_config\" is not an object",
              cp);
    const cJSON *qm = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    MPQ_CHECK(cJSON_IsString(qm) && strcmp(qm->valuestring, "gptq") == 0, MPQ_ERR_FORMAT,
              "%s: quantization_config.quant_method is not \"gptq\"", cp);
    MPQ_CHECK(cJSON_GetObjectItemCaseSensitive(q, "bits"), MPQ_ERR_FORMAT,
              "%s: quantization_config.bits is missing", cp);
    f->base = (gq_setting){.bits = 0, .sym = 1, .group_size = -1};
    MPQ_CALL(read_setting(ctx, cp, "quantization_config", q, &f->base));
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(q, "checkpoint_format");
    MPQ_CHECK(!fmt || cJSON_IsNull(fmt) ||
                  (cJSON_IsString(fmt) && (strcmp(fmt->valuestring, "gptq") == 0 ||
                                           strcmp(fmt->valuestring, "gptq_v2") == 0)),
              MPQ_ERR_FORMAT,
              "%s: quantization_config.checkpoint_format must be \"gptq\" or \"gptq_v2\"", cp);
    f->v2 = cJSON_IsString(fmt) && strcmp(fmt->valuestring, "gptq_v2") == 0;
    const cJSON *dyn = cJSON_GetObjectItemCaseSensitive(q, "dynamic");
    MPQ_CHECK(!dyn || cJSON_IsNull(dyn) || cJSON_IsObject(dyn), MPQ_ERR_FORMAT,
              "%s: quantization_config.dynamic is not an object", cp);
    f->dynamic = cJSON_IsObject(dyn) ? dyn : NULL;
    return MPQ_OK;
}

/* *hit = 1 when regular expression re matches module from its start
 * (Python's re.match, as GPTQModel and vLLM apply "dynamic"). */
static mpq_err regex_match(mpq_ctx *ctx, const char *cpath, const char *re, const char *module,
                           int *hit) {
    int code = 0;
    PCRE2_SIZE at = 0;
    pcre2_code *rx =
        pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &at, NULL);
    if (!rx) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return MPQ_ERROR(MPQ_ERR_FORMAT,
                         "%s: quantization_config.dynamic key \"%s\": bad regular expression at "
                         "offset %zu: %s",
                         cpath, re, (size_t)at, (const char *)msg);
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(rx, NULL);
    if (!md) {
        pcre2_code_free(rx);
        return MPQ_ERROR(MPQ_ERR_NOMEM, "%s: cannot match dynamic key \"%s\"", cpath, re);
    }
    int rc = pcre2_match(rx, (PCRE2_SPTR)module, strlen(module), 0, PCRE2_ANCHORED, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(rx);
    *hit = rc >= 0;
    return MPQ_OK;
}

/* The setting of module (s), or *skip = 1 when "dynamic" leaves it
 * unquantized. */
static mpq_err module_setting(mpq_ctx *ctx, const gq_file *f, const char *module, gq_setting *s,
                              int *skip) {
    *s = f->base;
    *skip = 0;
    for (const cJSON *d = f->dynamic ? f->dynamic->child : NULL; d; d = d->next) {
        const char *k = d->string ? d->string : "";
        const int neg = strncmp(k, "-:", 2) == 0, pos = strncmp(k, "+:", 2) == 0;
        int hit = 0;
        MPQ_CALL(regex_match(ctx, f->cpath, k + (neg || pos ? 2 : 0), module, &hit));
        if (!hit)
            continue;
        if (neg) {
            *skip = 1;
            return MPQ_OK;
        }
        MPQ_CHECK(cJSON_IsObject(d), MPQ_ERR_FORMAT,
                  "%s: quantization_config.dynamic \"%s\" is not an object", f->cpath, k);
        char where[200];
        snprintf(where, sizeof where, "quantization_config.dynamic \"%.160s\"", k);
        MPQ_CALL(read_setting(ctx, f->cpath, where, d, s));
        return MPQ_OK;
    }
    return MPQ_OK;
}

/* ---- the header ------------------------------------------------------------------ */

static int cmp_begin(const void *a, const void *b) {
    const gq_entry *x = *(const gq_entry *const *)a, *y = *(const gq_entry *const *)b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* One header entry it into *e, checked against the data section [size]. */
static mpq_err parse_entry(mpq_ctx *ctx, const char *file, const cJSON *it, int64_t size,
                           gq_entry *e) {
    const char *tn = it->string;
    static const char *const names[] = {"F32", "F16", "BF16", "I32"};
    static const int64_t sizes[] = {4, 2, 2, 4};
    MPQ_CHECK(cJSON_IsObject(it), MPQ_ERR_FORMAT, "%s: tensor '%s': entry is not an object", file,
              tn);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    e->dtype = -1;
    for (int d = 0; d < 4 && cJSON_IsString(dt); d++)
        if (strcmp(dt->valuestring, names[d]) == 0)
            e->dtype = d == 3 ? GQ_I32 : d;
    MPQ_CHECK(e->dtype >= 0, MPQ_ERR_FORMAT,
              "%s: tensor '%s': dtype must be F32, F16, BF16 or I32 (GPTQ tensors)", file, tn);
    const cJSON *shp = cJSON_GetObjectItemCaseSensitive(it, "shape");
    e->ndim = cJSON_IsArray(shp) ? cJSON_GetArraySize(shp) : -1;
    MPQ_CHECK(e->ndim >= 0 && e->ndim <= MPQ_TENSOR_MAXDIM, MPQ_ERR_FORMAT,
              "%s: tensor '%s': \"shape\" is not an array of at most %d dimensions", file, tn,
              MPQ_TENSOR_MAXDIM);
    int64_t nbytes = e->dtype == GQ_I32 ? 4 : sizes[e->dtype];
    for (int d = 0; d < e->ndim; d++) {
        MPQ_CHECK(json_int(cJSON_GetArrayItem(shp, d), 0, INT64_MAX / 2, &e->shape[d]),
                  MPQ_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer", file,
                  tn, d);
        MPQ_CALL(mpq_mul64(ctx, nbytes, e->shape[d], tn, &nbytes));
    }
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    MPQ_CHECK(cJSON_IsArray(offs) && cJSON_GetArraySize(offs) == 2 &&
                  json_int(cJSON_GetArrayItem(offs, 0), 0, size, &e->begin) &&
                  json_int(cJSON_GetArrayItem(offs, 1), e->begin, size, &e->end),
              MPQ_ERR_FORMAT,
              "%s: tensor '%s': \"data_offsets\" is not a pair begin <= end within the %lld-byte "
              "data section",
              file, tn, (long long)size);
    MPQ_CHECK(e->end - e->begin == nbytes, MPQ_ERR_FORMAT,
              "%s: tensor '%s': its shape needs %lld bytes, data_offsets give %lld", file, tn,
              (long long)nbytes, (long long)(e->end - e->begin));
    e->name = tn;
    return MPQ_OK;
}

/* Maps the file and parses its header into f->e [f->n] (names point into
 * *root, which the caller deletes). The tensors must tile the data section. */
static mpq_err read_header(mpq_ctx *ctx, mpq_model *m, gq_file *f, cJSON **root) {
    mpq_err err = MPQ_OK;
    const gq_entry **order = NULL;
    const mpq_io_map *map = NULL;
    MPQ_TRY(mpq_io_map_file(ctx, m, f->path, &map));
    const char *file = f->path;
    MPQ_ENSURE(map->size >= 8, MPQ_ERR_FORMAT, "%s: truncated: %zu bytes", file, map->size);
    const uint64_t hlen = mpq_io_le64(map->base);
    MPQ_ENSURE(hlen >= 2 && hlen <= map->size - 8, MPQ_ERR_FORMAT,
               "%s: header length %llu does not fit the %zu-byte file", file,
               (unsigned long long)hlen, map->size);
    const unsigned char *data = map->base + 8 + hlen;
    const int64_t size = (int64_t)(map->size - 8 - hlen);
    *root = cJSON_ParseWithLength((const char *)map->base + 8, (size_t)hlen);
    MPQ_ENSURE(cJSON_IsObject(*root), MPQ_ERR_FORMAT, "%s: the header is not a JSON object", file);
    MPQ_ALLOC_TRY(f->e, cJSON_GetArraySize(*root) + 1);
    for (const cJSON *it = (*root)->child; it; it = it->next) {
        if (!it->string || strcmp(it->string, "__metadata__") == 0)
            continue;
        gq_entry *e = &f->e[f->n];
        MPQ_TRY(parse_entry(ctx, file, it, size, e));
        e->data = data + e->begin;
        for (int64_t k = 0; k < f->n; k++)
            MPQ_ENSURE(strcmp(f->e[k].name, e->name) != 0, MPQ_ERR_FORMAT,
                       "%s: tensor '%s' appears twice", file, e->name);
        f->n++;
    }
    MPQ_ALLOC_TRY(order, f->n + 1);
    for (int64_t k = 0; k < f->n; k++)
        order[k] = &f->e[k];
    qsort(order, (size_t)f->n, sizeof *order, cmp_begin);
    int64_t pos = 0;
    for (int64_t k = 0; k < f->n; k++) {
        MPQ_ENSURE(order[k]->begin == pos, MPQ_ERR_FORMAT,
                   "%s: tensor '%s' starts at byte %lld of the data section, expected %lld (the "
                   "tensors must tile it)",
                   file, order[k]->name, (long long)order[k]->begin, (long long)pos);
        pos = order[k]->end;
    }
    MPQ_ENSURE(pos == size, MPQ_ERR_FORMAT, "%s: %lld bytes after the last tensor", file,
               (long long)(size - pos));
cleanup:
    mpq_free(order);
    return err;
}

/* The entry named "<module>.<suffix>", or NULL. */
static gq_entry *find_part(const gq_file *f, const char *module, const char *suffix) {
    char name[MPQ_TENSOR_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    for (int64_t k = 0; k < f->n; k++)
        if (strcmp(f->e[k].name, name) == 0)
            return &f->e[k];
    return NULL;
}

/* ---- one quantized module -------------------------------------------------------- */

/* Field k (b bits) of the LSB-first stream of little-endian 32-bit words at
 * p, p + 4 * stride, ... */
static uint32_t get_field(const unsigned char *p, int64_t stride, int64_t k, int b) {
    const int64_t pos = k * b, w = pos / 32;
    const int sh = (int)(pos % 32);
    uint64_t v = mpq_io_le32(p + 4 * w * stride) >> sh;
    if (sh + b > 32)
        v |= (uint64_t)mpq_io_le32(p + 4 * (w + 1) * stride) << (32 - sh);
    return (uint32_t)(v & ((1u << b) - 1));
}

/* A part's dtype and 2-D/1-D shape, or an error naming it. */
static mpq_err check_part(mpq_ctx *ctx, const gq_file *f, const gq_entry *e, int i32, int ndim,
                          const int64_t *shape) {
    char want[64], got[64];
    MPQ_CHECK((e->dtype == GQ_I32) == i32, MPQ_ERR_FORMAT, "%s: tensor '%s': dtype must be %s",
              f->path, e->name, i32 ? "I32" : "F16, BF16 or F32");
    int ok = e->ndim == ndim;
    for (int d = 0; d < ndim && ok; d++)
        ok = e->shape[d] == shape[d];
    if (ok)
        return MPQ_OK;
    snprintf(want, sizeof want, ndim == 1 ? "[%lld]" : "[%lld, %lld]", (long long)shape[0],
             (long long)(ndim > 1 ? shape[1] : 0));
    snprintf(got, sizeof got, e->ndim == 1 ? "[%lld]" : "[%lld, %lld]", (long long)e->shape[0],
             (long long)(e->ndim > 1 ? e->shape[1] : 0));
    return MPQ_ERROR(MPQ_ERR_FORMAT, "%s: tensor '%s' has shape %s (%d-D), expected %s", f->path,
                     e->name, e->ndim == 0 ? "[]" : got, e->ndim, want);
}

/* The module of quantized weight qw: its shape and the others' checked
 * against it and the setting s, the weight dequantized into a new buffer
 * of m and added as "<module>.weight". */
static mpq_err read_module(mpq_ctx *ctx, mpq_model *m, gq_file *f, gq_entry *qw, const char *mod,
                           const gq_setting *s) {
    const int b = s->bits;
    gq_entry *qz = find_part(f, mod, "qzeros"), *sc = find_part(f, mod, "scales");
    gq_entry *gi = find_part(f, mod, "g_idx");
    MPQ_CHECK(qz && sc, MPQ_ERR_FORMAT, "%s: tensor '%s.%s' is missing (module %s has a qweight)",
              f->path, mod, qz ? "scales" : "qzeros", mod);
    MPQ_CHECK(qw->dtype == GQ_I32 && qw->ndim == 2 && qw->shape[0] > 0 && qw->shape[1] > 0,
              MPQ_ERR_FORMAT, "%s: tensor '%s': must be a non-empty 2-D I32 tensor", f->path,
              qw->name);
    const int64_t out = qw->shape[1];
    const int64_t in = qw->shape[0] * 32 / b;
    MPQ_CHECK(qw->shape[0] * 32 % b == 0 && out * b % 32 == 0, MPQ_ERR_FORMAT,
              "%s: tensor '%s' [%lld, %lld]: not a whole number of %d-bit fields per column, or "
              "%lld outputs of %d-bit zero-points do not fill int32 words",
              f->path, qw->name, (long long)qw->shape[0], (long long)out, b, (long long)out, b);
    if (gi) {
        MPQ_CHECK(gi->dtype == GQ_I32 && gi->ndim == 1, MPQ_ERR_FORMAT,
                  "%s: tensor '%s': must be a 1-D I32 tensor", f->path, gi->name);
        MPQ_CHECK(gi->shape[0] == in, MPQ_ERR_FORMAT,
                  "%s: tensor '%s' [%lld, %lld] holds %lld input rows of %d bits, but '%s' has "
                  "%lld entries",
                  f->path, qw->name, (long long)qw->shape[0], (long long)out, (long long)in, b,
                  gi->name, (long long)gi->shape[0]);
    }
    const int64_t ng = s->group_size > 0 ? (in + s->group_size - 1) / s->group_size : 1;
    const int64_t zs[2] = {ng, out * b / 32}, ss[2] = {ng, out};
    MPQ_CALL(check_part(ctx, f, sc, 0, 2, ss));
    MPQ_CALL(check_part(ctx, f, qz, 1, 2, zs));
    qw->used = qz->used = sc->used = 1;
    if (gi)
        gi->used = 1;
    mpq_tensor st; /* the scales, converted to float through the model's reader */
    MPQ_CALL(mpq_tensor_init(ctx, &st, sc->name, (mpq_dtype)sc->dtype, 2, ss, sc->data, f->path));
    unsigned char *buf = NULL;
    MPQ_CALL(mpq_model_add_buffer(ctx, m, (size_t)(out * in + ng * out) * sizeof(float), &buf));
    float *w = (float *)buf, *scale = w + out * in;
    MPQ_CALL(mpq_tensor_read_f32(ctx, &st, 0, ng * out, scale));
    for (int64_t i = 0; i < ng * out; i++)
        MPQ_CHECK(isfinite(scale[i]), MPQ_ERR_FORMAT,
                  "%s: tensor '%s': scale of group %lld, output %lld is not finite", f->path,
                  sc->name, (long long)(i / out), (long long)(i % out));
    for (int64_t i = 0; i < in; i++) {
        const int64_t g = gi ? (int32_t)mpq_io_le32(gi->data + 4 * i)
                             : (s->group_size > 0 ? i / s->group_size : 0);
        MPQ_CHECK(g >= 0 && g < ng, MPQ_ERR_FORMAT,
                  "%s: tensor '%s': entry %lld is group %lld, outside [0, %lld)", f->path,
                  gi ? gi->name : qw->name, (long long)i, (long long)g, (long long)ng);
        for (int64_t j = 0; j < out; j++) {
            const uint32_t q = get_field(qw->data + 4 * j, out, i, b);
            const int64_t zz = get_field(qz->data + 4 * g * (out * b / 32), 1, j, b) + !f->v2;
            MPQ_CHECK(zz < ((int64_t)1 << b), MPQ_ERR_FORMAT,
                      "%s: tensor '%s': the zero-point of group %lld, output %lld is %lld, above "
                      "the %d-bit range (v1 stores zero - 1: a stored %lld means a zero of 0 "
                      "that v1 cannot hold)",
                      f->path, qz->name, (long long)g, (long long)j, (long long)zz, b,
                      (long long)(zz - 1));
            w[j * in + i] = scale[g * out + j] * ((float)q - (float)zz);
        }
    }
    char name[MPQ_TENSOR_NAME_MAX];
    MPQ_CHECK(snprintf(name, sizeof name, "%s.weight", mod) < (int)sizeof name, MPQ_ERR_FORMAT,
              "%s: module name '%s' too long", f->path, mod);
    mpq_tensor t;
    const int64_t shape[2] = {out, in};
    MPQ_CALL(mpq_tensor_init(ctx, &t, name, MPQ_DTYPE_F32, 2, shape, w, f->path));
    MPQ_CALL(mpq_model_add_tensor(ctx, m, &t));
    return MPQ_OK;
}

/* ---- the format -------------------------------------------------------------------- */

/* Every quantized module, then every tensor no module consumed. */
static mpq_err read_tensors(mpq_ctx *ctx, mpq_model *m, gq_file *f) {
    for (int64_t k = 0; k < f->n; k++) {
        gq_entry *e = &f->e[k];
        if (!ends_with(e->name, ".qweight"))
            continue;
        char mod[MPQ_TENSOR_NAME_MAX];
        snprintf(mod, sizeof mod, "%.*s", (int)(strlen(e->name) - 8), e->name);
        gq_setting s;
        int skip = 0;
        MPQ_CALL(module_setting(ctx, f, mod, &s, &skip));
        MPQ_CHECK(!skip, MPQ_ERR_FORMAT,
                  "%s: tensor '%s': quantization_config.dynamic leaves module %s unquantized, but "
                  "it has a qweight",
                  f->path, e->name, mod);
        MPQ_CALL(read_module(ctx, m, f, e, mod, &s));
    }
    for (int64_t k = 0; k < f->n; k++) {
        const gq_entry *e = &f->e[k];
        if (e->used)
            continue;
        MPQ_CHECK(e->dtype != GQ_I32, MPQ_ERR_FORMAT,
                  "%s: tensor '%s' is I32 but not part of a module with a qweight", f->path,
                  e->name);
        mpq_tensor t;
        MPQ_CALL(mpq_tensor_init(ctx, &t, e->name, (mpq_dtype)e->dtype, e->ndim, e->shape, e->data,
                                 f->path));
        MPQ_CALL(mpq_model_add_tensor(ctx, m, &t));
    }
    return MPQ_OK;
}

static mpq_err gq_open(mpq_ctx *ctx, mpq_model *m, const char *path) {
    mpq_err err = MPQ_OK;
    cJSON *cfg = NULL, *hdr = NULL;
    char file[GQ_PATH_MAX + 32], cpath[GQ_PATH_MAX + 32];
    struct stat st;
    gq_file f = {0};
    MPQ_CHECK(stat(path, &st) == 0, MPQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    MPQ_CHECK(strlen(path) < GQ_PATH_MAX, MPQ_ERR_ARG, "%s: path too long", path);
    gq_paths(path, S_ISDIR(st.st_mode), file, cpath, sizeof file);
    MPQ_CHECK(is_file(file), MPQ_ERR_IO,
              "%s: no model.safetensors (sharded GPTQ checkpoints are not read)", path);
    f.path = file;
    f.cpath = cpath;
    mpq_arch a = {0};
    MPQ_TRY(mpq_io_read_hf_config(ctx, cpath, &a));
    MPQ_TRY(mpq_io_read_json(ctx, cpath, &cfg));
    MPQ_TRY(read_qconfig(ctx, &f, cfg));
    MPQ_TRY(read_header(ctx, m, &f, &hdr));
    MPQ_TRY(read_tensors(ctx, m, &f));
    MPQ_TRY(mpq_model_seal_buffers(ctx, m));
    snprintf(a.format, sizeof a.format, "gptq");
    mpq_model_set_arch(m, &a);
    MPQ_TRY(mpq_io_set_arch_source(ctx, m, cpath));
    MPQ_TRY(mpq_io_check_llama(ctx, m));
cleanup:
    mpq_free(f.e);
    cJSON_Delete(hdr);
    cJSON_Delete(cfg);
    return err;
}

/* A directory or .safetensors file whose config.json names quant_method
 * "gptq" (read here: probes have no context to report errors through). */
static int gq_probe(const char *path, int is_dir, const unsigned char *head, size_t nhead) {
    (void)head;
    (void)nhead;
    char file[GQ_PATH_MAX + 32], cpath[GQ_PATH_MAX + 32];
    if ((!is_dir && !ends_with(path, ".safetensors")) || strlen(path) >= GQ_PATH_MAX)
        return 0;
    gq_paths(path, is_dir, file, cpath, sizeof file);
    struct stat st;
    if (stat(cpath, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (64 << 20))
        return 0;
    FILE *fp = fopen(cpath, "rb");
    char *text = fp ? malloc((size_t)st.st_size + 1) : NULL;
    size_t n = text ? fread(text, 1, (size_t)st.st_size, fp) : 0;
    if (fp)
        fclose(fp);
    if (!text)
        return 0;
    cJSON *cfg = cJSON_ParseWithLength(text, n);
    free(text);
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config");
    const cJSON *qm = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    int hit = cJSON_IsString(qm) && strcmp(qm->valuestring, "gptq") == 0;
    cJSON_Delete(cfg);
    return hit;
}

const mpq_model_format mpq_format_gptq = {
    .name = "gptq",
    .probe = gq_probe,
    .open = gq_open,
};
