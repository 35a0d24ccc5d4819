/* test_io_hftok.c: Hugging Face tokenizer.json (kind "hf-bpe") against the
 * tokenizers library. Run by test_io_hftok.sh as `test_io_hftok WORKDIR`,
 * where WORKDIR holds strings.jsonl, strings-bl.jsonl, strings-nfc.jsonl and
 * whole.jsonl (hftok_ref.py gen), ref-<name>.jsonl (hftok_ref.py ids) for
 * every tokenizer compared, and the variants' <name>/tokenizer.json.
 *  - ids equal to encode(s, add_special_tokens=False) on every string (the
 *    whole of tinyshakespeare and wikitext-2 test in ~4 KB chunks, 6,000
 *    random substrings, 1,300 random mixes of accented, CJK, emoji and
 *    byte-fallback characters, whitespace and added tokens, edge cases);
 *    with add_bos, equal to add_special_tokens=True; decode equal to
 *    decode(ids, skip_special_tokens=True), and to the string itself for
 *    the two Llama decoders unless the string holds an added token (skipped
 *    or rstripped, as the library) or "▁" (decoded as a space);
 *  - byte-level BPE (GPT-2, SmolLM2, dolma2, ten variants) the same way on
 *    strings-bl.jsonl (no chunks, 3,000 more mixes of contractions, digits,
 *    whitespace runs, rare characters), the three real ones on both text
 *    files whole, the four with NFC, NFD, NFKC, NFKD on strings-nfc.jsonl;
 *    a small byte-level file by hand with an allocation sweep and
 *    corruptions; invalid UTF-8 read as U+FFFD;
 *  - documents and calibration segments with BOS only where it is added;
 *  - ids, BOS/EOS/add_bos of both files, the size check, the path
 *    detection, and the errors: truncated JSON, unknown merge sides,
 *    unsupported components and bad patterns named. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "mpq_calibrate.h"
#include "mpq_text.h"
#include "mpq_tokenizer.h"
#include "test_io_util.h"

static mpq_ctx *g_ctx;
static const char *g_work;

static char *shared_path(const char *rel) {
    static char buf[8][4096];
    static int k;
    k = (k + 1) % 8;
    return (char *)mpq_test_shared(rel, buf[k], sizeof buf[k]);
}

/* Lines of a file as parsed JSON values; *n lines. */
static cJSON **read_lines(const char *path, int64_t *n) {
    mpq_ctx *ctx = g_ctx;
    char *text = NULL;
    int64_t len = 0;
    MPQ_ASSERT_OK(ctx, mpq_text_read(ctx, path, &text, &len));
    int64_t cap = 1024, k = 0;
    cJSON **v = malloc((size_t)cap * sizeof *v);
    for (int64_t i = 0; i < len;) {
        int64_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        if (k == cap)
            v = realloc(v, (size_t)(cap *= 2) * sizeof *v);
        v[k] = cJSON_ParseWithLength(text + i, (size_t)(j - i));
        if (!v[k])
            fail_msg("%s: line %lld is not JSON", path, (long long)k + 1);
        k++;
        i = j + 1;
    }
    mpq_free(text);
    *n = k;
    return v;
}

static void free_lines(cJSON **v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        cJSON_Delete(v[i]);
    free(v);
}

static int same_ids(const int32_t *a, int64_t na, const cJSON *ref) {
    if (cJSON_GetArraySize(ref) != na)
        return 0;
    int64_t i = 0;
    for (const cJSON *e = ref->child; e; e = e->next, i++)
        if (a[i] != (int32_t)e->valuedouble)
            return 0;
    return 1;
}

static void print_ids(const char *what, const int32_t *a, int64_t n, const cJSON *ref) {
    char *r = cJSON_PrintUnformatted(ref);
    fprintf(stderr, "%s: mpquant [", what);
    for (int64_t i = 0; i < n && i < 60; i++)
        fprintf(stderr, "%s%d", i ? ", " : "", (int)a[i]);
    fprintf(stderr, "%s]\n  reference %.*s\n", n > 60 ? ", ..." : "", 600, r ? r : "?");
    free(r);
}

/* Whether s contains one of the tokenizer's added tokens or "▁". */
static int no_roundtrip(const char *s, const char *const *added, int nadded) {
    if (strstr(s, "\xE2\x96\x81"))
        return 1;
    for (int k = 0; k < nadded; k++)
        if (strstr(s, added[k]))
            return 1;
    return 0;
}

/* Compares every string of <strings>.jsonl with ref-<name>.jsonl.
 * roundtrip 1: decode(encode(s)) must be s unless s holds one of `added`;
 * 2: wherever the library round-trips. */
static void compare_in(const char *strings, const char *tok_path, int64_t vocab, const char *name,
                       int roundtrip, const char *const *added, int nadded) {
    mpq_ctx *ctx = g_ctx;
    char path[4096];
    int64_t ns = 0, nr = 0;
    snprintf(path, sizeof path, "%s/%s.jsonl", g_work, strings);
    cJSON **str = read_lines(path, &ns);
    snprintf(path, sizeof path, "%s/ref-%s.jsonl", g_work, name);
    cJSON **ref = read_lines(path, &nr);
    assert_int_equal(ns, nr);
    mpq_tokenizer *t = NULL;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, tok_path, vocab, &t));
    assert_string_equal(mpq_tokenizer_kind_name(t), "hf-bpe");
    int add_bos = mpq_tokenizer_add_bos(t);
    int64_t bad = 0, badbos = 0, baddec = 0, rt = 0, badrt = 0, ntok = 0;
    for (int64_t i = 0; i < ns; i++) {
        const char *s = str[i]->valuestring;
        size_t len = strlen(s);
        int32_t *ids = NULL;
        int64_t n = 0;
        MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, s, len, 0, 0, &ids, &n));
        ntok += n;
        if (!same_ids(ids, n, cJSON_GetObjectItem(ref[i], "ids")) && bad++ < 5)
            print_ids(s, ids, n, cJSON_GetObjectItem(ref[i], "ids"));
        char *d = NULL;
        size_t dl = 0;
        MPQ_ASSERT_OK(ctx, mpq_tokenizer_decode(ctx, t, ids, n, 0, &d, &dl));
        const char *want = cJSON_GetObjectItem(ref[i], "decoded")->valuestring;
        if ((dl != strlen(want) || memcmp(d, want, dl) != 0) && baddec++ < 5)
            fprintf(stderr, "decode of [%s]: [%s], reference [%s]\n", s, d, want);
        if (roundtrip == 1 ? !no_roundtrip(s, added, nadded) : roundtrip && !strcmp(want, s)) {
            rt++;
            if ((dl != len || memcmp(d, s, len) != 0) && badrt++ < 5)
                fprintf(stderr, "round trip of [%s]: [%s]\n", s, d);
        }
        mpq_free(d);
        mpq_free(ids);
        MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, s, len, add_bos, 0, &ids, &n));
        if (!same_ids(ids, n, cJSON_GetObjectItem(ref[i], "ids_special")) && badbos++ < 5)
            print_ids(s, ids, n, cJSON_GetObjectItem(ref[i], "ids_special"));
        mpq_free(ids);
    }
    printf("%s: %lld strings, %lld tokens: %lld id mismatches, %lld with add_bos=%d, %lld "
           "decode mismatches; %lld round trips checked, %lld failed\n",
           name, (long long)ns, (long long)ntok, (long long)bad, (long long)badbos, add_bos,
           (long long)baddec, (long long)rt, (long long)badrt);
    assert_int_equal(bad + badbos + baddec + badrt, 0);
    mpq_tokenizer_destroy(&t);
    free_lines(str, ns);
    free_lines(ref, nr);
}

static void compare(const char *tok_path, int64_t vocab, const char *name, int roundtrip,
                    const char *const *added, int nadded) {
    compare_in("strings", tok_path, vocab, name, roundtrip, added, nadded);
}

static const char *const k_llama_added[] = {"<unk>", "<s>", "</s>"};
static const char *const k_phi3_added[] = {"<unk>",         "<s>",           "</s>",
                                           "<|endoftext|>", "<|assistant|>", "<|placeholder",
                                           "<|system|>",    "<|end|>",       "<|user|>"};

static void test_ref_tinyllama(void **state) {
    compare(shared_path("data/tokenizers/tinyllama"), 32000, "tinyllama", 1, k_llama_added, 3);
}

static void test_ref_phi3(void **state) {
    compare(shared_path("data/tokenizers/phi-3-mini/tokenizer.json"), 32064, "phi-3-mini", 1,
            k_phi3_added, 9);
}

/* Documents and calibration segments start with BOS only when the
 * tokenizer adds it: TinyLlama does, Phi-3 and GPT-2 do not. */
static void test_documents(void **state) {
    mpq_ctx *ctx = g_ctx;
    const char *dirs[3] = {"data/tokenizers/tinyllama", "data/tokenizers/phi-3-mini",
                           "data/tokenizers/gpt2"};
    char *text = NULL, *tp = shared_path("data/text/tinyshakespeare.txt");
    int64_t len = 0, nd = 0;
    mpq_span *docs = NULL;
    MPQ_ASSERT_OK(ctx, mpq_text_read(ctx, tp, &text, &len));
    MPQ_ASSERT_OK(ctx, mpq_text_split_docs(ctx, text, len, 50, &docs, &nd));
    for (int k = 0; k < 3; k++) {
        mpq_tokenizer *t = NULL;
        MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, shared_path(dirs[k]), 50257, &t));
        int add = mpq_tokenizer_add_bos(t);
        assert_int_equal(add, k == 0);
        int32_t *toks = NULL, *one = NULL;
        int64_t *off = NULL, n = 0;
        MPQ_ASSERT_OK(ctx, mpq_text_encode_docs(ctx, t, text, docs, nd, 0, &toks, &off));
        for (int64_t d = 0; d < nd; d++) {
            MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, text + docs[d].begin,
                                                    (size_t)docs[d].len, add, 0, &one, &n));
            assert_int_equal(off[d + 1] - off[d], n);
            assert_memory_equal(toks + off[d], one, (size_t)n * sizeof *one);
            assert_true((toks[off[d]] == mpq_tokenizer_bos(t)) == (k == 0));
            mpq_free(one);
        }
        mpq_free(toks);
        mpq_free(off);
        mpq_calib_set *set = NULL;
        MPQ_ASSERT_OK(ctx, mpq_calib_set_text(ctx, t, tp, 64, 4, 7, &set));
        for (int64_t i = 0; i < 4; i++) {
            assert_int_equal(set->len[i], 64);
            if (k == 0)
                assert_int_equal(set->tokens[set->offset[i]], 1);
        }
        mpq_calib_set_destroy(&set);
        mpq_tokenizer_destroy(&t);
    }
    mpq_free(docs);
    mpq_free(text);
}

/* The TinyLlama vocabulary with other components (hftok_ref.py variant):
 * the Metaspace pre-tokenizer and decoder do not round-trip leading spaces
 * (the library's decoder drops every "▁" of the first token). */
static void ref_variant(const char *name, int roundtrip) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_work, name);
    compare(path, 32000, name, roundtrip, k_llama_added, 3);
}

static void test_ref_metaspace(void **state) { /* and with NFKC, on strings-nfc.jsonl too */
    ref_variant("metaspace", 0);
    ref_variant("metaspace-nfkc", 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/metaspace-nfkc", g_work);
    compare_in("strings-nfc", path, 32000, "metaspace-nfkc-nfs", 0, NULL, 0);
}

static void test_ref_metaspace_split(void **state) {
    ref_variant("metaspace-split", 0);
}

/* Without byte fallback: <unk> for characters missing from the vocabulary
 * (fused), which decode skips: no round trip either. */
static void test_ref_unk(void **state) {
    ref_variant("unk", 0);
}

/* Phi-3 with lstrip on its chat tokens. */
static void test_ref_lstrip(void **state) {
    char path[4096];
    snprintf(path, sizeof path, "%s/lstrip", g_work);
    compare(path, 32064, "lstrip", 0, k_phi3_added, 9);
}

/* Known ids (shared/README.md), BOS/EOS/add_bos, the kinds. */
static void test_known(void **state) {
    mpq_ctx *ctx = g_ctx;
    mpq_tokenizer *t = NULL;
    MPQ_ASSERT_OK(ctx,
                  mpq_tokenizer_load(ctx, shared_path("data/tokenizers/tinyllama"), 32000, &t));
    assert_int_equal(mpq_tokenizer_get_kind(t), MPQ_TOKENIZER_HF_BPE);
    assert_int_equal(mpq_tokenizer_byte_level(t), 0);
    assert_int_equal(mpq_tokenizer_vocab_size(t), 32000);
    assert_int_equal(mpq_tokenizer_lookup(t, "<unk>", 5), 0);
    assert_int_equal(mpq_tokenizer_lookup(t, "<s>", 3), 1);
    assert_int_equal(mpq_tokenizer_lookup(t, "</s>", 4), 2);
    assert_int_equal(mpq_tokenizer_lookup(t, "<0x0A>", 6), 13);
    assert_int_equal(mpq_tokenizer_lookup(t, "\xE2\x96\x81the", 6), 278);
    assert_int_equal(mpq_tokenizer_bos(t), 1);
    assert_int_equal(mpq_tokenizer_eos(t), 2);
    assert_int_equal(mpq_tokenizer_add_bos(t), 1);
    size_t len = 0;
    assert_string_equal(mpq_tokenizer_token(t, 278, &len), "\xE2\x96\x81the");
    assert_int_equal(len, 6);
    assert_null(mpq_tokenizer_token(t, 32000, NULL));
    int32_t *ids = NULL;
    int64_t n = 0;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, "", 0, 1, 1, &ids, &n));
    assert_int_equal(n, 2);
    assert_true(ids[0] == 1 && ids[1] == 2);
    mpq_free(ids);
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, "", 0, 0, 0, &ids, &n));
    assert_int_equal(n, 0);
    mpq_free(ids);
    /* invalid UTF-8 is encoded byte by byte, never read past the end */
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, "a\xC3", 2, 0, 0, &ids, &n));
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], 0xC3 + 3);
    mpq_free(ids);
    char *d = NULL;
    int32_t bad[] = {5, 32000};
    test_io_expect(ctx, mpq_tokenizer_decode(ctx, t, bad, 2, 0, &d, &len), MPQ_ERR_ARG, "32000",
                   "outside", NULL);
    mpq_tokenizer_destroy(&t);
    /* Phi-3: no BOS added (add_bos_token false), EOS <|endoftext|>; the
     * model's embedding is padded to 32064 */
    MPQ_ASSERT_OK(ctx,
                  mpq_tokenizer_load(ctx, shared_path("data/tokenizers/phi-3-mini"), 32064, &t));
    assert_int_equal(mpq_tokenizer_vocab_size(t), 32011);
    assert_int_equal(mpq_tokenizer_bos(t), 1);
    assert_int_equal(mpq_tokenizer_eos(t), 32000);
    assert_int_equal(mpq_tokenizer_add_bos(t), 0);
    assert_int_equal(mpq_tokenizer_lookup(t, "<|user|>", 8), 32010);
    mpq_tokenizer_destroy(&t);
    /* llama2.c keeps its ids */
    MPQ_ASSERT_OK(
        ctx, mpq_tokenizer_load(ctx, shared_path("data/models/stories260K/tok512.bin"), 512, &t));
    assert_string_equal(mpq_tokenizer_kind_name(t), "llama2c");
    assert_int_equal(mpq_tokenizer_bos(t), 1);
    assert_int_equal(mpq_tokenizer_eos(t), 2);
    assert_int_equal(mpq_tokenizer_add_bos(t), 1);
    mpq_tokenizer_destroy(&t);
}

static void write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void write_str(const char *path, const char *s) {
    write_file(path, s, strlen(s));
}

/* A small tokenizer.json: vocab, merges and extra top-level members. */
static void small_json(const char *path, const char *vocab, const char *merges, const char *extra) {
    char buf[8192];
    int n =
        snprintf(buf, sizeof buf,
                 "{\"version\": \"1.0\", \"added_tokens\": [], %s \"model\": {\"type\": \"BPE\", "
                 "\"unk_token\": null, \"byte_fallback\": false, \"vocab\": {%s}, \"merges\": "
                 "[%s]}}",
                 extra, vocab, merges);
    write_file(path, buf, (size_t)n);
}

static void expect_load(const char *path, int64_t vocab, const char *n1, const char *n2,
                        const char *n3) {
    mpq_ctx *ctx = g_ctx;
    mpq_tokenizer *t = NULL;
    test_io_expect(ctx, mpq_tokenizer_load(ctx, path, vocab, &t), MPQ_ERR_FORMAT, n1, n2, n3);
    assert_null(t);
}

static void test_small(void **state) {
    mpq_ctx *ctx = g_ctx;
    char dir[4096], p[4200];
    snprintf(dir, sizeof dir, "%s/small", g_work);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/tok", dir); /* no .json: detected by its '{' */
    const char *v = "\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, \"abc\": 5";
    /* the lower rank wins: "b c" before "a b" */
    small_json(p, v, "\"b c\", [\"a\", \"bc\"], \"a b\"", "");
    mpq_tokenizer *t = NULL;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, p, 6, &t));
    assert_int_equal(mpq_tokenizer_bos(t), -1);
    assert_int_equal(mpq_tokenizer_eos(t), -1);
    assert_int_equal(mpq_tokenizer_add_bos(t), 0);
    int32_t *ids = NULL;
    int64_t n = 0;
    /* no unk_token: the unknown "x" is dropped, as the library does */
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, "abcxab", 6, 1, 1, &ids, &n));
    assert_int_equal(n, 2);
    assert_true(ids[0] == 5 && ids[1] == 3);
    mpq_free(ids);
    /* no decoder: the tokens joined with spaces */
    char *d = NULL;
    size_t dl = 0;
    int32_t in[] = {5, 0};
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_decode(ctx, t, in, 2, 0, &d, &dl));
    assert_string_equal(d, "abc a");
    mpq_free(d);
    mpq_tokenizer_destroy(&t);
    /* the size check names the file */
    expect_load(p, 5, p, "6 ids", "vocab_size is 5");
    /* merges referencing unknown tokens, a merged token not in the vocabulary */
    small_json(p, v, "\"a b\", \"b x\"", "");
    expect_load(p, 6, p, "model.merges[1]", "\"b x\"");
    small_json(p, v, "[\"a\", \"y\"]", "");
    expect_load(p, 6, p, "model.merges[0]", "\"y\" is not in model.vocab");
    small_json(p, v, "\"c a\"", "");
    expect_load(p, 6, p, "model.merges[0]", "\"ca\" is not in model.vocab");
    small_json(p, v, "\"ab\"", "");
    expect_load(p, 6, p, "model.merges[0]", "no space");
    /* vocabulary errors */
    small_json(p, "\"a\": 0, \"b\": 0", "", "");
    expect_load(p, 6, p, "model.vocab[\"b\"]", "also given to \"a\"");
    small_json(p, "\"a\": -1", "", "");
    expect_load(p, 6, p, "model.vocab[\"a\"]", "integer");
    small_json(p, "\"a\": 0, \"a\": 1", "", "");
    expect_load(p, 6, p, "key \"a\" appears twice", NULL);
    /* unsupported components, named */
    small_json(p, v, "", "\"normalizer\": {\"type\": \"Lowercase\"},");
    expect_load(p, 6, p, "normalizer", "\"Lowercase\"");
    small_json(p, v, "", "\"pre_tokenizer\": {\"type\": \"Whitespace\"},");
    expect_load(p, 6, p, "pre_tokenizer", "\"Whitespace\"");
    small_json(p, v, "", "\"decoder\": {\"type\": \"WordPiece\"},");
    expect_load(p, 6, p, "decoder", "\"WordPiece\"");
    small_json(p, v, "",
               "\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, "
               "\"content\": \"\xC3\"},");
    expect_load(p, 6, p, "normalizer", "not valid UTF-8");
    /* byte-level pre-tokenizers: order, patterns, behaviors */
    small_json(p, v, "",
               "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
               "\"ByteLevel\"}, {\"type\": \"Digits\"}]},");
    expect_load(p, 6, p, "pre_tokenizer.pretokenizers[1]", "after ByteLevel");
    small_json(p, v, "",
               "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
               "\"Metaspace\", \"replacement\": \"_\"}, {\"type\": \"ByteLevel\"}]},");
    expect_load(p, 6, p, "pre_tokenizer.pretokenizers[0]", "\"Metaspace\"");
    small_json(p, v, "",
               "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, "
               "\"behavior\": \"Isolated\"},");
    expect_load(p, 6, p, "pre_tokenizer", "\"(a\" does not compile");
    char deep[200], extra[400];
    memset(deep, '(', 70);
    memset(deep + 71, ')', 70);
    deep[70] = 'a';
    deep[141] = '\0';
    snprintf(extra, sizeof extra,
             "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"%s\"}, "
             "\"behavior\": \"Isolated\"},",
             deep);
    small_json(p, v, "", extra);
    expect_load(p, 6, p, "pre_tokenizer", "nested more than 64 deep");
    small_json(p, v, "",
               "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"a\"}, "
               "\"behavior\": \"Sideways\"},");
    expect_load(p, 6, p, "pre_tokenizer.behavior", "\"Sideways\"");
    small_json(p, v, "",
               "\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, "
               "\"content\": \" \"},");
    expect_load(p, 6, p, "normalizer", "Regex");
    snprintf(p, sizeof p, "%s/tok.json", dir);
    write_str(p, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
    expect_load(p, 6, p, "model.type", "\"WordPiece\"");
    write_str(p, "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
    expect_load(p, 6, p, "model.type", "\"Unigram\"");
    write_str(p, "[1, 2]");
    expect_load(p, 6, p, "not a JSON object", NULL);
    /* a directory without tokenizer.json */
    test_io_expect(ctx, mpq_tokenizer_load(ctx, dir, 6, &t), MPQ_ERR_IO, dir, "tokenizer.json",
                   NULL);
}

/* A complete small Llama-style tokenizer.json: added tokens (one rstrip),
 * the NFC/Prepend/Replace normalizer, a BOS template, the Llama decoder,
 * byte fallback for A (0x41) and é (C3 A9), unk with fuse_unk. */
static const char k_llama_small[] =
    "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": "
    "true}, {\"id\": 1, \"content\": \"<s>\", \"special\": true}, {\"id\": 13, \"content\": "
    "\"<|end|>\", \"special\": true, \"rstrip\": true}], \"normalizer\": {\"type\": "
    "\"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": \"Prepend\", \"prepend\": "
    "\"\u2581\"}, "
    "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\u2581\"}]}, "
    "\"pre_tokenizer\": null, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
    "[{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", "
    "\"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1]}}}, "
    "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
    "{\"String\": \"\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": "
    "\"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}, "
    "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, "
    "\"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0x41>\": 3, "
    "\"<0xC3>\": 4, \"<0xA9>\": 5, \"\u2581\": 6, \"a\": 7, \"b\": 8, \"\u2581a\": 10, "
    "\"ab\": 11, \"\u2581ab\": 12}, \"merges\": [\"\u2581 a\", \"a b\", [\"\u2581a\", \"b\"]]}}";

static void expect_ids(const mpq_tokenizer *t, const char *s, int bos, const int32_t *want,
                       int64_t nwant) {
    mpq_ctx *ctx = g_ctx;
    int32_t *ids = NULL;
    int64_t n = 0;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, s, strlen(s), bos, 0, &ids, &n));
    if (n != nwant || memcmp(ids, want, (size_t)n * sizeof *ids) != 0) {
        cJSON *ref = cJSON_CreateIntArray((const int *)want, (int)nwant);
        print_ids(s, ids, n, ref);
        cJSON_Delete(ref);
        fail_msg("ids of \"%s\"", s);
    }
    mpq_free(ids);
}

static void expect_decode(const mpq_tokenizer *t, const int32_t *ids, int64_t n, const char *want) {
    mpq_ctx *ctx = g_ctx;
    char *d = NULL;
    size_t dl = 0;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_decode(ctx, t, ids, n, 0, &d, &dl));
    assert_int_equal(dl, strlen(want));
    assert_string_equal(d, want);
    mpq_free(d);
}

/* Every allocation of loading `p`, encoding and decoding k_text failing in
 * turn: MPQ_ERR_NOMEM or success, nothing else. */
static void alloc_sweep(const char *p, int64_t vocab, const char *k_text) {
    mpq_ctx *ctx = g_ctx;
    mpq_tokenizer *t = NULL;
    int64_t k = 0;
    for (;; k++) {
        mpq_alloc_fail_after(ctx, k);
        mpq_err e = mpq_tokenizer_load(ctx, p, vocab, &t);
        int32_t *ids = NULL;
        int64_t n = 0;
        char *d = NULL;
        size_t dl = 0;
        if (e == MPQ_OK)
            e = mpq_tokenizer_encode(ctx, t, k_text, strlen(k_text), 1, 0, &ids, &n);
        if (e == MPQ_OK)
            e = mpq_tokenizer_decode(ctx, t, ids, n, 0, &d, &dl);
        int armed = ctx->alloc_fail_countdown >= 0;
        mpq_alloc_fail_after(ctx, -1);
        mpq_free(d);
        mpq_free(ids);
        mpq_tokenizer_destroy(&t);
        if (e == MPQ_OK && armed)
            break; /* every allocation succeeded */
        if (e != MPQ_OK && e != MPQ_ERR_NOMEM)
            fail_msg("allocation %lld failing: %s: %s", (long long)k, mpq_err_name(e),
                     ctx->err_msg);
        mpq_err_clear(ctx);
    }
    assert_true(k > 20);
}

/* 3,000 random corruptions of file text `json` written to p: an error
 * naming p, or a tokenizer that encodes and decodes k_text. */
static void corruptions(const char *p, const char *json, int64_t vocab, const char *k_text) {
    mpq_ctx *ctx = g_ctx;
    mpq_tokenizer *t = NULL;
    /* corruptions: a byte changed, inserted or removed, or the file cut */
    size_t len = strlen(json);
    char *buf = malloc(len + 2);
    uint64_t x = 88172645463325252ull;
    int64_t ok = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, json, len);
        size_t n = len;
        for (int e = 0; e < 1 + it % 3; e++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = (size_t)(x >> 8) % n, op = (x >> 40) % 4;
            const char sym[] = "{}[]\",:0123456789 -\\u\xC3\xA9"
                               "abnlt";
            char c = sym[(x >> 48) % (sizeof sym - 1)];
            if (op == 0)
                buf[at] = c;
            else if (op == 1 && n < len + 1) {
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = c;
                n++;
            } else if (op == 2 && n > 1) {
                memmove(buf + at, buf + at + 1, n - at - 1);
                n--;
            } else
                n = at + 1;
        }
        write_file(p, buf, n);
        mpq_err e = mpq_tokenizer_load(ctx, p, vocab, &t);
        if (e == MPQ_OK) {
            int32_t *ids = NULL;
            int64_t ni = 0;
            char *d = NULL;
            size_t dl = 0;
            MPQ_ASSERT_OK(ctx,
                          mpq_tokenizer_encode(ctx, t, k_text, strlen(k_text), 1, 1, &ids, &ni));
            for (int64_t i = 0; i < ni; i++)
                assert_true(ids[i] >= 0 && ids[i] < mpq_tokenizer_vocab_size(t));
            MPQ_ASSERT_OK(ctx, mpq_tokenizer_decode(ctx, t, ids, ni, 0, &d, &dl));
            mpq_free(d);
            mpq_free(ids);
            mpq_tokenizer_destroy(&t);
            ok++;
        } else {
            if (e != MPQ_ERR_FORMAT || !strstr(ctx->err_msg, p))
                fail_msg("corruption %d: %s: %s", it, mpq_err_name(e), ctx->err_msg);
            mpq_err_clear(ctx);
        }
    }
    printf("corruptions: 3000 files, %lld still valid tokenizers, the others refused\n",
           (long long)ok);
    free(buf);
}

/* The small tokenizer by hand; then every allocation failing in turn, and
 * 3,000 random corruptions of the file: an error or a working tokenizer,
 * never a crash. */
static void test_robust(void **state) {
    static const char k_text[] = "ab a\xC3\xA9<|end|> be\xCC\x81\xFFx";
    mpq_ctx *ctx = g_ctx;
    char p[4200];
    snprintf(p, sizeof p, "%s/llama-small.json", g_work);
    write_str(p, k_llama_small);
    mpq_tokenizer *t = NULL;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, p, 16, &t));
    assert_int_equal(mpq_tokenizer_vocab_size(t), 14);
    assert_int_equal(mpq_tokenizer_bos(t), 1);
    assert_int_equal(mpq_tokenizer_eos(t), -1);
    assert_int_equal(mpq_tokenizer_add_bos(t), 1);
    expect_ids(t, "ab", 1, (const int32_t[]){1, 12}, 2);
    expect_ids(t, "ab a", 0, (const int32_t[]){12, 10}, 2);
    expect_ids(t, "\303\251A", 0, (const int32_t[]){6, 4, 5, 3}, 4); /* byte fallback */
    expect_ids(t, "xxb", 0, (const int32_t[]){6, 0, 8}, 3);          /* fused unk */
    expect_ids(t, "b\xC3", 0, (const int32_t[]){6, 8, 0}, 3);        /* U+FFFD before NFC: unk */
    expect_ids(t, "a<|end|>  b", 0, (const int32_t[]){10, 13, 6, 8}, 4); /* rstrip */
    expect_decode(t, (const int32_t[]){6, 4, 5, 3}, 4, "\303\251A");
    expect_decode(t, (const int32_t[]){4, 7}, 2,
                  "\xEF\xBF\xBD"
                  "a");                                               /* lone byte: U+FFFD */
    expect_decode(t, (const int32_t[]){1, 12, 13, 10, 0}, 5, "ab a"); /* specials skipped */
    mpq_tokenizer_destroy(&t);
    alloc_sweep(p, 16, k_text);
    corruptions(p, k_llama_small, 16, k_text);
}

/* Truncated files, byte-level tokenizers refused naming the component, a
 * tokenizer_config.json naming an unknown token. */
static void test_errors(void **state) {
    mpq_ctx *ctx = g_ctx;
    char *text = NULL, p[4200], dir[4096];
    int64_t len = 0;
    MPQ_ASSERT_OK(ctx, mpq_text_read(ctx, shared_path("data/tokenizers/tinyllama/tokenizer.json"),
                                     &text, &len));
    snprintf(p, sizeof p, "%s/truncated.json", g_work);
    int64_t last = len - 1; /* the closing brace */
    while (last > 0 && text[last] != '}')
        last--;
    const int64_t cuts[] = {0, 1, 100, 2000, len / 2, last - 1, last};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        write_file(p, text, (size_t)cuts[k]);
        expect_load(p, 32000, p, "not valid JSON", NULL);
    }
    mpq_free(text);
    /* more ids than the model's embedding */
    expect_load(shared_path("data/tokenizers/phi-3-mini"), 32000, "phi-3-mini/tokenizer.json",
                "32011 ids", "vocab_size is 32000");
    /* tokenizer_config.json naming a token the file lacks */
    snprintf(dir, sizeof dir, "%s/badcfg", g_work);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    small_json(p, "\"a\": 0, \"b\": 1", "", "");
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    write_str(p, "{\"bos_token\": \"<s>\"}");
    expect_load(dir, 2, p, "bos_token", "\"<s>\"");
}

/* A small byte-level tokenizer: NFC, a GPT-2-like Split, Digits, ByteLevel
 * with its prefix space and regex, a special token; ids from the tokenizers
 * library. Then the allocation sweep and corruptions (its patterns too). */
static const char k_bl_small[] =
    "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 8, \"content\": \"<|e|>\", "
    "\"special\": true, \"single_word\": false, \"lstrip\": false, \"rstrip\": "
    "false, \"normalized\": false}], \"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": "
    "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
    "{\"Regex\": \"(?i:'s)|[^\\\\s\\\\p{L}\\\\p{N}]+| ?\\\\p{L}+|\\\\s+(?!\\\\S)|\\\\s+\"}, "
    "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"Digits\", "
    "\"individual_digits\": true}, {\"type\": \"ByteLevel\", \"add_prefix_space\": "
    "true, \"use_regex\": true, \"trim_offsets\": true}]}, \"post_processor\": "
    "null, \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
    "\"trim_offsets\": true, \"use_regex\": true}, \"model\": {\"type\": \"BPE\", "
    "\"vocab\": {\"a\": 0, \"b\": 1, \"\\u0120\": 2, \"1\": 3, \"2\": 4, \"c\": "
    "5, \"ab\": 6, \"\\u0120c\": 7, \"<|e|>\": 8, \"\\u00c3\": 9, \"\\u00a9\": "
    "10, \"\\u00c3\\u00a9\": 11}, \"merges\": [\"a b\", \"\\u0120 c\", \"\\u00c3 "
    "\\u00a9\"]}}";

static void test_bytelevel_small(void **state) {
    static const char k_text[] = "ab 12 c<|e|>ab \xC3\xA9"
                                 "c a'S  be\xCC\x81\xCC\x81\xEA\xB0";
    mpq_ctx *ctx = g_ctx;
    char p[4200];
    snprintf(p, sizeof p, "%s/bl-small.json", g_work);
    write_str(p, k_bl_small);
    mpq_tokenizer *t = NULL;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, p, 12, &t));
    expect_ids(t, "ab 12 c<|e|>ab", 0, (const int32_t[]){2, 6, 2, 2, 3, 2, 4, 7, 8, 2, 6}, 11);
    expect_ids(t, "\303\251c", 0, (const int32_t[]){2, 11, 5}, 3);
    expect_ids(t, "e\xCC\x81" /* NFC: e + U+0301 = \xC3\xA9 */, 0, (const int32_t[]){2, 11}, 2);
    expect_ids(t, "a'S  b", 0, (const int32_t[]){2, 0, 2, 2, 2, 1}, 6); /* ' and S unknown */
    expect_decode(t, (const int32_t[]){2, 6, 2, 2, 3, 2, 4, 7, 8, 2, 6}, 11, " ab  1 2 c ab");
    expect_decode(t, (const int32_t[]){9, 1, 10}, 3, "\357\277\275b\357\277\275");
    mpq_tokenizer_destroy(&t);
    alloc_sweep(p, 12, k_text);
    corruptions(p, k_bl_small, 12, k_text);
}

/* Byte-level BPE on strings-bl.jsonl (no 4 KB chunks, but mixes of
 * contractions, digit and whitespace runs, accented, CJK, emoji and
 * symbols) and whole.jsonl (both text files whole): decode(encode(s)) = s
 * wherever the library round-trips (everywhere but skipped special
 * tokens). The files' padding and truncation (SmolLM2) are not applied. */
static void compare_bl(const char *name, int64_t vocab) {
    char rel[256], whole[256];
    snprintf(rel, sizeof rel, "data/tokenizers/%s", name);
    snprintf(whole, sizeof whole, "%s-whole", name);
    compare_in("strings-bl", shared_path(rel), vocab, name, 2, NULL, 0);
    compare_in("whole", shared_path(rel), vocab, whole, 2, NULL, 0);
}

static void test_ref_gpt2(void **state) {
    compare_bl("gpt2", 50257);
}

static void test_ref_smollm2(void **state) { /* Digits, then ByteLevel */
    compare_bl("smollm2", 49153);
}

static void test_ref_dolma2(void **state) { /* an inverted Removed Split, then ByteLevel */
    compare_bl("dolma2", 100278);
}

/* GPT-2 and dolma2 with other pre-tokenizers (hftok_ref.py variant bl-*):
 * ByteLevel's prefix space and String patterns, every Split behavior,
 * invert, Digits runs, Llama 3's ignore_merges, Qwen2's pattern, alone and
 * with the Unicode normalizers (bl-nf*, on strings-nfc.jsonl too). */
static void test_ref_bl_variants(void **state) {
    static const char *const names[] = {"bl-prefix", "bl-split", "bl-next", "bl-removed",
                                        "bl-llama3", "bl-qwen2", "bl-nfc",  "bl-nfd",
                                        "bl-nfkc",   "bl-nf-seq"};
    char path[4096], ref[256];
    for (int k = 0; k < 10; k++) {
        snprintf(path, sizeof path, "%s/%s", g_work, names[k]);
        snprintf(ref, sizeof ref, "%s-nfs", names[k]);
        compare_in("strings-bl", path, k < 4 ? 50257 : 100278, names[k], 2, NULL, 0);
        if (k >= 6)
            compare_in("strings-nfc", path, 100278, ref, 2, NULL, 0);
    }
}

static void expect_same_ids(const mpq_tokenizer *t, const char *a, const char *b, int same) {
    mpq_ctx *ctx = g_ctx;
    int32_t *x = NULL, *y = NULL;
    int64_t nx = 0, ny = 0;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, a, strlen(a), 0, 0, &x, &nx));
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_encode(ctx, t, b, strlen(b), 0, 0, &y, &ny));
    assert_int_equal(same, nx == ny && memcmp(x, y, (size_t)nx * sizeof *x) == 0);
    mpq_free(x);
    mpq_free(y);
}

/* Byte-level known ids (shared/README.md), BOS/EOS, invalid UTF-8 read as
 * Python's decode("utf-8", "replace") reads it (one U+FFFD per maximal
 * invalid subpart), a character cut in two by decoding. */
static void test_bytelevel_known(void **state) {
    mpq_ctx *ctx = g_ctx;
    mpq_tokenizer *t = NULL;
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, shared_path("data/tokenizers/gpt2"), 50257, &t));
    assert_int_equal(mpq_tokenizer_vocab_size(t), 50257);
    assert_int_equal(mpq_tokenizer_lookup(t, "\xC4\xA0the", 5), 262);
    assert_int_equal(mpq_tokenizer_lookup(t, "<|endoftext|>", 13), 50256);
    assert_int_equal(mpq_tokenizer_bos(t), 50256);
    assert_int_equal(mpq_tokenizer_eos(t), 50256);
    assert_int_equal(mpq_tokenizer_add_bos(t), 0);
    assert_int_equal(mpq_tokenizer_byte_level(t), 1);
    expect_ids(t, " the", 0, (const int32_t[]){262}, 1);
    expect_same_ids(t, "a\xC3(b", "a\xEF\xBF\xBD(b", 1);
    expect_same_ids(t, "\xED\xA0\x80x", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDx", 1);
    expect_same_ids(t, "\xC0\x80 \xFF", "\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD", 1);
    expect_same_ids(t, "\xF0\x9F\x98 ok\xF0\x9F", "\xEF\xBF\xBD ok\xEF\xBF\xBD", 1);
    int32_t c3 = mpq_tokenizer_lookup(t, "\xC3\x83", 2), lp = mpq_tokenizer_lookup(t, "(", 1);
    assert_true(c3 >= 0 && lp >= 0);
    expect_decode(t, (const int32_t[]){c3, lp}, 2, "\xEF\xBF\xBD(");
    expect_decode(t, (const int32_t[]){50256, 262}, 2, " the"); /* special skipped */
    mpq_tokenizer_destroy(&t);
    /* NFC composes "cafe" + U+0301, bl-qwen2 does not; all read bad UTF-8 as above */
    static const char *const names[] = {"bl-qwen2", "bl-nfc", "metaspace-nfkc"};
    for (int k = 0; k < 3; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", g_work, names[k]);
        MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, path, 100278, &t));
        expect_same_ids(t, "\xFFzcafe\xCC\x81\xC3", "\xEF\xBF\xBDzcaf\xC3\xA9\xEF\xBF\xBD", k > 0);
        expect_same_ids(t, "\xED\xA0\x80x", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDx", 1);
        mpq_tokenizer_destroy(&t);
    }
    MPQ_ASSERT_OK(ctx, mpq_tokenizer_load(ctx, shared_path("data/tokenizers/smollm2"), 49153, &t));
    assert_int_equal(mpq_tokenizer_vocab_size(t), 49153);
    assert_int_equal(mpq_tokenizer_lookup(t, "<|im_start|>", 12), 1);
    mpq_tokenizer_destroy(&t);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    if (argc < 2) {
        fprintf(stderr, "usage: test_io_hftok WORKDIR (run through test_io_hftok.sh)\n");
        return mpq_test_finish(&g_ctx, 1);
    }
    g_work = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known),           cmocka_unit_test(test_small),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_robust),
        cmocka_unit_test(test_ref_tinyllama),   cmocka_unit_test(test_ref_phi3),
        cmocka_unit_test(test_ref_metaspace),   cmocka_unit_test(test_ref_metaspace_split),
        cmocka_unit_test(test_ref_unk),         cmocka_unit_test(test_ref_lstrip),
        cmocka_unit_test(test_documents),       cmocka_unit_test(test_bytelevel_known),
        cmocka_unit_test(test_bytelevel_small), cmocka_unit_test(test_ref_gpt2),
        cmocka_unit_test(test_ref_smollm2),     cmocka_unit_test(test_ref_dolma2),
        cmocka_unit_test(test_ref_bl_variants),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
