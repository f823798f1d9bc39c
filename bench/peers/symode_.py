"""symode adapter: the same problems through symode's public API.

    model = symode.ODE(rhs=[...], states=[...], params=[...])
    sol = model.solve(z0, theta, ts, method="dopri5", rtol=..., atol=...)          # sol.z (m, n), sol.stats
    g = model.vjp(z0, theta, ts, cotangent, adjoint=..., method=..., rtol=..., atol=...)   # g.z0, g.theta

Forward time = one solve + the loss.  Gradient time = value and gradient (dL/dz0, dL/dtheta), like every peer's
value_and_grad: P1, P4, P5 through ``model.value_and_grad_fn(ObservationLoss(sum z_i^2), ts, ..., grad_t=False)``
called with (z0, theta) (prepared once, like diffrax's jitted function; each call = value_and_grad, one compiled
call: forward, loss, cotangent, reverse sweep; dL/dts, which no peer computes, skipped).  Rows:
  P1, P4, P5: dopri5 with adjoint="discrete" (main row) and "checkpoint"; --variants all adds "backsolve",
      "forward" and the two-call form solve + vjp.
  P3: method="rodas5", loss y3(1e5), gradient w.r.t. k: value_and_grad(y3) with adjoint "discrete", "checkpoint"
      (--variants all: "forward").
  P2: the MLP as symode.nn blocks; one training iteration = one batched value_and_grad over the 20 windows
      (z0 (20, 2), data (20, 10, 2), reduce="sum", grad_t=False) on one thread; --variants all adds all threads
      and the loop of 20 x (solve + vjp); forward = the true dynamics over 1000 points.
  P6: batched solve model.solve(z0, thetas (B, p), ts) with dopri5 (the reference row) and dop853.
Each row records build_s (ODE() + first solve, i.e. code generation and Numba compilation with the cache that the
process uses) and the first-call times.  bench/run.py runs this module in-process; it also runs as a script like
every peer adapter (python bench/peers/symode_.py --problems P1).
"""
import time

T_START = time.perf_counter()

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402
import symode  # noqa: E402

import bench_common as C  # noqa: E402

T_IMPORTED = time.perf_counter()

BUILD_TIMEOUT_S = int(os.environ.get("SYMODE_BENCH_BUILD_TIMEOUT", "600"))


class BuildTimeout(Exception):
    pass


class timeout:
    """SIGALRM-based time limit for a model build in this (main) thread; a no-op where unavailable."""

    def __init__(self, seconds):
        self.s = int(seconds)
        self.ok = hasattr(signal, "SIGALRM") and self.s > 0

    def _h(self, *a):
        raise BuildTimeout("model build exceeded %d s" % self.s)

    def __enter__(self):
        if self.ok:
            try:
                self.old = signal.signal(signal.SIGALRM, self._h)
                signal.alarm(self.s)
            except ValueError:          # not the main thread
                self.ok = False
        return self

    def __exit__(self, *a):
        if self.ok:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, self.old)
        return False


# ---------------------------------------------------------------- models


def lv_model():
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("alpha beta gamma delta")
    return symode.ODE(rhs=[a * x - b * x * y, d * x * y - c * y], states=[x, y], params=[a, b, c, d])


def lorenz_model():
    x, y, z = sp.symbols("x y z")
    s, r, b = sp.symbols("sigma rho beta")
    return symode.ODE(rhs=[s * (y - x), x * (r - z) - y, x * y - b * z], states=[x, y, z], params=[s, r, b])


def robertson_model():
    y1, y2, y3 = sp.symbols("y1 y2 y3")
    k1, k2, k3 = sp.symbols("k1 k2 k3")
    return symode.ODE(rhs=[-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2, k2 * y2 ** 2],
                      states=[y1, y2, y3], params=[k1, k2, k3])


def tanhnet_model(n):
    """tanh(W z) - z/2 with W z as a symode.nn dense block (loops over theta, not a flat expression)."""
    from symode import nn

    z = sp.symbols("z0:%d" % n)
    net = nn.dense(list(z), n, activation="tanh", name="W", bias=False)
    rhs = [net.outputs[i] - z[i] / 2 for i in range(n)]
    return symode.ODE(rhs=rhs, states=list(z), params=list(net.params))      # params row-major = W.ravel()


def spiral_true_model():
    y0, y1 = sp.symbols("y0 y1")
    A = C.P2_A
    u0, u1 = y0 ** 3, y1 ** 3
    return symode.ODE(rhs=[u0 * A[0, 0] + u1 * A[1, 0], u0 * A[0, 1] + u1 * A[1, 1]], states=[y0, y1])


def mlp_model():
    """f(y) = W2 tanh(W1 y**3 + b1) + b2 as a symode.nn MLP: parameters W1 (row-major), b1, W2, b2."""
    from symode import nn

    y = sp.symbols("y0:2")
    net = nn.mlp([y[0] ** 3, y[1] ** 3], [C.P2_HIDDEN, 2], activation="tanh", name="f")
    return symode.ODE(rhs=list(net.outputs), states=list(y), params=list(net.params))


# ---------------------------------------------------------------- helpers


def stats_of(sol):
    try:
        return {k: v for k, v in dict(sol.stats).items() if isinstance(v, (int, float, str))}
    except Exception:  # noqa: BLE001
        return None


def gvec(g, with_z0=True):
    parts = ([np.ravel(g.z0)] if with_z0 else []) + [np.ravel(g.theta)]
    return np.concatenate(parts)


def sumsq_rows(ctx, make_model, z0, th, ts, tol, label):
    z0 = np.asarray(z0, float)
    th = np.asarray(th, float)
    kw = dict(method="dopri5", **tol)
    t0 = time.perf_counter()
    try:
        with timeout(BUILD_TIMEOUT_S):
            model = make_model()
            t1 = time.perf_counter()
            model.solve(z0, th, ts, **kw)
    except BuildTimeout:
        return [{"variant": "dopri5", "skipped": "model build (ODE() + first solve) exceeded %d s" % BUILD_TIMEOUT_S}]
    t2 = time.perf_counter()
    build = {"model_s": t1 - t0, "build_s": t2 - t0, "first_solve_s": t2 - t1}

    def fwd():
        s = model.solve(z0, th, ts, **kw)
        return float(np.sum(s.z ** 2)), s

    loss = symode.ObservationLoss(sum(v ** 2 for v in model.states), [])   # sum over the output times

    # what the peers compute: the value, dL/dz0 and dL/dtheta (dL/dts skipped: grad_t=False), as a function of
    # (z0, theta) prepared once (value_and_grad_fn), as diffrax's jitted function and CasADi's Function are
    prepared = {}

    def grad(adj):
        fn = prepared.get(adj)
        if fn is None:
            fn = prepared[adj] = model.value_and_grad_fn(loss, ts, adjoint=adj, grad_t=False, **kw)
        g = fn(z0, th)
        return g.value, gvec(g)

    def grad_vjp(adj):
        s = model.solve(z0, th, ts, **kw)
        g = model.vjp(z0, th, ts, 2.0 * s.z, adjoint=adj, **kw)
        return float(np.sum(s.z ** 2)), gvec(g)
    tf = ctx.time(fwd)
    L, s = tf["result"]
    rows = []
    variants = [("discrete", grad), ("checkpoint", grad)]
    if ctx.all:
        variants += [("backsolve", grad), ("forward", grad), ("discrete", grad_vjp)]
    for adj, fn in variants:
        how = ("value_and_grad_fn(ObservationLoss, ts, adjoint=%r, grad_t=False)(z0, theta)" % adj if fn is grad
               else "solve + vjp(adjoint=%r)" % adj)
        row = {"variant": "dopri5, adjoint=%s%s" % (adj, "" if fn is grad else ", solve+vjp"), "solver": "dopri5",
               "grad_method": how, **C.tentry("forward", tf), "loss": L, "stats": stats_of(s), **build}
        try:
            tg = ctx.time(lambda: fn(adj))
            row.update(C.tentry("grad", tg))
            row["grad"] = C.tolist(tg["result"][1])
            row["grad_loss"] = tg["result"][0]
        except Exception as e:  # noqa: BLE001
            row.update(grad_s_min=None, grad_s_median=None, grad=None,
                       grad_error="%s: %s" % (type(e).__name__, str(e)[:300]))
        rows.append(row)
    return rows


def run_p1(ctx):
    return sumsq_rows(ctx, lv_model, C.P1_Z0, C.P1_THETA, C.P1_TS, C.P1_TOL, "P1")


def run_p4(ctx):
    return sumsq_rows(ctx, lorenz_model, C.P4_Z0, C.P4_THETA, C.P4_TS, C.P4_TOL, "P4")


def make_p5(n):
    def run(ctx):
        W, z0 = C.p5_data(n)
        return sumsq_rows(ctx, lambda: tanhnet_model(n), z0, W.ravel(), C.P5_TS, C.P5_TOL, "P5_n%d" % n)
    return run


def run_p3(ctx):
    t0 = time.perf_counter()
    model = robertson_model()
    kw = dict(method="rodas5", **C.P3_TOL)
    try:
        model.solve(C.P3_Z0, C.P3_K, C.P3_TS, **kw)
    except Exception as e:  # noqa: BLE001
        return [{"variant": "rodas5", "skipped": "rodas5 not available yet (%s: %s)" % (type(e).__name__,
                                                                                      str(e)[:200])}]
    build_s = time.perf_counter() - t0

    def fwd():
        s = model.solve(C.P3_Z0, C.P3_K, C.P3_TS, **kw)
        return float(s.z[-1, 2]), s
    tf = ctx.time(fwd)
    L, s = tf["result"]
    rows = []
    for adj in (["discrete", "checkpoint", "forward"] if ctx.all else ["discrete", "checkpoint"]):
        row = {"variant": "rodas5, adjoint=%s" % adj, "solver": "rodas5", "grad_method": "vjp(adjoint=%r)" % adj,
               **C.tentry("forward", tf), "loss": L, "stats": stats_of(s), "build_s": build_s}

        def grad():      # y3 at the final time: one recorded forward pass, then the adjoint
            g = model.value_and_grad(model.states[2], C.P3_Z0, C.P3_K, C.P3_TS, adjoint=adj, grad_t=False, **kw)
            return g.value, np.ravel(g.theta)
        try:
            tg = ctx.time(grad)
            row.update(C.tentry("grad", tg))
            row["grad"] = C.tolist(tg["result"][1])
        except Exception as e:  # noqa: BLE001
            row.update(grad_s_min=None, grad=None, grad_error="%s: %s" % (type(e).__name__, str(e)[:300]))
        rows.append(row)
    return rows


def run_p2(ctx):
    tol = C.P2_TOL
    kw = dict(method="dopri5", **tol)
    t0 = time.perf_counter()
    true_m = spiral_true_model()
    true_m.solve(C.P2_Y0, [], C.P2_TS, **kw)
    true_build = time.perf_counter() - t0
    tf = ctx.time(lambda: true_m.solve(C.P2_Y0, [], C.P2_TS, **kw))
    true_y = np.asarray(tf["result"].z)
    y0s, targets = C.p2_batch_from_true(true_y)
    tb = C.p2_batch_ts()
    th = C.p2_flat_params()
    N = targets.size
    t0 = time.perf_counter()
    try:
        with timeout(BUILD_TIMEOUT_S):
            model = mlp_model()
            t1 = time.perf_counter()
            model.solve(y0s[0], th, tb, **kw)
    except BuildTimeout:
        return [{"variant": "dopri5", "skipped": "building the 252-parameter MLP with SymPy (ODE() + first solve) "
                                                 "exceeded %d s; this row waits on symode.nn" % BUILD_TIMEOUT_S}]
    t2 = time.perf_counter()
    build = {"model_s": t1 - t0, "build_s": t2 - t0, "true_model_build_s": true_build}

    def batch_fwd():
        L = 0.0
        for b in range(len(y0s)):
            L += np.sum(np.abs(model.solve(y0s[b], th, tb, **kw).z - targets[b]))
        return L / N

    def iteration(adj):
        L = 0.0
        g = np.zeros(th.size)
        for b in range(len(y0s)):
            s = model.solve(y0s[b], th, tb, **kw)
            d = s.z - targets[b]
            L += np.sum(np.abs(d))
            g += np.ravel(model.vjp(y0s[b], th, tb, np.sign(d) / N, adjoint=adj, **kw).theta)
        return L / N, g

    ys = list(model.states)
    ds = sp.symbols("d0:%d" % len(ys))
    loss = symode.ObservationLoss(sum(sp.Abs(v - dv) for v, dv in zip(ys, ds)) / N, list(ds))

    def iteration_batched(adj):
        g = model.value_and_grad(loss, y0s, th, tb, data=targets, adjoint=adj, reduce="sum", grad_t=False, **kw)
        return g.value, np.ravel(g.theta)

    import numba
    nmax = numba.config.NUMBA_NUM_THREADS
    tbf = ctx.time(batch_fwd)
    rows = []
    variants = [("discrete", iteration_batched, 1)]
    if ctx.all:
        variants += [("discrete", iteration_batched, nmax), ("discrete", iteration, 1),
                     ("checkpoint", iteration, 1), ("backsolve", iteration, 1)]
    for adj, fn, nth in variants:
        batched = fn is iteration_batched
        what = ("one iteration: one value_and_grad call over the batch of 20 windows (z0 (20, 2), data "
                "(20, 10, 2), reduce='sum'), each member with its own step control, %d thread(s)" % nth if batched
                else "one iteration: 20 x (solve + vjp), each with its own step control")
        row = {"variant": "dopri5, adjoint=%s, %s, threads=%d" % (adj, "batched value_and_grad" if batched
                                                                 else "20 x (solve + vjp)", nth),
               "solver": "dopri5", "grad_method": "value_and_grad" if batched else "vjp(adjoint=%r)" % adj,
               "threads": nth, "forward_what": "true dynamics over all 1000 points", "grad_what": what,
               **C.tentry("forward", tf), "batch_forward_s_min": tbf["min"], "batch_forward_s_median": tbf["median"],
               **build}
        numba.set_num_threads(nth)
        try:
            tg = ctx.time(lambda: fn(adj))
            row.update(C.tentry("grad", tg))
            row["loss"], row["grad"] = tg["result"][0], C.tolist(tg["result"][1])
        except Exception as e:  # noqa: BLE001
            row.update(grad_s_min=None, grad=None, grad_error="%s: %s" % (type(e).__name__, str(e)[:300]))
        rows.append(row)
    numba.set_num_threads(nmax)
    return rows


def run_p6(ctx):
    thetas = C.p6_thetas()
    N = len(thetas)
    kw = dict(method="dopri5", **C.P6_TOL)
    model = lv_model()
    model.solve(C.P1_Z0, thetas[0], C.P6_TS, **kw)
    rows = []
    batched = None
    try:
        s = model.solve(C.P1_Z0, thetas[:4], C.P6_TS, **kw)
        z = np.asarray(s.z)
        if z.shape == (4, 2, 2):
            batched = True
        else:
            batched = False
            why = "batched solve returned z of shape %s, expected (4, 2, 2)" % (z.shape,)
    except Exception as e:  # noqa: BLE001
        batched = False
        why = "batched solve not supported yet (%s: %s)" % (type(e).__name__, str(e)[:160])
    try:
        import numba
        nmax = numba.config.NUMBA_NUM_THREADS
    except Exception:  # noqa: BLE001
        numba, nmax = None, 1
    if batched:
        thread_counts = sorted({1, nmax if ctx.threads == "all" else 1}, reverse=True)
        for meth, nth in [(mth, t) for mth in ("dopri5", "dop853") for t in thread_counts]:
            if numba is not None:
                numba.set_num_threads(nth)
            kw_m = dict(kw, method=meth)
            model.solve(C.P1_Z0, thetas[:4], C.P6_TS, **kw_m)
            tm = ctx.time(lambda: model.solve(C.P1_Z0, thetas, C.P6_TS, **kw_m))
            out = np.asarray(tm["result"].z)[:, -1, :]
            rows.append({"variant": "%s, batched solve, threads=%d" % (meth, nth), "threads": nth,
                         **C.tentry("forward", tm), "n_traj": N, "traj_per_s": N / tm["min"],
                         "traj_per_s_median": N / tm["median"], "final_state_first": out[0].tolist(),
                         "final_state_mean": out.mean(axis=0).tolist(), "method": "model.solve(z0, theta_batch)"})
        if numba is not None:
            numba.set_num_threads(nmax)
    else:
        n_traj = 1000

        def loop():
            out = np.empty((n_traj, 2))
            for k in range(n_traj):
                out[k] = model.solve(C.P1_Z0, thetas[k], C.P6_TS, **kw).z[-1]
            return out
        tm = ctx.time(loop)
        out = tm["result"]
        rows.append({"variant": "dopri5, Python loop of solves (threads=1)", "threads": 1, **C.tentry("forward", tm),
                     "n_traj": n_traj, "traj_per_s": n_traj / tm["min"], "traj_per_s_median": n_traj / tm["median"],
                     "final_state_first": out[0].tolist(), "final_state_mean": out.mean(axis=0).tolist(),
                     "method": "loop over the first %d parameter sets: %s" % (n_traj, why)})
    return rows


PROBLEMS = {"P1": run_p1, "P2": run_p2, "P3": run_p3, "P4": run_p4, "P5_n4": make_p5(4), "P5_n16": make_p5(16),
            "P5_n64": make_p5(64), "P6": run_p6}


# ---------------------------------------------------------------- cold (fresh process) measurements


def cold_p1():
    t0 = time.perf_counter()
    model = lv_model()
    kw = dict(method="dopri5", **C.P1_TOL)
    s = model.solve(C.P1_Z0, C.P1_THETA, C.P1_TS, **kw)
    t1 = time.perf_counter()
    g = model.vjp(C.P1_Z0, C.P1_THETA, C.P1_TS, 2.0 * s.z, adjoint="discrete", **kw)
    t2 = time.perf_counter()
    return {"loss": float(np.sum(s.z ** 2)), "grad0": float(np.ravel(g.z0)[0]), "build_first_solve_s": t1 - t0,
            "first_grad_s": t2 - t1}


def cold_p2():
    th = C.p2_flat_params()
    kw = dict(method="dopri5", **C.P2_TOL)
    t0 = time.perf_counter()
    model = mlp_model()
    tb = C.p2_batch_ts()
    s = model.solve(C.P2_Y0, th, tb, **kw)
    t1 = time.perf_counter()
    g = model.vjp(C.P2_Y0, th, tb, np.sign(s.z), adjoint="discrete", **kw)
    t2 = time.perf_counter()
    return {"build_first_solve_s": t1 - t0, "first_grad_s": t2 - t1, "grad0": float(np.ravel(g.theta)[0])}


def cold_p5(n=64):
    def cold():
        W, z0 = C.p5_data(n)
        kw = dict(method="dopri5", **C.P5_TOL)
        t0 = time.perf_counter()
        model = tanhnet_model(n)
        s = model.solve(z0, W.ravel(), C.P5_TS, **kw)
        t1 = time.perf_counter()
        model.vjp(z0, W.ravel(), C.P5_TS, 2.0 * s.z, adjoint="discrete", **kw)
        t2 = time.perf_counter()
        return {"loss": float(np.sum(s.z ** 2)), "build_first_solve_s": t1 - t0, "first_grad_s": t2 - t1}
    return cold


COLD = {"P1": cold_p1, "P2": cold_p2, "P4": None, "P5_n4": cold_p5(4), "P5_n16": cold_p5(16), "P5_n64": cold_p5(64)}
COLD = {k: v for k, v in COLD.items() if v is not None}


def meta():
    v = C.pkg_versions(["symode", "numba", "llvmlite", "sympy", "numpy"])
    v["symode_version_attr"] = getattr(symode, "__version__", None)
    v["symode_cache_dir"] = "set (fresh)" if os.environ.get("SYMODE_CACHE_DIR") else "default"
    return v


def fresh_cache_env():
    """The cold child of a standalone run gets an empty model cache of its own (bench/run.py and
    bench/cold_start.py measure the empty and the filled cache)."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="symode_bench_cache_")
    return dict(os.environ, SYMODE_CACHE_DIR=d), lambda: shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    C.adapter_main("symode", os.path.abspath(__file__), PROBLEMS, COLD, meta, T_START, T_IMPORTED,
                   cold_env=fresh_cache_env)
