/* mpq_outfile.h: output files written under a temporary name and renamed
 * into place only when complete (STYLE.md rule 12), so a crash, an error or
 * a killed job never leaves a truncated checkpoint at the destination.
 *
 * Opening checks, before any work is done: the destination's directory
 * exists, is a directory and is writable; the destination is not a
 * directory, and when it exists it is a regular file (a device, FIFO or
 * socket is never replaced: checked again just before the rename); it is
 * not the same file as any input (same device and inode, or the same
 * canonical path: this catches symlinks and hard links); it does not exist
 * unless overwrite is set. Then a unique temporary file
 * "<dir>/.<name>.tmp.<pid>.<16 random hex digits>" is created exclusively in
 * the same directory (so the final rename stays on one file system and is
 * atomic). Commit fsyncs the temporary, renames it over the destination and
 * fsyncs the directory; abort removes the temporary.
 *
 * Local variants (one process writes) and collective variants (rank 0
 * decides and creates, every rank learns the temporary name, e.g. for a
 * parallel HDF5 file created collectively under that name).
 */
#ifndef MPQ_OUTFILE_H
#define MPQ_OUTFILE_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_ctx.h"

typedef struct mpq_outfile_opts {
    int overwrite;             /* 1: an existing destination file may be replaced */
    const char *const *inputs; /* [n_inputs] files the output must not be (may be NULL) */
    int64_t n_inputs;
} mpq_outfile_opts;

typedef struct mpq_outfile {
    char *dest;     /* destination path, as given */
    char *tmp;      /* temporary path in the destination's directory */
    int fd;         /* local variant: open for writing; collective variant: -1 */
    int overwrite;  /* from the options (checked again at commit) */
    int collective; /* 1: made by mpq_outfile_open_all */
} mpq_outfile;

/* Local. 1 when paths a and b name the same file: both exist and have the
 * same device and inode (a symlink or hard link to the other counts), or
 * their canonical paths are equal (the directory resolved, the last
 * component as given when the file does not exist yet). 0 otherwise, and
 * when either is NULL or empty. */
int mpq_outfile_same_file(const char *a, const char *b);

/* Local. Runs the checks of an open without creating anything, so that a
 * bad output path fails before hours of work. opts may be NULL (no inputs,
 * no overwrite). Errors name the destination and the problem. */
mpq_err mpq_outfile_check(mpq_ctx *ctx, const char *dest, const mpq_outfile_opts *opts);

/* Local. Checks, then creates the temporary file, open for writing in
 * f->fd. Owner of *out: caller, who must end it with mpq_outfile_commit or
 * mpq_outfile_abort. */
mpq_err mpq_outfile_open(mpq_ctx *ctx, const char *dest, const mpq_outfile_opts *opts,
                         mpq_outfile **out);

/* Local. Writes len bytes to the temporary file (retrying short writes).
 * Errors name the destination, the temporary and the system's reason. */
mpq_err mpq_outfile_write(mpq_ctx *ctx, mpq_outfile *f, const void *data, size_t len);

/* Local. Flushes the temporary to disk (fsync), closes it, renames it to the
 * destination and fsyncs the directory. Without overwrite, a destination
 * that appeared meanwhile is an error. On any error the temporary is
 * removed. Always releases *f and sets it to NULL. */
mpq_err mpq_outfile_commit(mpq_ctx *ctx, mpq_outfile **f);

/* Local. Closes and removes the temporary file and releases *f. NULL-safe;
 * sets *f to NULL. */
void mpq_outfile_abort(mpq_outfile **f);

/* Collective. Rank 0 runs the checks and creates the (closed, empty)
 * temporary file; the outcome is agreed, then every rank receives the
 * temporary name and verifies that it can see the file (the directory must
 * be on a file system shared by all ranks). dest and opts matter on rank 0
 * only. On error no rank gets an object and no temporary remains. */
mpq_err mpq_outfile_open_all(mpq_ctx *ctx, const char *dest, const mpq_outfile_opts *opts,
                             mpq_outfile **out);

/* Collective. Call after every rank has closed the temporary file. Rank 0
 * fsyncs and renames it into place; the outcome is agreed. On error the
 * temporary is removed. Always releases *f on every rank. */
mpq_err mpq_outfile_commit_all(mpq_ctx *ctx, mpq_outfile **f);

/* Collective (all ranks holding the object from mpq_outfile_open_all):
 * rank 0 removes the temporary, then all ranks synchronise so that none
 * still sees it. Releases *f; NULL-safe when *f is NULL on every rank. */
void mpq_outfile_abort_all(mpq_ctx *ctx, mpq_outfile **f);

#endif
