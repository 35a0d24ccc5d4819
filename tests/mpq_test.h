/* mpq_test.h: helpers shared by mpquant's C tests (cmocka). */
#ifndef MPQ_TEST_H
#define MPQ_TEST_H

/* cmocka needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mpq_ctx.h"

/* Exit status ctest treats as "skipped" (SKIP_RETURN_CODE). */
#define MPQ_TEST_SKIP 77

/* Path of `rel` under the shared data directory ($MPQ_SHARED_DIR, default
 * ../shared of the sources), written into buf. If the file is missing the
 * test is skipped (exit 77), except under CI=true, where it fails loudly
 * naming the path. */
const char *mpq_test_shared(const char *rel, char *buf, size_t len);

/* MPI_Init + a context on MPI_COMM_WORLD (tests are drivers, so they may
 * name it). Logs at warn level unless MPQ_TEST_VERBOSE is set. */
mpq_ctx *mpq_test_init(int *argc, char ***argv);
/* Destroys the context, finalizes MPI and returns `failures` as an exit code
 * that is identical on all ranks (non-zero if any rank failed). */
int mpq_test_finish(mpq_ctx **ctx, int failures);

/* Fails the current cmocka test with the context's error when e != MPQ_OK. */
#define MPQ_ASSERT_OK(ctx, e)                                                                      \
    do {                                                                                           \
        mpq_err mpq_t_e_ = (e);                                                                    \
        if (mpq_t_e_ != MPQ_OK)                                                                    \
            fail_msg("%s: %s\n%s", mpq_err_name(mpq_t_e_), (ctx)->err_msg, (ctx)->err_trace);      \
    } while (0)

#endif
