"""Validation of model declarations: every error is raised at construction and names the problem."""
import pytest
import sympy as sp

import symode

x, y, a, b, t = sp.symbols("x y a b t")


def test_valid_model_counts():
    m = symode.ODE([a * x, -b * y], states=[x, y], params=[a, b])
    assert (m.n_states, m.n_params) == (2, 2)
    assert m.rhs == sp.Matrix([a * x, -b * y])


def test_matrix_rhs_and_time():
    m = symode.ODE(sp.Matrix([x * sp.sin(t), y]), states=[x, y], t=t)
    assert m.n_states == 2 and m.n_params == 0
    assert m.jac_t_expr == sp.Matrix([x * sp.cos(t), 0])


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(rhs=[x], states=[x, y]), "`rhs` has 1 entries but `states` has 2"),
    (dict(rhs=[x, y], states=[x, x]), "declared twice"),
    (dict(rhs=[x * a], states=[x], params=[x]), "declared twice"),
    (dict(rhs=[x], states=[x], t=x), "declared twice"),
    (dict(rhs=[x * a], states=[x]), "undeclared symbol(s) a"),
    (dict(rhs=[x * t], states=[x]), "pass it as `t=`"),
    (dict(rhs=[x], states=["x"]), "must be a sympy.Symbol"),
    (dict(rhs=[x], states=[x + 1]), "must be a sympy.Symbol"),
    (dict(rhs=[], states=[]), "at least one state"),
    (dict(rhs=["x*2"], states=[x]), "never evaluates strings"),
    (dict(rhs=[x], states=[x], params=[sp.Symbol("x", positive=True)]), "duplicate name"),
    (dict(rhs=[sp.Symbol("ﬁ") + sp.Symbol("fi")], states=[sp.Symbol("ﬁ")], params=[sp.Symbol("fi")]),
     "duplicate name"),
])
def test_model_errors(kwargs, fragment):
    with pytest.raises(symode.ModelError) as e:
        symode.ODE(**kwargs)
    assert fragment in str(e.value)


@pytest.mark.parametrize("expr, fragment", [
    (sp.Function("g")(x), "cannot be compiled"),
    (sp.Derivative(x ** 2, x, evaluate=False), "cannot be compiled"),
    (sp.I * x, "imaginary unit"),
    (x + sp.oo, "infinity"),
    (sp.Piecewise((x, x > 0)), "default"),
])
def test_unsupported_expressions(expr, fragment):
    with pytest.raises(symode.UnsupportedExpressionError) as e:
        symode.ODE([expr], states=[x])
    assert fragment in str(e.value)


def test_zero_parameters_and_constant_rhs():
    m = symode.ODE([sp.Integer(1)], states=[x])
    assert m.f([0.0]).tolist() == [1.0]
    assert m.jac_theta([0.0]).shape == (1, 0)
