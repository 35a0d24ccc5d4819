/* calib_internal.h: what the calibration sources and the block loop share
 * (calibrate.c, calib_generated.c, calib_rounds.c). Not a public
 * interface. */
#ifndef MPQ_CALIB_INTERNAL_H
#define MPQ_CALIB_INTERNAL_H

#include <stdint.h>

#include "mpq_calibrate.h"

struct mpq_ctx;

/* The splitmix64 finaliser: the counter-based hash of every seeded draw. */
uint64_t mpq_calib_mix64(uint64_t z);
/* Allocates a set of n samples with its len / offset arrays. Owner: caller
 * (mpq_calib_set_destroy). */
mpq_err mpq_calib_set_alloc(struct mpq_ctx *ctx, mpq_task task, int64_t n, mpq_calib_set **out);

/* The block loop's state (mpq_calibrate.h). */
struct mpq_calib {
    mpq_family *f;
    const mpq_family_info *info;
    const mpq_calib_set *set;
    int64_t chunk_samples;
    int64_t nchunks_mine;
    int64_t rounds;   /* chunks of the rank with the most: ceil(chunks / ranks) */
    int64_t *chunk;   /* [nchunks_mine] chunk indices owned by this rank */
    int64_t *row_off; /* [nchunks_mine + 1] first row of each owned chunk in x */
    int64_t rows;     /* rows of all owned chunks */
    int64_t next;     /* block whose input x is */
    float *x, *y;     /* [rows][width] activations and the next block's buffer */
    int64_t cap_x, cap_y;
    float *hx, *hy; /* a shared chunk's part run for another rank: its input and output */
    int64_t cap_hx, cap_hy;
    int64_t rows_run; /* rows this rank ran through the last block */
};

/* The statistics a block measures: stats[stat_of_layer[l]] receives the
 * input of layer l (-1: not a group's first layer); stats is
 * NULL-terminated. */
typedef struct mpq_calib_hook {
    int64_t *stat_of_layer;
    mpq_hstat **stats;
} mpq_calib_hook;

/* Samples [*s0, *s1) of a chunk. */
void mpq_calib_chunk_range(const mpq_calib *c, int64_t chunk, int64_t *s0, int64_t *s1);
/* *p holds at least n floats (grown without keeping its contents). */
mpq_err mpq_calib_ensure_cap(struct mpq_ctx *ctx, float **p, int64_t *cap, int64_t n);
/* Runs block b over every chunk, measuring into h when not NULL
 * (collective then), and makes its output the current activations
 * (calib_rounds.c). */
mpq_err mpq_calib_run_block(struct mpq_ctx *ctx, mpq_calib *c, int64_t b, mpq_calib_hook *h);

#endif
