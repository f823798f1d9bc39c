"""Time per training iteration of the P2 neural ODE (torchdiffeq's ode_demo set-up): symode against its peers.

One iteration = loss and gradient of all 252 parameters on P2's batch of 20 windows x 10 points (seed-0
start indices, initial states from the true trajectory), dopri5 rtol 1e-7 atol 1e-9, loss = mean |pred -
true|, at P2's initial weights. Rows:

  symode   symode.fit's objective (_train.batch_value_and_grad): the batched solve + batched discrete vjp
           with 1 Numba thread (the Trainer's default), with all Numba threads, and the per-window loop of
           model.vjp calls; plus the wall time per iteration of whole Trainer.run iterations (a new random
           batch each time, the optimizer step, the history): at fixed weights (SGD with lr 1e-300: the
           loop's own overhead) and in a real Adam run (the weights change, and the learned field needs
           2-3x more solver steps per window than the initial one).
  torchdiffeq  odeint_adjoint (the continuous backsolve adjoint, its Neural-ODE default) on the batched
           (20, 2) state, float64, torch.set_num_threads(1).  Shared step sizes across the batch.
  diffrax  jax.jit(jax.value_and_grad) of the batch loss, diffeqsolve vmapped over the batch (Dopri5,
           PIDController, SaveAt(ts), the default RecursiveCheckpointAdjoint), float64, single-threaded XLA.

A peer whose packages do not import in this interpreter runs in another one if SYMODE_BENCH_PY_TORCHDIFFEQ /
SYMODE_BENCH_PY_DIFFRAX names it (this script is re-run there with --peer NAME --data FILE, and prints JSON);
otherwise it is skipped with a message. Ratios are peer / symode (above 1: symode is faster).

    python bench/bench_train.py [--repeats 7] [--iterations 50] [--json FILE]
"""
import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_common as C  # noqa: E402   (numpy only: P2's data conventions)

TOL = C.P2_TOL
PEERS = ("torchdiffeq", "diffrax")
PEER_MODULES = {"torchdiffeq": ("torch", "torchdiffeq"), "diffrax": ("jax", "diffrax")}


def p2_problem(true_y):
    y0s, targets = C.p2_batch_from_true(true_y)          # (20, 2), (20, 10, 2)
    return dict(y0s=y0s, targets=targets, ts=C.p2_batch_ts(), theta=C.p2_flat_params())


def timed(fn, repeats, inner, warmup=3):
    """Best and median milliseconds of `repeats * inner` individually timed calls, after `warmup` calls.

    Each call is timed on its own (not as the mean of a group) so that a call preempted by another process
    on a shared machine spoils only itself; min and median are robust to such outliers."""
    for _ in range(warmup):
        out = fn()
    per = []
    for _ in range(repeats * inner):
        t0 = time.perf_counter()
        out = fn()
        per.append(time.perf_counter() - t0)
    return dict(ms_min=1e3 * min(per), ms_median=1e3 * statistics.median(per)), out


# ---------------------------------------------------------------------------------------------- symode


def symode_true_trajectory():
    import sympy as sp

    import symode

    y0, y1 = sp.symbols("y0 y1")
    u = sp.Matrix([[y0 ** 3, y1 ** 3]]) * sp.Matrix(C.P2_A)
    truth = symode.ODE(list(u), states=[y0, y1])
    return truth.solve(C.P2_Y0, [], C.P2_TS, method="dopri5", **TOL).z


def run_symode(prob, repeats, inner, train_iterations):
    import numba
    import sympy as sp

    import symode
    from symode import nn
    from symode._train import Trainer, batch_value_and_grad

    t0 = time.perf_counter()
    y0, y1 = sp.symbols("y0 y1")
    net = nn.mlp([y0 ** 3, y1 ** 3], [50, 2], activation="tanh", name="f")
    model = symode.ODE(net.outputs, states=[y0, y1], params=net.params)
    theta = prob["theta"]
    assert np.array_equal(net.init(seed=0), theta), "symode.nn's init differs from P2's weights"
    model.vjp(prob["y0s"][0], theta, prob["ts"], np.zeros((10, 2)), **TOL)
    build_s = time.perf_counter() - t0
    true_y = symode_true_trajectory()
    trainer = Trainer(model, (C.P2_TS, true_y), loss="mae", theta0=theta, batch_time=10, batch_size=20, seed=0,
                      optimizer="adam", lr=1e-3, method="dopri5", **TOL)
    batch = trainer.sample_batch()                       # seed 0: exactly P2's batch
    assert np.array_equal(batch.y0s, prob["y0s"]), "the Trainer's first batch is not P2's batch"
    kw = dict(trainer.solver_kw)
    rows = {}
    nmax = numba.config.NUMBA_NUM_THREADS
    for label, threads, path in (("symode fit objective (batched, 1 thread)", 1, "batched"),
                                 (f"symode fit objective (batched, {nmax} threads)", nmax, "batched"),
                                 ("symode per-window model.vjp loop", 1, "loop")):
        numba.set_num_threads(threads)
        if path == "batched":
            fn = lambda: batch_value_and_grad(model, theta, batch, "mae", kw)        # noqa: E731
        else:
            from symode._train import _looped

            fn = lambda: _looped(model, theta, batch, "mae", kw, "discrete", False)  # noqa: E731
        tm, (value, g, _) = timed(fn, repeats, inner)
        rows[label] = dict(tm, loss=float(value), grad=g.tolist())
    numba.set_num_threads(1)
    # whole training iterations: batch sampling, objective, optimizer step, history, progress bookkeeping
    from symode.optim import SGD

    frozen = Trainer(model, (C.P2_TS, true_y), loss="mae", theta0=theta, batch_time=10, batch_size=20, seed=0,
                     optimizer=SGD(lr=1e-300, momentum=0.0), method="dopri5", **TOL)
    for label, tr in ((f"symode Trainer.run, {train_iterations} its at fixed weights", frozen),
                      (f"symode Trainer.run, Adam lr 1e-3, {train_iterations} its", trainer)):
        res = tr.run(train_iterations, progress=False)
        per = np.diff(res.history["time"])                  # one entry per iteration
        rows[label] = dict(ms_min=1e3 * float(per.min()), ms_median=1e3 * float(np.median(per)),
                           ms_mean=1e3 * float(per.mean()), loss=float(res.history["loss"][0]), grad=None)
    numba.set_num_threads(nmax)
    return rows, dict(build_s=build_s, numba_threads=nmax, symode=symode.__version__, numba=numba.__version__)


# ---------------------------------------------------------------------------------------------- torchdiffeq


def run_torchdiffeq(prob, repeats, inner):
    import torch
    from torch import nn as tnn
    from torchdiffeq import odeint_adjoint

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    W1, b1, W2, b2 = C.p2_params()

    class ODEFunc(tnn.Module):
        def __init__(self):
            super().__init__()
            self.net = tnn.Sequential(tnn.Linear(2, 50), tnn.Tanh(), tnn.Linear(50, 2))
            with torch.no_grad():
                self.net[0].weight.copy_(torch.tensor(W1))
                self.net[0].bias.copy_(torch.tensor(b1))
                self.net[2].weight.copy_(torch.tensor(W2))
                self.net[2].bias.copy_(torch.tensor(b2))

        def forward(self, t, y):
            return self.net(y ** 3)

    func = ODEFunc()
    y0 = torch.tensor(prob["y0s"])
    ts = torch.tensor(prob["ts"])
    target = torch.tensor(np.transpose(prob["targets"], (1, 0, 2)))     # (10, 20, 2)

    def iteration():
        func.zero_grad()
        pred = odeint_adjoint(func, y0, ts, rtol=TOL["rtol"], atol=TOL["atol"], method="dopri5")
        loss = torch.mean(torch.abs(pred - target))
        loss.backward()
        g = torch.cat([func.net[0].weight.grad.reshape(-1), func.net[0].bias.grad, func.net[2].weight.grad.reshape(-1),
                       func.net[2].bias.grad])
        return float(loss), g.detach().numpy().copy()

    tm, (value, g) = timed(iteration, repeats, max(1, inner // 20), warmup=2)
    return {"torchdiffeq odeint_adjoint (batched state, 1 thread)": dict(tm, loss=value, grad=g.tolist())}, \
        dict(torch=torch.__version__)


# ---------------------------------------------------------------------------------------------- diffrax


def run_diffrax(prob, repeats, inner):
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax as dfx
    import jax.numpy as jnp

    W1, b1, W2, b2 = (jnp.asarray(a) for a in C.p2_params())
    y0s = jnp.asarray(prob["y0s"])
    ts = jnp.asarray(prob["ts"])
    target = jnp.asarray(prob["targets"])                                # (20, 10, 2)

    def vf(t, y, p):
        w1, c1, w2, c2 = p
        return w2 @ jnp.tanh(w1 @ y ** 3 + c1) + c2

    term = dfx.ODETerm(vf)
    solver = dfx.Dopri5()
    ctrl = dfx.PIDController(rtol=TOL["rtol"], atol=TOL["atol"])

    def solve_one(y0, p):
        sol = dfx.diffeqsolve(term, solver, ts[0], ts[-1], None, y0, p, saveat=dfx.SaveAt(ts=ts),
                              stepsize_controller=ctrl, max_steps=100_000)
        return sol.ys

    def loss(p):
        pred = jax.vmap(solve_one, in_axes=(0, None))(y0s, p)
        return jnp.mean(jnp.abs(pred - target))

    vg = jax.jit(jax.value_and_grad(loss))
    p = (W1, b1, W2, b2)

    def iteration():
        value, g = vg(p)
        g = jax.block_until_ready(g)
        return float(value), np.concatenate([np.asarray(a).ravel() for a in g])

    tm, (value, g) = timed(iteration, repeats, inner)
    return {"diffrax jit(value_and_grad), vmap over the batch": dict(tm, loss=value, grad=g.tolist())}, \
        dict(jax=jax.__version__, diffrax=dfx.__version__)


RUNNERS = {"torchdiffeq": run_torchdiffeq, "diffrax": run_diffrax}


def importable(peer):
    return all(importlib.util.find_spec(m) is not None for m in PEER_MODULES[peer])


def run_peer(peer, prob, repeats, inner):
    """In this process if the peer imports here, else in SYMODE_BENCH_PY_<PEER>; (rows, meta) or a skip message."""
    if importable(peer):
        try:
            return RUNNERS[peer](prob, repeats, inner)
        except Exception as e:  # noqa: BLE001
            return f"{peer} failed: {type(e).__name__}: {str(e)[:300]}"
    py = os.environ.get(f"SYMODE_BENCH_PY_{peer.upper()}")
    if not py:
        mods = " and ".join(PEER_MODULES[peer])
        return (f"{peer} skipped: {mods} not importable here (install it, or name an interpreter that has it in "
                f"SYMODE_BENCH_PY_{peer.upper()})")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "p2.npz")
        np.savez(path, **prob)
        cmd = [py, os.path.abspath(__file__), "--peer", peer, "--data", path, "--repeats", str(repeats),
               "--inner", str(inner)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            return f"{peer} timed out in {py}"
        if out.returncode != 0:
            return f"{peer} failed in {py}: {out.stderr.strip()[-400:]}"
        res = json.loads(out.stdout.strip().splitlines()[-1])
        return res["rows"], res["meta"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--inner", type=int, default=20, help="timed calls = repeats x inner (torchdiffeq: / 20)")
    ap.add_argument("--iterations", type=int, default=200, help="length of the timed Adam run")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--peer", default=None, help=argparse.SUPPRESS)       # child mode
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.peer:                                       # child: run one peer on the given data, print JSON
        prob = dict(np.load(args.data))
        rows, meta = RUNNERS[args.peer](prob, args.repeats, args.inner)
        print(json.dumps(dict(rows=rows, meta=meta)))
        return 0

    print("P2 training iteration: loss + gradient of 252 parameters, batch of 20 windows x 10 points, dopri5 "
          "rtol=1e-7 atol=1e-9, at P2's initial weights", flush=True)
    true_y = symode_true_trajectory()
    prob = p2_problem(true_y)
    rows, meta = run_symode(prob, args.repeats, args.inner, args.iterations)
    print(f"symode: kernels built or loaded in {meta['build_s']:.1f} s; numba threads available: "
          f"{meta['numba_threads']}", flush=True)
    messages = []
    for peer in [p for p in args.peers.split(",") if p]:
        r = run_peer(peer, prob, args.repeats, args.inner)
        if isinstance(r, str):
            messages.append(r)
        else:
            rows.update(r[0])
            meta.update(r[1])
    ref_label = next(iter(rows))
    ref = rows[ref_label]
    w = max(len(k) for k in rows) + 2
    print(f"\n{'row':{w}s}{'min ms':>10s}{'median ms':>11s}{'ratio':>8s}{'loss':>12s}{'grad rel. diff':>16s}")
    for label, r in rows.items():
        ratio = r["ms_min"] / ref["ms_min"]
        gd = ""
        if r.get("grad") is not None and ref.get("grad") is not None:
            a, b = np.asarray(r["grad"]), np.asarray(ref["grad"])
            gd = f"{np.max(np.abs(a - b)) / np.max(np.abs(b)):.1e}"
        print(f"{label:{w}s}{r['ms_min']:10.3f}{r['ms_median']:11.3f}{ratio:8.2f}{r['loss']:12.6f}{gd:>16s}")
    print(f"\nratio = row / '{ref_label}' (min times); for a peer it is peer/symode: above 1 means symode is faster.")
    for m in messages:
        print(m)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, meta=meta, skipped=messages), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
