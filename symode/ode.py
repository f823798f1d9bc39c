"""The user-facing ODE class: checks input, builds the solver config, calls the engine (no caches, no loops)."""
from __future__ import annotations

import importlib

import numpy as np
import sympy as sp

from . import _validate as V
from ._engine import SOLVERS
from ._engine import gradients as _gradients
from ._engine import prepared as _prepared
from ._engine.batch import is_batch, solve_batch
from ._engine.config import DEFAULTS as D, SOLVER_KEYS, unknown_keywords
from ._engine.explicit import prepare_flat_solve, solve_prepared
from ._engine.runtime import ModelRuntime
from ._errors import InputValidationError
from ._numeric import rk
from ._symbolic.model import SymbolicModel
from ._symbolic.networks import blocks_registered, network_blocks
from ._symbolic.transforms import gradient_flow_system

DEFAULT_MAX_STEPS = D.max_steps
# ``solve(..., client=)`` hands a batch to symode.distributed, which sits above this module (its workers rebuild
# ODEs): it is found by name when first asked for, as a plugin, so the facade never imports the Dask layer.
_DISTRIBUTED = "symode.distributed"
_SOLVE_KEYS = SOLVER_KEYS + ("throw", "client")


class ODE:
    """An ODE model dz/dt = f(z, theta, t) written in SymPy, compiled on first use.

    Parameters
    ----------
    rhs : sequence of sympy.Expr or sympy.Matrix, length n
        The right-hand sides, one per state.
    states : sequence of sympy.Symbol, length n
    params : sequence of sympy.Symbol, length p, optional
    t : sympy.Symbol, optional
        The time symbol, if the model is non-autonomous.

    Raises
    ------
    symode.ModelError
        On mismatched lengths, duplicate or non-Symbol entries, undeclared free symbols (named in the
        message) or expressions that cannot be compiled. Raised here, before anything compiles.

    Examples
    --------
    >>> import sympy as sp, numpy as np, symode
    >>> x, y = sp.symbols("x y"); a, b, c, d = sp.symbols("alpha beta gamma delta")
    >>> lv = symode.ODE([a*x - b*x*y, d*x*y - c*y], states=[x, y], params=[a, b, c, d])
    >>> sol = lv.solve([1.0, 1.0], [1.5, 1.0, 3.0, 1.0], np.linspace(0, 10, 11))
    """

    def __init__(self, rhs, states, params=(), t=None):
        self._sym = SymbolicModel(rhs, states, params, t)
        self._rt = ModelRuntime(self._sym)   # compiled kernels and every per-model cache of this process

    # ------------------------------------------------------------------ description
    @property
    def n_states(self):
        return self._sym.n

    @property
    def n_params(self):
        return self._sym.p

    @property
    def states(self):
        return self._sym.states

    @property
    def params(self):
        return self._sym.params

    @property
    def t(self):
        return self._sym.t

    @property
    def rhs(self):
        """The right-hand sides as a SymPy column Matrix (user symbols)."""
        return sp.Matrix(self._sym.rhs)

    def _derivatives(self):
        return self._rt.derivatives()

    @property
    def jac_z_expr(self):
        """Exact df/dz as a SymPy Matrix (n, n) in the user's symbols."""
        return self._derivatives().dense_jac_z().xreplace(self._sym.from_canon)

    @property
    def jac_theta_expr(self):
        """Exact df/dtheta as a SymPy Matrix (n, p) in the user's symbols."""
        return self._derivatives().dense_jac_theta().xreplace(self._sym.from_canon)

    @property
    def jac_t_expr(self):
        """Exact df/dt as a SymPy Matrix (n, 1) in the user's symbols."""
        d = self._derivatives()
        return sp.Matrix([d.jac_t.get(i, sp.S.Zero) for i in range(self.n_states)]).xreplace(self._sym.from_canon)

    def __reduce__(self):
        # A model travels (pickle, Dask, multiprocessing, copy) as its SymPy definition, and the constructor runs
        # again on the other side. Compiled modules, Numba dispatchers, kernel addresses and derived caches
        # belong to one process: they are rebuilt there (or loaded from the on-disk caches) on first use.
        # Network blocks (symode.nn) travel with the model; public attributes set on the instance (e.g.
        # gradient_flow's ``loss_expr``) too.
        sym = self._sym
        extra = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        args = (type(self), sym.rhs, sym.states, sym.params, sym.t, network_blocks(sym.rhs))
        return (_rebuild_ode, args, extra or None)

    def __repr__(self):
        return f"ODE(n_states={self.n_states}, n_params={self.n_params}, states={list(self.states)})"

    # ------------------------------------------------------------------ model files (never evaluated)
    @classmethod
    def from_text(cls, text):
        """Build a model from the text format (parsed by a restricted parser, never by eval/sympify).

        ::

            # Lotka-Volterra
            states: x, y
            params: alpha, beta, gamma, delta
            time: t                      # optional
            z0: 1.0, 1.0                 # optional defaults, kept in ``model.defaults``
            theta: 1.5, 1.0, 3.0, 1.0
            dx/dt = alpha*x - beta*x*y
            dy/dt = delta*x*y - gamma*y

        Numbers, declared names, + - * / ^ ** and parentheses, and a whitelist of functions (sin, cos, tan,
        exp, log, sqrt, tanh, abs, min, max, ...). Anything else raises :class:`symode.ModelParseError`
        naming the line and column.
        """
        from ._parse import parse_model_text

        return cls._from_spec(parse_model_text(text))

    @classmethod
    def from_file(cls, path):
        """Build a model from a text file in the format of :meth:`from_text` (read as UTF-8 text only)."""
        from ._parse import parse_model_file

        return cls._from_spec(parse_model_file(path))

    @classmethod
    def _from_spec(cls, spec):
        model = cls(list(spec.rhs), states=list(spec.states), params=list(spec.params), t=spec.t)
        model.defaults = dict(spec.defaults)
        model.name = spec.name
        return model

    # ------------------------------------------------------------------ compiled kernels
    @property
    def compiled(self):
        """The generated, compiled module (built or loaded from the on-disk cache on first access)."""
        return self._rt.compiled

    @property
    def source_path(self):
        """Path of the generated source file (useful when reading a Numba traceback)."""
        return self.compiled.path

    def _zt(self, z, theta):
        return self._rt.zt(z, theta)

    def f(self, z, theta=(), t=0.0):
        """Evaluate dz/dt = f(z, theta, t); returns shape (n,)."""
        z, theta = self._zt(z, theta)
        out = np.empty(self.n_states)
        rk.call_f(self.compiled.kern[0], float(t), z, theta, out)
        return out

    def jac_z(self, z, theta=(), t=0.0):
        """Exact df/dz at (z, theta, t); returns shape (n, n)."""
        z, theta = self._zt(z, theta)
        out = np.zeros((self.n_states, self.n_states))
        rk.call_j(self.compiled.kern[1], float(t), z, theta, out)
        return out

    def jac_theta(self, z, theta=(), t=0.0):
        """Exact df/dtheta at (z, theta, t); returns shape (n, p)."""
        z, theta = self._zt(z, theta)
        out = np.zeros((self.n_states, self.n_params))
        rk.call_j(self.compiled.kern[2], float(t), z, theta, out)
        return out

    def jac_t(self, z, theta=(), t=0.0):
        """Exact df/dt at (z, theta, t); returns shape (n,)."""
        z, theta = self._zt(z, theta)
        out = np.empty(self.n_states)
        rk.call_f(self.compiled.kern[3], float(t), z, theta, out)
        return out

    def vjp_f(self, z, theta, t, a):
        """Vector-Jacobian products (a^T df/dz, a^T df/dtheta) at one point; shapes (n,), (p,)."""
        z, theta = self._zt(z, theta)
        a = V.vector(a, self.n_states, "a")
        oz = np.empty(self.n_states)
        op = np.empty(max(self.n_params, 1))
        rk.call_vjp(self.compiled.kern[4], float(t), z, theta, a, oz, op)
        return oz, op[: self.n_params].copy()

    # ------------------------------------------------------------------ solving
    def solve(self, z0, theta=(), ts=None, method=D.method, rtol=D.rtol, atol=D.atol, dt=D.dt,
              max_steps=D.max_steps, throw=D.throw, dt_max=D.dt_max, controller=D.controller,
              time_limit=D.time_limit, client=None, **kwargs):
        """Integrate from z(ts[0]) = z0 and return the solution at every time in `ts`.

        Parameters
        ----------
        z0 : array_like, shape (n,) or (B, n)
            The initial state; with a leading batch dimension (z0 and/or theta; the other one shared) the batch
            runs in one compiled parallel call (explicit methods), bit for bit equal to solving each member alone.
        theta : array_like, shape (p,) or (B, p)
        ts : array_like, shape (m,)
            Output times, strictly increasing or strictly decreasing (backward in time); ts[0] is the start.
        method : str
            "euler", "midpoint", "rk4" (fixed steps of at most `dt`), "bosh3", "dopri5", "tsit5", "dop853"
            (adaptive explicit), "rodas5", "rodas4" (stiff), "auto" (switching).
        rtol, atol : float or array_like (n,)
            Relative and absolute tolerances of the adaptive methods.
        dt : float, optional
            Step of the fixed-step methods (each interval between output times is split into equal steps no
            longer than dt); the initial step of the adaptive methods (chosen automatically by default).
        max_steps : int
            Bound on the number of attempted steps.
        throw : bool
            If True (default) a failed integration raises :class:`symode.IntegrationError`; if False the
            partial solution is returned with its ``status`` and ``message``.
        dt_max : float, optional
            Largest step allowed.
        controller : dict, optional
            Step-size controller settings: ``safety`` (0.9), ``fac_min`` (0.2), ``fac_max`` (10), ``beta``
            (the PI coefficient; 0.04 for dopri5/tsit5, 0 for bosh3 and dop853).
        time_limit : float, optional
            Wall-clock limit in seconds; the integration stops with status TIME_LIMIT when it is exceeded.
        client : distributed.Client, optional
            Solve a batch on this Dask cluster, in chunks, with :func:`symode.distributed.map_solve` (same
            result, bit for bit; chunk size, retries and progress bar are keywords of that function). A single
            trajectory is solved in this process.

        Returns
        -------
        Solution
            ``t`` (m,), ``z`` (m, n), ``stats``, ``status``, ``success``, ``message``; for a batch ``z`` is
            (B, m, n) and ``statuses`` (B,) holds each member's status (``stats["failed"]``: the failed indices).
        """
        if kwargs:
            raise unknown_keywords(kwargs, _SOLVE_KEYS)
        if ts is None:
            raise InputValidationError("`ts` (the output times, ts[0] being the start) is required")
        rt = self._rt
        if (client is None and controller is None and time_limit is None and type(rtol) is float
                and type(atol) is float and type(max_steps) is int and V.plain_pair(z0, theta, rt.zshape, rt.tshape)
                and V.plain_times(ts)):
            # the prepared call of these settings (a bool max_steps is not an int here: it is checked as itself)
            key = (method, rtol, atol, dt, max_steps, dt_max)
            fs = rt.lookup("flat_solve", key)
            if fs is None:
                fs = rt.memo("flat_solve", key,
                             lambda: prepare_flat_solve(rt.config(method, rtol, atol, dt, max_steps, dt_max)) or False)
            if fs:
                sol = solve_prepared(rt, z0, theta, ts, fs, throw)
                if sol is not None:
                    return sol
        if is_batch(z0, theta):
            if client is not None:
                map_solve = importlib.import_module(_DISTRIBUTED).map_solve
                return map_solve(self, z0, theta, ts, client=client, method=method, rtol=rtol, atol=atol, dt=dt,
                                 max_steps=max_steps, throw=throw, dt_max=dt_max, controller=controller,
                                 time_limit=time_limit)
            cfg = rt.config(method, rtol, atol, dt, max_steps, dt_max, controller, time_limit)
            return solve_batch(rt, z0, theta, ts, cfg, throw)
        z0, theta = rt.zt(z0, theta)
        ts = V.times(ts)
        cfg = rt.config(method, rtol, atol, dt, max_steps, dt_max, controller, time_limit)
        return SOLVERS[cfg.kind].solve(rt, z0, theta, ts, cfg, throw)   # a stiffness warning names the caller

    # ------------------------------------------------------------------ gradients
    def vjp(self, z0, theta, ts, cotangent, adjoint=D.adjoint, method=D.method, rtol=D.rtol, atol=D.atol, dt=D.dt,
            max_steps=D.max_steps, throw=D.throw, dt_max=D.dt_max, controller=D.controller, time_limit=D.time_limit,
            seminorm=True, adjoint_rtol=None, adjoint_atol=None, checkpoints=None, reduce=None, grad_t=True):
        """Gradients of a loss L given ``cotangent[i] = dL/dz(ts[i])``.

        Parameters
        ----------
        z0, theta, ts : as for :meth:`solve`; z0 and theta may carry a leading batch dimension (B, n) / (B, p):
            the batch runs in one compiled parallel call (``adjoint="discrete"``, explicit methods).
        cotangent : array_like, shape (m, n); for a batch (m, n) shared or (B, m, n) per member
        adjoint : {"discrete", "checkpoint", "backsolve", "forward"}
            What each computes and when to use it: docs/gradients-guide.md (discrete: the exact derivative of
            the computed solution; checkpoint: the continuous adjoint on the recorded forward pass; backsolve:
            O(1) memory, z re-integrated backward; forward: forward sensitivities).
        method, rtol, atol, dt, max_steps, throw, dt_max, controller, time_limit
            The solver settings of :meth:`solve`.
        seminorm : bool
            Leave the parameter quadrature out of the backward pass's error norm (checkpoint, backsolve).
        adjoint_rtol, adjoint_atol : float or array_like (n,), optional
            Tolerances of the backward pass (default: the forward ones).
        checkpoints : int, optional
            ``adjoint="checkpoint"`` with at most this many stored states (segments replayed from them).
        reduce : None or "sum"
            For a batch: per-member gradients (None) or their sum.
        grad_t : bool
            False skips dL/dts; ``Gradient.t`` is then None.

        Returns
        -------
        Gradient
            ``z0`` (n,) = dL/dz0, ``theta`` (p,) = dL/dtheta, ``t`` (m,) = dL/dts, ``solution``; for a batch
            (B, ...) arrays and ``statuses``.
        """
        return _gradients.vjp(self._rt, z0, theta, ts, cotangent, adjoint, method, rtol, atol, dt, max_steps, throw,
                              dt_max, controller, seminorm, adjoint_rtol, adjoint_atol, checkpoints, time_limit,
                              reduce, grad_t)

    def sensitivities(self, z0, theta, ts, method=D.method, rtol=D.rtol, atol=D.atol, dt=D.dt, max_steps=D.max_steps,
                      throw=D.throw, dt_max=D.dt_max, controller=D.controller, time_limit=D.time_limit):
        """Forward sensitivities: z integrated together with dz/dz0 and dz/dtheta.

        Parameters
        ----------
        z0, theta, ts, method, rtol, atol, dt, max_steps, throw, dt_max, controller, time_limit
            As for :meth:`solve` (single trajectories). The sensitivities are error-controlled like the states;
            with a Rosenbrock method the augmented system is solved with its own exact Jacobian.

        Returns
        -------
        Sensitivities
            ``t`` (m,), ``z`` (m, n), ``dz_dz0`` (m, n, n), ``dz_dtheta`` (m, n, p), ``solution``.
        """
        return _gradients.sensitivities(self._rt, z0, theta, ts, method, rtol, atol, dt, max_steps, throw, dt_max,
                                        controller, time_limit)

    def value_and_grad(self, loss, z0, theta, ts, data=None, adjoint=D.adjoint, *, reduce=None, grad_t=True,
                       **solver):
        """Value and gradients of a loss of the solution.

        Parameters
        ----------
        loss : sympy.Expr | FinalLoss | ObservationLoss | RunningCost | callable
            A SymPy expression of the final state (and parameters); ``ObservationLoss(expr, data_symbols)``
            summed over the output times against ``data`` (additive terms with a NaN data entry are skipped at
            that time); ``RunningCost(r)`` for the integral of r(z, theta, t); or
            ``callable(t, z) -> (value, dL/dz (m, n))``.
        z0, theta, ts : as for :meth:`solve`; z0 and theta may carry a leading batch dimension (B, n) / (B, p):
            then the whole batch runs in one compiled parallel call (discrete adjoint, explicit methods).
        data : array_like (m, number of data symbols), for ObservationLoss; (B, m, ...) per batch member
        adjoint : {"discrete", "checkpoint", "backsolve", "forward"}, as for :meth:`vjp`
        reduce : None or "sum"
            For a batch: values and gradients per member (None) or summed over the members.
        grad_t : bool
            False skips dL/dts (it costs one evaluation of f per output time with the discrete adjoint);
            ``Gradient.t`` is then None.
        **solver
            The solver settings of :meth:`vjp`: method, rtol, atol, dt, max_steps, throw, dt_max, controller,
            time_limit, seminorm, adjoint_rtol, adjoint_atol, checkpoints.

        Returns
        -------
        Gradient with ``value``, ``z0``, ``theta``, ``t``.

        With a SymPy expression, FinalLoss or ObservationLoss and the discrete adjoint of an explicit method,
        the forward solve, the loss, its cotangent, the reverse sweep and dL/dts run in one compiled call (no
        second forward pass, no Python between them).
        """
        if reduce is not None:
            solver["reduce"] = reduce
        if grad_t is not True:
            solver["grad_t"] = grad_t
        return _prepared.value_and_grad(self._rt, loss, z0, theta, ts, data=data, adjoint=adjoint, **solver)

    def value_and_grad_fn(self, loss, ts, data=None, adjoint=D.adjoint, *, grad_t=True, **solver):
        """``fn(z0, theta) -> Gradient``, equal to ``value_and_grad(loss, z0, theta, ts, data, adjoint, ...)``,
        with the output times, the loss (its kernels and data rows) and the solver settings checked and prepared
        once: the per-call cost is that of checking z0 and theta and of the one compiled call (for a training
        loop or an optimizer calling it many times; ``data`` is fixed, as the loss of such a loop is).

        Parameters
        ----------
        loss, ts, data, adjoint : as for :meth:`value_and_grad`
        grad_t : bool
            False skips dL/dts (``Gradient.t`` is then None).
        **solver
            The solver settings of :meth:`vjp` (method, rtol, atol, dt, max_steps, throw, dt_max, controller,
            time_limit, ...).

        Returns
        -------
        callable
            ``fn(z0, theta) -> Gradient`` (with ``value``); batches and the adjoints that are not prepared go
            through :meth:`value_and_grad` with the same settings.
        """
        if grad_t is not True:
            solver["grad_t"] = grad_t
        return _prepared.ValueAndGradFn(self._rt, loss, ts, data=data, adjoint=adjoint, **solver)


def _rebuild_ode(cls, rhs, states, params, t, blocks=None):
    """Unpickle a model from its SymPy definition (see ODE.__reduce__)."""
    obj = cls.__new__(cls)
    with blocks_registered(blocks):
        ODE.__init__(obj, list(rhs), states=list(states), params=list(params), t=t)
    return obj


def gradient_flow(loss_expr, params, eta=1.0):
    """The ODE d theta/dt = -eta * grad L(theta) over `params` ("continuous backpropagation").

    Parameters
    ----------
    loss_expr : sympy.Expr
        The loss L as an expression of `params` (other free symbols become parameters of the flow).
    params : sequence of sympy.Symbol
        The quantities being optimised; they are the states of the returned ODE.
    eta : float or sympy.Symbol
        The learning rate (a Symbol makes it the flow's first parameter).

    Returns
    -------
    ODE
        States = `params`; parameters = [eta if symbolic] + other free symbols of the loss, sorted by name.

    Examples
    --------
    For L = theta**4 / 2 the flow is theta' = -2 eta theta**3, whose exact solution is
    theta(t) = theta0 * (1 + 4 eta theta0**2 t) ** (-1/2).

    >>> import sympy as sp, symode
    >>> th = sp.Symbol("theta")
    >>> flow = symode.gradient_flow(th**4 / 2, [th], eta=0.1)
    """
    flow = gradient_flow_system(loss_expr, params, eta)
    ode = ODE(list(flow.rhs), states=list(flow.states), params=list(flow.params))
    ode.loss_expr = loss_expr
    return ode
