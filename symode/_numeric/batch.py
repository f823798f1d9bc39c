"""Parallel batches: many trajectories (each with its own step-size control) across threads.

Each trajectory runs the same compiled loop as a single solve, on its own work arrays, so results are
bitwise identical to solo runs and independent of the number of threads (Numba's ``prange``; the thread
count follows ``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``).

Threading layer and fork. Numba's default layer here is GNU OpenMP (TBB when it is installed), the fastest for
these loops: the fork-safe ``workqueue`` layer was measured 15 % slower on a P2 training iteration (340 against
393 us, one thread). GNU OpenMP cannot run a parallel region in a child forked after one ran in the parent (a
``multiprocessing`` fork pool that solved batches never returned). So a child forked from a process whose OpenMP
layer has run a parallel batch solves its batches with serial versions of the same loops (compiled there once,
a few seconds; bit-for-bit the same results, as the members are independent). ``multiprocessing``'s "spawn" or
"forkserver" start methods, or ``NUMBA_THREADING_LAYER=workqueue``, keep the children parallel. Under the
``workqueue`` layer (which does not allow two parallel launches at once) the batch entry points take a
process-wide lock: batches from several Python threads then run one after another.

Wall-clock limit and Ctrl-C: ``ctrl[4]`` (time_limit) bounds the whole call; a member that starts after it
is spent stops at once with TIME_LIMIT, the running ones at their next check (every 64 steps). Ctrl-C stops the
running members (status INTERRUPTED, see ``interrupt``) and the members not yet started.
"""
import math
import os
import threading

import numpy as np
from numba import njit, prange

from .. import _status as st
from .abi import FLAT_TAIL, flat_size  # noqa: F401  (re-exported: the callers' names)
from .adjoint import discrete_sweep
from .clock import clock_address, monotonic
from .interrupt import raise_if_interrupted, sigint_count
from .losses import eval_loss_rows
from .rk import MODE_F, _all_finite, integrate, integrate_nocheck, time_grad


_PARALLEL_LOCK = threading.Lock()


class _NoLock:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NO_LOCK = _NoLock()
_fork = {"parent_layer": None, "serial": False}   # set around fork (os.register_at_fork below)


def _parallel_guard():
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:   # no parallel region has run yet in this process
        layer = None
    return _PARALLEL_LOCK if layer == "workqueue" else _NO_LOCK


def _before_fork():
    import numba

    try:
        _fork["parent_layer"] = numba.threading_layer()
    except ValueError:
        _fork["parent_layer"] = None


def _after_fork_in_child():
    # GNU OpenMP cannot start a parallel region in a child forked after one ran in the parent
    if _fork["parent_layer"] == "omp":
        _fork["serial"] = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)

_SERIAL_TWINS = {}


def _loop(dispatcher):
    """The parallel batch loop, or in a child forked after OpenMP ran in its parent its serial twin (the same
    function compiled without ``parallel``: prange runs as range)."""
    if not _fork["serial"]:
        return dispatcher
    twin = _SERIAL_TWINS.get(dispatcher)
    if twin is None:
        twin = _SERIAL_TWINS[dispatcher] = njit(error_model="numpy", nogil=True)(dispatcher.py_func)
    return twin


_OPTS = dict(cache=True, error_model="numpy", nogil=True, parallel=True)
_SERIAL = dict(cache=True, error_model="numpy", nogil=True)


@njit(inline="always")
def _member(x, b):
    """Row b of a per-member array, or its only row when it is shared by the whole batch."""
    return x[b] if x.shape[0] > 1 else x[0]


@njit(**_SERIAL)
def _placeholders(n, s):
    """Arrays a plain forward solve passes for the jump and recorded-segment arguments (never written)."""
    return (np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1, dtype=np.int64), np.zeros(1), np.ones(1),
            np.zeros((1, n)), np.zeros((1, s, n)))


@njit(**_SERIAL)
def vjp_discrete_one(kern, n, p, theta, ts, y0, cot, loss_addr, loss_d, loss_rows, g_loss, rk_a, rk_b, rk_b_error,
                     rk_c, rk_dense, fsal, error_order, adaptive, rtol, atol, h_init, h_max, dt_fixed, max_steps, ctrl,
                     out_y, g_z0, g_theta, g_t, stats, fstats, clock_addr, rec_cap, want_t):
    """One trajectory's fused forward solve, loss and discrete adjoint: see ``_vjp_discrete_core``."""
    res = _vjp_discrete_core(kern, n, p, theta, ts, y0, cot, loss_addr, loss_d, loss_rows, g_loss, rk_a, rk_b,
                             rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive, rtol, atol, h_init, h_max,
                             dt_fixed, max_steps, ctrl, out_y, g_z0, g_theta, g_t, stats, fstats, clock_addr, rec_cap,
                             want_t, _placeholders(n, rk_b.size))
    raise_if_interrupted(res[0])
    return res


@njit(**_SERIAL)
def vjp_discrete_flat(kern, theta, ts, y0, loss_addr, loss_d, loss_rows, rk_a, rk_b, rk_b_error, rk_c, rk_dense,
                      rtol, atol, ctrl, fcfg, icfg, rec_cap, buf, stats):
    """``vjp_discrete_one`` for a prepared call (``model.value_and_grad_fn``): fewer arguments (a Python call
    pays per argument), the settings packed (``fcfg`` = [h_init, h_max, dt_fixed], ``icfg`` = [fsal,
    error_order, adaptive, max_steps, clock address, want dL/dts]) and every output in one zeroed buffer ``buf``
    of ``flat_size(n, p, m)``. z0 and theta are checked here: status -1 (nothing integrated) when an entry is not
    finite, and the caller names the problem through its validating path."""
    n = y0.size
    p = theta.size
    m = ts.size
    if not (_all_finite(y0) and _all_finite(theta)):
        return -1, 0, np.nan, False
    o = n + p + m
    out_y = buf[o:o + m * n].reshape((m, n))
    o += m * n
    cot = buf[o:o + m * n].reshape((m, n))
    o += m * n
    fstats = buf[o:o + FLAT_TAIL]
    g_loss = buf[o + FLAT_TAIL:o + FLAT_TAIL + max(p, 1)]
    res = _vjp_discrete_core(kern, n, p, theta, ts, y0, cot, loss_addr, loss_d, loss_rows, g_loss, rk_a, rk_b,
                             rk_b_error, rk_c, rk_dense, icfg[0] != 0, icfg[1], icfg[2] != 0, rtol, atol, fcfg[0],
                             fcfg[1], fcfg[2], icfg[3], ctrl, out_y, buf[:n], buf[n:n + p], buf[n + p:n + p + m],
                             stats, fstats, icfg[4], rec_cap, icfg[5] != 0, _placeholders(n, rk_b.size))
    raise_if_interrupted(res[0])
    return res


@njit(**_SERIAL)
def solve_flat(kern, theta, ts, y0, rk_a, rk_b, rk_b_error, rk_c, rk_dense, rtol, atol, ctrl, fcfg, icfg, buf,
               stats):
    """``model.solve``'s call for float64 vectors: settings packed as for ``vjp_discrete_flat``, outputs in
    buf = [ts (m), out_y (m n), fstats (4)] (ts copied there: the Solution's own; after a failure the rows not
    reached are NaN). z0, theta and ts are checked here: status -1, nothing integrated, when an entry is not
    finite or ts is not strictly monotonic (the caller's validating path then names the problem). Returns the
    integration's status."""
    n = y0.size
    p = theta.size
    m = ts.size
    if not (_all_finite(y0) and _all_finite(theta)):
        return -1
    up = ts[1] > ts[0]
    for i in range(m):
        v = ts[i]
        if not math.isfinite(v) or (i > 0 and ((v > ts[i - 1]) != up or v == ts[i - 1])):
            return -1
        buf[i] = v
    out_y = buf[m:m + m * n].reshape((m, n))
    fstats = buf[m + m * n:m + m * n + FLAT_TAIL]
    jadd, jset, mask, seg_t, seg_h, seg_y, seg_k = _placeholders(n, rk_b.size)
    res = integrate(MODE_F, kern, n, p, theta, buf[:m], y0, rk_a, rk_b, rk_b_error, rk_c, rk_dense, icfg[0] != 0,
                    icfg[1], icfg[2] != 0, rtol, atol, n, fcfg[0], fcfg[1], fcfg[2], icfg[3], ctrl, False, False,
                    jadd, jset, mask, seg_t, seg_h, seg_y, seg_k, 0, out_y, stats, fstats, icfg[4], 0)
    if res[0] != 0:   # a failed solve: the rows it did not reach are NaN
        out_step = res[1]
        for i in range(1, m):
            if out_step[i] < 0:
                for q in range(n):
                    out_y[i, q] = np.nan
    return res[0]


@njit(**_SERIAL)
def _vjp_discrete_core(kern, n, p, theta, ts, y0, cot, loss_addr, loss_d, loss_rows, g_loss, rk_a, rk_b, rk_b_error,
                       rk_c, rk_dense, fsal, error_order, adaptive, rtol, atol, h_init, h_max, dt_fixed, max_steps,
                       ctrl, out_y, g_z0, g_theta, g_t, stats, fstats, clock_addr, rec_cap, want_t, ph):
    """Forward solve with recording, discrete-adjoint sweep and time gradients in one compiled call.

    ``want_t`` False skips dL/dts (m evaluations of f) and leaves ``g_t`` NaN.

    The forward solve records with ``record=3``: a method's dense-output-only stages (DOP853's three extra ones)
    are computed only in steps with an output strictly inside them, the only ones where the sweep reads them.

    With a compiled loss (``loss_addr`` = [loss, loss_grad] addresses, not empty) the loss is evaluated on the
    solution's rows ``loss_rows`` (data rows ``loss_d``) first: ``cot`` (zeros on entry) receives dL/dz(ts[i])
    and ``g_loss`` the loss's own dL/dtheta, which joins ``g_theta``.

    ``ph``: the read-only placeholder arrays of ``_placeholders`` (a batch shares one set).

    Returns (status, number of recorded steps, loss value, all gradients finite); on failure they are NaN."""
    m = ts.size
    jadd, jset, mask, seg_t, seg_h, seg_y, seg_k = ph
    res = integrate_nocheck(MODE_F, kern, n, p, theta, ts, y0, rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal,
                    error_order, adaptive, rtol, atol, n, h_init, h_max, dt_fixed, max_steps, ctrl,
                    False, False, jadd, jset, mask, seg_t, seg_h, seg_y, seg_k, 3, out_y, stats, fstats, clock_addr,
                    rec_cap)
    if res[0] != 0:
        out_step = res[1]
        for i in range(1, m):
            if out_step[i] < 0:
                for q in range(n):
                    out_y[i, q] = np.nan
        for q in range(n):
            g_z0[q] = np.nan
        for k in range(p):
            g_theta[k] = np.nan
        for i in range(m):
            g_t[i] = np.nan
        return res[0], res[3].size, np.nan, False
    value = 0.0
    if loss_addr.size > 0:
        value = eval_loss_rows(loss_addr, ts, out_y, theta, loss_d, loss_rows, cot, g_loss)
    ybar = np.empty(n)
    discrete_sweep(kern, n, p, theta, res[3], res[4], res[5], res[6], rk_a, rk_b, rk_c, rk_dense,
                   res[1], res[2], cot, ybar, g_theta, res[8])
    for q in range(n):
        g_z0[q] = ybar[q] + cot[0, q]
    if loss_addr.size > 0 and (loss_addr.size < 2 or loss_addr[1] != 0):   # a loss with parameters
        for k in range(p):
            g_theta[k] += g_loss[k]
    if want_t:
        time_grad(kern[0], ts, out_y, theta, cot, ybar, g_t)
    else:
        for i in range(m):
            g_t[i] = 0.0
    finite = math.isfinite(value)
    for q in range(n):
        finite = finite and math.isfinite(g_z0[q])
    for k in range(p):
        finite = finite and math.isfinite(g_theta[k])
    for i in range(m):
        finite = finite and math.isfinite(g_t[i])
    return 0, res[3].size, value, finite


@njit(**_SERIAL)
def _member_start(ctrl, clock_addr, t_call, sigint0):
    """Before a member starts: (status, its ctrl). The status is INTERRUPTED after a Ctrl-C since the call
    began, TIME_LIMIT when the call's wall-clock limit is spent, else SUCCESS with a copy of ``ctrl`` whose
    time_limit is what is left of the call's (the member's own clock starts later)."""
    c = ctrl.copy()
    if sigint_count() != sigint0:
        return st.INTERRUPTED, c
    if ctrl.size > 4 and ctrl[4] > 0.0 and clock_addr != 0:
        left = ctrl[4] - (monotonic(clock_addr) - t_call)
        if not left > 0.0:
            return st.TIME_LIMIT, c
        c[4] = left
    return st.SUCCESS, c


@njit(**_SERIAL)
def _raise_if_any_interrupted(status):
    """After a batch's parallel loop (serial, the calling thread): Python's SIGINT handler when a member was
    interrupted (``interrupt.raise_if_interrupted``)."""
    for b in range(status.size):
        if status[b] == st.INTERRUPTED:
            raise_if_interrupted(status[b])
            return


@njit(inline="always")
def _member_not_run(out_y, y0):
    """A member stopped before its first step: row 0 is y0, the others NaN."""
    for q in range(out_y.shape[1]):
        out_y[0, q] = y0[q]
    for i in range(1, out_y.shape[0]):
        for q in range(out_y.shape[1]):
            out_y[i, q] = np.nan


@njit(**_OPTS)
def _batch_solve(kern, n, p, thetas, ts, y0s, rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive,
                 rtol, atol, h_init, h_max, dt_fixed, max_steps, ctrl, out_y, status, stats, t_reached, clock_addr):
    """Solve B trajectories: y0s (B, n), thetas (B, p) -> out_y (B, m, n), status (B,), stats (B, 8).
    y0s or thetas may have one row, shared by every member (no broadcast copy)."""
    B = out_y.shape[0]
    m = ts.size
    sigint0 = sigint_count()
    t_call = monotonic(clock_addr) if ctrl.size > 4 and ctrl[4] > 0.0 else 0.0
    jadd, jset, mask, seg_t, seg_h, seg_y, seg_k = _placeholders(n, rk_b.size)  # read-only: shared
    for b in prange(B):
        fst = np.zeros(4)
        stop, cb = _member_start(ctrl, clock_addr, t_call, sigint0)
        if stop != st.SUCCESS:
            status[b] = stop
            t_reached[b] = ts[0]
            _member_not_run(out_y[b], _member(y0s, b))
        else:
            res = integrate_nocheck(MODE_F, kern, n, p, _member(thetas, b), ts, _member(y0s, b), rk_a, rk_b,
                                    rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive, rtol, atol, n, h_init,
                                    h_max, dt_fixed, max_steps, cb, False, False, jadd, jset, mask, seg_t, seg_h,
                                    seg_y, seg_k, 0, out_y[b], stats[b], fst, clock_addr)
            status[b] = res[0]
            t_reached[b] = fst[0]
            if res[0] != 0:
                out_step = res[1]
                for i in range(1, m):
                    if out_step[i] < 0:
                        for q in range(n):
                            out_y[b, i, q] = np.nan
    _raise_if_any_interrupted(status)


@njit(**_OPTS)
def _batch_vjp_discrete(kern, n, p, thetas, ts, y0s, cots, loss_addr, loss_d, loss_rows, values, rk_a, rk_b,
                        rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive, rtol, atol, h_init, h_max, dt_fixed,
                        max_steps, ctrl, out_y, g_z0, g_theta, g_t, status, stats, rec_cap, want_t, clock_addr):
    """Per-trajectory discrete-adjoint gradients: cots (B, m, n) -> g_z0 (B, n), g_theta (B, p), g_t (B, m).
    With a compiled loss (``loss_addr`` not empty; data rows ``loss_d`` (B, m, w)) each member's loss value goes
    to ``values[b]`` and its cotangent, computed from its own solution, to ``cots[b]`` (zeros on entry).
    Each trajectory runs exactly the single-trajectory kernel, so results equal solo calls bit for bit.
    y0s, thetas and loss_d may have one row, shared by every member (no broadcast copy)."""
    B = out_y.shape[0]
    sigint0 = sigint_count()
    t_call = monotonic(clock_addr) if ctrl.size > 4 and ctrl[4] > 0.0 else 0.0
    ph = _placeholders(n, rk_b.size)   # read-only: shared
    for b in prange(B):
        fst = np.zeros(4)
        stop, cb = _member_start(ctrl, clock_addr, t_call, sigint0)
        if stop != st.SUCCESS:
            status[b] = stop
            values[b] = np.nan
            _member_not_run(out_y[b], _member(y0s, b))
            g_z0[b, :] = np.nan
            g_theta[b, :] = np.nan
            g_t[b, :] = np.nan
        else:
            g_loss = np.zeros(max(p, 1) if loss_addr.size > 1 and loss_addr[1] != 0 else 1)
            res = _vjp_discrete_core(kern, n, p, _member(thetas, b), ts, _member(y0s, b), cots[b], loss_addr,
                                     _member(loss_d, b), loss_rows, g_loss, rk_a, rk_b, rk_b_error, rk_c, rk_dense,
                                     fsal, error_order, adaptive, rtol, atol, h_init, h_max, dt_fixed, max_steps, cb,
                                     out_y[b], g_z0[b], g_theta[b], g_t[b], stats[b], fst, clock_addr, rec_cap,
                                     want_t, ph)
            status[b] = res[0]
            values[b] = res[2]
    _raise_if_any_interrupted(status)


def batch_solve(kern, n, p, thetas, ts, y0s, rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive,
                rtol, atol, h_init, h_max, dt_fixed, max_steps, ctrl, out_y, status, stats, t_reached):
    """Solve B trajectories: y0s (B, n), thetas (B, p) -> out_y (B, m, n), status (B,), stats (B, 8),
    t_reached (B,). y0s or thetas may have one row, shared by every member (no broadcast copy). ``ctrl[4]``
    (time_limit > 0) bounds the whole call. Serialised with other batches under the ``workqueue`` layer; serial in a
    child forked after OpenMP ran (see the module docstring)."""
    with _parallel_guard():
        _loop(_batch_solve)(kern, n, p, thetas, ts, y0s, rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal, error_order,
                     adaptive, rtol, atol, h_init, h_max, dt_fixed, max_steps, ctrl, out_y, status, stats, t_reached,
                     clock_address())


def batch_vjp_discrete(kern, n, p, thetas, ts, y0s, cots, loss_addr, loss_d, loss_rows, values, rk_a, rk_b,
                       rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive, rtol, atol, h_init, h_max, dt_fixed,
                       max_steps, ctrl, out_y, g_z0, g_theta, g_t, status, stats, rec_cap, want_t):
    """See ``_batch_vjp_discrete``; ``ctrl[4]`` (time_limit > 0) bounds the whole call. Serialised with other
    batches under the ``workqueue`` layer."""
    with _parallel_guard():
        _loop(_batch_vjp_discrete)(kern, n, p, thetas, ts, y0s, cots, loss_addr, loss_d, loss_rows, values, rk_a, rk_b,
                            rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive, rtol, atol, h_init, h_max,
                            dt_fixed, max_steps, ctrl, out_y, g_z0, g_theta, g_t, status, stats, rec_cap, want_t,
                            clock_address())


@njit(**_SERIAL)
def batch_epilogue(stats, status, g_z0, g_theta, g_t, values, want_sum, sums):
    """After a batched gradient: (largest number of accepted steps, number of failed members, whether the
    gradients are finite) in one call, and with ``want_sum`` the member sums (in member order, as NumPy's
    ``sum(axis=0)``) into ``sums`` = [z0 (n), theta (p), t (m), value]."""
    B = status.size
    n, p, m = g_z0.shape[1], g_theta.shape[1], g_t.shape[1]
    nacc = 0
    failed = 0
    for b in range(B):
        nacc = max(nacc, stats[b, 2])
        if status[b] != 0:
            failed += 1
    finite = True
    if want_sum:
        sums[:] = 0.0
        for b in range(B):
            for q in range(n):
                sums[q] += g_z0[b, q]
            for k in range(p):
                sums[n + k] += g_theta[b, k]
            for i in range(m):
                sums[n + p + i] += g_t[b, i]
            sums[n + p + m] += values[b]
        for q in range(n + p):
            finite = finite and math.isfinite(sums[q])
    else:
        for b in range(B):
            for q in range(n):
                finite = finite and math.isfinite(g_z0[b, q])
            for k in range(p):
                finite = finite and math.isfinite(g_theta[b, k])
    return nacc, failed, finite
