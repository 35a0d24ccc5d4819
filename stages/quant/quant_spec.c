/* quant_spec.c: the textual quantizer spec "family:key=value,..." parsed into
 * an mpq_qspec and formatted back canonically. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_ctx.h"
#include "mpq_quant.h"

static const char *const gran_names[MPQ_QGRAN_COUNT] = {"tensor", "channel", "group"};
static const char *const fit_names[MPQ_QFIT_COUNT] = {"minmax", "mean", "threshold", "search"};
static const char *const scale_names[MPQ_QSCALE_COUNT] = {"fp16", "fp32", "e8m0", "e4m3", "fp16z"};

const char *mpq_qgran_name(mpq_qgran g) {
    return (unsigned)g < MPQ_QGRAN_COUNT ? gran_names[g] : "?";
}
const char *mpq_qfit_name(mpq_qfit f) {
    return (unsigned)f < MPQ_QFIT_COUNT ? fit_names[f] : "?";
}
const char *mpq_qscale_name(mpq_qscale s) {
    return (unsigned)s < MPQ_QSCALE_COUNT ? scale_names[s] : "?";
}

int mpq_qspec_has_zero(const mpq_qspec *spec) {
    return spec->ops->has_zero && !spec->sym;
}

/* The keys, in canonical order; `bit` is the MPQ_QKEY_* that enables them. */
static const struct {
    const char *name;
    unsigned bit;
} spec_keys[] = {
    {"bits", MPQ_QKEY_BITS},  {"sym", MPQ_QKEY_SYM},     {"gran", MPQ_QKEY_GRAN},
    {"group", MPQ_QKEY_GRAN}, {"scale", MPQ_QKEY_SCALE}, {"fit", MPQ_QKEY_FIT},
    {"a", MPQ_QKEY_A},        {"pack", MPQ_QKEY_PACK},
};
#define NKEYS ((int)(sizeof spec_keys / sizeof spec_keys[0]))

/* Comma-separated names of the keys in mask (all keys for ~0u). */
static void key_list(unsigned mask, char *buf, size_t len) {
    buf[0] = '\0';
    for (int i = 0; i < NKEYS; i++) {
        if (!(spec_keys[i].bit & mask))
            continue;
        size_t used = strlen(buf);
        snprintf(buf + used, len - used, "%s%s", used ? ", " : "", spec_keys[i].name);
    }
}

static void name_list(const char *const *names, int n, unsigned mask, char *buf, size_t len) {
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (!(mask & (1u << i)))
            continue;
        size_t used = strlen(buf);
        snprintf(buf + used, len - used, "%s%s", used ? "|" : "", names[i]);
    }
}

static int lookup(const char *const *names, int n, const char *v) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], v) == 0)
            return i;
    return -1;
}

static int parse_int(const char *v, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end)
        return 0;
    *out = x;
    return 1;
}

static int parse_bool(const char *v, int *out) {
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes")) {
        *out = 1;
        return 1;
    }
    if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no")) {
        *out = 0;
        return 1;
    }
    return 0;
}

/* Copies s[0..n) without surrounding blanks into buf. */
static void trim_copy(const char *s, size_t n, char *buf, size_t len) {
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n >= len)
        n = len - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
}

mpq_err mpq_qspec_parse(mpq_ctx *ctx, const char *text, mpq_qspec *out) {
    char fams[256], list[256], name[64], key[64], val[64];
    MPQ_CHECK(text != NULL, MPQ_ERR_ARG, "quantizer spec is NULL");
    const size_t tlen = strlen(text);
    MPQ_CHECK(tlen < MPQ_QSPEC_MAX, MPQ_ERR_CONFIG,
              "quantizer spec '%.40s...' is %zu bytes long (at most %d)", text, tlen,
              MPQ_QSPEC_MAX - 1);
    const char *colon = strchr(text, ':');
    size_t nlen = colon ? (size_t)(colon - text) : strlen(text);
    trim_copy(text, nlen, name, sizeof name);
    const mpq_quant_ops *ops = mpq_quant_find(name);
    if (!ops) {
        mpq_registry_names(&mpq_quant_reg, ", ", fams, sizeof fams);
        return MPQ_ERROR(MPQ_ERR_CONFIG,
                         "quantizer spec '%s': unknown quantizer '%s'; valid quantizers: %s", text,
                         name, fams);
    }

    mpq_qspec s = {
        .ops = ops,
        .bits = ops->def_bits,
        .sym = 0,
        .gran = ops->def_gran,
        .group = ops->def_gran == MPQ_QGRAN_GROUP ? ops->def_group : 0,
        .fit = ops->def_fit,
        .scale = ops->def_scale,
        .a = (ops->keys & MPQ_QKEY_A) ? 0.0 : 1.0, /* a family with an exponent fits it */
        .base3 = 0,
    };
    unsigned seen = 0; /* bit i: spec_keys[i] given */
    const char *p = colon ? colon + 1 : NULL;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t flen = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', flen);
        MPQ_CHECK(eq != NULL, MPQ_ERR_CONFIG, "quantizer spec '%s': field '%.*s' is not key=value",
                  text, (int)flen, p);
        trim_copy(p, (size_t)(eq - p), key, sizeof key);
        trim_copy(eq + 1, flen - (size_t)(eq - p) - 1, val, sizeof val);
        int k = -1;
        for (int i = 0; i < NKEYS; i++)
            if (!strcmp(spec_keys[i].name, key))
                k = i;
        if (k < 0) {
            key_list(~0u, list, sizeof list);
            return MPQ_ERROR(MPQ_ERR_CONFIG,
                             "quantizer spec '%s': unknown key '%s'; valid keys: %s", text, key,
                             list);
        }
        if (!(ops->keys & spec_keys[k].bit)) {
            key_list(ops->keys, list, sizeof list);
            return MPQ_ERROR(MPQ_ERR_CONFIG,
                             "quantizer spec '%s': quantizer '%s' takes no key '%s'; its keys: %s",
                             text, ops->name, key, list[0] ? list : "(none)");
        }
        MPQ_CHECK(!(seen & (1u << k)), MPQ_ERR_CONFIG, "quantizer spec '%s': key '%s' given twice",
                  text, key);
        seen |= 1u << k;

        long iv;
        int bv, idx;
        if (!strcmp(key, "bits")) {
            MPQ_CHECK(parse_int(val, &iv) && iv >= ops->min_bits && iv <= ops->max_bits,
                      MPQ_ERR_CONFIG,
                      "quantizer spec '%s': bits = '%s' is not an integer in [%d, %d] for '%s'",
                      text, val, ops->min_bits, ops->max_bits, ops->name);
            s.bits = (int)iv;
        } else if (!strcmp(key, "sym")) {
            MPQ_CHECK(parse_bool(val, &bv), MPQ_ERR_CONFIG,
                      "quantizer spec '%s': sym = '%s' is not true or false", text, val);
            s.sym = bv;
        } else if (!strcmp(key, "gran")) {
            idx = lookup(gran_names, MPQ_QGRAN_COUNT, val);
            name_list(gran_names, MPQ_QGRAN_COUNT, ops->grans, list, sizeof list);
            MPQ_CHECK(idx >= 0 && (ops->grans & (1u << idx)), MPQ_ERR_CONFIG,
                      "quantizer spec '%s': gran = '%s' is not valid for '%s'; valid: %s", text,
                      val, ops->name, list);
            s.gran = (mpq_qgran)idx;
        } else if (!strcmp(key, "group")) {
            MPQ_CHECK(parse_int(val, &iv) && iv >= 1 && iv <= (1L << 30), MPQ_ERR_CONFIG,
                      "quantizer spec '%s': group = '%s' is not an integer >= 1", text, val);
            s.group = iv;
        } else if (!strcmp(key, "scale")) {
            idx = lookup(scale_names, MPQ_QSCALE_COUNT, val);
            MPQ_CHECK(idx == MPQ_QSCALE_FP16 || idx == MPQ_QSCALE_FP32 || idx == MPQ_QSCALE_FP16Z,
                      MPQ_ERR_CONFIG,
                      "quantizer spec '%s': scale = '%s' is not valid; valid: fp16|fp32|fp16z",
                      text, val);
            s.scale = (mpq_qscale)idx;
        } else if (!strcmp(key, "fit")) {
            idx = lookup(fit_names, MPQ_QFIT_COUNT, val);
            name_list(fit_names, MPQ_QFIT_COUNT, ops->fits, list, sizeof list);
            MPQ_CHECK(idx >= 0 && (ops->fits & (1u << idx)), MPQ_ERR_CONFIG,
                      "quantizer spec '%s': fit = '%s' is not valid for '%s'; valid: %s", text, val,
                      ops->name, list);
            s.fit = (mpq_qfit)idx;
        } else if (!strcmp(key, "a")) {
            if (!strcmp(val, "auto")) {
                s.a = 0.0;
            } else {
                char *end;
                double a = strtod(val, &end);
                MPQ_CHECK(end != val && !*end && a > 0.0 && a <= 1.0, MPQ_ERR_CONFIG,
                          "quantizer spec '%s': a = '%s' is neither 'auto' nor a number in (0, 1]",
                          text, val);
                s.a = a;
            }
        } else { /* pack */
            MPQ_CHECK(!strcmp(val, "codes") || !strcmp(val, "base3"), MPQ_ERR_CONFIG,
                      "quantizer spec '%s': pack = '%s' is not valid; valid: codes|base3", text,
                      val);
            s.base3 = !strcmp(val, "base3");
        }
        p = comma ? comma + 1 : NULL;
    }

    /* gran and group: group=g alone implies gran=group. */
    int gran_given = (seen & (1u << 2)) != 0, group_given = (seen & (1u << 3)) != 0;
    if (group_given && !gran_given)
        s.gran = MPQ_QGRAN_GROUP;
    if (!(ops->grans & (1u << s.gran))) {
        name_list(gran_names, MPQ_QGRAN_COUNT, ops->grans, list, sizeof list);
        return MPQ_ERROR(MPQ_ERR_CONFIG,
                         "quantizer spec '%s': quantizer '%s' does not take gran=%s; valid: %s",
                         text, ops->name, gran_names[s.gran], list);
    }
    if (s.gran == MPQ_QGRAN_GROUP) {
        MPQ_CHECK(group_given || ops->def_group > 0, MPQ_ERR_CONFIG,
                  "quantizer spec '%s': gran=group needs group=<columns per group>", text);
        if (!group_given)
            s.group = ops->def_group;
    } else {
        MPQ_CHECK(!group_given, MPQ_ERR_CONFIG,
                  "quantizer spec '%s': group is only valid with gran=group (gran is %s)", text,
                  gran_names[s.gran]);
        s.group = 0;
    }
    MPQ_CHECK(!((ops->keys & MPQ_QKEY_SYM) && s.sym && s.bits < 2), MPQ_ERR_CONFIG,
              "quantizer spec '%s': symmetric int needs bits >= 2 (use 'binary' for 1 bit)", text);
    MPQ_CHECK(s.scale != MPQ_QSCALE_FP16Z || mpq_qspec_has_zero(&s), MPQ_ERR_CONFIG,
              "quantizer spec '%s': scale = fp16z shapes scales for a zero-point: it needs an "
              "asymmetric int (sym=false)",
              text);
    *out = s;
    return MPQ_OK;
}

char *mpq_qspec_format(const mpq_qspec *spec, char *buf, size_t len) {
    const mpq_quant_ops *ops = spec->ops;
    size_t used = 0;
    int first = 1;
#define PUT(...)                                                                                   \
    do {                                                                                           \
        if (used < len) {                                                                          \
            int n_ = snprintf(buf + used, len - used, __VA_ARGS__);                                \
            used += n_ > 0 ? (size_t)n_ : 0;                                                       \
        }                                                                                          \
    } while (0)
#define SEP()                                                                                      \
    do {                                                                                           \
        PUT("%s", first ? ":" : ",");                                                              \
        first = 0;                                                                                 \
    } while (0)
    buf[0] = '\0';
    PUT("%s", ops->name);
    if (ops->keys & MPQ_QKEY_BITS) {
        SEP();
        PUT("bits=%d", spec->bits);
    }
    if (ops->keys & MPQ_QKEY_SYM) {
        SEP();
        PUT("sym=%s", spec->sym ? "true" : "false");
    }
    if (ops->keys & MPQ_QKEY_GRAN) {
        SEP();
        if (spec->gran == MPQ_QGRAN_GROUP)
            PUT("group=%lld", (long long)spec->group);
        else
            PUT("gran=%s", mpq_qgran_name(spec->gran));
    }
    if (ops->keys & MPQ_QKEY_SCALE) {
        SEP();
        PUT("scale=%s", mpq_qscale_name(spec->scale));
    }
    if (ops->keys & MPQ_QKEY_FIT) {
        SEP();
        PUT("fit=%s", mpq_qfit_name(spec->fit));
    }
    if (ops->keys & MPQ_QKEY_A) {
        SEP();
        if (spec->a == 0.0)
            PUT("a=auto");
        else
            PUT("a=%.17g", spec->a);
    }
    if (ops->keys & MPQ_QKEY_PACK) {
        SEP();
        PUT("pack=%s", spec->base3 ? "base3" : "codes");
    }
#undef PUT
#undef SEP
    return buf;
}

int mpq_qspec_reads_importance(const mpq_qspec *spec) {
    return spec->fit != MPQ_QFIT_MINMAX || ((spec->ops->keys & MPQ_QKEY_A) && spec->a == 0.0);
}

int mpq_qspec_equal(const mpq_qspec *a, const mpq_qspec *b) {
    return a->ops == b->ops && a->bits == b->bits && a->sym == b->sym && a->gran == b->gran &&
           a->group == b->group && a->fit == b->fit && a->scale == b->scale && a->a == b->a &&
           a->base3 == b->base3;
}
