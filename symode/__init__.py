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
from ._ode import ODE as ODE, gradient_flow as gradient_flow
from ._losses import FinalLoss as FinalLoss, ObservationLoss as ObservationLoss, RunningCost as RunningCost
from ._gradients import ADJOINTS as ADJOINTS, Sensitivities as Sensitivities
from ._solution import Gradient as Gradient, Solution as Solution
from ._version import __version__ as __version__
from ._numeric.methods import METHODS as _METHODS

METHODS = tuple(_METHODS)
from ._train import FitResult as FitResult, Trainer as Trainer, TrainState as TrainState, fit as fit
from . import optim as optim
from . import nn as nn
