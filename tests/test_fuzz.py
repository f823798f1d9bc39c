"""End-to-end fuzzing in a subprocess: zero crashes, zero hangs, zero undetected NaN."""
import json
import os
import subprocess
import sys

N = int(os.environ.get("SYMODE_FUZZ_MODELS", "12"))


def test_fuzz_models_in_subprocess():
    profile = os.environ.get("HYPOTHESIS_PROFILE", "dev")
    r = subprocess.run([sys.executable, "-m", "tests.fuzz_models", str(N), profile], capture_output=True, text=True,
                       timeout=1500, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, f"fuzz run crashed or failed (exit {r.returncode}):\n{r.stderr[-4000:]}"
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    assert counts["models"] >= N and counts["solves"] >= 1
