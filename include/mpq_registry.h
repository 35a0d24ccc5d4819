/* mpq_registry.h: the one idiom by which every variant is found by name
 * (STYLE.md rule 9): quantizer families, rounding methods, model families and
 * formats, export formats, Hessian backends, calibration sources, CNN ops.
 *
 * A registry is a NULL-terminated array of pointers to the entries (ops
 * tables) of one type, each named by its member `name`, plus one descriptor,
 * mpq_registry, through which code that does not know the entry type reads
 * the names: the lookup below, the messages that list the valid names and
 * the configuration's allowed values (mpq_config.h). A registry's find
 * function is mpq_registry_index on its descriptor followed by an index into
 * its array.
 *
 * Everything here is local and reads only constant tables.
 */
#ifndef MPQ_REGISTRY_H
#define MPQ_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_err.h"

struct mpq_ctx;

typedef struct mpq_registry {
    const char *what; /* what one entry is, for messages: "model family" */
    /* A value that the registry's users accept besides the entries' names
     * ("auto": detect or choose), listed first with the names; NULL: none.
     * Callers handle it before the lookup. */
    const char *also;
    /* The name of entry i, for i = 0, 1, ... up to the first NULL (past the
     * last entry). */
    const char *(*name_at)(int64_t i);
    /* Op registries only (the ops of a configuration op list, mpq_config.h
     * MPQ_KEY_OPLIST): the fields entry i takes, "name:type[=default],..."
     * ("" for none); NULL for other registries. */
    const char *(*fields_at)(int64_t i);
} mpq_registry;

/* Number of entries. */
int64_t mpq_registry_count(const mpq_registry *r);

/* Index of the entry named `name`, or -1 (also for NULL and for r->also). */
int64_t mpq_registry_index(const mpq_registry *r, const char *name);

/* The index of entry `name` into *out, or error `code` with the message
 * "<lead> '<name>' (known: <r->also>, <names>)"; lead NULL means
 * "unknown <r->what>". */
mpq_err mpq_registry_lookup(struct mpq_ctx *ctx, const mpq_registry *r, const char *name,
                            mpq_err code, const char *lead, int64_t *out);

/* Writes r->also (when set) and the entries' names, joined by sep, into buf
 * (always terminated; cut at len - 1 bytes). Returns buf. */
const char *mpq_registry_names(const mpq_registry *r, const char *sep, char *buf, size_t len);

#endif
