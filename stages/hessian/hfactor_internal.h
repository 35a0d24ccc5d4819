/* hfactor_internal.h: what hfactor.c and hfactor_single.c share. */
#ifndef MPQ_HFACTOR_INTERNAL_H
#define MPQ_HFACTOR_INTERNAL_H

#include <stdint.h>

#include "mpq_ctx.h"
#include "mpq_hessian.h"

/* One direct attempt (kind 1: V, 2: U) in float32 on the local rank: H
 * (rows and columns in the order perm, NULL: as they are) damped by lambda
 * goes into af [n * n floats] reversed and column-major, is factored with
 * spotrf (and inverted with strtri for U) and checked on a fixed probe x
 * against the double matrix: |R^T R x - A x| / |A x| for V, |R^-1 R^-T A
 * x - x| / |x| for U (f->probe). At most 1e-5: *ok = 1, f->single = 1 and
 * af holds V or U row-major, upper; else *ok = 0, af is spent and the
 * caller redoes the attempt in double at the same damping. The probe is a
 * few matrix-vector products: n^2 against the factor's n^3/3. */
mpq_err mpq_hfactor_single(mpq_ctx *ctx, int64_t n, const double *H, const int64_t *perm,
                           double lambda, int kind, float *af, mpq_hfactor *f, int *ok);

#endif
