"""``adjoint="forward"``: forward sensitivities (z, dz/dz0, dz/dtheta integrated together), contracted with the
cotangent; best for few parameters and states. Explicit and Rosenbrock methods (the latter on the augmented
system's exact Jacobian)."""
from __future__ import annotations

import numpy as np

from .. import explicit as ex
from .. import stiff as st
from .common import AdjointRequest, failed, finish


def _contract(req: AdjointRequest, sol, dz_dz0, dz_dtheta):
    if not sol.success:
        return failed(req, sol)
    n, _p, m = req.sizes
    cot = req.get_cot(sol)
    a0plus = np.einsum("min,mi->n", dz_dz0[1:], cot[1:]) if m > 1 else np.zeros(n)
    gth = np.einsum("mip,mi->p", dz_dtheta, cot)
    return finish(req, sol, cot, a0plus, gth, dict(forward=sol.stats))


def explicit(req: AdjointRequest):
    return _contract(req, *ex.sensitivities(req.rt, req.z0, req.theta, req.ts, req.cfg, req.throw))


def stiff(req: AdjointRequest):
    return _contract(req, *st.sensitivities(req.rt, req.z0, req.theta, req.ts, req.cfg, req.throw))
