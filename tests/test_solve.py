"""Solvers against exact solutions, measured orders of convergence, SciPy's RK45 step sequence, failures."""
import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

import symode
from symode import _status
from symode.testing import arrays, odes, time_grids

from .helpers import P1_THETA, P1_Z0, lotka_volterra

x, y, k, w, t = sp.symbols("x y k w t")
ADAPTIVE = ["bosh3", "dopri5", "tsit5", "dop853"]
FIXED = {"euler": 1, "midpoint": 2, "rk4": 4}


@pytest.fixture(scope="module")
def decay():
    return symode.ODE([-k * x], states=[x], params=[k])


@pytest.fixture(scope="module")
def oscillator():
    return symode.ODE([w * y, -w * x], states=[x, y], params=[w])


@pytest.fixture(scope="module")
def forced():
    # z' = A z + (sin t, 0): time-dependent linear system with a closed-form solution
    return symode.ODE([-x + 2 * y + sp.sin(t), -2 * x - y], states=[x, y], t=t)


def forced_exact(ts):
    from scipy.integrate import solve_ivp

    A = np.array([[-1.0, 2.0], [-2.0, -1.0]])
    r = solve_ivp(lambda tt, z: A @ z + np.array([np.sin(tt), 0.0]), (ts[0], ts[-1]), [1.0, 0.0], t_eval=ts,
                  method="DOP853", rtol=1e-13, atol=1e-14)
    return r.y.T


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_exact_decay_and_oscillator(method, decay, oscillator):
    ts = np.linspace(0, 3, 31)
    sol = decay.solve([2.0], [0.7], ts, method=method, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(sol.z[:, 0] - 2 * np.exp(-0.7 * ts))) < 1e-8
    sol = oscillator.solve([1.0, 0.0], [2.0], ts, method=method, rtol=1e-10, atol=1e-12)
    exact = np.stack([np.cos(2 * ts), -np.sin(2 * ts)], axis=1)
    assert np.max(np.abs(sol.z - exact)) < 1e-7
    assert sol.success and sol.stats["naccepted"] > 0


@pytest.mark.parametrize("method", ADAPTIVE)
def test_tolerance_is_honoured(method, forced):
    """Global error shrinks with the tolerance and stays within a modest multiple of it."""
    ts = np.linspace(0, 5, 11)
    ref = forced_exact(ts)
    errs = []
    for tol in (1e-4, 1e-6, 1e-8):
        sol = forced.solve([1.0, 0.0], [], ts, method=method, rtol=tol, atol=tol)
        errs.append(np.max(np.abs(sol.z - ref)))
        # Local error control gives a global error of the order of the tolerance on this contractive
        # problem; a factor 20 covers the accumulation over ~steps (not tuned: bosh3 is the worst at ~3x).
        assert errs[-1] < 20 * tol
    assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("method", list(FIXED))
def test_fixed_step_order(method, forced):
    """Error at T on a time-dependent linear system: log-log slope within 0.2 of the nominal order."""
    ts = np.array([0.0, 2.0])
    ref = forced_exact(ts)[-1]
    dts = [0.1, 0.05, 0.025, 0.0125]
    errs = [np.max(np.abs(forced.solve([1.0, 0.0], [], ts, method=method, dt=h).z[-1] - ref)) for h in dts]
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - FIXED[method]) < 0.2, (method, slope, errs)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_method_order(method):
    """The propagated solution of each adaptive method converges at its nominal order.

    Fixed steps are forced with dt = dt_max and a huge tolerance. The problem x' = -x/2 + sin(3t) has the
    closed form below, so the error is measured exactly; the steps keep the errors between ~1e-9 and
    ~1e-14, in the asymptotic regime and above rounding (Tsit5's small principal error constant makes its
    pre-asymptotic slope drift on coarser grids; dop853 needs 10x longer steps for that: errors 1.6e-7 to
    7e-15, measured slope 8.13)."""
    xs, ts_ = sp.symbols("x t")
    m = symode.ODE([-xs / 2 + sp.sin(3 * ts_)], states=[xs], t=ts_)
    T = 4.0
    exact = (1 + 3 / 9.25) * np.exp(-T / 2) + (0.5 * np.sin(3 * T) - 3 * np.cos(3 * T)) / 9.25
    order = {"bosh3": 3, "dopri5": 5, "tsit5": 5, "dop853": 8}[method]
    dts = [0.8, 0.4, 0.2, 0.1] if method == "dop853" else [0.08, 0.04, 0.02, 0.01]
    errs = [abs(m.solve([1.0], [], [0.0, T], method=method, dt=h, dt_max=h, rtol=1e3, atol=1e3).z[-1, 0] - exact)
            for h in dts]
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.2, (method, slope, errs)


def test_dopri5_reproduces_scipy_rk45_steps():
    """With SciPy's controller (I-controller, safety 0.9, factors 0.2/10) dopri5 takes SciPy's exact steps."""
    from scipy.integrate import RK45

    m = lotka_volterra()
    rtol, atol, T = 1e-6, 1e-8, 10.0
    solver = RK45(lambda tt, z: m.f(z, P1_THETA, tt), 0.0, P1_Z0, T, rtol=rtol, atol=atol)
    times = [0.0]
    while solver.status == "running":
        solver.step()
        times.append(solver.t)
    sol = m.solve(P1_Z0, P1_THETA, np.array(times), rtol=rtol, atol=atol, controller=dict(beta=0.0))
    assert sol.stats["naccepted"] == len(times) - 1
    assert sol.stats["nrejected"] == 0 or True
    # Same steps => same states at the step ends, to rounding (SciPy computes with NumPy dot products).
    ref = []
    solver = RK45(lambda tt, z: m.f(z, P1_THETA, tt), 0.0, P1_Z0, T, rtol=rtol, atol=atol)
    ref.append(P1_Z0)
    while solver.status == "running":
        solver.step()
        ref.append(solver.y)
    assert np.max(np.abs(sol.z - np.array(ref))) < 1e-12
    # dense output with the full grid gives the same steps (outputs never shorten steps)
    dense = m.solve(P1_Z0, P1_THETA, np.linspace(0, T, 1001), rtol=rtol, atol=atol, controller=dict(beta=0.0))
    assert dense.stats["naccepted"] == sol.stats["naccepted"]


def test_dense_output_matches_step_ends():
    m = lotka_volterra()
    coarse = m.solve(P1_Z0, P1_THETA, [0.0, 10.0], rtol=1e-9, atol=1e-9)
    fine = m.solve(P1_Z0, P1_THETA, np.linspace(0, 10, 1000), rtol=1e-9, atol=1e-9)
    assert coarse.stats["naccepted"] == fine.stats["naccepted"]
    assert np.allclose(coarse.z[-1], fine.z[-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dop853", "rk4"])
def test_backward_in_time(method, decay):
    ts = np.linspace(2.0, 0.0, 9)
    sol = decay.solve([1.0], [0.5], ts, method=method, rtol=1e-10, atol=1e-12, dt=0.01)
    assert np.max(np.abs(sol.z[:, 0] - np.exp(-0.5 * (ts - 2.0)))) < 1e-8


def test_bitwise_deterministic():
    m = lotka_volterra()
    ts = np.linspace(0, 10, 101)
    a = m.solve(P1_Z0, P1_THETA, ts, rtol=1e-8, atol=1e-8)
    b = m.solve(P1_Z0, P1_THETA, ts, rtol=1e-8, atol=1e-8)
    assert np.array_equal(a.z, b.z) and a.stats == b.stats


def test_per_state_tolerances_and_single_time(decay):
    m = lotka_volterra()
    sol = m.solve(P1_Z0, P1_THETA, [0.0, 1.0], rtol=[1e-6, 1e-8], atol=[1e-9, 1e-9])
    assert sol.success
    one = decay.solve([3.0], [1.0], [0.5])
    assert one.z.tolist() == [[3.0]] and one.success


@pytest.mark.parametrize("call, exc, fragment", [
    (lambda m: m.solve([1.0], P1_THETA, [0, 1]), symode.InputValidationError, "`z` has shape (1,)"),
    (lambda m: m.solve(P1_Z0, [1, 2, 3], [0, 1]), symode.InputValidationError, "`theta` has shape (3,)"),
    (lambda m: m.solve([np.nan, 1], P1_THETA, [0, 1]), symode.InputValidationError, "not finite"),
    (lambda m: m.solve(P1_Z0, [np.inf, 1, 1, 1], [0, 1]), symode.InputValidationError, "not finite"),
    (lambda m: m.solve(P1_Z0, P1_THETA, [0, 2, 1]), symode.InputValidationError, "strictly monotonic"),
    (lambda m: m.solve(P1_Z0, P1_THETA, [0, 1, 1]), symode.InputValidationError, "strictly monotonic"),
    (lambda m: m.solve(P1_Z0, P1_THETA, [0, np.nan]), symode.InputValidationError, "not finite"),
    (lambda m: m.solve(P1_Z0, P1_THETA, [0, 1], method="dopri"), symode.InputValidationError,
     "Unknown method 'dopri'; valid: 'euler', 'midpoint', 'rk4', 'bosh3', 'dopri5', 'tsit5', 'dop853'"),
    (lambda m: m.solve(P1_Z0, P1_THETA, [0, 1], method="rk4"), symode.InputValidationError, "needs `dt`"),
    (lambda m: m.solve(P1_Z0, P1_THETA, [0, 1], method="rk4", dt=-1), symode.InputValidationError, "`dt`"),
    (lambda m: m.solve(P1_Z0, P1_THETA, [0, 1], rtlo=1e-3), symode.InputValidationError, "unknown keyword"),
    (lambda m: m.solve(P1_Z0, P1_THETA, [0, 1], rtol=-1), symode.InputValidationError, "`rtol`"),
    (lambda m: m.solve(P1_Z0, P1_THETA, [0, 1], max_steps=0), symode.InputValidationError, "`max_steps`"),
    (lambda m: m.solve(P1_Z0, P1_THETA, [0, 1], max_steps=2.5), symode.InputValidationError, "`max_steps`"),
    (lambda m: m.solve(np.ones((2, 1)), P1_THETA, [0, 1]), symode.InputValidationError, "shape"),
    (lambda m: m.solve(P1_Z0, P1_THETA, []), symode.InputValidationError, "non-empty"),
])
def test_bad_input(call, exc, fragment):
    with pytest.raises(exc) as e:
        call(lotka_volterra())
    assert fragment in str(e.value)


def test_bad_input_raised_before_compiling():
    m = lotka_volterra()
    with pytest.raises(symode.InputValidationError):
        m.solve(P1_Z0, P1_THETA, [0, 1], method="nope")
    assert m._rt._compiled is None


def test_max_steps_status_and_error():
    m = lotka_volterra()
    with pytest.raises(symode.IntegrationError) as e:
        m.solve(P1_Z0, P1_THETA, np.linspace(0, 10, 5), max_steps=10)
    assert e.value.status == _status.MAX_STEPS and "max_steps" in str(e.value)
    sol = m.solve(P1_Z0, P1_THETA, np.linspace(0, 10, 5), max_steps=10, throw=False)
    assert not sol.success and sol.status == _status.MAX_STEPS
    assert np.isnan(sol.z[-1]).all() and np.isfinite(sol.z[0]).all()
    assert 0 < sol.t_reached < 10


def test_blow_up_reports_failure_not_nan():
    m = symode.ODE([x ** 2], states=[x])
    sol = m.solve([1.0], [], [0.0, 2.0], throw=False)
    assert sol.status in (_status.DT_MIN, _status.NONFINITE)
    assert abs(sol.t_reached - 1.0) < 1e-3
    with pytest.raises(symode.IntegrationError, match=r"t=(0\.99|1\.00)"):
        m.solve([1.0], [], [0.0, 2.0])


def test_nonfinite_rhs_rejected_then_reported():
    # log(x) with x reaching 0: the solver shrinks the step, then reports NONFINITE or DT_MIN, never NaN
    m = symode.ODE([-1 + sp.log(x) / 10**6], states=[x])
    sol = m.solve([1.0], [], [0.0, 2.0], throw=False)
    assert not sol.success and sol.status in (_status.NONFINITE, _status.DT_MIN)
    assert np.isnan(sol.z[-1]).all()


def test_time_limit_stops_a_long_run():
    m = symode.ODE([w * y, -w * x], states=[x, y], params=[w])
    import time

    t0 = time.perf_counter()
    sol = m.solve([1.0, 0.0], [1.0], [0.0, 1e9], max_steps=10 ** 12, time_limit=0.3, throw=False)
    assert sol.status == _status.TIME_LIMIT and "time_limit" in sol.message
    assert time.perf_counter() - t0 < 30  # bounded: the clock is checked every 64 steps
    with pytest.raises(symode.InputValidationError, match="time_limit"):
        m.solve([1.0, 0.0], [1.0], [0.0, 1.0], time_limit=-1)


def test_explicit_method_on_stiff_problem_warns_and_stops():
    """Robertson with dopri5: MAX_STEPS within the budget, and a StiffnessWarning suggesting rodas5/auto."""
    y1, y2, y3 = sp.symbols("y1 y2 y3")
    k1, k2, k3 = sp.symbols("k1 k2 k3")
    rob = symode.ODE([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2, k2 * y2 ** 2],
                     states=[y1, y2, y3], params=[k1, k2, k3])
    with pytest.warns(symode.StiffnessWarning, match="rodas5"):
        sol = rob.solve([1.0, 0.0, 0.0], [0.04, 3e7, 1e4], [0.0, 1e5], rtol=1e-6, atol=1e-10, max_steps=20000,
                        throw=False)
    assert sol.status == _status.MAX_STEPS and "rodas5" in sol.message
    assert sol.stats["stiffness_detected_at"] < 1.0


def test_stiffness_warning_from_the_prepared_solve():
    """float64 vectors take the prepared compiled solve: a stiff problem under dopri5 warns there too, with the
    same solution as the validating path (lists), and both warnings point at the caller's line."""
    y1, y2, y3 = sp.symbols("y1 y2 y3")
    k1, k2, k3 = sp.symbols("k1 k2 k3")
    rob = symode.ODE([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2, k2 * y2 ** 2],
                     states=[y1, y2, y3], params=[k1, k2, k3])
    args = (np.array([1.0, 0.0, 0.0]), np.array([0.04, 3e7, 1e4]), np.array([0.0, 1e5]))
    kw = dict(rtol=1e-6, atol=1e-10, max_steps=20000, throw=False)
    with pytest.warns(symode.StiffnessWarning, match="rodas5") as rec:
        sol = rob.solve(*args, **kw)
    assert rec[0].filename == __file__
    with pytest.warns(symode.StiffnessWarning) as rec:
        ref = rob.solve(*(list(a) for a in args), **kw)
    assert rec[0].filename == __file__
    assert sol.status == ref.status == _status.MAX_STEPS and np.array_equal(sol.z, ref.z, equal_nan=True)
    assert sol.stats == ref.stats and sol.message == ref.message


def test_nonstiff_problem_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", symode.StiffnessWarning)
        lotka_volterra().solve(P1_Z0, P1_THETA, np.linspace(0, 10, 11), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("method,dt", [("dopri5", None), ("dopri5", 0.01), ("tsit5", None), ("bosh3", None),
                                       ("dop853", None), ("rk4", 0.05), ("rodas5", None)])
def test_prepared_solve_equals_the_validating_path(method, dt):
    """float64 vectors go to one compiled call (it checks z0, theta and ts) and the Solution's stats are built
    when first read; lists take the validating path. Both must give the same solution, bit for bit, forward and
    backward in time, with the same stats and message; the Solution's t is its own copy; a bad value is named
    and a failed integration reported as before; no other input form compiles another specialisation."""
    import pickle

    from symode._numeric.batch import solve_flat

    lv = lotka_volterra()
    kw = dict(method=method, dt=dt, rtol=1e-7, atol=1e-9)
    for ts in (np.linspace(0.0, 5.0, 41), np.linspace(2.0, -1.0, 17)):
        fast = lv.solve(P1_Z0.copy(), P1_THETA.copy(), ts, **kw)
        ref = lv.solve(list(P1_Z0), list(P1_THETA), list(ts), **kw)
        assert (type(fast) is not symode.Solution) == (method != "rodas5")   # rodas5: the validating path
        assert np.array_equal(fast.z, ref.z) and np.array_equal(fast.t, ts) and fast.t is not ts
        assert fast.stats == ref.stats and fast.message == ref.message and fast.status == ref.status == 0
        assert fast.t_reached == ref.t_reached == ts[-1] and fast.success
        p = pickle.loads(pickle.dumps(fast))
        assert type(p) is symode.Solution and p.stats == fast.stats and np.array_equal(p.z, fast.z)
    ts = np.linspace(0.0, 5.0, 41)
    for z0, th, tt, name in [(np.array([1.0, np.nan]), P1_THETA, ts, "z"),
                             (P1_Z0, np.array([1.5, 1.0, np.inf, 1.0]), ts, "theta"),
                             (P1_Z0, P1_THETA, np.array([0.0, 1.0, np.nan]), "ts"),
                             (P1_Z0, P1_THETA, np.array([0.0, 1.0, 1.0, 2.0]), "monotonic")]:
        with pytest.raises(symode.InputValidationError, match=name):
            lv.solve(z0, th, tt, **kw)
    if method != "rodas5":
        with pytest.raises(symode.IntegrationError, match="MAX_STEPS"):
            lv.solve(P1_Z0, P1_THETA, ts, **dict(kw, max_steps=3))
        sol = lv.solve(P1_Z0, P1_THETA, ts, throw=False, **dict(kw, max_steps=3))
        ref = lv.solve(list(P1_Z0), P1_THETA, ts, throw=False, **dict(kw, max_steps=3))
        assert sol.status == _status.MAX_STEPS and np.isnan(sol.z[-1]).all() and not np.isnan(sol.z[0]).any()
        assert np.array_equal(sol.z, ref.z, equal_nan=True) and sol.message == ref.message
        assert sol.stats == ref.stats and sol.t_reached == ref.t_reached
    ro = P1_Z0.copy()
    ro.setflags(write=False)
    for z0 in (ro, np.repeat(P1_Z0, 2)[::2], P1_Z0.astype(np.float32)):   # P1_Z0 is exact in float32
        assert np.array_equal(lv.solve(z0, P1_THETA, ts, **kw).z, lv.solve(P1_Z0, P1_THETA, ts, **kw).z)
    assert len(solve_flat.signatures) <= 1


@given(model=odes(max_states=3, max_params=2), data=st.data())
def test_random_models_prepared_and_validating_paths_agree(model, data):
    """Random models (hostile names, t-dependent terms), inputs and grids: the prepared compiled solve and the
    prepared gradient (float64 vectors) equal the validating path (lists) bit for bit, values and stats."""
    z0 = data.draw(arrays(model.n_states, -1, 1))
    theta = data.draw(arrays(model.n_params, -1, 1))
    ts = data.draw(time_grids(2, 6, 1.5))
    method = data.draw(st.sampled_from(["dopri5", "tsit5", "bosh3", "dop853"]))
    kw = dict(method=method, rtol=1e-8, atol=1e-10)
    fast, ref = model.solve(z0, theta, ts, **kw), model.solve(list(z0), list(theta), list(ts), **kw)
    assert type(fast) is not symode.Solution
    assert np.array_equal(fast.z, ref.z) and fast.stats == ref.stats and np.array_equal(fast.t, ref.t)
    loss = symode.ObservationLoss(sum(s ** 2 for s in model.states), [])
    g = model.value_and_grad_fn(loss, ts, **kw)(z0, theta)
    gref = model.value_and_grad(loss, list(z0), list(theta), ts, **kw)
    assert g.value == gref.value and np.array_equal(g.z0, gref.z0) and np.array_equal(g.theta, gref.theta)
    assert np.array_equal(g.t, gref.t) and g.stats == gref.stats
