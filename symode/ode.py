"""The user-facing ODE class."""
from __future__ import annotations

import numpy as np
import sympy as sp

from . import _status
from . import _validate as V
from ._batch import is_batch, solve_batch
from ._compiled import CompiledModel
from ._errors import InputValidationError, IntegrationError
from ._gradients import flat_settings, vjp as _vjp
from ._losses import value_and_grad as _value_and_grad
from ._numeric import methods as M
from ._numeric import rk
from ._numeric.batch import FLAT_TAIL, solve_flat
from ._numeric.clock import clock_address
from ._solution import PreparedSolution, Solution
from ._symbolic.model import SymbolicModel

DEFAULT_MAX_STEPS = 100_000
_SOLVE_KEYS = ("method", "rtol", "atol", "dt", "max_steps", "throw", "dt_max", "controller", "time_limit", "client")


def symode_stiffness_warning():
    from ._errors import StiffnessWarning

    return StiffnessWarning


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
        self._compiled = None
        self._derivs = None
        self._opts_cache = {}
        self._flat_cache = {}
        self._defaults = {}
        self._state_names = [str(s) for s in self._sym.states]
        self._param_names = [str(s) for s in self._sym.params]
        self._zshape, self._tshape = (self._sym.n,), (self._sym.p,)   # what the prepared calls take

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
        if self._derivs is None:
            if self._compiled is not None and getattr(self._compiled, "derivatives", None) is not None:
                self._derivs = self._compiled.derivatives
            else:
                from ._symbolic.derivatives import derivatives

                self._derivs = derivatives(self._sym)
        return self._derivs

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
        from .distributed import _network_blocks

        sym = self._sym
        extra = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        args = (type(self), sym.rhs, sym.states, sym.params, sym.t, _network_blocks(sym.rhs))
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
        if self._compiled is None:
            self._compiled = CompiledModel(self._sym)
        return self._compiled

    @property
    def source_path(self):
        """Path of the generated source file (useful when reading a Numba traceback)."""
        return self.compiled.path

    def _zt(self, z, theta):
        return V.pair(z, theta, self.n_states, self.n_params, self._state_names, self._param_names)

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
    def _options(self, method, rtol, atol, dt, max_steps, dt_max, controller, ny=None, time_limit=None):
        # Options made only of scalars are cached per model (the arrays are never written to).
        key = None
        if controller is None and type(rtol) is float and type(atol) is float and ny is None:
            key = (method, rtol, atol, dt, max_steps, dt_max, time_limit)
            hit = self._opts_cache.get(key)
            if hit is not None:
                return hit
        out = self._options_uncached(method, rtol, atol, dt, max_steps, dt_max, controller, ny, time_limit)
        if key is not None and len(self._opts_cache) < 64:
            self._opts_cache[key] = out
        return out

    def _options_uncached(self, method, rtol, atol, dt, max_steps, dt_max, controller, ny, time_limit):
        meth = M.get(method)
        ny = self.n_states if ny is None else ny
        if meth.fixed:
            if dt is None:
                raise InputValidationError(f"method {meth.name!r} takes fixed steps and needs `dt` (e.g. dt=0.01)")
        dt = V.positive_float(dt, "dt")
        rtol_a, atol_a = V.tolerances(rtol, atol, self.n_states)
        max_steps = V.positive_int(max_steps, "max_steps")
        dt_max = V.positive_float(dt_max, "dt_max")
        time_limit = V.positive_float(time_limit, "time_limit")
        ctrl = np.array([0.9, 0.2, 10.0, meth.beta, time_limit or 0.0])
        if controller is not None:
            names = ("safety", "fac_min", "fac_max", "beta")
            for k, v in dict(controller).items():
                if k not in names:
                    raise InputValidationError(f"unknown controller setting {k!r}; valid: {', '.join(names)}")
                ctrl[names.index(k)] = float(v)
        return meth, dt, rtol_a, atol_a, max_steps, dt_max, ctrl

    def solve(self, z0, theta=(), ts=None, method="dopri5", rtol=1e-6, atol=1e-9, dt=None,
              max_steps=DEFAULT_MAX_STEPS, throw=True, dt_max=None, controller=None, time_limit=None, client=None,
              **kwargs):
        """Integrate from z(ts[0]) = z0 and return the solution at every time in `ts`.

        Parameters
        ----------
        z0 : array_like, shape (n,)
        theta : array_like, shape (p,)
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
            ``t`` (m,), ``z`` (m, n), ``stats``, ``status``, ``success``, ``message``.
        """
        if kwargs:
            raise InputValidationError(f"unknown keyword argument(s) {', '.join(map(repr, kwargs))}; valid: "
                                       f"{', '.join(_SOLVE_KEYS)}")
        if ts is None:
            raise InputValidationError("`ts` (the output times, ts[0] being the start) is required")
        if (client is None and controller is None and time_limit is None and type(rtol) is float
                and type(atol) is float and V.plain_pair(z0, theta, self._zshape, self._tshape)
                and V.plain_times(ts)):
            sol = self._solve_flat(z0, theta, ts, (method, rtol, atol, dt, max_steps, dt_max), throw)
            if sol is not None:
                return sol
        if is_batch(z0, theta):
            if client is not None:
                from .distributed import map_solve

                return map_solve(self, z0, theta, ts, client=client, method=method, rtol=rtol, atol=atol, dt=dt,
                                 max_steps=max_steps, throw=throw, dt_max=dt_max, controller=controller,
                                 time_limit=time_limit)
            opts = self._options(method, rtol, atol, dt, max_steps, dt_max, controller, time_limit=time_limit)
            return solve_batch(self, z0, theta, ts, opts, throw)
        z0, theta = self._zt(z0, theta)
        ts = V.times(ts)
        opts = self._options(method, rtol, atol, dt, max_steps, dt_max, controller, time_limit=time_limit)
        meth = opts[0]
        if meth.kind != "explicit":
            from ._stiff import solve_stiff  # noqa: F401  (registered by the stiff module)

            return solve_stiff(self, z0, theta, ts, opts, throw)
        res = self._integrate(rk.MODE_F, z0, theta, ts, opts)
        return self._make_solution(ts, res, meth, opts[4], throw, stacklevel=3)   # a warning names the caller

    def _solve_flat(self, z0, theta, ts, key, throw):
        """A plain explicit solve of float64 vectors in one compiled call (``_numeric.batch.solve_flat``, which
        checks z0, theta and ts), with the Solution's stats built on first read; a failed integration is raised
        or returned with its status, and a stiffness warning given, as by the validating path. None when that
        path must answer instead: another method kind, or an input that is not finite or not monotonic (it
        names the problem)."""
        hit = self._flat_cache.get(key)
        if hit is None:
            opts = self._options(*key, None)
            meth = opts[0]
            hit = False
            if meth.kind == "explicit":
                hit = (meth, opts[4], self.compiled.kern, *meth.packed()[:5], opts[2], opts[3], opts[6],
                       *flat_settings(opts))
            if len(self._flat_cache) < 64:
                self._flat_cache[key] = hit
        if hit is False:
            return None
        meth, max_steps, kern, a, b, be, c, dense, rtol, atol, ctrl, fcfg, icfg = hit
        m, n = ts.size, self.n_states
        buf = np.empty(m + m * n + FLAT_TAIL)
        stats = np.zeros(8, dtype=np.int64)
        status = solve_flat(kern, theta, ts, z0, a, b, be, c, dense, rtol, atol, ctrl, fcfg, icfg, buf, stats)
        if status == 0 and not stats[6]:
            return PreparedSolution(buf[:m], buf[m:m + m * n].reshape(m, n), stats, meth.name, float(buf[m + m * n]))
        if status < 0:
            return None
        o = m + m * n   # a failure (its unreached rows are NaN already) or a stiffness warning to give
        res = dict(status=int(status), out_y=buf[m:o].reshape(m, n), out_step=np.zeros(m, dtype=np.int64),
                   stats=stats, t_reached=float(buf[o]), t_stiff=float(buf[o + 1]))
        return self._make_solution(buf[:m], res, meth, max_steps, throw, stacklevel=4)   # solve, _solve_flat

    _rec_cap = 0  # capacity hint for the per-step records of gradient solves (0: the library default)

    def _note_steps(self, n_rec):
        """Remember how many steps a recorded solve took, so that the next one allocates enough at once, and not
        much more: the hint shrinks by half (to 16 at least) while solves use under a quarter of it (a P2
        window takes 2 steps: its records, activations included, would be 892 kB at the default 256)."""
        cap = self._rec_cap or rk.REC_CAP0
        if n_rec > 0.8 * cap:
            self._rec_cap = int(1.25 * n_rec) + 1
        elif 4 * n_rec < cap and cap > rk.REC_MIN:
            self._rec_cap = max(rk.REC_MIN, cap // 2, 2 * n_rec)

    def _integrate(self, mode, y0, theta, ts, opts, nerr=None, record=0, stop_at_ts=False, jumps=None,
                   seg=None, rtol=None, atol=None, rec_cap=None):
        meth, dt, rtol_a, atol_a, max_steps, dt_max, ctrl = opts
        ny = y0.size
        if rtol is None:
            rtol = np.resize(rtol_a, ny) if ny != rtol_a.size else rtol_a
            atol = np.resize(atol_a, ny) if ny != atol_a.size else atol_a
        a, b, be, c, dense, fsal, eo = meth.packed()
        m = ts.size
        if jumps is None or seg is None:
            dflt = self._defaults.get(b.size)
            if dflt is None:  # placeholders the kernel never writes to
                dflt = self._defaults[b.size] = (
                    (np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1, dtype=np.int64)),
                    (np.zeros(1), np.ones(1), np.zeros((1, self.n_states)), np.zeros((1, b.size, self.n_states))))
        if jumps is None:
            use_jumps = False
            jadd, jset, mask = dflt[0]
        else:
            use_jumps = True
            jadd, jset, mask = jumps
        if seg is None:
            seg = dflt[1]
        out_y = np.empty((m, ny))
        stats = np.zeros(8, dtype=np.int64)
        fstats = np.zeros(4)
        res = rk.integrate(mode, self.compiled.kern, self.n_states, self.n_params, theta, ts, y0,
                           a, b, be, c, dense, fsal, eo, not meth.fixed,
                           rtol, atol, ny if nerr is None else nerr,
                           *meth.step_sizes(dt, dt_max), max_steps, ctrl,
                           stop_at_ts, use_jumps, jadd, jset, mask,
                           seg[0], seg[1], seg[2], seg[3], record, out_y, stats, fstats, clock_address(),
                           self._rec_cap if rec_cap is None else rec_cap)
        status, out_step, out_frac, rec_t, rec_h, rec_y, rec_k, n_rec, rec_w = res
        if record and mode == rk.MODE_F:
            self._note_steps(int(n_rec))
        return dict(status=int(status), t_stiff=float(fstats[1]), out_y=out_y, out_step=out_step, out_frac=out_frac,
                    rec_t=rec_t, rec_h=rec_h, rec_y=rec_y, rec_k=rec_k, rec_w=rec_w, stats=stats,
                    t_reached=float(fstats[0]), method=meth)

    def _make_solution(self, ts, res, meth, max_steps, throw, n=None, stacklevel=4):
        n = self.n_states if n is None else n
        status = res["status"]
        z = res["out_y"][:, :n]
        if status != _status.SUCCESS:
            z = z.copy()
            reached = res["out_step"] >= 0
            reached[0] = True
            z[~reached] = np.nan
        s = res["stats"]
        stats = dict(nfev=int(s[0]), nsteps=int(s[1]), naccepted=int(s[2]), nrejected=int(s[3]),
                     njev=int(s[4]), nlu=int(s[5]), method=meth.name)
        msg = _status.message(status, res["t_reached"], max_steps)
        if s[6]:
            stats["stiffness_detected_at"] = float(res.get("t_stiff", float("nan")))
            import warnings

            warnings.warn(f"The problem appears stiff from t={stats['stiffness_detected_at']:.6g} on "
                          f"({stats['nfev']} RHS evaluations with {meth.name}); a stiff method will be much "
                          "faster: method='rodas5', or method='auto' to switch automatically.",
                          symode_stiffness_warning(), stacklevel=stacklevel)
        sol = Solution(t=ts, z=z, stats=stats, status=status, message=msg, t_reached=res["t_reached"])
        if status != _status.SUCCESS and throw:
            raise IntegrationError(f"{_status.NAMES[status]}: {msg}", status=status, t=res["t_reached"],
                                   solution=sol)
        return sol

    # ------------------------------------------------------------------ gradients
    def vjp(self, z0, theta, ts, cotangent, adjoint="discrete", **kwargs):
        """Gradients of a loss L given ``cotangent[i] = dL/dz(ts[i])``.

        Parameters
        ----------
        z0, theta, ts : as for :meth:`solve`
        cotangent : array_like, shape (m, n)
        adjoint : {"discrete", "checkpoint", "backsolve", "forward"}
            See :mod:`symode._gradients` for what each computes and when to use it.
        **kwargs
            The solver keywords of :meth:`solve` (method, rtol, atol, dt, max_steps, throw, dt_max,
            controller), plus ``seminorm`` (leave the parameter quadrature out of the adjoint's error
            norm, default True), ``adjoint_rtol``/``adjoint_atol`` (backward tolerances) and
            ``checkpoints``.

        Returns
        -------
        Gradient
            ``z0`` (n,) = dL/dz0, ``theta`` (p,) = dL/dtheta, ``t`` (m,) = dL/dts, ``solution``.
        """
        return _vjp(self, z0, theta, ts, cotangent, adjoint=adjoint, **kwargs)

    def sensitivities(self, z0, theta, ts, **kwargs):
        """Forward sensitivities: ``t``, ``z``, ``dz_dz0`` (m, n, n) and ``dz_dtheta`` (m, n, p)."""
        from ._gradients import sensitivities

        return sensitivities(self, z0, theta, ts, **kwargs)

    def value_and_grad(self, loss, z0, theta, ts, data=None, adjoint="discrete", **kwargs):
        """Value and gradients of a loss of the solution.

        Parameters
        ----------
        loss : sympy.Expr | FinalLoss | ObservationLoss | RunningCost | callable
            A SymPy expression of the final state (and parameters); ``ObservationLoss(expr, data_symbols)``
            summed over the output times against ``data`` (NaN entries skipped); ``RunningCost(r)`` for
            the integral of r(z, theta, t); or ``callable(t, z) -> (value, dL/dz (m, n))``.
        data : array_like (m, number of data symbols), for ObservationLoss; (B, m, ...) per batch member
        z0, theta : as for :meth:`solve`; either may carry a leading batch dimension (B, n) / (B, p): then
            the whole batch runs in one compiled parallel call (discrete adjoint, explicit methods) and
            ``reduce="sum"`` sums values and gradients over the members (default: per member).
        grad_t : bool
            False skips dL/dts (it costs one evaluation of f per output time with the discrete adjoint);
            ``Gradient.t`` is then None.
        **kwargs : solver settings as for :meth:`vjp`

        Returns
        -------
        Gradient with ``value``, ``z0``, ``theta``, ``t``.

        With a SymPy expression, FinalLoss or ObservationLoss and the discrete adjoint of an explicit method,
        the forward solve, the loss, its cotangent, the reverse sweep and dL/dts run in one compiled call (no
        second forward pass, no Python between them).
        """
        return _value_and_grad(self, loss, z0, theta, ts, data=data, adjoint=adjoint, **kwargs)

    def value_and_grad_fn(self, loss, ts, data=None, adjoint="discrete", **kwargs):
        """``fn(z0, theta) -> Gradient``, equal to ``value_and_grad(loss, z0, theta, ts, data, adjoint, **kwargs)``,
        with the output times, the loss (its kernels and data rows) and the solver settings checked and prepared
        once: the per-call cost is that of checking z0 and theta and of the one compiled call (for a training
        loop or an optimizer calling it many times; ``data`` is fixed, as the loss of such a loop is)."""
        from ._losses import ValueAndGradFn

        return ValueAndGradFn(self, loss, ts, data=data, adjoint=adjoint, **kwargs)


def _rebuild_ode(cls, rhs, states, params, t, blocks=None):
    """Unpickle a model from its SymPy definition (see ODE.__reduce__)."""
    from .distributed import _blocks_registered

    obj = cls.__new__(cls)
    with _blocks_registered(blocks):
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
    from ._symbolic.gradient_flow import gradient_flow_rhs

    rhs, extra = gradient_flow_rhs(loss_expr, params, eta)
    ode = ODE(rhs, states=list(params), params=extra)
    ode.loss_expr = loss_expr
    return ode
