/* test_io_naive_bpe.c: see test_io_naive_bpe.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_io_naive_bpe.h"

static const naive_bpe *g_sort_vocab; /* qsort has no user pointer; test code only */

static int cmp_ids(const void *a, const void *b) {
    return strcmp(g_sort_vocab->vocab[*(const int *)a], g_sort_vocab->vocab[*(const int *)b]);
}

int naive_bpe_load(naive_bpe *t, const char *path, int vocab_size) {
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    t->n = vocab_size;
    t->vocab = calloc((size_t)vocab_size, sizeof *t->vocab);
    t->scores = calloc((size_t)vocab_size, sizeof *t->scores);
    t->sorted = calloc((size_t)vocab_size, sizeof *t->sorted);
    int rc = fread(&t->max_len, 4, 1, f) == 1 ? 0 : -1;
    for (int i = 0; i < vocab_size && rc == 0; i++) {
        int len = 0;
        if (fread(&t->scores[i], 4, 1, f) != 1 || fread(&len, 4, 1, f) != 1 || len < 0) {
            rc = -1;
            break;
        }
        t->vocab[i] = calloc((size_t)len + 1, 1);
        if (fread(t->vocab[i], 1, (size_t)len, f) != (size_t)len)
            rc = -1;
        t->sorted[i] = i;
    }
    fclose(f);
    if (rc == 0) {
        g_sort_vocab = t;
        qsort(t->sorted, (size_t)t->n, sizeof *t->sorted, cmp_ids);
    }
    return rc;
}

void naive_bpe_free(naive_bpe *t) {
    for (int i = 0; t->vocab && i < t->n; i++)
        free(t->vocab[i]);
    free(t->vocab);
    free(t->scores);
    free(t->sorted);
    memset(t, 0, sizeof *t);
}

/* Binary search of the sorted ids; -1 when absent. */
static int lookup(const naive_bpe *t, const char *s) {
    int lo = 0, hi = t->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(s, t->vocab[t->sorted[mid]]);
        if (c == 0)
            return t->sorted[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

int naive_bpe_encode(const naive_bpe *t, const char *text, size_t len, int bos, int eos,
                     int *tokens) {
    char *buf = malloc((size_t)t->max_len * 2 + 3);
    int n = 0;
    if (bos)
        tokens[n++] = 1;
    if (len > 0)
        tokens[n++] = lookup(t, " ");
    size_t blen = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c & 0xC0) != 0x80)
            blen = 0; /* a new code point starts */
        buf[blen++] = (char)c;
        buf[blen] = '\0';
        int more = i + 1 < len && (((unsigned char)text[i + 1]) & 0xC0) == 0x80;
        if (more && blen < 4)
            continue;
        int id = lookup(t, buf);
        if (id >= 0) {
            tokens[n++] = id;
        } else {
            for (size_t k = 0; k < blen; k++)
                tokens[n++] = (unsigned char)buf[k] + 3;
        }
        blen = 0;
    }
    for (;;) {
        float best = -1e10f;
        int best_id = -1, best_at = -1;
        for (int i = 0; i + 1 < n; i++) {
            snprintf(buf, (size_t)t->max_len * 2 + 3, "%s%s", t->vocab[tokens[i]],
                     t->vocab[tokens[i + 1]]);
            int id = lookup(t, buf);
            if (id >= 0 && t->scores[id] > best) {
                best = t->scores[id];
                best_id = id;
                best_at = i;
            }
        }
        if (best_at < 0)
            break;
        tokens[best_at] = best_id;
        memmove(tokens + best_at + 1, tokens + best_at + 2,
                (size_t)(n - best_at - 2) * sizeof *tokens);
        n--;
    }
    if (eos)
        tokens[n++] = 2;
    free(buf);
    return n;
}
