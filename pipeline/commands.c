/* commands.c: the registry of `mpquant` subcommands (STYLE.md rule 9). */
#include "mpq_cli.h"

mpq_err mpq_cmd_check(mpq_ctx *ctx, const mpq_cli *cli);
mpq_err mpq_cmd_inspect(mpq_ctx *ctx, const mpq_cli *cli);

const mpq_command mpq_commands[] = {
    {
        .name = "check",
        .args = "CONFIG | --keys",
        .summary = "parse and validate a configuration, print the effective configuration",
        .help = "  --keys        print the reference of every configuration key (Markdown)\n"
                "  --no-paths    do not check that input files exist\n",
        .options = "keys no-paths",
        .min_pos = 0,
        .max_pos = 1,
        .run = mpq_cmd_check,
    },
    {
        .name = "inspect",
        .args = "FILE",
        .summary = "list a model's tensors, dtypes, shapes, parameter count and architecture",
        .help = "  FILE             llama2.c .bin, .safetensors, a sharded model's directory or\n"
                "                   model.safetensors.index.json, or an IDX data file\n"
                "  --format=NAME    auto (default), llama2c, safetensors or idx\n",
        .options = "format=",
        .min_pos = 1,
        .max_pos = 1,
        .run = mpq_cmd_inspect,
    },
};

const int mpq_ncommands = (int)(sizeof mpq_commands / sizeof mpq_commands[0]);
