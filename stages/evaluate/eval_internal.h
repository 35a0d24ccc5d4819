/* eval_internal.h: what the evaluation sources share inside stages/evaluate:
 * the non-finite checks of activations and logits (eval_finite.c). */
#ifndef MPQ_EVAL_INTERNAL_H
#define MPQ_EVAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_err.h"
#include "mpq_family.h"

struct mpq_ctx;

/* Local. The index of the first NaN or Inf of x [n], or -1 when every value
 * is finite. */
int64_t mpq_eval_first_nonfinite(const float *x, int64_t n);

/* Local. "NaN", "+Inf" or "-Inf" for a non-finite v. */
const char *mpq_eval_nonfinite_kind(float v);

/* Local. The name of block b of f for messages: the common prefix of its
 * quantizable layers' names up to a '.' ("model.layers.3"), "block b"
 * when it has none; b = -1 is the embedding, b = nblocks the head. */
void mpq_eval_block_name(const mpq_family *f, int64_t b, char *buf, size_t len);

/* Local. Runs images [nb] of batch through f one block at a time (with
 * its block source) and raises MPQ_ERR_NUMERIC naming the first stage
 * whose output is not finite (embedding, block, head), the image (first +
 * its index in the batch, of the file `images`) and the value; `who` names
 * the model ("the model", "the reference"). For the classifier's
 * evaluation once its logits were found non-finite: the forward pass
 * alone does not say where. */
mpq_err mpq_eval_locate_nonfinite(struct mpq_ctx *ctx, mpq_family *f, const mpq_batch *batch,
                                  int64_t first, const char *images, const char *who);

#endif
