/* fuzz_tokenizer.c: llama2.c tokenizer.bin through mpq_tokenizer_load, then
 * encoding and decoding a text through the loaded vocabulary. A file that
 * opens a JSON object is read as a Hugging Face tokenizer: then its size may
 * be below vocab_size and ids no entry names have no bytes.
 *
 * Input layout: byte 0 selects the vocab_size the model would claim
 * (259 + byte 0 % 16: the file must hold exactly that many entries), the
 * last min(64, size/4) bytes are the text to encode, the rest is the file.
 * Every id the encoder emits must be in range and decode again. */
#include "fuzz_common.h"
#include "mpq_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    fuzz_env *env = fuzz_env_get();
    mpq_ctx *ctx = env->ctx;
    int64_t vocab = 259 + data[0] % 16;
    size_t ntext = size / 4 < 64 ? size / 4 : 64;
    const uint8_t *file = data + 1, *text = data + size - ntext;
    size_t nfile = size - 1 - ntext;
    char path[512];
    fuzz_write(env->dir, "tokenizer.bin", file, nfile, path, sizeof path);
    mpq_tokenizer *t = NULL;
    if (mpq_tokenizer_load(ctx, path, vocab, &t) == MPQ_OK) {
        int hf = mpq_tokenizer_get_kind(t) == MPQ_TOKENIZER_HF_BPE;
        if (mpq_tokenizer_max_token_length(t) > (int64_t)nfile)
            fuzz_fail("accepted a max_token_length larger than the file (encoder scratch size)");
        if (hf ? mpq_tokenizer_vocab_size(t) > vocab : mpq_tokenizer_vocab_size(t) != vocab)
            fuzz_fail("tokenizer vocab_size differs from the requested one");
        int32_t *ids = NULL;
        int64_t n = 0;
        if (mpq_tokenizer_encode(ctx, t, (const char *)text, ntext, 1, 1, &ids, &n) == MPQ_OK) {
            for (int64_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= vocab)
                    fuzz_fail("encoder emitted an id out of range");
            char *out = NULL;
            size_t len = 0;
            if (mpq_tokenizer_decode(ctx, t, ids, n, 1, &out, &len) != MPQ_OK)
                fuzz_fail("decoding the encoder's own ids failed");
            if (strlen(out) > len)
                fuzz_fail("decoded text longer than its reported length");
            mpq_free(out);
        }
        mpq_free(ids);
        for (int32_t id = 0; id < mpq_tokenizer_vocab_size(t); id++) {
            size_t len = 0;
            const char *s = mpq_tokenizer_token(t, id, &len);
            if (hf && !s)
                continue;
            if (!s || strlen(s) != len)
                fuzz_fail("token bytes do not match their length");
            if (mpq_tokenizer_lookup(t, s, len) < 0)
                fuzz_fail("lookup misses a token of the vocabulary");
        }
    }
    mpq_tokenizer_destroy(&t);
    fuzz_done(env);
    return 0;
}
