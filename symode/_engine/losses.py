"""Losses of ODE solutions, derived and compiled like f, and ``value_and_grad``.

Supported losses:

- a SymPy expression of the states (and parameters) at the final time (``FinalLoss`` or a bare expression);
- ``ObservationLoss(expr, data_symbols)``: an expression of the states, parameters, time and data symbols,
  summed over the output times with ``data[i]`` substituted for the data symbols; additive terms that
  involve a NaN data entry are skipped (missing observations);
- ``RunningCost(expr)``: the integral of r(z, theta, t) over [ts[0], ts[-1]], computed as an extra
  quadrature state of an augmented model, so the adjoint integrates it exactly like the dynamics;
- a Python callable ``loss(t, z) -> (value, dL/dz (m, n))`` for anything else (no dL/dtheta term).
"""
from __future__ import annotations

import hashlib

import numpy as np
import sympy as sp

from .._codegen.build import get_or_build
from .._codegen.compiled import versions_tag
from .._errors import InputValidationError
from .. import _validate as V
from .._numeric.losses import eval_loss_rows, fill_data_rows
from .._symbolic.losses import FinalLoss, ObservationLoss, RunningCost
from .._symbolic.transforms import running_cost_system
from .._version import __version__
from .adjoints.discrete import FusedLoss
from .batch import broadcast, is_batch, vjp_batch
from .config import DEFAULTS, unknown_keywords
from .gradients import vjp
from .runtime import ModelRuntime


LOSS_REVISION = "3"  # part of a loss module's cache key (2: one kernel for the value and the gradient;
#                      3: no dL/dtheta code for a loss without parameters)


class CompiledLoss:
    """Generated kernels ``loss(t, z, theta, d, out)`` and ``loss_grad(t, z, theta, d, out_z, out_theta)``."""

    _cache: dict = {}

    def __init__(self, model, expr, data_symbols=()):
        sym = model.sym
        data_symbols = tuple(data_symbols)
        expr = sp.sympify(expr)
        terms = sp.Add.make_args(expr)
        weights = sp.symbols(f"w_0:{len(terms)}", real=True) if data_symbols else ()
        if data_symbols:
            term_uses = []
            for term in terms:
                term_uses.append([j for j, s in enumerate(data_symbols) if term.has(s)])
            expr_w = sp.Add(*[w * term for w, term in zip(weights, terms)])
        else:
            term_uses = []
            expr_w = expr
        V.observation_symbols(sym.states, sym.params, data_symbols, sym.t)   # no data symbol shadows the model's
        V.loss_symbols(sym.states, sym.params, sym.t, expr, data_symbols)
        d_c = sp.symbols(f"d_0:{len(data_symbols) + len(weights)}", real=True)
        mapping = dict(sym.to_canon)
        mapping.update(zip(list(data_symbols) + list(weights), d_c))
        e_c = expr_w.xreplace(mapping)
        self.term_uses = term_uses
        self._rows = {}
        self.n_data = len(data_symbols)
        self.n_terms = len(terms) if data_symbols else 0
        uses_theta = bool(e_c.free_symbols & set(sym.theta_c))
        tag = sym.key() + f"|loss{LOSS_REVISION}|" + sp.srepr(e_c) + versions_tag()
        h = hashlib.sha256(tag.encode()).hexdigest()
        key = "L" + h[:40]

        def emit(timings):   # a cache miss
            from .._codegen.emit import HEADER, KernelSpec, base_symbol_map, emit_kernel

            smap = base_symbol_map(sym)
            smap.update({s: f"d[{j}]" for j, s in enumerate(d_c)})
            grads = [(f"out_z[{i}]", sp.diff(e_c, z)) for i, z in enumerate(sym.z_c)]
            # a loss without parameters leaves out_theta untouched (eval_loss_rows does not read it: addr[1] = 0)
            if uses_theta:
                grads += [(f"out_theta[{k}]", sp.diff(e_c, th)) for k, th in enumerate(sym.theta_c)]
            shp = dict(z=(sym.n,), theta=(sym.p,), d=(max(len(d_c), 1),))
            specs = [KernelSpec("loss_vg", "LVG_SIG", ["t", "z", "theta", "d", "out", "out_z", "out_theta"],
                                [("out[0]", e_c)] + grads,
                                shapes=dict(shp, out=(1,), out_z=(sym.n,), out_theta=(sym.p,)))]
            return HEADER.format(version=__version__, key=key) + "".join(emit_kernel(s, smap) + "\n" for s in specs)

        entry = get_or_build(key, emit)   # the one build route of generated modules (lock, checks, record)
        self.path = entry.path
        mod = entry.module
        self.addr = np.array([mod.loss_vg.address, int(uses_theta)], dtype=np.int64)

    def rows(self, m, final):
        """The output rows the loss is summed over (the last one for a final-state loss), cached per m."""
        key = (m, final)
        r = self._rows.get(key)
        if r is None:
            r = np.array([m - 1], dtype=np.int64) if final else np.arange(m, dtype=np.int64)
            if len(self._rows) < 64:
                self._rows[key] = r
        return r

    def data_rows(self, data, m, batch=None):
        """Return the (m, n_data + n_terms) array passed as ``d``: data with NaN -> 0 and term weights (1, or 0
        where a term uses a NaN entry). With ``batch=B``, ``data`` is (B, m, n_data) and the result (B, m, ...)."""
        lead = () if batch is None else (batch,)
        if self.n_data == 0:
            return np.zeros(lead + (m, 1))
        # float64 arrays (a training loop's) go straight to the compiled fill, which reports any non-finite entry;
        # anything else is converted and checked first (complex, strings, inf refused: _validate.loss_data)
        D = data if type(data) is np.ndarray and data.dtype == np.float64 else V.loss_data(data, m, self.n_data, batch)
        if batch is None and D.ndim == 1 and self.n_data == 1:
            D = D.reshape(-1, 1)
        if D.shape != lead + (m, self.n_data):
            want = ", ".join(map(str, lead + (m, self.n_data)))
            raise InputValidationError(f"`data` has shape {D.shape}; expected ({want}): "
                                       + ("(batch, " if lead else "(") + "len(ts), number of data symbols)")
        out = np.empty(lead + (m, self.n_data + self.n_terms))
        if D.flags.c_contiguous and fill_data_rows(D.reshape(-1, self.n_data),
                                                   out.reshape(-1, self.n_data + self.n_terms)):
            return out        # all finite (compiled: a few NumPy calls here cost more than the solve of a window)
        V.loss_data(D, m, self.n_data, batch)   # not all finite: +-inf is an error naming its row, NaN is missing
        out[..., :self.n_data] = D
        out[..., self.n_data:] = 1.0
        finite = np.isfinite(D)
        if not finite.all():
            for k, uses in enumerate(self.term_uses):
                if uses:
                    out[..., self.n_data + k] = np.all(finite[..., uses], axis=-1)
            out[..., :self.n_data][~finite] = 0.0
        return out


def compiled_loss(rt: ModelRuntime, expr, data_symbols):
    """The CompiledLoss of ``expr`` with ``data_symbols`` for this model (cached per model; the objects of a
    training loop are found by identity first, which keeps them referenced)."""
    key = (id(expr), id(data_symbols))
    hit = rt.lookup("loss_by_id", key)
    if hit is not None and hit[0] is expr and hit[1] is data_symbols:
        return hit[2]
    cl = rt.memo("loss", (sp.sympify(expr), tuple(data_symbols)), lambda: CompiledLoss(rt, expr, data_symbols),
                 size=256)
    rt.store("loss_by_id", key, (expr, data_symbols, cl), size=256)
    return cl


def general_value_and_grad(rt: ModelRuntime, loss, z0, theta, ts, data=None, adjoint=DEFAULTS.adjoint,
                           **solver_kwargs):
    """Value and gradients (z0, theta, ts) of a loss of the solution, by the validating path (the prepared calls
    of :mod:`.prepared` serve the repeated plain ones); see ``ODE.value_and_grad``."""
    if isinstance(loss, RunningCost):
        return _running_cost(rt, loss, z0, theta, ts, adjoint, solver_kwargs)
    if is_batch(z0, theta):
        return _value_and_grad_batch(rt, loss, z0, theta, ts, data, adjoint, solver_kwargs)
    z0v, thv = rt.zt(z0, theta)
    tsv = V.times(ts)
    if type(loss) is not ObservationLoss and callable(loss) and not isinstance(loss, (sp.Basic, FinalLoss)):
        def user_cot(sol):
            value, cot = loss(sol.t, sol.z)
            return value, cot, None

        return vjp(rt, z0v, thv, tsv, user_cot, adjoint=adjoint, checked=True, **solver_kwargs)
    return vjp(rt, z0v, thv, tsv, fused_loss(rt, loss, tsv, data, thv), adjoint=adjoint, checked=True,
               **solver_kwargs)


def fused_loss(rt: ModelRuntime, loss, tsv, data, theta=None):
    """The FusedLoss of a SymPy expression, FinalLoss or ObservationLoss at the output times ``tsv``: compiled
    kernels, data rows and summed rows; with ``theta`` its fallback cotangent callable evaluates them on a
    solution (for the adjoints that are not fused)."""
    m, n, p = tsv.size, rt.n, rt.p
    if type(loss) is not ObservationLoss and isinstance(loss, (sp.Basic, FinalLoss)):
        expr = loss.expr if isinstance(loss, FinalLoss) else loss
        cl = compiled_loss(rt, expr, ())
        rows = np.array([m - 1], dtype=np.int64)
        D = np.zeros((m, 1))
    elif isinstance(loss, ObservationLoss):
        if not len(loss.data_symbols):  # no data: the compiled loss and its rows depend on len(ts) only
            def build():
                cl_ = compiled_loss(rt, loss.expr, ())
                return cl_, cl_.data_rows(None, m), np.arange(m, dtype=np.int64)

            cl, D, rows = rt.memo("observation_rows", (loss, m), build, size=32)
        else:
            cl = compiled_loss(rt, loss.expr, loss.data_symbols)
            if data is None:
                raise InputValidationError("an ObservationLoss with data symbols needs `data` (one row per output "
                                           "time)")
            D = cl.data_rows(data, m)
            rows = np.arange(m, dtype=np.int64)
    else:
        raise InputValidationError(f"unsupported loss {type(loss).__name__}; use a SymPy expression, FinalLoss, "
                                   "ObservationLoss, RunningCost or a callable")

    def cotangent(sol):
        cot = np.zeros((m, n))
        gth_loss = np.zeros(max(p, 1))
        value = eval_loss_rows(cl.addr, tsv, np.ascontiguousarray(sol.z), theta, D, rows, cot, gth_loss)
        return value, cot, gth_loss[:p]

    return FusedLoss(cl.addr, D, rows, cotangent if theta is not None else None)


def _value_and_grad_batch(rt: ModelRuntime, loss, z0, theta, ts, data, adjoint, kw):
    """Batched value_and_grad: z0 (B, n) and/or theta (B, p); ``data`` (m, w) shared or (B, m, w) per member.
    One compiled parallel call: each member's forward solve, loss, cotangent and discrete-adjoint sweep.
    Shared inputs (z0, theta or data without a batch dimension) are passed as one row, not copied B times."""
    if adjoint != "discrete":
        raise InputValidationError("batched value_and_grad uses adjoint='discrete' (the others run per trajectory)")
    if isinstance(loss, (sp.Basic, FinalLoss)):
        cl = compiled_loss(rt, loss.expr if isinstance(loss, FinalLoss) else loss, ())
        summed = "final"
    elif isinstance(loss, ObservationLoss):
        cl = compiled_loss(rt, loss.expr, loss.data_symbols)
        if data is None and len(loss.data_symbols):
            raise InputValidationError("an ObservationLoss with data symbols needs `data` (one row per output time)")
        summed = "all"
    else:
        raise InputValidationError(f"batched value_and_grad takes a SymPy expression, FinalLoss or ObservationLoss, "
                                   f"not {type(loss).__name__}")
    Z, T, B = broadcast(rt, z0, theta, expand=False)
    tsv = V.times(ts)
    m = tsv.size
    if summed == "final" or cl.n_data == 0:
        D = cl.data_rows(None, m)[None]
    else:
        if np.ndim(data) == 3 and np.shape(data)[0] != B:
            raise InputValidationError(f"`data` has {np.shape(data)[0]} members; the batch has {B}")
        # float64 arrays go to data_rows as they are (it checks their shape and finiteness in its compiled fill)
        arr = data if type(data) is np.ndarray and data.dtype == np.float64 else V.loss_data(data, m, cl.n_data,
                                                                                               batch=B)
        if arr.ndim == 3:
            D = cl.data_rows(arr, m, batch=B)
        else:
            D = cl.data_rows(arr, m)[None]
    rows = cl.rows(m, summed == "final")
    kw = dict(kw)
    reduce = kw.pop("reduce", None)
    grad_t = kw.pop("grad_t", True)
    throw = kw.pop("throw", DEFAULTS.throw)
    D_ = DEFAULTS
    cfg = rt.config(kw.pop("method", D_.method), kw.pop("rtol", D_.rtol), kw.pop("atol", D_.atol), kw.pop("dt", D_.dt),
                    kw.pop("max_steps", D_.max_steps), kw.pop("dt_max", D_.dt_max), kw.pop("controller", D_.controller),
                    kw.pop("time_limit", D_.time_limit))
    if kw:
        raise unknown_keywords(kw)
    return vjp_batch(rt, Z, T, tsv, None, cfg, throw, reduce=reduce, loss=(cl.addr, D, rows), grad_t=grad_t,
                     batch=B)


def running_cost_model(rt: ModelRuntime, expr) -> ModelRuntime:
    """The model augmented with the running cost's quadrature state (cached per model and cost)."""
    return rt.memo("running_cost", sp.srepr(sp.sympify(expr)),
                   lambda: ModelRuntime(running_cost_system(rt.sym, expr)))


def _running_cost(rt: ModelRuntime, loss, z0, theta, ts, adjoint, solver_kwargs):
    am = running_cost_model(rt, loss.expr)
    z0v, thv = rt.zt(z0, theta)
    tsv = V.times(ts)
    m, n = tsv.size, rt.n
    cot = np.zeros((m, n + 1))
    cot[-1, n] = 1.0
    g = vjp(am, np.concatenate([z0v, [0.0]]), thv, tsv, cot, adjoint=adjoint, checked=True, **solver_kwargs)
    g.value = float(g.solution.z[-1, n])
    g.z0 = g.z0[:n].copy()
    return g
