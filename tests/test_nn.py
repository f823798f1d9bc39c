"""Network blocks (symode.nn): kernels against flat SymPy networks, adjoints against finite differences,
hybrid models end to end, generated-code size, and declaration errors."""
import numpy as np

from symode._engine import explicit as _explicit
import pytest
import sympy as sp

import symode
from symode import nn
from symode.testing import HOSTILE_NAMES, check_gradients

from .helpers import central_fd

ALL = ("discrete", "checkpoint", "backsolve", "forward")


# ---------------------------------------------------------------------- flat reference, written independently


def _act(name, s):
    if name == "tanh":
        return sp.tanh(s)
    if name == "sigmoid":
        return 1 / (1 + sp.exp(-s))
    if name == "relu":
        return sp.Piecewise((s, s > 0), (0, True))
    if name == "softplus":
        return sp.log(1 + sp.exp(s))
    return s


def flat_block(block, inputs):
    """The block as plain SymPy expressions of its parameter symbols: W (row-major) then b, per layer."""
    x = list(inputs)
    params = list(block.params)
    o = 0
    for n_in, n_out, act, bias in block.spec():
        W = sp.Matrix(n_out, n_in, params[o:o + n_in * n_out])
        o += n_in * n_out
        s = W * sp.Matrix(x)
        if bias:
            s += sp.Matrix(params[o:o + n_out])
            o += n_out
        x = [_act(act, v) for v in s]
    assert o == len(params)
    return x


def flatten(rhs, blocks):
    sub = {}
    for blk in blocks:  # in creation order
        sub.update(zip(blk.outputs, flat_block(blk, [e.xreplace(sub) for e in blk.inputs])))
    return [sp.sympify(e).xreplace(sub) for e in rhs]


class FlatReference:
    """f and its derivatives from the flat expressions, evaluated with 40-digit mpmath arithmetic (the
    derivatives by central differences with step 1e-12: truncation ~1e-24, far below the 1e-13 checked)."""

    def __init__(self, model, blocks):
        import mpmath

        self.mp = mpmath
        flat = flatten(model.rhs, blocks)
        self.n, self.p = model.n_states, model.n_params
        t = model.t if model.t is not None else sp.Symbol("t_unused")
        self.fun = sp.lambdify((list(model.states) + list(model.params) + [t],), flat, "mpmath", cse=True)

    def __call__(self, z, theta, t):
        mp = self.mp
        with mp.workdps(40):
            v0 = [mp.mpf(float(u)) for u in list(z) + list(theta) + [t]]
            f = np.array([float(u) for u in self.fun(v0)])
            h = mp.mpf("1e-12")
            J = np.empty((self.n, len(v0)))
            for k in range(len(v0)):
                vp, vm = list(v0), list(v0)
                vp[k] += h
                vm[k] -= h
                J[:, k] = [float((a - b) / (2 * h)) for a, b in zip(self.fun(vp), self.fun(vm))]
        n, p = self.n, self.p
        return f, J[:, :n], J[:, n:n + p], J[:, n + p]


def assert_close(got, ref, rtol=1e-13, what=""):
    got, ref = np.asarray(got, float), np.asarray(ref, float).reshape(np.shape(got))
    scale = max(np.max(np.abs(ref)), 1.0)
    err = np.max(np.abs(got - ref)) / scale if got.size else 0.0
    assert err <= rtol, f"{what}: relative error {err:.2e}"


def check_against_flat(model, blocks, points, rtol=1e-13):
    ref = FlatReference(model, blocks)
    rng = np.random.default_rng(5)
    for z, theta, t in points:
        f, jz, jp, jt = ref(z, theta, t)
        assert_close(model.f(z, theta, t), f.ravel(), rtol, "f")
        assert_close(model.jac_z(z, theta, t), jz, rtol, "jac_z")
        assert_close(model.jac_theta(z, theta, t), jp, rtol, "jac_theta")
        assert_close(model.jac_t(z, theta, t), jt.ravel(), rtol, "jac_t")
        a = rng.normal(size=model.n_states)
        vz, vp = model.vjp_f(z, theta, t, a)
        assert_close(vz, a @ jz.reshape(model.n_states, -1), rtol, "vjp z")
        assert_close(vp, a @ jp.reshape(model.n_states, -1), rtol, "vjp theta")
        # central finite differences of the compiled f
        assert np.allclose(model.jac_z(z, theta, t), central_fd(lambda v: model.f(v, theta, t), z),
                           rtol=1e-6, atol=1e-7)
        assert np.allclose(model.jac_theta(z, theta, t), central_fd(lambda v: model.f(z, v, t), theta),
                           rtol=1e-6, atol=1e-7)
        jt_fd = central_fd(lambda v: model.f(z, theta, v[0]), np.array([t]))[:, 0]
        assert np.allclose(model.jac_t(z, theta, t), jt_fd, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- models (compiled once per session)


@pytest.fixture(scope="module")
def chain():
    """Three blocks in a chain with every activation, t and a physics parameter in the inputs."""
    x, y, k, t = sp.symbols("x y k t")
    b1 = nn.mlp([x * y, sp.sin(t) * k, y], [4, 3], activation="sigmoid", output_activation="softplus", name="b1")
    b2 = nn.dense([b1[0] + x, b1[2] * y, t], 3, activation="relu", name="b2")
    b3 = nn.mlp(b2, [3, 2], activation="tanh", output_activation="sigmoid", name="b3", bias=[True, False])
    rhs = [b3[0] * x - k * b1[1] + b2[2], b3[1] + x * y * b1[1] + t ** 2]
    params = [k] + list(b1.params) + list(b2.params) + list(b3.params)
    return symode.ODE(rhs, states=[x, y], params=params, t=t), [b1, b2, b3]


@pytest.fixture(scope="module")
def hybrid_lv():
    """Lotka-Volterra whose interaction terms are an MLP: x' = a x + N(x, y)_0, y' = -c y + N(x, y)_1."""
    x, y, a, c = sp.symbols("x y alpha gamma")
    net = nn.mlp([x, y], [8, 2], activation="tanh", name="inter")
    model = symode.ODE([a * x + net[0], -c * y + net[1]], states=[x, y], params=[a, c] + list(net.params))
    return model, net


def test_p2_layout_and_init():
    """P2's parameter order (W1 row-major, b1, W2 row-major, b2) and initialisation (seed 0, normal(0, 0.1))."""
    y0, y1 = sp.symbols("y0 y1")
    net = nn.mlp([y0 ** 3, y1 ** 3], [50, 2], activation="tanh", name="net")
    assert net.n_params == 252 and len(net.params) == 252 and len(net.outputs) == 2
    rng = np.random.default_rng(0)
    W1 = rng.normal(0, 0.1, (50, 2))
    W2 = rng.normal(0, 0.1, (2, 50))
    expect = np.concatenate([W1.ravel(), np.zeros(50), W2.ravel(), np.zeros(2)])
    assert np.array_equal(net.init(0), expect)
    assert net.params[0].name == "net.W1[0,0]" and net.params[1].name == "net.W1[0,1]"
    assert net.params[100].name == "net.b1[0]" and net.params[150].name == "net.W2[0,0]"
    assert net.params[250].name == "net.b2[0]"
    (W, b), (V, c) = net.unpack(expect)
    assert np.array_equal(W, W1) and np.array_equal(V, W2) and not b.any() and not c.any()
    u = np.array([0.3, -1.2])
    assert np.allclose(net(u, expect), W2 @ np.tanh(W1 @ u))
    for scheme in ("glorot", "he"):
        assert net.init(1, scheme=scheme).shape == (252,)


def test_p2_model_kernels():
    """P2's model: f and the VJP against NumPy (forward pass and hand-written back-propagation)."""
    y0, y1 = sp.symbols("y0 y1")
    net = nn.mlp([y0 ** 3, y1 ** 3], [50, 2], activation="tanh", name="net")
    model = symode.ODE(net.outputs, states=[y0, y1], params=net.params)
    theta = net.init(0) + np.random.default_rng(3).normal(0, 0.05, 252)
    (W1, b1), (W2, b2) = net.unpack(theta)
    z = np.array([0.8, -1.1])
    u = z ** 3
    h = np.tanh(W1 @ u + b1)
    assert_close(model.f(z, theta), W2 @ h + b2, 1e-14, "f")
    a = np.array([0.3, -0.7])
    gz, gth = model.vjp_f(z, theta, 0.0, a)
    d = (W2.T @ a) * (1 - h ** 2)
    ref_th = np.concatenate([np.outer(d, u).ravel(), d, np.outer(a, h).ravel(), a])
    assert_close(gth, ref_th, 1e-14, "vjp theta")
    assert_close(gz, (W1.T @ d) * 3 * z ** 2, 1e-14, "vjp z")
    J = model.jac_z(z, theta)
    assert_close(a @ J, gz, 1e-14, "jac_z rows")
    Jp = model.jac_theta(z, theta)
    assert_close(a @ Jp, gth, 1e-14, "jac_theta rows")


def test_chain_kernels_match_flat_expressions(chain):
    model, blocks = chain
    rng = np.random.default_rng(0)
    pts = [(rng.uniform(-1, 1, 2), rng.normal(0, 0.7, model.n_params), float(rng.uniform(0, 2))) for _ in range(3)]
    check_against_flat(model, blocks, pts)


def test_hybrid_kernels_match_flat_expressions(hybrid_lv):
    model, net = hybrid_lv
    rng = np.random.default_rng(1)
    pts = [(rng.uniform(0.2, 2, 2), np.concatenate([[1.5, 3.0], net.init(i, std=0.5)]), 0.0) for i in range(2)]
    check_against_flat(model, [net], pts)


def test_patterns_and_symbolic_jacobian(hybrid_lv):
    model, net = hybrid_lv
    c = model.compiled
    assert set(c.jac_z_pattern) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert c.jac_t_nonzero == ()
    # output 0 depends on the hidden layer, row 0 of W2 and b2[0], and on alpha -- not on gamma or W2 row 1
    cols0 = {k for i, k in c.jac_theta_pattern if i == 0}
    p_index = {s: k for k, s in enumerate(model.params)}
    assert p_index[model.params[0]] in cols0 and p_index[model.params[1]] not in cols0
    assert p_index[sp.Symbol("inter.W2[1,0]", real=True)] not in cols0
    assert p_index[sp.Symbol("inter.W2[0,7]", real=True)] in cols0
    # the symbolic Jacobian (networks expanded, for display) agrees with the compiled one
    z, th = np.array([0.7, 1.3]), np.concatenate([[1.5, 3.0], net.init(4, std=0.5)])
    subs = dict(zip(model.states, z))
    subs.update(zip(model.params, th))
    Jz = np.array(model.jac_z_expr.evalf(subs=subs).tolist(), dtype=float)
    assert_close(model.jac_z(z, th), Jz, 1e-12, "jac_z_expr")


def test_weight_sharing_relu_at_zero_and_hostile_names():
    """Two blocks built with the same name share their weights; relu'(0) = 0; names never reach the source."""
    x, y = sp.Symbol(HOSTILE_NAMES[17]), sp.Symbol(HOSTILE_NAMES[2])
    name = HOSTILE_NAMES[1] + "\nimport os"
    na = nn.dense([x], 2, activation="relu", name=name)
    nb = nn.dense([y], 2, activation="relu", name=name)
    assert na.params == nb.params and na.outputs[0] != nb.outputs[0]
    model = symode.ODE([na[0] + nb[1], na[1] * nb[0] + x], states=[x, y], params=na.params)
    src = model.source_path.read_text()
    for bad in ("import os", "__import__", "x y"):
        assert bad not in src
    theta = np.array([1.0, -2.0, 0.0, 0.0])
    check_against_flat(model, [na, nb], [(np.array([0.4, 0.3]), theta + [0, 0, 0.1, -0.2], 0.0)])
    # at x = 0 both pre-activations of the first block are exactly 0: relu' = 0 there by convention
    J = model.jac_z(np.array([0.0, 0.5]), theta)
    assert J[0, 0] == 0.0 and J[1, 0] == 1.0


@pytest.mark.parametrize("adjoint", ALL)
def test_hybrid_adjoints_agree_with_fd(hybrid_lv, adjoint):
    model, net = hybrid_lv
    theta = np.concatenate([[1.5, 3.0], net.init(2, std=0.3)])
    ts = np.linspace(0, 2, 9)
    rep = check_gradients(model, [1.0, 1.0], theta, ts, adjoints=(adjoint,))
    assert rep[adjoint]["rel_err"] < 1e-5, rep[adjoint]["rel_err"]


def test_chain_discrete_adjoint_fixed_step_exact(chain):
    """Non-autonomous chain model: rk4 discrete adjoint = derivative of the map (FD to ~1e-8)."""
    model, _ = chain
    theta = np.random.default_rng(2).normal(0, 0.5, model.n_params)
    rep = check_gradients(model, [0.3, -0.4], theta, np.linspace(0, 1, 5), adjoints=("discrete",), method="rk4",
                          dt=0.05, eps=1e-6)
    assert rep["discrete"]["rel_err"] < 1e-7


def test_hybrid_lotka_volterra_end_to_end(hybrid_lv):
    """Fit the MLP interaction terms to Lotka-Volterra data with Adam on adjoint gradients: the loss drops."""
    model, net = hybrid_lv
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("alpha beta gamma delta")
    truth = symode.ODE([a * x - b * x * y, d * x * y - c * y], states=[x, y], params=[a, b, c, d])
    ts = np.linspace(0, 1.5, 16)
    z0 = np.array([1.0, 1.0])
    data = truth.solve(z0, [1.5, 1.0, 3.0, 1.0], ts, rtol=1e-9, atol=1e-9).z
    theta = np.concatenate([[1.5, 3.0], net.init(0, std=0.1)])
    free = np.arange(2, model.n_params)  # train the network only
    m_, v_ = np.zeros(free.size), np.zeros(free.size)
    losses = []
    for it in range(1, 41):
        sol = model.solve(z0, theta, ts, rtol=1e-7, atol=1e-9)
        r = sol.z - data
        losses.append(float(np.mean(r ** 2)))
        g = model.vjp(z0, theta, ts, 2 * r / r.size, rtol=1e-7, atol=1e-9).theta[free]
        m_ = 0.9 * m_ + 0.1 * g
        v_ = 0.999 * v_ + 0.001 * g * g
        theta[free] -= 0.02 * (m_ / (1 - 0.9 ** it)) / (np.sqrt(v_ / (1 - 0.999 ** it)) + 1e-8)
    assert losses[-1] < 0.2 * losses[0], losses[::10]
    # the stiff solver and forward sensitivities use jac_z / jac_theta of the same kernels
    ref = model.solve(z0, theta, ts, rtol=1e-9, atol=1e-11).z
    stiff = model.solve(z0, theta, ts, method="rodas5", rtol=1e-8, atol=1e-10).z
    assert np.allclose(stiff, ref, rtol=1e-5, atol=1e-7)


def test_generated_code_size_is_independent_of_the_width():
    """Weights are read in loops: a 2-8-2 and a 2-64-64-2 network generate the same number of code lines
    (apart from the structural pattern constants)."""
    from symode._codegen.emit import emit_network_module
    from symode._symbolic.derivatives import derivatives
    from symode._symbolic.model import SymbolicModel

    def lines(sizes):
        y = sp.symbols("y0:2")
        net = nn.mlp(list(y), sizes, name="n")
        sym = SymbolicModel(net.outputs, list(y), list(net.params))
        src = emit_network_module(sym, derivatives(sym), "k", "v")
        body = [ln for ln in src.splitlines() if not ln.startswith(("JAC_", "_JAC_"))]
        return body, src

    small, _ = lines([8, 2])
    big, src = lines([64, 64, 2])
    assert "theta[4000]" not in src and len(src) < 120_000
    assert len(big) - len(small) < 40  # one more layer: ~two dozen lines, whatever the widths


def test_declaration_errors():
    x, y, k = sp.symbols("x y k")
    net = nn.mlp([x, y], [3, 2], name="e")
    with pytest.raises(symode.ModelError, match="not declared"):
        symode.ODE(net.outputs, states=[x, y], params=[k])
    with pytest.raises(symode.ModelError, match="contiguously"):
        symode.ODE(net.outputs, states=[x, y], params=list(net.params[:3]) + [k] + list(net.params[3:]))
    with pytest.raises(symode.ModelError, match="undeclared"):
        bad = nn.dense([x * k], 1, name="u")
        symode.ODE([bad[0], y], states=[x, y], params=bad.params)
    with pytest.raises(symode.ModelError, match="activation"):
        nn.dense([x], 2, activation="gelu")
    with pytest.raises(symode.ModelError, match="string"):
        nn.dense("x + y", 2)
    with pytest.raises(symode.ModelError, match="sizes"):
        nn.mlp([x], [3, 0])
    with pytest.raises(symode.ModelError):
        nn.mlp([x], [])
    # outputs print with the block's name and behave as real symbols in SymPy
    assert str(net[0]) == "e[0]" and net[0].is_real
    assert sp.diff(3 * net[0] * x, net[0]) == 3 * x


def test_size_guard(monkeypatch):
    """Models whose generated code would take Numba minutes are refused with ModelTooLargeError, quickly: by a
    pre-derivation estimate when clearly too large, else by the exact count of the emitted code."""
    from symode._codegen.compiled import estimate_ops
    from symode._symbolic.model import SymbolicModel

    n = 8
    z = sp.symbols(f"z0:{n}")
    W = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"W_{i}_{j}"))
    rhs = list((W * sp.Matrix(z)).applyfunc(sp.tanh) - sp.Matrix(z) / 2)
    blk = nn.dense(z, n, activation="tanh", bias=False, name="W")
    flat_est = estimate_ops(SymbolicModel(rhs, z, list(W)))
    nn_est = estimate_ops(SymbolicModel([blk[i] - z[i] / 2 for i in range(n)], z, blk.params))
    assert nn_est * 5 < flat_est  # the weights do not count for a network: its code is loops
    monkeypatch.setenv("SYMODE_MAX_GENERATED_OPS", str(flat_est // 3))
    with pytest.raises(symode.ModelTooLargeError, match=r"estimated [\d,]+ operations \(limit [\d,]+"):
        symode.ODE(rhs, states=z, params=list(W)).compiled
    monkeypatch.setenv("SYMODE_MAX_GENERATED_OPS", str(flat_est // 2 + 1))
    with pytest.raises(symode.ModelTooLargeError, match="symode.nn"):
        symode.ODE(rhs, states=z, params=list(W)).compiled


@pytest.mark.parametrize("method,kw", [("dopri5", {}), ("dop853", {}), ("tsit5", {}), ("rk4", {"dt": 0.07})])
def test_discrete_sweep_with_recorded_activations_is_exact(chain, method, kw):
    """The discrete adjoint's recording pass keeps each stage's activations (f_rec) and the sweep reuses them
    (vjp_rec) instead of redoing the blocks' forward passes: the gradient must equal the sweep that recomputes
    them with the plain vjp at the same stage points (FSAL copies, dense-only stages and the non-autonomous
    inputs of the chain model included), up to the order of the sums over stages."""
    from symode._numeric import adjoint as adj
    from symode._numeric import rk

    model, _ = chain
    theta = np.random.default_rng(4).normal(0, 0.5, model.n_params)
    ts = np.array([0.0, 0.13, 0.5, 0.61, 1.0])
    opts = model._rt.config(method, 1e-8, 1e-10, kw.get("dt"), 100000, None, None)
    fwd = _explicit.integrate(model._rt, rk.MODE_F, np.array([0.3, -0.4]), theta, ts, opts, record=3)
    assert fwd.rec_w.shape[:2] == fwd.rec_k.shape[:2] and fwd.rec_w.shape[2] == model.compiled.kern[7]
    a, b, be, c, dense, fsal, eo = opts.method.packed()
    cot = np.random.default_rng(5).normal(size=(ts.size, 2))
    out = []
    for rec_w in (fwd.rec_w, np.empty((0, 0, 0))):
        ybar, gth = np.empty(2), np.empty(model.n_params)
        adj.discrete_sweep(model.compiled.kern, 2, model.n_params, theta, fwd.rec_t, fwd.rec_h, fwd.rec_y,
                           fwd.rec_k, a, b, c, dense, fwd.out_step, fwd.out_frac, cot, ybar, gth, rec_w)
        out.append(np.concatenate([ybar, gth]))
    # vjp_rec adds each stage's a^T df/dtheta straight into the running sum, the plain sweep adds a separately
    # summed vector: the same terms, summed in another order (measured: at most 1.2e-16 of the largest entry over
    # these four methods; the bound leaves room for longer sums)
    err = np.max(np.abs(out[0] - out[1])) / np.max(np.abs(out[1]))
    assert err < 1e-14
    assert np.array_equal(out[0][:2], out[1][:2])   # dL/dz0 does not go through theta sums: bit for bit
    g = model.vjp([0.3, -0.4], theta, ts, cot, adjoint="discrete", method=method, rtol=1e-8, atol=1e-10, **kw)
    assert np.array_equal(np.concatenate([g.z0, g.theta]), np.concatenate([out[0][:2] + cot[0], out[0][2:]]))


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_fsal_sweep_equals_the_general_sweep(chain, method):
    """Tableaus whose last stage is the FSAL stage (dopri5, tsit5, bosh3) take a sweep written like a hand-coded
    one (``sweep_fsal``: the FSAL stage's cotangent joins y_{k+1}'s, its Y is the next record's start state or,
    after the last step, recomputed); every other tableau keeps the general sweep. Both must give the same
    gradient up to the order of the sums: for a network model with its recorded activations and without them,
    and for Lotka-Volterra, with outputs inside steps, at step ends and inside the last step (400 outputs)."""
    from symode._numeric import adjoint as adj
    from symode._numeric import rk
    from symode._numeric.methods import get as get_method

    from .helpers import P1_THETA, P1_Z0, lotka_volterra

    for name in ("dop853", "rk4", "euler", "midpoint"):
        a, b, be, c, dense, fsal, eo = get_method(name).packed()
        assert not adj.fsal_form(a, b, c), name
    lv = lotka_volterra()
    net, _ = chain
    cases = [(net, np.array([0.3, -0.4]), np.random.default_rng(4).normal(0, 0.5, net.n_params),
              np.array([0.0, 0.13, 0.5, 0.61, 1.0])),
             (net, np.array([0.3, -0.4]), np.random.default_rng(6).normal(0, 0.5, net.n_params),
              np.linspace(0.0, 2.0, 400)),
             (lv, P1_Z0, P1_THETA, np.linspace(0.0, 10.0, 101))]
    for model, z0, theta, ts in cases:
        n, p = model.n_states, model.n_params
        opts = model._rt.config(method, 1e-8, 1e-10, None, 100000, None, None)
        fwd = _explicit.integrate(model._rt, rk.MODE_F, z0, theta, ts, opts, record=3)
        a, b, be, c, dense, fsal, eo = opts.method.packed()
        assert adj.fsal_form(a, b, c)
        inside_last = np.sum((fwd.out_step == fwd.rec_t.size - 1) & (fwd.out_frac < 1.0))
        cot = np.random.default_rng(5).normal(size=(ts.size, n))
        recs = [fwd.rec_w, np.empty((0, 0, 0))] if fwd.rec_w.size else [fwd.rec_w]
        for rec_w in recs:
            out = []
            for sweep in (adj.sweep_fsal, adj.sweep_general):
                ybar, gth = np.empty(n), np.empty(max(p, 1))
                sweep(model.compiled.kern, n, p, theta, fwd.rec_t, fwd.rec_h, fwd.rec_y, fwd.rec_k, a, b,
                      c, dense, fwd.out_step, fwd.out_frac, cot, ybar, gth, rec_w)
                out.append(np.concatenate([ybar, gth[:p]]))
            # the same terms summed in another order: measured at most 1.4e-15 of the largest entry over these
            # cases (up to 400 outputs, a few hundred steps); the bound leaves room for longer sums, while a wrong
            # or missing stage term is of the order of the entries themselves
            err = np.max(np.abs(out[0] - out[1])) / np.max(np.abs(out[1]))
            assert err < 1e-13, (method, ts.size, err)
        if ts.size == 400:
            assert inside_last > 0   # the FSAL stage of the last step is recomputed, not read from a record
