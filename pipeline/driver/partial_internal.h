/* partial_internal.h: the partial checkpoint of `mpquant run`, which makes
 * a killed or stopped run resumable (pipeline/driver/partial.c).
 *
 * Next to output.path, the directory "<output.path>.partial" holds:
 *   manifest.json      {"format": "mpquant-partial", "version": 1,
 *                       "blocks": N, "config": effective configuration text,
 *                       "inputs": {path: SHA-256}} of the run that made it
 *   measure-BBBBBB.h5  (mixed precision) the measured codes of block B:
 *                      entries "<tensor>@<k>" for candidate k
 *   round-BBBBBB.h5    the final codes of block B: entries "<tensor>"
 * Each block file is an mpquant checkpoint (mpq_ckpt.h) written collectively
 * under a temporary name and renamed when complete, so a kill at any moment
 * leaves whole block files only; its provenance "assignment" holds a JSON
 * object {entry: {"loss", "rtn_loss", "iters", "seconds", "energy"}}.
 * A run that finds the directory checks the manifest against its own
 * configuration (log.* aside) and input hashes, refusing with the first
 * difference, and resumes after the longest run of complete block files
 * 0, 1, ... of each phase. The directory is removed once the checkpoint is
 * committed. */
#ifndef MPQ_PARTIAL_INTERNAL_H
#define MPQ_PARTIAL_INTERNAL_H

#include <stdint.h>

#include "mpq_ckpt.h"
#include "mpq_config.h"
#include "mpq_quant.h"

typedef enum mpq_phase { MPQ_PHASE_MEASURE = 0, MPQ_PHASE_ROUND = 1, MPQ_PHASE_COUNT } mpq_phase;

typedef struct mpq_partial {
    char *dir;                     /* "<output.path>.partial" */
    int64_t nblocks;               /* blocks of the model */
    int64_t done[MPQ_PHASE_COUNT]; /* complete block files 0 .. done-1 of each phase */
    char *hashes;                  /* rank 0: the input hashes (JSON text) */
    const mpq_arch *arch;          /* written into each block file */
} mpq_partial;

/* The figures kept with an entry besides its codes. */
typedef struct mpq_partial_stats {
    double loss, rtn_loss, seconds, energy;
    int64_t iters;
    int64_t bits; /* storage bits of the codes (filled on reading) */
} mpq_partial_stats;

/* One entry of a block file; q and st matter on rank `owner` only. */
typedef struct mpq_partial_entry {
    char name[MPQ_TENSOR_NAME_MAX + 16]; /* tensor, or tensor@candidate */
    const mpq_qlayer *q;
    mpq_partial_stats st;
    int owner;
    const float *bias; /* [nbias] learned bias correction (round.learn_bias), or NULL */
    int64_t nbias;
} mpq_partial_entry;

/* Collective. Opens the partial checkpoint of cfg->output.path: rank 0
 * hashes the inputs [n], creates the directory and its manifest, or checks
 * an existing one and counts its complete blocks; every rank learns the
 * counts. Errors name the directory and the difference. Owner: caller
 * (mpq_partial_free). */
mpq_err mpq_partial_open(mpq_ctx *ctx, const mpq_config *cfg, const char *const *inputs, int64_t n,
                         int64_t nblocks, const mpq_arch *arch, mpq_partial **out);
/* NULL-safe; sets *p to NULL. */
void mpq_partial_free(mpq_partial **p);

/* Collective. Writes block b of `phase` with entries e [n] (the same list,
 * figures included, on every rank; the codes matter on each entry's owner). */
mpq_err mpq_partial_write(mpq_ctx *ctx, mpq_partial *p, mpq_phase phase, int64_t b, int64_t n,
                          const mpq_partial_entry *e);

/* Test hook: MPQ_TEST_KILL_AT="PHASE:BLOCK:WHERE" (phase measure or round,
 * zero-based block, WHERE compute: after the block's Hessian statistics,
 * write: after the first entry of its block file, saved: after the block
 * file is complete) makes rank 0 kill itself with SIGKILL at that point. */
void mpq_partial_test_kill(mpq_ctx *ctx, mpq_phase phase, int64_t b, const char *where);

/* "measure" or "round". */
const char *mpq_phase_name(mpq_phase phase);

/* Local. Opens block file b of `phase` (mpq_ckpt_close). */
mpq_err mpq_partial_open_block(mpq_ctx *ctx, const mpq_partial *p, mpq_phase phase, int64_t b,
                               mpq_ckpt **out);
/* Local. Entry `name` of an open block file: its codes (may be NULL when
 * not wanted; owner: caller) and figures. */
mpq_err mpq_partial_read(mpq_ctx *ctx, const mpq_ckpt *ck, const char *name, mpq_qlayer **q,
                         mpq_partial_stats *st);

/* Local. The learned bias correction of entry `name` of an open block
 * file: *out [n] (owner: caller), or NULL when the entry has none. */
mpq_err mpq_partial_read_bias(mpq_ctx *ctx, const mpq_ckpt *ck, const char *name, int64_t n,
                              float **out);

/* Collective. Removes the directory (after the checkpoint is committed). */
void mpq_partial_remove(mpq_ctx *ctx, mpq_partial *p);

#endif
