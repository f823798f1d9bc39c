"""Result objects returned by solves and gradients."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _status
from ._errors import IntegrationError


@dataclass
class Solution:
    """The solution of an initial value problem at the requested output times.

    Attributes
    ----------
    t : ndarray, shape (m,)
    z : ndarray, shape (m, n)
        Rows after a failure are NaN (only returned with ``throw=False``).
    stats : dict
        ``nfev``, ``nsteps`` (attempted), ``naccepted``, ``nrejected``, ``method``, ...
    status : int
        0 SUCCESS, 1 MAX_STEPS, 2 DT_MIN, 3 NONFINITE, 4 SINGULAR_MATRIX, 5 MAX_REJECTS, 6 TIME_LIMIT,
        7 ADJOINT_FAILED, 8 CAPACITY (``status_name`` gives the name, ``message`` the advice).
    message : str
    t_reached : float
        The time the integration reached (the final time on success).
    success : bool
        ``status == 0``.
    statuses, t_reached_all : ndarray (B,), batches only
        Each member's status and time reached (``stats["failed"]`` lists the failed members).
    chunks : int, symode.distributed only
        The number of Dask chunks the batch ran in.
    """

    t: np.ndarray
    z: np.ndarray
    stats: dict = field(default_factory=dict)
    status: int = 0
    message: str = ""
    t_reached: float = float("nan")
    # batches: each member's status and time reached; chunks: the number of Dask chunks (symode.distributed)
    statuses: np.ndarray | None = None
    t_reached_all: np.ndarray | None = None
    chunks: int | None = None

    @property
    def success(self):
        return self.status == _status.SUCCESS

    @property
    def status_name(self):
        return _status.NAMES.get(self.status, str(self.status))

    def __repr__(self):
        return (f"Solution(success={self.success}, status={self.status_name}, m={self.t.size}, "
                f"n={self.z.shape[1] if self.z.ndim == 2 else '?'}, nfev={self.stats.get('nfev')})")


@dataclass
class Gradient:
    """Gradients of a loss of the solution.

    Attributes
    ----------
    z0 : ndarray (n,) dL/dz0;  theta : ndarray (p,) dL/dtheta;  t : ndarray (m,) dL/dts (None with grad_t=False)
    value : float
        The loss (value_and_grad; NaN after a plain vjp, which is given no loss).
    stats : dict
        ``forward`` (the solve's stats), ``backward`` (the adjoint pass's), ``steps_recorded``, ...; after a failure
        with ``throw=False``: ``status`` and ``message`` (the gradients are NaN).
    solution : Solution
        The forward solution the gradient was computed on.
    statuses : ndarray (B,), batches only
    """

    z0: np.ndarray
    theta: np.ndarray
    t: np.ndarray
    value: float = float("nan")
    stats: dict = field(default_factory=dict)
    solution: Solution | None = None
    statuses: np.ndarray | None = None   # batches: each member's status

    def __repr__(self):
        t = "None" if self.t is None else f"<{self.t.size} values>"
        return f"Gradient(z0={self.z0!r}, theta={self.theta!r}, t={t})"


def lazy_field(name, build):
    """A result field computed by ``build(obj)`` on first access, then kept (and settable like a plain field)."""
    key = "_lazy_" + name

    def get(self):
        d = self.__dict__
        if key not in d:
            d[key] = build(self)
        return d[key]

    def set(self, v):
        self.__dict__[key] = v

    return property(get, set, doc=f"``{name}``, built on first access")


def step_stats(raw, method_name=None):
    """The ``stats`` dict of a solve from the compiled loops' int64 counters (nfev, nsteps, naccepted, nrejected,
    njev, nlu, ...); the one place where these dicts are built. Without a method name: the backward passes'
    four counters (and njev/nlu where the loop counted them)."""
    st = dict(nfev=int(raw[0]), nsteps=int(raw[1]), naccepted=int(raw[2]), nrejected=int(raw[3]))
    if method_name is not None:
        st.update(njev=int(raw[4]), nlu=int(raw[5]), method=method_name)
    return st


def failure(status, t_reached, max_steps=None, phase=None, solution=None):
    """The IntegrationError of a failed integration (the one place where their messages are written): the status
    name and its message, prefixed by the failed phase (e.g. "The backward (adjoint)") when it is not the solve."""
    msg = _status.message(int(status), t_reached, max_steps)
    text = f"{_status.NAMES.get(int(status), status)}: {msg}"
    if phase:
        text = f"{phase} integration failed: {text}"
    return IntegrationError(text, status=int(status), t=t_reached, solution=solution)


def _step_stats(s):
    return step_stats(s._raw, s._method)


class PreparedSolution(Solution):
    """A successful solve from one of the prepared compiled calls (``model.solve`` with float64 vectors,
    ``value_and_grad_fn``): ``t``, ``z`` and ``t_reached`` set at once, ``stats`` (from the raw counters) and
    ``message`` built when first read: a short solve's Python is a measurable part of its cost. Equal, field for
    field, to the Solution the validating path builds; it pickles as a plain Solution."""

    def __init__(self, t, z, raw_stats, method_name, t_reached):   # not the dataclass's: lazy fields stay unset
        self.t, self.z, self.status, self.t_reached = t, z, _status.SUCCESS, t_reached
        self._raw, self._method = raw_stats, method_name

    stats = lazy_field("stats", _step_stats)
    message = lazy_field("message", lambda s: _status.message(_status.SUCCESS))

    def __reduce__(self):
        return (Solution, (self.t, self.z, self.stats, self.status, self.message, self.t_reached))


class Sensitivities:
    """Forward sensitivities: ``t`` (m,), ``z`` (m, n), ``dz_dz0`` (m, n, n), ``dz_dtheta`` (m, n, p)."""

    def __init__(self, solution, dz_dz0, dz_dtheta):
        self.solution = solution
        self.t, self.z = solution.t, solution.z
        self.dz_dz0, self.dz_dtheta = dz_dz0, dz_dtheta

    def __repr__(self):
        n, p = self.dz_dtheta.shape[1:] if self.dz_dtheta.ndim == 3 else (self.z.shape[-1], 0)
        return f"Sensitivities(success={self.solution.success}, m={self.t.size}, n={n}, p={p})"
