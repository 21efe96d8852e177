"""One training step of tinygrok against the same step in PyTorch, measured in one run.

The step: forward of the default model (d 128, 4 heads, 2 layers) on a batch of 512
x_div_y examples, cross-entropy, backward, AdamW, in float32. Both frameworks get the same
thread count and alternate in blocks, so a noisy neighbour slows both alike; the script
prints the medians and their ratio (the floor asks tinygrok / torch <= 0.6).

Needs a virtualenv with both torch and tinygrok (see benchmarks/README.md):

    /work/torchvenv/bin/pip install -e ".[test]"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        /work/torchvenv/bin/python benchmarks/step_vs_torch.py --threads 2
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def tinygrok_stepper(batch):
    from tinygrok.train import Run, TrainConfig

    run = Run(TrainConfig(batch_size=batch), out_dir="unused")  # also sets the allocator
    return run.train_step


def torch_stepper(batch):
    import torch
    import torch.nn.functional as F
    from torch_reference import TorchGrokTransformer, random_batch

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


def time_block(step, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps-per-block", type=int, default=25)
    args = parser.parse_args()

    import tinygrok  # first: it sets OMP_WAIT_POLICY=PASSIVE before any OpenMP pool starts
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads, user_api="blas")
    numba.set_num_threads(args.threads)
    steppers = {"tinygrok": tinygrok_stepper(args.batch), "torch": torch_stepper(args.batch)}
    for step in steppers.values():
        time_block(step, 10)  # warm-up: kernels compiled, allocator and caches settled
    times = {name: [] for name in steppers}
    for _ in range(args.blocks):
        for name, step in steppers.items():
            times[name] += time_block(step, args.steps_per_block)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    for name, t in times.items():
        q = np.percentile(np.array(t) * 1e3, [10, 90])
        print(f"{name:>9}: median {medians[name]:6.1f} ms/step  (p10 {q[0]:.1f}, p90 {q[1]:.1f}, "
              f"{len(t)} steps, {args.threads} threads)")
    print(f"ratio tinygrok / torch: {medians['tinygrok'] / medians['torch']:.3f}  (floor: <= 0.6)")


if __name__ == "__main__":
    main()
