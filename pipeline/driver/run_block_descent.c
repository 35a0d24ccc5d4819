/* run_block_descent.c: the block loss's descent, for the case where every
 * step sees every calibration sample (run_block_loss.c).
 *
 * Then the loss of every step is measured exactly, and a step can be
 * judged: a step that does not lower the loss is undone (the offsets,
 * scale factors and bias corrections go back to the best solution's) and
 * the next step from there is smaller. A step's size is the fraction rho of
 * the weights that its signed step would flip that may flip: those of the
 * largest gradient magnitude (the largest first-order gain), at least one;
 * the scale factors and bias corrections move by rho times their rate.
 * rho starts at 1 (the plain signed step), is divided by 4 after a step is
 * undone and doubled, up to 1, after a step is kept. A single flip that is
 * undone leaves its weight out (tabu) until a step is kept, so the next
 * candidate is tried; the refinement stops after 16 single flips in a row
 * are undone. Without this, a signed step from a layer
 * rounding that sits on its decision boundaries flips every weight whose
 * gradient points back at once, and the loss rises at every step.
 *
 * Everything here reads the gradient sums that every rank holds alike, so
 * the choices are the same bits on any rank count. */
#include <string.h>

#include "block_loss_internal.h"

mpq_err mpq_bl_descent_init(bl_state *S) {
    mpq_ctx *ctx = S->ctx;
    for (int64_t j = 0; j < S->nl; j++) {
        bl_layer *x = &S->L[j];
        MPQ_ALLOC(x->obest, x->n > 0 ? x->n : 1);
        MPQ_ALLOC(x->tabu, x->n > 0 ? x->n : 1);
        if (x->ng > 0)
            MPQ_ALLOC(x->mbest, x->ng);
    }
    mpq_bl_descent_keep(S);
    return MPQ_OK;
}

void mpq_bl_descent_keep(bl_state *S) {
    for (int64_t j = 0; j < S->nl; j++) {
        bl_layer *x = &S->L[j];
        memcpy(x->obest, x->o, (size_t)x->n * sizeof *x->o);
        if (x->ng > 0)
            memcpy(x->mbest, x->m, (size_t)x->ng * sizeof *x->m);
        memset(x->tabu, 0, (size_t)x->n);
    }
}

void mpq_bl_descent_restore(bl_state *S, int single) {
    for (int64_t j = 0; j < S->nl; j++) {
        bl_layer *x = &S->L[j];
        for (int64_t k = 0; k < x->n; k++)
            x->tabu[k] = x->tabu[k] == 2 ? (uint8_t)(single ? 1 : 0) : x->tabu[k];
        memcpy(x->o, x->obest, (size_t)x->n * sizeof *x->o);
        if (x->ng > 0)
            memcpy(x->m, x->mbest, (size_t)x->ng * sizeof *x->m);
        if (x->nb > 0)
            memcpy(x->bd, x->bbest, (size_t)x->nb * sizeof *x->bd);
    }
}

/* How many weights the step of lr would flip with |acc| >= v. */
static int64_t count_flips(const bl_state *S, double lr, int64_t v) {
    int64_t n = 0;
    for (int64_t j = 0; j < S->nl; j++) {
        const bl_layer *x = &S->L[j];
        for (int64_t k = 0; k < x->n; k++) {
            if (x->acc[k] == 0 || mpq_bl_mag(x, k) < v || isnan(x->o[k]) || x->tabu[k] == 1)
                continue;
            n += mpq_bl_takes_b(x, k, mpq_bl_moved(x, k, lr)) != mpq_bl_takes_b(x, k, x->o[k]);
        }
    }
    return n;
}

int64_t mpq_bl_flip_threshold(const bl_state *S, double lr, double rho) {
    const int64_t want = rho >= 1.0 ? 0 : count_flips(S, lr, 1);
    if (want <= 1)
        return 0;
    int64_t k = (int64_t)ceil(rho * (double)want);
    k = k < 1 ? 1 : k;
    /* the largest v with at least k candidates of |acc| >= v (bisection on
     * [1, 2^63)) */
    int64_t lo = 1, hi = INT64_MAX;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2 + 1;
        if (count_flips(S, lr, mid) >= k)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}
