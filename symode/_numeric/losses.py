"""Compiled evaluation of generated loss kernels over output rows (library code, cached)."""
import math

import numpy as np
from numba import njit

from .fnptr import call_lvg


@njit(cache=True, error_model="numpy", nogil=True)
def eval_loss_rows(addr, ts, zs, theta, D, rows, cot, gtheta):
    """Sum the loss over the selected rows; write dL/dz(ts[i]) into cot[i] and add dL/dtheta into gtheta.
    ``addr[0]``: the generated ``loss_vg`` kernel (value and gradient of one row's term in one call);
    ``addr[1]`` = 0: the loss has no parameters (the kernel leaves its dL/dtheta output alone)."""
    lvg = addr[0]
    with_theta = addr.size < 2 or addr[1] != 0
    n = zs.shape[1]
    out = np.zeros(1)
    gz = np.zeros(n)
    gp = np.zeros(max(gtheta.size, 1) if with_theta else 1)   # not written by a loss without parameters
    total = 0.0
    for r in rows:
        call_lvg(lvg, ts[r], zs[r], theta, D[r], out, gz, gp)
        total += out[0]
        for q in range(n):
            cot[r, q] += gz[q]
        if with_theta:
            for k in range(gtheta.size):
                gtheta[k] += gp[k]
    return total


@njit(cache=True, nogil=True)
def fill_data_rows(D, out):
    """out[:, :w] = D and the term weights out[:, w:] = 1; False (stop) at the first entry that is not finite
    (the caller then weighs terms by the finite entries they use)."""
    w = D.shape[1]
    for r in range(D.shape[0]):
        for j in range(w):
            v = D[r, j]
            if not math.isfinite(v):
                return False
            out[r, j] = v
        for j in range(w, out.shape[1]):
            out[r, j] = 1.0
    return True
