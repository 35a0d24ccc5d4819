/* io_idx.c: IDX files (see mpq_idx.h). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpq_infile.h"
#include "mpq_ctx.h"
#include "mpq_idx.h"

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

mpq_err mpq_idx_open(mpq_ctx *ctx, const char *path, mpq_idx **out) {
    mpq_err err = MPQ_OK;
    mpq_idx *x = NULL;
    int fd = -1;
    *out = NULL;
    MPQ_ALLOC_TRY(x, 1);
    x->map_base = MAP_FAILED;
    MPQ_TRY(mpq_strdup(ctx, path, &x->path));
    MPQ_TRY(mpq_infile_open(ctx, path, NULL, &fd));
    struct stat st;
    MPQ_ENSURE(fstat(fd, &st) == 0 && S_ISREG(st.st_mode), MPQ_ERR_IO, "%s: not a regular file",
               path);
    int64_t size = (int64_t)st.st_size;
    MPQ_ENSURE(size >= 8, MPQ_ERR_FORMAT, "%s: truncated: %lld bytes, no IDX header", path,
               (long long)size);
    x->map_base = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    MPQ_ENSURE(x->map_base != MAP_FAILED, MPQ_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    x->map_size = (size_t)size;
    const unsigned char *p = x->map_base;
    uint32_t magic = be32(p);
    MPQ_ENSURE((magic >> 8) == 0x08, MPQ_ERR_FORMAT,
               "%s: magic 0x%08x is not an unsigned-byte IDX file (expected 0x000008NN)", path,
               (unsigned)magic);
    int ndim = (int)(magic & 0xff);
    MPQ_ENSURE(ndim >= 1 && ndim <= MPQ_IDX_MAXDIM, MPQ_ERR_FORMAT,
               "%s: magic 0x%08x announces %d dimensions (1 to %d supported)", path,
               (unsigned)magic, ndim, MPQ_IDX_MAXDIM);
    int64_t hdr = 4 + 4 * (int64_t)ndim;
    MPQ_ENSURE(size >= hdr, MPQ_ERR_FORMAT, "%s: truncated inside the header (%lld bytes)", path,
               (long long)size);
    x->ndim = ndim;
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        x->dims[d] = be32(p + 4 + 4 * d);
        MPQ_ENSURE(x->dims[d] <= INT32_MAX, MPQ_ERR_FORMAT, "%s: dimension %d = %lld is too large",
                   path, d, (long long)x->dims[d]);
        MPQ_TRY(mpq_mul64(ctx, numel, x->dims[d], "IDX size", &numel));
    }
    MPQ_ENSURE(numel == size - hdr, MPQ_ERR_FORMAT,
               "%s: %s: the dimensions imply %lld data bytes, the file has %lld", path,
               numel > size - hdr ? "truncated" : "trailing bytes", (long long)numel,
               (long long)(size - hdr));
    x->numel = numel;
    x->data = p + hdr;
    *out = x;
    x = NULL;
cleanup:
    if (fd >= 0)
        close(fd);
    mpq_idx_close(&x);
    return err;
}

mpq_err mpq_idx_open_images(mpq_ctx *ctx, const char *path, mpq_idx **out) {
    mpq_idx *x = NULL;
    MPQ_CALL(mpq_idx_open(ctx, path, &x));
    if (x->ndim != 3) {
        int nd = x->ndim;
        mpq_idx_close(&x);
        return MPQ_ERROR(MPQ_ERR_FORMAT,
                         "%s: an image file has 3 dimensions [n][rows][cols] (magic 0x00000803), "
                         "this one has %d",
                         path, nd);
    }
    *out = x;
    return MPQ_OK;
}

mpq_err mpq_idx_open_labels(mpq_ctx *ctx, const char *path, int n_classes, mpq_idx **out) {
    mpq_idx *x = NULL;
    mpq_err err = MPQ_OK;
    MPQ_CALL(mpq_idx_open(ctx, path, &x));
    MPQ_ENSURE(x->ndim == 1, MPQ_ERR_FORMAT,
               "%s: a label file has 1 dimension [n] (magic 0x00000801), this one has %d", path,
               x->ndim);
    for (int64_t i = 0; n_classes > 0 && i < x->numel; i++)
        MPQ_ENSURE(x->data[i] < n_classes, MPQ_ERR_FORMAT, "%s: label %lld is %u, outside [0, %d)",
                   path, (long long)i, (unsigned)x->data[i], n_classes);
    *out = x;
    x = NULL;
cleanup:
    mpq_idx_close(&x);
    return err;
}

void mpq_idx_close(mpq_idx **px) {
    if (!px || !*px)
        return;
    mpq_idx *x = *px;
    if (x->map_base && x->map_base != MAP_FAILED)
        munmap((void *)x->map_base, x->map_size);
    mpq_free(x->path);
    mpq_free(x);
    *px = NULL;
}
