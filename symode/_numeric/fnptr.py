"""Call generated kernels from cached library loops through their addresses.

Library loops are compiled once and cached on disk; they receive each model kernel as an integer address
(``cfunc.address``) and turn it into a Numba first-class function with the intrinsics below. Passing
addresses (not dispatcher objects) keeps the Python call overhead at that of plain integer arguments and
lets every loop hit Numba's disk cache whatever the model.
"""
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .signatures import F_SIG, J_SIG, L_SIG, LG_SIG, V_SIG


def _caster(sig):
    fty = types.FunctionType(sig)

    @intrinsic
    def cast(typingctx, addr):
        if not isinstance(addr, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            s = cgutils.create_struct_proxy(fty)(context, builder)
            vp = context.get_value_type(types.voidptr)
            s.c_addr = builder.inttoptr(args[0], vp)
            s.py_addr = cgutils.get_null_value(vp)
            s.jit_addr = cgutils.get_null_value(vp)
            return s._getvalue()

        return fty(addr), codegen

    return cast


as_f = _caster(F_SIG)
as_j = _caster(J_SIG)
as_v = _caster(V_SIG)
as_l = _caster(L_SIG)
as_lg = _caster(LG_SIG)
