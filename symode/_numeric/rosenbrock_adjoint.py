"""Compiled reverse sweep of the discrete adjoint of Rosenbrock steps (library code, cached).

Given the accepted steps of a forward solve with ``rosenbrock.integrate(record=2)`` (start time t0, signed step h,
start state y0 and the stage increments ``rec_k = U / h``), the sweep propagates the cotangents of the outputs
backward through the method's own map in the W form (Hairer & Wanner II, IV.7, eq. (7.25)) with the step sizes
held fixed:

    W = I / (h gamma) - J(t0, y0),   Y_i = y0 + sum_{j<i} a_ij U_j,
    W U_i = r_i = f(t0 + c_i h, Y_i) + sum_{j<i} (C_ij / h) U_j + h d_i df/dt(t0, y0),
    y1 = y0 + sum_i m_i U_i,   an output inside the step: y0 + sum_i b_i(frac) U_i (``tableau.dense``).

Reverse mode, for one step, given Ubar_i (from y1bar and the outputs) and processing the stages backward:

    rbar_i = W^-T Ubar_i,   Ubar_j += (C_ij / h) rbar_i + a_ij Ybar_i (j < i),
    Ybar_i = rbar_i^T df/dz(t_i, Y_i)  (-> y0bar),   thetabar += rbar_i^T df/dtheta(t_i, Y_i),

and, since U_i = W^-1 r_i depends on W, Jbar = sum_i rbar_i U_i^T; df/dt(t0, y0) gets FTbar = sum_i h d_i rbar_i.
Their contributions to y0bar and thetabar are the gradients with respect to z and theta of

    S(z, theta) = sum_(a,b) Jbar_ab J_ab(t0, z, theta) + sum_a FTbar_a df_a/dt(t0, z, theta),

one call of the VJP kernel (cotangent e_0) of an auxiliary generated model whose first right-hand side is S,
with Jbar's entries and FTbar among its parameters (``symode._stiff._second_order_model``). W is factorised
again per step exactly as the forward loop does (same band layout), and W^T x = b is solved with those factors.
"""
import numpy as np
from numba import njit

from .fnptr import call_j, call_v
from .adjoint import step_outputs
from .abi import K_JZ, K_VJP
from .rosenbrock import lu_factor

_OPTS = dict(cache=True, error_model="numpy", nogil=True)


@njit(**_OPTS)
def lu_solve_transposed(W, piv, kl, ku, b):
    """Solve W^T x = b in place with the factors of ``rosenbrock.lu_factor`` (same kl, ku).

    The factorisation is W^-1 = U^-1 E_{n-2} P_{n-2} ... E_0 P_0 (P_k: the interchange of rows k and piv[k],
    E_k = I - l_k e_k^T with the multipliers l_k in W[k+1:, k]), so W^-T = P_0 E_0^T ... P_{n-2} E_{n-2}^T U^-T:
    first a forward substitution with U^T, then the E_k^T and the interchanges in reverse order."""
    n = b.size
    w = kl + ku
    for k in range(n):
        acc = b[k]
        for i in range(max(0, k - w), k):
            acc -= W[i, k] * b[i]
        b[k] = acc / W[k, k]
    for k in range(n - 2, -1, -1):
        acc = b[k]
        for i in range(k + 1, min(n - 1, k + kl) + 1):
            acc -= W[i, k] * b[i]
        b[k] = acc
        p = piv[k]
        if p != k:
            tmp = b[p]
            b[p] = b[k]
            b[k] = tmp


@njit(**_OPTS)
def discrete_sweep(kern, hvjp, n, p, theta, htheta, hm_i, hm_j, ft_rows, rec_t, rec_h, rec_y, rec_k,
                   ros_a, ros_C, ros_c, ros_d, ros_m, ros_dense, gamma, nonauto, kl, ku, band, pat_i, pat_j,
                   out_step, out_frac, cotangent, ybar, gtheta):
    """Reverse sweep over the recorded Rosenbrock steps.

    Parameters
    ----------
    kern : the model's kernel addresses [f, jac_z, jac_theta, jac_t, vjp].
    hvjp : address of the auxiliary model's VJP kernel (gradient of S above), or 0 when S vanishes identically
        (J and df/dt constant).
    htheta : (p + hm_i.size + ft_rows.size,) workspace, the auxiliary model's parameters: theta, then
        Jbar[hm_i[k], hm_j[k]], then FTbar[ft_rows[k]] (filled here per step; the first p are copied in).
    hm_i, hm_j : the entries of J that depend on (t, z, theta); ft_rows : the rows of df/dt that do.
    ros_* , gamma : ``RosenbrockTableau.packed()`` (m_error unused); nonauto : df/dt enters the stages.
    kl, ku, band, pat_i, pat_j : W's layout as in ``rosenbrock.integrate`` (``_stiff.linalg_plan``).
    out_step, out_frac, cotangent : the outputs (step, fraction of it) and dL/dz at each output time.

    On return ``ybar`` (n,) holds a(ts[0]+), dL/dz0 without cotangent[0], and ``gtheta`` (p,) dL/dtheta.
    Returns False if a step's W could not be factorised (it was in the forward pass: not expected).
    """
    va = kern[K_VJP]
    jzk = kern[K_JZ]
    nsteps = rec_t.size
    s = ros_m.size
    m = out_step.size
    nh = hm_i.size
    nt = ft_rows.size
    U = np.zeros((s, n))
    Ubar = np.zeros((s, n))
    R = np.zeros((s, n))
    J = np.zeros((n, n))
    W = np.zeros((n, n))
    piv = np.zeros(n, dtype=np.int64)
    Y = np.empty(n)
    Ybar = np.empty(n)
    y0bar = np.empty(n)
    FTbar = np.zeros(n)
    wp = np.zeros(max(p, 1))
    reached = np.zeros(s, dtype=np.bool_)   # step_outputs' stage flags (every stage is visited here)
    e0 = np.zeros(n)
    e0[0] = 1.0
    hz = np.empty(n)
    hth = np.zeros(max(htheta.size, 1))
    for k in range(p):
        htheta[k] = theta[k]
    nnz = pat_i.size
    for q in range(n):
        ybar[q] = 0.0
    for k in range(p):
        gtheta[k] = 0.0
    i_out = m - 1
    for k in range(nsteps - 1, -1, -1):
        h = rec_h[k]
        t0 = rec_t[k]
        y0 = rec_y[k]
        # cotangents of the outputs in this step: at its end they join the adjoint of y1; inside it,
        # y0 + sum_i b_i(frac) U_i, they go to y0 and to the stages
        i_out, any_out = step_outputs(k, i_out, out_step, out_frac, cotangent, ros_dense, 1.0, ybar, y0bar, Ubar,
                                      reached)
        live = any_out
        if not live:
            for q in range(n):
                if ybar[q] != 0.0:
                    live = True
                    break
        if not live:
            continue  # nothing downstream depends on this step
        # y1 = y0 + sum_i m_i U_i
        for q in range(n):
            y0bar[q] += ybar[q]
        for i in range(s):
            mi = ros_m[i]
            if mi != 0.0:
                for q in range(n):
                    Ubar[i, q] += mi * ybar[q]
        for i in range(s):
            for q in range(n):
                U[i, q] = h * rec_k[k, i, q]
        # W = I / (h gamma) - J(t0, y0), factorised as in the forward loop
        call_j(jzk, t0, y0, theta, J)
        hgi = 1.0 / (h * gamma)
        if band:
            for i in range(n):
                for j in range(max(0, i - kl), min(n - 1, i + kl + ku) + 1):
                    W[i, j] = 0.0
            for kk in range(nnz):
                W[pat_i[kk], pat_j[kk]] = -J[pat_i[kk], pat_j[kk]]
        else:
            for i in range(n):
                for j in range(n):
                    W[i, j] = -J[i, j]
        for i in range(n):
            W[i, i] += hgi
        if not lu_factor(W, piv, kl, ku):
            return False
        inv_h = 1.0 / h
        for q in range(n):
            FTbar[q] = 0.0
        for i in range(s - 1, -1, -1):
            Ri = R[i]
            for q in range(n):
                Ri[q] = Ubar[i, q]
            lu_solve_transposed(W, piv, kl, ku, Ri)
            if nonauto and ros_d[i] != 0.0:
                hd = h * ros_d[i]
                for q in range(n):
                    FTbar[q] += hd * Ri[q]
            for j in range(i):
                cij = ros_C[i, j] * inv_h
                if cij != 0.0:
                    for q in range(n):
                        Ubar[j, q] += cij * Ri[q]
            if i == 0:
                for q in range(n):
                    Y[q] = y0[q]
            else:
                for q in range(n):
                    acc = y0[q]
                    for j in range(i):
                        acc += ros_a[i, j] * U[j, q]
                    Y[q] = acc
            call_v(va, t0 + ros_c[i] * h, Y, theta, Ri, Ybar, wp)
            for kk in range(p):
                gtheta[kk] += wp[kk]
            for q in range(n):
                y0bar[q] += Ybar[q]
            for j in range(i):
                aij = ros_a[i, j]
                if aij != 0.0:
                    for q in range(n):
                        Ubar[j, q] += aij * Ybar[q]
        # second derivatives: J(t0, y0) through W (Jbar = sum_i rbar_i U_i^T) and df/dt(t0, y0)
        if hvjp != 0:
            for kk in range(nh):
                a_ = hm_i[kk]
                b_ = hm_j[kk]
                acc = 0.0
                for i in range(s):
                    acc += R[i, a_] * U[i, b_]
                htheta[p + kk] = acc
            for kk in range(nt):
                htheta[p + nh + kk] = FTbar[ft_rows[kk]]
            call_v(hvjp, t0, y0, htheta, e0, hz, hth)
            for q in range(n):
                y0bar[q] += hz[q]
            for kk in range(p):
                gtheta[kk] += hth[kk]
        for q in range(n):
            ybar[q] = y0bar[q]
    return True
