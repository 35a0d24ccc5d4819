/* fuzz_ckpt.c: the quantized HDF5 checkpoint reader (mpq_ckpt_open, layer
 * and tensor reads, and the 'mpqckpt' model format), structure-aware.
 *
 * Mutating the raw bytes of an HDF5 file mostly exercises the HDF5
 * library's own parser (which is not ours to fix and is known to crash on
 * some damaged files, see the README). This target instead reads the fuzz
 * input as a recipe and writes a structurally valid HDF5 file with the
 * HDF5 API whose *contents* are hostile: wrong or missing attributes, wrong
 * types, huge or negative sizes, inconsistent shapes, specs and dataset
 * lengths, datasets declared larger than what is stored, duplicate
 * indices, long names. That is exactly the validation layer of
 * stages/ckpt/ckpt_read.c. Each recipe byte is consumed by a small
 * decision; when the input runs out, every later decision takes the value
 * of a valid checkpoint, so short inputs give near-valid files.
 */
#include <hdf5.h>
#include <math.h>
#include <zlib.h>
#include <zstd.h>

#include "fuzz_common.h"
#include "mpq_ckpt.h"
#include "mpq_quant.h"

typedef struct recipe {
    const uint8_t *p;
    size_t n;
} recipe;

static unsigned take(recipe *r) {
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

/* Usually `valid`; sometimes an interesting value or raw bytes. */
static int64_t pick_i64(recipe *r, int64_t valid) {
    static const int64_t odd[] = {0,
                                  -1,
                                  1,
                                  2,
                                  3,
                                  5,
                                  7,
                                  8,
                                  9,
                                  31,
                                  32,
                                  33,
                                  255,
                                  256,
                                  4096,
                                  65537,
                                  INT32_MAX,
                                  (int64_t)INT32_MAX + 1,
                                  INT64_MAX,
                                  INT64_MIN,
                                  INT64_MAX / 8,
                                  (int64_t)1 << 40,
                                  -4096};
    unsigned c = take(r);
    if (c < 200)
        return valid;
    if (c < 245)
        return odd[c % (sizeof odd / sizeof odd[0])];
    int64_t v = 0;
    for (int k = 0; k < 8; k++)
        v = (int64_t)((uint64_t)v << 8 | take(r));
    return v;
}

static const char *const specs[] = {
    "int:bits=4",
    "int:bits=2,sym=true",
    "int:bits=8,gran=channel",
    "int:bits=3,group=4",
    "nf4",
    "pow2:bits=3",
    "powerexp:bits=4",
    "int:bits=4,scale=fp32",
    "int:bits=1",
    "int:bits=4,group=2",
    "bogus:bits=4",
    "int:bits=99",
};

/* A string: valid, one of the spec list, or raw bytes (len < 64). */
static void pick_str(recipe *r, const char *valid, char *buf, size_t len) {
    unsigned c = take(r);
    if (c < 200) {
        snprintf(buf, len, "%s", valid);
    } else if (c < 230) {
        snprintf(buf, len, "%s", specs[c % (sizeof specs / sizeof specs[0])]);
    } else {
        size_t n = take(r) % 64;
        if (n >= len)
            n = len - 1;
        for (size_t k = 0; k < n; k++)
            buf[k] = (char)take(r);
        buf[n] = '\0';
    }
}

static void put_str_attr(recipe *r, hid_t obj, const char *name, const char *valid) {
    unsigned c = take(r);
    if (c == 255)
        return; /* missing */
    if (c == 254) {
        int64_t x = 7; /* wrong type */
        hid_t s = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(obj, name, H5T_NATIVE_INT64, s, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_INT64, &x);
        H5Aclose(a);
        H5Sclose(s);
        return;
    }
    char buf[256];
    pick_str(r, valid, buf, sizeof buf);
    size_t n = strlen(buf);
    if (c == 253)
        n = 200; /* longer than any field */
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, n ? n : 1);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    char *tmp = calloc(1, n + 2);
    memcpy(tmp, buf, strlen(buf) < n ? strlen(buf) : n);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, tmp);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
    free(tmp);
}

/* An int64 (or double) attribute of `n` values; sometimes missing, a
 * string, an array where a scalar is expected, or a float. */
static void put_num_attr(recipe *r, hid_t obj, const char *name, int is_float, const void *valid,
                         int n) {
    unsigned c = take(r);
    if (c == 255)
        return;
    if (c == 254) {
        put_str_attr(r, obj, name, "seven");
        return;
    }
    hsize_t dims[1] = {(hsize_t)n};
    if (c == 253)
        dims[0] = (hsize_t)n + 1 + take(r) % 8;
    int64_t iv[16] = {0};
    double dv[16] = {0};
    for (hsize_t k = 0; k < dims[0] && k < 16; k++) {
        if (is_float) {
            double d = (int)k < n ? ((const double *)valid)[k] : 1.0;
            unsigned m = take(r);
            dv[k] = m < 220 ? d : (m < 235 ? NAN : (m < 245 ? INFINITY : -d));
        } else {
            iv[k] = pick_i64(r, (int)k < n ? ((const int64_t *)valid)[k] : 1);
        }
    }
    hid_t s = n == 1 && dims[0] == 1 && !(c & 1) ? H5Screate(H5S_SCALAR)
                                                 : H5Screate_simple(1, dims, NULL);
    hid_t mt = is_float || c == 252 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64;
    if (c == 252 && !is_float)
        for (int k = 0; k < 16; k++)
            dv[k] = (double)iv[k] + 0.5;
    hid_t a = H5Acreate2(obj, name, mt, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, mt, mt == H5T_NATIVE_DOUBLE ? (const void *)dv : (const void *)iv);
    H5Aclose(a);
    H5Sclose(s);
}

static void put_i64(recipe *r, hid_t obj, const char *name, int64_t v) {
    put_num_attr(r, obj, name, 0, &v, 1);
}

/* A 1-D uint8 dataset of `len` bytes (contiguous, allocated early, filled
 * from the recipe), or declared larger than it is stored. Returns the CRC-32
 * of the bytes written (0 when none). */
static int64_t put_bytes(recipe *r, hid_t g, const char *name, int64_t len) {
    unsigned c = take(r);
    int64_t crc = 0;
    if (c == 255)
        return crc;
    int64_t n = pick_i64(r, len);
    if (n < 0 || n > ((int64_t)1 << 40))
        n = len;
    hsize_t dims[1] = {(hsize_t)n};
    hid_t s = H5Screate_simple(1, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int lazy = n > (1 << 20) || c == 254; /* declared, never written */
    H5Pset_alloc_time(dcpl, lazy ? H5D_ALLOC_TIME_LATE : H5D_ALLOC_TIME_EARLY);
    hid_t t = c == 253 ? H5T_NATIVE_INT16 : H5T_NATIVE_UINT8;
    hid_t d = H5Dcreate2(g, name, t, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d >= 0 && !lazy && n > 0 && t == H5T_NATIVE_UINT8) {
        uint8_t *b = malloc((size_t)n);
        for (int64_t k = 0; k < n; k++)
            b[k] = (uint8_t)(r->n ? take(r) : (k * 37) & 0x3f);
        H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
        crc = (int64_t)crc32_z(crc32_z(0L, Z_NULL, 0), b, (z_size_t)n);
        free(b);
    }
    if (d >= 0)
        H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(s);
    return crc;
}

/* A scalar int64 attribute replaced without a recipe decision. */
static void set_i64(hid_t obj, const char *name, int64_t v) {
    if (H5Aexists(obj, name) > 0)
        H5Adelete(obj, name);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_NATIVE_INT64, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Sclose(s);
}

/* Sometimes (a recipe byte) the layer's codes entropy-coded (codes_coding
 * = "zstd"): a zstd frame of recipe fields, then perhaps damaged (a byte
 * changed, cut short, bytes after it, a wrong decoded size), with the
 * CRC-32 and bits recomputed so that the decoder, not the checksum, meets
 * the damage. n codes of spec; params bytes of parameters. */
static void put_coded(recipe *r, hid_t g, const mpq_qspec *spec, int64_t n, int64_t params) {
    if (take(r) % 4 != 1 || n <= 0 || H5Lexists(g, "codes", H5P_DEFAULT) <= 0)
        return;
    int f = 1;
    while (f < (spec->base3 ? 2 : spec->bits))
        f *= 2;
    const int64_t nb = (n * f + 7) / 8;
    unsigned m = take(r);
    const int64_t plain = m == 4 ? nb + 1 : nb; /* 4: a wrong decoded size */
    uint8_t *fields = calloc((size_t)plain, 1);
    size_t cap = ZSTD_compressBound((size_t)plain) + 16;
    uint8_t *z = malloc(cap);
    if (!fields || !z)
        fuzz_fail("out of memory");
    for (int64_t k = 0; k < plain && r->n; k++)
        fields[k] = (uint8_t)(take(r) & (m == 5 ? 0xff : 0x11)); /* 5: codes out of range */
    size_t len = ZSTD_compress(z, cap, fields, (size_t)plain, 1);
    if (ZSTD_isError(len))
        fuzz_fail("zstd cannot compress the fuzz codes");
    if (m == 1)
        z[take(r) % len] ^= (uint8_t)(1 + take(r));
    else if (m == 2 && len > 1)
        len -= 1 + take(r) % (len - 1);
    else if (m == 3)
        z[len++] = (uint8_t)take(r);
    H5Ldelete(g, "codes", H5P_DEFAULT);
    hsize_t dims[1] = {(hsize_t)len};
    hid_t s = H5Screate_simple(1, dims, NULL);
    hid_t d = H5Dcreate2(g, "codes", H5T_NATIVE_UINT8, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d >= 0) {
        H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, z);
        H5Dclose(d);
    }
    H5Sclose(s);
    set_i64(g, "codes_crc32", (int64_t)crc32_z(crc32_z(0L, Z_NULL, 0), z, (z_size_t)len));
    set_i64(g, "bits", 8 * ((int64_t)len + params));
    put_str_attr(r, g, "codes_coding", "zstd");
    free(fields);
    free(z);
}

static void put_layer(recipe *r, mpq_ctx *ctx, hid_t layers, int i) {
    char name[200];
    snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", i);
    if (take(r) > 250) {
        size_t n = 170 + take(r) % 20; /* too long for MPQ_TENSOR_NAME_MAX */
        memset(name, 'a', n);
        name[n] = '\0';
    }
    hid_t g = H5Gcreate2(layers, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        return;
    char spec_text[128];
    pick_str(r, specs[take(r) % 10], spec_text, sizeof spec_text);
    int64_t rows = 1 + take(r) % 8, cols = 1 + take(r) % 12;
    mpq_qspec spec;
    int64_t codes = 0, params = 0, bits = 4, group = 0;
    const char *family = "int";
    if (mpq_qspec_parse(ctx, spec_text, &spec) == MPQ_OK) {
        bits = spec.bits;
        group = spec.gran == MPQ_QGRAN_GROUP ? spec.group : 0;
        family = spec.ops->name;
        codes = mpq_quant_packed_bytes(&spec, rows * cols);
        if (mpq_qparams_nbytes(ctx, &spec, rows, cols, &params) != MPQ_OK)
            params = 0;
    }
    mpq_err_clear(ctx);
    put_i64(r, g, "index", i);
    put_str_attr(r, g, "spec", spec_text);
    put_str_attr(r, g, "quantizer", family);
    put_i64(r, g, "code_bits", bits);
    put_i64(r, g, "group", group);
    put_i64(r, g, "rows", rows);
    put_i64(r, g, "cols", cols);
    int64_t shape[2] = {rows, cols};
    put_num_attr(r, g, "shape", 0, shape, 2);
    put_i64(r, g, "bits", 8 * (codes + params));
    put_str_attr(r, g, "method", "gptq");
    double loss = 0.5;
    put_num_attr(r, g, "loss", 1, &loss, 1);
    int64_t crc_codes = put_bytes(r, g, "codes", codes);
    int64_t crc_params = put_bytes(r, g, "params", params);
    put_i64(r, g, "codes_crc32", crc_codes);
    put_i64(r, g, "params_crc32", crc_params);
    if (codes > 0)
        put_coded(r, g, &spec, rows * cols, params);
    H5Gclose(g);
}

static void put_tensor(recipe *r, hid_t tensors, int i, int64_t index) {
    char name[64];
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", i);
    unsigned kind = take(r) % 4; /* F32, F16, BF16, or a mismatched type */
    static const char *const dt[] = {"F32", "F16", "BF16", "F32"};
    hid_t t = kind == 0 ? H5T_NATIVE_FLOAT : (kind == 3 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_UINT16);
    int nd = 1 + take(r) % 2;
    if (take(r) > 250)
        nd = 5; /* too many dimensions */
    hsize_t dims[5] = {1 + take(r) % 6, 1 + take(r) % 6, 2, 2, 2};
    int lazy = 0;
    if (take(r) > 240) {
        dims[0] = (hsize_t)1 << (20 + take(r) % 30); /* declared huge, stored nothing */
        lazy = 1;
    }
    hid_t s = H5Screate_simple(nd, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_alloc_time(dcpl, lazy ? H5D_ALLOC_TIME_LATE : H5D_ALLOC_TIME_EARLY);
    hid_t d = H5Dcreate2(tensors, name, t, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d >= 0) {
        put_i64(r, d, "index", index);
        put_str_attr(r, d, "dtype", dt[kind]);
        H5Dclose(d);
    }
    H5Pclose(dcpl);
    H5Sclose(s);
}

static void write_recipe(recipe *r, mpq_ctx *ctx, const char *path) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 0, 1);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0)
        fuzz_fail("cannot create the HDF5 file");
    put_str_attr(r, f, "format", MPQ_CKPT_FORMAT);
    put_i64(r, f, "version", MPQ_CKPT_VERSION);
    if (take(r) != 255) {
        hid_t g = H5Gcreate2(f, "arch", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        put_str_attr(r, g, "family", "llama");
        put_str_attr(r, g, "format", "llama2c");
        put_str_attr(r, g, "model_type", "llama2.c");
        static const char *const ints[] = {"dim",        "hidden_dim",      "n_layers",
                                           "n_heads",    "n_kv_heads",      "head_dim",
                                           "vocab_size", "seq_len",         "tied_embeddings",
                                           "qkv_bias",   "rope_interleaved"};
        static const int64_t vals[] = {8, 12, 1, 2, 2, 4, 16, 32, 1, 0, 1};
        for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
            put_i64(r, g, ints[k], vals[k]);
        double eps = 1e-5, theta = 10000.0;
        put_num_attr(r, g, "norm_eps", 1, &eps, 1);
        put_num_attr(r, g, "rope_theta", 1, &theta, 1);
        H5Gclose(g);
    }
    int nl = take(r) % 4, nt = take(r) % 4;
    if (take(r) != 255) {
        hid_t g = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        for (int i = 0; i < nl; i++)
            put_layer(r, ctx, g, i);
        H5Gclose(g);
    }
    if (take(r) != 255) {
        hid_t g = H5Gcreate2(f, "tensors", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        for (int i = 0; i < nt; i++)
            put_tensor(r, g, i, pick_i64(r, nl + i));
        H5Gclose(g);
    }
    if (take(r) < 128) {
        hid_t g = H5Gcreate2(f, "provenance", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        put_str_attr(r, g, "program_version", "0.1.0");
        put_str_attr(r, g, "commit", "abcdef");
        put_str_attr(r, g, "date", "2024-01-01T00:00:00Z");
        put_i64(r, g, "nranks", 1);
        H5Gclose(g);
    }
    H5Fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_env *env = fuzz_env_get();
    mpq_ctx *ctx = env->ctx;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt.h5", env->dir);
    recipe r = {data, size};
    write_recipe(&r, ctx, path);
    mpq_ckpt *ck = NULL;
    if (mpq_ckpt_open(ctx, path, &ck) == MPQ_OK) {
        struct stat st;
        if (stat(path, &st) != 0)
            fuzz_fail("stat");
        for (int64_t i = 0; i < ck->nentries; i++) {
            const mpq_ckpt_entry *e = &ck->entries[i];
            /* Whatever a reader later allocates for an entry is bounded by
             * the bytes the file really holds. */
            uint64_t stored = e->quantized ? (uint64_t)e->codes_bytes + (uint64_t)e->params_bytes
                                           : (uint64_t)e->numel * mpq_dtype_size(e->dtype);
            if (stored > (uint64_t)st.st_size)
                fuzz_fail("accepted an entry larger than the file");
            if (e->numel < 0)
                fuzz_fail("accepted an entry with a negative size");
            if (e->quantized) {
                if (e->rows <= 0 || e->cols <= 0 || e->rows * e->cols != e->numel)
                    fuzz_fail("accepted a layer whose shape disagrees with rows x cols");
                mpq_qlayer *l = NULL;
                if (mpq_ckpt_read_layer(ctx, ck, i, &l) == MPQ_OK) {
                    float *w = malloc((size_t)e->numel * sizeof *w);
                    if (!w)
                        fuzz_fail("malloc");
                    mpq_qlayer_dequantize(l, w);
                    free(w);
                }
                mpq_qlayer_destroy(&l);
            } else {
                void *buf = malloc((size_t)e->numel * mpq_dtype_size(e->dtype) + 1);
                if (!buf)
                    fuzz_fail("malloc");
                (void)mpq_ckpt_read_tensor(ctx, ck, i, buf);
                free(buf);
            }
            mpq_err_clear(ctx);
        }
        int64_t bits = 0, weights = 0;
        mpq_ckpt_stored_bits(ck, &bits, &weights);
    }
    mpq_ckpt_close(&ck);
    fuzz_done(env);
    /* The same file through the model-format interface (dequantizes). */
    mpq_model *m = NULL;
    (void)mpq_model_open(ctx, path, "mpqckpt", &m);
    mpq_model_close(&m);
    fuzz_done(env);
    return 0;
}
