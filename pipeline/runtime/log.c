/* log.c: levelled logging, progress lines and the JSON-lines event log. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "mpq_ctx.h"
#include "mpq_infile.h"
#include "mpq_log.h"

static const char *const level_names[MPQ_LOG_LEVEL_COUNT] = {
    [MPQ_LOG_ERROR] = "error", [MPQ_LOG_WARN] = "warn",   [MPQ_LOG_INFO] = "info",
    [MPQ_LOG_DEBUG] = "debug", [MPQ_LOG_TRACE] = "trace",
};

int mpq_log_level_parse(const char *name, mpq_log_level *out) {
    for (int i = 0; i < MPQ_LOG_LEVEL_COUNT; i++)
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (mpq_log_level)i;
            return 0;
        }
    return -1;
}

const char *mpq_log_level_name(mpq_log_level level) {
    return (int)level >= 0 && level < MPQ_LOG_LEVEL_COUNT ? level_names[level] : "?";
}

void mpq_log_set_level(mpq_ctx *ctx, mpq_log_level level) {
    ctx->log_level = level;
}

void mpq_log_set_all_ranks(mpq_ctx *ctx, int all_ranks) {
    ctx->log_all_ranks = all_ranks;
}

void mpq_log_set_sink(mpq_ctx *ctx, mpq_log_sink sink, void *userdata) {
    ctx->log_sink = sink;
    ctx->log_userdata = userdata;
}

double mpq_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void emit(mpq_ctx *ctx, mpq_log_level level, int prefix_rank, const char *fmt, va_list ap) {
    char line[4096];
    size_t n = 0;
    if (prefix_rank)
        n = (size_t)snprintf(line, sizeof line, "[%d/%d] ", ctx->rank, ctx->size);
    if (level == MPQ_LOG_WARN)
        n += (size_t)snprintf(line + n, sizeof line - n, "warning: ");
    else if (level == MPQ_LOG_ERROR)
        n += (size_t)snprintf(line + n, sizeof line - n, "error: ");
    if (n < sizeof line)
        vsnprintf(line + n, sizeof line - n, fmt, ap);
    if (ctx->log_sink) {
        ctx->log_sink(ctx->log_userdata, level, line);
    } else {
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
    }
}

static void event_write(mpq_ctx *ctx, const char *type, cJSON *fields);

/* A warning also goes to the event log (open on rank 0 only), whatever the
 * log level, so that job monitors see it. */
static void warning_event(mpq_ctx *ctx, const char *fmt, va_list ap) {
    if (!ctx->event_file)
        return;
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    cJSON *f = cJSON_CreateObject();
    if (!f)
        return;
    cJSON_AddStringToObject(f, "message", msg);
    event_write(ctx, "warning", f);
}

void mpq_log(mpq_ctx *ctx, mpq_log_level level, const char *fmt, ...) {
    va_list ap;
    if (level == MPQ_LOG_WARN) {
        va_start(ap, fmt);
        warning_event(ctx, fmt, ap);
        va_end(ap);
    }
    if (level > ctx->log_level || (!ctx->log_all_ranks && ctx->rank != 0))
        return;
    va_start(ap, fmt);
    emit(ctx, level, ctx->log_all_ranks, fmt, ap);
    va_end(ap);
}

void mpq_log_here(mpq_ctx *ctx, mpq_log_level level, const char *fmt, ...) {
    va_list ap;
    if (level == MPQ_LOG_WARN) {
        va_start(ap, fmt);
        warning_event(ctx, fmt, ap);
        va_end(ap);
    }
    if (level > ctx->log_level)
        return;
    va_start(ap, fmt);
    emit(ctx, level, 1, fmt, ap);
    va_end(ap);
}

/* ---- event log ------------------------------------------------------------ */

mpq_err mpq_event_open(mpq_ctx *ctx, const char *path) {
    mpq_event_close(ctx);
    if (ctx->rank != 0)
        return MPQ_OK;
    struct stat pre;
    MPQ_CHECK(stat(path, &pre) != 0 || S_ISREG(pre.st_mode), MPQ_ERR_IO,
              "event log '%s' is %s, not a regular file; refusing to write to it", path,
              mpq_file_kind(pre.st_mode));
    /* O_NONBLOCK: a FIFO made meanwhile without a reader fails at once
     * (ENXIO) instead of blocking; one with a reader is refused below. */
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0666);
    MPQ_CHECK(fd >= 0, MPQ_ERR_IO, "event log '%s': cannot open for appending: %s", path,
              errno == ENXIO ? "it is a FIFO or a device without a reader" : strerror(errno));
    struct stat st = {0};
    int flags = fcntl(fd, F_GETFL);
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || flags < 0 ||
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int saved = errno;
        close(fd);
        if (S_ISREG(st.st_mode) || st.st_mode == 0)
            return MPQ_ERROR(MPQ_ERR_IO, "event log '%s': %s", path, strerror(saved));
        return MPQ_ERROR(MPQ_ERR_IO,
                         "event log '%s' is %s, not a regular file; refusing to write to it", path,
                         mpq_file_kind(st.st_mode));
    }
    ctx->event_file = fdopen(fd, "a");
    if (!ctx->event_file) {
        int saved = errno;
        close(fd);
        return MPQ_ERROR(MPQ_ERR_IO, "event log '%s': %s", path, strerror(saved));
    }
    return MPQ_OK;
}

void mpq_event_close(mpq_ctx *ctx) {
    if (ctx->event_file) {
        fclose(ctx->event_file);
        ctx->event_file = NULL;
    }
}

static void event_write(mpq_ctx *ctx, const char *type, cJSON *fields) {
    if (!ctx->event_file) {
        cJSON_Delete(fields);
        return;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    cJSON *ev = cJSON_CreateObject();
    if (!ev) {
        cJSON_Delete(fields);
        return;
    }
    cJSON_AddNumberToObject(ev, "time", (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec);
    cJSON_AddNumberToObject(ev, "elapsed_s", mpq_now() - ctx->t_created);
    cJSON_AddStringToObject(ev, "event", type);
    cJSON_AddNumberToObject(ev, "rank", ctx->rank);
    cJSON_AddNumberToObject(ev, "size", ctx->size);
    if (fields) {
        cJSON *item = fields->child;
        while (item) {
            cJSON *next = item->next;
            /* A field never duplicates an envelope key: it replaces it. */
            cJSON_DeleteItemFromObjectCaseSensitive(ev, item->string);
            cJSON_AddItemToObject(ev, item->string, cJSON_DetachItemViaPointer(fields, item));
            item = next;
        }
        cJSON_Delete(fields);
    }
    char *text = cJSON_PrintUnformatted(ev);
    if (text) {
        fprintf(ctx->event_file, "%s\n", text);
        fflush(ctx->event_file);
        cJSON_free(text);
    }
    cJSON_Delete(ev);
}

void mpq_event(mpq_ctx *ctx, const char *type, cJSON *fields) {
    if (ctx->rank != 0) {
        cJSON_Delete(fields);
        return;
    }
    event_write(ctx, type, fields);
}

void mpq_event_any_rank(mpq_ctx *ctx, const char *type, cJSON *fields) {
    event_write(ctx, type, fields);
}

/* ---- progress ------------------------------------------------------------- */

static void format_duration(double s, char *buf, size_t n) {
    if (s < 0 || s != s || s > 1e9) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%.1fs", s);
}

void mpq_progress_begin(mpq_ctx *ctx, mpq_progress *p, const char *what, const char *unit,
                        int64_t total) {
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->unit = unit ? unit : "items";
    p->total = total;
    p->t_start = p->t_last = mpq_now();
    p->interval_s = ctx->progress_interval;
}

static void progress_print(mpq_ctx *ctx, mpq_progress *p, int final) {
    double now = mpq_now(), el = now - p->t_start;
    double rate = el > 0 ? (double)(p->done - p->base) / el : 0.0;
    double eta = rate > 0 && p->total > 0 ? (double)(p->total - p->done) / rate : -1.0;
    char eta_s[32], el_s[32];
    format_duration(eta, eta_s, sizeof eta_s);
    format_duration(el, el_s, sizeof el_s);
    char what[160];
    if (p->model)
        snprintf(what, sizeof what, "%s (%s)", p->what, p->model);
    else
        snprintf(what, sizeof what, "%s", p->what);
    if (final)
        mpq_log(ctx, MPQ_LOG_INFO, "%s: %lld %s done in %s (%.4g %s/s)", what, (long long)p->done,
                p->unit, el_s, rate, p->unit);
    else
        mpq_log(ctx, MPQ_LOG_INFO, "%s: %lld/%lld %s (%.1f%%), %.4g %s/s, elapsed %s, ETA %s", what,
                (long long)p->done, (long long)p->total, p->unit,
                p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 0.0, rate, p->unit,
                el_s, eta_s);
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "what", p->what);
    if (p->model)
        cJSON_AddStringToObject(f, "model", p->model);
    cJSON_AddStringToObject(f, "unit", p->unit);
    cJSON_AddNumberToObject(f, "done", (double)p->done);
    cJSON_AddNumberToObject(f, "total", (double)p->total);
    cJSON_AddNumberToObject(f, "rate", rate);
    cJSON_AddNumberToObject(f, "task_elapsed_s", el); /* elapsed_s is the envelope's */
    if (eta >= 0 && !final)
        cJSON_AddNumberToObject(f, "eta_s", eta);
    mpq_event(ctx, final ? "progress_end" : "progress", f);
    p->t_last = now;
}

void mpq_progress_update(mpq_ctx *ctx, mpq_progress *p, int64_t done) {
    p->done = done;
    if (mpq_now() - p->t_last >= p->interval_s)
        progress_print(ctx, p, 0);
}

void mpq_progress_skip(mpq_ctx *ctx, mpq_progress *p, int64_t done) {
    (void)ctx;
    p->done = p->base = done;
    p->t_start = p->t_last = mpq_now();
}

void mpq_progress_model(mpq_progress *p, const char *model) {
    p->model = model;
}

void mpq_progress_end(mpq_ctx *ctx, mpq_progress *p) {
    progress_print(ctx, p, 1);
}
