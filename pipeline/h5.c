/* h5.c: HDF5 error wrappers (see mpq_h5.h). */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "mpq_ctx.h"
#include "mpq_h5.h"

void mpq_h5_quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
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
