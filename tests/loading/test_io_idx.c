/* test_io_idx.c: IDX files: the MNIST test set (shape, bytes read directly
 * from the file, the published per-class label counts) and corruptions. */
#include <stdlib.h>

#include "mpq_idx.h"
#include "test_io_util.h"
#include "tiny_writer.h"

static mpq_ctx *g_ctx;

static void test_mnist(void **state) {
    mpq_ctx *ctx = g_ctx;
    char ip[4096], lp[4096];
    mpq_test_shared("data/mnist/t10k-images-idx3-ubyte", ip, sizeof ip);
    mpq_test_shared("data/mnist/t10k-labels-idx1-ubyte", lp, sizeof lp);
    mpq_idx *im = NULL, *lb = NULL;
    MPQ_ASSERT_OK(ctx, mpq_idx_open_images(ctx, ip, &im));
    MPQ_ASSERT_OK(ctx, mpq_idx_open_labels(ctx, lp, 10, &lb));
    assert_int_equal(im->ndim, 3);
    assert_true(im->dims[0] == 10000 && im->dims[1] == 28 && im->dims[2] == 28);
    assert_int_equal(lb->ndim, 1);
    assert_int_equal(lb->dims[0], 10000);
    /* image 1234 read with stdio after the 16-byte header */
    unsigned char ref[784];
    FILE *f = fopen(ip, "rb");
    fseek(f, 16 + 784L * 1234, SEEK_SET);
    assert_int_equal(fread(ref, 1, 784, f), 784);
    fclose(f);
    assert_memory_equal(im->data + 784 * 1234, ref, 784);
    /* the MNIST test set's published class counts */
    const int64_t counts[10] = {980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
    int64_t c[10] = {0};
    for (int64_t i = 0; i < lb->numel; i++)
        c[lb->data[i]]++;
    for (int k = 0; k < 10; k++)
        assert_int_equal(c[k], counts[k]);
    /* images are not labels and vice versa */
    mpq_idx *x = NULL;
    test_io_expect(ctx, mpq_idx_open_labels(ctx, ip, 10, &x), MPQ_ERR_FORMAT, ip, "1 dimension",
                   NULL);
    test_io_expect(ctx, mpq_idx_open_images(ctx, lp, &x), MPQ_ERR_FORMAT, lp, "3 dimensions", NULL);
    test_io_expect(ctx, mpq_idx_open_labels(ctx, lp, 5, &x), MPQ_ERR_FORMAT, lp, "outside [0, 5)",
                   NULL);
    assert_null(x);
    mpq_idx_close(&im);
    mpq_idx_close(&lb);
    mpq_idx_close(&lb);
}

static void test_corrupt(void **state) {
    mpq_ctx *ctx = g_ctx;
    char dir[4096], p[4200];
    assert_int_equal(tw_tempdir(dir, sizeof dir), 0);
    snprintf(p, sizeof p, "%s/x.idx", dir);
    /* [3][2][2] */
    unsigned char good[4 + 12 + 12] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2};
    for (int i = 0; i < 12; i++)
        good[16 + i] = (unsigned char)i;
    mpq_idx *x = NULL;
    assert_int_equal(tw_write_bytes(p, good, sizeof good, 0), 0);
    MPQ_ASSERT_OK(ctx, mpq_idx_open(ctx, p, &x));
    assert_int_equal(x->numel, 12);
    assert_int_equal(x->data[11], 11);
    mpq_idx_close(&x);
    assert_int_equal(tw_write_bytes(p, good, sizeof good - 1, 0), 0);
    test_io_expect(ctx, mpq_idx_open(ctx, p, &x), MPQ_ERR_FORMAT, p, "truncated", "12");
    assert_int_equal(tw_write_bytes(p, good, sizeof good, 0), 0);
    assert_int_equal(tw_write_bytes(p, "z", 1, 1), 0);
    test_io_expect(ctx, mpq_idx_open(ctx, p, &x), MPQ_ERR_FORMAT, p, "trailing bytes", NULL);
    unsigned char bad[sizeof good];
    memcpy(bad, good, sizeof good);
    bad[2] = 0x0d; /* float data */
    assert_int_equal(tw_write_bytes(p, bad, sizeof bad, 0), 0);
    test_io_expect(ctx, mpq_idx_open(ctx, p, &x), MPQ_ERR_FORMAT, p, "magic", NULL);
    memcpy(bad, good, sizeof good);
    bad[3] = 9;
    assert_int_equal(tw_write_bytes(p, bad, sizeof bad, 0), 0);
    test_io_expect(ctx, mpq_idx_open(ctx, p, &x), MPQ_ERR_FORMAT, p, "9 dimensions", NULL);
    /* huge dimensions: a size mismatch, not an allocation */
    memcpy(bad, good, sizeof good);
    bad[4] = 0x7f;
    assert_int_equal(tw_write_bytes(p, bad, sizeof bad, 0), 0);
    test_io_expect(ctx, mpq_idx_open(ctx, p, &x), MPQ_ERR_FORMAT, p, "truncated", NULL);
    assert_int_equal(tw_write_bytes(p, good, 6, 0), 0);
    test_io_expect(ctx, mpq_idx_open(ctx, p, &x), MPQ_ERR_FORMAT, p, "truncated", NULL);
    assert_null(x);
    tw_rmtree(dir);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mnist),
        cmocka_unit_test(test_corrupt),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failures);
}
