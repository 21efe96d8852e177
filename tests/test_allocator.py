"""``import tinygrok`` tells glibc's malloc to keep freed memory (tinygrok/allocator.py)."""

import os
import subprocess
import sys

import pytest

from tinygrok import allocator


def test_importing_tinygrok_sets_the_allocator():
    """A fresh interpreter that only imports the package has the setting applied (importing
    ``tinygrok.allocator`` runs the package's ``__init__`` first, and nothing else)."""
    if not allocator.keep_freed_memory():
        pytest.skip("no glibc mallopt here: the allocator setting does nothing")
    out = subprocess.run([sys.executable, "-c", "import tinygrok.allocator as a; print(a._done)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True"


def test_your_own_malloc_thresholds_are_left_alone():
    """With MALLOC_TRIM_THRESHOLD_ in the environment glibc applies it itself, and importing
    tinygrok does not override it."""
    if not allocator.keep_freed_memory():
        pytest.skip("no glibc mallopt here: the allocator setting does nothing")
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, "-c", "import tinygrok.allocator as a; print(a._done)"],
                         capture_output=True, text=True, check=True, env=env).stdout.strip()
    assert out == "False"
