/* config_assign.c: checking a value against its key and storing it: key
 * lookup, paths, types, ranges, allowed values (fixed or from a registry),
 * defaults and overrides written as text. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config_internal.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_registry.h"
#include "mpq_version.h"

static const char *type_name(mpq_key_type t) {
    switch (t) {
        case MPQ_KEY_INT:
            return "an integer";
        case MPQ_KEY_FLOAT:
            return "a number";
        case MPQ_KEY_BOOL:
            return "a boolean (true or false)";
        case MPQ_KEY_STRING:
            return "a string";
        case MPQ_KEY_ENUM:
            return "a string";
        case MPQ_KEY_PATH:
            return "a path string";
        case MPQ_KEY_OUTPATH:
            return "a path string";
        case MPQ_KEY_FLOAT_LIST:
            return "a list of numbers";
        case MPQ_KEY_STRING_LIST:
            return "a list of strings";
        case MPQ_KEY_OPLIST:
            return "a list of groups";
    }
    return "?";
}

static const char *vkind_name(vkind k) {
    static const char *const n[] = {"an integer", "a number", "a boolean", "a string", "a list"};
    return n[k];
}

int mpq_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 200 || lb > 200)
        return INT_MAX;
    int prev[201], cur[201];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(int) * (lb + 1));
    }
    return prev[lb];
}

const mpq_key_spec *mpq_cfg_find_key(const char *key) {
    for (int i = 0; i < mpq_config_nkeys; i++)
        if (strcmp(mpq_config_keys[i].key, key) == 0)
            return &mpq_config_keys[i];
    return NULL;
}

const char *mpq_cfg_nearest_key(const char *key) {
    const char *best = NULL;
    int bestd = INT_MAX;
    const char *klast = strrchr(key, '.');
    klast = klast ? klast + 1 : key;
    for (int i = 0; i < mpq_config_nkeys; i++) {
        const char *cand = mpq_config_keys[i].key;
        int d = mpq_edit_distance(key, cand);
        const char *clast = strrchr(cand, '.');
        int d2 = mpq_edit_distance(klast, clast ? clast + 1 : cand);
        d2 = d2 < INT_MAX ? d2 + 1 : d2; /* INT_MAX: a key too long to compare */
        if (d2 < d)
            d = d2;
        if (d < bestd) {
            bestd = d;
            best = cand;
        }
    }
    return best;
}

int mpq_cfg_section_exists(const char *section, size_t len) {
    for (int i = 0; i < mpq_config_nkeys; i++)
        if (strncmp(mpq_config_keys[i].key, section, len) == 0 &&
            mpq_config_keys[i].key[len] == '.')
            return 1;
    return 0;
}

/* ---- paths --------------------------------------------------------------- */

mpq_err mpq_config_resolve_path(mpq_ctx *ctx, const char *base_dir, const char *text, char **out) {
    *out = NULL;
    char buf[PATH_MAX * 2];
    size_t n = 0;
    for (const char *p = text; *p;) {
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            MPQ_CHECK(end, MPQ_ERR_CONFIG, "unterminated ${...} in '%s'", text);
            char name[128];
            size_t ln = (size_t)(end - (p + 2));
            MPQ_CHECK(ln > 0 && ln < sizeof name, MPQ_ERR_CONFIG, "bad variable name in '%s'",
                      text);
            memcpy(name, p + 2, ln);
            name[ln] = '\0';
            const char *v = getenv(name);
            if ((!v || !*v) && strcmp(name, "MPQ_SHARED_DIR") == 0)
                v = MPQ_SHARED_DIR_DEFAULT;
            MPQ_CHECK(v, MPQ_ERR_CONFIG, "environment variable '%s' used in '%s' is not set", name,
                      text);
            size_t lv = strlen(v);
            MPQ_CHECK(n + lv < sizeof buf, MPQ_ERR_CONFIG, "path '%s' is too long", text);
            memcpy(buf + n, v, lv);
            n += lv;
            p = end + 1;
        } else {
            MPQ_CHECK(n + 1 < sizeof buf, MPQ_ERR_CONFIG, "path '%s' is too long", text);
            buf[n++] = *p++;
        }
    }
    buf[n] = '\0';
    if (n == 0 || buf[0] == '/')
        return mpq_strdup(ctx, buf, out);
    /* Relative: against the configuration file's directory, or the working
     * directory for defaults and command-line overrides, so that the
     * effective configuration only holds absolute paths. */
    char cwd[PATH_MAX];
    if (!base_dir || !*base_dir) {
        MPQ_CHECK(getcwd(cwd, sizeof cwd), MPQ_ERR_IO, "cannot determine the working directory: %s",
                  strerror(errno));
        base_dir = cwd;
    }
    size_t lb = strlen(base_dir);
    char joined[PATH_MAX * 3];
    int w = snprintf(joined, sizeof joined, "%s%s%s", base_dir,
                     lb > 0 && base_dir[lb - 1] == '/' ? "" : "/", buf);
    MPQ_CHECK(w > 0 && (size_t)w < sizeof joined, MPQ_ERR_CONFIG, "path '%s' is too long", text);
    return mpq_strdup(ctx, joined, out);
}

/* ---- assigning a value to a key ------------------------------------------ */

void mpq_cfg_oplist_free(mpq_op *ops, int64_t n) {
    for (int64_t i = 0; ops && i < n; i++)
        for (int j = 0; j < ops[i].nfields; j++)
            mpq_free(ops[i].f[j].s);
    mpq_free(ops);
}

void mpq_cfg_free_field(const mpq_key_spec *k, mpq_config *cfg) {
    char *base = (char *)cfg + k->offset;
    switch (k->type) {
        case MPQ_KEY_STRING:
        case MPQ_KEY_ENUM:
        case MPQ_KEY_PATH:
        case MPQ_KEY_OUTPATH: {
            char **s = (char **)base;
            mpq_free(*s);
            *s = NULL;
            break;
        }
        case MPQ_KEY_FLOAT_LIST: {
            mpq_floatlist *l = (mpq_floatlist *)base;
            mpq_free(l->v);
            l->v = NULL;
            l->n = 0;
            break;
        }
        case MPQ_KEY_STRING_LIST: {
            mpq_strlist *l = (mpq_strlist *)base;
            for (int64_t i = 0; i < l->n; i++)
                mpq_free(l->v[i]);
            mpq_free(l->v);
            l->v = NULL;
            l->n = 0;
            break;
        }
        case MPQ_KEY_OPLIST: {
            mpq_oplist *l = (mpq_oplist *)base;
            mpq_cfg_oplist_free(l->v, l->n);
            l->v = NULL;
            l->n = 0;
            break;
        }
        default:
            break;
    }
}

static mpq_err check_number(mpq_ctx *ctx, const mpq_key_spec *k, const origin *o, double x) {
    MPQ_CHECK(isfinite(x), MPQ_ERR_CONFIG, "%s: %s: value is not finite", o->where, k->key);
    if (k->min != 0.0 || k->max != 0.0)
        MPQ_CHECK(x >= k->min && x <= k->max, MPQ_ERR_CONFIG,
                  "%s: %s: value %g is out of range [%g, %g]", o->where, k->key, x, k->min, k->max);
    return MPQ_OK;
}

/* ---- allowed values: fixed, or the names of a registry ---------------------- */

/* The registries of the keys that name a variant, set once at start-up
 * (mpq_config_set_registries) and read-only afterwards: the configuration
 * lies below the stages that own them. */
static const mpq_config_registry *registries;
static int nregistries;

/* 1 when key k takes its allowed values from a registry. */
static int wants_registry(const mpq_key_spec *k) {
    return (k->type == MPQ_KEY_ENUM && !k->choices) || k->type == MPQ_KEY_OPLIST;
}

const mpq_registry *mpq_cfg_registry(const mpq_key_spec *k) {
    for (int i = 0; i < nregistries; i++)
        if (strcmp(registries[i].key, k->key) == 0)
            return registries[i].reg;
    return NULL;
}

mpq_err mpq_config_set_registries(mpq_ctx *ctx, const mpq_config_registry *table, int n) {
    for (int i = 0; i < n; i++) {
        const mpq_key_spec *k = mpq_cfg_find_key(table[i].key);
        MPQ_CHECK(k && wants_registry(k), MPQ_ERR_INTERNAL,
                  "configuration key '%s' does not take its values from a registry", table[i].key);
        MPQ_CHECK(table[i].reg && (k->type != MPQ_KEY_OPLIST || table[i].reg->fields_at),
                  MPQ_ERR_INTERNAL, "configuration key '%s': no registry%s", k->key,
                  k->type == MPQ_KEY_OPLIST ? " of ops with fields" : "");
        for (int j = 0; j < i; j++)
            MPQ_CHECK(strcmp(table[j].key, table[i].key) != 0, MPQ_ERR_INTERNAL,
                      "configuration key '%s' is given two registries", table[i].key);
    }
    for (int i = 0; i < mpq_config_nkeys; i++) {
        const mpq_key_spec *k = &mpq_config_keys[i];
        int found = 0;
        for (int j = 0; j < n && !found; j++)
            found = strcmp(table[j].key, k->key) == 0;
        MPQ_CHECK(found || !wants_registry(k), MPQ_ERR_INTERNAL,
                  "configuration key '%s' takes its values from a registry, and none is given",
                  k->key);
    }
    registries = table;
    nregistries = n;
    return MPQ_OK;
}

const char *mpq_config_choices(const mpq_key_spec *k, char *buf, size_t len) {
    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (k->type == MPQ_KEY_ENUM && k->choices) {
        snprintf(buf, len, "%s", k->choices);
    } else if (wants_registry(k)) {
        const mpq_registry *r = mpq_cfg_registry(k);
        if (r)
            mpq_registry_names(r, "|", buf, len);
    }
    return buf;
}

/* Checks that s is an allowed value of ENUM key k. */
static mpq_err check_choice(mpq_ctx *ctx, const mpq_key_spec *k, const char *s, const origin *o) {
    int ok = 0;
    if (k->choices) {
        size_t ls = strlen(s);
        for (const char *c = k->choices; *c;) {
            const char *bar = strchr(c, '|');
            size_t lc = bar ? (size_t)(bar - c) : strlen(c);
            if (lc == ls && strncmp(c, s, lc) == 0)
                ok = 1;
            c = bar ? bar + 1 : c + lc;
        }
    } else {
        const mpq_registry *r = mpq_cfg_registry(k);
        MPQ_CHECK(r, MPQ_ERR_INTERNAL,
                  "%s: %s: the allowed values come from a registry, which the program did not "
                  "register (mpq_config_set_registries)",
                  o->where, k->key);
        ok = (r->also && strcmp(r->also, s) == 0) || mpq_registry_index(r, s) >= 0;
    }
    char allowed[512];
    MPQ_CHECK(ok, MPQ_ERR_CONFIG, "%s: %s: '%s' is not one of %s", o->where, k->key, s,
              mpq_config_choices(k, allowed, sizeof allowed));
    return MPQ_OK;
}

mpq_err mpq_cfg_assign(mpq_ctx *ctx, mpq_config *cfg, const mpq_key_spec *k, const value *v,
                       const origin *o) {
    char *base = (char *)cfg + k->offset;
    switch (k->type) {
        case MPQ_KEY_INT:
            MPQ_CHECK(v->kind == V_INT, MPQ_ERR_CONFIG, "%s: %s: expected %s, got %s", o->where,
                      k->key, type_name(k->type), vkind_name(v->kind));
            MPQ_CALL(check_number(ctx, k, o, (double)v->i));
            *(int64_t *)base = v->i;
            return MPQ_OK;
        case MPQ_KEY_FLOAT: {
            MPQ_CHECK(v->kind == V_INT || v->kind == V_FLOAT, MPQ_ERR_CONFIG,
                      "%s: %s: expected %s, got %s", o->where, k->key, type_name(k->type),
                      vkind_name(v->kind));
            double x = v->kind == V_INT ? (double)v->i : v->f;
            MPQ_CALL(check_number(ctx, k, o, x));
            *(double *)base = x;
            return MPQ_OK;
        }
        case MPQ_KEY_BOOL:
            MPQ_CHECK(v->kind == V_BOOL, MPQ_ERR_CONFIG, "%s: %s: expected %s, got %s", o->where,
                      k->key, type_name(k->type), vkind_name(v->kind));
            *(int *)base = v->b;
            return MPQ_OK;
        case MPQ_KEY_STRING:
        case MPQ_KEY_ENUM:
        case MPQ_KEY_PATH:
        case MPQ_KEY_OUTPATH: {
            MPQ_CHECK(v->kind == V_STRING, MPQ_ERR_CONFIG, "%s: %s: expected %s, got %s", o->where,
                      k->key, type_name(k->type), vkind_name(v->kind));
            if (k->type == MPQ_KEY_ENUM)
                MPQ_CALL(check_choice(ctx, k, v->s, o));
            char *s = NULL;
            if (k->type == MPQ_KEY_PATH || k->type == MPQ_KEY_OUTPATH) {
                mpq_err e = mpq_config_resolve_path(ctx, o->base_dir, v->s, &s);
                if (e != MPQ_OK)
                    return MPQ_ERROR(e, "%s: %s: %s", o->where, k->key, ctx->err_msg);
            } else {
                MPQ_CALL(mpq_strdup(ctx, v->s, &s));
            }
            mpq_cfg_free_field(k, cfg);
            *(char **)base = s;
            return MPQ_OK;
        }
        case MPQ_KEY_FLOAT_LIST: {
            MPQ_CHECK(v->kind == V_LIST, MPQ_ERR_CONFIG, "%s: %s: expected %s, got %s", o->where,
                      k->key, type_name(k->type), vkind_name(v->kind));
            double *xs = NULL;
            MPQ_CALL(mpq_malloc(ctx, v->n, sizeof *xs, (void **)&xs));
            for (int i = 0; i < v->n; i++) {
                const value *it = &v->items[i];
                if (it->kind != V_INT && it->kind != V_FLOAT) {
                    mpq_free(xs);
                    return MPQ_ERROR(MPQ_ERR_CONFIG, "%s: %s: item %d: expected a number, got %s",
                                     o->where, k->key, i, vkind_name(it->kind));
                }
                xs[i] = it->kind == V_INT ? (double)it->i : it->f;
                mpq_err e = check_number(ctx, k, o, xs[i]);
                if (e != MPQ_OK) {
                    mpq_free(xs);
                    return e;
                }
            }
            mpq_cfg_free_field(k, cfg);
            ((mpq_floatlist *)base)->n = v->n;
            ((mpq_floatlist *)base)->v = xs;
            return MPQ_OK;
        }
        case MPQ_KEY_STRING_LIST: {
            MPQ_CHECK(v->kind == V_LIST, MPQ_ERR_CONFIG, "%s: %s: expected %s, got %s", o->where,
                      k->key, type_name(k->type), vkind_name(v->kind));
            char **ss = NULL;
            MPQ_CALL(mpq_malloc(ctx, v->n, sizeof *ss, (void **)&ss));
            mpq_err e = MPQ_OK;
            for (int i = 0; i < v->n && e == MPQ_OK; i++) {
                if (v->items[i].kind != V_STRING)
                    e = MPQ_ERROR(MPQ_ERR_CONFIG, "%s: %s: item %d: expected a string, got %s",
                                  o->where, k->key, i, vkind_name(v->items[i].kind));
                else
                    e = mpq_strdup(ctx, v->items[i].s, &ss[i]);
            }
            if (e != MPQ_OK) {
                for (int i = 0; i < v->n; i++)
                    mpq_free(ss[i]);
                mpq_free(ss);
                return e;
            }
            mpq_cfg_free_field(k, cfg);
            ((mpq_strlist *)base)->n = v->n;
            ((mpq_strlist *)base)->v = ss;
            return MPQ_OK;
        }
        case MPQ_KEY_OPLIST:
            return MPQ_ERROR(MPQ_ERR_CONFIG,
                             "%s: %s: an operation list is set in the configuration file only, "
                             "as a list of groups ( { op = \"...\"; ... }, ... )",
                             o->where, k->key);
    }
    return MPQ_ERROR(MPQ_ERR_INTERNAL, "key %s has an unknown type", k->key);
}

/* ---- values from text (defaults and overrides) ---------------------------- */

/* Parses one scalar written on the command line, according to the key type
 * (a string key takes the text as is, optionally in double quotes). */
static mpq_err scalar_from_text(mpq_ctx *ctx, mpq_key_type t, const char *text, const origin *o,
                                const char *key, value *v, char *sbuf, size_t sbuf_len) {
    memset(v, 0, sizeof *v);
    size_t len = strlen(text);
    if (t == MPQ_KEY_STRING || t == MPQ_KEY_ENUM || t == MPQ_KEY_PATH || t == MPQ_KEY_OUTPATH ||
        t == MPQ_KEY_STRING_LIST) {
        if (len >= 2 && text[0] == '"' && text[len - 1] == '"') {
            text++;
            len -= 2;
        }
        MPQ_CHECK(len < sbuf_len, MPQ_ERR_CONFIG, "%s: %s: value is too long", o->where, key);
        memcpy(sbuf, text, len);
        sbuf[len] = '\0';
        v->kind = V_STRING;
        v->s = sbuf;
        return MPQ_OK;
    }
    if (t == MPQ_KEY_BOOL) {
        if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0) {
            v->kind = V_BOOL;
            v->b = 1;
            return MPQ_OK;
        }
        if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0) {
            v->kind = V_BOOL;
            v->b = 0;
            return MPQ_OK;
        }
        return MPQ_ERROR(MPQ_ERR_CONFIG, "%s: %s: expected %s, got '%s'", o->where, key,
                         type_name(t), text);
    }
    char *end = NULL;
    errno = 0;
    long long i = strtoll(text, &end, 10);
    if (len > 0 && *end == '\0' && errno == 0) {
        v->kind = V_INT;
        v->i = i;
        return MPQ_OK;
    }
    errno = 0;
    double f = strtod(text, &end);
    if (len > 0 && *end == '\0' && errno == 0) {
        v->kind = V_FLOAT;
        v->f = f;
        return MPQ_OK;
    }
    return MPQ_ERROR(MPQ_ERR_CONFIG, "%s: %s: expected %s, got '%s'", o->where, key, type_name(t),
                     text);
}

mpq_err mpq_cfg_assign_text(mpq_ctx *ctx, mpq_config *cfg, const mpq_key_spec *k, const char *text,
                            const origin *o) {
    static const size_t SB = 4096;
    char sbuf[4096];
    value v;
    if (k->type == MPQ_KEY_OPLIST) {
        if (text[0] == '\0') {
            mpq_cfg_free_field(k, cfg); /* the default: an empty list */
            return MPQ_OK;
        }
        memset(&v, 0, sizeof v);
        v.kind = V_STRING;
        v.s = text;
        return mpq_cfg_assign(ctx, cfg, k, &v, o); /* explains where op lists are set */
    }
    if (k->type != MPQ_KEY_FLOAT_LIST && k->type != MPQ_KEY_STRING_LIST) {
        MPQ_CALL(scalar_from_text(ctx, k->type, text, o, k->key, &v, sbuf, SB));
        return mpq_cfg_assign(ctx, cfg, k, &v, o);
    }
    char copy[4096];
    size_t len = strlen(text);
    MPQ_CHECK(len < sizeof copy, MPQ_ERR_CONFIG, "%s: %s: value is too long", o->where, k->key);
    memcpy(copy, text, len + 1);
    char *s = copy;
    if (len >= 2 && ((s[0] == '[' && s[len - 1] == ']') || (s[0] == '(' && s[len - 1] == ')'))) {
        s[len - 1] = '\0';
        s++;
    }
    value items[MPQ_LIST_MAX];
    char pool[4096]; /* the items' text, one after another (they fit: len < 4096) */
    size_t used = 0;
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        char *e = tok + strlen(tok);
        while (e > tok && e[-1] == ' ')
            *--e = '\0';
        MPQ_CHECK(n < MPQ_LIST_MAX, MPQ_ERR_CONFIG, "%s: %s: more than %d items", o->where, k->key,
                  MPQ_LIST_MAX);
        MPQ_CALL(scalar_from_text(ctx, k->type, tok, o, k->key, &items[n], pool + used,
                                  sizeof pool - used));
        used += strlen(tok) + 1;
        n++;
    }
    memset(&v, 0, sizeof v);
    v.kind = V_LIST;
    v.n = n;
    v.items = items;
    return mpq_cfg_assign(ctx, cfg, k, &v, o);
}

mpq_err mpq_cfg_apply_override(mpq_ctx *ctx, mpq_config *cfg, const char *ov) {
    origin o;
    snprintf(o.where, sizeof o.where, "override '-o %s'", ov);
    o.base_dir = NULL; /* relative to the working directory */
    const char *eq = strchr(ov, '=');
    MPQ_CHECK(eq && eq != ov, MPQ_ERR_CONFIG, "%s: expected section.key=value", o.where);
    char key[256];
    size_t lk = (size_t)(eq - ov);
    MPQ_CHECK(lk < sizeof key, MPQ_ERR_CONFIG, "%s: key is too long", o.where);
    memcpy(key, ov, lk);
    key[lk] = '\0';
    const mpq_key_spec *k = mpq_cfg_find_key(key);
    MPQ_CHECK(k, MPQ_ERR_CONFIG, "%s: unknown key '%s' (did you mean '%s'?)", o.where, key,
              mpq_cfg_nearest_key(key));
    return mpq_cfg_assign_text(ctx, cfg, k, eq + 1, &o);
}
