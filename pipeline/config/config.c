/* config.c: reading, validating, overriding and printing the configuration. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpq_coll.h"
#include "mpq_infile.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_version.h"

#define MPQ_CONFIG_MAX_BYTES (16 << 20)

/* A value before it is checked against a key: from the file, a default or an
 * override. Lists hold up to `n` items of kind `item`. */
typedef enum { V_INT, V_FLOAT, V_BOOL, V_STRING, V_LIST } vkind;
typedef struct value {
    vkind kind;
    int64_t i;
    double f;
    int b;
    const char *s;
    int n;               /* V_LIST: item count */
    struct value *items; /* V_LIST: items (kinds V_INT/V_FLOAT/V_STRING) */
} value;

/* Where a value came from, for messages: "file.cfg:12" or "override 'k=v'". */
typedef struct origin {
    char where[512];
    const char *base_dir; /* for relative paths */
} origin;

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

static const mpq_key_spec *find_key(const char *key) {
    for (int i = 0; i < mpq_config_nkeys; i++)
        if (strcmp(mpq_config_keys[i].key, key) == 0)
            return &mpq_config_keys[i];
    return NULL;
}

/* Nearest valid key to `key` (by edit distance, also trying the key's last
 * component against the last component of valid keys). */
static const char *nearest_key(const char *key) {
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

static int section_exists(const char *section, size_t len) {
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

static void oplist_free(mpq_op *ops, int64_t n) {
    for (int64_t i = 0; ops && i < n; i++)
        for (int j = 0; j < ops[i].nfields; j++)
            mpq_free(ops[i].f[j].s);
    mpq_free(ops);
}

static void free_field(const mpq_key_spec *k, mpq_config *cfg) {
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
            oplist_free(l->v, l->n);
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

static mpq_err assign(mpq_ctx *ctx, mpq_config *cfg, const mpq_key_spec *k, const value *v,
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
            if (k->type == MPQ_KEY_ENUM) {
                int ok = 0;
                size_t ls = strlen(v->s);
                for (const char *c = k->choices; c && *c;) {
                    const char *bar = strchr(c, '|');
                    size_t lc = bar ? (size_t)(bar - c) : strlen(c);
                    if (lc == ls && strncmp(c, v->s, lc) == 0)
                        ok = 1;
                    c = bar ? bar + 1 : c + lc;
                }
                MPQ_CHECK(ok, MPQ_ERR_CONFIG, "%s: %s: '%s' is not one of %s", o->where, k->key,
                          v->s, k->choices);
            }
            char *s = NULL;
            if (k->type == MPQ_KEY_PATH || k->type == MPQ_KEY_OUTPATH) {
                mpq_err e = mpq_config_resolve_path(ctx, o->base_dir, v->s, &s);
                if (e != MPQ_OK)
                    return MPQ_ERROR(e, "%s: %s: %s", o->where, k->key, ctx->err_msg);
            } else {
                MPQ_CALL(mpq_strdup(ctx, v->s, &s));
            }
            free_field(k, cfg);
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
            free_field(k, cfg);
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
            free_field(k, cfg);
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

#define MPQ_LIST_MAX 256

/* Assigns text (a default or an override value) to key k. Lists are written
 * "a,b,c", optionally in [ ] or ( ). */
static mpq_err assign_text(mpq_ctx *ctx, mpq_config *cfg, const mpq_key_spec *k, const char *text,
                           const origin *o) {
    static const size_t SB = 4096;
    char sbuf[4096];
    value v;
    if (k->type == MPQ_KEY_OPLIST) {
        if (text[0] == '\0') {
            free_field(k, cfg); /* the default: an empty list */
            return MPQ_OK;
        }
        memset(&v, 0, sizeof v);
        v.kind = V_STRING;
        v.s = text;
        return assign(ctx, cfg, k, &v, o); /* explains where op lists are set */
    }
    if (k->type != MPQ_KEY_FLOAT_LIST && k->type != MPQ_KEY_STRING_LIST) {
        MPQ_CALL(scalar_from_text(ctx, k->type, text, o, k->key, &v, sbuf, SB));
        return assign(ctx, cfg, k, &v, o);
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
    char bufs[MPQ_LIST_MAX][64];
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
        MPQ_CALL(scalar_from_text(ctx, k->type, tok, o, k->key, &items[n], bufs[n], 64));
        n++;
    }
    memset(&v, 0, sizeof v);
    v.kind = V_LIST;
    v.n = n;
    v.items = items;
    return assign(ctx, cfg, k, &v, o);
}

static mpq_err apply_override(mpq_ctx *ctx, mpq_config *cfg, const char *ov) {
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
    const mpq_key_spec *k = find_key(key);
    MPQ_CHECK(k, MPQ_ERR_CONFIG, "%s: unknown key '%s' (did you mean '%s'?)", o.where, key,
              nearest_key(key));
    return assign_text(ctx, cfg, k, eq + 1, &o);
}

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

/* Finds op `name` in the schema "a(f:t,...)|b|..." and copies its field
 * list (the text between the parentheses, "" when none) into fields. With
 * name NULL, writes the op names as "a, b, ..." into fields (for messages).
 * Returns 1 when found. */
static int schema_op(const char *schema, const char *name, char *fields, size_t cap,
                     const char **nearest) {
    int found = 0, bestd = 1 << 30;
    size_t nl = 0;
    fields[0] = '\0';
    for (const char *p = schema; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        const char *par = memchr(p, '(', len);
        size_t ln = par ? (size_t)(par - p) : len;
        char op[32];
        snprintf(op, sizeof op, "%.*s", (int)ln, p);
        if (!name) {
            nl +=
                (size_t)snprintf(fields + nl, nl < cap ? cap - nl : 0, "%s%s", nl ? ", " : "", op);
            if (nl >= cap)
                nl = cap - 1;
        } else if (strcmp(op, name) == 0) {
            found = 1;
            if (par)
                snprintf(fields, cap, "%.*s", (int)(len - ln - 2), par + 1);
        } else if (nearest) {
            int d = mpq_edit_distance(op, name);
            if (d < bestd) {
                bestd = d;
                *nearest = p;
            }
        }
        p = bar ? bar + 1 : p + len;
    }
    return found;
}

/* Validates one group of an op list against the schema into *op. */
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
    char fields[512], names[512];
    const char *near = NULL;
    if (!schema_op(k->choices, opname, fields, sizeof fields, &near)) {
        schema_op(k->choices, NULL, names, sizeof names, NULL);
        return MPQ_ERROR(MPQ_ERR_CONFIG, "%s:%d: %s: item %d: unknown op '%s' (known: %s)", source,
                         line, k->key, idx, opname, names);
    }
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
            oplist_free(ops, n);
            return mpq_err_trace(ctx, e, __FILE__, __LINE__, __func__);
        }
    }
    free_field(k, cfg);
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
            if (!section_exists(key, strlen(key))) {
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
        const mpq_key_spec *k = find_key(key);
        MPQ_CHECK(k, MPQ_ERR_CONFIG, "%s: unknown key '%s' (did you mean '%s'?)", o.where, key,
                  nearest_key(key));
        if (k->type == MPQ_KEY_OPLIST) {
            MPQ_CALL(assign_oplist(ctx, cfg, k, s, &o, source));
            continue;
        }
        value v, items[MPQ_LIST_MAX];
        MPQ_CALL(value_from_setting(ctx, s, &o, key, &v, items, MPQ_LIST_MAX));
        MPQ_CALL(assign(ctx, cfg, k, &v, &o));
    }
    return MPQ_OK;
}

/* ---- public -------------------------------------------------------------- */

void mpq_config_destroy(mpq_config **pcfg) {
    if (!pcfg || !*pcfg)
        return;
    mpq_config *cfg = *pcfg;
    for (int i = 0; i < mpq_config_nkeys; i++)
        free_field(&mpq_config_keys[i], cfg);
    for (int64_t i = 0; i < cfg->overrides.n; i++)
        mpq_free(cfg->overrides.v[i]);
    mpq_free(cfg->overrides.v);
    mpq_free(cfg->source);
    mpq_free(cfg->text);
    mpq_free(cfg);
    *pcfg = NULL;
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
        MPQ_TRY(assign_text(ctx, cfg, &mpq_config_keys[i], mpq_config_keys[i].def, &od));
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
        MPQ_TRY(apply_override(ctx, cfg, overrides[i]));
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

/* ---- printing ------------------------------------------------------------- */

/* A libconfig string literal: quotes and backslashes escaped, and control
 * characters too (a raw line break inside a string would put its next line
 * where the parser's @include check reads line starts). */
static void print_string(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c == '\t')
            fputs("\\t", out);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void print_float(FILE *out, double x) {
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", x);
    /* Shortest text that reads back to the same double. */
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    fputs(buf, out);
    if (!strpbrk(buf, ".eEn"))
        fputs(".0", out);
}

static void print_value(FILE *out, const mpq_key_spec *k, const mpq_config *cfg) {
    const char *base = (const char *)cfg + k->offset;
    switch (k->type) {
        case MPQ_KEY_INT:
            fprintf(out, "%lld", (long long)*(const int64_t *)base);
            break;
        case MPQ_KEY_FLOAT:
            print_float(out, *(const double *)base);
            break;
        case MPQ_KEY_BOOL:
            fputs(*(const int *)base ? "true" : "false", out);
            break;
        case MPQ_KEY_STRING:
        case MPQ_KEY_ENUM:
        case MPQ_KEY_PATH:
        case MPQ_KEY_OUTPATH:
            print_string(out, *(char *const *)base);
            break;
        case MPQ_KEY_FLOAT_LIST: {
            const mpq_floatlist *l = (const mpq_floatlist *)base;
            fputc('[', out);
            for (int64_t i = 0; i < l->n; i++) {
                if (i)
                    fputs(", ", out);
                print_float(out, l->v[i]);
            }
            fputc(']', out);
            break;
        }
        case MPQ_KEY_STRING_LIST: {
            const mpq_strlist *l = (const mpq_strlist *)base;
            fputc('[', out);
            for (int64_t i = 0; i < l->n; i++) {
                if (i)
                    fputs(", ", out);
                print_string(out, l->v[i]);
            }
            fputc(']', out);
            break;
        }
        case MPQ_KEY_OPLIST: {
            const mpq_oplist *l = (const mpq_oplist *)base;
            fputc('(', out);
            for (int64_t i = 0; i < l->n; i++) {
                fprintf(out, "%s\n    { op = \"%s\";", i ? "," : "", l->v[i].op);
                for (int j = 0; j < l->v[i].nfields; j++) {
                    const mpq_op_field *f = &l->v[i].f[j];
                    fprintf(out, " %s = ", f->name);
                    if (f->type == 's')
                        print_string(out, f->s);
                    else if (f->type == 'i')
                        fprintf(out, "%lld", (long long)f->i);
                    else
                        print_float(out, f->f);
                    fputc(';', out);
                }
                fputs(" }", out);
            }
            fputs(l->n ? "\n  )" : ")", out);
            break;
        }
    }
}

void mpq_config_print(const mpq_config *cfg, FILE *out) {
    char section[64] = "";
    for (int i = 0; i < mpq_config_nkeys; i++) {
        const mpq_key_spec *k = &mpq_config_keys[i];
        const char *dot = strchr(k->key, '.');
        size_t ls = (size_t)(dot - k->key);
        if (strlen(section) != ls || strncmp(section, k->key, ls) != 0) {
            if (section[0])
                fputs("};\n", out);
            snprintf(section, sizeof section, "%.*s", (int)ls, k->key);
            fprintf(out, "%s = {\n", section);
        }
        fprintf(out, "  %s = ", dot + 1);
        print_value(out, k, cfg);
        fputs(";\n", out);
    }
    if (section[0])
        fputs("};\n", out);
}

mpq_err mpq_config_format(mpq_ctx *ctx, const mpq_config *cfg, char **out) {
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    MPQ_CHECK(f, MPQ_ERR_NOMEM, "%s: cannot format the effective configuration: %s", cfg->source,
              strerror(errno));
    mpq_config_print(cfg, f);
    int bad = ferror(f);
    /* The stream's buffer (malloc'ed by libc) is complete only after fclose. */
    if (fclose(f) != 0)
        bad = 1;
    mpq_err err = MPQ_OK;
    if (bad || !buf)
        err =
            MPQ_ERROR(MPQ_ERR_NOMEM, "%s: cannot format the effective configuration", cfg->source);
    else
        err = mpq_strdup(ctx, buf, out);
    free(buf);
    return err;
}

void mpq_config_print_reference(FILE *out) {
    fputs("| key | type | default | allowed | description |\n", out);
    fputs("|---|---|---|---|---|\n", out);
    for (int i = 0; i < mpq_config_nkeys; i++) {
        const mpq_key_spec *k = &mpq_config_keys[i];
        static const char *const tn[] = {"int",         "float",      "bool",        "string",
                                         "enum",        "input path", "output path", "float list",
                                         "string list", "op list"};
        char allowed[256] = "";
        if (k->type == MPQ_KEY_ENUM) {
            snprintf(allowed, sizeof allowed, "%s", k->choices);
            for (char *p = allowed; *p; p++)
                if (*p == '|')
                    *p = ',';
        } else if (k->min != 0.0 || k->max != 0.0) {
            snprintf(allowed, sizeof allowed, "%g to %g", k->min, k->max);
        }
        fprintf(out, "| `%s` | %s | `%s` | %s | %s |\n", k->key, tn[k->type],
                k->def[0] ? k->def : "\"\"", allowed, k->doc);
    }
}

mpq_err mpq_config_check_paths(mpq_ctx *ctx, const mpq_config *cfg) {
    for (int i = 0; i < mpq_config_nkeys; i++) {
        const mpq_key_spec *k = &mpq_config_keys[i];
        if (k->type != MPQ_KEY_PATH && k->type != MPQ_KEY_OUTPATH)
            continue;
        const char *p = *(char *const *)((const char *)cfg + k->offset);
        if (!p[0])
            continue;
        /* choices of a path key: "file|dir" or "dir" (NULL: a regular file). */
        const int dir_ok = k->choices && strstr(k->choices, "dir");
        const int file_ok = !k->choices || strstr(k->choices, "file");
        struct stat ps;
        const int exists = stat(p, &ps) == 0; /* never opens: a FIFO cannot block here */
        if (exists)
            MPQ_CHECK((S_ISREG(ps.st_mode) && file_ok) || (S_ISDIR(ps.st_mode) && dir_ok),
                      MPQ_ERR_IO, "%s: %s: '%s' is %s; expected %s", cfg->source, k->key, p,
                      mpq_file_kind(ps.st_mode),
                      !dir_ok   ? "a regular file"
                      : file_ok ? "a regular file or a directory"
                                : "a directory");
        if (k->type == MPQ_KEY_PATH) {
            MPQ_CHECK(access(p, R_OK) == 0, MPQ_ERR_IO, "%s: %s: cannot read '%s': %s", cfg->source,
                      k->key, p, strerror(errno));
        } else {
            char dir[PATH_MAX];
            snprintf(dir, sizeof dir, "%s", p);
            char *slash = strrchr(dir, '/');
            if (!slash)
                snprintf(dir, sizeof dir, ".");
            else if (slash == dir)
                dir[1] = '\0';
            else
                *slash = '\0';
            struct stat st;
            MPQ_CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode), MPQ_ERR_IO,
                      "%s: %s: directory '%s' of '%s' does not exist", cfg->source, k->key, dir, p);
            MPQ_CHECK(access(dir, W_OK) == 0, MPQ_ERR_IO,
                      "%s: %s: directory '%s' is not writable: %s", cfg->source, k->key, dir,
                      strerror(errno));
        }
    }
    return MPQ_OK;
}

cJSON *mpq_config_to_json(const mpq_config *cfg) {
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    for (int i = 0; i < mpq_config_nkeys; i++) {
        const mpq_key_spec *k = &mpq_config_keys[i];
        const char *dot = strchr(k->key, '.');
        char section[64];
        snprintf(section, sizeof section, "%.*s", (int)(dot - k->key), k->key);
        cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, section);
        if (!sec)
            sec = cJSON_AddObjectToObject(root, section);
        const char *base = (const char *)cfg + k->offset;
        cJSON *v = NULL;
        switch (k->type) {
            case MPQ_KEY_INT:
                v = cJSON_CreateNumber((double)*(const int64_t *)base);
                break;
            case MPQ_KEY_FLOAT:
                v = cJSON_CreateNumber(*(const double *)base);
                break;
            case MPQ_KEY_BOOL:
                v = cJSON_CreateBool(*(const int *)base);
                break;
            case MPQ_KEY_STRING:
            case MPQ_KEY_ENUM:
            case MPQ_KEY_PATH:
            case MPQ_KEY_OUTPATH:
                v = cJSON_CreateString(*(char *const *)base);
                break;
            case MPQ_KEY_FLOAT_LIST: {
                const mpq_floatlist *l = (const mpq_floatlist *)base;
                v = cJSON_CreateArray();
                for (int64_t j = 0; v && j < l->n; j++)
                    cJSON_AddItemToArray(v, cJSON_CreateNumber(l->v[j]));
                break;
            }
            case MPQ_KEY_STRING_LIST: {
                const mpq_strlist *l = (const mpq_strlist *)base;
                v = cJSON_CreateArray();
                for (int64_t j = 0; v && j < l->n; j++)
                    cJSON_AddItemToArray(v, cJSON_CreateString(l->v[j]));
                break;
            }
            case MPQ_KEY_OPLIST: {
                const mpq_oplist *l = (const mpq_oplist *)base;
                v = cJSON_CreateArray();
                for (int64_t j = 0; v && j < l->n; j++) {
                    cJSON *g = cJSON_CreateObject();
                    cJSON_AddStringToObject(g, "op", l->v[j].op);
                    for (int q = 0; q < l->v[j].nfields; q++) {
                        const mpq_op_field *f = &l->v[j].f[q];
                        if (f->type == 's')
                            cJSON_AddStringToObject(g, f->name, f->s);
                        else
                            cJSON_AddNumberToObject(g, f->name, f->f);
                    }
                    cJSON_AddItemToArray(v, g);
                }
                break;
            }
        }
        if (sec && v)
            cJSON_AddItemToObject(sec, dot + 1, v);
        else
            cJSON_Delete(v);
    }
    return root;
}
