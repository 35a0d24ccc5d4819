/* test_ckpt_util.h: what the checkpoint tests share: quantizing the layers
 * of a model with the quantizer library (no pipeline), spread over the
 * ranks, and writing the checkpoint. */
#ifndef TEST_CKPT_UTIL_H
#define TEST_CKPT_UTIL_H

#include <stdint.h>

#include "mpq_ckpt.h"
#include "mpq_family.h"

/* Quantized layers of one model: layer i (of the family's layer list) is
 * quantized with specs[i % nspecs] by rank i % size, except every fifth
 * layer (i % 5 == 4), which stays a plain tensor. */
typedef struct ckpt_fixture {
    int64_t n;                  /* quantized layers */
    mpq_ckpt_layer_desc *descs; /* [n] identical on every rank */
    mpq_qlayer **qlayers;       /* [n] non-NULL on the owner only */
    int *owners;                /* [n] */
    char (*names)[MPQ_TENSOR_NAME_MAX];
} ckpt_fixture;

extern const char *const ckpt_specs[];
extern const int ckpt_nspecs;

/* Collective (error agreed). */
mpq_err ckpt_fixture_build(mpq_ctx *ctx, mpq_family *f, ckpt_fixture *fx);
void ckpt_fixture_free(ckpt_fixture *fx);

/* Collective: writes model m with the fixture's layers to path. kill_after
 * >= 0: after that many entries, every rank synchronises and rank 0 kills
 * itself with SIGKILL (the crash test). date/times may be NULL. */
mpq_err ckpt_fixture_write(mpq_ctx *ctx, const mpq_model *m, const ckpt_fixture *fx,
                           const char *path, int overwrite, const char *date, const char *times,
                           int64_t kill_after);

#endif
