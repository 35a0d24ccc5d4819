/* config.c: reading and parsing the configuration: the file on rank 0,
 * libconfig parsing on every rank, op lists, defaults and overrides, and the
 * registries that give keys their allowed values. */
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"
#include "mpq_coll.h"
#include "mpq_infile.h"
#include "mpq_config.h"
#include "mpq_ctx.h"

#define MPQ_CONFIG_MAX_BYTES (16 << 20)

/* ---- values from the file ------------------------------------------------ */

static mpq_err value_from_setting(mpq_ctx *ctx, const config_setting_t *s, const origin *o,
                                  const char *key, value *v, value *items, int max_items) {
    memset(v, 0, sizeof *v);
    switch (config_setting_type(s)) {
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
            v->kind = V_INT;
            v->i = config_setting_get_int64(s);
            return MPQ_OK;
        case CONFIG_TYPE_FLOAT:
            v->kind = V_FLOAT;
            v->f = config_setting_get_float(s);
            return MPQ_OK;
        case CONFIG_TYPE_BOOL:
            v->kind = V_BOOL;
            v->b = config_setting_get_bool(s);
            return MPQ_OK;
        case CONFIG_TYPE_STRING:
            v->kind = V_STRING;
            v->s = config_setting_get_string(s);
            return MPQ_OK;
        case CONFIG_TYPE_ARRAY:
        case CONFIG_TYPE_LIST: {
            MPQ_CHECK(items, MPQ_ERR_CONFIG, "%s: %s: nested lists are not allowed", o->where, key);
            int n = config_setting_length(s);
            MPQ_CHECK(n <= max_items, MPQ_ERR_CONFIG, "%s: %s: more than %d items", o->where, key,
                      max_items);
            for (int i = 0; i < n; i++)
                MPQ_CALL(value_from_setting(ctx, config_setting_get_elem(s, (unsigned)i), o, key,
                                            &items[i], NULL, 0));
            v->kind = V_LIST;
            v->n = n;
            v->items = items;
            return MPQ_OK;
        }
        default:
            return MPQ_ERROR(MPQ_ERR_CONFIG, "%s: %s: a group is not allowed here", o->where, key);
    }
}

/* ---- op lists (MPQ_KEY_OPLIST) ------------------------------------------- */

const mpq_op_field *mpq_op_get(const mpq_op *op, const char *name) {
    for (int i = 0; i < op->nfields; i++)
        if (strcmp(op->f[i].name, name) == 0)
            return &op->f[i];
    return NULL;
}

/* Validates one group of an op list against the key's registry of ops
 * (the op's fields and their defaults) into *op. */
static mpq_err parse_op(mpq_ctx *ctx, const mpq_key_spec *k, const config_setting_t *g, int idx,
                        const char *source, mpq_op *op) {
    int line = (int)config_setting_source_line(g);
    op->line = line;
    MPQ_CHECK(config_setting_is_group(g), MPQ_ERR_CONFIG,
              "%s:%d: %s: item %d: expected a group { op = \"...\"; ... }", source, line, k->key,
              idx);
    const config_setting_t *name = config_setting_get_member(g, "op");
    MPQ_CHECK(name && config_setting_type(name) == CONFIG_TYPE_STRING, MPQ_ERR_CONFIG,
              "%s:%d: %s: item %d: missing string field 'op'", source, line, k->key, idx);
    const char *opname = config_setting_get_string(name);
    const mpq_registry *r = mpq_cfg_registry(k);
    MPQ_CHECK(r && r->fields_at, MPQ_ERR_INTERNAL,
              "%s:%d: %s: the ops come from a registry, which the program did not register "
              "(mpq_config_set_registries)",
              source, line, k->key);
    char fields[512], names[512];
    const int64_t opi = mpq_registry_index(r, opname);
    MPQ_CHECK(opi >= 0, MPQ_ERR_CONFIG, "%s:%d: %s: item %d: unknown op '%s' (known: %s)", source,
              line, k->key, idx, opname, mpq_registry_names(r, ", ", names, sizeof names));
    snprintf(fields, sizeof fields, "%s", r->fields_at(opi));
    snprintf(op->op, sizeof op->op, "%s", opname);
    /* Every member must be 'op' or a field of the schema. */
    int nm = config_setting_length(g);
    for (int m = 0; m < nm; m++) {
        const config_setting_t *mem = config_setting_get_elem(g, (unsigned)m);
        const char *mn = config_setting_name(mem);
        if (strcmp(mn, "op") == 0)
            continue;
        char pat[40];
        snprintf(pat, sizeof pat, "%s:", mn);
        int ok = strncmp(fields, pat, strlen(pat)) == 0;
        char pat2[44];
        snprintf(pat2, sizeof pat2, ",%s:", mn);
        ok = ok || strstr(fields, pat2);
        MPQ_CHECK(ok, MPQ_ERR_CONFIG, "%s:%d: %s: op '%s': unknown field '%s' (fields: %s)", source,
                  config_setting_source_line(mem), k->key, opname, mn, fields[0] ? fields : "none");
    }
    /* Every field of the schema: from the group or its default. */
    char *save = NULL;
    for (char *fs = strtok_r(fields, ",", &save); fs; fs = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(fs, ':');
        MPQ_CHECK(colon && op->nfields < MPQ_OP_MAX_FIELDS, MPQ_ERR_INTERNAL,
                  "bad schema of key %s", k->key);
        *colon = '\0';
        char type = colon[1];
        const char *def = colon[2] == '=' ? colon + 3 : NULL;
        mpq_op_field *f = &op->f[op->nfields++];
        snprintf(f->name, sizeof f->name, "%s", fs);
        f->type = type;
        const config_setting_t *mem = config_setting_get_member(g, fs);
        MPQ_CHECK(mem || def, MPQ_ERR_CONFIG, "%s:%d: %s: op '%s': missing required field '%s'",
                  source, line, k->key, opname, fs);
        int ml = mem ? (int)config_setting_source_line(mem) : line;
        int mt = mem ? config_setting_type(mem) : CONFIG_TYPE_NONE;
        if (type == 's') {
            MPQ_CHECK(!mem || mt == CONFIG_TYPE_STRING, MPQ_ERR_CONFIG,
                      "%s:%d: %s: op '%s': field '%s' must be a string", source, ml, k->key, opname,
                      fs);
            MPQ_CALL(mpq_strdup(ctx, mem ? config_setting_get_string(mem) : def, &f->s));
        } else if (type == 'i') {
            MPQ_CHECK(!mem || mt == CONFIG_TYPE_INT || mt == CONFIG_TYPE_INT64, MPQ_ERR_CONFIG,
                      "%s:%d: %s: op '%s': field '%s' must be an integer", source, ml, k->key,
                      opname, fs);
            f->i = mem ? (int64_t)config_setting_get_int64(mem) : strtoll(def, NULL, 10);
            MPQ_CHECK(f->i >= 0, MPQ_ERR_CONFIG,
                      "%s:%d: %s: op '%s': field '%s' must not be negative (got %lld)", source, ml,
                      k->key, opname, fs, (long long)f->i);
            f->f = (double)f->i;
        } else {
            MPQ_CHECK(!mem || mt == CONFIG_TYPE_INT || mt == CONFIG_TYPE_INT64 ||
                          mt == CONFIG_TYPE_FLOAT,
                      MPQ_ERR_CONFIG, "%s:%d: %s: op '%s': field '%s' must be a number", source, ml,
                      k->key, opname, fs);
            f->f = !mem                      ? strtod(def, NULL)
                   : mt == CONFIG_TYPE_FLOAT ? config_setting_get_float(mem)
                                             : (double)config_setting_get_int64(mem);
            MPQ_CHECK(isfinite(f->f), MPQ_ERR_CONFIG,
                      "%s:%d: %s: op '%s': field '%s' is not finite", source, ml, k->key, opname,
                      fs);
        }
    }
    return MPQ_OK;
}

static mpq_err assign_oplist(mpq_ctx *ctx, mpq_config *cfg, const mpq_key_spec *k,
                             const config_setting_t *s, const origin *o, const char *source) {
    int t = config_setting_type(s);
    MPQ_CHECK(t == CONFIG_TYPE_LIST || (t == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0),
              MPQ_ERR_CONFIG, "%s: %s: expected a list of groups ( { op = \"...\"; ... }, ... )",
              o->where, k->key);
    int n = config_setting_length(s);
    MPQ_CHECK(n <= MPQ_LIST_MAX, MPQ_ERR_CONFIG, "%s: %s: more than %d items", o->where, k->key,
              MPQ_LIST_MAX);
    mpq_op *ops = NULL;
    MPQ_CALL(mpq_malloc(ctx, n, sizeof *ops, (void **)&ops));
    for (int i = 0; i < n; i++) {
        mpq_err e = parse_op(ctx, k, config_setting_get_elem(s, (unsigned)i), i, source, &ops[i]);
        if (e != MPQ_OK) {
            mpq_cfg_oplist_free(ops, n);
            return mpq_err_trace(ctx, e, __FILE__, __LINE__, __func__);
        }
    }
    mpq_cfg_free_field(k, cfg);
    ((mpq_oplist *)((char *)cfg + k->offset))->n = n;
    ((mpq_oplist *)((char *)cfg + k->offset))->v = ops;
    return MPQ_OK;
}

static mpq_err walk(mpq_ctx *ctx, mpq_config *cfg, const config_setting_t *group,
                    const char *prefix, const char *source, const char *base_dir) {
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(s);
        char key[256];
        snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", name ? name : "?");
        origin o;
        snprintf(o.where, sizeof o.where, "%s:%d", source, config_setting_source_line(s));
        o.base_dir = base_dir;
        if (config_setting_is_group(s)) {
            MPQ_CHECK(!*prefix, MPQ_ERR_CONFIG, "%s: %s: nested groups are not allowed", o.where,
                      key);
            if (!mpq_cfg_section_exists(key, strlen(key))) {
                /* Nearest section name (not nearest key: a short key such as
                 * eval.docs must not win over the section model for 'modl'). */
                const char *near = mpq_config_keys[0].key;
                int bestd = 1 << 30;
                for (int j = 0; j < mpq_config_nkeys; j++) {
                    char sec[64];
                    const char *kk = mpq_config_keys[j].key;
                    snprintf(sec, sizeof sec, "%.*s", (int)(strchr(kk, '.') - kk), kk);
                    int d = mpq_edit_distance(key, sec);
                    if (d < bestd) {
                        bestd = d;
                        near = kk;
                    }
                }
                return MPQ_ERROR(MPQ_ERR_CONFIG, "%s: unknown section '%s' (did you mean '%.*s'?)",
                                 o.where, key, (int)(strchr(near, '.') - near), near);
            }
            MPQ_CALL(walk(ctx, cfg, s, key, source, base_dir));
            continue;
        }
        const mpq_key_spec *k = mpq_cfg_find_key(key);
        MPQ_CHECK(k, MPQ_ERR_CONFIG, "%s: unknown key '%s' (did you mean '%s'?)", o.where, key,
                  mpq_cfg_nearest_key(key));
        if (k->type == MPQ_KEY_OPLIST) {
            MPQ_CALL(assign_oplist(ctx, cfg, k, s, &o, source));
            continue;
        }
        value v, items[MPQ_LIST_MAX];
        MPQ_CALL(value_from_setting(ctx, s, &o, key, &v, items, MPQ_LIST_MAX));
        MPQ_CALL(mpq_cfg_assign(ctx, cfg, k, &v, &o));
    }
    return MPQ_OK;
}

/* ---- public -------------------------------------------------------------- */

void mpq_config_destroy(mpq_config **pcfg) {
    if (!pcfg || !*pcfg)
        return;
    mpq_config *cfg = *pcfg;
    for (int i = 0; i < mpq_config_nkeys; i++)
        mpq_cfg_free_field(&mpq_config_keys[i], cfg);
    for (int64_t i = 0; i < cfg->overrides.n; i++)
        mpq_free(cfg->overrides.v[i]);
    mpq_free(cfg->overrides.v);
    mpq_free(cfg->source);
    mpq_free(cfg->text);
    mpq_free(cfg);
    *pcfg = NULL;
}

const char *mpq_config_origin(const mpq_config *cfg, const char *key, char *buf, size_t len) {
    const size_t kl = strlen(key);
    for (int64_t i = cfg->overrides.n - 1; i >= 0; i--) {
        const char *ov = cfg->overrides.v[i];
        if (strncmp(ov, key, kl) == 0 && ov[kl] == '=') {
            snprintf(buf, len, "override '-o %s'", ov);
            return buf;
        }
    }
    /* The file's line: parsed again (only messages ask, once). */
    int line = 0;
    config_t lc;
    config_init(&lc);
    if (cfg->text_len > 0 && config_read_string(&lc, cfg->text)) {
        const config_setting_t *s = config_lookup(&lc, key);
        line = s ? (int)config_setting_source_line(s) : 0;
    }
    config_destroy(&lc);
    if (line > 0)
        snprintf(buf, len, "%s:%d", cfg->source, line);
    else
        snprintf(buf, len, "%s (default)", cfg->source);
    return buf;
}

mpq_err mpq_config_parse(mpq_ctx *ctx, const char *source, const char *text, int n_over,
                         char *const *overrides, mpq_config **out) {
    *out = NULL;
    mpq_err err = MPQ_OK;
    mpq_config *cfg = NULL;
    config_t lc;
    int lc_init = 0;
    char base_dir[PATH_MAX] = "";
    MPQ_ALLOC_TRY(cfg, 1);
    MPQ_TRY(mpq_strdup(ctx, source ? source : "<defaults>", &cfg->source));
    MPQ_TRY(mpq_strdup(ctx, text ? text : "", &cfg->text));
    cfg->text_len = (int64_t)strlen(cfg->text);

    /* Defaults first, through the same validation as everything else. */
    origin od = {.base_dir = NULL};
    for (int i = 0; i < mpq_config_nkeys; i++) {
        snprintf(od.where, sizeof od.where, "default of %s", mpq_config_keys[i].key);
        MPQ_TRY(mpq_cfg_assign_text(ctx, cfg, &mpq_config_keys[i], mpq_config_keys[i].def, &od));
    }

    if (text) {
        if (source) {
            const char *slash = strrchr(source, '/');
            if (slash && (size_t)(slash - source) < sizeof base_dir) {
                memcpy(base_dir, source, (size_t)(slash - source));
                base_dir[slash - source] = '\0';
                if (!base_dir[0])
                    strcpy(base_dir, "/");
            }
        }
        /* @include would make every rank read another file on its own (and
         * escape the one-reader rule); it is rejected. libconfig honours it
         * only at the start of a line after blanks, so only there is it
         * looked for (elsewhere it is text, e.g. inside a string). */
        int line = 1;
        for (const char *p = text; *p; line++) {
            p += strspn(p, " \t");
            if (strncmp(p, "@include", 8) == 0)
                MPQ_ENSURE(0, MPQ_ERR_CONFIG, "%s:%d: @include is not supported", cfg->source,
                           line);
            p += strcspn(p, "\n");
            if (*p)
                p++;
        }
        config_init(&lc);
        lc_init = 1;
        if (!config_read_string(&lc, text)) {
            err = MPQ_ERROR(MPQ_ERR_CONFIG, "%s:%d: syntax error: %s", cfg->source,
                            config_error_line(&lc), config_error_text(&lc));
            goto cleanup;
        }
        MPQ_TRY(walk(ctx, cfg, config_root_setting(&lc), "", cfg->source, base_dir));
    }
    if (n_over > 0)
        MPQ_ALLOC_TRY(cfg->overrides.v, n_over);
    for (int i = 0; i < n_over; i++) {
        MPQ_TRY(mpq_cfg_apply_override(ctx, cfg, overrides[i]));
        MPQ_TRY(mpq_strdup(ctx, overrides[i], &cfg->overrides.v[i]));
        cfg->overrides.n++;
    }
    *out = cfg;
    cfg = NULL;
cleanup:
    if (lc_init)
        config_destroy(&lc);
    mpq_config_destroy(&cfg);
    return err;
}

mpq_err mpq_config_load(mpq_ctx *ctx, const char *path, int n_over, char *const *overrides,
                        mpq_config **out) {
    *out = NULL;
    mpq_err err = MPQ_OK;
    char *text = NULL;
    int64_t len = 0;
    FILE *f = NULL;
    if (path && ctx->rank == 0) {
        MPQ_TRY(mpq_infile_fopen(ctx, path, "configuration file", &f));
        MPQ_ENSURE(fseek(f, 0, SEEK_END) == 0, MPQ_ERR_IO, "%s: cannot seek: %s", path,
                   strerror(errno));
        long sz = ftell(f);
        MPQ_ENSURE(sz >= 0, MPQ_ERR_IO, "%s: cannot determine size: %s", path, strerror(errno));
        MPQ_ENSURE(sz <= MPQ_CONFIG_MAX_BYTES, MPQ_ERR_CONFIG,
                   "%s: %ld bytes is too large for a configuration file (limit %d)", path, sz,
                   MPQ_CONFIG_MAX_BYTES);
        rewind(f);
        len = sz;
        MPQ_TRY(mpq_malloc(ctx, len + 1, 1, (void **)&text));
        MPQ_ENSURE(fread(text, 1, (size_t)len, f) == (size_t)len, MPQ_ERR_IO, "%s: read error: %s",
                   path, strerror(errno));
    }
cleanup:
    if (f)
        fclose(f);
    err = mpq_agree(ctx, err);
    if (err != MPQ_OK) {
        mpq_free(text);
        return err;
    }
    if (path)
        MPQ_CALL(mpq_bcast_bytes(ctx, 0, &text, &len));
    err = mpq_config_parse(ctx, path, text, n_over, overrides, out);
    mpq_free(text);
    err = mpq_agree(ctx, err);
    if (err != MPQ_OK)
        mpq_config_destroy(out);
    return err;
}
