/* sweep_point.c: a row of the sweep's report (mpq_sweep_point) as a JSON
 * object and back: the point files of the job-array path, the reference
 * row of the measurement, report.json and the --json result. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mpq_sweep.h"

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
    /* perplexity: a language model's (null for a classifier) */
    num_or_null(o, "ppl", m && pt->ppl > 0.0, pt->ppl);
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
        /* "ppl" came later (absent from older point files), null for a
         * classifier: 0 then. */
        const cJSON *pp = cJSON_GetObjectItemCaseSensitive(o, "ppl");
        if (pp && !cJSON_IsNull(pp))
            MPQ_CALL(get_num(ctx, o, src, "ppl", &pt->ppl));
        MPQ_CHECK(isfinite(pt->ppl) && pt->ppl >= 0.0, MPQ_ERR_FORMAT,
                  "%s: field 'ppl' (%g) is not a perplexity", src, pt->ppl);
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
