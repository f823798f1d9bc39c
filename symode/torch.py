"""symode models inside PyTorch programs (extra ``symode[torch]``): ``odeint`` and ``ODELayer``.

    zs = symode.torch.odeint(model, z0, theta, ts, method="dopri5", rtol=1e-8, atol=1e-8, adjoint="discrete")
    layer = symode.torch.ODELayer(model, ts, theta=theta0)      # nn.Module; theta is an nn.Parameter

``z0`` (..., n), ``theta`` (..., p) and ``ts`` (m,) are tensors (or NumPy arrays / sequences); the result is a
tensor (..., m, n), differentiable in z0, theta and ts (every adjoint kind gives dL/dts). Leading batch dimensions
broadcast as in ``model.solve``; a batch is one compiled parallel call forward and one backward (explicit
methods, discrete adjoint; the backward call solves forward again). symode computes in float64: float32 (and
float16/bfloat16) inputs are converted, and the result has the promoted floating dtype of z0 and theta (float64
for NumPy inputs). CUDA tensors are copied to the host and the result copied back (one device-host transfer each
way per call, forward and backward). Errors are symode's own (``InputValidationError`` is a ValueError,
``IntegrationError`` a RuntimeError). See docs/bridges.md.
"""
from __future__ import annotations

import numpy as np
import torch

from ._engine.config import DEFAULTS
from ._errors import InputValidationError
from .bridges import core

__all__ = ["odeint", "ODELayer"]

_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _tensor(x, name):
    """``x`` as a tensor, its floating dtype checked (a NumPy array or sequence becomes float64, no copy)."""
    if isinstance(x, torch.Tensor):
        if x.dtype not in _FLOATS:
            raise TypeError(f"`{name}` must be a floating-point tensor (float64, or float32 converted to float64), "
                            f"got {x.dtype}")
        return x
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be a tensor or an array of real numbers ({e})") from None
    return torch.from_numpy(arr)


def _host(x):
    """float64 on the CPU (differentiable: autograd copies the gradient back to x's device and dtype)."""
    if x.device.type != "cpu" or x.dtype != torch.float64:
        return x.to(device="cpu", dtype=torch.float64)
    return x


def _array(x):
    return x.detach().numpy()


class _ODEFunction(torch.autograd.Function):
    """z(ts) of a symode model; backward = symode's compiled vector-Jacobian product."""

    @staticmethod
    def forward(ctx, spec, z0, theta, ts):
        z, th, t = _array(z0), _array(theta), _array(ts)
        zs, residual = core.forward(spec, z, th, t)
        ctx.spec, ctx.residual = spec, residual
        ctx.save_for_backward(z0, theta, ts)    # torch's check that they are not modified in place before backward
        return torch.from_numpy(np.ascontiguousarray(zs))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        z, th, t = (_array(x) for x in ctx.saved_tensors)
        cot = np.ascontiguousarray(_array(grad_out), dtype=np.float64)
        gz, gp, gt = core.backward(ctx.spec, ctx.residual, z, th, t, cot)
        need = ctx.needs_input_grad
        return (None,
                torch.from_numpy(np.ascontiguousarray(core.sum_to(gz, z.shape))) if need[1] else None,
                torch.from_numpy(np.ascontiguousarray(core.sum_to(gp, th.shape))) if need[2] else None,
                torch.from_numpy(np.ascontiguousarray(core.sum_to(gt, t.shape))) if need[3] else None)


@torch.compiler.disable(recursive=True)
def _run(spec, z0, theta, ts):
    """The call behind odeint and ODELayer. torch.compile does not trace into it (symode's solver is compiled
    code of its own): a compiled function has one graph break here, the graphs before and after still compile."""
    z0, theta, ts = _tensor(z0, "z0"), _tensor(theta, "theta"), _tensor(ts, "ts")
    spec.batch_shape(tuple(z0.shape), tuple(theta.shape))
    spec.times_shape(tuple(ts.shape))
    device = z0.device if z0.device.type != "cpu" else theta.device
    dtype = torch.promote_types(z0.dtype, theta.dtype)
    out = _ODEFunction.apply(spec, _host(z0), _host(theta), _host(ts))
    if device.type != "cpu" or dtype != torch.float64:
        out = out.to(device=device, dtype=dtype)
    return out


def odeint(model, z0, theta, ts, method=DEFAULTS.method, rtol=DEFAULTS.rtol, atol=DEFAULTS.atol,
           adjoint="discrete", **kwargs):
    """z(ts) of ``model`` from z(ts[0]) = z0, a tensor (..., m, n) differentiable in z0, theta and ts.

    Parameters
    ----------
    model : symode.ODE
    z0 : tensor (..., n);  theta : tensor (..., p);  ts : tensor (m,) (strictly monotonic)
    method, rtol, atol, and the other solver keywords of ``model.solve`` (dt, max_steps, dt_max, controller,
        time_limit)
    adjoint : {"discrete", "checkpoint", "backsolve", "forward"}
        How the backward pass computes the gradient. "discrete" (default) keeps the forward pass's records and
        only runs the reverse sweep (one trajectory; a batch solves forward again inside its one compiled
        backward call); the others call ``model.vjp(..., adjoint=...)``, which solves forward again. Their
        keywords (seminorm, adjoint_rtol, adjoint_atol, checkpoints) are accepted too.
    """
    return _run(core.spec(model, method, rtol, atol, adjoint, **kwargs), z0, theta, ts)


class ODELayer(torch.nn.Module):
    """An ``nn.Module`` solving ``model`` over the fixed output times ``ts``: ``layer(z0) -> (..., m, n)``.

    ``theta`` (p,) is an ``nn.Parameter`` (initial value ``theta``, zeros if None), so ``layer.parameters()``
    hands it to any ``torch.optim`` optimizer; ``ts`` is a buffer. ``layer(z0, theta)`` overrides the parameter
    (e.g. with a batch (B, p) produced by another network). The solver settings are checked once, here.
    """

    def __init__(self, model, ts, theta=None, method=DEFAULTS.method, rtol=DEFAULTS.rtol, atol=DEFAULTS.atol,
                 adjoint="discrete", **kwargs):
        super().__init__()
        self.spec = core.Spec(model, method, rtol, atol, adjoint, **kwargs)
        ts = _tensor(ts, "ts").detach().to(dtype=torch.float64).clone()
        self.spec.times_shape(tuple(ts.shape))
        self.register_buffer("ts", ts)
        p = self.spec.p
        theta = torch.zeros(p, dtype=torch.float64) if theta is None else _tensor(theta, "theta")
        theta = theta.detach().to(dtype=torch.float64).clone()
        if tuple(theta.shape) != (p,):
            raise InputValidationError(f"`theta` has shape {tuple(theta.shape)}; the model has {p} parameters")
        self.theta = torch.nn.Parameter(theta)

    def forward(self, z0, theta=None):
        return _run(self.spec, z0, self.theta if theta is None else theta, self.ts)

    def extra_repr(self):
        return f"n={self.spec.n}, p={self.spec.p}, m={self.ts.shape[0]}, adjoint={self.spec.adjoint!r}"
