"""Explicit Runge-Kutta solves: the call into the compiled loop (:func:`integrate`), the Solution of its result,
the prepared call for float64 vectors, and forward sensitivities."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .. import _status
from .. import _validate as V
from .._errors import StiffnessWarning
from .._numeric import rk
from .._numeric.batch import FLAT_TAIL, solve_flat
from .._numeric.clock import clock_address
from .._solution import PreparedSolution, Solution, failure, step_stats
from .config import SolverConfig
from .runtime import ModelRuntime


@dataclass
class IntegrationResult:
    """What a compiled integration loop returns (explicit and Rosenbrock loops alike).

    ``out_y`` (m, ny) the states at the output times, ``out_step``/``out_frac`` the recorded step and fraction of
    each output (-1: not reached), ``rec_*`` the recorded steps (empty unless recording), ``stats`` the int64
    counters (see :func:`symode._solution.step_stats`), ``fstats`` the float counters (t reached first)."""

    status: int
    out_y: np.ndarray
    out_step: np.ndarray
    out_frac: np.ndarray
    rec_t: np.ndarray
    rec_h: np.ndarray
    rec_y: np.ndarray
    rec_k: np.ndarray
    stats: np.ndarray
    fstats: np.ndarray
    rec_w: np.ndarray | None = None   # network activations of the recorded stages (explicit, network models)
    t_stiff: float = float("nan")     # where the stiffness test fired (explicit methods)

    @property
    def t_reached(self):
        return float(self.fstats[0])


def integrate(rt: ModelRuntime, mode, y0, theta, ts, cfg: SolverConfig, nerr=None, record=0, stop_at_ts=False,
              jumps=None, seg=None, rtol=None, atol=None, rec_cap=None) -> IntegrationResult:
    """Run the compiled explicit loop in ``mode`` (``rk.MODE_F`` the model; MODE_SENS, MODE_ADJ, MODE_BACKSOLVE
    the augmented systems of the gradients) over ``ts``. ``jumps`` = (add, set, mask) applied at the output times,
    ``seg`` the recorded forward steps the adjoint modes interpolate z(t) from."""
    ny = y0.size
    if rtol is None:
        rtol = np.resize(cfg.rtol, ny) if ny != cfg.rtol.size else cfg.rtol
        atol = np.resize(cfg.atol, ny) if ny != cfg.atol.size else cfg.atol
    tab = cfg.rk
    m = ts.size
    if jumps is None or seg is None:
        dflt = rt.placeholders(tab.b.size)
    jadd, jset, mask = dflt[0] if jumps is None else jumps
    if seg is None:
        seg = dflt[1]
    out_y = np.empty((m, ny))
    stats = np.zeros(8, dtype=np.int64)
    fstats = np.zeros(4)
    meth = cfg.method
    res = rk.integrate(mode, rt.kern, rt.n, rt.p, theta, ts, y0,
                       tab.a, tab.b, tab.b_error, tab.c, tab.dense, tab.fsal, tab.error_order, not meth.fixed,
                       rtol, atol, ny if nerr is None else nerr,
                       *cfg.step_sizes(), cfg.max_steps, cfg.ctrl,
                       stop_at_ts, jumps is not None, jadd, jset, mask,
                       seg[0], seg[1], seg[2], seg[3], record, out_y, stats, fstats, clock_address(),
                       rt.rec_cap if rec_cap is None else rec_cap)
    status, out_step, out_frac, rec_t, rec_h, rec_y, rec_k, n_rec, rec_w = res
    if record and mode == rk.MODE_F:
        rt.note_steps(int(n_rec))
    return IntegrationResult(int(status), out_y, out_step, out_frac, rec_t, rec_h, rec_y, rec_k, stats, fstats,
                             rec_w, float(fstats[1]))


def make_solution(ts, res: IntegrationResult, cfg: SolverConfig, throw, n=None, stacklevel=4):
    """The Solution of an integration (rows not reached NaN after a failure), raising its IntegrationError with
    ``throw``; a stiffness warning (explicit methods) names the caller's line ``stacklevel`` frames up."""
    n = res.out_y.shape[1] if n is None else n
    status = res.status
    z = res.out_y[:, :n]
    if status != _status.SUCCESS:
        z = z.copy()
        reached = res.out_step >= 0
        reached[0] = True
        z[~reached] = np.nan
    s = res.stats
    stats = step_stats(s, cfg.method.name)
    msg = _status.message(status, res.t_reached, cfg.max_steps)
    if cfg.explicit and s[6]:
        stats["stiffness_detected_at"] = res.t_stiff
        warnings.warn(f"The problem appears stiff from t={res.t_stiff:.6g} on ({stats['nfev']} RHS evaluations with "
                      f"{cfg.method.name}); a stiff method will be much faster: method='rodas5', or method='auto' "
                      "to switch automatically.", StiffnessWarning, stacklevel=stacklevel)
    sol = Solution(t=ts, z=z, stats=stats, status=status, message=msg, t_reached=res.t_reached)
    if status != _status.SUCCESS and throw:
        raise failure(status, res.t_reached, cfg.max_steps, solution=sol)
    return sol


def solve(rt: ModelRuntime, z0, theta, ts, cfg: SolverConfig, throw, stacklevel=4):
    """A solve of checked inputs with an explicit method."""
    res = integrate(rt, rk.MODE_F, z0, theta, ts, cfg)
    return make_solution(ts, res, cfg, throw, stacklevel=stacklevel)


@dataclass(frozen=True)
class FlatSolve:
    """The prepared arguments of ``_numeric.batch.solve_flat`` for one set of solver settings."""

    cfg: SolverConfig
    fcfg: np.ndarray
    icfg: np.ndarray


def flat_settings(cfg: SolverConfig, want_t=False):
    """The solver settings as the prepared compiled calls take them (``_numeric.batch.vjp_discrete_flat``,
    ``solve_flat``): fcfg = [h_init, h_max, dt_fixed], icfg = [fsal, error_order, adaptive, max_steps, clock
    address, want dL/dts]."""
    tab = cfg.rk
    fcfg = np.array(cfg.step_sizes())
    icfg = np.array([int(tab.fsal), int(tab.error_order), int(not cfg.method.fixed), int(cfg.max_steps),
                     clock_address(), int(want_t)], dtype=np.int64)
    return fcfg, icfg


def prepare_flat_solve(cfg: SolverConfig):
    return FlatSolve(cfg, *flat_settings(cfg)) if cfg.explicit else None


def solve_prepared(rt: ModelRuntime, z0, theta, ts, fs: FlatSolve, throw):
    """A plain explicit solve of float64 vectors in one compiled call (``_numeric.batch.solve_flat``, which
    checks z0, theta and ts), with the Solution's stats built on first read; a failed integration is raised
    or returned with its status, and a stiffness warning given, as by the validating path. None when that
    path must answer instead: an input that is not finite or not monotonic (it names the problem)."""
    cfg, tab = fs.cfg, fs.cfg.rk
    m, n = ts.size, rt.n
    buf = np.empty(m + m * n + FLAT_TAIL)
    stats = np.zeros(8, dtype=np.int64)
    status = solve_flat(rt.kern, theta, ts, z0, tab.a, tab.b, tab.b_error, tab.c, tab.dense, cfg.rtol, cfg.atol,
                        cfg.ctrl, fs.fcfg, fs.icfg, buf, stats)
    if status == 0 and not stats[6]:
        return PreparedSolution(buf[:m], buf[m:m + m * n].reshape(m, n), stats, cfg.method.name, float(buf[m + m * n]))
    if status < 0:
        return None
    V.times(ts)     # a failure: first, output times that float64 cannot separate are named as an input error
    o = m + m * n   # a failure (its unreached rows are NaN already) or a stiffness warning to give
    fstats = np.array([buf[o], buf[o + 1], 0.0, 0.0])
    res = IntegrationResult(int(status), buf[m:o].reshape(m, n), np.zeros(m, dtype=np.int64), np.zeros(m),
                            _EMPTY, _EMPTY, _EMPTY, _EMPTY, stats, fstats, None, float(buf[o + 1]))
    return make_solution(buf[:m], res, cfg, throw, stacklevel=4)   # make_solution, here, ODE.solve, caller


_EMPTY = np.zeros(0)


def sensitivities(rt: ModelRuntime, z0, theta, ts, cfg: SolverConfig, throw):
    """Integrate z together with dz/dz0 and dz/dtheta (the forward sensitivity equations, explicit methods):
    (Solution, dz/dz0 (m, n, n), dz/dtheta (m, n, p))."""
    n, p, m = rt.n, rt.p, ts.size
    ny = n + n * n + n * p
    y0 = np.zeros(ny)
    y0[:n] = z0
    y0[n:n + n * n] = np.eye(n).ravel()
    # Sensitivities are error-controlled like the states (scaled by the same tolerances).
    rt_, at_ = np.resize(cfg.rtol, ny), np.resize(cfg.atol, ny)
    res = integrate(rt, rk.MODE_SENS, y0, theta, ts, cfg, rtol=rt_, atol=at_)
    sol = make_solution(ts, res, cfg, throw, n=n)
    Y = res.out_y
    return sol, Y[:, n:n + n * n].reshape(m, n, n), Y[:, n + n * n:].reshape(m, n, p)
