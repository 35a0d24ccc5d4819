/* calib_internal.h: what the calibration sources share (calibrate.c,
 * calib_generated.c). Not a public interface. */
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

#endif
