"""ODE.from_text / ODE.from_file: models from text without eval; code in a model file never runs."""
import numpy as np
import pytest
import sympy as sp

import symode

LV = """
# Lotka-Volterra
name: lotka-volterra
states: x, y
params: alpha, beta, gamma, delta
time: t
z0: 1.0, 1.0
theta: 1.5, 1.0, 3.0, 1.0
dx/dt = alpha*x - beta*x*y   # prey
dy/dt = delta*x*y - gamma*y
"""


def test_from_text_equals_sympy_model():
    m = symode.ODE.from_text(LV)
    x, y, a, b, c, d = sp.symbols("x y alpha beta gamma delta")
    ref = symode.ODE([a * x - b * x * y, d * x * y - c * y], states=[x, y], params=[a, b, c, d])
    ts = np.linspace(0, 5, 11)
    s1 = m.solve(m.defaults["z0"], m.defaults["theta"], ts, rtol=1e-9, atol=1e-9)
    s2 = ref.solve([1.0, 1.0], [1.5, 1.0, 3.0, 1.0], ts, rtol=1e-9, atol=1e-9)
    assert np.array_equal(s1.z, s2.z)
    assert m.name == "lotka-volterra"


def test_from_file(tmp_path):
    p = tmp_path / "lv.ode"
    p.write_text(LV, encoding="utf-8")
    m = symode.ODE.from_file(p)
    assert m.n_states == 2 and m.n_params == 4
    with pytest.raises(symode.ModelParseError):
        symode.ODE.from_file(tmp_path)
    (tmp_path / "bin.ode").write_bytes(b"\x80\x81\x00states: x")
    with pytest.raises(symode.ModelParseError):
        symode.ODE.from_file(tmp_path / "bin.ode")


@pytest.mark.parametrize("payload", [
    "__import__('os').system('touch {c}')",
    "().__class__.__bases__[0].__subclasses__()",
    "open('{c}', 'w').write('x')",
    "x.real",
    "(lambda: 0)()",
    "exec('open(\"{c}\", \"w\")')",
])
def test_python_code_in_a_model_file_is_rejected_and_nothing_runs(tmp_path, payload):
    canary = tmp_path / "CANARY"
    text = f"states: x\nparams: k\ndx/dt = -k*x + {payload.format(c=canary)}\n"
    with pytest.raises(symode.ModelParseError) as e:
        symode.ODE.from_text(text)
    assert e.value.line == 3 and e.value.col is not None
    assert not canary.exists()


def test_errors_name_line_and_column():
    with pytest.raises(symode.ModelParseError, match=r"line 3, col"):
        symode.ODE.from_text("states: x\nparams: k\ndx/dt = -k*q\n")
