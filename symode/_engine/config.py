"""Solver settings: one frozen, validated ``SolverConfig`` per call, and the defaults of every public signature.

Every entry point (``ODE.solve``, ``vjp``, ``value_and_grad``, ``value_and_grad_fn``, ``sensitivities``, the
batched and distributed calls, ``fit``) takes its solver keywords' defaults from :data:`DEFAULTS` and turns
them into a :class:`SolverConfig` with :func:`make_config`; the compiled loops read the config's arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .. import _validate as V
from .._errors import InputValidationError
from .._numeric import methods as M


@dataclass(frozen=True)
class Defaults:
    """The defaults of the solver keywords (the public signatures read them from here)."""

    method: str = "dopri5"
    rtol: float = 1e-6
    atol: float = 1e-9
    dt: float | None = None
    max_steps: int = 100_000
    dt_max: float | None = None
    controller: dict | None = None
    time_limit: float | None = None
    throw: bool = True
    adjoint: str = "discrete"


DEFAULTS = Defaults()
#: the solver keywords every solving call accepts (in this order)
SOLVER_KEYS = ("method", "rtol", "atol", "dt", "max_steps", "dt_max", "controller", "time_limit")
#: the keywords of the gradient calls beyond the solver's
ADJOINT_KEYS = ("seminorm", "adjoint_rtol", "adjoint_atol", "checkpoints")
CONTROLLER_KEYS = V.CONTROLLER_KEYS
#: the controller array the compiled loops read: [safety, fac_min, fac_max, beta, time_limit (0: none),
#: checkpoint stride (checkpoint adjoint only)]
CTRL_SAFETY, CTRL_FAC_MIN, CTRL_FAC_MAX, CTRL_BETA, CTRL_TIME_LIMIT, CTRL_STRIDE = range(6)


@dataclass(frozen=True)
class RKArrays:
    """An explicit method's tableau as the compiled loops take it."""

    a: np.ndarray
    b: np.ndarray
    b_error: np.ndarray
    c: np.ndarray
    dense: np.ndarray
    fsal: bool
    error_order: int


@dataclass(frozen=True)
class SolverConfig:
    """Validated solver settings of one call (never mutated: the arrays are shared by cached configs).

    ``rtol``/``atol`` are float64 arrays of the model's size; ``ctrl`` is the controller array
    (see ``CTRL_*``); ``rk`` the explicit tableau's arrays (None for the stiff methods)."""

    method: M.Method
    dt: float | None
    rtol: np.ndarray
    atol: np.ndarray
    max_steps: int
    dt_max: float | None
    ctrl: np.ndarray
    rk: RKArrays | None

    @property
    def kind(self):
        return self.method.kind

    @property
    def explicit(self):
        return self.method.kind == "explicit"

    def step_sizes(self):
        """(h_init, h_max, dt_fixed) as the compiled loops take them."""
        return self.method.step_sizes(self.dt, self.dt_max)

    def with_stride(self, stride):
        """The same settings with a checkpoint stride in the controller array (the checkpoint adjoint)."""
        ctrl = np.concatenate([self.ctrl, np.zeros(max(0, CTRL_STRIDE + 1 - self.ctrl.size))])
        ctrl[CTRL_STRIDE] = stride
        return replace(self, ctrl=ctrl)


def rk_arrays(meth):
    if meth.kind != "explicit":
        return None
    a, b, be, c, dense, fsal, eo = meth.packed()
    return RKArrays(a, b, be, c, dense, fsal, eo)


def controller_array(meth, controller, time_limit):
    """The controller array of the compiled loops (see ``CTRL_*``), its settings checked (``_validate.controller``)."""
    return np.array([*V.controller(controller, meth.beta), time_limit or 0.0])


def make_config(n, method=DEFAULTS.method, rtol=DEFAULTS.rtol, atol=DEFAULTS.atol, dt=DEFAULTS.dt,
                max_steps=DEFAULTS.max_steps, dt_max=DEFAULTS.dt_max, controller=DEFAULTS.controller,
                time_limit=DEFAULTS.time_limit):
    """Check the solver keywords of a model with ``n`` states and return their :class:`SolverConfig`."""
    meth = M.get(method)
    if meth.fixed and dt is None:
        raise InputValidationError(f"method {meth.name!r} takes fixed steps and needs `dt` (e.g. dt=0.01)")
    dt = V.positive_float(dt, "dt")
    rtol_a, atol_a = V.tolerances(rtol, atol, n)
    max_steps = V.positive_int(max_steps, "max_steps")
    dt_max = V.positive_float(dt_max, "dt_max")
    time_limit = V.positive_float(time_limit, "time_limit")
    ctrl = controller_array(meth, controller, time_limit)
    return SolverConfig(meth, dt, rtol_a, atol_a, max_steps, dt_max, ctrl, rk_arrays(meth))


def config_key(method, rtol, atol, dt, max_steps, dt_max, time_limit):
    """A cache key for settings made only of scalars (None when they are not): the types are part of it, so that
    ``max_steps=1e3`` is checked as itself and never served the config of ``max_steps=1000``."""
    vals = (method, rtol, atol, dt, max_steps, dt_max, time_limit)
    for v in vals:
        if not (v is None or type(v) in (str, int, float)):
            return None
    return tuple((type(v), v) for v in vals)


def unknown_keywords(kw, valid=None):
    """The error for keyword arguments no entry point knows (naming the valid ones when given)."""
    msg = f"unknown keyword argument(s) {', '.join(map(repr, kw))}"
    if valid:
        msg += f"; valid: {', '.join(valid)}"
    return InputValidationError(msg)
