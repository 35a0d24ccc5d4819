/* config_internal.h: what the three sources of the configuration layer
 * share: a value before it is checked against a key, where it came from,
 * and the key-level operations of config_assign.c that parsing (config.c)
 * and printing (config_print.c) use. Everything here is local. */
#ifndef MPQ_CONFIG_INTERNAL_H
#define MPQ_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_registry.h"

/* Items of a list value (file, default or override). */
#define MPQ_LIST_MAX 256

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

/* The key named `key`, or NULL. */
const mpq_key_spec *mpq_cfg_find_key(const char *key);
/* Nearest valid key to `key` (by edit distance, also trying the key's last
 * component against the last component of valid keys). */
const char *mpq_cfg_nearest_key(const char *key);
/* 1 when some key lies in section[0, len). */
int mpq_cfg_section_exists(const char *section, size_t len);

/* Releases the field of key k in cfg (strings, lists) and empties it. */
void mpq_cfg_free_field(const mpq_key_spec *k, mpq_config *cfg);
void mpq_cfg_oplist_free(mpq_op *ops, int64_t n);

/* Checks v against key k (type, range, allowed values) and stores it in
 * cfg; errors name o->where and the key. */
mpq_err mpq_cfg_assign(mpq_ctx *ctx, mpq_config *cfg, const mpq_key_spec *k, const value *v,
                       const origin *o);
/* Assigns text (a default or an override value) to key k. Lists are written
 * "a,b,c", optionally in [ ] or ( ). */
mpq_err mpq_cfg_assign_text(mpq_ctx *ctx, mpq_config *cfg, const mpq_key_spec *k, const char *text,
                            const origin *o);
/* Applies one override "section.key=value". */
mpq_err mpq_cfg_apply_override(mpq_ctx *ctx, mpq_config *cfg, const char *ov);

/* The registry that gives the allowed values of key k (an ENUM key without
 * choices, or an OPLIST key; mpq_config_set_registries), or NULL when none
 * is registered. */
const mpq_registry *mpq_cfg_registry(const mpq_key_spec *k);

#endif
