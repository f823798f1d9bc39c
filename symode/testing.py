"""Tools for property-testing models and gradients: Hypothesis strategies and gradient checks.

``hypothesis`` is only needed for the strategies (install the ``test`` extra).

Examples
--------
>>> from hypothesis import given
>>> from symode.testing import odes
>>> @given(odes())
... def test_my_property(model): ...
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from ._engine.adjoints import ADJOINTS as _ADJOINT_MODULES
from ._numeric.methods import get as get_method
from .ode import ODE

ADJOINTS = tuple(_ADJOINT_MODULES)

try:  # strategies need hypothesis; check_gradients does not
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None

# Names chosen to break naive code generators: keywords, builtins, generated names, Unicode, non-identifiers.
HOSTILE_NAMES = ["lambda", "x y", "import os", "α", "np", "z", "out", "theta", "t", "a", "_s0", "w", "math",
                 "class", "z[0]", "a.b", "1x", "__import__('os').system('echo HACKED')", "None", "f", "K",
                 "out_z", "numba", "w[0]", "\nimport os"]


def _need():
    if st is None:  # pragma: no cover
        raise ImportError("symode.testing strategies need hypothesis: pip install 'symode[test]'")


def symbol_names(hostile=True):
    """Strategy for symbol names: plain identifiers, plus hostile names when ``hostile``."""
    _need()
    plain = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
    return st.one_of(plain, st.sampled_from(HOSTILE_NAMES)) if hostile else plain


def expressions(leaves, max_leaves=8):
    """Strategy for real expression trees over `leaves` that stay finite for moderate arguments.

    Nodes: +, -, *, division by (1 + u^2), integer powers 2 and 3, sin, cos, tanh, exp of a bounded argument,
    log(1 + u^2) and sqrt(1 + u^2).
    """
    _need()
    consts = st.sampled_from([sp.Integer(2), sp.Rational(1, 2), sp.Float(0.3), sp.Integer(-1), sp.Rational(3, 4)])
    base = st.one_of(st.sampled_from(list(leaves)), consts) if leaves else consts

    def extend(children):
        unary = st.sampled_from([
            lambda u: sp.sin(u), lambda u: sp.cos(u), lambda u: sp.tanh(u), lambda u: sp.exp(sp.sin(u)),
            lambda u: sp.log(1 + u ** 2), lambda u: sp.sqrt(1 + u ** 2), lambda u: u ** 2, lambda u: u ** 3 / 10,
            lambda u: -u])
        binary = st.sampled_from([lambda u, v: u + v, lambda u, v: u - v, lambda u, v: u * v,
                                  lambda u, v: u / (1 + v ** 2)])
        return st.one_of(st.builds(lambda f, u: f(u), unary, children),
                         st.builds(lambda f, u, v: f(u, v), binary, children, children))

    return st.recursive(base, extend, max_leaves=max_leaves)


@st.composite if st is not None else (lambda f: f)
def odes(draw, max_states=3, max_params=3, hostile_names=True, time=None, stable=True):
    """Strategy for random well-posed :class:`symode.ODE` models.

    Right-hand sides are ``-c*z_i + g_i(z, theta, t)`` with bounded-growth random g, so solutions stay
    finite on moderate time spans; names may be hostile (keywords, code, Unicode).
    """
    n = draw(st.integers(1, max_states))
    p = draw(st.integers(0, max_params))
    use_t = draw(st.booleans()) if time is None else time
    names = draw(st.lists(symbol_names(hostile_names), min_size=n + p + 1, max_size=n + p + 1, unique=True))
    syms = [sp.Symbol(nm, real=True) for nm in names]
    zs, ps, t = syms[:n], syms[n:n + p], syms[n + p]
    leaves = zs + ps + ([t] if use_t else [])
    rhs = []
    for i in range(n):
        g = draw(expressions(leaves))
        rhs.append(-zs[i] / 2 + sp.tanh(g) if stable else g)
    return ODE(rhs, states=zs, params=ps, t=t if use_t else None)


def arrays(n, lo=-1.5, hi=1.5):
    """Strategy for finite float64 vectors of length n with entries in [lo, hi]."""
    _need()
    return st.lists(st.floats(lo, hi, allow_nan=False, allow_infinity=False), min_size=n, max_size=n).map(
        lambda v: np.array(v, dtype=np.float64))


def time_grids(min_size=2, max_size=6, t_max=2.0):
    """Strategy for strictly increasing output-time grids starting at 0."""
    _need()
    return st.lists(st.floats(0.05, 1.0), min_size=min_size - 1, max_size=max_size - 1).map(
        lambda d: np.concatenate([[0.0], np.cumsum(np.array(d) * t_max / max(np.sum(d), 1e-9))]))


def check_gradients(model, z0, theta, ts, cotangent=None, adjoints=None, method="dopri5", rtol=1e-10, atol=1e-10,
                    dt=None, eps=None, seed=0, **kwargs):
    """Compare every adjoint variant (and forward sensitivities) with central finite differences of ``solve``.

    ``adjoints``: the kinds to check (default: every kind in ``symode.ADJOINTS``, so a new adjoint module is
    checked by every existing property test). ``**kwargs``: further solver settings of ``model.vjp`` and
    ``model.solve`` (max_steps, dt_max, controller, ...).

    The loss is L = sum_i cotangent[i] . z(ts[i]) (a random cotangent unless given), whose exact gradient is
    what ``vjp`` returns. Finite differences use steps ``eps * max(1, |x|)`` (default 1e-6 for fixed-step
    methods, where the map is smooth, and 1e-4 for adaptive ones, so that a change in the accepted step
    sequence, a jump of the order of ``rtol``, is not amplified into the quotient).

    Returns
    -------
    dict
        ``{"fd": {"z0", "theta"}, "<adjoint>": {"z0", "theta", "rel_err"}, ..., "worst": (name, rel_err)}``
        with the relative error max|g - fd| / max|fd| over z0 and theta together.
    """
    if adjoints is None:
        adjoints = ADJOINTS
    z0 = np.asarray(z0, dtype=float)
    theta = np.asarray(theta, dtype=float)
    ts = np.asarray(ts, dtype=float)
    n = model.n_states
    if cotangent is None:
        cotangent = np.random.default_rng(seed).normal(size=(ts.size, n))
    cotangent = np.asarray(cotangent, dtype=float)
    fixed = get_method(method).fixed
    if eps is None:
        eps = 1e-6 if fixed else 1e-4
    solver = dict(method=method, rtol=rtol, atol=atol, dt=dt, **kwargs)

    def loss(z, th):
        return float(np.sum(cotangent * model.solve(z, th, ts, **solver).z))

    def fd(fun, x):
        g = np.empty(x.size)
        for k in range(x.size):
            h = eps * max(1.0, abs(x[k]))
            xp, xm = x.copy(), x.copy()
            xp[k] += h
            xm[k] -= h
            g[k] = (fun(xp) - fun(xm)) / (2 * h)
        return g

    ref_z0 = fd(lambda v: loss(v, theta), z0)
    ref_th = fd(lambda v: loss(z0, v), theta)
    ref = np.concatenate([ref_z0, ref_th])
    scale = max(np.max(np.abs(ref)), 1e-300)
    report = {"fd": {"z0": ref_z0, "theta": ref_th}}
    worst = ("none", 0.0)
    for name in adjoints:
        g = model.vjp(z0, theta, ts, cotangent, adjoint=name, **solver)
        err = float(np.max(np.abs(np.concatenate([g.z0, g.theta]) - ref)) / scale)
        report[name] = {"z0": g.z0, "theta": g.theta, "t": g.t, "rel_err": err}
        if err > worst[1] or worst[0] == "none":
            worst = (name, err)
    report["worst"] = worst
    return report
