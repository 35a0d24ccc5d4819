/* test_outfile.c: atomic output files, at 1, 2 and 4 ranks.
 *
 * Local variant: every rank works in its own sub-directory at the same time
 * (unique temporary names, no interference). Checked against the file
 * system itself: contents read back, directory listings (no temporary left
 * behind, nothing at the destination after an abort or error), and the
 * error messages naming the path and the problem. Tests run as root, so
 * unwritable directories cannot be simulated with permissions; a write
 * failure is produced with a file-size limit (RLIMIT_FSIZE) instead.
 * Collective variant: every rank sees the same temporary, writes its slice,
 * and the committed file holds all slices.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpq_outfile.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx;   /* the test driver's context */
static char g_root[256]; /* temporary directory shared by the ranks */
static char g_dir[300];  /* this rank's sub-directory */

static const char *at(const char *name, char *buf, size_t len) {
    snprintf(buf, len, "%s/%s", g_dir, name);
    return buf;
}

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void expect_content(const char *path, const char *text) {
    char buf[256] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("'%s' is missing", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    assert_string_equal(buf, text);
}

/* Number of entries of dir, and of those starting with '.' (temporaries). */
static int count_entries(const char *dir, int *hidden) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    *hidden = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        n++;
        *hidden += e->d_name[0] == '.';
    }
    closedir(d);
    return n;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static void expect_error(mpq_err got, mpq_err want, const char *n1, const char *n2) {
    mpq_ctx *ctx = g_ctx;
    if (got != want)
        fail_msg("expected %s, got %s (%s)", mpq_err_name(want), mpq_err_name(got), ctx->err_msg);
    if (n1 && !strstr(ctx->err_msg, n1))
        fail_msg("message '%s' lacks '%s'", ctx->err_msg, n1);
    if (n2 && !strstr(ctx->err_msg, n2))
        fail_msg("message '%s' lacks '%s'", ctx->err_msg, n2);
    mpq_err_clear(ctx);
}

static void test_write_commit(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dest[400];
    int hidden = 0;
    mpq_outfile *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_outfile_check(ctx, at("a.bin", dest, sizeof dest), NULL));
    assert_int_equal(count_entries(g_dir, &hidden), 0);
    MPQ_ASSERT_OK(ctx, mpq_outfile_open(ctx, dest, NULL, &f));
    /* The temporary sits beside the destination, hidden, unique. */
    assert_non_null(strstr(f->tmp, "/.a.bin.tmp."));
    assert_true(strncmp(f->tmp, g_dir, strlen(g_dir)) == 0);
    assert_false(exists(dest));
    MPQ_ASSERT_OK(ctx, mpq_outfile_write(ctx, f, "hello ", 6));
    MPQ_ASSERT_OK(ctx, mpq_outfile_write(ctx, f, "world", 5));
    assert_false(exists(dest)); /* nothing at the destination before commit */
    MPQ_ASSERT_OK(ctx, mpq_outfile_commit(ctx, &f));
    assert_null(f);
    expect_content(dest, "hello world");
    assert_int_equal(count_entries(g_dir, &hidden), 1);
    assert_int_equal(hidden, 0);
    unlink(dest);
}

static void test_overwrite(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dest[400];
    mpq_outfile *f = NULL;
    put(at("b.bin", dest, sizeof dest), "old");
    expect_error(mpq_outfile_open(ctx, dest, NULL, &f), MPQ_ERR_IO, dest, "already exists");
    assert_null(f);
    expect_content(dest, "old");
    mpq_outfile_opts o = {1, NULL, 0};
    MPQ_ASSERT_OK(ctx, mpq_outfile_open(ctx, dest, &o, &f));
    MPQ_ASSERT_OK(ctx, mpq_outfile_write(ctx, f, "new", 3));
    expect_content(dest, "old"); /* still the old file until commit */
    MPQ_ASSERT_OK(ctx, mpq_outfile_commit(ctx, &f));
    expect_content(dest, "new");
    int hidden = 0;
    assert_int_equal(count_entries(g_dir, &hidden), 1);
    unlink(dest);
}

static void test_input_is_output(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char in[400], sym[400], hard[400], dotted[420], other[400];
    mpq_outfile *f = NULL;
    put(at("model.bin", in, sizeof in), "weights");
    put(at("other.bin", other, sizeof other), "x");
    assert_int_equal(symlink(in, at("link.bin", sym, sizeof sym)), 0);
    assert_int_equal(link(in, at("hard.bin", hard, sizeof hard)), 0);
    snprintf(dotted, sizeof dotted, "%s/./../%s/model.bin", g_dir, strrchr(g_dir, '/') + 1);
    const char *inputs[2] = {other, in};
    mpq_outfile_opts o = {1, inputs, 2}; /* overwrite does not allow it */
    /* The same path, the same file through a symlink or a hard link, and a
     * non-canonical spelling are all refused. */
    expect_error(mpq_outfile_open(ctx, in, &o, &f), MPQ_ERR_ARG, "same file as input", in);
    expect_error(mpq_outfile_open(ctx, sym, &o, &f), MPQ_ERR_ARG, "same file as input", sym);
    expect_error(mpq_outfile_open(ctx, hard, &o, &f), MPQ_ERR_ARG, "same file as input", hard);
    expect_error(mpq_outfile_open(ctx, dotted, &o, &f), MPQ_ERR_ARG, "same file as input", NULL);
    /* The input given through the symlink, the output as the real file. */
    const char *via_link[1] = {sym};
    mpq_outfile_opts o2 = {1, via_link, 1};
    expect_error(mpq_outfile_check(ctx, in, &o2), MPQ_ERR_ARG, "same file as input", sym);
    assert_null(f);
    expect_content(in, "weights");
    /* A different file is fine. */
    char out[400];
    MPQ_ASSERT_OK(ctx, mpq_outfile_check(ctx, at("out.bin", out, sizeof out), &o));
    unlink(sym);
    unlink(hard);
    unlink(in);
    unlink(other);
    int hidden = 0;
    assert_int_equal(count_entries(g_dir, &hidden), 0);
}

static void test_bad_destinations(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char p[400], file[400];
    mpq_outfile *f = NULL;
    expect_error(mpq_outfile_open(ctx, at("nope/out.bin", p, sizeof p), NULL, &f), MPQ_ERR_IO,
                 "does not exist", "nope");
    put(at("plain", file, sizeof file), "x");
    expect_error(mpq_outfile_open(ctx, at("plain/out.bin", p, sizeof p), NULL, &f), MPQ_ERR_IO,
                 "is not a directory", file);
    assert_int_equal(mkdir(at("sub", p, sizeof p), 0755), 0);
    mpq_outfile_opts o = {1, NULL, 0};
    expect_error(mpq_outfile_open(ctx, p, &o, &f), MPQ_ERR_IO, "is a directory", p);
    strcat(p, "/");
    expect_error(mpq_outfile_open(ctx, p, &o, &f), MPQ_ERR_IO, "directory", p);
    expect_error(mpq_outfile_open(ctx, "", &o, &f), MPQ_ERR_ARG, "empty", NULL);
    assert_null(f);
    rmdir(at("sub", p, sizeof p));
    unlink(file);
    int hidden = 0;
    assert_int_equal(count_entries(g_dir, &hidden), 0);
}

static void test_abort_leaves_nothing(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dest[400];
    mpq_outfile *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_outfile_open(ctx, at("c.bin", dest, sizeof dest), NULL, &f));
    MPQ_ASSERT_OK(ctx, mpq_outfile_write(ctx, f, "partial", 7));
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s", f->tmp);
    assert_true(exists(tmp));
    mpq_outfile_abort(&f);
    assert_null(f);
    mpq_outfile_abort(&f); /* NULL-safe */
    assert_false(exists(tmp));
    assert_false(exists(dest));
    int hidden = 0;
    assert_int_equal(count_entries(g_dir, &hidden), 0);
}

/* A write error (file-size limit, which binds root too) is reported with
 * both names, and the abort that follows leaves nothing. */
static void test_write_error(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dest[400];
    static char big[10000];
    mpq_outfile *f = NULL;
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    MPQ_ASSERT_OK(ctx, mpq_outfile_open(ctx, at("d.bin", dest, sizeof dest), NULL, &f));
    lim = old;
    lim.rlim_cur = 4096;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    mpq_err e = mpq_outfile_write(ctx, f, big, sizeof big);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    expect_error(e, MPQ_ERR_IO, dest, "File too large");
    mpq_outfile_abort(&f);
    assert_false(exists(dest));
    int hidden = 0;
    assert_int_equal(count_entries(g_dir, &hidden), 0);
}

/* Without overwrite, a destination created during the write wins. */
static void test_appeared_meanwhile(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dest[400];
    mpq_outfile *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_outfile_open(ctx, at("e.bin", dest, sizeof dest), NULL, &f));
    MPQ_ASSERT_OK(ctx, mpq_outfile_write(ctx, f, "mine", 4));
    put(dest, "theirs");
    expect_error(mpq_outfile_commit(ctx, &f), MPQ_ERR_IO, dest, "appeared");
    assert_null(f);
    expect_content(dest, "theirs");
    int hidden = 0;
    assert_int_equal(count_entries(g_dir, &hidden), 1);
    assert_int_equal(hidden, 0);
    unlink(dest);
}

static void test_allocation_failures(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dest[400];
    at("g.bin", dest, sizeof dest);
    for (int64_t n = 0; n < 10; n++) {
        mpq_outfile *f = NULL;
        mpq_alloc_fail_after(ctx, n);
        mpq_err e = mpq_outfile_open(ctx, dest, NULL, &f);
        mpq_alloc_fail_after(ctx, -1);
        int hidden = 0;
        if (e == MPQ_OK) {
            mpq_outfile_abort(&f);
            assert_int_equal(count_entries(g_dir, &hidden), 0);
            break;
        }
        assert_int_equal(e, MPQ_ERR_NOMEM);
        assert_null(f);
        assert_int_equal(count_entries(g_dir, &hidden), 0);
    }
    mpq_err_clear(ctx);
}

/* ---- collective ----------------------------------------------------------- */

static void test_collective_commit(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dest[400], want[256] = {0};
    snprintf(dest, sizeof dest, "%s/shared.bin", g_root);
    mpq_outfile *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_outfile_open_all(ctx, dest, NULL, &f));
    assert_non_null(f);
    assert_int_equal(f->fd, -1);
    assert_string_equal(f->dest, dest);
    /* Everyone holds rank 0's name. */
    char name[600] = {0};
    snprintf(name, sizeof name, "%s", f->tmp);
    MPI_Bcast(name, sizeof name, MPI_CHAR, 0, ctx->comm);
    assert_string_equal(name, f->tmp);
    /* Each rank writes its 8-byte slice into the temporary. */
    int fd = open(f->tmp, O_WRONLY);
    assert_true(fd >= 0);
    char slice[9];
    snprintf(slice, sizeof slice, "rank%04d", ctx->rank);
    assert_int_equal(pwrite(fd, slice, 8, (off_t)ctx->rank * 8), 8);
    assert_int_equal(close(fd), 0);
    assert_false(exists(dest));
    MPQ_ASSERT_OK(ctx, mpq_outfile_commit_all(ctx, &f));
    assert_null(f);
    for (int r = 0; r < ctx->size; r++)
        snprintf(want + 8 * r, sizeof want - 8 * (size_t)r, "rank%04d", r);
    expect_content(dest, want);
    assert_false(exists(name));
    MPI_Barrier(ctx->comm);
    /* Existing destination: every rank gets rank 0's error, nobody an object. */
    mpq_err e = mpq_outfile_open_all(ctx, dest, NULL, &f);
    expect_error(e, MPQ_ERR_IO, dest, "already exists");
    assert_null(f);
    MPI_Barrier(ctx->comm);
    if (ctx->rank == 0)
        unlink(dest);
    MPI_Barrier(ctx->comm);
}

static void test_collective_abort(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dest[400], name[600];
    snprintf(dest, sizeof dest, "%s/aborted.bin", g_root);
    mpq_outfile *f = NULL;
    MPQ_ASSERT_OK(ctx, mpq_outfile_open_all(ctx, dest, NULL, &f));
    snprintf(name, sizeof name, "%s", f->tmp);
    assert_true(exists(name));
    mpq_outfile_abort_all(ctx, &f);
    assert_null(f);
    assert_false(exists(name)); /* gone for every rank after the call */
    assert_false(exists(dest));
    MPI_Barrier(ctx->comm);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    mpq_ctx *ctx = g_ctx;
    if (ctx->rank == 0) {
        snprintf(g_root, sizeof g_root, "/tmp/mpq-outfile-XXXXXX");
        if (!mkdtemp(g_root))
            MPI_Abort(ctx->comm, 1);
    }
    MPI_Bcast(g_root, sizeof g_root, MPI_CHAR, 0, ctx->comm);
    snprintf(g_dir, sizeof g_dir, "%s/r%d", g_root, ctx->rank);
    if (mkdir(g_dir, 0755) != 0)
        MPI_Abort(ctx->comm, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_commit),         cmocka_unit_test(test_overwrite),
        cmocka_unit_test(test_input_is_output),      cmocka_unit_test(test_bad_destinations),
        cmocka_unit_test(test_abort_leaves_nothing), cmocka_unit_test(test_write_error),
        cmocka_unit_test(test_appeared_meanwhile),   cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_collective_commit),    cmocka_unit_test(test_collective_abort),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Barrier(ctx->comm);
    if (ctx->rank == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
        if (system(cmd) != 0)
            failed++;
    }
    return mpq_test_finish(&g_ctx, failed);
}
