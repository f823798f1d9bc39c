"""Fuzzing symode end to end: random models, hostile names, random inputs (run in a subprocess).

Usage: python -m tests.fuzz_models N_MODELS [PROFILE]. Prints one JSON line with the counts. A crash
(segfault, abort) shows as a non-zero exit code of the subprocess; an invariant violation raises.
"""
import json
import sys
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symode
from symode.testing import arrays, odes

COUNTS = dict(models=0, evaluations=0, solves=0, solves_failed_cleanly=0, gradients=0, gradients_failed_cleanly=0)


def _check_solution(sol):
    if sol.success:
        assert np.all(np.isfinite(sol.z)), "success with a non-finite state"
    else:
        assert sol.status != 0 and sol.message


def fuzz_once(model, data):
    COUNTS["models"] += 1
    n, p = model.n_states, model.n_params
    scale = data.draw(st.sampled_from([1.0, 10.0, 1e3]))
    z0 = data.draw(arrays(n, -scale, scale))
    theta = data.draw(arrays(p, -scale, scale))
    t1 = data.draw(st.sampled_from([0.5, 3.0, 20.0]))
    f = model.f(z0, theta, 0.1)
    assert f.shape == (n,)
    model.jac_z(z0, theta, 0.1)
    model.jac_theta(z0, theta, 0.1)
    COUNTS["evaluations"] += 3
    method = data.draw(st.sampled_from(["dopri5", "tsit5", "bosh3", "rk4"]))
    ts = np.linspace(0.0, t1, 4)
    kw = dict(method=method, rtol=1e-6, atol=1e-8, dt=t1 / 50, max_steps=20000, throw=False, time_limit=20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sol = model.solve(z0, theta, ts, **kw)
        COUNTS["solves"] += 1
        _check_solution(sol)
        if not sol.success:
            COUNTS["solves_failed_cleanly"] += 1
            return
        cot = data.draw(st.lists(st.floats(-1, 1), min_size=4 * n, max_size=4 * n)).copy()
        cot = np.array(cot).reshape(4, n)
        adjoint = data.draw(st.sampled_from(list(symode.ADJOINTS)))
        try:
            g = model.vjp(z0, theta, ts, cot, adjoint=adjoint, **kw)
        except symode.IntegrationError:
            COUNTS["gradients_failed_cleanly"] += 1
            return
        COUNTS["gradients"] += 1
        if g.solution is not None and g.solution.success and "status" not in g.stats:
            assert np.all(np.isfinite(g.z0)) and np.all(np.isfinite(g.theta)), "finite solve, NaN gradient"
        else:
            COUNTS["gradients_failed_cleanly"] += 1


def main(n_models, profile="ci"):
    derandomize = profile == "ci"

    @settings(max_examples=n_models, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    @given(model=odes(max_states=3, max_params=3, stable=False), data=st.data())
    def prop(model, data):
        fuzz_once(model, data)

    prop()
    print(json.dumps(COUNTS))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "ci")
