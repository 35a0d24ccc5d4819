/* hfactor.c: damped Cholesky factorisations of H (chol(H), H^-1,
 * chol(H^-1)) with dead-channel handling and the retry policy of
 * mpq_hessian.h; backends "lapack" (one rank) and "scalapack" (2-D
 * block-cyclic over a BLACS grid) in one registry.
 *
 * Storage: the routines work on column-major n x n matrices with uplo = 'L'
 * (only the lower triangle is read or written). H is symmetric, so its
 * row-major and column-major forms coincide, and a column-major lower
 * factor L read row-major is the upper factor L^T: H = L L^T = R^T R with
 * R = L^T, which is what callers receive. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#include "mpq_coll.h"
#include "mpq_config.h"
#include "mpq_ctx.h"
#include "mpq_hessian.h"
#include "mpq_scalapack.h"
#include "hfactor_internal.h"

/* First damping of the retry sequence when the configured damping is 0. */
#define RETRY_FLOOR 1e-6

void mpq_hfactor_opts_default(mpq_hfactor_opts *o) {
    o->damping = 0.01;
    o->damping_max = 1.0;
    o->scalapack = "auto";
    o->scalapack_min_width = 4096;
    o->block_size = 64;
    o->nprow = 0;
    o->npcol = 0;
    o->single = 0;
}

void mpq_hfactor_opts_from_config(const mpq_config *cfg, mpq_hfactor_opts *o) {
    mpq_hfactor_opts_default(o);
    o->damping = cfg->hessian.damping;
    o->damping_max = cfg->hessian.damping_max;
    o->scalapack = cfg->hessian.scalapack;
    o->scalapack_min_width = cfg->hessian.scalapack_min_width;
    o->block_size = (int)cfg->hessian.block_size; /* validated range 1..4096 */
}

void mpq_hfactor_destroy(mpq_hfactor **pf) {
    if (!pf || !*pf)
        return;
    mpq_hfactor *f = *pf;
    mpq_free(f->chol);
    mpq_free(f->inv);
    mpq_free(f->inv_chol);
    mpq_free(f->rchol);
    mpq_free(f->factor_f);
    mpq_free(f->dead);
    mpq_free(f);
    *pf = NULL;
}

/* ---- output helpers (root) ----------------------------------------------- */

/* dst (row-major upper factor) from a column-major lower factor src. */
static void store_factor(int64_t n, const double *src, double *dst) {
    memcpy(dst, src, (size_t)(n * n) * sizeof *dst);
    for (int64_t i = 0; i < n; i++)
        memset(dst + i * n, 0, (size_t)i * sizeof *dst); /* row-major strict lower */
}

/* dst (full symmetric) from the column-major lower triangle of src. */
static void store_symmetric(int64_t n, const double *src, double *dst) {
    for (int64_t c = 0; c < n; c++)
        for (int64_t r = c; r < n; r++) {
            double v = src[r + c * n];
            dst[r + c * n] = v;
            dst[c + r * n] = v;
        }
}

static mpq_err ensure_out(mpq_ctx *ctx, int64_t n, double **p) {
    if (!*p)
        MPQ_CALL(mpq_malloc(ctx, n * n, sizeof **p, (void **)p));
    return MPQ_OK;
}

static mpq_err alloc_outputs(mpq_ctx *ctx, int64_t n, unsigned what, mpq_hfactor *f) {
    if (what & MPQ_HF_CHOL)
        MPQ_CALL(ensure_out(ctx, n, &f->chol));
    if (what & MPQ_HF_INV)
        MPQ_CALL(ensure_out(ctx, n, &f->inv));
    /* U alone is left in the attempt's matrix (put_inv_chol) */
    if ((what & MPQ_HF_INV_CHOL) && what != MPQ_HF_INV_CHOL)
        MPQ_CALL(ensure_out(ctx, n, &f->inv_chol));
    return MPQ_OK;
}

/* U from the attempt's matrix a: copied to f->inv_chol when it exists,
 * else a itself becomes U (run_factor hands it over). */
static void put_inv_chol(int64_t n, double *a, mpq_hfactor *f) {
    if (f->inv_chol) {
        store_factor(n, a, f->inv_chol);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        memset(a + i * n, 0, (size_t)i * sizeof *a); /* row-major strict lower */
}

/* a[k] <-> a[n*n - 1 - k]: the matrix with rows and columns in reverse
 * order (J a J, J the reversal). */
static void reverse_both(int64_t n, double *a) {
    for (int64_t k = 0, m = n * n - 1; k < m; k++, m--) {
        double t = a[k];
        a[k] = a[m];
        a[m] = t;
    }
}

/* The outputs computed through the reversed matrix, each requested alone:
 * with J Hd J = R^T R (R upper), Hd = (J R^T J)(J R^T J)^T, so V =
 * J R^T J (upper) is rchol, and Hd^-1 = (J R^-T J)^T (J R^-T J), so U =
 * J R^-T J is inv_chol: one Cholesky (n^3/3 flops) for V, plus one
 * triangular inverse (n^3/3) for U, instead of a Cholesky, an inverse and
 * a second Cholesky (4n^3/3), and no second factorisation that can fail.
 * In a column-major buffer, R (or R^-1) read row-major is R^T (R^-T);
 * reversing it gives V (U) row-major. 0: not such a request; 1: V; 2: U. */
static int direct_kind(unsigned what) {
    return what == MPQ_HF_RCHOL ? 1 : what == MPQ_HF_INV_CHOL ? 2 : 0;
}

/* 1 when this rank holds H and gets the outputs: the root set->first, or
 * with set->count > 0 every rank of the set. */
static int holds(const mpq_ctx *ctx, const mpq_hset *set) {
    return set->count > 0 ? mpq_hset_has(set, ctx->rank) : ctx->rank == set->first;
}

/* ---- LAPACK backend ------------------------------------------------------ */

static mpq_err lapack_attempt(mpq_ctx *ctx, const mpq_hfactor_opts *o, int64_t n, double *a,
                              const mpq_hset *set, unsigned what, mpq_hfactor *f, int *notpd) {
    (void)o; /* float32 attempts do not come here (hfactor_single.c) */
    (void)set;
    *notpd = 0;
    lapack_int ln = (lapack_int)n;
    MPQ_CHECK((int64_t)ln == n, MPQ_ERR_RANGE, "width %lld does not fit LAPACK's integer",
              (long long)n);
    MPQ_CALL(alloc_outputs(ctx, n, what, f));
    lapack_int info = 0;
    if (direct_kind(what)) {
        reverse_both(n, a);
        info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'U', ln, a, ln);
        MPQ_CHECK(info >= 0, MPQ_ERR_INTERNAL, "dpotrf: illegal argument %d", (int)-info);
        if (info == 0 && direct_kind(what) == 2)
            info = LAPACKE_dtrtri_work(LAPACK_COL_MAJOR, 'U', 'N', ln, a, ln);
        MPQ_CHECK(info >= 0, MPQ_ERR_INTERNAL, "dtrtri: illegal argument %d", (int)-info);
        if (info > 0) {
            *notpd = 1;
            return MPQ_OK;
        }
        reverse_both(n, a);
        put_inv_chol(n, a, f);
        return MPQ_OK;
    }
    info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', ln, a, ln);
    MPQ_CHECK(info >= 0, MPQ_ERR_INTERNAL, "dpotrf: illegal argument %d", (int)-info);
    if (info > 0) {
        *notpd = 1;
        return MPQ_OK;
    }
    if (what & MPQ_HF_CHOL)
        store_factor(n, a, f->chol);
    if (!(what & (MPQ_HF_INV | MPQ_HF_INV_CHOL)))
        return MPQ_OK;
    info = LAPACKE_dpotri_work(LAPACK_COL_MAJOR, 'L', ln, a, ln);
    MPQ_CHECK(info >= 0, MPQ_ERR_INTERNAL, "dpotri: illegal argument %d", (int)-info);
    if (info > 0) {
        *notpd = 1;
        return MPQ_OK;
    }
    if (what & MPQ_HF_INV)
        store_symmetric(n, a, f->inv);
    if (!(what & MPQ_HF_INV_CHOL))
        return MPQ_OK;
    info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', ln, a, ln);
    MPQ_CHECK(info >= 0, MPQ_ERR_INTERNAL, "dpotrf: illegal argument %d", (int)-info);
    if (info > 0) {
        *notpd = 2;
        return MPQ_OK;
    }
    put_inv_chol(n, a, f);
    return MPQ_OK;
}

/* ---- ScaLAPACK backend --------------------------------------------------- */

/* Block-cyclic layout of an n x n matrix over the grid. */
typedef struct bc_layout {
    int n, nb, nprow, npcol;
} bc_layout;

static int bc_numroc(const bc_layout *l, int iproc, int nprocs) {
    int zero = 0;
    return numroc_(&l->n, &l->nb, &iproc, &zero, &nprocs);
}

/* Global index of local index li on process coordinate p of np. */
static int64_t bc_global(int64_t li, int nb, int p, int np) {
    return (li / nb) * (int64_t)np * nb + (int64_t)p * nb + li % nb;
}

/* Copies between the global column-major matrix g (n x n) and the local
 * piece loc (mloc x nloc, column-major) of grid process (pr, pc). */
static void bc_copy(const bc_layout *l, int pr, int pc, int64_t mloc, int64_t nloc, double *g,
                    double *loc, int to_local) {
    for (int64_t lj = 0; lj < nloc; lj++) {
        int64_t gj = bc_global(lj, l->nb, pc, l->npcol);
        for (int64_t li = 0; li < mloc; li++) {
            int64_t gi = bc_global(li, l->nb, pr, l->nprow);
            if (to_local)
                loc[li + lj * mloc] = g[gi + gj * l->n];
            else
                g[gi + gj * l->n] = loc[li + lj * mloc];
        }
    }
}

/* Collective over ctx->comm: root sends every grid process its piece of g
 * (to_local = 1), or collects them into g (to_local = 0). `scratch` on the
 * root holds the largest piece. */
static mpq_err bc_move(mpq_ctx *ctx, const mpq_grid *grid, const bc_layout *l, int root, double *g,
                       double *loc, int64_t mloc, int64_t nloc, double *scratch, int to_local) {
    const int tag = 4711;
    int np = grid->nprow * grid->npcol;
    if (ctx->rank == root) {
        for (int p = 0; p < np; p++) {
            int pr = p / grid->npcol, pc = p % grid->npcol, dest = grid->first + p;
            int64_t pm = bc_numroc(l, pr, grid->nprow), pn = bc_numroc(l, pc, grid->npcol);
            if (dest == root) {
                bc_copy(l, pr, pc, pm, pn, g, loc, to_local);
                continue;
            }
            int cnt = 0;
            MPQ_CALL(mpq_to_int(ctx, pm * pn, "ScaLAPACK local piece", &cnt));
            if (to_local) {
                bc_copy(l, pr, pc, pm, pn, g, scratch, 1);
                MPQ_MPI(MPI_Send(scratch, cnt, MPI_DOUBLE, dest, tag, ctx->comm));
            } else {
                MPQ_MPI(
                    MPI_Recv(scratch, cnt, MPI_DOUBLE, dest, tag, ctx->comm, MPI_STATUS_IGNORE));
                bc_copy(l, pr, pc, pm, pn, g, scratch, 0);
            }
        }
    } else if (grid->myrow >= 0) {
        int cnt = 0;
        MPQ_CALL(mpq_to_int(ctx, mloc * nloc, "ScaLAPACK local piece", &cnt));
        if (to_local)
            MPQ_MPI(MPI_Recv(loc, cnt, MPI_DOUBLE, root, tag, ctx->comm, MPI_STATUS_IGNORE));
        else
            MPQ_MPI(MPI_Send(loc, cnt, MPI_DOUBLE, root, tag, ctx->comm));
    }
    return MPQ_OK;
}

/* Every rank of set (communicator sc, rank order = grid order) collects
 * every grid process's piece into g: each piece is broadcast in turn from
 * its process. `scratch` holds the largest piece. */
static mpq_err bc_allgather(mpq_ctx *ctx, const mpq_grid *grid, const bc_layout *l, MPI_Comm sc,
                            double *g, const double *loc, int64_t mloc, int64_t nloc,
                            double *scratch) {
    int np = grid->nprow * grid->npcol;
    for (int p = 0; p < np; p++) {
        int pr = p / grid->npcol, pc = p % grid->npcol;
        int64_t pm = bc_numroc(l, pr, grid->nprow), pn = bc_numroc(l, pc, grid->npcol);
        int mine = grid->myrow == pr && grid->mycol == pc;
        int cnt = 0;
        MPQ_CALL(mpq_to_int(ctx, pm * pn, "ScaLAPACK local piece", &cnt));
        if (mine)
            memcpy(scratch, loc, (size_t)(mloc * nloc) * sizeof *scratch);
        MPQ_MPI(MPI_Bcast(scratch, cnt, MPI_DOUBLE, p, sc));
        bc_copy(l, pr, pc, pm, pn, g, scratch, 0);
    }
    return MPQ_OK;
}

/* The attempt's matrix to (to_local = 1) or from the grid: scattered from
 * and gathered to the root; or, with set->count > 0, filled by every grid
 * process from its own copy and gathered on every rank of the set. */
static mpq_err bc_exchange(mpq_ctx *ctx, const mpq_grid *grid, const bc_layout *l,
                           const mpq_hset *set, MPI_Comm sc, double *g, double *loc, int64_t mloc,
                           int64_t nloc, double *scratch, int to_local) {
    if (set->count == 0)
        return bc_move(ctx, grid, l, set->first, g, loc, mloc, nloc, scratch, to_local);
    if (to_local) {
        if (grid->myrow >= 0)
            bc_copy(l, grid->myrow, grid->mycol, mloc, nloc, g, loc, 1);
        return MPQ_OK;
    }
    if (sc != MPI_COMM_NULL)
        MPQ_CALL(bc_allgather(ctx, grid, l, sc, g, loc, mloc, nloc, scratch));
    return MPQ_OK;
}

/* Largest info over all ranks (ranks outside the grid pass 0). */
static mpq_err agree_info(mpq_ctx *ctx, int *info) {
    MPQ_MPI(MPI_Allreduce(MPI_IN_PLACE, info, 1, MPI_INT, MPI_MAX, ctx->comm));
    return MPQ_OK;
}

static mpq_err scalapack_attempt(mpq_ctx *ctx, const mpq_hfactor_opts *o, int64_t n64, double *a,
                                 const mpq_hset *set, unsigned what, mpq_hfactor *f, int *notpd) {
    *notpd = 0;
    MPQ_CHECK(ctx->comm != MPI_COMM_NULL, MPQ_ERR_ARG,
              "the ScaLAPACK path (hessian.scalapack) needs an MPI context");
    mpq_grid *grid = NULL;
    double *loc = NULL, *scratch = NULL;
    MPI_Comm sc = MPI_COMM_NULL; /* the set's ranks (replicated mode) */
    mpq_err err = MPQ_OK, local = MPQ_OK;
    int n = 0;
    const int rep = set->count > 0;
    const int in_set = rep && mpq_hset_has(set, ctx->rank);
    const int holder = holds(ctx, set); /* outputs and scratch */
    MPQ_CALL(mpq_to_int(ctx, n64, "Hessian width (ScaLAPACK)", &n));
    if (rep) {
        /* the configured grid when it fits the set, else the squarest over it */
        int fits = o->nprow > 0 && o->npcol > 0 && (int64_t)o->nprow * o->npcol <= set->count;
        MPQ_CALL(mpq_grid_create_range(ctx, set->first, set->count, fits ? o->nprow : 0,
                                       fits ? o->npcol : 0, &grid));
        MPQ_MPI_TRY(MPI_Comm_split(ctx->comm, in_set ? 0 : MPI_UNDEFINED, ctx->rank, &sc));
    } else {
        MPQ_CALL(mpq_grid_create(ctx, o->nprow, o->npcol, &grid));
    }
    bc_layout l = {.n = n, .nb = o->block_size, .nprow = grid->nprow, .npcol = grid->npcol};
    f->nprow = grid->nprow;
    f->npcol = grid->npcol;
    f->nb = o->block_size;
    int inside = grid->myrow >= 0;
    int64_t mloc = inside ? bc_numroc(&l, grid->myrow, grid->nprow) : 0;
    int64_t nloc = inside ? bc_numroc(&l, grid->mycol, grid->npcol) : 0;
    int desc[9] = {0};
    if (inside) {
        int izero = 0, info = 0, lld = mloc > 1 ? (int)mloc : 1;
        descinit_(desc, &n, &n, &l.nb, &l.nb, &izero, &izero, &grid->blacs_ctxt, &lld, &info);
        if (info != 0)
            local = MPQ_ERROR(MPQ_ERR_LIB, "descinit: argument %d is invalid", -info);
        if (local == MPQ_OK)
            local = mpq_malloc(ctx, mloc * nloc > 0 ? mloc * nloc : 1, sizeof *loc, (void **)&loc);
    }
    if (local == MPQ_OK && holder) {
        int64_t maxm = bc_numroc(&l, 0, grid->nprow), maxn = bc_numroc(&l, 0, grid->npcol);
        local = mpq_malloc(ctx, maxm * maxn, sizeof *scratch, (void **)&scratch);
        if (local == MPQ_OK)
            local = alloc_outputs(ctx, n64, what, f);
    }
    MPQ_TRY(mpq_agree(ctx, local));

    const int ione = 1;
    const int direct = direct_kind(what);
    if (direct && holder)
        reverse_both(n64, a);
    MPQ_TRY(bc_exchange(ctx, grid, &l, set, sc, a, loc, mloc, nloc, scratch, 1));
    int info = 0;
    if (direct) {
        if (inside)
            pdpotrf_("U", &n, loc, &ione, &ione, desc, &info);
        MPQ_TRY(agree_info(ctx, &info));
        if (info == 0 && inside && direct == 2)
            pdtrtri_("U", "N", &n, loc, &ione, &ione, desc, &info);
        MPQ_TRY(agree_info(ctx, &info));
        if (info != 0) {
            *notpd = 1;
            goto cleanup;
        }
        MPQ_TRY(bc_exchange(ctx, grid, &l, set, sc, a, loc, mloc, nloc, scratch, 0));
        if (holder) {
            reverse_both(n64, a);
            put_inv_chol(n64, a, f);
        }
        goto cleanup;
    }
    if (inside)
        pdpotrf_("L", &n, loc, &ione, &ione, desc, &info);
    MPQ_TRY(agree_info(ctx, &info));
    if (info != 0) {
        *notpd = 1;
        goto cleanup;
    }
    if (what & MPQ_HF_CHOL) {
        MPQ_TRY(bc_exchange(ctx, grid, &l, set, sc, a, loc, mloc, nloc, scratch, 0));
        if (holder)
            store_factor(n64, a, f->chol);
    }
    if (!(what & (MPQ_HF_INV | MPQ_HF_INV_CHOL)))
        goto cleanup;
    if (inside)
        pdpotri_("L", &n, loc, &ione, &ione, desc, &info);
    MPQ_TRY(agree_info(ctx, &info));
    if (info != 0) {
        *notpd = 1;
        goto cleanup;
    }
    if (what & MPQ_HF_INV) {
        MPQ_TRY(bc_exchange(ctx, grid, &l, set, sc, a, loc, mloc, nloc, scratch, 0));
        if (holder)
            store_symmetric(n64, a, f->inv);
    }
    if (!(what & MPQ_HF_INV_CHOL))
        goto cleanup;
    if (inside)
        pdpotrf_("L", &n, loc, &ione, &ione, desc, &info);
    MPQ_TRY(agree_info(ctx, &info));
    if (info != 0) {
        *notpd = 2;
        goto cleanup;
    }
    MPQ_TRY(bc_exchange(ctx, grid, &l, set, sc, a, loc, mloc, nloc, scratch, 0));
    if (holder)
        put_inv_chol(n64, a, f);
cleanup:
    if (sc != MPI_COMM_NULL)
        MPI_Comm_free(&sc);
    mpq_free(scratch);
    mpq_free(loc);
    mpq_grid_destroy(ctx, &grid);
    return err;
}

static const mpq_hfactor_backend backend_lapack = {
    .name = "lapack", .collective = 0, .attempt = lapack_attempt};
static const mpq_hfactor_backend backend_scalapack = {
    .name = "scalapack", .collective = 1, .attempt = scalapack_attempt};

const mpq_hfactor_backend *const mpq_hfactor_backends[] = {&backend_lapack, &backend_scalapack,
                                                           NULL};

static const char *backend_name_at(int64_t i) {
    return mpq_hfactor_backends[i] ? mpq_hfactor_backends[i]->name : NULL;
}

const mpq_registry mpq_hfactor_backend_reg = {.what = "factorisation backend",
                                              .name_at = backend_name_at};

const mpq_hfactor_backend *mpq_hfactor_backend_find(const char *name) {
    int64_t i = mpq_registry_index(&mpq_hfactor_backend_reg, name);
    return i < 0 ? NULL : mpq_hfactor_backends[i];
}

/* ---- backend policies (hessian.scalapack) ---------------------------------- */

static const mpq_hfactor_backend *choose_auto(mpq_ctx *ctx, const mpq_hfactor_opts *o, int64_t n) {
    if (ctx->comm == MPI_COMM_NULL)
        return &backend_lapack;
    return n >= o->scalapack_min_width ? &backend_scalapack : &backend_lapack;
}

static const mpq_hfactor_backend *choose_always(mpq_ctx *ctx, const mpq_hfactor_opts *o,
                                                int64_t n) {
    (void)ctx, (void)o, (void)n;
    return &backend_scalapack;
}

static const mpq_hfactor_backend *choose_never(mpq_ctx *ctx, const mpq_hfactor_opts *o, int64_t n) {
    (void)ctx, (void)o, (void)n;
    return &backend_lapack;
}

static const mpq_hfactor_policy policy_auto = {
    .name = "auto",
    .summary = "ScaLAPACK for layers at least scalapack_min_width wide, LAPACK below",
    .choose = choose_auto};
static const mpq_hfactor_policy policy_always = {
    .name = "always", .summary = "ScaLAPACK for every layer", .choose = choose_always};
static const mpq_hfactor_policy policy_never = {
    .name = "never", .summary = "LAPACK on one rank for every layer", .choose = choose_never};

const mpq_hfactor_policy *const mpq_hfactor_policies[] = {&policy_auto, &policy_always,
                                                          &policy_never, NULL};

static const char *policy_name_at(int64_t i) {
    return mpq_hfactor_policies[i] ? mpq_hfactor_policies[i]->name : NULL;
}

const mpq_registry mpq_hfactor_policy_reg = {.what = "ScaLAPACK policy", .name_at = policy_name_at};

const mpq_hfactor_policy *mpq_hfactor_policy_find(const char *name) {
    int64_t i = mpq_registry_index(&mpq_hfactor_policy_reg, name);
    return i < 0 ? NULL : mpq_hfactor_policies[i];
}

const mpq_hfactor_backend *mpq_hfactor_choose_backend(mpq_ctx *ctx, const mpq_hfactor_opts *o,
                                                      int64_t n) {
    const mpq_hfactor_policy *p = mpq_hfactor_policy_find(o->scalapack);
    return p ? p->choose(ctx, o, n) : NULL;
}

const char *mpq_hfactor_choose(mpq_ctx *ctx, const mpq_hfactor_opts *o, int64_t n) {
    const mpq_hfactor_backend *be = mpq_hfactor_choose_backend(ctx, o, n);
    return be ? be->name : NULL;
}

/* ---- the retry driver ---------------------------------------------------- */

/* Root: checks H, lists the dead channels in f and returns the mean of the
 * diagonal with them set to 1. */
static mpq_err check_h(mpq_ctx *ctx, const char *name, int64_t n, const double *H,
                       const int64_t *perm, double *mean, mpq_hfactor *f) {
    MPQ_CHECK(H, MPQ_ERR_ARG, "layer '%s': no Hessian on the factorising rank", name);
    for (int64_t k = 0; k < n * n; k++)
        MPQ_CHECK(isfinite(H[k]), MPQ_ERR_NUMERIC, "layer '%s': H[%lld][%lld] = %g is not finite",
                  name, (long long)(k / n), (long long)(k % n), H[k]);
    int64_t ndead = 0;
    for (int64_t i = 0; i < n; i++)
        ndead += H[i * n + i] == 0.0; /* the count does not depend on the order */
    f->n_dead = ndead;
    if (ndead)
        MPQ_CALL(mpq_malloc(ctx, ndead, sizeof *f->dead, (void **)&f->dead));
    double sum = 0.0;
    for (int64_t i = 0, k = 0; i < n; i++) {
        const int64_t pi = perm ? perm[i] : i;
        const double h = H[pi * n + pi];
        MPQ_CHECK(h >= 0.0, MPQ_ERR_NUMERIC,
                  "layer '%s': H[%lld][%lld] = %g is negative: not a Gram matrix", name,
                  (long long)i, (long long)i, h);
        if (h == 0.0)
            f->dead[k++] = i;
        sum += h == 0.0 ? 1.0 : h;
    }
    *mean = sum / (double)n;
    return MPQ_OK;
}

/* a = H (rows and columns in the order perm, NULL: as they are) with the
 * dead channels' diagonal set to 1 and lambda added to the diagonal: the
 * matrix of one attempt. */
static void damped(int64_t n, const double *H, const int64_t *perm, double lambda, double *a) {
    if (perm) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++)
                a[i * n + j] = H[perm[i] * n + perm[j]];
    } else {
        memcpy(a, H, (size_t)(n * n) * sizeof *a);
    }
    for (int64_t i = 0; i < n; i++)
        a[i * n + i] += mpq_hfactor_added(a[i * n + i], lambda);
}

static const char *stage_name(int notpd) {
    return notpd == 2 ? "the inverse of H" : "H";
}

/* collective: every rank of ctx->comm calls (the root set->first holds H,
 * or with set->count > 0 every rank of the set does); otherwise only the
 * calling rank, which is the root. */
static mpq_err run_factor(mpq_ctx *ctx, const mpq_hfactor_opts *o, const char *name, int64_t n,
                          const double *H, const int64_t *perm, const mpq_hset *set, unsigned what,
                          const mpq_hfactor_backend *be, int collective, mpq_hfactor **out) {
    *out = NULL;
    mpq_hfactor *f = NULL;
    double *a = NULL;
    mpq_err err = MPQ_OK, local = MPQ_OK;
    const int root = set->first;
    const int holder = holds(ctx, set);
    /* float32 (hfactor_single.c): a holds n^2 floats until its probe fails */
    const int single = o->single && !be->collective && direct_kind(what);
    double mean = 0.0;

    local = mpq_malloc(ctx, 1, sizeof *f, (void **)&f);
    if (local == MPQ_OK) {
        f->n = n;
        f->backend = be->name;
        f->nprow = f->npcol = 1;
        if (!(n > 0))
            local = MPQ_ERROR(MPQ_ERR_ARG, "layer '%s': width %lld", name, (long long)n);
        else if (!(o->damping >= 0.0) || !(o->damping_max >= 0.0))
            local = MPQ_ERROR(MPQ_ERR_ARG, "layer '%s': damping %g / damping_max %g", name,
                              o->damping, o->damping_max);
        else if (o->block_size < 1)
            local = MPQ_ERROR(MPQ_ERR_ARG, "layer '%s': block size %d", name, o->block_size);
        else if ((what & MPQ_HF_RCHOL) && what != MPQ_HF_RCHOL)
            local = MPQ_ERROR(MPQ_ERR_ARG, "layer '%s': rchol is requested alone", name);
    }
    if (local == MPQ_OK && holder) {
        local = mpq_malloc_raw(ctx, n * n, single ? sizeof(float) : sizeof *a,
                               (void **)&a); /* each attempt fills it */
        if (local == MPQ_OK)
            local = check_h(ctx, name, n, H, perm, &mean, f);
    }
    if (collective) {
        MPQ_TRY(mpq_agree(ctx, local));
        /* Every rank learns the dead channels. */
        MPQ_MPI_TRY(MPI_Bcast(&f->n_dead, 1, MPI_INT64_T, root, ctx->comm));
        local = MPQ_OK;
        if (ctx->rank != root && f->n_dead) {
            mpq_free(f->dead); /* a holder of the set found them too */
            f->dead = NULL;
            local = mpq_malloc(ctx, f->n_dead, sizeof *f->dead, (void **)&f->dead);
        }
        MPQ_TRY(mpq_agree(ctx, local));
        for (int64_t off = 0; off < f->n_dead; off += 1 << 26) {
            int len = (int)(f->n_dead - off < (1 << 26) ? f->n_dead - off : (1 << 26));
            MPQ_MPI_TRY(MPI_Bcast(f->dead + off, len, MPI_INT64_T, root, ctx->comm));
        }
    } else {
        MPQ_TRY(local);
    }
    if (f->n_dead)
        mpq_log(ctx, MPQ_LOG_INFO, "layer '%s': %lld dead input channel(s) (H_ii = 0) set to 1",
                name, (long long)f->n_dead);

    double damping = o->damping;
    mpq_hfactor_opts oo = *o; /* single cleared once its probe fails */
    oo.single = single;
    o = &oo;
    for (;;) {
        int notpd = 0, ok = 0;
        if (holder) {
            f->lambda = damping * mean;
            if (!oo.single)
                damped(n, H, perm, f->lambda, a);
        }
        if (be->collective) {
            MPQ_TRY(be->attempt(ctx, o, n, a, set, what, f, &notpd));
        } else {
            local = !holder     ? MPQ_OK
                    : oo.single ? mpq_hfactor_single(ctx, n, H, perm, f->lambda, direct_kind(what),
                                                     (float *)a, f, &ok)
                                : be->attempt(ctx, o, n, a, set, what, f, &notpd);
            notpd = holder && oo.single && !ok ? 3 : notpd; /* 3: redo in double */
            if (collective) {
                MPQ_TRY(mpq_agree(ctx, local));
                MPQ_MPI_TRY(MPI_Bcast(&notpd, 1, MPI_INT, root, ctx->comm));
            } else {
                MPQ_TRY(local);
            }
        }
        if (notpd == 0)
            break;
        if (notpd == 3) {
            mpq_log_here(ctx, MPQ_LOG_INFO,
                         "layer '%s': float32 factor %s (probe residual %.2g); factoring in double",
                         name, f->probe > 0.0 ? "inexact" : "not positive definite", f->probe);
            oo.single = 0;
            if (holder) { /* n^2 doubles from here on */
                mpq_free(a);
                a = NULL;
                local = mpq_malloc_raw(ctx, n * n, sizeof *a, (void **)&a);
            }
            if (collective)
                MPQ_TRY(mpq_agree(ctx, local));
            else
                MPQ_TRY(local);
            continue;
        }
        double next = damping > 0.0 ? damping * 10.0 : RETRY_FLOOR;
        MPQ_ENSURE(next <= o->damping_max, MPQ_ERR_NUMERIC,
                   "layer '%s' (width %lld): Cholesky of %s failed with damping %g after %d "
                   "retries; the next damping %g exceeds hessian.damping_max = %g",
                   name, (long long)n, stage_name(notpd), damping, f->retries, next,
                   o->damping_max);
        (collective ? mpq_log : mpq_log_here)(
            ctx, MPQ_LOG_WARN,
            "layer '%s': Cholesky of %s failed with damping %g; retrying with damping %g", name,
            stage_name(notpd), damping, next);
        damping = next;
        f->retries++;
    }
    f->damping = damping;
    if (holder && f->single) {
        f->factor_f = (float *)a; /* V or U in float32 (hfactor_single.c) */
        a = NULL;
    } else if (holder && (what & MPQ_HF_INV_CHOL) && !f->inv_chol) {
        f->inv_chol = a; /* U was left in place */
        a = NULL;
    } else if (holder && what == MPQ_HF_RCHOL) {
        f->rchol = a; /* V was left in place */
        a = NULL;
    }
    if (collective)
        MPQ_MPI_TRY(MPI_Bcast(&f->lambda, 1, MPI_DOUBLE, root, ctx->comm));
    *out = f;
    f = NULL;
cleanup:
    mpq_free(a);

    mpq_hfactor_destroy(&f);
    return err;
}

mpq_err mpq_hfactor_compute(mpq_ctx *ctx, const mpq_hfactor_opts *o, const char *name, int64_t n,
                            const double *H, int root, unsigned what, mpq_hfactor **out) {
    *out = NULL;
    MPQ_CHECK(root >= 0 && root < ctx->size, MPQ_ERR_ARG, "layer '%s': root %d is not a rank", name,
              root);
    int64_t pi = 0;
    MPQ_CALL(mpq_registry_lookup(ctx, &mpq_hfactor_policy_reg, o->scalapack, MPQ_ERR_CONFIG,
                                 "hessian.scalapack: unknown policy", &pi));
    const mpq_hfactor_backend *be = mpq_hfactor_policies[pi]->choose(ctx, o, n);
    if (be->collective)
        MPQ_CHECK(ctx->comm != MPI_COMM_NULL, MPQ_ERR_CONFIG,
                  "layer '%s': hessian.scalapack = \"%s\" needs an MPI context", name,
                  o->scalapack);
    const mpq_hset set = {.first = root, .count = 0};
    MPQ_CALL(run_factor(ctx, o, name, n, H, NULL, &set, what, be, ctx->comm != MPI_COMM_NULL, out));
    return MPQ_OK;
}

mpq_err mpq_hfactor_compute_set(mpq_ctx *ctx, const mpq_hfactor_opts *o, const char *name,
                                int64_t n, const double *H, const int64_t *perm, int first,
                                int count, unsigned what, mpq_hfactor **out) {
    *out = NULL;
    MPQ_CHECK(ctx->comm != MPI_COMM_NULL, MPQ_ERR_ARG,
              "layer '%s': a factorisation over a set of ranks needs an MPI context", name);
    MPQ_CHECK(first >= 0 && count >= 1 && count <= ctx->size - first, MPQ_ERR_ARG,
              "layer '%s': ranks [%d, %d) are not ranks of %d", name, first, first + count,
              ctx->size);
    const mpq_hfactor_backend *be = mpq_hfactor_choose_backend(ctx, o, n);
    MPQ_CHECK(be, MPQ_ERR_CONFIG, "hessian.scalapack: unknown policy '%s'", o->scalapack);
    const mpq_hset set = {.first = first, .count = count};
    MPQ_CALL(run_factor(ctx, o, name, n, H, perm, &set, what, be, 1, out));
    return MPQ_OK;
}

mpq_err mpq_hfactor_local(mpq_ctx *ctx, const mpq_hfactor_opts *o, const char *name, int64_t n,
                          const double *H, unsigned what, mpq_hfactor **out) {
    MPQ_CALL(mpq_hfactor_local_perm(ctx, o, name, n, H, NULL, what, out));
    return MPQ_OK;
}

mpq_err mpq_hfactor_local_perm(mpq_ctx *ctx, const mpq_hfactor_opts *o, const char *name, int64_t n,
                               const double *H, const int64_t *perm, unsigned what,
                               mpq_hfactor **out) {
    const mpq_hset self = {.first = ctx->rank, .count = 0};
    MPQ_CALL(run_factor(ctx, o, name, n, H, perm, &self, what, &backend_lapack, 0, out));
    return MPQ_OK;
}
