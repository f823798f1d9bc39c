"""Ensemble on a Dask cluster: Lotka-Volterra with 10,000 parameter sets (reference problem P6).

theta_k = theta * (1 + 0.1 u_k), u_k ~ uniform(-1, 1)^4 (numpy default_rng(0)); z0 = (1, 1); only z(10) is
kept; dopri5, rtol = atol = 1e-6. The batch is split into chunks, each solved on a worker by symode's
in-core parallel batch solver; the result is identical, bit for bit, to ``model.solve`` on the whole batch.

Run:
    python examples/distributed_ensemble.py                 # LocalCluster: 2 worker processes, 1 thread each
    python examples/distributed_ensemble.py --n 100000      # more trajectories
    python examples/distributed_ensemble.py --scheduler tcp://host:8786   # an existing cluster
    python examples/distributed_ensemble.py --quick         # small and fast (CI), checked against one process

Saves distributed_ensemble.png (the final states z(10) of the ensemble, coloured by alpha) in --out DIR.

Needs ``pip install "symode[examples]"`` (dask[distributed], tqdm for the progress bar, matplotlib for the plot). Workers load
compiled code from the on-disk caches: on a cluster of several machines, point ``NUMBA_CACHE_DIR`` and
``SYMODE_CACHE_DIR`` at shared storage, or expect each worker to compile once (tens of seconds).
"""
import os
import time

import numpy as np
import sympy as sp

import symode
import symode.distributed as sd

from _common import parser, pyplot, save  # examples/_common.py

THETA = np.array([1.5, 1.0, 3.0, 1.0])
Z0 = np.array([1.0, 1.0])
TS = np.array([0.0, 10.0])
TOL = dict(method="dopri5", rtol=1e-6, atol=1e-6)


def lotka_volterra():
    x, y = sp.symbols("x y")
    alpha, beta, gamma, delta = sp.symbols("alpha beta gamma delta")
    return symode.ODE([alpha * x - beta * x * y, delta * x * y - gamma * y], states=[x, y],
                      params=[alpha, beta, gamma, delta])


def p6_thetas(n):
    """P6's parameter sets (for n = 10,000 exactly the reference draws)."""
    u = np.random.default_rng(0).uniform(-1.0, 1.0, (n, 4))
    return THETA * (1.0 + 0.1 * u)


def main(argv=None):
    ap = parser(__doc__, "500 trajectories, compared with a run in this process")
    ap.add_argument("--scheduler", help="address of a running Dask scheduler (default: start a LocalCluster)")
    ap.add_argument("--n", type=int, default=10_000, help="number of parameter sets (default 10,000)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="threads per LocalCluster worker (default 1)")
    ap.add_argument("--chunk-size", type=int, default=None, help="trajectories per task (default: automatic)")
    args = ap.parse_args(argv)
    n = 500 if args.quick else args.n

    from distributed import Client, LocalCluster

    model = lotka_volterra()
    thetas = p6_thetas(n)
    # Compile (or load) the model and symode's batch loops here first: LocalCluster workers inherit this
    # environment and load the compiled code from the same on-disk caches instead of compiling it again.
    model.solve(Z0, thetas[:2], TS, **TOL)

    t0 = time.perf_counter()
    if args.scheduler:
        cluster = None
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    t_start = time.perf_counter() - t0
    try:
        workers = client.scheduler_info().get("workers", {})
        nthreads = sum(w.get("nthreads", 1) for w in workers.values())
        where = f"scheduler {args.scheduler}" if args.scheduler else "LocalCluster"
        print(f"cluster: {len(workers)} workers, {nthreads} threads ({where}, started in {t_start:.1f} s); "
              f"this machine has {os.cpu_count()} cores")
        # one tiny chunk per worker: each worker process builds or loads the model once and keeps it
        t0 = time.perf_counter()
        sd.map_solve(model, Z0, thetas[: 2 * max(nthreads, 1)], TS, client=client, chunk_size=2, **TOL)
        print(f"workers ready (model loaded in every worker) in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        sol = sd.map_solve(model, Z0, thetas, TS, client=client, chunk_size=args.chunk_size,
                           progress=not args.no_progress, throw=False, **TOL)
        wall = time.perf_counter() - t0
        zf = sol.z[:, -1]
        print(f"P6: {n} trajectories in {wall:.2f} s = {n / wall:,.0f} trajectories/s "
              f"({sol.chunks} chunks, {nthreads} worker threads)")
        print(f"failed: {sol.stats['failed'].size}; mean z(10) = {zf.mean(0)}, min x(10) = {zf[:, 0].min():.4f}, "
              f"max x(10) = {zf[:, 0].max():.4f}")
        if args.quick or n <= 20_000:
            t0 = time.perf_counter()
            ref = model.solve(Z0, thetas, TS, throw=False, **TOL)
            t_ref = time.perf_counter() - t0
            same = np.array_equal(ref.z, sol.z) and np.array_equal(ref.statuses, sol.statuses)
            print(f"in this process: {t_ref:.2f} s = {n / t_ref:,.0f} trajectories/s; identical to the cluster "
                  f"result: {same}")
            if not same:
                raise SystemExit("the distributed result differs from the in-process batch")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return plot(thetas, sol, args.out)


def plot(thetas, sol, out_dir):
    """Scatter of the final states z(10), coloured by alpha; failed members (if any) left out."""
    plt = pyplot()
    if plt is None:
        return None
    ok = sol.statuses == 0
    zf = sol.z[ok, -1]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    sc = ax1.scatter(zf[:, 0], zf[:, 1], c=thetas[ok, 0], s=3, cmap="viridis")
    fig.colorbar(sc, ax=ax1, label=r"$\alpha$")
    ax1.set_xlabel("x(10)")
    ax1.set_ylabel("y(10)")
    ax1.set_title(f"{ok.sum():,} Lotka-Volterra trajectories: final states")
    ax2.hist(zf[:, 0], bins=60, color="C0", alpha=0.7, label="x(10)")
    ax2.hist(zf[:, 1], bins=60, color="C1", alpha=0.7, label="y(10)")
    ax2.set_xlabel("value at t = 10")
    ax2.set_ylabel("trajectories")
    ax2.legend()
    ax2.set_title(r"$\theta_k = \theta(1 + 0.1u_k)$, $u_k \sim U(-1, 1)^4$")
    return save(fig, out_dir, "distributed_ensemble.png")


if __name__ == "__main__":
    main()
