"""``python -m tinygrok.run``: train one grokking run and write its run directory.

    python -m tinygrok.run --task x_div_y                 # x ÷ y mod 97 with the paper's settings
    python -m tinygrok.run --task x_plus_y --seed 1 --steps 3000
    python -m tinygrok.run --out runs/x_div_y-s0 --resume # carry on after Ctrl-C

Every option is checked before anything is written; a bad one gets click's usage line, a
one-line error saying what is accepted, and exit code 2. So does a folder in which another
process is training (the error names it). Ctrl-C saves a checkpoint and exits with code
130 (SIGTERM: 143; SIGHUP, a closed terminal: 129); a loss that turns NaN, or a file that
cannot be written (a full disk), stops the run with code 1. If the terminal or the pipe
that shows the progress goes away (``| head``), the run goes on without it.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import click

from tinygrok import runfiles
from tinygrok import threads as thread_control
from tinygrok.config import DEFAULTS  # the options' defaults: the paper's (TrainConfig's)
from tinygrok.numba_cache import DamagedKernelCache
from tinygrok.tasks import TASK_NAMES, EmptySplit, has_modulus, is_prime, make_task, split
from tinygrok.terminal import show, stop_signals
from tinygrok.train import (CHECKPOINT, SUMMARY, CouldNotWrite, DamagedRun, Interrupted,
                            NonFiniteLoss, OutOfMemory, Run, RunFolderGone, StoppedByFailure,
                            TrainConfig, run_state, saved_settings, train, warm_up_kernels)

POSITIVE = click.IntRange(min=1)
NOTHING_WRITTEN = "interrupted before training started; nothing was written"
NO_MODULUS = ("permutation composes the elements of S5 and has no modulus; --p applies to the "
              "modular tasks only")


def set_threads(threads: int | None) -> int:
    """--threads for BLAS and the Numba kernels (see ``tinygrok.threads``)."""
    try:
        return thread_control.set_threads(threads)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--threads") from None


def finite(ctx, param, value):
    """A float option must be a number: NaN and infinity pass click's range checks."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def check_settings(config: TrainConfig, p_given: bool = False,
                   probe_given: bool = False) -> None:
    """Refuse settings that cannot run, naming the option where one is to blame.

    Memory comes first, before anything builds the task's table (with --p 100000 that
    alone would need 1 TB) or tests a huge p for primality (trial division: hours).
    ``p_given``: --p was on the command line (permutation has no modulus to give).
    ``probe_given``: so was --probe-size. The default, 64, is quietly cut to a smaller
    split's size (a task with p = 7 has 24 training pairs); a number typed is refused
    instead, since config.json would record probes the run never logs.
    """
    try:
        config.check_memory()
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if config.task == "x_div_y" and not is_prime(config.p):
        raise click.BadParameter(f"x_div_y needs a prime modulus (got {config.p}): division "
                                 f"mod p is only defined for every y != 0 when p is prime",
                                 param_hint="--p")
    if not has_modulus(config.task) and p_given:
        raise click.BadParameter(NO_MODULUS, param_hint="--p")
    if config.d_model % config.heads:
        raise click.BadParameter(f"{config.heads} heads do not divide d-model "
                                 f"{config.d_model}", param_hint="--heads")
    try:
        config.validate()
    except EmptySplit as error:
        n = error.num_examples
        raise click.BadParameter(f"{error.train_frac} of the {n} examples leaves the train or "
                                 f"the validation split empty; the train split takes "
                                 f"floor(fraction x {n}) of them, and each side needs one",
                                 param_hint="--train-frac") from None
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if probe_given:
        sides = split(make_task(config.task, config.p), config.train_frac, config.seed)
        smaller = min(len(side) for side in sides)
        if config.probe_size > smaller:
            raise click.BadParameter(f"{config.probe_size} probes are taken from each split, "
                                     f"and the smaller split holds {smaller} examples: at "
                                     f"most {smaller}", param_hint="--probe-size")


FORCE_DELETES = (SUMMARY, CHECKPOINT, "metrics.csv", "timing.csv", "attention.npz",
                 "embeddings.npz", "config.json", "analysis.json")  # and the figures/ folder


def remove_run_files(out: Path) -> None:
    """--force: delete a previous run's files, summary first so it never looks complete."""
    for name in FORCE_DELETES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "figures", ignore_errors=True)


def check_force_can_delete(out: Path) -> None:
    """--force deletes a run's files, each a file: a folder under one of their names is not
    a run's (someone made it), and deleting it is not --force's to do."""
    for name in FORCE_DELETES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            raise click.UsageError(f"{path} is a folder, not a file a run writes, and --force "
                                   f"deletes only a run's own files; move it out of {out} or "
                                   f"choose another --out")


def logged_rows(metrics: Path) -> bool:
    """Does a metrics.csv hold any logged step (more than its header line)? (Not read if it
    is not a regular file: a named pipe would wait for a writer forever.)"""
    if not metrics.is_file():
        return False
    try:
        return len(metrics.read_text().splitlines()) > 1
    except OSError:
        return False


def longer_run_hint(ctx: click.Context, out: Path) -> str:
    """For a complete run: the command that trains it again with more steps (the --steps
    typed with --resume if that is more, else twice the run's), into a new folder (a run's
    step count is one of its settings, so --resume cannot extend it). Every other option
    is taken from its config.json, so that nothing falls back to a default."""
    try:
        saved = saved_settings(json.loads((out / "config.json").read_text()))
        parts = [f"--task {saved['task']}", f"--seed {saved['seed']}"]
        for param in ctx.command.params:  # the other settings the command line can give
            name = param.name
            if name in saved and name not in ("task", "seed", "steps") \
                    and saved[name] != param.default:
                parts.append(f"{param.opts[0]} {saved[name]}")
        typed = ctx.params.get("steps")
        if ctx.get_parameter_source("steps") == click.core.ParameterSource.DEFAULT \
                or not typed > saved["steps"]:
            typed = 2 * saved["steps"]
        parts.append(f"--steps {typed}")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # a hand-edited file
        return ""
    longer = out.with_name(f"{out.name}-longer")
    return (f". To train it for more steps, train it again into another folder, e.g. "
            f"python -m tinygrok.run {' '.join(parts)} --out {shlex.quote(str(longer))}")


def resolve_resume(ctx: click.Context, out: Path, options: dict) -> tuple[dict, int]:
    """With --resume, every setting and the thread count come from the run's config.json;
    options given on the command line must agree with it. (Another thread count would
    change the numbers: the resumed run would no longer match an uninterrupted one.)
    A run that stopped before its first checkpoint ("started") and logged no step is
    started again from step 0 with those settings: the same run, since nothing of it was
    kept. One that logged steps but lost its checkpoint cannot be resumed exactly."""
    state = run_state(out)
    if state == "complete":
        raise click.UsageError(f"{out} is already complete (its summary.json is whole); "
                               f"nothing to resume{longer_run_hint(ctx, out)}")
    if state not in ("resumable", "started"):
        raise click.UsageError(f"{out} has no checkpoint to resume from: there is no run "
                               f"there; start one without --resume")
    if state == "started" and logged_rows(out / "metrics.csv"):
        raise click.UsageError(f"{out} has logged steps but no checkpoint to resume them from; "
                               f"start it again with --force")
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise click.UsageError(f"cannot resume {out}: config.json cannot be read "
                               f"({error})") from None
    if not isinstance(saved, dict):
        raise click.UsageError(f"cannot resume {out}: config.json holds no settings")
    saved = saved_settings(saved)
    p_given = ctx.get_parameter_source("p") != click.core.ParameterSource.DEFAULT
    if p_given and not has_modulus(saved.get("task")):  # as a new permutation run would say
        raise click.BadParameter(NO_MODULUS, param_hint="--p")
    for name, value in {**options, "threads": ctx.params["threads"]}.items():
        given = ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        if given and name in saved and saved[name] != value:
            raise click.UsageError(f"--{name.replace('_', '-')} {value} differs from the run "
                                   f"being resumed ({saved[name]}); leave it out to resume")
    threads = saved.get("threads")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise click.UsageError(f"cannot resume {out}: config.json's thread count is {threads!r}, "
                               f"not a positive integer")
    if threads > thread_control.available_threads():
        raise click.UsageError(f"{out} was run with {threads} threads and this process can use "
                               f"{thread_control.available_threads()}; another count gives "
                               f"other numbers. To resume it exactly (slower with fewer cores): "
                               f"NUMBA_NUM_THREADS={threads} python -m tinygrok.run --out "
                               f"{out} --resume")
    fields = TrainConfig.__dataclass_fields__
    missing = [name for name in fields if name not in saved]
    if missing:
        raise click.UsageError(f"cannot resume {out}: config.json lacks {', '.join(missing)}")
    return {name: saved[name] for name in fields}, threads


class Progress:
    """A progress bar on a terminal; otherwise one line each time the run passes a multiple
    of ``every`` steps (at the first row logged at or after it), and one at the end.

    The bar is as wide as the terminal leaves room for, so that each redraw stays on one
    line (a longer line wraps, and every redraw would leave a line behind); a terminal too
    narrow for the numbers, or one that cannot redraw (TERM=dumb), gets the lines."""

    def __init__(self, total: int, every: int = 500):
        self.total, self.every = total, every
        self.last_step, self.last_time = None, time.perf_counter()
        self.rate = 0.0
        self.bar = None
        self.gone = False  # whether the terminal or pipe has gone (terminal.py)
        # "[####    ]  1500/7500  00:03:41  train acc 1.000  val acc 0.031  29 steps/s"
        numbers = len(f"[]  {total}/{total}  00:00:00  train acc 1.000  val acc 1.000  "
                      f"99 steps/s")
        if (sys.stdout is not None and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
                and shutil.get_terminal_size().columns >= numbers + 10):
            bar = click.progressbar(length=total, show_pos=True, width=0,  # 0: fill the line
                                    bar_template="[%(bar)s]  %(info)s",
                                    item_show_func=lambda text: text)
            try:
                bar.__enter__()
                self.bar = bar
            except OSError:
                self.went_away()

    def __call__(self, run, row) -> None:
        if self.gone:
            return
        try:
            self.draw(run, row)
        except OSError:
            self.went_away()

    def went_away(self) -> None:
        """The terminal or pipe has gone (terminal.py): the run trains on without a display."""
        self.bar, self.gone = None, True

    def draw(self, run, row) -> None:
        now = time.perf_counter()
        if self.last_step is None:  # the first row (after a resume, not at step 0)
            self.last_step = row["step"] - run.config.log_every
            if self.bar is not None:
                self.bar.update(self.last_step)
        elif now > self.last_time:
            self.rate = (row["step"] - self.last_step) / (now - self.last_time)
        text = (f"train acc {row['train_acc']:.3f}  val acc {row['val_acc']:.3f}  "
                f"{self.rate:.0f} steps/s")
        if self.bar is not None:
            self.bar.update(row["step"] - self.last_step, text)
        elif row["step"] // self.every > self.last_step // self.every or row["step"] == self.total:
            click.echo(f"step {row['step']:>6}/{self.total}  {text}")
        self.last_step, self.last_time = row["step"], now

    def close(self) -> None:
        if self.bar is not None:
            try:
                self.bar.__exit__(None, None, None)
            except OSError:
                self.went_away()


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--task", type=click.Choice(TASK_NAMES), default=DEFAULTS["task"], help="What to learn.")
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULTS["seed"],
              help="Seeds the split, the initial weights and the batches.")
@click.option("--steps", type=POSITIVE, default=DEFAULTS["steps"], help="Optimisation steps.")
@click.option("--batch-size", type=POSITIVE, default=DEFAULTS["batch_size"],
              help="Train pairs per step, drawn with replacement.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS["lr"],
              callback=finite, help="Peak learning rate of AdamW.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=DEFAULTS["weight_decay"],
              callback=finite, help="AdamW's decoupled weight decay, on every parameter.")
@click.option("--warmup", type=click.IntRange(min=0), default=DEFAULTS["warmup"],
              help="Steps of linear learning-rate warm-up.")
@click.option("--train-frac", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              callback=finite, default=DEFAULTS["train_frac"],
              help="Share of all pairs used for training.")
@click.option("--p", "p", type=click.IntRange(min=2), default=DEFAULTS["p"],
              help="Modulus of the arithmetic tasks (prime for x_div_y; permutation has none).")
@click.option("--d-model", type=POSITIVE, default=DEFAULTS["d_model"], help="Width of the model.")
@click.option("--heads", type=POSITIVE, default=DEFAULTS["heads"], help="Attention heads per layer.")
@click.option("--layers", type=POSITIVE, default=DEFAULTS["layers"], help="Transformer blocks.")
@click.option("--log-every", type=POSITIVE, default=DEFAULTS["log_every"],
              help="Steps between metrics rows (whole validation split) and attention logs.")
@click.option("--probe-size", type=POSITIVE, default=DEFAULTS["probe_size"],
              help="Examples from each split whose attention is logged (at most a split's "
                   "size; the default is cut to a smaller split's).")
@click.option("--out", type=click.Path(), default=None,
              help="Run directory.  [default: runs/<task>-s<seed>]")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its checkpoint, with its own settings (one "
                   "that stopped before its first checkpoint starts again from step 0).")
@click.option("--force", is_flag=True,
              help="Overwrite the run in --out (complete, unfinished or started).")
@click.option("--threads", type=POSITIVE, default=None,
              help="Threads for the matrix products, which fix the numbers (the kernels run "
                   "on one inside the training loop).  [default: all cores]")
@click.pass_context
def main(ctx, out, resume, force, threads, **options):
    """Train the paper's transformer on one task until it groks (or the steps run out)."""
    # The run folder is locked against other runs (runfiles.lock_run_folder): an existing
    # folder before its state is read (checked_settings), a new one once it is created just
    # before training (claim_for_training); train() finds the lock held, and it is let go
    # when the command ends.
    try:
        config, out, used_threads, state = checked_settings(ctx, out, resume, force, threads,
                                                            options)
    except KeyboardInterrupt:  # click would say "Aborted!" and exit 1
        click.echo(f"\n{NOTHING_WRITTEN}", err=True)
        sys.exit(130)
    if resume and state == "started":  # nothing to resume from: the same run, from step 0
        show(f"{out} stopped before its first checkpoint: starting it again from step 0 with "
             f"its own settings")
        resume, force = False, True
    try:
        start_training(config, out, resume, force, used_threads, state)
    finally:
        runfiles.unlock_run_folder(out)  # taken by checked_settings or claim_for_training


def checked_settings(ctx, out, resume, force, threads,
                     options) -> tuple[TrainConfig, Path, int, str]:
    """Every check of the options against each other, the folder and any run in it, before
    anything is written: the settings to train with, the folder, the thread count and the
    folder's ``run_state``. The thread count is also applied here, to the whole process's
    BLAS and Numba pools (``set_threads``, which refuses more threads than Numba may use:
    NUMBA_NUM_THREADS, by default the cores). An existing folder is locked from here on
    (``runfiles.lock_run_folder``); a new one only once it is created, just before training
    (``claim_for_training``)."""
    if out == "":
        raise click.BadParameter("must name a folder, not be empty", param_hint="--out")
    default = Path("runs") / f"{options['task']}-s{options['seed']}"
    out = runfiles.home_expanded(out) if out else default
    p_given = ctx.get_parameter_source("p") != click.core.ParameterSource.DEFAULT
    if not resume:  # a resumed run's settings are its config.json's, checked below
        probe_given = ctx.get_parameter_source("probe_size") != click.core.ParameterSource.DEFAULT
        check_settings(TrainConfig(**options), p_given, probe_given)
    if resume and force:
        raise click.UsageError("--resume and --force contradict each other; choose one")
    runfiles.check_writable(out)
    if out.is_dir():  # locked before its state is read; train() locks a folder it creates
        try:
            runfiles.lock_run_folder(out)
        except runfiles.FolderInUse as busy:
            raise click.UsageError(str(busy)) from None
    try:
        config, threads = checked_folder(ctx, out, resume, force, threads, options)
        return config, out, set_threads(threads), run_state(out)
    except BaseException:
        runfiles.unlock_run_folder(out)  # refused: the folder is left as it was
        raise


def checked_folder(ctx, out, resume, force, threads, options) -> tuple[TrainConfig, int]:
    """What is already in ``out`` against what was asked (start, --resume or --force): the
    settings to train with and the thread count (with --resume, the run's own)."""
    state = run_state(out)
    if state == "foreign":
        raise click.UsageError(f"{out} is not empty and holds no tinygrok run (no config.json "
                               f"that a run wrote); choose another --out (--force only "
                               f"overwrites runs)")
    if resume:
        options, threads = resolve_resume(ctx, out, options)
    elif state == "complete" and not force:
        raise click.UsageError(f"{out} already holds a complete run; use --force to "
                               f"overwrite it or --out for another folder")
    elif state == "resumable" and not force:
        raise click.UsageError(f"{out} holds an unfinished run; continue it with --resume "
                               f"or overwrite it with --force")
    elif state == "started" and not force and logged_rows(out / "metrics.csv"):
        raise click.UsageError(f"{out} has logged steps but no checkpoint to resume them from "
                               f"(its files were being deleted, or were damaged); start it "
                               f"again with --force")
    elif state == "started" and not force:
        raise click.UsageError(f"{out} holds a run that stopped before its first checkpoint; "
                               f"start it again with --resume (its own settings) or --force "
                               f"(these options)")
    if force:
        check_force_can_delete(out)
    config = TrainConfig(**options)
    if resume:  # the run's own settings: errors name them as config.json does
        try:
            config.validate()
        except (TypeError, ValueError) as error:  # a hand-edited config.json
            raise click.UsageError(f"cannot resume {out}: config.json holds settings that "
                                   f"cannot run ({error})") from None
    return config, threads


def claim_for_training(out: Path, state_seen: str) -> bool:
    """Create ``out`` if it is new and lock it, just before training starts; refuse (exit 2)
    if another run has taken it, or written in it, since the checks saw it ``state_seen``.
    Returns whether this created the folder."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        runfiles.lock_run_folder(out)
    except runfiles.FolderInUse as busy:
        raise click.UsageError(str(busy)) from None
    if run_state(out) != state_seen:
        raise click.UsageError(f"{out} changed while this run was starting: another run wrote "
                               f"in it; nothing was written")
    return created


def start_training(config: TrainConfig, out: Path, resume: bool, force: bool,
                   used_threads: int, state: str) -> None:
    """Prepare the kernels, train with a progress bar, and say where everything went.
    ``state`` is the folder's ``run_state`` when the options were checked."""
    # From here until training starts, Ctrl-C, SIGTERM or SIGHUP only raise a flag: a
    # KeyboardInterrupt raised inside one of Numba's callbacks from C would be printed and
    # lost, and click would report any other as "Aborted!" with exit code 1.
    signals, removed, created, progress = [], False, False, None
    previous = {number: signal.signal(number, lambda n, _: signals.append(n))
                for number in stop_signals()}
    try:
        resuming = ""
        if resume:
            try:  # read every file now: a damaged run is refused before anything starts
                checked = Run(config, out)  # a throwaway Run; train() makes its own
                checked.load_checkpoint()
                resuming = f", resuming from its checkpoint at step {checked.step}"
            except DamagedRun as damage:
                raise click.UsageError(str(damage)) from None
            except MemoryError as error:  # as in training (train.OutOfMemory): one line
                show(f"error: out of memory while reading the run in {out} "
                     f"({str(error) or 'MemoryError'}); its files are unchanged: with more "
                     f"memory free, run the command again", err=True)
                sys.exit(1)
        modulus = f" (p={config.p})" if has_modulus(config.task) else ""
        show(f"tinygrok: {config.task}{modulus}, seed {config.seed}, {config.steps} steps, "
             f"{used_threads} thread{'' if used_threads == 1 else 's'} -> {out}{resuming}")
        note = thread_control.busy_machine_note(used_threads, resuming=resume)
        if note:
            show(note, err=True)
        show("preparing the Numba kernels (compiled once, then loaded from cache)...")
        try:
            warm_up_kernels()
        except DamagedKernelCache as damage:  # nothing is written yet
            show(f"error: {damage}", err=True)
            sys.exit(1)
        if not signals:  # only now that all is checked
            created = claim_for_training(out, state)
        if force and not signals:
            remove_run_files(out)  # whole: a signal now waits until the files are gone
            removed = True
        if not signals:
            progress = Progress(config.steps)
    finally:  # train() puts in its own handlers at once (a checkpoint on Ctrl-C)
        for number, handler in previous.items():
            signal.signal(number, handler)
    if signals:
        if progress is not None:
            progress.close()
        if created and not any(out.iterdir()):
            out.rmdir()  # nothing was written, not even the folder
        deleted = f" (--force had deleted the run that was in {out})" if removed else ""
        show(f"\n{NOTHING_WRITTEN}{deleted}", err=True)
        sys.exit(128 + signals[0])
    try:
        summary = train(config, out, resume=resume, on_log=progress)
    except Interrupted as stop:
        progress.close()
        show(f"\ninterrupted at step {stop.step}; checkpoint saved. Continue with:\n"
             f"  {resume_command(out)}", err=True)
        sys.exit(128 + stop.signal_number)  # the shell's convention: 130 for Ctrl-C
    except NonFiniteLoss as failure:
        progress.close()
        show(f"\nerror: {failure}", err=True)
        sys.exit(1)
    except RunFolderGone as failure:
        progress.close()
        if failure.moved_to and failure.checkpoint_step is not None:
            show(f"\nerror: {failure.problem}; its files, up to the checkpoint at step "
                 f"{failure.checkpoint_step}, are there.\nContinue with:\n"
                 f"  {resume_command(failure.moved_to)}", err=True)
        else:
            show(f"\nerror: {failure}", err=True)
        sys.exit(1)
    except OutOfMemory as failure:  # NumPy's MemoryError: the last checkpoint is still whole
        progress.close()
        say_how_to_go_on(failure, out, "With more memory free (close other programs, or raise "
                                        "the limit)")
        sys.exit(1)
    except CouldNotWrite as failure:  # a full disk, say: the last checkpoint is still whole
        progress.close()
        say_how_to_go_on(failure, out, "Once the folder can be written again")
        sys.exit(1)
    progress.close()
    # The run is complete: a Ctrl-C now would only turn its last lines into "Aborted!".
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in stop_signals()}
    try:
        say_where_everything_went(summary, config, out, resume)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def say_how_to_go_on(failure: StoppedByFailure, out: Path, once: str) -> None:
    """The error that stopped the run, then how to go on from what it kept: ``once`` says
    what must change first ("Once the folder can be written again")."""
    # Each first line is whole: a sweep quotes it as the run's error.
    if failure.checkpoint_step is not None:
        show(f"\nerror: {failure.problem}; its checkpoint at step {failure.checkpoint_step} "
             f"is kept.\n{once}, continue with:\n  {resume_command(out)}", err=True)
    elif run_state(out) == "started":  # --resume starts it again with its own settings
        show(f"\nerror: {failure.problem}; no checkpoint had been saved yet.\n{once}, start "
             f"it from step 0 with:\n  {resume_command(out)}", err=True)
    else:
        show(f"\nerror: {failure.problem}; nothing had been saved yet: run the command again",
             err=True)


def resume_command(out) -> str:
    """The command that resumes the run in ``out``, quoted for the shell (a folder name
    with a space in it, say)."""
    return f"python -m tinygrok.run --out {shlex.quote(str(out))} --resume"


def say_where_everything_went(summary: dict, config: TrainConfig, out: Path,
                              resumed: bool) -> None:
    grok = summary["step_val_acc_99"]
    grokked = f"step {grok}" if summary["grokked"] else f"never (budget {config.steps})"
    before = " of training, counting the time before it was resumed" if resumed else ""
    show(f"done in {summary['wall_seconds']:.0f} s{before}.  val acc > 0.99 at: {grokked}")
    show(f"final train acc {summary['final_train_acc']:.4f} (over the whole train split; the "
         f"progress lines' is over the last batches), val acc {summary['final_val_acc']:.4f}")
    show(f"run directory: {out}/ (config.json, metrics.csv, timing.csv, attention.npz, "
         f"embeddings.npz, checkpoint.npz, summary.json)")
    show(f"analyse it with: python -m tinygrok.analyze {shlex.quote(str(out))}")


if __name__ == "__main__":
    from tinygrok.startup_signals import restore_handlers

    restore_handlers()  # the imports are done: Ctrl-C is Python's again (startup_signals.py)
    main()
