"""DOP853 (Dormand-Prince 8(5,3), Hairer's dop853.f): tableau order conditions on all rooted trees, SciPy's
DOP853 step sequence and dense output, measured orders, and every gradient path through its 16 stages
(12 + FSAL + 3 dense-output stages)."""
import numpy as np

from symode._engine import explicit as _explicit
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import symode
from symode._numeric import adjoint as adj
from symode._numeric import rk
from symode._numeric import tableau as tb
from symode._numeric.methods import METHODS
from symode.testing import arrays, check_gradients, odes, time_grids

from .helpers import P1_THETA, P1_Z0, lotka_volterra

T = tb.DOP853


# ----------------------------------------------------------------------------------------------- rooted trees
def _trees(max_order):
    """All rooted trees with up to `max_order` vertices, by order; a tree is the sorted tuple of its root's
    subtrees (the single vertex is ()). Every tree of order n is a tree of order n - k with one more subtree
    of order k at its root."""
    by = {1: {()}}
    for n in range(2, max_order + 1):
        by[n] = {tuple(sorted(u + (t,))) for k in range(1, n) for u in by[n - k] for t in by[k]}
    return by


def _gamma(t):
    g = 1 + sum(_size(c) for c in t)
    for c in t:
        g *= _gamma(c)
    return g


def _size(t):
    return 1 + sum(_size(c) for c in t)


def _phi(t, A):
    """Elementary weight vector: Phi(()) = 1, Phi([t1..tm]) = prod_k A Phi(t_k) (componentwise)."""
    v = np.ones(A.shape[0])
    for c in t:
        v = v * (A @ _phi(c, A))
    return v


TREES = _trees(9)


def _residual(w, order, x=1.0):
    """max over trees of this order of |w . Phi(t) - x^order / gamma(t)|."""
    return max(abs(w @ _phi(t, T.a) - x ** order / _gamma(t)) for t in TREES[order])


def test_tree_counts():
    assert [len(TREES[n]) for n in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]


def test_structure():
    """12 stages + FSAL + 3 dense-output stages; c_i = sum_j a_ij; the dense-output stages carry no weight."""
    assert T.n_stages == 16 and T.fsal and T.n_step_stages == 13
    # the coefficients have ~30 digits, rounded to double: row sums agree with c to a few ulps (measured 1e-15)
    assert np.max(np.abs(T.a.sum(axis=1) - T.c)) < 4e-15
    assert np.array_equal(T.a[12, :12], T.b[:12]) and T.c[11] == T.c[12] == 1.0
    assert not T.b[12:].any() and not T.b_error[12:].any() and not T.b_error_low[12:].any()
    # the compiled loops find the same number of step stages as the tableau, for every explicit method
    for meth in METHODS.values():
        if meth.kind == "explicit":
            Tm = meth.tableau
            assert rk.step_stages(Tm.b, Tm.fsal) == Tm.n_step_stages, meth.name
    # the packed data carry both error estimates (length 2 s flags Hairer's combined norm)
    a, b, be, c, dense, fsal, eo = METHODS["dop853"].packed()
    assert be.size == 32 and np.array_equal(be[16:], T.b_error_low) and fsal and eo == 7
    assert METHODS["dopri5"].packed()[2].size == 7


def test_coefficients_match_scipys_transcription():
    """The numbers typed in symode equal SciPy's copy of dop853.f bit for bit (a transcription check)."""
    from scipy.integrate._ivp import dop853_coefficients as ref

    assert np.array_equal(T.a, ref.A) and np.array_equal(T.c, ref.C) and np.array_equal(T.b[:12], ref.B)
    assert np.array_equal(T.b_error[:13], ref.E5) and np.array_equal(T.b_error_low[:13], ref.E3)


def test_order_8_on_all_trees():
    """b satisfies the 200 conditions of order <= 8 and not all of order 9 (so the order is exactly 8). The
    residuals are rounding of the double-precision coefficients (measured <= 1.1e-15; order 9: 2.7e-5)."""
    for n in range(1, 9):
        assert _residual(T.b, n) < 1e-13, n
    assert _residual(T.b, 9) > 1e-6


def test_embedded_orders():
    """b - E5 is of order exactly 5 and b - E3 of order exactly 3 (residuals <= 2.2e-15 where satisfied;
    the first failing order misses by 4.5e-4 and 2.5e-2)."""
    b5, b3 = T.b - T.b_error, T.b - T.b_error_low
    for n in range(1, 6):
        assert _residual(b5, n) < 1e-13, n
    assert _residual(b5, 6) > 1e-5
    for n in range(1, 4):
        assert _residual(b3, n) < 1e-13, n
    assert _residual(b3, 4) > 1e-3
    assert T.embedded_orders == (5, 3) and T.error_order == 7


@pytest.mark.parametrize("x", [0.1, 0.3, 0.5, 0.77, 0.95, 1.0])
def test_dense_output_order_7(x):
    """sum_i b_i(x) Phi_i(t) = x^|t| / gamma(t) for all 115 trees of order <= 7 at every x. The power-basis
    coefficients reach 545 in magnitude, so the weights carry rounding up to ~1.5e-13 (measured, at x = 1);
    1e-12 leaves a margin. Order 8 is not reached (residual >= 7e-6 for x < 1)."""
    bx = T.dense_weights(x)
    for n in range(1, 8):
        assert _residual(bx, n, x) < 1e-12, (n, x)
    if x < 1.0:
        assert _residual(bx, 8, x) > 1e-6
    else:
        assert np.max(np.abs(bx - T.b)) < 1e-13


# ---------------------------------------------------------------------------------------------- vs SciPy
def test_reproduces_scipy_dop853_steps():
    """With its defaults (I-controller, exponent 1/8, safety 0.9, factors 0.2/10) dop853 takes SciPy's DOP853
    steps: the same accepted and rejected steps, states equal to rounding."""
    from scipy.integrate import DOP853

    m = lotka_volterra()
    rtol, atol, t_end = 1e-6, 1e-8, 10.0
    solver = DOP853(lambda tt, z: m.f(z, P1_THETA, tt), 0.0, P1_Z0, t_end, rtol=rtol, atol=atol)
    times, ref = [0.0], [P1_Z0]
    while solver.status == "running":
        solver.step()
        times.append(solver.t)
        ref.append(solver.y)
    sol = m.solve(P1_Z0, P1_THETA, np.array(times), method="dop853", rtol=rtol, atol=atol)
    assert sol.stats["naccepted"] == len(times) - 1
    # SciPy: 2 evaluations for the initial step, then 12 per attempted step (incl. f(t+h, y_new))
    assert sol.stats["nsteps"] == (solver.nfev - 2) // 12
    # Same steps => same states; what differs is rounding (NumPy dot products vs loops), measured 3.8e-13
    # after 37 steps; a different step anywhere would show at the 1e-7 level (the tolerance).
    assert np.max(np.abs(sol.z - np.array(ref))) < 1e-11


def test_dense_output_matches_scipy():
    """Outputs inside steps match SciPy's DOP853 dense output (same steps; the interpolants agree up to the
    rounding of their different evaluation forms: measured 3.7e-12 on 1001 points, bound 1e-10)."""
    from scipy.integrate import solve_ivp

    m = lotka_volterra()
    tq = np.linspace(0.0, 10.0, 1001)
    r = solve_ivp(lambda tt, z: m.f(z, P1_THETA, tt), (0.0, 10.0), P1_Z0, method="DOP853", rtol=1e-6,
                  atol=1e-8, dense_output=True)
    fine = m.solve(P1_Z0, P1_THETA, tq, method="dop853", rtol=1e-6, atol=1e-8)
    assert np.max(np.abs(fine.z - r.sol(tq).T)) < 1e-10
    # outputs never change the steps, and the value at the end is the step's own (bitwise)
    coarse = m.solve(P1_Z0, P1_THETA, [0.0, 10.0], method="dop853", rtol=1e-6, atol=1e-8)
    assert coarse.stats["naccepted"] == fine.stats["naccepted"] == r.t.size - 1
    assert np.array_equal(coarse.z[-1], fine.z[-1])
    # the 3 dense-output stages are evaluated only in steps with an output strictly inside
    assert coarse.stats["nfev"] == 2 + 12 * coarse.stats["nsteps"]
    extra = fine.stats["nfev"] - (2 + 12 * fine.stats["nsteps"])
    assert extra % 3 == 0 and 0 < extra <= 3 * fine.stats["naccepted"]


# -------------------------------------------------------------------------------------- measured orders
def _sine_forced():
    xs, ts_ = sp.symbols("x t")
    return symode.ODE([-xs / 2 + sp.sin(3 * ts_)], states=[xs], t=ts_)


def _sine_exact(t):
    return (1 + 3 / 9.25) * np.exp(-t / 2) + (0.5 * np.sin(3 * t) - 3 * np.cos(3 * t)) / 9.25


DTS = [0.8, 0.4, 0.2, 0.1]  # errors 1.6e-7 ... 7e-15: asymptotic, and still above rounding (~1e-16)


def test_convergence_order_8():
    """Fixed steps (dt = dt_max, huge tolerance) on x' = -x/2 + sin 3t: log-log slope 8 (measured 8.13; the
    ratios of successive errors are 2^8.2, 2^8.1, 2^8.1)."""
    m = _sine_forced()
    t_end = 4.0
    errs = [abs(m.solve([1.0], [], [0.0, t_end], method="dop853", dt=h, dt_max=h, rtol=1e3, atol=1e3).z[-1, 0]
                - _sine_exact(t_end)) for h in DTS]
    slope = np.polyfit(np.log(DTS), np.log(errs), 1)[0]
    assert abs(slope - 8) < 0.3, (slope, errs)


def test_dense_output_convergence():
    """Outputs in the middle of every step converge at order >= 7 too (local interpolation error O(h^8) of
    the order-7 extension on top of the O(h^8) global error; measured slope ~7.9). Each step with an
    output costs 3 extra evaluations."""
    m = _sine_forced()
    t_end = 4.0
    errs = []
    for h in DTS:
        n = int(round(t_end / h))
        ts = np.concatenate([[0.0], (np.arange(n) + 0.5) * h])
        sol = m.solve([1.0], [], ts, method="dop853", dt=h, dt_max=h, rtol=1e3, atol=1e3)
        errs.append(np.max(np.abs(sol.z[:, 0] - _sine_exact(ts))))
        assert sol.stats["nfev"] == 1 + 15 * sol.stats["naccepted"] - 3  # last step (after ts[-1]) not taken
    slope = np.polyfit(np.log(DTS), np.log(errs), 1)[0]
    assert slope > 7 - 0.3, (slope, errs)


def test_exact_solutions_and_tolerance():
    m = _sine_forced()
    ts = np.linspace(0, 5, 11)
    errs = []
    for tol in (1e-4, 1e-6, 1e-8, 1e-10):
        sol = m.solve([1.0], [], ts, method="dop853", rtol=tol, atol=tol)
        errs.append(np.max(np.abs(sol.z[:, 0] - _sine_exact(ts))))
        # local error control: the global error on this contractive problem stays within a modest multiple of
        # the tolerance (same factor 20 as for the other adaptive methods in test_solve.py)
        assert errs[-1] < 20 * tol, (tol, errs)
    assert errs[0] > errs[1] > errs[2] > errs[3]


def test_backward_in_time_and_error_message():
    k, x = sp.symbols("k x")
    decay = symode.ODE([-k * x], states=[x], params=[k])
    ts = np.linspace(2.0, 0.0, 9)
    sol = decay.solve([1.0], [0.5], ts, method="dop853", rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(sol.z[:, 0] - np.exp(-0.5 * (ts - 2.0)))) < 1e-9
    with pytest.raises(symode.InputValidationError, match="'tsit5', 'dop853'"):
        decay.solve([1.0], [0.5], ts, method="dop8")


def test_stiffness_warning():
    """Hairer's stiffness test with dop853's threshold h|lambda| > 6.1 (dop853.f) flags Robertson early, and
    stays quiet on Lotka-Volterra."""
    import warnings

    y1, y2, y3, k1, k2, k3 = sp.symbols("y1 y2 y3 k1 k2 k3")
    rob = symode.ODE([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2, k2 * y2 ** 2],
                     states=[y1, y2, y3], params=[k1, k2, k3])
    with pytest.warns(symode.StiffnessWarning):
        sol = rob.solve([1.0, 0.0, 0.0], [0.04, 3e7, 1e4], [0.0, 1e5], method="dop853", rtol=1e-6, atol=1e-10,
                        max_steps=20000, throw=False)
    assert sol.stats["stiffness_detected_at"] < 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", symode.StiffnessWarning)
        lotka_volterra().solve(P1_Z0, P1_THETA, np.linspace(0, 10, 11), method="dop853", rtol=1e-8, atol=1e-8)


# ------------------------------------------------------------------------------------------------ gradients
FIXED = dict(method="dop853", dt=0.25, dt_max=0.25, rtol=1e3, atol=1e3)  # 16 steps of 0.25 on [0, 4], frozen


@pytest.mark.parametrize("n_out, interior", [(7, 4), (9, 0)])
def test_discrete_adjoint_against_fd_frozen_steps(n_out, interior):
    """With the step sequence frozen (steps of 0.25 forced, every step accepted) solve is a smooth function of
    z0 and theta and the discrete adjoint is its exact derivative. ts = linspace(0, 4, 7) puts 4 outputs
    strictly inside steps (the dense output through all 16 stages, extra stages included); linspace(0, 4, 9)
    only at step ends. Central FD with eps 1e-6: truncation ~1e-12, cancellation ~1e-16/1e-6 = 1e-10
    relative (measured 2.4e-9 and 3.0e-9); bound 1e-7."""
    m = lotka_volterra()
    ts = np.linspace(0, 4, n_out)
    sol = m.solve(P1_Z0, P1_THETA, ts, **FIXED)
    # 1 + 12 evaluations per step, + 3 in each step with an output inside
    assert sol.stats["naccepted"] == 16 and sol.stats["nfev"] == 1 + 12 * 16 + 3 * interior
    rep = check_gradients(m, P1_Z0, P1_THETA, ts, adjoints=("discrete",), eps=1e-6, **FIXED)
    assert rep["discrete"]["rel_err"] < 1e-7, rep["discrete"]["rel_err"]


def test_extra_stages_carry_the_interior_cotangents():
    """The cotangents of the 3 dense-output stages flow back through their own rows of a: dropping those rows
    from the sweep changes the gradient by far more than the FD agreement above."""
    m = lotka_volterra()
    ts = np.linspace(0, 4, 7)
    cot = np.random.default_rng(3).normal(size=(7, 2))
    fwd = _explicit.integrate(m._rt, rk.MODE_F, P1_Z0, P1_THETA, ts, m._rt.config(**{k: FIXED[k] for k in ("method", "rtol",
                       "atol", "dt", "dt_max")}, max_steps=1000, controller=None), record=2)
    a, b, be, c, dense, fsal, eo = METHODS["dop853"].packed()
    g = {}
    for name, A in (("full", a), ("cut", np.where(np.arange(16)[:, None] >= 13, 0.0, a))):
        ybar, gth = np.empty(2), np.empty(4)
        adj.discrete_sweep(m.compiled.kern, 2, 4, P1_THETA, fwd.rec_t, fwd.rec_h, fwd.rec_y, fwd.rec_k,
                           np.ascontiguousarray(A), b, c, dense, fwd.out_step, fwd.out_frac, cot, ybar, gth,
                           fwd.rec_w)
        g[name] = np.concatenate([ybar + cot[0], gth])
    ref = m.vjp(P1_Z0, P1_THETA, ts, cot, **FIXED)
    assert np.max(np.abs(g["full"] - np.concatenate([ref.z0, ref.theta]))) < 1e-12 * np.max(np.abs(g["full"]))
    assert np.max(np.abs(g["cut"] - g["full"])) > 1e-4 * np.max(np.abs(g["full"]))


def test_adjoints_agree_at_tight_tolerance():
    """Adaptive steps at rtol = atol = 1e-11: discrete, checkpoint, forward and backsolve agree to ~1e-10
    (measured 7e-11 .. 1.2e-10: the continuous ones carry their own solver error); bound 1e-8."""
    m = lotka_volterra()
    ts = np.linspace(0, 10, 23)
    cot = np.random.default_rng(0).normal(size=(ts.size, 2))
    g = {a_: m.vjp(P1_Z0, P1_THETA, ts, cot, adjoint=a_, method="dop853", rtol=1e-11, atol=1e-11)
         for a_ in ("discrete", "checkpoint", "forward", "backsolve")}
    ref = np.concatenate([g["discrete"].z0, g["discrete"].theta, g["discrete"].t])
    for name, gg in g.items():
        got = np.concatenate([gg.z0, gg.theta, gg.t])
        assert np.max(np.abs(got - ref)) < 1e-8 * np.max(np.abs(ref)), name


def test_checkpoint_replay_and_recorded_paths_are_bitwise():
    """checkpoints=1 replays the whole forward pass (with its dense-output stages) bitwise: the same gradient
    as the stored-steps checkpoint adjoint. The fused discrete path (forward records the extra stages only
    where an output is inside a step) equals the unfused one (a callable loss; all steps' stages recorded)."""
    m = lotka_volterra()
    ts = np.linspace(0, 10, 23)
    cot = np.random.default_rng(1).normal(size=(ts.size, 2))
    kw = dict(method="dop853", rtol=1e-9, atol=1e-9)
    ref = m.vjp(P1_Z0, P1_THETA, ts, cot, adjoint="checkpoint", **kw)
    one = m.vjp(P1_Z0, P1_THETA, ts, cot, adjoint="checkpoint", checkpoints=1, **kw)
    assert np.array_equal(one.theta, ref.theta) and np.array_equal(one.z0, ref.z0)
    k3 = m.vjp(P1_Z0, P1_THETA, ts, cot, adjoint="checkpoint", checkpoints=3, **kw)
    # replayed segments: the backward solves restart at segment ends, so they differ at the solver's error
    assert np.max(np.abs(k3.theta - ref.theta)) < 1e-8 * np.max(np.abs(ref.theta))
    fused = m.vjp(P1_Z0, P1_THETA, ts, cot, **kw)
    unfused = m.value_and_grad(lambda t_, z: (float(np.sum(cot * z)), cot), P1_Z0, P1_THETA, ts, **kw)
    for name in ("z0", "theta", "t"):
        assert np.array_equal(getattr(fused, name), getattr(unfused, name)), name


def test_batches_equal_solo_runs():
    m = lotka_volterra()
    ts = np.linspace(0, 10, 17)
    rng = np.random.default_rng(2)
    thetas = P1_THETA * (1 + 0.1 * rng.uniform(-1, 1, (6, 4)))
    cot = rng.normal(size=(ts.size, 2))
    kw = dict(method="dop853", rtol=1e-7, atol=1e-7)
    batch = m.solve(P1_Z0, thetas, ts, **kw)
    gb = m.vjp(P1_Z0, thetas, ts, cot, **kw)
    for i in range(thetas.shape[0]):
        assert np.array_equal(batch.z[i], m.solve(P1_Z0, thetas[i], ts, **kw).z)
        g = m.vjp(P1_Z0, thetas[i], ts, cot, **kw)
        assert np.array_equal(gb.theta[i], g.theta) and np.array_equal(gb.z0[i], g.z0)


@settings(max_examples=5)
@given(model=odes(max_states=3, max_params=2), data=st.data())
def test_random_models_check_gradients(model, data):
    """dop853 at rtol 1e-10 on random models: every adjoint against central FD (eps 1e-4 for adaptive steps);
    thresholds as for dopri5 in test_gradients.py (1e-5; backsolve 1e-4, it re-integrates z backward)."""
    z0 = data.draw(arrays(model.n_states, -1, 1))
    theta = data.draw(arrays(model.n_params, -1, 1))
    ts = data.draw(time_grids(2, 5, 1.5))
    rep = check_gradients(model, z0, theta, ts, method="dop853")
    for name in ("discrete", "checkpoint", "forward"):
        assert rep[name]["rel_err"] < 1e-5, (name, rep[name]["rel_err"])
    assert rep["backsolve"]["rel_err"] < 1e-4
