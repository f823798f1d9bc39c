"""Compiled evaluation of generated loss kernels over output rows (library code, cached)."""
import numpy as np
from numba import njit

from .fnptr import call_l, call_lg


@njit(cache=True, error_model="numpy", nogil=True)
def eval_loss_rows(addr, ts, zs, theta, D, rows, cot, gtheta):
    """Sum the loss over the selected rows; write dL/dz(ts[i]) into cot[i] and add dL/dtheta into gtheta."""
    lf = addr[0]
    lg = addr[1]
    n = zs.shape[1]
    out = np.zeros(1)
    gz = np.zeros(n)
    gp = np.zeros(gtheta.size)
    total = 0.0
    for r in rows:
        call_l(lf, ts[r], zs[r], theta, D[r], out)
        total += out[0]
        call_lg(lg, ts[r], zs[r], theta, D[r], gz, gp)
        for q in range(n):
            cot[r, q] += gz[q]
        for k in range(gtheta.size):
            gtheta[k] += gp[k]
    return total
