/* quant_pack.c: code packing (b bits LSB-first, or 5 ternary digits per
 * byte), parameter serialization, exact storage cost, and the quantized layer
 * object. */
#include <math.h>
#include <string.h>

#include "mpq_ctx.h"
#include "quant_internal.h"

/* ---- bit streams ------------------------------------------------------------ */

void mpq_qbits_pack(const uint8_t *v, int64_t n, int bits, uint8_t *out) {
    int64_t i = 0, o = 0;
    switch (bits) { /* whole codes per byte: straight loops */
        case 8:
            memcpy(out, v, (size_t)n);
            return;
        case 4:
            for (; i + 2 <= n; i += 2)
                out[o++] = (uint8_t)(v[i] | v[i + 1] << 4);
            break;
        case 2:
            for (; i + 4 <= n; i += 4)
                out[o++] = (uint8_t)(v[i] | v[i + 1] << 2 | v[i + 2] << 4 | v[i + 3] << 6);
            break;
        case 1:
            for (; i + 8 <= n; i += 8)
                out[o++] = (uint8_t)(v[i] | v[i + 1] << 1 | v[i + 2] << 2 | v[i + 3] << 3 |
                                     v[i + 4] << 4 | v[i + 5] << 5 | v[i + 6] << 6 | v[i + 7] << 7);
            break;
        default:
            break;
    }
    uint64_t acc = 0;
    int nb = 0;
    for (; i < n; i++) {
        acc |= (uint64_t)v[i] << nb;
        nb += bits;
        while (nb >= 8) {
            out[o++] = (uint8_t)acc;
            acc >>= 8;
            nb -= 8;
        }
    }
    if (nb > 0)
        out[o] = (uint8_t)acc;
}

void mpq_qbits_unpack(const uint8_t *in, int64_t n, int bits, uint8_t *v) {
    int64_t i = 0, o = 0;
    switch (bits) {
        case 8:
            memcpy(v, in, (size_t)n);
            return;
        case 4:
            for (; i + 2 <= n; i += 2, o++) {
                v[i] = in[o] & 15;
                v[i + 1] = in[o] >> 4;
            }
            break;
        case 2:
            for (; i + 4 <= n; i += 4, o++)
                for (int k = 0; k < 4; k++)
                    v[i + k] = (in[o] >> (2 * k)) & 3;
            break;
        case 1:
            for (; i + 8 <= n; i += 8, o++)
                for (int k = 0; k < 8; k++)
                    v[i + k] = (in[o] >> k) & 1;
            break;
        default:
            break;
    }
    uint64_t acc = 0;
    int nb = 0;
    unsigned mask = (1u << bits) - 1;
    for (; i < n; i++) {
        while (nb < bits) {
            acc |= (uint64_t)in[o++] << nb;
            nb += 8;
        }
        v[i] = (uint8_t)(acc & mask);
        acc >>= bits;
        nb -= bits;
    }
}

int64_t mpq_quant_packed_bytes(const mpq_qspec *spec, int64_t n) {
    if (spec->base3)
        return (n + 4) / 5;
    return (n / 8) * spec->bits + ((n % 8) * spec->bits + 7) / 8;
}

mpq_err mpq_quant_pack(mpq_ctx *ctx, const mpq_qspec *spec, const uint8_t *codes, int64_t n,
                       uint8_t *out) {
    MPQ_CHECK(n >= 0, MPQ_ERR_ARG, "mpq_quant_pack: n = %lld", (long long)n);
    unsigned limit = spec->base3 ? 3u : 1u << spec->bits;
    uint8_t any = 0;
    for (int64_t i = 0; i < n; i++)
        any |= (uint8_t)(codes[i] >= limit);
    if (any) {
        for (int64_t i = 0; i < n; i++)
            MPQ_CHECK(codes[i] < limit, MPQ_ERR_ARG,
                      "quantizer '%s': code %u at index %lld does not fit %s", spec->ops->name,
                      (unsigned)codes[i], (long long)i, spec->base3 ? "a ternary digit" : "bits");
    }
    if (!spec->base3) {
        mpq_qbits_pack(codes, n, spec->bits, out);
        return MPQ_OK;
    }
    /* 3^5 = 243 <= 256: byte = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4. */
    int64_t o = 0, i = 0;
    for (; i + 5 <= n; i += 5)
        out[o++] = (uint8_t)(codes[i] + 3 * codes[i + 1] + 9 * codes[i + 2] + 27 * codes[i + 3] +
                             81 * codes[i + 4]);
    if (i < n) {
        unsigned b = 0, m = 1;
        for (; i < n; i++, m *= 3)
            b += codes[i] * m;
        out[o] = (uint8_t)b;
    }
    return MPQ_OK;
}

mpq_err mpq_quant_unpack(mpq_ctx *ctx, const mpq_qspec *spec, const uint8_t *in, int64_t nbytes,
                         int64_t n, uint8_t *codes) {
    int64_t want = mpq_quant_packed_bytes(spec, n);
    MPQ_CHECK(nbytes == want, MPQ_ERR_FORMAT,
              "quantizer '%s': packed codes of %lld weights need %lld bytes, got %lld",
              spec->ops->name, (long long)n, (long long)want, (long long)nbytes);
    if (!spec->base3) {
        mpq_qbits_unpack(in, n, spec->bits, codes);
        return MPQ_OK;
    }
    for (int64_t o = 0, i = 0; i < n; o++) {
        unsigned b = in[o];
        MPQ_CHECK(b < 243, MPQ_ERR_FORMAT,
                  "quantizer '%s': packed byte %lld = %u is not 5 ternary digits (must be < 243)",
                  spec->ops->name, (long long)o, b);
        for (int k = 0; k < 5 && i < n; k++, i++) {
            codes[i] = (uint8_t)(b % 3);
            b /= 3;
        }
    }
    return MPQ_OK;
}

/* ---- parameters ------------------------------------------------------------- */

static int scale_bytes(mpq_qscale s) {
    return s == MPQ_QSCALE_FP32 ? 4 : (s == MPQ_QSCALE_FP16 || s == MPQ_QSCALE_FP16Z ? 2 : 1);
}

/* Number of groups of a [rows][cols] layer (validated shape). */
static mpq_err count_groups(mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                            int64_t *ngroups) {
    MPQ_CHECK(rows >= 1 && cols >= 1, MPQ_ERR_ARG,
              "quantizer '%s': layer shape [%lld][%lld] is not a matrix", spec->ops->name,
              (long long)rows, (long long)cols);
    if (spec->gran == MPQ_QGRAN_TENSOR) {
        *ngroups = 1;
    } else if (spec->gran == MPQ_QGRAN_CHANNEL) {
        *ngroups = rows;
    } else {
        MPQ_CHECK(spec->group >= 1, MPQ_ERR_ARG, "quantizer '%s': group=%lld is not >= 1",
                  spec->ops->name, (long long)spec->group);
        int64_t g = spec->group < cols ? spec->group : cols;
        MPQ_CALL(mpq_mul64(ctx, rows, (cols + g - 1) / g, "number of groups", ngroups));
    }
    return MPQ_OK;
}

mpq_err mpq_qparams_nbytes(mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                           int64_t *nbytes) {
    int64_t ng, n;
    MPQ_CALL(count_groups(ctx, spec, rows, cols, &ng));
    MPQ_CALL(mpq_mul64(ctx, ng, scale_bytes(spec->scale), "parameter bytes", &n));
    if (mpq_qspec_has_zero(spec))
        n += (ng / 8) * spec->bits + ((ng % 8) * spec->bits + 7) / 8;
    if (spec->ops->has_sign)
        n += (rows + 7) / 8;
    if (spec->ops->has_tensor)
        n += 4;
    *nbytes = n;
    return MPQ_OK;
}

static void put_f32(uint8_t *o, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    for (int k = 0; k < 4; k++)
        o[k] = (uint8_t)(u >> (8 * k));
}

static float get_f32(const uint8_t *in) {
    uint32_t u = 0;
    for (int k = 0; k < 4; k++)
        u |= (uint32_t)in[k] << (8 * k);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

mpq_err mpq_qparams_serialize(mpq_ctx *ctx, const mpq_qparams *p, uint8_t *out) {
    mpq_err err = MPQ_OK;
    uint8_t *tmp = NULL;
    const mpq_qspec *s = &p->spec;
    uint8_t *o = out;
    for (int64_t g = 0; g < p->ngroups; g++) {
        float v = p->scale[g];
        switch (s->scale) {
            case MPQ_QSCALE_FP16:
            case MPQ_QSCALE_FP16Z: {
                uint16_t h = mpq_fp16_bits(v);
                o[0] = (uint8_t)h;
                o[1] = (uint8_t)(h >> 8);
                o += 2;
                break;
            }
            case MPQ_QSCALE_FP32:
                put_f32(o, v);
                o += 4;
                break;
            case MPQ_QSCALE_E8M0: {
                int k;
                frexpf(v, &k);
                *o++ = (uint8_t)(k - 1 + 127);
                break;
            }
            default:
                *o++ = mpq_e4m3_bits(v);
                break;
        }
    }
    if (p->zero) {
        MPQ_ALLOC_TRY(tmp, p->ngroups);
        for (int64_t g = 0; g < p->ngroups; g++)
            tmp[g] = (uint8_t)p->zero[g];
        mpq_qbits_pack(tmp, p->ngroups, s->bits, o);
        o += (p->ngroups / 8) * s->bits + ((p->ngroups % 8) * s->bits + 7) / 8;
    }
    if (p->sign) {
        int64_t nb = (p->rows + 7) / 8;
        memset(o, 0, (size_t)nb);
        for (int64_t r = 0; r < p->rows; r++)
            if (p->sign[r] < 0)
                o[r / 8] |= (uint8_t)(1u << (r % 8));
        o += nb;
    }
    if (s->ops->has_tensor) {
        put_f32(o, s->scale == MPQ_QSCALE_E4M3 ? p->tensor_scale : p->expo);
        o += 4;
    }
cleanup:
    MPQ_FREE(tmp);
    return err;
}

mpq_err mpq_qparams_deserialize(mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                                const uint8_t *in, int64_t nbytes, mpq_qparams **out) {
    mpq_err err = MPQ_OK;
    mpq_qparams *p = NULL;
    uint8_t *tmp = NULL;
    int64_t want;
    const char *qn = spec->ops->name;
    MPQ_CALL(mpq_qparams_nbytes(ctx, spec, rows, cols, &want));
    MPQ_CHECK(nbytes == want, MPQ_ERR_FORMAT,
              "quantizer '%s': parameters of a [%lld][%lld] layer need %lld bytes, got %lld", qn,
              (long long)rows, (long long)cols, (long long)want, (long long)nbytes);
    MPQ_TRY(mpq_qparams_create(ctx, spec, rows, cols, &p));
    const uint8_t *i = in;
    for (int64_t g = 0; g < p->ngroups; g++) {
        float v;
        switch (spec->scale) {
            case MPQ_QSCALE_FP16:
            case MPQ_QSCALE_FP16Z:
                v = mpq_fp16_value((uint16_t)(i[0] | i[1] << 8));
                i += 2;
                break;
            case MPQ_QSCALE_FP32:
                v = get_f32(i);
                i += 4;
                break;
            case MPQ_QSCALE_E8M0:
                v = *i == 255 ? NAN : ldexpf(1.0f, (int)*i - 127);
                i++;
                break;
            default:
                v = mpq_e4m3_value(*i++);
                break;
        }
        MPQ_ENSURE(isfinite(v) && v > 0.0f, MPQ_ERR_FORMAT,
                   "quantizer '%s': scale of group %lld is %g (must be finite and > 0)", qn,
                   (long long)g, (double)v);
        p->scale[g] = v;
    }
    if (p->zero) {
        MPQ_ALLOC_TRY(tmp, p->ngroups);
        mpq_qbits_unpack(i, p->ngroups, spec->bits, tmp);
        for (int64_t g = 0; g < p->ngroups; g++)
            p->zero[g] = tmp[g];
        i += (p->ngroups / 8) * spec->bits + ((p->ngroups % 8) * spec->bits + 7) / 8;
    }
    if (p->sign) {
        for (int64_t r = 0; r < rows; r++)
            p->sign[r] = (int8_t)((i[r / 8] >> (r % 8)) & 1 ? -1 : 1);
        i += (rows + 7) / 8;
    }
    if (spec->ops->has_tensor) {
        float v = get_f32(i);
        if (spec->scale == MPQ_QSCALE_E4M3) {
            MPQ_ENSURE(isfinite(v) && v > 0.0f, MPQ_ERR_FORMAT,
                       "quantizer '%s': tensor scale is %g (must be finite and > 0)", qn,
                       (double)v);
            p->tensor_scale = v;
        } else {
            MPQ_ENSURE(v > 0.0f && v <= 1.0f, MPQ_ERR_FORMAT,
                       "quantizer '%s': exponent a is %g (must be in (0, 1])", qn, (double)v);
            MPQ_ENSURE(spec->a == 0.0 || v == (float)spec->a, MPQ_ERR_FORMAT,
                       "quantizer '%s': exponent a is %g but the spec fixes a=%g", qn, (double)v,
                       spec->a);
            p->expo = v;
            mpq_qparams_tables(p);
        }
    }
    *out = p;
    p = NULL;
cleanup:
    MPQ_FREE(tmp);
    mpq_qparams_destroy(&p);
    return err;
}

mpq_err mpq_quant_storage_bits(mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                               int64_t *bits) {
    int64_t n, pb, total;
    MPQ_CALL(mpq_qparams_nbytes(ctx, spec, rows, cols, &pb));
    MPQ_CALL(mpq_mul64(ctx, rows, cols, "layer size", &n));
    MPQ_CALL(mpq_add64(ctx, mpq_quant_packed_bytes(spec, n), pb, "layer bytes", &total));
    MPQ_CALL(mpq_mul64(ctx, total, 8, "layer bits", bits));
    return MPQ_OK;
}

/* ---- the quantized layer -------------------------------------------------- */

mpq_err mpq_qlayer_create(mpq_ctx *ctx, const mpq_qspec *spec, int64_t rows, int64_t cols,
                          mpq_qlayer **out) {
    mpq_err err = MPQ_OK;
    mpq_qlayer *l = NULL;
    MPQ_ALLOC(l, 1);
    l->spec = *spec;
    l->rows = rows;
    l->cols = cols;
    MPQ_TRY(mpq_qparams_create(ctx, spec, rows, cols, &l->params));
    int64_t n;
    MPQ_TRY(mpq_mul64(ctx, rows, cols, "layer size", &n));
    MPQ_ALLOC_TRY(l->codes, n);
    l->packed_bytes = mpq_quant_packed_bytes(spec, n);
    MPQ_ALLOC_TRY(l->packed, l->packed_bytes > 0 ? l->packed_bytes : 1);
    MPQ_TRY(mpq_qparams_nbytes(ctx, spec, rows, cols, &l->nparam_bytes));
    MPQ_ALLOC_TRY(l->param_bytes, l->nparam_bytes > 0 ? l->nparam_bytes : 1);
    *out = l;
    return MPQ_OK;
cleanup:
    mpq_qlayer_destroy(&l);
    return err;
}

void mpq_qlayer_destroy(mpq_qlayer **l) {
    if (!l || !*l)
        return;
    mpq_qparams_destroy(&(*l)->params);
    MPQ_FREE((*l)->codes);
    MPQ_FREE((*l)->packed);
    MPQ_FREE((*l)->param_bytes);
    MPQ_FREE(*l);
}

mpq_err mpq_qlayer_finish(mpq_ctx *ctx, mpq_qlayer *l) {
    MPQ_CALL(mpq_quant_pack(ctx, &l->spec, l->codes, l->rows * l->cols, l->packed));
    MPQ_CALL(mpq_qparams_serialize(ctx, l->params, l->param_bytes));
    return MPQ_OK;
}

mpq_err mpq_qlayer_quantize(mpq_ctx *ctx, mpq_qlayer *l, const float *w, const float *imp) {
    MPQ_CALL(mpq_quant_fit(ctx, l->params, w, imp));
    mpq_quant_quantize(l->params, w, l->codes);
    MPQ_CALL(mpq_qlayer_finish(ctx, l));
    return MPQ_OK;
}

void mpq_qlayer_dequantize(const mpq_qlayer *l, float *out) {
    mpq_quant_dequantize(l->params, l->codes, out);
}

int64_t mpq_qlayer_bits(const mpq_qlayer *l) {
    return 8 * (l->packed_bytes + l->nparam_bytes);
}
