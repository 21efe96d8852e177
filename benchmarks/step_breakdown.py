"""Where one training step's time goes, op by op, with far less overhead than cProfile.

cProfile charges every Python call a few microseconds, so a step made of many short calls
looks slower than it is and the short calls look bigger than they are. This script instead
wraps each autograd op with two ``perf_counter`` calls (about 1 us each), and times every
node's backward closure the same way, grouped by op. It then runs ``--steps`` steps of the
default experiment and prints milliseconds per step for each op, forward and backward.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/step_breakdown.py

``--eval`` times the whole-split evaluation instead (``train.evaluate`` over the 4,656
validation pairs, no graph), op by op the same way. ``--loop`` runs ``train.train`` itself
for ``--steps`` steps and times the parts its loop calls (steps, evaluation, attention
probes, embeddings, checkpoints), per step, with no op wrappers.

Steps and evaluations run with the Numba kernels on one thread, as in the training loop
(``tinygrok.threads.kernels_on_one_thread``), and the matrix products on one thread per
core, or on ``--threads N`` (fewer when another program keeps a core busy: two threads
sharing a busy core make every product wait). The wrappers replace functions in
``tinygrok.autograd`` for this process only; ops that call each other are not nested in
the listed ops (the model calls them one by one).
"""

import argparse
import collections
import functools
import tempfile
import time

import tinygrok.autograd as ag
import tinygrok.model as model_module
import tinygrok.train as train_module
from tinygrok.threads import kernels_on_one_thread, set_threads
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
    """Tensor.backward with a timer around each node's backward, grouped by op.

    It wraps the nodes' backward functions and then calls the real ``Tensor.backward``, so
    what is timed is exactly what training runs."""
    real_backward = ag.Tensor.backward

    def timed_node(node_backward, op):
        def wrapper(grad_out):
            start = time.perf_counter()
            node_backward(grad_out)
            totals[op] += time.perf_counter() - start
        return wrapper

    def backward(self, grad=None):
        for node in self.topological_order():
            if node._backward is not None:
                node._backward = timed_node(node._backward, node.op)
        real_backward(self, grad)
    return backward


def time_loop_parts(steps, out_dir):
    """Milliseconds per step of each part of a real ``train.train`` run of ``steps`` steps.

    The run's own loop does the work; only the ``Run`` methods it calls are wrapped with
    timers (for this process only), so the schedule measured is the one a run follows.
    """
    totals = collections.Counter()
    parts = {"train_step": "training step",
             "log_metrics": "metrics (whole-split evaluation)",
             "log_attention": "attention probes", "log_embeddings": "embeddings",
             "save_checkpoint": "checkpoints", "summary": "final summary"}
    for method, label in parts.items():
        setattr(Run, method, timed(getattr(Run, method), totals, label))
    start = time.perf_counter()
    train_module.train(TrainConfig(task="x_div_y", steps=steps), out_dir)
    print(f"{(time.perf_counter() - start) / steps * 1e3:.1f} ms a step, {steps} steps")
    for name, seconds in totals.most_common():
        print(f"  {name:>34} {seconds / steps * 1e3:6.2f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100,
                        help="steps timed (--eval: evaluations; --loop: loop steps)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--eval", action="store_true",
                      help="the whole-split evaluation, op by op")
    what.add_argument("--loop", action="store_true", help="the parts of the training loop")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the matrix products (default: one per core, as the "
                             "run command); fewer if other programs keep a core busy")
    args = parser.parse_args()
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")

    threads = set_threads(args.threads)
    print(f"{threads} thread{'' if threads == 1 else 's'} for the matrix products")
    warm_up_kernels()
    folder = tempfile.TemporaryDirectory()  # removed when the script ends
    if args.loop:
        time_loop_parts(args.steps, folder.name)
        return
    run = Run(TrainConfig(task="x_div_y"), out_dir=folder.name)
    for _ in range(10):
        run.train_step()
    forward, backward = collections.Counter(), collections.Counter()
    for name in OPS:
        setattr(ag, name, timed(getattr(ag, name), forward, name))
    model_module.attention = timed(model_module.attention, forward, "attention")
    ag.Tensor.backward = backward_by_op(backward)
    run.optimizer.step = timed(run.optimizer.step, forward, "AdamW step")

    def evaluate():
        return train_module.evaluate(run.model, run.val_inputs, run.val_labels,
                                     run.config.eval_batch_size)

    work, unit = (evaluate, "an evaluation") if args.eval else (run.train_step, "a step")
    with kernels_on_one_thread():  # as the training loop runs them
        start = time.perf_counter()
        for _ in range(args.steps):
            work()
        per_step = (time.perf_counter() - start) / args.steps * 1e3
    print(f"{per_step:.1f} ms {unit} (with the wrappers), {args.steps} times")
    first = "forward" if args.eval else "forward (and AdamW)"
    for title, totals in ((first, forward), ("backward", backward)):
        if not totals:
            continue
        print(f"{title}: {sum(totals.values()) / args.steps * 1e3:.1f} ms {unit}")
        for name, seconds in totals.most_common():
            print(f"  {name:>14} {seconds / args.steps * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
