"""Compiled reverse sweep of the discrete adjoint of explicit Runge-Kutta steps (library code, cached).

Given the accepted steps of a forward solve (start time t_k, signed step h_k, start state y_k and the stages
K_k), the sweep propagates the cotangents of the outputs backward through the method's own map with the
step sizes held fixed:

    y_{k+1} = y_k + h sum_j b_j K_j,   K_j = f(t_k + c_j h, Y_j),   Y_j = y_k + h sum_{l<j} a_jl K_l,

and outputs inside a step through the continuous extension y(t_k + x h) = y_k + h sum_j b_j(x) K_j.
Each stage costs one call of the generated VJP kernel (a^T df/dz, a^T df/dtheta at (t, Y_j)).

The sweep runs over all s stages of the tableau, each only when it is ``active`` (a nonzero weight reaches it:
b_j from y_{k+1}, b_j(x) from an interior output, a_jl from a later active stage). Dense-output-only stages
(DOP853's stages 13-15: zero b, so active only in steps with an interior output, the steps where the forward
solve computed them) are handled like any other: their cotangents flow back through their own rows of ``a``
into the earlier stages, the FSAL stage K_12 = f(t_k + h, Y_12) included (Y_12 = y_k + h sum_l b_l K_l,
i.e. y_{k+1}; its cotangent goes back through a_12l = b_l).
"""
import numpy as np
from numba import njit

from .fnptr import call_v, call_vw
from .rk import dense_weight

_OPTS = dict(cache=True, error_model="numpy", nogil=True)


@njit(**_OPTS)
def discrete_sweep(kern, n, p, theta, rec_t, rec_h, rec_y, rec_k, rk_a, rk_b, rk_c, rk_dense,
                   out_step, out_frac, cotangent, ybar, gtheta, rec_w):
    """Reverse sweep. On return ``ybar`` (n,) holds dL/dz0 without cotangent[0] (i.e. a(ts[0]+)) and
    ``gtheta`` (p,) holds dL/dtheta. ``out_step[i]``/``out_frac[i]``: step and fraction of output i.
    ``rec_w`` (steps, s, W_REC): a network model's recorded activations per stage, used through ``vjp_rec``
    (an empty array: the plain vjp recomputes them)."""
    va = kern[4]
    wrec = rec_w.shape[0] > 0
    vra = kern[6] if wrec else 0
    nsteps = rec_t.size
    s = rk_b.size
    m = out_step.size
    Kbar = np.zeros((s, n))
    Ybar = np.zeros(n)
    Y = np.empty(n)
    wp = np.zeros(1 if wrec else max(p, 1))   # vjp_rec adds into gtheta itself
    active = np.zeros(s, dtype=np.bool_)
    y0bar_out = np.zeros(n)
    for q in range(n):
        ybar[q] = 0.0
    for k in range(p):
        gtheta[k] = 0.0
    i_out = m - 1
    for k in range(nsteps - 1, -1, -1):
        h = rec_h[k]
        t0 = rec_t[k]
        for j in range(s):
            active[j] = False
            for q in range(n):
                Kbar[j, q] = 0.0
        # outputs that fall in this step: an output at the step's end adds to ybar (the adjoint of
        # y_{k+1}); an interior one, y_k + h sum_j b_j(x) K_j, adds to the stages' and to y_k's adjoints
        for q in range(n):
            y0bar_out[q] = 0.0
        while i_out >= 1 and out_step[i_out] == k:
            x = out_frac[i_out]
            if x == 1.0:
                for q in range(n):
                    ybar[q] += cotangent[i_out, q]
            else:
                for q in range(n):
                    y0bar_out[q] += cotangent[i_out, q]
                for j in range(s):
                    bj = dense_weight(rk_dense, j, x)
                    if bj != 0.0:
                        active[j] = True
                        c = h * bj
                        for q in range(n):
                            Kbar[j, q] += c * cotangent[i_out, q]
            i_out -= 1
        # the step's own map: Kbar_j += h b_j ybar(end)
        for j in range(s):
            if rk_b[j] != 0.0:
                active[j] = True
                c = h * rk_b[j]
                for q in range(n):
                    Kbar[j, q] += c * ybar[q]
        # reverse over stages; ybar accumulates the adjoint of y0 (identity part first)
        for j in range(s - 1, -1, -1):
            if not active[j]:
                continue
            for q in range(n):
                acc = 0.0
                for l in range(j):
                    acc += rk_a[j, l] * rec_k[k, l, q]
                Y[q] = rec_y[k, q] + h * acc
            if wrec:   # vjp_rec adds its a^T df/dtheta to gtheta itself
                call_vw(vra, t0 + rk_c[j] * h, Y, theta, Kbar[j], Ybar, gtheta, rec_w[k, j])
            else:
                call_v(va, t0 + rk_c[j] * h, Y, theta, Kbar[j], Ybar, wp)
                for kk in range(p):
                    gtheta[kk] += wp[kk]
            for q in range(n):
                ybar[q] += Ybar[q]
            for l in range(j):
                c = h * rk_a[j, l]
                if c != 0.0:
                    active[l] = True
                    for q in range(n):
                        Kbar[l, q] += c * Ybar[q]
        for q in range(n):
            ybar[q] += y0bar_out[q]
