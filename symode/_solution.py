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
        return f"Gradient(z0={self.z0!r}, theta={self.theta!r}, t=<{self.t.size} values>)"
