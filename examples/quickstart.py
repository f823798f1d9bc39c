"""Quickstart: Lotka-Volterra in SymPy, solved by symode, printed and plotted.

Run:  python examples/quickstart.py [--quick] [--out DIR]
(--quick is accepted for symmetry with the other examples: the tour is quick either way.)
Saves quickstart.png.
"""
import time

import numpy as np
import sympy as sp

import symode

from _common import parser, pyplot, save  # examples/_common.py


def main(argv=None):
    args = parser(__doc__, "CI mode (the tour is the same; it is fast either way)").parse_args(argv)

    x, y = sp.symbols("x y")
    alpha, beta, gamma, delta = sp.symbols("alpha beta gamma delta")
    model = symode.ODE(rhs=[alpha * x - beta * x * y, delta * x * y - gamma * y],
                       states=[x, y], params=[alpha, beta, gamma, delta])
    theta = [1.5, 1.0, 3.0, 1.0]
    ts = np.linspace(0.0, 10.0, 101)

    t0 = time.perf_counter()
    sol = model.solve([1.0, 1.0], theta, ts, method="dopri5", rtol=1e-8, atol=1e-8)
    t1 = time.perf_counter()
    sol = model.solve([1.0, 1.0], theta, ts, method="dopri5", rtol=1e-8, atol=1e-8)
    t2 = time.perf_counter()
    print(f"model: dx/dt = {model.rhs[0]},  dy/dt = {model.rhs[1]}")
    print(f"exact Jacobian df/dz = {model.jac_z_expr.tolist()}")
    print(f"first solve (build or load kernels + solve): {t1 - t0:.3f} s; next solve: {(t2 - t1) * 1e3:.3f} ms")
    print(f"stats: {sol.stats}")
    for i in range(0, 101, 20):
        print(f"  t = {sol.t[i]:5.2f}   x = {sol.z[i, 0]:.6f}   y = {sol.z[i, 1]:.6f}")
    plt = pyplot("plot")
    if plt is None:
        return sol
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    fine = model.solve([1.0, 1.0], theta, np.linspace(0, 10, 1001), rtol=1e-8, atol=1e-8)
    ax1.plot(fine.t, fine.z[:, 0], label="prey x")
    ax1.plot(fine.t, fine.z[:, 1], label="predator y")
    ax1.plot(sol.t, sol.z[:, 0], "k.", ms=3)
    ax1.set_xlabel("t")
    ax1.legend()
    ax1.set_title("Lotka-Volterra (dopri5, rtol=1e-8)")
    ax2.plot(fine.z[:, 0], fine.z[:, 1])
    ax2.set_xlabel("x")
    ax2.set_ylabel("y")
    ax2.set_title("phase portrait")
    save(fig, args.out, "quickstart.png")
    return sol


if __name__ == "__main__":
    main()
