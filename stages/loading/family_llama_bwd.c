/* family_llama_bwd.c: the backward pass of one Llama decoder block, for
 * block-wise reconstruction (mpq_family_block_backward).
 *
 * The block is recomputed with the forward's own code
 * (mpq_llama_block_core), keeping the intermediate values apart, then the
 * gradient runs back through it:
 *
 *   y   = x1 + h Wd^T,       h = silu(g) * u,  g = n2 Wg^T, u = n2 Wu^T,
 *   n2  = rmsnorm(x1),       x1 = x0 + att Wo^T + bo,
 *   att = softmax(scale * rope(q) rope(k)^T, causal) v  per (sequence, head),
 *   q   = n1 Wq^T + bq (k, v likewise),  n1 = rmsnorm(x0).
 *
 * Every weight gradient is one SGEMM over all rows, dW += dOut^T X, and
 * every input gradient one SGEMM, dX = dOut W. Attention is redone per
 * (sequence, head) in the forward's query tiles: the probabilities P of a
 * tile are recomputed, dP = dO V^T, dS = P .* (dP - rowsum(dP .* P)), then
 * dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO. The learned
 * corrections of the q/k/v/o biases (round.learn_bias) get the column sums
 * of their outputs' gradients; norm weights and the model's own biases get
 * none; dx flows through both norms, RoPE (the inverse rotation), softmax
 * and both residuals. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "family_llama_internal.h"
#include "mpq_ctx.h"
#include "mpq_family.h"

/* The backward's own buffers, carved from L->bw (each [rows][width]). */
typedef struct bwd_bufs {
    float *x1;   /* [dim] residual stream after attention */
    float *xn2;  /* [dim] MLP RMSNorm output */
    float *h;    /* [hidden] silu(g) * u */
    float *dg;   /* [hidden] dL/dh, then dL/dg */
    float *du;   /* [hidden] dL/du */
    float *dxn;  /* [dim] dL/d(RMSNorm output): MLP, then attention */
    float *dx1;  /* [dim] dL/dx1 */
    float *datt; /* [qdim] dL/datt */
    float *dq;   /* [qdim] dL/dq (rotated, then unrotated) */
    float *dk;   /* [kvdim] dL/dk likewise */
    float *dv;   /* [kvdim] dL/dv */
} bwd_bufs;

/* Grows the backward buffers to `rows` rows and a second scores tile over
 * maxl keys, then points B into them. */
static mpq_err ensure_bwd(mpq_ctx *ctx, llama *L, int64_t rows, int64_t maxl, bwd_bufs *B) {
    int64_t per_row = 4 * L->dim + 3 * L->hidden + 2 * L->qdim + 2 * L->kvdim;
    if (rows > L->bw_rows) {
        MPQ_FREE(L->bw);
        L->bw_rows = 0;
        int64_t n = 0;
        MPQ_CALL(mpq_mul64(ctx, rows, per_row, "Llama backward scratch", &n));
        MPQ_ALLOC(L->bw, n);
        L->bw_rows = rows;
    }
    if (maxl > L->bw_l) {
        MPQ_FREE(L->bsc);
        L->bw_l = 0;
        int64_t n = 0;
        MPQ_CALL(mpq_mul64(ctx, maxl < ATT_TILE ? maxl : ATT_TILE, maxl,
                           "attention score gradients", &n));
        MPQ_ALLOC(L->bsc, n);
        L->bw_l = maxl;
    }
    float *p = L->bw;
    float **dst[] = {&B->x1,  &B->xn2,  &B->h,  &B->dg, &B->du, &B->dxn,
                     &B->dx1, &B->datt, &B->dq, &B->dk, &B->dv};
    int64_t widths[] = {L->dim, L->dim,  L->hidden, L->hidden, L->hidden, L->dim,
                        L->dim, L->qdim, L->qdim,   L->kvdim,  L->kvdim};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
        *dst[i] = p;
        p += rows * widths[i];
    }
    return MPQ_OK;
}

/* dw (+)= dout^T x: dout [rows][out], x [rows][in], dw [out][in]. */
static void add_dw(float *dw, const float *dout, const float *x, int64_t rows, int64_t out,
                   int64_t in) {
    if (!dw)
        return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)rows, 1.0f, dout,
                (int)out, x, (int)in, 1.0f, dw, (int)in);
}

/* db (+)= the column sums of dout [rows][out] (db NULL: nothing). */
static void add_db(float *db, const float *dout, int64_t rows, int64_t out) {
    for (int64_t r = 0; db && r < rows; r++)
        for (int64_t i = 0; i < out; i++)
            db[i] += dout[r * out + i];
}

/* dx (+)= dout W: dout [rows][out], W [out][in], dx [rows][in]. */
static void gemm_w(const float *dout, const float *w, float *dx, int64_t rows, int64_t out,
                   int64_t in, float beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)in, (int)out, 1.0f, dout,
                (int)out, w, (int)in, beta, dx, (int)in);
}

/* dx = dres + the gradient through out = rmsnorm(x) * w given dn = dL/dout:
 * with inv = (mean(x^2) + eps)^-1/2, dx_i = inv w_i dn_i - x_i inv^3
 * sum_j(w_j dn_j x_j) / n. Row by row, each row read before it is written,
 * so dx may be dres or x. */
static void rmsnorm_bwd(float *dx, const float *dres, const float *x, const float *w,
                        const float *dn, int64_t rows, int64_t n, double eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dr = dn + r * n, *rr = dres + r * n;
        double ss = 0.0, dot = 0.0;
        for (int64_t i = 0; i < n; i++) {
            ss += (double)xr[i] * xr[i];
            dot += (double)w[i] * dr[i] * xr[i];
        }
        double inv = 1.0 / sqrt(ss / (double)n + eps);
        double c = inv * inv * inv * dot / (double)n;
        float *o = dx + r * n;
        for (int64_t i = 0; i < n; i++)
            o[i] = (float)((double)rr[i] + inv * w[i] * dr[i] - c * xr[i]);
    }
}

/* Attention backward: from datt, dq (written) and dk, dv (accumulated from
 * zero) with respect to the rotated q and k and to v, tile by tile as the
 * forward runs. */
static void attention_bwd(llama *L, const mpq_batch *batch, const llama_acts *A,
                          const bwd_bufs *G) {
    float scale = (float)(1.0 / sqrt((double)L->hd));
    int64_t grp = L->nh / L->nkv, kvd = L->kvdim, qd = L->qdim, hd = L->hd;
    memset(G->dk, 0, sizeof(float) * (size_t)(batch->rows * kvd));
    memset(G->dv, 0, sizeof(float) * (size_t)(batch->rows * kvd));
    float *P = L->sc, *dS = L->bsc;
    int64_t r0 = 0;
    for (int64_t s = 0; s < batch->nseq; s++) {
        int64_t n = batch->len[s];
        for (int64_t h = 0; h < L->nh; h++) {
            int64_t kh = h / grp;
            const float *kk = A->k + r0 * kvd + kh * hd, *vv = A->v + r0 * kvd + kh * hd;
            float *dkk = G->dk + r0 * kvd + kh * hd, *dvv = G->dv + r0 * kvd + kh * hd;
            for (int64_t i0 = 0; i0 < n; i0 += ATT_TILE) {
                int64_t i1 = i0 + ATT_TILE < n ? i0 + ATT_TILE : n, tq = i1 - i0;
                int64_t off = (r0 + i0) * qd + h * hd;
                const float *qh = A->q + off, *doh = G->datt + off;
                /* P [tq][i1] exactly as the forward computes it */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)tq, (int)i1, (int)hd,
                            scale, qh, (int)qd, kk, (int)kvd, 0.0f, P, (int)i1);
                mpq_llama_softmax_tile(P, tq, i0, i1);
                /* dP = dO_tile V^T, then dS = P .* (dP - rowsum(P .* dP)) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)tq, (int)i1, (int)hd,
                            1.0f, doh, (int)qd, vv, (int)kvd, 0.0f, dS, (int)i1);
                for (int64_t r = 0; r < tq; r++) {
                    const float *pr = P + r * i1;
                    float *dr = dS + r * i1;
                    double dot = 0.0;
                    for (int64_t j = 0; j <= i0 + r; j++)
                        dot += (double)pr[j] * dr[j];
                    for (int64_t j = 0; j <= i0 + r; j++)
                        dr[j] = (float)((double)pr[j] * ((double)dr[j] - dot));
                    for (int64_t j = i0 + r + 1; j < i1; j++)
                        dr[j] = 0.0f;
                }
                /* dQ_tile = scale dS K; dK += scale dS^T Q_tile; dV += P^T dO_tile */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)tq, (int)hd, (int)i1,
                            scale, dS, (int)i1, kk, (int)kvd, 0.0f, G->dq + off, (int)qd);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)i1, (int)hd, (int)tq,
                            scale, dS, (int)i1, qh, (int)qd, 1.0f, dkk, (int)kvd);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)i1, (int)hd, (int)tq,
                            1.0f, P, (int)i1, doh, (int)qd, 1.0f, dvv, (int)kvd);
            }
        }
        /* back through RoPE: the transposed rotation */
        mpq_llama_rope(L, G->dq + r0 * qd, n, L->nh, 0, 1);
        mpq_llama_rope(L, G->dk + r0 * kvd, n, L->nkv, 0, 1);
        r0 += n;
    }
}

/* MLP backward: from dy, dx1 = dy + the path through the MLP; adds the
 * gate, up and down weight gradients. */
static void mlp_bwd(llama *L, const llama_block *Bk, const float *const *W, const llama_acts *A,
                    const bwd_bufs *G, const float *dy, float *const *dw, int64_t R) {
    int64_t D = L->dim, H = L->hidden;
    add_dw(dw ? dw[LDOWN] : NULL, dy, A->h, R, D, H);
    gemm_w(dy, W[LDOWN], G->dg, R, D, H, 0.0f); /* dh */
    for (int64_t i = 0; i < R * H; i++) {
        /* h = silu(g) u: dg = dh u silu'(g), silu' = sig (1 + g (1 - sig)) */
        float g = A->g[i], sig = 1.0f / (1.0f + expf(-g)), dh = G->dg[i];
        G->du[i] = dh * (g * sig);
        G->dg[i] = dh * A->u[i] * (sig * (1.0f + g * (1.0f - sig)));
    }
    add_dw(dw ? dw[LGATE] : NULL, G->dg, A->xn2, R, H, D);
    add_dw(dw ? dw[LUP] : NULL, G->du, A->xn2, R, H, D);
    gemm_w(G->dg, W[LGATE], G->dxn, R, H, D, 0.0f);
    gemm_w(G->du, W[LUP], G->dxn, R, H, D, 1.0f);
    rmsnorm_bwd(G->dx1, dy, G->x1, Bk->ffn_norm, G->dxn, R, D, L->a.norm_eps);
}

/* The backward from dy, or with target (dy NULL) from the fit's gradient:
 * y = the block's output (computed as llama_block_fwd does), dyb = 2 (y -
 * target). */
static mpq_err block_bwd(mpq_ctx *ctx, llama *L, int64_t b, const mpq_batch *batch,
                         const float *x_in, const float *dy, const float *target, float *y,
                         float *dyb, float *dx, float *const *dw, float *const *db) {
    const llama_block *Bk = &L->blk[b];
    int64_t R = batch->rows, maxl = 0, D = L->dim;
    MPQ_CALL(mpq_llama_check_batch(ctx, L, batch, &maxl));
    MPQ_CALL(mpq_llama_ensure_scratch(ctx, L, R, maxl));
    bwd_bufs G;
    MPQ_CALL(ensure_bwd(ctx, L, R, maxl, &G));
    const float *W[LPER];
    MPQ_CALL(mpq_llama_block_weights(ctx, L, Bk, W));

    /* Forward recomputation, every intermediate kept (the forward scratch
     * holds n1, q, k, v, att, g, u). */
    llama_acts A = {.xn1 = L->xb,
                    .q = L->q,
                    .k = L->k,
                    .v = L->v,
                    .att = L->att,
                    .xn2 = G.xn2,
                    .g = L->hb,
                    .u = L->hb2,
                    .h = G.h};
    memcpy(G.x1, x_in, sizeof(float) * (size_t)(R * D));
    MPQ_CALL(mpq_llama_block_core(ctx, L, b, batch, W, G.x1, &A, NULL, NULL));
    if (target) {
        memcpy(y, G.x1, sizeof(float) * (size_t)(R * D));
        llama_gemm_wt(A.h, W[LDOWN], y, R, L->hidden, D, 1.0f);
        for (int64_t i = 0; i < R * D; i++)
            dyb[i] = 2.0f * (y[i] - target[i]);
        dy = dyb;
    }

    mlp_bwd(L, Bk, W, &A, &G, dy, dw, R);

    /* o_proj and attention */
    add_dw(dw ? dw[LO] : NULL, G.dx1, A.att, R, D, L->qdim);
    add_db(db ? db[LO] : NULL, G.dx1, R, D);
    int need_qkv =
        dx || (dw && (dw[LQ] || dw[LK] || dw[LV])) || (db && (db[LQ] || db[LK] || db[LV]));
    if (!need_qkv)
        return MPQ_OK;
    gemm_w(G.dx1, W[LO], G.datt, R, D, L->qdim, 0.0f);
    attention_bwd(L, batch, &A, &G);
    add_dw(dw ? dw[LQ] : NULL, G.dq, A.xn1, R, L->qdim, D);
    add_dw(dw ? dw[LK] : NULL, G.dk, A.xn1, R, L->kvdim, D);
    add_dw(dw ? dw[LV] : NULL, G.dv, A.xn1, R, L->kvdim, D);
    add_db(db ? db[LQ] : NULL, G.dq, R, L->qdim);
    add_db(db ? db[LK] : NULL, G.dk, R, L->kvdim);
    add_db(db ? db[LV] : NULL, G.dv, R, L->kvdim);
    if (!dx)
        return MPQ_OK;
    gemm_w(G.dq, W[LQ], G.dxn, R, L->qdim, D, 0.0f);
    gemm_w(G.dk, W[LK], G.dxn, R, L->kvdim, D, 1.0f);
    gemm_w(G.dv, W[LV], G.dxn, R, L->kvdim, D, 1.0f);
    rmsnorm_bwd(dx, G.dx1, x_in, Bk->attn_norm, G.dxn, R, D, L->a.norm_eps);
    return MPQ_OK;
}

mpq_err mpq_llama_head_bwd(mpq_ctx *ctx, void *state, const float *x, int64_t rows,
                           const float *dlogits, float *dx) {
    llama *L = state;
    int ri = 0;
    MPQ_CALL(mpq_to_int(ctx, rows * L->vocab, "logits size", &ri));
    MPQ_CALL(mpq_llama_ensure_scratch(ctx, L, rows, 0));
    /* dn = dlogits cls into the scratch row buffer (summed over the head's
     * tiles), then the final norm's */
    for (int64_t v0 = 0, nv = 0; v0 < L->vocab; v0 += nv) {
        const float *w = NULL;
        MPQ_CALL(mpq_llama_head_rows(ctx, L, v0, &nv, &w));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)L->dim, (int)nv,
                    1.0f, dlogits + v0, (int)L->vocab, w, (int)L->dim, v0 ? 1.0f : 0.0f, L->xb,
                    (int)L->dim);
    }
    memset(dx, 0, sizeof(float) * (size_t)(rows * L->dim));
    rmsnorm_bwd(dx, dx, x, L->final_norm, L->xb, rows, L->dim, L->a.norm_eps);
    return MPQ_OK;
}

mpq_err mpq_llama_block_bwd(mpq_ctx *ctx, void *state, int64_t b, const mpq_batch *batch,
                            const float *x_in, const float *dy, float *dx, float *const *dw,
                            float *const *db) {
    return block_bwd(ctx, state, b, batch, x_in, dy, NULL, NULL, NULL, dx, dw, db);
}

mpq_err mpq_llama_block_fit_bwd(mpq_ctx *ctx, void *state, int64_t b, const mpq_batch *batch,
                                const float *x_in, const float *target, float *y, float *dy,
                                float *const *dw, float *const *db) {
    return block_bwd(ctx, state, b, batch, x_in, NULL, target, y, dy, NULL, dw, db);
}
