"""NumPy side of the framework bridges: solver settings prepared once, forward passes and vector-Jacobian products
over arrays with any leading batch dimensions.

Shapes: ``z0`` (..., n), ``theta`` (..., p), ``ts`` (m,), results (..., m, n) where ``...`` is the broadcast of the
leading dimensions of z0 and theta. A batch is one compiled parallel call for explicit methods (``model.solve`` /
``model.vjp`` with a (B, n) / (B, p) batch); the other methods and adjoint kinds loop over the members in Python.

The discrete adjoint of one trajectory keeps the forward pass's records (:func:`record`) so that the backward pass
runs only the reverse sweep (:func:`backward`); every other case computes the gradient with ``model.vjp``, which
solves forward again (for the discrete adjoint of an explicit method inside the same compiled call as the sweep).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _validate as V
from .._engine.adjoints import discrete as _discrete
from .._engine.adjoints.common import AdjointRequest
from .._engine.config import ADJOINT_KEYS, DEFAULTS, SOLVER_KEYS
from .._errors import InputValidationError

ADJOINTS = ("discrete", "checkpoint", "backsolve", "forward")


def _frozen(v):
    """A hashable stand-in for a setting (arrays and dicts by value), or raise TypeError."""
    if isinstance(v, dict):
        return tuple(sorted((k, _frozen(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple, np.ndarray)):
        return ("array", tuple(np.asarray(v, dtype=np.float64).ravel().tolist()), np.shape(v))
    hash(v)
    return v


class Spec:
    """A model with its solver and adjoint settings, checked once (``rt.config`` raises on bad settings)."""

    def __init__(self, model, method=DEFAULTS.method, rtol=DEFAULTS.rtol, atol=DEFAULTS.atol, adjoint="discrete",
                 **kwargs):
        rt = getattr(model, "_rt", None)
        if rt is None:
            raise InputValidationError(f"`model` must be a symode.ODE, got {type(model).__name__}")
        if adjoint not in ADJOINTS:
            raise InputValidationError(f"`adjoint` must be one of {', '.join(map(repr, ADJOINTS))}, got {adjoint!r}")
        unknown = sorted(set(kwargs) - set(SOLVER_KEYS) - set(ADJOINT_KEYS))
        if unknown:
            raise InputValidationError(f"unknown keyword(s) {', '.join(unknown)}; the solver keywords are "
                                       f"{', '.join(SOLVER_KEYS)} and the adjoint's {', '.join(ADJOINT_KEYS)}")
        self.model, self.rt, self.adjoint = model, rt, adjoint
        self.n, self.p = rt.n, rt.p
        solver = dict(method=method, rtol=rtol, atol=atol)
        solver.update((k, v) for k, v in kwargs.items() if k in SOLVER_KEYS)
        self.solve_kw = solver
        self.vjp_kw = dict(solver, **{k: v for k, v in kwargs.items() if k in ADJOINT_KEYS})
        self.cfg = rt.config(*(solver.get(k, getattr(DEFAULTS, k)) for k in SOLVER_KEYS))
        self.explicit = bool(self.cfg.explicit)
        try:
            self.key = (adjoint, _frozen(self.vjp_kw))
        except TypeError:
            self.key = None

    # ------------------------------------------------------------------ shapes
    def batch_shape(self, zshape, tshape):
        """The broadcast leading dimensions of z0 (..., n) and theta (..., p), checked."""
        if len(zshape) == 0 or zshape[-1] != self.n:
            raise InputValidationError(f"`z0` has shape {tuple(zshape)}; expected (..., {self.n})")
        if (len(tshape) == 0 and self.p != 0) or (len(tshape) and tshape[-1] != self.p):
            raise InputValidationError(f"`theta` has shape {tuple(tshape)}; expected (..., {self.p})")
        try:
            return tuple(np.broadcast_shapes(tuple(zshape[:-1]), tuple(tshape[:-1])))
        except ValueError:
            raise InputValidationError(f"the batch dimensions of `z0` {tuple(zshape)} and `theta` {tuple(tshape)} "
                                       "do not broadcast") from None

    @staticmethod
    def times_shape(tshape):
        if len(tshape) != 1 or tshape[0] < 1:
            raise InputValidationError(f"`ts` must be a non-empty 1-D array of output times, got shape {tuple(tshape)}")
        return tshape[0]


def spec(model, method=DEFAULTS.method, rtol=DEFAULTS.rtol, atol=DEFAULTS.atol, adjoint="discrete", **kwargs):
    """The :class:`Spec` of these settings, memoised in the model's runtime when they are hashable (a repeated
    call skips the checks)."""
    rt = getattr(model, "_rt", None)
    try:
        key = (adjoint, _frozen(dict(method=method, rtol=rtol, atol=atol, **kwargs)))
    except TypeError:
        key = None
    if rt is None or key is None:
        return Spec(model, method, rtol, atol, adjoint, **kwargs)
    return rt.memo("bridge.spec", key, lambda: Spec(model, method, rtol, atol, adjoint, **kwargs), size=16)


def _rows(x, full, k):
    """``x`` (..., k) as (B, k) over the batch ``full``, or as (k,) when it has no batch of its own (shared)."""
    if math.prod(x.shape[:-1]) == 1 and x.size == k:
        return np.ascontiguousarray(x.reshape(k))
    return np.ascontiguousarray(np.broadcast_to(x, full + (k,)).reshape(-1, k))


def _member(x, i):
    return x if x.ndim == 1 else x[i]


def solve(spec: Spec, z0, theta, ts):
    """z at the output times, (..., m, n), for float64 arrays; a batch is one compiled parallel call (explicit
    methods) or a loop (Rosenbrock and switching methods)."""
    full = spec.batch_shape(z0.shape, theta.shape)
    model, n, m = spec.model, spec.n, ts.shape[0]
    if not full:
        return model.solve(z0, theta, ts, **spec.solve_kw).z
    B = math.prod(full)
    Z, T = _rows(z0, full, n), _rows(theta, full, spec.p)
    if B == 0:
        return np.zeros(full + (m, n))
    if Z.ndim == 1 and T.ndim == 1:
        z = model.solve(Z, T, ts, **spec.solve_kw).z
        return np.array(np.broadcast_to(z, full + (m, n)))
    if spec.explicit:
        return model.solve(Z, T, ts, **spec.solve_kw).z.reshape(full + (m, n))
    return np.stack([model.solve(_member(Z, i), _member(T, i), ts, **spec.solve_kw).z
                     for i in range(B)]).reshape(full + (m, n))


def vjp(spec: Spec, z0, theta, ts, cot):
    """Per-member gradients (gz0 (..., n), gtheta (..., p), gts (..., m)) over the broadcast batch of z0, theta and
    the cotangent (..., m, n), NOT summed over the batch (the caller reduces to its inputs' shapes). One compiled
    parallel call for a batch with the discrete adjoint of an explicit method (it solves forward again inside
    that call); a Python loop over ``model.vjp`` otherwise."""
    model, n, p, m = spec.model, spec.n, spec.p, ts.shape[0]
    full = tuple(np.broadcast_shapes(spec.batch_shape(z0.shape, theta.shape), cot.shape[:-2]))
    if cot.shape[-2:] != (m, n):
        raise InputValidationError(f"the cotangent has shape {cot.shape}; expected (..., {m}, {n})")
    if not full:
        g = model.vjp(z0, theta, ts, cot, adjoint=spec.adjoint, **spec.vjp_kw)
        return g.z0, g.theta, g.t
    B = math.prod(full)
    if B == 0:
        return np.zeros(full + (n,)), np.zeros(full + (p,)), np.zeros(full + (m,))
    Z, T = _rows(z0, full, n), _rows(theta, full, p)
    C = np.ascontiguousarray(np.broadcast_to(cot, full + (m, n)).reshape(B, m, n))
    if spec.adjoint == "discrete" and spec.explicit:
        if Z.ndim == 1 and T.ndim == 1:      # one shared trajectory, many cotangents: the batch loop needs rows
            Z = np.ascontiguousarray(np.broadcast_to(Z, (B, n)))
        g = model.vjp(Z, T, ts, C, adjoint="discrete", reduce=None, **spec.solve_kw)
        gz, gp, gt = g.z0, g.theta, g.t
    else:
        gs = [model.vjp(_member(Z, i), _member(T, i), ts, C[i], adjoint=spec.adjoint, **spec.vjp_kw)
              for i in range(B)]
        gz, gp, gt = (np.stack([getattr(g, a) for g in gs]) for a in ("z0", "theta", "t"))
    return gz.reshape(full + (n,)), gp.reshape(full + (p,)), gt.reshape(full + (m,))


class Recorded:
    """The discrete adjoint's recorded forward pass of one trajectory (kept for the backward pass)."""

    __slots__ = ("req", "fwd", "sol")

    def __init__(self, req, fwd, sol):
        self.req, self.fwd, self.sol = req, fwd, sol


def forward(spec: Spec, z0, theta, ts):
    """(z (..., m, n), residual): for one trajectory with the discrete adjoint the residual is the recorded forward
    pass (the backward pass then only sweeps); otherwise None (the backward pass calls :func:`vjp`)."""
    if spec.adjoint == "discrete" and z0.ndim == 1 and theta.ndim == 1:
        z0c, thc = spec.rt.zt(z0, theta)
        tsc = V.times(ts)
        req = AdjointRequest(spec.rt, z0c, thc, tsc, None, spec.cfg, True)
        fwd, sol = _discrete.record(req)
        return sol.z, Recorded(req, fwd, sol)
    return solve(spec, z0, theta, ts), None


def backward(spec: Spec, residual, z0, theta, ts, cot):
    """The gradients for the cotangent ``cot`` of :func:`forward`'s output, per member as :func:`vjp`."""
    if isinstance(residual, Recorded) and cot.shape == residual.sol.z.shape:
        g = _discrete.sweep(residual.req, residual.fwd, residual.sol, np.ascontiguousarray(cot, dtype=np.float64))
        return g.z0, g.theta, g.t
    return vjp(spec, z0, theta, ts, cot)


def sum_to(g, shape):
    """Sum a per-member gradient over the dimensions broadcast onto an input of shape ``shape``."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    out = g.sum(axis=axes, keepdims=True)
    return out.reshape(shape)
