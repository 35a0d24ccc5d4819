/* round_gptq_loop.h: the GPTQ column loop of round_gptq.c, written once for
 * both precisions of its updates. The includer defines GPTQ_REAL (double or
 * float: the weights being updated, the differences and M), GPTQ_GEMM
 * (cblas_dgemm or cblas_sgemm), GPTQ_TRSM (cblas_dtrsm or cblas_strsm),
 * GPTQ_GATHER, GPTQ_VFIT, GPTQ_SEGMENT and GPTQ_LOOP (the functions' names)
 * and GPTQ_SEG (the segment's state). The scalar work (rounding, differences, the
 * loss) is in double either way; the diagonal of V comes from pb->mdiag. Not a header of its own:
 * no guard. */

/* The current weights of columns [c0, c0 + len) (a group about to be
 * fitted at column j; Err holds what is spread and M the factor, as in the
 * loop) of the tile's nr rows into gbuf [nr][len]: Wd plus
 * the updates still pending, the block's errors for columns after the
 * block and the sub-block's for the rest of the block. at = {j1 (block
 * start), s1 (sub-block start), j, s2 (sub-block end), j2 (block end)}.
 * The group's columns are ordered so that those pending since j1 come
 * first and those pending since s1 next, and the rows of M they need are
 * copied once into sc->ug; each row then runs contiguous loops. Every
 * value is the same sum in the same order as term by term. */
static void GPTQ_GATHER(const GPTQ_REAL *M, const GPTQ_REAL *Wd, const GPTQ_REAL *Err, int64_t nr,
                        int64_t n, int64_t B, const int64_t at[5], const int64_t *pos, int64_t c0,
                        int64_t len, gptq_scratch *sc, float *gbuf) {
    const int64_t j1 = at[0], s1 = at[1], j = at[2], s2 = at[3], j2 = at[4];
    int64_t m1 = 0, m2 = 0; /* columns pending since j1; since j1 or s1 */
    for (int cls = 0; cls < 3; cls++)
        for (int64_t cc = c0; cc < c0 + len; cc++) {
            const int64_t jj = pos[cc];
            if ((jj >= j2 ? 0 : jj >= s2 ? 1 : 2) != cls)
                continue;
            sc->ord[m2++] = cc;
            m1 = cls == 0 ? m2 : m1;
        }
    m2 = m1;
    while (m2 < len && pos[sc->ord[m2]] >= s2)
        m2++;
    for (int64_t t = j1; t < j; t++) {
        const int64_t m = t < s1 ? m1 : m2;
        for (int64_t k = 0; k < m; k++)
            sc->ug[(t - j1) * len + k] = (double)M[t * n + pos[sc->ord[k]]];
    }
    for (int64_t i = 0; i < nr; i++) {
        double *v = sc->v;
        for (int64_t k = 0; k < len; k++)
            v[k] = (double)Wd[i * n + pos[sc->ord[k]]];
        for (int64_t t = j1; t < j; t++) {
            const int64_t m = t < s1 ? m1 : m2;
            const double e = (double)Err[i * B + (t - j1)];
            const double *u = sc->ug + (t - j1) * len;
            for (int64_t k = 0; k < m; k++)
                v[k] += e * u[k];
        }
        for (int64_t k = 0; k < len; k++)
            gbuf[i * len + (sc->ord[k] - c0)] = (float)v[k];
    }
}

/* What GPTQ_SEGMENT reads and updates: the tile's weights Wd in the
 * column order and its pending errors Err (GPTQ_LOOP), the V form's
 * original weights W0, and a panel of GPTQ_ROWS x GPTQ_SUB weights with
 * the errors eb of one column. */
typedef struct {
    const mpq_round_problem *pb;
    const mpq_qparams *p;
    const GPTQ_REAL *M;
    GPTQ_REAL *Wd, *Err, *panel, *eb;
    const float *W0;
    int64_t nr, r0, B;
    double rate;
} GPTQ_SEG;

/* Columns [a, b) of the sub-block [s1, s2) (seg = {j1, s1, a, b, s2}) for
 * every row of the tile: rounded in turn, each column's error spread at
 * once over the sub-block's later columns. The rows go through in chunks
 * of GPTQ_ROWS whose columns [a, s2) are copied into sg->panel, column
 * after column, so that the spreading runs over contiguous rows; each
 * weight sees the same operations in the same order as row by row. */
static void GPTQ_SEGMENT(GPTQ_SEG *sg, const int64_t seg[5], uint8_t *codes, float *wq,
                         double *loss) {
    const mpq_round_problem *pb = sg->pb;
    const int64_t j1 = seg[0], a = seg[2], b = seg[3], s2 = seg[4], n = pb->cols, B = sg->B;
    const int64_t *perm = pb->perm;
    GPTQ_REAL *P = sg->panel, *eb = sg->eb;
    /* Integer grids without rate: the panel's column rounded at once
     * (mpq_qnearest_int), with the scales of its rows' group. */
    const int fast = sg->rate == 0.0 && !sg->p->sign && sg->p->tab[0].ident;
    const float l0 = sg->p->tab[0].sorted[0], top = (float)(sg->p->tab[0].n - 1);
    float gs[GPTQ_ROWS], ginv[GPTQ_ROWS], gz[GPTQ_ROWS], gv[GPTQ_ROWS];
    uint8_t gc[GPTQ_ROWS];
    for (int64_t i0 = 0; i0 < sg->nr; i0 += GPTQ_ROWS) {
        const int64_t rc = sg->nr - i0 < GPTQ_ROWS ? sg->nr - i0 : GPTQ_ROWS;
        for (int64_t ii = 0; ii < rc; ii++)
            for (int64_t t = 0; t < s2 - a; t++)
                P[t * GPTQ_ROWS + ii] = sg->Wd[(i0 + ii) * n + a + t];
        for (int64_t j = a, gk = -1; j < b; j++) {
            const int64_t cj = perm[j];
            const double d = pb->mdiag[j];
            const GPTQ_REAL *mrow = sg->M + j * n;
            const GPTQ_REAL *pj = P + (j - a) * GPTQ_ROWS;
            if (fast && cj / sg->p->gcols != gk) {
                gk = cj / sg->p->gcols;
                for (int64_t ii = 0; ii < rc; ii++) {
                    const int64_t g = mpq_qgroup_of(sg->p, sg->r0 + i0 + ii, cj);
                    gs[ii] = mpq_qscale_of(sg->p, g);
                    ginv[ii] = 1.0f / gs[ii];
                    gz[ii] = mpq_qzero_of(sg->p, g);
                }
            }
            if (fast)
                for (int64_t ii = 0; ii < rc; ii++)
                    gc[ii] =
                        mpq_qnearest_int(gs[ii], ginv[ii], gz[ii], l0, top, (float)pj[ii], &gv[ii]);
            for (int64_t ii = 0; ii < rc; ii++) {
                const int64_t i = i0 + ii, r = sg->r0 + i;
                const double w = (double)pj[ii];
                float v;
                if (fast) {
                    codes[i * n + cj] = gc[ii];
                    v = gv[ii];
                } else {
                    codes[i * n + cj] = mpq_quant_nearest_at(sg->p, r, cj, (float)w, &v);
                }
                if (sg->rate > 0.0)
                    codes[i * n + cj] = gptq_rate_pick(
                        sg->p, pb->rate_len, r, cj, w, pb->vform ? d * d : 1.0 / (d * d),
                        sg->rate * mpq_round_rate_weight(pb, sg->p, r, cj), codes[i * n + cj], &v);
                if (wq)
                    wq[i * n + cj] = (float)w;
                /* column j of (W - Q) V, and what is spread */
                const double x = pb->vform ? d * (w - (double)v) : (w - (double)v) / d;
                const GPTQ_REAL e =
                    (GPTQ_REAL)(pb->vform ? (double)sg->W0[i * n + j] - (double)v : -x);
                sg->Err[i * B + (j - j1)] = e;
                eb[ii] = e;
                if (loss)
                    loss[i] += x * x;
            }
            for (int64_t jj = j + 1; jj < s2; jj++) {
                const GPTQ_REAL m = mrow[jj];
                GPTQ_REAL *pq = P + (jj - a) * GPTQ_ROWS;
                for (int64_t ii = 0; ii < rc; ii++)
                    pq[ii] += eb[ii] * m;
            }
        }
        for (int64_t ii = 0; ii < rc; ii++)
            for (int64_t t = 0; t < s2 - a; t++)
                sg->Wd[(i0 + ii) * n + a + t] = P[t * GPTQ_ROWS + ii];
    }
}

/* The V form's group fit (natural column order): gbuf [nr][len] holds
 * columns [c0, c0 + len) at position c0 as the V form has them, w + S
 * diag(V)^-1 with S the partial sums over the columns before c0; the U
 * form's weights there are w + S V_gg^-1 (V_gg the group's diagonal block
 * of V, whose inverse is U's), that is w + (gbuf - w) Mu_gg^-1, Mu_gg the
 * unit upper block of M: one triangular solve per group, nr len^2 flops.
 * x: scratch [nr][len]. */
static void GPTQ_VFIT(const GPTQ_REAL *M, const float *W0, int64_t nr, int64_t n, int64_t c0,
                      int64_t len, GPTQ_REAL *x, float *gbuf) {
    for (int64_t i = 0; i < nr; i++)
        for (int64_t k = 0; k < len; k++)
            x[i * len + k] = (GPTQ_REAL)gbuf[i * len + k] - (GPTQ_REAL)W0[i * n + c0 + k];
    GPTQ_TRSM(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasUnit, (int)nr, (int)len,
              (GPTQ_REAL)1.0, M + c0 * n + c0, (int)n, x, (int)len);
    for (int64_t i = 0; i < nr; i++)
        for (int64_t k = 0; k < len; k++)
            gbuf[i * len + k] = (float)((GPTQ_REAL)W0[i * n + c0 + k] + x[i * len + k]);
}

static mpq_err GPTQ_LOOP(mpq_ctx *ctx, const mpq_round_opts *o, const mpq_round_problem *pb,
                         const GPTQ_REAL *M, mpq_qparams *p, int64_t r0, int64_t r1, double rate,
                         uint8_t *codes, float *wq, double *loss) {
    mpq_err err = MPQ_OK;
    GPTQ_REAL *Wd = NULL, *Err = NULL, *panel = NULL, *eb = NULL, *gx = NULL;
    float *W0 = NULL; /* V form: the original weights in the column order */
    int64_t *pos = NULL;
    uint8_t *fitted = NULL;
    float *gbuf = NULL;
    gptq_scratch sc = {0};
    mpq_qparams *tmp = NULL;
    const int64_t n = pb->cols, nr = r1 - r0;
    const int64_t B = o->block_size < 1 ? 1 : (o->block_size > n ? n : o->block_size);
    const int64_t *perm = pb->perm;
    MPQ_CHECK(M, MPQ_ERR_INTERNAL, "round: layer '%s': GPTQ without a factor", pb->name);
    int nri, ni, Bi;
    MPQ_CALL(mpq_to_int(ctx, nr, "tile rows (BLAS)", &nri));
    MPQ_CALL(mpq_to_int(ctx, n, "layer width (BLAS)", &ni));
    MPQ_CALL(mpq_to_int(ctx, B, "GPTQ block size", &Bi));
    const int refit = pb->refit_ok && !o->static_groups;
    const int vform = pb->vform;
    MPQ_CHECK(!(refit && vform && o->act_order), MPQ_ERR_INTERNAL,
              "round: layer '%s': refitted groups in activation order need GPTQ's U form",
              pb->name);

    MPQ_ALLOC_TRY(Wd, nr * n);
    MPQ_ALLOC_TRY(Err, nr * B);
    MPQ_ALLOC_TRY(pos, n);
    for (int64_t j = 0; j < n; j++)
        pos[perm[j]] = j;
    if (vform)
        MPQ_ALLOC_TRY(W0, nr * n);
    for (int64_t i = 0; i < nr; i++) {
        const float *w = pb->W + (r0 + i) * n;
        for (int64_t j = 0; j < n; j++)
            Wd[i * n + j] = (GPTQ_REAL)w[perm[j]];
        for (int64_t j = 0; vform && j < n; j++)
            W0[i * n + j] = w[perm[j]];
    }
    if (loss)
        for (int64_t i = 0; i < nr; i++)
            loss[i] = 0.0;
    MPQ_ALLOC_TRY(panel, GPTQ_ROWS * GPTQ_SUB);
    MPQ_ALLOC_TRY(eb, GPTQ_ROWS);
    GPTQ_SEG sg = {pb, p, M, Wd, Err, panel, eb, W0, nr, r0, B, rate};
    if (refit) {
        MPQ_ALLOC_TRY(fitted, p->gpr);
        MPQ_ALLOC_TRY(gbuf, nr * p->gcols);
        MPQ_ALLOC_TRY(sc.ug, B * p->gcols);
        MPQ_ALLOC_TRY(sc.v, p->gcols);
        MPQ_ALLOC_TRY(sc.ord, p->gcols);
        if (vform)
            MPQ_ALLOC_TRY(gx, nr * p->gcols);
    }

    for (int64_t j1 = 0; j1 < n; j1 += B) {
        const int64_t j2 = j1 + B < n ? j1 + B : n, nb = j2 - j1;
        for (int64_t s1 = j1; s1 < j2; s1 += GPTQ_SUB) {
            const int64_t s2 = s1 + GPTQ_SUB < j2 ? s1 + GPTQ_SUB : j2;
            /* Segments [a, b) of the sub-block end where a group is first met
             * (its fit needs every row up to there); inside a segment each row
             * runs through its columns, with the same operations in the same
             * order per row as column by column. */
            for (int64_t a = s1, b; a < s2; a = b) {
                const int64_t c = perm[a];
                if (refit && !fitted[c / p->gcols]) {
                    /* First column of this group in the processing order: fit the
                     * group on its current weights, adding the updates of this
                     * block that are still pending for columns past its end. */
                    const int64_t k = c / p->gcols, c0 = k * p->gcols;
                    const int64_t len = c0 + p->gcols < n ? p->gcols : n - c0;
                    fitted[k] = 1;
                    const int64_t at[5] = {j1, s1, a, s2, j2};
                    GPTQ_GATHER(M, Wd, Err, nr, n, B, at, pos, c0, len, &sc, gbuf);
                    if (vform)
                        GPTQ_VFIT(M, W0, nr, n, c0, len, gx, gbuf);
                    MPQ_TRY(mpq_round_refit_group(ctx, pb, p, r0, r1, c0, len, gbuf, &tmp));
                }
                for (b = a + 1; b < s2 && !(refit && !fitted[perm[b] / p->gcols]); b++)
                    ;
                const int64_t seg[5] = {j1, s1, a, b, s2};
                GPTQ_SEGMENT(&sg, seg, codes, wq, loss);
            }
            if (s2 < j2)
                GPTQ_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, nri, (int)(j2 - s2),
                          (int)(s2 - s1), (GPTQ_REAL)1.0, Err + (s1 - j1), Bi, M + s1 * n + s2, ni,
                          (GPTQ_REAL)1.0, Wd + s2, ni);
        }
        if (j2 < n)
            GPTQ_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, nri, ni - (int)j2, (int)nb,
                      (GPTQ_REAL)1.0, Err, Bi, M + j1 * n + j2, ni, (GPTQ_REAL)1.0, Wd + j2, ni);
    }
    /* The loss is |(W - Q) V|^2 through the damped H less the damping's
     * own share, d diag(added) d^T, summed per row once the codes are
     * final. */
    for (int64_t i = 0; loss && i < nr; i++) {
        const float *w = pb->W + (r0 + i) * n;
        double s = 0.0;
        for (int64_t j = 0; j < n; j++) {
            const int64_t c = perm[j];
            const double dw =
                (double)w[c] - (double)mpq_quant_value_at(p, r0 + i, c, codes[i * n + c]);
            s += pb->added[j] * dw * dw;
        }
        loss[i] -= s;
    }
cleanup:
    mpq_qparams_destroy(&tmp);
    MPQ_FREE(sc.ord);
    MPQ_FREE(sc.v);
    MPQ_FREE(sc.ug);
    MPQ_FREE(gbuf);
    MPQ_FREE(fitted);
    MPQ_FREE(pos);
    MPQ_FREE(Err);
    MPQ_FREE(gx);
    MPQ_FREE(eb);
    MPQ_FREE(panel);
    MPQ_FREE(W0);
    MPQ_FREE(Wd);
    return err;
}
