/* calibrate.c: calibration sources and the block-sequential measuring loop
 * (see mpq_calibrate.h). */
#include <math.h>
#include <string.h>

#include "calib_internal.h"
#include "mpq_coll.h"
#include "mpq_calibrate.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_idx.h"
#include "mpq_text.h"
#include "mpq_tokenizer.h"

/* ---- sources ------------------------------------------------------------- */

uint64_t mpq_calib_mix64(uint64_t z) {
    z += UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void mpq_calib_set_destroy(mpq_calib_set **ps) {
    if (!ps || !*ps)
        return;
    mpq_calib_set *s = *ps;
    mpq_free(s->len);
    mpq_free(s->offset);
    mpq_free(s->tokens);
    mpq_free(s->input);
    mpq_free(s);
    *ps = NULL;
}

mpq_err mpq_calib_set_alloc(mpq_ctx *ctx, mpq_task task, int64_t n, mpq_calib_set **out) {
    mpq_calib_set *s = NULL;
    mpq_err err = MPQ_OK;
    MPQ_ALLOC(s, 1);
    s->task = task;
    s->nsamples = n;
    MPQ_ALLOC_TRY(s->len, n > 0 ? n : 1);
    MPQ_ALLOC_TRY(s->offset, n + 1);
    *out = s;
    return MPQ_OK;
cleanup:
    mpq_calib_set_destroy(&s);
    return err;
}

mpq_err mpq_calib_set_text(mpq_ctx *ctx, const mpq_tokenizer *tok, const char *path,
                           int64_t seq_len, int64_t segments, uint64_t seed, mpq_calib_set **out) {
    *out = NULL;
    MPQ_CHECK(seq_len >= 2 && segments >= 1, MPQ_ERR_ARG,
              "calibration text '%s': seq_len %lld (>= 2) and segments %lld (>= 1)", path,
              (long long)seq_len, (long long)segments);
    char *text = NULL;
    int64_t len = 0, ndocs = 0;
    mpq_span *docs = NULL;
    int32_t *toks = NULL;
    int64_t *offs = NULL;
    mpq_calib_set *s = NULL;
    mpq_err err = MPQ_OK;
    MPQ_TRY(mpq_text_read(ctx, path, &text, &len));
    MPQ_TRY(mpq_text_split_docs(ctx, text, len, 0, &docs, &ndocs));
    /* Every document encoded whole (BOS first if the tokenizer adds it, as in evaluation),
     * one after another: one token stream. A text file's "documents" include headings of a
     * few tokens, so segments are windows of the stream rather than documents. */
    MPQ_TRY(mpq_text_encode_docs(ctx, tok, text, docs, ndocs, len + 2, &toks, &offs));
    int64_t total = offs[ndocs];
    MPQ_ENSURE(total >= 2, MPQ_ERR_FORMAT, "calibration text '%s' holds fewer than 2 tokens", path);
    /* A segment is BOS followed by seq_len - 1 consecutive tokens of the stream (position 0
     * is always BOS for the model; a tokenizer that adds none: seq_len tokens), starting at
     * a seeded pseudo-random position; the whole stream when it is shorter. */
    const int32_t bos = mpq_tokenizer_bos(tok);
    const int64_t hb = mpq_tokenizer_add_bos(tok) && bos >= 0; /* 1: BOS first */
    int64_t body = seq_len - hb < total ? seq_len - hb : total;
    if (body < seq_len - hb)
        mpq_log(ctx, MPQ_LOG_WARN,
                "calibration text '%s': %lld tokens, shorter than one segment of %lld", path,
                (long long)total, (long long)seq_len);
    int64_t nstart = total - body + 1;
    MPQ_TRY(mpq_calib_set_alloc(ctx, MPQ_TASK_LM, segments, &s));
    for (int64_t k = 0; k < segments; k++) {
        s->len[k] = body + hb;
        s->offset[k + 1] = s->offset[k] + s->len[k];
    }
    MPQ_ALLOC_TRY(s->tokens, s->offset[segments]);
    for (int64_t k = 0; k < segments; k++) {
        int64_t p =
            (int64_t)(mpq_calib_mix64(seed ^ mpq_calib_mix64((uint64_t)k + 1)) % (uint64_t)nstart);
        int32_t *dst = s->tokens + s->offset[k];
        dst[0] = bos; /* overwritten by the stream when hb = 0 */
        memcpy(dst + hb, toks + p, (size_t)body * sizeof *toks);
    }
    *out = s;
    s = NULL;
cleanup:
    mpq_calib_set_destroy(&s);
    mpq_free(offs);
    mpq_free(toks);
    mpq_free(docs);
    mpq_free(text);
    return err;
}

void mpq_calib_sample_batch(const mpq_calib_set *set, int64_t i, mpq_batch *b) {
    mpq_calib_range_batch(set, i, i + 1, b);
}

void mpq_calib_range_batch(const mpq_calib_set *set, int64_t i0, int64_t i1, mpq_batch *b) {
    memset(b, 0, sizeof *b);
    b->nseq = i1 - i0;
    b->len = &set->len[i0];
    b->rows = set->offset[i1] - set->offset[i0];
    if (set->task == MPQ_TASK_LM)
        b->tokens = set->tokens + set->offset[i0];
    else
        b->input = set->input + i0 * set->input_numel;
}

mpq_err mpq_calib_set_images(mpq_ctx *ctx, const char *path, int64_t first, int64_t count,
                             mpq_calib_set **out) {
    *out = NULL;
    mpq_idx *im = NULL;
    mpq_calib_set *s = NULL;
    mpq_err err = MPQ_OK;
    MPQ_TRY(mpq_idx_open_images(ctx, path, &im));
    MPQ_ENSURE(first >= 0 && count >= 1 && first + count <= im->dims[0], MPQ_ERR_ARG,
               "calibration images '%s': [%lld, %lld) is outside the file's %lld images", path,
               (long long)first, (long long)(first + count), (long long)im->dims[0]);
    MPQ_TRY(mpq_calib_set_alloc(ctx, MPQ_TASK_CLASSIFIER, count, &s));
    s->input_numel = im->dims[1] * im->dims[2];
    MPQ_ALLOC_TRY(s->input, count * s->input_numel);
    for (int64_t k = 0; k < count; k++) {
        s->len[k] = 1;
        s->offset[k + 1] = k + 1;
    }
    for (int64_t i = 0; i < count * s->input_numel; i++)
        s->input[i] = (float)im->data[first * s->input_numel + i];
    *out = s;
    s = NULL;
cleanup:
    mpq_calib_set_destroy(&s);
    mpq_idx_close(&im);
    return err;
}

mpq_err mpq_calib_set_random(mpq_ctx *ctx, const mpq_family_info *info, const mpq_tokenizer *tok,
                             int64_t nsamples, int64_t seq_len, uint64_t seed,
                             mpq_calib_set **out) {
    *out = NULL;
    MPQ_CHECK(nsamples >= 1, MPQ_ERR_ARG, "random calibration: %lld samples", (long long)nsamples);
    mpq_calib_set *s = NULL;
    mpq_err err = MPQ_OK;
    MPQ_TRY(mpq_calib_set_alloc(ctx, info->task, nsamples, &s));
    if (info->task == MPQ_TASK_LM) {
        MPQ_ENSURE(seq_len >= 1 && seq_len <= info->max_seq && info->vocab_size > 1, MPQ_ERR_ARG,
                   "random calibration: seq_len %lld outside 1..%lld", (long long)seq_len,
                   (long long)info->max_seq);
        for (int64_t k = 0; k < nsamples; k++) {
            s->len[k] = seq_len;
            s->offset[k + 1] = s->offset[k] + seq_len;
        }
        MPQ_ALLOC_TRY(s->tokens, s->offset[nsamples]);
        const int32_t bos = mpq_tokenizer_add_bos(tok) ? mpq_tokenizer_bos(tok) : -1;
        for (int64_t i = 0; i < s->offset[nsamples]; i++)
            s->tokens[i] = i % seq_len == 0 && bos >= 0
                               ? bos
                               : (int32_t)(mpq_calib_mix64(seed ^ mpq_calib_mix64((uint64_t)i)) %
                                           (uint64_t)info->vocab_size);
    } else {
        s->input_numel = info->input_numel;
        MPQ_ALLOC_TRY(s->input, nsamples * s->input_numel);
        for (int64_t k = 0; k < nsamples; k++) {
            s->len[k] = 1;
            s->offset[k + 1] = k + 1;
        }
        for (int64_t i = 0; i < nsamples * s->input_numel; i++)
            s->input[i] = (float)(mpq_calib_mix64(seed ^ mpq_calib_mix64((uint64_t)i)) % 256);
    }
    *out = s;
    s = NULL;
cleanup:
    mpq_calib_set_destroy(&s);
    return err;
}

/* ---- from the configuration ------------------------------------------------ */

static mpq_err make_text(mpq_ctx *ctx, const mpq_config *cfg, const mpq_family_info *info,
                         mpq_family *f, const mpq_tokenizer *tok, mpq_calib_set **out) {
    (void)f;
    MPQ_CHECK(info->task == MPQ_TASK_LM && tok, MPQ_ERR_CONFIG,
              "calibration.source = \"text\" needs a language model and model.tokenizer");
    MPQ_CALL(mpq_calib_set_text(ctx, tok, cfg->calibration.text, cfg->calibration.seq_len,
                                cfg->calibration.segments, (uint64_t)cfg->calibration.seed, out));
    return MPQ_OK;
}

static mpq_err make_images(mpq_ctx *ctx, const mpq_config *cfg, const mpq_family_info *info,
                           mpq_family *f, const mpq_tokenizer *tok, mpq_calib_set **out) {
    (void)f, (void)tok;
    MPQ_CHECK(info->task == MPQ_TASK_CLASSIFIER, MPQ_ERR_CONFIG,
              "calibration.source = \"images\" needs a classifier");
    MPQ_CALL(mpq_calib_set_images(ctx, cfg->calibration.images, cfg->calibration.first,
                                  cfg->calibration.segments, out));
    return MPQ_OK;
}

static mpq_err make_random(mpq_ctx *ctx, const mpq_config *cfg, const mpq_family_info *info,
                           mpq_family *f, const mpq_tokenizer *tok, mpq_calib_set **out) {
    (void)f;
    int64_t len = cfg->calibration.seq_len;
    if (info->task == MPQ_TASK_LM && len > info->max_seq)
        len = info->max_seq;
    MPQ_CALL(mpq_calib_set_random(ctx, info, tok, cfg->calibration.segments, len,
                                  (uint64_t)cfg->calibration.seed, out));
    return MPQ_OK;
}

static mpq_err make_generated(mpq_ctx *ctx, const mpq_config *cfg, const mpq_family_info *info,
                              mpq_family *f, const mpq_tokenizer *tok, mpq_calib_set **out) {
    MPQ_CHECK(info->task == MPQ_TASK_LM, MPQ_ERR_CONFIG,
              "%s: calibration.source = \"generated\" needs a language model: a classifier "
              "cannot generate its own inputs (use \"images\" or \"random\")",
              cfg->source);
    MPQ_CALL(mpq_calib_set_generated(ctx, f, tok, cfg->calibration.segments,
                                     cfg->calibration.seq_len, cfg->calibration.temperature,
                                     (uint64_t)cfg->calibration.seed, out));
    return MPQ_OK;
}

static const char *input_text(const mpq_config *cfg) {
    return cfg->calibration.text;
}

static const char *input_images(const mpq_config *cfg) {
    return cfg->calibration.images;
}

static const mpq_calib_source source_text = {
    .name = "text",
    .summary = "segments of a text file's document stream (language models)",
    .input_key = "calibration.text",
    .input = input_text,
    .make = make_text};
static const mpq_calib_source source_images = {.name = "images",
                                               .summary = "images of an IDX file (classifiers)",
                                               .input_key = "calibration.images",
                                               .input = input_images,
                                               .make = make_images};
static const mpq_calib_source source_random = {
    .name = "random", .summary = "uniformly random tokens or pixels", .make = make_random};
static const mpq_calib_source source_generated = {
    .name = "generated",
    .summary = "sequences sampled from the full-precision language model itself",
    .needs_model = 1,
    .make = make_generated};

const mpq_calib_source *const mpq_calib_sources[] = {&source_text, &source_images, &source_random,
                                                     &source_generated, NULL};

static const char *source_name_at(int64_t i) {
    return mpq_calib_sources[i] ? mpq_calib_sources[i]->name : NULL;
}

const mpq_registry mpq_calib_source_reg = {.what = "calibration source", .name_at = source_name_at};

const mpq_calib_source *mpq_calib_source_find(const char *name) {
    int64_t i = mpq_registry_index(&mpq_calib_source_reg, name);
    return i < 0 ? NULL : mpq_calib_sources[i];
}

/* The source calibration.source names; an unknown one is an error listing
 * the registry. */
static mpq_err source_of(mpq_ctx *ctx, const mpq_config *cfg, const mpq_calib_source **out) {
    int64_t i = 0;
    char lead[512];
    snprintf(lead, sizeof lead, "%s: calibration.source: unknown source", cfg->source);
    MPQ_CALL(mpq_registry_lookup(ctx, &mpq_calib_source_reg, cfg->calibration.source,
                                 MPQ_ERR_CONFIG, lead, &i));
    *out = mpq_calib_sources[i];
    return MPQ_OK;
}

mpq_err mpq_calib_set_from_config(mpq_ctx *ctx, const mpq_config *cfg, const mpq_family_info *info,
                                  const mpq_tokenizer *tok, mpq_calib_set **out) {
    *out = NULL;
    const mpq_calib_source *src = NULL;
    MPQ_CALL(source_of(ctx, cfg, &src));
    MPQ_CHECK(!src->needs_model, MPQ_ERR_CONFIG,
              "%s: calibration.source = \"%s\" needs the model itself, which this caller does "
              "not pass (internal: use mpq_calib_set_from_config_family)",
              cfg->source, src->name);
    MPQ_CALL(src->make(ctx, cfg, info, NULL, tok, out));
    return MPQ_OK;
}

mpq_err mpq_calib_set_from_config_family(mpq_ctx *ctx, const mpq_config *cfg, mpq_family *f,
                                         const mpq_tokenizer *tok, mpq_calib_set **out) {
    *out = NULL;
    const mpq_calib_source *src = NULL;
    MPQ_CALL(source_of(ctx, cfg, &src));
    MPQ_CALL(src->make(ctx, cfg, mpq_family_get_info(f), f, tok, out));
    return MPQ_OK;
}

/* ---- the block loop ------------------------------------------------------ */

void mpq_calib_chunk_range(const mpq_calib *c, int64_t chunk, int64_t *s0, int64_t *s1) {
    *s0 = chunk * c->chunk_samples;
    *s1 = *s0 + c->chunk_samples < c->set->nsamples ? *s0 + c->chunk_samples : c->set->nsamples;
}

static mpq_batch batch_of(const mpq_calib *c, int64_t chunk) {
    int64_t s0, s1;
    mpq_calib_chunk_range(c, chunk, &s0, &s1);
    const mpq_calib_set *set = c->set;
    mpq_batch b = {.nseq = s1 - s0,
                   .len = set->len + s0,
                   .rows = set->offset[s1] - set->offset[s0],
                   .tokens = set->tokens ? set->tokens + set->offset[s0] : NULL,
                   .input = set->input ? set->input + s0 * set->input_numel : NULL};
    return b;
}

mpq_err mpq_calib_ensure_cap(mpq_ctx *ctx, float **p, int64_t *cap, int64_t n) {
    if (n <= *cap)
        return MPQ_OK;
    mpq_free(*p);
    *p = NULL;
    *cap = 0;
    MPQ_CALL(mpq_malloc(ctx, n, sizeof **p, (void **)p));
    *cap = n;
    return MPQ_OK;
}

int64_t mpq_calib_nchunks(const mpq_calib *c) {
    return (c->set->nsamples + c->chunk_samples - 1) / c->chunk_samples;
}

int64_t mpq_calib_nchunks_mine(const mpq_calib *c) {
    return c->nchunks_mine;
}

int64_t mpq_calib_chunk_at(const mpq_calib *c, int64_t i, mpq_batch *batch, const float **x) {
    *batch = batch_of(c, c->chunk[i]);
    *x = c->x + c->row_off[i] * mpq_family_width(c->f, c->next);
    return c->chunk[i];
}

void mpq_calib_destroy(mpq_calib **pc) {
    if (!pc || !*pc)
        return;
    mpq_calib *c = *pc;
    mpq_free(c->chunk);
    mpq_free(c->row_off);
    mpq_free(c->x);
    mpq_free(c->y);
    mpq_free(c->hx);
    mpq_free(c->hy);
    mpq_free(c);
    *pc = NULL;
}

int64_t mpq_calib_chunk_samples(int64_t requested, int64_t nsamples, int64_t rows) {
    if (requested > 0)
        return requested;
    int64_t k = nsamples / MPQ_CALIB_AUTO_CHUNKS;
    if (rows > 0) { /* samples that make MPQ_CALIB_AUTO_MIN_ROWS rows, rounded up */
        const int64_t want = (MPQ_CALIB_AUTO_MIN_ROWS * nsamples + rows - 1) / rows;
        k = want > k ? want : k;
    }
    k = k > nsamples ? nsamples : k; /* one chunk holds them all */
    return k < 1 ? 1 : k > MPQ_CALIB_AUTO_MAX ? MPQ_CALIB_AUTO_MAX : k;
}

mpq_err mpq_calib_create(mpq_ctx *ctx, mpq_family *f, const mpq_calib_set *set,
                         int64_t chunk_samples, mpq_calib **out) {
    *out = NULL;
    const mpq_family_info *info = mpq_family_get_info(f);
    MPQ_CHECK(chunk_samples >= 0, MPQ_ERR_ARG, "calibration: chunk_samples %lld must be >= 0",
              (long long)chunk_samples);
    chunk_samples =
        mpq_calib_chunk_samples(chunk_samples, set->nsamples, set->offset[set->nsamples]);
    MPQ_CHECK(set->task == info->task, MPQ_ERR_ARG,
              "calibration samples are for a %s, the model is a %s",
              set->task == MPQ_TASK_LM ? "language model" : "classifier",
              info->task == MPQ_TASK_LM ? "language model" : "classifier");
    MPQ_CHECK(set->task == MPQ_TASK_LM || set->input_numel == info->input_numel, MPQ_ERR_ARG,
              "calibration images have %lld values, the model expects %lld",
              (long long)set->input_numel, (long long)info->input_numel);
    mpq_calib *c = NULL;
    mpq_err err = MPQ_OK;
    MPQ_ALLOC(c, 1);
    c->f = f;
    c->info = info;
    c->set = set;
    c->chunk_samples = chunk_samples;
    int64_t nchunks = (set->nsamples + chunk_samples - 1) / chunk_samples;
    MPQ_ALLOC_TRY(c->chunk, nchunks > 0 ? nchunks : 1);
    MPQ_ALLOC_TRY(c->row_off, nchunks + 1);
    for (int64_t k = ctx->rank; k < nchunks; k += ctx->size) {
        mpq_batch b = batch_of(c, k);
        c->chunk[c->nchunks_mine] = k;
        c->row_off[c->nchunks_mine + 1] = c->row_off[c->nchunks_mine] + b.rows;
        c->nchunks_mine++;
    }
    c->rows = c->row_off[c->nchunks_mine];
    c->rounds = (nchunks + ctx->size - 1) / ctx->size;
    int64_t w = mpq_family_width(f, 0);
    MPQ_TRY(mpq_calib_ensure_cap(ctx, &c->x, &c->cap_x, c->rows * w > 0 ? c->rows * w : 1));
    for (int64_t k = 0; k < c->nchunks_mine; k++) {
        mpq_batch b = batch_of(c, c->chunk[k]);
        MPQ_TRY(mpq_family_embed(ctx, f, &b, c->x + c->row_off[k] * w));
    }
    *out = c;
    return MPQ_OK;
cleanup:
    mpq_calib_destroy(&c);
    return err;
}

int64_t mpq_calib_next_block(const mpq_calib *c) {
    return c->next;
}

int64_t mpq_calib_rows_run(const mpq_calib *c) {
    return c->rows_run;
}

int64_t mpq_calib_rows(const mpq_calib *c) {
    return c->rows;
}

mpq_err mpq_calib_advance(mpq_ctx *ctx, mpq_calib *c, int64_t b) {
    MPQ_CALL(mpq_calib_run_block(ctx, c, b, NULL));
    return MPQ_OK;
}

mpq_err mpq_calib_block(mpq_ctx *ctx, mpq_calib *c, int64_t b, int bound_log2, int target,
                        int advance, int64_t *nstats, mpq_hstat ***stats_out,
                        int64_t **groups_out) {
    mpq_hset all = {.first = target, .count = 1};
    return mpq_calib_block_owned(ctx, c, b, bound_log2, &all, 0, advance, nstats, stats_out,
                                 groups_out);
}

/* The rank that sums each statistic (mpq_hstat_create_at): among its
 * owners (every rank for MPQ_HSTAT_ALL), the one with the fewest
 * accumulator entries so far, widest inputs first, ties to the lowest
 * rank, so that the accumulators of a block spread over the ranks. The
 * same on every rank. */
static void pick_roots(const mpq_ctx *ctx, const mpq_family_info *info, const int64_t *groups,
                       int64_t n, const mpq_hset *sets, int per_stat, int *root) {
    for (int64_t k = 0; k < n; k++)
        root[k] = -1;
    for (int64_t done = 0; done < n; done++) {
        int64_t best = -1;
        for (int64_t k = 0; k < n; k++)
            if (root[k] < 0 &&
                (best < 0 || info->layers[groups[k]].in > info->layers[groups[best]].in))
                best = k;
        const mpq_hset *o = &sets[per_stat ? best : 0];
        const mpq_hset own =
            o->first == MPQ_HSTAT_ALL ? (mpq_hset){.first = 0, .count = ctx->size} : *o;
        double least = 0.0;
        for (int r = own.first; r < own.first + own.count; r++) {
            double load = 0.0;
            for (int64_t k = 0; k < n; k++)
                if (root[k] == r)
                    load += (double)info->layers[groups[k]].in * (double)info->layers[groups[k]].in;
            if (r == own.first || load < least) {
                least = load;
                root[best] = r;
            }
        }
    }
}

mpq_err mpq_calib_block_owned(mpq_ctx *ctx, mpq_calib *c, int64_t b, int bound_log2,
                              const mpq_hset *sets, int per_stat, int advance, int64_t *nstats,
                              mpq_hstat ***stats_out, int64_t **groups_out) {
    *nstats = 0;
    *stats_out = NULL;
    *groups_out = NULL;
    const mpq_family_info *info = c->info;
    mpq_hstat **stats = NULL;
    int64_t *groups = NULL, *stat_of = NULL, n = 0;
    int *roots = NULL;
    mpq_err err = MPQ_OK;
    /* Setup failures are local too: they must reach the agreement below
     * like a failed forward pass does, or the other ranks would wait in
     * the reduction (found by MPQ_FAULT_ALLOC, tests/robustness). */
    mpq_err local = mpq_malloc(ctx, info->nlayers + 1, sizeof *stats, (void **)&stats);
    if (local == MPQ_OK)
        local = mpq_malloc(ctx, info->nlayers > 0 ? info->nlayers : 1, sizeof *groups,
                           (void **)&groups);
    if (local == MPQ_OK)
        local = mpq_malloc(ctx, info->nlayers > 0 ? info->nlayers : 1, sizeof *stat_of,
                           (void **)&stat_of);
    if (local == MPQ_OK)
        local =
            mpq_malloc(ctx, info->nlayers > 0 ? info->nlayers : 1, sizeof *roots, (void **)&roots);
    int64_t ngroups = 0;
    for (int64_t l = 0; l < info->nlayers && local == MPQ_OK; l++) {
        stat_of[l] = -1;
        const mpq_layer_info *li = &info->layers[l];
        if (li->block == b && li->group == l)
            groups[ngroups++] = l;
    }
    if (local == MPQ_OK)
        pick_roots(ctx, info, groups, ngroups, sets, per_stat, roots);
    for (int64_t k = 0; k < ngroups && local == MPQ_OK; k++) {
        const mpq_layer_info *li = &info->layers[groups[k]];
        local = mpq_hstat_create_at(ctx, li->name, li->in, bound_log2, roots[k], &stats[n]);
        if (local == MPQ_OK)
            stat_of[groups[k]] = n++;
    }
    mpq_calib_hook h = {.stat_of_layer = stat_of, .stats = stats};
    /* mpq_calib_run_block is collective with statistics: the setup is agreed first */
    MPQ_TRY(mpq_agree(ctx, local));
    if (advance) {
        local = mpq_calib_run_block(ctx, c, b, &h);
    } else {
        /* Measure without keeping the output: run, then restore. */
        int64_t next = c->next;
        float *x = c->x;
        int64_t cap = c->cap_x;
        local = mpq_calib_run_block(ctx, c, b, &h);
        if (local == MPQ_OK) {
            c->y = c->x;
            c->cap_y = c->cap_x;
            c->x = x;
            c->cap_x = cap;
            c->next = next;
        }
    }
    MPQ_TRY(mpq_agree(ctx, local));
    for (int64_t k = 0; k < n; k++) {
        const mpq_hset *o = &sets[per_stat ? k : 0];
        MPQ_TRY(mpq_hstat_reduce_set(ctx, stats[k], o->first,
                                     o->first == MPQ_HSTAT_ALL ? 0 : o->count));
    }
    *nstats = n;
    *stats_out = stats;
    *groups_out = groups;
    stats = NULL;
    groups = NULL;
cleanup:
    mpq_free(roots);
    mpq_free(stat_of);
    mpq_free(groups);
    mpq_hstats_free(n, &stats);
    return err;
}
