"""symode.torch: gradients equal symode's own vjp, gradcheck, batches, ODELayer, bad inputs, errors."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import symode  # noqa: E402
import symode.torch as st  # noqa: E402

from .helpers import lotka_volterra  # noqa: E402

TOL = dict(rtol=1e-8, atol=1e-8)
THETA = np.array([1.5, 1.0, 3.0, 1.0])
Z0 = np.array([1.0, 1.0])
TS = np.linspace(0.0, 4.0, 21)


@pytest.fixture(scope="module")
def model():
    return lotka_volterra()


def _t(x, grad=True):
    return torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=grad)


def _cot(m, n, seed=0):
    return np.random.default_rng(seed).normal(size=(m, n))


@pytest.mark.parametrize("adjoint", ["discrete", "checkpoint", "backsolve", "forward"])
def test_gradients_equal_symode_vjp(model, adjoint):
    z0, th, ts = _t(Z0), _t(THETA), _t(TS)
    zs = st.odeint(model, z0, th, ts, method="dopri5", adjoint=adjoint, **TOL)
    ref = model.solve(Z0, THETA, TS, method="dopri5", **TOL)
    np.testing.assert_array_equal(zs.detach().numpy(), ref.z)
    C = _cot(TS.size, 2)
    zs.backward(torch.from_numpy(C))
    g = model.vjp(Z0, THETA, TS, C, adjoint=adjoint, method="dopri5", **TOL)
    for got, want in ((z0.grad, g.z0), (th.grad, g.theta), (ts.grad, g.t)):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-9 * max(1.0, np.abs(want).max()))


def test_discrete_rosenbrock_reuses_records(model):
    z0, th = _t(Z0), _t(THETA)
    zs = st.odeint(model, z0, th, TS, method="rodas5", **TOL)
    C = _cot(TS.size, 2, 1)
    zs.backward(torch.from_numpy(C))
    g = model.vjp(Z0, THETA, TS, C, method="rodas5", **TOL)
    np.testing.assert_allclose(th.grad.numpy(), g.theta, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(z0.grad.numpy(), g.z0, rtol=1e-9, atol=1e-9)


def test_gradcheck_fixed_step(model):
    # exact for z0 and theta (the discrete adjoint of fixed steps); dL/dts is the continuous-time c.f(z(t)), which
    # finite differences of a fixed-step solve match only to the method's accuracy (tested against model.vjp above)
    ts = _t(np.linspace(0, 1, 5), grad=False)
    f = lambda z0, th: st.odeint(model, z0, th, ts, method="rk4", dt=0.05)  # noqa: E731
    assert torch.autograd.gradcheck(f, (_t(Z0), _t(THETA)), eps=1e-6, atol=1e-6)


def test_gradcheck_adaptive_tight(model):
    f = lambda z0, th: st.odeint(model, z0, th, TS[:6], method="dopri5", rtol=1e-12, atol=1e-12)  # noqa: E731
    assert torch.autograd.gradcheck(f, (_t(Z0), _t(THETA)), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_batch_matches_members(model):
    rng = np.random.default_rng(3)
    Z = 0.5 + rng.random((3, 1, 2))
    T = THETA * (1 + 0.1 * rng.random((4, 4)))           # batch (3, 4) by broadcasting
    z0, th = _t(Z), _t(T)
    zs = st.odeint(model, z0, th, TS, **TOL)
    assert zs.shape == (3, 4, TS.size, 2)
    C = rng.normal(size=zs.shape)
    zs.backward(torch.from_numpy(C))
    gz, gth = np.zeros_like(Z), np.zeros_like(T)
    for i in range(3):
        for j in range(4):
            np.testing.assert_array_equal(zs[i, j].detach().numpy(), model.solve(Z[i, 0], T[j], TS, **TOL).z)
            g = model.vjp(Z[i, 0], T[j], TS, C[i, j], **TOL)
            gz[i, 0] += g.z0
            gth[j] += g.theta
    np.testing.assert_allclose(z0.grad.numpy(), gz, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(th.grad.numpy(), gth, rtol=1e-9, atol=1e-9)


def test_float32_converted_and_numpy_inputs(model):
    z0 = torch.tensor(Z0, dtype=torch.float32, requires_grad=True)
    zs = st.odeint(model, z0, torch.tensor(THETA, dtype=torch.float32), TS, **TOL)
    assert zs.dtype == torch.float32
    zs.sum().backward()
    assert z0.grad.dtype == torch.float32
    zs64 = st.odeint(model, Z0, THETA, TS, **TOL)      # NumPy inputs: float64, no graph
    assert zs64.dtype == torch.float64 and not zs64.requires_grad


def test_layer_trains(model):
    target = torch.from_numpy(model.solve(Z0, THETA, TS, **TOL).z)
    layer = st.ODELayer(model, TS, theta=THETA * 1.1, **TOL)
    assert [n for n, _ in layer.named_parameters()] == ["theta"]
    opt = torch.optim.Adam(layer.parameters(), lr=0.02)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = ((layer(torch.from_numpy(Z0)) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert layer(torch.from_numpy(np.tile(Z0, (2, 1)))).shape == (2, TS.size, 2)


def test_bad_inputs(model):
    with pytest.raises(TypeError, match="floating-point"):
        st.odeint(model, torch.tensor([1, 1]), THETA, TS)
    with pytest.raises(symode.InputValidationError, match="z0"):
        st.odeint(model, torch.ones(3, dtype=torch.float64), THETA, TS)
    with pytest.raises(symode.InputValidationError, match="theta"):
        st.odeint(model, Z0, torch.ones(3, dtype=torch.float64), TS)
    with pytest.raises(symode.InputValidationError, match="ts"):
        st.odeint(model, Z0, THETA, torch.ones((2, 3), dtype=torch.float64))
    with pytest.raises(symode.InputValidationError, match="monotonic"):
        st.odeint(model, Z0, THETA, [0.0, 1.0, 0.5])
    with pytest.raises(symode.InputValidationError, match="adjoint"):
        st.odeint(model, Z0, THETA, TS, adjoint="magic")
    with pytest.raises(symode.InputValidationError, match="unknown keyword"):
        st.odeint(model, Z0, THETA, TS, rtoll=1e-3)
    with pytest.raises(symode.InputValidationError, match="do not broadcast"):
        st.odeint(model, np.ones((3, 2)), np.ones((2, 4)), TS)
    with pytest.raises(symode.InputValidationError, match="not finite"):
        st.odeint(model, [np.nan, 1.0], THETA, TS)


def test_integration_failure_is_symode_error(model):
    with pytest.raises(symode.IntegrationError) as e:
        st.odeint(model, _t(Z0), _t(THETA), TS, max_steps=3)
    assert isinstance(e.value, RuntimeError) and "MAX_STEPS" in str(e.value)


def test_core_import_never_imports_frameworks():
    code = ("import sys, symode; m = symode.ODE.from_text('states: x\\nparams: a\\ndx/dt = -a*x'); "
            "assert 'torch' not in sys.modules and 'jax' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_torch_compile_one_graph_break(model):
    import torch._dynamo as dynamo

    ts = torch.from_numpy(TS)

    def f(z0, th):
        return (st.odeint(model, z0 * 1.0, th, ts, **TOL) ** 2).sum()

    explanation = dynamo.explain(f)(_t(Z0), _t(THETA))
    assert explanation.graph_break_count == 1 and explanation.graph_count == 2
    th, th_c = _t(THETA), _t(THETA)
    f(_t(Z0), th).backward()
    v = torch.compile(f, backend="eager")(_t(Z0), th_c)
    v.backward()
    np.testing.assert_array_equal(th_c.grad.numpy(), th.grad.numpy())


def test_loop_paths_rosenbrock_batch_and_checkpoint_batch(model):
    T = np.stack([THETA, THETA * 1.05])
    for kw in (dict(method="rodas5"), dict(method="dopri5", adjoint="checkpoint")):
        th = _t(T)
        zs = st.odeint(model, Z0, th, TS, **kw, **TOL)
        C = _cot(TS.size, 2, 5)
        zs.backward(torch.from_numpy(np.stack([C, -C])))
        for i, sign in enumerate((1, -1)):
            g = model.vjp(Z0, T[i], TS, sign * C, **kw, **TOL)
            np.testing.assert_allclose(th.grad[i].numpy(), g.theta, rtol=1e-9, atol=1e-9)


def test_nonfinite_cotangent_and_bad_dtypes(model):
    zs = st.odeint(model, _t(Z0), _t(THETA), TS, **TOL)
    with pytest.raises(symode.SymodeError, match="not finite|NaN"):
        zs.backward(torch.full_like(zs, float("nan")))
    with pytest.raises(TypeError, match="floating-point"):
        st.odeint(model, torch.tensor(Z0, dtype=torch.complex128), THETA, TS)
    with pytest.raises(TypeError, match="floating-point"):
        st.odeint(model, Z0, torch.ones(4, dtype=torch.bool), TS)


def test_inplace_change_before_backward_is_caught(model):
    th = _t(np.tile(THETA, (2, 1)))
    th2 = th * 1.0
    zs = st.odeint(model, Z0, th2, TS, **TOL)
    with torch.no_grad():
        th2.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        zs.sum().backward()
