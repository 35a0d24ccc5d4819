/* run_measure_io.c: the mixed-precision measurements to and from HDF5, so
 * that budgets and importance estimators can be compared without rounding
 * every candidate again.
 *
 * Layout (format "mpquant-measure", version 1), written by rank 0 alone
 * (the file is small: a few numbers per layer and candidate) under a
 * temporary name and renamed into place (mpq_outfile.h):
 *   /            attrs format (string), version (int32)
 *   /meta        uint8 [len]  JSON {"method", "importance_probe", "layers":
 *                             [name, ...], "candidates": [spec, ...], "extra":
 *                             [spec or "", per layer]}; identifies what was
 *                             measured and is checked on load
 *   /loss        float64 [nlayers][maxc]  layer error of each candidate
 *   /rtn_loss    float64 [nlayers][maxc]  nearest-rounding error, same H
 *   /bits        int64   [nlayers][maxc]  exact storage bits
 *   /coded       int64   [nlayers][maxc]  storage bits with zstd-coded codes
 *                                         (only when measured for budget.count
 *                                         = "coded")
 *   /energy      float64 [nlayers]        tr(W H W^T)
 *   /sensitivity float64 [nlayers]        s_l (0 when not measured)
 * maxc = candidates + 1 (the last column holds a pinned spec that is not a
 * candidate). Every rank reads the file on load. The attributes and the
 * measurement datasets are written and read by measure_io.c, which the
 * sweep's format shares. */
#include <cjson/cJSON.h>
#include <hdf5.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_infile.h"
#include "mpq_h5.h"
#include "mpq_log.h"
#include "mpq_outfile.h"
#include "run_internal.h"

#define MEASURE_FORMAT  "mpquant-measure"
#define MEASURE_VERSION 1

static char *meta_json(const run_state *s) {
    cJSON *o = cJSON_CreateObject(), *ls = cJSON_CreateArray(), *cs = cJSON_CreateArray(),
          *ex = cJSON_CreateArray();
    char buf[MPQ_QSPEC_TEXT_MAX];
    if (!o || !ls || !cs || !ex) {
        cJSON_Delete(o);
        cJSON_Delete(ls);
        cJSON_Delete(cs);
        cJSON_Delete(ex);
        return NULL;
    }
    cJSON_AddStringToObject(o, "method", s->ses->method->name);
    cJSON_AddNumberToObject(o, "importance_probe", s->sens_cand);
    for (int64_t l = 0; l < s->ses->nl; l++) {
        cJSON_AddItemToArray(ls, cJSON_CreateString(s->ses->info->layers[l].name));
        const char *e = "";
        if (s->ses->nc[l] > s->ses->ncand)
            e = mpq_qspec_format(&s->ses->extra[l], buf, sizeof buf);
        cJSON_AddItemToArray(ex, cJSON_CreateString(e));
    }
    for (int64_t k = 0; k < s->ses->ncand; k++)
        cJSON_AddItemToArray(
            cs, cJSON_CreateString(mpq_session_spec_text(s->ses, 0, (int32_t)k, buf, sizeof buf)));
    cJSON_AddItemToObject(o, "layers", ls);
    cJSON_AddItemToObject(o, "candidates", cs);
    cJSON_AddItemToObject(o, "extra", ex);
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return t;
}

static mpq_err save_local(mpq_ctx *ctx, const run_state *s, const char *path) {
    mpq_err err = MPQ_OK;
    mpq_outfile *of = NULL;
    hid_t file = H5I_INVALID_HID;
    char *meta = NULL;
    mpq_h5_quiet();
    MPQ_TRY(mpq_outfile_open(ctx, path, NULL, &of));
    meta = meta_json(s);
    MPQ_ENSURE(meta, MPQ_ERR_NOMEM, "%s: cannot format the measurement metadata", path);
    MPQ_TRY(mpq_measure_h5_create(ctx, of->tmp, MEASURE_FORMAT, MEASURE_VERSION, path, &file));
    MPQ_TRY(mpq_measure_h5_write_bytes(ctx, file, "meta", meta, (int64_t)strlen(meta), path));
    MPQ_TRY(mpq_measure_h5_write_table(ctx, file, &s->meas, path));
    hid_t written = file;
    file = H5I_INVALID_HID;
    MPQ_TRY(mpq_h5_close_written(ctx, written, 0, NULL, path));
    MPQ_TRY(mpq_outfile_commit(ctx, &of));
cleanup:
    mpq_h5_discard(file);
    mpq_outfile_abort(&of);
    cJSON_free(meta);
    return err;
}

mpq_err mpq_run_measure_save(mpq_ctx *ctx, const run_state *s, const char *path) {
    mpq_err err = MPQ_OK;
    if (ctx->rank == 0)
        err = save_local(ctx, s, path);
    MPQ_CALL(mpq_agree(ctx, err));
    MPQ_INFO("measurements saved to %s", path);
    return MPQ_OK;
}

static mpq_err load_local(mpq_ctx *ctx, run_state *s, const char *path) {
    mpq_err err = MPQ_OK;
    hid_t file = H5I_INVALID_HID;
    char *meta = NULL, *want = NULL;
    const mpq_measure_table *t = &s->meas;
    const int coded = strcmp(s->ses->cfg->budget.count, "coded") == 0;
    mpq_h5_quiet();
    MPQ_TRY(mpq_infile_check(ctx, path, "measurement file (measure.load)"));
    MPQ_ENSURE(H5Fis_hdf5(path) > 0, MPQ_ERR_FORMAT, "%s (measure.load): not an HDF5 file", path);
    MPQ_H5_ID(file, H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), path);
    MPQ_TRY(mpq_measure_h5_read_text(ctx, file, path, "meta",
                                     " (measure.load): not a measurement file", &meta));
    want = meta_json(s);
    MPQ_ENSURE(want, MPQ_ERR_NOMEM, "cannot format the measurement metadata");
    MPQ_ENSURE(strcmp(meta, want) == 0, MPQ_ERR_CONFIG,
               "%s (measure.load): measured for another model, method or candidate list; "
               "the file has %.300s, the configuration needs %.300s",
               path, meta, want);
    MPQ_TRY(mpq_measure_h5_read_table(ctx, file, path, &s->meas));
    for (int64_t l = 0; l < s->ses->nl; l++) {
        for (int32_t k = 0; k < s->ses->nc[l] && !s->ses->excl[l]; k++) {
            int64_t b;
            MPQ_TRY(mpq_quant_storage_bits(ctx, mpq_session_spec(s->ses, l, k),
                                           s->ses->info->layers[l].out, s->ses->info->layers[l].in,
                                           &b));
            int64_t x = l * t->ncol + k;
            int unmeasured = s->ses->pin[l] >= 0 && s->ses->pin[l] != k;
            MPQ_ENSURE(unmeasured || (t->bits[x] == b && t->loss[x] >= 0.0), MPQ_ERR_FORMAT,
                       "%s: layer %s candidate %d: bits %lld (expected %lld) or loss %g invalid",
                       path, s->ses->info->layers[l].name, k, (long long)t->bits[x], (long long)b,
                       t->loss[x]);
            MPQ_ENSURE(unmeasured || !coded || t->coded[x] > 0, MPQ_ERR_CONFIG,
                       "%s (measure.load): layer %s candidate %d has no coded size: budget.count "
                       "= \"coded\" needs a file measured with it (measure.save)",
                       path, s->ses->info->layers[l].name, k);
        }
    }
cleanup:
    if (file >= 0)
        H5Fclose(file);
    mpq_free(meta);
    cJSON_free(want);
    return err;
}

mpq_err mpq_run_measure_load(mpq_ctx *ctx, run_state *s, const char *path) {
    MPQ_CALL(mpq_agree(ctx, load_local(ctx, s, path)));
    MPQ_INFO("measurements loaded from %s", path);
    return MPQ_OK;
}
