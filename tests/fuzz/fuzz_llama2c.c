/* fuzz_llama2c.c: llama2.c checkpoints (legacy and version 1 export) through
 * mpq_model_open(format "llama2c"). Seeds: tiny synthetic checkpoints of
 * both formats and damaged headers (tests/fuzz/corpus/llama2c). */
#include "fuzz_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_env *env = fuzz_env_get();
    char path[512];
    fuzz_write(env->dir, "model.bin", data, size, path, sizeof path);
    mpq_model *m = NULL;
    if (mpq_model_open(env->ctx, path, "llama2c", &m) == MPQ_OK) {
        const mpq_arch *a = mpq_model_arch(m);
        if (a->dim <= 0 || a->n_layers <= 0 || a->vocab_size <= 0 || a->head_dim <= 0)
            fuzz_fail("accepted llama2.c model with a non-positive dimension");
        fuzz_check_model(env, m);
    }
    mpq_model_close(&m);
    if (m)
        fuzz_fail("mpq_model_close did not clear the pointer");
    fuzz_done(env);
    return 0;
}
