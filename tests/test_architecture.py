"""The layers of docs/architecture.md, checked: imports go one way (import-linter's layers contract in
pyproject.toml), no module imports itself back through others (no cycle, function-level imports included), and
the only imports inside functions are the listed lazy ones, each with its reason."""
import ast
import pathlib
import subprocess
import sys

import pytest

grimp = pytest.importorskip("grimp")

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "symode"

# (module, imported module) pairs allowed inside a function, and why
LAZY = {
    ("symode", "importlib"): "PEP 562: fit, Trainer, optim, nn, testing and distributed load on first use",
    ("symode._codegen.compiled", "symode._codegen.emit"): "the code emitter is imported only on a cache miss",
    ("symode._codegen.compiled", "symode._symbolic.derivatives"): "derivatives only on a cache miss",
    ("symode._engine.runtime", "symode._symbolic.derivatives"): "a warm start never derives",
    ("symode._engine.losses", "symode._codegen.emit"): "the loss's code emitter only on a cache miss",
    ("symode.ode", "symode._parse"): "the text-format parser only when a model is read from text",
}
# modules whose function-level imports are of external packages only (optional extras, heavy imports)
EXTERNAL_OK = ("numba", "llvmlite", "sympy", "numpy", "dask", "distributed", "tqdm", "scipy", "matplotlib",
               "hypothesis", "warnings", "importlib", "hashlib", "platform", "ctypes", "cloudpickle", "signal",
               "multiprocessing", "threading", "os", "sys", "time", "json", "tempfile", "shutil", "gc", "inspect",
               "pickle", "resource", "psutil", "fcntl", "fractions", "errno", "atexit", "signal", "io", "struct")


def test_import_linter_layers_contract():
    """The layers contract of pyproject.toml ([tool.importlinter]), run by import-linter itself."""
    pytest.importorskip("importlinter")
    exe = pathlib.Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "importlinter.cli"]
    r = subprocess.run(cmd + ["--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan), function-level imports included."""
    index, low, stack, on, out = {}, {}, [], set(), []
    mods = sorted(graph.modules)
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if not w.startswith("symode"):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in mods:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    graph = grimp.build_graph("symode")
    # a package's __init__ importing its own submodules is not a cycle of layers: leave the package nodes out of
    # the edges from children to their parent package (grimp models "import symode.x" as importing "symode")
    assert _cycles(graph) == []


def _function_level_imports():
    found = []
    for path in sorted(PKG.rglob("*.py")):
        mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if mod.endswith(".__init__"):
            mod = mod[: -len(".__init__")]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found += [(mod, a.name, node.lineno) for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = mod.split(".")
                        if not path.name == "__init__.py":
                            base = base[:-1]
                        base = base[: len(base) - (node.level - 1)]
                        target = ".".join(base + ([node.module] if node.module else []))
                    else:
                        target = node.module
                    found.append((mod, target, node.lineno))
    return found


def test_only_listed_imports_inside_functions():
    bad = []
    for mod, target, line in _function_level_imports():
        if not target.startswith("symode"):
            if target.split(".")[0] not in EXTERNAL_OK:
                bad.append(f"{mod}:{line} imports {target} inside a function")
            continue
        if (mod, target) not in LAZY:
            bad.append(f"{mod}:{line} imports {target} inside a function (not a listed lazy import)")
    assert not bad, "\n".join(bad)
