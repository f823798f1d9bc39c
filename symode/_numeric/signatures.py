"""Numba signatures of the generated model kernels (one C calling convention for all of them).

Kernels are ``numba.cfunc`` s taking the time and raw ``double*`` pointers to C-contiguous float64 data (the
sizes are constants of each generated module), so that a library loop calls one through its address with
nothing but a few registers: no array structs, no reference counting (measured on P1: 14 ns a call with
array arguments, ~0 with pointers). Library loops call them with arrays through ``fnptr.call_*``.

- ``F_SIG``: ``f(t, z, theta, out)`` and ``jac_t``; out has n entries.
- ``J_SIG``: ``jac_z(t, z, theta, out)`` with out (n, n) row-major, ``jac_theta`` with out (n, p). Only
  structural nonzeros are written: callers zero ``out`` once.
- ``V_SIG``: ``vjp(t, z, theta, a, out_z, out_theta)``: out_z = a^T df/dz, out_theta = a^T df/dtheta.
- ``FW_SIG``: ``f_rec(t, z, theta, out, w)`` of network models: f with its work array in the caller's
  ``w`` (``W_REC`` entries), which keeps the blocks' inputs and activations.
- ``VW_SIG``: ``vjp_rec(t, z, theta, a, out_z, out_theta, w)``: the vjp at the same point, taking the
  activations from that ``w`` instead of recomputing the blocks' forward passes (the discrete adjoint records
  them per stage: the forward pass of a tanh network is about half the cost of its vjp). It writes out_z but
  ADDS a^T df/dtheta to out_theta (the sweep passes its running sum).
- ``LVG_SIG``: ``loss_vg(t, z, theta, d, out, out_z, out_theta)``: a scalar loss term (d: the data row) in
  out[0] and its gradient in out_z, out_theta (written, not accumulated), with one CSE over both.
"""
from numba import types

_f8 = types.float64
_p = types.CPointer(types.float64)

F_SIG = types.void(_f8, _p, _p, _p)
J_SIG = types.void(_f8, _p, _p, _p)
V_SIG = types.void(_f8, _p, _p, _p, _p, _p)
LVG_SIG = types.void(_f8, _p, _p, _p, _p, _p, _p)
FW_SIG = types.void(_f8, _p, _p, _p, _p)
VW_SIG = types.void(_f8, _p, _p, _p, _p, _p, _p)
