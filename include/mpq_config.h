/* mpq_config.h: the run configuration (libconfig syntax), validated once into
 * a plain typed struct (STYLE.md rule 10).
 *
 * Rank 0 reads the file; every rank parses the same bytes; unknown keys, wrong
 * types and out-of-range values are errors naming file:line and the key, and
 * unknown keys suggest the nearest valid one. Command-line overrides
 * ("section.key=value") go through the same validation. Defaults live in one
 * table (pipeline/config_keys.c), which also documents every key.
 */
#ifndef MPQ_CONFIG_H
#define MPQ_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mpq_err.h"

struct mpq_ctx;

typedef struct mpq_strlist {
    int64_t n;
    char **v; /* n strings, owned by the config */
} mpq_strlist;

typedef struct mpq_floatlist {
    int64_t n;
    double *v;
} mpq_floatlist;

/* The validated configuration. Strings are owned by the config and are never
 * NULL ("" means unset). Paths are absolute or resolved against the
 * directory of the configuration file, with ${VAR} expanded from the
 * environment (MPQ_SHARED_DIR defaults to the build's shared directory). */
typedef struct mpq_config {
    char *source;      /* name of the configuration file ("<defaults>" if none) */
    char *text;        /* its full text, for provenance */
    int64_t text_len;

    struct {
        char *path;      /* model file or directory */
        char *format;    /* auto | llama2c | safetensors */
        char *tokenizer; /* llama2.c tokenizer.bin */
    } model;

    struct {
        double damping;              /* lambda: lambda * mean(diag H) added to the diagonal */
        double damping_max;          /* Cholesky retries multiply damping by 10 up to this */
        char *scalapack;             /* auto | always | never */
        int64_t scalapack_min_width; /* auto: ScaLAPACK from this width on */
        int64_t block_size;          /* ScaLAPACK block-cyclic block size */
        int64_t chunk_samples;       /* calibration samples per exact-reduction chunk */
        int64_t bound_log2;          /* activations must satisfy |x| <= 2^bound_log2 */
        char *save;                  /* write Hessian statistics here (HDF5, "" = no) */
        char *load;                  /* read Hessian statistics from here ("" = measure) */
    } hessian;

    struct {
        char *level;     /* error | warn | info | debug | trace */
        int all_ranks;   /* every rank logs, with a [rank/size] prefix */
        char *event_log; /* JSON-lines event log path ("" = none) */
        double progress_interval; /* seconds between progress lines */
    } log;
} mpq_config;

/* Collective over ctx->comm. Reads `path` on rank 0 (NULL: defaults only),
 * broadcasts its bytes, parses and validates them on every rank, then applies
 * the n_over overrides "section.key=value". On error every rank returns the
 * same status and the context holds the message. Owner: caller
 * (mpq_config_destroy). */
mpq_err mpq_config_load(struct mpq_ctx *ctx, const char *path, int n_over,
                        char *const *overrides, mpq_config **out);
/* Local. Parses and validates configuration text already in memory. */
mpq_err mpq_config_parse(struct mpq_ctx *ctx, const char *source, const char *text,
                         int n_over, char *const *overrides, mpq_config **out);
/* NULL-safe; sets *cfg to NULL. */
void mpq_config_destroy(mpq_config **cfg);

/* Writes the effective configuration (every key, with its value) in
 * libconfig syntax that mpq_config_parse accepts. */
void mpq_config_print(const mpq_config *cfg, FILE *out);
/* Writes the key reference (Markdown table: key, type, default, range,
 * description). */
void mpq_config_print_reference(FILE *out);

/* Local. Checks that every input path key ("" excepted) names an existing
 * readable file or directory, and that the directory of every output path
 * exists. Errors name the key. */
mpq_err mpq_config_check_paths(struct mpq_ctx *ctx, const mpq_config *cfg);

/* A cJSON object {"section": {"key": value, ...}, ...} of the effective
 * configuration. Owner: caller (cJSON_Delete). NULL on allocation failure. */
struct cJSON *mpq_config_to_json(const mpq_config *cfg);

/* Resolves a path from the configuration: expands ${VAR} from the environment
 * and makes a relative path relative to `base_dir`. Owner: caller (mpq_free). */
mpq_err mpq_config_resolve_path(struct mpq_ctx *ctx, const char *base_dir, const char *value,
                                char **out);

/* ---- the key table (used by config.c; shared with its tests) ---------- */

typedef enum mpq_key_type {
    MPQ_KEY_INT,
    MPQ_KEY_FLOAT,
    MPQ_KEY_BOOL,
    MPQ_KEY_STRING,
    MPQ_KEY_ENUM,   /* a string from `choices` ("a|b|c") */
    MPQ_KEY_PATH,   /* an input path (resolved; must exist when checked) */
    MPQ_KEY_OUTPATH, /* an output path (resolved; its directory must exist) */
    MPQ_KEY_FLOAT_LIST,
    MPQ_KEY_STRING_LIST,
} mpq_key_type;

typedef struct mpq_key_spec {
    const char *key;     /* "section.name" */
    mpq_key_type type;
    size_t offset;       /* of the field in mpq_config */
    const char *def;     /* default, written as on the command line */
    double min, max;     /* inclusive range for INT/FLOAT (and list items) */
    const char *choices; /* ENUM: "a|b|c" */
    const char *doc;     /* one-line description for the reference */
} mpq_key_spec;

extern const mpq_key_spec mpq_config_keys[];
extern const int mpq_config_nkeys;

/* Levenshtein distance, used to suggest the nearest valid key. */
int mpq_edit_distance(const char *a, const char *b);

#endif
