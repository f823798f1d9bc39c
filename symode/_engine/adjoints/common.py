"""What every adjoint kind shares: the request it answers and how a gradient is finished or reported failed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ... import _status
from ..._errors import IntegrationError
from ..._numeric import rk
from ..._solution import Gradient, Solution, failure
from .. import explicit as ex
from ..config import SolverConfig
from ..runtime import ModelRuntime


@dataclass
class AdjointRequest:
    """One gradient to compute: checked inputs, the cotangent callable ``get_cot(solution) -> (m, n)`` (evaluated
    on the forward pass the gradient itself uses), the solver settings and the backward pass's settings."""

    rt: ModelRuntime
    z0: np.ndarray
    theta: np.ndarray
    ts: np.ndarray
    get_cot: Callable[[Solution], np.ndarray]
    cfg: SolverConfig
    throw: bool
    seminorm: bool = True
    rtol_b: np.ndarray | None = None     # backward tolerances (the forward ones when None)
    atol_b: np.ndarray | None = None
    checkpoints: int | None = None

    @property
    def sizes(self):
        return self.rt.n, self.rt.p, self.ts.size


def forward(req: AdjointRequest, record=0, stacklevel=6):
    """The forward pass of an explicit method's adjoint: (result, solution, cotangent), the cotangent None after a
    failure (raised instead with ``throw``). A stiffness warning names the caller of ``ODE.vjp`` (``stacklevel``:
    make_solution, here, the adjoint, engine vjp, ODE.vjp, the caller)."""
    fwd = ex.integrate(req.rt, rk.MODE_F, req.z0, req.theta, req.ts, req.cfg, record=record)
    sol = ex.make_solution(req.ts, fwd, req.cfg, req.throw, stacklevel=stacklevel)
    return fwd, sol, (req.get_cot(sol) if sol.success and req.get_cot is not None else None)


def nonfinite_gradient(value=None):
    """The error of a non-finite gradient; with the loss's ``value`` not finite, the loss is named as the cause
    (e.g. log(-x) on the solution), not the adjoint."""
    if value is not None and not np.isfinite(value):
        return IntegrationError(f"the loss is {value} on the solution: it is evaluated outside its domain (log or "
                                "sqrt of a negative number, a division by zero, an overflow); the gradient of a "
                                "non-finite loss does not exist", status=_status.NONFINITE)
    return IntegrationError("the gradient is not finite (overflow in the adjoint)", status=_status.NONFINITE)


def time_grad(rt, zs, theta, ts, cotangent, a0plus):
    """dL/dts[i] = cotangent[i] . f(z(ts[i])) for i > 0, and dL/dts[0] = -a(ts[0]+) . f(z0)."""
    gt = np.empty(ts.size)
    rk.time_grad(rt.kern[0], ts, np.ascontiguousarray(zs), theta, cotangent, a0plus, gt)
    return gt


def finish(req: AdjointRequest, sol, cot, a0plus, gtheta, stats):
    """The Gradient from a(ts[0]+) and dL/dtheta: dL/dz0 and dL/dts added, all checked finite."""
    gz0 = a0plus + cot[0]
    gt = time_grad(req.rt, sol.z, req.theta, req.ts, cot, a0plus)
    if not (np.all(np.isfinite(gz0)) and np.all(np.isfinite(gtheta)) and np.all(np.isfinite(gt))):
        raise nonfinite_gradient()
    return Gradient(z0=gz0, theta=np.asarray(gtheta, dtype=float).copy(), t=gt, stats=stats, solution=sol)


def failed(req: AdjointRequest, sol, status=None):
    """The Gradient of a failed integration (throw=False): NaN gradients, the status and message in stats."""
    n, p, m = req.sizes
    g = Gradient(z0=np.full(n, np.nan), theta=np.full(p, np.nan), t=np.full(m, np.nan), solution=sol)
    g.stats = dict(status=status if status is not None else sol.status, message=sol.message)
    return g


def backward_failed(req: AdjointRequest, sol, res_status, t_reached, phase="The backward (adjoint)"):
    """A failed backward pass: raised with ``throw``, else the failed Gradient with status ADJOINT_FAILED."""
    if res_status == _status.SUCCESS:
        return None
    if req.throw:
        raise failure(res_status, t_reached, req.cfg.max_steps, phase=phase)
    return failed(req, sol, status=_status.ADJOINT_FAILED)


def augmented_tolerances(req: AdjointRequest, lead_rtol=(), lead_atol=()):
    """Tolerances of an augmented backward state [lead..., a (n), g (p)]: the backward ones for a, their largest
    for the parameter quadrature g."""
    n, p, _ = req.sizes
    rtol_b, atol_b = req.rtol_b, req.atol_b
    rt_ = np.concatenate([*lead_rtol, rtol_b, np.full(p, rtol_b.max() if n else 1e-6)])
    at_ = np.concatenate([*lead_atol, atol_b, np.full(p, atol_b.max() if n else 1e-9)])
    return rt_, at_
