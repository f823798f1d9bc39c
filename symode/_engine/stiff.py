"""Stiff solves: the Rosenbrock methods ("rodas5", "rodas4") and automatic stiffness switching ("auto").

The compiled loop is :func:`symode._numeric.rosenbrock.integrate`; this module chooses how W = I/(h gamma) - J
is factorised (dense, or banded from the sparsity pattern of the exact Jacobian), runs the loop and builds
the :class:`~symode.Solution`.

Recorded steps (``record=2``) are the basis of gradients through Rosenbrock steps: for accepted step k,
``rec_t[k]`` is its start time, ``rec_h[k]`` the signed step, ``rec_y[k]`` the state at its start and
``rec_k[k]`` (s, n) the stage increments divided by the step, ``U_i / h``; the state inside the step is
``rosenbrock_dense_eval(rec_y[k], rec_h[k], rec_k[k], tableau.dense, frac, out)`` and the stage inputs are
``rec_y[k] + h * sum_j a_ij rec_k[k, j]``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .._errors import InputValidationError
from .._numeric import methods as M
from .._numeric import rosenbrock as ros
from .._numeric.clock import clock_address
from .._solution import Solution, failure
from .._symbolic.transforms import sensitivity_system
from .config import SolverConfig, rk_arrays
from .explicit import IntegrationResult, make_solution
from .runtime import ModelRuntime

# W is factorised as a band matrix when the model has at least BAND_MIN_N states and the band
# (lower + 2 * upper after pivoting fill) is narrow: (2 kl + ku + 1) * BAND_RATIO <= n. Measured with
# bench/bench_stiff.py (a 1-D reaction-diffusion chain, tridiagonal J; time per rodas5 step, dense / band):
# n = 4: 1.00, 8: 1.12, 12: 1.26, 16: 1.42, 32: 2.1, 64: 3.4, 128: 6.6 -- the crossover is at n ~ 8.
BAND_MIN_N = 12
BAND_RATIO = 2.0
# the explicit method of "auto"'s non-stiff phases
_AUTO_EXPLICIT = rk_arrays(M.METHODS["dopri5"])


@dataclass(frozen=True)
class LinalgPlan:
    """How W is factorised: band widths (``kl``, ``ku``; n - 1 both when dense), the Jacobian's pattern
    (``pat_i``, ``pat_j``) and whether f depends on t (``nonauto``)."""

    kl: int
    ku: int
    band: bool
    pat_i: np.ndarray
    pat_j: np.ndarray
    nonauto: bool


def linalg_plan(rt: ModelRuntime, kind=None) -> LinalgPlan:
    """The factorisation plan of the model's W; `kind` forces "dense" or "band"."""
    if kind not in (None, "dense", "band"):
        raise InputValidationError(f"unknown linear algebra {kind!r}; valid: 'dense', 'band'")

    def build():
        cm = rt.compiled
        n = rt.n
        pat = tuple(cm.jac_z_pattern)
        pat_i = np.array([i for i, _ in pat], dtype=np.int64)
        pat_j = np.array([j for _, j in pat], dtype=np.int64)
        kl = max([0] + [i - j for i, j in pat])
        ku = max([0] + [j - i for i, j in pat])
        band = (n >= BAND_MIN_N and (2 * kl + ku + 1) * BAND_RATIO <= n) if kind is None else kind == "band"
        if not band:
            kl = ku = max(n - 1, 0)
        return LinalgPlan(kl, ku, band, pat_i, pat_j, len(tuple(cm.jac_t_nonzero)) > 0)

    return rt.memo("linalg_plan", kind, build)


def refuse_auto(cfg: SolverConfig, adjoint):
    if cfg.kind == "auto":
        raise InputValidationError(f"adjoint={adjoint!r} with method='auto' is not available (its steps are not "
                                   "recorded); use 'rodas5'")


def integrate(rt: ModelRuntime, y0, theta, ts, cfg: SolverConfig, record=0, linalg=None) -> IntegrationResult:
    """Run the compiled Rosenbrock / auto loop. ``stats`` (int64): nfev, nsteps, naccepted, nrejected, njev, nlu,
    0, switches, accepted explicit, accepted Rosenbrock; ``fstats``: t_reached, h_last, time in explicit steps,
    time in Rosenbrock steps."""
    meth = cfg.method
    if record and meth.kind == "auto":
        raise InputValidationError("recording steps (gradients) is supported by 'rodas5' and 'rodas4', not 'auto'")
    tab = meth.tableau
    a, C, c, d, mw, me, dense, gamma = tab.packed()
    ex = _AUTO_EXPLICIT
    plan = linalg_plan(rt, linalg)
    out_y = np.empty((ts.size, y0.size))
    stats = np.zeros(10, dtype=np.int64)
    fstats = np.zeros(4)
    ctrl = cfg.ctrl
    res = ros.integrate(rt.kern, rt.n, theta, ts, y0, a, C, c, d, mw, me, dense, gamma,
                        tab.error_order, ex.a, ex.b_error, ex.c, ex.dense, meth.kind == "auto", plan.nonauto,
                        plan.kl, plan.ku, plan.band, plan.pat_i, plan.pat_j, cfg.rtol, cfg.atol,
                        0.0 if cfg.dt is None else cfg.dt, 0.0 if cfg.dt_max is None else cfg.dt_max,
                        cfg.max_steps, ctrl, record, out_y, stats, fstats,
                        clock_address() if ctrl.size > 4 and ctrl[4] > 0 else 0, rt.rec_cap)
    status, out_step, out_frac, rec_t, rec_h, rec_y, rec_k, n_rec = res
    if record:
        rt.note_steps(int(n_rec))
    return IntegrationResult(int(status), out_y, out_step, out_frac, rec_t, rec_h, rec_y, rec_k, stats, fstats)


def solve(rt: ModelRuntime, z0, theta, ts, cfg: SolverConfig, throw, stacklevel=4):
    """A solve of checked inputs with a Rosenbrock method or "auto". ``sol.stats`` adds ``njev`` and ``nlu``;
    with "auto" also ``switches`` and the accepted steps and time spent in each method (``nsteps_explicit``,
    ``nsteps_stiff``, ``t_explicit``, ``t_stiff``)."""
    res = integrate(rt, z0, theta, ts, cfg)
    sol = make_solution(ts, res, cfg, False)
    if cfg.kind == "auto":
        s, fs = res.stats, res.fstats
        sol.stats.update(switches=int(s[7]), nsteps_explicit=int(s[8]), nsteps_stiff=int(s[9]),
                         t_explicit=float(fs[2]), t_stiff=float(fs[3]))
    if throw and not sol.success:
        raise failure(sol.status, sol.t_reached, cfg.max_steps, solution=sol)
    return sol


def recorded_forward(rt: ModelRuntime, z0, theta, ts, cfg: SolverConfig, throw, get_cot):
    """The recording Rosenbrock pass of the adjoints: (result, solution, cotangent); cotangent None on a failure
    (raised instead with ``throw``)."""
    fwd = integrate(rt, z0, theta, ts, cfg, record=2)
    sol = make_solution(ts, fwd, cfg, throw)
    return fwd, sol, (get_cot(sol) if sol.success and get_cot is not None else None)


def sensitivity_model(rt: ModelRuntime) -> ModelRuntime:
    """The forward-sensitivity system as a model of its own: states (z, S_z0, S_theta) with
    S' = (df/dz) S (+ df/dtheta). Its exact Jacobian (second derivatives of f included) is generated like any
    model's, so the Rosenbrock methods integrate the stiff sensitivity equations with it."""
    def build():
        return ModelRuntime(sensitivity_system(rt.sym, rt.derivatives()))

    return rt.memo("sensitivity_model", None, build)


def sensitivities(rt: ModelRuntime, z0, theta, ts, cfg: SolverConfig, throw):
    """Forward sensitivities with a Rosenbrock method: the augmented system (z, dz/dz0, dz/dtheta) solved
    with the exact Jacobian of the augmented system. Tolerances: the states' rtol/atol; a sensitivity
    column of theta_k gets atol / max(|theta_k|, 1e-300) (errors of theta_k * dz/dtheta_k are controlled in
    the units of z, as CVODES does with its parameter scales). Returns (Solution, dz/dz0, dz/dtheta)."""
    n, p, m = rt.n, rt.p, ts.size
    sm = sensitivity_model(rt)
    y0 = np.concatenate([z0, np.eye(n).ravel(), np.zeros(n * p)])
    atol_a, rtol_a = cfg.atol, cfg.rtol
    atol_s = np.concatenate([atol_a, np.tile(atol_a, n),
                             (atol_a[:, None] / np.maximum(np.abs(theta), 1e-300)[None, :]).ravel()])
    rtol_s = np.concatenate([rtol_a, np.tile(rtol_a, n + p)])
    cfg_s = replace(cfg, rtol=rtol_s, atol=atol_s)
    res = integrate(sm, y0, theta, ts, cfg_s)
    full = make_solution(ts, res, cfg_s, False)
    Y = full.z
    sol = Solution(t=ts, z=Y[:, :n].copy(), stats=full.stats, status=full.status, message=full.message,
                   t_reached=full.t_reached)
    if throw and not sol.success:
        raise failure(sol.status, sol.t_reached, cfg.max_steps, solution=sol)
    return sol, Y[:, n:n + n * n].reshape(m, n, n), Y[:, n + n * n:].reshape(m, n, p)
