"""Content-addressed on-disk cache of generated modules, written atomically and imported by file path.

Each model becomes one file ``symode_gen_<hash>.py`` in the cache directory. The file is written to a
temporary name and linked into place only if absent, so concurrent processes never see a half-written
module and never replace one another's file (which would invalidate Numba's cache index). The module is
imported from its path under its unique name and registered in ``sys.modules``, which Numba's disk cache
needs. Nothing is ever ``exec``-ed from a string.
"""
from __future__ import annotations

import importlib.util
import os
import stat
import sys
import tempfile
import warnings
from pathlib import Path

ENV_VAR = "SYMODE_CACHE_DIR"
_fallback_dir = None


def default_cache_dir() -> Path:
    """The platform's user cache directory for symode (overridden by ``$SYMODE_CACHE_DIR``)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "symode" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "symode"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "symode"


def _usable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = d.stat()
        if hasattr(os, "getuid"):
            if st.st_uid != os.getuid():
                return False
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return False
        if d.is_symlink():
            return False
        probe = d / f".probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
        return True
    except OSError:
        return False


def cache_dir() -> Path:
    """Return a usable, private cache directory, falling back to a temporary one with a warning."""
    global _fallback_dir
    d = default_cache_dir()
    if _usable(d):
        return d
    if _fallback_dir is None:
        _fallback_dir = Path(tempfile.mkdtemp(prefix="symode-cache-"))
        warnings.warn(f"symode: the cache directory {d} is not usable (not writable, or not private to this "
                      f"user); using a temporary directory for this process instead. Set ${ENV_VAR} to choose "
                      "another location.", RuntimeWarning, stacklevel=3)
    return _fallback_dir


def module_name(key: str) -> str:
    return f"symode_gen_{key[:32]}"


def module_path(key: str) -> Path:
    return cache_dir() / (module_name(key) + ".py")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, keeping an existing identical file untouched."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic create-if-absent
        except FileExistsError:
            if path.read_text(encoding="utf-8") != text:  # corrupt or foreign: replace it atomically
                os.replace(tmp, path)
                tmp = None
        except OSError:  # file systems without hard links
            os.replace(tmp, path)
            tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def read_valid(path: Path, key: str):
    """Return the text of a cached module if it is complete and belongs to ``key``, else None."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if key not in text.split("\n", 1)[0] or not text.rstrip().endswith("# end of generated module"):
        return None
    return text


def import_module(key: str, path: Path):
    """Import the generated module at ``path`` under its unique name (cached in ``sys.modules``)."""
    name = module_name(key)
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    try:
        return _load(name, path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # a corrupt Numba cache entry (EOFError, UnpicklingError, ...) is a miss
        from .. import cache

        warnings.warn(f"symode: the cached compiled code of {name} could not be loaded ({type(e).__name__}: {e}); "
                      "it is removed and rebuilt.", RuntimeWarning, stacklevel=3)
        for f in cache._numba_files(name):
            try:
                os.unlink(f)
            except OSError:
                pass
        return _load(name, path)


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, str(path))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod
