"""Reliability of the compiled loops (issue 20): wall-clock limits, Ctrl-C, batches, fork, tiny fixed steps.

Crashes and hangs run in a subprocess with a timeout: a failure is a non-zero exit code or a timeout, never a
crashed test session.
"""
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import symode
from symode import _status as S

ROOT = pathlib.Path(__file__).resolve().parents[1]
x, y = sp.symbols("x y")

HEAD = textwrap.dedent("""
    import os, signal, sys, threading, time
    import numpy as np, sympy as sp, symode
    from symode import _status as S
    x, y = sp.symbols("x y")
    osc = symode.ODE([y, -x], [x, y])
""")


def run_py(code, timeout=300, stack_kb=None):
    """Run `code` (after HEAD) in a fresh interpreter in the repository root; (returncode, stdout, stderr)."""
    src = HEAD + textwrap.dedent(code)
    if stack_kb is None:
        cmd = [sys.executable, "-c", src]
    else:
        cmd = ["bash", "-c", f'ulimit -s {int(stack_kb)} && exec "$0" -c "$1"', sys.executable, src]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def osc():
    return symode.ODE([y, -x], [x, y])


# ------------------------------------------------------------------------------------------ 1. time_limit stack


def test_time_limit_does_not_grow_the_stack():
    """The clock intrinsic allocated its buffers in the loop body: every check grew the stack, and a solve with
    a time limit died with SIGSEGV after a few seconds (here, with a 1 MiB stack, after a fraction of one)."""
    rc, out, err = run_py("""
        for method, kw in (("rk4", dict(dt=1e-5)), ("dopri5", dict(rtol=1e-13, atol=1e-13)),
                           ("rodas5", dict(rtol=1e-13, atol=1e-13))):
            t0 = time.monotonic()
            s = osc.solve([1., 0.], [], [0., 1e7], method=method, max_steps=10**12, time_limit=1.5, throw=False,
                          **kw)
            assert s.status == S.TIME_LIMIT, (method, s.status)
            print(method, round(time.monotonic() - t0, 2), flush=True)
        print("OK")
    """, timeout=300, stack_kb=1024)
    assert rc == 0 and "OK" in out, (rc, out, err[-2000:])


# ------------------------------------------------------------------------------------------ 2/3. Ctrl-C


def test_sigint_interrupts_a_running_compiled_solve():
    """Ctrl-C during a long compiled solve (plain, stiff, batched) raises KeyboardInterrupt promptly, not at the
    end of the solve."""
    rc, out, err = run_py("""
        Z = np.tile([1., 0.], (4, 1))
        cases = (("rk4", [1., 0.], dict(dt=1e-6)), ("dopri5", [1., 0.], dict(rtol=1e-13, atol=1e-13)),
                 ("rodas5", [1., 0.], dict(rtol=1e-13, atol=1e-13)), ("batch rk4", Z, dict(dt=1e-6)))
        for name, z0, kw in cases:
            meth = name.split()[-1]
            osc.solve(z0, [], [0., 0.01], method=meth, **kw)          # compiled and loaded before the clock starts
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            t0 = time.monotonic()
            try:
                osc.solve(z0, [], [0., 1e7], method=meth, max_steps=10**13, **kw)   # hours without Ctrl-C
                print(name, "NOT INTERRUPTED")
            except KeyboardInterrupt:
                dt = time.monotonic() - t0
                print(name, "interrupted after", round(dt, 2), flush=True)
                assert dt < 5.0, (name, dt)
        # the count is per call: a later solve is not stopped by the old Ctrl-C
        s = osc.solve([1., 0.], [], [0., 10.], method="rk4", dt=1e-3)
        assert s.status == S.SUCCESS
        print("OK")
    """, timeout=300)
    assert rc == 0 and "OK" in out and "NOT INTERRUPTED" not in out, (rc, out, err[-2000:])


def test_sigint_status_without_a_raising_handler():
    """With a Python SIGINT handler that does not raise, the compiled loop still stops, with status
    INTERRUPTED (the handler runs; the solve reports why it stopped)."""
    rc, out, err = run_py("""
        from symode._numeric import interrupt
        got = []
        signal.signal(signal.SIGINT, lambda *a: got.append(1))
        print("installed", interrupt.install())   # signal.signal put CPython's C handler back: chain again
        osc.solve([1., 0.], [], [0., 0.01], method="rk4", dt=1e-6)
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        s = osc.solve([1., 0.], [], [0., 1e7], method="rk4", dt=1e-6, max_steps=10**13, throw=False)
        time.sleep(0.01)
        assert s.status == S.INTERRUPTED and got == [1], (s.status, got)
        assert time.monotonic() - t0 < 5.0
        assert "interrupted" in s.message
        print("OK")
    """, timeout=300)
    assert rc == 0 and "OK" in out, (rc, out, err[-2000:])


@pytest.mark.parametrize("optimizer", ["adam", "gradient_flow"])
def test_sigint_during_fit_returns_the_best_parameters(optimizer):
    """Ctrl-C at random moments of a fit (mostly inside compiled gradient calls) ends every time with the
    best parameters so far (stop_reason "interrupted"), never a SystemError or a crash."""
    rc, out, err = run_py(f"""
        a, b, c, d = sp.symbols("alpha beta gamma delta")
        lv = symode.ODE([a * x - b * x * y, d * x * y - c * y], [x, y], [a, b, c, d])
        ts = np.linspace(0.0, 60.0, 301)
        th = np.array([1.5, 1.0, 3.0, 1.0])
        Y = lv.solve([1.0, 1.0], th, ts, rtol=1e-10, atol=1e-10).z
        kw = dict(z0=[1.0, 1.0], theta0=th * 0.9, optimizer="{optimizer}", iterations=10**6, progress=False,
                  rtol=1e-11, atol=1e-11)
        if "{optimizer}" == "adam":
            kw["lr"] = 1e-3
        symode.fit(lv, (ts, Y), **dict(kw, iterations=2))
        rng = np.random.default_rng(0)
        for k in range(8):
            threading.Timer(float(rng.uniform(0.2, 0.6)), os.kill, (os.getpid(), signal.SIGINT)).start()
            res = symode.fit(lv, (ts, Y), **kw)
            assert res.stop_reason == "interrupted", res.stop_reason
            assert np.all(np.isfinite(res.theta)), res.theta
            print(k, res.iterations, flush=True)
        print("OK")
    """, timeout=400)
    assert rc == 0 and "OK" in out, (rc, out, err[-3000:])


# ------------------------------------------------------------------------------------------ 4. batched time_limit


def test_batched_solve_honours_time_limit(osc):
    import time

    Z = np.tile([1.0, 0.0], (6, 1))
    osc.solve(Z, [], [0.0, 1.0], method="rk4", dt=1e-3)
    t0 = time.monotonic()
    s = osc.solve(Z, [], [0.0, 1e7], method="rk4", dt=1e-5, max_steps=10**13, time_limit=0.5, throw=False)
    el = time.monotonic() - t0
    assert el < 5.0, el
    assert np.all(s.statuses == S.TIME_LIMIT), s.statuses
    # rows not reached are NaN, the first is z0
    assert np.all(np.isnan(s.z[:, -1])) and np.all(s.z[:, 0] == Z)


def test_batched_gradient_honours_time_limit(osc):
    from symode._numeric import batch
    from symode._numeric.methods import get

    meth = get("rk4")
    a, b, be, c, dense, fsal, eo = meth.packed()
    B, n, m = 3, 2, 2
    ts = np.array([0.0, 100.0])   # 1e5 steps: SUCCESS in well under a second without the limit
    Z = np.tile([1.0, 0.0], (B, 1))
    T = np.zeros((1, 0))
    ctrl = np.array([0.9, 0.2, 10.0, 0.0, 1e-9])   # spent before any member starts
    out = np.empty((B, m, n))
    gz, gp, gt = np.empty((B, n)), np.empty((B, 0)), np.empty((B, m))
    status = np.empty(B, dtype=np.int64)
    stats = np.zeros((B, 8), dtype=np.int64)
    cots = np.zeros((B, m, n))
    cots[:, -1, 0] = 1.0
    batch.batch_vjp_discrete(osc.compiled.kern, n, 0, T, ts, Z, cots, np.zeros(0, dtype=np.int64),
                             np.zeros((1, 1, 1)), np.zeros(0, dtype=np.int64), np.empty(B), a, b, be, c, dense, fsal,
                             eo, False, np.full(n, 1e-6), np.full(n, 1e-6), 0.0, 0.0, 1e-3, 10**13, ctrl, out, gz,
                             gp, gt, status, stats, 1 << 16, False)
    assert np.all(status == S.TIME_LIMIT), status
    assert np.all(np.isnan(gz))


# ------------------------------------------------------------------------------------------ 5. fork


def test_fork_after_a_batch_solve_does_not_hang():
    rc, out, err = run_py("""
        import multiprocessing as mp
        Z = np.tile([1., 0.], (16, 1))
        s = osc.solve(Z, [], np.linspace(0., 1., 5), method="dopri5")     # a parallel region has run
        import numba
        print("layer", numba.threading_layer(), flush=True)

        def work(i):
            s = osc.solve(Z * (1 + i), [], np.linspace(0., 1., 5), method="dopri5")   # parallel in the child too
            return float(s.z[0, -1, 0])

        with mp.get_context("fork").Pool(2) as pool:
            r = pool.map(work, range(4))
        assert np.allclose(r, [np.cos(1.0) * (1 + i) for i in range(4)], rtol=1e-5), r
        print("OK")
    """, timeout=240)
    assert rc == 0 and "OK" in out, (rc, out, err[-2000:])


def test_concurrent_batches_from_threads(osc):
    """Batches launched from several Python threads at once (concurrent under the OpenMP layer, serialised under
    ``workqueue``, where Numba would terminate the process on two parallel launches at once) equal the
    sequential ones."""
    import threading

    Z = np.tile([1.0, 0.0], (32, 1)) * np.linspace(1, 2, 32)[:, None]
    ts = np.linspace(0.0, 5.0, 11)
    ref = osc.solve(Z, [], ts, method="dopri5").z
    outs = [None] * 4

    def go(i):
        outs[i] = osc.solve(Z, [], ts, method="dopri5").z

    th = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    for o in outs:
        assert np.array_equal(o, ref)


# ------------------------------------------------------------------------------------------ 6. tiny fixed dt


@pytest.mark.parametrize("dt", [1e-20, 1e-300, 5e-324])
@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_tiny_fixed_step_is_max_steps_not_one_step(osc, method, dt):
    s = osc.solve([1.0, 0.0], [], [0.0, 1.0, 2.0], method=method, dt=dt, throw=False)
    assert s.status == S.MAX_STEPS, (s.status, s.stats)
    assert s.stats["nsteps"] == 0
    with pytest.raises(symode.IntegrationError, match="MAX_STEPS"):
        osc.solve([1.0, 0.0], [], [0.0, 1.0], method=method, dt=dt)


def test_fixed_step_count_beyond_max_steps_stops_at_max_steps(osc):
    s = osc.solve([1.0, 0.0], [], [0.0, 1.0], method="rk4", dt=1e-9, max_steps=1000, throw=False)
    assert s.status == S.MAX_STEPS and s.stats["nsteps"] == 1000
    assert s.t_reached == pytest.approx(1e-6, rel=1e-6)


# ------------------------------------------------------------------------------------------ methods.register


def test_register_an_explicit_tableau_and_solve_with_it(osc):
    from symode._numeric import methods, tableau

    ralston = tableau.ButcherTableau("test_ralston", a=[[0, 0], [2 / 3, 0]], b=[0.25, 0.75], c=[0, 2 / 3],
                                     b_error=None, dense=[[1.0, -0.75], [0.0, 0.75]], order=2)
    heun_euler = tableau.ButcherTableau("test_heun_euler", a=[[0, 0], [1.0, 0]], b=[0.5, 0.5], c=[0, 1.0],
                                        b_error=[-0.5, 0.5], dense=[[1.0, -0.5], [0.0, 0.5]], order=2, error_order=1)
    try:
        m = methods.register(ralston)
        assert m.fixed and m.order == 2 and methods.get("test_ralston") is m
        with pytest.raises(symode.InputValidationError, match="already registered"):
            methods.register(ralston)
        errs = []
        for dt in (0.1, 0.05, 0.025, 0.0125):
            s = osc.solve([1.0, 0.0], [], [0.0, 1.0], method="test_ralston", dt=dt)
            errs.append(abs(s.z[-1, 0] - np.cos(1.0)))
        rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
        assert np.all(np.abs(rates - 2.0) < 0.1), rates          # second order
        ma = methods.register(heun_euler)
        assert not ma.fixed
        s = osc.solve([1.0, 0.0], [], np.linspace(0.0, 2.0, 5), method="test_heun_euler", rtol=1e-7, atol=1e-9)
        assert s.success and np.max(np.abs(s.z[:, 0] - np.cos(s.t))) < 1e-4
        assert s.stats["nrejected"] >= 0 and s.stats["naccepted"] > 10
        assert "test_ralston" in symode.METHODS   # the public tuple follows the registry
    finally:
        methods.METHODS.pop("test_ralston", None)
        methods.METHODS.pop("test_heun_euler", None)


def test_register_refuses_what_the_loops_cannot_run():
    from symode._numeric import methods

    with pytest.raises(symode.InputValidationError, match="explicit"):
        methods.register(methods.METHODS["rodas5"].__class__("test_ros", "rosenbrock", methods.METHODS["rodas5"].tableau,
                                                             False, 5))
    with pytest.raises(symode.InputValidationError):
        methods.register("not a tableau")
