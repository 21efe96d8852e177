"""Thread settings: the OpenMP wait policy that import sets, and the thread count."""

import os
import subprocess
import sys

import pytest

from tinygrok import threads

PRINT_POLICY = "import tinygrok, os; print(os.environ.get('OMP_WAIT_POLICY'))"


def _policy_after_import(env_value):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    result = subprocess.run([sys.executable, "-c", PRINT_POLICY], env=env, check=True,
                            capture_output=True, text=True)
    return result.stdout.strip()


def test_import_makes_idle_openmp_threads_sleep():
    # spinning Numba threads starve BLAS of cores (benchmarks/README.md)
    assert _policy_after_import(None) == "PASSIVE"


def test_a_policy_already_set_is_kept():
    assert _policy_after_import("ACTIVE") == "ACTIVE"


def test_set_threads_checks_the_range_and_applies():
    available, before = threads.available_threads(), threads.current_threads()
    with pytest.raises(ValueError, match=f"between 1 and {available}"):
        threads.set_threads(available + 1)
    try:
        assert threads.set_threads(1) == 1
        assert threads.current_threads() == 1
    finally:
        threads.set_threads(before)
