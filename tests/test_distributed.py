"""symode.distributed on a LocalCluster of 2 worker processes: results identical to the in-process batch.

Workers inherit NUMBA_CACHE_DIR / SYMODE_CACHE_DIR from this process, and the reference runs in this process
come first (they compile and cache the batch loops), so the workers only load compiled code from disk.
"""
import logging
import os
import pickle

import numpy as np
import pytest
import sympy as sp

distributed = pytest.importorskip("distributed")

import symode  # noqa: E402
import symode.distributed as D  # noqa: E402
from symode import _status  # noqa: E402

from .helpers import P1_THETA, P1_Z0, lotka_volterra  # noqa: E402

TOL = dict(rtol=1e-6, atol=1e-6)
B = 600
CHUNK = 70  # 9 chunks, the last one short


@pytest.fixture(scope="module")
def lv():
    return lotka_volterra()


@pytest.fixture(scope="module")
def data():
    u = np.random.default_rng(0).uniform(-1, 1, (B, 4))
    TH = P1_THETA * (1 + 0.1 * u)
    Z0 = np.abs(np.random.default_rng(1).normal(1.0, 0.1, (B, 2)))
    ts = np.linspace(0.0, 10.0, 11)
    cot = np.random.default_rng(2).normal(size=(B, ts.size, 2))
    return Z0, TH, ts, cot


@pytest.fixture(scope="module")
def blow():
    x, c = sp.symbols("x c")
    return symode.ODE([c * x ** 2], states=[x], params=[c])


@pytest.fixture(scope="module")
def client(lv, blow, data):
    # warm the on-disk caches in this process first (the workers then load, never compile)
    Z0, TH, ts, cot = data
    lv.solve(Z0[:2], TH[:2], ts, **TOL)
    lv.vjp(Z0[:2], TH[:2], ts, cot[:2], **TOL)
    blow.solve([1.0], [[0.1], [2.0]], [0.0, 1.0], throw=False)
    blow.vjp([1.0], [[0.1], [2.0]], [0.0, 1.0], np.ones((2, 1)), throw=False)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.CRITICAL)
    cl = distributed.Client(cluster)
    yield cl
    cl.close()
    cluster.close()


def test_model_travels_as_sympy_data(lv):
    lv.compiled  # noqa: B018 - a compiled model still travels as its definition only
    spec = D.ModelSpec(lv)
    blob = pickle.dumps(spec)
    assert b"numba" not in blob and len(blob) < 4000
    back = pickle.loads(blob)
    assert back.key == lv._sym.key() and back.rkey == spec.rkey
    m2 = back.build(compile=False)
    assert m2._rt._compiled is None and m2._sym.key() == lv._sym.key()


def test_ensemble_identical_to_in_process(lv, data, client):
    Z0, TH, ts, _ = data
    ref = lv.solve(Z0, TH, ts, **TOL)
    sol = D.map_solve(lv, Z0, TH, ts, client=client, chunk_size=CHUNK, progress=True, **TOL)
    assert sol.chunks == 9 and sol.z.shape == (B, 11, 2)
    assert np.array_equal(sol.z, ref.z)
    assert np.array_equal(sol.statuses, ref.statuses) and np.array_equal(sol.t_reached_all, ref.t_reached_all)
    for k in ("nfev", "nsteps", "naccepted", "nrejected"):
        assert np.array_equal(sol.stats[k], ref.stats[k]), k
    assert sol.status == ref.status and sol.message == ref.message
    # shared z0, per-member theta; automatic chunking; the streaming variant covers every index once
    ref1 = lv.solve(P1_Z0, TH, [0.0, 10.0], **TOL)
    assert np.array_equal(D.map_solve(lv, P1_Z0, TH, [0.0, 10.0], client=client, **TOL).z, ref1.z)
    seen = np.zeros(B, dtype=int)
    for ch in D.iter_solve(lv, P1_Z0, TH, [0.0, 10.0], client=client, chunk_size=250, **TOL):
        assert np.array_equal(ch.z, ref1.z[ch.start:ch.stop])
        seen[ch.start:ch.stop] += 1
    assert (seen == 1).all()
    # each worker process built (or loaded) the model once and reused it for its chunks
    stats = client.run(lambda: dict(__import__("symode.distributed", fromlist=["x"]).WORKER_STATS))
    assert all(s["models_built"] <= 2 for s in stats.values())  # lv and the failing model below at most
    assert sum(s["chunks"] for s in stats.values()) >= 9 + 3


def test_dataset_gradient(lv, data, client):
    Z0, TH, ts, cot = data
    per = lv.vjp(Z0, TH, ts, cot, reduce=None, **TOL)
    g = D.map_vjp(lv, Z0, TH, ts, cot, client=client, reduce=None, chunk_size=CHUNK, **TOL)
    for a, b in ((g.z0, per.z0), (g.theta, per.theta), (g.t, per.t), (g.solution.z, per.solution.z),
                 (g.statuses, per.statuses)):
        assert np.array_equal(a, b)  # per-sample: bit for bit
    tot = lv.vjp(Z0, TH, ts, cot, reduce="sum", **TOL)
    gs = D.map_vjp(lv, Z0, TH, ts, cot, client=client, chunk_size=CHUNK, **TOL)
    # Sums: the workers add each chunk, then the chunk sums pairwise in a tree; one process adds the rows
    # in order. Same terms, different order: equal to a few ulps per addition, hence rtol 1e-12.
    for a, b in ((gs.z0, tot.z0), (gs.theta, tot.theta), (gs.t, tot.t)):
        assert a.shape == b.shape and np.allclose(a, b, rtol=1e-12, atol=0)
    assert gs.stats["n_ok"] == B and gs.stats["failed"].size == 0 and gs.stats["chunks"] == 9
    # the tree sum is reproducible for a fixed chunking
    gs2 = D.map_vjp(lv, Z0, TH, ts, cot, client=client, chunk_size=CHUNK, **TOL)
    assert np.array_equal(gs.theta, gs2.theta) and np.array_equal(gs.z0, gs2.z0)


def test_dataset_value_and_grad(lv, data, client):
    Z0, TH, ts, _ = data
    x, y = lv.states
    xd = sp.Symbol("x_obs")
    loss = symode.ObservationLoss((x - xd) ** 2 + y ** 2 / 10, [xd])
    obs = np.random.default_rng(5).normal(2.0, 0.5, (B, ts.size, 1))
    obs[:, 3, 0] = np.nan  # a missing observation
    idx = np.arange(0, B, 97)
    g = D.map_value_and_grad(lv, loss, Z0, TH, ts, data=obs, client=client, reduce=None, chunk_size=CHUNK, **TOL)
    for b in idx:
        solo = lv.value_and_grad(loss, Z0[b], TH[b], ts, data=obs[b], **TOL)
        assert g.value[b] == solo.value
        assert np.array_equal(g.theta[b], solo.theta) and np.array_equal(g.z0[b], solo.z0)
        assert np.array_equal(g.t[b], solo.t)
    gs = D.map_value_and_grad(lv, loss, Z0, TH, ts, data=obs, client=client, chunk_size=CHUNK, **TOL)
    assert np.isclose(gs.value, g.value.sum(), rtol=1e-12, atol=0)
    assert np.allclose(gs.theta, g.theta.sum(0), rtol=1e-12, atol=0)
    # a running cost (augmented model, built on the client, rebuilt on the workers from its definition)
    rc = symode.RunningCost(x * y)
    g2 = D.map_value_and_grad(lv, rc, Z0[:40], TH[:40], ts, client=client, reduce=None, chunk_size=15, **TOL)
    for b in (0, 17, 39):
        solo = lv.value_and_grad(rc, Z0[b], TH[b], ts, **TOL)
        assert g2.value[b] == solo.value and np.array_equal(g2.theta[b], solo.theta)
        assert np.array_equal(g2.z0[b], solo.z0)


def test_failing_trajectory_reported_by_global_index(blow, client):
    th = np.full((50, 1), 0.1)
    th[[7, 41]] = 2.0  # blow up before t = 1
    ref = blow.solve([1.0], th, [0.0, 1.0], throw=False)
    sol = D.map_solve(blow, [1.0], th, [0.0, 1.0], client=client, chunk_size=8, throw=False)
    assert sol.stats["failed"].tolist() == [7, 41]
    assert sol.statuses[7] in (_status.DT_MIN, _status.NONFINITE) and np.array_equal(sol.statuses, ref.statuses)
    assert np.array_equal(sol.z, ref.z, equal_nan=True) and sol.message == ref.message
    with pytest.raises(symode.IntegrationError, match=r"indices \[7, 41\]") as ei:
        D.map_solve(blow, [1.0], th, [0.0, 1.0], client=client, chunk_size=8)
    assert ei.value.solution.z.shape == (50, 2, 1)  # the whole batch came back
    cot = np.ones((2, 1))
    g = D.map_vjp(blow, [1.0], th, [0.0, 1.0], cot, client=client, chunk_size=8, throw=False)
    assert g.stats["failed"].tolist() == [7, 41] and np.isnan(g.theta).all()  # as in one process
    gk = D.map_vjp(blow, [1.0], th, [0.0, 1.0], cot, client=client, chunk_size=8, throw=False, skip_failed=True)
    per = blow.vjp([1.0], th, [0.0, 1.0], cot, throw=False)
    ok = per.statuses == 0
    assert gk.stats["n_ok"] == 48 and np.allclose(gk.theta, per.theta[ok].sum(0), rtol=1e-12, atol=0)
    with pytest.raises(symode.IntegrationError, match=r"2 of 50 trajectories failed \(indices \[7, 41\]\)"):
        D.map_vjp(blow, [1.0], th, [0.0, 1.0], cot, client=client, chunk_size=8)


def test_inputs_checked_before_sending(lv, client):
    with pytest.raises(symode.InputValidationError, match="unknown keyword"):
        D.map_solve(lv, P1_Z0, np.tile(P1_THETA, (3, 1)), [0, 1], client=client, rtoll=1e-6)
    with pytest.raises(symode.InputValidationError, match="explicit methods"):
        D.map_solve(lv, P1_Z0, np.tile(P1_THETA, (3, 1)), [0, 1], client=client, method="rodas5")
    with pytest.raises(symode.InputValidationError, match="do not broadcast"):
        D.map_solve(lv, np.ones((3, 2)), np.ones((2, 4)), [0, 1], client=client)
    with pytest.raises(symode.InputValidationError, match="reduce"):
        D.map_vjp(lv, P1_Z0, np.tile(P1_THETA, (3, 1)), [0, 1], np.ones((2, 2)), client=client, reduce="mean")
    with pytest.raises(symode.ModelError, match="undeclared"):
        D.map_value_and_grad(lv, sp.Symbol("q") ** 2, P1_Z0, np.tile(P1_THETA, (3, 1)), [0, 1], client=client)


def test_network_model_travels_with_its_blocks(client):
    nn = pytest.importorskip("symode.nn")
    y0, y1 = sp.symbols("y0 y1")
    net = nn.mlp([y0 ** 3, y1 ** 3], [6, 2], activation="tanh", name="net")
    model = symode.ODE(net.outputs, states=[y0, y1], params=net.params)
    theta = net.init(seed=0)
    Z = np.random.default_rng(0).normal(size=(30, 2))
    ts = np.linspace(0.0, 1.0, 5)
    ref = model.vjp(Z, theta, ts, np.ones((5, 2)), reduce=None, rtol=1e-7, atol=1e-9)
    g = D.map_vjp(model, Z, theta, ts, np.ones((5, 2)), client=client, reduce=None, chunk_size=8, rtol=1e-7,
                  atol=1e-9)
    assert np.array_equal(g.theta, ref.theta) and np.array_equal(g.z0, ref.z0)


def test_ode_pickles_as_definition_and_solve_takes_client(lv, data, client):
    import inspect

    if "client" not in inspect.signature(symode.ODE.solve).parameters:
        pytest.skip("ODE.solve(client=) / ODE.__reduce__ not in this tree yet")
    Z0, TH, ts, _ = data
    lv.compiled  # noqa: B018
    blob = pickle.dumps(lv)
    assert b"numba" not in blob and pickle.loads(blob)._rt._compiled is None
    ref = lv.solve(Z0[:100], TH[:100], ts, **TOL)
    sol = lv.solve(Z0[:100], TH[:100], ts, client=client, **TOL)
    assert np.array_equal(sol.z, ref.z)
    # a model can be an argument of a user's own task: it is rebuilt (from the caches) on the worker
    fut = client.submit(lambda m: m.solve(P1_Z0, TH[:3], ts, **TOL).z, lv)
    assert np.array_equal(fut.result(), lv.solve(P1_Z0, TH[:3], ts, **TOL).z)


def test_lost_worker_and_failing_chunk_do_not_lose_results(lv, data, client, tmp_path):
    """A worker process dies in its first chunk (rescheduled), another chunk raises once (retried)."""
    Z0, TH, ts, _ = data
    ref = lv.solve(Z0, TH, ts, **TOL)
    die, fail = str(tmp_path / "died"), str(tmp_path / "failed")

    def install(die, fail):
        import os as _os

        import symode.distributed as _D

        orig = getattr(_D, "_orig_solve_chunk", _D._solve_chunk)
        _D._orig_solve_chunk = orig

        def once(path):
            try:
                _os.close(_os.open(path, _os.O_CREAT | _os.O_EXCL))
                return True
            except FileExistsError:
                return False

        def flaky(spec, start, *args):
            if start > 0 and once(die):
                _os._exit(1)  # the worker process dies mid-run
            if start == 0 and once(fail):
                raise OSError("transient failure")
            return orig(spec, start, *args)

        _D._solve_chunk = flaky

    def uninstall():
        import symode.distributed as _D

        _D._solve_chunk = getattr(_D, "_orig_solve_chunk", _D._solve_chunk)

    pids = set(client.run(os.getpid).values())
    client.run(install, die, fail)
    try:
        sol = D.map_solve(lv, Z0, TH, ts, client=client, chunk_size=CHUNK, retries=2, **TOL)
    finally:
        client.run(uninstall)
    assert os.path.exists(die) and os.path.exists(fail)
    client.wait_for_workers(2, timeout=60)
    assert len(pids - set(client.run(os.getpid).values())) == 1  # one worker process was replaced
    assert np.array_equal(sol.z, ref.z) and np.array_equal(sol.statuses, ref.statuses)
