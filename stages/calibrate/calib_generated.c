/* calib_generated.c: the generated calibration source, samples drawn
 * from the full-precision language model itself (mpq_calibrate.h,
 * mpq_calib_set_generated). */
#include <math.h>
#include <string.h>

#include "calib_internal.h"
#include "mpq_calibrate.h"
#include "mpq_coll.h"
#include "mpq_ctx.h"
#include "mpq_log.h"
#include "mpq_tokenizer.h"

/* ---- generated source ----------------------------------------------------- */

/* Uniform double in [0, 1) for position t of generated sample i: a
 * counter-based hash of (seed, i, t), so the draw depends neither on the
 * rank that makes it nor on the order of the draws. The constant keeps this
 * stream apart from the random source's (which hashes seed and i alone). */
static double gen_uniform(uint64_t seed, int64_t i, int64_t t) {
    uint64_t key =
        mpq_calib_mix64(seed ^ mpq_calib_mix64((uint64_t)i ^ UINT64_C(0x6a09e667f3bcc908)));
    return (double)(mpq_calib_mix64(key ^ mpq_calib_mix64((uint64_t)t)) >> 11) * 0x1.0p-53;
}

/* The next token of sample i at position t from its logits [V]: arg-max
 * (first on ties) when temperature is 0, else the inverse CDF of
 * softmax(logits / temperature) at the sample's uniform draw, in double.
 * Token `skip` (BOS right after BOS; -1: none) is left out. p is scratch [V]. */
static mpq_err gen_pick(mpq_ctx *ctx, const float *logits, int64_t V, double temperature,
                        uint64_t seed, int64_t i, int64_t t, int32_t skip, double *p,
                        int32_t *tok) {
    int64_t best = -1;
    for (int64_t v = 0; v < V; v++) {
        MPQ_CHECK(isfinite(logits[v]), MPQ_ERR_NUMERIC,
                  "generated calibration: sample %lld, position %lld: logit of token %lld is %g",
                  (long long)i, (long long)t, (long long)v, (double)logits[v]);
        if (v == skip)
            continue;
        if (best < 0 || logits[v] > logits[best])
            best = v;
    }
    if (temperature == 0.0) {
        *tok = (int32_t)best;
        return MPQ_OK;
    }
    double z = 0.0;
    for (int64_t v = 0; v < V; v++) {
        p[v] = v == skip ? 0.0 : exp(((double)logits[v] - (double)logits[best]) / temperature);
        z += p[v];
    }
    /* Walk the CDF; `last` guards against u * z exceeding the final partial
     * sum by rounding. p[best] = 1, so z >= 1. */
    double target = gen_uniform(seed, i, t) * z, acc = 0.0;
    int64_t last = best;
    for (int64_t v = 0; v < V; v++) {
        if (p[v] <= 0.0)
            continue;
        acc += p[v];
        last = v;
        if (acc > target)
            break;
    }
    *tok = (int32_t)last;
    return MPQ_OK;
}

/* Generates this rank's batches of samples: sample i into gen[i][L] with its
 * length in glen[i] (other samples untouched). Local. */
static mpq_err gen_mine(mpq_ctx *ctx, mpq_family *f, int32_t bos, int64_t nsamples, int64_t L,
                        double temperature, uint64_t seed, int32_t *gen, int64_t *glen) {
    const mpq_family_info *info = mpq_family_get_info(f);
    const int64_t G = MPQ_CALIB_GEN_BATCH, V = info->out_width;
    int64_t nbatches = (nsamples + G - 1) / G, mine = 0;
    for (int64_t c = ctx->rank; c < nbatches; c += ctx->size)
        mine += (c + 1) * G < nsamples ? G : nsamples - c * G;
    int32_t *btok = NULL; /* [G][t] the active prefixes, packed */
    int64_t *blen = NULL; /* [G] prefix lengths (all t) */
    int64_t *bidx = NULL; /* [G] sample index of each active prefix */
    float *logits = NULL; /* [G][V] next-token logits */
    double *p = NULL;     /* [V] unnormalised probabilities */
    mpq_err err = MPQ_OK;
    MPQ_ALLOC_TRY(btok, G * L);
    MPQ_ALLOC_TRY(blen, G);
    MPQ_ALLOC_TRY(bidx, G);
    MPQ_ALLOC_TRY(logits, G * V);
    MPQ_ALLOC_TRY(p, V);
    mpq_progress pr;
    int64_t done = 0;
    mpq_progress_begin(ctx, &pr, "generating calibration samples", "tokens", mine * (L - 1));
    for (int64_t c = ctx->rank; c < nbatches; c += ctx->size) {
        int64_t s0 = c * G, s1 = s0 + G < nsamples ? s0 + G : nsamples;
        for (int64_t i = s0; i < s1; i++) {
            gen[i * L] = bos;
            glen[i] = 1;
        }
        /* Step t: every sample still running has t tokens; the batch holds
         * exactly those, in sample order, so its composition is a function
         * of the samples alone. */
        for (int64_t t = 1; t < L; t++) {
            int64_t na = 0;
            for (int64_t i = s0; i < s1; i++) {
                if (glen[i] != t)
                    continue; /* ended at BOS */
                memcpy(btok + na * t, gen + i * L, (size_t)t * sizeof *btok);
                blen[na] = t;
                bidx[na++] = i;
            }
            if (na == 0)
                break;
            mpq_batch b = {.nseq = na, .len = blen, .rows = na * t, .tokens = btok};
            MPQ_TRY(mpq_family_forward_last(ctx, f, &b, logits));
            for (int64_t k = 0; k < na; k++) {
                int64_t i = bidx[k];
                int32_t tok = 0;
                MPQ_TRY(gen_pick(ctx, logits + k * V, V, temperature, seed, i, t, t == 1 ? bos : -1,
                                 p, &tok));
                if (tok == bos)
                    continue; /* end of the story: the sample stops before it */
                gen[i * L + t] = tok;
                glen[i] = t + 1;
            }
            mpq_progress_update(ctx, &pr, done + t * (s1 - s0));
        }
        done += (L - 1) * (s1 - s0);
        mpq_progress_update(ctx, &pr, done);
    }
    mpq_progress_end(ctx, &pr);
cleanup:
    mpq_free(p);
    mpq_free(logits);
    mpq_free(bidx);
    mpq_free(blen);
    mpq_free(btok);
    return err;
}

mpq_err mpq_calib_set_generated(mpq_ctx *ctx, mpq_family *f, const mpq_tokenizer *tok,
                                int64_t nsamples, int64_t seq_len, double temperature,
                                uint64_t seed, mpq_calib_set **out) {
    *out = NULL;
    const mpq_family_info *info = mpq_family_get_info(f);
    /* The checks depend on the arguments only, so every rank takes the same
     * branch: no agreement needed before returning. */
    MPQ_CHECK(info->task == MPQ_TASK_LM, MPQ_ERR_CONFIG,
              "calibration.source = \"generated\" needs a language model: a classifier cannot "
              "generate its own inputs (use \"images\" or \"random\")");
    MPQ_CHECK(nsamples >= 1, MPQ_ERR_ARG, "generated calibration: %lld samples (>= 1)",
              (long long)nsamples);
    MPQ_CHECK(seq_len >= 2 && info->max_seq >= 2, MPQ_ERR_ARG,
              "generated calibration: seq_len %lld (>= 2; the model allows %lld)",
              (long long)seq_len, (long long)info->max_seq);
    const int32_t bos = mpq_tokenizer_bos(tok); /* starts every sample */
    MPQ_CHECK(bos >= 0 && bos < info->vocab_size, MPQ_ERR_CONFIG, "generated calibration: no BOS");
    MPQ_CHECK(isfinite(temperature) && temperature >= 0.0, MPQ_ERR_ARG,
              "generated calibration: temperature %g (>= 0; 0 = greedy)", temperature);
    MPQ_CHECK(info->out_width == info->vocab_size && info->vocab_size > 2, MPQ_ERR_FORMAT,
              "generated calibration: the model has %lld logits per token but a vocabulary of "
              "%lld",
              (long long)info->out_width, (long long)info->vocab_size);
    int64_t L = seq_len < info->max_seq ? seq_len : info->max_seq;
    int32_t *gen = NULL;  /* [nsamples][L] tokens; rows of other ranks' samples 0 */
    int64_t *glen = NULL; /* [nsamples] lengths; 0 for other ranks' samples */
    mpq_calib_set *s = NULL;
    mpq_err err = MPQ_OK, local = MPQ_OK;
    int64_t cells = 0;
    local = mpq_mul64(ctx, nsamples, L, "generated calibration tokens", &cells);
    if (local == MPQ_OK)
        local = mpq_malloc(ctx, cells, sizeof *gen, (void **)&gen);
    if (local == MPQ_OK)
        local = mpq_malloc(ctx, nsamples, sizeof *glen, (void **)&glen);
    if (local == MPQ_OK)
        local = gen_mine(ctx, f, bos, nsamples, L, temperature, seed, gen, glen);
    MPQ_TRY(mpq_agree(ctx, local));
    MPQ_TRY(mpq_sum_owned(ctx, glen, nsamples, MPI_INT64_T, "generated calibration samples"));
    local = mpq_calib_set_alloc(ctx, MPQ_TASK_LM, nsamples, &s);
    if (local == MPQ_OK) {
        for (int64_t i = 0; i < nsamples; i++) {
            s->len[i] = glen[i];
            s->offset[i + 1] = s->offset[i] + glen[i];
        }
        local = mpq_malloc(ctx, s->offset[nsamples], sizeof *s->tokens, (void **)&s->tokens);
    }
    if (local == MPQ_OK)
        for (int64_t i = 0; i < nsamples; i++)
            if ((i / MPQ_CALIB_GEN_BATCH) % ctx->size == ctx->rank) /* generated here */
                memcpy(s->tokens + s->offset[i], gen + i * L, (size_t)glen[i] * sizeof *gen);
    MPQ_TRY(mpq_agree(ctx, local));
    MPQ_TRY(mpq_sum_owned(ctx, s->tokens, s->offset[nsamples], MPI_INT32_T,
                          "generated calibration samples"));
    MPQ_INFO("generated calibration: %lld samples, %lld tokens (mean length %.1f of %lld), "
             "temperature %g, seed %llu",
             (long long)nsamples, (long long)s->offset[nsamples],
             (double)s->offset[nsamples] / (double)nsamples, (long long)L, temperature,
             (unsigned long long)seed);
    *out = s;
    s = NULL;
cleanup:
    mpq_calib_set_destroy(&s);
    mpq_free(glen);
    mpq_free(gen);
    return err;
}
