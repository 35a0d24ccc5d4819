/* cmd_sweep.c: `mpquant sweep CONFIG [--stage S] [--index I] [--count N]`:
 * the scaling study of mpq_sweep.h, in one job (no --stage) or in the
 * stages of a Slurm job array (slurm/sweep.sbatch):
 *   --stage measure        calibrate, measure, evaluate full precision;
 *                          writes OUT/measure.h5 and OUT/points/fp.json
 *   --stage point --index I [--count N]
 *                          loads OUT/measure.h5, runs points I .. I+N-1,
 *                          writes OUT/points/point-NNNN.json
 *   --stage merge          reads the point files, writes OUT/report.*
 *   --stage plan           prints the number of points (for --array)
 * (OUT = sweep.output_dir). The single job runs measure, every point and
 * merge in one process group, without reloading the measurement.
 * --json carries the figures, not only the file names: "report" (what
 * report.json holds: reference, points, Pareto front) after a merge,
 * "results" (the points run) from --stage=point, "reference" (the
 * full-precision row) from --stage=measure. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "mpq_coll.h"
#include "mpq_cli.h"
#include "mpq_log.h"
#include "mpq_session.h"
#include "mpq_sweep.h"
#include "mpq_timer.h"

/* Rank 0 creates dir and dir/points (the parent must exist); all agree. */
static mpq_err make_dirs(mpq_ctx *ctx, const char *dir) {
    mpq_err err = MPQ_OK;
    if (ctx->rank == 0) {
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/points", dir);
        if (mkdir(dir, 0777) != 0 && errno != EEXIST)
            err = MPQ_ERROR(MPQ_ERR_IO, "sweep.output_dir: cannot create '%s': %s", dir,
                            strerror(errno));
        else if (mkdir(sub, 0777) != 0 && errno != EEXIST)
            err = MPQ_ERROR(MPQ_ERR_IO, "sweep.output_dir: cannot create '%s': %s", sub,
                            strerror(errno));
    }
    MPQ_CALL(mpq_agree(ctx, err));
    return MPQ_OK;
}

/* results (may be NULL): each point's JSON object is appended (rank 0). */
static mpq_err run_points(mpq_ctx *ctx, mpq_sweep *sw, const char *dir, int64_t first,
                          int64_t count, cJSON *results) {
    mpq_progress prog;
    mpq_progress_begin(ctx, &prog, "sweep points", "points", count);
    for (int64_t i = first; i < first + count; i++) {
        mpq_sweep_point pt;
        char path[4096];
        MPQ_CALL(mpq_sweep_run_point(ctx, sw, i, &pt));
        snprintf(path, sizeof path, "%s/points/point-%04lld.json", dir, (long long)i);
        MPQ_CALL(mpq_sweep_point_write(ctx, &pt, path));
        if (results && ctx->rank == 0)
            cJSON_AddItemToArray(results, mpq_sweep_point_to_json(&pt));
        mpq_progress_update(ctx, &prog, i - first + 1);
    }
    mpq_progress_end(ctx, &prog);
    return MPQ_OK;
}

static mpq_err measure_stage(mpq_ctx *ctx, mpq_sweep *sw, const char *dir) {
    char path[4096];
    MPQ_CALL(mpq_stage_start(ctx, MPQ_STAGE_SWEEP_MEASURE));
    MPQ_CALL(mpq_sweep_measure(ctx, sw));
    snprintf(path, sizeof path, "%s/measure.h5", dir);
    MPQ_CALL(mpq_sweep_save(ctx, sw, path));
    snprintf(path, sizeof path, "%s/points/fp.json", dir);
    MPQ_CALL(mpq_sweep_point_write(ctx, mpq_sweep_reference(sw), path));
    MPQ_CALL(mpq_stage_stop(ctx, MPQ_STAGE_SWEEP_MEASURE));
    return MPQ_OK;
}

mpq_err mpq_cmd_sweep(mpq_ctx *ctx, const mpq_cli *cli) {
    mpq_err err = MPQ_OK;
    mpq_config *cfg = NULL;
    mpq_sweep *sw = NULL;
    cJSON *o = NULL, *timers = NULL, *rss = NULL, *report = NULL;
    MPQ_CHECK(cli->npos == 1, MPQ_ERR_ARG, "sweep: expected one configuration file");
    const char *stage = mpq_cli_opt(cli, "stage");
    if (!stage || !stage[0])
        stage = "all";
    int all = strcmp(stage, "all") == 0, measure = strcmp(stage, "measure") == 0,
        point = strcmp(stage, "point") == 0, merge = strcmp(stage, "merge") == 0,
        plan = strcmp(stage, "plan") == 0;
    MPQ_CHECK(all || measure || point || merge || plan, MPQ_ERR_ARG,
              "sweep: --stage=%s: expected measure, point, merge or plan (or no --stage for the "
              "whole sweep in one job)",
              stage);
    MPQ_CHECK(point || (!mpq_cli_opt(cli, "index") && !mpq_cli_opt(cli, "count")), MPQ_ERR_ARG,
              "sweep: --index and --count go with --stage=point");
    MPQ_CALL(mpq_cli_load_config(ctx, cli, cli->pos[0], &cfg));
    const char *dir = mpq_sweep_output_dir(cfg);
    int64_t npoints = 0;
    MPQ_TRY(mpq_sweep_plan_count(ctx, cfg, &npoints));
    o = cJSON_CreateObject();
    MPQ_ENSURE(o, MPQ_ERR_NOMEM, "cannot allocate the JSON result");
    cJSON_AddStringToObject(o, "command", "sweep");
    cJSON_AddStringToObject(o, "stage", stage);
    cJSON_AddNumberToObject(o, "points", (double)npoints);
    cJSON_AddStringToObject(o, "output_dir", dir);
    if (plan) {
        if (ctx->rank == 0 && !cli->json) {
            printf("%lld\n", (long long)npoints);
            fflush(stdout);
        }
    } else if (merge) {
        MPQ_TRY(mpq_sweep_merge(ctx, cfg, npoints, &report));
    } else {
        int64_t first = 0, count = npoints;
        if (point) {
            MPQ_ENSURE(mpq_cli_opt(cli, "index"), MPQ_ERR_ARG,
                       "sweep --stage=point: --index=I is required (0 .. %lld)",
                       (long long)npoints - 1);
            MPQ_TRY(mpq_cli_opt_int(ctx, cli, "index", 0, 0, npoints - 1, &first));
            MPQ_TRY(mpq_cli_opt_int(ctx, cli, "count", 1, 1, npoints, &count));
            if (first + count > npoints)
                count = npoints - first; /* the last group of an array may be short */
        }
        MPQ_TRY(make_dirs(ctx, dir));
        MPQ_TRY(mpq_sweep_create(ctx, cfg, !point, &sw));
        if (point) {
            char path[4096];
            snprintf(path, sizeof path, "%s/measure.h5", dir);
            MPQ_TRY(mpq_sweep_load(ctx, sw, path));
        } else {
            MPQ_TRY(measure_stage(ctx, sw, dir));
        }
        if (measure)
            cJSON_AddItemToObject(o, "reference", mpq_sweep_point_to_json(mpq_sweep_reference(sw)));
        if (!measure)
            MPQ_TRY(run_points(ctx, sw, dir, first, count,
                               point ? cJSON_AddArrayToObject(o, "results") : NULL));
        if (point) {
            cJSON_AddNumberToObject(o, "first", (double)first);
            cJSON_AddNumberToObject(o, "count", (double)count);
        }
        if (all)
            MPQ_TRY(mpq_sweep_merge(ctx, cfg, npoints, &report));
    }
    if (report) {
        cJSON_AddItemToObject(o, "report", report);
        report = NULL;
    }
    /* Every stage that works ends with its timers and the ranks' peak
     * memory: in a job array each task's log says what that task needed.
     * The plan is a query whose answer scripts read: nothing else. */
    if (!plan) {
        MPQ_TRY(mpq_timers_report(ctx, &timers));
        MPQ_TRY(mpq_peak_rss_report(ctx, &rss));
        cJSON_AddItemToObject(o, "times", timers);
        timers = NULL;
        cJSON_AddItemToObject(o, "peak_rss_mib", rss);
        rss = NULL;
    }
    mpq_cli_emit_json(ctx, cli, o);
    o = NULL;
cleanup:
    cJSON_Delete(report);
    cJSON_Delete(rss);
    cJSON_Delete(timers);
    cJSON_Delete(o);
    mpq_sweep_destroy(&sw);
    mpq_config_destroy(&cfg);
    return err;
}
