/* limits.c: start-up checks of the process's limits. An address-space limit
 * (ulimit -v) too small for OpenBLAS's work buffers does not make a BLAS
 * call fail: OpenBLAS retries its buffer allocation forever, and the job
 * hangs. So the buffers are allocated first, while the address space is
 * emptiest, and only when room for them is proven. */
#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "mpq_ctx.h"

/* Address space OpenBLAS takes at its first call, per thread (128 MiB
 * measured with OpenBLAS 0.3.21), with a margin. */
#define MPQ_AS_PER_BLAS_THREAD ((size_t)160 << 20)

/* Bytes of address space in use, from /proc/self/statm (pages); 0 when
 * unknown. */
static size_t vm_in_use(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    return (size_t)pages * 4096u;
}

mpq_err mpq_check_limits(mpq_ctx *ctx) {
    struct rlimit rl;
    const int threads = openblas_get_num_threads();
    const size_t need = MPQ_AS_PER_BLAS_THREAD * (size_t)(threads > 1 ? threads : 1);
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        /* PROT_NONE mappings count against RLIMIT_AS like any other. */
        void *p = mmap(NULL, need, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            return MPQ_ERROR(MPQ_ERR_NOMEM,
                             "the address-space limit (ulimit -v) is %.0f MiB and %.0f MiB are in "
                             "use after start-up: at least %.0f MiB more are needed for the BLAS "
                             "buffers before any work; raise or remove the limit",
                             (double)rl.rlim_cur / 1048576.0, (double)vm_in_use() / 1048576.0,
                             (double)need / 1048576.0);
        munmap(p, need);
    }
    /* Warm-up: OpenBLAS allocates its buffers on the first calls and keeps
     * them, so later calls need no new address space. */
    double a[64 * 64], c[64 * 64];
    for (int i = 0; i < 64 * 64; i++)
        a[i] = (double)(i % 7) - 3.0;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 64, 64, 64, 1.0, a, 64, a, 64, 0.0, c, 64);
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, 64, 64, 1.0, a, 64, 0.0, c, 64);
    return MPQ_OK;
}
