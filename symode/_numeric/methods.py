"""Method registry: names of the public API -> method data objects.

Adding an explicit Runge-Kutta method takes one tableau and one call: the compiled loops take any
``ButcherTableau`` as arrays (``Method.packed()``), so nothing is compiled per method::

    from symode._numeric import methods, tableau
    RALSTON = tableau.ButcherTableau("ralston", a=[[0, 0], [2 / 3, 0]], b=[0.25, 0.75], c=[0, 2 / 3],
                                     b_error=None, dense=[[1.0, -0.75], [0.0, 0.75]], order=2)
    methods.register(RALSTON)          # then model.solve(..., method="ralston", dt=...)

A tableau without ``b_error`` is a fixed-step method (``dt`` required); with one it is adaptive (the
controller's exponent follows ``error_order``; ``beta`` > 0 selects the PI controller). The tableau checks its
own order conditions when it is built. Stiff (Rosenbrock) methods are not added this way.
"""
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


def register(method, *, name=None, beta=0.0):
    """Add an explicit Runge-Kutta method to the registry and return its ``Method``.

    ``method``: a ``tableau.ButcherTableau`` (registered under ``name`` or its own name; fixed-step when it has
    no ``b_error``, its order from the tableau; ``beta``: the PI controller's coefficient, 0 for the classical
    I-controller), or a ready ``Method`` of kind ``"explicit"``. A name already registered is an error."""
    if isinstance(method, tb.ButcherTableau):
        T = method
        method = Method(name or T.name, "explicit", T, T.b_error is None, int(T.order), beta=float(beta))
    elif not isinstance(method, Method):
        raise InputValidationError(f"register() takes a ButcherTableau or a Method, got {type(method).__name__}")
    if method.kind != "explicit" or not isinstance(method.tableau, tb.ButcherTableau):
        raise InputValidationError(f"register() adds explicit Runge-Kutta methods (a ButcherTableau); "
                                   f"{method.name!r} is of kind {method.kind!r}")
    if not method.fixed and method.tableau.b_error is None:
        raise InputValidationError(f"method {method.name!r}: an adaptive method needs an error estimate (b_error)")
    if not isinstance(method.name, str) or not method.name:
        raise InputValidationError("a method needs a non-empty name")
    if method.name in METHODS:
        raise InputValidationError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get(name):
    if not isinstance(name, str) or name not in METHODS:
        valid = ", ".join(repr(k) for k in METHODS)
        raise InputValidationError(f"Unknown method {name!r}; valid: {valid}.")
    return METHODS[name]
