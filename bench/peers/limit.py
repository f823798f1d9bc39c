"""The "limit" reference: hand-written Numba code, i.e. what a perfect code generator could reach.

* Dormand-Prince 5(4) with the step-size control, initial-step heuristic and quartic dense output of SciPy's
  RK45 (so the accepted steps are the same as solve_ivp(method="RK45") up to round-off), written once in Numba
  and specialised per right-hand side (functions passed as arguments are compiled per function).
* Hand-coded right-hand sides and hand-coded vector-Jacobian products for Lotka-Volterra (P1, P6), the Neural
  ODE spiral model (P2), Lorenz (P4) and tanh(Wz) - z/2 (P5).
* Gradient: hand-written discrete adjoint of the accepted steps (all steps and stages stored, no
  recomputation), dense-output interpolation included: the exact gradient of the computed loss (step sizes held
  fixed, as every discrete adjoint does).
* P6: the same integrator per trajectory (own step-size control each), prange over the 10,000 trajectories.
* No stiff solver: P3 is not covered.

Before timing, each problem is checked against SciPy: the loss against solve_ivp(RK45) at the same tolerances
(same algorithm: agreement ~1e-12 expected) and against solve_ivp(DOP853, rtol=atol=1e-10); the gradient against
this code's own gradient at rtol=atol=1e-12 and (P1, P4) against central differences of DOP853 rtol=1e-12 solves.
The checks go into each row under "checks"; a failed check sets "check_failed" (run.py shows it).

    python bench/peers/limit.py --problems P1,P6          # JSON lines on stdout (see bench_common.py)
"""
import time

T_START = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import numba as nb  # noqa: E402
from numba import njit, prange  # noqa: E402

import bench_common as C  # noqa: E402

T_IMPORTED = time.perf_counter()

# ---------------------------------------------------------------- Dormand-Prince 5(4) tableau (SciPy's RK45)

DP_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0])
DP_A = np.array([
    [0, 0, 0, 0, 0],
    [1 / 5, 0, 0, 0, 0],
    [3 / 40, 9 / 40, 0, 0, 0],
    [44 / 45, -56 / 15, 32 / 9, 0, 0],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]])
DP_B = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84])
DP_E = np.array([-71 / 57600, 0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])
DP_P = np.array([
    [1, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
    [0, 0, 0, 0],
    [0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
    [0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
    [0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632],
    [0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
    [0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423]])

SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0


@njit(cache=False)
def _rms_scaled(v, y, rtol, atol):
    s = 0.0
    for i in range(v.size):
        sc = atol + abs(y[i]) * rtol
        s += (v[i] / sc) ** 2
    return np.sqrt(s / v.size)


@njit(cache=False)
def integrate(f, z0, th, ts, rtol, atol, store):
    """Integrate dz/dt = f(z, th) from ts[0] to ts[-1]; outputs at ts by dense output.  Returns
    (zs (m, n), ys (N+1, n), ks (N, 7, n), hs (N,), out_step (m,), out_x (m,), nsteps, nfev); the step
    arrays are empty unless store."""
    n = z0.size
    m = ts.size
    t0 = ts[0]
    t_end = ts[m - 1]
    zs = np.empty((m, n))
    out_step = np.full(m, -1, np.int64)
    out_x = np.zeros(m)
    cap = 256 if store else 1
    ys = np.empty((cap + 1, n))
    ks = np.empty((cap, 7, n))
    hs = np.empty(cap)
    y = z0.copy()
    K = np.empty((7, n))
    f(y, th, K[0])
    nfev = 1
    oi = 0
    while oi < m and ts[oi] <= t0:
        zs[oi] = z0
        oi += 1
    # initial step (SciPy select_initial_step, error estimator order 4)
    span = t_end - t0
    d0 = _rms_scaled(y, y, rtol, atol)
    d1 = _rms_scaled(K[0], y, rtol, atol)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    h0 = min(h0, span)
    y1 = y + h0 * K[0]
    f1 = np.empty(n)
    f(y1, th, f1)
    nfev += 1
    d2 = 0.0
    for i in range(n):
        sc = atol + abs(y[i]) * rtol
        d2 += ((f1[i] - K[0, i]) / sc) ** 2
    d2 = np.sqrt(d2 / n) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** 0.2
    h_abs = min(100 * h0, h1, span)
    t = t0
    nsteps = 0
    ystage = np.empty(n)
    y_new = np.empty(n)
    err = np.empty(n)
    if store:
        ys[0] = y
    while t < t_end:
        min_step = 10 * abs(np.nextafter(t, np.inf) - t)
        if h_abs < min_step:
            h_abs = min_step
        rejected = False
        while True:
            if h_abs < min_step:
                raise RuntimeError("step size too small")
            t_new = t + h_abs
            if t_new > t_end:
                t_new = t_end
            h = t_new - t
            h_abs = abs(h)
            for s in range(1, 6):
                for i in range(n):
                    acc = 0.0
                    for j in range(s):
                        acc += DP_A[s, j] * K[j, i]
                    ystage[i] = y[i] + h * acc
                f(ystage, th, K[s])
            for i in range(n):
                acc = 0.0
                for j in range(6):
                    acc += DP_B[j] * K[j, i]
                y_new[i] = y[i] + h * acc
            f(y_new, th, K[6])
            nfev += 6
            s2 = 0.0
            for i in range(n):
                e = 0.0
                for j in range(7):
                    e += DP_E[j] * K[j, i]
                e *= h
                sc = atol + max(abs(y[i]), abs(y_new[i])) * rtol
                s2 += (e / sc) ** 2
            error_norm = np.sqrt(s2 / n)
            if error_norm < 1.0:
                if error_norm == 0.0:
                    factor = MAX_FACTOR
                else:
                    factor = min(MAX_FACTOR, SAFETY * error_norm ** -0.2)
                if rejected:
                    factor = min(1.0, factor)
                h_abs *= factor
                break
            h_abs *= max(MIN_FACTOR, SAFETY * error_norm ** -0.2)
            rejected = True
        # accepted step t -> t_new: dense outputs in (t, t_new]
        while oi < m and ts[oi] <= t_new:
            x = (ts[oi] - t) / h
            for i in range(n):
                acc = 0.0
                for j in range(7):
                    q = x * (DP_P[j, 0] + x * (DP_P[j, 1] + x * (DP_P[j, 2] + x * DP_P[j, 3])))
                    acc += K[j, i] * q
                zs[oi, i] = y[i] + h * acc
            out_step[oi] = nsteps
            out_x[oi] = x
            oi += 1
        if store:
            if nsteps + 1 >= cap:
                ncap = 2 * cap
                ys2 = np.empty((ncap + 1, n))
                ys2[:nsteps + 1] = ys[:nsteps + 1]
                ks2 = np.empty((ncap, 7, n))
                ks2[:nsteps] = ks[:nsteps]
                hs2 = np.empty(ncap)
                hs2[:nsteps] = hs[:nsteps]
                ys, ks, hs, cap = ys2, ks2, hs2, ncap
            ks[nsteps] = K
            hs[nsteps] = h
            ys[nsteps + 1] = y_new
        nsteps += 1
        t = t_new
        y[:] = y_new
        K[0] = K[6]          # FSAL
    return zs, ys, ks, hs, out_step, out_x, nsteps, nfev


@njit(cache=False)
def adjoint(vjp, th, cot, ys, ks, hs, out_step, out_x, nsteps):
    """Discrete adjoint of `integrate` (store=True): cot (m, n) = dL/dz(ts_i); returns (dL/dz0, dL/dth).
    vjp(z, th, lam, zbar, thbar) must ADD (df/dz)^T lam to zbar and (df/dth)^T lam to thbar."""
    m, n = cot.shape
    p = th.size
    gth = np.zeros(p)
    ybar = np.zeros(n)
    ynb = np.zeros(n)
    kbar = np.zeros((7, n))
    tmp = np.zeros(n)
    Y = np.empty(n)
    oi = m - 1
    for s in range(nsteps - 1, -1, -1):
        h = hs[s]
        kbar[:, :] = 0.0
        for i in range(n):
            ynb[i] = 0.0
        while oi >= 0 and out_step[oi] == s:
            x = out_x[oi]
            for j in range(7):
                q = x * (DP_P[j, 0] + x * (DP_P[j, 1] + x * (DP_P[j, 2] + x * DP_P[j, 3])))
                for i in range(n):
                    kbar[j, i] += h * q * cot[oi, i]
            for i in range(n):
                ynb[i] += cot[oi, i]
            oi -= 1
        # K7 = f(y_{s+1}): its adjoint joins ybar (= adjoint of y_{s+1})
        vjp(ys[s + 1], th, kbar[6], ybar, gth)
        # y_{s+1} = y_s + h sum_j B_j K_j
        for i in range(n):
            ynb[i] += ybar[i]
        for j in range(6):
            for i in range(n):
                kbar[j, i] += h * DP_B[j] * ybar[i]
        for st in range(5, 0, -1):
            for i in range(n):
                acc = 0.0
                for j in range(st):
                    acc += DP_A[st, j] * ks[s, j, i]
                Y[i] = ys[s, i] + h * acc
                tmp[i] = 0.0
            vjp(Y, th, kbar[st], tmp, gth)
            for i in range(n):
                ynb[i] += tmp[i]
            for j in range(st):
                for i in range(n):
                    kbar[j, i] += h * DP_A[st, j] * tmp[i]
        vjp(ys[s], th, kbar[0], ynb, gth)
        for i in range(n):
            ybar[i] = ynb[i]
    while oi >= 0:                        # outputs at ts[0] = t0: z(t0) = z0
        for i in range(n):
            ybar[i] += cot[oi, i]
        oi -= 1
    return ybar, gth


# ---------------------------------------------------------------- hand-coded right-hand sides and VJPs


@njit(cache=False)
def lv_f(z, th, out):
    x = z[0]
    y = z[1]
    out[0] = th[0] * x - th[1] * x * y
    out[1] = th[3] * x * y - th[2] * y


@njit(cache=False)
def lv_vjp(z, th, lam, zbar, thbar):
    x = z[0]
    y = z[1]
    l0 = lam[0]
    l1 = lam[1]
    zbar[0] += (th[0] - th[1] * y) * l0 + th[3] * y * l1
    zbar[1] += -th[1] * x * l0 + (th[3] * x - th[2]) * l1
    thbar[0] += x * l0
    thbar[1] -= x * y * l0
    thbar[2] -= y * l1
    thbar[3] += x * y * l1


@njit(cache=False)
def lorenz_f(z, th, out):
    out[0] = th[0] * (z[1] - z[0])
    out[1] = z[0] * (th[1] - z[2]) - z[1]
    out[2] = z[0] * z[1] - th[2] * z[2]


@njit(cache=False)
def lorenz_vjp(z, th, lam, zbar, thbar):
    x, y, w = z[0], z[1], z[2]
    l0, l1, l2 = lam[0], lam[1], lam[2]
    zbar[0] += -th[0] * l0 + (th[1] - w) * l1 + y * l2
    zbar[1] += th[0] * l0 - l1 + x * l2
    zbar[2] += -x * l1 - th[2] * l2
    thbar[0] += (y - x) * l0
    thbar[1] += x * l1
    thbar[2] -= w * l2


@njit(cache=False)
def tanhnet_f(z, th, out):                 # th = W row-major
    n = z.size
    for i in range(n):
        s = 0.0
        for j in range(n):
            s += th[i * n + j] * z[j]
        out[i] = np.tanh(s) - 0.5 * z[i]


@njit(cache=False)
def tanhnet_vjp(z, th, lam, zbar, thbar):
    n = z.size
    for i in range(n):
        s = 0.0
        for j in range(n):
            s += th[i * n + j] * z[j]
        tt = np.tanh(s)
        g = (1.0 - tt * tt) * lam[i]
        for j in range(n):
            zbar[j] += th[i * n + j] * g
            thbar[i * n + j] += g * z[j]
        zbar[i] -= 0.5 * lam[i]


@njit(cache=False)
def spiral_true_f(z, th, out):             # (y**3) @ A, A = [[-0.1, 2], [-2, -0.1]]
    a = z[0] ** 3
    b = z[1] ** 3
    out[0] = -0.1 * a - 2.0 * b
    out[1] = 2.0 * a - 0.1 * b


H = C.P2_HIDDEN


@njit(cache=False)
def mlp_f(z, th, out):                     # th = [W1 (50x2) row-major, b1, W2 (2x50) row-major, b2]
    u0 = z[0] ** 3
    u1 = z[1] ** 3
    o0 = th[250]
    o1 = th[251]
    for k in range(H):
        a = np.tanh(th[2 * k] * u0 + th[2 * k + 1] * u1 + th[100 + k])
        o0 += th[150 + k] * a
        o1 += th[200 + k] * a
    out[0] = o0
    out[1] = o1


@njit(cache=False)
def mlp_vjp(z, th, lam, zbar, thbar):
    u0 = z[0] ** 3
    u1 = z[1] ** 3
    l0 = lam[0]
    l1 = lam[1]
    ub0 = 0.0
    ub1 = 0.0
    for k in range(H):
        a = np.tanh(th[2 * k] * u0 + th[2 * k + 1] * u1 + th[100 + k])
        thbar[150 + k] += l0 * a
        thbar[200 + k] += l1 * a
        hb = (th[150 + k] * l0 + th[200 + k] * l1) * (1.0 - a * a)
        thbar[2 * k] += hb * u0
        thbar[2 * k + 1] += hb * u1
        thbar[100 + k] += hb
        ub0 += th[2 * k] * hb
        ub1 += th[2 * k + 1] * hb
    thbar[250] += l0
    thbar[251] += l1
    zbar[0] += ub0 * 3.0 * z[0] ** 2
    zbar[1] += ub1 * 3.0 * z[1] ** 2


# ---------------------------------------------------------------- drivers (the timed calls)


@njit(cache=False)
def sumsq_loss(f, z0, th, ts, rtol, atol):
    zs, ys, ks, hs, os_, ox, ns, nfev = integrate(f, z0, th, ts, rtol, atol, False)
    return np.sum(zs * zs), ns, nfev


@njit(cache=False)
def sumsq_loss_grad(f, vjp, z0, th, ts, rtol, atol):
    zs, ys, ks, hs, os_, ox, ns, nfev = integrate(f, z0, th, ts, rtol, atol, True)
    gz, gth = adjoint(vjp, th, 2.0 * zs, ys, ks, hs, os_, ox, ns)
    g = np.empty(gz.size + gth.size)
    g[:gz.size] = gz
    g[gz.size:] = gth
    return np.sum(zs * zs), g


@njit(cache=False)
def p2_true(z0, ts, rtol, atol):
    zs, ys, ks, hs, os_, ox, ns, nfev = integrate(spiral_true_f, z0, np.zeros(1), ts, rtol, atol, False)
    return zs


@njit(cache=False)
def p2_iteration_of(f, vjp, th, y0s, targets, tb, rtol, atol):
    B = y0s.shape[0]
    Nn = targets.size
    L = 0.0
    g = np.zeros(th.size)
    for b in range(B):
        zs, ys, ks, hs, os_, ox, ns, nfev = integrate(f, y0s[b], th, tb, rtol, atol, True)
        d = zs - targets[b]
        L += np.sum(np.abs(d))
        gz, gth = adjoint(vjp, th, np.sign(d) / Nn, ys, ks, hs, os_, ox, ns)
        g += gth
    return L / Nn, g


def p2_iteration(th, y0s, targets, tb, rtol, atol):
    return p2_iteration_of(mlp_f, mlp_vjp, th, y0s, targets, tb, rtol, atol)


@njit(cache=False)
def p2_batch_forward(th, y0s, targets, tb, rtol, atol):
    L = 0.0
    for b in range(y0s.shape[0]):
        zs, ys, ks, hs, os_, ox, ns, nfev = integrate(mlp_f, y0s[b], th, tb, rtol, atol, False)
        L += np.sum(np.abs(zs - targets[b]))
    return L / targets.size


# The same MLP with the activations in a loop of their own over symode's vectorisable tanh (what symode's
# generated code does): the scratch vector is allocated per call (f's signature has no work array).
try:
    from symode._numeric.vmath import vtanh as _vtanh
except ImportError:         # symode not importable in this interpreter: the variant is skipped
    _vtanh = None

if _vtanh is not None:
    HP = -(-H // 8) * 8      # whole SIMD vectors

    @njit(cache=False, error_model="numpy", inline="always")
    def _hidden_vec(z, th):
        """tanh(W1 z**3 + b1), padded to whole SIMD vectors."""
        u0 = z[0] ** 3
        u1 = z[1] ** 3
        a = np.zeros(HP)
        for k in range(H):
            a[k] = th[2 * k] * u0 + th[2 * k + 1] * u1 + th[100 + k]
        for k in range(HP):
            a[k] = _vtanh(a[k])
        return a

    @njit(cache=False, error_model="numpy")
    def mlp_f_vec(z, th, out):
        a = _hidden_vec(z, th)
        o0 = th[250]
        o1 = th[251]
        for k in range(H):
            o0 += th[150 + k] * a[k]
            o1 += th[200 + k] * a[k]
        out[0] = o0
        out[1] = o1

    @njit(cache=False, error_model="numpy")
    def mlp_vjp_vec(z, th, lam, zbar, thbar):
        u0 = z[0] ** 3
        u1 = z[1] ** 3
        a = _hidden_vec(z, th)
        l0 = lam[0]
        l1 = lam[1]
        for k in range(H):
            thbar[150 + k] += l0 * a[k]
            thbar[200 + k] += l1 * a[k]
            a[k] = (th[150 + k] * l0 + th[200 + k] * l1) * (1.0 - a[k] * a[k])
        ub0 = 0.0
        ub1 = 0.0
        for k in range(H):
            hb = a[k]
            thbar[2 * k] += hb * u0
            thbar[2 * k + 1] += hb * u1
            thbar[100 + k] += hb
            ub0 += th[2 * k] * hb
            ub1 += th[2 * k + 1] * hb
        thbar[250] += l0
        thbar[251] += l1
        zbar[0] += ub0 * 3.0 * z[0] ** 2
        zbar[1] += ub1 * 3.0 * z[1] ** 2

    def p2_iteration_vec(th, y0s, targets, tb, rtol, atol):
        return p2_iteration_of(mlp_f_vec, mlp_vjp_vec, th, y0s, targets, tb, rtol, atol)


@njit(cache=False, parallel=True)
def ensemble_final(z0, thetas, ts, rtol, atol):
    N = thetas.shape[0]
    out = np.empty((N, z0.size))
    for k in prange(N):
        zs, ys, ks, hs, os_, ox, ns, nfev = integrate(lv_f, z0, thetas[k], ts, rtol, atol, False)
        out[k] = zs[ts.size - 1]
    return out


# ---------------------------------------------------------------- checks against SciPy


def _scipy_sumsq(fnum, z0, th, ts, method, rtol, atol):
    from scipy.integrate import solve_ivp
    out = np.empty(z0.size)

    def rhs(t, z):
        fnum(z, th, out)
        return out.copy()
    s = solve_ivp(rhs, (ts[0], ts[-1]), z0, method=method, t_eval=ts, rtol=rtol, atol=atol)
    assert s.success, s.message
    return float(np.sum(s.y ** 2))


def _checks(fnum, vjp, z0, th, ts, tol, L, g, fd=False):
    """Loss vs SciPy RK45 (same tolerances) and DOP853 rtol=atol=1e-10; gradient vs own gradient at 1e-12 and
    (fd=True) central differences of DOP853 rtol=atol=1e-12."""
    fpy = fnum.py_func
    chk = {}
    try:
        import scipy  # noqa: F401
    except ImportError:
        return {"skipped": "scipy not importable in this interpreter"}
    L45 = _scipy_sumsq(fpy, z0, th, ts, "RK45", tol["rtol"], tol["atol"])
    L853 = _scipy_sumsq(fpy, z0, th, ts, "DOP853", 1e-10, 1e-10)
    chk["loss_vs_scipy_rk45_same_tol"] = abs(L - L45) / abs(L45)
    chk["loss_vs_scipy_dop853_1e-10"] = abs(L - L853) / abs(L853)
    _, g12 = sumsq_loss_grad(fnum, vjp, z0, th, ts, 1e-12, 1e-12)
    chk["grad_vs_own_grad_1e-12"] = C.rel_err(g, g12)
    if fd:
        x = np.concatenate([z0, th])
        n = z0.size
        gfd = np.empty(x.size)
        for i in range(x.size):
            e = 1e-4 * max(1.0, abs(x[i]))
            xp, xm = x.copy(), x.copy()
            xp[i] += e
            xm[i] -= e
            gfd[i] = (_scipy_sumsq(fpy, xp[:n], xp[n:], ts, "DOP853", 1e-12, 1e-12)
                      - _scipy_sumsq(fpy, xm[:n], xm[n:], ts, "DOP853", 1e-12, 1e-12)) / (2 * e)
        chk["grad_1e-12_vs_scipy_central_fd"] = C.rel_err(g12, gfd)
    return chk


def _check_failed(chk, key_tol):
    bad = []
    lim = {"loss_vs_scipy_rk45_same_tol": 1e-9, "loss_vs_scipy_dop853_1e-10": key_tol["loss"],
           "grad_vs_own_grad_1e-12": key_tol["grad"], "grad_1e-12_vs_scipy_central_fd": 1e-6}
    for k, v in chk.items():
        if k in lim and v is not None and v > lim[k]:
            bad.append("%s = %.2g > %.0e" % (k, v, lim[k]))
    return bad


# ---------------------------------------------------------------- problems


def sumsq_row(ctx, key, fnum, vjp, z0, th, ts, tol, fd=False, full_grad=True):
    z0 = np.ascontiguousarray(z0, dtype=float)
    th = np.ascontiguousarray(th, dtype=float)
    rtol, atol = tol["rtol"], tol["atol"]
    t0 = time.perf_counter()
    sumsq_loss(fnum, z0, th, ts, rtol, atol)
    sumsq_loss_grad(fnum, vjp, z0, th, ts, rtol, atol)
    compile_s = time.perf_counter() - t0
    tf = ctx.time(lambda: sumsq_loss(fnum, z0, th, ts, rtol, atol))
    L, nsteps, nfev = tf["result"]
    tg = ctx.time(lambda: sumsq_loss_grad(fnum, vjp, z0, th, ts, rtol, atol))
    Lg, g = tg["result"]
    chk = _checks(fnum, vjp, z0, th, ts, tol, L, g, fd=fd)
    row = {"variant": "numba dopri5 (hand-written), discrete adjoint", "solver": "dopri5 (SciPy RK45 control)",
           "grad_method": "hand-written discrete adjoint, all steps stored", **C.tentry("forward", tf),
           **C.tentry("grad", tg), "loss": float(L), "grad": C.tolist(g), "nsteps": int(nsteps), "nfev": int(nfev),
           "compile_s": compile_s, "checks": chk}
    bad = _check_failed(chk, C.AGREE_TOL[key])
    if bad:
        row["check_failed"] = "; ".join(bad)
    return [row]


def run_p1(ctx):
    return sumsq_row(ctx, "P1", lv_f, lv_vjp, C.P1_Z0, C.P1_THETA, C.P1_TS, C.P1_TOL, fd=True)


def run_p4(ctx):
    return sumsq_row(ctx, "P4", lorenz_f, lorenz_vjp, C.P4_Z0, C.P4_THETA, C.P4_TS, C.P4_TOL, fd=True)


def make_p5(n):
    def run(ctx):
        W, z0 = C.p5_data(n)
        return sumsq_row(ctx, "P5_n%d" % n, tanhnet_f, tanhnet_vjp, z0, W.ravel(), C.P5_TS, C.P5_TOL)
    return run


def run_p2(ctx):
    tol = C.P2_TOL
    rtol, atol = tol["rtol"], tol["atol"]
    p2_true(C.P2_Y0, C.P2_TS, rtol, atol)
    tf = ctx.time(lambda: p2_true(C.P2_Y0, C.P2_TS, rtol, atol))
    true_y = tf["result"]
    y0s, targets = C.p2_batch_from_true(true_y)
    tb = C.p2_batch_ts()
    th = C.p2_flat_params()
    p2_iteration(th, y0s, targets, tb, rtol, atol)
    tg = ctx.time(lambda: p2_iteration(th, y0s, targets, tb, rtol, atol))
    L, g = tg["result"]
    tb_ = ctx.time(lambda: p2_batch_forward(th, y0s, targets, tb, rtol, atol))
    # check: true trajectory vs SciPy DOP853 at 1e-10 (relative max-norm)
    chk = {}
    try:
        from scipy.integrate import solve_ivp
        s = solve_ivp(lambda t, y: (y ** 3) @ C.P2_A, (0, 25), C.P2_Y0, method="DOP853", t_eval=C.P2_TS,
                      rtol=1e-10, atol=1e-12)
        chk["true_traj_vs_scipy_dop853_1e-10"] = C.rel_err(true_y, s.y.T)
    except ImportError:
        chk["skipped"] = "scipy not importable"
    row = {"variant": "numba dopri5 (hand-written), discrete adjoint",
           "forward_what": "true dynamics over all 1000 points", "grad_what":
           "one training iteration: 20 batch solves + discrete adjoints, loss mean|pred-true|, grad w.r.t. 252 "
           "parameters", **C.tentry("forward", tf), **C.tentry("grad", tg), "batch_forward_s_min": tb_["min"],
           "batch_forward_s_median": tb_["median"], "loss": float(L), "grad": C.tolist(g), "checks": chk}
    if chk.get("true_traj_vs_scipy_dop853_1e-10", 0) > 1e-5:
        row["check_failed"] = "true trajectory differs from SciPy DOP853 by %.2g" % chk[
            "true_traj_vs_scipy_dop853_1e-10"]
    rows = [row]
    if _vtanh is not None:
        p2_iteration_vec(th, y0s, targets, tb, rtol, atol)
        tv = ctx.time(lambda: p2_iteration_vec(th, y0s, targets, tb, rtol, atol))
        Lv, gv = tv["result"]
        rows.append({"variant": "numba dopri5 (hand-written), discrete adjoint, vectorised tanh (symode.vmath)",
                     "grad_what": row["grad_what"], **C.tentry("forward", tf), **C.tentry("grad", tv),
                     "loss": float(Lv), "grad": C.tolist(gv), "checks": chk})
    return rows


def run_p6(ctx):
    thetas = C.p6_thetas()
    z0 = C.P1_Z0.copy()
    ts = C.P6_TS.copy()
    rtol, atol = C.P6_TOL["rtol"], C.P6_TOL["atol"]
    ensemble_final(z0, thetas[:10], ts, rtol, atol)
    rows = []
    nmax = nb.config.NUMBA_NUM_THREADS
    ths = [1, nmax] if ctx.threads == "all" and nmax > 1 else [1]
    for nth in sorted(set(ths), reverse=True):
        nb.set_num_threads(nth)
        tm = ctx.time(lambda: ensemble_final(z0, thetas, ts, rtol, atol), repeats=max(3, min(ctx.repeats, 5)))
        out = tm["result"]
        rows.append({"variant": "numba dopri5 (hand-written), prange, threads=%d" % nth, "threads": nth,
                     **C.tentry("forward", tm), "n_traj": len(thetas), "traj_per_s": len(thetas) / tm["min"],
                     "traj_per_s_median": len(thetas) / tm["median"], "final_state_first": out[0].tolist(),
                     "final_state_mean": out.mean(axis=0).tolist(),
                     "method": "independent step-size control per trajectory"})
    nb.set_num_threads(nmax)
    from_scipy = {}
    try:
        from scipy.integrate import solve_ivp
        s = solve_ivp(lambda t, z: _lvnp(z, thetas[0]), (0, 10), z0,
                      method="RK45", rtol=rtol, atol=atol)
        from_scipy["first_final_vs_scipy_rk45_same_tol"] = C.rel_err(rows[0]["final_state_first"], s.y[:, -1])
    except ImportError:
        from_scipy["skipped"] = "scipy not importable"
    for r in rows:
        r["checks"] = from_scipy
    return rows


def _lvnp(z, th):
    return np.array([th[0] * z[0] - th[1] * z[0] * z[1], th[3] * z[0] * z[1] - th[2] * z[1]])


PROBLEMS = {"P1": run_p1, "P2": run_p2, "P4": run_p4, "P5_n4": make_p5(4), "P5_n16": make_p5(16),
            "P5_n64": make_p5(64), "P6": run_p6}


def cold_p1():
    L = sumsq_loss(lv_f, C.P1_Z0, C.P1_THETA, C.P1_TS, 1e-8, 1e-8)[0]
    Lg, g = sumsq_loss_grad(lv_f, lv_vjp, C.P1_Z0, C.P1_THETA, C.P1_TS, 1e-8, 1e-8)
    return {"loss": float(L), "grad0": float(g[0])}


def meta():
    v = C.pkg_versions(["numba", "llvmlite", "numpy", "scipy"])
    v["numba_threading_layer_max_threads"] = nb.config.NUMBA_NUM_THREADS
    return v


if __name__ == "__main__":
    C.adapter_main("limit", os.path.abspath(__file__), PROBLEMS, {"P1": cold_p1}, meta, T_START, T_IMPORTED)
