"""Exact first derivatives of a canonical model: sparse Jacobians and the vector-Jacobian products.

Each output is differentiated only by its own free symbols, so structural zeros are known symbolically and
never differentiated, printed or evaluated. VJPs are not expanded symbolically: the generated code computes
the Jacobian's nonzero entries once (with common subexpressions shared) and forms ``a^T J`` as sums of
``a[i] * J[i, j]`` over the nonzero pattern.
"""
from __future__ import annotations

import sympy as sp


class Derivatives:
    """Sparse exact derivatives of ``f`` with respect to z, theta and t.

    Attributes
    ----------
    jac_z : dict[(i, j), Expr]
        Nonzero entries of df_i/dz_j.
    jac_theta : dict[(i, k), Expr]
        Nonzero entries of df_i/dtheta_k.
    jac_t : dict[i, Expr]
        Nonzero entries of df_i/dt.
    """

    def __init__(self, model):
        z_index = {s: j for j, s in enumerate(model.z_c)}
        p_index = {s: k for k, s in enumerate(model.theta_c)}
        self.jac_z, self.jac_theta, self.jac_t = {}, {}, {}
        for i, fi in enumerate(model.rhs_c):
            free = fi.free_symbols
            for s in sorted(free, key=lambda s: s.name):
                d = sp.diff(fi, s)
                if d == 0:
                    continue
                if s in z_index:
                    self.jac_z[(i, z_index[s])] = d
                elif s in p_index:
                    self.jac_theta[(i, p_index[s])] = d
                elif s == model.t_c:
                    self.jac_t[i] = d
        self.jac_z = dict(sorted(self.jac_z.items()))
        self.jac_theta = dict(sorted(self.jac_theta.items()))
        self.n, self.p = model.n, model.p

    def dense_jac_z(self):
        J = sp.zeros(self.n, self.n)
        for (i, j), e in self.jac_z.items():
            J[i, j] = e
        return J

    def dense_jac_theta(self):
        J = sp.zeros(self.n, self.p)
        for (i, k), e in self.jac_theta.items():
            J[i, k] = e
        return J
