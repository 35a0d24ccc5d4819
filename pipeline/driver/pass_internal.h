/* pass_internal.h: the steps of one block-sequential pass over the model
 * (pass.c), shared by `mpquant run` (its measurement and its final
 * rounding) and `mpquant sweep` (its measurement). The pass object holds
 * the state of the pass and of the current block; the caller writes the
 * loop, so the order of the steps reads in one place:
 *
 *   mpq_pass_create
 *   for b in blocks:
 *       mpq_pass_hessian(b)     calibrate and Hessian: H of block b's inputs
 *       mpq_pass_layers(b)      the block's weights and their statistics
 *       mpq_pass_add_job ...    the caller's rounding jobs
 *       mpq_pass_round(stage)   round: every job of the block, over the ranks
 *       mpq_pass_keep           the results into a table (measuring), or the
 *                               caller takes them, then mpq_pass_results_done
 *       mpq_pass_propagate(b)   propagate (quantized propagation)
 *       mpq_pass_next(b)        the block is done
 *   mpq_pass_finish             hessian.save
 *   mpq_pass_destroy
 *
 * Local failures are agreed before every collective step. Not a public
 * interface. */
#ifndef MPQ_PASS_INTERNAL_H
#define MPQ_PASS_INTERNAL_H

#include <stdint.h>

#include "mpq_calibrate.h"
#include "mpq_hessian.h"
#include "mpq_importance.h"
#include "mpq_log.h"
#include "mpq_round.h"
#include "mpq_session.h"

typedef struct mpq_pass_opts {
    /* 1: every block's input comes from the full-precision blocks before it
     * (propagation runs with the Hessian step; the working model is not
     * changed during the pass); 0: from the working model after the earlier
     * blocks' results were substituted (mpq_pass_propagate). */
    int advance;
    /* Hessian statistics from this file (hessian.load) instead of
     * calibrating, or kept and written to this one at the end
     * (hessian.save); "" or NULL: none. Only with advance = 1: saved
     * statistics describe full-precision block inputs. */
    const char *hload, *hsave;
    int warn_rows; /* 1: warn of statistics with fewer rows than input channels */
    /* 1: no calibration data (RTN without losses): no statistics, no
     * forward passes; jobs get H = NULL and a diagonal of ones. */
    int data_free;
    /* 1: a job's codes stay with the first of its owners (mpq_round_block_owned):
     * the caller writes them from there and reads them back where needed */
    int owned;
    /* 1: every rank holds every layer's weights (p->W; the block loss
     * refines on every rank); 0: the ranks that round a layer (its input
     * group's owners), and for a job whose spec has whole-layer values
     * (mpq_round_fits_whole) every rank that holds its result */
    int weights_all;
    /* Names in messages: who ("run", "sweep") in internal errors, label in
     * the progress lines. */
    const char *who, *label;
    int32_t ncol; /* the most jobs of one layer */
    /* 1: also keep the full-precision model's activations (calib_fp), which
     * advance with the working model's (block loss with round.input_drop) */
    int keep_fp;
    /* 1: mpq_pass_keep also measures each result's zstd-coded size
     * (budget.count = "coded") */
    int coded;
} mpq_pass_opts;

typedef struct mpq_pass {
    const mpq_session *ses; /* rounds ses->fq, on ses->set, skipping ses->excl */
    mpq_pass_opts o;
    int load, save;      /* hessian.load / hessian.save in use */
    mpq_calib *calib;    /* the calibration activations (not when loading) */
    mpq_calib *calib_fp; /* with keep_fp: the full-precision model's, same chunks */
    mpq_hstat **kept;    /* loaded, or kept for saving */
    int64_t nkept;
    mpq_progress prog;
    double *ones; /* data_free: [widest input] 1.0, every job's diagonal */

    /* The current block. */
    mpq_hstat **stats; /* [nstats] measured statistics (owned) */
    int64_t nstats;
    int64_t *groups;           /* [nstats] their input groups */
    mpq_hstat **bst;           /* [nb] the block's statistics (views) */
    int64_t *bgr;              /* [nb] their input groups */
    mpq_hset *bown;            /* [nb] their owners: the ranks that hold H and round */
    int64_t nb;                /* statistics of the block */
    int64_t nlb;               /* layers of the block (not excluded) */
    int64_t *lay;              /* [nlb] their layer indices */
    float **W;                 /* [nlb] their weights [out][in] (owned; NULL on a rank
                                  that does not need them, o.weights_all) */
    const mpq_hstat **H;       /* [nlb] their statistics (H on the owners only) */
    mpq_hset *own;             /* [nlb] their owners */
    int64_t njobs;             /* jobs of the block */
    mpq_round_job *jobs;       /* [njobs] */
    mpq_round_result *results; /* [njobs] after mpq_pass_round */
    int64_t *jl;               /* [njobs] layer of each job */
    mpq_err add_err;           /* a failure of mpq_pass_add_job, agreed by mpq_pass_round */
    int32_t *jk;               /* [njobs] column of each job */
} mpq_pass;

/* Collective. Allocates the pass, then (stage "hessian") loads the saved
 * statistics or embeds the calibration samples. Owner of *out: caller
 * (mpq_pass_destroy). */
mpq_err mpq_pass_create(mpq_ctx *ctx, const mpq_session *ses, const mpq_pass_opts *o,
                        mpq_pass **out);
/* Local. NULL-safe; sets *p to NULL. */
void mpq_pass_destroy(mpq_pass **p);

/* Collective. Calibrate and Hessian (stage "hessian"): block b runs on the
 * calibration samples and H of each of its input groups is reduced (with
 * advance = 1 the block's output becomes the next block's input in the same
 * forward pass); or the block's saved statistics are taken. */
mpq_err mpq_pass_hessian(mpq_ctx *ctx, mpq_pass *p, int64_t b);
/* Collective (local work, agreed). The weights and statistic of every layer
 * of block b that is not excluded, in layer order: p->lay, p->W (see
 * o.weights_all), p->H. */
mpq_err mpq_pass_layers(mpq_ctx *ctx, mpq_pass *p, int64_t b);
/* Local. Adds the job that rounds layer p->lay[i] at column k with spec and
 * method (at most o.ncol jobs per layer), and with rate >= 0 its own
 * round.rate_lambda (a rate-constrained candidate; -1: the options'); reads
 * the layer's weights here if the spec needs them and they are not (a
 * failure is kept in p->add_err). */
void mpq_pass_add_job(struct mpq_ctx *ctx, mpq_pass *p, int64_t i, int32_t k, const mpq_qspec *spec,
                      const mpq_round_method *method, double rate);
/* Collective. Rounds the block's jobs over the ranks, timed as `stage`:
 * every rank gets every result, or with o.owned the codes stay with the
 * first owner of each job (p->own) and the figures reach every rank. */
mpq_err mpq_pass_round(mpq_ctx *ctx, mpq_pass *p, mpq_stage stage);
/* Collective. Measuring: the energies of the block's layers and every
 * result into t at (layer, column): the figures on every rank, the codes
 * where they are (every rank, or the job's first owner with o.owned); with
 * o.coded the coded sizes (t->coded), measured where the codes are and
 * shared. */
mpq_err mpq_pass_keep(mpq_ctx *ctx, mpq_pass *p, mpq_measure_table *t);
/* Collective. After the caller took the results (local work with outcome
 * err): frees them and agrees on err. */
mpq_err mpq_pass_results_done(mpq_ctx *ctx, mpq_pass *p, mpq_err err);
/* Collective. Propagate (stage "propagate"), with advance = 0 only: block b
 * runs again on the working model's (substituted) weights, giving the next
 * block's input. */
mpq_err mpq_pass_propagate(mpq_ctx *ctx, mpq_pass *p, int64_t b);
/* Collective. Block b is done: frees its weights and statistics (keeping
 * them for hessian.save) and reports progress. */
mpq_err mpq_pass_next(mpq_ctx *ctx, mpq_pass *p, int64_t b);
/* Collective. Ends the progress report and writes hessian.save. */
mpq_err mpq_pass_finish(mpq_ctx *ctx, mpq_pass *p);

/* Collective. Block b was finished by an earlier run: the activations
 * move past it without measuring (with hessian.save: measured and kept as
 * usual). Then mpq_pass_next as after a computed block. */
mpq_err mpq_pass_skip(mpq_ctx *ctx, mpq_pass *p, int64_t b);

#endif
