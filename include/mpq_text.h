/* mpq_text.h: plain-text corpora for evaluation and calibration: reading a
 * text file, splitting it into documents, tokenizing documents.
 *
 * Document protocol (shared/README.md, perplexity): the text is split at
 * blank lines (one or more lines that are empty or hold only spaces, tabs
 * or carriage returns, as WikiText-2's " " separator lines do); leading and
 * trailing newlines of each piece are stripped (a document runs from the
 * start of its first line to the end of its last line); empty pieces are
 * skipped. All functions are local.
 */
#ifndef MPQ_TEXT_H
#define MPQ_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_err.h"

struct mpq_ctx;
struct mpq_tokenizer;

/* A document: text[begin .. begin + len). */
typedef struct mpq_span {
    int64_t begin;
    int64_t len;
} mpq_span;

/* Reads the whole file into *text (mpq_malloc, NUL-terminated, caller
 * frees with mpq_free); *len bytes without the NUL. */
mpq_err mpq_text_read(struct mpq_ctx *ctx, const char *path, char **text, int64_t *len);

/* Splits text[0..len) into at most max_docs documents (max_docs <= 0: all).
 * *docs (mpq_malloc, caller frees) holds *ndocs spans. */
mpq_err mpq_text_split_docs(struct mpq_ctx *ctx, const char *text, int64_t len, int64_t max_docs,
                            mpq_span **docs, int64_t *ndocs);

/* Encodes every document with the tokenizer (llama2.c: BOS, dummy leading
 * space; Hugging Face: BOS first when mpq_tokenizer_add_bos), no EOS, and
 * truncates it to max_tokens tokens (<= 0: no limit). The tokens of
 * document i are tokens[offsets[i] .. offsets[i + 1]); *offsets has
 * ndocs + 1 entries. Both arrays mpq_malloc'ed, caller frees. */
mpq_err mpq_text_encode_docs(struct mpq_ctx *ctx, const struct mpq_tokenizer *tok, const char *text,
                             const mpq_span *docs, int64_t ndocs, int64_t max_tokens,
                             int32_t **tokens, int64_t **offsets);

#endif
