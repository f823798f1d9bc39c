"""Code generation: SymPy expressions to the source of a generated Numba module (no numba imported here)."""
