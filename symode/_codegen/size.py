"""The size guard: refuse models whose generated code Numba (or Python) cannot compile in reasonable time.

Three measures: the number of operations (compile time grows with it: ~400 operations per CPU second on a 2-core
znver4 VM, so 40,000 is one to two minutes), and per statement the line length and the nesting depth. A long
statement is the shape that fails late: ``-sum(sin(i*x) for i in range(3000))`` prints one 94,000-character line
whose chain of 3,000 additions is deeper than Python's compiler and Numba's recursive passes allow
(``RecursionError`` after minutes of compiling). Python refuses more than 200 nested parentheses outright.
"""
from __future__ import annotations

import ast
import os
import re

import sympy as sp

from .._errors import ModelTooLargeError

MAX_GENERATED_OPS = 40_000   # $SYMODE_MAX_GENERATED_OPS overrides it (0: no limit, no check at all)
MAX_DEPTH = 2_000            # nesting depth of one generated expression (Python's compiler fails near 3,000)
MAX_LINE_CHARS = 50_000      # characters of one generated statement
_PARSE_ABOVE = 400           # lines longer than this are parsed to measure their depth
_OPS_PER_TERM = 7  # generated operations per (rhs operation + Jacobian nonzero), fitted on P2 and P5 (n=4..32)
_OP_RE = re.compile(r"[-+*/]|\[|math\.")
_ADVICE = ("Write large dense parts as network blocks (symode.nn: e.g. nn.dense(z, n, activation='tanh', "
           "bias=False) for tanh(W z), whose code size does not grow with the number of weights)")


def max_generated_ops():
    v = os.environ.get("SYMODE_MAX_GENERATED_OPS", "").strip()
    if v:
        try:
            return int(v)
        except ValueError:
            pass
    return MAX_GENERATED_OPS


def expr_depth(exprs):
    """The nesting depth of ``exprs`` once printed: an n-term sum or product is a chain of n - 1 operators."""
    memo = {}
    best = 0
    for root in exprs:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if node in memo:
                continue
            args = node.args
            if not args:
                memo[node] = 0
                continue
            if not done:
                stack.append((node, True))
                stack.extend((a, False) for a in args if a not in memo)
                continue
            step = len(args) - 1 if isinstance(node, (sp.Add, sp.Mul)) else 1
            memo[node] = max(memo[a] for a in args) + max(step, 1)
        best = max(best, memo[root])
    return best


def estimate(sym):
    """Cheap pre-derivation estimates (operations, depth) of the generated code (symbolic parts only)."""
    exprs = list(sym.rhs_c)
    if getattr(sym, "networks", None) is not None:
        exprs += [e for cb in sym.networks.blocks for e in cb.inputs_c]
    nnz = sum(len(e.free_symbols) for e in exprs)
    ops = sum(sp.count_ops(e) for e in exprs)
    return _OPS_PER_TERM * (nnz + ops), expr_depth(exprs)


def estimate_ops(sym):
    """Cheap pre-derivation estimate of the generated code's operation count (symbolic parts only)."""
    return estimate(sym)[0]


def source_ops(text):
    """Operations in generated source: arithmetic operators, subscripts and math calls."""
    return len(_OP_RE.findall(text))


def too_large(size, limit, when):
    return ModelTooLargeError(
        f"the model is too large to compile in reasonable time: its generated code has {when}{size:,} operations "
        f"(limit {limit:,}; Numba would take many minutes). {_ADVICE}, or raise the limit with the environment "
        "variable SYMODE_MAX_GENERATED_OPS (0 = no limit).")


def too_deep(what):
    return ModelTooLargeError(
        f"the model has an expression too large to compile as one statement: {what} (Python's compiler and "
        f"Numba recurse over each expression and fail with RecursionError). Split long sums or deep nestings into "
        f"intermediate quantities (e.g. extra states or several shorter expressions), or {_ADVICE[0].lower()}"
        f"{_ADVICE[1:]}.")


def check_model(sym):
    """Refuse a model before derivation when its estimates are clearly over the limits."""
    limit = max_generated_ops()
    if limit <= 0:
        return
    ops, depth = estimate(sym)
    if ops > 2 * limit:  # clearly too large: refuse before the (then slow) derivation
        raise too_large(ops, limit, "an estimated ")
    if depth > MAX_DEPTH:
        raise too_deep(f"an expression nested {depth:,} operations deep (limit {MAX_DEPTH:,})")


def _ast_depth(tree):
    best = 0
    stack = [(tree, 0)]
    while stack:
        node, d = stack.pop()
        if d > best:
            best = d
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(node))
    return best


def check_source(text):
    """Refuse generated source over the limits (operations, line length, nesting depth)."""
    limit = max_generated_ops()
    if limit <= 0:
        return
    n = source_ops(text)
    if n > limit:
        raise too_large(n, limit, "")
    longest = max(map(len, text.splitlines()), default=0)
    if longest > MAX_LINE_CHARS:
        raise too_deep(f"a generated statement of {longest:,} characters (limit {MAX_LINE_CHARS:,})")
    for line in text.splitlines():
        if len(line) <= _PARSE_ABOVE:   # 200 nested parentheses or a deep chain need a long line: parse only those
            continue
        try:
            depth = _ast_depth(ast.parse(line.strip()))
        except SyntaxError as e:
            if "nested" not in str(e):
                continue   # not a statement on its own (or not a matter of size: the import reports it)
            raise too_deep(f"Python cannot parse it ({e.msg})") from None
        except (RecursionError, MemoryError) as e:
            raise too_deep(f"Python cannot parse it ({type(e).__name__})") from None
        if depth > MAX_DEPTH:
            raise too_deep(f"a generated expression nested {depth:,} levels deep (limit {MAX_DEPTH:,})")
