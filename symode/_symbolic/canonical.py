"""Canonical symbols: the generated names every user symbol is renamed to (shared, so hashing is stable)."""
from __future__ import annotations

import sympy as sp

_CANON_CACHE: dict = {}


def canonical_symbols(prefix, n):
    """Return ``n`` canonical real symbols ``<prefix>_0 ...`` (shared, so hashing is stable)."""
    key = (prefix, n)
    if key not in _CANON_CACHE:
        _CANON_CACHE[key] = tuple(sp.Symbol(f"{prefix}_{i}", real=True) for i in range(n))
    return _CANON_CACHE[key]
