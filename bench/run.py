"""symode's benchmark suite: symode and its peers on the reference problems P1-P6, in one run.

    python bench/run.py [--problems P1,P3] [--peers scipy,torchdiffeq,diffrax,casadi,jitcode,numbalsoda,limit]
                        [--repeats N] [--out results.json] [--peer-python tool=/path/to/python ...]

symode runs in this process (bench/peers/symode_.py; --symode-subprocess to isolate it); every peer runs in its
own interpreter (bench/peers/<tool>_.py as a subprocess), one after the other so they do not compete for the
cores.  A peer's interpreter: --peer-python tool=PATH, else the environment variable SYMODE_BENCH_PY_<TOOL>
(e.g. SYMODE_BENCH_PY_TORCHDIFFEQ), else this interpreter; a peer whose packages do not import there is skipped
with a message.  A tight-tolerance reference (bench/peers/reference.py: SciPy + SymPy) gives the values every
tool's loss and gradient are checked against; disagreement is flagged in the table, never dropped.

Threads: every row except P6 runs single-threaded (OMP/OpenBLAS/MKL/NumExpr threads 1, XLA single-thread flags,
the process pinned to one CPU unless --no-pin); P6 runs in a separate invocation with all cores (rows say how
many threads).  See bench/README.md for the columns.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_v, "1")      # this process runs symode's single-thread rows (numba threads: P6 only)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import bench_common as C  # noqa: E402   (numpy only)

PEERS = ["scipy", "torchdiffeq", "diffrax", "casadi", "jitcode", "numbalsoda", "limit"]
ADAPTER = {"scipy": "scipy_.py", "torchdiffeq": "torchdiffeq_.py", "diffrax": "diffrax_.py", "casadi": "casadi_.py",
           "jitcode": "jitcode_.py", "numbalsoda": "numbalsoda_.py", "limit": "limit.py",
           "reference": "reference.py", "symode": "symode_.py"}
PROBE_PROBLEMS = ("P2", "P5_n16", "P5_n64")   # symode builds that may take long: probed in a fresh process first
GRAD_KEEP = 64           # gradient entries kept per row in the JSON output (all are used for the checks)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- interpreters and subprocesses


REQUIRED = {"scipy": ["scipy", "sympy"], "torchdiffeq": ["torch", "torchdiffeq", "scipy"],
            "diffrax": ["jax", "diffrax"], "casadi": ["casadi"], "jitcode": ["jitcode", "symengine", "scipy"],
            "numbalsoda": ["numbalsoda", "numba"], "limit": ["numba"], "reference": ["scipy", "sympy"],
            "symode": ["symode", "sympy", "numba"]}


def importable_here(tool):
    """Missing modules of `tool` in this interpreter (a cheap find_spec check, nothing is imported)."""
    return [m for m in REQUIRED[tool] if importlib.util.find_spec(m) is None]


def peer_python(tool, overrides):
    """(python executable or None, where it came from): --peer-python TOOL=PATH, the environment variable
    SYMODE_BENCH_PY_<TOOL>, else this interpreter if the tool's packages are installed here (the reference also
    falls back to SYMODE_BENCH_PY_SCIPY)."""
    if tool in overrides:
        return overrides[tool], "--peer-python"
    var = "SYMODE_BENCH_PY_" + tool.upper()
    if os.environ.get(var):
        return os.environ[var], "env " + var
    missing = importable_here(tool)
    if not missing:
        return sys.executable, "current interpreter"
    if tool == "reference" and os.environ.get("SYMODE_BENCH_PY_SCIPY"):
        return os.environ["SYMODE_BENCH_PY_SCIPY"], "env SYMODE_BENCH_PY_SCIPY"
    return None, "not installed in the current interpreter (missing %s) and %s is not set" % (", ".join(missing),
                                                                                              var)


def child_env(single_thread):
    env = dict(os.environ)
    for k in C.THREAD_ENV:
        env.pop(k, None)
    if single_thread:
        env.update(C.SINGLE_THREAD_ENV)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_adapter(tool, python, args, single_thread, pin_cpu, timeout):
    """Run one adapter; returns (meta, {problem: record}, error).  The child's stderr progress lines ('[tool] ...')
    are echoed; its last 40 stderr lines are kept for error messages."""
    script = os.path.join(HERE, "peers", ADAPTER[tool])
    all_cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    full = set(range(os.cpu_count() or 1))

    def pre():
        if hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(0, {pin_cpu} if pin_cpu is not None else full)
            except OSError:
                if all_cpus:
                    os.sched_setaffinity(0, set(all_cpus))
    cmd = [python, script] + list(args)
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=child_env(single_thread), preexec_fn=pre, cwd=HERE)
    except OSError as e:
        return None, {}, "cannot start %s: %s" % (tool, e)
    tail = []

    def pump():
        for line in p.stderr:
            tail.append(line.rstrip())
            del tail[:-40]
            if line.startswith("[%s]" % tool):
                log("   " + line.rstrip())
    th = threading.Thread(target=pump, daemon=True)
    th.start()
    meta, recs = None, {}
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        for line in p.stdout:
            if not line.startswith("{"):
                continue
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if "meta" in d:
                meta = d["meta"]
            elif "problem" in d:
                recs[d["problem"]] = d
        p.wait()
    finally:
        timer.cancel()
    th.join(timeout=5)
    err = None
    if p.returncode != 0:
        err = "exit code %s%s: %s" % (p.returncode, " (killed after %d s)" % timeout if p.returncode == -9 else "",
                                      " | ".join(tail[-6:])[-900:])
    return meta, recs, err


# ---------------------------------------------------------------- symode in-process


def load_symode_adapter():
    spec = importlib.util.spec_from_file_location("symode_bench_adapter", os.path.join(HERE, "peers", "symode_.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_symode_inprocess(problems, a, pin_cpu):
    """Returns (meta, {problem: record}, error).  P6 runs first, unpinned with all numba threads; then the process's
    main thread is pinned to pin_cpu (like the peers' single-thread invocations) with numba threads = 1."""
    try:
        mod = load_symode_adapter()
    except Exception as e:  # noqa: BLE001
        return None, {}, "symode not importable here (%s: %s)" % (type(e).__name__, str(e)[:300])
    meta = {"tool": "symode", "versions": mod.meta(), "threads": "1 (P6: all)", "in_process": True}
    recs = {}
    try:
        import numba
        nmax = numba.config.NUMBA_NUM_THREADS
    except Exception:  # noqa: BLE001
        numba, nmax = None, 1
    orig_aff = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    # P6 first, unpinned and with all threads (numba's worker threads inherit the affinity of their creator)
    order = [p for p in problems if p == "P6"] + [p for p in problems if p != "P6"]
    pinned = None
    for p in order:
        if p != "P6" and pin_cpu is not None and pinned is None and orig_aff is not None:
            os.sched_setaffinity(0, {pin_cpu})
            pinned = pin_cpu
        if numba is not None:
            numba.set_num_threads(nmax if p == "P6" else 1)
        ctx = C.Ctx(a.repeats, a.variants, "all" if p == "P6" else "1")
        t0 = time.perf_counter()
        log("   [symode] %s ..." % p)
        try:
            rows = mod.PROBLEMS[p](ctx)
            recs[p] = {"problem": p, "tool": "symode", "rows": rows, "wall_s": time.perf_counter() - t0}
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            recs[p] = {"problem": p, "tool": "symode", "rows": [],
                       "error": "%s: %s" % (type(e).__name__, str(e)[:600])}
        log("   [symode] %s done in %.1f s" % (p, time.perf_counter() - t0))
    if numba is not None:
        numba.set_num_threads(nmax)
    if orig_aff is not None:
        os.sched_setaffinity(0, orig_aff)
    meta["pinned_cpu"] = pinned
    return meta, recs, None


# ---------------------------------------------------------------- agreement


def pick_reference(prob, per_tool):
    ref = per_tool.get("reference", {}).get("rows") or []
    if ref:
        return ref[0], "reference"
    for tool in ["symode", "limit"] + PEERS:
        for r in (per_tool.get(tool, {}).get("rows") or []):
            if r.get("loss") is not None or r.get("final_state_first") is not None:
                return r, "%s (%s)" % (tool, r.get("variant"))
    return None, None


def agreement(prob, row, ref):
    """Adds loss_rel_err / grad_rel_err (or P6 state errors) against ref and an 'agree' verdict."""
    tol = C.AGREE_TOL[prob]
    if ref is None:
        return
    if row is ref:
        row["is_reference_row"] = True
        return
    bad = []
    if prob == "P6":
        e1 = C.rel_err(row.get("final_state_first"), ref.get("final_state_first"))
        n = row.get("n_traj")
        ref_states = ref.get("final_states")
        if ref_states is not None and n:
            import numpy as np
            ref_mean = np.asarray(ref_states)[:n].mean(axis=0)
        else:
            ref_mean = ref.get("final_state_mean")
        e2 = C.rel_err(row.get("final_state_mean"), ref_mean)
        row["first_state_rel_err"], row["mean_state_rel_err"] = e1, e2
        for name, e in (("first final state", e1), ("mean final state", e2)):
            if e is not None and e > tol["loss"]:
                bad.append("%s %.1e > %.0e" % (name, e, tol["loss"]))
        checked = e1 is not None or e2 is not None
    else:
        el = C.rel_err(row.get("loss"), ref.get("loss"))
        eg = C.rel_err(row.get("grad"), ref.get("grad")) if row.get("grad") is not None else None
        row["loss_rel_err"], row["grad_rel_err"] = el, eg
        if el is not None and el > tol["loss"]:
            bad.append("loss %.1e > %.0e" % (el, tol["loss"]))
        if eg is not None and tol["grad"] is not None and eg > tol["grad"]:
            bad.append("grad %.1e > %.0e" % (eg, tol["grad"]))
        if row.get("grad") is not None and ref.get("grad") is not None and eg is None:
            bad.append("gradient length %d, reference %d" % (len(row["grad"]), len(ref["grad"])))
        checked = el is not None or eg is not None
    if row.get("check_failed"):
        bad.append("self-check: " + row["check_failed"])
    row["agree"] = None if not checked and not bad else (not bad)
    if bad:
        row["disagreement"] = "; ".join(bad)


# ---------------------------------------------------------------- tables


def ft(v):
    if v is None:
        return "-"
    if v >= 1.0:
        return "%.2f s" % v
    if v >= 1e-3:
        return "%.3g ms" % (v * 1e3)
    return "%.3g µs" % (v * 1e6)


def fr(a, b):
    if a is None or b is None or b <= 0:
        return "-"
    return "%.3g" % (a / b)


def verdict(r):
    if r.get("reference") or r.get("is_reference_row"):
        return "(the reference of this table)"
    a = r.get("agree")
    parts = []
    if r.get("loss_rel_err") is not None:
        parts.append("L %.0e" % r["loss_rel_err"])
    if r.get("grad_rel_err") is not None:
        parts.append("g %.0e" % r["grad_rel_err"])
    if r.get("first_state_rel_err") is not None:
        parts.append("z0 %.0e" % r["first_state_rel_err"])
    if r.get("mean_state_rel_err") is not None:
        parts.append("mean %.0e" % r["mean_state_rel_err"])
    s = ", ".join(parts)
    if a is False:
        return "**DISAGREE** (%s) %s" % (r.get("disagreement", ""), s)
    if a is True:
        return "ok (%s)" % s
    return "not checked" + (" (%s)" % s if s else "")


def problem_table(prob, per_tool, ref_label, clock="wall"):
    L = []
    kf = "forward_s_median" if clock == "wall" else "forward_cpu_s_median"
    kg = "grad_s_median" if clock == "wall" else "grad_cpu_s_median"
    sym_rows = per_tool.get("symode", {}).get("rows") or []
    sym = next((r for r in sym_rows if not r.get("skipped")), None)
    tol = C.AGREE_TOL[prob]
    if prob == "P6":
        L.append("| tool | variant | threads | trajectories | time (median) | traj/s (median) | ratio (symode faster "
                 "if > 1) | agreement |")
        L.append("|---|---|---|---|---|---|---|---|")
        sym_tps = sym.get("traj_per_s_median") if sym else None
        for tool, rec in per_tool.items():
            if tool == "reference":
                continue
            for r in rec.get("rows") or []:
                if r.get("skipped"):
                    L.append("| %s | %s | | | skipped: %s | | | |" % (tool, r.get("variant", ""), r["skipped"]))
                    continue
                tps = r.get("traj_per_s_median")
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    tool, r.get("variant", ""), r.get("threads", ""), r.get("n_traj", ""),
                    ft(r.get("forward_s_median")), "%.0f" % tps if tps else "-",
                    fr(sym_tps, tps) if sym_tps and tps else "-", verdict(r)))
    else:
        extra = " (true dynamics, 1000 pts)" if prob == "P2" else ""
        gextra = " (one training iteration)" if prob == "P2" else ""
        ck = "" if clock == "wall" else " [CPU]"
        L.append("| tool | variant | forward median%s%s | gradient median%s%s | cold | forward ratio | gradient "
                 "ratio | cold ratio | agreement |" % (ck, extra, ck, gextra))
        L.append("|---|---|---|---|---|---|---|---|---|")
        for tool, rec in per_tool.items():
            if tool == "reference":
                continue
            for r in rec.get("rows") or []:
                if r.get("skipped"):
                    L.append("| %s | %s | skipped: %s | | | | | | |" % (tool, r.get("variant", ""), r["skipped"]))
                    continue
                fm, gm, cs = r.get(kf), r.get(kg), r.get("cold_s")
                gtxt = ft(gm) if gm is not None else ("error: " + r["grad_error"][:110] if r.get("grad_error")
                                                      else "n/a")
                ctxt = ft(cs) if cs is not None else "-"
                if r.get("cold_cached_s") is not None:
                    ctxt += " (cached %s)" % ft(r["cold_cached_s"])
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    tool, r.get("variant", ""), ft(fm), gtxt, ctxt,
                    fr(fm, sym.get(kf)) if sym else "-",
                    fr(gm, sym.get(kg)) if sym else "-",
                    fr(cs, sym.get("cold_s")) if sym else "-", verdict(r)))
    for tool, rec in per_tool.items():
        if rec.get("error"):
            L.append("\n**%s failed on %s**: %s" % (tool, prob, rec["error"]))
        if rec.get("skipped"):
            L.append("\n%s: %s" % (tool, rec["skipped"]))
    head = "### %s\n\nAgreement: relative max-norm error of loss (L) and gradient (g) against %s; tolerance L %g, " \
           "g %s.\n" % (prob, ref_label or "nothing (no reference row)", tol["loss"], tol["grad"])
    if prob == "P6":
        head = "### P6\n\nAgreement: first trajectory's final state (z0) and the mean final state over the " \
               "trajectories each row computed, against %s; tolerance %g.\n" % (ref_label, tol["loss"])
    return head + "\n".join(L) + "\n"


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--problems", default="all", help="P1,...,P6 (P5 = all three sizes) or all")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated; 'none' for symode alone")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (>= 5 for quotable "
                                                           "numbers); each repeat loops the call for >= 30 ms")
    ap.add_argument("--out", default="results.json")
    ap.add_argument("--markdown", default=None, help="also write the tables to this file")
    ap.add_argument("--peer-python", action="append", default=[], metavar="TOOL=PATH")
    ap.add_argument("--variants", default="main", choices=["main", "all"],
                    help="'all' adds the secondary variants of each tool (slower)")
    ap.add_argument("--cold", default="P1", help="problems that get fresh-process cold times: list, all or none")
    ap.add_argument("--cold-repeats", type=int, default=1)
    ap.add_argument("--no-symode", action="store_true")
    ap.add_argument("--symode-subprocess", action="store_true", help="run symode as a subprocess too")
    ap.add_argument("--symode-build-timeout", type=int, default=150,
                    help="seconds allowed for one symode model build (ODE() + first solve) before the row is "
                         "reported as a timeout")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--no-pin", action="store_true", help="do not pin single-thread rows to one CPU")
    ap.add_argument("--peer-timeout", type=int, default=1200, help="seconds per peer invocation")
    ap.add_argument("--full-grads", action="store_true", help="keep whole gradient vectors in the JSON output")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="what the tables show: wall-clock medians (default) or process CPU-time medians (steadier "
                         "on a loaded machine; P6 always wall)")
    a = ap.parse_args()

    problems = C.expand_problems(a.problems)
    os.environ["SYMODE_BENCH_BUILD_TIMEOUT"] = str(a.symode_build_timeout)
    peers = [] if a.peers in ("none", "") else [p.strip() for p in a.peers.split(",") if p.strip()]
    for p in peers:
        if p not in PEERS:
            raise SystemExit("unknown peer %r (known: %s)" % (p, ", ".join(PEERS)))
    overrides = {}
    for s in a.peer_python:
        if "=" not in s:
            raise SystemExit("--peer-python wants TOOL=PATH")
        k, v = s.split("=", 1)
        overrides[k.strip().lower()] = v
    cold_set = set(C.PROBLEMS) if a.cold == "all" else set() if a.cold in ("none", "") else \
        set(C.expand_problems(a.cold))
    cold_arg = ",".join(p for p in problems if p in cold_set) or "none"

    t_all = time.perf_counter()
    machine = C.machine_info()
    log("symode benchmark: %s, %d cores; problems %s; peers %s" % (machine["cpu_model"], machine["cpu_count"],
                                                                   ",".join(problems), ",".join(peers) or "-"))
    calib0 = C.calibrate()
    results = {p: {} for p in problems}
    metas, skipped = {}, {}
    pin_cpu = None
    if not a.no_pin and hasattr(os, "sched_getaffinity"):
        pin_cpu = max(os.sched_getaffinity(0))

    def collect(tool, meta, recs, err, source):
        if meta is not None:
            meta = dict(meta)
            meta.pop("pid", None)
            mach = meta.pop("machine", {}) or {}
            inv = {"threads": meta.pop("threads", None), "thread_env": meta.pop("thread_env", None),
                   "pinned_cpu": meta.pop("pinned_cpu", None), "cpu_affinity": mach.get("cpu_affinity"),
                   "loadavg_1_5_15": mach.get("loadavg_1_5_15"), "started": mach.get("date")}
            m = metas.setdefault(tool, {})
            m.update(meta)
            m["python_source"] = source
            if mach.get("python"):
                m["python_version"] = mach["python"]
            m.setdefault("invocations", []).append(inv)
        for p, rec in recs.items():
            if p in results:
                prev = results[p].get(tool)
                if prev and prev.get("rows"):
                    prev["rows"] += rec.get("rows", [])
                else:
                    results[p][tool] = rec
        if err:
            if meta is None and not recs:
                skipped[tool] = err
                log("!! %s skipped: %s" % (tool, err))
            else:
                metas.setdefault(tool, {})["error"] = err
                log("!! %s reported an error: %s" % (tool, err))

    def run_tool(tool, only=None):
        st_problems = [p for p in problems if p != "P6" and (only is None or p in only)]
        mt_problems = [p for p in problems if p == "P6" and (only is None or p in only)]
        py, source = peer_python(tool, overrides)
        if py is None:
            skipped[tool] = source
            log("!! %s skipped: %s" % (tool, source))
            return
        if not shutil.which(py) and not os.path.exists(py):
            skipped[tool] = "interpreter not found (%s)" % source
            log("!! %s skipped: interpreter not found (%s)" % (tool, source))
            return
        log("== %s (%s)" % (tool, source))
        base = ["--repeats", str(a.repeats), "--variants", a.variants, "--cold-repeats", str(a.cold_repeats)]
        if tool == "reference":
            base = ["--cold", "none"]
        if st_problems:
            args = base + ["--problems", ",".join(st_problems), "--threads", "1"]
            if tool not in ("reference",):
                args += ["--cold", cold_arg if tool != "symode" else "none"]
            meta, recs, err = run_adapter(tool, py, args, True, pin_cpu, a.peer_timeout)
            if meta is None and err:
                if "ModuleNotFoundError" in err or "ImportError" in err:
                    err = "not importable with %s: %s" % (source, err.split("|")[-1].strip()[-300:])
            collect(tool, meta, recs, err, source)
            if tool in skipped:
                return
        if mt_problems:
            args = base + ["--problems", ",".join(mt_problems), "--threads", "all", "--cold", "none"]
            meta, recs, err = run_adapter(tool, py, args, False, None, a.peer_timeout)
            collect(tool, meta, recs, err, source)

    # 1. reference values
    if not a.no_reference:
        run_tool("reference")
    # 2. symode
    if not a.no_symode:
        own_cache = not os.environ.get("SYMODE_CACHE_DIR")
        cache_dir = tempfile.mkdtemp(prefix="symode_bench_cache_") if own_cache else None
        if own_cache:
            os.environ["SYMODE_CACHE_DIR"] = cache_dir
        try:
            log("== symode (%s)" % ("subprocess" if a.symode_subprocess else "in-process"))
            import cold_start
            # Large models (P2's MLP, P5) are first built in a fresh process with a hard time limit (a Numba
            # compilation cannot be interrupted in-process).  That measures their cold build with an empty
            # model cache and fills the cache the in-process run then loads from.
            probes, sym_problems = {}, list(problems)
            if not importable_here("symode"):
                sym_problems = []
                for p in problems:
                    if p in PROBE_PROBLEMS:
                        log("   [symode] %s: build probe in a fresh process (limit %d s) ..." % (
                            p, a.symode_build_timeout))
                        r = cold_start._child(p, cache_dir or os.environ["SYMODE_CACHE_DIR"],
                                              timeout=a.symode_build_timeout, env_extra=C.SINGLE_THREAD_ENV,
                                              cpu=pin_cpu)
                        probes[p] = r
                        if "error" in r:
                            why = ("model build + first solve + first gradient exceeded %d s in a fresh process"
                                   % a.symode_build_timeout) if "timed out" in r["error"] else r["error"][-300:]
                            if p == "P2":
                                why += " (MLP built with SymPy directly; this row waits on symode.nn)"
                            results[p]["symode"] = {"problem": p, "tool": "symode", "rows": [
                                {"variant": "dopri5", "skipped": why}]}
                            log("   [symode] %s skipped: %s" % (p, why))
                            continue
                    sym_problems.append(p)
            if a.symode_subprocess:
                run_tool("symode", sym_problems)
            else:
                meta, recs, err = run_symode_inprocess(sym_problems, a, pin_cpu)
                collect("symode", meta, recs, err, "current interpreter (in-process)")
            for p, r in probes.items():
                rows = (results[p].get("symode") or {}).get("rows") or []
                if rows and "error" not in r and not rows[0].get("skipped"):
                    rows[0].update(cold_s=r.get("cold_s"), cold_detail={"empty_cache": r})
            if "symode" not in skipped:
                for p in [p for p in problems if p in cold_set and p in cold_start.COLD_PROBLEMS]:
                    rows = (results[p].get("symode") or {}).get("rows") or []
                    if not rows:
                        continue
                    log("   [symode] cold start %s (empty and filled model cache) ..." % p)
                    pair = cold_start.cold_pair(p, a.cold_repeats, env_extra=C.SINGLE_THREAD_ENV, cpu=pin_cpu)
                    e, f = pair.get("empty", {}), pair.get("filled", {})
                    rows[0].update(cold_s=e.get("cold_s"), cold_cached_s=f.get("cold_s"),
                                   cold_detail={"empty_cache": e, "filled_cache": f})
        finally:
            if own_cache:
                shutil.rmtree(cache_dir, ignore_errors=True)
                os.environ.pop("SYMODE_CACHE_DIR", None)
    # 3. peers, one at a time
    for tool in peers:
        run_tool(tool)

    # agreement, tables
    tables = []
    for p in problems:
        per_tool = results[p]
        ref, ref_label = pick_reference(p, per_tool)
        for tool, rec in per_tool.items():
            for r in rec.get("rows") or []:
                if not r.get("skipped"):
                    agreement(p, r, ref)
        tables.append(problem_table(p, per_tool, ref_label, a.clock))
    for tool, why in skipped.items():
        tables.append("%s skipped: %s\n" % (tool, why))
    text = C.scrub("\n".join(tables))
    print(text)

    # trim what is big, write JSON
    for p in problems:
        for tool, rec in results[p].items():
            for r in rec.get("rows") or []:
                r.pop("final_states", None)
                g = r.get("grad")
                if isinstance(g, list) and not a.full_grads and len(g) > GRAD_KEEP:
                    import numpy as np
                    r["grad_len"] = len(g)
                    r["grad_norm"] = float(np.linalg.norm(g))
                    r["grad"] = g[:GRAD_KEEP]
                    r["grad_truncated"] = True
    out = {"meta": {
        "date": machine["date"], "cpu_model": machine["cpu_model"], "cpu_count": machine["cpu_count"],
        "python": machine["python"], "platform": machine["platform"], "loadavg_start": machine["loadavg_1_5_15"],
        "loadavg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "calibration_start": calib0, "calibration_end": C.calibrate(),
        "threads": {"single_thread_rows": "env %s; %s" % (
            ", ".join("%s=%s" % kv for kv in C.SINGLE_THREAD_ENV.items()),
            "process pinned to one CPU" if pin_cpu is not None else "not pinned"),
            "P6": "all %d cores (thread-limiting env removed; rows give the threads used)" % (os.cpu_count() or 1)},
        "repeats": a.repeats, "timing": "per measurement: one warm-up call, then `repeats` repeats, each looping "
                                        "the call until >= 30 ms; min and median of the per-call means",
        "variants": a.variants, "cold": "fresh interpreter: imports + build + first forward + first gradient "
                                        "(symode: empty model cache; cold_cached_s: filled cache)",
        "agreement_tolerances": C.AGREE_TOL, "tools": metas, "skipped": skipped,
        "total_wall_s": time.perf_counter() - t_all},
        "problems": results, "tables_markdown": text}
    out = C.scrub(json.loads(json.dumps(out, default=C._json_default)))
    with open(a.out, "w") as fh:
        json.dump(out, fh, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(C.scrub(text))
    log("wrote %s (%.0f s in all)" % (a.out, time.perf_counter() - t_all))


if __name__ == "__main__":
    main()
