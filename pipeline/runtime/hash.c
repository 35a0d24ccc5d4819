/* hash.c: SHA-256 through OpenSSL's EVP interface (the digest is computed by
 * the library, never by hand). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "mpq_infile.h"
#include "mpq_hash.h"

/* Bytes read per call while streaming a file. */
#define MPQ_HASH_CHUNK ((size_t)1 << 20)

/* Raises MPQ_ERR_LIB with OpenSSL's own text for the failed step. */
static mpq_err ssl_error(mpq_ctx *ctx, const char *step, const char *what) {
    char text[256] = "no OpenSSL error queued";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, text, sizeof text);
    ERR_clear_error();
    return MPQ_ERROR(MPQ_ERR_LIB, "SHA-256 of %s: %s failed: %s", what, step, text);
}

static void to_hex(const unsigned char *md, unsigned n, char *hex) {
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[2 * n] = '\0';
}

mpq_err mpq_sha256_file(mpq_ctx *ctx, const char *path, char hex[MPQ_SHA256_HEX]) {
    hex[0] = '\0';
    mpq_err err = MPQ_OK;
    FILE *f = NULL;
    EVP_MD_CTX *md = NULL;
    unsigned char *buf = NULL;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    MPQ_TRY(mpq_infile_fopen(ctx, path, NULL, &f));
    MPQ_TRY(mpq_malloc(ctx, (int64_t)MPQ_HASH_CHUNK, 1, (void **)&buf));
    md = EVP_MD_CTX_new();
    if (!md) {
        err = ssl_error(ctx, "EVP_MD_CTX_new", path);
        goto cleanup;
    }
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        err = ssl_error(ctx, "EVP_DigestInit_ex", path);
        goto cleanup;
    }
    for (;;) {
        size_t got = fread(buf, 1, MPQ_HASH_CHUNK, f);
        if (got > 0 && EVP_DigestUpdate(md, buf, got) != 1) {
            err = ssl_error(ctx, "EVP_DigestUpdate", path);
            goto cleanup;
        }
        if (got < MPQ_HASH_CHUNK) {
            MPQ_ENSURE(!ferror(f), MPQ_ERR_IO, "read error while hashing '%s': %s", path,
                       strerror(errno));
            break;
        }
    }
    if (EVP_DigestFinal_ex(md, digest, &n) != 1 || n != 32) {
        err = ssl_error(ctx, "EVP_DigestFinal_ex", path);
        goto cleanup;
    }
    to_hex(digest, n, hex);
cleanup:
    EVP_MD_CTX_free(md);
    mpq_free(buf);
    if (f)
        fclose(f);
    return err;
}

mpq_err mpq_sha256_bytes(mpq_ctx *ctx, const void *data, size_t len, char hex[MPQ_SHA256_HEX]) {
    hex[0] = '\0';
    MPQ_CHECK(data || len == 0, MPQ_ERR_ARG, "SHA-256 of a NULL buffer of %zu bytes", len);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    static const unsigned char empty[1] = {0};
    if (EVP_Digest(len ? data : empty, len, digest, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return ssl_error(ctx, "EVP_Digest", "a buffer");
    to_hex(digest, n, hex);
    return MPQ_OK;
}
