/* bench_io_tokenizer.c: encoding speed of the llama2.c tokenizer on the
 * whole of tinyshakespeare (about 1.1 MB, one string), against the naive
 * O(n^2) reference encoder measured in the same run on a prefix. Prints
 * JSON lines; the speed is reported as a ratio to the reference.
 * Usage: bench_io_tokenizer [NAIVE_PREFIX_BYTES] (default 8192) */
#include <stdio.h>
#include <stdlib.h>

#include "mpq_test.h"
#include "mpq_text.h"
#include "mpq_tokenizer.h"
#include "test_io_naive_bpe.h"

int main(int argc, char **argv) {
    mpq_ctx *ctx = mpq_test_init(&argc, &argv);
    long prefix = argc > 1 ? atol(argv[1]) : 8192;
    char tp[4096], xp[4096];
    mpq_test_shared("data/models/stories260K/tok512.bin", tp, sizeof tp);
    mpq_test_shared("data/text/tinyshakespeare.txt", xp, sizeof xp);
    mpq_tokenizer *t = NULL;
    char *text = NULL;
    int64_t len = 0;
    int fail = mpq_tokenizer_load(ctx, tp, 512, &t) != MPQ_OK ||
               mpq_text_read(ctx, xp, &text, &len) != MPQ_OK;
    naive_bpe nb;
    fail = fail || naive_bpe_load(&nb, tp, 512) != 0;
    if (fail || ctx->rank != 0) {
        if (fail)
            fprintf(stderr, "bench_io_tokenizer: setup failed: %s\n", ctx->err_msg);
        mpq_tokenizer_destroy(&t);
        mpq_free(text);
        return mpq_test_finish(&ctx, fail);
    }
    if (prefix > len)
        prefix = (long)len;
    /* fast encoder: whole file, and the prefix (for a like-for-like ratio) */
    int32_t *tok = NULL;
    int64_t n = 0;
    double t0 = mpq_now();
    fail |= mpq_tokenizer_encode(ctx, t, text, (size_t)len, 1, 0, &tok, &n) != MPQ_OK;
    double fast_full = mpq_now() - t0;
    mpq_free(tok);
    int64_t np = 0;
    t0 = mpq_now();
    fail |= mpq_tokenizer_encode(ctx, t, text, (size_t)prefix, 1, 0, &tok, &np) != MPQ_OK;
    double fast_prefix = mpq_now() - t0;
    /* reference on the prefix only: it is quadratic */
    int *ref = malloc((size_t)(prefix + 3) * sizeof *ref);
    t0 = mpq_now();
    int nr = naive_bpe_encode(&nb, text, (size_t)prefix, 1, 0, ref);
    double naive_prefix = mpq_now() - t0;
    int same = nr == np;
    for (int64_t i = 0; same && i < np; i++)
        same = ref[i] == tok[i];
    fail |= !same;
    printf("{\"bench\":\"tokenizer_encode\",\"impl\":\"heap\",\"bytes\":%lld,\"tokens\":%lld,"
           "\"seconds\":%.6f,\"mb_per_s\":%.3f}\n",
           (long long)len, (long long)n, fast_full, (double)len / 1e6 / fast_full);
    printf("{\"bench\":\"tokenizer_encode_prefix\",\"bytes\":%ld,\"tokens\":%lld,"
           "\"heap_seconds\":%.6f,\"naive_seconds\":%.6f,\"speedup_vs_naive\":%.1f,"
           "\"identical\":%s}\n",
           prefix, (long long)np, fast_prefix, naive_prefix, naive_prefix / fast_prefix,
           same ? "true" : "false");
    /* the naive cost grows with the square of the length */
    double naive_full_est =
        naive_prefix * ((double)len / (double)prefix) * ((double)len / (double)prefix);
    printf("{\"bench\":\"tokenizer_encode_full_estimate\",\"bytes\":%lld,\"heap_seconds\":%.6f,"
           "\"naive_seconds_extrapolated\":%.1f,\"speedup_vs_naive\":%.0f}\n",
           (long long)len, fast_full, naive_full_est, naive_full_est / fast_full);
    free(ref);
    mpq_free(tok);
    naive_bpe_free(&nb);
    mpq_free(text);
    mpq_tokenizer_destroy(&t);
    return mpq_test_finish(&ctx, fail);
}
