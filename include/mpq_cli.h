/* mpq_cli.h: the command line of the `mpquant` program: global options,
 * the table of subcommands, and helpers every subcommand uses. */
#ifndef MPQ_CLI_H
#define MPQ_CLI_H

#include "mpq_config.h"
#include "mpq_ctx.h"

struct cJSON;
struct mpq_arch;

#define MPQ_CLI_MAX 128

/* The parsed command line (identical on every rank). Strings point into argv. */
typedef struct mpq_cli {
    const char *command; /* subcommand name, NULL if none */
    int json;            /* --json: last stdout line is a JSON object */
    int n_over;          /* -o KEY=VALUE overrides, in order */
    char *overrides[MPQ_CLI_MAX];
    int npos; /* positional arguments after the command */
    char *pos[MPQ_CLI_MAX];
    int nopt; /* command-specific --name[=value] options */
    const char *opt_name[MPQ_CLI_MAX];
    const char *opt_value[MPQ_CLI_MAX]; /* "" for flags */
} mpq_cli;

typedef mpq_err (*mpq_command_fn)(mpq_ctx *ctx, const mpq_cli *cli);

/* One subcommand. `options` lists its own options separated by spaces; a
 * trailing '=' means the option takes a value ("model= docs= keys"). */
typedef struct mpq_command {
    const char *name;
    const char *args;    /* synopsis of its arguments, for --help */
    const char *summary; /* one line */
    const char *help;    /* longer description of its options */
    const char *options;
    int min_pos, max_pos;
    int loads_config; /* 1: opens the event log when it loads its configuration */
    mpq_command_fn run;
} mpq_command;

/* The registry of subcommands (pipeline/cli/commands.c). */
extern const mpq_command mpq_commands[];
extern const int mpq_ncommands;

/* The subcommands (pipeline/cli/cmd_<name>.c). Collective: every rank runs
 * the command with the same command line. */
mpq_err mpq_cmd_check(mpq_ctx *ctx, const mpq_cli *cli);
mpq_err mpq_cmd_inspect(mpq_ctx *ctx, const mpq_cli *cli);
mpq_err mpq_cmd_eval(mpq_ctx *ctx, const mpq_cli *cli);
mpq_err mpq_cmd_export(mpq_ctx *ctx, const mpq_cli *cli);
mpq_err mpq_cmd_run(mpq_ctx *ctx, const mpq_cli *cli);
mpq_err mpq_cmd_sweep(mpq_ctx *ctx, const mpq_cli *cli);
/* Local. The hyper-parameters of a Llama-family model: lines starting
 * "architecture:" on stdout, or an object "arch" added to parent. */
void mpq_cli_arch_print(const struct mpq_arch *a);
void mpq_cli_arch_json(const struct mpq_arch *a, struct cJSON *parent);
/* Collective. The summary `inspect` prints for an mpquant checkpoint
 * (pipeline/cli/cmd_export.c). */
mpq_err mpq_cmd_inspect_ckpt(mpq_ctx *ctx, const mpq_cli *cli, const char *path);

/* Local, once at start-up (before any configuration is parsed): tells the
 * configuration which registry gives the allowed values of each key that
 * names a variant (model.family, model.format, model.cnn, quant.method,
 * calibration.source, hessian.scalapack, robust.nonfinite;
 * mpq_config_set_registries).
 * mpq_cli_main calls it; so must any other program that parses a
 * configuration (the tests do through mpq_test_init). */
mpq_err mpq_cli_register_registries(mpq_ctx *ctx);

/* Collective: parses argv, runs the subcommand and returns its status
 * (not yet agreed across ranks). */
mpq_err mpq_cli_main(mpq_ctx *ctx, int argc, char **argv);

/* Value of a command-specific option, "" for a given flag, NULL if absent. */
const char *mpq_cli_opt(const mpq_cli *cli, const char *name);
/* Parses an integer option; `def` when absent. Errors name the option. */
mpq_err mpq_cli_opt_int(mpq_ctx *ctx, const mpq_cli *cli, const char *name, int64_t def,
                        int64_t min, int64_t max, int64_t *out);

/* Collective: loads the configuration file `path` (NULL: defaults) with the
 * command line's -o overrides, then applies its log settings to ctx (level,
 * all ranks, event log, progress interval). Owner: caller. */
mpq_err mpq_cli_load_config(mpq_ctx *ctx, const mpq_cli *cli, const char *path, mpq_config **out);

/* Rank 0 prints obj on one line of stdout when --json was given. Takes
 * ownership of obj. Local. */
void mpq_cli_emit_json(mpq_ctx *ctx, const mpq_cli *cli, struct cJSON *obj);

#endif
