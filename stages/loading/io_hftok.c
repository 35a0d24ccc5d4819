/* io_hftok.c: reading a Hugging Face tokenizer.json (and tokenizer_config.json)
 * into mpq_hftok; what is supported is listed in hftok_internal.h. The
 * pre-tokenizers of byte-level BPE are read by io_hftok_bytelevel.c.
 *
 * The file is parsed whole with cJSON. Every id and string is validated
 * before it is used: ids are integers in [0, 2^31), vocabulary keys and ids
 * unique, merge sides and their concatenations entries of model.vocab, added
 * tokens consistent with the vocabulary. Messages read
 * "<file>: <JSON path>: <problem>". The normalizer's strings must be valid
 * UTF-8, as the library's serde reading requires of the whole file.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "hftok_internal.h"
#include "mpq_ctx.h"
#include "mpq_text.h"

/* A tokenizer.json larger than this is a damaged or foreign file. */
#define HF_MAX_FILE ((int64_t)1 << 30)

static uint64_t hf_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a, as io_tokenizer.c */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hf_mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

int32_t mpq_hftok_vocab_id(const mpq_hftok *h, const char *s, size_t len) {
    uint64_t mask = (uint64_t)h->vslots - 1;
    for (uint64_t i = hf_hash(s, len) & mask;; i = (i + 1) & mask) {
        int32_t id = h->vslot[i];
        if (id < 0)
            return -1;
        if ((size_t)h->len[id] == len && memcmp(h->pool + h->off[id], s, len) == 0)
            return id;
    }
}

int32_t mpq_hftok_lookup(const mpq_hftok *h, const char *s, size_t len) {
    int32_t id = mpq_hftok_vocab_id(h, s, len);
    for (int64_t k = 0; id < 0 && k < h->nadded; k++)
        if (h->added[k].len == len && memcmp(h->added[k].s, s, len) == 0)
            id = h->added[k].id;
    return id;
}

int32_t mpq_hftok_merge(const mpq_hftok *h, int32_t a, int32_t b, int32_t *merged) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint64_t mask = (uint64_t)h->mslots - 1;
    for (uint64_t i = hf_mix(key) & mask;; i = (i + 1) & mask) {
        if (h->mkey[i] == UINT64_MAX)
            return -1;
        if (h->mkey[i] == key) {
            *merged = h->mnew[i];
            return h->mrank[i];
        }
    }
}

/* ---- small JSON helpers ---------------------------------------------------- */

/* A non-negative integer id that fits int32. */
static int json_id(const cJSON *v, int32_t *out) {
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d < 2147483647.0) || d != floor(d))
        return 0;
    *out = (int32_t)d;
    return 1;
}

/* Optional boolean member `key` of obj: *out unchanged when absent or null. */
mpq_err mpq_hfjson_bool(mpq_ctx *ctx, const char *file, const char *where, const cJSON *obj,
                        const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return MPQ_OK;
    MPQ_CHECK(cJSON_IsBool(v), MPQ_ERR_FORMAT, "%s: %s.%s: not a boolean", file, where, key);
    *out = cJSON_IsTrue(v);
    return MPQ_OK;
}

/* Required (or, with opt, optional: NULL) string member `key` of obj. */
mpq_err mpq_hfjson_str(mpq_ctx *ctx, const char *file, const char *where, const cJSON *obj,
                       const char *key, int opt, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (opt && (!v || cJSON_IsNull(v)))
        return MPQ_OK;
    MPQ_CHECK(v, MPQ_ERR_FORMAT, "%s: %s.%s: missing", file, where, key);
    MPQ_CHECK(cJSON_IsString(v), MPQ_ERR_FORMAT, "%s: %s.%s: not a string", file, where, key);
    *out = v->valuestring;
    return MPQ_OK;
}

static mpq_err read_json(mpq_ctx *ctx, const char *path, cJSON **out) {
    mpq_err err = MPQ_OK;
    char *text = NULL;
    int64_t len = 0;
    *out = NULL;
    struct stat st;
    MPQ_CHECK(stat(path, &st) == 0, MPQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    MPQ_CHECK(S_ISREG(st.st_mode), MPQ_ERR_IO, "%s: not a regular file", path);
    MPQ_CHECK((int64_t)st.st_size <= HF_MAX_FILE, MPQ_ERR_FORMAT,
              "%s: %lld bytes, larger than the %lld-byte limit for tokenizer files", path,
              (long long)st.st_size, (long long)HF_MAX_FILE);
    MPQ_TRY(mpq_text_read(ctx, path, &text, &len));
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)len, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= text && at <= text + len ? (long)(at - text) : -1;
        MPQ_ENSURE(0, MPQ_ERR_FORMAT, "%s: not valid JSON (error near byte %ld of %lld%s)", path,
                   off, (long long)len, off >= len ? ": truncated?" : "");
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        MPQ_ENSURE(0, MPQ_ERR_FORMAT, "%s: not a JSON object", path);
    }
    *out = root;
cleanup:
    mpq_free(text);
    return err;
}

static mpq_err dup_str(mpq_ctx *ctx, const char *s, char **out) {
    MPQ_CALL(mpq_strdup(ctx, s, out));
    return MPQ_OK;
}

/* ---- normalizer, pre-tokenizer, decoder ------------------------------------ */

/* Replace's pattern must be {"String": s}; a Regex is refused. */
static mpq_err parse_replace(mpq_ctx *ctx, const char *file, const char *where, const cJSON *o,
                             mpq_hf_step *st) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(pat, "String");
    MPQ_CHECK(!cJSON_GetObjectItemCaseSensitive(pat, "Regex"), MPQ_ERR_FORMAT,
              "%s: %s: Replace with a Regex pattern is not supported (only String)", file, where);
    MPQ_CHECK(cJSON_IsString(s) && s->valuestring[0], MPQ_ERR_FORMAT,
              "%s: %s.pattern: expected {\"String\": non-empty string}", file, where);
    const char *content = NULL;
    MPQ_CALL(mpq_hfjson_str(ctx, file, where, o, "content", 0, &content));
    st->op = HF_REPLACE;
    MPQ_CALL(dup_str(ctx, s->valuestring, &st->a));
    MPQ_CALL(dup_str(ctx, content, &st->b));
    return MPQ_OK;
}

/* prepend_scheme (or the older add_prefix_space) of a Metaspace. */
static mpq_err parse_scheme(mpq_ctx *ctx, const char *file, const char *where, const cJSON *o,
                            mpq_hf_scheme *out) {
    const char *ps = NULL;
    MPQ_CALL(mpq_hfjson_str(ctx, file, where, o, "prepend_scheme", 1, &ps));
    int aps = 1;
    MPQ_CALL(mpq_hfjson_bool(ctx, file, where, o, "add_prefix_space", &aps));
    if (!ps) {
        *out = aps ? HF_PREPEND_ALWAYS : HF_PREPEND_NEVER;
        return MPQ_OK;
    }
    if (strcmp(ps, "always") == 0)
        *out = HF_PREPEND_ALWAYS;
    else if (strcmp(ps, "first") == 0)
        *out = HF_PREPEND_FIRST;
    else if (strcmp(ps, "never") == 0)
        *out = HF_PREPEND_NEVER;
    else
        return MPQ_ERROR(MPQ_ERR_FORMAT,
                         "%s: %s.prepend_scheme: \"%s\" (expected first, always or never)", file,
                         where, ps);
    return MPQ_OK;
}

/* One code point: the replacement of a Metaspace, the content of a Strip. */
static mpq_err one_char(mpq_ctx *ctx, const char *file, const char *where, const char *s) {
    size_t n = strlen(s);
    unsigned char c = n ? (unsigned char)s[0] : 0;
    size_t want = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    MPQ_CHECK(n > 0 && n == want, MPQ_ERR_FORMAT, "%s: %s: \"%s\" is not one character", file,
              where, s);
    return MPQ_OK;
}

/* The mpq_hf_form of normalizer type `type`, -1 if it is none. */
static int nf_form(const char *type) {
    static const char *const names[] = {
        [HF_NFC] = "NFC", [HF_NFD] = "NFD", [HF_NFKC] = "NFKC", [HF_NFKD] = "NFKD"};
    for (int k = 0; k < (int)(sizeof names / sizeof names[0]); k++)
        if (strcmp(type, names[k]) == 0)
            return k;
    return -1;
}

/* A chain (normalizer or decoder): `o` is null, one step, or a Sequence whose
 * steps are under `seqkey`. `dec` selects the decoder step types. */
static mpq_err parse_chain(mpq_ctx *ctx, const char *file, const char *name, const cJSON *o,
                           const char *seqkey, int dec, mpq_hf_step **steps, int64_t *nsteps) {
    char where[128];
    const cJSON *list = o;
    int seq = 0;
    *nsteps = 0;
    if (!o || cJSON_IsNull(o))
        return MPQ_OK;
    const char *type = NULL;
    MPQ_CHECK(cJSON_IsObject(o), MPQ_ERR_FORMAT, "%s: %s: not an object", file, name);
    MPQ_CALL(mpq_hfjson_str(ctx, file, name, o, "type", 0, &type));
    if (strcmp(type, "Sequence") == 0) {
        list = cJSON_GetObjectItemCaseSensitive(o, seqkey);
        MPQ_CHECK(cJSON_IsArray(list), MPQ_ERR_FORMAT, "%s: %s.%s: not an array", file, name,
                  seqkey);
        seq = 1;
    }
    int64_t n = seq ? cJSON_GetArraySize(list) : 1;
    MPQ_CALL(mpq_malloc(ctx, n > 0 ? n : 1, sizeof **steps, (void **)steps));
    for (int64_t k = 0; k < n; k++) {
        const cJSON *s = seq ? cJSON_GetArrayItem(list, (int)k) : o;
        if (seq)
            snprintf(where, sizeof where, "%s.%s[%lld]", name, seqkey, (long long)k);
        else
            snprintf(where, sizeof where, "%s", name);
        MPQ_CHECK(cJSON_IsObject(s), MPQ_ERR_FORMAT, "%s: %s: not an object", file, where);
        MPQ_CALL(mpq_hfjson_str(ctx, file, where, s, "type", 0, &type));
        mpq_hf_step *st = &(*steps)[k];
        *nsteps = k + 1;
        if (strcmp(type, "Replace") == 0) {
            MPQ_CALL(parse_replace(ctx, file, where, s, st));
            /* The text stays valid UTF-8 for a Unicode normalization (a
             * valid pattern only matches whole characters). */
            MPQ_CHECK(dec || (mpq_hftok_utf8_valid(st->a, strlen(st->a)) &&
                              mpq_hftok_utf8_valid(st->b, strlen(st->b))),
                      MPQ_ERR_FORMAT, "%s: %s: the pattern or content is not valid UTF-8", file,
                      where);
        } else if (!dec && strcmp(type, "Prepend") == 0) {
            const char *p = NULL;
            MPQ_CALL(mpq_hfjson_str(ctx, file, where, s, "prepend", 0, &p));
            MPQ_CHECK(mpq_hftok_utf8_valid(p, strlen(p)), MPQ_ERR_FORMAT,
                      "%s: %s.prepend: not valid UTF-8", file, where);
            st->op = HF_PREPEND;
            MPQ_CALL(dup_str(ctx, p, &st->a));
        } else if (!dec && nf_form(type) >= 0) {
            st->op = HF_UNINORM;
            st->n0 = nf_form(type);
        } else if (dec && strcmp(type, "ByteFallback") == 0) {
            st->op = HF_BYTEFALLBACK;
        } else if (dec && strcmp(type, "Fuse") == 0) {
            st->op = HF_FUSE;
        } else if (dec && strcmp(type, "Strip") == 0) {
            const char *c = NULL;
            int32_t a = 0, b = 0;
            MPQ_CALL(mpq_hfjson_str(ctx, file, where, s, "content", 0, &c));
            MPQ_CALL(one_char(ctx, file, where, c));
            MPQ_CHECK(json_id(cJSON_GetObjectItemCaseSensitive(s, "start"), &a) &&
                          json_id(cJSON_GetObjectItemCaseSensitive(s, "stop"), &b),
                      MPQ_ERR_FORMAT, "%s: %s: start and stop must be non-negative integers", file,
                      where);
            st->op = HF_STRIP;
            st->n0 = a;
            st->n1 = b;
            MPQ_CALL(dup_str(ctx, c, &st->a));
        } else if (dec && strcmp(type, "ByteLevel") == 0) {
            st->op = HF_BYTELEVEL; /* its options only concern offsets */
        } else if (dec && strcmp(type, "Metaspace") == 0) {
            const char *r = NULL;
            mpq_hf_scheme sc;
            MPQ_CALL(mpq_hfjson_str(ctx, file, where, s, "replacement", 0, &r));
            MPQ_CALL(one_char(ctx, file, where, r));
            MPQ_CALL(parse_scheme(ctx, file, where, s, &sc));
            st->op = HF_METASPACE;
            st->prepend = sc != HF_PREPEND_NEVER;
            MPQ_CALL(dup_str(ctx, r, &st->a));
        } else {
            return MPQ_ERROR(MPQ_ERR_FORMAT,
                             "%s: %s: %s type \"%s\" is not supported (supported: %s)", file, where,
                             dec ? "decoder" : "normalizer", type,
                             dec ? "Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel, "
                                   "Sequence"
                                 : "NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence");
        }
    }
    return MPQ_OK;
}

/* Metaspace, alone or as the one step of a Sequence, here; anything else in
 * io_hftok_bytelevel.c. */
static mpq_err parse_pretok(mpq_ctx *ctx, const char *file, const cJSON *o, mpq_hftok *h) {
    if (!o || cJSON_IsNull(o))
        return MPQ_OK;
    const char *type = NULL;
    char where[96] = "pre_tokenizer";
    MPQ_CHECK(cJSON_IsObject(o), MPQ_ERR_FORMAT, "%s: pre_tokenizer: not an object", file);
    MPQ_CALL(mpq_hfjson_str(ctx, file, where, o, "type", 0, &type));
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        const cJSON *s = cJSON_GetArrayItem(list, 0);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "type");
        if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) != 1 || !cJSON_IsString(t) ||
            strcmp(t->valuestring, "Metaspace") != 0)
            return mpq_hftok_parse_pre(ctx, file, o, h);
        snprintf(where, sizeof where, "pre_tokenizer.pretokenizers[0]");
        o = s;
    } else if (strcmp(type, "Metaspace") != 0) {
        return mpq_hftok_parse_pre(ctx, file, o, h);
    }
    const char *r = NULL;
    MPQ_CALL(mpq_hfjson_str(ctx, file, where, o, "replacement", 0, &r));
    MPQ_CALL(one_char(ctx, file, where, r));
    MPQ_CALL(parse_scheme(ctx, file, where, o, &h->ms_scheme));
    h->ms_split = 1;
    MPQ_CALL(mpq_hfjson_bool(ctx, file, where, o, "split", &h->ms_split));
    MPQ_CALL(dup_str(ctx, r, &h->ms_repl));
    h->metaspace = 1;
    return MPQ_OK;
}

/* ---- the vocabulary and the added tokens ----------------------------------- */

/* Sizes the string table: max id + 1 over model.vocab and added_tokens, and
 * the bytes of every string. */
static mpq_err table_size(mpq_ctx *ctx, const char *file, const cJSON *vocab, const cJSON *added,
                          int64_t max_size, mpq_hftok *h, int64_t *bytes) {
    int64_t size = 0, nb = 0, nv = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id = 0;
        MPQ_CHECK(e->string, MPQ_ERR_FORMAT, "%s: model.vocab: an entry has no key", file);
        MPQ_CHECK(json_id(e, &id), MPQ_ERR_FORMAT,
                  "%s: model.vocab[\"%s\"]: the id must be an integer in [0, 2^31 - 1)", file,
                  e->string);
        size = id + 1 > size ? id + 1 : size;
        nb += (int64_t)strlen(e->string) + 1;
        nv++;
    }
    int n = cJSON_GetArraySize(added);
    for (int k = 0; k < n; k++) {
        const cJSON *a = cJSON_GetArrayItem(added, k);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        int32_t id = 0;
        MPQ_CHECK(cJSON_IsObject(a) && json_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &id),
                  MPQ_ERR_FORMAT,
                  "%s: added_tokens[%d]: expected an object with an integer \"id\" in [0, "
                  "2^31 - 1)",
                  file, k);
        MPQ_CHECK(cJSON_IsString(c) && c->valuestring[0], MPQ_ERR_FORMAT,
                  "%s: added_tokens[%d].content: not a non-empty string", file, k);
        size = id + 1 > size ? id + 1 : size;
        nb += (int64_t)strlen(c->valuestring) + 1;
    }
    MPQ_CHECK(nv > 0, MPQ_ERR_FORMAT, "%s: model.vocab: empty", file);
    /* Models often pad their embedding beyond the tokenizer's ids. */
    MPQ_CHECK(size <= max_size, MPQ_ERR_FORMAT,
              "%s: the tokenizer has %lld ids (0 to %lld) but the model's vocab_size is %lld: "
              "not this model's tokenizer",
              file, (long long)size, (long long)size - 1, (long long)max_size);
    h->size = size;
    h->nvocab = nv;
    *bytes = nb;
    return MPQ_OK;
}

/* Stores string s as id's (the id must be free). */
static void table_put(mpq_hftok *h, int64_t *used, int32_t id, const char *s) {
    size_t n = strlen(s);
    memcpy(h->pool + *used, s, n + 1);
    h->off[id] = *used;
    h->len[id] = (int64_t)n;
    h->max_len = (int64_t)n > h->max_len ? (int64_t)n : h->max_len;
    *used += (int64_t)n + 1;
}

static mpq_err parse_vocab(mpq_ctx *ctx, const char *file, const cJSON *vocab, const cJSON *added,
                           int64_t max_size, mpq_hftok *h) {
    int64_t bytes = 0, used = 0;
    MPQ_CALL(table_size(ctx, file, vocab, added, max_size, h, &bytes));
    MPQ_CALL(mpq_malloc(ctx, bytes + 1, 1, (void **)&h->pool));
    MPQ_CALL(mpq_malloc(ctx, h->size, sizeof *h->off, (void **)&h->off));
    MPQ_CALL(mpq_malloc(ctx, h->size, sizeof *h->len, (void **)&h->len));
    MPQ_CALL(mpq_malloc(ctx, h->size, 1, (void **)&h->is_special));
    for (int64_t i = 0; i < h->size; i++)
        h->len[i] = -1;
    int64_t n = 16;
    while (n < 2 * h->nvocab)
        n *= 2;
    h->vslots = n;
    MPQ_CALL(mpq_malloc(ctx, n, sizeof *h->vslot, (void **)&h->vslot));
    for (int64_t i = 0; i < n; i++)
        h->vslot[i] = -1;
    uint64_t mask = (uint64_t)n - 1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id = 0;
        json_id(e, &id);
        MPQ_CHECK(h->len[id] < 0, MPQ_ERR_FORMAT,
                  "%s: model.vocab[\"%s\"]: id %d is also given to \"%s\"", file, e->string,
                  (int)id, h->pool + h->off[id]);
        size_t len = strlen(e->string);
        int32_t other = mpq_hftok_vocab_id(h, e->string, len);
        MPQ_CHECK(other < 0, MPQ_ERR_FORMAT, "%s: model.vocab: key \"%s\" appears twice", file,
                  e->string);
        table_put(h, &used, id, e->string);
        uint64_t i = hf_hash(e->string, len) & mask;
        while (h->vslot[i] >= 0)
            i = (i + 1) & mask;
        h->vslot[i] = id;
    }
    int na = cJSON_GetArraySize(added);
    MPQ_CALL(mpq_malloc(ctx, na > 0 ? na : 1, sizeof *h->added, (void **)&h->added));
    for (int k = 0; k < na; k++) {
        const cJSON *a = cJSON_GetArrayItem(added, k);
        const char *c = cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring;
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%d]", k);
        int32_t id = 0;
        json_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &id);
        int32_t v = mpq_hftok_vocab_id(h, c, strlen(c));
        MPQ_CHECK(v < 0 || v == id, MPQ_ERR_FORMAT,
                  "%s: %s: \"%s\" has id %d but model.vocab gives it %d", file, where, c, (int)id,
                  (int)v);
        MPQ_CHECK(v >= 0 || h->len[id] < 0, MPQ_ERR_FORMAT,
                  "%s: %s: id %d of \"%s\" is already \"%s\"", file, where, (int)id, c,
                  h->pool + h->off[id]);
        if (v < 0)
            table_put(h, &used, id, c);
        mpq_hf_added *t = &h->added[h->nadded++];
        t->id = id;
        t->len = strlen(c);
        MPQ_CALL(dup_str(ctx, c, &t->s));
        int single = 0, norm = 0;
        MPQ_CALL(mpq_hfjson_bool(ctx, file, where, a, "special", &t->special));
        MPQ_CALL(mpq_hfjson_bool(ctx, file, where, a, "lstrip", &t->lstrip));
        MPQ_CALL(mpq_hfjson_bool(ctx, file, where, a, "rstrip", &t->rstrip));
        MPQ_CALL(mpq_hfjson_bool(ctx, file, where, a, "single_word", &single));
        MPQ_CALL(mpq_hfjson_bool(ctx, file, where, a, "normalized", &norm));
        MPQ_CHECK(!single, MPQ_ERR_FORMAT, "%s: %s (\"%s\"): single_word is not supported", file,
                  where, c);
        MPQ_CHECK(!norm, MPQ_ERR_FORMAT,
                  "%s: %s (\"%s\"): normalized added tokens are not supported", file, where, c);
        h->is_special[id] = (uint8_t)(h->is_special[id] || t->special);
    }
    /* Longest first, then by id: the first token that matches at a position
     * is the longest one there. Insertion sort: a handful of tokens. */
    for (int64_t i = 1; i < h->nadded; i++) {
        mpq_hf_added x = h->added[i];
        int64_t j = i;
        while (j > 0 && (h->added[j - 1].len < x.len ||
                         (h->added[j - 1].len == x.len && h->added[j - 1].id > x.id))) {
            h->added[j] = h->added[j - 1];
            j--;
        }
        h->added[j] = x;
    }
    return MPQ_OK;
}

/* ---- merges ------------------------------------------------------------------ */

/* The two sides of merge k: a pair ["a", "b"], or a string "a b". A string
 * with more than one space (the TinyLlama file has "   ", "     ", "▁  ") is
 * cut at the one space whose sides are both vocabulary entries. */
static mpq_err merge_sides(mpq_ctx *ctx, const char *file, const mpq_hftok *h, const cJSON *m,
                           int64_t k, int32_t *a, int32_t *b) {
    if (cJSON_IsArray(m)) {
        const cJSON *x = cJSON_GetArrayItem(m, 0), *y = cJSON_GetArrayItem(m, 1);
        MPQ_CHECK(cJSON_GetArraySize(m) == 2 && cJSON_IsString(x) && cJSON_IsString(y),
                  MPQ_ERR_FORMAT, "%s: model.merges[%lld]: expected two strings", file,
                  (long long)k);
        *a = mpq_hftok_vocab_id(h, x->valuestring, strlen(x->valuestring));
        *b = mpq_hftok_vocab_id(h, y->valuestring, strlen(y->valuestring));
        MPQ_CHECK(*a >= 0 && *b >= 0, MPQ_ERR_FORMAT,
                  "%s: model.merges[%lld]: \"%s\" is not in model.vocab", file, (long long)k,
                  *a < 0 ? x->valuestring : y->valuestring);
        return MPQ_OK;
    }
    MPQ_CHECK(cJSON_IsString(m), MPQ_ERR_FORMAT,
              "%s: model.merges[%lld]: expected \"a b\" or [\"a\", \"b\"]", file, (long long)k);
    const char *s = m->valuestring;
    size_t n = strlen(s);
    int found = 0, spaces = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != ' ')
            continue;
        spaces++;
        int32_t x = mpq_hftok_vocab_id(h, s, i), y = mpq_hftok_vocab_id(h, s + i + 1, n - i - 1);
        if (x >= 0 && y >= 0) {
            *a = x;
            *b = y;
            found++;
        }
    }
    MPQ_CHECK(spaces > 0, MPQ_ERR_FORMAT, "%s: model.merges[%lld]: \"%s\" has no space", file,
              (long long)k, s);
    MPQ_CHECK(found == 1, MPQ_ERR_FORMAT, "%s: model.merges[%lld]: \"%s\" %s", file, (long long)k,
              s,
              found ? "splits into two model.vocab entries at more than one space"
                    : "does not split into two model.vocab entries at a space (a token is "
                      "unknown)");
    return MPQ_OK;
}

static mpq_err parse_merges(mpq_ctx *ctx, const char *file, const cJSON *merges, mpq_hftok *h) {
    mpq_err err = MPQ_OK;
    char *cat = NULL;
    int64_t n = cJSON_GetArraySize(merges), slots = 16;
    while (slots < 2 * n)
        slots *= 2;
    h->mslots = slots;
    MPQ_ALLOC_TRY(h->mkey, slots);
    MPQ_ALLOC_TRY(h->mrank, slots);
    MPQ_ALLOC_TRY(h->mnew, slots);
    MPQ_ALLOC_TRY(cat, 2 * h->max_len + 1);
    for (int64_t i = 0; i < slots; i++)
        h->mkey[i] = UINT64_MAX;
    uint64_t mask = (uint64_t)slots - 1;
    int64_t k = 0;
    for (const cJSON *m = merges->child; m; m = m->next, k++) {
        int32_t a = -1, b = -1;
        MPQ_TRY(merge_sides(ctx, file, h, m, k, &a, &b));
        size_t la = (size_t)h->len[a], lb = (size_t)h->len[b];
        memcpy(cat, h->pool + h->off[a], la);
        memcpy(cat + la, h->pool + h->off[b], lb);
        int32_t id = mpq_hftok_vocab_id(h, cat, la + lb);
        cat[la + lb] = '\0';
        MPQ_ENSURE(id >= 0, MPQ_ERR_FORMAT,
                   "%s: model.merges[%lld]: the merged token \"%s\" is not in model.vocab", file,
                   (long long)k, cat);
        /* A repeated pair keeps its last rank, as the tokenizers library's
         * map of merges does. */
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint64_t i = hf_mix(key) & mask;
        while (h->mkey[i] != UINT64_MAX && h->mkey[i] != key)
            i = (i + 1) & mask;
        h->mkey[i] = key;
        h->mrank[i] = (int32_t)k;
        h->mnew[i] = id;
    }
    h->nmerges = k;
cleanup:
    mpq_free(cat);
    return err;
}

static mpq_err parse_model(mpq_ctx *ctx, const char *file, const cJSON *root, int64_t max_size,
                           mpq_hftok *h) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    MPQ_CHECK(cJSON_IsObject(model), MPQ_ERR_FORMAT, "%s: model: missing or not an object", file);
    const char *type = NULL, *unk = NULL, *pre = NULL, *suf = NULL;
    MPQ_CALL(mpq_hfjson_str(ctx, file, "model", model, "type", 1, &type));
    MPQ_CHECK(!type || strcmp(type, "BPE") == 0, MPQ_ERR_FORMAT,
              "%s: model.type: \"%s\" is not supported (only BPE)", file, type);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    MPQ_CHECK(cJSON_IsObject(vocab), MPQ_ERR_FORMAT, "%s: model.vocab: missing or not an object",
              file);
    MPQ_CHECK(cJSON_IsArray(merges), MPQ_ERR_FORMAT, "%s: model.merges: missing or not an array",
              file);
    MPQ_CHECK(!added || cJSON_IsNull(added) || cJSON_IsArray(added), MPQ_ERR_FORMAT,
              "%s: added_tokens: not an array", file);
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    MPQ_CHECK(!drop || cJSON_IsNull(drop) || (cJSON_IsNumber(drop) && drop->valuedouble == 0.0),
              MPQ_ERR_FORMAT, "%s: model.dropout: BPE dropout is not supported (null expected)",
              file);
    MPQ_CALL(mpq_hfjson_str(ctx, file, "model", model, "continuing_subword_prefix", 1, &pre));
    MPQ_CALL(mpq_hfjson_str(ctx, file, "model", model, "end_of_word_suffix", 1, &suf));
    MPQ_CHECK((!pre || !*pre) && (!suf || !*suf), MPQ_ERR_FORMAT,
              "%s: model: continuing_subword_prefix and end_of_word_suffix are not supported",
              file);
    MPQ_CALL(mpq_hfjson_bool(ctx, file, "model", model, "fuse_unk", &h->fuse_unk));
    MPQ_CALL(mpq_hfjson_bool(ctx, file, "model", model, "byte_fallback", &h->byte_fallback));
    MPQ_CALL(mpq_hfjson_bool(ctx, file, "model", model, "ignore_merges", &h->ignore_merges));
    MPQ_CALL(parse_vocab(ctx, file, vocab, cJSON_IsArray(added) ? added : NULL, max_size, h));
    MPQ_CALL(parse_merges(ctx, file, merges, h));
    MPQ_CALL(mpq_hfjson_str(ctx, file, "model", model, "unk_token", 1, &unk));
    h->unk = unk ? mpq_hftok_vocab_id(h, unk, strlen(unk)) : -1;
    MPQ_CHECK(!unk || h->unk >= 0, MPQ_ERR_FORMAT,
              "%s: model.unk_token: \"%s\" is not in model.vocab", file, unk);
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        h->byte_id[b] = mpq_hftok_vocab_id(h, s, 6);
    }
    return MPQ_OK;
}

/* ---- BOS, EOS: post_processor and tokenizer_config.json --------------------- */

/* The id of special token `name` of a TemplateProcessing (its
 * special_tokens entry, else the token of that content); -1 if unknown. */
static int32_t template_id(const mpq_hftok *h, const cJSON *specials, const char *name) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(specials, name);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(e, "ids");
    int32_t id = -1;
    if (cJSON_GetArraySize(ids) == 1 && json_id(cJSON_GetArrayItem(ids, 0), &id) && id < h->size)
        return id;
    return mpq_hftok_lookup(h, name, strlen(name));
}

/* A TemplateProcessing's single template (the post-processor or the first
 * one of a Sequence): the special token before sequence A is the BOS (and
 * is added), the one after it the EOS. Other post-processors are ignored
 * (they only matter to add_special_tokens). */
static void parse_template(const mpq_hftok *h, const cJSON *root, int32_t *bos, int32_t *eos) {
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pp, "type");
    *bos = *eos = -1;
    if (cJSON_IsString(type) && strcmp(type->valuestring, "Sequence") == 0) {
        /* Llama 3: ByteLevel, then the template */
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pp, "processors");
        for (const cJSON *it = cJSON_IsArray(list) ? list->child : NULL; it; it = it->next) {
            type = cJSON_GetObjectItemCaseSensitive(it, "type");
            pp = it;
            if (cJSON_IsString(type) && strcmp(type->valuestring, "TemplateProcessing") == 0)
                break;
        }
    }
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "TemplateProcessing") != 0)
        return;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens");
    int seen_a = 0;
    for (const cJSON *it = cJSON_IsArray(single) ? single->child : NULL; it; it = it->next) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(sp, "id");
        if (cJSON_GetObjectItemCaseSensitive(it, "Sequence"))
            seen_a = 1;
        else if (cJSON_IsString(name) && !seen_a && *bos < 0)
            *bos = template_id(h, specials, name->valuestring);
        else if (cJSON_IsString(name) && seen_a && *eos < 0)
            *eos = template_id(h, specials, name->valuestring);
    }
}

/* bos_token / eos_token of tokenizer_config.json: a string, an object with
 * "content" (AddedToken), or null. *id unchanged when absent or null. */
static mpq_err config_token(mpq_ctx *ctx, const char *file, const mpq_hftok *h, const cJSON *cfg,
                            const char *key, int32_t *id) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v))
        return MPQ_OK;
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "content");
    MPQ_CHECK(cJSON_IsString(v), MPQ_ERR_FORMAT,
              "%s: %s: expected a string or an object with \"content\"", file, key);
    *id = mpq_hftok_lookup(h, v->valuestring, strlen(v->valuestring));
    MPQ_CHECK(*id >= 0, MPQ_ERR_FORMAT, "%s: %s: \"%s\" is not a token of %s", file, key,
              v->valuestring, h->path);
    return MPQ_OK;
}

static mpq_err parse_specials(mpq_ctx *ctx, const cJSON *root, const char *config, mpq_hftok *h) {
    mpq_err err = MPQ_OK;
    cJSON *cfg = NULL;
    int32_t tbos = -1, teos = -1;
    parse_template(h, root, &tbos, &teos);
    h->bos = tbos;
    h->eos = teos;
    h->add_bos = tbos >= 0;
    if (config) {
        MPQ_TRY(read_json(ctx, config, &cfg));
        MPQ_TRY(config_token(ctx, config, h, cfg, "bos_token", &h->bos));
        MPQ_TRY(config_token(ctx, config, h, cfg, "eos_token", &h->eos));
        int add = -1;
        MPQ_TRY(mpq_hfjson_bool(ctx, config, "tokenizer_config", cfg, "add_bos_token", &add));
        if (add >= 0)
            h->add_bos = add;
        else
            h->add_bos = tbos >= 0 && tbos == h->bos;
        MPQ_ENSURE(!h->add_bos || h->bos >= 0, MPQ_ERR_FORMAT,
                   "%s: add_bos_token is true but there is no bos_token", config);
    }
cleanup:
    cJSON_Delete(cfg);
    return err;
}

/* ---- load, destroy ----------------------------------------------------------- */

mpq_err mpq_hftok_load(mpq_ctx *ctx, const char *path, const char *config, int64_t max_size,
                       mpq_hftok **out) {
    mpq_err err = MPQ_OK;
    cJSON *root = NULL;
    mpq_hftok *h = NULL;
    *out = NULL;
    MPQ_TRY(read_json(ctx, path, &root));
    MPQ_ALLOC_TRY(h, 1);
    h->unk = h->bos = h->eos = -1;
    mpq_hftok_bytelevel_init(h);
    MPQ_TRY(mpq_strdup(ctx, path, &h->path));
    /* The cheap components first, so that an unsupported tokenizer is named
     * by the part that makes it so. */
    MPQ_TRY(parse_pretok(ctx, path, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), h));
    MPQ_TRY(parse_chain(ctx, path, "normalizer",
                        cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizers", 0,
                        &h->norm, &h->nnorm));
    for (int64_t k = 0; k < h->nnorm; k++)
        h->uninorm |= h->norm[k].op == HF_UNINORM;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    h->has_decoder = dec && !cJSON_IsNull(dec);
    MPQ_TRY(parse_chain(ctx, path, "decoder", dec, "decoders", 1, &h->dec, &h->ndec));
    MPQ_TRY(parse_model(ctx, path, root, max_size, h));
    MPQ_TRY(parse_specials(ctx, root, config, h));
    *out = h;
    h = NULL;
cleanup:
    mpq_hftok_destroy(&h);
    cJSON_Delete(root);
    return err;
}

static void free_steps(mpq_hf_step *s, int64_t n) {
    for (int64_t i = 0; s && i < n; i++) {
        mpq_free(s[i].a);
        mpq_free(s[i].b);
    }
    mpq_free(s);
}

void mpq_hftok_destroy(mpq_hftok **ph) {
    if (!ph || !*ph)
        return;
    mpq_hftok *h = *ph;
    for (int64_t k = 0; h->added && k < h->nadded; k++)
        mpq_free(h->added[k].s);
    mpq_free(h->added);
    free_steps(h->norm, h->nnorm);
    free_steps(h->dec, h->ndec);
    mpq_free(h->ms_repl);
    mpq_hftok_pre_free(h);
    mpq_free(h->mkey);
    mpq_free(h->mrank);
    mpq_free(h->mnew);
    mpq_free(h->vslot);
    mpq_free(h->is_special);
    mpq_free(h->len);
    mpq_free(h->off);
    mpq_free(h->pool);
    mpq_free(h->path);
    mpq_free(h);
    *ph = NULL;
}
