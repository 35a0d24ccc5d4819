/* session_budget.c: the budget solve of `mpquant run` and of the sweep's
 * budget points (mpq_session.h): rank 0 builds the knapsack over the
 * session's layers and solves it; every rank gets the choice. */
#include <stdio.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_config.h"
#include "mpq_session.h"

/* Rank 0: the problem of k over the session's layers, then its range (when
 * infeasible budgets are allowed) and the solution (unless infeasible, or
 * only checked). */
static mpq_err solve_local(mpq_ctx *ctx, const mpq_session *s, const mpq_session_knapsack *k,
                           mpq_session_range *range, mpq_budget_result **br) {
    mpq_err err = MPQ_OK;
    mpq_budget_problem *p = NULL;
    MPQ_TRY(mpq_budget_problem_create(ctx, s->nl, k->ncol, &p));
    for (int64_t l = 0; l < s->nl; l++) {
        const mpq_layer_info *li = &s->info->layers[l];
        if (s->excl[l]) {
            MPQ_TRY(mpq_budget_exclude(ctx, p, l, 1));
            continue;
        }
        MPQ_TRY(mpq_budget_set_layer(ctx, p, l, li->out * li->in, k->nc ? k->nc[l] : k->ncol,
                                     k->cost + l * k->ncol,
                                     k->score ? k->score + l * k->ncol : NULL));
        if (k->pin && k->pin[l] >= 0)
            MPQ_TRY(mpq_budget_pin(ctx, p, l, k->pin[l]));
    }
    if (k->allow_infeasible) {
        MPQ_TRY(mpq_budget_bits(ctx, p, &k->spec, &range->budget_bits));
        MPQ_TRY(mpq_budget_range(ctx, p, &range->min_bits, &range->max_bits, &range->weights));
        range->infeasible = range->budget_bits < range->min_bits;
        if (range->infeasible)
            goto cleanup;
    }
    err =
        k->check_only ? mpq_budget_check(ctx, p, &k->spec) : mpq_budget_solve(ctx, p, &k->spec, br);
    if (err != MPQ_OK) {
        char msg[MPQ_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", ctx->err_msg);
        mpq_err_clear(ctx);
        /* Blame where the budget's value came from: the file's line or the
         * -o override (k->what starts with the key). */
        char key[64], where[600];
        snprintf(key, sizeof key, "%.*s", (int)strcspn(k->what, ": "), k->what);
        err = MPQ_ERROR(err, "%s: %s: %s", mpq_config_origin(s->cfg, key, where, sizeof where),
                        k->what, msg);
    }
cleanup:
    mpq_budget_problem_destroy(&p);
    return err;
}

mpq_err mpq_session_budget(mpq_ctx *ctx, const mpq_session *s, const mpq_session_knapsack *k,
                           int32_t *choice, mpq_budget_result *figures, mpq_session_range *range) {
    mpq_err err = MPQ_OK;
    mpq_budget_result *br = NULL;
    mpq_session_range r;
    memset(&r, 0, sizeof r);
    if (ctx->rank == 0)
        err = solve_local(ctx, s, k, &r, &br);
    MPQ_TRY(mpq_agree(ctx, err));
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1)
        MPQ_MPI_TRY(MPI_Bcast(&r, (int)sizeof r, MPI_BYTE, 0, ctx->comm));
    if (range)
        *range = r;
    if (r.infeasible || k->check_only)
        goto cleanup;
    MPQ_TRY(mpq_budget_bcast(ctx, &br));
    for (int64_t l = 0; l < s->nl; l++)
        choice[l] = s->excl[l] ? -1 : br->choice[l];
    if (figures) {
        *figures = *br;
        figures->choice = NULL;
    }
cleanup:
    mpq_budget_result_destroy(&br);
    return err;
}
