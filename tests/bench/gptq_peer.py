"""gptq_peer.py ROWS COLS: a PyTorch GPTQ, the peer that bench_peer.sh times
next to mpquant's on the same shape and thread count.

The algorithm of the GPTQ paper as the usual PyTorch implementations run it:
float32 weights and Hessian, relative damping 0.01, the upper Cholesky
factor of H^-1, column blocks of 128 whose trailing update is one GEMM,
asymmetric 4-bit min-max groups of 128 fitted when the column loop reaches
them, columns in their natural order. W is uniform random, H a
diagonally dominant symmetric matrix (its values do not change the work).
Prints one JSON line: factor_s (damping and the factor), round_s (the
column loop), threads, and the layer loss relative to round-to-nearest.
"""
import json
import sys
import time

import torch

BITS, GROUP, BLOCK, DAMP = 4, 128, 128, 0.01


def fit_group(w):
    """Scale and zero point of each row of w [rows][group], min-max asymmetric."""
    lo = torch.clamp(w.min(dim=1).values, max=0.0)
    hi = torch.clamp(w.max(dim=1).values, min=0.0)
    scale = (hi - lo) / (2**BITS - 1)
    scale[scale == 0] = 1.0
    zero = torch.round(-lo / scale)
    return scale, zero


def quantize(w, scale, zero):
    q = torch.clamp(torch.round(w / scale) + zero, 0, 2**BITS - 1)
    return scale * (q - zero)


def gptq(W, H):
    rows, cols = W.shape
    W = W.clone()
    Q = torch.zeros_like(W)
    t0 = time.perf_counter()
    H = H.clone()
    H.diagonal().add_(DAMP * H.diagonal().mean())
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    factor_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scale = zero = None
    for b0 in range(0, cols, BLOCK):
        b1 = min(b0 + BLOCK, cols)
        W1 = W[:, b0:b1].clone()
        Err = torch.zeros_like(W1)
        Hb = Hinv[b0:b1, b0:b1]
        for i in range(b1 - b0):
            c = b0 + i
            if c % GROUP == 0:
                g1 = min(c + GROUP, cols)
                # the group's columns as updated so far
                scale, zero = fit_group(torch.cat([W1[:, i:], W[:, b1:g1]], dim=1))
            w = W1[:, i]
            q = quantize(w, scale, zero)
            Q[:, c] = q
            err = (w - q) / Hb[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hb[i, i:].unsqueeze(0)
            Err[:, i] = err
        W[:, b1:] -= Err @ Hinv[b0:b1, b1:]
    round_s = time.perf_counter() - t0
    return Q, factor_s, round_s


def layer_loss(W, Q, H):
    D = (W - Q).double()
    return float(torch.sum((D @ H.double()) * D))


def main():
    rows, cols = int(sys.argv[1]), int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(9)
    W = (torch.rand(rows, cols, generator=g) - 0.5) / cols**0.5
    A = torch.rand(cols, cols, generator=g) * 0.5
    H = torch.triu(A) + torch.triu(A, 1).T
    H.diagonal().add_(float(cols))
    Q, factor_s, round_s = gptq(W, H)
    rtn = torch.zeros_like(W)
    for c0 in range(0, cols, GROUP):
        s, z = fit_group(W[:, c0 : c0 + GROUP])
        rtn[:, c0 : c0 + GROUP] = quantize(W[:, c0 : c0 + GROUP], s.unsqueeze(1), z.unsqueeze(1))
    print(
        json.dumps(
            {
                "bench": "gptq_torch",
                "rows": rows,
                "cols": cols,
                "threads": threads,
                "torch": torch.__version__,
                "factor_s": round(factor_s, 3),
                "round_s": round(round_s, 3),
                "loss_vs_rtn": round(layer_loss(W, Q, H) / layer_loss(W, rtn, H), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
