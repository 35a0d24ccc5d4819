/* mpq_hash.h: SHA-256 of files and buffers (OpenSSL EVP), for provenance
 * records: the checkpoint stores the digests of every file the run read
 * (configuration, model, tokenizer, calibration and evaluation data, loaded
 * statistics). */
#ifndef MPQ_HASH_H
#define MPQ_HASH_H

#include <stddef.h>

#include "mpq_ctx.h"

/* Length of a SHA-256 digest in lowercase hex, plus the terminating NUL. */
#define MPQ_SHA256_HEX 65

/* Local. Streams the file at path through SHA-256 (1 MiB reads, any size)
 * and writes the digest as 64 lowercase hex digits plus NUL into hex.
 * Errors (MPQ_ERR_IO naming the file and the system's reason, MPQ_ERR_LIB
 * for OpenSSL failures) leave hex as an empty string. */
mpq_err mpq_sha256_file(mpq_ctx *ctx, const char *path, char hex[MPQ_SHA256_HEX]);

/* Local. SHA-256 of len bytes at data (data may be NULL when len is 0). */
mpq_err mpq_sha256_bytes(mpq_ctx *ctx, const void *data, size_t len, char hex[MPQ_SHA256_HEX]);

#endif
