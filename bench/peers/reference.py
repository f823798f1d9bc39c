"""Tight-tolerance reference values (loss and gradient) that bench/run.py checks every tool against.

Not timed.  Needs numpy, scipy and sympy (P3 only).
  P1, P4, P5: forward solve with SciPy DOP853 (dense output) at rtol = atol = 1e-12, gradient by the continuous
              adjoint (lambda, mu) integrated backwards with DOP853 at rtol = atol = 1e-12 between the output
              times, jumps lambda += dL/dz(t_i).
  P2:         true trajectory DOP853 rtol = 1e-12, atol = 1e-14; the 20 batch members and their adjoints the same
              way (loss mean|pred - true|, jumps sign(pred - true)/400).
  P3:         Radau rtol = 1e-12, atol = 1e-20 with forward sensitivities w.r.t. log k (symbolic Jacobian of the
              augmented system), divided by k.
  P6:         all 10,000 final states with DOP853 rtol = atol = 1e-12 on the stacked 20,000-state system.

    python bench/peers/reference.py --problems P1,P3
"""
import time

T_START = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import bench_common as C  # noqa: E402

T_IMPORTED = time.perf_counter()
TIGHT = dict(rtol=1e-12, atol=1e-12)


def adjoint_solve(f, vjp, z0, th, ts, cot_fn, tol=TIGHT):
    """Returns (Z (m,n), dL/dz0, dL/dth).  f(z, th) -> dz; vjp(z, th, lam) -> ((df/dz)^T lam, (df/dth)^T lam);
    cot_fn(Z) -> (m, n) cotangents dL/dz(t_i)."""
    fwd = solve_ivp(lambda t, z: f(z, th), (ts[0], ts[-1]), z0, method="DOP853", dense_output=True, t_eval=ts,
                    **tol)
    assert fwd.success, fwd.message
    Z = fwd.y.T.copy()
    cot = cot_fn(Z)
    n, p = z0.size, th.size
    lam = cot[-1].copy()
    mu = np.zeros(p)

    def rhs(t, a):
        gz, gth = vjp(fwd.sol(t), th, a[:n])
        return -np.concatenate([gz, gth])
    for i in range(len(ts) - 1, 0, -1):
        s = solve_ivp(rhs, (ts[i], ts[i - 1]), np.concatenate([lam, mu]), method="DOP853", **tol)
        assert s.success, s.message
        lam = s.y[:n, -1] + cot[i - 1]
        mu = s.y[n:, -1].copy()
    return Z, lam, mu


def lv(z, th):
    x, y = z
    return np.array([th[0] * x - th[1] * x * y, th[3] * x * y - th[2] * y])


def lv_vjp(z, th, lam):
    x, y = z
    a, b, c, d = th
    return (np.array([(a - b * y) * lam[0] + d * y * lam[1], -b * x * lam[0] + (d * x - c) * lam[1]]),
            np.array([x * lam[0], -x * y * lam[0], -y * lam[1], x * y * lam[1]]))


def lorenz(z, th):
    x, y, w = z
    s, r, b = th
    return np.array([s * (y - x), x * (r - w) - y, x * y - b * w])


def lorenz_vjp(z, th, lam):
    x, y, w = z
    s, r, b = th
    return (np.array([-s * lam[0] + (r - w) * lam[1] + y * lam[2], s * lam[0] - lam[1] + x * lam[2],
                      -x * lam[1] - b * lam[2]]),
            np.array([(y - x) * lam[0], x * lam[1], -w * lam[2]]))


def tanhnet(n):
    def f(z, th):
        return np.tanh(th.reshape(n, n) @ z) - 0.5 * z

    def vjp(z, th, lam):
        W = th.reshape(n, n)
        g = (1.0 - np.tanh(W @ z) ** 2) * lam
        return W.T @ g - 0.5 * lam, np.outer(g, z).ravel()
    return f, vjp


def sumsq_ref(key, f, vjp, z0, th, ts):
    t0 = time.perf_counter()
    Z, gz, gth = adjoint_solve(f, vjp, np.asarray(z0, float), np.asarray(th, float), ts, lambda Z: 2.0 * Z)
    return [{"variant": "reference: DOP853 rtol=atol=1e-12 + continuous adjoint at 1e-12", "reference": True,
             "loss": float(np.sum(Z ** 2)), "grad": C.tolist(np.concatenate([gz, gth])),
             "elapsed_s": time.perf_counter() - t0}]


def run_p1(ctx):
    return sumsq_ref("P1", lv, lv_vjp, C.P1_Z0, C.P1_THETA, C.P1_TS)


def run_p4(ctx):
    return sumsq_ref("P4", lorenz, lorenz_vjp, C.P4_Z0, C.P4_THETA, C.P4_TS)


def make_p5(n):
    def run(ctx):
        W, z0 = C.p5_data(n)
        f, vjp = tanhnet(n)
        return sumsq_ref("P5_n%d" % n, f, vjp, z0, W.ravel(), C.P5_TS)
    return run


def run_p2(ctx):
    t0 = time.perf_counter()
    tol_true = dict(rtol=1e-12, atol=1e-14)
    s = solve_ivp(lambda t, y: (y ** 3) @ C.P2_A, (0.0, 25.0), C.P2_Y0, method="DOP853", t_eval=C.P2_TS, **tol_true)
    true_y = s.y.T
    y0s, targets = C.p2_batch_from_true(true_y)
    tb = C.p2_batch_ts()
    th = C.p2_flat_params()
    H = C.P2_HIDDEN

    def unpack(th):
        return th[:100].reshape(H, 2), th[100:150], th[150:250].reshape(2, H), th[250:252]

    def f(y, th):
        W1, b1, W2, b2 = unpack(th)
        return W2 @ np.tanh(W1 @ y ** 3 + b1) + b2

    def vjp(y, th, lam):
        W1, b1, W2, b2 = unpack(th)
        u = y ** 3
        a = np.tanh(W1 @ u + b1)
        hb = (W2.T @ lam) * (1 - a * a)
        return (W1.T @ hb) * 3 * y ** 2, np.concatenate([np.outer(hb, u).ravel(), hb, np.outer(lam, a).ravel(), lam])
    Nn = targets.size
    L = 0.0
    g = np.zeros(th.size)
    for b in range(len(y0s)):
        tgt = targets[b]
        Z, gz, gth = adjoint_solve(f, vjp, y0s[b], th, tb, lambda Z: np.sign(Z - tgt) / Nn, tol=tol_true)
        L += np.sum(np.abs(Z - tgt))
        g += gth
    return [{"variant": "reference: DOP853 rtol=1e-12 atol=1e-14 + continuous adjoint", "reference": True,
             "loss": L / Nn, "grad": C.tolist(g), "true_final": true_y[-1].tolist(),
             "elapsed_s": time.perf_counter() - t0}]


def run_p3(ctx):
    import sympy as sp
    t0 = time.perf_counter()
    y = sp.symbols("y1:4")
    lk = sp.symbols("l1:4")
    k = [sp.exp(v) for v in lk]
    f = sp.Matrix([-k[0] * y[0] + k[2] * y[1] * y[2], k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2,
                   k[1] * y[1] ** 2])
    S = sp.Matrix(3, 3, lambda i, j: sp.Symbol("s_%d_%d" % (i, j)))
    dS = f.jacobian(y) * S + f.jacobian(lk)
    aug_states = list(y) + list(S)
    aug = list(f) + list(dS)
    F = sp.lambdify((aug_states, lk), aug, "numpy")
    J = sp.lambdify((aug_states, lk), sp.Matrix(aug).jacobian(aug_states), "numpy")
    p = np.log(C.P3_K)
    Y0 = np.concatenate([C.P3_Z0, np.zeros(9)])
    sol = solve_ivp(lambda t, Y: F(Y, p), (0.0, C.P3_TS[-1]), Y0, method="Radau", t_eval=C.P3_TS,
                    jac=lambda t, Y: np.asarray(J(Y, p), dtype=float), rtol=1e-12, atol=1e-20)
    assert sol.success, sol.message
    yf = sol.y[:, -1]
    grad = yf[3:].reshape(3, 3)[2] / C.P3_K
    return [{"variant": "reference: Radau rtol=1e-12 atol=1e-20, forward sensitivities w.r.t. log k",
             "reference": True, "loss": float(yf[2]), "grad": C.tolist(grad), "elapsed_s": time.perf_counter() - t0}]


def run_p6(ctx):
    t0 = time.perf_counter()
    th = C.p6_thetas()
    N = len(th)
    a, b, c, d = th.T

    def rhs(t, Y):
        x, y = Y[:N], Y[N:]
        return np.concatenate([a * x - b * x * y, d * x * y - c * y])
    s = solve_ivp(rhs, (0.0, C.P6_T1), np.repeat(C.P1_Z0, N), method="DOP853", rtol=1e-12, atol=1e-12)
    assert s.success, s.message
    zf = s.y[:, -1].reshape(2, N).T
    return [{"variant": "reference: DOP853 rtol=atol=1e-12, stacked system", "reference": True,
             "final_states": zf.tolist(), "final_state_first": zf[0].tolist(),
             "final_state_mean": zf.mean(axis=0).tolist(), "n_traj": N, "elapsed_s": time.perf_counter() - t0}]


PROBLEMS = {"P1": run_p1, "P2": run_p2, "P3": run_p3, "P4": run_p4, "P5_n4": make_p5(4), "P5_n16": make_p5(16),
            "P5_n64": make_p5(64), "P6": run_p6}


def meta():
    return C.pkg_versions(["numpy", "scipy", "sympy"])


if __name__ == "__main__":
    C.adapter_main("reference", os.path.abspath(__file__), PROBLEMS, {}, meta, T_START, T_IMPORTED)
