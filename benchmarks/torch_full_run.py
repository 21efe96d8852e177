"""The default run's loop in PyTorch, for timing only: how long would PyTorch take here?

Issue 5 compares tinygrok's default run (7,500 steps, whole-split evaluation every 10
steps, attention logging) with "about 5.5 minutes" for PyTorch on the machine the issue was
written on. This script times the same loop in PyTorch on this machine, so that the two
can be compared on one machine:

- every step: a batch of 512 drawn from the training half of x / y mod 97, forward,
  cross-entropy, backward, AdamW (lr 1e-3, betas (0.9, 0.98), weight decay 0.5) with the
  linear warm-up over 50 steps;
- every 10 steps, with ``--eval whole`` (default): loss and accuracy on the whole
  validation half (4,656 pairs, batches of 4,096, no graph; tinygrok evaluates it in one
  batch) and the attention of 128 probe examples, as tinygrok does; with ``--eval
  sampled``: loss and accuracy on 512 random validation pairs only (the "cheaper,
  sampled eval" of the issue), no attention.

It runs ``--steps`` steps (default 1,500) and extrapolates to the 7,500 of the default run;
the cost of a step does not change over a run. Only the loop is timed: unlike
``full_run.py``'s estimate for tinygrok, no imports, files or final summary. Needs the torch virtualenv
(benchmarks/README.md):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        ../torchvenv/bin/python benchmarks/torch_full_run.py --eval whole
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.pop("OMP_WAIT_POLICY", None)  # PyTorch's own OpenMP default, before torch loads
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from torch_reference import TorchGrokTransformer  # noqa: E402

P = 97
DEFAULT_RUN_STEPS = 7500


def division_task(seed):
    """All [x, o, y, =] inputs of x / y mod 97 (y != 0) and their labels, split in halves.

    Token ids as in tinygrok ("o" 0, "=" 1, element e is 2 + e). The shuffle is PyTorch's,
    so the split differs from tinygrok's; for timing that does not matter."""
    x = torch.arange(P).repeat_interleave(P - 1)
    y = torch.arange(1, P).repeat(P)
    inverse = torch.tensor([pow(int(v), P - 2, P) for v in range(1, P)])
    labels = (x * inverse[y - 1]) % P
    tokens = torch.stack([x + 2, torch.zeros_like(x), y + 2, torch.ones_like(x)], dim=1)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    half = len(order) // 2
    return tokens, labels, order[:half], order[half:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval", choices=["whole", "sampled"], default="whole")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokens, labels, train_idx, val_idx = division_task(seed=0)
    model = TorchGrokTransformer(vocab_size=P + 2, num_classes=P)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8,
                                  weight_decay=0.5)
    # LambdaLR applies factor(0) = 0 at once, so the first step has lr 0, as in tinygrok.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min(t / 50, 1.0))
    generator = torch.Generator().manual_seed(1)
    probes = torch.cat([train_idx[:64], val_idx[:64]])  # 64 + 64 examples, like tinygrok's

    def evaluate(index):  # called for its cost only: the numbers are not used
        with torch.no_grad():
            correct, total_loss = 0, 0.0
            for start in range(0, len(index), 4096):
                part = index[start:start + 4096]
                logits = model(tokens[part])
                total_loss += F.cross_entropy(logits, labels[part], reduction="sum").item()
                correct += int((logits.argmax(1) == labels[part]).sum())
        return total_loss / len(index), correct / len(index)

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = train_idx[torch.randint(len(train_idx), (512,), generator=generator)]
        loss = F.cross_entropy(model(tokens[batch]), labels[batch])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        if step % 10 == 0:
            if args.eval == "whole":
                evaluate(val_idx)
                with torch.no_grad():
                    model(tokens[probes], return_attention=True)
            else:
                sample = val_idx[torch.randint(len(val_idx), (512,), generator=generator)]
                evaluate(sample)
    seconds = time.perf_counter() - start
    print(f"torch {torch.__version__}, {args.threads} threads, eval {args.eval}: {args.steps} steps "
          f"in {seconds:.1f} s, {args.steps / seconds:.1f} steps/s; a {DEFAULT_RUN_STEPS}-step run "
          f"would take {seconds * DEFAULT_RUN_STEPS / args.steps:.0f} s")


if __name__ == "__main__":
    main()
