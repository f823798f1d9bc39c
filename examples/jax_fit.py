"""Fit a symode model's parameters inside a jitted JAX training step.

The four Lotka-Volterra parameters (true (1.5, 1, 3, 1)) are recovered from three noisy experiments with
different initial states (2 % noise). The whole training step -- the batched solve (jax.vmap over the three
initial states: one compiled parallel symode call), the loss, its gradient (symode's discrete adjoint, one
compiled batched call) and the optimizer update -- is one jax.jit function. The parameters are fitted in log
space (positive rates). optax.adam when optax is installed, else the same Adam steps written out in jax.numpy.

Run:  python examples/jax_fit.py [--quick] [--out DIR]
Saves jax_fit.png (data and fitted trajectories; loss curve).
"""
import jax

jax.config.update("jax_enable_x64", True)    # symode computes in float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

import symode  # noqa: E402
import symode.jax as sj  # noqa: E402

from _common import parser, pyplot, save  # noqa: E402  examples/_common.py

THETA_TRUE = np.array([1.5, 1.0, 3.0, 1.0])
THETA0 = np.array([1.0, 0.7, 2.2, 1.4])
Z0S = np.array([[1.0, 1.0], [2.0, 0.5], [0.5, 2.0]])
TS = np.linspace(0.0, 6.0, 61)
SOLVER = dict(method="dopri5", rtol=1e-8, atol=1e-8)


def lotka_volterra():
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("alpha beta gamma delta")
    return symode.ODE([a * x - b * x * y, d * x * y - c * y], states=[x, y], params=[a, b, c, d])


def make_optimizer(lr):
    try:
        import optax
    except ImportError:
        print("optax is not installed: the same Adam steps written out in jax.numpy")
        b1, b2, eps = 0.9, 0.999, 1e-8

        def init(p):
            return jnp.zeros_like(p), jnp.zeros_like(p), jnp.zeros(())

        def update(g, state, p):
            m, v, k = state
            k = k + 1.0
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * g * g
            step = lr * (m / (1.0 - b1 ** k)) / (jnp.sqrt(v / (1.0 - b2 ** k)) + eps)
            return p - step, (m, v, k)
        return init, update
    opt = optax.adam(lr)

    def update(g, state, p):
        upd, state = opt.update(g, state, p)
        return optax.apply_updates(p, upd), state
    return opt.init, update


def main(argv=None):
    args = parser(__doc__, "CI mode: fewer iterations").parse_args(argv)
    model = lotka_volterra()
    clean = model.solve(Z0S, THETA_TRUE, TS, **SOLVER).z                      # (3, 61, 2)
    data = jnp.asarray(clean * (1.0 + 0.02 * np.random.default_rng(0).normal(size=clean.shape)))
    z0s, ts = jnp.asarray(Z0S), jnp.asarray(TS)

    def loss(log_theta):
        solve = jax.vmap(lambda z0: sj.odeint(model, z0, jnp.exp(log_theta), ts, **SOLVER))
        return jnp.mean((solve(z0s) - data) ** 2)

    init, update = make_optimizer(0.05)

    @jax.jit
    def step(p, state):
        value, g = jax.value_and_grad(loss)(p)
        p, state = update(g, state, p)
        return p, state, value

    p = jnp.log(jnp.asarray(THETA0))
    state = init(p)
    iterations = 80 if args.quick else 400
    history = []
    for it in range(iterations):
        p, state, value = step(p, state)
        history.append(float(value))
        if it % 50 == 0 or it == iterations - 1:
            print(f"iteration {it:4d}  loss {history[-1]:.5f}  theta {np.round(np.exp(np.asarray(p)), 4)}")
    theta = np.exp(np.asarray(p))
    print(f"fitted theta {np.round(theta, 4)} (true {THETA_TRUE}); max relative error "
          f"{np.max(np.abs(theta / THETA_TRUE - 1)):.3f}")
    assert history[-1] < 0.5 * history[0], "the fit did not reduce the loss"

    plt = pyplot()
    if plt is None:
        return theta
    fine = np.linspace(0.0, 6.0, 301)
    fit = model.solve(Z0S, theta, fine, **SOLVER).z
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for k in range(len(Z0S)):
        ax[0].plot(TS, np.asarray(data[k, :, 0]), f"C{k}.", ms=4)
        ax[0].plot(fine, fit[k, :, 0], f"C{k}", label=f"prey, experiment {k + 1}")
    ax[0].set(xlabel="t", title="data (dots) and the fitted model (prey)")
    ax[0].legend(fontsize=8)
    ax[1].semilogy(history)
    ax[1].set(xlabel="iteration (one jitted step each)", ylabel="mean squared error", title="training")
    save(fig, args.out, "jax_fit.png")
    return theta


if __name__ == "__main__":
    main()
