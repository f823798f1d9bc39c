"""Canonical symbolic model: validation of the declaration and renaming to generated symbols."""
from __future__ import annotations

import hashlib
import math
import unicodedata

import sympy as sp
from sympy.core.function import AppliedUndef

from .._errors import ModelError, ModelTooLargeError, UnsupportedExpressionError
from .canonical import canonical_symbols
from .networks import collect_networks

# Canonical symbols (canonical.py): user symbols are replaced by these (simultaneously, with xreplace) before any
# differentiation or printing, so no user name can reach generated code.
T_CANON = sp.Symbol("t_", real=True)

_BAD_ATOMS = (sp.Derivative, sp.Integral, AppliedUndef, sp.Subs, sp.Order)

#: Deepest expression tree accepted (levels of nested operations, e.g. ``sin(sin(...))``). SymPy
#: differentiates, eliminates common subexpressions and prints recursively; a tree much deeper than this
#: exhausts Python's recursion limit there (measured: 150 nested ``sin`` fail in ``diff``).
MAX_EXPRESSION_DEPTH = 100

#: Functions a right-hand side may use: each is printed by the code generator and so are its derivatives
#: (first and second order: the stiff adjoint uses both). ``sqrt``, ``cbrt`` and ``root`` are powers;
#: ``min``/``max`` are ``Min``/``Max``.
SUPPORTED_FUNCTIONS = {
    f.__name__: f for f in (
        sp.sin, sp.cos, sp.tan, sp.asin, sp.acos, sp.atan, sp.atan2,
        sp.sinh, sp.cosh, sp.tanh, sp.asinh, sp.acosh, sp.atanh,
        sp.exp, sp.log, sp.Abs, sp.sign, sp.Heaviside, sp.DiracDelta, sp.Min, sp.Max,
        sp.erf, sp.erfc, sp.Piecewise,
    )
}
# Logical connectives, inside Piecewise conditions only.
_BOOLEAN_FUNCTIONS = (sp.And, sp.Or, sp.Not)
_SUPPORTED_APPLIED = tuple(SUPPORTED_FUNCTIONS.values()) + _BOOLEAN_FUNCTIONS
_OPERATIONS = (sp.Add, sp.Mul, sp.Pow, sp.core.relational.Relational, sp.functions.elementary.piecewise.ExprCondPair)
_HINTS = {
    "floor": "discontinuous functions (floor, ceiling, frac, Mod) have no useful derivative; write the "
             "switch with Piecewise or Heaviside",
    "gamma": "gamma-like functions (gamma, factorial, loggamma) need polygamma in their derivatives, which "
             "cannot be compiled",
}
_HINTS.update({k: _HINTS["floor"] for k in ("ceiling", "frac", "Mod", "KroneckerDelta")})
_HINTS.update({k: _HINTS["gamma"] for k in ("factorial", "loggamma", "polygamma", "RisingFactorial")})
_FLOAT_MAX = 1.7976931348623157e308


def supported_functions_text():
    """The supported functions as a sentence (for error messages and documentation)."""
    names = sorted((n for n in SUPPORTED_FUNCTIONS if n not in ("Min", "Max", "Piecewise")), key=str.lower)
    return (", ".join(names) + ", Min, Max, Piecewise (with a default branch) and sqrt/powers; "
            "+, -, *, / and real numbers")


def _short(num):
    text = str(num)
    return text if len(text) <= 40 else f"{text[:12]}...{text[-6:]} ({len(text)} characters)"


def _check_number(node, what):
    """Refuse a number that float64 cannot hold (overflow to inf, or underflow of a nonzero to 0)."""
    if node.is_zero:
        return
    try:
        v = float(node)
    except (OverflowError, ValueError, TypeError):
        v = math.inf
    if not math.isfinite(v) or abs(v) > _FLOAT_MAX:
        raise ModelError(f"{what} contains the number {_short(node)}, outside the float64 range (about "
                         "1.8e308): the compiled model computes in float64; rescale the model or write the "
                         "number as a parameter")
    if v == 0.0:
        raise ModelError(f"{what} contains the number {_short(node)}, which underflows to 0 in float64: the "
                         "compiled model computes in float64; rescale the model or write the number as a "
                         "parameter")


def _check_expression(e, what):
    """Check one expression iteratively (no recursion, whatever its depth): tree depth, supported functions
    and operations, numbers in float64 range, no infinities, NaN or I, Piecewise with a default branch.

    Runs before anything recursive (free symbols, renaming, derivatives) touches the expression.
    """
    if isinstance(what, int):
        what = f"`rhs[{what}]`"
    height = {}
    stack = [(e, False)]
    while stack:
        node, ready = stack.pop()
        key = id(node)
        if key in height and not ready:
            continue
        args = node.args
        if not ready:
            _check_node(node, what)
            if args:
                stack.append((node, True))
                stack.extend((a, False) for a in args if id(a) not in height)
            else:
                height[key] = 1
            continue
        h = 1 + max(height[id(a)] for a in args)
        height[key] = h
        if h > MAX_EXPRESSION_DEPTH:
            raise ModelTooLargeError(
                f"{what} is nested more than {MAX_EXPRESSION_DEPTH} levels deep (e.g. sin(sin(...)) or "
                f"((x + 1)*x + 1)*x...); SymPy's recursive differentiation and printing cannot handle deeper "
                "expressions. Introduce intermediate states, compute repeated structure in a network block "
                "(symode.nn), or simplify the expression")


def _check_node(node, what):
    if node.is_Atom:
        if node in (sp.zoo, sp.oo, -sp.oo, sp.nan) or node is sp.S.NegativeInfinity:
            raise UnsupportedExpressionError(f"{what} contains an infinity or NaN: {node}")
        if node is sp.I:
            raise UnsupportedExpressionError(f"{what} contains the imaginary unit I; only real models are "
                                             "supported")
        if node.is_Number:
            _check_number(node, what)
        elif not (node.is_Symbol or isinstance(node, (sp.NumberSymbol, sp.logic.boolalg.BooleanAtom))):
            raise UnsupportedExpressionError(f"{what} contains `{node}` ({type(node).__name__}), which cannot "
                                             "be compiled")
        return
    if isinstance(node, _BAD_ATOMS):
        raise UnsupportedExpressionError(f"{what} contains `{_short(node)}`, which cannot be compiled "
                                         f"({type(node).__name__}); replace it by an explicit expression")
    if isinstance(node, _SUPPORTED_APPLIED):
        if isinstance(node, sp.Piecewise) and not node.args[-1].cond == sp.true:
            raise UnsupportedExpressionError(f"{what} has a Piecewise without a default (True) branch: "
                                             f"{_short(node)}")
        return
    if isinstance(node, _OPERATIONS):
        return
    name = getattr(node.func, "__name__", type(node).__name__)
    hint = _HINTS.get(name)
    raise UnsupportedExpressionError(
        f"{what} uses `{name}` ({_short(node)}), which symode cannot compile with exact derivatives"
        + (f" ({hint})" if hint else "") + f". Supported: {supported_functions_text()}")


def _as_list(obj, what):
    if isinstance(obj, sp.MatrixBase):
        return list(obj)
    if isinstance(obj, (str, bytes)):
        raise ModelError(f"`{what}` must be a sequence of SymPy objects, not a string. "
                         "Build expressions with SymPy, or read text with `symode.ODE.from_text`.")
    if isinstance(obj, sp.Basic):
        return [obj]
    try:
        return list(obj)
    except TypeError:
        raise ModelError(f"`{what}` must be a sequence, got {type(obj).__name__}") from None


def _check_symbols(seq, what):
    out = []
    for i, s in enumerate(seq):
        if not isinstance(s, sp.Symbol):
            raise ModelError(f"`{what}[{i}]` must be a sympy.Symbol, got {type(s).__name__} {s!r}")
        out.append(s)
    return out


def _to_expr(e, i):
    if isinstance(e, (str, bytes)):
        raise ModelError(f"`rhs[{i}]` is a string; symode never evaluates strings. Build it with SymPy or use "
                         "`symode.ODE.from_text`.")
    if isinstance(e, bool):
        raise ModelError(f"`rhs[{i}]` is a bool, not an expression")
    if isinstance(e, (int, float)):
        return sp.Float(e) if isinstance(e, float) else sp.Integer(e)
    if not isinstance(e, sp.Expr):
        raise ModelError(f"`rhs[{i}]` must be a SymPy expression, got {type(e).__name__}: {e!r}")
    return e


def _collect_networks(rhs, params, mapping, declared_set):
    """Network blocks used by `rhs` (see networks.collect_networks); their inputs are checked like rhs."""
    if not any(getattr(s, "_symode_net_output", False) for e in rhs for s in e.free_symbols):
        return None
    def check(e, what):
        _check_expression(e, what)
        undeclared = {s for s in e.free_symbols - declared_set if not getattr(s, "_symode_net_output", False)}
        if undeclared:
            raise ModelError(f"{what} uses undeclared symbol(s) {', '.join(sorted(map(str, undeclared)))}; declare "
                             "each as a state, a parameter or t")

    return collect_networks(rhs, params, mapping, check)


class SymbolicModel:
    """A validated model: user symbols, right-hand sides, and their canonical (renamed) forms.

    Parameters
    ----------
    rhs : sequence of sympy.Expr or sympy.Matrix, length n
    states : sequence of sympy.Symbol, length n
    params : sequence of sympy.Symbol, length p
    t : sympy.Symbol or None
    """

    def __init__(self, rhs, states, params=(), t=None):
        rhs = [_to_expr(e, i) for i, e in enumerate(_as_list(rhs, "rhs"))]
        states = _check_symbols(_as_list(states, "states"), "states")
        params = _check_symbols(_as_list(params, "params") if params is not None else [], "params")
        if t is not None and not isinstance(t, sp.Symbol):
            raise ModelError(f"`t` must be a sympy.Symbol or None, got {type(t).__name__}: {t!r}")
        if len(states) == 0:
            raise ModelError("`states` is empty: a model needs at least one state")
        if len(rhs) != len(states):
            raise ModelError(f"`rhs` has {len(rhs)} entries but `states` has {len(states)} "
                             f"({', '.join(map(str, states))}); give one right-hand side per state")
        declared = list(states) + list(params) + ([t] if t is not None else [])
        role = {}
        names = {}
        for kind, seq in (("state", states), ("parameter", params), ("time", [t] if t is not None else [])):
            for s in seq:
                if s in role:
                    raise ModelError(f"symbol '{s}' is declared twice (as {role[s]} and as {kind})")
                role[s] = kind
                key = unicodedata.normalize("NFKC", s.name)
                if key in names and names[key] != s:
                    raise ModelError(f"duplicate name '{s.name}' for distinct symbols ({names[key].name!r} and "
                                     f"{s.name!r} are the same name after Unicode normalisation, or differ only "
                                     "in assumptions); rename one")
                names[key] = s
        declared_set = set(declared)
        for i, e in enumerate(rhs):
            _check_expression(e, i)
            undeclared = {s for s in e.free_symbols - declared_set if not getattr(s, "_symode_net_output", False)}
            if undeclared:
                names_u = ", ".join(sorted(str(s) for s in undeclared))
                hint = ""
                if t is None and any(s.name == "t" for s in undeclared):
                    hint = " (if it is time, pass it as `t=`)"
                raise ModelError(f"`rhs[{i}]` uses undeclared symbol(s) {names_u}{hint}; declare each as a state, "
                                 "a parameter or t")
        self.rhs = tuple(rhs)
        self.states = tuple(states)
        self.params = tuple(params)
        self.t = t
        n, p = len(states), len(params)
        self.n, self.p = n, p
        self.z_c = canonical_symbols("z", n)
        self.theta_c = canonical_symbols("p", p)
        self.a_c = canonical_symbols("a", n)
        self.t_c = T_CANON
        mapping = dict(zip(states, self.z_c))
        mapping.update(zip(params, self.theta_c))
        if t is not None:
            mapping[t] = self.t_c
        # Network blocks (symode.nn): their outputs become canonical symbols h<b>_<k>; None without blocks.
        self.networks = _collect_networks(rhs, params, mapping, declared_set)
        self.to_canon = mapping
        self.from_canon = {v: k for k, v in mapping.items()}
        self.rhs_c = tuple(e.xreplace(mapping) for e in rhs)

    def key(self, extra=""):
        """A hash of the canonical model (independent of user names) and `extra`."""
        h = hashlib.sha256()
        h.update(f"n={self.n};p={self.p};".encode())
        for e in self.rhs_c:
            h.update(sp.srepr(e).encode())
            h.update(b"\x00")
        if self.networks is not None:
            h.update(b"networks:" + self.networks.key.encode())
        h.update(extra.encode())
        return h.hexdigest()

    def to_user(self, expr):
        """Rename canonical symbols back to the user's symbols (for display and error messages)."""
        return expr.xreplace(self.from_canon)
