/* fuzz_sharded.c: a sharded safetensors model directory through
 * mpq_model_open: model.safetensors.index.json, config.json and up to four
 * shard files.
 *
 * Input layout: parts separated by the line "#####": part 0 is the index,
 * part 1 config.json (left out when empty), parts 2.. the shards
 * model-00001.safetensors, model-00002.safetensors, ... The model directory
 * is <tmp>/m/<n>/; beside it lies <tmp>/outside.safetensors, a valid file
 * with the tensor "x", so that an index naming "../outside.safetensors" (or
 * an absolute path) would load if the reader let names escape: an accepted
 * model whose tensors live in a file outside the directory is a failure. */
#include "fuzz_model.h"

#define SEP "\n#####\n"

static void write_outside(const char *dir) {
    static const char hdr[] = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    unsigned char buf[8 + sizeof hdr - 1 + 4] = {0};
    uint64_t n = sizeof hdr - 1;
    for (int k = 0; k < 8; k++)
        buf[k] = (unsigned char)(n >> (8 * k));
    memcpy(buf + 8, hdr, n);
    char path[512];
    fuzz_write(dir, "outside.safetensors", buf, sizeof buf, path, sizeof path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_env *env = fuzz_env_get();
    static unsigned long serial; /* a fresh directory per input: no leftovers */
    char mdir[400], path[512];
    if (serial == 0) {
        write_outside(env->dir);
        snprintf(path, sizeof path, "%s/m", env->dir);
        if (mkdir(path, 0700) != 0)
            fuzz_fail("mkdir");
    }
    snprintf(mdir, sizeof mdir, "%s/m/%lu", env->dir, serial++);
    if (mkdir(mdir, 0700) != 0)
        fuzz_fail("mkdir");
    const uint8_t *p = data, *end = data + size;
    size_t sep = strlen(SEP);
    for (int part = 0; part < 6; part++) {
        const uint8_t *q = p;
        while (q + sep <= end && memcmp(q, SEP, sep) != 0)
            q++;
        if (q + sep > end)
            q = end;
        char name[64];
        if (part == 0)
            snprintf(name, sizeof name, "model.safetensors.index.json");
        else if (part == 1)
            snprintf(name, sizeof name, "config.json");
        else
            snprintf(name, sizeof name, "model-%05d.safetensors", part - 1);
        if (part != 1 || q > p)
            fuzz_write(mdir, name, p, (size_t)(q - p), path, sizeof path);
        if (q == end)
            break;
        p = q + sep;
    }
    mpq_model *m = NULL;
    if (mpq_model_open(env->ctx, mdir, "safetensors", &m) == MPQ_OK) {
        fuzz_check_model(env, m);
        size_t n = strlen(mdir);
        for (int64_t i = 0; i < mpq_model_ntensors(m); i++) {
            const char *f = mpq_model_tensor_at(m, i)->file;
            if (strncmp(f, mdir, n) != 0 || f[n] != '/' || strstr(f + n, "/../"))
                fuzz_fail("a tensor was loaded from a file outside the model directory");
        }
    }
    mpq_model_close(&m);
    fuzz_done(env);
    /* Remove the directory's files (their names are known) to keep /tmp small. */
    static const char *const names[] = {"model.safetensors.index.json", "config.json",
                                        "model-00001.safetensors",      "model-00002.safetensors",
                                        "model-00003.safetensors",      "model-00004.safetensors"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        snprintf(path, sizeof path, "%s/%s", mdir, names[k]);
        unlink(path);
    }
    if (rmdir(mdir) != 0)
        fuzz_fail("cannot remove the model directory");
    return 0;
}
