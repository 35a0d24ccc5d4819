/* partial.c: the partial checkpoint of a run (partial_internal.h): its
 * manifest, the block files and their figures, the checks of a resume. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpq_coll.h"
#include "mpq_text.h"
#include "mpq_log.h"
#include "mpq_outfile.h"
#include "partial_internal.h"

#define PARTIAL_FORMAT  "mpquant-partial"
#define PARTIAL_VERSION 1
#define MANIFEST        "manifest.json"

static const char *const phase_name[MPQ_PHASE_COUNT] = {"measure", "round"};

const char *mpq_phase_name(mpq_phase phase) {
    return phase_name[phase];
}

void mpq_partial_test_kill(mpq_ctx *ctx, mpq_phase phase, int64_t b, const char *where) {
    const char *h = getenv("MPQ_TEST_KILL_AT");
    char want[96];
    snprintf(want, sizeof want, "%s:%lld:%s", phase_name[phase], (long long)b, where);
    if (h && ctx->rank == 0 && strcmp(h, want) == 0)
        raise(SIGKILL);
}

void mpq_partial_free(mpq_partial **pp) {
    if (!pp || !*pp)
        return;
    mpq_free((*pp)->dir);
    mpq_free((*pp)->hashes);
    mpq_free(*pp);
    *pp = NULL;
}

static void file_path(const mpq_partial *p, const char *name, char *out, size_t len) {
    snprintf(out, len, "%s/%s", p->dir, name);
}

static void block_path(const mpq_partial *p, mpq_phase phase, int64_t b, char *out, size_t len) {
    snprintf(out, len, "%s/%s-%06lld.h5", p->dir, phase_name[phase], (long long)b);
}

/* ---- the manifest ---------------------------------------------------------------- */

/* Local. The whole manifest (at most 1 GiB). Owner: caller. */
static mpq_err read_text(mpq_ctx *ctx, const char *path, char **out) {
    struct stat st;
    MPQ_CHECK(stat(path, &st) == 0 && st.st_size < (1L << 30), MPQ_ERR_FORMAT,
              "%s: unreadable or too large", path);
    int64_t len = 0;
    MPQ_CALL(mpq_text_read(ctx, path, out, &len));
    return MPQ_OK;
}

static mpq_err write_manifest(mpq_ctx *ctx, const mpq_partial *p, const char *config) {
    mpq_err err = MPQ_OK;
    char path[4200];
    char *text = NULL;
    mpq_outfile *of = NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON *in = cJSON_Parse(p->hashes);
    MPQ_ENSURE(o && in, MPQ_ERR_NOMEM, "cannot format the partial checkpoint manifest");
    cJSON_AddStringToObject(o, "format", PARTIAL_FORMAT);
    cJSON_AddNumberToObject(o, "version", PARTIAL_VERSION);
    cJSON_AddNumberToObject(o, "blocks", (double)p->nblocks);
    cJSON_AddStringToObject(o, "config", config);
    cJSON_AddItemToObject(o, "inputs", in);
    in = NULL;
    text = cJSON_Print(o);
    MPQ_ENSURE(text, MPQ_ERR_NOMEM, "cannot format the partial checkpoint manifest");
    file_path(p, MANIFEST, path, sizeof path);
    const mpq_outfile_opts opts = {.overwrite = 1};
    MPQ_TRY(mpq_outfile_open(ctx, path, &opts, &of));
    MPQ_TRY(mpq_outfile_write(ctx, of, text, strlen(text)));
    MPQ_TRY(mpq_outfile_commit(ctx, &of));
cleanup:
    mpq_outfile_abort(&of);
    cJSON_free(text);
    cJSON_Delete(in);
    cJSON_Delete(o);
    return err;
}

/* The next line of *s (without its newline) into line; 0 at the end. */
static int next_line(const char **s, char *line, size_t len) {
    if (!**s)
        return 0;
    const char *e = strchr(*s, '\n');
    size_t n = e ? (size_t)(e - *s) : strlen(*s);
    snprintf(line, len, "%.*s", (int)(n < len ? n : len - 1), *s);
    *s += n + (e != NULL);
    return 1;
}

/* The next line of an effective configuration text that sets something,
 * comments, group openings and log.* keys skipped; key: the "group.key" it
 * belongs to (a value may continue over several lines). 0 at the end. */
static int next_setting(const char **s, char *group, char *key, size_t klen, char *line,
                        size_t len) {
    while (next_line(s, line, len)) {
        char name[128];
        if (line[0] == '#')
            continue;
        if (line[0] != ' ' && sscanf(line, "%127[a-z_0-9] = {", name) == 1 && strchr(line, '{')) {
            snprintf(group, 128, "%s", name);
            continue;
        }
        if (sscanf(line, " %127[a-z_0-9] =", name) == 1)
            snprintf(key, klen, "%s.%s", group, name);
        if (strcmp(group, "log") == 0)
            continue;
        return 1;
    }
    return 0;
}

/* The value part of a setting line, in place: after "key = ", without the
 * final ';'. */
static const char *value_of(char *line) {
    char *v = strstr(line, " = ");
    v = v ? v + 3 : line;
    while (*v == ' ')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ';' || v[n - 1] == ' '))
        v[--n] = '\0';
    return v;
}

/* Local. The first setting that differs between two effective
 * configurations, as a phrase (what[len]); "" when none. */
static void config_difference(const char *was, const char *now, char *what, size_t len) {
    char ga[128] = "", gb[128] = "", ka[160] = "", kb[160] = "", la[1024], lb[1024];
    what[0] = '\0';
    for (;;) {
        const int a = next_setting(&was, ga, ka, sizeof ka, la, sizeof la);
        const int b = next_setting(&now, gb, kb, sizeof kb, lb, sizeof lb);
        if (!a && !b)
            return;
        if (a != b || strcmp(ka, kb) != 0) {
            snprintf(what, len, "the configuration keys differ (%s)", a ? ka : kb);
            return;
        }
        if (strcmp(la, lb) != 0) {
            snprintf(what, len, "configuration key %s: was %.400s, now %.400s", ka, value_of(la),
                     value_of(lb));
            return;
        }
    }
}

/* Local. The first difference between two input hash tables; "" when none. */
static void inputs_difference(const cJSON *was, const cJSON *now, char *what, size_t len) {
    what[0] = '\0';
    const cJSON *x;
    cJSON_ArrayForEach(x, was) {
        const cJSON *y = cJSON_GetObjectItemCaseSensitive(now, x->string);
        if (!y) {
            snprintf(what, len, "input '%s' is no longer read", x->string);
            return;
        }
        if (!cJSON_IsString(x) || !cJSON_IsString(y) ||
            strcmp(x->valuestring, y->valuestring) != 0) {
            snprintf(what, len, "input '%s' changed (SHA-256 was %.16s..., now %.16s...)",
                     x->string, cJSON_IsString(x) ? x->valuestring : "?",
                     cJSON_IsString(y) ? y->valuestring : "?");
            return;
        }
    }
    cJSON_ArrayForEach(x, now) {
        if (!cJSON_GetObjectItemCaseSensitive(was, x->string)) {
            snprintf(what, len, "input '%s' was not read before", x->string);
            return;
        }
    }
}

/* Local (rank 0). Checks an existing manifest against this run. */
static mpq_err check_manifest(mpq_ctx *ctx, const mpq_partial *p, const char *config) {
    mpq_err err = MPQ_OK;
    char path[4200], what[1024] = "";
    char *text = NULL;
    cJSON *m = NULL, *now = NULL;
    file_path(p, MANIFEST, path, sizeof path);
    MPQ_TRY(read_text(ctx, path, &text));
    m = cJSON_Parse(text);
    now = cJSON_Parse(p->hashes);
    MPQ_ENSURE(now, MPQ_ERR_NOMEM, "cannot parse the input hashes");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(m, "format");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(m, "version");
    const cJSON *blk = cJSON_GetObjectItemCaseSensitive(m, "blocks");
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(m, "config");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(m, "inputs");
    MPQ_ENSURE(m && cJSON_IsString(fmt) && strcmp(fmt->valuestring, PARTIAL_FORMAT) == 0 &&
                   cJSON_IsNumber(ver) && cJSON_IsNumber(blk) && cJSON_IsString(cfg) &&
                   cJSON_IsObject(in),
               MPQ_ERR_FORMAT,
               "%s: not a manifest of an mpquant partial checkpoint; delete %s to start over", path,
               p->dir);
    MPQ_ENSURE(ver->valueint == PARTIAL_VERSION, MPQ_ERR_FORMAT,
               "%s: partial checkpoint version %d, this mpquant writes version %d; delete %s to "
               "start over",
               path, ver->valueint, PARTIAL_VERSION, p->dir);
    config_difference(cfg->valuestring, config, what, sizeof what);
    if (!what[0])
        inputs_difference(in, now, what, sizeof what);
    if (!what[0] && (int64_t)blk->valuedouble != p->nblocks)
        snprintf(what, sizeof what, "the model has %lld blocks, the partial checkpoint %lld",
                 (long long)p->nblocks, (long long)blk->valuedouble);
    MPQ_ENSURE(!what[0], MPQ_ERR_CONFIG,
               "%s holds the finished blocks of another run and cannot be resumed: %s. Run with "
               "the same configuration and inputs to resume, or delete %s to start over",
               p->dir, what, p->dir);
cleanup:
    cJSON_Delete(m);
    cJSON_Delete(now);
    mpq_free(text);
    return err;
}

/* ---- opening ---------------------------------------------------------------------- */

static int is_regular(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Local (rank 0). Removes the temporaries a killed run left in the
 * directory (".<name>.tmp.<pid>.<hex>"). */
static void remove_temporaries(const mpq_partial *p) {
    DIR *d = opendir(p->dir);
    char path[4400];
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] != '.' || !strstr(e->d_name, ".tmp."))
            continue;
        file_path(p, e->d_name, path, sizeof path);
        if (is_regular(path))
            unlink(path);
    }
    if (d)
        closedir(d);
}

static int64_t count_blocks(const mpq_partial *p, mpq_phase phase) {
    char path[4200];
    int64_t b = 0;
    for (; b < p->nblocks; b++) {
        block_path(p, phase, b, path, sizeof path);
        if (!is_regular(path))
            break;
    }
    return b;
}

/* Local (rank 0). Creates the directory and its manifest, or checks them. */
static mpq_err open_local(mpq_ctx *ctx, const mpq_config *cfg, const char *const *inputs, int64_t n,
                          mpq_partial *p) {
    mpq_err err = MPQ_OK;
    char *config = NULL, path[4200];
    MPQ_TRY(mpq_config_format(ctx, cfg, &config));
    MPQ_TRY(mpq_ckpt_hash_inputs(ctx, inputs, n, &p->hashes));
    struct stat st;
    if (lstat(p->dir, &st) != 0) {
        MPQ_ENSURE(errno == ENOENT && mkdir(p->dir, 0777) == 0, MPQ_ERR_IO,
                   "output.path: cannot create the partial checkpoint directory %s: %s", p->dir,
                   strerror(errno));
    } else {
        MPQ_ENSURE(S_ISDIR(st.st_mode), MPQ_ERR_IO,
                   "output.path: %s exists and is not a directory; the partial checkpoint of the "
                   "run goes there: move it away",
                   p->dir);
    }
    file_path(p, MANIFEST, path, sizeof path);
    if (is_regular(path)) {
        MPQ_TRY(check_manifest(ctx, p, config));
        remove_temporaries(p);
        for (int k = 0; k < MPQ_PHASE_COUNT; k++)
            p->done[k] = count_blocks(p, (mpq_phase)k);
    } else {
        /* a new run (or one killed before its manifest was written) */
        for (int k = 0; k < MPQ_PHASE_COUNT; k++)
            MPQ_ENSURE(count_blocks(p, (mpq_phase)k) == 0, MPQ_ERR_FORMAT,
                       "%s holds block files but no %s; delete it to start over", p->dir, MANIFEST);
        MPQ_TRY(write_manifest(ctx, p, config));
    }
cleanup:
    mpq_free(config);
    return err;
}

mpq_err mpq_partial_open(mpq_ctx *ctx, const mpq_config *cfg, const char *const *inputs, int64_t n,
                         int64_t nblocks, const mpq_arch *arch, mpq_partial **out) {
    mpq_err err = MPQ_OK;
    mpq_partial *p = NULL;
    *out = NULL;
    const size_t len = strlen(cfg->output.path) + 16;
    err = mpq_malloc(ctx, 1, sizeof *p, (void **)&p);
    if (err == MPQ_OK) {
        err = mpq_malloc(ctx, (int64_t)len, 1, (void **)&p->dir);
        if (err == MPQ_OK)
            snprintf(p->dir, len, "%s.partial", cfg->output.path);
        p->nblocks = nblocks;
        p->arch = arch;
    }
    MPQ_TRY(mpq_agree(ctx, err));
    if (ctx->rank == 0)
        err = open_local(ctx, cfg, inputs, n, p);
    MPQ_TRY(mpq_agree(ctx, err));
    if (ctx->comm != MPI_COMM_NULL)
        MPQ_ENSURE(MPI_Bcast(p->done, MPQ_PHASE_COUNT, MPI_INT64_T, 0, ctx->comm) == MPI_SUCCESS,
                   MPQ_ERR_MPI, "cannot share the partial checkpoint's state");
    *out = p;
    return MPQ_OK;
cleanup:
    mpq_partial_free(&p);
    return err;
}

/* ---- block files ------------------------------------------------------------------ */

static cJSON *stats_json(int64_t n, const mpq_partial_entry *e) {
    cJSON *o = cJSON_CreateObject();
    for (int64_t i = 0; o && i < n; i++) {
        cJSON *x = cJSON_AddObjectToObject(o, e[i].name);
        if (!x) {
            cJSON_Delete(o);
            return NULL;
        }
        /* Written with 17 significant digits, which read back as the same
         * double (cJSON's own printing may drop the last bit); JSON has no
         * NaN: an unknown figure is null. */
        const double v[] = {e[i].st.loss, e[i].st.rtn_loss, e[i].st.seconds, e[i].st.energy};
        const char *k[] = {"loss", "rtn_loss", "seconds", "energy"};
        for (int j = 0; j < 4; j++) {
            char num[40] = "null";
            if (isfinite(v[j]))
                snprintf(num, sizeof num, "%.17g", v[j]);
            cJSON_AddRawToObject(x, k[j], num);
        }
        cJSON_AddNumberToObject(x, "iters", (double)e[i].st.iters);
        /* floats: 9 significant digits read back as the same float */
        cJSON *b = e[i].bias ? cJSON_AddArrayToObject(x, "bias") : NULL;
        for (int64_t c = 0; b && c < e[i].nbias; c++) {
            char num[24];
            snprintf(num, sizeof num, "%.9g", (double)e[i].bias[c]);
            cJSON *item = cJSON_CreateRaw(num);
            if (!item || !cJSON_AddItemToArray(b, item)) {
                cJSON_Delete(item);
                b = NULL;
            }
        }
        if (e[i].bias && !b) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

mpq_err mpq_partial_write(mpq_ctx *ctx, mpq_partial *p, mpq_phase phase, int64_t b, int64_t n,
                          const mpq_partial_entry *e) {
    mpq_err err = MPQ_OK;
    mpq_ckpt_writer *w = NULL;
    char path[4200], *stats = NULL;
    block_path(p, phase, b, path, sizeof path);
    MPQ_TRY(mpq_ckpt_writer_create(ctx, path, 1, NULL, 0, &w));
    MPQ_TRY(mpq_ckpt_write_arch(ctx, w, p->arch));
    for (int64_t i = 0; i < n; i++) {
        const mpq_ckpt_layer_desc d = {.tensor = e[i].name, .loss = e[i].st.loss};
        MPQ_TRY(mpq_ckpt_write_layer(ctx, w, &d, e[i].q, e[i].owner));
        if (i == 0)
            mpq_partial_test_kill(ctx, phase, b, "write");
    }
    if (ctx->rank == 0) {
        cJSON *o = stats_json(n, e);
        stats = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        err = stats ? MPQ_OK
                    : MPQ_ERROR(MPQ_ERR_NOMEM, "%s: cannot format the figures of the block", path);
    }
    MPQ_TRY(mpq_agree(ctx, err));
    const mpq_ckpt_provenance prov = {.assignment = stats};
    MPQ_TRY(mpq_ckpt_write_provenance(ctx, w, &prov));
    MPQ_TRY(mpq_ckpt_commit(ctx, &w));
cleanup:
    mpq_ckpt_abort(ctx, &w);
    cJSON_free(stats);
    return err;
}

mpq_err mpq_partial_open_block(mpq_ctx *ctx, const mpq_partial *p, mpq_phase phase, int64_t b,
                               mpq_ckpt **out) {
    char path[4200];
    block_path(p, phase, b, path, sizeof path);
    MPQ_CALL(mpq_ckpt_open(ctx, path, out));
    return MPQ_OK;
}

static double figure(const cJSON *x, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(x, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

mpq_err mpq_partial_read(mpq_ctx *ctx, const mpq_ckpt *ck, const char *name, mpq_qlayer **q,
                         mpq_partial_stats *st) {
    mpq_err err = MPQ_OK;
    const int64_t i = mpq_ckpt_find(ck, name);
    MPQ_CHECK(i >= 0 && ck->entries[i].quantized, MPQ_ERR_FORMAT,
              "%s: no entry '%s' (delete the partial checkpoint directory to start over)", ck->path,
              name);
    cJSON *o = cJSON_Parse(ck->assignment);
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    MPQ_ENSURE(cJSON_IsObject(x), MPQ_ERR_FORMAT, "%s: no figures for entry '%s'", ck->path, name);
    st->loss = figure(x, "loss");
    st->rtn_loss = figure(x, "rtn_loss");
    st->seconds = figure(x, "seconds");
    st->energy = figure(x, "energy");
    st->iters = (int64_t)figure(x, "iters");
    st->bits = ck->entries[i].bits;
    if (q)
        MPQ_TRY(mpq_ckpt_read_layer(ctx, ck, i, q));
cleanup:
    cJSON_Delete(o);
    return err;
}

mpq_err mpq_partial_read_bias(mpq_ctx *ctx, const mpq_ckpt *ck, const char *name, int64_t n,
                              float **out) {
    mpq_err err = MPQ_OK;
    *out = NULL;
    cJSON *o = cJSON_Parse(ck->assignment);
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(x, "bias");
    if (!b)
        goto cleanup;
    MPQ_ENSURE(cJSON_IsArray(b) && cJSON_GetArraySize(b) == n, MPQ_ERR_FORMAT,
               "%s: entry '%s': the bias correction is not an array of %lld numbers (delete the "
               "partial checkpoint directory to start over)",
               ck->path, name, (long long)n);
    MPQ_ALLOC_TRY(*out, n > 0 ? n : 1);
    int64_t k = 0;
    for (const cJSON *v = b->child; v; v = v->next, k++) {
        MPQ_ENSURE(cJSON_IsNumber(v) && isfinite(v->valuedouble), MPQ_ERR_FORMAT,
                   "%s: entry '%s': bias correction %lld is not a finite number", ck->path, name,
                   (long long)k);
        (*out)[k] = (float)v->valuedouble;
    }
cleanup:
    if (err != MPQ_OK)
        MPQ_FREE(*out);
    cJSON_Delete(o);
    return err;
}

void mpq_partial_remove(mpq_ctx *ctx, mpq_partial *p) {
    if (!p || ctx->rank != 0)
        return;
    remove_temporaries(p);
    char path[4200];
    for (int k = 0; k < MPQ_PHASE_COUNT; k++)
        for (int64_t b = 0; b < p->nblocks; b++) {
            block_path(p, (mpq_phase)k, b, path, sizeof path);
            unlink(path);
        }
    file_path(p, MANIFEST, path, sizeof path);
    unlink(path);
    if (rmdir(p->dir) != 0)
        mpq_log(ctx, MPQ_LOG_WARN, "cannot remove the partial checkpoint directory %s: %s", p->dir,
                strerror(errno));
}
