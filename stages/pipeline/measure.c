/* measure.c: the measurement shared by `mpquant run` and `mpquant sweep`
 * (measure_internal.h): the table of measured (layer, configuration) pairs. */
#include <string.h>

#include "measure_internal.h"

/* ---- the table ---------------------------------------------------------------------- */

mpq_err mpq_measure_table_alloc(mpq_ctx *ctx, measure_table *t, int64_t nl, int64_t ncol) {
    const int64_t n = nl * ncol > 0 ? nl * ncol : 1;
    MPQ_ALLOC(t->loss, n);
    MPQ_ALLOC(t->rtn, n);
    MPQ_ALLOC(t->bits, n);
    MPQ_ALLOC(t->q, n);
    MPQ_ALLOC(t->energy, nl > 0 ? nl : 1);
    MPQ_ALLOC(t->sens, nl > 0 ? nl : 1);
    t->nl = nl;
    t->ncol = ncol;
    return MPQ_OK;
}

void mpq_measure_table_free(measure_table *t) {
    mpq_free(t->loss);
    mpq_free(t->rtn);
    mpq_free(t->bits);
    for (int64_t i = 0; t->q && i < t->nl * t->ncol; i++)
        mpq_qlayer_destroy(&t->q[i]);
    mpq_free(t->q);
    mpq_free(t->energy);
    mpq_free(t->sens);
    memset(t, 0, sizeof *t);
}
