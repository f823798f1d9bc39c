"""The framework bridges on P1 (Lotka-Volterra, dopri5, rtol = atol = 1e-8, L = sum of z(ts)^2 over 101 output
times, gradient = value, dL/dz0, dL/dtheta), side by side in one run:

  symode value_and_grad_fn     the prepared native gradient (one compiled call), the reference of the ratios
  symode solve + vjp           the two-call native form (forward, then the fused vjp that solves again)
  symode.torch.odeint          loss.backward() through the autograd.Function (record + reverse sweep)
  symode.torch.ODELayer        the same with the solver settings checked once (an nn.Module)
  torchdiffeq odeint_adjoint   the continuous adjoint in PyTorch (if installed)
  symode.jax.odeint            jax.jit(jax.value_and_grad(loss)) (pure_callback forward, fused vjp backward)
  diffrax Dopri5               jax.jit(jax.value_and_grad(loss)), RecursiveCheckpointAdjoint (if installed)

Every gradient is checked against symode's own. Single thread (torch.set_num_threads(1)); medians of repeats.

    python bench/bench_bridges.py [--repeats 7] [--no-peers]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

import symode  # noqa: E402

import bench_common as C  # noqa: E402

KW = dict(method="dopri5", **C.P1_TOL)


def lv_model():
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("alpha beta gamma delta")
    return symode.ODE(rhs=[a * x - b * x * y, d * x * y - c * y], states=[x, y], params=[a, b, c, d])


def rows_native(model):
    loss = symode.ObservationLoss(sum(v ** 2 for v in model.states), [])
    fn = model.value_and_grad_fn(loss, C.P1_TS, grad_t=False, **KW)

    def native():
        g = fn(C.P1_Z0, C.P1_THETA)
        return g.value, np.concatenate([g.z0, g.theta])

    def two_calls():
        s = model.solve(C.P1_Z0, C.P1_THETA, C.P1_TS, **KW)
        g = model.vjp(C.P1_Z0, C.P1_THETA, C.P1_TS, 2.0 * s.z, **KW)
        return float(np.sum(s.z ** 2)), np.concatenate([g.z0, g.theta])

    return [("symode value_and_grad_fn (reference)", native), ("symode solve + vjp", two_calls)]


def rows_torch(model, peers):
    import torch

    import symode.torch as st

    torch.set_num_threads(1)
    ts = torch.from_numpy(C.P1_TS.copy())

    def odeint():
        z0 = torch.tensor(C.P1_Z0, requires_grad=True)
        th = torch.tensor(C.P1_THETA, requires_grad=True)
        loss = (st.odeint(model, z0, th, ts, **KW) ** 2).sum()
        loss.backward()
        return loss.item(), torch.cat([z0.grad, th.grad]).numpy()

    layer = st.ODELayer(model, ts, theta=C.P1_THETA, **KW)

    def odelayer():
        layer.theta.grad = None
        z0 = torch.tensor(C.P1_Z0, requires_grad=True)
        loss = (layer(z0) ** 2).sum()
        loss.backward()
        return loss.item(), torch.cat([z0.grad, layer.theta.grad]).numpy()

    zs_np = model.solve(C.P1_Z0, C.P1_THETA, C.P1_TS, **KW).z
    cot_np = np.zeros((2 + 4,))

    class Const(torch.autograd.Function):     # the framework's fixed cost: same graph, no solver
        @staticmethod
        def forward(ctx, a, b):
            return torch.from_numpy(zs_np.copy())

        @staticmethod
        def backward(ctx, g):
            g.numpy()
            return torch.from_numpy(cot_np[:2].copy()), torch.from_numpy(cot_np[2:].copy())

    def fixed():
        z0 = torch.tensor(C.P1_Z0, requires_grad=True)
        th = torch.tensor(C.P1_THETA, requires_grad=True)
        loss = (Const.apply(z0, th) ** 2).sum()
        loss.backward()
        return loss.item(), None

    rows = [("torch fixed cost (same graph, no solver)", fixed),
            ("symode.torch.odeint, backward()", odeint), ("symode.torch.ODELayer, backward()", odelayer)]
    if peers:
        try:
            from torchdiffeq import odeint_adjoint
        except ImportError:
            print("torchdiffeq not installed: row skipped", file=sys.stderr)
        else:
            class LV(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.theta = torch.nn.Parameter(torch.tensor(C.P1_THETA))

                def forward(self, t, z):
                    a, b, c, d = self.theta.unbind()
                    x, y = z[..., 0], z[..., 1]
                    return torch.stack([a * x - b * x * y, d * x * y - c * y], dim=-1)

            lv = LV()

            def tdq():
                lv.theta.grad = None
                z0 = torch.tensor(C.P1_Z0, requires_grad=True)
                loss = (odeint_adjoint(lv, z0, ts, method="dopri5", **C.P1_TOL) ** 2).sum()
                loss.backward()
                return loss.item(), torch.cat([z0.grad, lv.theta.grad]).numpy()

            rows.append(("torchdiffeq odeint_adjoint (peer)", tdq))
    return rows


def rows_jax(model, peers):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import symode.jax as sj

    ts = jnp.asarray(C.P1_TS)
    z0, th = jnp.asarray(C.P1_Z0), jnp.asarray(C.P1_THETA)
    f = jax.jit(jax.value_and_grad(lambda a, b: jnp.sum(sj.odeint(model, a, b, ts, **KW) ** 2), argnums=(0, 1)))

    def sym():
        v, (gz, gp) = jax.block_until_ready(f(z0, th))
        return float(v), np.concatenate([np.asarray(gz), np.asarray(gp)])

    zs_np = model.solve(C.P1_Z0, C.P1_THETA, C.P1_TS, **KW).z

    @jax.custom_vjp
    def const(a, b):                         # the framework's fixed cost: two host callbacks, no solver
        return jax.pure_callback(lambda a, b: zs_np, jax.ShapeDtypeStruct(zs_np.shape, jnp.float64), a, b)

    def const_fwd(a, b):
        return const(a, b), (a, b)

    def const_bwd(res, ct):
        shapes = (jax.ShapeDtypeStruct((2,), jnp.float64), jax.ShapeDtypeStruct((4,), jnp.float64))
        return jax.pure_callback(lambda a, b, c: (np.zeros(2), np.zeros(4)), shapes, *res, ct)

    const.defvjp(const_fwd, const_bwd)
    fc = jax.jit(jax.value_and_grad(lambda a, b: jnp.sum(const(a, b) ** 2), argnums=(0, 1)))

    def fixed():
        jax.block_until_ready(fc(z0, th))
        return 0.0, None

    rows = [("jax fixed cost (2 pure_callbacks, no solver)", fixed), ("symode.jax.odeint, jit(value_and_grad)", sym)]
    if peers:
        try:
            import diffrax as dfx
        except ImportError:
            print("diffrax not installed: row skipped", file=sys.stderr)
        else:
            def vf(t, z, p):
                x, y = z[0], z[1]
                return jnp.stack([p[0] * x - p[1] * x * y, p[3] * x * y - p[2] * y])

            ctrl = dfx.PIDController(**C.P1_TOL)

            def loss(a, b):
                sol = dfx.diffeqsolve(dfx.ODETerm(vf), dfx.Dopri5(), ts[0], ts[-1], None, a, b,
                                      saveat=dfx.SaveAt(ts=ts), stepsize_controller=ctrl, max_steps=4096,
                                      adjoint=dfx.RecursiveCheckpointAdjoint())
                return jnp.sum(sol.ys ** 2)

            g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

            def dfx_row():
                v, (gz, gp) = jax.block_until_ready(g(z0, th))
                return float(v), np.concatenate([np.asarray(gz), np.asarray(gp)])

            rows.append(("diffrax Dopri5 jit(value_and_grad) (peer)", dfx_row))
    return rows


def fmt(s):
    return f"{s * 1e6:10.1f} us" if s < 1e-2 else f"{s * 1e3:10.1f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-peers", action="store_true", help="skip torchdiffeq and diffrax")
    args = ap.parse_args()
    model = lv_model()
    rows = rows_native(model)
    for build in (rows_torch, rows_jax):
        try:
            rows += build(model, not args.no_peers)
        except ImportError as e:
            print(f"{build.__name__}: {e}: rows skipped", file=sys.stderr)
    print(f"P1 Lotka-Volterra gradient, dopri5 rtol=atol=1e-8, 101 output times; {time.strftime('%Y-%m-%d')}; "
          f"{C.cpu_model() if hasattr(C, 'cpu_model') else ''}")
    ref_val, ref_grad = rows[0][1]()
    times = {}
    for name, fn in rows:
        slow = "peer" in name and "torchdiffeq" in name
        tm = C.timeit(fn, repeats=1 if slow else args.repeats, warmup=1 if slow else 2,
                      min_repeat_s=0.0 if slow else 0.2)
        val, grad = tm["result"]
        err = float(np.max(np.abs(grad - ref_grad)) / np.max(np.abs(ref_grad))) if grad is not None else 0.0
        times[name] = tm["median"]
        ratio = tm["median"] / times[rows[0][0]]
        print(f"{name:45s} {fmt(tm['median'])}  {ratio:9.2f}x reference   first call {tm['first_s']:.3f} s   "
              f"gradient rel. diff {err:.1e}")
    t = times
    print("\nratios (goals in brackets):")
    ref = t[rows[0][0]]
    for name in ("symode.torch.odeint, backward()", "symode.torch.ODELayer, backward()"):
        if name in t:
            net = t[name] - t["torch fixed cost (same graph, no solver)"]
            print(f"  {name} / value_and_grad_fn: {t[name] / ref:.2f}x  (<= 1.5x); without torch's fixed cost "
                  f"{net / ref:.2f}x")
    for torch_name in ("symode.torch.odeint, backward()", "symode.torch.ODELayer, backward()"):
        if "torchdiffeq odeint_adjoint (peer)" in t and torch_name in t:
            r = t["torchdiffeq odeint_adjoint (peer)"] / t[torch_name]
            print(f"  torchdiffeq odeint_adjoint / {torch_name}: {r:,.0f}x  (>= 1,000x)")
    if "symode.jax.odeint, jit(value_and_grad)" in t:
        name = "symode.jax.odeint, jit(value_and_grad)"
        net = t[name] - t["jax fixed cost (2 pure_callbacks, no solver)"]
        print(f"  {name} / value_and_grad_fn: {t[name] / ref:.2f}x; without JAX's fixed cost {net / ref:.2f}x")
    if "diffrax Dopri5 jit(value_and_grad) (peer)" in t:
        r = t["diffrax Dopri5 jit(value_and_grad) (peer)"] / t["symode.jax.odeint, jit(value_and_grad)"]
        print(f"  diffrax / symode.jax.odeint: {r:.1f}x  (>= 10x)")


if __name__ == "__main__":
    main()
