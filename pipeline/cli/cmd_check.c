/* cmd_check.c: `mpquant check CONFIG`: parse, validate and print the
 * effective configuration. */
#include <cjson/cJSON.h>
#include <stdio.h>

#include "mpq_coll.h"
#include "mpq_cli.h"
#include "mpq_run.h"
#include "mpq_session.h"

mpq_err mpq_cmd_check(mpq_ctx *ctx, const mpq_cli *cli) {
    if (mpq_cli_opt(cli, "keys")) {
        if (ctx->rank == 0)
            mpq_config_print_reference(stdout);
        return MPQ_OK;
    }
    MPQ_CHECK(cli->npos == 1, MPQ_ERR_ARG, "check: expected a configuration file (or --keys)");
    mpq_config *cfg = NULL;
    MPQ_CALL(mpq_cli_load_config(ctx, cli, cli->pos[0], &cfg));
    mpq_err err = MPQ_OK;
    /* What `run` checks before loading anything; a sweep configuration
     * (a sweep section with points) only needs what run and sweep share. */
    const int sweep = cfg->sweep.budgets.n > 0 || cfg->sweep.methods.n > 0 ||
                      cfg->sweep.compare.n > 0 || cfg->sweep.output_dir[0];
    if (ctx->rank == 0)
        err = sweep ? mpq_session_check_candidates(ctx, cfg) : mpq_run_check(ctx, cfg);
    if (err == MPQ_OK && !mpq_cli_opt(cli, "no-paths") && ctx->rank == 0)
        err = mpq_config_check_paths(ctx, cfg);
    err = mpq_agree(ctx, err);
    if (err == MPQ_OK) {
        if (ctx->rank == 0) {
            printf("# effective configuration of %s (%d override%s)\n", cfg->source, cli->n_over,
                   cli->n_over == 1 ? "" : "s");
            mpq_config_print(cfg, stdout);
            fflush(stdout);
        }
        MPQ_INFO("%s: configuration is valid", cfg->source);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "command", "check");
        cJSON_AddStringToObject(o, "config", cfg->source);
        cJSON_AddBoolToObject(o, "valid", 1);
        cJSON_AddItemToObject(o, "effective", mpq_config_to_json(cfg));
        mpq_cli_emit_json(ctx, cli, o);
    }
    mpq_config_destroy(&cfg);
    return err;
}
