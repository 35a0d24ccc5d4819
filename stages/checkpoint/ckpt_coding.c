/* ckpt_coding.c: entropy-coded storage of a layer's codes (README.md,
 * "Entropy-coded codes"). The codes of low-bit grids are far from uniform
 * (most weights sit near zero), so zstd's Huffman literal coding stores
 * them in fewer bits than the fixed-length packing. The frame holds the
 * codes in byte-aligned fields (1, 2, 4 or 8 bits: whole codes per byte),
 * so that each byte the coder models is a tuple of codes; each layer keeps
 * the smaller of that frame and the fixed packing. */
#include <stdio.h>
#include <string.h>
#include <zstd.h>

#include "ckpt_internal.h"

/* zstd's level: above 3 the frames of these streams get no smaller (the
 * gain is in the literal coding, not in matches) and coding gets slower. */
#define CODING_LEVEL 3

static const char *const coding_names[MPQ_CKPT_CODING_COUNT] = {
    [MPQ_CKPT_CODING_FIXED] = "fixed",
    [MPQ_CKPT_CODING_ZSTD] = "zstd",
};

const char *mpq_ckpt_coding_name(int coding) {
    return coding >= 0 && coding < MPQ_CKPT_CODING_COUNT ? coding_names[coding] : "?";
}

int mpq_ckpt_coding_find(const char *name) {
    for (int c = 0; c < MPQ_CKPT_CODING_COUNT; c++)
        if (strcmp(name, coding_names[c]) == 0)
            return c;
    return -1;
}

int mpq_ckpt_field_bits(const mpq_qspec *spec) {
    const int need = spec->base3 ? 2 : spec->bits;
    int f = 1;
    while (f < need)
        f *= 2;
    return f;
}

int64_t mpq_ckpt_decoded_bytes(int coding, const mpq_qspec *spec, int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    if (coding == MPQ_CKPT_CODING_FIXED)
        return mpq_quant_packed_bytes(spec, n);
    const int64_t per = 8 / mpq_ckpt_field_bits(spec);
    return n / per + (n % per != 0);
}

/* codes [n] into out [mpq_ckpt_decoded_bytes] in fields of f bits, LSB first. */
static void pack_fields(const uint8_t *codes, int64_t n, int f, uint8_t *out) {
    const int per = 8 / f;
    for (int64_t i = 0; i < n; i += per) {
        unsigned b = 0;
        for (int k = 0; k < per && i + k < n; k++)
            b |= (unsigned)codes[i + k] << (k * f);
        out[i / per] = (uint8_t)b;
    }
}

/* A zstd frame of src [n] into *out (caller: mpq_free) [*len]. */
static mpq_err zstd_frame(mpq_ctx *ctx, const uint8_t *src, int64_t n, uint8_t **out,
                          int64_t *len) {
    size_t cap = ZSTD_compressBound((size_t)n);
    MPQ_CHECK(!ZSTD_isError(cap), MPQ_ERR_ARG,
              "%lld bytes of codes are too many for one zstd frame", (long long)n);
    MPQ_CALL(mpq_malloc(ctx, (int64_t)cap, 1, (void **)out));
    size_t got = ZSTD_compress(*out, cap, src, (size_t)n, CODING_LEVEL);
    if (ZSTD_isError(got)) {
        MPQ_FREE(*out);
        return MPQ_ERROR(MPQ_ERR_INTERNAL, "zstd cannot code %lld bytes of codes: %s", (long long)n,
                         ZSTD_getErrorName(got));
    }
    *len = (int64_t)got;
    return MPQ_OK;
}

mpq_err mpq_ckpt_encode_codes(mpq_ctx *ctx, const mpq_qlayer *l, int *coding, uint8_t **buf,
                              int64_t *len) {
    *coding = MPQ_CKPT_CODING_FIXED;
    *buf = NULL;
    *len = l->packed_bytes;
    if (l->packed_bytes == 0)
        return MPQ_OK;
    const int f = mpq_ckpt_field_bits(&l->spec);
    const int64_t n = l->rows * l->cols;
    const int64_t nb = mpq_ckpt_decoded_bytes(MPQ_CKPT_CODING_ZSTD, &l->spec, l->rows, l->cols);
    uint8_t *fields = NULL, *frame = NULL;
    int64_t nf = 0;
    MPQ_CALL(mpq_malloc(ctx, nb, 1, (void **)&fields));
    pack_fields(l->codes, n, f, fields);
    mpq_err err = zstd_frame(ctx, fields, nb, &frame, &nf);
    mpq_free(fields);
    MPQ_CALL(err);
    if (nf < *len) {
        *coding = MPQ_CKPT_CODING_ZSTD;
        *buf = frame;
        *len = nf;
    } else {
        mpq_free(frame);
    }
    return MPQ_OK;
}

mpq_err mpq_ckpt_coded_bits(mpq_ctx *ctx, const mpq_qlayer *l, int64_t *bits) {
    int coding;
    uint8_t *buf = NULL;
    int64_t len;
    MPQ_CALL(mpq_ckpt_encode_codes(ctx, l, &coding, &buf, &len));
    mpq_free(buf);
    *bits = mpq_qlayer_bits(l) - 8 * l->packed_bytes + 8 * len;
    return MPQ_OK;
}

mpq_err mpq_ckpt_check_coded_len(mpq_ctx *ctx, const char *path, const char *where,
                                 const mpq_ckpt_entry *e) {
    if (e->coding == MPQ_CKPT_CODING_FIXED)
        return MPQ_OK;
    /* A zstd frame decodes to at most 32768 bytes per stored byte (a
     * 4-byte RLE block per 128 KiB): this bounds what a crafted shape may
     * make the reader allocate. */
    int64_t want = mpq_ckpt_decoded_bytes(e->coding, &e->spec, e->rows, e->cols);
    MPQ_CHECK(e->codes_bytes > 0 && want / 32768 <= e->codes_bytes, MPQ_ERR_FORMAT,
              "%s: dataset %s/codes: %lld bytes cannot be a zstd frame of the %lld bytes a "
              "[%lld][%lld] layer needs",
              path, where, (long long)e->codes_bytes, (long long)want, (long long)e->rows,
              (long long)e->cols);
    return MPQ_OK;
}

mpq_err mpq_ckpt_check_frame(mpq_ctx *ctx, const char *path, const char *dset, const uint8_t *src,
                             int64_t n, int64_t want) {
    unsigned long long size = ZSTD_getFrameContentSize(src, (size_t)n);
    MPQ_CHECK(
        size != ZSTD_CONTENTSIZE_ERROR, MPQ_ERR_FORMAT,
        "%s: dataset %s: offset 0: the coded codes do not start with a whole zstd frame header",
        path, dset);
    MPQ_CHECK(size != ZSTD_CONTENTSIZE_UNKNOWN, MPQ_ERR_FORMAT,
              "%s: dataset %s: offset 0: the zstd frame header does not declare its decoded "
              "size (%lld bytes needed)",
              path, dset, (long long)want);
    MPQ_CHECK(size == (unsigned long long)want, MPQ_ERR_FORMAT,
              "%s: dataset %s: offset 0: the zstd frame declares %llu decoded bytes but the "
              "layer needs %lld",
              path, dset, size, (long long)want);
    return MPQ_OK;
}

/* The decoded fields [nb] into l->codes (each code below the grid's
 * size, unused fields of the last byte zero), then packed into l->packed. */
static mpq_err take_fields(mpq_ctx *ctx, const char *path, const char *dset, const uint8_t *in,
                           int64_t nb, mpq_qlayer *l) {
    const int64_t n = l->rows * l->cols;
    const int f = mpq_ckpt_field_bits(&l->spec), per = 8 / f;
    const unsigned limit = l->spec.base3 ? 3u : 1u << l->spec.bits, mask = (1u << f) - 1u;
    for (int64_t i = 0; i < nb * per; i++) {
        unsigned c = ((unsigned)in[i / per] >> ((i % per) * f)) & mask;
        MPQ_CHECK(i < n ? c < limit : c == 0, MPQ_ERR_FORMAT,
                  "%s: dataset %s: decoded byte %lld holds %s %u in field %lld (%d-bit codes%s)",
                  path, dset, (long long)(i / per), i < n ? "code" : "padding", c,
                  (long long)(i % per), l->spec.bits, l->spec.base3 ? ", base3" : "");
        if (i < n)
            l->codes[i] = (uint8_t)c;
    }
    MPQ_CALL(mpq_quant_pack(ctx, &l->spec, l->codes, n, l->packed));
    return MPQ_OK;
}

mpq_err mpq_ckpt_decode_codes(mpq_ctx *ctx, const char *path, const char *dset, int coding,
                              const uint8_t *src, int64_t n, mpq_qlayer *l) {
    MPQ_CHECK(coding == MPQ_CKPT_CODING_ZSTD, MPQ_ERR_ARG, "%s: dataset %s: coding %d is not zstd",
              path, dset, coding);
    const int64_t want = mpq_ckpt_decoded_bytes(coding, &l->spec, l->rows, l->cols);
    MPQ_CALL(mpq_ckpt_check_frame(ctx, path, dset, src, n, want));
    size_t end = ZSTD_findFrameCompressedSize(src, (size_t)n);
    MPQ_CHECK(!ZSTD_isError(end), MPQ_ERR_FORMAT,
              "%s: dataset %s: the zstd frame of %lld bytes is damaged or cut short: %s", path,
              dset, (long long)n, ZSTD_getErrorName(end));
    MPQ_CHECK((int64_t)end == n, MPQ_ERR_FORMAT,
              "%s: dataset %s: offset %zu: %lld bytes follow the end of the zstd frame", path, dset,
              end, (long long)n - (long long)end);
    uint8_t *dst = NULL;
    MPQ_CALL(mpq_malloc(ctx, want, 1, (void **)&dst));
    mpq_err err = MPQ_OK;
    size_t got = ZSTD_decompress(dst, (size_t)want, src, (size_t)n);
    MPQ_ENSURE(!ZSTD_isError(got), MPQ_ERR_FORMAT,
               "%s: dataset %s: the zstd frame cannot be decoded: %s", path, dset,
               ZSTD_getErrorName(got));
    MPQ_ENSURE((int64_t)got == want, MPQ_ERR_FORMAT,
               "%s: dataset %s: the zstd frame decodes to %zu bytes but the layer needs %lld", path,
               dset, got, (long long)want);
    MPQ_TRY(take_fields(ctx, path, dset, dst, want, l));
cleanup:
    mpq_free(dst);
    return err;
}
