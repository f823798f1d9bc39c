"""``ModelRuntime``: everything one process computes once for a model, in one place.

The ODE facade owns one runtime and hands it to the engine; the engine's functions take the runtime, never the
facade (so the engine does not import it). Per-model caches (solver configs, prepared calls, compiled losses,
auxiliary models of the adjoints and sensitivities, linear-algebra plans) live in :meth:`ModelRuntime.memo`: one
bounded store per kind, filled under the runtime's lock (Dask runs chunks in threads), read without it (a dict
lookup is atomic; the hot paths pay only that).
"""
from __future__ import annotations

import threading

import numpy as np

from .. import _validate as V
from .._codegen.compiled import CompiledModel
from .._numeric import rk
from .config import SolverConfig, config_key, make_config

_MISSING = object()


class ModelRuntime:
    """The compiled kernels, derivatives and caches of one symbolic model (``sym``) in this process."""

    def __init__(self, sym):
        self.sym = sym
        self.n, self.p = sym.n, sym.p
        self.zshape, self.tshape = (sym.n,), (sym.p,)   # what the prepared calls take
        self.state_names = [str(s) for s in sym.states]
        self.param_names = [str(s) for s in sym.params]
        self._compiled = None
        self._derivs = None
        self._lock = threading.RLock()
        self._memo = {}
        # capacity hint for the per-step records of gradient solves (0: the library default); see note_steps
        self.rec_cap = 0

    # ------------------------------------------------------------------ compiled kernels and derivatives
    @property
    def compiled(self):
        """The generated, compiled module (built or loaded from the on-disk cache on first access)."""
        cm = self._compiled
        if cm is None:
            with self._lock:
                if self._compiled is None:
                    self._compiled = CompiledModel(self.sym)
                cm = self._compiled
        return cm

    @property
    def kern(self):
        return self.compiled.kern

    def derivatives(self):
        """The model's exact symbolic derivatives (those of its build when it was generated in this process)."""
        if self._derivs is None:
            with self._lock:
                if self._derivs is None:
                    cm = self._compiled
                    if cm is not None and getattr(cm, "derivatives", None) is not None:
                        self._derivs = cm.derivatives
                    else:
                        from .._symbolic.derivatives import derivatives   # lazy: a warm start never derives

                        self._derivs = derivatives(self.sym)
        return self._derivs

    # ------------------------------------------------------------------ caches
    def memo(self, kind, key, build, size=64):
        """The value cached under (``kind``, ``key``), built by ``build()`` on a miss. Each kind keeps at most
        ``size`` entries; the oldest goes first (insertion order)."""
        store = self._memo.get(kind)
        if store is not None:
            hit = store.get(key, _MISSING)
            if hit is not _MISSING:
                return hit
        with self._lock:
            store = self._memo.setdefault(kind, {})
            hit = store.get(key, _MISSING)
            if hit is not _MISSING:
                return hit
            value = build()
            self._put(store, key, value, size)
            return value

    def lookup(self, kind, key):
        """The value cached under (``kind``, ``key``), or None."""
        store = self._memo.get(kind)
        return None if store is None else store.get(key)

    def store(self, kind, key, value, size=64):
        """Cache ``value`` under (``kind``, ``key``) (bounded as :meth:`memo`)."""
        with self._lock:
            self._put(self._memo.setdefault(kind, {}), key, value, size)

    @staticmethod
    def _put(store, key, value, size):
        if key not in store and len(store) >= size:
            del store[next(iter(store))]
        store[key] = value

    def note_steps(self, n_rec):
        """Remember how many steps a recorded solve took, so that the next one allocates enough at once, and not
        much more: the hint shrinks by half (to 16 at least) while solves use under a quarter of it (a P2
        window takes 2 steps: its records, activations included, would be 892 kB at the default 256)."""
        cap = self.rec_cap or rk.REC_CAP0
        if n_rec > 0.8 * cap:
            self.rec_cap = int(1.25 * n_rec) + 1
        elif 4 * n_rec < cap and cap > rk.REC_MIN:
            self.rec_cap = max(rk.REC_MIN, cap // 2, 2 * n_rec)

    # ------------------------------------------------------------------ inputs
    def config(self, method, rtol, atol, dt, max_steps, dt_max, controller=None, time_limit=None) -> SolverConfig:
        """The checked :class:`SolverConfig` of these settings (cached when they are plain scalars; the types of
        the optional ones are part of the key, so that a value is always checked as itself)."""
        if (controller is None and type(method) is str and type(rtol) is float and type(atol) is float
                and type(max_steps) is int):
            key = (method, rtol, atol, max_steps, dt, type(dt), dt_max, type(dt_max), time_limit, type(time_limit))
        else:
            key = config_key(method, rtol, atol, dt, max_steps, dt_max, time_limit) if controller is None else None
            if key is None:
                return make_config(self.n, method, rtol, atol, dt, max_steps, dt_max, controller, time_limit)
        hit = self.lookup("config", key)
        if hit is not None:
            return hit
        return self.memo("config", key, lambda: make_config(self.n, method, rtol, atol, dt, max_steps, dt_max, None,
                                                            time_limit))

    def zt(self, z, theta):
        """z0 and theta checked (finite float64 vectors of the model's sizes; the message names a bad entry)."""
        return V.pair(z, theta, self.n, self.p, self.state_names, self.param_names)

    def placeholders(self, s):
        """Arrays the explicit loop takes but never writes to when it has no jumps or recorded segments."""
        def build():
            return ((np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1, dtype=np.int64)),
                    (np.zeros(1), np.ones(1), np.zeros((1, self.n)), np.zeros((1, s, self.n))))

        return self.memo("placeholders", s, build)
