/* sweep_report.c: the sweep's rows as JSON files, the Pareto front, the
 * report files (CSV, JSON, Markdown, gnuplot PNG) and the merge of the
 * per-point files that the single job and the Slurm job array both use. */
#define _GNU_SOURCE /* environ (unistd.h), for gnuplot's environment */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mpq_coll.h"
#include "mpq_infile.h"
#include "mpq_log.h"
#include "mpq_outfile.h"
#include "sweep_internal.h"

/* ---- a point as JSON --------------------------------------------------------------- */

static void num_or_null(cJSON *o, const char *key, int have, double v) {
    if (have)
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

cJSON *mpq_sweep_point_to_json(const mpq_sweep_point *pt) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "index", (double)pt->index);
    cJSON_AddStringToObject(o, "kind", pt->kind);
    cJSON_AddStringToObject(o, "label", pt->label);
    cJSON_AddStringToObject(o, "method", pt->method);
    cJSON_AddStringToObject(o, "family", pt->family);
    cJSON_AddStringToObject(o, "spec", pt->spec);
    cJSON_AddNumberToObject(o, "budget", pt->budget);
    /* An infeasible point was not built: what it would have measured is
     * null, not a number a reader could take for a result. */
    const int m = !pt->infeasible;
    num_or_null(o, "bits", m, (double)pt->bits);
    cJSON_AddNumberToObject(o, "weights", (double)pt->weights);
    num_or_null(o, "bpw", m, pt->bpw);
    num_or_null(o, "size_bytes", m, (double)pt->size_bytes);
    cJSON_AddStringToObject(o, "metric", pt->metric);
    num_or_null(o, "value", m, pt->value);
    cJSON_AddNumberToObject(o, "reference", pt->reference);
    num_or_null(o, "rel_change", m, pt->rel_change);
    num_or_null(o, "kld", m, pt->kld);
    num_or_null(o, "agreement", m, pt->agreement);
    cJSON_AddBoolToObject(o, "pareto", pt->pareto);
    cJSON_AddNumberToObject(o, "seconds", pt->seconds);
    cJSON_AddStringToObject(o, "status", pt->infeasible ? "infeasible" : "ok");
    if (pt->infeasible) {
        cJSON *r = cJSON_AddArrayToObject(o, "achievable_bpw");
        if (r) {
            cJSON_AddItemToArray(r, cJSON_CreateNumber(pt->min_bpw));
            cJSON_AddItemToArray(r, cJSON_CreateNumber(pt->max_bpw));
        }
    }
    return o;
}

static mpq_err get_num(mpq_ctx *ctx, const cJSON *o, const char *src, const char *key, double *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    MPQ_CHECK(cJSON_IsNumber(x), MPQ_ERR_FORMAT, "%s: field '%s' is missing or not a number", src,
              key);
    *v = x->valuedouble;
    return MPQ_OK;
}

static mpq_err get_int(mpq_ctx *ctx, const cJSON *o, const char *src, const char *key, int64_t *v) {
    double d = 0.0;
    MPQ_CALL(get_num(ctx, o, src, key, &d));
    MPQ_CHECK(d == floor(d) && fabs(d) < 9e15, MPQ_ERR_FORMAT,
              "%s: field '%s' (%g) is not an integer", src, key, d);
    *v = (int64_t)d;
    return MPQ_OK;
}

static mpq_err get_str(mpq_ctx *ctx, const cJSON *o, const char *src, const char *key, char *buf,
                       size_t len) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    MPQ_CHECK(cJSON_IsString(x), MPQ_ERR_FORMAT, "%s: field '%s' is missing or not a string", src,
              key);
    MPQ_CHECK(strlen(x->valuestring) < len, MPQ_ERR_FORMAT, "%s: field '%s' is too long", src, key);
    snprintf(buf, len, "%s", x->valuestring);
    return MPQ_OK;
}

mpq_err mpq_sweep_point_from_json(mpq_ctx *ctx, const cJSON *o, const char *src,
                                  mpq_sweep_point *pt) {
    memset(pt, 0, sizeof *pt);
    MPQ_CHECK(cJSON_IsObject(o), MPQ_ERR_FORMAT, "%s: not a JSON object", src);
    MPQ_CALL(get_int(ctx, o, src, "index", &pt->index));
    MPQ_CALL(get_str(ctx, o, src, "kind", pt->kind, sizeof pt->kind));
    MPQ_CALL(get_str(ctx, o, src, "label", pt->label, sizeof pt->label));
    MPQ_CALL(get_str(ctx, o, src, "method", pt->method, sizeof pt->method));
    MPQ_CALL(get_str(ctx, o, src, "family", pt->family, sizeof pt->family));
    MPQ_CALL(get_str(ctx, o, src, "spec", pt->spec, sizeof pt->spec));
    MPQ_CALL(get_num(ctx, o, src, "budget", &pt->budget));
    /* "status" came with infeasible points; a point file without it
     * (written before) is an evaluated point. */
    char status[16] = "ok";
    if (cJSON_GetObjectItemCaseSensitive(o, "status"))
        MPQ_CALL(get_str(ctx, o, src, "status", status, sizeof status));
    MPQ_CHECK(strcmp(status, "ok") == 0 || strcmp(status, "infeasible") == 0, MPQ_ERR_FORMAT,
              "%s: field 'status': '%s' is not ok or infeasible", src, status);
    pt->infeasible = strcmp(status, "infeasible") == 0;
    const int m = !pt->infeasible; /* the measured fields are null when infeasible */
    MPQ_CALL(get_int(ctx, o, src, "weights", &pt->weights));
    MPQ_CALL(get_str(ctx, o, src, "metric", pt->metric, sizeof pt->metric));
    MPQ_CALL(get_num(ctx, o, src, "reference", &pt->reference));
    MPQ_CALL(get_num(ctx, o, src, "seconds", &pt->seconds));
    if (m) {
        MPQ_CALL(get_int(ctx, o, src, "bits", &pt->bits));
        MPQ_CALL(get_num(ctx, o, src, "bpw", &pt->bpw));
        MPQ_CALL(get_int(ctx, o, src, "size_bytes", &pt->size_bytes));
        MPQ_CALL(get_num(ctx, o, src, "value", &pt->value));
        MPQ_CALL(get_num(ctx, o, src, "rel_change", &pt->rel_change));
        MPQ_CALL(get_num(ctx, o, src, "kld", &pt->kld));
        MPQ_CALL(get_num(ctx, o, src, "agreement", &pt->agreement));
    } else {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "achievable_bpw");
        MPQ_CHECK(cJSON_IsArray(r) && cJSON_GetArraySize(r) == 2 &&
                      cJSON_IsNumber(cJSON_GetArrayItem(r, 0)) &&
                      cJSON_IsNumber(cJSON_GetArrayItem(r, 1)),
                  MPQ_ERR_FORMAT,
                  "%s: field 'achievable_bpw' of an infeasible point is missing or not "
                  "[min, max]",
                  src);
        pt->min_bpw = cJSON_GetArrayItem(r, 0)->valuedouble;
        pt->max_bpw = cJSON_GetArrayItem(r, 1)->valuedouble;
    }
    static const char *const kinds[] = {"fp", "budget", "uniform", "compare"};
    int ok = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        ok |= strcmp(pt->kind, kinds[i]) == 0;
    MPQ_CHECK(ok, MPQ_ERR_FORMAT, "%s: field 'kind': '%s' is not fp, budget, uniform or compare",
              src, pt->kind);
    MPQ_CHECK(m || strcmp(pt->kind, "budget") == 0, MPQ_ERR_FORMAT,
              "%s: field 'status': only a budget point can be infeasible (kind '%s')", src,
              pt->kind);
    MPQ_CHECK((!m || pt->size_bytes > 0) && pt->bits >= 0 && pt->weights >= 0, MPQ_ERR_FORMAT,
              "%s: fields 'size_bytes', 'bits', 'weights' must be positive", src);
    return MPQ_OK;
}

/* Writes text to path atomically (local). */
static mpq_err write_text(mpq_ctx *ctx, const char *path, const char *text) {
    mpq_err err = MPQ_OK;
    mpq_outfile_opts oo = {0};
    mpq_outfile *of = NULL;
    oo.overwrite = 1;
    MPQ_TRY(mpq_outfile_open(ctx, path, &oo, &of));
    MPQ_TRY(mpq_outfile_write(ctx, of, text, strlen(text)));
    MPQ_TRY(mpq_outfile_commit(ctx, &of));
cleanup:
    mpq_outfile_abort(&of);
    return err;
}

mpq_err mpq_sweep_point_write(mpq_ctx *ctx, const mpq_sweep_point *pt, const char *path) {
    mpq_err err = MPQ_OK;
    if (ctx->rank == 0) {
        cJSON *o = mpq_sweep_point_to_json(pt);
        char *t = o ? cJSON_Print(o) : NULL;
        cJSON_Delete(o);
        if (!t)
            err = MPQ_ERROR(MPQ_ERR_NOMEM, "%s: cannot format the point", path);
        else
            err = write_text(ctx, path, t);
        cJSON_free(t);
    }
    MPQ_CALL(mpq_agree(ctx, err));
    return MPQ_OK;
}

/* ---- the Pareto front ---------------------------------------------------------- */

typedef struct pareto_item {
    double size, quality;
    int64_t i;
} pareto_item;

static int pareto_cmp(const void *a, const void *b) {
    const pareto_item *x = a, *y = b;
    if (x->size != y->size)
        return x->size < y->size ? -1 : 1;
    if (x->quality != y->quality)
        return x->quality < y->quality ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

mpq_err mpq_sweep_pareto(mpq_ctx *ctx, int64_t n, const double *size, const double *quality,
                         uint8_t *front) {
    pareto_item *it = NULL;
    int64_t m = 0;
    MPQ_ALLOC(it, n > 0 ? n : 1);
    for (int64_t i = 0; i < n; i++) {
        front[i] = 0;
        if (isnan(size[i]) || isnan(quality[i]))
            continue;
        it[m].size = size[i];
        it[m].quality = quality[i];
        it[m++].i = i;
    }
    qsort(it, (size_t)m, sizeof *it, pareto_cmp);
    /* Walk groups of equal size in increasing size: a point is on the front
     * when its quality beats (strictly) every point of smaller size, and
     * equals the best of its own size group. */
    double best = INFINITY; /* best quality among strictly smaller sizes */
    for (int64_t g = 0; g < m;) {
        int64_t h = g;
        while (h < m && it[h].size == it[g].size)
            h++;
        double gbest = it[g].quality; /* sorted: first of the group is its best */
        for (int64_t k = g; k < h; k++)
            front[it[k].i] = it[k].quality < best && it[k].quality <= gbest;
        if (gbest < best)
            best = gbest;
        g = h;
    }
    mpq_free(it);
    return MPQ_OK;
}

/* ---- the report files ------------------------------------------------------------- */

/* Shortest "%.Ng" text that reads back as exactly v. */
static void fmt_exact(char *buf, size_t len, double v) {
    snprintf(buf, len, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, len, "%.17g", v);
}

/* A growable text buffer. */
typedef struct sbuf {
    char *s;
    size_t n, cap;
    int failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->failed = 1;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = (b->cap ? 2 * b->cap : 4096) + (size_t)k;
        char *t = realloc(b->s, cap);
        if (!t) {
            b->failed = 1;
            return;
        }
        b->s = t;
        b->cap = cap;
    }
}

/* A CSV field in double quotes (quotes doubled). */
static void sb_csv_str(sbuf *b, const char *s) {
    sb_printf(b, "\"");
    for (; *s; s++)
        sb_printf(b, *s == '"' ? "\"\"" : "%c", *s);
    sb_printf(b, "\"");
}

static void sb_csv_num(sbuf *b, double v) {
    char t[40];
    fmt_exact(t, sizeof t, v);
    sb_printf(b, "%s", t);
}

#define CSV_HEADER                                                                                 \
    "index,kind,label,method,family,spec,budget,bits,weights,bpw,size_bytes,metric,value,"         \
    "reference,rel_change,kld,agreement,pareto,seconds,status\n"

/* An infeasible row leaves what was not measured empty (bits, bpw,
 * size_bytes, value, rel_change, kld, agreement) and says "infeasible" in
 * the last column, "status"; every other row says "ok". */
static void csv_row(sbuf *b, const mpq_sweep_point *p) {
    const int m = !p->infeasible;
    sb_printf(b, "%lld,", (long long)p->index);
    const char *strs[] = {p->kind, p->label, p->method, p->family, p->spec};
    for (size_t i = 0; i < 5; i++) {
        sb_csv_str(b, strs[i]);
        sb_printf(b, ",");
    }
    sb_csv_num(b, p->budget);
    if (m)
        sb_printf(b, ",%lld", (long long)p->bits);
    else
        sb_printf(b, ",");
    sb_printf(b, ",%lld,", (long long)p->weights);
    if (m) {
        sb_csv_num(b, p->bpw);
        sb_printf(b, ",%lld,", (long long)p->size_bytes);
    } else {
        sb_printf(b, ",,");
    }
    sb_csv_str(b, p->metric);
    const double nums[] = {p->value, p->reference, p->rel_change, p->kld, p->agreement};
    for (size_t i = 0; i < 5; i++) {
        sb_printf(b, ",");
        if (m || i == 1)
            sb_csv_num(b, nums[i]);
    }
    sb_printf(b, ",%d,%.3f,%s\n", p->pareto, p->seconds, m ? "ok" : "infeasible");
}

/* Markdown: a '|' inside a cell would split it. */
static void sb_md_str(sbuf *b, const char *s) {
    for (; *s; s++)
        sb_printf(b, *s == '|' ? "\\|" : "%c", *s);
}

static void md_row(sbuf *b, const mpq_sweep_point *p, int lm) {
    if (p->index < 0)
        sb_printf(b, "| - | ");
    else
        sb_printf(b, "| %lld | ", (long long)p->index);
    sb_printf(b, "%s | ", p->kind);
    sb_md_str(b, p->label);
    if (p->infeasible) {
        /* Not built: the note under the table gives the achievable range. */
        sb_printf(b, " | %s | %s | infeasible | - | - | - | %s- | | %.2f |\n", p->method, p->family,
                  lm ? "- | " : "", p->seconds);
        return;
    }
    sb_printf(b, " | %s | %s | %.4f | %lld | %.4f | %+.2f%% | ", p->method, p->family, p->bpw,
              (long long)p->size_bytes, p->value, 100.0 * p->rel_change);
    if (lm)
        sb_printf(b, "%.5f | ", p->kld);
    sb_printf(b, "%.4f | %s | %.2f |\n", p->agreement, p->pareto ? "yes" : "", p->seconds);
}

/* A short name for the plot's labels: "int4 g32", "nf4 g64 rtn", "2.5 bpw". */
static void short_label(const mpq_sweep_point *p, const char *main_method, char *buf, size_t len) {
    if (strcmp(p->kind, "fp") == 0) {
        snprintf(buf, len, "fp32");
        return;
    }
    if (strcmp(p->kind, "budget") == 0) {
        snprintf(buf, len, "%g bpw", p->budget);
        return;
    }
    const char *b = strstr(p->spec, "bits="), *g = strstr(p->spec, "group=");
    char bits[8] = "", grp[24] = "";
    if (b)
        snprintf(bits, sizeof bits, "%d", atoi(b + 5));
    if (g && atoi(g + 6) > 0)
        snprintf(grp, sizeof grp, " g%d", atoi(g + 6));
    snprintf(buf, len, "%s%s%s%s%s", p->family, bits, grp,
             strcmp(p->method, main_method) != 0 ? " " : "",
             strcmp(p->method, main_method) != 0 ? p->method : "");
}

static mpq_err run_gnuplot(mpq_ctx *ctx, const char *script) {
    pid_t pid;
    char *argv[] = {"gnuplot", (char *)script, NULL};
    int rc = posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ);
    MPQ_CHECK(rc == 0, MPQ_ERR_IO,
              "sweep.plot: cannot start gnuplot (%s); install the Debian package gnuplot-nox or "
              "set sweep.plot = false",
              strerror(rc));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        MPQ_CHECK(errno == EINTR, MPQ_ERR_IO, "sweep.plot: waiting for gnuplot: %s",
                  strerror(errno));
    }
    MPQ_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, MPQ_ERR_IO,
              "sweep.plot: gnuplot %s failed (status %d); see its messages above", script,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return MPQ_OK;
}

static mpq_err write_plot(mpq_ctx *ctx, const char *dir, const char *title,
                          const mpq_sweep_point *all, int64_t n, const sweep_metric *metric) {
    mpq_err err = MPQ_OK;
    sbuf dat = {0}, gp = {0};
    int64_t *ord = NULL;
    char path[4096], png[4096], gpath[4096];
    MPQ_CHECK(!strchr(dir, '\'') && !strchr(dir, '"'), MPQ_ERR_CONFIG,
              "sweep.output_dir: '%s': the plot needs a directory name without quotes", dir);
    snprintf(path, sizeof path, "%s/report-plot.dat", dir);
    snprintf(png, sizeof png, "%s/report.png", dir);
    snprintf(gpath, sizeof gpath, "%s/report.gp", dir);
    /* Blocks (separated by two blank lines): one per kind that has a
     * plotted point, then the front sorted by size. Columns: size (KiB),
     * value, "label". An empty block would not count as one (gnuplot
     * reads the run of blank lines as one separator), so only kinds with
     * points get a block, and block[k] is the index gnuplot sees. */
    static const char *const kinds[] = {"fp", "budget", "uniform", "compare"};
    static const char *const titles[] = {"full precision", "mixed precision (budget)", "uniform",
                                         "method/family comparison"};
    static const int ptype[] = {5, 7, 9, 13};
    int used[4] = {0}, block[4] = {0}, nblock = 0;
    const char *main_method = "";
    for (int64_t i = 0; i < n; i++)
        if (strcmp(all[i].kind, "budget") == 0 || strcmp(all[i].kind, "uniform") == 0)
            main_method = all[i].method;
    char lab[64];
    for (int k = 0; k < 4; k++) {
        for (int64_t i = 0; i < n; i++) {
            if (strcmp(all[i].kind, kinds[k]) != 0 || all[i].infeasible)
                continue;
            short_label(&all[i], main_method, lab, sizeof lab);
            sb_printf(&dat, "%.6f %.10g \"%s\"\n", (double)all[i].size_bytes / 1024.0, all[i].value,
                      lab);
            used[k] = 1;
        }
        if (used[k]) {
            block[k] = nblock++;
            sb_printf(&dat, "\n\n");
        }
    }
    MPQ_ALLOC_TRY(ord, n > 0 ? n : 1);
    int64_t nf = 0;
    for (int64_t i = 0; i < n; i++)
        if (all[i].pareto)
            ord[nf++] = i;
    for (int64_t a = 1; a < nf; a++) /* insertion sort by size: a handful of points */
        for (int64_t b = a; b > 0 && all[ord[b]].size_bytes < all[ord[b - 1]].size_bytes; b--) {
            int64_t t = ord[b];
            ord[b] = ord[b - 1];
            ord[b - 1] = t;
        }
    for (int64_t a = 0; a < nf; a++) {
        short_label(&all[ord[a]], main_method, lab, sizeof lab);
        sb_printf(&dat, "%.6f %.10g \"%s\"\n", (double)all[ord[a]].size_bytes / 1024.0,
                  all[ord[a]].value, lab);
    }
    sb_printf(&gp,
              "# Written by mpquant sweep: quality against model size, Pareto front.\n"
              "set terminal pngcairo size 900,600 font 'sans,10'\n"
              "set output '%s'\n",
              png);
    sb_printf(&gp, "set title \"");
    for (const char *s = title; *s; s++)
        sb_printf(&gp, (*s == '"' || *s == '\\') ? "\\%c" : "%c", *s);
    sb_printf(&gp,
              "\"\n"
              "set xlabel 'model size (KiB, log scale)'\n"
              "set ylabel '%s (%s is better)'\n"
              "set logscale x\n%sset grid\nset key outside bottom center horizontal\n"
              /* axes end at the data (not at the next decade), plus a margin */
              "set autoscale fix\n"
              "set offsets graph 0.08, graph 0.08, graph 0.08, graph 0.08\n",
              all[0].metric, metric && metric->higher_better ? "higher" : "lower",
              metric && metric->log_axis ? "set logscale y\n" : "");
    sb_printf(&gp, "plot ");
    const char *sep = "";
    for (int k = 0; k < 4; k++) {
        if (!used[k])
            continue;
        sb_printf(&gp, "%s'%s' index %d using 1:2 with points pt %d ps 1.4 title '%s'", sep, path,
                  block[k], ptype[k], titles[k]);
        sep = ", \\\n     ";
    }
    if (nf > 0)
        sb_printf(&gp,
                  "%s'%s' index %d using 1:2 with lines lw 2 lc rgb '#d62728' title 'Pareto "
                  "front', \\\n     '%s' index %d using 1:2:3 with labels offset 0.6,0.8 left "
                  "font ',8' notitle",
                  sep, path, nblock, path, nblock);
    sb_printf(&gp, "\n");
    MPQ_ENSURE(!dat.failed && !gp.failed, MPQ_ERR_NOMEM, "cannot format the plot");
    MPQ_TRY(write_text(ctx, path, dat.s));
    MPQ_TRY(write_text(ctx, gpath, gp.s));
    MPQ_TRY(run_gnuplot(ctx, gpath));
cleanup:
    mpq_free(ord);
    free(dat.s);
    free(gp.s);
    return err;
}

mpq_err mpq_sweep_report_write(mpq_ctx *ctx, const char *dir, const char *title,
                               const mpq_sweep_point *ref, int64_t n, mpq_sweep_point *pts,
                               int plot) {
    mpq_err err = MPQ_OK;
    mpq_sweep_point *all = NULL;
    double *sz = NULL, *qu = NULL;
    uint8_t *front = NULL;
    sbuf csv = {0}, md = {0};
    cJSON *o = NULL;
    char *jt = NULL, path[4096];
    const sweep_metric *metric = mpq_sweep_metric_find(ref->metric);
    const int higher = metric && metric->higher_better;
    int64_t first = 0; /* the first evaluated point (infeasible ones have no KLD) */
    while (first < n && pts[first].infeasible)
        first++;
    /* The KLD column: for a language model's metric; for one that also
     * applies to classifiers (agreement) only when the points have a KLD. */
    const int lm =
        !metric ||
        (metric->lm && !(metric->cls && ref->kld == 0.0 && first < n && pts[first].kld == 0.0));
    MPQ_ALLOC_TRY(all, n + 1);
    MPQ_ALLOC_TRY(sz, n + 1);
    MPQ_ALLOC_TRY(qu, n + 1);
    MPQ_ALLOC_TRY(front, n + 1);
    all[0] = *ref;
    for (int64_t i = 0; i < n; i++)
        all[i + 1] = pts[i];
    for (int64_t i = 0; i <= n; i++) {
        MPQ_ENSURE(strcmp(all[i].metric, ref->metric) == 0, MPQ_ERR_FORMAT,
                   "sweep report: point %lld has metric '%s', the reference '%s'",
                   (long long)all[i].index, all[i].metric, ref->metric);
        /* NaN: an infeasible point is never on the front and dominates none. */
        sz[i] = all[i].infeasible ? NAN : (double)all[i].size_bytes;
        qu[i] = all[i].infeasible ? NAN : higher ? -all[i].value : all[i].value;
    }
    MPQ_TRY(mpq_sweep_pareto(ctx, n + 1, sz, qu, front));
    for (int64_t i = 0; i <= n; i++)
        all[i].pareto = front[i];
    for (int64_t i = 0; i < n; i++)
        pts[i].pareto = front[i + 1];

    sb_printf(&csv, CSV_HEADER);
    for (int64_t i = 0; i <= n; i++)
        csv_row(&csv, &all[i]);

    sb_printf(&md, "## %s\n\n", title);
    sb_printf(&md,
              "Quality metric: %s (%s is better); sizes: quantized layers at their exact "
              "storage, every other tensor at fp32.\n\n",
              ref->metric, higher ? "higher" : "lower");
    sb_printf(&md,
              "| # | kind | setting | method | family | bits/weight | size (bytes) | %s | "
              "change |%s agreement | Pareto | time (s) |\n",
              ref->metric, lm ? " KLD |" : "");
    sb_printf(&md, "|---|---|---|---|---|---:|---:|---:|---:|%s---:|---|---:|\n",
              lm ? "---:|" : "");
    for (int64_t i = 0; i <= n; i++)
        md_row(&md, &all[i], lm);
    int64_t nskip = 0;
    for (int64_t i = 1; i <= n; i++)
        nskip += all[i].infeasible;
    if (nskip > 0)
        sb_printf(&md, "\nInfeasible budgets (skipped: not evaluated, not plotted, not on the "
                       "Pareto front):\n\n");
    for (int64_t i = 1; i <= n; i++)
        if (all[i].infeasible)
            sb_printf(&md,
                      "- point %lld: %g bits per weight is below what quant.candidates reach "
                      "(%.4f .. %.4f bits per weight)\n",
                      (long long)all[i].index, all[i].budget, all[i].min_bpw, all[i].max_bpw);

    o = cJSON_CreateObject();
    MPQ_ENSURE(o, MPQ_ERR_NOMEM, "cannot allocate the JSON report");
    cJSON_AddStringToObject(o, "title", title);
    cJSON_AddStringToObject(o, "metric", ref->metric);
    cJSON_AddBoolToObject(o, "higher_is_better", higher);
    cJSON_AddItemToObject(o, "reference", mpq_sweep_point_to_json(&all[0]));
    cJSON *arr = cJSON_AddArrayToObject(o, "points"), *pf = cJSON_AddArrayToObject(o, "pareto");
    for (int64_t i = 1; arr && i <= n; i++)
        cJSON_AddItemToArray(arr, mpq_sweep_point_to_json(&all[i]));
    for (int64_t i = 0; pf && i <= n; i++)
        if (all[i].pareto)
            cJSON_AddItemToArray(pf, cJSON_CreateNumber((double)all[i].index));
    jt = cJSON_Print(o);
    MPQ_ENSURE(jt && !csv.failed && !md.failed, MPQ_ERR_NOMEM, "cannot format the report");

    snprintf(path, sizeof path, "%s/report.csv", dir);
    MPQ_TRY(write_text(ctx, path, csv.s));
    snprintf(path, sizeof path, "%s/report.md", dir);
    MPQ_TRY(write_text(ctx, path, md.s));
    snprintf(path, sizeof path, "%s/report.json", dir);
    {
        size_t L = strlen(jt);
        char *jn = malloc(L + 2);
        MPQ_ENSURE(jn, MPQ_ERR_NOMEM, "cannot format the report");
        memcpy(jn, jt, L);
        jn[L] = '\n';
        jn[L + 1] = '\0';
        err = write_text(ctx, path, jn);
        free(jn);
        MPQ_TRY(err);
    }
    if (plot)
        MPQ_TRY(write_plot(ctx, dir, title, all, n + 1, metric));
    MPQ_INFO("sweep report: %s/report.{csv,json,md%s}, %lld points", dir, plot ? ",png" : "",
             (long long)n);
    if (nskip > 0)
        MPQ_WARN("sweep report: %lld of %lld points skipped (infeasible budget), marked "
                 "\"infeasible\" in the report",
                 (long long)nskip, (long long)n);
cleanup:
    cJSON_free(jt);
    cJSON_Delete(o);
    free(csv.s);
    free(md.s);
    mpq_free(front);
    mpq_free(qu);
    mpq_free(sz);
    mpq_free(all);
    return err;
}

/* ---- the merge ---------------------------------------------------------------- */

const char *mpq_sweep_output_dir(const mpq_config *cfg) {
    return cfg->sweep.output_dir[0] ? cfg->sweep.output_dir : "sweep-out";
}

mpq_err mpq_sweep_plan_count(mpq_ctx *ctx, const mpq_config *cfg, int64_t *npoints) {
    sweep_plan p;
    MPQ_CALL(mpq_sweep_plan_build(ctx, cfg, &p));
    *npoints = p.npts;
    mpq_sweep_plan_free(&p);
    return MPQ_OK;
}

static mpq_err read_point(mpq_ctx *ctx, const char *path, mpq_sweep_point *pt) {
    mpq_err err = MPQ_OK;
    FILE *f = NULL;
    char *t = NULL;
    cJSON *o = NULL;
    if (mpq_infile_check(ctx, path, "sweep point file") != MPQ_OK) {
        char why[MPQ_ERRMSG_MAX];
        snprintf(why, sizeof why, "%s", ctx->err_msg);
        mpq_err_clear(ctx);
        MPQ_ENSURE(0, MPQ_ERR_IO, "%s; was its point run (mpquant sweep --stage point)?", why);
    }
    MPQ_TRY(mpq_infile_fopen(ctx, path, "sweep point file", &f));
    MPQ_ENSURE(fseek(f, 0, SEEK_END) == 0, MPQ_ERR_IO, "%s: cannot seek", path);
    long len = ftell(f);
    MPQ_ENSURE(len >= 0 && len < (1 << 20), MPQ_ERR_FORMAT, "%s: size %ld is not that of a point",
               path, len);
    rewind(f);
    MPQ_ALLOC_TRY(t, len + 1);
    MPQ_ENSURE(fread(t, 1, (size_t)len, f) == (size_t)len, MPQ_ERR_IO, "%s: read failed", path);
    o = cJSON_Parse(t);
    MPQ_ENSURE(o, MPQ_ERR_FORMAT, "%s: not valid JSON", path);
    MPQ_TRY(mpq_sweep_point_from_json(ctx, o, path, pt));
cleanup:
    cJSON_Delete(o);
    mpq_free(t);
    if (f)
        fclose(f);
    return err;
}

static mpq_err merge_local(mpq_ctx *ctx, const mpq_config *cfg, int64_t npoints) {
    mpq_err err = MPQ_OK;
    mpq_sweep_point ref, *pts = NULL;
    char path[4096], title[512];
    const char *dir = mpq_sweep_output_dir(cfg);
    MPQ_TRY(mpq_sweep_check_files(ctx, cfg, npoints));
    snprintf(path, sizeof path, "%s/points/fp.json", dir);
    MPQ_TRY(read_point(ctx, path, &ref));
    MPQ_ENSURE(strcmp(ref.kind, "fp") == 0, MPQ_ERR_FORMAT, "%s: not the reference row", path);
    MPQ_ALLOC_TRY(pts, npoints > 0 ? npoints : 1);
    for (int64_t i = 0; i < npoints; i++) {
        snprintf(path, sizeof path, "%s/points/point-%04lld.json", dir, (long long)i);
        MPQ_TRY(read_point(ctx, path, &pts[i]));
        MPQ_ENSURE(pts[i].index == i, MPQ_ERR_FORMAT, "%s: holds point %lld, expected %lld", path,
                   (long long)pts[i].index, (long long)i);
    }
    const char *base = strrchr(cfg->model.path, '/');
    snprintf(title, sizeof title, "%s: %s against model size (%s)",
             base ? base + 1 : cfg->model.path, ref.metric, cfg->source);
    /* The configuration path may hold directories: keep only its file name. */
    const char *cb = strrchr(cfg->source, '/');
    if (cb)
        snprintf(title, sizeof title, "%s: %s against model size (%s)",
                 base ? base + 1 : cfg->model.path, ref.metric, cb + 1);
    MPQ_TRY(mpq_sweep_report_write(ctx, dir, title, &ref, npoints, pts, cfg->sweep.plot));
cleanup:
    mpq_free(pts);
    return err;
}

mpq_err mpq_sweep_merge(mpq_ctx *ctx, const mpq_config *cfg, int64_t npoints) {
    mpq_err err = MPQ_OK;
    if (ctx->rank == 0)
        err = merge_local(ctx, cfg, npoints);
    MPQ_CALL(mpq_agree(ctx, err));
    return MPQ_OK;
}
