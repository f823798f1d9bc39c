"""Validation and conversion of numerical inputs, done in Python before any kernel runs."""
from __future__ import annotations

import numbers

import numpy as np
from numba import njit

from ._errors import InputValidationError


@njit(cache=True, nogil=True)
def _finite_copy(x):
    """A copy of the 1-D array x, or an empty array when an entry is not finite (fast path of the checks)."""
    out = np.empty(x.size)
    for i in range(x.size):
        v = x[i]
        if not np.isfinite(v):
            return np.empty(0)
        out[i] = v
    return out


@njit(cache=True, nogil=True)
def _finite_copies(a, b):
    """Copies of the 1-D arrays a and b, or empty arrays when an entry of either is not finite (one compiled call
    for a model's z and theta)."""
    ca = _finite_copy(a)
    cb = _finite_copy(b)
    if ca.size != a.size or cb.size != b.size:
        return np.empty(0), np.empty(0)
    return ca, cb


_F64 = np.dtype(np.float64)


def _plain(x):
    f = x.flags   # C-contiguous as Numba types it (a size 0 or 1 vector is whatever its strides), and writeable
    return f.c_contiguous and f.writeable


def plain_pair(z, theta, zshape, tshape):
    """True when z and theta are already what the prepared compiled calls take: writeable, C-contiguous float64
    vectors of shapes ``zshape`` and ``tshape`` (anything else, Numba would compile another specialisation for;
    those go through ``pair``). Their finiteness is checked inside the compiled call."""
    return (type(z) is np.ndarray and type(theta) is np.ndarray and z.dtype is _F64 and theta.dtype is _F64
            and z.shape == zshape and theta.shape == tshape and _plain(z) and _plain(theta))


def plain_times(ts):
    """``plain_pair`` for output times: a writeable, C-contiguous float64 vector of at least two entries (finite
    and strictly monotonic is checked inside the compiled call)."""
    return type(ts) is np.ndarray and ts.dtype is _F64 and ts.ndim == 1 and ts.size > 1 and _plain(ts)


def pair(z, theta, n, p, names_z=None, names_theta=None):
    """``vector`` for a model's z (n,) and theta (p,) at once: one compiled check when both are finite float64
    vectors of the right size (the common call), else each through ``vector`` (which names the problem)."""
    if (type(z) is np.ndarray and type(theta) is np.ndarray and z.dtype == np.float64 and theta.dtype == np.float64
            and z.shape == (n,) and theta.shape == (p,)):
        cz, ct = _finite_copies(z, theta)
        if cz.size == n and ct.size == p:
            return cz, ct
    return vector(z, n, "z", names_z), vector(theta, p, "theta", names_theta)


@njit(cache=True, nogil=True)
def _monotonic_copy(x):
    """A copy of x when it is finite and strictly monotonic with at least two entries, else an empty array."""
    m = x.size
    if m < 2:
        return np.empty(0)
    up = x[1] > x[0]
    out = np.empty(m)
    out[0] = x[0]
    if not np.isfinite(x[0]):
        return np.empty(0)
    for i in range(1, m):
        v = x[i]
        if not np.isfinite(v) or (v > x[i - 1]) != up or v == x[i - 1]:
            return np.empty(0)
        out[i] = v
    return out


def vector(x, n, name, names=None):
    """Return `x` as a fresh C-contiguous float64 array of shape (n,), or raise naming the problem."""
    if type(x) is np.ndarray and x.dtype == np.float64 and x.shape == (n,):
        out = _finite_copy(x)  # fast path: a finite float64 vector (copied: kernels get a private array)
        if out.size == n:
            return out
    if isinstance(x, (str, bytes)):
        raise InputValidationError(f"`{name}` must be numeric, got a string")
    try:
        arr = np.array(x, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as e:
        raise InputValidationError(f"`{name}` must be an array of real numbers ({e})") from None
    if np.iscomplexobj(np.asarray(x)):
        raise InputValidationError(f"`{name}` must be real, got complex values")
    if arr.ndim == 0 and n == 1:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.shape[0] != n:
        who = f" ({', '.join(names)})" if names else ""
        raise InputValidationError(f"`{name}` has shape {np.shape(x)} but the model expects {n} entries{who}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputValidationError(f"`{name}`[{bad[0]}] is not finite ({arr[bad[0]]})")
    return np.ascontiguousarray(arr)


def times(ts):
    """Return `ts` as float64 (m,), finite and strictly monotonic (either direction)."""
    if type(ts) is np.ndarray and ts.dtype == np.float64 and ts.ndim == 1 and ts.size > 1:
        out = _monotonic_copy(ts)
        if out.size == ts.size:
            return out
    try:
        arr = np.array(ts, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as e:
        raise InputValidationError(f"`ts` must be an array of real numbers ({e})") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.size == 0:
        raise InputValidationError(f"`ts` must be a non-empty 1-D array, got shape {np.shape(ts)}")
    if not np.all(np.isfinite(arr)):
        raise InputValidationError(f"`ts`[{np.flatnonzero(~np.isfinite(arr))[0]}] is not finite")
    if arr.size > 1:
        dif = np.diff(arr)
        if not (np.all(dif > 0) or np.all(dif < 0)):
            i = int(np.flatnonzero(dif * np.sign(dif[0]) <= 0)[0]) if dif[0] != 0 else 0
            raise InputValidationError(f"`ts` must be strictly monotonic (increasing, or decreasing to integrate "
                                       f"backward); ts[{i}] = {arr[i]} and ts[{i + 1}] = {arr[i + 1]}")
    return np.ascontiguousarray(arr)


def tolerance(x, n, name):
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputValidationError(f"`{name}` must be a positive number or an array of {n}") from None
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise InputValidationError(f"`{name}` must be a scalar or have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InputValidationError(f"`{name}` must be finite and non-negative, got {x}")
    return np.ascontiguousarray(arr)


def tolerances(rtol, atol, n):
    r = tolerance(rtol, n, "rtol")
    a = tolerance(atol, n, "atol")
    if np.any(r <= 0) and np.any(a <= 0):
        raise InputValidationError("`rtol` and `atol` cannot both be zero for a state")
    floor = 100 * np.finfo(float).eps
    if np.any((r < floor) & (r > 0)):
        import warnings

        warnings.warn(f"`rtol` below {floor:.1e} cannot be met in float64; raised to {floor:.1e}", RuntimeWarning,
                      stacklevel=4)
        r = np.maximum(r, floor)
    return r, a


def positive_int(x, name):
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x <= 0:
        raise InputValidationError(f"`{name}` must be a positive integer, got {x!r}")
    return int(x)


def positive_float(x, name, allow_none=True):
    if x is None and allow_none:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InputValidationError(f"`{name}` must be a positive number, got {x!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise InputValidationError(f"`{name}` must be a positive finite number, got {x!r}")
    return v
