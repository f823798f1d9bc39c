"""symode.distributed refuses bad inputs on the client, before any chunk is planned or sent (no cluster needed:
every case fails before a client is looked up)."""
import numpy as np
import pytest
import sympy as sp

import symode
import symode.distributed as D
from symode._errors import InputValidationError, ModelError

x, y, a, d = sp.symbols("x y a d")
TS = [0.0, 1.0]


@pytest.fixture(scope="module")
def decay():
    return symode.ODE([-a * x, a * x - y], states=[x, y], params=[a])


def test_map_solve_refuses_negative_retries(decay):
    with pytest.raises(InputValidationError, match="retries"):
        D.map_solve(decay, [1.0, 0.0], [[0.5], [0.4]], TS, retries=-1)
    with pytest.raises(InputValidationError, match="retries"):
        D.map_vjp(decay, [1.0, 0.0], [[0.5], [0.4]], TS, np.ones((2, 2)), retries=1.5)


def test_a_string_client_is_a_clear_error(decay):
    with pytest.raises(InputValidationError, match=r"distributed\.Client\('tcp://127\.0\.0\.1:1'\)"):
        D.map_solve(decay, [1.0, 0.0], [[0.5], [0.4]], TS, client="tcp://127.0.0.1:1")
    with pytest.raises(InputValidationError, match="distributed.Client"):
        D.map_solve(decay, [1.0, 0.0], [[0.5], [0.4]], TS, client=object())


def test_complex_batch_inputs_and_cotangent_are_refused(decay):
    with pytest.raises(InputValidationError, match="`z0`.*real"):
        D.map_solve(decay, [[1.0 + 1j, 0.0], [1.0, 0.0]], [0.5], TS)
    with pytest.raises(InputValidationError, match="`theta`.*real"):
        D.map_solve(decay, [1.0, 0.0], [[0.5 + 0j], [0.4]], TS)
    with pytest.raises(InputValidationError, match="`ts`.*real"):
        D.map_solve(decay, [1.0, 0.0], [[0.5], [0.4]], [0.0, 1.0 + 0j])
    with pytest.raises(InputValidationError, match="`cotangent`.*real"):
        D.map_vjp(decay, [1.0, 0.0], [[0.5], [0.4]], TS, np.ones((2, 2)) * 1j)
    with pytest.raises(InputValidationError, match="`rtol`.*string"):
        D.map_solve(decay, [1.0, 0.0], [[0.5], [0.4]], TS, rtol="1e-6")
    with pytest.raises(InputValidationError, match="safety"):
        D.map_solve(decay, [1.0, 0.0], [[0.5], [0.4]], TS, controller=dict(safety=float("nan")))


def test_observation_loss_data_and_symbols_are_checked(decay):
    loss = symode.ObservationLoss((x - d) ** 2, [d])
    with pytest.raises(InputValidationError, match="row 1"):
        D.map_value_and_grad(decay, loss, [1.0, 0.0], [[0.5], [0.4]], TS, data=[[1.0], [np.inf]])
    with pytest.raises(InputValidationError, match="real"):
        D.map_value_and_grad(decay, loss, [1.0, 0.0], [[0.5], [0.4]], TS, data=[[1.0], [1j]])
    with pytest.raises(ModelError, match="also a state"):
        D.map_value_and_grad(decay, symode.ObservationLoss((x - a) ** 2, [x]), [1.0, 0.0], [[0.5], [0.4]], TS,
                             data=[[1.0], [2.0]])
    with pytest.raises(ModelError, match="undeclared"):
        D.map_value_and_grad(decay, symode.FinalLoss((x - d) ** 2), [1.0, 0.0], [[0.5], [0.4]], TS)


def test_solver_option_names_come_from_one_tuple():
    assert D._solve_option_names() == D.SOLVE_OPTION_NAMES
    assert D._grad_option_names() == D.SOLVE_OPTION_NAMES + ("adjoint",)
    import inspect

    from symode._ode import ODE

    params = inspect.signature(ODE.solve).parameters
    assert all(k in params for k in D.SOLVE_OPTION_NAMES)      # still ODE.solve's keywords


def test_callable_loss_cotangent_is_checked_on_the_worker_side(decay):
    """_loss_grad_chunk (what a worker runs for a callable loss) checks each dL/dz with _validate.cotangent."""
    Z, T, ts = np.array([[1.0, 0.0], [0.5, 0.1]]), np.array([[0.5], [0.4]]), np.array([0.0, 0.5, 1.0])

    def good(t, z):
        return float(z[-1, 0]), np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])

    values, gz, gp, gt, z, status, nfev = D._loss_grad_chunk(decay, Z, T, ts, good, None, {})
    ref = decay.vjp(Z, T, ts, np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), reduce=None)
    np.testing.assert_allclose(gz, ref.z0, rtol=1e-12)
    np.testing.assert_allclose(gp, ref.theta, rtol=1e-12)
    np.testing.assert_allclose(values, ref.solution.z[:, -1, 0])

    def bad(t, z):
        return 0.0, np.ones((3, 2)) * 1j

    with pytest.raises(InputValidationError, match="dL/dz returned by the loss.*real"):
        D._loss_grad_chunk(decay, Z, T, ts, bad, None, {})
