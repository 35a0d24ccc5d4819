/* family_cnn_internal.h: the sequential CNN family's state, op table and the
 * kernels that its forward pass (family_cnn.c), its backward pass
 * (family_cnn_bwd.c) and its checkpoint tensors (family_cnn_store.c) share.
 * Nothing outside those files includes it. */
#ifndef MPQ_FAMILY_CNN_INTERNAL_H
#define MPQ_FAMILY_CNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_family.h"

struct mpq_ctx;
struct mpq_op;
struct cnn_op_type;
struct cnn_build;

typedef struct cnn_op {
    const struct cnn_op_type *type;
    int line;                       /* configuration line, for messages */
    int64_t ci, hi, wi, co, ho, wo; /* input [ci][hi][wi] -> output [co][ho][wo] */
    int64_t k, stride, pad;         /* conv kernel k x k; pool window */
    int64_t layer;                  /* conv/linear: quantizable layer index */
    const float *w, *b;             /* conv/linear: weight [co][ci*k*k] / [co][ci], bias [co] */
    float *w_own, *b_own;           /* owned copies (converted, folded or substituted) */
    float *bdelta;                  /* conv/linear: learned bias correction [co] (NULL: none) */
    float *scale, *shift;           /* standalone batch norm: y = x * scale[c] + shift[c] */
    const struct mpq_op *cfg;       /* conv/linear: its model.cnn entry */
    const struct mpq_op *bn;        /* conv/linear: the batch norm folded into it (NULL: none) */
} cnn_op;

typedef struct cnn {
    const mpq_model *m;
    const char *src; /* configuration file name, for messages */
    int64_t nops;
    cnn_op *ops; /* [cap_ops]: the first nops built, the next one possibly half-built */
    int64_t cap_ops;
    int64_t nblocks;
    int64_t *bstart; /* [nblocks+1] first op of each block; bstart[nblocks] = nops */
    int64_t in_c, in_h, in_w;
    double in_scale;
    float *in_mean, *in_std; /* [in_c] */
    /* Forward scratch: two activation buffers; conv columns [kc][rows] and
     * GEMM output [co][rows] (rows = images x output positions). */
    float *buf[2];
    float *patches, *gout;
    int64_t cap_buf, cap_patch, cap_gout;
    /* Backward scratch (one block for one batch): acts holds the input of
     * every op of the block but the first, one after another; grad[2] are
     * two gradient buffers [n][widest op of the block]. */
    float *acts, *grad[2];
    int64_t cap_acts, cap_grad;
} cnn;

/* An op type of model.cnn. setup fills o from the configured op for the
 * input o->ci x o->hi x o->wi: the output shape (co, ho, wo) and whatever
 * the op runs with; it sets *folded when it merged itself into the previous
 * op (prev, NULL for the first) and keeps no op of its own. run applies the
 * op to n images: in [n][ci*hi*wi] -> out [n][co*ho*wo]; a conv/linear
 * output is W x + (b + bdelta). backward (NULL: not differentiable) takes
 * the same input `in` and dout [n][op_out], writes din [n][op_in] (NULL:
 * not wanted) and, for a quantizable op, adds the weight gradient to dw
 * [co][ci*k*k] and the bias gradient (dout summed over the images and
 * output positions of each channel) to db [co] (NULL: not wanted). */
typedef struct cnn_op_type {
    const char *name;
    const char *fields;  /* its fields, as the model.cnn schema (mpq_config.h) */
    int quantizable;     /* 1: a conv/linear weight, one block and one layer each */
    mpq_layer_kind kind; /* quantizable ops: the layer kind */
    mpq_err (*setup)(struct mpq_ctx *ctx, struct cnn_build *b, const struct mpq_op *op, cnn_op *o,
                     cnn_op *prev, int *folded);
    mpq_err (*run)(struct mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                   float *out, mpq_layer_hook hook, void *ud);
    mpq_err (*backward)(struct mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                        const float *dout, float *din, float *dw, float *db);
} cnn_op_type;

static inline int64_t cnn_op_in(const cnn_op *o) {
    return o->ci * o->hi * o->wi;
}
static inline int64_t cnn_op_out(const cnn_op *o) {
    return o->co * o->ho * o->wo;
}

/* Makes *buf hold at least a*b floats (contents not kept); *cap counts them. */
mpq_err mpq_cnn_grow(struct mpq_ctx *ctx, float **buf, int64_t *cap, int64_t a, int64_t b);

/* im2col in column layout for conv o on n images [ci][hi][wi]:
 * cols [(c, ky, kx)][(img, oy, ox)], zero outside the image. */
void mpq_cnn_im2col_cols(const float *in, int64_t n, const cnn_op *o, float *cols);

/* The backward of each op type (family_cnn_bwd.c). */
mpq_err mpq_cnn_bwd_conv(struct mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                         const float *dout, float *din, float *dw, float *db);
mpq_err mpq_cnn_bwd_linear(struct mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                           const float *dout, float *din, float *dw, float *db);
mpq_err mpq_cnn_bwd_affine(struct mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                           const float *dout, float *din, float *dw, float *db);
mpq_err mpq_cnn_bwd_relu(struct mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                         const float *dout, float *din, float *dw, float *db);
mpq_err mpq_cnn_bwd_pool(struct mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                         const float *dout, float *din, float *dw, float *db);
mpq_err mpq_cnn_bwd_flat(struct mpq_ctx *ctx, cnn *C, const cnn_op *o, int64_t n, const float *in,
                         const float *dout, float *din, float *dw, float *db);

/* The family's block_backward (mpq_family_ops). */
mpq_err mpq_cnn_block_backward(struct mpq_ctx *ctx, void *state, int64_t b, const mpq_batch *batch,
                               const float *x_in, const float *dy, float *dx, float *const *dw,
                               float *const *db);

/* The family's stored_tensor (mpq_family_ops; family_cnn_store.c). */
mpq_err mpq_cnn_stored_tensor(struct mpq_ctx *ctx, void *state, const mpq_tensor *t, float **out,
                              char *note, size_t len);
/* The checkpoint tensor that holds conv/linear op o's output bias, into
 * name [len] (mpq_layer_info.bias_tensor): the op's own bias tensor, else
 * the beta of the batch norm folded into it (where mpq_cnn_stored_tensor
 * puts the folded bias), else "" (none). */
void mpq_cnn_bias_tensor(const cnn_op *o, char *name, size_t len);

#endif
