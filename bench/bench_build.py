"""Build times of network (symode.nn) and flat models, and the P2 gradient cost per training iteration.

    python bench/bench_build.py                     # every row, 1 cold + 2 warm runs each, then the P2 timings
    python bench/bench_build.py --rows P2,P5_n64_nn --repeats 2 --out build.json

Each row runs in fresh interpreters:
  cold  = empty model cache (a new $SYMODE_CACHE_DIR): derive + print + Numba compilation of the model's kernels;
  warm  = the cache that the cold run filled: import + build (load) + first f call.
Times are measured inside the child from its first line (imports included) to the end of the first f call
("total"); "build" excludes the imports; "cpu" is the child's user+system CPU time (useful on a loaded machine).
Numba's cache of symode's own library loops ($NUMBA_CACHE_DIR or __pycache__) is kept warm: a warm-up child runs
first, so only the model's own kernels are compiled in a cold row.

Rows: P2 (2-50-2 tanh MLP on y**3, 252 parameters), MLP2k (2-42-42-2, 2018 parameters), P5 tanh(W z) - z/2 at
n = 4, 16, 64 as a dense block (nn.dense(z, n, "tanh", bias=False)) and as flat SymPy expressions, and P2 as flat
SymPy expressions (the pre-symode.nn way; slow, only with --rows P2_flat or --all).
"""
import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

GOALS = {"P2": ("15 s", "1 s"), "P5_n64_nn": ("60 s", "-"), "P5_n64_flat": ("60 s", "-")}
ROWS = ["P2", "MLP2k", "P5_n4_nn", "P5_n4_flat", "P5_n16_nn", "P5_n16_flat", "P5_n64_nn", "P5_n64_flat"]
EXTRA_ROWS = ["P2_flat"]


# ---------------------------------------------------------------------------------------------- models


def build_model(row):
    """(model, theta, z) for a row name."""
    import numpy as np

from symode._engine import explicit as _explicit
    import sympy as sp

    import symode
    from symode import nn

    if row in ("P2", "P2_flat"):
        y = sp.symbols("y0 y1")
        u = [y[0] ** 3, y[1] ** 3]
        net = nn.mlp(u, [50, 2], activation="tanh", name="net")
        if row == "P2":
            return symode.ODE(net.outputs, states=list(y), params=net.params), net.init(0), np.array([2.0, 0.0])
        W1 = sp.Matrix(50, 2, net.params[:100])
        b1 = sp.Matrix(net.params[100:150])
        W2 = sp.Matrix(2, 50, net.params[150:250])
        b2 = sp.Matrix(net.params[250:])
        f = W2 * (W1 * sp.Matrix(u) + b1).applyfunc(sp.tanh) + b2
        return symode.ODE(list(f), states=list(y), params=net.params), net.init(0), np.array([2.0, 0.0])
    if row == "MLP2k":
        y = sp.symbols("y0 y1")
        net = nn.mlp(list(y), [42, 42, 2], activation="tanh", name="net")
        return symode.ODE(net.outputs, states=list(y), params=net.params), net.init(0), np.array([0.5, -0.3])
    if row.startswith("P5_n"):
        n = int(row.split("_")[1][1:])
        z = sp.symbols(f"z0:{n}")
        W = np.random.default_rng(0).normal(0.0, 1.0 / np.sqrt(n), (n, n))
        z0 = np.ones(n) / np.sqrt(n)
        if row.endswith("_nn"):
            blk = nn.dense(z, n, activation="tanh", bias=False, name="W")
            rhs = [blk[i] - z[i] / 2 for i in range(n)]
            return symode.ODE(rhs, states=list(z), params=blk.params), W.ravel(), z0
        Ws = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"W_{i}_{j}"))
        rhs = (Ws * sp.Matrix(z)).applyfunc(sp.tanh) - sp.Matrix(z) / 2
        return symode.ODE(list(rhs), states=list(z), params=list(Ws)), W.ravel(), z0
    raise SystemExit(f"unknown row {row!r}")


def child(row):
    """Runs in a fresh interpreter: import, build, first f call; prints one JSON line."""
    import numpy as np  # noqa: F401
    import sympy  # noqa: F401

    import symode

    t_imp = time.perf_counter()
    out = {"row": row, "import_s": t_imp - T0}
    try:
        model, theta, z = build_model(row)
        t_mod = time.perf_counter()
        c = model.compiled
        t_c = time.perf_counter()
        model.f(z, theta)
        t_f = time.perf_counter()
        out.update(model_s=t_mod - t_imp, compiled_s=t_c - t_mod, first_f_s=t_f - t_c, build_s=t_f - t_imp,
                   total_s=t_f - T0, generated=c.generated, timings=c.timings, n_params=model.n_params,
                   source_kb=os.path.getsize(c.path) / 1024)
    except symode.ModelTooLargeError as e:
        t = time.perf_counter()
        out.update(refused=str(e).split(":")[1].split(";")[0].strip(), build_s=t - t_imp, total_s=t - T0)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = ru.ru_utime + ru.ru_stime
    print(json.dumps(out))


def run_child(row, cache_dir, timeout):
    env = dict(os.environ, SYMODE_CACHE_DIR=cache_dir)
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", row], capture_output=True,
                           text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"row": row, "error": f"timed out after {timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"row": row, "error": (p.stderr or p.stdout)[-800:]}
    d = json.loads(lines[-1])
    d["process_s"] = time.perf_counter() - t0
    return d


# ---------------------------------------------------------------------------------------------- P2 gradient cost


def p2_gradient_timings(repeats=7):
    """In-process (warm) timings of the P2 training iteration: 20 windows of 10 points, dopri5 rtol 1e-7 atol 1e-9,
    loss mean |pred - true|, discrete adjoint; plus the compiled kernels' own costs."""
    import numpy as np
    from numba import njit

    import symode
    from symode._numeric import adjoint as adj
    from symode._numeric import rk
    from symode._numeric.fnptr import call_f, call_v

    model, theta, _ = build_model("P2")
    y = model.states
    A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    true = symode.ODE([y[0] ** 3 * A[0, 0] + y[1] ** 3 * A[1, 0], y[0] ** 3 * A[0, 1] + y[1] ** 3 * A[1, 1]],
                      states=list(y))
    ts = np.linspace(0.0, 25.0, 1000)
    kw = dict(method="dopri5", rtol=1e-7, atol=1e-9)
    ty = true.solve([2.0, 0.0], [], ts, **kw).z
    s = np.sort(np.random.default_rng(0).choice(990, 20, replace=False))
    y0s = ty[s]
    targets = np.stack([ty[s + i] for i in range(10)], axis=1)
    tb = ts[:10].copy()
    N = targets.size

    def iteration():
        g = np.zeros(theta.size)
        L = 0.0
        for b in range(20):
            def cot(sol, b=b):
                d = sol.z - targets[b]
                return float(np.sum(np.abs(d))), np.sign(d) / N, None
            r = model.vjp(y0s[b], theta, tb, cot, adjoint="discrete", **kw)
            g += r.theta
            L += r.value
        return L / N, g

    def best(fn, k=repeats):
        fn()
        t = []
        for _ in range(k):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return min(t), float(np.median(t))

    out = {}
    out["iteration_s"] = best(iteration)
    cot1 = np.sign(model.solve(y0s[0], theta, tb, **kw).z - targets[0]) / N
    out["one_vjp_s"] = best(lambda: model.vjp(y0s[0], theta, tb, cot1, adjoint="discrete", **kw), 50)
    sol = model.solve(y0s[0], theta, tb, **kw)
    out["window_stats"] = sol.stats
    # compiled parts only: the forward solve with recorded stages and the reverse sweep
    opts = model._rt.config("dopri5", 1e-7, 1e-9, None, 100000, None, None)
    a, b, be, c, dense, fsal, eo = opts.method.packed()
    fwd = _explicit.integrate(model._rt, rk.MODE_F, y0s[0], theta, tb, opts, record=3)
    kern = model.compiled.kern
    ybar, gth = np.empty(2), np.empty(theta.size)

    def sweep():
        adj.discrete_sweep(kern, 2, theta.size, theta, fwd.rec_t, fwd.rec_h, fwd.rec_y, fwd.rec_k, a, b,
                           c, dense, fwd.out_step, fwd.out_frac, cot1, ybar, gth, fwd.rec_w)

    out["forward_integrate_s"] = best(lambda: _explicit.integrate(model._rt, rk.MODE_F, y0s[0], theta, tb, opts, record=3), 200)
    out["discrete_sweep_s"] = best(sweep, 200)

    @njit
    def loop_f(addr, z, th, o, n):
        acc = 0.0
        for i in range(n):
            z[0] += 1e-12
            call_f(addr, 0.0, z, th, o)
            acc += o[0]
        return acc

    @njit
    def loop_v(addr, z, th, av, oz, op, n):
        acc = 0.0
        for i in range(n):
            z[0] += 1e-12
            call_v(addr, 0.0, z, th, av, oz, op)
            acc += op[0]
        return acc

    z = np.array([0.5, -0.4])
    o, oz, op, av = np.empty(2), np.empty(2), np.empty(theta.size), np.array([0.3, -0.7])
    n = 100_000
    loop_f(kern[0], z, theta, o, 10)
    loop_v(kern[4], z, theta, av, oz, op, 10)
    out["kernel_f_s"] = best(lambda: loop_f(kern[0], z, theta, o, n), 3)[0] / n
    out["kernel_vjp_s"] = best(lambda: loop_v(kern[4], z, theta, av, oz, op, n), 3)[0] / n
    return out


# ---------------------------------------------------------------------------------------------- driver


def fmt(v):
    return "-" if v is None else f"{v:.2f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--all", action="store_true", help="also the slow flat P2 row")
    ap.add_argument("--repeats", type=int, default=1, help="cold runs per row (each with a fresh cache)")
    ap.add_argument("--warm", type=int, default=2, help="warm runs per cold run")
    ap.add_argument("--timeout", type=int, default=1200)
    ap.add_argument("--no-p2-gradient", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    rows = args.rows.split(",") + (EXTRA_ROWS if args.all else [])
    base = tempfile.mkdtemp(prefix="symode_bench_build_")
    results = []
    try:
        run_child("P5_n4_nn", os.path.join(base, "warmup"), args.timeout)  # library loops into Numba's cache
        for row in rows:
            colds, warms = [], []
            for r in range(args.repeats):
                d = os.path.join(base, f"{row}_{r}")
                colds.append(run_child(row, d, args.timeout))
                if "error" in colds[-1] or "refused" in colds[-1]:
                    break
                for _ in range(args.warm):
                    warms.append(run_child(row, d, args.timeout))
                shutil.rmtree(d, ignore_errors=True)
            ok_c = [c for c in colds if "error" not in c]
            ok_w = [w for w in warms if "error" not in w]
            cold = min(ok_c, key=lambda c: c["total_s"]) if ok_c else colds[-1]
            warm = min(ok_w, key=lambda w: w["total_s"]) if ok_w else None
            results.append({"row": row, "cold": cold, "warm": warm})
            print(f"  {row}: cold {fmt(cold.get('total_s'))} warm {fmt(warm and warm.get('total_s'))}",
                  file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\n| row | params | cold total (build, cpu) | cold: derive / emit / compile | warm total (import + build,"
          " cpu) | goal cold / warm | source |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        c, w = r.cold, r.warm
        goal = " / ".join(GOALS.get(r.row, ("-", "-")))
        if "error" in c:
            print(f"| {r['row']} | - | error: {c['error'][-120:]!r} | | | {goal} | |")
            continue
        if "refused" in c:
            print(f"| {r['row']} | - | ModelTooLargeError after {fmt(c['build_s'])} ({c['refused']}) | | | {goal} | |")
            continue
        t = c.get("timings", {})
        phases = f"{t.get('derive', 0):.2f} / {t.get('emit', 0):.2f} / {t.get('import', 0):.2f} s"
        wtxt = "-" if not w else \
            f"{fmt(w['total_s'])} ({fmt(w['import_s'])} + {fmt(w['build_s'])}, cpu {fmt(w['cpu_s'])})"
        print(f"| {r['row']} | {c['n_params']} | {fmt(c['total_s'])} ({fmt(c['build_s'])}, cpu {fmt(c['cpu_s'])}) | "
              f"{phases} | {wtxt} | {goal} | {c['source_kb']:.0f} kB |")
    grad = None
    if not args.no_p2_gradient:
        grad = p2_gradient_timings()
        us = 1e6
        print("\nP2 gradient (warm, in process; dopri5 rtol 1e-7 atol 1e-9, windows of 10 points, adjoint='discrete'):")
        print(f"  one training iteration (20 windows x model.vjp with the loss as a callable): "
              f"min {grad['iteration_s'][0] * 1e3:.3f} ms, median {grad['iteration_s'][1] * 1e3:.3f} ms "
              "(target 0.3 ms)")
        print(f"  one window, model.vjp: min {grad['one_vjp_s'][0] * us:.1f} us, "
              f"median {grad['one_vjp_s'][1] * us:.1f} us"
              f"  (steps per window: {grad['window_stats']['nsteps']}, f evaluations: {grad['window_stats']['nfev']})")
        print(f"  of which compiled: forward solve with recorded stages {grad['forward_integrate_s'][0] * us:.1f} us "
              f"(incl. the Python wrapper), reverse sweep {grad['discrete_sweep_s'][0] * us:.1f} us")
        print(f"  kernels: f {grad['kernel_f_s'] * us:.3f} us, vjp {grad['kernel_vjp_s'] * us:.3f} us per call")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"rows": results, "p2_gradient": grad}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
