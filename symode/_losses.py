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

from ._codegen import loader
from ._compiled import _END, versions_tag
from ._errors import InputValidationError, ModelError
from . import _validate as V
from ._batch import _broadcast, is_batch, vjp_batch
from ._gradients import FusedLoss, _discrete_fused, flat_settings, fused_result, vjp
from ._numeric.batch import flat_size, vjp_discrete_flat
from ._numeric.losses import eval_loss_rows, fill_data_rows
from ._solution import Gradient, PreparedSolution, lazy_field
from ._version import __version__


LOSS_REVISION = "3"  # part of a loss module's cache key (2: one kernel for the value and the gradient;
#                      3: no dL/dtheta code for a loss without parameters)


class FinalLoss:
    """L = expr(z(ts[-1]), theta, t) for a SymPy expression in the model's symbols."""

    def __init__(self, expr):
        self.expr = sp.sympify(expr) if not isinstance(expr, str) else _no_str()


class ObservationLoss:
    """L = sum_i expr(z(ts[i]), theta, ts[i], data[i]); terms with NaN data are skipped."""

    def __init__(self, expr, data_symbols):
        if isinstance(expr, str):
            _no_str()
        self.expr = expr
        self.data_symbols = tuple(data_symbols)
        for s in self.data_symbols:
            if not isinstance(s, sp.Symbol):
                raise ModelError(f"data symbol {s!r} must be a sympy.Symbol")


class RunningCost:
    """L = integral over [ts[0], ts[-1]] of expr(z, theta, t) dt."""

    def __init__(self, expr):
        if isinstance(expr, str):
            _no_str()
        self.expr = expr


def _no_str():
    raise ModelError("losses are SymPy expressions; symode never evaluates strings")


class CompiledLoss:
    """Generated kernels ``loss(t, z, theta, d, out)`` and ``loss_grad(t, z, theta, d, out_z, out_theta)``."""

    _cache: dict = {}

    def __init__(self, model, expr, data_symbols=()):
        sym = model._sym
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
        allowed = set(sym.states) | set(sym.params) | set(data_symbols) | ({sym.t} if sym.t is not None else set())
        bad = expr.free_symbols - allowed
        if bad:
            raise ModelError(f"the loss uses undeclared symbol(s) {', '.join(sorted(map(str, bad)))}; it may use "
                             "the model's states, parameters, time and the declared data symbols")
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
        from ._codegen.build import get_or_build

        def emit(timings):   # a cache miss
            from ._codegen.emit import HEADER, KernelSpec, base_symbol_map, emit_kernel

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

        entry = get_or_build(key, emit)
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
        D = np.asarray(data, dtype=np.float64)
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
        out[..., :self.n_data] = D
        out[..., self.n_data:] = 1.0
        finite = np.isfinite(D)
        if not finite.all():
            for k, uses in enumerate(self.term_uses):
                if uses:
                    out[..., self.n_data + k] = np.all(finite[..., uses], axis=-1)
            out[..., :self.n_data][~finite] = 0.0
        return out


def value_and_grad(model, loss, z0, theta, ts, data=None, adjoint="discrete", **solver_kwargs):
    """Value and gradients (z0, theta, ts) of a loss of the solution; see the module docstring."""
    kind = type(loss)
    if (adjoint == "discrete" and data is None and V.plain_pair(z0, theta, model._zshape, model._tshape)
            and V.plain_times(ts)):
        fn = _prepared_for(model, loss, ts, solver_kwargs)
        if fn is not None:
            return fn(z0, theta)
    if isinstance(loss, RunningCost):
        return _running_cost(model, loss, z0, theta, ts, adjoint, solver_kwargs)
    if is_batch(z0, theta):
        return _value_and_grad_batch(model, loss, z0, theta, ts, data, adjoint, solver_kwargs)
    z0v, thv = model._zt(z0, theta)
    tsv = V.times(ts)
    if kind is not ObservationLoss and callable(loss) and not isinstance(loss, (sp.Basic, FinalLoss)):
        def user_cot(sol):
            value, cot = loss(sol.t, sol.z)
            return value, cot, None

        return vjp(model, z0v, thv, tsv, user_cot, adjoint=adjoint, _checked=True, **solver_kwargs)
    return vjp(model, z0v, thv, tsv, _fused_loss(model, loss, tsv, data, thv), adjoint=adjoint, _checked=True,
               **solver_kwargs)


def _prepared_for(model, loss, ts, kw):
    """The ``value_and_grad_fn(loss, ts, **kw)`` that serves a ``value_and_grad`` call repeated with the same loss
    object, output times and settings (and no data, which may change in place between calls): prepared at the
    second such call (a loop over changing output times only pays the lookup), then reused. None: not (yet) one
    to prepare; the call takes the general path."""
    try:
        key = (id(loss), ts.tobytes(), tuple(sorted(kw.items())))
        hash(key)
    except TypeError:   # settings given as arrays or dicts
        return None
    cache = model.__dict__.setdefault("_prepared_vg", {})
    hit = cache.get(key)
    if hit is None or hit[0] is not loss:
        if len(cache) >= 64:
            cache.clear()
        cache[key] = (loss, None)   # seen once: keeps ``loss`` alive, so its id stays its own
        return None
    fn = hit[1]
    if fn is None:   # the second call: prepare it, or remember that it is not one to prepare (False)
        fn = False
        if not isinstance(loss, RunningCost) and isinstance(loss, (sp.Basic, FinalLoss, ObservationLoss)) and not (
                isinstance(loss, ObservationLoss) and len(loss.data_symbols)):
            prepared = ValueAndGradFn(model, loss, ts, None, "discrete", **kw)
            if prepared._fast is not None:   # (never calls back here: it has its own fused path)
                fn = prepared
        cache[key] = (loss, fn)
    return fn or None


def _fused_loss(model, loss, tsv, data, theta=None):
    """The FusedLoss of a SymPy expression, FinalLoss or ObservationLoss at the output times ``tsv``: compiled
    kernels, data rows and summed rows; with ``theta`` its fallback cotangent callable evaluates them on a
    solution (for the adjoints that are not fused)."""
    m, n, p = tsv.size, model.n_states, model.n_params
    if type(loss) is not ObservationLoss and isinstance(loss, (sp.Basic, FinalLoss)):
        expr = loss.expr if isinstance(loss, FinalLoss) else loss
        cl = _compiled_loss(model, expr, ())
        rows = np.array([m - 1], dtype=np.int64)
        D = np.zeros((m, 1))
    elif isinstance(loss, ObservationLoss):
        if not len(loss.data_symbols):  # no data: the compiled loss and its rows depend on len(ts) only
            cache = model.__dict__.setdefault("_obs_rows_cache", {})
            hit = cache.get((loss, m))
            if hit is None:
                if len(cache) >= 32:
                    cache.clear()
                cl = _compiled_loss(model, loss.expr, ())
                hit = cache[(loss, m)] = (cl, cl.data_rows(None, m), np.arange(m, dtype=np.int64))
            cl, D, rows = hit
        else:
            cl = _compiled_loss(model, loss.expr, loss.data_symbols)
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


class ValueAndGradFn:
    """``model.value_and_grad_fn(loss, ts, data, ...)``: a function ``(z0, theta) -> Gradient`` equal to
    ``model.value_and_grad(loss, z0, theta, ts, data, ...)`` with everything that does not depend on z0 and
    theta (the output times, the loss's kernels and data rows, the solver settings) checked and prepared once,
    as one prepares a jitted function in JAX. Per call it checks z0 and theta and makes the one compiled call of
    the fused discrete adjoint; other cases (batches, other adjoints, implicit methods, callables) go through
    ``value_and_grad`` with the same arguments."""

    def __init__(self, model, loss, ts, data=None, adjoint="discrete", **kwargs):
        self.model, self.loss, self.data, self.adjoint, self.kwargs = model, loss, data, adjoint, dict(kwargs)
        self.ts = V.times(ts)
        self._fast = None
        kw = dict(kwargs)
        grad_t = kw.pop("grad_t", True)
        throw = kw.pop("throw", True)
        opts = model._options(kw.pop("method", "dopri5"), kw.pop("rtol", 1e-6), kw.pop("atol", 1e-9),
                              kw.pop("dt", None), kw.pop("max_steps", 100_000), kw.pop("dt_max", None),
                              kw.pop("controller", None), time_limit=kw.pop("time_limit", None))
        if kw and not set(kw) <= {"seminorm", "adjoint_rtol", "adjoint_atol", "checkpoints", "reduce"}:
            raise InputValidationError(f"unknown keyword argument(s) {', '.join(map(repr, kw))}")
        if (adjoint == "discrete" and opts[0].kind == "explicit" and not kw and not isinstance(loss, RunningCost)
                and (isinstance(loss, (sp.Basic, FinalLoss, ObservationLoss)))):
            fused = _fused_loss(model, loss, self.ts, data)
            self._fast = (fused, opts, throw, grad_t)
            rtol_a, atol_a, ctrl = opts[2], opts[3], opts[6]
            a, b, be, c, dense = opts[0].packed()[:5]
            n, p, m = model.n_states, model.n_params, self.ts.size
            # the prepared call's arguments but z0, theta, the capacity hint and the outputs
            self._flat = ((n,), (p,), flat_size(n, p, m), model.compiled.kern, self.ts, fused.addr, fused.D,
                          fused.rows, a, b, be, c, dense, rtol_a, atol_a, ctrl) + flat_settings(opts, grad_t)

    def __call__(self, z0, theta=()):
        fast = self._fast
        # z0 and theta that are already what the compiled call takes (float64, contiguous, writeable, of the
        # model's sizes) go straight to it, which checks that they are finite; anything else goes through the
        # validating path, which converts them or names the problem
        if fast is not None and V.plain_pair(z0, theta, self._flat[0], self._flat[1]):
            zshape, tshape, size, kern, ts, laddr, lD, lrows, a, b, be, c, dense, rtol, atol, ctrl, fcfg, icfg = \
                self._flat
            buf = np.zeros(size)
            stats = np.zeros(8, dtype=np.int64)
            model = self.model
            status, nrec, value, finite = vjp_discrete_flat(kern, theta, ts, z0, laddr, lD, lrows, a, b, be, c, dense,
                                                            rtol, atol, ctrl, fcfg, icfg, model._rec_cap, buf, stats)
            if status >= 0:   # -1: z0 or theta not finite, named by the validating path below
                model._note_steps(nrec)
                if status == 0 and finite:
                    return _PreparedGradient(self, buf, stats, nrec, value)
                n, p, m = zshape[0], tshape[0], ts.size
                o = n + p + m
                return fused_result(fast[1][0], fast[1][4], fast[2], status, nrec, value, finite, ts.copy(),
                                    buf[o:o + m * n].reshape(m, n), buf[:n], buf[n:n + p], buf[n + p:o], stats,
                                    float(buf[o + 2 * m * n]), fast[3], True)
        if fast is None or is_batch(z0, theta):
            return value_and_grad(self.model, self.loss, z0, theta, self.ts, data=self.data, adjoint=self.adjoint,
                                  **self.kwargs)
        fused, opts, throw, grad_t = fast
        z0v, thv = self.model._zt(z0, theta)
        return _discrete_fused(self.model, z0v, thv, self.ts.copy(), None, opts, throw, loss=fused, grad_t=grad_t)


def _prepared_t(g):
    fn = g._fn
    o = fn._flat[0][0] + fn._flat[1][0]
    return g._buf[o:o + fn.ts.size] if fn._fast[3] else None   # dL/dts, when asked for (grad_t)


def _prepared_solution(g):
    fn, buf = g._fn, g._buf
    n, p, m = fn._flat[0][0], fn._flat[1][0], fn.ts.size
    o = n + p + m
    return PreparedSolution(fn.ts.copy(), buf[o:o + m * n].reshape(m, n), g._st, fn._fast[1][0].name,
                            float(buf[o + 2 * m * n]))


class _PreparedGradient(Gradient):
    """What a prepared call returns on success: a Gradient whose ``z0``, ``theta`` and ``value`` are set at once
    and whose ``t``, ``stats`` and ``solution`` are built from the compiled call's outputs when first read (a
    short solve's Python is a measurable part of its cost). Equal, field for field, to what value_and_grad
    returns; it pickles as a plain Gradient."""

    def __init__(self, fn, buf, stats, nrec, value):   # not the dataclass's: the lazy fields stay unset
        n, p = fn._flat[0][0], fn._flat[1][0]
        self._fn, self._buf, self._st, self._nrec = fn, buf, stats, nrec
        self.z0 = buf[:n]
        self.theta = buf[n:n + p]
        self.value = float(value)

    t = lazy_field("t", _prepared_t)
    solution = lazy_field("solution", _prepared_solution)
    stats = lazy_field("stats", lambda g: dict(forward=g.solution.stats, steps_recorded=int(g._nrec)))

    def __reduce__(self):
        return (Gradient, (self.z0, self.theta, self.t, self.value, self.stats, self.solution))


def _value_and_grad_batch(model, loss, z0, theta, ts, data, adjoint, kw):
    """Batched value_and_grad: z0 (B, n) and/or theta (B, p); ``data`` (m, w) shared or (B, m, w) per member.
    One compiled parallel call: each member's forward solve, loss, cotangent and discrete-adjoint sweep.
    Shared inputs (z0, theta or data without a batch dimension) are passed as one row, not copied B times."""
    if adjoint != "discrete":
        raise InputValidationError("batched value_and_grad uses adjoint='discrete' (the others run per trajectory)")
    if isinstance(loss, (sp.Basic, FinalLoss)):
        cl = _compiled_loss(model, loss.expr if isinstance(loss, FinalLoss) else loss, ())
        summed = "final"
    elif isinstance(loss, ObservationLoss):
        cl = _compiled_loss(model, loss.expr, loss.data_symbols)
        if data is None and len(loss.data_symbols):
            raise InputValidationError("an ObservationLoss with data symbols needs `data` (one row per output time)")
        summed = "all"
    else:
        raise InputValidationError(f"batched value_and_grad takes a SymPy expression, FinalLoss or ObservationLoss, "
                                   f"not {type(loss).__name__}")
    Z, T, B = _broadcast(model, z0, theta, expand=False)
    tsv = V.times(ts)
    m = tsv.size
    if summed == "final" or cl.n_data == 0:
        D = cl.data_rows(None, m)[None]
    else:
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim == 3:
            if arr.shape[0] != B:
                raise InputValidationError(f"`data` has {arr.shape[0]} members; the batch has {B}")
            D = cl.data_rows(arr, m, batch=B)
        else:
            D = cl.data_rows(arr, m)[None]
    rows = cl.rows(m, summed == "final")
    reduce = kw.pop("reduce", None)
    grad_t = kw.pop("grad_t", True)
    throw = kw.pop("throw", True)
    opts = model._options(kw.pop("method", "dopri5"), kw.pop("rtol", 1e-6), kw.pop("atol", 1e-9), kw.pop("dt", None),
                          kw.pop("max_steps", 100_000), kw.pop("dt_max", None), kw.pop("controller", None))
    if kw:
        raise InputValidationError(f"unknown keyword argument(s) {', '.join(map(repr, kw))}")
    return vjp_batch(model, Z, T, tsv, None, opts, throw, reduce=reduce, loss=(cl.addr, D, rows), grad_t=grad_t,
                     batch=B)


def _solve_kwargs(kw):
    keep = ("method", "rtol", "atol", "dt", "max_steps", "throw", "dt_max", "controller")
    return {k: v for k, v in kw.items() if k in keep}


def _compiled_loss(model, expr, data_symbols):
    cache = model.__dict__.setdefault("_loss_cache", {})
    hit = cache.get((id(expr), id(data_symbols)))
    if hit is not None and hit[0] is expr and hit[1] is data_symbols:
        return hit[2]
    key = (sp.sympify(expr), tuple(data_symbols))  # SymPy expressions hash structurally (and cache their hash)
    if key not in cache:
        cache[key] = CompiledLoss(model, expr, data_symbols)
    cl = cache[key]
    if len(cache) < 256:   # identity shortcut for the objects of a training loop (they stay referenced here)
        cache[(id(expr), id(data_symbols))] = (expr, data_symbols, cl)
    return cl


def _running_cost(model, loss, z0, theta, ts, adjoint, solver_kwargs):
    from ._ode import ODE

    aug = model.__dict__.setdefault("_running_cost_models", {})
    key = sp.srepr(sp.sympify(loss.expr))
    if key not in aug:
        q = sp.Dummy("_symode_running_cost")
        aug[key] = ODE(list(model._sym.rhs) + [loss.expr], states=list(model.states) + [q],
                       params=list(model.params), t=model.t)
    am = aug[key]
    z0v, thv = model._zt(z0, theta)
    from . import _validate as V

    tsv = V.times(ts)
    m, n = tsv.size, model.n_states
    cot = np.zeros((m, n + 1))
    cot[-1, n] = 1.0
    g = am.vjp(np.concatenate([z0v, [0.0]]), thv, tsv, cot, adjoint=adjoint, **solver_kwargs)
    g.value = float(g.solution.z[-1, n])
    g.z0 = g.z0[:n].copy()
    return g
