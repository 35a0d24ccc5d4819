/* registry.c: lookup by name and name lists over any registry (see
 * mpq_registry.h). */
#include <stdio.h>
#include <string.h>

#include "mpq_ctx.h"
#include "mpq_registry.h"

int64_t mpq_registry_count(const mpq_registry *r) {
    int64_t n = 0;
    while (r->name_at(n))
        n++;
    return n;
}

int64_t mpq_registry_index(const mpq_registry *r, const char *name) {
    if (!name)
        return -1;
    const char *e = NULL;
    for (int64_t i = 0; (e = r->name_at(i)) != NULL; i++)
        if (strcmp(e, name) == 0)
            return i;
    return -1;
}

/* Appends sep (unless buf is empty) and s to buf; 0 once buf is full. */
static int append(char *buf, size_t len, size_t *used, const char *sep, const char *s) {
    int w = snprintf(buf + *used, len - *used, "%s%s", *used ? sep : "", s);
    if (w < 0 || (size_t)w >= len - *used) {
        buf[len - 1] = '\0';
        return 0;
    }
    *used += (size_t)w;
    return 1;
}

const char *mpq_registry_names(const mpq_registry *r, const char *sep, char *buf, size_t len) {
    size_t used = 0;
    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (r->also && !append(buf, len, &used, sep, r->also))
        return buf;
    const char *e = NULL;
    for (int64_t i = 0; (e = r->name_at(i)) != NULL; i++)
        if (!append(buf, len, &used, sep, e))
            break;
    return buf;
}

mpq_err mpq_registry_lookup(mpq_ctx *ctx, const mpq_registry *r, const char *name, mpq_err code,
                            const char *lead, int64_t *out) {
    *out = mpq_registry_index(r, name);
    if (*out >= 0)
        return MPQ_OK;
    char names[512];
    mpq_registry_names(r, ", ", names, sizeof names);
    if (lead)
        return MPQ_ERROR(code, "%s '%s' (known: %s)", lead, name ? name : "(null)", names);
    return MPQ_ERROR(code, "unknown %s '%s' (known: %s)", r->what, name ? name : "(null)", names);
}
