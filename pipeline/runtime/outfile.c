/* outfile.c: atomic output files (temporary name, fsync, rename). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "mpq_coll.h"
#include "mpq_infile.h"
#include "mpq_outfile.h"

/* Splits dest into its directory ("." when it has no slash) and its last
 * component. Fails when dest is empty or ends with a slash. */
static mpq_err split_path(mpq_ctx *ctx, const char *dest, char dir[PATH_MAX], char name[PATH_MAX]) {
    MPQ_CHECK(dest && dest[0], MPQ_ERR_ARG, "output path is empty");
    size_t n = strlen(dest);
    MPQ_CHECK(n < PATH_MAX, MPQ_ERR_ARG, "output path '%.64s...' is longer than %d bytes", dest,
              PATH_MAX - 1);
    MPQ_CHECK(dest[n - 1] != '/', MPQ_ERR_IO, "output '%s' names a directory, not a file", dest);
    const char *slash = strrchr(dest, '/');
    if (!slash) {
        snprintf(dir, PATH_MAX, ".");
        snprintf(name, PATH_MAX, "%s", dest);
    } else if (slash == dest) {
        snprintf(dir, PATH_MAX, "/");
        snprintf(name, PATH_MAX, "%s", slash + 1);
    } else {
        snprintf(dir, PATH_MAX, "%.*s", (int)(slash - dest), dest);
        snprintf(name, PATH_MAX, "%s", slash + 1);
    }
    MPQ_CHECK(strcmp(name, ".") != 0 && strcmp(name, "..") != 0, MPQ_ERR_IO,
              "output '%s' names a directory, not a file", dest);
    return MPQ_OK;
}

/* The canonical form of path: realpath when it resolves, else its
 * directory resolved and the last component appended as given. 0 when
 * neither works (the directory is missing too). */
static int canonical(const char *path, char out[2 * PATH_MAX + 2]) {
    char r[PATH_MAX];
    if (realpath(path, r)) {
        snprintf(out, 2 * PATH_MAX + 2, "%s", r);
        return 1;
    }
    char dir[PATH_MAX], name[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (strlen(path) >= PATH_MAX || (slash && slash[1] == '\0'))
        return 0;
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    snprintf(name, sizeof name, "%s", slash ? slash + 1 : path);
    if (!realpath(dir, r))
        return 0;
    snprintf(out, 2 * PATH_MAX + 2, "%s%s%s", r, strcmp(r, "/") ? "/" : "", name);
    return 1;
}

int mpq_outfile_same_file(const char *a, const char *b) {
    if (!a || !a[0] || !b || !b[0])
        return 0;
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char ca[2 * PATH_MAX + 2], cb[2 * PATH_MAX + 2];
    return canonical(a, ca) && canonical(b, cb) && strcmp(ca, cb) == 0;
}

mpq_err mpq_outfile_check(mpq_ctx *ctx, const char *dest, const mpq_outfile_opts *opts) {
    static const mpq_outfile_opts none = {0, NULL, 0};
    if (!opts)
        opts = &none;
    char dir[PATH_MAX], name[PATH_MAX];
    MPQ_CALL(split_path(ctx, dest, dir, name));

    struct stat st;
    if (stat(dir, &st) != 0)
        return MPQ_ERROR(MPQ_ERR_IO, "cannot write output '%s': directory '%s' %s", dest, dir,
                         errno == ENOENT ? "does not exist" : strerror(errno));
    MPQ_CHECK(S_ISDIR(st.st_mode), MPQ_ERR_IO, "cannot write output '%s': '%s' is not a directory",
              dest, dir);
    MPQ_CHECK(access(dir, W_OK | X_OK) == 0, MPQ_ERR_IO,
              "cannot write output '%s': directory '%s' is not writable (%s)", dest, dir,
              strerror(errno));

    struct stat ds;
    int exists = lstat(dest, &ds) == 0;
    int resolves = stat(dest, &ds) == 0; /* follows a symlink */
    MPQ_CHECK(!resolves || !S_ISDIR(ds.st_mode), MPQ_ERR_IO,
              "cannot write output '%s': it is a directory", dest);
    /* Only a regular file may be replaced: a rename over /dev/null, a FIFO
     * or a socket would destroy a system file. A symlink is replaced as a
     * link only when it points to a regular file. */
    MPQ_CHECK(!resolves || S_ISREG(ds.st_mode), MPQ_ERR_IO,
              "cannot write output '%s': it is %s, not a regular file; refusing to replace it",
              dest, mpq_file_kind(ds.st_mode));

    for (int64_t i = 0; i < opts->n_inputs; i++) {
        const char *in = opts->inputs[i];
        MPQ_CHECK(!mpq_outfile_same_file(dest, in), MPQ_ERR_ARG,
                  "output '%s' is the same file as input '%s'; refusing to overwrite an input",
                  dest, in);
    }
    MPQ_CHECK(!exists || opts->overwrite, MPQ_ERR_IO,
              "output '%s' already exists (set overwrite to replace it)", dest);
    return MPQ_OK;
}

/* Creates the temporary file exclusively; returns its path and open fd. */
static mpq_err create_temp(mpq_ctx *ctx, const char *dest, char **tmp, int *fd) {
    char dir[PATH_MAX], name[PATH_MAX];
    MPQ_CALL(split_path(ctx, dest, dir, name));
    size_t len = strlen(dir) + strlen(name) + 64;
    MPQ_CALL(mpq_malloc(ctx, (int64_t)len, 1, (void **)tmp));
    for (int attempt = 0; attempt < 16; attempt++) {
        unsigned char rnd[8];
        if (RAND_bytes(rnd, sizeof rnd) != 1) {
            MPQ_FREE(*tmp);
            return MPQ_ERROR(MPQ_ERR_LIB, "OpenSSL RAND_bytes failed naming a temporary for '%s'",
                             dest);
        }
        snprintf(*tmp, len, "%s/.%s.tmp.%ld.%02x%02x%02x%02x%02x%02x%02x%02x", dir, name,
                 (long)getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
        *fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (*fd >= 0)
            return MPQ_OK;
        if (errno != EEXIST)
            break;
    }
    mpq_err e = MPQ_ERROR(MPQ_ERR_IO, "cannot create temporary file '%s' for output '%s': %s", *tmp,
                          dest, strerror(errno));
    MPQ_FREE(*tmp);
    return e;
}

static void outfile_free(mpq_outfile **f) {
    if (!f || !*f)
        return;
    if ((*f)->fd >= 0)
        close((*f)->fd);
    mpq_free((*f)->dest);
    mpq_free((*f)->tmp);
    mpq_free(*f);
    *f = NULL;
}

mpq_err mpq_outfile_open(mpq_ctx *ctx, const char *dest, const mpq_outfile_opts *opts,
                         mpq_outfile **out) {
    *out = NULL;
    mpq_err err = MPQ_OK;
    mpq_outfile *f = NULL;
    MPQ_TRY(mpq_outfile_check(ctx, dest, opts));
    MPQ_ALLOC_TRY(f, 1);
    f->fd = -1;
    f->overwrite = opts ? opts->overwrite : 0;
    MPQ_TRY(mpq_strdup(ctx, dest, &f->dest));
    MPQ_TRY(create_temp(ctx, dest, &f->tmp, &f->fd));
    *out = f;
    return MPQ_OK;
cleanup:
    outfile_free(&f);
    return err;
}

mpq_err mpq_outfile_write(mpq_ctx *ctx, mpq_outfile *f, const void *data, size_t len) {
    MPQ_CHECK(f && f->fd >= 0, MPQ_ERR_ARG, "output '%s' is not open for writing",
              f ? f->dest : "(null)");
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(f->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        MPQ_CHECK(n > 0, MPQ_ERR_IO, "writing output '%s' (temporary '%s') failed: %s", f->dest,
                  f->tmp, n < 0 ? strerror(errno) : "no progress");
        p += n;
        len -= (size_t)n;
    }
    return MPQ_OK;
}

/* fsync of a path (opened read-only: Linux allows fsync on it). */
static int fsync_path(const char *path, int flags) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

mpq_err mpq_outfile_commit(mpq_ctx *ctx, mpq_outfile **pf) {
    mpq_outfile *f = *pf;
    *pf = NULL;
    MPQ_CHECK(f, MPQ_ERR_ARG, "commit of an output file that is not open");
    mpq_err err = MPQ_OK;
    char dir[PATH_MAX], name[PATH_MAX];
    MPQ_TRY(split_path(ctx, f->dest, dir, name));
    if (f->fd >= 0) {
        MPQ_ENSURE(fsync(f->fd) == 0, MPQ_ERR_IO, "fsync of '%s' (for output '%s') failed: %s",
                   f->tmp, f->dest, strerror(errno));
        int rc = close(f->fd);
        f->fd = -1;
        MPQ_ENSURE(rc == 0, MPQ_ERR_IO, "close of '%s' (for output '%s') failed: %s", f->tmp,
                   f->dest, strerror(errno));
    } else {
        MPQ_ENSURE(fsync_path(f->tmp, 0) == 0, MPQ_ERR_IO,
                   "fsync of '%s' (for output '%s') failed: %s", f->tmp, f->dest, strerror(errno));
    }
    /* Without overwrite, someone may have created the destination while we
     * wrote; a small window remains between this test and the rename. */
    struct stat st;
    MPQ_ENSURE(f->overwrite || lstat(f->dest, &st) != 0, MPQ_ERR_IO,
               "output '%s' appeared while it was being written (set overwrite to replace it)",
               f->dest);
    /* Checked again: a special file may have taken the name meanwhile. */
    MPQ_ENSURE(stat(f->dest, &st) != 0 || S_ISREG(st.st_mode), MPQ_ERR_IO,
               "output '%s' is %s, not a regular file; refusing to replace it", f->dest,
               mpq_file_kind(st.st_mode));
    MPQ_ENSURE(rename(f->tmp, f->dest) == 0, MPQ_ERR_IO, "cannot rename '%s' to output '%s': %s",
               f->tmp, f->dest, strerror(errno));
    /* The rename is durable once the directory is synced. Some file systems
     * refuse fsync on directories: the file is in place, so only warn. */
    if (fsync_path(dir, O_DIRECTORY) != 0)
        mpq_log_here(ctx, MPQ_LOG_WARN, "fsync of directory '%s' after writing '%s' failed: %s",
                     dir, f->dest, strerror(errno));
    outfile_free(&f);
    return MPQ_OK;
cleanup:
    mpq_outfile_abort(&f);
    return err;
}

void mpq_outfile_abort(mpq_outfile **f) {
    if (!f || !*f)
        return;
    if ((*f)->fd >= 0) {
        close((*f)->fd);
        (*f)->fd = -1;
    }
    if ((*f)->tmp)
        unlink((*f)->tmp);
    outfile_free(f);
}

/* ---- collective ----------------------------------------------------------- */

mpq_err mpq_outfile_open_all(mpq_ctx *ctx, const char *dest, const mpq_outfile_opts *opts,
                             mpq_outfile **out) {
    *out = NULL;
    mpq_err err = MPQ_OK;
    mpq_outfile *f = NULL;
    char *msg = NULL;
    int64_t len = 0;
    if (ctx->rank == 0) {
        err = mpq_outfile_open(ctx, dest, opts, &f);
        if (err == MPQ_OK) {
            /* Rank 0 closes it: the writers (e.g. parallel HDF5) reopen it by
             * name. Message: overwrite flag, then dest NUL tmp NUL. */
            close(f->fd);
            f->fd = -1;
            f->collective = 1;
            size_t nd = strlen(f->dest) + 1, nt = strlen(f->tmp) + 1;
            len = (int64_t)(1 + nd + nt);
            err = mpq_malloc(ctx, len, 1, (void **)&msg);
            if (err == MPQ_OK) {
                msg[0] = (char)(f->overwrite ? 1 : 0);
                memcpy(msg + 1, f->dest, nd);
                memcpy(msg + 1 + nd, f->tmp, nt);
            }
        }
    }
    MPQ_TRY(mpq_agree(ctx, err));
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1) {
        MPQ_TRY(mpq_bcast_bytes(ctx, 0, &msg, &len));
        if (ctx->rank != 0) {
            err = mpq_malloc(ctx, 1, sizeof *f, (void **)&f);
            if (err == MPQ_OK) {
                f->fd = -1;
                f->collective = 1;
                f->overwrite = msg[0];
                err = mpq_strdup(ctx, msg + 1, &f->dest);
            }
            if (err == MPQ_OK)
                err = mpq_strdup(ctx, msg + 2 + strlen(msg + 1), &f->tmp);
            struct stat st;
            if (err == MPQ_OK && stat(f->tmp, &st) != 0)
                err = MPQ_ERROR(MPQ_ERR_IO,
                                "temporary file '%s' for output '%s', created by rank 0, is not "
                                "visible on rank %d (%s): the output directory must be on a file "
                                "system shared by all ranks",
                                f->tmp, f->dest, ctx->rank, strerror(errno));
        }
        MPQ_TRY(mpq_agree(ctx, err));
    }
    *out = f;
    f = NULL;
cleanup:
    if (f && ctx->rank == 0)
        mpq_outfile_abort(&f);
    outfile_free(&f);
    mpq_free(msg);
    return err;
}

mpq_err mpq_outfile_commit_all(mpq_ctx *ctx, mpq_outfile **pf) {
    /* Every rank must be done with the file before it moves. */
    mpq_err err = mpq_agree(ctx, MPQ_OK);
    if (err != MPQ_OK) {
        if (ctx->rank == 0)
            mpq_outfile_abort(pf);
        outfile_free(pf);
        return err;
    }
    if (ctx->rank == 0)
        err = mpq_outfile_commit(ctx, pf);
    else
        outfile_free(pf);
    MPQ_CALL(mpq_agree(ctx, err));
    return MPQ_OK;
}

void mpq_outfile_abort_all(mpq_ctx *ctx, mpq_outfile **f) {
    if (!f || !*f)
        return;
    /* Every rank is done with the file before rank 0 removes it, and it is
     * gone for every rank when the call returns. */
    int many = ctx->comm != MPI_COMM_NULL && ctx->size > 1;
    if (many)
        MPI_Barrier(ctx->comm);
    if (ctx->rank == 0)
        mpq_outfile_abort(f);
    else
        outfile_free(f);
    if (many)
        MPI_Barrier(ctx->comm);
}
