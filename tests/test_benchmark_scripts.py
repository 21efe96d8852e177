"""The benchmark scripts that need no PyTorch still run and report what they promise.

(Timings themselves are never asserted: they belong in benchmarks/, not in tests.)
"""
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("mode, expected", [
    ([], ["ms a step", "forward (and AdamW)", "backward", "linear", "attention",
          "AdamW step"]),
    (["--eval"], ["ms an evaluation", "forward:", "linear", "layer_norm"]),
    (["--loop"], ["ms a step", "training step", "metrics (whole-split evaluation)",
                  "attention probes"]),
])
def test_step_breakdown_reports_every_part(mode, expected):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "step_breakdown.py"),
                             "--steps", "10", *mode],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout, (text, result.stdout)
    if mode == ["--eval"]:
        # no graph, so nothing runs backward, and no optimizer step
        assert "backward" not in result.stdout and "AdamW" not in result.stdout


def test_step_breakdown_takes_a_thread_count():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "step_breakdown.py"),
                             "--steps", "2", "--threads", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1 thread for the matrix products\n"), result.stdout


def test_launch_overhead_reports_one_and_two_threads():
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba may use one thread only here: the script has nothing to compare")
    result = subprocess.run([sys.executable, str(BENCHMARKS / "launch_overhead.py"),
                             "--work", "0", "50"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("work")]
    assert len(lines) == 2 and all("one thread" in line and "two threads" in line for line in lines)
    assert "Numba's threading layer:" in result.stdout
