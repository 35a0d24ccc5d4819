/* cmd_run.c: `mpquant run CONFIG`: the whole pipeline (mpq_run.h), a result
 * table on standard output and, with --json, one JSON object as the last
 * line. */
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_cli.h"
#include "mpq_log.h"
#include "mpq_run.h"
#include "mpq_session.h"
#include "mpq_timer.h"

/* Test hook (tests/driver/test_run_kill.sh): MPQ_TEST_KILL_AT_TENSOR=i kills
 * rank 0 right before the checkpoint writer writes tensor i, the other
 * ranks waiting in a barrier until mpirun takes them down. */
static void kill_hook(mpq_ctx *ctx, int64_t i, void *ud) {
    if (i != *(const int64_t *)ud)
        return;
    if (ctx->comm != MPI_COMM_NULL)
        MPI_Barrier(ctx->comm);
    if (ctx->rank == 0)
        raise(SIGKILL);
    if (ctx->comm != MPI_COMM_NULL)
        MPI_Barrier(ctx->comm);
}

static void row(const char *metric, double fp, double q, int has_fp, const char *fmt) {
    char a[32] = "-", b[32], c[32] = "-";
    if (has_fp)
        snprintf(a, sizeof a, fmt, fp);
    snprintf(b, sizeof b, fmt, q);
    if (has_fp && fp != 0.0)
        snprintf(c, sizeof c, "%+.2f%%", 100.0 * (q - fp) / fabs(fp));
    printf("%-22s %14s %14s %12s\n", metric, a, b, c);
}

/* A fraction (accuracy): its change in percentage points, never relative
 * (from 10 % to 43 % is +33 points, not "+338 %"), so never above 100. */
static void row_points(const char *metric, double fp, double q, int has_fp) {
    char a[32] = "-", b[32], c[32] = "-";
    if (has_fp)
        snprintf(a, sizeof a, "%.6f", fp);
    snprintf(b, sizeof b, "%.6f", q);
    if (has_fp)
        snprintf(c, sizeof c, "%+.2f pts", 100.0 * (q - fp));
    printf("%-22s %14s %14s %12s\n", metric, a, b, c);
}

/* A loss or score with 5 digits, "-" where it was not measured (NaN). */
static void fmt_figure(char *buf, size_t n, double x) {
    if (isnan(x))
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.5g", x);
}

/* The per-layer assignment: layer, chosen configuration, bits, score. */
static void print_layers(const mpq_run_result *r) {
    printf("%-36s %-52s %9s %12s %12s\n", "layer", "configuration", "bits", "loss",
           r->mixed ? "score" : "rtn_loss");
    for (int64_t l = 0; l < r->nlayers; l++) {
        const mpq_run_layer *rl = &r->layers[l];
        if (rl->excluded) {
            printf("%-36s %-52s %9s %12s %12s\n", rl->name, "full precision (excluded)", "-", "-",
                   "-");
            continue;
        }
        /* a loss not measured (rtn without calibration) is NaN: "-" */
        char loss[32], last[32];
        const double x = r->mixed ? rl->score : rl->rtn_loss;
        fmt_figure(loss, sizeof loss, rl->loss);
        fmt_figure(last, sizeof last, x);
        printf("%-36s %-52s %9lld %12s %12s%s\n", rl->name, rl->spec, (long long)rl->bits, loss,
               last, rl->pinned ? " pinned" : "");
    }
    if (r->has_budget)
        printf("budget: objective %.6g, Lagrangian lower bound %.6g, gap %.3g (relative %.3g); "
               "%lld of %lld %sbits, %.4f %sbits per weight\n",
               r->budget.objective, r->budget.lower_bound, r->budget.gap, r->budget.rel_gap,
               (long long)r->budget.bits_used, (long long)r->budget.budget_bits,
               r->budget_codes ? "code " : "", r->budget.avg_bits, r->budget_codes ? "code " : "");
    printf("\n");
}

static void print_table(const mpq_run_result *r, double fp_bpw, double seconds) {
    const mpq_run_eval *f = &r->fp, *q = &r->quant;
    int hf = f->done;
    print_layers(r);
    printf("%-22s %14s %14s %12s\n", "metric", "full precision", "quantized", "change");
    if (!q->done) {
        printf("%-22s %14s %14s %12s\n", "evaluation", "-", "off", "-");
    } else if (q->task == MPQ_TASK_LM) {
        row("perplexity", f->lm.ppl, q->lm.ppl, hf, "%.4f");
        row("mean NLL (nats)", f->lm.mean_nll, q->lm.mean_nll, hf, "%.6f");
        if (q->lm.has_ref) {
            row("KLD vs FP (nats)", 0.0, q->lm.kld, 0, "%.6f");
            row("top-1 agreement", 1.0, q->lm.top1_agreement, 0, "%.6f");
        }
    } else {
        row_points("accuracy", f->cls.accuracy, q->cls.accuracy, hf);
        if (q->cls.has_ref) {
            row("KLD vs FP (nats)", 0.0, q->cls.kld, 0, "%.6f");
            row("agreement with FP", 1.0, q->cls.agreement, 0, "%.6f");
        }
        if (q->has_all)
            row_points("accuracy (all images)", f->cls_all.accuracy, q->cls_all.accuracy,
                       hf && f->has_all);
    }
    row("bits per weight", fp_bpw, r->bpw, 1, "%.4f");
    printf("%-22s %14s %14.2f %12s\n", "time (s)", "-", seconds, "-");
    fflush(stdout);
}

mpq_err mpq_cmd_run(mpq_ctx *ctx, const mpq_cli *cli) {
    mpq_err err = MPQ_OK;
    mpq_config *cfg = NULL;
    mpq_run_result *r = NULL;
    cJSON *o = NULL, *timers = NULL, *rss = NULL;
    MPQ_CHECK(cli->npos == 1, MPQ_ERR_ARG, "run: expected one configuration file");
    MPQ_CALL(mpq_cli_load_config(ctx, cli, cli->pos[0], &cfg));
    mpq_run_opts opts;
    mpq_run_opts_default(&opts);
    int64_t kill_at = -1;
    const char *ks = getenv("MPQ_TEST_KILL_AT_TENSOR");
    if (ks && ks[0]) {
        kill_at = strtoll(ks, NULL, 10);
        opts.write_hook = kill_hook;
        opts.write_ud = &kill_at;
    }
    double t0 = mpq_now();
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_TOTAL));
    MPQ_TRY(mpq_run(ctx, cfg, &opts, &r));
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_TOTAL));
    double seconds = mpq_now() - t0;
    /* The full-precision model as evaluated: fp32 weights. */
    double fp_bpw = 32.0;
    if (ctx->rank == 0)
        print_table(r, fp_bpw, seconds);
    MPQ_TRY(mpq_timers_report(ctx, &timers));
    MPQ_TRY(mpq_peak_rss_report(ctx, &rss));
    {
        /* against the analytic minimum (mpq_run.h) */
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(rss, "max");
        const double peak = cJSON_IsNumber(mx) ? mx->valuedouble : 0.0;
        const double ratio = r->rss_min_mib > 0.0 ? peak / r->rss_min_mib : 0.0;
        cJSON_AddNumberToObject(rss, "analytic_min", r->rss_min_mib);
        cJSON_AddNumberToObject(rss, "max_over_min", ratio);
        MPQ_INFO("%-24s %10.1f MiB analytic minimum per rank; the peak is %.2f x that", "peak_rss",
                 r->rss_min_mib, ratio);
    }

    o = mpq_run_assignment_json(r);
    MPQ_ENSURE(o, MPQ_ERR_NOMEM, "cannot allocate the JSON result");
    cJSON_AddStringToObject(o, "command", "run");
    cJSON_AddStringToObject(o, "model", cfg->model.path);
    cJSON_AddNumberToObject(o, "ranks", ctx->size);
    cJSON_AddItemToObject(o, "round", mpq_round_settings_json(&r->round_opts, r->round_method));
    cJSON_AddItemToObject(o, "fp", mpq_run_eval_json(&r->fp));
    cJSON_AddItemToObject(o, "quantized", mpq_run_eval_json(&r->quant));
    if (r->checkpoint)
        cJSON_AddStringToObject(o, "checkpoint", r->checkpoint);
    cJSON_AddItemToObject(o, "times", timers);
    timers = NULL;
    cJSON_AddItemToObject(o, "peak_rss_mib", rss);
    rss = NULL;
    mpq_cli_emit_json(ctx, cli, o);
    o = NULL;
cleanup:
    cJSON_Delete(o);
    cJSON_Delete(timers);
    cJSON_Delete(rss);
    mpq_run_result_destroy(&r);
    mpq_config_destroy(&cfg);
    return err;
}
