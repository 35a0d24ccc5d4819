/* fuzz_safetensors.c: one safetensors file (8-byte header length, JSON
 * header, data section) through mpq_model_open(format "safetensors").
 * Without a config.json beside it the reader exposes the tensors as they
 * are, so everything the header declares is validated here. */
#include "fuzz_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_env *env = fuzz_env_get();
    char path[512];
    fuzz_write(env->dir, "model.safetensors", data, size, path, sizeof path);
    mpq_model *m = NULL;
    if (mpq_model_open(env->ctx, path, "safetensors", &m) == MPQ_OK)
        fuzz_check_model(env, m);
    mpq_model_close(&m);
    fuzz_done(env);
    return 0;
}
