"""Build or load the generated module of a model: derive, print, write, import (each step only if needed)."""
from __future__ import annotations

import platform
import sys
import threading
import time

import numpy as np

from ._codegen import loader
from ._codegen.emit import emit_module
from ._symbolic.derivatives import Derivatives
from ._version import CODEGEN_VERSION, __version__

_lock = threading.Lock()
_END = "\n# end of generated module\n"


def versions_tag():
    import llvmlite
    import numba
    import sympy

    return (f"symode={__version__};codegen={CODEGEN_VERSION};sympy={sympy.__version__};numba={numba.__version__};"
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
        key = sym.key(extra=versions_tag() + tag)
        self.key = key
        path = loader.module_path(key)
        self.path = path
        with _lock:
            text = loader.read_valid(path, key)
            self.generated = text is None
            if text is None:
                t0 = time.perf_counter()
                derivs = Derivatives(sym)
                self.derivatives = derivs
                t1 = time.perf_counter()
                extra = extra_specs_fn(sym, derivs) if extra_specs_fn else ()
                text = emit_module(sym, derivs, key, __version__, extra_specs=extra) + _END
                t2 = time.perf_counter()
                loader.write_atomic(path, text)
                self.timings.update(derive=t1 - t0, emit=t2 - t1)
            t3 = time.perf_counter()
            self.module = loader.import_module(key, path)
            self.timings["import"] = time.perf_counter() - t3
        mod = self.module
        self.kern = np.array([mod.f.address, mod.jac_z.address, mod.jac_theta.address, mod.jac_t.address,
                              mod.vjp.address], dtype=np.int64)
        self.jac_z_pattern = tuple(mod.JAC_Z_PATTERN)
        self.jac_theta_pattern = tuple(mod.JAC_THETA_PATTERN)
        self.jac_t_nonzero = tuple(mod.JAC_T_NONZERO)
