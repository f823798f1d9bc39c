"""Every example runs in its --quick (CI) mode in a fresh process and saves its plot."""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
RUNS = {
    "spiral_neural_ode": "spiral_neural_ode.png",
    "lotka_volterra_fit": "lotka_volterra_fit.png",
    "gradient_flow": "gradient_flow.png",
    "hybrid_ude": "hybrid_ude.png",
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_runs_quick_and_saves_its_plot(name, tmp_path):
    pytest.importorskip("matplotlib")
    script = os.path.join(EXAMPLES, f"{name}.py")
    proc = subprocess.run([sys.executable, script, "--quick", "--no-progress", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    png = tmp_path / RUNS[name]
    assert png.exists() and png.stat().st_size > 10_000, proc.stdout[-2000:]
    assert "plot saved to" in proc.stdout
