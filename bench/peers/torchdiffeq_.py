"""torchdiffeq (PyTorch, CPU, float64).

Forward: odeint(method="dopri5") under torch.no_grad().  Gradient (main row): odeint_adjoint (the continuous
"backsolve" adjoint, the Neural-ODE default; adjoint rtol/atol = forward rtol/atol); second row: odeint + autograd
through every solver operation ("backprop", a discrete adjoint).  torch.set_num_threads(1) except P6.
P3: torchdiffeq has no implicit solver; the only route is method="scipy_solver" (solve_ivp wrapper, RHS through
torch, finite-difference Jacobian) -- forward only (its odeint_adjoint backsolve fails on Robertson).
P6: all 10,000 trajectories as one (10000, 2) state in a single odeint call (shared steps, RMS error over all
components), threads=1 and all cores.

    python bench/peers/torchdiffeq_.py --problems P1,P4
"""
import time

T_START = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchdiffeq import odeint, odeint_adjoint  # noqa: E402

import bench_common as C  # noqa: E402

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
T_IMPORTED = time.perf_counter()


class LV(nn.Module):
    def __init__(self, theta):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta))

    def forward(self, t, z):
        a, b, c, d = self.theta.unbind()
        x, y = z[..., 0], z[..., 1]
        return torch.stack([a * x - b * x * y, d * x * y - c * y], dim=-1)


class LVBatch(nn.Module):
    def __init__(self, thetas):
        super().__init__()
        self.register_buffer("th", torch.tensor(thetas))

    def forward(self, t, z):
        x, y = z[:, 0], z[:, 1]
        th = self.th
        return torch.stack([th[:, 0] * x - th[:, 1] * x * y, th[:, 3] * x * y - th[:, 2] * y], dim=-1)


class Lorenz(nn.Module):
    def __init__(self, theta):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta))

    def forward(self, t, z):
        s, r, b = self.theta.unbind()
        x, y, w = z[..., 0], z[..., 1], z[..., 2]
        return torch.stack([s * (y - x), x * (r - w) - y, x * y - b * w], dim=-1)


class Robertson(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))

    def forward(self, t, y):
        k1, k2, k3 = self.k.unbind()
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        r1, r2, r3 = k1 * y1, k2 * y2 * y2, k3 * y2 * y3
        return torch.stack([-r1 + r3, r1 - r3 - r2, r2], dim=-1)


class TanhNet(nn.Module):
    def __init__(self, W):
        super().__init__()
        self.W = nn.Parameter(torch.tensor(W))

    def forward(self, t, z):
        return torch.tanh(self.W @ z) - 0.5 * z


class SpiralTrue(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("A", torch.tensor(C.P2_A))

    def forward(self, t, y):
        return torch.mm(y ** 3, self.A)


class ODEFunc(nn.Module):
    """torchdiffeq examples/ode_demo.py model with the weights of bench_common.p2_params()."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, C.P2_HIDDEN), nn.Tanh(), nn.Linear(C.P2_HIDDEN, 2))
        W1, b1, W2, b2 = C.p2_params()
        with torch.no_grad():
            self.net[0].weight.copy_(torch.tensor(W1))
            self.net[0].bias.copy_(torch.tensor(b1))
            self.net[2].weight.copy_(torch.tensor(W2))
            self.net[2].bias.copy_(torch.tensor(b2))

    def forward(self, t, y):
        return self.net(y ** 3)


def sumsq_rows(ctx, model, z0_np, ts_np, tol, params):
    ts = torch.tensor(ts_np)
    z0 = torch.tensor(z0_np)

    def fwd():
        with torch.no_grad():
            ys = odeint(model, z0, ts, method="dopri5", **tol)
        return float((ys ** 2).sum())

    def grad(method):
        z = z0.clone().requires_grad_(True)
        for q in params:
            q.grad = None
        ode = odeint_adjoint if method == "adjoint" else odeint
        ys = ode(model, z, ts, method="dopri5", **tol)
        loss = (ys ** 2).sum()
        loss.backward()
        return float(loss.detach()), torch.cat([z.grad.reshape(-1)] + [q.grad.reshape(-1) for q in params]).numpy().copy()
    tf = ctx.time(fwd)
    rows = []
    for method, label in (("adjoint", "odeint_adjoint (continuous backsolve adjoint)"),
                          ("backprop", "odeint + autograd (backprop through the solver)")):
        tg = ctx.time(lambda: grad(method))
        L, g = tg["result"]
        rows.append({"variant": "dopri5, %s" % ("odeint_adjoint" if method == "adjoint" else "backprop"),
                     "solver": "dopri5", "grad_method": label, **C.tentry("forward", tf), **C.tentry("grad", tg),
                     "loss": L, "grad": C.tolist(g)})
    return rows


def run_p1(ctx):
    m = LV(C.P1_THETA)
    return sumsq_rows(ctx, m, C.P1_Z0, C.P1_TS, C.P1_TOL, [m.theta])


def run_p4(ctx):
    m = Lorenz(C.P4_THETA)
    return sumsq_rows(ctx, m, C.P4_Z0, C.P4_TS, C.P4_TOL, [m.theta])


def make_p5(n):
    def run(ctx):
        W, z0 = C.p5_data(n)
        m = TanhNet(W)
        return sumsq_rows(ctx, m, z0, C.P5_TS, C.P5_TOL, [m.W])
    return run


def run_p2(ctx):
    t = torch.tensor(C.P2_TS)
    true_y0 = torch.tensor(C.P2_Y0).reshape(1, 2)
    tol = C.P2_TOL
    lam = SpiralTrue()

    def true_fwd():
        with torch.no_grad():
            return odeint(lam, true_y0, t, method="dopri5", **tol)
    tf = ctx.time(true_fwd)
    true_y = tf["result"][:, 0, :].numpy()
    y0s, targets = C.p2_batch_from_true(true_y)
    batch_y0 = torch.tensor(y0s).reshape(C.P2_BATCH, 1, 2)                     # (20, 1, 2) as in ode_demo.py
    batch_y = torch.tensor(np.transpose(targets, (1, 0, 2))).reshape(C.P2_BATCH_TIME, C.P2_BATCH, 1, 2)
    batch_t = torch.tensor(C.p2_batch_ts())
    func = ODEFunc()
    params = list(func.parameters())

    def batch_fwd():
        with torch.no_grad():
            pred = odeint(func, batch_y0, batch_t, method="dopri5", **tol)
        return float(torch.mean(torch.abs(pred - batch_y)))

    def iteration(method):
        for q in params:
            q.grad = None
        ode = odeint_adjoint if method == "adjoint" else odeint
        pred = ode(func, batch_y0, batch_t, method="dopri5", **tol)
        loss = torch.mean(torch.abs(pred - batch_y))
        loss.backward()
        return float(loss.detach()), torch.cat([q.grad.reshape(-1) for q in params]).numpy().copy()
    tbf = ctx.time(batch_fwd)
    rows = []
    for method in ("adjoint", "backprop"):
        tg = ctx.time(lambda: iteration(method))
        L, g = tg["result"]
        rows.append({"variant": "dopri5, %s" % ("odeint_adjoint" if method == "adjoint" else "backprop"),
                     "solver": "dopri5", "forward_what": "true dynamics over all 1000 points",
                     "grad_what": "one ode_demo.py iteration on the (20,1,2) batch (shared steps for the batch), "
                                  "loss.backward(); optimizer step not timed",
                     "grad_method": "odeint_adjoint" if method == "adjoint" else "odeint + autograd",
                     **C.tentry("forward", tf), **C.tentry("grad", tg), "batch_forward_s_min": tbf["min"],
                     "batch_forward_s_median": tbf["median"], "loss": L, "grad": C.tolist(g)})
    return rows


def run_p3(ctx):
    model = Robertson(C.P3_K)
    ts = torch.tensor(C.P3_TS)
    z0 = torch.tensor(C.P3_Z0)

    def fwd():
        with torch.no_grad():
            ys = odeint(model, z0, ts, method="scipy_solver", options={"solver": "Radau"}, **C.P3_TOL)
        return float(ys[-1, 2])
    tf = ctx.time(fwd)
    return [{"variant": "scipy_solver (Radau), forward only", "solver": "Radau via scipy_solver",
             **C.tentry("forward", tf), "grad_s_min": None, "grad_s_median": None, "loss": tf["result"], "grad": None,
             "note": "torchdiffeq has no implicit solver; odeint_adjoint through scipy_solver fails on Robertson "
                     "(backsolve of a stiff problem), so there is no gradient row"}]


def run_p6(ctx):
    thetas = C.p6_thetas()
    N = thetas.shape[0]
    model = LVBatch(thetas)
    z0 = torch.tensor(C.P1_Z0).expand(N, 2).contiguous()
    ts = torch.tensor(C.P6_TS)

    def fwd():
        with torch.no_grad():
            ys = odeint(model, z0, ts, method="dopri5", **C.P6_TOL)
        return ys[-1].numpy().copy()
    rows = []
    ncpu = os.cpu_count() or 1
    for nth in sorted({1, ncpu if ctx.threads == "all" else 1}, reverse=True):
        torch.set_num_threads(nth)
        tm = ctx.time(fwd)
        out = tm["result"]
        rows.append({"variant": "dopri5, one batched odeint, threads=%d" % nth, "threads": nth,
                     **C.tentry("forward", tm), "n_traj": N, "traj_per_s": N / tm["min"],
                     "traj_per_s_median": N / tm["median"], "final_state_first": out[0].tolist(),
                     "final_state_mean": out.mean(axis=0).tolist(),
                     "method": "all trajectories as one (10000, 2) state: shared steps, RMS error over all"})
    torch.set_num_threads(1)
    return rows


PROBLEMS = {"P1": run_p1, "P2": run_p2, "P3": run_p3, "P4": run_p4, "P5_n4": make_p5(4), "P5_n16": make_p5(16),
            "P5_n64": make_p5(64), "P6": run_p6}


def cold_p1():
    model = LV(C.P1_THETA)
    ts = torch.tensor(C.P1_TS)
    with torch.no_grad():
        L = float((odeint(model, torch.tensor(C.P1_Z0), ts, method="dopri5", **C.P1_TOL) ** 2).sum())
    z = torch.tensor(C.P1_Z0, requires_grad=True)
    loss = (odeint_adjoint(model, z, ts, method="dopri5", **C.P1_TOL) ** 2).sum()
    loss.backward()
    return {"loss": L, "grad0": float(z.grad[0])}


def meta():
    v = C.pkg_versions(["torch", "torchdiffeq", "numpy"])
    v["torch_num_threads"] = torch.get_num_threads()
    return v


if __name__ == "__main__":
    C.adapter_main("torchdiffeq", os.path.abspath(__file__), PROBLEMS, {"P1": cold_p1}, meta, T_START, T_IMPORTED)
