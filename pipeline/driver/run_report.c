/* run_report.c: JSON forms of a run's results (the --json line and the
 * checkpoint's provenance). Only deterministic figures go here (no times),
 * so the text is the same for any number of ranks. */
#include <cjson/cJSON.h>

#include "run_internal.h"

cJSON *mpq_run_eval_json(const mpq_run_eval *e) {
    cJSON *o = cJSON_CreateObject();
    if (!o || !e->done)
        return o;
    if (e->task == MPQ_TASK_LM) {
        cJSON_AddNumberToObject(o, "ppl", e->lm.ppl);
        cJSON_AddNumberToObject(o, "mean_nll", e->lm.mean_nll);
        cJSON_AddNumberToObject(o, "predictions", (double)e->lm.predictions);
        cJSON_AddNumberToObject(o, "docs", (double)e->lm.docs);
        if (e->lm.window)
            cJSON_AddNumberToObject(o, "window", (double)e->lm.window);
        if (e->lm.generated)
            cJSON_AddStringToObject(o, "protocol", "generated");
        if (e->lm.has_ref) {
            cJSON_AddNumberToObject(o, "kld", e->lm.kld);
            cJSON_AddNumberToObject(o, "top1_agreement", e->lm.top1_agreement);
        }
    } else {
        cJSON_AddNumberToObject(o, "accuracy", e->cls.accuracy);
        cJSON_AddNumberToObject(o, "correct", (double)e->cls.correct);
        cJSON_AddNumberToObject(o, "total", (double)e->cls.total);
        if (e->cls.has_ref) {
            cJSON_AddNumberToObject(o, "kld", e->cls.kld);
            cJSON_AddNumberToObject(o, "top1_agreement", e->cls.agreement);
        }
        if (e->has_all) {
            cJSON *a = cJSON_AddObjectToObject(o, "all");
            if (a) {
                cJSON_AddNumberToObject(a, "accuracy", e->cls_all.accuracy);
                cJSON_AddNumberToObject(a, "correct", (double)e->cls_all.correct);
                cJSON_AddNumberToObject(a, "total", (double)e->cls_all.total);
                if (e->cls_all.has_ref) {
                    cJSON_AddNumberToObject(a, "kld", e->cls_all.kld);
                    cJSON_AddNumberToObject(a, "top1_agreement", e->cls_all.agreement);
                }
            }
        }
    }
    return o;
}

cJSON *mpq_run_assignment_json(const mpq_run_result *r) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "mode", r->mixed ? "mixed" : "uniform");
    cJSON_AddStringToObject(o, "method", r->method);
    cJSON_AddStringToObject(o, "propagate", r->propagate);
    cJSON *c = cJSON_AddArrayToObject(o, "candidates");
    for (int64_t k = 0; c && k < r->ncand; k++)
        cJSON_AddItemToArray(c, cJSON_CreateString(r->candidates[k]));
    cJSON_AddNumberToObject(o, "bits", (double)r->bits);
    cJSON_AddNumberToObject(o, "weights", (double)r->weights);
    cJSON_AddNumberToObject(o, "bpw", r->bpw);
    if (r->coded) {
        cJSON_AddNumberToObject(o, "coded_bits", (double)r->coded_bits);
        cJSON_AddNumberToObject(o, "coded_bpw", r->coded_bpw);
    }
    if (r->has_budget) {
        const mpq_budget_result *b = &r->budget;
        cJSON *bo = cJSON_AddObjectToObject(o, "budget");
        if (bo) {
            cJSON_AddNumberToObject(bo, "objective", b->objective);
            cJSON_AddNumberToObject(bo, "lower_bound", b->lower_bound);
            cJSON_AddNumberToObject(bo, "gap", b->gap);
            cJSON_AddNumberToObject(bo, "rel_gap", b->rel_gap);
            cJSON_AddNumberToObject(bo, "lambda", b->lambda);
            cJSON_AddNumberToObject(bo, "bits_used", (double)b->bits_used);
            cJSON_AddNumberToObject(bo, "budget_bits", (double)b->budget_bits);
            cJSON_AddNumberToObject(bo, "avg_bits", b->avg_bits);
            cJSON_AddStringToObject(bo, "count",
                                    r->budget_codes   ? "codes"
                                    : r->budget_coded ? "coded"
                                                      : "all");
        }
    }
    cJSON *ls = cJSON_AddArrayToObject(o, "layers");
    double ent_bits = 0.0; /* codes under an ideal per-layer entropy coder */
    int ent_all = 1;
    for (int64_t l = 0; ls && l < r->nlayers; l++) {
        const mpq_run_layer *rl = &r->layers[l];
        cJSON *x = cJSON_CreateObject();
        if (!x)
            break;
        cJSON_AddStringToObject(x, "layer", rl->name);
        cJSON_AddStringToObject(x, "tensor", rl->tensor);
        cJSON_AddNumberToObject(x, "weights", (double)(rl->rows * rl->cols));
        if (rl->excluded) {
            cJSON_AddStringToObject(x, "spec", "fp");
            cJSON_AddItemToArray(ls, x);
            continue;
        }
        cJSON_AddStringToObject(x, "spec", rl->spec);
        cJSON_AddNumberToObject(x, "code_bits", rl->bits_per_code);
        cJSON_AddNumberToObject(x, "group", (double)rl->group);
        cJSON_AddNumberToObject(x, "bits", (double)rl->bits);
        if (r->coded)
            cJSON_AddNumberToObject(x, "coded_bits", (double)rl->coded_bits);
        cJSON_AddNumberToObject(x, "loss", rl->loss);
        cJSON_AddNumberToObject(x, "rtn_loss", rl->rtn_loss);
        cJSON_AddNumberToObject(x, "score", rl->score);
        cJSON_AddNumberToObject(x, "iters", (double)rl->iters);
        if (rl->entropy_set)
            cJSON_AddNumberToObject(x, "code_entropy", rl->code_entropy);
        ent_bits += rl->code_entropy * (double)(rl->rows * rl->cols);
        ent_all = ent_all && rl->entropy_set;
        if (r->mixed) {
            cJSON_AddNumberToObject(x, "sensitivity", rl->sensitivity);
            cJSON_AddNumberToObject(x, "energy", rl->energy);
        }
        if (rl->pinned)
            cJSON_AddBoolToObject(x, "pinned", 1);
        cJSON_AddItemToArray(ls, x);
    }
    if (ent_all)
        cJSON_AddNumberToObject(o, "entropy_bits", ent_bits);
    return o;
}

double mpq_run_memory_minimum(const mpq_session *ses, int ranks) {
    const mpq_family_info *fi = ses->info;
    double block_w = 0.0, block_h = 0.0, width = 0.0;
    for (int64_t b = 0; b < fi->nblocks; b++) {
        double w = 0.0, h = 0.0;
        for (int64_t l = 0; l < fi->nlayers; l++) {
            const mpq_layer_info *li = &fi->layers[l];
            if (li->block != b)
                continue;
            w += (double)li->out * (double)li->in;
            if (li->group == l)
                h += (double)li->in * (double)li->in;
        }
        block_w = w > block_w ? w : block_w;
        block_h = h > block_h ? h : block_h;
    }
    for (int64_t b = 0; b <= fi->nblocks; b++)
        width = (double)mpq_family_width(ses->fq, b) > width ? (double)mpq_family_width(ses->fq, b)
                                                             : width;
    const mpq_arch *a = mpq_model_arch(ses->m);
    const double rows = ses->set ? (double)ses->set->offset[ses->set->nsamples] : 0.0;
    /* the head as stored (read in place, a tile at a time when converted) */
    const mpq_tensor *ht = mpq_model_find(ses->m, "lm_head.weight");
    ht = ht ? ht : mpq_model_find(ses->m, "model.embed_tokens.weight");
    const double head = ht ? (double)ht->nbytes : 4.0 * (double)a->vocab_size * (double)a->dim;
    const double bytes = 4.0 * block_w + 8.0 * block_h / ranks + 8.0 * rows * width / ranks + head;
    return bytes / 1048576.0;
}
