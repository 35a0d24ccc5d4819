/* ckpt_gguf_kv.c: the GGUF export's byte buffer and metadata (KV) writers:
 * little-endian integers and floats, length-prefixed strings, and KV pairs
 * (string key, u32 value type, value). */
#include <string.h>

#include "ckpt_gguf.h"

void mpq_gguf_put(mpq_gguf_buf *b, const void *data, size_t len) {
    if (b->err != MPQ_OK)
        return;
    if (b->n + (int64_t)len > b->cap) {
        int64_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + (int64_t)len)
            cap *= 2;
        b->err = mpq_realloc(b->ctx, b->cap, cap, 1, (void **)&b->p);
        if (b->err != MPQ_OK)
            return;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, len);
    b->n += (int64_t)len;
}

void mpq_gguf_uint(mpq_gguf_buf *b, uint64_t v, int bytes) {
    uint8_t le[8];
    for (int k = 0; k < bytes; k++)
        le[k] = (uint8_t)(v >> (8 * k));
    mpq_gguf_put(b, le, (size_t)bytes);
}

void mpq_gguf_f32(mpq_gguf_buf *b, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    mpq_gguf_uint(b, u, 4);
}

void mpq_gguf_str(mpq_gguf_buf *b, const char *s, size_t len) {
    mpq_gguf_uint(b, len, 8);
    mpq_gguf_put(b, s, len);
}

void mpq_gguf_kv_head(mpq_gguf_buf *b, const char *key, int type) {
    mpq_gguf_str(b, key, strlen(key));
    mpq_gguf_uint(b, (uint64_t)type, 4);
    b->nkv++;
}

void mpq_gguf_kv_u32(mpq_gguf_buf *b, const char *key, int64_t v) {
    mpq_gguf_kv_head(b, key, MPQ_GV_U32);
    mpq_gguf_uint(b, (uint64_t)v, 4);
}

void mpq_gguf_kv_f32(mpq_gguf_buf *b, const char *key, double v) {
    mpq_gguf_kv_head(b, key, MPQ_GV_F32);
    mpq_gguf_f32(b, (float)v);
}

void mpq_gguf_kv_bool(mpq_gguf_buf *b, const char *key, int v) {
    mpq_gguf_kv_head(b, key, MPQ_GV_BOOL);
    mpq_gguf_uint(b, v ? 1 : 0, 1);
}

void mpq_gguf_kv_str(mpq_gguf_buf *b, const char *key, const char *s) {
    mpq_gguf_kv_head(b, key, MPQ_GV_STR);
    mpq_gguf_str(b, s, strlen(s));
}

void mpq_gguf_kv_array(mpq_gguf_buf *b, const char *key, int elem_type, int64_t count) {
    mpq_gguf_kv_head(b, key, MPQ_GV_ARR);
    mpq_gguf_uint(b, (uint64_t)elem_type, 4);
    mpq_gguf_uint(b, (uint64_t)count, 8);
}
