"""Gradients of losses of ODE solutions: ``vjp`` (one route per call, chosen from the adjoint kind and the
method's kind) and forward ``sensitivities``.

``vjp`` returns dL/dz0, dL/dtheta and dL/dts given cotangent[i] = dL/dz(ts[i]). The adjoint kinds are the
modules of :mod:`symode._engine.adjoints` (what each computes is in its docstring).
"""
from __future__ import annotations

import numpy as np

from .. import _validate as V
from .._errors import InputValidationError
from .._solution import Sensitivities
from . import explicit as ex
from . import stiff as st
from .adjoints import DEFAULT_ADJOINT, AdjointRequest, check, route
from .adjoints.common import nonfinite_gradient
from .adjoints.discrete import FusedLoss, fused
from .batch import is_batch, vjp_batch
from .config import ADJOINT_KEYS, DEFAULTS, SOLVER_KEYS, unknown_keywords
from .runtime import ModelRuntime

_VJP_KEYS = SOLVER_KEYS + ("throw",) + ADJOINT_KEYS + ("reduce", "grad_t")


def vjp(rt: ModelRuntime, z0, theta, ts, cotangent, adjoint=DEFAULT_ADJOINT, method=DEFAULTS.method,
        rtol=DEFAULTS.rtol, atol=DEFAULTS.atol, dt=DEFAULTS.dt, max_steps=DEFAULTS.max_steps, throw=DEFAULTS.throw,
        dt_max=DEFAULTS.dt_max, controller=DEFAULTS.controller, seminorm=True, adjoint_rtol=None, adjoint_atol=None,
        checkpoints=None, time_limit=DEFAULTS.time_limit, reduce=None, grad_t=True, checked=False, **kwargs):
    """See ``ODE.vjp``. ``cotangent`` is an (m, n) array, a FusedLoss (a compiled loss: value_and_grad) or a
    callable ``solution -> (value, cotangent, extra dL/dtheta or None)`` evaluated on the forward pass the
    gradient uses (the value lands in ``Gradient.value``). ``checked``: z0, theta, ts already validated."""
    if kwargs:
        raise unknown_keywords(kwargs, _VJP_KEYS)
    check(adjoint)
    if not checked and is_batch(z0, theta):
        if adjoint != "discrete":
            raise InputValidationError("batched gradients use adjoint='discrete' (the others run per trajectory)")
        cfg = rt.config(method, rtol, atol, dt, max_steps, dt_max, controller, time_limit)
        return vjp_batch(rt, z0, theta, ts, cotangent, cfg, throw, reduce=reduce, grad_t=grad_t)
    if not checked:
        z0, theta = rt.zt(z0, theta)
        ts = V.times(ts)
    n, m = rt.n, ts.size
    cfg = rt.config(method, rtol, atol, dt, max_steps, dt_max, controller, time_limit)
    if isinstance(cotangent, FusedLoss):
        if adjoint == "discrete" and cfg.explicit:   # the common training call: straight to the one compiled call
            return fused(rt, z0, theta, ts, None, cfg, throw, loss=cotangent, grad_t=grad_t)
        cotangent = cotangent.fallback
    elif adjoint == "discrete" and cfg.explicit and not callable(cotangent):
        return fused(rt, z0, theta, ts, V.cotangent(cotangent, m, n), cfg, throw, grad_t=grad_t)
    extra = {}
    if callable(cotangent):
        cot_fn = cotangent

        def get_cot(sol):
            value, c, gth_extra = cot_fn(sol)
            extra["value"], extra["gtheta"] = value, gth_extra
            if not np.isfinite(value):
                raise nonfinite_gradient(float(value))
            return V.cotangent(c, m, n)
    else:
        cot = V.cotangent(cotangent, m, n)

        def get_cot(sol):
            return cot
    req = AdjointRequest(rt, z0, theta, ts, get_cot, cfg, throw, seminorm,
                         cfg.rtol if adjoint_rtol is None else V.tolerance(adjoint_rtol, n, "adjoint_rtol"),
                         cfg.atol if adjoint_atol is None else V.tolerance(adjoint_atol, n, "adjoint_atol"),
                         None if checkpoints is None else V.positive_int(checkpoints, "checkpoints"))
    g = route(adjoint, cfg)(req)
    if "value" in extra:
        g.value = float(extra["value"])
        if extra["gtheta"] is not None and g.theta.size:
            g.theta = g.theta + np.asarray(extra["gtheta"], dtype=float)[: g.theta.size]
    return g


def sensitivities(rt: ModelRuntime, z0, theta, ts, method=DEFAULTS.method, rtol=DEFAULTS.rtol, atol=DEFAULTS.atol,
                  dt=DEFAULTS.dt, max_steps=DEFAULTS.max_steps, throw=DEFAULTS.throw, dt_max=DEFAULTS.dt_max,
                  controller=DEFAULTS.controller, time_limit=DEFAULTS.time_limit):
    """Integrate z together with dz/dz0 and dz/dtheta (forward sensitivity equations)."""
    z0, theta = rt.zt(z0, theta)
    ts = V.times(ts)
    cfg = rt.config(method, rtol, atol, dt, max_steps, dt_max, controller, time_limit)
    solver = ex if cfg.explicit else st
    return Sensitivities(*solver.sensitivities(rt, z0, theta, ts, cfg, throw))
