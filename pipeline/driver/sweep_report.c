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
    "reference,rel_change,ppl,kld,agreement,pareto,seconds,status\n"

/* An infeasible row leaves what was not measured empty (bits, bpw,
 * size_bytes, value, rel_change, ppl, kld, agreement) and says "infeasible"
 * in the last column, "status"; every other row says "ok". A classifier's
 * ppl is empty (null in the JSON). */
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
    const double nums[] = {p->value, p->reference, p->rel_change, p->ppl, p->kld, p->agreement};
    for (size_t i = 0; i < 6; i++) {
        sb_printf(b, ",");
        if ((m && (i != 3 || p->ppl > 0.0)) || i == 1)
            sb_csv_num(b, nums[i]);
    }
    sb_printf(b, ",%d,%.3f,%s\n", p->pareto, p->seconds, m ? "ok" : "infeasible");
}

/* Markdown: a '|' inside a cell would split it. */
static void sb_md_str(sbuf *b, const char *s) {
    for (; *s; s++)
        sb_printf(b, *s == '|' ? "\\|" : "%c", *s);
}

/* The language model's columns beside the metric: perplexity and KLD,
 * each unless it is the metric itself. */
typedef struct md_cols {
    int ppl, kld;
} md_cols;

/* A KLD is small (1e-5 nats at 8 bits): more digits than the others. */
static const char *md_value_fmt(const char *metric) {
    return strcmp(metric, "kld") == 0 ? "%.6f" : "%.4f";
}

static void md_row(sbuf *b, const mpq_sweep_point *p, md_cols lm) {
    if (p->index < 0)
        sb_printf(b, "| - | ");
    else
        sb_printf(b, "| %lld | ", (long long)p->index);
    sb_printf(b, "%s | ", p->kind);
    sb_md_str(b, p->label);
    if (p->infeasible) {
        /* Not built: the note under the table gives the achievable range. */
        sb_printf(b, " | %s | %s | infeasible | - | - | - | %s%s- | | %.2f |\n", p->method,
                  p->family, lm.ppl ? "- | " : "", lm.kld ? "- | " : "", p->seconds);
        return;
    }
    sb_printf(b, " | %s | %s | %.4f | %lld | ", p->method, p->family, p->bpw,
              (long long)p->size_bytes);
    sb_printf(b, md_value_fmt(p->metric), p->value);
    /* A reference of 0 (KLD) has no relative change. */
    if (p->reference != 0.0)
        sb_printf(b, " | %+.2f%% | ", 100.0 * p->rel_change);
    else
        sb_printf(b, " | - | ");
    if (lm.ppl)
        sb_printf(b, "%.4f | ", p->ppl);
    if (lm.kld)
        sb_printf(b, "%.6f | ", p->kld);
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

/* Ticks of a log axis over [lo, hi] (both > 0): gnuplot's own are one per
 * decade, so a sweep spanning less than a decade had a single labelled
 * tick. Steps 1-1.5-2-3-5-7 per decade for a short span, 1-2-5 for a few
 * decades, decades beyond; gnuplot drops those outside the axis. */
static void log_ticks(sbuf *gp, const char *axis, double lo, double hi) {
    static const double fine[] = {1, 1.5, 2, 3, 5, 7}, mid[] = {1, 2, 5}, coarse[] = {1};
    const double span = log10(hi / lo);
    const double *m = span < 1.2 ? fine : span < 3.0 ? mid : coarse;
    const int nm = span < 1.2 ? 6 : span < 3.0 ? 3 : 1;
    const char *sep = "";
    sb_printf(gp, "set %s (", axis);
    for (int e = (int)floor(log10(lo)) - 1; e <= (int)ceil(log10(hi)); e++)
        for (int k = 0; k < nm; k++) {
            const double v = m[k] * pow(10.0, e);
            if (v < lo / 1.5 || v > hi * 1.5)
                continue;
            sb_printf(gp, "%s%.6g", sep, v);
            sep = ", ";
        }
    sb_printf(gp, ")\nset m%s 10\n", axis);
}

/* A gnuplot string in double quotes. */
static void sb_gp_str(sbuf *b, const char *s) {
    sb_printf(b, "\"");
    for (; *s; s++)
        sb_printf(b, (*s == '"' || *s == '\\') ? "\\%c" : "%c", *s);
    sb_printf(b, "\"");
}

/* The plotted range of the points: sizes (KiB) and values, positive values
 * only on a log quality axis. */
typedef struct plot_range {
    double xlo, xhi, ylo, yhi;
} plot_range;

static void range_add(plot_range *r, double x, double y) {
    r->xlo = x < r->xlo ? x : r->xlo;
    r->xhi = x > r->xhi ? x : r->xhi;
    r->ylo = y < r->ylo ? y : r->ylo;
    r->yhi = y > r->yhi ? y : r->yhi;
}

/* "[lo:hi]" of an axis with a margin of 7 % of the span on each side (of
 * the log span on a log axis), so no point sits on the frame. */
static void sb_range(sbuf *gp, const char *axis, double lo, double hi, int log_axis) {
    if (log_axis) {
        const double f = pow(hi / lo, 0.07) > 1.05 ? pow(hi / lo, 0.07) : 1.05;
        sb_printf(gp, "set %srange [%.8g:%.8g]\n", axis, lo / f, hi * f);
    } else {
        const double d = hi - lo > 0.0 ? 0.07 * (hi - lo) : 0.01 * fabs(hi) + 1e-3;
        sb_printf(gp, "set %srange [%.8g:%.8g]\n", axis, lo - d, hi + d);
    }
}

/* The script's settings: terminal, title, axes with their ticks, the
 * legend (in the corner the front leaves empty). */
static void plot_header(sbuf *gp, const char *png, const char *title, const char *mname,
                        const sweep_metric *metric, const plot_range *r) {
    const int higher = metric && metric->higher_better, ylog = metric && metric->log_axis;
    sb_printf(gp,
              "# Written by mpquant sweep: quality against model size, Pareto front.\n"
              "set terminal pngcairo size 1000,650 font 'sans,10'\n"
              "set output '%s'\nset title ",
              png);
    sb_gp_str(gp, title);
    sb_printf(gp,
              "\nset xlabel 'model size (KiB, log scale)'\n"
              "set ylabel '%s (%s is better%s)'\n"
              "set logscale x\n%sset grid xtics ytics mxtics mytics lw 0.5, lw 0.2\n"
              "set key inside %s right vertical box opaque samplen 2 spacing 1.2\n",
              mname, higher ? "higher" : "lower", ylog ? ", log scale" : "",
              ylog ? "set logscale y\n" : "", higher ? "bottom" : "top");
    sb_range(gp, "x", r->xlo, r->xhi, 1);
    sb_range(gp, "y", r->ylo, r->yhi, ylog);
    log_ticks(gp, "xtics", r->xlo, r->xhi);
    if (ylog)
        log_ticks(gp, "ytics", r->ylo, r->yhi);
}

/* Label placement in graph coordinates (0..1 on both axes, the log axes
 * transformed): boxes taken by points and by labels already placed. */
typedef struct plot_box {
    double x0, y0, x1, y1;
} plot_box;

static double graph_pos(double v, double lo, double hi, int log_axis) {
    if (log_axis) {
        const double f = pow(hi / lo, 0.07) > 1.05 ? pow(hi / lo, 0.07) : 1.05;
        return (log(v) - log(lo / f)) / (log(hi * f) - log(lo / f));
    }
    const double d = hi - lo > 0.0 ? 0.07 * (hi - lo) : 0.01 * fabs(hi) + 1e-3;
    return (v - lo + d) / (hi - lo + 2.0 * d);
}

static int box_free(const plot_box *b, const plot_box *taken, int64_t n) {
    if (b->x0 < 0.0 || b->x1 > 1.0 || b->y0 < 0.0 || b->y1 > 1.0)
        return 0;
    for (int64_t i = 0; i < n; i++)
        if (b->x0 < taken[i].x1 && taken[i].x0 < b->x1 && b->y0 < taken[i].y1 &&
            taken[i].y0 < b->y1)
            return 0;
    return 1;
}

/* Places the label of the point at (px, py): beside it, left or right,
 * level with it or moved up or down by half a line at a time; of the boxes
 * that meet no point and no label, the nearest (left before right, and
 * towards the side the front leaves empty: below when lower is better,
 * above when higher is). Writes the gnuplot label, with a leader line when
 * it had to move more than a line away, and takes the box. */
static void place_label(sbuf *gp, int64_t id, const char *lab, double px, double py, int higher,
                        plot_box *taken, int64_t *nt) {
    const double w = 0.0075 * (double)strlen(lab) + 0.006, h = 0.028, dir = higher ? 1.0 : -1.0;
    plot_box best = {px - 0.012 - w, py - 0.5 * h, px - 0.012, py + 0.5 * h};
    double best_cost = INFINITY;
    int best_right = 0, best_j = 0;
    for (int j = -20; j <= 20; j++)
        for (int right = 0; right < 2; right++) {
            const double cost = abs(j) + 0.5 * right + (j * dir < 0 ? 0.25 : 0.0);
            const double y = py + 0.5 * h * j;
            plot_box b = {right ? px + 0.012 : px - 0.012 - w, y - 0.5 * h, 0, y + 0.5 * h};
            b.x1 = b.x0 + w;
            if (cost < best_cost && box_free(&b, taken, *nt)) {
                best = b;
                best_cost = cost;
                best_right = right;
                best_j = j;
            }
        }
    taken[(*nt)++] = best; /* none free (crowded): level on the left, overlaps and all */
    const double lx = best_right ? best.x0 : best.x1, ly = 0.5 * (best.y0 + best.y1);
    sb_printf(gp, "set label %lld ", (long long)id);
    sb_gp_str(gp, lab);
    sb_printf(gp, " at graph %.4f, graph %.4f %s font ',9' front\n", lx, ly,
              best_right ? "left" : "right");
    if (abs(best_j) > 2)
        sb_printf(gp,
                  "set arrow from graph %.4f, graph %.4f to graph %.4f, graph %.4f nohead lw "
                  "0.5 lc rgb '#808080' front\n",
                  lx, ly, px, py);
}

static mpq_err write_plot(mpq_ctx *ctx, const char *dir, const char *title,
                          const mpq_sweep_point *all, int64_t n, const sweep_metric *metric) {
    mpq_err err = MPQ_OK;
    sbuf dat = {0}, gp = {0};
    int64_t *ord = NULL;
    plot_box *taken = NULL;
    char path[4096], png[4096], gpath[4096];
    MPQ_CHECK(!strchr(dir, '\'') && !strchr(dir, '"'), MPQ_ERR_CONFIG,
              "sweep.output_dir: '%s': the plot needs a directory name without quotes", dir);
    snprintf(path, sizeof path, "%s/report-plot.dat", dir);
    snprintf(png, sizeof png, "%s/report.png", dir);
    snprintf(gpath, sizeof gpath, "%s/report.gp", dir);
    /* Blocks (separated by two blank lines): one per kind that has a
     * plotted point, then the front sorted by size. Columns: size (KiB),
     * value, "label" (the plot draws the front's as set labels). An empty block would not count as
     * one (gnuplot reads the run of blank lines as one separator), so only kinds with points get a
     * block, and block[k] is the index gnuplot sees. On a log quality axis
     * a value of 0 (full precision's KLD) has no place: full precision is
     * then a dashed vertical line at its size. */
    static const char *const kinds[] = {"fp", "budget", "uniform", "compare"};
    static const char *const titles[] = {"full precision", "mixed precision (budget)", "uniform",
                                         "method/family comparison"};
    static const int ptype[] = {5, 7, 9, 13};
    const int ylog = metric && metric->log_axis;
    int used[4] = {0}, block[4] = {0}, nblock = 0;
    double fp_line = 0.0; /* KiB of a full-precision point not drawable (0 on a log axis) */
    plot_range r = {INFINITY, -INFINITY, INFINITY, -INFINITY};
    const char *main_method = "";
    char lab[64];
    for (int64_t i = 0; i < n; i++)
        if (strcmp(all[i].kind, "budget") == 0 || strcmp(all[i].kind, "uniform") == 0)
            main_method = all[i].method;
    for (int k = 0; k < 4; k++) {
        for (int64_t i = 0; i < n; i++) {
            const double x = (double)all[i].size_bytes / 1024.0, y = all[i].value;
            if (strcmp(all[i].kind, kinds[k]) != 0 || all[i].infeasible)
                continue;
            if (ylog && !(y > 0.0)) {
                fp_line = x;
                r.xhi = x > r.xhi ? x : r.xhi;
                continue;
            }
            short_label(&all[i], main_method, lab, sizeof lab);
            sb_printf(&dat, "%.6f %.10g \"%s\"\n", x, y, lab);
            range_add(&r, x, y);
            used[k] = 1;
        }
        if (used[k]) {
            block[k] = nblock++;
            sb_printf(&dat, "\n\n");
        }
    }
    MPQ_ENSURE(r.xlo <= r.xhi, MPQ_ERR_INTERNAL, "sweep plot: no point to draw");
    MPQ_ALLOC_TRY(ord, n > 0 ? n : 1);
    int64_t nf = 0;
    for (int64_t i = 0; i < n; i++)
        if (all[i].pareto && (!ylog || all[i].value > 0.0))
            ord[nf++] = i;
    for (int64_t a = 1; a < nf; a++) /* insertion sort by size: a handful of points */
        for (int64_t b = a; b > 0 && all[ord[b]].size_bytes < all[ord[b - 1]].size_bytes; b--) {
            int64_t t = ord[b];
            ord[b] = ord[b - 1];
            ord[b - 1] = t;
        }
    plot_header(&gp, png, title, all[0].metric, metric, &r);
    /* Labels on the front only (the other points are told apart by the
     * legend), none over a point or another label. The legend's corner
     * counts as taken. */
    MPQ_ALLOC_TRY(taken, 2 * n + 1);
    int64_t nt = 0;
    const int higher = metric && metric->higher_better;
    taken[nt++] = (plot_box){0.62, higher ? 0.0 : 0.7, 1.0, higher ? 0.3 : 1.0};
    for (int64_t i = 0; i < n; i++)
        if (!all[i].infeasible && (!ylog || all[i].value > 0.0)) {
            const double gx = graph_pos((double)all[i].size_bytes / 1024.0, r.xlo, r.xhi, 1);
            const double gy = graph_pos(all[i].value, r.ylo, r.yhi, ylog);
            taken[nt++] = (plot_box){gx - 0.008, gy - 0.012, gx + 0.008, gy + 0.012};
        }
    for (int64_t a = 0; a < nf; a++) {
        const mpq_sweep_point *p = &all[ord[a]];
        short_label(p, main_method, lab, sizeof lab);
        sb_printf(&dat, "%.6f %.10g \"%s\"\n", (double)p->size_bytes / 1024.0, p->value, lab);
        place_label(&gp, a + 1, lab, graph_pos((double)p->size_bytes / 1024.0, r.xlo, r.xhi, 1),
                    graph_pos(p->value, r.ylo, r.yhi, ylog), higher, taken, &nt);
    }
    if (fp_line > 0.0)
        sb_printf(&gp,
                  "set arrow from %.6f, graph 0 to %.6f, graph 1 nohead dt 2 lw 1.5 lc rgb "
                  "'#9467bd'\n",
                  fp_line, fp_line);
    sb_printf(&gp, "plot ");
    const char *sep = "";
    for (int k = 0; k < 4; k++) {
        if (!used[k])
            continue;
        sb_printf(&gp, "%s'%s' index %d using 1:2 with points pt %d ps 1.5 title '%s'", sep, path,
                  block[k], ptype[k], titles[k]);
        sep = ", \\\n     ";
    }
    if (fp_line > 0.0) {
        sb_printf(&gp,
                  "%sNaN with lines dt 2 lw 1.5 lc rgb '#9467bd' title 'full precision (%s 0)'",
                  sep, all[0].metric);
        sep = ", \\\n     ";
    }
    if (nf > 0)
        sb_printf(&gp,
                  "%s'%s' index %d using 1:2 with lines lw 2 lc rgb '#d62728' title 'Pareto "
                  "front'",
                  sep, path, nblock);
    sb_printf(&gp, "\n");
    MPQ_ENSURE(!dat.failed && !gp.failed, MPQ_ERR_NOMEM, "cannot format the plot");
    MPQ_TRY(write_text(ctx, path, dat.s ? dat.s : ""));
    MPQ_TRY(write_text(ctx, gpath, gp.s));
    MPQ_TRY(run_gnuplot(ctx, gpath));
cleanup:
    mpq_free(taken);
    mpq_free(ord);
    free(dat.s);
    free(gp.s);
    return err;
}

/* mpq_sweep_report_write; with json_out, *json_out receives the report's
 * JSON object (owner: caller, cJSON_Delete). */
static mpq_err report_write(mpq_ctx *ctx, const char *dir, const char *title,
                            const mpq_sweep_point *ref, int64_t n, mpq_sweep_point *pts, int plot,
                            cJSON **json_out) {
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
    const md_cols cols = {.ppl = lm && strcmp(ref->metric, "ppl") != 0,
                          .kld = lm && strcmp(ref->metric, "kld") != 0};
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
              "change |%s%s agreement | Pareto | time (s) |\n",
              ref->metric, cols.ppl ? " PPL |" : "", cols.kld ? " KLD |" : "");
    sb_printf(&md, "|---|---|---|---|---|---:|---:|---:|---:|%s%s---:|---|---:|\n",
              cols.ppl ? "---:|" : "", cols.kld ? "---:|" : "");
    for (int64_t i = 0; i <= n; i++)
        md_row(&md, &all[i], cols);
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
    if (json_out) {
        *json_out = o;
        o = NULL;
    }
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

mpq_err mpq_sweep_report_write(mpq_ctx *ctx, const char *dir, const char *title,
                               const mpq_sweep_point *ref, int64_t n, mpq_sweep_point *pts,
                               int plot) {
    return report_write(ctx, dir, title, ref, n, pts, plot, NULL);
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

static mpq_err merge_local(mpq_ctx *ctx, const mpq_config *cfg, int64_t npoints, cJSON **report) {
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
    /* The configuration path may hold directories: keep only its file name. */
    const char *cb = strrchr(cfg->source, '/');
    snprintf(title, sizeof title, "%s: %s against %smodel size (%s)",
             base ? base + 1 : cfg->model.path, ref.metric,
             strcmp(cfg->budget.count, "coded") == 0 ? "zstd-coded " : "",
             cb ? cb + 1 : cfg->source);
    MPQ_TRY(report_write(ctx, dir, title, &ref, npoints, pts, cfg->sweep.plot, report));
cleanup:
    mpq_free(pts);
    return err;
}

mpq_err mpq_sweep_merge(mpq_ctx *ctx, const mpq_config *cfg, int64_t npoints, cJSON **report) {
    mpq_err err = MPQ_OK;
    if (report)
        *report = NULL;
    if (ctx->rank == 0)
        err = merge_local(ctx, cfg, npoints, report);
    err = mpq_agree(ctx, err);
    if (err != MPQ_OK && report) {
        cJSON_Delete(*report);
        *report = NULL;
    }
    MPQ_CALL(err);
    return MPQ_OK;
}
