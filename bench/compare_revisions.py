"""Two versions of symode side by side, interleaved: is a change free of a slowdown?

    python bench/compare_revisions.py BASE_TREE [HEAD_TREE] [--rounds 5] [--problems P1,P2,P3,P6] [--repeats 5]

BASE_TREE and HEAD_TREE are source trees (a ``git worktree`` of the revision to compare with; HEAD_TREE defaults
to this checkout). Each round runs symode's benchmark adapter (bench/peers/symode_.py, the same workload for
both: it uses only the public API) once per tree, alternating which goes first, in fresh interpreters with the
tree on PYTHONPATH and a model cache of its own (warm: a first untimed round fills it). The single-thread rows are
pinned to one CPU; P6 runs on all cores. Reported per row: the median over the rounds of each round's best time,
and HEAD / BASE. The machine's noise shows in the spread column (max/min of the per-round bests, both trees).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTER = os.path.join(HERE, "peers", "symode_.py")


def run_adapter(tree, problems, repeats, threads, cache):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), SYMODE_CACHE_DIR=os.path.join(cache, "models"),
               NUMBA_CACHE_DIR=os.path.join(cache, "numba"))
    cmd = [sys.executable, ADAPTER, "--problems", problems, "--cold", "none", "--repeats", str(repeats),
           "--threads", threads] + (["--pin"] if threads == "1" else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"adapter failed for {tree}:\n{out.stderr[-3000:]}")
    rows = {}
    for line in out.stdout.splitlines():
        d = json.loads(line)
        for r in d.get("rows", []):
            name = f"{d['problem']} {r.get('variant', '')}"
            for key in ("forward_s_min", "grad_s_min"):    # P2's grad row is one training iteration, P6's
                if r.get(key) is not None:                   # forward row one batched solve of its ensemble
                    rows[f"{name} [{key[:-6]}]"] = r[key]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("head", nargs="?", default=os.path.dirname(HERE))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--problems", default="P1,P2,P3,P6")
    a = ap.parse_args()
    single = ",".join(p for p in a.problems.split(",") if p != "P6")
    want_p6 = "P6" in a.problems.split(",")
    trees = {"base": a.base, "head": a.head}
    caches = {k: tempfile.mkdtemp(prefix=f"symode_cmp_{k}_") for k in trees}
    results = {k: {} for k in trees}
    for rnd in range(a.rounds + 1):            # round 0 fills the caches (compiles), untimed
        order = ["base", "head"] if rnd % 2 else ["head", "base"]
        for k in order:
            got = {}
            if single:
                got.update(run_adapter(trees[k], single, a.repeats if rnd else 1, "1", caches[k]))
            if want_p6:
                got.update(run_adapter(trees[k], "P6", a.repeats if rnd else 1, "all", caches[k]))
            if rnd:
                for name, v in got.items():
                    results[k].setdefault(name, []).append(v)
        print(f"round {rnd} done", file=sys.stderr, flush=True)
    print(f"{'row':60s} {'base':>12s} {'head':>12s} {'head/base':>10s} {'spread':>7s}")
    for name in sorted(set(results["base"]) & set(results["head"])):
        b, h = results["base"][name], results["head"][name]
        mb, mh = statistics.median(b), statistics.median(h)
        spread = max(b + h) / min(b + h)
        print(f"{name[:60]:60s} {mb * 1e6:9.1f} us {mh * 1e6:9.1f} us {mh / mb:10.3f} {spread:7.2f}")


if __name__ == "__main__":
    main()
