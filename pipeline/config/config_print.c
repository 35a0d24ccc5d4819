/* config_print.c: writing the configuration: the effective configuration in
 * libconfig syntax, the key reference, JSON, and the check of its paths. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_internal.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_infile.h"

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
        if (k->type == MPQ_KEY_ENUM || k->type == MPQ_KEY_OPLIST) {
            /* Fixed choices, or the names of the key's registry (ops of an op list). */
            mpq_config_choices(k, allowed, sizeof allowed);
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
