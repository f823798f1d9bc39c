"""Models pickled by symode 0.1 (before the engine moved under symode/_engine and the facade to symode/ode.py)
still load and solve. The two files were written by the 0.1 code: a non-autonomous Lotka-Volterra variant and a
hybrid model with an nn.mlp block (its blocks travel in the pickle)."""
import pathlib
import pickle

import numpy as np

import symode

DATA = pathlib.Path(__file__).parent / "data"


def test_lotka_volterra_pickle_of_0_1_loads_and_solves():
    m = pickle.loads((DATA / "model_v0_1_lv.pkl").read_bytes())
    assert isinstance(m, symode.ODE) and m.n_states == 2 and m.n_params == 4 and m.t is not None
    sol = m.solve([1.0, 1.0], [1.5, 1.0, 3.0, 1.0], np.linspace(0, 1, 5))
    assert sol.success and np.all(np.isfinite(sol.z))
    # the same equations as written in 0.1 (dy/dt gains exp(-t)), checked through f at a point
    assert np.allclose(m.f([1.0, 2.0], [1.5, 1.0, 3.0, 1.0], 0.5), [1.5 - 2.0, 2.0 - 6.0 + np.exp(-0.5)])


def test_hybrid_pickle_of_0_1_loads_with_its_network_block():
    m = pickle.loads((DATA / "model_v0_1_hybrid.pkl").read_bytes())
    assert m.n_states == 2 and m.n_params == 19
    theta = np.linspace(-0.5, 0.5, 19)
    g = m.vjp([0.3, -0.2], theta, np.linspace(0, 1, 4), np.ones((4, 2)))
    assert np.all(np.isfinite(g.theta)) and g.theta.shape == (19,)
    assert pickle.loads(pickle.dumps(m)).n_params == 19
