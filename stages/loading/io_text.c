/* io_text.c: text files, the document splitter and document tokenization
 * (see mpq_text.h for the protocol). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "mpq_infile.h"
#include "mpq_ctx.h"
#include "mpq_text.h"
#include "mpq_tokenizer.h"

mpq_err mpq_text_read(mpq_ctx *ctx, const char *path, char **text, int64_t *len) {
    mpq_err err = MPQ_OK;
    char *buf = NULL;
    *text = NULL;
    *len = 0;
    FILE *f = NULL;
    MPQ_CALL(mpq_infile_fopen(ctx, path, NULL, &f));
    struct stat st;
    MPQ_ENSURE(fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode), MPQ_ERR_IO,
               "%s: not a regular file", path);
    int64_t n = (int64_t)st.st_size;
    MPQ_TRY(mpq_malloc(ctx, n + 1, 1, (void **)&buf));
    MPQ_ENSURE(fread(buf, 1, (size_t)n, f) == (size_t)n, MPQ_ERR_IO, "%s: read failed: %s", path,
               strerror(errno));
    buf[n] = '\0';
    *text = buf;
    *len = n;
    buf = NULL;
cleanup:
    mpq_free(buf);
    fclose(f);
    return err;
}

/* A line holding only spaces, tabs or carriage returns (or nothing). */
static int blank_line(const char *s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

mpq_err mpq_text_split_docs(mpq_ctx *ctx, const char *text, int64_t len, int64_t max_docs,
                            mpq_span **docs, int64_t *ndocs) {
    *docs = NULL;
    *ndocs = 0;
    MPQ_CHECK(len >= 0, MPQ_ERR_ARG, "text length %lld is negative", (long long)len);
    /* Pass 1 counts, pass 2 fills: no reallocation. A document is a maximal
     * run of non-blank lines, from the start of its first line to the end of
     * its last line (without the newline). */
    mpq_span *out = NULL;
    for (int pass = 0; pass < 2; pass++) {
        int64_t n = 0, i = 0, begin = -1, end = -1;
        while (i < len && (max_docs <= 0 || n < max_docs)) {
            int64_t j = i;
            while (j < len && text[j] != '\n')
                j++;
            if (!blank_line(text + i, j - i)) {
                if (begin < 0)
                    begin = i;
                end = j;
            } else if (begin >= 0) {
                if (pass == 1)
                    out[n] = (mpq_span){.begin = begin, .len = end - begin};
                n++;
                begin = -1;
            }
            i = j + 1;
        }
        if (begin >= 0 && (max_docs <= 0 || n < max_docs)) {
            if (pass == 1)
                out[n] = (mpq_span){.begin = begin, .len = end - begin};
            n++;
        }
        if (pass == 0)
            MPQ_CALL(mpq_malloc(ctx, n, sizeof *out, (void **)&out));
        else
            *ndocs = n;
    }
    *docs = out;
    return MPQ_OK;
}

mpq_err mpq_text_encode_docs(mpq_ctx *ctx, const mpq_tokenizer *tok, const char *text,
                             const mpq_span *docs, int64_t ndocs, int64_t max_tokens,
                             int32_t **tokens, int64_t **offsets) {
    mpq_err err = MPQ_OK;
    int32_t *all = NULL, *one = NULL;
    int64_t *off = NULL;
    *tokens = NULL;
    *offsets = NULL;
    MPQ_ALLOC_TRY(off, ndocs + 1);
    int64_t cap = 0, used = 0;
    for (int64_t d = 0; d < ndocs; d++) {
        int64_t n = 0;
        MPQ_TRY(mpq_tokenizer_encode(ctx, tok, text + docs[d].begin, (size_t)docs[d].len,
                                     mpq_tokenizer_add_bos(tok), 0, &one, &n));
        if (max_tokens > 0 && n > max_tokens)
            n = max_tokens;
        if (used + n > cap) {
            int64_t ncap = cap ? cap : 1024;
            while (ncap < used + n)
                ncap *= 2;
            MPQ_TRY(mpq_realloc(ctx, cap, ncap, sizeof *all, (void **)&all));
            cap = ncap;
        }
        memcpy(all + used, one, (size_t)n * sizeof *one);
        MPQ_FREE(one);
        off[d] = used;
        used += n;
    }
    off[ndocs] = used;
    if (!all) /* no documents: still hand back a valid (empty) array */
        MPQ_ALLOC_TRY(all, 1);
    *tokens = all;
    *offsets = off;
    all = NULL;
    off = NULL;
cleanup:
    mpq_free(one);
    mpq_free(all);
    mpq_free(off);
    return err;
}
