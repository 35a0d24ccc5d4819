/* io_model.c: the model object shared by every checkpoint format: file
 * mappings, the tensor table, lookup, fp16/bf16 conversion, the Llama
 * architecture check and the format registry behind mpq_model_open. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_internal.h"
#include "mpq_infile.h"
#include "mpq_ctx.h"
#include "mpq_model.h"
#include "mpq_model_format.h"

/* ---- dtypes ------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtype_traits[MPQ_DTYPE_COUNT] = {
    [MPQ_DTYPE_F32] = {"F32", 4},
    [MPQ_DTYPE_F16] = {"F16", 2},
    [MPQ_DTYPE_BF16] = {"BF16", 2},
};

const char *mpq_dtype_name(mpq_dtype t) {
    if ((int)t < 0 || t >= MPQ_DTYPE_COUNT)
        return "?";
    return dtype_traits[t].name;
}

size_t mpq_dtype_size(mpq_dtype t) {
    if ((int)t < 0 || t >= MPQ_DTYPE_COUNT)
        return 0;
    return dtype_traits[t].size;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float mpq_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) /* inf / NaN: keep the payload */
        return bits_f32(sign | 0x7f800000u | mant << 13);
    if (exp == 0) { /* zero or subnormal: mant * 2^-24 is exact in fp32 */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    return bits_f32(sign | (exp + 112) << 23 | mant << 13);
}

uint16_t mpq_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: quiet, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity */
        return (uint16_t)(sign | 0x7c00);
    if (ax >= 0x38800000u) { /* normal half: rebias the exponent by -112, round half to even */
        ax += 0xc8000fffu + ((ax >> 13) & 1);
        return (uint16_t)(sign | (ax >> 13));
    }
    /* subnormal half (unit 2^-24): scaling by 2^24 is exact, rintf rounds half to even;
     * 1024 units carry into the smallest normal, which the same bit pattern encodes. */
    float units = rintf(bits_f32(ax) * 16777216.0f);
    return (uint16_t)(sign | (uint16_t)units);
}

float mpq_bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

uint16_t mpq_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* ---- mappings and the tensor table --------------------------------------- */

mpq_err mpq_io_map_file(mpq_ctx *ctx, mpq_model *m, const char *path, const mpq_io_map **out) {
    mpq_err err = MPQ_OK;
    int fd = -1;
    char *copy = NULL;
    mpq_io_map *mp = NULL;
    void *base = MAP_FAILED;
    size_t size = 0;
    *out = NULL;
    if (m->nmaps == m->cap_maps) {
        int64_t cap = m->cap_maps ? 2 * m->cap_maps : 4;
        MPQ_TRY(mpq_realloc(ctx, m->cap_maps, cap, sizeof *m->maps, (void **)&m->maps));
        m->cap_maps = cap;
    }
    MPQ_TRY(mpq_infile_open(ctx, path, NULL, &fd));
    struct stat st;
    MPQ_ENSURE(fstat(fd, &st) == 0, MPQ_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    MPQ_ENSURE(S_ISREG(st.st_mode), MPQ_ERR_IO, "%s: not a regular file", path);
    MPQ_ENSURE(st.st_size > 0, MPQ_ERR_FORMAT, "%s: file is empty", path);
    MPQ_ENSURE((uint64_t)st.st_size <= SIZE_MAX, MPQ_ERR_RANGE, "%s: file too large to map", path);
    size = (size_t)st.st_size;
    base = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    MPQ_ENSURE(base != MAP_FAILED, MPQ_ERR_IO, "%s: cannot map %zu bytes: %s", path, size,
               strerror(errno));
    MPQ_TRY(mpq_strdup(ctx, path, &copy));
    MPQ_ALLOC_TRY(mp, 1);
    mp->path = copy;
    mp->base = base;
    mp->size = size;
    m->maps[m->nmaps++] = mp;
    copy = NULL;
    base = MAP_FAILED;
    *out = mp;
    mp = NULL;
cleanup:
    mpq_free(mp);
    if (base != MAP_FAILED)
        munmap(base, size);
    mpq_free(copy);
    if (fd >= 0)
        close(fd);
    return err;
}

typedef struct mpq_f32_cache {
    int64_t n, cap;
    const mpq_tensor **t; /* [cap] */
    float **buf;          /* [cap] */
} mpq_f32_cache;

mpq_err mpq_model_f32(mpq_ctx *ctx, const mpq_model *m, const mpq_tensor *t, const float **out) {
    *out = NULL;
    if (t->dtype == MPQ_DTYPE_F32 && (uintptr_t)t->data % sizeof(float) == 0) {
        *out = t->data;
        return MPQ_OK;
    }
    mpq_f32_cache *c = m->f32;
    MPQ_CHECK(c, MPQ_ERR_INTERNAL, "%s: model without a conversion cache", m->path);
    for (int64_t i = 0; i < c->n; i++)
        if (c->t[i] == t) {
            *out = c->buf[i];
            return MPQ_OK;
        }
    if (c->n == c->cap) {
        const int64_t cap = c->cap ? 2 * c->cap : 16;
        MPQ_CALL(mpq_realloc(ctx, c->cap, cap, sizeof *c->t, (void **)&c->t));
        MPQ_CALL(mpq_realloc(ctx, c->cap, cap, sizeof *c->buf, (void **)&c->buf));
        c->cap = cap;
    }
    float *buf = NULL;
    MPQ_ALLOC(buf, t->numel > 0 ? t->numel : 1);
    mpq_err err = mpq_tensor_read_f32(ctx, t, 0, t->numel, buf);
    if (err != MPQ_OK) {
        mpq_free(buf);
        return mpq_err_trace(ctx, err, __FILE__, __LINE__, __func__);
    }
    mpq_model_release_tensor(m, t);
    c->t[c->n] = t;
    c->buf[c->n++] = buf;
    *out = buf;
    return MPQ_OK;
}

void mpq_model_release_tensor(const mpq_model *m, const mpq_tensor *t) {
    const unsigned char *a = t->data, *e = a + t->nbytes;
    for (int64_t i = 0; i < m->nmaps; i++) {
        const mpq_io_map *mp = m->maps[i];
        if (mp->anon || a < mp->base || e > mp->base + mp->size)
            continue;
        const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t lo = ((uintptr_t)a + page - 1) / page * page, hi = (uintptr_t)e / page * page;
        if (hi > lo)
            madvise((void *)lo, hi - lo, MADV_DONTNEED);
        return;
    }
}

mpq_err mpq_model_add_buffer(mpq_ctx *ctx, mpq_model *m, size_t size, unsigned char **base) {
    mpq_err err = MPQ_OK;
    mpq_io_map *mp = NULL;
    char *copy = NULL;
    void *p = MAP_FAILED;
    *base = NULL;
    if (m->nmaps == m->cap_maps) {
        int64_t cap = m->cap_maps ? 2 * m->cap_maps : 4;
        MPQ_CALL(mpq_realloc(ctx, m->cap_maps, cap, sizeof *m->maps, (void **)&m->maps));
        m->cap_maps = cap;
    }
    /* Anonymous pages: zeroed and page-aligned (so 64-byte aligned). */
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MPQ_ENSURE(p != MAP_FAILED, MPQ_ERR_NOMEM,
               "%s: cannot allocate %zu bytes for the model's tensors: %s", m->path, size,
               strerror(errno));
    MPQ_TRY(mpq_strdup(ctx, m->path, &copy));
    MPQ_ALLOC_TRY(mp, 1);
    mp->path = copy;
    mp->base = p;
    mp->size = size;
    mp->anon = 1;
    m->maps[m->nmaps++] = mp;
    *base = p;
    return MPQ_OK;
cleanup:
    mpq_free(copy);
    if (p != MAP_FAILED)
        munmap(p, size);
    return err;
}

mpq_err mpq_model_seal_buffers(mpq_ctx *ctx, mpq_model *m) {
    for (int64_t i = 0; i < m->nmaps; i++)
        if (m->maps[i]->anon)
            MPQ_CHECK(mprotect((void *)m->maps[i]->base, m->maps[i]->size, PROT_READ) == 0,
                      MPQ_ERR_IO, "%s: mprotect failed: %s", m->path, strerror(errno));
    return MPQ_OK;
}

void mpq_model_set_arch(mpq_model *m, const mpq_arch *a) {
    m->arch = *a;
}

mpq_err mpq_tensor_init(mpq_ctx *ctx, mpq_tensor *t, const char *name, mpq_dtype dtype, int ndim,
                        const int64_t *shape, const void *data, const char *file) {
    memset(t, 0, sizeof *t);
    size_t nlen = strlen(name);
    MPQ_CHECK(nlen > 0 && nlen < MPQ_TENSOR_NAME_MAX, MPQ_ERR_FORMAT,
              "%s: tensor name '%.60s...' is empty or longer than %d bytes", file, name,
              MPQ_TENSOR_NAME_MAX - 1);
    MPQ_CHECK(ndim >= 0 && ndim <= MPQ_TENSOR_MAXDIM, MPQ_ERR_FORMAT,
              "%s: tensor '%s' has %d dimensions (at most %d are supported)", file, name, ndim,
              MPQ_TENSOR_MAXDIM);
    MPQ_CHECK((int)dtype >= 0 && dtype < MPQ_DTYPE_COUNT, MPQ_ERR_INTERNAL,
              "%s: tensor '%s' has an invalid dtype %d", file, name, (int)dtype);
    memcpy(t->name, name, nlen + 1);
    t->dtype = dtype;
    t->ndim = ndim;
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        MPQ_CHECK(shape[d] >= 0, MPQ_ERR_FORMAT, "%s: tensor '%s' has a negative dimension %lld",
                  file, name, (long long)shape[d]);
        t->shape[d] = shape[d];
        MPQ_CALL(mpq_mul64(ctx, numel, shape[d], name, &numel));
    }
    int64_t nbytes = 0;
    MPQ_CALL(mpq_mul64(ctx, numel, (int64_t)mpq_dtype_size(dtype), name, &nbytes));
    t->numel = numel;
    t->nbytes = (size_t)nbytes;
    t->data = data;
    t->file = file;
    return MPQ_OK;
}

mpq_err mpq_model_add_tensor(mpq_ctx *ctx, mpq_model *m, const mpq_tensor *t) {
    if (m->ntensors == m->cap_tensors) {
        int64_t cap = m->cap_tensors ? 2 * m->cap_tensors : 64;
        MPQ_CALL(mpq_realloc(ctx, m->cap_tensors, cap, sizeof *m->tensors, (void **)&m->tensors));
        m->cap_tensors = cap;
    }
    m->tensors[m->ntensors++] = *t;
    return MPQ_OK;
}

mpq_err mpq_io_set_arch_source(mpq_ctx *ctx, mpq_model *m, const char *path) {
    mpq_free(m->arch_src);
    m->arch_src = NULL;
    MPQ_CALL(mpq_strdup(ctx, path, &m->arch_src));
    return MPQ_OK;
}

mpq_err mpq_model_add_foreign(mpq_ctx *ctx, mpq_model *m, const mpq_foreign_tensor *t) {
    if (m->nforeign == m->cap_foreign) {
        int64_t cap = m->cap_foreign ? 2 * m->cap_foreign : 8;
        MPQ_CALL(mpq_realloc(ctx, m->cap_foreign, cap, sizeof *m->foreign, (void **)&m->foreign));
        m->cap_foreign = cap;
    }
    m->foreign[m->nforeign++] = *t;
    return MPQ_OK;
}

const mpq_foreign_tensor *mpq_io_find_foreign(const mpq_model *m, const char *name) {
    for (int64_t i = 0; i < m->nforeign; i++)
        if (strcmp(m->foreign[i].name, name) == 0)
            return &m->foreign[i];
    return NULL;
}

/* ---- accessors ----------------------------------------------------------- */

int64_t mpq_model_nforeign(const mpq_model *m) {
    return m->nforeign;
}

const mpq_foreign_tensor *mpq_model_foreign_at(const mpq_model *m, int64_t i) {
    return i >= 0 && i < m->nforeign ? &m->foreign[i] : NULL;
}

const mpq_arch *mpq_model_arch(const mpq_model *m) {
    return &m->arch;
}

const char *mpq_model_path(const mpq_model *m) {
    return m->path;
}

int64_t mpq_model_nfiles(const mpq_model *m) {
    return m->nmaps;
}

const char *mpq_model_file_at(const mpq_model *m, int64_t i) {
    return i >= 0 && i < m->nmaps && !m->maps[i]->anon ? m->maps[i]->path : NULL;
}

int64_t mpq_model_ntensors(const mpq_model *m) {
    return m->ntensors;
}

const mpq_tensor *mpq_model_tensor_at(const mpq_model *m, int64_t i) {
    if (i < 0 || i >= m->ntensors)
        return NULL;
    return &m->tensors[i];
}

const mpq_tensor *mpq_model_find(const mpq_model *m, const char *name) {
    /* Linear: models have hundreds of tensors and callers look each up once. */
    for (int64_t i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

/* "[a, b, c]" into buf. */
static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t used = 0;
    used += (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && used < len; d++)
        used +=
            (size_t)snprintf(buf + used, len - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
    return buf;
}

mpq_err mpq_model_get(mpq_ctx *ctx, const mpq_model *m, const char *name, int ndim,
                      const int64_t *shape, const mpq_tensor **out) {
    *out = NULL;
    const mpq_tensor *t = mpq_model_find(m, name);
    const mpq_foreign_tensor *ft = t ? NULL : mpq_io_find_foreign(m, name);
    MPQ_CHECK(!ft, MPQ_ERR_FORMAT,
              "%s: tensor '%s' has dtype %s, but the model uses it: only F32, F16 and BF16 "
              "tensors can be used",
              ft->file, name, ft->dtype);
    MPQ_CHECK(t, MPQ_ERR_FORMAT, "%s: tensor '%s' is missing", m->path, name);
    if (ndim > 0) {
        int same = t->ndim == ndim;
        for (int d = 0; same && d < ndim; d++)
            same = t->shape[d] == shape[d];
        char want[96], have[96];
        MPQ_CHECK(
            same, MPQ_ERR_FORMAT, "%s: tensor '%s' has shape %s, the architecture needs %s%s%s%s",
            t->file ? t->file : m->path, name, shape_str(t->ndim, t->shape, have, sizeof have),
            shape_str(ndim, shape, want, sizeof want), m->arch_src ? " (as read from " : "",
            m->arch_src ? m->arch_src : "", m->arch_src ? ")" : "");
    }
    *out = t;
    return MPQ_OK;
}

mpq_err mpq_tensor_read_f32(mpq_ctx *ctx, const mpq_tensor *t, int64_t first, int64_t n,
                            float *dst) {
    MPQ_CHECK(first >= 0 && n >= 0 && first <= t->numel && n <= t->numel - first, MPQ_ERR_ARG,
              "tensor '%s': elements [%lld, %lld) outside its %lld elements", t->name,
              (long long)first, (long long)first + n, (long long)t->numel);
    /* memcpy element by element: safetensors data need not be aligned. */
    const unsigned char *src = (const unsigned char *)t->data;
    switch (t->dtype) {
        case MPQ_DTYPE_F32:
            memcpy(dst, src + (size_t)first * 4, (size_t)n * 4);
            break;
        case MPQ_DTYPE_F16: {
            const unsigned char *p = src + (size_t)first * 2;
            for (int64_t i = 0; i < n; i++) {
                uint16_t h;
                memcpy(&h, p + 2 * i, 2);
                dst[i] = mpq_f16_to_f32(h);
            }
            break;
        }
        case MPQ_DTYPE_BF16: {
            /* the high half of the float's bits: a loop the compiler
             * vectorizes (the head is converted on every pass) */
            const unsigned char *p = src + (size_t)first * 2;
            for (int64_t i = 0; i < n; i++) {
                uint16_t h;
                memcpy(&h, p + 2 * i, 2);
                const uint32_t u = (uint32_t)h << 16;
                memcpy(dst + i, &u, 4);
            }
            break;
        }
        default:
            return MPQ_ERROR(MPQ_ERR_INTERNAL, "tensor '%s': invalid dtype %d", t->name,
                             (int)t->dtype);
    }
    return MPQ_OK;
}

/* ---- the Llama architecture check ---------------------------------------- */

static const char *const rope_names[] = {"none", "linear", "llama3", "dynamic"};

const char *mpq_rope_scaling_name(int kind) {
    return kind >= 0 && kind < 4 ? rope_names[kind] : "none";
}

int mpq_rope_scaling_find(const char *name) {
    for (int k = 0; k < 4; k++)
        if (strcmp(name, rope_names[k]) == 0)
            return k;
    return -1;
}

void mpq_rope_scaling_json(const mpq_arch *a, cJSON *obj) {
    if (a->rope_scaling == MPQ_ROPE_NONE)
        return;
    cJSON *rs = cJSON_AddObjectToObject(obj, "rope_scaling");
    cJSON_AddStringToObject(rs, "rope_type", mpq_rope_scaling_name(a->rope_scaling));
    cJSON_AddNumberToObject(rs, "factor", a->rope_factor);
    if (a->rope_scaling != MPQ_ROPE_LLAMA3)
        return;
    cJSON_AddNumberToObject(rs, "low_freq_factor", a->rope_low_freq);
    cJSON_AddNumberToObject(rs, "high_freq_factor", a->rope_high_freq);
    cJSON_AddNumberToObject(rs, "original_max_position_embeddings", (double)a->rope_orig_max);
}

double mpq_rope_inv_freq(const mpq_arch *a, int64_t i) {
    const double f = pow(a->rope_theta, -(double)(2 * i) / (double)a->head_dim);
    if (a->rope_scaling == MPQ_ROPE_LINEAR)
        return f / a->rope_factor;
    if (a->rope_scaling != MPQ_ROPE_LLAMA3)
        return f;
    const double w = 2.0 * M_PI / f, orig = (double)a->rope_orig_max;
    if (w < orig / a->rope_high_freq)
        return f;
    if (w > orig / a->rope_low_freq)
        return f / a->rope_factor;
    const double s = (orig / w - a->rope_low_freq) / (a->rope_high_freq - a->rope_low_freq);
    return (1.0 - s) * f / a->rope_factor + s * f;
}

mpq_err mpq_io_check_llama(mpq_ctx *ctx, const mpq_model *m) {
    const mpq_arch *a = &m->arch;
    const char *src = m->arch_src ? m->arch_src : m->nmaps ? m->maps[0]->path : m->path;
    MPQ_CHECK(a->dim > 0 && a->hidden_dim > 0 && a->n_layers > 0 && a->n_heads > 0 &&
                  a->n_kv_heads > 0 && a->head_dim > 0 && a->vocab_size > 0 && a->seq_len > 0,
              MPQ_ERR_FORMAT,
              "%s: architecture values must be positive (dim %lld, hidden_dim %lld, n_layers "
              "%lld, n_heads %lld, n_kv_heads %lld, head_dim %lld, vocab_size %lld, seq_len %lld)",
              src, (long long)a->dim, (long long)a->hidden_dim, (long long)a->n_layers,
              (long long)a->n_heads, (long long)a->n_kv_heads, (long long)a->head_dim,
              (long long)a->vocab_size, (long long)a->seq_len);
    MPQ_CHECK(a->n_heads % a->n_kv_heads == 0, MPQ_ERR_FORMAT,
              "%s: n_heads (%lld) is not a multiple of n_kv_heads (%lld)", src,
              (long long)a->n_heads, (long long)a->n_kv_heads);
    MPQ_CHECK(a->head_dim % 2 == 0, MPQ_ERR_FORMAT,
              "%s: head_dim (%lld) must be even for rotary embeddings", src,
              (long long)a->head_dim);
    MPQ_CHECK(a->rope_scaling == MPQ_ROPE_NONE ||
                  (a->rope_factor >= 1.0 && isfinite(a->rope_factor) &&
                   (a->rope_scaling != MPQ_ROPE_LLAMA3 ||
                    (a->rope_orig_max > 0 && a->rope_low_freq > 0.0 &&
                     a->rope_high_freq > a->rope_low_freq && isfinite(a->rope_high_freq)))),
              MPQ_ERR_FORMAT,
              "%s: rope scaling %s: factor %g must be at least 1 (llama3: low_freq_factor %g > 0, "
              "high_freq_factor %g above it, original_max_position_embeddings %lld > 0)",
              src, mpq_rope_scaling_name(a->rope_scaling), a->rope_factor, a->rope_low_freq,
              a->rope_high_freq, (long long)a->rope_orig_max);
    MPQ_CHECK(!a->o_bias || a->qkv_bias, MPQ_ERR_FORMAT,
              "%s: an o_proj bias without q/k/v biases is not a supported layout", src);
    int64_t q = 0, kv = 0;
    MPQ_CALL(mpq_mul64(ctx, a->n_heads, a->head_dim, "n_heads * head_dim", &q));
    MPQ_CALL(mpq_mul64(ctx, a->n_kv_heads, a->head_dim, "n_kv_heads * head_dim", &kv));
    const mpq_tensor *t = NULL;
    char name[MPQ_TENSOR_NAME_MAX];
    MPQ_CALL(mpq_model_get(ctx, m, "model.embed_tokens.weight", 2,
                           (int64_t[]){a->vocab_size, a->dim}, &t));
    MPQ_CALL(mpq_model_get(ctx, m, "model.norm.weight", 1, (int64_t[]){a->dim}, &t));
    if (!a->tied_embeddings || mpq_model_find(m, "lm_head.weight"))
        MPQ_CALL(
            mpq_model_get(ctx, m, "lm_head.weight", 2, (int64_t[]){a->vocab_size, a->dim}, &t));
    struct {
        const char *suffix;
        int ndim;
        int64_t shape[2];
        int bias; /* 1: q/k/v bias (qkv_bias), 2: o bias (o_bias) */
    } per_layer[] = {
        {"input_layernorm.weight", 1, {a->dim, 0}, 0},
        {"self_attn.q_proj.weight", 2, {q, a->dim}, 0},
        {"self_attn.k_proj.weight", 2, {kv, a->dim}, 0},
        {"self_attn.v_proj.weight", 2, {kv, a->dim}, 0},
        {"self_attn.q_proj.bias", 1, {q, 0}, 1},
        {"self_attn.k_proj.bias", 1, {kv, 0}, 1},
        {"self_attn.v_proj.bias", 1, {kv, 0}, 1},
        {"self_attn.o_proj.weight", 2, {a->dim, q}, 0},
        {"self_attn.o_proj.bias", 1, {a->dim, 0}, 2},
        {"post_attention_layernorm.weight", 1, {a->dim, 0}, 0},
        {"mlp.gate_proj.weight", 2, {a->hidden_dim, a->dim}, 0},
        {"mlp.up_proj.weight", 2, {a->hidden_dim, a->dim}, 0},
        {"mlp.down_proj.weight", 2, {a->dim, a->hidden_dim}, 0},
    };
    for (int64_t l = 0; l < a->n_layers; l++) {
        for (size_t k = 0; k < sizeof per_layer / sizeof per_layer[0]; k++) {
            if ((per_layer[k].bias == 1 && !a->qkv_bias) || (per_layer[k].bias == 2 && !a->o_bias))
                continue;
            snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, per_layer[k].suffix);
            MPQ_CALL(mpq_model_get(ctx, m, name, per_layer[k].ndim, per_layer[k].shape, &t));
        }
    }
    return MPQ_OK;
}

/* ---- the format registry and open/close ---------------------------------- */

/* Format "auto" probes in this order, fallback formats last: the HDF5
 * signature of a checkpoint before the safetensors checks (which accept any
 * file named .safetensors or .json), and GPTQ (a config.json whose
 * quantization_config names quant_method "gptq") before plain safetensors. */
const mpq_model_format *const mpq_model_formats[] = {
    &mpq_format_llama2c, /* fallback: no magic */
    &mpq_format_mpqckpt, &mpq_format_gguf, &mpq_format_gptq, &mpq_format_safetensors, NULL,
};

static const char *format_name_at(int64_t i) {
    return mpq_model_formats[i] ? mpq_model_formats[i]->name : NULL;
}

const mpq_registry mpq_model_format_reg = {
    .what = "model format", .also = "auto", .name_at = format_name_at};

const mpq_model_format *mpq_model_format_find(const char *name) {
    int64_t i = mpq_registry_index(&mpq_model_format_reg, name);
    return i < 0 ? NULL : mpq_model_formats[i];
}

/* The format of path by its probes: the formats with a magic first, then the
 * fallbacks, each group in registry order; NULL when none accepts it. */
static const mpq_model_format *probe_format(const char *path, int is_dir, const unsigned char *head,
                                            size_t nhead) {
    for (int fallback = 0; fallback < 2; fallback++)
        for (int i = 0; mpq_model_formats[i]; i++)
            if (mpq_model_formats[i]->fallback == fallback &&
                mpq_model_formats[i]->probe(path, is_dir, head, nhead))
                return mpq_model_formats[i];
    return NULL;
}

static int cmp_tensor_ptr(const void *a, const void *b) {
    const mpq_tensor *x = *(const mpq_tensor *const *)a, *y = *(const mpq_tensor *const *)b;
    return strcmp(x->name, y->name);
}

/* Two tensors under one name would make lookups ambiguous. */
static mpq_err check_unique_names(mpq_ctx *ctx, const mpq_model *m) {
    mpq_err err = MPQ_OK;
    const mpq_tensor **v = NULL;
    MPQ_ALLOC_TRY(v, m->ntensors);
    for (int64_t i = 0; i < m->ntensors; i++)
        v[i] = &m->tensors[i];
    qsort(v, (size_t)m->ntensors, sizeof *v, cmp_tensor_ptr);
    for (int64_t i = 1; i < m->ntensors; i++)
        MPQ_ENSURE(strcmp(v[i - 1]->name, v[i]->name) != 0, MPQ_ERR_FORMAT,
                   "%s: tensor '%s' appears twice (in %s and %s)", m->path, v[i]->name,
                   v[i - 1]->file, v[i]->file);
cleanup:
    mpq_free(v);
    return err;
}

mpq_err mpq_model_open(mpq_ctx *ctx, const char *path, const char *format, mpq_model **out) {
    mpq_err err = MPQ_OK;
    mpq_model *m = NULL;
    *out = NULL;
    if (!format || !*format)
        format = "auto";
    struct stat st;
    MPQ_CHECK(stat(path, &st) == 0, MPQ_ERR_IO, "%s: cannot open model: %s", path, strerror(errno));
    int is_dir = S_ISDIR(st.st_mode);
    unsigned char head[16] = {0};
    size_t nhead = 0;
    if (!is_dir) {
        FILE *f = NULL;
        MPQ_CALL(mpq_infile_fopen(ctx, path, "model", &f));
        nhead = fread(head, 1, sizeof head, f);
        fclose(f);
    }
    const mpq_model_format *fmt = NULL;
    if (strcmp(format, mpq_model_format_reg.also) == 0) {
        fmt = probe_format(path, is_dir, head, nhead);
        MPQ_CHECK(fmt, MPQ_ERR_FORMAT,
                  "%s: not a recognised model (llama2.c .bin, safetensors or mpquant checkpoint)",
                  path);
    } else {
        int64_t i = 0;
        MPQ_CALL(mpq_registry_lookup(ctx, &mpq_model_format_reg, format, MPQ_ERR_ARG, NULL, &i));
        fmt = mpq_model_formats[i];
    }
    MPQ_ALLOC(m, 1);
    MPQ_ALLOC_TRY(m->f32, 1);
    MPQ_TRY(mpq_strdup(ctx, path, &m->path));
    MPQ_TRY(fmt->open(ctx, m, path));
    MPQ_TRY(check_unique_names(ctx, m));
    *out = m;
    m = NULL;
cleanup:
    mpq_model_close(&m);
    return err;
}

void mpq_model_close(mpq_model **pm) {
    if (!pm || !*pm)
        return;
    mpq_model *m = *pm;
    for (int64_t i = 0; i < m->nmaps; i++) {
        munmap((void *)m->maps[i]->base, m->maps[i]->size);
        mpq_free(m->maps[i]->path);
        mpq_free(m->maps[i]);
    }
    mpq_free(m->maps);
    mpq_free(m->tensors);
    mpq_free(m->foreign);
    mpq_free(m->arch_src);
    mpq_free(m->path);
    for (int64_t i = 0; m->f32 && i < m->f32->n; i++)
        mpq_free(m->f32->buf[i]);
    if (m->f32) {
        mpq_free(m->f32->t);
        mpq_free(m->f32->buf);
    }
    mpq_free(m->f32);
    mpq_free(m);
    *pm = NULL;
}
