"""Optimizers for :func:`symode.fit`: Adam, SGD with momentum, L-BFGS (SciPy) and gradient flow.

Every optimizer minimises a function ``fun(x) -> (value, gradient)`` of a flat float64 vector ``x`` and
reports each iteration to a ``monitor``: ``monitor(x, value, gradient) -> bool`` (True = stop). The monitor is
where :class:`symode.Trainer` keeps the history, the best point, the progress bar, callbacks and early
stopping, so the optimizers stay small and only say how to move.

=================  ================================================================================
``Adam``           Kingma & Ba (2015), bias-corrected moments; for mini-batched (stochastic) losses.
``SGD``            gradient descent with (optionally Nesterov) momentum.
``LBFGS``          ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)`` fed the exact gradients;
                   deterministic losses only (full batch), usually the fastest for a few parameters.
``GradientFlow``   integrates the gradient flow d theta/dt = -grad L(theta) with an adaptive embedded
                   Runge-Kutta pair (Bogacki-Shampine 3(2) or Dormand-Prince 5(4)); see its docstring.
=================  ================================================================================

They are also usable on their own:

>>> import numpy as np
>>> from symode.optim import Adam
>>> fun = lambda x: (float(x @ x), 2 * x)
>>> res = Adam(lr=0.1).minimize(fun, np.ones(3), max_iter=300)
>>> bool(res.value < 1e-6)
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import _validate as V
from ._errors import InputValidationError, IntegrationError
from ._numeric import tableau as _tableau

__all__ = ["Optimizer", "Adam", "SGD", "LBFGS", "GradientFlow", "OptimizeResult", "get", "OPTIMIZERS"]


class StopOptimization(Exception):
    """Raised inside an optimizer's loop when its monitor asks it to stop (caught by ``run``)."""


@dataclass
class OptimizeResult:
    """Result of :meth:`Optimizer.minimize` used standalone: last ``x``, its ``value``, ``iterations`` and
    the loss ``history`` (one value per iteration)."""

    x: np.ndarray
    value: float
    iterations: int
    history: list = field(default_factory=list)
    message: str = ""


class Optimizer:
    """Base class. Subclasses implement :meth:`run`.

    ``stochastic_ok`` says whether the optimizer tolerates a loss that changes between calls (mini-batches).
    """

    name = "optimizer"
    stochastic_ok = True

    def run(self, fun, x0, monitor):
        """Minimise ``fun`` from ``x0``, calling ``monitor(x, value, grad)`` once per iteration until it
        returns True (the monitor also enforces the iteration limit). Returns a short message."""
        raise NotImplementedError

    def minimize(self, fun, x0, max_iter=100):
        """Standalone use: run for at most ``max_iter`` iterations; returns an :class:`OptimizeResult`."""
        hist = []
        last = {}

        def monitor(x, value, grad):
            hist.append(float(value))
            last.update(x=np.array(x, dtype=float), value=float(value))
            return len(hist) >= max_iter

        x0 = np.array(x0, dtype=np.float64)
        msg = self.run(fun, x0, monitor)
        return OptimizeResult(x=last.get("x", x0), value=last.get("value", math.nan), iterations=len(hist),
                              history=hist, message=msg or "")

    def __repr__(self):
        keys = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({keys})"


def _learning_rate(lr, name="lr"):
    """A positive float, or a schedule: callable(iteration) -> float (iteration 0, 1, 2, ...)."""
    if callable(lr):
        return lr
    return _positive(lr, name)


def _lr_at(lr, k):
    v = float(lr(k)) if callable(lr) else lr
    if not (v > 0 and math.isfinite(v)):
        raise InputValidationError(f"the learning-rate schedule returned {v!r} at iteration {k}")
    return v


def _positive(value, name, allow_zero=False):
    v = V.real_number(value, name)         # strings, bools and complex numbers refused
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InputValidationError(f"`{name}` must be a {'non-negative' if allow_zero else 'positive'} number, "
                                   f"got {value!r}")
    return v


class Adam(Optimizer):
    """Adam: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, x -= lr m_hat / (sqrt(v_hat) + eps).

    Parameters
    ----------
    lr : float or callable(iteration) -> float
        Step size (default 1e-2), or a schedule such as ``lambda k: 1e-2 * 0.999 ** k``.
    betas : (float, float)
        Decay rates of the first and second moments (0.9, 0.999).
    eps : float
        Added to sqrt(v_hat) (1e-8).
    weight_decay : float
        L2 penalty coefficient added to the gradient (0).
    """

    name = "adam"

    def __init__(self, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr = _learning_rate(lr)
        try:
            b1, b2 = (V.real_number(b, "betas") for b in betas)
        except (TypeError, ValueError):
            raise InputValidationError(f"`betas` must be a pair of numbers in [0, 1), got {betas!r}") from None
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise InputValidationError(f"`betas` must lie in [0, 1), got {betas!r}")
        self.betas = (b1, b2)
        self.eps = _positive(eps, "eps")
        self.weight_decay = _positive(weight_decay, "weight_decay", allow_zero=True)

    def run(self, fun, x0, monitor):
        m = np.zeros(np.shape(x0))
        v = np.zeros(np.shape(x0))
        b1, b2 = self.betas

        def step(x, g, k):
            m[:] = b1 * m + (1.0 - b1) * g
            v[:] = b2 * v + (1.0 - b2) * (g * g)
            size = _lr_at(self.lr, k) * math.sqrt(1.0 - b2 ** (k + 1)) / (1.0 - b1 ** (k + 1))
            return x - size * m / (np.sqrt(v) + self.eps)

        return _descend(fun, x0, monitor, self.weight_decay, step)


def _descend(fun, x0, monitor, weight_decay, step):
    """The loop of the first-order optimizers: evaluate, let the monitor stop the run, add the weight decay, take
    ``step(x, g, k)`` (k = 0, 1, ...)."""
    x = np.array(x0, dtype=np.float64)
    k = 0
    while True:
        value, g = fun(x)
        if monitor(x, value, g):
            return "stopped by the monitor"
        if weight_decay:
            g = g + weight_decay * x
        x = step(x, g, k)
        k += 1


class SGD(Optimizer):
    """Gradient descent with momentum: u = mu u + g, x -= lr u (Nesterov: x -= lr (g + mu u)).

    Parameters
    ----------
    lr : float or callable(iteration) -> float
        Step size (default 1e-3), or a schedule.
    momentum : float
        mu in [0, 1) (default 0.9; 0 = plain gradient descent).
    nesterov : bool
    weight_decay : float
    """

    name = "sgd"

    def __init__(self, lr=1e-3, momentum=0.9, nesterov=False, weight_decay=0.0):
        self.lr = _learning_rate(lr)
        self.momentum = V.real_number(momentum, "momentum")
        if not 0 <= self.momentum < 1:
            raise InputValidationError(f"`momentum` must lie in [0, 1), got {momentum!r}")
        self.nesterov = bool(nesterov)
        self.weight_decay = _positive(weight_decay, "weight_decay", allow_zero=True)

    def run(self, fun, x0, monitor):
        u = np.zeros(np.shape(x0))
        mu = self.momentum

        def step(x, g, k):
            u[:] = mu * u + g
            return x - _lr_at(self.lr, k) * ((g + mu * u) if self.nesterov else u)

        return _descend(fun, x0, monitor, self.weight_decay, step)


class LBFGS(Optimizer):
    """L-BFGS-B from SciPy, fed the exact value and gradient (``jac=True``).

    Each SciPy iteration is one monitor report (a line search may evaluate the loss several times; the
    evaluation count is in the trainer's ``nfev``). Needs a deterministic loss: use it on full
    trajectories, not on randomly drawn mini-batches.

    A line-search trial point at which the model cannot be integrated (``IntegrationError``) or the loss is not
    finite is reported to SciPy as a finite value above the current iterate's, with a gradient pointing back to
    it, so the line search shortens the step; if SciPy stops in a line search that still met such points, the
    run raises ``IntegrationError`` (:func:`symode.fit`: ``stop_reason="integration_failed"``) instead of
    reporting SciPy's "convergence" at the iterate.

    Parameters
    ----------
    bounds : sequence of (low, high) or None
        Box constraints per component of the optimised vector (None entries = unbounded).
    maxcor : int
        Number of stored correction pairs (10).
    ftol, gtol : float
        SciPy's stopping tolerances (relative reduction of f; max |projected gradient|).
    """

    name = "lbfgs"
    stochastic_ok = False

    def __init__(self, bounds=None, maxcor=10, ftol=1e-15, gtol=1e-10, maxls=40):
        self.bounds = bounds
        self.maxcor = V.positive_int(maxcor, "maxcor")
        self.ftol = _positive(ftol, "ftol", allow_zero=True)
        self.gtol = _positive(gtol, "gtol", allow_zero=True)
        self.maxls = V.positive_int(maxls, "maxls")

    def run(self, fun, x0, monitor):
        try:
            from scipy.optimize import minimize
        except ImportError:  # pragma: no cover - scipy is a declared extra
            raise InputValidationError("optimizer 'lbfgs' needs SciPy: pip install 'symode[train]'") from None
        x0 = np.array(x0, dtype=np.float64)
        bounds = _check_bounds(self.bounds, x0.size)
        cache = {}
        # the current iterate (SciPy's line searches start there) and whether a trial point of the current
        # line search could not be integrated
        base = {"x": x0, "value": math.nan, "failed": 0, "last_error": None}

        def f(x):
            if "x" in cache and np.array_equal(cache["x"], x):        # e.g. SciPy's first call, at x0
                return cache["out"]
            try:
                value, g = fun(x)
                value = float(value)
                g = np.asarray(g, dtype=float)
                ok = math.isfinite(value) and bool(np.all(np.isfinite(g)))
            except IntegrationError as e:
                value, g, ok = math.nan, np.zeros_like(x), False
                base["last_error"] = e
            cache["x"], cache["value"], cache["grad"] = np.array(x), value, g
            cache["out"] = (value, g) if ok else _backoff(x, base)
            return cache["out"]

        def evaluated(x):
            f(x)
            return cache["value"], cache["grad"]

        # the starting point is iteration 0, as for the other optimizers
        v0, g0 = evaluated(x0)
        if base["last_error"] is not None:        # the model cannot be integrated at the starting point
            raise base["last_error"]
        base["value"] = v0
        if monitor(x0, v0, g0):
            return "stopped by the monitor"

        def cb(xk, *args):
            value, g = evaluated(np.asarray(xk))
            base["x"], base["value"], base["failed"] = np.array(xk, dtype=float), value, 0
            if monitor(np.asarray(xk), value, g):
                raise StopOptimization

        try:
            res = minimize(f, x0, jac=True, method="L-BFGS-B", bounds=bounds, callback=cb,
                           options=dict(maxiter=10 ** 9, maxfun=10 ** 9, maxcor=self.maxcor, ftol=self.ftol,
                                        gtol=self.gtol, maxls=self.maxls))
        except StopOptimization:
            return "stopped by the monitor"
        msg = str(getattr(res, "message", ""))
        if base["failed"]:
            # SciPy stopped in a line search that met points the model could not be integrated at: whatever it
            # says ("convergence" included), the iterate is not a minimiser. Report the failure.
            raise IntegrationError(f"L-BFGS-B stopped ({msg}) after {base['failed']} trial point(s) of its last "
                                   f"line search could not be integrated ({base['last_error']})",
                                   status=getattr(base["last_error"], "status", None))
        # SciPy converged (or its line search gave up) before the monitor stopped; its last iterate was
        # reported by the callback.
        return f"L-BFGS-B: {msg}"


def _check_bounds(bounds, size):
    """``bounds`` for SciPy: None, or one (low, high) pair per component of the optimised vector."""
    if bounds is None:
        return None
    try:
        pairs = [tuple(b) for b in bounds]
    except TypeError:
        raise InputValidationError("`bounds` must be a sequence of (low, high) pairs (None = unbounded)") from None
    if len(pairs) != size:
        raise InputValidationError(f"`bounds` has {len(pairs)} (low, high) pairs; the optimised vector has {size} "
                                   "components (with symode.fit: theta's p values, then with train=('theta', 'z0') "
                                   "the K x n initial states, flattened row by row)")
    for i, pr in enumerate(pairs):
        if len(pr) != 2:
            raise InputValidationError(f"`bounds[{i}]` must be a pair (low, high), got {pr!r}")
        lo, hi = (None if v is None else float(v) for v in pr)
        if lo is not None and hi is not None and lo > hi:
            raise InputValidationError(f"`bounds[{i}]` = {pr!r}: low > high")
    return pairs


def _backoff(x, base):
    """What L-BFGS-B's line search is told at a trial point whose loss could not be computed (the model could
    not be integrated there, or the loss is not finite): a finite value above the current iterate's, with the
    gradient of the quadratic bowl through the iterate and that value, pointing back to the iterate. The
    Moré-Thuente line search then sees a bracketed minimum and shrinks the step; (inf, 0) instead made it
    stop and report convergence at the iterate."""
    base["failed"] += 1
    v = base["value"]
    v = 0.0 if not math.isfinite(v) else v
    rise = max(1.0, abs(v))
    d = np.asarray(x, dtype=float) - base["x"]
    dd = float(d @ d)
    g = (2.0 * rise / dd) * d if dd > 0 else np.zeros_like(d)
    return v + rise, g


# Embedded explicit Runge-Kutta pairs for the gradient flow, from the solvers' tableaus (one source of the
# coefficients): (a, b, b_error = b - b_hat, c, order of the lower solution)
def _pair(t):
    return t.a, t.b, t.b_error, t.c, t.error_order


_PAIRS = {"bosh3": _pair(_tableau.BOSH3), "dopri5": _pair(_tableau.DOPRI5)}


class GradientFlow(Optimizer):
    """Continuous backpropagation: integrate d theta/dt = -eta grad L(theta) with error control.

    Every right-hand-side evaluation of the flow is one loss-and-gradient evaluation (for an ODE fit: one
    forward solve plus one adjoint sweep). The flow is integrated by an embedded Runge-Kutta pair in
    theta-space -- Bogacki-Shampine 3(2) (``method="bosh3"``, default) or Dormand-Prince 5(4)
    (``"dopri5"``), both FSAL, so an accepted step's last stage is the gradient at the new point and the
    loss there comes for free. The local error estimate ``err = ||(theta_high - theta_low) / (atol + rtol
    |theta|)||_rms`` accepts the step when err <= 1 and sets the next step to
    ``h * clip(safety * err**(-1/(q+1) + 0.75 beta) * err_prev**beta, fac_min, fac_max)`` (a PI controller;
    q = the lower order). Along the flow L
    decreases monotonically (dL/dt = -eta |grad L|^2), and the step size grows where the landscape is flat
    and shrinks where it is curved: the error control replaces the learning-rate schedule. A step whose
    loss increases is rejected as well (the flow never goes uphill); a non-finite loss halves the step.

    One *iteration* (one monitor report) = one accepted step. The optimizer stops at flow time ``t_max``
    (if given), or when the monitor says so (iteration limit, tolerances, callbacks).

    When not to use it: with mini-batched (stochastic) losses, where the error estimate is meaningless --
    use Adam; and when only the minimiser matters and the loss is smooth and deterministic, L-BFGS usually
    needs fewer evaluations. Gradient flow is the right tool when the path theta(t) itself matters
    (implicit regularisation, comparison with continuous-time theory) or as a robust, schedule-free
    descent.

    Parameters
    ----------
    rtol, atol : float
        Tolerances of the local error in theta (defaults 1e-4, 1e-7; tighten them to follow theta(t)
        accurately). On ill-conditioned losses the flow is *stiff*: an explicit pair is then held at its
        stability limit h ~ 2.5/lambda_max(Hessian) whatever the tolerance, and loose tolerances only add
        rejected steps (the controller keeps probing the limit).
    eta : float
        Time scale (the "learning rate" of the flow): d theta/dt = -eta grad L.
    method : {"bosh3", "dopri5"}
    h0 : float or None
        Initial step in flow time (default: a standard heuristic from |theta| and |grad L|).
    h_max : float or None
        Largest step (default unbounded).
    t_max : float or None
        Flow time at which to stop.
    safety, fac_min, fac_max : float
        Step-size controller settings (0.9, 0.2, 5).
    beta : float
        PI-controller coefficient (0.08; 0 = the plain I-controller): damps the step-size oscillation at
        the stability limit of stiff flows.
    monotone : bool
        Reject steps that increase the loss (default True).
    """

    name = "gradient_flow"
    stochastic_ok = False

    def __init__(self, rtol=1e-4, atol=1e-7, eta=1.0, method="bosh3", h0=None, h_max=None, t_max=None,
                 safety=0.9, fac_min=0.2, fac_max=5.0, beta=0.08, monotone=True):
        if method not in _PAIRS:
            raise InputValidationError(f"unknown gradient-flow method {method!r}; valid: {', '.join(_PAIRS)}")
        self.rtol = _positive(rtol, "rtol", allow_zero=True)
        self.atol = _positive(atol, "atol", allow_zero=True)
        if self.rtol == 0 and self.atol == 0:
            raise InputValidationError("`rtol` and `atol` cannot both be zero")
        self.eta = _positive(eta, "eta")
        self.method = method
        self.h0 = None if h0 is None else _positive(h0, "h0")
        self.h_max = None if h_max is None else _positive(h_max, "h_max")
        self.t_max = None if t_max is None else _positive(t_max, "t_max")
        # the rules of the solvers' controller: 0 < safety < 1, 0 < fac_min < 1 < fac_max, 0 <= beta <= 0.1
        self.safety, self.fac_min, self.fac_max, self.beta = V.controller(
            dict(safety=safety, fac_min=fac_min, fac_max=fac_max, beta=beta), 0.0, what="GradientFlow")
        self.monotone = bool(monotone)
        # set by run(): flow times of the accepted points and counters
        self.t = 0.0
        self.times = []
        self.n_rejected = 0

    def _initial_step(self, x, fx, scale):
        # Hairer-Norsett-Wanner heuristic (first part): h = 0.01 * ||x|| / ||f(x)|| in the error norm
        d0 = np.sqrt(np.mean((x / scale) ** 2)) if x.size else 0.0
        d1 = np.sqrt(np.mean((fx / scale) ** 2)) if x.size else 0.0
        if d0 < 1e-5 or d1 < 1e-5:
            return 1e-6
        return 0.01 * d0 / d1

    def run(self, fun, x0, monitor):
        a, b, b_err, c, q = _PAIRS[self.method]
        s = b.size
        x = np.array(x0, dtype=np.float64)
        value, g = fun(x)
        self.t = 0.0
        self.times = [0.0]
        self.n_rejected = 0
        if monitor(x, value, g):
            return "stopped by the monitor"
        K = np.empty((s, x.size))
        K[0] = -self.eta * np.asarray(g, dtype=float)
        scale0 = self.atol + self.rtol * np.abs(x)
        h = self.h0 if self.h0 is not None else self._initial_step(x, K[0], scale0)
        expo = -1.0 / (q + 1)
        alpha = 1.0 / (q + 1) - 0.75 * self.beta      # PI controller (Gustafsson; Hairer & Wanner IV.2)
        err_old = 1e-4
        while True:
            if self.t_max is not None:
                if self.t >= self.t_max * (1 - 1e-14):
                    return f"gradient flow reached t_max = {self.t_max:g}"
                h = min(h, self.t_max - self.t)
            if self.h_max is not None:
                h = min(h, self.h_max)
            # stages 1..s-1 (the last stage of an FSAL pair is evaluated at the new point)
            ok = True
            for i in range(1, s):
                xi = x + h * (a[i, :i] @ K[:i])
                try:
                    vi, gi = fun(xi)
                except IntegrationError:      # a trial point whose model cannot be integrated: shrink
                    ok = False
                    break
                if not np.all(np.isfinite(gi)):
                    ok = False
                    break
                K[i] = -self.eta * np.asarray(gi, dtype=float)
            if not ok:
                h *= 0.5
                self.n_rejected += 1
                if h < 1e-300:
                    return "gradient flow: step size underflow (non-finite gradients)"
                continue
            # FSAL: the last stage point equals the high-order solution
            x_new = xi
            new_value, new_g = vi, gi
            err_vec = h * (b_err @ K)
            scale = self.atol + self.rtol * np.maximum(np.abs(x), np.abs(x_new))
            err = float(np.sqrt(np.mean((err_vec / scale) ** 2))) if x.size else 0.0
            uphill = self.monotone and not (new_value <= value)
            if err <= 1.0 and math.isfinite(new_value) and not uphill:
                self.t += h
                self.times.append(self.t)
                x, value, g = x_new, float(new_value), np.asarray(new_g, dtype=float)
                K[0] = K[s - 1]
                if err == 0:
                    fac = self.fac_max
                else:
                    fac = self.safety * err ** (-alpha) * err_old ** self.beta
                    fac = min(self.fac_max, max(self.fac_min, fac))
                err_old = max(err, 1e-4)
                h *= fac
                if monitor(x, value, g):
                    return "stopped by the monitor"
            else:
                self.n_rejected += 1
                if not math.isfinite(err) or not math.isfinite(new_value):
                    h *= 0.5
                elif uphill and err <= 1.0:
                    h *= 0.5
                else:
                    h *= max(self.fac_min, self.safety * err ** expo)
                if h < 1e-300:
                    return "gradient flow: step size underflow"


OPTIMIZERS = {"adam": Adam, "sgd": SGD, "lbfgs": LBFGS, "gradient_flow": GradientFlow}


def get(optimizer, **options):
    """An optimizer from a name ("adam", "sgd", "lbfgs", "gradient_flow") and options, or the instance
    itself (then ``options`` must be empty)."""
    if isinstance(optimizer, Optimizer):
        if options:
            raise InputValidationError("pass options to the optimizer's constructor when giving an instance")
        return optimizer
    if isinstance(optimizer, str):
        key = optimizer.lower().replace("-", "_")
        if key == "l_bfgs" or key == "l_bfgs_b":
            key = "lbfgs"
        if key in OPTIMIZERS:
            try:
                return OPTIMIZERS[key](**options)
            except TypeError as e:
                raise InputValidationError(f"optimizer {key!r}: {e} (see symode.optim.{OPTIMIZERS[key].__name__})") \
                    from None
    raise InputValidationError(f"unknown optimizer {optimizer!r}; valid: {', '.join(map(repr, OPTIMIZERS))} or an "
                               "instance of symode.optim.Optimizer")
