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
#include "mpq_registry.h"

struct mpq_ctx;

typedef struct mpq_strlist {
    int64_t n;
    char **v; /* n strings, owned by the config */
} mpq_strlist;

typedef struct mpq_floatlist {
    int64_t n;
    double *v;
} mpq_floatlist;

/* One item of an op-list key (MPQ_KEY_OPLIST, e.g. model.cnn): the op name
 * and its fields, validated against the key's schema with defaults filled
 * in, so every field of the schema is present. */
#define MPQ_OP_MAX_FIELDS 8
typedef struct mpq_op_field {
    char name[24];
    char type; /* 's' string, 'i' integer, 'f' number */
    char *s;   /* 's': owned by the config, never NULL */
    int64_t i; /* 'i' */
    double f;  /* 'f' (and 'i' as a double) */
} mpq_op_field;

typedef struct mpq_op {
    char op[24];
    int line; /* line in the configuration file */
    int nfields;
    mpq_op_field f[MPQ_OP_MAX_FIELDS];
} mpq_op;

typedef struct mpq_oplist {
    int64_t n;
    mpq_op *v;
} mpq_oplist;

/* The field `name` of op (NULL when the op's schema has no such field). */
const mpq_op_field *mpq_op_get(const mpq_op *op, const char *name);

/* The validated configuration. Strings are owned by the config and are never
 * NULL ("" means unset). Paths are absolute or resolved against the
 * directory of the configuration file, with ${VAR} expanded from the
 * environment (MPQ_SHARED_DIR defaults to the build's shared directory). */
typedef struct mpq_config {
    char *source; /* name of the configuration file ("<defaults>" if none) */
    char *text;   /* its full text, for provenance */
    int64_t text_len;
    mpq_strlist overrides; /* the overrides "section.key=value" applied on top, in order,
                              as given (for provenance) */

    struct {
        char *path;                /* model file or directory */
        char *format;              /* auto | llama2c | safetensors */
        char *tokenizer;           /* llama2.c tokenizer.bin */
        char *family;              /* auto | llama | cnn (mpq_family.h) */
        mpq_oplist cnn;            /* sequential CNN description (family cnn) */
        mpq_floatlist input_shape; /* CNN input [c, h, w] */
        double input_scale;        /* CNN input = (raw * scale - mean[c]) / std[c] */
        mpq_floatlist input_mean;  /* per channel, or one value for all ([] = 0) */
        mpq_floatlist input_std;   /* per channel, or one value for all ([] = 1) */
    } model;

    struct {
        char *text;              /* language models: text file of documents */
        int64_t docs;            /* first N documents or windows (0 = all) */
        char *protocol;          /* language models: docs | windows | generated */
        int64_t window;          /* windows: tokens per window (0 = context, <= 2048);
                                    generated: tokens per sequence (0 = context) */
        int64_t seed;            /* generated: sampling seed */
        double temperature;      /* generated: sampling temperature (0 = greedy) */
        int enabled;             /* mpquant run: evaluate at all */
        char *images;            /* classifiers: IDX images */
        char *labels;            /* classifiers: IDX labels */
        int64_t first;           /* first image */
        int64_t count;           /* images (0 = all from first) */
        int64_t batch;           /* images per forward batch */
        int64_t generate_tokens; /* greedy generation length (0 = none) */
        char *reference;         /* full-precision model for KLD/agreement ("" = none) */
        int also_all;            /* classifiers, mpquant run: also evaluate every image */
    } eval;

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
        char *source;       /* text | images | random | generated */
        char *text;         /* text source: documents split at blank lines */
        char *images;       /* images source: IDX image file */
        int64_t first;      /* images source: first image */
        int64_t seq_len;    /* LM: tokens per segment */
        int64_t segments;   /* samples (segments or images) */
        int64_t seed;       /* shuffle / random source seed */
        double temperature; /* generated source: softmax temperature (0 = greedy) */
        char *propagate;    /* mpquant run: block inputs through quantized | fp blocks */
    } calibration;

    struct {
        char *spec;   /* quantizer spec (mpq_quant.h), e.g. "int:bits=4,sym=false,group=32" */
        char *method; /* rounding method: rtn | gptq | adaround | signround (mpq_round.h) */
        mpq_strlist candidates; /* mixed precision: candidate specs ([] = uniform quant.spec) */
    } quant;

    struct {
        double avg_bits;     /* average bits per weight of the quantized layers (0 = unset) */
        int64_t bytes;       /* or total bytes of the quantized layers (0 = unset) */
        char *count;         /* what the budget counts: all (codes + parameters) | codes */
        mpq_strlist pin;     /* "layer-pattern=spec": fixed candidate */
        mpq_strlist exclude; /* layer-name patterns kept in full precision */
    } budget;

    struct {
        char *method;           /* error | normalized | sensitivity */
        char *sensitivity_spec; /* candidate probed for the sensitivity ("" = smallest) */
        int64_t samples;        /* calibration samples used for the sensitivity (0 = all) */
    } importance;

    struct {
        char *save; /* write the (layer x candidate) measurements here (HDF5, "" = no) */
        char *load; /* reuse measurements from here ("" = measure) */
    } measure;

    struct {
        char *path;          /* quantized checkpoint (HDF5, "" = none) */
        int overwrite;       /* replace an existing file */
        mpq_strlist exports; /* "FORMAT:PATH": exports of the checkpoint written after it */
        char *code_coding;   /* "fixed" | "zstd": how each layer's codes are stored */
    } output;

    struct {
        mpq_floatlist budgets; /* mpquant sweep: average bits per weight of the mixed points */
        mpq_strlist uniform;   /* specs quantized uniformly ([] = quant.candidates) */
        mpq_strlist methods;   /* rounding methods compared at the compare specs ([] = none) */
        mpq_strlist compare;   /* specs of the method comparison ([] = sweep.uniform) */
        char *output_dir;      /* report directory (measurements, points, report files) */
        char *metric;          /* auto | ppl | nll | kld | accuracy | agreement */
        int plot;              /* draw report.png with gnuplot */
    } sweep;

    struct {
        int64_t block_size;   /* GPTQ lazy-update block (columns) */
        int act_order;        /* GPTQ: columns by decreasing diag H */
        int static_groups;    /* GPTQ: group parameters fitted before the column sweep */
        char *gptq_precision; /* GPTQ: "auto", "double" or "float" lazy updates */
        int64_t iters;        /* learned rounding: steps per tile */
        double lr;            /* learning rate of the rounding variables (0 = auto) */
        double lr_scale;      /* learning rate of the scale factors (0 = auto) */
        double lambda;        /* rounding regulariser weight */
        double beta_start;    /* regulariser exponent after warm-up */
        double beta_end;      /* ... annealed to this */
        double warmup;        /* fraction of steps without regulariser */
        char *init;           /* rtn | gptq */
        char *optimizer;      /* auto | adam | signsgd | sgdm */
        double momentum;      /* sgdm momentum */
        char *learn_scales;   /* auto | on | off */
        char *variable;       /* auto | sigmoid | offset */
        int64_t seed;         /* seed of the initial jitter */
        double init_noise;    /* jitter amplitude of the initial fractional position */
        int64_t tile_rows;    /* output rows per parallel task */
        int rtn_guard;        /* rows keep RTN where the method is worse */
        double rate_lambda;   /* GPTQ: weight of a code's length in bits (0 = off) */
        int rtn_loss;         /* rtn: calibrate to measure the layer losses */
        char *loss;           /* layer | block: what the final codes minimise */
        int64_t block_iters;  /* block loss: signed-gradient steps per block */
        int64_t block_rows;   /* block loss: activation rows per step (0 = all) */
        double block_lr;      /* block loss: step of the offsets (0 = 2 / block_iters) */
        double block_mom;     /* round.block_momentum: steps follow the running average
                                 of the gradient sums (0 = each step's own sums) */
        double input_drop;    /* block loss: share of full-precision input elements */
        char *block_comm;     /* block loss: exact | int8 gradient sums over ranks */
        char *block_scales;   /* block loss: off | on (learn the group scales too) */
        char *block_descent;  /* block loss: off | on (judged steps, undone when the loss
                                 rises) */
        char *learn_bias;     /* block loss: off | on (learn output-bias corrections too) */
        double kl_weight;     /* network loss: weight of the prediction's KL term */
        char *kl_target;      /* network loss: model | block (whose prediction the KL
                                 term follows) */
    } round;

    struct {
        char *level;              /* error | warn | info | debug | trace */
        int all_ranks;            /* every rank logs, with a [rank/size] prefix */
        char *event_log;          /* JSON-lines event log path ("" = none) */
        double progress_interval; /* seconds between progress lines */
    } log;

    struct {
        char *nonfinite; /* error | skip: NaN/Inf in a layer's weights (mpq_robust.h) */
    } robust;
} mpq_config;

/* Collective over ctx->comm. Reads `path` on rank 0 (NULL: defaults only),
 * broadcasts its bytes, parses and validates them on every rank, then applies
 * the n_over overrides "section.key=value". On error every rank returns the
 * same status and the context holds the message. Owner: caller
 * (mpq_config_destroy). */
mpq_err mpq_config_load(struct mpq_ctx *ctx, const char *path, int n_over, char *const *overrides,
                        mpq_config **out);
/* Local. Parses and validates configuration text already in memory. */
mpq_err mpq_config_parse(struct mpq_ctx *ctx, const char *source, const char *text, int n_over,
                         char *const *overrides, mpq_config **out);
/* NULL-safe; sets *cfg to NULL. */
void mpq_config_destroy(mpq_config **cfg);
/* Local. Where the value of `key` ("section.name") came from, for messages:
 * "override '-o k=v'" (the last -o that set it), "file.cfg:12" (the file),
 * else "file.cfg (default)". Written into buf[len]; returns buf. */
const char *mpq_config_origin(const mpq_config *cfg, const char *key, char *buf, size_t len);

/* Writes the effective configuration (every key, with its value) in
 * libconfig syntax that mpq_config_parse accepts. */
void mpq_config_print(const mpq_config *cfg, FILE *out);
/* Local. The text mpq_config_print writes, in memory (the effective
 * configuration a checkpoint records). Owner of *out: caller (mpq_free). */
mpq_err mpq_config_format(struct mpq_ctx *ctx, const mpq_config *cfg, char **out);
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
    MPQ_KEY_ENUM,    /* a string from `choices` ("a|b|c"), or, when choices is NULL, a
                        name from the key's registry (mpq_config_set_registries) */
    MPQ_KEY_PATH,    /* an input path (resolved; must exist when checked) */
    MPQ_KEY_OUTPATH, /* an output path (resolved; its directory must exist) */
    MPQ_KEY_FLOAT_LIST,
    MPQ_KEY_STRING_LIST,
    MPQ_KEY_OPLIST, /* a list of groups {op = "name"; field = value; ...}: the ops
                       are the entries of the key's registry, each taking the fields
                       "field:t[=default],..." its fields_at gives (t = s|i|f; a
                       field without '=' is required). Set in the file only (not by
                       -o overrides). */
} mpq_key_type;

typedef struct mpq_key_spec {
    const char *key; /* "section.name" */
    mpq_key_type type;
    size_t offset;       /* of the field in mpq_config */
    const char *def;     /* default, written as on the command line */
    double min, max;     /* inclusive range for INT/FLOAT (and list items) */
    const char *choices; /* ENUM: "a|b|c" (NULL: the names of a registry); PATH/OUTPATH:
                            "file|dir" or "dir" (NULL: a regular file); OPLIST: NULL */
    const char *doc;     /* one-line description for the reference */
} mpq_key_spec;

extern const mpq_key_spec mpq_config_keys[];
extern const int mpq_config_nkeys;

/* ---- keys whose values are the names of a registry --------------------- */

/* The keys that name a variant (model.family, quant.method, ...) take their
 * allowed values from the registry of that variant (mpq_registry.h), which
 * belongs to a stage above this layer; the program hands the registries
 * over at start-up. */
typedef struct mpq_config_registry {
    const char *key;         /* an ENUM key without choices, or an OPLIST key */
    const mpq_registry *reg; /* ENUM: reg->also and the entries' names; OPLIST:
                                the ops (names and fields_at) */
} mpq_config_registry;

/* Local; once at start-up, before any configuration is parsed (not
 * thread-safe; pipeline/cli does it: mpq_cli_register_registries). `table`
 * (n entries) is kept, not copied, and must cover every ENUM key without
 * choices and every OPLIST key exactly once (else MPQ_ERR_INTERNAL naming
 * the key). Until then, parsing fails with MPQ_ERR_INTERNAL on such a
 * key. */
mpq_err mpq_config_set_registries(struct mpq_ctx *ctx, const mpq_config_registry *table, int n);

/* The allowed values of key k as "a|b|c": an ENUM key's fixed choices or
 * its registry's names (also first), an OPLIST key's op names; "" for
 * other keys and for a registry not registered yet. Returns buf. */
const char *mpq_config_choices(const mpq_key_spec *k, char *buf, size_t len);

/* Levenshtein distance, used to suggest the nearest valid key. */
int mpq_edit_distance(const char *a, const char *b);

#endif
