"""symode._symbolic.transforms build the engine's auxiliary systems (the sensitivity system, the second-order
model of the Rosenbrock adjoint, the running-cost augmentation, gradient flow): each checked against the equations
derived here independently (state and parameter order included)."""
import numpy as np
import pytest
import sympy as sp

import symode
from symode import nn
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


def _jacobians(model):
    """f, df/dz, df/dtheta differentiated with real stand-ins for the symbols (as symode does: d|y|/dy = sign(y))."""
    users = list(model.states) + list(model.params) + ([model.t] if model.t is not None else [])
    real = {u: sp.Dummy(str(u), real=True) for u in users}
    back = {v: k for k, v in real.items()}
    f = sp.Matrix(model._sym.rhs).xreplace(real)
    J = f.jacobian([real[z] for z in model.states])
    Jp = f.jacobian([real[q] for q in model.params]) if model.n_params else sp.zeros(model.n_states, 0)
    return f.xreplace(back), J.xreplace(back), Jp.xreplace(back)


def _dt(model, e):
    tr = sp.Dummy("t", real=True)
    return sp.diff(e.xreplace({model.t: tr}), tr).xreplace({tr: model.t})


def _zero(e):
    """e vanishes: symbolically, or else at 5 random real points (Piecewise, Abs and sign do not simplify away)."""
    e = sp.expand(e)
    if e == 0:
        return True
    rng = np.random.default_rng(0)
    syms = sorted(e.free_symbols, key=str)
    for _ in range(5):
        val = complex(e.xreplace({v: sp.Float(rng.uniform(0.1, 1.7)) for v in syms}).evalf())
        if abs(val) > 1e-12:
            return False
    return True


@pytest.mark.parametrize("name", sorted(_models()))
def test_sensitivity_system_is_z_and_s_prime_equals_j_s_plus_jp(name):
    """States (z, S_z0 row-major, S_theta row-major); S' = J S (+ df/dtheta): derived here independently."""
    model = _models()[name]
    sym = T.sensitivity_system(model._sym, model._derivatives())
    n, p = model.n_states, model.n_params
    assert sym.n == n + n * n + n * p and sym.p == p and sym.params == model._sym.params and sym.t == model.t
    f, J, Jp = _jacobians(model)
    Sz = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"_symode_sz_{i}_{j}", real=True))
    Sp = sp.Matrix(n, p, lambda i, k: sp.Symbol(f"_symode_sp_{i}_{k}", real=True)) if p else sp.zeros(n, 0)
    want = list(f) + list(J * Sz) + (list(J * Sp + Jp) if p else [])
    assert list(sym.states) == list(model.states) + list(Sz) + list(Sp)
    assert all(_zero(got - w) for got, w in zip(sym.rhs, want)) and len(sym.rhs) == len(want)


@pytest.mark.parametrize("name", sorted(_models()))
def test_second_order_system_is_the_weighted_sum_of_the_varying_jacobian_entries(name):
    """S = sum M_ij dfi/dzj + sum u_i dfi/dt over the entries that depend on (t, z, theta), in the first rhs."""
    model = _models()[name]
    out = T.second_order_system(model._sym, model._derivatives())
    f, J, _ = _jacobians(model)
    live = set(model.states) | set(model.params) | ({model.t} if model.t is not None else set())
    varying = [(i, j) for i in range(model.n_states) for j in range(model.n_states) if J[i, j].free_symbols & live]
    ft = [i for i in range(model.n_states) if model.t is not None and _dt(model, f[i]).free_symbols & live]
    assert sorted(zip(out.hm_i.tolist(), out.hm_j.tolist())) == sorted(varying)
    assert sorted(out.ft_rows.tolist()) == ft
    assert out.hm_i.dtype == np.int64 and out.ft_rows.dtype == np.int64
    if not varying and not ft:
        assert out.model is None
        return
    M = {(i, j): sp.Symbol(f"_symode_hm_{i}_{j}", real=True) for i, j in varying}
    u = {i: sp.Symbol(f"_symode_hu_{i}", real=True) for i in ft}
    S = sum(M[i, j] * J[i, j] for i, j in varying) + sum(u[i] * _dt(model, f[i]) for i in ft)
    aux = out.model
    assert list(aux.states) == list(model.states)
    assert list(aux.params) == list(model.params) + [M[ij] for ij in zip(out.hm_i.tolist(), out.hm_j.tolist())] \
        + [u[i] for i in out.ft_rows.tolist()]
    assert _zero(aux.rhs[0] - S) and all(e == 0 for e in aux.rhs[1:])


def test_second_order_system_is_none_for_constant_derivatives():
    model = symode.ODE([2 * x + y, -y + a], [x, y], [a])
    out = T.second_order_system(model._sym, model._derivatives())
    assert out.model is None and out.hm_i.size == 0 and out.ft_rows.size == 0


def test_second_order_system_refuses_networks():
    net = nn.mlp([x, y], [3, 2], name="so_net")
    model = symode.ODE(list(net.outputs), [x, y], params=list(net.params))
    with pytest.raises(InputValidationError, match="adjoint='checkpoint'"):
        T.second_order_system(model._sym, model._derivatives())
    with pytest.raises(InputValidationError, match="adjoint='checkpoint'"):   # and through the public API
        model.vjp([0.1, 0.2], np.zeros(model.n_params), [0.0, 1.0], np.ones((2, 2)), method="rodas5")


@pytest.mark.parametrize("name", sorted(_models()))
def test_running_cost_system_appends_the_quadrature_state(name):
    model = _models()[name]
    expr = x ** 2 + sp.sin(y) * (a if model.n_params else 1)
    sym = T.running_cost_system(model._sym, expr)
    assert list(sym.states[:-1]) == list(model.states)
    assert isinstance(sym.states[-1], sp.Dummy) and sym.states[-1].name == "_symode_running_cost"
    assert sym.params == model._sym.params and sym.t == model.t
    assert list(sym.rhs) == list(model._sym.rhs) + [expr]
    # the canonical form (and so the generated code and its cache key) does not depend on the fresh Dummy
    assert sym.key() == T.running_cost_system(model._sym, expr).key()


def test_running_cost_system_with_network_blocks():
    net = nn.mlp([x, y], [3, 2], name="rc_net")
    model = symode.ODE(list(net.outputs), [x, y], params=list(net.params))
    sym = T.running_cost_system(model._sym, x ** 2 + y ** 2)
    assert sym.networks is not None and len(sym.networks) == 1


@pytest.mark.parametrize("loss, params, eta", [
    (sp.Symbol("th") ** 4 / 2, [sp.Symbol("th")], 0.1),
    ((a - 1) ** 2 + c * b ** 2 + sp.cos(a * b), [a, b], sp.Symbol("eta")),
    ((a - x) ** 2 + (b - y) ** 2, [a, b], 2),
])
def test_gradient_flow_system_is_minus_eta_grad(loss, params, eta):
    sym = T.gradient_flow_system(loss, params, eta)
    assert list(sym.states) == list(params)
    assert all(_zero(r + eta * sp.diff(loss, th)) for r, th in zip(sym.rhs, params))
    flow = symode.gradient_flow(loss, params, eta)
    assert flow._sym.key() == sym.key()


def test_symbolic_layer_imports_no_engine_module():
    # The symbolic layer (transforms, networks, model, derivatives) imports only SymPy, NumPy, the standard
    # library, symode._errors and itself: never symode.nn, _codegen, _numeric or the engine modules.
    import ast
    from pathlib import Path

    import symode._symbolic as pkg

    allowed = {"symode._errors", "symode._validate", "symode._symbolic"}   # the core layer and itself
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
