"""Regression tests of issue 20 (cache and code generation): corrupt, tampered or unimportable entries, failed
builds, huge statements and constants, a full disk, `symode cache clear` and the fallback directory."""
import hashlib
import json
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap

import pytest
import sympy as sp

import symode
from .test_cache import BUILD

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(env, *args, code=BUILD, ok=True, timeout=600):
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=str(ROOT))
    if ok:
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr
    return r


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, SYMODE_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path / "tmp"))


@pytest.fixture(autouse=True)
def _tmpdir(tmp_path):
    (tmp_path / "tmp").mkdir()


def _forge_record(path):
    """Make the record match a changed source (what a corrupt but consistent entry looks like)."""
    rec_path = path.with_suffix(".json")
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else {}   # (no record before issue 20)
    rec["source"] = hashlib.sha256(path.read_bytes()).hexdigest()
    rec_path.write_text(json.dumps(rec))


def test_invalid_utf8_entry_is_rebuilt(env):
    first, _ = run(env, "1.25")
    p = pathlib.Path(first["path"])
    p.write_bytes(b"\xff\xfe\xfa" + p.read_bytes())
    again, err = run(env, "1.25")
    assert again["generated"] and again["z"] == first["z"]
    third, err3 = run(env, "1.25")
    assert not third["generated"] and "invalid" not in err3


def test_line_added_to_a_cached_module_never_runs(env, tmp_path):
    """A line inserted into a cached module (here one that would leave a canary and raise) is detected by the
    digest recorded apart from it: the entry is removed and rebuilt with a warning, the line never runs."""
    first, _ = run(env, "1.75")
    p = pathlib.Path(first["path"])
    canary = tmp_path / "CANARY"
    head, rest = p.read_text().split("\n", 1)
    p.write_text(head + f"\nimport pathlib; pathlib.Path({str(canary)!r}).touch(); raise RuntimeError('boom')\n"
                 + rest)
    again, err = run(env, "1.75")
    assert not canary.exists()
    assert again["generated"] and again["z"] == first["z"] and "removed and rebuilt" in err
    third, err3 = run(env, "1.75")
    assert not third["generated"] and "removed" not in err3


def test_entry_that_fails_to_import_is_removed_and_rebuilt_once(env):
    """An entry whose record matches but whose import raises (SyntaxError here) is removed with its Numba files
    and rebuilt; the next process loads the rebuilt entry without a warning."""
    first, _ = run(env, "2.25")
    p = pathlib.Path(first["path"])
    head, rest = p.read_text().split("\n", 1)
    p.write_text(head + "\ndef broken(:\n" + rest)
    _forge_record(p)
    again, err = run(env, "2.25")
    assert again["generated"] and again["z"] == first["z"]
    assert "could not be loaded" in err and "SyntaxError" in err
    third, err3 = run(env, "2.25")
    assert not third["generated"] and "could not be loaded" not in err3


def test_malicious_numba_index_is_never_unpickled(env, tmp_path):
    """A pickle swapped into the model's Numba index would run code when Numba loads it; files that differ from
    the digests symode recorded are deleted before the import, so it never does."""
    first, _ = run(env, "2.75")
    name = pathlib.Path(first["path"]).stem
    d = pathlib.Path(env["SYMODE_CACHE_DIR"])
    files = list(_walk(d, name))
    if "NUMBA_CACHE_DIR" in os.environ:   # as the subprocess sees it: env inherits NUMBA_CACHE_DIR
        files += _walk(os.environ["NUMBA_CACHE_DIR"], name)
    assert files
    canary = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    for f in files:
        f.write_bytes(pickle.dumps(Evil()))
    again, err = run(env, "2.75")
    assert not canary.exists()
    assert again["z"] == first["z"] and "differ from those recorded" in err


def _walk(root, name):
    for r, _d, fs in os.walk(root):
        for f in fs:
            if f.startswith(name + ".") and f.endswith(".nbi"):
                yield pathlib.Path(r, f)


def test_a_failed_fresh_build_is_not_cached(tmp_path, monkeypatch):
    """A fresh build whose import fails raises ModelError and leaves nothing in the cache (it was cached and
    failed again in every later process)."""
    monkeypatch.setenv("SYMODE_CACHE_DIR", str(tmp_path / "cache"))
    from symode._codegen import loader

    def fail(*args):
        raise TypeError("simulated Numba failure")

    monkeypatch.setattr(loader, "import_module", fail)
    x = sp.Symbol("x")
    m = symode.ODE([-sp.Float(3.125) * x + sp.Float(0.5)], states=[x])
    with pytest.raises(symode.ModelError, match="failed to compile.*simulated Numba failure"):
        m.compiled
    assert not [f for f in (tmp_path / "cache").iterdir() if f.suffix in (".py", ".json")]


DEEP = textwrap.dedent("""
    import sympy as sp, symode, time
    x = sp.Symbol("x")
    m = symode.ODE([-sp.Add(*[sp.sin(sp.Float(i) * x) for i in range(3000)])], states=[x])
    t = time.perf_counter()
    try:
        m.compiled
        print("compiled")
    except symode.ModelTooLargeError as e:
        print("refused", round(time.perf_counter() - t, 1), e)
""")


def test_one_huge_statement_is_refused_before_compiling(env):
    """A 3,000-term sum printed as one line used to pass the guard and fail after ~100 s with RecursionError in
    Numba (and again in every later process); it is refused at once with ModelTooLargeError and advice."""
    r = run(env, code=DEEP, ok=False, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("refused") and "Split long sums" in r.stdout
    assert float(r.stdout.split()[1]) < 20   # (it was compiled for 100 s)
    assert not list(pathlib.Path(env["SYMODE_CACHE_DIR"]).glob("symode_gen_*.py"))


def test_source_check_covers_line_length_and_depth():
    from symode._codegen import size

    long_line = "x = " + " + ".join(["z[0]"] * 12_000) + "\n"          # 84,000 characters
    with pytest.raises(symode.ModelTooLargeError, match="characters"):
        size.check_source(long_line)
    deep = "x = " + " + ".join(["1.5"] * 2500) + "\n"                  # short enough, 2,500 levels deep
    with pytest.raises(symode.ModelTooLargeError, match="levels deep"):
        size.check_source(deep)
    parens = "x = " + "(" * 300 + "1.0" + ")" * 300 + "\n"             # Python refuses 200 nested parentheses
    with pytest.raises(symode.ModelTooLargeError, match="cannot parse"):
        size.check_source(parens)
    size.check_source("x = " + " + ".join(["z[0]"] * 200) + "\n")      # an ordinary long statement passes


def test_huge_integer_constant_is_a_model_error():
    """Refused when the model is declared (the symbolic layer's float64-range check), before any printing; the
    printer's own check (``out of float64 range``) stays as a second line of defence."""
    x = sp.Symbol("x")
    with pytest.raises(symode.ModelError, match=r"10000.*outside the float64 range"):
        symode.ODE([sp.Integer(10) ** 400 * x], states=[x])


NOSPACE = textwrap.dedent("""
    import errno, json, os, sys
    from symode._codegen import loader
    real = loader.write_atomic
    mode = sys.argv[2]
    def full(path, data, replace=True):
        if mode == "all" or str(path).startswith(os.environ["SYMODE_CACHE_DIR"]):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, replace)
    loader.write_atomic = full
""") + BUILD.replace("c = float(sys.argv[1]) if len(sys.argv) > 1 else 0.25", "c = float(sys.argv[1])")


def test_full_cache_disk_falls_back_with_a_warning(env, tmp_path):
    out, err = run(env, "3.25", "cache", code=NOSPACE)
    assert "cannot be written" in err and "No space left" in err
    assert str(tmp_path / "tmp") in out["path"] and out["z"]


def test_full_disk_everywhere_is_a_clear_error(env):
    r = run(env, "3.5", "all", code=NOSPACE, ok=False)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("OSError: [Errno 28]") and "SYMODE_CACHE_DIR" in last and env["SYMODE_CACHE_DIR"] in last


def test_clear_removes_only_what_symode_wrote(env):
    first, _ = run(env, "3.75")
    d = pathlib.Path(env["SYMODE_CACHE_DIR"])
    (d / "__pycache__").mkdir(exist_ok=True)
    mine = [d / "notes.tmp", d / "helper.pyc", d / "symode_gen_myfile.py", d / "__pycache__" / "user.cpython-311.pyc",
            d / "symode_gen_myfile.py.abc.tmp"]
    for f in mine:
        f.write_text("user data")
    r = subprocess.run([sys.executable, "-m", "symode", "cache", "clear"], env=env, capture_output=True, text=True,
                       cwd=str(ROOT))
    assert r.returncode == 0 and "removed 1 cached model" in r.stdout, r.stderr
    assert all(f.exists() for f in mine)
    left = [f.name for f in d.rglob("*") if f.is_file() and f not in mine]
    assert left == [], left
    r = subprocess.run([sys.executable, "-m", "symode", "cache", "info"], env=env, capture_output=True, text=True,
                       cwd=str(ROOT))
    assert "models: 0" in r.stdout


def test_fallback_directory_is_reused_per_user(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    e = dict(os.environ, SYMODE_CACHE_DIR=str(blocker / "cache"), TMPDIR=str(tmp_path / "tmp"))
    first, err1 = run(e, "4.25")
    second, err2 = run(e, "4.25")
    assert "not usable" in err1 and "not usable" in err2
    assert first["generated"] and not second["generated"]        # the second process reused the entry
    dirs = [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("symode-cache-")]
    assert dirs == [f"symode-cache-{os.getuid()}"]
    assert (tmp_path / "tmp" / dirs[0]).stat().st_mode & 0o077 == 0


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX ownership")
def test_unsafe_fallback_directory_is_not_used_and_the_temporary_one_is_removed(tmp_path):
    tmp = tmp_path / "tmp"
    bad = tmp / f"symode-cache-{os.getuid()}"
    bad.mkdir()
    os.chmod(bad, 0o777)
    e = dict(os.environ, SYMODE_CACHE_DIR=str(tmp_path / "file" / "cache"), TMPDIR=str(tmp))
    (tmp_path / "file").write_text("x")
    code = "import json; from symode._codegen import loader; print(json.dumps(dict(path=str(loader.cache_dir()))))"
    out, _ = run(e, code=code)
    assert pathlib.Path(out["path"]) != bad and out["path"].startswith(str(tmp))
    assert not pathlib.Path(out["path"]).exists()                 # removed at exit
    assert sorted(p.name for p in tmp.iterdir()) == [bad.name]


@pytest.mark.parametrize("where", ["emit", "import"])
def test_recursion_error_while_building_is_model_too_large(tmp_path, monkeypatch, where):
    monkeypatch.setenv("SYMODE_CACHE_DIR", str(tmp_path / "cache"))
    from symode._codegen import emit, loader

    def deep(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(*((emit, "emit_module", deep) if where == "emit" else (loader, "import_module", deep)))
    x = sp.Symbol("x")
    m = symode.ODE([-sp.Float(5.125 if where == "emit" else 5.375) * x], states=[x])
    with pytest.raises(symode.ModelTooLargeError, match="recursion limit"):
        m.compiled
    assert not list((tmp_path / "cache").glob("symode_gen_*.py"))


def test_losses_take_the_same_route(tmp_path, monkeypatch):
    """A compiled loss is built like a model: under the lock, with a record of its digests."""
    monkeypatch.setenv("SYMODE_CACHE_DIR", str(tmp_path / "cache"))
    from symode._engine.losses import CompiledLoss

    x, k = sp.symbols("x k")
    m = symode.ODE([-k * x], states=[x], params=[k])
    cl = CompiledLoss(m._rt, (x - sp.Float(0.8125)) ** 2)
    assert cl.path.parent == tmp_path / "cache" and cl.path.with_suffix(".json").exists()
    rec = json.loads(cl.path.with_suffix(".json").read_text())
    assert rec["source"] == hashlib.sha256(cl.path.read_bytes()).hexdigest() and rec["numba"]
