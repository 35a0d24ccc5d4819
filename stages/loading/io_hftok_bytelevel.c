/* io_hftok_bytelevel.c: the pre-tokenizers of byte-level BPE (GPT-2,
 * SmolLM2, Llama 3, Qwen2, OLMo 2) for mpq_hftok: Split, Digits and
 * ByteLevel, their regular expressions (PCRE2), the GPT-2 byte mapping, the
 * ByteLevel decoder and the UTF-8 repair both need.
 *
 * The tokenizers library matches its patterns with Oniguruma. PCRE2 agrees
 * with it on the patterns of these tokenizers except in two places that are
 * rewritten before compiling: \s (Oniguruma: Unicode White_Space; PCRE2
 * also counts U+180E) is spelled out as the White_Space list, and ASCII
 * letters under (?i) become explicit [xX] classes (PCRE2's caseless "s"
 * would also match U+017F, Oniguruma's here does not).
 *
 * A piece of text goes through the steps in order: each step cuts every
 * piece of the previous one into pieces (empty ones are dropped), and the
 * pieces of the last step are the words handed to the BPE model, mapped
 * byte by byte to the GPT-2 characters when the last step is ByteLevel.
 */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "hftok_internal.h"
#include "mpq_ctx.h"

/* The GPT-2 pre-tokenizer pattern of ByteLevel's use_regex. */
static const char k_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Unicode White_Space, for a character class. */
static const char k_white_space[] =
    "\\t\\n\\x{0b}\\f\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"
    "\\x{202f}\\x{205f}\\x{3000}";

/* ---- the byte mapping ------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes (! to ~, ¡ to ¬, ® to
 * ÿ) stand for themselves, the 68 others for U+0100 onwards in byte order. */
void mpq_hftok_bytelevel_init(mpq_hftok *h) {
    int extra = 0;
    for (int c = 0; c < 324; c++)
        h->bl_byte[c] = -1;
    for (int b = 0; b < 256; b++) {
        int self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        h->bl_char[b] = (uint16_t)(self ? b : 256 + extra++);
        h->bl_byte[h->bl_char[b]] = (int16_t)b;
    }
}

/* ---- UTF-8 ------------------------------------------------------------------ */

/* The length of the valid UTF-8 character at s[0..n) (n > 0), or 0 with
 * *bad = the length of the maximal invalid subpart there (Unicode 3.9,
 * table 3-7: the bytes that could still begin a valid character). */
static size_t utf8_char(const unsigned char *s, size_t n, size_t *bad) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t need = 0, k = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    for (; need > 0 && k <= need && k < n; k++) {
        unsigned char d = s[k];
        if (k == 1 ? d < lo || d > hi : d < 0x80 || d > 0xBF)
            break;
    }
    if (need > 0 && k == need + 1)
        return k;
    *bad = k;
    return 0;
}

int mpq_hftok_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t bad = 0;
    for (size_t i = 0; i < n;) {
        size_t l = u[i] < 0x80 ? 1 : utf8_char(u + i, n - i, &bad);
        if (l == 0)
            return 0;
        i += l;
    }
    return 1;
}

mpq_err mpq_hftok_utf8_lossy(mpq_ctx *ctx, const char *s, size_t n, char **buf, int64_t *cap,
                             size_t *outlen) {
    const unsigned char *u = (const unsigned char *)s;
    int64_t need = 3 * (int64_t)n + 1; /* a replaced byte grows to 3 */
    if (need > *cap) {
        MPQ_CALL(mpq_realloc(ctx, *cap, need, 1, (void **)buf));
        *cap = need;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t bad = 0, l = utf8_char(u + i, n - i, &bad);
        if (l > 0) {
            memcpy(*buf + o, s + i, l);
            o += l;
            i += l;
        } else {
            memcpy(*buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += bad;
        }
    }
    (*buf)[o] = '\0';
    *outlen = o;
    return MPQ_OK;
}

/* ---- patterns ------------------------------------------------------------------ */

typedef struct {
    char *p;
    int64_t n, cap;
} pat_buf;

static mpq_err pat_add(mpq_ctx *ctx, pat_buf *b, const char *s, size_t n) {
    if (b->n + (int64_t)n + 1 > b->cap) {
        int64_t cap = 2 * (b->n + (int64_t)n + 1) + 64;
        MPQ_CALL(mpq_realloc(ctx, b->cap, cap, 1, (void **)&b->p));
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += (int64_t)n;
    b->p[b->n] = '\0';
    return MPQ_OK;
}

static int is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char flip_case(char c) {
    return (char)(c >= 'a' && c <= 'z' ? c - 32 : c + 32);
}

/* The group header "(?flags:" or "(?flags)" at pat[i] (after "(?"): the
 * caseless state it sets from `on`; its text without the i flag into out.
 * Returns the length consumed after "(?", 0 when it is not a flag group. */
static size_t flag_group(const char *pat, size_t i, int on, int *caseless, char *out,
                         size_t outcap) {
    size_t j = i, o = 0;
    int neg = 0;
    while (pat[j] && (is_alpha(pat[j]) || pat[j] == '-') && o + 2 < outcap) {
        if (pat[j] == '-')
            neg = 1;
        if (pat[j] == 'i')
            on = !neg;
        else
            out[o++] = pat[j];
        j++;
    }
    if (j == i || (pat[j] != ':' && pat[j] != ')'))
        return 0;
    if (o == 1 && out[0] == '-')
        o = 0; /* "(?-i:" -> "(?:" */
    out[o] = '\0';
    *caseless = on;
    return j - i;
}

/* Bytes of pat[i..] to copy as they are: the escapes and group headers
 * whose letters are names or digits, not literals (\p{..}, \x{..}, \xhh,
 * \g{..}, \k<..>, \Q..\E, [:name:], (?<name>, (?'name', (?P<name>). 0 when
 * none starts there. */
static size_t verbatim(const char *pat, size_t i) {
    const char *p = pat + i, *e = NULL;
    if (p[0] == '\\' && p[1] == 'Q')
        return (e = strstr(p, "\\E")) ? (size_t)(e - p) + 2 : strlen(p);
    if (p[0] == '\\' && strchr("pPxgkN", p[1]) && p[1] && (p[2] == '{' || p[2] == '<'))
        return (e = strchr(p, p[2] == '{' ? '}' : '>')) ? (size_t)(e - p) + 1 : strlen(p);
    if (p[0] == '\\' && p[1] == 'x') {
        size_t n = 2;
        while (n < 4 && p[n] && strchr("0123456789abcdefABCDEF", p[n]))
            n++;
        return n;
    }
    if (p[0] == '[' && p[1] == ':')
        return (e = strstr(p, ":]")) ? (size_t)(e - p) + 2 : strlen(p);
    if (p[0] == '(' && p[1] == '?' && (p[2] == '<' || p[2] == '\'' || p[2] == 'P') && p[3] != '=' &&
        p[3] != '!')
        return (e = strchr(p + 3, p[2] == '\'' ? '\'' : '>')) ? (size_t)(e - p) + 1 : strlen(p);
    return 0;
}

/* The pattern as PCRE2 should see it (see the file comment). Groups are
 * tracked for the scope of (?i); inside a class in caseless mode a letter
 * gets its other case, a letter range both. */
static mpq_err rewrite_pattern(mpq_ctx *ctx, const char *pat, pat_buf *b) {
    int stack[64], depth = 0, ci = 0, cls = 0;
    size_t ws = strlen(k_white_space);
    char flags[32];
    for (size_t i = 0; pat[i];) {
        char c = pat[i];
        size_t v = verbatim(pat, i);
        if (v > 0 && c == '(') {
            MPQ_CHECK(depth < 64, MPQ_ERR_FORMAT, "groups nested more than 64 deep");
            stack[depth++] = ci;
        }
        if (v > 0) {
            MPQ_CALL(pat_add(ctx, b, pat + i, v));
            cls += cls > 0;
            i += v;
        } else if (c == '\\' && pat[i + 1]) {
            char e = pat[i + 1];
            if (e == 's' && cls) {
                MPQ_CALL(pat_add(ctx, b, k_white_space, ws));
            } else if ((e == 's' || e == 'S') && !cls) {
                MPQ_CALL(pat_add(ctx, b, e == 's' ? "[" : "[^", e == 's' ? 1 : 2));
                MPQ_CALL(pat_add(ctx, b, k_white_space, ws));
                MPQ_CALL(pat_add(ctx, b, "]", 1));
            } else {
                MPQ_CALL(pat_add(ctx, b, pat + i, 2));
            }
            cls += cls > 0;
            i += 2;
        } else if (cls) {
            if (c == ']' && cls > 1)
                cls = 0;
            else
                cls++;
            if (ci && is_alpha(c) && pat[i + 1] == '-' && is_alpha(pat[i + 2])) {
                char r[8] = {c, '-', pat[i + 2], flip_case(c), '-', flip_case(pat[i + 2]), 0};
                MPQ_CALL(pat_add(ctx, b, r, 6));
                i += 3;
                continue;
            }
            char r[2] = {c, flip_case(c)};
            MPQ_CALL(pat_add(ctx, b, r, ci && is_alpha(c) ? 2 : 1));
            i++;
        } else if (c == '[') {
            cls = 1; /* a ']' right after "[" or "[^" is a member */
            MPQ_CALL(pat_add(ctx, b, pat[i + 1] == '^' ? "[^" : "[", pat[i + 1] == '^' ? 2 : 1));
            i += pat[i + 1] == '^' ? 2 : 1;
        } else if (c == '(') {
            int now = ci;
            size_t used =
                pat[i + 1] == '?' ? flag_group(pat, i + 2, ci, &now, flags, sizeof flags) : 0;
            if (used && pat[i + 2 + used] == ')') { /* (?i): the rest of this group */
                ci = now;
                if (flags[0]) {
                    MPQ_CALL(pat_add(ctx, b, "(?", 2));
                    MPQ_CALL(pat_add(ctx, b, flags, strlen(flags)));
                    MPQ_CALL(pat_add(ctx, b, ")", 1));
                }
                i += 3 + used;
                continue;
            }
            MPQ_CHECK(depth < 64, MPQ_ERR_FORMAT, "groups nested more than 64 deep");
            stack[depth++] = ci;
            if (used) {
                ci = now;
                MPQ_CALL(pat_add(ctx, b, "(?", 2));
                MPQ_CALL(pat_add(ctx, b, flags, strlen(flags)));
                MPQ_CALL(pat_add(ctx, b, ":", 1));
                i += 3 + used;
            } else {
                size_t n = pat[i + 1] == '?' && pat[i + 2] ? 3 : 1; /* (?: (?= (?! (?> */
                n += n == 3 && pat[i + 2] == '<' && (pat[i + 3] == '=' || pat[i + 3] == '!');
                MPQ_CALL(pat_add(ctx, b, pat + i, n));
                i += n;
            }
        } else {
            if (c == ')' && depth > 0)
                ci = stack[--depth];
            char r[5] = {'[', c, flip_case(c), ']', 0};
            MPQ_CALL(ci && is_alpha(c) ? pat_add(ctx, b, r, 4) : pat_add(ctx, b, &c, 1));
            i++;
        }
    }
    return MPQ_OK;
}

/* Compiles pattern `pat` (a String pattern literally) with UTF-8 and
 * Unicode properties, JIT-compiled when the library can. */
static mpq_err compile(mpq_ctx *ctx, const char *file, const char *where, const char *pat,
                       int literal, pcre2_code **out) {
    mpq_err err = MPQ_OK;
    pat_buf b = {0};
    int code = 0;
    PCRE2_SIZE at = 0;
    if (literal) {
        MPQ_TRY(pat_add(ctx, &b, pat, strlen(pat)));
    } else {
        err = rewrite_pattern(ctx, pat, &b);
        if (err != MPQ_OK) { /* the message names the problem, not the file */
            char why[256];
            snprintf(why, sizeof why, "%s", mpq_err_message(ctx));
            MPQ_ENSURE(0, err, "%s: %s: pattern \"%s\": %s", file, where, pat, why);
        }
    }
    *out = pcre2_compile((PCRE2_SPTR)b.p, (PCRE2_SIZE)b.n,
                         literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP, &code, &at,
                         NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        MPQ_ENSURE(0, code == PCRE2_ERROR_HEAP_FAILED ? MPQ_ERR_NOMEM : MPQ_ERR_FORMAT,
                   "%s: %s: pattern \"%s\" does not compile (PCRE2, at offset %zu of \"%s\"): %s",
                   file, where, pat, (size_t)at, b.p, (const char *)msg);
    }
    (void)pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* else the interpreter */
cleanup:
    mpq_free(b.p);
    return err;
}

/* ---- parsing ------------------------------------------------------------------- */

static mpq_err parse_split(mpq_ctx *ctx, const char *file, const char *where, const cJSON *s,
                           mpq_hf_pre *st) {
    static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious",
                                        "MergedWithNext", "Contiguous"};
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
    const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    const char *beh = NULL;
    MPQ_CHECK(cJSON_IsString(str) || cJSON_IsString(re), MPQ_ERR_FORMAT,
              "%s: %s.pattern: expected {\"String\": s} or {\"Regex\": r}", file, where);
    MPQ_CALL(mpq_hfjson_str(ctx, file, where, s, "behavior", 0, &beh));
    int k = 0;
    while (k < 5 && strcmp(beh, names[k]) != 0)
        k++;
    MPQ_CHECK(k < 5, MPQ_ERR_FORMAT,
              "%s: %s.behavior: \"%s\" (expected Isolated, Removed, MergedWithPrevious, "
              "MergedWithNext or Contiguous)",
              file, where, beh);
    st->behavior = (mpq_hf_behavior)k;
    MPQ_CALL(mpq_hfjson_bool(ctx, file, where, s, "invert", &st->invert));
    const char *p = cJSON_IsString(str) ? str->valuestring : re->valuestring;
    if (cJSON_IsString(str) && !*p)
        return MPQ_OK; /* an empty String never matches */
    return compile(ctx, file, where, p, cJSON_IsString(str), &st->re);
}

static mpq_err parse_step(mpq_ctx *ctx, const char *file, const char *where, const cJSON *s,
                          mpq_hf_pre *st) {
    const char *type = NULL;
    MPQ_CHECK(cJSON_IsObject(s), MPQ_ERR_FORMAT, "%s: %s: not an object", file, where);
    MPQ_CALL(mpq_hfjson_str(ctx, file, where, s, "type", 0, &type));
    if (strcmp(type, "Split") == 0)
        return parse_split(ctx, file, where, s, st);
    if (strcmp(type, "Digits") == 0) {
        int one = 0;
        MPQ_CALL(mpq_hfjson_bool(ctx, file, where, s, "individual_digits", &one));
        st->behavior = HF_SPLIT_ISOLATED; /* Rust's char::is_numeric is \p{N} */
        return compile(ctx, file, where, one ? "\\p{N}" : "\\p{N}+", 0, &st->re);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        int use_regex = 1;
        st->bytelevel = 1;
        st->add_prefix_space = 1;
        MPQ_CALL(mpq_hfjson_bool(ctx, file, where, s, "add_prefix_space", &st->add_prefix_space));
        MPQ_CALL(mpq_hfjson_bool(ctx, file, where, s, "use_regex", &use_regex));
        st->behavior = HF_SPLIT_ISOLATED;
        return use_regex ? compile(ctx, file, where, k_gpt2_pattern, 0, &st->re) : MPQ_OK;
    }
    return MPQ_ERROR(MPQ_ERR_FORMAT,
                     "%s: %s: pre-tokenizer type \"%s\" is not supported (supported: null, "
                     "Metaspace alone, or Split, Digits and a last ByteLevel, alone or in a "
                     "Sequence)",
                     file, where, type);
}

mpq_err mpq_hftok_parse_pre(mpq_ctx *ctx, const char *file, const cJSON *o, mpq_hftok *h) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    const cJSON *list = o;
    int seq = cJSON_IsString(type) && strcmp(type->valuestring, "Sequence") == 0;
    char where[96] = "pre_tokenizer";
    if (seq) {
        list = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        MPQ_CHECK(cJSON_IsArray(list), MPQ_ERR_FORMAT,
                  "%s: pre_tokenizer.pretokenizers: not an array", file);
    }
    int n = seq ? cJSON_GetArraySize(list) : 1;
    MPQ_CHECK(n >= 1 && n <= HF_MAX_PRE, MPQ_ERR_FORMAT,
              "%s: pre_tokenizer.pretokenizers: %d steps (1 to %d supported)", file, n, HF_MAX_PRE);
    MPQ_CALL(mpq_malloc(ctx, n, sizeof *h->pre, (void **)&h->pre));
    for (int k = 0; k < n; k++) {
        if (seq)
            snprintf(where, sizeof where, "pre_tokenizer.pretokenizers[%d]", k);
        MPQ_CHECK(k == 0 || !h->pre[k - 1].bytelevel, MPQ_ERR_FORMAT,
                  "%s: %s: a step after ByteLevel is not supported (ByteLevel must be last)", file,
                  where);
        h->npre = k + 1;
        MPQ_CALL(parse_step(ctx, file, where, seq ? cJSON_GetArrayItem(list, k) : o, &h->pre[k]));
    }
    h->bytelevel = h->pre[n - 1].bytelevel;
    return MPQ_OK;
}

void mpq_hftok_pre_free(mpq_hftok *h) {
    for (int64_t k = 0; h->pre && k < h->npre; k++)
        pcre2_code_free(h->pre[k].re);
    mpq_free(h->pre);
    h->pre = NULL;
    h->npre = 0;
}

/* ---- pre-tokenizing ------------------------------------------------------------ */

static mpq_err grow(mpq_ctx *ctx, void **p, int64_t *cap, int64_t need, size_t elsize) {
    if (need <= *cap)
        return MPQ_OK;
    int64_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    MPQ_CALL(mpq_realloc(ctx, *cap, c, elsize, p));
    *cap = c;
    return MPQ_OK;
}

/* Appends word s[0..n), mapped to byte characters for ByteLevel. */
static mpq_err add_word(mpq_ctx *ctx, const mpq_hftok *h, mpq_hf_words *w, const char *s,
                        size_t n) {
    MPQ_CALL(grow(ctx, (void **)&w->p, &w->cap, w->np + 2 * (int64_t)n + 1, 1));
    MPQ_CALL(grow(ctx, (void **)&w->end, &w->ncap, w->n + 1, sizeof *w->end));
    if (!h->bytelevel) {
        memcpy(w->p + w->np, s, n);
        w->np += (int64_t)n;
    }
    for (size_t i = 0; h->bytelevel && i < n; i++) {
        unsigned c = h->bl_char[(unsigned char)s[i]];
        if (c < 0x80) {
            w->p[w->np++] = (char)c;
        } else {
            w->p[w->np++] = (char)(0xC0 | c >> 6);
            w->p[w->np++] = (char)(0x80 | (c & 0x3F));
        }
    }
    w->end[w->n++] = w->np;
    return MPQ_OK;
}

static mpq_err seg_add(mpq_ctx *ctx, mpq_hf_words *w, int64_t k, size_t a, size_t b, int match) {
    MPQ_CALL(grow(ctx, (void **)&w->seg[k], &w->scap[k], 3 * (w->nseg[k] + 1), sizeof **w->seg));
    int64_t *t = w->seg[k] + 3 * w->nseg[k]++;
    t[0] = (int64_t)a;
    t[1] = (int64_t)b;
    t[2] = match;
    return MPQ_OK;
}

/* The matches of step k's pattern in s[0..n) and the text between them,
 * as (begin, end, is_match) in w->seg[k] (the library's find_matches; an
 * empty match right after a match is skipped). */
static mpq_err find_matches(mpq_ctx *ctx, const mpq_hftok *h, mpq_hf_words *w, int64_t k,
                            const char *s, size_t n) {
    const mpq_hf_pre *st = &h->pre[k];
    size_t pos = 0, prev = 0;
    int any = 0;
    w->nseg[k] = 0;
    while (st->re && pos <= n) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, w->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(st->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                             w->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return MPQ_ERROR(rc == PCRE2_ERROR_NOMEMORY ? MPQ_ERR_NOMEM : MPQ_ERR_LIB,
                             "%s: pre-tokenizer step %lld: matching %zu bytes of text: PCRE2: %s",
                             h->path, (long long)k, n, (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        size_t a = ov[0], b = ov[1];
        if (a == b && any && a == prev) {
            if (a >= n)
                break;
            pos = a + 1;
            while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80)
                pos++;
            continue;
        }
        if (a > prev)
            MPQ_CALL(seg_add(ctx, w, k, prev, a, 0));
        MPQ_CALL(seg_add(ctx, w, k, a, b, 1));
        prev = b;
        any = 1;
        pos = b;
        if (a == b) { /* the next search starts one character on */
            if (b >= n)
                break;
            pos = b + 1;
            while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80)
                pos++;
        }
    }
    if (prev < n || n == 0)
        MPQ_CALL(seg_add(ctx, w, k, prev, n, 0));
    return MPQ_OK;
}

/* Turns step k's matches into pieces: (begin, end, keep) in w->seg[k], as
 * the library's NormalizedString::split with the step's behavior. */
static void apply_behavior(const mpq_hf_pre *st, mpq_hf_words *w, int64_t k) {
    int64_t *t = w->seg[k], n = w->nseg[k], m = 0;
    int prev = 0;
    for (int64_t i = 0; i < n; i++)
        t[3 * i + 2] ^= st->invert;
    if (st->behavior == HF_SPLIT_MERGED_NEXT) { /* folds from the end */
        m = n;
        for (int64_t i = n - 1; i >= 0; i--) {
            int match = (int)t[3 * i + 2];
            if (match && !prev && m < n) {
                t[3 * m] = t[3 * i];
            } else {
                m--;
                t[3 * m] = t[3 * i];
                t[3 * m + 1] = t[3 * i + 1];
                t[3 * m + 2] = 1;
            }
            prev = match;
        }
        memmove(t, t + 3 * m, (size_t)(n - m) * 3 * sizeof *t);
        w->nseg[k] = n - m;
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        int match = (int)t[3 * i + 2];
        int join = st->behavior == HF_SPLIT_CONTIGUOUS    ? match == prev
                   : st->behavior == HF_SPLIT_MERGED_PREV ? match && !prev
                                                          : 0;
        if (join && m > 0) {
            t[3 * (m - 1) + 1] = t[3 * i + 1];
        } else {
            t[3 * m] = t[3 * i];
            t[3 * m + 1] = t[3 * i + 1];
            t[3 * m + 2] = st->behavior == HF_SPLIT_REMOVED ? !match : 1;
            m++;
        }
        prev = match;
    }
    w->nseg[k] = m;
}

/* Step k on piece s[0..n): its pieces go through the next steps. */
static mpq_err pre_step(mpq_ctx *ctx, const mpq_hftok *h, mpq_hf_words *w, int64_t k, const char *s,
                        size_t n) {
    if (n == 0)
        return MPQ_OK;
    if (k == h->npre)
        return add_word(ctx, h, w, s, n);
    const mpq_hf_pre *st = &h->pre[k];
    if (st->bytelevel && st->add_prefix_space && s[0] != ' ') {
        MPQ_CALL(grow(ctx, (void **)&w->pfx, &w->pcap, (int64_t)n + 2, 1));
        w->pfx[0] = ' ';
        memcpy(w->pfx + 1, s, n);
        s = w->pfx;
        n++;
    }
    MPQ_CALL(find_matches(ctx, h, w, k, s, n));
    apply_behavior(st, w, k);
    for (int64_t i = 0; i < w->nseg[k]; i++) {
        const int64_t *t = w->seg[k] + 3 * i;
        if (t[2] && t[1] > t[0])
            MPQ_CALL(pre_step(ctx, h, w, k + 1, s + t[0], (size_t)(t[1] - t[0])));
    }
    return MPQ_OK;
}

mpq_err mpq_hftok_pre_words(mpq_ctx *ctx, const mpq_hftok *h, const char *s, size_t n,
                            mpq_hf_words *w) {
    w->np = 0;
    w->n = 0;
    if (!w->md) {
        w->md = pcre2_match_data_create(1, NULL);
        MPQ_CHECK(w->md, MPQ_ERR_NOMEM, "%s: cannot allocate PCRE2 match data", h->path);
    }
    if (!mpq_hftok_utf8_valid(s, n)) { /* a normalizer made it invalid */
        size_t len = 0;
        MPQ_CALL(mpq_hftok_utf8_lossy(ctx, s, n, &w->tmp, &w->tcap, &len));
        s = w->tmp;
        n = len;
    }
    return pre_step(ctx, h, w, 0, s, n);
}

void mpq_hftok_words_free(mpq_hf_words *w) {
    mpq_free(w->p);
    mpq_free(w->end);
    mpq_free(w->tmp);
    mpq_free(w->pfx);
    pcre2_match_data_free(w->md);
    for (int k = 0; k < HF_MAX_PRE; k++)
        mpq_free(w->seg[k]);
    memset(w, 0, sizeof *w);
}

/* ---- decoding ------------------------------------------------------------------ */

mpq_err mpq_hftok_bytelevel_decode(mpq_ctx *ctx, const mpq_hftok *h, const char *pool,
                                   const int64_t *off, const int64_t *len, int64_t n, char **out,
                                   size_t *outlen) {
    mpq_err err = MPQ_OK;
    char *raw = NULL;
    int64_t total = 0, nr = 0, cap = 0;
    *out = NULL;
    for (int64_t k = 0; k < n; k++)
        total += len[k];
    MPQ_ALLOC_TRY(raw, total + 1);
    for (int64_t k = 0; k < n; k++) {
        const unsigned char *t = (const unsigned char *)pool + off[k];
        size_t tl = (size_t)len[k], i = 0, bad = 0;
        int64_t start = nr;
        while (i < tl) { /* the byte of each character, while there is one */
            size_t l = utf8_char(t + i, tl - i, &bad);
            uint32_t c = l == 1   ? t[i]
                         : l == 2 ? (uint32_t)(t[i] & 0x1F) << 6 | (t[i + 1] & 0x3F)
                                  : 1000;
            if (l == 0 || c >= 324 || h->bl_byte[c] < 0)
                break;
            raw[nr++] = (char)h->bl_byte[c];
            i += l;
        }
        if (i < tl) { /* a character outside the mapping: the token as it is */
            memcpy(raw + start, t, tl);
            nr = start + (int64_t)tl;
        }
    }
    MPQ_TRY(mpq_hftok_utf8_lossy(ctx, raw, (size_t)nr, out, &cap, outlen));
cleanup:
    mpq_free(raw);
    return err;
}
