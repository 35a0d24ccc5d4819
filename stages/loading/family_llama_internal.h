/* family_llama_internal.h: the Llama family's state and the pieces that its
 * forward pass (family_llama.c) and backward pass (family_llama_bwd.c)
 * share, so that the backward recomputes the block with the forward's own
 * code and numerics. */
#ifndef MPQ_FAMILY_LLAMA_INTERNAL_H
#define MPQ_FAMILY_LLAMA_INTERNAL_H

#include <cblas.h>
#include <stdint.h>

#include "mpq_family.h"
#include "mpq_model.h"

/* The quantizable layers of a block, in layer order. */
enum { LQ = 0, LK, LV, LO, LGATE, LUP, LDOWN, LPER };

/* Query rows per attention tile (scores scratch: ATT_TILE x longest sequence). */
#define ATT_TILE 64

/* Elements of the output head converted per pass when it is not mapped F32
 * (4 MiB of fp32: 256 vocabulary rows at dim 4096), instead of a whole fp32
 * copy on every rank (2 GiB for a 128K x 4096 head). */
#define HEAD_TILE (1 << 20)

typedef struct llama_block {
    const float *attn_norm;    /* [dim] */
    const float *ffn_norm;     /* [dim] */
    const float *w[LPER];      /* weights [out][in]: the mapping (aligned F32) or a substituted
                                  copy; NULL: converted from t[j] when the block runs */
    const mpq_tensor *t[LPER]; /* the file's tensors */
    const float *bias[LO + 1]; /* q/k/v biases (Qwen2, attention_bias), o bias
                                  (attention_bias) or NULL */
    float *bsum[LO + 1];       /* owned: the bias plus its learned correction
                                  (round.learn_bias, on any q/k/v/o; the sum a
                                  checkpoint stores), used instead; or NULL */
} llama_block;

typedef struct llama {
    const mpq_model *m;
    mpq_arch a;
    int64_t dim, hd, nh, nkv, qdim, kvdim, hidden, vocab, nl;
    const mpq_tensor *embed_t; /* the token embedding as stored */
    const float *embed;        /* [vocab][dim] fp32, or NULL: rows converted on lookup */
    const float *final_norm;   /* [dim] */
    const mpq_tensor *cls_t;   /* the output head as stored (may be embed_t) */
    const float *cls;          /* [vocab][dim] when mapped F32, else NULL: the head is
                                  converted cls_rows rows at a time into cls_tile */
    float *cls_tile;           /* [cls_rows][dim] */
    int64_t cls_rows;          /* vocabulary rows per pass of the head (vocab if mapped) */
    llama_block *blk;          /* [nl] */
    float **lown;              /* [nl*LPER] owned fp32 weight of a layer, or NULL */
    float *stage[LPER];        /* one block's weights converted from F16/BF16 (or unaligned
                                  F32): only the running block is held in fp32 */
    /* RoPE tables [rope_len][hd/2]. */
    float *rcos, *rsin;
    int64_t rope_len;
    /* Scratch for cap_rows rows and ATT_TILE x cap_l attention scores. */
    float *xb, *q, *k, *v, *att, *hb, *hb2, *sc;
    int64_t cap_rows, cap_l;
    /* Backward pass only (family_llama_bwd.c): the activations and
     * gradients the forward scratch does not hold, for bw_rows rows, and a
     * second ATT_TILE x bw_l scores tile. */
    float *bw, *bsc;
    int64_t bw_rows, bw_l;
} llama;

/* Where the block recomputation (mpq_llama_block_core) leaves its
 * intermediate values, each [rows][width]. The forward points several at
 * the same buffer; the backward keeps them apart. */
typedef struct llama_acts {
    float *xn1;       /* [dim] attention RMSNorm output (q/k/v input) */
    float *q, *k, *v; /* [qdim], [kvdim], [kvdim]: projections plus biases, q and k rotated */
    float *att;       /* [qdim] attention output of every head (o_proj input) */
    float *xn2;       /* [dim] MLP RMSNorm output (gate/up input); may be xn1 */
    float *g, *u;     /* [hidden] gate and up projections */
    float *h;         /* [hidden] silu(g) * u (down input); may be g */
} llama_acts;

static inline int64_t llama_layer_out(const llama *L, int j) {
    return j == LQ                 ? L->qdim
           : j == LK || j == LV    ? L->kvdim
           : j == LO || j == LDOWN ? L->dim
                                   : L->hidden;
}

static inline int64_t llama_layer_in(const llama *L, int j) {
    return j == LO ? L->qdim : j == LDOWN ? L->hidden : L->dim;
}

/* y[rows][out] (+)= x[rows][in] W^T with W [out][in]. */
static inline void llama_gemm_wt(const float *x, const float *w, float *y, int64_t rows, int64_t in,
                                 int64_t out, float beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)out, (int)in, 1.0f, x,
                (int)in, w, (int)in, beta, y, (int)out);
}

/* Vocabulary rows [v0, v0 + *nv) of the output head as fp32 (*nv = at most
 * L->cls_rows): into the mapping, or converted into L->cls_tile. */
mpq_err mpq_llama_head_rows(struct mpq_ctx *ctx, llama *L, int64_t v0, int64_t *nv,
                            const float **w);

/* Validates the batch (lengths positive, summing to rows; the sizes fit the
 * BLAS int; dynamic RoPE within its context); *maxl = longest sequence. */
mpq_err mpq_llama_check_batch(struct mpq_ctx *ctx, const llama *L, const mpq_batch *batch,
                              int64_t *maxl);
/* Grows the forward scratch to `rows` token rows and attention over `maxl`
 * tokens, and the RoPE tables to maxl positions. */
mpq_err mpq_llama_ensure_scratch(struct mpq_ctx *ctx, llama *L, int64_t rows, int64_t maxl);
/* W[j] = the fp32 weights of block B (mapped, substituted or converted into
 * the staging buffers). */
mpq_err mpq_llama_block_weights(struct mpq_ctx *ctx, llama *L, const llama_block *B,
                                const float **W);
/* Rotates the heads of rows [rows][nheads*hd] at positions pos0.. by their
 * angles, or by minus them when `inverse` (the transpose of the rotation:
 * the backward of RoPE). */
void mpq_llama_rope(const llama *L, float *x, int64_t rows, int64_t nheads, int64_t pos0,
                    int inverse);
/* Turns the scores of query tile [i0, i0 + tq) against keys [0, i1),
 * sc [tq][i1], into causal softmax probabilities (0 above the diagonal). */
void mpq_llama_softmax_tile(float *sc, int64_t tq, int64_t i0, int64_t i1);
/* Block b up to the down projection: x [rows][dim] enters as the block
 * input and leaves as the residual stream after attention; A receives the
 * intermediate values; the hook (may be NULL) sees the inputs of layers q
 * to up. The scratch must hold the batch (mpq_llama_ensure_scratch). */
mpq_err mpq_llama_block_core(struct mpq_ctx *ctx, llama *L, int64_t b, const mpq_batch *batch,
                             const float *const *W, float *x, const llama_acts *A,
                             mpq_layer_hook hook, void *ud);
/* The family's block_fit_backward and block_backward (family_llama_bwd.c). */
mpq_err mpq_llama_block_fit_bwd(struct mpq_ctx *ctx, void *state, int64_t b, const mpq_batch *batch,
                                const float *x_in, const float *target, float *y, float *dy,
                                float *const *dw, float *const *db);
mpq_err mpq_llama_block_bwd(struct mpq_ctx *ctx, void *state, int64_t b, const mpq_batch *batch,
                            const float *x_in, const float *dy, float *dx, float *const *dw,
                            float *const *db);
/* The family's head_backward: through the output head and the final norm. */
mpq_err mpq_llama_head_bwd(struct mpq_ctx *ctx, void *state, const float *x, int64_t rows,
                           const float *dlogits, float *dx);

#endif
