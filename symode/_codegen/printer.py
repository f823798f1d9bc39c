"""SymPy's Python code printer, specialised for Numba kernels and made strict."""
from __future__ import annotations

import math

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from .._errors import UnsupportedExpressionError


class NumbaPrinter(PythonCodePrinter):
    """Prints scalar expressions as Numba-compilable Python using the ``math`` module.

    Symbols are printed through ``symbol_map`` (canonical symbol -> generated identifier such as ``z[3]``);
    a symbol that is not in the map, or any construct SymPy's printer does not know, raises
    :class:`UnsupportedExpressionError` instead of printing something that fails later.
    Numbers are printed as float literals with full (round-trip) precision, except small integer
    exponents, which stay integers so that Numba expands them into multiplications.
    """

    printmethod = "_symode_numba"

    def __init__(self, symbol_map, settings=None):
        s = {"strict": True, "fully_qualified_modules": True, "standard": "python3"}
        s.update(settings or {})
        super().__init__(s)
        self.symbol_map = symbol_map

    def _print_Symbol(self, expr):
        try:
            return self.symbol_map[expr]
        except KeyError:
            raise UnsupportedExpressionError(f"symbol '{expr}' has no generated name (undeclared)") from None

    def _print_Dummy(self, expr):
        return self._print_Symbol(expr)

    def _float(self, v):
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            text = str(v)
            if len(text) > 40:
                text = f"{text[:12]}...{text[-6:]} ({len(text)} digits)"
            raise UnsupportedExpressionError(f"constant {text} is out of float64 range (magnitude above 1.8e308)")
        v = f
        r = repr(v)
        return f"({r})" if v < 0 else r

    def _print_Integer(self, expr):
        return self._float(int(expr))

    def _print_Rational(self, expr):
        return self._float(sp.Float(expr, 20))

    def _print_Float(self, expr):
        return self._float(expr)

    _print_One = _print_Integer
    _print_Zero = _print_Integer
    _print_NegativeOne = _print_Integer
    _print_Half = _print_Rational

    def _print_Pow(self, expr, rational=False):
        base, e = expr.args
        if e.is_Integer and abs(int(e)) <= 64:
            k = int(e)
            b = self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Pow"] + 1)
            if k >= 0:
                return f"{b}**{k}"
            return f"(1.0/{b}**{-k})"
        if e == sp.S.Half:
            return f"math.sqrt({self._print(base)})"
        if e == -sp.S.Half:
            return f"(1.0/math.sqrt({self._print(base)}))"
        b = self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Pow"] + 1)
        return f"{b}**({self._print(e)})"

    def _print_Exp1(self, expr):
        return "math.e"

    def _print_Pi(self, expr):
        return "math.pi"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        a = self._print(expr.args[0])
        return f"(0.0 if {a} == 0.0 else math.copysign(1.0, {a}))"

    def _print_Heaviside(self, expr):
        a = self._print(expr.args[0])
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"(0.0 if {a} < 0.0 else ({self._print(h0)} if {a} == 0.0 else 1.0))"

    def _print_floor(self, expr):
        return f"float(math.floor({self._print(expr.args[0])}))"

    def _print_ceiling(self, expr):
        return f"float(math.ceil({self._print(expr.args[0])}))"

    def _print_Min(self, expr):
        return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Max(self, expr):
        return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_DiracDelta(self, expr):
        # Derivative of Heaviside: zero almost everywhere (a documented convention, never NaN).
        return "0.0"

    def _print_Piecewise(self, expr):
        if expr.args[-1].cond != sp.true:
            raise UnsupportedExpressionError(f"Piecewise without a default (True) branch: {expr}")
        result = self._print(expr.args[-1].expr)
        for e, c in reversed(expr.args[:-1]):
            result = f"(({self._print(e)}) if ({self._print(c)}) else ({result}))"
        return result

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"

    def _print_ImaginaryUnit(self, expr):
        raise UnsupportedExpressionError("complex numbers (I) are not supported")

    def _print_NaN(self, expr):
        raise UnsupportedExpressionError("nan in an expression")

    def _print_Infinity(self, expr):
        raise UnsupportedExpressionError("infinity in an expression")

    _print_NegativeInfinity = _print_Infinity
    _print_ComplexInfinity = _print_Infinity

    def _print_Function(self, expr):
        raise UnsupportedExpressionError(f"function '{expr.func}' is not supported in compiled code: {expr}")

    def emptyPrinter(self, expr):
        raise UnsupportedExpressionError(f"cannot compile {type(expr).__name__}: {expr}")
