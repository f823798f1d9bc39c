"""symode: SymPy ODE models compiled with Numba, with exact derivatives and adjoint gradients."""
from ._errors import (
    InputValidationError as InputValidationError,
    IntegrationError as IntegrationError,
    ModelError as ModelError,
    ModelParseError as ModelParseError,
    ModelTooLargeError as ModelTooLargeError,
    SolverFailure as SolverFailure,
    StiffnessWarning as StiffnessWarning,
    SymodeError as SymodeError,
    UnsupportedExpressionError as UnsupportedExpressionError,
)
from .ode import ODE as ODE, gradient_flow as gradient_flow
from ._symbolic.losses import FinalLoss as FinalLoss, ObservationLoss as ObservationLoss, RunningCost as RunningCost
from ._engine.adjoints import ADJOINTS as _ADJOINTS
from ._solution import Gradient as Gradient, Sensitivities as Sensitivities, Solution as Solution
from ._version import __version__ as __version__
from ._numeric.methods import METHODS as _METHODS

ADJOINTS = tuple(_ADJOINTS)

# Training (fit, Trainer, ...), optim, nn, distributed and testing are imported on first use: a script that only
# solves or takes gradients starts without them (PEP 562 module __getattr__); ``symode.testing.check_gradients``
# works after a plain ``import symode``.
_LAZY = {"fit": "._train", "Trainer": "._train", "TrainState": "._train", "FitResult": "._train",
         "optim": ".optim", "nn": ".nn", "testing": ".testing", "distributed": ".distributed"}


def __getattr__(name):
    if name == "METHODS":   # read at each access: methods.register() adds to it
        return tuple(_METHODS)
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'symode' has no attribute {name!r}")
    import importlib

    m = importlib.import_module(mod, __name__)
    value = m if mod == "." + name else getattr(m, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"METHODS"})
