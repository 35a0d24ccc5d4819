/* io_tokenizer.c: the tokenizer handle, and llama2.c's BPE tokenizer.
 *
 * mpq_tokenizer_load picks the kind from the path: a directory holding
 * tokenizer.json, a *.json file or a file opening a JSON object is a Hugging
 * Face tokenizer (io_hftok.c, io_hftok_enc.c), anything else llama2.c's
 * tokenizer.bin, read here.
 *
 * llama2.c merges by rescanning all adjacent pairs after every merge, which
 * is O(n^2) in the text length. Here the tokens form a doubly linked list
 * and every candidate pair (one whose concatenation is in the vocabulary)
 * sits in a binary max-heap keyed by (score, position of its left token).
 * Entries are invalidated lazily: a popped entry is used only if its left
 * token is still alive, still followed by the same right token, and both
 * still hold the token ids recorded in the entry. The surviving candidate
 * with the highest score and, among equal scores, the leftmost position is
 * exactly the pair llama2.c merges, so the output is identical.
 *
 * Token strings follow llama2.c's C-string semantics: a token is its bytes
 * up to the first NUL.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hftok_internal.h"
#include "mpq_infile.h"
#include "mpq_ctx.h"
#include "mpq_tokenizer.h"

struct mpq_tokenizer {
    mpq_tokenizer_kind kind;
    int32_t bos, eos; /* -1 when none */
    int add_bos;      /* sequences start with BOS */
    mpq_hftok *hf;    /* MPQ_TOKENIZER_HF_BPE: everything else is unused */
    int64_t vocab_size;
    int64_t max_len; /* max_token_length from the file */
    char *pool;      /* every token's bytes, each followed by a NUL */
    int64_t *offset; /* [vocab_size] into pool */
    int64_t *len;    /* [vocab_size] bytes up to the first NUL */
    float *score;    /* [vocab_size] merge priority */
    int64_t nslots;  /* power of two >= 2 * vocab_size */
    int32_t *slots;  /* [nslots] open-addressing hash of the strings, -1 empty */
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

int32_t mpq_tokenizer_lookup(const mpq_tokenizer *t, const char *s, size_t len) {
    if (t->hf)
        return mpq_hftok_lookup(t->hf, s, len);
    uint64_t mask = (uint64_t)t->nslots - 1;
    for (uint64_t i = hash_bytes(s, len) & mask;; i = (i + 1) & mask) {
        int32_t id = t->slots[i];
        if (id < 0)
            return -1;
        if ((size_t)t->len[id] == len && memcmp(t->pool + t->offset[id], s, len) == 0)
            return id;
    }
}

static mpq_err build_hash(mpq_ctx *ctx, mpq_tokenizer *t) {
    int64_t n = 16;
    while (n < 2 * t->vocab_size)
        n *= 2;
    t->nslots = n;
    MPQ_ALLOC(t->slots, n);
    for (int64_t i = 0; i < n; i++)
        t->slots[i] = -1;
    uint64_t mask = (uint64_t)n - 1;
    for (int64_t id = 0; id < t->vocab_size; id++) {
        const char *s = t->pool + t->offset[id];
        /* Keep the lowest id of duplicated strings. */
        if (mpq_tokenizer_lookup(t, s, (size_t)t->len[id]) >= 0)
            continue;
        uint64_t i = hash_bytes(s, (size_t)t->len[id]) & mask;
        while (t->slots[i] >= 0)
            i = (i + 1) & mask;
        t->slots[i] = (int32_t)id;
    }
    return MPQ_OK;
}

static mpq_err load_llama2c(mpq_ctx *ctx, const char *path, int64_t vocab_size,
                            mpq_tokenizer **out) {
    mpq_err err = MPQ_OK;
    FILE *f = NULL;
    unsigned char *buf = NULL;
    mpq_tokenizer *t = NULL;
    *out = NULL;
    MPQ_CHECK(vocab_size >= 259 && vocab_size <= INT32_MAX, MPQ_ERR_ARG,
              "%s: vocab_size %lld must lie in [259, 2^31) (3 special tokens and 256 byte "
              "tokens)",
              path, (long long)vocab_size);
    MPQ_TRY(mpq_infile_fopen(ctx, path, "tokenizer", &f));
    struct stat st;
    MPQ_ENSURE(fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode), MPQ_ERR_IO,
               "%s: not a regular file", path);
    int64_t size = (int64_t)st.st_size;
    MPQ_ENSURE(size >= 4, MPQ_ERR_FORMAT, "%s: truncated: %lld bytes, no max_token_length", path,
               (long long)size);
    /* Every entry takes at least 8 bytes: refuse before allocating per-token arrays. */
    MPQ_ENSURE((size - 4) / 8 >= vocab_size, MPQ_ERR_FORMAT,
               "%s: truncated: %lld bytes cannot hold the model's %lld tokens", path,
               (long long)size, (long long)vocab_size);
    MPQ_ALLOC_TRY(buf, size);
    MPQ_ENSURE(fread(buf, 1, (size_t)size, f) == (size_t)size, MPQ_ERR_IO, "%s: read failed: %s",
               path, strerror(errno));
    int32_t max_len;
    memcpy(&max_len, buf, 4);
    MPQ_ENSURE(max_len > 0, MPQ_ERR_FORMAT, "%s: max_token_length = %d must be positive", path,
               (int)max_len);
    /* The encoder allocates scratch space from it: a value no token of this
     * file can reach is a damaged header, not a reason to allocate gigabytes. */
    MPQ_ENSURE(max_len <= size, MPQ_ERR_FORMAT,
               "%s: max_token_length = %d exceeds the file size (%lld bytes)", path, (int)max_len,
               (long long)size);

    MPQ_ALLOC_TRY(t, 1);
    t->kind = MPQ_TOKENIZER_LLAMA2C;
    t->bos = MPQ_TOKEN_BOS;
    t->eos = MPQ_TOKEN_EOS;
    t->add_bos = 1;
    t->vocab_size = vocab_size;
    t->max_len = max_len;
    MPQ_ALLOC_TRY(t->offset, vocab_size);
    MPQ_ALLOC_TRY(t->len, vocab_size);
    MPQ_ALLOC_TRY(t->score, vocab_size);
    /* The pool holds every byte of the entries plus a NUL each: bounded by the file size. */
    MPQ_ALLOC_TRY(t->pool, size + vocab_size);
    int64_t pos = 4, used = 0;
    for (int64_t id = 0; id < vocab_size; id++) {
        MPQ_ENSURE(size - pos >= 8, MPQ_ERR_FORMAT,
                   "%s: truncated at token %lld of %lld (offset %lld): the file holds fewer "
                   "entries than the model's vocab_size",
                   path, (long long)id, (long long)vocab_size, (long long)pos);
        int32_t n;
        memcpy(&t->score[id], buf + pos, 4);
        memcpy(&n, buf + pos + 4, 4);
        MPQ_ENSURE(isfinite(t->score[id]), MPQ_ERR_FORMAT,
                   "%s: token %lld has a non-finite score (%g): merge priorities must be numbers",
                   path, (long long)id, (double)t->score[id]);
        pos += 8;
        MPQ_ENSURE(n >= 0 && n <= max_len, MPQ_ERR_FORMAT,
                   "%s: token %lld has length %d outside [0, max_token_length = %d]", path,
                   (long long)id, (int)n, (int)max_len);
        MPQ_ENSURE(size - pos >= n, MPQ_ERR_FORMAT,
                   "%s: truncated inside token %lld (%d bytes announced, %lld left)", path,
                   (long long)id, (int)n, (long long)(size - pos));
        memcpy(t->pool + used, buf + pos, (size_t)n);
        t->offset[id] = used;
        t->len[id] = (int64_t)strnlen(t->pool + used, (size_t)n);
        used += n + 1; /* the pool is zeroed: the NUL is already there */
        pos += n;
    }
    MPQ_ENSURE(pos == size, MPQ_ERR_FORMAT,
               "%s: %lld trailing bytes after %lld tokens: the file holds more entries than the "
               "model's vocab_size",
               path, (long long)(size - pos), (long long)vocab_size);
    MPQ_TRY(build_hash(ctx, t));
    *out = t;
    t = NULL;
cleanup:
    mpq_tokenizer_destroy(&t);
    mpq_free(buf);
    if (f)
        fclose(f);
    return err;
}

/* Whether path names a Hugging Face tokenizer; then json (and cfg, "" when
 * absent) receive the tokenizer.json and tokenizer_config.json paths. */
int mpq_tokenizer_looks_hf(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    if (S_ISDIR(st.st_mode))
        return 1;
    if (!S_ISREG(st.st_mode))
        return 0; /* no peeking into a FIFO or a device */
    const size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".json") == 0)
        return 1;
    /* A llama2.c file cannot open a JSON object: its first int32 would be a
     * max_token_length of 0x227B or more, or 0x7B 0x20 ... */
    int hf = 0, seen = 0;
    FILE *f = fopen(path, "rb");
    for (int c; f && (c = fgetc(f)) != EOF;) {
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        hf = seen && (c == '"' || c == '}');
        if (seen || c != '{')
            break;
        seen = 1;
    }
    if (f)
        fclose(f);
    return hf;
}

static mpq_err hf_paths(mpq_ctx *ctx, const char *path, char *json, char *cfg, size_t cap,
                        int *is_hf) {
    struct stat st;
    *is_hf = 0;
    json[0] = cfg[0] = '\0';
    if (stat(path, &st) != 0)
        return MPQ_OK; /* the llama2.c reader reports it */
    size_t n = strlen(path);
    MPQ_CHECK(n + 32 < cap, MPQ_ERR_ARG, "%s: path too long", path);
    if (S_ISDIR(st.st_mode)) {
        snprintf(json, cap, "%s/tokenizer.json", path);
        MPQ_CHECK(access(json, R_OK) == 0, MPQ_ERR_IO,
                  "%s: a directory without a readable tokenizer.json", path);
        snprintf(cfg, cap, "%s/tokenizer_config.json", path);
        if (access(cfg, R_OK) != 0)
            cfg[0] = '\0';
        *is_hf = 1;
        return MPQ_OK;
    }
    if (!mpq_tokenizer_looks_hf(path))
        return MPQ_OK; /* llama2.c's reader reports a FIFO or device */
    snprintf(json, cap, "%s", path);
    const char *slash = strrchr(path, '/');
    int dlen = slash ? (int)(slash - path) : 1;
    snprintf(cfg, cap, "%.*s/tokenizer_config.json", dlen, slash ? path : ".");
    const char *base = slash ? slash + 1 : path;
    if (strcmp(base, "tokenizer_config.json") == 0 || access(cfg, R_OK) != 0)
        cfg[0] = '\0';
    *is_hf = 1;
    return MPQ_OK;
}

mpq_err mpq_tokenizer_load(mpq_ctx *ctx, const char *path, int64_t vocab_size,
                           mpq_tokenizer **out) {
    mpq_err err = MPQ_OK;
    mpq_tokenizer *t = NULL;
    char json[4096], cfg[4096];
    int is_hf = 0;
    *out = NULL;
    MPQ_CALL(hf_paths(ctx, path, json, cfg, sizeof json, &is_hf));
    if (!is_hf)
        return load_llama2c(ctx, path, vocab_size, out);
    MPQ_ALLOC_TRY(t, 1);
    t->kind = MPQ_TOKENIZER_HF_BPE;
    MPQ_TRY(mpq_hftok_load(ctx, json, cfg[0] ? cfg : NULL, vocab_size, &t->hf));
    t->vocab_size = t->hf->size;
    t->max_len = t->hf->max_len;
    t->bos = t->hf->bos;
    t->eos = t->hf->eos;
    t->add_bos = t->hf->add_bos;
    *out = t;
    t = NULL;
cleanup:
    mpq_tokenizer_destroy(&t);
    return err;
}

mpq_tokenizer_kind mpq_tokenizer_get_kind(const mpq_tokenizer *t) {
    return t->kind;
}

const char *mpq_tokenizer_kind_name(const mpq_tokenizer *t) {
    return t->kind == MPQ_TOKENIZER_HF_BPE ? "hf-bpe" : "llama2c";
}

int mpq_tokenizer_byte_level(const mpq_tokenizer *t) {
    return t->kind == MPQ_TOKENIZER_HF_BPE && t->hf->bytelevel;
}

/* Without a tokenizer: llama2.c's convention. */
int32_t mpq_tokenizer_bos(const mpq_tokenizer *t) {
    return t ? t->bos : MPQ_TOKEN_BOS;
}

int32_t mpq_tokenizer_eos(const mpq_tokenizer *t) {
    return t ? t->eos : MPQ_TOKEN_EOS;
}

int mpq_tokenizer_add_bos(const mpq_tokenizer *t) {
    return t ? t->add_bos : 1;
}

void mpq_tokenizer_destroy(mpq_tokenizer **pt) {
    if (!pt || !*pt)
        return;
    mpq_tokenizer *t = *pt;
    mpq_hftok_destroy(&t->hf);
    mpq_free(t->pool);
    mpq_free(t->offset);
    mpq_free(t->len);
    mpq_free(t->score);
    mpq_free(t->slots);
    mpq_free(t);
    *pt = NULL;
}

int64_t mpq_tokenizer_vocab_size(const mpq_tokenizer *t) {
    return t->vocab_size;
}

int64_t mpq_tokenizer_max_token_length(const mpq_tokenizer *t) {
    return t->max_len;
}

const char *mpq_tokenizer_token(const mpq_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->vocab_size)
        return NULL;
    if (t->hf) {
        if (t->hf->len[id] < 0)
            return NULL;
        if (len)
            *len = (size_t)t->hf->len[id];
        return t->hf->pool + t->hf->off[id];
    }
    if (len)
        *len = (size_t)t->len[id];
    return t->pool + t->offset[id];
}

float mpq_tokenizer_score(const mpq_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->vocab_size || t->hf)
        return 0.0f;
    return t->score[id];
}

/* ---- encoding ------------------------------------------------------------ */

typedef struct {
    float score;    /* of the merged token */
    int64_t left;   /* list node of the left token (its original position) */
    int64_t right;  /* list node of the right token */
    int32_t tl, tr; /* token ids of both when the entry was pushed */
    int32_t merged; /* id of the concatenation */
} merge_cand;

/* a goes above b: higher score, then the leftmost. */
static int cand_before(const merge_cand *a, const merge_cand *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

#define HEAP_T      merge_cand
#define HEAP_BEFORE cand_before
#define HEAP_PUSH   heap_push
#define HEAP_POP    heap_pop
#include "io_heap.h"
#undef HEAP_T
#undef HEAP_BEFORE
#undef HEAP_PUSH
#undef HEAP_POP

/* Pushes the pair (left, right) if its concatenation is a token that
 * llama2.c could pick (score above its initial best of -1e10). */
static void consider(const mpq_tokenizer *t, const int32_t *tok, int64_t left, int64_t right,
                     char *scratch, merge_cand *heap, int64_t *nheap) {
    int32_t a = tok[left], b = tok[right];
    size_t la = (size_t)t->len[a], lb = (size_t)t->len[b];
    memcpy(scratch, t->pool + t->offset[a], la);
    memcpy(scratch + la, t->pool + t->offset[b], lb);
    int32_t id = mpq_tokenizer_lookup(t, scratch, la + lb);
    if (id < 0 || !(t->score[id] > -1e10f))
        return;
    heap_push(
        heap, nheap,
        (merge_cand){
            .score = t->score[id], .left = left, .right = right, .tl = a, .tr = b, .merged = id});
}

mpq_err mpq_tokenizer_encode(mpq_ctx *ctx, const mpq_tokenizer *t, const char *text, size_t len,
                             int bos, int eos, int32_t **tokens, int64_t *n) {
    mpq_err err = MPQ_OK;
    int32_t *tok = NULL, *res = NULL;
    int64_t *next = NULL, *prev = NULL;
    merge_cand *heap = NULL;
    char *scratch = NULL;
    *tokens = NULL;
    *n = 0;
    if (t->hf)
        return mpq_hftok_encode(ctx, t->hf, text, len, bos ? t->bos : -1, eos ? t->eos : -1, tokens,
                                n);
    /* At most one token per byte, plus BOS, the dummy prefix and EOS. */
    int64_t cap = (int64_t)len + 3;
    MPQ_ALLOC_TRY(tok, cap);
    MPQ_ALLOC_TRY(scratch, 2 * t->max_len + 8);
    int64_t nt = 0;
    if (bos)
        tok[nt++] = t->bos;
    if (len > 0) {
        int32_t sp = mpq_tokenizer_lookup(t, " ", 1);
        MPQ_ENSURE(sp >= 0, MPQ_ERR_FORMAT, "tokenizer: the vocabulary has no \" \" token");
        tok[nt++] = sp;
    }
    /* Code points: a start byte followed by up to 3 continuation bytes. */
    const unsigned char *s = (const unsigned char *)text;
    size_t cp = 0; /* bytes of the current code point */
    char buf[4];
    for (size_t i = 0; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            cp = 0;
        buf[cp++] = (char)s[i];
        if (i + 1 < len && (s[i + 1] & 0xC0) == 0x80 && cp < 4)
            continue;
        int32_t id = mpq_tokenizer_lookup(t, buf, cp);
        if (id >= 0) {
            tok[nt++] = id;
        } else {
            for (size_t k = 0; k < cp; k++)
                tok[nt++] = (int32_t)(unsigned char)buf[k] + 3;
        }
        cp = 0;
    }

    /* Merge over a linked list; nodes keep their original positions. */
    MPQ_ALLOC_TRY(next, nt + 1);
    MPQ_ALLOC_TRY(prev, nt + 1);
    /* Pops never outnumber pushes and each merge (at most nt - 1) pops one
     * entry and pushes two, so at most (nt - 1) + (nt - 1) entries are live. */
    MPQ_ALLOC_TRY(heap, 2 * nt + 2);
    for (int64_t i = 0; i < nt; i++) {
        next[i] = i + 1 < nt ? i + 1 : -1;
        prev[i] = i - 1;
    }
    int64_t nheap = 0, alive = nt;
    for (int64_t i = 0; i + 1 < nt; i++)
        consider(t, tok, i, i + 1, scratch, heap, &nheap);
    while (nheap > 0) {
        merge_cand c = heap_pop(heap, &nheap);
        int64_t l = c.left, r = c.right;
        if (tok[l] < 0 || next[l] != r || tok[l] != c.tl || tok[r] != c.tr)
            continue;
        tok[l] = c.merged;
        tok[r] = -1; /* dead */
        next[l] = next[r];
        if (next[r] >= 0)
            prev[next[r]] = l;
        alive--;
        if (prev[l] >= 0)
            consider(t, tok, prev[l], l, scratch, heap, &nheap);
        if (next[l] >= 0)
            consider(t, tok, l, next[l], scratch, heap, &nheap);
    }
    MPQ_ALLOC_TRY(res, alive + 1);
    int64_t k = 0;
    for (int64_t i = 0; i >= 0 && i < nt; i = next[i])
        res[k++] = tok[i];
    if (eos)
        res[k++] = t->eos;
    *tokens = res;
    *n = k;
    res = NULL;
cleanup:
    mpq_free(res);
    mpq_free(heap);
    mpq_free(prev);
    mpq_free(next);
    mpq_free(scratch);
    mpq_free(tok);
    return err;
}

/* ---- decoding ------------------------------------------------------------ */

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

const char *mpq_tokenizer_piece(const mpq_tokenizer *t, int32_t prev, int32_t id,
                                unsigned char *byte, size_t *len) {
    size_t n = 0;
    const char *p = mpq_tokenizer_token(t, id, &n);
    if (!p)
        return NULL;
    if (!t->hf && prev == t->bos && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    /* "<0xXX>": one raw byte (llama2.c reads up to two hex digits). */
    if (n >= 4 && memcmp(p, "<0x", 3) == 0 && hexval(p[3]) >= 0) {
        int v = hexval(p[3]);
        if (n >= 5 && hexval(p[4]) >= 0)
            v = v * 16 + hexval(p[4]);
        *byte = (unsigned char)v;
        *len = 1;
        return (const char *)byte;
    }
    *len = n;
    return p;
}

mpq_err mpq_tokenizer_decode(mpq_ctx *ctx, const mpq_tokenizer *t, const int32_t *tokens, int64_t n,
                             int after_bos, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (t->hf) {
        MPQ_CALL(mpq_hftok_decode(ctx, t->hf, tokens, n, out, len));
        return MPQ_OK;
    }
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        MPQ_CHECK(tokens[i] >= 0 && tokens[i] < t->vocab_size, MPQ_ERR_ARG,
                  "tokenizer: token %lld has id %d outside the vocabulary [0, %lld)", (long long)i,
                  (int)tokens[i], (long long)t->vocab_size);
        total += t->len[tokens[i]];
    }
    char *s = NULL;
    MPQ_CALL(mpq_malloc(ctx, total + 1, 1, (void **)&s));
    size_t used = 0;
    int32_t prev = after_bos ? t->bos : 0;
    for (int64_t i = 0; i < n; i++) {
        unsigned char b;
        size_t pl = 0;
        const char *p = mpq_tokenizer_piece(t, prev, tokens[i], &b, &pl);
        memcpy(s + used, p, pl);
        used += pl;
        prev = tokens[i];
    }
    s[used] = '\0';
    *out = s;
    *len = used;
    return MPQ_OK;
}
