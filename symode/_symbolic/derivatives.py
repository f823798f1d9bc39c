"""Exact first derivatives of a canonical model: sparse Jacobians and the vector-Jacobian products.

Each output is differentiated only by its own free symbols, so structural zeros are known symbolically and
never differentiated, printed or evaluated. VJPs are not expanded symbolically: the generated code computes
the Jacobian's nonzero entries once (with common subexpressions shared) and forms ``a^T J`` as sums of
``a[i] * J[i, j]`` over the nonzero pattern.
"""
from __future__ import annotations

import functools

import sympy as sp

from .._errors import ModelTooLargeError


def _too_deep(what):
    return ModelTooLargeError(
        f"{what} exceeded Python's recursion limit in SymPy (the expressions are nested too deeply); symode "
        "refuses right-hand sides nested more than MAX_EXPRESSION_DEPTH levels at construction, so this is "
        "a deeply nested combination of them. Introduce intermediate states, compute repeated structure in a "
        "network block (symode.nn), or simplify the expressions")


def _recursion_guard(what):
    """Turn a RecursionError inside SymPy into a ModelTooLargeError naming `what`."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except RecursionError:
                raise _too_deep(what) from None
        return inner
    return wrap


class Derivatives:
    """Sparse exact derivatives of ``f`` with respect to z, theta and t.

    Attributes
    ----------
    jac_z : dict[(i, j), Expr]
        Nonzero entries of df_i/dz_j.
    jac_theta : dict[(i, k), Expr]
        Nonzero entries of df_i/dtheta_k.
    jac_t : dict[i, Expr]
        Nonzero entries of df_i/dt.
    """

    def __init__(self, model):
        z_index = {s: j for j, s in enumerate(model.z_c)}
        p_index = {s: k for k, s in enumerate(model.theta_c)}
        self.jac_z, self.jac_theta, self.jac_t = {}, {}, {}
        for i, fi in enumerate(model.rhs_c):
            free = fi.free_symbols
            for s in sorted(free, key=lambda s: s.name):
                d = sp.diff(fi, s)
                if d == 0:
                    continue
                if s in z_index:
                    self.jac_z[(i, z_index[s])] = d
                elif s in p_index:
                    self.jac_theta[(i, p_index[s])] = d
                elif s == model.t_c:
                    self.jac_t[i] = d
        self.jac_z = dict(sorted(self.jac_z.items()))
        self.jac_theta = dict(sorted(self.jac_theta.items()))
        self.n, self.p = model.n, model.p

    def dense_jac_z(self):
        J = sp.zeros(self.n, self.n)
        for (i, j), e in self.jac_z.items():
            J[i, j] = e
        return J

    def dense_jac_theta(self):
        J = sp.zeros(self.n, self.p)
        for (i, k), e in self.jac_theta.items():
            J[i, k] = e
        return J


def _runs(cols):
    """Sorted integer set -> list of half-open runs [(lo, hi), ...]."""
    out = []
    for c in sorted(cols):
        if out and out[-1][1] == c:
            out[-1][1] = c + 1
        else:
            out.append([c, c + 1])
    return [tuple(r) for r in out]


class NetworkDerivatives:
    """Derivative structure of a model whose right-hand side uses network blocks (symode.nn).

    With h the blocks' outputs (canonical symbols) and u_b the input expressions of block b, the model is
    f = F(z, theta, t, h) and h_b = net_b(u_b(z, theta, t, h_<b); W_b). Only *partial* derivatives are
    symbolic: ``PF[i]`` = {var: dF_i/dvar} and ``PU[b][a]`` = {var: du_{b,a}/dvar}, var one of ('z', j),
    ('p', k), ('t',), ('h', b, r). The chain rule through the blocks is carried out by the generated code
    (reverse mode: back-propagation through each block's layers). Structural patterns of the total
    Jacobians treat every block output as depending on every block input, and output r on all weights of
    the hidden layers plus row r (and bias r) of the last layer.

    Attributes
    ----------
    PF, PU : partial derivatives as above (nonzero entries only)
    pattern_z, pattern_theta : tuple of (i, j) structural nonzeros of df/dz, df/dtheta (sorted)
    t_rows : tuple of i with df_i/dt structurally nonzero
    rows_z, rows_theta, rows_t : rows whose total derivative goes through a block (computed by reverse sweeps)
    """

    def __init__(self, model):
        nets = model.networks
        self.n, self.p = model.n, model.p
        self.networks = nets
        self._model = model
        zi = {s: j for j, s in enumerate(model.z_c)}
        pi = {s: k for k, s in enumerate(model.theta_c)}
        hi = nets.h_index

        def partials(e):
            d = {}
            for s in sorted(e.free_symbols, key=lambda s: s.name):
                if s in zi:
                    key = ("z", zi[s])
                elif s in pi:
                    key = ("p", pi[s])
                elif s == model.t_c:
                    key = ("t",)
                elif s in hi:
                    key = ("h",) + hi[s]
                else:  # pragma: no cover - the model validated its symbols
                    raise ValueError(f"unexpected symbol {s}")
                v = sp.diff(e, s)
                if v != 0:
                    d[key] = v
            return d

        self.PF = [partials(e) for e in model.rhs_c]
        self.PU = [[partials(e) for e in cb.inputs_c] for cb in nets.blocks]
        # dependencies of each block's outputs (through its inputs, transitively)
        zdeps, tdep, thin = [], [], []
        for b, cb in enumerate(nets.blocks):
            zs, ts, ths = set(), False, set()
            for d in self.PU[b]:
                dz, dth, dt, outs = _direct_keys(d)
                zs |= dz
                ths |= dth
                ts = ts or dt
                for bb, rr in outs:
                    zs |= zdeps[bb]
                    ts = ts or tdep[bb]
                    ths |= thin[bb] | set(nets.blocks[bb].output_param_columns(rr))
            zdeps.append(zs)
            tdep.append(ts)
            thin.append(ths)
        self.block_zdeps, self.block_tdep, self.block_thin = zdeps, tdep, thin
        pz, pth, trows = [], [], []
        rows_z, rows_th, rows_t = [], [], []
        for i, d in enumerate(self.PF):
            zs, ths, ts, outs = _direct_keys(d)
            via_z = via_th = via_t = False
            for b, r in outs:
                if zdeps[b]:
                    via_z = True
                    zs |= zdeps[b]
                via_th = True
                ths |= thin[b] | set(nets.blocks[b].output_param_columns(r))
                if tdep[b]:
                    via_t = True
                    ts = True
            pz.extend((i, j) for j in sorted(zs))
            pth.extend((i, k) for k in sorted(ths))
            if ts:
                trows.append(i)
            if via_z:
                rows_z.append(i)
            if via_th:
                rows_th.append(i)
            if via_t:
                rows_t.append(i)
        self.pattern_z, self.pattern_theta, self.t_rows = tuple(pz), tuple(pth), tuple(trows)
        self.rows_z, self.rows_theta, self.rows_t = tuple(rows_z), tuple(rows_th), tuple(rows_t)
        self._flat = None

    def row_runs(self, pattern, rows):
        """{row: [(lo, hi), ...]} runs of the pattern's columns for the given rows."""
        cols = {i: [] for i in rows}
        for i, j in pattern:
            if i in cols:
                cols[i].append(j)
        return {i: _runs(c) for i, c in cols.items()}

    # ------------------------------------------------------------------ flat (display / reference) forms
    @_recursion_guard("differentiating the model (flat network form)")
    def _flat_derivatives(self):
        if self._flat is None:
            model = self._model
            sub = self.networks.flat_substitution()
            flat = [e.xreplace(sub) for e in model.rhs_c]
            jz = {(i, j): sp.diff(flat[i], model.z_c[j]) for i, j in self.pattern_z}
            jp = {(i, k): sp.diff(flat[i], model.theta_c[k]) for i, k in self.pattern_theta}
            jt = {i: sp.diff(flat[i], model.t_c) for i in self.t_rows}
            self._flat = ({k: v for k, v in jz.items() if v != 0}, {k: v for k, v in jp.items() if v != 0},
                          {k: v for k, v in jt.items() if v != 0})
        return self._flat

    @property
    def jac_z(self):
        """Nonzero entries of df/dz as flat expressions (networks expanded; for display only)."""
        return self._flat_derivatives()[0]

    @property
    def jac_theta(self):
        return self._flat_derivatives()[1]

    @property
    def jac_t(self):
        return self._flat_derivatives()[2]

    dense_jac_z = Derivatives.dense_jac_z
    dense_jac_theta = Derivatives.dense_jac_theta


@_recursion_guard("differentiating the model")
def derivatives(model):
    """The derivative structure of a canonical model (plain or with network blocks).

    Raises ModelTooLargeError (never a RecursionError) when SymPy's recursive differentiation runs out of
    stack."""
    if getattr(model, "networks", None) is not None:
        return NetworkDerivatives(model)
    return Derivatives(model)


def _direct_keys(d):
    """Split the keys of a partial-derivative dict: (state indices, parameter indices, depends on t, the
    (block, row) network outputs it goes through)."""
    zs, ths, ts, outs = set(), set(), False, []
    for key in d:
        if key[0] == "z":
            zs.add(key[1])
        elif key[0] == "p":
            ths.add(key[1])
        elif key[0] == "t":
            ts = True
        else:
            outs.append((key[1], key[2]))
    return zs, ths, ts, outs
