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

Tableaus whose last stage is the FSAL stage (dopri5, tsit5, bosh3: ``fsal_form``) take ``sweep_fsal``, the same
sums written as a hand-coded sweep is (the FSAL stage at y_{k+1}, stage 0 at y_k, no activity flags): on P1
30 us against 36 us for ``sweep_general``, which serves every tableau.
"""
import numpy as np
from numba import njit

from .fnptr import call_v, call_vw
from .rk import dense_weight

_OPTS = dict(cache=True, error_model="numpy", nogil=True)
_INLINE = dict(_OPTS, inline="always")


@njit(**_INLINE)
def step_outputs(k, i_out, out_step, out_frac, cotangent, dense, scale, ybar, y0bar, Kbar, active):
    """The cotangents of the outputs of step k (from ``i_out`` down; output 0, z(ts[0]) = z0, never): one at the
    step's end (fraction 1) joins ``ybar``, the adjoint of y_{k+1}; one inside it, y_k + scale sum_j b_j(x) K_j,
    joins ``y0bar`` and the stages' ``Kbar``, and sets ``active[j]`` for each stage a nonzero weight reaches.
    ``Kbar`` and ``y0bar`` are zeroed and ``active`` cleared first. Returns (the next output, any inside)."""
    s, n = Kbar.shape
    for j in range(s):
        active[j] = False
        for q in range(n):
            Kbar[j, q] = 0.0
    for q in range(n):
        y0bar[q] = 0.0
    inside = False
    while i_out >= 1 and out_step[i_out] == k:
        x = out_frac[i_out]
        if x == 1.0:
            for q in range(n):
                ybar[q] += cotangent[i_out, q]
        else:
            inside = True
            for q in range(n):
                y0bar[q] += cotangent[i_out, q]
            for j in range(s):
                bj = dense_weight(dense, j, x)
                if bj != 0.0:
                    active[j] = True
                    c = scale * bj
                    for q in range(n):
                        Kbar[j, q] += c * cotangent[i_out, q]
        i_out -= 1
    return i_out, inside


@njit(**_INLINE)
def sweep_work(kern, n, p, s, rec_w, ybar, gtheta):
    """A sweep's start: ``ybar`` and ``gtheta`` zeroed; returns the vjp addresses (plain, and with recorded
    activations when ``rec_w`` has rows), whether to use the latter, and the work arrays Kbar (s, n), Ybar,
    y0bar, Y (n), wp (the plain vjp's dL/dtheta; vjp_rec adds into gtheta itself) and the stage flags (s)."""
    wrec = rec_w.shape[0] > 0
    for q in range(n):
        ybar[q] = 0.0
    for k in range(p):
        gtheta[k] = 0.0
    return (kern[4], kern[6] if wrec else 0, wrec, np.zeros((s, n)), np.zeros(n), np.zeros(n), np.empty(n),
            np.zeros(1 if wrec else max(p, 1)), np.zeros(s, dtype=np.bool_))


@njit(**_OPTS)
def discrete_sweep(kern, n, p, theta, rec_t, rec_h, rec_y, rec_k, rk_a, rk_b, rk_c, rk_dense,
                   out_step, out_frac, cotangent, ybar, gtheta, rec_w):
    """Reverse sweep. On return ``ybar`` (n,) holds dL/dz0 without cotangent[0] (i.e. a(ts[0]+)) and
    ``gtheta`` (p,) holds dL/dtheta. ``out_step[i]``/``out_frac[i]``: step and fraction of output i.
    ``rec_w`` (steps, s, W_REC): a network model's recorded activations per stage, used through ``vjp_rec``
    (an empty array: the plain vjp recomputes them)."""
    if fsal_form(rk_a, rk_b, rk_c):
        sweep_fsal(kern, n, p, theta, rec_t, rec_h, rec_y, rec_k, rk_a, rk_b, rk_c, rk_dense, out_step, out_frac,
                   cotangent, ybar, gtheta, rec_w)
    else:
        sweep_general(kern, n, p, theta, rec_t, rec_h, rec_y, rec_k, rk_a, rk_b, rk_c, rk_dense, out_step, out_frac,
                      cotangent, ybar, gtheta, rec_w)


@njit(**_OPTS)
def sweep_general(kern, n, p, theta, rec_t, rec_h, rec_y, rec_k, rk_a, rk_b, rk_c, rk_dense,
                  out_step, out_frac, cotangent, ybar, gtheta, rec_w):
    """``discrete_sweep`` for any tableau: every stage visited when a weight reaches it (``active``)."""
    nsteps = rec_t.size
    s = rk_b.size
    va, vra, wrec, Kbar, Ybar, y0bar_out, Y, wp, active = sweep_work(kern, n, p, s, rec_w, ybar, gtheta)
    i_out = out_step.size - 1
    for k in range(nsteps - 1, -1, -1):
        h = rec_h[k]
        t0 = rec_t[k]
        i_out, _ = step_outputs(k, i_out, out_step, out_frac, cotangent, rk_dense, h, ybar, y0bar_out, Kbar, active)
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


@njit(**_OPTS)
def fsal_form(rk_a, rk_b, rk_c):
    """True for a tableau whose last stage is its FSAL stage, f at y_{k+1} (c = 1, a = b, b = 0) and that has
    no dense-output-only stages (dopri5, tsit5, bosh3): ``sweep_fsal`` handles it."""
    s = rk_b.size
    if s < 3 or rk_b[s - 1] != 0.0 or rk_b[s - 2] == 0.0 or rk_c[s - 1] != 1.0:
        return False
    for j in range(s - 1):
        if rk_a[s - 1, j] != rk_b[j]:
            return False
    return True


@njit(**_OPTS)
def sweep_fsal(kern, n, p, theta, rec_t, rec_h, rec_y, rec_k, rk_a, rk_b, rk_c, rk_dense, out_step, out_frac,
               cotangent, ybar, gtheta, rec_w):
    """``discrete_sweep`` for a tableau of ``fsal_form``, written out as a hand-coded sweep would be (measured
    on P1: 30 us against 36 us for the general loop): the FSAL stage's cotangent joins that of y_{k+1} (its Y is
    y_{k+1}, the next record's start state, except after the last step), stage 0 is evaluated at y_k itself,
    and only the stages between have their Y recomputed from the recorded stages. The FSAL stage is visited
    only in steps with an output inside them, the only ones where a weight reaches it. The same sums as
    ``sweep_general`` in another order: results agree to rounding (tested)."""
    nsteps = rec_t.size
    s = rk_b.size
    va, vra, wrec, Kbar, Ybar, ynb, Y, wp, active = sweep_work(kern, n, p, s, rec_w, ybar, gtheta)
    # The vjp calls below are written out at each stage site: an inlined helper holding them (vjp_rec or vjp,
    # then the dL/dtheta sum) made this sweep 1.5x slower on P1 (31 -> 48 us), as in rk.py's stage loops.
    i_out = out_step.size - 1
    for k in range(nsteps - 1, -1, -1):
        h = rec_h[k]
        t0 = rec_t[k]
        i_out, inside = step_outputs(k, i_out, out_step, out_frac, cotangent, rk_dense, h, ybar, ynb, Kbar, active)
        if inside:   # the FSAL stage K_{s-1} = f(t_k + h, y_{k+1}): its cotangent joins y_{k+1}'s
            if k + 1 < nsteps:
                for q in range(n):
                    Y[q] = rec_y[k + 1, q]
            else:
                for q in range(n):
                    acc = 0.0
                    for l in range(s - 1):
                        acc += rk_a[s - 1, l] * rec_k[k, l, q]
                    Y[q] = rec_y[k, q] + h * acc
            if wrec:
                call_vw(vra, t0 + h, Y, theta, Kbar[s - 1], Ybar, gtheta, rec_w[k, s - 1])
            else:
                call_v(va, t0 + h, Y, theta, Kbar[s - 1], Ybar, wp)
                for kk in range(p):
                    gtheta[kk] += wp[kk]
            for q in range(n):
                ybar[q] += Ybar[q]
        # y_{k+1} = y_k + h sum_j b_j K_j
        for q in range(n):
            ynb[q] += ybar[q]
        for j in range(s - 1):
            c = h * rk_b[j]
            for q in range(n):
                Kbar[j, q] += c * ybar[q]
        for j in range(s - 2, 0, -1):
            for q in range(n):
                acc = 0.0
                for l in range(j):
                    acc += rk_a[j, l] * rec_k[k, l, q]
                Y[q] = rec_y[k, q] + h * acc
            if wrec:
                call_vw(vra, t0 + rk_c[j] * h, Y, theta, Kbar[j], Ybar, gtheta, rec_w[k, j])
            else:
                call_v(va, t0 + rk_c[j] * h, Y, theta, Kbar[j], Ybar, wp)
                for kk in range(p):
                    gtheta[kk] += wp[kk]
            for q in range(n):
                ynb[q] += Ybar[q]
            for l in range(j):
                c = h * rk_a[j, l]
                for q in range(n):
                    Kbar[l, q] += c * Ybar[q]
        for q in range(n):
            Y[q] = rec_y[k, q]
        if wrec:
            call_vw(vra, t0, Y, theta, Kbar[0], Ybar, gtheta, rec_w[k, 0])
        else:
            call_v(va, t0, Y, theta, Kbar[0], Ybar, wp)
            for kk in range(p):
                gtheta[kk] += wp[kk]
        for q in range(n):
            ybar[q] = ynb[q] + Ybar[q]
