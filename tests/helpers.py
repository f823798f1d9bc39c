"""Shared test helpers: reference models and finite differences."""
import numpy as np
import sympy as sp

import symode


def lotka_volterra():
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("alpha beta gamma delta")
    return symode.ODE([a * x - b * x * y, d * x * y - c * y], states=[x, y], params=[a, b, c, d])


P1_THETA = np.array([1.5, 1.0, 3.0, 1.0])
P1_Z0 = np.array([1.0, 1.0])


def central_fd(fun, x, eps=1e-6):
    """Central finite differences of a vector function; returns J with J[:, k] = d fun / d x_k."""
    x = np.asarray(x, dtype=float)
    f0 = np.asarray(fun(x))
    J = np.empty(f0.shape + (x.size,))
    for k in range(x.size):
        h = eps * max(1.0, abs(x[k]))
        xp, xm = x.copy(), x.copy()
        xp[k] += h
        xm[k] -= h
        J[..., k] = (np.asarray(fun(xp)) - np.asarray(fun(xm))) / (2 * h)
    return J


def rel_err(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)
