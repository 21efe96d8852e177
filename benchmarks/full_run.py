"""Wall time and peak memory of the default run, `python -m tinygrok.run --task x_div_y`.

Issue 5's floors: the default run (7,500 steps, whole-split evaluation every 10 steps,
attention logging on) in at most 3 minutes on a 2-core machine, with at most 1 GB peak
resident memory. This script runs the real command in a fresh interpreter, into a
temporary folder, and reports:

- the wall time of the whole command (imports, Numba cache loads, training, files),
- the training loop's own steps per second (from the run's timing.csv),
- the peak resident memory of the child process,
- the load average before and after: on a shared machine a number taken while something
  else runs says little, so look at the load before trusting it.

    python benchmarks/full_run.py                   # the default run, all cores
    python benchmarks/full_run.py --steps 1000      # shorter; the time is extrapolated too
    python benchmarks/full_run.py --threads 1 --task x_plus_y
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/full_run.py

Extra options after ``--`` go to ``tinygrok.run`` unchanged.
"""

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR_SECONDS = 180
FLOOR_MEMORY_MB = 1024
DEFAULT_STEPS = 7500


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="x_div_y")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("extra", nargs="*", help="more tinygrok.run options, after --")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "tinygrok.run", "--task", args.task,
                   "--steps", str(args.steps), "--out", str(out), *args.extra]
        if args.threads:
            command += ["--threads", str(args.threads)]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()[0]
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        with open(out / "timing.csv") as f:
            rows = list(csv.DictReader(f))
        loop_seconds = float(rows[-1]["seconds"])

    steps_per_second = args.steps / loop_seconds
    print(f"command: {' '.join(command[1:])}")
    print(f"load average: {load_before:.2f} before, {load_after:.2f} after (2 cores: < 0.5 is quiet)")
    print(f"wall time: {wall:.1f} s for {args.steps} steps; training loop {loop_seconds:.1f} s, "
          f"{steps_per_second:.1f} steps/s")
    if args.steps != DEFAULT_STEPS:
        fixed = wall - loop_seconds
        estimate = fixed + DEFAULT_STEPS / steps_per_second
        print(f"estimated for {DEFAULT_STEPS} steps: {estimate:.0f} s")
    else:
        estimate = wall
    print(f"peak resident memory: {peak_mb:.0f} MB (floor {FLOOR_MEMORY_MB} MB)")
    print(f"time against the floor: {estimate:.0f} s / {FLOOR_SECONDS} s = "
          f"{estimate / FLOOR_SECONDS:.2f}")


if __name__ == "__main__":
    main()
