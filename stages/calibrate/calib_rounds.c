/* calib_rounds.c: one block over the calibration chunks, round by round
 * (the loop of mpq_calibrate.h). In round k every rank runs its k-th chunk;
 * in a round with fewer chunks than ranks (the last, or the only one when
 * samples are few) the ranks without a chunk share the others': chunk j's
 * workers are the ranks j, j + m, j + 2m, ... (m chunks in the round), its
 * units split over them by rows, its statistics' rows exchanged and its
 * panels folded by the worker each is assigned to. */
#include <string.h>

#include "calib_internal.h"
#include "mpq_coll.h"
#include "mpq_ctx.h"

enum { TAG_X = 74, TAG_Y = 75, TAG_ROWS = 200 };

/* The end of the unit starting at sample s of a chunk ending at s1: the
 * fewest samples that make MPQ_CALIB_UNIT_ROWS rows, or up to s1. */
static int64_t unit_end(const mpq_calib_set *set, int64_t s, int64_t s1) {
    int64_t e = s + 1;
    while (e < s1 && set->offset[e] - set->offset[s] < MPQ_CALIB_UNIT_ROWS)
        e++;
    return e;
}

/* Workers per chunk are capped so that the exchange stays small; the ranks
 * past the cap sit the round out. */
#define MAX_WORKERS 64

/* This rank's share of round k: its chunk, the chunk's workers and their
 * parts (samples part[i] .. part[i + 1] to worker i, whole units, split at
 * the units' row midpoints), and the step of the panels' folds (the most
 * workers a chunk of the round has, the same on every rank). */
typedef struct share {
    int64_t chunk; /* -1: no chunk this round */
    int owner, nw, me, split, step;
    int rank[MAX_WORKERS];
    int64_t part[MAX_WORKERS + 1];
} share;

static void plan_round(const mpq_ctx *ctx, const mpq_calib *c, int64_t k, share *sh) {
    const int64_t nch = mpq_calib_nchunks(c), P = ctx->size;
    const int64_t m = nch - k * P < P ? nch - k * P : P;
    memset(sh, 0, sizeof *sh);
    sh->chunk = -1;
    if (m <= 0)
        return;
    sh->split = m < P;
    sh->step = (int)((P + m - 1) / m < MAX_WORKERS ? (P + m - 1) / m : MAX_WORKERS);
    const int64_t j = ctx->rank % m;
    if (!sh->split && ctx->rank >= m)
        return;
    sh->chunk = k * P + j;
    sh->owner = (int)j;
    for (int64_t r = j; r < P && (sh->split || r == j) && sh->nw < MAX_WORKERS; r += m) {
        if (r == ctx->rank)
            sh->me = sh->nw;
        sh->rank[sh->nw++] = (int)r;
    }
    if (ctx->rank >= j + m * MAX_WORKERS) {
        sh->chunk = -1; /* beyond the cap: idle this round */
        return;
    }
    const mpq_calib_set *set = c->set;
    int64_t s0, s1;
    mpq_calib_chunk_range(c, sh->chunk, &s0, &s1);
    const int64_t R = set->offset[s1] - set->offset[s0];
    int last = 0;
    sh->part[0] = s0;
    for (int64_t a = s0, e; a < s1; a = e) {
        e = unit_end(set, a, s1);
        const int64_t mid2 = set->offset[a] + set->offset[e] - 2 * set->offset[s0];
        int w = R > 0 ? (int)(mid2 * sh->nw / (2 * R)) : 0;
        w = w < sh->nw ? w : sh->nw - 1;
        for (int q = last + 1; q <= w; q++)
            sh->part[q] = a;
        last = w > last ? w : last;
    }
    for (int q = last + 1; q <= sh->nw; q++)
        sh->part[q] = s1;
}

static int64_t part_rows(const mpq_calib *c, const share *sh, int i) {
    return c->set->offset[sh->part[i + 1]] - c->set->offset[sh->part[i]];
}

/* Rows of the part before worker i's in the chunk. */
static int64_t part_first(const mpq_calib *c, const share *sh, int i) {
    return c->set->offset[sh->part[i]] - c->set->offset[sh->part[0]];
}

static mpq_err accumulate_hook(mpq_ctx *ctx, void *ud, int64_t layer, const float *x, int64_t rows,
                               int64_t cols) {
    mpq_calib_hook *h = ud;
    int64_t k = h->stat_of_layer[layer];
    if (k < 0)
        return MPQ_OK; /* not the first layer of its group: same input again */
    MPQ_CALL(mpq_hstat_accumulate(ctx, h->stats[k], x, rows, cols));
    return MPQ_OK;
}

/* Samples [s0, s1) (whole units of a chunk ending at end) through block b,
 * unit by unit: x [rows][width(b)] -> y [rows][width(b + 1)]. */
static mpq_err run_units(mpq_ctx *ctx, mpq_calib *c, int64_t b, int64_t s0, int64_t s1, int64_t end,
                         const float *x, float *y, mpq_calib_hook *h) {
    const mpq_calib_set *set = c->set;
    const int64_t win = mpq_family_width(c->f, b), wout = mpq_family_width(c->f, b + 1);
    for (int64_t a = s0, e; a < s1; a = e) {
        e = unit_end(set, a, end);
        mpq_batch bt;
        mpq_calib_range_batch(set, a, e, &bt);
        const int64_t r = set->offset[a] - set->offset[s0];
        MPQ_CALL(mpq_family_block(ctx, c->f, b, &bt, x + r * win, y + r * wout,
                                  h ? accumulate_hook : NULL, h));
    }
    c->rows_run += set->offset[s1] - set->offset[s0];
    return MPQ_OK;
}

/* Statistic s of a shared round (its panels' offset, the workers' row
 * counts cnt [rank][nst]): *hs, this rank's part of its folds; wc[i] and
 * folds[i], worker i's rows and whether it folds a panel; *first, the rows
 * before this rank's; the chunk's rows. */
static int64_t stat_split(const share *sh, const mpq_hstat *st, int64_t offset, const int64_t *cnt,
                          int64_t nst, int64_t s, mpq_hshare *hs, int64_t *wc, int *folds,
                          int64_t *first) {
    const int on = sh->chunk >= 0;
    *hs = (mpq_hshare){
        .worker = on ? sh->me : 0, .nworkers = on ? sh->nw : 1, .step = sh->step, .offset = offset};
    int64_t total = 0;
    *first = 0;
    for (int i = 0; on && i < sh->nw; i++) {
        wc[i] = cnt[sh->rank[i] * nst + s];
        *first += i < sh->me ? wc[i] : 0;
        total += wc[i];
        folds[i] = 0;
    }
    for (int64_t p = 0; on && total > 0 && p < mpq_hstat_npanels(st); p++)
        folds[mpq_hshare_worker(hs, p)] = 1;
    return total;
}

/* Point-to-point messages of one round, waited for together. */
typedef struct exchange {
    MPI_Request req[4 * MAX_WORKERS + 8];
    MPI_Datatype type[4 * MAX_WORKERS + 8];
    int n;
} exchange;

/* Posts a send or a receive of rows x width items of type base. */
static mpq_err post(mpq_ctx *ctx, exchange *ex, int send, void *buf, int64_t rows, int64_t width,
                    MPI_Datatype base, int peer, int tag) {
    int n, w;
    if (rows <= 0)
        return MPQ_OK;
    MPQ_CHECK(ex->n < (int)(sizeof ex->req / sizeof ex->req[0]), MPQ_ERR_INTERNAL,
              "calibration: too many messages in one round");
    MPQ_CALL(mpq_to_int(ctx, rows, "rows sent between ranks", &n));
    MPQ_CALL(mpq_to_int(ctx, width, "row width", &w));
    MPQ_MPI(MPI_Type_contiguous(w, base, &ex->type[ex->n]));
    MPQ_MPI(MPI_Type_commit(&ex->type[ex->n]));
    MPI_Request *r = &ex->req[ex->n];
    if (send)
        MPQ_MPI(MPI_Isend(buf, n, ex->type[ex->n], peer, tag, ctx->comm, r));
    else
        MPQ_MPI(MPI_Irecv(buf, n, ex->type[ex->n], peer, tag, ctx->comm, r));
    ex->n++;
    return MPQ_OK;
}

static mpq_err wait_all(mpq_ctx *ctx, exchange *ex) {
    mpq_err err = MPQ_OK;
    if (ex->n > 0)
        err = mpq_mpi_check(ctx, MPI_Waitall(ex->n, ex->req, MPI_STATUSES_IGNORE), "MPI_Waitall",
                            __FILE__, __LINE__, __func__);
    for (int i = 0; i < ex->n; i++)
        MPI_Type_free(&ex->type[i]);
    ex->n = 0;
    return err;
}

/* Statistic st of a shared chunk, its rows already placed (rows: the
 * chunk's rows when this rank folds one of its panels, else its own): this
 * rank's rows go to every worker that folds one of the panels, the other
 * workers' rows come in when it folds one. cnt[i]: worker i's rows. */
static mpq_err post_rows(mpq_ctx *ctx, const share *sh, const mpq_hstat *st, int tag,
                         const int *folds, const int64_t *cnt, double *rows, exchange *ex) {
    int64_t first[MAX_WORKERS + 1] = {0};
    for (int i = 0; i < sh->nw; i++)
        first[i + 1] = first[i] + cnt[i];
    const double *own = rows + (folds[sh->me] ? first[sh->me] * st->d : 0);
    for (int j = 0; j < sh->nw; j++) {
        if (j == sh->me && folds[j]) {
            for (int i = 0; i < sh->nw; i++)
                if (i != j)
                    MPQ_CALL(post(ctx, ex, 0, rows + first[i] * st->d, cnt[i], st->d, MPI_DOUBLE,
                                  sh->rank[i], tag));
        } else if (j != sh->me && folds[j]) {
            MPQ_CALL(
                post(ctx, ex, 1, (void *)own, cnt[sh->me], st->d, MPI_DOUBLE, sh->rank[j], tag));
        }
    }
    return MPQ_OK;
}

/* The statistics of a shared round, after the forward passes (collective):
 * the workers' row counts (one all-gather), the rows in place (allocations
 * agreed), exchanged statistic by statistic (with the pending messages of
 * ex), and every statistic's chunk ended with this rank's panels
 * (mpq_hshare), the owner counting the rows. */
static mpq_err share_stats(mpq_ctx *ctx, const share *sh, mpq_calib_hook *h, exchange *ex) {
    mpq_err err = MPQ_OK, local = MPQ_OK;
    int64_t nst = 0;
    while (h->stats[nst])
        nst++;
    const int nw = sh->chunk >= 0 ? sh->nw : 0;
    int64_t *cnt = NULL;
    double **rows = NULL;
    local = mpq_malloc(ctx, ctx->size * nst + 1, sizeof *cnt, (void **)&cnt);
    if (local == MPQ_OK)
        local = mpq_malloc(ctx, nst + 1, sizeof *rows, (void **)&rows);
    MPQ_TRY(mpq_agree(ctx, local));
    for (int64_t s = 0; s < nst; s++)
        cnt[ctx->rank * nst + s] = h->stats[s]->rowbuf_n;
    MPQ_MPI_TRY(
        MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, cnt, (int)nst, MPI_INT64_T, ctx->comm));
    int64_t wc[MAX_WORKERS], first = 0, offset = 0;
    int folds[MAX_WORKERS];
    mpq_hshare hs;
    for (int64_t s = 0; s < nst && nw > 0 && local == MPQ_OK; s++) {
        const int64_t total =
            stat_split(sh, h->stats[s], offset, cnt, nst, s, &hs, wc, folds, &first);
        offset += mpq_hstat_npanels(h->stats[s]);
        local = folds[sh->me] ? mpq_hstat_chunk_place(ctx, h->stats[s], first, total, &rows[s])
                              : mpq_hstat_chunk_place(ctx, h->stats[s], 0, wc[sh->me], &rows[s]);
    }
    MPQ_TRY(mpq_agree(ctx, local));
    offset = 0;
    for (int64_t s = 0; s < nst; s++) {
        const int64_t total =
            stat_split(sh, h->stats[s], offset, cnt, nst, s, &hs, wc, folds, &first);
        offset += mpq_hstat_npanels(h->stats[s]);
        if (nw > 0)
            MPQ_TRY(post_rows(ctx, sh, h->stats[s], TAG_ROWS + (int)s, folds, wc, rows[s], ex));
        MPQ_TRY(wait_all(ctx, ex));
        MPQ_TRY(mpq_hstat_end_chunk_part(ctx, h->stats[s], &hs, nw > 0 && sh->me == 0 ? total : 0));
    }
cleanup:
    mpq_free(rows);
    mpq_free(cnt);
    return err;
}

/* Round k shared between the ranks (fewer chunks than ranks): the owner
 * sends each worker its part's input, every worker runs its units, the
 * outputs return to the owner and the statistics are shared. Collective;
 * local: an earlier error of this rank, agreed here. */
static mpq_err run_shared(mpq_ctx *ctx, mpq_calib *c, int64_t b, int64_t k, const share *sh,
                          mpq_calib_hook *h, mpq_err local) {
    const int64_t win = mpq_family_width(c->f, b), wout = mpq_family_width(c->f, b + 1);
    exchange ex = {.n = 0};
    const int on = sh->chunk >= 0, owner = on && sh->me == 0;
    const int64_t n = on ? part_rows(c, sh, sh->me) : 0;
    for (int64_t s = 0; h && h->stats[s] && local == MPQ_OK; s++)
        local = mpq_hstat_begin_chunk(ctx, h->stats[s]);
    float *x = owner ? c->x + c->row_off[k] * win : c->hx;
    float *y = owner ? c->y + c->row_off[k] * wout : c->hy;
    for (int i = 1; owner && i < sh->nw; i++)
        MPQ_CALL(post(ctx, &ex, 1, x + part_first(c, sh, i) * win, part_rows(c, sh, i), win,
                      MPI_FLOAT, sh->rank[i], TAG_X));
    if (on && !owner)
        MPQ_CALL(post(ctx, &ex, 0, x, n, win, MPI_FLOAT, sh->owner, TAG_X));
    MPQ_CALL(wait_all(ctx, &ex));
    if (local == MPQ_OK && n > 0) {
        int64_t s0, s1;
        mpq_calib_chunk_range(c, sh->chunk, &s0, &s1);
        /* the owner's part is the chunk's first: x and y point at both */
        local = run_units(ctx, c, b, sh->part[sh->me], sh->part[sh->me + 1], s1, x, y, h);
    }
    MPQ_CALL(mpq_agree(ctx, local));
    for (int i = 1; owner && i < sh->nw; i++)
        MPQ_CALL(post(ctx, &ex, 0, y + part_first(c, sh, i) * wout, part_rows(c, sh, i), wout,
                      MPI_FLOAT, sh->rank[i], TAG_Y));
    if (on && !owner)
        MPQ_CALL(post(ctx, &ex, 1, y, n, wout, MPI_FLOAT, sh->owner, TAG_Y));
    if (h)
        MPQ_CALL(share_stats(ctx, sh, h, &ex));
    MPQ_CALL(wait_all(ctx, &ex));
    return MPQ_OK;
}

mpq_err mpq_calib_run_block(mpq_ctx *ctx, mpq_calib *c, int64_t b, mpq_calib_hook *h) {
    MPQ_CHECK(b == c->next, MPQ_ERR_ARG,
              "calibration: block %lld requested but the activations are the input of block "
              "%lld (blocks run in order)",
              (long long)b, (long long)c->next);
    const int64_t win = mpq_family_width(c->f, b), wout = mpq_family_width(c->f, b + 1);
    share last = {.chunk = -1};
    if (c->rounds > 0)
        plan_round(ctx, c, c->rounds - 1, &last);
    const int shared = c->rounds > 0 && last.split;
    const int64_t hrows =
        shared && last.chunk >= 0 && last.me > 0 ? part_rows(c, &last, last.me) : 0;
    /* With statistics or a shared round the ranks go in step: a streamed
     * statistic sums each round's partials onto its root (collective; a
     * rank past its last chunk takes part with no rows), a shared round
     * exchanges rows, so every local error is agreed first. */
    mpq_err cap =
        mpq_calib_ensure_cap(ctx, &c->y, &c->cap_y, c->rows * wout > 0 ? c->rows * wout : 1);
    if (cap == MPQ_OK && hrows > 0)
        cap = mpq_calib_ensure_cap(ctx, &c->hx, &c->cap_hx, hrows * win);
    if (cap == MPQ_OK && hrows > 0)
        cap = mpq_calib_ensure_cap(ctx, &c->hy, &c->cap_hy, hrows * wout);
    MPQ_CALL(h || shared ? mpq_agree(ctx, cap) : cap);
    c->rows_run = 0;
    mpq_err local = MPQ_OK;
    for (int64_t k = 0; k < c->rounds; k++) {
        share sh;
        plan_round(ctx, c, k, &sh);
        if (sh.split) {
            MPQ_CALL(run_shared(ctx, c, b, k, &sh, h, local));
            continue;
        }
        for (int64_t s = 0; h && h->stats[s] && local == MPQ_OK; s++)
            local = mpq_hstat_begin_chunk(ctx, h->stats[s]);
        if (local == MPQ_OK && k < c->nchunks_mine) {
            int64_t s0, s1;
            mpq_calib_chunk_range(c, c->chunk[k], &s0, &s1);
            local = run_units(ctx, c, b, s0, s1, s1, c->x + c->row_off[k] * win,
                              c->y + c->row_off[k] * wout, h);
        }
        if (!h) /* kept: a shared round later, or the end, reports it */
            continue;
        MPQ_CALL(mpq_agree(ctx, local));
        for (int64_t s = 0; h->stats[s]; s++)
            MPQ_CALL(mpq_hstat_end_chunk(ctx, h->stats[s]));
    }
    MPQ_CALL(local);
    float *t = c->x;
    c->x = c->y;
    c->y = t;
    int64_t tc = c->cap_x;
    c->cap_x = c->cap_y;
    c->cap_y = tc;
    c->next = b + 1;
    return MPQ_OK;
}
