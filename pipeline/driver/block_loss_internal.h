/* block_loss_internal.h: the state of the block loss (run_block_loss.c)
 * and its optional variables besides the rounding offsets, the scale
 * factors and the bias corrections (run_block_vars.c). */
#ifndef MPQ_BLOCK_LOSS_INTERNAL_H
#define MPQ_BLOCK_LOSS_INTERNAL_H

#include <math.h>
#include <stdint.h>

#include "mpq_calibrate.h"
#include "mpq_coll.h"
#include "pass_internal.h"
#include "run_internal.h"

typedef struct bl_layer {
    int64_t l, j, rows, cols, n;
    mpq_qlayer *q;
    uint8_t *ca, *cb, *best; /* [n] codes of a and b; the best solution's codes */
    float *u0, *o;           /* [n] position of w0 in [a, b]; offset (NaN: fixed) */
    float *dv;               /* [n] b - a, the value step of the choice */
    float *w, *dw;           /* [n] hard weights; the gradient of one chunk */
    int64_t *acc;            /* [n] fixed-point sum of dL/do over the chunks */
    /* round.block_scales: per group g a factor m[g] of its starting scale
     * s0[g] (the stored scale is s0 m in storage precision), sacc[g] the
     * fixed-point sum of dL/dm m = sum over the group of dL/dw w, and the
     * best solution's stored scales; ng = 0: scales not learned */
    int64_t ng;
    double *s0, *m;
    int64_t *sacc;
    float *sbest;
    /* round.learn_bias: the correction of the output bias per row bd[nb],
     * its step unit (the layer's output error per channel at the start,
     * |w0 - w| of the row times the rms of the layer's input), the
     * fixed-point sums of dL/dbd, one chunk's gradient, the best
     * solution's correction; nb = 0: not learned */
    int64_t nb;
    float *bd, *bunit, *db, *bbest;
    int64_t *bacc;
    /* descent (every step sees every sample): the offsets and scale factors
     * of the best solution, to return to when a step raises the loss */
    float *obest;
    double *mbest;
    /* round.block_momentum: the running averages of acc, sacc and bacc
     * (NULL: off) */
    float *mo, *smo, *bmo;
    uint8_t *tabu;   /* [n] 1: its single flip was undone (until a step is kept); 2: the
                        current step flipped it */
    const float *w0; /* [n] the original weights (the pass's) */
    mpq_ef *ef;      /* block_comm = int8: this rank's residual of the sums */
} bl_layer;

typedef struct bl_state {
    mpq_ctx *ctx;
    run_state *s;
    mpq_calib *c, *cfp; /* the quantized model's block inputs; the full-precision one's */
    double drop;        /* round.input_drop */
    uint64_t seed;
    int64_t t;          /* the step (the input mix of a training pass) */
    float *xmix, *tmix; /* [rows of the largest chunk][win], [..][wout]: mixed input, target */
    int64_t win;
    int64_t b, nl, nper, nchunks, mine, wout;
    int64_t *cstart;  /* [nchunks + 1] global index of each chunk's first sample */
    int64_t nsamples; /* in all chunks */
    int64_t B;        /* samples per step (nsamples: all) */
    int64_t rows_all; /* activation rows of all samples */
    bl_layer *L;
    float **dwp; /* [nper] dw of the block's layers by position, NULL where not learned */
    float **dbp; /* [nper] db likewise (round.learn_bias), NULL where not learned */
    double *msq; /* round.learn_bias: [nl][nchunks][2] each layer's input rows' mean
                    squares, summed, and the rows */
    int64_t hk;  /* ... the chunk whose inputs the hook is summing */
    float **yfp; /* [mine] full-precision outputs of this rank's chunks */
    /* [mine] the KL term's target block outputs: yfp's (round.kl_target =
     * block: the same entries) or the full-precision block's on the
     * full-precision model's activations (model: owned) */
    float **ykl;
    float *y, *dy; /* [rows of the largest chunk][wout] */
    double *closs; /* [nchunks] block loss per chunk */
    /* round.loss = "network": the prediction term, its KL per chunk, its
     * weight (round.kl_weight), and the step-0 sums that normalise both
     * terms (loss = block / mse0 + kl_weight KL / kl0); mse, kl: the last
     * measured sums */
    mpq_block_net *net;
    double *ckl;
    double beta, mse0, kl0, mse, kl;
    double scale;     /* fixed point: units per gradient unit */
    double sscale;    /* ... of the scale factors' sums */
    double bscale;    /* ... of the bias corrections' sums */
    double clampv;    /* largest |value| a chunk may add */
    int scales;       /* round.block_scales = on */
    int model_target; /* round.loss = network, round.kl_target = model */
    int biases;       /* round.learn_bias = on */
    int comm8;        /* round.block_comm = int8 */
    double momentum;  /* round.block_momentum (0: off) */
    double *g;        /* int8: [n of the largest layer] the sum being compressed */
} bl_state;

/* A gradient value v in the fixed point of `scale` units per gradient
 * unit, clamped to what a chunk may add (S->clampv), as every integer sum
 * of the block loss takes it. */
static inline int64_t mpq_bl_fixed(const bl_state *S, double v, double scale) {
    v *= scale;
    v = v > S->clampv ? S->clampv : v < -S->clampv ? -S->clampv : v;
    return (int64_t)llround(v);
}

/* Whether weight k of x takes the upper grid point b at its offset o. */
static inline int mpq_bl_takes_b(const bl_layer *x, int64_t k, float o) {
    return x->u0[k] + o > 0.5f;
}

/* Weight k's offset after one signed step of lr against its gradient sum,
 * kept in [-0.5, 0.5]. */
static inline float mpq_bl_moved(const bl_layer *x, int64_t k, double lr) {
    const float o = x->o[k] - (float)(x->acc[k] > 0 ? lr : -lr);
    return o > 0.5f ? 0.5f : o < -0.5f ? -0.5f : o;
}

/* |gradient sum| of weight k of x. */
static inline int64_t mpq_bl_mag(const bl_layer *x, int64_t k) {
    return x->acc[k] < 0 ? -x->acc[k] : x->acc[k];
}

/* Descent (every step sees every sample, so every step's loss is measured):
 * the copies of the offsets and scale factors of the best solution. */
mpq_err mpq_bl_descent_init(bl_state *S);
/* The current offsets and scale factors as the best solution's. */
void mpq_bl_descent_keep(bl_state *S);
/* Back to the best solution's offsets, scale factors and bias corrections
 * (the caller installs them); the weights the undone step flipped stay
 * where they are in later steps when single (tabu 1), else are free again. */
void mpq_bl_descent_restore(bl_state *S, int single);
/* The least gradient magnitude |acc| a weight needs to change side in a
 * step of lr, so that about a fraction rho of the weights the step would
 * flip do (the largest magnitudes; at least one); 0 with rho >= 1 (no
 * limit). Weights of tabu 1 do not count. */
int64_t mpq_bl_flip_threshold(const bl_state *S, double lr, double rho);

/* round.block_scales: the scale factors of layer x (per-group or
 * per-channel scales), all 1: the stored scales unchanged. */
mpq_err mpq_bl_scales_init(mpq_ctx *ctx, bl_layer *x);
/* Layer x's dL/dm m = sum of dL/dw w over each group, of the gradient in
 * x->dw: into x->sacc in fixed point, or with gmax only the largest
 * |value| into *gmax. */
void mpq_bl_scale_grad(const bl_state *S, bl_layer *x, double *gmax);

/* round.block_momentum: layer x's running averages, 0. */
mpq_err mpq_bl_momentum_init(mpq_ctx *ctx, bl_layer *x);
void mpq_bl_momentum_free(bl_layer *x);
/* Every layer's summed gradients of this step (acc, sacc, bacc, the same
 * on every rank) blended into their running averages, which replace them
 * for the step. */
void mpq_bl_momentum(bl_state *S);

/* round.learn_bias: the bias correction of layer x, 0, when the layer has
 * a bias slot (else x->nb stays 0). */
mpq_err mpq_bl_bias_init(mpq_ctx *ctx, const mpq_family_info *fi, bl_layer *x);
/* The layer hook that sums the squares of each layer's input on a chunk
 * (ud: the state; S->hk is the chunk's global index while it runs). */
mpq_err mpq_bl_bias_hook(mpq_ctx *ctx, void *ud, int64_t layer, const float *x, int64_t rows,
                         int64_t cols);
/* Collective. The bias corrections' units from the squared inputs summed
 * per chunk (in chunk order: the same bits for any rank count) and the
 * hard weights of step 0. */
mpq_err mpq_bl_bias_units(bl_state *S);
/* Layer x's bias gradient x->db into x->bacc in fixed point, or with gmax
 * only its largest |value| into *gmax. */
void mpq_bl_bias_grad(const bl_state *S, bl_layer *x, double *gmax);
/* Local. One signed step of lr units of every bias correction of x. */
void mpq_bl_bias_step(bl_layer *x, double lr);
/* Collective. Sums every layer's bias gradients over the ranks. */
mpq_err mpq_bl_bias_sum(bl_state *S);
/* The best correction of x into the run's layer and the working model. */
mpq_err mpq_bl_bias_finish(bl_state *S, bl_layer *x);
/* One line: how many corrections, and their mean size in units. */
void mpq_bl_bias_log(const bl_state *S);

#endif
