"""Regression tests for the symbolic layer's defects from the adversarial trial (issue 20): parser cost,
unsupported functions, deep nesting, numbers outside float64, invalid network sizes."""
import time

import pytest
import sympy as sp

import symode
import symode._parse as parse_mod
from symode import nn
from symode._parse import ModelParseError, parse_model_text
from symode._symbolic import derivatives as derivatives_mod
from symode._symbolic.model import MAX_EXPRESSION_DEPTH, SymbolicModel

x, y, a = sp.symbols("x y a")


# ---------------------------------------------------------------- (8) parser cost of sqrt(cosh(...)^2) terms

def _root_terms_text(n_lines, per_line):
    lines = [f"dx{k}/dt = " + " + ".join(f"sqrt(cosh(x{k} + {per_line * k + i}*a)^2)" for i in range(per_line))
             for k in range(n_lines)]
    return "states: " + ", ".join(f"x{k}" for k in range(n_lines)) + "\nparams: a\n" + "\n".join(lines)


def _cpu(fn):
    t0 = time.process_time()
    try:
        out = fn()
    except ModelParseError as exc:
        out = exc
    return time.process_time() - t0, out


def test_parser_root_of_power_terms_are_cheap():
    # ~1.1 ms a character before the fix: SymPy analysed branch cuts (arg, floor, Mod) of every
    # sqrt(cosh(u)^2) with complex symbols; 30 terms took ~1.5 s.
    text = _root_terms_text(1, 30)
    parse_model_text("states: x\nparams: a\ndx/dt = sqrt(cosh(x + 1000*a)^2)")  # imports, caches
    cpu, out = _cpu(lambda: parse_model_text(text))
    assert not isinstance(out, Exception), out
    assert cpu < 0.5, cpu
    x0 = sp.Symbol("x0")
    assert out.rhs[0].has(sp.cosh(x0 + a)) and not out.rhs[0].has(sp.sqrt(sp.cosh(x0 + a) ** 2))
    assert out.states == (x0,)  # plain symbols for the user


def test_parser_large_hostile_text_is_bounded():
    # A 33 kB text of such terms: 32 s before the fix, finally rejected by the work limit.
    text = _root_terms_text(20, 60)
    assert len(text) > 30_000
    cpu, out = _cpu(lambda: parse_model_text(text))
    assert cpu < 6.0, cpu
    assert isinstance(out, ModelParseError) and "work limit" in str(out)
    assert "per character" in str(out)  # names the limit


def test_parser_time_budget_names_its_limit(monkeypatch):
    monkeypatch.setattr(parse_mod, "BASE_SECONDS", 0.0)
    monkeypatch.setattr(parse_mod, "SECONDS_PER_CHAR", 0.0)
    with pytest.raises(ModelParseError, match=r"work limit exceeded: parsing took more than 0.00 s.*per "
                                              r"character"):
        parse_model_text("states: x\nparams: a\ndx/dt = exp(x + a)^0.5 + sqrt(cosh(x)^2)")


def test_parser_still_never_calls_an_evaluator():
    src = open(parse_mod.__file__, encoding="utf-8").read()
    for word in ("eval(", "exec(", "sympify", "parse_expr", "literal_eval"):
        assert word not in src


def test_parsed_model_builds_the_same_ode_as_python():
    spec = parse_model_text("states: x\nparams: a\ndx/dt = sqrt(x^2) + a*x^(3/2) + abs(x)^2")
    m = symode.ODE.from_text("states: x\nparams: a\ndx/dt = sqrt(x^2) + a*x^(3/2) + abs(x)^2")
    ref = symode.ODE([sp.sqrt(x ** 2) + a * x ** sp.Rational(3, 2) + sp.Abs(x) ** 2], [x], [a])
    assert m._sym.rhs_c == ref._sym.rhs_c
    assert spec.states == (x,) and spec.params == (a,)


# ---------------------------------------------------------------- (18) unsupported functions at construction

@pytest.mark.parametrize("expr", [sp.floor(x), sp.ceiling(x), sp.frac(x), sp.Mod(x, 2), sp.KroneckerDelta(x, a),
                                  sp.gamma(x), sp.factorial(x), sp.loggamma(x), sp.cot(x), sp.besselj(0, x)])
def test_unsupported_functions_are_refused_in_the_constructor(expr):
    with pytest.raises(symode.UnsupportedExpressionError) as e:
        symode.ODE([expr * a + x], [x], [a])
    msg = str(e.value)
    assert "Supported:" in msg and "sin" in msg and "Piecewise" in msg
    assert f"uses `{expr.func.__name__}`" in msg  # the function the user wrote, not one of its derivative


@pytest.mark.parametrize("expr", [
    sp.sin(x) + sp.cos(a * x) + sp.tan(x) + sp.asin(x / 3) + sp.acos(x / 3) + sp.atan(x) + sp.atan2(x, a + 2),
    sp.sinh(x) + sp.cosh(x) + sp.tanh(x) + sp.asinh(x) + sp.acosh(x + 2) + sp.atanh(x / 3),
    sp.exp(x) + sp.log(x + 3) + sp.sqrt(x + 3) + sp.cbrt(x + 3) + sp.Abs(x) + sp.sign(x) + sp.Heaviside(x),
    sp.Min(x, a) + sp.Max(x, a, 1) + sp.erf(x) + sp.erfc(x) + sp.Piecewise((x, sp.And(x > 0, x < 1)), (a, True)),
    sp.pi * x + sp.E * a + sp.EulerGamma + sp.Rational(1, 3) * x + 0.5 * x,
])
def test_supported_functions_are_accepted_and_differentiated(expr):
    m = SymbolicModel([expr], [x], [a])
    d = derivatives_mod.derivatives(m)
    assert d.jac_z


def test_supported_functions_print_with_their_derivatives():
    from symode._codegen.emit import emit_module

    expr = (sp.sin(x) * sp.atan2(x, a + 2) + sp.acosh(x + 2) + sp.erf(x) + sp.Max(x, a) + sp.Abs(x) * sp.sign(x)
            + sp.Heaviside(x) + sp.Piecewise((x ** 2, x > a), (a, True)))
    m = SymbolicModel([expr], [x], [a])
    emit_module(m, derivatives_mod.derivatives(m), "k", "v")


# ---------------------------------------------------------------- (7) deep nesting

def _nest(depth, step):
    e = x
    for _ in range(depth):
        e = step(e)
    return e


@pytest.mark.parametrize("build", [lambda: _nest(150, sp.sin), lambda: _nest(300, lambda e: (e + 1) * x),
                                   lambda: _nest(5000, lambda e: sp.sin(e, evaluate=False))])
def test_deep_nesting_is_refused_at_construction(build):
    expr = build()
    t0 = time.perf_counter()
    with pytest.raises(symode.ModelTooLargeError, match=f"nested more than {MAX_EXPRESSION_DEPTH} levels"):
        symode.ODE([expr], [x])
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("depth", [150, 5000])
def test_deep_nesting_in_network_inputs_is_refused(depth):
    blk = nn.dense([_nest(depth, lambda e: sp.sin(e, evaluate=False))], 2, name="deep")
    with pytest.raises(symode.ModelTooLargeError, match="input 0 of network block 'deep'"):
        symode.ODE([blk[0], blk[1]], [x, y], params=list(blk.params))


def test_deepest_allowed_nesting_differentiates():
    m = symode.ODE([_nest(MAX_EXPRESSION_DEPTH - 1, sp.sin)], [x])
    assert m.jac_z_expr.shape == (1, 1)


def test_derivatives_turn_recursion_errors_into_model_errors(monkeypatch):
    m = SymbolicModel([sp.sin(x) * a], [x], [a])

    def boom(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(derivatives_mod.sp, "diff", boom)
    with pytest.raises(symode.ModelTooLargeError, match="recursion limit"):
        derivatives_mod.derivatives(m)


# ---------------------------------------------------------------- (19) numbers outside float64

@pytest.mark.parametrize("expr, fragment", [
    (10 ** 400 * x, "outside the float64 range"),
    (x ** (10 ** 400), "outside the float64 range"),
    (sp.Float("1e400") * x, "outside the float64 range"),
    (sp.Rational(1, 10 ** 400) * x, "underflows to 0"),
])
def test_numbers_outside_float64_are_refused(expr, fragment):
    with pytest.raises(symode.ModelError, match=fragment) as e:
        symode.ODE([expr], [x])
    assert "characters" in str(e.value) or "e+400" in str(e.value) or "e-400" in str(e.value) \
        or "1e400" in str(e.value)


def test_large_but_finite_numbers_are_kept():
    m = symode.ODE([10 ** 300 * x + sp.Float("1e-300") * x], [x])
    assert m.n_states == 1


# ---------------------------------------------------------------- (20) nn argument validation

@pytest.mark.parametrize("call, fragment", [
    (lambda: nn.mlp([x], [2.5, 2]), "integer"),
    (lambda: nn.mlp([x], [2, 2.0000001]), "integer"),
    (lambda: nn.mlp([x], ["3", 2]), "integer"),
    (lambda: nn.mlp([x], [True, 2]), "integer"),
    (lambda: nn.mlp([x], [3, -1]), "positive"),
    (lambda: nn.mlp([x], 3), "sequence"),
    (lambda: nn.dense([x], 2.5), "integer"),
    (lambda: nn.dense([x], 0), "positive"),
    (lambda: nn.dense([x], 2, bias="yes"), "bias"),
    (lambda: nn.mlp([x], [3, 2], bias=[True, "no"]), "bias"),
    (lambda: nn.dense([x], 2, name=3), "name"),
    (lambda: nn.mlp([x], [3, 2], activation=5), "activation"),
])
def test_nn_refuses_invalid_arguments(call, fragment):
    with pytest.raises(symode.ModelError, match=fragment):
        call()


def test_nn_accepts_integral_sizes():
    import numpy as np

    blk = nn.mlp([x], [np.int64(3), 2.0], name="ok")
    assert [L.n_out for L in blk.layers] == [3, 2]


# ---------------------------------------------------------------- structure: networks in the symbolic layer

def test_network_machinery_lives_in_the_symbolic_layer():
    import pickle

    from symode import distributed
    from symode._symbolic import networks

    for name in ("Block", "NetOutput", "Layer", "CanonBlock", "Networks", "collect_networks", "sym_act"):
        assert getattr(nn, name) is getattr(networks, name)
    assert nn._REGISTRY is networks._REGISTRY   # symode.distributed registers shipped blocks through nn
    net = nn.mlp([x, y ** 3], [4, 2], name="pk")
    m = symode.ODE([net[0] + x, net[1]], [x, y], params=list(net.params))
    m2 = pickle.loads(pickle.dumps(m))
    assert m2._sym.key() == m._sym.key()
    assert set(networks.network_blocks(m._sym.rhs)) == {net.uid}
    with networks.blocks_registered({net.uid: net}):
        assert networks._REGISTRY[net.uid] is net
