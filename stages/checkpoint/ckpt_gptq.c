/* ckpt_gptq.c: export of an mpquant checkpoint in the GPTQ safetensors
 * format that transformers, vLLM and GPTQModel load (`mpquant export
 * --format gptq` and `gptq-v2`), with its Hugging Face config.json.
 *
 * Each decoder linear layer that maps exactly (int family, 2/3/4/8 bits,
 * fp16 scales, whole groups, packable shapes) becomes the four GPTQ tensors
 * of its module <m> = <name without ".weight">, out = rows, in = cols:
 *   <m>.qweight  I32 [in * bits / 32][out]  codes of column j as one LSB-first
 *                                           bit stream of bits-wide fields
 *                                           along the input dimension
 *   <m>.qzeros   I32 [groups][out * bits / 32]  zero-points, packed the same
 *                                           way along the outputs; "gptq"
 *                                           (v1) stores zero - 1, "gptq_v2"
 *                                           the zero itself
 *   <m>.scales   F16 [groups][out]
 *   <m>.g_idx    I32 [in]  the group of each input row (c / group_cols)
 * so that w[j][i] = scale[g][j] * (q - zero[g][j]), g = g_idx[i], gives
 * mpquant's own values bit for bit. A layer that does not map (reported
 * on stdout) is written as its dequantized values in F32; every other
 * tensor keeps a stored F16/BF16 type, else is F32 like the safetensors
 * export (q/k rows reordered for a llama2.c source are F32 too); config.json carries
 * "quantization_config" with the most common setting and GPTQModel's "dynamic" rules: "+:"
 * overrides for the layers that differ from it, "-:" for the linear layers left dense. Local; both
 * files written atomically. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ckpt_internal.h"
#include "mpq_ckpt.h"
#include "mpq_model_format.h"
#include "mpq_outfile.h"

#define GPTQ_CHUNK ((int64_t)1 << 20) /* floats per conversion buffer (4 MiB) */

/* How one tensor of the model is written. */
typedef struct gptq_item {
    int quant;          /* 1: the four GPTQ tensors; 0: dense (dtype16 or F32) */
    int dtype16;        /* dense, not a quantized layer, stored as F16/BF16 and written so:
                         * MPQ_DTYPE_F16 or MPQ_DTYPE_BF16; 0: F32 */
    int linear;         /* a decoder linear layer (listed in "dynamic" when dense) */
    int64_t entry;      /* checkpoint entry of a quantized layer, else -1 */
    int bits, sym;      /* quant only */
    int64_t group_size; /* GPTQ group_size: input rows per group, -1 for one group */
    int64_t rows, cols, ngroups;
} gptq_item;

/* ---- the effective configuration ------------------------------------------- */

/* The value of `sec.key` in the effective configuration text (libconfig
 * syntax as mpq_config_print writes it: "sec = {", one "key = value;" per
 * line, "};"), unquoted, into buf. 0 when absent. */
static int config_value(const char *cfg, const char *sec, const char *key, char *buf, size_t len) {
    const size_t ns = strlen(sec), nk = strlen(key);
    int in_sec = 0;
    for (const char *p = cfg; p && *p;) {
        const char *eol = strchr(p, '\n');
        const size_t n = eol ? (size_t)(eol - p) : strlen(p);
        const char *q = p;
        while (q < p + n && (*q == ' ' || *q == '\t'))
            q++;
        const size_t rest = (size_t)(p + n - q);
        if (!in_sec && rest > ns && strncmp(q, sec, ns) == 0 && strstr(q + ns, "= {") == q + ns + 1)
            in_sec = 1;
        else if (in_sec && rest >= 2 && strncmp(q, "};", 2) == 0)
            return 0;
        else if (in_sec && rest > nk + 3 && strncmp(q, key, nk) == 0 &&
                 strncmp(q + nk, " = ", 3) == 0) {
            const char *v = q + nk + 3, *e = p + n;
            while (e > v && (e[-1] == ';' || e[-1] == ' ' || e[-1] == '\r'))
                e--;
            if (e - v >= 2 && *v == '"' && e[-1] == '"') {
                v++;
                e--;
            }
            snprintf(buf, len, "%.*s", (int)(e - v), v);
            return 1;
        }
        p = eol ? eol + 1 : NULL;
    }
    return 0;
}

/* ---- which layers map --------------------------------------------------------- */

/* 1 when name is the weight of a decoder linear layer
 * (model.layers.N.<...>_proj.weight). */
static int is_decoder_linear(const char *name) {
    const char *suf = "_proj.weight";
    size_t n = strlen(name), k = strlen(suf);
    return strncmp(name, "model.layers.", 13) == 0 && n > k && strcmp(name + n - k, suf) == 0;
}

/* 1 when every scale of p is exactly an fp16 value. */
static int scales_fp16(const mpq_qparams *p) {
    for (int64_t g = 0; g < p->ngroups; g++)
        if (mpq_f16_to_f32(mpq_f32_to_f16(p->scale[g])) != p->scale[g])
            return 0;
    return 1;
}

/* Decides how layer l (checkpoint entry e) is written: it->quant = 1 and
 * the GPTQ shape when it maps, else a reason in why. A zero-point of 0,
 * which v1 cannot store, is an error naming the layer and the group. */
static mpq_err plan_layer(mpq_ctx *ctx, const mpq_ckpt *ck, const mpq_ckpt_entry *e,
                          const mpq_qlayer *l, int v2, gptq_item *it, char *why, size_t len) {
    const mpq_qparams *p = l->params;
    const mpq_qspec *s = &l->spec;
    const int64_t R = l->rows, C = l->cols;
    const int b = s->bits;
    why[0] = '\0';
    if (!is_decoder_linear(e->name))
        snprintf(why, len, "not a decoder linear layer (GPTQ quantizes those only)");
    else if (strcmp(s->ops->name, "int") != 0)
        snprintf(why, len, "quantizer family %s (GPTQ holds integers only)", s->ops->name);
    else if (b != 2 && b != 3 && b != 4 && b != 8)
        snprintf(why, len, "%d-bit codes (GPTQ holds 2, 3, 4 and 8 bits)", b);
    else if (e->ndim != 2)
        snprintf(why, len, "a %d-dimensional tensor", e->ndim);
    else if (s->scale != MPQ_QSCALE_FP16 && s->scale != MPQ_QSCALE_FP16Z &&
             !(s->scale == MPQ_QSCALE_FP32 && scales_fp16(p)))
        snprintf(why, len, "%s scales that are not all fp16 values", mpq_qscale_name(s->scale));
    else if (p->gpr > 0 && C % p->gcols != 0)
        snprintf(why, len, "%lld input columns are not a whole number of groups of %lld",
                 (long long)C, (long long)p->gcols);
    else if (C * b % 32 != 0)
        snprintf(why, len, "%lld input columns of %d bits do not fill whole int32 words",
                 (long long)C, b);
    else if (R * b % 32 != 0)
        snprintf(why, len,
                 "%lld output columns of %d-bit zero-points do not fill whole int32 words",
                 (long long)R, b);
    if (why[0])
        return MPQ_OK;
    for (int64_t g = 0; !v2 && p->zero && g < p->ngroups; g++) {
        const int64_t row = p->gpr > 1 ? g / p->gpr : (p->gpr == 1 ? g : 0);
        MPQ_CHECK(p->zero[g] != 0, MPQ_ERR_ARG,
                  "%s: layer '%s', group %lld (output row %lld): zero-point 0 cannot be stored in "
                  "GPTQ v1 (which stores zero - 1); export with --format gptq-v2",
                  ck->path, e->name, (long long)g, (long long)row);
    }
    it->quant = 1;
    it->bits = b;
    it->sym = !p->zero;
    it->rows = R;
    it->cols = C;
    it->group_size = p->gpr > 1 ? p->gcols : -1;
    it->ngroups = p->gpr > 1 ? p->gpr : 1;
    return MPQ_OK;
}

/* Plans every tensor of m (items [ntensors]); prints each quantized layer
 * that stays dense, and why. */
static mpq_err plan_model(mpq_ctx *ctx, const mpq_model *m, const mpq_ckpt *ck, int v2,
                          gptq_item *items) {
    mpq_err err = MPQ_OK;
    mpq_qlayer *l = NULL;
    char why[160];
    for (int64_t i = 0; i < mpq_model_ntensors(m); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        gptq_item *it = &items[i];
        it->entry = mpq_ckpt_find(ck, t->name);
        it->linear = is_decoder_linear(t->name) && t->ndim == 2;
        if (it->entry < 0 || !ck->entries[it->entry].quantized) {
            it->entry = -1;
            const int reorder = mpq_model_arch(m)->rope_interleaved && mpq_ckpt_is_qk(t->name);
            if ((t->dtype == MPQ_DTYPE_F16 || t->dtype == MPQ_DTYPE_BF16) && !reorder)
                it->dtype16 = (int)t->dtype;
            if (it->linear)
                printf("gptq: %s stays dense (F32): not quantized in the checkpoint\n", t->name);
            continue;
        }
        MPQ_TRY(mpq_ckpt_read_layer(ctx, ck, it->entry, &l));
        MPQ_TRY(plan_layer(ctx, ck, &ck->entries[it->entry], l, v2, it, why, sizeof why));
        if (!it->quant)
            printf("gptq: %s stays dense (F32, its dequantized values): %s\n", t->name, why);
        mpq_qlayer_destroy(&l);
    }
cleanup:
    mpq_qlayer_destroy(&l);
    return err;
}

/* ---- header and config.json ------------------------------------------------------ */

/* Appends tensor `name` {dtype, shape, data_offsets} to the header. */
static mpq_err header_add(mpq_ctx *ctx, cJSON *hdr, const char *name, const char *dtype, int ndim,
                          const int64_t *shape, int64_t elsize, int64_t *offset) {
    int64_t n = elsize, end = 0;
    for (int d = 0; d < ndim; d++)
        MPQ_CALL(mpq_mul64(ctx, n, shape[d], name, &n));
    MPQ_CALL(mpq_add64(ctx, *offset, n, "safetensors data size", &end));
    cJSON *e = cJSON_AddObjectToObject(hdr, name);
    MPQ_CHECK(e, MPQ_ERR_NOMEM, "cannot add tensor '%s' to the safetensors header", name);
    cJSON_AddStringToObject(e, "dtype", dtype);
    cJSON *shp = cJSON_AddArrayToObject(e, "shape");
    for (int d = 0; d < ndim; d++)
        cJSON_AddItemToArray(shp, cJSON_CreateNumber((double)shape[d]));
    cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)*offset));
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)end));
    *offset = end;
    return MPQ_OK;
}

/* "<module>.<suffix>" for the weight tensor `name` into buf. */
static void module_tensor(const char *name, const char *suffix, char *buf, size_t len) {
    size_t n = strlen(name);
    if (n > 7 && strcmp(name + n - 7, ".weight") == 0)
        n -= 7;
    snprintf(buf, len, "%.*s.%s", (int)n, name, suffix);
}

static mpq_err build_header(mpq_ctx *ctx, const mpq_model *m, const gptq_item *items, cJSON **out) {
    mpq_err err = MPQ_OK;
    cJSON *hdr = cJSON_CreateObject();
    char name[MPQ_TENSOR_NAME_MAX + 16];
    MPQ_ENSURE(hdr, MPQ_ERR_NOMEM, "cannot allocate the safetensors header");
    cJSON *meta = cJSON_AddObjectToObject(hdr, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    int64_t off = 0;
    for (int64_t i = 0; i < mpq_model_ntensors(m); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        const gptq_item *it = &items[i];
        if (!it->quant) {
            const char *dt = !it->dtype16 ? "F32" : it->dtype16 == MPQ_DTYPE_F16 ? "F16" : "BF16";
            MPQ_TRY(
                header_add(ctx, hdr, t->name, dt, t->ndim, t->shape, it->dtype16 ? 2 : 4, &off));
            continue;
        }
        const int64_t qw[2] = {it->cols * it->bits / 32, it->rows};
        const int64_t qz[2] = {it->ngroups, it->rows * it->bits / 32};
        const int64_t sc[2] = {it->ngroups, it->rows};
        module_tensor(t->name, "qweight", name, sizeof name);
        MPQ_TRY(header_add(ctx, hdr, name, "I32", 2, qw, 4, &off));
        module_tensor(t->name, "qzeros", name, sizeof name);
        MPQ_TRY(header_add(ctx, hdr, name, "I32", 2, qz, 4, &off));
        module_tensor(t->name, "g_idx", name, sizeof name);
        MPQ_TRY(header_add(ctx, hdr, name, "I32", 1, &it->cols, 4, &off));
        module_tensor(t->name, "scales", name, sizeof name);
        MPQ_TRY(header_add(ctx, hdr, name, "F16", 2, sc, 2, &off));
    }
    *out = hdr;
    hdr = NULL;
cleanup:
    cJSON_Delete(hdr);
    return err;
}

/* An anchored regular expression matching exactly the module of weight
 * tensor `name` (every character but letters, digits and '_' escaped). */
static void module_regex(const char *prefix, const char *name, char *buf, size_t len) {
    char mod[MPQ_TENSOR_NAME_MAX];
    module_tensor(name, "", mod, sizeof mod);
    mod[strlen(mod) - 1] = '\0'; /* the '.' module_tensor appended */
    size_t k = (size_t)snprintf(buf, len, "%s^", prefix);
    for (const char *c = mod; *c && k + 3 < len; c++) {
        const int plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                          (*c >= '0' && *c <= '9') || *c == '_';
        if (!plain)
            buf[k++] = '\\';
        buf[k++] = *c;
    }
    snprintf(buf + k, len - k, "$");
}

/* The most common (bits, group_size, sym) of the GPTQ layers, the first
 * seen on a tie; bits 4, group 128, sym when no layer maps. */
static const gptq_item *base_setting(const gptq_item *items, int64_t n) {
    static const gptq_item none = {.quant = 1, .bits = 4, .group_size = 128, .sym = 1};
    const gptq_item *best = &none;
    int64_t best_n = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!items[i].quant)
            continue;
        int64_t c = 0;
        for (int64_t j = 0; j < n; j++)
            c += items[j].quant && items[j].bits == items[i].bits &&
                 items[j].group_size == items[i].group_size && items[j].sym == items[i].sym;
        if (c > best_n) {
            best_n = c;
            best = &items[i];
        }
    }
    return best;
}

/* The "dynamic" rule a tensor needs: 0 none, 1 "-:" (a linear or
 * quantized layer left dense), 2 "+:" (settings other than the base). */
static int rule_of(const gptq_item *it, const gptq_item *base) {
    if (!it->quant)
        return it->linear || it->entry >= 0;
    return it->bits != base->bits || it->group_size != base->group_size || it->sym != base->sym ? 2
                                                                                                : 0;
}

/* Adds the rule of `it` for the module of weight tensor `name` to dyn. */
static mpq_err add_rule(mpq_ctx *ctx, cJSON *dyn, const char *name, const gptq_item *it,
                        const gptq_item *base) {
    char re[2 * MPQ_TENSOR_NAME_MAX + 8];
    const int rule = rule_of(it, base);
    if (rule == 0)
        return MPQ_OK;
    module_regex(rule == 1 ? "-:" : "+:", name, re, sizeof re);
    cJSON *o = cJSON_AddObjectToObject(dyn, re);
    MPQ_CHECK(o, MPQ_ERR_NOMEM, "cannot build config.json");
    if (rule == 2) {
        cJSON_AddNumberToObject(o, "bits", it->bits);
        cJSON_AddNumberToObject(o, "group_size", (double)it->group_size);
        cJSON_AddBoolToObject(o, "sym", it->sym);
    }
    return MPQ_OK;
}

/* vLLM fuses q/k/v into qkv_proj and gate/up into gate_up_proj and matches
 * "dynamic" against the fused name: when the members of such a group share
 * one rule, the fused module gets it too (no Hugging Face module has that
 * name, so other loaders never match it). */
static mpq_err add_fused_rules(mpq_ctx *ctx, const mpq_model *m, const gptq_item *items,
                               const gptq_item *base, cJSON *dyn) {
    static const char *const groups[][4] = {
        {"self_attn.qkv_proj", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"},
        {"mlp.gate_up_proj", "mlp.gate_proj", "mlp.up_proj", NULL},
    };
    char name[MPQ_TENSOR_NAME_MAX + 32];
    const int64_t n = mpq_model_ntensors(m);
    for (int64_t l = 0; l < mpq_model_arch(m)->n_layers; l++)
        for (size_t k = 0; k < sizeof groups / sizeof groups[0]; k++) {
            const gptq_item *first = NULL;
            int same = 1;
            for (int j = 1; j < 4 && groups[k][j] && same; j++) {
                snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)l,
                         groups[k][j]);
                int64_t i = 0;
                while (i < n && strcmp(mpq_model_tensor_at(m, i)->name, name) != 0)
                    i++;
                const gptq_item *it = i < n ? &items[i] : NULL;
                same = it &&
                       (!first || (rule_of(it, base) == rule_of(first, base) &&
                                   it->quant == first->quant && it->bits == first->bits &&
                                   it->group_size == first->group_size && it->sym == first->sym));
                first = first ? first : it;
            }
            if (!same || !first)
                continue;
            snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)l, groups[k][0]);
            MPQ_CALL(add_rule(ctx, dyn, name, first, base));
        }
    return MPQ_OK;
}

/* config.json: the Hugging Face config plus "quantization_config". */
static mpq_err build_config(mpq_ctx *ctx, const mpq_model *m, const mpq_ckpt *ck,
                            const gptq_item *items, int v2, cJSON **out) {
    mpq_err err = MPQ_OK;
    cJSON *cfg = mpq_ckpt_hf_config(mpq_model_arch(m));
    char method[32] = "", act[16] = "", stat[16] = "";
    MPQ_ENSURE(cfg, MPQ_ERR_NOMEM, "cannot build config.json");
    config_value(ck->config, "quant", "method", method, sizeof method);
    config_value(ck->config, "round", "act_order", act, sizeof act);
    config_value(ck->config, "round", "static_groups", stat, sizeof stat);
    const int gptq = strcmp(method, "gptq") == 0;
    const int64_t n = mpq_model_ntensors(m);
    const gptq_item *base = base_setting(items, n);
    /* GPTQ kernels compute in half precision (vLLM refuses float32): loaders
     * cast the F32 tensors of the file to it */
    cJSON_ReplaceItemInObjectCaseSensitive(cfg, "torch_dtype", cJSON_CreateString("float16"));
    cJSON *q = cJSON_AddObjectToObject(cfg, "quantization_config");
    MPQ_ENSURE(q, MPQ_ERR_NOMEM, "cannot build config.json");
    cJSON_AddStringToObject(q, "quant_method", "gptq");
    cJSON_AddNumberToObject(q, "bits", base->bits);
    cJSON_AddNumberToObject(q, "group_size", (double)base->group_size);
    /* mpquant's groups are always consecutive input columns: with act
     * order they were fixed in natural order (g_idx[i] = i / group_size) */
    cJSON_AddBoolToObject(q, "desc_act", gptq && strcmp(act, "true") == 0);
    cJSON_AddBoolToObject(q, "sym", base->sym);
    cJSON_AddBoolToObject(q, "static_groups", gptq && strcmp(stat, "true") == 0);
    cJSON_AddBoolToObject(q, "lm_head", 0);
    cJSON_AddStringToObject(q, "checkpoint_format", v2 ? "gptq_v2" : "gptq");
    cJSON *dyn = cJSON_AddObjectToObject(q, "dynamic");
    MPQ_ENSURE(dyn, MPQ_ERR_NOMEM, "cannot build config.json");
    for (int64_t i = 0; i < n; i++)
        MPQ_TRY(add_rule(ctx, dyn, mpq_model_tensor_at(m, i)->name, &items[i], base));
    MPQ_TRY(add_fused_rules(ctx, m, items, base, dyn));
    *out = cfg;
    cfg = NULL;
cleanup:
    cJSON_Delete(cfg);
    return err;
}

/* ---- packing ------------------------------------------------------------------------ */

/* ORs value v (bits wide) in as field k of the LSB-first bit stream whose
 * 32-bit words are words[0], words[stride], words[2 * stride], ... */
static void put_field(uint32_t *words, int64_t stride, int64_t k, int bits, uint32_t v) {
    const int64_t pos = k * bits, w = pos / 32;
    const int sh = (int)(pos % 32);
    words[w * stride] |= v << sh;
    if (sh + bits > 32) /* 3 bits: the field straddles two words */
        words[(w + 1) * stride] |= v >> (32 - sh);
}

/* Writes the four GPTQ tensors of layer `it` (output column j is row
 * src(j) of the checkpoint's layer: rotate-half order when to_half). */
static mpq_err write_layer(mpq_ctx *ctx, mpq_outfile *f, const mpq_ckpt *ck, const gptq_item *it,
                           int v2, int to_half, int64_t hd) {
    mpq_err err = MPQ_OK;
    mpq_qlayer *l = NULL;
    uint32_t *qw = NULL, *qz = NULL, *gi = NULL;
    uint16_t *sc = NULL;
    const int64_t R = it->rows, C = it->cols, G = it->ngroups, b = it->bits;
    MPQ_TRY(mpq_ckpt_read_layer(ctx, ck, it->entry, &l));
    const mpq_qparams *p = l->params;
    MPQ_ALLOC_TRY(qw, C * b / 32 * R);
    MPQ_ALLOC_TRY(qz, G * (R * b / 32));
    MPQ_ALLOC_TRY(sc, G * R);
    MPQ_ALLOC_TRY(gi, C);
    for (int64_t j = 0; j < R; j++) {
        const int64_t r = to_half ? mpq_ckpt_half_src(j, hd) : j;
        const uint8_t *codes = l->codes + r * C;
        for (int64_t c = 0; c < C; c++)
            put_field(qw + j, R, c, (int)b, codes[c]);
        for (int64_t g = 0; g < G; g++) {
            /* mpquant's group of (r, column g * group_cols) */
            const int64_t pg = mpq_qgroup_of(p, r, g * p->gcols);
            int32_t z = p->zero ? p->zero[pg] : (int32_t)1 << (b - 1);
            put_field(qz + g * (R * b / 32), 1, j, (int)b, (uint32_t)(v2 ? z : z - 1));
            sc[g * R + j] = mpq_f32_to_f16(p->scale[pg]);
        }
    }
    for (int64_t c = 0; c < C; c++)
        gi[c] = (uint32_t)(G > 1 ? c / p->gcols : 0);
    /* in the header's order; the host is little-endian like the file */
    MPQ_TRY(mpq_outfile_write(ctx, f, qw, (size_t)(C * b / 32 * R) * 4));
    MPQ_TRY(mpq_outfile_write(ctx, f, qz, (size_t)(G * (R * b / 32)) * 4));
    MPQ_TRY(mpq_outfile_write(ctx, f, gi, (size_t)C * 4));
    MPQ_TRY(mpq_outfile_write(ctx, f, sc, (size_t)(G * R) * 2));
cleanup:
    mpq_free(gi);
    mpq_free(sc);
    mpq_free(qz);
    mpq_free(qw);
    mpq_qlayer_destroy(&l);
    return err;
}

/* ---- the export ------------------------------------------------------------------ */

/* The safetensors file: 8-byte header length, header padded with spaces to
 * a multiple of 8, the tensors in header order. */
/* Tensor t in its stored 16-bit type (dtype16, a gptq_item's): through
 * fp32, which holds every such value, in chunks of GPTQ_CHUNK. */
static mpq_err write_16(mpq_ctx *ctx, mpq_outfile *f, const mpq_tensor *t, int dtype16, float *buf,
                        uint16_t *hbuf) {
    for (int64_t o = 0; o < t->numel; o += GPTQ_CHUNK) {
        const int64_t n = t->numel - o < GPTQ_CHUNK ? t->numel - o : GPTQ_CHUNK;
        MPQ_CALL(mpq_tensor_read_f32(ctx, t, o, n, buf));
        for (int64_t i = 0; i < n; i++)
            hbuf[i] = dtype16 == MPQ_DTYPE_F16 ? mpq_f32_to_f16(buf[i]) : mpq_f32_to_bf16(buf[i]);
        MPQ_CALL(mpq_outfile_write(ctx, f, hbuf, (size_t)n * sizeof *hbuf));
    }
    return MPQ_OK;
}

static mpq_err write_file(mpq_ctx *ctx, const mpq_model *m, const mpq_ckpt *ck,
                          const gptq_item *items, const cJSON *hdr, int v2, const char *path,
                          const mpq_outfile_opts *oo) {
    mpq_err err = MPQ_OK;
    float *buf = NULL;
    uint16_t *hbuf = NULL;
    mpq_outfile *f = NULL;
    const mpq_arch *a = mpq_model_arch(m);
    MPQ_ALLOC_TRY(buf, GPTQ_CHUNK);
    MPQ_ALLOC_TRY(hbuf, GPTQ_CHUNK);
    MPQ_TRY(mpq_outfile_open(ctx, path, oo, &f));
    MPQ_TRY(mpq_ckpt_write_st_header(ctx, f, hdr, path));
    for (int64_t i = 0; i < mpq_model_ntensors(m); i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        const int to_half = a->rope_interleaved && mpq_ckpt_is_qk(t->name);
        if (items[i].quant)
            MPQ_TRY(write_layer(ctx, f, ck, &items[i], v2, to_half, a->head_dim));
        else if (items[i].dtype16)
            MPQ_TRY(write_16(ctx, f, t, items[i].dtype16, buf, hbuf));
        else
            MPQ_TRY(mpq_ckpt_write_f32(ctx, f, t, to_half, a->head_dim, buf, GPTQ_CHUNK));
    }
    MPQ_TRY(mpq_outfile_commit(ctx, &f));
cleanup:
    mpq_outfile_abort(&f);
    mpq_free(buf);
    mpq_free(hbuf);
    return err;
}

static mpq_err export_gptq(mpq_ctx *ctx, const mpq_model *m, const char *path,
                           const mpq_export_opts *o, int v2) {
    mpq_err err = MPQ_OK;
    mpq_ckpt *ck = NULL;
    gptq_item *items = NULL;
    cJSON *hdr = NULL, *cfg = NULL;
    char *cfg_text = NULL;
    const char **inputs = NULL;
    int64_t ninputs = 0;
    char cfg_path[4096], src_cfg[4096], src_idx[4096];
    const mpq_arch *a = mpq_model_arch(m);
    const char *src = mpq_model_path(m);
    MPQ_CHECK(strcmp(a->format, mpq_format_mpqckpt.name) == 0, MPQ_ERR_ARG,
              "%s: GPTQ export needs an mpquant checkpoint (this model is format '%s'); "
              "quantize it with mpquant run first",
              src, a->format);
    MPQ_CHECK(o->write_config, MPQ_ERR_ARG,
              "%s: GPTQ export: config.json carries quantization_config, which loaders need; "
              "--no-config is not supported",
              path);
    MPQ_CHECK(mpq_ckpt_llama_layout(m), MPQ_ERR_ARG,
              "%s: GPTQ export needs a Llama-family model (this one is '%s')", src,
              a->family[0] ? a->family : "a plain tensor container");
    mpq_ckpt_sibling(path, "config.json", cfg_path, sizeof cfg_path);
    MPQ_TRY(mpq_ckpt_source_files(ctx, m, src_cfg, src_idx, &inputs, &ninputs));
    const mpq_outfile_opts oo = {o->overwrite, inputs, ninputs};
    /* both destinations are checked before anything is written */
    MPQ_TRY(mpq_outfile_check(ctx, path, &oo));
    MPQ_TRY(mpq_outfile_check(ctx, cfg_path, &oo));
    MPQ_TRY(mpq_ckpt_open(ctx, src, &ck));
    MPQ_ALLOC_TRY(items, mpq_model_ntensors(m) > 0 ? mpq_model_ntensors(m) : 1);
    MPQ_TRY(plan_model(ctx, m, ck, v2, items));
    MPQ_TRY(build_header(ctx, m, items, &hdr));
    MPQ_TRY(build_config(ctx, m, ck, items, v2, &cfg));
    cfg_text = cJSON_Print(cfg);
    MPQ_ENSURE(cfg_text, MPQ_ERR_NOMEM, "cannot format %s", cfg_path);
    MPQ_TRY(write_file(ctx, m, ck, items, hdr, v2, path, &oo));
    MPQ_TRY(mpq_ckpt_write_text_file(ctx, cfg_path, cfg_text, o->overwrite, inputs, ninputs));
cleanup:
    cJSON_free(cfg_text);
    cJSON_Delete(cfg);
    cJSON_Delete(hdr);
    mpq_free(items);
    mpq_ckpt_close(&ck);
    mpq_free(inputs);
    return err;
}

static mpq_err write_gptq(mpq_ctx *ctx, const mpq_model *m, const char *path,
                          const mpq_export_opts *o) {
    MPQ_CALL(export_gptq(ctx, m, path, o, 0));
    return MPQ_OK;
}

static mpq_err write_gptq_v2(mpq_ctx *ctx, const mpq_model *m, const char *path,
                             const mpq_export_opts *o) {
    MPQ_CALL(export_gptq(ctx, m, path, o, 1));
    return MPQ_OK;
}

const mpq_export_format mpq_export_gptq = {
    .name = "gptq",
    .summary = "GPTQ safetensors (qweight/qzeros/scales/g_idx, v1 zeros) with config.json, "
               "as transformers and vLLM load it",
    .write = write_gptq,
};

const mpq_export_format mpq_export_gptq_v2 = {
    .name = "gptq-v2",
    .summary = "GPTQ safetensors with checkpoint_format gptq_v2 (zeros as they are), as "
               "GPTQModel loads it",
    .write = write_gptq_v2,
};
