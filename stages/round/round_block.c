/* round_block.c: the rounding of a block of layers over the ranks: a
 * deterministic cost-based plan of (layer x candidate x row tile) tasks,
 * local execution, and exact combination of the results on every rank. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_ctx.h"
#include "mpq_log.h"
#include "round_internal.h"

/* ---- the plan --------------------------------------------------------------------- */

static int64_t tile_rows(const mpq_round_opts *o, int64_t rows) {
    return o->tile_rows >= 1 && o->tile_rows < rows ? o->tile_rows : rows;
}

int mpq_round_fits_whole(const mpq_qspec *spec) {
    return spec->gran == MPQ_QGRAN_TENSOR || spec->ops->has_tensor ||
           spec->scale == MPQ_QSCALE_E4M3;
}

/* The owners of job jb among nranks ranks (every rank when none are set). */
static mpq_hset owners_of(const mpq_round_job *jb, int nranks) {
    return mpq_hset_or_all(jb->owners, nranks);
}

/* Length of [a, b) within rank r's stretch [r, r + 1) x total / nranks. */
static double overlap(double a, double b, int r, double total, int nranks) {
    double lo = total * r / nranks, hi = total * (r + 1) / nranks;
    lo = a > lo ? a : lo;
    hi = b < hi ? b : hi;
    return hi > lo ? hi - lo : 0.0;
}

void mpq_round_owners(int64_t ngroups, const double *cost, const double *setup, int nranks,
                      mpq_hset *sets) {
    /* The groups' costs laid end to end over [0, total), in group order;
     * rank r works on [r, r + 1) x total / nranks and owns every group
     * whose stretch meets its own, except that a rank at an end of a
     * group's range that has other work and would do less of the group
     * than its setup (the factorisation every owner pays) leaves it. */
    double total = 0.0;
    for (int64_t g = 0; g < ngroups; g++)
        total += cost[g] > 0.0 ? cost[g] : 0.0;
    double a = 0.0;
    for (int64_t g = 0; g < ngroups; g++) {
        double b = a + (cost[g] > 0.0 ? cost[g] : 0.0);
        int first = 0, last = nranks - 1;
        if (total > 0.0) {
            first = (int)floor(a / total * nranks);
            last = (int)ceil(b / total * nranks) - 1;
        }
        first = first < 0 ? 0 : (first > nranks - 1 ? nranks - 1 : first);
        last = last < first ? first : (last > nranks - 1 ? nranks - 1 : last);
        const double su = setup ? setup[g] : 0.0;
        for (int k = 0; k < 2 && last > first; k++) {
            /* the end with less of the group goes first */
            double of = overlap(a, b, first, total, nranks),
                   ol = overlap(a, b, last, total, nranks);
            int r = of <= ol ? first : last;
            double ov = of <= ol ? of : ol;
            double mine = total / nranks; /* the rank's whole stretch */
            if (!(ov < su && ov < mine * (1 - 1e-12)))
                break;
            if (r == first)
                first++;
            else
                last--;
        }
        sets[g].first = first;
        sets[g].count = last - first + 1;
        a = b;
    }
}

/* The order in which a rank works through the jobs: first those factored
 * together by several owners (every owner must reach that collective step,
 * so none should wait for another's local work), then those factored
 * through the shared path by one owner, then the rest; job order within
 * each class, so that jobs on the same H stay consecutive and share V. */
static void job_order(mpq_ctx *ctx, const mpq_round_opts *o, int64_t njobs,
                      const mpq_round_job *jobs, int nranks, int64_t *order) {
    int64_t n = 0;
    for (int cls = 0; cls < 3; cls++)
        for (int64_t j = 0; j < njobs; j++) {
            const int shared = mpq_round_shared_factor(ctx, o, jobs[j].method, jobs[j].cols);
            const int many = owners_of(&jobs[j], nranks).count > 1;
            if ((shared && many ? 0 : shared ? 1 : 2) == cls)
                order[n++] = j;
        }
}

typedef struct task_key {
    int nown; /* ranks the task may go to */
    double cost;
    int64_t idx;
} task_key;

static int cmp_task(const void *a, const void *b) {
    const task_key *x = a, *y = b;
    if (x->nown != y->nown)
        return x->nown < y->nown ? -1 : 1;
    if (x->cost != y->cost)
        return x->cost > y->cost ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx ? 1 : 0);
}

mpq_err mpq_round_plan(mpq_ctx *ctx, const mpq_round_opts *o, int64_t njobs,
                       const mpq_round_job *jobs, int nranks, int64_t *ntasks,
                       mpq_round_task **tasks) {
    mpq_err err = MPQ_OK;
    mpq_round_task *t = NULL;
    task_key *keys = NULL;
    double *load = NULL;
    uint8_t *has = NULL; /* [nranks][njobs]: rank already set up job */
    MPQ_CHECK(njobs >= 0 && nranks >= 1, MPQ_ERR_ARG, "round plan: %lld jobs on %d ranks",
              (long long)njobs, nranks);
    int64_t n = 0;
    for (int64_t j = 0; j < njobs; j++) {
        MPQ_CHECK(jobs[j].rows >= 1 && jobs[j].cols >= 1 && jobs[j].method, MPQ_ERR_ARG,
                  "round: job %lld ('%s'): bad shape [%lld][%lld] or no method", (long long)j,
                  jobs[j].name ? jobs[j].name : "?", (long long)jobs[j].rows,
                  (long long)jobs[j].cols);
        int64_t tr = tile_rows(o, jobs[j].rows);
        n += (jobs[j].rows + tr - 1) / tr;
    }
    MPQ_ALLOC_TRY(t, n > 0 ? n : 1);
    MPQ_ALLOC_TRY(keys, n > 0 ? n : 1);
    MPQ_ALLOC_TRY(load, nranks);
    int64_t nh;
    MPQ_TRY(mpq_mul64(ctx, nranks, njobs > 0 ? njobs : 1, "round plan", &nh));
    MPQ_ALLOC_TRY(has, nh);
    int64_t k = 0;
    for (int64_t j = 0; j < njobs; j++) {
        int64_t tr = tile_rows(o, jobs[j].rows);
        for (int64_t r0 = 0, tile = 0; r0 < jobs[j].rows; r0 += tr, tile++, k++) {
            t[k].job = j;
            t[k].tile = tile;
            t[k].r0 = r0;
            t[k].r1 = r0 + tr < jobs[j].rows ? r0 + tr : jobs[j].rows;
            t[k].cost = jobs[j].method->cost(o, t[k].r1 - t[k].r0, jobs[j].cols);
            keys[k].cost = t[k].cost;
            keys[k].nown = owners_of(&jobs[j], nranks).count;
            keys[k].idx = k;
        }
    }
    /* LPT: largest task first to the rank that would finish it first, the
     * tasks with fewer possible ranks before the others (those of a single
     * owner load it before the free ones are spread); a rank's first task
     * of a layer also pays the factorisation. */
    qsort(keys, (size_t)n, sizeof *keys, cmp_task);
    for (int64_t i = 0; i < n; i++) {
        mpq_round_task *x = &t[keys[i].idx];
        const mpq_round_job *jb = &jobs[x->job];
        /* a factor shared over the owners' grid is computed before any task */
        double setup =
            jb->method->needs_factor(o) && !mpq_round_shared_factor(ctx, o, jb->method, jb->cols)
                ? MPQ_ROUND_FACTOR_COST(jb->cols)
                : 0.0;
        const mpq_hset own = owners_of(jb, nranks);
        int best = own.first;
        double bl = INFINITY;
        for (int r = own.first; r < own.first + own.count; r++) {
            double l = load[r] + x->cost + (has[r * njobs + x->job] ? 0.0 : setup);
            if (l < bl) {
                bl = l;
                best = r;
            }
        }
        x->rank = best;
        load[best] = bl;
        has[best * njobs + x->job] = 1;
    }
    *ntasks = n;
    *tasks = t;
    t = NULL;
cleanup:
    MPQ_FREE(has);
    MPQ_FREE(load);
    MPQ_FREE(keys);
    MPQ_FREE(t);
    return err;
}

/* ---- exact combination ------------------------------------------------------------ */

enum { ST_LOSS = 0, ST_RTN, ST_ITERS, ST_GUARD, ST_SECONDS, ST_SINGLE, ST_N };

/* -sum p log2 p of the code values' counts cnt [MPQ_QMAXCODES] of n codes:
 * the bits per code of an ideal entropy coder of the layer's codes. */
static double code_entropy(const double *cnt, int64_t n) {
    double h = 0.0;
    for (int k = 0; k < MPQ_QMAXCODES; k++)
        if (cnt[k] > 0.0)
            h -= cnt[k] / (double)n * log2(cnt[k] / (double)n);
    return h > 0.0 ? h : 0.0;
}

double mpq_round_code_entropy(const uint8_t *codes, int64_t n) {
    double cnt[MPQ_QMAXCODES] = {0};
    for (int64_t k = 0; k < n; k++)
        cnt[codes[k]] += 1.0;
    return code_entropy(cnt, n);
}

/* The options of job jb: o, with the job's own rate_lambda where it has
 * one. */
static mpq_round_opts job_opts(const mpq_round_opts *o, const mpq_round_job *jb) {
    mpq_round_opts r = *o;
    if (jb->has_rate)
        r.rate_lambda = jb->rate_lambda;
    return r;
}

static void log_job(mpq_ctx *ctx, const mpq_round_opts *o0, const mpq_round_job *jb,
                    const mpq_round_result *res) {
    const mpq_round_opts oj = job_opts(o0, jb), *o = &oj;
    char spec[MPQ_QSPEC_MAX];
    mpq_qspec_format(&jb->spec, spec, sizeof spec);
    /* NaN where RTN's loss was not measured (round.rtn_guard = false) */
    double rel = res->rtn_loss > 0.0 || isnan(res->rtn_loss) ? res->loss / res->rtn_loss : 1.0;
    if (isnan(res->loss))
        MPQ_INFO("round %s: %s %s bits=%d group=%lld loss not measured (no calibration) "
                 "time=%.3fs",
                 jb->name ? jb->name : "?", jb->method->name, spec, jb->spec.bits,
                 (long long)jb->spec.group, res->seconds);
    else
        MPQ_INFO("round %s: %s %s bits=%d group=%lld rtn_loss=%.6g loss=%.6g (x%.3f) iters=%lld "
                 "guarded_rows=%lld time=%.3fs",
                 jb->name ? jb->name : "?", jb->method->name, spec, jb->spec.bits,
                 (long long)jb->spec.group, res->rtn_loss, res->loss, rel, (long long)res->iters,
                 (long long)res->rows_guarded, res->seconds);
    cJSON *ev = cJSON_CreateObject();
    if (ev) {
        cJSON_AddStringToObject(ev, "layer", jb->name ? jb->name : "?");
        cJSON_AddStringToObject(ev, "method", jb->method->name);
        cJSON_AddStringToObject(ev, "quantizer", spec);
        cJSON_AddNumberToObject(ev, "bits", jb->spec.bits);
        cJSON_AddNumberToObject(ev, "group", (double)jb->spec.group);
        cJSON_AddNumberToObject(ev, "rows", (double)jb->rows);
        cJSON_AddNumberToObject(ev, "cols", (double)jb->cols);
        cJSON_AddNumberToObject(ev, "rtn_loss", res->rtn_loss);
        cJSON_AddNumberToObject(ev, "loss", res->loss);
        cJSON_AddNumberToObject(ev, "code_entropy", res->entropy);
        cJSON_AddNumberToObject(ev, "iters", (double)res->iters);
        cJSON_AddNumberToObject(ev, "tiles", (double)res->ntiles);
        cJSON_AddNumberToObject(ev, "guarded_rows", (double)res->rows_guarded);
        cJSON_AddNumberToObject(ev, "time_s", res->seconds);
        cJSON *set = mpq_round_settings_json(o, jb->method);
        /* GPTQ's automatic precision, resolved for this layer's width, and
         * its factor's: float32 where the probe passed (hfactor.c) */
        if (set && cJSON_GetObjectItem(set, "precision")) {
            cJSON_ReplaceItemInObject(
                set, "precision",
                cJSON_CreateString(mpq_round_gptq_float(o, jb->cols) ? "float" : "double"));
            cJSON_AddStringToObject(set, "factor_precision",
                                    res->factor_single ? "float" : "double");
        }
        if (set)
            cJSON_AddItemToObject(ev, "settings", set);
        mpq_event(ctx, "round_layer", ev);
    }
}

/* Runs this rank's tasks of job j into q (codes, parameters) and the tile
 * statistics tst [ntiles][ST_N], followed by the counts of each code value
 * [MPQ_QMAXCODES] over this rank's tiles (exact integers); q's per-group arrays are left zero
 * outside this rank's tiles. */
static mpq_err run_job(mpq_ctx *ctx, const mpq_round_opts *o0, const mpq_round_job *jb, int64_t j,
                       int64_t ntasks, const mpq_round_task *tasks, const void *V,
                       mpq_round_damp damp, mpq_qlayer *q, double *tst, double *cnt) {
    const mpq_round_opts oj = job_opts(o0, jb), *o = &oj;
    mpq_err err = MPQ_OK;
    mpq_round_problem *pb = NULL;
    for (int64_t k = 0; k < ntasks; k++) {
        const mpq_round_task *t = &tasks[k];
        if (t->job != j || t->rank != ctx->rank)
            continue;
        if (!pb)
            MPQ_TRY(mpq_round_problem_create_ex(ctx, o, jb->method, jb->name, &jb->spec, jb->rows,
                                                jb->cols, jb->W, jb->H, jb->diag, V, damp, &pb));
        mpq_round_stats st;
        MPQ_TRY(mpq_round_tile(ctx, o, jb->method, pb, q->params, t->r0, t->r1,
                               q->codes + t->r0 * jb->cols, &st));
        double *s = tst + t->tile * ST_N;
        s[ST_LOSS] = st.loss;
        s[ST_RTN] = st.rtn_loss;
        s[ST_ITERS] = (double)st.iters;
        s[ST_GUARD] = (double)st.rows_guarded;
        s[ST_SECONDS] = st.seconds;
        s[ST_SINGLE] = (double)pb->factor_single;
        for (int64_t e = 0; e < (t->r1 - t->r0) * jb->cols; e++)
            cnt[q->codes[t->r0 * jb->cols + e]] += 1.0;
    }
cleanup:
    mpq_round_problem_destroy(&pb);
    return err;
}

/* Rank `first` receives job j's tiles computed elsewhere: codes and the
 * per-group and per-row parameters of their rows, in task order. */
static mpq_err gather_tiles(mpq_ctx *ctx, const mpq_round_job *jb, int64_t j, int first,
                            int64_t ntasks, const mpq_round_task *tasks, mpq_qlayer *q) {
    for (int64_t k = 0; k < ntasks; k++) {
        const mpq_round_task *t = &tasks[k];
        if (t->job != j || t->rank == first || (ctx->rank != first && ctx->rank != t->rank))
            continue;
        const int send = ctx->rank == t->rank, peer = send ? first : t->rank;
        mpq_qparams *p = q->params;
        int nc, ng = 0, nr = (int)(t->r1 - t->r0);
        MPQ_CALL(mpq_to_int(ctx, (t->r1 - t->r0) * jb->cols, "tile size (MPI)", &nc));
        if (p->gpr > 0)
            MPQ_CALL(mpq_to_int(ctx, (t->r1 - t->r0) * p->gpr, "tile groups (MPI)", &ng));
        struct {
            void *at;
            int n;
            MPI_Datatype type;
        } part[4] = {
            {q->codes + t->r0 * jb->cols, nc, MPI_UINT8_T},
            {p->gpr > 0 ? p->scale + t->r0 * p->gpr : NULL, ng, MPI_FLOAT},
            {p->gpr > 0 && p->zero ? p->zero + t->r0 * p->gpr : NULL, ng, MPI_INT32_T},
            {p->gpr > 0 && p->sign ? p->sign + t->r0 : NULL, nr, MPI_INT8_T},
        };
        for (int i = 0; i < 4; i++) {
            if (!part[i].at)
                continue;
            if (send)
                MPQ_MPI(MPI_Send(part[i].at, part[i].n, part[i].type, peer, 73, ctx->comm));
            else
                MPQ_MPI(MPI_Recv(part[i].at, part[i].n, part[i].type, peer, 73, ctx->comm,
                                 MPI_STATUS_IGNORE));
        }
    }
    return MPQ_OK;
}

/* Every rank: the sum of the ranks' tiles (zero elsewhere), finished. */
static mpq_err combine_all(mpq_ctx *ctx, const mpq_round_job *jb, mpq_round_result *res) {
    mpq_qparams *p = res->q->params;
    int64_t ncodes;
    MPQ_CALL(mpq_mul64(ctx, jb->rows, jb->cols, "layer size", &ncodes));
    MPQ_CALL(mpq_sum_owned(ctx, res->q->codes, ncodes, MPI_UINT8_T, "rounding results"));
    if (p->gpr > 0) {
        MPQ_CALL(mpq_sum_owned(ctx, p->scale, p->ngroups, MPI_FLOAT, "rounding results"));
        if (p->zero)
            MPQ_CALL(mpq_sum_owned(ctx, p->zero, p->ngroups, MPI_INT32_T, "rounding results"));
        if (p->sign)
            MPQ_CALL(mpq_sum_owned(ctx, p->sign, p->rows, MPI_INT8_T, "rounding results"));
    }
    MPQ_CALL(mpq_agree(ctx, mpq_qlayer_finish(ctx, res->q)));
    res->bits = mpq_qlayer_bits(res->q);
    return MPQ_OK;
}

/* Rank first only: the tiles gathered there, finished; its size in bits
 * to every rank. */
static mpq_err combine_owned(mpq_ctx *ctx, const mpq_round_job *jb, int64_t j, int first,
                             int64_t ntasks, const mpq_round_task *tasks, mpq_round_result *res) {
    MPQ_CALL(gather_tiles(ctx, jb, j, first, ntasks, tasks, res->q));
    mpq_err err = MPQ_OK;
    if (ctx->rank == first)
        err = mpq_qlayer_finish(ctx, res->q);
    else
        mpq_qlayer_destroy(&res->q);
    MPQ_CALL(mpq_agree(ctx, err));
    int64_t bits = ctx->rank == first ? mpq_qlayer_bits(res->q) : 0;
    if (ctx->comm != MPI_COMM_NULL)
        MPQ_MPI(MPI_Bcast(&bits, 1, MPI_INT64_T, first, ctx->comm));
    res->bits = bits;
    return MPQ_OK;
}

mpq_err mpq_round_block(mpq_ctx *ctx, const mpq_round_opts *o, int64_t njobs,
                        const mpq_round_job *jobs, mpq_round_result *results) {
    return mpq_round_block_owned(ctx, o, njobs, jobs, 0, results);
}

mpq_err mpq_round_block_owned(mpq_ctx *ctx, const mpq_round_opts *o, int64_t njobs,
                              const mpq_round_job *jobs, int owned, mpq_round_result *results) {
    mpq_err err = MPQ_OK;
    mpq_round_task *tasks = NULL;
    double **tst = NULL;
    int64_t ntasks = 0;
    const int nranks = ctx->comm == MPI_COMM_NULL ? 1 : ctx->size;
    for (int64_t j = 0; j < njobs; j++)
        memset(&results[j], 0, sizeof results[j]);
    err = mpq_round_plan(ctx, o, njobs, jobs, nranks, &ntasks, &tasks);
    if (err == MPQ_OK)
        err = mpq_malloc(ctx, njobs > 0 ? njobs : 1, sizeof *tst, (void **)&tst);

    /* Every rank (owned: every owner of the job): the result layers, with
     * whole-layer fits where the spec has per-tensor values (the same bits
     * everywhere); per-group arrays that the tiles own start at zero so that
     * the sum over ranks assembles them. */
    for (int64_t j = 0; j < njobs && err == MPQ_OK; j++) {
        const mpq_round_job *jb = &jobs[j];
        int64_t tr = tile_rows(o, jb->rows);
        results[j].ntiles = (jb->rows + tr - 1) / tr;
        err = mpq_malloc(ctx, results[j].ntiles * ST_N + MPQ_QMAXCODES, sizeof **tst,
                         (void **)&tst[j]);
        const mpq_hset own = owners_of(jb, nranks);
        if (owned && !mpq_hset_has(&own, ctx->rank))
            continue; /* no tile of it here, and no result */
        if (err == MPQ_OK)
            err = mpq_qlayer_create(ctx, &jb->spec, jb->rows, jb->cols, &results[j].q);
        if (err != MPQ_OK)
            break;
        mpq_qparams *p = results[j].q->params;
        if (mpq_round_fits_whole(&jb->spec)) {
            mpq_round_problem *pb = NULL;
            err = mpq_round_problem_create_ex(ctx, o, NULL, jb->name, &jb->spec, jb->rows, jb->cols,
                                              jb->W, jb->H, jb->diag, NULL,
                                              (mpq_round_damp){0.0, 0.0, 0}, &pb);
            if (err == MPQ_OK)
                err = mpq_qparams_copy(ctx, pb->base, p);
            mpq_round_problem_destroy(&pb);
        }
        if (err == MPQ_OK && p->gpr > 0) {
            memset(p->scale, 0, (size_t)p->ngroups * sizeof *p->scale);
            if (p->zero)
                memset(p->zero, 0, (size_t)p->ngroups * sizeof *p->zero);
            if (p->sign)
                memset(p->sign, 0, (size_t)p->rows * sizeof *p->sign);
        }
    }
    /* This rank's tasks. A layer wide enough for ScaLAPACK is factored once
     * by every rank together (after agreeing that all are still fine), and
     * the factor is shared by the ranks' tiles; consecutive jobs on the same
     * H (q/k/v, gate/up, the candidates of one layer) reuse it. */
    void *V = NULL; /* float32 when damp.single */
    mpq_round_damp damp = {0.0, 0.0, 0};
    const double *V_of = NULL; /* the statistic that V factors (its diagonal: on every rank) */
    int V_form = 0;            /* its form (mpq_round_gptq_vform) */
    int64_t *order = NULL;
    /* the set-up above and the order's buffer, agreed: a failure skips
     * the loop on every rank alike */
    if (err == MPQ_OK)
        err = mpq_malloc(ctx, njobs + 1, sizeof *order, (void **)&order);
    err = mpq_agree(ctx, err);
    const int go = err == MPQ_OK;
    if (go)
        job_order(ctx, o, njobs, jobs, nranks, order);
    for (int64_t x = 0; x < njobs && go; x++) {
        const int64_t j = order[x];
        const mpq_round_job *jb = &jobs[j];
        const int shared = mpq_round_shared_factor(ctx, o, jb->method, jb->cols);
        const double *key = jb->diag ? jb->diag : jb->H;
        const int vform = mpq_round_gptq_vform(o, &jb->spec, jb->cols);
        if (shared && (key != V_of || vform != V_form)) {
            mpq_free(V);
            V = NULL;
            V_of = NULL;
            const mpq_hset own = owners_of(jb, nranks);
            if (!mpq_round_factor_local(o, &own)) /* a collective factorisation follows */
                err = mpq_agree(ctx, err);
            if (err == MPQ_OK)
                err = mpq_round_factor_shared(ctx, o, jb->name, jb->cols, jb->H, &own, vform, &V,
                                              &damp);
            if (err == MPQ_OK) {
                V_of = key;
                V_form = vform;
            }
        }
        if (err == MPQ_OK)
            err = run_job(ctx, o, jb, j, ntasks, tasks, shared ? V : NULL, damp, results[j].q,
                          tst[j], tst[j] + results[j].ntiles * ST_N);
    }
    mpq_free(V);
    mpq_free(order);
    MPQ_TRY(mpq_agree(ctx, err));

    /* Combine and finish. */
    for (int64_t j = 0; j < njobs; j++) {
        const mpq_round_job *jb = &jobs[j];
        mpq_round_result *res = &results[j];
        if (owned)
            MPQ_TRY(combine_owned(ctx, jb, j, owners_of(jb, nranks).first, ntasks, tasks, res));
        else
            MPQ_TRY(combine_all(ctx, jb, res));
        MPQ_TRY(mpq_sum_owned(ctx, tst[j], res->ntiles * ST_N + MPQ_QMAXCODES, MPI_DOUBLE,
                              "rounding results"));
        for (int64_t t = 0; t < res->ntiles; t++) {
            const double *s = tst[j] + t * ST_N;
            res->loss += s[ST_LOSS];
            res->rtn_loss += s[ST_RTN];
            res->iters = (int64_t)s[ST_ITERS];
            res->rows_guarded += (int64_t)s[ST_GUARD];
            res->seconds += s[ST_SECONDS];
            res->factor_single |= s[ST_SINGLE] > 0.0;
        }
        res->entropy = code_entropy(tst[j] + res->ntiles * ST_N, jb->rows * jb->cols);
        log_job(ctx, o, jb, res);
    }
cleanup:
    if (tst)
        for (int64_t j = 0; j < njobs; j++)
            MPQ_FREE(tst[j]);
    MPQ_FREE(tst);
    MPQ_FREE(tasks);
    if (err != MPQ_OK)
        mpq_round_results_free(njobs, results);
    return err;
}

void mpq_round_results_free(int64_t n, mpq_round_result *results) {
    if (!results)
        return;
    for (int64_t j = 0; j < n; j++)
        mpq_qlayer_destroy(&results[j].q);
}
