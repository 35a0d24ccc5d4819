/* test_hstats_io.c: Hessian statistics through HDF5 (collective parallel
 * I/O).
 *
 * - save then load gives identical bits (H, sumsq, absmax, count, names,
 *   order, width, bound) whether H was on every rank (rows written in
 *   slabs by every rank) or on one rank (one writer), and loading onto one
 *   rank leaves the others without H; no temporary file is left behind.
 * - errors name the file (and the dataset where there is one): missing
 *   file, not an HDF5 file, truncated file, foreign format tag, newer
 *   version, H of the wrong shape, missing dataset. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq_h5.h"
#include "mpq_hessian.h"
#include "mpq_test.h"
#include "synth.h"

static mpq_ctx *g_ctx;
static char g_dir[256]; /* per-run directory (one per rank count) */

static void path_of(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", g_dir, name);
}

/* A statistic of width d measured over 6 samples spread over the ranks. */
static mpq_hstat *measure(mpq_ctx *ctx, const char *name, int64_t d, int target, uint64_t seed) {
    mpq_hstat *st = NULL;
    float x[16 * 80];
    MPQ_ASSERT_OK(ctx, mpq_hstat_create(ctx, name, d, 16, &st));
    for (int64_t s = 0; s < 6; s++) {
        if (s % ctx->size != ctx->rank)
            continue;
        synth_sample(seed, s, d, x);
        MPQ_ASSERT_OK(ctx, mpq_hstat_begin_chunk(ctx, st));
        MPQ_ASSERT_OK(ctx, mpq_hstat_accumulate(ctx, st, x, synth_rows(s), d));
        MPQ_ASSERT_OK(ctx, mpq_hstat_end_chunk(ctx, st));
    }
    MPQ_ASSERT_OK(ctx, mpq_hstat_reduce(ctx, st, target));
    return st;
}

static void test_roundtrip(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_hstat *st[3];
    st[0] = measure(ctx, "layers.0.attn_in", 17, MPQ_HSTAT_ALL, 1);
    st[1] = measure(ctx, "layers.0.mlp_in", 80, 0, 2); /* one writer */
    st[2] = measure(ctx, "a_narrow", 5, ctx->size - 1, 3);
    char path[512], tmp[600];
    path_of(path, sizeof path, "stats.h5");
    MPQ_ASSERT_OK(ctx, mpq_hstats_save(ctx, path, 3, st));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(path, R_OK), 0);
    assert_int_not_equal(access(tmp, F_OK), 0);

    /* Reference values for every statistic, on every rank: broadcast from
     * a rank that holds H. */
    const int holder[3] = {0, 0, ctx->size - 1};
    double *Href[3];
    for (int k = 0; k < 3; k++) {
        int64_t d = st[k]->d;
        Href[k] = calloc((size_t)(d * d), sizeof(double));
        if (st[k]->H)
            memcpy(Href[k], st[k]->H, sizeof(double) * d * d);
        MPI_Bcast(Href[k], (int)(d * d), MPI_DOUBLE, holder[k], ctx->comm);
    }

    for (int t = 0; t < 2; t++) {
        int target = t == 0 ? MPQ_HSTAT_ALL : ctx->size - 1;
        int64_t n = 0;
        mpq_hstat **in = NULL;
        MPQ_ASSERT_OK(ctx, mpq_hstats_load(ctx, path, target, &n, &in));
        assert_int_equal(n, 3);
        for (int k = 0; k < 3; k++) {
            int64_t d = st[k]->d;
            assert_string_equal(in[k]->name, st[k]->name); /* saved order kept */
            assert_int_equal(in[k]->d, d);
            assert_int_equal(in[k]->bound_log2, st[k]->bound_log2);
            assert_int_equal(in[k]->lsb_exp, st[k]->lsb_exp);
            assert_int_equal(in[k]->count, st[k]->count);
            assert_true(in[k]->reduced);
            assert_memory_equal(in[k]->absmax, st[k]->absmax, sizeof(double) * d);
            if (target == MPQ_HSTAT_ALL || target == ctx->rank) {
                assert_memory_equal(in[k]->H, Href[k], sizeof(double) * d * d);
                for (int64_t i = 0; i < d; i++)
                    assert_memory_equal(&in[k]->sumsq[i], &Href[k][i * d + i], sizeof(double));
            } else {
                assert_null(in[k]->H);
            }
        }
        mpq_hstats_free(n, &in);
        assert_null(in);
    }
    for (int k = 0; k < 3; k++) {
        free(Href[k]);
        mpq_hstat_destroy(&st[k]);
    }
}

static void expect_load_error(mpq_ctx *ctx, const char *path, mpq_err code, const char *needle) {
    int64_t n = -1;
    mpq_hstat **in = NULL;
    mpq_err e = mpq_hstats_load(ctx, path, MPQ_HSTAT_ALL, &n, &in);
    if (e != code)
        fail_msg("%s: expected %s, got %s (%s)", path, mpq_err_name(code), mpq_err_name(e),
                 ctx->err_msg);
    assert_null(in);
    assert_int_equal(n, 0);
    if (!strstr(ctx->err_msg, path))
        fail_msg("message '%s' does not name the file %s", ctx->err_msg, path);
    if (needle && !strstr(ctx->err_msg, needle))
        fail_msg("message '%s' lacks '%s'", ctx->err_msg, needle);
    if (ctx->rank == 0)
        print_message("expected error: %s\n", ctx->err_msg);
    mpq_err_clear(ctx);
}

/* Rank 0 edits a copy of a valid file with serial HDF5. */
enum { EDIT_VERSION, EDIT_FORMAT, EDIT_SHAPE, EDIT_DROP };

static void edit_copy(const char *src, const char *dst, int what) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", src, dst);
    assert_int_equal(system(cmd), 0);
    hid_t f = H5Fopen(dst, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    if (what == EDIT_VERSION) {
        hid_t a = H5Aopen(f, "version", H5P_DEFAULT);
        int32_t v = 7;
        assert_true(H5Awrite(a, H5T_NATIVE_INT32, &v) >= 0);
        H5Aclose(a);
    } else if (what == EDIT_FORMAT) {
        H5Adelete(f, "format");
        hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
        H5Tset_size(t, 8);
        hid_t a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(H5Awrite(a, t, "netcdf4") >= 0);
        H5Aclose(a);
        H5Sclose(sp);
        H5Tclose(t);
    } else if (what == EDIT_SHAPE) {
        assert_true(H5Ldelete(f, "/a_narrow/H", H5P_DEFAULT) >= 0);
        hsize_t dims[2] = {5, 4};
        hid_t sp = H5Screate_simple(2, dims, NULL);
        hid_t ds =
            H5Dcreate2(f, "/a_narrow/H", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(ds >= 0);
        H5Dclose(ds);
        H5Sclose(sp);
    } else {
        assert_true(H5Ldelete(f, "/a_narrow/absmax", H5P_DEFAULT) >= 0);
    }
    assert_true(H5Fclose(f) >= 0);
}

static void test_errors(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_h5_quiet();
    char good[512], bad[512];
    path_of(good, sizeof good, "good.h5");
    mpq_hstat *st[2];
    st[0] = measure(ctx, "layers.1.attn_in", 12, MPQ_HSTAT_ALL, 4);
    st[1] = measure(ctx, "a_narrow", 5, 0, 5);
    MPQ_ASSERT_OK(ctx, mpq_hstats_save(ctx, good, 2, st));

    path_of(bad, sizeof bad, "missing.h5");
    expect_load_error(ctx, bad, MPQ_ERR_IO, "cannot read");

    path_of(bad, sizeof bad, "text.h5");
    if (ctx->rank == 0) {
        FILE *f = fopen(bad, "w");
        fputs("this is not an HDF5 file\n", f);
        fclose(f);
    }
    MPI_Barrier(ctx->comm);
    expect_load_error(ctx, bad, MPQ_ERR_FORMAT, "not a readable HDF5 file");

    path_of(bad, sizeof bad, "truncated.h5");
    if (ctx->rank == 0) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "head -c 1000 '%s' > '%s'", good, bad);
        assert_int_equal(system(cmd), 0);
    }
    MPI_Barrier(ctx->comm);
    int64_t n = 0;
    mpq_hstat **in = NULL;
    mpq_err e = mpq_hstats_load(ctx, bad, MPQ_HSTAT_ALL, &n, &in);
    assert_int_not_equal(e, MPQ_OK); /* FORMAT or LIB depending on where it breaks */
    assert_non_null(strstr(ctx->err_msg, bad));
    assert_null(in);
    mpq_err_clear(ctx);

    const struct {
        int what;
        const char *name;
        const char *needle;
    } edits[] = {
        {EDIT_VERSION, "version.h5", "version 7"},
        {EDIT_FORMAT, "format.h5", "not an mpquant Hessian statistics file"},
        {EDIT_SHAPE, "shape.h5", "dataset '/a_narrow/H' has extent 4"},
        {EDIT_DROP, "drop.h5", "dataset '/a_narrow/absmax' is missing"},
    };
    for (int k = 0; k < 4; k++) {
        path_of(bad, sizeof bad, edits[k].name);
        if (ctx->rank == 0)
            edit_copy(good, bad, edits[k].what);
        MPI_Barrier(ctx->comm);
        expect_load_error(ctx, bad, MPQ_ERR_FORMAT, edits[k].needle);
    }

    /* Saving refuses unreduced statistics and duplicate names. */
    mpq_hstat *raw = NULL;
    MPQ_ASSERT_OK(ctx, mpq_hstat_create(ctx, "raw", 3, 16, &raw));
    path_of(bad, sizeof bad, "never.h5");
    assert_int_equal(mpq_hstats_save(ctx, bad, 1, &raw), MPQ_ERR_ARG);
    mpq_err_clear(ctx);
    mpq_hstat *dup[2] = {st[1], st[1]};
    assert_int_equal(mpq_hstats_save(ctx, bad, 2, dup), MPQ_ERR_ARG);
    assert_non_null(strstr(ctx->err_msg, "a_narrow"));
    mpq_err_clear(ctx);
    assert_int_not_equal(access(bad, F_OK), 0);
    /* An unwritable directory: the error names the file. */
    assert_int_not_equal(mpq_hstats_save(ctx, "/nonexistent-dir/x.h5", 2, st), MPQ_OK);
    assert_non_null(strstr(ctx->err_msg, "/nonexistent-dir/x.h5"));
    mpq_err_clear(ctx);
    mpq_hstat_destroy(&raw);
    mpq_hstat_destroy(&st[0]);
    mpq_hstat_destroy(&st[1]);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    if (g_ctx->rank == 0) {
        snprintf(g_dir, sizeof g_dir, "hstats_io_np%d_XXXXXX", g_ctx->size);
        if (!mkdtemp(g_dir))
            MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Bcast(g_dir, sizeof g_dir, MPI_CHAR, 0, g_ctx->comm);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_errors),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Barrier(g_ctx->comm);
    if (g_ctx->rank == 0 && !failures) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", g_dir);
    }
    return mpq_test_finish(&g_ctx, failures);
}
