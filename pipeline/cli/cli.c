/* cli.c: parsing the command line and dispatching to a subcommand. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_cli.h"
#include "mpq_outfile.h"
#include "mpq_version.h"

static const char global_help[] =
    "Global options (anywhere on the line):\n"
    "  -h, --help            this help (or: mpquant COMMAND --help)\n"
    "  -V, --version         version, commit and build type\n"
    "  -o, --set KEY=VALUE   override a configuration key (repeatable), e.g. -o log.level=debug\n"
    "  --json                print one JSON object with the results as the last line of stdout\n"
    "  --log-level LEVEL     error, warn, info (default), debug or trace\n"
    "  --log-all-ranks       every rank logs, prefixed [rank/size]\n"
    "  --event-log FILE      append JSON-lines events (stages, progress, errors) to FILE\n"
    "  -q, --quiet           same as --log-level warn\n";

static void print_help(mpq_ctx *ctx, const mpq_command *cmd) {
    if (ctx->rank != 0)
        return;
    if (cmd) {
        printf("usage: mpquant %s %s\n\n%s.\n\n", cmd->name, cmd->args, cmd->summary);
        if (cmd->help && cmd->help[0])
            printf("Options:\n%s\n", cmd->help);
        printf("%s", global_help);
        return;
    }
    printf("mpquant %s: distributed post-training quantization of neural networks\n\n"
           "usage: [mpirun -np N | srun] mpquant [OPTIONS] COMMAND [ARGS]\n\nCommands:\n",
           MPQ_VERSION);
    for (int i = 0; i < mpq_ncommands; i++)
        printf("  %-8s %-28s %s\n", mpq_commands[i].name, mpq_commands[i].args,
               mpq_commands[i].summary);
    printf("\n%s\nSee configs/REFERENCE.md (mpquant check --keys) for the configuration keys.\n",
           global_help);
}

static const char *command_name_at(int64_t i) {
    return i < mpq_ncommands ? mpq_commands[i].name : NULL;
}

static const mpq_registry command_reg = {.what = "command", .name_at = command_name_at};

static const mpq_command *find_command(const char *name) {
    int64_t i = mpq_registry_index(&command_reg, name);
    return i < 0 ? NULL : &mpq_commands[i];
}

/* Does `cmd` accept option `name`? *takes_value is set when it does. */
static int command_accepts(const mpq_command *cmd, const char *name, size_t len, int *takes_value) {
    if (!cmd || !cmd->options)
        return 0;
    for (const char *p = cmd->options; *p;) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ' && *e != '=')
            e++;
        if ((size_t)(e - p) == len && strncmp(p, name, len) == 0) {
            *takes_value = *e == '=';
            return 1;
        }
        while (*e && *e != ' ')
            e++;
        p = e;
    }
    return 0;
}

typedef struct global_opts {
    int help, version, quiet, all_ranks;
    const char *log_level;
    const char *event_log;
} global_opts;

static mpq_err parse(mpq_ctx *ctx, int argc, char **argv, mpq_cli *cli, global_opts *g,
                     const mpq_command **cmd) {
    memset(cli, 0, sizeof *cli);
    memset(g, 0, sizeof *g);
    *cmd = NULL;
    /* The command is the first argument that is not an option or an
     * option's value; find it first so that its options are known. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-o") == 0 || strcmp(a, "--set") == 0 || strcmp(a, "--log-level") == 0 ||
            strcmp(a, "--event-log") == 0) {
            i++;
            continue;
        }
        if (a[0] == '-')
            continue;
        *cmd = find_command(a);
        if (!*cmd && strcmp(a, "help") != 0) {
            const char *best = NULL;
            int bd = 1 << 30;
            for (int c = 0; c < mpq_ncommands; c++) {
                int d = mpq_edit_distance(a, mpq_commands[c].name);
                if (d < bd) {
                    bd = d;
                    best = mpq_commands[c].name;
                }
            }
            return MPQ_ERROR(MPQ_ERR_ARG, "unknown command '%s'%s%s%s (see mpquant --help)", a,
                             best && bd <= 3 ? " (did you mean '" : "", best && bd <= 3 ? best : "",
                             best && bd <= 3 ? "'?)" : "");
        }
        cli->command = a;
        break;
    }
    int seen_command = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE(opt)                                                                            \
    MPQ_CHECK(next, MPQ_ERR_ARG, "option %s needs a value", opt);                                  \
    i++
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            g->help = 1;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            g->version = 1;
        } else if (strcmp(a, "--json") == 0) {
            cli->json = 1;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            g->quiet = 1;
        } else if (strcmp(a, "--log-all-ranks") == 0) {
            g->all_ranks = 1;
        } else if (strcmp(a, "--log-level") == 0) {
            NEED_VALUE(a);
            g->log_level = next;
        } else if (strncmp(a, "--log-level=", 12) == 0) {
            g->log_level = a + 12;
        } else if (strcmp(a, "--event-log") == 0) {
            NEED_VALUE(a);
            g->event_log = next;
        } else if (strncmp(a, "--event-log=", 12) == 0) {
            g->event_log = a + 12;
        } else if (strcmp(a, "-o") == 0 || strcmp(a, "--set") == 0) {
            NEED_VALUE(a);
            MPQ_CHECK(cli->n_over < MPQ_CLI_MAX, MPQ_ERR_ARG, "too many -o options");
            cli->overrides[cli->n_over++] = argv[i];
        } else if (strncmp(a, "--", 2) == 0 && a[2]) {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            int takes = 0;
            MPQ_CHECK(command_accepts(*cmd, name, len, &takes), MPQ_ERR_ARG,
                      "unknown option '%.*s'%s%s (see mpquant %s--help)", (int)len + 2, a,
                      *cmd ? " for command " : "", *cmd ? (*cmd)->name : "",
                      *cmd ? (*cmd)->name : "");
            MPQ_CHECK(cli->nopt < MPQ_CLI_MAX, MPQ_ERR_ARG, "too many options");
            if (takes && !eq) {
                NEED_VALUE(a);
            }
            MPQ_CHECK(takes || !eq, MPQ_ERR_ARG, "option --%.*s takes no value", (int)len, name);
            /* Store the name NUL-terminated: argv strings are writable. */
            if (eq)
                *(char *)eq = '\0';
            cli->opt_name[cli->nopt] = name;
            cli->opt_value[cli->nopt] = takes ? (eq ? eq + 1 : argv[i]) : "";
            cli->nopt++;
        } else if (a[0] == '-' && a[1]) {
            return MPQ_ERROR(MPQ_ERR_ARG, "unknown option '%s' (see mpquant --help)", a);
        } else if (!seen_command && cli->command && strcmp(a, cli->command) == 0) {
            seen_command = 1;
        } else if (!cli->command && strcmp(a, "help") == 0) {
            g->help = 1;
        } else {
            MPQ_CHECK(cli->command, MPQ_ERR_ARG, "unexpected argument '%s'", a);
            MPQ_CHECK(cli->npos < MPQ_CLI_MAX, MPQ_ERR_ARG, "too many arguments");
            cli->pos[cli->npos++] = a;
        }
#undef NEED_VALUE
    }
    return MPQ_OK;
}

const char *mpq_cli_opt(const mpq_cli *cli, const char *name) {
    const char *v = NULL;
    for (int i = 0; i < cli->nopt; i++)
        if (strcmp(cli->opt_name[i], name) == 0)
            v = cli->opt_value[i]; /* the last one wins */
    return v;
}

mpq_err mpq_cli_opt_int(mpq_ctx *ctx, const mpq_cli *cli, const char *name, int64_t def,
                        int64_t min, int64_t max, int64_t *out) {
    const char *v = mpq_cli_opt(cli, name);
    if (!v) {
        *out = def;
        return MPQ_OK;
    }
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    MPQ_CHECK(*v && *end == '\0' && errno == 0, MPQ_ERR_ARG, "--%s: '%s' is not an integer", name,
              v);
    MPQ_CHECK(x >= min && x <= max, MPQ_ERR_ARG, "--%s: %lld is out of range [%lld, %lld]", name, x,
              (long long)min, (long long)max);
    *out = x;
    return MPQ_OK;
}

/* ---- event log ---------------------------------------------------------- */

/* The global --event-log of this process, and whether the event log has
 * been settled (opened, or known to be absent) on every rank. */
static const char *event_log_arg;
static int event_log_settled;

/* Local (rank 0). The event log may not be a file named on the command line
 * (positional arguments, option values: inputs and outputs of the command)
 * nor, with cfg, any input or output path of the configuration. */
static mpq_err check_event_log(mpq_ctx *ctx, const mpq_cli *cli, const mpq_config *cfg,
                               const char *path, const char *key) {
    for (int i = 0; i < cli->npos + cli->nopt; i++) {
        const char *v = i < cli->npos ? cli->pos[i] : cli->opt_value[i - cli->npos];
        MPQ_CHECK(!mpq_outfile_same_file(path, v), MPQ_ERR_ARG,
                  "%s: '%s' is the same file as '%s' named on the command line; the event log "
                  "may not be an input or another output",
                  key, path, v);
    }
    if (!cfg)
        return MPQ_OK;
    for (int i = 0; i < mpq_config_nkeys; i++) {
        const mpq_key_spec *k = &mpq_config_keys[i];
        if ((k->type != MPQ_KEY_PATH && k->type != MPQ_KEY_OUTPATH) ||
            strcmp(k->key, "log.event_log") == 0)
            continue;
        const char *v = *(char *const *)((const char *)cfg + k->offset);
        MPQ_CHECK(!mpq_outfile_same_file(path, v), MPQ_ERR_CONFIG,
                  "%s: %s: '%s' is the same file as %s ('%s'); the event log may not be an "
                  "input or another output",
                  cfg->source, key, path, k->key, v);
    }
    return MPQ_OK;
}

/* Collective. Opens the event log after the checks above and writes its
 * first event, run_start. The log is settled afterwards, also on error. */
static mpq_err open_event_log(mpq_ctx *ctx, const mpq_cli *cli, const mpq_config *cfg,
                              const char *path, const char *key) {
    event_log_settled = 1;
    mpq_err err = MPQ_OK;
    if (ctx->rank == 0) {
        err = check_event_log(ctx, cli, cfg, path, key);
        if (err == MPQ_OK)
            err = mpq_event_open(ctx, path);
    }
    MPQ_CALL(mpq_agree(ctx, err));
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "command", cli->command ? cli->command : "");
    cJSON_AddStringToObject(f, "version", MPQ_VERSION);
    mpq_event(ctx, "run_start", f);
    return MPQ_OK;
}

/* Collective; status is agreed. A global --event-log still unopened (the
 * command failed before its configuration was loaded, or loads none) is
 * opened with the command-line checks, so that the error and run_end events
 * are kept. Returns status when it is an error (its message kept, whatever
 * the open gives), else the outcome of the open. */
static mpq_err settle_event_log(mpq_ctx *ctx, const mpq_cli *cli, mpq_err status) {
    if (event_log_settled || !event_log_arg)
        return status;
    int erank = ctx->err_rank;
    char msg[MPQ_ERRMSG_MAX], trace[MPQ_TRACE_MAX];
    memcpy(msg, ctx->err_msg, sizeof msg);
    memcpy(trace, ctx->err_trace, sizeof trace);
    mpq_err e = open_event_log(ctx, cli, NULL, event_log_arg, "--event-log");
    if (status == MPQ_OK)
        return e;
    ctx->err_code = status;
    ctx->err_rank = erank;
    memcpy(ctx->err_msg, msg, sizeof msg);
    memcpy(ctx->err_trace, trace, sizeof trace);
    return status;
}

mpq_err mpq_cli_load_config(mpq_ctx *ctx, const mpq_cli *cli, const char *path, mpq_config **out) {
    mpq_err lerr = mpq_config_load(ctx, path, cli->n_over, cli->overrides, out);
    if (lerr != MPQ_OK)
        return settle_event_log(ctx, cli, lerr);
    mpq_config *cfg = *out;
    mpq_log_level lvl;
    if (mpq_log_level_parse(cfg->log.level, &lvl) == 0 && ctx->log_level == MPQ_LOG_INFO)
        mpq_log_set_level(ctx, lvl); /* a command-line level wins */
    if (cfg->log.all_ranks)
        mpq_log_set_all_ranks(ctx, 1);
    ctx->progress_interval = cfg->log.progress_interval;
    if (!event_log_settled && (event_log_arg || cfg->log.event_log[0])) {
        mpq_err err = event_log_arg
                          ? open_event_log(ctx, cli, cfg, event_log_arg, "--event-log")
                          : open_event_log(ctx, cli, cfg, cfg->log.event_log, "log.event_log");
        if (err != MPQ_OK) {
            mpq_config_destroy(out);
            return err;
        }
    }
    return MPQ_OK;
}

void mpq_cli_emit_json(mpq_ctx *ctx, const mpq_cli *cli, cJSON *obj) {
    if (cli->json && ctx->rank == 0 && obj) {
        char *s = cJSON_PrintUnformatted(obj);
        if (s) {
            fflush(stdout);
            printf("%s\n", s);
            fflush(stdout);
            cJSON_free(s);
        }
    }
    cJSON_Delete(obj);
}

mpq_err mpq_cli_main(mpq_ctx *ctx, int argc, char **argv) {
    mpq_cli cli;
    global_opts g;
    const mpq_command *cmd = NULL;
    MPQ_CALL(mpq_cli_register_registries(ctx));
    MPQ_CALL(parse(ctx, argc, argv, &cli, &g, &cmd));
    if (g.version) {
        /* the BLAS kernels in use: another CPU kind can take other kernels,
         * whose last bits can change the learned rounding's codes */
        if (ctx->rank == 0)
            printf("mpquant %s (commit %s, %s build)\nBLAS: %s\n", MPQ_VERSION, MPQ_GIT_COMMIT,
                   MPQ_BUILD_TYPE, openblas_get_config());
        return MPQ_OK;
    }
    if (g.help || !cmd) {
        print_help(ctx, cmd);
        MPQ_CHECK(g.help, MPQ_ERR_ARG, "no command given (see mpquant --help)");
        return MPQ_OK;
    }
    if (g.quiet)
        mpq_log_set_level(ctx, MPQ_LOG_WARN);
    if (g.log_level) {
        mpq_log_level lvl;
        MPQ_CHECK(mpq_log_level_parse(g.log_level, &lvl) == 0, MPQ_ERR_ARG,
                  "--log-level: '%s' is not one of error, warn, info, debug, trace", g.log_level);
        mpq_log_set_level(ctx, lvl);
    }
    if (g.all_ranks)
        mpq_log_set_all_ranks(ctx, 1);
    /* The event log opens once the files it must not replace are known:
     * with the configuration for commands that load one, else now. */
    event_log_arg = g.event_log;
    event_log_settled = 0;
    mpq_err err = MPQ_OK;
    if (cli.npos < cmd->min_pos || cli.npos > cmd->max_pos)
        err = MPQ_ERROR(MPQ_ERR_ARG, "%s: expected %s (see mpquant %s --help)", cmd->name,
                        cmd->args, cmd->name);
    else if (!cmd->loads_config && g.event_log)
        err = open_event_log(ctx, &cli, NULL, g.event_log, "--event-log");
    if (err == MPQ_OK)
        err = cmd->run(ctx, &cli);
    MPQ_CALL(settle_event_log(ctx, &cli, mpq_agree(ctx, err)));
    return MPQ_OK;
}
