/* eval_cls.c: classifier evaluation (top-1 accuracy; agreement with a
 * reference model and the KL divergence of its class distribution from
 * the reference's) distributed over images. */
#include <stdio.h>
#include <string.h>

#include "eval_internal.h"
#include "mpq_coll.h"
#include "mpq_ctx.h"
#include "mpq_eval.h"
#include "mpq_idx.h"
#include "mpq_timer.h"

/* Per-batch record: images correct, agreeing with the reference, the
 * reference correct; KL(P_ref || P_model) of the class distributions summed
 * over the images. */
enum { C_OK = 0, C_AGREE, C_ROK, C_KLD, C_K };

static int64_t argmax_row(const float *x, int64_t n) {
    int64_t am = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[am])
            am = i;
    return am;
}

/* Collective. mpq_eval_classifier on images [first, first + n) of the file
 * images_path (named in messages). */
static mpq_err classify(mpq_ctx *ctx, mpq_family *f, mpq_family *ref, const uint8_t *images,
                        const uint8_t *labels, int64_t n, int64_t pixels, int64_t batch,
                        const char *images_path, int64_t first, mpq_cls_result *out) {
    mpq_err err = MPQ_OK;
    memset(out, 0, sizeof *out);
    const mpq_family_info *fi = mpq_family_get_info(f);
    float *in = NULL, *logits = NULL, *rlogits = NULL;
    double *rec = NULL;
    int64_t blo = 0, bhi = 0, lo = 0, hi = 0, C = fi->out_width, nbat = 0;
    MPQ_ENSURE(fi->task == MPQ_TASK_CLASSIFIER, MPQ_ERR_ARG,
               "accuracy needs a classifier, family '%s' is a language model", mpq_family_name(f));
    MPQ_ENSURE(pixels == fi->input_numel, MPQ_ERR_ARG,
               "images have %lld values each, the model's input_shape %lld", (long long)pixels,
               (long long)fi->input_numel);
    if (ref)
        MPQ_ENSURE(mpq_family_get_info(ref)->out_width == C, MPQ_ERR_ARG,
                   "the reference model has %lld outputs, the model %lld",
                   (long long)mpq_family_get_info(ref)->out_width, (long long)C);
    MPQ_ENSURE(batch >= 1, MPQ_ERR_ARG, "batch size %lld must be positive", (long long)batch);
    /* Ranks get whole batches of the global batch list, so every image is
     * forwarded in the same batch whatever the number of ranks (bitwise
     * identical logits). One record per batch. */
    nbat = (n + batch - 1) / batch;
    mpq_eval_range(ctx, nbat, &blo, &bhi);
    lo = blo * batch < n ? blo * batch : n;
    hi = bhi * batch < n ? bhi * batch : n;
    /* The buffers hold the largest batch this rank runs, not eval.batch
     * images (a batch larger than the images would otherwise allocate for
     * images that do not exist), and are written before they are read. */
    const int64_t nbuf = hi - lo < batch ? (hi - lo > 0 ? hi - lo : 1) : batch;
    int64_t nin = 0, nout = 0;
    MPQ_TRY(mpq_mul64(ctx, nbuf, pixels, "image batch", &nin));
    MPQ_TRY(mpq_mul64(ctx, nbuf, C, "logits", &nout));
    MPQ_TRY(mpq_malloc_raw(ctx, nin, sizeof *in, (void **)&in));
    MPQ_TRY(mpq_malloc_raw(ctx, nout, sizeof *logits, (void **)&logits));
    if (ref)
        MPQ_TRY(mpq_malloc_raw(ctx, nout, sizeof *rlogits, (void **)&rlogits));
    MPQ_ALLOC_TRY(rec, (bhi - blo) * C_K + 1);
    MPQ_TRY(mpq_stage_start(ctx, MPQ_STAGE_EVAL_FORWARD));
    mpq_progress pr;
    char what[64]; /* the images' range tells the evaluation set from all images */
    snprintf(what, sizeof what, "classifying images %lld-%lld", (long long)first,
             (long long)(first + n - 1));
    mpq_progress_begin(ctx, &pr, what, "images", hi - lo);
    mpq_progress_model(&pr, ref ? "quantized model and full-precision reference" : NULL);
    for (int64_t i0 = lo; i0 < hi; i0 += batch) {
        int64_t nb = hi - i0 < batch ? hi - i0 : batch;
        for (int64_t i = 0; i < nb * pixels; i++)
            in[i] = (float)images[i0 * pixels + i];
        mpq_batch b = {.nseq = nb, .rows = nb, .input = in};
        MPQ_TRY(mpq_family_forward(ctx, f, &b, logits));
        if (mpq_eval_first_nonfinite(logits, nb * C) >= 0)
            MPQ_TRY(mpq_eval_locate_nonfinite(ctx, f, &b, first + i0, images_path, "the model"));
        if (ref)
            MPQ_TRY(mpq_family_forward(ctx, ref, &b, rlogits));
        if (ref && mpq_eval_first_nonfinite(rlogits, nb * C) >= 0)
            MPQ_TRY(
                mpq_eval_locate_nonfinite(ctx, ref, &b, first + i0, images_path, "the reference"));
        for (int64_t i = 0; i < nb; i++) {
            const int64_t p = argmax_row(logits + i * C, C);
            const int64_t rp = ref ? argmax_row(rlogits + i * C, C) : -1;
            double *r = rec + ((i0 - lo) / batch) * C_K;
            r[C_OK] += p == (int64_t)labels[i0 + i] ? 1.0 : 0.0;
            r[C_AGREE] += ref && p == rp ? 1.0 : 0.0;
            r[C_ROK] += ref && rp == (int64_t)labels[i0 + i] ? 1.0 : 0.0;
        }
        if (ref)
            rec[((i0 - lo) / batch) * C_K + C_KLD] = mpq_kl_rows(rlogits, logits, nb, C);
        mpq_progress_update(ctx, &pr, i0 + nb - lo);
    }
    mpq_progress_end(ctx, &pr);
    MPQ_TRY(mpq_stage_stop(ctx, MPQ_STAGE_EVAL_FORWARD));
cleanup:
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK) {
        double s[C_K];
        err = mpq_eval_ordered_sum(ctx, nbat, C_K, rec, s);
        out->total = n;
        out->correct = (int64_t)s[C_OK];
        out->accuracy = n ? s[C_OK] / (double)n : 0.0;
        out->has_ref = ref != NULL;
        out->agree = ref ? (int64_t)s[C_AGREE] : 0;
        out->agreement = ref && n ? s[C_AGREE] / (double)n : 0.0;
        out->kld = ref && n ? s[C_KLD] / (double)n : 0.0;
        out->ref_correct = ref ? (int64_t)s[C_ROK] : 0;
    }
    mpq_free(in);
    mpq_free(logits);
    mpq_free(rlogits);
    mpq_free(rec);
    return err;
}

mpq_err mpq_eval_classifier(mpq_ctx *ctx, mpq_family *f, mpq_family *ref, const uint8_t *images,
                            const uint8_t *labels, int64_t n, int64_t pixels, int64_t batch,
                            mpq_cls_result *out) {
    return classify(ctx, f, ref, images, labels, n, pixels, batch, "the images", 0, out);
}

void mpq_eval_cls_reference(const mpq_cls_result *r, mpq_cls_result *out) {
    memset(out, 0, sizeof *out);
    out->total = r->total;
    out->correct = r->ref_correct;
    out->accuracy = r->total ? (double)r->ref_correct / (double)r->total : 0.0;
}

mpq_err mpq_eval_idx(mpq_ctx *ctx, mpq_family *f, mpq_family *ref, const char *images_path,
                     const char *labels_path, int64_t first, int64_t count, int64_t batch,
                     mpq_cls_result *out) {
    mpq_err err = MPQ_OK;
    mpq_idx *img = NULL, *lab = NULL;
    int ncls = 0;
    err = mpq_to_int(ctx, mpq_family_get_info(f)->out_width, "classes", &ncls);
    if (err == MPQ_OK)
        err = mpq_idx_open_images(ctx, images_path, &img);
    if (err == MPQ_OK)
        err = mpq_idx_open_labels(ctx, labels_path, ncls, &lab);
    if (err == MPQ_OK && img->dims[0] != lab->dims[0])
        err = MPQ_ERROR(MPQ_ERR_FORMAT, "%s has %lld images but %s has %lld labels", images_path,
                        (long long)img->dims[0], labels_path, (long long)lab->dims[0]);
    if (err == MPQ_OK && (first < 0 || first > img->dims[0]))
        err = MPQ_ERROR(MPQ_ERR_ARG, "eval.first %lld is beyond the %lld images of %s",
                        (long long)first, (long long)img->dims[0], images_path);
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK) {
        if (count <= 0 || first + count > img->dims[0])
            count = img->dims[0] - first;
        int64_t px = img->dims[1] * img->dims[2];
        err = classify(ctx, f, ref, img->data + first * px, lab->data + first, count, px, batch,
                       images_path, first, out);
    }
    mpq_idx_close(&img);
    mpq_idx_close(&lab);
    return err;
}
