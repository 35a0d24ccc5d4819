/* fuzz_idx.c: IDX files (MNIST) through mpq_idx_open and the image and
 * label variants. An accepted file must have dimensions whose product is
 * the mapped data length, and every byte must be readable. */
#include "fuzz_common.h"
#include "mpq_idx.h"

static void check(const mpq_idx *x) {
    int64_t n = 1;
    if (x->ndim < 1 || x->ndim > MPQ_IDX_MAXDIM)
        fuzz_fail("accepted IDX file with a bad dimension count");
    for (int d = 0; d < x->ndim; d++) {
        if (x->dims[d] < 0 || (x->dims[d] > 0 && n > INT64_MAX / x->dims[d]))
            fuzz_fail("accepted IDX dimensions overflow");
        n *= x->dims[d];
    }
    if (n != x->numel)
        fuzz_fail("IDX numel differs from the product of the dimensions");
    const uint8_t *base = x->map_base;
    if (x->numel > 0 &&
        (x->data < base || (size_t)(x->data - base) + (size_t)x->numel > x->map_size))
        fuzz_fail("IDX data outside the mapping");
    unsigned sum = 0;
    for (int64_t i = 0; i < x->numel; i++)
        sum += x->data[i];
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_env *env = fuzz_env_get();
    char path[512];
    fuzz_write(env->dir, "data.idx", data, size, path, sizeof path);
    mpq_idx *x = NULL;
    if (mpq_idx_open(env->ctx, path, &x) == MPQ_OK)
        check(x);
    mpq_idx_close(&x);
    fuzz_done(env);
    if (mpq_idx_open_images(env->ctx, path, &x) == MPQ_OK) {
        check(x);
        if (x->ndim != 3)
            fuzz_fail("accepted images that are not [n][rows][cols]");
    }
    mpq_idx_close(&x);
    fuzz_done(env);
    if (mpq_idx_open_labels(env->ctx, path, 10, &x) == MPQ_OK) {
        check(x);
        for (int64_t i = 0; i < x->numel; i++)
            if (x->data[i] >= 10)
                fuzz_fail("accepted a label >= n_classes");
    }
    mpq_idx_close(&x);
    fuzz_done(env);
    return 0;
}
