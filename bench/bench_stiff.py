"""Stiff solvers: symode's rodas5 / auto on P3 (Robertson) against SciPy Radau and BDF (given the lambdified
exact Jacobian) and CasADi CVODES (BDF, Newton, exact Jacobian), plus the linear-algebra measurements.

    python bench/bench_stiff.py                      # everything (about two minutes on 2 cores)
    python bench/bench_stiff.py --quick              # fewer repeats, no work-precision reference at 1e-13
    python bench/bench_stiff.py --casadi-python PATH # run CVODES in another interpreter that has casadi

Sections (markdown tables on stdout):
  1. P3 forward at rtol 1e-6, atol 1e-10 (50 outputs on [0, 1e5]): time per solve, ratio peer / symode.
  2. Work-precision on P3: rtol 1e-4 ... 1e-10 (atol = 1e-4 rtol); error = relative error at t = 1e5, the
     largest over the three components (as the test set's "significant correct digits"; all three are well
     above atol there: 0.018, 7e-8, 0.98), ref = Radau at rtol 1e-13, atol 1e-22 (f and J written in NumPy).
     Early outputs are left out of the measure on purpose: y3 ~ 1e-14 at t ~ 1e-6 is below every atol.
  3. W's factorisation for n = 3: our LU (1 factorisation + 8 solves per step) against 8 np.linalg.solve calls
     inside Numba (LAPACK).
  4. Dense against banded LU (skipping W's structural zeros) on a 1-D reaction-diffusion chain (tridiagonal J)
     for growing n: the crossover that sets symode._engine.stiff.BAND_MIN_N.
CasADi CVODES is skipped with a message when casadi cannot be imported (here or with --casadi-python).
Timings: best and median of several repeats, each repeat looping the call for >= 50 ms (single thread).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

P3_K = np.array([0.04, 3e7, 1e4])
P3_Z0 = np.array([1.0, 0.0, 0.0])
P3_TS = np.logspace(-6, 5, 50)
P3_TS[0] = 0.0
P3_RTOL, P3_ATOL = 1e-6, 1e-10
WP_RTOLS = [1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]


def timeit(fn, repeats=7, min_s=0.05):
    """(best, median) seconds per call; the first call is a warm-up (compilation, caches)."""
    res = fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    inner = max(1, int(min_s / max(one, 1e-7)))
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        per.append((time.perf_counter() - t0) / inner)
    return min(per), statistics.median(per), res


def fmt_t(s):
    return "%.3g ms" % (s * 1e3) if s >= 1e-4 else "%.3g us" % (s * 1e6)


# ---------------------------------------------------------------------------------------------- CasADi CVODES
def cvodes_child(spec):
    """Run in an interpreter with casadi: time CVODES on P3 for each (rtol, atol); print one JSON object."""
    import casadi as ca

    x = ca.SX.sym("y", 3)
    p = ca.SX.sym("k", 3)
    ode = ca.vertcat(-p[0] * x[0] + p[2] * x[1] * x[2], p[0] * x[0] - p[2] * x[1] * x[2] - p[1] * x[1] ** 2,
                     p[1] * x[1] ** 2)
    out = {"casadi": ca.__version__, "runs": []}
    for rtol, atol in spec["tols"]:
        opts = {"reltol": rtol, "abstol": atol, "max_num_steps": 10 ** 6, "linear_multistep_method": "bdf",
                "nonlinear_solver_iteration": "newton"}
        F = ca.integrator("F", "cvodes", {"x": x, "p": p, "ode": ode}, 0.0, P3_TS[1:], opts)

        def run():
            return F(x0=P3_Z0, p=P3_K)["xf"]

        best, med, xf = timeit(run, spec["repeats"])
        z = np.vstack([P3_Z0, np.array(xf).T])
        st = F.stats()
        out["runs"].append(dict(rtol=rtol, atol=atol, best=best, median=med, z=z.tolist(),
                                nsteps=int(st.get("nsteps", -1)), nfevals=int(st.get("nfevals", -1))))
    print(json.dumps(out))


def run_cvodes(tols, repeats, python):
    spec = json.dumps({"tols": tols, "repeats": repeats})
    try:
        import casadi  # noqa: F401

        python = python or sys.executable
    except ImportError:
        if not python:
            return None, "casadi is not importable here (pass --casadi-python PATH of an interpreter that has it)"
    r = subprocess.run([python, os.path.abspath(__file__), "--cvodes-child", spec], capture_output=True, text=True)
    if r.returncode != 0:
        return None, "the CVODES child failed: " + r.stderr.strip().splitlines()[-1] if r.stderr else "failed"
    return json.loads(r.stdout.strip().splitlines()[-1]), None


# ---------------------------------------------------------------------------------------------- SciPy
def scipy_p3():
    """f and the exact Jacobian from SymPy via lambdify, as a SciPy user writes them."""
    import sympy as sp

    y = sp.symbols("y1:4")
    k = sp.symbols("k1:4")
    F = sp.Matrix([-k[0] * y[0] + k[2] * y[1] * y[2], k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2,
                   k[1] * y[1] ** 2])
    t = sp.Symbol("t")
    f = sp.lambdify((t, y, k), list(F), "numpy")
    J = sp.lambdify((t, y, k), F.jacobian(y), "numpy")
    return (lambda tt, z: np.asarray(f(tt, z, P3_K), dtype=float),
            lambda tt, z: np.asarray(J(tt, z, P3_K), dtype=float))


def scipy_solve(method, f, jac, rtol, atol):
    from scipy.integrate import solve_ivp

    r = solve_ivp(f, (0.0, P3_TS[-1]), P3_Z0, method=method, jac=jac, rtol=rtol, atol=atol, t_eval=P3_TS)
    return r.y.T, r.nfev


def reference():
    """Radau at rtol 1e-13 with f and J written in NumPy (kept independent of symode)."""
    from scipy.integrate import solve_ivp

    k1, k2, k3 = P3_K

    def f(tt, z):
        return np.array([-k1 * z[0] + k3 * z[1] * z[2], k1 * z[0] - k3 * z[1] * z[2] - k2 * z[1] ** 2, k2 * z[1] ** 2])

    def jac(tt, z):
        return np.array([[-k1, k3 * z[2], k3 * z[1]], [k1, -k3 * z[2] - 2 * k2 * z[1], -k3 * z[1]],
                         [0.0, 2 * k2 * z[1], 0.0]])

    r = solve_ivp(f, (0.0, P3_TS[-1]), P3_Z0, method="Radau", rtol=1e-13, atol=1e-22, jac=jac, t_eval=P3_TS)
    assert r.success
    return r.y.T


def err(z, ref):
    return float(np.max(np.abs(np.asarray(z)[-1] - ref[-1]) / np.abs(ref[-1])))


# ---------------------------------------------------------------------------------------------- symode
def symode_p3():
    import sympy as sp

    import symode

    y = sp.symbols("y1:4")
    k = sp.symbols("k1:4")
    return symode.ODE([-k[0] * y[0] + k[2] * y[1] * y[2], k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2,
                       k[1] * y[1] ** 2], list(y), list(k))


def section_forward_and_wp(args):
    m = symode_p3()
    f, jac = scipy_p3()
    tols = [(P3_RTOL, P3_ATOL)] + [(r, r * 1e-4) for r in WP_RTOLS if r != P3_RTOL]
    if args.quick:
        tols = tols[:1]
    cv, why = run_cvodes(tols, args.repeats, args.casadi_python)
    cvrows = {(r.rtol, r.atol): r for r in cv["runs"]} if cv else {}
    ref = None if args.quick else reference()
    rows = []
    for rtol, atol in tols:
        row = dict(rtol=rtol, atol=atol)
        for meth in ("rodas5", "auto"):
            best, med, sol = timeit(lambda: m.solve(P3_Z0, P3_K, P3_TS, method=meth, rtol=rtol, atol=atol),
                                    args.repeats)
            row[meth] = dict(best=best, median=med, z=sol.z, nfev=sol.stats["nfev"], steps=sol.stats["naccepted"])
        reps = max(3, args.repeats // 2)
        for meth in ("Radau", "BDF"):
            best, med, (z, nfev) = timeit(lambda: scipy_solve(meth, f, jac, rtol, atol), reps, min_s=0.0)
            row[meth] = dict(best=best, median=med, z=z, nfev=nfev)
        c = cvrows.get((rtol, atol))
        if c:
            row["CVODES"] = dict(best=c["best"], median=c["median"], z=np.array(c["z"]), nfev=c["nfevals"])
        rows.append(row)
    peers = ["Radau", "BDF"] + (["CVODES"] if cv else [])
    r0 = rows[0]
    print("## P3 (Robertson) forward, rtol 1e-6, atol 1e-10, 50 outputs on [0, 1e5]\n")
    print("| solver | best | median | RHS evals | time / symode rodas5 (best) |")
    print("|---|---|---|---|---|")
    base = r0["rodas5"]["best"]
    for name in ["rodas5", "auto"] + peers:
        e = r0[name]
        label = {"rodas5": "symode rodas5", "auto": "symode auto", "Radau": "SciPy Radau (exact J)",
                 "BDF": "SciPy BDF (exact J)", "CVODES": "CasADi CVODES (BDF, exact J)"}[name]
        print(f"| {label} | {fmt_t(e['best'])} | {fmt_t(e['median'])} | {e['nfev']} | {e['best'] / base:.1f}x |")
    if not cv:
        print(f"\nCVODES skipped: {why}")
    print("\nGoals: >= 50x faster than SciPy Radau with the exact Jacobian: "
          f"{r0['Radau']['best'] / base:.0f}x; >= 10x faster than CVODES: "
          + (f"{r0['CVODES']['best'] / base:.1f}x" if cv else "not measured here (CVODES ~3.4 ms on this kind "
             f"of machine: {3.4e-3 / base:.1f}x)"))
    if ref is None:
        return
    print("\n## P3 work-precision (atol = 1e-4 rtol; error = max relative error of the 3 components at t = 1e5 "
          "against Radau at rtol 1e-13)\n")
    names = ["rodas5", "auto"] + peers
    print("| rtol | " + " | ".join(f"{n} error | {n} time" for n in names) + " | Radau / rodas5 | "
          + ("CVODES / rodas5 |" if cv else ""))
    print("|---" * (1 + 2 * len(names) + 1 + (1 if cv else 0)) + "|")
    for row in sorted(rows, key=lambda r: -r.rtol):
        cells = []
        for n in names:
            e = row.get(n)
            cells.append(f"{err(e['z'], ref):.1e} | {fmt_t(e['best'])}" if e else "- | -")
        ratio = row["Radau"]["best"] / row["rodas5"]["best"]
        extra = f" {row['CVODES']['best'] / row['rodas5']['best']:.1f}x |" if cv and "CVODES" in row else ""
        print(f"| {row['rtol']:.0e} | " + " | ".join(cells) + f" | {ratio:.0f}x |" + extra)


# ---------------------------------------------------------------------------------------------- linear algebra
def section_lu3(args):
    from numba import njit

    from symode._numeric import rosenbrock as ros

    @njit(cache=False)
    def ours(W0, B, reps):
        n = W0.shape[0]
        W = np.empty_like(W0)
        piv = np.zeros(n, dtype=np.int64)
        x = np.empty(n)
        acc = 0.0
        for _ in range(reps):
            W[:, :] = W0
            ros.lu_factor(W, piv, n - 1, n - 1)
            for s in range(B.shape[0]):
                x[:] = B[s]
                ros.lu_solve(W, piv, n - 1, n - 1, x)
                acc += x[0]
        return acc

    @njit(cache=False)
    def lapack(W0, B, reps):
        acc = 0.0
        for _ in range(reps):
            for s in range(B.shape[0]):
                x = np.linalg.solve(W0, B[s])
                acc += x[0]
        return acc

    rng = np.random.default_rng(0)
    W0 = rng.normal(size=(3, 3)) + 5 * np.eye(3)
    B = rng.normal(size=(8, 3))
    reps = 20000
    t1 = timeit(lambda: ours(W0, B, reps), args.repeats)[0] / reps
    t2 = timeit(lambda: lapack(W0, B, reps), args.repeats)[0] / reps
    print("\n## W for n = 3: one LU + 8 solves (a RODAS5 step)\n")
    print("| implementation | per step |")
    print("|---|---|")
    print(f"| symode LU with partial pivoting (Numba) | {t1 * 1e9:.0f} ns |")
    print(f"| 8 x np.linalg.solve in Numba (LAPACK gesv) | {t2 * 1e9:.0f} ns ({t2 / t1:.0f}x slower) |")


def chain_model(n):
    """Fisher-KPP u' = D (u[i-1] - 2 u[i] + u[i+1]) + u (1 - u) on n points: tridiagonal J, stiff for large D."""
    import sympy as sp

    import symode

    u = sp.symbols(f"u0:{n}")
    D = sp.Symbol("D")
    rhs = [D * ((u[i - 1] if i > 0 else 0) - 2 * u[i] + (u[i + 1] if i < n - 1 else 0)) + u[i] * (1 - u[i])
           for i in range(n)]
    return symode.ODE(rhs, list(u), [D])


def section_band(args):
    from symode._engine import stiff as _stiff

    ns = [4, 8, 12, 16, 24, 32, 64] if args.quick else [4, 8, 12, 16, 24, 32, 64, 128, 256]
    print("\n## Dense against banded LU of W (1-D reaction-diffusion chain, tridiagonal J; rodas5, rtol 1e-8)\n")
    print("Same steps either way (checked); time per step of the whole solve.\n")
    print("| n | steps | dense / step | band / step | dense / band | chosen by default |")
    print("|---|---|---|---|---|---|")
    for n in ns:
        m = chain_model(n)
        z0 = np.exp(-((np.arange(n) - n / 2) / (n / 8 + 1)) ** 2)
        theta = np.array([(n + 1) ** 2 / 10.0])  # D = (n+1)^2 / 10: diffusion eigenvalues down to ~ -0.4 (n+1)^4
        ts = np.linspace(0.0, 5.0, 6)
        opts = m._rt.config("rodas5", 1e-8, 1e-10, None, 10 ** 6, None, None)
        res = {}
        for kind in ("dense", "band"):
            res[kind] = timeit(lambda: _stiff.integrate(m._rt, z0, theta, ts, opts, linalg=kind), args.repeats)
        steps = int(res.band[2]["stats"][1])
        assert steps == int(res.dense[2]["stats"][1])
        chosen = "band" if _stiff.linalg_plan(m._rt).band else "dense"
        td, tb = res.dense[0] / steps, res.band[0] / steps
        print(f"| {n} | {steps} | {fmt_t(td)} | {fmt_t(tb)} | {td / tb:.2f} | {chosen} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--casadi-python", default=os.environ.get("SYMODE_CASADI_PYTHON"))
    ap.add_argument("--only", default="forward,lu3,band")
    ap.add_argument("--cvodes-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cvodes_child:
        cvodes_child(json.loads(args.cvodes_child))
        return
    import numba
    import scipy

    print(f"numpy {np.__version__}, scipy {scipy.__version__}, numba {numba.__version__}, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    only = set(args.only.split(","))
    if "forward" in only:
        section_forward_and_wp(args)
    if "lu3" in only:
        section_lu3(args)
    if "band" in only:
        section_band(args)


if __name__ == "__main__":
    main()
