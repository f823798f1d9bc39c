"""symode models inside JAX programs (extra ``symode[jax]``): ``odeint``.

    jax.config.update("jax_enable_x64", True)
    zs = symode.jax.odeint(model, z0, theta, ts, method="dopri5", rtol=1e-8, atol=1e-8)

A ``jax.custom_vjp`` around ``jax.pure_callback``: it works under ``jax.jit``, ``jax.grad`` /
``value_and_grad`` and ``jax.vmap`` (the callbacks receive the vmapped batch, ``vmap_method="expand_dims"``, and
run it as one compiled parallel symode call; not a Python loop). ``z0`` (..., n), ``theta`` (..., p), ``ts`` (m,);
the result (..., m, n) is float64 and differentiable in z0, theta and ts. Requires ``jax_enable_x64`` (symode
computes in float64; float32 inputs are converted). The backward pass calls ``model.vjp``, which solves forward
again (for the discrete adjoint of an explicit method in the same compiled call as the reverse sweep). Shape and
dtype errors are raised while tracing (symode's ``InputValidationError``, ``TypeError``); errors found by the
solver (non-finite values, a failed integration) surface as JAX's runtime error carrying symode's message.
See docs/bridges.md.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._engine.config import DEFAULTS
from ._errors import InputValidationError
from .bridges import core

__all__ = ["odeint"]


def _check_x64():
    if not jax.config.jax_enable_x64:
        raise TypeError("symode.jax.odeint computes in float64 and needs jax_enable_x64: call "
                        "jax.config.update('jax_enable_x64', True) at startup (or set JAX_ENABLE_X64=1)")


def _array(x, name):
    """``x`` as a float64 JAX array; a non-floating array (integer, complex, bool) is refused."""
    dt = getattr(x, "dtype", None)
    if dt is not None and not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"`{name}` must be a real floating-point array (float64, or float32 converted), got {dt}")
    return jnp.asarray(x, dtype=jnp.float64)


def _shared_times(ts, lead):
    """The output times of a vmapped call: (m,) when every member shares them, else (B, m)."""
    rows = ts.reshape(-1, ts.shape[-1])
    if rows.shape[0] == 1 or np.all(rows == rows[0]):
        return rows[0], None
    return None, np.ascontiguousarray(np.broadcast_to(ts, lead + ts.shape[-1:]).reshape(-1, ts.shape[-1]))


def _make(spec: core.Spec):
    """The custom_vjp function of one model and settings (cached, so repeated calls reuse JAX's compilations)."""
    n, p = spec.n, spec.p

    def solve_cb(z0, theta, ts):
        z0, theta, ts = (np.asarray(a, dtype=np.float64) for a in (z0, theta, ts))
        m = ts.shape[-1]
        full = tuple(np.broadcast_shapes(z0.shape[:-1], theta.shape[:-1], ts.shape[:-1]))
        t, rows = _shared_times(ts, full)
        if rows is None:
            if z0.shape[:-1] != full and theta.shape[:-1] != full:
                z0 = np.broadcast_to(z0, full + (n,))
            return np.ascontiguousarray(core.solve(spec, z0, theta, t))
        Z = np.broadcast_to(z0, full + (n,)).reshape(-1, n)
        T = np.broadcast_to(theta, full + (p,)).reshape(-1, p)
        out = [core.solve(spec, Z[i], T[i], rows[i]) for i in range(rows.shape[0])]
        return np.stack(out).reshape(full + (m, n))

    def vjp_cb(z0, theta, ts, cot):
        z0, theta, ts, cot = (np.asarray(a, dtype=np.float64) for a in (z0, theta, ts, cot))
        m = ts.shape[-1]
        full = tuple(np.broadcast_shapes(z0.shape[:-1], theta.shape[:-1], ts.shape[:-1], cot.shape[:-2]))
        t, rows = _shared_times(ts, full)
        if rows is None:
            gz, gp, gt = core.vjp(spec, z0, theta, t, cot)
        else:
            Z = np.broadcast_to(z0, full + (n,)).reshape(-1, n)
            T = np.broadcast_to(theta, full + (p,)).reshape(-1, p)
            C = np.broadcast_to(cot, full + (m, n)).reshape(-1, m, n)
            gs = [core.vjp(spec, Z[i], T[i], rows[i], C[i]) for i in range(rows.shape[0])]
            gz, gp, gt = (np.stack([g[k] for g in gs]) for k in range(3))
        return tuple(np.ascontiguousarray(np.broadcast_to(g, full + (k,)))
                     for g, k in ((gz, n), (gp, p), (gt, m)))

    def primal(z0, theta, ts):
        lead = spec.batch_shape(z0.shape, theta.shape)
        out = jax.ShapeDtypeStruct(lead + (ts.shape[0], n), jnp.float64)
        return jax.pure_callback(solve_cb, out, z0, theta, ts, vmap_method="expand_dims")

    f = jax.custom_vjp(primal)

    def fwd(z0, theta, ts):
        return primal(z0, theta, ts), (z0, theta, ts)

    def bwd(res, ct):
        z0, theta, ts = res
        lead = spec.batch_shape(z0.shape, theta.shape)
        m = ts.shape[0]
        shapes = tuple(jax.ShapeDtypeStruct(lead + (k,), jnp.float64) for k in (n, p, m))
        gz, gp, gt = jax.pure_callback(vjp_cb, shapes, z0, theta, ts, ct.astype(jnp.float64),
                                       vmap_method="expand_dims")
        return core.sum_to(gz, z0.shape), core.sum_to(gp, theta.shape), core.sum_to(gt, ts.shape)

    f.defvjp(fwd, bwd)
    return f


def odeint(model, z0, theta, ts, method=DEFAULTS.method, rtol=DEFAULTS.rtol, atol=DEFAULTS.atol,
           adjoint="discrete", **kwargs):
    """z(ts) of ``model`` from z(ts[0]) = z0: a float64 array (..., m, n), differentiable in z0, theta and ts.

    Parameters
    ----------
    model : symode.ODE
    z0 : array (..., n);  theta : array (..., p);  ts : array (m,) (strictly monotonic)
    method, rtol, atol, and the other solver keywords of ``model.solve`` (dt, max_steps, dt_max, controller,
        time_limit): static (Python values, not traced)
    adjoint : {"discrete", "checkpoint", "backsolve", "forward"}
        The backward pass is ``model.vjp(..., adjoint=adjoint)`` (it solves forward again); the adjoint's own
        keywords (seminorm, adjoint_rtol, adjoint_atol, checkpoints) are accepted too.
    """
    _check_x64()
    rt = getattr(model, "_rt", None)
    if rt is None:
        raise InputValidationError(f"`model` must be a symode.ODE, got {type(model).__name__}")
    spec = core.spec(model, method, rtol, atol, adjoint, **kwargs)
    fn = _make(spec) if spec.key is None else rt.memo("bridge.jax", spec.key, lambda: _make(spec), size=16)
    z0, theta, ts = _array(z0, "z0"), _array(theta, "theta"), _array(ts, "ts")
    spec.batch_shape(z0.shape, theta.shape)
    spec.times_shape(ts.shape)
    return fn(z0, theta, ts)
