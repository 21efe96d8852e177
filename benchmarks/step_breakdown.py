"""Where one training step's time goes, op by op, with far less overhead than cProfile.

cProfile charges every Python call a few microseconds, so a step made of many short calls
looks slower than it is and the short calls look bigger than they are. This script instead
wraps each autograd op with two ``perf_counter`` calls (about 1 us each), and times every
node's backward closure the same way, grouped by op. It then runs ``--steps`` steps of the
default experiment and prints milliseconds per step for each op, forward and backward.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/step_breakdown.py

The wrappers replace functions in ``tinygrok.autograd`` for this process only; ops that
call each other are not nested in the listed ops (the model calls them one by one).
"""

import argparse
import collections
import functools
import tempfile
import time

import numpy as np

import tinygrok.autograd as ag
import tinygrok.model as model_module
from tinygrok.train import Run, TrainConfig, warm_up_kernels

OPS = ("linear", "layer_norm", "gelu", "add", "getitem", "reshape", "transpose",
       "concatenate", "embedding", "cross_entropy")


def timed(function, totals, label):
    """``function`` that also adds its seconds to ``totals[label]``."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        totals[label] += time.perf_counter() - start
        return result
    return wrapper


def backward_by_op(totals):
    """A Tensor.backward that does what the real one does, timing each node by its op."""
    def backward(self, grad=None):
        order = self.topological_order()
        for node in order:
            if node._parents:
                node.grad = None
        ag.accumulate_grad(self, np.ones_like(self.data) if grad is None else grad)
        for node in reversed(order):
            if node._backward is not None and node.grad is not None:
                start = time.perf_counter()
                node._backward(node.grad)
                totals[node.op] += time.perf_counter() - start
    return backward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()

    warm_up_kernels()
    run = Run(TrainConfig(task="x_div_y"), out_dir=tempfile.mkdtemp())
    for _ in range(10):
        run.train_step()
    forward, backward = collections.Counter(), collections.Counter()
    for name in OPS:
        setattr(ag, name, timed(getattr(ag, name), forward, name))
    model_module.attention = timed(model_module.attention, forward, "attention")
    ag.Tensor.backward = backward_by_op(backward)
    run.optimizer.step = timed(run.optimizer.step, forward, "AdamW step")

    start = time.perf_counter()
    for _ in range(args.steps):
        run.train_step()
    per_step = (time.perf_counter() - start) / args.steps * 1e3
    print(f"{per_step:.1f} ms a step (with the wrappers), {args.steps} steps")
    for title, totals in (("forward (and AdamW)", forward), ("backward", backward)):
        print(f"{title}: {sum(totals.values()) / args.steps * 1e3:.1f} ms a step")
        for name, seconds in totals.most_common():
            print(f"  {name:>14} {seconds / args.steps * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
