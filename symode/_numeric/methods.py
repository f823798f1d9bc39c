"""Method registry: names of the public API -> method data objects."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._errors import InputValidationError
from . import rosenbrock as ros
from . import tableau as tb


_PACKED: dict = {}


@dataclass(frozen=True)
class Method:
    """A registered integration method: its kind, tableau and default controller."""

    name: str
    kind: str  # "explicit" or "rosenbrock"
    tableau: object
    fixed: bool
    order: int
    beta: float = 0.0  # PI-controller coefficient (0: the classical I-controller)

    def step_sizes(self, dt, dt_max):
        """(h_init, h_max, dt_fixed) as the compiled loops take them: the initial step (0: chosen automatically;
        fixed-step methods ignore it), the largest step (0: none) and the fixed step (``dt``, 1.0 unused)."""
        return (0.0 if (dt is None or self.fixed) else dt, 0.0 if dt_max is None else dt_max,
                1.0 if dt is None else dt)

    def packed(self):
        """(a, b, b_error, c, dense, fsal, error_order) as the compiled loops take them (cached per method)."""
        cached = _PACKED.get(self.name)
        if cached is not None:
            return cached
        T = self.tableau
        be = T.b_error if T.b_error is not None else np.zeros_like(T.b)
        if getattr(T, "b_error_low", None) is not None:
            # Two estimates (DOP853): rk_b_error = [b_error, b_error_low], of length 2 s; the compiled loop takes
            # that length as the flag for Hairer's combined error norm (see rk._integrate_core).
            be = np.concatenate([be, T.b_error_low])
        out = (np.ascontiguousarray(T.a), np.ascontiguousarray(T.b), np.ascontiguousarray(be),
                np.ascontiguousarray(T.c), np.ascontiguousarray(T.dense), T.fsal, T.error_order)
        _PACKED[self.name] = out
        return out


METHODS = {
    "euler": Method("euler", "explicit", tb.EULER, True, 1),
    "midpoint": Method("midpoint", "explicit", tb.MIDPOINT, True, 2),
    "rk4": Method("rk4", "explicit", tb.RK4, True, 4),
    "bosh3": Method("bosh3", "explicit", tb.BOSH3, False, 3, beta=0.0),
    "dopri5": Method("dopri5", "explicit", tb.DOPRI5, False, 5, beta=0.04),
    "tsit5": Method("tsit5", "explicit", tb.TSIT5, False, 5, beta=0.04),
    # I-controller with the exponent 1/8 (error order 7), as Hairer's dop853.f and SciPy's DOP853
    "dop853": Method("dop853", "explicit", tb.DOP853, False, 8, beta=0.0),
    # Stiff methods (kind != "explicit"; solved by symode._stiff). "auto" starts with dopri5 and switches to
    # rodas5 (and back) on a stiffness test; its tableau is the Rosenbrock one.
    "rodas5": Method("rodas5", "rosenbrock", ros.RODAS5, False, 5, beta=0.04),
    "rodas4": Method("rodas4", "rosenbrock", ros.RODAS4, False, 4, beta=0.04),
    "auto": Method("auto", "auto", ros.RODAS5, False, 5, beta=0.04),
}


def register(method: Method):
    """Add a method to the registry (used by the stiff solvers' module)."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method


def get(name):
    if not isinstance(name, str) or name not in METHODS:
        valid = ", ".join(repr(k) for k in METHODS)
        raise InputValidationError(f"Unknown method {name!r}; valid: {valid}.")
    return METHODS[name]
