/* ckpt_describe.c: the self-description of a quantized layer (the layout
 * attributes of /layers/<name>), derived from the spec and the shape exactly
 * as stages/quant packs and serializes them. The writer stores it; the
 * reader derives it again and refuses a file whose attributes disagree. */
#include <stdio.h>
#include <string.h>

#include "ckpt_internal.h"

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
