/* measure_internal.h: what `mpquant run` (stages/pipeline/run*.c) and
 * `mpquant sweep` (stages/sweep*.c) share to measure a model: the table of
 * measured (layer, configuration) pairs. Not a public interface. */
#ifndef MPQ_MEASURE_INTERNAL_H
#define MPQ_MEASURE_INTERNAL_H

#include <stdint.h>

#include "mpq_calibrate.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_model.h"
#include "mpq_round.h"

/* ---- the table (measure.c) ---------------------------------------------------- */

/* What measuring found, column k of layer l at [l * ncol + k]. What a column
 * is belongs to the caller: run's candidates (plus a pinned spec), the
 * sweep's measured configurations. */
typedef struct measure_table {
    int64_t nl;     /* layers */
    int64_t ncol;   /* columns per layer */
    double *loss;   /* [nl][ncol] layer error of the rounding */
    double *rtn;    /* [nl][ncol] nearest-rounding error, same H */
    int64_t *bits;  /* [nl][ncol] exact storage bits */
    mpq_qlayer **q; /* [nl][ncol] measured codes (owned), NULL where not measured */
    double *energy; /* [nl] tr(W H W^T) */
    double *sens;   /* [nl] sensitivity s_l, 0 where not probed */
} measure_table;

/* Local. Allocates the table's arrays, zeroed (at least one element each). */
mpq_err mpq_measure_table_alloc(mpq_ctx *ctx, measure_table *t, int64_t nl, int64_t ncol);
/* Frees the arrays and the codes and zeroes *t. Safe on a zeroed table. */
void mpq_measure_table_free(measure_table *t);

#endif
