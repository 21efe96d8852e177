"""Attention kernels against the NumPy reference, as ratios measured in one run.

Both sides run through autograd, like with like: ``attention`` (Numba kernels) and
``attention_reference`` (NumPy ops), each a forward plus ``out.backward(g)`` into three
float32 leaves, their gradients cleared before every repeat. The two run interleaved, many
times, after a warm-up; the machine is shared and noisy, so only the ratio of two times
taken in the same run means anything. Also times a fresh interpreter's import plus first
call (forward and backward) with a warm Numba cache, and with an empty one.

    python benchmarks/attention_ratios.py                 # all of it
    python benchmarks/attention_ratios.py --check         # exit 1 if a floor is missed
    python benchmarks/attention_ratios.py --layout fused  # q, k, v as views of one QKV array
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/attention_ratios.py

Floors: experiment shape (B=512, H=4, T=4, d=32) at least 3x the reference; long
sequences (B=64, H=4, T=128, d=32) at least 2x; import + first call with a warm cache at
most 1 s.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from tinygrok.attention import attention, attention_reference
from tinygrok.autograd import Tensor

SHAPES = {  # name: (B, H, T, d, floor)
    "experiment": (512, 4, 4, 32, 3.0),
    "long": (64, 4, 128, 32, 2.0),
}
FIRST_CALL_FLOOR_S = 1.0

FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
from tinygrok.attention import attention
from tinygrok.autograd import Tensor
x = Tensor(np.random.default_rng(0).standard_normal((8, 4, 4, 32)).astype(np.float32),
           requires_grad=True)
out, _ = attention(x, x, x)
out.backward(np.ones_like(out.data))
print(time.perf_counter() - start)
"""


def make_inputs(B, H, T, d, layout, seed=0):
    """Leaves and (q, k, v) of shape (B, H, T, d), float32."""
    rng = np.random.default_rng(seed)
    if layout == "fused":
        qkv = Tensor(rng.standard_normal((B, T, 3 * H * d)).astype(np.float32),
                     requires_grad=True)
        parts = qkv.reshape(B, T, 3, H, d)
        return [qkv], lambda: [parts[:, :, i].transpose(0, 2, 1, 3) for i in range(3)]
    leaves = [Tensor(rng.standard_normal((B, H, T, d)).astype(np.float32), requires_grad=True)
              for _ in range(3)]
    return leaves, lambda: leaves


def forward_backward(fn, leaves, views, grad):
    for leaf in leaves:
        leaf.grad = None
    out, _ = fn(*views(), causal=True)
    out.backward(grad)


def time_pair(B, H, T, d, layout, repeats):
    """Interleaved timings (seconds) of the kernel and the reference, forward + backward."""
    leaves, views = make_inputs(B, H, T, d, layout)
    grad = np.random.default_rng(1).standard_normal((B, H, T, d)).astype(np.float32)
    times = {"kernel": [], "reference": []}
    functions = {"kernel": attention, "reference": attention_reference}
    for fn in functions.values():  # warm-up: compile or load the kernels, fill caches
        for _ in range(2):
            forward_backward(fn, leaves, views, grad)
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            forward_backward(fn, leaves, views, grad)
            times[name].append(time.perf_counter() - start)
    return {name: np.array(t) for name, t in times.items()}


def first_call_seconds(cache_dir=None, runs=3):
    """Best of ``runs`` fresh interpreters: import + first forward and backward."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    results = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True,
                              capture_output=True, text=True)
        results.append(float(done.stdout.strip().splitlines()[-1]))
    return min(results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed repeats per side (default: 50 at T=4, 10 at T=128)")
    parser.add_argument("--layout", choices=["contiguous", "fused"], default="contiguous")
    parser.add_argument("--skip-first-call", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 if a floor is missed")
    args = parser.parse_args(argv)

    missed = []
    print(f"float32, forward + backward through autograd, {args.layout} q, k, v; "
          f"numba threads {os.environ.get('NUMBA_NUM_THREADS', 'default')}")
    for name, (B, H, T, d, floor) in SHAPES.items():
        repeats = args.repeats or (50 if T <= 16 else 10)
        times = time_pair(B, H, T, d, args.layout, repeats)
        kernel, reference = times["kernel"], times["reference"]
        ratio = np.median(reference) / np.median(kernel)
        verdict = "ok" if ratio >= floor else "BELOW FLOOR"
        if ratio < floor:
            missed.append(name)
        print(f"{name:10s} B={B} H={H} T={T} d={d}: kernel median {np.median(kernel) * 1e3:8.2f} "
              f"ms (min {kernel.min() * 1e3:.2f}), reference median "
              f"{np.median(reference) * 1e3:8.2f} ms (min {reference.min() * 1e3:.2f}); "
              f"ratio of medians {ratio:.2f} (of minima {reference.min() / kernel.min():.2f}), "
              f"floor {floor:g}: {verdict}")

    if not args.skip_first_call:
        first_call_seconds(runs=1)  # makes sure the default cache is filled
        warm = first_call_seconds()
        with tempfile.TemporaryDirectory() as empty:
            cold = first_call_seconds(cache_dir=empty, runs=1)
        verdict = "ok" if warm <= FIRST_CALL_FLOOR_S else "ABOVE FLOOR"
        if warm > FIRST_CALL_FLOOR_S:
            missed.append("first call")
        print(f"import + first call (float32 forward + backward), fresh interpreter: warm "
              f"cache {warm:.2f} s (floor {FIRST_CALL_FLOOR_S:g} s: {verdict}), empty cache "
              f"{cold:.2f} s")
    if args.check and missed:
        sys.exit(f"floors missed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
