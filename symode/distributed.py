"""Scale out on a Dask cluster: ensembles, parameter sweeps and dataset gradients.

A large batch is split into chunks of consecutive trajectories; each chunk runs on a Dask worker with
symode's in-core parallel batch solver (the same compiled loops as ``model.solve`` on a batch), and the
results are gathered back in order.

* :func:`map_solve` -- an ensemble solve. The returned :class:`~symode.Solution` is identical, bit for bit,
  to ``model.solve(z0, theta, ts, throw=False)`` run in one process (``z`` (B, m, n), ``statuses``,
  ``t_reached_all``, per-trajectory ``stats``), whatever the chunking and the number of workers: every
  trajectory runs the same compiled loop on its own work arrays.
* :func:`iter_solve` -- the same, yielding each chunk as soon as it is done (for streaming, or a first
  result early).
* :func:`map_vjp` and :func:`map_value_and_grad` -- dataset gradients. With ``reduce=None`` the per-sample
  gradients are identical, bit for bit, to the single-process batch (``model.vjp(..., reduce=None)``) and
  to per-trajectory ``model.value_and_grad``. With ``reduce="sum"`` (the default) every worker sums its
  chunk and the chunk sums are added pairwise in a fixed tree on the workers, so only p + n + m numbers
  (dL/dtheta, dL/dz0, dL/dts; plus the value) per chunk travel. The summation order differs from a
  single ``sum`` over the whole batch (NumPy adds the rows in order), so the sums agree to rounding
  (relative differences of a few ulps times log2 of the number of chunks), not bit for bit; for a given
  ``chunk_size`` they are reproducible run to run, independent of the number of workers and of the order
  in which chunks finish.

How models travel: as their SymPy definition (right-hand sides and symbols, pickled -- data, not code)
and their hash key (``model._sym.key()``). Compiled modules, Numba dispatchers and kernel addresses never
leave a process. Each worker process keeps a registry keyed by the model's hash and builds or loads the
compiled model once (generated modules come from the on-disk cache ``$SYMODE_CACHE_DIR``, Numba's compiled
loops from ``$NUMBA_CACHE_DIR``; workers inherit the environment of the process that starts them, so set
both before starting a ``LocalCluster``, or share them between machines, to avoid compiling in every
worker), then reuses it for every later chunk.

Failures: a chunk whose worker dies is run again by the scheduler (up to
``distributed.scheduler.allowed-failures`` times), and a chunk that raises is retried ``retries`` times.
An integration failure of one trajectory is not an error of its chunk: it is reported for that
trajectory, by global index and status code (``Solution.statuses``, ``stats["failed"]``), exactly as the
single-process batch reports it; with ``throw=True`` (the default) an :class:`~symode.IntegrationError`
naming the failed indices is raised once every chunk is done, carrying the complete result.

Threads: by default (``numba_threads="auto"``) each chunk runs the parallel loops on
``usable cores of the host // worker threads on that host`` Numba threads (1 on a ``LocalCluster`` that
already has one worker thread per core). Results do not depend on the thread count.

Example
-------
>>> from distributed import Client, LocalCluster                      # doctest: +SKIP
>>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
>>> sol = symode.distributed.map_solve(model, z0, thetas, [0.0, 10.0], client=client, progress=True)  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import os
import pickle
import sys
import threading
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import sympy as sp

from . import _status
from . import _validate as V
from ._errors import InputValidationError, IntegrationError, ModelError
from ._engine.batch import batch_solution
from ._engine.config import DEFAULTS, SOLVER_KEYS
from ._solution import Gradient, Solution
from ._symbolic.losses import FinalLoss, ObservationLoss, RunningCost
from ._symbolic.networks import blocks_registered, network_blocks
from ._symbolic.transforms import running_cost_system
from .ode import ODE

__all__ = ["ModelSpec", "iter_solve", "map_solve", "map_value_and_grad", "map_vjp", "ChunkResult"]

#: largest chunk chosen automatically (trajectories); the automatic size aims at ~8 chunks per worker thread
MAX_AUTO_CHUNK = 20_000
DEFAULT_RETRIES = 2
_REGISTRY_SIZE = 64

# --------------------------------------------------------------------------------------------- model spec


class ModelSpec:
    """What travels to the workers for a model: its SymPy definition (pickled) and its hash key.

    ``key`` is the model's canonical hash (``model._sym.key()``, the key of the generated-module cache);
    ``rkey`` also covers the user's symbol names (losses are written in them) and names the model in each
    worker's registry. The pickled definition is only unpickled by a worker that does not hold the model
    yet. Never holds compiled code.
    """

    __slots__ = ("key", "rkey", "payload", "n", "p")

    def __init__(self, model):
        sym = model._sym
        self.key = sym.key()
        self.n, self.p = sym.n, sym.p
        definition = (network_blocks(sym.rhs), tuple(sym.rhs), tuple(sym.states), tuple(sym.params), sym.t)
        self.payload = pickle.dumps(definition, protocol=pickle.HIGHEST_PROTOCOL)
        names = sp.srepr((tuple(sym.states), tuple(sym.params), sym.t))
        self.rkey = hashlib.sha256((self.key + "|" + names).encode()).hexdigest()

    def __getstate__(self):
        return {s: getattr(self, s) for s in self.__slots__}

    def __setstate__(self, state):
        for s in self.__slots__:
            setattr(self, s, state[s])

    def build(self, compile=True):
        """Rebuild the ODE, check that it hashes to the same key, and (by default) compile or load it."""
        blocks, rhs, states, params, t = pickle.loads(self.payload)
        with blocks_registered(blocks):
            model = ODE(list(rhs), states=list(states), params=list(params), t=t)
            if model._sym.key() != self.key:
                raise ModelError("the model rebuilt on this worker hashes differently from the client's "
                                 f"({model._sym.key()[:12]} != {self.key[:12]}): the worker runs a different "
                                 "version of symode or SymPy; install the same versions on the client and workers")
            if compile:
                model.compiled  # noqa: B018 - generate or load the module and its kernels now, once
        return model

    def __repr__(self):
        return f"ModelSpec(key={self.key[:12]}..., n={self.n}, p={self.p}, {len(self.payload)} bytes)"


_SPECS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _spec(model):
    spec = _SPECS.get(model)
    if spec is None:
        spec = ModelSpec(model)
        try:
            _SPECS[model] = spec
        except TypeError:  # pragma: no cover - a model class without weak references
            pass
    return spec


# ------------------------------------------------------------------------------- per-process (worker) side

_REGISTRY: "OrderedDict[str, object]" = OrderedDict()
_REGISTRY_LOCK = threading.Lock()
_PARALLEL_LOCK = threading.Lock()
#: counters of this process (read them on the workers with ``client.run``)
WORKER_STATS = {"models_built": 0, "chunks": 0}


def _model_for(spec):
    """The compiled model for `spec` in this process: built or loaded once, then reused (LRU of 64)."""
    with _REGISTRY_LOCK:
        model = _REGISTRY.get(spec.rkey)
        if model is not None:
            _REGISTRY.move_to_end(spec.rkey)
            return model
        model = spec.build()
        _REGISTRY[spec.rkey] = model
        WORKER_STATS["models_built"] += 1
        while len(_REGISTRY) > _REGISTRY_SIZE:
            _REGISTRY.popitem(last=False)
        return model


def registered_models():
    """Keys (``ModelSpec.rkey``) of the models this process holds compiled, oldest first."""
    with _REGISTRY_LOCK:
        return list(_REGISTRY)


@contextlib.contextmanager
def _chunk_context(numba_threads):
    """Numba threads for this chunk (thread-local setting), serialised if the threading layer needs it."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet in this process: serialise the first launch
        layer = None
    guard = _PARALLEL_LOCK if layer in (None, "workqueue") else contextlib.nullcontext()
    old = numba.get_num_threads()
    if numba_threads is not None:
        numba.set_num_threads(max(1, min(int(numba_threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        with guard:
            yield
    finally:
        numba.set_num_threads(old)


def _solve_chunk(spec, start, Z, T, ts, kw, numba_threads):
    """Worker task: solve trajectories start .. start+len(Z) with the in-core batch solver."""
    model = _model_for(spec)
    with _chunk_context(numba_threads):
        sol = model.solve(Z, T, ts, throw=False, **kw)
    WORKER_STATS["chunks"] += 1
    st = sol.stats
    return dict(start=start, z=sol.z, status=sol.statuses, t_reached=sol.t_reached_all,
                nfev=st["nfev"], nsteps=st["nsteps"], naccepted=st["naccepted"], nrejected=st["nrejected"])


def _grad_chunk(spec, start, Z, T, ts, cot, loss, data, kw, reduce, skip_failed, numba_threads):
    """Worker task: per-sample gradients of trajectories start .. start+len(Z), summed here if reduce="sum".

    ``loss`` is None (``cot`` is dL/dz(ts), (m, n) or (c, m, n)), ("running", n) (the model is the
    running-cost augmented one and ``cot`` its fixed cotangent), or ("loss", obj) with obj a SymPy expression,
    FinalLoss, ObservationLoss or callable(t, z) -> (value, dL/dz).
    """
    model = _model_for(spec)
    c, m = Z.shape[0], ts.size
    with _chunk_context(numba_threads):
        if loss is None or loss[0] == "running":
            g = model.vjp(Z, T, ts, cot, throw=False, reduce=None, **kw)
            status = g.statuses
            z = g.solution.z
            gz, gp, gt, nfev = g.z0, g.theta, g.t, g.solution.stats["nfev"]
            values = None
            if loss is not None:
                nq = loss[1]
                values = z[:, -1, nq].copy()
                gz = gz[:, :nq]
                z = z[:, :, :nq]
        else:
            values, gz, gp, gt, z, status, nfev = _loss_grad_chunk(model, Z, T, ts, loss[1], data, kw)
    WORKER_STATS["chunks"] += 1
    if reduce is None:
        return dict(start=start, z0=gz, theta=gp, t=gt, value=values, z=z, status=status, nfev=nfev)
    failed = np.flatnonzero(status != _status.SUCCESS)
    rows = np.flatnonzero(status == _status.SUCCESS) if (skip_failed and failed.size) else slice(None)
    return dict(z0=gz[rows].sum(0), theta=gp[rows].sum(0), t=gt[rows].sum(0),
                value=float(values[rows].sum()) if values is not None else float("nan"),
                n_ok=int(c - failed.size), failed=failed + start, failed_status=status[failed],
                nfev=int(np.sum(nfev)), m=m)


def _loss_grad_chunk(model, Z, T, ts, loss, data, kw):
    """Per-sample value and gradients of a loss. A compiled loss (SymPy expression, FinalLoss, ObservationLoss)
    goes through the batched ``value_and_grad``: one compiled call per chunk (forward, loss, cotangent and sweep
    per member); a callable loss through a batched solve, the callable per member, and a batched vjp."""
    c, m, n, p = Z.shape[0], ts.size, model.n_states, model.n_params
    if isinstance(loss, (sp.Basic, FinalLoss, ObservationLoss)):
        g = model.value_and_grad(loss, Z, T, ts, data=data if isinstance(loss, ObservationLoss) else None,
                                 reduce=None, throw=False, **kw)
        status = g.statuses.copy()
        bad = status != _status.SUCCESS
        values = np.where(bad, np.nan, g.value)
        return values, g.z0, g.theta, g.t, g.solution.z, status, g.solution.stats["nfev"].copy()
    sol = model.solve(Z, T, ts, throw=False, **kw)
    status = sol.statuses.copy()
    values = np.full(c, np.nan)
    C = np.zeros((c, m, n))
    for b in range(c):          # a callable(t, z) -> (value, dL/dz (m, n))
        if status[b] != _status.SUCCESS:
            continue
        value, cb = loss(sol.t, sol.z[b])
        C[b] = V.cotangent(cb, m, n, name="dL/dz returned by the loss")
        values[b] = float(value)
    ok = np.flatnonzero(status == _status.SUCCESS)
    gz, gp, gt = np.full((c, n), np.nan), np.full((c, p), np.nan), np.full((c, m), np.nan)
    nfev = sol.stats["nfev"].copy()
    if ok.size:
        g = model.vjp(Z[ok], T[ok], ts, C[ok], throw=False, reduce=None, **kw)
        gz[ok], gp[ok], gt[ok] = g.z0, g.theta, g.t
        status[ok] = g.statuses
        nfev[ok] += g.solution.stats["nfev"]
    return values, gz, gp, gt, sol.z, status, nfev


def _empty_sum(n, p, m):
    return dict(z0=np.zeros(n), theta=np.zeros(p), t=np.zeros(m), value=0.0, n_ok=0,
                failed=np.zeros(0, dtype=np.int64), failed_status=np.zeros(0, dtype=np.int64), nfev=0, m=m)


def _combine(a, b):
    """Pairwise sum of two chunk (or subtree) sums; failures are concatenated in index order."""
    return dict(z0=a["z0"] + b["z0"], theta=a["theta"] + b["theta"], t=a["t"] + b["t"],
                value=a["value"] + b["value"], n_ok=a["n_ok"] + b["n_ok"],
                failed=np.concatenate([a["failed"], b["failed"]]),
                failed_status=np.concatenate([a["failed_status"], b["failed_status"]]),
                nfev=a["nfev"] + b["nfev"], m=a["m"])


# -------------------------------------------------------------------------------------------- client side


def _get_client(client):
    """The Dask client to use: ``client`` itself, or the current one when None. A scheduler address (a string)
    is refused with a clear message rather than connected to: a Client made here would hold a connection that
    nobody closes; make one yourself (``distributed.Client("tcp://host:8786")``) and pass it, or make it current."""
    if isinstance(client, (str, bytes)):
        raise InputValidationError(f"`client` must be a distributed.Client, got the string {client!r}; to use a "
                                   f"scheduler at an address, connect first: client=distributed.Client({client!r})")
    if client is not None:
        if not callable(getattr(client, "submit", None)):
            raise InputValidationError(f"`client` must be a distributed.Client (or None for the current client), "
                                       f"got {type(client).__name__}")
        return client
    try:
        from distributed import get_client
    except ImportError:  # pragma: no cover
        raise ImportError("symode.distributed needs Dask: pip install 'symode[distributed]'") from None
    try:
        return get_client()
    except ValueError:
        raise InputValidationError("no Dask client: pass `client=` (e.g. distributed.Client(LocalCluster())) or "
                                   "create a Client first") from None


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _workers(client):
    try:
        params = inspect.signature(client.scheduler_info).parameters
        info = client.scheduler_info(n_workers=-1) if "n_workers" in params else client.scheduler_info()
        return info.get("workers", {})
    except Exception:  # pragma: no cover - a scheduler that does not answer: use defaults
        return {}


def _auto_threads(client, workers):
    """Numba threads per chunk: usable cores // worker threads, per host (the smallest over hosts)."""
    if not workers:
        return 1
    try:
        cpus = client.run(_usable_cpus)
    except Exception:  # pragma: no cover
        return 1
    hosts = {}
    for addr, w in workers.items():
        h = hosts.setdefault(w.get("host", addr), [0, 0])
        h[0] = max(h[0], int(cpus.get(addr, 1)))
        h[1] += int(w.get("nthreads", 1))
    return max(1, min(c // max(t, 1) for c, t in hosts.values()))


#: The solver keywords the chunked solve and gradients forward to ``ODE.solve`` / the batched ``vjp`` (the batched
#: gradient accepts all of them, plus ``adjoint``): the engine's one list, with its defaults (DEFAULTS).
SOLVE_OPTION_NAMES = SOLVER_KEYS
GRAD_OPTION_NAMES = SOLVE_OPTION_NAMES + ("adjoint",)


def _solve_option_names():
    """The solver options of ``ODE.solve`` that travel to the workers (``SOLVE_OPTION_NAMES``)."""
    return SOLVE_OPTION_NAMES


def _grad_option_names():
    """The solver options that the batched gradient accepts, and ``adjoint`` (``GRAD_OPTION_NAMES``)."""
    return GRAD_OPTION_NAMES


def _solver_options(model, kw, allowed, what):
    """Validate solver keywords here (before anything is sent); returns (kw to send, options tuple)."""
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise InputValidationError(f"unknown keyword argument(s) {', '.join(map(repr, bad))} for {what}; valid: "
                                   f"{', '.join(allowed)}")
    cfg = model._rt.config(**{k: kw.get(k, getattr(DEFAULTS, k)) for k in SOLVE_OPTION_NAMES})
    if not cfg.explicit:
        raise InputValidationError(f"batched solves support the explicit methods; {cfg.method.name!r} is not one "
                                   "yet")
    return dict(kw), cfg


@dataclass
class _Plan:
    client: object
    bounds: list
    numba_threads: object
    token: str

    def key(self, kind, i):
        return f"symode-{kind}-{self.token}-{i}"


def _plan(client, B, chunk_size, numba_threads, kind):
    client = _get_client(client)
    workers = _workers(client)
    if chunk_size is None:
        nthreads = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
        chunk_size = max(1, min(MAX_AUTO_CHUNK, math.ceil(B / (8 * nthreads))))
    else:
        chunk_size = V.positive_int(chunk_size, "chunk_size")
    if numba_threads == "auto":
        numba_threads = _auto_threads(client, workers)
    elif numba_threads is not None:
        numba_threads = V.positive_int(numba_threads, "numba_threads")
    bounds = [(s, min(s + chunk_size, B)) for s in range(0, B, chunk_size)]
    return _Plan(client, bounds, numba_threads, f"{kind}-{uuid.uuid4().hex[:16]}")


class _NoBar:
    def update(self, k=1):
        pass

    def close(self):
        pass


def _bar(progress, total, desc):
    if not progress:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        import warnings

        warnings.warn("progress=True needs tqdm (pip install tqdm); continuing without a progress bar",
                      RuntimeWarning, stacklevel=3)
        return _NoBar()
    opts = dict(total=total, desc=desc, unit="chunk", file=sys.stderr)
    if isinstance(progress, dict):
        opts.update(progress)
    return tqdm(**opts)


def _inputs(model, z0, theta, ts):
    Z, T = V.batch_pair(z0, theta, model.n_states, model.n_params)
    return Z, T, V.times(ts)


@dataclass
class ChunkResult:
    """One finished chunk of :func:`iter_solve`: trajectories ``start`` .. ``stop`` (global indices)."""

    start: int
    stop: int
    z: np.ndarray
    statuses: np.ndarray
    t_reached: np.ndarray
    stats: dict


def _run_solve(model, z0, theta, ts, client, chunk_size, retries, progress, numba_threads, solver_kwargs):
    retries = V.nonnegative_int(retries, "retries")
    kw, opts = _solver_options(model, solver_kwargs, _solve_option_names(), "map_solve")
    Z, T, ts = _inputs(model, z0, theta, ts)
    plan = _plan(client, Z.shape[0], chunk_size, numba_threads, "solve")
    spec = _spec(model)

    def gen():
        from distributed import as_completed

        cl = plan.client
        futures = [cl.submit(_solve_chunk, spec, s, Z[s:e], T[s:e], ts, kw, plan.numba_threads,
                             key=plan.key("chunk", i), retries=retries, pure=False)
                   for i, (s, e) in enumerate(plan.bounds)]
        bar = _bar(progress, len(futures), "symode solve")
        try:
            for fut in as_completed(futures):
                r = fut.result()
                fut.release()
                bar.update(1)
                yield r
        finally:
            bar.close()
            pending = [f for f in futures if not f.done()]
            if pending:
                cl.cancel(pending)

    return Z, T, ts, opts, gen()


def iter_solve(model, z0, theta, ts, client=None, chunk_size=None, *, retries=DEFAULT_RETRIES, progress=False,
               numba_threads="auto", **solver_kwargs):
    """Solve a batch on a Dask cluster, yielding :class:`ChunkResult` s in the order the chunks finish.

    Arguments as for :func:`map_solve` (failures are never raised: read ``statuses``). Breaking out of the
    loop cancels the chunks not yet done.
    """
    _, _, ts, _, gen = _run_solve(model, z0, theta, ts, client, chunk_size, retries, progress, numba_threads,
                                  solver_kwargs)
    for r in gen:
        s = r["start"]
        yield ChunkResult(start=s, stop=s + r["z"].shape[0], z=r["z"], statuses=r["status"],
                          t_reached=r["t_reached"],
                          stats={k: r[k] for k in ("nfev", "nsteps", "naccepted", "nrejected")})


def map_solve(model, z0, theta, ts, client=None, chunk_size=None, *, retries=DEFAULT_RETRIES, progress=False,
              numba_threads="auto", throw=True, **solver_kwargs):
    """Solve a batch of trajectories on a Dask cluster, in chunks; same result as ``model.solve`` on the batch.

    Parameters
    ----------
    model : symode.ODE
    z0 : array_like (n,) or (B, n)
    theta : array_like (p,) or (B, p)
    ts : array_like (m,)
        Output times; ``[t0, tf]`` keeps only the initial and final states (the least data to send back).
    client : distributed.Client, optional
        Defaults to the current client (``distributed.get_client()``). A scheduler address (a string) is refused
        with an InputValidationError: connect first, ``client=distributed.Client("tcp://host:8786")``, so that
        the connection is yours to close.
    chunk_size : int, optional
        Trajectories per task. Default: about 8 chunks per worker thread, at most 20,000.
    retries : int
        Times (>= 0) a chunk that raised is run again (a chunk whose worker died is rescheduled regardless).
    progress : bool or dict
        Show a tqdm progress bar over the chunks (a dict is passed to tqdm).
    numba_threads : "auto", int or None
        Numba threads per chunk ("auto": usable cores // worker threads on the host; None: Numba's setting).
    throw : bool
        Raise :class:`symode.IntegrationError` (carrying the complete ``solution``) if any trajectory failed.
    **solver_kwargs
        ``method`` (explicit methods), ``rtol``, ``atol``, ``dt``, ``max_steps``, ``dt_max``, ``controller``.

    Returns
    -------
    Solution
        ``t`` (m,), ``z`` (B, m, n), ``statuses`` (B,), ``t_reached_all`` (B,), ``stats`` (per-trajectory
        ``nfev``, ``nsteps``, ``naccepted``, ``nrejected``; ``failed``: global indices), ``status``,
        ``message`` -- as ``model.solve`` on the whole batch in one process.
    """
    Z, T, ts, opts, gen = _run_solve(model, z0, theta, ts, client, chunk_size, retries, progress, numba_threads,
                                     solver_kwargs)
    B, m, n = Z.shape[0], ts.size, model.n_states
    out = np.empty((B, m, n))
    status = np.zeros(B, dtype=np.int64)
    t_reached = np.zeros(B)
    cols = {k: np.zeros(B, dtype=np.int64) for k in ("nfev", "nsteps", "naccepted", "nrejected")}
    nchunks = 0
    for r in gen:
        s = r["start"]
        e = s + r["z"].shape[0]
        out[s:e] = r["z"]
        status[s:e] = r["status"]
        t_reached[s:e] = r["t_reached"]
        for k, col in cols.items():
            col[s:e] = r[k]
        nchunks += 1
    try:
        sol = batch_solution(ts, out, status, t_reached, cols, opts, throw)
    except IntegrationError as e:
        e.solution.chunks = nchunks
        raise
    sol.chunks = nchunks
    return sol


def _run_grad(model, Z, T, ts, cot, loss, data, client, chunk_size, reduce, skip_failed, retries, progress,
              numba_threads, throw, kw, what, nq=None):
    if reduce not in (None, "sum"):
        raise InputValidationError(f"`reduce` must be None (per-sample) or 'sum', got {reduce!r}")
    retries = V.nonnegative_int(retries, "retries")
    kw = dict(kw)
    adjoint = kw.pop("adjoint", "discrete")
    if adjoint != "discrete":
        raise InputValidationError("batched gradients use adjoint='discrete' (the others run per trajectory)")
    B, m = Z.shape[0], ts.size
    n = model.n_states if nq is None else nq
    p = model.n_params
    plan = _plan(client, B, chunk_size, numba_threads, "grad")
    cl = plan.client
    spec = _spec(model)
    per_sample_cot = cot is not None and cot.ndim == 3
    per_sample_data = data is not None and data.ndim == 3
    leaves = [cl.submit(_grad_chunk, spec, s, Z[s:e], T[s:e], ts, cot[s:e] if per_sample_cot else cot, loss,
                        data[s:e] if per_sample_data else data, kw, reduce, skip_failed, plan.numba_threads,
                        key=plan.key("chunk", i), retries=retries, pure=False)
                for i, (s, e) in enumerate(plan.bounds)]
    from distributed import as_completed

    bar = _bar(progress, len(leaves), f"symode {what}")
    try:
        if reduce is None:
            gz, gp, gt = np.empty((B, n)), np.empty((B, p)), np.empty((B, m))
            zs = np.empty((B, m, n))
            status = np.zeros(B, dtype=np.int64)
            nfev = np.zeros(B, dtype=np.int64)
            values = np.empty(B) if loss is not None else None
            for fut in as_completed(leaves):
                r = fut.result()
                fut.release()
                s = r["start"]
                e = s + r["status"].size
                gz[s:e], gp[s:e], gt[s:e], zs[s:e] = r["z0"], r["theta"], r["t"], r["z"]
                status[s:e], nfev[s:e] = r["status"], r["nfev"]
                if values is not None:
                    values[s:e] = r["value"]
                bar.update(1)
            failed = np.flatnonzero(status != _status.SUCCESS)
            sol = Solution(t=ts, z=zs, stats=dict(nfev=nfev, failed=failed), status=int(status.max()))
            sol.statuses = status
            g = Gradient(z0=gz, theta=gp, t=gt, solution=sol)
            if values is not None:
                g.value = values
            g.statuses = status
            g.stats = dict(failed=failed, failed_status=status[failed], chunks=len(leaves))
        else:
            # the tree is submitted at once: pairs are added on the workers as soon as both halves exist
            level, depth = list(leaves), 0
            while len(level) > 1:
                nxt = []
                for j in range(0, len(level) - 1, 2):
                    nxt.append(cl.submit(_combine, level[j], level[j + 1], key=plan.key(f"sum{depth}", j // 2),
                                         retries=retries, pure=False))
                if len(level) % 2:
                    nxt.append(level[-1])
                level, depth = nxt, depth + 1
            root = level[0] if level else cl.submit(_empty_sum, n, p, m, key=plan.key("sum", 0), pure=False)
            for fut in as_completed(leaves):
                if fut.status == "error":
                    fut.result()
                bar.update(1)
            r = root.result()
            failed, failed_status = r["failed"], r["failed_status"]
            g = Gradient(z0=r["z0"], theta=r["theta"], t=r["t"])
            if loss is not None:
                g.value = r["value"]
            g.stats = dict(failed=failed, failed_status=failed_status, n_ok=r["n_ok"], n_total=B,
                           nfev=r["nfev"], chunks=len(leaves), skip_failed=bool(skip_failed))
    finally:
        bar.close()
        pending = [f for f in leaves if not f.done()]
        if pending:
            cl.cancel(pending)
    if failed.size and throw:
        err = IntegrationError(f"{failed.size} of {B} trajectories failed (indices {failed[:10].tolist()}"
                               f"{'...' if failed.size > 10 else ''})",
                               status=int(g.stats["failed_status"][0]), solution=g.solution)
        err.gradient = g
        raise err
    return g


def _cotangent(cotangent, B, m, n):
    return V.cotangent(cotangent, m, n, batch=B)


def map_vjp(model, z0, theta, ts, cotangent, client=None, reduce="sum", chunk_size=None, *,
            retries=DEFAULT_RETRIES, progress=False, numba_threads="auto", throw=True, skip_failed=False,
            **solver_kwargs):
    """Dataset gradients on a Dask cluster: discrete-adjoint vjp of every trajectory, summed on the workers.

    Parameters
    ----------
    model, z0, theta, ts, client, chunk_size, retries, progress, numba_threads : as for :func:`map_solve`
    cotangent : array_like (m, n) (the same for every trajectory) or (B, m, n)
        ``cotangent[b, i] = dL/dz_b(ts[i])``.
    reduce : "sum" or None
        "sum": ``z0`` (n,), ``theta`` (p,), ``t`` (m,) are sums over the batch, added on the workers in a
        fixed pairwise tree (equal to the single-process sum to rounding; see the module docstring).
        None: per-sample ``z0`` (B, n), ``theta`` (B, p), ``t`` (B, m), ``statuses`` and ``solution.z``,
        identical bit for bit to ``model.vjp(..., reduce=None)``.
    throw : bool
        Raise :class:`symode.IntegrationError` (with ``.gradient``) if a trajectory failed.
    skip_failed : bool
        With reduce="sum", leave failed trajectories out of the sum (default False: as in one process, a
        failed trajectory's NaN gradient makes the sum NaN). ``stats["failed"]``/``["failed_status"]``
        name them either way.
    **solver_kwargs
        ``method`` (explicit), ``rtol``, ``atol``, ``dt``, ``max_steps``, ``dt_max``, ``controller``,
        ``adjoint`` ("discrete" only).

    Returns
    -------
    Gradient
        ``stats``: ``failed`` (global indices), ``failed_status``, ``chunks``, and with reduce="sum"
        ``n_ok``, ``n_total``, ``nfev`` (total).
    """
    kw, _ = _solver_options(model, solver_kwargs, _grad_option_names(), "map_vjp")
    Z, T, ts = _inputs(model, z0, theta, ts)
    C = _cotangent(cotangent, Z.shape[0], ts.size, model.n_states)
    return _run_grad(model, Z, T, ts, C, None, None, client, chunk_size, reduce, skip_failed, retries, progress,
                     numba_threads, throw, kw, "vjp")


_AUGMENTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _running_cost_model(model, expr):
    """The model augmented with the running cost as a quadrature state (as ``value_and_grad`` builds it)."""
    cache = _AUGMENTED.setdefault(model, {})
    key = sp.srepr(sp.sympify(expr))
    if key not in cache:
        aug = running_cost_system(model._sym, expr)
        cache[key] = ODE(list(aug.rhs), states=list(aug.states), params=list(aug.params), t=aug.t)
    return cache[key]


def map_value_and_grad(model, loss, z0, theta, ts, data=None, client=None, reduce="sum", chunk_size=None, *,
                       retries=DEFAULT_RETRIES, progress=False, numba_threads="auto", throw=True,
                       skip_failed=False, **solver_kwargs):
    """Value and gradients of a loss of every trajectory of a batch, on a Dask cluster.

    Per trajectory this is ``model.value_and_grad(loss, z0[b], theta[b], ts, data[b])`` (bit for bit, with
    ``reduce=None``); with ``reduce="sum"`` (default) the values and gradients are summed over the batch on
    the workers (a dataset loss), as in :func:`map_vjp`.

    Parameters
    ----------
    loss : sympy.Expr | FinalLoss | ObservationLoss | RunningCost | callable(t, z) -> (value, dL/dz (m, n))
        Travels to the workers as SymPy data (a callable is pickled with cloudpickle).
    data : array_like, for an ObservationLoss: (m, k) shared by all trajectories, or (B, m, k) per trajectory
        (NaN entries are missing observations).
    z0, theta, ts, client, reduce, chunk_size, retries, progress, numba_threads, throw, skip_failed, **solver_kwargs
        As for :func:`map_vjp`.

    Returns
    -------
    Gradient
        ``value`` (float, or (B,) with reduce=None), ``z0``, ``theta``, ``t``, ``stats`` as for :func:`map_vjp`.

    Notes
    -----
    Losses of the solution run a batched forward solve, evaluate the loss and its dL/dz per trajectory, then
    the batched discrete adjoint (which integrates forward again): about 1.5 times the work of a vjp with a
    known cotangent. A RunningCost is a vjp of the augmented model with a fixed cotangent.
    """
    kw, _ = _solver_options(model, solver_kwargs, _grad_option_names(), "map_value_and_grad")
    Z, T, ts = _inputs(model, z0, theta, ts)
    B, m, n = Z.shape[0], ts.size, model.n_states
    if isinstance(loss, RunningCost):
        aug = _running_cost_model(model, loss.expr)
        Za = np.concatenate([Z, np.zeros((B, 1))], axis=1)
        C = np.zeros((m, n + 1))
        C[-1, n] = 1.0
        return _run_grad(aug, Za, T, ts, C, ("running", n), None, client, chunk_size, reduce, skip_failed, retries,
                         progress, numba_threads, throw, kw, "value_and_grad", nq=n)
    if isinstance(loss, str):
        raise ModelError("losses are SymPy expressions; symode never evaluates strings")
    D = None
    if isinstance(loss, ObservationLoss):
        if data is None:
            raise InputValidationError("an ObservationLoss needs `data` (one row per output time)")
        D = V.loss_data(data, m, len(loss.data_symbols), batch=B)
    elif not isinstance(loss, (sp.Basic, FinalLoss)) and not callable(loss):
        raise InputValidationError(f"unsupported loss {type(loss).__name__}; use a SymPy expression, FinalLoss, "
                                   "ObservationLoss, RunningCost or a callable")
    if isinstance(loss, (sp.Basic, FinalLoss, ObservationLoss)):
        expr = loss.expr if isinstance(loss, (FinalLoss, ObservationLoss)) else loss
        _check_loss_symbols(model, expr, getattr(loss, "data_symbols", ()))
        if isinstance(loss, ObservationLoss):
            sym = model._sym
            V.observation_symbols(sym.states, sym.params, loss.data_symbols, sym.t)
    return _run_grad(model, Z, T, ts, None, ("loss", loss), D, client, chunk_size, reduce, skip_failed, retries,
                     progress, numba_threads, throw, kw, "value_and_grad")


def _check_loss_symbols(model, expr, data_symbols):
    """Raise here (not on a worker) if the loss uses symbols that are not the model's or declared data
    (``_validate.loss_symbols``, the check the compiled loss makes too)."""
    sym = model._sym
    V.loss_symbols(sym.states, sym.params, sym.t, expr, data_symbols)
