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

/* Replaces the first `from` in a binary file by `to` of the same length. */
static int edit_bin(const char *path, const char *from, const char *to) {
    static char buf[1 << 20];
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf, f), k = strlen(from);
    fclose(f);
    if (strlen(to) != k)
        return -1;
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(buf + i, from, k) == 0) {
            memcpy(buf + i, to, k);
            return tw_write_bytes(path, buf, n, 0);
        }
    return -1;
}

/* A PyTorch-style MNIST CNN (conv, batch norm, relu, conv, batch norm,
 * flatten, linear) whose batch norms carry the I64 scalar
 * num_batches_tracked, written as F32 [2] (8 bytes) and retyped. */
static int write_bn_cnn(const char *path) {
    static float w[10 * 2 * 28 * 28];
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        w[i] = (float)((int)(i * 7919 % 201) - 100) / 1000.0f;
    static const float one[2] = {1.0f, 1.0f}, zero[2] = {0.0f, 0.0f};
    tw_tensor t[13];
    tw_f32(&t[0], "conv.weight", w, 4, 2, 1, 3, 3);
    tw_f32(&t[1], "bn.weight", one, 1, 2, 0, 0, 0);
    tw_f32(&t[2], "bn.bias", zero, 1, 2, 0, 0, 0);
    tw_f32(&t[3], "bn.running_mean", zero, 1, 2, 0, 0, 0);
    tw_f32(&t[4], "bn.running_var", one, 1, 2, 0, 0, 0);
    tw_f32(&t[5], "bn.num_batches_tracked", zero, 1, 2, 0, 0, 0);
    tw_f32(&t[6], "conv2.weight", w, 4, 2, 2, 3, 3);
    tw_f32(&t[7], "bn2.weight", one, 1, 2, 0, 0, 0);
    tw_f32(&t[8], "bn2.bias", zero, 1, 2, 0, 0, 0);
    tw_f32(&t[9], "bn2.running_mean", zero, 1, 2, 0, 0, 0);
    tw_f32(&t[10], "bn2.running_var", one, 1, 2, 0, 0, 0);
    tw_f32(&t[11], "bn2.num_batches_tracked", zero, 1, 2, 0, 0, 0);
    tw_f32(&t[12], "fc.weight", w, 2, 10, 2 * 28 * 28, 0, 0);
    int rc = tw_write_safetensors(path, t, 13);
    rc |= edit_bin(path, "\"bn.num_batches_tracked\":{\"dtype\":\"F32\",\"shape\":[2]",
                   "\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[ ]");
    rc |= edit_bin(path, "\"bn2.num_batches_tracked\":{\"dtype\":\"F32\",\"shape\":[2]",
                   "\"bn2.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[ ]");
    return rc;
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
    /* a batch-norm CNN with I64 num_batches_tracked (unused: accepted) */
    rc |= write_bn_cnn(P("bn-cnn.safetensors"));
    /* a used tensor of a dtype the model cannot compute with */
    rc |= tw_write_hf(P("i32used"), &m, "llama", "F32", 1);
    rc |= edit_bin(P("i32used/model.safetensors"), "\"model.norm.weight\":{\"dtype\":\"F32\"",
                   "\"model.norm.weight\":{\"dtype\":\"I32\"");
    /* a shard name with a NUL in the index: cJSON would cut it short */
    rc |= tw_write_hf(P("nulshard"), &m, "llama", "F32", 2);
    rc |= edit(P("nulshard/model.safetensors.index.json"), "\"model-00002-of-00002.safetensors\"",
               "\"model-00002-of-00002.safetensors\\u0000../../etc/passwd\"");
    /* config.json values the tensors cannot be blamed for */
    rc |= tw_write_hf(P("kvheads"), &m, "llama", "F32", 2);
    rc |=
        edit(P("kvheads/config.json"), "\"num_key_value_heads\":\t1", "\"num_key_value_heads\":3");
    rc |= tw_write_hf(P("headdim"), &m, "llama", "F32", 2);
    rc |= edit(P("headdim/config.json"), "\"num_key_value_heads\":\t1",
               "\"num_key_value_heads\":1,\"head_dim\":7");
    tw_llama_free(&m);
    if (rc)
        fprintf(stderr, "test_io_mkfiles: failed\n");
    return rc ? 1 : 0;
}
