"""``adjoint="backsolve"``: the classical Neural-ODE adjoint, z re-integrated backward together with a and g.
O(1) memory in the number of steps, but z(t) reconstructed backward can be wrong where the dynamics are
contracting or chaotic; the reconstructed z(ts[i]) are checked against the forward values, with a warning when
they disagree. Refused on stiff methods (integrating a stiff z backward is unstable)."""
from __future__ import annotations

import warnings

import numpy as np

from ..._errors import InputValidationError
from ..._numeric import rk
from ..._solution import step_stats
from .. import explicit as ex
from .common import AdjointRequest, augmented_tolerances, backward_failed, failed, finish, forward


def explicit(req: AdjointRequest):
    rt, theta, ts, cfg = req.rt, req.theta, req.ts, req.cfg
    n, p, m = req.sizes
    _fwd, sol, cot = forward(req)
    if cot is None:
        return failed(req, sol)
    cot_b = cot[::-1]
    ny = 2 * n + p
    y0 = np.zeros(ny)
    y0[:n] = sol.z[-1]
    y0[n:2 * n] = cot_b[0]
    jadd = np.zeros((m, ny))
    jadd[:, n:2 * n] = cot_b
    jset = np.zeros((m, ny))
    jset[:, :n] = sol.z[::-1]
    mask = np.zeros(ny, dtype=np.int64)
    mask[:n] = 1
    rt_, at_ = augmented_tolerances(req, (cfg.rtol,), (cfg.atol,))
    bwd = ex.integrate(rt, rk.MODE_BACKSOLVE, y0, theta, np.ascontiguousarray(ts[::-1]), cfg,
                       nerr=2 * n if req.seminorm else ny, stop_at_ts=True, jumps=(jadd, jset, mask), rtol=rt_,
                       atol=at_)
    bad = backward_failed(req, sol, bwd.status, bwd.t_reached, phase="The backward (backsolve)")
    if bad is not None:
        return bad
    # z reconstructed backward, compared with the forward values at the output times
    zrec = bwd.out_y[:, :n][::-1]
    scale = cfg.atol + cfg.rtol * np.abs(sol.z)
    recon_err = float(np.max(np.abs(zrec - sol.z) / scale)) if m > 1 else 0.0
    if recon_err > 1e3:
        warnings.warn(f"backsolve: z(t) re-integrated backward differs from the forward solution by "
                      f"{recon_err:.2g} tolerance units (the dynamics are contracting, stiff or chaotic); the "
                      "gradient is unreliable. Use adjoint='checkpoint' or 'discrete'.", RuntimeWarning,
                      stacklevel=4)   # here, engine vjp, ODE.vjp, the caller
    last = bwd.out_y[-1]
    stats = dict(forward=sol.stats, backward=step_stats(bwd.stats), reconstruction_error=recon_err)
    return finish(req, sol, cot, last[n:2 * n].copy(), last[2 * n:].copy(), stats)


def stiff(req: AdjointRequest):
    raise InputValidationError(f"adjoint='backsolve' is refused with {req.cfg.method.name!r}: integrating a stiff "
                               "z(t) backward in time is unstable (errors grow like exp(|lambda| T)). Use "
                               "adjoint='forward'.")
