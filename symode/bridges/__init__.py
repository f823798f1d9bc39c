"""The framework-independent part of symode's PyTorch and JAX bridges (:mod:`symode.torch`, :mod:`symode.jax`).

:mod:`symode.bridges.core` works on NumPy arrays only: a :class:`~symode.bridges.core.Spec` (the model and its
checked solver settings, prepared once), the forward pass (one trajectory or a batch) and the backward pass (the
vector-Jacobian product for an incoming cotangent). Neither torch nor jax is imported here.
"""
