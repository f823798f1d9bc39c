"""Every example runs in its --quick (CI) mode in a fresh process and saves its plot."""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
RUNS = {
    "quickstart": "quickstart.png",
    "spiral_neural_ode": "spiral_neural_ode.png",
    "lotka_volterra_fit": "lotka_volterra_fit.png",
    "gradient_flow": "gradient_flow.png",
    "hybrid_ude": "hybrid_ude.png",
    "distributed_ensemble": "distributed_ensemble.png",
    "torch_hybrid": "torch_hybrid.png",
    "jax_fit": "jax_fit.png",
}
# modules an example needs beyond matplotlib
NEEDS = {"distributed_ensemble": "distributed", "torch_hybrid": "torch", "jax_fit": "jax"}
SLOW = {"distributed_ensemble"}                     # starts a LocalCluster of 2 worker processes


def _cases():
    for name in sorted(RUNS):
        marks = [pytest.mark.slow] if name in SLOW else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_cases()))
def test_example_runs_quick_and_saves_its_plot(name, tmp_path):
    pytest.importorskip("matplotlib")
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    script = os.path.join(EXAMPLES, f"{name}.py")
    proc = subprocess.run([sys.executable, script, "--quick", "--no-progress", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    png = tmp_path / RUNS[name]
    assert png.exists() and png.stat().st_size > 10_000, proc.stdout[-2000:]
    assert "plot saved to" in proc.stdout


def test_every_example_takes_quick_and_out():
    """The README promises --quick and --out for every example: check each script's --help lists both."""
    names = sorted(f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py") and not f.startswith("_"))
    assert set(names) == set(RUNS), "an example is missing from RUNS"
    for name in names:
        with open(os.path.join(EXAMPLES, f"{name}.py"), encoding="utf-8") as fh:
            src = fh.read()
        assert "symode._" not in src.replace("symode._common", ""), f"{name}.py imports a private symode module"
        proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, f"{name}.py"), "--help"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "--quick" in proc.stdout and "--out" in proc.stdout, name
