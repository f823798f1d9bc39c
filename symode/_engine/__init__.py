"""The engine: solver settings, per-model runtime state, the explicit and stiff solvers, the adjoint kinds,
losses, prepared calls and batches. It takes a :class:`~.runtime.ModelRuntime`, never the ``ODE`` facade.

:data:`SOLVERS` maps a method's kind to the module that solves with it (``solve``, ``sensitivities``): adding a
method of an existing kind is one tableau and one ``methods.register`` call.
"""
from . import explicit, stiff

SOLVERS = {"explicit": explicit, "rosenbrock": stiff, "auto": stiff}
