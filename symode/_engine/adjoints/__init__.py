"""The adjoint kinds: one module each, behind one interface.

Each module defines ``explicit(req)`` and ``stiff(req)``, taking an :class:`~.common.AdjointRequest` (checked
inputs, the cotangent callable, the solver config) and returning a :class:`~symode.Gradient` (NaN gradients with
the status in ``stats`` after a failure with ``throw=False``). Adding an adjoint kind is one module plus its
entry in :data:`ADJOINTS` (and its tests). :func:`route` picks the function once per call from the config.
"""
from __future__ import annotations

from ..._errors import InputValidationError
from . import backsolve, checkpoint, discrete, forward
from .common import AdjointRequest as AdjointRequest  # noqa: F401 (the interface of every kind)

ADJOINTS = {"discrete": discrete, "checkpoint": checkpoint, "backsolve": backsolve, "forward": forward}
DEFAULT_ADJOINT = "discrete"


def check(adjoint):
    if not isinstance(adjoint, str) or adjoint not in ADJOINTS:
        raise InputValidationError(f"Unknown adjoint {adjoint!r}; valid: {', '.join(map(repr, ADJOINTS))}.")
    return adjoint


def route(adjoint, cfg):
    """The function computing ``adjoint`` with the method of ``cfg`` (explicit or Rosenbrock)."""
    mod = ADJOINTS[check(adjoint)]
    return mod.explicit if cfg.explicit else mod.stiff
