"""Stiff solves: the Rosenbrock methods ("rodas5", "rodas4") and automatic stiffness switching ("auto").

``ODE.solve`` hands every registered method whose kind is not "explicit" to :func:`solve_stiff`. The
compiled loop is :func:`symode._numeric.rosenbrock.integrate`; this module chooses how W = I/(h gamma) - J
is factorised (dense, or banded from the sparsity pattern of the exact Jacobian), runs the loop and builds
the :class:`~symode.Solution`.

Recorded steps (``record=2``) are the basis of gradients through Rosenbrock steps: for accepted step k,
``rec_t[k]`` is its start time, ``rec_h[k]`` the signed step, ``rec_y[k]`` the state at its start and
``rec_k[k]`` (s, n) the stage increments divided by the step, ``U_i / h``; the state inside the step is
``rosenbrock_dense_eval(rec_y[k], rec_h[k], rec_k[k], tableau.dense, frac, out)`` and the stage inputs are
``rec_y[k] + h * sum_j a_ij rec_k[k, j]``.
"""
from __future__ import annotations

import weakref

import numpy as np

from . import _status
from ._errors import InputValidationError, IntegrationError
from ._numeric import methods as M
from ._numeric import rosenbrock as ros
from ._numeric.clock import clock_address

# W is factorised as a band matrix when the model has at least BAND_MIN_N states and the band
# (lower + 2 * upper after pivoting fill) is narrow: (2 kl + ku + 1) * BAND_RATIO <= n. Measured with
# bench/bench_stiff.py (a 1-D reaction-diffusion chain, tridiagonal J; time per rodas5 step, dense / band):
# n = 4: 1.00, 8: 1.12, 12: 1.26, 16: 1.42, 32: 2.1, 64: 3.4, 128: 6.6 -- the crossover is at n ~ 8.
BAND_MIN_N = 12
BAND_RATIO = 2.0

_LINALG = weakref.WeakKeyDictionary()
def linalg_plan(model, kind=None):
    """(kl, ku, band, pat_i, pat_j, nonauto) for the model's W; `kind` forces "dense" or "band"."""
    cm = model.compiled
    key = (kind,)
    plans = _LINALG.get(cm)
    if plans is None:
        plans = {}
        _LINALG[cm] = plans
    plan = plans.get(key)
    if plan is not None:
        return plan
    n = model.n_states
    pat = tuple(cm.jac_z_pattern)
    pat_i = np.array([i for i, _ in pat], dtype=np.int64)
    pat_j = np.array([j for _, j in pat], dtype=np.int64)
    kl = max([0] + [i - j for i, j in pat])
    ku = max([0] + [j - i for i, j in pat])
    if kind is None:
        band = n >= BAND_MIN_N and (2 * kl + ku + 1) * BAND_RATIO <= n
    elif kind in ("dense", "band"):
        band = kind == "band"
    else:
        raise InputValidationError(f"unknown linear algebra {kind!r}; valid: 'dense', 'band'")
    if not band:
        kl = ku = max(n - 1, 0)
    nonauto = len(tuple(cm.jac_t_nonzero)) > 0
    plan = (kl, ku, band, pat_i, pat_j, nonauto)
    plans[key] = plan
    return plan


def integrate_stiff(model, y0, theta, ts, opts, record=0, linalg=None):
    """Run the compiled Rosenbrock / auto loop; returns a dict like ``ODE._integrate``'s.

    Keys: status, out_y (m, n), out_step, out_frac, rec_t, rec_h, rec_y, rec_k (see the module docstring),
    stats (int64: nfev, nsteps, naccepted, nrejected, njev, nlu, 0, switches, accepted explicit, accepted
    Rosenbrock), fstats (t_reached, h_last, time in explicit steps, time in Rosenbrock steps), t_reached,
    method, tableau.
    """
    meth, dt, rtol_a, atol_a, max_steps, dt_max, ctrl = opts
    if record and meth.kind == "auto":
        raise InputValidationError("recording steps (gradients) is supported by 'rodas5' and 'rodas4', not 'auto'")
    tab = meth.tableau
    a, C, c, d, mw, me, dense, gamma = tab.packed()
    ea, eb, ebe, ec, edense, _fsal, _eo = M.METHODS["dopri5"].packed()
    kl, ku, band, pat_i, pat_j, nonauto = linalg_plan(model, linalg)
    n = model.n_states
    out_y = np.empty((ts.size, n))
    stats = np.zeros(10, dtype=np.int64)
    fstats = np.zeros(4)
    res = ros.integrate(model.compiled.kern, n, theta, ts, y0, a, C, c, d, mw, me, dense, gamma,
                        tab.error_order, ea, ebe, ec, edense, meth.kind == "auto", nonauto, kl, ku, band,
                        pat_i, pat_j, rtol_a, atol_a, 0.0 if dt is None else dt,
                        0.0 if dt_max is None else dt_max, max_steps, ctrl, record, out_y, stats, fstats,
                        clock_address() if ctrl.size > 4 and ctrl[4] > 0 else 0, model._rec_cap)
    status, out_step, out_frac, rec_t, rec_h, rec_y, rec_k, n_rec = res
    if record:
        model._note_steps(int(n_rec))
    return dict(status=int(status), out_y=out_y, out_step=out_step, out_frac=out_frac, rec_t=rec_t, rec_h=rec_h,
                rec_y=rec_y, rec_k=rec_k, stats=stats, fstats=fstats, t_reached=float(fstats[0]), method=meth,
                tableau=tab)


def solve_stiff(model, z0, theta, ts, opts, throw):
    """``ODE.solve`` for the methods of kind "rosenbrock" and "auto" (validated inputs, ``opts`` from
    ``ODE._options``). ``sol.stats`` adds ``njev`` and ``nlu``; with "auto" also ``switches`` and the
    accepted steps and time spent in each method (``nsteps_explicit``, ``nsteps_stiff``, ``t_explicit``,
    ``t_stiff``)."""
    meth, max_steps = opts[0], opts[4]
    res = integrate_stiff(model, z0, theta, ts, opts)
    sol = model._make_solution(ts, res, meth, max_steps, False)
    if meth.kind == "auto":
        s, fs = res["stats"], res["fstats"]
        sol.stats.update(switches=int(s[7]), nsteps_explicit=int(s[8]), nsteps_stiff=int(s[9]),
                         t_explicit=float(fs[2]), t_stiff=float(fs[3]))
    if throw and not sol.success:
        raise IntegrationError(f"{_status.NAMES[sol.status]}: {sol.message}", status=sol.status, t=sol.t_reached,
                               solution=sol)
    return sol


def _sensitivity_model(model):
    """The forward-sensitivity system as a symode model of its own: states (z, S_z0, S_theta) with
    S' = (df/dz) S (+ df/dtheta). Its exact Jacobian (second derivatives of f included) is generated like any
    model's, so the Rosenbrock methods integrate the stiff sensitivity equations with it."""
    cached = model.__dict__.get("_sens_model")
    if cached is not None:
        return cached
    import sympy as sp

    from ._ode import ODE

    n, p = model.n_states, model.n_params
    J = model.jac_z_expr
    Jp = model.jac_theta_expr
    Sz = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"_symode_sz_{i}_{j}", real=True))
    Sp = sp.Matrix(n, p, lambda i, k: sp.Symbol(f"_symode_sp_{i}_{k}", real=True)) if p else sp.zeros(n, 0)
    rhs = list(model.rhs) + list(J * Sz) + (list(J * Sp + Jp) if p else [])
    states = list(model.states) + list(Sz) + list(Sp)
    sm = ODE(rhs, states=states, params=list(model.params), t=model.t)
    model.__dict__["_sens_model"] = sm
    return sm


def sensitivities_stiff(model, z0, theta, ts, opts, throw):
    """Forward sensitivities with a Rosenbrock method: the augmented system (z, dz/dz0, dz/dtheta) solved
    with the exact Jacobian of the augmented system. Tolerances: the states' rtol/atol; a sensitivity
    column of theta_k gets atol / max(|theta_k|, 1e-300) (errors of theta_k * dz/dtheta_k are controlled in
    the units of z, as CVODES does with its parameter scales)."""
    from ._gradients import Sensitivities

    n, p, m = model.n_states, model.n_params, ts.size
    sm = _sensitivity_model(model)
    y0 = np.concatenate([z0, np.eye(n).ravel(), np.zeros(n * p)])
    meth, dt, rtol_a, atol_a, max_steps, dt_max, ctrl = opts
    atol_s = np.concatenate([atol_a, np.tile(atol_a, n),
                             (atol_a[:, None] / np.maximum(np.abs(theta), 1e-300)[None, :]).ravel()])
    rtol_s = np.concatenate([rtol_a, np.tile(rtol_a, n + p)])
    opts_s = (meth, dt, rtol_s, atol_s, max_steps, dt_max, ctrl)
    res = integrate_stiff(sm, y0, theta, ts, opts_s)
    sol_full = sm._make_solution(ts, res, meth, max_steps, False)
    Y = sol_full.z
    from ._solution import Solution

    sol = Solution(t=ts, z=Y[:, :n].copy(), stats=sol_full.stats, status=sol_full.status, message=sol_full.message,
                   t_reached=sol_full.t_reached)
    if throw and not sol.success:
        raise IntegrationError(f"{_status.NAMES[sol.status]}: {sol.message}", status=sol.status, t=sol.t_reached,
                               solution=sol)
    return Sensitivities(sol, Y[:, n:n + n * n].reshape(m, n, n), Y[:, n + n * n:].reshape(m, n, p))


def vjp_stiff(model, z0, theta, ts, get_cot, adjoint, opts, throw, seminorm, checkpoints):
    """Gradients with a Rosenbrock method: ``adjoint="discrete"`` (the exact reverse-mode derivative of the
    Rosenbrock map along the accepted steps, :func:`_discrete_stiff`), ``"checkpoint"`` (the continuous adjoint
    integrated backward with the same Rosenbrock method, :func:`_checkpoint_stiff`) and ``"forward"`` (forward
    sensitivities of the augmented system, solved with its exact Jacobian). ``"backsolve"`` is refused on stiff
    methods because re-integrating a stiff z backward is unstable."""
    from ._gradients import _failed, _finish

    name = opts[0].name
    if opts[0].kind == "auto" and adjoint in ("discrete", "checkpoint"):
        raise InputValidationError(f"adjoint={adjoint!r} with method='auto' is not available (its steps are not "
                                   "recorded); use 'rodas5'")
    if adjoint == "discrete":
        return _discrete_stiff(model, z0, theta, ts, get_cot, opts, throw)
    if adjoint == "checkpoint":
        return _checkpoint_stiff(model, z0, theta, ts, get_cot, opts, throw)
    if adjoint == "backsolve":
        raise InputValidationError(f"adjoint='backsolve' is refused with {name!r}: integrating a stiff z(t) backward "
                                   "in time is unstable (errors grow like exp(|lambda| T)). Use adjoint='forward'.")
    if adjoint != "forward":
        raise InputValidationError(f"adjoint={adjoint!r} is not available with {name!r}; use 'discrete', "
                                   "'checkpoint' or 'forward'")
    n, p, m = model.n_states, model.n_params, ts.size
    S = sensitivities_stiff(model, z0, theta, ts, opts, throw)
    if not S.solution.success:
        return _failed(n, p, m, S.solution)
    cot = get_cot(S.solution)
    a0plus = np.einsum("min,mi->n", S.dz_dz0[1:], cot[1:]) if m > 1 else np.zeros(n)
    gth = np.einsum("mip,mi->p", S.dz_dtheta, cot)
    return _finish(model, S.solution, theta, ts, cot, a0plus, gth, dict(forward=S.solution.stats))


def _recorded_forward(model, z0, theta, ts, opts, throw, get_cot):
    """The recording Rosenbrock pass of the adjoints: (fwd, solution, cotangent); cotangent None on a failure
    (raised instead with ``throw``)."""
    fwd = integrate_stiff(model, z0, theta, ts, opts, record=2)
    sol = model._make_solution(ts, fwd, opts[0], opts[4], False)
    if throw and not sol.success:
        raise IntegrationError(f"{_status.NAMES[sol.status]}: {sol.message}", status=sol.status, t=sol.t_reached,
                               solution=sol)
    return fwd, sol, (get_cot(sol) if sol.success else None)


def _checkpoint_stiff(model, z0, theta, ts, get_cot, opts, throw):
    """Continuous adjoint for stiff problems: the forward Rosenbrock pass records its steps (dense output), then
    a' = -J^T a, g' = -Jp^T a is integrated backward between output times with the same Rosenbrock method on
    its exact Jacobian (library kernels in symode._numeric.stiff_adjoint), adding cotangent[i] at each ts[i].
    The parameter quadrature g is left out of the error norm (seminorm)."""
    from ._gradients import _failed, _finish
    from ._numeric import stiff_adjoint as sa

    meth, dt, rtol_a, atol_a, max_steps, dt_max, ctrl = opts
    n, p, m = model.n_states, model.n_params, ts.size
    fwd, sol, cot = _recorded_forward(model, z0, theta, ts, opts, throw, get_cot)
    if cot is None:
        return _failed(n, p, m, sol)
    tab = meth.tableau
    a_, C, c, d, mw, me, dense, gamma = tab.packed()
    if fwd["rec_t"].size == 0:
        return _finish(model, sol, theta, ts, cot, np.zeros(n), np.zeros(p), dict(forward=sol.stats))
    ctx = sa.pack(theta, model.compiled.kern, fwd["rec_t"], fwd["rec_h"], fwd["rec_y"], fwd["rec_k"],
                  np.ascontiguousarray(dense))
    kern = np.array([sa.adjoint_rhs.address, sa.adjoint_jac.address, 0, sa.adjoint_rhs_t.address, 0],
                    dtype=np.int64)
    ny = n + p
    ea, eb, ebe, ec, edense, _fsal, _eo = M.METHODS["dopri5"].packed()
    pat = np.array([(i, j) for i in range(ny) for j in range(ny)], dtype=np.int64).reshape(-1, 2)
    rt = np.concatenate([rtol_a, np.full(p, 1.0)])
    at = np.concatenate([atol_a, np.full(p, 1e300)])  # seminorm: g out of the error norm
    y = np.zeros(ny)
    y[:n] = cot[-1]
    bst = np.zeros(6, dtype=np.int64)
    for i in range(m - 1, 0, -1):
        seg_ts = np.array([ts[i], ts[i - 1]])
        out_y = np.empty((2, ny))
        stats = np.zeros(10, dtype=np.int64)
        fstats = np.zeros(4)
        res = ros.integrate(kern, ny, ctx, seg_ts, y, a_, C, c, d, mw, me, dense, gamma, tab.error_order, ea, ebe,
                            ec, edense, False, True, ny, ny, False, pat[:, 0].copy(), pat[:, 1].copy(), rt, at,
                            0.0, 0.0 if dt_max is None else dt_max, max_steps, ctrl, 0, out_y, stats, fstats, 0)
        bst += stats[:6]
        if res[0] != _status.SUCCESS:
            msg = _status.message(int(res[0]), float(fstats[0]), max_steps)
            if throw:
                raise IntegrationError(f"The backward (adjoint) integration failed: {_status.NAMES[int(res[0])]}: "
                                       f"{msg}", status=int(res[0]), t=float(fstats[0]))
            return _failed(n, p, m, sol, status=_status.ADJOINT_FAILED)
        y = out_y[-1].copy()
        if i - 1 > 0:
            y[:n] += cot[i - 1]
    stats = dict(forward=sol.stats, backward=dict(nfev=int(bst[0]), nsteps=int(bst[1]), njev=int(bst[4]),
                                                  nlu=int(bst[5])))
    return _finish(model, sol, theta, ts, cot, y[:n].copy(), y[n:].copy(), stats)


def _second_order_model(model):
    """The auxiliary model behind the discrete adjoint of Rosenbrock steps, with its index arrays.

    W = I/(h gamma) - J(t0, y0) and the stages' h d_i df/dt(t0, y0) make a Rosenbrock step depend on y0 and
    theta through J and df/dt, so its reverse mode needs the gradients with respect to z and theta of

        S(z, theta) = sum_(i,j) M_ij df_i/dz_j (t, z, theta) + sum_i u_i df_i/dt (t, z, theta)

    for given M (the adjoint of J) and u (of df/dt). S is the first right-hand side of a symode model of its own
    (states z, parameters theta + the M_ij + the u_i, the other right-hand sides zero), so its generated VJP
    kernel with cotangent e_0 yields exactly those gradients (second derivatives of f, generated, compiled and
    cached on disk like any model's). Only the entries of J and df/dt that depend on (t, z, theta) appear.

    Returns (aux, hm_i, hm_j, ft_rows); aux is None when S vanishes identically (J and df/dt constant).
    """
    cached = model.__dict__.get("_so_model")
    if cached is not None:
        return cached
    sym = model._sym
    if getattr(sym, "networks", None) is not None:
        raise InputValidationError(
            "adjoint='discrete' through Rosenbrock steps needs second derivatives of f, which are generated only "
            "for models without network blocks (symode.nn); use adjoint='checkpoint' (the continuous adjoint, "
            "integrated backward with the same Rosenbrock method) or adjoint='forward'")
    import sympy as sp

    from ._ode import ODE

    derivs = model._derivatives()
    live = set(sym.z_c) | set(sym.theta_c) | {sym.t_c}
    jz = [(ij, e) for ij, e in derivs.jac_z.items() if e.free_symbols & live]
    jt = [(i, e) for i, e in sorted(derivs.jac_t.items()) if e.free_symbols & live]
    hm_i = np.array([i for (i, _j), _e in jz], dtype=np.int64)
    hm_j = np.array([j for (_i, j), _e in jz], dtype=np.int64)
    ft_rows = np.array([i for i, _e in jt], dtype=np.int64)
    aux = None
    if jz or jt:
        M = [sp.Symbol(f"_symode_hm_{i}_{j}", real=True) for (i, j), _e in jz]
        u = [sp.Symbol(f"_symode_hu_{i}", real=True) for i, _e in jt]
        S = sum((mij * e for mij, (_ij, e) in zip(M, jz)), sp.S.Zero)
        S = S + sum((ui * e for ui, (_i, e) in zip(u, jt)), sp.S.Zero)
        S = sym.to_user(S)
        n = model.n_states
        aux = ODE([S] + [sp.S.Zero] * (n - 1), states=list(model.states), params=list(model.params) + M + u,
                  t=model.t)
    out = (aux, hm_i, hm_j, ft_rows)
    model.__dict__["_so_model"] = out
    return out


def _discrete_stiff(model, z0, theta, ts, get_cot, opts, throw):
    """Discrete adjoint through Rosenbrock steps: the forward pass records its accepted steps (``record=2``),
    then ``rosenbrock_adjoint.discrete_sweep`` runs the reverse mode of the W-form step map (step sizes fixed,
    dense output included) with the model's VJP kernel at the stages and the auxiliary second-order kernel of
    :func:`_second_order_model` for J and df/dt. dL/dts from a(ts[0]+) as every variant (``_finish``)."""
    from ._gradients import _failed, _finish
    from ._numeric import rosenbrock_adjoint as ra

    meth, dt, rtol_a, atol_a, max_steps, dt_max, ctrl = opts
    aux, hm_i, hm_j, ft_rows = _second_order_model(model)
    hvjp = int(aux.compiled.kern[4]) if aux is not None else 0
    n, p, m = model.n_states, model.n_params, ts.size
    fwd, sol, cot = _recorded_forward(model, z0, theta, ts, opts, throw, get_cot)
    if cot is None:
        return _failed(n, p, m, sol)
    tab = meth.tableau
    a_, C, c, d, mw, me, dense, gamma = tab.packed()
    kl, ku, band, pat_i, pat_j, nonauto = linalg_plan(model)
    htheta = np.zeros(p + hm_i.size + ft_rows.size)
    ybar = np.empty(n)
    gth = np.empty(max(p, 1))
    ok = ra.discrete_sweep(model.compiled.kern, hvjp, n, p, theta, htheta, hm_i, hm_j, ft_rows, fwd["rec_t"],
                           fwd["rec_h"], fwd["rec_y"], fwd["rec_k"], a_, C, c, d, mw, dense, gamma, nonauto, kl,
                           ku, band, pat_i, pat_j, fwd["out_step"], fwd["out_frac"], cot, ybar, gth)
    if not ok:  # pragma: no cover - the forward pass factorised the same matrices
        raise IntegrationError("the discrete adjoint could not factorise W = I/(h gamma) - J of a recorded step",
                               status=_status.SINGULAR_MATRIX)
    stats = dict(forward=sol.stats, steps_recorded=int(fwd["rec_t"].size))
    return _finish(model, sol, theta, ts, cot, ybar, gth[:p].copy(), stats)
