"""The cache directory and the files of one entry: where they are, how they are written, read and imported.

Each model becomes one file ``symode_gen_<hash>.py`` in the cache directory, with a record
``symode_gen_<hash>.json`` (the sha256 of the source and of Numba's cache files of that module, written by
symode) and a lock file ``symode_gen_<hash>.lock``. Files are written to a temporary name and renamed into place,
so concurrent processes never see a half-written file. The module is compiled from the bytes that were verified
(never from a ``.pyc``), under its unique name, and registered in ``sys.modules``, which Numba's disk cache needs.
Nothing is ever evaluated from a string that symode did not generate.

This module is the storage layer: it imports nothing from the rest of symode; ``build.get_or_build`` decides
what to do with an entry, and ``symode.cache`` is the user-facing command line on top.
"""
from __future__ import annotations

import atexit
import errno
import hashlib
import importlib.machinery
import importlib.util
import os
import re
import shutil
import stat
import sys
import tempfile
import warnings
from pathlib import Path

ENV_VAR = "SYMODE_CACHE_DIR"
_fallback_dir = None   # the directory used for the rest of the process once the configured one is not usable

# names that only symode writes: symode_gen_ + 32 hex digits (models) or L + 31 hex digits (losses)
NAME_RE = re.compile(r"symode_gen_(?:[0-9a-f]{32}|L[0-9a-f]{31})")
_OWN_FILE_RE = re.compile(NAME_RE.pattern + r"\.(?:py|json|lock)")
_OWN_TMP_RE = re.compile(NAME_RE.pattern + r"\.(?:py|json)\.[A-Za-z0-9_]+\.tmp")
_OWN_PYCACHE_RE = re.compile(NAME_RE.pattern + r"\.(?:[A-Za-z0-9_]+-\d+\.py\d+(?:\.\d+)?\.nb[ic]|cpython-\d+\.pyc)")
# errors of a full or read-only file system: a cache directory that cannot be written, not a corrupt entry
SPACE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", errno.ENOSPC)}


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
        if d.is_symlink():
            return False
        st = d.stat()
        if hasattr(os, "getuid"):
            if st.st_uid != os.getuid():
                return False
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return False
        probe = d / f".probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
        return True
    except OSError:
        return False


def _user_tag():
    if hasattr(os, "getuid"):
        return str(os.getuid())
    return re.sub(r"[^A-Za-z0-9_]", "_", os.environ.get("USERNAME", "user"))


def fallback_dir() -> Path:
    """One private fallback directory per user in the temporary directory (reused by later processes); a fresh
    one, removed at exit, if that one is not usable (e.g. owned by someone else)."""
    global _fallback_dir
    if _fallback_dir is None:
        d = Path(tempfile.gettempdir()) / f"symode-cache-{_user_tag()}"
        if not _usable(d):
            d = Path(tempfile.mkdtemp(prefix="symode-cache-"))
            atexit.register(shutil.rmtree, str(d), True)
        _fallback_dir = d
    return _fallback_dir


def use_fallback(reason: str) -> Path:
    """Switch this process to the fallback directory with one warning naming ``reason``."""
    first = _fallback_dir is None
    d = fallback_dir()
    if first:
        warnings.warn(f"symode: {reason}; using the directory {d} for this process instead. Set ${ENV_VAR} to "
                      "choose another location.", RuntimeWarning, stacklevel=4)
    return d


def cache_dir() -> Path:
    """Return a usable, private cache directory, falling back to a per-user temporary one with a warning."""
    if _fallback_dir is not None:
        return _fallback_dir
    d = default_cache_dir()
    if _usable(d):
        return d
    return use_fallback(f"the cache directory {d} is not usable (not writable, or not private to this user)")


def module_name(key: str) -> str:
    return f"symode_gen_{key[:32]}"


def module_path(key: str) -> Path:
    return cache_dir() / (module_name(key) + ".py")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data, replace=True) -> None:
    """Write ``data`` (str or bytes) to ``path`` atomically: a temporary file in the same directory, fsynced,
    then renamed into place (``replace=False``: linked only if ``path`` is absent, keeping an existing file)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
            tmp = None
        else:
            try:
                os.link(tmp, path)  # atomic create-if-absent
            except FileExistsError:
                pass
            except OSError:  # file systems without hard links
                os.replace(tmp, path)
                tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def numba_dirs(d: Path):
    """The directories where Numba keeps the cache files of modules in ``d`` (its in-tree ``__pycache__`` and,
    with ``$NUMBA_CACHE_DIR``, the subdirectory Numba derives from the source directory's path)."""
    out = [d / "__pycache__"]
    ncd = os.environ.get("NUMBA_CACHE_DIR")
    if ncd:
        sub = os.path.dirname(os.path.abspath(d / "x.py"))   # numba.core.caching._CacheLocator's rule
        out.append(Path(ncd) / ("_".join([os.path.split(sub)[-1], hashlib.sha1(sub.encode()).hexdigest()])))
    return out


def numba_files(d: Path, name: str):
    """Numba cache files (index and data) of the generated module ``name`` in cache directory ``d``."""
    found = []
    for nd in numba_dirs(d):
        try:
            names = os.listdir(nd)
        except OSError:
            continue
        found += [nd / f for f in names if f.startswith(name + ".") and (f.endswith(".nbi") or f.endswith(".nbc"))]
    return sorted(found)


def _unlink(p):
    try:
        os.unlink(p)
    except OSError:
        pass


def remove_numba_files(d: Path, name: str) -> None:
    for f in numba_files(d, name):
        _unlink(f)


def remove_entry(d: Path, name: str) -> None:
    """Delete one entry: its source, its record and Numba's files (the lock file stays: it may be held)."""
    remove_numba_files(d, name)
    for suffix in (".py", ".json"):
        _unlink(d / (name + suffix))
    sys.modules.pop(name, None)


def own_files(d: Path):
    """Every file in ``d`` (and Numba's directories for it) that symode wrote, by names it alone uses."""
    out = []
    try:
        names = os.listdir(d)
    except OSError:
        names = []
    out += [d / f for f in names if _OWN_FILE_RE.fullmatch(f) or _OWN_TMP_RE.fullmatch(f)]
    for nd in numba_dirs(d):
        try:
            out += [nd / f for f in os.listdir(nd) if _OWN_PYCACHE_RE.fullmatch(f)]
        except OSError:
            pass
    return out


class _VerifiedLoader(importlib.machinery.SourceFileLoader):
    """Compiles the module from the bytes given (those that were verified), never from or into a ``.pyc``."""

    def __init__(self, fullname, path, data):
        super().__init__(fullname, path)
        self._data = data

    def get_code(self, fullname):
        return self.source_to_code(self._data, self.path)


def import_module(name: str, path: Path, data: bytes):
    """Import the generated module ``name`` from ``data`` (the verified content of ``path``)."""
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    loader = _VerifiedLoader(name, str(path), data)
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod
