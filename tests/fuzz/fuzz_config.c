/* fuzz_config.c: libconfig text through mpq_config_parse (the parser and
 * the whole validation table), then printing the effective configuration
 * and parsing that output again, which must succeed: the printer promises
 * text the parser accepts.
 *
 * Input layout: configuration text; if it contains a line "%%", the text
 * after it is one "-o" override. */
#include "fuzz_common.h"
#include "mpq_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_env *env = fuzz_env_get();
    mpq_ctx *ctx = env->ctx;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *over = strstr(text, "\n%%\n");
    char *overrides[1] = {NULL};
    int n_over = 0;
    if (over) {
        *over = '\0';
        overrides[0] = over + 4;
        n_over = 1;
    }
    mpq_config *cfg = NULL;
    if (mpq_config_parse(ctx, "fuzz.cfg", text, n_over, overrides, &cfg) == MPQ_OK) {
        char *printed = NULL;
        size_t plen = 0;
        FILE *f = open_memstream(&printed, &plen);
        if (!f)
            fuzz_fail("open_memstream");
        mpq_config_print(cfg, f);
        fclose(f);
        mpq_config *again = NULL;
        if (mpq_config_parse(ctx, "printed.cfg", printed, 0, NULL, &again) != MPQ_OK) {
            fprintf(stderr, "%s\n--- printed:\n%s\n", ctx->err_msg, printed);
            fuzz_fail("the printed configuration does not parse again");
        }
        mpq_config_destroy(&again);
        free(printed);
    }
    mpq_config_destroy(&cfg);
    if (cfg)
        fuzz_fail("mpq_config_destroy did not clear the pointer");
    free(text);
    fuzz_done(env);
    return 0;
}
