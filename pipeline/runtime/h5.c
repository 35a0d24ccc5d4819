/* h5.c: HDF5 error wrappers (see mpq_h5.h). */
#define _GNU_SOURCE /* memfd_create */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpq_ctx.h"
#include "mpq_h5.h"

void mpq_h5_quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* Space reservation and abandoning: see mpq_h5.h for why. */

/* Every descriptor this process holds on `file` (the sec2 driver's, the
 * MPI-IO library's) is pointed at one anonymous in-memory file, so that
 * whatever the close still writes goes to memory. */
static void redirect_to_memory(hid_t file) {
    char name[4096];
    struct stat target, st;
    if (H5Fget_name(file, name, sizeof name) <= 0 || stat(name, &target) != 0)
        return;
    int mem = memfd_create("mpquant-abandoned-hdf5", MFD_CLOEXEC);
    DIR *dir = opendir("/proc/self/fd");
    if (mem >= 0 && dir) {
        const struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            char *end = NULL;
            long fd = strtol(e->d_name, &end, 10);
            if (end == e->d_name || *end || fd == dirfd(dir) || fd == mem)
                continue;
            if (fstat((int)fd, &st) == 0 && st.st_dev == target.st_dev &&
                st.st_ino == target.st_ino)
                dup2(mem, (int)fd);
        }
    }
    if (dir)
        closedir(dir);
    if (mem >= 0)
        close(mem);
}

void mpq_h5_discard(int64_t file) {
    if (file < 0)
        return;
    redirect_to_memory((hid_t)file);
    H5Fclose((hid_t)file);
}

/* Room reserved past the end of a dataset for the metadata objects that
 * HDF5 allocates after it (object headers, group heaps: a few KiB). */
#define RESERVE_MARGIN ((uint64_t)64 << 10)

/* The end of the file's allocated space as far as it can be known: with a
 * dataset, the end of its raw data plus RESERVE_MARGIN (parallel HDF5
 * allocates contiguous datasets when they are created); otherwise the
 * file's size, which is max(end of file, end of allocation) and known to
 * the sec2 driver only (H5Fget_eoa wants a SWMR driver, and the MPI-IO
 * driver forgets the end of file after a write). 0: unknown. */
static uint64_t known_end(hid_t file, hid_t dset) {
    if (dset >= 0) {
        haddr_t off = H5Dget_offset(dset);
        if (off != HADDR_UNDEF)
            return (uint64_t)off + (uint64_t)H5Dget_storage_size(dset) + RESERVE_MARGIN;
    }
    hsize_t size = 0;
    return H5Fget_filesize(file, &size) >= 0 ? (uint64_t)size : 0;
}

/* Allocates the file's blocks from `from` to `end` (growing the file; the
 * final flush truncates it to its end of allocation). Returns 0 or an
 * errno value; a file system without fallocate counts as success (nothing
 * can be reserved there). */
static int reserve_range(hid_t file, uint64_t from, uint64_t end) {
    char name[4096];
    if (end <= from || H5Fget_name(file, name, sizeof name) <= 0)
        return 0;
    int rc = 0, fd = open(name, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    if (fallocate(fd, 0, (off_t)from, (off_t)(end - from)) != 0 && errno != EOPNOTSUPP &&
        errno != ENOSYS)
        rc = errno;
    close(fd);
    return rc;
}

mpq_err mpq_h5_reserve(mpq_ctx *ctx, int64_t file, int64_t dset, int collective, uint64_t *reserved,
                       const char *what) {
    int64_t res[2] = {0, (int64_t)*reserved};
    if (!collective || ctx->rank == 0) {
        uint64_t end = known_end((hid_t)file, (hid_t)dset);
        res[0] = reserve_range((hid_t)file, *reserved, end);
        res[1] = (int64_t)(end > *reserved ? end : *reserved);
    }
    if (collective && ctx->comm != MPI_COMM_NULL && ctx->size > 1)
        MPQ_MPI(MPI_Bcast(res, 2, MPI_INT64_T, 0, ctx->comm));
    MPQ_CHECK(res[0] == 0, MPQ_ERR_IO, "%s: no room on disk for the file's %lld bytes: %s",
              what ? what : "HDF5 file", (long long)res[1], strerror((int)res[0]));
    *reserved = (uint64_t)res[1];
    return MPQ_OK;
}

mpq_err mpq_h5_close_written(mpq_ctx *ctx, int64_t file, int collective, uint64_t *reserved,
                             const char *what) {
    uint64_t none = 0;
    mpq_err err = mpq_h5_reserve(ctx, file, -1, collective, reserved ? reserved : &none, what);
    if (err != MPQ_OK) {
        mpq_h5_discard(file);
        return err;
    }
    herr_t rc = H5Fflush((hid_t)file, H5F_SCOPE_GLOBAL);
    if (rc < 0) /* not expected with the space reserved; the file cannot be closed now */
        return mpq_h5_check(ctx, rc, what, "H5Fflush", __FILE__, __LINE__, __func__);
    return mpq_h5_check(ctx, H5Fclose((hid_t)file), what, "H5Fclose", __FILE__, __LINE__, __func__);
}

typedef struct h5_msgbuf {
    char text[1024];
    size_t len;
    int n;
} h5_msgbuf;

/* H5Ewalk2 callback: appends "function: description" of one stack entry. */
static herr_t h5_walk(unsigned n, const H5E_error2_t *e, void *ud) {
    (void)n;
    h5_msgbuf *b = ud;
    if (b->n >= 4 || b->len + 8 >= sizeof b->text)
        return 0;
    int w = snprintf(b->text + b->len, sizeof b->text - b->len, "%s%s: %s", b->n ? "; " : "",
                     e->func_name ? e->func_name : "?", e->desc ? e->desc : "?");
    if (w > 0)
        b->len += (size_t)w < sizeof b->text - b->len ? (size_t)w : sizeof b->text - b->len - 1;
    b->n++;
    return 0;
}

void mpq_h5_error_text(char *buf, size_t len) {
    h5_msgbuf b = {.len = 0, .n = 0};
    b.text[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_walk, &b);
    H5Eclear2(H5E_DEFAULT);
    if (len)
        snprintf(buf, len, "%s", b.n ? b.text : "no error message on the HDF5 stack");
}

mpq_err mpq_h5_check(mpq_ctx *ctx, int64_t rc, const char *what, const char *call, const char *file,
                     int line, const char *func) {
    if (rc >= 0)
        return MPQ_OK;
    /* Innermost first: the deepest entry usually says what is wrong with
     * the file ("file signature not found", "unable to open file"). */
    char text[1024];
    mpq_h5_error_text(text, sizeof text);
    return mpq_err_raise(ctx, MPQ_ERR_LIB, file, line, func, "%s%s%s failed: HDF5: %s",
                         what ? what : "", what ? ": " : "", call, text);
}

/* ---- links ------------------------------------------------------------------ */

typedef struct link_scan {
    char name[256];
    H5L_type_t type;
    int found;
} link_scan;

static herr_t link_visit(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)g;
    link_scan *s = op;
    if (info->type == H5L_TYPE_HARD)
        return 0;
    snprintf(s->name, sizeof s->name, "%s", name);
    s->type = info->type;
    s->found = 1;
    return 1; /* stop at the first one */
}

mpq_err mpq_h5_only_hard_links(mpq_ctx *ctx, int64_t file, const char *path) {
    link_scan s = {.found = 0};
    herr_t rc = H5Lvisit((hid_t)file, H5_INDEX_NAME, H5_ITER_NATIVE, link_visit, &s);
    MPQ_CHECK(rc >= 0, MPQ_ERR_FORMAT, "%s: cannot list the file's links (damaged file?)", path);
    MPQ_CHECK(!s.found, MPQ_ERR_FORMAT,
              "%s: '/%s' is %s; refusing to follow links out of the file's own objects", path,
              s.name,
              s.type == H5L_TYPE_EXTERNAL ? "an external link to another file"
              : s.type == H5L_TYPE_SOFT   ? "a soft link"
                                          : "a user-defined link");
    return MPQ_OK;
}
