/* run_internal.h: state shared by the sources of `mpquant run`
 * (pipeline/driver/run*.c). Not a public interface. */
#ifndef MPQ_RUN_INTERNAL_H
#define MPQ_RUN_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "measure_internal.h"
#include "mpq_importance.h"
#include "mpq_run.h"
#include "mpq_session.h"
#include "partial_internal.h"

struct mpq_pass;

typedef struct run_state {
    mpq_run_opts opts;
    mpq_session *ses; /* model, families, candidates, layers, calibration samples */
    int propagate_q;  /* calibration.propagate = quantized */
    int data_free;    /* uniform RTN without round.rtn_loss: no calibration */

    /* Measurements (mixed precision): column k of layer l is candidate k
     * (ses->ncand: the pinned spec). The codes are kept for the probes and
     * the final codes, in meas.q, or (with a partial checkpoint) on disk. */
    mpq_measure_table meas;
    double *score;     /* [nl][maxc] importance score of each candidate */
    int32_t sens_cand; /* candidate probed for the sensitivity */
    int measured;      /* 1: measured in this run (codes in meas.q or on disk) */

    int32_t *choice; /* [nl] chosen candidate (-1 excluded) */
    mpq_run_result *res;
    mpq_partial *part; /* with output.path: the block files (resume) */
} run_state;

/* Collective. Saves / loads the measurements (run_measure_io.c). */
mpq_err mpq_run_measure_save(mpq_ctx *ctx, const run_state *s, const char *path);
mpq_err mpq_run_measure_load(mpq_ctx *ctx, run_state *s, const char *path);

/* output.exports (run_exports.c). Local: checks every entry (format, the
 * need for output.path) and, with out, appends each destination to out[*n]
 * (room for output.exports.n more) after checking that it may be written.
 * Collective: writes the exports from the committed checkpoint. */
mpq_err mpq_run_exports_outputs(mpq_ctx *ctx, const mpq_config *cfg, mpq_session_file *out,
                                int64_t *n);
mpq_err mpq_run_write_exports(mpq_ctx *ctx, const mpq_config *cfg);

/* Collective. round.loss = "block" (run_block_loss.c): refines the codes
 * of block b's rounded layers (s->res->layers[].q, on every rank) together
 * against the full-precision block's output on the calibration inputs
 * p->calib holds, then installs them in the working model. */
mpq_err mpq_run_block_refine(mpq_ctx *ctx, run_state *s, struct mpq_pass *p, int64_t b);

/* Whether the network loss's KL term follows the full-precision model's
 * prediction (round.kl_target = "model"), which needs the pass to keep the
 * full-precision model's activations. */
static inline int mpq_run_kl_model_target(const mpq_config *cfg) {
    return strcmp(cfg->round.loss, "network") == 0 && strcmp(cfg->round.kl_target, "model") == 0;
}

/* round.loss = "network": the prediction term of block b (run_block_net.c). */
typedef struct mpq_block_net mpq_block_net;
/* Local. Buffers for batches of up to rows rows through the blocks after b
 * and the head of f. */
mpq_err mpq_block_net_create(mpq_ctx *ctx, mpq_family *f, int64_t b, int64_t rows,
                             mpq_block_net **out);
void mpq_block_net_destroy(mpq_block_net **n);
/* Local. *kl (may be NULL) = the sum over the batch's rows of KL(p || q),
 * p and q the predictions of f from block b's outputs yfp and yq through
 * the later blocks and the head; with dy, adds coef dKL/dyq to it. */
mpq_err mpq_block_net_kl(mpq_ctx *ctx, mpq_block_net *n, mpq_family *f, const mpq_batch *bt,
                         const float *yq, const float *yfp, double coef, float *dy, double *kl);

/* The analytic minimum of memory per rank in MiB (mpq_run_result.rss_min_mib). */
double mpq_run_memory_minimum(const mpq_session *ses, int ranks);

/* ---- block files and resume (run_resume.c) ---- */

/* Local. Puts layer l's codes q, dequantized, into the working model. */
/* run_bias.c: the learned bias corrections in the checkpoint. The layer
 * whose learned correction goes to tensor `name`, or -1. */
int64_t mpq_run_bias_layer(const run_state *s, const char *name);
/* Local. Adds layer l's correction to *vals [t->numel], the values stored
 * for tensor t (NULL: t's own values, read here; owner: caller). */
mpq_err mpq_run_bias_values(mpq_ctx *ctx, const run_state *s, const mpq_tensor *t, int64_t l,
                            float **vals);
/* The model's architecture, with q/k/v and o biases when the checkpoint
 * adds bias tensors the model lacks. */
mpq_arch mpq_run_bias_arch(const run_state *s);
/* Collective. Writes the bias tensors the model lacks, after its own. */
mpq_err mpq_run_bias_write_added(mpq_ctx *ctx, const run_state *s, mpq_ckpt_writer *w);

mpq_err mpq_run_install_layer(mpq_ctx *ctx, run_state *s, int64_t l, const mpq_qlayer *q);
/* The candidates [k0, k1) measured for layer l (a pinned layer: its own). */
void mpq_run_measure_range(const mpq_session *ses, int64_t l, int32_t *k0, int32_t *k1);
/* Collective. With output.path: opens the partial checkpoint (s->part)
 * and arms the stop signals (mpq_stop.h). */
mpq_err mpq_run_resume_open(mpq_ctx *ctx, run_state *s);
/* Blocks of `phase` already on disk (0 without a partial checkpoint). */
int64_t mpq_run_done(const run_state *s, mpq_phase phase);
/* Logs "resuming after block k of N" when blocks of `phase` are on disk. */
void mpq_run_resume_log(mpq_ctx *ctx, const run_state *s, mpq_phase phase);
/* Collective. Writes block b's results (measuring: s->meas; final pass:
 * s->res->layers, whose codes then leave memory) to its block file. */
mpq_err mpq_run_save_block(mpq_ctx *ctx, run_state *s, const struct mpq_pass *p, int64_t b,
                           mpq_phase phase);
/* Collective. Block b of `phase` is on disk: its results are read back
 * (final pass: installed) and the activations move past it. */
mpq_err mpq_run_skip_block(mpq_ctx *ctx, run_state *s, struct mpq_pass *p, int64_t b,
                           mpq_phase phase);
/* Collective. After computed block b: stops the run (MPQ_ERR_STOPPED)
 * when a stop signal reached any rank. */
mpq_err mpq_run_block_done(mpq_ctx *ctx, const run_state *s, int64_t b, mpq_phase phase);
/* Local. The measured codes of layer l, candidate col, from disk (an
 * mpq_importance_probe codes callback; ud: the run_state). */
mpq_err mpq_run_measured_codes(mpq_ctx *ctx, void *ud, int64_t l, int64_t col, mpq_qlayer **q);
/* Collective. Mixed precision with full-precision propagation: the
 * measured codes of the chosen candidates are final (same H, deterministic
 * method); each is installed in the working model and, with a partial
 * checkpoint, written block by block as the final codes. */
mpq_err mpq_run_take_measured(mpq_ctx *ctx, run_state *s);
/* Local. With a partial checkpoint and a language model: block b's
 * quantized weights leave the working model (they are on disk). */
mpq_err mpq_run_release_block(mpq_ctx *ctx, run_state *s, int64_t b);
/* Local. on = 1: the working model brings each released block back from
 * its block file while a whole forward pass runs (the evaluation); 0: off. */
void mpq_run_stream_blocks(run_state *s, int on);
/* Local. Layer l's final codes from its block file; *ck / *ck_block cache
 * the open block file between calls (close *ck after the last). */
mpq_err mpq_run_layer_codes(mpq_ctx *ctx, const run_state *s, int64_t l, mpq_ckpt **ck,
                            int64_t *ck_block, mpq_qlayer **out);

#endif
