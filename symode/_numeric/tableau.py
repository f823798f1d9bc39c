"""Runge-Kutta tableaus as self-checking data (textbook fields ``a``, ``b``, ``b_error``, ``c``).

A method is data: adding one means adding a tableau here and one registry entry in ``methods.py``; the
stepping loops never change. Every tableau checks its own consistency when it is built.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta method with an optional embedded error estimate and dense output.

    Parameters
    ----------
    name : str
    a : ndarray, shape (s, s)
        Strictly lower triangular stage coefficients.
    b : ndarray, shape (s,)
        Weights of the propagated solution.
    c : ndarray, shape (s,)
        Nodes; ``c[i] == sum(a[i])``.
    b_error : ndarray, shape (s,) or None
        Weights of the error estimate (``b - b_hat``); ``None`` for fixed-step methods.
    dense : ndarray, shape (s, d)
        Continuous extension ``y(t0 + theta*h) = y0 + h * sum_i b_i(theta) k_i`` with
        ``b_i(theta) = sum_j dense[i, j] * theta**(j + 1)``; ``b_i(1) == b_i``.
    order, error_order : int
        Order of the propagated solution and of the embedded estimate (0 when there is none).
    """

    name: str
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    b_error: np.ndarray | None
    dense: np.ndarray
    order: int
    error_order: int = 0
    fsal: bool = field(init=False)

    def __post_init__(self):
        a, b, c = (np.asarray(x, dtype=np.float64) for x in (self.a, self.b, self.c))
        s = b.size
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)
        if a.shape != (s, s) or c.shape != (s,):
            raise ValueError(f"{self.name}: a must be ({s}, {s}) and c ({s},)")
        if np.any(np.triu(a) != 0):
            raise ValueError(f"{self.name}: a must be strictly lower triangular (explicit method)")
        for i in range(s):
            if abs(a[i].sum() - c[i]) > 1e-14:
                raise ValueError(f"{self.name}: row {i} of a sums to {a[i].sum()!r}, not c[{i}] = {c[i]!r}")
        if abs(b.sum() - 1.0) > 1e-14:
            raise ValueError(f"{self.name}: sum(b) = {b.sum()!r}, not 1")
        if self.b_error is not None:
            e = np.asarray(self.b_error, dtype=np.float64)
            if e.shape != (s,):
                raise ValueError(f"{self.name}: b_error must have shape ({s},)")
            if abs(e.sum()) > 1e-14:
                raise ValueError(f"{self.name}: sum(b_error) = {e.sum()!r}, not 0")
            object.__setattr__(self, "b_error", e)
        d = np.asarray(self.dense, dtype=np.float64)
        if d.ndim != 2 or d.shape[0] != s:
            raise ValueError(f"{self.name}: dense must have shape ({s}, degree)")
        if np.max(np.abs(d.sum(axis=1) - b)) > 1e-13:
            raise ValueError(f"{self.name}: the dense output at theta = 1 does not reproduce b")
        object.__setattr__(self, "dense", np.ascontiguousarray(d))
        fsal = bool(s > 1 and c[-1] == 1.0 and np.array_equal(a[-1, :-1], b[:-1]) and b[-1] == 0.0)
        object.__setattr__(self, "fsal", fsal)

    @property
    def n_stages(self):
        return self.b.size

    @property
    def adaptive(self):
        return self.b_error is not None

    def dense_weights(self, theta):
        """Return ``b_i(theta)`` for all stages (theta in [0, 1])."""
        powers = theta ** np.arange(1, self.dense.shape[1] + 1)
        return self.dense @ powers


def _poly_to_dense(polys):
    """Turn a list of numpy poly1d (in theta, zero constant term) into the (s, d) power-basis array."""
    deg = max(p.order for p in polys)
    out = np.zeros((len(polys), deg))
    for i, p in enumerate(polys):
        coeffs = p.coeffs[::-1]  # ascending powers
        if abs(coeffs[0]) > 1e-15:
            raise ValueError("dense-output polynomial with a constant term")
        out[i, : len(coeffs) - 1] = coeffs[1:]
    return out


EULER = ButcherTableau("euler", a=[[0.0]], b=[1.0], c=[0.0], b_error=None, dense=[[1.0]], order=1)

MIDPOINT = ButcherTableau(
    "midpoint",
    a=[[0.0, 0.0], [0.5, 0.0]],
    b=[0.0, 1.0],
    c=[0.0, 0.5],
    b_error=None,
    dense=[[1.0, -1.0], [0.0, 1.0]],  # b1 = th - th^2, b2 = th^2
    order=2,
)

RK4 = ButcherTableau(
    "rk4",
    a=[[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1.0, 0]],
    b=[1 / 6, 1 / 3, 1 / 3, 1 / 6],
    c=[0, 0.5, 0.5, 1.0],
    b_error=None,
    # Classical third-order continuous extension of RK4.
    dense=[[1.0, -1.5, 2 / 3], [0.0, 1.0, -2 / 3], [0.0, 1.0, -2 / 3], [0.0, -0.5, 2 / 3]],
    order=4,
)

BOSH3 = ButcherTableau(
    "bosh3",
    a=[[0, 0, 0, 0], [1 / 2, 0, 0, 0], [0, 3 / 4, 0, 0], [2 / 9, 1 / 3, 4 / 9, 0]],
    b=[2 / 9, 1 / 3, 4 / 9, 0.0],
    c=[0, 1 / 2, 3 / 4, 1.0],
    b_error=[-5 / 72, 1 / 12, 1 / 9, -1 / 8],
    # Cubic Hermite interpolation written on the stages (Bogacki & Shampine 1989; SciPy's RK23.P).
    dense=[[1, -4 / 3, 5 / 9], [0, 1, -2 / 3], [0, 4 / 3, -8 / 9], [0, -1, 1]],
    order=3,
    error_order=2,
)

DOPRI5 = ButcherTableau(
    "dopri5",
    a=[
        [0, 0, 0, 0, 0, 0, 0],
        [1 / 5, 0, 0, 0, 0, 0, 0],
        [3 / 40, 9 / 40, 0, 0, 0, 0, 0],
        [44 / 45, -56 / 15, 32 / 9, 0, 0, 0, 0],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0, 0],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0, 0],
        [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0],
    ],
    b=[35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0],
    c=[0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1],
    b_error=[71 / 57600, 0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40],
    # Shampine's (1986) fourth-order continuous extension, as in Hairer's DOPRI5 and SciPy's RK45.P.
    dense=[
        [1, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
        [0, 0, 0, 0],
        [0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
        [0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
        [0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632],
        [0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
        [0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
    ],
    order=5,
    error_order=4,
)


def _tsit5():
    # Tsitouras (2011), "Runge-Kutta pairs of order 5(4) satisfying only the first column simplifying
    # assumption", Comput. Math. Appl. 62(2), 770-775. Coefficients to double precision.
    c2, c3, c4, c5 = 0.161, 0.327, 0.9, 0.9800255409045096857298102862870245954942137979563
    a = np.zeros((7, 7))
    a[1, 0] = 0.161
    a[2, :2] = [-0.008480655492356988544426874250230774675121177393430, 0.3354806554923569885444268742502307746751211773934]
    a[3, :3] = [2.897153057105493432130432594192938764924887287701866, -6.359448489975074843148159912383825625952700647415627, 4.362295432869581411017727318190886861027813359713760]
    a[4, :4] = [5.325864828439256604428877920840511317836476253097040, -11.74888356406282787774717033978577296188744178259863, 7.495539342889836208304604784564358155658679161518187, -0.09249506636175524925650207933207191611349983406029535]
    a[5, :5] = [5.861455442946420028659251486982647890394337666164814, -12.92096931784710929170611868178335939541780751955743, 8.159367898576158643180400794539253485181918321135053, -0.07158497328140099722453054252582973869127213147363545, -0.02826905039406838290900305721271224146717633626879770]
    b = np.array([0.09646076681806522951816731316512876333711995238157997, 0.01, 0.4798896504144995747752495322905965199130404621990332, 1.379008574103741893192274821856872770756462643091361, -3.290069515436080679901047585711363850115683290894936, 2.324710524099773982415355918398765796109060233222962, 0.0])
    a[6, :6] = b[:6]
    b_hat = np.array([0.09468075576583945807478876255758922856117527357724631, 0.009183565540343253096776363936645313759813746240984095, 0.4877705284247615707855642599631228241516691959761364, 1.234297566930478985655109673884237654035539930748193, -2.707712349983525454881109975059321670689605166938197, 1.866628418170587035753719399566211498666255505244123, 1 / 66])
    # The error weights b - b_hat; the last entry is -1/66 (the sign in the paper's table is a misprint).
    b_error = b - b_hat
    # Make sum(b_error) == 0 hold exactly in floating point (the error is ~1e-17).
    b_error[-1] -= b_error.sum()
    # Continuous extension (the paper's b_i(theta), in factored form).
    P = np.poly1d
    th = P([1, 0])
    polys = [
        -1.0530884977290216 * th * (th - 1.3299890189751412) * (th * th - 1.4364028541716351 * th + 0.7139816917074209),
        0.1017 * th * th * (th * th - 2.1966568338249754 * th + 1.2949852507374631),
        2.490627285651252793 * th * th * (th * th - 2.38535645472061657 * th + 1.57803468208092486),
        -16.54810288924490272 * (th - 1.21712927295533244) * (th - 0.61620406037800089) * th * th,
        47.37952196281928122 * (th - 1.203071208372362603) * (th - 0.658047292653547382) * th * th,
        -34.87065786149660974 * (th - 1.2) * (th - 2 / 3) * th * th,
        2.5 * (th - 1) * (th - 0.6) * th * th,
    ]
    dense = _poly_to_dense(polys)
    # The published factored polynomials reproduce b at theta = 1 to ~1e-16; snap the linear term so the
    # continuous extension is exactly consistent with the step.
    dense[:, 0] += b - dense.sum(axis=1)
    return ButcherTableau("tsit5", a=a, b=b, c=[0, c2, c3, c4, c5, 1.0, 1.0], b_error=b_error, dense=dense,
                          order=5, error_order=4)


TSIT5 = _tsit5()
