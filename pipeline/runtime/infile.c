/* infile.c: input files opened without blocking, regular files only. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpq_infile.h"

const char *mpq_file_kind(mode_t mode) {
    if (S_ISREG(mode))
        return "a regular file";
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISLNK(mode))
        return "a symbolic link";
    return "a special file";
}

/* Opens path without blocking and returns the descriptor, in blocking mode,
 * when it is a regular file; -1 otherwise, with errno set (ENXIO for a file
 * that is not regular). *mode receives the type of what was opened (0 when
 * nothing was). */
static int open_regular(const char *path, mode_t *mode) {
    *mode = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    int flags = -1;
    if (fstat(fd, &st) == 0) {
        *mode = st.st_mode;
        if (!S_ISREG(st.st_mode))
            errno = ENXIO;
        else if ((flags = fcntl(fd, F_GETFL)) >= 0 && fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0)
            return fd;
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

int mpq_infile_fd(const char *path) {
    mode_t mode;
    return open_regular(path, &mode);
}

FILE *mpq_infile_stream(const char *path) {
    int fd = mpq_infile_fd(path);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f)
        close(fd);
    return f;
}

mpq_err mpq_infile_open(mpq_ctx *ctx, const char *path, const char *what, int *fd) {
    *fd = -1;
    MPQ_CHECK(path && path[0], MPQ_ERR_ARG, "no file named%s%s", what ? " for the " : "",
              what ? what : "");
    mode_t mode;
    int f = open_regular(path, &mode);
    MPQ_CHECK(f >= 0 || !mode || S_ISREG(mode), MPQ_ERR_IO, "%s: not a regular file (it is %s)%s%s",
              path, mpq_file_kind(mode), what ? "; expected a " : "", what ? what : "");
    MPQ_CHECK(f >= 0, MPQ_ERR_IO, "%s: cannot open%s%s: %s", path, what ? " " : "",
              what ? what : "", strerror(errno));
    *fd = f;
    return MPQ_OK;
}

mpq_err mpq_infile_fopen(mpq_ctx *ctx, const char *path, const char *what, FILE **out) {
    *out = NULL;
    int fd = -1;
    MPQ_CALL(mpq_infile_open(ctx, path, what, &fd));
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int saved = errno;
        close(fd);
        return MPQ_ERROR(MPQ_ERR_IO, "%s: cannot open%s%s: %s", path, what ? " " : "",
                         what ? what : "", strerror(saved));
    }
    *out = f;
    return MPQ_OK;
}

mpq_err mpq_infile_check(mpq_ctx *ctx, const char *path, const char *what) {
    MPQ_CHECK(path && path[0], MPQ_ERR_ARG, "no file named%s%s", what ? " for the " : "",
              what ? what : "");
    struct stat st;
    MPQ_CHECK(stat(path, &st) == 0, MPQ_ERR_IO, "%s: cannot open%s%s: %s", path, what ? " " : "",
              what ? what : "", strerror(errno));
    MPQ_CHECK(S_ISREG(st.st_mode), MPQ_ERR_IO, "%s: not a regular file (it is %s)%s%s", path,
              mpq_file_kind(st.st_mode), what ? "; expected a " : "", what ? what : "");
    return MPQ_OK;
}
