/* config_keys.c: every configuration key, its type, default, range and
 * documentation. This table is the single place where defaults are defined;
 * `mpquant check --keys` prints it as the reference in docs/. */
#include <float.h>
#include <stddef.h>

#include "mpq_config.h"

#define OFF(field) offsetof(mpq_config, field)
#define NOLIM      0.0, 0.0

const mpq_key_spec mpq_config_keys[] = {
    /* model */
    {"model.path", MPQ_KEY_PATH, OFF(model.path),
     "${MPQ_SHARED_DIR}/data/models/stories260K/stories260K.bin", NOLIM, NULL,
     "model file (llama2.c .bin, .safetensors) or a directory holding a sharded safetensors model"},
    {"model.format", MPQ_KEY_ENUM, OFF(model.format), "auto", NOLIM, "auto|llama2c|safetensors",
     "checkpoint format; auto detects it from the file name and contents"},
    {"model.tokenizer", MPQ_KEY_PATH, OFF(model.tokenizer),
     "${MPQ_SHARED_DIR}/data/models/stories260K/tok512.bin", NOLIM, NULL,
     "llama2.c tokenizer.bin for language models (\"\" for none)"},

    /* log */
    {"log.level", MPQ_KEY_ENUM, OFF(log.level), "info", NOLIM, "error|warn|info|debug|trace",
     "least severe log level printed"},
    {"log.all_ranks", MPQ_KEY_BOOL, OFF(log.all_ranks), "false", NOLIM, NULL,
     "print log lines on every rank with a [rank/size] prefix (default: rank 0 only)"},
    {"log.event_log", MPQ_KEY_OUTPATH, OFF(log.event_log), "", NOLIM, NULL,
     "append machine-readable JSON-lines events (stages, progress, warnings, errors) to this file"},
    {"log.progress_interval", MPQ_KEY_FLOAT, OFF(log.progress_interval), "5", 0.1, 3600.0, NULL,
     "seconds between progress lines of long loops"},
};

const int mpq_config_nkeys = (int)(sizeof mpq_config_keys / sizeof mpq_config_keys[0]);
