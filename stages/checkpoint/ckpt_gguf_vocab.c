/* ckpt_gguf_vocab.c: the tokenizer of the GGUF export (tokenizer.ggml.*).
 *
 * Two of llama.cpp's vocabulary kinds are written:
 *  - "llama" (SentencePiece): llama2.c's tokenizer.bin, or a Hugging Face BPE
 *    without byte-level mapping (TinyLlama, Mistral, Phi-3): tokens, scores
 *    and token types;
 *  - "gpt2" (byte-level BPE: GPT-2, SmolLM2, Llama-3, OLMo-2): tokens, token
 *    types, the merges as "left right" strings in rank order, and
 *    tokenizer.ggml.pre, the name under which llama.cpp knows the
 *    pre-tokenizer. llama.cpp splits text with fixed patterns per name, so
 *    a name is written only where tokenizer.json's pre-tokenizer splits text
 *    exactly as that name's patterns do (pre_name); any other pre-tokenizer,
 *    and any normalizer, is refused with the reason.
 * The tokenizer object keeps neither whether an added token is special nor
 * the merges in rank order, so tokenizer.json is read again: special added
 * tokens become control tokens, the others user-defined, as llama.cpp's
 * converter types them. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "ckpt_gguf.h"
#include "mpq_text.h"

/* ---- tokenizer.json ---------------------------------------------------------------- */

/* Reads the tokenizer.json at `tokenizer` (the file, or a directory holding
 * it) into *root; path[4096] receives the file's name. */
static mpq_err read_json(mpq_ctx *ctx, const char *tokenizer, char *path, cJSON **root) {
    mpq_err err = MPQ_OK;
    char *text = NULL;
    int64_t len = 0;
    struct stat st;
    if (stat(tokenizer, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(path, 4096, "%s/tokenizer.json", tokenizer);
    else
        snprintf(path, 4096, "%s", tokenizer);
    MPQ_TRY(mpq_text_read(ctx, path, &text, &len));
    *root = cJSON_ParseWithLength(text, (size_t)len);
    MPQ_ENSURE(cJSON_IsObject(*root), MPQ_ERR_FORMAT, "%s: not a JSON object", path);
cleanup:
    if (err != MPQ_OK) {
        cJSON_Delete(*root);
        *root = NULL;
    }
    mpq_free(text);
    return err;
}

/* Types the added tokens: those whose types[id] is still normal become
 * control (special) or user-defined tokens; ids outside [0, vocab) are
 * ignored. */
static mpq_err added_types(mpq_ctx *ctx, const char *path, const cJSON *root, int64_t vocab,
                           int32_t *types) {
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    MPQ_CHECK(added == NULL || cJSON_IsNull(added) || cJSON_IsArray(added), MPQ_ERR_FORMAT,
              "%s: added_tokens is not an array", path);
    int64_t k = 0;
    const cJSON *t = NULL;
    cJSON_ArrayForEach(t, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(t, "id");
        const cJSON *special = cJSON_GetObjectItemCaseSensitive(t, "special");
        MPQ_CHECK(cJSON_IsNumber(id), MPQ_ERR_FORMAT, "%s: added_tokens[%lld].id is not a number",
                  path, (long long)k);
        const double v = id->valuedouble;
        if (v >= 0 && v < (double)vocab && types[(int64_t)v] == MPQ_GGUF_TT_NORMAL)
            types[(int64_t)v] = cJSON_IsTrue(special) ? MPQ_GGUF_TT_CONTROL : MPQ_GGUF_TT_USER;
        k++;
    }
    return MPQ_OK;
}

/* The BOS/EOS (and unknown: unk >= 0) ids and the add-BOS/EOS flags. */
static void special_ids(mpq_gguf_buf *b, const mpq_tokenizer *tk, int32_t unk) {
    const int32_t bos = mpq_tokenizer_bos(tk), eos = mpq_tokenizer_eos(tk);
    if (bos >= 0)
        mpq_gguf_kv_u32(b, "tokenizer.ggml.bos_token_id", bos);
    if (eos >= 0)
        mpq_gguf_kv_u32(b, "tokenizer.ggml.eos_token_id", eos);
    if (unk >= 0)
        mpq_gguf_kv_u32(b, "tokenizer.ggml.unknown_token_id", unk);
    mpq_gguf_kv_bool(b, "tokenizer.ggml.add_bos_token", mpq_tokenizer_add_bos(tk));
    mpq_gguf_kv_bool(b, "tokenizer.ggml.add_eos_token", 0);
}

/* ---- "llama": SentencePiece-style vocabularies --------------------------------------- */

static int is_byte_token(const char *s, size_t len) {
    static const char hex[] = "0123456789ABCDEFabcdef";
    return len == 6 && strncmp(s, "<0x", 3) == 0 && s[5] == '>' && s[3] && s[4] &&
           strchr(hex, s[3]) && strchr(hex, s[4]);
}

/* Token id's text as SentencePiece spells it into tmp: llama2.c's export
 * wrote U+2581 as ' ' and BOS/EOS as "\n<s>\n" / "\n</s>\n". */
static size_t piece_text(const char *s, size_t len, int llama2c, int special, char *tmp) {
    size_t n = 0;
    if (llama2c && special) {
        while (len > 0 && s[0] == '\n') {
            s++;
            len--;
        }
        while (len > 0 && s[len - 1] == '\n')
            len--;
    }
    for (size_t i = 0; i < len; i++) {
        if (llama2c && s[i] == ' ') {
            memcpy(tmp + n, "\xe2\x96\x81", 3);
            n += 3;
        } else
            tmp[n++] = s[i];
    }
    return n;
}

/* tokenizer.ggml.* of a SentencePiece-style vocabulary, padded to the
 * model's vocab_size with unused "[PAD<id>]" tokens; root: tokenizer.json
 * (NULL for llama2.c). */
static mpq_err write_llama(mpq_ctx *ctx, mpq_gguf_buf *b, const mpq_tokenizer *tk, const char *path,
                           const cJSON *root, int64_t vocab) {
    mpq_err err = MPQ_OK;
    char *tmp = NULL;
    int32_t *types = NULL;
    const int llama2c = mpq_tokenizer_get_kind(tk) == MPQ_TOKENIZER_LLAMA2C;
    const int32_t bos = mpq_tokenizer_bos(tk), eos = mpq_tokenizer_eos(tk);
    const int32_t unk = llama2c ? 0 : mpq_tokenizer_lookup(tk, "<unk>", 5);
    const int64_t ntok = mpq_tokenizer_vocab_size(tk);
    MPQ_ALLOC_TRY(tmp, 3 * mpq_tokenizer_max_token_length(tk) + 64);
    MPQ_ALLOC_TRY(types, vocab);
    mpq_gguf_kv_str(b, "tokenizer.ggml.model", "llama");
    mpq_gguf_kv_array(b, "tokenizer.ggml.tokens", MPQ_GV_STR, vocab);
    for (int64_t id = 0; id < vocab; id++) {
        size_t len = 0;
        const char *s = id < ntok ? mpq_tokenizer_token(tk, (int32_t)id, &len) : NULL;
        const int special = id == bos || id == eos;
        if (!s) {
            len = (size_t)snprintf(tmp, 64, "[PAD%lld]", (long long)id);
            types[id] = MPQ_GGUF_TT_UNUSED;
        } else {
            types[id] = id == unk               ? MPQ_GGUF_TT_UNKNOWN
                        : special               ? MPQ_GGUF_TT_CONTROL
                        : is_byte_token(s, len) ? MPQ_GGUF_TT_BYTE
                                                : MPQ_GGUF_TT_NORMAL;
            len = piece_text(s, len, llama2c, special, tmp);
        }
        mpq_gguf_str(b, tmp, len);
    }
    if (!llama2c)
        MPQ_TRY(added_types(ctx, path, root, vocab, types));
    mpq_gguf_kv_array(b, "tokenizer.ggml.scores", MPQ_GV_F32, vocab);
    for (int64_t id = 0; id < vocab; id++) {
        /* Hugging Face BPE has merge ranks, no scores: -id keeps the
         * vocabulary order (SentencePiece BPE orders pieces by merge). */
        float sc = types[id] == MPQ_GGUF_TT_UNUSED   ? -1000.0f
                   : llama2c                         ? mpq_tokenizer_score(tk, (int32_t)id)
                   : types[id] == MPQ_GGUF_TT_NORMAL ? -(float)id
                                                     : 0.0f;
        mpq_gguf_f32(b, sc);
    }
    mpq_gguf_kv_array(b, "tokenizer.ggml.token_type", MPQ_GV_I32, vocab);
    for (int64_t id = 0; id < vocab; id++)
        mpq_gguf_uint(b, (uint32_t)types[id], 4);
    special_ids(b, tk, unk);
cleanup:
    mpq_free(tmp);
    mpq_free(types);
    return err;
}

/* ---- the file ---------------------------------------------------------------------- */

/* ---- "gpt2": byte-level BPE ---------------------------------------------------------- */

/* The Llama-3 split pattern (llama.cpp "llama-bpe"), and Qwen2's, which
 * differs only in taking digits one at a time ("qwen2"). */
static const char k_llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                               "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
                               "\\s+(?!\\S)|\\s+";
static const char k_qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                              "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
                              "\\s+(?!\\S)|\\s+";

static int json_true(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static int is_type(const cJSON *step, const char *type) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(step, "type");
    return cJSON_IsString(t) && strcmp(t->valuestring, type) == 0;
}

/* ByteLevel without a prefix space, with (regex 1) or without (0) the GPT-2
 * pattern. */
static int bytelevel(const cJSON *s, int regex) {
    return is_type(s, "ByteLevel") && !json_true(s, "add_prefix_space", 1) &&
           json_true(s, "use_regex", 1) == regex;
}

/* A Split on `pattern` that keeps every match as a piece. Isolated keeps the
 * matches and the text between them; Removed with invert keeps only the
 * matches, the same pieces here because these patterns match every
 * character (letters, numbers, white space and everything else each have
 * an alternative). */
static int split_on(const cJSON *s, const char *pattern) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    const cJSON *beh = cJSON_GetObjectItemCaseSensitive(s, "behavior");
    if (!is_type(s, "Split") || !cJSON_IsString(re) || strcmp(re->valuestring, pattern) != 0 ||
        !cJSON_IsString(beh))
        return 0;
    const int invert = json_true(s, "invert", 0);
    return (strcmp(beh->valuestring, "Isolated") == 0 && !invert) ||
           (strcmp(beh->valuestring, "Removed") == 0 && invert);
}

/* llama.cpp's name for the pre-tokenizer pre, or NULL. */
static const char *pre_name(const cJSON *pre) {
    const cJSON *a = pre, *b = NULL;
    if (is_type(pre, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
        if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) < 1 || cJSON_GetArraySize(list) > 2)
            return NULL;
        a = cJSON_GetArrayItem(list, 0);
        b = cJSON_GetArrayItem(list, 1);
    }
    if (!b)
        return bytelevel(a, 1) ? "gpt-2" : NULL;
    if (is_type(a, "Digits") && json_true(a, "individual_digits", 0) && bytelevel(b, 1))
        return "smollm";
    if (split_on(a, k_llama3) && bytelevel(b, 0))
        return "llama-bpe";
    if (split_on(a, k_qwen2) && bytelevel(b, 0))
        return "qwen2";
    return NULL;
}

/* tokenizer.ggml.merges: model.merges ("a b" strings or ["a", "b"] pairs) as
 * "a b" strings in rank order. */
static mpq_err write_merges(mpq_ctx *ctx, mpq_gguf_buf *b, const char *path, const cJSON *root,
                            char *tmp, size_t cap) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    MPQ_CHECK(cJSON_IsArray(merges), MPQ_ERR_FORMAT, "%s: model.merges is not an array", path);
    mpq_gguf_kv_array(b, "tokenizer.ggml.merges", MPQ_GV_STR, cJSON_GetArraySize(merges));
    int64_t k = 0;
    const cJSON *m = NULL;
    cJSON_ArrayForEach(m, merges) {
        const cJSON *l = cJSON_GetArrayItem(m, 0), *r = cJSON_GetArrayItem(m, 1);
        int n = -1;
        if (cJSON_IsString(m) && strchr(m->valuestring, ' '))
            n = snprintf(tmp, cap, "%s", m->valuestring);
        else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(l) &&
                 cJSON_IsString(r) && !strchr(l->valuestring, ' ') && !strchr(r->valuestring, ' '))
            n = snprintf(tmp, cap, "%s %s", l->valuestring, r->valuestring);
        MPQ_CHECK(n > 0 && (size_t)n < cap, MPQ_ERR_FORMAT,
                  "%s: model.merges[%lld]: not a pair of tokens that \"left right\" can hold", path,
                  (long long)k);
        mpq_gguf_str(b, tmp, (size_t)n);
        k++;
    }
    return MPQ_OK;
}

/* The JSON of o (cut to fit out[cap]) for a message. */
static void describe(const cJSON *o, char *out, size_t cap) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    snprintf(out, cap, "%s", s ? s : "null");
    if (s && strlen(s) >= cap && cap > 4)
        memcpy(out + cap - 4, "...", 4);
    cJSON_free(s);
}

static mpq_err write_gpt2(mpq_ctx *ctx, mpq_gguf_buf *b, const mpq_tokenizer *tk, const char *path,
                          const cJSON *root, int64_t vocab) {
    mpq_err err = MPQ_OK;
    char *tmp = NULL, what[240];
    int32_t *types = NULL;
    const int64_t ntok = mpq_tokenizer_vocab_size(tk);
    const size_t cap = 2 * (size_t)mpq_tokenizer_max_token_length(tk) + 64;
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const char *name = pre_name(pre);
    describe(norm, what, sizeof what);
    MPQ_ENSURE(norm == NULL || cJSON_IsNull(norm), MPQ_ERR_ARG,
               "%s: gguf export: llama.cpp's byte-level (gpt2) vocabulary applies no "
               "normalizer, and this one has normalizer %s",
               path, what);
    describe(pre, what, sizeof what);
    MPQ_ENSURE(name, MPQ_ERR_ARG,
               "%s: gguf export: no llama.cpp pre-tokenizer splits text as pre_tokenizer %s does "
               "(written: ByteLevel with the GPT-2 pattern as \"gpt-2\", Digits then ByteLevel as "
               "\"smollm\", the Llama-3 or Qwen2 Split pattern then ByteLevel as \"llama-bpe\" or "
               "\"qwen2\")",
               path, what);
    MPQ_ALLOC_TRY(tmp, cap);
    MPQ_ALLOC_TRY(types, vocab);
    mpq_gguf_kv_str(b, "tokenizer.ggml.model", "gpt2");
    mpq_gguf_kv_str(b, "tokenizer.ggml.pre", name);
    mpq_gguf_kv_array(b, "tokenizer.ggml.tokens", MPQ_GV_STR, vocab);
    for (int64_t id = 0; id < vocab; id++) {
        size_t len = 0;
        const char *s = id < ntok ? mpq_tokenizer_token(tk, (int32_t)id, &len) : NULL;
        types[id] = s ? MPQ_GGUF_TT_NORMAL : MPQ_GGUF_TT_UNUSED;
        if (!s) {
            len = (size_t)snprintf(tmp, 64, "[PAD%lld]", (long long)id);
            s = tmp;
        }
        mpq_gguf_str(b, s, len);
    }
    MPQ_TRY(added_types(ctx, path, root, vocab, types));
    mpq_gguf_kv_array(b, "tokenizer.ggml.token_type", MPQ_GV_I32, vocab);
    for (int64_t id = 0; id < vocab; id++)
        mpq_gguf_uint(b, (uint32_t)types[id], 4);
    MPQ_TRY(write_merges(ctx, b, path, root, tmp, cap));
    special_ids(b, tk, -1);
cleanup:
    mpq_free(tmp);
    mpq_free(types);
    return err;
}

mpq_err mpq_gguf_tokenizer_kv(mpq_ctx *ctx, mpq_gguf_buf *b, const mpq_tokenizer *tk,
                              const char *path, int64_t vocab) {
    if (mpq_tokenizer_get_kind(tk) == MPQ_TOKENIZER_LLAMA2C)
        return write_llama(ctx, b, tk, path, NULL, vocab);
    mpq_err err = MPQ_OK;
    char file[4096];
    cJSON *root = NULL;
    MPQ_TRY(read_json(ctx, path, file, &root));
    if (mpq_tokenizer_byte_level(tk))
        MPQ_TRY(write_gpt2(ctx, b, tk, file, root, vocab));
    else
        MPQ_TRY(write_llama(ctx, b, tk, file, root, vocab));
cleanup:
    cJSON_Delete(root);
    return err;
}
