"""Parallel batches: many trajectories (each with its own step-size control) across threads.

Each trajectory runs the same compiled loop as a single solve, on its own work arrays, so results are
bitwise identical to solo runs and independent of the number of threads (Numba's ``prange``; the thread
count follows ``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``).
"""
import numpy as np
from numba import njit, prange

from .adjoint import discrete_sweep
from .rk import MODE_F, integrate, time_grad

_OPTS = dict(cache=True, error_model="numpy", nogil=True, parallel=True)
_SERIAL = dict(cache=True, error_model="numpy", nogil=True)


@njit(**_SERIAL)
def _placeholders(n, s):
    """Arrays a plain forward solve passes for the jump and recorded-segment arguments (never written)."""
    return (np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1, dtype=np.int64), np.zeros(1), np.ones(1),
            np.zeros((1, n)), np.zeros((1, s, n)))


@njit(**_SERIAL)
def vjp_discrete_one(kern, n, p, theta, ts, y0, cot, rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal, error_order,
                     adaptive, rtol, atol, h_init, h_max, dt_fixed, max_steps, ctrl, out_y, g_z0, g_theta, g_t,
                     stats, fstats, clock_addr):
    """Forward solve with recording, discrete-adjoint sweep and time gradients in one compiled call.

    Returns the forward status (0 = success); on failure the gradients are NaN."""
    m = ts.size
    jadd, jset, mask, seg_t, seg_h, seg_y, seg_k = _placeholders(n, rk_b.size)
    res = integrate(MODE_F, kern, n, p, theta, ts, y0, rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal,
                    error_order, adaptive, rtol, atol, n, h_init, h_max, dt_fixed, max_steps, ctrl,
                    False, False, jadd, jset, mask, seg_t, seg_h, seg_y, seg_k, 2, out_y, stats, fstats, clock_addr)
    if res[0] != 0:
        out_step = res[1]
        for i in range(1, m):
            if out_step[i] < 0:
                for q in range(n):
                    out_y[i, q] = np.nan
        for q in range(n):
            g_z0[q] = np.nan
        for k in range(p):
            g_theta[k] = np.nan
        for i in range(m):
            g_t[i] = np.nan
        return res[0], res[3].size
    ybar = np.empty(n)
    gth = np.empty(max(p, 1))
    discrete_sweep(kern, n, p, theta, res[3], res[4], res[5], res[6], rk_a, rk_b, rk_c, rk_dense,
                   res[1], res[2], cot, ybar, gth)
    for q in range(n):
        g_z0[q] = ybar[q] + cot[0, q]
    for k in range(p):
        g_theta[k] = gth[k]
    time_grad(kern[0], ts, out_y, theta, cot, ybar, g_t)
    return 0, res[3].size


@njit(**_OPTS)
def batch_solve(kern, n, p, thetas, ts, y0s, rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive,
                rtol, atol, h_init, h_max, dt_fixed, max_steps, ctrl, out_y, status, stats, t_reached):
    """Solve B trajectories: y0s (B, n), thetas (B, p) -> out_y (B, m, n), status (B,), stats (B, 8)."""
    B = y0s.shape[0]
    m = ts.size
    for b in prange(B):
        jadd, jset, mask, seg_t, seg_h, seg_y, seg_k = _placeholders(n, rk_b.size)
        fst = np.zeros(4)
        res = integrate(MODE_F, kern, n, p, thetas[b], ts, y0s[b], rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal,
                        error_order, adaptive, rtol, atol, n, h_init, h_max, dt_fixed, max_steps, ctrl,
                        False, False, jadd, jset, mask, seg_t, seg_h, seg_y, seg_k, 0, out_y[b], stats[b], fst)
        status[b] = res[0]
        t_reached[b] = fst[0]
        if res[0] != 0:
            out_step = res[1]
            for i in range(1, m):
                if out_step[i] < 0:
                    for q in range(n):
                        out_y[b, i, q] = np.nan


@njit(**_OPTS)
def batch_vjp_discrete(kern, n, p, thetas, ts, y0s, cots, rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal, error_order,
                       adaptive, rtol, atol, h_init, h_max, dt_fixed, max_steps, ctrl, out_y, g_z0, g_theta, g_t,
                       status, stats):
    """Per-trajectory discrete-adjoint gradients: cots (B, m, n) -> g_z0 (B, n), g_theta (B, p), g_t (B, m).
    Each trajectory runs exactly the single-trajectory kernel, so results equal solo calls bit for bit."""
    B = y0s.shape[0]
    for b in prange(B):
        fst = np.zeros(4)
        res = vjp_discrete_one(kern, n, p, thetas[b], ts, y0s[b], cots[b], rk_a, rk_b, rk_b_error, rk_c, rk_dense,
                               fsal, error_order, adaptive, rtol, atol, h_init, h_max, dt_fixed, max_steps, ctrl,
                               out_y[b], g_z0[b], g_theta[b], g_t[b], stats[b], fst, 0)
        status[b] = res[0]
