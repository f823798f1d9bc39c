"""Result objects returned by solves and gradients."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _status


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
        A code of :mod:`symode._status` (0 = success).
    message : str
    t_reached : float
        The time the integration reached (the final time on success).
    """

    t: np.ndarray
    z: np.ndarray
    stats: dict = field(default_factory=dict)
    status: int = 0
    message: str = ""
    t_reached: float = float("nan")

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
    """Gradients of a loss of the solution: ``z0`` (n,), ``theta`` (p,), ``t`` (m,) and the loss ``value``."""

    z0: np.ndarray
    theta: np.ndarray
    t: np.ndarray
    value: float = float("nan")
    stats: dict = field(default_factory=dict)
    solution: Solution | None = None

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


def _step_stats(s):
    raw = s._raw
    return dict(nfev=int(raw[0]), nsteps=int(raw[1]), naccepted=int(raw[2]), nrejected=int(raw[3]),
                njev=int(raw[4]), nlu=int(raw[5]), method=s._method)


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
