"""Batched solves and gradients: identical to solo runs, per-member status, broadcasting."""
import numba
import numpy as np
import pytest

import symode
from symode import _status

from .helpers import P1_THETA, P1_Z0, lotka_volterra


@pytest.fixture(scope="module")
def lv():
    return lotka_volterra()


def test_batch_equals_solo_bitwise(lv):
    u = np.random.default_rng(0).uniform(-1, 1, (16, 4))
    TH = P1_THETA * (1 + 0.1 * u)
    ts = np.linspace(0, 10, 11)
    sol = lv.solve(P1_Z0, TH, ts, rtol=1e-6, atol=1e-6)
    assert sol.z.shape == (16, 11, 2) and sol.success
    for b in (0, 5, 15):
        solo = lv.solve(P1_Z0, TH[b], ts, rtol=1e-6, atol=1e-6)
        assert np.array_equal(solo.z, sol.z[b])
        assert sol.stats["nfev"][b] == solo.stats["nfev"]


def test_batch_independent_of_thread_count(lv):
    u = np.random.default_rng(1).uniform(-1, 1, (8, 4))
    TH = P1_THETA * (1 + 0.1 * u)
    Z0 = np.abs(np.random.default_rng(2).normal(1, 0.1, (8, 2)))
    ts = np.linspace(0, 5, 6)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = lv.solve(Z0, TH, ts).z
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        b = lv.solve(Z0, TH, ts).z
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(a, b)


def test_batch_gradients_match_solo(lv):
    TH = np.stack([P1_THETA, P1_THETA * 1.05, P1_THETA * 0.95])
    ts = np.linspace(0, 4, 9)
    cot = np.random.default_rng(3).normal(size=(9, 2))
    g = lv.vjp(P1_Z0, TH, ts, cot, rtol=1e-8, atol=1e-8)
    assert g.theta.shape == (3, 4) and g.z0.shape == (3, 2) and g.t.shape == (3, 9)
    for b in range(3):
        solo = lv.vjp(P1_Z0, TH[b], ts, cot, rtol=1e-8, atol=1e-8)
        assert np.array_equal(solo.theta, g.theta[b]) and np.array_equal(solo.z0, g.z0[b])
        assert np.array_equal(solo.t, g.t[b])
    gs = lv.vjp(P1_Z0, TH, ts, cot, rtol=1e-8, atol=1e-8, reduce="sum")
    assert np.allclose(gs.theta, g.theta.sum(0), rtol=0, atol=1e-12)


def test_failing_member_reported_by_index(lv):
    TH = np.stack([P1_THETA, P1_THETA, P1_THETA])
    Z0 = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    sol = lv.solve(Z0, TH, np.linspace(0, 10, 3), max_steps=5000, throw=False)
    assert sol.success
    import sympy as sp

    x, c = sp.symbols("x c")
    blow = symode.ODE([c * x ** 2], states=[x], params=[c])
    sol = blow.solve([1.0], [[0.1], [2.0], [0.2]], [0.0, 1.0], throw=False)
    assert sol.statuses.tolist()[1] in (_status.DT_MIN, _status.NONFINITE)
    assert sol.statuses[0] == 0 and sol.statuses[2] == 0
    assert np.isnan(sol.z[1, -1]).all() and np.isfinite(sol.z[0]).all()
    assert sol.stats["failed"].tolist() == [1]
    with pytest.raises(symode.IntegrationError, match=r"indices \[1\]"):
        blow.solve([1.0], [[0.1], [2.0], [0.2]], [0.0, 1.0])


def test_batch_shape_errors(lv):
    with pytest.raises(symode.InputValidationError, match="do not broadcast"):
        lv.solve(np.ones((3, 2)), np.ones((2, 4)), [0, 1])
    with pytest.raises(symode.InputValidationError, match="expected"):
        lv.solve(np.ones((3, 3)), P1_THETA, [0, 1])


def test_batched_value_and_grad_equals_solo_bitwise(lv):
    """One compiled call over the batch (forward, loss, cotangent, sweep per member) = solo value_and_grad."""
    import sympy as sp

    x, y = lv.states
    dx, dy = sp.symbols("dx dy")
    loss = symode.ObservationLoss((sp.Abs(x - dx) + (y - dy) ** 2) / 7, [dx, dy])
    ts = np.linspace(0, 2, 11)
    rng = np.random.default_rng(0)
    Z = 1 + 0.1 * rng.random((5, 2))
    TH = np.asarray(P1_THETA) * (1 + 0.1 * rng.random((5, 4)))
    data = 1 + 0.3 * rng.random((5, 11, 2))
    data[0, 3, 1] = np.nan                      # a missing observation in one member only
    kw = dict(rtol=1e-9, atol=1e-9)
    per = lv.value_and_grad(loss, Z, TH, ts, data=data, **kw)
    tot = lv.value_and_grad(loss, Z, TH, ts, data=data, reduce="sum", **kw)
    assert per.value.shape == (5,) and per.theta.shape == (5, 4) and per.z0.shape == (5, 2)
    for b in range(5):
        solo = lv.value_and_grad(loss, Z[b], TH[b], ts, data=data[b], **kw)
        assert per.value[b] == solo.value
        assert np.array_equal(per.theta[b], solo.theta) and np.array_equal(per.z0[b], solo.z0)
        assert np.array_equal(per.t[b], solo.t)
    assert tot.value == pytest.approx(per.value.sum(), rel=1e-15)
    assert np.allclose(tot.theta, per.theta.sum(0), rtol=1e-14, atol=0)
    # shared data (m, w) broadcast over the batch; a final-state SymPy loss
    shared = lv.value_and_grad(loss, Z, TH[0], ts, data=data[1], **kw)
    assert np.array_equal(shared.theta[1], lv.value_and_grad(loss, Z[1], TH[0], ts, data=data[1], **kw).theta)
    fin = lv.value_and_grad(x ** 2 * y, Z[:2], TH[0], ts, **kw)
    assert np.array_equal(fin.z0[0], lv.value_and_grad(x ** 2 * y, Z[0], TH[0], ts, **kw).z0)
    with pytest.raises(symode.InputValidationError, match="discrete"):
        lv.value_and_grad(loss, Z, TH, ts, data=data, adjoint="checkpoint", **kw)
    with pytest.raises(symode.InputValidationError, match="members"):
        lv.value_and_grad(loss, Z, TH, ts, data=data[:3], **kw)


def test_grad_t_false_skips_only_the_time_gradient(lv):
    x, y = lv.states
    ts = np.linspace(0, 2, 11)
    loss = symode.ObservationLoss(x ** 2 + y, [])
    full = lv.value_and_grad(loss, P1_Z0, P1_THETA, ts)
    lean = lv.value_and_grad(loss, P1_Z0, P1_THETA, ts, grad_t=False)
    assert lean.t is None and lean.value == full.value
    assert np.array_equal(lean.theta, full.theta) and np.array_equal(lean.z0, full.z0)
    Z = np.tile(P1_Z0, (3, 1))
    bl = lv.value_and_grad(loss, Z, P1_THETA, ts, grad_t=False, reduce="sum")
    assert bl.t is None and np.allclose(bl.theta, 3 * full.theta, rtol=1e-14)
