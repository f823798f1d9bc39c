"""Symbolic layer: model validation, exact derivatives, network blocks (symbolic side) and the transforms that
build auxiliary systems. SymPy and NumPy only: never numba, symode.nn, the code generator or the engine."""
