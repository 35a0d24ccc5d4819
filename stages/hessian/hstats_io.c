/* hstats_io.c: Hessian statistics to and from HDF5 with collective parallel
 * I/O ("measure once, solve many"). Layout: see mpq_hessian.h. */
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq_coll.h"
#include "mpq_infile.h"
#include "mpq_ctx.h"
#include "mpq_h5.h"
#include "mpq_hessian.h"
#include "mpq_outfile.h"
#include "mpq_version.h"

#define HSTATS_FORMAT  "mpquant-hstats"
#define HSTATS_VERSION 1
#define PATH_MAX_LEN   4096

/* ---- small HDF5 helpers -------------------------------------------------- */

static mpq_err attr_write(mpq_ctx *ctx, hid_t obj, const char *aname, hid_t type, const void *v,
                          const char *what) {
    hid_t sp = H5I_INVALID_HID, at = H5I_INVALID_HID;
    mpq_err err = MPQ_OK;
    MPQ_H5_ID(sp, H5Screate(H5S_SCALAR), what);
    MPQ_H5_ID(at, H5Acreate2(obj, aname, type, sp, H5P_DEFAULT, H5P_DEFAULT), what);
    MPQ_H5_TRY(H5Awrite(at, type, v), what);
cleanup:
    if (at >= 0)
        H5Aclose(at);
    if (sp >= 0)
        H5Sclose(sp);
    return err;
}

static mpq_err attr_write_str(mpq_ctx *ctx, hid_t obj, const char *aname, const char *s,
                              const char *what) {
    hid_t t = H5I_INVALID_HID;
    mpq_err err = MPQ_OK;
    MPQ_H5_ID(t, H5Tcopy(H5T_C_S1), what);
    MPQ_H5_TRY(H5Tset_size(t, strlen(s) + 1), what);
    MPQ_H5_TRY(H5Tset_strpad(t, H5T_STR_NULLTERM), what);
    MPQ_TRY(attr_write(ctx, obj, aname, t, s, what));
cleanup:
    if (t >= 0)
        H5Tclose(t);
    return err;
}

/* Reads a scalar integer attribute (any integer type in the file). */
static mpq_err attr_read_int(mpq_ctx *ctx, hid_t obj, const char *aname, int64_t *v,
                             const char *what) {
    hid_t at = H5I_INVALID_HID, t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    mpq_err err = MPQ_OK;
    htri_t ex = H5Aexists(obj, aname);
    MPQ_H5_TRY(ex, what);
    MPQ_ENSURE(ex > 0, MPQ_ERR_FORMAT, "%s: attribute '%s' is missing", what, aname);
    MPQ_H5_ID(at, H5Aopen(obj, aname, H5P_DEFAULT), what);
    MPQ_H5_ID(t, H5Aget_type(at), what);
    MPQ_H5_ID(sp, H5Aget_space(at), what);
    MPQ_ENSURE(H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1,
               MPQ_ERR_FORMAT, "%s: attribute '%s' is not a scalar integer", what, aname);
    MPQ_H5_TRY(H5Aread(at, H5T_NATIVE_INT64, v), what);
cleanup:
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (at >= 0)
        H5Aclose(at);
    return err;
}

/* Reads a fixed-length string attribute into buf (len bytes). */
static mpq_err attr_read_str(mpq_ctx *ctx, hid_t obj, const char *aname, char *buf, size_t len,
                             const char *what) {
    hid_t at = H5I_INVALID_HID, t = H5I_INVALID_HID, mt = H5I_INVALID_HID;
    mpq_err err = MPQ_OK;
    htri_t ex = H5Aexists(obj, aname);
    MPQ_H5_TRY(ex, what);
    MPQ_ENSURE(ex > 0, MPQ_ERR_FORMAT, "%s: attribute '%s' is missing", what, aname);
    MPQ_H5_ID(at, H5Aopen(obj, aname, H5P_DEFAULT), what);
    MPQ_H5_ID(t, H5Aget_type(at), what);
    MPQ_ENSURE(H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0, MPQ_ERR_FORMAT,
               "%s: attribute '%s' is not a fixed-length string", what, aname);
    size_t sz = H5Tget_size(t);
    MPQ_ENSURE(sz > 0 && sz < len, MPQ_ERR_FORMAT, "%s: attribute '%s' is %zu bytes long (max %zu)",
               what, aname, sz, len - 1);
    MPQ_H5_ID(mt, H5Tcopy(H5T_C_S1), what);
    MPQ_H5_TRY(H5Tset_size(mt, sz), what);
    memset(buf, 0, len);
    MPQ_H5_TRY(H5Aread(at, mt, buf), what);
    buf[sz] = '\0';
cleanup:
    if (mt >= 0)
        H5Tclose(mt);
    if (t >= 0)
        H5Tclose(t);
    if (at >= 0)
        H5Aclose(at);
    return err;
}

/* Writes buf (rank-major slab of `rows` rows of `cols` starting at row0)
 * into dataset ds; rows = 0 selects nothing (the rank still takes part in
 * the collective call). Collective, with error agreement: a write can fail
 * on some ranks only (a full disk seen by one I/O aggregator), and the
 * others must not go on into the next collective call alone. */
static mpq_err write_rows(mpq_ctx *ctx, hid_t ds, hid_t dxpl, hid_t memtype, int rank2,
                          int64_t row0, int64_t rows, int64_t cols, const void *buf,
                          const char *what) {
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    mpq_err err = MPQ_OK;
    MPQ_H5_ID(fs, H5Dget_space(ds), what);
    hsize_t one = 1;
    if (rows == 0) {
        MPQ_H5_TRY(H5Sselect_none(fs), what);
        MPQ_H5_ID(ms, H5Screate_simple(1, &one, NULL), what);
        MPQ_H5_TRY(H5Sselect_none(ms), what);
    } else if (rank2 == 0) {
        MPQ_H5_ID(ms, H5Screate(H5S_SCALAR), what);
    } else if (rank2 == 1) {
        hsize_t off = (hsize_t)row0, cnt = (hsize_t)rows;
        MPQ_H5_TRY(H5Sselect_hyperslab(fs, H5S_SELECT_SET, &off, NULL, &cnt, NULL), what);
        MPQ_H5_ID(ms, H5Screate_simple(1, &cnt, NULL), what);
    } else {
        hsize_t off[2] = {(hsize_t)row0, 0}, cnt[2] = {(hsize_t)rows, (hsize_t)cols};
        MPQ_H5_TRY(H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL), what);
        MPQ_H5_ID(ms, H5Screate_simple(2, cnt, NULL), what);
    }
    double dummy = 0.0;
    MPQ_H5_TRY(H5Dwrite(ds, memtype, ms, fs, dxpl, rows ? buf : &dummy), what);
cleanup:
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    return mpq_agree(ctx, err);
}

static mpq_err read_all(mpq_ctx *ctx, hid_t ds, hid_t dxpl, hid_t memtype, int want, void *buf,
                        const char *what) {
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    mpq_err err = MPQ_OK;
    MPQ_H5_ID(fs, H5Dget_space(ds), what);
    if (want) {
        MPQ_H5_TRY(H5Dread(ds, memtype, H5S_ALL, H5S_ALL, dxpl, buf), what);
    } else {
        hsize_t one = 1;
        double dummy = 0.0;
        MPQ_H5_TRY(H5Sselect_none(fs), what);
        MPQ_H5_ID(ms, H5Screate_simple(1, &one, NULL), what);
        MPQ_H5_TRY(H5Sselect_none(ms), what);
        MPQ_H5_TRY(H5Dread(ds, memtype, ms, fs, dxpl, &dummy), what);
    }
cleanup:
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    return err;
}

static mpq_err make_plists(mpq_ctx *ctx, hid_t *fapl, hid_t *dxpl) {
    *fapl = H5Pcreate(H5P_FILE_ACCESS);
    MPQ_H5(*fapl);
    *dxpl = H5Pcreate(H5P_DATASET_XFER);
    MPQ_H5(*dxpl);
    if (ctx->comm != MPI_COMM_NULL) {
        MPQ_H5(H5Pset_fapl_mpio(*fapl, ctx->comm, MPI_INFO_NULL));
        MPQ_H5(H5Pset_dxpl_mpio(*dxpl, H5FD_MPIO_COLLECTIVE));
    }
    return MPQ_OK;
}

/* ---- save ---------------------------------------------------------------- */

static mpq_err save_one(mpq_ctx *ctx, hid_t file, hid_t dxpl, const char *path, int64_t index,
                        const mpq_hstat *st, uint64_t *reserved) {
    char what[PATH_MAX_LEN + 2 * MPQ_HSTAT_NAME_MAX];
    snprintf(what, sizeof what, "file '%s', group '/%s'", path, st->name);
    hid_t g = H5I_INVALID_HID, sp = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    mpq_err err = MPQ_OK;
    const int64_t d = st->d;

    /* Which ranks hold H: all of them (split the rows) or the lowest one. */
    int has = st->H != NULL, holders = has, writer = has ? ctx->rank : ctx->size;
    if (ctx->comm != MPI_COMM_NULL) {
        MPQ_MPI(MPI_Allreduce(&has, &holders, 1, MPI_INT, MPI_SUM, ctx->comm));
        int mine = writer;
        MPQ_MPI(MPI_Allreduce(&mine, &writer, 1, MPI_INT, MPI_MIN, ctx->comm));
    }
    MPQ_CHECK(holders > 0, MPQ_ERR_ARG, "%s: statistic '%s' has no H on any rank (not reduced?)",
              path, st->name);
    int64_t row0 = 0, rows = ctx->rank == writer ? d : 0;
    if (holders == ctx->size) {
        row0 = d * ctx->rank / ctx->size;
        rows = d * (ctx->rank + 1) / ctx->size - row0;
    }
    int i_write = ctx->rank == writer;

    MPQ_H5_ID(g, H5Gcreate2(file, st->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), what);
    int32_t bl = st->bound_log2;
    MPQ_TRY(attr_write_str(ctx, g, "name", st->name, what));
    MPQ_TRY(attr_write(ctx, g, "index", H5T_STD_I64LE, &index, what));
    MPQ_TRY(attr_write(ctx, g, "width", H5T_STD_I64LE, &d, what));
    MPQ_TRY(attr_write(ctx, g, "bound_log2", H5T_STD_I32LE, &bl, what));

    hsize_t dims[2] = {(hsize_t)d, (hsize_t)d};
    snprintf(what, sizeof what, "file '%s', dataset '/%s/H'", path, st->name);
    MPQ_H5_ID(sp, H5Screate_simple(2, dims, NULL), what);
    MPQ_H5_ID(ds, H5Dcreate2(g, "H", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              what);
    /* H is nearly all of the file: its space is reserved before it is written. */
    MPQ_TRY(mpq_h5_reserve(ctx, file, ds, 1, reserved, what));
    MPQ_TRY(write_rows(ctx, ds, dxpl, H5T_NATIVE_DOUBLE, 2, row0, rows, d,
                       st->H ? st->H + row0 * d : NULL, what));
    H5Dclose(ds);
    ds = H5I_INVALID_HID;
    H5Sclose(sp);
    sp = H5I_INVALID_HID;

    snprintf(what, sizeof what, "file '%s', dataset '/%s/count'", path, st->name);
    MPQ_H5_ID(sp, H5Screate(H5S_SCALAR), what);
    MPQ_H5_ID(ds, H5Dcreate2(g, "count", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              what);
    MPQ_TRY(write_rows(ctx, ds, dxpl, H5T_NATIVE_INT64, 0, 0, i_write, 1, &st->count, what));
    H5Dclose(ds);
    ds = H5I_INVALID_HID;
    H5Sclose(sp);
    sp = H5I_INVALID_HID;

    const char *names[2] = {"sumsq", "absmax"};
    const double *vecs[2] = {st->sumsq, st->absmax};
    for (int k = 0; k < 2; k++) {
        snprintf(what, sizeof what, "file '%s', dataset '/%s/%s'", path, st->name, names[k]);
        MPQ_H5_ID(sp, H5Screate_simple(1, dims, NULL), what);
        MPQ_H5_ID(
            ds, H5Dcreate2(g, names[k], H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
            what);
        MPQ_TRY(
            write_rows(ctx, ds, dxpl, H5T_NATIVE_DOUBLE, 1, 0, i_write ? d : 0, 1, vecs[k], what));
        H5Dclose(ds);
        ds = H5I_INVALID_HID;
        H5Sclose(sp);
        sp = H5I_INVALID_HID;
    }
cleanup:
    if (ds >= 0)
        H5Dclose(ds);
    if (sp >= 0)
        H5Sclose(sp);
    if (g >= 0)
        H5Gclose(g);
    return err;
}

mpq_err mpq_hstats_save(mpq_ctx *ctx, const char *path, int64_t n, mpq_hstat *const *stats) {
    mpq_h5_quiet();
    mpq_err local = MPQ_OK;
    if (!path || !path[0] || strlen(path) + 8 >= PATH_MAX_LEN)
        local = MPQ_ERROR(MPQ_ERR_ARG, "Hessian statistics: invalid output path '%s'",
                          path ? path : "(null)");
    for (int64_t k = 0; local == MPQ_OK && k < n; k++) {
        if (!stats[k]->reduced)
            local =
                MPQ_ERROR(MPQ_ERR_ARG, "%s: statistic '%s' is not reduced", path, stats[k]->name);
        for (int64_t j = 0; local == MPQ_OK && j < k; j++)
            if (strcmp(stats[j]->name, stats[k]->name) == 0)
                local = MPQ_ERROR(MPQ_ERR_ARG, "%s: two statistics are named '%s'", path,
                                  stats[k]->name);
    }
    MPQ_CALL(mpq_agree(ctx, local));

    /* Written under a temporary name beside path and renamed into place
     * (an existing regular file is replaced; never a device or FIFO). */
    mpq_outfile *of = NULL;
    const mpq_outfile_opts oo = {.overwrite = 1};
    MPQ_CALL(mpq_outfile_open_all(ctx, path, &oo, &of));
    const char *tmp = of->tmp;
    char what[2 * PATH_MAX_LEN + 48];
    snprintf(what, sizeof what, "file '%s' (temporary '%s')", path, tmp);
    hid_t fapl = H5I_INVALID_HID, dxpl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    uint64_t reserved = 0;
    mpq_err err = MPQ_OK;
    MPQ_TRY(make_plists(ctx, &fapl, &dxpl));
    MPQ_H5_ID(file, H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), what);
    int32_t version = HSTATS_VERSION;
    char creator[128];
    snprintf(creator, sizeof creator, "mpquant %s (%s)", MPQ_VERSION, MPQ_GIT_COMMIT);
    MPQ_TRY(attr_write_str(ctx, file, "format", HSTATS_FORMAT, what));
    MPQ_TRY(attr_write(ctx, file, "version", H5T_STD_I32LE, &version, what));
    MPQ_TRY(attr_write(ctx, file, "n_layers", H5T_STD_I64LE, &n, what));
    MPQ_TRY(attr_write_str(ctx, file, "creator", creator, what));
    for (int64_t k = 0; k < n; k++)
        MPQ_TRY(mpq_agree(ctx, save_one(ctx, file, dxpl, path, k, stats[k], &reserved)));
    hid_t written = file; /* collective: after the close every rank's data is in the file */
    file = H5I_INVALID_HID;
    MPQ_TRY(mpq_h5_close_written(ctx, written, 1, &reserved, what));
cleanup:
    mpq_h5_discard(file);
    if (dxpl >= 0)
        H5Pclose(dxpl);
    if (fapl >= 0)
        H5Pclose(fapl);
    err = mpq_agree(ctx, err);
    if (err != MPQ_OK) {
        mpq_outfile_abort_all(ctx, &of);
        return err;
    }
    return mpq_outfile_commit_all(ctx, &of);
}

/* ---- load ---------------------------------------------------------------- */

void mpq_hstats_free(int64_t n, mpq_hstat ***pstats) {
    if (!pstats || !*pstats)
        return;
    for (int64_t k = 0; k < n; k++)
        mpq_hstat_destroy(&(*pstats)[k]);
    mpq_free(*pstats);
    *pstats = NULL;
}

/* Opens dataset `dname` of group g and checks its type class, element size
 * and shape (rank 0..2 with every extent = width, or scalar). */
static mpq_err open_checked(mpq_ctx *ctx, hid_t g, const char *dname, H5T_class_t cls, int ndims,
                            int64_t width, const char *path, const char *gname, hid_t *out) {
    char what[PATH_MAX_LEN + 2 * MPQ_HSTAT_NAME_MAX];
    snprintf(what, sizeof what, "file '%s', dataset '/%s/%s'", path, gname, dname);
    hid_t ds = H5I_INVALID_HID, t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    mpq_err err = MPQ_OK;
    *out = H5I_INVALID_HID;
    htri_t ex = H5Lexists(g, dname, H5P_DEFAULT);
    MPQ_H5_TRY(ex, what);
    MPQ_ENSURE(ex > 0, MPQ_ERR_FORMAT, "%s is missing", what);
    MPQ_H5_ID(ds, H5Dopen2(g, dname, H5P_DEFAULT), what);
    MPQ_H5_ID(t, H5Dget_type(ds), what);
    MPQ_ENSURE(H5Tget_class(t) == cls && H5Tget_size(t) == 8, MPQ_ERR_FORMAT,
               "%s has the wrong type (expected 64-bit %s)", what,
               cls == H5T_FLOAT ? "floating point" : "integer");
    MPQ_H5_ID(sp, H5Dget_space(ds), what);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[2] = {0, 0};
    MPQ_ENSURE(nd == ndims, MPQ_ERR_FORMAT, "%s has %d dimensions, expected %d", what, nd, ndims);
    if (nd > 0) {
        H5Sget_simple_extent_dims(sp, dims, NULL);
        for (int k = 0; k < nd; k++)
            MPQ_ENSURE((int64_t)dims[k] == width, MPQ_ERR_FORMAT,
                       "%s has extent %llu in dimension %d, expected the width %lld", what,
                       (unsigned long long)dims[k], k, (long long)width);
    }
    *out = ds;
    ds = H5I_INVALID_HID;
cleanup:
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (ds >= 0)
        H5Dclose(ds);
    return err;
}

static mpq_err load_one(mpq_ctx *ctx, hid_t file, hid_t dxpl, const char *path, const char *gname,
                        int target, int64_t nlayers, int64_t *index, mpq_hstat **out) {
    char what[PATH_MAX_LEN + 2 * MPQ_HSTAT_NAME_MAX];
    snprintf(what, sizeof what, "file '%s', group '/%s'", path, gname);
    hid_t g = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    mpq_hstat *st = NULL;
    mpq_err err = MPQ_OK;
    int64_t width = 0, bl = 0;
    MPQ_H5_ID(g, H5Gopen2(file, gname, H5P_DEFAULT), what);
    MPQ_ALLOC_TRY(st, 1);
    MPQ_TRY(attr_read_str(ctx, g, "name", st->name, sizeof st->name, what));
    MPQ_ENSURE(strcmp(st->name, gname) == 0, MPQ_ERR_FORMAT,
               "%s: attribute name = '%s' differs from the group name", what, st->name);
    MPQ_TRY(attr_read_int(ctx, g, "index", index, what));
    MPQ_ENSURE(*index >= 0 && *index < nlayers, MPQ_ERR_FORMAT, "%s: index %lld is outside 0..%lld",
               what, (long long)*index, (long long)nlayers - 1);
    MPQ_TRY(attr_read_int(ctx, g, "width", &width, what));
    MPQ_ENSURE(width > 0 && width <= (INT64_C(1) << 31), MPQ_ERR_FORMAT,
               "%s: width %lld is invalid", what, (long long)width);
    MPQ_TRY(attr_read_int(ctx, g, "bound_log2", &bl, what));
    MPQ_ENSURE(bl >= -60 && bl <= 60, MPQ_ERR_FORMAT, "%s: bound_log2 %lld is outside -60..60",
               what, (long long)bl);
    st->d = width;
    st->bound_log2 = (int)bl;
    st->lsb_exp = 2 * st->bound_log2 - 127;
    st->reduced = 1;
    int want = target == MPQ_HSTAT_ALL || target == ctx->rank;
    MPQ_ALLOC_TRY(st->absmax, width);
    if (want) {
        /* read in full below: no zero fill of width^2 doubles */
        MPQ_TRY(mpq_malloc_raw(ctx, width * width, sizeof *st->H, (void **)&st->H));
        MPQ_ALLOC_TRY(st->sumsq, width);
    }

    snprintf(what, sizeof what, "file '%s', dataset '/%s/H'", path, gname);
    MPQ_TRY(open_checked(ctx, g, "H", H5T_FLOAT, 2, width, path, gname, &ds));
    MPQ_TRY(read_all(ctx, ds, dxpl, H5T_NATIVE_DOUBLE, want, st->H, what));
    H5Dclose(ds);
    ds = H5I_INVALID_HID;

    snprintf(what, sizeof what, "file '%s', dataset '/%s/count'", path, gname);
    MPQ_TRY(open_checked(ctx, g, "count", H5T_INTEGER, 0, width, path, gname, &ds));
    MPQ_TRY(read_all(ctx, ds, dxpl, H5T_NATIVE_INT64, 1, &st->count, what));
    MPQ_ENSURE(st->count >= 0, MPQ_ERR_FORMAT, "%s = %lld is negative", what, (long long)st->count);
    H5Dclose(ds);
    ds = H5I_INVALID_HID;

    snprintf(what, sizeof what, "file '%s', dataset '/%s/sumsq'", path, gname);
    MPQ_TRY(open_checked(ctx, g, "sumsq", H5T_FLOAT, 1, width, path, gname, &ds));
    MPQ_TRY(read_all(ctx, ds, dxpl, H5T_NATIVE_DOUBLE, want, st->sumsq, what));
    H5Dclose(ds);
    ds = H5I_INVALID_HID;

    snprintf(what, sizeof what, "file '%s', dataset '/%s/absmax'", path, gname);
    MPQ_TRY(open_checked(ctx, g, "absmax", H5T_FLOAT, 1, width, path, gname, &ds));
    MPQ_TRY(read_all(ctx, ds, dxpl, H5T_NATIVE_DOUBLE, 1, st->absmax, what));
    *out = st;
    st = NULL;
cleanup:
    if (ds >= 0)
        H5Dclose(ds);
    if (g >= 0)
        H5Gclose(g);
    mpq_hstat_destroy(&st);
    return err;
}

mpq_err mpq_hstats_load(mpq_ctx *ctx, const char *path, int target, int64_t *n_out,
                        mpq_hstat ***out) {
    *n_out = 0;
    *out = NULL;
    mpq_h5_quiet();
    mpq_err local = MPQ_OK;
    if (!path || !path[0] || strlen(path) >= PATH_MAX_LEN)
        local = MPQ_ERROR(MPQ_ERR_ARG, "Hessian statistics: invalid input path '%s'",
                          path ? path : "(null)");
    else if (target != MPQ_HSTAT_ALL && (target < 0 || target >= ctx->size))
        local = MPQ_ERROR(MPQ_ERR_ARG, "%s: load target %d is not a rank", path, target);
    else if (access(path, R_OK) != 0)
        local = MPQ_ERROR(MPQ_ERR_IO, "cannot read Hessian statistics file '%s': %s", path,
                          strerror(errno));
    else
        local = mpq_infile_check(ctx, path, "Hessian statistics file");
    MPQ_CALL(mpq_agree(ctx, local));

    char what[PATH_MAX_LEN + 32];
    snprintf(what, sizeof what, "file '%s'", path);
    hid_t fapl = H5I_INVALID_HID, dxpl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    mpq_hstat **stats = NULL;
    char **names = NULL;
    int64_t nl = 0;
    mpq_err err = MPQ_OK;
    MPQ_TRY(make_plists(ctx, &fapl, &dxpl));
    file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (file < 0) {
        char text[1024];
        mpq_h5_error_text(text, sizeof text);
        MPQ_ENSURE(0, MPQ_ERR_FORMAT,
                   "'%s' is not a readable HDF5 file (truncated or corrupted?): HDF5: %s", path,
                   text);
    }
    MPQ_TRY(mpq_h5_only_hard_links(ctx, file, path));
    char fmt[64];
    int64_t version = 0;
    MPQ_TRY(attr_read_str(ctx, file, "format", fmt, sizeof fmt, what));
    MPQ_ENSURE(strcmp(fmt, HSTATS_FORMAT) == 0, MPQ_ERR_FORMAT,
               "'%s' is not an mpquant Hessian statistics file (format = '%s', expected '%s')",
               path, fmt, HSTATS_FORMAT);
    MPQ_TRY(attr_read_int(ctx, file, "version", &version, what));
    MPQ_ENSURE(version == HSTATS_VERSION, MPQ_ERR_FORMAT,
               "'%s': Hessian statistics format version %lld; this build reads version %d", path,
               (long long)version, HSTATS_VERSION);
    MPQ_TRY(attr_read_int(ctx, file, "n_layers", &nl, what));
    H5G_info_t gi;
    MPQ_H5_TRY(H5Gget_info(file, &gi), what);
    MPQ_ENSURE(nl >= 0 && (hsize_t)nl == gi.nlinks, MPQ_ERR_FORMAT,
               "'%s': attribute n_layers = %lld but the file holds %llu groups", path,
               (long long)nl, (unsigned long long)gi.nlinks);
    MPQ_ALLOC_TRY(stats, nl > 0 ? nl : 1);
    MPQ_ALLOC_TRY(names, nl > 0 ? nl : 1);
    for (int64_t k = 0; k < nl; k++) {
        ssize_t len = H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)k, NULL, 0,
                                         H5P_DEFAULT);
        MPQ_H5_TRY(len, what);
        MPQ_ALLOC_TRY(names[k], (int64_t)len + 1);
        MPQ_H5_TRY(H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)k, names[k],
                                      (size_t)len + 1, H5P_DEFAULT),
                   what);
    }
    for (int64_t k = 0; k < nl; k++) {
        int64_t idx = -1;
        mpq_hstat *st = NULL;
        MPQ_TRY(load_one(ctx, file, dxpl, path, names[k], target, nl, &idx, &st));
        if (stats[idx]) {
            mpq_hstat_destroy(&st);
            MPQ_ENSURE(0, MPQ_ERR_FORMAT, "'%s': groups '%s' and '%s' have the same index %lld",
                       path, stats[idx]->name, names[k], (long long)idx);
        }
        stats[idx] = st;
    }
cleanup:
    if (names)
        for (int64_t k = 0; k < nl; k++)
            mpq_free(names[k]);
    mpq_free(names);
    if (file >= 0)
        H5Fclose(file);
    if (dxpl >= 0)
        H5Pclose(dxpl);
    if (fapl >= 0)
        H5Pclose(fapl);
    err = mpq_agree(ctx, err);
    if (err != MPQ_OK) {
        mpq_hstats_free(nl, &stats);
        return err;
    }
    *n_out = nl;
    *out = stats;
    return MPQ_OK;
}
