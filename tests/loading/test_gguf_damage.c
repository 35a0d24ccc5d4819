/* test_gguf_damage.c: damaged GGUF files are refused cleanly.
 *
 * test_gguf_damage BASE.gguf DATA_OFFSET WORKDIR [ITERATIONS]: BASE must
 * open; DATA_OFFSET is where its data section starts. Then, in this
 * process, a copy in WORKDIR is damaged and opened (format "gguf") again and
 * again (ITERATIONS times, default 20000): 1 to 4 bytes of the header region
 * (the key-value pairs and tensor infos, before DATA_OFFSET) set to random
 * or boundary values, and truncation at every length of the header region plus 64
 * lengths inside the data. Every open must either succeed or fail with
 * MPQ_ERR_FORMAT and a message naming the file; nothing may read past the
 * mapping (run it under valgrind or a sanitizer build to see that too).
 * Prints the counts; mpq_test_finish prints PASSED or FAILED.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq_err.h"
#include "mpq_model.h"
#include "mpq_test.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static int write_file(const char *path, const unsigned char *p, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, p, n);
    close(fd);
    return w == (ssize_t)n ? 0 : -1;
}

typedef struct {
    long opened, refused, bad;
} tally;

/* Opens path; counts the outcome, printing the first few bad ones. */
static void try_open(mpq_ctx *ctx, const char *path, const char *what, tally *t) {
    mpq_model *m = NULL;
    mpq_err e = mpq_model_open(ctx, path, "gguf", &m);
    if (e == MPQ_OK) {
        t->opened++;
        mpq_model_close(&m);
    } else if (e == MPQ_ERR_FORMAT && strstr(mpq_err_message(ctx), path)) {
        t->refused++;
    } else {
        if (t->bad++ < 10)
            fprintf(stderr, "FAIL: %s: %s: %s\n", what, mpq_err_name(e), mpq_err_message(ctx));
    }
    mpq_err_clear(ctx);
}

static long damage(mpq_ctx *ctx, const unsigned char *base, size_t size, size_t hdr,
                   const char *path, long iters) {
    static const unsigned char special[] = {0x00, 0xff, 0x7f, 0x80, 0x01, 0x20, 0x40, 0xfe};
    unsigned char *buf = malloc(size);
    if (!buf || write_file(path, base, size) != 0) {
        fprintf(stderr, "FAIL: cannot write %s: %s\n", path, strerror(errno));
        free(buf);
        return 1;
    }
    tally t = {0, 0, 0};
    int fd = open(path, O_WRONLY);
    for (long i = 0; i < iters && fd >= 0; i++) {
        size_t off[4];
        int n = 1 + (int)(rnd() % 4);
        for (int k = 0; k < n; k++) {
            off[k] = (size_t)(rnd() % hdr);
            unsigned char v = rnd() % 2 ? special[rnd() % sizeof special] : (unsigned char)rnd();
            if (pwrite(fd, &v, 1, (off_t)off[k]) != 1)
                t.bad++;
        }
        char what[64];
        snprintf(what, sizeof what, "mutation %ld", i);
        try_open(ctx, path, what, &t);
        for (int k = 0; k < n; k++)
            if (pwrite(fd, base + off[k], 1, (off_t)off[k]) != 1)
                t.bad++;
    }
    if (fd >= 0)
        close(fd);
    /* every header length, then 64 lengths spread over the data */
    for (size_t len = 0; len < size; len = len < hdr ? len + 1 : len + (size - hdr) / 64 + 1) {
        memcpy(buf, base, size);
        if (write_file(path, buf, len) != 0) {
            t.bad++;
            break;
        }
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes", len);
        try_open(ctx, path, what, &t);
    }
    printf("%ld damaged files opened, %ld refused with a message naming the file, %ld bad\n",
           t.opened, t.refused, t.bad);
    free(buf);
    return t.bad;
}

int main(int argc, char **argv) {
    mpq_ctx *ctx = mpq_test_init(&argc, &argv);
    if (argc < 4) {
        fprintf(stderr, "usage: %s BASE.gguf DATA_OFFSET WORKDIR [ITERATIONS]\n", argv[0]);
        return mpq_test_finish(&ctx, 1);
    }
    const long iters = argc > 4 ? atol(argv[4]) : 20000;
    const long data_offset = atol(argv[2]);
    long failures = 0;
    unsigned char *base = NULL;
    size_t size = 0;
    mpq_model *m = NULL;
    if (mpq_model_open(ctx, argv[1], "gguf", &m) != MPQ_OK) {
        fprintf(stderr, "FAIL: %s does not open: %s\n", argv[1], mpq_err_message(ctx));
        return mpq_test_finish(&ctx, 1);
    }
    mpq_model_close(&m);
    FILE *f = fopen(argv[1], "rb");
    if (f && fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        size = n > 0 ? (size_t)n : 0;
        rewind(f);
        base = malloc(size ? size : 1);
        if (!base || fread(base, 1, size, f) != size)
            size = 0;
    }
    if (f)
        fclose(f);
    if (size < 24 || data_offset < 24 || (size_t)data_offset > size) {
        fprintf(stderr, "FAIL: cannot read %s, or data offset %ld outside it\n", argv[1],
                data_offset);
        failures = 1;
    } else {
        char path[4096];
        snprintf(path, sizeof path, "%s/damaged.gguf", argv[3]);
        failures = damage(ctx, base, size, (size_t)data_offset, path, iters);
    }
    free(base);
    return mpq_test_finish(&ctx, failures != 0);
}
