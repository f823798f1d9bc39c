"""Numerical layer: tableaus, method registry and compiled kernels (numpy + numba only, never sympy)."""
