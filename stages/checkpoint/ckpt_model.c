/* ckpt_model.c: the checkpoint as a model format ("mpqckpt"), so that every
 * consumer of mpq_model (families, eval, inspect, export) reads it like a
 * llama2.c or safetensors file.
 *
 * The quantized layers are dequantized once at open time into fp32 tensors
 * under their canonical names (the exact values mpq_qlayer_dequantize
 * gives); plain tensors keep their stored dtype. All of it lives in one
 * buffer owned by the model (mpq_model_add_buffer), made read-only once
 * filled, so mpq_model_close releases it. Each process holds its own copy
 * (the reader is local). */
#include <stdio.h>
#include <string.h>

#include "mpq_ckpt.h"
#include "mpq_family.h"
#include "mpq_model_format.h"

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
    MPQ_TRY(mpq_model_add_buffer(ctx, m, size, &base));
    const char *file = mpq_model_path(m);
    for (int64_t i = 0; i < ck->nentries; i++) {
        const mpq_ckpt_entry *e = &ck->entries[i];
        if (e->quantized)
            MPQ_TRY(mpq_ckpt_dequantize_layer(ctx, ck, e->name, (float *)(base + off[i])));
        else
            MPQ_TRY(mpq_ckpt_read_tensor(ctx, ck, i, base + off[i]));
        mpq_tensor t;
        MPQ_TRY(
            mpq_tensor_init(ctx, &t, e->name, e->dtype, e->ndim, e->shape, base + off[i], file));
        MPQ_TRY(mpq_model_add_tensor(ctx, m, &t));
    }
    /* Read-only from here, like the file mappings of the other formats. */
    MPQ_TRY(mpq_model_seal_buffers(ctx, m));
    mpq_arch a = ck->arch;
    snprintf(a.format, sizeof a.format, "%s", mpq_format_mpqckpt.name);
    mpq_model_set_arch(m, &a);
    /* The tensors the recorded family's architecture implies. */
    const mpq_family_ops *fam = mpq_family_of_model(m);
    if (fam && fam->check_model)
        MPQ_TRY(fam->check_model(ctx, m));
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
