"""Gradients: every adjoint variant against finite differences, closed forms and each other."""
import os

import numpy as np
import pytest
import scipy.linalg
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import symode
from symode.testing import arrays, check_gradients, odes, time_grids

from .helpers import P1_THETA, P1_Z0, lotka_volterra

ALL = ("discrete", "checkpoint", "backsolve", "forward")
x, y, k, t = sp.symbols("x y k t")


@pytest.fixture(scope="module")
def decay():
    return symode.ODE([-k * x], states=[x], params=[k])


@pytest.mark.parametrize("adjoint", ALL)
def test_exponential_decay_closed_form(decay, adjoint):
    """L = z(T)^2 with z(T) = z0 exp(-k T): dL/dz0 = 2 z0 e^{-2kT}, dL/dk = -2 T z(T)^2, dL/dT = -2k z(T)^2."""
    z0, kk, T = 1.7, 0.8, 1.3
    ts = np.array([0.0, T])
    zT = z0 * np.exp(-kk * T)
    cot = np.array([[0.0], [2 * zT]])
    g = decay.vjp([z0], [kk], ts, cot, adjoint=adjoint, rtol=1e-11, atol=1e-13)
    # tolerances: the continuous adjoints carry the solver's error (rtol 1e-11 -> ~1e-9 relative)
    assert abs(g.z0[0] - 2 * z0 * np.exp(-2 * kk * T)) < 1e-8
    assert abs(g.theta[0] - (-2 * T * zT ** 2)) < 1e-8
    assert abs(g.t[1] - (-2 * kk * zT ** 2)) < 1e-8
    # dL/dt0 = -dL/dT for an autonomous problem
    assert abs(g.t[0] - 2 * kk * zT ** 2) < 1e-8


@pytest.mark.parametrize("adjoint", ALL)
def test_linear_system_matches_expm_frechet(adjoint):
    """z' = A z with A = theta (2x2): dL/dA from the Frechet derivative of expm, L = c . z(T)."""
    a = sp.symbols("a0:4")
    A = sp.Matrix(2, 2, a)
    m = symode.ODE(list(A * sp.Matrix([x, y])), states=[x, y], params=list(a))
    Av = np.array([[-0.5, 1.2], [-0.9, -0.3]])
    z0 = np.array([1.0, -0.5])
    c = np.array([0.7, -1.1])
    T = 1.5
    g = m.vjp(z0, Av.ravel(), [0.0, T], np.array([[0.0, 0.0], c]), adjoint=adjoint, rtol=1e-11, atol=1e-12)
    E = scipy.linalg.expm(Av * T)
    ref = np.empty(4)
    for idx in range(4):
        dA = np.zeros(4)
        dA[idx] = 1.0
        _, L = scipy.linalg.expm_frechet(Av * T, dA.reshape(2, 2) * T)
        ref[idx] = c @ L @ z0
    assert np.allclose(g.theta, ref, rtol=1e-7, atol=1e-9)
    assert np.allclose(g.z0, E.T @ c, rtol=1e-8)


@pytest.mark.parametrize("adjoint", ALL)
def test_logistic_many_observations(adjoint):
    r, K = sp.symbols("r K")
    m = symode.ODE([r * x * (1 - x / K)], states=[x], params=[r, K])
    ts = np.linspace(0, 6, 61)
    th = np.array([0.9, 3.0])
    rep = check_gradients(m, [0.2], th, ts, adjoints=(adjoint,))
    # continuous adjoints at rtol 1e-10: error ~1e-8 relative; FD with eps 1e-4 adds ~1e-8 truncation
    assert rep["worst"][1] < 1e-5, rep


def test_p1_all_adjoints_agree_with_fd():
    m = lotka_volterra()
    ts = np.linspace(0, 10, 101)
    rep = check_gradients(m, P1_Z0, P1_THETA, ts)
    for name in ALL:
        assert rep[name]["rel_err"] < 1e-5, (name, rep[name]["rel_err"])


def test_p1_reference_gradient():
    """The P1 gradient agrees with the values the peers (diffrax, CasADi) report for the same problem."""
    m = lotka_volterra()
    ts = np.linspace(0, 10, 101)
    sol = m.solve(P1_Z0, P1_THETA, ts, rtol=1e-10, atol=1e-10)
    g = m.vjp(P1_Z0, P1_THETA, ts, 2 * sol.z, rtol=1e-10, atol=1e-10)
    ref = np.array([-1039.428031652678, -257.9941014593774, 69.55397486530396, -1105.1221883673236,
                    1030.658674131058, -3627.01734144973])  # diffrax, rtol=atol=1e-8 (its anchor run)
    # diffrax solved at rtol = atol = 1e-8, so its own error is ~1e-7 of the gradient's size
    got = np.concatenate([g.z0, g.theta])
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-6


def test_rk4_discrete_adjoint_is_exact_for_the_map():
    """With fixed steps the discrete adjoint is the exact derivative of the rk4 map: FD agree to ~1e-9."""
    m = lotka_volterra()
    ts = np.linspace(0, 3, 7)
    rep = check_gradients(m, P1_Z0, P1_THETA, ts, adjoints=("discrete",), method="rk4", dt=0.01, eps=1e-5)
    assert rep["discrete"]["rel_err"] < 1e-7


def test_time_gradients_against_fd():
    m = lotka_volterra()
    ts = np.linspace(0, 4, 9)
    cot = np.random.default_rng(1).normal(size=(9, 2))
    g = m.vjp(P1_Z0, P1_THETA, ts, cot, rtol=1e-11, atol=1e-11)

    def L(tsv):
        return float(np.sum(cot * m.solve(P1_Z0, P1_THETA, tsv, rtol=1e-11, atol=1e-11).z))

    for i in (0, 4, 8):
        e = 1e-4
        tp, tm = ts.copy(), ts.copy()
        tp[i] += e
        tm[i] -= e
        assert abs(g.t[i] - (L(tp) - L(tm)) / (2 * e)) < 1e-5 * max(1, abs(g.t[i]))


@pytest.mark.parametrize("layout", ["final", "first_only", "many"])
def test_output_time_layouts(layout):
    m = lotka_volterra()
    ts = np.linspace(0, 2, 6)
    cot = np.zeros((6, 2))
    if layout == "final":
        cot[-1] = [1.0, -2.0]
    elif layout == "first_only":
        cot[0] = [1.0, -2.0]
    else:
        cot[:] = np.random.default_rng(2).normal(size=(6, 2))
    rep = check_gradients(m, P1_Z0, P1_THETA, ts, cotangent=cot)
    if layout == "first_only":
        for name in ALL:
            assert np.array_equal(rep[name]["z0"], [1.0, -2.0]) and np.all(rep[name]["theta"] == 0)
    else:
        assert rep["worst"][1] < 1e-5


def test_lorenz_and_dissipative_backsolve_loses_accuracy():
    """Where backsolve's backward re-integration of z is unstable, checkpoint and discrete stay exact."""
    # Strongly dissipative: z' = -50 (z - sin t): re-integrating backward amplifies errors by e^{50 T}.
    zz = sp.Symbol("z")
    lam = sp.Symbol("lam")
    m = symode.ODE([-lam * (zz - sp.sin(t))], states=[zz], params=[lam], t=t)
    ts = np.array([0.0, 1.0])
    rep = check_gradients(m, [2.0], [50.0], ts, rtol=1e-8, atol=1e-10)
    assert rep["checkpoint"]["rel_err"] < 1e-4 and rep["discrete"]["rel_err"] < 1e-4
    with pytest.warns(RuntimeWarning, match="backsolve"):
        g = m.vjp([2.0], [50.0], ts, [[0.0], [1.0]], adjoint="backsolve", rtol=1e-8, atol=1e-10)
    err_bs = abs(g.z0[0] - rep["fd"]["z0"][0]) / abs(rep["fd"]["z0"][0])
    assert err_bs > 1e3 * rep["checkpoint"]["rel_err"]


def test_lorenz_short_horizon_all_variants():
    s_, r_, b_ = sp.symbols("sigma rho beta")
    X, Y, Z = sp.symbols("X Y Z")
    m = symode.ODE([s_ * (Y - X), X * (r_ - Z) - Y, X * Y - b_ * Z], states=[X, Y, Z], params=[s_, r_, b_])
    ts = np.linspace(0, 1, 11)
    z0, th = np.ones(3), np.array([10.0, 28.0, 8 / 3])
    rep = check_gradients(m, z0, th, ts, cotangent=None, rtol=1e-10, atol=1e-10)
    assert rep["discrete"]["rel_err"] < 1e-5 and rep["checkpoint"]["rel_err"] < 1e-5
    assert rep["forward"]["rel_err"] < 1e-5
    # backsolve re-integrates the chaotic z backward: still acceptable on [0, 1] at this tolerance
    assert rep["backsolve"]["rel_err"] < 1e-3


def test_losses_closed_forms(decay):
    z0, kk, T = 2.0, 0.5, 1.0
    zT = z0 * np.exp(-kk * T)
    g = decay.value_and_grad(x ** 2 + k ** 2, [z0], [kk], [0.0, T], rtol=1e-11, atol=1e-13)
    assert abs(g.value - (zT ** 2 + kk ** 2)) < 1e-10
    assert abs(g.z0[0] - 2 * zT * np.exp(-kk * T)) < 1e-9
    assert abs(g.theta[0] - (-2 * T * zT ** 2 + 2 * kk)) < 1e-9
    # running cost: int_0^T z^2 = z0^2 (1 - e^{-2kT}) / (2k)
    g = decay.value_and_grad(symode.RunningCost(x ** 2), [z0], [kk], [0.0, T], rtol=1e-11, atol=1e-13)
    assert abs(g.value - z0 ** 2 * (1 - np.exp(-2 * kk * T)) / (2 * kk)) < 1e-10
    assert abs(g.z0[0] - 2 * z0 * (1 - np.exp(-2 * kk * T)) / (2 * kk)) < 1e-9
    # observations with a missing value (NaN skipped)
    xo = sp.Symbol("x_obs")
    ts = np.linspace(0, 2, 5)
    data = (z0 * np.exp(-kk * ts) + 0.1).reshape(-1, 1)
    data[2] = np.nan
    g = decay.value_and_grad(symode.ObservationLoss((x - xo) ** 2, [xo]), [z0], [kk], ts, data=data, rtol=1e-11,
                             atol=1e-13)
    assert abs(g.value - 4 * 0.01) < 1e-10
    # callable loss
    g2 = decay.value_and_grad(lambda tt, zz: (float(np.sum(zz ** 2)), 2 * zz), [z0], [kk], ts, rtol=1e-11, atol=1e-13)
    assert abs(g2.value - np.sum((z0 * np.exp(-kk * ts)) ** 2)) < 1e-9


def test_gradient_flow_closed_form():
    """L = theta^4 / 2: theta' = -2 eta theta^3, theta(t) = theta0 (1 + 4 eta theta0^2 t)^(-1/2)."""
    th = sp.Symbol("theta")
    eta = 0.1
    flow = symode.gradient_flow(th ** 4 / 2, [th], eta=eta)
    assert sp.simplify(flow.rhs[0] + 2 * eta * th ** 3) == 0
    ts = np.linspace(0, 20, 21)
    s = flow.solve([1.5], [], ts, rtol=1e-10, atol=1e-12)
    exact = 1.5 * (1 + 4 * eta * 1.5 ** 2 * ts) ** -0.5
    assert np.max(np.abs(s.z[:, 0] - exact)) < 1e-8
    # with a symbolic learning rate it becomes the flow's parameter
    e = sp.Symbol("eta")
    flow2 = symode.gradient_flow(th ** 4 / 2, [th], eta=e)
    assert flow2.params == (e,)
    assert np.allclose(flow2.solve([1.5], [eta], ts, rtol=1e-10, atol=1e-12).z[:, 0], exact, atol=1e-8)


def test_vjp_bad_input():
    m = lotka_volterra()
    with pytest.raises(symode.InputValidationError, match="Unknown adjoint 'adjoint'"):
        m.vjp(P1_Z0, P1_THETA, [0, 1], np.zeros((2, 2)), adjoint="adjoint")
    with pytest.raises(symode.InputValidationError, match="cotangent"):
        m.vjp(P1_Z0, P1_THETA, [0, 1], np.zeros((3, 2)))
    with pytest.raises(symode.InputValidationError, match="NaN"):
        m.vjp(P1_Z0, P1_THETA, [0, 1], np.full((2, 2), np.nan))


def test_unused_parameter_gradient_is_exactly_zero():
    m = symode.ODE([-k * x], states=[x], params=[k, y])
    for adj in ALL:
        g = m.vjp([1.0], [0.5, 3.0], [0, 1], [[0.0], [1.0]], adjoint=adj)
        assert g.theta[1] == 0.0


@settings(max_examples=int(os.environ.get("SYMODE_GRAD_EXAMPLES", "6")))
@given(model=odes(max_states=3, max_params=2), data=st.data())
def test_random_models_all_adjoints_agree(model, data):
    """dopri5 at rtol 1e-10: discrete, checkpoint and forward within 1e-5 of central FD; backsolve within 1e-4
    (it re-integrates z backward, adding the backward solve's error, amplified where the random dynamics
    contract; 1e-4 bounds that on these stable, short-horizon models)."""
    z0 = data.draw(arrays(model.n_states, -1, 1))
    theta = data.draw(arrays(model.n_params, -1, 1))
    ts = data.draw(time_grids(2, 5, 1.5))
    rep = check_gradients(model, z0, theta, ts)
    for name in ("discrete", "checkpoint", "forward"):
        assert rep[name]["rel_err"] < 1e-5, (name, rep[name]["rel_err"])
    assert rep["backsolve"]["rel_err"] < 1e-4
    # all kinds agree with each other
    for name in ("checkpoint", "backsolve", "forward"):
        assert np.allclose(rep[name]["theta"], rep["discrete"]["theta"], rtol=1e-4, atol=1e-7)


def test_checkpoint_memory_is_bounded_by_the_checkpoint_count():
    """checkpoints=K stores at most K states (+2 floats per step) and replays segments bitwise; the gradient
    agrees with the all-steps-stored checkpoint adjoint to the backward solver's tolerance."""
    m = lotka_volterra()
    ts = np.linspace(0, 10, 101)
    cot = 2 * m.solve(P1_Z0, P1_THETA, ts, rtol=1e-10, atol=1e-10).z
    ref = m.vjp(P1_Z0, P1_THETA, ts, cot, adjoint="checkpoint", rtol=1e-10, atol=1e-10)
    one = m.vjp(P1_Z0, P1_THETA, ts, cot, adjoint="checkpoint", rtol=1e-10, atol=1e-10, checkpoints=1)
    assert np.array_equal(one.theta, ref.theta)  # one segment replayed bitwise = the stored forward pass
    for K in (3, 10, 40):
        g = m.vjp(P1_Z0, P1_THETA, ts, cot, adjoint="checkpoint", rtol=1e-10, atol=1e-10, checkpoints=K)
        assert g.stats["checkpoints"] <= K
        assert np.max(np.abs(g.theta - ref.theta)) / np.max(np.abs(ref.theta)) < 1e-8
        assert np.max(np.abs(g.z0 - ref.z0)) / np.max(np.abs(ref.z0)) < 1e-8


def test_fused_value_and_grad_equals_solve_plus_vjp():
    """value_and_grad with a compiled loss runs forward, loss, cotangent and sweep in one compiled call: the result
    is bitwise that of solve + the loss's cotangent + vjp (same arithmetic), and an ObservationLoss without data
    symbols needs no data."""
    lv = lotka_volterra()
    xs, ys = lv.states
    ts = np.linspace(0, 10, 101)
    kw = dict(rtol=1e-8, atol=1e-8)
    g = lv.value_and_grad(symode.ObservationLoss(xs ** 2 + ys ** 2, []), P1_Z0, P1_THETA, ts, **kw)
    s = lv.solve(P1_Z0, P1_THETA, ts, **kw)
    g2 = lv.vjp(P1_Z0, P1_THETA, ts, 2 * s.z, **kw)
    assert g.value == np.sum(s.z ** 2)
    assert np.array_equal(g.theta, g2.theta) and np.array_equal(g.z0, g2.z0) and np.array_equal(g.t, g2.t)
    # a loss that depends on theta too: its own dL/dtheta joins the adjoint's
    a = lv.params[0]
    g3 = lv.value_and_grad(symode.ObservationLoss(xs ** 2 + a ** 2, []), P1_Z0, P1_THETA, ts, **kw)
    g4 = lv.vjp(P1_Z0, P1_THETA, ts, np.column_stack([2 * s.z[:, 0], 0 * s.z[:, 1]]), **kw)
    assert np.allclose(g3.theta, g4.theta + np.array([2 * P1_THETA[0] * ts.size, 0, 0, 0]), rtol=1e-13, atol=0)


def test_value_and_grad_fn_equals_value_and_grad():
    """model.value_and_grad_fn prepares ts, the loss and the solver settings once: every call equals
    value_and_grad with the same arguments bit for bit (fused path), and the cases it does not prepare (another
    adjoint, a batch) go through value_and_grad itself."""
    lv = lotka_volterra()
    xs, ys = lv.states
    ts = np.linspace(0, 10, 101)
    xo = sp.Symbol("x_obs")
    data = np.cos(ts).reshape(-1, 1)
    data[7] = np.nan
    cases = [(symode.ObservationLoss(xs ** 2 + ys ** 2, []), None, dict(grad_t=False)),
             (symode.ObservationLoss((xs - xo) ** 2 + lv.params[0] ** 2, [xo]), data, {}),
             (symode.FinalLoss(xs * ys), None, dict(method="tsit5", rtol=1e-9, atol=1e-9)),
             (ys ** 2, None, dict(adjoint="checkpoint"))]
    rng = np.random.default_rng(3)
    for loss, d, kw in cases:
        fn = lv.value_and_grad_fn(loss, ts, data=d, **kw)
        for _ in range(2):
            th = P1_THETA * (1 + 0.05 * rng.normal(size=4))
            g, ref = fn(P1_Z0, th), lv.value_and_grad(loss, list(P1_Z0), th, ts, data=d, **kw)   # validating path
            assert g.value == ref.value
            assert np.array_equal(g.z0, ref.z0) and np.array_equal(g.theta, ref.theta)
            assert (g.t is None and ref.t is None) or np.array_equal(g.t, ref.t)
            g.solution.t[:] = 0.0                      # results are the caller's: the prepared ts is untouched
    assert not fn.prepared                            # checkpoint: not prepared, value_and_grad each call
    fn = lv.value_and_grad_fn(cases[0][0], ts, reduce="sum", grad_t=False)
    Z = np.array([P1_Z0, 1.1 * P1_Z0])
    g = fn(Z, P1_THETA)
    ref = lv.value_and_grad(cases[0][0], Z, P1_THETA, ts, reduce="sum", grad_t=False)
    assert g.value == ref.value and np.array_equal(g.theta, ref.theta)
    with pytest.raises(symode.InputValidationError, match="unknown keyword"):
        lv.value_and_grad_fn(cases[0][0], ts, rtols=1e-6)
    with pytest.raises(symode.InputValidationError, match="monotonic"):
        lv.value_and_grad_fn(cases[0][0], np.array([0.0, 0.0, 1.0]))


def test_value_and_grad_fn_inputs_failures_and_results():
    """The prepared call hands float64 vectors of the right size straight to the compiled call, which checks
    that they are finite; every other input goes through the validating path. Whatever the input's form the
    result is the same, a bad input is named, a failed integration is raised (or returned with throw=False),
    and the result's lazily built fields (t, stats, solution) equal value_and_grad's, can be set, and pickle
    as a plain Gradient."""
    import pickle

    lv = lotka_volterra()
    xs, ys = lv.states
    ts = np.linspace(0, 10, 101)
    loss = symode.ObservationLoss(xs ** 2 + ys ** 2, [])
    fn = lv.value_and_grad_fn(loss, ts)
    ref = lv.value_and_grad(loss, P1_Z0, P1_THETA, ts)
    z2 = np.zeros((2, 2))
    z2[:, 0] = P1_Z0
    ro = P1_Z0.copy()
    ro.setflags(write=False)
    forms = [(P1_Z0, P1_THETA), (list(P1_Z0), tuple(P1_THETA)), (z2[:, 0], P1_THETA), (ro, P1_THETA),
             (P1_Z0.astype(np.float32).astype(np.float64), P1_THETA.astype(np.int64) * 0 + P1_THETA)]
    for z0, th in forms:
        g = fn(z0, th)
        assert g.value == ref.value and np.array_equal(g.z0, ref.z0) and np.array_equal(g.theta, ref.theta)
        assert np.array_equal(g.t, ref.t)
        assert g.stats == ref.stats
        assert np.array_equal(g.solution.z, ref.solution.z) and np.array_equal(g.solution.t, ts)
        assert g.solution.success and g.solution.t_reached == ref.solution.t_reached
    from symode._numeric.batch import vjp_discrete_flat

    assert len(vjp_discrete_flat.signatures) == 1  # no other input form reached (and compiled) the fast path
    g = fn(P1_Z0, P1_THETA)
    assert type(g) is not symode.Gradient          # the prepared result, built lazily
    p = pickle.loads(pickle.dumps(g))
    assert type(p) is symode.Gradient and p.value == g.value and np.array_equal(p.theta, g.theta)
    assert p.stats == g.stats and np.array_equal(p.solution.z, g.solution.z)
    g.stats = {"mine": 1}
    g.t = None
    assert g.stats == {"mine": 1} and g.t is None
    g2 = fn(P1_Z0, P1_THETA)                       # a new call, new arrays: the earlier result is untouched
    assert g2.z0 is not g.z0 and np.array_equal(g2.z0, ref.z0)
    for bad, match in [((np.array([1.0, np.nan]), P1_THETA), "z"), ((P1_Z0, np.array([1.5, np.inf, 3, 1])), "theta"),
                       ((np.ones(3), P1_THETA), "z"), ((P1_Z0, np.ones(5)), "theta")]:
        with pytest.raises(symode.InputValidationError, match=match):
            fn(*bad)
    short = lv.value_and_grad_fn(loss, ts, max_steps=20)
    with pytest.raises(symode.IntegrationError, match="MAX_STEPS"):
        short(P1_Z0, P1_THETA)
    g = lv.value_and_grad_fn(loss, ts, max_steps=20, throw=False)(P1_Z0, P1_THETA)
    assert not g.solution.success and g.solution.status_name == "MAX_STEPS" and g.stats["status"] == 1
    assert np.all(np.isnan(g.theta))
    ref = lv.value_and_grad(loss, list(P1_Z0), P1_THETA, ts, max_steps=20, throw=False)   # the validating path
    assert g.stats == ref.stats and g.solution.stats == ref.solution.stats
    assert np.array_equal(g.solution.z, ref.solution.z, equal_nan=True)
    assert np.array_equal(g.z0, ref.z0, equal_nan=True) and np.array_equal(g.t, ref.t, equal_nan=True)


def test_repeated_value_and_grad_calls_are_prepared():
    """value_and_grad called again with the same loss object, output times and settings (no data) is served by
    a value_and_grad_fn prepared at its second call: same results bit for bit as the general path, and a loop
    over changing output times or a loss with data keeps taking the general path."""
    lv = lotka_volterra()
    xs, ys = lv.states
    ts = np.linspace(0, 10, 101)
    loss = symode.ObservationLoss(xs ** 2 + ys ** 2, [])
    kw = dict(rtol=1e-8, atol=1e-8, grad_t=False)
    ref = lv.value_and_grad(loss, list(P1_Z0), list(P1_THETA), ts, **kw)   # lists: the general path
    gs = [lv.value_and_grad(loss, P1_Z0, P1_THETA, ts, **kw) for _ in range(3)]
    assert [type(g) is symode.Gradient for g in gs] == [True, False, False]   # prepared from the second call on
    for g in gs:
        assert g.value == ref.value and np.array_equal(g.z0, ref.z0) and np.array_equal(g.theta, ref.theta)
        assert g.stats == ref.stats and g.t is None and np.array_equal(g.solution.z, ref.solution.z)
        assert repr(g) == repr(ref) and "t=None" in repr(g)   # grad_t=False: no dL/dts
    for k in range(3):   # new output times each call: never prepared
        assert type(lv.value_and_grad(loss, P1_Z0, P1_THETA, ts * (1.01 + 0.01 * k), **kw)) is symode.Gradient
    xo = sp.Symbol("x_obs")
    dl = symode.ObservationLoss((xs - xo) ** 2, [xo])
    data = np.cos(ts).reshape(-1, 1)
    g1 = [lv.value_and_grad(dl, P1_Z0, P1_THETA, ts, data=data) for _ in range(2)]
    data[:] = 0.0   # data may change in place between calls: it is read each time
    g2 = lv.value_and_grad(dl, P1_Z0, P1_THETA, ts, data=data)
    assert g1[0].value == g1[1].value != g2.value and type(g2) is symode.Gradient
    with pytest.raises(symode.InputValidationError, match="z"):
        for _ in range(3):
            lv.value_and_grad(loss, np.array([1.0, np.nan]), P1_THETA, ts, **kw)


def test_recorded_solves_beyond_the_first_record_capacity():
    """Per-step records have a fixed capacity (rk.REC_CAP0 steps at first): a longer solve is redone with a larger
    one, and the model remembers the size. Same arithmetic every time: the gradients are bitwise equal."""
    from symode._numeric import rk

    lv = lotka_volterra()
    ts = np.linspace(0, 60, 31)
    kw = dict(rtol=1e-10, atol=1e-10)
    s = lv.solve(P1_Z0, P1_THETA, ts, **kw)
    cot = 2 * s.z
    g1 = lv.vjp(P1_Z0, P1_THETA, ts, cot, **kw)              # first capacity too small: redone
    assert g1.stats["steps_recorded"] > 4 * rk.REC_CAP0
    assert lv._rt.rec_cap >= g1.stats["steps_recorded"]
    g2 = lv.vjp(P1_Z0, P1_THETA, ts, cot, **kw)              # sized from the hint
    assert np.array_equal(g1.theta, g2.theta) and np.array_equal(g1.z0, g2.z0) and np.array_equal(g1.t, g2.t)
    assert g1.stats["forward"]["nfev"] == s.stats["nfev"]     # counts of the final pass only
    gc = lv.vjp(P1_Z0, P1_THETA, ts, cot, adjoint="checkpoint", **kw)
    # discrete vs continuous adjoint on [0, 60] at rtol 1e-10: measured 1.5e-8 apart (the adjoint's own error)
    assert np.allclose(g1.theta, gc.theta, rtol=1e-7, atol=0)
    # the checkpointed variant sizes its records from the step count of its first pass; its backward pass stops
    # at the segment ends, so it agrees with the one-segment run to the adjoint's tolerance (1e-10), not bitwise
    gk = lv.vjp(P1_Z0, P1_THETA, ts, cot, adjoint="checkpoint", checkpoints=8, **kw)
    assert np.allclose(gk.theta, gc.theta, rtol=5e-9, atol=0)   # measured 3e-10
    # short solves shrink the hint again (by half per call while they use under a quarter of it, to rk.REC_MIN at
    # least; so it settles between 2 and 4 times their step count), then a long one regrows it: every gradient is
    # still that of a fresh model
    ts_short = np.linspace(0, 1, 3)
    ref = lotka_volterra().vjp(P1_Z0, P1_THETA, ts_short, np.ones((3, 2)), **kw)
    caps = [lv._rt.rec_cap]
    for _ in range(12):
        g = lv.vjp(P1_Z0, P1_THETA, ts_short, np.ones((3, 2)), **kw)
        assert np.array_equal(g.theta, ref.theta) and np.array_equal(g.z0, ref.z0)
        caps.append(lv._rt.rec_cap)
    n_short = g.stats["steps_recorded"]
    assert caps[1] == caps[0] // 2 and 2 * n_short <= caps[-1] <= max(rk.REC_MIN, 4 * n_short) < caps[0] // 8
    g3 = lv.vjp(P1_Z0, P1_THETA, ts, cot, **kw)
    assert np.array_equal(g3.theta, g1.theta) and lv._rt.rec_cap >= g1.stats["steps_recorded"]
