"""Shared problem data, timing and reporting helpers for symode's benchmark suite (bench/).

Every adapter in bench/peers/ imports this module (it only needs numpy), so that all tools integrate exactly
the same problems with exactly the same random data (the reference problems P1-P6: see bench/README.md).

Conventions (all numpy.random.default_rng), identical to the peer anchor scripts the suite was derived from:
  P2  weights: rng = default_rng(0); W1 = rng.normal(0, 0.1, (50, 2)); W2 = rng.normal(0, 0.1, (2, 50));
      b1 = b2 = 0.  Batch start indices: sort(default_rng(0).choice(990, 20, replace=False)).
      Batch time grid: ts[:10] (= ts[s:s+10] - ts[s] for the linspace grid).
      Parameter vector order: W1 (row-major 50x2), b1, W2 (row-major 2x50), b2.
  P5  W = default_rng(0).normal(0, 1/sqrt(n), (n, n)); z0 = ones(n)/sqrt(n).
  P6  u = default_rng(0).uniform(-1, 1, (10000, 4)); theta_k = theta * (1 + 0.1 u_k).
Gradient vector order everywhere: dL/dz0 first, then dL/dtheta (P2: parameters only, P3: k only; P5: W row-major).

Adapter protocol (bench/peers/<tool>.py, run as a script):
  python bench/peers/<tool>.py --problems P1,P4 [--repeats 5] [--variants main|all] [--cold P1|all|none]
                               [--threads 1|all] [--pin]
prints one JSON object per line on stdout: first {"meta": {...}}, then one {"problem": ..., "rows": [...]} per
problem.  Everything else the tools print goes to stderr (stdout's file descriptor is redirected while the
adapter works).  `--check` only imports the tool and prints {"meta": ...}; `--cold-child P1` is the fresh
process used for the cold time.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

# ---------------------------------------------------------------- problem data

P1_THETA = np.array([1.5, 1.0, 3.0, 1.0])
P1_Z0 = np.array([1.0, 1.0])
P1_TS = np.linspace(0.0, 10.0, 101)
P1_TOL = dict(rtol=1e-8, atol=1e-8)

P2_A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
P2_Y0 = np.array([2.0, 0.0])
P2_TS = np.linspace(0.0, 25.0, 1000)
P2_BATCH = 20
P2_BATCH_TIME = 10
P2_HIDDEN = 50
P2_TOL = dict(rtol=1e-7, atol=1e-9)


def p2_params():
    """(W1 (50,2), b1 (50,), W2 (2,50), b2 (2,)) -- 252 parameters."""
    rng = np.random.default_rng(0)
    W1 = rng.normal(0.0, 0.1, (P2_HIDDEN, 2))
    W2 = rng.normal(0.0, 0.1, (2, P2_HIDDEN))
    return W1, np.zeros(P2_HIDDEN), W2, np.zeros(2)


def p2_flat_params():
    return np.concatenate([a.ravel() for a in p2_params()])


def p2_batch_indices():
    return np.sort(np.random.default_rng(0).choice(len(P2_TS) - P2_BATCH_TIME, P2_BATCH, replace=False))


def p2_batch_ts():
    return P2_TS[:P2_BATCH_TIME].copy()


def p2_batch_from_true(true_y):
    """true_y (1000, 2) -> (y0s (20, 2), targets (20, 10, 2))."""
    s = p2_batch_indices()
    return true_y[s].copy(), np.stack([true_y[s + i] for i in range(P2_BATCH_TIME)], axis=1)


P3_K = np.array([0.04, 3e7, 1e4])
P3_Z0 = np.array([1.0, 0.0, 0.0])
P3_TS = np.logspace(-6, 5, 50)
P3_TS[0] = 0.0
P3_TOL = dict(rtol=1e-6, atol=1e-10)

P4_THETA = np.array([10.0, 28.0, 8.0 / 3.0])
P4_Z0 = np.array([1.0, 1.0, 1.0])
P4_TS = np.linspace(0.0, 1.0, 11)
P4_TOL = dict(rtol=1e-10, atol=1e-10)

P5_NS = (4, 16, 64)
P5_TS = np.linspace(0.0, 5.0, 21)
P5_TOL = dict(rtol=1e-8, atol=1e-8)


def p5_data(n):
    W = np.random.default_rng(0).normal(0.0, 1.0 / np.sqrt(n), (n, n))
    z0 = np.ones(n) / np.sqrt(n)
    return W, z0


P6_N = 10000
P6_TOL = dict(rtol=1e-6, atol=1e-6)
P6_T1 = 10.0
P6_TS = np.array([0.0, P6_T1])


def p6_thetas(n=P6_N):
    u = np.random.default_rng(0).uniform(-1.0, 1.0, (P6_N, 4))
    return (P1_THETA[None, :] * (1.0 + 0.1 * u))[:n].copy()


PROBLEMS = ["P1", "P2", "P3", "P4", "P5_n4", "P5_n16", "P5_n64", "P6"]

# agreement tolerances (relative, max-norm: max|a-b| / max|b|) of loss and gradient against the reference row.
# They reflect the integration tolerances of each problem: two correct tools at rtol=1e-8 differ by ~1e-7.
AGREE_TOL = {
    "P1": {"loss": 1e-5, "grad": 1e-5},
    "P2": {"loss": 1e-5, "grad": 1e-3},
    "P3": {"loss": 1e-5, "grad": 1e-2},
    "P4": {"loss": 1e-6, "grad": 1e-6},
    "P5_n4": {"loss": 1e-6, "grad": 1e-5},
    "P5_n16": {"loss": 1e-6, "grad": 1e-5},
    "P5_n64": {"loss": 1e-6, "grad": 1e-5},
    "P6": {"loss": 1e-3, "grad": None},       # "loss" of P6 = final state of trajectory 0 and mean final state
}


def expand_problems(spec):
    """'P1,P5' -> ['P1', 'P5_n4', 'P5_n16', 'P5_n64'];  'all' -> PROBLEMS."""
    if spec in (None, "", "all"):
        return list(PROBLEMS)
    out = []
    for p in spec.split(","):
        p = p.strip()
        if not p:
            continue
        if p == "P5":
            out += ["P5_n4", "P5_n16", "P5_n64"]
        elif p in PROBLEMS:
            out.append(p)
        elif p.startswith("P5_n") or p.startswith("P5n"):
            out.append("P5_n" + p.split("n")[-1])
        else:
            raise SystemExit("unknown problem %r (known: %s)" % (p, ", ".join(PROBLEMS)))
    return [p for p in PROBLEMS if p in out]


# ---------------------------------------------------------------- timing

MIN_REPEAT_S = 0.03


def timeit(fn, repeats=5, min_repeat_s=MIN_REPEAT_S, warmup=2):
    """Call fn() `warmup` times (the first call's time is kept as first_s: it may include compilation; the last
    warm-up call sizes the inner loop), then `repeats` timed repeats; each repeat loops the call until it lasted
    >= min_repeat_s and records the per-call mean.  Returns dict(min, median, cpu_min, cpu_median, first_s,
    repeats, inner, result)."""
    res = None
    first = None
    for _ in range(max(warmup, 1)):
        t0 = time.perf_counter()
        res = fn()
        one = time.perf_counter() - t0
        if first is None:
            first = one
    inner = max(1, int(np.ceil(min_repeat_s / max(one, 1e-7))))
    per, cpu = [], []
    for _ in range(max(repeats, 1)):
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(inner):
            res = fn()
        per.append((time.perf_counter() - t0) / inner)
        cpu.append((time.process_time() - c0) / inner)
    return {"min": float(min(per)), "median": float(statistics.median(per)), "first_s": first,
            "cpu_min": float(min(cpu)), "cpu_median": float(statistics.median(cpu)),
            "repeats": len(per), "inner": inner, "result": res}


def tentry(prefix, tm):
    """Row fields of one timing: <prefix>_s_min / _s_median (wall, per call), _cpu_s_min / _cpu_s_median (process
    CPU time per call, all threads), _repeats, _inner (calls per repeat), _first_s (first call)."""
    return {prefix + "_s_min": tm["min"], prefix + "_s_median": tm["median"],
            prefix + "_cpu_s_min": tm["cpu_min"], prefix + "_cpu_s_median": tm["cpu_median"],
            prefix + "_repeats": tm["repeats"], prefix + "_inner": tm["inner"], prefix + "_first_s": tm["first_s"]}


def rel_err(a, b):
    """max|a - b| / max|b| (None if either is missing or the shapes differ)."""
    if a is None or b is None:
        return None
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape or a.size == 0:
        return None
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


_PATH_RE = None


def scrub(obj):
    """Replace absolute file-system paths inside strings (tracebacks, error messages) by '<path>/basename', so that
    result files written by the suite never record where things live on the machine that ran it."""
    global _PATH_RE
    import re
    if _PATH_RE is None:
        _PATH_RE = re.compile(r"(?<![\w.<>])/(?:[\w.+\-]+/)+([\w.+\-]*)")
    if isinstance(obj, str):
        return _PATH_RE.sub(lambda m: "<path>/" + m.group(1), obj)
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return obj


def tolist(x):
    if x is None:
        return None
    return np.asarray(x, dtype=float).ravel().tolist()


# ---------------------------------------------------------------- machine information


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibrate():
    """Fixed CPU workloads (best of 5, process CPU seconds), recorded with each result set so that runs made
    under different machine load can be compared: pure-Python loop (1e6 iterations), NumPy 256x256 matmul x 20."""
    def py():
        s = 0
        for i in range(1_000_000):
            s += i * i
        return s
    a = np.random.default_rng(0).normal(size=(256, 256))

    def npw():
        b = a
        for _ in range(20):
            b = a @ b
            b /= np.abs(b).max()
        return b
    out = {}
    for name, fn in (("python_loop_1e6_cpu_s", py), ("numpy_matmul256x20_cpu_s", npw)):
        best = 1e9
        for _ in range(5):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        out[name] = best
    return out


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "NUMBA_NUM_THREADS", "XLA_FLAGS")
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "NUMEXPR_NUM_THREADS": "1",
                     "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def machine_info():
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def pin_to_idlest_cpu():
    """Pin the calling thread (and every thread it starts later) to the CPU idlest over the last 0.1 s.
    Returns the CPU index or None where affinity is not supported."""
    if not hasattr(os, "sched_setaffinity"):
        return None

    def idle():
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    parts = line.split()
                    out[int(parts[0][3:])] = int(parts[4]) + int(parts[5])
        return out
    allowed = sorted(os.sched_getaffinity(0))
    try:
        a = idle()
        time.sleep(0.1)
        b = idle()
        cpu = max(allowed, key=lambda c: b.get(c, 0) - a.get(c, 0))
    except (OSError, ValueError, IndexError):
        cpu = allowed[-1]
    os.sched_setaffinity(0, {cpu})
    return cpu


def pkg_versions(names):
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------- adapter main


class Ctx:
    """What a problem function gets: repeats, variant set, thread mode, and the timing helper."""

    def __init__(self, repeats=5, variants="main", threads="1"):
        self.repeats = repeats
        self.variants = variants
        self.threads = threads
        self.all = variants == "all"

    def time(self, fn, repeats=None, min_repeat_s=MIN_REPEAT_S):
        return timeit(fn, repeats=self.repeats if repeats is None else repeats, min_repeat_s=min_repeat_s)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class _StdoutGuard:
    """Keep the real stdout for our JSON lines; send everything else written to fd 1 (C libraries, gcc,
    setuptools, numba warnings) to stderr."""

    def __init__(self):
        sys.stdout.flush()
        self.fd = os.dup(1)
        os.dup2(2, 1)
        self.out = os.fdopen(self.fd, "w", buffering=1)

    def emit(self, obj):
        self.out.write(json.dumps(obj, default=_json_default) + "\n")
        self.out.flush()


def _json_default(o):
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def run_cold_child(script, problem, n=1, env=None, timeout=600, extra_args=()):
    """Fresh interpreter(s) running `script --cold-child problem`; returns min/median of the internal cold time
    (from the first line of the script: imports + build + first forward + first gradient) and the wall time
    including interpreter start-up, plus the child's own breakdown."""
    internal, wall, detail, err = [], [], None, None
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, script, "--cold-child", problem] + list(extra_args),
                               capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            err = "cold child timed out after %d s" % timeout
            break
        wall.append(time.perf_counter() - t0)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            err = "cold child failed (rc=%s): %s" % (p.returncode, (p.stderr or p.stdout)[-1500:])
            break
        detail = json.loads(lines[-1])
        internal.append(detail["cold_s"])
    if not internal:
        return {"cold_error": err}
    return {"cold_s": min(internal), "cold_s_median": statistics.median(internal),
            "cold_process_wall_s": min(wall), "cold_runs": len(internal), "cold_detail": detail}


def adapter_main(tool, script, problems, cold_fns, meta_fn, t_start, t_imported, default_variants="main",
                 cold_env=None):
    """Command-line entry point shared by all peer adapters.

    problems: {problem_key: fn(ctx) -> list of row dicts}; cold_fns: {problem_key: fn() -> dict with loss ...}
    (the fresh-process cold measurement: build + first forward + first gradient); cold_env: optional function
    returning (environment for the cold child, cleanup function)."""
    ap = argparse.ArgumentParser(description="%s adapter of symode's benchmark suite" % tool)
    ap.add_argument("--problems", default="all")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default=default_variants, choices=["main", "all"])
    ap.add_argument("--cold", default="P1", help="problems that get a fresh-process cold time: list, all, none")
    ap.add_argument("--cold-repeats", type=int, default=1)
    ap.add_argument("--threads", default="1", help="1 (single thread) or all (P6 ensemble rows)")
    ap.add_argument("--pin", action="store_true", help="pin the process to one CPU (single-thread rows)")
    ap.add_argument("--check", action="store_true", help="only import the tool and print its meta line")
    ap.add_argument("--cold-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    guard = _StdoutGuard()
    if a.cold_child:
        fn = cold_fns[a.cold_child]
        t0 = time.perf_counter()
        r = fn()
        t1 = time.perf_counter()
        r.update(cold_s=t1 - t_start, import_s=t_imported - t_start, build_first_calls_s=t1 - t0)
        guard.emit(r)
        return
    meta = {"tool": tool, "versions": meta_fn(), "machine": machine_info(), "import_s": t_imported - t_start,
            "threads": a.threads, "thread_env": {k: os.environ.get(k) for k in THREAD_ENV if k in os.environ},
            "pid": os.getpid()}
    if a.check:
        guard.emit({"meta": meta})
        return
    pinned = pin_to_idlest_cpu() if a.pin else None
    meta["pinned_cpu"] = pinned
    guard.emit({"meta": meta})
    ctx = Ctx(a.repeats, a.variants, a.threads)
    cold_set = set(PROBLEMS) if a.cold == "all" else set() if a.cold in ("none", "") else \
        set(expand_problems(a.cold))
    for p in expand_problems(a.problems):
        if p not in problems:
            guard.emit({"problem": p, "tool": tool, "rows": [],
                        "skipped": "%s has no implementation of %s in this suite" % (tool, p)})
            continue
        t0 = time.perf_counter()
        log("[%s] %s ..." % (tool, p))
        try:
            rows = problems[p](ctx)
        except Exception as e:  # noqa: BLE001 -- one failing problem must not stop the others
            import traceback
            traceback.print_exc()
            guard.emit({"problem": p, "tool": tool, "rows": [], "error": "%s: %s" % (type(e).__name__, str(e)[-800:])})
            continue
        if p in cold_set and p in cold_fns and rows and not rows[0].get("skipped"):
            env, cleanup = cold_env() if cold_env else (None, None)
            try:
                cold = run_cold_child(script, p, n=a.cold_repeats, env=env)
            finally:
                if cleanup:
                    cleanup()
            rows[0].update(cold)
        for r in rows:
            r.setdefault("tool", tool)
        guard.emit({"problem": p, "tool": tool, "rows": rows, "wall_s": time.perf_counter() - t0})
        log("[%s] %s done in %.1f s" % (tool, p, time.perf_counter() - t0))
