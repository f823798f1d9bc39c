"""symode.jax: gradients equal symode's own vjp under jit, grad, vmap (together), batches, bad inputs, errors."""
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

import symode  # noqa: E402
import symode.jax as sj  # noqa: E402

from .helpers import lotka_volterra  # noqa: E402

TOL = dict(rtol=1e-8, atol=1e-8)
THETA = np.array([1.5, 1.0, 3.0, 1.0])
Z0 = np.array([1.0, 1.0])
TS = np.linspace(0.0, 4.0, 21)
W = np.random.default_rng(0).normal(size=(TS.size, 2))     # L = sum(W * z)  ->  cotangent W


@pytest.fixture(scope="module", autouse=True)
def x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


@pytest.fixture(scope="module")
def model():
    return lotka_volterra()


def _close(got, want):
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-9 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("adjoint", ["discrete", "checkpoint"])
def test_jit_value_and_grad_equal_symode(model, adjoint):
    def loss(z0, th, ts):
        return jnp.sum(jnp.asarray(W) * sj.odeint(model, z0, th, ts, adjoint=adjoint, **TOL))

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    v, (gz, gth, gts) = f(jnp.asarray(Z0), jnp.asarray(THETA), jnp.asarray(TS))
    ref = model.solve(Z0, THETA, TS, **TOL).z
    g = model.vjp(Z0, THETA, TS, W, adjoint=adjoint, **TOL)
    _close(v, np.sum(W * ref))
    _close(gz, g.z0)
    _close(gth, g.theta)
    _close(gts, g.t)
    v2, _ = f(jnp.asarray(Z0), jnp.asarray(THETA) * 1.01, jnp.asarray(TS))   # same compilation, new values
    assert abs(float(v2) - float(v)) > 1e-6


def test_jit_vmap_grad_together(model):
    rng = np.random.default_rng(1)
    T = THETA * (1 + 0.1 * rng.random((5, 4)))
    Z = 0.5 + rng.random((5, 2))

    def loss(z0, th):
        return jnp.sum(jnp.asarray(W) * sj.odeint(model, z0, th, TS, **TOL))

    for in_axes, zz in (((None, 0), Z0), ((0, 0), Z)):
        f = jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1)), in_axes=in_axes))
        v, (gz, gth) = f(jnp.asarray(zz), jnp.asarray(T))
        assert gz.shape == (5, 2) and gth.shape == (5, 4)
        for i in range(5):
            zi = zz if zz.ndim == 1 else zz[i]
            g = model.vjp(zi, T[i], TS, W, **TOL)
            _close(v[i], np.sum(W * model.solve(zi, T[i], TS, **TOL).z))
            _close(gz[i], g.z0)
            _close(gth[i], g.theta)
    # grad of a vmapped sum: the shared z0's gradient is summed over the members
    gz = jax.jit(jax.grad(lambda z0: jnp.sum(jax.vmap(loss, in_axes=(None, 0))(z0, jnp.asarray(T)))))(jnp.asarray(Z0))
    _close(gz, sum(model.vjp(Z0, T[i], TS, W, **TOL).z0 for i in range(5)))


def test_vmap_is_one_batched_call(model, monkeypatch):
    calls = []
    real = model.solve

    def spy(z0, theta, ts, **kw):
        calls.append(np.shape(theta))
        return real(z0, theta, ts, **kw)

    monkeypatch.setattr(model, "solve", spy)
    T = np.tile(THETA, (6, 1))
    out = jax.jit(jax.vmap(lambda th: sj.odeint(model, jnp.asarray(Z0), th, TS, **TOL)))(jnp.asarray(T))
    assert out.shape == (6, TS.size, 2) and calls == [(6, 4)]


def test_leading_batch_dims_and_vmapped_times(model):
    T = np.stack([THETA, THETA * 1.1])
    out = sj.odeint(model, jnp.asarray(Z0), jnp.asarray(T), jnp.asarray(TS), **TOL)
    assert out.shape == (2, TS.size, 2)
    _close(out[1], model.solve(Z0, T[1], TS, **TOL).z)
    gth = jax.grad(lambda th: jnp.sum(sj.odeint(model, jnp.asarray(Z0), th, TS, **TOL)))(jnp.asarray(T))
    _close(gth[0], model.vjp(Z0, T[0], TS, np.ones((TS.size, 2)), **TOL).theta)
    TSS = np.stack([TS, TS * 1.5])        # vmapped output times (different per member)
    out = jax.vmap(lambda ts: sj.odeint(model, jnp.asarray(Z0), jnp.asarray(THETA), ts, **TOL))(jnp.asarray(TSS))
    _close(out[1], model.solve(Z0, THETA, TSS[1], **TOL).z)


def test_float32_converted(model):
    out = sj.odeint(model, jnp.asarray(Z0, dtype=jnp.float32), jnp.asarray(THETA, dtype=jnp.float32), TS, **TOL)
    assert out.dtype == jnp.float64


def test_bad_inputs(model):
    with pytest.raises(TypeError, match="floating-point"):
        sj.odeint(model, jnp.asarray([1, 1]), THETA, TS)
    with pytest.raises(symode.InputValidationError, match="z0"):
        sj.odeint(model, jnp.ones(3), THETA, TS)
    with pytest.raises(symode.InputValidationError, match="theta"):
        jax.jit(lambda th: sj.odeint(model, Z0, th, TS))(jnp.ones(5))
    with pytest.raises(symode.InputValidationError, match="ts"):
        sj.odeint(model, Z0, THETA, jnp.ones((2, 3)))
    with pytest.raises(symode.InputValidationError, match="adjoint"):
        sj.odeint(model, Z0, THETA, TS, adjoint="magic")


def test_solver_failure_carries_symode_message(model):
    with pytest.raises(Exception, match="max_steps|MAX_STEPS|steps") as e:
        jax.block_until_ready(jax.jit(lambda th: sj.odeint(model, Z0, th, TS, max_steps=3))(jnp.asarray(THETA)))
    assert "IntegrationError" in str(e.value) or isinstance(e.value, symode.IntegrationError)


def test_needs_x64(model):
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(TypeError, match="jax_enable_x64"):
            sj.odeint(model, Z0, THETA, TS)
    finally:
        jax.config.update("jax_enable_x64", True)


def test_core_import_never_imports_jax():
    code = "import sys, symode; assert 'jax' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_no_rebuild_per_call(model, monkeypatch):
    built = []
    real = sj._make
    monkeypatch.setattr(sj, "_make", lambda spec: built.append(spec) or real(spec))
    for k in range(3):
        sj.odeint(model, Z0, THETA * (1 + 0.01 * k), TS, rtol=1e-7, atol=1e-9, dt_max=0.5)   # eager calls
    assert len(built) == 1
    sj.odeint(model, Z0, THETA, TS, rtol=1e-6, atol=1e-9, dt_max=0.5)                        # new settings
    assert len(built) == 2


def test_vmap_rosenbrock_loops_members(model):
    T = np.stack([THETA, THETA * 1.05])
    g = jax.jit(jax.vmap(jax.grad(lambda th: jnp.sum(jnp.asarray(W) * sj.odeint(model, Z0, th, TS, method="rodas5",
                                                                                    **TOL)))))(jnp.asarray(T))
    for i in range(2):
        _close(g[i], model.vjp(Z0, T[i], TS, W, method="rodas5", **TOL).theta)
