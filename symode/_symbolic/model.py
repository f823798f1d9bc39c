"""Canonical symbolic model: validation of the declaration and renaming to generated symbols."""
from __future__ import annotations

import hashlib
import unicodedata

import sympy as sp
from sympy.core.function import AppliedUndef

from .._errors import ModelError, UnsupportedExpressionError

# Canonical symbols. User symbols are replaced by these (simultaneously, with xreplace) before any
# differentiation or printing, so no user name can reach generated code.
_CANON_CACHE: dict = {}


def canonical_symbols(prefix, n):
    """Return ``n`` canonical real symbols ``<prefix>_0 ...`` (shared, so hashing is stable)."""
    key = (prefix, n)
    if key not in _CANON_CACHE:
        _CANON_CACHE[key] = tuple(sp.Symbol(f"{prefix}_{i}", real=True) for i in range(n))
    return _CANON_CACHE[key]


T_CANON = sp.Symbol("t_", real=True)

_BAD_ATOMS = (sp.Derivative, sp.Integral, AppliedUndef, sp.Subs, sp.Order)


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


def _check_expression(e, i):
    if e.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
        raise UnsupportedExpressionError(f"`rhs[{i}]` contains an infinity or NaN: {e}")
    if e.has(sp.I):
        raise UnsupportedExpressionError(f"`rhs[{i}]` contains the imaginary unit I: {e}; only real models "
                                         "are supported")
    for node in sp.preorder_traversal(e):
        if isinstance(node, _BAD_ATOMS):
            raise UnsupportedExpressionError(f"`rhs[{i}]` contains `{node}`, which cannot be compiled "
                                             f"({type(node).__name__}); replace it by an explicit expression")
        if isinstance(node, (sp.Piecewise,)):
            if not node.args[-1].cond == sp.true:
                raise UnsupportedExpressionError(f"`rhs[{i}]` has a Piecewise without a default (True) "
                                                 f"branch: {node}")


def _collect_networks(rhs, params, mapping, declared_set):
    """Network blocks used by `rhs` (see symode.nn.collect_networks); their inputs are checked like rhs."""
    if not any(getattr(s, "_symode_net_output", False) for e in rhs for s in e.free_symbols):
        return None
    from ..nn import collect_networks

    def check(e, what):
        try:
            _check_expression(e, 0)
        except UnsupportedExpressionError as ex:
            raise UnsupportedExpressionError(str(ex).replace("`rhs[0]`", what)) from None
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
