/* ckpt_read.c: the checkpoint reader (layout in mpq_ckpt.h). Local: each
 * process opens the file itself with HDF5's default (POSIX) driver. Every
 * value read is validated, and errors name the file and the HDF5 object. */
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_internal.h"
#include "mpq_infile.h"
#include "mpq_ckpt.h"
#include "mpq_family.h"
#include "mpq_h5.h"

static const unsigned char h5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

int mpq_ckpt_probe(const char *path) {
    unsigned char head[8];
    int fd = mpq_infile_fd(path);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, head, sizeof head);
    close(fd);
    return n == (ssize_t)sizeof head && memcmp(head, h5_signature, sizeof head) == 0;
}

/* Re-raises the error in ctx with the file and object in front, for
 * errors from modules that do not know where their bytes came from. */
static mpq_err rewrap(mpq_ctx *ctx, mpq_err e, const char *path, const char *obj) {
    char msg[MPQ_ERRMSG_MAX];
    snprintf(msg, sizeof msg, "%s", ctx->err_msg);
    mpq_err_clear(ctx);
    return MPQ_ERROR(e, "%s: %s: %s", path, obj, msg);
}

/* ---- attributes ----------------------------------------------------------------- */

/* Opens attribute `name` of obj; a missing one is a format error. */
static mpq_err attr_open(mpq_ctx *ctx, const char *path, const char *where, hid_t obj,
                         const char *name, hid_t *a) {
    htri_t ex = H5Aexists(obj, name);
    MPQ_CHECK(ex > 0, MPQ_ERR_FORMAT, "%s: %s: attribute '%s' is missing", path, where, name);
    MPQ_H5_W(*a = H5Aopen(obj, name, H5P_DEFAULT), path);
    return MPQ_OK;
}

/* A fixed-length string attribute into buf [len] (NUL-terminated). */
static mpq_err attr_str(mpq_ctx *ctx, const char *path, const char *where, hid_t obj,
                        const char *name, char *buf, size_t len) {
    mpq_err err = MPQ_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID;
    char *tmp = NULL;
    MPQ_TRY(attr_open(ctx, path, where, obj, name, &a));
    MPQ_H5_ID(t, H5Aget_type(a), path);
    MPQ_ENSURE(H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0, MPQ_ERR_FORMAT,
               "%s: %s: attribute '%s' is not a fixed-length string", path, where, name);
    size_t n = H5Tget_size(t);
    MPQ_ENSURE(n < len, MPQ_ERR_FORMAT, "%s: %s: attribute '%s' is longer than %zu bytes", path,
               where, name, len - 1);
    MPQ_TRY(mpq_malloc(ctx, (int64_t)n + 1, 1, (void **)&tmp));
    MPQ_H5_TRY(H5Aread(a, t, tmp), path);
    memcpy(buf, tmp, n);
    buf[n] = '\0';
cleanup:
    mpq_free(tmp);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return err;
}

/* A numeric attribute of up to max elements (class checked) as int64 or
 * double; *n receives the element count (may be NULL for a scalar). */
static mpq_err attr_num(mpq_ctx *ctx, const char *path, const char *where, hid_t obj,
                        const char *name, int is_float, void *out, int max, int *n) {
    mpq_err err = MPQ_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, s = H5I_INVALID_HID;
    MPQ_TRY(attr_open(ctx, path, where, obj, name, &a));
    MPQ_H5_ID(t, H5Aget_type(a), path);
    H5T_class_t c = H5Tget_class(t);
    MPQ_ENSURE(c == H5T_INTEGER || (is_float && c == H5T_FLOAT), MPQ_ERR_FORMAT,
               "%s: %s: attribute '%s' is not %s", path, where, name,
               is_float ? "a number" : "an integer");
    MPQ_H5_ID(s, H5Aget_space(a), path);
    hssize_t np = H5Sget_simple_extent_npoints(s);
    MPQ_ENSURE(np >= 1 && np <= max && (n || np == 1), MPQ_ERR_FORMAT,
               "%s: %s: attribute '%s' has %lld values (expected %s%d)", path, where, name,
               (long long)np, n ? "at most " : "", n ? max : 1);
    MPQ_H5_TRY(H5Aread(a, is_float ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64, out), path);
    if (n)
        *n = (int)np;
cleanup:
    if (s >= 0)
        H5Sclose(s);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return err;
}

static mpq_err attr_i64(mpq_ctx *ctx, const char *path, const char *where, hid_t obj,
                        const char *name, int64_t *v) {
    return attr_num(ctx, path, where, obj, name, 0, v, 1, NULL);
}

static mpq_err attr_f64(mpq_ctx *ctx, const char *path, const char *where, hid_t obj,
                        const char *name, double *v) {
    return attr_num(ctx, path, where, obj, name, 1, v, 1, NULL);
}

/* An optional CRC-32 attribute into *v; -1 when absent (files written
 * before checksums). */
static mpq_err attr_crc(mpq_ctx *ctx, const char *path, const char *where, hid_t obj,
                        const char *name, int64_t *v) {
    *v = -1;
    if (H5Aexists(obj, name) <= 0)
        return MPQ_OK;
    MPQ_CALL(attr_i64(ctx, path, where, obj, name, v));
    MPQ_CHECK(*v >= 0 && *v <= (int64_t)UINT32_MAX, MPQ_ERR_FORMAT,
              "%s: %s: attribute '%s' is %lld, not a CRC-32 (0 to 4294967295)", path, where, name,
              (long long)*v);
    return MPQ_OK;
}

/* A scalar fixed-length string dataset (optional: "" when absent). */
static mpq_err text_dataset(mpq_ctx *ctx, const char *path, hid_t g, const char *name, char **out) {
    mpq_err err = MPQ_OK;
    hid_t d = H5I_INVALID_HID, t = H5I_INVALID_HID;
    *out = NULL;
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
        return mpq_strdup(ctx, "", out);
    MPQ_H5_ID(d, H5Dopen2(g, name, H5P_DEFAULT), path);
    MPQ_H5_ID(t, H5Dget_type(d), path);
    MPQ_ENSURE(H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0, MPQ_ERR_FORMAT,
               "%s: /provenance/%s is not a fixed-length string", path, name);
    size_t n = H5Tget_size(t);
    MPQ_TRY(mpq_malloc(ctx, (int64_t)n + 1, 1, (void **)out));
    MPQ_H5_TRY(H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out), path);
cleanup:
    if (err != MPQ_OK)
        MPQ_FREE(*out);
    if (t >= 0)
        H5Tclose(t);
    if (d >= 0)
        H5Dclose(d);
    return err;
}

/* ---- groups and entries ------------------------------------------------------------ */

typedef struct name_list {
    mpq_ctx *ctx;
    int64_t n, cap;
    char (*names)[MPQ_TENSOR_NAME_MAX];
    int too_long;
    mpq_err err;
} name_list;

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *ud) {
    (void)g;
    (void)info;
    name_list *L = ud;
    mpq_ctx *ctx = L->ctx;
    if (strlen(name) >= MPQ_TENSOR_NAME_MAX) {
        L->too_long = 1;
        return 1;
    }
    if (L->n == L->cap) {
        int64_t cap = L->cap ? 2 * L->cap : 64;
        L->err = mpq_realloc(ctx, L->cap, cap, sizeof *L->names, (void **)&L->names);
        if (L->err != MPQ_OK)
            return -1;
        L->cap = cap;
    }
    snprintf(L->names[L->n++], MPQ_TENSOR_NAME_MAX, "%s", name);
    return 0;
}

static mpq_err list_group(mpq_ctx *ctx, const char *path, hid_t file, const char *group,
                          name_list *L) {
    mpq_err err = MPQ_OK;
    hid_t g = H5I_INVALID_HID;
    memset(L, 0, sizeof *L);
    L->ctx = ctx;
    MPQ_ENSURE(H5Lexists(file, group, H5P_DEFAULT) > 0, MPQ_ERR_FORMAT, "%s: group /%s is missing",
               path, group);
    MPQ_H5_ID(g, H5Gopen2(file, group, H5P_DEFAULT), path);
    hsize_t idx = 0;
    herr_t rc = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_name, L);
    if (L->err != MPQ_OK) {
        err = L->err;
        goto cleanup;
    }
    MPQ_ENSURE(!L->too_long, MPQ_ERR_FORMAT, "%s: /%s holds a name longer than %d bytes", path,
               group, MPQ_TENSOR_NAME_MAX - 1);
    MPQ_H5_TRY(rc, path);
cleanup:
    if (g >= 0)
        H5Gclose(g);
    return err;
}

/* The writer allocates every dataset in full at creation (contiguous,
 * H5D_ALLOC_TIME_EARLY), so the bytes stored in the file must equal the
 * declared size. Checking it bounds every later allocation by the file
 * size: a crafted dataset declared with 2^40 elements but no storage is
 * rejected here instead of being allocated when read. */
static mpq_err check_storage(mpq_ctx *ctx, const char *path, hid_t d, const char *where,
                             int64_t numel, size_t elsize) {
    int64_t want = 0;
    MPQ_CALL(mpq_mul64(ctx, numel, (int64_t)elsize, where, &want));
    hsize_t have = H5Dget_storage_size(d);
    MPQ_CHECK((uint64_t)have == (uint64_t)want, MPQ_ERR_FORMAT,
              "%s: dataset %s declares %lld bytes but the file stores %llu: damaged or not "
              "written by mpquant",
              path, where, (long long)want, (unsigned long long)have);
    return MPQ_OK;
}

/* Length of a 1-D uint8 dataset. */
static mpq_err bytes_dataset_len(mpq_ctx *ctx, const char *path, hid_t g, const char *where,
                                 const char *name, int64_t *len) {
    mpq_err err = MPQ_OK;
    hid_t d = H5I_INVALID_HID, t = H5I_INVALID_HID, s = H5I_INVALID_HID;
    MPQ_ENSURE(H5Lexists(g, name, H5P_DEFAULT) > 0, MPQ_ERR_FORMAT, "%s: dataset %s/%s is missing",
               path, where, name);
    MPQ_H5_ID(d, H5Dopen2(g, name, H5P_DEFAULT), path);
    MPQ_H5_ID(t, H5Dget_type(d), path);
    MPQ_H5_ID(s, H5Dget_space(d), path);
    MPQ_ENSURE(H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 1 &&
                   H5Sget_simple_extent_ndims(s) == 1,
               MPQ_ERR_FORMAT, "%s: dataset %s/%s is not a 1-D array of bytes", path, where, name);
    *len = (int64_t)H5Sget_simple_extent_npoints(s);
    char obj[MPQ_TENSOR_NAME_MAX + 32];
    snprintf(obj, sizeof obj, "%s/%s", where, name);
    MPQ_TRY(check_storage(ctx, path, d, obj, *len, 1));
cleanup:
    if (s >= 0)
        H5Sclose(s);
    if (t >= 0)
        H5Tclose(t);
    if (d >= 0)
        H5Dclose(d);
    return err;
}

static mpq_err read_shape(mpq_ctx *ctx, const char *path, const char *where, hid_t obj,
                          mpq_ckpt_entry *e) {
    int n = 0;
    MPQ_CALL(attr_num(ctx, path, where, obj, "shape", 0, e->shape, MPQ_TENSOR_MAXDIM, &n));
    e->ndim = n;
    e->numel = 1;
    for (int k = 0; k < n; k++) {
        MPQ_CHECK(e->shape[k] >= 0, MPQ_ERR_FORMAT,
                  "%s: %s: attribute 'shape' has a negative "
                  "dimension",
                  path, where);
        MPQ_CALL(mpq_mul64(ctx, e->numel, e->shape[k], where, &e->numel));
    }
    return MPQ_OK;
}

/* ---- the layout attributes ---------------------------------------------------- */

/* Written since the layout attributes exist (README.md, "Reading a
 * checkpoint without mpquant"); older files lack them and are read as
 * before, the layout following from the spec. Where present, each must say
 * what the spec and shape give: a file that contradicts its own spec is
 * refused, naming the attribute. */
static mpq_err check_layout_str(mpq_ctx *ctx, const char *path, const char *where, hid_t g,
                                const mpq_ckpt_entry *e, const char *name, const char *want) {
    char have[512];
    if (H5Aexists(g, name) <= 0)
        return MPQ_OK;
    MPQ_CALL(attr_str(ctx, path, where, g, name, have, sizeof have));
    MPQ_CHECK(strcmp(have, want) == 0, MPQ_ERR_FORMAT,
              "%s: %s: attribute '%s' is \"%s\" but spec '%s' for a [%lld][%lld] layer gives "
              "\"%s\"",
              path, where, name, have, e->spec_text, (long long)e->rows, (long long)e->cols, want);
    return MPQ_OK;
}

static mpq_err check_layout_i64(mpq_ctx *ctx, const char *path, const char *where, hid_t g,
                                const mpq_ckpt_entry *e, const char *name, int64_t want) {
    int64_t have = 0;
    if (H5Aexists(g, name) <= 0)
        return MPQ_OK;
    MPQ_CALL(attr_i64(ctx, path, where, g, name, &have));
    MPQ_CHECK(have == want, MPQ_ERR_FORMAT,
              "%s: %s: attribute '%s' is %lld but spec '%s' for a [%lld][%lld] layer gives %lld",
              path, where, name, (long long)have, e->spec_text, (long long)e->rows,
              (long long)e->cols, (long long)want);
    return MPQ_OK;
}

static mpq_err check_layout(mpq_ctx *ctx, const char *path, const char *where, hid_t g,
                            const mpq_ckpt_entry *e) {
    mpq_ckpt_layout y;
    mpq_err err = mpq_ckpt_describe(ctx, &e->spec, e->rows, e->cols, &y);
    if (err != MPQ_OK)
        return rewrap(ctx, err, path, where);
    MPQ_CALL(check_layout_str(ctx, path, where, g, e, "packing", y.packing));
    MPQ_CALL(check_layout_str(ctx, path, where, g, e, "scale_format", y.scale_format));
    MPQ_CALL(check_layout_i64(ctx, path, where, g, e, "group_cols", y.group_cols));
    MPQ_CALL(check_layout_i64(ctx, path, where, g, e, "groups_per_row", y.groups_per_row));
    MPQ_CALL(check_layout_i64(ctx, path, where, g, e, "n_groups", y.n_groups));
    MPQ_CALL(check_layout_str(ctx, path, where, g, e, "params_layout", y.params_layout));
    MPQ_CALL(check_layout_str(ctx, path, where, g, e, "dequant", y.dequant));
    return MPQ_OK;
}

/* The attributes `quantizer` and `group` repeat what the spec says: a
 * registered quantizer family, the spec's, and the spec's group size (0
 * for per-tensor and per-channel scales). */
static mpq_err check_family_group(mpq_ctx *ctx, const char *path, const char *where, hid_t g,
                                  const mpq_ckpt_entry *e) {
    char q[32];
    int64_t group = 0;
    MPQ_CALL(attr_str(ctx, path, where, g, "quantizer", q, sizeof q));
    if (!mpq_quant_find(q)) {
        char known[512];
        return MPQ_ERROR(MPQ_ERR_FORMAT,
                         "%s: %s: attribute 'quantizer' is \"%s\", not a quantizer family "
                         "(known: %s)",
                         path, where, q,
                         mpq_registry_names(&mpq_quant_reg, ", ", known, sizeof known));
    }
    MPQ_CHECK(strcmp(q, e->spec.ops->name) == 0, MPQ_ERR_FORMAT,
              "%s: %s: attribute 'quantizer' is \"%s\" but spec '%s' is of family \"%s\"", path,
              where, q, e->spec_text, e->spec.ops->name);
    MPQ_CALL(attr_i64(ctx, path, where, g, "group", &group));
    const int64_t want = e->spec.gran == MPQ_QGRAN_GROUP ? e->spec.group : 0;
    MPQ_CHECK(group == want, MPQ_ERR_FORMAT,
              "%s: %s: attribute 'group' is %lld but spec '%s' gives %lld (columns per scale "
              "group; 0 for per-tensor and per-channel scales)",
              path, where, (long long)group, e->spec_text, (long long)want);
    return MPQ_OK;
}

/* The optional `codes_coding` of a layer (spec, rows, cols, codes_bytes read). */
static mpq_err read_coding(mpq_ctx *ctx, const char *path, const char *where, hid_t g,
                           mpq_ckpt_entry *e) {
    char name[32] = "fixed";
    if (H5Aexists(g, "codes_coding") > 0)
        MPQ_CALL(attr_str(ctx, path, where, g, "codes_coding", name, sizeof name));
    e->coding = mpq_ckpt_coding_find(name);
    MPQ_CHECK(e->coding >= 0, MPQ_ERR_FORMAT,
              "%s: %s: attribute codes_coding = '%s' is not fixed or zstd", path, where, name);
    MPQ_CALL(mpq_ckpt_check_coded_len(ctx, path, where, e));
    return MPQ_OK;
}

static mpq_err read_layer_entry(mpq_ctx *ctx, const char *path, hid_t file, const char *name,
                                mpq_ckpt_entry *e) {
    mpq_err err = MPQ_OK;
    hid_t g = H5I_INVALID_HID;
    char where[MPQ_TENSOR_NAME_MAX + 16];
    snprintf(where, sizeof where, "/layers/%s", name);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->quantized = 1;
    e->dtype = MPQ_DTYPE_F32;
    MPQ_H5_ID(g, H5Gopen2(file, where, H5P_DEFAULT), path);
    MPQ_TRY(attr_i64(ctx, path, where, g, "index", &e->index));
    MPQ_TRY(attr_str(ctx, path, where, g, "spec", e->spec_text, sizeof e->spec_text));
    err = mpq_qspec_parse(ctx, e->spec_text, &e->spec);
    if (err != MPQ_OK) {
        err = rewrap(ctx, err, path, where);
        goto cleanup;
    }
    int64_t code_bits = 0, bits = 0;
    MPQ_TRY(attr_i64(ctx, path, where, g, "code_bits", &code_bits));
    MPQ_ENSURE(code_bits == e->spec.bits, MPQ_ERR_FORMAT,
               "%s: %s: attribute code_bits = %lld disagrees with spec '%s'", path, where,
               (long long)code_bits, e->spec_text);
    MPQ_TRY(attr_i64(ctx, path, where, g, "rows", &e->rows));
    MPQ_TRY(attr_i64(ctx, path, where, g, "cols", &e->cols));
    MPQ_ENSURE(e->rows > 0 && e->cols > 0, MPQ_ERR_FORMAT,
               "%s: %s: rows = %lld and cols = %lld must be positive", path, where,
               (long long)e->rows, (long long)e->cols);
    MPQ_TRY(read_shape(ctx, path, where, g, e));
    int64_t n = 0;
    MPQ_TRY(mpq_mul64(ctx, e->rows, e->cols, where, &n));
    MPQ_ENSURE(e->numel == n, MPQ_ERR_FORMAT,
               "%s: %s: attribute 'shape' has %lld elements but the layer is [%lld][%lld]", path,
               where, (long long)e->numel, (long long)e->rows, (long long)e->cols);
    MPQ_TRY(check_family_group(ctx, path, where, g, e));
    MPQ_TRY(attr_str(ctx, path, where, g, "method", e->method, sizeof e->method));
    MPQ_TRY(attr_f64(ctx, path, where, g, "loss", &e->loss));
    MPQ_TRY(bytes_dataset_len(ctx, path, g, where, "codes", &e->codes_bytes));
    MPQ_TRY(bytes_dataset_len(ctx, path, g, where, "params", &e->params_bytes));
    MPQ_TRY(attr_crc(ctx, path, where, g, "codes_crc32", &e->codes_crc));
    MPQ_TRY(attr_crc(ctx, path, where, g, "params_crc32", &e->params_crc));
    MPQ_TRY(read_coding(ctx, path, where, g, e));
    int64_t want_codes = mpq_quant_packed_bytes(&e->spec, n), want_params = 0;
    MPQ_ENSURE(e->coding != MPQ_CKPT_CODING_FIXED || e->codes_bytes == want_codes, MPQ_ERR_FORMAT,
               "%s: dataset %s/codes has %lld bytes; spec '%s' for a [%lld][%lld] layer needs "
               "%lld",
               path, where, (long long)e->codes_bytes, e->spec_text, (long long)e->rows,
               (long long)e->cols, (long long)want_codes);
    err = mpq_qparams_nbytes(ctx, &e->spec, e->rows, e->cols, &want_params);
    if (err != MPQ_OK) {
        err = rewrap(ctx, err, path, where);
        goto cleanup;
    }
    MPQ_ENSURE(e->params_bytes == want_params, MPQ_ERR_FORMAT,
               "%s: dataset %s/params has %lld bytes; spec '%s' for a [%lld][%lld] layer needs "
               "%lld",
               path, where, (long long)e->params_bytes, e->spec_text, (long long)e->rows,
               (long long)e->cols, (long long)want_params);
    e->bits = 8 * (e->codes_bytes + e->params_bytes);
    MPQ_TRY(attr_i64(ctx, path, where, g, "bits", &bits));
    MPQ_ENSURE(bits == e->bits, MPQ_ERR_FORMAT,
               "%s: %s: attribute bits = %lld but the stored codes and params hold %lld bits", path,
               where, (long long)bits, (long long)e->bits);
    MPQ_TRY(check_layout(ctx, path, where, g, e));
cleanup:
    if (g >= 0)
        H5Gclose(g);
    return err;
}

static mpq_err read_tensor_entry(mpq_ctx *ctx, const char *path, hid_t file, const char *name,
                                 mpq_ckpt_entry *e) {
    mpq_err err = MPQ_OK;
    hid_t d = H5I_INVALID_HID, t = H5I_INVALID_HID, s = H5I_INVALID_HID;
    char where[MPQ_TENSOR_NAME_MAX + 16], dt[16];
    snprintf(where, sizeof where, "/tensors/%s", name);
    snprintf(e->name, sizeof e->name, "%s", name);
    MPQ_H5_ID(d, H5Dopen2(file, where, H5P_DEFAULT), path);
    MPQ_TRY(attr_i64(ctx, path, where, d, "index", &e->index));
    MPQ_TRY(attr_str(ctx, path, where, d, "dtype", dt, sizeof dt));
    int found = 0;
    for (int k = 0; k < MPQ_DTYPE_COUNT && !found; k++)
        if (strcmp(dt, mpq_dtype_name((mpq_dtype)k)) == 0) {
            e->dtype = (mpq_dtype)k;
            found = 1;
        }
    MPQ_ENSURE(found, MPQ_ERR_FORMAT, "%s: %s: unknown dtype '%s' (expected F32, F16 or BF16)",
               path, where, dt);
    MPQ_H5_ID(t, H5Dget_type(d), path);
    H5T_class_t c = H5Tget_class(t);
    int ok = e->dtype == MPQ_DTYPE_F32 ? c == H5T_FLOAT && H5Tget_size(t) == 4
                                       : c == H5T_INTEGER && H5Tget_size(t) == 2;
    MPQ_ENSURE(ok, MPQ_ERR_FORMAT, "%s: dataset %s: stored type does not match dtype %s", path,
               where, dt);
    MPQ_H5_ID(s, H5Dget_space(d), path);
    int nd = H5Sget_simple_extent_ndims(s);
    MPQ_ENSURE(nd >= 0 && nd <= MPQ_TENSOR_MAXDIM, MPQ_ERR_FORMAT,
               "%s: dataset %s has %d dimensions (at most %d)", path, where, nd, MPQ_TENSOR_MAXDIM);
    hsize_t dims[MPQ_TENSOR_MAXDIM];
    H5Sget_simple_extent_dims(s, dims, NULL);
    e->ndim = nd;
    e->numel = 1;
    for (int k = 0; k < nd; k++) {
        e->shape[k] = (int64_t)dims[k];
        MPQ_TRY(mpq_mul64(ctx, e->numel, e->shape[k], where, &e->numel));
    }
    MPQ_TRY(check_storage(ctx, path, d, where, e->numel, mpq_dtype_size(e->dtype)));
    MPQ_TRY(attr_crc(ctx, path, where, d, "crc32", &e->codes_crc));
    e->params_crc = -1;
cleanup:
    if (s >= 0)
        H5Sclose(s);
    if (t >= 0)
        H5Tclose(t);
    if (d >= 0)
        H5Dclose(d);
    return err;
}

static mpq_err read_arch(mpq_ctx *ctx, const char *path, hid_t file, mpq_arch *a) {
    mpq_err err = MPQ_OK;
    hid_t g = H5I_INVALID_HID;
    const char *where = "/arch";
    MPQ_ENSURE(H5Lexists(file, "arch", H5P_DEFAULT) > 0, MPQ_ERR_FORMAT,
               "%s: group /arch is missing", path);
    MPQ_H5_ID(g, H5Gopen2(file, "arch", H5P_DEFAULT), path);
    MPQ_TRY(attr_str(ctx, path, where, g, "family", a->family, sizeof a->family));
    /* "" is a model read without a family (a plain tensor container). */
    if (a->family[0] && !mpq_family_find(a->family)) {
        char known[256];
        MPQ_ENSURE(0, MPQ_ERR_FORMAT,
                   "%s: %s: attribute 'family' is \"%s\", not a model family (known: %s)", path,
                   where, a->family,
                   mpq_registry_names(&mpq_family_reg, ", ", known, sizeof known));
    }
    MPQ_TRY(attr_str(ctx, path, where, g, "format", a->format, sizeof a->format));
    MPQ_TRY(attr_str(ctx, path, where, g, "model_type", a->model_type, sizeof a->model_type));
    struct {
        const char *name;
        int64_t *v;
    } ints[] = {{"dim", &a->dim},
                {"hidden_dim", &a->hidden_dim},
                {"n_layers", &a->n_layers},
                {"n_heads", &a->n_heads},
                {"n_kv_heads", &a->n_kv_heads},
                {"head_dim", &a->head_dim},
                {"vocab_size", &a->vocab_size},
                {"seq_len", &a->seq_len}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        MPQ_TRY(attr_i64(ctx, path, where, g, ints[i].name, ints[i].v));
    MPQ_TRY(attr_f64(ctx, path, where, g, "norm_eps", &a->norm_eps));
    MPQ_TRY(attr_f64(ctx, path, where, g, "rope_theta", &a->rope_theta));
    int64_t v = 0;
    MPQ_TRY(attr_i64(ctx, path, where, g, "tied_embeddings", &v));
    a->tied_embeddings = v != 0;
    MPQ_TRY(attr_i64(ctx, path, where, g, "qkv_bias", &v));
    a->qkv_bias = v != 0;
    MPQ_TRY(attr_i64(ctx, path, where, g, "rope_interleaved", &v));
    a->rope_interleaved = v != 0;
    /* o_bias and RoPE scaling: absent from checkpoints of models without them */
    if (H5Aexists(g, "o_bias") > 0) {
        char rs[16];
        MPQ_TRY(attr_i64(ctx, path, where, g, "o_bias", &v));
        a->o_bias = v != 0;
        MPQ_TRY(attr_str(ctx, path, where, g, "rope_scaling", rs, sizeof rs));
        const int kind = mpq_rope_scaling_find(rs);
        MPQ_ENSURE(kind >= 0, MPQ_ERR_FORMAT,
                   "%s: %s: attribute 'rope_scaling' is \"%s\" (none, linear, llama3 or "
                   "dynamic)",
                   path, where, rs);
        a->rope_scaling = kind;
        MPQ_TRY(attr_f64(ctx, path, where, g, "rope_factor", &a->rope_factor));
        MPQ_TRY(attr_f64(ctx, path, where, g, "rope_low_freq_factor", &a->rope_low_freq));
        MPQ_TRY(attr_f64(ctx, path, where, g, "rope_high_freq_factor", &a->rope_high_freq));
        MPQ_TRY(attr_i64(ctx, path, where, g, "rope_original_max_position", &a->rope_orig_max));
    }
cleanup:
    if (g >= 0)
        H5Gclose(g);
    return err;
}

static mpq_err read_provenance(mpq_ctx *ctx, mpq_ckpt *ck, hid_t file) {
    mpq_err err = MPQ_OK;
    hid_t g = H5I_INVALID_HID;
    const char *path = ck->path, *where = "/provenance";
    if (H5Lexists(file, "provenance", H5P_DEFAULT) <= 0) {
        /* Written last: a checkpoint without it is still usable. */
        char **f[] = {&ck->config,      &ck->config_file, &ck->overrides, &ck->inputs,
                      &ck->stage_times, &ck->eval,        &ck->assignment};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            MPQ_CALL(mpq_strdup(ctx, "", f[i]));
        return MPQ_OK;
    }
    MPQ_H5_ID(g, H5Gopen2(file, "provenance", H5P_DEFAULT), path);
    MPQ_TRY(text_dataset(ctx, path, g, "config", &ck->config));
    MPQ_TRY(text_dataset(ctx, path, g, "config_file", &ck->config_file));
    MPQ_TRY(text_dataset(ctx, path, g, "overrides", &ck->overrides));
    MPQ_TRY(text_dataset(ctx, path, g, "inputs", &ck->inputs));
    MPQ_TRY(text_dataset(ctx, path, g, "stage_times", &ck->stage_times));
    MPQ_TRY(text_dataset(ctx, path, g, "eval", &ck->eval));
    MPQ_TRY(text_dataset(ctx, path, g, "assignment", &ck->assignment));
    MPQ_TRY(attr_str(ctx, path, where, g, "program_version", ck->program_version,
                     sizeof ck->program_version));
    MPQ_TRY(attr_str(ctx, path, where, g, "commit", ck->commit, sizeof ck->commit));
    MPQ_TRY(attr_str(ctx, path, where, g, "date", ck->date, sizeof ck->date));
    MPQ_TRY(attr_i64(ctx, path, where, g, "nranks", &ck->nranks));
cleanup:
    if (g >= 0)
        H5Gclose(g);
    return err;
}

static int cmp_entry(const void *a, const void *b) {
    const mpq_ckpt_entry *x = a, *y = b;
    return (x->index > y->index) - (x->index < y->index);
}

mpq_err mpq_ckpt_open(mpq_ctx *ctx, const char *path, mpq_ckpt **out) {
    mpq_err err = MPQ_OK;
    mpq_ckpt *ck = NULL;
    hid_t fapl = H5I_INVALID_HID;
    name_list L = {0}, T = {0};
    *out = NULL;
    mpq_h5_quiet();
    MPQ_CHECK(access(path, R_OK) == 0, MPQ_ERR_IO, "%s: cannot open checkpoint: not readable",
              path);
    MPQ_CALL(mpq_infile_check(ctx, path, "checkpoint"));
    MPQ_CHECK(mpq_ckpt_probe(path), MPQ_ERR_FORMAT,
              "%s: not a checkpoint: the file does not start with the HDF5 signature", path);
    MPQ_ALLOC(ck, 1);
    ck->h5file = H5I_INVALID_HID;
    MPQ_TRY(mpq_strdup(ctx, path, &ck->path));
    MPQ_H5_ID(fapl, H5Pcreate(H5P_FILE_ACCESS), path);
    MPQ_H5_TRY(H5Pset_file_locking(fapl, 0, 1), path);
    ck->h5file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (ck->h5file < 0) {
        char text[1024];
        mpq_h5_error_text(text, sizeof text);
        MPQ_ENSURE(0, MPQ_ERR_FORMAT, "%s: cannot open as HDF5 (truncated or damaged?): %s", path,
                   text);
    }
    hid_t file = ck->h5file;
    MPQ_TRY(mpq_h5_only_hard_links(ctx, file, path));
    char fmt[64] = "";
    int64_t version = 0;
    MPQ_ENSURE(H5Aexists(file, "format") > 0, MPQ_ERR_FORMAT,
               "%s: an HDF5 file without the attribute /format: not an mpquant checkpoint", path);
    MPQ_TRY(attr_str(ctx, path, "/", file, "format", fmt, sizeof fmt));
    MPQ_ENSURE(strcmp(fmt, MPQ_CKPT_FORMAT) == 0, MPQ_ERR_FORMAT,
               "%s: attribute /format is '%s', not '%s': not an mpquant checkpoint", path, fmt,
               MPQ_CKPT_FORMAT);
    MPQ_TRY(attr_i64(ctx, path, "/", file, "version", &version));
    MPQ_ENSURE(version == MPQ_CKPT_VERSION, MPQ_ERR_FORMAT,
               "%s: attribute /version is %lld; this program reads checkpoint version %d", path,
               (long long)version, MPQ_CKPT_VERSION);
    ck->version = (int)version;
    MPQ_TRY(read_arch(ctx, path, file, &ck->arch));
    MPQ_TRY(list_group(ctx, path, file, "layers", &L));
    MPQ_TRY(list_group(ctx, path, file, "tensors", &T));
    MPQ_ALLOC_TRY(ck->entries, L.n + T.n + 1);
    for (int64_t i = 0; i < L.n; i++)
        MPQ_TRY(read_layer_entry(ctx, path, file, L.names[i], &ck->entries[ck->nentries++]));
    for (int64_t i = 0; i < T.n; i++) {
        for (int64_t j = 0; j < L.n; j++)
            MPQ_ENSURE(strcmp(T.names[i], L.names[j]) != 0, MPQ_ERR_FORMAT,
                       "%s: '%s' is both a layer and a tensor", path, T.names[i]);
        MPQ_TRY(read_tensor_entry(ctx, path, file, T.names[i], &ck->entries[ck->nentries++]));
    }
    ck->nlayers = L.n;
    qsort(ck->entries, (size_t)ck->nentries, sizeof *ck->entries, cmp_entry);
    for (int64_t i = 1; i < ck->nentries; i++)
        MPQ_ENSURE(ck->entries[i].index != ck->entries[i - 1].index, MPQ_ERR_FORMAT,
                   "%s: entries '%s' and '%s' have the same index %lld", path,
                   ck->entries[i - 1].name, ck->entries[i].name, (long long)ck->entries[i].index);
    MPQ_TRY(read_provenance(ctx, ck, file));
    *out = ck;
    ck = NULL;
cleanup:
    mpq_free(L.names);
    mpq_free(T.names);
    if (fapl >= 0)
        H5Pclose(fapl);
    mpq_ckpt_close(&ck);
    return err;
}

void mpq_ckpt_close(mpq_ckpt **pck) {
    if (!pck || !*pck)
        return;
    mpq_ckpt *ck = *pck;
    if (ck->h5file >= 0)
        H5Fclose(ck->h5file);
    mpq_free(ck->entries);
    mpq_free(ck->config);
    mpq_free(ck->config_file);
    mpq_free(ck->overrides);
    mpq_free(ck->inputs);
    mpq_free(ck->stage_times);
    mpq_free(ck->eval);
    mpq_free(ck->assignment);
    mpq_free(ck->path);
    mpq_free(ck);
    *pck = NULL;
}

int64_t mpq_ckpt_find(const mpq_ckpt *ck, const char *name) {
    for (int64_t i = 0; i < ck->nentries; i++)
        if (strcmp(ck->entries[i].name, name) == 0)
            return i;
    return -1;
}

void mpq_ckpt_stored_bits(const mpq_ckpt *ck, int64_t *bits, int64_t *weights) {
    int64_t b = 0, w = 0;
    for (int64_t i = 0; i < ck->nentries; i++)
        if (ck->entries[i].quantized) {
            b += 8 * (ck->entries[i].codes_bytes + ck->entries[i].params_bytes);
            w += ck->entries[i].numel;
        }
    *bits = b;
    *weights = w;
}

/* ---- data --------------------------------------------------------------------------- */

static mpq_err read_bytes(mpq_ctx *ctx, const char *path, hid_t file, const char *dset, void *buf) {
    mpq_err err = MPQ_OK;
    hid_t d = H5I_INVALID_HID;
    char what[2 * MPQ_TENSOR_NAME_MAX + 64];
    snprintf(what, sizeof what, "%s: dataset %s", path, dset);
    MPQ_H5_ID(d, H5Dopen2(file, dset, H5P_DEFAULT), what);
    MPQ_H5_TRY(H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), what);
cleanup:
    if (d >= 0)
        H5Dclose(d);
    return err;
}

/* The stored codes of layer e, CRC-checked, then decoded into l->packed
 * (and l->codes) when coded. */
static mpq_err read_codes(mpq_ctx *ctx, const mpq_ckpt *ck, const mpq_ckpt_entry *e,
                          const char *dset, mpq_qlayer *l) {
    mpq_err err = MPQ_OK;
    uint8_t *buf = l->packed;
    if (e->coding != MPQ_CKPT_CODING_FIXED)
        MPQ_CALL(mpq_malloc(ctx, e->codes_bytes, 1, (void **)&buf));
    if (e->codes_bytes > 0)
        MPQ_TRY(read_bytes(ctx, ck->path, ck->h5file, dset, buf));
    MPQ_TRY(mpq_ckpt_check_crc(ctx, ck->path, dset, "codes_crc32", e->codes_crc, buf,
                               e->codes_bytes, "codes"));
    if (e->coding != MPQ_CKPT_CODING_FIXED)
        MPQ_TRY(mpq_ckpt_decode_codes(ctx, ck->path, dset, e->coding, buf, e->codes_bytes, l));
cleanup:
    if (buf != l->packed)
        mpq_free(buf);
    return err;
}

mpq_err mpq_ckpt_read_layer(mpq_ctx *ctx, const mpq_ckpt *ck, int64_t i, mpq_qlayer **out) {
    mpq_err err = MPQ_OK;
    mpq_qlayer *l = NULL;
    mpq_qparams *p = NULL;
    *out = NULL;
    MPQ_CHECK(i >= 0 && i < ck->nentries && ck->entries[i].quantized, MPQ_ERR_ARG,
              "%s: entry %lld is not a quantized layer", ck->path, (long long)i);
    const mpq_ckpt_entry *e = &ck->entries[i];
    char dset[MPQ_TENSOR_NAME_MAX + 32];
    MPQ_TRY(mpq_qlayer_create(ctx, &e->spec, e->rows, e->cols, &l));
    MPQ_ENSURE((e->coding != MPQ_CKPT_CODING_FIXED || l->packed_bytes == e->codes_bytes) &&
                   l->nparam_bytes == e->params_bytes,
               MPQ_ERR_INTERNAL, "%s: layer '%s': sizes changed since opening", ck->path, e->name);
    snprintf(dset, sizeof dset, "/layers/%s/codes", e->name);
    MPQ_TRY(read_codes(ctx, ck, e, dset, l));
    err = mpq_quant_unpack(ctx, &e->spec, l->packed, l->packed_bytes, e->rows * e->cols, l->codes);
    if (err != MPQ_OK) {
        err = rewrap(ctx, err, ck->path, dset);
        goto cleanup;
    }
    snprintf(dset, sizeof dset, "/layers/%s/params", e->name);
    if (e->params_bytes > 0)
        MPQ_TRY(read_bytes(ctx, ck->path, ck->h5file, dset, l->param_bytes));
    MPQ_TRY(mpq_ckpt_check_crc(ctx, ck->path, dset, "params_crc32", e->params_crc, l->param_bytes,
                               e->params_bytes, "parameters"));
    err = mpq_qparams_deserialize(ctx, &e->spec, e->rows, e->cols, l->param_bytes, l->nparam_bytes,
                                  &p);
    if (err != MPQ_OK) {
        err = rewrap(ctx, err, ck->path, dset);
        goto cleanup;
    }
    MPQ_TRY(mpq_ckpt_check_levels(ctx, ck, e, p));
    mpq_qparams_destroy(&l->params);
    l->params = p;
    p = NULL;
    err = mpq_quant_check_codes(ctx, l->params, l->codes);
    if (err != MPQ_OK) {
        snprintf(dset, sizeof dset, "/layers/%s/codes", e->name);
        err = rewrap(ctx, err, ck->path, dset);
        goto cleanup;
    }
    *out = l;
    l = NULL;
cleanup:
    mpq_qparams_destroy(&p);
    mpq_qlayer_destroy(&l);
    return err;
}

mpq_err mpq_ckpt_dequantize_layer(mpq_ctx *ctx, const mpq_ckpt *ck, const char *name, float *out) {
    int64_t i = mpq_ckpt_find(ck, name);
    MPQ_CHECK(i >= 0 && ck->entries[i].quantized, MPQ_ERR_ARG,
              "%s: no quantized layer '%s' in the checkpoint", ck->path, name);
    mpq_qlayer *l = NULL;
    MPQ_CALL(mpq_ckpt_read_layer(ctx, ck, i, &l));
    mpq_qlayer_dequantize(l, out);
    mpq_qlayer_destroy(&l);
    return MPQ_OK;
}

mpq_err mpq_ckpt_read_tensor(mpq_ctx *ctx, const mpq_ckpt *ck, int64_t i, void *out) {
    MPQ_CHECK(i >= 0 && i < ck->nentries && !ck->entries[i].quantized, MPQ_ERR_ARG,
              "%s: entry %lld is not a plain tensor", ck->path, (long long)i);
    const mpq_ckpt_entry *e = &ck->entries[i];
    if (e->numel == 0)
        return MPQ_OK;
    mpq_err err = MPQ_OK;
    hid_t d = H5I_INVALID_HID;
    char dset[MPQ_TENSOR_NAME_MAX + 16], what[2 * MPQ_TENSOR_NAME_MAX + 64];
    snprintf(dset, sizeof dset, "/tensors/%s", e->name);
    snprintf(what, sizeof what, "%s: dataset %s", ck->path, dset);
    MPQ_H5_ID(d, H5Dopen2(ck->h5file, dset, H5P_DEFAULT), what);
    hid_t mt = e->dtype == MPQ_DTYPE_F32 ? H5T_IEEE_F32LE : H5T_STD_U16LE;
    MPQ_H5_TRY(H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), what);
    MPQ_TRY(mpq_ckpt_check_crc(ctx, ck->path, dset, "crc32", e->codes_crc, out,
                               e->numel * (int64_t)mpq_dtype_size(e->dtype), "data"));
cleanup:
    if (d >= 0)
        H5Dclose(d);
    return err;
}
