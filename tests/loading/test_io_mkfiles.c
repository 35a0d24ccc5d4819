/* test_io_mkfiles.c: writes the model files the inspect script test runs
 * `mpquant inspect` on into DIR: good tiny models (llama2.c legacy and
 * version 1, a sharded BF16 Hugging Face directory) and one file or
 * directory per corruption. Usage: test_io_mkfiles DIR */
#include <stdio.h>
#include <string.h>

#include "tiny_writer.h"

static int edit(const char *path, const char *from, const char *to) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    static char buf[65536], out[70000];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *at = strstr(buf, from);
    if (!at)
        return -1;
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - buf), buf, to, at + strlen(from));
    return tw_write_text(path, out);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *d = argv[1];
    char p[4200], q[4200];
    tw_llama m = {.dim = 16,
                  .hidden = 24,
                  .layers = 2,
                  .heads = 2,
                  .kv_heads = 1,
                  .vocab = 270,
                  .seq_len = 8,
                  .tied = 0};
    int rc = tw_llama_random(&m, 5);
#define P(name) (snprintf(p, sizeof p, "%s/%s", d, name), p)
    rc |= tw_write_llama2c(P("tiny.bin"), &m, 0);
    rc |= tw_write_llama2c(P("tiny-v1.bin"), &m, 1);
    rc |= tw_write_hf(P("hf"), &m, "llama", "BF16", 2);
    /* truncated llama2.c */
    snprintf(q, sizeof q, "%s/tiny.bin", d);
    rc |= tw_copy_prefix(q, P("truncated.bin"), 1000);
    /* safetensors header pointing past the end, overlapping tensors, wrong dtype */
    const char *A = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},";
    char json[512];
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", A);
    rc |= tw_write_st_header(P("past-end.safetensors"), json, 20);
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", A);
    rc |= tw_write_st_header(P("overlap.safetensors"), json, 24);
    snprintf(json, sizeof json,
             "%s\"b\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[16,32]}}", A);
    rc |= tw_write_st_header(P("dtype.safetensors"), json, 32);
    /* sharded model whose index escapes with '..' */
    rc |= tw_write_hf(P("dotdot"), &m, "llama", "F32", 2);
    rc |= edit(P("dotdot/model.safetensors.index.json"), "\"model-00002-of-00002.safetensors\"",
               "\"../model-00002-of-00002.safetensors\"");
    /* config.json without hidden_size */
    rc |= tw_write_hf(P("nokey"), &m, "llama", "F32", 1);
    rc |= edit(P("nokey/config.json"), "\"hidden_size\"", "\"hidden_sizes\"");
    tw_llama_free(&m);
    if (rc)
        fprintf(stderr, "test_io_mkfiles: failed\n");
    return rc ? 1 : 0;
}
