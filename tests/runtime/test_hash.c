/* test_hash.c: SHA-256 of files and buffers, serial.
 * References: the FIPS 180-2 example vectors ("", "abc", one million 'a')
 * and the coreutils `sha256sum` command on a multi-chunk file and on a
 * shared model file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpq_hash.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx; /* the test driver's context */
static char g_dir[64]; /* private temporary directory */

static const char *tmp_path(const char *name, char *buf, size_t len) {
    snprintf(buf, len, "%s/%s", g_dir, name);
    return buf;
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* The digest printed by `sha256sum path`. */
static void sha256sum(const char *path, char hex[MPQ_SHA256_HEX]) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(cmd, sizeof cmd, p));
    assert_int_equal(pclose(p), 0);
    memcpy(hex, cmd, 64);
    hex[64] = '\0';
}

static const char *hex_empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
static const char *hex_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
static const char *hex_million_a =
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

static void test_known_vectors(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char hex[MPQ_SHA256_HEX], path[128];
    MPQ_ASSERT_OK(ctx, mpq_sha256_bytes(ctx, NULL, 0, hex));
    assert_string_equal(hex, hex_empty);
    MPQ_ASSERT_OK(ctx, mpq_sha256_bytes(ctx, "abc", 3, hex));
    assert_string_equal(hex, hex_abc);

    write_file(tmp_path("empty", path, sizeof path), "", 0);
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, path, hex));
    assert_string_equal(hex, hex_empty);
    write_file(tmp_path("abc", path, sizeof path), "abc", 3);
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, path, hex));
    assert_string_equal(hex, hex_abc);

    char *a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    write_file(tmp_path("million", path, sizeof path), a, 1000000);
    free(a);
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, path, hex));
    assert_string_equal(hex, hex_million_a);
}

/* Several 1 MiB read chunks plus a partial one. */
static void test_multi_chunk_vs_sha256sum(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    const size_t n = (3u << 20) + 12345;
    unsigned char *data = malloc(n);
    assert_non_null(data);
    uint32_t s = 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        data[i] = (unsigned char)(s >> 24);
    }
    char path[128], hex[MPQ_SHA256_HEX], ref[MPQ_SHA256_HEX], hb[MPQ_SHA256_HEX];
    write_file(tmp_path("random", path, sizeof path), data, n);
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, path, hex));
    MPQ_ASSERT_OK(ctx, mpq_sha256_bytes(ctx, data, n, hb));
    free(data);
    sha256sum(path, ref);
    assert_string_equal(hex, ref);
    assert_string_equal(hb, ref);
}

static void test_shared_file(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char path[4096], hex[MPQ_SHA256_HEX], ref[MPQ_SHA256_HEX];
    mpq_test_shared("data/models/stories260K/stories260K.bin", path, sizeof path);
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, path, hex));
    sha256sum(path, ref);
    assert_string_equal(hex, ref);
}

static void test_errors(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char path[128], hex[MPQ_SHA256_HEX];
    memcpy(hex, "x", 2);
    assert_int_equal(mpq_sha256_file(ctx, tmp_path("missing", path, sizeof path), hex), MPQ_ERR_IO);
    assert_non_null(strstr(ctx->err_msg, path));
    assert_non_null(strstr(ctx->err_msg, "No such file"));
    assert_string_equal(hex, "");
    /* A directory opens but cannot be read. */
    assert_int_equal(mpq_sha256_file(ctx, g_dir, hex), MPQ_ERR_IO);
    assert_non_null(strstr(ctx->err_msg, g_dir));
    /* Allocation failure of the read buffer. */
    write_file(tmp_path("abc", path, sizeof path), "abc", 3);
    mpq_alloc_fail_after(ctx, 0);
    assert_int_equal(mpq_sha256_file(ctx, path, hex), MPQ_ERR_NOMEM);
    mpq_alloc_fail_after(ctx, -1);
    assert_int_equal(mpq_sha256_bytes(ctx, NULL, 3, hex), MPQ_ERR_ARG);
    mpq_err_clear(ctx);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    snprintf(g_dir, sizeof g_dir, "/tmp/mpq-hash-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_multi_chunk_vs_sha256sum),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_shared_file),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        failed++;
    return mpq_test_finish(&g_ctx, failed);
}
