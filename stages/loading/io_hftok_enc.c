/* io_hftok_enc.c: encoding and decoding with a Hugging Face BPE tokenizer
 * (mpq_hftok), as the tokenizers library does for the Llama-2 family and
 * for byte-level BPE.
 *
 * Encoding: the raw text is cut at the added tokens (leftmost match, the
 * longest at that position, lstrip/rstrip taking the whitespace beside
 * them); every other piece is normalized (NFC, NFD, NFKC, NFKD by
 * libunistring, Prepend, Replace), pre-tokenized (Metaspace: spaces to the
 * replacement, the prefix, optionally one word per replacement; Split,
 * Digits, ByteLevel: io_hftok_bytelevel.c) and each word goes through the BPE model: one symbol per
 * character (its vocabulary id, else its bytes' <0xXX> tokens with
 * byte_fallback, else unk_token, consecutive ones fused with fuse_unk), then
 * the adjacent pair of lowest merge rank (ties: the leftmost) is merged
 * until none is a merge. As in io_tokenizer.c the symbols form a linked list
 * and the candidate pairs a binary heap with lazily invalidated entries, so
 * a word of n characters costs O(n log n). With a pre-tokenizer step of
 * io_hftok_bytelevel.c or a Unicode normalization the text is made valid
 * UTF-8 first.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uninorm.h>

#include "hftok_internal.h"
#include "mpq_ctx.h"

/* ---- growable buffers ------------------------------------------------------- */

typedef struct {
    char *p;
    int64_t n, cap;
} hf_buf;

static mpq_err buf_add(mpq_ctx *ctx, hf_buf *b, const char *s, size_t n) {
    if (b->n + (int64_t)n + 1 > b->cap) {
        int64_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + (int64_t)n + 1)
            cap *= 2;
        MPQ_CALL(mpq_realloc(ctx, b->cap, cap, 1, (void **)&b->p));
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += (int64_t)n;
    b->p[b->n] = '\0';
    return MPQ_OK;
}

typedef struct {
    int32_t *p;
    int64_t n, cap;
} hf_ids;

static mpq_err ids_add(mpq_ctx *ctx, hf_ids *v, int32_t id) {
    if (v->n == v->cap) {
        int64_t cap = v->cap ? 2 * v->cap : 256;
        MPQ_CALL(mpq_realloc(ctx, v->cap, cap, sizeof *v->p, (void **)&v->p));
        v->cap = cap;
    }
    v->p[v->n++] = id;
    return MPQ_OK;
}

/* Bytes of the UTF-8 character at s[0..n): 1 to 4, or 1 for an invalid or
 * cut sequence (then the byte is a character of its own). */
static size_t char_len(const unsigned char *s, size_t n) {
    size_t want = s[0] < 0x80                   ? 1
                  : s[0] >= 0xF0 && s[0] < 0xF8 ? 4
                  : s[0] >= 0xE0                ? 3
                  : s[0] >= 0xC2                ? 2
                                                : 1;
    if (want > n || (want >= 2 && s[0] >= 0xF8))
        return 1;
    for (size_t k = 1; k < want; k++)
        if ((s[k] & 0xC0) != 0x80)
            return 1;
    return want;
}

static uint32_t code_point(const unsigned char *s, size_t l) {
    if (l == 1)
        return s[0];
    uint32_t c = s[0] & (0x7F >> l);
    for (size_t k = 1; k < l; k++)
        c = c << 6 | (s[k] & 0x3F);
    return c;
}

/* Unicode White_Space (Rust's char::is_whitespace), which lstrip and rstrip
 * take. */
static int is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* ---- BPE of one word ---------------------------------------------------------- */

typedef struct {
    int32_t rank;
    int64_t left, right; /* list nodes */
    int32_t tl, tr;      /* their ids when pushed */
    int32_t merged;
} hf_cand;

static int cand_before(const hf_cand *a, const hf_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

#define HEAP_T      hf_cand
#define HEAP_BEFORE cand_before
#define HEAP_PUSH   heap_push
#define HEAP_POP    heap_pop
#include "io_heap.h"
#undef HEAP_T
#undef HEAP_BEFORE
#undef HEAP_PUSH
#undef HEAP_POP

/* Scratch of the merge loop, sized for the longest word so far. */
typedef struct {
    int64_t cap;
    int32_t *tok;         /* [cap] symbol ids, -1 dead */
    int64_t *next, *prev; /* [cap] list links */
    hf_cand *heap;        /* [2 cap + 2] */
} hf_work;

static mpq_err work_reserve(mpq_ctx *ctx, hf_work *w, int64_t n) {
    if (n <= w->cap)
        return MPQ_OK;
    int64_t cap = w->cap ? w->cap : 64;
    while (cap < n)
        cap *= 2;
    MPQ_CALL(mpq_realloc(ctx, w->cap, cap, sizeof *w->tok, (void **)&w->tok));
    MPQ_CALL(mpq_realloc(ctx, w->cap, cap, sizeof *w->next, (void **)&w->next));
    MPQ_CALL(mpq_realloc(ctx, w->cap, cap, sizeof *w->prev, (void **)&w->prev));
    MPQ_CALL(mpq_realloc(ctx, 2 * w->cap + 2, 2 * cap + 2, sizeof *w->heap, (void **)&w->heap));
    w->cap = cap;
    return MPQ_OK;
}

static void consider(const mpq_hftok *h, hf_work *w, int64_t l, int64_t r, int64_t *nheap) {
    int32_t merged = -1;
    int32_t rank = mpq_hftok_merge(h, w->tok[l], w->tok[r], &merged);
    if (rank >= 0)
        heap_push(w->heap, nheap,
                  (hf_cand){.rank = rank,
                            .left = l,
                            .right = r,
                            .tl = w->tok[l],
                            .tr = w->tok[r],
                            .merged = merged});
}

/* The initial symbols of word s[0..n) into w->tok; their count in *nt. */
static void word_symbols(const mpq_hftok *h, const char *s, size_t n, hf_work *w, int64_t *nt) {
    const unsigned char *u = (const unsigned char *)s;
    int64_t k = 0;
    int32_t unk = -1; /* a pending unk_token (fused with fuse_unk) */
    for (size_t i = 0; i < n;) {
        size_t cl = char_len(u + i, n - i);
        int32_t id = mpq_hftok_vocab_id(h, s + i, cl);
        if (id >= 0) {
            if (unk >= 0)
                w->tok[k++] = unk;
            unk = -1;
            w->tok[k++] = id;
        } else {
            int all = h->byte_fallback;
            for (size_t b = 0; all && b < cl; b++)
                all = h->byte_id[u[i + b]] >= 0;
            if (all) {
                /* As the tokenizers library: a pending unk stays pending. */
                for (size_t b = 0; b < cl; b++)
                    w->tok[k++] = h->byte_id[u[i + b]];
            } else if (h->unk >= 0) {
                if (unk >= 0 && !h->fuse_unk)
                    w->tok[k++] = unk;
                unk = h->unk;
            } /* without unk_token the character is dropped */
        }
        i += cl;
    }
    if (unk >= 0)
        w->tok[k++] = unk;
    *nt = k;
}

static mpq_err bpe_word(mpq_ctx *ctx, const mpq_hftok *h, const char *s, size_t n, hf_work *w,
                        hf_ids *out) {
    if (n == 0)
        return MPQ_OK;
    if (h->ignore_merges) {
        int32_t id = mpq_hftok_vocab_id(h, s, n);
        if (id >= 0)
            return ids_add(ctx, out, id);
    }
    MPQ_CALL(work_reserve(ctx, w, (int64_t)n + 1));
    int64_t nt = 0, nheap = 0;
    word_symbols(h, s, n, w, &nt);
    for (int64_t i = 0; i < nt; i++) {
        w->next[i] = i + 1 < nt ? i + 1 : -1;
        w->prev[i] = i - 1;
    }
    for (int64_t i = 0; i + 1 < nt; i++)
        consider(h, w, i, i + 1, &nheap);
    while (nheap > 0) {
        hf_cand c = heap_pop(w->heap, &nheap);
        int64_t l = c.left, r = c.right;
        if (w->tok[l] < 0 || w->next[l] != r || w->tok[l] != c.tl || w->tok[r] != c.tr)
            continue;
        w->tok[l] = c.merged;
        w->tok[r] = -1;
        w->next[l] = w->next[r];
        if (w->next[r] >= 0)
            w->prev[w->next[r]] = l;
        if (w->prev[l] >= 0)
            consider(h, w, w->prev[l], l, &nheap);
        if (w->next[l] >= 0)
            consider(h, w, l, w->next[l], &nheap);
    }
    for (int64_t i = nt > 0 ? 0 : -1; i >= 0; i = w->next[i])
        MPQ_CALL(ids_add(ctx, out, w->tok[i]));
    return MPQ_OK;
}

/* ---- normalizer and pre-tokenizer ------------------------------------------------ */

/* dst = src with every a replaced by b. */
static mpq_err replace_all(mpq_ctx *ctx, const hf_buf *src, const char *a, const char *b,
                           hf_buf *dst) {
    size_t la = strlen(a), lb = strlen(b);
    dst->n = 0;
    MPQ_CALL(buf_add(ctx, dst, "", 0));
    for (int64_t i = 0; i < src->n;) {
        if ((size_t)(src->n - i) >= la && memcmp(src->p + i, a, la) == 0) {
            MPQ_CALL(buf_add(ctx, dst, b, lb));
            i += (int64_t)la;
        } else {
            MPQ_CALL(buf_add(ctx, dst, src->p + i, 1));
            i++;
        }
    }
    return MPQ_OK;
}

/* dst = Unicode normalization form `form` (mpq_hf_form) of src, which is
 * valid UTF-8: libunistring writes into dst's buffer when it fits, else
 * into one of its own (malloc), copied. */
static mpq_err uni_normalize(mpq_ctx *ctx, int64_t form, const hf_buf *src, hf_buf *dst) {
    uninorm_t nf = form == HF_NFD    ? UNINORM_NFD
                   : form == HF_NFKC ? UNINORM_NFKC
                   : form == HF_NFKD ? UNINORM_NFKD
                                     : UNINORM_NFC;
    size_t n = dst->cap > 0 ? (size_t)dst->cap - 1 : 0;
    uint8_t *own = dst->cap > 0 ? (uint8_t *)dst->p : NULL;
    uint8_t *r = u8_normalize(nf, (const uint8_t *)src->p, (size_t)src->n, own, &n);
    MPQ_CHECK(r, errno == ENOMEM ? MPQ_ERR_NOMEM : MPQ_ERR_ARG,
              "Unicode normalization of %lld bytes of text: %s", (long long)src->n,
              strerror(errno));
    if (r == own) {
        dst->n = (int64_t)n;
        dst->p[n] = '\0';
        return MPQ_OK;
    }
    dst->n = 0;
    mpq_err e = buf_add(ctx, dst, (const char *)r, n);
    free(r);
    MPQ_CALL(e);
    return MPQ_OK;
}

typedef struct {
    hf_buf a, b; /* the text, and scratch for the next step */
    hf_work w;
    mpq_hf_words words; /* Split, Digits, ByteLevel */
} hf_scratch;

static mpq_err swap_prepend(mpq_ctx *ctx, hf_scratch *sc, const char *p) {
    sc->b.n = 0;
    MPQ_CALL(buf_add(ctx, &sc->b, p, strlen(p)));
    MPQ_CALL(buf_add(ctx, &sc->b, sc->a.p, (size_t)sc->a.n));
    hf_buf t = sc->a;
    sc->a = sc->b;
    sc->b = t;
    return MPQ_OK;
}

/* One piece of text between added tokens (`first`: it starts the text). */
static mpq_err encode_piece(mpq_ctx *ctx, const mpq_hftok *h, const char *s, size_t n, int first,
                            hf_scratch *sc, hf_ids *out) {
    if (n == 0)
        return MPQ_OK;
    sc->a.n = 0;
    MPQ_CALL(buf_add(ctx, &sc->a, s, n));
    for (int64_t k = 0; k < h->nnorm; k++) {
        const mpq_hf_step *st = &h->norm[k];
        if (st->op == HF_PREPEND) {
            if (sc->a.n > 0)
                MPQ_CALL(swap_prepend(ctx, sc, st->a));
            continue;
        }
        if (st->op == HF_UNINORM)
            MPQ_CALL(uni_normalize(ctx, st->n0, &sc->a, &sc->b));
        else
            MPQ_CALL(replace_all(ctx, &sc->a, st->a, st->b, &sc->b));
        hf_buf t = sc->a;
        sc->a = sc->b;
        sc->b = t;
    }
    if (h->npre > 0) {
        const mpq_hf_words *wd = &sc->words;
        MPQ_CALL(mpq_hftok_pre_words(ctx, h, sc->a.p, (size_t)sc->a.n, &sc->words));
        for (int64_t k = 0; k < wd->n; k++) {
            int64_t b = k ? wd->end[k - 1] : 0;
            MPQ_CALL(bpe_word(ctx, h, wd->p + b, (size_t)(wd->end[k] - b), &sc->w, out));
        }
        return MPQ_OK;
    }
    if (!h->metaspace)
        return bpe_word(ctx, h, sc->a.p, (size_t)sc->a.n, &sc->w, out);
    const char *r = h->ms_repl;
    size_t rl = strlen(r);
    MPQ_CALL(replace_all(ctx, &sc->a, " ", r, &sc->b));
    hf_buf t = sc->a;
    sc->a = sc->b;
    sc->b = t;
    int starts = (size_t)sc->a.n >= rl && memcmp(sc->a.p, r, rl) == 0;
    if (sc->a.n > 0 && !starts &&
        (h->ms_scheme == HF_PREPEND_ALWAYS || (h->ms_scheme == HF_PREPEND_FIRST && first)))
        MPQ_CALL(swap_prepend(ctx, sc, r));
    if (!h->ms_split)
        return bpe_word(ctx, h, sc->a.p, (size_t)sc->a.n, &sc->w, out);
    /* One word per replacement character, which starts it. */
    int64_t w0 = 0;
    for (int64_t i = 1; i <= sc->a.n; i++) {
        if (i < sc->a.n && !((size_t)(sc->a.n - i) >= rl && memcmp(sc->a.p + i, r, rl) == 0))
            continue;
        MPQ_CALL(bpe_word(ctx, h, sc->a.p + w0, (size_t)(i - w0), &sc->w, out));
        w0 = i;
    }
    return MPQ_OK;
}

/* The added token matching at text[i] (the longest), or NULL. */
static const mpq_hf_added *match_added(const mpq_hftok *h, const char *text, size_t len, size_t i) {
    for (int64_t k = 0; k < h->nadded; k++) {
        const mpq_hf_added *a = &h->added[k];
        if (a->len <= len - i && text[i] == a->s[0] && memcmp(text + i, a->s, a->len) == 0)
            return a;
    }
    return NULL;
}

mpq_err mpq_hftok_encode(mpq_ctx *ctx, const mpq_hftok *h, const char *text, size_t len,
                         int32_t bos, int32_t eos, int32_t **ids, int64_t *n) {
    mpq_err err = MPQ_OK;
    hf_ids out = {0};
    hf_scratch sc = {0};
    char *fixed = NULL;
    int64_t fcap = 0;
    *ids = NULL;
    *n = 0;
    if ((h->npre > 0 || h->uninorm) && !mpq_hftok_utf8_valid(text, len)) {
        /* The patterns and the Unicode normalizations need UTF-8: the text
         * becomes what Python's text.decode("utf-8", "replace") gives the
         * tokenizers library (whose normalizer runs before the
         * pre-tokenizer, on each piece between added tokens). */
        MPQ_TRY(mpq_hftok_utf8_lossy(ctx, text, len, &fixed, &fcap, &len));
        text = fixed;
    }
    const unsigned char *u = (const unsigned char *)text;
    if (bos >= 0)
        MPQ_TRY(ids_add(ctx, &out, bos));
    size_t start = 0;
    for (size_t i = 0; i < len;) {
        const mpq_hf_added *a = match_added(h, text, len, i);
        if (!a) {
            i++;
            continue;
        }
        size_t ms = i, me = i + a->len;
        while (a->lstrip && ms > start) { /* back over whitespace characters */
            size_t b = ms - 1;
            while (b > start && (u[b] & 0xC0) == 0x80)
                b--;
            if (char_len(u + b, ms - b) != ms - b || !is_space(code_point(u + b, ms - b)))
                break;
            ms = b;
        }
        while (a->rstrip && me < len) {
            size_t cl = char_len(u + me, len - me);
            if (!is_space(code_point(u + me, cl)))
                break;
            me += cl;
        }
        MPQ_TRY(encode_piece(ctx, h, text + start, ms - start, start == 0, &sc, &out));
        MPQ_TRY(ids_add(ctx, &out, a->id));
        start = i = me;
    }
    MPQ_TRY(encode_piece(ctx, h, text + start, len - start, start == 0, &sc, &out));
    if (eos >= 0)
        MPQ_TRY(ids_add(ctx, &out, eos));
    int64_t count = out.n;
    if (out.n == 0)
        MPQ_TRY(ids_add(ctx, &out, 0)); /* a non-NULL result for an empty one */
    *ids = out.p;
    *n = count;
    out.p = NULL;
cleanup:
    mpq_free(out.p);
    mpq_free(sc.a.p);
    mpq_free(sc.b.p);
    mpq_free(sc.w.tok);
    mpq_free(sc.w.next);
    mpq_free(sc.w.prev);
    mpq_free(sc.w.heap);
    mpq_hftok_words_free(&sc.words);
    mpq_free(fixed);
    return err;
}

/* ---- decoding ---------------------------------------------------------------------- */

/* A list of strings: token k is p.p[off[k] .. off[k] + len[k]). */
typedef struct {
    hf_buf p;
    int64_t *off, *len;
    int64_t n, cap;
} hf_list;

/* Starts a new (empty) string at the end of the list. */
static mpq_err list_begin(mpq_ctx *ctx, hf_list *l) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        MPQ_CALL(mpq_realloc(ctx, l->cap, cap, sizeof *l->off, (void **)&l->off));
        MPQ_CALL(mpq_realloc(ctx, l->cap, cap, sizeof *l->len, (void **)&l->len));
        l->cap = cap;
    }
    MPQ_CALL(buf_add(ctx, &l->p, "", 0));
    l->off[l->n] = l->p.n;
    l->len[l->n++] = 0;
    return MPQ_OK;
}

/* Appends bytes to the last string. */
static mpq_err list_cat(mpq_ctx *ctx, hf_list *l, const char *s, size_t n) {
    MPQ_CALL(buf_add(ctx, &l->p, s, n));
    l->len[l->n - 1] += (int64_t)n;
    return MPQ_OK;
}

static void list_free(hf_list *l) {
    mpq_free(l->p.p);
    mpq_free(l->off);
    mpq_free(l->len);
    memset(l, 0, sizeof *l);
}

static int hexdig(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Strict UTF-8 (no overlong forms, surrogates or code points above
 * U+10FFFF), as Rust's String::from_utf8. */
static int valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t l = char_len(s + i, n - i);
        if (l == 1 && s[i] >= 0x80)
            return 0;
        uint32_t c = code_point(s + i, l);
        if ((l == 3 && (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF))) ||
            (l == 4 && (c < 0x10000 || c > 0x10FFFF)))
            return 0;
        i += l;
    }
    return 1;
}

/* Flushes the pending bytes of <0xXX> tokens: one string if they are UTF-8,
 * else one U+FFFD per byte. */
static mpq_err flush_bytes(mpq_ctx *ctx, hf_list *d, const unsigned char *b, size_t nb) {
    if (nb == 0)
        return MPQ_OK;
    if (valid_utf8(b, nb)) {
        MPQ_CALL(list_begin(ctx, d));
        return list_cat(ctx, d, (const char *)b, nb);
    }
    for (size_t k = 0; k < nb; k++) {
        MPQ_CALL(list_begin(ctx, d));
        MPQ_CALL(list_cat(ctx, d, "\xEF\xBF\xBD", 3));
    }
    return MPQ_OK;
}

static mpq_err step_bytefallback(mpq_ctx *ctx, const hf_list *s, hf_list *d) {
    mpq_err err = MPQ_OK;
    unsigned char *bytes = NULL;
    size_t nb = 0;
    MPQ_ALLOC_TRY(bytes, s->n + 1);
    for (int64_t k = 0; k < s->n; k++) {
        const char *t = s->p.p + s->off[k];
        if (s->len[k] == 6 && memcmp(t, "<0x", 3) == 0 && t[5] == '>' && hexdig(t[3]) >= 0 &&
            hexdig(t[4]) >= 0) {
            bytes[nb++] = (unsigned char)(hexdig(t[3]) * 16 + hexdig(t[4]));
            continue;
        }
        MPQ_TRY(flush_bytes(ctx, d, bytes, nb));
        nb = 0;
        MPQ_TRY(list_begin(ctx, d));
        MPQ_TRY(list_cat(ctx, d, t, (size_t)s->len[k]));
    }
    MPQ_TRY(flush_bytes(ctx, d, bytes, nb));
cleanup:
    mpq_free(bytes);
    return err;
}

/* Applies one decoder step to every string of s, into d (empty). */
static mpq_err decode_step(mpq_ctx *ctx, const mpq_hftok *h, const mpq_hf_step *st,
                           const hf_list *s, hf_list *d) {
    if (st->op == HF_BYTEFALLBACK)
        return step_bytefallback(ctx, s, d);
    if (st->op == HF_BYTELEVEL) {
        char *t = NULL;
        size_t tl = 0;
        mpq_err e = mpq_hftok_bytelevel_decode(ctx, h, s->p.p, s->off, s->len, s->n, &t, &tl);
        if (e == MPQ_OK && (e = list_begin(ctx, d)) == MPQ_OK)
            e = list_cat(ctx, d, t, tl);
        mpq_free(t);
        MPQ_CALL(e);
        return MPQ_OK;
    }
    if (st->op == HF_FUSE) {
        MPQ_CALL(list_begin(ctx, d));
        for (int64_t k = 0; k < s->n; k++)
            MPQ_CALL(list_cat(ctx, d, s->p.p + s->off[k], (size_t)s->len[k]));
        return MPQ_OK;
    }
    size_t la = strlen(st->a);
    for (int64_t k = 0; k < s->n; k++) {
        const char *t = s->p.p + s->off[k];
        size_t n = (size_t)s->len[k], i = 0;
        MPQ_CALL(list_begin(ctx, d));
        if (st->op == HF_STRIP) {
            for (int64_t c = 0; c < st->n0 && n - i >= la && memcmp(t + i, st->a, la) == 0; c++)
                i += la;
            for (int64_t c = 0; c < st->n1 && n - i >= la && memcmp(t + n - la, st->a, la) == 0;
                 c++)
                n -= la;
            MPQ_CALL(list_cat(ctx, d, t + i, n - i));
            continue;
        }
        /* Replace, Metaspace: every occurrence of a */
        const char *b = st->op == HF_REPLACE ? st->b : k == 0 && st->prepend ? "" : " ";
        while (i < n) {
            if (n - i >= la && memcmp(t + i, st->a, la) == 0) {
                MPQ_CALL(list_cat(ctx, d, b, strlen(b)));
                i += la;
            } else {
                MPQ_CALL(list_cat(ctx, d, t + i, 1));
                i++;
            }
        }
    }
    return MPQ_OK;
}

mpq_err mpq_hftok_decode(mpq_ctx *ctx, const mpq_hftok *h, const int32_t *ids, int64_t n,
                         char **out, size_t *len) {
    mpq_err err = MPQ_OK;
    hf_list a = {0}, b = {0};
    hf_buf res = {0};
    *out = NULL;
    *len = 0;
    for (int64_t k = 0; k < n; k++) {
        int32_t id = ids[k];
        MPQ_ENSURE(id >= 0 && id < h->size, MPQ_ERR_ARG,
                   "%s: token %lld has id %d outside the vocabulary [0, %lld)", h->path,
                   (long long)k, (int)id, (long long)h->size);
        if (h->is_special[id] || h->len[id] < 0)
            continue; /* skip_special_tokens; an id no entry names */
        MPQ_TRY(list_begin(ctx, &a));
        MPQ_TRY(list_cat(ctx, &a, h->pool + h->off[id], (size_t)h->len[id]));
    }
    for (int64_t k = 0; k < h->ndec; k++) {
        b.n = 0;
        b.p.n = 0;
        MPQ_TRY(decode_step(ctx, h, &h->dec[k], &a, &b));
        hf_list t = a;
        a = b;
        b = t;
    }
    /* The tokenizers library joins the strings, with spaces when there is no
     * decoder. */
    MPQ_TRY(buf_add(ctx, &res, "", 0));
    for (int64_t k = 0; k < a.n; k++) {
        if (k > 0 && !h->has_decoder)
            MPQ_TRY(buf_add(ctx, &res, " ", 1));
        MPQ_TRY(buf_add(ctx, &res, a.p.p + a.off[k], (size_t)a.len[k]));
    }
    *out = res.p;
    *len = (size_t)res.n;
    res.p = NULL;
cleanup:
    mpq_free(res.p);
    list_free(&a);
    list_free(&b);
    return err;
}
