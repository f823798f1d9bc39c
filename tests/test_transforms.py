"""symode._symbolic.transforms reproduce the engine's auxiliary models exactly (right-hand sides, state and
parameter order, canonical form and cache key)."""
import numpy as np
import pytest
import sympy as sp

import symode
from symode import _stiff, distributed, nn
from symode._errors import InputValidationError
from symode._symbolic import transforms as T

x, y, t = sp.symbols("x y t")
a, b, c = sp.symbols("a b c")


def _models():
    return {
        "lv": symode.ODE([a * x - b * x * y, c * x * y - y], [x, y], [a, b, c]),
        "nonautonomous": symode.ODE([sp.sin(t) * x * a + y ** 2, -x + sp.exp(-t * b) * y], [x, y], [a, b], t=t),
        "no params": symode.ODE([-x ** 3 + y, -y], [x, y]),
        "constant jacobian": symode.ODE([a * x + y, -y + t], [x, y], [a], t=t),
        "piecewise": symode.ODE([sp.Piecewise((x ** 2, x > a), (a * x, True)) + sp.Abs(y), sp.tanh(x * y)],
                                [x, y], [a]),
    }


def _same(sym, ref_sym):
    assert sym.states == ref_sym.states
    assert sym.params == ref_sym.params
    assert sym.t == ref_sym.t
    assert sym.rhs == ref_sym.rhs
    assert sym.rhs_c == ref_sym.rhs_c
    assert sym.key() == ref_sym.key()


@pytest.mark.parametrize("name", sorted(_models()))
def test_sensitivity_system_matches_the_engine(name):
    model = _models()[name]
    ref = _stiff._sensitivity_model(model)
    sym = T.sensitivity_system(model._sym)
    _same(sym, ref._sym)
    n, p = model.n_states, model.n_params
    assert sym.n == n + n * n + n * p and sym.p == p


@pytest.mark.parametrize("name", sorted(_models()))
def test_second_order_system_matches_the_engine(name):
    model = _models()[name]
    aux, hm_i, hm_j, ft_rows = _stiff._second_order_model(model)
    out = T.second_order_system(model._sym)
    np.testing.assert_array_equal(out.hm_i, hm_i)
    np.testing.assert_array_equal(out.hm_j, hm_j)
    np.testing.assert_array_equal(out.ft_rows, ft_rows)
    assert out.hm_i.dtype == np.int64 and out.ft_rows.dtype == np.int64
    if aux is None:
        assert out.model is None
    else:
        _same(out.model, aux._sym)


def test_second_order_system_is_none_for_constant_derivatives():
    model = symode.ODE([2 * x + y, -y + a], [x, y], [a])
    out = T.second_order_system(model._sym)
    assert out.model is None and out.hm_i.size == 0 and out.ft_rows.size == 0


def test_second_order_system_refuses_networks():
    net = nn.mlp([x, y], [3, 2], name="so_net")
    model = symode.ODE(list(net.outputs), [x, y], params=list(net.params))
    with pytest.raises(InputValidationError, match="adjoint='checkpoint'"):
        T.second_order_system(model._sym)
    with pytest.raises(InputValidationError, match="adjoint='checkpoint'"):
        _stiff._second_order_model(model)


@pytest.mark.parametrize("name", sorted(_models()))
def test_running_cost_system_matches_the_engine(name):
    model = _models()[name]
    expr = x ** 2 + sp.sin(y) * (a if model.n_params else 1)
    ref = distributed._running_cost_model(model, expr)
    sym = T.running_cost_system(model._sym, expr)
    assert sym.states[:-1] == ref._sym.states[:-1]
    assert isinstance(sym.states[-1], sp.Dummy) and sym.states[-1].name == "_symode_running_cost"
    assert sym.params == ref._sym.params and sym.t == ref._sym.t
    assert sym.rhs_c == ref._sym.rhs_c
    assert sym.key() == ref._sym.key()


def test_running_cost_system_with_network_blocks():
    net = nn.mlp([x, y], [3, 2], name="rc_net")
    model = symode.ODE(list(net.outputs), [x, y], params=list(net.params))
    expr = x ** 2 + y ** 2
    ref = distributed._running_cost_model(model, expr)
    sym = T.running_cost_system(model._sym, expr)
    assert sym.rhs_c == ref._sym.rhs_c and sym.key() == ref._sym.key()
    assert sym.networks is not None and len(sym.networks) == 1


@pytest.mark.parametrize("loss, params, eta", [
    (sp.Symbol("th") ** 4 / 2, [sp.Symbol("th")], 0.1),
    ((a - 1) ** 2 + c * b ** 2 + sp.cos(a * b), [a, b], sp.Symbol("eta")),
    ((a - x) ** 2 + (b - y) ** 2, [a, b], 2),
])
def test_gradient_flow_system_matches_the_public_function(loss, params, eta):
    ref = symode.gradient_flow(loss, params, eta)
    sym = T.gradient_flow_system(loss, params, eta)
    _same(sym, ref._sym)


def test_symbolic_layer_imports_no_engine_module():
    # The symbolic layer (transforms, networks, model, derivatives) imports only SymPy, NumPy, the standard
    # library, symode._errors and itself: never symode.nn, _codegen, _numeric or the engine modules.
    import ast
    from pathlib import Path

    import symode._symbolic as pkg

    allowed = {"symode._errors", "symode._symbolic"}
    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = "symode._symbolic" if node.level == 1 else "symode"
                target = base + ("." + node.module if node.module else "")
                if target == "symode":
                    target += "." + node.names[0].name
                assert any(target == m or target.startswith(m + ".") for m in allowed), (path.name, target)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n and n.startswith("symode") for n in names), (path.name, names)
