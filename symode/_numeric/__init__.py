"""Numerical layer: tableaus, method registry and compiled kernels (numpy + numba only, never sympy).

Numba keys a cached function by its own source file only: a loop that inlines a function from another file
of this package keeps its old machine code when only that other file changes (e.g. ``git pull`` on an
editable install; measured here: a segmentation fault after changing the loss kernels' calling convention in
``losses.py`` while ``batch.py``, which inlines it, stayed untouched). ``_library_guard`` therefore stamps
Numba's cache directory of this package with a hash of all its sources and drops the package's cache files
when the hash changes, before any of its functions is loaded.
"""
import hashlib
import os


def _probe():  # a function of this directory: Numba's cache locator gives its cache path
    pass


def library_digest():
    """SHA-256 of the sources of this package (every .py file, by name and content)."""
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in sorted(f for f in os.listdir(here) if f.endswith(".py")):
        h.update(name.encode())
        with open(os.path.join(here, name), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def _library_guard():
    try:
        from numba.core.caching import FunctionCache

        digest = library_digest()
        path = FunctionCache(_probe)._cache_path
        stamp = os.path.join(path, "symode-library.stamp")
        try:
            with open(stamp) as fh:
                if fh.read().strip() == digest:
                    return
        except OSError:
            pass
        here = os.path.dirname(os.path.abspath(__file__))
        stems = {f[:-3] for f in os.listdir(here) if f.endswith(".py")}
        if os.path.isdir(path):
            for f in os.listdir(path):
                if f.split(".", 1)[0] in stems and (f.endswith(".nbi") or f.endswith(".nbc")):
                    try:
                        os.remove(os.path.join(path, f))
                    except OSError:
                        pass
        os.makedirs(path, exist_ok=True)
        tmp = f"{stamp}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(digest)
        os.replace(tmp, stamp)
    except Exception:  # noqa: BLE001  (an unwritable or unusual cache location: Numba's own behaviour)
        pass


_library_guard()
