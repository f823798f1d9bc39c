"""Prepared calls: ``model.value_and_grad_fn(loss, ts, ...)`` -> ``fn(z0, theta)``, with everything that does not
depend on z0 and theta checked and packed once, and the one compiled call per evaluation."""
from __future__ import annotations

import numpy as np
import sympy as sp

from .. import _validate as V
from .._numeric.batch import flat_size, vjp_discrete_flat
from .._solution import Gradient, PreparedSolution, lazy_field
from .._symbolic.losses import FinalLoss, ObservationLoss, RunningCost
from .adjoints.discrete import fused, fused_result
from .batch import is_batch
from .config import ADJOINT_KEYS, DEFAULTS, SOLVER_KEYS, unknown_keywords
from .explicit import flat_settings
from .losses import fused_loss, general_value_and_grad
from .runtime import ModelRuntime


def _compiled_loss_spec(loss):
    return not isinstance(loss, RunningCost) and isinstance(loss, (sp.Basic, FinalLoss, ObservationLoss))


class ValueAndGradFn:
    """``model.value_and_grad_fn(loss, ts, data, ...)``: a function ``(z0, theta) -> Gradient`` equal to
    ``model.value_and_grad(loss, z0, theta, ts, data, ...)`` with everything that does not depend on z0 and
    theta (the output times, the loss's kernels and data rows, the solver settings) checked and prepared once,
    as one prepares a jitted function in JAX. Per call it checks z0 and theta and makes the one compiled call of
    the fused discrete adjoint; other cases (batches, other adjoints, implicit methods, callables) go through
    ``value_and_grad`` with the same arguments (the route is chosen here, once)."""

    def __init__(self, rt: ModelRuntime, loss, ts, data=None, adjoint=DEFAULTS.adjoint, **kwargs):
        self.rt, self.loss, self.data, self.adjoint, self.kwargs = rt, loss, data, adjoint, dict(kwargs)
        self.ts = V.times(ts)
        self.prepared = False
        kw = dict(kwargs)
        self.grad_t = kw.pop("grad_t", True)
        self.throw = kw.pop("throw", DEFAULTS.throw)
        self.cfg = rt.config(**{k: kw.pop(k, getattr(DEFAULTS, k)) for k in SOLVER_KEYS})
        if kw and not set(kw) <= set(ADJOINT_KEYS + ("reduce",)):
            raise unknown_keywords(kw)
        if adjoint == "discrete" and self.cfg.explicit and not kw and _compiled_loss_spec(loss):
            self.prepared = True
            self.fused = fused_loss(rt, loss, self.ts, data)
            tab, cfg = self.cfg.rk, self.cfg
            n, p, m = rt.n, rt.p, self.ts.size
            self.n, self.p = n, p
            # the prepared call's arguments but z0, theta, the capacity hint and the outputs
            self._flat = ((n,), (p,), flat_size(n, p, m), rt.kern, self.ts, self.fused.addr, self.fused.D,
                          self.fused.rows, tab.a, tab.b, tab.b_error, tab.c, tab.dense, cfg.rtol, cfg.atol,
                          cfg.ctrl) + flat_settings(cfg, self.grad_t)

    def __call__(self, z0, theta=()):
        # z0 and theta that are already what the compiled call takes (float64, contiguous, writeable, of the
        # model's sizes) go straight to it, which checks that they are finite; anything else goes through the
        # validating path, which converts them or names the problem
        if self.prepared and V.plain_pair(z0, theta, self._flat[0], self._flat[1]):
            zshape, tshape, size, kern, ts, laddr, lD, lrows, a, b, be, c, dense, rtol, atol, ctrl, fcfg, icfg = \
                self._flat
            buf = np.zeros(size)
            stats = np.zeros(8, dtype=np.int64)
            rt = self.rt
            status, nrec, value, finite = vjp_discrete_flat(kern, theta, ts, z0, laddr, lD, lrows, a, b, be, c, dense,
                                                            rtol, atol, ctrl, fcfg, icfg, rt.rec_cap, buf, stats)
            if status >= 0:   # -1: z0 or theta not finite, named by the validating path below
                rt.note_steps(nrec)
                if status == 0 and finite:
                    return _PreparedGradient(self, buf, stats, nrec, value)
                n, p, m = zshape[0], tshape[0], ts.size
                o = n + p + m
                return fused_result(self.cfg, self.throw, status, nrec, value, finite, ts.copy(),
                                    buf[o:o + m * n].reshape(m, n), buf[:n], buf[n:n + p], buf[n + p:o], stats,
                                    float(buf[o + 2 * m * n]), self.grad_t, True)
        if not self.prepared or is_batch(z0, theta):
            return general_value_and_grad(self.rt, self.loss, z0, theta, self.ts, data=self.data,
                                          adjoint=self.adjoint, **self.kwargs)
        z0v, thv = self.rt.zt(z0, theta)
        return fused(self.rt, z0v, thv, self.ts.copy(), None, self.cfg, self.throw, loss=self.fused,
                     grad_t=self.grad_t)


def _prepared_t(g):
    fn = g._fn
    o = fn.n + fn.p
    return g._buf[o:o + fn.ts.size] if fn.grad_t else None   # dL/dts, when asked for (grad_t)


def _prepared_solution(g):
    fn, buf = g._fn, g._buf
    n, p, m = fn.n, fn.p, fn.ts.size
    o = n + p + m
    return PreparedSolution(fn.ts.copy(), buf[o:o + m * n].reshape(m, n), g._st, fn.cfg.method.name,
                            float(buf[o + 2 * m * n]))


class _PreparedGradient(Gradient):
    """What a prepared call returns on success: a Gradient whose ``z0``, ``theta`` and ``value`` are set at once
    and whose ``t``, ``stats`` and ``solution`` are built from the compiled call's outputs when first read (a
    short solve's Python is a measurable part of its cost). Equal, field for field, to what value_and_grad
    returns; it pickles as a plain Gradient."""

    def __init__(self, fn, buf, stats, nrec, value):   # not the dataclass's: the lazy fields stay unset
        n, p = fn.n, fn.p
        self._fn, self._buf, self._st, self._nrec = fn, buf, stats, nrec
        self.z0 = buf[:n]
        self.theta = buf[n:n + p]
        self.value = float(value)

    t = lazy_field("t", _prepared_t)
    solution = lazy_field("solution", _prepared_solution)
    stats = lazy_field("stats", lambda g: dict(forward=g.solution.stats, steps_recorded=int(g._nrec)))

    def __reduce__(self):
        return (Gradient, (self.z0, self.theta, self.t, self.value, self.stats, self.solution))


def prepared_for(rt: ModelRuntime, loss, ts, kw):
    """The ``value_and_grad_fn(loss, ts, **kw)`` that serves a ``value_and_grad`` call repeated with the same loss
    object, output times and settings (and no data, which may change in place between calls): prepared at the
    second such call (a loop over changing output times only pays the lookup), then reused. None: not (yet) one
    to prepare; the call takes the general path."""
    try:
        # the settings' types are part of the key: max_steps=1e3 is checked as itself, never served 1000's call
        key = (id(loss), ts.tobytes(), tuple(sorted((k, type(v), v) for k, v in kw.items())))
        hash(key)
    except TypeError:   # settings given as arrays or dicts
        return None
    hit = rt.lookup("prepared_vg", key)
    if hit is None or hit[0] is not loss:
        rt.store("prepared_vg", key, (loss, None))   # seen once: keeps ``loss`` alive, so its id stays its own
        return None
    fn = hit[1]
    if fn is None:   # the second call: prepare it, or remember that it is not one to prepare (False)
        fn = False
        if _compiled_loss_spec(loss) and not (isinstance(loss, ObservationLoss) and len(loss.data_symbols)):
            prepared = ValueAndGradFn(rt, loss, ts, None, "discrete", **kw)
            if prepared.prepared:   # (never calls back here: it has its own fused path)
                fn = prepared
        rt.store("prepared_vg", key, (loss, fn))
    return fn or None


def value_and_grad(rt: ModelRuntime, loss, z0, theta, ts, data=None, adjoint=DEFAULTS.adjoint, **solver_kwargs):
    """Value and gradients (z0, theta, ts) of a loss of the solution; see ``ODE.value_and_grad``. A plain call
    repeated with the same loss object, output times and settings is served by a prepared call."""
    if (adjoint == "discrete" and data is None and V.plain_pair(z0, theta, rt.zshape, rt.tshape)
            and V.plain_times(ts)):
        fn = prepared_for(rt, loss, ts, solver_kwargs)
        if fn is not None:
            return fn(z0, theta)
    return general_value_and_grad(rt, loss, z0, theta, ts, data, adjoint, **solver_kwargs)
