"""A universal differential equation: Lotka-Volterra with its interaction terms replaced by a neural network.

Known physics: prey grow (alpha x), predators die (-gamma y), alpha = 1.5, gamma = 3. Unknown: how they
interact. The model is

    dx/dt = alpha x + U1(x, y),    dy/dt = -gamma y + U2(x, y),    U = symode.nn.mlp([x, y], [16, 2])

(2-16-2 tanh network, 82 parameters), fitted to observations of the true system (interaction terms
-beta x y and +delta x y, beta = delta = 1) on one period, t in [0, 5], 51 points with 1% noise. The fit is
"multiple shooting" without continuity terms: every window of 3 consecutive observations is integrated from
its observed first point (batch_time=3, all windows every iteration, so the loss is deterministic) and
L-BFGS, fed the exact adjoint gradients, minimises the mean squared error. Short windows keep the problem
well conditioned: integrating a random network over a whole period from the start would blow up.

Afterwards the learned U is compared with the true terms along the true trajectory (the training range: a
network only learns where the data are) and the hybrid model is integrated beyond the data, to t = 10.

Run:  python examples/hybrid_ude.py [--quick] [--out DIR] [--noise 0.01]
Saves hybrid_ude.png.
"""

import numpy as np
import sympy as sp

import symode
from symode import nn

from _common import parser, pyplot, save  # examples/_common.py

ALPHA, BETA, GAMMA, DELTA = 1.5, 1.0, 3.0, 1.0
Z0 = np.array([1.0, 1.0])


def systems(hidden=16):
    x, y = sp.symbols("x y")
    truth = symode.ODE([ALPHA * x - BETA * x * y, DELTA * x * y - GAMMA * y], states=[x, y])
    net = nn.mlp([x, y], [hidden, 2], activation="tanh", name="U")
    hybrid = symode.ODE([ALPHA * x + net.outputs[0], -GAMMA * y + net.outputs[1]], states=[x, y],
                        params=net.params)
    return truth, hybrid, net


def true_terms(Z):
    xy = Z[:, 0] * Z[:, 1]
    return np.stack([-BETA * xy, DELTA * xy], axis=1)


def learned_terms(net, theta, Z):
    return np.array([net(z, theta) for z in Z])


def train(hybrid, net, ts, Y, iterations, seed=0, progress=True):
    """L-BFGS on all windows of 3 points (deterministic multiple shooting), from net.init(seed)."""
    tr = symode.Trainer(hybrid, (ts, Y), loss="mse", theta0=net.init(seed=seed), batch_time=3,
                        batch_size=len(ts) - 3, optimizer="lbfgs", rtol=1e-7, atol=1e-9)
    return tr.run(iterations, progress=progress, desc="hybrid UDE")


def term_errors(net, theta, Z):
    """Max and RMS errors of the learned terms along Z, relative to the largest |true term|."""
    T = true_terms(Z)
    E = learned_terms(net, theta, Z) - T
    scale = np.max(np.abs(T))
    return float(np.max(np.abs(E)) / scale), float(np.sqrt(np.mean(E ** 2)) / scale)


def main(argv=None):
    ap = parser(__doc__, "CI mode: 80 L-BFGS iterations instead of 300")
    ap.add_argument("--noise", type=float, default=0.01, help="relative observation noise (default 1%%)")
    args = ap.parse_args(argv)
    iterations = 80 if args.quick else 300

    truth, hybrid, net = systems()
    ts = np.linspace(0.0, 5.0, 51)
    Z = truth.solve(Z0, [], ts, rtol=1e-11, atol=1e-12).z
    Y = Z * (1.0 + args.noise * np.random.default_rng(1).normal(size=Z.shape))
    print(f"hybrid model: {hybrid.n_params} network parameters; data: {ts.size} points on [0, 5], "
          f"{args.noise:.0%} noise")
    res = train(hybrid, net, ts, Y, iterations, progress=not args.no_progress)
    print(f"L-BFGS: {res.iterations} iterations, {res.nfev} evaluations, {res.elapsed:.1f} s, "
          f"window loss {res.loss:.3g}; {res.message}")
    fine = np.linspace(0.0, 5.0, 401)
    Zf = truth.solve(Z0, [], fine, rtol=1e-11, atol=1e-12).z
    max_rel, rms_rel = term_errors(net, res.theta, Zf)
    print(f"learned vs true interaction terms along the training trajectory: max error {max_rel:.2%}, "
          f"RMS error {rms_rel:.2%} of max |true term| = {np.max(np.abs(true_terms(Zf))):.2f}")
    long = np.linspace(0.0, 10.0, 801)
    Zl = truth.solve(Z0, [], long, rtol=1e-10, atol=1e-12).z
    Hl = hybrid.solve(Y[0], res.theta, long, rtol=1e-10, atol=1e-12, throw=False)
    dev = np.nanmax(np.abs(Hl.z - Zl), axis=0)
    print(f"hybrid model from the first observation, integrated to t = 10 (twice the data range): max |error| "
          f"x {dev[0]:.3f}, y {dev[1]:.3f}")
    out = dict(max_rel=max_rel, rms_rel=rms_rel, loss=res.loss, extrapolation_error=dev.tolist())
    plt = pyplot()
    if plt is None:
        return out
    fig, axs = plt.subplots(1, 3, figsize=(16, 4.3))
    ax = axs[0]
    for j, (lab, col) in enumerate((("x (prey)", "C0"), ("y (predator)", "C1"))):
        ax.plot(ts, Y[:, j], ".", color=col, ms=5, label=f"data {lab}")
        ax.plot(long, Zl[:, j], "k:", lw=1)
        ax.plot(long, Hl.z[:, j], "-", color=col, lw=1.2, label=f"hybrid {lab}")
    ax.axvspan(0, 5, color="0.92", zorder=-1)
    ax.set_ylim(0, 1.4 * np.nanmax(Zl))
    ax.text(0.15, 0.02, "training data", fontsize=8, transform=ax.get_xaxis_transform())
    ax.plot([], [], "k:", label="true")
    ax.set_xlabel("t")
    ax.set_title("hybrid model, integrated beyond the data")
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    ax = axs[1]
    T = true_terms(Zf)
    U = learned_terms(net, res.theta, Zf)
    ax.plot(fine, T[:, 0], "k-", lw=2, alpha=0.4, label=r"true $-\beta xy$")
    ax.plot(fine, T[:, 1], "k--", lw=2, alpha=0.4, label=r"true $+\delta xy$")
    ax.plot(fine, U[:, 0], "C0-", lw=1, label=r"learned $U_1(x, y)$")
    ax.plot(fine, U[:, 1], "C1--", lw=1, label=r"learned $U_2(x, y)$")
    ax.set_xlabel("t (along the true trajectory)")
    ax.set_title(f"interaction terms: max error {max_rel:.1%} of max |term|")
    ax.legend(fontsize=8)
    ax = axs[2]
    gx = np.linspace(0.1, max(Zf[:, 0].max(), 1) * 1.15, 60)
    gy = np.linspace(0.1, max(Zf[:, 1].max(), 1) * 1.15, 60)
    GX, GY = np.meshgrid(gx, gy)
    P = np.stack([GX.ravel(), GY.ravel()], axis=1)
    err = np.abs(learned_terms(net, res.theta, P)[:, 0] - true_terms(P)[:, 0]).reshape(GX.shape)
    cs = ax.contourf(GX, GY, np.log10(err + 1e-6), levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax, label=r"$\log_{10}|U_1 - (-\beta xy)|$")
    ax.plot(Zf[:, 0], Zf[:, 1], "w-", lw=1.5, label="training trajectory")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("error of U1 off the data: only the orbit is learned")
    ax.legend(fontsize=8, loc="upper right")
    out["plot"] = save(fig, args.out, "hybrid_ude.png")
    return out


if __name__ == "__main__":
    main()
