"""Rosenbrock methods (RODAS4, RODAS5) as self-checking data, and the compiled stiff integration loop.

A Rosenbrock method with the exact Jacobian ``J = df/dz(t0, y0)`` is written here in the transformed ("W")
form of Hairer & Wanner (Solving ODEs II, Sec. IV.7, eq. (7.25)), which needs one LU factorisation of

    W = I / (h * gamma) - J

per step and one solve per stage:

    W U_i = f(t0 + c_i h, y0 + sum_{j<i} a_ij U_j) + sum_{j<i} (C_ij / h) U_j + h d_i df/dt(t0, y0)
    y1 = y0 + sum_i m_i U_i,        error estimate  sum_i m_error_i U_i  (= y1 - y1_hat)

``RosenbrockTableau`` stores these coefficients as published and derives the original ones
(``alpha_ij``, ``gamma_ij``, ``b_i``: k_i = Gamma^-1 U) to check the order conditions when it is built.

The loop (``integrate``) is library code compiled once and cached; model kernels arrive as addresses in
``kern = [f, jac_z, jac_theta, jac_t, vjp]``. It also carries the explicit method (dopri5) of
``method="auto"``, which switches between the two on a stiffness test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numba import njit

from .. import _status as st
from .clock import monotonic
from .abi import K_F, K_JP, K_JT, K_JZ, K_VJP  # noqa: F401  (re-exported)
from .fnptr import call_f, call_j
from .interrupt import raise_if_interrupted, sigint_count
from .rk import REC_CAP0, REC_GROW, dense_eval, dense_weight, initial_step_first, initial_step_second

_OPTS = dict(cache=True, error_model="numpy", nogil=True)

# Stiffness switching of method="auto". Explicit -> Rosenbrock: Hairer's test in DOPRI5 (h*|lambda| estimated
# from the last two stages, which share c = 1), or h*rho(J) near the stability boundary at a few checks with
# the exact Jacobian; Rosenbrock -> explicit: h*rho(J) small (rho from power iterations on the J of each step).
STIFF_HLAMBDA = 3.25  # dopri5's stability boundary on the negative real axis is ~3.3
STIFF_STEPS = 15  # consecutive-ish accepted steps above it before switching (DOPRI5's NSTIFF logic)
NONSTIFF_RESET = 6  # accepted steps below it that reset the count
STIFF_CHECK_EVERY = 10  # accepted explicit steps between exact-Jacobian checks of h * rho(J)
STIFF_HRHO = 1.5  # h * rho(J) above this: the explicit step is held by a decayed fast mode, not accuracy
STIFF_VOTES = 2  # consecutive checks above it before switching
NONSTIFF_HRHO = 0.5  # h * rho(J) below this: an explicit step of that size is stable
NONSTIFF_STEPS = 5  # consecutive Rosenbrock steps below it before switching back
MAX_LU_FAILURES = 10  # consecutive failed factorisations (zero / non-finite pivot) -> SINGULAR_MATRIX


# ---------------------------------------------------------------------------------------------- order conditions
@lru_cache(maxsize=None)
def rooted_trees(order):
    """All rooted trees with `order` vertices, each a sorted tuple of its root's subtrees (a leaf is ``()``)."""
    if order == 1:
        return ((),)
    found = set()

    def partitions(k, largest):
        if k == 0:
            yield ()
            return
        for first in range(min(k, largest), 0, -1):
            for rest in partitions(k - first, first):
                yield (first,) + rest

    def forests(sizes):
        if not sizes:
            yield ()
            return
        for tr in rooted_trees(sizes[0]):
            for rest in forests(sizes[1:]):
                yield (tr,) + rest

    for sizes in partitions(order - 1, order - 1):
        for children in forests(sizes):
            found.add(tuple(sorted(children)))
    return tuple(sorted(found))


def tree_order(tree):
    """Number of vertices |t|."""
    return 1 + sum(tree_order(c) for c in tree)


def tree_density(tree):
    """gamma(t) = |t| * prod gamma(children); the exact solution's B-series weight is 1/gamma(t)."""
    out = tree_order(tree)
    for c in tree:
        out *= tree_density(c)
    return out


def elementary_weights(tree, alpha, beta, _memo=None):
    """Stage vector Phi(t) of a Rosenbrock method with the exact Jacobian (Hairer & Wanner II, Sec. IV.7).

    A vertex with one child goes through the Jacobian and uses ``beta = alpha + Gamma`` (diagonal gamma
    included); a vertex with two or more children goes through higher derivatives of f and uses ``alpha``.
    The order conditions read ``sum_i b_i Phi_i(t) = 1 / gamma(t)`` for every tree with |t| <= p.
    """
    memo = {} if _memo is None else _memo
    got = memo.get(tree)
    if got is not None:
        return got
    if len(tree) == 0:
        out = np.ones(alpha.shape[0])
    elif len(tree) == 1:
        out = beta @ elementary_weights(tree[0], alpha, beta, memo)
    else:
        out = np.ones(alpha.shape[0])
        for child in tree:
            out = out * (alpha @ elementary_weights(child, alpha, beta, memo))
    memo[tree] = out
    return out


def order_residual(weights, alpha, beta, order, theta=1.0):
    """max over trees with |t| <= order of |weights . Phi(t) - theta**|t| / gamma(t)|.

    ``weights`` are the b_i of the solution (theta = 1) or b_i(theta) of a continuous extension.
    """
    worst = 0.0
    memo = {}
    for k in range(1, order + 1):
        for tree in rooted_trees(k):
            r = float(weights @ elementary_weights(tree, alpha, beta, memo)) - theta ** k / tree_density(tree)
            worst = max(worst, abs(r))
    return worst


# ---------------------------------------------------------------------------------------------- tableau
@dataclass(frozen=True)
class RosenbrockTableau:
    """A Rosenbrock method in the transformed form with one LU of W = I/(h gamma) - J per step.

    Parameters
    ----------
    name : str
    gamma : float
        The diagonal gamma_ii of the method.
    a : ndarray, shape (s, s)
        Strictly lower triangular: stage i is evaluated at y0 + sum_j a_ij U_j.
    C : ndarray, shape (s, s)
        Strictly lower triangular: stage i's right-hand side gets sum_j (C_ij / h) U_j.
    c, d : ndarray, shape (s,)
        Nodes (stage times t0 + c_i h) and the weights of df/dt (h d_i df/dt).
    m : ndarray, shape (s,)
        Solution weights: y1 = y0 + sum_i m_i U_i.
    m_error : ndarray, shape (s,)
        Error weights: y1 - y1_hat = sum_i m_error_i U_i.
    H : ndarray, shape (r, s)
        Continuous extension y(theta) = (1 - theta) y0 + theta (y1 + (1 - theta) sum_k theta**k K_k),
        K_k = sum_i H[k, i] U_i (Hairer's RODAS / OrdinaryDiffEq form).
    order, error_order, dense_order : int
        Orders of the solution, of the embedded solution and of the continuous extension (each checked).

    Derived (not passed): ``Gamma`` (gamma_ij, lower triangular with gamma on the diagonal), ``alpha``
    (alpha_ij), ``b`` and ``b_hat`` (the original weights, k_i = (Gamma^-1 U)_i), ``dense`` (s, r + 1): the
    continuous extension in the power basis, y(theta) = y0 + sum_i (sum_k dense[i, k] theta**(k+1)) U_i, and
    ``stiffly_accurate``.
    """

    name: str
    gamma: float
    a: np.ndarray
    C: np.ndarray
    c: np.ndarray
    d: np.ndarray
    m: np.ndarray
    m_error: np.ndarray
    H: np.ndarray
    order: int
    error_order: int
    dense_order: int
    Gamma: np.ndarray = field(init=False, repr=False)
    alpha: np.ndarray = field(init=False, repr=False)
    b: np.ndarray = field(init=False, repr=False)
    b_hat: np.ndarray = field(init=False, repr=False)
    dense: np.ndarray = field(init=False, repr=False)
    stiffly_accurate: bool = field(init=False)

    def __post_init__(self):
        def arr(x):
            return np.ascontiguousarray(np.asarray(x, dtype=np.float64))

        a, C, c, d, m, me, H = (arr(x) for x in (self.a, self.C, self.c, self.d, self.m, self.m_error, self.H))
        s = m.size
        for nm, x, shape in (("a", a, (s, s)), ("C", C, (s, s)), ("c", c, (s,)), ("d", d, (s,)),
                             ("m_error", me, (s,))):
            if x.shape != shape:
                raise ValueError(f"{self.name}: {nm} must have shape {shape}, got {x.shape}")
        if H.ndim != 2 or H.shape[1] != s:
            raise ValueError(f"{self.name}: H must have shape (r, {s})")
        if np.any(np.triu(a) != 0) or np.any(np.triu(C) != 0):
            raise ValueError(f"{self.name}: a and C must be strictly lower triangular")
        g = float(self.gamma)
        if not g > 0:
            raise ValueError(f"{self.name}: gamma must be positive")
        # Gamma^-1 = I / gamma - C is lower triangular: so is Gamma, with gamma on its diagonal (exactly)
        Gamma = np.tril(np.linalg.inv(np.eye(s) / g - C))
        np.fill_diagonal(Gamma, g)
        alpha = a @ Gamma
        beta = alpha + Gamma
        b = m @ Gamma
        b_hat = (m - me) @ Gamma
        for i in range(s):
            if abs(alpha[i].sum() - c[i]) > 1e-12:
                raise ValueError(f"{self.name}: row {i} of alpha sums to {float(alpha[i].sum())!r}, not "
                                 f"c[{i}] = {float(c[i])!r}")
            if abs(Gamma[i].sum() - d[i]) > 1e-12:
                raise ValueError(f"{self.name}: row {i} of Gamma sums to {float(Gamma[i].sum())!r}, not "
                                 f"d[{i}] = {float(d[i])!r}")
        r = order_residual(b, alpha, beta, self.order)
        if r > 1e-12:
            raise ValueError(f"{self.name}: order {self.order} conditions violated (residual {r:.2e})")
        r = order_residual(b_hat, alpha, beta, self.error_order)
        if r > 1e-12:
            raise ValueError(f"{self.name}: embedded order {self.error_order} conditions violated ({r:.2e})")
        rows = H.shape[0]
        dense = np.zeros((s, rows + 1))
        dense[:, 0] = m + H[0]
        for k in range(1, rows):
            dense[:, k] = H[k] - H[k - 1]
        dense[:, rows] = -H[rows - 1]
        if np.max(np.abs(dense.sum(axis=1) - m)) > 1e-12:
            raise ValueError(f"{self.name}: the continuous extension at theta = 1 does not reproduce m")
        for theta in (0.25, 0.5, 0.8):
            bt = (dense @ theta ** np.arange(1, rows + 2)) @ Gamma
            r = order_residual(bt, alpha, beta, self.dense_order, theta)
            if r > 1e-12:
                raise ValueError(f"{self.name}: dense output of order {self.dense_order} violated at theta = "
                                 f"{theta} ({r:.2e})")
        sa = bool(abs(c[-1] - 1.0) < 1e-14 and np.max(np.abs(beta[-1] - b)) < 1e-12)
        for nm, v in (("a", a), ("C", C), ("c", c), ("d", d), ("m", m), ("m_error", me), ("H", H),
                      ("gamma", g), ("Gamma", Gamma), ("alpha", alpha), ("b", b), ("b_hat", b_hat),
                      ("dense", np.ascontiguousarray(dense)), ("stiffly_accurate", sa)):
            object.__setattr__(self, nm, v)

    @property
    def n_stages(self):
        return self.m.size

    def dense_weights(self, theta):
        """Weights of U_i in y(theta) - y0 (theta in [0, 1])."""
        return self.dense @ theta ** np.arange(1, self.dense.shape[1] + 1)

    def packed(self):
        """Arrays for the compiled loop: (a, C, c, d, m, m_error, dense, gamma)."""
        return (self.a, self.C, self.c, self.d, self.m, self.m_error, self.dense, self.gamma)


def _stiffly_accurate_weights(a):
    """m = last row of a plus e_s (y1 = last stage input + U_s), m_error = e_s (y1_hat = last stage input)."""
    a = np.asarray(a, dtype=np.float64)
    s = a.shape[0]
    m = a[-1].copy()
    m[-1] = 1.0
    e = np.zeros(s)
    e[-1] = 1.0
    return m, e


def _rodas4():
    # Hairer & Wanner's RODAS (order 4(3), gamma = 1/4, stiffly accurate), coefficients of rodas.f (METH=1) as
    # also used by OrdinaryDiffEq.jl's Rodas4, with its third-order continuous extension.
    a = np.zeros((6, 6))
    a[1, 0] = 1.544
    a[2, :2] = [0.9466785280815826, 0.2557011698983284]
    a[3, :3] = [3.314825187068521, 2.896124015972201, 0.9986419139977817]
    a[4, :4] = [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950]
    a[5, :5] = [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950, 1.0]
    C = np.zeros((6, 6))
    C[1, 0] = -5.6688
    C[2, :2] = [-2.430093356833875, -0.2063599157091915]
    C[3, :3] = [-0.1073529058151375, -9.594562251023355, -20.47028614809616]
    C[4, :4] = [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160]
    C[5, :5] = [8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136, -6.058818238834054]
    H = [[10.12623508344586, -7.487995877610167, -34.80091861555747, -7.992771707568823, 1.025137723295662, 0.0],
         [-0.6762803392801253, 6.087714651680015, 16.43084320892478, 24.76722511418386, -6.594389125716872, 0.0]]
    m, e = _stiffly_accurate_weights(a)
    return RosenbrockTableau("rodas4", gamma=0.25, a=a, C=C, c=[0.0, 0.386, 0.21, 0.63, 1.0, 1.0],
                             d=[0.25, -0.1043, 0.1035, -0.0362, 0.0, 0.0], m=m, m_error=e, H=H,
                             order=4, error_order=3, dense_order=3)


def _rodas5():
    # Di Marzo (1993), RODAS5(4): order 5(4), gamma = 0.19, stiffly accurate; the transformed coefficients as
    # in OrdinaryDiffEq.jl's Rodas5 (derived there from Di Marzo's alpha_ij, beta_ij, which the checks in
    # RosenbrockTableau recover), with its fourth-order continuous extension (H, three rows).
    a = np.zeros((8, 8))
    a[1, 0] = 2.0
    a[2, :2] = [3.040894194418781, 1.041747909077569]
    a[3, :3] = [2.576417536461461, 1.622083060776640, -0.9089668560264532]
    a[4, :4] = [2.760842080225597, 1.446624659844071, -0.3036980084553738, 0.2877498600325443]
    row6 = [-14.09640773051259, 6.925207756232704, -41.47510893210728, 2.343771018586405, 24.13215229196062]
    a[5, :5] = row6
    a[6, :6] = row6 + [1.0]
    a[7, :7] = row6 + [1.0, 1.0]
    C = np.zeros((8, 8))
    C[1, 0] = -10.31323885133993
    C[2, :2] = [-21.04823117650003, -7.234992135176716]
    C[3, :3] = [32.22751541853323, -4.943732386540191, 19.44922031041879]
    C[4, :4] = [-20.69865579590063, -8.816374604402768, 1.260436877740897, -0.7495647613787146]
    C[5, :5] = [-46.22004352711257, -17.49534862857472, -289.6389582892057, 93.60855400400906, 318.3822534212147]
    C[6, :6] = [34.20013733472935, -14.15535402717690, 57.82335640988400, 25.83362985412365, 1.408950972071624,
                -6.551835421242162]
    C[7, :7] = [42.57076742291101, -13.80770672017997, 93.98938432427124, 18.77919633714503, -31.58359187223370,
                -6.685968952921985, -5.810979938412932]
    H = [[27.354592673333357, -6.925207756232857, 26.40037733258859, 0.5635230501052979, -4.699151156849391,
          -1.6008677469422725, -1.5306074446748028, -1.3929872940716344],
         [44.19024239501722, 1.3677947663381929e-13, 202.93261852171622, -35.5669339789154, -181.91095152160645,
          3.4116351403665033, 2.5793540257308067, 2.2435122582734066],
         [-44.0988150021747, -5.755396159656812e-13, -181.26175034586677, 56.99302194811676, 183.21182741427398,
          -7.480257918273637, -5.792426076169686, -5.32503859794143]]
    m, e = _stiffly_accurate_weights(a)
    c = [0.0, 0.38, 0.3878509998321533, 0.4839718937873840, 0.4570477008819580, 1.0, 1.0, 1.0]
    d = [0.19, -0.1823079225333714636, -0.319231832186874912, 0.3449828624725343, -0.377417564392089818,
         0.0, 0.0, 0.0]
    return RosenbrockTableau("rodas5", gamma=0.19, a=a, C=C, c=c, d=d, m=m, m_error=e, H=H,
                             order=5, error_order=4, dense_order=4)


RODAS4 = _rodas4()
RODAS5 = _rodas5()


# ---------------------------------------------------------------------------------------------- compiled kernels
@njit(**_OPTS)
def lu_factor(W, piv, kl, ku):
    """In-place LU factorisation with partial pivoting of W (n, n) whose nonzeros lie in the band
    -kl <= j - i <= ku (kl = ku = n - 1: dense). Only rows i, columns i - kl .. i + kl + ku are read
    or written (pivoting widens the upper band to kl + ku). LINPACK layout: the multipliers of column k
    stay in W[k+1:, k] unpermuted by later interchanges, piv[k] is the row swapped with k at step k.

    Returns False on a zero, NaN or infinite pivot (W singular or not finite).
    """
    n = W.shape[0]
    for k in range(n):
        iend = min(n - 1, k + kl)
        p = k
        amax = abs(W[k, k])
        for i in range(k + 1, iend + 1):
            v = abs(W[i, k])
            if v > amax:
                amax = v
                p = i
        piv[k] = p
        if not (amax > 0.0 and amax < np.inf):
            return False
        jend = min(n - 1, k + kl + ku)
        if p != k:
            for j in range(k, jend + 1):
                tmp = W[k, j]
                W[k, j] = W[p, j]
                W[p, j] = tmp
        inv = 1.0 / W[k, k]
        for i in range(k + 1, iend + 1):
            lik = W[i, k]
            if lik != 0.0:
                lik *= inv
                W[i, k] = lik
                for j in range(k + 1, jend + 1):
                    W[i, j] -= lik * W[k, j]
    return True


@njit(**_OPTS)
def lu_solve(W, piv, kl, ku, b):
    """Solve W x = b in place with the factors of ``lu_factor`` (same kl, ku)."""
    n = b.size
    for k in range(n - 1):
        p = piv[k]
        bk = b[p]
        if p != k:
            b[p] = b[k]
            b[k] = bk
        if bk != 0.0:
            for i in range(k + 1, min(n - 1, k + kl) + 1):
                b[i] -= W[i, k] * bk
    for i in range(n - 1, -1, -1):
        acc = b[i]
        for j in range(i + 1, min(n - 1, i + kl + ku) + 1):
            acc -= W[i, j] * b[j]
        b[i] = acc / W[i, i]


@njit(**_OPTS)
def spectral_radius(J, pat_i, pat_j, v, w, iters):
    """Estimate rho(J) by `iters` power iterations over the sparsity pattern, warm-started from the unit
    vector `v` (updated in place; `w` is workspace). Returns inf when J v is not finite."""
    n = v.size
    rho = 0.0
    for _ in range(iters):
        for q in range(n):
            w[q] = 0.0
        for k in range(pat_i.size):
            w[pat_i[k]] += J[pat_i[k], pat_j[k]] * v[pat_j[k]]
        nrm = 0.0
        for q in range(n):
            nrm += w[q] * w[q]
        rho = math.sqrt(nrm)
        if not (rho > 0.0 and rho < np.inf):
            for q in range(n):
                v[q] = (1.0 + 0.5 * q / n) / math.sqrt(n)
            if not rho < np.inf:
                rho = np.inf
            break
        for q in range(n):
            v[q] = w[q] / rho
    return rho


# A recorded Rosenbrock step stores U_i / h, so its continuous extension is the Runge-Kutta formula:
# out = y0 + h * sum_i b_i(frac) rec_k_step[i] with b_i from ``RosenbrockTableau.dense`` (b_i(1) = m_i gives y1).
rosenbrock_dense_eval = dense_eval


@njit(**_OPTS)
def integrate(kern, n, theta, ts, y0,
              ros_a, ros_C, ros_c, ros_d, ros_m, ros_e, ros_dense, gamma, error_order,
              rk_a, rk_b_error, rk_c, rk_dense, auto, nonauto, kl, ku, band, pat_i, pat_j,
              rtol, atol, h_init, h_max, max_steps, ctrl, record, out_y, stats, fstats, clock_addr=0, rec_cap=0):
    """``_integrate_core`` with fixed-capacity step records, redone with ``REC_GROW`` times the capacity when
    they fill (as ``rk.integrate``: no array variable changes inside the step loop; same arithmetic each time)."""
    cap = rec_cap if rec_cap > 0 else REC_CAP0
    while True:
        res = _integrate_core(kern, n, theta, ts, y0, ros_a, ros_C, ros_c, ros_d, ros_m, ros_e, ros_dense, gamma,
                              error_order, rk_a, rk_b_error, rk_c, rk_dense, auto, nonauto, kl, ku, band, pat_i,
                              pat_j, rtol, atol, h_init, h_max, max_steps, ctrl, record, cap, out_y, stats, fstats,
                              clock_addr)
        if res[0] != st.CAPACITY or record == 0:
            raise_if_interrupted(res[0])   # Ctrl-C: Python's handler runs here (see rk.integrate)
            return res
        cap *= REC_GROW
        stats[:] = 0
        fstats[:] = 0.0


@njit(**_OPTS)
def _integrate_core(kern, n, theta, ts, y0,
                    ros_a, ros_C, ros_c, ros_d, ros_m, ros_e, ros_dense, gamma, error_order,
                    rk_a, rk_b_error, rk_c, rk_dense, auto, nonauto, kl, ku, band, pat_i, pat_j,
                    rtol, atol, h_init, h_max, max_steps, ctrl, record, rec_cap, out_y, stats, fstats, clock_addr):
    """Integrate z' = f(t, z) from ts[0] through every ts[i] with a Rosenbrock method (``auto=False``), or
    switching between an explicit FSAL Runge-Kutta method and the Rosenbrock method (``auto=True``).

    Parameters
    ----------
    kern : int64 array [f, jac_z, jac_theta, jac_t, vjp] kernel addresses.
    ros_a, ros_C, ros_c, ros_d, ros_m, ros_e, ros_dense, gamma : ``RosenbrockTableau.packed()``.
    error_order : order of the embedded estimate (the controller's exponent is 1 / (error_order + 1)).
    rk_a, rk_b_error, rk_c, rk_dense : the explicit FSAL method of ``auto`` (dopri5).
    nonauto : bool, evaluate df/dt (jac_t) for the Rosenbrock stages.
    kl, ku, band : W's lower/upper bandwidth; with ``band`` only the band is cleared and W is filled from the
        sparsity pattern (pat_i, pat_j) of jac_z, otherwise W = I/(h gamma) - J is formed densely.
    ctrl : (safety, fac_min, fac_max, beta[, time_limit]), the PI controller of ``rk.integrate``; time_limit > 0
        stops with TIME_LIMIT after that many seconds (checked every 64 steps through the clock at
        `clock_addr`, see ``clock.py``).
    record : 0 nothing; 1 each accepted step's start time, signed step and start state; 2 also
        rec_k[step] = U / h (s, n), enough for ``rosenbrock_dense_eval`` (not with ``auto``).
    stats : int64 (10,) [nfev, nsteps, naccepted, nrejected, njev, nlu, 0 (rk's stiffness flag, never set here),
        switches, accepted explicit steps, accepted Rosenbrock steps]; fstats : float (4,) [t_reached, h_last,
        time span of the explicit steps, time span of the Rosenbrock steps].

    Returns
    -------
    (status, out_step, out_frac, rec_t, rec_h, rec_y, rec_k, n_rec) as ``rk.integrate``.

    A step is rejected and retried with a smaller step when W cannot be factorised (``MAX_LU_FAILURES``
    consecutive failures end with SINGULAR_MATRIX), when a stage, the error or f at the new point is not
    finite (ending with NONFINITE when the step underflows), or when the error norm exceeds 1.
    """
    ny = n
    s = ros_m.size
    se = rk_c.size
    m = ts.size
    fk = kern[K_F]
    jzk = kern[K_JZ]
    jtk = kern[K_JT]
    y = y0.copy()
    ynew = np.empty(ny)
    ytmp = np.empty(ny)
    F0 = np.empty(ny)
    FN = np.empty(ny)
    FT = np.zeros(ny)
    J = np.zeros((ny, ny))
    W = np.zeros((ny, ny))
    piv = np.zeros(ny, dtype=np.int64)
    U = np.zeros((s, ny))
    K = np.zeros((se, ny))
    Y6 = np.empty(ny)
    pv = np.empty(ny)
    pw = np.empty(ny)
    nnz = pat_i.size
    safety, fac_min, fac_max, beta = ctrl[0], ctrl[1], ctrl[2], ctrl[3]
    time_limit = ctrl[4] if ctrl.size > 4 else 0.0
    t_start_clock = monotonic(clock_addr) if time_limit > 0.0 else 0.0
    sigint0 = sigint_count()
    store_k = record >= 2
    cap = rec_cap if record > 0 else 1
    rec_t = np.empty(cap)
    rec_h = np.empty(cap)
    rec_y = np.empty((cap, ny))
    rec_k = np.empty((cap if store_k else 1, s, ny))
    n_rec = 0
    out_step = np.full(m, -1, dtype=np.int64)
    out_frac = np.zeros(m)
    for q in range(ny):
        out_y[0, q] = y[q]
    t = ts[0]
    fstats[0] = t
    status = st.SUCCESS
    if m == 1:
        return status, out_step, out_frac, rec_t[:0], rec_h[:0], rec_y[:0], rec_k[:0], 0
    d = 1.0 if ts[m - 1] > ts[0] else -1.0
    nfev = 0
    nsteps = 0
    nacc = 0
    nrej = 0
    njev = 0
    nlu = 0
    nswitch = 0
    nacc_exp = 0
    nacc_ros = 0
    span_exp = 0.0
    span_ros = 0.0
    call_f(fk, t, y, theta, F0)
    nfev += 1
    for q in range(ny):
        if not math.isfinite(F0[q]):
            stats[0] = nfev
            return st.NONFINITE, out_step, out_frac, rec_t[:0], rec_h[:0], rec_y[:0], rec_k[:0], 0
    i_next = 1
    t_end = ts[m - 1]
    k_exp = error_order + 1.0  # the explicit method of auto (dopri5) has rodas5's error order, 4
    expo1 = 1.0 / k_exp - 0.75 * beta
    if h_init > 0.0:
        h_abs = h_init
    else:
        # Standard initial-step heuristic (Hairer, Norsett & Wanner I, Sec. II.4), as rk.integrate.
        span = abs(t_end - t)
        h0, d1 = initial_step_first(y, F0, rtol, atol, ny, span)
        for q in range(ny):
            ytmp[q] = y[q] + h0 * d * F0[q]
        call_f(fk, t + h0 * d, ytmp, theta, FN)
        nfev += 1
        h_abs = initial_step_second(y, F0, FN, rtol, atol, ny, h0, d1, span, k_exp)
    if h_max > 0.0 and h_abs > h_max:
        h_abs = h_max
    stiff = not auto
    if not stiff:
        for q in range(ny):
            K[0, q] = F0[q]
    need_jac = True
    rho = 0.0
    for q in range(ny):
        pv[q] = (1.0 + 0.5 * q / ny) / math.sqrt(ny)
    n_stiff = 0
    n_nonstiff = 0
    n_votes = 0
    err_prev = 1e-4
    step_rejected = False
    last_fail = 0  # 0 none, 1 non-finite, 2 singular W
    lu_failures = 0
    while i_next < m:
        if nsteps >= max_steps:
            status = st.MAX_STEPS
            break
        if (nsteps & 63) == 0:   # every 64 steps: Ctrl-C and the wall-clock limit
            # written out, not clock.periodic_check: with the call P1's rodas5 solve measured 158-167 us against
            # 150 us before this check existed, written out 148-158 us (a noisy shared machine: within noise)
            if sigint_count() != sigint0:
                status = st.INTERRUPTED
                break
            if time_limit > 0.0 and monotonic(clock_addr) - t_start_clock > time_limit:
                status = st.TIME_LIMIT
                break
        min_step = 10.0 * abs(np.nextafter(t, d * np.inf) - t)
        if h_max > 0.0 and h_abs > h_max:
            h_abs = h_max
        if h_abs < min_step:
            if last_fail == 2:
                status = st.SINGULAR_MATRIX
            elif last_fail == 1:
                status = st.NONFINITE
            else:
                status = st.DT_MIN
            break
        h_prop = h_abs
        t_new = t + d * h_abs
        clipped = False
        if d * (t_new - t_end) >= 0.0:
            t_new = t_end
            clipped = True
        h = t_new - t
        h_used = abs(h)
        nsteps += 1
        finite = True
        if stiff:
            # ---------------------------------------------------------------- Rosenbrock step
            if need_jac:
                call_j(jzk, t, y, theta, J)
                njev += 1
                if nonauto:
                    call_f(jtk, t, y, theta, FT)
                need_jac = False
                if auto:
                    rho = spectral_radius(J, pat_i, pat_j, pv, pw, 2)
            hgi = 1.0 / (h * gamma)
            if band:
                for i in range(ny):
                    for j in range(max(0, i - kl), min(ny - 1, i + kl + ku) + 1):
                        W[i, j] = 0.0
                for k in range(nnz):
                    W[pat_i[k], pat_j[k]] = -J[pat_i[k], pat_j[k]]
            else:
                for i in range(ny):
                    for j in range(ny):
                        W[i, j] = -J[i, j]
            for i in range(ny):
                W[i, i] += hgi
            nlu += 1
            ok = lu_factor(W, piv, kl, ku)
            if not ok:
                nrej += 1
                step_rejected = True
                last_fail = 2
                lu_failures += 1
                if lu_failures >= MAX_LU_FAILURES:
                    status = st.SINGULAR_MATRIX
                    break
                h_abs = h_used * fac_min
                continue
            lu_failures = 0
            inv_h = 1.0 / h
            for i in range(s):
                Ui = U[i]
                if i == 0:
                    for q in range(ny):
                        Ui[q] = F0[q]
                else:
                    for q in range(ny):
                        acc = y[q]
                        for j in range(i):
                            acc += ros_a[i, j] * U[j, q]
                        ytmp[q] = acc
                    call_f(fk, t + ros_c[i] * h, ytmp, theta, Ui)
                    for q in range(ny):
                        acc = Ui[q]
                        for j in range(i):
                            acc += (ros_C[i, j] * inv_h) * U[j, q]
                        Ui[q] = acc
                if nonauto and ros_d[i] != 0.0:
                    hd = h * ros_d[i]
                    for q in range(ny):
                        Ui[q] += hd * FT[q]
                # solve W U_i = rhs (lu_solve, inlined: the hot path of small systems)
                for k in range(ny - 1):
                    p = piv[k]
                    bk = Ui[p]
                    if p != k:
                        Ui[p] = Ui[k]
                        Ui[k] = bk
                    if bk != 0.0:
                        for r in range(k + 1, min(ny - 1, k + kl) + 1):
                            Ui[r] -= W[r, k] * bk
                for r in range(ny - 1, -1, -1):
                    acc = Ui[r]
                    for j in range(r + 1, min(ny - 1, r + kl + ku) + 1):
                        acc -= W[r, j] * Ui[j]
                    Ui[r] = acc / W[r, r]
            nfev += s - 1
            errn = 0.0
            for q in range(ny):
                acc = y[q]
                er = 0.0
                for i in range(s):
                    acc += ros_m[i] * U[i, q]
                    er += ros_e[i] * U[i, q]
                ynew[q] = acc
                sc = atol[q] + rtol[q] * max(abs(y[q]), abs(acc))
                er /= sc
                errn += er * er
            errn = math.sqrt(errn / ny)
            if not math.isfinite(errn):
                finite = False
            elif errn < 1.0:
                call_f(fk, t_new, ynew, theta, FN)
                nfev += 1
                for q in range(ny):
                    if not math.isfinite(FN[q]):
                        finite = False
                        break
        else:
            # ---------------------------------------------------------------- explicit FSAL step (auto)
            for i in range(1, se):
                Ki = K[i]
                for q in range(ny):
                    acc = 0.0
                    for j in range(i):
                        acc += rk_a[i, j] * K[j, q]
                    ytmp[q] = y[q] + h * acc
                if i == se - 2:
                    for q in range(ny):
                        Y6[q] = ytmp[q]
                if i == se - 1:
                    for q in range(ny):
                        ynew[q] = ytmp[q]
                    call_f(fk, t_new, ytmp, theta, Ki)
                else:
                    call_f(fk, t + rk_c[i] * h, ytmp, theta, Ki)
            nfev += se - 1
            errn = 0.0
            for q in range(ny):
                acc = 0.0
                for j in range(se):
                    acc += rk_b_error[j] * K[j, q]
                sc = atol[q] + rtol[q] * max(abs(y[q]), abs(ynew[q]))
                er = h * acc / sc
                errn += er * er
                if not math.isfinite(ynew[q]) or not math.isfinite(K[se - 1, q]):
                    finite = False
            errn = math.sqrt(errn / ny)
            if not math.isfinite(errn):
                finite = False
        if not finite:
            nrej += 1
            last_fail = 1
            step_rejected = True
            h_abs = h_used * fac_min
            continue
        if errn >= 1.0:
            nrej += 1
            last_fail = 0
            step_rejected = True
            h_abs = h_used * max(fac_min, safety * errn ** (-1.0 / k_exp))
            continue
        # ------------------------------------------------------------------------ accepted
        last_fail = 0
        if errn == 0.0:
            factor = fac_max
        else:
            factor = min(fac_max, safety * errn ** (-expo1) * err_prev ** beta)
        if step_rejected:
            factor = min(1.0, factor)
        step_rejected = False
        err_prev = max(errn, 1e-4)
        if record > 0:
            if n_rec == cap:
                status = st.CAPACITY
                break
            rec_t[n_rec] = t
            rec_h[n_rec] = h
            for q in range(ny):
                rec_y[n_rec, q] = y[q]
            if store_k:
                inv_h = 1.0 / h
                for i in range(s):
                    for q in range(ny):
                        rec_k[n_rec, i, q] = U[i, q] * inv_h
        # outputs inside (t, t_new]
        while i_next < m and d * (ts[i_next] - t_new) <= 0.0:
            if ts[i_next] == t_new:
                for q in range(ny):
                    out_y[i_next, q] = ynew[q]
                out_frac[i_next] = 1.0
            else:
                frac = (ts[i_next] - t) / h
                for q in range(ny):
                    out_y[i_next, q] = y[q]
                if stiff:
                    for i in range(ros_dense.shape[0]):
                        bi = dense_weight(ros_dense, i, frac)
                        if bi != 0.0:
                            for q in range(ny):
                                out_y[i_next, q] += bi * U[i, q]
                else:
                    for i in range(se):
                        bi = dense_weight(rk_dense, i, frac)
                        if bi != 0.0:
                            cb = h * bi
                            for q in range(ny):
                                out_y[i_next, q] += cb * K[i, q]
                out_frac[i_next] = frac
            out_step[i_next] = n_rec
            i_next += 1
        n_rec += 1
        nacc += 1
        h_abs = h_used * factor
        if clipped and h_abs < h_prop:
            h_abs = h_prop
        if stiff:
            nacc_ros += 1
            span_ros += h_used
            for q in range(ny):
                F0[q] = FN[q]
            need_jac = True
            if auto:
                if rho * h_abs < NONSTIFF_HRHO:
                    n_nonstiff += 1
                    if n_nonstiff >= NONSTIFF_STEPS:
                        stiff = False
                        nswitch += 1
                        n_stiff = 0
                        n_nonstiff = 0
                        for q in range(ny):
                            K[0, q] = FN[q]
                        err_prev = 1e-4
                else:
                    n_nonstiff = 0
        else:
            nacc_exp += 1
            span_exp += h_used
            # Hairer's stiffness test (DOPRI5): h*lambda ~ h |f(y1) - f(y6)| / |y1 - y6| (free), and every
            # STIFF_CHECK_EVERY steps h*rho(J) with the exact Jacobian (which catches the steps that sit just
            # under the stability boundary, where Hairer's estimate often stays below its threshold).
            num = 0.0
            den = 0.0
            for q in range(ny):
                dk = K[se - 1, q] - K[se - 2, q]
                dy = ynew[q] - Y6[q]
                num += dk * dk
                den += dy * dy
            go_stiff = False
            if den > 0.0 and h_used * math.sqrt(num / den) > STIFF_HLAMBDA:
                n_nonstiff = 0
                n_stiff += 1
                if n_stiff >= STIFF_STEPS:
                    go_stiff = True
            else:
                n_nonstiff += 1
                if n_nonstiff >= NONSTIFF_RESET:
                    n_stiff = 0
            fresh_jac = False
            if not go_stiff and nacc_exp % STIFF_CHECK_EVERY == 0:
                call_j(jzk, t_new, ynew, theta, J)
                njev += 1
                if nonauto:
                    call_f(jtk, t_new, ynew, theta, FT)
                fresh_jac = True
                rho = spectral_radius(J, pat_i, pat_j, pv, pw, 3)
                if rho * h_abs > STIFF_HRHO:
                    n_votes += 1
                    if n_votes >= STIFF_VOTES:
                        go_stiff = True
                else:
                    n_votes = 0
            if go_stiff:
                stiff = True
                nswitch += 1
                n_stiff = 0
                n_nonstiff = 0
                n_votes = 0
                need_jac = not fresh_jac
                err_prev = 1e-4
                for q in range(ny):
                    F0[q] = K[se - 1, q]
            for q in range(ny):
                K[0, q] = K[se - 1, q]
        t = t_new
        for q in range(ny):
            y[q] = ynew[q]
    stats[0] = nfev
    stats[1] = nsteps
    stats[2] = nacc
    stats[3] = nrej
    stats[4] = njev
    stats[5] = nlu
    stats[7] = nswitch
    stats[8] = nacc_exp
    stats[9] = nacc_ros
    fstats[0] = t
    fstats[1] = h_abs
    fstats[2] = span_exp
    fstats[3] = span_ros
    return status, out_step, out_frac, rec_t[:n_rec], rec_h[:n_rec], rec_y[:n_rec], rec_k[:n_rec], n_rec
