"""Inspect and clear symode's on-disk cache of generated modules (``symode cache info|clear``)."""
from __future__ import annotations

import glob
import os
import shutil

from ._codegen import loader


def _numba_files(name):
    """Numba cache files (index and data) belonging to the generated module ``name``."""
    found = set()
    d = loader.cache_dir()
    found.update(glob.glob(str(d / "__pycache__" / f"{name}.*.nb*")))
    ncd = os.environ.get("NUMBA_CACHE_DIR")
    if ncd and os.path.isdir(ncd):
        # os.walk, not glob("**"): Numba mirrors the source directory's name, which may start with a dot
        for root, _dirs, files in os.walk(ncd):
            for f in files:
                if f.startswith(name + ".") and ".nb" in f:
                    found.add(os.path.join(root, f))
    return sorted(found)


def entries():
    """List the cached models: one dict per generated module (name, path, bytes including Numba's files)."""
    d = loader.cache_dir()
    out = []
    for p in sorted(d.glob("symode_gen_*.py")):
        name = p.stem
        extra = _numba_files(name)
        size = p.stat().st_size + sum(os.path.getsize(f) for f in extra if os.path.exists(f))
        out.append(dict(name=name, path=str(p), bytes=size, numba_files=len(extra)))
    return out


def info():
    """Summary of the cache: its directory, number of models and total size in bytes."""
    e = entries()
    return dict(path=str(loader.cache_dir()), models=len(e), bytes=sum(x["bytes"] for x in e))


def remove_entry(name):
    """Delete one generated module and its Numba cache files."""
    d = loader.cache_dir()
    for f in _numba_files(name):
        try:
            os.unlink(f)
        except OSError:
            pass
    try:
        (d / f"{name}.py").unlink()
    except OSError:
        pass


def clear():
    """Delete every generated module and its Numba cache files; returns the number of models removed."""
    e = entries()
    for x in e:
        remove_entry(x["name"])
    pyc = loader.cache_dir() / "__pycache__"
    if pyc.is_dir():
        shutil.rmtree(pyc, ignore_errors=True)
    for tmp in loader.cache_dir().glob("*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass
    return len(e)
