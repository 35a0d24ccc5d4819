/* mpq_infile.h: opening input files safely.
 *
 * Every input mpquant reads (configuration, model files, tokenizer, texts,
 * IDX data, checkpoints, saved statistics, sweep points) must be a regular
 * file. A plain open() of a FIFO blocks until a writer appears, so a FIFO
 * named as an input would hang every rank before any check could run. These
 * functions open with O_NONBLOCK, test the type of what they opened with
 * fstat (no window between test and use), and only then clear O_NONBLOCK.
 * Devices, FIFOs, sockets and directories are refused with a message that
 * names the file and what it is.
 */
#ifndef MPQ_INFILE_H
#define MPQ_INFILE_H

#include <stdio.h>
#include <sys/types.h>

#include "mpq_ctx.h"

/* "a FIFO", "a character device", "a block device", "a socket", "a
 * directory", "a symbolic link", "a regular file" or "a special file". */
const char *mpq_file_kind(mode_t mode);

/* Local, no context. Opens path read-only when it is a regular file and
 * returns the descriptor (close-on-exec, blocking mode); -1 otherwise, with
 * errno set (ENXIO for a file that is not regular). Never blocks on a FIFO.
 * For probes that only ask "is this X?". */
int mpq_infile_fd(const char *path);
/* Local, no context. The same as a stdio stream ("rb"); NULL otherwise. */
FILE *mpq_infile_stream(const char *path);

/* Local. Opens path for reading (see above); *fd is the descriptor. what
 * names the role in messages ("tokenizer"; NULL for none): "PATH: cannot
 * open tokenizer: REASON", "PATH: not a regular file (it is a FIFO)". */
mpq_err mpq_infile_open(mpq_ctx *ctx, const char *path, const char *what, int *fd);

/* Local. The same, as a stdio stream opened "rb". */
mpq_err mpq_infile_fopen(mpq_ctx *ctx, const char *path, const char *what, FILE **f);

/* Local. Checks without opening (stat) that path exists and is a regular
 * file; for libraries that open files themselves (HDF5). Same messages. */
mpq_err mpq_infile_check(mpq_ctx *ctx, const char *path, const char *what);

#endif
