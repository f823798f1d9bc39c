"""Every shipped tableau satisfies the order conditions of its nominal order (and its embedded one)."""

import numpy as np
import pytest

from symode._numeric import tableau as tb
from symode._numeric.methods import METHODS

# Rooted trees up to order 5 as (order, gamma, phi(A, c)) with phi the elementary weight vector.


def _conditions(A, c):
    """Yield (order, elementary-weight vector Phi, 1/gamma) for all 17 trees of order <= 5."""
    Ac = A @ c
    Ac2 = A @ c ** 2
    AAc = A @ Ac
    one = np.ones_like(c)
    yield 1, one, 1.0
    yield 2, c, 1 / 2
    yield 3, c ** 2, 1 / 3
    yield 3, Ac, 1 / 6
    yield 4, c ** 3, 1 / 4
    yield 4, c * Ac, 1 / 8
    yield 4, Ac2, 1 / 12
    yield 4, AAc, 1 / 24
    yield 5, c ** 4, 1 / 5
    yield 5, c ** 2 * Ac, 1 / 10
    yield 5, c * Ac2, 1 / 15
    yield 5, c * AAc, 1 / 30
    yield 5, Ac * Ac, 1 / 20
    yield 5, A @ c ** 3, 1 / 20
    yield 5, A @ (c * Ac), 1 / 40
    yield 5, A @ Ac2, 1 / 60
    yield 5, A @ AAc, 1 / 120


def _order(A, b, c, tol=1e-12):
    order = 0
    for q in range(1, 6):
        ok = all(abs(b @ phi - g) < tol for (o, phi, g) in _conditions(A, c) if o == q)
        if not ok:
            break
        order = q
    return order


@pytest.mark.parametrize("name", list(METHODS))
def test_order_conditions(name):
    meth = METHODS[name]
    T = meth.tableau
    if meth.kind != "explicit":
        pytest.skip("not an explicit Runge-Kutta tableau")
    assert _order(T.a, T.b, T.c) == min(T.order, 5)
    if T.b_error is not None:
        # the embedded solution(s); DOP853 has two (orders 5 and 3), combined into an estimate of order 7
        orders = T.embedded_orders or (T.error_order,)
        b_hat = T.b - T.b_error
        assert _order(T.a, b_hat, T.c) == min(orders[0], 5)
        if T.b_error_low is not None:
            assert _order(T.a, T.b - T.b_error_low, T.c) == orders[1]


@pytest.mark.parametrize("name", ["dopri5", "tsit5", "bosh3", "rk4", "midpoint", "dop853"])
def test_dense_output_order(name):
    """The continuous extension b_i(theta) satisfies the order conditions of its order at every theta:
    sum_i b_i(theta) Phi_i(tree) = theta^rho / gamma(tree) (here up to order 5; dop853's order 7 is checked on
    all trees in test_dop853.py)."""
    T = METHODS[name].tableau
    dense_order = {"dopri5": 4, "tsit5": 4, "bosh3": 3, "rk4": 3, "midpoint": 2, "dop853": 5}[name]
    for th in (0.1, 0.37, 0.5, 0.9):
        bt = T.dense_weights(th)
        for o, phi, g in _conditions(T.a, T.c):
            if o <= dense_order:
                # b(theta) weights of the scaled step: sum b_i(theta) Phi = theta^o * (1/gamma)
                assert abs(bt @ phi - th ** o * g) < 1e-12, (name, o, th)


def test_tableau_checks_itself():
    with pytest.raises(ValueError, match="row 1"):
        tb.ButcherTableau("bad", a=[[0, 0], [0.4, 0]], b=[0.5, 0.5], c=[0, 0.5], b_error=None,
                          dense=[[0.5], [0.5]], order=2)
    with pytest.raises(ValueError, match="sum\\(b\\)"):
        tb.ButcherTableau("bad", a=[[0, 0], [0.5, 0]], b=[0.5, 0.6], c=[0, 0.5], b_error=None,
                          dense=[[0.5], [0.6]], order=2)


def test_fsal_detected():
    assert METHODS["dopri5"].tableau.fsal and METHODS["tsit5"].tableau.fsal and METHODS["bosh3"].tableau.fsal
    assert not METHODS["rk4"].tableau.fsal
    # stages after the FSAL stage serve only the dense output (dop853: 12 + FSAL, then 3)
    assert METHODS["dop853"].tableau.fsal and METHODS["dop853"].tableau.n_step_stages == 13
    assert all(METHODS[k].tableau.n_step_stages == METHODS[k].tableau.n_stages
               for k in ("euler", "midpoint", "rk4", "bosh3", "dopri5", "tsit5"))


def test_dense_output_stages_must_not_weigh_in_the_step():
    """Heun with an FSAL stage, plus one dense-output stage: valid; with an error weight on that stage (which a
    step never computes) it is refused."""
    a = [[0, 0, 0, 0], [1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.5, 0, 0, 0]]
    T = tb.ButcherTableau("ok", a=a, b=[0.5, 0.5, 0, 0], c=[0, 1, 1, 0.5], b_error=[0.5, -0.5, 0, 0],
                          dense=[[0.5], [0.5], [0], [0]], order=2, error_order=1)
    assert T.fsal and T.n_step_stages == 3
    with pytest.raises(ValueError, match="dense-output stages"):
        tb.ButcherTableau("bad", a=a, b=[0.5, 0.5, 0, 0], c=[0, 1, 1, 0.5], b_error=[0.1, 0, 0, -0.1],
                          dense=[[0.5], [0.5], [0], [0]], order=2, error_order=1)
