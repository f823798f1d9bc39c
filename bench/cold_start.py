"""Cold-start times of symode: fresh interpreters timing import + model build + first solve + first gradient,
with three cache states:
  pristine  a fresh SYMODE_CACHE_DIR and a fresh NUMBA_CACHE_DIR: nothing cached, symode's own generic kernels
            compile too (the first run after installing symode);
  empty     a fresh SYMODE_CACHE_DIR: the model's code generation and Numba compilation from scratch, symode's
            generic kernels from Numba's cache (a new model on a machine that has run symode before);
  filled    the same cache directory again (the second run of the same model).

    python bench/cold_start.py                       # P1
    python bench/cold_start.py --problems P1,P2,P5_n64 --repeats 2 --modes empty,filled
    python bench/cold_start.py --modes filled --repeats 3 --floor   # and the floor no warm start goes below

Prints a markdown table (and --out FILE writes the JSON).  Times are measured inside the child from its first
line (imports included); "process wall" adds interpreter start-up and exit.  Single-thread environment as in
bench/run.py.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
ADAPTER = os.path.join(HERE, "peers", "symode_.py")
COLD_PROBLEMS = ("P1", "P2", "P5_n4", "P5_n16", "P5_n64")


def _child(problem, cache_dir, python=None, timeout=1800, env_extra=None, cpu=None):
    env = dict(os.environ)
    env["SYMODE_CACHE_DIR"] = cache_dir
    env.update(env_extra or {})
    t0 = time.perf_counter()
    try:
        pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        p = subprocess.run([python or sys.executable, ADAPTER, "--cold-child", problem], capture_output=True,
                           text=True, env=env, timeout=timeout, preexec_fn=pre)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after %d s" % timeout}
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": "rc=%s: %s" % (p.returncode, (p.stderr or p.stdout)[-1200:])}
    d = json.loads(lines[-1])
    d["process_wall_s"] = wall
    return d


MODES = ("pristine", "empty", "filled")
MODE_TEXT = {"pristine": "none: empty model cache and empty Numba cache (first run after installing symode)",
             "empty": "empty model cache (symode's own kernels already in Numba's cache)",
             "filled": "filled model cache (the second run of the same model)"}


def cold_pair(problem, repeats=1, python=None, timeout=1800, env_extra=None, cpu=None, modes=("empty", "filled")):
    """{mode: {...}} for the modes asked, each the best of `repeats` fresh cache directories:
    'pristine' = a fresh SYMODE_CACHE_DIR and a fresh NUMBA_CACHE_DIR (symode's generic kernels compile too),
    'empty' = a fresh SYMODE_CACHE_DIR, 'filled' = the same directory again after the 'empty' run."""
    runs = {m: [] for m in modes}
    err = None
    for _ in range(max(1, repeats)):
        if "pristine" in modes:
            d = tempfile.mkdtemp(prefix="symode_bench_cache_")
            nd = tempfile.mkdtemp(prefix="symode_bench_numba_")
            try:
                r = _child(problem, d, python, timeout, dict(env_extra or {}, NUMBA_CACHE_DIR=nd), cpu)
                if "error" in r:
                    err = r["error"]
                else:
                    runs["pristine"].append(r)
            finally:
                shutil.rmtree(d, ignore_errors=True)
                shutil.rmtree(nd, ignore_errors=True)
        d = tempfile.mkdtemp(prefix="symode_bench_cache_")
        try:
            for kind in [m for m in ("empty", "filled") if m in modes]:
                r = _child(problem, d, python, timeout, env_extra, cpu)
                if "error" in r:
                    err = r["error"]
                    break
                runs[kind].append(r)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        if err:
            break
    out = {}
    for kind, rs in runs.items():
        if not rs:
            out[kind] = {"error": err or "no run"}
            continue
        best = min(rs, key=lambda r: r["cold_s"])
        out[kind] = dict(best, cold_s_median=statistics.median(r["cold_s"] for r in rs), runs=len(rs))
    return out


FLOOR_CHILD = r"""
import time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import sympy
t2 = time.perf_counter()
import numba
t3 = time.perf_counter()


@numba.njit(cache=True)
def _first(x):
    return x + 1.0


_first(1.0)
t4 = time.perf_counter()
import json
print(json.dumps({"numpy_s": t1 - t0, "sympy_s": t2 - t1, "numba_s": t3 - t2, "numba_first_call_s": t4 - t3,
                  "total_s": t4 - t0}))
"""


def startup_floor(repeats=3, python=None, env_extra=None):
    """What a warm start cannot go below while SymPy and Numba are imported: a fresh interpreter importing
    NumPy, SymPy and Numba and making the first call of a one-line function from Numba's disk cache (which
    initialises Numba's registries, and imports scipy.linalg when SciPy is installed). The first run fills the
    cache; the best of the next `repeats` runs is reported."""
    d = tempfile.mkdtemp(prefix="symode_bench_floor_")
    env = dict(os.environ, NUMBA_CACHE_DIR=d, **(env_extra or {}))
    src = os.path.join(d, "floor_child.py")
    with open(src, "w") as fh:
        fh.write(FLOOR_CHILD)
    runs = []
    try:
        for i in range(repeats + 1):
            p = subprocess.run([python or sys.executable, src], capture_output=True, text=True, env=env, timeout=300)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            if p.returncode != 0 or not lines:
                return {"error": (p.stderr or p.stdout)[-600:]}
            if i > 0:
                runs.append(json.loads(lines[-1]))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return min(runs, key=lambda r: r["total_s"])


def floor_line(r):
    if "error" in r:
        return "start-up floor: failed: %s" % r["error"].splitlines()[-1][:120]
    return ("start-up floor (fresh interpreter, imports + Numba's first cached call; no symode): %.2f s = NumPy %.2f "
            "+ SymPy %.2f + Numba %.2f + Numba's first call %.2f" % (r["total_s"], r["numpy_s"], r["sympy_s"],
                                                                     r["numba_s"], r["numba_first_call_s"]))


def fmt(v):
    return "-" if v is None else "%.2f s" % v


def table(results):
    L = ["| problem | caches | import | build + first solve | first gradient | cold (in process) | "
         "process wall |", "|---|---|---|---|---|---|---|"]
    for p, pair in results.items():
        for kind in [m for m in MODES if m in pair]:
            r = pair.get(kind, {})
            if "error" in r:
                L.append("| %s | %s | failed: %s | | | | |" % (p, MODE_TEXT[kind], r["error"].splitlines()[-1][:120]))
                continue
            L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                p, MODE_TEXT[kind], fmt(r.get("import_s")), fmt(r.get("build_first_solve_s")), fmt(r.get("first_grad_s")),
                fmt(r.get("cold_s")), fmt(r.get("process_wall_s"))))
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default="P1", help="comma-separated, from %s" % ", ".join(COLD_PROBLEMS))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per child process")
    ap.add_argument("--out", default=None, help="write the JSON results here")
    ap.add_argument("--modes", default="pristine,empty,filled",
                    help="which caches: pristine (no model cache, no Numba cache), empty (no model cache), filled")
    ap.add_argument("--floor", action="store_true",
                    help="also time the start-up floor: importing NumPy, SymPy and Numba and Numba's first cached call")
    a = ap.parse_args()
    import bench_common as C
    probs = [p for p in C.expand_problems(a.problems) if p in COLD_PROBLEMS]
    env_extra = dict(C.SINGLE_THREAD_ENV)
    res = {}
    for p in probs:
        print("[cold_start] %s ..." % p, file=sys.stderr, flush=True)
        res[p] = cold_pair(p, a.repeats, timeout=a.timeout, env_extra=env_extra,
                           modes=tuple(m for m in a.modes.split(",") if m in MODES))
    floor = startup_floor(env_extra=env_extra) if a.floor else None
    print(C.scrub(table(res)))
    if floor is not None:
        print("\n" + floor_line(floor))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(C.scrub({"machine": C.machine_info(), "results": res, "startup_floor": floor}), fh, indent=1)


if __name__ == "__main__":
    main()
