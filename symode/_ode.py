"""Pickles of models written by symode 0.1 name ``symode._ode.ODE`` and ``symode._ode._rebuild_ode``: these names
keep them loading (the facade lives in :mod:`symode.ode`)."""
from .ode import ODE as ODE, _rebuild_ode as _rebuild_ode  # noqa: F401
