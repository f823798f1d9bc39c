"""The failure catalogue: each failure ends with a specific status and a clear message (never silent NaN)."""
import numpy as np
import pytest
import sympy as sp

import symode
from symode import _status

from .helpers import P1_THETA, P1_Z0, lotka_volterra

x = sp.Symbol("x")


def test_recoverable_nonfinite_rhs_is_rejected_and_retried():
    """sqrt(x) is NaN at negative stage values: those steps are rejected and shrunk (like CVODES'
    recoverable errors), and the integration succeeds with the right answer."""
    m = symode.ODE([-x + sp.sqrt(x) / 10 ** 6], states=[x])
    sol = m.solve([1.0], [], [0.0, 60.0], rtol=1e-3, atol=1e-3)
    assert sol.success and sol.stats["nrejected"] > 0
    assert np.all(np.isfinite(sol.z)) and abs(sol.z[-1, 0] - 1e-12) < 1e-3


def test_persistent_nonfinite_reports_status_time_and_partial_solution():
    m = symode.ODE([-1 + sp.log(x) / 10 ** 6], states=[x])
    sol = m.solve([1.0], [], [0.0, 0.5, 2.0], throw=False)
    assert sol.status in (_status.NONFINITE, _status.DT_MIN)
    assert 0.9 < sol.t_reached < 1.1
    assert np.isfinite(sol.z[1]).all() and np.isnan(sol.z[2]).all()
    with pytest.raises(symode.IntegrationError) as e:
        m.solve([1.0], [], [0.0, 0.5, 2.0])
    assert e.value.status == sol.status and e.value.solution is not None
    assert "t=" in str(e.value)


def test_nonfinite_at_the_initial_point():
    m = symode.ODE([sp.log(x)], states=[x])
    sol = m.solve([-1.0], [], [0.0, 1.0], throw=False)
    assert sol.status == _status.NONFINITE and "non-finite" in sol.message
    assert sol.t_reached == 0.0


def test_step_size_underflow_on_blow_up():
    m = symode.ODE([x ** 2], states=[x])
    sol = m.solve([1.0], [], [0.0, 2.0], throw=False)
    assert sol.status in (_status.DT_MIN, _status.NONFINITE)
    assert "step size" in sol.message or "non-finite" in sol.message
    assert abs(sol.t_reached - 1.0) < 1e-3 and sol.stats["nsteps"] < 10_000


def test_max_steps_message_names_the_knob():
    sol = lotka_volterra().solve(P1_Z0, P1_THETA, [0.0, 10.0], max_steps=7, throw=False)
    assert sol.status == _status.MAX_STEPS and "max_steps" in sol.message and "(7)" in sol.message


def test_fixed_step_nonfinite_is_reported():
    m = symode.ODE([x ** 2], states=[x])
    sol = m.solve([1.0], [], [0.0, 2.0], method="rk4", dt=0.01, throw=False)
    assert sol.status == _status.NONFINITE and np.isnan(sol.z[-1]).all()


@pytest.mark.parametrize("adjoint", symode.ADJOINTS)
def test_gradient_of_a_failed_forward_solve(adjoint):
    m = symode.ODE([x ** 2], states=[x])
    with pytest.raises(symode.IntegrationError):
        m.vjp([1.0], [], [0.0, 2.0], [[0.0], [1.0]], adjoint=adjoint)
    g = m.vjp([1.0], [], [0.0, 2.0], [[0.0], [1.0]], adjoint=adjoint, throw=False)
    assert np.isnan(g.z0).all() and g.stats["status"] in (_status.DT_MIN, _status.NONFINITE)


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_backward_integration_failure_is_reported(adjoint):
    """The adjoint's own integration can fail too: here it needs more steps than max_steps allows."""
    m = lotka_volterra()
    ts = np.linspace(0, 10, 3)
    fwd = m.solve(P1_Z0, P1_THETA, ts, rtol=1e-3, atol=1e-3)
    n_fwd = fwd.stats["nsteps"]
    with pytest.raises(symode.IntegrationError, match="backward"):
        m.vjp(P1_Z0, P1_THETA, ts, np.ones((3, 2)), adjoint=adjoint, rtol=1e-3, atol=1e-3, max_steps=n_fwd + 1,
              adjoint_rtol=1e-12, adjoint_atol=1e-12)
    g = m.vjp(P1_Z0, P1_THETA, ts, np.ones((3, 2)), adjoint=adjoint, rtol=1e-3, atol=1e-3, max_steps=n_fwd + 1,
              adjoint_rtol=1e-12, adjoint_atol=1e-12, throw=False)
    assert g.stats["status"] == _status.ADJOINT_FAILED and np.isnan(g.theta).all()
