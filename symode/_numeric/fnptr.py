"""Call generated kernels from cached library loops through their addresses.

Library loops are compiled once and cached on disk; they receive each model kernel as an integer address
(``cfunc.address``) and call it with ``call_f(addr, t, z, theta, out)`` (and ``call_v``, ``call_lvg`` for the
other signatures; ``call_j`` = ``call_f`` with a 2-D ``out``). The intrinsics pass the
data pointers of the (C-contiguous) array arguments straight to the C function, so a call costs what a
call through a C function pointer costs. Passing addresses (not dispatcher objects) keeps the Python call
overhead at that of plain integer arguments and lets every loop hit Numba's disk cache whatever the model.

``stack_empty(n)`` gives a kernel a scratch array of a literal size on the stack (no heap allocation).
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _check(arrays):
    for a in arrays:
        if not (isinstance(a, types.Array) and a.dtype == types.float64 and a.layout == "C"):
            raise TypeError(f"kernel arguments must be C-contiguous float64 arrays, got {a}")


def _codegen(n_arrays):
    def codegen(context, builder, signature, args):
        dbl = ir.DoubleType()
        fnty = ir.FunctionType(ir.VoidType(), [dbl] + [dbl.as_pointer()] * n_arrays)
        fp = builder.inttoptr(args[0], fnty.as_pointer())
        tval = context.cast(builder, args[1], signature.args[1], types.float64)
        ptrs = [context.make_array(ty)(context, builder, v).data for ty, v in zip(signature.args[2:], args[2:])]
        builder.call(fp, [tval] + ptrs)
        return context.get_dummy_value()

    return codegen


def _typed(addr, t, arrays):
    if not isinstance(addr, types.Integer) or not isinstance(t, (types.Float, types.Integer)):
        return None
    _check(arrays)
    return types.void(addr, t, *arrays), _codegen(len(arrays))


@intrinsic
def _call3(typingctx, addr, t, a0, a1, a2):
    return _typed(addr, t, (a0, a1, a2))


@intrinsic
def _call4(typingctx, addr, t, a0, a1, a2, a3):
    return _typed(addr, t, (a0, a1, a2, a3))


@intrinsic
def _call5(typingctx, addr, t, a0, a1, a2, a3, a4):
    return _typed(addr, t, (a0, a1, a2, a3, a4))


@intrinsic
def _call6(typingctx, addr, t, a0, a1, a2, a3, a4, a5):
    return _typed(addr, t, (a0, a1, a2, a3, a4, a5))


call_f = _call3  # f(t, z, theta, out), jac_t
call_j = _call3  # jac_z / jac_theta (t, z, theta, out (n, n) / (n, p))
call_v = _call5  # vjp(t, z, theta, a, out_z, out_theta)
call_lvg = _call6  # loss_vg(t, z, theta, d, out, out_z, out_theta)
call_fw = _call4  # f_rec(t, z, theta, out, w): f keeping a network model's activations in w
call_vw = _call6  # vjp_rec(t, z, theta, a, out_z, out_theta, w): vjp reusing them


@intrinsic
def stack_empty(typingctx, size):
    """A float64 array of literal `size` in the calling function's stack frame (valid until it returns)."""
    if not isinstance(size, types.IntegerLiteral):
        return None
    n = int(size.literal_value)
    arrty = types.Array(types.float64, 1, "C")

    def codegen(context, builder, signature, args):
        dbl = context.get_value_type(types.float64)
        data = cgutils.alloca_once(builder, dbl, size=max(n, 1))
        ary = context.make_array(arrty)(context, builder)
        intp = context.get_value_type(types.intp)
        context.populate_array(ary, data=data, shape=[ir.Constant(intp, n)],
                               strides=[ir.Constant(intp, 8)], itemsize=ir.Constant(intp, 8),
                               meminfo=None)
        return ary._getvalue()

    return arrty(size), codegen
