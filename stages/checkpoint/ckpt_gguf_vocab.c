/* ckpt_gguf_vocab.c: the token types of a Hugging Face tokenizer's added
 * tokens for the GGUF export. The tokenizer object does not keep whether an
 * added token is special, so tokenizer.json's "added_tokens" array is read
 * again: special tokens become control tokens, the others user-defined, as
 * llama.cpp's converter types them. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "ckpt_gguf.h"
#include "mpq_text.h"

mpq_err mpq_gguf_added_types(mpq_ctx *ctx, const char *tokenizer, int64_t vocab, int32_t *types) {
    mpq_err err = MPQ_OK;
    char path[4096], *text = NULL;
    int64_t len = 0;
    cJSON *root = NULL;
    struct stat st;
    if (stat(tokenizer, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(path, sizeof path, "%s/tokenizer.json", tokenizer);
    else
        snprintf(path, sizeof path, "%s", tokenizer);
    MPQ_TRY(mpq_text_read(ctx, path, &text, &len));
    root = cJSON_ParseWithLength(text, (size_t)len);
    MPQ_ENSURE(cJSON_IsObject(root), MPQ_ERR_FORMAT, "%s: not a JSON object", path);
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    MPQ_ENSURE(added == NULL || cJSON_IsNull(added) || cJSON_IsArray(added), MPQ_ERR_FORMAT,
               "%s: added_tokens is not an array", path);
    int64_t k = 0;
    const cJSON *t = NULL;
    cJSON_ArrayForEach(t, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(t, "id");
        const cJSON *special = cJSON_GetObjectItemCaseSensitive(t, "special");
        MPQ_ENSURE(cJSON_IsNumber(id), MPQ_ERR_FORMAT, "%s: added_tokens[%lld].id is not a number",
                   path, (long long)k);
        const double v = id->valuedouble;
        if (v >= 0 && v < (double)vocab && types[(int64_t)v] == MPQ_GGUF_TT_NORMAL)
            types[(int64_t)v] = cJSON_IsTrue(special) ? MPQ_GGUF_TT_CONTROL : MPQ_GGUF_TT_USER;
        k++;
    }
cleanup:
    cJSON_Delete(root);
    mpq_free(text);
    return err;
}
