"""SciPy solve_ivp + sympy.lambdify: what a typical Python user writes.

Dynamics written in SymPy and turned into NumPy functions with sympy.lambdify.  Non-stiff problems use
solve_ivp(method="RK45") (Dormand-Prince 5(4), dense output at t_eval); P3 uses Radau (main) and BDF / LSODA
(--variants all) with the lambdified symbolic Jacobian.  Gradients: forward sensitivities, i.e. the augmented
system dz/dt = f, dS/dt = (df/dz) S + df/d(z0, theta), S(0) = [I | 0], integrated with the same solver and the same
scalar rtol/atol:
  * P1, P3, P4: the whole augmented system built symbolically and lambdified as one function;
  * P2, P5 (n <= 16): f, df/dz, df/dtheta lambdified (cse=True), the product formed with NumPy;
  * P5 n = 64: f lambdified, df/dz and df/dW HAND-WRITTEN in NumPy (the SymPy Jacobian w.r.t. 4096 symbols takes
    ~10 minutes; the row says so).
P6: a Python loop of independent solve_ivp(RK45) calls (first 100 parameter sets, one thread); with
--variants all also one solve_ivp on the stacked 20,000-state system (shared steps).

    python bench/peers/scipy_.py --problems P1,P3
"""
import time

T_START = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import sympy as sp  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import bench_common as C  # noqa: E402

T_IMPORTED = time.perf_counter()


class SymODE:
    """f(t, z; theta) from SymPy expressions, lambdified, plus a forward-sensitivity augmented system."""

    def __init__(self, exprs, states, params, sens_wrt="z0+p", full_aug=True, stiff=False, cse=False):
        t0 = time.perf_counter()
        t = sp.Symbol("t")
        self.n, self.q = len(states), len(params)
        self.sens_wrt = sens_wrt
        n, q = self.n, self.q
        f = sp.Matrix(exprs)
        self.f = sp.lambdify((t, states, params), list(exprs), "numpy", cse=cse)
        Jz = f.jacobian(states)
        Jp = f.jacobian(params)
        if stiff:
            self.jac = sp.lambdify((t, states, params), Jz, "numpy", cse=cse)
        m = n + q if sens_wrt == "z0+p" else q
        self.m = m
        if full_aug:
            S = sp.Matrix(n, m, lambda i, j: sp.Symbol("s_%d_%d" % (i, j)))
            forcing = Jp if sens_wrt == "p" else sp.zeros(n, n).row_join(Jp)
            dS = Jz * S + forcing
            aug_states = list(states) + list(S)
            aug_exprs = list(exprs) + list(dS)
            self.aug = sp.lambdify((t, aug_states, params), aug_exprs, "numpy", cse=cse)
            if stiff:
                self.aug_jac = sp.lambdify((t, aug_states, params), sp.Matrix(aug_exprs).jacobian(aug_states),
                                           "numpy", cse=cse)
        else:
            Jz_f = sp.lambdify((t, states, params), Jz, "numpy", cse=cse)
            Jp_f = sp.lambdify((t, states, params), Jp, "numpy", cse=cse)
            f_f = self.f
            off = n if sens_wrt == "z0+p" else 0

            def aug(tt, Y, p):
                z = Y[:n]
                S = Y[n:].reshape(n, m)
                dS = np.asarray(Jz_f(tt, z, p)) @ S
                dS[:, off:] += np.asarray(Jp_f(tt, z, p))
                return np.concatenate([np.asarray(f_f(tt, z, p)), dS.ravel()])
            self.aug = aug
        self.setup_s = time.perf_counter() - t0

    def s0(self):
        S = np.zeros((self.n, self.m))
        if self.sens_wrt == "z0+p":
            S[:, :self.n] = np.eye(self.n)
        return S.ravel()

    def solve(self, z0, p, ts, method="RK45", **tol):
        kw = {"jac": self.jac} if method in ("Radau", "BDF", "LSODA") else {}
        sol = solve_ivp(self.f, (ts[0], ts[-1]), z0, method=method, t_eval=ts, args=(p,), **kw, **tol)
        assert sol.success, sol.message
        return sol

    def solve_sens(self, z0, p, ts, method="RK45", **tol):
        kw = {"jac": self.aug_jac} if method in ("Radau", "BDF", "LSODA") else {}
        Y0 = np.concatenate([z0, self.s0()])
        sol = solve_ivp(self.aug, (ts[0], ts[-1]), Y0, method=method, t_eval=ts, args=(p,), **kw, **tol)
        assert sol.success, sol.message
        z = sol.y[:self.n].T
        S = sol.y[self.n:].T.reshape(len(ts), self.n, self.m)
        return sol, z, S


class P5NumpyJac:
    """P5 at n=64 without SymPy Jacobians: f lambdified, df/dz and df/dW written by hand in NumPy."""

    def __init__(self, n):
        t0 = time.perf_counter()
        z = sp.symbols("z0:%d" % n)
        W = sp.Matrix(n, n, lambda i, j: sp.Symbol("W_%d_%d" % (i, j)))
        f = (W * sp.Matrix(z)).applyfunc(sp.tanh) - sp.Matrix(z) / 2
        self.f = sp.lambdify((sp.Symbol("t"), list(z), list(W)), list(f), "numpy", cse=True)
        self.n, self.q, self.m, self.sens_wrt = n, n * n, n + n * n, "z0+p"
        self.setup_s = time.perf_counter() - t0

        def aug(tt, Y, p):
            zz = Y[:n]
            S = Y[n:].reshape(n, n + n * n)
            Wm = p.reshape(n, n)
            th = np.tanh(Wm @ zz)
            d = 1.0 - th * th
            dS = (d[:, None] * Wm) @ S - 0.5 * S
            dS[:, n:].reshape(n, n, n)[np.arange(n), np.arange(n), :] += d[:, None] * zz[None, :]
            return np.concatenate([th - 0.5 * zz, dS.ravel()])
        self.aug = aug

    s0 = SymODE.s0
    solve = SymODE.solve
    solve_sens = SymODE.solve_sens


def p1_ode():
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("alpha beta gamma delta")
    return SymODE([a * x - b * x * y, d * x * y - c * y], [x, y], [a, b, c, d])


def p4_ode():
    x, y, z = sp.symbols("x y z")
    s, r, b = sp.symbols("sigma rho beta")
    return SymODE([s * (y - x), x * (r - z) - y, x * y - b * z], [x, y, z], [s, r, b])


def p5_ode(n):
    if n > 16:
        return P5NumpyJac(n)
    z = sp.symbols("z0:%d" % n)
    W = sp.Matrix(n, n, lambda i, j: sp.Symbol("W_%d_%d" % (i, j)))
    zv = sp.Matrix(z)
    f = (W * zv).applyfunc(sp.tanh) - zv / 2
    return SymODE(list(f), list(z), list(W), full_aug=False, cse=True)


def p3_ode():
    y1, y2, y3 = sp.symbols("y1 y2 y3")
    k1, k2, k3 = sp.symbols("k1 k2 k3")
    return SymODE([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2, k2 * y2 ** 2],
                  [y1, y2, y3], [k1, k2, k3], sens_wrt="p", stiff=True)


def sumsq_rows(ctx, ode, z0, p, ts, tol, note=None):
    def fwd():
        sol = ode.solve(z0, p, ts, **tol)
        return float(np.sum(sol.y ** 2)), sol.nfev

    def grad():
        sol, z, S = ode.solve_sens(z0, p, ts, **tol)
        return float(np.sum(z ** 2)), np.einsum("ti,tij->j", 2.0 * z, S), sol.nfev
    tf = ctx.time(fwd)
    tg = ctx.time(grad)
    L, nfev = tf["result"]
    Lg, g, gnfev = tg["result"]
    row = {"variant": "solve_ivp RK45 + lambdify", "solver": "RK45 (dopri5)",
           "grad_method": "forward sensitivities (augmented system, RK45)", **C.tentry("forward", tf),
           **C.tentry("grad", tg), "loss": L, "grad": C.tolist(g), "nfev": int(nfev), "grad_nfev": int(gnfev),
           "build_s": ode.setup_s}
    if note:
        row["note"] = note
    return [row]


def run_p1(ctx):
    return sumsq_rows(ctx, p1_ode(), C.P1_Z0, C.P1_THETA, C.P1_TS, C.P1_TOL)


def run_p4(ctx):
    return sumsq_rows(ctx, p4_ode(), C.P4_Z0, C.P4_THETA, C.P4_TS, C.P4_TOL)


def make_p5(n):
    def run(ctx):
        W, z0 = C.p5_data(n)
        note = ("df/dz and df/dW hand-written in NumPy (the SymPy Jacobian w.r.t. 4096 symbols takes ~10 min)"
                if n > 16 else None)
        return sumsq_rows(ctx, p5_ode(n), z0, W.ravel().copy(), C.P5_TS, C.P5_TOL, note)
    return run


def run_p3(ctx):
    ode = p3_ode()
    rows = []
    for method in (["Radau", "BDF", "LSODA"] if ctx.all else ["Radau"]):
        def fwd():
            sol = ode.solve(C.P3_Z0, C.P3_K, C.P3_TS, method=method, **C.P3_TOL)
            return float(sol.y[2, -1]), sol.nfev

        def grad():
            sol, z, S = ode.solve_sens(C.P3_Z0, C.P3_K, C.P3_TS, method=method, **C.P3_TOL)
            return float(z[-1, 2]), S[-1, 2, :].copy()
        tf = ctx.time(fwd)
        tg = ctx.time(grad)
        rows.append({"variant": "solve_ivp %s + lambdify (symbolic Jacobian)" % method, "solver": method,
                     "grad_method": "forward sensitivities w.r.t. k (%s, symbolic Jacobian of the augmented "
                                    "system)" % method, **C.tentry("forward", tf), **C.tentry("grad", tg),
                     "loss": tf["result"][0], "grad": C.tolist(tg["result"][1]), "nfev": int(tf["result"][1]),
                     "build_s": ode.setup_s})
    return rows


def run_p2(ctx):
    tol = C.P2_TOL
    ts = C.P2_TS
    t = sp.Symbol("t")
    y = sp.symbols("y0:2")
    A = sp.Matrix(C.P2_A)
    true_f = sp.lambdify((t, y), list(sp.Matrix([[y[0] ** 3, y[1] ** 3]]) * A), "numpy")

    def true_fwd():
        return solve_ivp(true_f, (ts[0], ts[-1]), C.P2_Y0, method="RK45", t_eval=ts, **tol)
    tf = ctx.time(true_fwd)
    true_y = tf["result"].y.T
    H = C.P2_HIDDEN
    W1 = sp.Matrix(H, 2, lambda i, j: sp.Symbol("W1_%d_%d" % (i, j)))
    b1 = sp.Matrix(H, 1, lambda i, j: sp.Symbol("b1_%d" % i))
    W2 = sp.Matrix(2, H, lambda i, j: sp.Symbol("W2_%d_%d" % (i, j)))
    b2 = sp.Matrix(2, 1, lambda i, j: sp.Symbol("b2_%d" % i))
    u = sp.Matrix([y[0] ** 3, y[1] ** 3])
    f = W2 * (W1 * u + b1).applyfunc(sp.tanh) + b2
    params = list(W1) + list(b1) + list(W2) + list(b2)
    ode = SymODE(list(f), list(y), params, sens_wrt="p", full_aug=False, cse=True)
    p = C.p2_flat_params()
    y0s, targets = C.p2_batch_from_true(true_y)
    tb = C.p2_batch_ts()
    N = targets.size

    def batch_fwd():
        L = 0.0
        for b in range(C.P2_BATCH):
            so = ode.solve(y0s[b], p, tb, **tol)
            L += np.sum(np.abs(so.y.T - targets[b]))
        return L / N

    def iteration():
        L = 0.0
        g = np.zeros(p.size)
        for b in range(C.P2_BATCH):
            so, z, S = ode.solve_sens(y0s[b], p, tb, **tol)
            d = z - targets[b]
            L += np.sum(np.abs(d))
            g += np.einsum("ti,tij->j", np.sign(d), S)
        return L / N, g / N
    tbf = ctx.time(batch_fwd)
    tg = ctx.time(iteration)
    L, g = tg["result"]
    return [{"variant": "solve_ivp RK45 + lambdify", "solver": "RK45 (dopri5)",
             "forward_what": "true dynamics over all 1000 points",
             "grad_what": "one training iteration: 20 solve_ivp calls of the 506-state forward-sensitivity system",
             "grad_method": "forward sensitivities", **C.tentry("forward", tf), **C.tentry("grad", tg),
             "batch_forward_s_min": tbf["min"], "batch_forward_s_median": tbf["median"], "loss": L,
             "grad": C.tolist(g), "build_s": ode.setup_s}]


def run_p6(ctx):
    thetas = C.p6_thetas()
    tol = C.P6_TOL
    ode = p1_ode()
    nsub = 100
    rows = []

    def loop():
        out = np.empty((nsub, 2))
        for k in range(nsub):
            sol = solve_ivp(ode.f, (0.0, C.P6_T1), C.P1_Z0, method="RK45", args=(thetas[k],), **tol)
            out[k] = sol.y[:, -1]
        return out
    tm = ctx.time(loop)
    out = tm["result"]
    rows.append({"variant": "solve_ivp RK45 loop, threads=1", "threads": 1, **C.tentry("forward", tm),
                 "n_traj": nsub, "traj_per_s": nsub / tm["min"], "traj_per_s_median": nsub / tm["median"],
                 "final_state_first": out[0].tolist(), "final_state_mean": out.mean(axis=0).tolist(),
                 "method": "independent solve_ivp(RK45) per theta, first %d thetas" % nsub})
    if ctx.all:
        N = thetas.shape[0]
        th_cols = thetas.T.copy()

        def batched():
            def fb(t, Y):
                return np.concatenate(ode.f(t, Y.reshape(2, N), th_cols))
            sol = solve_ivp(fb, (0.0, C.P6_T1), np.repeat(C.P1_Z0, N), method="RK45", **tol)
            return sol.y[:, -1].reshape(2, N).T
        tm = ctx.time(batched)
        out = tm["result"]
        rows.append({"variant": "solve_ivp RK45 on the stacked 20,000-state system", "threads": 1,
                     **C.tentry("forward", tm), "n_traj": N, "traj_per_s": N / tm["min"],
                     "traj_per_s_median": N / tm["median"], "final_state_first": out[0].tolist(),
                     "final_state_mean": out.mean(axis=0).tolist(),
                     "method": "shared steps, RMS error over all trajectories (not per-trajectory control)"})
    return rows


PROBLEMS = {"P1": run_p1, "P2": run_p2, "P3": run_p3, "P4": run_p4, "P5_n4": make_p5(4), "P5_n16": make_p5(16),
            "P5_n64": make_p5(64), "P6": run_p6}


def cold_p1():
    ode = p1_ode()
    sol = ode.solve(C.P1_Z0, C.P1_THETA, C.P1_TS, **C.P1_TOL)
    _, z, S = ode.solve_sens(C.P1_Z0, C.P1_THETA, C.P1_TS, **C.P1_TOL)
    g = np.einsum("ti,tij->j", 2.0 * z, S)
    return {"loss": float(np.sum(sol.y ** 2)), "grad0": float(g[0])}


def cold_p3():
    ode = p3_ode()
    sol = ode.solve(C.P3_Z0, C.P3_K, C.P3_TS, method="Radau", **C.P3_TOL)
    ode.solve_sens(C.P3_Z0, C.P3_K, C.P3_TS, method="Radau", **C.P3_TOL)
    return {"loss": float(sol.y[2, -1])}


def meta():
    return C.pkg_versions(["scipy", "sympy", "numpy"])


if __name__ == "__main__":
    C.adapter_main("scipy", os.path.abspath(__file__), PROBLEMS, {"P1": cold_p1, "P3": cold_p3}, meta, T_START,
                   T_IMPORTED)
