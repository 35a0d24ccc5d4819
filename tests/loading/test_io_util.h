/* test_io_util.h: small helpers shared by the models-io tests. */
#ifndef TEST_IO_UTIL_H
#define TEST_IO_UTIL_H

#include <stdio.h>
#include <string.h>

#include "mpq_model.h"
#include "mpq_test.h"

/* Asserts that e is `code` and that the recorded message contains every
 * non-NULL needle; then clears the error. */
static inline void test_io_expect(mpq_ctx *ctx, mpq_err e, mpq_err code, const char *n1,
                                  const char *n2, const char *n3) {
    if (e != code)
        fail_msg("expected %s, got %s: %s", mpq_err_name(code), mpq_err_name(e), ctx->err_msg);
    const char *needles[3] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        if (needles[i] && !strstr(ctx->err_msg, needles[i]))
            fail_msg("error message lacks \"%s\": %s", needles[i], ctx->err_msg);
    mpq_err_clear(ctx);
}

/* Opening `path` must fail with `code` and a message holding the needles. */
static inline void test_io_expect_open(mpq_ctx *ctx, const char *path, const char *format,
                                       mpq_err code, const char *n1, const char *n2,
                                       const char *n3) {
    mpq_model *m = NULL;
    mpq_err e = mpq_model_open(ctx, path, format, &m);
    assert_null(m);
    test_io_expect(ctx, e, code, n1, n2, n3);
}

/* Tensor t holds exactly the n fp32 values of ref (after conversion to
 * fp32 when t is F16/BF16: then ref must hold the rounded values). */
static inline void test_io_expect_data(mpq_ctx *ctx, const mpq_tensor *t, const float *ref,
                                       int64_t n) {
    assert_non_null(t);
    assert_int_equal(t->numel, n);
    float *buf = NULL;
    MPQ_ASSERT_OK(ctx, mpq_malloc(ctx, n, sizeof *buf, (void **)&buf));
    MPQ_ASSERT_OK(ctx, mpq_tensor_read_f32(ctx, t, 0, n, buf));
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&buf[i], &ref[i], sizeof *buf) != 0)
            fail_msg("tensor '%s' element %lld: %.9g, expected %.9g", t->name, (long long)i,
                     (double)buf[i], (double)ref[i]);
    mpq_free(buf);
}

#endif
