/* test_ckpt.c: the quantized checkpoint at 1, 2 and 4 ranks, on the real
 * stories260K model with layers quantized by the quantizer library (five
 * quantizer families, owners spread over the ranks).
 *
 * References: the in-memory layers (mpq_qlayer_dequantize, mpq_qlayer_bits,
 * mpq_quant_storage_bits), HDF5's own storage sizes of the datasets, the
 * evaluation of the original model with the dequantized weights substituted
 * (mpq_family_set_weight), the safetensors layout rules, and the RoPE row
 * permutation re-derived here. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "mpq_coll.h"
#include "mpq_eval.h"
#include "mpq_hash.h"
#include "mpq_test.h"
#include "mpq_tokenizer.h"
#include "test_ckpt_util.h"

#define NDOCS 12

static mpq_ctx *g_ctx;
static char g_dir[256];
static char g_model[1024], g_tok[1024], g_text[1024];
static char g_ckpt[512];
static mpq_model *g_m;
static mpq_family *g_f;
static mpq_tokenizer *g_tk;
static ckpt_fixture g_fx;
static mpq_lm_result g_mem; /* evaluation with the dequantized weights substituted */
static int g_have_mem;

static const char *in_dir(const char *name, char *buf, size_t len) {
    snprintf(buf, len, "%s/%s", g_dir, name);
    return buf;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* ---- reload -------------------------------------------------------------------- */

static void test_reload_bit_exact(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_ckpt *ck = NULL;
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, g_ckpt, &ck));
    assert_int_equal(ck->version, MPQ_CKPT_VERSION);
    assert_int_equal(ck->nlayers, g_fx.n);
    assert_int_equal(ck->nentries, mpq_model_ntensors(g_m));
    assert_int_equal(ck->nranks, ctx->size);
    assert_string_equal(ck->arch.family, "llama");
    assert_int_equal(ck->arch.dim, mpq_model_arch(g_m)->dim);
    assert_true(ck->arch.rope_interleaved);
    /* The model's order is kept. */
    for (int64_t i = 0; i < ck->nentries; i++)
        assert_string_equal(ck->entries[i].name, mpq_model_tensor_at(g_m, i)->name);
    for (int64_t k = 0; k < g_fx.n; k++) {
        int64_t i = mpq_ckpt_find(ck, g_fx.descs[k].tensor);
        assert_true(i >= 0);
        const mpq_ckpt_entry *e = &ck->entries[i];
        assert_true(e->quantized);
        assert_string_equal(e->method, "rtn");
        if (g_fx.owners[k] != ctx->rank)
            continue;
        const mpq_qlayer *ql = g_fx.qlayers[k];
        assert_true(mpq_qspec_equal(&e->spec, &ql->spec));
        assert_int_equal(e->rows, ql->rows);
        assert_int_equal(e->cols, ql->cols);
        assert_true(e->loss == g_fx.descs[k].loss);
        mpq_qlayer *rl = NULL;
        MPQ_ASSERT_OK(ctx, mpq_ckpt_read_layer(ctx, ck, i, &rl));
        int64_t n = ql->rows * ql->cols;
        assert_memory_equal(rl->codes, ql->codes, (size_t)n);
        assert_memory_equal(rl->packed, ql->packed, (size_t)ql->packed_bytes);
        assert_memory_equal(rl->param_bytes, ql->param_bytes, (size_t)ql->nparam_bytes);
        float *want = malloc((size_t)n * sizeof *want), *got = malloc((size_t)n * sizeof *got);
        assert_non_null(want);
        assert_non_null(got);
        mpq_qlayer_dequantize(ql, want);
        MPQ_ASSERT_OK(ctx, mpq_ckpt_dequantize_layer(ctx, ck, e->name, got));
        assert_memory_equal(got, want, (size_t)n * sizeof *got); /* bit for bit */
        free(want);
        free(got);
        mpq_qlayer_destroy(&rl);
    }
    /* Plain tensors: the same bytes. */
    for (int64_t i = 0; i < ck->nentries; i++) {
        const mpq_ckpt_entry *e = &ck->entries[i];
        if (e->quantized)
            continue;
        const mpq_tensor *t = mpq_model_find(g_m, e->name);
        assert_non_null(t);
        assert_int_equal(e->dtype, t->dtype);
        assert_int_equal(e->ndim, t->ndim);
        void *buf = malloc(t->nbytes);
        assert_non_null(buf);
        MPQ_ASSERT_OK(ctx, mpq_ckpt_read_tensor(ctx, ck, i, buf));
        assert_memory_equal(buf, t->data, t->nbytes);
        free(buf);
    }
    /* Provenance: the input's digest and the texts given. */
    char hex[MPQ_SHA256_HEX];
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, g_model, hex));
    cJSON *inputs = cJSON_Parse(ck->inputs);
    assert_non_null(inputs);
    cJSON *h = cJSON_GetObjectItemCaseSensitive(inputs, g_model);
    assert_true(cJSON_IsString(h));
    assert_string_equal(h->valuestring, hex);
    cJSON_Delete(inputs);
    assert_non_null(strstr(ck->config, "stories260K.bin"));
    assert_int_equal(strlen(ck->date), 20); /* YYYY-MM-DDTHH:MM:SSZ */
    mpq_ckpt_close(&ck);
}

/* ---- bits ------------------------------------------------------------------------- */

/* Storage of the layer datasets as HDF5 itself reports it (no mpquant code). */
static int64_t h5_stored_bits(const char *path, int64_t *nlayers) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t g = H5Gopen2(f, "layers", H5P_DEFAULT);
    assert_true(g >= 0);
    H5G_info_t info;
    assert_true(H5Gget_info(g, &info) >= 0);
    int64_t bits = 0;
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char name[256], dset[300];
        assert_true(H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                       H5P_DEFAULT) > 0);
        const char *parts[] = {"codes", "params"};
        for (int p = 0; p < 2; p++) {
            snprintf(dset, sizeof dset, "%s/%s", name, parts[p]);
            hid_t d = H5Dopen2(g, dset, H5P_DEFAULT);
            assert_true(d >= 0);
            bits += 8 * (int64_t)H5Dget_storage_size(d);
            H5Dclose(d);
        }
    }
    *nlayers = (int64_t)info.nlinks;
    H5Gclose(g);
    H5Fclose(f);
    return bits;
}

static void test_bits_match_solver(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    /* The in-memory layers (each on its owner) and the solver's formula. */
    int64_t mine = 0, formula = 0, all = 0;
    for (int64_t k = 0; k < g_fx.n; k++)
        if (g_fx.owners[k] == ctx->rank)
            mine += mpq_qlayer_bits(g_fx.qlayers[k]);
    MPI_Allreduce(&mine, &all, 1, MPI_INT64_T, MPI_SUM, ctx->comm);
    int64_t n = 0, h5bits = h5_stored_bits(g_ckpt, &n);
    mpq_ckpt *ck = NULL;
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, g_ckpt, &ck));
    int64_t bits = 0, weights = 0;
    mpq_ckpt_stored_bits(ck, &bits, &weights);
    for (int64_t i = 0; i < ck->nentries; i++) {
        const mpq_ckpt_entry *e = &ck->entries[i];
        if (!e->quantized)
            continue;
        int64_t b = 0;
        MPQ_ASSERT_OK(ctx, mpq_quant_storage_bits(ctx, &e->spec, e->rows, e->cols, &b));
        formula += b;
    }
    if (ctx->rank == 0)
        printf("ranks %d: %lld layers, %lld bits stored for %lld weights = %.4f bits/weight\n",
               ctx->size, (long long)n, (long long)h5bits, (long long)weights,
               (double)h5bits / (double)weights);
    assert_int_equal(n, g_fx.n);
    assert_int_equal(h5bits, all);
    assert_int_equal(bits, all);
    assert_int_equal(formula, all);
    mpq_ckpt_close(&ck);
}

/* ---- evaluation ------------------------------------------------------------------- */

static mpq_err open_family(mpq_ctx *ctx, const char *path, mpq_model **m, mpq_family **f) {
    mpq_err err = mpq_model_open(ctx, path, "auto", m);
    if (err == MPQ_OK)
        err = mpq_family_create(ctx, *m, NULL, "auto", f);
    return mpq_agree(ctx, err);
}

static int64_t layer_of(const mpq_family *f, const char *tensor) {
    const mpq_family_info *fi = mpq_family_get_info(f);
    for (int64_t i = 0; i < fi->nlayers; i++)
        if (strcmp(fi->layers[i].tensor, tensor) == 0)
            return i;
    return -1;
}

static void test_eval_equals_in_memory(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_model *m2 = NULL, *mc = NULL;
    mpq_family *f2 = NULL, *fc = NULL;
    mpq_lm_result fp, mem, ck;
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_text(ctx, g_f, NULL, g_tk, g_text, NDOCS, &fp));
    /* The original model with every layer replaced by its owner's
     * dequantized weights (broadcast). */
    MPQ_ASSERT_OK(ctx, open_family(ctx, g_model, &m2, &f2));
    for (int64_t k = 0; k < g_fx.n; k++) {
        int64_t l = layer_of(f2, g_fx.descs[k].tensor);
        assert_true(l >= 0);
        const mpq_layer_info *li = &mpq_family_get_info(f2)->layers[l];
        int64_t n = li->out * li->in;
        float *w = malloc((size_t)n * sizeof *w);
        assert_non_null(w);
        if (g_fx.owners[k] == ctx->rank)
            mpq_qlayer_dequantize(g_fx.qlayers[k], w);
        MPI_Bcast(w, (int)n, MPI_FLOAT, g_fx.owners[k], ctx->comm);
        MPQ_ASSERT_OK(ctx, mpq_family_set_weight(ctx, f2, l, w));
        free(w);
    }
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_text(ctx, f2, NULL, g_tk, g_text, NDOCS, &mem));
    MPQ_ASSERT_OK(ctx, open_family(ctx, g_ckpt, &mc, &fc));
    assert_string_equal(mpq_model_arch(mc)->format, "mpqckpt");
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_text(ctx, fc, g_f, g_tk, g_text, NDOCS, &ck));
    if (ctx->rank == 0)
        printf("ranks %d: fp32 mean_nll %.7f, substituted %.7f, checkpoint %.7f (ppl %.4f, kld "
               "%.5f)\n",
               ctx->size, fp.mean_nll, mem.mean_nll, ck.mean_nll, ck.ppl, ck.kld);
    assert_int_equal(ck.predictions, mem.predictions);
    assert_true(ck.nll == mem.nll); /* the same weights: the same bits */
    assert_true(mem.nll != fp.nll); /* and quantization did change the model */
    assert_true(ck.kld > 0.0);
    g_mem = mem;
    g_have_mem = 1;
    mpq_family_destroy(&fc);
    mpq_model_close(&mc);
    mpq_family_destroy(&f2);
    mpq_model_close(&m2);
}

/* ---- exports ---------------------------------------------------------------------- */

/* Checks the safetensors layout rules: 8-byte little-endian header length,
 * a JSON object with __metadata__.format = "pt", F32 tensors whose
 * data_offsets tile [0, data size) contiguously in header order. */
static void check_safetensors_layout(const char *path, int64_t want_tensors) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char len8[8];
    assert_int_equal(fread(len8, 1, 8, fp), 8);
    uint64_t n = 0;
    for (int k = 0; k < 8; k++)
        n |= (uint64_t)len8[k] << (8 * k);
    assert_true(n % 8 == 0 && n + 8 <= (uint64_t)size);
    char *hdr = malloc(n + 1);
    assert_non_null(hdr);
    assert_int_equal(fread(hdr, 1, n, fp), n);
    hdr[n] = '\0';
    fclose(fp);
    cJSON *j = cJSON_Parse(hdr);
    assert_non_null(j);
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "__metadata__");
    assert_true(cJSON_IsObject(meta));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "format")->valuestring, "pt");
    double next = 0;
    int64_t count = 0;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, j) {
        if (strcmp(it->string, "__metadata__") == 0)
            continue;
        count++;
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(it, "dtype")->valuestring, "F32");
        double numel = 1;
        const cJSON *d = NULL;
        cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(it, "shape")) numel *=
            d->valuedouble;
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        assert_true(cJSON_GetArraySize(off) == 2);
        assert_true(cJSON_GetArrayItem(off, 0)->valuedouble == next);
        assert_true(cJSON_GetArrayItem(off, 1)->valuedouble - next == 4 * numel);
        next = cJSON_GetArrayItem(off, 1)->valuedouble;
    }
    assert_int_equal(count, want_tensors);
    assert_true(next == (double)((uint64_t)size - 8 - n));
    cJSON_Delete(j);
    free(hdr);
}

/* Exported q/k rows are in rotate-half order: row (h, t * half + i) of the
 * export is row (h, 2 i + t) of the interleaved original. */
static void check_export_values(const mpq_model *orig, const mpq_model *exp, int permuted) {
    int64_t hd = mpq_model_arch(orig)->head_dim, half = hd / 2;
    for (int64_t i = 0; i < mpq_model_ntensors(orig); i++) {
        const mpq_tensor *a = mpq_model_tensor_at(orig, i);
        const mpq_tensor *b = mpq_model_find(exp, a->name);
        assert_non_null(b);
        assert_int_equal(a->numel, b->numel);
        int qk = strstr(a->name, "q_proj") || strstr(a->name, "k_proj");
        if (!permuted || !qk) {
            assert_memory_equal(a->data, b->data, a->nbytes);
            continue;
        }
        int64_t cols = a->shape[1];
        const float *x = a->data, *y = b->data;
        for (int64_t h = 0; h < a->shape[0] / hd; h++)
            for (int64_t t = 0; t < 2; t++)
                for (int64_t r = 0; r < half; r++)
                    assert_memory_equal(y + (h * hd + t * half + r) * cols,
                                        x + (h * hd + 2 * r + t) * cols, (size_t)cols * 4);
    }
}

static void test_exports_evaluate_the_same(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    assert_true(g_have_mem);
    char st_dir[512], st[600], cfgjson[600], l2c[512];
    in_dir("st", st_dir, sizeof st_dir);
    snprintf(st, sizeof st, "%s/model.safetensors", st_dir);
    snprintf(cfgjson, sizeof cfgjson, "%s/config.json", st_dir);
    in_dir("export.bin", l2c, sizeof l2c);
    mpq_err err = MPQ_OK;
    mpq_model *mc = NULL, *ms = NULL, *ml = NULL;
    mpq_family *fs = NULL, *fl = NULL;
    if (ctx->rank == 0) {
        mkdir(st_dir, 0755);
        err = mpq_model_open(ctx, g_ckpt, "auto", &mc);
        if (err == MPQ_OK)
            err = mpq_export_safetensors(ctx, mc, st, 0, 1);
        if (err == MPQ_OK)
            err = mpq_export_llama2c(ctx, mc, l2c, 0);
        mpq_model_close(&mc);
    }
    MPQ_ASSERT_OK(ctx, mpq_agree(ctx, err));
    assert_true(file_exists(cfgjson));
    check_safetensors_layout(st, mpq_model_ntensors(g_m));
    MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, g_ckpt, "auto", &mc));
    MPQ_ASSERT_OK(ctx, open_family(ctx, st, &ms, &fs));
    MPQ_ASSERT_OK(ctx, open_family(ctx, l2c, &ml, &fl));
    assert_string_equal(mpq_model_arch(ms)->format, "safetensors");
    assert_false(mpq_model_arch(ms)->rope_interleaved);
    check_export_values(mc, ms, 1);
    check_export_values(mc, ml, 0);
    mpq_lm_result rs, rl;
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_text(ctx, fs, NULL, g_tk, g_text, NDOCS, &rs));
    MPQ_ASSERT_OK(ctx, mpq_eval_lm_text(ctx, fl, NULL, g_tk, g_text, NDOCS, &rl));
    if (ctx->rank == 0)
        printf("ranks %d: checkpoint mean_nll %.9f, safetensors %.9f (diff %.2e), llama2c %.9f\n",
               ctx->size, g_mem.mean_nll, rs.mean_nll, rs.mean_nll - g_mem.mean_nll, rl.mean_nll);
    /* llama2.c keeps the interleaved rows: the same network, the same bits. */
    assert_true(rl.nll == g_mem.nll);
    /* Safetensors permutes q/k rows, which reorders the sums of the
     * attention dot products: equal up to float rounding. */
    assert_int_equal(rs.predictions, g_mem.predictions);
    assert_true(fabs(rs.mean_nll - g_mem.mean_nll) <= 1e-5);
    mpq_family_destroy(&fl);
    mpq_family_destroy(&fs);
    mpq_model_close(&ml);
    mpq_model_close(&ms);
    mpq_model_close(&mc);
}

/* ---- refusals --------------------------------------------------------------------- */

static void test_refusals(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    mpq_ckpt_writer *w = NULL;
    char before[MPQ_SHA256_HEX], after[MPQ_SHA256_HEX], l2c[512];
    in_dir("export.bin", l2c, sizeof l2c);
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, g_ckpt, before));
    /* An existing output without overwrite. */
    mpq_err err = mpq_ckpt_writer_create(ctx, g_ckpt, 0, NULL, 0, &w);
    assert_int_equal(err, MPQ_ERR_IO);
    assert_null(w);
    assert_non_null(strstr(ctx->err_msg, "already exists"));
    mpq_err_clear(ctx);
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, g_ckpt, after));
    assert_string_equal(before, after);
    /* The output may never be an input, even with overwrite. */
    const char *inputs[] = {l2c};
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, l2c, before));
    err = mpq_ckpt_writer_create(ctx, l2c, 1, inputs, 1, &w);
    assert_int_equal(err, MPQ_ERR_ARG);
    assert_non_null(strstr(ctx->err_msg, "same file as input"));
    mpq_err_clear(ctx);
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, l2c, after));
    assert_string_equal(before, after);
    /* Exports: existing output, and output == input (rank 0 writes). */
    if (ctx->rank == 0) {
        mpq_model *mc = NULL;
        MPQ_ASSERT_OK(ctx, mpq_model_open(ctx, g_ckpt, "auto", &mc));
        assert_int_equal(mpq_export_llama2c(ctx, mc, l2c, 0), MPQ_ERR_IO);
        mpq_err_clear(ctx);
        assert_int_equal(mpq_export_safetensors(ctx, mc, g_ckpt, 1, 0), MPQ_ERR_ARG);
        mpq_err_clear(ctx);
        mpq_model_close(&mc);
    }
    MPI_Barrier(ctx->comm);
    MPQ_ASSERT_OK(ctx, mpq_sha256_file(ctx, g_ckpt, after));
    /* With overwrite the checkpoint is replaced by a valid one. */
    MPQ_ASSERT_OK(ctx, ckpt_fixture_write(ctx, g_m, &g_fx, g_ckpt, 1, NULL, NULL, -1));
    mpq_ckpt *ck = NULL;
    MPQ_ASSERT_OK(ctx, mpq_ckpt_open(ctx, g_ckpt, &ck));
    assert_int_equal(ck->nlayers, g_fx.n);
    mpq_ckpt_close(&ck);
}

/* An error on one rank (a bad entry from the owner) reaches every rank,
 * and abort leaves neither the output nor a temporary. */
static void test_error_agreed_and_abort_cleans(void **state) {
    (void)state;
    mpq_ctx *ctx = g_ctx;
    char out[512];
    in_dir("bad.h5", out, sizeof out);
    mpq_ckpt_writer *w = NULL;
    MPQ_ASSERT_OK(ctx, mpq_ckpt_writer_create(ctx, out, 0, NULL, 0, &w));
    assert_non_null(w);
    mpq_ckpt_layer_desc d = {.tensor = "bad/name", .loss = 0.0};
    int owner = ctx->size - 1;
    mpq_qlayer *ql = NULL;
    if (ctx->rank == owner) {
        mpq_qspec spec;
        MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "int:bits=4", &spec));
        MPQ_ASSERT_OK(ctx, mpq_qlayer_create(ctx, &spec, 2, 4, &ql));
    }
    mpq_err err = mpq_ckpt_write_layer(ctx, w, &d, ql, owner);
    assert_int_equal(err, MPQ_ERR_ARG);
    assert_int_equal(ctx->err_rank, owner);
    assert_non_null(strstr(ctx->err_msg, "bad/name"));
    mpq_err_clear(ctx);
    mpq_qlayer_destroy(&ql);
    mpq_ckpt_abort(ctx, &w);
    assert_null(w);
    assert_false(file_exists(out));
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q '^\\.bad\\.h5\\.tmp\\.'", g_dir);
    assert_int_not_equal(system(cmd), 0); /* no temporary left */
}

int main(int argc, char **argv) {
    g_ctx = mpq_test_init(&argc, &argv);
    mpq_ctx *ctx = g_ctx;
    mpq_test_shared("data/models/stories260K/stories260K.bin", g_model, sizeof g_model);
    mpq_test_shared("data/models/stories260K/tok512.bin", g_tok, sizeof g_tok);
    mpq_test_shared("data/text/tinyshakespeare.txt", g_text, sizeof g_text);
    if (ctx->rank == 0) {
        snprintf(g_dir, sizeof g_dir, "/tmp/mpq-test-ckpt-XXXXXX");
        if (!mkdtemp(g_dir))
            MPI_Abort(ctx->comm, 1);
    }
    MPI_Bcast(g_dir, sizeof g_dir, MPI_CHAR, 0, ctx->comm);
    in_dir("q.h5", g_ckpt, sizeof g_ckpt);
    mpq_err err = open_family(ctx, g_model, &g_m, &g_f);
    if (err == MPQ_OK)
        err = mpq_tokenizer_load(ctx, g_tok, mpq_family_get_info(g_f)->vocab_size, &g_tk);
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK)
        err = ckpt_fixture_build(ctx, g_f, &g_fx);
    if (err == MPQ_OK)
        err = ckpt_fixture_write(ctx, g_m, &g_fx, g_ckpt, 0, NULL, "{\"round\": 1.5}", -1);
    int failures = 0;
    if (err != MPQ_OK) {
        if (ctx->rank == 0)
            fprintf(stderr, "setup failed: %s\n%s\n", ctx->err_msg, ctx->err_trace);
        failures = 1;
    } else {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_reload_bit_exact),
            cmocka_unit_test(test_bits_match_solver),
            cmocka_unit_test(test_eval_equals_in_memory),
            cmocka_unit_test(test_exports_evaluate_the_same),
            cmocka_unit_test(test_refusals),
            cmocka_unit_test(test_error_agreed_and_abort_cleans),
        };
        failures = cmocka_run_group_tests(tests, NULL, NULL);
    }
    ckpt_fixture_free(&g_fx);
    mpq_tokenizer_destroy(&g_tk);
    mpq_family_destroy(&g_f);
    mpq_model_close(&g_m);
    MPI_Barrier(ctx->comm);
    if (ctx->rank == 0) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", g_dir);
    }
    return mpq_test_finish(&g_ctx, failures);
}
