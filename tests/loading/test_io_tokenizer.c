/* test_io_tokenizer.c: the llama2.c tokenizer and the document protocol.
 *  - identical token ids to an independent O(n^2) reference (test_io_naive_bpe)
 *    on 4,000 random substrings of up to 192 bytes (cut anywhere, even inside
 *    UTF-8 sequences, with and without BOS/EOS) and on 260 whole documents
 *    (up to 2 KB) of tinyshakespeare and wikitext-2;
 *  - decode(encode(text)) gives the text back;
 *  - the first 500 tinyshakespeare documents give 41,817 predictions
 *    (shared/README.md reference);
 *  - the document splitter against a line-based reference;
 *  - malformed tokenizer files are rejected with their specific error. */
#include <math.h>
#include <stdlib.h>

#include "mpq_text.h"
#include "mpq_tokenizer.h"
#include "test_io_naive_bpe.h"
#include "test_io_util.h"
#include "tiny_writer.h"

static mpq_ctx *g_ctx;
static char g_tok_path[4096];

static mpq_tokenizer *load_tok(void) {
    mpq_ctx *ctx = g_ctx;
    mpq_tokenizer *t = NULL;
    mpq_test_shared("data/models/stories260K/tok512.bin", g_tok_path, sizeof g_tok_path);
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, g_tok_path, 512, &t));
    return t;
}

/* Encodes with both implementations and compares; also checks decoding. */
static void check_same(mpq_ctx *ctx, const mpq_tokenizer *t, const naive_bpe *nb, const char *text,
                       size_t len, int bos, int eos, int *scratch) {
    int32_t *a = NULL;
    int64_t na = 0;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, text, len, bos, eos, &a, &na));
    int nr = naive_bpe_encode(nb, text, len, bos, eos, scratch);
    int same = na == nr;
    for (int64_t i = 0; same && i < na; i++)
        same = a[i] == scratch[i];
    if (!same)
        fail_msg("encoding of %zu bytes \"%.60s...\" differs from the reference: %lld vs %d "
                 "tokens",
                 len, text, (long long)na, nr);
    if (bos && !eos) {
        /* Skipping BOS, the pieces rebuild the text: the dummy space is dropped after BOS. */
        char *s = NULL;
        size_t sl = 0;
        MPQ_ASSERT_OK(ctx, mpq_tokenizer_decode(ctx, t, a + 1, na - 1, 1, &s, &sl));
        if (sl != len || memcmp(s, text, len) != 0)
            fail_msg("decode(encode(\"%.60s...\")) differs (%zu vs %zu bytes)", text, sl, len);
        mpq_free(s);
    }
    mpq_free(a);
}

static void identity_on(const char *rel, int nsub, int ndocs) {
    mpq_ctx *ctx = g_ctx;
    char path[4096];
    mpq_test_shared(rel, path, sizeof path);
    mpq_tokenizer *t = load_tok();
    naive_bpe nb;
    assert_int_equal(naive_bpe_load(&nb, g_tok_path, 512), 0);
    char *text = NULL;
    int64_t len = 0;
    MPQ_ASSERT_OK(ctx, mpq_text_read(ctx, path, &text, &len));
    int *scratch = malloc((size_t)(len + 3) * sizeof *scratch);
    uint64_t s = 777;
    for (int i = 0; i < nsub; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int64_t at = (int64_t)((s >> 33) % (uint64_t)len);
        int64_t n = (int64_t)((s >> 17) % 193);
        if (at + n > len)
            n = len - at;
        check_same(ctx, t, &nb, text + at, (size_t)n, (int)(s & 1), (int)((s >> 1) & 1), scratch);
    }
    mpq_span *docs = NULL;
    int64_t nd = 0;
    MPQ_ASSERT_OK(ctx, mpq_text_split_docs(ctx, text, len, 0, &docs, &nd));
    /* Whole documents up to 2 KB (the reference is quadratic). */
    int64_t checked = 0;
    for (int64_t d = 0; d < nd && checked < ndocs; d++) {
        if (docs[d].len > 2048)
            continue;
        check_same(ctx, t, &nb, text + docs[d].begin, (size_t)docs[d].len, 1, 0, scratch);
        checked++;
    }
    assert_int_equal(checked, ndocs);
    mpq_free(docs);
    free(scratch);
    mpq_free(text);
    naive_bpe_free(&nb);
    mpq_tokenizer_destroy(&t);
}

static void test_identity_shakespeare(void **state) {
    identity_on("data/text/tinyshakespeare.txt", 2000, 200);
}

static void test_identity_wikitext(void **state) {
    identity_on("data/text/wikitext2-test.txt", 2000, 60);
}

static void test_basics(void **state) {
    mpq_ctx *ctx = g_ctx;
    mpq_tokenizer *t = load_tok();
    assert_int_equal(mpq_tokenizer_vocab_size(t), 512);
    int32_t *a = NULL;
    int64_t n = 0;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, "", 0, 1, 0, &a, &n));
    assert_int_equal(n, 1);
    assert_int_equal(a[0], MPQ_TOKEN_BOS);
    mpq_free(a);
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, "", 0, 0, 1, &a, &n));
    assert_int_equal(n, 1);
    assert_int_equal(a[0], MPQ_TOKEN_EOS);
    mpq_free(a);
    /* byte fallback: U+1F600 (4 bytes) is not in the vocabulary, U+00E9 is */
    const char *emoji = "\xf0\x9f\x98\x80";
    assert_true(mpq_tokenizer_lookup(t, emoji, 4) < 0);
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, emoji, 4, 0, 0, &a, &n));
    assert_int_equal(n, 5);
    for (int k = 0; k < 4; k++)
        assert_int_equal(a[1 + k], (unsigned char)emoji[k] + 3);
    unsigned char byte;
    size_t pl = 0;
    const char *p = mpq_tokenizer_piece(t, 0, a[1], &byte, &pl);
    assert_true(pl == 1 && (unsigned char)p[0] == 0xf0);
    mpq_free(a);
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, "\xc3\xa9", 2, 0, 0, &a, &n));
    assert_int_equal(n, 2);
    assert_int_equal(a[1], mpq_tokenizer_lookup(t, "\xc3\xa9", 2));
    mpq_free(a);
    /* every id has a piece; out of range is NULL; lookup inverts token */
    for (int32_t id = 0; id < 512; id++) {
        size_t tl = 0;
        const char *s = mpq_tokenizer_token(t, id, &tl);
        assert_non_null(s);
        int32_t back = mpq_tokenizer_lookup(t, s, tl);
        assert_true(back >= 0 && back <= id);
    }
    assert_null(mpq_tokenizer_token(t, 512, NULL));
    int32_t bad[2] = {5, 900};
    char *out = NULL;
    test_io_expect(ctx, mpq_tokenizer_decode(ctx, t, bad, 2, 0, &out, &pl), MPQ_ERR_ARG, "900",
                   NULL, NULL);
    mpq_tokenizer_destroy(&t);
    assert_null(t);
    mpq_tokenizer_destroy(&t);
}

/* shared/README.md: first 500 documents, BOS + dummy space, no EOS,
 * truncated to seq_len 512 -> 41,817 predictions. */
static void test_protocol_41817(void **state) {
    mpq_ctx *ctx = g_ctx;
    char path[4096];
    mpq_test_shared("data/text/tinyshakespeare.txt", path, sizeof path);
    mpq_tokenizer *t = load_tok();
    char *text = NULL;
    int64_t len = 0;
    MPQ_ASSERT_OK(ctx, mpq_text_read(ctx, path, &text, &len));
    mpq_span *docs = NULL;
    int64_t nd = 0;
    MPQ_ASSERT_OK(ctx, mpq_text_split_docs(ctx, text, len, 500, &docs, &nd));
    assert_int_equal(nd, 500);
    int32_t *tok = NULL;
    int64_t *off = NULL;
    MPQ_ASSERT_OK(ctx, mpq_text_encode_docs(ctx, t, text, docs, nd, 512, &tok, &off));
    int64_t pred = 0;
    for (int64_t d = 0; d < nd; d++) {
        int64_t n = off[d + 1] - off[d];
        assert_true(n >= 2 && n <= 512);
        assert_int_equal(tok[off[d]], MPQ_TOKEN_BOS);
        pred += n - 1;
    }
    assert_int_equal(pred, 41817);
    mpq_free(tok);
    mpq_free(off);
    mpq_free(docs);
    mpq_free(text);
    mpq_tokenizer_destroy(&t);
}

/* Reference splitter: walk lines; a blank line (only spaces, tabs, CRs)
 * closes the current document. */
static int ref_split(const char *text, int64_t len, int64_t *b, int64_t *e, int max) {
    int n = 0;
    int64_t start = -1, end = -1, i = 0;
    while (i <= len) {
        int64_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        int blank = 1;
        for (int64_t k = i; k < j; k++)
            blank = blank && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r');
        if (blank && j < len) { /* empty line */
            if (start >= 0 && n < max) {
                b[n] = start;
                e[n++] = end;
            }
            start = -1;
        } else if (!blank) {
            if (start < 0)
                start = i;
            end = j;
        }
        i = j + 1;
    }
    if (start >= 0 && n < max) {
        b[n] = start;
        e[n++] = end;
    }
    return n;
}

static void test_splitter(void **state) {
    mpq_ctx *ctx = g_ctx;
    const char *cases[] = {"",
                           "\n\n\n",
                           "one",
                           "one\ntwo",
                           "\n\none\n\n\ntwo\nlines\n\n",
                           "a\n \nb",
                           "a\n \t\r\n\n b\n",
                           " = T = \n \n x \n",
                           "x\n\n\n\n\ny\n",
                           "\nlead\n\ntrail\n"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *s = cases[c];
        int64_t len = (int64_t)strlen(s), b[16], e[16];
        int nr = ref_split(s, len, b, e, 16);
        mpq_span *d = NULL;
        int64_t nd = 0;
        MPQ_ASSERT_OK(ctx, mpq_text_split_docs(ctx, s, len, 0, &d, &nd));
        assert_int_equal(nd, nr);
        for (int k = 0; k < nr; k++) {
            assert_int_equal(d[k].begin, b[k]);
            assert_int_equal(d[k].begin + d[k].len, e[k]);
        }
        mpq_free(d);
    }
    /* the whole of tinyshakespeare against the reference */
    char path[4096];
    mpq_test_shared("data/text/tinyshakespeare.txt", path, sizeof path);
    char *text = NULL;
    int64_t len = 0;
    MPQ_ASSERT_OK(ctx, mpq_text_read(ctx, path, &text, &len));
    int64_t *b = malloc(100000 * sizeof *b), *e = malloc(100000 * sizeof *e);
    int nr = ref_split(text, len, b, e, 100000);
    mpq_span *d = NULL;
    int64_t nd = 0;
    MPQ_ASSERT_OK(ctx, mpq_text_split_docs(ctx, text, len, 0, &d, &nd));
    assert_int_equal(nd, nr);
    for (int64_t k = 0; k < nd; k++)
        assert_true(d[k].begin == b[k] && d[k].begin + d[k].len == e[k]);
    mpq_free(d);
    free(b);
    free(e);
    mpq_free(text);
}

static void test_bad_files(void **state) {
    mpq_ctx *ctx = g_ctx;
    mpq_tokenizer *t = load_tok();
    mpq_tokenizer_destroy(&t);
    char dir[4096], bad[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    snprintf(bad, sizeof bad, "%s/tok.bin", dir);
    /* wrong vocabulary size: entries left over, or missing */
    test_io_expect(ctx, mpq_tokenizer_load(ctx, g_tok_path, 511, &t), MPQ_ERR_FORMAT, g_tok_path,
                   "trailing bytes", NULL);
    test_io_expect(ctx, mpq_tokenizer_load(ctx, g_tok_path, 513, &t), MPQ_ERR_FORMAT, g_tok_path,
                   "truncated at token 512", NULL);
    test_io_expect(ctx, mpq_tokenizer_load(ctx, g_tok_path, 100, &t), MPQ_ERR_ARG, "100", NULL,
                   NULL);
    /* a huge vocab_size is refused from the file size, before any allocation */
    test_io_expect(ctx, mpq_tokenizer_load(ctx, g_tok_path, 2000000000, &t), MPQ_ERR_FORMAT,
                   g_tok_path, "cannot hold", NULL);
    assert_null(t);
    /* truncated inside an entry */
    assert_int_equal(tw_copy_prefix(g_tok_path, bad, 1000), 0);
    test_io_expect(ctx, mpq_tokenizer_load(ctx, bad, 512, &t), MPQ_ERR_FORMAT, bad, "truncated",
                   NULL);
    /* a negative length and a length above max_token_length in entry 0 */
    int32_t neg = -1, big = 1000;
    assert_int_equal(tw_copy_prefix(g_tok_path, bad, -1), 0);
    FILE *f = fopen(bad, "r+b");
    fseek(f, 8, SEEK_SET);
    fwrite(&neg, 4, 1, f);
    fclose(f);
    test_io_expect(ctx, mpq_tokenizer_load(ctx, bad, 512, &t), MPQ_ERR_FORMAT, bad, "token 0",
                   "length -1");
    assert_int_equal(tw_copy_prefix(g_tok_path, bad, -1), 0);
    f = fopen(bad, "r+b");
    fseek(f, 8, SEEK_SET);
    fwrite(&big, 4, 1, f);
    fclose(f);
    test_io_expect(ctx, mpq_tokenizer_load(ctx, bad, 512, &t), MPQ_ERR_FORMAT, bad, "length 1000",
                   NULL);
    assert_int_equal(tw_copy_prefix(g_tok_path, bad, 2), 0);
    test_io_expect(ctx, mpq_tokenizer_load(ctx, bad, 512, &t), MPQ_ERR_FORMAT, bad, "truncated",
                   NULL);
    /* a NaN score in entry 0 (merge priorities must be numbers) */
    float nan_score = NAN;
    assert_int_equal(tw_copy_prefix(g_tok_path, bad, -1), 0);
    f = fopen(bad, "r+b");
    fseek(f, 4, SEEK_SET);
    fwrite(&nan_score, 4, 1, f);
    fclose(f);
    test_io_expect(ctx, mpq_tokenizer_load(ctx, bad, 512, &t), MPQ_ERR_FORMAT, bad, "token 0",
                   "non-finite score");
    snprintf(bad, sizeof bad, "%s/missing.bin", dir);
    test_io_expect(ctx, mpq_tokenizer_load(ctx, bad, 512, &t), MPQ_ERR_IO, bad, NULL, NULL);
    tw_rmtree(dir);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),
        cmocka_unit_test(test_protocol_41817),
        cmocka_unit_test(test_splitter),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_identity_shakespeare),
        cmocka_unit_test(test_identity_wikitext),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
