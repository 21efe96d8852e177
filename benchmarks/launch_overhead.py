"""What one parallel Numba launch costs on this machine, at one thread and at two.

The attention kernels at the experiment's shape (B=512, H=4, T=4, d=32) do a few hundred
microseconds of work per launch, in two launches (forward, backward). What a launch
costs by itself is then a visible part of their time. This script times a kernel that
runs a ``prange`` over 64 chunks of ``--work`` multiply-adds each, with the Numba kernels
on one thread and then on two, with some Python work between launches as in a real
forward + backward:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/launch_overhead.py

Each line gives microseconds per launch (the fastest of 7 rounds of 300 launches). With
no work, the two-thread line minus the one-thread line is what waking the second thread
and joining it costs; with work, compare the two-thread time with half the one-thread
time. tinygrok's default ``OMP_WAIT_POLICY=PASSIVE`` applies (see README.md, "Threads").
"""

import argparse
import time

import numba
import numpy as np
from numba import njit, prange

import tinygrok  # noqa: F401  (sets tinygrok's thread policy, as in real use)


@njit(parallel=True, cache=False)
def chunks_of_work(out, work):
    for chunk in prange(out.size):
        total = 0.0
        for i in range(work):
            total += i * 0.5
        out[chunk] = total


def microseconds_per_launch(work: int, launches: int = 300, rounds: int = 7) -> float:
    out = np.zeros(64)
    chunks_of_work(out, work)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(launches):
            chunks_of_work(out, work)
            sum(range(200))  # about 1 us of Python between launches
        best = min(best, (time.perf_counter() - start) / launches)
    return best * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=int, nargs="+", default=[0, 100, 1000, 10000],
                        help="multiply-adds per chunk (64 chunks a launch)")
    args = parser.parse_args()
    if numba.config.NUMBA_NUM_THREADS < 2:
        parser.error("Numba may use only one thread on this machine: nothing to compare")
    before = numba.get_num_threads()
    for work in args.work:
        times = {}
        for threads in (1, 2):
            numba.set_num_threads(threads)
            times[threads] = microseconds_per_launch(work)
        numba.set_num_threads(before)
        print(f"work {work:>6} per chunk: one thread {times[1]:8.1f} us, two threads "
              f"{times[2]:8.1f} us (half of one thread: {times[1] / 2:8.1f} us)")
    print(f"Numba's threading layer: {numba.threading_layer()}")


if __name__ == "__main__":
    main()
