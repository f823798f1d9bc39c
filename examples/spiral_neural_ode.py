"""Neural ODE on the spiral (torchdiffeq's ode_demo, reference problem P2), trained with symode.

True dynamics dy/dt = (y**3) @ A, A = [[-0.1, 2], [-2, -0.1]], y0 = (2, 0), 1000 points on [0, 25].
Model dy/dt = W2 tanh(W1 y**3 + b1) + b2 (50 hidden units, 252 parameters, symode.nn.mlp), initialised as
in P2 (normal(0, 0.1) weights, zero biases, seed 0). Every iteration draws 20 windows of 10 points, each
integrated from its observed first state with dopri5 (rtol 1e-7, atol 1e-9); loss = mean |pred - true|;
exact gradients of all 252 parameters by the discrete adjoint; Adam, learning rate 3e-3 halved every third of
the run. Every 1/40 of the run the learned model is solved from y0 over all 1000 points (torchdiffeq's
test loss); the best weights by that loss are kept.

Run:  python examples/spiral_neural_ode.py [--quick] [--out DIR] [--iterations N]
(default 3000 iterations; --quick: 300, the CI mode). Saves spiral_neural_ode.png: true vs learned
trajectories, the phase portrait and the loss curves.
"""
import time

import numpy as np
import sympy as sp

import symode
from symode import nn

from _common import parser, pyplot, save  # examples/_common.py

A_TRUE = np.array([[-0.1, 2.0], [-2.0, -0.1]])
Y0 = np.array([2.0, 0.0])
TS = np.linspace(0.0, 25.0, 1000)
TOL = dict(rtol=1e-7, atol=1e-9)


def true_model():
    y0, y1 = sp.symbols("y0 y1")
    u = sp.Matrix([[y0 ** 3, y1 ** 3]]) * sp.Matrix(A_TRUE)      # (y**3) @ A, a row vector
    return symode.ODE(list(u), states=[y0, y1])


def neural_model():
    y0, y1 = sp.symbols("y0 y1")
    net = nn.mlp([y0 ** 3, y1 ** 3], [50, 2], activation="tanh", name="f")
    return symode.ODE(net.outputs, states=[y0, y1], params=net.params), net


def main(argv=None):
    ap = parser(__doc__, "short run (CI)")
    ap.add_argument("--iterations", type=int, default=None, help="Adam iterations (default 3000; --quick 300)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    iterations = args.iterations or (300 if args.quick else 3000)

    t0 = time.perf_counter()
    truth = true_model()
    true_y = truth.solve(Y0, [], TS, method="dopri5", **TOL).z
    model, net = neural_model()
    theta0 = net.init(seed=0)                      # P2's initialisation (W1 then W2 from default_rng(0))
    trainer = symode.Trainer(model, (TS, true_y), loss="mae", theta0=theta0, batch_time=10, batch_size=20,
                      seed=args.seed, optimizer="adam", lr=lambda k: 3e-3 * 0.5 ** (3 * k / iterations),
                      method="dopri5", eval_every=max(iterations // 40, 1), **TOL)
    model.vjp(Y0, theta0, TS[:10], np.zeros((10, 2)), **TOL)     # build or load the compiled kernels
    t_build = time.perf_counter() - t0
    print(f"model: {model.n_states} states, {model.n_params} parameters; kernels built or loaded in {t_build:.1f} s")
    print(f"training: {iterations} Adam iterations, batches of 20 windows x 10 points, dopri5 rtol=1e-7 atol=1e-9")
    res = trainer.run(iterations, progress=not args.no_progress, desc="spiral")
    h = res.history
    per_it = res.elapsed / max(res.iterations, 1)
    print(f"done: {res.iterations} iterations in {res.elapsed:.1f} s ({per_it * 1e3:.2f} ms per iteration incl. "
          f"{len(h['eval_loss'])} full-trajectory evaluations); stop: {res.stop_reason}")
    print(f"batch loss (mean |pred - true|): first {h['loss'][0]:.4f}, mean of the last 50 "
          f"{np.mean(h['loss'][-50:]):.4f}")
    print(f"full-trajectory loss from y0 over [0, 25]: initial {h['eval_loss'][0]:.4f}, best {res.loss:.4f} "
          f"(iteration {res.best_iteration}), last {h['eval_loss'][-1]:.4f}")
    pred = trainer.predict(TS, theta=res.theta).z
    out = dict(batch_loss_first=float(h["loss"][0]), batch_loss_last50=float(np.mean(h["loss"][-50:])),
               eval_initial=float(h["eval_loss"][0]), eval_best=float(res.loss), ms_per_iteration=per_it * 1e3)
    plt = pyplot()
    if plt is None:
        return out
    fig, axs = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axs[0]
    ax.plot(TS, true_y[:, 0], "g-", lw=1.2, label="true y0")
    ax.plot(TS, true_y[:, 1], "b-", lw=1.2, label="true y1")
    ax.plot(TS, pred[:, 0], "g--", lw=1.2, label="learned y0")
    ax.plot(TS, pred[:, 1], "b--", lw=1.2, label="learned y1")
    ax.set_xlabel("t")
    ax.set_title("trajectories (learned: solved from y0 over [0, 25])")
    ax.legend(fontsize=8, loc="lower right")
    ax = axs[1]
    ax.plot(true_y[:, 0], true_y[:, 1], "g-", lw=1.2, label="true")
    ax.plot(pred[:, 0], pred[:, 1], "b--", lw=1.2, label="learned")
    g = np.linspace(-2.2, 2.2, 21)
    X, Yg = np.meshgrid(g, g)
    F = np.array([model.f([a, b], res.theta) for a, b in zip(X.ravel(), Yg.ravel())])
    ax.quiver(X, Yg, F[:, 0].reshape(X.shape), F[:, 1].reshape(X.shape), color="0.6", alpha=0.6)
    ax.set_xlabel("y0")
    ax.set_ylabel("y1")
    ax.set_aspect("equal")
    ax.set_title("phase portrait and learned vector field")
    ax.legend(fontsize=8)
    ax = axs[2]
    k = np.arange(h["loss"].size)
    ax.semilogy(k, h["loss"], color="0.7", lw=0.6, label="batch loss")
    if h["loss"].size > 50:
        ax.semilogy(k[49:], np.convolve(h["loss"], np.ones(50) / 50, mode="valid"), "k-", lw=1.2,
                    label="batch loss, 50-iteration mean")
    ax.semilogy(h["eval_iteration"], h["eval_loss"], "r.-", lw=1, label="full trajectory from y0")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean |pred - true|")
    ax.set_title(f"loss ({per_it * 1e3:.1f} ms per iteration)")
    ax.legend(fontsize=8)
    out["plot"] = save(fig, args.out, "spiral_neural_ode.png")
    return out


if __name__ == "__main__":
    main()
