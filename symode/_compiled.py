"""Build or load the generated module of a model: derive, print, write, import (each step only if needed)."""
from __future__ import annotations

import functools

import os
import platform
import re
import sys
import threading
import time

import numpy as np
import sympy as sp

from ._codegen import loader
from ._codegen import EMIT_REVISION, NET_CODEGEN
from ._errors import ModelTooLargeError
from ._version import CODEGEN_VERSION, __version__

_lock = threading.Lock()
_END = "\n# end of generated module\n"

# Size guard. Numba's compile time grows with the number of operations in the generated code (measured: ~400
# operations per CPU second on a 2-core znver4 VM, so 40,000 is one to two minutes); bigger models are refused
# with ModelTooLargeError before anything is compiled. $SYMODE_MAX_GENERATED_OPS overrides it (0: no limit).
MAX_GENERATED_OPS = 40_000
_OPS_PER_TERM = 7  # generated operations per (rhs operation + Jacobian nonzero), fitted on P2 and P5 (n=4..32)
_OP_RE = re.compile(r"[-+*/]|\[|math\.")


def max_generated_ops():
    v = os.environ.get("SYMODE_MAX_GENERATED_OPS", "").strip()
    if v:
        try:
            return int(v)
        except ValueError:
            pass
    return MAX_GENERATED_OPS


def estimate_ops(sym):
    """Cheap pre-derivation estimate of the generated code's operation count (symbolic parts only)."""
    exprs = list(sym.rhs_c)
    if getattr(sym, "networks", None) is not None:
        exprs += [e for cb in sym.networks.blocks for e in cb.inputs_c]
    nnz = sum(len(e.free_symbols) for e in exprs)
    ops = sum(sp.count_ops(e) for e in exprs)
    return _OPS_PER_TERM * (nnz + ops)


def source_ops(text):
    """Operations in generated source: arithmetic operators, subscripts and math calls."""
    return len(_OP_RE.findall(text))


def _too_large(size, limit, when):
    return ModelTooLargeError(
        f"the model is too large to compile in reasonable time: its generated code has {when}{size:,} operations "
        f"(limit {limit:,}; Numba would take many minutes). Write large dense parts as network blocks "
        "(symode.nn: e.g. nn.dense(z, n, activation='tanh', bias=False) for tanh(W z), whose code size does not "
        "grow with the number of weights), or raise the limit with the environment variable "
        "SYMODE_MAX_GENERATED_OPS (0 = no limit).")


def _abi_digest(*modules):
    """Hash of the library sources that generated modules import (kernel signatures, the stack-array
    intrinsic, the vectorisable activations): Numba would not notice a change there in a cached kernel, so it
    is part of every model's key."""
    import hashlib

    h = hashlib.sha256()
    for mod in modules:
        with open(mod.__file__, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def versions_tag():
    import llvmlite
    import numba
    import sympy

    from ._numeric import fnptr, signatures, vmath

    abi = _abi_digest(fnptr, signatures, vmath)
    return (f"symode={__version__};codegen={CODEGEN_VERSION};emit={EMIT_REVISION};abi={abi};"
            f"sympy={sympy.__version__};numba={numba.__version__};"
            f"llvmlite={llvmlite.__version__};numpy={np.__version__};python={sys.version_info[:3]};"
            f"machine={platform.machine()}")


class CompiledModel:
    """The generated module of one model and the addresses of its kernels.

    Attributes
    ----------
    module : the imported generated module
    kern : ndarray of int64, [f, jac_z, jac_theta, jac_t, vjp] kernel addresses
    path : pathlib.Path of the generated source (for debugging)
    timings : dict of seconds spent deriving, printing, writing and importing (compiling or loading)
    """

    def __init__(self, sym, extra_specs_fn=None, tag=""):
        self.timings = {}
        tag = tag + f";emit={EMIT_REVISION}"
        if getattr(sym, "networks", None) is not None:
            tag = tag + f";nn-codegen={NET_CODEGEN}"
        key = sym.key(extra=versions_tag() + tag)
        self.key = key
        path = loader.module_path(key)
        self.path = path
        with _lock:
            text = loader.read_valid(path, key)
            self.generated = text is None
            if text is None:
                t0 = time.perf_counter()
                limit = max_generated_ops()
                if limit > 0:
                    est = estimate_ops(sym)
                    if est > 2 * limit:  # clearly too large: refuse before the (then slow) derivation
                        raise _too_large(est, limit, "an estimated ")
                from ._codegen.emit import emit_module, emit_network_module   # a cache miss: derive and print
                from ._symbolic.derivatives import derivatives

                derivs = derivatives(sym)
                self.derivatives = derivs
                t1 = time.perf_counter()
                if getattr(sym, "networks", None) is not None:
                    if extra_specs_fn:
                        raise NotImplementedError("extra kernels are not supported for models with network blocks")
                    text = emit_network_module(sym, derivs, key, __version__) + _END
                else:
                    extra = extra_specs_fn(sym, derivs) if extra_specs_fn else ()
                    text = emit_module(sym, derivs, key, __version__, extra_specs=extra) + _END
                t2 = time.perf_counter()
                if limit > 0 and source_ops(text) > limit:
                    raise _too_large(source_ops(text), limit, "")
                loader.write_atomic(path, text)
                self.timings.update(derive=t1 - t0, emit=t2 - t1)
            t3 = time.perf_counter()
            self.module = loader.import_module(key, path)
            self.timings["import"] = time.perf_counter() - t3
        mod = self.module
        # [f, jac_z, jac_theta, jac_t, vjp, f_rec, vjp_rec, W_REC]: network models add the pair that lets the
        # discrete adjoint reuse the activations of the forward solve (see signatures.FW_SIG); 0 elsewhere
        rec = [mod.f_rec.address, mod.vjp_rec.address, mod.W_REC] if hasattr(mod, "f_rec") else [0, 0, 0]
        self.kern = np.array([mod.f.address, mod.jac_z.address, mod.jac_theta.address, mod.jac_t.address,
                              mod.vjp.address] + rec, dtype=np.int64)
        self.jac_z_pattern = tuple(mod.JAC_Z_PATTERN)
        if hasattr(mod, "JAC_THETA_PATTERN_RUNS"):  # network models: (row, ((lo, hi), ...)) per row
            self.jac_theta_pattern = tuple((i, k) for i, runs in mod.JAC_THETA_PATTERN_RUNS
                                           for lo, hi in runs for k in range(lo, hi))
        else:
            self.jac_theta_pattern = tuple(mod.JAC_THETA_PATTERN)
        self.jac_t_nonzero = tuple(mod.JAC_T_NONZERO)
