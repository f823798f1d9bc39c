"""``adjoint="discrete"``: the exact reverse-mode derivative of the numerical method's own map along the accepted
steps (step sizes held fixed). Matches finite differences of ``solve`` to round-off for fixed-step methods; for
adaptive methods it is the derivative of the computed solution. Memory: the recorded steps.

Explicit methods: the forward solve, the sweep (and, with a compiled loss, the loss and its cotangent) in one
compiled call (:func:`fused`). Rosenbrock methods: the recorded forward pass, then the reverse mode of the W-form
step map with the auxiliary second-order kernel of :func:`second_order_model`.
"""
from __future__ import annotations

import numpy as np

from ... import _status
from ..._errors import IntegrationError
from ..._numeric import adjoint as adj
from ..._numeric import rosenbrock_adjoint as ra
from ..._numeric.batch import vjp_discrete_one
from ..._numeric.clock import clock_address
from ..._solution import Gradient, Solution, failure, step_stats
from ..._symbolic.transforms import second_order_system
from .. import stiff as st
from ..runtime import ModelRuntime
from .common import AdjointRequest, failed, finish, forward, nonfinite_gradient

_SUCCESS_MESSAGE = _status.message(_status.SUCCESS)
_NO_LOSS = (np.zeros(0, dtype=np.int64), np.zeros((1, 1)), np.zeros(0, dtype=np.int64))


class FusedLoss:
    """A compiled loss (generated kernels ``addr``, data rows ``D``, summed rows ``rows``) handed to ``vjp`` as
    the cotangent: with the discrete adjoint of an explicit method, forward solve, loss, cotangent, reverse
    sweep and dL/dts run in one compiled call; otherwise ``fallback`` (a cotangent callable) is used."""

    def __init__(self, addr, D, rows, fallback):
        self.addr, self.D, self.rows, self.fallback = addr, D, rows, fallback


def fused(rt: ModelRuntime, z0, theta, ts, cot, cfg, throw, loss=None, grad_t=True):
    """Forward solve, discrete-adjoint sweep and dL/dts in one compiled call (with ``loss``, a FusedLoss, the loss
    and its cotangent too: ``cot`` is then computed, and the Gradient gets ``value``)."""
    n, p, m = rt.n, rt.p, ts.size
    tab = cfg.rk
    grads = np.empty(n + p + m)   # few allocations: a short solve's Python is a measurable part of its cost
    gz, gp, gt = grads[:n], grads[n:n + p], grads[n + p:]
    stats = np.zeros(8, dtype=np.int64)
    fstats = np.zeros(4)
    if loss is None:
        out_y = np.empty((m, n))
        laddr, lD, lrows = _NO_LOSS
        g_loss = gz
    else:
        laddr, lD, lrows = loss.addr, loss.D, loss.rows
        zc = np.zeros((2, m, n))
        out_y, cot = zc[0], zc[1]
        g_loss = np.zeros(max(p, 1)) if laddr[1] else gz   # a loss without parameters leaves it alone
    status, nrec, value, finite = vjp_discrete_one(
        rt.kern, n, p, theta, ts, z0, cot, laddr, lD, lrows, g_loss, tab.a, tab.b, tab.b_error, tab.c, tab.dense,
        tab.fsal, tab.error_order, not cfg.method.fixed, cfg.rtol, cfg.atol, *cfg.step_sizes(), cfg.max_steps,
        cfg.ctrl, out_y, gz, gp, gt, stats, fstats, clock_address(), rt.rec_cap, grad_t)
    rt.note_steps(int(nrec))
    return fused_result(cfg, throw, status, nrec, value, finite, ts, out_y, gz, gp, gt, stats, float(fstats[0]),
                        grad_t, loss is not None)


def fused_result(cfg, throw, status, nrec, value, finite, ts, out_y, gz, gp, gt, stats, t_reached, grad_t,
                 with_value):
    """The Gradient of a fused compiled call's outputs (``vjp_discrete_one``, ``vjp_discrete_flat``), or its
    failure: raised as IntegrationError with ``throw``, else returned with the status (NaN gradients)."""
    st_ = step_stats(stats, cfg.method.name)
    st_.update(njev=0, nlu=0)
    msg = _SUCCESS_MESSAGE if status == 0 else _status.message(int(status), t_reached, cfg.max_steps)
    sol = Solution(t=ts, z=out_y, stats=st_, status=int(status), message=msg, t_reached=t_reached)
    if status != _status.SUCCESS:
        if throw:
            raise failure(status, t_reached, cfg.max_steps, solution=sol)
        g = Gradient(z0=gz, theta=gp, t=gt, solution=sol)
        g.stats = dict(status=int(status), message=msg)
        return g
    if not finite:
        raise nonfinite_gradient(float(value) if with_value else None)
    g = Gradient(z0=gz, theta=gp, t=gt if grad_t else None, stats=dict(forward=st_, steps_recorded=int(nrec)),
                 solution=sol)
    if with_value:
        g.value = float(value)
    return g


def explicit(req: AdjointRequest):
    """The recorded forward pass (dense-output-only stages only where an output is inside a step), the cotangent
    evaluated on its solution, then the compiled reverse sweep."""
    fwd, sol, cot = forward(req, record=3)
    return failed(req, sol) if cot is None else sweep(req, fwd, sol, cot)


def record(req: AdjointRequest):
    """The forward pass of the discrete adjoint alone, for a cotangent known only later (the framework bridges'
    backward pass): (recorded result, Solution). ``req.get_cot`` is not called. The sweep is :func:`sweep`."""
    if req.cfg.explicit:
        fwd, sol, _ = forward(req, record=3, stacklevel=5)
    else:
        st.refuse_auto(req.cfg, "discrete")
        second_order_model(req.rt)   # refused for network models before the solve, as by stiff()
        fwd, sol, _ = st.recorded_forward(req.rt, req.z0, req.theta, req.ts, req.cfg, req.throw, None)
    return fwd, sol


def sweep(req: AdjointRequest, fwd, sol, cot):
    """The reverse sweep of the discrete adjoint over a recorded forward pass (:func:`record`) with the cotangent
    ``cot`` (m, n): the Gradient, equal to what ``vjp(..., adjoint="discrete")`` returns for that cotangent."""
    return (_sweep_explicit if req.cfg.explicit else _sweep_stiff)(req, fwd, sol, cot)


def _sweep_explicit(req, fwd, sol, cot):
    rt, theta, cfg = req.rt, req.theta, req.cfg
    n, p, _m = req.sizes
    tab = cfg.rk
    ybar = np.empty(n)
    gth = np.empty(max(p, 1))
    adj.discrete_sweep(rt.kern, n, p, theta, fwd.rec_t, fwd.rec_h, fwd.rec_y, fwd.rec_k, tab.a, tab.b, tab.c,
                       tab.dense, fwd.out_step, fwd.out_frac, cot, ybar, gth, fwd.rec_w)
    stats = dict(forward=sol.stats, steps_recorded=int(fwd.rec_t.size))
    return finish(req, sol, cot, ybar.copy(), gth[:p], stats)


def second_order_model(rt: ModelRuntime):
    """The auxiliary model behind the discrete adjoint of Rosenbrock steps, with its index arrays.

    W = I/(h gamma) - J(t0, y0) and the stages' h d_i df/dt(t0, y0) make a Rosenbrock step depend on y0 and
    theta through J and df/dt, so its reverse mode needs the gradients with respect to z and theta of

        S(z, theta) = sum_(i,j) M_ij df_i/dz_j (t, z, theta) + sum_i u_i df_i/dt (t, z, theta)

    for given M (the adjoint of J) and u (of df/dt). S is the first right-hand side of a model of its own
    (states z, parameters theta + the M_ij + the u_i, the other right-hand sides zero), so its generated VJP
    kernel with cotangent e_0 yields exactly those gradients (second derivatives of f, generated, compiled and
    cached on disk like any model's). Only the entries of J and df/dt that depend on (t, z, theta) appear.

    Returns (aux runtime, hm_i, hm_j, ft_rows); aux is None when S vanishes identically (J and df/dt constant).
    """
    def build():
        # a model with network blocks is refused before its derivatives are computed (they are not needed)
        derivs = None if getattr(rt.sym, "networks", None) is not None else rt.derivatives()
        aux, hm_i, hm_j, ft_rows = second_order_system(rt.sym, derivs)
        return (None if aux is None else ModelRuntime(aux)), hm_i, hm_j, ft_rows

    return rt.memo("second_order_model", None, build)


def stiff(req: AdjointRequest):
    """Discrete adjoint through Rosenbrock steps: the forward pass records its accepted steps, then
    ``rosenbrock_adjoint.discrete_sweep`` runs the reverse mode of the W-form step map (step sizes fixed, dense
    output included) with the model's VJP kernel at the stages and the auxiliary second-order kernel for J and
    df/dt."""
    st.refuse_auto(req.cfg, "discrete")
    second_order_model(req.rt)   # refused for network models before the solve
    fwd, sol, cot = st.recorded_forward(req.rt, req.z0, req.theta, req.ts, req.cfg, req.throw, req.get_cot)
    return failed(req, sol) if cot is None else _sweep_stiff(req, fwd, sol, cot)


def _sweep_stiff(req, fwd, sol, cot):
    rt, theta, cfg = req.rt, req.theta, req.cfg
    aux, hm_i, hm_j, ft_rows = second_order_model(rt)
    hvjp = int(aux.kern[4]) if aux is not None else 0
    n, p, _m = req.sizes
    a_, C, c, d, mw, me, dense, gamma = cfg.method.tableau.packed()
    plan = st.linalg_plan(rt)
    htheta = np.zeros(p + hm_i.size + ft_rows.size)
    ybar = np.empty(n)
    gth = np.empty(max(p, 1))
    ok = ra.discrete_sweep(rt.kern, hvjp, n, p, theta, htheta, hm_i, hm_j, ft_rows, fwd.rec_t, fwd.rec_h, fwd.rec_y,
                           fwd.rec_k, a_, C, c, d, mw, dense, gamma, plan.nonauto, plan.kl, plan.ku, plan.band,
                           plan.pat_i, plan.pat_j, fwd.out_step, fwd.out_frac, cot, ybar, gth)
    if not ok:  # pragma: no cover - the forward pass factorised the same matrices
        raise IntegrationError("the discrete adjoint could not factorise W = I/(h gamma) - J of a recorded step",
                               status=_status.SINGULAR_MATRIX)
    stats = dict(forward=sol.stats, steps_recorded=int(fwd.rec_t.size))
    return finish(req, sol, cot, ybar, gth[:p].copy(), stats)
