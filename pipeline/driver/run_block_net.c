/* run_block_net.c: the prediction term of round.loss = "network"
 * (run_block_loss.c, run_internal.h): for block b's output on a batch, the
 * KL divergence of the network's prediction from the one a target output
 * of the block gives (the caller's choice, round.kl_target), both through
 * the rest of the network as the working model holds it (the blocks after
 * b are not rounded yet: full precision) and its head, and the gradient of
 * that divergence with respect to the block's output (PD-Quant's
 * prediction loss, with the target recomputed instead of stored).
 *
 * KL = sum over rows of sum_v p_v (log p_v - log q_v), p = softmax of the
 * target logits, q = softmax of the logits from the quantized block's
 * output; dKL/dlogits = q - p per row, then back through the head and the
 * later blocks (mpq_family_head_backward, mpq_family_block_backward).
 *
 * Memory: the inputs of the later blocks on the batch (kept for their
 * backward passes) and four buffers of rows x the widest of activations
 * and logits. Time: two forward passes of the rest of the network and one
 * backward pass per call. */
#include <math.h>
#include <string.h>

#include "mpq_expf.h"
#include "mpq_log.h"
#include "run_internal.h"

struct mpq_block_net {
    int64_t b, nb, rows, wmax, V;
    float **z; /* [nb - b] z[k - b - 1] the input of block k > b, z[nb - b - 1] the last output */
    float *lp, *lq; /* [rows][V] logits: target, quantized */
    float *g0, *g1; /* [rows][max(wmax, V)] gradients */
    float *t0, *t1; /* [rows][wmax] the target's activations */
};

void mpq_block_net_destroy(mpq_block_net **np) {
    mpq_block_net *n = np ? *np : NULL;
    if (!n)
        return;
    for (int64_t k = 0; n->z && k <= n->nb - n->b - 1; k++)
        mpq_free(n->z[k]);
    mpq_free(n->z);
    mpq_free(n->lp);
    mpq_free(n->lq);
    mpq_free(n->g0);
    mpq_free(n->g1);
    mpq_free(n->t0);
    mpq_free(n->t1);
    mpq_free(n);
    *np = NULL;
}

mpq_err mpq_block_net_create(mpq_ctx *ctx, mpq_family *f, int64_t b, int64_t rows,
                             mpq_block_net **out) {
    *out = NULL;
    mpq_block_net *n = NULL;
    MPQ_ALLOC(n, 1);
    const mpq_family_info *fi = mpq_family_get_info(f);
    n->b = b;
    n->nb = fi->nblocks;
    n->rows = rows > 0 ? rows : 1;
    n->V = fi->out_width;
    for (int64_t k = b + 1; k <= n->nb; k++) {
        const int64_t w = mpq_family_width(f, k);
        n->wmax = w > n->wmax ? w : n->wmax;
    }
    const int64_t gw = n->wmax > n->V ? n->wmax : n->V;
    mpq_err err = mpq_malloc(ctx, n->nb - b, sizeof *n->z, (void **)&n->z);
    for (int64_t k = 0; err == MPQ_OK && k < n->nb - b; k++)
        err = mpq_malloc(ctx, n->rows * mpq_family_width(f, b + 1 + k), sizeof(float),
                         (void **)&n->z[k]);
    float **buf[6] = {&n->lp, &n->lq, &n->g0, &n->g1, &n->t0, &n->t1};
    const int64_t len[6] = {n->V, n->V, gw, gw, n->wmax, n->wmax};
    for (int i = 0; i < 6 && err == MPQ_OK; i++)
        err = mpq_malloc(ctx, n->rows * len[i], sizeof(float), (void **)buf[i]);
    if (err != MPQ_OK) {
        mpq_block_net_destroy(&n);
        return err;
    }
    *out = n;
    return MPQ_OK;
}

/* Logits [rows][V] of block b's output y through the rest of the network;
 * with keep, z receives the activations (z[0] = y itself). */
static mpq_err rest(mpq_ctx *ctx, mpq_block_net *n, mpq_family *f, const mpq_batch *bt,
                    const float *y, int keep, float *logits) {
    const int64_t R = bt->rows, w0 = mpq_family_width(f, n->b + 1);
    float *cur = keep ? n->z[0] : n->t0;
    memcpy(cur, y, sizeof(float) * (size_t)(R * w0));
    for (int64_t k = n->b + 1; k < n->nb; k++) {
        float *next = keep ? n->z[k - n->b] : (cur == n->t0 ? n->t1 : n->t0);
        MPQ_CALL(mpq_family_block(ctx, f, k, bt, cur, next, NULL, NULL));
        cur = next;
    }
    MPQ_CALL(mpq_family_head(ctx, f, cur, R, logits));
    return MPQ_OK;
}

/* One row of the prediction term from the target's logits xp and the
 * quantized model's xq: KL(p || q) = sum p (log p - log q), with log p -
 * log q = (xp - xq) - (lse_p - lse_q); with g, the gradient of coef KL by
 * the quantized logits, coef (q - p). ep, eq: [V] scratch (g may be ep).
 * Built for AVX2 and for the baseline, with the same bits (see
 * mpq_llama_softmax_tile). */
__attribute__((target_clones("avx2", "default"))) static double
row_kl(const float *xp, const float *xq, int64_t V, double coef, float *ep, float *eq, float *g) {
    float mp, mq;
    const double sp = mpq_exp_shifted(xp, ep, V, &mp), sq = mpq_exp_shifted(xq, eq, V, &mq);
    const double d = ((double)mp + log(sp)) - ((double)mq + log(sq));
    const double ip = 1.0 / sp, iq = 1.0 / sq;
    double t[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t v = 0;
    for (; v + 3 < V; v += 4)
        for (int k = 0; k < 4; k++)
            t[k] += (double)ep[v + k] * (((double)xp[v + k] - (double)xq[v + k]) - d);
    for (; v < V; v++)
        t[0] += (double)ep[v] * (((double)xp[v] - (double)xq[v]) - d);
    if (g)
        for (v = 0; v < V; v++)
            g[v] = (float)(coef * ((double)eq[v] * iq - (double)ep[v] * ip));
    return ((t[0] + t[1]) + (t[2] + t[3])) * ip;
}

mpq_err mpq_block_net_kl(mpq_ctx *ctx, mpq_block_net *n, mpq_family *f, const mpq_batch *bt,
                         const float *yq, const float *yfp, double coef, float *dy, double *kl) {
    const int64_t R = bt->rows, V = n->V;
    MPQ_CHECK(R <= n->rows, MPQ_ERR_INTERNAL, "network loss: %lld rows, room for %lld",
              (long long)R, (long long)n->rows);
    MPQ_CALL(rest(ctx, n, f, bt, yfp, 0, n->lp));
    MPQ_CALL(rest(ctx, n, f, bt, yq, dy != NULL, n->lq));
    /* row by row; the exponentials go into g0's row (the gradient, which
     * replaces them) and g1's (free until the head's backward pass) */
    double sum = 0.0;
    for (int64_t r = 0; r < R; r++)
        sum += row_kl(n->lp + r * V, n->lq + r * V, V, coef, n->g0 + r * V, n->g1 + r * V,
                      dy ? n->g0 + r * V : NULL);
    if (kl)
        *kl = sum;
    if (!dy)
        return MPQ_OK;
    /* g0 = dKL/dlogits times coef; back through the head and blocks */
    MPQ_CALL(mpq_family_head_backward(ctx, f, n->z[n->nb - 1 - n->b], R, n->g0, n->g1));
    float *g = n->g1, *h = n->g0;
    for (int64_t k = n->nb - 1; k > n->b; k--) {
        MPQ_CALL(mpq_family_block_backward(ctx, f, k, bt, n->z[k - n->b - 1], g, h, NULL, NULL));
        float *t = g;
        g = h;
        h = t;
    }
    const int64_t w0 = mpq_family_width(f, n->b + 1);
    for (int64_t i = 0; i < R * w0; i++)
        dy[i] += g[i];
    return MPQ_OK;
}
