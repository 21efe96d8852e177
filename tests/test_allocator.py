"""``import tinygrok`` tells glibc's malloc to keep freed memory (tinygrok/allocator.py)."""

import os
import subprocess
import sys

import pytest

from tinygrok import allocator

if not allocator.keep_freed_memory():
    pytest.skip("no glibc mallopt here: the allocator setting does nothing",
                allow_module_level=True)


def applied_in_a_fresh_interpreter(**environment) -> bool:
    """Whether the setting is on in a new Python that only imports the package (importing
    ``tinygrok.allocator`` runs the package's ``__init__`` first, and nothing else)."""
    own = {name: value for name, value in os.environ.items()  # none of the caller's own
           if not name.startswith("MALLOC_")}                  # malloc settings
    out = subprocess.run([sys.executable, "-c", "import tinygrok.allocator as a; print(a._done)"],
                         capture_output=True, text=True, check=True,
                         env=dict(own, **environment)).stdout.strip()
    return out == "True"


def test_importing_tinygrok_sets_the_allocator():
    assert applied_in_a_fresh_interpreter()


def test_your_own_malloc_thresholds_are_left_alone():
    """With MALLOC_TRIM_THRESHOLD_ in the environment glibc applies it itself, and importing
    tinygrok does not override it."""
    assert not applied_in_a_fresh_interpreter(MALLOC_TRIM_THRESHOLD_="131072")
