"""Gradients of losses of ODE solutions: adjoint variants and forward sensitivities.

``vjp`` returns dL/dz0, dL/dtheta and dL/dts given cotangent[i] = dL/dz(ts[i]). Variants:

- ``"discrete"`` (default for explicit methods): the exact reverse-mode derivative of the numerical
  method's own map along the accepted steps (step sizes held fixed). Matches finite differences of
  ``solve`` to round-off for fixed-step methods; for adaptive methods it is the derivative of the computed
  solution. Memory: the recorded steps (s*n + n + 2 floats per step).
- ``"checkpoint"``: the continuous adjoint a' = -a^T df/dz, g' = -a^T df/dtheta integrated backward with
  its own error control, with z(t) from the forward pass's recorded steps and dense output (not
  re-integrated), so it stays accurate on stiff, chaotic and dissipative problems.
- ``"backsolve"``: the classical Neural-ODE adjoint: z re-integrated backward together with a and g.
  O(1) memory in the number of steps, but z(t) reconstructed backward can be wrong where the dynamics are
  contracting or chaotic (see the docs); symode checks the reconstructed z(ts[i]) against the forward
  values and warns when they disagree.
- ``"forward"``: forward sensitivities (z, dz/dz0, dz/dtheta integrated together); best for few
  parameters and states.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import _status
from . import _validate as V
from ._errors import InputValidationError, IntegrationError
from ._batch import is_batch, vjp_batch
from ._numeric import adjoint as adj
from ._numeric import rk
from ._numeric.batch import vjp_discrete_one
from ._numeric.clock import clock_address
from ._solution import Gradient, Solution

_SUCCESS_MESSAGE = _status.message(_status.SUCCESS)

ADJOINTS = ("discrete", "checkpoint", "backsolve", "forward")
DEFAULT_ADJOINT = "discrete"


def _check_cotangent(cotangent, m, n):
    try:
        c = np.array(cotangent, dtype=np.float64, copy=True)
    except (TypeError, ValueError):
        raise InputValidationError("`cotangent` must be a real array of shape (len(ts), n_states)") from None
    if c.shape != (m, n):
        raise InputValidationError(f"`cotangent` has shape {c.shape}; expected (len(ts), n_states) = ({m}, {n})")
    if not np.all(np.isfinite(c)):
        raise InputValidationError("`cotangent` contains NaN or inf")
    return np.ascontiguousarray(c)


def _raise_or_status(model, res, meth, max_steps, throw, phase):
    if res["status"] != _status.SUCCESS:
        msg = _status.message(res["status"], res["t_reached"], max_steps)
        if throw:
            raise IntegrationError(f"{phase} integration failed: {_status.NAMES[res['status']]}: {msg}",
                                   status=res["status"], t=res["t_reached"])
        return False
    return True


def _time_grad(model, zs, theta, ts, cotangent, a0plus):
    """dL/dts[i] = cotangent[i] . f(z(ts[i])) for i > 0, and dL/dts[0] = -a(ts[0]+) . f(z0)."""
    gt = np.empty(ts.size)
    rk.time_grad(model.compiled.kern[0], ts, np.ascontiguousarray(zs), theta, cotangent, a0plus, gt)
    return gt


def vjp(model, z0, theta, ts, cotangent, adjoint=DEFAULT_ADJOINT, method="dopri5", rtol=1e-6, atol=1e-9,
        dt=None, max_steps=100_000, throw=True, dt_max=None, controller=None, seminorm=True,
        adjoint_rtol=None, adjoint_atol=None, checkpoints=None, time_limit=None, **kwargs):
    reduce = kwargs.pop("reduce", None)
    grad_t = kwargs.pop("grad_t", True)  # False: skip dL/dts (m evaluations of f) where that saves work
    checked = kwargs.pop("_checked", False)  # z0, theta, ts already validated by the caller (value_and_grad)
    if kwargs:
        raise InputValidationError(f"unknown keyword argument(s) {', '.join(map(repr, kwargs))}")
    if adjoint not in ADJOINTS:
        raise InputValidationError(f"Unknown adjoint {adjoint!r}; valid: {', '.join(map(repr, ADJOINTS))}.")
    if not checked and is_batch(z0, theta):
        if adjoint != "discrete":
            raise InputValidationError("batched gradients use adjoint='discrete' (the others run per trajectory)")
        opts = model._options(method, rtol, atol, dt, max_steps, dt_max, controller)
        return vjp_batch(model, z0, theta, ts, cotangent, opts, throw, reduce=reduce, grad_t=grad_t)
    if not checked:
        z0, theta = model._zt(z0, theta)
        ts = V.times(ts)
    n, p, m = model.n_states, model.n_params, ts.size
    fused = cotangent if isinstance(cotangent, FusedLoss) else None
    if fused is not None:
        if adjoint == "discrete":  # the common training call: straight to the one compiled call
            opts = model._options(method, rtol, atol, dt, max_steps, dt_max, controller, time_limit=time_limit)
            if opts[0].kind == "explicit":
                return _discrete_fused(model, z0, theta, ts, None, opts, throw, loss=fused, grad_t=grad_t)
        cotangent = fused.fallback
    # `cotangent` may be a callable(solution) -> (value, cotangent, extra dL/dtheta), evaluated on the
    # forward pass the gradient itself uses (value_and_grad); the value lands in Gradient.value.
    cot_fn = cotangent if callable(cotangent) else None
    cot = None if cot_fn else _check_cotangent(cotangent, m, n)
    extra = {}

    def get_cot(sol):
        nonlocal cot
        if cot_fn is not None:
            value, c, gth_extra = cot_fn(sol)
            cot = _check_cotangent(c, m, n)
            extra["value"] = value
            extra["gtheta"] = gth_extra
        return cot

    opts = model._options(method, rtol, atol, dt, max_steps, dt_max, controller, time_limit=time_limit)
    meth = opts[0]
    if meth.kind != "explicit":
        from ._stiff import vjp_stiff

        return _extra(vjp_stiff(model, z0, theta, ts, get_cot, adjoint, opts, throw, seminorm, checkpoints), extra)
    if adjoint == "discrete" and cot_fn is None:
        return _discrete_fused(model, z0, theta, ts, cot, opts, throw, grad_t=grad_t)
    if adjoint == "discrete":   # record=3: dense-output-only stages only where an output is inside a step
        fwd = model._integrate(rk.MODE_F, z0, theta, ts, opts, record=3)
        sol = model._make_solution(ts, fwd, meth, opts[4], throw)
        if not sol.success:
            return _failed(n, p, m, sol)
        cot = get_cot(sol)
        a, b, be, c, dense, fsal, eo = meth.packed()
        ybar = np.empty(n)
        gth = np.empty(max(p, 1))
        adj.discrete_sweep(model.compiled.kern, n, p, theta, fwd["rec_t"], fwd["rec_h"], fwd["rec_y"],
                           fwd["rec_k"], a, b, c, dense, fwd["out_step"], fwd["out_frac"], cot, ybar, gth,
                           fwd["rec_w"])
        a0plus = ybar.copy()
        stats = dict(forward=sol.stats, steps_recorded=int(fwd["rec_t"].size))
        return _extra(_finish(model, sol, theta, ts, cot, a0plus, gth[:p], stats), extra)
    if adjoint == "forward":
        S = sensitivities(model, z0, theta, ts, opts=opts, throw=throw)
        if not S.solution.success:
            return _failed(n, p, m, S.solution)
        cot = get_cot(S.solution)
        a0plus = np.einsum("min,mi->n", S.dz_dz0[1:], cot[1:]) if m > 1 else np.zeros(n)
        gth = np.einsum("mip,mi->p", S.dz_dtheta, cot)
        return _extra(_finish(model, S.solution, theta, ts, cot, a0plus, gth, dict(forward=S.solution.stats)), extra)
    rtol_b = opts[2] if adjoint_rtol is None else V.tolerance(adjoint_rtol, n, "adjoint_rtol")
    atol_b = opts[3] if adjoint_atol is None else V.tolerance(adjoint_atol, n, "adjoint_atol")
    ts_b = np.ascontiguousarray(ts[::-1])
    if adjoint == "checkpoint" and checkpoints is not None:
        return _extra(_checkpointed(model, z0, theta, ts, get_cot, opts, throw, seminorm, rtol_b, atol_b,
                                    V.positive_int(checkpoints, "checkpoints")), extra)
    if adjoint == "checkpoint":
        fwd = model._integrate(rk.MODE_F, z0, theta, ts, opts, record=2)
        sol = model._make_solution(ts, fwd, meth, opts[4], throw)
        if not sol.success:
            return _failed(n, p, m, sol)
        cot_b = get_cot(sol)[::-1]
        ny = n + p
        y0 = np.zeros(ny)
        y0[:n] = cot_b[0]
        jadd = np.zeros((m, ny))
        jadd[:, :n] = cot_b
        jset = np.zeros((1, 1))
        mask = np.zeros(ny, dtype=np.int64)
        rt = np.concatenate([rtol_b, np.full(p, rtol_b.max() if n else 1e-6)])
        at = np.concatenate([atol_b, np.full(p, atol_b.max() if n else 1e-9)])
        seg = (fwd["rec_t"], fwd["rec_h"], fwd["rec_y"], fwd["rec_k"])
        if seg[0].size == 0:
            seg = (np.zeros(1), np.ones(1), z0.reshape(1, n).copy(), np.zeros((1, meth.tableau.n_stages, n)))
        bwd = model._integrate(rk.MODE_ADJ, y0, theta, ts_b, opts, nerr=n if seminorm else ny, stop_at_ts=True,
                               jumps=(jadd, jset, mask), seg=seg, rtol=rt, atol=at)
        if not _raise_or_status(model, bwd, meth, opts[4], throw, "The backward (adjoint)"):
            return _failed(n, p, m, sol, status=_status.ADJOINT_FAILED)
        last = bwd["out_y"][-1]
        a0plus = last[:n].copy()
        stats = dict(forward=sol.stats, backward=_stats(bwd))
        return _extra(_finish(model, sol, theta, ts, cot, a0plus, last[n:].copy(), stats), extra)
    # backsolve
    fwd = model._integrate(rk.MODE_F, z0, theta, ts, opts)
    sol = model._make_solution(ts, fwd, meth, opts[4], throw)
    if not sol.success:
        return _failed(n, p, m, sol)
    cot_b = get_cot(sol)[::-1]
    ny = 2 * n + p
    y0 = np.zeros(ny)
    y0[:n] = sol.z[-1]
    y0[n:2 * n] = cot_b[0]
    jadd = np.zeros((m, ny))
    jadd[:, n:2 * n] = cot_b
    jset = np.zeros((m, ny))
    zs_b = sol.z[::-1]
    jset[:, :n] = zs_b
    mask = np.zeros(ny, dtype=np.int64)
    mask[:n] = 1
    rt = np.concatenate([opts[2], rtol_b, np.full(p, rtol_b.max())])
    at = np.concatenate([opts[3], atol_b, np.full(p, atol_b.max())])
    bwd = model._integrate(rk.MODE_BACKSOLVE, y0, theta, ts_b, opts, nerr=2 * n if seminorm else ny,
                           stop_at_ts=True, jumps=(jadd, jset, mask), rtol=rt, atol=at)
    if not _raise_or_status(model, bwd, meth, opts[4], throw, "The backward (backsolve)"):
        return _failed(n, p, m, sol, status=_status.ADJOINT_FAILED)
    # z reconstructed backward, compared with the forward values at the output times
    zrec = bwd["out_y"][:, :n][::-1]
    scale = opts[3] + opts[2] * np.abs(sol.z)
    recon_err = float(np.max(np.abs(zrec - sol.z) / scale)) if m > 1 else 0.0
    if recon_err > 1e3:
        warnings.warn(f"backsolve: z(t) re-integrated backward differs from the forward solution by "
                      f"{recon_err:.2g} tolerance units (the dynamics are contracting, stiff or chaotic); the "
                      "gradient is unreliable. Use adjoint='checkpoint' or 'discrete'.", RuntimeWarning,
                      stacklevel=3)
    last = bwd["out_y"][-1]
    a0plus = last[n:2 * n].copy()
    stats = dict(forward=sol.stats, backward=_stats(bwd), reconstruction_error=recon_err)
    return _extra(_finish(model, sol, theta, ts, cot, a0plus, last[2 * n:].copy(), stats), extra)


def _checkpointed(model, z0, theta, ts, get_cot, opts, throw, seminorm, rtol_b, atol_b, n_ck):
    """Checkpoint adjoint with bounded memory: at most `n_ck` stored states (plus 2 floats per step); each
    segment's steps are replayed bitwise from its checkpoint, then the adjoint runs backward over it."""
    n, p, m = model.n_states, model.n_params, ts.size
    meth = opts[0]
    count = model._integrate(rk.MODE_F, z0, theta, ts, opts)
    sol = model._make_solution(ts, count, meth, opts[4], throw)
    if not sol.success:
        return _failed(n, p, m, sol)
    cot = get_cot(sol)
    N = int(count["stats"][2])
    stride = max(1, -(-N // n_ck))
    ctrl = opts[6].copy()
    ctrl = np.concatenate([ctrl, np.zeros(max(0, 6 - ctrl.size))])
    ctrl[5] = stride
    opts2 = opts[:6] + (ctrl,)
    fwd = model._integrate(rk.MODE_F, z0, theta, ts, opts2, record=1, rec_cap=N + 1)   # N steps, known
    rec_t, rec_h, rec_y = fwd["rec_t"], fwd["rec_h"], fwd["rec_y"]
    a_, b_, be_, c_, dense, fsal, eo = meth.packed()
    s_ = b_.size
    ny = n + p
    state = np.zeros(ny)
    state[:n] = cot[-1]
    seg_of = fwd["out_step"] // stride
    rt = np.concatenate([rtol_b, np.full(p, rtol_b.max())])
    at = np.concatenate([atol_b, np.full(p, atol_b.max())])
    mask = np.zeros(ny, dtype=np.int64)
    jset = np.zeros((1, 1))
    bstats = np.zeros(4, dtype=np.int64)
    n_seg = -(-N // stride)
    seg_y = np.empty((stride, n))
    seg_k = np.empty((stride, s_, n))
    for j in range(n_seg - 1, -1, -1):
        i0, i1 = j * stride, min(N, (j + 1) * stride)
        t_end = rec_t[i1] if i1 < N else ts[-1]
        t_steps = np.concatenate([rec_t[i0:i1], [t_end]])
        L = i1 - i0
        rk.replay(model.compiled.kern, theta, t_steps, np.ascontiguousarray(rec_h[i0:i1]), rec_y[j].copy(), a_, b_,
                  c_, fsal, seg_y, seg_k)
        outs = [i for i in range(1, m) if seg_of[i] == j and ts[i] != t_end]
        outs.sort(key=lambda i: -ts[i] if ts[-1] > ts[0] else ts[i])
        stops = [t_end] + [ts[i] for i in outs] + [rec_t[i0]]
        jadd = np.zeros((len(stops), ny))
        for r, i in enumerate(outs, start=1):
            jadd[r, :n] = cot[i]
        seg = (np.ascontiguousarray(t_steps[:-1]), np.ascontiguousarray(rec_h[i0:i1]), seg_y[:L], seg_k[:L])
        bwd = model._integrate(rk.MODE_ADJ, state, theta, np.array(stops), opts, nerr=n if seminorm else ny,
                               stop_at_ts=True, jumps=(jadd, jset, mask), seg=seg, rtol=rt, atol=at)
        if not _raise_or_status(model, bwd, meth, opts[4], throw, "The backward (adjoint)"):
            return _failed(n, p, m, sol, status=_status.ADJOINT_FAILED)
        bstats += bwd["stats"][:4]
        state = bwd["out_y"][-1].copy()
        # outputs exactly at this segment's start belong to the previous segment (its end): added there
        for i in range(1, m):
            if seg_of[i] == j - 1 and ts[i] == rec_t[i0]:
                state[:n] += cot[i]
    stats = dict(forward=sol.stats, backward=dict(nfev=int(bstats[0]), nsteps=int(bstats[1]),
                                                  naccepted=int(bstats[2]), nrejected=int(bstats[3])),
                 checkpoints=int(rec_y.shape[0]), stride=stride,
                 memory_floats=int(rec_y.size + rec_t.size + rec_h.size + seg_y.size + seg_k.size))
    return _finish(model, sol, theta, ts, cot, state[:n].copy(), state[n:].copy(), stats)


class FusedLoss:
    """A compiled loss (generated kernels ``addr``, data rows ``D``, summed rows ``rows``) handed to ``vjp`` as
    the cotangent: with the discrete adjoint of an explicit method, forward solve, loss, cotangent, reverse
    sweep and dL/dts run in one compiled call; otherwise ``fallback`` (a cotangent callable) is used."""

    def __init__(self, addr, D, rows, fallback):
        self.addr, self.D, self.rows, self.fallback = addr, D, rows, fallback


_NO_LOSS = (np.zeros(0, dtype=np.int64), np.zeros((1, 1)), np.zeros(0, dtype=np.int64))
def flat_settings(opts, want_t=False):
    """The solver settings as the prepared compiled calls take them (``_numeric.batch.vjp_discrete_flat``,
    ``solve_flat``): fcfg = [h_init, h_max, dt_fixed], icfg = [fsal, error_order, adaptive, max_steps, clock
    address, want dL/dts]."""
    meth, dt, rtol_a, atol_a, max_steps, dt_max, ctrl = opts
    a, b, be, c, dense, fsal, eo = meth.packed()
    fcfg = np.array(meth.step_sizes(dt, dt_max))
    icfg = np.array([int(fsal), int(eo), int(not meth.fixed), int(max_steps), clock_address(), int(want_t)],
                    dtype=np.int64)
    return fcfg, icfg


def _discrete_fused(model, z0, theta, ts, cot, opts, throw, loss=None, grad_t=True):
    """The default path: forward solve, discrete-adjoint sweep and dL/dts in one compiled call (with ``loss``,
    a FusedLoss, the loss and its cotangent too: ``cot`` is then computed, and the Gradient gets ``value``)."""
    meth, dt, rtol_a, atol_a, max_steps, dt_max, ctrl = opts
    n, p, m = model.n_states, model.n_params, ts.size
    a, b, be, c, dense, fsal, eo = meth.packed()
    grads = np.empty(n + p + m)   # few allocations: a short solve's Python is a measurable part of its cost
    gz, gp, gt = grads[:n], grads[n:n + p], grads[n + p:]
    stats = np.zeros(8, dtype=np.int64)
    fstats = np.zeros(4)
    if loss is None:
        out_y = np.empty((m, n))
        laddr, lD, lrows = _NO_LOSS
        g_loss = gz
    else:
        laddr, lD, lrows = loss.addr, loss.D, loss.rows
        zc = np.zeros((2, m, n))
        out_y, cot = zc[0], zc[1]
        g_loss = np.zeros(max(p, 1)) if laddr[1] else gz   # a loss without parameters leaves it alone
    status, nrec, value, finite = vjp_discrete_one(model.compiled.kern, n, p, theta, ts, z0, cot, laddr, lD, lrows,
                                                   g_loss,
                                           a, b, be, c, dense, fsal, eo,
                                    not meth.fixed, rtol_a, atol_a, *meth.step_sizes(dt, dt_max), max_steps, ctrl,
                                    out_y, gz, gp, gt, stats, fstats, clock_address(), model._rec_cap, grad_t)
    model._note_steps(int(nrec))
    return fused_result(meth, max_steps, throw, status, nrec, value, finite, ts, out_y, gz, gp, gt, stats,
                        float(fstats[0]), grad_t, loss is not None)


def fused_result(meth, max_steps, throw, status, nrec, value, finite, ts, out_y, gz, gp, gt, stats, t_reached,
                 grad_t, with_value):
    """The Gradient of a fused compiled call's outputs (``vjp_discrete_one``, ``vjp_discrete_flat``), or its
    failure: raised as IntegrationError with ``throw``, else returned with the status (NaN gradients)."""
    st = dict(nfev=int(stats[0]), nsteps=int(stats[1]), naccepted=int(stats[2]), nrejected=int(stats[3]),
              njev=0, nlu=0, method=meth.name)
    msg = _SUCCESS_MESSAGE if status == 0 else _status.message(int(status), t_reached, max_steps)
    sol = Solution(t=ts, z=out_y, stats=st, status=int(status), message=msg, t_reached=t_reached)
    if status != _status.SUCCESS:
        if throw:
            raise IntegrationError(f"{_status.NAMES[int(status)]}: {msg}", status=int(status), t=t_reached,
                                   solution=sol)
        g = Gradient(z0=gz, theta=gp, t=gt, solution=sol)
        g.stats = dict(status=int(status), message=msg)
        return g
    if not finite:
        raise IntegrationError("the gradient is not finite (overflow in the adjoint)", status=_status.NONFINITE)
    g = Gradient(z0=gz, theta=gp, t=gt if grad_t else None, stats=dict(forward=st, steps_recorded=int(nrec)),
                 solution=sol)
    if with_value:
        g.value = float(value)
    return g


def _extra(g, extra):
    if "value" in extra:
        g.value = float(extra["value"])
        if extra.get("gtheta") is not None and g.theta.size:
            g.theta = g.theta + np.asarray(extra["gtheta"], dtype=float)[: g.theta.size]
    return g


def _stats(res):
    s = res["stats"]
    return dict(nfev=int(s[0]), nsteps=int(s[1]), naccepted=int(s[2]), nrejected=int(s[3]))


def _finish(model, sol, theta, ts, cot, a0plus, gtheta, stats):
    gz0 = a0plus + cot[0]
    gt = _time_grad(model, sol.z, theta, ts, cot, a0plus)
    if not (np.all(np.isfinite(gz0)) and np.all(np.isfinite(gtheta)) and np.all(np.isfinite(gt))):
        raise IntegrationError("the gradient is not finite (overflow in the adjoint)", status=_status.NONFINITE)
    return Gradient(z0=gz0, theta=np.asarray(gtheta, dtype=float).copy(), t=gt, stats=stats, solution=sol)


def _failed(n, p, m, sol, status=None):
    g = Gradient(z0=np.full(n, np.nan), theta=np.full(p, np.nan), t=np.full(m, np.nan), solution=sol)
    g.stats = dict(status=status if status is not None else sol.status, message=sol.message)
    return g


class Sensitivities:
    """Forward sensitivities: ``t`` (m,), ``z`` (m, n), ``dz_dz0`` (m, n, n), ``dz_dtheta`` (m, n, p)."""

    def __init__(self, solution, dz_dz0, dz_dtheta):
        self.solution = solution
        self.t, self.z = solution.t, solution.z
        self.dz_dz0, self.dz_dtheta = dz_dz0, dz_dtheta


def sensitivities(model, z0, theta, ts, method="dopri5", rtol=1e-6, atol=1e-9, dt=None, max_steps=100_000,
                  throw=True, dt_max=None, controller=None, opts=None):
    """Integrate z together with dz/dz0 and dz/dtheta (forward sensitivity equations)."""
    z0, theta = model._zt(z0, theta)
    ts = V.times(ts)
    n, p, m = model.n_states, model.n_params, ts.size
    if opts is None:
        opts = model._options(method, rtol, atol, dt, max_steps, dt_max, controller)
    meth = opts[0]
    if meth.kind != "explicit":
        from ._stiff import sensitivities_stiff

        return sensitivities_stiff(model, z0, theta, ts, opts, throw)
    ny = n + n * n + n * p
    y0 = np.zeros(ny)
    y0[:n] = z0
    y0[n:n + n * n] = np.eye(n).ravel()
    # Sensitivities are error-controlled like the states (scaled by the same tolerances).
    rt = np.resize(opts[2], ny)
    at = np.resize(opts[3], ny)
    res = model._integrate(rk.MODE_SENS, y0, theta, ts, opts, rtol=rt, atol=at)
    sol = model._make_solution(ts, res, meth, opts[4], throw, n=n)
    Y = res["out_y"]
    Sz = Y[:, n:n + n * n].reshape(m, n, n)
    Sp = Y[:, n + n * n:].reshape(m, n, p)
    return Sensitivities(sol, Sz, Sp)
