/* family_llama.c: the Llama decoder family (llama2.c checkpoints and Hugging
 * Face Llama/Mistral/Qwen2 safetensors): token embedding, per layer
 * RMSNorm -> grouped-query causal attention with rotary embeddings ->
 * residual, RMSNorm -> SwiGLU MLP -> residual; final RMSNorm and output head.
 *
 * Everything is batched over all tokens of a batch: projections are SGEMMs
 * over [rows][dim], attention is two SGEMMs per (sequence, head) with a
 * causal mask. One block = one decoder layer with 7 quantizable layers in
 * the order q, k, v, o, gate, up, down; input groups {q,k,v}, {o},
 * {gate,up}, {down}. The block's backward pass (family_llama_bwd.c)
 * recomputes it with mpq_llama_block_core. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "family_internal.h"
#include "family_llama_internal.h"
#include "io_internal.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_expf.h"
#include "mpq_family.h"

static const char *const layer_suffix[LPER] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
static const int layer_group[LPER] = {LQ, LQ, LQ, LO, LGATE, LGATE, LDOWN};

static int llama_detect(const mpq_model *m, const mpq_config *cfg) {
    (void)cfg;
    return strcmp(mpq_model_arch(m)->family, mpq_family_llama_ops.name) == 0;
}

/* The mapping itself as fp32 when the tensor is aligned F32, else NULL. */
static const float *mapped_f32(const mpq_tensor *t) {
    if (t->dtype == MPQ_DTYPE_F32 && (uintptr_t)t->data % sizeof(float) == 0)
        return t->data;
    return NULL;
}

/* fp32 view of tensor `name` with the expected shape, shared with the
 * model's other family instances (mpq_model_f32). */
static mpq_err load_misc(mpq_ctx *ctx, llama *L, const char *name, int ndim, const int64_t *shape,
                         const float **out) {
    const mpq_tensor *t = NULL;
    MPQ_CALL(mpq_model_get(ctx, L->m, name, ndim, shape, &t));
    MPQ_CALL(mpq_model_f32(ctx, L->m, t, out));
    return MPQ_OK;
}

static void llama_destroy(void **state) {
    if (!state || !*state)
        return;
    llama *L = *state;
    if (L->lown)
        for (int64_t i = 0; i < L->nl * LPER; i++)
            mpq_free(L->lown[i]);
    mpq_free(L->lown);
    for (int64_t b = 0; L->blk && b < L->nl; b++)
        for (int j = 0; j <= LO; j++)
            mpq_free(L->blk[b].bsum[j]);
    mpq_free(L->blk);
    for (int j = 0; j < LPER; j++)
        mpq_free(L->stage[j]);
    float *bufs[] = {L->rcos, L->rsin, L->xb, L->q,  L->k,   L->v,       L->att,
                     L->hb,   L->hb2,  L->sc, L->bw, L->bsc, L->cls_tile};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        mpq_free(bufs[i]);
    mpq_free(L);
    *state = NULL;
}

static mpq_err llama_create(mpq_ctx *ctx, const mpq_model *m, const mpq_config *cfg, void **state,
                            mpq_family_info *info) {
    (void)cfg;
    *state = NULL;
    mpq_err err = MPQ_OK;
    llama *L = NULL;
    const mpq_arch *a = mpq_model_arch(m);
    const char *path = mpq_model_path(m);
    MPQ_CHECK(a->dim > 0 && a->n_heads > 0 && a->n_kv_heads > 0 && a->hidden_dim > 0 &&
                  a->n_layers > 0 && a->vocab_size > 0,
              MPQ_ERR_FORMAT, "%s: Llama architecture has a non-positive size", path);
    MPQ_CHECK(a->n_heads % a->n_kv_heads == 0, MPQ_ERR_FORMAT,
              "%s: n_heads %lld is not a multiple of n_kv_heads %lld", path, (long long)a->n_heads,
              (long long)a->n_kv_heads);
    int64_t hd = a->head_dim > 0 ? a->head_dim : a->dim / a->n_heads;
    MPQ_CHECK(hd > 0 && hd % 2 == 0, MPQ_ERR_FORMAT, "%s: head dimension %lld is not even", path,
              (long long)hd);
    MPQ_ALLOC_TRY(L, 1);
    L->m = m;
    L->a = *a;
    L->dim = a->dim;
    L->hd = hd;
    L->nh = a->n_heads;
    L->nkv = a->n_kv_heads;
    L->qdim = L->nh * hd;
    L->kvdim = L->nkv * hd;
    L->hidden = a->hidden_dim;
    L->vocab = a->vocab_size;
    L->nl = a->n_layers;
    if (L->a.norm_eps <= 0.0)
        L->a.norm_eps = 1e-5;
    if (L->a.rope_theta <= 0.0)
        L->a.rope_theta = 10000.0;
    MPQ_ALLOC_TRY(L->blk, L->nl);
    MPQ_ALLOC_TRY(L->lown, L->nl * LPER);
    MPQ_ALLOC_TRY(info->layers, L->nl * LPER);

    int64_t sh_emb[2] = {L->vocab, L->dim}, sh_dim[1] = {L->dim};
    /* The embedding is read a row per token and the head a tile of rows per
     * pass (HEAD_TILE): converted as they are read unless mapped F32. */
    MPQ_TRY(mpq_model_get(ctx, m, "model.embed_tokens.weight", 2, sh_emb, &L->embed_t));
    L->embed = mapped_f32(L->embed_t);
    MPQ_TRY(load_misc(ctx, L, "model.norm.weight", 1, sh_dim, &L->final_norm));
    L->cls_t = L->embed_t;
    if (!a->tied_embeddings)
        MPQ_TRY(mpq_model_get(ctx, m, "lm_head.weight", 2, sh_emb, &L->cls_t));
    L->cls = mapped_f32(L->cls_t);
    L->cls_rows = L->vocab;
    if (!L->cls) {
        L->cls_rows = HEAD_TILE / L->dim < 1 ? 1 : HEAD_TILE / L->dim;
        L->cls_rows = L->cls_rows < L->vocab ? L->cls_rows : L->vocab;
        MPQ_ALLOC_TRY(L->cls_tile, L->cls_rows * L->dim);
    }

    int64_t shapes[LPER][2] = {{L->qdim, L->dim},  {L->kvdim, L->dim},  {L->kvdim, L->dim},
                               {L->dim, L->qdim},  {L->hidden, L->dim}, {L->hidden, L->dim},
                               {L->dim, L->hidden}};
    for (int64_t b = 0; b < L->nl; b++) {
        char name[MPQ_TENSOR_NAME_MAX];
        llama_block *B = &L->blk[b];
        snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)b);
        MPQ_TRY(load_misc(ctx, L, name, 1, sh_dim, &B->attn_norm));
        snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight",
                 (long long)b);
        MPQ_TRY(load_misc(ctx, L, name, 1, sh_dim, &B->ffn_norm));
        for (int j = 0; j < LPER; j++) {
            int64_t li = b * LPER + j;
            mpq_layer_info *LI = &info->layers[li];
            snprintf(LI->name, sizeof LI->name, "model.layers.%lld.%s", (long long)b,
                     layer_suffix[j]);
            snprintf(LI->tensor, sizeof LI->tensor, "model.layers.%lld.%s.weight", (long long)b,
                     layer_suffix[j]);
            LI->kind = MPQ_LAYER_LINEAR;
            LI->out = shapes[j][0];
            LI->in = shapes[j][1];
            LI->block = b;
            LI->group = b * LPER + layer_group[j];
            /* Block weights that need a conversion are converted one block
             * at a time when the block runs (stage), not all at load. */
            MPQ_TRY(mpq_model_get(ctx, m, LI->tensor, 2, shapes[j], &B->t[j]));
            B->w[j] = mapped_f32(B->t[j]);
            /* the attention projections have a bias slot (attention_bias),
             * whether or not this model fills it */
            if (j <= LO)
                snprintf(LI->bias_tensor, sizeof LI->bias_tensor, "model.layers.%lld.%s.bias",
                         (long long)b, layer_suffix[j]);
            if ((a->qkv_bias && j <= LV) || (a->o_bias && j == LO)) {
                int64_t sb[1] = {shapes[j][0]};
                snprintf(name, sizeof name, "model.layers.%lld.%s.bias", (long long)b,
                         layer_suffix[j]);
                MPQ_TRY(load_misc(ctx, L, name, 1, sb, &B->bias[j]));
            }
        }
    }
    info->task = MPQ_TASK_LM;
    info->nblocks = L->nl;
    info->nlayers = L->nl * LPER;
    info->out_width = L->vocab;
    info->max_seq = a->seq_len > 0 ? a->seq_len : 2048;
    info->vocab_size = L->vocab;
    *state = L;
    L = NULL;
cleanup:
    if (err != MPQ_OK) {
        mpq_free(info->layers);
        info->layers = NULL;
    }
    void *p = L;
    llama_destroy(&p);
    return err;
}

static int64_t llama_width(const void *state, int64_t b) {
    (void)b;
    return ((const llama *)state)->dim;
}

mpq_err mpq_llama_ensure_scratch(mpq_ctx *ctx, llama *L, int64_t rows, int64_t maxl) {
    if (rows > L->cap_rows) {
        float **bufs[] = {&L->xb, &L->q, &L->k, &L->v, &L->att, &L->hb, &L->hb2};
        int64_t widths[] = {L->dim > L->qdim ? L->dim : L->qdim,
                            L->qdim,
                            L->kvdim,
                            L->kvdim,
                            L->qdim,
                            L->hidden,
                            L->hidden};
        for (int i = 0; i < 7; i++) {
            mpq_free(*bufs[i]);
            *bufs[i] = NULL;
        }
        L->cap_rows = 0;
        for (int i = 0; i < 7; i++) {
            int64_t n = 0;
            MPQ_CALL(mpq_mul64(ctx, rows, widths[i], "Llama scratch", &n));
            MPQ_CALL(mpq_malloc(ctx, n, sizeof(float), (void **)bufs[i]));
        }
        L->cap_rows = rows;
    }
    if (maxl > L->cap_l) {
        mpq_free(L->sc);
        L->sc = NULL;
        L->cap_l = 0;
        int64_t n = 0;
        MPQ_CALL(mpq_mul64(ctx, maxl < ATT_TILE ? maxl : ATT_TILE, maxl, "attention scores", &n));
        MPQ_ALLOC(L->sc, n);
        L->cap_l = maxl;
    }
    if (maxl > L->rope_len) {
        int64_t half = L->hd / 2;
        mpq_free(L->rcos);
        mpq_free(L->rsin);
        L->rcos = L->rsin = NULL;
        L->rope_len = 0;
        MPQ_ALLOC(L->rcos, maxl * half);
        MPQ_ALLOC(L->rsin, maxl * half);
        for (int64_t j = 0; j < half; j++) {
            /* Pair j rotates with frequency theta^(-2j/head_dim), scaled
             * as the config says. */
            double freq = mpq_rope_inv_freq(&L->a, j);
            for (int64_t p = 0; p < maxl; p++) {
                double ang = (double)p * freq;
                L->rcos[p * half + j] = (float)cos(ang);
                L->rsin[p * half + j] = (float)sin(ang);
            }
        }
        L->rope_len = maxl;
    }
    return MPQ_OK;
}

void mpq_llama_rope(const llama *L, float *x, int64_t rows, int64_t nheads, int64_t pos0,
                    int inverse) {
    int64_t half = L->hd / 2, w = nheads * L->hd;
    for (int64_t r = 0; r < rows; r++) {
        const float *c = L->rcos + (pos0 + r) * half, *s = L->rsin + (pos0 + r) * half;
        for (int64_t h = 0; h < nheads; h++) {
            float *v = x + r * w + h * L->hd;
            for (int64_t j = 0; j < half; j++) {
                /* llama2.c pairs neighbours (2j, 2j+1); Hugging Face pairs halves. */
                int64_t i0 = L->a.rope_interleaved ? 2 * j : j;
                int64_t i1 = L->a.rope_interleaved ? 2 * j + 1 : j + half;
                float a0 = v[i0], a1 = v[i1], sn = inverse ? -s[j] : s[j];
                v[i0] = a0 * c[j] - a1 * sn;
                v[i1] = a0 * sn + a1 * c[j];
            }
        }
    }
}

static mpq_err call_hook(mpq_ctx *ctx, mpq_layer_hook hook, void *ud, int64_t b, int j0, int j1,
                         const float *x, int64_t rows, int64_t cols) {
    if (!hook)
        return MPQ_OK;
    for (int j = j0; j <= j1; j++)
        MPQ_CALL(hook(ctx, ud, b * LPER + j, x, rows, cols));
    return MPQ_OK;
}

mpq_err mpq_llama_block_weights(mpq_ctx *ctx, llama *L, const llama_block *B, const float **W) {
    for (int j = 0; j < LPER; j++) {
        if (B->w[j]) {
            W[j] = B->w[j];
            continue;
        }
        int64_t n = llama_layer_out(L, j) * llama_layer_in(L, j);
        if (!L->stage[j])
            MPQ_ALLOC(L->stage[j], n);
        MPQ_CALL(mpq_tensor_read_f32(ctx, B->t[j], 0, n, L->stage[j]));
        mpq_model_release_tensor(L->m, B->t[j]); /* converted: the pages may go */
        W[j] = L->stage[j];
    }
    return MPQ_OK;
}

mpq_err mpq_llama_check_batch(mpq_ctx *ctx, const llama *L, const mpq_batch *batch, int64_t *maxl) {
    int64_t R = batch->rows, mx = 0, sum = 0;
    MPQ_CHECK(batch->len, MPQ_ERR_ARG, "Llama batch without sequence lengths");
    for (int64_t s = 0; s < batch->nseq; s++) {
        MPQ_CHECK(batch->len[s] > 0, MPQ_ERR_ARG, "sequence %lld has no tokens", (long long)s);
        mx = batch->len[s] > mx ? batch->len[s] : mx;
        sum += batch->len[s];
    }
    MPQ_CHECK(sum == R, MPQ_ERR_ARG, "sequence lengths sum to %lld, batch has %lld rows",
              (long long)sum, (long long)R);
    MPQ_CHECK(L->a.rope_scaling != MPQ_ROPE_DYNAMIC || mx <= L->a.seq_len, MPQ_ERR_ARG,
              "a sequence of %lld tokens is longer than max_position_embeddings %lld, where "
              "dynamic RoPE scaling would change the frequencies",
              (long long)mx, (long long)L->a.seq_len);
    int ri = 0;
    MPQ_CALL(mpq_to_int(ctx, R * (L->hidden > L->qdim ? L->hidden : L->qdim), "batch size", &ri));
    *maxl = mx;
    return MPQ_OK;
}

/* Built twice, for AVX2 and for the baseline, the CPU picking one at load
 * time: eight lanes instead of four, and the same bits (AVX2 brings no fused
 * multiply-add, so every operation rounds as in the baseline). Static, and
 * called through the plain function below: clang names a multiversioned
 * function differently for callers in other files. */
__attribute__((target_clones("avx2", "default"))) static void softmax_tile(float *sc, int64_t tq,
                                                                           int64_t i0, int64_t i1) {
    for (int64_t r = 0; r < tq; r++) {
        int64_t i = i0 + r;
        float *row = sc + r * i1, mx;
        const double tot = mpq_exp_shifted(row, row, i + 1, &mx);
        float inv = (float)(1.0 / tot);
        for (int64_t j = 0; j <= i; j++)
            row[j] *= inv;
        for (int64_t j = i + 1; j < i1; j++)
            row[j] = 0.0f;
    }
}

void mpq_llama_softmax_tile(float *sc, int64_t tq, int64_t i0, int64_t i1) {
    softmax_tile(sc, tq, i0, i1);
}

/* Causal attention of every (sequence, head): A->att from the rotated
 * A->q, A->k and A->v. */
static void attention(llama *L, const mpq_batch *batch, const llama_acts *A) {
    float scale = (float)(1.0 / sqrt((double)L->hd));
    int64_t grp = L->nh / L->nkv;
    int64_t r0 = 0;
    for (int64_t s = 0; s < batch->nseq; s++) {
        int64_t n = batch->len[s];
        for (int64_t h = 0; h < L->nh; h++) {
            int64_t kh = h / grp;
            const float *kk = A->k + r0 * L->kvdim + kh * L->hd;
            const float *vv = A->v + r0 * L->kvdim + kh * L->hd;
            /* Causal attention in query tiles of ATT_TILE rows: tile [i0, i1)
             * needs keys [0, i1) only, so the masked upper triangle is
             * mostly never computed. */
            for (int64_t i0 = 0; i0 < n; i0 += ATT_TILE) {
                int64_t i1 = i0 + ATT_TILE < n ? i0 + ATT_TILE : n, tq = i1 - i0;
                const float *qh = A->q + (r0 + i0) * L->qdim + h * L->hd;
                /* scores [tq][i1] = scale * Q_tile K_h[0:i1]^T */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)tq, (int)i1, (int)L->hd,
                            scale, qh, (int)L->qdim, kk, (int)L->kvdim, 0.0f, L->sc, (int)i1);
                mpq_llama_softmax_tile(L->sc, tq, i0, i1);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)tq, (int)L->hd, (int)i1,
                            1.0f, L->sc, (int)i1, vv, (int)L->kvdim, 0.0f,
                            A->att + (r0 + i0) * L->qdim + h * L->hd, (int)L->qdim);
            }
        }
        r0 += n;
    }
}

/* x[r][i] += v[i] for every row (v NULL: nothing). */
static void add_rows(float *x, const float *v, int64_t rows, int64_t n) {
    for (int64_t r = 0; v && r < rows; r++)
        for (int64_t i = 0; i < n; i++)
            x[r * n + i] += v[i];
}

mpq_err mpq_llama_block_core(mpq_ctx *ctx, llama *L, int64_t b, const mpq_batch *batch,
                             const float *const *W, float *x, const llama_acts *A,
                             mpq_layer_hook hook, void *ud) {
    const llama_block *B = &L->blk[b];
    int64_t R = batch->rows;

    /* Attention. */
    mpq_rmsnorm(A->xn1, x, B->attn_norm, R, L->dim, L->a.norm_eps);
    MPQ_CALL(call_hook(ctx, hook, ud, b, LQ, LV, A->xn1, R, L->dim));
    llama_gemm_wt(A->xn1, W[LQ], A->q, R, L->dim, L->qdim, 0.0f);
    llama_gemm_wt(A->xn1, W[LK], A->k, R, L->dim, L->kvdim, 0.0f);
    llama_gemm_wt(A->xn1, W[LV], A->v, R, L->dim, L->kvdim, 0.0f);
    float *qkv[3] = {A->q, A->k, A->v};
    int64_t wq[3] = {L->qdim, L->kvdim, L->kvdim};
    for (int j = 0; j < 3; j++)
        add_rows(qkv[j], B->bsum[j] ? B->bsum[j] : B->bias[j], R, wq[j]);
    for (int64_t s = 0, r0 = 0; s < batch->nseq; r0 += batch->len[s++]) {
        mpq_llama_rope(L, A->q + r0 * L->qdim, batch->len[s], L->nh, 0, 0);
        mpq_llama_rope(L, A->k + r0 * L->kvdim, batch->len[s], L->nkv, 0, 0);
    }
    attention(L, batch, A);
    MPQ_CALL(call_hook(ctx, hook, ud, b, LO, LO, A->att, R, L->qdim));
    llama_gemm_wt(A->att, W[LO], x, R, L->qdim, L->dim, 1.0f);
    add_rows(x, B->bsum[LO] ? B->bsum[LO] : B->bias[LO], R, L->dim);

    /* SwiGLU MLP up to the down projection. */
    mpq_rmsnorm(A->xn2, x, B->ffn_norm, R, L->dim, L->a.norm_eps);
    MPQ_CALL(call_hook(ctx, hook, ud, b, LGATE, LUP, A->xn2, R, L->dim));
    llama_gemm_wt(A->xn2, W[LGATE], A->g, R, L->dim, L->hidden, 0.0f);
    llama_gemm_wt(A->xn2, W[LUP], A->u, R, L->dim, L->hidden, 0.0f);
    for (int64_t i = 0; i < R * L->hidden; i++) {
        float g = A->g[i];
        A->h[i] = g / (1.0f + expf(-g)) * A->u[i];
    }
    return MPQ_OK;
}

static mpq_err llama_block_fwd(mpq_ctx *ctx, void *state, int64_t b, const mpq_batch *batch,
                               const float *x_in, float *x_out, mpq_layer_hook hook, void *ud) {
    llama *L = state;
    int64_t R = batch->rows, maxl = 0;
    MPQ_CALL(mpq_llama_check_batch(ctx, L, batch, &maxl));
    MPQ_CALL(mpq_llama_ensure_scratch(ctx, L, R, maxl));
    const float *W[LPER];
    MPQ_CALL(mpq_llama_block_weights(ctx, L, &L->blk[b], W));
    if (x_out != x_in)
        memcpy(x_out, x_in, sizeof(float) * (size_t)(R * L->dim));
    float *x = x_out; /* the residual stream [R][dim] */
    /* One RMSNorm buffer for both norms; the MLP product overwrites the gate. */
    llama_acts A = {.xn1 = L->xb,
                    .q = L->q,
                    .k = L->k,
                    .v = L->v,
                    .att = L->att,
                    .xn2 = L->xb,
                    .g = L->hb,
                    .u = L->hb2,
                    .h = L->hb};
    MPQ_CALL(mpq_llama_block_core(ctx, L, b, batch, W, x, &A, hook, ud));
    MPQ_CALL(call_hook(ctx, hook, ud, b, LDOWN, LDOWN, A.h, R, L->hidden));
    llama_gemm_wt(A.h, W[LDOWN], x, R, L->hidden, L->dim, 1.0f);
    return MPQ_OK;
}

static mpq_err llama_embed(mpq_ctx *ctx, void *state, const mpq_batch *batch, float *x) {
    llama *L = state;
    MPQ_CHECK(batch->tokens || batch->rows == 0, MPQ_ERR_ARG, "Llama batch without tokens");
    for (int64_t r = 0; r < batch->rows; r++) {
        int32_t t = batch->tokens[r];
        MPQ_CHECK(t >= 0 && t < L->vocab, MPQ_ERR_ARG, "token %d at row %lld is outside [0, %lld)",
                  (int)t, (long long)r, (long long)L->vocab);
        if (L->embed)
            memcpy(x + r * L->dim, L->embed + (int64_t)t * L->dim, sizeof(float) * (size_t)L->dim);
        else
            MPQ_CALL(
                mpq_tensor_read_f32(ctx, L->embed_t, (int64_t)t * L->dim, L->dim, x + r * L->dim));
    }
    return MPQ_OK;
}

mpq_err mpq_llama_head_rows(mpq_ctx *ctx, llama *L, int64_t v0, int64_t *nv, const float **w) {
    *nv = L->vocab - v0 < L->cls_rows ? L->vocab - v0 : L->cls_rows;
    if (L->cls) {
        *w = L->cls + v0 * L->dim;
        return MPQ_OK;
    }
    MPQ_CALL(mpq_tensor_read_f32(ctx, L->cls_t, v0 * L->dim, *nv * L->dim, L->cls_tile));
    *w = L->cls_tile;
    return MPQ_OK;
}

/* logits [rows][vocab], a pass per tile of the head's rows (one pass when
 * the head is mapped F32). */
static mpq_err llama_head(mpq_ctx *ctx, void *state, const float *x, int64_t rows, float *logits) {
    llama *L = state;
    int ri = 0;
    MPQ_CALL(mpq_to_int(ctx, rows * L->vocab, "logits size", &ri));
    MPQ_CALL(mpq_llama_ensure_scratch(ctx, L, rows, 0));
    mpq_rmsnorm(L->xb, x, L->final_norm, rows, L->dim, L->a.norm_eps);
    for (int64_t v0 = 0, nv = 0; v0 < L->vocab; v0 += nv) {
        const float *w = NULL;
        MPQ_CALL(mpq_llama_head_rows(ctx, L, v0, &nv, &w));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nv, (int)L->dim, 1.0f,
                    L->xb, (int)L->dim, w, (int)L->dim, 0.0f, logits + v0, (int)L->vocab);
    }
    return MPQ_OK;
}

static mpq_err llama_get_weight(mpq_ctx *ctx, void *state, int64_t layer, float *w) {
    llama *L = state;
    const llama_block *B = &L->blk[layer / LPER];
    int j = (int)(layer % LPER);
    int64_t n = llama_layer_out(L, j) * llama_layer_in(L, j);
    if (!B->w[j]) {
        MPQ_CALL(mpq_tensor_read_f32(ctx, B->t[j], 0, n, w));
        mpq_model_release_tensor(L->m, B->t[j]);
        return MPQ_OK;
    }
    memcpy(w, B->w[j], sizeof(float) * (size_t)n);
    return MPQ_OK;
}

static mpq_err llama_set_weight(mpq_ctx *ctx, void *state, int64_t layer, const float *w) {
    llama *L = state;
    int j = (int)(layer % LPER);
    int64_t n = llama_layer_out(L, j) * llama_layer_in(L, j);
    llama_block *B = &L->blk[layer / LPER];
    if (!w) {
        /* released: the mapped (or converted per block) original again */
        MPQ_FREE(L->lown[layer]);
        B->w[j] = mapped_f32(B->t[j]);
        return MPQ_OK;
    }
    if (!L->lown[layer])
        MPQ_ALLOC(L->lown[layer], n);
    memcpy(L->lown[layer], w, sizeof(float) * (size_t)n);
    B->w[j] = L->lown[layer];
    return MPQ_OK;
}

static mpq_err llama_set_bias_delta(mpq_ctx *ctx, void *state, int64_t layer, const float *delta) {
    llama *L = state;
    const int j = (int)(layer % LPER);
    llama_block *B = &L->blk[layer / LPER];
    MPQ_CHECK(j <= LO, MPQ_ERR_INTERNAL, "Llama layer %lld has no bias slot", (long long)layer);
    const int64_t n = llama_layer_out(L, j);
    if (!delta) {
        MPQ_FREE(B->bsum[j]);
        return MPQ_OK;
    }
    if (!B->bsum[j])
        MPQ_ALLOC(B->bsum[j], n);
    for (int64_t i = 0; i < n; i++)
        B->bsum[j][i] = (B->bias[j] ? B->bias[j][i] : 0.0f) + delta[i];
    return MPQ_OK;
}

const mpq_family_ops mpq_family_llama_ops = {
    .name = "llama",
    .llama_layout = 1,
    .check_model = mpq_io_check_llama,
    .detect = llama_detect,
    .create = llama_create,
    .destroy = llama_destroy,
    .width = llama_width,
    .embed = llama_embed,
    .block = llama_block_fwd,
    .head = llama_head,
    .get_weight = llama_get_weight,
    .set_weight = llama_set_weight,
    .set_bias_delta = llama_set_bias_delta,
    .block_backward = mpq_llama_block_bwd,
    .block_fit_backward = mpq_llama_block_fit_bwd,
    .head_backward = mpq_llama_head_bwd,
};
