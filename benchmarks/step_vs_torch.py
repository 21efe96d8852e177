"""One training step of tinygrok against the same step in PyTorch: one command, two processes.

The step: forward of the default model (d 128, 4 heads, 2 layers) on a batch of 512
x_div_y examples, cross-entropy, backward, AdamW, in float32. The script prints the medians
and their ratio (the floor asks tinygrok / torch <= 0.6).

Each framework runs in a process of its own, and the two take turns in blocks of steps
(the parent tells one worker to run a block while the other waits; the order flips every
round), so a noisy neighbour slows both alike. Separate processes matter: ``import tinygrok`` sets
``OMP_WAIT_POLICY=PASSIVE`` for its own OpenMP pool, and in a shared process PyTorch's
OpenMP pool would inherit it (alone, PyTorch runs slower with passive threads: about 120
against 80-95 ms a step here), and the two pools would compete. Here each side gets its
own defaults and the same thread count.

Needs a virtualenv with both torch and tinygrok (see benchmarks/README.md):

    ../torchvenv/bin/pip install -e ".[test]"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        ../torchvenv/bin/python benchmarks/step_vs_torch.py --threads 2
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def tinygrok_stepper(batch, threads):
    import tinygrok  # noqa: F401  (sets OMP_WAIT_POLICY and the allocator before any work)
    from tinygrok.threads import kernels_on_one_thread, set_threads
    from tinygrok.train import Run, TrainConfig

    set_threads(threads)
    run = Run(TrainConfig(batch_size=batch), out_dir="unused")

    def step():
        with kernels_on_one_thread():  # as the training loop runs them
            run.train_step()
    return step


def torch_stepper(batch, threads):
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(HERE))
    from torch_reference import TorchGrokTransformer, random_batch

    torch.set_num_threads(threads)
    model = TorchGrokTransformer(vocab_size=99, num_classes=97)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8,
                                  weight_decay=0.5)
    generator = torch.Generator().manual_seed(0)

    def step():
        tokens, labels = random_batch(generator, batch)
        loss = F.cross_entropy(model(tokens), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def worker(framework, batch, threads):
    """Build the step, warm it up, then run blocks on request: read a step count from
    stdin, answer with the seconds of each step as a JSON list; an empty line ends it.

    stdout carries only this protocol; anything else printed goes to stderr."""
    protocol, sys.stdout = sys.stdout, sys.stderr
    step = {"tinygrok": tinygrok_stepper, "torch": torch_stepper}[framework](batch, threads)
    for _ in range(10):  # warm-up: kernels compiled, allocator and caches settled
        step()
    print("ready", file=protocol, flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        print(json.dumps(times), file=protocol, flush=True)


def start_worker(framework, args):
    """Start a worker and wait until it has warmed up."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)  # each framework keeps its own default
    command = [sys.executable, __file__, "--worker", framework, "--threads",
               str(args.threads), "--batch", str(args.batch)]
    process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    if process.stdout.readline().strip() != "ready":
        sys.exit(f"the {framework} worker failed to start")
    return process


def run_block(name, process, steps):
    """Ask a worker for ``steps`` timed steps and return their seconds."""
    process.stdin.write(f"{steps}\n")
    process.stdin.flush()
    line = process.stdout.readline()
    if not line:
        sys.exit(f"the {name} worker stopped (exit code {process.wait()}); see its error above")
    return json.loads(line)


def deciles(values):
    """The 10th and 90th percentiles (as numpy.percentile computes them)."""
    cuts = statistics.quantiles(values, n=10, method="inclusive")
    return cuts[0], cuts[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps-per-block", type=int, default=25)
    parser.add_argument("--worker", choices=["tinygrok", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.batch, args.threads)

    workers = {name: start_worker(name, args) for name in ("tinygrok", "torch")}
    times = {name: [] for name in workers}
    order = list(workers)
    for _ in range(args.blocks):
        for name in order:  # one at a time: the other one waits
            times[name] += run_block(name, workers[name], args.steps_per_block)
        order.reverse()  # neither always runs right after the other
    for process in workers.values():
        process.stdin.write("\n")
        process.stdin.flush()
        process.wait(timeout=60)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    for name, t in times.items():
        p10, p90 = deciles(t)
        print(f"{name:>9}: median {medians[name]:6.1f} ms/step  (p10 {p10 * 1e3:.1f}, p90 "
              f"{p90 * 1e3:.1f}, {len(t)} steps, {args.threads} threads, own process)")
    print(f"ratio tinygrok / torch: {medians['tinygrok'] / medians['torch']:.3f}  (floor: <= 0.6)")


if __name__ == "__main__":
    main()
