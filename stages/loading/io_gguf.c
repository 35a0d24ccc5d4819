/* io_gguf.c: GGUF files (versions 2 and 3, little-endian) of architecture
 * "llama", read from a read-only mapping.
 *
 * Layout (gguf.md of ggml): magic "GGUF", uint32 version, uint64 tensor
 * count, uint64 key-value count; the key-value pairs (key: uint64 length +
 * bytes; uint32 value type; value: a scalar, a string, or an array: uint32
 * element type, uint64 count, elements, possibly arrays again); the tensor
 * infos (name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml type, uint64
 * offset); padding to general.alignment (default 32); the data section,
 * where each tensor's offset is a multiple of the alignment. ne[0] is the
 * row length: a tensor [ne1][ne0] in mpquant's row-major shapes.
 *
 * Everything is checked against the file size before it is read. Tensors
 * get mpquant's Hugging Face names; F32, F16 and BF16 stay in the mapping,
 * the block-quantized types are dequantized at open time into an F32 buffer
 * the model owns (io_gguf_dequant.c). llama.cpp stores q/k rows in the
 * interleaved RoPE order of Meta's (and llama2.c's) checkpoints: the rows
 * are kept as they are and the architecture says rope_interleaved.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "family_internal.h"
#include "io_gguf_internal.h"
#include "io_internal.h"

#define GGUF_MAGIC         "GGUF"
#define GGUF_ALIGN_DEFAULT 32
#define GGUF_MAX_DEPTH     8 /* nested arrays deeper than this are refused */
#define GGUF_KEY_SHOW      96

enum {
    GT_U8 = 0,
    GT_I8,
    GT_U16,
    GT_I16,
    GT_U32,
    GT_I32,
    GT_F32,
    GT_BOOL,
    GT_STRING,
    GT_ARRAY,
    GT_U64,
    GT_I64,
    GT_F64,
    GT_COUNT
};

static const char *const vtype_names[GT_COUNT] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                                  "int32",  "float32", "bool",   "string", "array",
                                                  "uint64", "int64",   "float64"};
/* Bytes of a scalar value type; 0 for string and array. */
static const size_t vtype_size[GT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

typedef struct {
    const unsigned char *key; /* in the mapping, not NUL-terminated */
    size_t klen;
    uint32_t type;
    size_t val;     /* offset of the value (of the first element for arrays) */
    uint32_t atype; /* arrays: element type and count */
    uint64_t n;
} gg_kv;

typedef struct {
    char name[MPQ_TENSOR_NAME_MAX]; /* GGUF name */
    int ndim;
    int64_t ne[MPQ_TENSOR_MAXDIM];
    int64_t numel;
    uint32_t type;
    uint64_t offset; /* relative to the data section */
    int64_t nbytes;
} gg_tensor;

typedef struct {
    const char *file;
    const unsigned char *base;
    size_t size, pos;
    int64_t nkv, ntensors;
    gg_kv *kv;    /* [nkv] */
    gg_tensor *t; /* [ntensors] */
    uint64_t align;
    size_t data; /* offset of the data section */
} gg_file;

/* ---- bounded reads ---------------------------------------------------------- */

/* n more bytes must exist at the cursor; `what` and `name` say what they
 * are (a key, a tensor) in the message. */
static mpq_err gg_need(mpq_ctx *ctx, const gg_file *g, uint64_t n, const char *what,
                       const char *name) {
    MPQ_CHECK(n <= g->size - g->pos, MPQ_ERR_FORMAT,
              "%s: truncated: reading %s%s%s%s needs %llu bytes at offset %zu, the file has %zu",
              g->file, what, name ? " '" : "", name ? name : "", name ? "'" : "",
              (unsigned long long)n, g->pos, g->size);
    return MPQ_OK;
}

static mpq_err gg_u32(mpq_ctx *ctx, gg_file *g, const char *what, const char *name, uint32_t *out) {
    MPQ_CALL(gg_need(ctx, g, 4, what, name));
    *out = mpq_io_le32(g->base + g->pos);
    g->pos += 4;
    return MPQ_OK;
}

static mpq_err gg_u64(mpq_ctx *ctx, gg_file *g, const char *what, const char *name, uint64_t *out) {
    MPQ_CALL(gg_need(ctx, g, 8, what, name));
    *out = mpq_io_le64(g->base + g->pos);
    g->pos += 8;
    return MPQ_OK;
}

/* A string: uint64 length, bytes. *s points into the mapping. */
static mpq_err gg_str(mpq_ctx *ctx, gg_file *g, const char *what, const char *name,
                      const unsigned char **s, size_t *len) {
    uint64_t n = 0;
    MPQ_CALL(gg_u64(ctx, g, what, name, &n));
    MPQ_CALL(gg_need(ctx, g, n, what, name));
    *s = g->base + g->pos;
    *len = (size_t)n;
    g->pos += (size_t)n;
    return MPQ_OK;
}

/* "key" as a C string for messages (truncated). */
static const char *show(const unsigned char *s, size_t len, char *buf, size_t cap) {
    snprintf(buf, cap, "%.*s", (int)(len < cap - 1 ? len : cap - 1), (const char *)s);
    return buf;
}

/* Steps over a value of type `type` (elements of an array are values too). */
static mpq_err gg_skip(mpq_ctx *ctx, gg_file *g, uint32_t type, int depth, const char *key) {
    MPQ_CHECK(type < GT_COUNT, MPQ_ERR_FORMAT, "%s: key '%s': unknown value type %u at offset %zu",
              g->file, key, (unsigned)type, g->pos);
    if (vtype_size[type]) {
        MPQ_CALL(gg_need(ctx, g, vtype_size[type], "the value of key", key));
        g->pos += vtype_size[type];
        return MPQ_OK;
    }
    if (type == GT_STRING) {
        const unsigned char *s = NULL;
        size_t len = 0;
        return gg_str(ctx, g, "the string value of key", key, &s, &len);
    }
    MPQ_CHECK(depth < GGUF_MAX_DEPTH, MPQ_ERR_FORMAT,
              "%s: key '%s': arrays nested deeper than %d levels", g->file, key, GGUF_MAX_DEPTH);
    uint32_t at = 0;
    uint64_t n = 0;
    MPQ_CALL(gg_u32(ctx, g, "the array type of key", key, &at));
    MPQ_CALL(gg_u64(ctx, g, "the array length of key", key, &n));
    MPQ_CHECK(at < GT_COUNT, MPQ_ERR_FORMAT, "%s: key '%s': unknown array element type %u", g->file,
              key, (unsigned)at);
    if (vtype_size[at]) {
        MPQ_CHECK(n <= (g->size - g->pos) / vtype_size[at], MPQ_ERR_FORMAT,
                  "%s: truncated: the %llu %s elements of key '%s' at offset %zu pass the end of "
                  "the file (%zu bytes)",
                  g->file, (unsigned long long)n, vtype_names[at], key, g->pos, g->size);
        g->pos += (size_t)n * vtype_size[at];
        return MPQ_OK;
    }
    /* Strings and arrays take at least 8 bytes each: n is bounded by the
     * file before the loop starts. */
    MPQ_CHECK(n <= (g->size - g->pos) / 8, MPQ_ERR_FORMAT,
              "%s: truncated: the %llu %s elements of key '%s' at offset %zu pass the end of the "
              "file (%zu bytes)",
              g->file, (unsigned long long)n, vtype_names[at], key, g->pos, g->size);
    for (uint64_t i = 0; i < n; i++)
        MPQ_CALL(gg_skip(ctx, g, at, depth + 1, key));
    return MPQ_OK;
}

/* ---- header and key-value pairs ---------------------------------------------- */

static const gg_kv *gg_find(const gg_file *g, const char *key) {
    size_t n = strlen(key);
    for (int64_t i = 0; i < g->nkv; i++)
        if (g->kv[i].klen == n && memcmp(g->kv[i].key, key, n) == 0)
            return &g->kv[i];
    return NULL;
}

static int cmp_key(const void *a, const void *b) {
    const gg_kv *x = *(const gg_kv *const *)a, *y = *(const gg_kv *const *)b;
    int c = memcmp(x->key, y->key, x->klen < y->klen ? x->klen : y->klen);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* Two values under one key would make lookups ambiguous (sorted: a file
 * of many keys costs O(n log n), not O(n^2)). */
static mpq_err gg_check_unique_keys(mpq_ctx *ctx, const gg_file *g) {
    mpq_err err = MPQ_OK;
    const gg_kv **v = NULL;
    MPQ_ALLOC(v, g->nkv > 0 ? g->nkv : 1);
    for (int64_t i = 0; i < g->nkv; i++)
        v[i] = &g->kv[i];
    qsort(v, (size_t)g->nkv, sizeof *v, cmp_key);
    for (int64_t i = 1; i < g->nkv; i++) {
        char key[GGUF_KEY_SHOW];
        MPQ_ENSURE(cmp_key(&v[i - 1], &v[i]) != 0, MPQ_ERR_FORMAT, "%s: key '%s' appears twice",
                   g->file, show(v[i]->key, v[i]->klen, key, sizeof key));
    }
cleanup:
    mpq_free(v);
    return err;
}

static mpq_err gg_read_kvs(mpq_ctx *ctx, gg_file *g) {
    for (int64_t i = 0; i < g->nkv; i++) {
        gg_kv *kv = &g->kv[i];
        char what[48], key[GGUF_KEY_SHOW];
        snprintf(what, sizeof what, "key %lld", (long long)i);
        MPQ_CALL(gg_str(ctx, g, what, NULL, &kv->key, &kv->klen));
        show(kv->key, kv->klen, key, sizeof key);
        MPQ_CHECK(kv->klen > 0, MPQ_ERR_FORMAT, "%s: key %lld is empty", g->file, (long long)i);
        MPQ_CALL(gg_u32(ctx, g, "the value type of key", key, &kv->type));
        kv->val = g->pos;
        if (kv->type == GT_ARRAY && g->size - g->pos >= 12) {
            kv->atype = mpq_io_le32(g->base + g->pos);
            kv->n = mpq_io_le64(g->base + g->pos + 4);
            kv->val = g->pos + 12;
        }
        MPQ_CALL(gg_skip(ctx, g, kv->type, 0, key));
    }
    return gg_check_unique_keys(ctx, g);
}

/* An integer key of any integer type; absent: def (an error when def < 0).
 * The value must lie in [lo, hi]. */
static mpq_err gg_int(mpq_ctx *ctx, const gg_file *g, const char *key, int64_t def, int64_t lo,
                      int64_t hi, int64_t *out) {
    const gg_kv *kv = gg_find(g, key);
    if (!kv) {
        MPQ_CHECK(def >= 0, MPQ_ERR_FORMAT, "%s: required key '%s' is missing", g->file, key);
        *out = def;
        return MPQ_OK;
    }
    const unsigned char *p = g->base + kv->val;
    int64_t v = 0;
    switch (kv->type) {
        case GT_U8:
            v = p[0];
            break;
        case GT_I8:
            v = (int8_t)p[0];
            break;
        case GT_U16:
            v = (uint16_t)(p[0] | p[1] << 8);
            break;
        case GT_I16:
            v = (int16_t)(uint16_t)(p[0] | p[1] << 8);
            break;
        case GT_U32:
            v = mpq_io_le32(p);
            break;
        case GT_I32:
            v = (int32_t)mpq_io_le32(p);
            break;
        case GT_U64:
            MPQ_CHECK(mpq_io_le64(p) <= INT64_MAX, MPQ_ERR_FORMAT,
                      "%s: key '%s' = %llu is out of range", g->file, key,
                      (unsigned long long)mpq_io_le64(p));
            v = (int64_t)mpq_io_le64(p);
            break;
        case GT_I64:
            v = (int64_t)mpq_io_le64(p);
            break;
        default:
            return MPQ_ERROR(MPQ_ERR_FORMAT, "%s: key '%s' has type %s, expected an integer",
                             g->file, key, vtype_names[kv->type]);
    }
    MPQ_CHECK(v >= lo && v <= hi, MPQ_ERR_FORMAT,
              "%s: key '%s' = %lld is out of range [%lld, %lld]", g->file, key, (long long)v,
              (long long)lo, (long long)hi);
    *out = v;
    return MPQ_OK;
}

/* The decimal a float32 was written from: the shortest one that rounds to
 * it (config.json's 1e-05 stored as float32 reads back as 1e-05, not as
 * 9.99999974737875e-06). */
static double f32_decimal(float f) {
    char buf[32];
    for (int prec = 1; prec < 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f)
            return d;
    }
    return (double)f;
}

/* A positive, finite real key (float32 or float64); absent: def (an error
 * when def <= 0). */
static mpq_err gg_real(mpq_ctx *ctx, const gg_file *g, const char *key, double def, double *out) {
    const gg_kv *kv = gg_find(g, key);
    if (!kv) {
        MPQ_CHECK(def > 0, MPQ_ERR_FORMAT, "%s: required key '%s' is missing", g->file, key);
        *out = def;
        return MPQ_OK;
    }
    double v = 0.0;
    if (kv->type == GT_F32) {
        uint32_t u = mpq_io_le32(g->base + kv->val);
        float f;
        memcpy(&f, &u, sizeof f);
        v = isfinite(f) ? f32_decimal(f) : (double)f;
    } else if (kv->type == GT_F64) {
        uint64_t u = mpq_io_le64(g->base + kv->val);
        memcpy(&v, &u, sizeof v);
    } else {
        return MPQ_ERROR(MPQ_ERR_FORMAT, "%s: key '%s' has type %s, expected float32 or float64",
                         g->file, key, vtype_names[kv->type]);
    }
    MPQ_CHECK(v > 0.0 && isfinite(v), MPQ_ERR_FORMAT,
              "%s: key '%s' = %g must be a positive finite number", g->file, key, v);
    *out = v;
    return MPQ_OK;
}

/* A string key into buf (NUL-terminated; longer values are an error);
 * absent: "" when optional. */
static mpq_err gg_string(mpq_ctx *ctx, const gg_file *g, const char *key, int required, char *buf,
                         size_t cap) {
    const gg_kv *kv = gg_find(g, key);
    buf[0] = '\0';
    if (!kv) {
        MPQ_CHECK(!required, MPQ_ERR_FORMAT, "%s: required key '%s' is missing", g->file, key);
        return MPQ_OK;
    }
    MPQ_CHECK(kv->type == GT_STRING, MPQ_ERR_FORMAT, "%s: key '%s' has type %s, expected string",
              g->file, key, vtype_names[kv->type]);
    uint64_t len = mpq_io_le64(g->base + kv->val);
    MPQ_CHECK(len < cap, MPQ_ERR_FORMAT, "%s: key '%s': a string of %llu bytes is too long",
              g->file, key, (unsigned long long)len);
    memcpy(buf, g->base + kv->val + 8, (size_t)len);
    buf[len] = '\0';
    MPQ_CHECK(strlen(buf) == (size_t)len, MPQ_ERR_FORMAT, "%s: key '%s' holds a NUL byte", g->file,
              key);
    return MPQ_OK;
}

/* ---- tensor infos ------------------------------------------------------------ */

static mpq_err gg_read_tensor(mpq_ctx *ctx, gg_file *g, int64_t i, gg_tensor *t) {
    char what[48];
    snprintf(what, sizeof what, "the name of tensor %lld", (long long)i);
    const unsigned char *s = NULL;
    size_t len = 0;
    MPQ_CALL(gg_str(ctx, g, what, NULL, &s, &len));
    MPQ_CHECK(len > 0 && len < MPQ_TENSOR_NAME_MAX, MPQ_ERR_FORMAT,
              "%s: tensor %lld: name of %zu bytes is empty or longer than %d", g->file,
              (long long)i, len, MPQ_TENSOR_NAME_MAX - 1);
    memcpy(t->name, s, len);
    t->name[len] = '\0';
    MPQ_CHECK(strlen(t->name) == len, MPQ_ERR_FORMAT, "%s: tensor %lld: name holds a NUL byte",
              g->file, (long long)i);
    uint32_t nd = 0;
    MPQ_CALL(gg_u32(ctx, g, "n_dims of tensor", t->name, &nd));
    MPQ_CHECK(nd >= 1 && nd <= MPQ_TENSOR_MAXDIM, MPQ_ERR_FORMAT,
              "%s: tensor '%s': n_dims = %u, expected 1 to %d", g->file, t->name, (unsigned)nd,
              MPQ_TENSOR_MAXDIM);
    t->ndim = (int)nd;
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t ne = 0;
        MPQ_CALL(gg_u64(ctx, g, "the dimensions of tensor", t->name, &ne));
        MPQ_CHECK(ne >= 1 && ne <= (uint64_t)INT64_MAX / (uint64_t)t->numel, MPQ_ERR_FORMAT,
                  "%s: tensor '%s': dimension ne[%d] = %llu is zero or overflows the element "
                  "count",
                  g->file, t->name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        t->numel *= (int64_t)ne;
    }
    MPQ_CALL(gg_u32(ctx, g, "the type of tensor", t->name, &t->type));
    MPQ_CALL(gg_u64(ctx, g, "the offset of tensor", t->name, &t->offset));
    const mpq_gguf_type *ty = mpq_gguf_type_get(t->type);
    MPQ_CHECK(ty, MPQ_ERR_FORMAT, "%s: tensor '%s' has unknown ggml type %u", g->file, t->name,
              (unsigned)t->type);
    MPQ_CHECK(t->ne[0] % ty->block == 0, MPQ_ERR_FORMAT,
              "%s: tensor '%s': row length ne[0] = %lld is not a multiple of the %s block size "
              "%lld",
              g->file, t->name, (long long)t->ne[0], ty->name, (long long)ty->block);
    /* numel / block blocks of ty->bytes: no overflow, bytes <= 292 */
    int64_t blocks = t->numel / ty->block;
    MPQ_CHECK(blocks <= INT64_MAX / ty->bytes, MPQ_ERR_FORMAT, "%s: tensor '%s': size overflows",
              g->file, t->name);
    t->nbytes = blocks * ty->bytes;
    return MPQ_OK;
}

/* The tensors' data must lie inside the data section and not overlap. */
static int cmp_offset(const void *a, const void *b) {
    const gg_tensor *x = *(const gg_tensor *const *)a, *y = *(const gg_tensor *const *)b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

static mpq_err gg_check_extents(mpq_ctx *ctx, const gg_file *g) {
    mpq_err err = MPQ_OK;
    const gg_tensor **v = NULL;
    const uint64_t room = g->size - g->data;
    for (int64_t i = 0; i < g->ntensors; i++) {
        const gg_tensor *t = &g->t[i];
        MPQ_CHECK(t->offset % g->align == 0, MPQ_ERR_FORMAT,
                  "%s: tensor '%s': offset %llu is not a multiple of general.alignment %llu",
                  g->file, t->name, (unsigned long long)t->offset, (unsigned long long)g->align);
        MPQ_CHECK(t->offset <= room && (uint64_t)t->nbytes <= room - t->offset, MPQ_ERR_FORMAT,
                  "%s: tensor '%s': data [%llu, %llu) of the data section (at offset %zu) passes "
                  "the end of the file (%zu bytes): truncated?",
                  g->file, t->name, (unsigned long long)t->offset,
                  (unsigned long long)t->offset + (unsigned long long)t->nbytes, g->data, g->size);
    }
    MPQ_ALLOC(v, g->ntensors > 0 ? g->ntensors : 1);
    for (int64_t i = 0; i < g->ntensors; i++)
        v[i] = &g->t[i];
    qsort(v, (size_t)g->ntensors, sizeof *v, cmp_offset);
    for (int64_t i = 1; i < g->ntensors; i++)
        MPQ_ENSURE(v[i - 1]->offset + (uint64_t)v[i - 1]->nbytes <= v[i]->offset, MPQ_ERR_FORMAT,
                   "%s: tensors '%s' and '%s' overlap in the data section", g->file, v[i - 1]->name,
                   v[i]->name);
cleanup:
    mpq_free(v);
    return err;
}

/* Header, key-value pairs, alignment, tensor infos, extents. */
static mpq_err gg_parse(mpq_ctx *ctx, gg_file *g) {
    MPQ_CHECK(g->size >= 24, MPQ_ERR_FORMAT,
              "%s: truncated: %zu bytes, the GGUF header alone is 24 bytes", g->file, g->size);
    MPQ_CHECK(memcmp(g->base, GGUF_MAGIC, 4) == 0, MPQ_ERR_FORMAT, "%s: no GGUF magic", g->file);
    uint32_t version = mpq_io_le32(g->base + 4);
    MPQ_CHECK(version == 2 || version == 3, MPQ_ERR_FORMAT,
              "%s: header field version = %u is not supported (GGUF 2 and 3, little-endian%s)",
              g->file, (unsigned)version,
              version == 1 ? "; version 1 is obsolete" : (version > 0xffff ? "; big-endian?" : ""));
    uint64_t nt = mpq_io_le64(g->base + 8), nkv = mpq_io_le64(g->base + 16);
    g->pos = 24;
    /* A key-value pair takes at least 13 bytes, a tensor info 28: both
     * counts are bounded by the file before anything is allocated. */
    MPQ_CHECK(nkv <= (g->size - g->pos) / 13, MPQ_ERR_FORMAT,
              "%s: truncated or corrupt: header field metadata_kv_count = %llu (at least 13 "
              "bytes each) does not fit in the file (%zu bytes)",
              g->file, (unsigned long long)nkv, g->size);
    g->nkv = (int64_t)nkv;
    MPQ_ALLOC(g->kv, g->nkv > 0 ? g->nkv : 1);
    MPQ_CALL(gg_read_kvs(ctx, g));
    MPQ_CHECK(nt <= (g->size - g->pos) / 28, MPQ_ERR_FORMAT,
              "%s: truncated or corrupt: header field tensor_count = %llu (at least 28 bytes "
              "each) does not fit in the %zu bytes left after the key-value pairs",
              g->file, (unsigned long long)nt, g->size - g->pos);
    g->ntensors = (int64_t)nt;
    MPQ_ALLOC(g->t, g->ntensors > 0 ? g->ntensors : 1);
    int64_t align = 0;
    const gg_kv *ak = gg_find(g, "general.alignment");
    MPQ_CHECK(!ak || ak->type == GT_U32, MPQ_ERR_FORMAT,
              "%s: key 'general.alignment' has type %s, expected uint32", g->file,
              ak ? vtype_names[ak->type] : "");
    MPQ_CALL(gg_int(ctx, g, "general.alignment", GGUF_ALIGN_DEFAULT, 1, 1 << 30, &align));
    MPQ_CHECK((align & (align - 1)) == 0, MPQ_ERR_FORMAT,
              "%s: key 'general.alignment' = %lld is not a power of two", g->file,
              (long long)align);
    g->align = (uint64_t)align;
    for (int64_t i = 0; i < g->ntensors; i++)
        MPQ_CALL(gg_read_tensor(ctx, g, i, &g->t[i]));
    size_t data = (g->pos + (size_t)align - 1) / (size_t)align * (size_t)align;
    MPQ_CHECK(data <= g->size, MPQ_ERR_FORMAT,
              "%s: truncated: the data section would start at offset %zu (alignment %lld), past "
              "the end of the file (%zu bytes)",
              g->file, data, (long long)align, g->size);
    g->data = data;
    MPQ_CALL(gg_check_extents(ctx, g));
    return MPQ_OK;
}

/* ---- the Llama architecture ---------------------------------------------------- */

static const gg_tensor *gg_tensor_find(const gg_file *g, const char *name) {
    for (int64_t i = 0; i < g->ntensors; i++)
        if (strcmp(g->t[i].name, name) == 0)
            return &g->t[i];
    return NULL;
}

/* llama.rope.scaling.type ("none", "linear"; others refused) with
 * llama.rope.scaling.factor, or the older llama.rope.scale_linear. */
static mpq_err gg_read_rope_scaling(mpq_ctx *ctx, const gg_file *g, mpq_arch *a) {
    char type[32];
    MPQ_CALL(gg_string(ctx, g, "llama.rope.scaling.type", 0, type, sizeof type));
    a->rope_scaling = MPQ_ROPE_NONE;
    if (!type[0] && gg_find(g, "llama.rope.scale_linear")) {
        MPQ_CALL(gg_real(ctx, g, "llama.rope.scale_linear", 0.0, &a->rope_factor));
        if (a->rope_factor != 1.0)
            a->rope_scaling = MPQ_ROPE_LINEAR;
    } else if (type[0] && strcmp(type, "none") != 0) {
        MPQ_CHECK(strcmp(type, "linear") == 0, MPQ_ERR_FORMAT,
                  "%s: key 'llama.rope.scaling.type' is '%s'; only 'none' and 'linear' are "
                  "supported",
                  g->file, type);
        MPQ_CALL(gg_real(ctx, g, "llama.rope.scaling.factor", 0.0, &a->rope_factor));
        a->rope_scaling = MPQ_ROPE_LINEAR;
    }
    MPQ_CHECK(a->rope_scaling == MPQ_ROPE_NONE || a->rope_factor >= 1.0, MPQ_ERR_FORMAT,
              "%s: the linear RoPE scaling factor %g must be at least 1", g->file, a->rope_factor);
    /* Llama 3.1's frequency factors: llama.cpp computes them from the
     * llama3 rope_scaling parameters, which the file does not keep. */
    MPQ_CHECK(!gg_tensor_find(g, "rope_freqs.weight"), MPQ_ERR_FORMAT,
              "%s: tensor 'rope_freqs.weight' (RoPE frequency factors, Llama 3.1 and later) is "
              "not supported",
              g->file);
    return MPQ_OK;
}

static mpq_err gg_read_arch(mpq_ctx *ctx, const gg_file *g, mpq_arch *a) {
    char arch[64];
    MPQ_CALL(gg_string(ctx, g, "general.architecture", 1, arch, sizeof arch));
    MPQ_CHECK(strcmp(arch, "llama") == 0, MPQ_ERR_FORMAT,
              "%s: key 'general.architecture' is '%s'; only 'llama' is supported", g->file, arch);
    snprintf(a->family, sizeof a->family, "%s", mpq_family_llama_ops.name);
    snprintf(a->format, sizeof a->format, "gguf");
    snprintf(a->model_type, sizeof a->model_type, "llama");
    const int64_t big = INT32_MAX;
    MPQ_CALL(gg_int(ctx, g, "llama.context_length", -1, 1, big, &a->seq_len));
    MPQ_CALL(gg_int(ctx, g, "llama.embedding_length", -1, 1, big, &a->dim));
    MPQ_CALL(gg_int(ctx, g, "llama.feed_forward_length", -1, 1, big, &a->hidden_dim));
    MPQ_CALL(gg_int(ctx, g, "llama.block_count", -1, 1, big, &a->n_layers));
    MPQ_CALL(gg_int(ctx, g, "llama.attention.head_count", -1, 1, big, &a->n_heads));
    MPQ_CALL(gg_int(ctx, g, "llama.attention.head_count_kv", a->n_heads, 1, big, &a->n_kv_heads));
    MPQ_CHECK(a->dim % a->n_heads == 0 || gg_find(g, "llama.attention.key_length"), MPQ_ERR_FORMAT,
              "%s: key 'llama.embedding_length' = %lld is not a multiple of "
              "'llama.attention.head_count' = %lld (and no 'llama.attention.key_length')",
              g->file, (long long)a->dim, (long long)a->n_heads);
    MPQ_CALL(
        gg_int(ctx, g, "llama.attention.key_length", a->dim / a->n_heads, 1, big, &a->head_dim));
    int64_t v = 0;
    MPQ_CALL(gg_int(ctx, g, "llama.attention.value_length", a->head_dim, 1, big, &v));
    MPQ_CHECK(v == a->head_dim, MPQ_ERR_FORMAT,
              "%s: key 'llama.attention.value_length' = %lld differs from the key length %lld",
              g->file, (long long)v, (long long)a->head_dim);
    MPQ_CALL(gg_int(ctx, g, "llama.rope.dimension_count", a->head_dim, 1, big, &v));
    MPQ_CHECK(v == a->head_dim, MPQ_ERR_FORMAT,
              "%s: key 'llama.rope.dimension_count' = %lld: partial rotary embeddings (head "
              "size %lld) are not supported",
              g->file, (long long)v, (long long)a->head_dim);
    MPQ_CALL(gg_int(ctx, g, "llama.expert_count", 0, 0, big, &v));
    MPQ_CHECK(v == 0, MPQ_ERR_FORMAT,
              "%s: key 'llama.expert_count' = %lld: mixture-of-experts models are not supported",
              g->file, (long long)v);
    MPQ_CALL(gg_real(ctx, g, "llama.attention.layer_norm_rms_epsilon", 0.0, &a->norm_eps));
    MPQ_CALL(gg_real(ctx, g, "llama.rope.freq_base", 10000.0, &a->rope_theta));
    MPQ_CALL(gg_read_rope_scaling(ctx, g, a));
    const gg_tensor *emb = gg_tensor_find(g, "token_embd.weight");
    MPQ_CHECK(emb, MPQ_ERR_FORMAT, "%s: tensor 'token_embd.weight' is missing", g->file);
    MPQ_CHECK(emb->ndim == 2, MPQ_ERR_FORMAT,
              "%s: tensor 'token_embd.weight' has %d dimensions, expected 2", g->file, emb->ndim);
    a->vocab_size = emb->ne[1];
    MPQ_CALL(gg_int(ctx, g, "llama.vocab_size", a->vocab_size, 1, INT64_MAX, &v));
    MPQ_CHECK(v == a->vocab_size, MPQ_ERR_FORMAT,
              "%s: key 'llama.vocab_size' = %lld, but tensor 'token_embd.weight' has %lld rows",
              g->file, (long long)v, (long long)a->vocab_size);
    a->tied_embeddings = gg_tensor_find(g, "output.weight") == NULL;
    a->rope_interleaved = 1;
    return MPQ_OK;
}

/* ---- tensor names ---------------------------------------------------------------- */

static const char *const global_names[][2] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

/* Suffixes of blk.N.*, the Hugging Face suffix of model.layers.N.*, and
 * which bias flag the tensor sets (1: q/k/v, 2: o_proj). */
static const struct {
    const char *gguf, *hf;
    int bias;
} layer_names[] = {
    {"attn_norm.weight", "input_layernorm.weight", 0},
    {"attn_q.weight", "self_attn.q_proj.weight", 0},
    {"attn_k.weight", "self_attn.k_proj.weight", 0},
    {"attn_v.weight", "self_attn.v_proj.weight", 0},
    {"attn_q.bias", "self_attn.q_proj.bias", 1},
    {"attn_k.bias", "self_attn.k_proj.bias", 1},
    {"attn_v.bias", "self_attn.v_proj.bias", 1},
    {"attn_output.weight", "self_attn.o_proj.weight", 0},
    {"attn_output.bias", "self_attn.o_proj.bias", 2},
    {"ffn_norm.weight", "post_attention_layernorm.weight", 0},
    {"ffn_gate.weight", "mlp.gate_proj.weight", 0},
    {"ffn_up.weight", "mlp.up_proj.weight", 0},
    {"ffn_down.weight", "mlp.down_proj.weight", 0},
};

/* The Hugging Face name of GGUF tensor t into out; sets a's bias flags. */
static mpq_err gg_map_name(mpq_ctx *ctx, const gg_file *g, const gg_tensor *t, mpq_arch *a,
                           char *out, size_t cap) {
    for (size_t i = 0; i < sizeof global_names / sizeof global_names[0]; i++)
        if (strcmp(t->name, global_names[i][0]) == 0) {
            snprintf(out, cap, "%s", global_names[i][1]);
            return MPQ_OK;
        }
    const char *p = t->name;
    if (strncmp(p, "blk.", 4) == 0) {
        p += 4;
        int64_t layer = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 10) {
            layer = 10 * layer + (*p++ - '0');
            digits++;
        }
        int canonical = digits > 0 && *p == '.' && (digits == 1 || t->name[4] != '0');
        MPQ_CHECK(!canonical || layer < a->n_layers, MPQ_ERR_FORMAT,
                  "%s: tensor '%s': layer %lld is not below 'llama.block_count' = %lld", g->file,
                  t->name, (long long)layer, (long long)a->n_layers);
        for (size_t i = 0; canonical && i < sizeof layer_names / sizeof layer_names[0]; i++)
            if (strcmp(p + 1, layer_names[i].gguf) == 0) {
                snprintf(out, cap, "model.layers.%lld.%s", (long long)layer, layer_names[i].hf);
                a->qkv_bias |= layer_names[i].bias == 1;
                a->o_bias |= layer_names[i].bias == 2;
                return MPQ_OK;
            }
    }
    return MPQ_ERROR(MPQ_ERR_FORMAT,
                     "%s: tensor '%s' is not a tensor of a Llama model (token_embd, output_norm, "
                     "output, blk.N.attn_*/ffn_*)",
                     g->file, t->name);
}

/* Appends every tensor to m: kept types point into the mapping, the others
 * are dequantized into one F32 buffer owned by m. */
static mpq_err gg_add_tensors(mpq_ctx *ctx, mpq_model *m, const gg_file *g) {
    int64_t fbytes = 0;
    for (int64_t i = 0; i < g->ntensors; i++) {
        const gg_tensor *t = &g->t[i];
        const mpq_gguf_type *ty = mpq_gguf_type_get(t->type);
        MPQ_CHECK(ty->keep || ty->dequant, MPQ_ERR_FORMAT,
                  "%s: tensor '%s' has ggml type %s, which is not supported (F32, F16, BF16, "
                  "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
                  g->file, t->name, ty->name);
        if (!ty->keep) {
            MPQ_CHECK(t->numel <= (INT64_MAX - fbytes) / 4, MPQ_ERR_FORMAT,
                      "%s: tensor '%s': dequantized size overflows", g->file, t->name);
            fbytes += t->numel * 4;
        }
    }
    unsigned char *buf = NULL;
    if (fbytes > 0)
        MPQ_CALL(mpq_model_add_buffer(ctx, m, (size_t)fbytes, &buf));
    size_t used = 0;
    for (int64_t i = 0; i < g->ntensors; i++) {
        const gg_tensor *t = &g->t[i];
        const mpq_gguf_type *ty = mpq_gguf_type_get(t->type);
        char name[MPQ_TENSOR_NAME_MAX];
        MPQ_CALL(gg_map_name(ctx, g, t, &m->arch, name, sizeof name));
        int64_t shape[MPQ_TENSOR_MAXDIM];
        for (int d = 0; d < t->ndim; d++)
            shape[d] = t->ne[t->ndim - 1 - d];
        const unsigned char *src = g->base + g->data + t->offset;
        const void *data = src;
        if (!ty->keep) {
            float *dst = (float *)(buf + used);
            for (int64_t b = 0; b < t->numel / ty->block; b++)
                ty->dequant(src + b * ty->bytes, dst + b * ty->block);
            data = dst;
            used += (size_t)t->numel * 4;
        }
        mpq_tensor mt;
        MPQ_CALL(mpq_tensor_init(ctx, &mt, name, ty->keep ? ty->dtype : MPQ_DTYPE_F32, t->ndim,
                                 shape, data, g->file));
        MPQ_CALL(mpq_model_add_tensor(ctx, m, &mt));
    }
    if (buf)
        MPQ_CALL(mpq_model_seal_buffers(ctx, m));
    return MPQ_OK;
}

/* ---- open ------------------------------------------------------------------------ */

static mpq_err gguf_open(mpq_ctx *ctx, mpq_model *m, const char *path) {
    mpq_err err = MPQ_OK;
    const mpq_io_map *map = NULL;
    gg_file g = {0};
    MPQ_TRY(mpq_io_map_file(ctx, m, path, &map));
    g.file = map->path;
    g.base = map->base;
    g.size = map->size;
    MPQ_TRY(gg_parse(ctx, &g));
    MPQ_TRY(gg_read_arch(ctx, &g, &m->arch));
    MPQ_TRY(gg_add_tensors(ctx, m, &g));
    MPQ_TRY(mpq_io_check_llama(ctx, m));
cleanup:
    mpq_free(g.kv);
    mpq_free(g.t);
    return err;
}

static int gguf_probe(const char *path, int is_dir, const unsigned char *head, size_t nhead) {
    (void)path;
    return !is_dir && nhead >= 4 && memcmp(head, GGUF_MAGIC, 4) == 0;
}

const mpq_model_format mpq_format_gguf = {
    .name = "gguf",
    .probe = gguf_probe,
    .open = gguf_open,
};
