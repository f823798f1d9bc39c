"""Compiled evaluation of generated loss kernels over output rows (library code, cached)."""
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
    gp = np.zeros(max(gtheta.size, 1))
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
