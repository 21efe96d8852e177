"""How the OpenMP wait policy and the thread counts change one training step's time.

Each setting runs in its own fresh interpreter (the policy is read when Numba's OpenMP
pool starts, so it cannot change inside a process), and the settings take turns for a few
rounds, so a noisy neighbour spreads over all of them. Each child times ``Run.train_step``
of the default experiment: 10 warm-up steps, then the median of ``--steps``.

    python benchmarks/thread_policy.py
    python benchmarks/thread_policy.py --only PASSIVE --rounds 7    # the 3 PASSIVE settings
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/thread_policy.py --rounds 3

This is what benchmarks/README.md's table ("Threads") came from.
"""

import argparse
import os
import statistics
import subprocess
import sys

CHILD = """
import statistics, sys, time
import numba
from threadpoolctl import threadpool_limits
from tinygrok.train import Run, TrainConfig, warm_up_kernels
blas, kernel_threads, steps = map(int, sys.argv[1:4])
threadpool_limits(blas, user_api="blas")
numba.set_num_threads(kernel_threads)
warm_up_kernels()
run = Run(TrainConfig(), out_dir="unused")
for _ in range(10):
    run.train_step()
times = []
for _ in range(steps):
    start = time.perf_counter()
    run.train_step()
    times.append(time.perf_counter() - start)
print(statistics.median(times) * 1e3)
"""

# name: (extra environment, BLAS threads, Numba threads)
SETTINGS = {
    "PASSIVE (tinygrok's default), 2 + 2 threads": ({}, 2, 2),
    "ACTIVE (spinning), 2 + 2 threads": ({"OMP_WAIT_POLICY": "ACTIVE"}, 2, 2),
    "workqueue threading layer, 2 + 2": ({"NUMBA_THREADING_LAYER": "workqueue"}, 2, 2),
    "PASSIVE, BLAS 2 + Numba 1": ({}, 2, 1),
    "PASSIVE, 1 + 1 thread": ({}, 1, 1),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per child")
    parser.add_argument("--only", help="run only the settings whose name contains this")
    args = parser.parse_args()
    settings = {name: value for name, value in SETTINGS.items()
                if args.only is None or args.only in name}
    if not settings:
        parser.error(f"--only {args.only!r} matches none of: {', '.join(SETTINGS)}")
    results = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, (extra, blas, kernel_threads) in settings.items():
            env = {**os.environ, **extra}
            child = subprocess.run(
                [sys.executable, "-c", CHILD, str(blas), str(kernel_threads), str(args.steps)],
                env=env, check=True, capture_output=True, text=True)
            results[name].append(float(child.stdout.split()[-1]))
    print(f"load average now: {os.getloadavg()[0]:.2f} (2 cores: < 0.5 is quiet)")
    for name, times in results.items():
        rounds = ", ".join(f"{t:.0f}" for t in times)
        print(f"{name:>45}: median {statistics.median(times):6.1f} ms/step  (rounds: {rounds})")


if __name__ == "__main__":
    main()
