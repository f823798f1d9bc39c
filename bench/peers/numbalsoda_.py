"""numbalsoda: C/C++ solvers called from Numba; the right-hand side is a numba.cfunc written by hand
(void(t, u*, du*, data*), parameters through data).  Forward solves only: numbalsoda has no sensitivities.

  dop853  Hairer's DOP853 (explicit RK 8(5,3)); numbalsoda has no DOPRI5.  Main row of the non-stiff problems.
  lsoda   LSODA (Adams <-> BDF switching, finite-difference Jacobian).  P3, and a second row elsewhere.
The timed call is an @njit function that runs the solver and reduces the trajectory to the loss (the path a Numba
user takes).  P6: @njit(parallel=True) with prange over the 10,000 parameter sets, threads=1 and all cores.

    python bench/peers/numbalsoda_.py --problems P1,P3
"""
import time

T_START = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import numba as nb  # noqa: E402
from numba import cfunc, njit, prange  # noqa: E402
from numbalsoda import lsoda_sig, lsoda, dop853  # noqa: E402   (importing compiles numbalsoda's driver)

import bench_common as C  # noqa: E402

T_IMPORTED = time.perf_counter()


def rhs_p1():
    @cfunc(lsoda_sig)
    def f(t, u, du, p):
        du[0] = p[0] * u[0] - p[1] * u[0] * u[1]
        du[1] = p[3] * u[0] * u[1] - p[2] * u[1]
    return f


def rhs_p3():
    @cfunc(lsoda_sig)
    def f(t, u, du, p):
        du[0] = -p[0] * u[0] + p[2] * u[1] * u[2]
        du[1] = p[0] * u[0] - p[2] * u[1] * u[2] - p[1] * u[1] * u[1]
        du[2] = p[1] * u[1] * u[1]
    return f


def rhs_p4():
    @cfunc(lsoda_sig)
    def f(t, u, du, p):
        du[0] = p[0] * (u[1] - u[0])
        du[1] = u[0] * (p[1] - u[2]) - u[1]
        du[2] = u[0] * u[1] - p[2] * u[2]
    return f


def rhs_p5(n):
    @cfunc(lsoda_sig)
    def f(t, u, du, p):
        for i in range(n):
            s = 0.0
            for j in range(n):
                s += p[i * n + j] * u[j]
            du[i] = np.tanh(s) - 0.5 * u[i]
    return f


def rhs_p2_true():
    @cfunc(lsoda_sig)
    def f(t, u, du, p):
        a = u[0] ** 3
        b = u[1] ** 3
        du[0] = -0.1 * a - 2.0 * b
        du[1] = 2.0 * a - 0.1 * b
    return f


@njit
def loss_sumsq_lsoda(fp, u0, ts, p, rtol, atol):
    usol, ok = lsoda(fp, u0, ts, data=p, rtol=rtol, atol=atol, mxstep=1000000)
    return np.sum(usol * usol), ok


@njit
def loss_sumsq_dop853(fp, u0, ts, p, rtol, atol):
    usol, ok = dop853(fp, u0, ts, data=p, rtol=rtol, atol=atol, mxstep=1000000)
    return np.sum(usol * usol), ok


@njit
def loss_last_y3_lsoda(fp, u0, ts, p, rtol, atol):
    usol, ok = lsoda(fp, u0, ts, data=p, rtol=rtol, atol=atol, mxstep=1000000)
    return usol[usol.shape[0] - 1, 2], ok


@njit
def traj_dop853(fp, u0, ts, p, rtol, atol):
    usol, ok = dop853(fp, u0, ts, data=p, rtol=rtol, atol=atol, mxstep=1000000)
    return usol


@njit
def traj_lsoda(fp, u0, ts, p, rtol, atol):
    usol, ok = lsoda(fp, u0, ts, data=p, rtol=rtol, atol=atol, mxstep=1000000)
    return usol


@njit(parallel=True)
def ens_lsoda(fp, u0, ts, thetas, rtol, atol):
    n = thetas.shape[0]
    out = np.empty((n, u0.size))
    for k in prange(n):
        th = thetas[k].copy()
        usol, ok = lsoda(fp, u0.copy(), ts, data=th, rtol=rtol, atol=atol, mxstep=1000000)
        for i in range(u0.size):
            out[k, i] = usol[ts.size - 1, i]
    return out


@njit(parallel=True)
def ens_dop853(fp, u0, ts, thetas, rtol, atol):
    n = thetas.shape[0]
    out = np.empty((n, u0.size))
    for k in prange(n):
        th = thetas[k].copy()
        usol, ok = dop853(fp, u0.copy(), ts, data=th, rtol=rtol, atol=atol, mxstep=1000000)
        for i in range(u0.size):
            out[k, i] = usol[ts.size - 1, i]
    return out


def problem(name):
    if name == "P1":
        return dict(rhs=rhs_p1, z0=C.P1_Z0, p0=C.P1_THETA, ts=C.P1_TS, tol=C.P1_TOL)
    if name == "P3":
        return dict(rhs=rhs_p3, z0=C.P3_Z0, p0=C.P3_K, ts=C.P3_TS, tol=C.P3_TOL)
    if name == "P4":
        return dict(rhs=rhs_p4, z0=C.P4_Z0, p0=C.P4_THETA, ts=C.P4_TS, tol=C.P4_TOL)
    if name.startswith("P5_n"):
        n = int(name[4:])
        W, z0 = C.p5_data(n)
        return dict(rhs=lambda: rhs_p5(n), z0=z0, p0=W.ravel().copy(), ts=C.P5_TS, tol=C.P5_TOL)
    raise ValueError(name)


def make_run(name):
    def run(ctx):
        pr = problem(name)
        rows = []
        drivers = [("lsoda", loss_last_y3_lsoda)] if name == "P3" else [("dop853", loss_sumsq_dop853),
                                                                         ("lsoda", loss_sumsq_lsoda)]
        rtol, atol = pr["tol"]["rtol"], pr["tol"]["atol"]
        for label, drv in drivers:
            t0 = time.perf_counter()
            f = pr["rhs"]()
            addr = f.address
            L, ok = drv(addr, pr["z0"], pr["ts"], pr["p0"], rtol, atol)
            build_s = time.perf_counter() - t0
            tf = ctx.time(lambda: drv(addr, pr["z0"], pr["ts"], pr["p0"], rtol, atol))
            rows.append({"variant": label, "solver": "%s (C), cfunc RHS" % label, **C.tentry("forward", tf),
                         "grad_s_min": None, "grad_s_median": None, "grad": None, "loss": float(L),
                         "success": bool(ok), "build_s": build_s,
                         "grad_method": "none (numbalsoda has no sensitivities)"})
        return rows
    return run


def run_p2(ctx):
    f = rhs_p2_true()
    addr = f.address
    rtol, atol = C.P2_TOL["rtol"], C.P2_TOL["atol"]
    dummy = np.zeros(1)
    rows = []
    for label, drv in (("dop853", traj_dop853), ("lsoda", traj_lsoda)):
        drv(addr, C.P2_Y0, C.P2_TS, dummy, rtol, atol)
        tf = ctx.time(lambda: drv(addr, C.P2_Y0, C.P2_TS, dummy, rtol, atol))
        rows.append({"variant": label, **C.tentry("forward", tf), "forward_what": "true dynamics over all 1000 points",
                     "grad_s_min": None, "grad": None, "loss": None, "true_final": tf["result"][-1].tolist(),
                     "note": "the 252-parameter model would need a hand-written cfunc; forward of the true "
                             "dynamics only"})
    return rows


def run_p6(ctx):
    th = C.p6_thetas()
    f = rhs_p1()
    addr = f.address
    rtol, atol = C.P6_TOL["rtol"], C.P6_TOL["atol"]
    rows = []
    nmax = nb.config.NUMBA_NUM_THREADS
    for label, ens in (("dop853", ens_dop853), ("lsoda", ens_lsoda)):
        ens(addr, C.P1_Z0, C.P6_TS, th[:10], rtol, atol)
        for nth in sorted({1, nmax if ctx.threads == "all" else 1}, reverse=True):
            nb.set_num_threads(nth)
            tm = ctx.time(lambda: ens(addr, C.P1_Z0, C.P6_TS, th, rtol, atol))
            out = tm["result"]
            rows.append({"variant": "%s, prange, threads=%d" % (label, nth), "threads": nth, **C.tentry("forward", tm),
                         "n_traj": len(th), "traj_per_s": len(th) / tm["min"],
                         "traj_per_s_median": len(th) / tm["median"], "final_state_first": out[0].tolist(),
                         "final_state_mean": out.mean(axis=0).tolist(),
                         "method": "independent solve per trajectory, numba prange"})
        nb.set_num_threads(nmax)
    return rows


PROBLEMS = {p: make_run(p) for p in ["P1", "P3", "P4", "P5_n4", "P5_n16", "P5_n64"]}
PROBLEMS["P2"] = run_p2
PROBLEMS["P6"] = run_p6


def make_cold(name):
    def cold():
        pr = problem(name)
        f = pr["rhs"]()
        drv = loss_last_y3_lsoda if name == "P3" else loss_sumsq_dop853
        L, ok = drv(f.address, pr["z0"], pr["ts"], pr["p0"], pr["tol"]["rtol"], pr["tol"]["atol"])
        return {"loss": float(L), "note": "forward only (no gradient in numbalsoda)"}
    return cold


def meta():
    v = C.pkg_versions(["numbalsoda", "numba", "llvmlite", "numpy"])
    v["numba_max_threads"] = nb.config.NUMBA_NUM_THREADS
    return v


if __name__ == "__main__":
    C.adapter_main("numbalsoda", os.path.abspath(__file__), PROBLEMS,
                   {p: make_cold(p) for p in ["P1", "P3", "P4", "P5_n4", "P5_n16", "P5_n64"]}, meta, T_START,
                   T_IMPORTED)
