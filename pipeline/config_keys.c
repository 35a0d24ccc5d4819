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

    /* hessian */
    {"hessian.damping", MPQ_KEY_FLOAT, OFF(hessian.damping), "0.01", 0.0, 1e6, NULL,
     "relative damping: damping * mean(diag H) is added to the diagonal before factorising"},
    {"hessian.damping_max", MPQ_KEY_FLOAT, OFF(hessian.damping_max), "1", 0.0, 1e6, NULL,
     "a failed Cholesky is retried with damping x10 while it stays <= this; then an error"},
    {"hessian.scalapack", MPQ_KEY_ENUM, OFF(hessian.scalapack), "auto", NOLIM, "auto|always|never",
     "factorise H with ScaLAPACK over a process grid (auto: from scalapack_min_width on)"},
    {"hessian.scalapack_min_width", MPQ_KEY_INT, OFF(hessian.scalapack_min_width), "4096", 1, 1e9,
     NULL, "auto mode: layers at least this wide use ScaLAPACK, narrower ones LAPACK"},
    {"hessian.block_size", MPQ_KEY_INT, OFF(hessian.block_size), "64", 1, 4096, NULL,
     "ScaLAPACK block-cyclic block size"},
    {"hessian.chunk_samples", MPQ_KEY_INT, OFF(hessian.chunk_samples), "8", 1, 1e9, NULL,
     "calibration samples per chunk: the unit of the exact, rank-independent H reduction"},
    {"hessian.bound_log2", MPQ_KEY_INT, OFF(hessian.bound_log2), "16", -60, 60, NULL,
     "activations must satisfy |x| <= 2^bound_log2 (fixes the fixed-point grid of H)"},
    {"hessian.save", MPQ_KEY_OUTPATH, OFF(hessian.save), "", NOLIM, NULL,
     "write the Hessian statistics to this HDF5 file (\"\" = do not save)"},
    {"hessian.load", MPQ_KEY_PATH, OFF(hessian.load), "", NOLIM, NULL,
     "read Hessian statistics from this HDF5 file instead of measuring them (\"\" = measure)"},

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
