"""diffrax (JAX, CPU, float64 via jax_enable_x64).

jax.jit around the whole diffeqsolve + loss (forward) and around jax.value_and_grad (gradient).  Dopri5 with
PIDController(rtol, atol) (integral control, diffrax's default coefficients), dt0=None, SaveAt(ts=...) (dense
interpolation), max_steps 4096.  Gradient (main row): RecursiveCheckpointAdjoint (diffrax's default,
discretise-then-optimise); with --variants all also BacksolveAdjoint (continuous adjoint).  P3: Kvaerno5 (ESDIRK).
P6: jax.jit(jax.vmap(solve)) over the 10,000 parameter sets (each lane keeps its own step size), all cores.
Single-thread rows: XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" (run.py sets it)
plus --pin (XLA still keeps ~2 cores busy without pinning).  The compilation cache is disabled, so the cold time
includes tracing and XLA compilation.

    python bench/peers/diffrax_.py --problems P1,P4
"""
import time

T_START = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
try:
    jax.config.update("jax_enable_compilation_cache", False)
except Exception:  # noqa: BLE001
    pass
import jax.numpy as jnp  # noqa: E402
import diffrax as dfx  # noqa: E402

import bench_common as C  # noqa: E402

jnp.zeros(1).block_until_ready()           # backend initialisation belongs to the import/cold cost
T_IMPORTED = time.perf_counter()


def lotka_volterra(t, z, th):
    x, y = z[0], z[1]
    return jnp.stack([th[0] * x - th[1] * x * y, th[3] * x * y - th[2] * y])


def robertson(t, y, k):
    y1, y2, y3 = y[0], y[1], y[2]
    return jnp.stack([-k[0] * y1 + k[2] * y2 * y3, k[0] * y1 - k[2] * y2 * y3 - k[1] * y2 ** 2, k[1] * y2 ** 2])


def lorenz(t, z, p):
    x, y, w = z[0], z[1], z[2]
    return jnp.stack([p[0] * (y - x), x * (p[1] - w) - y, x * y - p[2] * w])


def tanh_net(t, z, W):
    return jnp.tanh(W @ z) - 0.5 * z


def spiral_true(t, y, A):
    return (y ** 3) @ A


def spiral_model(t, y, p):           # y (batch, 2)
    return jnp.tanh((y ** 3) @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]


def make_solve(vf, solver, ts, rtol, atol, max_steps=4096):
    ctrl = dfx.PIDController(rtol=rtol, atol=atol)
    saveat = dfx.SaveAt(ts=ts)

    def solve(y0, args, adjoint=dfx.RecursiveCheckpointAdjoint()):
        return dfx.diffeqsolve(dfx.ODETerm(vf), solver, ts[0], ts[-1], None, y0, args, saveat=saveat,
                               stepsize_controller=ctrl, adjoint=adjoint, max_steps=max_steps)
    return solve


def block(x):
    return jax.block_until_ready(x)


def first_and_time(ctx, fn, args):
    t0 = time.perf_counter()
    out = block(fn(*args))
    first = time.perf_counter() - t0
    tm = ctx.time(lambda: block(fn(*args)))
    tm["first_s"] = first             # first call = trace + compile + run
    return out, tm


def flat(tree):
    return np.concatenate([np.asarray(leaf, dtype=float).ravel() for leaf in jax.tree_util.tree_leaves(tree)])


def sumsq_builder(prob):
    if prob == "P1":
        return lotka_volterra, jnp.asarray(C.P1_Z0), jnp.asarray(C.P1_THETA), jnp.asarray(C.P1_TS), C.P1_TOL
    if prob == "P4":
        return lorenz, jnp.asarray(C.P4_Z0), jnp.asarray(C.P4_THETA), jnp.asarray(C.P4_TS), C.P4_TOL
    n = int(prob.split("n")[-1])
    W, z0 = C.p5_data(n)
    return tanh_net, jnp.asarray(z0), jnp.asarray(W), jnp.asarray(C.P5_TS), C.P5_TOL


def sumsq_fns(prob, adjoint=None):
    vf, y0, args, ts, tol = sumsq_builder(prob)
    solve = make_solve(vf, dfx.Dopri5(), ts, tol["rtol"], tol["atol"])

    @jax.jit
    def fwd(y0_, a_):
        sol = solve(y0_, a_)
        return jnp.sum(sol.ys ** 2), sol.stats["num_steps"]

    def loss(y0_, a_, adj):
        return jnp.sum(solve(y0_, a_, adj).ys ** 2)
    grads = {}
    for name, adj in (("RecursiveCheckpointAdjoint", dfx.RecursiveCheckpointAdjoint()),
                      ("BacksolveAdjoint", dfx.BacksolveAdjoint())):
        grads[name] = jax.jit(jax.value_and_grad(lambda a, b, adj=adj: loss(a, b, adj), argnums=(0, 1)))
    return fwd, grads, (y0, args)


def sumsq_rows(prob):
    def run(ctx):
        fwd, grads, args = sumsq_fns(prob)
        (L, nsteps), tf = first_and_time(ctx, fwd, args)
        rows = []
        for name in (["RecursiveCheckpointAdjoint", "BacksolveAdjoint"] if ctx.all else
                     ["RecursiveCheckpointAdjoint"]):
            (Lg, g), tg = first_and_time(ctx, grads[name], args)
            rows.append({"variant": "Dopri5, %s" % name, "solver": "Dopri5", "grad_method": name,
                         **C.tentry("forward", tf), **C.tentry("grad", tg), "loss": float(L),
                         "grad": C.tolist(flat(g)), "nsteps": int(nsteps),
                         "compile_note": "forward_first_s / grad_first_s include tracing + XLA compilation"})
        return rows
    return run


def run_p3(ctx):
    ts = jnp.asarray(C.P3_TS)
    solve = make_solve(robertson, dfx.Kvaerno5(), ts, C.P3_TOL["rtol"], C.P3_TOL["atol"])
    y0, k = jnp.asarray(C.P3_Z0), jnp.asarray(C.P3_K)

    @jax.jit
    def fwd(k_):
        sol = solve(y0, k_)
        return sol.ys[-1, 2], sol.stats["num_steps"]
    vg = jax.jit(jax.value_and_grad(lambda k_: solve(y0, k_).ys[-1, 2]))
    (L, nsteps), tf = first_and_time(ctx, fwd, (k,))
    (Lg, g), tg = first_and_time(ctx, vg, (k,))
    return [{"variant": "Kvaerno5, RecursiveCheckpointAdjoint", "solver": "Kvaerno5",
             "grad_method": "RecursiveCheckpointAdjoint", **C.tentry("forward", tf), **C.tentry("grad", tg),
             "loss": float(L), "grad": C.tolist(g), "nsteps": int(nsteps),
             "note": "BacksolveAdjoint diverges on Robertson (not run)"}]


def run_p2(ctx):
    A = jnp.asarray(C.P2_A)
    ts_full = jnp.asarray(C.P2_TS)
    tol = C.P2_TOL
    true_solve = make_solve(spiral_true, dfx.Dopri5(), ts_full, tol["rtol"], tol["atol"])

    @jax.jit
    def true_forward(y0_, A_):
        return true_solve(y0_, A_).ys
    true_y, tf = first_and_time(ctx, true_forward, (jnp.asarray(C.P2_Y0), A))
    y0s, targets = C.p2_batch_from_true(np.asarray(true_y))
    batch_y0 = jnp.asarray(y0s)                                     # (20, 2)
    batch_y = jnp.asarray(np.transpose(targets, (1, 0, 2)))         # (10, 20, 2)
    W1, b1, W2, b2 = C.p2_params()
    params = {"W1": jnp.asarray(W1), "b1": jnp.asarray(b1), "W2": jnp.asarray(W2), "b2": jnp.asarray(b2)}
    model_solve = make_solve(spiral_model, dfx.Dopri5(), jnp.asarray(C.p2_batch_ts()), tol["rtol"], tol["atol"])

    def model_loss(p, adjoint):
        return jnp.mean(jnp.abs(model_solve(batch_y0, p, adjoint).ys - batch_y))
    bf = jax.jit(lambda p: model_loss(p, dfx.RecursiveCheckpointAdjoint()))
    _, tbf = first_and_time(ctx, bf, (params,))
    rows = []
    for name, adj in ((("RecursiveCheckpointAdjoint", dfx.RecursiveCheckpointAdjoint()),
                       ("BacksolveAdjoint", dfx.BacksolveAdjoint())) if ctx.all else
                      (("RecursiveCheckpointAdjoint", dfx.RecursiveCheckpointAdjoint()),)):
        vg = jax.jit(jax.value_and_grad(lambda p, adj=adj: model_loss(p, adj)))
        (L, g), tg = first_and_time(ctx, vg, (params,))
        gflat = np.concatenate([np.asarray(g[k]).ravel() for k in ("W1", "b1", "W2", "b2")])
        rows.append({"variant": "Dopri5, %s" % name, "solver": "Dopri5", "grad_method": name,
                     "forward_what": "true dynamics over all 1000 points",
                     "grad_what": "one iteration: the (20, 2) batch as one state (shared steps), value_and_grad",
                     **C.tentry("forward", tf), **C.tentry("grad", tg), "batch_forward_s_min": tbf["min"],
                     "batch_forward_s_median": tbf["median"], "loss": float(L), "grad": C.tolist(gflat)})
    return rows


def run_p6(ctx):
    z0 = jnp.asarray(C.P1_Z0)
    thetas = jnp.asarray(C.p6_thetas())
    N = thetas.shape[0]
    ctrl = dfx.PIDController(rtol=C.P6_TOL["rtol"], atol=C.P6_TOL["atol"])

    def one(th):
        sol = dfx.diffeqsolve(dfx.ODETerm(lotka_volterra), dfx.Dopri5(), 0.0, C.P6_T1, None, z0, th,
                              saveat=dfx.SaveAt(t1=True), stepsize_controller=ctrl, max_steps=4096)
        return sol.ys[-1]
    ens = jax.jit(jax.vmap(one))
    out, tm = first_and_time(ctx, ens, (thetas,))
    out = np.asarray(out)
    nth = "all (%d cores)" % (os.cpu_count() or 1) if ctx.threads == "all" else "1"
    return [{"variant": "Dopri5, jit(vmap), threads=%s" % nth, "threads": nth, **C.tentry("forward", tm),
             "n_traj": int(N), "traj_per_s": N / tm["min"], "traj_per_s_median": N / tm["median"],
             "final_state_first": out[0].tolist(), "final_state_mean": out.mean(axis=0).tolist(),
             "method": "vmap over parameter sets: per-lane step-size control, lanes run in lock-step"}]


PROBLEMS = {"P1": sumsq_rows("P1"), "P2": run_p2, "P3": run_p3, "P4": sumsq_rows("P4"), "P5_n4": sumsq_rows("P5_n4"),
            "P5_n16": sumsq_rows("P5_n16"), "P5_n64": sumsq_rows("P5_n64"), "P6": run_p6}


def cold_p1():
    fwd, grads, args = sumsq_fns("P1")
    L = float(block(fwd(*args))[0])
    Lg, g = block(grads["RecursiveCheckpointAdjoint"](*args))
    return {"loss": L, "grad0": float(g[0][0])}


def meta():
    return C.pkg_versions(["jax", "jaxlib", "diffrax", "equinox", "numpy"])


if __name__ == "__main__":
    C.adapter_main("diffrax", os.path.abspath(__file__), PROBLEMS, {"P1": cold_p1}, meta, T_START, T_IMPORTED)
