"""The engine's internal interfaces (docs/architecture.md): the runtime's bounded caches, configs checked as
given (never served from a cache entry of an equal but different value), and the discrete adjoint split into a
recorded forward pass and a sweep (what the framework bridges use) equal to the one-call gradient."""
import numpy as np
import pytest
import sympy as sp

import symode
from symode._engine.adjoints import AdjointRequest
from symode._engine.adjoints import discrete

from .helpers import P1_THETA, P1_Z0, lotka_volterra


def test_memo_is_bounded_and_builds_once():
    m = lotka_volterra()
    rt = m._rt
    calls = []
    for k in range(10):
        rt.memo("test-kind", k, lambda k=k: calls.append(k) or k * k, size=4)
    assert calls == list(range(10))
    assert rt.memo("test-kind", 9, lambda: -1, size=4) == 81          # kept: no second build
    assert rt.lookup("test-kind", 0) is None                          # the oldest went first
    assert len(rt._memo["test-kind"]) == 4


def test_config_validation_does_not_depend_on_what_was_called_before():
    """max_steps=1e3 and max_steps=1000 hash equal: each is checked as itself whatever was cached first."""
    m = lotka_volterra()
    ts = np.linspace(0, 1, 5)
    outcomes = []
    for order in ((1000, 1e3), (1e3, 1000)):
        m2 = lotka_volterra()
        got = []
        for ms in order:
            try:
                m2.solve(P1_Z0, P1_THETA, ts, max_steps=ms)
                got.append((type(ms), "ok"))
            except symode.InputValidationError:
                got.append((type(ms), "refused"))
        outcomes.append(sorted(got, key=str))
    assert outcomes[0] == outcomes[1]
    assert m.solve(P1_Z0, P1_THETA, ts).success


@pytest.mark.parametrize("method", ["dopri5", "rk4", "rodas5"])
def test_record_then_sweep_equals_vjp(method):
    m = lotka_volterra()
    ts = np.array([0.0, 0.3, 1.1, 2.0])
    cot = np.random.default_rng(0).normal(size=(ts.size, 2))
    kw = dict(method=method, dt=0.05) if method == "rk4" else dict(method=method)
    g = m.vjp(P1_Z0, P1_THETA, ts, cot, **kw)
    rt = m._rt
    cfg = rt.config(method, 1e-6, 1e-9, kw.get("dt"), 100_000, None)
    z0, th = rt.zt(P1_Z0, P1_THETA)
    req = AdjointRequest(rt, z0, th, ts, None, cfg, True)
    fwd, sol = discrete.record(req)
    assert np.array_equal(sol.z, g.solution.z)
    g2 = discrete.sweep(req, fwd, sol, cot)
    # the one-call path (explicit: the fused compiled call) and the split one agree to rounding
    for a, b in ((g.z0, g2.z0), (g.theta, g2.theta), (g.t, g2.t)):
        assert np.allclose(a, b, rtol=1e-13, atol=1e-13 * np.abs(a).max())


def test_auxiliary_models_are_runtimes_not_odes():
    """The sensitivity system and the running-cost augmentation live in the runtime's caches as runtimes of
    transformed symbolic models: no ODE object is created inside the engine."""
    x = sp.Symbol("x")
    k = sp.Symbol("k")
    m = symode.ODE([-k * x], [x], [k])
    ts = np.linspace(0, 1, 3)
    S = m.sensitivities([1.0], [0.5], ts, method="rodas5")
    assert np.allclose(S.dz_dtheta[-1, 0, 0], -np.exp(-0.5), rtol=1e-4)
    g = m.value_and_grad(symode.RunningCost(x ** 2), [1.0], [0.5], ts)
    assert np.isclose(g.value, (1 - np.exp(-1.0)) / 1.0, rtol=1e-5)   # integral of e^{-t} over [0, 1]
    kinds = set(m._rt._memo)
    assert {"sensitivity_model", "running_cost"} <= kinds
    assert not any(isinstance(v, symode.ODE) for store in m._rt._memo.values() for v in store.values())


@pytest.mark.parametrize("adjoint", ["discrete", "checkpoint", "forward"])
def test_a_loss_outside_its_domain_is_named(adjoint):
    """FinalLoss(log(-x)) on a positive solution: the error names the loss's domain, not the adjoint (issue 20,
    item 21)."""
    x, k = sp.symbols("x k")
    m = symode.ODE([-k * x], [x], [k])
    with pytest.raises(symode.IntegrationError, match="loss is nan on the solution.*outside its domain"):
        m.value_and_grad(symode.FinalLoss(sp.log(-x)), [1.0], [0.5], [0.0, 1.0], adjoint=adjoint)
