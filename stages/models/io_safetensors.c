/* io_safetensors.c: safetensors checkpoints (in progress). */
#include "io_internal.h"

static int st_probe(const char *path, int is_dir, const unsigned char *head, size_t nhead) {
    return 0;
}

static mpq_err st_open(mpq_ctx *ctx, mpq_model *m, const char *path) {
    return MPQ_ERROR(MPQ_ERR_FORMAT, "%s: safetensors reader not implemented yet", path);
}

const mpq_model_format mpq_format_safetensors = {
    .name = "safetensors",
    .probe = st_probe,
    .open = st_open,
};
