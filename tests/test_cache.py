"""The on-disk cache: reuse across processes, concurrency, corruption, unusable directories, the CLI."""
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

BUILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np, sympy as sp, symode
    x, y = sp.symbols("x y"); k = sp.Symbol("k")
    c = float(sys.argv[1]) if len(sys.argv) > 1 else 0.25
    m = symode.ODE([k * x - y * sp.Float(c), x - k * y], states=[x, y], params=[k])
    sol = m.solve([1.0, 0.5], [0.3], [0.0, 1.0], rtol=1e-10, atol=1e-12)
    comp = m.compiled
    print(json.dumps(dict(z=sol.z[-1].tolist(), generated=comp.generated,
                          derived="derive" in comp.timings, hits=int(comp.module.f.cache_hits),
                          path=str(comp.path))))
""")


def run(env, *args, code=BUILD):
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["SYMODE_CACHE_DIR"] = str(tmp_path / "cache")
    return e


def test_second_process_reuses_everything(env, tmp_path):
    first, _ = run(env, "0.125")
    second, _ = run(env, "0.125")
    assert first["generated"] and first["derived"]
    assert not second["generated"] and not second["derived"]  # neither re-derived nor re-printed
    assert second["hits"] >= 1  # Numba loaded the compiled kernel from its disk cache
    assert first["z"] == second["z"]
    assert (pathlib.Path(env["SYMODE_CACHE_DIR"]).stat().st_mode & 0o077) == 0  # private directory


def test_concurrent_builds_leave_one_valid_entry(env):
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, "0.375"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    import json

    zs = [json.loads(o[0].strip().splitlines()[-1])["z"] for o in outs]
    assert all(z == zs[0] for z in zs)
    d = pathlib.Path(env["SYMODE_CACHE_DIR"])
    assert len(list(d.glob("symode_gen_*.py"))) == 1
    assert not list(d.glob("*.tmp"))


def test_truncated_module_is_rebuilt(env):
    first, _ = run(env, "0.5")
    p = pathlib.Path(first["path"])
    p.write_text(p.read_text()[:200])
    again, _ = run(env, "0.5")
    assert again["generated"] and again["z"] == first["z"]


def test_corrupted_numba_cache_is_a_miss(env):
    first, _ = run(env, "0.75")
    name = pathlib.Path(first["path"]).stem
    from symode import cache

    old = os.environ.get("NUMBA_CACHE_DIR")
    # only this model's files (the Numba cache directory may be shared with the rest of the test session)
    files = [f for f in cache._numba_files(name) if f.endswith(".nbi")] if old else []
    files += [str(f) for f in pathlib.Path(env["SYMODE_CACHE_DIR"]).rglob(f"{name}.*.nbi")]
    assert files
    for f in files:
        pathlib.Path(f).write_bytes(b"garbage")
    again, err = run(env, "0.75")
    assert again["z"] == first["z"]


def test_unusable_cache_dir_falls_back_with_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    e = dict(os.environ, SYMODE_CACHE_DIR=str(blocker / "cache"))
    out, err = run(e, "0.625")
    assert "not usable" in err and out["z"]


def test_group_writable_cache_dir_is_refused(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o777)
    e = dict(os.environ, SYMODE_CACHE_DIR=str(d))
    out, err = run(e, "0.875")
    assert "not usable" in err
    assert not list(d.glob("symode_gen_*.py"))


def test_cli_info_and_clear(env):
    run(env, "1.5")
    r = subprocess.run([sys.executable, "-m", "symode", "cache", "info"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and re.search(r"models: [1-9]", r.stdout)
    r = subprocess.run([sys.executable, "-m", "symode", "cache", "clear"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "removed" in r.stdout
    assert not list(pathlib.Path(env["SYMODE_CACHE_DIR"]).glob("symode_gen_*.py"))


def test_key_covers_versions_and_constants(monkeypatch):
    import sympy as sp

    from symode._symbolic.model import SymbolicModel

    x = sp.Symbol("x")
    a = SymbolicModel([2 * x], [x])
    b = SymbolicModel([3 * x], [x])
    assert a.key() != b.key()
    assert a.key("numba=1") != a.key("numba=2")
    # user names do not change the key; the canonical form does
    y = sp.Symbol("lambda")
    assert SymbolicModel([2 * y], [y]).key() == a.key()


def test_no_exec_or_eval_in_symode_source():
    for path in (ROOT / "symode").rglob("*.py"):
        src = path.read_text()
        assert not re.search(r"(?<![\w.])(exec|eval)\(", src), path


def test_strings_are_never_evaluated(tmp_path):
    import sympy as sp

    import symode

    canary = tmp_path / "CANARY"
    evil = f"__import__('os').system('touch {canary}')"
    x = sp.Symbol("x")
    m = symode.ODE([-x], states=[x])
    with pytest.raises(symode.ModelError):
        symode.ODE([evil], states=[x])
    with pytest.raises(symode.ModelError):
        symode.gradient_flow(evil, [x])
    with pytest.raises(symode.ModelError):
        m.value_and_grad(symode.FinalLoss(evil), [1.0], [], [0, 1])
    with pytest.raises(symode.ModelError):
        symode.ObservationLoss(evil, [])
    assert not canary.exists()


def test_library_cache_is_dropped_when_a_library_source_changes(tmp_path):
    """Numba keys a cached loop by its own file only, so a change in another library file that it inlines
    would leave stale machine code (measured: a segfault). The package's cache directory carries a hash of all
    library sources; a mismatch drops the package's cache files before anything loads. Simulated here with a
    stale stamp and a stale-looking cache file in a private NUMBA_CACHE_DIR."""
    code = textwrap.dedent("""
        import json, os
        from numba.core.caching import FunctionCache
        import symode._numeric as N
        path = FunctionCache(N._probe)._cache_path
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "symode-library.stamp"), "w").write("stale")
        for name in ("rk.integrate-1.py311.nbi", "rk.integrate-1.py311.1.nbc", "other.f-1.py311.nbi"):
            open(os.path.join(path, name), "w").write("x")
        N._library_guard()
        left = sorted(os.listdir(path))
        stamp = open(os.path.join(path, "symode-library.stamp")).read()
        print(json.dumps(dict(left=left, fresh=stamp == N.library_digest())))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "nb"))
    out, _ = run(env, code=code)
    assert out["fresh"]
    assert "rk.integrate-1.py311.nbi" not in out["left"] and "rk.integrate-1.py311.1.nbc" not in out["left"]
    assert "other.f-1.py311.nbi" in out["left"]          # files of other packages are left alone


def test_a_cached_model_starts_without_the_emitter_or_the_trainer(env):
    """A warm start loads a cached model and solves without importing what only a cache miss or training
    needs (the code emitter, the symbolic derivatives, the trainer, optim, nn: about 40 ms of imports), and the
    lazily imported names still resolve."""
    code = BUILD + textwrap.dedent("""
        g = m.value_and_grad(x ** 2, [1.0, 0.5], [0.3], [0.0, 1.0])
        lazy = ["symode._codegen.emit", "symode._symbolic.derivatives", "symode._train", "symode.optim", "symode.nn"]
        loaded = [name for name in lazy if name in sys.modules]
        ok = symode.fit.__name__ == "fit" and symode.nn.mlp and symode.optim and "Trainer" in dir(symode)
        print(json.dumps(dict(loaded=loaded, generated=comp.generated, ok=bool(ok))))
    """)
    first, _ = run(env, code=code)   # fills the cache: the model and its loss are generated
    assert first["generated"] and "symode._codegen.emit" in first["loaded"]
    out, _ = run(env, code=code)
    assert out == dict(loaded=[], generated=False, ok=True)
