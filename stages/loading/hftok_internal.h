/* hftok_internal.h: the Hugging Face tokenizer.json reader behind
 * mpq_tokenizer (kind "hf-bpe"). io_hftok.c parses the file into this
 * structure, io_hftok_enc.c encodes and decodes with it. Everything is local.
 *
 * Supported (the SentencePiece-converted BPE of the Llama-2 family):
 *  - model: BPE with vocab, merges ("a b" strings or ["a", "b"] pairs; the
 *    rank is the position), unk_token, fuse_unk, byte_fallback,
 *    ignore_merges; dropout null, no continuing_subword_prefix or
 *    end_of_word_suffix;
 *  - normalizer: null, NFC, NFD, NFKC, NFKD (libunistring's u8_normalize,
 *    on text made valid UTF-8 first), Prepend, Replace (String pattern), or
 *    a Sequence of them;
 *  - pre_tokenizer: null, Metaspace (replacement, prepend_scheme
 *    first/always/never or the older add_prefix_space, split), or Split
 *    (Regex or String pattern, the five behaviors, invert) and Digits steps
 *    optionally followed by one ByteLevel (add_prefix_space, use_regex: the
 *    GPT-2 pattern; bytes mapped to the GPT-2 byte characters), alone or in
 *    a Sequence (io_hftok_bytelevel.c);
 *  - added_tokens: matched in the raw text, leftmost then longest, with
 *    lstrip/rstrip; normalized or single_word tokens are refused;
 *  - decoder: null, Replace, ByteFallback, Fuse, Strip, Metaspace,
 *    ByteLevel, or a Sequence of them;
 *  - post_processor: only read for the BOS/EOS of a TemplateProcessing.
 * Anything else is refused naming the component (Whitespace, Lowercase,
 * Precompiled, WordPiece, Unigram, ...). */
#ifndef MPQ_HFTOK_INTERNAL_H
#define MPQ_HFTOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <pcre2.h>

#include "mpq_err.h"

struct mpq_ctx;

/* One step of the normalizer, pre-tokenizer or decoder chain. */
typedef enum {
    HF_PREPEND,      /* normalizer: a = the prefix (if the text is non-empty) */
    HF_REPLACE,      /* normalizer or decoder: every a -> b */
    HF_BYTEFALLBACK, /* decoder: <0xXX> tokens -> bytes (U+FFFD per byte if not UTF-8) */
    HF_FUSE,         /* decoder: all tokens -> one */
    HF_STRIP,        /* decoder: up to n0 leading, n1 trailing code points a of each token */
    HF_METASPACE,    /* decoder: a -> " ", dropped in token 0 unless prepend never */
    HF_BYTELEVEL,    /* decoder: byte characters -> bytes, all tokens -> one string */
    HF_UNINORM,      /* normalizer: Unicode normalization form n0 (mpq_hf_form) */
} mpq_hf_op;

/* The Unicode normalization forms of HF_UNINORM. */
typedef enum { HF_NFC, HF_NFD, HF_NFKC, HF_NFKD } mpq_hf_form;

typedef struct {
    mpq_hf_op op;
    char *a, *b;    /* NUL-terminated, owned */
    int64_t n0, n1; /* HF_STRIP counts; HF_UNINORM: n0 the form */
    int prepend;    /* HF_METASPACE: prepend_scheme != never */
} mpq_hf_step;

typedef enum { HF_PREPEND_ALWAYS, HF_PREPEND_FIRST, HF_PREPEND_NEVER } mpq_hf_scheme;

/* How a Split step keeps the matches of its pattern (the tokenizers
 * library's SplitDelimiterBehavior). */
typedef enum {
    HF_SPLIT_ISOLATED,    /* matches and the text between them, each a piece */
    HF_SPLIT_REMOVED,     /* the matches are dropped */
    HF_SPLIT_MERGED_PREV, /* a match joins the piece before it */
    HF_SPLIT_MERGED_NEXT, /* a match joins the piece after it */
    HF_SPLIT_CONTIGUOUS,  /* consecutive matches form one piece */
} mpq_hf_behavior;

/* One pre-tokenizer step besides Metaspace. Digits is a Split on one
 * numeric character (individual_digits) or a run of them. */
typedef struct {
    int bytelevel;            /* 1: ByteLevel (then the last step), 0: Split */
    pcre2_code *re;           /* the pattern (owned); NULL: ByteLevel without
                               * use_regex, or an empty String pattern */
    mpq_hf_behavior behavior; /* Split */
    int invert;               /* Split: the matches are the text between them */
    int add_prefix_space;     /* ByteLevel: " " before a piece not starting with one */
} mpq_hf_pre;

#define HF_MAX_PRE 8 /* pre-tokenizer steps */

/* Scratch of the pre-tokenizer: the words of a piece of text, and per-step
 * buffers. Zero-initialised; mpq_hftok_words_free releases it. */
typedef struct {
    char *p; /* the words back to back ([cap]) */
    int64_t np, cap;
    int64_t *end; /* word k is p[end[k-1] (0 for k = 0) .. end[k]) ([ncap]) */
    int64_t n, ncap;
    char *tmp; /* the text made valid UTF-8 */
    int64_t tcap;
    char *pfx; /* a piece with ByteLevel's prefix space */
    int64_t pcap;
    pcre2_match_data *md;
    int64_t *seg[HF_MAX_PRE]; /* a step's pieces: (begin, end, keep) triples */
    int64_t nseg[HF_MAX_PRE], scap[HF_MAX_PRE];
} mpq_hf_words;

typedef struct {
    int32_t id;
    char *s; /* content, NUL-terminated, owned */
    size_t len;
    int special, lstrip, rstrip;
} mpq_hf_added;

typedef struct mpq_hftok {
    char *path;   /* tokenizer.json, for messages */
    int64_t size; /* max id + 1 over the vocabulary and the added tokens */
    int64_t nvocab;
    /* Strings of every id: pool + off[id], len[id]; len -1 for an id no
     * entry names. [size] each. */
    char *pool;
    int64_t *off, *len;
    int64_t max_len;
    /* model.vocab: open addressing on FNV-1a, -1 empty. [vslots] */
    int64_t vslots;
    int32_t *vslot;
    /* merges: key (left id << 32 | right id) -> rank, merged id. [mslots] */
    int64_t mslots, nmerges;
    uint64_t *mkey; /* UINT64_MAX empty */
    int32_t *mrank, *mnew;
    int32_t unk; /* model vocab id of unk_token, -1 when none */
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_id[256]; /* id of "<0xXX>", -1 when absent */
    mpq_hf_added *added;  /* [nadded], sorted by length, longest first */
    int64_t nadded;
    uint8_t *is_special; /* [size]: special added tokens (skipped by decode) */
    mpq_hf_step *norm, *dec;
    int64_t nnorm, ndec;
    int uninorm; /* a normalizer step is HF_UNINORM: the text is made valid UTF-8 */
    int has_decoder;
    int metaspace; /* pre_tokenizer Metaspace */
    char *ms_repl; /* its replacement (NUL-terminated, owned) */
    mpq_hf_scheme ms_scheme;
    int ms_split;
    mpq_hf_pre *pre; /* [npre] Split/Digits steps, then ByteLevel */
    int64_t npre;
    int bytelevel;         /* words are mapped to byte characters */
    uint16_t bl_char[256]; /* byte -> its character (the GPT-2 mapping) */
    int16_t bl_byte[324];  /* and back: character -> byte, -1 for none */
    int32_t bos, eos;      /* -1 when none */
    int add_bos;
} mpq_hftok;

/* Reads tokenizer.json at `path` and, when config is not NULL,
 * tokenizer_config.json there; the tokenizer may have at most max_size ids
 * (the model's vocab_size), checked before the tables are allocated. Errors
 * name the file, the JSON path and the problem. Owner: caller
 * (mpq_hftok_destroy). */
mpq_err mpq_hftok_load(struct mpq_ctx *ctx, const char *path, const char *config, int64_t max_size,
                       mpq_hftok **out);
void mpq_hftok_destroy(mpq_hftok **h);

/* Id of model.vocab entry s[0..len) or of an added token with that content;
 * -1 when none. */
int32_t mpq_hftok_lookup(const mpq_hftok *h, const char *s, size_t len);
/* Id of model.vocab entry s[0..len) only (what the BPE model sees). */
int32_t mpq_hftok_vocab_id(const mpq_hftok *h, const char *s, size_t len);
/* Merge rank and merged id of the pair (a, b); -1 when not a merge. */
int32_t mpq_hftok_merge(const mpq_hftok *h, int32_t a, int32_t b, int32_t *merged);

/* The ids of text[0..len) as the tokenizers library's
 * encode(text, add_special_tokens=False), preceded by bos and followed by eos
 * when these are >= 0. *ids: mpq_malloc, caller frees. */
mpq_err mpq_hftok_encode(struct mpq_ctx *ctx, const mpq_hftok *h, const char *text, size_t len,
                         int32_t bos, int32_t eos, int32_t **ids, int64_t *n);
/* decode(ids, skip_special_tokens=True). *out mpq_malloc'ed, NUL-terminated. */
mpq_err mpq_hftok_decode(struct mpq_ctx *ctx, const mpq_hftok *h, const int32_t *ids, int64_t n,
                         char **out, size_t *len);

/* ---- io_hftok_bytelevel.c ---- */

/* The shared JSON readers of io_hftok.c: an optional boolean (unchanged when
 * absent or null), a required or (opt) optional string. */
struct cJSON;
mpq_err mpq_hfjson_bool(struct mpq_ctx *ctx, const char *file, const char *where,
                        const struct cJSON *obj, const char *key, int *out);
mpq_err mpq_hfjson_str(struct mpq_ctx *ctx, const char *file, const char *where,
                       const struct cJSON *obj, const char *key, int opt, const char **out);

/* Fills bl_char and bl_byte (every tokenizer: a ByteLevel decoder needs them). */
void mpq_hftok_bytelevel_init(mpq_hftok *h);
/* The pre_tokenizer `o` (of type `type`, not Metaspace): Split, Digits,
 * ByteLevel or a Sequence of them, into h->pre. */
mpq_err mpq_hftok_parse_pre(struct mpq_ctx *ctx, const char *file, const struct cJSON *o,
                            mpq_hftok *h);
/* Releases h->pre. */
void mpq_hftok_pre_free(mpq_hftok *h);
/* The words of s[0..n) after h->pre (mapped to byte characters when
 * h->bytelevel) into w (emptied first). s must be valid UTF-8. */
mpq_err mpq_hftok_pre_words(struct mpq_ctx *ctx, const mpq_hftok *h, const char *s, size_t n,
                            mpq_hf_words *w);
void mpq_hftok_words_free(mpq_hf_words *w);
/* Whether s[0..n) is valid UTF-8 (no overlong forms, surrogates or code
 * points above U+10FFFF). */
int mpq_hftok_utf8_valid(const char *s, size_t n);
/* s[0..n) with every maximal invalid UTF-8 subpart replaced by U+FFFD (as
 * Python's bytes.decode("utf-8", "replace") and Rust's from_utf8_lossy)
 * into *buf (mpq_malloc'ed, *cap bytes, grown as needed), *outlen bytes. */
mpq_err mpq_hftok_utf8_lossy(struct mpq_ctx *ctx, const char *s, size_t n, char **buf, int64_t *cap,
                             size_t *outlen);
/* The ByteLevel decoder over strings pool[off[k] .. off[k] + len[k]), k <
 * n: each string's characters mapped back to bytes (a string with a
 * character outside the mapping keeps its own bytes), all joined and made
 * valid UTF-8. *out: mpq_malloc, NUL-terminated. */
mpq_err mpq_hftok_bytelevel_decode(struct mpq_ctx *ctx, const mpq_hftok *h, const char *pool,
                                   const int64_t *off, const int64_t *len, int64_t n, char **out,
                                   size_t *outlen);

#endif
