/* mpq_tokenizer.h: tokenizers, of two kinds, chosen by mpq_tokenizer_load
 * from the path. Merges are driven by a heap: encoding is O(n log n) in the
 * length of a word (llama2.c: of the text). All functions are local.
 *
 * "llama2c": llama2.c's tokenizer.bin, encoding and decoding exactly as
 * llama2.c's run.c does. int32 max_token_length, then for each of
 * vocab_size tokens float32 score, int32 len, len bytes (no terminator).
 * The file does not store vocab_size: it comes from the model and the file
 * must hold exactly that many entries. Ids 0, 1, 2 are <unk>, <s> (BOS),
 * </s> (EOS); byte b falls back to id b + 3; sequences start with BOS.
 *
 * "hf-bpe": a Hugging Face tokenizer.json (with tokenizer_config.json from
 * the same directory when there is one), giving the ids of the tokenizers
 * library's encode(text, add_special_tokens=False). Supported: the
 * SentencePiece-converted BPE of the Llama-2 family (TinyLlama, Phi-3, ...)
 * and byte-level BPE (GPT-2, SmolLM2, Llama 3, OLMo 2, ...): model BPE
 * (vocab, merges as "a b" or ["a", "b"], unk_token, fuse_unk,
 * byte_fallback, ignore_merges); normalizer null, Prepend, Replace or a
 * Sequence of them; pre_tokenizer null, Metaspace (prepend_scheme
 * first/always/never, split), or Split (Regex or String pattern, behavior
 * Isolated, Removed, MergedWithPrevious, MergedWithNext or Contiguous,
 * invert) and Digits (individual_digits) steps optionally followed by one
 * ByteLevel (add_prefix_space, use_regex: the GPT-2 pattern), alone or in a
 * Sequence; added_tokens (special or not, matched in the raw text before
 * normalization, the longest at the leftmost position, never split,
 * lstrip/rstrip); decoder Replace, ByteFallback, Fuse, Strip, Metaspace,
 * ByteLevel or a Sequence of them. Regular expressions are PCRE2's, with \s
 * read as Unicode White_Space and (?i) ASCII-only, as the library's
 * Oniguruma reads these patterns. The file's padding and truncation are not
 * applied. Refused, naming the component: other model types (WordPiece,
 * Unigram, WordLevel), BPE dropout or subword prefixes/suffixes, other
 * pre-tokenizers (Whitespace, ByteLevel before another step, ...), Unicode
 * normalizers (NFC, NFKC, ...: not implemented) and other normalizers and
 * decoders, Regex patterns of Replace, added tokens that are `normalized`
 * or `single_word`.
 * The tokenizer has max id + 1 ids over model.vocab and added_tokens, at most
 * the model's vocab_size (embeddings are often padded). BOS/EOS:
 * tokenizer_config.json's bos_token/eos_token, else the special tokens
 * before/after the sequence in a TemplateProcessing post-processor's
 * `single` template (or that of the first TemplateProcessing of a Sequence
 * post-processor, as in Llama 3), else none; add_bos: add_bos_token, else
 * whether that template puts the BOS first, else 0. Decoding skips special
 * added tokens (skip_special_tokens=True).
 */
#ifndef MPQ_TOKENIZER_H
#define MPQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_err.h"

struct mpq_ctx;

/* llama2.c's fixed ids; code should ask mpq_tokenizer_bos/eos. */
#define MPQ_TOKEN_BOS 1
#define MPQ_TOKEN_EOS 2

typedef struct mpq_tokenizer mpq_tokenizer;

typedef enum { MPQ_TOKENIZER_LLAMA2C, MPQ_TOKENIZER_HF_BPE } mpq_tokenizer_kind;

/* Reads `path`: a Hugging Face tokenizer when it is a directory holding
 * tokenizer.json, a file named *.json or one that opens a JSON object ('{'
 * then '"' or '}', blanks aside); else llama2.c's tokenizer.bin (exactly vocab_size entries).
 * Errors name the file, the entry or JSON path and the problem (llama2.c: truncated, negative or
 * too long a length, trailing bytes; Hugging Face: malformed or truncated JSON, unknown merge
 * sides, unsupported components, more ids than vocab_size). Owner: caller (mpq_tokenizer_destroy).
 */
mpq_err mpq_tokenizer_load(struct mpq_ctx *ctx, const char *path, int64_t vocab_size,
                           mpq_tokenizer **out);
/* NULL-safe; sets *t to NULL. */
void mpq_tokenizer_destroy(mpq_tokenizer **t);

mpq_tokenizer_kind mpq_tokenizer_get_kind(const mpq_tokenizer *t);
/* "llama2c" or "hf-bpe". */
const char *mpq_tokenizer_kind_name(const mpq_tokenizer *t);
/* 1 for a byte-level Hugging Face tokenizer (a ByteLevel pre-tokenizer:
 * its vocabulary strings spell bytes as GPT-2 characters, "Ġthe" for
 * " the"), else 0. Writers of other tokenizer formats need to know. */
int mpq_tokenizer_byte_level(const mpq_tokenizer *t);
/* Local. 1 when path looks like a Hugging Face tokenizer: a directory, a
 * regular file named *.json, or one that opens a JSON object ('{' then '"'
 * or '}', blanks aside: no llama2.c file can); 0 otherwise (a FIFO or
 * device is not read). */
int mpq_tokenizer_looks_hf(const char *path);
/* BOS and EOS ids, -1 when the tokenizer has none (llama2.c: 1 and 2).
 * t may be NULL (a language model used without a tokenizer, e.g. random or
 * generated calibration): then llama2.c's convention, 1 and 2. */
int32_t mpq_tokenizer_bos(const mpq_tokenizer *t);
int32_t mpq_tokenizer_eos(const mpq_tokenizer *t);
/* Whether sequences start with BOS (llama2.c: 1; t NULL: 1). */
int mpq_tokenizer_add_bos(const mpq_tokenizer *t);

/* The number of ids (Hugging Face: max id + 1, <= the model's). */
int64_t mpq_tokenizer_vocab_size(const mpq_tokenizer *t);
int64_t mpq_tokenizer_max_token_length(const mpq_tokenizer *t);
/* The bytes of token id (NUL-terminated; *len without the NUL) and its
 * merge score (0 for Hugging Face, whose merges have ranks). NULL for an id
 * out of range or, Hugging Face, an id no entry names. */
const char *mpq_tokenizer_token(const mpq_tokenizer *t, int32_t id, size_t *len);
float mpq_tokenizer_score(const mpq_tokenizer *t, int32_t id);
/* Id of the token whose bytes are exactly s[0..len), or -1. When the
 * vocabulary holds duplicates, the lowest id. Hugging Face: model.vocab,
 * then the added tokens. */
int32_t mpq_tokenizer_lookup(const mpq_tokenizer *t, const char *s, size_t len);

/* Hugging Face: BOS if `bos` (and the tokenizer has one), the ids of the
 * tokenizers library's encode(text, add_special_tokens=False), EOS if `eos`
 * (and there is one); text should be UTF-8: with a Split, Digits or
 * ByteLevel pre-tokenizer each maximal invalid UTF-8 subpart is first
 * replaced by U+FFFD (the ids of the library on Python's
 * bytes.decode("utf-8", "replace")), else an invalid byte is a character of
 * its own. llama2.c:
 * Encodes text[0..len) as llama2.c's encode(): BOS if `bos`, a dummy " "
 * token if len > 0, one token per UTF-8 code point found in the vocabulary
 * (else one byte-fallback token per byte), then repeatedly the adjacent
 * pair whose concatenation is a token with the highest score (ties: the
 * leftmost) is merged; EOS if `eos`. A NUL byte in text is an ordinary byte
 * (llama2.c would stop there). *tokens (mpq_malloc, caller frees with
 * mpq_free) holds *n ids. */
mpq_err mpq_tokenizer_encode(struct mpq_ctx *ctx, const mpq_tokenizer *t, const char *text,
                             size_t len, int bos, int eos, int32_t **tokens, int64_t *n);

/* The bytes that token `id` prints after token `prev`, as llama2.c's
 * decode(): the leading space is dropped after BOS, "<0xXX>" tokens give
 * the raw byte (Hugging Face: the vocabulary string, "<0xXX>" the byte; use
 * mpq_tokenizer_decode for text). Points into t, or into *byte for a raw byte. NULL for an
 * id out of range. */
const char *mpq_tokenizer_piece(const mpq_tokenizer *t, int32_t prev, int32_t id,
                                unsigned char *byte, size_t *len);

/* Concatenates the pieces of tokens[0..n) (the first one after BOS when
 * `after_bos`, else as if preceded by an ordinary token). Hugging Face:
 * the tokenizers library's decode(ids, skip_special_tokens=True) through
 * the file's decoder; after_bos is ignored. *out is
 * mpq_malloc'ed and NUL-terminated, *len excludes the NUL. An id out of
 * range is an error. */
mpq_err mpq_tokenizer_decode(struct mpq_ctx *ctx, const mpq_tokenizer *t, const int32_t *tokens,
                             int64_t n, int after_bos, char **out, size_t *len);

#endif
