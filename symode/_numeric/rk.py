"""Compiled explicit Runge-Kutta integration loops (library code, compiled once and cached on disk).

One adaptive/fixed-step loop serves every use: a plain solve (``MODE_F``), forward sensitivities
(``MODE_SENS``), the backsolve adjoint (``MODE_BACKSOLVE``) and the interpolating adjoint used by the
checkpoint variant (``MODE_ADJ``). The mode only changes the right-hand side that ``eval_rhs`` evaluates;
methods are tableaus passed as arrays (``rk_a``, ``rk_b``, ``rk_b_error``, ``rk_c``, ``rk_dense``).
With an FSAL method, stages after the FSAL stage (see ``step_stages``) serve only the continuous extension
(DOP853's three extra stages): a step computes them only when an output falls strictly inside it or when the
stages are recorded for dense output (``record=2``). ``rk_b_error`` of length 2 s holds two error estimates
(DOP853's 5th- and 3rd-order ones), combined by ``error_norm_dual``.
Model kernels arrive as addresses in ``kern`` = [f, jac_z, jac_theta, jac_t, vjp, f_rec, vjp_rec, W_REC].
With a network model (``W_REC`` > 0) the discrete adjoint's recording pass (``record=3``) evaluates f through
``f_rec``, which leaves each stage's activations in ``rec_w[step, stage]`` (W_REC entries), and the sweep's
``vjp_rec`` starts from them instead of redoing the blocks' forward passes.
"""
import math

import numpy as np
from numba import njit

from .. import _status as st
from .abi import K_F, K_FREC, K_JP, K_JT, K_JZ, K_VJP, K_VREC, K_WREC  # noqa: F401  (re-exported)
from .clock import monotonic, periodic_check
from .fnptr import call_f as _kf, call_fw as _kfw, call_j as _kj, call_v as _kv
from .interrupt import raise_if_interrupted, sigint_count

_OPTS = dict(cache=True, error_model="numpy", nogil=True)
_INLINE = dict(_OPTS, inline="always")

MODE_F = 0
MODE_SENS = 1
MODE_BACKSOLVE = 2
MODE_ADJ = 3


@njit(**_INLINE)
def dense_weight(dense, i, x):
    """Weight b_i(x) = sum_j dense[i, j] x**(j+1) of stage i in a continuous extension (every method's form:
    explicit Runge-Kutta and Rosenbrock, forward and in the adjoints)."""
    b = 0.0
    xp = x
    for j in range(dense.shape[1]):
        b += dense[i, j] * xp
        xp *= x
    return b


@njit(**_INLINE)
def dense_eval(y0, h, K, rk_dense, frac, out):
    """Continuous extension: out = y0 + h * sum_i b_i(frac) K[i], b_i(x) = sum_j rk_dense[i, j] x**(j+1)."""
    s = rk_dense.shape[0]
    ny = y0.size
    for q in range(ny):
        out[q] = y0[q]
    for i in range(s):
        bi = dense_weight(rk_dense, i, frac)
        if bi != 0.0:
            c = h * bi
            for q in range(ny):
                out[q] += c * K[i, q]


@njit(**_OPTS)
def interp_forward(t, seg_t, seg_h, seg_y, seg_k, rk_dense, out, zbuf):
    """z(t) from recorded forward steps (start times seg_t, signed steps seg_h, start states seg_y, stages
    seg_k) by the method's continuous extension; t outside the recorded range is clamped to its ends."""
    nseg = seg_t.size
    d = 1.0 if seg_h[0] >= 0.0 else -1.0
    lo, hi = 0, nseg - 1
    # last k with d*seg_t[k] <= d*t
    if d * (t - seg_t[0]) <= 0.0:
        k = 0
    else:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if d * (seg_t[mid] - t) <= 0.0:
                lo = mid
            else:
                hi = mid - 1
        k = lo
    h = seg_h[k]
    frac = (t - seg_t[k]) / h if h != 0.0 else 0.0
    if frac > 1.0:
        frac = 1.0
    if frac < 0.0:
        frac = 0.0
    dense_eval(seg_y[k], h, seg_k[k], rk_dense, frac, out)


@njit(**_INLINE)
def eval_rhs(mode, kern, n, p, t, y, theta, out, wz, wa, wp, J, Jp, seg_t, seg_h, seg_y, seg_k, rk_dense):
    """Evaluate the right-hand side of the (possibly augmented) system for `mode` into `out`."""
    if mode == MODE_F:
        _kf(kern[K_F], t, y, theta, out)
    elif mode == MODE_BACKSOLVE:
        # y = [z, a, g]: z' = f(z), a' = -a^T df/dz, g' = -a^T df/dtheta
        for i in range(n):
            wz[i] = y[i]
            wa[i] = y[n + i]
        _kf(kern[K_F], t, wz, theta, out[:n])
        _kv(kern[K_VJP], t, wz, theta, wa, out[n:2 * n], wp)
        for i in range(n):
            out[n + i] = -out[n + i]
        for k in range(p):
            out[2 * n + k] = -wp[k]
    elif mode == MODE_ADJ:
        # y = [a, g]; z(t) from the recorded forward solution
        interp_forward(t, seg_t, seg_h, seg_y, seg_k, rk_dense, wz, wa)
        for i in range(n):
            wa[i] = y[i]
        _kv(kern[K_VJP], t, wz, theta, wa, out[:n], wp)
        for i in range(n):
            out[i] = -out[i]
        for k in range(p):
            out[n + k] = -wp[k]
    else:
        # MODE_SENS: y = [z, Sz (n x n, row-major), Sp (n x p)]; Sz' = J Sz, Sp' = J Sp + Jp
        for i in range(n):
            wz[i] = y[i]
        _kf(kern[K_F], t, wz, theta, out[:n])
        _kj(kern[K_JZ], t, wz, theta, J)
        if p > 0:
            _kj(kern[K_JP], t, wz, theta, Jp)
        ncol = n + p
        for i in range(n):
            for c in range(ncol):
                acc = 0.0
                if c >= n:
                    acc = Jp[i, c - n]
                for j in range(n):
                    Jij = J[i, j]
                    if Jij != 0.0:
                        if c < n:
                            acc += Jij * y[n + j * n + c]
                        else:
                            acc += Jij * y[n + n * n + j * p + (c - n)]
                if c < n:
                    out[n + i * n + c] = acc
                else:
                    out[n + n * n + i * p + (c - n)] = acc


@njit(**_INLINE)
def error_norm(err, y, ynew, rtol, atol, nerr):
    """RMS norm of err / (atol + rtol * max(|y|, |ynew|)) over the first `nerr` components."""
    acc = 0.0
    for q in range(nerr):
        sc = atol[q] + rtol[q] * max(abs(y[q]), abs(ynew[q]))
        e = err[q] / sc
        acc += e * e
    return math.sqrt(acc / max(nerr, 1))


@njit(**_INLINE)
def error_norm_dual(K, rk_b_error, s, s_step, h, y, ynew, rtol, atol, nerr):
    """Hairer's DOP853 error norm (dop853.f; SciPy's DOP853._estimate_error_norm): with sc = atol + rtol *
    max(|y|, |ynew|), e5 = sum_q (E5.K_q / sc_q)^2 and e3 = sum_q (E3.K_q / sc_q)^2 over the first `nerr`
    components, |h| e5 / sqrt(nerr (e5 + 0.01 e3)); E5 = rk_b_error[:s], E3 = rk_b_error[s:]."""
    e5 = 0.0
    e3 = 0.0
    for q in range(nerr):
        a5 = 0.0
        a3 = 0.0
        for j in range(s_step):
            kq = K[j, q]
            a5 += rk_b_error[j] * kq
            a3 += rk_b_error[s + j] * kq
        sc = atol[q] + rtol[q] * max(abs(y[q]), abs(ynew[q]))
        a5 /= sc
        a3 /= sc
        e5 += a5 * a5
        e3 += a3 * a3
    if e5 == 0.0 and e3 == 0.0:
        return 0.0
    return abs(h) * e5 / math.sqrt((e5 + 0.01 * e3) * max(nerr, 1))


@njit(**_INLINE)
def step_stages(rk_b, fsal):
    """Number of stages a step computes. With an FSAL method the FSAL stage follows the last stage of nonzero
    weight b (the tableau checks this: ``ButcherTableau.n_step_stages``); stages after it are dense-output
    stages. Without FSAL, all of them."""
    s = rk_b.size
    if not fsal:
        return s
    last = s - 1
    while last >= 0 and rk_b[last] == 0.0:
        last -= 1
    return min(last + 2, s)


@njit(**_INLINE)
def initial_step_first(y, f0, rtol, atol, nerr, span):
    """First half of the standard initial-step heuristic (Hairer, Norsett & Wanner, Sec. II.4; as SciPy's):
    the trial step h0 and the scaled norm d1 of f(t0, y0), over the first `nerr` components."""
    d0 = 0.0
    d1 = 0.0
    for q in range(nerr):
        sc = atol[q] + abs(y[q]) * rtol[q]
        d0 += (y[q] / sc) ** 2
        d1 += (f0[q] / sc) ** 2
    d0 = math.sqrt(d0 / nerr)
    d1 = math.sqrt(d1 / nerr)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    return min(h0, span), d1


@njit(**_INLINE)
def initial_step_second(y, f0, f1, rtol, atol, nerr, h0, d1, span, k_exp):
    """Second half: from f1 = f(t0 + h0, y0 + h0 f0), the initial step min(100 h0, h1, span)."""
    d2 = 0.0
    for q in range(nerr):
        sc = atol[q] + abs(y[q]) * rtol[q]
        d2 += ((f1[q] - f0[q]) / sc) ** 2
    d2 = math.sqrt(d2 / nerr) / h0
    if not math.isfinite(d2):
        h1 = h0 * 1e-3
    elif d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / k_exp)
    return min(100.0 * h0, h1, span)


@njit(**_INLINE)
def _all_finite(x):
    for v in x:
        if not math.isfinite(v):
            return False
    return True


REC_CAP0 = 256  # first capacity of the per-step records; a solve that needs more is redone with 8x (see below)
REC_GROW = 8
REC_MIN = 16   # smallest capacity a model's hint shrinks to (ODE._note_steps)


@njit(**_OPTS)
def integrate(mode, kern, n, p, theta, ts, y0,
              rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive,
              rtol, atol, nerr, h_init, h_max, dt_fixed, max_steps, ctrl,
              stop_at_ts, use_jumps, jump_add, jump_set, set_mask,
              seg_t, seg_h, seg_y, seg_k, record, out_y, stats, fstats, clock_addr=0, rec_cap=0):
    """Integrate; see ``integrate_nocheck`` and ``_integrate_core``. A call stopped by Ctrl-C (INTERRUPTED) runs
    Python's SIGINT handler before it returns and raises what it raises (``interrupt.raise_if_interrupted``):
    for calls made from Python or from a serial compiled call. Members of a ``prange`` use ``integrate_nocheck``."""
    res = integrate_nocheck(mode, kern, n, p, theta, ts, y0, rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal,
                            error_order, adaptive, rtol, atol, nerr, h_init, h_max, dt_fixed, max_steps, ctrl,
                            stop_at_ts, use_jumps, jump_add, jump_set, set_mask, seg_t, seg_h, seg_y, seg_k, record,
                            out_y, stats, fstats, clock_addr, rec_cap)
    raise_if_interrupted(res[0])
    return res


@njit(**_OPTS)
def integrate_nocheck(mode, kern, n, p, theta, ts, y0,
                      rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive,
                      rtol, atol, nerr, h_init, h_max, dt_fixed, max_steps, ctrl,
                      stop_at_ts, use_jumps, jump_add, jump_set, set_mask,
                      seg_t, seg_h, seg_y, seg_k, record, out_y, stats, fstats, clock_addr=0, rec_cap=0):
    """Integrate; see ``_integrate_core``. With ``record`` the per-step records live in arrays of a fixed
    capacity (``rec_cap``, default ``REC_CAP0``): the loop never reallocates them, since an array variable that
    changes inside the step loop costs every step (measured: +40 % on P1). A solve that fills them is redone
    from the start with ``REC_GROW`` times the capacity: the same arithmetic, so the same result. The wall-clock
    limit (``ctrl[4]``) bounds the whole call: a redo gets what is left of it."""
    cap = rec_cap if rec_cap > 0 else REC_CAP0
    limited = record > 0 and ctrl.size > 4 and ctrl[4] > 0.0 and clock_addr != 0
    t_call = monotonic(clock_addr) if limited else 0.0
    ctrl_run = ctrl
    while True:
        res = _integrate_core(mode, kern, n, p, theta, ts, y0, rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal,
                              error_order, adaptive, rtol, atol, nerr, h_init, h_max, dt_fixed, max_steps, ctrl_run,
                              stop_at_ts, use_jumps, jump_add, jump_set, set_mask, seg_t, seg_h, seg_y, seg_k,
                              record, cap, out_y, stats, fstats, clock_addr)
        if res[0] != st.CAPACITY or record == 0:
            return res
        cap *= REC_GROW
        stats[:] = 0
        fstats[:] = 0.0
        if limited:   # what is left (a tiny positive limit when none: the redo stops at its first check)
            ctrl_run = ctrl.copy()
            ctrl_run[4] = max(ctrl[4] - (monotonic(clock_addr) - t_call), 1e-300)


@njit(**_OPTS)
def _integrate_core(mode, kern, n, p, theta, ts, y0,
                    rk_a, rk_b, rk_b_error, rk_c, rk_dense, fsal, error_order, adaptive,
                    rtol, atol, nerr, h_init, h_max, dt_fixed, max_steps, ctrl,
                    stop_at_ts, use_jumps, jump_add, jump_set, set_mask,
                    seg_t, seg_h, seg_y, seg_k, record, rec_cap, out_y, stats, fstats, clock_addr):
    """Integrate the `mode` system from ts[0] through every ts[i] (strictly monotonic, either direction).

    Parameters
    ----------
    y0 : ndarray, shape (ny,)
    out_y : ndarray, shape (m, ny)
        Receives the solution at every ts[i] (row 0 = y0). With ``use_jumps`` the row holds the value
        arriving at ts[i], before ``jump_add[i]`` is added and the components with ``set_mask`` are set
        to ``jump_set[i]``.
    ctrl : ndarray (safety, fac_min, fac_max, beta, time_limit)
        PI controller: factor = safety * err**-(1/k - 0.75 beta) * err_prev**beta, k = error_order + 1;
        time_limit > 0: stop with TIME_LIMIT after that many seconds (checked every 64 steps through the
        clock at `clock_addr`). A SIGINT (Ctrl-C) received since the call began stops it with INTERRUPTED
        (checked at the same points; see ``interrupt``).
    record : int
        0: nothing; 1: record every accepted step (start time, signed step, start state); 2: also the
        stages (for dense output of the recorded solution: dense-output-only stages are computed at every
        step); 3: the stages as 2, but dense-output-only stages only where an output falls strictly inside
        the step, NaN elsewhere (what the discrete adjoint needs). With ctrl[5] = stride > 1 the start state
        is kept only every `stride` steps (checkpoints; rec_y row j is the state at step j * stride).
    rk_b_error : ndarray, shape (s,) or (2 s,)
        The error weights; with 2 s entries, two estimates combined by ``error_norm_dual`` (DOP853).
    stats : int64 array: [nfev, nsteps, naccepted, nrejected, ...]; fstats: float [t_reached, h_last].

    Returns
    -------
    (status, out_step, out_frac, rec_t, rec_h, rec_y, rec_k, n_rec, rec_w)
        rec_w (n_rec, s, W_REC): the stages' activations of a network model recorded with ``record=3`` (an
        empty array otherwise).
        out_step[i], out_frac[i]: recorded step index and fraction in [0, 1] where ts[i] was output.
    """
    ny = y0.size
    s = rk_b.size
    s_step = step_stages(rk_b, fsal)  # stages of a step; s_step..s-1 only serve the dense output
    has_extra = s_step < s
    dual = rk_b_error.size == 2 * s
    m = ts.size
    faddr = kern[K_F]
    # the small work vectors share one allocation (allocations are a measurable part of short solves)
    work = np.zeros((s + 5) * ny)
    K = work[:s * ny].reshape((s, ny))
    y = work[s * ny:(s + 1) * ny]
    ytmp = work[(s + 1) * ny:(s + 2) * ny]
    ynew = work[(s + 2) * ny:(s + 3) * ny]
    err = work[(s + 3) * ny:(s + 4) * ny]
    ystage = work[(s + 4) * ny:(s + 5) * ny]
    for q in range(ny):
        y[q] = y0[q]
    # work arrays of the augmented right-hand sides (eval_rhs); a plain solve needs none of them
    aug = mode != MODE_F
    wz = np.empty(n if aug else 1)
    wa = np.empty(n if aug else 1)
    wp = np.empty(max(p, 1) if aug else 1)
    J = np.zeros((n, n) if mode == MODE_SENS else (1, 1))
    Jp = np.zeros((n, max(p, 1)) if mode == MODE_SENS else (1, 1))
    safety, fac_min, fac_max, beta = ctrl[0], ctrl[1], ctrl[2], ctrl[3]
    time_limit = ctrl[4] if ctrl.size > 4 else 0.0
    t_start_clock = monotonic(clock_addr) if time_limit > 0.0 else 0.0
    sigint0 = sigint_count()
    # Hairer's stiffness test for FSAL methods whose last two stages sit at c = 1 (dopri5, tsit5, dop853):
    # h*|lambda| ~ h * ||K_s - K_{s-1}|| / ||Y_s - Y_{s-1}|| above 3.25 (6.1 for DOP853, recognised by its two
    # error estimates: dop853.f) on 15 accepted steps.
    stiff_test = fsal and s_step >= 3 and rk_c[s_step - 2] == 1.0 and mode == MODE_F
    stiff_lim = 6.1 if dual else 3.25
    n_stiff = 0
    n_nonstiff = 0
    store_k = record >= 2
    extra_all = has_extra and record == 2
    stride = int(ctrl[5]) if ctrl.size > 5 and ctrl[5] >= 1.0 else 1
    cap = rec_cap if record > 0 else 1
    rec_t = np.empty(cap)
    rec_h = np.empty(cap)
    rec_y = np.empty((cap // stride + 1, ny))
    n_ck = 0  # stored checkpoint states; the next one is due after ck_due more recorded steps
    ck_due = 0
    rec_k = np.empty((cap if store_k else 1, s, ny))
    # network models, discrete-adjoint recording: every stage's activations (one spare row: a step's stages are
    # written to row n_rec before the capacity check at its acceptance)
    wrec = record == 3 and stride == 1 and mode == MODE_F and kern.size > K_WREC and kern[K_WREC] > 0
    fwaddr = kern[K_FREC] if wrec else 0
    rec_w = np.empty((cap + 1 if wrec else 0, s if wrec else 0, kern[K_WREC] if wrec else 0))
    n_rec = 0
    out_step = np.full(m, -1, dtype=np.int64)
    out_frac = np.zeros(m)
    for q in range(ny):
        out_y[0, q] = y[q]
    t = ts[0]
    fstats[0] = t
    status = st.SUCCESS
    if m == 1:
        return status, out_step, out_frac, rec_t[:0], rec_h[:0], rec_y[:0], rec_k[:0], 0, rec_w[:0]
    if use_jumps:
        # no jump at ts[0]: the caller prepares y0
        pass
    d = 1.0 if ts[m - 1] > ts[0] else -1.0
    nfev = 0
    nsteps = 0
    nacc = 0
    nrej = 0
    if wrec:
        _kfw(fwaddr, t, y, theta, K[0], rec_w[0, 0])
    elif mode == MODE_F:
        _kf(faddr, t, y, theta, K[0])
    else:
        eval_rhs(mode, kern, n, p, t, y, theta, K[0], wz, wa, wp, J, Jp,
                 seg_t, seg_h, seg_y, seg_k, rk_dense)
    nfev += 1
    if not _all_finite(K[0]):
        status = st.NONFINITE
        stats[0] = nfev
        return status, out_step, out_frac, rec_t[:0], rec_h[:0], rec_y[:0], rec_k[:0], 0, rec_w[:0]
    i_next = 1
    t_end = ts[m - 1]
    if adaptive:
        k_exp = error_order + 1.0
        expo1 = 1.0 / k_exp - 0.75 * beta
        if h_init > 0.0:
            h_abs = h_init
        else:
            span = abs(t_end - t)
            h0, d1 = initial_step_first(y, K[0], rtol, atol, nerr, span)
            for q in range(ny):
                ytmp[q] = y[q] + h0 * d * K[0, q]
            if mode == MODE_F:
                _kf(faddr, t + h0 * d, ytmp, theta, K[1])
            else:
                eval_rhs(mode, kern, n, p, t + h0 * d, ytmp, theta, K[1], wz, wa, wp, J, Jp,
                         seg_t, seg_h, seg_y, seg_k, rk_dense)
            nfev += 1
            h_abs = initial_step_second(y, K[0], K[1], rtol, atol, nerr, h0, d1, span, k_exp)
        if h_max > 0.0 and h_abs > h_max:
            h_abs = h_max
        err_prev = 1e-4
        log_err_prev = math.log(err_prev)
        step_rejected = False
        last_nonfinite = False
        while i_next < m:
            if nsteps >= max_steps:
                status = st.MAX_STEPS
                break
            if (nsteps & 63) == 0:   # every 64 steps: Ctrl-C and the wall-clock limit
                stop = periodic_check(sigint0, time_limit, clock_addr, t_start_clock)
                if stop != st.SUCCESS:
                    status = stop
                    break
            min_step = 10.0 * abs(np.nextafter(t, d * np.inf) - t)
            if h_max > 0.0 and h_abs > h_max:
                h_abs = h_max
            if h_abs < min_step:
                status = st.NONFINITE if last_nonfinite else st.DT_MIN
                break
            t_stop = ts[i_next] if stop_at_ts else t_end
            h_prop = h_abs
            t_new = t + d * h_abs
            clipped = False
            if d * (t_new - t_stop) >= 0.0:
                t_new = t_stop
                clipped = True
            h = t_new - t
            h_used = abs(h)
            # The stage loops here are written out, not shared through an inlined helper: measured, a helper
            # (eval_stage, inline="always") made the plain solve called from Python 2.6x slower (P1: 42 -> 110 us).
            for i in range(1, s_step):
                for q in range(ny):
                    acc = 0.0
                    for j in range(i):
                        acc += rk_a[i, j] * K[j, q]
                    ytmp[q] = y[q] + h * acc
                if stiff_test and i == s_step - 2:
                    for q in range(ny):
                        ystage[q] = ytmp[q]
                if fsal and i == s_step - 1:
                    for q in range(ny):
                        ynew[q] = ytmp[q]
                    t_i = t_new
                else:
                    t_i = t + rk_c[i] * h
                if wrec:
                    _kfw(fwaddr, t_i, ytmp, theta, K[i], rec_w[n_rec, i])
                elif mode == MODE_F:
                    _kf(faddr, t_i, ytmp, theta, K[i])
                else:
                    eval_rhs(mode, kern, n, p, t_i, ytmp, theta, K[i], wz, wa, wp, J, Jp,
                             seg_t, seg_h, seg_y, seg_k, rk_dense)
            nfev += s_step - 1
            if not fsal:
                for q in range(ny):
                    acc = 0.0
                    for j in range(s_step):
                        acc += rk_b[j] * K[j, q]
                    ynew[q] = y[q] + h * acc
            nsteps += 1
            if dual:
                errn = error_norm_dual(K, rk_b_error, s, s_step, h, y, ynew, rtol, atol, nerr)
            else:
                for q in range(ny):
                    acc = 0.0
                    for j in range(s_step):
                        acc += rk_b_error[j] * K[j, q]
                    err[q] = h * acc
                errn = error_norm(err, y, ynew, rtol, atol, nerr)
            finite = math.isfinite(errn) and _all_finite(ynew)
            if fsal and finite:
                finite = _all_finite(K[s_step - 1])
            if not finite:
                nrej += 1
                last_nonfinite = True
                step_rejected = True
                h_abs = h_used * fac_min
                continue
            if errn >= 1.0:
                nrej += 1
                last_nonfinite = False
                step_rejected = True
                h_abs = h_used * max(fac_min, safety * errn ** (-1.0 / k_exp))
                continue
            # accepted
            last_nonfinite = False
            if errn == 0.0:
                factor = fac_max
            elif beta == 0.0:
                factor = min(fac_max, safety * errn ** (-expo1))
            else:
                factor = min(fac_max, safety * math.exp(beta * log_err_prev - expo1 * math.log(errn)))
            if step_rejected:
                factor = min(1.0, factor)
            step_rejected = False
            err_prev = max(errn, 1e-4)
            log_err_prev = math.log(err_prev)
            if stiff_test and stats[6] == 0:
                num = 0.0
                den = 0.0
                for q in range(ny):
                    num += (K[s_step - 1, q] - K[s_step - 2, q]) ** 2
                    den += (ynew[q] - ystage[q]) ** 2
                if den > 0.0 and h_used * math.sqrt(num / den) > stiff_lim:
                    n_nonstiff = 0
                    n_stiff += 1
                    if n_stiff == 15:
                        stats[6] = 1
                        fstats[1] = t
                else:
                    n_nonstiff += 1
                    if n_nonstiff == 6:
                        n_stiff = 0
            # dense-output-only stages, from the step's start y and its stages (K[0] is still this step's)
            extra_now = False
            if has_extra and (extra_all or (i_next < m and d * (ts[i_next] - t_new) < 0.0)):
                for i in range(s_step, s):
                    for q in range(ny):
                        acc = 0.0
                        for j in range(i):
                            acc += rk_a[i, j] * K[j, q]
                        ytmp[q] = y[q] + h * acc
                    if wrec:
                        _kfw(fwaddr, t + rk_c[i] * h, ytmp, theta, K[i], rec_w[n_rec, i])
                    elif mode == MODE_F:
                        _kf(faddr, t + rk_c[i] * h, ytmp, theta, K[i])
                    else:
                        eval_rhs(mode, kern, n, p, t + rk_c[i] * h, ytmp, theta, K[i], wz, wa, wp, J, Jp,
                                 seg_t, seg_h, seg_y, seg_k, rk_dense)
                    if not _all_finite(K[i]):
                        status = st.NONFINITE
                nfev += s - s_step
                extra_now = True
                if status != st.SUCCESS:
                    break
            if record > 0:
                if n_rec == cap:
                    status = st.CAPACITY
                    break
                rec_t[n_rec] = t
                rec_h[n_rec] = h
                if store_k:
                    for i in range(s):
                        if i < s_step or extra_now:
                            for q in range(ny):
                                rec_k[n_rec, i, q] = K[i, q]
                        else:
                            for q in range(ny):
                                rec_k[n_rec, i, q] = np.nan
                if ck_due == 0:   # every stride-th step (a counter: no integer division per step)
                    for q in range(ny):
                        rec_y[n_ck, q] = y[q]
                    n_ck += 1
                    ck_due = stride
                ck_due -= 1
            # outputs inside (t, t_new]
            while i_next < m and d * (ts[i_next] - t_new) <= 0.0:
                if ts[i_next] == t_new:
                    for q in range(ny):
                        out_y[i_next, q] = ynew[q]
                    out_frac[i_next] = 1.0
                else:
                    frac = (ts[i_next] - t) / h
                    dense_eval(y, h, K, rk_dense, frac, ytmp)
                    for q in range(ny):
                        out_y[i_next, q] = ytmp[q]
                    out_frac[i_next] = frac
                out_step[i_next] = n_rec
                i_next += 1
            n_rec += 1
            nacc += 1
            t = t_new
            jumped = False
            if use_jumps and clipped and stop_at_ts and out_step[i_next - 1] == n_rec - 1 and ts[i_next - 1] == t:
                ij = i_next - 1
                for q in range(ny):
                    if set_mask[q]:
                        ynew[q] = jump_set[ij, q]
                    else:
                        ynew[q] += jump_add[ij, q]
                jumped = True
            for q in range(ny):
                y[q] = ynew[q]
            if fsal and not jumped:
                for q in range(ny):
                    K[0, q] = K[s_step - 1, q]
                if wrec:
                    rec_w[n_rec, 0, :] = rec_w[n_rec - 1, s_step - 1, :]
            elif i_next < m:
                if wrec:
                    _kfw(fwaddr, t, y, theta, K[0], rec_w[n_rec, 0])
                elif mode == MODE_F:
                    _kf(faddr, t, y, theta, K[0])
                else:
                    eval_rhs(mode, kern, n, p, t, y, theta, K[0], wz, wa, wp, J, Jp,
                             seg_t, seg_h, seg_y, seg_k, rk_dense)
                nfev += 1
                if not _all_finite(K[0]):
                    status = st.NONFINITE
                    break
            h_abs = h_used * factor
            if clipped and h_abs < h_prop:
                h_abs = h_prop
    else:
        # fixed steps: each interval split into equal steps no longer than dt_fixed
        while i_next < m:
            t0 = t
            t1 = ts[i_next]
            # the number of steps, in floating point first: with a tiny dt (1e-20 .. 5e-324) it exceeds every
            # int64 and its conversion overflowed to a negative number (one step per interval, "success"). A count
            # beyond int64 is MAX_STEPS at once; a representable one runs until max_steps as before.
            nsub_f = np.ceil(abs(t1 - t0) / dt_fixed * (1.0 - 1e-12))
            if not (nsub_f < 4.0e18):
                status = st.MAX_STEPS
                break
            nsub = int(nsub_f)
            if nsub < 1:
                nsub = 1
            h = (t1 - t0) / nsub
            for k in range(nsub):
                if nsteps >= max_steps:
                    status = st.MAX_STEPS
                    break
                if (nsteps & 63) == 0:   # every 64 steps: Ctrl-C and the wall-clock limit
                    stop = periodic_check(sigint0, time_limit, clock_addr, t_start_clock)
                    if stop != st.SUCCESS:
                        status = stop
                        break
                t_new = t1 if k == nsub - 1 else t0 + (k + 1) * h
                for i in range(1, s):
                    for q in range(ny):
                        acc = 0.0
                        for j in range(i):
                            acc += rk_a[i, j] * K[j, q]
                        ytmp[q] = y[q] + h * acc
                    if wrec:
                        _kfw(fwaddr, t + rk_c[i] * h, ytmp, theta, K[i], rec_w[n_rec, i])
                    elif mode == MODE_F:
                        _kf(faddr, t + rk_c[i] * h, ytmp, theta, K[i])
                    else:
                        eval_rhs(mode, kern, n, p, t + rk_c[i] * h, ytmp, theta, K[i], wz, wa, wp, J, Jp,
                                 seg_t, seg_h, seg_y, seg_k, rk_dense)
                nfev += s - 1
                for q in range(ny):
                    acc = 0.0
                    for j in range(s):
                        acc += rk_b[j] * K[j, q]
                    ynew[q] = y[q] + h * acc
                nsteps += 1
                if not _all_finite(ynew):
                    status = st.NONFINITE
                    break
                if record > 0:
                    if n_rec == cap:
                        status = st.CAPACITY
                        break
                    rec_t[n_rec] = t
                    rec_h[n_rec] = h
                    if store_k:
                        for i in range(s):
                            for q in range(ny):
                                rec_k[n_rec, i, q] = K[i, q]
                    if ck_due == 0:
                        for q in range(ny):
                            rec_y[n_ck, q] = y[q]
                        n_ck += 1
                        ck_due = stride
                    ck_due -= 1
                n_rec += 1
                nacc += 1
                t = t_new
                for q in range(ny):
                    y[q] = ynew[q]
                if k == nsub - 1:
                    for q in range(ny):
                        out_y[i_next, q] = y[q]
                    out_step[i_next] = n_rec - 1
                    out_frac[i_next] = 1.0
                    if use_jumps:
                        for q in range(ny):
                            if set_mask[q]:
                                y[q] = jump_set[i_next, q]
                            else:
                                y[q] += jump_add[i_next, q]
                if wrec:
                    _kfw(fwaddr, t, y, theta, K[0], rec_w[n_rec, 0])
                elif mode == MODE_F:
                    _kf(faddr, t, y, theta, K[0])
                else:
                    eval_rhs(mode, kern, n, p, t, y, theta, K[0], wz, wa, wp, J, Jp,
                             seg_t, seg_h, seg_y, seg_k, rk_dense)
                nfev += 1
                if not _all_finite(K[0]):
                    status = st.NONFINITE
                    break
            if status != st.SUCCESS:
                break
            i_next += 1
    stats[0] = nfev
    stats[1] = nsteps
    stats[2] = nacc
    stats[3] = nrej
    fstats[0] = t
    return (status, out_step, out_frac, rec_t[:n_rec], rec_h[:n_rec], rec_y[:n_ck], rec_k[:n_rec], n_rec,
            rec_w[:n_rec])


@njit(**_OPTS)
def call_f(addr, t, z, theta, out):
    _kf(addr, t, z, theta, out)


@njit(**_OPTS)
def call_j(addr, t, z, theta, out):
    _kj(addr, t, z, theta, out)


@njit(**_OPTS)
def call_vjp(addr, t, z, theta, a, out_z, out_theta):
    _kv(addr, t, z, theta, a, out_z, out_theta)


@njit(**_OPTS)
def time_grad(addr, ts, zs, theta, cotangent, a0plus, out):
    """dL/dts[i] = cotangent[i] . f(z(ts[i])) for i > 0 and dL/dts[0] = -a(ts[0]+) . f(z0)."""
    fa = addr
    m = ts.size
    n = zs.shape[1]
    fz = np.empty(n)
    for i in range(1, m):
        nz = False
        for q in range(n):
            if cotangent[i, q] != 0.0:
                nz = True
        out[i] = 0.0
        if nz:
            _kf(fa, ts[i], zs[i], theta, fz)
            acc = 0.0
            for q in range(n):
                acc += cotangent[i, q] * fz[q]
            out[i] = acc
    _kf(fa, ts[0], zs[0], theta, fz)
    acc = 0.0
    for q in range(n):
        acc += a0plus[q] * fz[q]
    out[0] = -acc


@njit(**_OPTS)
def replay(kern, theta, rec_t, rec_h, y0, rk_a, rk_b, rk_c, fsal, out_y, out_k):
    """Recompute steps i = 0..len(rec_h)-1 (start times rec_t[i], steps rec_h[i]; rec_t[-1] is the end time of
    the last one) from the checkpoint y0 exactly as the forward loop took them: out_y[i] = start state of
    step i, out_k[i] = its stages, dense-output-only ones included (bitwise identical arithmetic to a forward
    solve with ``record=2``)."""
    fa = kern[K_F]
    nst = rec_h.size
    s = rk_b.size
    s_step = step_stages(rk_b, fsal)
    ny = y0.size
    y = y0.copy()
    ytmp = np.empty(ny)
    ynew = np.empty(ny)
    K = np.zeros((s, ny))
    _kf(fa, rec_t[0], y, theta, K[0])
    for i in range(nst):
        t = rec_t[i]
        h = rec_h[i]
        t_new = rec_t[i + 1]
        for q in range(ny):
            out_y[i, q] = y[q]
        for j in range(1, s):
            for q in range(ny):
                acc = 0.0
                for l in range(j):
                    acc += rk_a[j, l] * K[l, q]
                ytmp[q] = y[q] + h * acc
            if fsal and j == s_step - 1:
                for q in range(ny):
                    ynew[q] = ytmp[q]
                _kf(fa, t_new, ytmp, theta, K[j])
            else:
                _kf(fa, t + rk_c[j] * h, ytmp, theta, K[j])
        if not fsal:
            for q in range(ny):
                acc = 0.0
                for j in range(s):
                    acc += rk_b[j] * K[j, q]
                ynew[q] = y[q] + h * acc
        out_k[i] = K
        for q in range(ny):
            y[q] = ynew[q]
        if fsal:
            for q in range(ny):
                K[0, q] = K[s_step - 1, q]
        else:
            _kf(fa, t_new, y, theta, K[0])
