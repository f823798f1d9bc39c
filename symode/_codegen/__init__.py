"""Code generation: SymPy expressions to the source of a generated Numba module (no numba imported here)."""

# Parts of the cache keys, here so that a model found in the cache is loaded without importing the emitter.
EMIT_REVISION = "3"  # every model's cache key: bump when the generated code changes (3: pointer ABI)
NET_CODEGEN = "8"  # network models' cache key: bump when their generated code changes
