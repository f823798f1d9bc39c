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
        Order of the propagated solution and of the embedded estimate (0 when there is none); the step-size
        controller's exponent is ``1 / (error_order + 1)``.
    b_error_low : ndarray, shape (s,) or None
        A second, lower-order error estimate (``b - b_hat_low``). When given, the error norm is Hairer's
        DOP853 combination of the two: with e = b_error.K / sc and e_low = b_error_low.K / sc summed over
        the n components, ``err = |h| ||e||^2 / sqrt(n (||e||^2 + 0.01 ||e_low||^2))``, which behaves like an
        estimate of order ``error_order``.
    embedded_orders : tuple of int
        Orders of the embedded solutions ``b - b_error`` (and ``b - b_error_low``) where they differ from
        ``error_order`` (DOP853: (5, 3)); empty: ``(error_order,)``.

    Stages past the FSAL stage (the stage at c = 1 whose row of ``a`` is ``b``) are *dense-output stages*:
    they have zero weights in ``b`` and in the error estimates, a step never computes them, and the
    continuous extension uses them (DOP853's three extra stages); ``n_step_stages`` counts the others.
    """

    name: str
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    b_error: np.ndarray | None
    dense: np.ndarray
    order: int
    error_order: int = 0
    b_error_low: np.ndarray | None = None
    embedded_orders: tuple = ()
    fsal: bool = field(init=False)
    n_step_stages: int = field(init=False)

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
        if self.b_error_low is not None:
            e = np.asarray(self.b_error_low, dtype=np.float64)
            if self.b_error is None or e.shape != (s,) or abs(e.sum()) > 1e-14:
                raise ValueError(f"{self.name}: b_error_low needs b_error, shape ({s},) and a zero sum")
            object.__setattr__(self, "b_error_low", e)
        n_step = step_stages(a, b, c)
        fsal = n_step > 0
        if not fsal:
            n_step = s
        for name, w in (("b", b), ("b_error", self.b_error), ("b_error_low", self.b_error_low)):
            if w is not None and np.any(w[n_step:] != 0.0):
                raise ValueError(f"{self.name}: the dense-output stages past the FSAL stage must have zero {name}")
        object.__setattr__(self, "fsal", fsal)
        object.__setattr__(self, "n_step_stages", n_step)

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


def step_stages(a, b, c):
    """The FSAL rule shared with the compiled loops (``rk.step_stages``): with L the last stage of nonzero
    weight b, stage L + 1 is the FSAL stage when c = 1 there and its row of ``a`` is ``b``; return the number of
    stages of a step (L + 2; the stages after it only serve the dense output), or 0 when there is no FSAL stage."""
    s = b.size
    last = s - 1
    while last >= 0 and b[last] == 0.0:
        last -= 1
    i = last + 1
    if s < 2 or i >= s or i < 1 or c[i] != 1.0 or not np.array_equal(a[i, :i], b[:i]):
        return 0
    return i + 1


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


def _dop853():
    # Dormand & Prince's 8(5,3) pair with Hairer's 7th-order continuous extension: E. Hairer, S. P. Norsett and
    # G. Wanner, "Solving Ordinary Differential Equations I: Nonstiff Problems", 2nd ed., Sec. II.5 and II.10;
    # coefficients as in E. Hairer's Fortran code dop853.f (also SciPy's integrate/_ivp/dop853_coefficients.py).
    # Stages 0-11 are the method's, stage 12 = f(t + h, y_new) (FSAL; Hairer's k4 of the next step) and stages
    # 13-15 serve only the dense output (computed for steps with an output inside them).
    S = 16
    c = np.array([0.0, 0.526001519587677318785587544488e-01, 0.789002279381515978178381316732e-01,
                  0.118350341907227396726757197510, 0.281649658092772603273242802490,
                  0.333333333333333333333333333333, 0.25, 0.307692307692307692307692307692,
                  0.651282051282051282051282051282, 0.6, 0.857142857142857142857142857142, 1.0, 1.0,
                  0.1, 0.2, 0.777777777777777777777777777778])
    rows = {
        1: {0: 5.26001519587677318785587544488e-2},
        2: {0: 1.97250569845378994544595329183e-2, 1: 5.91751709536136983633785987549e-2},
        3: {0: 2.95875854768068491816892993775e-2, 2: 8.87627564304205475450678981324e-2},
        4: {0: 2.41365134159266685502369798665e-1, 2: -8.84549479328286085344864962717e-1,
            3: 9.24834003261792003115737966543e-1},
        5: {0: 3.7037037037037037037037037037e-2, 3: 1.70828608729473871279604482173e-1,
            4: 1.25467687566822425016691814123e-1},
        6: {0: 3.7109375e-2, 3: 1.70252211019544039314978060272e-1, 4: 6.02165389804559606850219397283e-2,
            5: -1.7578125e-2},
        7: {0: 3.70920001185047927108779319836e-2, 3: 1.70383925712239993810214054705e-1,
            4: 1.07262030446373284651809199168e-1, 5: -1.53194377486244017527936158236e-2,
            6: 8.27378916381402288758473766002e-3},
        8: {0: 6.24110958716075717114429577812e-1, 3: -3.36089262944694129406857109825,
            4: -8.68219346841726006818189891453e-1, 5: 2.75920996994467083049415600797e1,
            6: 2.01540675504778934086186788979e1, 7: -4.34898841810699588477366255144e1},
        9: {0: 4.77662536438264365890433908527e-1, 3: -2.48811461997166764192642586468,
            4: -5.90290826836842996371446475743e-1, 5: 2.12300514481811942347288949897e1,
            6: 1.52792336328824235832596922938e1, 7: -3.32882109689848629194453265587e1,
            8: -2.03312017085086261358222928593e-2},
        10: {0: -9.3714243008598732571704021658e-1, 3: 5.18637242884406370830023853209,
             4: 1.09143734899672957818500254654, 5: -8.14978701074692612513997267357,
             6: -1.85200656599969598641566180701e1, 7: 2.27394870993505042818970056734e1,
             8: 2.49360555267965238987089396762, 9: -3.0467644718982195003823669022},
        11: {0: 2.27331014751653820792359768449, 3: -1.05344954667372501984066689879e1,
             4: -2.00087205822486249909675718444, 5: -1.79589318631187989172765950534e1,
             6: 2.79488845294199600508499808837e1, 7: -2.85899827713502369474065508674,
             8: -8.87285693353062954433549289258, 9: 1.23605671757943030647266201528e1,
             10: 6.43392746015763530355970484046e-1},
        # row 12 = b (the FSAL stage)
        12: {0: 5.42937341165687622380535766363e-2, 5: 4.45031289275240888144113950566,
             6: 1.89151789931450038304281599044, 7: -5.8012039600105847814672114227,
             8: 3.1116436695781989440891606237e-1, 9: -1.52160949662516078556178806805e-1,
             10: 2.01365400804030348374776537501e-1, 11: 4.47106157277725905176885569043e-2},
        13: {0: 5.61675022830479523392909219681e-2, 6: 2.53500210216624811088794765333e-1,
             7: -2.46239037470802489917441475441e-1, 8: -1.24191423263816360469010140626e-1,
             9: 1.5329179827876569731206322685e-1, 10: 8.20105229563468988491666602057e-3,
             11: 7.56789766054569976138603589584e-3, 12: -8.298e-3},
        14: {0: 3.18346481635021405060768473261e-2, 5: 2.83009096723667755288322961402e-2,
             6: 5.35419883074385676223797384372e-2, 7: -5.49237485713909884646569340306e-2,
             10: -1.08347328697249322858509316994e-4, 11: 3.82571090835658412954920192323e-4,
             12: -3.40465008687404560802977114492e-4, 13: 1.41312443674632500278074618366e-1},
        15: {0: -4.28896301583791923408573538692e-1, 5: -4.69762141536116384314449447206,
             6: 7.68342119606259904184240953878, 7: 4.06898981839711007970213554331,
             8: 3.56727187455281109270669543021e-1, 12: -1.39902416515901462129418009734e-3,
             13: 2.9475147891527723389556272149, 14: -9.15095847217987001081870187138},
    }
    a = np.zeros((S, S))
    for i, row in rows.items():
        for j, v in row.items():
            a[i, j] = v
    b = np.zeros(S)
    b[:12] = a[12, :12]
    # 5th-order estimate (Hairer's er1..er12) and 3rd-order one (b minus bhh1, bhh2, bhh3 on stages 0, 8, 11)
    e5 = np.zeros(S)
    e5[[0, 5, 6, 7, 8, 9, 10, 11]] = [0.1312004499419488073250102996e-1, -0.1225156446376204440720569753e+1,
                                      -0.4957589496572501915214079952, 0.1664377182454986536961530415e+1,
                                      -0.3503288487499736816886487290, 0.3341791187130174790297318841,
                                      0.8192320648511571246570742613e-1, -0.2235530786388629525884427845e-1]
    e3 = b.copy()
    e3[0] -= 0.244094488188976377952755905512
    e3[8] -= 0.733846688281611857341361741547
    e3[11] -= 0.220588235294117647058823529412e-1
    # Dense output (Hairer's contd8): with dy = y_new - y0 = h b.K,
    #   y(t0 + x h) = y0 + x (F0 + (1-x) (F1 + x (F2 + (1-x) (F3 + x (F4 + (1-x) (F5 + x F6))))))
    #   F0 = dy, F1 = h K0 - dy, F2 = 2 dy - h (K12 + K0), F3..F6 = h D.K;
    # rewritten exactly (in rationals, then rounded once) as y0 + h sum_i b_i(x) K_i over all 16 stages.
    D = np.zeros((4, S))
    D[0, [0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]] = [
        -0.84289382761090128651353491142e+1, 0.56671495351937776962531783590, -0.30689499459498916912797304727e+1,
        0.23846676565120698287728149680e+1, 0.21170345824450282767155149946e+1, -0.87139158377797299206789907490,
        0.22404374302607882758541771650e+1, 0.63157877876946881815570249290, -0.88990336451333310820698117400e-1,
        0.18148505520854727256656404962e+2, -0.91946323924783554000451984436e+1,
        -0.44360363875948939664310572000e+1]
    D[1, [0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]] = [
        0.10427508642579134603413151009e+2, 0.24228349177525818288430175319e+3, 0.16520045171727028198505394887e+3,
        -0.37454675472269020279518312152e+3, -0.22113666853125306036270938578e+2, 0.77334326684722638389603898808e+1,
        -0.30674084731089398182061213626e+2, -0.93321305264302278729567221706e+1, 0.15697238121770843886131091075e+2,
        -0.31139403219565177677282850411e+2, -0.93529243588444783865713862664e+1,
        0.35816841486394083752465898540e+2]
    D[2, [0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]] = [
        0.19985053242002433820987653617e+2, -0.38703730874935176555105901742e+3, -0.18917813819516756882830838328e+3,
        0.52780815920542364900561016686e+3, -0.11573902539959630126141871134e+2, 0.68812326946963000169666922661e+1,
        -0.10006050966910838403183860980e+1, 0.77771377980534432092869265740, -0.27782057523535084065932004339e+1,
        -0.60196695231264120758267380846e+2, 0.84320405506677161018159903784e+2,
        0.11992291136182789328035130030e+2]
    D[3, [0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]] = [
        -0.25693933462703749003312586129e+2, -0.15418974869023643374053993627e+3, -0.23152937917604549567536039109e+3,
        0.35763911791061412378285349910e+3, 0.93405324183624310003907691704e+2, -0.37458323136451633156875139351e+2,
        0.10409964950896230045147246184e+3, 0.29840293426660503123344363579e+2, -0.43533456590011143754432175058e+2,
        0.96324553959188282948394950600e+2, -0.39177261675615439165231486172e+2,
        -0.14972683625798562581422125276e+3]
    from fractions import Fraction as Fr

    def mul(p, q):  # polynomials as ascending coefficient lists
        out = [Fr(0)] * (len(p) + len(q) - 1)
        for i, u in enumerate(p):
            for j, v in enumerate(q):
                out[i + j] += u * v
        return out

    def basis(k, l):  # x^k (1 - x)^l
        p = [Fr(0)] * k + [Fr(1)]
        for _ in range(l):
            p = mul(p, [Fr(1), Fr(-1)])
        return p

    phis = [basis(1, 0), basis(1, 1), basis(2, 1), basis(2, 2), basis(3, 2), basis(3, 3), basis(4, 3)]
    fb = [Fr(v) for v in b]
    W = [fb,
         [(1 if i == 0 else 0) - fb[i] for i in range(S)],
         [2 * fb[i] - (1 if i in (0, 12) else 0) for i in range(S)]]
    W += [[Fr(v) for v in D[r]] for r in range(4)]
    dense = np.zeros((S, 7))
    for i in range(S):
        coef = [Fr(0)] * 8
        for k, phi in enumerate(phis):
            for j, v in enumerate(phi):
                coef[j] += W[k][i] * v
        assert coef[0] == 0
        dense[i] = [float(v) for v in coef[1:]]
    return ButcherTableau("dop853", a=a, b=b, c=c, b_error=e5, dense=dense, order=8, error_order=7,
                          b_error_low=e3, embedded_orders=(5, 3))


DOP853 = _dop853()
