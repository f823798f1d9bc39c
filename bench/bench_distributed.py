"""Distributed ensemble throughput: P6 scaled to 1,000,000 trajectories on a Dask LocalCluster.

Measures, for the same batch:
  * in-process: ``model.solve`` on the whole batch (symode's parallel batch solver, all cores of this machine);
  * distributed: ``symode.distributed.map_solve`` on a LocalCluster (default 2 worker processes x 1 thread;
    pass --workers/--threads), after the workers have loaded the model (cluster start and worker warm-up are
    reported separately), and the time to the first finished chunk (``iter_solve``);
  * optionally (--grad-n) a dataset gradient: ``map_vjp(reduce="sum")`` against ``model.vjp(reduce="sum")``.
Reports trajectories per second, the distribution overhead as a ratio (distributed wall time / in-process
wall time on the same cores), and checks that the distributed solution is identical, bit for bit.

P6: theta_k = theta * (1 + 0.1 u_k), u = default_rng(0).uniform(-1, 1, (N, 4)) (the reference draws for
N = 10,000), z0 = (1, 1), ts = [0, 10] (only z(10) is needed), dopri5, rtol = atol = 1e-6.

Run:  python bench/bench_distributed.py [--n 1000000] [--workers 2] [--threads 1] [--chunk-size K]
                                         [--grad-n 100000] [--json out.json]
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import sympy as sp


def lotka_volterra():
    import symode

    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("alpha beta gamma delta")
    return symode.ODE([a * x - b * x * y, d * x * y - c * y], states=[x, y], params=[a, b, c, d])


THETA = np.array([1.5, 1.0, 3.0, 1.0])
Z0 = np.array([1.0, 1.0])
TS = np.array([0.0, 10.0])
TOL = dict(method="dopri5", rtol=1e-6, atol=1e-6)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per worker")
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--grad-n", type=int, default=0, help="trajectories of the dataset-gradient run (0: skip)")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args(argv)

    import numba
    from distributed import Client, LocalCluster

    import symode
    import symode.distributed as sd

    n = args.n
    model = lotka_volterra()
    thetas = THETA * (1.0 + 0.1 * np.random.default_rng(0).uniform(-1.0, 1.0, (n, 4)))
    out = dict(problem="P6 scaled", n=n, machine=platform.machine(), cores=os.cpu_count(),
               numba_threads_in_process=numba.get_num_threads(), symode=symode.__version__,
               workers=args.workers, threads_per_worker=args.threads)

    # ---- in-process reference (compiles/loads here first; workers then load from the same caches)
    model.solve(Z0, thetas[:4], TS, **TOL)
    t0 = time.perf_counter()
    ref = model.solve(Z0, thetas, TS, throw=False, **TOL)
    t_in = time.perf_counter() - t0
    out["in_process"] = dict(seconds=t_in, traj_per_s=n / t_in)
    log(f"in-process: {n} trajectories in {t_in:.2f} s = {n / t_in:,.0f}/s ({numba.get_num_threads()} threads)")

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    out["cluster_start_s"] = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        k = args.workers * args.threads
        sd.map_solve(model, Z0, thetas[: 2 * k], TS, client=client, chunk_size=2, **TOL)
        out["worker_warmup_s"] = time.perf_counter() - t0
        log(f"cluster started in {out['cluster_start_s']:.1f} s, workers warm in {out['worker_warmup_s']:.1f} s")

        # ---- distributed, bulk
        t0 = time.perf_counter()
        sol = sd.map_solve(model, Z0, thetas, TS, client=client, chunk_size=args.chunk_size, throw=False, **TOL)
        t_d = time.perf_counter() - t0
        same = bool(np.array_equal(sol.z, ref.z) and np.array_equal(sol.statuses, ref.statuses))
        out["distributed"] = dict(seconds=t_d, traj_per_s=n / t_d, chunks=sol.chunks, overhead_ratio=t_d / t_in,
                                  identical_to_in_process=same)
        log(f"distributed: {n} in {t_d:.2f} s = {n / t_d:,.0f}/s, {sol.chunks} chunks; overhead ratio "
            f"{t_d / t_in:.2f}; identical: {same}")
        del sol

        # ---- time to first result (streaming)
        t0 = time.perf_counter()
        first = None
        done = 0
        for ch in sd.iter_solve(model, Z0, thetas, TS, client=client, chunk_size=args.chunk_size, **TOL):
            if first is None:
                first = time.perf_counter() - t0
                first_size = ch.stop - ch.start
            done += ch.stop - ch.start
        t_s = time.perf_counter() - t0
        out["streaming"] = dict(first_result_s=first, first_chunk_trajectories=first_size, seconds=t_s,
                                traj_per_s=done / t_s)
        log(f"streaming: first chunk ({first_size} trajectories) after {first:.2f} s, all after {t_s:.2f} s")

        # ---- dataset gradient
        if args.grad_n:
            g_n = min(args.grad_n, n)
            cot = np.array([[0.0, 0.0], [1.0, 1.0]])
            model.vjp(Z0, thetas[:4], TS, cot, reduce="sum", **TOL)
            t0 = time.perf_counter()
            gref = model.vjp(Z0, thetas[:g_n], TS, cot, reduce="sum", **TOL)
            tg_in = time.perf_counter() - t0
            t0 = time.perf_counter()
            g = sd.map_vjp(model, Z0, thetas[:g_n], TS, cot, client=client, chunk_size=args.chunk_size, **TOL)
            tg_d = time.perf_counter() - t0
            rel = float(np.max(np.abs(g.theta - gref.theta)) / np.max(np.abs(gref.theta)))
            out["gradient"] = dict(n=g_n, in_process_s=tg_in, distributed_s=tg_d, overhead_ratio=tg_d / tg_in,
                                   traj_per_s_in_process=g_n / tg_in, traj_per_s_distributed=g_n / tg_d,
                                   max_rel_diff_theta=rel, chunks=g.stats["chunks"])
            log(f"gradient (sum over {g_n}): in-process {tg_in:.2f} s, distributed {tg_d:.2f} s "
                f"(ratio {tg_d / tg_in:.2f}); max rel. difference of dL/dtheta {rel:.1e}")
    finally:
        client.close()
        cluster.close()
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
