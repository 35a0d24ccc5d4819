/* cmd_export.c: `mpquant export CHECKPOINT --format NAME --output FILE
 * [--overwrite] [--no-config] [--tokenizer PATH] [--lossy] [--kquants]` (the formats of
 * mpq_export_formats) and the checkpoint summary that
 * `mpquant inspect` prints for an mpquant checkpoint.
 *
 * Exports are written by rank 0 alone (one file, no parallelism to gain);
 * the other ranks wait for the agreed outcome. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "mpq_coll.h"
#include "mpq_ckpt.h"
#include "mpq_cli.h"
#include "mpq_family.h"
#include "mpq_model.h"
#include "mpq_model_format.h"

mpq_err mpq_cmd_export(mpq_ctx *ctx, const mpq_cli *cli) {
    const char *in = cli->pos[0];
    const char *format = mpq_cli_opt(cli, "format");
    const char *out = mpq_cli_opt(cli, "output");
    const int overwrite = mpq_cli_opt(cli, "overwrite") != NULL;
    const int config = mpq_cli_opt(cli, "no-config") == NULL;
    char names[256];
    MPQ_CHECK(format && format[0], MPQ_ERR_ARG, "export: --format is required (%s)",
              mpq_registry_names(&mpq_export_format_reg, ", ", names, sizeof names));
    int64_t fi = 0;
    MPQ_CALL(mpq_registry_lookup(ctx, &mpq_export_format_reg, format, MPQ_ERR_ARG,
                                 "export: unknown --format", &fi));
    const mpq_export_format *fmt = mpq_export_formats[fi];
    MPQ_CHECK(out && out[0], MPQ_ERR_ARG, "export: --output FILE is required");
    /* every rank parses the same command line: they agree without a collective */
    MPQ_CHECK(!mpq_cli_opt(cli, "kquants") || strcmp(fmt->name, "gguf") == 0, MPQ_ERR_ARG,
              "export: --kquants applies to --format gguf only (not %s)", fmt->name);
    const mpq_export_opts opts = {.overwrite = overwrite,
                                  .write_config = config,
                                  .tokenizer = mpq_cli_opt(cli, "tokenizer"),
                                  .lossy = mpq_cli_opt(cli, "lossy") != NULL,
                                  .kquants = mpq_cli_opt(cli, "kquants") != NULL};
    int64_t ntensors = 0;
    MPQ_CALL(mpq_export_run(ctx, in, fmt, out, &opts, &ntensors));
    if (ctx->rank == 0) {
        struct stat st;
        long long size = stat(out, &st) == 0 ? (long long)st.st_size : -1;
        printf("exported %s -> %s (%s, %lld tensors, %lld bytes)\n", in, out, format,
               (long long)ntensors, size);
        fflush(stdout);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "command", "export");
        cJSON_AddStringToObject(o, "input", in);
        cJSON_AddStringToObject(o, "output", out);
        cJSON_AddStringToObject(o, "format", format);
        cJSON_AddNumberToObject(o, "tensors", (double)ntensors);
        cJSON_AddNumberToObject(o, "bytes", (double)size);
        mpq_cli_emit_json(ctx, cli, o);
    }
    return MPQ_OK;
}

/* ---- inspect ------------------------------------------------------------------- */

static void shape_text(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && used < len; d++)
        used +=
            (size_t)snprintf(buf + used, len - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

/* Compact JSON text (or the raw text when it does not parse). */
static void print_json_line(const char *label, const char *text) {
    cJSON *j = cJSON_Parse(text);
    char *c = j ? cJSON_PrintUnformatted(j) : NULL;
    printf("%s%s\n", label, c ? c : text);
    cJSON_free(c);
    cJSON_Delete(j);
}

static void print_summary(const mpq_ckpt *ck) {
    const mpq_arch *a = &ck->arch;
    int64_t bits = 0, weights = 0, params = 0;
    mpq_ckpt_stored_bits(ck, &bits, &weights);
    printf("file:    %s\n", ck->path);
    printf("format:  %s version %d\n", MPQ_CKPT_FORMAT, ck->version);
    printf("model:   family %s, source format %s%s%s\n", a->family[0] ? a->family : "(none)",
           a->format, a->model_type[0] ? ", type " : "", a->model_type);
    const mpq_family_ops *fam = mpq_family_find(a->family);
    if (fam && fam->llama_layout)
        mpq_cli_arch_print(a);
    printf("written: %s by mpquant %s (commit %s) on %lld ranks\n", ck->date[0] ? ck->date : "?",
           ck->program_version, ck->commit, (long long)ck->nranks);
    print_json_line("inputs:  ", ck->inputs);
    size_t wname = 5;
    for (int64_t i = 0; i < ck->nentries; i++) {
        size_t l = strlen(ck->entries[i].name);
        wname = l > wname ? l : wname;
    }
    printf("quantized layers: %lld\n", (long long)ck->nlayers);
    printf("  %-*s  %-14s  %10s  %6s  %-8s  %-10s  %s\n", (int)wname, "layer", "shape", "bits",
           "bpw", "method", "loss", "spec");
    for (int64_t i = 0; i < ck->nentries; i++) {
        const mpq_ckpt_entry *e = &ck->entries[i];
        if (!e->quantized)
            continue;
        char shp[64];
        shape_text(e->ndim, e->shape, shp, sizeof shp);
        printf("  %-*s  %-14s  %10lld  %6.3f  %-8s  %-10.4g  %s\n", (int)wname, e->name, shp,
               (long long)e->bits, (double)e->bits / (double)e->numel,
               e->method[0] ? e->method : "-", e->loss, e->spec_text);
    }
    printf("other tensors: %lld\n", (long long)(ck->nentries - ck->nlayers));
    for (int64_t i = 0; i < ck->nentries; i++) {
        const mpq_ckpt_entry *e = &ck->entries[i];
        params += e->numel;
        if (e->quantized)
            continue;
        char shp[64];
        shape_text(e->ndim, e->shape, shp, sizeof shp);
        printf("  %-*s  %-5s  %s\n", (int)wname, e->name, mpq_dtype_name(e->dtype), shp);
    }
    printf("parameters: %lld (%lld quantized)\n", (long long)params, (long long)weights);
    printf("quantized storage: %lld bits = %.1f KiB, %.4f bits per weight\n", (long long)bits,
           (double)bits / 8192.0, weights ? (double)bits / (double)weights : 0.0);
    print_json_line("stage_times: ", ck->stage_times);
    print_json_line("eval: ", ck->eval);
}

static cJSON *summary_json(const mpq_ckpt *ck) {
    int64_t bits = 0, weights = 0;
    mpq_ckpt_stored_bits(ck, &bits, &weights);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "command", "inspect");
    cJSON_AddStringToObject(o, "path", ck->path);
    cJSON_AddStringToObject(o, "format", mpq_format_mpqckpt.name);
    cJSON_AddNumberToObject(o, "version", ck->version);
    cJSON_AddStringToObject(o, "family", ck->arch.family);
    cJSON_AddStringToObject(o, "source_format", ck->arch.format);
    const mpq_family_ops *fam = mpq_family_find(ck->arch.family);
    if (fam && fam->llama_layout)
        mpq_cli_arch_json(&ck->arch, o);
    cJSON_AddStringToObject(o, "date", ck->date);
    cJSON_AddStringToObject(o, "program_version", ck->program_version);
    cJSON_AddStringToObject(o, "commit", ck->commit);
    cJSON_AddNumberToObject(o, "nranks", (double)ck->nranks);
    cJSON_AddNumberToObject(o, "quantized_bits", (double)bits);
    cJSON_AddNumberToObject(o, "quantized_weights", (double)weights);
    cJSON_AddNumberToObject(o, "bits_per_weight", weights ? (double)bits / (double)weights : 0.0);
    cJSON *ls = cJSON_AddArrayToObject(o, "layers");
    cJSON *ts = cJSON_AddArrayToObject(o, "tensors");
    for (int64_t i = 0; i < ck->nentries; i++) {
        const mpq_ckpt_entry *e = &ck->entries[i];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "name", e->name);
        cJSON *s = cJSON_AddArrayToObject(j, "shape");
        for (int d = 0; d < e->ndim; d++)
            cJSON_AddItemToArray(s, cJSON_CreateNumber((double)e->shape[d]));
        if (e->quantized) {
            cJSON_AddStringToObject(j, "spec", e->spec_text);
            cJSON_AddNumberToObject(j, "bits", (double)e->bits);
            cJSON_AddStringToObject(j, "method", e->method);
            if (isfinite(e->loss))
                cJSON_AddNumberToObject(j, "loss", e->loss);
            cJSON_AddItemToArray(ls, j);
        } else {
            cJSON_AddStringToObject(j, "dtype", mpq_dtype_name(e->dtype));
            cJSON_AddItemToArray(ts, j);
        }
    }
    const struct {
        const char *key, *text;
    } js[] = {{"inputs", ck->inputs}, {"stage_times", ck->stage_times}, {"eval", ck->eval}};
    for (size_t i = 0; i < sizeof js / sizeof js[0]; i++) {
        cJSON *v = cJSON_Parse(js[i].text);
        cJSON_AddItemToObject(o, js[i].key, v ? v : cJSON_CreateString(js[i].text));
    }
    return o;
}

mpq_err mpq_cmd_inspect_ckpt(mpq_ctx *ctx, const mpq_cli *cli, const char *path) {
    mpq_ckpt *ck = NULL;
    mpq_model *m = NULL;
    /* First read it as export and eval do (every layer decoded against its
     * checksums, codes and parameters checked, the family's tensor check),
     * so that inspect accepts only what they accept. */
    MPQ_CALL(mpq_model_open(ctx, path, mpq_format_mpqckpt.name, &m));
    mpq_model_close(&m);
    MPQ_CALL(mpq_ckpt_open(ctx, path, &ck));
    if (ctx->rank == 0) {
        print_summary(ck);
        fflush(stdout);
    }
    mpq_cli_emit_json(ctx, cli, summary_json(ck));
    mpq_ckpt_close(&ck);
    return MPQ_OK;
}
