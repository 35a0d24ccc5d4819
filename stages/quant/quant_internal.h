/* quant_internal.h: what the quantizer families share inside stages/quant. */
#ifndef MPQ_QUANT_INTERNAL_H
#define MPQ_QUANT_INTERNAL_H

#include <stdint.h>

#include "mpq_quant.h"

/* One group being fitted: the rectangle rows [r0, r1) x cols [c0, c1) of
 * w [rows][ld], importances imp [ld] per column (NULL: 1), and statistics
 * gathered once (weighted by imp where it says so). */
typedef struct mpq_qgroup_fit {
    const float *w;
    int64_t ld;
    int64_t r0, r1, c0, c1;
    const float *imp;
    float min, max, amax; /* of the weights (min <= 0 <= max not implied) */
    double wsum_pos;      /* sum imp * w over w > 0 */
    double wsum_neg;      /* sum imp * |w| over w < 0 */
    double wcnt_pos;      /* sum imp over w > 0 */
    double wcnt_neg;      /* sum imp over w < 0 */
    double wcnt;          /* sum imp over all */
} mpq_qgroup_fit;

static inline float mpq_qgf_imp(const mpq_qgroup_fit *g, int64_t c) {
    return g->imp ? g->imp[c] : 1.0f;
}

/* Stored scale for a desired effective scale `raw` (> 0 or not): rounded to
 * the spec's storage format, divided by the tensor scale first for E4M3, and
 * clamped to a positive representable range. */
float mpq_qscale_store(const mpq_qparams *p, double raw);

/* Weighted squared error of the group with scale (stored) s, zero z and the
 * level table t (nearest rounding). */
double mpq_qgroup_error(const mpq_qparams *p, const mpq_qgroup_fit *g, const mpq_qtable *t, float s,
                        float z);

/* Builds the sorted tables of p->tab from the family's levels. */
void mpq_qparams_tables(mpq_qparams *p);

/* Bit packing of n values of `bits` bits each (LSB-first), used for codes and
 * zero-points. */
void mpq_qbits_pack(const uint8_t *v, int64_t n, int bits, uint8_t *out);
void mpq_qbits_unpack(const uint8_t *in, int64_t n, int bits, uint8_t *v);

#endif
