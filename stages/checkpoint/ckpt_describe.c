/* ckpt_describe.c: the self-description of a quantized layer (the layout
 * attributes of /layers/<name>), derived from the spec and the shape exactly
 * as stages/quant packs and serializes them. The writer stores it; the
 * reader derives it again and refuses a file whose attributes disagree;
 * it also checks what a layer's data must match: the CRC-32 of its bytes
 * and its level table. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "ckpt_internal.h"
#include "mpq_h5.h"

uint32_t mpq_ckpt_crc32(const void *buf, int64_t n) {
    uLong crc = crc32_z(0L, Z_NULL, 0);
    return n > 0 ? (uint32_t)crc32_z(crc, (const Bytef *)buf, (z_size_t)n) : (uint32_t)crc;
}

/* Appends one params section "name:type[count]" to buf [len]. */
static mpq_err add_section(mpq_ctx *ctx, char *buf, size_t len, const char *name, const char *type,
                           int64_t count) {
    size_t used = strlen(buf);
    int n = snprintf(buf + used, len - used, "%s%s:%s[%lld]", used ? "; " : "", name, type,
                     (long long)count);
    MPQ_CHECK(n > 0 && (size_t)n < len - used, MPQ_ERR_INTERNAL,
              "checkpoint layout: params section '%s' does not fit", name);
    return MPQ_OK;
}

mpq_err mpq_ckpt_describe(mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                          mpq_ckpt_layout *out) {
    const mpq_quant_ops *ops = spec->ops;
    memset(out, 0, sizeof *out);
    MPQ_CHECK(rows >= 1 && cols >= 1, MPQ_ERR_ARG,
              "quantizer '%s': layer shape [%lld][%lld] is not a matrix", ops->name,
              (long long)rows, (long long)cols);
    snprintf(out->packing, sizeof out->packing, "%s", spec->base3 ? "base3" : "bits");
    /* fp16z scales are stored as halves */
    snprintf(out->scale_format, sizeof out->scale_format, "%s",
             mpq_qscale_name(spec->scale == MPQ_QSCALE_FP16Z ? MPQ_QSCALE_FP16 : spec->scale));
    switch (spec->gran) { /* as mpq_qparams_create groups the columns */
        case MPQ_QGRAN_TENSOR:
            out->group_cols = cols;
            out->groups_per_row = 0;
            out->n_groups = 1;
            break;
        case MPQ_QGRAN_CHANNEL:
            out->group_cols = cols;
            out->groups_per_row = 1;
            out->n_groups = rows;
            break;
        default:
            MPQ_CHECK(spec->group >= 1, MPQ_ERR_ARG, "quantizer '%s': group=%lld is not >= 1",
                      ops->name, (long long)spec->group);
            out->group_cols = spec->group < cols ? spec->group : cols;
            out->groups_per_row = (cols + out->group_cols - 1) / out->group_cols;
            MPQ_CALL(mpq_mul64(ctx, rows, out->groups_per_row, "number of groups", &out->n_groups));
            break;
    }
    /* The sections in the order mpq_qparams_serialize writes them. */
    char *pl = out->params_layout;
    const size_t pll = sizeof out->params_layout;
    char zt[8];
    snprintf(zt, sizeof zt, "u%d", spec->bits);
    MPQ_CALL(add_section(ctx, pl, pll, "scale", out->scale_format, out->n_groups));
    if (mpq_qspec_has_zero(spec))
        MPQ_CALL(add_section(ctx, pl, pll, "zero", zt, out->n_groups));
    if (ops->has_sign)
        MPQ_CALL(add_section(ctx, pl, pll, "sign", "u1", rows));
    if (ops->has_tensor)
        MPQ_CALL(add_section(ctx, pl, pll, spec->scale == MPQ_QSCALE_E4M3 ? "tensor_scale" : "a",
                             "fp32", 1));
    /* The formula as mpq_qval evaluates it, in float32, in the order written. */
    const char *f = "w = scale[g] * levels[code]";
    if (mpq_qspec_has_zero(spec))
        f = "w = scale[g] * (levels[code] - zero[g])";
    else if (ops->has_sign)
        f = "w = scale[g] * levels[sign[r]][code]";
    else if (ops->has_tensor && spec->scale == MPQ_QSCALE_E4M3)
        f = "w = (scale[g] * tensor_scale) * levels[code]";
    snprintf(out->dequant, sizeof out->dequant, "%s", f);
    out->level_rows = ops->has_sign ? 2 : 1;
    out->ncodes = 1 << spec->bits;
    return MPQ_OK;
}

void mpq_ckpt_levels(const mpq_qparams *p, const mpq_ckpt_layout *lay, float *lev) {
    for (int k = 0; k < lay->level_rows; k++)
        memcpy(lev + (size_t)k * (size_t)lay->ncodes, p->tab[k].level,
               (size_t)lay->ncodes * sizeof *lev);
}

/* The bytes just read from dataset dset [n] against the CRC-32 recorded
 * in attribute `attr` (want; -1: none recorded). */
mpq_err mpq_ckpt_check_crc(mpq_ctx *ctx, const char *path, const char *dset, const char *attr,
                           int64_t want, const void *buf, int64_t n, const char *what) {
    if (want < 0)
        return MPQ_OK;
    uint32_t have = mpq_ckpt_crc32(buf, n);
    MPQ_CHECK(have == (uint32_t)want, MPQ_ERR_FORMAT,
              "%s: dataset %s: CRC-32 of the stored bytes is 0x%08x but attribute '%s' records "
              "0x%08x: the %s are damaged",
              path, dset, (unsigned)have, attr, (unsigned)want, what);
    return MPQ_OK;
}

/* The `levels` attribute, where present, equals the level table of the
 * parameters read (for powerexp it depends on the stored exponent, so it is
 * checked here rather than at open): shape [ncodes] or [2][ncodes], the
 * same float32 bits (any NaN for an unused code). */
mpq_err mpq_ckpt_check_levels(mpq_ctx *ctx, const mpq_ckpt *ck, const mpq_ckpt_entry *e,
                              const mpq_qparams *p) {
    mpq_err err = MPQ_OK;
    hid_t g = H5I_INVALID_HID, a = H5I_INVALID_HID, s = H5I_INVALID_HID, t = H5I_INVALID_HID;
    char where[MPQ_TENSOR_NAME_MAX + 16];
    float have[2 * MPQ_QMAXCODES], want[2 * MPQ_QMAXCODES];
    mpq_ckpt_layout y;
    snprintf(where, sizeof where, "/layers/%s", e->name);
    MPQ_CALL(mpq_ckpt_describe(ctx, &e->spec, e->rows, e->cols, &y));
    MPQ_H5_ID(g, H5Gopen2(ck->h5file, where, H5P_DEFAULT), ck->path);
    if (H5Aexists(g, "levels") <= 0)
        goto cleanup;
    MPQ_H5_ID(a, H5Aopen(g, "levels", H5P_DEFAULT), ck->path);
    MPQ_H5_ID(t, H5Aget_type(a), ck->path);
    MPQ_H5_ID(s, H5Aget_space(a), ck->path);
    hsize_t dims[2] = {0, 0};
    int nd = H5Sget_simple_extent_ndims(s);
    if (nd >= 1 && nd <= 2)
        H5Sget_simple_extent_dims(s, dims, NULL);
    int ok = y.level_rows == 1 ? nd == 1 && dims[0] == (hsize_t)y.ncodes
                               : nd == 2 && dims[0] == 2 && dims[1] == (hsize_t)y.ncodes;
    MPQ_ENSURE(H5Tget_class(t) == H5T_FLOAT && ok, MPQ_ERR_FORMAT,
               "%s: %s: attribute 'levels' is not a float array of shape %s%d] (spec '%s')",
               ck->path, where, y.level_rows == 1 ? "[" : "[2][", y.ncodes, e->spec_text);
    MPQ_H5_TRY(H5Aread(a, H5T_NATIVE_FLOAT, have), ck->path);
    mpq_ckpt_levels(p, &y, want);
    for (int k = 0; k < y.level_rows * y.ncodes; k++) {
        uint32_t hb, wb;
        memcpy(&hb, &have[k], 4);
        memcpy(&wb, &want[k], 4);
        MPQ_ENSURE(hb == wb || (isnan(have[k]) && isnan(want[k])), MPQ_ERR_FORMAT,
                   "%s: %s: attribute 'levels' entry %d is %.9g but spec '%s' with these "
                   "parameters gives %.9g",
                   ck->path, where, k, (double)have[k], e->spec_text, (double)want[k]);
    }
cleanup:
    if (s >= 0)
        H5Sclose(s);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    if (g >= 0)
        H5Gclose(g);
    return err;
}
