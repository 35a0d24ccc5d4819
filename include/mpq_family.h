/* mpq_family.h: model families (Llama decoder, sequential CNN) behind one
 * interface, chosen by name from a registry of ops tables (STYLE.md rule 9).
 *
 * A family turns an opened checkpoint (mpq_model) plus the configuration
 * into a runnable network split into blocks:
 *
 *   input --embed--> x0 --block 0--> x1 --block 1--> ... x_B --head--> logits
 *
 * Activations between blocks are fp32 matrices [rows][width], row-major.
 *   - Llama: one row per token, width = dim for every block. A batch is a set
 *     of sequences stored one after another (mpq_batch.len gives each
 *     sequence's token count); every sequence starts at position 0 and
 *     attends causally to its own tokens only.
 *   - CNN: one row per image; a row is the image's activation tensor
 *     flattened channel-height-width, so widths differ between blocks.
 *
 * Every quantizable layer (linear or conv weight) is listed with its shape
 * as a GEMM matrix [out][in], the block it belongs to and its input group:
 * layers that read the same input matrix share a group (q/k/v; gate/up).
 * The group id is the index of the group's first layer.
 *
 * Calibration runs one block at a time and passes a hook that receives each
 * quantizable layer's input matrix X [rows][in] such that the layer output
 * is X W^T: for a linear layer the normalised activations, for a conv layer
 * the im2col patches [(image, out_y, out_x)][(c_in, k_y, k_x)]. Hence
 * H = X^T X is the layer's Hessian for the squared output error.
 *
 * Weights are read from the memory-mapped model; F16/BF16 (or unaligned)
 * tensors are converted once to family-owned fp32 copies. set_weight copies
 * substituted (dequantized) weights into a family-owned buffer; the mapping
 * is never written.
 *
 * A family object is not thread-safe (it owns scratch buffers). All
 * functions are local (no communication) unless stated.
 */
#ifndef MPQ_FAMILY_H
#define MPQ_FAMILY_H

#include <stdint.h>

#include "mpq_err.h"
#include "mpq_model.h"
#include "mpq_registry.h"

struct mpq_ctx;
struct mpq_config;

typedef enum mpq_layer_kind { MPQ_LAYER_LINEAR = 0, MPQ_LAYER_CONV } mpq_layer_kind;

/* What the network's output means (chooses the evaluation). */
typedef enum mpq_task { MPQ_TASK_LM = 0, MPQ_TASK_CLASSIFIER } mpq_task;

/* One quantizable layer. */
typedef struct mpq_layer_info {
    char name[MPQ_TENSOR_NAME_MAX];   /* short name, e.g. "model.layers.0.self_attn.q_proj" */
    char tensor[MPQ_TENSOR_NAME_MAX]; /* checkpoint tensor of its weight */
    mpq_layer_kind kind;
    int64_t out, in; /* weight as a GEMM matrix [out][in]; conv: in = c_in*k_h*k_w */
    int64_t block;   /* index of the block that contains it */
    int64_t group;   /* input group: index of the first layer reading the same input */
    /* conv only: kernel and geometry (0 for linear layers) */
    int64_t c_in, k_h, k_w, stride, padding;
    /* The checkpoint tensor that holds the bias added to the layer's output
     * ("": the layer takes no bias, and no learned one, round.learn_bias).
     * It may be absent from the model (a Llama attention projection without
     * attention_bias): a checkpoint with learned biases then adds it. */
    char bias_tensor[MPQ_TENSOR_NAME_MAX];
} mpq_layer_info;

/* A batch of inputs. Llama: nseq sequences of len[s] tokens, rows = sum of
 * len, tokens[rows] (sequence s occupies rows [sum len[<s], +len[s])). CNN:
 * nseq images, rows = nseq, input[nseq][input_numel] raw values before the
 * configured preprocessing (e.g. pixels 0..255); len and tokens unused. */
typedef struct mpq_batch {
    int64_t nseq;
    const int64_t *len;
    int64_t rows;
    const int32_t *tokens;
    const float *input;
} mpq_batch;

/* Receives the input matrix x [rows][cols] of quantizable layer `layer`
 * during a block forward. It is called once for every layer, in layer
 * order; layers of one group receive the same pointer. x is only valid
 * during the call. Returning an error stops the forward pass. */
typedef mpq_err (*mpq_layer_hook)(struct mpq_ctx *ctx, void *ud, int64_t layer, const float *x,
                                  int64_t rows, int64_t cols);

/* Fixed facts about a built family, filled by the ops' create. */
typedef struct mpq_family_info {
    mpq_task task;
    int64_t nblocks;
    int64_t nlayers;
    mpq_layer_info *layers; /* nlayers entries, owned by the family object */
    int64_t out_width;      /* logits per row: vocab size or classes */
    int64_t max_seq;        /* Llama: longest sequence (seq_len); CNN: 0 */
    int64_t input_numel;    /* CNN: values per image (c*h*w); Llama: 0 */
    int64_t vocab_size;     /* Llama: vocabulary; CNN: 0 */
} mpq_family_info;

/* The ops table of one family. `state` is the family's private object. */
typedef struct mpq_family_ops {
    const char *name; /* "llama", "cnn" */
    /* 1 when the family's checkpoints hold a Llama decoder under the
     * canonical names of mpq_model.h with its hyper-parameters in mpq_arch
     * (dim, heads, vocabulary, RoPE order): `inspect` prints them, and the
     * exports can reorder q/k rows, write a Hugging Face config.json or a
     * llama2.c file. 0 when the tensors keep the checkpoint's own names and
     * the configuration describes the network (cnn). */
    int llama_layout;
    /* Local. Checks that model m holds every tensor its mpq_arch implies,
     * with the implied shapes (errors name the file and the tensor); NULL
     * when the architecture implies nothing (a reader of a format that
     * carries this family calls it after filling the model). */
    mpq_err (*check_model)(struct mpq_ctx *ctx, const mpq_model *m);
    /* Local. Errors (naming the configuration line) when the checkpoint
     * cannot store this configuration's model of the family; NULL when it
     * can store every one. */
    mpq_err (*check_checkpoint)(struct mpq_ctx *ctx, const struct mpq_config *cfg);
    /* Local. The values a checkpoint stores for plain tensor t when they are
     * not t's own (the CNN's BN-folded weights and biases, its folded batch
     * norms as the identity): *out [t->numel] F32 (caller: mpq_free) and
     * why in note [len] (the tensor's `folded` attribute), or *out NULL: t
     * as is. NULL op: every tensor as is. */
    mpq_err (*stored_tensor)(struct mpq_ctx *ctx, void *state, const mpq_tensor *t, float **out,
                             char *note, size_t len);
    /* Does this family run the model (used by model.family = auto)? */
    int (*detect)(const mpq_model *m, const struct mpq_config *cfg);
    /* Builds the state; fills *info (info->layers allocated with
     * mpq_malloc; on success the family object owns and frees it, on
     * failure create frees it). */
    mpq_err (*create)(struct mpq_ctx *ctx, const mpq_model *m, const struct mpq_config *cfg,
                      void **state, mpq_family_info *info);
    void (*destroy)(void **state);
    /* Width of the activation rows entering block b (b = nblocks: leaving
     * the last block). */
    int64_t (*width)(const void *state, int64_t b);
    mpq_err (*embed)(struct mpq_ctx *ctx, void *state, const mpq_batch *batch, float *x);
    /* x_in [rows][width(b)] -> x_out [rows][width(b+1)]; may be the same
     * buffer only when the widths are equal. */
    mpq_err (*block)(struct mpq_ctx *ctx, void *state, int64_t b, const mpq_batch *batch,
                     const float *x_in, float *x_out, mpq_layer_hook hook, void *ud);
    /* x [rows][width(nblocks)] -> logits [rows][out_width]. */
    mpq_err (*head)(struct mpq_ctx *ctx, void *state, const float *x, int64_t rows, float *logits);
    mpq_err (*get_weight)(struct mpq_ctx *ctx, void *state, int64_t layer, float *w);
    mpq_err (*set_weight)(struct mpq_ctx *ctx, void *state, int64_t layer, const float *w);
    /* See mpq_family_set_bias_delta (NULL: no layer takes one). */
    mpq_err (*set_bias_delta)(struct mpq_ctx *ctx, void *state, int64_t layer, const float *delta);
    /* Backward pass of block b (NULL: the family has none); see
     * mpq_family_block_backward. */
    mpq_err (*block_backward)(struct mpq_ctx *ctx, void *state, int64_t b, const mpq_batch *batch,
                              const float *x_in, const float *dy, float *dx, float *const *dw,
                              float *const *db);
    /* The forward and backward of a squared-error fit in one pass (NULL:
     * mpq_family_block_fit_grad runs the forward, then block_backward). */
    mpq_err (*block_fit_backward)(struct mpq_ctx *ctx, void *state, int64_t b,
                                  const mpq_batch *batch, const float *x_in, const float *target,
                                  float *y, float *dy, float *const *dw, float *const *db);
    /* Backward pass of the head (NULL: none); see mpq_family_head_backward. */
    mpq_err (*head_backward)(struct mpq_ctx *ctx, void *state, const float *x, int64_t rows,
                             const float *dlogits, float *dx);
} mpq_family_ops;

/* The registry (NULL-terminated; model.family, mpq_registry.h), its
 * descriptor (also: "auto") and lookup by name (NULL when unknown). */
extern const mpq_family_ops *const mpq_family_registry[];
extern const mpq_registry mpq_family_reg;
const mpq_family_ops *mpq_family_find(const char *name);
/* The family that model m's architecture names (mpq_arch.family), or NULL
 * for a plain tensor container (no family recorded) or an unknown name. */
const mpq_family_ops *mpq_family_of_model(const mpq_model *m);

/* The ops of the sequential CNN (family cnn, model.cnn): a registry of op
 * types, each named by its `op` and taking the fields its schema lists
 * (mpq_config.h MPQ_KEY_OPLIST); the descriptor gives names and fields. */
extern const mpq_registry mpq_cnn_op_reg;

typedef struct mpq_family mpq_family;

/* Local. Builds family `name` ("auto": the registry's first family whose
 * detect accepts the model; otherwise the configuration's model.family) for
 * model m. cfg may be NULL for families that need no description (Llama).
 * The family keeps pointers into m: close the model after the family.
 * Owner: caller (mpq_family_destroy). */
mpq_err mpq_family_create(struct mpq_ctx *ctx, const mpq_model *m, const struct mpq_config *cfg,
                          const char *name, mpq_family **out);
/* NULL-safe; sets *f to NULL. */
void mpq_family_destroy(mpq_family **f);

const char *mpq_family_name(const mpq_family *f);
const mpq_family_info *mpq_family_get_info(const mpq_family *f);
/* Width of the activation rows entering block b (b = nblocks: the output
 * of the last block). */
int64_t mpq_family_width(const mpq_family *f, int64_t b);

/* Input -> block 0 input x [batch->rows][width(0)]. */
mpq_err mpq_family_embed(struct mpq_ctx *ctx, mpq_family *f, const mpq_batch *batch, float *x);
/* Block b on a batch: x_in [rows][width(b)] -> x_out [rows][width(b+1)];
 * x_out may equal x_in when the widths are equal. hook may be NULL. */
mpq_err mpq_family_block(struct mpq_ctx *ctx, mpq_family *f, int64_t b, const mpq_batch *batch,
                         const float *x_in, float *x_out, mpq_layer_hook hook, void *ud);
/* Local. The gradients of a loss through block b, for block-wise
 * reconstruction. x_in [rows][width(b)] is the block's input on `batch`
 * and dy [rows][width(b+1)] the gradient of the loss with respect to the
 * block's output. Adds to dw[j] the gradient with respect to the weight
 * [out][in] (the GEMM form of mpq_layer_info) of the block's j-th
 * quantizable layer (global layer first + j, in layer order; dw NULL or a
 * NULL entry: not wanted), to db[j] [out] the gradient with respect to the
 * correction of its output bias (mpq_family_set_bias_delta; db NULL or a
 * NULL entry: not wanted; only layers with a bias_tensor), and writes dx
 * [rows][width(b)], the gradient with respect to x_in (NULL: not wanted).
 * The weights and bias corrections are those in use; the forward pass is
 * recomputed inside, so no state is kept between calls. MPQ_ERR_ARG when
 * the family has no backward pass. */
mpq_err mpq_family_block_backward(struct mpq_ctx *ctx, mpq_family *f, int64_t b,
                                  const mpq_batch *batch, const float *x_in, const float *dy,
                                  float *dx, float *const *dw, float *const *db);
/* The gradient of |block_b(x_in) - target|^2: y [rows][width(b + 1)]
 * receives the block's output (the bits of mpq_family_block), dy the same
 * shape 2 (y - target), and dw, db as in mpq_family_block_backward. A
 * family with a fused pass (Llama) runs the block once; the others run
 * mpq_family_block, then mpq_family_block_backward. */
mpq_err mpq_family_block_fit_grad(struct mpq_ctx *ctx, mpq_family *f, int64_t b,
                                  const mpq_batch *batch, const float *x_in, const float *target,
                                  float *y, float *dy, float *const *dw, float *const *db);
/* Local. dx [rows][width(nblocks)] = the gradient with respect to the last
 * block's output x of a loss whose gradient with respect to the logits of
 * mpq_family_head(x) is dlogits [rows][out_width] (the weights of the head
 * are not learned). MPQ_ERR_ARG when the family has no such pass. */
mpq_err mpq_family_head_backward(struct mpq_ctx *ctx, mpq_family *f, const float *x, int64_t rows,
                                 const float *dlogits, float *dx);
/* Last block output x [rows][width(nblocks)] -> logits [rows][out_width]
 * (Llama: final RMSNorm and output head; CNN: a copy). */
mpq_err mpq_family_head(struct mpq_ctx *ctx, mpq_family *f, const float *x, int64_t rows,
                        float *logits);
/* Whole network: logits [batch->rows][out_width]. Scratch is owned by f. */
mpq_err mpq_family_forward(struct mpq_ctx *ctx, mpq_family *f, const mpq_batch *batch,
                           float *logits);
/* Like mpq_family_forward, but only the logits of the last row of every
 * sequence: logits [batch->nseq][out_width] (generation). */
mpq_err mpq_family_forward_last(struct mpq_ctx *ctx, mpq_family *f, const mpq_batch *batch,
                                float *logits);

/* A block source: called with enter = 1 before block b runs in a whole
 * forward pass (mpq_family_forward, the streamed evaluation) and with
 * enter = 0 after it, so that a caller can put the block's weights in
 * place (mpq_family_set_weight) and take them out again, keeping one
 * block in memory. Local. */
typedef mpq_err (*mpq_block_source)(struct mpq_ctx *ctx, void *ud, mpq_family *f, int64_t b,
                                    int enter);
/* Installs (fn non-NULL) or removes the block source of f. The block-level
 * calls (mpq_family_block) do not use it: their caller manages the block. */
void mpq_family_set_block_source(mpq_family *f, mpq_block_source fn, void *ud);
/* Local. The block source's enter / leave for block b (no-ops without one). */
mpq_err mpq_family_block_enter(struct mpq_ctx *ctx, mpq_family *f, int64_t b);
mpq_err mpq_family_block_leave(struct mpq_ctx *ctx, mpq_family *f, int64_t b);

/* The current fp32 weight of a layer as [out][in] (for a conv [c_out][c_in
 * k_h k_w]; BN-folded where a batch norm was folded into it). */
mpq_err mpq_family_get_weight(struct mpq_ctx *ctx, mpq_family *f, int64_t layer, float *w);
/* Substitutes w [out][in] (e.g. dequantized) for the layer's weight; copied.
 * w = NULL releases a substituted weight: the layer has its original
 * weight again (families with a Llama layout; others refuse it). */
mpq_err mpq_family_set_weight(struct mpq_ctx *ctx, mpq_family *f, int64_t layer, const float *w);
/* Sets the correction added to the output of a layer with a bias_tensor
 * (a learned bias, round.learn_bias): delta [out], copied; NULL: none. The
 * layer then adds its bias plus delta, rounded once to float: the value a
 * checkpoint stores for the bias, so that the checkpoint's model computes
 * the same bits. It
 * outlives set_weight(NULL): the corrections stay with the family while
 * their blocks' weights come and go. MPQ_ERR_ARG for a layer without a
 * bias_tensor or a family that takes none. */
mpq_err mpq_family_set_bias_delta(struct mpq_ctx *ctx, mpq_family *f, int64_t layer,
                                  const float *delta);
/* Local. What a checkpoint stores for plain tensor t of f's model (see
 * mpq_family_ops.stored_tensor): *out [t->numel] F32 (caller: mpq_free)
 * and why in note [len], or *out NULL (note "") to store t as is. */
mpq_err mpq_family_stored_tensor(struct mpq_ctx *ctx, mpq_family *f, const mpq_tensor *t,
                                 float **out, char *note, size_t len);

/* Shared numeric kernels (exposed for tests and benchmarks). */

/* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, rows x n. out may equal x. */
void mpq_rmsnorm(float *out, const float *x, const float *w, int64_t rows, int64_t n, double eps);
/* im2col of nimg images [c][h][w] for a k_h x k_w kernel: patches
 * [(img, oy, ox)][(c, ky, kx)], zero outside the image. */
void mpq_im2col(const float *img, int64_t nimg, int64_t c, int64_t h, int64_t w, int64_t k_h,
                int64_t k_w, int64_t stride, int64_t padding, float *patches);

#endif
