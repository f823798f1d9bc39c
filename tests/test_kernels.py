"""Generated kernels against SymPy's own evaluation and finite differences, including hostile names."""
import os

import numpy as np
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import symode
from symode.testing import HOSTILE_NAMES, arrays, odes

from .helpers import central_fd, lotka_volterra, rel_err


def sympy_values(model, z, theta, t):
    subs = dict(zip(model.states, map(sp.Float, z)))
    subs.update(zip(model.params, map(sp.Float, theta)))
    if model.t is not None:
        subs[model.t] = sp.Float(t)
    f = np.array([float(e.evalf(30, subs=subs)) for e in model.rhs])
    J = np.array(model.rhs.jacobian(list(model.states)).evalf(30, subs=subs).tolist(), dtype=float)
    Jp = (np.array(model.rhs.jacobian(list(model.params)).evalf(30, subs=subs).tolist(), dtype=float)
          if model.n_params else np.zeros((model.n_states, 0)))
    return f, J.reshape(model.n_states, model.n_states), Jp.reshape(model.n_states, model.n_params)


def check_model(model, z, theta, t, rtol=1e-12):
    f, J, Jp = sympy_values(model, z, theta, t)
    scale = lambda v: np.maximum(np.abs(v), 1e-12)  # noqa: E731
    assert np.all(np.abs(model.f(z, theta, t) - f) <= rtol * scale(f) + 1e-14)
    assert np.all(np.abs(model.jac_z(z, theta, t) - J) <= rtol * scale(J) + 1e-14)
    assert np.all(np.abs(model.jac_theta(z, theta, t) - Jp) <= rtol * scale(Jp) + 1e-14)
    # VJP kernel = a^T J, and Jacobians = central finite differences of f
    a = np.linspace(-1, 1, model.n_states) + 0.3
    vz, vp = model.vjp_f(z, theta, t, a)
    assert np.allclose(vz, a @ J, rtol=1e-11, atol=1e-13)
    assert np.allclose(vp, a @ Jp, rtol=1e-11, atol=1e-13)
    Jfd = central_fd(lambda zz: model.f(zz, theta, t), z)
    assert np.allclose(model.jac_z(z, theta, t), Jfd, rtol=1e-6, atol=1e-7)
    if model.n_params:
        Jpfd = central_fd(lambda th: model.f(z, th, t), theta)
        assert np.allclose(model.jac_theta(z, theta, t), Jpfd, rtol=1e-6, atol=1e-7)
    if model.t is not None:
        jt = central_fd(lambda tt: model.f(z, theta, tt[0]), np.array([t]))[:, 0]
        assert np.allclose(model.jac_t(z, theta, t), jt, rtol=1e-6, atol=1e-7)


def test_lotka_volterra_kernels():
    m = lotka_volterra()
    check_model(m, np.array([1.3, 0.7]), np.array([1.5, 1.0, 3.0, 1.0]), 0.0)
    assert m.f([1, 1], [1.5, 1, 3, 1]).tolist() == [0.5, -2.0]


def test_hostile_names_work_and_never_reach_source(tmp_path):
    names = HOSTILE_NAMES[:12]
    syms = [sp.Symbol(nm) for nm in names]
    zs, ps = syms[:6], syms[6:]
    rhs = [sp.sin(zs[i]) * ps[i] - zs[(i + 1) % 6] ** 2 / 3 + sp.exp(-ps[(i + 2) % 6] ** 2) for i in range(6)]
    m = symode.ODE(rhs, states=zs, params=ps)
    z = np.linspace(0.1, 0.9, 6)
    th = np.linspace(-0.5, 0.7, 6)
    check_model(m, z, th, 0.0)
    src = m.source_path.read_text()
    for nm in ["lambda", "import os", "α", "x y", "HACKED"]:
        assert nm not in src
    # the same model with plain names gives identical numbers
    plain = [sp.Symbol(f"v{i}") for i in range(12)]
    m2 = symode.ODE([e.xreplace(dict(zip(syms, plain))) for e in rhs], states=plain[:6], params=plain[6:])
    assert np.array_equal(m2.f(z, th), m.f(z, th))


def test_injection_name_does_not_execute(tmp_path):
    canary = tmp_path / "CANARY"
    evil = sp.Symbol(f"__import__('os').system('touch {canary}')")
    evil2 = sp.Symbol(f"x\nopen('{canary}', 'w')")
    m = symode.ODE([-evil + evil2, evil], states=[evil, evil2])
    m.solve([1.0, 0.5], [], [0.0, 1.0])
    assert not canary.exists()


def test_special_functions_and_piecewise():
    x, y, k = sp.symbols("x y k", real=True)
    rhs = [sp.Piecewise((x ** 2, x > 0), (-x, True)) + sp.Abs(y) + sp.Max(x, y) + sp.atan(k * x),
           sp.sign(x) * sp.sqrt(1 + y ** 2) + sp.Heaviside(y) + sp.asinh(x) + 2 ** 70 * x * 1e-21 + sp.pi * k]
    m = symode.ODE(rhs, states=[x, y], params=[k])
    for z in ([0.4, -0.3], [-0.7, 0.2]):
        f, _, _ = sympy_values(m, z, [0.5], 0.0)
        assert rel_err(m.f(z, [0.5]), f) < 1e-13
    assert np.allclose(m.jac_z([0.4, -0.3], [0.5]), central_fd(lambda zz: m.f(zz, [0.5]), [0.4, -0.3]), rtol=1e-6)


@settings(max_examples=int(os.environ.get("SYMODE_MODEL_EXAMPLES", "8")))
@given(model=odes(max_states=3, max_params=3), data=st.data())
def test_random_models_match_sympy(model, data):
    z = data.draw(arrays(model.n_states))
    theta = data.draw(arrays(model.n_params))
    t = data.draw(st.floats(0, 2))
    check_model(model, z, theta, t)


def test_structural_zeros_not_in_source():
    x, y, z3, k = sp.symbols("x y z3 k")
    m = symode.ODE([k * x, y, z3 ** 2], states=[x, y, z3], params=[k])
    c = m.compiled
    assert c.jac_z_pattern == ((0, 0), (1, 1), (2, 2))
    assert c.jac_theta_pattern == ((0, 0),)
    J = m.jac_z([1.0, 2.0, 3.0], [2.0])
    assert np.array_equal(J, np.diag([2.0, 1.0, 6.0]))
