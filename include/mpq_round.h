/* mpq_round.h: rounding methods (RTN, Hessian GPTQ, AdaRound-style learned
 * rounding, signed-gradient rounding) and their execution over the ranks.
 *
 * ---- Objective -------------------------------------------------------------
 * For a layer W [rows][cols] (row-major, [out][in]) with input statistics
 * H [cols][cols] (H = X^T X over the calibration set, mpq_hessian.h), the
 * quantized weights Q minimise the reconstruction error of the layer output
 *     L(Q) = tr((W - Q) H (W - Q)^T) = sum_r (w_r - q_r) H (w_r - q_r)^T
 * whose gradient is dL/dQ = 2 (Q - W) H. No activations are stored. L is a
 * sum of independent row terms, so every method works on a tile of rows
 * [r0, r1) given the full H, and a layer's loss is the sum of its tiles'
 * losses taken in tile order (deterministic).
 *
 * ---- Methods (a registry of ops tables, chosen by quant.method) ------------
 *   rtn        nearest grid point of every weight (the baseline).
 *   gptq       column by column with error feedback through V, the upper
 *              triangular factor of the damped H (H = V V^T); lazy block
 *              updates of round.block_size columns; optional activation
 *              order (columns by decreasing diag H, ties by index); group
 *              parameters fitted when the first column of the group comes
 *              up, on the weights updated so far (exactly, including the
 *              pending lazy updates), or fitted once beforehand
 *              (round.static_groups). Dead columns (H_ii = 0) get H_ii = 1
 *              (no coupling) and are rounded to nearest.
 *   adaround   learned choice between two neighbouring grid points per
 *              weight through a rectified sigmoid h = clip(1.2 sig(V) - 0.1,
 *              0, 1) initialised from the fractional position, regulariser
 *              lambda * sum(1 - |2h - 1|^beta) with beta annealed from
 *              beta_start to beta_end after a warm-up, Adam; hard rounding
 *              (h > 0.5) at the end.
 *   signround  AutoRound style: an additive offset o in [-0.5, 0.5] per
 *              weight (forward: hard rounding of u + o, gradient by straight-
 *              through estimation) and per-group clipping factors in
 *              [0.5, 1], updated with the sign of the gradient and a learning
 *              rate 1/iterations decaying linearly to zero.
 * adaround and signround are one engine with different defaults: the
 * variable (sigmoid | offset), the optimizer (adam | signsgd | sgdm), scale
 * learning and the learning rates can be set for either. Both start from
 * RTN or from the GPTQ solution (round.init) and keep, row by row, the best
 * hard-rounded iterate, so they never end above their starting point.
 *
 * Learned scales: each group's effective scale is s0 * m with m in
 * [0.5, 1.5] (adaround) or the clipping range [0.5, 1] (signround), with the
 * exact gradient sum_c dL/dq_c * (L_c - z) (codes held fixed), stored back in
 * the spec's scale format (fp16, E8M0, E4M3, ...). Zero-points, channel
 * signs and per-tensor values (tensor granularity, the NVFP4 tensor scale,
 * the powerexp exponent) are fitted before tiling and never learned.
 *
 * The objective of the learned methods is normalised per row:
 *     cols * L_r(Q) / L_r(start) + lambda * sum_c reg(h_c)
 * so that learning rates and lambda do not depend on the scale of H.
 *
 * RTN guard (round.rtn_guard, default on): after a method ran on a tile, a
 * row whose loss exceeds its RTN loss gets its RTN codes and parameters back
 * (rows are independent: groups never span rows). Off, RTN's loss is not
 * measured (rtn_loss NaN) except by the rtn method.
 *
 * ---- Parallel execution and bit-identity -----------------------------------
 * mpq_round_block spreads the tasks (layer x candidate spec x tile of
 * round.tile_rows output rows) over the ranks: tasks sorted by estimated
 * cost (rows*cols for RTN, rows*cols^2 for GPTQ, iterations*rows*cols^2 for
 * learned rounding) go one by one to the least loaded rank, a rank's first
 * task of a layer also paying the cols^3 factorisation (LPT greedy,
 * deterministic). Tiles have a fixed row count that does not depend on the
 * number of ranks, every tile runs the same arithmetic wherever it runs, H
 * is factorised with LAPACK on each rank that needs it (never on a grid
 * whose shape depends on the rank count), and results are combined by
 * exact integer-like sums (every element has one contributor), so codes,
 * parameters and losses are bit-identical for any number of ranks (given
 * the same BLAS with one thread per rank).
 */
#ifndef MPQ_ROUND_H
#define MPQ_ROUND_H

#include <stdint.h>

#include "mpq_err.h"
#include "mpq_hessian.h"
#include "mpq_quant.h"
#include "mpq_registry.h"

struct mpq_ctx;
struct mpq_config;
struct cJSON;

/* ---- options --------------------------------------------------------------- */

typedef enum mpq_rvar {
    MPQ_RVAR_AUTO = 0, /* the method's default */
    MPQ_RVAR_SIGMOID,  /* rectified sigmoid h(V) (AdaRound) */
    MPQ_RVAR_OFFSET,   /* additive offset o in [-0.5, 0.5] (AutoRound) */
    MPQ_RVAR_COUNT
} mpq_rvar;

typedef enum mpq_ropt {
    MPQ_ROPT_AUTO = 0, /* the method's default */
    MPQ_ROPT_ADAM,     /* Adam (0.9, 0.999, 1e-8) */
    MPQ_ROPT_SIGNSGD,  /* x -= lr_t sign(g), lr_t decaying linearly to 0 */
    MPQ_ROPT_SGDM,     /* SGD with momentum */
    MPQ_ROPT_COUNT
} mpq_ropt;

typedef enum mpq_rinit { MPQ_RINIT_RTN = 0, MPQ_RINIT_GPTQ, MPQ_RINIT_COUNT } mpq_rinit;

typedef struct mpq_round_opts {
    /* GPTQ */
    int64_t block_size;  /* columns per lazy block update (>= 1) */
    int act_order;       /* process columns by decreasing diag H */
    int static_groups;   /* group parameters fitted before GPTQ starts */
    int gptq_float;      /* lazy updates: 1 float32 (SGEMM), 0 double, -1 auto (by width) */
    mpq_hfactor_opts hf; /* damping of H (hessian.damping, hessian.damping_max) */
    /* learned rounding (adaround, signround) */
    int64_t iters;      /* optimisation steps per tile */
    double lr;          /* learning rate of the rounding variables (0: auto) */
    double lr_scale;    /* learning rate of the scale factors (0: auto) */
    double lambda;      /* weight of the rounding regulariser (sigmoid variable) */
    double beta_start;  /* regulariser exponent after the warm-up ... */
    double beta_end;    /* ... annealed linearly to this at the last step */
    double warmup;      /* fraction of the steps without regulariser */
    mpq_rinit init;     /* starting point: RTN or the GPTQ solution */
    mpq_ropt optimizer; /* AUTO: adam (adaround), signsgd (signround) */
    double momentum;    /* sgdm momentum */
    int learn_scales;   /* -1: method default (adaround no, signround yes), 0, 1 */
    mpq_rvar variable;  /* AUTO: sigmoid (adaround), offset (signround) */
    uint64_t seed;      /* seed of the initial jitter */
    double init_noise;  /* uniform jitter of the initial fractional position */
    /* common */
    int64_t tile_rows; /* output rows per task (fixed: part of the bits) */
    int rtn_guard;     /* keep RTN for rows where the method does worse */
    /* GPTQ: rate-aware rounding (0: off). Each weight takes, of its two
     * neighbouring grid points, the code minimising its error through the
     * factor plus rate_lambda x u x its length in bits under the layer's
     * RTN code histogram, u the layer's mean error of nearest rounding per
     * weight through the factor (mpq_round_rate_weight). */
    double rate_lambda;
} mpq_round_opts;

/* Local. The defaults of the configuration table. */
void mpq_round_opts_default(mpq_round_opts *o);

struct mpq_round_method;

/* Local. Options, quantizer spec and method from the configuration (round,
 * quant and hessian sections). A bad quant.spec is an MPQ_ERR_CONFIG error
 * naming the configuration file, the key and the problem. */
mpq_err mpq_round_from_config(struct mpq_ctx *ctx, const struct mpq_config *cfg, mpq_round_opts *o,
                              mpq_qspec *spec, const struct mpq_round_method **method);

/* ---- the layer problem -------------------------------------------------- */

/* Everything the tiles of one (layer, spec, method) share. Built on each rank
 * that works on the layer. Fields are public for reading. */
typedef struct mpq_round_problem {
    char name[160];
    int64_t rows, cols;
    const float *W;  /* [rows][cols] weights (borrowed) */
    const double *H; /* [cols][cols] statistics (borrowed), undamped */
    mpq_qspec spec;
    float *imp;    /* [cols] diag H as importances for fitting (owned) */
    int64_t *perm; /* [cols] GPTQ column order (owned) */
    /* [cols][cols] GPTQ's factor in perm order, or NULL (owned), upper
     * (strict lower part zero). With vform: Hd = V V^T (V upper), M[j][k] =
     * V[j][k] / V[k][k] above the diagonal and M[j][j] = V[j][j]; else U
     * with Hd^-1 = U^T U (round_gptq.c). NULL with float32 updates: then
     * only Mf holds it. */
    double *M;
    int vform;     /* M is the scaled V (mpq_round_gptq_vform) */
    double *mdiag; /* [cols] M's diagonal, contiguous (owned) */
    float
        *Mf; /* [cols][cols] M in float32 with float32 updates (mpq_round_gptq_float), else NULL */
    int64_t n_dead;    /* columns with H_ii == 0 */
    double damping;    /* relative damping used for M */
    double lambda;     /* absolute damping added to H's diagonal for M */
    int factor_single; /* 1: M was factored in float32 (hfactor.c's probe passed) */
    double *added;     /* [cols] with M: what Hd adds to H's diagonal, column order (owned) */
    int tensor_level;  /* spec has per-tensor values: params fitted on the whole layer */
    mpq_qparams *base; /* whole-layer fit when tensor_level, else NULL (owned) */
    int refit_ok;      /* GPTQ may refit groups (gran group, no per-tensor values) */
    /* [MPQ_QMAXCODES] with rate_lambda > 0 and GPTQ: each code's length in
     * bits, -log2 p(c), p the Laplace-smoothed histogram of the whole
     * layer's RTN codes (the same on every rank that rounds the layer);
     * else NULL (owned) */
    double *rate_len;
    double rate_unit; /* with rate_len: mean over columns of GPTQ's error weight / 12 */
} mpq_round_problem;

/* Local. Builds the problem; factorises H (LAPACK, on this rank) when the
 * method needs it with these options. W and H are borrowed and must outlive
 * the problem. Owner: caller (mpq_round_problem_destroy). */
mpq_err mpq_round_problem_create(struct mpq_ctx *ctx, const mpq_round_opts *o,
                                 const struct mpq_round_method *method, const char *name,
                                 const mpq_qspec *spec, int64_t rows, int64_t cols, const float *W,
                                 const double *H, mpq_round_problem **out);
/* NULL-safe; sets *pb to NULL. */
void mpq_round_problem_destroy(mpq_round_problem **pb);

/* ---- methods ---------------------------------------------------------------- */

/* GPTQ's work per weight besides the rows x cols^2 of its updates and its
 * RTN loss, in units of that term's per-column work (fitted on the run's
 * per-layer times: rounding, fits, losses and copies of every weight); the
 * plans that balance rounding over the ranks count rows x cols x (cols +
 * this). */
#define MPQ_ROUND_GPTQ_ELEM 1024.0
/* The factorisation of a cols x cols H in the same units: its 2/3 cols^3
 * flops run about 2.7 times faster per unit than GPTQ's work (bench_round,
 * 4096^2: factor 1.3 s for 4.6e10 flops, rounding 6.6 s for 8.6e10 units),
 * hence cols^3 / 4. */
#define MPQ_ROUND_FACTOR_COST(cols) (0.25 * (double)(cols) * (double)(cols) * (double)(cols))

typedef struct mpq_round_stats {
    double loss;          /* final L of the rows */
    double rtn_loss;      /* L of nearest rounding with the initial fit (NaN: not measured) */
    double init_loss;     /* L of the learned methods' starting point (else = loss) */
    int64_t iters;        /* optimisation steps run (0 for rtn/gptq) */
    int64_t rows_guarded; /* rows given back their RTN solution */
    double seconds;       /* wall time */
    double *row_loss;     /* in: room for the rows' final losses (or NULL) */
    int row_loss_set;     /* out: the method filled row_loss (exact up to rounding) */
} mpq_round_stats;

/* A rounding method. `run` rounds rows [r0, r1) of pb: on entry p (the
 * whole layer's parameters) holds the fit of those rows; it writes codes
 * [(r1 - r0)][cols] and may change the parameters of those rows' groups
 * only; it sets st->iters and st->init_loss (others are set by the
 * caller). Local. */
typedef struct mpq_round_method {
    const char *name;
    const char *summary;
    /* 1 when the method needs pb->M with these options. */
    int (*needs_factor)(const mpq_round_opts *o);
    /* Relative cost of a tile of nr rows (for the work plan). */
    double (*cost)(const mpq_round_opts *o, int64_t nr, int64_t cols);
    mpq_err (*run)(struct mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_problem *pb,
                   mpq_qparams *p, int64_t r0, int64_t r1, uint8_t *codes, mpq_round_stats *st);
    /* Adds the settings the method actually uses with these options (AUTO
     * resolved) to the JSON object out; may be NULL (no settings). */
    void (*settings)(const mpq_round_opts *o, struct cJSON *out);
} mpq_round_method;

/* Local. A new JSON object with the method's name and the settings it uses
 * with these options (AUTO values resolved: optimizer, variable,
 * learn_scales, learning rates, ...), plus tile_rows and rtn_guard; NULL if
 * out of memory. Owner: caller (cJSON_Delete). For the run report, the
 * round_layer event and the checkpoint provenance. */
struct cJSON *mpq_round_settings_json(const mpq_round_opts *o, const mpq_round_method *m);

/* GPTQ's lazy updates in float32 for a layer of `cols` input columns:
 * o->gptq_float when set, else (auto) from MPQ_GPTQ_FLOAT_MIN_COLS
 * columns on, where they cost most; narrower layers stay in double. The
 * choice depends on the shape alone (the same at any rank count). */
#define MPQ_GPTQ_FLOAT_MIN_COLS 1024
int mpq_round_gptq_float(const mpq_round_opts *o, int64_t cols);

/* The registry (NULL-terminated): rtn, gptq, adaround, signround; its
 * descriptor (quant.method, mpq_registry.h). */
extern const mpq_round_method *const mpq_round_methods[];
extern const mpq_registry mpq_round_method_reg;
/* The method of that name, or NULL. Local. */
const mpq_round_method *mpq_round_method_find(const char *name);

/* Local. Rounds the tile [r0, r1) of pb with the method: fits the rows'
 * parameters into p (or copies them from pb->base), computes RTN, runs the
 * method, applies the RTN guard, and fills codes [(r1 - r0)][cols] and every
 * field of *st with exact losses. p must have pb's spec and shape. */
mpq_err mpq_round_tile(struct mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_method *method,
                       const mpq_round_problem *pb, mpq_qparams *p, int64_t r0, int64_t r1,
                       uint8_t *codes, mpq_round_stats *st);

/* ---- the objective ---------------------------------------------------------- */

/* Local. loss[r] = (w_r - q_r) H (w_r - q_r)^T for nr rows of W, Q
 * [nr][cols] (fp32), H [cols][cols]; accumulated in double. */
mpq_err mpq_round_loss(struct mpq_ctx *ctx, int64_t cols, const double *H, int64_t nr,
                       const float *W, const float *Q, double *loss);
/* Local. G [nr][cols] = 2 (Q - W) H, the gradient of sum_r loss[r]. */
mpq_err mpq_round_grad(struct mpq_ctx *ctx, int64_t cols, const double *H, int64_t nr,
                       const float *W, const float *Q, double *G);

/* ---- a block of layers over the ranks --------------------------------------- */

/* Local. 1 when spec has values fitted over the whole layer (per-tensor
 * granularity, a tensor-level value of its quantizer, E4M3 scales):
 * mpq_round_block_owned fits them from the job's weights on every rank that
 * holds the job's result, so every such rank needs W. */
int mpq_round_fits_whole(const mpq_qspec *spec);

/* One (layer, candidate) to round. W must be present and identical on
 * the ranks that own the job, and for a spec that mpq_round_fits_whole on
 * every rank that holds its result (every rank, or the first owner with
 * owned codes); H on the ranks that own the job (identical there), diag on
 * every rank. The owners are the ranks [owners.first, owners.first +
 * owners.count); count 0: every rank. */
typedef struct mpq_round_job {
    const char *name; /* layer name for logs and errors */
    int64_t rows, cols;
    const float *W;     /* [rows][cols] */
    const double *H;    /* [cols][cols] (NULL outside the owners) */
    const double *diag; /* [cols] diag H (NULL: read from H, on every rank) */
    mpq_hset owners;
    mpq_qspec spec;
    const mpq_round_method *method;
    /* has_rate = 1: this job's round.rate_lambda instead of the options'
     * (a rate-constrained candidate); 0 (a zeroed job): the options' */
    int has_rate;
    double rate_lambda;
} mpq_round_job;

/* Local. The owners of ngroups inputs (statistics) of a block over nranks
 * ranks, from each group's rounding cost (setup included): the costs are
 * laid end to end in group order and cut into nranks equal stretches; a
 * group's owners are the ranks whose stretch meets its own (a contiguous
 * range, at least one rank; neighbouring groups may share the rank at
 * their boundary), less an end rank that has other work and whose share
 * of the group is below setup[g] (what each owner pays once: the
 * factorisation; setup may be NULL). A rank holds the H of the few groups
 * it works on. The same on every rank. */
void mpq_round_owners(int64_t ngroups, const double *cost, const double *setup, int nranks,
                      mpq_hset *sets);

/* The outcome of one job, identical on every rank (q: see
 * mpq_round_block_owned). */
typedef struct mpq_round_result {
    mpq_qlayer *q;        /* codes, parameters, packed (owned) */
    int64_t bits;         /* mpq_qlayer_bits of q, on every rank */
    double loss;          /* sum of tile losses in tile order */
    double rtn_loss;      /* same for RTN */
    int64_t iters;        /* optimisation steps per tile */
    int64_t rows_guarded; /* rows that kept RTN */
    int64_t ntiles;
    double seconds;    /* sum of the tiles' wall times over ranks */
    double entropy;    /* empirical entropy of the codes, bits per code */
    int factor_single; /* 1: GPTQ's factor was computed in float32 */
} mpq_round_result;

/* One task of the plan. */
typedef struct mpq_round_task {
    int64_t job, tile, r0, r1;
    double cost;
    int rank;
} mpq_round_task;

/* Local. The deterministic plan for nranks ranks: tasks of every job in
 * (job, tile) order with their rank. Owner: caller (mpq_free(*tasks)). */
mpq_err mpq_round_plan(struct mpq_ctx *ctx, const mpq_round_opts *o, int64_t njobs,
                       const mpq_round_job *jobs, int nranks, int64_t *ntasks,
                       mpq_round_task **tasks);

/* Collective over ctx->comm (serial contexts work alone). Rounds every job,
 * spreading the tiles over the ranks, and gives every rank the complete
 * results. Logs one line and emits one "round_layer" event per job (method,
 * quantizer, bits, group size, RTN loss, final loss, iterations, time).
 * results [njobs] is filled; free with mpq_round_results_free. */
mpq_err mpq_round_block(struct mpq_ctx *ctx, const mpq_round_opts *o, int64_t njobs,
                        const mpq_round_job *jobs, mpq_round_result *results);
/* Collective. mpq_round_block where, with owned = 1, a job's codes and
 * parameters go to the first of its owners only (the other owners send
 * their tiles there and keep nothing; q is NULL on every rank but that
 * one), while the figures (losses, bits, iterations, time) reach every
 * rank. owned = 0: mpq_round_block. */
mpq_err mpq_round_block_owned(struct mpq_ctx *ctx, const mpq_round_opts *o, int64_t njobs,
                              const mpq_round_job *jobs, int owned, mpq_round_result *results);
/* Local. The empirical entropy of n codes, -sum p log2 p (bits per code),
 * as mpq_round_result.entropy. */
double mpq_round_code_entropy(const uint8_t *codes, int64_t n);
/* NULL-safe. Releases the layers of n results (the array itself is the
 * caller's). */
void mpq_round_results_free(int64_t n, mpq_round_result *results);

/* Local. The stored form of an effective group scale eff (what
 * mpq_qscale_of gives back, before the tensor scale): rounded to p's scale
 * format, positive. */
float mpq_round_store_scale(const mpq_qparams *p, double eff);

#endif
