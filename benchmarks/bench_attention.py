"""pytest-benchmark: attention kernels against the NumPy reference, forward + backward.

    pytest benchmarks/bench_attention.py --benchmark-only
    pytest benchmarks/bench_attention.py --benchmark-only --benchmark-group-by=param:shape

Both implementations run through autograd (forward, then ``out.backward(g)`` into three
float32 leaves whose gradients are cleared first), so the comparison is like with like.
Each benchmark warms up first (Numba compiles or loads the kernels on the first call). The
machine is shared and noisy: compare the two rows of one shape from the same run, or use
``benchmarks/attention_ratios.py``, which interleaves them and prints the ratios.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from tinygrok.attention import attention, attention_reference
from tinygrok.autograd import Tensor

SHAPES = {"experiment": (512, 4, 4, 32), "long": (64, 4, 128, 32)}
IMPLEMENTATIONS = {"kernel": attention, "reference": attention_reference}


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_forward_backward(benchmark, shape, implementation):
    B, H, T, d = SHAPES[shape]
    fn = IMPLEMENTATIONS[implementation]
    rng = np.random.default_rng(0)
    leaves = [Tensor(rng.standard_normal((B, H, T, d)).astype(np.float32), requires_grad=True)
              for _ in range(3)]
    grad = rng.standard_normal((B, H, T, d)).astype(np.float32)

    def step():
        for leaf in leaves:
            leaf.grad = None
        out, _ = fn(*leaves, causal=True)
        out.backward(grad)

    benchmark.group = f"attention {shape} B={B} H={H} T={T} d={d}"
    rounds = 30 if T <= 16 else 8
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=2)


FIRST_CALL = """
import numpy as np
from tinygrok.attention import attention
from tinygrok.autograd import Tensor
x = Tensor(np.ones((8, 4, 4, 32), np.float32), requires_grad=True)
out, _ = attention(x, x, x)
out.backward(np.ones_like(out.data))
"""


def test_import_and_first_call_warm_cache(benchmark):
    """A fresh interpreter: import, then the first float32 forward + backward, with the
    kernels already in Numba's on-disk cache (the first run below fills it). The time
    includes starting Python itself."""
    env = dict(os.environ)

    def fresh_interpreter():
        subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True)

    fresh_interpreter()
    benchmark.group = "attention import + first call (warm cache)"
    benchmark.pedantic(fresh_interpreter, rounds=3, warmup_rounds=0)
