/* test_ckpt_errors.c: a small synthetic checkpoint (no shared data): a
 * linear layer with zero-points and a short last group, a 4-D conv weight,
 * F32/F16/BF16 plain tensors; written on an MPI context of one rank and on a
 * serial context; then damaged copies (truncated, wrong version, wrong
 * format, codes of the wrong length, a zero scale, a bad spec, a missing
 * attribute, an unknown dtype, not HDF5 at all, an external or soft link)
 * must fail with errors that name the file and the object. Writer misuse is refused too.
 * The layout attributes: their values, contradicting ones refused, none at all accepted.
 * Checksums: a flipped bit in codes, params or a tensor refused naming the dataset, a file
 * without them read alike; `group`, `quantizer` and the /arch `family` checked. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpq_ckpt.h"
#include "mpq_h5.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx;
static char g_dir[64];
static char g_good[128];

#define ROWS 6
#define COLS 40 /* group 16: groups of 16, 16, 8 */

static float g_w[ROWS * COLS], g_conv[4 * 2 * 3 * 3], g_bias[ROWS];
static uint16_t g_half[3], g_bf[4];

static const char *path_in(const char *name, char *buf, size_t len) {
    snprintf(buf, len, "%s/%s", g_dir, name);
    return buf;
}

static mpq_err make_layer(mpq_ctx *ctx, const char *spec_text, int64_t rows, int64_t cols,
                          const float *w, mpq_qlayer **out) {
    mpq_qspec spec;
    MPQ_CALL(mpq_qspec_parse(ctx, spec_text, &spec));
    MPQ_CALL(mpq_qlayer_create(ctx, &spec, rows, cols, out));
    MPQ_CALL(mpq_qlayer_quantize(ctx, *out, w, NULL));
    return MPQ_OK;
}

/* Writes the synthetic checkpoint with context ctx. */
static mpq_err write_synthetic(mpq_ctx *ctx, const char *path) {
    mpq_err err = MPQ_OK;
    mpq_ckpt_writer *w = NULL;
    mpq_qlayer *lin = NULL, *conv = NULL;
    MPQ_TRY(make_layer(ctx, "int:bits=4,group=16", ROWS, COLS, g_w, &lin));
    MPQ_TRY(make_layer(ctx, "nf4", 4, 18, g_conv, &conv));
    MPQ_TRY(mpq_ckpt_writer_create(ctx, path, 0, NULL, 0, &w));
    mpq_arch a = {.family = "", .format = "safetensors"};
    MPQ_TRY(mpq_ckpt_write_arch(ctx, w, &a));
    mpq_ckpt_layer_desc d1 = {.tensor = "lin.weight", .method = "rtn", .loss = 0.5};
    MPQ_TRY(mpq_ckpt_write_layer(ctx, w, &d1, lin, 0));
    mpq_tensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "lin.bias");
    t.dtype = MPQ_DTYPE_F32;
    t.ndim = 1;
    t.shape[0] = ROWS;
    t.numel = ROWS;
    t.data = g_bias;
    MPQ_TRY(mpq_ckpt_write_tensor(ctx, w, &t, 0));
    mpq_ckpt_layer_desc d2 = {
        .tensor = "conv.weight", .ndim = 4, .shape = {4, 2, 3, 3}, .method = "gptq", .loss = NAN};
    MPQ_TRY(mpq_ckpt_write_layer(ctx, w, &d2, conv, 0));
    snprintf(t.name, sizeof t.name, "half");
    t.dtype = MPQ_DTYPE_F16;
    t.shape[0] = t.numel = 3;
    t.data = g_half;
    MPQ_TRY(mpq_ckpt_write_tensor(ctx, w, &t, 0));
    snprintf(t.name, sizeof t.name, "bf");
    t.dtype = MPQ_DTYPE_BF16;
    t.ndim = 2;
    t.shape[0] = t.shape[1] = 2;
    t.numel = 4;
    t.data = g_bf;
    MPQ_TRY(mpq_ckpt_write_tensor(ctx, w, &t, 0));
    mpq_ckpt_provenance p = {.config = "a = 1;\n",
                             .config_file = "a = 2;\n",
                             .overrides = "[\"a=1\"]",
                             .date = "2001-02-03T04:05:06Z"};
    MPQ_TRY(mpq_ckpt_write_provenance(ctx, w, &p));
    MPQ_TRY(mpq_ckpt_commit(ctx, &w));
cleanup:
    mpq_ckpt_abort(ctx, &w);
    mpq_qlayer_destroy(&lin);
    mpq_qlayer_destroy(&conv);
    return err;
}

/* ---- the good file ------------------------------------------------------------- */

static void check_good(mpq_ctx *ctx, const char *path) {
    mpq_ckpt *ck = NULL;
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, path, &ck));
    assert_int_equal(ck->nentries, 5);
    assert_int_equal(ck->nlayers, 2);
    const char *order[] = {"lin.weight", "lin.bias", "conv.weight", "half", "bf"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(ck->entries[i].name, order[i]);
    assert_string_equal(ck->date, "2001-02-03T04:05:06Z");
    assert_string_equal(ck->config, "a = 1;\n");
    assert_string_equal(ck->config_file, "a = 2;\n");
    assert_string_equal(ck->overrides, "[\"a=1\"]");
    assert_string_equal(ck->eval, "{}");
    assert_true(isnan(ck->entries[2].loss));
    assert_string_equal(ck->entries[2].method, "gptq");
    /* The reference: the same layers quantized again here. */
    mpq_qlayer *lin = NULL, *conv = NULL;
    MPQ_ASSERT_OK(ctx, make_layer(ctx, "int:bits=4,group=16", ROWS, COLS, g_w, &lin));
    MPQ_ASSERT_OK(ctx, make_layer(ctx, "nf4", 4, 18, g_conv, &conv));
    int64_t bits = 0, weights = 0;
    mpq_ckpt_stored_bits(ck, &bits, &weights);
    assert_int_equal(bits, mpq_qlayer_bits(lin) + mpq_qlayer_bits(conv));
    assert_int_equal(weights, ROWS * COLS + 72);
    mpq_ckpt_close(&ck);

    /* As a model: shapes, dtypes and values. */
    mpq_model *m = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, path, "mpqckpt", &m));
    assert_string_equal(mpq_model_arch(m)->format, "mpqckpt");
    assert_int_equal(mpq_model_ntensors(m), 5);
    float want[ROWS * COLS];
    mpq_qlayer_dequantize(lin, want);
    const mpq_tensor *t = mpq_model_find(m, "lin.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, MPQ_DTYPE_F32);
    assert_memory_equal(t->data, want, sizeof want);
    t = mpq_model_find(m, "conv.weight");
    assert_int_equal(t->ndim, 4);
    assert_int_equal(t->shape[3], 3);
    mpq_qlayer_dequantize(conv, want);
    assert_memory_equal(t->data, want, 72 * sizeof(float));
    t = mpq_model_find(m, "half");
    assert_int_equal(t->dtype, MPQ_DTYPE_F16);
    assert_memory_equal(t->data, g_half, sizeof g_half);
    t = mpq_model_find(m, "bf");
    assert_int_equal(t->dtype, MPQ_DTYPE_BF16);
    assert_memory_equal(t->data, g_bf, sizeof g_bf);
    assert_memory_equal(mpq_model_find(m, "lin.bias")->data, g_bias, sizeof g_bias);
    mpq_model_close(&m);
    mpq_qlayer_destroy(&lin);
    mpq_qlayer_destroy(&conv);
}

static void test_good_mpi(void **state) {
    (void)state;
    check_good(g_ctx, g_good);
}

static void test_good_serial(void **state) {
    (void)state;
    mpq_ctx *sctx = NULL;
    assert_int_equal(mpq_ctx_create(MPI_COMM_NULL, &sctx), MPQ_OK);
    mpq_log_set_level(sctx, MPQ_LOG_WARN);
    char p[128];
    MPQ_ASSERT_OK(sctx, write_synthetic(sctx, path_in("serial.h5", p, sizeof p)));
    check_good(sctx, p);
    mpq_ctx_destroy(&sctx);
}

/* ---- damaged copies -------------------------------------------------------------- */

static const char *copy_good(const char *name, char *buf, size_t len) {
    path_in(name, buf, len);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_good, buf);
    assert_int_equal(system(cmd), 0);
    return buf;
}

/* Opening must fail with `code`, naming the file and each fragment. */
static void expect_open_error(const char *path, mpq_err code, const char *frag1,
                              const char *frag2) {
    mpq_ctx *ctx = g_ctx;
    mpq_ckpt *ck = NULL;
    mpq_err e = mpq_ckpt_open(ctx, path, &ck);
    if (e != code)
        fail_msg("%s: expected %s, got %s: %s", path, mpq_err_name(code), mpq_err_name(e),
                 ctx->err_msg);
    assert_null(ck);
    if (!strstr(ctx->err_msg, path) || (frag1 && !strstr(ctx->err_msg, frag1)) ||
        (frag2 && !strstr(ctx->err_msg, frag2)))
        fail_msg("message does not name '%s' / '%s' / '%s': %s", path, frag1 ? frag1 : "",
                 frag2 ? frag2 : "", ctx->err_msg);
    mpq_err_clear(ctx);
    /* The model path reports the same problem. */
    mpq_model *m = NULL;
    assert_int_equal(mpq_model_open(ctx, path, "auto", &m), code);
    assert_non_null(strstr(ctx->err_msg, path));
    mpq_err_clear(ctx);
}

static void truncate_to(const char *path, off_t size) {
    assert_int_equal(truncate(path, size), 0);
}

static void test_truncated(void **state) {
    (void)state;
    char p[128];
    struct stat st;
    assert_int_equal(stat(g_good, &st), 0);
    copy_good("half.h5", p, sizeof p);
    truncate_to(p, st.st_size / 2);
    expect_open_error(p, MPQ_ERR_FORMAT, "truncated or damaged", NULL);
    copy_good("tiny.h5", p, sizeof p);
    truncate_to(p, 100);
    expect_open_error(p, MPQ_ERR_FORMAT, NULL, NULL);
}

/* Rewrites attribute `name` of object `obj` in file path. */
static void set_attr_int(const char *path, const char *obj, const char *name, int32_t v) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    assert_true(o >= 0);
    if (H5Aexists(o, name) > 0)
        assert_true(H5Adelete(o, name) >= 0);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0 && H5Awrite(a, H5T_NATIVE_INT32, &v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Oclose(o);
    H5Fclose(f);
}

static void set_attr_str(const char *path, const char *obj, const char *name, const char *v) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    assert_true(o >= 0);
    if (H5Aexists(o, name) > 0)
        assert_true(H5Adelete(o, name) >= 0);
    if (v) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, strlen(v));
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(o, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(a >= 0 && H5Awrite(a, t, v) >= 0);
        H5Aclose(a);
        H5Sclose(sp);
        H5Tclose(t);
    }
    H5Oclose(o);
    H5Fclose(f);
}

static void test_wrong_version_and_format(void **state) {
    (void)state;
    char p[128];
    copy_good("v2.h5", p, sizeof p);
    set_attr_int(p, "/", "version", 2);
    expect_open_error(p, MPQ_ERR_FORMAT, "/version is 2", "version 1");
    copy_good("fmt.h5", p, sizeof p);
    set_attr_str(p, "/", "format", "something-else");
    expect_open_error(p, MPQ_ERR_FORMAT, "something-else", "not an mpquant checkpoint");
    copy_good("nofmt.h5", p, sizeof p);
    set_attr_str(p, "/", "format", NULL);
    expect_open_error(p, MPQ_ERR_FORMAT, "not an mpquant checkpoint", NULL);
    /* Not HDF5 at all. */
    path_in("text.h5", p, sizeof p);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("hello, not a checkpoint\n", f);
    fclose(f);
    mpq_ckpt *ck = NULL;
    assert_int_equal(mpq_ckpt_open(g_ctx, p, &ck), MPQ_ERR_FORMAT);
    assert_non_null(strstr(g_ctx->err_msg, "HDF5 signature"));
    mpq_err_clear(g_ctx);
}

/* Replaces dataset `dset` with a 1-D uint8 dataset of n bytes (value v). */
static void replace_bytes(const char *path, const char *dset, int64_t n, uint8_t v) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_true(H5Ldelete(f, dset, H5P_DEFAULT) >= 0);
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t d = H5Dcreate2(f, dset, H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0);
    uint8_t *buf = malloc((size_t)n);
    memset(buf, v, (size_t)n);
    assert_true(H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    free(buf);
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
}

static void test_bad_layer_data(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char p[128];
    /* int4 over 6 x 40 weights: 120 code bytes; one short. */
    copy_good("codes.h5", p, sizeof p);
    replace_bytes(p, "/layers/lin.weight/codes", 119, 0);
    expect_open_error(p, MPQ_ERR_FORMAT, "/layers/lin.weight/codes", "has 119 bytes");
    /* Params of the right length but zero scales: found when dequantizing. */
    mpq_ckpt *ck = NULL;
    copy_good("params.h5", p, sizeof p);
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, p, &ck));
    int64_t nb = ck->entries[0].params_bytes;
    mpq_ckpt_close(&ck);
    replace_bytes(p, "/layers/lin.weight/params", nb, 0);
    /* As a file written before checksums: the CRC would catch it first. */
    set_attr_str(p, "/layers/lin.weight", "params_crc32", NULL);
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, p, &ck));
    float out[ROWS * COLS];
    assert_int_equal(mpq_ckpt_dequantize_layer(ctx, ck, "lin.weight", out), MPQ_ERR_FORMAT);
    assert_non_null(strstr(ctx->err_msg, p));
    assert_non_null(strstr(ctx->err_msg, "/layers/lin.weight/params"));
    assert_non_null(strstr(ctx->err_msg, "scale"));
    mpq_err_clear(ctx);
    mpq_ckpt_close(&ck);
    mpq_model *m = NULL;
    assert_int_equal(mpq_model_open(ctx, p, "auto", &m), MPQ_ERR_FORMAT);
    assert_non_null(strstr(ctx->err_msg, "/layers/lin.weight/params"));
    mpq_err_clear(ctx);
    /* A spec the quantizer library rejects. */
    copy_good("spec.h5", p, sizeof p);
    set_attr_str(p, "/layers/conv.weight", "spec", "int:bits=99");
    expect_open_error(p, MPQ_ERR_CONFIG, "/layers/conv.weight", "bits");
    /* A missing attribute. */
    copy_good("rows.h5", p, sizeof p);
    set_attr_str(p, "/layers/lin.weight", "rows", NULL);
    expect_open_error(p, MPQ_ERR_FORMAT, "/layers/lin.weight", "attribute 'rows' is missing");
    /* A plain tensor with an unknown dtype. */
    copy_good("dtype.h5", p, sizeof p);
    set_attr_str(p, "/tensors/half", "dtype", "F64");
    expect_open_error(p, MPQ_ERR_FORMAT, "/tensors/half", "unknown dtype 'F64'");
}

/* ---- the layout attributes -------------------------------------------------------- */

/* String attribute `name` of obj into buf [len]. */
static void get_attr_str(const char *path, const char *obj, const char *name, char *buf,
                         size_t len) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0);
    hid_t t = H5Aget_type(a);
    size_t n = H5Tget_size(t);
    assert_true(n < len);
    assert_true(H5Aread(a, t, buf) >= 0);
    buf[n] = '\0';
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);
}

/* Replaces the `levels` attribute of obj with n float32 values. */
static void set_levels(const char *path, const char *obj, const float *v, hsize_t n) {
    set_attr_str(path, obj, "levels", NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(o, "levels", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0 && H5Awrite(a, H5T_NATIVE_FLOAT, v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Oclose(o);
    H5Fclose(f);
}

/* What the writer stores (README.md, "Reading a checkpoint without
 * mpquant"); attributes contradicting the spec are refused naming them; a
 * file without them (written before they existed) reads as before. */
static void test_layout_attrs(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char p[128], v[256];
    const char *lin = "/layers/lin.weight";
    const struct {
        const char *name, *want;
    } strs[] = {{"packing", "bits"},
                {"scale_format", "fp16"},
                {"params_layout", "scale:fp16[18]; zero:u4[18]"},
                {"dequant", "w = scale[g] * (levels[code] - zero[g])"}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        get_attr_str(g_good, lin, strs[i].name, v, sizeof v);
        assert_string_equal(v, strs[i].want);
    }
    get_attr_str(g_good, "/layers/conv.weight", "params_layout", v, sizeof v);
    assert_string_equal(v, "scale:fp16[4]");
    copy_good("lay1.h5", p, sizeof p);
    set_attr_str(p, lin, "params_layout", "scale:fp16[18]");
    expect_open_error(p, MPQ_ERR_FORMAT, "attribute 'params_layout' is \"scale:fp16[18]\"",
                      "gives \"scale:fp16[18]; zero:u4[18]\"");
    copy_good("lay2.h5", p, sizeof p);
    set_attr_str(p, lin, "packing", "base3");
    expect_open_error(p, MPQ_ERR_FORMAT, "/layers/lin.weight", "attribute 'packing'");
    copy_good("lay3.h5", p, sizeof p);
    set_attr_int(p, lin, "groups_per_row", 2);
    expect_open_error(p, MPQ_ERR_FORMAT, "attribute 'groups_per_row' is 2", "gives 3");
    /* A level table that is not the parameters': found when dequantizing. */
    copy_good("lay4.h5", p, sizeof p);
    float lev[16];
    for (int c = 0; c < 16; c++)
        lev[c] = (float)c;
    lev[5] = 5.5f;
    set_levels(p, lin, lev, 16);
    mpq_ckpt *ck = NULL;
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, p, &ck));
    float out[ROWS * COLS], want[ROWS * COLS];
    assert_int_equal(mpq_ckpt_dequantize_layer(ctx, ck, "lin.weight", out), MPQ_ERR_FORMAT);
    assert_non_null(strstr(ctx->err_msg, "attribute 'levels' entry 5 is 5.5"));
    mpq_err_clear(ctx);
    mpq_ckpt_close(&ck);
    /* Without any layout attribute: the same weights. */
    copy_good("old.h5", p, sizeof p);
    const char *names[] = {"packing",  "scale_format",  "group_cols", "groups_per_row",
                           "n_groups", "params_layout", "dequant",    "levels"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        set_attr_str(p, lin, names[i], NULL);
        set_attr_str(p, "/layers/conv.weight", names[i], NULL);
    }
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, g_good, &ck));
    MPQ_ASSERT_OK(ctx, mpq_ckpt_dequantize_layer(ctx, ck, "lin.weight", want));
    mpq_ckpt_close(&ck);
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, p, &ck));
    MPQ_ASSERT_OK(ctx, mpq_ckpt_dequantize_layer(ctx, ck, "lin.weight", out));
    assert_memory_equal(out, want, sizeof out);
    mpq_ckpt_close(&ck);
}

/* ---- checksums and the attributes that repeat the spec ---------------------------- */

/* Flips bit `bit` of byte `byte` of the uint8 dataset dset [n] through HDF5. */
static void flip_bit(const char *path, const char *dset, int64_t n, int64_t byte, int bit) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    assert_true(d >= 0);
    uint8_t *buf = calloc((size_t)n, 1);
    assert_non_null(buf);
    assert_true(H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    buf[byte] ^= (uint8_t)(1u << bit);
    assert_true(H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    free(buf);
    H5Dclose(d);
    H5Fclose(f);
}

static void test_checksums(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const char *lin = "/layers/lin.weight";
    char p[128];
    float out[ROWS * COLS], want[ROWS * COLS];
    mpq_ckpt *ck = NULL;
    copy_good("crc.h5", p, sizeof p);
    flip_bit(p, "/layers/lin.weight/codes", 120, 7, 2);
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, p, &ck));
    assert_int_equal(mpq_ckpt_dequantize_layer(ctx, ck, "lin.weight", out), MPQ_ERR_FORMAT);
    const char *frags[] = {p, "/layers/lin.weight/codes: CRC-32", "'codes_crc32'",
                           "the codes are damaged"};
    for (size_t i = 0; i < sizeof frags / sizeof frags[0]; i++)
        if (!strstr(ctx->err_msg, frags[i]))
            fail_msg("message lacks '%s': %s", frags[i], ctx->err_msg);
    mpq_err_clear(ctx);
    mpq_ckpt_close(&ck);
    mpq_model *m = NULL;
    assert_int_equal(mpq_model_open(ctx, p, "auto", &m), MPQ_ERR_FORMAT);
    assert_non_null(strstr(ctx->err_msg, "the codes are damaged"));
    mpq_err_clear(ctx);
    /* Written before checksums: read alike, nothing checked. */
    copy_good("nocrc.h5", p, sizeof p);
    set_attr_str(p, lin, "codes_crc32", NULL);
    set_attr_str(p, lin, "params_crc32", NULL);
    set_attr_str(p, "/tensors/lin.bias", "crc32", NULL);
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, g_good, &ck));
    MPQ_ASSERT_OK(ctx, mpq_ckpt_dequantize_layer(ctx, ck, "lin.weight", want));
    mpq_ckpt_close(&ck);
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, p, &ck));
    assert_int_equal(ck->entries[0].codes_crc, -1);
    MPQ_ASSERT_OK(ctx, mpq_ckpt_dequantize_layer(ctx, ck, "lin.weight", out));
    assert_memory_equal(out, want, sizeof out);
    float bias[ROWS];
    MPQ_ASSERT_OK(ctx, mpq_ckpt_read_tensor(ctx, ck, mpq_ckpt_find(ck, "lin.bias"), bias));
    assert_memory_equal(bias, g_bias, sizeof bias);
    mpq_ckpt_close(&ck);
    /* A value that is no CRC-32. */
    copy_good("crcneg.h5", p, sizeof p);
    set_attr_int(p, lin, "codes_crc32", -5);
    expect_open_error(p, MPQ_ERR_FORMAT, "attribute 'codes_crc32' is -5", "not a CRC-32");
}

static void test_repeated_attrs(void **state) {
    (void)state;
    const char *lin = "/layers/lin.weight", *conv = "/layers/conv.weight";
    char p[128];
    copy_good("group.h5", p, sizeof p);
    set_attr_int(p, lin, "group", 7);
    expect_open_error(p, MPQ_ERR_FORMAT, "/layers/lin.weight: attribute 'group' is 7", "gives 16");
    copy_good("group0.h5", p, sizeof p);
    set_attr_int(p, conv, "group", 0);
    expect_open_error(p, MPQ_ERR_FORMAT, "/layers/conv.weight: attribute 'group' is 0", "gives 64");
    copy_good("quant.h5", p, sizeof p);
    set_attr_str(p, lin, "quantizer", "bogus");
    expect_open_error(p, MPQ_ERR_FORMAT, "attribute 'quantizer' is \"bogus\"",
                      "not a quantizer family");
    copy_good("quant2.h5", p, sizeof p);
    set_attr_str(p, conv, "quantizer", "int");
    expect_open_error(p, MPQ_ERR_FORMAT, "/layers/conv.weight: attribute 'quantizer' is \"int\"",
                      "of family \"nf4\"");
    copy_good("family.h5", p, sizeof p);
    set_attr_str(p, "/arch", "family", "transformer");
    expect_open_error(p, MPQ_ERR_FORMAT, "/arch: attribute 'family' is \"transformer\"",
                      "not a model family");
}

/* ---- writer misuse -------------------------------------------------------------- */

/* Links out of the file's own tree are refused at open: an external link
 * (the codes of a layer read from another file) and a soft link. */
static void add_link(const char *path, int external, const char *target_file) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    if (external)
        assert_true(H5Lcreate_external(target_file, "/layers/lin.weight/codes", f, "/extra_codes",
                                       H5P_DEFAULT, H5P_DEFAULT) >= 0);
    else
        assert_true(H5Lcreate_soft("/layers/lin.weight", f, "/layers/alias", H5P_DEFAULT,
                                   H5P_DEFAULT) >= 0);
    H5Fclose(f);
}

static void test_links(void **state) {
    (void)state;
    char p[128], q[128];
    copy_good("elink.h5", p, sizeof p);
    copy_good("elink-target.h5", q, sizeof q);
    add_link(p, 1, q);
    expect_open_error(p, MPQ_ERR_FORMAT, "'/extra_codes' is an external link", "another file");
    copy_good("slink.h5", p, sizeof p);
    add_link(p, 0, NULL);
    expect_open_error(p, MPQ_ERR_FORMAT, "'/layers/alias' is a soft link", NULL);
}

static void test_writer_refusals(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char p[128];
    path_in("misuse.h5", p, sizeof p);
    mpq_ckpt_writer *w = NULL;
    mpq_qlayer *lin = NULL;
    MPQ_ASSERT_OK(ctx, make_layer(ctx, "int:bits=4,group=16", ROWS, COLS, g_w, &lin));
    MPQ_ASSERT_OK(ctx, mpq_ckpt_writer_create(ctx, p, 0, NULL, 0, &w));
    mpq_ckpt_layer_desc d = {.tensor = "x", .loss = 0};
    MPQ_ASSERT_OK(ctx, mpq_ckpt_write_layer(ctx, w, &d, lin, 0));
    assert_int_equal(mpq_ckpt_write_layer(ctx, w, &d, lin, 0), MPQ_ERR_ARG);
    assert_non_null(strstr(ctx->err_msg, "written twice"));
    mpq_err_clear(ctx);
    d.tensor = "y";
    d.ndim = 1;
    d.shape[0] = 7; /* 7 != 6 * 40 */
    assert_int_equal(mpq_ckpt_write_layer(ctx, w, &d, lin, 0), MPQ_ERR_ARG);
    assert_non_null(strstr(ctx->err_msg, "'y'"));
    mpq_err_clear(ctx);
    assert_int_equal(mpq_ckpt_write_layer(ctx, w, &d, lin, 3), MPQ_ERR_ARG); /* no rank 3 */
    mpq_err_clear(ctx);
    mpq_ckpt_abort(ctx, &w);
    assert_int_not_equal(access(p, F_OK), 0);
    mpq_qlayer_destroy(&lin);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    snprintf(g_dir, sizeof g_dir, "/tmp/mpq-test-ckpt-err-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    /* Deterministic synthetic data (a simple LCG), with negative values. */
    uint32_t s = 12345;
    for (int i = 0; i < ROWS * COLS; i++) {
        s = s * 1664525u + 1013904223u;
        g_w[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (1.0f + (float)(i % 7));
    }
    for (int i = 0; i < 72; i++)
        g_conv[i] = sinf(0.37f * (float)i);
    for (int i = 0; i < ROWS; i++)
        g_bias[i] = 0.25f * (float)i - 1.0f;
    for (int i = 0; i < 3; i++)
        g_half[i] = mpq_f32_to_f16(1.5f + (float)i);
    for (int i = 0; i < 4; i++)
        g_bf[i] = mpq_f32_to_bf16(-2.25f * (float)i);
    path_in("good.h5", g_good, sizeof g_good);
    mpq_err err = write_synthetic(g_ctx, g_good);
    int failures = 1;
    if (err != MPQ_OK) {
        fprintf(stderr, "setup failed: %s\n%s\n", g_ctx->err_msg, g_ctx->err_trace);
    } else {
        mpq_h5_quiet();
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_good_mpi),       cmocka_unit_test(test_good_serial),
            cmocka_unit_test(test_truncated),      cmocka_unit_test(test_wrong_version_and_format),
            cmocka_unit_test(test_bad_layer_data), cmocka_unit_test(test_writer_refusals),
            cmocka_unit_test(test_links),          cmocka_unit_test(test_layout_attrs),
            cmocka_unit_test(test_checksums),      cmocka_unit_test(test_repeated_attrs),
        };
        failures = cmocka_run_group_tests(tests, NULL, NULL);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return mpq_test_finish(&g_ctx, failures);
}
