/* ckpt_model.c: the checkpoint as a model format ("mpqckpt"), so that every
 * consumer of mpq_model (families, eval, inspect, export) reads it like a
 * llama2.c or safetensors file.
 *
 * The quantized layers are dequantized once at open time into fp32 tensors
 * under their canonical names (the exact values mpq_qlayer_dequantize
 * gives); plain tensors keep their stored dtype. All of it lives in one
 * anonymous mapping registered with the model like a file mapping, made
 * read-only once filled, so mpq_model_close releases it. Each process holds
 * its own copy (the reader is local). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "../loading/io_internal.h"
#include "mpq_ckpt.h"

/* Adds an anonymous read-write mapping of size bytes to m (owned by m). */
static mpq_err add_anon_map(mpq_ctx *ctx, mpq_model *m, const char *path, size_t size,
                            unsigned char **base) {
    mpq_err err = MPQ_OK;
    mpq_io_map *mp = NULL;
    char *copy = NULL;
    void *p = MAP_FAILED;
    if (m->nmaps == m->cap_maps) {
        int64_t cap = m->cap_maps ? 2 * m->cap_maps : 4;
        MPQ_CALL(mpq_realloc(ctx, m->cap_maps, cap, sizeof *m->maps, (void **)&m->maps));
        m->cap_maps = cap;
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MPQ_ENSURE(p != MAP_FAILED, MPQ_ERR_NOMEM,
               "%s: cannot allocate %zu bytes for the dequantized weights: %s", path, size,
               strerror(errno));
    MPQ_TRY(mpq_strdup(ctx, path, &copy));
    MPQ_ALLOC_TRY(mp, 1);
    mp->path = copy;
    mp->base = p;
    mp->size = size;
    m->maps[m->nmaps++] = mp;
    *base = p;
    return MPQ_OK;
cleanup:
    mpq_free(copy);
    if (p != MAP_FAILED)
        munmap(p, size);
    return err;
}

static mpq_err ck_open(mpq_ctx *ctx, mpq_model *m, const char *path) {
    mpq_err err = MPQ_OK;
    mpq_ckpt *ck = NULL;
    int64_t *off = NULL;
    MPQ_TRY(mpq_ckpt_open(ctx, path, &ck));
    MPQ_ENSURE(ck->nentries > 0, MPQ_ERR_FORMAT, "%s: the checkpoint holds no tensors", path);
    /* Offsets of every tensor, 64-byte aligned like mpq_malloc buffers. */
    MPQ_ALLOC_TRY(off, ck->nentries);
    int64_t total = 0;
    for (int64_t i = 0; i < ck->nentries; i++) {
        const mpq_ckpt_entry *e = &ck->entries[i];
        int64_t nb = 0;
        MPQ_TRY(mpq_mul64(ctx, e->numel, (int64_t)mpq_dtype_size(e->dtype), e->name, &nb));
        off[i] = total;
        MPQ_TRY(mpq_add64(ctx, total, (nb + 63) / 64 * 64, "checkpoint size", &total));
    }
    unsigned char *base = NULL;
    size_t size = total > 0 ? (size_t)total : 64;
    MPQ_TRY(add_anon_map(ctx, m, path, size, &base));
    const char *file = m->maps[m->nmaps - 1]->path;
    for (int64_t i = 0; i < ck->nentries; i++) {
        const mpq_ckpt_entry *e = &ck->entries[i];
        if (e->quantized)
            MPQ_TRY(mpq_ckpt_dequantize_layer(ctx, ck, e->name, (float *)(base + off[i])));
        else
            MPQ_TRY(mpq_ckpt_read_tensor(ctx, ck, i, base + off[i]));
        mpq_tensor t;
        MPQ_TRY(
            mpq_io_tensor_init(ctx, &t, e->name, e->dtype, e->ndim, e->shape, base + off[i], file));
        MPQ_TRY(mpq_io_add_tensor(ctx, m, &t));
    }
    /* Read-only from here, like the file mappings of the other formats. */
    MPQ_ENSURE(mprotect(base, size, PROT_READ) == 0, MPQ_ERR_IO, "%s: mprotect failed: %s", path,
               strerror(errno));
    m->arch = ck->arch;
    snprintf(m->arch.format, sizeof m->arch.format, "mpqckpt");
    if (strcmp(m->arch.family, "llama") == 0)
        MPQ_TRY(mpq_io_check_llama(ctx, m));
cleanup:
    mpq_free(off);
    mpq_ckpt_close(&ck);
    return err;
}

static int ck_probe(const char *path, int is_dir, const unsigned char *head, size_t nhead) {
    (void)path;
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    return !is_dir && nhead >= sizeof sig && memcmp(head, sig, sizeof sig) == 0;
}

const mpq_model_format mpq_format_mpqckpt = {
    .name = "mpqckpt",
    .probe = ck_probe,
    .open = ck_open,
};
