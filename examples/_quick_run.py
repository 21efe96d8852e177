"""What the examples share: their command-line options, threads, and the training runs.

Examples 03-06 look at a trained run. Training one is the slow part, so it happens once:
``get_run(config, runs_dir)`` trains into ``runs_dir/<name>/`` and, when that folder already
holds a complete run with the same settings, simply hands it back. An interrupted run
(Ctrl-C) is resumed from its checkpoint the next time, bit-identically.

Two configurations:

- ``FAST``: x + y mod 23 with a narrow model (d_model 32, 4 heads of 8, 2 layers), batch
  256, learning rate 3e-3 and weight decay 1.0, 1,500 steps. It memorises its 264 training
  pairs by about step 170 and groks (validation accuracy > 0.99) at step 1,280 (seed 0;
  seeds 1, 2 and 3 grokked at steps 1,150, 1,150 and 1,140; measured with one thread, and
  seed 0 gave 1,280 with two threads too). With one thread its 1,500 steps take about
  5 s on the 2-core AVX-512 machine (27-35 s on the older machine it was tuned on).
- ``FULL``: the paper's experiment, x / y mod 97, d_model 128, 7,500 steps of batch 512
  (``TrainConfig()``'s defaults). About 4 to 9 minutes with both cores of a 2-core
  machine, longer on a slower or busy one; the examples use it with ``--full``.

Why the fast configuration differs from the paper. With p = 23 there are only 529 pairs,
and at the paper's learning rate (1e-3) and weight decay (0.5) the model memorises them
quickly but then generalises slowly: validation accuracy was still about 0.2 after 1,500
steps. Tripling the learning rate and doubling the weight decay shortens the wait (the
weights shrink about 6 times faster per step) while keeping its shape: a long stretch of
perfect training accuracy while validation accuracy only creeps up (to about 0.5 by step
1,000), then a jump. The price is
stability: from about step 400 on, both accuracies keep dropping for a step or two and
recovering (the "slingshots" that large learning rates cause with Adam), before and after
grokking. Other settings tried were slower or no steadier: d_model 64, batch 512, p = 31,
learning rate 2e-3, or weight decay 2-3 (which stops the model from memorising at all).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from pathlib import Path

from tinygrok import threads
from tinygrok.tasks import has_modulus
from tinygrok.numba_cache import DamagedKernelCache
from tinygrok.train import (CouldNotWrite, Interrupted, OutOfMemory, TrainConfig, run_state,
                            saved_settings, train, warm_up_kernels)

EXAMPLES = Path(__file__).resolve().parent

FAST = TrainConfig(task="x_plus_y", p=23, seed=0, steps=1500, batch_size=256, lr=3e-3,
                   weight_decay=1.0, d_model=32, heads=4, layers=2, embed_every=50)
FULL = TrainConfig()  # the paper: x_div_y, p = 97, d_model 128, 7,500 steps of 512


def in_notebook() -> bool:
    """True inside Jupyter or VS Code's interactive window (an IPython kernel)."""
    return "ipykernel" in sys.modules


def positive_int(text: str) -> int:
    """--threads: a whole number >= 1 (argparse prints the error as a usage error)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def output_folder(text: str) -> Path:
    """--out: a folder that exists or can be created (not a file, not empty)."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("must name a folder, not be empty")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return path


def make_parser(doc: str | None, full_help: str) -> argparse.ArgumentParser:
    """The options every example has: --full, --out and --threads."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help=full_help)
    parser.add_argument("--out", type=output_folder, default=EXAMPLES,
                        help="folder for the PNGs; training runs go to its runs/ subfolder "
                             "(default: the examples folder)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for NumPy's matrix products and the Numba kernels "
                             "(default: all cores)")
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line's options; in a notebook, where there is none, the defaults.

    Run as a script, an example whose output goes to a pipe that closes early
    (``python 03_train_and_grok.py | head``) then ends quietly, as Unix tools do, instead
    of in a BrokenPipeError traceback. A run it was training resumes from its last
    checkpoint the next time."""
    if not in_notebook() and hasattr(signal, "SIGPIPE"):  # Windows has none
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = parser.parse_args([] if in_notebook() else None)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out {args.out}: cannot create it ({error.strerror})")
    available = threads.available_threads()  # a --threads above NUMBA_NUM_THREADS: capped
    args.threads = threads.set_threads(min(args.threads, available) if args.threads else None)
    return args


def run_name(config: TrainConfig) -> str:
    """E.g. fast-x_plus_y-p23-d32-s0 (the modulus is left out for permutation)."""
    fast = "fast-" if config.steps < TrainConfig().steps else ""
    modulus = "" if config.task == "permutation" else f"-p{config.p}"
    return f"{fast}{config.task}{modulus}-d{config.d_model}-s{config.seed}"


def same_settings(out: Path, config: TrainConfig) -> bool:
    """Does the run in ``out`` have exactly these settings (its config.json)?"""
    saved = saved_settings(json.loads((out / "config.json").read_text()))
    return all(saved.get(name) == value for name, value in dataclasses.asdict(config).items())


def use_the_runs_threads(out: Path) -> bool:
    """Before resuming: another thread count would change the run's numbers, so take the
    count it was made with. False (start again) if this machine has fewer cores."""
    saved = json.loads((out / "config.json").read_text()).get("threads")
    if saved == threads.current_threads():
        return True
    if isinstance(saved, int) and 1 <= saved <= threads.available_threads():
        print(f"resuming with the {saved} thread{'' if saved == 1 else 's'} the run was "
              f"made with")
        threads.set_threads(saved)
        return True
    print(f"the run in {out} was made with {saved} threads, more than this machine has: "
          f"starting it again")
    return False


def get_run(config: TrainConfig, runs_dir: Path, name: str | None = None) -> Path:
    """The folder of a complete run with ``config``: reused, resumed or trained now."""
    out = Path(runs_dir) / (name or run_name(config))
    state = run_state(out)
    resume = False
    if state in ("complete", "resumable") and same_settings(out, config):
        if state == "complete":
            print(f"reusing the finished run in {out}")
            return out
        resume = use_the_runs_threads(out)
    elif state != "missing":
        # Another configuration (or a run killed before its first checkpoint) was here:
        # start again. The summary goes first, so the folder never looks finished.
        for stale in ("summary.json", "checkpoint.npz"):
            (out / stale).unlink(missing_ok=True)

    verb = "resuming" if resume else "training"
    modulus = f"p={config.p}, " if has_modulus(config.task) else ""
    print(f"{verb} {config.task} ({modulus}d_model={config.d_model}, {config.steps} "
          f"steps) into {out} ...")
    # the note the run command prints on a busy machine
    note = threads.busy_machine_note(threads.current_threads(), resuming=resume)
    if note:
        print(note, file=sys.stderr)
    try:
        warm_up_kernels()  # compile the Numba kernels now, so the timing below is training only
    except DamagedKernelCache as damage:
        sys.exit(f"error: {damage}")
    started = time.perf_counter()
    every = max(config.steps // 10, config.log_every)

    def progress(run, row):
        if row["step"] % every == 0 or row["step"] == config.steps:
            print(f"  step {row['step']:>5}  train acc {row['train_acc']:.3f}  "
                  f"val acc {row['val_acc']:.3f}  ({time.perf_counter() - started:.0f} s)",
                  flush=True)

    try:
        summary = train(config, out, resume=resume, on_log=progress)
    except Interrupted as stop:
        print(f"interrupted at step {stop.step}; run the example again to carry on from there",
              file=sys.stderr)
        sys.exit(128 + stop.signal_number)  # 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    except (OutOfMemory, CouldNotWrite) as failure:  # the last checkpoint, if any, is whole
        sys.exit(f"error: {failure.problem}; run the example again to carry on (once there is "
                 f"memory or room)")
    grokked = (f"val acc > 0.99 at step {summary['step_val_acc_99']}" if summary["grokked"]
               else "val acc never > 0.99")
    print(f"done in {time.perf_counter() - started:.0f} s: {grokked}")
    return out
