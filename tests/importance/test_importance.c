/* test_importance.c: the importance stage (mpq_importance.h), at 1, 2 and
 * 4 ranks.
 *  - the registry: one entry per importance.method choice of the key table
 *    and no other, sensitivity the only one that needs the probe, unknown
 *    names refused naming the file;
 *  - the scores of each estimator against the formulas written out here
 *    (error L, normalized L / energy or L when the energy is 0, sensitivity
 *    L * s), exactly; column map, per-layer candidate counts, and a negative
 *    or NaN score refused naming the layer unless the layer is skipped;
 *  - the layer energies tr(W H W^T) against a direct triple sum (relative
 *    1e-12) and bit for bit against a serial context;
 *  - the probed candidate: the configured spec, the one of fewest storage
 *    bits when none is set, a spec that is no candidate refused;
 *  - the sensitivity probe on stories260K (24 random samples of 128 tokens:
 *    two forward groups) against KL written out here from one forward pass
 *    per sample (relative 1e-4: batching changes float rounding only), and
 *    the weights restored bit for bit.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_calibrate.h"
#include "mpq_config.h"
#include "mpq_eval.h"
#include "mpq_importance.h"
#include "mpq_model.h"
#include "mpq_test.h"

static mpq_ctx *g_ctx;

static void test_registry(void **state) {
    (void)state;
    /* The key's allowed values are the registry's names (checked for every
     * variant key by foundation_registry); here: entries found by name,
     * names unique, the sensitivity flag on its one estimator. */
    int n = 0;
    for (int i = 0; mpq_importance_methods[i]; i++, n++) {
        const mpq_importance_method *m = mpq_importance_methods[i];
        assert_ptr_equal(mpq_importance_find(m->name), m);
        assert_non_null(m->score);
        assert_int_equal(m->needs_sensitivity, strcmp(m->name, "sensitivity") == 0);
        for (int j = 0; j < i; j++)
            assert_true(strcmp(mpq_importance_methods[j]->name, m->name) != 0);
    }
    assert_int_equal(n, 3);
    assert_null(mpq_importance_find("fisher"));
    assert_null(mpq_importance_find(NULL));

    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "imp.cfg", "", 0, NULL, &cfg));
    const mpq_importance_method *m = NULL;
    MPQ_ASSERT_OK(ctx, mpq_importance_from_config(ctx, cfg, &m));
    assert_string_equal(m->name, "sensitivity"); /* the key's default */
    /* The key table refuses an unknown name first; the registry too. */
    char *saved = cfg->importance.method, fisher[] = "fisher";
    cfg->importance.method = fisher;
    assert_int_equal(mpq_importance_from_config(ctx, cfg, &m), MPQ_ERR_CONFIG);
    assert_non_null(strstr(ctx->err_msg, "imp.cfg: importance.method: unknown method 'fisher'"));
    mpq_err_clear(ctx);
    cfg->importance.method = saved;
    mpq_config_destroy(&cfg);
}

/* A table of 3 layers x 3 columns with known values. */
static void make_table(mpq_measure_table *t) {
    MPQ_ASSERT_OK(g_ctx, mpq_measure_table_alloc(g_ctx, t, 3, 3));
    for (int64_t i = 0; i < 9; i++)
        t->loss[i] = 0.5 + (double)i;
    t->energy[0] = 4.0;
    t->energy[1] = 0.0; /* normalized falls back to L */
    t->energy[2] = 0.25;
    t->sens[0] = 2.0;
    t->sens[1] = 0.0;
    t->sens[2] = 3.0;
}

static void test_scores(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_measure_table t = {0};
    make_table(&t);
    mpq_layer_info layers[3];
    memset(layers, 0, sizeof layers);
    for (int l = 0; l < 3; l++)
        snprintf(layers[l].name, sizeof layers[l].name, "layer%d", l);
    mpq_family_info fi = {.nlayers = 3, .layers = layers};
    double score[9];
    /* every column */
    const char *names[] = {"error", "normalized", "sensitivity"};
    for (int m = 0; m < 3; m++) {
        const mpq_importance_method *im = mpq_importance_find(names[m]);
        MPQ_ASSERT_OK(ctx, mpq_importance_scores(ctx, im, &t, &fi, 3, NULL, NULL, NULL, score));
        for (int l = 0; l < 3; l++)
            for (int k = 0; k < 3; k++) {
                double L = t.loss[l * 3 + k], want = L;
                if (m == 1)
                    want = t.energy[l] > 0.0 ? L / t.energy[l] : L;
                else if (m == 2)
                    want = L * t.sens[l];
                assert_true(score[l * 3 + k] == want);
            }
    }
    /* two candidates mapped to columns 2 and 0; layer 1 has one */
    const int32_t col[] = {2, 0};
    const int32_t nc[] = {2, 1, 2};
    for (int i = 0; i < 9; i++)
        score[i] = -1.0;
    MPQ_ASSERT_OK(ctx, mpq_importance_scores(ctx, mpq_importance_find("error"), &t, &fi, 2, nc, col,
                                             NULL, score));
    assert_true(score[0] == t.loss[2] && score[1] == t.loss[0]);
    assert_true(score[2] == t.loss[5] && score[3] == -1.0);
    assert_true(score[4] == t.loss[8] && score[5] == t.loss[6]);
    /* a NaN or negative score is refused, unless the layer is skipped */
    t.loss[4] = NAN;
    assert_int_equal(mpq_importance_scores(ctx, mpq_importance_find("error"), &t, &fi, 3, NULL,
                                           NULL, NULL, score),
                     MPQ_ERR_NUMERIC);
    assert_non_null(strstr(ctx->err_msg, "importance: score of layer layer1 candidate 1 is nan"));
    mpq_err_clear(ctx);
    t.loss[4] = -2.0;
    assert_int_equal(mpq_importance_scores(ctx, mpq_importance_find("normalized"), &t, &fi, 3, NULL,
                                           NULL, NULL, score),
                     MPQ_ERR_NUMERIC);
    mpq_err_clear(ctx);
    const uint8_t skip[] = {0, 1, 0};
    MPQ_ASSERT_OK(ctx, mpq_importance_scores(ctx, mpq_importance_find("error"), &t, &fi, 3, NULL,
                                             NULL, skip, score));
    assert_true(score[4] == -2.0);
    mpq_measure_table_free(&t);
    assert_null(t.loss);
    mpq_measure_table_free(&t); /* safe on a zeroed table */
}

/* xorshift64*: deterministic values. */
static double rnd(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (double)((*s * 2685821657736338717ULL) >> 11) / 9007199254740992.0 - 0.5;
}

static void test_energy(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    enum { NJ = 5 };
    const int64_t out[NJ] = {3, 7, 1, 4, 6}, in[NJ] = {5, 2, 9, 8, 3};
    mpq_layer_info layers[NJ + 1];
    memset(layers, 0, sizeof layers);
    float *W[NJ];
    double *Hd[NJ], *X[NJ];
    mpq_hstat hs[NJ];
    const mpq_hstat *H[NJ];
    int64_t lay[NJ];
    uint64_t seed = 12345;
    memset(hs, 0, sizeof hs);
    for (int j = 0; j < NJ; j++) {
        lay[j] = NJ - j; /* layers in another order than the jobs */
        layers[lay[j]].out = out[j];
        layers[lay[j]].in = in[j];
        W[j] = test_malloc(sizeof(float) * (size_t)(out[j] * in[j]));
        Hd[j] = test_malloc(sizeof(double) * (size_t)(in[j] * in[j]));
        X[j] = test_malloc(sizeof(double) * (size_t)(11 * in[j]));
        for (int64_t i = 0; i < out[j] * in[j]; i++)
            W[j][i] = (float)rnd(&seed);
        for (int64_t i = 0; i < 11 * in[j]; i++)
            X[j][i] = rnd(&seed);
        /* H = X^T X over 11 rows: symmetric, positive semi-definite */
        for (int64_t a = 0; a < in[j]; a++)
            for (int64_t b = 0; b < in[j]; b++) {
                double v = 0.0;
                for (int r = 0; r < 11; r++)
                    v += X[j][r * in[j] + a] * X[j][r * in[j] + b];
                Hd[j][a * in[j] + b] = v;
            }
        hs[j].d = in[j];
        hs[j].H = Hd[j];
        H[j] = &hs[j];
    }
    mpq_family_info fi = {.nlayers = NJ + 1, .layers = layers};
    double energy[NJ + 1], serial_energy[NJ + 1];
    memset(energy, 0, sizeof energy);
    memset(serial_energy, 0, sizeof serial_energy);
    MPQ_ASSERT_OK(ctx, mpq_importance_energy(ctx, &fi, NJ, lay, W, H, NULL, energy));
    mpq_ctx *serial = NULL;
    assert_int_equal(mpq_ctx_create(MPI_COMM_NULL, &serial), MPQ_OK);
    MPQ_ASSERT_OK(serial, mpq_importance_energy(serial, &fi, NJ, lay, W, H, NULL, serial_energy));
    mpq_ctx_destroy(&serial);
    assert_true(energy[0] == 0.0);
    for (int j = 0; j < NJ; j++) {
        long double ref = 0.0L;
        for (int64_t r = 0; r < out[j]; r++)
            for (int64_t a = 0; a < in[j]; a++)
                for (int64_t b = 0; b < in[j]; b++)
                    ref += (long double)W[j][r * in[j] + a] * Hd[j][a * in[j] + b] *
                           W[j][r * in[j] + b];
        const double e = energy[lay[j]];
        assert_true(e > 0.0);
        if (fabs(e - (double)ref) > 1e-12 * fabs((double)ref))
            fail_msg("layer %lld: energy %.17g, direct sum %.17Lg", (long long)lay[j], e, ref);
        assert_memory_equal(&e, &serial_energy[lay[j]], sizeof e); /* any rank count */
        test_free(W[j]);
        test_free(Hd[j]);
        test_free(X[j]);
    }
}

static void test_probe_candidate(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_config *cfg = NULL;
    MPQ_ASSERT_OK(ctx, mpq_config_parse(ctx, "probe.cfg", "", 0, NULL, &cfg));
    mpq_layer_info layers[2];
    memset(layers, 0, sizeof layers);
    layers[0].out = 16;
    layers[0].in = 64;
    layers[1].out = 8;
    layers[1].in = 32;
    mpq_family_info fi = {.nlayers = 2, .layers = layers};
    const char *texts[] = {"int:bits=4,group=32", "int:bits=2,group=32", "int:bits=8,group=32"};
    mpq_qspec cand[3], want;
    for (int k = 0; k < 3; k++)
        MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, texts[k], &cand[k]));
    int32_t k = -1;
    MPQ_ASSERT_OK(ctx, mpq_importance_probe_candidate(ctx, cfg, &fi, 3, cand, NULL, &k));
    assert_int_equal(k, 1); /* fewest bits: int2 */
    MPQ_ASSERT_OK(ctx, mpq_importance_probe_candidate(ctx, cfg, &fi, 3, cand, &cand[2], &k));
    assert_int_equal(k, 2);
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "int:bits=3,group=32", &want));
    char *saved = cfg->importance.sensitivity_spec, text[] = "int:bits=3,group=32";
    cfg->importance.sensitivity_spec = text;
    assert_int_equal(mpq_importance_probe_candidate(ctx, cfg, &fi, 3, cand, &want, &k),
                     MPQ_ERR_CONFIG);
    assert_non_null(strstr(ctx->err_msg, "probe.cfg: importance.sensitivity_spec: "
                                         "\"int:bits=3,group=32\" is not one of quant.candidates"));
    mpq_err_clear(ctx);
    cfg->importance.sensitivity_spec = saved;
    mpq_config_destroy(&cfg);
}

/* KL of the model with layer l's codes from full precision, one sample per
 * forward pass, over all rows: the reference for the probe. */
static double naive_kl(mpq_ctx *ctx, mpq_family *f, const mpq_calib_set *set, int64_t nout,
                       const float *ref) {
    double kl = 0.0;
    int64_t rows = 0;
    float *lg = malloc(sizeof(float) * (size_t)(set->len[0] * nout));
    for (int64_t i = 0; i < set->nsamples; i++) {
        mpq_batch b;
        mpq_calib_sample_batch(set, i, &b);
        MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, f, &b, lg));
        kl += mpq_kl_rows(ref + set->offset[i] * nout, lg, b.rows, nout);
        rows += b.rows;
    }
    free(lg);
    return kl / (double)rows;
}

static void test_sensitivity_probe(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char path[4096];
    mpq_test_shared("data/models/stories260K/stories260K.bin", path, sizeof path);
    mpq_model *m = NULL;
    mpq_family *f = NULL;
    mpq_calib_set *set = NULL;
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, path, "auto", &m));
    MPQ_ASSERT_OK(ctx, mpq_family_create(ctx, m, NULL, "llama", &f));
    const mpq_family_info *fi = mpq_family_get_info(f);
    MPQ_ASSERT_OK(ctx, mpq_calib_set_random(ctx, fi, NULL, 24, 128, 7, &set));
    int64_t *g0 = NULL, ng = 0;
    MPQ_ASSERT_OK(ctx, mpq_eval_groups(ctx, set->len, set->nsamples, &g0, &ng));
    assert_int_equal(ng, 2);
    mpq_free(g0);
    mpq_qspec spec;
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "int:bits=2,group=32", &spec));
    mpq_measure_table t;
    memset(&t, 0, sizeof t);
    const int64_t nl = fi->nlayers, nout = fi->out_width;
    MPQ_ASSERT_OK(ctx, mpq_measure_table_alloc(ctx, &t, nl, 1));
    uint8_t *excl = calloc((size_t)nl, 1);
    excl[1] = 1; /* an excluded layer is not probed */
    int64_t maxw = 0;
    for (int64_t l = 0; l < nl; l++)
        maxw = fi->layers[l].out * fi->layers[l].in > maxw ? fi->layers[l].out * fi->layers[l].in
                                                           : maxw;
    float *w = malloc(sizeof(float) * (size_t)maxw), *wq = malloc(sizeof(float) * (size_t)maxw);
    for (int64_t l = 0; l < nl; l++) {
        MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, f, l, w));
        MPQ_ASSERT_OK(ctx,
                      mpq_qlayer_create(ctx, &spec, fi->layers[l].out, fi->layers[l].in, &t.q[l]));
        MPQ_ASSERT_OK(ctx, mpq_qlayer_quantize(ctx, t.q[l], w, NULL));
        t.loss[l] = 0.5 + (double)l; /* s_l = KL_l / L_l */
    }
    mpq_importance_probe p = {
        .ffp = f, .set = set, .samples = 0, .excl = excl, .col = 0, .who = "test"};
    MPQ_ASSERT_OK(ctx, mpq_importance_sensitivity(ctx, &p, &t));

    float *ref = malloc(sizeof(float) * (size_t)(set->offset[set->nsamples] * nout));
    for (int64_t i = 0; i < set->nsamples; i++) {
        mpq_batch b;
        mpq_calib_sample_batch(set, i, &b);
        MPQ_ASSERT_OK(ctx, mpq_family_forward(ctx, f, &b, ref + set->offset[i] * nout));
    }
    for (int64_t l = 0; l < nl; l++) {
        if (excl[l]) {
            assert_true(t.sens[l] == 0.0);
            continue;
        }
        /* the probe restored the full-precision weight */
        float *w2 = malloc(sizeof(float) * (size_t)(fi->layers[l].out * fi->layers[l].in));
        MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, f, l, w));
        mpq_qlayer_dequantize(t.q[l], wq);
        MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, f, l, wq));
        const double kl = naive_kl(ctx, f, set, nout, ref);
        MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, f, l, w));
        MPQ_ASSERT_OK(ctx, mpq_family_get_weight(ctx, f, l, w2));
        assert_memory_equal(w, w2, sizeof(float) * (size_t)(fi->layers[l].out * fi->layers[l].in));
        free(w2);
        const double want = kl / t.loss[l];
        if (!(want > 0.0 && fabs(t.sens[l] - want) <= 1e-4 * want))
            fail_msg("layer %s: sensitivity %.9g, per-sample reference %.9g", fi->layers[l].name,
                     t.sens[l], want);
    }
    free(ref), free(w), free(wq), free(excl);
    mpq_measure_table_free(&t);
    mpq_calib_set_destroy(&set);
    mpq_family_destroy(&f);
    mpq_model_close(&m);
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_scores),
        cmocka_unit_test(test_energy),
        cmocka_unit_test(test_probe_candidate),
        cmocka_unit_test(test_sensitivity_probe),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&g_ctx, failed);
}
