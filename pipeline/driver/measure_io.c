/* measure_io.c: the datasets that the measurement files of `mpquant run`
 * (run_measure_io.c, format "mpquant-measure") and `mpquant sweep`
 * (sweep_io.c, format "mpquant-sweep") have in common (measure_internal.h).
 * Each format keeps its own layout description, identification and
 * checks; this file only writes and reads:
 *   /            attrs format (string), version (int32)
 *   /loss        float64 [nlayers][ncol]  layer error of each column
 *   /rtn_loss    float64 [nlayers][ncol]  nearest-rounding error, same H
 *   /bits        int64   [nlayers][ncol]  exact storage bits
 *   /coded       int64   [nlayers][ncol]  optional: storage bits with
 *                                         zstd-coded codes (0: not measured);
 *                                         written when any was measured
 *   /energy      float64 [nlayers]        tr(W H W^T)
 *   /sensitivity float64 [nlayers]        s_l (0 when not probed)
 * and byte datasets (JSON text, packed codes). */
#include <hdf5.h>
#include <string.h>

#include "measure_internal.h"
#include "mpq_h5.h"

/* Writes the attribute `name` of obj: file type ftype, dataspace sp. */
static mpq_err write_attr(mpq_ctx *ctx, hid_t obj, const char *name, hid_t ftype, hid_t sp,
                          hid_t mtype, const void *value, const char *what) {
    mpq_err err = MPQ_OK;
    hid_t at = H5I_INVALID_HID;
    MPQ_H5_ID(at, H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT), what);
    MPQ_H5_TRY(H5Awrite(at, mtype, value), what);
cleanup:
    if (at >= 0)
        H5Aclose(at);
    return err;
}

/* Writes the string attribute `name` of obj: fixed length, with its NUL (as
 * the formats have always stored it). */
static mpq_err write_text_attr(mpq_ctx *ctx, hid_t obj, const char *name, hid_t sp,
                               const char *text, const char *what) {
    mpq_err err = MPQ_OK;
    hid_t st = H5I_INVALID_HID;
    MPQ_H5_ID(st, H5Tcopy(H5T_C_S1), what);
    MPQ_H5_TRY(H5Tset_size(st, strlen(text) + 1), what);
    MPQ_TRY(write_attr(ctx, obj, name, st, sp, st, text, what));
cleanup:
    if (st >= 0)
        H5Tclose(st);
    return err;
}

mpq_err mpq_measure_h5_create(mpq_ctx *ctx, const char *tmp, const char *format, int32_t version,
                              const char *what, int64_t *file) {
    mpq_err err = MPQ_OK;
    hid_t sp = H5I_INVALID_HID;
    MPQ_H5_ID(*file, H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), what);
    MPQ_H5_ID(sp, H5Screate(H5S_SCALAR), what);
    MPQ_TRY(write_text_attr(ctx, *file, "format", sp, format, what));
    MPQ_TRY(write_attr(ctx, *file, "version", H5T_STD_I32LE, sp, H5T_NATIVE_INT32, &version, what));
cleanup:
    if (sp >= 0)
        H5Sclose(sp);
    return err;
}

/* Creates dataset `name` (*dsp; the caller closes it): file type ftype,
 * `rank` dimensions. */
static mpq_err create_ds(mpq_ctx *ctx, hid_t file, const char *name, hid_t ftype, int rank,
                         const hsize_t *dims, hid_t *dsp, const char *what) {
    mpq_err err = MPQ_OK;
    hid_t sp = H5I_INVALID_HID;
    MPQ_H5_ID(sp, H5Screate_simple(rank, dims, NULL), what);
    MPQ_H5_ID(*dsp, H5Dcreate2(file, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), what);
cleanup:
    if (sp >= 0)
        H5Sclose(sp);
    return err;
}

/* Creates dataset `name` and writes data unless the first dimension is 0. */
static mpq_err write_ds(mpq_ctx *ctx, hid_t file, const char *name, hid_t ftype, hid_t mtype,
                        int rank, const hsize_t *dims, const void *data, const char *what) {
    mpq_err err = MPQ_OK;
    hid_t ds = H5I_INVALID_HID;
    MPQ_TRY(create_ds(ctx, file, name, ftype, rank, dims, &ds, what));
    if (dims[0] > 0)
        MPQ_H5_TRY(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), what);
cleanup:
    if (ds >= 0)
        H5Dclose(ds);
    return err;
}

mpq_err mpq_measure_h5_write_table(mpq_ctx *ctx, int64_t file, const mpq_measure_table *t,
                                   const char *what) {
    hsize_t d2[2] = {(hsize_t)t->nl, (hsize_t)t->ncol}, dl[1] = {(hsize_t)t->nl};
    MPQ_CALL(write_ds(ctx, file, "loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, d2, t->loss, what));
    MPQ_CALL(
        write_ds(ctx, file, "rtn_loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, d2, t->rtn, what));
    MPQ_CALL(write_ds(ctx, file, "bits", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, d2, t->bits, what));
    int any = 0;
    for (int64_t i = 0; i < t->nl * t->ncol && !any; i++)
        any = t->coded[i] > 0;
    if (any)
        MPQ_CALL(
            write_ds(ctx, file, "coded", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, d2, t->coded, what));
    MPQ_CALL(
        write_ds(ctx, file, "energy", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dl, t->energy, what));
    MPQ_CALL(write_ds(ctx, file, "sensitivity", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dl, t->sens,
                      what));
    return MPQ_OK;
}

mpq_err mpq_measure_h5_write_bytes(mpq_ctx *ctx, int64_t file, const char *name, const void *data,
                                   int64_t n, const char *what) {
    hsize_t d[1] = {(hsize_t)n};
    return write_ds(ctx, file, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, d, data, what);
}

/* Opens dataset `name` (*dsp; the caller closes it) and counts its elements. */
static mpq_err open_ds(mpq_ctx *ctx, hid_t file, const char *path, const char *name, hid_t *dsp,
                       int64_t *n) {
    mpq_err err = MPQ_OK;
    hid_t ds = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    MPQ_H5_ID(ds, H5Dopen2(file, name, H5P_DEFAULT), path);
    *dsp = ds;
    MPQ_H5_ID(sp, H5Dget_space(ds), path);
    *n = H5Sget_simple_extent_npoints(sp);
cleanup:
    if (sp >= 0)
        H5Sclose(sp);
    return err;
}

/* Reads dataset `name` of exactly n elements of mtype. */
static mpq_err read_ds(mpq_ctx *ctx, hid_t file, const char *path, const char *name, hid_t mtype,
                       int64_t n, void *out) {
    mpq_err err = MPQ_OK;
    hid_t ds = H5I_INVALID_HID;
    int64_t np;
    MPQ_ENSURE(H5Lexists(file, name, H5P_DEFAULT) > 0, MPQ_ERR_FORMAT,
               "%s: dataset '%s' is missing", path, name);
    MPQ_TRY(open_ds(ctx, file, path, name, &ds, &np));
    MPQ_ENSURE(np == n, MPQ_ERR_FORMAT, "%s: dataset '%s' has %lld elements, expected %lld", path,
               name, (long long)np, (long long)n);
    if (n > 0)
        MPQ_H5_TRY(H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), path);
cleanup:
    if (ds >= 0)
        H5Dclose(ds);
    return err;
}

mpq_err mpq_measure_h5_read_table(mpq_ctx *ctx, int64_t file, const char *path,
                                  mpq_measure_table *t) {
    int64_t nn = t->nl * t->ncol;
    MPQ_CALL(read_ds(ctx, file, path, "loss", H5T_NATIVE_DOUBLE, nn, t->loss));
    MPQ_CALL(read_ds(ctx, file, path, "rtn_loss", H5T_NATIVE_DOUBLE, nn, t->rtn));
    MPQ_CALL(read_ds(ctx, file, path, "bits", H5T_NATIVE_INT64, nn, t->bits));
    memset(t->coded, 0, (size_t)nn * sizeof *t->coded);
    if (H5Lexists(file, "coded", H5P_DEFAULT) > 0)
        MPQ_CALL(read_ds(ctx, file, path, "coded", H5T_NATIVE_INT64, nn, t->coded));
    MPQ_CALL(read_ds(ctx, file, path, "energy", H5T_NATIVE_DOUBLE, t->nl, t->energy));
    MPQ_CALL(read_ds(ctx, file, path, "sensitivity", H5T_NATIVE_DOUBLE, t->nl, t->sens));
    return MPQ_OK;
}

mpq_err mpq_measure_h5_read_bytes(mpq_ctx *ctx, int64_t file, const char *path, const char *name,
                                  int64_t n, void *out) {
    return read_ds(ctx, file, path, name, H5T_NATIVE_UINT8, n, out);
}

mpq_err mpq_measure_h5_read_text(mpq_ctx *ctx, int64_t file, const char *path, const char *name,
                                 const char *missing, char **out) {
    mpq_err err = MPQ_OK;
    hid_t ds = H5I_INVALID_HID;
    int64_t n;
    char *t = NULL;
    MPQ_ENSURE(H5Lexists(file, name, H5P_DEFAULT) > 0, MPQ_ERR_FORMAT, "%s%s (no '%s' dataset)",
               path, missing, name);
    MPQ_TRY(open_ds(ctx, file, path, name, &ds, &n));
    MPQ_ENSURE(n > 0 && n < (1 << 26), MPQ_ERR_FORMAT, "%s: dataset '%s' has %lld bytes", path,
               name, (long long)n);
    MPQ_ALLOC_TRY(t, n + 1); /* zeroed: the NUL is there */
    MPQ_H5_TRY(H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, t), path);
    *out = t;
    t = NULL;
cleanup:
    mpq_free(t);
    if (ds >= 0)
        H5Dclose(ds);
    return err;
}
