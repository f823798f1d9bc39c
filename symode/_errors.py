"""Exception types raised by symode."""


class SymodeError(Exception):
    """Base class of every error symode raises on purpose."""


class ModelError(SymodeError, ValueError):
    """The symbolic model declaration is invalid (lengths, symbols, unsupported expressions)."""


ModelDefinitionError = ModelError


class UnsupportedExpressionError(ModelError):
    """An expression cannot be compiled (unknown function, complex number, Piecewise without default...)."""


class ModelTooLargeError(ModelError):
    """The model's expressions exceed the size symode compiles in reasonable time."""


class ModelParseError(ModelError):
    """A model file or string could not be parsed; carries ``line`` and ``col`` (1-based)."""

    def __init__(self, message, line=None, col=None):
        if line is not None:
            message = f"{message} (line {line}, col {col})"
        super().__init__(message)
        self.line = line
        self.col = col


class InputValidationError(SymodeError, ValueError):
    """A numerical input (z0, theta, ts, tolerances, options) is invalid."""


class IntegrationError(SymodeError, RuntimeError):
    """A numerical integration failed; carries ``status``, ``t`` (time reached) and the partial ``solution``."""

    def __init__(self, message, status=None, t=None, solution=None):
        super().__init__(message)
        self.status = status
        self.t = t
        self.t_fail = t
        self.solution = solution


SolverFailure = IntegrationError


class StiffnessWarning(RuntimeWarning):
    """An explicit method detected stiffness (Hairer's test): a stiff method would be much faster."""
