"""A monotonic clock callable from cached compiled loops (for the wall-clock limit option), and the loops'
periodic check of the clock and of Ctrl-C (``periodic_check``).

The address of the C library's ``clock_gettime`` is looked up at run time (never frozen into cached code)
and passed to the loops as an integer; ``monotonic(addr)`` calls it through that address. Where the
function is not available the address is 0 and ``monotonic`` returns 0.0 (no time limit is enforced).
"""
import ctypes
import ctypes.util
import functools

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import _status as st
from .interrupt import sigint_count


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
        # entry-block allocas (alloca_once): an alloca in the branch below would grow the stack at every call
        # inside a loop (a solve with a time limit ran out of stack after ~2 s)
        result = cgutils.alloca_once(builder, ir.DoubleType())
        ts = cgutils.alloca_once(builder, ts_t)
        builder.store(ir.Constant(ir.DoubleType(), 0.0), result)
        with builder.if_then(builder.icmp_unsigned("!=", a, ir.Constant(a.type, 0))):
            fn = builder.inttoptr(a, fnty.as_pointer())
            builder.call(fn, [ir.Constant(i32, CLOCK_MONOTONIC), ts])
            sec = builder.load(builder.gep(ts, [ir.Constant(i32, 0), ir.Constant(i32, 0)]))
            nsec = builder.load(builder.gep(ts, [ir.Constant(i32, 0), ir.Constant(i32, 1)]))
            v = builder.fadd(builder.sitofp(sec, ir.DoubleType()),
                             builder.fmul(builder.sitofp(nsec, ir.DoubleType()), ir.Constant(ir.DoubleType(), 1e-9)))
            builder.store(v, result)
        return builder.load(result)

    return types.float64(addr), codegen


@njit(cache=True, nogil=True)
def periodic_check(sigint0, time_limit, clock_addr, t_start_clock):
    """The step loops' periodic check (every 64 steps; a real call, not inlined, so that the loops stay as
    they are): INTERRUPTED when a SIGINT arrived since the loop began (the count was ``sigint0``), TIME_LIMIT
    when ``time_limit`` > 0 seconds have passed since ``t_start_clock``, else SUCCESS."""
    if sigint_count() != sigint0:
        return st.INTERRUPTED
    if time_limit > 0.0 and monotonic(clock_addr) - t_start_clock > time_limit:
        return st.TIME_LIMIT
    return st.SUCCESS
