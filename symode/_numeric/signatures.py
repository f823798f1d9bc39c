"""Numba signatures of the generated model kernels (one calling convention for all of them).

- ``F_SIG``: ``f(t, z, theta, out)`` and ``jac_t``; out has shape (n,).
- ``J_SIG``: ``jac_z(t, z, theta, out)`` with out (n, n), ``jac_theta`` with out (n, p). Only structural
  nonzeros are written: callers zero ``out`` once.
- ``V_SIG``: ``vjp(t, z, theta, a, out_z, out_theta)``: out_z = a^T df/dz, out_theta = a^T df/dtheta.
- ``L_SIG``: ``loss(t, z, theta, d, out)``: a scalar loss term written to out[0] (d: data row).
- ``LG_SIG``: ``loss_grad(t, z, theta, d, out_z, out_theta)``: its gradient (accumulated: +=).
"""
from numba import types

_f8 = types.float64
_v = types.Array(types.float64, 1, "C")
_m = types.Array(types.float64, 2, "C")

F_SIG = types.void(_f8, _v, _v, _v)
J_SIG = types.void(_f8, _v, _v, _m)
V_SIG = types.void(_f8, _v, _v, _v, _v, _v)
L_SIG = types.void(_f8, _v, _v, _v, _v)
LG_SIG = types.void(_f8, _v, _v, _v, _v, _v)
