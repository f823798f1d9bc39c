__version__ = "0.1.0"
# Bumped whenever generated code or library kernels change meaning, so stale cache entries are never used.
CODEGEN_VERSION = "1"
