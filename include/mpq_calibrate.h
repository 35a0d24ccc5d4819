/* mpq_calibrate.h: calibration samples and the block-sequential loop that
 * measures the Hessian statistics (mpq_hessian.h) of every distinct layer
 * input of a model family (mpq_family.h).
 *
 * Samples are grouped into chunks of `chunk_samples` consecutive samples;
 * chunk c belongs to rank c % size. A rank keeps the activations of its own
 * samples between blocks (memory: its rows x the block's width). For block
 * b, every owned chunk is run through the block as one batch (the same
 * batch whichever rank runs it); the family's hook hands over each layer
 * input, which is accumulated into the statistic of the layer's input group
 * (q/k/v share one, gate/up share one) inside that chunk; then the
 * statistics are reduced exactly. H is therefore bit-identical for any
 * number of ranks (given chunk_samples).
 *
 * Propagation: mpq_calib_block with advance = 1 replaces the activations by
 * the block's output computed with the block's current weights in the same
 * pass (full-precision propagation). For quantized propagation, measure with
 * advance = 0, substitute the block's quantized weights
 * (mpq_family_set_weight), then call mpq_calib_advance.
 */
#ifndef MPQ_CALIBRATE_H
#define MPQ_CALIBRATE_H

#include <stdint.h>

#include "mpq_err.h"
#include "mpq_family.h"
#include "mpq_hessian.h"

struct mpq_ctx;
struct mpq_tokenizer;
struct mpq_config;

/* Calibration samples, identical on every rank. */
typedef struct mpq_calib_set {
    mpq_task task;
    int64_t nsamples;
    int64_t *len;        /* [nsamples] rows of each sample (tokens; 1 per image) */
    int64_t *offset;     /* [nsamples + 1] first row of each sample */
    int32_t *tokens;     /* LM: [offset[nsamples]] token ids */
    int64_t input_numel; /* classifier: values per image */
    float *input;        /* classifier: [nsamples][input_numel] raw values */
} mpq_calib_set;

/* Local. Language models: documents of the text file (split at blank lines,
 * encoded as llama2.c does, truncated to seq_len tokens, at least 2 tokens),
 * `segments` of them chosen by a seeded shuffle (all of them when fewer
 * exist, with a warning). Owner: caller. */
mpq_err mpq_calib_set_text(struct mpq_ctx *ctx, const struct mpq_tokenizer *tok, const char *path,
                           int64_t seq_len, int64_t segments, uint64_t seed, mpq_calib_set **out);
/* Local. Classifiers: images [first, first + count) of an IDX image file as
 * raw values (0..255). */
mpq_err mpq_calib_set_images(struct mpq_ctx *ctx, const char *path, int64_t first, int64_t count,
                             mpq_calib_set **out);
/* Local. Random inputs for the family: LM sequences of seq_len tokens (BOS
 * first, then uniform ids), or images of uniform raw values 0..255. */
mpq_err mpq_calib_set_random(struct mpq_ctx *ctx, const mpq_family_info *info, int64_t nsamples,
                             int64_t seq_len, uint64_t seed, mpq_calib_set **out);
/* Local. The samples the configuration's calibration section asks for
 * (source text needs tok; images/random need the family's info). */
mpq_err mpq_calib_set_from_config(struct mpq_ctx *ctx, const struct mpq_config *cfg,
                                  const mpq_family_info *info, const struct mpq_tokenizer *tok,
                                  mpq_calib_set **out);
/* NULL-safe; sets *s to NULL. */
void mpq_calib_set_destroy(mpq_calib_set **s);

typedef struct mpq_calib mpq_calib;

/* Local. Embeds this rank's chunks of `set` (which must outlive the
 * object) as the input of block 0. Owner: caller. */
mpq_err mpq_calib_create(struct mpq_ctx *ctx, mpq_family *f, const mpq_calib_set *set,
                         int64_t chunk_samples, mpq_calib **out);
/* NULL-safe; sets *c to NULL. */
void mpq_calib_destroy(mpq_calib **c);

/* Collective. Measures the statistics of every input group of block b (in
 * layer order of the groups' first layers; each named after that layer) and
 * reduces them onto `target` (MPQ_HSTAT_ALL: every rank). *groups[k] is the
 * layer index of statistic k. advance: see above. Inputs must satisfy
 * |x| <= 2^bound_log2. Owner of *stats and *groups: caller
 * (mpq_hstats_free, mpq_free). */
mpq_err mpq_calib_block(struct mpq_ctx *ctx, mpq_calib *c, int64_t b, int bound_log2, int target,
                        int advance, int64_t *nstats, mpq_hstat ***stats, int64_t **groups);
/* Local. Runs block b on the activations without measuring (quantized
 * propagation after substituting the block's weights). */
mpq_err mpq_calib_advance(struct mpq_ctx *ctx, mpq_calib *c, int64_t b);
/* The block whose input the activations currently are. */
int64_t mpq_calib_next_block(const mpq_calib *c);

#endif
