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
 *   /energy      float64 [nlayers]        tr(W H W^T)
 *   /sensitivity float64 [nlayers]        s_l (0 when not measured)
 * maxc = candidates + 1 (the last column holds a pinned spec that is not a
 * candidate). Every rank reads the file on load. */
#include <cjson/cJSON.h>
#include <hdf5.h>
#include <string.h>

#include "mpq_h5.h"
#include "mpq_log.h"
#include "mpq_outfile.h"
#include "run_internal.h"

#define MEASURE_FORMAT  "mpquant-measure"
#define MEASURE_VERSION 1

static char *meta_json(const run_state *s) {
    cJSON *o = cJSON_CreateObject(), *ls = cJSON_CreateArray(), *cs = cJSON_CreateArray(),
          *ex = cJSON_CreateArray();
    char buf[MPQ_QSPEC_MAX];
    if (!o || !ls || !cs || !ex) {
        cJSON_Delete(o);
        cJSON_Delete(ls);
        cJSON_Delete(cs);
        cJSON_Delete(ex);
        return NULL;
    }
    cJSON_AddStringToObject(o, "method", s->method->name);
    cJSON_AddNumberToObject(o, "importance_probe", s->sens_cand);
    for (int64_t l = 0; l < s->nl; l++) {
        cJSON_AddItemToArray(ls, cJSON_CreateString(s->info->layers[l].name));
        const char *e = "";
        if (s->nc[l] > s->ncand)
            e = mpq_qspec_format(&s->extra[l], buf, sizeof buf);
        cJSON_AddItemToArray(ex, cJSON_CreateString(e));
    }
    for (int64_t k = 0; k < s->ncand; k++)
        cJSON_AddItemToArray(cs,
                             cJSON_CreateString(mpq_qspec_format(&s->cand[k], buf, sizeof buf)));
    cJSON_AddItemToObject(o, "layers", ls);
    cJSON_AddItemToObject(o, "candidates", cs);
    cJSON_AddItemToObject(o, "extra", ex);
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return t;
}

static mpq_err write_ds(mpq_ctx *ctx, hid_t file, const char *name, hid_t ftype, hid_t mtype,
                        int rank, const hsize_t *dims, const void *data, const char *what) {
    mpq_err err = MPQ_OK;
    hid_t sp = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    MPQ_H5_ID(sp, H5Screate_simple(rank, dims, NULL), what);
    MPQ_H5_ID(ds, H5Dcreate2(file, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), what);
    MPQ_H5_TRY(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), what);
cleanup:
    if (ds >= 0)
        H5Dclose(ds);
    if (sp >= 0)
        H5Sclose(sp);
    return err;
}

static mpq_err save_local(mpq_ctx *ctx, const run_state *s, const char *path) {
    mpq_err err = MPQ_OK;
    mpq_outfile *of = NULL;
    hid_t file = H5I_INVALID_HID, sp = H5I_INVALID_HID, at = H5I_INVALID_HID, st = H5I_INVALID_HID;
    char *meta = NULL;
    mpq_h5_quiet();
    MPQ_TRY(mpq_outfile_open(ctx, path, NULL, &of));
    meta = meta_json(s);
    MPQ_ENSURE(meta, MPQ_ERR_NOMEM, "%s: cannot format the measurement metadata", path);
    MPQ_H5_ID(file, H5Fcreate(of->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), path);
    MPQ_H5_ID(sp, H5Screate(H5S_SCALAR), path);
    MPQ_H5_ID(st, H5Tcopy(H5T_C_S1), path);
    MPQ_H5_TRY(H5Tset_size(st, sizeof MEASURE_FORMAT), path);
    MPQ_H5_ID(at, H5Acreate2(file, "format", st, sp, H5P_DEFAULT, H5P_DEFAULT), path);
    MPQ_H5_TRY(H5Awrite(at, st, MEASURE_FORMAT), path);
    H5Aclose(at);
    int32_t version = MEASURE_VERSION;
    MPQ_H5_ID(at, H5Acreate2(file, "version", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT), path);
    MPQ_H5_TRY(H5Awrite(at, H5T_NATIVE_INT32, &version), path);
    hsize_t d1[1] = {strlen(meta)}, d2[2] = {(hsize_t)s->nl, (hsize_t)s->maxc},
            dl[1] = {(hsize_t)s->nl};
    MPQ_TRY(write_ds(ctx, file, "meta", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, d1, meta, path));
    MPQ_TRY(
        write_ds(ctx, file, "loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, d2, s->meas.loss, path));
    MPQ_TRY(write_ds(ctx, file, "rtn_loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, d2, s->meas.rtn,
                     path));
    MPQ_TRY(
        write_ds(ctx, file, "bits", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, d2, s->meas.bits, path));
    MPQ_TRY(write_ds(ctx, file, "energy", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dl, s->meas.energy,
                     path));
    MPQ_TRY(write_ds(ctx, file, "sensitivity", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dl,
                     s->meas.sens, path));
    H5Aclose(at);
    at = H5I_INVALID_HID;
    hid_t written = file;
    file = H5I_INVALID_HID;
    MPQ_TRY(mpq_h5_close_written(ctx, written, 0, NULL, path));
    MPQ_TRY(mpq_outfile_commit(ctx, &of));
cleanup:
    if (at >= 0)
        H5Aclose(at);
    if (st >= 0)
        H5Tclose(st);
    if (sp >= 0)
        H5Sclose(sp);
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

/* Reads dataset `name` of exactly n elements of mtype. */
static mpq_err read_ds(mpq_ctx *ctx, hid_t file, const char *path, const char *name, hid_t mtype,
                       int64_t n, void *out) {
    mpq_err err = MPQ_OK;
    hid_t ds = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    htri_t ex = H5Lexists(file, name, H5P_DEFAULT);
    MPQ_ENSURE(ex > 0, MPQ_ERR_FORMAT, "%s: dataset '%s' is missing", path, name);
    MPQ_H5_ID(ds, H5Dopen2(file, name, H5P_DEFAULT), path);
    MPQ_H5_ID(sp, H5Dget_space(ds), path);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    MPQ_ENSURE(np == n, MPQ_ERR_FORMAT, "%s: dataset '%s' has %lld elements, expected %lld", path,
               name, (long long)np, (long long)n);
    MPQ_H5_TRY(H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), path);
cleanup:
    if (sp >= 0)
        H5Sclose(sp);
    if (ds >= 0)
        H5Dclose(ds);
    return err;
}

static mpq_err load_local(mpq_ctx *ctx, run_state *s, const char *path) {
    mpq_err err = MPQ_OK;
    hid_t file = H5I_INVALID_HID, ds = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    char *meta = NULL, *want = NULL;
    mpq_h5_quiet();
    MPQ_ENSURE(H5Fis_hdf5(path) > 0, MPQ_ERR_FORMAT, "%s (measure.load): not an HDF5 file", path);
    MPQ_H5_ID(file, H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), path);
    MPQ_ENSURE(H5Lexists(file, "meta", H5P_DEFAULT) > 0, MPQ_ERR_FORMAT,
               "%s (measure.load): not a measurement file (no 'meta' dataset)", path);
    MPQ_H5_ID(ds, H5Dopen2(file, "meta", H5P_DEFAULT), path);
    MPQ_H5_ID(sp, H5Dget_space(ds), path);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    MPQ_ENSURE(n > 0 && n < (1 << 26), MPQ_ERR_FORMAT, "%s: dataset 'meta' has %lld bytes", path,
               (long long)n);
    MPQ_ALLOC_TRY(meta, n + 1);
    MPQ_TRY(read_ds(ctx, file, path, "meta", H5T_NATIVE_UINT8, n, meta));
    want = meta_json(s);
    MPQ_ENSURE(want, MPQ_ERR_NOMEM, "cannot format the measurement metadata");
    MPQ_ENSURE(strcmp(meta, want) == 0, MPQ_ERR_CONFIG,
               "%s (measure.load): measured for another model, method or candidate list; "
               "the file has %.300s, the configuration needs %.300s",
               path, meta, want);
    int64_t nn = s->nl * s->maxc;
    MPQ_TRY(read_ds(ctx, file, path, "loss", H5T_NATIVE_DOUBLE, nn, s->meas.loss));
    MPQ_TRY(read_ds(ctx, file, path, "rtn_loss", H5T_NATIVE_DOUBLE, nn, s->meas.rtn));
    MPQ_TRY(read_ds(ctx, file, path, "bits", H5T_NATIVE_INT64, nn, s->meas.bits));
    MPQ_TRY(read_ds(ctx, file, path, "energy", H5T_NATIVE_DOUBLE, s->nl, s->meas.energy));
    MPQ_TRY(read_ds(ctx, file, path, "sensitivity", H5T_NATIVE_DOUBLE, s->nl, s->meas.sens));
    for (int64_t l = 0; l < s->nl; l++) {
        for (int32_t k = 0; k < s->nc[l] && !s->excl[l]; k++) {
            int64_t b;
            MPQ_TRY(mpq_quant_storage_bits(ctx, run_spec(s, l, k), s->info->layers[l].out,
                                           s->info->layers[l].in, &b));
            int64_t x = l * s->maxc + k;
            int unmeasured = s->pin[l] >= 0 && s->pin[l] != k;
            MPQ_ENSURE(unmeasured || (s->meas.bits[x] == b && s->meas.loss[x] >= 0.0),
                       MPQ_ERR_FORMAT,
                       "%s: layer %s candidate %d: bits %lld (expected %lld) or loss %g invalid",
                       path, s->info->layers[l].name, k, (long long)s->meas.bits[x], (long long)b,
                       s->meas.loss[x]);
        }
    }
cleanup:
    if (sp >= 0)
        H5Sclose(sp);
    if (ds >= 0)
        H5Dclose(ds);
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
