"""Gradient flow ("continuous backpropagation"): d theta/dt = -eta * grad L(theta)."""
from __future__ import annotations

import sympy as sp

from .._errors import ModelError


def gradient_flow_rhs(loss_expr, params, eta):
    """Return (rhs, extra parameter symbols) of the gradient flow of `loss_expr` over `params`.

    Free symbols of the loss other than `params` (and `eta`, if it is a Symbol) become parameters of the flow,
    ordered: eta first (when symbolic), then the others sorted by name.
    """
    if isinstance(loss_expr, str):
        raise ModelError("`loss_expr` must be a SymPy expression; symode never evaluates strings")
    loss_expr = sp.sympify(loss_expr)
    params = list(params)
    for s in params:
        if not isinstance(s, sp.Symbol):
            raise ModelError(f"`params` entries must be sympy.Symbol, got {s!r}")
    if isinstance(eta, sp.Symbol):
        extra = [eta]
    else:
        try:
            eta = sp.Float(float(eta)) if not isinstance(eta, sp.Basic) else eta
        except TypeError:
            raise ModelError(f"`eta` must be a number or a sympy.Symbol, got {eta!r}") from None
        if eta.free_symbols:
            raise ModelError("`eta` must be a number or a single sympy.Symbol")
        extra = []
    others = sorted(loss_expr.free_symbols - set(params) - set(extra), key=lambda s: s.name)
    rhs = [-eta * sp.diff(loss_expr, s) for s in params]
    return rhs, extra + others
