"""Recover the four Lotka-Volterra parameters of P1 from noisy observations.

dx/dt = alpha x - beta x y, dy/dt = delta x y - gamma y, true theta = (1.5, 1, 3, 1), z0 = (1, 1); 101
observations on [0, 10] with 1% multiplicative Gaussian noise (y_obs = y (1 + 0.01 eps)). Fit: mean squared
error, L-BFGS-B fed symode's exact adjoint gradients (dopri5, rtol 1e-8), from theta0 = (1.2, 0.8, 2.5, 0.8)
-- 20% off -- and optionally the initial state as well (--train-z0).

Run:  python examples/lotka_volterra_fit.py [--quick] [--out DIR] [--train-z0] [--noise 0.01]
Saves lotka_volterra_fit.png (data, fitted and true trajectories; loss curve).
"""

import numpy as np
import sympy as sp

import symode

from _common import parser, pyplot, save  # examples/_common.py

THETA_TRUE = np.array([1.5, 1.0, 3.0, 1.0])
Z0_TRUE = np.array([1.0, 1.0])
THETA0 = np.array([1.2, 0.8, 2.5, 0.8])
NAMES = ("alpha", "beta", "gamma", "delta")


def lotka_volterra():
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("alpha beta gamma delta")
    return symode.ODE([a * x - b * x * y, d * x * y - c * y], states=[x, y], params=[a, b, c, d])


def noisy_data(model, noise=0.01, seed=1, ts=None):
    ts = np.linspace(0.0, 10.0, 101) if ts is None else ts
    Y = model.solve(Z0_TRUE, THETA_TRUE, ts, rtol=1e-11, atol=1e-12).z
    rng = np.random.default_rng(seed)
    return ts, Y * (1.0 + noise * rng.normal(size=Y.shape))


def main(argv=None):
    ap = parser(__doc__, "CI mode (the fit is fast either way)")
    ap.add_argument("--noise", type=float, default=0.01, help="relative noise level (default 0.01 = 1%%)")
    ap.add_argument("--train-z0", action="store_true", help="fit the initial state too")
    ap.add_argument("--optimizer", default="lbfgs", help="lbfgs (default), adam, sgd or gradient_flow")
    args = ap.parse_args(argv)

    model = lotka_volterra()
    ts, Y = noisy_data(model, args.noise)
    train = ("theta", "z0") if args.train_z0 else "theta"
    iterations = 200 if args.optimizer == "lbfgs" else (1000 if args.quick else 5000)
    res = symode.fit(model, (ts, Y), loss="mse", theta0=THETA0, z0=Y[0], train=train, optimizer=args.optimizer,
              iterations=iterations, rtol=1e-8, atol=1e-10, progress=not args.no_progress, desc="LV fit")
    print(f"{res.iterations} iterations, {res.nfev} loss+gradient evaluations, {res.elapsed:.2f} s; "
          f"{res.message}")
    print(f"final mean squared error {res.loss:.4g} (noise variance alone gives about "
          f"{np.mean((args.noise * Y) ** 2):.4g})")
    print(f"{'':8s}{'true':>8s}{'start':>8s}{'fitted':>10s}{'rel. error':>12s}")
    for name, t, s, f in zip(NAMES, THETA_TRUE, THETA0, res.theta):
        print(f"{name:8s}{t:8.3f}{s:8.3f}{f:10.4f}{abs(f / t - 1):12.2%}")
    if args.train_z0:
        print(f"z0: true {Z0_TRUE}, observed {Y[0]}, fitted {res.z0}")
    out = dict(theta=res.theta.tolist(), rel_err=(np.abs(res.theta / THETA_TRUE - 1)).tolist(), loss=res.loss)
    plt = pyplot()
    if plt is None:
        return out
    fine = np.linspace(0, 10, 501)
    z0f = res.z0 if res.z0 is not None else Y[0]
    fitted = model.solve(z0f, res.theta, fine, rtol=1e-9, atol=1e-10).z
    truth = model.solve(Z0_TRUE, THETA_TRUE, fine, rtol=1e-9, atol=1e-10).z
    start = model.solve(Y[0], THETA0, fine, rtol=1e-9, atol=1e-10).z
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.3), gridspec_kw=dict(width_ratios=[2, 1]))
    for j, (lab, col) in enumerate((("prey x", "C0"), ("predator y", "C1"))):
        ax1.plot(ts, Y[:, j], ".", color=col, ms=4, label=f"{lab}: data ({args.noise:.0%} noise)")
        ax1.plot(fine, fitted[:, j], "-", color=col, lw=1.5, label=f"{lab}: fitted")
        ax1.plot(fine, truth[:, j], "k:", lw=1)
        ax1.plot(fine, start[:, j], "--", color=col, lw=0.8, alpha=0.5)
    ax1.plot([], [], "k:", label="true")
    ax1.plot([], [], "--", color="0.5", label="start (theta0)")
    ax1.set_xlabel("t")
    ax1.legend(fontsize=7, ncol=2)
    txt = ", ".join(f"{n}={v:.3f}" for n, v in zip(NAMES, res.theta))
    ax1.set_title(f"Lotka-Volterra fit: {txt}", fontsize=9)
    ax2.semilogy(res.history["loss"], "k.-")
    ax2.set_xlabel(f"{res.optimizer.name} iteration")
    ax2.set_ylabel("mean squared error")
    ax2.set_title("loss")
    out["plot"] = save(fig, args.out, "lotka_volterra_fit.png")
    return out


if __name__ == "__main__":
    main()
