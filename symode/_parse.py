"""Safe parser for symode's plain-text model files.

A model file declares the state variables, the parameters and (optionally)
the time variable of an ODE system, followed by one equation per state::

    # Lotka-Volterra
    name: Lotka-Volterra
    states: x, y
    params: alpha, beta, gamma, delta
    time: t
    dx/dt = alpha*x - beta*x*y
    dy/dt = delta*x*y - gamma*y
    z0: 10, 5
    theta: 1.1, 0.4, 0.4, 0.1

Equations may also be written ``x' = ...``.  Everything after ``#`` on a
line is a comment.  Optional ``z0:`` and ``theta:`` lines hold default
initial values and parameter values (plain numbers, comma separated).

Security model
--------------
The text is *never* handed to an evaluator: not to Python's built-in code
evaluation or compilation, not to SymPy's string conversion or string parser,
not to pickle or literal evaluation.  A hand-written tokenizer and an
iterative (shunting-yard) expression parser build SymPy objects directly
from a fixed grammar:

* numbers (``12``, ``0.5``, ``.5``, ``1e-3``), declared names, the constants
  ``pi`` and ``e``;
* binary ``+ - * /``, power ``^`` / ``**`` (right-associative and binding
  tighter than unary minus, so ``-x^2`` is ``-(x^2)``), unary ``+``/``-``,
  parentheses;
* calls of whitelisted functions only (see ``FUNCTION_NAMES``).

Everything else (strings, attribute access, brackets, keyword arguments,
comparisons, ``;``, ``@``, backslashes, unknown names or functions, ...) is
rejected with a `ModelParseError` that names the offending text and its
line and column.

Sums, products and powers are built with SymPy's normal (canonical)
evaluation, so ``alpha*x - beta*x*y`` parses to exactly the expression SymPy
builds from the same Python code.  Function calls are evaluated only when
their arguments are small constants (``sin(0)`` is ``0``, ``log(8, 2)`` is
``3``); calls on symbolic arguments are built unevaluated (``sin(-x)`` stays
``sin(-x)``, mathematically the same as SymPy's ``-sin(x)``), because SymPy's
automatic evaluation queries its assumption system, whose cost cannot be
bounded in advance.

Resource limits are enforced while parsing, before large SymPy objects are
built: text size, tokens per line, nesting depth (100, so that SymPy's own
recursive printers and ``diff`` still work on the result), digits of number
literals, the size of exact constants produced by powers, the size of numbers
under exact roots, the magnitude of floating-point constants and a work
budget proportional to the text length (work units, plus CPU time:
``BASE_SECONDS`` + ``SECONDS_PER_CHAR`` per character, which bounds SymPy's
own evaluation where the units underestimate it).  Hostile input is rejected
with a `ModelParseError` (never a ``RecursionError``) in time roughly
proportional to its length; small inputs finish well under a second.

Expressions are built with *real* symbols and renamed to plain symbols at
the end without re-evaluation: the model is real (``ODE`` renames to real
symbols anyway), and SymPy's evaluation of non-integer powers of compound
expressions with complex symbols (e.g. ``sqrt(cosh(a + b)^2)``) analyses
branch cuts at a cost of tens of milliseconds a term.  So ``sqrt(x^2)``
parses to ``Abs(x)``, as SymPy simplifies it for a real ``x``.

Errors
------
All problems raise `ModelParseError` (from ``symode._errors``), a
``ValueError`` with 1-based ``line`` and ``col`` attributes whose message
ends with the position.  Problems with a file as a whole (missing, a
directory, too large) have ``line`` and ``col`` set to ``None``.
"""

from __future__ import annotations

import math
import operator
import os
import re
import stat
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import sympy
from sympy import S

try:  # Prefer the package-wide error class when the core provides one.
    from ._errors import ModelParseError  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on how the package is laid out

    class ModelParseError(ValueError):  # type: ignore[no-redef]
        """Error raised when a model text or model file cannot be parsed.

        Parameters
        ----------
        reason : str
            Human-readable description of the problem.
        line, col : int or None
            1-based position of the problem in the model text, or ``None``
            when the problem has no position (e.g. a missing file).

        Attributes
        ----------
        reason : str
            The description without the position suffix.
        line, col : int or None
            The position, as given.
        """

        def __init__(self, reason: str, line: int | None = None, col: int | None = None):
            self.reason = reason
            self.line = line
            self.col = col
            if line is None:
                message = reason
            else:
                message = f"{reason} (line {line}, col {col})"
            super().__init__(message)

        def __reduce__(self):
            return (type(self), (self.reason, self.line, self.col))


__all__ = [
    "FUNCTION_NAMES",
    "ModelParseError",
    "ParsedModel",
    "RESERVED_NAMES",
    "parse_model_file",
    "parse_model_text",
]

# --------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------

#: Maximum length of a model text, in characters.
MAX_TEXT_CHARS = 1_000_000
#: Maximum size of a model file, in bytes (UTF-8 may use 4 bytes a character).
MAX_FILE_BYTES = 4 * MAX_TEXT_CHARS
#: Maximum number of tokens on one line.
MAX_TOKENS_PER_LINE = 20_000
#: Maximum number of pending operators/parentheses (expression nesting depth).
MAX_DEPTH = 100
#: Maximum number of digits in one number literal.
MAX_LITERAL_DIGITS = 400
#: Maximum absolute value of the exponent part of a literal such as ``1e300``.
MAX_LITERAL_EXPONENT = 1000
#: Maximum number of digits in all exact numbers of one expression
#: (integer literals plus the estimated size of evaluated constant powers).
MAX_EXACT_DIGITS = 10_000
#: Maximum decimal exponent (``|log10|``) of a floating-point constant.
MAX_FLOAT_EXP10 = 1000
#: Maximum number of digits of exact numbers under fractional powers in one
#: product (SymPy factors such numbers, which is expensive for large ones).
MAX_ROOT_DIGITS = 60
#: Maximum number of arguments of ``min``/``max``.
MAX_MINMAX_ARGS = 16
#: Function calls are evaluated (simplified) by SymPy only when their
#: arguments are constants with at most this many nodes in total, e.g.
#: ``sin(0)`` becomes ``0``.  Calls on expressions with symbols are built
#: unevaluated (``sin(-x)`` stays ``sin(-x)``): SymPy's automatic evaluation
#: queries its assumption system, whose cost is hard to bound.
FUNC_EVAL_NODES = 24
#: Maximum length of a name, in characters.
MAX_NAME_CHARS = 256
#: Fixed part of the work budget; the budget grows by ``WORK_PER_CHAR`` per
#: character of text.  One unit is roughly one expression argument touched
#: while SymPy builds a node (one to a few microseconds).
BASE_WORK = 100_000
#: Work budget added per character of model text.
WORK_PER_CHAR = 5
#: Work units charged per node of an argument that SymPy may inspect with
#: its assumption system (function arguments, bases of non-integer powers).
ASSUMPTION_COST = 3
#: Work units charged per node of the base of a non-integer power whose base
#: is itself a power or an exponential (``sqrt(cosh(x)^2)``, ``exp(x)^0.5``):
#: SymPy's evaluation of such powers analyses branch cuts (tens to hundreds
#: of microseconds per node even with real symbols).
BRANCH_COST = 40
#: Time part of the work budget, in seconds of CPU time of this process (not
#: wall-clock time, so that a loaded machine does not change the outcome much):
#: ``BASE_SECONDS`` plus ``SECONDS_PER_CHAR`` per character of text.  It bounds
#: the time of SymPy's own evaluation where the work units underestimate it.
BASE_SECONDS = 0.5
#: CPU seconds of parsing allowed per character of model text.
SECONDS_PER_CHAR = 100e-6

_LOG10_2 = math.log10(2.0)

# --------------------------------------------------------------------------
# Whitelist
# --------------------------------------------------------------------------


def _sqrt(parser: "_ExprParser", args: list, tok: "_Token"):
    """Build ``sqrt(x)`` as the power ``x**(1/2)``, with the power limits."""
    return parser.power(args[0], S.Half, tok)


def _pow(parser: "_ExprParser", args: list, tok: "_Token"):
    """Build ``pow(a, b)`` as ``a**b``, with the power limits."""
    return parser.power(args[0], args[1], tok)


def _log(parser: "_ExprParser", args: list, tok: "_Token"):
    """Build ``log(x)`` or ``log(x, base)``."""
    if len(args) == 2 and args[1].is_Number and args[1].is_zero:
        raise tok.error("logarithm base must not be 0")
    if len(args) == 2 and not parser.evaluable(args):
        # log(x, b) is log(x)/log(b); build it so unless SymPy evaluates it.
        return parser.divide(parser.call_plain(sympy.log, args[:1], tok),
                             parser.call_plain(sympy.log, args[1:], tok), tok)
    return parser.call_plain(sympy.log, args, tok)


def _plain(func: Callable) -> Callable:
    """Return a builder that applies the SymPy function `func` to the arguments."""
    def build(parser: "_ExprParser", args: list, tok: "_Token"):
        return parser.call_plain(func, args, tok)

    return build


# name -> (builder, min args, max args)
_FUNCTIONS: dict[str, tuple[Callable, int, int]] = {
    "sin": (_plain(sympy.sin), 1, 1),
    "cos": (_plain(sympy.cos), 1, 1),
    "tan": (_plain(sympy.tan), 1, 1),
    "asin": (_plain(sympy.asin), 1, 1),
    "acos": (_plain(sympy.acos), 1, 1),
    "atan": (_plain(sympy.atan), 1, 1),
    "sinh": (_plain(sympy.sinh), 1, 1),
    "cosh": (_plain(sympy.cosh), 1, 1),
    "tanh": (_plain(sympy.tanh), 1, 1),
    "asinh": (_plain(sympy.asinh), 1, 1),
    "acosh": (_plain(sympy.acosh), 1, 1),
    "atanh": (_plain(sympy.atanh), 1, 1),
    "exp": (_plain(sympy.exp), 1, 1),
    "log": (_log, 1, 2),
    "sqrt": (_sqrt, 1, 1),
    "abs": (_plain(sympy.Abs), 1, 1),
    "min": (_plain(sympy.Min), 2, MAX_MINMAX_ARGS),
    "max": (_plain(sympy.Max), 2, MAX_MINMAX_ARGS),
    "sign": (_plain(sympy.sign), 1, 1),
    "pow": (_pow, 2, 2),
    "atan2": (_plain(sympy.atan2), 2, 2),
    "heaviside": (_plain(sympy.Heaviside), 1, 1),
}

_CONSTANTS: dict[str, sympy.Expr] = {"pi": S.Pi, "e": S.Exp1}

#: Names of the functions that may be called in expressions.
FUNCTION_NAMES = frozenset(_FUNCTIONS)
#: Names that cannot be declared as states, parameters or time.
RESERVED_NAMES = frozenset(_FUNCTIONS) | frozenset(_CONSTANTS)

_KEYS = ("states", "params", "time", "name", "z0", "theta")

# --------------------------------------------------------------------------
# Result type
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedModel:
    """Parsed content of a model text (what ``ODE.from_text`` builds an ``ODE`` from; not to be confused
    with ``symode.distributed.ModelSpec``, a compiled model's shippable definition).

    Attributes
    ----------
    states : tuple of sympy.Symbol
        State variables, in declaration order.
    params : tuple of sympy.Symbol
        Parameters, in declaration order (may be empty).
    t : sympy.Symbol or None
        The time variable if a ``time:`` line was given, else ``None``.
    rhs : tuple of sympy.Expr
        Right-hand sides, in the order of `states`.
    defaults : dict
        Optional defaults: ``"z0"`` (initial state) and/or ``"theta"``
        (parameter values), each a tuple of floats; empty if none given.
    name : str or None
        The model name from an optional ``name:`` line.
    """

    states: tuple[sympy.Symbol, ...]
    params: tuple[sympy.Symbol, ...]
    t: sympy.Symbol | None
    rhs: tuple[sympy.Expr, ...]
    defaults: dict = field(hash=False)
    name: str | None = None


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

_NUM, _NAME, _PLUS, _MINUS, _STAR, _SLASH, _POW = (
    "number", "name", "+", "-", "*", "/", "^",
)
_LPAR, _RPAR, _COMMA, _EQ, _COLON, _QUOTE, _END, _ERR = (
    "(", ")", ",", "=", ":", "quote", "end", "error",
)


class _Token:
    """One token of a line: kind, source text, normalised value, position."""

    __slots__ = ("kind", "text", "value", "line", "col")

    def __init__(self, kind: str, text: str, value: Any, line: int, col: int):
        self.kind = kind
        self.text = text
        self.value = value
        self.line = line
        self.col = col

    def error(self, reason: str) -> ModelParseError:
        """Return a `ModelParseError` located at this token."""
        return _error(reason, self.line, self.col)

    def describe(self) -> str:
        """Return a short quoted description of the token for messages."""
        if self.kind == _END:
            return "end of line"
        return repr(self.text)


def _error(reason: str, line: int | None, col: int | None) -> ModelParseError:
    """Build a `ModelParseError` with ``reason``, ``line`` and ``col`` set.

    Both the package-wide class and the fallback take ``(message, line,
    col)`` and append the position ("line L, col C") to the message.
    """
    try:
        err = ModelParseError(reason, line, col)
    except TypeError:  # pragma: no cover - a class with another signature
        message = reason if line is None else f"{reason} (line {line}, col {col})"
        err = ModelParseError(message)
    for attr, value in (("reason", reason), ("line", line), ("col", col)):
        try:
            setattr(err, attr, value)
        except AttributeError:  # pragma: no cover - defensive
            pass
    return err


_WS_RE = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_NUM_RE = re.compile(
    r"(?P<int>[0-9]*)(?:(?P<dot>\.)(?P<frac>[0-9]*))?(?:[eE](?P<exp>[+-]?[0-9]+))?"
)
_ASCII_DIGITS = frozenset("0123456789")
_BAD_TEXT_RE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
    "\u2060-\u2069\ufeff\ufff9-\ufffb]|\r(?!\n)"
)
_KEY_RE = re.compile(r"[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*:")
_SIMPLE = {
    "+": _PLUS, "-": _MINUS, "^": _POW, "(": _LPAR, ")": _RPAR, ",": _COMMA,
    ":": _COLON, "'": _QUOTE, '"': _QUOTE,
}
_BAD_CHAR_REASONS = {
    "[": "brackets '[' are not allowed (use parentheses)",
    "]": "brackets ']' are not allowed (use parentheses)",
    "{": "braces '{' are not allowed (use parentheses)",
    "}": "braces '}' are not allowed (use parentheses)",
    "@": "'@' is not allowed",
    ";": "';' is not allowed (write one equation per line)",
    "\\": "backslashes are not allowed",
    "%": "'%' is not allowed",
    "&": "'&' is not allowed",
    "|": "'|' is not allowed",
    "~": "'~' is not allowed",
    "`": "backquotes are not allowed",
    "$": "'$' is not allowed",
    "?": "'?' is not allowed",
    "!": "'!' is not allowed",
}


def _is_name_start(ch: str) -> bool:
    """Whether `ch` may start a name (Unicode identifier start or ``_``)."""
    return ch == "_" or ch.isidentifier()


def _is_name_char(ch: str) -> bool:
    """Whether `ch` may continue a name (Unicode identifier continuation)."""
    return ("a" + ch).isidentifier()


def _lex(text: str, lineno: int, pos: int) -> Iterator[_Token]:
    """Yield the tokens of ``text[pos:]``, ending with an ``end`` token.

    Problems are yielded as ``error`` tokens (carrying the reason as value),
    so that they are reported only when the parser reaches them.
    """
    n = len(text)
    prev = None
    while True:
        m = _WS_RE.match(text, pos)
        if m:
            pos = m.end()
        if pos >= n:
            yield _Token(_END, "", None, lineno, n + 1)
            return
        ch = text[pos]
        col = pos + 1
        nxt = text[pos + 1] if pos + 1 < n else ""
        if ch in _ASCII_DIGITS or (ch == "." and nxt in _ASCII_DIGITS):
            m = _NUM_RE.match(text, pos)
            tok = _Token(_NUM, m.group(), m, lineno, col)
            pos = m.end()
        elif _is_name_start(ch):
            end = pos + 1
            while end < n and _is_name_char(text[end]):
                end += 1
            raw = text[pos:end]
            pos = end
            value = unicodedata.normalize("NFKC", raw)
            if len(raw) > MAX_NAME_CHARS:
                tok = _Token(_ERR, raw, f"name is too long ({len(raw)} characters; "
                             f"limit {MAX_NAME_CHARS})", lineno, col)
            elif not value.isidentifier():
                tok = _Token(_ERR, raw, f"invalid name {raw!r}", lineno, col)
            else:
                tok = _Token(_NAME, raw, value, lineno, col)
        elif ch in _SIMPLE:
            tok = _Token(_SIMPLE[ch], ch, None, lineno, col)
            pos += 1
        elif ch == "*":
            if nxt == "*":
                tok = _Token(_POW, "**", None, lineno, col)
                pos += 2
            else:
                tok = _Token(_STAR, "*", None, lineno, col)
                pos += 1
        elif ch == "/":
            if nxt == "/":
                tok = _Token(_ERR, "//", "'//' (floor division) is not allowed", lineno, col)
                pos += 2
            else:
                tok = _Token(_SLASH, "/", None, lineno, col)
                pos += 1
        elif ch == "=":
            if nxt == "=":
                tok = _Token(_ERR, "==", "comparison operators are not allowed", lineno, col)
                pos += 2
            else:
                tok = _Token(_EQ, "=", None, lineno, col)
                pos += 1
        elif ch in "<>" or (ch == "!" and nxt == "="):
            size = 2 if nxt == "=" else 1
            tok = _Token(_ERR, text[pos:pos + size],
                         "comparison operators are not allowed", lineno, col)
            pos += size
        elif ch == ".":
            if prev is not None and prev.kind in (_NAME, _RPAR, _NUM):
                reason = "attribute access ('.') is not allowed"
            else:
                reason = "unexpected '.'"
            tok = _Token(_ERR, ".", reason, lineno, col)
            pos += 1
        else:
            if ch in _BAD_CHAR_REASONS:
                reason = _BAD_CHAR_REASONS[ch]
            elif ch.isprintable():
                reason = f"unexpected character {ch!r} (U+{ord(ch):04X})"
            else:
                reason = f"unexpected character U+{ord(ch):04X}"
            tok = _Token(_ERR, ch, reason, lineno, col)
            pos += 1
        prev = tok
        yield tok


class _TokenStream:
    """Token stream with one token of look-ahead and a token-count limit."""

    def __init__(self, text: str, lineno: int, pos: int = 0):
        self._it = _lex(text, lineno, pos)
        self._ahead: _Token | None = None
        self._count = 0

    def _pull(self) -> _Token:
        """Read one token from the lexer, enforcing the token limit."""
        tok = next(self._it)
        self._count += 1
        if self._count > MAX_TOKENS_PER_LINE:
            raise tok.error(f"line is too long (more than {MAX_TOKENS_PER_LINE} tokens)")
        return tok

    def peek(self) -> _Token:
        """Return the next token without consuming it."""
        if self._ahead is None:
            self._ahead = self._pull()
        return self._ahead

    def next(self) -> _Token:
        """Consume and return the next token; raise if it is an error token."""
        tok = self.peek()
        if tok.kind != _END:
            self._ahead = None
        if tok.kind == _ERR:
            raise tok.error(tok.value)
        return tok


# --------------------------------------------------------------------------
# Number helpers
# --------------------------------------------------------------------------

_NONFINITE = (S.ComplexInfinity, S.NaN, S.Infinity, S.NegativeInfinity)


def _float_log10(value: sympy.Float) -> float:
    """Return ``log10(|value|)`` of a SymPy Float (0 for zero)."""
    sign, man, exp, bc = value._mpf_
    if not man:
        return 0.0
    return (exp + bc) * _LOG10_2


def _num_digits(value: sympy.Expr) -> float:
    """Return the size of a number: its digits, or ``|log10|`` for a Float."""
    if value.is_Float:
        return abs(_float_log10(value))
    if value.is_Rational:
        p, q = abs(value.p), value.q
        if p <= 1 and q == 1:
            return 0.0
        return max(p.bit_length(), q.bit_length()) * _LOG10_2
    return 0.0


def _abs_float(value: sympy.Expr) -> float:
    """Return ``|value|`` as a float, ``inf`` when it does not fit."""
    try:
        out = abs(float(value))
    except (OverflowError, TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(out) else out


def _is_exact_root(expr: sympy.Expr) -> bool:
    """Return whether `expr` is ``Rational ** non-integer Rational``."""
    return (expr.is_Pow and expr.base.is_Rational and expr.exp.is_Rational
            and not expr.exp.is_Integer)


def _root_digits(expr: sympy.Expr) -> float:
    """Digits of exact numbers that SymPy may factor when `expr` is combined."""
    if expr.is_Rational:
        return _num_digits(expr)
    if _is_exact_root(expr):
        return _num_digits(expr.base)
    if expr.is_Mul:
        return sum(_num_digits(a.base) for a in expr.args if _is_exact_root(a))
    return 0.0


def _branchy(expr: sympy.Expr) -> bool:
    """Whether a non-integer power of `expr` makes SymPy analyse branch cuts."""
    return (expr.is_Pow and not expr.base.is_Number) or isinstance(expr, sympy.exp)


def _coeff_digits(expr: sympy.Expr) -> float:
    """Largest size of the numbers a power of `expr` would evaluate."""
    if expr.is_Number:
        return _num_digits(expr)
    if expr.is_Pow and expr.base.is_Number:
        return _num_digits(expr.base) * max(1.0, _abs_float(expr.exp))
    if expr.is_Mul:
        return max((_coeff_digits(a) for a in expr.args
                    if a.is_Number or (a.is_Pow and a.base.is_Number)), default=0.0)
    return 0.0


# --------------------------------------------------------------------------
# Expression parser
# --------------------------------------------------------------------------

_NUMBER_OPS = {_PLUS: operator.add, _MINUS: operator.sub, _STAR: operator.mul,
               _SLASH: operator.truediv}
_BINARY = {_PLUS: (1, False), _MINUS: (1, False), _STAR: (2, False),
           _SLASH: (2, False), _POW: (4, True)}
_UNARY_PREC = 3


class _Pending:
    """An n-ary sum or product still being collected (avoids quadratic work).

    Left-associative chains ``a + b + c`` are built as one ``Add(a, b, c)``
    instead of ``Add(Add(a, b), c)``; SymPy gives the same canonical result
    except for its two-argument distribution rule (``2*(x + y)`` becomes
    ``2*x + 2*y``), which `_ExprParser` reproduces by building the product
    early when it consists of rational numbers and a single sum.
    """

    __slots__ = ("op", "items", "tok", "nonrational", "nonnumber", "last")

    def __init__(self, op: str, first: sympy.Expr, tok: _Token):
        self.op = op
        self.items: list = []
        self.tok = tok
        self.nonrational = 0
        self.nonnumber = 0
        self.last: sympy.Expr | None = None
        self.append(first)

    def append(self, item: sympy.Expr) -> None:
        """Add one operand."""
        self.items.append(item)
        if not item.is_Rational:
            self.nonrational += 1
            self.last = item
        if not item.is_Number:
            self.nonnumber += 1

    def distributes(self) -> bool:
        """Whether the product is ``rationals * one sum`` (SymPy distributes it)."""
        return (self.op == "*" and len(self.items) > 1 and self.nonrational == 1
                and self.last.is_Add)


class _Marker:
    """An open parenthesis on the operator stack (a group or a call)."""

    __slots__ = ("tok", "func", "args")

    def __init__(self, tok: _Token, func: str | None = None):
        self.tok = tok
        self.func = func
        self.args: list = []


class _Oper:
    """A pending binary or unary operator on the operator stack."""

    __slots__ = ("tok", "prec", "unary")

    def __init__(self, tok: _Token, prec: int, unary: bool):
        self.tok = tok
        self.prec = prec
        self.unary = unary


class _ExprParser:
    """Build SymPy expressions from token streams under resource limits.

    Parameters
    ----------
    names : dict
        Normalised declared name -> ``sympy.Symbol``.
    time_declared : bool
        Whether a ``time:`` line was given (used for a hint only).
    work_limit : int
        Work budget shared by all expressions of a model.
    """

    def __init__(self, names: dict, time_declared: bool, work_limit: int,
                 time_limit: float = math.inf):
        self.names = names
        self.time_declared = time_declared
        self.work_limit = work_limit
        self.time_limit = time_limit
        self.deadline = time.process_time() + time_limit
        self.work = 0
        self.mass = 0.0
        self._sizes: dict[int, tuple[sympy.Basic, int]] = {}

    # -- budget -----------------------------------------------------------

    def charge(self, units: int, tok: _Token) -> None:
        """Add `units` to the work counter, raising when over budget."""
        self.work += units
        if self.work > self.work_limit:
            raise tok.error(f"model is too complex to parse (work limit exceeded: more than "
                            f"{self.work_limit} units; the limit is {BASE_WORK} + "
                            f"{WORK_PER_CHAR} per character of text)")
        self.check_time(tok)

    def check_time(self, tok: _Token) -> None:
        """Raise when the wall-clock part of the work budget is spent."""
        if time.process_time() > self.deadline:
            raise tok.error(f"model is too complex to parse (work limit exceeded: parsing "
                            f"took more than {self.time_limit:.2f} s; the limit is "
                            f"{BASE_SECONDS} s + {SECONDS_PER_CHAR * 1e6:g} us per character "
                            "of text; SymPy evaluates non-integer powers of powers and of "
                            "exponentials slowly)")

    def size(self, expr: sympy.Basic) -> int:
        """Return the number of nodes of `expr` (memoised, iterative)."""
        memo = self._sizes
        hit = memo.get(id(expr))
        if hit is not None:
            return hit[1]
        stack = [(expr, False)]
        while stack:
            node, ready = stack.pop()
            key = id(node)
            if key in memo:
                continue
            if not node.args:
                memo[key] = (node, 1)
            elif ready:
                memo[key] = (node, 1 + sum(memo[id(a)][1] for a in node.args))
            else:
                stack.append((node, True))
                stack.extend((a, False) for a in node.args if id(a) not in memo)
        return memo[id(expr)][1]

    def inspect_cost(self, *exprs: sympy.Basic) -> int:
        """Work units for an operation that may query assumptions of `exprs`."""
        return ASSUMPTION_COST * sum(self.size(e) for e in exprs)

    def mul_cost(self, items: list) -> int:
        """Work units for ``Mul(*items)``, which re-evaluates power factors."""
        units = len(items)
        for item in items:
            units += len(item.args)
            factors = item.args if item.is_Mul else (item,)
            for f in factors:
                if f.is_Pow and not f.exp.is_Integer:
                    units += self.inspect_cost(f)
        return units

    def add_mass(self, digits: float, tok: _Token) -> None:
        """Account for `digits` of new exact numbers in this expression."""
        self.mass += digits
        if self.mass > MAX_EXACT_DIGITS:
            raise tok.error("numeric constants in this expression are too large "
                            f"(more than {MAX_EXACT_DIGITS} digits in total)")

    def check(self, expr: sympy.Expr, tok: _Token, what: str) -> sympy.Expr:
        """Reject infinite/undefined results and oversized constants."""
        heads = (expr,) + (expr.args[:1] if (expr.is_Add or expr.is_Mul) else ())
        for head in heads:
            if head is S.ComplexInfinity:
                raise tok.error(f"{what} is undefined here (division by zero or a pole)")
            if any(head is bad for bad in _NONFINITE):
                raise tok.error(f"{what} is undefined here (infinite or NaN value)")
            if head.is_Float and abs(_float_log10(head)) > MAX_FLOAT_EXP10:
                raise tok.error(f"{what} gives a number out of range "
                                f"(beyond 1e{MAX_FLOAT_EXP10})")
        if _root_digits(expr) > MAX_ROOT_DIGITS and not expr.is_Rational:
            raise tok.error(self._root_reason())
        return expr

    @staticmethod
    def _root_reason() -> str:
        return ("exact roots of large numbers are not supported "
                f"(more than {MAX_ROOT_DIGITS} digits); use a decimal number")

    # -- building blocks ----------------------------------------------------

    def number(self, tok: _Token) -> sympy.Expr:
        """Convert a number token to an Integer or a 17-digit Float."""
        m = tok.value
        digits = len(m.group("int")) + len(m.group("frac") or "")
        if digits > MAX_LITERAL_DIGITS:
            raise tok.error(f"number literal is too long ({digits} digits; "
                            f"limit {MAX_LITERAL_DIGITS})")
        exp = m.group("exp")
        if m.group("dot") is None and exp is None:
            self.add_mass(digits, tok)
            self.charge(1, tok)
            return sympy.Integer(int(m.group()))
        if exp is not None:
            body = exp.lstrip("+-").lstrip("0")
            if len(body) > 6 or (body and int(body) > MAX_LITERAL_EXPONENT):
                raise tok.error("exponent of number literal is out of range "
                                f"(limit {MAX_LITERAL_EXPONENT})")
        self.charge(1, tok)
        return self.check(sympy.Float(m.group(), 17), tok, "number literal")

    def name(self, tok: _Token) -> sympy.Expr:
        """Resolve a name token that is not followed by ``(``."""
        value = tok.value
        if value in self.names:
            self.charge(1, tok)
            return self.names[value]
        if value in _CONSTANTS:
            self.charge(1, tok)
            return _CONSTANTS[value]
        if value in _FUNCTIONS:
            raise tok.error(f"function {tok.text!r} must be called with arguments, "
                            f"e.g. {tok.text}(x)")
        if value == "t" and not self.time_declared:
            raise tok.error("unknown name 't' (add a 'time: t' line to use the time "
                            "variable in equations)")
        raise tok.error(f"unknown name {tok.text!r}")

    def function(self, tok: _Token) -> str:
        """Validate a name token followed by ``(`` and return the function name."""
        value = tok.value
        if value in _FUNCTIONS:
            return value
        if value in self.names or value in _CONSTANTS:
            raise tok.error(f"{tok.text!r} is not a function (implicit multiplication "
                            f"is not supported; write {tok.text}*(...))")
        raise tok.error(f"unknown function {tok.text!r}")

    def finish(self, value: Any) -> sympy.Expr:
        """Turn a pending sum/product into a SymPy expression."""
        if not isinstance(value, _Pending):
            return value
        items = value.items
        if value.op == "+":
            self.charge(len(items) + sum(len(i.args) for i in items), value.tok)
            return self.build(sympy.Add, items, value.tok, "sum")
        self.charge(self.mul_cost(items), value.tok)
        if sum(_root_digits(i) for i in items if not i.is_Rational) > MAX_ROOT_DIGITS:
            raise value.tok.error(self._root_reason())
        return self.build(sympy.Mul, items, value.tok, "product")

    def negate(self, expr: sympy.Expr, tok: _Token) -> sympy.Expr:
        """Return ``-expr``."""
        if expr.is_Number:
            return -expr
        self.charge(self.mul_cost([S.NegativeOne, expr]), tok)
        return self.build(sympy.Mul, [S.NegativeOne, expr], tok, "negation")

    def power(self, base: sympy.Expr, exp: sympy.Expr, tok: _Token) -> sympy.Expr:
        """Return ``base ** exp`` after bounding the size of the result."""
        if exp.is_Integer:
            self.charge(2 + len(base.args), tok)
        else:
            units = self.inspect_cost(base, exp)
            factors = base.args if base.is_Mul else (base,)
            units += BRANCH_COST * sum(self.size(f) for f in factors if _branchy(f))
            self.charge(units, tok)
        if exp.is_Number:
            if base.is_Number and base.is_zero and exp.is_negative:
                raise tok.error("division by zero")
            if exp.is_Rational and not exp.is_Integer:
                if _root_digits(base) > MAX_ROOT_DIGITS:
                    raise tok.error(self._root_reason())
            floaty = exp.is_Float or (base.is_Number and base.is_Float)
            if base.is_Number:
                if not base.is_Float and abs(base) == 1 or base.is_zero:
                    size = 0.0
                else:
                    size = _num_digits(base)
            else:
                size = _coeff_digits(base)
            estimate = _abs_float(exp) * size if size else 0.0
            if floaty and base.is_Number:
                if estimate > MAX_FLOAT_EXP10:
                    raise tok.error("power gives a number out of range "
                                    f"(beyond 1e{MAX_FLOAT_EXP10})")
            elif estimate > MAX_EXACT_DIGITS:
                raise tok.error("constant power is too large to evaluate "
                                f"(about {estimate:.3g} digits; limit {MAX_EXACT_DIGITS})")
            else:
                self.add_mass(estimate, tok)
        return self.build(sympy.Pow, [base, exp], tok, "power")

    def call(self, marker: _Marker) -> sympy.Expr:
        """Apply the whitelisted function of `marker` to its arguments."""
        tok = marker.tok
        builder, lo, hi = _FUNCTIONS[marker.func]
        args = marker.args
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise tok.error(f"function {tok.text!r} takes {want} argument"
                            f"{'' if want == '1' else 's'} (got {len(args)})")
        return builder(self, args, tok)

    def call_plain(self, func: Callable, args: list, tok: _Token) -> sympy.Expr:
        """Apply a SymPy function, evaluating it only for small arguments."""
        what = f"{tok.text}(...)"
        if not self.evaluable(args):
            # Unevaluated Min/Max still sort their arguments.
            self.charge(len(args) + (sum(self.size(a) for a in args) if len(args) > 1 else 0),
                        tok)
            return self.build(lambda *a: func(*a, evaluate=False), args, tok, what)
        units = ASSUMPTION_COST * sum(self.size(a) for a in args)
        self.charge(units * len(args) * len(args), tok)
        return self.build(func, args, tok, what)

    def evaluable(self, args: list) -> bool:
        """Whether a call on `args` may be evaluated: small and symbol-free."""
        if sum(self.size(a) for a in args) > FUNC_EVAL_NODES:
            return False
        return not any(a.free_symbols for a in args)

    def divide(self, num: sympy.Expr, den: sympy.Expr, tok: _Token) -> sympy.Expr:
        """Return ``num / den``, rejecting a literal zero denominator."""
        if den.is_Number and den.is_zero:
            raise tok.error("division by zero")
        items = [num, self.power(den, S.NegativeOne, tok)]
        self.charge(self.mul_cost(items), tok)
        return self.build(sympy.Mul, items, tok, "quotient")

    def build(self, func: Callable, args: list, tok: _Token, what: str) -> sympy.Expr:
        """Call a SymPy constructor, turning its failures into parse errors."""
        try:
            result = func(*args)
            self.check_time(tok)
        except ModelParseError:
            raise
        except RecursionError:
            raise tok.error(f"{what} is too complex for SymPy to build") from None
        except (ArithmeticError, ValueError, TypeError, NotImplementedError) as exc:
            raise tok.error(f"{what} cannot be built ({type(exc).__name__}: {exc})") from None
        return self.check(result, tok, what)

    # -- the parser proper ----------------------------------------------------

    def _apply(self, op: _Oper, vals: list) -> None:
        tok = op.tok
        if op.unary:
            value = vals.pop()
            if tok.kind == _MINUS:
                vals.append(self.negate(self.finish(value), tok))
            else:
                vals.append(value)
            return
        right = vals.pop()
        left = vals.pop()
        kind = tok.kind
        if kind == _POW:
            vals.append(self.power(self.finish(left), self.finish(right), tok))
            return
        group = "+" if kind in (_PLUS, _MINUS) else "*"
        right = self.finish(right)
        if isinstance(left, _Pending) and left.nonnumber == 0:
            left = self.finish(left)  # a plain number
        if not isinstance(left, _Pending) and left.is_Number and right.is_Number:
            # Number arithmetic exactly as SymPy's Python operators do it
            # (e.g. Float/Integer divides directly instead of multiplying
            # by a rounded reciprocal).
            if kind == _SLASH and right.is_zero:
                raise tok.error("division by zero")
            self.charge(1, tok)
            vals.append(self.build(_NUMBER_OPS[kind], [left, right], tok, "constant"))
            return
        if isinstance(left, _Pending) and left.op == group and not left.distributes():
            acc = left
        else:
            acc = _Pending(group, self.finish(left), tok)
        if kind == _MINUS:
            acc.append(self.negate(right, tok))
        elif kind == _SLASH:
            if right.is_Number and right.is_zero:
                raise tok.error("division by zero")
            acc.append(self.power(right, S.NegativeOne, tok))
        else:
            acc.append(right)
        self.charge(1, tok)
        vals.append(acc)

    @staticmethod
    def _push(ops: list, item: Any) -> None:
        ops.append(item)
        if len(ops) > MAX_DEPTH:
            raise item.tok.error(f"expression nested too deeply (more than {MAX_DEPTH} "
                                 "levels of parentheses, signs or powers)")

    def _reduce(self, ops: list, vals: list) -> None:
        """Apply operators down to the nearest open parenthesis."""
        while ops and isinstance(ops[-1], _Oper):
            self._apply(ops.pop(), vals)

    def parse(self, ts: _TokenStream) -> sympy.Expr:
        """Parse tokens up to the end of the line into a SymPy expression."""
        self.mass = 0.0
        self._sizes = {}
        ops: list = []
        vals: list = []
        operand = True
        while True:
            tok = ts.next()
            kind = tok.kind
            if operand:
                if kind == _NUM:
                    vals.append(self.number(tok))
                    operand = False
                elif kind == _NAME:
                    if ts.peek().kind == _LPAR:
                        func = self.function(tok)
                        ts.next()
                        self._push(ops, _Marker(tok, func))
                    else:
                        vals.append(self.name(tok))
                        operand = False
                elif kind == _LPAR:
                    self._push(ops, _Marker(tok))
                elif kind in (_PLUS, _MINUS):
                    self._push(ops, _Oper(tok, _UNARY_PREC, True))
                elif kind == _RPAR and ops and isinstance(ops[-1], _Marker):
                    top = ops[-1]
                    if top.func is None:
                        raise tok.error("empty parentheses")
                    if top.args:
                        raise tok.error("missing function argument before ')'")
                    ops.pop()
                    vals.append(self.call(top))
                    operand = False
                else:
                    raise self._unexpected(tok, operand=True)
            else:
                if kind in _BINARY:
                    prec, right_assoc = _BINARY[kind]
                    while ops and isinstance(ops[-1], _Oper) and (
                            ops[-1].prec > prec or (ops[-1].prec == prec and not right_assoc)):
                        self._apply(ops.pop(), vals)
                    self._push(ops, _Oper(tok, prec, False))
                    operand = True
                elif kind == _COMMA:
                    self._reduce(ops, vals)
                    if not ops or ops[-1].func is None:
                        raise tok.error("commas are only allowed between function arguments")
                    marker = ops[-1]
                    marker.args.append(self.finish(vals.pop()))
                    _, _, hi = _FUNCTIONS[marker.func]
                    if len(marker.args) >= hi:
                        raise tok.error(f"too many arguments for function "
                                        f"{marker.tok.text!r} (at most {hi})")
                    operand = True
                elif kind == _RPAR:
                    self._reduce(ops, vals)
                    if not ops:
                        raise tok.error("unmatched ')'")
                    marker = ops.pop()
                    if marker.func is not None:
                        marker.args.append(self.finish(vals.pop()))
                        vals.append(self.call(marker))
                elif kind == _END:
                    self._reduce(ops, vals)
                    if ops:
                        raise ops[-1].tok.error("unclosed '('")
                    return self.finish(vals.pop())
                else:
                    raise self._unexpected(tok, operand=False)

    @staticmethod
    def _unexpected(tok: _Token, operand: bool) -> ModelParseError:
        kind = tok.kind
        if kind == _QUOTE:
            return tok.error("string constants are not allowed")
        if kind == _EQ:
            return tok.error("unexpected '=' (assignments and keyword arguments "
                             "are not allowed)")
        if kind == _COLON:
            return tok.error("unexpected ':'")
        if kind == _COMMA:
            return tok.error("unexpected ',' (commas are only allowed between "
                             "function arguments)")
        if kind == _END:
            return tok.error("expression is incomplete")
        if kind == _RPAR:
            return tok.error("unexpected ')'" if not operand else
                             "expected an operand before ')'")
        if operand:
            return tok.error(f"expected an operand, got {tok.describe()}")
        if kind in (_NUM, _NAME, _LPAR):
            return tok.error(f"expected an operator before {tok.describe()} "
                             "(implicit multiplication is not supported; use '*')")
        return tok.error(f"unexpected {tok.describe()}")


def _check_real(expr: sympy.Expr, tok: _Token, parser: _ExprParser) -> None:
    """Reject expressions containing complex or non-finite constants."""
    stack = [expr]
    seen = set()
    while stack:
        node = stack.pop()
        if not node.args:
            if node is S.ImaginaryUnit:
                raise tok.error("expression has a complex (non-real) constant value")
            if any(node is bad for bad in _NONFINITE):
                raise tok.error("expression is undefined (infinite or NaN value)")
            continue
        key = id(node)
        if key in seen:
            continue
        seen.add(key)
        parser.charge(1, tok)
        if (node.is_Pow and node.base.is_Number and node.base.is_negative
                and node.exp.is_Number and not node.exp.is_Integer):
            raise tok.error("expression has a complex (non-real) constant value")
        stack.extend(node.args)


# --------------------------------------------------------------------------
# Statement level
# --------------------------------------------------------------------------


class _Decl:
    """A declared name with its position."""

    __slots__ = ("raw", "name", "kind", "line", "col")

    def __init__(self, raw: str, name: str, kind: str, line: int, col: int):
        self.raw = raw
        self.name = name
        self.kind = kind
        self.line = line
        self.col = col


def _name_list(ts: _TokenStream, key_tok: _Token, allow_empty: bool) -> list[_Token]:
    """Parse ``name, name, ...`` up to the end of the line."""
    out: list[_Token] = []
    tok = ts.next()
    if tok.kind == _END:
        if allow_empty:
            return out
        raise tok.error(f"'{key_tok.text}:' needs at least one name")
    while True:
        if tok.kind != _NAME:
            raise tok.error(f"expected a name, got {tok.describe()}")
        out.append(tok)
        sep = ts.next()
        if sep.kind == _END:
            return out
        if sep.kind != _COMMA:
            raise sep.error(f"expected ',' between names, got {sep.describe()}")
        tok = ts.next()


def _number_list(ts: _TokenStream, key_tok: _Token) -> tuple[float, ...]:
    """Parse ``number, number, ...`` (each with an optional sign) as floats."""
    values: list[float] = []
    while True:
        tok = ts.next()
        sign = 1.0
        if tok.kind in (_PLUS, _MINUS):
            sign = -1.0 if tok.kind == _MINUS else 1.0
            tok = ts.next()
        if tok.kind != _NUM:
            if tok.kind == _END and not values:
                raise tok.error(f"'{key_tok.text}:' needs at least one number")
            raise tok.error(f"expected a number, got {tok.describe()}")
        m = tok.value
        digits = len(m.group("int")) + len(m.group("frac") or "")
        if digits > MAX_LITERAL_DIGITS:
            raise tok.error(f"number literal is too long ({digits} digits; "
                            f"limit {MAX_LITERAL_DIGITS})")
        exp = (m.group("exp") or "").lstrip("+-").lstrip("0")
        if len(exp) > 6:
            raise tok.error("number is out of range")
        value = sign * float(m.group())
        if not math.isfinite(value):
            raise tok.error("number is out of range")
        values.append(value)
        sep = ts.next()
        if sep.kind == _END:
            return tuple(values)
        if sep.kind != _COMMA:
            raise sep.error(f"expected ',' between numbers, got {sep.describe()}")


def _locate(text: str, index: int) -> tuple[int, int]:
    """Return the 1-based (line, col) of character `index` in `text`."""
    line = text.count("\n", 0, index) + 1
    start = text.rfind("\n", 0, index) + 1
    return line, index - start + 1


def parse_model_text(text: str) -> ParsedModel:
    """Parse a model written in symode's text format into a `ParsedModel`.

    Parameters
    ----------
    text : str
        The model text (see the module documentation for the format).

    Returns
    -------
    ParsedModel
        States, parameters, time symbol, right-hand sides, defaults and name.

    Raises
    ------
    ModelParseError
        If the text is malformed, uses anything outside the allowed grammar,
        or exceeds a resource limit; the error names the problem and its
        line and column.
    TypeError
        If `text` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"model text must be str, not {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        line, col = _locate(text, MAX_TEXT_CHARS)
        raise _error(f"model text is too long ({len(text)} characters; "
                     f"limit {MAX_TEXT_CHARS})", line, col)
    if text.startswith("\ufeff"):
        text = text[1:]
    bad = _BAD_TEXT_RE.search(text)
    if bad:
        line, col = _locate(text, bad.start())
        raise _error(f"control or invisible character U+{ord(bad.group()[0]):04X} "
                     "is not allowed", line, col)

    keys: dict[str, _Token] = {}
    decls: dict[str, _Decl] = {}
    ordered: dict[str, list[_Decl]] = {"state": [], "param": [], "time": []}
    defaults: dict[str, tuple[float, ...]] = {}
    model_name: str | None = None
    equations: list[tuple[int, str]] = []

    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        hash_at = line.find("#")
        code = line if hash_at < 0 else line[:hash_at]
        if not code.strip():
            continue
        m = _KEY_RE.match(code)
        if m is None:
            equations.append((lineno, code))
            continue
        key = m.group(1)
        key_tok = _Token(_NAME, key, key, lineno, m.start(1) + 1)
        if key not in _KEYS:
            raise key_tok.error(f"unknown key {key!r} (expected one of: "
                                f"{', '.join(_KEYS)})")
        if key in keys:
            raise key_tok.error(f"duplicate '{key}:' line (first at line {keys[key].line})")
        keys[key] = key_tok
        if key == "name":
            value = code[m.end():].strip()
            if not value:
                raise key_tok.error("'name:' needs a value")
            model_name = value
            continue
        ts = _TokenStream(code, lineno, m.end())
        if key in ("z0", "theta"):
            defaults[key] = _number_list(ts, key_tok)
            continue
        kind = {"states": "state", "params": "param", "time": "time"}[key]
        toks = _name_list(ts, key_tok, allow_empty=(key == "params"))
        if key == "time" and len(toks) != 1:
            raise toks[1].error("'time:' takes exactly one name")
        for tok in toks:
            value = tok.value
            if value in RESERVED_NAMES:
                raise tok.error(f"name {tok.text!r} is reserved")
            if value in decls:
                first = decls[value]
                if first.raw != tok.text:
                    raise tok.error(f"name {tok.text!r} collides with {first.raw!r} "
                                    f"(line {first.line}, col {first.col}) after "
                                    "Unicode normalisation")
                raise tok.error(f"name {tok.text!r} declared twice (first at line "
                                f"{first.line}, col {first.col})")
            decl = _Decl(tok.text, value, kind, tok.line, tok.col)
            decls[value] = decl
            ordered[kind].append(decl)

    if "states" not in keys:
        raise _error("missing 'states:' line", 1, 1)
    time_declared = "time" in keys
    time_name = ordered["time"][0].name if time_declared else "t"
    if not time_declared and "t" in decls:
        d = decls["t"]
        raise _error("name 't' is the default time variable; add a 'time:' line with "
                     "another name to use 't' as a state or parameter", d.line, d.col)

    symbols = {name: sympy.Symbol(name) for name in decls}
    # Expressions are built with real symbols: symode's models are real, and SymPy answers assumption queries
    # about functions of real symbols directly, whereas for complex symbols its automatic evaluation of
    # non-integer powers (e.g. ``sqrt(cosh(x + a)^2)``) analyses branch cuts with ``arg``, ``floor`` and
    # ``Mod`` (tens of milliseconds per term). The results are renamed to the plain symbols at the end
    # without re-evaluation (`_rename`).
    real = {name: sympy.Symbol(name, real=True) for name in decls}
    to_plain = {real[name]: symbols[name] for name in decls}
    parser = _ExprParser(real, time_declared,
                         BASE_WORK + WORK_PER_CHAR * len(text),
                         BASE_SECONDS + SECONDS_PER_CHAR * len(text))
    rhs: dict[str, sympy.Expr] = {}
    first_eq: dict[str, int] = {}
    for lineno, code in equations:
        ts = _TokenStream(code, lineno)
        state, state_tok = _equation_head(ts, time_name)
        decl = decls.get(state)
        if decl is None:
            raise state_tok.error(f"equation for undeclared state {state_tok.text!r}")
        if decl.kind != "state":
            what = "a parameter" if decl.kind == "param" else "the time variable"
            raise state_tok.error(f"{state_tok.text!r} is {what}, not a state")
        if state in rhs:
            raise state_tok.error(f"duplicate equation for state {state_tok.text!r} "
                                  f"(first at line {first_eq[state]})")
        start = ts.peek()
        if start.kind == _END:
            raise start.error("missing expression after '='")
        expr = parser.parse(ts)
        _check_real(expr, start, parser)
        rhs[state] = _rename(expr, to_plain, parser, start)
        first_eq[state] = lineno

    for decl in ordered["state"]:
        if decl.name not in rhs:
            raise _error(f"missing equation for state {decl.raw!r}", decl.line, decl.col)

    for key, kind, what in (("z0", "state", "states"), ("theta", "param", "parameters")):
        if key in defaults and len(defaults[key]) != len(ordered[kind]):
            raise keys[key].error(f"'{key}:' has {len(defaults[key])} values but there are "
                                  f"{len(ordered[kind])} {what}")

    return ParsedModel(
        states=tuple(symbols[d.name] for d in ordered["state"]),
        params=tuple(symbols[d.name] for d in ordered["param"]),
        t=symbols[time_name] if time_declared else None,
        rhs=tuple(rhs[d.name] for d in ordered["state"]),
        defaults=defaults,
        name=model_name,
    )


def _rename(expr: sympy.Expr, sub: dict, parser: _ExprParser, tok: _Token) -> sympy.Expr:
    """Replace symbols by `sub` without re-evaluating any node (iterative; the structure is kept).

    Add and Mul keep their argument order (SymPy orders symbols by name, which the renaming keeps);
    powers and functions are rebuilt unevaluated.
    """
    memo: dict = {}
    stack = [(expr, False)]
    while stack:
        node, ready = stack.pop()
        if node in memo:
            continue
        if not node.args:
            memo[node] = sub.get(node, node)
            continue
        if not ready:
            stack.append((node, True))
            stack.extend((a, False) for a in node.args if a not in memo)
            continue
        parser.charge(1, tok)
        args = tuple(memo[a] for a in node.args)
        if all(new is old for new, old in zip(args, node.args)):
            memo[node] = node
        elif node.is_Add or node.is_Mul:
            memo[node] = node.func._from_args(args, node.is_commutative)
        else:
            memo[node] = node.func(*args, evaluate=False)
    return memo[expr]


def _equation_head(ts: _TokenStream, time_name: str) -> tuple[str, _Token]:
    """Parse ``dx/dt =`` or ``x' =``; return the state name and its token."""
    tok = ts.next()
    hint = "expected an equation such as 'dx/dt = ...' or \"x' = ...\""
    if tok.kind != _NAME:
        raise tok.error(f"{hint}, got {tok.describe()}")
    after = ts.peek()
    if after.kind == _QUOTE and after.text == "'":
        ts.next()
        state, state_tok = tok.value, tok
    elif after.kind == _SLASH and tok.value.startswith("d") and len(tok.value) > 1:
        ts.next()
        den = ts.next()
        expected = "d" + time_name
        if den.kind != _NAME or den.value != expected:
            raise den.error(f"derivative must be with respect to the time variable "
                            f"{time_name!r} (expected {expected!r}, got {den.describe()})")
        state = tok.value[1:]
        state_tok = _Token(_NAME, tok.text[1:], state, tok.line, tok.col + 1)
    else:
        raise tok.error(hint)
    eq = ts.next()
    if eq.kind != _EQ:
        raise eq.error(f"expected '=', got {eq.describe()}")
    return state, state_tok


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def parse_model_file(path: str | os.PathLike) -> ParsedModel:
    """Read a UTF-8 model file and parse it with `parse_model_text`.

    Parameters
    ----------
    path : str or os.PathLike
        Path of the model file.

    Returns
    -------
    ParsedModel
        The parsed model.

    Raises
    ------
    ModelParseError
        If the file is missing, is not a regular file, is too large, is not
        valid UTF-8 text (binary content), or its text does not parse.  Errors
        about the file as a whole have ``line`` and ``col`` set to ``None``.
    """
    shown = os.fsdecode(os.fspath(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _error(f"model file {shown!r} not found", None, None) from None
    except OSError as exc:
        raise _error(f"cannot access model file {shown!r}: {exc.strerror or exc}",
                     None, None) from None
    if stat.S_ISDIR(info.st_mode):
        raise _error(f"model file {shown!r} is a directory", None, None)
    if not stat.S_ISREG(info.st_mode):
        raise _error(f"model file {shown!r} is not a regular file", None, None)
    if info.st_size > MAX_FILE_BYTES:
        raise _error(f"model file {shown!r} is too large ({info.st_size} bytes; "
                     f"limit {MAX_FILE_BYTES})", None, None)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _error(f"cannot read model file {shown!r}: {exc.strerror or exc}",
                     None, None) from None
    if len(data) > MAX_FILE_BYTES:
        raise _error(f"model file {shown!r} is too large (limit {MAX_FILE_BYTES} bytes)",
                     None, None)
    return parse_model_text(_decode(data, shown))


def _byte_position(data: bytes, index: int) -> tuple[int, int]:
    """Return the 1-based (line, col) of byte `index`, counting characters."""
    line = data.count(b"\n", 0, index) + 1
    start = data.rfind(b"\n", 0, index) + 1
    col = len(data[start:index].decode("utf-8", errors="replace")) + 1
    return line, col


def _decode(data: bytes, shown: str) -> str:
    """Decode model file bytes as UTF-8 text, rejecting binary content."""
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _byte_position(data, nul)
        raise _error(f"model file {shown!r} contains binary data (NUL byte), "
                     "not UTF-8 text", line, col)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _byte_position(data, exc.start)
        raise _error(f"model file {shown!r} is not valid UTF-8 text (invalid byte "
                     f"0x{data[exc.start]:02x})", line, col) from None
