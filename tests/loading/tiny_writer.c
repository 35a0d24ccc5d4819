/* tiny_writer.c: see tiny_writer.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tiny_writer.h"

/* ---- random weights --------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static float uni(uint64_t *s, float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(splitmix(s) >> 11) / 9007199254740992.0);
}

static float *fill(uint64_t *s, int64_t n, float lo, float hi) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    if (!p)
        return NULL;
    for (int64_t i = 0; i < n; i++)
        p[i] = uni(s, lo, hi);
    return p;
}

int64_t tw_llama_head_dim(const tw_llama *m) {
    return m->head_dim > 0 ? m->head_dim : m->dim / m->heads;
}

int tw_llama_random(tw_llama *m, uint64_t seed) {
    uint64_t s = seed;
    int64_t L = m->layers, d = m->dim, h = m->hidden, v = m->vocab;
    int64_t hd = tw_llama_head_dim(m), qd = hd * m->heads, kv = hd * m->kv_heads;
    float a = 1.0f / sqrtf((float)d), b = 1.0f / sqrtf((float)h), c = 1.0f / sqrtf((float)qd);
    int qkvb = m->qkv_bias || m->attn_bias;
    m->embed = fill(&s, v * d, -1.0f, 1.0f);
    m->attn_norm = fill(&s, L * d, 0.5f, 1.5f);
    m->wq = fill(&s, L * qd * d, -a, a);
    m->wk = fill(&s, L * kv * d, -a, a);
    m->wv = fill(&s, L * kv * d, -a, a);
    m->wo = fill(&s, L * d * qd, -c, c);
    m->ffn_norm = fill(&s, L * d, 0.5f, 1.5f);
    m->w1 = fill(&s, L * h * d, -a, a);
    m->w2 = fill(&s, L * d * h, -b, b);
    m->w3 = fill(&s, L * h * d, -a, a);
    m->final_norm = fill(&s, d, 0.5f, 1.5f);
    m->cls = m->tied ? NULL : fill(&s, v * d, -a, a);
    if (qkvb) {
        m->bq = fill(&s, L * qd, -0.1f, 0.1f);
        m->bk = fill(&s, L * kv, -0.1f, 0.1f);
        m->bv = fill(&s, L * kv, -0.1f, 0.1f);
    }
    if (m->attn_bias)
        m->bo = fill(&s, L * d, -0.1f, 0.1f);
    int ok = m->embed && m->attn_norm && m->wq && m->wk && m->wv && m->wo && m->ffn_norm && m->w1 &&
             m->w2 && m->w3 && m->final_norm && (m->tied || m->cls) &&
             (!qkvb || (m->bq && m->bk && m->bv)) && (!m->attn_bias || m->bo);
    if (!ok) {
        fprintf(stderr, "tw_llama_random: out of memory\n");
        tw_llama_free(m);
        return -1;
    }
    return 0;
}

void tw_llama_free(tw_llama *m) {
    float **all[] = {&m->embed,    &m->attn_norm, &m->wq, &m->wk, &m->wv,         &m->wo,
                     &m->ffn_norm, &m->w1,        &m->w2, &m->w3, &m->final_norm, &m->cls,
                     &m->bq,       &m->bk,        &m->bv, &m->bo};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(*all[i]);
        *all[i] = NULL;
    }
}

/* ---- files -------------------------------------------------------------------- */

int tw_write_bytes(const char *path, const void *p, size_t n, int append) {
    FILE *f = fopen(path, append ? "ab" : "wb");
    if (!f) {
        fprintf(stderr, "tiny_writer: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    int ok = fwrite(p, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok)
        fprintf(stderr, "tiny_writer: write to %s failed\n", path);
    return ok ? 0 : -1;
}

int tw_write_text(const char *path, const char *text) {
    return tw_write_bytes(path, text, strlen(text), 0);
}

int tw_copy_prefix(const char *src, const char *dst, long n) {
    FILE *f = fopen(src, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > size)
        n = size;
    char *buf = malloc((size_t)(n > 0 ? n : 1));
    int rc = -1;
    if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n)
        rc = tw_write_bytes(dst, buf, (size_t)n, 0);
    free(buf);
    fclose(f);
    return rc;
}

int tw_tempdir(char *buf, size_t len) {
    const char *base = getenv("TMPDIR");
    snprintf(buf, len, "%s/mpq-models-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(buf)) {
        fprintf(stderr, "tiny_writer: mkdtemp(%s): %s\n", buf, strerror(errno));
        return -1;
    }
    return 0;
}

void tw_rmtree(const char *path) {
    /* The trees are flat directories of test files. */
    char cmd[4200];
    if (strncmp(path, "/tmp/", 5) != 0 && !getenv("TMPDIR"))
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "tiny_writer: could not remove %s\n", path);
}

/* ---- llama2.c ------------------------------------------------------------------ */

static int put_f32(FILE *f, const float *p, int64_t n) {
    return fwrite(p, sizeof *p, (size_t)n, f) == (size_t)n ? 0 : -1;
}

int tw_write_llama2c(const char *path, const tw_llama *m, int version) {
    if (tw_llama_head_dim(m) != m->dim / m->heads || m->attn_bias || m->mlp_bias || m->rope_type) {
        fprintf(stderr,
                "tw_write_llama2c: %s: llama2.c cannot store head_dim != dim / heads, "
                "attention_bias, mlp_bias or rope_scaling\n",
                path);
        return -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "tiny_writer: cannot write %s\n", path);
        return -1;
    }
    int64_t L = m->layers, d = m->dim, h = m->hidden, v = m->vocab;
    int64_t hd = tw_llama_head_dim(m), kv = hd * m->kv_heads; /* hd == d / heads */
    int32_t hdr[7] = {(int32_t)d,           (int32_t)h, (int32_t)L,         (int32_t)m->heads,
                      (int32_t)m->kv_heads, (int32_t)v, (int32_t)m->seq_len};
    int rc = 0;
    if (version == 0) {
        if (!m->tied)
            hdr[5] = -hdr[5];
        rc |= fwrite(hdr, 4, 7, f) == 7 ? 0 : -1;
        rc |= put_f32(f, m->embed, v * d);
        rc |= put_f32(f, m->attn_norm, L * d);
        rc |= put_f32(f, m->wq, L * d * d);
        rc |= put_f32(f, m->wk, L * kv * d);
        rc |= put_f32(f, m->wv, L * kv * d);
        rc |= put_f32(f, m->wo, L * d * d);
        rc |= put_f32(f, m->ffn_norm, L * d);
        rc |= put_f32(f, m->w1, L * h * d);
        rc |= put_f32(f, m->w2, L * d * h);
        rc |= put_f32(f, m->w3, L * h * d);
        rc |= put_f32(f, m->final_norm, d);
        /* RoPE tables as llama2.c's export computes them: cos and sin of pos * freq. */
        int64_t half = hd / 2;
        float *tab = malloc((size_t)(m->seq_len * half) * sizeof *tab);
        for (int part = 0; part < 2 && tab; part++) {
            for (int64_t p = 0; p < m->seq_len; p++)
                for (int64_t i = 0; i < half; i++) {
                    double fr = 1.0 / pow(10000.0, (double)(2 * i) / (double)hd);
                    tab[p * half + i] =
                        (float)(part == 0 ? cos((double)p * fr) : sin((double)p * fr));
                }
            rc |= put_f32(f, tab, m->seq_len * half);
        }
        rc |= tab ? 0 : -1;
        free(tab);
        if (!m->tied)
            rc |= put_f32(f, m->cls, v * d);
    } else {
        unsigned char header[256] = {0};
        uint32_t magic = 0x616b3432u;
        int32_t ver = (int32_t)version;
        memcpy(header, &magic, 4);
        memcpy(header + 4, &ver, 4);
        memcpy(header + 8, hdr, sizeof hdr);
        header[36] = (unsigned char)(m->tied ? 1 : 0);
        rc |= fwrite(header, 1, sizeof header, f) == sizeof header ? 0 : -1;
        rc |= put_f32(f, m->attn_norm, L * d);
        rc |= put_f32(f, m->ffn_norm, L * d);
        rc |= put_f32(f, m->final_norm, d);
        rc |= put_f32(f, m->embed, v * d);
        rc |= put_f32(f, m->wq, L * d * d);
        rc |= put_f32(f, m->wk, L * kv * d);
        rc |= put_f32(f, m->wv, L * kv * d);
        rc |= put_f32(f, m->wo, L * d * d);
        rc |= put_f32(f, m->w1, L * h * d);
        rc |= put_f32(f, m->w2, L * d * h);
        rc |= put_f32(f, m->w3, L * h * d);
        if (!m->tied)
            rc |= put_f32(f, m->cls, v * d);
    }
    rc |= fclose(f) == 0 ? 0 : -1;
    if (rc)
        fprintf(stderr, "tiny_writer: write to %s failed\n", path);
    return rc ? -1 : 0;
}

/* ---- conversions ------------------------------------------------------------- */

/* Nearest value of a binary format with `mbits` explicit mantissa bits,
 * minimum normal exponent emin and maximum finite exponent emax, as sign,
 * biased exponent and mantissa fields packed in (ebits + mbits + 1) bits. */
static uint16_t round_small_float(float x, int mbits, int ebits, int emin, int emax) {
    uint16_t sign = signbit(x) ? (uint16_t)(1u << (mbits + ebits)) : 0;
    uint16_t inf = (uint16_t)(((1u << ebits) - 1) << mbits);
    if (isnan(x))
        return (uint16_t)(sign | inf | (1u << (mbits - 1)));
    double a = fabs((double)x);
    if (isinf(x))
        return sign | inf;
    if (a == 0.0)
        return sign;
    int e;
    frexp(a, &e); /* a = f * 2^e, f in [0.5, 1) */
    e -= 1;       /* a = g * 2^e, g in [1, 2) */
    if (e < emin) {
        /* subnormal: units of 2^(emin - mbits); rint rounds half to even */
        double q = rint(ldexp(a, mbits - emin));
        return (uint16_t)(sign | (uint16_t)q); /* q == 2^mbits is the smallest normal */
    }
    double q = rint(ldexp(a, mbits - e)); /* in [2^mbits, 2^(mbits+1)] */
    if (q == ldexp(1.0, mbits + 1)) {
        q /= 2;
        e += 1;
    }
    if (e > emax)
        return sign | inf;
    uint16_t bexp = (uint16_t)(e - emin + 1);
    return (uint16_t)(sign | bexp << mbits | ((uint16_t)q & ((1u << mbits) - 1)));
}

uint16_t tw_f32_to_f16(float x) {
    return round_small_float(x, 10, 5, -14, 15);
}

uint16_t tw_f32_to_bf16(float x) {
    return round_small_float(x, 7, 8, -126, 127);
}

/* ---- safetensors ------------------------------------------------------------- */

static size_t dtype_bytes(const char *dt) {
    return strcmp(dt, "F32") == 0 ? 4 : 2;
}

static int64_t numel_of(const tw_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    return n;
}

void tw_f32(tw_tensor *t, const char *name, const float *data, int ndim, int64_t s0, int64_t s1,
            int64_t s2, int64_t s3) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = "F32";
    t->ndim = ndim;
    t->shape[0] = s0;
    t->shape[1] = s1;
    t->shape[2] = s2;
    t->shape[3] = s3;
    t->data = data;
}

int tw_write_safetensors(const char *path, const tw_tensor *t, int n) {
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        cJSON_AddStringToObject(e, "dtype", t[i].dtype);
        cJSON *shp = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t[i].ndim; d++)
            cJSON_AddItemToArray(shp, cJSON_CreateNumber((double)t[i].shape[d]));
        int64_t nb = numel_of(&t[i]) * (int64_t)dtype_bytes(t[i].dtype);
        cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t hl = strlen(json);
    size_t padded = (hl + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    int rc = f ? 0 : -1;
    if (f) {
        uint64_t le = padded;
        rc |= fwrite(&le, 8, 1, f) == 1 ? 0 : -1;
        rc |= fwrite(json, 1, hl, f) == hl ? 0 : -1;
        for (size_t k = hl; k < padded; k++)
            rc |= fputc(' ', f) == ' ' ? 0 : -1;
        for (int i = 0; i < n; i++) {
            int64_t ne = numel_of(&t[i]);
            if (strcmp(t[i].dtype, "F32") == 0) {
                rc |= put_f32(f, t[i].data, ne);
                continue;
            }
            int bf = strcmp(t[i].dtype, "BF16") == 0;
            for (int64_t k = 0; k < ne; k++) {
                uint16_t hv = bf ? tw_f32_to_bf16(t[i].data[k]) : tw_f32_to_f16(t[i].data[k]);
                rc |= fwrite(&hv, 2, 1, f) == 1 ? 0 : -1;
            }
        }
        rc |= fclose(f) == 0 ? 0 : -1;
    }
    cJSON_free(json);
    if (rc)
        fprintf(stderr, "tiny_writer: write to %s failed\n", path);
    return rc ? -1 : 0;
}

int tw_write_st_header(const char *path, const char *json, size_t data_bytes) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint64_t hl = strlen(json);
    int rc = fwrite(&hl, 8, 1, f) == 1 ? 0 : -1;
    rc |= fwrite(json, 1, hl, f) == hl ? 0 : -1;
    for (size_t i = 0; i < data_bytes; i++)
        rc |= fputc((int)(i & 0xff), f) == (int)(i & 0xff) ? 0 : -1;
    rc |= fclose(f) == 0 ? 0 : -1;
    return rc ? -1 : 0;
}

/* ---- Hugging Face directories ------------------------------------------------ */

void tw_permute_to_hf(const float *src, float *dst, int64_t heads, int64_t head_dim, int64_t cols) {
    int64_t half = head_dim / 2;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t j = 0; j < 2; j++)
            for (int64_t i = 0; i < half; i++)
                memcpy(dst + (h * head_dim + j * half + i) * cols,
                       src + (h * head_dim + 2 * i + j) * cols, (size_t)cols * sizeof *src);
}

static int write_config(const char *dir, const tw_llama *m, const char *model_type) {
    cJSON *c = cJSON_CreateObject();
    static const struct {
        const char *type, *arch;
    } archs[] = {{"llama", "LlamaForCausalLM"},
                 {"mistral", "MistralForCausalLM"},
                 {"qwen2", "Qwen2ForCausalLM"}};
    const char *arch = "LlamaForCausalLM";
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strcmp(model_type, archs[i].type) == 0)
            arch = archs[i].arch;
    cJSON *a = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(a, cJSON_CreateString(arch));
    cJSON_AddStringToObject(c, "model_type", model_type);
    cJSON_AddNumberToObject(c, "hidden_size", (double)m->dim);
    cJSON_AddNumberToObject(c, "intermediate_size", (double)m->hidden);
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)m->layers);
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)m->heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", (double)m->kv_heads);
    cJSON_AddNumberToObject(c, "vocab_size", (double)m->vocab);
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)m->seq_len);
    cJSON_AddNumberToObject(c, "rms_norm_eps", m->norm_eps > 0 ? m->norm_eps : 1e-5);
    cJSON_AddNumberToObject(c, "rope_theta", m->rope_theta > 0 ? m->rope_theta : 10000.0);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", m->tied);
    if (m->head_dim > 0)
        cJSON_AddNumberToObject(c, "head_dim", (double)m->head_dim);
    if (m->attn_bias)
        cJSON_AddBoolToObject(c, "attention_bias", 1);
    if (m->mlp_bias)
        cJSON_AddBoolToObject(c, "mlp_bias", 1);
    if (m->rope_type) {
        cJSON *r = cJSON_AddObjectToObject(c, "rope_scaling");
        cJSON_AddStringToObject(r, "rope_type", m->rope_type);
        const struct {
            const char *key;
            double v;
        } nums[] = {{"factor", m->rope_factor},
                    {"low_freq_factor", m->rope_low_freq},
                    {"high_freq_factor", m->rope_high_freq},
                    {"original_max_position_embeddings", (double)m->rope_orig_max}};
        for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
            if (nums[i].v != 0)
                cJSON_AddNumberToObject(r, nums[i].key, nums[i].v);
    }
    cJSON_AddStringToObject(c, "torch_dtype", "float32");
    char *s = cJSON_Print(c);
    cJSON_Delete(c);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = tw_write_text(path, s);
    cJSON_free(s);
    return rc;
}

int tw_write_hf(const char *dir, const tw_llama *m, const char *model_type, const char *dtype,
                int nshards) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "tiny_writer: mkdir %s: %s\n", dir, strerror(errno));
        return -1;
    }
    int64_t L = m->layers, d = m->dim, h = m->hidden, v = m->vocab;
    int64_t hd = tw_llama_head_dim(m), qd = hd * m->heads, kv = hd * m->kv_heads;
    int qkvb = m->qkv_bias || m->attn_bias;
    int64_t nt_max = 3 + 13 * L;
    tw_tensor *t = calloc((size_t)nt_max, sizeof *t);
    float *perm = malloc((size_t)(L * (qd * d + kv * d + qd + kv)) * sizeof *perm);
    if (!t || !perm) {
        free(t);
        free(perm);
        return -1;
    }
    int n = 0;
#define TW_ADD(NAME, DATA, ND, S0, S1)                                                             \
    do {                                                                                           \
        snprintf(t[n].name, sizeof t[n].name, "%s", NAME);                                         \
        t[n].dtype = dtype;                                                                        \
        t[n].ndim = ND;                                                                            \
        t[n].shape[0] = S0;                                                                        \
        t[n].shape[1] = S1;                                                                        \
        t[n].data = DATA;                                                                          \
        n++;                                                                                       \
    } while (0)
    TW_ADD("model.embed_tokens.weight", m->embed, 2, v, d);
    float *pq = perm, *pk = perm + L * qd * d, *pbq = pk + L * kv * d, *pbk = pbq + L * qd;
    for (int64_t l = 0; l < L; l++) {
        char nm[160];
        tw_permute_to_hf(m->wq + l * qd * d, pq + l * qd * d, m->heads, hd, d);
        tw_permute_to_hf(m->wk + l * kv * d, pk + l * kv * d, m->kv_heads, hd, d);
#define TW_L(SUFFIX, DATA, ND, S0, S1)                                                             \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, SUFFIX);                     \
        TW_ADD(nm, DATA, ND, S0, S1);                                                              \
    } while (0)
        TW_L("input_layernorm.weight", m->attn_norm + l * d, 1, d, 0);
        TW_L("self_attn.q_proj.weight", pq + l * qd * d, 2, qd, d);
        TW_L("self_attn.k_proj.weight", pk + l * kv * d, 2, kv, d);
        TW_L("self_attn.v_proj.weight", m->wv + l * kv * d, 2, kv, d);
        if (qkvb) {
            tw_permute_to_hf(m->bq + l * qd, pbq + l * qd, m->heads, hd, 1);
            tw_permute_to_hf(m->bk + l * kv, pbk + l * kv, m->kv_heads, hd, 1);
            TW_L("self_attn.q_proj.bias", pbq + l * qd, 1, qd, 0);
            TW_L("self_attn.k_proj.bias", pbk + l * kv, 1, kv, 0);
            TW_L("self_attn.v_proj.bias", m->bv + l * kv, 1, kv, 0);
        }
        TW_L("self_attn.o_proj.weight", m->wo + l * d * qd, 2, d, qd);
        if (m->attn_bias)
            TW_L("self_attn.o_proj.bias", m->bo + l * d, 1, d, 0);
        TW_L("post_attention_layernorm.weight", m->ffn_norm + l * d, 1, d, 0);
        TW_L("mlp.gate_proj.weight", m->w1 + l * h * d, 2, h, d);
        TW_L("mlp.up_proj.weight", m->w3 + l * h * d, 2, h, d);
        TW_L("mlp.down_proj.weight", m->w2 + l * d * h, 2, d, h);
#undef TW_L
    }
    TW_ADD("model.norm.weight", m->final_norm, 1, d, 0);
    if (!m->tied)
        TW_ADD("lm_head.weight", m->cls, 2, v, d);
#undef TW_ADD
    int rc = write_config(dir, m, model_type);
    char path[4200];
    if (nshards <= 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc |= tw_write_safetensors(path, t, n);
    } else {
        cJSON *idx = cJSON_CreateObject();
        cJSON *meta = cJSON_AddObjectToObject(idx, "metadata");
        cJSON *wm = cJSON_AddObjectToObject(idx, "weight_map");
        int64_t total = 0;
        for (int s = 0; s < nshards; s++) {
            int lo = n * s / nshards, hi = n * (s + 1) / nshards;
            char fname[64];
            snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, nshards);
            snprintf(path, sizeof path, "%s/%s", dir, fname);
            rc |= tw_write_safetensors(path, t + lo, hi - lo);
            for (int i = lo; i < hi; i++) {
                cJSON_AddStringToObject(wm, t[i].name, fname);
                total += numel_of(&t[i]) * (int64_t)dtype_bytes(dtype);
            }
        }
        cJSON_AddNumberToObject(meta, "total_size", (double)total);
        char *s = cJSON_Print(idx);
        cJSON_Delete(idx);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        rc |= tw_write_text(path, s);
        cJSON_free(s);
    }
    free(perm);
    free(t);
    return rc ? -1 : 0;
}
