"""Symbolic layer: model validation and exact derivatives (SymPy only, never numba)."""
