/* eval.c: language-model evaluation (perplexity, KL divergence, top-1
 * agreement) distributed over documents, greedy generation, and the ordered
 * reduction shared with the classifier evaluation. */
#include <math.h>
#include <string.h>

#include "eval_internal.h"
#include "mpq_coll.h"
#include "mpq_ctx.h"
#include "mpq_eval.h"
#include "mpq_text.h"
#include "mpq_tokenizer.h"
#include "mpq_timer.h"

double mpq_logsumexp(const float *x, int64_t n, int64_t *argmax) {
    int64_t am = 0;
    float mx = x[0];
    for (int64_t i = 1; i < n; i++)
        if (x[i] > mx) {
            mx = x[i];
            am = i;
        }
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += exp((double)x[i] - (double)mx);
    if (argmax)
        *argmax = am;
    return (double)mx + log(s);
}

double mpq_kl_rows(const float *p, const float *q, int64_t rows, int64_t n) {
    double tot = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const float *a = p + r * n, *b = q + r * n;
        double la = mpq_logsumexp(a, n, NULL), lb = mpq_logsumexp(b, n, NULL), kl = 0.0;
        for (int64_t j = 0; j < n; j++) {
            double lpa = (double)a[j] - la, lpb = (double)b[j] - lb;
            kl += exp(lpa) * (lpa - lpb);
        }
        tot += kl > 0.0 ? kl : 0.0;
    }
    return tot;
}

void mpq_eval_range(const mpq_ctx *ctx, int64_t n, int64_t *lo, int64_t *hi) {
    *lo = n * ctx->rank / ctx->size;
    *hi = n * (ctx->rank + 1) / ctx->size;
}

mpq_err mpq_eval_ordered_sum(mpq_ctx *ctx, int64_t n, int k, const double *mine, double *sums) {
    int64_t lo = 0, hi = 0;
    mpq_eval_range(ctx, n, &lo, &hi);
    return mpq_eval_ordered_sum_at(ctx, n, lo, hi, k, mine, sums);
}

mpq_err mpq_eval_ordered_sum_at(mpq_ctx *ctx, int64_t n, int64_t lo, int64_t hi, int k,
                                const double *mine, double *sums) {
    mpq_err err = MPQ_OK;
    int *counts = NULL, *displs = NULL;
    int64_t *ranges = NULL;
    double *all = NULL;
    for (int j = 0; j < k; j++)
        sums[j] = 0.0;
    if (ctx->comm == MPI_COMM_NULL || ctx->size == 1) {
        for (int64_t i = 0; i < n; i++)
            for (int j = 0; j < k; j++)
                sums[j] += mine[i * k + j];
        return MPQ_OK;
    }
    int mycount = 0, total = 0;
    const int64_t mine_range[2] = {lo, hi};
    MPQ_TRY(mpq_to_int(ctx, n * k, "per-item results", &total));
    mycount = (int)((hi - lo) * k);
    if (ctx->rank == 0) {
        MPQ_ALLOC_TRY(counts, ctx->size);
        MPQ_ALLOC_TRY(displs, ctx->size);
        MPQ_ALLOC_TRY(ranges, 2 * ctx->size);
        MPQ_ALLOC_TRY(all, n * k > 0 ? n * k : 1);
    }
cleanup:
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK) {
        /* every rank's range, so that rank 0 places each in item order */
        int rc = MPI_Gather(mine_range, 2, MPI_INT64_T, ranges, 2, MPI_INT64_T, 0, ctx->comm);
        err = mpq_mpi_check(ctx, rc, "MPI_Gather", __FILE__, __LINE__, __func__);
    }
    if (err == MPQ_OK && ctx->rank == 0)
        for (int r = 0; r < ctx->size; r++) {
            counts[r] = (int)((ranges[2 * r + 1] - ranges[2 * r]) * k);
            displs[r] = (int)(ranges[2 * r] * k);
        }
    if (err == MPQ_OK) {
        int rc =
            MPI_Gatherv(mine, mycount, MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, 0, ctx->comm);
        err = mpq_mpi_check(ctx, rc, "MPI_Gatherv", __FILE__, __LINE__, __func__);
    }
    if (err == MPQ_OK && ctx->rank == 0)
        for (int64_t i = 0; i < n; i++)
            for (int j = 0; j < k; j++)
                sums[j] += all[i * k + j];
    if (err == MPQ_OK) {
        int rc = MPI_Bcast(sums, k, MPI_DOUBLE, 0, ctx->comm);
        err = mpq_mpi_check(ctx, rc, "MPI_Bcast", __FILE__, __LINE__, __func__);
    }
    mpq_free(counts);
    mpq_free(displs);
    mpq_free(ranges);
    mpq_free(all);
    return err;
}

/* Per-document record: total NLL, predictions, total KL, agreeing argmaxes,
 * the reference's total NLL. */
enum { R_NLL = 0, R_NPRED, R_KLD, R_AGREE, R_RNLL, R_K };

/* Scores one document of n tokens from its logits (and the reference's,
 * rlogits, or NULL); rec gets its R_K sums. */
static mpq_err score_doc(mpq_ctx *ctx, int64_t d, const int32_t *toks, int64_t n, int64_t V,
                         const float *logits, const float *rlogits, double *rec) {
    for (int j = 0; j < R_K; j++)
        rec[j] = 0.0;
    for (int64_t i = 0; i + 1 < n; i++) {
        const float *l = logits + i * V;
        int64_t am = 0;
        double lse = mpq_logsumexp(l, V, &am);
        int32_t target = toks[i + 1];
        rec[R_NLL] += lse - (double)l[target];
        rec[R_NPRED] += 1.0;
        if (rlogits) {
            const float *rl = rlogits + i * V;
            int64_t ram = 0;
            double rlse = mpq_logsumexp(rl, V, &ram);
            double kl = 0.0;
            for (int64_t v = 0; v < V; v++) {
                double lp = (double)rl[v] - rlse; /* log P_ref */
                double lq = (double)l[v] - lse;   /* log P_model */
                kl += exp(lp) * (lp - lq);
            }
            rec[R_KLD] += kl;
            rec[R_AGREE] += am == ram ? 1.0 : 0.0;
            rec[R_RNLL] += rlse - (double)rl[target];
        }
    }
    MPQ_CHECK(isfinite(rec[R_NLL]) && isfinite(rec[R_KLD]) && isfinite(rec[R_RNLL]),
              MPQ_ERR_NUMERIC, "document %lld (%lld tokens): the NLL or KLD is not finite",
              (long long)d, (long long)n);
    return MPQ_OK;
}

/* This rank's groups of documents [glo, ghi) (documents [lo, hi)), their
 * activations and the buffers of the streamed pass. Group g holds the
 * documents [gdoc[g], gdoc[g + 1]), forwarded as one batch. */
typedef struct lm_stream {
    const int32_t *tokens;
    const int64_t *offsets; /* token offset of document d (valid on [lo, hi]) */
    const int64_t *gdoc;
    int64_t glo, ghi, lo, hi, wmax;
    int64_t *lens;       /* [the most documents of a group] the batch's lengths */
    float *x, *rx, *tmp; /* [tokens][wmax] of f and of ref; [largest group][wmax] */
} lm_stream;

/* Group g as a batch (its documents with tokens; a 1-token document gives
 * no prediction but keeps the tokens contiguous) and its activations. */
static mpq_batch group_batch(const lm_stream *st, int64_t g, float *x, float **xg) {
    const int64_t d0 = st->gdoc[g], d1 = st->gdoc[g + 1];
    int64_t nseq = 0;
    for (int64_t d = d0; d < d1; d++)
        if (st->offsets[d + 1] > st->offsets[d])
            st->lens[nseq++] = st->offsets[d + 1] - st->offsets[d];
    *xg = x + (st->offsets[d0] - st->offsets[st->lo]) * st->wmax;
    return (mpq_batch){.nseq = nseq,
                       .len = st->lens,
                       .rows = st->offsets[d1] - st->offsets[d0],
                       .tokens = st->tokens + st->offsets[d0]};
}

/* Local. MPQ_OK when the activations xg [rows][w] of group g (the output
 * of block b of f; -1: the embedding) are finite, else an error naming the
 * model (who), the document, the token and the block. */
static mpq_err group_check(mpq_ctx *ctx, mpq_family *f, const lm_stream *st, int64_t g, int64_t b,
                           const float *xg, int64_t rows, const char *who) {
    const int64_t w = mpq_family_width(f, b + 1);
    const int64_t at = mpq_eval_first_nonfinite(xg, rows * w);
    if (at < 0)
        return MPQ_OK;
    const int64_t row = at / w, base = st->offsets[st->gdoc[g]];
    int64_t d = st->gdoc[g];
    while (d + 1 < st->gdoc[g + 1] && st->offsets[d + 1] - base <= row)
        d++;
    char stage[MPQ_TENSOR_NAME_MAX + 32];
    mpq_eval_block_name(f, b, stage, sizeof stage);
    return MPQ_ERROR(MPQ_ERR_NUMERIC,
                     "document %lld (%lld tokens): the output of %s of %s is not finite (%s at "
                     "token %lld, value %lld of %lld): a weight is not finite or an activation "
                     "overflows fp32",
                     (long long)d, (long long)(st->offsets[d + 1] - st->offsets[d]), stage, who,
                     mpq_eval_nonfinite_kind(xg[at]), (long long)(row - (st->offsets[d] - base)),
                     (long long)(at % w), (long long)w);
}

/* Local. The logits [n][V] of document d are finite, or an error naming it. */
static mpq_err logits_check(mpq_ctx *ctx, int64_t d, int64_t n, int64_t V, const float *logits,
                            const char *who) {
    const int64_t at = mpq_eval_first_nonfinite(logits, n * V);
    MPQ_CHECK(at < 0, MPQ_ERR_NUMERIC,
              "document %lld (%lld tokens): the logits of %s are not finite (%s at token %lld, "
              "vocabulary entry %lld): a weight is not finite or an activation overflows fp32",
              (long long)d, (long long)n, who, mpq_eval_nonfinite_kind(logits[at]),
              (long long)(at / V), (long long)(at % V));
    return MPQ_OK;
}

/* Local. Model f through every block, streamed: all of the rank's
 * activations x are held (group g from its first token's row, stride wmax,
 * packed at the current width) and each block is entered once (its block
 * source, mpq_family.h, may bring its weights and take them away again)
 * and runs the groups one at a time. A group's numbers do not depend on
 * the rank that runs it. */
static mpq_err stream_blocks(mpq_ctx *ctx, mpq_family *f, const lm_stream *st, float *x,
                             const char *who, mpq_progress *pr, int64_t *done) {
    const int64_t nb = mpq_family_get_info(f)->nblocks;
    float *xg = NULL;
    for (int64_t g = st->glo; g < st->ghi; g++) {
        mpq_batch bt = group_batch(st, g, x, &xg);
        if (bt.rows > 0) {
            MPQ_CALL(mpq_family_embed(ctx, f, &bt, xg));
            MPQ_CALL(group_check(ctx, f, st, g, -1, xg, bt.rows, who));
        }
    }
    for (int64_t b = 0; b < nb; b++) {
        MPQ_CALL(mpq_family_block_enter(ctx, f, b));
        const int64_t wout = mpq_family_width(f, b + 1);
        mpq_err err = MPQ_OK;
        for (int64_t g = st->glo; g < st->ghi && err == MPQ_OK; g++) {
            mpq_batch bt = group_batch(st, g, x, &xg);
            if (bt.rows == 0)
                continue;
            err = mpq_family_block(ctx, f, b, &bt, xg, st->tmp, NULL, NULL);
            if (err == MPQ_OK)
                memcpy(xg, st->tmp, sizeof(float) * (size_t)(bt.rows * wout));
            if (err == MPQ_OK)
                err = group_check(ctx, f, st, g, b, xg, bt.rows, who);
        }
        mpq_err e2 = mpq_family_block_leave(ctx, f, b);
        MPQ_CALL(err != MPQ_OK ? err : e2);
        mpq_progress_update(ctx, pr, ++*done);
    }
    return MPQ_OK;
}

/* Local. Buffers of the streamed pass. */
static mpq_err stream_alloc(mpq_ctx *ctx, mpq_family *f, int has_ref, lm_stream *st) {
    const mpq_family_info *fi = mpq_family_get_info(f);
    for (int64_t b = 0; b <= fi->nblocks; b++)
        st->wmax = mpq_family_width(f, b) > st->wmax ? mpq_family_width(f, b) : st->wmax;
    int64_t rows = st->offsets[st->hi] - st->offsets[st->lo], grows = 1, gdocs = 1, n = 0, m = 0;
    for (int64_t g = st->glo; g < st->ghi; g++) {
        const int64_t r = st->offsets[st->gdoc[g + 1]] - st->offsets[st->gdoc[g]];
        grows = r > grows ? r : grows;
        gdocs = st->gdoc[g + 1] - st->gdoc[g] > gdocs ? st->gdoc[g + 1] - st->gdoc[g] : gdocs;
    }
    MPQ_CALL(mpq_mul64(ctx, rows > 0 ? rows : 1, st->wmax, "evaluation activations", &n));
    MPQ_CALL(mpq_mul64(ctx, grows, st->wmax, "evaluation activations", &m));
    /* written (embedding, block) before they are read: not zeroed */
    MPQ_CALL(mpq_malloc_raw(ctx, n, sizeof(float), (void **)&st->x));
    if (has_ref)
        MPQ_CALL(mpq_malloc_raw(ctx, n, sizeof(float), (void **)&st->rx));
    MPQ_CALL(mpq_malloc_raw(ctx, m, sizeof(float), (void **)&st->tmp));
    MPQ_CALL(mpq_malloc(ctx, gdocs, sizeof *st->lens, (void **)&st->lens));
    return MPQ_OK;
}

static void stream_free(lm_stream *st) {
    mpq_free(st->x);
    mpq_free(st->rx);
    mpq_free(st->tmp);
    mpq_free(st->lens);
}

mpq_err mpq_eval_groups(mpq_ctx *ctx, const int64_t *len, int64_t ndocs, int64_t **gdoc,
                        int64_t *ngroups) {
    MPQ_CALL(mpq_malloc(ctx, ndocs + 1, sizeof **gdoc, (void **)gdoc));
    int64_t n = 0, rows = 0;
    for (int64_t d = 0; d < ndocs; d++) {
        if (d == 0 || rows + len[d] > MPQ_EVAL_BATCH_TOKENS) {
            (*gdoc)[n++] = d;
            rows = 0;
        }
        rows += len[d];
    }
    (*gdoc)[n] = ndocs;
    *ngroups = n;
    return MPQ_OK;
}

/* Local. The heads and the scores of this rank's groups [glo, ghi) (from
 * document lo): the head one document at a time, its logits being the
 * largest buffer. */
static mpq_err score_groups(mpq_ctx *ctx, mpq_family *f, mpq_family *ref, const lm_stream *st,
                            float *logits, float *rlogits, double *rec) {
    const mpq_family_info *fi = mpq_family_get_info(f);
    const int64_t w = mpq_family_width(f, fi->nblocks), lo = st->lo;
    const int64_t *offsets = st->offsets, *gdoc = st->gdoc;
    for (int64_t g = st->glo; g < st->ghi; g++)
        for (int64_t d = gdoc[g]; d < gdoc[g + 1]; d++) {
            const int64_t n = offsets[d + 1] - offsets[d];
            const int64_t row = offsets[gdoc[g]] - offsets[lo];
            const int64_t in_group = offsets[d] - offsets[gdoc[g]];
            double *r = rec + (d - lo) * R_K;
            if (n < 2)
                continue;
            MPQ_CALL(mpq_family_head(ctx, f, st->x + row * st->wmax + in_group * w, n, logits));
            MPQ_CALL(logits_check(ctx, d, n, fi->out_width, logits, "the model"));
            if (ref) {
                MPQ_CALL(
                    mpq_family_head(ctx, ref, st->rx + row * st->wmax + in_group * w, n, rlogits));
                MPQ_CALL(logits_check(ctx, d, n, fi->out_width, rlogits, "the reference"));
            }
            MPQ_CALL(
                score_doc(ctx, d, st->tokens + offsets[d], n, fi->out_width, logits, rlogits, r));
        }
    return MPQ_OK;
}

/* Roles when a reference is evaluated on at least twice as many ranks as
 * there are groups: group g's model runs on rank g and its reference on rank
 * ngroups + g, which then sends the reference's last activations to rank g;
 * the other ranks wait. Each model's forward pass is the same batch on
 * whichever rank runs it, so the figures keep their bits. */
enum { ROLE_BOTH = 0, ROLE_MODEL, ROLE_REFERENCE, ROLE_IDLE };

static int eval_role(const mpq_ctx *ctx, const mpq_family *ref, int64_t ngroups) {
    if (!ref || ctx->comm == MPI_COMM_NULL || ngroups < 1 || 2 * ngroups > ctx->size)
        return ROLE_BOTH;
    return ctx->rank < ngroups ? ROLE_MODEL : ctx->rank < 2 * ngroups ? ROLE_REFERENCE : ROLE_IDLE;
}

/* Collective, after the streamed passes of split roles agreed: the reference's
 * activations of group g from rank ngroups + g into rank g's st->rx. */
static mpq_err share_reference(mpq_ctx *ctx, const lm_stream *st, int role, int64_t ngroups) {
    if (role != ROLE_MODEL && role != ROLE_REFERENCE)
        return MPQ_OK;
    int n = 0;
    MPQ_CALL(mpq_to_int(ctx, (st->offsets[st->hi] - st->offsets[st->lo]) * st->wmax,
                        "evaluation activations (MPI)", &n));
    if (role == ROLE_REFERENCE)
        MPQ_MPI(MPI_Send(st->rx, n, MPI_FLOAT, (int)(ctx->rank - ngroups), 0, ctx->comm));
    else
        MPQ_MPI(MPI_Recv(st->rx, n, MPI_FLOAT, (int)(ctx->rank + ngroups), 0, ctx->comm,
                         MPI_STATUS_IGNORE));
    return MPQ_OK;
}

/* Collective. The evaluation of documents in groups: this rank runs groups
 * [glo, ghi) of mpq_eval_range over the groups (or its group under split
 * roles, eval_role); tokens and offsets (indexed by document) are valid for
 * their documents. */
static mpq_err eval_groups(mpq_ctx *ctx, mpq_family *f, mpq_family *ref, const int32_t *tokens,
                           const int64_t *offsets, int64_t ndocs, const int64_t *gdoc,
                           int64_t ngroups, mpq_lm_result *out) {
    mpq_err err = MPQ_OK;
    memset(out, 0, sizeof *out);
    float *logits = NULL, *rlogits = NULL;
    double *rec = NULL;
    const mpq_family_info *fi = mpq_family_get_info(f);
    lm_stream st = {.tokens = tokens, .offsets = offsets, .gdoc = gdoc};
    const int role = eval_role(ctx, ref, ngroups);
    if (role == ROLE_BOTH) {
        mpq_eval_range(ctx, ngroups, &st.glo, &st.ghi);
    } else {
        st.glo = role == ROLE_MODEL       ? ctx->rank
                 : role == ROLE_REFERENCE ? ctx->rank - ngroups
                                          : ngroups;
        st.ghi = role == ROLE_IDLE ? ngroups : st.glo + 1;
    }
    st.lo = gdoc[st.glo];
    st.hi = gdoc[st.ghi];
    /* the documents this rank scores: none where it runs the reference alone */
    const int64_t lo = role == ROLE_REFERENCE ? st.hi : st.lo, hi = st.hi;
    int64_t maxn = 1;
    MPQ_ENSURE(fi->task == MPQ_TASK_LM, MPQ_ERR_ARG,
               "perplexity needs a language model, family '%s' is a classifier",
               mpq_family_name(f));
    if (ref)
        MPQ_ENSURE(mpq_family_get_info(ref)->out_width == fi->out_width, MPQ_ERR_ARG,
                   "the reference model has %lld outputs, the model %lld",
                   (long long)mpq_family_get_info(ref)->out_width, (long long)fi->out_width);
    for (int64_t d = st.lo; d < st.hi; d++) {
        int64_t n = offsets[d + 1] - offsets[d];
        MPQ_ENSURE(n >= 0 && n <= fi->max_seq, MPQ_ERR_ARG,
                   "document %lld has %lld tokens (the model takes at most %lld)", (long long)d,
                   (long long)n, (long long)fi->max_seq);
        maxn = n > maxn && d >= lo ? n : maxn;
    }
    int64_t nl = 0;
    MPQ_TRY(mpq_mul64(ctx, maxn, fi->out_width, "logits", &nl));
    MPQ_TRY(mpq_malloc_raw(ctx, nl, sizeof *logits, (void **)&logits));
    if (ref)
        MPQ_TRY(mpq_malloc_raw(ctx, nl, sizeof *rlogits, (void **)&rlogits));
    MPQ_ALLOC_TRY(rec, (hi - lo) * R_K + 1);
    MPQ_TRY(stream_alloc(ctx, f, ref != NULL, &st));
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_EVAL_FORWARD));
    mpq_progress pr;
    int64_t done = 0;
    mpq_progress_begin(ctx, &pr, "evaluating documents", "blocks",
                       fi->nblocks * (ref && role == ROLE_BOTH ? 2 : 1) + 1);
    /* With a reference the stream runs two models: each line says which. */
    mpq_progress_model(&pr, ref && role != ROLE_REFERENCE ? "quantized model" : NULL);
    if (role != ROLE_REFERENCE && role != ROLE_IDLE)
        MPQ_TRY(stream_blocks(ctx, f, &st, st.x, "the model", &pr, &done));
    if (ref && (role == ROLE_BOTH || role == ROLE_REFERENCE)) {
        mpq_progress_model(&pr, "full-precision reference");
        MPQ_TRY(stream_blocks(ctx, ref, &st, st.rx, "the reference", &pr, &done));
        mpq_progress_model(&pr, "quantized model and full-precision reference");
    }
    if (role == ROLE_BOTH)
        MPQ_TRY(score_groups(ctx, f, ref, &st, logits, rlogits, rec));
    mpq_progress_update(ctx, &pr, ++done);
    mpq_progress_end(ctx, &pr);
cleanup:
    /* split roles: every rank is here once, whatever failed where; the
     * reference's activations move only when every pass succeeded */
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK && role != ROLE_BOTH) {
        err = share_reference(ctx, &st, role, ngroups);
        if (err == MPQ_OK && role == ROLE_MODEL)
            err = score_groups(ctx, f, ref, &st, logits, rlogits, rec);
        err = mpq_agree(ctx, err);
    }
    if (err == MPQ_OK)
        err = mpq_stage_stop(ctx, MPQ_STAGE_EVAL_FORWARD);
    stream_free(&st);
    if (err == MPQ_OK) {
        double s[R_K];
        err = mpq_eval_ordered_sum_at(ctx, ndocs, lo, hi, R_K, rec, s);
        if (err == MPQ_OK) {
            out->docs = ndocs;
            out->predictions = (int64_t)s[R_NPRED];
            out->nll = s[R_NLL];
            out->mean_nll = out->predictions ? s[R_NLL] / s[R_NPRED] : 0.0;
            out->ppl = exp(out->mean_nll);
            out->has_ref = ref != NULL;
            out->kld = ref && out->predictions ? s[R_KLD] / s[R_NPRED] : 0.0;
            out->top1_agreement = ref && out->predictions ? s[R_AGREE] / s[R_NPRED] : 0.0;
            out->ref_nll = ref ? s[R_RNLL] : 0.0;
        }
    }
    mpq_free(logits);
    mpq_free(rlogits);
    mpq_free(rec);
    return err;
}

mpq_err mpq_eval_lm_tokens(mpq_ctx *ctx, mpq_family *f, mpq_family *ref, const int32_t *tokens,
                           const int64_t *offsets, int64_t ndocs, mpq_lm_result *out) {
    mpq_err err = MPQ_OK;
    int64_t *len = NULL, *gdoc = NULL, ngroups = 0;
    memset(out, 0, sizeof *out);
    err = mpq_malloc(ctx, ndocs + 1, sizeof *len, (void **)&len);
    for (int64_t d = 0; err == MPQ_OK && d < ndocs; d++)
        len[d] = offsets[d + 1] - offsets[d];
    if (err == MPQ_OK)
        err = mpq_eval_groups(ctx, len, ndocs, &gdoc, &ngroups);
    MPQ_TRY(mpq_agree(ctx, err));
    MPQ_TRY(eval_groups(ctx, f, ref, tokens, offsets, ndocs, gdoc, ngroups, out));
cleanup:
    mpq_free(len);
    mpq_free(gdoc);
    return err;
}

void mpq_eval_lm_reference(const mpq_lm_result *r, mpq_lm_result *out) {
    memset(out, 0, sizeof *out);
    out->docs = r->docs;
    out->window = r->window;
    out->generated = r->generated;
    out->predictions = r->predictions;
    out->nll = r->ref_nll;
    out->mean_nll = r->predictions ? r->ref_nll / (double)r->predictions : 0.0;
    out->ppl = exp(out->mean_nll);
}

/* Collective. Every document's tokens on every rank: each rank encodes its
 * share (mpq_eval_range), then the lengths and the tokens are gathered.
 * *toks [offs[ndocs]] and *offs [ndocs + 1] are mpq_malloc'ed (the tokens
 * take less memory than the text every rank already holds). */
static mpq_err doc_tokens(mpq_ctx *ctx, const mpq_tokenizer *tok, const char *text,
                          const mpq_span *docs, int64_t ndocs, int64_t max_seq, int32_t **toks,
                          int64_t *offs) {
    mpq_err err = MPQ_OK;
    int32_t *mine = NULL;
    int64_t *moffs = NULL, *len = offs + 1, lo = 0, hi = 0;
    int *counts = NULL, *displs = NULL;
    *toks = NULL;
    mpq_eval_range(ctx, ndocs, &lo, &hi);
    err = mpq_text_encode_docs(ctx, tok, text, docs + lo, hi - lo, max_seq, &mine, &moffs);
    if (err == MPQ_OK)
        err = mpq_malloc(ctx, 2 * (int64_t)ctx->size, sizeof *counts, (void **)&counts);
    if (err == MPQ_OK) {
        displs = counts + ctx->size;
        for (int64_t d = lo; d < hi; d++)
            len[d] = moffs[d - lo + 1] - moffs[d - lo];
        for (int r = 0; r < ctx->size; r++) {
            const int64_t a = ndocs * r / ctx->size, b = ndocs * (r + 1) / ctx->size;
            err = err == MPQ_OK ? mpq_to_int(ctx, b - a, "documents", &counts[r]) : err;
            err = err == MPQ_OK ? mpq_to_int(ctx, a, "documents", &displs[r]) : err;
        }
    }
    MPQ_TRY(mpq_agree(ctx, err));
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1)
        MPQ_MPI_TRY(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, len, counts, displs,
                                   MPI_INT64_T, ctx->comm));
    /* lengths -> offsets, in place: offs[d + 1] held document d's length */
    offs[0] = 0;
    for (int64_t d = 0; d < ndocs; d++)
        offs[d + 1] += offs[d];
    err = mpq_malloc(ctx, offs[ndocs] > 0 ? offs[ndocs] : 1, sizeof **toks, (void **)toks);
    for (int r = 0; err == MPQ_OK && r < ctx->size; r++) {
        const int64_t a = ndocs * r / ctx->size, b = ndocs * (r + 1) / ctx->size;
        err = mpq_to_int(ctx, offs[b] - offs[a], "tokens", &counts[r]);
        err = err == MPQ_OK ? mpq_to_int(ctx, offs[a], "tokens", &displs[r]) : err;
    }
    if (err == MPQ_OK)
        memcpy(*toks + offs[lo], mine, (size_t)(offs[hi] - offs[lo]) * sizeof *mine);
    MPQ_TRY(mpq_agree(ctx, err));
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1)
        MPQ_MPI_TRY(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, *toks, counts, displs,
                                   MPI_INT32_T, ctx->comm));
cleanup:
    if (err != MPQ_OK) {
        mpq_free(*toks);
        *toks = NULL;
    }
    mpq_free(mine);
    mpq_free(moffs);
    mpq_free(counts);
    return err;
}

mpq_err mpq_eval_lm_text(mpq_ctx *ctx, mpq_family *f, mpq_family *ref, const mpq_tokenizer *tok,
                         const char *text_path, int64_t max_docs, mpq_lm_result *out) {
    mpq_err err = MPQ_OK;
    char *text = NULL;
    int64_t len = 0, ndocs = 0;
    mpq_span *docs = NULL;
    int32_t *toks = NULL;
    int64_t *offs = NULL;
    const int64_t max_seq = mpq_family_get_info(f)->max_seq;
    memset(out, 0, sizeof *out);
    if (ctx->rank == 0)
        err = mpq_text_read(ctx, text_path, &text, &len);
    MPQ_TRY(mpq_agree(ctx, err));
    MPQ_TRY(mpq_bcast_bytes(ctx, 0, &text, &len));
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_EVAL_TOKENIZE));
    err = mpq_text_split_docs(ctx, text, len, max_docs, &docs, &ndocs);
    if (err == MPQ_OK && ndocs == 0)
        err = MPQ_ERROR(MPQ_ERR_FORMAT, "%s: no documents in the text", text_path);
    if (err == MPQ_OK)
        err = mpq_malloc(ctx, ndocs + 1, sizeof *offs, (void **)&offs);
    MPQ_TRY(mpq_agree(ctx, err));
    /* every document encoded once, by one rank, then shared */
    MPQ_TRY(doc_tokens(ctx, tok, text, docs, ndocs, max_seq, &toks, offs));
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_EVAL_TOKENIZE));
    MPQ_TRY(mpq_eval_lm_tokens(ctx, f, ref, toks, offs, ndocs, out));
cleanup:
    mpq_free(text);
    mpq_free(docs);
    mpq_free(toks);
    mpq_free(offs);
    return err;
}

mpq_err mpq_eval_lm_windows(mpq_ctx *ctx, mpq_family *f, mpq_family *ref, const mpq_tokenizer *tok,
                            const char *text_path, int64_t window, int64_t max_windows,
                            mpq_lm_result *out) {
    mpq_err err = MPQ_OK;
    char *text = NULL;
    int32_t *toks = NULL;
    int64_t *offs = NULL, len = 0, ntok = 0;
    const int64_t max_seq = mpq_family_get_info(f)->max_seq;
    const int64_t W = window > 0                      ? window
                      : max_seq < MPQ_EVAL_WINDOW_MAX ? max_seq
                                                      : MPQ_EVAL_WINDOW_MAX;
    memset(out, 0, sizeof *out);
    MPQ_CHECK(W >= 2 && W <= max_seq, MPQ_ERR_CONFIG,
              "eval.window: %lld tokens per window; the model takes 2 to %lld", (long long)W,
              (long long)max_seq);
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_EVAL_TOKENIZE));
    if (ctx->rank == 0) {
        err = mpq_text_read(ctx, text_path, &text, &len);
        const mpq_span whole = {0, len};
        if (err == MPQ_OK)
            err = mpq_text_encode_docs(ctx, tok, text, &whole, 1, 0, &toks, &offs);
        ntok = err == MPQ_OK ? offs[1] : 0;
        if (err == MPQ_OK && ntok < W)
            err = MPQ_ERROR(MPQ_ERR_FORMAT,
                            "%s: %lld tokens, fewer than one window of eval.window = %lld",
                            text_path, (long long)ntok, (long long)W);
    }
    MPQ_TRY(mpq_agree(ctx, err));
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_EVAL_TOKENIZE));
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1)
        MPQ_MPI_TRY(MPI_Bcast(&ntok, 1, MPI_INT64_T, 0, ctx->comm));
    int64_t nw = ntok / W;
    nw = max_windows > 0 && max_windows < nw ? max_windows : nw;
    mpq_free(offs);
    offs = NULL;
    err = mpq_malloc(ctx, nw + 1, sizeof *offs, (void **)&offs);
    if (err == MPQ_OK && ctx->rank != 0)
        err = mpq_malloc(ctx, nw * W, sizeof *toks, (void **)&toks);
    MPQ_TRY(mpq_agree(ctx, err));
    for (int64_t w = 0; w <= nw; w++)
        offs[w] = w * W;
    for (int64_t at = 0; ctx->comm != MPI_COMM_NULL && ctx->size > 1 && at < nw * W;
         at += 1 << 28) {
        const int n = (int)(nw * W - at < (1 << 28) ? nw * W - at : (1 << 28));
        MPQ_MPI_TRY(MPI_Bcast(toks + at, n, MPI_INT32_T, 0, ctx->comm));
    }
    MPQ_TRY(mpq_eval_lm_tokens(ctx, f, ref, toks, offs, nw, out));
    out->window = W;
cleanup:
    mpq_free(text);
    mpq_free(toks);
    mpq_free(offs);
    return err;
}

mpq_err mpq_eval_lm(mpq_ctx *ctx, mpq_family *f, mpq_family *ref, const mpq_tokenizer *tok,
                    const mpq_lm_protocol *p, mpq_lm_result *out) {
    if (p->windows)
        return mpq_eval_lm_windows(ctx, f, ref, tok, p->text, p->window, p->max_items, out);
    return mpq_eval_lm_text(ctx, f, ref, tok, p->text, p->max_items, out);
}

mpq_err mpq_generate_greedy(mpq_ctx *ctx, mpq_family *f, const mpq_tokenizer *tok, int64_t ntokens,
                            int32_t *out, int64_t *n) {
    mpq_err err = MPQ_OK;
    const mpq_family_info *fi = mpq_family_get_info(f);
    float *logits = NULL;
    const int32_t bos = mpq_tokenizer_bos(tok);
    MPQ_CHECK(fi->task == MPQ_TASK_LM, MPQ_ERR_ARG, "generation needs a language model");
    MPQ_CHECK(bos >= 0 && bos < fi->vocab_size, MPQ_ERR_CONFIG,
              "generation starts from BOS: the tokenizer has none");
    MPQ_ALLOC(logits, fi->out_width);
    int64_t len = 1;
    out[0] = bos;
    while (len - 1 < ntokens && len < fi->max_seq) {
        mpq_batch b = {.nseq = 1, .len = &len, .rows = len, .tokens = out};
        MPQ_TRY(mpq_family_forward_last(ctx, f, &b, logits));
        int64_t am = 0;
        mpq_logsumexp(logits, fi->out_width, &am);
        if (am == bos)
            break;
        out[len++] = (int32_t)am;
    }
cleanup:
    *n = len;
    mpq_free(logits);
    return err;
}
