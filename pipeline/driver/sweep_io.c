/* sweep_io.c: the sweep's measurement to and from HDF5, so that the points
 * of a Slurm job array load the one measurement instead of calibrating
 * again.
 *
 * Layout (format "mpquant-sweep", version 1), written by rank 0 alone under
 * a temporary name and renamed into place (mpq_outfile.h):
 *   /            attrs format (string), version (int32)
 *   /meta        uint8 [len]  JSON identifying the measurement: the model,
 *                             calibration, hessian, round, quant, importance
 *                             and eval sections of the configuration, the
 *                             metric, the layer names, the excluded layers and
 *                             the measured configurations; checked on load
 *   /reference   uint8 [len]  JSON of the full-precision row (mpq_sweep_point)
 *   /loss        float64 [nlayers][nconf]  layer error of each configuration
 *   /rtn_loss    float64 [nlayers][nconf]  nearest-rounding error, same H
 *   /bits        int64   [nlayers][nconf]  exact storage bits
 *   /energy      float64 [nlayers]         tr(W H W^T)
 *   /sensitivity float64 [nlayers]         s_l (0 when not probed)
 *   /codes       uint8 [total]  for every quantized layer l and configuration
 *                c in that order: the packed code stream
 *                (mpq_quant_packed_bytes) then the serialized parameters
 *                (mpq_qparams_nbytes); sizes follow from spec and shape.
 * Excluded layers have zero rows. Every rank reads the file on load. The
 * attributes, the byte datasets and the measurement datasets (loss to
 * sensitivity, as in mpquant run's measure.save) are written and read by
 * measure_io.c. */
#include <cjson/cJSON.h>
#include <hdf5.h>
#include <string.h>

#include "mpq_ckpt.h"
#include "mpq_coll.h"
#include "mpq_infile.h"
#include "mpq_h5.h"
#include "mpq_log.h"
#include "mpq_outfile.h"
#include "sweep_internal.h"

#define SWEEP_FORMAT  "mpquant-sweep"
#define SWEEP_VERSION 1

char *mpq_sweep_meta(const mpq_sweep *sw) {
    static const char *const sections[] = {"model",      "calibration", "hessian", "round",
                                           "importance", "eval",        "quant"};
    cJSON *all = mpq_config_to_json(sw->cfg), *o = cJSON_CreateObject();
    char *t = NULL, buf[MPQ_QSPEC_MAX];
    if (!all || !o)
        goto done;
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        cJSON *s = cJSON_DetachItemFromObject(all, sections[i]);
        if (s)
            cJSON_AddItemToObject(o, sections[i], s);
    }
    cJSON_AddStringToObject(o, "metric", sw->metric->name);
    cJSON *ls = cJSON_AddArrayToObject(o, "layers"), *ex = cJSON_AddArrayToObject(o, "excluded"),
          *cs = cJSON_AddArrayToObject(o, "configurations");
    for (int64_t l = 0; ls && ex && l < sw->ses->nl; l++) {
        cJSON_AddItemToArray(ls, cJSON_CreateString(sw->ses->info->layers[l].name));
        if (sw->ses->excl[l])
            cJSON_AddItemToArray(ex, cJSON_CreateString(sw->ses->info->layers[l].name));
    }
    for (int64_t c = 0; cs && c < sw->plan.nconf; c++) {
        cJSON *x = cJSON_CreateObject();
        if (!x)
            goto done;
        cJSON_AddStringToObject(x, "method", sw->plan.conf[c].method->name);
        cJSON_AddStringToObject(x, "spec",
                                mpq_qspec_format(&sw->plan.conf[c].spec, buf, sizeof buf));
        if (sw->plan.conf[c].rate >= 0.0)
            cJSON_AddNumberToObject(x, "rate_lambda", sw->plan.conf[c].rate);
        cJSON_AddItemToArray(cs, x);
    }
    t = cJSON_PrintUnformatted(o);
done:
    cJSON_Delete(all);
    cJSON_Delete(o);
    return t;
}

/* Bytes of configuration c of layer l in /codes. */
static mpq_err entry_bytes(mpq_ctx *ctx, const mpq_sweep *sw, int64_t l, int64_t c, int64_t *packed,
                           int64_t *params) {
    const mpq_layer_info *li = &sw->ses->info->layers[l];
    const mpq_qspec *s = &sw->plan.conf[c].spec;
    *packed = mpq_quant_packed_bytes(s, li->out * li->in);
    MPQ_CALL(mpq_qparams_nbytes(ctx, s, li->out, li->in, params));
    return MPQ_OK;
}

/* Bytes of /codes: every configuration of every quantized layer. */
static mpq_err codes_bytes(mpq_ctx *ctx, const mpq_sweep *sw, int64_t *total) {
    *total = 0;
    for (int64_t l = 0; l < sw->ses->nl; l++)
        for (int64_t c = 0; c < sw->plan.nconf && !sw->ses->excl[l]; c++) {
            int64_t a, b;
            MPQ_CALL(entry_bytes(ctx, sw, l, c, &a, &b));
            *total += a + b;
        }
    return MPQ_OK;
}

static mpq_err save_local(mpq_ctx *ctx, const mpq_sweep *sw, const char *path) {
    mpq_err err = MPQ_OK;
    mpq_outfile *of = NULL;
    hid_t file = H5I_INVALID_HID;
    char *meta = NULL, *ref = NULL;
    uint8_t *blob = NULL;
    const int64_t nc = sw->plan.nconf;
    mpq_outfile_opts oo = {.overwrite = 1}; /* a sweep directory is regenerated */
    mpq_h5_quiet();
    MPQ_TRY(mpq_outfile_open(ctx, path, &oo, &of));
    meta = mpq_sweep_meta(sw);
    cJSON *rj = mpq_sweep_point_to_json(&sw->ref);
    ref = rj ? cJSON_PrintUnformatted(rj) : NULL;
    cJSON_Delete(rj);
    MPQ_ENSURE(meta && ref, MPQ_ERR_NOMEM, "%s: cannot format the sweep metadata", path);
    int64_t total;
    MPQ_TRY(codes_bytes(ctx, sw, &total));
    MPQ_ALLOC_TRY(blob, total > 0 ? total : 1);
    int64_t at_byte = 0;
    for (int64_t l = 0; l < sw->ses->nl; l++)
        for (int64_t c = 0; c < nc && !sw->ses->excl[l]; c++) {
            const mpq_qlayer *q = sw->meas.q[l * nc + c];
            int64_t a, b;
            MPQ_TRY(entry_bytes(ctx, sw, l, c, &a, &b));
            MPQ_ENSURE(q && q->packed_bytes == a && q->nparam_bytes == b, MPQ_ERR_INTERNAL,
                       "%s: layer %s configuration %lld: no codes of the expected size", path,
                       sw->ses->info->layers[l].name, (long long)c);
            memcpy(blob + at_byte, q->packed, (size_t)a);
            memcpy(blob + at_byte + a, q->param_bytes, (size_t)b);
            at_byte += a + b;
        }
    MPQ_TRY(mpq_measure_h5_create(ctx, of->tmp, SWEEP_FORMAT, SWEEP_VERSION, path, &file));
    MPQ_TRY(mpq_measure_h5_write_bytes(ctx, file, "meta", meta, (int64_t)strlen(meta), path));
    MPQ_TRY(mpq_measure_h5_write_bytes(ctx, file, "reference", ref, (int64_t)strlen(ref), path));
    MPQ_TRY(mpq_measure_h5_write_table(ctx, file, &sw->meas, path));
    MPQ_TRY(mpq_measure_h5_write_bytes(ctx, file, "codes", blob, total, path));
    hid_t written = file;
    file = H5I_INVALID_HID;
    MPQ_TRY(mpq_h5_close_written(ctx, written, 0, NULL, path));
    MPQ_TRY(mpq_outfile_commit(ctx, &of));
cleanup:
    mpq_h5_discard(file);
    mpq_outfile_abort(&of);
    mpq_free(blob);
    cJSON_free(meta);
    cJSON_free(ref);
    return err;
}

mpq_err mpq_sweep_save(mpq_ctx *ctx, const mpq_sweep *sw, const char *path) {
    mpq_err err = MPQ_OK;
    MPQ_CHECK(sw->have, MPQ_ERR_INTERNAL, "sweep: nothing measured to save");
    if (ctx->rank == 0)
        err = save_local(ctx, sw, path);
    MPQ_CALL(mpq_agree(ctx, err));
    MPQ_INFO("sweep measurement saved to %s", path);
    return MPQ_OK;
}

/* Rebuilds the layer of configuration c of layer l from its bytes; checks
 * that re-packing gives back exactly the stored stream. */
static mpq_err rebuild(mpq_ctx *ctx, mpq_sweep *sw, const char *path, int64_t l, int64_t c,
                       const uint8_t *bytes, int64_t a, int64_t b) {
    mpq_err err = MPQ_OK;
    const mpq_layer_info *li = &sw->ses->info->layers[l];
    const mpq_qspec *s = &sw->plan.conf[c].spec;
    mpq_qlayer *q = NULL;
    mpq_qparams *p = NULL;
    MPQ_TRY(mpq_qlayer_create(ctx, s, li->out, li->in, &q));
    MPQ_TRY(mpq_quant_unpack(ctx, s, bytes, a, li->out * li->in, q->codes));
    MPQ_TRY(mpq_qparams_deserialize(ctx, s, li->out, li->in, bytes + a, b, &p));
    mpq_qparams_destroy(&q->params);
    q->params = p;
    p = NULL;
    MPQ_TRY(mpq_qlayer_finish(ctx, q));
    MPQ_ENSURE(
        q->packed_bytes == a && q->nparam_bytes == b && memcmp(q->packed, bytes, (size_t)a) == 0 &&
            memcmp(q->param_bytes, bytes + a, (size_t)b) == 0,
        MPQ_ERR_FORMAT, "%s: layer %s configuration %lld: the stored codes do not round-trip", path,
        li->name, (long long)c);
    MPQ_ENSURE(mpq_qlayer_bits(q) == sw->meas.bits[l * sw->plan.nconf + c], MPQ_ERR_FORMAT,
               "%s: layer %s configuration %lld: bits %lld, the codes take %lld", path, li->name,
               (long long)c, (long long)sw->meas.bits[l * sw->plan.nconf + c],
               (long long)mpq_qlayer_bits(q));
    if (sw->coded)
        MPQ_TRY(mpq_ckpt_coded_bits(ctx, q, &sw->meas.coded[l * sw->plan.nconf + c]));
    mpq_qlayer_destroy(&sw->meas.q[l * sw->plan.nconf + c]);
    sw->meas.q[l * sw->plan.nconf + c] = q;
    q = NULL;
cleanup:
    mpq_qparams_destroy(&p);
    mpq_qlayer_destroy(&q);
    return err;
}

static mpq_err load_local(mpq_ctx *ctx, mpq_sweep *sw, const char *path) {
    mpq_err err = MPQ_OK;
    hid_t file = H5I_INVALID_HID;
    char *meta = NULL, *want = NULL, *ref = NULL;
    uint8_t *blob = NULL;
    cJSON *rj = NULL;
    const int64_t nc = sw->plan.nconf;
    mpq_h5_quiet();
    MPQ_TRY(mpq_infile_check(ctx, path, "sweep measurement file"));
    MPQ_ENSURE(H5Fis_hdf5(path) > 0, MPQ_ERR_FORMAT,
               "%s: not an HDF5 file (expected the measurement of mpquant sweep --stage measure)",
               path);
    MPQ_H5_ID(file, H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), path);
    MPQ_TRY(mpq_measure_h5_read_text(ctx, file, path, "meta", ": not a sweep measurement", &meta));
    want = mpq_sweep_meta(sw);
    MPQ_ENSURE(want, MPQ_ERR_NOMEM, "cannot format the sweep metadata");
    if (strcmp(meta, want) != 0) {
        /* Name the first top-level entry that differs. */
        cJSON *a = cJSON_Parse(meta), *b = cJSON_Parse(want);
        const char *what = "its identification";
        for (cJSON *x = b ? b->child : NULL; x; x = x->next) {
            cJSON *y = a ? cJSON_GetObjectItemCaseSensitive(a, x->string) : NULL;
            if (!y || !cJSON_Compare(x, y, 1)) {
                what = x->string;
                break;
            }
        }
        char msg[128];
        snprintf(msg, sizeof msg, "%s", what);
        cJSON_Delete(a);
        cJSON_Delete(b);
        MPQ_ENSURE(0, MPQ_ERR_CONFIG,
                   "%s: measured with another configuration (%s differs); run mpquant sweep "
                   "--stage measure again with this configuration",
                   path, msg);
    }
    MPQ_TRY(mpq_measure_h5_read_table(ctx, file, path, &sw->meas));
    int64_t total;
    MPQ_TRY(codes_bytes(ctx, sw, &total));
    MPQ_ALLOC_TRY(blob, total > 0 ? total : 1);
    MPQ_TRY(mpq_measure_h5_read_bytes(ctx, file, path, "codes", total, blob));
    int64_t at = 0;
    for (int64_t l = 0; l < sw->ses->nl; l++)
        for (int64_t c = 0; c < nc && !sw->ses->excl[l]; c++) {
            int64_t a, b;
            MPQ_TRY(entry_bytes(ctx, sw, l, c, &a, &b));
            MPQ_TRY(rebuild(ctx, sw, path, l, c, blob + at, a, b));
            at += a + b;
        }
    MPQ_TRY(
        mpq_measure_h5_read_text(ctx, file, path, "reference", ": not a sweep measurement", &ref));
    rj = cJSON_Parse(ref);
    MPQ_ENSURE(rj, MPQ_ERR_FORMAT, "%s: dataset 'reference' is not JSON", path);
    MPQ_TRY(mpq_sweep_point_from_json(ctx, rj, path, &sw->ref));
cleanup:
    cJSON_Delete(rj);
    if (file >= 0)
        H5Fclose(file);
    mpq_free(blob);
    mpq_free(ref);
    mpq_free(meta);
    cJSON_free(want);
    return err;
}

mpq_err mpq_sweep_load(mpq_ctx *ctx, mpq_sweep *sw, const char *path) {
    MPQ_CALL(mpq_agree(ctx, load_local(ctx, sw, path)));
    /* The sensitivity candidate is not needed again: the scores follow from
     * the stored loss, energy and sensitivity. */
    MPQ_CALL(mpq_sweep_scores(ctx, sw));
    sw->have = 1;
    MPQ_INFO("sweep measurement loaded from %s", path);
    return MPQ_OK;
}
