"""JiTCODE (SymEngine -> C extension module compiled with gcc; integration by SciPy).  Forward solves only:
JiTCODE has no adjoint or parameter-sensitivity driver, so every gradient column is empty.

  dopri5  scipy.integrate.ode 'dopri5' = Hairer's DOPRI5 (Dormand-Prince 5(4)), the compiled RHS called back at
          every stage.  All non-stiff problems.  Outputs the JiTCODE way: one ODE.integrate(t) per output time.
  lsoda   scipy.integrate.ode 'lsoda' with the compiled analytic Jacobian (P3); --variants all adds
          solve_ivp's Radau with the compiled Jacobian.
Parameters are JiTCODE control parameters (runtime values) for P1, P3, P4, P6 and the P2 model; the P5 matrix W
and the P2 true-dynamics matrix are literal constants.  compile_C gets -O3 -march=native.  P2's 252-parameter
model is generated with simplify=False (the default simplification had not finished after 10 minutes).
P6: a Python loop over the first 1000 parameter sets (set_parameters / set_initial_value / integrate), 1 thread.

    python bench/peers/jitcode_.py --problems P1,P3
"""
import time

T_START = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import symengine  # noqa: E402
from jitcode import jitcode, y as Y  # noqa: E402

import bench_common as C  # noqa: E402

T_IMPORTED = time.perf_counter()
warnings.filterwarnings("ignore")


def problem(name):
    if name in ("P1", "P6"):
        a, b, g, d = symengine.symbols("alpha beta gamma delta")
        f = [a * Y(0) - b * Y(0) * Y(1), d * Y(0) * Y(1) - g * Y(1)]
        pr = dict(f=f, pars=[a, b, g, d], p0=C.P1_THETA, z0=C.P1_Z0)
        if name == "P1":
            pr.update(ts=C.P1_TS, tol=C.P1_TOL, loss=lambda Z: float((Z ** 2).sum()))
        else:
            pr.update(ts=C.P6_TS, tol=C.P6_TOL, loss=None)
        return pr
    if name == "P3":
        k1, k2, k3 = symengine.symbols("k1 k2 k3")
        f = [-k1 * Y(0) + k3 * Y(1) * Y(2), k1 * Y(0) - k3 * Y(1) * Y(2) - k2 * Y(1) ** 2, k2 * Y(1) ** 2]
        return dict(f=f, pars=[k1, k2, k3], p0=C.P3_K, z0=C.P3_Z0, ts=C.P3_TS, tol=C.P3_TOL,
                    loss=lambda Z: float(Z[-1, 2]))
    if name == "P4":
        sg, rho, beta = symengine.symbols("sigma rho beta")
        f = [sg * (Y(1) - Y(0)), Y(0) * (rho - Y(2)) - Y(1), Y(0) * Y(1) - beta * Y(2)]
        return dict(f=f, pars=[sg, rho, beta], p0=C.P4_THETA, z0=C.P4_Z0, ts=C.P4_TS, tol=C.P4_TOL,
                    loss=lambda Z: float((Z ** 2).sum()))
    if name.startswith("P5_n"):
        n = int(name[4:])
        W, z0 = C.p5_data(n)
        f = [symengine.tanh(sum(float(W[i, j]) * Y(j) for j in range(n))) - 0.5 * Y(i) for i in range(n)]
        return dict(f=f, pars=[], p0=np.array([]), z0=z0, ts=C.P5_TS, tol=C.P5_TOL,
                    loss=lambda Z: float((Z ** 2).sum()))
    if name == "P2":
        A = C.P2_A
        f = [Y(0) ** 3 * A[0, 0] + Y(1) ** 3 * A[1, 0], Y(0) ** 3 * A[0, 1] + Y(1) ** 3 * A[1, 1]]
        return dict(f=f, pars=[], p0=np.array([]), z0=C.P2_Y0, ts=C.P2_TS, tol=C.P2_TOL, loss=None)
    raise ValueError(name)


def p2_model():
    th = symengine.symbols(" ".join("th%d" % i for i in range(252)))
    W1 = [[th[2 * i + j] for j in range(2)] for i in range(50)]
    b1 = th[100:150]
    W2 = [[th[150 + 50 * i + j] for j in range(50)] for i in range(2)]
    b2 = th[250:252]
    y3 = [Y(0) ** 3, Y(1) ** 3]
    h = [symengine.tanh(W1[i][0] * y3[0] + W1[i][1] * y3[1] + b1[i]) for i in range(50)]
    f = [sum(W2[k][i] * h[i] for i in range(50)) + b2[k] for k in range(2)]
    return f, list(th)


def make(f, pars, n, integrator, tol, simplify=None):
    ODE = jitcode(f, control_pars=pars, n=n, verbose=False, wants_jacobian=integrator in ("lsoda", "Radau"))
    if simplify is not None:
        ODE.generate_f_C(simplify=simplify)
    ODE.compile_C(extra_compile_args=["-O3", "-march=native"])
    ODE.set_integrator(integrator, rtol=tol["rtol"], atol=tol["atol"])
    return ODE


def solve(ODE, z0, ts, pvals):
    if len(pvals):
        ODE.set_parameters(pvals)
    ODE.set_initial_value(z0, ts[0])
    out = np.empty((len(ts), len(z0)))
    out[0] = z0
    for i in range(1, len(ts)):
        out[i] = ODE.integrate(ts[i])
    return out


def make_run(name):
    def run(ctx):
        pr = problem(name)
        rows = []
        variants = (["lsoda", "Radau"] if ctx.all else ["lsoda"]) if name == "P3" else ["dopri5"]
        for integ in variants:
            t0 = time.perf_counter()
            ODE = make(pr["f"], pr["pars"], len(pr["z0"]), integ, pr["tol"])
            build_s = time.perf_counter() - t0
            tf = ctx.time(lambda: solve(ODE, pr["z0"], pr["ts"], pr["p0"]))
            Z = tf["result"]
            row = {"variant": integ, "solver": "scipy ode %s, compiled C RHS" % integ, **C.tentry("forward", tf),
                   "grad_s_min": None, "grad_s_median": None, "grad": None, "build_s": build_s,
                   "grad_method": "none (JiTCODE has no adjoint / sensitivities)"}
            if pr["loss"] is not None:
                row["loss"] = pr["loss"](Z)
            if name == "P2":
                f, th = p2_model()
                t0 = time.perf_counter()
                M = make(f, th, 2, integ, pr["tol"], simplify=False)
                y0s, targets = C.p2_batch_from_true(Z)
                tb = C.p2_batch_ts()
                theta = C.p2_flat_params()

                def batch():
                    return np.stack([solve(M, y0s[j], tb, theta) for j in range(len(y0s))])
                row["model_build_s"] = time.perf_counter() - t0
                tbf = ctx.time(batch)
                row.update(loss=float(np.mean(np.abs(tbf["result"] - targets))), batch_forward_s_min=tbf["min"],
                           batch_forward_s_median=tbf["median"], forward_what="true dynamics over all 1000 points")
            rows.append(row)
        return rows
    return run


def run_p6(ctx):
    pr = problem("P6")
    ODE = make(pr["f"], pr["pars"], 2, "dopri5", pr["tol"])
    th = C.p6_thetas()
    n_traj = 1000

    def ens():
        zf = np.empty((n_traj, 2))
        for k in range(n_traj):
            zf[k] = solve(ODE, pr["z0"], pr["ts"], th[k])[-1]
        return zf
    tm = ctx.time(ens)
    zf = tm["result"]
    return [{"variant": "dopri5, Python loop, threads=1", "threads": 1, **C.tentry("forward", tm), "n_traj": n_traj,
             "traj_per_s": n_traj / tm["min"], "traj_per_s_median": n_traj / tm["median"],
             "final_state_first": zf[0].tolist(), "final_state_mean": zf.mean(axis=0).tolist(),
             "method": "Python loop over the first %d parameter sets; JiTCODE has no ensemble driver" % n_traj}]


PROBLEMS = {p: make_run(p) for p in ["P1", "P2", "P3", "P4", "P5_n4", "P5_n16", "P5_n64"]}
PROBLEMS["P6"] = run_p6


def make_cold(name):
    def cold():
        pr = problem(name)
        integ = "lsoda" if name == "P3" else "dopri5"
        ODE = make(pr["f"], pr["pars"], len(pr["z0"]), integ, pr["tol"])
        Z = solve(ODE, pr["z0"], pr["ts"], pr["p0"])
        return {"loss": pr["loss"](Z) if pr["loss"] else None, "note": "forward only (no gradient in JiTCODE)"}
    return cold


def meta():
    v = C.pkg_versions(["jitcode", "jitcxde_common", "symengine", "scipy", "numpy"])
    return v


if __name__ == "__main__":
    C.adapter_main("jitcode", os.path.abspath(__file__), PROBLEMS,
                   {p: make_cold(p) for p in ["P1", "P3", "P4", "P5_n4", "P5_n16", "P5_n64"]}, meta, T_START,
                   T_IMPORTED)
