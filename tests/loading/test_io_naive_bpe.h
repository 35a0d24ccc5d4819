/* test_io_naive_bpe.h: a deliberately simple reference of llama2.c's BPE
 * encoder, written independently of the library: its own tokenizer.bin
 * parser, a sorted vocabulary searched with bsearch/strcmp, and the O(n^2)
 * merge loop that rescans every adjacent pair after each merge. Used to pin
 * the fast encoder (tests) and as the baseline of the benchmark. */
#ifndef TEST_IO_NAIVE_BPE_H
#define TEST_IO_NAIVE_BPE_H

#include <stddef.h>

typedef struct naive_bpe {
    int n;         /* vocab size */
    int max_len;   /* max_token_length */
    char **vocab;  /* [n] NUL-terminated */
    float *scores; /* [n] */
    int *sorted;   /* [n] ids sorted by strcmp of their strings */
} naive_bpe;

/* 0 on success. */
int naive_bpe_load(naive_bpe *t, const char *path, int vocab_size);
void naive_bpe_free(naive_bpe *t);
/* tokens must hold len + 3 entries; returns the count. */
int naive_bpe_encode(const naive_bpe *t, const char *text, size_t len, int bos, int eos,
                     int *tokens);

#endif
