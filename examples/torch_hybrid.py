"""A hybrid model in PyTorch: a torch MLP supplies the unknown term of a symode mechanistic model.

Lotka-Volterra predator-prey dynamics (a symode.ODE, compiled once) whose prey growth rate alpha depends on an
experimental condition c (say temperature) in a way nobody wrote down: the truth is alpha(c) = 1.5 + 0.5 tanh(2c).
A torch MLP learns alpha(c) from 8 noisy experiments (one per condition): for each training step the MLP maps the
8 conditions to 8 parameter vectors (B, 4), symode.torch.odeint solves the 8 trajectories in one compiled
parallel call and its backward pass returns dL/dtheta (B, 4) in one compiled call too, which torch propagates
into the MLP's weights; torch.optim.Adam updates them. beta, gamma, delta are known.

Run:  python examples/torch_hybrid.py [--quick] [--out DIR]
Saves torch_hybrid.png (learned vs true alpha(c); a held-out condition's trajectories).
"""
import numpy as np
import sympy as sp
import torch

import symode
import symode.torch as st

from _common import parser, pyplot, save  # examples/_common.py

KNOWN = torch.tensor([1.0, 3.0, 1.0], dtype=torch.float64)    # beta, gamma, delta
Z0 = np.array([1.0, 1.0])
TS = np.linspace(0.0, 5.0, 26)
SOLVER = dict(method="dopri5", rtol=1e-7, atol=1e-9)


def true_alpha(c):
    return 1.5 + 0.5 * np.tanh(2.0 * c)


def lotka_volterra():
    x, y = sp.symbols("x y")
    a, b, c, d = sp.symbols("alpha beta gamma delta")
    return symode.ODE([a * x - b * x * y, d * x * y - c * y], states=[x, y], params=[a, b, c, d])


class AlphaNet(torch.nn.Module):
    """c -> alpha(c) > 0, then the full parameter vector (alpha, beta, gamma, delta) per condition."""

    def __init__(self, hidden=16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        self.double()

    def alpha(self, c):
        return torch.nn.functional.softplus(self.net(c[:, None]))[:, 0] + 0.5

    def forward(self, c):
        a = self.alpha(c)
        return torch.cat([a[:, None], KNOWN.expand(a.shape[0], 3)], dim=1)     # (B, 4)


def main(argv=None):
    args = parser(__doc__, "CI mode: fewer iterations").parse_args(argv)
    torch.manual_seed(0)
    model = lotka_volterra()
    conds = np.linspace(-1.0, 1.0, 8)
    thetas = np.column_stack([true_alpha(conds), np.tile(KNOWN.numpy(), (8, 1))])
    rng = np.random.default_rng(0)
    clean = model.solve(Z0, thetas, TS, **SOLVER).z                         # (8, 26, 2), one parallel call
    data = torch.from_numpy(clean * (1.0 + 0.02 * rng.normal(size=clean.shape)))
    c = torch.from_numpy(conds)

    net = AlphaNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    iterations = 60 if args.quick else 400
    history = []
    for it in range(iterations):
        opt.zero_grad()
        zs = st.odeint(model, Z0, net(c), TS, **SOLVER)                   # (8, 26, 2), differentiable in theta
        loss = ((zs - data) ** 2).mean()
        loss.backward()
        opt.step()
        history.append(loss.item())
        if it % 50 == 0 or it == iterations - 1:
            print(f"iteration {it:4d}  loss {history[-1]:.5f}")
    grid = torch.linspace(-1.2, 1.2, 61, dtype=torch.float64)
    with torch.no_grad():
        learned = net.alpha(grid).numpy()
    err = np.max(np.abs(learned[10:51] - true_alpha(grid.numpy()[10:51])))
    print(f"max |alpha_learned - alpha_true| on the training range: {err:.3f}")
    assert history[-1] < history[0], "training did not reduce the loss"

    plt = pyplot()
    if plt is None:
        return history
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    ax[0].plot(grid.numpy(), true_alpha(grid.numpy()), "k--", label="true alpha(c)")
    ax[0].plot(grid.numpy(), learned, "C0", label="MLP")
    ax[0].plot(conds, true_alpha(conds), "ko", label="training conditions")
    ax[0].set(xlabel="condition c", ylabel="prey growth rate alpha", title="the learned term")
    ax[0].legend()
    c_new = 0.35                                                             # held out
    th_new = np.r_[true_alpha(c_new), KNOWN.numpy()]
    fine = np.linspace(0.0, 5.0, 201)
    with torch.no_grad():
        pred = st.odeint(model, Z0, net(torch.tensor([c_new], dtype=torch.float64)), fine, **SOLVER)[0].numpy()
    truth = model.solve(Z0, th_new, fine, **SOLVER).z
    for k, name in enumerate(("prey x", "predator y")):
        ax[1].plot(fine, truth[:, k], f"C{k}--", lw=2.5, alpha=0.5, label=f"{name} (true)")
        ax[1].plot(fine, pred[:, k], f"C{k}", label=f"{name} (hybrid)")
    ax[1].set(xlabel="t", title=f"held-out condition c = {c_new}")
    ax[1].legend(fontsize=8)
    ax[2].semilogy(history)
    ax[2].set(xlabel="Adam iteration", ylabel="mean squared error", title="training")
    save(fig, args.out, "torch_hybrid.png")
    return history


if __name__ == "__main__":
    main()
