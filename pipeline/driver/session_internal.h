/* session_internal.h: what the sources of the session (session*.c) share.
 * Not a public interface. */
#ifndef MPQ_SESSION_INTERNAL_H
#define MPQ_SESSION_INTERNAL_H

#include "mpq_config.h"
#include "mpq_session.h"

/* Local (rank 0), before any work (session_files.c). No output of opts may
 * be an input the configuration names or another output (same inode or
 * same canonical path), and with opts->checkpoint the checkpoint must be
 * writable: its directory exists and it does not exist unless
 * output.overwrite (checked again when it is written: it may appear
 * meanwhile). */
mpq_err mpq_session_check_files(mpq_ctx *ctx, const mpq_config *cfg, const mpq_session_opts *opts);

#endif
