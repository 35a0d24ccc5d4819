/* stage.c: the table of stage timers (mpq_timer.h). Every timer of the
 * driver, the stages and the commands is named here and nowhere else: the
 * --json "times", the timers' table in the log, the checkpoint's
 * stage_times and the events all take their names from it. */
#include <cjson/cJSON.h>

#include "mpq_ctx.h"
#include "mpq_timer.h"

static const struct {
    const char *name;
    int pipeline; /* 1: a pipeline stage (listed in the checkpoint's stage_times) */
} stages[MPQ_STAGE_COUNT] = {
    [MPQ_STAGE_LOAD] = {"load", 1},
    [MPQ_STAGE_CALIBRATE] = {"calibrate", 1},
    [MPQ_STAGE_HESSIAN] = {"hessian", 1},
    [MPQ_STAGE_MEASURE] = {"measure", 1},
    [MPQ_STAGE_IMPORTANCE] = {"importance", 1},
    [MPQ_STAGE_BUDGET] = {"budget", 1},
    [MPQ_STAGE_ROUND] = {"round", 1},
    [MPQ_STAGE_PROPAGATE] = {"propagate", 1},
    [MPQ_STAGE_EVAL] = {"eval", 1},
    [MPQ_STAGE_ASSEMBLE] = {"assemble", 1},
    [MPQ_STAGE_SWEEP_MEASURE] = {"measure_stage", 0},
    [MPQ_STAGE_TOTAL] = {"total", 0},
    [MPQ_STAGE_EVAL_LOAD] = {"eval_load", 0},
    [MPQ_STAGE_EVAL_TOKENIZE] = {"eval_tokenize", 0},
    [MPQ_STAGE_EVAL_FORWARD] = {"eval_forward", 0},
    [MPQ_STAGE_HESSIAN_ACCUMULATE] = {"hessian_accumulate", 0},
};

const char *mpq_stage_name(mpq_stage s) {
    return s >= 0 && s < MPQ_STAGE_COUNT && stages[s].name ? stages[s].name : "?";
}

mpq_err mpq_stage_start(mpq_ctx *ctx, mpq_stage s) {
    MPQ_CALL(mpq_timer_start(ctx, mpq_stage_name(s)));
    return MPQ_OK;
}

mpq_err mpq_stage_add(mpq_ctx *ctx, mpq_stage s, double seconds) {
    return mpq_timer_add(ctx, mpq_stage_name(s), seconds);
}

mpq_err mpq_stage_stop(mpq_ctx *ctx, mpq_stage s) {
    MPQ_CALL(mpq_timer_stop(ctx, mpq_stage_name(s)));
    return MPQ_OK;
}

cJSON *mpq_stage_times_json(const mpq_ctx *ctx) {
    cJSON *o = cJSON_CreateObject();
    for (int s = 0; o && s < MPQ_STAGE_COUNT; s++)
        if (stages[s].pipeline &&
            !cJSON_AddNumberToObject(o, stages[s].name, mpq_timer_seconds(ctx, stages[s].name))) {
            cJSON_Delete(o);
            return NULL;
        }
    return o;
}
