"""Input validation (issue 20): every numerical input is refused with a clear InputValidationError naming the
argument when it is complex, a string, an object that is not a real number, out of range or otherwise unusable
-- never silently truncated, parsed or turned into a failed integration.
The engine's call sites (solve, batches, vjp, value_and_grad) are exercised through the public API."""
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

import symode
from symode import _validate as V
from symode._errors import InputValidationError, ModelError

x, y, a, d = sp.symbols("x y a d")


@pytest.fixture(scope="module")
def decay():
    return symode.ODE([-a * x, a * x - y], states=[x, y], params=[a])


Z0, TH, TS = [1.0, 0.0], [0.5], [0.0, 1.0]


# ------------------------------------------------------------------------------------------ real arrays


@pytest.mark.parametrize("value, match", [
    ([1.0 + 1j, 2.0], "real"),
    (np.array([1.0, 2.0], dtype=complex), "real"),
    (["1.0", "1.0"], "string"),
    ("1.0", "string"),
    ([1.0, None], "entry None"),
    ([sp.I, 1.0], "entry I"),
    (np.array([True, False]), "boolean"),
    (np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]"), "dtype"),
])
def test_real_array_refuses_what_float_would_misread(value, match):
    with pytest.raises(InputValidationError, match=match) as e:
        V.real_array(value, "z0")
    assert "`z0`" in str(e.value)


def test_real_array_accepts_numbers_and_sympy_numbers():
    np.testing.assert_array_equal(V.real_array([1, 2.5, np.float32(3)], "z0"), [1.0, 2.5, 3.0])
    np.testing.assert_array_equal(V.real_array([sp.Float(1.5), sp.Integer(2)], "z0"), [1.5, 2.0])


def test_single_solve_refuses_strings_and_complex(decay):
    with pytest.raises(InputValidationError, match="string"):
        decay.solve(["1.0", "1.0"], TH, TS)
    with pytest.raises(InputValidationError, match="`ts`.*real"):
        decay.solve(Z0, TH, [0.0, 1.0 + 1e-3j])
    with pytest.raises(InputValidationError, match="`rtol`.*string"):
        decay.solve(Z0, TH, TS, rtol="1e-6")
    with pytest.raises(InputValidationError, match="`rtol`.*real"):
        decay.solve(Z0, TH, TS, rtol=1e-6 + 1e-7j)
    with pytest.raises(InputValidationError, match="`atol`.*real"):
        decay.solve(Z0, TH, TS, atol=[1e-9 + 0j, 1e-9])
    with pytest.raises(InputValidationError, match="`dt`.*string"):
        decay.solve(Z0, TH, TS, dt="0.1")
    with pytest.raises(InputValidationError, match="`dt_max`.*real"):
        decay.solve(Z0, TH, TS, dt_max=0.1j)


def test_gradient_ts_refuses_complex(decay):
    with pytest.raises(InputValidationError, match="`ts`.*real"):
        decay.vjp(Z0, TH, [0.0, 1.0 + 0j], np.ones((2, 2)))


# ------------------------------------------------------------------------------------------ integers


@pytest.mark.parametrize("value", [2 ** 63, 10 ** 30, 0, -1, True, np.True_, 1000.5, float("inf"), float("nan"),
                                   "1000", 1000 + 0j, None])
def test_positive_int_is_strict_and_bounded(value):
    with pytest.raises(InputValidationError, match="max_steps"):
        V.positive_int(value, "max_steps")


@pytest.mark.parametrize("value, expected", [(1, 1), (2 ** 63 - 1, 2 ** 63 - 1), (np.int32(7), 7), (1e3, 1000),
                                             (np.float64(5.0), 5)])
def test_positive_int_accepts_integers_and_integral_floats(value, expected):
    out = V.positive_int(value, "max_steps")
    assert out == expected and type(out) is int


def test_max_steps_too_large_is_an_input_error_not_overflow(decay):
    for z0 in (Z0, np.array(Z0)):
        with pytest.raises(InputValidationError, match="max_steps"):
            decay.solve(z0, np.array(TH), np.array(TS), max_steps=2 ** 63)


def test_max_steps_float_outcome_does_not_depend_on_earlier_calls():
    """The engine caches options keyed by raw values (1e3 == 1000): an integral float must be accepted whether
    or not the int was used before, and give the same solution."""
    def fresh():
        return symode.ODE([-a * x], states=[x], params=[a])

    first = fresh().solve([1.0], [0.5], TS, max_steps=1e3)
    m = fresh()
    m.solve([1.0], [0.5], TS, max_steps=1000)
    again = m.solve([1.0], [0.5], TS, max_steps=1e3)
    np.testing.assert_array_equal(first.z, again.z)
    with pytest.raises(InputValidationError, match="max_steps"):
        fresh().solve([1.0], [0.5], TS, max_steps=True)


@pytest.mark.parametrize("value", ["1", b"1", 1j, True, [1.0], np.array([1.0, 2.0]), float("nan"), -1.0, 0.0])
def test_positive_float_refuses_non_real_and_non_positive(value):
    with pytest.raises(InputValidationError, match="`dt`"):
        V.positive_float(value, "dt")


def test_positive_float_accepts_real_scalars():
    assert V.positive_float(np.float32(0.5), "dt") == 0.5
    assert V.positive_float(np.array(2.0), "dt") == 2.0
    assert V.positive_float(None, "dt") is None


# ------------------------------------------------------------------------------------------ output times


def test_ts_whose_span_overflows_is_refused():
    with pytest.raises(InputValidationError, match="overflows"):
        V.times([-1e308, 1e308])
    with pytest.raises(InputValidationError, match="overflows"):
        V.times(np.array([-1e308, 0.0, 1e308]))


@pytest.mark.parametrize("ts, index", [([1.0, 1.0 + 2.2e-16], 0), ([0.0, 1.0, 1.0 + 4.4e-16, 2.0], 1),
                                       ([1e9, 1e9 + 1e-7, 1e9 + 1.0], 0), ([2.0, 2.0 - 4.4e-16], 0)])
def test_ts_closer_than_float64_resolves_is_refused_naming_the_index(ts, index):
    with pytest.raises(InputValidationError, match=rf"`ts`\[{index}\].*closer than float64"):
        V.times(ts)
    with pytest.raises(InputValidationError, match="closer than float64"):
        V.times(np.array(ts))            # the compiled fast path applies the same rule


@pytest.mark.parametrize("ts", [[0.0, 1e-300], [1e9, 1e9 + 1e-5], [-1e307, 1e307], [0.0, 1e-3, 2e-3],
                                [1.0, 1.0 + 1e-14]])
def test_ts_that_float64_resolves_is_accepted(ts):
    np.testing.assert_array_equal(V.times(ts), ts)
    np.testing.assert_array_equal(V.times(np.array(ts)), ts)


def test_solve_with_an_unresolvable_ts_list_is_an_input_error(decay):
    with pytest.raises(InputValidationError, match="closer than float64"):
        decay.solve(Z0, TH, [1.0, 1.0 + 2.2e-16])
    with pytest.raises(InputValidationError, match="overflows"):
        decay.solve(Z0, TH, [-1e308, 1e308])


def test_solve_with_an_unresolvable_ts_array_is_an_input_error(decay):
    """float64 vectors take the prepared compiled path, which checks ts itself (finite, monotonic) and so gives
    DT_MIN here; it is to refuse (or, on failure, re-check with V.times) as the validating path does."""
    with pytest.raises(InputValidationError, match="closer than float64"):
        decay.solve(np.array(Z0), np.array(TH), np.array([1.0, 1.0 + 2.2e-16]))


# ------------------------------------------------------------------------------------------ controller


@pytest.mark.parametrize("ctrl, match", [
    (dict(safety=float("nan")), "safety"), (dict(safety=1.0), "safety"), (dict(safety=0.0), "safety"),
    (dict(safety="0.9"), "safety"), (dict(fac_min=0.0), "fac_min"), (dict(fac_min=1.5), "fac_min"),
    (dict(fac_max=1.0), "fac_max"), (dict(fac_max=float("inf")), "fac_max"), (dict(beta=-0.01), "beta"),
    (dict(beta=0.5), "beta"), (dict(beta=True), "beta"), (dict(beta=0.04j), "beta"), (dict(gain=1), "gain"),
    ([("safety", 0.9)], "dict"),
])
def test_controller_refuses_bad_settings(ctrl, match):
    with pytest.raises(InputValidationError, match=match):
        V.controller(ctrl, 0.04)


def test_controller_defaults_and_overrides():
    assert V.controller(None, 0.04) == (0.9, 0.2, 10.0, 0.04)
    assert V.controller(dict(beta=0.0, fac_max=5), 0.04) == (0.9, 0.2, 5.0, 0.0)
    assert V.controller(dict(safety=np.float64(0.8)), 0.0) == (0.8, 0.2, 10.0, 0.0)


def test_solve_refuses_nan_safety(decay):
    with pytest.raises(InputValidationError, match="safety"):
        decay.solve(Z0, TH, TS, controller=dict(safety=float("nan")))


# ------------------------------------------------------------------------------------------ batches


def test_batch_pair_refuses_complex_and_strings():
    with pytest.raises(InputValidationError, match="`z0`.*real"):
        V.batch_pair([[1.0 + 1j, 0.0], [1.0, 0.0]], [0.5], 2, 1)
    with pytest.raises(InputValidationError, match="`theta`.*real"):
        V.batch_pair([1.0, 0.0], [[0.5 + 0j], [0.4]], 2, 1)
    with pytest.raises(InputValidationError, match="`theta`.*string"):
        V.batch_pair([1.0, 0.0], [["0.5"], ["0.4"]], 2, 1)
    with pytest.raises(InputValidationError, match=r"`z0`\[1, 0\] is not finite"):
        V.batch_pair([[1.0, 0.0], [np.nan, 0.0]], [0.5], 2, 1)
    Z, T = V.batch_pair([[1.0, 0.0], [2.0, 0.0]], [0.5], 2, 1)
    assert Z.shape == (2, 2) and T.shape == (2, 1) and T.flags.c_contiguous


def test_batch_solve_refuses_complex_z0(decay):
    with pytest.raises(InputValidationError, match="`z0`.*real"):
        decay.solve([[1.0 + 1j, 0.0], [1.0, 0.0]], TH, TS)


def test_batch_solve_refuses_complex_theta(decay):
    with pytest.raises(InputValidationError, match="`theta`.*real"):
        decay.solve(Z0, [[0.5 + 1j], [0.4]], TS)


# ------------------------------------------------------------------------------------------ cotangents


def test_cotangent_check():
    with pytest.raises(InputValidationError, match="`cotangent`.*real"):
        V.cotangent(np.ones((2, 2)) * (1 + 1j), 2, 2)
    with pytest.raises(InputValidationError, match=r"`cotangent`\[1, 0\] is not finite"):
        V.cotangent([[0.0, 0.0], [np.inf, 0.0]], 2, 2)
    with pytest.raises(InputValidationError, match="shape"):
        V.cotangent(np.ones((3, 2, 2)), 2, 2)
    assert V.cotangent(np.ones((3, 2, 2)), 2, 2, batch=3).shape == (3, 2, 2)


def test_vjp_refuses_complex_cotangent(decay):
    with pytest.raises(InputValidationError, match="`cotangent`.*real"):
        decay.vjp(Z0, TH, TS, np.ones((2, 2)) * (1 + 1j))


# ------------------------------------------------------------------------------------------ losses


def test_loss_data_refuses_inf_naming_the_row_and_complex():
    with pytest.raises(InputValidationError, match="row 1"):
        V.loss_data([[1.0], [np.inf]], 2, 1)
    with pytest.raises(InputValidationError, match="row 0 of member 1"):
        V.loss_data(np.array([[[1.0], [2.0]], [[-np.inf], [2.0]]]), 2, 1, batch=2)
    with pytest.raises(InputValidationError, match="real"):
        V.loss_data([[1.0], [1j]], 2, 1)
    D = V.loss_data([1.0, np.nan], 2, 1)           # NaN = missing, kept
    assert D.shape == (2, 1) and np.isnan(D[1, 0])


def test_observation_symbols_refuse_shadowing_and_duplicates():
    t = sp.Symbol("t")
    assert V.observation_symbols([x, y], [a], [d]) == (d,)
    assert V.observation_symbols([x, y], [a], d) == (d,)
    with pytest.raises(ModelError, match="also a state"):
        V.observation_symbols([x, y], [a], [x])
    with pytest.raises(ModelError, match="also a parameter"):
        V.observation_symbols([x, y], [a], [d, a])
    with pytest.raises(ModelError, match="also a time"):
        V.observation_symbols([x, y], [a], [t], t=t)
    with pytest.raises(ModelError, match="twice"):
        V.observation_symbols([x, y], [a], [d, d])
    with pytest.raises(ModelError, match="Symbol"):
        V.observation_symbols([x, y], [a], ["d"])


def test_loss_symbols_refuse_undeclared():
    with pytest.raises(ModelError, match="undeclared symbol"):
        V.loss_symbols([x], [a], None, (x - d) ** 2)
    V.loss_symbols([x], [a], None, (x - d) ** 2, [d])


def test_value_and_grad_refuses_inf_data(decay):
    loss = symode.ObservationLoss((x - d) ** 2, [d])
    with pytest.raises(InputValidationError, match="row 1"):
        decay.value_and_grad(loss, Z0, TH, TS, data=[[1.0], [np.inf]])


def test_value_and_grad_refuses_complex_data(decay):
    loss = symode.ObservationLoss((x - d) ** 2, [d])
    with pytest.raises(InputValidationError, match="real"):
        decay.value_and_grad(loss, Z0, TH, TS, data=[[1.0], [1j]])


def test_value_and_grad_refuses_a_data_symbol_that_is_a_state(decay):
    loss = symode.ObservationLoss((x - a) ** 2, [x])
    with pytest.raises(ModelError, match="also a state"):
        decay.value_and_grad(loss, Z0, TH, TS, data=[[1.0], [2.0]])


# ------------------------------------------------------------------------------------------ symode.testing


def test_symode_testing_is_reachable_after_import_symode():
    """README: ``symode.testing.check_gradients(...)`` after a plain ``import symode`` (fresh interpreter)."""
    code = ("import symode, sys; assert 'symode.testing' not in sys.modules; "
            "assert callable(symode.testing.check_gradients); assert 'testing' in dir(symode); "
            "assert symode.distributed.map_solve")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
