"""Stiff methods: Rosenbrock tableaus (order conditions), rodas5/rodas4 against SciPy's Radau on classic stiff
problems, measured orders, dense output, recorded steps, banded W, method="auto", failures and bad input."""
import dataclasses
import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp

import symode
from symode import _status
from symode._engine import stiff as _stiff
from symode._numeric import methods as M
from symode._numeric import rosenbrock as ros

x, y, t = sp.symbols("x y t")
TABLEAUS = {"rodas5": ros.RODAS5, "rodas4": ros.RODAS4}


def lambdified(model_rhs, states, params=()):
    """f(t, z) and its exact Jacobian for SciPy, from the SymPy expressions (independent of symode's kernels)."""
    F = sp.Matrix(model_rhs)
    args = (t, list(states), list(params))
    f = sp.lambdify(args, list(F), "numpy")
    J = sp.lambdify(args, F.jacobian(list(states)), "numpy")
    return f, J


def radau(model_rhs, states, params, z0, theta, ts, rtol, atol):
    f, J = lambdified(model_rhs, states, params)
    r = solve_ivp(lambda tt, z: np.asarray(f(tt, z, theta), dtype=float),
                  (ts[0], ts[-1]), z0, method="Radau", rtol=rtol, atol=atol, t_eval=ts,
                  jac=lambda tt, z: np.asarray(J(tt, z, theta), dtype=float))
    assert r.success
    return r.y.T


# ------------------------------------------------------------------------------------------------ tableaus
def table_7_1(T):
    """The order conditions up to order 4 as printed in Hairer & Wanner II, Table IV.7.1 (sums over j < i,
    right-hand sides polynomials in gamma) -- written out independently of the tree recursion."""
    g, b, al = T.gamma, T.b, T.alpha
    be = T.alpha + T.Gamma - np.diag(np.diag(T.Gamma))  # beta_ij, j < i
    a_ = al.sum(axis=1)
    bp = be.sum(axis=1)
    return [
        b.sum() - 1,
        b @ bp - (0.5 - g),
        b @ a_ ** 2 - 1 / 3,
        b @ (be @ bp) - (1 / 6 - g + g * g),
        b @ a_ ** 3 - 1 / 4,
        b @ (a_ * (al @ bp)) - (1 / 8 - g / 3),
        b @ (be @ a_ ** 2) - (1 / 12 - g / 3),
        b @ (be @ (be @ bp)) - (1 / 24 - g / 2 + 1.5 * g * g - g ** 3),
    ]


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_tableau_order_conditions(name):
    T = TABLEAUS[name]
    alpha, beta = T.alpha, T.alpha + T.Gamma
    # the published table: order <= 4 conditions, and the tree recursion for the full order
    assert np.max(np.abs(table_7_1(T))) < 1e-13
    assert ros.order_residual(T.b, alpha, beta, T.order) < 1e-13
    assert ros.order_residual(T.b, alpha, beta, T.order + 1) > 1e-4  # exactly that order, not more
    assert ros.order_residual(T.b_hat, alpha, beta, T.error_order) < 1e-13
    assert ros.order_residual(T.b_hat, alpha, beta, T.error_order + 1) > 1e-4
    # the number of trees (1, 1, 2, 4, 9, 20): the recursion sees every condition
    assert [len(ros.rooted_trees(k)) for k in range(1, 7)] == [1, 1, 2, 4, 9, 20]
    # consistency of the transformed form: c = row sums of alpha, d = row sums of Gamma, W-form weights
    # (to 1e-13 relative to each row's size: RODAS5's rows 6-7 hold entries of 15-20 that cancel to d = 0, and
    # with NumPy 2.4's summation order their published 16-digit values sum to 1.05e-13, 10 eps of the row)
    row = np.maximum(1.0, np.abs(T.Gamma).sum(axis=1))
    assert np.allclose(alpha.sum(axis=1), T.c, atol=1e-13) and np.all(np.abs(T.Gamma.sum(axis=1) - T.d) <= 1e-13 * row)
    Ginv = np.linalg.inv(T.Gamma)
    assert np.allclose(alpha @ Ginv, T.a, atol=1e-12)
    assert np.allclose(np.diag(1 / np.diag(T.Gamma)) - Ginv, T.C, atol=1e-10)
    assert np.allclose(T.b @ Ginv, T.m, atol=1e-12)
    assert T.stiffly_accurate and np.all(np.diag(T.Gamma) == T.gamma)
    # dense output: b(0) = 0, b(1) = b, and order conditions of its own order for theta in (0, 1)
    assert np.all(T.dense_weights(0.0) == 0)
    assert np.allclose(T.dense_weights(1.0) @ T.Gamma, T.b, atol=1e-13)
    for theta in (0.1, 0.37, 0.9):
        bt = T.dense_weights(theta) @ T.Gamma
        assert ros.order_residual(bt, alpha, beta, T.dense_order, theta) < 1e-12


def test_tableau_checks_itself():
    T = ros.RODAS5
    m = T.m.copy()
    m[4] += 1e-9
    with pytest.raises(ValueError, match="order 5 conditions"):
        ros.RosenbrockTableau("bad", T.gamma, T.a, T.C, T.c, T.d, m, T.m_error, T.H, 5, 4, 4)
    C = T.C.copy()
    C[5, 2] *= 1 + 1e-9
    with pytest.raises(ValueError, match="row 5 of Gamma"):
        ros.RosenbrockTableau("bad", T.gamma, T.a, C, T.c, T.d, T.m, T.m_error, T.H, 5, 4, 4)
    with pytest.raises(ValueError, match="row 0 of alpha"):
        ros.RosenbrockTableau("bad", T.gamma, T.a, T.C, T.c + 0.1, T.d, T.m, T.m_error, T.H, 5, 4, 4)
    H = T.H.copy()
    H[0, 0] += 1e-6
    with pytest.raises(ValueError, match="dense output"):
        ros.RosenbrockTableau("bad", T.gamma, T.a, T.C, T.c, T.d, T.m, T.m_error, H, 5, 4, 4)
    with pytest.raises(ValueError, match="strictly lower"):
        ros.RosenbrockTableau("bad", T.gamma, T.a + np.eye(8), T.C, T.c, T.d, T.m, T.m_error, T.H, 5, 4, 4)


def test_lu_factor_and_solve_dense_and_band():
    rng = np.random.default_rng(1)
    n = 12
    for kl, ku in ((n - 1, n - 1), (2, 1), (0, 3), (1, 0)):
        A = rng.normal(size=(n, n))
        A[np.subtract.outer(np.arange(n), np.arange(n)) > kl] = 0
        A[np.subtract.outer(np.arange(n), np.arange(n)) < -ku] = 0
        b = rng.normal(size=n)
        W = A.copy()
        piv = np.zeros(n, dtype=np.int64)
        assert ros.lu_factor(W, piv, kl, ku)
        xs = b.copy()
        ros.lu_solve(W, piv, kl, ku, xs)
        assert np.allclose(xs, np.linalg.solve(A, b), rtol=1e-10, atol=1e-12), (kl, ku)
    S = np.ones((3, 3))
    assert not ros.lu_factor(S, np.zeros(3, dtype=np.int64), 2, 2)
    N = np.eye(3)
    N[1, 1] = np.inf
    assert not ros.lu_factor(N, np.zeros(3, dtype=np.int64), 2, 2)


# ------------------------------------------------------------------------------------------------ problems
@pytest.fixture(scope="module")
def robertson():
    y1, y2, y3 = sp.symbols("y1 y2 y3")
    k1, k2, k3 = sp.symbols("k1 k2 k3")
    rhs = [-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2, k2 * y2 ** 2]
    return symode.ODE(rhs, [y1, y2, y3], [k1, k2, k3]), rhs, (y1, y2, y3), (k1, k2, k3)


ROB_K = np.array([0.04, 3e7, 1e4])
ROB_TS = np.concatenate([[0.0], np.logspace(-6, 11, 35)])


@pytest.fixture(scope="module")
def robertson_ref():
    # written out in NumPy (the summation order matters to Radau's Newton iterations at atol = 1e-20:
    # lambdify's ordering of f2's cancelling terms costs it 7x the evaluations)
    k1, k2, k3 = ROB_K

    def f(tt, z):
        return np.array([-k1 * z[0] + k3 * z[1] * z[2], k1 * z[0] - k3 * z[1] * z[2] - k2 * z[1] ** 2, k2 * z[1] ** 2])

    def jac(tt, z):
        return np.array([[-k1, k3 * z[2], k3 * z[1]], [k1, -k3 * z[2] - 2 * k2 * z[1], -k3 * z[1]],
                         [0.0, 2 * k2 * z[1], 0.0]])

    r = solve_ivp(f, (0.0, ROB_TS[-1]), [1.0, 0.0, 0.0], method="Radau", rtol=1e-12, atol=1e-20, jac=jac,
                  t_eval=ROB_TS)
    assert r.success
    return r.y.T


@pytest.mark.parametrize("method, rtol, atol, tol", [
    ("rodas5", 1e-10, 1e-16, 5e-9), ("rodas5", 1e-6, 1e-10, 1e-5), ("rodas4", 1e-9, 1e-15, 5e-8),
    ("auto", 1e-8, 1e-14, 5e-7)])
def test_robertson_to_1e11(robertson, robertson_ref, method, rtol, atol, tol):
    """P3 (Robertson) to t = 1e11: every output within `tol` relative (floored at atol / rtol) of Radau at
    rtol = 1e-12, and the conserved y1 + y2 + y3 = 1 kept to 1e-9 (a linear invariant: Rosenbrock steps
    preserve it up to rounding). Tolerances: the global error is ~1-5x rtol here (measured)."""
    m = robertson[0]
    sol = m.solve([1.0, 0.0, 0.0], ROB_K, ROB_TS, method=method, rtol=rtol, atol=atol)
    ref = robertson_ref
    rel = np.abs(sol.z - ref) / (np.abs(ref) + atol / rtol)
    assert rel.max() < tol, (method, rel.max())
    assert np.max(np.abs(sol.z.sum(axis=1) - 1.0)) < 1e-9
    if method != "auto":  # one Jacobian per accepted step, one LU per attempted step
        assert sol.stats["njev"] == sol.stats["naccepted"] and sol.stats["nlu"] == sol.stats["nsteps"]


VDP_MU = 1000.0
VDP_TS = np.linspace(0.0, 3000.0, 31)


@pytest.fixture(scope="module")
def vdp():
    mu = sp.Symbol("mu")
    rhs = [y, mu * (1 - x ** 2) * y - x]  # MATLAB's vdp1000: relaxation oscillations, period ~1614
    return symode.ODE(rhs, [x, y], [mu]), rhs, (x, y), (mu,)


@pytest.fixture(scope="module")
def vdp_ref(vdp):
    _, rhs, states, params = vdp
    return radau(rhs, states, params, [2.0, 0.0], [VDP_MU], VDP_TS, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["rodas5", "rodas4", "auto"])
def test_van_der_pol_mu_1000(vdp, vdp_ref, method):
    sol = vdp[0].solve([2.0, 0.0], [VDP_MU], VDP_TS, method=method, rtol=1e-8, atol=1e-10)
    # |y| reaches ~1e3 in the jumps, |x| ~2: compare each component against its own scale (measured: ~2e-7)
    scale = np.max(np.abs(vdp_ref), axis=0)
    assert np.max(np.abs(sol.z - vdp_ref) / scale) < 2e-6


def test_auto_switches_on_van_der_pol(vdp, vdp_ref):
    """auto: far fewer RHS evaluations than dopri5 (which is stability-bound), fewer Jacobians than rodas5
    (the fast jumps go explicit), switching both ways on every relaxation jump."""
    m = vdp[0]
    kw = dict(rtol=1e-8, atol=1e-10, max_steps=10 ** 7)
    auto = m.solve([2.0, 0.0], [VDP_MU], VDP_TS, method="auto", **kw)
    rodas = m.solve([2.0, 0.0], [VDP_MU], VDP_TS, method="rodas5", **kw)
    with pytest.warns(RuntimeWarning):  # dopri5 reports the stiffness it sees
        dopri = m.solve([2.0, 0.0], [VDP_MU], VDP_TS, method="dopri5", **kw)
    st = auto.stats
    assert st["nfev"] * 100 < dopri.stats["nfev"]
    assert st["njev"] < 0.6 * rodas.stats["njev"]
    assert st["switches"] >= 4  # stiff slow phases and non-stiff jumps alternate
    assert st["nsteps_explicit"] > 0 and st["nsteps_stiff"] > 0
    assert st["nsteps_explicit"] + st["nsteps_stiff"] == st["naccepted"]
    assert st["t_explicit"] + st["t_stiff"] == pytest.approx(3000.0, rel=1e-12)
    assert st["t_stiff"] > 0.99 * 3000.0  # the slow phases are stiff


def test_hires(vdp):
    """HIRES (Schaefer 1975; Hairer & Wanner II, Sec. IV.10), 8 states to t = 321.8122, against Radau."""
    s = sp.symbols("y1:9")
    rhs = [-1.71 * s[0] + 0.43 * s[1] + 8.32 * s[2] + 0.0007, 1.71 * s[0] - 8.75 * s[1],
           -10.03 * s[2] + 0.43 * s[3] + 0.035 * s[4], 8.32 * s[1] + 1.71 * s[2] - 1.12 * s[3],
           -1.745 * s[4] + 0.43 * s[5] + 0.43 * s[6],
           -280 * s[5] * s[7] + 0.69 * s[3] + 1.71 * s[4] - 0.43 * s[5] + 0.69 * s[6],
           280 * s[5] * s[7] - 1.81 * s[6], -280 * s[5] * s[7] + 1.81 * s[6]]
    m = symode.ODE(rhs, list(s))
    z0 = np.array([1, 0, 0, 0, 0, 0, 0, 0.0057])
    ts = np.linspace(0.0, 321.8122, 21)
    ref = radau(rhs, s, (), z0, (), ts, rtol=1e-11, atol=1e-13)
    for method in ("rodas5", "rodas4", "auto"):
        sol = m.solve(z0, [], ts, method=method, rtol=1e-9, atol=1e-11)
        assert np.max(np.abs(sol.z - ref) / (np.abs(ref) + 1e-2)) < 1e-8, method


# ------------------------------------------------------------------------------------------------ orders
def fixed_steps(model, z0, theta, T, h, method):
    """A forced fixed-step solve (dt = dt_max = h, tolerances too loose to reject), as in test_solve."""
    return model.solve(z0, theta, [0.0, T], method=method, dt=h, dt_max=h, rtol=1e3, atol=1e3)


@pytest.mark.parametrize("method, order", [("rodas5", 5), ("rodas4", 4)])
def test_nonstiff_order_with_time_dependence(method, order):
    """x' = -x/2 + sin(3t) (closed form): the full classical order, which needs the df/dt (jac_t) terms."""
    m = symode.ODE([-x / 2 + sp.sin(3 * t)], [x], t=t)
    T = 4.0
    exact = (1 + 3 / 9.25) * np.exp(-T / 2) + (0.5 * np.sin(3 * T) - 3 * np.cos(3 * T)) / 9.25
    dts = [0.08, 0.04, 0.02, 0.01]
    errs = [abs(fixed_steps(m, [1.0], [], T, h, method).z[-1, 0] - exact) for h in dts]
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    # rodas4's slope approaches 4 from above on these steps (4.1-4.2 measured); rodas5 measures 5.02
    assert abs(slope - order) < 0.3, (method, slope, errs)


def test_stiff_linear_system_order():
    """z' = A z with eigenvalues -1, -2 and -1e5 (h * 1e5 >> 1 on every step), the stiff mode not excited:
    the slow modes converge at order 5 while the L-stable method damps the stiff one."""
    V = np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 1.0], [0.0, 1.0, 1.0]])
    A = V @ np.diag([-1.0, -2.0, -1e5]) @ np.linalg.inv(V)
    zs = sp.symbols("z1:4")
    m = symode.ODE(list(sp.Matrix(A) * sp.Matrix(zs)), list(zs))
    z0 = V @ np.array([1.0, 1.0, 0.0])
    T = 2.0
    exact = V @ np.array([np.exp(-T), np.exp(-2 * T), 0.0])
    dts = [0.2, 0.1, 0.05, 0.025]
    errs = [np.max(np.abs(fixed_steps(m, z0, [], T, h, "rodas5").z[-1] - exact)) for h in dts]
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - 5) < 0.3, (slope, errs)


def _rodas4p():
    # Steinebach's RODAS4P (1995), designed to keep order 3 on Prothero-Robinson (used here only as a control).
    a = np.zeros((6, 6))
    C = np.zeros((6, 6))
    a[1, 0] = 3
    a[2, :2] = [1.831036793486759, 0.4955183967433795]
    a[3, :3] = [2.304376582692669, -0.05249275245743001, -1.176798761832782]
    a[4, :4] = [-7.170454962423024, -4.741636671481785, -16.31002631330971, -1.062004044111401]
    a[5, :5] = list(a[4, :4]) + [1.0]
    C[1, 0] = -12
    C[2, :2] = [-8.791795173947035, -2.207865586973518]
    C[3, :3] = [10.81793056857153, 6.780270611428266, 19.53485944642410]
    C[4, :4] = [34.19095006749676, 15.49671153725963, 54.74760875964130, 14.16005392148534]
    C[5, :5] = [34.62605830930532, 15.30084976114473, 56.99955578662667, 18.40807009793095, -5.714285714285717]
    H = [[25.09876703708589, 11.62013104361867, 28.49148307714626, -5.664021568594133, 0, 0],
         [1.638054557396973, -0.7373619806678748, 8.477918219238990, 15.99253148779520, -1.882352941176471, 0]]
    m, e = ros._stiffly_accurate_weights(a)
    T = ros.RosenbrockTableau("rodas4p", 0.25, a, C, [0, 0.75, 0.21, 0.63, 1, 1],
                              [0.25, -0.5, -0.023504, -0.0362, 0, 0], m, e, H, 4, 3, 3)
    return M.Method("rodas4p", "rosenbrock", T, False, 4, 0.04)


def test_prothero_robinson_stiff_order():
    """y' = -lam (y - sin t) + cos t, y(0) = 0 (solution sin t), lam = 1e4 and 1e6, h lam >= 125.

    In this stiff regime Rosenbrock methods show order reduction: with R(inf) = 0 the global error is the
    last local error, O(h^q / lam) with q set by the "Prothero-Robinson" conditions that classical RODAS5
    does not satisfy (q = 1), while RODAS4P (Steinebach 1995) was built to satisfy them (q = 3). We measure
    exactly that: rodas5 slope 1 with the error scaling like 1/lam, and RODAS4P -- run through the same
    compiled loop as a data-only tableau -- slope 3, which shows the reduction is the method's, not the loop's.
    """
    lam = sp.Symbol("lam")
    m = symode.ODE([-lam * (x - sp.sin(t)) + sp.cos(t)], [x], [lam], t=t)
    T = 2.0
    dts = [0.2, 0.1, 0.05, 0.025, 0.0125]
    errs = {}
    for L in (1e4, 1e6):
        errs[L] = np.array([abs(fixed_steps(m, [0.0], [L], T, h, "rodas5").z[-1, 0] - np.sin(T)) for h in dts])
        slope = np.polyfit(np.log(dts), np.log(errs[L]), 1)[0]
        assert 0.9 < slope < 1.3, (L, slope, errs[L])
    ratio = errs[1e4] / errs[1e6]
    assert np.all((ratio > 50) & (ratio < 200))  # error ~ 1/lam
    meth = _rodas4p()
    e4p = []
    for h in dts:
        opts = m._rt.config("rodas5", 1e3, 1e3, h, 10 ** 6, h, None)
        res = _stiff.integrate(m._rt, np.array([0.0]), np.array([1e4]), np.array([0.0, T]), dataclasses.replace(opts, method=meth))
        e4p.append(abs(res.out_y[-1, 0] - np.sin(T)))
    slope = np.polyfit(np.log(dts), np.log(e4p), 1)[0]
    assert abs(slope - 3) < 0.3, (slope, e4p)


# ------------------------------------------------------------------------------------------------ dense output
def test_dense_output_accuracy_and_steps_unchanged():
    m = symode.ODE([-x / 2 + sp.sin(3 * t)], [x], t=t)

    def exact(tt):
        return (1 + 3 / 9.25) * np.exp(-tt / 2) + (0.5 * np.sin(3 * tt) - 3 * np.cos(3 * tt)) / 9.25

    kw = dict(method="rodas5", rtol=1e-8, atol=1e-8)
    coarse = m.solve([1.0], [], [0.0, 10.0], **kw)
    ts = np.linspace(0.0, 10.0, 997)
    fine = m.solve([1.0], [], ts, **kw)
    assert coarse.stats["naccepted"] == fine.stats["naccepted"] < 200  # outputs never shorten steps
    assert fine.z[-1, 0] == coarse.z[-1, 0]
    # 4th-order continuous extension: between steps as accurate as the steps themselves (measured 1.3e-8)
    assert np.max(np.abs(fine.z[:, 0] - exact(ts))) < 1e-7


def test_recorded_steps_and_dense_eval(robertson):
    """record=2: rec_k = U / h; rosenbrock_dense_eval reproduces the outputs and the next step's start."""
    m = robertson[0]
    opts = m._rt.config("rodas5", 1e-7, 1e-12, None, 10 ** 5, None, None)
    ts = np.array([0.0, 1e-3, 0.37, 10.0, 4e4])
    res = _stiff.integrate(m._rt, np.array([1.0, 0.0, 0.0]), ROB_K, ts, opts, record=2)
    T = opts.method.tableau
    nrec = res.rec_t.size
    assert nrec == res.stats[2] and res.rec_k.shape == (nrec, T.n_stages, 3)
    out = np.empty(3)
    for k in range(nrec - 1):
        ros.rosenbrock_dense_eval(res.rec_y[k], res.rec_h[k], res.rec_k[k], T.dense, 1.0, out)
        assert np.allclose(out, res.rec_y[k + 1], rtol=1e-13, atol=1e-20)
        assert res.rec_t[k] + res.rec_h[k] == res.rec_t[k + 1]
    for i in range(1, ts.size):
        k, frac = res.out_step[i], res.out_frac[i]
        ros.rosenbrock_dense_eval(res.rec_y[k], res.rec_h[k], res.rec_k[k], T.dense, frac, out)
        assert np.allclose(out, res.out_y[i], rtol=1e-12, atol=1e-20)
    # the stage inputs are rec_y + h * a @ rec_k (what an adjoint replays)
    k = 5
    U = res.rec_k[k] * res.rec_h[k]
    Y1 = res.rec_y[k] + T.a[1] @ U
    assert np.allclose(Y1, res.rec_y[k] + res.rec_h[k] * (T.a[1] @ res.rec_k[k]))


def test_backward_in_time():
    k = sp.Symbol("k")
    m = symode.ODE([-k * x], [x], [k])
    ts = np.linspace(2.0, 0.0, 9)
    for method in ("rodas5", "auto"):
        sol = m.solve([1.0], [0.5], ts, method=method, rtol=1e-10, atol=1e-12)
        assert np.max(np.abs(sol.z[:, 0] - np.exp(-0.5 * (ts - 2.0)))) < 1e-8


# ------------------------------------------------------------------------------------------------ banded W
def test_banded_w_matches_dense():
    """Fisher-KPP on 40 grid points (tridiagonal J, stiff diffusion): the band LU is chosen automatically and
    gives the dense LU's answer to rounding."""
    n = 40
    u = sp.symbols(f"u0:{n}")
    D = sp.Symbol("D")
    rhs = [D * ((u[i - 1] if i > 0 else 0) - 2 * u[i] + (u[i + 1] if i < n - 1 else 0)) + u[i] * (1 - u[i])
           for i in range(n)]
    m = symode.ODE(rhs, list(u), [D])
    kl, ku, band = (lambda p_: (p_.kl, p_.ku, p_.band))(_stiff.linalg_plan(m._rt))
    assert band and (kl, ku) == (1, 1)
    assert not _stiff.linalg_plan(m._rt, "dense").band
    z0 = np.exp(-((np.arange(n) - n / 2) / 4.0) ** 2)
    ts = np.linspace(0.0, 2.0, 5)
    theta = np.array([(n + 1) ** 2 / 100.0])
    opts = m._rt.config("rodas5", 1e-8, 1e-10, None, 10 ** 5, None, None)
    rb = _stiff.integrate(m._rt, z0, theta, ts, opts)
    rd = _stiff.integrate(m._rt, z0, theta, ts, opts, linalg="dense")
    assert rb.status == rd.status == 0 and rb.stats[2] == rd.stats[2]
    assert np.max(np.abs(rb.out_y - rd.out_y)) < 1e-12
    f, J = lambdified(rhs, u, [D])
    ref = solve_ivp(lambda tt, z: np.asarray(f(tt, z, theta), float), (0, 2), z0, method="Radau", t_eval=ts,
                    rtol=1e-11, atol=1e-13, jac=lambda tt, z: np.asarray(J(tt, z, theta), float)).y.T
    assert np.max(np.abs(rb.out_y - ref)) < 1e-7
    with pytest.raises(symode.InputValidationError, match="linear algebra"):
        _stiff.linalg_plan(m._rt, "sparse")


# ------------------------------------------------------------------------------------------------ failures
def test_singular_w_status():
    """z' = sqrt(z), z(0) = 0: f = 0 but df/dz = inf, so W has no LU at any step size -> SINGULAR_MATRIX
    after a bounded number of retries (never an exception from the kernel)."""
    m = symode.ODE([sp.sqrt(x)], [x])
    sol = m.solve([0.0], [], [0.0, 1.0], method="rodas5", throw=False)
    assert sol.status == _status.SINGULAR_MATRIX and not sol.success
    assert "singular" in sol.message and sol.t_reached == 0.0
    assert sol.stats["nlu"] == ros.MAX_LU_FAILURES and sol.stats["nrejected"] == ros.MAX_LU_FAILURES
    with pytest.raises(symode.IntegrationError, match="SINGULAR_MATRIX") as e:
        m.solve([0.0], [], [0.0, 1.0], method="rodas5")
    assert e.value.status == _status.SINGULAR_MATRIX and e.value.solution is not None


def test_max_steps_status(robertson):
    m = robertson[0]
    sol = m.solve([1.0, 0.0, 0.0], ROB_K, ROB_TS, method="rodas5", max_steps=20, throw=False)
    assert sol.status == _status.MAX_STEPS and "max_steps" in sol.message and sol.stats["nsteps"] == 20
    assert np.isnan(sol.z[-1]).all() and np.isfinite(sol.z[0]).all() and 0 < sol.t_reached < 1e11
    with pytest.raises(symode.IntegrationError, match="MAX_STEPS"):
        m.solve([1.0, 0.0, 0.0], ROB_K, ROB_TS, method="auto", max_steps=20)


def test_nonfinite_paths():
    # log(x) with x reaching 0 near t = 1: rejected, shrunk, then NONFINITE (or DT_MIN), never NaN values
    m = symode.ODE([-1 + sp.log(x) / 10 ** 6], [x])
    for method in ("rodas5", "auto"):
        sol = m.solve([1.0], [], [0.0, 2.0], method=method, throw=False)
        assert sol.status in (_status.NONFINITE, _status.DT_MIN), method
        assert abs(sol.t_reached - 1.0) < 1e-3 and np.isnan(sol.z[-1]).all()
        assert sol.stats["nrejected"] > 0
    # NaN at the very first evaluation
    m = symode.ODE([sp.log(x)], [x])
    sol = m.solve([-1.0], [], [0.0, 1.0], method="rodas5", throw=False)
    assert sol.status == _status.NONFINITE and sol.t_reached == 0.0 and sol.stats["nfev"] == 1
    assert "non-finite" in sol.message


def test_time_limit(robertson):
    sol = robertson[0].solve([1.0, 0.0, 0.0], ROB_K, ROB_TS, method="rodas5", rtol=1e-12, atol=1e-20,
                             time_limit=1e-9, throw=False)
    assert sol.status == _status.TIME_LIMIT and sol.stats["nsteps"] <= 64 and "time_limit" in sol.message


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(method="rodas6"), "'rodas5', 'rodas4', 'auto'"),
    (dict(method="rodas5", dt=-1.0), "`dt`"),
    (dict(method="rodas5", rtol=-1.0), "`rtol`"),
    (dict(method="auto", max_steps=0), "`max_steps`"),
    (dict(method="rodas5", controller=dict(gain=1)), "unknown controller setting"),
])
def test_bad_input(robertson, kwargs, fragment):
    with pytest.raises(symode.InputValidationError) as e:
        robertson[0].solve([1.0, 0.0, 0.0], ROB_K, ROB_TS, **kwargs)
    assert fragment in str(e.value)


def test_record_with_auto_refused(robertson):
    m = robertson[0]
    opts = m._rt.config("auto", 1e-6, 1e-10, None, 10 ** 5, None, None)
    with pytest.raises(symode.InputValidationError, match="not 'auto'"):
        _stiff.integrate(m._rt, np.array([1.0, 0.0, 0.0]), ROB_K, ROB_TS, opts, record=1)


def test_registry():
    for name, kind, order in (("rodas5", "rosenbrock", 5), ("rodas4", "rosenbrock", 4), ("auto", "auto", 5)):
        meth = M.get(name)
        assert meth.kind == kind and meth.order == order and not meth.fixed
    assert {"rodas5", "rodas4", "auto"} <= set(symode.METHODS)


# ---------------------------------------------------------------- gradients through the stiff methods


def _robertson_y3T(k, z0, T=1e5):
    from scipy.integrate import solve_ivp

    def f(t, y):
        return [-k[0] * y[0] + k[2] * y[1] * y[2], k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2,
                k[1] * y[1] ** 2]

    def jac(t, y):
        return [[-k[0], k[2] * y[2], k[2] * y[1]], [k[0], -k[2] * y[2] - 2 * k[1] * y[1], -k[2] * y[1]],
                [0, 2 * k[1] * y[1], 0]]

    return solve_ivp(f, (0, T), z0, method="Radau", rtol=1e-12, atol=1e-20, jac=jac).y[2, -1]


def test_robertson_gradient_forward_sensitivities_vs_radau_fd():
    """d y3(1e5) / dk by forward sensitivities and by the checkpoint adjoint through rodas5, against central
    differences of tight Radau solves (<= 1e-4 relative)."""
    import sympy as sp

    import symode

    y1, y2, y3 = sp.symbols("y1 y2 y3")
    k1, k2, k3 = sp.symbols("k1 k2 k3")
    rob = symode.ODE([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2, k2 * y2 ** 2],
                     states=[y1, y2, y3], params=[k1, k2, k3])
    ts = np.concatenate([[0.0], np.logspace(-6, 5, 50)[1:]])
    k = np.array([0.04, 3e7, 1e4])
    z0 = np.array([1.0, 0.0, 0.0])
    cot = np.zeros((50, 3))
    cot[-1, 2] = 1.0
    g = rob.vjp(z0, k, ts, cot, adjoint="forward", method="rodas5", rtol=1e-8, atol=1e-12)
    gc = rob.vjp(z0, k, ts, cot, adjoint="checkpoint", method="rodas5", rtol=1e-8, atol=1e-12)
    fd = []
    for i in range(3):
        e = 1e-4 * k[i]
        kp, km = k.copy(), k.copy()
        kp[i] += e
        km[i] -= e
        fd.append((_robertson_y3T(kp, z0) - _robertson_y3T(km, z0)) / (2 * e))
    assert np.all(np.abs((g.theta - fd) / np.array(fd)) < 1e-4), (g.theta, fd)
    # the checkpoint adjoint integrates the stiff adjoint system backward with rodas5 on its exact Jacobian
    assert np.all(np.abs((gc.theta - fd) / np.array(fd)) < 1e-4), (gc.theta, fd)
    assert np.allclose(gc.z0, g.z0, rtol=1e-5)
    S = rob.sensitivities(z0, k, ts, method="rodas5", rtol=1e-8, atol=1e-12)
    assert S.dz_dtheta.shape == (50, 3, 3) and np.allclose(S.dz_dtheta[-1, 2], g.theta)
    with pytest.raises(symode.InputValidationError, match="backsolve"):
        rob.vjp(z0, k, ts, cot, adjoint="backsolve", method="rodas5")
    # the discrete adjoint through the Rosenbrock steps (tests/test_stiff_discrete.py has its exactness checks)
    gd = rob.vjp(z0, k, ts, cot, adjoint="discrete", method="rodas5", rtol=1e-8, atol=1e-12)
    assert np.all(np.abs((gd.theta - fd) / np.array(fd)) < 1e-4), (gd.theta, fd)
