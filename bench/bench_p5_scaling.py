"""P5 scaling: gradient cost against the cost of f for n = 4, 16, 64 (tanh(W z) - z/2 with symode.nn.dense).

Prints the cost of one f evaluation inside the compiled solver (forward solve time / nfev), one gradient (vjp, discrete adjoint, dopri5
rtol = atol = 1e-8, 21 outputs on [0, 5]) and the fitted exponent of gradient time against f time and
against n.  Run: python bench/bench_p5_scaling.py
"""
import time

import numpy as np
import sympy as sp

import symode
from symode import nn


def model(n):
    z = sp.symbols(f"z0:{n}")
    net = nn.dense(list(z), n, activation="tanh", name="W", bias=False)
    return symode.ODE([net.outputs[i] - z[i] / 2 for i in range(n)], states=list(z), params=list(net.params))


def best(fn, min_time=0.2):
    fn()
    out = []
    for _ in range(5):
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_time / 5:
            fn()
            k += 1
        out.append((time.perf_counter() - t0) / k)
    return min(out)


def main():
    ts = np.linspace(0, 5, 21)
    rows = []
    print("| n | parameters | f in the solver (µs) | gradient (ms) | nfev | gradient / f |")
    print("|---|---|---|---|---|---|")
    for n in (4, 16, 64):
        m = model(n)
        W = np.random.default_rng(0).normal(0, 1 / np.sqrt(n), (n, n)).ravel()
        z0 = np.ones(n) / np.sqrt(n)
        sol = m.solve(z0, W, ts, rtol=1e-8, atol=1e-8)
        tf = best(lambda: m.solve(z0, W, ts, rtol=1e-8, atol=1e-8)) / sol.stats["nfev"]
        cot = 2 * sol.z
        tg = best(lambda: m.vjp(z0, W, ts, cot, rtol=1e-8, atol=1e-8))
        rows.append((n, tf, tg))
        print(f"| {n} | {n * n} | {tf * 1e6:.3f} | {tg * 1e3:.3f} | {sol.stats['nfev']} | {tg / tf:.0f} |")
    n, tf, tg = map(np.array, zip(*rows))
    print(f"\nfitted exponent: gradient time ~ (f time)^{np.polyfit(np.log(tf), np.log(tg), 1)[0]:.2f}; "
          f"gradient time ~ n^{np.polyfit(np.log(n), np.log(tg), 1)[0]:.2f}; f time ~ n^"
          f"{np.polyfit(np.log(n), np.log(tf), 1)[0]:.2f}")


if __name__ == "__main__":
    main()
