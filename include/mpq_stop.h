/* mpq_stop.h: stopping a long run at a safe point when the job is asked to
 * end (Slurm's --signal warning, scancel, the time limit).
 *
 * mpq_stop_arm installs a handler for SIGUSR1 (and, with term, SIGTERM)
 * that only records the signal. main installs it for SIGUSR1 before any
 * command runs, so that the warning a batch script passes on never kills
 * mpquant (a command that cannot stop early runs on); `mpquant run` with an
 * output path adds SIGTERM. The run then calls mpq_stop_check at each block boundary,
 * after the block is safely on disk: when any rank has received one of the
 * signals, every rank returns MPQ_ERR_STOPPED together, which main turns
 * into the exit status MPQ_EXIT_RESUMABLE. Running the same command again
 * resumes (mpq_run.h). A second SIGTERM while a stop is pending ends the
 * process at once (the default action), so a user can still interrupt a
 * block that takes long.
 *
 * Test hook: MPQ_TEST_SIGNAL="BLOCK" makes the highest rank raise SIGUSR1
 * when mpq_stop_check is called for that block (zero-based), as if the
 * signal had arrived while the block was computed.
 */
#ifndef MPQ_STOP_H
#define MPQ_STOP_H

#include <stdint.h>

#include "mpq_ctx.h"

/* Exit status of a run stopped at a block boundary, its finished blocks
 * kept: "stopped, resumable" (EX_TEMPFAIL of sysexits.h). */
#define MPQ_EXIT_RESUMABLE 75

/* Local. Installs the handler for SIGUSR1, and for SIGTERM when term is
 * set (idempotent). */
void mpq_stop_arm(int term);
/* Local. Restores the default action of SIGTERM (SIGUSR1 stays recorded). */
void mpq_stop_disarm(void);
/* Local. The signal received since mpq_stop_arm, or 0. */
int mpq_stop_pending(void);

/* Collective. *sig = the signal any rank received (the largest number when
 * several differ), or 0. `block` is the block just finished (for the test
 * hook). */
mpq_err mpq_stop_check(mpq_ctx *ctx, int64_t block, int *sig);

#endif
