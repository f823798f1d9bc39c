"""Validation and conversion of numerical inputs, done in Python before any kernel runs."""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping

import numpy as np
import sympy as sp
from numba import njit

from ._errors import InputValidationError, ModelError


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
_INT64_MAX = np.iinfo(np.int64).max


def real_array(x, name):
    """``x`` as a new float64 ndarray, refusing what a float conversion would silently change or misread:
    complex values (NumPy drops the imaginary part), strings and bytes (``"1e-6"`` would be parsed), booleans,
    dates, and objects that are not real numbers. Raises :class:`InputValidationError` naming ``name``.
    Shape and finiteness are the caller's to check."""
    if type(x) is np.ndarray and x.dtype == np.float64:   # the common case: nothing to refuse
        return np.array(x, copy=True)
    if isinstance(x, (str, bytes)):
        raise InputValidationError(f"`{name}` must be numeric, got a string ({x!r})")
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:        # ragged nesting, ...
        raise InputValidationError(f"`{name}` must be an array of real numbers ({e})") from None
    kind = a.dtype.kind
    if kind == "O":
        for v in a.reshape(-1):
            _real_scalar(v, name)
    elif kind == "c":
        raise InputValidationError(f"`{name}` must be real, got complex values")
    elif kind in "USa":
        raise InputValidationError(f"`{name}` must be numeric, got strings ({a.reshape(-1)[:3].tolist()!r})")
    elif kind == "b":
        raise InputValidationError(f"`{name}` must be numeric, got booleans")
    elif kind not in "fiu":
        raise InputValidationError(f"`{name}` must be an array of real numbers, got dtype {a.dtype}")
    try:
        return np.array(a, dtype=np.float64, copy=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputValidationError(f"`{name}` must be an array of real numbers ({e})") from None


def _real_scalar(v, name):
    """Refuse one entry of an object array (or a scalar option) that is not a real number."""
    if isinstance(v, (str, bytes)):
        raise InputValidationError(f"`{name}` must be numeric, got a string ({v!r})")
    if isinstance(v, (bool, np.bool_)):
        raise InputValidationError(f"`{name}` must be numeric, got a boolean ({v!r})")
    if isinstance(v, numbers.Complex) and not isinstance(v, numbers.Real):
        raise InputValidationError(f"`{name}` must be real, got a complex value ({v!r})")
    if v is None or isinstance(v, (list, tuple, dict, set)):
        raise InputValidationError(f"`{name}` must be an array of real numbers, got an entry {v!r}")
    try:                                        # e.g. a SymPy number: real if it converts to float
        float(v)
    except (TypeError, ValueError, OverflowError):
        raise InputValidationError(f"`{name}` must be real numbers, got an entry {v!r}") from None


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


#: Smallest gap between consecutive output times, in units in the last place (ulps) of the larger of the two
#: times. The integrators refuse a step shorter than 10 ulps of the current time (``min_step`` in
#: ``_numeric/rk.py``: below it, t + h rounds to within a few representable numbers of t, so the step's length
#: and the error estimate are mostly rounding); two output times closer than that cannot be told apart by a step
#: and the solve would end in DT_MIN. Such times are (almost always) a unit or offset mistake in the input, so they
#: are refused here, naming the index, instead of failing inside the integration.
MIN_GAP_ULPS = 10.0


@njit(cache=True, nogil=True)
def _monotonic_copy(x):
    """A copy of x when it is finite and strictly monotonic with at least two entries, its span finite and every
    gap at least ``MIN_GAP_ULPS`` ulps, else an empty array (fast path of ``times``; ``times_problem`` names the
    problem)."""
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
        prev = x[i - 1]
        if not np.isfinite(v) or (v > prev) != up or v == prev:
            return np.empty(0)
        big = max(abs(v), abs(prev))
        if abs(v - prev) < MIN_GAP_ULPS * (np.nextafter(big, np.inf) - big):
            return np.empty(0)
        out[i] = v
    if not np.isfinite(x[m - 1] - x[0]):
        return np.empty(0)
    return out


def vector(x, n, name, names=None):
    """Return `x` as a fresh C-contiguous float64 array of shape (n,), or raise naming the problem."""
    if type(x) is np.ndarray and x.dtype == np.float64 and x.shape == (n,):
        out = _finite_copy(x)  # fast path: a finite float64 vector (copied: kernels get a private array)
        if out.size == n:
            return out
    arr = real_array(x, name)
    if arr.ndim == 0 and n == 1:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.shape[0] != n:
        who = f" ({', '.join(names)})" if names else ""
        raise InputValidationError(f"`{name}` has shape {np.shape(x)} but the model expects {n} entries{who}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputValidationError(f"`{name}`[{bad[0]}] is not finite ({arr[bad[0]]})")
    return np.ascontiguousarray(arr)


def times(ts, name="ts"):
    """Return `ts` as float64 (m,), finite and strictly monotonic (either direction), with a finite span
    ``ts[-1] - ts[0]`` and consecutive times at least ``MIN_GAP_ULPS`` ulps apart (see there)."""
    if type(ts) is np.ndarray and ts.dtype == np.float64 and ts.ndim == 1 and ts.size > 1:
        out = _monotonic_copy(ts)
        if out.size == ts.size:
            return out
    arr = real_array(ts, name)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.size == 0:
        raise InputValidationError(f"`{name}` must be a non-empty 1-D array, got shape {np.shape(ts)}")
    problem = times_problem(arr, name)
    if problem:
        raise InputValidationError(problem)
    return np.ascontiguousarray(arr)


def times_problem(arr, name="ts"):
    """What is wrong with the float64 vector ``arr`` as output times (a message naming the index), or ""."""
    if not np.all(np.isfinite(arr)):
        return f"`{name}`[{np.flatnonzero(~np.isfinite(arr))[0]}] is not finite"
    if arr.size < 2:
        return ""
    with np.errstate(over="ignore", invalid="ignore"):
        dif = np.diff(arr)
        span = arr[-1] - arr[0]
    if not (np.all(dif > 0) or np.all(dif < 0)):
        i = int(np.flatnonzero(dif * np.sign(dif[0]) <= 0)[0]) if dif[0] != 0 else 0
        return (f"`{name}` must be strictly monotonic (increasing, or decreasing to integrate backward); "
                f"{name}[{i}] = {arr[i]} and {name}[{i + 1}] = {arr[i + 1]}")
    if not np.isfinite(span):
        return (f"`{name}` spans {arr[0]:g} .. {arr[-1]:g}: the length of the interval overflows float64; "
                "rescale time")
    big = np.maximum(np.abs(arr[1:]), np.abs(arr[:-1]))
    small = np.flatnonzero(np.abs(dif) < MIN_GAP_ULPS * np.spacing(big))
    if small.size:
        i = int(small[0])
        return (f"`{name}`[{i}] = {float(arr[i])!r} and `{name}`[{i + 1}] = {float(arr[i + 1])!r} are closer than "
                f"float64 can resolve at that magnitude ({MIN_GAP_ULPS:g} ulps = "
                f"{MIN_GAP_ULPS * np.spacing(big[i]):.3g}); "
                "no integration step fits between them. Merge the times or shift/rescale the time axis")
    return ""


def tolerance(x, n, name):
    arr = real_array(x, name)
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
        warnings.warn(f"`rtol` below {floor:.1e} cannot be met in float64; raised to {floor:.1e}", RuntimeWarning,
                      stacklevel=4)
        r = np.maximum(r, floor)
    return r, a


def integer(x, name, low=1, high=_INT64_MAX):
    """``x`` as a Python int in [low, high] (default: a positive int64, the range the compiled loops hold).

    Accepted: Python and NumPy integers, and floats with an integral value (``1e3`` -> 1000: the same number,
    and the engine's option cache, keyed by raw values, treats ``1e3`` and ``1000`` as one key, so accepting
    both keeps the outcome independent of what was called before). Refused: bools, non-integral or non-finite
    floats, strings, complex numbers and anything else, and values outside [low, high] (``2**63`` does not fit
    the int64 of the compiled loops)."""
    what = "a positive integer" if low == 1 else f"an integer >= {low}"
    if isinstance(x, (bool, np.bool_)) or isinstance(x, (str, bytes)):
        raise InputValidationError(f"`{name}` must be {what}, got {x!r}")
    if isinstance(x, numbers.Integral):
        v = int(x)
    elif isinstance(x, (float, np.floating)) and math.isfinite(x) and float(x).is_integer():
        v = int(x)
    else:
        raise InputValidationError(f"`{name}` must be {what}, got {x!r}")
    if v < low or v > high:
        raise InputValidationError(f"`{name}` must be {what} no larger than {high}, got {x!r}" if v > high
                                   else f"`{name}` must be {what}, got {x!r}")
    return v


def positive_int(x, name):
    """A positive int64 (see ``integer``: bools refused, integral floats accepted, at most 2**63 - 1)."""
    return integer(x, name, 1)


def nonnegative_int(x, name):
    """An int64 >= 0 (see ``integer``)."""
    return integer(x, name, 0)


def real_number(x, name):
    """``x`` as a Python float, refusing strings, bools, complex numbers and non-scalars (finiteness unchecked)."""
    if isinstance(x, np.ndarray):
        if x.ndim != 0:
            raise InputValidationError(f"`{name}` must be a number, got an array of shape {x.shape}")
        x = x[()]
    _real_scalar(x, name)
    return float(x)


def positive_float(x, name, allow_none=True):
    """A positive finite float (None passes through when ``allow_none``); strings, bools and complex refused."""
    if x is None and allow_none:
        return None
    v = real_number(x, name)
    if not np.isfinite(v) or v <= 0:
        raise InputValidationError(f"`{name}` must be a positive finite number, got {x!r}")
    return v


def nonnegative_float(x, name, allow_none=True):
    """A finite float >= 0 (None passes through when ``allow_none``)."""
    if x is None and allow_none:
        return None
    v = real_number(x, name)
    if not np.isfinite(v) or v < 0:
        raise InputValidationError(f"`{name}` must be a finite number >= 0, got {x!r}")
    return v


# ------------------------------------------------------------------------------------------- step-size controller

#: Names and defaults of the step-size controller settings, in the order of the engine's ``ctrl`` array
#: (``ctrl = [safety, fac_min, fac_max, beta, time_limit]``); beta's default is the method's (``Method.beta``).
CONTROLLER_KEYS = ("safety", "fac_min", "fac_max", "beta")
CONTROLLER_DEFAULTS = {"safety": 0.9, "fac_min": 0.2, "fac_max": 10.0}
#: Largest PI coefficient accepted. Hairer's DOPRI5/DOP853 codes recommend beta <= 0.1 ("larger values make the
#: step size control more stable"); the I-part exponent 1/(q+1) - 0.75 beta must stay positive for every method
#: (q + 1 = 8 for dop853 gives 0.125 - 0.075 > 0 at beta = 0.1), so 0.1 is a safe documented bound.
CONTROLLER_BETA_MAX = 0.1


def controller(ctrl, method_beta, what="controller"):
    """The validated step-size controller settings ``(safety, fac_min, fac_max, beta)`` from a mapping
    ``ctrl`` (None = all defaults: 0.9, 0.2, 10, ``method_beta``).

    Rules: every value a real finite number (no strings, bools, complex, NaN); ``0 < safety < 1``;
    ``0 < fac_min < 1 < fac_max``; ``0 <= beta <= CONTROLLER_BETA_MAX`` (0.1); unknown keys are named.
    ``what`` names the settings in messages (``controller['safety']``; "GradientFlow": ``GradientFlow(safety)``)."""
    def label(k):
        return f"{what}[{k!r}]" if what == "controller" else f"{what}({k})"

    vals = dict(CONTROLLER_DEFAULTS, beta=float(method_beta))
    if ctrl is not None:
        if not isinstance(ctrl, Mapping):
            raise InputValidationError(f"`controller` must be a dict of {', '.join(CONTROLLER_KEYS)}, got "
                                       f"{type(ctrl).__name__}")
        for k, v in ctrl.items():
            if k not in CONTROLLER_KEYS:
                raise InputValidationError(f"unknown controller setting {k!r}; valid: {', '.join(CONTROLLER_KEYS)}")
            x = real_number(v, label(k))
            if not math.isfinite(x):
                raise InputValidationError(f"`{label(k)}` must be a finite number, got {v!r}")
            vals[k] = x
    safety, fac_min, fac_max, beta = (vals[k] for k in CONTROLLER_KEYS)
    if not 0.0 < safety < 1.0:
        raise InputValidationError(f"`{label('safety')}` must lie in (0, 1), got {safety!r}")
    if not 0.0 < fac_min < 1.0:
        raise InputValidationError(f"`{label('fac_min')}` must lie in (0, 1), got {fac_min!r}")
    if not fac_max > 1.0:
        raise InputValidationError(f"`{label('fac_max')}` must be greater than 1, got {fac_max!r}")
    if not 0.0 <= beta <= CONTROLLER_BETA_MAX:
        raise InputValidationError(f"`{label('beta')}` must lie in [0, {CONTROLLER_BETA_MAX}], got {beta!r}")
    return safety, fac_min, fac_max, beta


# ------------------------------------------------------------------------------------------- batches, cotangents


def batch_array(x, name, width):
    """A batch input (z0 or theta) as a new C-contiguous float64 array (1, width) or (B, width), real and finite;
    the conversion ``_batch._broadcast`` needs (complex, strings, objects refused, naming ``name``)."""
    arr = real_array(x, name)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.size == 0 and width == 0:
        arr = np.zeros((max(arr.shape[0], 1) if arr.ndim == 2 else 1, 0))
    if arr.ndim != 2 or arr.shape[1] != width:
        raise InputValidationError(f"`{name}` has shape {np.shape(x)}; expected ({width},) or (B, {width})")
    if _finite_copy(arr.reshape(-1)).size != arr.size:     # compiled check (NumPy's costs ~2 us)
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InputValidationError(f"`{name}`[{bad[0]}, {bad[1]}] is not finite ({arr[bad[0], bad[1]]})")
    return np.ascontiguousarray(arr)


def batch_pair(z0, theta, n, p, expand=True):
    """z0 and theta as C-contiguous float64 arrays (B, n) and (B, p), checked (real, finite, shapes that
    broadcast). With ``expand=False`` an input without a batch dimension stays one row and the batch size is
    returned as a third value. A drop-in body for ``_batch._broadcast``."""
    Z = batch_array(z0, "z0", n)
    T = batch_array(theta, "theta", p)
    B = max(Z.shape[0], T.shape[0])
    if Z.shape[0] not in (1, B) or T.shape[0] not in (1, B):
        raise InputValidationError(f"batch sizes of `z0` ({Z.shape[0]}) and `theta` ({T.shape[0]}) do not broadcast")
    if not expand:
        return Z, T, B
    if Z.shape[0] != B:
        Z = np.array(np.broadcast_to(Z, (B, n)), dtype=np.float64, order="C", copy=True)
    if T.shape[0] != B:
        T = np.array(np.broadcast_to(T, (B, p)), dtype=np.float64, order="C", copy=True)
    return Z, T


def cotangent(c, m, n, batch=None, name="cotangent"):
    """A cotangent dL/dz(ts) as a new C-contiguous float64 array (m, n), or with ``batch=B`` (m, n) shared or
    (B, m, n) per member; real (complex, strings, objects refused) and finite."""
    C = real_array(c, name)
    shapes = ((m, n),) if batch is None else ((m, n), (batch, m, n))
    if C.shape not in shapes:
        want = " or ".join(str(s) for s in shapes)
        raise InputValidationError(f"`{name}` has shape {C.shape}; expected {want} (len(ts), n_states)")
    if not np.all(np.isfinite(C)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(C))[0])
        raise InputValidationError(f"`{name}`{list(bad)} is not finite ({C[bad]}): a cotangent must be finite "
                                   "(no NaN or inf)")
    return np.ascontiguousarray(C)


# ------------------------------------------------------------------------------------------- losses


def observation_symbols(model_states, model_params, data_symbols, t=None):
    """The data symbols of an ObservationLoss as a tuple, checked against the model: each a ``sympy.Symbol``,
    no duplicates, and none equal to a state, a parameter or the time symbol (a data symbol that is also a
    state would be silently replaced by the data: the loss would no longer depend on the state)."""
    if isinstance(data_symbols, sp.Symbol):
        data_symbols = (data_symbols,)
    if isinstance(data_symbols, (str, bytes)):
        raise ModelError("`data_symbols` must be sympy Symbols, not a string (symode never evaluates strings)")
    ds = tuple(data_symbols)
    for s in ds:
        if not isinstance(s, sp.Symbol):
            raise ModelError(f"data symbol {s!r} must be a sympy.Symbol")
    seen = set()
    for s in ds:
        if s in seen:
            raise ModelError(f"data symbol {s} is listed twice")
        seen.add(s)
    roles = [("state", model_states or ()), ("parameter", model_params or ())]
    if t is not None:
        roles.append(("time symbol", (t,)))
    for role, syms in roles:
        clash = [s for s in ds if s in set(syms)]
        if clash:
            raise ModelError(f"data symbol {clash[0]} is also a {role} of the model: the data would replace it in "
                             "the loss; use a distinct symbol for the observations (e.g. x_obs)")
    return ds


def loss_symbols(model_states, model_params, t, expr, data_symbols=()):
    """Raise ModelError if the loss expression uses symbols that are not the model's states, parameters, time
    or the declared data symbols (checked before anything compiles or travels to a worker)."""
    allowed = set(model_states) | set(model_params) | set(data_symbols) | ({t} if t is not None else set())
    bad = sp.sympify(expr).free_symbols - allowed
    if bad:
        raise ModelError(f"the loss uses undeclared symbol(s) {', '.join(sorted(map(str, bad)))}; it may use "
                         "the model's states, parameters, time and the declared data symbols")


def loss_data(data, m, k, batch=None, name="data"):
    """ObservationLoss data as a float64 array (m, k), or with ``batch=B`` (m, k) shared or (B, m, k) per
    member (a 1-D array is one column when k == 1). Real (complex, strings, objects refused); NaN marks a missing
    observation; +-inf is refused naming its row (it is not "missing": it would make the loss infinite, or be
    skipped like NaN)."""
    D = real_array(data, name)
    if D.ndim == 1 and k == 1:
        D = D.reshape(-1, 1)
    shapes = ((m, k),) if batch is None else ((m, k), (batch, m, k))
    if D.shape not in shapes:
        want = " or ".join(str(s) for s in shapes)
        raise InputValidationError(f"`{name}` has shape {np.shape(data)}; expected {want} (len(ts), number of "
                                   "data symbols)")
    inf = np.isinf(D)
    if inf.any():
        idx = tuple(int(i) for i in np.argwhere(inf)[0])
        row = f"row {idx[-2]}" + (f" of member {idx[0]}" if D.ndim == 3 else "")
        raise InputValidationError(f"`{name}` {row} (column {idx[-1]}) is {D[idx]}; data must be finite, or NaN "
                                   "for a missing observation")
    return np.ascontiguousarray(D)
