/* registries.c: which registry gives the allowed values of each
 * configuration key that names a variant. The configuration layer lies
 * below the stages that own these registries, so the program hands them
 * over at start-up (mpq_config_set_registries). */
#include "mpq_calibrate.h"
#include "mpq_cli.h"
#include "mpq_config.h"
#include "mpq_family.h"
#include "mpq_hessian.h"
#include "mpq_importance.h"
#include "mpq_model_format.h"
#include "mpq_robust.h"
#include "mpq_round.h"
#include "mpq_sweep.h"

static const mpq_config_registry key_registries[] = {
    {"model.format", &mpq_model_format_reg},
    {"model.family", &mpq_family_reg},
    {"model.cnn", &mpq_cnn_op_reg},
    {"hessian.scalapack", &mpq_hfactor_policy_reg},
    {"quant.method", &mpq_round_method_reg},
    {"calibration.source", &mpq_calib_source_reg},
    {"robust.nonfinite", &mpq_nonfinite_policy_reg},
    {"importance.method", &mpq_importance_reg},
    {"sweep.metric", &mpq_sweep_metric_reg}, /* one key per line */
};

mpq_err mpq_cli_register_registries(mpq_ctx *ctx) {
    MPQ_CALL(mpq_config_set_registries(ctx, key_registries,
                                       (int)(sizeof key_registries / sizeof key_registries[0])));
    return MPQ_OK;
}
