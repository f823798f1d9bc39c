"""``adjoint="checkpoint"``: the continuous adjoint a' = -a^T df/dz, g' = -a^T df/dtheta integrated backward with
its own error control, with z(t) from the forward pass's recorded steps and dense output (not re-integrated), so
it stays accurate on stiff, chaotic and dissipative problems. With ``checkpoints=k`` at most k states are stored
and each segment's steps are replayed bitwise from its checkpoint. Rosenbrock methods integrate the adjoint
backward with the same Rosenbrock method on its exact Jacobian."""
from __future__ import annotations

import numpy as np

from ..._numeric import methods as M
from ..._numeric import rk
from ..._numeric import rosenbrock as ros
from ..._numeric import stiff_adjoint as sa
from ..._solution import step_stats
from .. import explicit as ex
from .. import stiff as st
from ..config import rk_arrays
from .common import AdjointRequest, augmented_tolerances, backward_failed, failed, finish, forward


def explicit(req: AdjointRequest):
    if req.checkpoints is not None:
        return _checkpointed(req)
    rt, theta, ts, cfg = req.rt, req.theta, req.ts, req.cfg
    n, p, m = req.sizes
    fwd, sol, cot = forward(req, record=2)
    if cot is None:
        return failed(req, sol)
    cot_b = cot[::-1]
    ny = n + p
    y0 = np.zeros(ny)
    y0[:n] = cot_b[0]
    jadd = np.zeros((m, ny))
    jadd[:, :n] = cot_b
    jset = np.zeros((1, 1))
    mask = np.zeros(ny, dtype=np.int64)
    rt_, at_ = augmented_tolerances(req)
    seg = (fwd.rec_t, fwd.rec_h, fwd.rec_y, fwd.rec_k)
    if seg[0].size == 0:
        seg = (np.zeros(1), np.ones(1), req.z0.reshape(1, n).copy(), np.zeros((1, cfg.method.tableau.n_stages, n)))
    bwd = ex.integrate(rt, rk.MODE_ADJ, y0, theta, np.ascontiguousarray(ts[::-1]), cfg,
                       nerr=n if req.seminorm else ny, stop_at_ts=True, jumps=(jadd, jset, mask), seg=seg,
                       rtol=rt_, atol=at_)
    bad = backward_failed(req, sol, bwd.status, bwd.t_reached)
    if bad is not None:
        return bad
    last = bwd.out_y[-1]
    stats = dict(forward=sol.stats, backward=step_stats(bwd.stats))
    return finish(req, sol, cot, last[:n].copy(), last[n:].copy(), stats)


def _checkpointed(req: AdjointRequest):
    """Checkpoint adjoint with bounded memory: at most ``req.checkpoints`` stored states (plus 2 floats per step);
    each segment's steps are replayed bitwise from its checkpoint, then the adjoint runs backward over it."""
    rt, theta, ts, cfg = req.rt, req.theta, req.ts, req.cfg
    n, p, m = req.sizes
    count, sol, cot = forward(req, stacklevel=7)
    if cot is None:
        return failed(req, sol)
    N = int(count.stats[2])
    stride = max(1, -(-N // req.checkpoints))
    fwd = ex.integrate(rt, rk.MODE_F, req.z0, theta, ts, cfg.with_stride(stride), record=1,
                       rec_cap=N + 1)   # N steps, known
    rec_t, rec_h, rec_y = fwd.rec_t, fwd.rec_h, fwd.rec_y
    tab = cfg.rk
    s_ = tab.b.size
    ny = n + p
    state = np.zeros(ny)
    state[:n] = cot[-1]
    seg_of = fwd.out_step // stride
    rt_, at_ = augmented_tolerances(req)
    mask = np.zeros(ny, dtype=np.int64)
    jset = np.zeros((1, 1))
    bstats = np.zeros(4, dtype=np.int64)
    n_seg = -(-N // stride)
    seg_y = np.empty((stride, n))
    seg_k = np.empty((stride, s_, n))
    for j in range(n_seg - 1, -1, -1):
        i0, i1 = j * stride, min(N, (j + 1) * stride)
        t_end = rec_t[i1] if i1 < N else ts[-1]
        t_steps = np.concatenate([rec_t[i0:i1], [t_end]])
        L = i1 - i0
        rk.replay(rt.kern, theta, t_steps, np.ascontiguousarray(rec_h[i0:i1]), rec_y[j].copy(), tab.a, tab.b,
                  tab.c, tab.fsal, seg_y, seg_k)
        outs = [i for i in range(1, m) if seg_of[i] == j and ts[i] != t_end]
        outs.sort(key=lambda i: -ts[i] if ts[-1] > ts[0] else ts[i])
        stops = [t_end] + [ts[i] for i in outs] + [rec_t[i0]]
        jadd = np.zeros((len(stops), ny))
        for r, i in enumerate(outs, start=1):
            jadd[r, :n] = cot[i]
        seg = (np.ascontiguousarray(t_steps[:-1]), np.ascontiguousarray(rec_h[i0:i1]), seg_y[:L], seg_k[:L])
        bwd = ex.integrate(rt, rk.MODE_ADJ, state, theta, np.array(stops), cfg, nerr=n if req.seminorm else ny,
                           stop_at_ts=True, jumps=(jadd, jset, mask), seg=seg, rtol=rt_, atol=at_)
        bad = backward_failed(req, sol, bwd.status, bwd.t_reached)
        if bad is not None:
            return bad
        bstats += bwd.stats[:4]
        state = bwd.out_y[-1].copy()
        # outputs exactly at this segment's start belong to the previous segment (its end): added there
        for i in range(1, m):
            if seg_of[i] == j - 1 and ts[i] == rec_t[i0]:
                state[:n] += cot[i]
    stats = dict(forward=sol.stats, backward=step_stats(bstats), checkpoints=int(rec_y.shape[0]), stride=stride,
                 memory_floats=int(rec_y.size + rec_t.size + rec_h.size + seg_y.size + seg_k.size))
    return finish(req, sol, cot, state[:n].copy(), state[n:].copy(), stats)


_DOPRI5 = rk_arrays(M.METHODS["dopri5"])


def stiff(req: AdjointRequest):
    """Continuous adjoint for stiff problems: the forward Rosenbrock pass records its steps (dense output), then
    a' = -J^T a, g' = -Jp^T a is integrated backward between output times with the same Rosenbrock method on
    its exact Jacobian (library kernels in symode._numeric.stiff_adjoint), adding cotangent[i] at each ts[i].
    The parameter quadrature g is left out of the error norm (seminorm)."""
    rt, theta, ts, cfg = req.rt, req.theta, req.ts, req.cfg
    st.refuse_auto(cfg, "checkpoint")
    n, p, m = req.sizes
    fwd, sol, cot = st.recorded_forward(rt, req.z0, theta, ts, cfg, req.throw, req.get_cot)
    if cot is None:
        return failed(req, sol)
    tab = cfg.method.tableau
    a_, C, c, d, mw, me, dense, gamma = tab.packed()
    if fwd.rec_t.size == 0:
        return finish(req, sol, cot, np.zeros(n), np.zeros(p), dict(forward=sol.stats))
    ctx = sa.pack(theta, rt.kern, fwd.rec_t, fwd.rec_h, fwd.rec_y, fwd.rec_k, np.ascontiguousarray(dense))
    kern = np.array([sa.adjoint_rhs.address, sa.adjoint_jac.address, 0, sa.adjoint_rhs_t.address, 0],
                    dtype=np.int64)
    ny = n + p
    e = _DOPRI5
    pat = np.array([(i, j) for i in range(ny) for j in range(ny)], dtype=np.int64).reshape(-1, 2)
    rt_ = np.concatenate([cfg.rtol, np.full(p, 1.0)])
    at_ = np.concatenate([cfg.atol, np.full(p, 1e300)])  # seminorm: g out of the error norm
    y = np.zeros(ny)
    y[:n] = cot[-1]
    bst = np.zeros(6, dtype=np.int64)
    for i in range(m - 1, 0, -1):
        seg_ts = np.array([ts[i], ts[i - 1]])
        out_y = np.empty((2, ny))
        stats = np.zeros(10, dtype=np.int64)
        fstats = np.zeros(4)
        res = ros.integrate(kern, ny, ctx, seg_ts, y, a_, C, c, d, mw, me, dense, gamma, tab.error_order, e.a,
                            e.b_error, e.c, e.dense, False, True, ny, ny, False, pat[:, 0].copy(), pat[:, 1].copy(),
                            rt_, at_, 0.0, 0.0 if cfg.dt_max is None else cfg.dt_max, cfg.max_steps, cfg.ctrl, 0,
                            out_y, stats, fstats, 0)
        bst += stats[:6]
        bad = backward_failed(req, sol, int(res[0]), float(fstats[0]))
        if bad is not None:
            return bad
        y = out_y[-1].copy()
        if i - 1 > 0:
            y[:n] += cot[i - 1]
    stats = dict(forward=sol.stats, backward=dict(nfev=int(bst[0]), nsteps=int(bst[1]), njev=int(bst[4]),
                                                  nlu=int(bst[5])))
    return finish(req, sol, cot, y[:n].copy(), y[n:].copy(), stats)
