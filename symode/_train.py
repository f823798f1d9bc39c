"""Fitting ODE models to trajectories: :func:`fit` and the :class:`Trainer` behind it.

A fit minimises a loss between the model's solution and observed trajectories over the parameters theta
and, optionally, the initial states z0, with exact gradients from the adjoint (``model.vjp``) and one of the
optimizers of :mod:`symode.optim`.

Data
----
One trajectory ``(ts, Y)`` or a list of them: ``ts`` (m,) increasing output times, ``Y`` (m, k)
observations (NaN = missing, skipped by the loss). With the built-in losses ``Y`` observes the states
(k = n_states); with an :class:`symode.ObservationLoss` its columns are the loss's data symbols.

Mini-batches of time windows (``batch_time``)
----------------------------------------------
As in torchdiffeq's ``examples/ode_demo.py``: every iteration draws ``batch_size`` random start indices
s (all distinct, ``s < m - batch_time`` as in torchdiffeq, over all trajectories), and integrates each window
``ts[s : s + batch_time]`` from the *observed* state ``Y[s]`` (which must be complete). For an autonomous
model whose windows share one grid shape (a uniform time grid) every window is integrated over the same
shifted grid ``ts[s:s+batch_time] - ts[s]``, which lets the whole batch go through one call. With one
trajectory and ``seed=0``, the first batch is ``np.sort(default_rng(0).choice(m - batch_time, batch_size,
replace=False))`` -- exactly the batch of the reference problem P2.

Losses
------
``"mse"`` (mean squared error), ``"mae"`` (mean absolute error: P2's ``mean |pred - true|``), ``"sse"``
(sum of squared errors), ``"sae"`` (sum of absolute errors): means and sums run over every observed
entry of every output time of the batch (the window's first point included, as in torchdiffeq). Or an
:class:`symode.ObservationLoss` (a SymPy expression of states, parameters, time and data symbols, compiled
with its exact gradient), summed over output times and averaged over the batch members.
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import sympy as sp

from . import _validate as V
from . import optim as _optim
from ._numeric.methods import METHODS
from ._errors import InputValidationError, IntegrationError
from ._numeric.interrupt import caused_by_interrupt as _caused_by_interrupt
from ._symbolic.losses import ObservationLoss

__all__ = ["fit", "Trainer", "FitResult", "TrainState"]

LOSSES = ("mse", "mae", "sse", "sae")
_SOLVER_KEYS = ("method", "rtol", "atol", "dt", "max_steps", "dt_max", "controller")


# ---------------------------------------------------------------------------------------------- results


@dataclass
class TrainState:
    """What a callback receives every iteration (read it; do not modify the arrays).

    ``iteration`` (0 = the starting point), ``loss`` (the optimised loss at ``theta``/``z0``, on this
    iteration's batch), ``theta`` (p,), ``z0`` ((n,) or (K, n) or None), ``grad`` (gradient of the loss
    w.r.t. the optimised vector), ``elapsed`` seconds, ``best_loss``, ``best_iteration``, ``eval_loss``
    (the full-data loss when evaluated this iteration, else None) and ``history`` (the lists so far).
    """

    iteration: int
    loss: float
    theta: np.ndarray
    z0: np.ndarray | None
    grad: np.ndarray
    elapsed: float
    best_loss: float
    best_iteration: int
    eval_loss: float | None
    history: dict


@dataclass
class FitResult:
    """The result of :func:`fit` / :meth:`Trainer.run`.

    Attributes
    ----------
    theta, z0 : ndarray
        The *best* parameters and initial states seen (lowest monitored loss: the full-data loss when
        ``eval_every`` is set, else the iteration loss). ``z0`` is (n,) for one trajectory, (K, n) for K.
    loss : float
        The monitored loss at the best point.
    theta_last, z0_last : ndarray
        The last iterate.
    history : dict of ndarray
        ``loss`` (per iteration, on that iteration's batch), ``time`` (elapsed s), ``grad_norm`` (max-norm),
        ``flow_time`` (gradient flow only), ``eval_iteration`` and ``eval_loss`` (full-data evaluations).
    iterations : int
        Number of completed iterations (reports after the starting point).
    nfev : int
        Loss-and-gradient evaluations (each = one forward solve and one adjoint sweep per batch member).
    stop_reason : str
        ``"max_iterations"``, ``"tol"``, ``"gtol"``, ``"patience"``, ``"max_time"``, ``"callback"``,
        ``"interrupted"`` (KeyboardInterrupt), ``"optimizer"`` (the optimizer finished by itself),
        ``"nonfinite"`` (the loss became NaN/inf) or ``"integration_failed"`` (the model could not be
        integrated at an iterate of Adam/SGD, or L-BFGS's last line search could only find points where it
        cannot be integrated; a RuntimeWarning says where).
    message : str
    elapsed : float
        Seconds.
    """

    theta: np.ndarray
    z0: np.ndarray | None
    loss: float
    theta_last: np.ndarray
    z0_last: np.ndarray | None
    history: dict
    iterations: int
    nfev: int
    best_iteration: int
    stop_reason: str
    message: str
    elapsed: float
    optimizer: object = None

    def __repr__(self):
        theta = np.array2string(np.asarray(self.theta), precision=6, threshold=8, edgeitems=3, separator=", ")
        return (f"FitResult(theta={theta}, loss={self.loss:.6g}, iterations={self.iterations}, "
                f"best_iteration={self.best_iteration}, stop_reason={self.stop_reason!r}, elapsed={self.elapsed:.3g} s)")


# ---------------------------------------------------------------------------------------------- data


@dataclass
class _Trajectory:
    ts: np.ndarray
    Y: np.ndarray          # (m, k), NaN = missing
    mask: np.ndarray       # finite entries


def _is_times(obj):
    """Whether ``obj`` looks like one vector of output times (numbers, complex included: those are then refused
    as ``ts`` by name, rather than the pair being misread as a list of trajectories)."""
    try:
        a = np.asarray(obj)
    except (TypeError, ValueError):
        return False
    return a.ndim == 1 and a.dtype.kind in "fiuc"


def _trajectories(data, k_expected, what):
    if isinstance(data, (list, tuple)) and len(data) == 2 and _is_times(data[0]):
        items = [data]                                   # one pair (ts, Y)
    elif isinstance(data, (list, tuple)):
        items = list(data)
    else:
        raise InputValidationError("`data` must be a pair (ts, observations) or a list of such pairs")
    if not items:
        raise InputValidationError("`data` is empty")
    out = []
    for j, item in enumerate(items):
        try:
            ts, Y = item
        except (TypeError, ValueError):
            raise InputValidationError(f"`data[{j}]` must be a pair (ts, observations)") from None
        ts = V.real_array(ts, f"data[{j}] ts").ravel()
        Y = V.real_array(Y, f"data[{j}] observations")
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        if Y.ndim != 2 or Y.shape[0] != ts.size:
            raise InputValidationError(f"trajectory {j}: observations have shape {np.shape(item[1])}; expected "
                                       f"(len(ts), {k_expected}) = ({ts.size}, {k_expected})")
        if Y.shape[1] != k_expected:
            raise InputValidationError(f"trajectory {j}: observations have {Y.shape[1]} columns; expected "
                                       f"{k_expected} ({what})")
        if ts.size < 2 or not np.all(np.isfinite(ts)) or np.any(np.diff(ts) <= 0):
            raise InputValidationError(f"trajectory {j}: `ts` must be finite, strictly increasing, >= 2 points")
        problem = V.times_problem(ts, f"data[{j}] ts")     # a span that overflows, times float64 cannot separate
        if problem:
            raise InputValidationError(f"trajectory {j}: {problem}")
        if np.any(np.isinf(Y)):
            row = int(np.argwhere(np.isinf(Y))[0][0])
            raise InputValidationError(f"trajectory {j}: observations contain inf (row {row}; use NaN for missing "
                                       "values)")
        out.append(_Trajectory(ts, np.ascontiguousarray(Y), np.isfinite(Y)))
    return out


# ---------------------------------------------------------------------------------------------- batches


@dataclass
class _Batch:
    """Batch members: initial states y0s (B, n), output times (one common grid or one per member),
    targets and masks ((B, m, k) arrays, or lists when the members' grids differ), and the trajectory each
    member comes from."""

    y0s: np.ndarray
    ts: list
    targets: list
    masks: list
    traj: np.ndarray
    common_ts: np.ndarray | None = None
    scale: float = 1.0         # the loss's normalisation (1/N for means, 1 for sums, 1/B for ObservationLoss)

    def stacked_targets(self):
        return self.targets if isinstance(self.targets, np.ndarray) else np.stack(self.targets)

    def stacked_masks(self):
        return self.masks if isinstance(self.masks, np.ndarray) else np.stack(self.masks)


def _builtin_cotangent(kind, scale):
    """cot(z, target, mask) -> (value, dL/dz) for the built-in losses, with the batch normalisation."""
    if kind in ("mae", "sae"):
        def cot(z, y, mask):
            d = z - y
            d[~mask] = 0.0
            return scale * float(np.abs(d).sum()), scale * np.sign(d)
    else:
        def cot(z, y, mask):
            d = z - y
            d[~mask] = 0.0
            return scale * float((d * d).sum()), (2.0 * scale) * d
    return cot


def batch_value_and_grad(model, theta, batch, loss, solver_kw, adjoint="discrete", need_z0=False):
    """Loss of a batch and its gradients: returns (value, dL/dtheta (p,), dL/dy0 (B, n) or None).

    This is the one place that calls the adjoint. When the batch members share one time grid, the loss is
    built in (mse/mae/sse/sae) and the adjoint is "discrete", the whole batch goes through one batched
    ``value_and_grad`` (one compiled call over the members: forward, loss, cotangent and sweep each). Otherwise -- per-member grids, an ObservationLoss, the
    continuous adjoints, implicit methods -- it loops over the members with one ``model.vjp`` each (the
    cotangent computed on the forward pass that the gradient itself uses).
    """
    if (batch.common_ts is not None and batch.y0s.shape[0] > 1 and not isinstance(loss, ObservationLoss)
            and adjoint == "discrete" and _batched_ok(model, solver_kw)):
        try:
            return _batched(model, theta, batch, loss, solver_kw, need_z0)
        except (InputValidationError, TypeError) as e:   # the batched path does not take these settings
            _BATCH_UNSUPPORTED[_batch_key(model, solver_kw)] = f"{type(e).__name__}: {e}"
    return _looped(model, theta, batch, loss, solver_kw, adjoint, need_z0)


_BATCH_UNSUPPORTED: dict = {}


def _batch_key(model, solver_kw):
    return (id(model), str(solver_kw.get("method")))


def _batched_ok(model, solver_kw):
    return _batch_key(model, solver_kw) not in _BATCH_UNSUPPORTED


def _builtin_loss(model, kind):
    """The built-in losses as one compiled ObservationLoss per model: sum_i (z_i - d_i)^2 or |z_i - d_i| over
    the states (unscaled; a masked entry is NaN data, whose term is skipped)."""
    def build():
        ds = sp.symbols(f"_symode_obs0:{model.n_states}")
        if kind in ("mae", "sae"):
            expr = sum(sp.Abs(z - d) for z, d in zip(model.states, ds))
        else:
            expr = sum((z - d) ** 2 for z, d in zip(model.states, ds))
        return ObservationLoss(expr, list(ds))

    return model._rt.memo("builtin_loss", kind, build)


def _batched(model, theta, batch, loss, solver_kw, need_z0):
    """The whole batch in one compiled parallel call (batched ``value_and_grad``): each member's forward solve,
    loss, cotangent and discrete-adjoint sweep, with its own step-size control."""
    ts = batch.common_ts
    targets = np.where(batch.stacked_masks(), batch.stacked_targets(), np.nan)
    g = model.value_and_grad(_builtin_loss(model, loss), batch.y0s, theta, ts, data=targets, adjoint="discrete",
                             reduce=None if need_z0 else "sum", grad_t=False, **solver_kw)
    s = batch.scale
    value = s * float(np.sum(g.value))
    gth = s * np.asarray(g.theta, dtype=float)
    if need_z0:
        gth = gth.sum(axis=0)
        gz0 = s * np.asarray(g.z0, dtype=float)
    else:
        gz0 = None
    if not (np.all(np.isfinite(gth)) and (gz0 is None or np.all(np.isfinite(gz0)))):
        raise IntegrationError("the gradient is not finite (the batched integration failed)")
    return value, gth, gz0


def _looped(model, theta, batch, loss, solver_kw, adjoint, need_z0):
    B = batch.y0s.shape[0]
    p, n = model.n_params, model.n_states
    gth = np.zeros(p)
    gz0 = np.zeros((B, n))
    total = 0.0
    if isinstance(loss, ObservationLoss):
        for b in range(B):
            g = model.value_and_grad(loss, batch.y0s[b], theta, batch.ts[b], data=batch.targets[b],
                                     adjoint=adjoint, **solver_kw)
            _check_gradient(g)
            total += g.value
            gth += g.theta
            gz0[b] = g.z0
        s = batch.scale
        return s * total, s * gth, s * gz0
    cot = _builtin_cotangent(loss, batch.scale)
    for b in range(B):
        y, mask = batch.targets[b], batch.masks[b]

        def cotangent(sol, y=y, mask=mask):
            value, c = cot(sol.z, y, mask)
            return value, c, None

        g = model.vjp(batch.y0s[b], theta, batch.ts[b], cotangent, adjoint=adjoint, **solver_kw)
        _check_gradient(g)
        total += g.value
        gth += g.theta
        gz0[b] = g.z0
    return total, gth, gz0


def _check_gradient(g):
    if not (np.all(np.isfinite(g.theta)) and np.all(np.isfinite(g.z0))):
        msg = getattr(g.solution, "message", "") if g.solution is not None else ""
        raise IntegrationError(f"the gradient is not finite ({msg or 'integration failed'})")


def _check_solver_settings(model, kw):
    """Refuse bad solver settings when the Trainer is built (not at the first solve, nor only on some paths)."""
    method = kw.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise InputValidationError(f"unknown method {method!r}; valid: {', '.join(map(repr, METHODS))}")
    r = V.tolerance(kw.get("rtol"), model.n_states, "rtol")      # (tolerances() would warn a second time about
    a = V.tolerance(kw.get("atol"), model.n_states, "atol")      # an rtol below 100 eps: the solve does)
    if np.any((r <= 0) & (a <= 0)):
        raise InputValidationError("`rtol` and `atol` cannot both be zero for a state")
    if kw.get("max_steps") is not None:
        V.positive_int(kw["max_steps"], "max_steps")
    for k in ("dt", "dt_max"):
        V.positive_float(kw.get(k), k)
    if kw.get("controller") is not None:
        V.controller(kw["controller"], METHODS[method].beta)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_FOREIGN_REGISTRY: dict = {}


def _in_symode(filename):
    return os.path.abspath(filename).startswith(_PACKAGE_DIR)


class _WarningsToCaller:
    """Gives the warnings raised by symode inside a fit (a StiffnessWarning of a solve, a tolerance warning, ...)
    at the user's line that called :func:`fit` or :meth:`Trainer.run` instead of at symode's own line, so that
    the user's warning filters and the printed location refer to their code. Each objective evaluation runs
    with every warning recorded; the records are given again, after it, with the caller's location (the user's
    filters, "error" included, then apply as for any warning there)."""

    def __init__(self):
        f = sys._getframe(1)
        while f is not None and _in_symode(f.f_code.co_filename):
            f = f.f_back
        self.where = None if f is None else (f.f_code.co_filename, f.f_lineno, f.f_globals)

    def call(self, fn, *args, **kwargs):
        if self.where is None:
            return fn(*args, **kwargs)
        caught = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                return fn(*args, **kwargs)
        finally:
            for w in caught:
                self._give(w)

    def _give(self, w):
        if _in_symode(w.filename):
            filename, lineno, glb = self.where
            warnings.warn_explicit(w.message, w.category, filename, lineno, module=glb.get("__name__"),
                                   registry=glb.setdefault("__warningregistry__", {}), module_globals=glb)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=_FOREIGN_REGISTRY)


# ---------------------------------------------------------------------------------------------- trainer


class Trainer:
    """Fits an :class:`symode.ODE` to trajectories; :func:`fit` is ``Trainer(...).run(...)``.

    Parameters
    ----------
    model : symode.ODE
    data : (ts, Y) or list of (ts, Y)
        See the module docstring: ``ts`` (m,), ``Y`` (m, k), NaN = missing.
    loss : {"mse", "mae", "sse", "sae"} or symode.ObservationLoss
    theta0 : array_like (p,)
        Starting parameters (required when the model has parameters).
    z0 : array_like (n,) or (K, n), optional
        Initial states of the K trajectories (default: their first observation, which must then be
        complete). Ignored with ``batch_time`` (windows start at the observed states).
    train : "theta", "z0" or ("theta", "z0")
        What is optimised; the rest stays fixed.
    optimizer : "adam", "sgd", "lbfgs", "gradient_flow" or a :class:`symode.optim.Optimizer`
        (The names fit takes -- optimizer, loss, train, method, adjoint -- are case-insensitive.)
    lr : float, optional
        Learning rate of Adam/SGD (defaults 1e-2 and 1e-3).
    optimizer_options : dict, optional
        Keyword arguments of the optimizer's constructor (e.g. ``dict(momentum=0.5)``, ``dict(rtol=1e-4)``).
    batch_time : int, optional
        Points per time window (mini-batches of windows, see the module docstring).
    batch_size : int, optional
        Windows per iteration with ``batch_time`` (default 20; all windows = a deterministic objective,
        usable by L-BFGS); without ``batch_time``, trajectories per iteration (default all).
    seed : int
        Seed of the batch sampler (``numpy.random.default_rng``), re-seeded at the start of every
        :meth:`run`: the same seed gives the same batches and, the rest being deterministic, the same
        history.
    eval_every : int, optional
        Every ``eval_every`` iterations (and at the first and last), compute the loss on the full data
        (all trajectories from their initial states); it becomes the monitored loss for the best
        point, ``patience`` and ``tol``. Recommended with mini-batches, whose losses are noisy.
    method, rtol, atol : solver settings passed to ``model.vjp`` (dopri5, 1e-6, 1e-9)
    adjoint : str
        Gradient method of ``model.vjp`` ("discrete", the default, is the exact gradient of the computed
        solution).
    solver_options : dict, optional
        Further solver keywords (``max_steps``, ``dt``, ``dt_max``, ``controller``).
    threads : int or None
        Numba threads for the batched solves and gradients during :meth:`run` (default 1; None = Numba's
        current setting). The members of a training batch are small (tens of microseconds each), so a
        parallel region gains little, and on a machine whose cores are busy with other work its threads
        wait for each other: measured on 2 loaded cores, 2 threads made a P2 iteration 1.5-5x *slower*.
        Raise it for large batches of expensive members on an otherwise idle machine.
    """

    def __init__(self, model, data, *, loss="mse", theta0=None, z0=None, train="theta", optimizer="adam",
                 lr=None, optimizer_options=None, batch_time=None, batch_size=None, seed=0, eval_every=None,
                 method="dopri5", rtol=1e-6, atol=1e-9, adjoint="discrete", solver_options=None, threads=1):
        self.model = model
        self.threads = None if threads is None else V.positive_int(threads, "threads")
        n, p = model.n_states, model.n_params
        # ---- loss and data
        if isinstance(loss, ObservationLoss):
            # a data symbol that is also a state, parameter or time would silently replace it in the loss
            V.observation_symbols(model.states, model.params, loss.data_symbols, model.t)
            V.loss_symbols(model.states, model.params, model.t, loss.expr, loss.data_symbols)
            self.loss = loss
            k = len(loss.data_symbols)
            what = "one per data symbol of the ObservationLoss"
        elif isinstance(loss, str) and loss.lower() in LOSSES:
            self.loss = loss.lower()
            k = n
            what = "one per state"
        elif isinstance(loss, sp.Basic):
            raise InputValidationError("a SymPy loss expression must be wrapped: symode.ObservationLoss(expr, "
                                       "data_symbols)")
        else:
            raise InputValidationError(f"unknown loss {loss!r}; valid: {', '.join(map(repr, LOSSES))} or a "
                                       "symode.ObservationLoss")
        self.trajectories = _trajectories(data, k, what)
        K = len(self.trajectories)
        # ---- what is trained
        tr = (train,) if isinstance(train, str) else tuple(train)
        tr = tuple(t.lower() if isinstance(t, str) else t for t in tr)   # names are case-insensitive, like loss
        bad = [t for t in tr if t not in ("theta", "z0")]
        if bad or not tr:
            raise InputValidationError(f"`train` must be 'theta', 'z0' or ('theta', 'z0'); got {train!r}")
        self.train_theta = "theta" in tr
        self.train_z0 = "z0" in tr
        # ---- parameters and initial states
        if theta0 is None:
            if p:
                raise InputValidationError(f"`theta0` (the {p} starting parameter values) is required")
            theta0 = np.zeros(0)
        self.theta0 = V.real_array(theta0, "theta0").ravel()
        if self.theta0.size != p:
            raise InputValidationError(f"`theta0` has {self.theta0.size} entries; the model has {p} parameters")
        if not np.all(np.isfinite(self.theta0)):
            raise InputValidationError("`theta0` is not finite")
        self.batch_time = None if batch_time is None else V.positive_int(batch_time, "batch_time")
        if self.batch_time is not None:
            if self.batch_time < 2:
                raise InputValidationError("`batch_time` must be at least 2 points")
            if self.train_z0:
                raise InputValidationError("with `batch_time` every window starts at an observed state, so z0 "
                                           "cannot be trained; use train='theta'")
            if isinstance(self.loss, ObservationLoss):
                raise InputValidationError("`batch_time` windows start at observed *states*; use a built-in loss "
                                           "(mse, mae, sse, sae) whose data are the states")
        if z0 is None:
            if isinstance(self.loss, ObservationLoss):
                raise InputValidationError("`z0` is required with an ObservationLoss (the data need not observe "
                                           "the states)")
            z0s = np.empty((K, n))
            for j, tj in enumerate(self.trajectories):
                if np.all(tj.mask[0]):
                    z0s[j] = tj.Y[0]
                elif self.batch_time is not None:
                    z0s[j] = np.nan          # windows do not need it; evaluate() and predict() would
                else:
                    raise InputValidationError(f"trajectory {j}: the first observation is incomplete; give `z0`")
        else:
            z0s = V.real_array(z0, "z0")
            if not np.all(np.isfinite(z0s)):
                raise InputValidationError("`z0` is not finite")
            if z0s.ndim == 1:
                z0s = np.broadcast_to(z0s, (K, z0s.size)).copy() if K > 1 and z0s.size == n else z0s.reshape(1, -1)
            if z0s.shape != (K, n):
                raise InputValidationError(f"`z0` has shape {np.shape(z0)}; expected ({n},) or ({K}, {n})")
        self.z0s = z0s
        # ---- batches
        if batch_size is not None:
            batch_size = V.positive_int(batch_size, "batch_size")
        self.batch_size = batch_size
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        if self.batch_time is not None:
            starts = []
            for j, tj in enumerate(self.trajectories):
                if tj.ts.size < self.batch_time:
                    continue
                ok = np.all(tj.mask[: tj.ts.size - self.batch_time], axis=1)
                starts.extend((j, s) for s in np.flatnonzero(ok))
            if not starts:
                raise InputValidationError("no window fits: every trajectory is shorter than `batch_time` or has no "
                                           "complete observation to start from")
            self._starts = np.array(starts, dtype=np.int64)
            if self.batch_size is None:
                self.batch_size = min(20, len(starts))
            if self.batch_size > len(starts):
                raise InputValidationError(f"`batch_size` {self.batch_size} exceeds the {len(starts)} possible windows")
            # every window in every batch = a fixed objective (multiple shooting without continuity terms)
            self.stochastic = self.batch_size < len(starts)
            self._common = self._common_window_grid()
            self._full_batch = None if self.stochastic else self._window_batch(self._starts)
        else:
            if self.batch_size is not None and self.batch_size > K:
                raise InputValidationError(f"`batch_size` {self.batch_size} exceeds the {K} trajectories")
            self.stochastic = self.batch_size is not None and self.batch_size < K
            self._full_batch = None if self.stochastic else self._trajectory_batch(np.arange(K), self.z0s)
        # ---- optimizer
        opts = dict(optimizer_options or {})
        if lr is not None:
            opts["lr"] = lr
        self.optimizer = _optim.get(optimizer, **opts)
        if self.stochastic and not self.optimizer.stochastic_ok:
            raise InputValidationError(f"optimizer {self.optimizer.name!r} needs a deterministic loss; mini-batches "
                                       "(batch_time, or batch_size < number of trajectories) change it every "
                                       "iteration. Use 'adam' or 'sgd', or train on the full data.")
        if isinstance(self.optimizer, _optim.LBFGS) and self.optimizer.bounds is not None:
            _optim._check_bounds(self.optimizer.bounds, self.pack(self.theta0, self.z0s).size)
        self.eval_every = None if eval_every is None else V.positive_int(eval_every, "eval_every")
        # ---- solver settings
        so = dict(solver_options or {})
        bad = [k for k in so if k not in _SOLVER_KEYS]
        if bad:
            raise InputValidationError(f"unknown solver option(s) {bad}; valid: {', '.join(_SOLVER_KEYS)}")
        if isinstance(method, str):
            method = method.lower()
        _check_solver_settings(model, dict(so, method=method, rtol=rtol, atol=atol))
        self.solver_kw = dict(so, method=method, rtol=rtol, atol=atol)
        self.adjoint = adjoint.lower() if isinstance(adjoint, str) else adjoint
        self.nfev = 0

    # ------------------------------------------------------------------ batches
    def _common_window_grid(self):
        """The shared shifted grid of all windows when the model is autonomous and the grids agree."""
        if self.model.t is not None:
            return None
        bt = self.batch_time
        ref = None
        for tj in self.trajectories:
            m = tj.ts.size
            if m < bt:
                continue
            W = np.lib.stride_tricks.sliding_window_view(tj.ts, bt)
            shifted = W - W[:, :1]
            if ref is None:
                ref = tj.ts[:bt] - tj.ts[0]
            scale = max(abs(ref[-1]), 1e-300)
            if np.max(np.abs(shifted - ref)) > 1e-12 * scale:
                return None
        return ref

    def _window_batch(self, picks):
        bt = self.batch_time
        B = len(picks)
        if len(self.trajectories) == 1 and self._common is not None:      # the common case, vectorised
            tj = self.trajectories[0]
            rows = picks[:, 1][:, None] + np.arange(bt)
            return self._finish_batch(_Batch(tj.Y[picks[:, 1]], [self._common] * B, tj.Y[rows], tj.mask[rows],
                                             np.zeros(B, dtype=np.int64), common_ts=self._common))
        n = self.model.n_states
        y0s = np.empty((B, n))
        ts, targets, masks = [], [], []
        for i, (j, s) in enumerate(picks):
            tj = self.trajectories[j]
            y0s[i] = tj.Y[s]
            targets.append(tj.Y[s:s + bt])
            masks.append(tj.mask[s:s + bt])
            ts.append(self._common if self._common is not None else tj.ts[s:s + bt])
        return self._finish_batch(_Batch(y0s, ts, targets, masks, np.array([j for j, _ in picks]),
                                         common_ts=self._common))

    def _trajectory_batch(self, idx, z0s):
        tr = [self.trajectories[j] for j in idx]
        common = tr[0].ts if all(t.ts.size == tr[0].ts.size and np.array_equal(t.ts, tr[0].ts) for t in tr) else None
        return self._finish_batch(_Batch(np.array(z0s[idx], dtype=float), [t.ts for t in tr], [t.Y for t in tr],
                                         [t.mask for t in tr], np.asarray(idx), common_ts=common))

    def _finish_batch(self, batch):
        B = batch.y0s.shape[0]
        if isinstance(self.loss, ObservationLoss):
            batch.scale = 1.0 / B
        elif self.loss in ("mse", "mae"):
            M = batch.masks
            N = int(M.sum()) if isinstance(M, np.ndarray) else sum(int(mk.sum()) for mk in M)
            batch.scale = 1.0 / max(N, 1)
        else:
            batch.scale = 1.0
        return batch

    def sample_batch(self):
        """The next batch (draws from the seeded generator when mini-batching)."""
        if not self.stochastic:
            return self._full_batch
        if self.batch_time is not None:
            sel = np.sort(self.rng.choice(len(self._starts), self.batch_size, replace=False))
            return self._window_batch(self._starts[sel])
        idx = np.sort(self.rng.choice(len(self.trajectories), self.batch_size, replace=False))
        return self._trajectory_batch(idx, self.z0s)

    # ------------------------------------------------------------------ packing
    def pack(self, theta, z0s):
        parts = []
        if self.train_theta:
            parts.append(np.asarray(theta, dtype=float).ravel())
        if self.train_z0:
            parts.append(np.asarray(z0s, dtype=float).ravel())
        return np.concatenate(parts) if parts else np.zeros(0)

    def unpack(self, x):
        p = self.model.n_params
        k = 0
        theta = self.theta0
        z0s = self.z0s
        if self.train_theta:
            theta = x[:p]
            k = p
        if self.train_z0:
            z0s = x[k:].reshape(self.z0s.shape)
        return theta, z0s

    def _z0_out(self, z0s):
        if z0s is None:
            return None
        return z0s[0].copy() if z0s.shape[0] == 1 else z0s.copy()

    # ------------------------------------------------------------------ objective
    def value_and_grad(self, x, batch=None):
        """Loss and gradient w.r.t. the optimised vector ``x`` (see :meth:`pack`) on ``batch`` (default:
        the next batch from :meth:`sample_batch`)."""
        theta, z0s = self.unpack(np.asarray(x, dtype=float))
        if batch is None:
            batch = self.sample_batch()
        if self.train_z0:
            batch.y0s = np.array(z0s[batch.traj], dtype=float)
        value, gth, gz0 = batch_value_and_grad(self.model, theta, batch, self.loss, self.solver_kw, self.adjoint,
                                               need_z0=self.train_z0)
        self.nfev += 1
        parts = []
        if self.train_theta:
            parts.append(gth)
        if self.train_z0:
            gz = np.zeros_like(z0s)
            np.add.at(gz, batch.traj, gz0)
            parts.append(gz.ravel())
        return float(value), (np.concatenate(parts) if parts else np.zeros(0))

    def evaluate(self, theta=None, z0=None):
        """The loss on the full data: every trajectory solved from its initial state (forward only)."""
        theta = self.theta0 if theta is None else np.asarray(theta, dtype=float)
        z0s = self.z0s if z0 is None else np.asarray(z0, dtype=float).reshape(self.z0s.shape)
        if not np.all(np.isfinite(z0s)):
            raise InputValidationError("a trajectory's first observation is incomplete: give `z0` to evaluate the "
                                       "loss on full trajectories")
        batch = self._trajectory_batch(np.arange(len(self.trajectories)), z0s)
        kw = {k: v for k, v in self.solver_kw.items()}
        total = 0.0
        for b in range(batch.y0s.shape[0]):
            if isinstance(self.loss, ObservationLoss):
                g = self.model.value_and_grad(self.loss, batch.y0s[b], theta, batch.ts[b], data=batch.targets[b],
                                              adjoint=self.adjoint, **kw)
                total += g.value
            else:
                sol = self.model.solve(batch.y0s[b], theta, batch.ts[b], **kw)
                total += _builtin_cotangent(self.loss, 1.0)(sol.z, batch.targets[b], batch.masks[b])[0]
        return float(batch.scale * total)

    def predict(self, ts, theta=None, z0=None, trajectory=0, **solver_kw):
        """Solve the model from trajectory ``trajectory``'s initial state (or ``z0``) over ``ts``."""
        theta = self.theta0 if theta is None else theta
        if z0 is None:
            z0 = self.z0s[trajectory]
        kw = dict(self.solver_kw)
        kw.update(solver_kw)
        return self.model.solve(z0, theta, ts, **kw)

    # ------------------------------------------------------------------ the loop
    def run(self, iterations=1000, *, callback=None, patience=None, min_delta=0.0, tol=None, gtol=None,
            max_time=None, progress=True, print_every=None, desc=None):
        """Optimise for at most ``iterations`` iterations; returns a :class:`FitResult`.

        Parameters
        ----------
        iterations : int
            Iteration limit (Adam/SGD: updates; L-BFGS: SciPy iterations; gradient flow: accepted steps).
        callback : callable(TrainState) -> bool, or a list of them
            Called every iteration (iteration 0 = the starting point); returning True stops the run.
        patience : int, optional
            Stop when the monitored loss has not improved on its best by more than ``min_delta`` (relative)
            for this many consecutive monitored values (iterations, or evaluations with ``eval_every``).
        tol : float, optional
            Stop when the monitored loss falls to ``tol`` or below.
        gtol : float, optional
            Stop when the gradient's max-norm falls to ``gtol`` or below.
        max_time : float, optional
            Stop after this many seconds.
        progress : bool
            Show a tqdm progress bar with the loss (if tqdm is installed; else periodic prints). False: silent.
        print_every : int, optional
            Period of the fallback prints (default: about 20 lines per run).
        desc : str, optional
            Label of the progress bar / prints (default "fit").

        Notes
        -----
        Ctrl-C (KeyboardInterrupt, also when raised by a callback) stops the run cleanly: the result holds
        the best parameters so far and ``stop_reason == "interrupted"``.
        """
        iterations = V.nonnegative_int(iterations, "iterations")
        patience = None if patience is None else V.positive_int(patience, "patience")
        min_delta = V.nonnegative_float(min_delta, "min_delta", allow_none=False)
        tol = V.nonnegative_float(tol, "tol")
        gtol = V.nonnegative_float(gtol, "gtol")
        max_time = V.positive_float(max_time, "max_time")
        print_every = None if print_every is None else V.positive_int(print_every, "print_every")
        callbacks = [] if callback is None else (list(callback) if isinstance(callback, (list, tuple)) else [callback])
        mon = _Monitor(self, iterations, callbacks, patience, min_delta, tol, gtol, max_time, progress,
                       print_every, desc)
        x0 = self.pack(self.theta0, self.z0s)
        rerouted = mon.warnings
        self.nfev = 0
        self.rng = np.random.default_rng(self.seed)       # every run draws the same batches: reproducible
        message = ""
        old_threads = None
        if self.threads is not None:
            import numba

            old_threads = numba.get_num_threads()
            numba.set_num_threads(max(1, min(self.threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            message = self.optimizer.run(lambda x: rerouted.call(self.value_and_grad, x), x0, mon) or ""
            if mon.stop_reason is None:
                mon.stop_reason = "optimizer"
        except (KeyboardInterrupt, SystemError) as e:
            if not _caused_by_interrupt(e):   # Ctrl-C surfacing as Numba's SystemError (see _numeric/interrupt.py)
                raise
            mon.stop_reason = "interrupted"
            message = "interrupted (KeyboardInterrupt): returning the best parameters so far"
        except IntegrationError as e:
            if mon.best_x is None:
                raise
            mon.stop_reason = "integration_failed"
            message = (f"stopped at iteration {mon.iteration + 1}: the model could not be integrated at the next "
                       f"iterate ({e}); returning the best parameters so far. A smaller learning rate or a "
                       "stiff method may help.")
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        finally:
            mon.close()
            if old_threads is not None:
                import numba

                numba.set_num_threads(old_threads)
        if mon.best_x is None:          # interrupted before the first evaluation
            mon.best_x = x0
            mon.last_x = x0
        # the last iterate's full-data loss, when monitoring evaluations
        if self.eval_every and mon.last_x is not None and mon.stop_reason != "interrupted" \
                and (not mon.eval_it or mon.eval_it[-1] != mon.iteration):
            try:
                value = mon.record_eval(mon.last_x, mon.iteration)
                if math.isfinite(value):
                    mon._improved(value, mon.last_x, mon.iteration)
            except (KeyboardInterrupt, SystemError) as e:
                if not _caused_by_interrupt(e):
                    raise
        if message in ("", "stopped by the monitor"):
            message = _stop_message(mon.stop_reason, iterations=iterations, tol=tol, gtol=gtol, patience=patience,
                                    max_time=max_time)
        theta_b, z0_b = self.unpack(mon.best_x)
        theta_l, z0_l = self.unpack(mon.last_x)
        hist = {"loss": np.array(mon.losses), "time": np.array(mon.times), "grad_norm": np.array(mon.gnorms),
                "eval_iteration": np.array(mon.eval_it, dtype=np.int64), "eval_loss": np.array(mon.eval_loss)}
        if isinstance(self.optimizer, _optim.GradientFlow):
            hist["flow_time"] = np.array(mon.flow_times)
        return FitResult(theta=np.array(theta_b, dtype=float).copy(), z0=self._z0_out(np.asarray(z0_b)),
                         loss=float(mon.best_loss), theta_last=np.array(theta_l, dtype=float).copy(),
                         z0_last=self._z0_out(np.asarray(z0_l)), history=hist, iterations=max(mon.iteration, 0),
                         nfev=self.nfev, best_iteration=mon.best_iteration, stop_reason=mon.stop_reason,
                         message=message or mon.stop_reason, elapsed=time.perf_counter() - mon.t0,
                         optimizer=self.optimizer)


_STOP_MESSAGES = {
    "max_iterations": "stopped at the iteration limit ({iterations} iterations)",
    "tol": "the monitored loss fell to tol = {tol:g}",
    "gtol": "the gradient's max-norm fell to gtol = {gtol:g}",
    "patience": "no improvement for {patience} monitored values (patience)",
    "max_time": "stopped after max_time = {max_time:g} s",
    "callback": "a callback asked to stop",
    "nonfinite": "the loss became NaN or infinite",
    "optimizer": "the optimizer finished",
}


def _stop_message(reason, **values):
    try:
        return _STOP_MESSAGES[reason].format(**values)
    except (KeyError, TypeError, ValueError):
        return str(reason)


class _Monitor:
    """Bookkeeping of one run: history, best point, progress display, callbacks and stopping rules."""

    def __init__(self, trainer, iterations, callbacks, patience, min_delta, tol, gtol, max_time, progress,
                 print_every, desc):
        self.tr = trainer
        self.max_it = iterations
        self.callbacks = callbacks
        self.patience = patience
        self.min_delta = min_delta
        self.tol = tol
        self.gtol = gtol
        self.max_time = max_time
        self.iteration = -1
        self.losses, self.times, self.gnorms, self.flow_times = [], [], [], []
        self.eval_it, self.eval_loss = [], []
        self.best_loss = math.inf
        self.best_iteration = -1
        self.best_x = None
        self.last_x = None
        self.stale = 0
        self.stop_reason = None
        self.bar = None
        self.print_every = None
        if progress:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=iterations, desc=desc or "fit", unit="it", dynamic_ncols=True, file=sys.stderr,
                                mininterval=0.2)
            else:
                self.print_every = print_every or max(1, iterations // 20)
        self.desc = desc or "fit"
        self.warnings = _WarningsToCaller()     # symode's warnings given at the caller's line
        self.t0 = time.perf_counter()

    def close(self):
        if self.bar is not None:
            if self.bar.n < self.bar.total and self.stop_reason not in (None, "interrupted"):
                self.bar.total = self.bar.n        # stopped early (converged, patience, ...): end at 100%
                self.bar.refresh()
            self.bar.close()
            self.bar = None

    def record_eval(self, x, it):
        theta, z0s = self.tr.unpack(x)
        value = self.warnings.call(self.tr.evaluate, theta, z0s)
        self.eval_it.append(it)
        self.eval_loss.append(value)
        return value

    def _improved(self, value, x, it):
        if value < self.best_loss * (1.0 - self.min_delta) or self.best_x is None:
            self.stale = 0
        else:
            self.stale += 1
        if value < self.best_loss or self.best_x is None:
            self.best_loss = value
            self.best_iteration = it
            self.best_x = np.array(x, dtype=float)

    def __call__(self, x, value, grad):
        self.iteration += 1
        it = self.iteration
        value = float(value)
        self.last_x = np.array(x, dtype=float)
        elapsed = time.perf_counter() - self.t0
        gnorm = float(np.max(np.abs(grad))) if np.size(grad) else 0.0
        self.losses.append(value)
        self.times.append(elapsed)
        self.gnorms.append(gnorm)
        opt = self.tr.optimizer
        if isinstance(opt, _optim.GradientFlow):
            self.flow_times.append(opt.t)
        ev = None
        ee = self.tr.eval_every
        if ee and (it % ee == 0):
            ev = self.record_eval(x, it)
        monitored = ev if ee else value
        if monitored is not None and math.isfinite(monitored):
            self._improved(monitored, x, it)
        elif monitored is not None and self.best_x is None:
            self.best_x = np.array(x, dtype=float)
            self.best_iteration = it
        # display
        if self.bar is not None:
            post = f"loss={value:.4g}" + (f" eval={ev:.4g}" if ev is not None else "")
            self.bar.set_postfix_str(post, refresh=False)
            if it > 0:
                self.bar.update(1)
        elif self.print_every and (it % self.print_every == 0 or it == self.max_it):
            extra = f"  eval {ev:.6g}" if ev is not None else ""
            print(f"{self.desc}: iteration {it}/{self.max_it}  loss {value:.6g}{extra}  best {self.best_loss:.6g}  "
                  f"{elapsed:.1f} s", flush=True)
        # callbacks (KeyboardInterrupt raised here propagates to run())
        if self.callbacks:
            theta, z0s = self.tr.unpack(self.last_x)
            state = TrainState(iteration=it, loss=value, theta=theta, z0=self.tr._z0_out(np.asarray(z0s)),
                               grad=np.asarray(grad), elapsed=elapsed, best_loss=self.best_loss,
                               best_iteration=self.best_iteration, eval_loss=ev,
                               history={"loss": self.losses, "time": self.times, "eval_iteration": self.eval_it,
                                        "eval_loss": self.eval_loss})
            for cb in self.callbacks:
                if cb(state):
                    self.stop_reason = "callback"
                    return True
        # stopping rules
        if not math.isfinite(value):
            self.stop_reason = "nonfinite"
            return True
        if self.tol is not None and monitored is not None and monitored <= self.tol:
            self.stop_reason = "tol"
            return True
        if self.gtol is not None and gnorm <= self.gtol:
            self.stop_reason = "gtol"
            return True
        if self.patience is not None and self.stale >= self.patience:
            self.stop_reason = "patience"
            return True
        if it >= self.max_it:
            self.stop_reason = "max_iterations"
            return True
        if self.max_time is not None and elapsed >= self.max_time:
            self.stop_reason = "max_time"
            return True
        return False


def fit(model, data, *, iterations=1000, loss="mse", theta0=None, z0=None, train="theta", optimizer="adam",
        lr=None, optimizer_options=None, batch_time=None, batch_size=None, seed=0, eval_every=None,
        callback=None, patience=None, min_delta=0.0, tol=None, gtol=None, max_time=None, progress=True,
        print_every=None, desc=None, method="dopri5", rtol=1e-6, atol=1e-9, adjoint="discrete",
        solver_options=None, threads=1):
    """Fit ``model`` to ``data``; returns a :class:`FitResult` (best parameters, history, stop reason).

    ``fit(model, data, **kw)`` is ``Trainer(model, data, **setup).run(iterations, **loop)``: see
    :class:`Trainer` for the set-up arguments (data, loss, theta0, z0, train, optimizer, lr,
    optimizer_options, batch_time, batch_size, seed, eval_every, method, rtol, atol, adjoint,
    solver_options, threads) and :meth:`Trainer.run` for the loop's (iterations, callback, patience, min_delta, tol,
    gtol, max_time, progress, print_every, desc).

    Examples
    --------
    Recover Lotka-Volterra parameters from one observed trajectory with L-BFGS::

        import numpy as np, sympy as sp, symode
        x, y = sp.symbols("x y"); a, b, c, d = sp.symbols("alpha beta gamma delta")
        lv = symode.ODE([a*x - b*x*y, d*x*y - c*y], [x, y], [a, b, c, d])
        ts = np.linspace(0, 10, 101); Y = lv.solve([1, 1], [1.5, 1, 3, 1], ts).z
        res = symode.fit(lv, (ts, Y), theta0=[1.2, 0.8, 2.5, 0.8], optimizer="lbfgs", iterations=200)
        res.theta            # [1.5, 1, 3, 1] to ~1e-9 (noise-free data)

    The P2 neural ODE (mini-batches of 20 windows of 10 points, mean absolute error, Adam)::

        res = symode.fit(model, (ts, Y), loss="mae", theta0=net.init(seed=0), batch_time=10, batch_size=20,
                         optimizer="adam", lr=1e-3, iterations=2000, rtol=1e-7, atol=1e-9, eval_every=50)
    """
    tr = Trainer(model, data, loss=loss, theta0=theta0, z0=z0, train=train, optimizer=optimizer, lr=lr,
                 optimizer_options=optimizer_options, batch_time=batch_time, batch_size=batch_size, seed=seed,
                 eval_every=eval_every, method=method, rtol=rtol, atol=atol, adjoint=adjoint,
                 solver_options=solver_options, threads=threads)
    return tr.run(iterations, callback=callback, patience=patience, min_delta=min_delta, tol=tol, gtol=gtol,
                  max_time=max_time, progress=progress, print_every=print_every, desc=desc)
