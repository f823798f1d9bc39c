"""Symbolic transforms: auxiliary systems built from a model, as pure functions on `SymbolicModel`.

The engine needs several systems derived from a user's model: the forward-sensitivity system, the auxiliary
second-order model behind the discrete adjoint of Rosenbrock steps, the running-cost augmentation and the
gradient flow of a loss. Each is a `SymbolicModel` here (never a public ``ODE``), so the symbolic layer does not
import the engine. Each reproduces the engine's former construction exactly (the same right-hand sides, state
order, parameter order and symbol names), so its canonical form, generated code and cache key are the same:
wrap the result in whatever compiled representation the caller uses (e.g. ``CompiledModel(system)``).

Functions
---------
sensitivity_system(sym, derivs) -> SymbolicModel
second_order_system(sym, derivs) -> SecondOrderSystem (model or None, hm_i, hm_j, ft_rows)
running_cost_system(sym, expr) -> SymbolicModel
gradient_flow_system(loss_expr, params, eta=1.0) -> SymbolicModel
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import sympy as sp

from .._errors import InputValidationError
from .gradient_flow import gradient_flow_rhs
from .model import SymbolicModel


def sensitivity_system(sym, derivs):
    """The forward-sensitivity system of `sym`: states (z, S_z0, S_theta) with

        z' = f,   S_z0' = (df/dz) S_z0,   S_theta' = (df/dz) S_theta + df/dtheta,

    S_z0 (n, n) and S_theta (n, p) row-major after z (symbols ``_symode_sz_<i>_<j>``, ``_symode_sp_<i>_<k>``),
    the same parameters and time symbol as `sym`. Its exact Jacobian (second derivatives of f included) is
    generated like any model's, so Rosenbrock methods integrate the stiff sensitivity equations with it.

    Parameters
    ----------
    sym : SymbolicModel
    derivs : the derivative structure of `sym` (``derivatives(sym)``; the caller's, so that a warm start never
        imports the symbolic derivatives)

    Returns
    -------
    SymbolicModel with n + n*n + n*p states and the parameters of `sym`.
    """
    d = derivs
    n, p = sym.n, sym.p
    J = d.dense_jac_z().xreplace(sym.from_canon)
    Jp = d.dense_jac_theta().xreplace(sym.from_canon)
    Sz = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"_symode_sz_{i}_{j}", real=True))
    Sp = sp.Matrix(n, p, lambda i, k: sp.Symbol(f"_symode_sp_{i}_{k}", real=True)) if p else sp.zeros(n, 0)
    rhs = list(sym.rhs) + list(J * Sz) + (list(J * Sp + Jp) if p else [])
    states = list(sym.states) + list(Sz) + list(Sp)
    return SymbolicModel(rhs, states, list(sym.params), sym.t)


class SecondOrderSystem(NamedTuple):
    """The auxiliary model of the discrete Rosenbrock adjoint and its index arrays (unpacks as a 4-tuple).

    model : SymbolicModel or None (None when J and df/dt are constant)
    hm_i, hm_j : int64 arrays, the (i, j) of the entries of df/dz that depend on (t, z, theta), in the order
        of the parameters ``_symode_hm_<i>_<j>``
    ft_rows : int64 array, the rows i of df/dt that depend on (t, z, theta), in the order of ``_symode_hu_<i>``
    """

    model: Optional[SymbolicModel]
    hm_i: np.ndarray
    hm_j: np.ndarray
    ft_rows: np.ndarray


_NETWORK_MESSAGE = (
    "adjoint='discrete' through Rosenbrock steps needs second derivatives of f, which are generated only "
    "for models without network blocks (symode.nn); use adjoint='checkpoint' (the continuous adjoint, "
    "integrated backward with the same Rosenbrock method) or adjoint='forward'")


def second_order_system(sym, derivs):
    """The auxiliary model behind the discrete adjoint of Rosenbrock steps.

    Its first right-hand side is

        S(z, theta) = sum_(i,j) M_ij df_i/dz_j (t, z, theta) + sum_i u_i df_i/dt (t, z, theta)

    over the entries of df/dz and df/dt that depend on (t, z, theta); the other n - 1 right-hand sides are 0.
    States: those of `sym`; parameters: those of `sym`, then the M_ij (``_symode_hm_<i>_<j>``), then the u_i
    (``_symode_hu_<i>``); the time symbol of `sym`. Its VJP with cotangent e_0 gives the gradients of S with
    respect to z and theta (second derivatives of f).

    Raises
    ------
    InputValidationError
        For a model with network blocks (no generated second derivatives).
    """
    if getattr(sym, "networks", None) is not None:
        raise InputValidationError(_NETWORK_MESSAGE)
    d = derivs
    live = set(sym.z_c) | set(sym.theta_c) | {sym.t_c}
    jz = [(ij, e) for ij, e in d.jac_z.items() if e.free_symbols & live]
    jt = [(i, e) for i, e in sorted(d.jac_t.items()) if e.free_symbols & live]
    hm_i = np.array([i for (i, _j), _e in jz], dtype=np.int64)
    hm_j = np.array([j for (_i, j), _e in jz], dtype=np.int64)
    ft_rows = np.array([i for i, _e in jt], dtype=np.int64)
    aux = None
    if jz or jt:
        M = [sp.Symbol(f"_symode_hm_{i}_{j}", real=True) for (i, j), _e in jz]
        u = [sp.Symbol(f"_symode_hu_{i}", real=True) for i, _e in jt]
        S = sum((mij * e for mij, (_ij, e) in zip(M, jz)), sp.S.Zero)
        S = S + sum((ui * e for ui, (_i, e) in zip(u, jt)), sp.S.Zero)
        S = sym.to_user(S)
        aux = SymbolicModel([S] + [sp.S.Zero] * (sym.n - 1), list(sym.states), list(sym.params) + M + u, sym.t)
    return SecondOrderSystem(aux, hm_i, hm_j, ft_rows)


def running_cost_system(sym, expr):
    """`sym` augmented with the running cost r = `expr` as a quadrature state q (last): q' = r, q(t0) = 0
    gives q(T) = integral of r dt. Same parameters and time symbol; `expr` uses the user's symbols of `sym`.

    The quadrature state is a fresh ``Dummy("_symode_running_cost")`` (its canonical name is ``z_<n>``,
    so the key does not depend on it).
    """
    q = sp.Dummy("_symode_running_cost")
    return SymbolicModel(list(sym.rhs) + [expr], list(sym.states) + [q], list(sym.params), sym.t)


def gradient_flow_system(loss_expr, params, eta=1.0):
    """The gradient flow d theta/dt = -eta * grad L(theta): states `params`, parameters [eta if it is a
    Symbol] + the loss's other free symbols sorted by name (see ``gradient_flow_rhs``); autonomous."""
    rhs, extra = gradient_flow_rhs(loss_expr, params, eta)
    return SymbolicModel(rhs, list(params), extra)
