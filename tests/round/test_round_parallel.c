/* test_round_parallel.c: mpq_round_block over the ranks. Every rank checks
 * the assembled results bit for bit against a serial recomputation of every
 * tile (the arithmetic of a tile must not depend on where it runs), and the
 * plan covers every tile once. With --dump FILE, rank 0 writes all outputs
 * (codes, serialized parameters, losses) for test_round_bitident.sh, which
 * compares their SHA-256 at 1, 2 and 4 ranks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_round.h"
#include "mpq_test.h"
#include "round_ref.h"

static mpq_ctx *g_ctx;
static const char *g_dump;

typedef struct jdesc {
    const char *name, *spec, *method;
    int64_t rows, cols;
} jdesc;

static const jdesc g_jobs[] = {
    {"l0.gptq", "int:bits=3,sym=false,group=16", "gptq", 70, 48},
    {"l1.nvfp4", "nvfp4", "adaround", 33, 40},
    {"l2.sbin", "signed_binary", "signround", 20, 64},
    {"l3.powexp", "powerexp:bits=3", "rtn", 50, 30},
    {"l4.tensor", "int:bits=4,sym=true,gran=tensor", "gptq", 41, 24},
    {"l5.int2", "int:bits=2,sym=false,group=8", "signround", 37, 36},
};
#define NJOBS ((int64_t)(sizeof g_jobs / sizeof g_jobs[0]))

/* With owned = 1, every job has owners (mpq_round_owners on its cost) and
 * H only there, the diagonal everywhere: the tiles must stay with the
 * owners and the results must not change. With shared_float = 1, GPTQ in
 * float32 whose factor mpq_round_block computes once per layer
 * (hessian.scalapack_min_width lowered so that these widths qualify; one
 * owner factors with LAPACK in float32) and hands to the tiles; no dump. */
static void run_block(mpq_ctx *ctx, int owned, int shared_float) {
    float *W[NJOBS];
    double *H[NJOBS], *diag[NJOBS];
    mpq_round_job jobs[NJOBS];
    mpq_hset sets[NJOBS];
    double cost[NJOBS];
    memset(jobs, 0, sizeof jobs);
    mpq_round_result res[NJOBS];
    mpq_round_opts o;
    mpq_round_opts_default(&o);
    o.iters = 25;
    o.tile_rows = 16;
    o.block_size = 16;
    if (shared_float) {
        o.gptq_float = 1;
        o.hf.scalapack_min_width = 16;
    }
    for (int64_t j = 0; j < NJOBS; j++) {
        const jdesc *d = &g_jobs[j];
        W[j] = malloc((size_t)(d->rows * d->cols) * sizeof **W);
        H[j] = malloc((size_t)(d->cols * d->cols) * sizeof **H);
        rr_weights(300 + (uint64_t)j, d->rows, d->cols, W[j]);
        rr_hessian(400 + (uint64_t)j, d->cols, j == 0 ? 11 : 0, H[j]);
        jobs[j].name = d->name;
        jobs[j].rows = d->rows;
        jobs[j].cols = d->cols;
        jobs[j].W = W[j];
        jobs[j].H = H[j];
        MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, d->spec, &jobs[j].spec));
        jobs[j].method = mpq_round_method_find(d->method);
        assert_non_null(jobs[j].method);
        diag[j] = malloc((size_t)d->cols * sizeof **diag);
        for (int64_t c = 0; c < d->cols; c++)
            diag[j][c] = H[j][c * d->cols + c];
        cost[j] = (double)(d->rows * d->cols);
    }
    if (owned) {
        mpq_round_owners(NJOBS, cost, NULL, ctx->size, sets);
        int next = 0; /* ranges in order, overlapping by one rank at most, covering all */
        for (int64_t j = 0; j < NJOBS; j++) {
            assert_true(sets[j].count >= 1 && sets[j].first >= 0 &&
                        sets[j].first + sets[j].count <= ctx->size);
            assert_true(sets[j].first == next || sets[j].first == next - 1);
            next = sets[j].first + sets[j].count;
            jobs[j].owners = sets[j];
            jobs[j].diag = diag[j];
            if (ctx->rank < sets[j].first || ctx->rank >= sets[j].first + sets[j].count)
                jobs[j].H = NULL;
        }
        assert_int_equal(next, ctx->size);
    }

    /* The plan: every tile once, on a valid rank. */
    int64_t ntasks = 0;
    mpq_round_task *tasks = NULL;
    MPQ_ASSERT_OK(ctx, mpq_round_plan(ctx, &o, NJOBS, jobs, ctx->size, &ntasks, &tasks));
    int64_t expect = 0;
    for (int64_t j = 0; j < NJOBS; j++)
        expect += (jobs[j].rows + 15) / 16;
    assert_int_equal(ntasks, expect);
    for (int64_t k = 0; k < ntasks; k++) {
        assert_true(tasks[k].rank >= 0 && tasks[k].rank < ctx->size);
        assert_int_equal(tasks[k].r0, tasks[k].tile * 16);
        if (owned) {
            const mpq_hset *s = &sets[tasks[k].job];
            assert_true(tasks[k].rank >= s->first && tasks[k].rank < s->first + s->count);
        }
    }
    mpq_free(tasks);

    MPQ_ASSERT_OK(ctx, mpq_round_block(ctx, &o, NJOBS, jobs, res));

    FILE *dump = NULL;
    int n_single = 0;
    if (g_dump && ctx->rank == 0 && !shared_float) {
        dump = fopen(g_dump, "wb");
        assert_non_null(dump);
    }
    for (int64_t j = 0; j < NJOBS; j++) {
        const mpq_round_job *jb = &jobs[j];
        /* Serial recomputation, tile by tile, on this rank. */
        mpq_round_problem *pb = NULL;
        mpq_qparams *p = NULL;
        uint8_t *codes = malloc((size_t)(jb->rows * jb->cols));
        MPQ_ASSERT_OK(ctx, mpq_round_problem_create(ctx, &o, jb->method, jb->name, &jb->spec,
                                                    jb->rows, jb->cols, jb->W, H[j], &pb));
        MPQ_ASSERT_OK(ctx, mpq_qparams_create(ctx, &jb->spec, jb->rows, jb->cols, &p));
        double loss = 0.0, rtn = 0.0;
        for (int64_t r0 = 0; r0 < jb->rows; r0 += 16) {
            int64_t r1 = r0 + 16 < jb->rows ? r0 + 16 : jb->rows;
            mpq_round_stats st;
            MPQ_ASSERT_OK(ctx, mpq_round_tile(ctx, &o, jb->method, pb, p, r0, r1,
                                              codes + r0 * jb->cols, &st));
            loss += st.loss;
            rtn += st.rtn_loss;
        }
        const mpq_qlayer *q = res[j].q;
        assert_memory_equal(q->codes, codes, (size_t)(jb->rows * jb->cols));
        /* the factor's precision as in the recomputation (float32 where
         * its probe passes, hfactor.c) */
        assert_int_equal(res[j].factor_single, pb->factor_single);
        n_single += res[j].factor_single;
        assert_memory_equal(q->params->scale, p->scale, (size_t)p->ngroups * sizeof *p->scale);
        if (p->zero)
            assert_memory_equal(q->params->zero, p->zero, (size_t)p->ngroups * sizeof *p->zero);
        if (p->sign)
            assert_memory_equal(q->params->sign, p->sign, (size_t)p->rows * sizeof *p->sign);
        assert_true(q->params->tensor_scale == p->tensor_scale);
        assert_true(q->params->expo == p->expo);
        assert_true(res[j].loss == loss);
        assert_true(res[j].rtn_loss == rtn);
        assert_true(res[j].loss <= res[j].rtn_loss);
        MPQ_ASSERT_OK(ctx, mpq_quant_check_codes(ctx, q->params, q->codes));
        /* The reported loss is the loss of the dequantized layer. */
        float *Q = malloc((size_t)(jb->rows * jb->cols) * sizeof *Q);
        mpq_qlayer_dequantize(q, Q);
        assert_true(rr_rel(res[j].loss, rr_loss(0, jb->rows, jb->cols, jb->W, Q, H[j])) <
                    (shared_float ? 1e-5 : 1e-9));
        free(Q);
        if (dump) {
            fwrite(q->packed, 1, (size_t)q->packed_bytes, dump);
            fwrite(q->param_bytes, 1, (size_t)q->nparam_bytes, dump);
            fwrite(&res[j].loss, sizeof(double), 1, dump);
            fwrite(&res[j].rtn_loss, sizeof(double), 1, dump);
        }
        free(codes);
        mpq_qparams_destroy(&p);
        mpq_round_problem_destroy(&pb);
    }
    if (dump)
        fclose(dump);
    if (shared_float) /* some factors pass the probe here (others do not: dead channels) */
        assert_true(n_single >= 2);
    else
        assert_int_equal(n_single, 0);
    mpq_round_results_free(NJOBS, res);
    for (int64_t j = 0; j < NJOBS; j++) {
        free(W[j]);
        free(H[j]);
        free(diag[j]);
    }
}

/* The owner plan on numbers worked out by hand. */
static void test_owners(void **state) {
    (void)state;
    const double c[4] = {1, 1, 1, 5}; /* stretches [0,1) [1,2) [2,3) [3,8) */
    mpq_hset s[4];
    mpq_round_owners(4, c, NULL, 2, s); /* ranks [0,4) [4,8) */
    for (int g = 0; g < 3; g++) {
        assert_int_equal(s[g].first, 0);
        assert_int_equal(s[g].count, 1);
    }
    assert_int_equal(s[3].first, 0);
    assert_int_equal(s[3].count, 2);
    mpq_round_owners(4, c, NULL, 8, s); /* ranks of width 1 */
    for (int g = 0; g < 3; g++) {
        assert_int_equal(s[g].first, g);
        assert_int_equal(s[g].count, 1);
    }
    assert_int_equal(s[3].first, 3);
    assert_int_equal(s[3].count, 5);
    mpq_round_owners(4, c, NULL, 1, s);
    for (int g = 0; g < 4; g++)
        assert_true(s[g].first == 0 && s[g].count == 1);
    /* With a setup of 2 for the last group: rank 0 would do 1 of it and
     * has other work, so it leaves; at 8 ranks, ranks 3 to 7 each have
     * nothing else and stay. */
    const double su[4] = {0, 0, 0, 2};
    mpq_round_owners(4, c, su, 2, s);
    assert_int_equal(s[3].first, 1);
    assert_int_equal(s[3].count, 1);
    mpq_round_owners(4, c, su, 8, s);
    assert_int_equal(s[3].first, 3);
    assert_int_equal(s[3].count, 5);
    /* stretches of 8/3: the last group [3, 8) meets rank 1 by 7/3, which
     * stays for a setup of 2 and leaves for 2.5 */
    mpq_round_owners(4, c, su, 3, s);
    assert_int_equal(s[3].first, 1);
    assert_int_equal(s[3].count, 2);
    const double su2[4] = {0, 0, 0, 2.5};
    mpq_round_owners(4, c, su2, 3, s);
    assert_int_equal(s[3].first, 2);
    assert_int_equal(s[3].count, 1);
}

static void test_block(void **state) {
    (void)state;
    run_block(g_ctx, 0, 0);
}

static void test_block_owned(void **state) {
    (void)state;
    run_block(g_ctx, 1, 0);
}

/* On one rank every owner set is that rank, so the shared factor is the
 * float32 LAPACK one (more ranks may share a layer through ScaLAPACK, in
 * double, which the serial recomputation would not reproduce). */
static void test_block_shared_float(void **state) {
    (void)state;
    if (g_ctx->size != 1)
        skip();
    run_block(g_ctx, 1, 1);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--dump") == 0)
            g_dump = argv[i + 1];
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_owners), cmocka_unit_test(test_block),
                                       cmocka_unit_test(test_block_owned),
                                       cmocka_unit_test(test_block_shared_float)};
    int f = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, f);
}
