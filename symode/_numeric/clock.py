"""A monotonic clock callable from cached compiled loops (for the wall-clock limit option).

The address of the C library's ``clock_gettime`` is looked up at run time (never frozen into cached code)
and passed to the loops as an integer; ``monotonic(addr)`` calls it through that address. Where the
function is not available the address is 0 and ``monotonic`` returns 0.0 (no time limit is enforced).
"""
import ctypes
import ctypes.util
import functools

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@functools.lru_cache(maxsize=1)
def clock_address():
    """Address of ``clock_gettime`` in the C library, or 0 if it is not available (looked up once a process)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        return ctypes.cast(libc.clock_gettime, ctypes.c_void_p).value or 0
    except (OSError, AttributeError, TypeError):
        return 0


CLOCK_MONOTONIC = 1


@intrinsic
def monotonic(typingctx, addr):
    """Seconds from CLOCK_MONOTONIC through the function at `addr` (0.0 when addr == 0)."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        ts_t = ir.LiteralStructType([i64, i64])
        fnty = ir.FunctionType(i32, [i32, ts_t.as_pointer()])
        a = args[0]
        result = builder.alloca(ir.DoubleType())
        builder.store(ir.Constant(ir.DoubleType(), 0.0), result)
        with builder.if_then(builder.icmp_unsigned("!=", a, ir.Constant(a.type, 0))):
            ts = builder.alloca(ts_t)
            fn = builder.inttoptr(a, fnty.as_pointer())
            builder.call(fn, [ir.Constant(i32, CLOCK_MONOTONIC), ts])
            sec = builder.load(builder.gep(ts, [ir.Constant(i32, 0), ir.Constant(i32, 0)]))
            nsec = builder.load(builder.gep(ts, [ir.Constant(i32, 0), ir.Constant(i32, 1)]))
            v = builder.fadd(builder.sitofp(sec, ir.DoubleType()),
                             builder.fmul(builder.sitofp(nsec, ir.DoubleType()), ir.Constant(ir.DoubleType(), 1e-9)))
            builder.store(v, result)
        return builder.load(result)

    return types.float64(addr), codegen
