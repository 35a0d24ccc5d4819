/* run_resume.c: the block files of `mpquant run` and its resume
 * (partial_internal.h): each finished block of the measuring and of the
 * final pass goes to disk at once, a block found on disk is taken from
 * there instead of computed again, and a stop request ends the run at a
 * block boundary. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_log.h"
#include "mpq_stop.h"
#include "pass_internal.h"
#include "run_internal.h"

mpq_err mpq_run_install_layer(mpq_ctx *ctx, run_state *s, int64_t l, const mpq_qlayer *q) {
    const mpq_run_layer *rl = &s->res->layers[l];
    float *deq = NULL;
    MPQ_ALLOC(deq, rl->rows * rl->cols);
    mpq_qlayer_dequantize(q, deq);
    mpq_err err = mpq_family_set_weight(ctx, s->ses->fq, l, deq);
    mpq_free(deq);
    return err;
}

void mpq_run_measure_range(const mpq_session *ses, int64_t l, int32_t *k0, int32_t *k1) {
    *k0 = ses->pin[l] >= 0 ? ses->pin[l] : 0;
    *k1 = ses->pin[l] >= 0 ? ses->pin[l] + 1 : ses->nc[l];
}

mpq_err mpq_run_resume_open(mpq_ctx *ctx, run_state *s) {
    const mpq_session *ses = s->ses;
    if (!ses->cfg->output.path[0])
        return MPQ_OK;
    const char *inputs[MPQ_SESSION_MAX_FILES];
    const int64_t ni =
        mpq_session_read_inputs(ses, s->opts.eval_fp || s->opts.eval_quantized, ses->mixed, inputs);
    MPQ_CALL(mpq_partial_open(ctx, ses->cfg, inputs, ni, ses->info->nblocks, mpq_model_arch(ses->m),
                              &s->part));
    mpq_stop_arm(1);
    return MPQ_OK;
}

int64_t mpq_run_done(const run_state *s, mpq_phase phase) {
    return s->part ? s->part->done[phase] : 0;
}

void mpq_run_resume_log(mpq_ctx *ctx, const run_state *s, mpq_phase phase) {
    const int64_t k = mpq_run_done(s, phase), n = s->ses->info->nblocks;
    if (k > 0)
        MPQ_INFO("%s: resuming after block %lld of %lld (the earlier blocks are read from %s)",
                 mpq_phase_name(phase), (long long)k, (long long)n, s->part->dir);
}

/* ---- saving ---------------------------------------------------------------------------- */

/* Collective. The measured codes of every candidate of block b's layers. */
static mpq_err save_measured(mpq_ctx *ctx, run_state *s, const mpq_pass *p, int64_t b,
                             mpq_partial_entry *e) {
    const mpq_session *ses = s->ses;
    const mpq_measure_table *t = &s->meas;
    int64_t n = 0;
    for (int64_t i = 0; i < p->nlb; i++) {
        const int64_t l = p->lay[i];
        int32_t k0, k1;
        mpq_run_measure_range(ses, l, &k0, &k1);
        for (int32_t k = k0; k < k1; k++, n++) {
            const int64_t x = l * t->ncol + k;
            snprintf(e[n].name, sizeof e[n].name, "%s@%d", ses->info->layers[l].tensor, (int)k);
            e[n].q = t->q[x];
            e[n].st = (mpq_partial_stats){
                .loss = t->loss[x], .rtn_loss = t->rtn[x], .energy = t->energy[l]};
            e[n].owner = p->o.owned ? p->own[i].first : (int)(n % ctx->size);
        }
    }
    MPQ_CALL(mpq_partial_write(ctx, s->part, MPQ_PHASE_MEASURE, b, n, e));
    /* on disk now: the probes and the final codes read them from there */
    for (int64_t i = 0; i < p->nlb && !s->opts.keep_codes; i++) {
        const int64_t l = p->lay[i];
        for (int32_t k = 0; k < t->ncol; k++)
            mpq_qlayer_destroy(&s->meas.q[l * t->ncol + k]);
    }
    return MPQ_OK;
}

/* Collective. The final codes of block b's layers lay [n], held by rank
 * own[i].first (own NULL: every rank holds them); they leave memory. */
static mpq_err save_rounded(mpq_ctx *ctx, run_state *s, const int64_t *lay, const mpq_hset *own,
                            int64_t n, int64_t b, mpq_partial_entry *e) {
    for (int64_t i = 0; i < n; i++) {
        const mpq_run_layer *rl = &s->res->layers[lay[i]];
        snprintf(e[i].name, sizeof e[i].name, "%s", rl->tensor);
        e[i].q = rl->q;
        e[i].st = (mpq_partial_stats){
            .loss = rl->loss, .rtn_loss = rl->rtn_loss, .seconds = rl->seconds, .iters = rl->iters};
        e[i].owner = own ? own[i].first : (int)(i % ctx->size);
        e[i].bias = rl->bias; /* the same on every rank */
        e[i].nbias = rl->rows;
    }
    MPQ_CALL(mpq_partial_write(ctx, s->part, MPQ_PHASE_ROUND, b, n, e));
    for (int64_t i = 0; i < n && !s->opts.keep_codes; i++)
        mpq_qlayer_destroy(&s->res->layers[lay[i]].q);
    return MPQ_OK;
}

mpq_err mpq_run_save_block(mpq_ctx *ctx, run_state *s, const mpq_pass *p, int64_t b,
                           mpq_phase phase) {
    if (!s->part)
        return MPQ_OK;
    mpq_err err = MPQ_OK;
    mpq_partial_entry *e = NULL;
    MPQ_TRY(mpq_agree(ctx, mpq_malloc(ctx, p->nlb * s->ses->maxc + 1, sizeof *e, (void **)&e)));
    if (phase == MPQ_PHASE_MEASURE)
        MPQ_TRY(save_measured(ctx, s, p, b, e));
    else
        MPQ_TRY(save_rounded(ctx, s, p->lay, p->o.owned ? p->own : NULL, p->nlb, b, e));
    mpq_partial_test_kill(ctx, phase, b, "saved");
cleanup:
    mpq_free(e);
    return err;
}

/* ---- restoring ---------------------------------------------------------------------- */

/* Local. The measurements of block b from its file. */
static mpq_err restore_measured(mpq_ctx *ctx, run_state *s, const mpq_ckpt *ck, int64_t b) {
    const mpq_session *ses = s->ses;
    mpq_measure_table *t = &s->meas;
    const int coded = strcmp(ses->cfg->budget.count, "coded") == 0;
    char name[MPQ_TENSOR_NAME_MAX + 16];
    for (int64_t l = 0; l < ses->nl; l++) {
        if (ses->info->layers[l].block != b || ses->excl[l])
            continue;
        int32_t k0, k1;
        mpq_run_measure_range(ses, l, &k0, &k1);
        for (int32_t k = k0; k < k1; k++) {
            const int64_t x = l * t->ncol + k;
            mpq_partial_stats st;
            snprintf(name, sizeof name, "%s@%d", ses->info->layers[l].tensor, (int)k);
            mpq_qlayer_destroy(&t->q[x]);
            /* the codes stay on disk unless the result keeps them or the
             * budget counts their coded size */
            MPQ_CALL(mpq_partial_read(ctx, ck, name, s->opts.keep_codes || coded ? &t->q[x] : NULL,
                                      &st));
            if (coded)
                MPQ_CALL(mpq_ckpt_coded_bits(ctx, t->q[x], &t->coded[x]));
            if (!s->opts.keep_codes)
                mpq_qlayer_destroy(&t->q[x]);
            t->loss[x] = st.loss;
            t->rtn[x] = st.rtn_loss;
            t->bits[x] = st.bits;
            t->energy[l] = st.energy;
        }
    }
    return MPQ_OK;
}

/* Local. The final codes of block b from its file, installed in the
 * working model (they do not stay in memory). */
static mpq_err restore_rounded(mpq_ctx *ctx, run_state *s, const mpq_ckpt *ck, int64_t b) {
    const mpq_session *ses = s->ses;
    for (int64_t l = 0; l < ses->nl; l++) {
        if (ses->info->layers[l].block != b || ses->excl[l])
            continue;
        mpq_run_layer *rl = &s->res->layers[l];
        mpq_partial_stats st;
        mpq_qlayer *q = NULL;
        MPQ_CALL(mpq_partial_read(ctx, ck, rl->tensor, &q, &st));
        rl->loss = st.loss;
        rl->rtn_loss = st.rtn_loss;
        rl->iters = st.iters;
        rl->seconds = st.seconds;
        rl->bits = st.bits;
        rl->code_entropy = mpq_round_code_entropy(q->codes, q->rows * q->cols);
        rl->entropy_set = 1;
        mpq_err err = mpq_run_install_layer(ctx, s, l, q);
        /* a learned bias correction stays in memory and in the model */
        mpq_free(rl->bias);
        rl->bias = NULL;
        if (err == MPQ_OK)
            err = mpq_partial_read_bias(ctx, ck, rl->tensor, rl->rows, &rl->bias);
        if (err == MPQ_OK && rl->bias)
            err = mpq_family_set_bias_delta(ctx, ses->fq, l, rl->bias);
        if (s->opts.keep_codes)
            rl->q = q;
        else
            mpq_qlayer_destroy(&q);
        MPQ_CALL(err);
    }
    return MPQ_OK;
}

static mpq_err restore_block(mpq_ctx *ctx, run_state *s, int64_t b, mpq_phase phase) {
    mpq_ckpt *ck = NULL;
    mpq_err err = mpq_partial_open_block(ctx, s->part, phase, b, &ck);
    if (err == MPQ_OK)
        err = phase == MPQ_PHASE_MEASURE ? restore_measured(ctx, s, ck, b)
                                         : restore_rounded(ctx, s, ck, b);
    mpq_ckpt_close(&ck);
    MPQ_CALL(mpq_agree(ctx, err));
    return MPQ_OK;
}

mpq_err mpq_run_skip_block(mpq_ctx *ctx, run_state *s, mpq_pass *p, int64_t b, mpq_phase phase) {
    /* The activations move on only when a later block of this pass is
     * computed (or its statistics are saved). With full-precision
     * propagation they pass the block before its codes are installed,
     * with quantized propagation after. */
    const int move = mpq_run_done(s, phase) < s->ses->info->nblocks || p->save;
    if (move && p->o.advance)
        MPQ_CALL(mpq_pass_skip(ctx, p, b));
    MPQ_CALL(restore_block(ctx, s, b, phase));
    if (move && !p->o.advance)
        MPQ_CALL(mpq_pass_skip(ctx, p, b));
    if (phase == MPQ_PHASE_ROUND)
        MPQ_CALL(mpq_agree(ctx, mpq_run_release_block(ctx, s, b)));
    return MPQ_OK;
}

/* ---- stopping -------------------------------------------------------------------------- */

mpq_err mpq_run_block_done(mpq_ctx *ctx, const run_state *s, int64_t b, mpq_phase phase) {
    if (!s->part)
        return MPQ_OK;
    int sig = 0;
    MPQ_CALL(mpq_stop_check(ctx, b, &sig));
    MPQ_CHECK(sig == 0, MPQ_ERR_STOPPED,
              "stopped by %s after block %lld of %lld (%s); the finished blocks are kept in %s: "
              "run the same command again to resume",
              sig == SIGTERM   ? "SIGTERM"
              : sig == SIGUSR1 ? "SIGUSR1"
                               : "a signal",
              (long long)b + 1, (long long)s->ses->info->nblocks, mpq_phase_name(phase),
              s->part->dir);
    return MPQ_OK;
}

/* ---- assembling -------------------------------------------------------------------- */

mpq_err mpq_run_layer_codes(mpq_ctx *ctx, const run_state *s, int64_t l, mpq_ckpt **ck,
                            int64_t *ck_block, mpq_qlayer **out) {
    *out = NULL;
    const int64_t b = s->ses->info->layers[l].block;
    if (*ck && *ck_block != b)
        mpq_ckpt_close(ck);
    if (!*ck) {
        MPQ_CALL(mpq_partial_open_block(ctx, s->part, MPQ_PHASE_ROUND, b, ck));
        *ck_block = b;
    }
    mpq_partial_stats st;
    MPQ_CALL(mpq_partial_read(ctx, *ck, s->res->layers[l].tensor, out, &st));
    return MPQ_OK;
}

/* ---- measured codes on disk ---------------------------------------------------------- */

/* Local. Layer l's measured codes of candidate k from its block's measure
 * file. Owner of *q: caller. */
static mpq_err read_measured(mpq_ctx *ctx, const run_state *s, int64_t l, int32_t k,
                             mpq_qlayer **q) {
    char name[MPQ_TENSOR_NAME_MAX + 16];
    mpq_ckpt *ck = NULL;
    mpq_partial_stats st;
    snprintf(name, sizeof name, "%s@%d", s->ses->info->layers[l].tensor, (int)k);
    mpq_err err =
        mpq_partial_open_block(ctx, s->part, MPQ_PHASE_MEASURE, s->ses->info->layers[l].block, &ck);
    if (err == MPQ_OK)
        err = mpq_partial_read(ctx, ck, name, q, &st);
    mpq_ckpt_close(&ck);
    MPQ_CALL(err);
    return MPQ_OK;
}

mpq_err mpq_run_measured_codes(mpq_ctx *ctx, void *ud, int64_t l, int64_t col, mpq_qlayer **q) {
    const run_state *s = ud;
    MPQ_CHECK(s->part, MPQ_ERR_INTERNAL, "measured codes of layer %lld are neither kept nor saved",
              (long long)l);
    MPQ_CALL(read_measured(ctx, s, l, (int32_t)col, q));
    return MPQ_OK;
}

mpq_err mpq_run_take_measured(mpq_ctx *ctx, run_state *s) {
    const mpq_session *ses = s->ses;
    mpq_measure_table *t = &s->meas;
    mpq_err err = MPQ_OK;
    int64_t *lay = NULL;
    mpq_partial_entry *e = NULL;
    err = mpq_malloc(ctx, ses->nl + 1, sizeof *lay, (void **)&lay);
    if (err == MPQ_OK)
        err = mpq_malloc(ctx, ses->nl + 1, sizeof *e, (void **)&e);
    MPQ_TRY(mpq_agree(ctx, err));
    for (int64_t b = 0; b < ses->info->nblocks; b++) {
        int64_t n = 0;
        /* local (each rank installs every layer), agreed before the write */
        for (int64_t l = 0; l < ses->nl && err == MPQ_OK; l++) {
            if (ses->excl[l] || ses->info->layers[l].block != b)
                continue;
            const int64_t x = l * t->ncol + s->choice[l];
            mpq_run_layer *rl = &s->res->layers[l];
            rl->q = t->q[x];
            t->q[x] = NULL;
            if (!rl->q)
                err = read_measured(ctx, s, l, s->choice[l], &rl->q);
            if (err != MPQ_OK)
                break;
            rl->loss = t->loss[x];
            rl->rtn_loss = t->rtn[x];
            rl->bits = t->bits[x];
            lay[n++] = l;
            err = mpq_run_install_layer(ctx, s, l, rl->q);
        }
        MPQ_TRY(mpq_agree(ctx, err));
        /* the final codes as a block file, as after a final pass */
        if (s->part && n > 0)
            MPQ_TRY(save_rounded(ctx, s, lay, NULL, n, b, e));
        MPQ_TRY(mpq_agree(ctx, mpq_run_release_block(ctx, s, b)));
    }
cleanup:
    mpq_free(e);
    mpq_free(lay);
    return err;
}

/* ---- one block of the working model in memory ---------------------------------------- */

/* With a partial checkpoint, a language model's finished blocks leave the
 * working model once their outputs have moved on, and the evaluation
 * brings each back from its block file while it runs (a block source,
 * mpq_family.h). A classifier keeps its (small) quantized weights. */
static int releases(const run_state *s) {
    return s->part && s->ses->info->task == MPQ_TASK_LM;
}

mpq_err mpq_run_release_block(mpq_ctx *ctx, run_state *s, int64_t b) {
    if (!releases(s))
        return MPQ_OK;
    for (int64_t l = 0; l < s->ses->nl; l++)
        if (s->ses->info->layers[l].block == b && !s->ses->excl[l])
            MPQ_CALL(mpq_family_set_weight(ctx, s->ses->fq, l, NULL));
    return MPQ_OK;
}

/* Local. The working model's block source: block b's final codes from its
 * block file on enter, released on leave. */
static mpq_err quantized_block(mpq_ctx *ctx, void *ud, mpq_family *f, int64_t b, int enter) {
    run_state *s = ud;
    (void)f;
    if (!enter)
        return mpq_run_release_block(ctx, s, b);
    mpq_ckpt *ck = NULL;
    mpq_err err = mpq_partial_open_block(ctx, s->part, MPQ_PHASE_ROUND, b, &ck);
    for (int64_t l = 0; l < s->ses->nl && err == MPQ_OK; l++) {
        if (s->ses->info->layers[l].block != b || s->ses->excl[l])
            continue;
        mpq_qlayer *q = NULL;
        mpq_partial_stats st;
        err = mpq_partial_read(ctx, ck, s->res->layers[l].tensor, &q, &st);
        if (err == MPQ_OK)
            err = mpq_run_install_layer(ctx, s, l, q);
        mpq_qlayer_destroy(&q);
    }
    mpq_ckpt_close(&ck);
    MPQ_CALL(err);
    return MPQ_OK;
}

void mpq_run_stream_blocks(run_state *s, int on) {
    if (releases(s))
        mpq_family_set_block_source(s->ses->fq, on ? quantized_block : NULL, s);
}
