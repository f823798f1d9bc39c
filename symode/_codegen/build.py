"""The one route from a cache key to an imported generated module, used by models and losses.

``get_or_build(key, emit, precheck)``: key -> lock (this process's threads, then a lock file per entry, so that
concurrent processes compile a new model once) -> the cached source, if its sha256 matches the record symode
wrote beside it -> otherwise the size guard, ``emit()`` (the derivation and printing: only on a miss), an atomic
write -> Numba's cache files of the module checked against the record (unknown or changed files are deleted before
anything unpickles them) -> import (compiled from the verified bytes, never from a ``.pyc``) -> the record updated.

Failures: an entry that is invalid (unreadable, not UTF-8, truncated, changed since symode wrote it) or that fails
to import is removed with all its files and rebuilt once; a fresh build that fails is removed and raises
``ModelError`` (``ModelTooLargeError`` for a ``RecursionError``), so it is never retried from the cache. A cache
directory that cannot be written (full disk, quota, read-only) moves this process to a per-user directory in the
temporary directory with a warning, and if that fails too, raises an ``OSError`` that names both and
``$SYMODE_CACHE_DIR``.

What the record does not cover: it is kept in the same private directory, so it detects corruption and changes
made without it (a line added to a module, a pickle swapped into Numba's index), not someone who can write the
directory and rewrites the record too; that is what the directory's owner and 0700 mode are for. Between the
check and the import, a file could still be replaced by such a writer.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import warnings

from .._errors import ModelError
from . import loader, size

END = "\n# end of generated module\n"
RECORD_VERSION = 1
_lock = threading.RLock()


class Entry:
    """An imported generated module: ``module``, ``path`` (its source), ``key``, ``generated`` (False when it came
    from the cache) and ``timings`` (seconds: derive and emit on a miss, import always)."""

    __slots__ = ("module", "path", "key", "generated", "timings")

    def __init__(self, module, path, key, generated, timings):
        self.module, self.path, self.key, self.generated, self.timings = module, path, key, generated, timings


def _warn(msg):
    warnings.warn("symode: " + msg, RuntimeWarning, stacklevel=4)


def _space_error(e):
    return isinstance(e, OSError) and e.errno in loader.SPACE_ERRNOS


def get_or_build(key, emit, precheck=None):
    """Return the :class:`Entry` of ``key``, loading it from the cache or building it with ``emit(timings)``
    (which returns the module's source without the end marker); ``precheck()`` runs before ``emit`` on a miss
    and may raise ``ModelTooLargeError``."""
    with _lock:
        first = loader.cache_dir()
        try:
            return _get_or_build(first, key, emit, precheck)
        except OSError as e:
            if not _space_error(e):
                raise
            if loader._fallback_dir is not None and loader._fallback_dir == first:
                raise _disk_error(e, first, None) from e
            fb = loader.use_fallback(f"the cache directory {first} cannot be written ({e.strerror or e})")
            try:
                return _get_or_build(fb, key, emit, precheck)
            except OSError as e2:
                if _space_error(e2):
                    raise _disk_error(e2, first, fb) from e2
                raise


def _disk_error(e, d, fb):
    where = f"{d}" + (f" nor in the fallback directory {fb}" if fb is not None and fb != d else "")
    return OSError(e.errno, f"symode cannot write the compiled model to its cache directory: {e.strerror or e} "
                            f"(in {where}). Free some space there (`symode cache clear` removes cached models) or "
                            f"set the environment variable {loader.ENV_VAR} to a writable directory with free space")


@contextlib.contextmanager
def _file_lock(d, name):
    try:
        import fcntl
    except ImportError:   # Windows: threads are serialised; concurrent processes rely on the atomic writes
        yield
        return
    try:
        fd = os.open(d / (name + ".lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # releases the lock


def _read_record(d, name):
    try:
        with open(d / (name + ".json"), "rb") as fh:
            rec = json.loads(fh.read(1 << 20).decode("utf-8"))
        return rec if isinstance(rec, dict) and rec.get("version") == RECORD_VERSION else None
    except (OSError, ValueError):
        return None


def _read_verified(d, name, key):
    """(bytes, None, record) of a valid entry; (None, reason or None when absent/unrecorded, None) otherwise."""
    path = d / (name + ".py")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None, None
    except OSError as e:
        return None, f"it cannot be read ({e})", None
    rec = _read_record(d, name)
    if rec is None:
        return None, None, None   # written by an older symode, or a build that did not finish: rebuilt quietly
    if rec.get("key") != key or rec.get("source") != loader.sha256(data):
        return None, "its content differs from the digest recorded when symode wrote it", None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "it is not valid UTF-8", None
    if key not in text.split("\n", 1)[0] or not text.rstrip().endswith(END.strip()):
        return None, "it is incomplete", None
    return data, None, rec


def _unknown_numba_files(d, name, rec):
    known = rec.get("numba") or {}
    bad = []
    for f in loader.numba_files(d, name):
        try:
            h = loader.sha256(f.read_bytes())
        except OSError:
            continue
        if known.get(str(f)) != h:
            bad.append(f.name)
    return bad


def _write_record(d, name, key, data, old):
    numba = {}
    if old is not None:   # files in other Numba cache directories ($NUMBA_CACHE_DIR set or not) stay known
        numba = {p: h for p, h in (old.get("numba") or {}).items() if os.path.exists(p)}
    for f in loader.numba_files(d, name):
        try:
            numba[str(f)] = loader.sha256(f.read_bytes())
        except OSError:
            pass
    rec = dict(version=RECORD_VERSION, key=key, source=loader.sha256(data), numba=numba)
    if old == rec:
        return
    try:
        loader.write_atomic(d / (name + ".json"), json.dumps(rec, indent=0, sort_keys=True))
    except OSError:
        pass   # without a record the entry is rebuilt next time


def _build(emit, precheck, timings):
    try:
        if precheck is not None:
            precheck()
        text = emit(timings)
        size.check_source(text)
    except RecursionError:
        raise size.too_deep("deriving or printing it exceeded Python's recursion limit") from None
    return (text + END).encode("utf-8")


def _caused_by_recursion(e):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, RecursionError) or "RecursionError" in str(e) or "too many nested" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _compile_error(e):
    if _caused_by_recursion(e):
        return size.too_deep("compiling it exceeded the recursion limit of Python's compiler or Numba")
    msg = str(e)
    if len(msg) > 2000:
        msg = msg[:2000] + " ..."
    return ModelError(f"the generated code of the model failed to compile ({type(e).__name__}: {msg}); nothing "
                      "was cached. This is a bug in symode: please report it with the model.")


def _import(name, path, data, timings):
    t = time.perf_counter()
    mod = loader.import_module(name, path, data)
    timings["import"] = time.perf_counter() - t
    return mod


def _get_or_build(d, key, emit, precheck):
    name = loader.module_name(key)
    path = d / (name + ".py")
    timings = {}
    mod = sys.modules.get(name)
    if mod is not None:
        return Entry(mod, path, key, False, timings)
    with _file_lock(d, name):
        data, why, rec = _read_verified(d, name, key)
        generated = data is None
        if data is None:
            if why:
                _warn(f"the cached module {name} is invalid ({why}); it is removed and rebuilt.")
            loader.remove_entry(d, name)
            data = _build(emit, precheck, timings)
            loader.write_atomic(path, data)
        else:
            bad = _unknown_numba_files(d, name, rec)
            if bad:
                _warn(f"Numba's cache files of {name} differ from those recorded when symode wrote them "
                      f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); they are removed and recompiled.")
                loader.remove_numba_files(d, name)
        try:
            mod = _import(name, path, data, timings)
        except Exception as e:
            loader.remove_entry(d, name)
            rec = None
            if _space_error(e):
                raise
            if generated or _caused_by_recursion(e):   # a rebuild would fail the same way
                raise _compile_error(e) from e
            _warn(f"the cached module {name} could not be loaded ({type(e).__name__}: {str(e)[:300]}); it is "
                  "removed and rebuilt.")
            data = _build(emit, precheck, timings)
            generated = True
            loader.write_atomic(path, data)
            try:
                mod = _import(name, path, data, timings)
            except Exception as e2:
                loader.remove_entry(d, name)
                if _space_error(e2):
                    raise
                raise _compile_error(e2) from e2
        _write_record(d, name, key, data, rec)
    return Entry(mod, path, key, generated, timings)
