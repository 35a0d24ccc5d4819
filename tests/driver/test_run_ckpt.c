/* test_run_ckpt.c: the checkpoint of a mixed-precision `mpquant run`
 * (mnist-cnn-small at 2.5 bits per weight, 30 learning steps; 1, 2 and 4
 * ranks):
 *  - the bits per weight computed from the checkpoint's stored code and
 *    parameter buffers equal the solver's figure (bits_used / weights);
 *  - every layer reloads to exactly the dequantized weights of the run;
 *  - the checkpoint opened as a model (format mpqckpt) evaluates to exactly
 *    the run's in-memory figures (accuracy, agreement with full precision);
 *  - its provenance holds the assignment and the evaluation. */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "mpq_ckpt.h"
#include "mpq_eval.h"
#include "run_util.h"

static mpq_ctx *g_ctx;

static void test_ckpt(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char dir[256] = "/tmp/mpq-run-ckpt.XXXXXX", out[700], path[600];
    if (ctx->rank == 0)
        assert_non_null(mkdtemp(dir));
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, ctx->comm);
    snprintf(path, sizeof path, "%s/m.mpq.h5", dir);
    snprintf(out, sizeof out, "output.path=%s", path);
    char *over[] = {out, "round.iters=30", "eval.also_all=false", "eval.count=2000"};
    mpq_config *cfg = rt_config(ctx, "mnist-cnn-small-w2.5-mixed.cfg", 4, over);
    mpq_run_result *r = rt_run(ctx, cfg, 1, 1);
    assert_non_null(r->checkpoint);
    assert_int_equal(r->has_budget, 1);

    mpq_ckpt *ck = NULL;
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, path, &ck));
    int64_t bits = 0, weights = 0;
    mpq_ckpt_stored_bits(ck, &bits, &weights);
    assert_int_equal(bits, r->budget.bits_used);
    assert_int_equal(weights, r->budget.n_weights);
    assert_true((double)bits / (double)weights == r->budget.avg_bits);
    assert_true(r->bpw == r->budget.avg_bits);
    int64_t nq = 0;
    for (int64_t l = 0; l < r->nlayers; l++) {
        const mpq_run_layer *rl = &r->layers[l];
        if (rl->excluded)
            continue;
        nq++;
        int64_t n = rl->rows * rl->cols;
        float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
        mpq_qlayer_dequantize(rl->q, a);
        MPQ_ASSERT_OK(ctx, mpq_ckpt_dequantize_layer(ctx, ck, rl->tensor, b));
        assert_memory_equal(a, b, (size_t)n * sizeof *a);
        int64_t i = mpq_ckpt_find(ck, rl->tensor);
        assert_true(i >= 0);
        assert_int_equal(ck->entries[i].bits, rl->bits);
        assert_string_equal(ck->entries[i].spec_text, rl->spec);
        free(a);
        free(b);
    }
    assert_int_equal(nq, ck->nlayers);
    assert_non_null(strstr(ck->assignment, "\"mode\":\"mixed\""));
    assert_non_null(strstr(ck->eval, "\"quantized\""));
    mpq_ckpt_close(&ck);

    /* The checkpoint as a model: the same evaluation, bit for bit. */
    mpq_model *mq = NULL, *mf = NULL;
    mpq_family *fq = NULL, *ff = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, path, "mpqckpt", &mq));
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, cfg->model.path, cfg->model.format, &mf));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, mq, cfg, NULL, &fq));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, mf, cfg, NULL, &ff));
    mpq_cls_result c;
    MPQ_ASSERT_OK(ctx, mpq_eval_idx(ctx, fq, ff, cfg->eval.images, cfg->eval.labels,
                                    cfg->eval.first, cfg->eval.count, cfg->eval.batch, &c));
    if (ctx->rank == 0)
        printf("checkpoint: %.4f bits per weight, accuracy %.6f (in memory %.6f), agreement %.6f "
               "(%.6f)\n",
               (double)bits / (double)weights, c.accuracy, r->quant.cls.accuracy, c.agreement,
               r->quant.cls.agreement);
    assert_int_equal(c.correct, r->quant.cls.correct);
    assert_int_equal(c.agree, r->quant.cls.agree);
    assert_int_equal(c.total, r->quant.cls.total);
    mpq_family_destroy(&fq);
    mpq_family_destroy(&ff);
    mpq_model_close(&mq);
    mpq_model_close(&mf);
    MPI_Barrier(ctx->comm);
    if (ctx->rank == 0) {
        unlink(path);
        rmdir(dir);
    }
    mpq_run_result_destroy(&r);
    mpq_config_destroy(&cfg);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ckpt)};
    int f = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, f);
}
