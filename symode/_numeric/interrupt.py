"""Ctrl-C (SIGINT) inside long compiled loops.

CPython's own SIGINT handler only records the signal: the ``KeyboardInterrupt`` is raised when the
interpreter next runs bytecode, i.e. after a compiled solve has returned (a 20 s solve ran to its end). Here a
C-level handler counts the signals and chains to the handler it replaced (CPython's), so Python's behaviour is
unchanged; the compiled loops read the count (``sigint_count()``, a relaxed atomic load, where they check the
wall-clock limit: every 64 steps) and stop with status ``INTERRUPTED`` when it moved since they started.
The compiled entry points that Python calls then run Python's pending handler themselves, on the main thread,
before they return (``raise_if_interrupted``): the default handler's ``KeyboardInterrupt`` is what the call
raises. (Left pending, it fired inside Python code that Numba's wrapper runs while it boxes the result, and the
call ended in ``SystemError: ... returned a result with an exception set``: the SystemError seen in ``fit``.
A Ctrl-C that lands in any other compiled call returning arrays can still end that way: ``caused_by_interrupt``
recognises it.)

Design (what must not segfault):
- the count lives in memory owned by this module (``ctypes``) and reaches cached compiled code through a
  named symbol (``llvmlite.binding.add_symbol``), resolved when each process loads the code: nothing
  process-specific is frozen into Numba's disk cache;
- the handler is a Numba ``cfunc`` that does an atomic add and one call to the previous handler: no GIL, no
  allocation, safe in a signal handler and on any thread (batch members run in worker threads without the
  GIL: they only read the count);
- it is installed with ``sigaction`` (Linux only) keeping the previous action's mask and flags, only over a
  plain (non-``SA_SIGINFO``) C handler, and uninstalled at exit (``atexit``, before the JIT memory goes) when
  it is still the installed one. ``signal.signal(SIGINT, ...)`` called later puts CPython's handler back
  (loops then simply run to their end, as before); ``install()`` puts this one back on top.
- A solve running in a thread other than the main one also stops on Ctrl-C (status ``INTERRUPTED``).
Where any of this is unavailable the count never moves and the loops run as before.
"""
import atexit
import ctypes
import ctypes.util
import sys

from llvmlite import binding as _llb
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .. import _status as st

COUNT_SYMBOL = "symode_sigint_count"
PREV_SYMBOL = "symode_sigint_prev"
MAIN_SYMBOL = "symode_main_thread"

_COUNT = ctypes.c_int64(0)   # SIGINTs seen by the handler (only ever incremented)
_PREV = ctypes.c_int64(0)    # the handler it chains to (an address; 0: none)
_MAIN = ctypes.c_int64(0)    # the main thread's identifier (pthread_self of the interpreter's main thread)
_llb.add_symbol(COUNT_SYMBOL, ctypes.addressof(_COUNT))
_llb.add_symbol(PREV_SYMBOL, ctypes.addressof(_PREV))
_llb.add_symbol(MAIN_SYMBOL, ctypes.addressof(_MAIN))


def _register_functions():
    import threading

    api = ctypes.pythonapi
    addr = {"symode_gil_ensure": api.PyGILState_Ensure, "symode_gil_release": api.PyGILState_Release,
            "symode_check_signals": api.PyErr_CheckSignals,
            "symode_thread_self": api.PyThread_get_thread_ident}
    for name, fn in addr.items():
        _llb.add_symbol(name, ctypes.cast(fn, ctypes.c_void_p).value)
    _MAIN.value = ctypes.c_int64(threading.main_thread().ident).value


_register_functions()


def _global(builder, name):
    mod = builder.module
    try:
        return mod.get_global(name)
    except KeyError:
        gv = ir.GlobalVariable(mod, ir.IntType(64), name)
        gv.linkage = "external"
        return gv


@intrinsic
def sigint_count(typingctx):
    """The number of SIGINTs received so far (a relaxed atomic load of the handler's count)."""
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_global(builder, COUNT_SYMBOL), "monotonic", 8)

    return types.int64(), codegen


def _function(builder, name, ret, args):
    mod = builder.module
    try:
        return mod.get_global(name)
    except KeyError:
        return ir.Function(mod, ir.FunctionType(ret, args), name)


@intrinsic
def _run_python_signal_handlers(typingctx):
    """On the interpreter's main thread: take the GIL, run the pending Python signal handlers
    (``PyErr_CheckSignals``) and give the GIL back. When a handler raised, its exception stays set and the
    enclosing compiled function returns Numba's "Python exception set" status, which every compiled caller
    passes on and the dispatcher raises (as for an exception in an object-mode block). On any other thread
    (where CPython runs no handlers) it does nothing."""
    def codegen(context, builder, signature, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        me = builder.call(_function(builder, "symode_thread_self", i64, []), [])
        main = builder.load(_global(builder, MAIN_SYMBOL))
        with builder.if_then(builder.icmp_unsigned("==", me, main)):
            gil = builder.call(_function(builder, "symode_gil_ensure", i32, []), [])
            r = builder.call(_function(builder, "symode_check_signals", i32, []), [])
            builder.call(_function(builder, "symode_gil_release", ir.VoidType(), [i32]), [gil])
            with builder.if_then(builder.icmp_signed("!=", r, ir.Constant(i32, 0))):
                context.call_conv.return_exc(builder)
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, nogil=True)
def raise_if_interrupted(status):
    """Where a compiled call that Python called directly ends with status INTERRUPTED: run Python's pending
    SIGINT handler now, so that the call raises what it raises (``KeyboardInterrupt`` for the default one).

    Leaving the handler pending is not enough: Numba's wrapper runs Python code (``_numba_unpickle``) while it
    builds the result, the handler's exception is set there, and the call ends in ``SystemError: ... returned a
    result with an exception set``. Call this on the interpreter's main thread, in a serial part (never in a
    ``prange`` body); on other threads it does nothing and the status reports the interruption."""
    if status == st.INTERRUPTED:
        _run_python_signal_handlers()


def caused_by_interrupt(exc):
    """Whether `exc` is a ``KeyboardInterrupt`` or Numba's ``SystemError: ... returned a result with an exception
    set`` wrapping one (Ctrl-C while a compiled call that returns arrays was running: Numba runs Python code
    while it builds the result, where the pending handler raises)."""
    seen = 0
    while exc is not None and seen < 50:
        if isinstance(exc, KeyboardInterrupt):
            return True
        if not isinstance(exc, SystemError):
            return False
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


@intrinsic
def _count_and_chain(typingctx, signum):
    if not isinstance(signum, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        builder.atomic_rmw("add", _global(builder, COUNT_SYMBOL), ir.Constant(i64, 1), "monotonic")
        prev = builder.load_atomic(_global(builder, PREV_SYMBOL), "monotonic", 8)
        with builder.if_then(builder.icmp_unsigned(">", prev, ir.Constant(i64, 1))):   # not SIG_DFL/SIG_IGN
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(32)])
            sig = builder.trunc(args[0], ir.IntType(32)) if args[0].type.width > 32 else args[0]
            builder.call(builder.inttoptr(prev, fnty.as_pointer()), [sig])
        return context.get_dummy_value()

    return types.void(signum), codegen


class _Sigaction(ctypes.Structure):   # glibc / musl on 64-bit Linux
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * (128 // ctypes.sizeof(ctypes.c_ulong))),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


_SIGINT = 2
_SA_SIGINFO = 4
_state = {"handler": None, "libc": None, "atexit": False}


def _handler_address():
    h = _state["handler"]
    if h is None:
        from numba import cfunc

        @cfunc(types.void(types.int32), cache=True)
        def _on_sigint(signum):
            _count_and_chain(signum)

        h = _state["handler"] = _on_sigint
    return h.address


def _libc():
    if _state["libc"] is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.sigaction.argtypes = [ctypes.c_int, ctypes.POINTER(_Sigaction), ctypes.POINTER(_Sigaction)]
        libc.sigaction.restype = ctypes.c_int
        _state["libc"] = libc
    return _state["libc"]


def install():
    """Put the counting handler in front of the current SIGINT handler (idempotent). Returns whether the
    compiled loops can now see Ctrl-C."""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return False
    try:
        libc = _libc()
        addr = _handler_address()
        old = _Sigaction()
        if libc.sigaction(_SIGINT, None, ctypes.byref(old)) != 0:
            return False
        cur = old.handler or 0
        if cur == addr:
            return True
        if cur <= 1 or (old.flags & _SA_SIGINFO):   # default, ignored, or a three-argument handler: leave it
            return False
        _PREV.value = cur
        new = _Sigaction()
        ctypes.memmove(ctypes.byref(new), ctypes.byref(old), ctypes.sizeof(_Sigaction))
        new.handler = addr
        if libc.sigaction(_SIGINT, ctypes.byref(new), None) != 0:
            return False
        if not _state["atexit"]:
            atexit.register(uninstall)
            _state["atexit"] = True
        return True
    except Exception:  # noqa: BLE001  (no libc, no cfunc: Ctrl-C then acts when the loop returns, as before)
        return False


def uninstall():
    """Give SIGINT back to the handler this one chained to, if it is still the installed one."""
    try:
        h = _state["handler"]
        if h is None or not _PREV.value:
            return
        libc = _libc()
        cur = _Sigaction()
        if libc.sigaction(_SIGINT, None, ctypes.byref(cur)) != 0 or (cur.handler or 0) != h.address:
            return
        cur.handler = _PREV.value
        libc.sigaction(_SIGINT, ctypes.byref(cur), None)
    except Exception:  # noqa: BLE001
        pass


install()
