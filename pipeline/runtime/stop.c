/* stop.c: recording SIGTERM / SIGUSR1 and agreeing on a stop (mpq_stop.h). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_stop.h"

static volatile sig_atomic_t pending;

static void on_signal(int sig) {
    if (pending == SIGTERM && sig == SIGTERM) {
        /* a second SIGTERM: the default action, now */
        signal(SIGTERM, SIG_DFL);
        raise(SIGTERM);
        return;
    }
    pending = sig;
}

void mpq_stop_arm(int term) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    if (term)
        sigaction(SIGTERM, &sa, NULL);
}

void mpq_stop_disarm(void) {
    signal(SIGTERM, SIG_DFL);
}

int mpq_stop_pending(void) {
    return (int)pending;
}

mpq_err mpq_stop_check(mpq_ctx *ctx, int64_t block, int *sig) {
    const char *hook = getenv("MPQ_TEST_SIGNAL");
    if (hook && hook[0] && strtoll(hook, NULL, 10) == block && ctx->rank == ctx->size - 1)
        raise(SIGUSR1);
    int local = (int)pending, any = local;
    if (ctx->comm != MPI_COMM_NULL)
        MPQ_CHECK(MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, ctx->comm) == MPI_SUCCESS,
                  MPQ_ERR_MPI, "cannot agree on a stop request");
    *sig = any;
    return MPQ_OK;
}
