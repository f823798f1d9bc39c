"""Loss specifications: what a loss of a solution is, symbolically (compiled and evaluated by the engine)."""
from __future__ import annotations

import sympy as sp

from .. import _validate as V
from .._errors import ModelError


def _no_str():
    raise ModelError("losses are SymPy expressions; symode never evaluates strings")


class FinalLoss:
    """L = expr(z(ts[-1]), theta, t) for a SymPy expression in the model's symbols."""

    def __init__(self, expr):
        self.expr = sp.sympify(expr) if not isinstance(expr, str) else _no_str()


class ObservationLoss:
    """L = sum_i expr(z(ts[i]), theta, ts[i], data[i]).

    Parameters
    ----------
    expr : sympy.Expr
        An expression of the model's states, parameters, time and the data symbols.
    data_symbols : sequence of sympy.Symbol
        Stand for the columns of ``data`` (one row per output time). An additive term of ``expr`` that involves a
        NaN data entry is skipped at that output time (a missing observation); +-inf is refused.
    """

    def __init__(self, expr, data_symbols):
        if isinstance(expr, str):
            _no_str()
        self.expr = expr
        self.data_symbols = tuple(V.observation_symbols((), (), data_symbols))   # Symbols, no duplicates


class RunningCost:
    """L = integral over [ts[0], ts[-1]] of expr(z, theta, t) dt."""

    def __init__(self, expr):
        if isinstance(expr, str):
            _no_str()
        self.expr = expr
