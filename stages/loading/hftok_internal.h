/* hftok_internal.h: the Hugging Face tokenizer.json reader behind
 * mpq_tokenizer (kind "hf-bpe"). io_hftok.c parses the file into this
 * structure, io_hftok_enc.c encodes and decodes with it. Everything is local.
 *
 * Supported (the SentencePiece-converted BPE of the Llama-2 family):
 *  - model: BPE with vocab, merges ("a b" strings or ["a", "b"] pairs; the
 *    rank is the position), unk_token, fuse_unk, byte_fallback,
 *    ignore_merges; dropout null, no continuing_subword_prefix or
 *    end_of_word_suffix;
 *  - normalizer: null, Prepend, Replace (String pattern), or a Sequence of
 *    them;
 *  - pre_tokenizer: null or Metaspace (replacement, prepend_scheme
 *    first/always/never or the older add_prefix_space, split);
 *  - added_tokens: matched in the raw text, leftmost then longest, with
 *    lstrip/rstrip; normalized or single_word tokens are refused;
 *  - decoder: null, Replace, ByteFallback, Fuse, Strip, Metaspace, or a
 *    Sequence of them;
 *  - post_processor: only read for the BOS/EOS of a TemplateProcessing.
 * Anything else is refused naming the component (ByteLevel, Split, Digits,
 * WordPiece, Unigram, ...). */
#ifndef MPQ_HFTOK_INTERNAL_H
#define MPQ_HFTOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

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
} mpq_hf_op;

typedef struct {
    mpq_hf_op op;
    char *a, *b;    /* NUL-terminated, owned */
    int64_t n0, n1; /* HF_STRIP counts */
    int prepend;    /* HF_METASPACE: prepend_scheme != never */
} mpq_hf_step;

typedef enum { HF_PREPEND_ALWAYS, HF_PREPEND_FIRST, HF_PREPEND_NEVER } mpq_hf_scheme;

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
    int has_decoder;
    int metaspace; /* pre_tokenizer Metaspace */
    char *ms_repl; /* its replacement (NUL-terminated, owned) */
    mpq_hf_scheme ms_scheme;
    int ms_split;
    int32_t bos, eos; /* -1 when none */
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

#endif
