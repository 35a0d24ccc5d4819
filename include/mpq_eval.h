/* mpq_eval.h: evaluation of a model family: perplexity, KL divergence and
 * top-1 agreement for language models; accuracy and agreement for
 * classifiers; greedy generation.
 *
 * Evaluation is data-parallel: items (documents or images) are split into
 * contiguous ranges, one per rank. Items are forwarded in fixed batches (groups
 * of documents, mpq_eval_groups; batches of images) that a rank takes whole,
 * so an item's numbers do not depend on which rank computed it; per-item
 * sums are gathered to rank 0 in item order and summed there sequentially,
 * then broadcast: the results are the same bits for any number of ranks.
 *
 * Language-model protocols (eval.protocol):
 *   docs     (shared/README.md) documents split at blank lines, the first
 *            N, each encoded with BOS and a dummy leading space, truncated
 *            to the model's seq_len; a document of n tokens gives n-1
 *            next-token predictions; PPL = exp(total NLL / predictions).
 *   windows  (the WikiText-2 protocol of the GPTQ papers) the whole text
 *            encoded as one token stream (BOS once, at its start), cut into
 *            non-overlapping windows of W tokens (eval.window; 0 = the
 *            model's context, at most 2048), the tail shorter than W
 *            dropped; each window is a sequence of its own with W-1
 *            predictions; the first N windows (0 = all). llama.cpp's
 *            llama-perplexity differs: it scores only the second half of
 *            each window.
 *
 * A second family `ref` (may be NULL) is the full-precision reference: KLD is
 * the mean over predictions of KL(P_ref || P_model) in nats, top-1 agreement
 * the fraction of positions whose arg-max tokens agree; for classifiers the
 * fraction of images with the same predicted class.
 */
#ifndef MPQ_EVAL_H
#define MPQ_EVAL_H

#include <stdint.h>

#include "mpq_err.h"
#include "mpq_family.h"

struct mpq_ctx;
struct mpq_model;
struct mpq_tokenizer;
struct cJSON;

/* What a language model is evaluated on (the eval section). */
typedef struct mpq_lm_protocol {
    const char *text;  /* text file */
    int windows;       /* 0: documents; 1: windows */
    int64_t max_items; /* first N documents or windows (<= 0: all) */
    int64_t window;    /* windows: tokens per window (0: context, at most 2048) */
} mpq_lm_protocol;

/* The default window: the model's context, at most this many tokens. */
#define MPQ_EVAL_WINDOW_MAX 2048

typedef struct mpq_lm_result {
    int64_t docs;   /* documents, or windows */
    int64_t window; /* windows protocol: tokens per window (0: documents) */
    int generated;  /* the documents were sampled from the reference model (the
                       driver's generated protocol) */
    int64_t predictions;
    double nll;      /* total negative log-likelihood, nats */
    double mean_nll; /* nll / predictions */
    double ppl;      /* exp(mean_nll) */
    int has_ref;     /* kld and top1_agreement are set */
    double kld;      /* mean KL(P_ref || P_model) per prediction, nats */
    double top1_agreement;
    double ref_nll; /* the reference's own total NLL on the same predictions */
} mpq_lm_result;

typedef struct mpq_cls_result {
    int64_t total;
    int64_t correct;
    double accuracy; /* correct / total */
    int has_ref;
    int64_t agree;       /* images whose predicted class equals the reference's */
    double agreement;    /* agree / total */
    double kld;          /* mean over images of KL(P_ref || P_model) of the classes, nats */
    int64_t ref_correct; /* images the reference classifies correctly */
} mpq_cls_result;

/* Documents are forwarded in groups of consecutive documents of at most
 * this many tokens in all (a longer document alone): the projections run
 * as GEMMs over the whole group. The groups depend on the documents'
 * lengths only, and a rank runs whole groups, so the figures are the same
 * bits at any number of ranks. */
#define MPQ_EVAL_BATCH_TOKENS 2048

/* Local. The groups of n consecutive items of len[i] rows each: a group
 * takes items while their rows stay within MPQ_EVAL_BATCH_TOKENS (a longer
 * item alone). Group g is items [(*first)[g], (*first)[g + 1]); first has
 * n + 1 entries (owner: caller, mpq_free). Depends on the lengths only. */
mpq_err mpq_eval_groups(struct mpq_ctx *ctx, const int64_t *len, int64_t n, int64_t **first,
                        int64_t *ngroups);

/* Local. The reference's own figures from an evaluation against it (r has
 * has_ref): the same bits as evaluating the reference alone, since its
 * forward passes and sums are the same. */
void mpq_eval_lm_reference(const mpq_lm_result *r, mpq_lm_result *out);
void mpq_eval_cls_reference(const mpq_cls_result *r, mpq_cls_result *out);

/* Collective. Evaluates documents already tokenized: document i is
 * tokens[offsets[i] .. offsets[i+1]) (identical arrays on every rank; each
 * rank only runs its own range). */
mpq_err mpq_eval_lm_tokens(struct mpq_ctx *ctx, mpq_family *f, mpq_family *ref,
                           const int32_t *tokens, const int64_t *offsets, int64_t ndocs,
                           mpq_lm_result *out);

/* Collective. Rank 0 reads text_path and broadcasts it; every rank splits it
 * into the first max_docs documents (<= 0: all) and encodes only its own
 * range, truncated to the family's max_seq. */
mpq_err mpq_eval_lm_text(struct mpq_ctx *ctx, mpq_family *f, mpq_family *ref,
                         const struct mpq_tokenizer *tok, const char *text_path, int64_t max_docs,
                         mpq_lm_result *out);
/* Collective. The windows protocol on text_path: rank 0 reads and encodes
 * the whole text and broadcasts the tokens. A window longer than the
 * family's max_seq, or a text shorter than one window, is an error naming
 * the numbers. */
mpq_err mpq_eval_lm_windows(struct mpq_ctx *ctx, mpq_family *f, mpq_family *ref,
                            const struct mpq_tokenizer *tok, const char *text_path, int64_t window,
                            int64_t max_windows, mpq_lm_result *out);
/* Collective. The protocol p (mpq_eval_lm_text or mpq_eval_lm_windows). */
mpq_err mpq_eval_lm(struct mpq_ctx *ctx, mpq_family *f, mpq_family *ref,
                    const struct mpq_tokenizer *tok, const mpq_lm_protocol *p, mpq_lm_result *out);

/* Collective. Images [n][pixels] (raw bytes, identical on every rank) with
 * labels [n]; forwarded in batches of `batch` images. The ranks share out
 * whole batches of the global list, so an image's batch, hence its logits,
 * do not depend on the number of ranks. */
mpq_err mpq_eval_classifier(struct mpq_ctx *ctx, mpq_family *f, mpq_family *ref,
                            const uint8_t *images, const uint8_t *labels, int64_t n, int64_t pixels,
                            int64_t batch, mpq_cls_result *out);

/* Collective. Reads IDX images and labels (every rank reads the files),
 * evaluates images [first, first + count) (count 0: to the end). */
mpq_err mpq_eval_idx(struct mpq_ctx *ctx, mpq_family *f, mpq_family *ref, const char *images_path,
                     const char *labels_path, int64_t first, int64_t count, int64_t batch,
                     mpq_cls_result *out);

/* Local. Greedy decoding (temperature 0) from BOS (mpq_tokenizer_bos(tok);
 * tok NULL: llama2.c's 1; MPQ_ERR_CONFIG when the tokenizer has none): at
 * most ntokens new tokens, stopping early at BOS as llama2.c does, or at the
 * family's max_seq. out must hold ntokens + 1 ids: out[0] = BOS, then the
 * generated ids; *n is the count including BOS. Each step recomputes the
 * whole prefix (no KV cache): meant for a quick look, not for long outputs. */
mpq_err mpq_generate_greedy(struct mpq_ctx *ctx, mpq_family *f, const struct mpq_tokenizer *tok,
                            int64_t ntokens, int32_t *out, int64_t *n);

/* Collective. Every tensor of model m (as fp32: a checkpoint's dequantized
 * layers, a file's stored values) checked for NaN and Inf, each rank reading
 * a share: MPQ_ERR_NUMERIC on every rank naming the file, the tensor and the
 * first bad element, with the count. For models loaded to be evaluated: a
 * non-finite weight would show only as a non-finite NLL, or not at all (an
 * accuracy from logits of NaN). */
mpq_err mpq_eval_check_model(struct mpq_ctx *ctx, const struct mpq_model *m);

/* Local. The contiguous range [*lo, *hi) of n items assigned to this rank
 * (rank r gets [n r / size, n (r+1) / size)). */
void mpq_eval_range(const struct mpq_ctx *ctx, int64_t n, int64_t *lo, int64_t *hi);

/* Collective. Each rank holds k doubles per item for its range of n items
 * (mine [(hi-lo)][k]); every rank receives in sums[k] the per-column sums
 * over all items, added on rank 0 in item order: the same bits for any
 * number of ranks. */
mpq_err mpq_eval_ordered_sum(struct mpq_ctx *ctx, int64_t n, int k, const double *mine,
                             double *sums);
/* The same with this rank's own contiguous range [lo, hi) of the n items
 * (the ranks' ranges in rank order cover 0..n). */
mpq_err mpq_eval_ordered_sum_at(struct mpq_ctx *ctx, int64_t n, int64_t lo, int64_t hi, int k,
                                const double *mine, double *sums);

/* Numerically stable row statistics in double: log-sum-exp of x[0..n) and
 * the index of the maximum (first on ties). Local. */
double mpq_logsumexp(const float *x, int64_t n, int64_t *argmax);

/* Local. KL(P || Q) summed over rows for logits p, q [rows][n]
 * (log-softmax in double; a row's negative rounding residue counts as 0). */
double mpq_kl_rows(const float *p, const float *q, int64_t rows, int64_t n);

#endif
