/* mkllama.c: writes a Hugging Face Llama directory of any shape with random
 * BF16 weights (config.json, model-0000k-of-0000n.safetensors shards and
 * model.safetensors.index.json), for scale tests and benchmarks where only
 * speed and memory matter. Memory use is constant: every tensor is streamed
 * to its shard in chunks.
 *
 *   mkllama DIR [--hidden H] [--intermediate I] [--layers L] [--heads A]
 *               [--kv-heads K] [--vocab V] [--context C] [--shard-mib S]
 *               [--seed N] [--tied] [--head-dim D] [--attention-bias]
 *               [--rope-scaling linear:F | llama3:F:LOW:HIGH:ORIGINAL]
 *
 * Defaults: hidden 512, intermediate 1408, 2 layers, 8 heads, kv-heads =
 * heads, vocab 512, context 256, shards of at most 2048 MiB, seed 1,
 * head_dim hidden / heads, no biases, no RoPE scaling. --attention-bias
 * adds q/k/v/o biases (Llama's attention_bias; all ones, as norm weights);
 * --rope-scaling writes config.json's rope_scaling.
 * Weights are uniform with the standard deviation 1/sqrt(fan-in) of the
 * usual initialisation; norm weights are 1. Written independently of
 * mpquant's readers, from the safetensors specification (8-byte
 * little-endian header length, JSON header padded with spaces to a
 * multiple of 8, raw little-endian data). Exit status 0, or 1 with a
 * message. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct tensor {
    char name[96];
    int64_t rows, cols; /* cols = 0: a vector of `rows` */
    double scale;       /* half-width of the uniform weights; 0: all ones */
    int shard;
    int64_t offset; /* within the shard's data */
} tensor;

typedef struct shape {
    int64_t hidden, inter, layers, heads, kv_heads, vocab, context, shard_bytes;
    uint64_t seed;
    int tied;
    int64_t head_dim; /* 0: hidden / heads */
    int attn_bias;
    const char *rope; /* --rope-scaling argument, or NULL */
} shape;

static int64_t numel(const tensor *t) {
    return t->rows * (t->cols ? t->cols : 1);
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* float -> bfloat16, round to nearest even. */
static uint16_t bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static int add(tensor *ts, int *n, const char *name, int64_t rows, int64_t cols) {
    tensor *t = &ts[(*n)++];
    memset(t, 0, sizeof *t);
    if (snprintf(t->name, sizeof t->name, "%s", name) >= (int)sizeof t->name)
        return -1;
    t->rows = rows;
    t->cols = cols;
    /* uniform on [-a, a] has standard deviation a / sqrt(3) */
    t->scale = cols ? sqrt(3.0) / sqrt((double)cols) : 0.0;
    return 0;
}

static int list_tensors(const shape *s, tensor *ts, int *n) {
    const int64_t hd = s->head_dim ? s->head_dim : s->hidden / s->heads, kv = s->kv_heads * hd,
                  q = s->heads * hd;
    char nm[96];
    *n = 0;
    int rc = add(ts, n, "model.embed_tokens.weight", s->vocab, s->hidden);
    for (int64_t l = 0; l < s->layers && rc == 0; l++) {
        const struct {
            const char *what;
            int64_t rows, cols;
        } per[] = {{"input_layernorm.weight", s->hidden, 0},
                   {"self_attn.q_proj.weight", q, s->hidden},
                   {"self_attn.k_proj.weight", kv, s->hidden},
                   {"self_attn.v_proj.weight", kv, s->hidden},
                   {"self_attn.o_proj.weight", s->hidden, q},
                   {"self_attn.q_proj.bias", s->attn_bias ? q : 0, 0},
                   {"self_attn.k_proj.bias", s->attn_bias ? kv : 0, 0},
                   {"self_attn.v_proj.bias", s->attn_bias ? kv : 0, 0},
                   {"self_attn.o_proj.bias", s->attn_bias ? s->hidden : 0, 0},
                   {"post_attention_layernorm.weight", s->hidden, 0},
                   {"mlp.gate_proj.weight", s->inter, s->hidden},
                   {"mlp.up_proj.weight", s->inter, s->hidden},
                   {"mlp.down_proj.weight", s->hidden, s->inter}};
        for (size_t k = 0; k < sizeof per / sizeof per[0] && rc == 0; k++) {
            if (per[k].rows == 0)
                continue; /* a bias the model does not have */
            snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, per[k].what);
            rc = add(ts, n, nm, per[k].rows, per[k].cols);
        }
    }
    if (rc == 0)
        rc = add(ts, n, "model.norm.weight", s->hidden, 0);
    if (rc == 0 && !s->tied)
        rc = add(ts, n, "lm_head.weight", s->vocab, s->hidden);
    return rc;
}

/* Streams tensor t (BF16) to f in chunks. */
static int write_tensor(FILE *f, const tensor *t, uint64_t seed) {
    enum { CHUNK = 1 << 16 };
    static uint16_t buf[CHUNK];
    uint64_t st = seed;
    for (const char *p = t->name; *p; p++)
        st = st * 131u + (unsigned char)*p;
    const int64_t n = numel(t);
    for (int64_t i = 0; i < n; i += CHUNK) {
        int64_t m = n - i < CHUNK ? n - i : CHUNK;
        for (int64_t j = 0; j < m; j++) {
            double u = (double)(splitmix(&st) >> 11) * 0x1p-53; /* [0, 1) */
            buf[j] = bf16(t->scale > 0 ? (float)((2.0 * u - 1.0) * t->scale) : 1.0f);
        }
        if (fwrite(buf, 2, (size_t)m, f) != (size_t)m)
            return -1;
    }
    return 0;
}

static int write_shard(const char *path, const tensor *ts, int n, int shard, uint64_t seed) {
    cJSON *h = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    for (int i = 0; i < n; i++) {
        if (ts[i].shard != shard)
            continue;
        cJSON *o = cJSON_AddObjectToObject(h, ts[i].name);
        cJSON_AddStringToObject(o, "dtype", "BF16");
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)ts[i].rows));
        if (ts[i].cols)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)ts[i].cols));
        cJSON *off = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)ts[i].offset));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(ts[i].offset + 2 * numel(&ts[i]))));
    }
    char *js = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    FILE *f = js ? fopen(path, "wb") : NULL;
    if (!f) {
        fprintf(stderr, "mkllama: cannot write %s: %s\n", path, strerror(errno));
        free(js);
        return -1;
    }
    size_t len = strlen(js), padded = (len + 7) / 8 * 8;
    unsigned char le[8];
    for (int b = 0; b < 8; b++)
        le[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    int rc = fwrite(le, 1, 8, f) == 8 && fwrite(js, 1, len, f) == len ? 0 : -1;
    for (size_t k = len; k < padded && rc == 0; k++)
        rc = fputc(' ', f) == ' ' ? 0 : -1;
    free(js);
    for (int i = 0; i < n && rc == 0; i++)
        if (ts[i].shard == shard)
            rc = write_tensor(f, &ts[i], seed);
    if (fclose(f) != 0 || rc != 0) {
        fprintf(stderr, "mkllama: writing %s failed: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int write_json(const char *path, cJSON *o) {
    char *s = cJSON_Print(o);
    FILE *f = s ? fopen(path, "w") : NULL;
    int rc = f && fputs(s, f) >= 0 && fputc('\n', f) == '\n' ? 0 : -1;
    if (f && fclose(f) != 0)
        rc = -1;
    free(s);
    if (rc)
        fprintf(stderr, "mkllama: cannot write %s\n", path);
    return rc;
}

static int write_config(const char *dir, const shape *s) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *c = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(c, "model_type", "llama");
    cJSON_AddNumberToObject(c, "hidden_size", (double)s->hidden);
    cJSON_AddNumberToObject(c, "intermediate_size", (double)s->inter);
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)s->layers);
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)s->heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", (double)s->kv_heads);
    cJSON_AddNumberToObject(c, "vocab_size", (double)s->vocab);
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)s->context);
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-5);
    cJSON_AddNumberToObject(c, "rope_theta", 10000.0);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", s->tied);
    cJSON_AddStringToObject(c, "torch_dtype", "bfloat16");
    if (s->head_dim)
        cJSON_AddNumberToObject(c, "head_dim", (double)s->head_dim);
    cJSON_AddBoolToObject(c, "attention_bias", s->attn_bias);
    if (s->rope) {
        double f = 0, lo = 0, hi = 0, orig = 0;
        cJSON *r = cJSON_AddObjectToObject(c, "rope_scaling");
        if (sscanf(s->rope, "linear:%lf", &f) == 1) {
            cJSON_AddStringToObject(r, "rope_type", "linear");
        } else if (sscanf(s->rope, "llama3:%lf:%lf:%lf:%lf", &f, &lo, &hi, &orig) == 4) {
            cJSON_AddStringToObject(r, "rope_type", "llama3");
            cJSON_AddNumberToObject(r, "low_freq_factor", lo);
            cJSON_AddNumberToObject(r, "high_freq_factor", hi);
            cJSON_AddNumberToObject(r, "original_max_position_embeddings", orig);
        } else {
            fprintf(stderr, "mkllama: --rope-scaling '%s': linear:F or llama3:F:LOW:HIGH:ORIG\n",
                    s->rope);
            cJSON_Delete(c);
            return -1;
        }
        cJSON_AddNumberToObject(r, "factor", f);
    }
    int rc = write_json(path, c);
    cJSON_Delete(c);
    return rc;
}

static int parse_args(int argc, char **argv, const char **dir, shape *s) {
    *s = (shape){512, 1408, 2, 8, 0, 512, 256, (int64_t)2048 << 20, 1, 0, 0, 0, NULL};
    *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int64_t *dst = NULL;
        if (strcmp(a, "--tied") == 0 || strcmp(a, "--attention-bias") == 0) {
            *(a[2] == 't' ? &s->tied : &s->attn_bias) = 1;
            continue;
        }
        if (strcmp(a, "--rope-scaling") == 0 && i + 1 < argc) {
            s->rope = argv[++i];
            continue;
        }
        if (a[0] != '-') {
            *dir = a;
            continue;
        }
        int64_t mib = 0;
        if (strcmp(a, "--hidden") == 0)
            dst = &s->hidden;
        else if (strcmp(a, "--intermediate") == 0)
            dst = &s->inter;
        else if (strcmp(a, "--layers") == 0)
            dst = &s->layers;
        else if (strcmp(a, "--heads") == 0)
            dst = &s->heads;
        else if (strcmp(a, "--kv-heads") == 0)
            dst = &s->kv_heads;
        else if (strcmp(a, "--vocab") == 0)
            dst = &s->vocab;
        else if (strcmp(a, "--context") == 0)
            dst = &s->context;
        else if (strcmp(a, "--head-dim") == 0)
            dst = &s->head_dim;
        else if (strcmp(a, "--shard-mib") == 0 || strcmp(a, "--seed") == 0)
            dst = &mib;
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "mkllama: unknown option or missing value: %s\n", a);
            return -1;
        }
        char *end = NULL;
        long long v = strtoll(argv[++i], &end, 10);
        if (!*argv[i] || *end || v < 1) {
            fprintf(stderr, "mkllama: %s: '%s' is not a positive integer\n", a, argv[i]);
            return -1;
        }
        *dst = v;
        if (strcmp(a, "--shard-mib") == 0)
            s->shard_bytes = (int64_t)v << 20;
        else if (strcmp(a, "--seed") == 0)
            s->seed = (uint64_t)v;
    }
    if (!s->kv_heads)
        s->kv_heads = s->heads;
    if (!*dir || (s->hidden % s->heads && !s->head_dim) || s->heads % s->kv_heads) {
        fprintf(stderr, "usage: mkllama DIR [--hidden H] [--intermediate I] [--layers L] "
                        "[--heads A] [--kv-heads K] [--vocab V] [--context C] [--shard-mib S] "
                        "[--seed N] [--tied] [--head-dim D] [--attention-bias] [--rope-scaling "
                        "linear:F|llama3:F:LOW:HIGH:ORIG]\n(hidden must be a multiple of heads "
                        "unless head-dim is given, heads of kv-heads)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *dir;
    shape s;
    if (parse_args(argc, argv, &dir, &s) != 0)
        return 1;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "mkllama: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    const int cap = (int)(13 * s.layers + 3); /* 9 per layer, 4 more with biases */
    tensor *ts = calloc((size_t)cap, sizeof *ts);
    int n = 0;
    if (!ts || list_tensors(&s, ts, &n) != 0) {
        fprintf(stderr, "mkllama: out of memory or a name too long\n");
        return 1;
    }
    /* Shards in order, each at most shard_bytes of data (one tensor may
     * exceed it alone). */
    int nshards = 1;
    int64_t used = 0, total = 0;
    for (int i = 0; i < n; i++) {
        int64_t b = 2 * numel(&ts[i]);
        if (used > 0 && used + b > s.shard_bytes) {
            nshards++;
            used = 0;
        }
        ts[i].shard = nshards - 1;
        ts[i].offset = used;
        used += b;
        total += b;
    }
    cJSON *idx = cJSON_CreateObject();
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(idx, "metadata"), "total_size", (double)total);
    cJSON *wm = cJSON_AddObjectToObject(idx, "weight_map");
    int rc = write_config(dir, &s);
    for (int k = 0; k < nshards && rc == 0; k++) {
        char name[64], path[4200];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, nshards);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        rc = write_shard(path, ts, n, k, s.seed);
        for (int i = 0; i < n; i++)
            if (ts[i].shard == k)
                cJSON_AddStringToObject(wm, ts[i].name, name);
    }
    if (rc == 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        rc = write_json(path, idx);
    }
    cJSON_Delete(idx);
    free(ts);
    if (rc == 0)
        printf("mkllama: %s: %d tensors, %lld parameters, %d shard(s)\n", dir, n,
               (long long)(total / 2), nshards);
    return rc == 0 ? 0 : 1;
}
