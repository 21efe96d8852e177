"""The kernels' own tests again, with Numba checking every index (the design notes,
../shared/DESIGN.md, "Numba pitfalls").

Compiled code does not check array bounds: an index one past the end reads whatever lies
there, and a wrong result may pass unnoticed. ``NUMBA_BOUNDSCHECK=1`` compiles every
kernel with checks that raise IndexError instead. It applies when a kernel is compiled,
and Numba's cache does not tell checked machine code from unchecked: so the kernels' tests
run in a fresh Python with the variable set and a cache folder of their own, and the test
first makes sure that this Python checks bounds and caches there (were that folder not
writable, Numba would quietly take the package's own cache of unchecked kernels). The
first run compiles every kernel, about a minute on a 2-core machine; later runs load them.

The SIMD intrinsics of lanes.py and softmax_exp.py read memory through pointers, which no
check sees; their tests compare every element, and every length up to two vectors.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Every test file that runs the kernels: attention, GELU, LayerNorm, the row scatter,
# AdamW, the SIMD lanes and exp, and the model, which calls them with its own layouts
# (head-split views, KV caches, a last query only).
KERNEL_TESTS = ["test_attention.py", "test_kernels.py", "test_adamw.py", "test_lanes.py",
                "test_softmax_exp.py", "test_model.py"]


def checked_kernel_cache() -> Path:
    """A cache folder for bounds-checked kernels only, kept between test runs: inside
    NUMBA_CACHE_DIR where that is set (CI sets it), else in the temporary folder, per user."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"]) / "boundscheck"
    return Path(tempfile.gettempdir()) / f"tinygrok-boundscheck-cache-{os.getuid()}"


def test_the_kernels_tests_pass_with_every_index_checked():
    here = Path(__file__).parent
    cache = checked_kernel_cache()
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(cache)}
    # The Python that runs the tests checks bounds, and keeps its kernels in that folder.
    probe = subprocess.run(
        [sys.executable, "-c", "import numba; from tinygrok.numba_cache import "
         "kernel_cache_folder as f; print(numba.config.BOUNDSCHECK, f())"],
        capture_output=True, text=True, timeout=300, env=env, cwd=here.parent)
    assert probe.returncode == 0, probe.stderr
    checks, folder = probe.stdout.split(maxsplit=1)
    assert checks == "1" and Path(folder.strip()).is_relative_to(cache), probe.stdout
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         *[str(here / name) for name in KERNEL_TESTS]],
        capture_output=True, text=True, timeout=900, env=env, cwd=here.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout.splitlines()[-1]


def test_boundscheck_catches_an_index_past_the_end():
    """The check this file relies on: a kernel compiled under NUMBA_BOUNDSCHECK=1 raises
    IndexError where one compiled without it reads past the array."""
    script = ("import numpy as np\nfrom numba import njit\n"
              "@njit\ndef past_the_end(a):\n    return a[len(a)]\n"
              "try:\n    past_the_end(np.zeros(3))\n    print('read')\n"
              "except IndexError:\n    print('IndexError')\n")
    results = {}
    for setting in ("1", None):
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_BOUNDSCHECK"}
        if setting:
            env["NUMBA_BOUNDSCHECK"] = setting
        results[setting] = subprocess.run([sys.executable, "-c", script], capture_output=True,
                                          text=True, timeout=120, env=env).stdout.strip()
    assert results == {"1": "IndexError", None: "read"}
