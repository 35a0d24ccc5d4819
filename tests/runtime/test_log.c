/* test_log.c: log levels, rank-0-only and all-ranks modes, progress lines
 * with rate and ETA, the JSON-lines event log and the timer report. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq_test.h"

static mpq_ctx *g_ctx;

typedef struct capture {
    int n;
    char lines[64][512];
    mpq_log_level levels[64];
} capture;

static void sink(void *ud, mpq_log_level level, const char *line) {
    capture *c = ud;
    if (c->n < 64) {
        snprintf(c->lines[c->n], sizeof c->lines[0], "%s", line);
        c->levels[c->n++] = level;
    }
}

static void test_levels(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    capture c = {0};
    mpq_log_set_sink(ctx, sink, &c);
    mpq_log_set_all_ranks(ctx, 0);
    mpq_log_set_level(ctx, MPQ_LOG_INFO);
    mpq_log(ctx, MPQ_LOG_ERROR, "e %d", 1);
    mpq_log(ctx, MPQ_LOG_WARN, "w");
    mpq_log(ctx, MPQ_LOG_INFO, "i");
    mpq_log(ctx, MPQ_LOG_DEBUG, "d");
    mpq_log(ctx, MPQ_LOG_TRACE, "t");
    if (ctx->rank == 0) {
        assert_int_equal(c.n, 3);
        assert_string_equal(c.lines[0], "error: e 1");
        assert_string_equal(c.lines[1], "warning: w");
        assert_string_equal(c.lines[2], "i");
    } else {
        assert_int_equal(c.n, 0); /* rank 0 only by default */
    }
    c.n = 0;
    mpq_log_set_level(ctx, MPQ_LOG_TRACE);
    mpq_log(ctx, MPQ_LOG_TRACE, "t");
    assert_int_equal(c.n, ctx->rank == 0 ? 1 : 0);
    c.n = 0;
    mpq_log_set_level(ctx, MPQ_LOG_ERROR);
    mpq_log(ctx, MPQ_LOG_WARN, "hidden");
    assert_int_equal(c.n, 0);

    /* All-ranks mode: every rank prints, with its [rank/size] prefix. */
    mpq_log_set_level(ctx, MPQ_LOG_INFO);
    mpq_log_set_all_ranks(ctx, 1);
    mpq_log(ctx, MPQ_LOG_INFO, "hello");
    char want[64];
    snprintf(want, sizeof want, "[%d/%d] hello", ctx->rank, ctx->size);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.lines[0], want);
    mpq_log_set_all_ranks(ctx, 0);
    c.n = 0;
    mpq_log_here(ctx, MPQ_LOG_INFO, "mine");
    snprintf(want, sizeof want, "[%d/%d] mine", ctx->rank, ctx->size);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.lines[0], want);

    mpq_log_level l;
    assert_int_equal(mpq_log_level_parse("DEBUG", &l), 0);
    assert_int_equal(l, MPQ_LOG_DEBUG);
    assert_int_equal(mpq_log_level_parse("verbose", &l), -1);
    mpq_log_set_sink(ctx, NULL, NULL);
}

static void test_progress(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    capture c = {0};
    mpq_log_set_sink(ctx, sink, &c);
    mpq_log_set_level(ctx, MPQ_LOG_INFO);
    mpq_progress p;
    mpq_progress_begin(ctx, &p, "calibration", "tokens", 1000);
    p.interval_s = 0.0; /* print on every update */
    mpq_progress_update(ctx, &p, 250);
    mpq_progress_end(ctx, &p);
    if (ctx->rank == 0) {
        assert_int_equal(c.n, 2);
        assert_non_null(strstr(c.lines[0], "calibration: 250/1000 tokens (25.0%)"));
        assert_non_null(strstr(c.lines[0], "tokens/s"));
        assert_non_null(strstr(c.lines[0], "ETA "));
        assert_non_null(strstr(c.lines[1], "calibration: 250 tokens done in"));
    }
    c.n = 0;
    p.interval_s = 3600.0; /* rate-limited: no line before the interval */
    mpq_progress_update(ctx, &p, 500);
    assert_int_equal(c.n, 0);
    /* A loop over two models says which one each line is for. */
    c.n = 0;
    p.interval_s = 0.0;
    mpq_progress_model(&p, "quantized model");
    mpq_progress_update(ctx, &p, 600);
    mpq_progress_model(&p, "full-precision reference");
    mpq_progress_update(ctx, &p, 700);
    mpq_progress_model(&p, NULL);
    mpq_progress_update(ctx, &p, 800);
    if (ctx->rank == 0) {
        assert_int_equal(c.n, 3);
        assert_non_null(strstr(c.lines[0], "calibration (quantized model): 600/1000 tokens"));
        assert_non_null(strstr(c.lines[1], "calibration (full-precision reference): 700/1000"));
        assert_non_null(strstr(c.lines[2], "calibration: 800/1000 tokens"));
    }
    mpq_log_set_sink(ctx, NULL, NULL);
}

/* Each line of the event log parses as a JSON object with the common
 * fields; the expected events are there in order. */
static void test_event_log_and_timers(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char path[256] = "";
    if (ctx->rank == 0) {
        snprintf(path, sizeof path, "/tmp/mpq-test-events-%d.jsonl", (int)getpid());
        unlink(path);
    }
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, ctx->comm);
    assert_int_equal(mpq_event_open(ctx, path), 0);
    capture c = {0};
    mpq_log_set_sink(ctx, sink, &c);
    MPQ_ASSERT_OK(ctx, mpq_timer_start(ctx, "stage_a"));
    mpq_progress p;
    mpq_progress_begin(ctx, &p, "work", "items", 10);
    p.interval_s = 0;
    mpq_progress_model(&p, "quantized model");
    mpq_progress_update(ctx, &p, 5);
    usleep(1000 * (useconds_t)(10 + 10 * ctx->rank)); /* ranks differ */
    MPQ_ASSERT_OK(ctx, mpq_timer_stop(ctx, "stage_a"));
    MPQ_WARN("disk %d%% full", 97); /* a warning event, whatever the level */
    cJSON *rep = NULL;
    MPQ_ASSERT_OK(ctx, mpq_timers_report(ctx, &rep));
    cJSON *a = cJSON_GetObjectItem(rep, "stage_a");
    assert_non_null(a);
    double mn = cJSON_GetObjectItem(a, "min")->valuedouble;
    double mean = cJSON_GetObjectItem(a, "mean")->valuedouble;
    double mx = cJSON_GetObjectItem(a, "max")->valuedouble;
    assert_true(mn > 0.005 && mn <= mean && mean <= mx);
    if (ctx->size > 1)
        assert_true(mx > mn);
    cJSON_Delete(rep);
    /* Stopping a timer that is not running is an error, not a crash. */
    assert_int_equal(mpq_timer_stop(ctx, "stage_a"), MPQ_ERR_INTERNAL);
    mpq_err_clear(ctx);
    mpq_event_close(ctx);
    mpq_log_set_sink(ctx, NULL, NULL);
    MPI_Barrier(ctx->comm);
    if (ctx->rank == 0) {
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        char line[8192];
        const char *want[] = {"stage_start", "progress", "stage_end", "warning", "timers"};
        int next = 0, n = 0;
        while (fgets(line, sizeof line, f)) {
            cJSON *ev = cJSON_Parse(line);
            if (!ev)
                fail_msg("event log line %d is not JSON: %s", n + 1, line);
            assert_true(cJSON_IsObject(ev));
            /* No key twice (a JSON reader keeps only one of them). */
            for (const cJSON *ka = ev->child; ka; ka = ka->next)
                for (const cJSON *kb = ka->next; kb; kb = kb->next)
                    if (strcmp(ka->string, kb->string) == 0)
                        fail_msg("event log line %d has key '%s' twice: %s", n + 1, ka->string,
                                 line);
            assert_true(cJSON_IsNumber(cJSON_GetObjectItem(ev, "time")));
            assert_true(cJSON_IsNumber(cJSON_GetObjectItem(ev, "elapsed_s")));
            assert_true(cJSON_IsNumber(cJSON_GetObjectItem(ev, "rank")));
            cJSON *type = cJSON_GetObjectItem(ev, "event");
            assert_true(cJSON_IsString(type));
            if (next < 5 && strcmp(type->valuestring, want[next]) == 0)
                next++;
            if (strcmp(type->valuestring, "progress") == 0) {
                assert_int_equal(cJSON_GetObjectItem(ev, "done")->valueint, 5);
                assert_true(cJSON_IsNumber(cJSON_GetObjectItem(ev, "eta_s")));
                assert_true(cJSON_IsNumber(cJSON_GetObjectItem(ev, "task_elapsed_s")));
                /* the model the line is for, beside "what" */
                cJSON *mo = cJSON_GetObjectItem(ev, "model");
                assert_true(cJSON_IsString(mo));
                assert_string_equal(mo->valuestring, "quantized model");
                assert_string_equal(cJSON_GetObjectItem(ev, "what")->valuestring, "work");
            }
            if (strcmp(type->valuestring, "warning") == 0) {
                cJSON *m = cJSON_GetObjectItem(ev, "message");
                assert_true(cJSON_IsString(m));
                assert_string_equal(m->valuestring, "disk 97% full");
            }
            cJSON_Delete(ev);
            n++;
        }
        fclose(f);
        unlink(path);
        assert_int_equal(next, 5);
    }
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_event_log_and_timers),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failed);
}
