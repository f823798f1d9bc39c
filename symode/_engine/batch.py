"""Batched solves and gradients: leading batch dimension on z0 and/or theta, trajectories in parallel."""
from __future__ import annotations

import numpy as np

from .. import _status
from .. import _validate as V
from .._errors import InputValidationError, IntegrationError
from .._numeric import batch as nb_batch
from .._solution import Gradient, Solution
from .config import SolverConfig
from .runtime import ModelRuntime


def is_batch(z0, theta):
    nz = z0.ndim if type(z0) is np.ndarray else np.ndim(z0)
    nt = theta.ndim if type(theta) is np.ndarray else np.ndim(theta)
    return nz == 2 or nt == 2


def broadcast(rt: ModelRuntime, z0, theta, expand=True):
    """z0 and theta as C-contiguous float64 arrays (B, n) and (B, p), checked (``_validate.batch_pair``). With
    ``expand=False`` an input without a batch dimension stays one row (the compiled batch loops share it across the
    members, no copy) and the batch size is returned as a third value."""
    return V.batch_pair(z0, theta, rt.n, rt.p, expand)


def _common(cfg: SolverConfig):
    if not cfg.explicit:
        raise InputValidationError(f"batched solves support the explicit methods; {cfg.method.name!r} is not one yet")
    t = cfg.rk
    return (t.a, t.b, t.b_error, t.c, t.dense, t.fsal, t.error_order, not cfg.method.fixed, cfg.rtol, cfg.atol,
            *cfg.step_sizes(), cfg.max_steps, cfg.ctrl)


def solve_batch(rt: ModelRuntime, z0, theta, ts, cfg: SolverConfig, throw):
    Z, T, B = broadcast(rt, z0, theta, expand=False)
    ts = V.times(ts)
    n, m = rt.n, ts.size
    out = np.empty((B, m, n))
    status = np.zeros(B, dtype=np.int64)
    stats = np.zeros((B, 8), dtype=np.int64)
    t_reached = np.zeros(B)
    nb_batch.batch_solve(rt.kern, n, rt.p, T, ts, Z, *_common(cfg), out, status, stats, t_reached)
    st = dict(nfev=stats[:, 0].copy(), nsteps=stats[:, 1].copy(), naccepted=stats[:, 2].copy(),
              nrejected=stats[:, 3].copy())
    return batch_solution(ts, out, status, t_reached, st, cfg, throw)


def batch_solution(ts, out, status, t_reached, stats, cfg: SolverConfig, throw):
    """The Solution of a batch (z (B, m, n), per-member ``statuses``), raising naming the failed indices."""
    B = status.size
    failed = np.flatnonzero(status != _status.SUCCESS)
    st = dict(stats, method=cfg.method.name, failed=failed)
    worst = int(status[failed[0]]) if failed.size else _status.SUCCESS
    msg = (f"{failed.size} of {B} trajectories failed (indices {failed[:10].tolist()}"
           f"{'...' if failed.size > 10 else ''}); first: {_status.message(worst, t_reached[failed[0]], cfg.max_steps)}"
           if failed.size else _status.message(_status.SUCCESS))
    sol = Solution(t=ts, z=out, stats=st, status=worst, message=msg, t_reached=float("nan"))
    sol.statuses = status
    sol.t_reached_all = t_reached
    if failed.size and throw:
        raise IntegrationError(msg, status=worst, t=float(t_reached[failed[0]]), solution=sol)
    return sol


_NO_LOSS = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
_NO_DATA = np.zeros((1, 1, 1))      # loss data rows of a batch without a loss (one shared, never read)
_NO_FAILED = np.zeros(0, dtype=np.int64)


def vjp_batch(rt: ModelRuntime, z0, theta, ts, cotangent, cfg: SolverConfig, throw, reduce=None, loss=None,
              grad_t=True, batch=None):
    """Batched discrete-adjoint gradients. ``loss`` = (kernel addresses, data rows (B or 1, m, w), summed rows):
    a compiled loss evaluated on each member's own solution (``cotangent`` is then ignored) and the Gradient
    gets ``value`` (per member, or summed with ``reduce="sum"``). With a loss the caller has checked z0, theta
    (rows: B or 1, shared) and ts already and passes the batch size as ``batch``."""
    if reduce not in (None, "sum"):
        raise InputValidationError(f"`reduce` must be None (per-sample) or 'sum', got {reduce!r}")
    if loss is None:
        Z, T, B = broadcast(rt, z0, theta, expand=False)
        ts = V.times(ts)
    else:
        Z, T, B = z0, theta, batch
    n, p, m = rt.n, rt.p, ts.size
    if loss is None:
        C = V.cotangent(cotangent, m, n, batch=B)
        if C.ndim == 2:   # shared by the members: the compiled loop reads one row per member
            C = np.array(np.broadcast_to(C, (B, m, n)), order="C")
        laddr, lrows = _NO_LOSS
        LD = _NO_DATA
    else:
        laddr, LD, lrows = loss
        C = np.zeros((B, m, n))
    values = np.empty(B)
    out = np.empty((B, m, n))
    gz, gp, gt = np.empty((B, n)), np.empty((B, p)), np.empty((B, m))
    status = np.empty(B, dtype=np.int64)
    stats = np.zeros((B, 8), dtype=np.int64)
    nb_batch.batch_vjp_discrete(rt.kern, n, p, T, ts, Z, C, laddr, LD, lrows, values, *_common(cfg), out, gz, gp, gt,
                                status, stats, rt.rec_cap, grad_t)
    want_sum = reduce == "sum"
    sums = np.empty(n + p + m + 1 if want_sum else 0)
    nacc, nfailed, finite = nb_batch.batch_epilogue(stats, status, gz, gp, gt, values, want_sum, sums)
    rt.note_steps(int(nacc))
    failed = np.flatnonzero(status) if nfailed else _NO_FAILED   # status 0 = success
    if nfailed and throw:
        raise IntegrationError(f"{failed.size} of {B} trajectories failed (indices {failed[:10].tolist()})",
                               status=int(status[failed[0]]))
    sol = Solution(t=ts, z=out, stats=dict(nfev=stats[:, 0].copy(), failed=failed),
                   status=int(status.max()) if nfailed else _status.SUCCESS)
    sol.statuses = status
    if want_sum:
        g = Gradient(z0=sums[:n], theta=sums[n:n + p], t=sums[n + p:n + p + m] if grad_t else None, solution=sol)
        if loss is not None:
            g.value = float(sums[n + p + m])
    else:
        g = Gradient(z0=gz, theta=gp, t=gt if grad_t else None, solution=sol)
        if loss is not None:
            g.value = values
    if not nfailed and not finite:
        raise IntegrationError("the gradient is not finite (overflow in the adjoint)", status=_status.NONFINITE)
    g.statuses = status
    return g
