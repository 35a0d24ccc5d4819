/* mpq_tokenizer.h: the llama2.c BPE tokenizer (tokenizer.bin), encoding and
 * decoding exactly as llama2.c's run.c does, with merges driven by a heap so
 * that encoding is O(n log n) in the text length.
 *
 * tokenizer.bin: int32 max_token_length, then for each of vocab_size tokens
 * float32 score, int32 len, len bytes (no terminator). The file does not
 * store vocab_size: it comes from the model and the file must hold exactly
 * that many entries. Ids 0, 1, 2 are <unk>, <s> (BOS), </s> (EOS); byte b
 * falls back to id b + 3. All functions are local.
 */
#ifndef MPQ_TOKENIZER_H
#define MPQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_err.h"

struct mpq_ctx;

#define MPQ_TOKEN_BOS 1
#define MPQ_TOKEN_EOS 2

typedef struct mpq_tokenizer mpq_tokenizer;

/* Reads `path` (vocab_size entries). Errors name the file, the entry and the
 * problem (truncated, negative or too long a length, trailing bytes).
 * Owner: caller (mpq_tokenizer_destroy). */
mpq_err mpq_tokenizer_load(struct mpq_ctx *ctx, const char *path, int64_t vocab_size,
                           mpq_tokenizer **out);
/* NULL-safe; sets *t to NULL. */
void mpq_tokenizer_destroy(mpq_tokenizer **t);

int64_t mpq_tokenizer_vocab_size(const mpq_tokenizer *t);
int64_t mpq_tokenizer_max_token_length(const mpq_tokenizer *t);
/* The bytes of token id (NUL-terminated; *len without the NUL) and its
 * merge score. NULL for an id out of range. */
const char *mpq_tokenizer_token(const mpq_tokenizer *t, int32_t id, size_t *len);
float mpq_tokenizer_score(const mpq_tokenizer *t, int32_t id);
/* Id of the token whose bytes are exactly s[0..len), or -1. When the
 * vocabulary holds duplicates, the lowest id. */
int32_t mpq_tokenizer_lookup(const mpq_tokenizer *t, const char *s, size_t len);

/* Encodes text[0..len) as llama2.c's encode(): BOS if `bos`, a dummy " "
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
 * the raw byte. Points into t, or into *byte for a raw byte. NULL for an
 * id out of range. */
const char *mpq_tokenizer_piece(const mpq_tokenizer *t, int32_t prev, int32_t id,
                                unsigned char *byte, size_t *len);

/* Concatenates the pieces of tokens[0..n) (the first one after BOS when
 * `after_bos`, else as if preceded by an ordinary token). *out is
 * mpq_malloc'ed and NUL-terminated, *len excludes the NUL. An id out of
 * range is an error. */
mpq_err mpq_tokenizer_decode(struct mpq_ctx *ctx, const mpq_tokenizer *t, const int32_t *tokens,
                             int64_t n, int after_bos, char **out, size_t *len);

#endif
