"""The training loop: the paper's experiment, logged, checkpointed and resumable.

One step:  draw a batch of 512 train pairs (with replacement) -> forward -> cross-entropy
-> backward -> AdamW.  Every ``log_every`` steps a row is logged: the running train loss
and accuracy of the steps since the last row, the loss and accuracy on the *whole*
validation split, and the total weight norm; the probe set's attention patterns are
recorded too. The rows reach metrics.csv (and the patterns attention.npz) when those files
are rewritten, just before each checkpoint and at the end. See ``tinygrok.runfiles`` for
the run directory.

Nothing is lost on interruption. A checkpoint (parameters, AdamW moments, the batch
sampler's RNG state, the half-finished log window) is written every ``checkpoint_every``
steps and on Ctrl-C, SIGTERM or SIGHUP (a closed terminal); the metrics, attention and
embedding files are rewritten just before it, so they always reach at least as far as the
checkpoint. ``resume=True`` loads the checkpoint, keeps only the logged rows up to its
step, and carries on: the result is bit-identical to a run that was never interrupted (same
seed, same threads). A run whose files are damaged, or whose logs stop short of the
checkpoint, is refused.

A loss that is not finite stops the run at once; the last good checkpoint is kept. So does
a file that cannot be written (a full disk): every file is written whole or not at all, so
the run resumes from its last checkpoint once there is room.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import signal
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from tinygrok import __version__, runfiles
from tinygrok.adamw import AdamW
from tinygrok.autograd import no_grad
from tinygrok.config import TrainConfig, saved_settings  # noqa: F401  (train.TrainConfig too)
from tinygrok.model import Transformer
from tinygrok.numba_cache import DamagedKernelCache
from tinygrok.tasks import make_task, sample_batch, split
from tinygrok.terminal import stop_signals
from tinygrok.threads import current_threads, kernels_on_one_thread

CHECKPOINT = "checkpoint.npz"
SUMMARY = "summary.json"


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; ``step`` says when."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"the loss became {loss} at step {step}; the run stopped and kept its "
                         f"last good checkpoint")
        self.step = step


class Interrupted(RuntimeError):
    """Ctrl-C (SIGINT), SIGTERM or SIGHUP: the run saved a checkpoint at ``step`` and
    stopped. ``signal_number`` says which signal it was."""

    def __init__(self, step: int, signal_number: int = signal.SIGINT):
        name = signal.Signals(signal_number).name
        super().__init__(f"interrupted ({name}) at step {step}; checkpoint saved, continue "
                         f"with train(..., resume=True) (--resume on the command line)")
        self.step, self.signal_number = step, signal_number


class StoppedByFailure(RuntimeError):
    """The run stopped at ``step`` because something outside it failed; ``problem`` says
    what. ``checkpoint_step`` is the step of the last checkpoint it saved, kept whole
    (every file is written to a temporary name, then renamed), or None if it had saved
    none yet; ``once`` says what must change before it can go on from there."""

    def __init__(self, problem: str, step: int, checkpoint_step: int | None, once: str):
        self.problem, self.step, self.checkpoint_step = problem, step, checkpoint_step
        if checkpoint_step is None:
            kept = "no checkpoint had been saved yet: start the run again"
        else:
            kept = (f"its checkpoint at step {checkpoint_step} is kept: {once}, continue "
                    f"with train(..., resume=True)")
        super().__init__(f"{problem}; {kept}")


class CouldNotWrite(StoppedByFailure):
    """A run file could not be written (a full disk, a folder made read-only)."""

    def __init__(self, error: OSError, step: int, checkpoint_step: int | None):
        what = f"cannot write {error.filename}" if error.filename else "cannot write"
        super().__init__(f"{what}: {error.strerror or error} (at step {step})", step,
                         checkpoint_step, "once the folder can be written again")


class OutOfMemory(StoppedByFailure):
    """NumPy (or Python) could not allocate memory after ``step``, the last step the run
    completed: the machine ran short of memory, or a limit did (``ulimit -v``, as shared
    servers set).

    Where the system kills a process that runs out of memory instead, as Linux's OOM killer
    does, there is no error to catch: the last checkpoint is all that is left."""

    def __init__(self, error: MemoryError, step: int, checkpoint_step: int | None):
        super().__init__(f"out of memory after step {step} ({str(error) or 'MemoryError'})",
                         step, checkpoint_step, "with more memory")


class RunFolderGone(RuntimeError):
    """The run folder was deleted, or ``out`` no longer leads to it (moved, replaced),
    while the run trained in it (``runfiles.what_became_of``). The run stops at ``step``
    and writes nothing more: not into a new folder of the same name, which would then look
    like a run. A moved folder (now at ``moved_to``, where the system says) still holds the
    files up to ``checkpoint_step``."""

    def __init__(self, out: Path, what: str, where: str | None, step: int,
                 checkpoint_step: int | None):
        self.out, self.step, self.checkpoint_step = out, step, checkpoint_step
        self.moved_to = where
        if what == "deleted":
            happened = f"{out} was deleted"
        elif where is not None:
            happened = f"{out} no longer leads to the run's folder, which is now {where},"
        else:
            happened = f"{out} no longer leads to the run's folder (moved or replaced)"
        self.problem = (f"{happened} while the run trained in it (noticed at step {step}); "
                        f"the run stopped and wrote nothing more")
        if what == "deleted":
            kept = "nothing is kept"
        elif where is not None and checkpoint_step is not None:
            kept = (f"its files, up to the checkpoint at step {checkpoint_step}, are there: "
                    f"continue with train(..., resume=True) on {where}")
        else:
            kept = "if the folder still exists elsewhere, resume it there"
        super().__init__(f"{self.problem}; {kept}")


class DamagedRun(ValueError):
    """A run cannot be resumed exactly: a file is missing or unreadable, or its logs do
    not reach the checkpoint's step."""


def log_steps(last: int, every: int, total: int) -> list[int]:
    """The steps 1..last at which something logged every ``every`` steps was logged (the
    final step ``total`` is always logged)."""
    return [s for s in range(1, last + 1) if s % every == 0 or s == total]


def evaluate(model: Transformer, inputs: np.ndarray, labels: np.ndarray, batch_size: int):
    """Mean cross-entropy and accuracy over all examples, in batches, with no graph."""
    total_loss, correct = 0.0, 0
    with no_grad():
        for start in range(0, len(labels), batch_size):
            x, y = inputs[start:start + batch_size], labels[start:start + batch_size]
            loss, logits = model.loss(x, y)
            total_loss += loss.item() * len(y)
            correct += int((logits.data.argmax(axis=1) == y).sum())
    return total_loss / len(labels), correct / len(labels)


def weight_norm(model: Transformer) -> float:
    """sqrt of the sum of squares of every parameter. Each parameter's sum of squares is a
    dot product in the parameter's own dtype (float32 for the default model: np.dot does not
    widen), and the total over the parameters is added up in float64 (Python floats)."""
    return math.sqrt(sum(float(np.dot(p.data.ravel(), p.data.ravel())) for p in model.parameters()))


def new_model(config: TrainConfig, task) -> Transformer:
    """The run's model at initialisation (``task`` from ``make_task``). Five position rows,
    as in the paper's "sequence length 5"; the inputs use four, and the fifth only shrinks
    under weight decay."""
    return Transformer(len(task.vocab), task.num_classes, config.d_model, config.heads,
                       config.layers, max_len=5, seed=config.seed)


def choose_probes(train_idx, val_idx, probe_size: int, seed: int):
    """A fixed set of examples whose attention is logged: ``probe_size`` from each split."""
    rng = np.random.default_rng([seed, 2])
    from_train = rng.choice(train_idx, size=min(probe_size, len(train_idx)), replace=False)
    from_val = rng.choice(val_idx, size=min(probe_size, len(val_idx)), replace=False)
    split_of = np.concatenate([np.zeros(len(from_train)), np.ones(len(from_val))]).astype(np.int8)
    return np.concatenate([from_train, from_val]), split_of


class Run:
    """The state of one training run and the files it keeps in ``out_dir``."""

    def __init__(self, config: TrainConfig, out_dir: Path):
        config.validate()
        self.config, self.out = config, Path(out_dir)
        c = config
        self.task = make_task(c.task, c.p)
        self.train_idx, self.val_idx = split(self.task, c.train_frac, c.seed)
        self.model = new_model(c, self.task)
        self.optimizer = AdamW(self.model.parameters(), lr=c.lr, betas=(0.9, 0.98), eps=1e-8,
                               weight_decay=c.weight_decay, warmup_steps=c.warmup)
        self.batch_rng = np.random.default_rng([c.seed, 1])
        self.probe_idx, self.probe_split = choose_probes(self.train_idx, self.val_idx,
                                                         c.probe_size, c.seed)
        self.val_inputs = self.task.inputs[self.val_idx]
        self.val_labels = self.task.labels[self.val_idx]
        self.step = 0
        self.window = {"loss": 0.0, "correct": 0, "seen": 0}  # the log window so far
        self.metrics, self.timing = [], []
        self.attention_steps, self.patterns = [], []
        self.embedding_steps, self.embeddings = [], []
        self.elapsed_before = 0.0  # wall seconds spent before a resume
        self.checkpoint_step = None  # the step of the last checkpoint saved or loaded
        self.folder = None  # a descriptor of the run folder, once train() has claimed it

    # -- what gets logged ---------------------------------------------------------------
    def log_attention(self) -> None:
        with no_grad():
            _, patterns = self.model(self.task.inputs[self.probe_idx], return_attention=True)
        self.attention_steps.append(self.step)
        # each layer gives (N, H, T, T); the file keeps (L, H, N, T, T) per step
        self.patterns.append(np.stack(patterns).transpose(0, 2, 1, 3, 4).astype(np.float16))

    def log_embeddings(self) -> None:
        self.embedding_steps.append(self.step)
        self.embeddings.append(self.model.token_embeddings.weight.data.copy())

    def log_metrics(self, lr: float, seconds: float) -> dict:
        val_loss, val_acc = evaluate(self.model, self.val_inputs, self.val_labels,
                                     self.config.eval_batch_size)
        w = self.window
        row = {"step": self.step, "lr": float(lr), "train_loss": w["loss"] / w["seen"],
               "train_acc": w["correct"] / w["seen"], "val_loss": float(val_loss),
               "val_acc": float(val_acc), "weight_norm": weight_norm(self.model)}
        self.metrics.append(row)
        self.timing.append({"step": self.step, "seconds": round(seconds, 3)})
        self.window = {"loss": 0.0, "correct": 0, "seen": 0}
        return row

    # -- one optimisation step ------------------------------------------------------------
    def train_step(self) -> float:
        """Forward, backward and AdamW on one batch; returns the learning rate used."""
        batch = sample_batch(self.batch_rng, self.train_idx, self.config.batch_size)
        labels = self.task.labels[batch]
        self.optimizer.zero_grad()
        loss, logits = self.model.loss(self.task.inputs[batch], labels)
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(self.step + 1, value)
        loss.backward()
        lr = self.optimizer.current_lr()
        self.optimizer.step()
        self.step += 1
        self.window["loss"] += value * len(labels)
        self.window["correct"] += int((logits.data.argmax(axis=1) == labels).sum())
        self.window["seen"] += len(labels)
        return lr

    # -- files ------------------------------------------------------------------------------
    def config_record(self) -> dict:
        return {**dataclasses.asdict(self.config), "vocab": list(self.task.vocab),
                "num_classes": self.task.num_classes, "num_train": len(self.train_idx),
                "num_val": len(self.val_idx), "threads": current_threads(),
                "version": __version__}

    def save_logs(self) -> None:
        runfiles.write_csv(self.out / "metrics.csv", runfiles.METRIC_COLUMNS, self.metrics)
        runfiles.write_csv(self.out / "timing.csv", runfiles.TIMING_COLUMNS, self.timing)
        runfiles.write_npz(self.out / "attention.npz", steps=np.array(self.attention_steps),
                           probe_inputs=self.task.inputs[self.probe_idx],
                           probe_split=self.probe_split, patterns=np.stack(self.patterns))
        runfiles.write_npz(self.out / "embeddings.npz", steps=np.array(self.embedding_steps),
                           token_embeddings=np.stack(self.embeddings))

    def save_checkpoint(self, seconds: float) -> None:
        """Logs first, then the checkpoint: the logs always reach the checkpoint's step."""
        with self.writing():
            self.save_logs()
            arrays = {f"param/{k}": v for k, v in self.model.state_dict().items()}
            arrays.update({f"adamw/{k}": np.asarray(v)
                           for k, v in self.optimizer.state_dict().items()})
            arrays["step"] = np.array(self.step)
            arrays["seconds"] = np.array(seconds)
            arrays["window"] = np.array(json.dumps(self.window))
            arrays["batch_rng"] = np.array(json.dumps(self.batch_rng.bit_generator.state))
            runfiles.write_npz(self.out / CHECKPOINT, **arrays)
        self.checkpoint_step = self.step

    @contextlib.contextmanager
    def writing(self):
        """Around every write: first check that ``out`` still leads to the folder this run
        trains in (RunFolderGone if it was deleted, moved or replaced), then turn a failed
        write (a full disk, say) into CouldNotWrite, which names the step and the
        checkpoint that is kept. The files already written stay whole: a resume keeps what
        they logged up to the checkpoint's step and drops the rest."""
        gone = self.folder_gone()
        if gone is not None:
            raise gone
        try:
            yield
        except OSError as error:
            gone = self.folder_gone()  # the folder went away during the write?
            raise (gone or CouldNotWrite(error, self.step, self.checkpoint_step)) from None

    def folder_gone(self) -> RunFolderGone | None:
        """RunFolderGone if ``self.out`` no longer names the folder this run trains in."""
        became = runfiles.what_became_of(self.out, self.folder)
        return None if became is None else RunFolderGone(self.out, *became, self.step,
                                                          self.checkpoint_step)

    def load_checkpoint(self) -> None:
        """Everything the checkpoint saved, and the logs up to its step. Raises DamagedRun
        if a file cannot be read or a log does not reach the checkpoint's step (a resumed
        run would then silently lack rows)."""
        c = self.config
        with self._reading(CHECKPOINT):
            saved = runfiles.read_npz(self.out / CHECKPOINT)
            self.model.load_state_dict({k[len("param/"):]: v for k, v in saved.items()
                                        if k.startswith("param/")})
            self.optimizer.load_state_dict({k[len("adamw/"):]: v for k, v in saved.items()
                                            if k.startswith("adamw/")})
            self.step = int(saved["step"])
            self.elapsed_before = float(saved["seconds"])
            self.window = json.loads(str(saved["window"]))
            self.batch_rng.bit_generator.state = json.loads(str(saved["batch_rng"]))
            self.checkpoint_step = self.step
        # Keep what was logged up to the checkpoint, drop anything logged after it.
        with self._reading("metrics.csv"):
            self.metrics = [r for r in runfiles.read_csv(self.out / "metrics.csv")
                            if r["step"] <= self.step]
        with self._reading("timing.csv"):
            self.timing = [r for r in runfiles.read_csv(self.out / "timing.csv")
                           if r["step"] <= self.step]
        with self._reading("attention.npz"):
            attention = runfiles.read_npz(self.out / "attention.npz")
            keep = attention["steps"] <= self.step
            self.attention_steps = list(attention["steps"][keep])
            self.patterns = list(attention["patterns"][keep])
        with self._reading("embeddings.npz"):
            embeddings = runfiles.read_npz(self.out / "embeddings.npz")
            keep = embeddings["steps"] <= self.step
            self.embedding_steps = list(embeddings["steps"][keep])
            self.embeddings = list(embeddings["token_embeddings"][keep])
        logged = log_steps(self.step, c.log_every, c.steps)
        for name, steps, expected in (
                ("metrics.csv", [r["step"] for r in self.metrics], logged),
                ("timing.csv", [r["step"] for r in self.timing], logged),
                ("attention.npz", self.attention_steps, [0] + logged),
                ("embeddings.npz", self.embedding_steps,
                 [0] + log_steps(self.step, c.embed_every, c.steps))):
            if [int(s) for s in steps] != expected:
                raise DamagedRun(f"cannot resume {self.out}: {name} holds {len(steps)} of the "
                                 f"{len(expected)} logged steps up to the checkpoint's step "
                                 f"{self.step}; start the run again (--force on the command "
                                 f"line)")

    @contextlib.contextmanager
    def _reading(self, name: str):
        """Turn any failure to read or parse file ``name`` into one DamagedRun line."""
        try:
            yield
        except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as error:
            if isinstance(error, DamagedRun):
                raise
            raise DamagedRun(f"cannot resume {self.out}: {name} is missing or damaged "
                             f"({error}); start the run again (--force on the command "
                             f"line)") from None

    def summary(self, seconds: float) -> dict:
        from tinygrok.analysis.phases import find_phases

        m = {k: np.array([r[k] for r in self.metrics]) for k in runfiles.METRIC_COLUMNS}
        train_loss, train_acc = evaluate(self.model, self.task.inputs[self.train_idx],
                                         self.task.labels[self.train_idx],
                                         self.config.eval_batch_size)
        # The grokking step: the first logged step with val acc above 0.99. summary.json's
        # step_val_acc_99 is that step, or the step budget for a run that never got there.
        phases = find_phases(m["step"], m["train_acc"], m["val_acc"])
        grokked = phases["grokked"]
        return {"final_train_acc": train_acc, "final_train_loss": train_loss,
                "final_val_acc": float(m["val_acc"][-1]), "final_val_loss": float(m["val_loss"][-1]),
                "step_val_acc_99": phases["grok_step"] if grokked else self.config.steps,
                "grokked": grokked, "steps": self.step, "wall_seconds": round(seconds, 2),
                "phases": phases}


def warm_up_kernels() -> None:
    """Compile (or load from Numba's cache) every kernel a float32 run uses: one forward,
    backward and AdamW step of a tiny model through the shortcut path, then a forward
    through the full path (the attention probes'). A damaged cache file raises
    ``DamagedKernelCache``, which names the folder to clear (numba_cache.py)."""
    try:
        model = Transformer(vocab_size=5, num_classes=3, d_model=8, heads=2, layers=1)
        tokens = np.array([[2, 0, 3, 1]])
        loss, _ = model.loss(tokens, np.array([1]))
        loss.backward()
        AdamW(model.parameters()).step()
        with no_grad():
            model(tokens, return_attention=True)
    except (EOFError, pickle.UnpicklingError) as error:  # a cached file cut short or emptied
        raise DamagedKernelCache(error) from error


RUN_FILES = ("config.json", "metrics.csv", "timing.csv", "attention.npz", "embeddings.npz",
             CHECKPOINT, SUMMARY)  # what a run writes


def run_state(out_dir: Path) -> str:
    """What ``out_dir`` holds: 'missing' (nothing, or only the temporary file of a run
    killed during its first write), 'complete' (a summary.json that reads as one),
    'resumable' (a checkpoint), 'started' (a run that stopped before its first checkpoint)
    or 'foreign' (files, but no config.json that a run wrote: another project's folder,
    or a run whose config.json was lost, which nothing here overwrites).

    A damaged summary.json (unreadable, or not what ``runfiles.is_summary`` accepts: a key
    missing or of the wrong type) does not make a run complete: resuming it from its last
    checkpoint (at the final step) writes it again."""
    out = Path(out_dir)
    if not out.is_dir() or all(_is_leftover(path) for path in out.iterdir()):
        return "missing"
    # A run writes its config.json before anything else.
    if not runfiles.is_run_config(runfiles.read_json_object(out / "config.json")):
        return "foreign"
    if runfiles.is_summary(runfiles.read_json_object(out / SUMMARY)):
        return "complete"
    if (out / CHECKPOINT).is_file():
        return "resumable"
    return "started"


def _is_leftover(path: Path) -> bool:
    """A run file's temporary name (runfiles.write_atomically's ``.config.json.tmp``): what
    a run killed in the middle of its very first write leaves. It holds nothing to keep."""
    name = path.name
    return name.startswith(".") and name.endswith(".tmp") and name[1:-len(".tmp")] in RUN_FILES


_TRAINING_HERE: set[Path] = set()  # folders that this process's train() calls write in now
# (the folder lock is per process: it cannot tell two of this process's threads apart)


def train(config: TrainConfig, out_dir, resume: bool = False, on_log=None) -> dict:
    """Run (or resume) the experiment in ``out_dir`` and return the summary.

    ``on_log(run, row)`` is called after every metrics row (for progress display).
    Raises ``Interrupted`` after saving a checkpoint on Ctrl-C, SIGTERM or SIGHUP
    (``terminal.stop_signals``), ``NonFiniteLoss`` when the loss blows up,
    ``CouldNotWrite`` when a file cannot be written (a full disk), ``OutOfMemory`` when an
    array cannot be allocated, ``RunFolderGone`` when the folder is deleted or moved while
    the run trains in it, ``DamagedRun`` when a run to resume cannot be resumed exactly,
    ``runfiles.FolderInUse`` when another process is training in ``out_dir``.
    """
    # Ctrl-C, SIGTERM and SIGHUP only raise a flag; the loop checks it between steps, so
    # the checkpoint never catches a half-applied update. The handlers go in first, so that
    # a signal during the set-up below still ends in a checkpoint. (Signals can only be
    # caught in the main thread.)
    interrupted = []
    catch_signals = threading.current_thread() is threading.main_thread()
    if catch_signals:
        previous_handlers = {number: signal.signal(number, lambda n, _: interrupted.append(n))
                             for number in stop_signals()}
    took_lock, folder, run = False, None, None
    try:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got a {type(config).__name__} "
                            f"(TrainConfig(**settings) makes one from a dict)")
        if not isinstance(resume, bool):  # resume="no" would have resumed
            raise TypeError(f"resume must be True or False, got {resume!r}")
        if on_log is not None and not callable(on_log):  # else a TypeError at the first log
            raise TypeError(f"on_log must be a function on_log(run, row) or None, got "
                            f"{on_log!r}")
        run = Run(config, out_dir)  # checks every setting before the folder is touched
        if str(out_dir) and Path(out_dir).resolve() in _TRAINING_HERE:
            raise runfiles.FolderInUse(f"{out_dir} is in use: this process is already "
                                       f"training in it (in another thread, or from on_log)")
        took_lock = claim_folder(out_dir, resume)
        folder = Path(out_dir).resolve()
        _TRAINING_HERE.add(folder)
        run.folder = runfiles.open_folder(out_dir)  # to notice if the folder goes away
        return _train(run, resume, on_log, interrupted)
    except MemoryError as error:
        # Without its traceback the error no longer holds the frames that failed, nor the
        # arrays they had built: a caller that catches OutOfMemory gets that memory back.
        error.__traceback__ = None
        raise OutOfMemory(error, run.step if run else 0,
                          run.checkpoint_step if run else None) from None
    finally:
        _TRAINING_HERE.discard(folder)
        if run is not None and run.folder is not None:
            os.close(run.folder)
        if took_lock:
            runfiles.unlock_run_folder(out_dir)
        if catch_signals:
            for number, handler in previous_handlers.items():
                signal.signal(number, handler)


def claim_folder(out_dir, resume: bool) -> bool:
    """Lock ``out_dir`` for this process (``runfiles.lock_run_folder``; creating it if it is
    new), then check that it can take this run. Returns True if this call took the lock.

    Locked first, then read: once the lock is held no other run can start writing in the
    folder between the check and the training."""
    if str(out_dir) == "":
        raise ValueError("out_dir must name a folder, not be empty")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"{out_dir} is a file, not a folder for a run")
    if resume and not Path(out_dir).is_dir():
        raise DamagedRun(f"cannot resume {out_dir}: it holds no run with a checkpoint (there "
                         f"is no such folder)")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    took_lock = runfiles.lock_run_folder(out_dir)
    try:
        state = run_state(out_dir)
        if resume and state == "complete":
            raise DamagedRun(f"cannot resume {out_dir}: its run is already complete, so there "
                             f"is nothing to resume; read it with tinygrok.analysis.load_run, "
                             f"or delete its files to train it again")
        if resume and state != "resumable":
            raise DamagedRun(f"cannot resume {out_dir}: it holds no run with a checkpoint "
                             f"({state}); start it without resume=True")
        if not resume and state == "complete":
            raise ValueError(f"{out_dir} already holds a complete run; read it with "
                             f"tinygrok.analysis.load_run, or delete its files to start again "
                             f"(--force on the command line)")
        if not resume and state == "resumable":
            raise ValueError(f"{out_dir} already holds a resumable run; resume it with "
                             f"resume=True, or delete its files to start again (--force on "
                             f"the command line)")
        if not resume and state == "foreign" and any(
                (Path(out_dir) / name).exists() for name in RUN_FILES):
            raise ValueError(f"{out_dir} holds files with a run's names that no run wrote "
                             f"(its config.json is not a run's); choose another folder")
    except BaseException:
        if took_lock:
            runfiles.unlock_run_folder(out_dir)
        raise
    return took_lock


def _train(run: Run, resume: bool, on_log, interrupted: list) -> dict:
    """train()'s work, in a folder that ``claim_folder`` checked and locked;
    ``interrupted`` fills with signal numbers when a signal arrives."""
    c = run.config
    if resume:
        with run._reading("config.json"):
            saved_config = json.loads((run.out / "config.json").read_text())
            if not isinstance(saved_config, dict):
                raise ValueError("it holds no settings")
            saved_config = saved_settings(saved_config)
        if {k: saved_config.get(k) for k in dataclasses.asdict(c)} != dataclasses.asdict(c):
            raise ValueError(f"{run.out} was started with different settings; resume it with "
                             f"the same options (see its config.json)")
        if saved_config.get("threads") != current_threads():
            raise ValueError(f"{run.out} was run with {saved_config.get('threads')} threads, "
                             f"and {current_threads()} are set now: the results would differ "
                             f"from an uninterrupted run (see tinygrok.threads.set_threads)")
        run.load_checkpoint()
    else:
        (run.out / SUMMARY).unlink(missing_ok=True)  # a fresh run must never look complete
        with run.writing():
            runfiles.write_json(run.out / "config.json", run.config_record())
        run.log_attention()
        run.log_embeddings()
        run.save_checkpoint(0.0)

    started = time.perf_counter() - run.elapsed_before
    # The kernels run on one thread in the loop and BLAS on all of its own: between
    # products BLAS's threads keep the other cores busy (tinygrok/threads.py). Overflow
    # in a diverging run ends in a non-finite loss, which the loop reports with its step;
    # NumPy's own warnings would come first, each naming a line of autograd.py.
    with kernels_on_one_thread(), np.errstate(over="ignore", invalid="ignore"):
        while run.step < c.steps:
            if interrupted:
                run.save_checkpoint(time.perf_counter() - started)
                raise Interrupted(run.step, interrupted[0])
            lr = run.train_step()
            now = time.perf_counter() - started
            if run.step % c.log_every == 0 or run.step == c.steps:
                row = run.log_metrics(lr, now)
                run.log_attention()
                if on_log is not None:
                    on_log(run, row)
            if run.step % c.embed_every == 0 or run.step == c.steps:
                run.log_embeddings()
            if run.step % c.checkpoint_every == 0 and run.step < c.steps:
                run.save_checkpoint(now)
    seconds = time.perf_counter() - started
    run.save_checkpoint(seconds)
    summary = run.summary(seconds)
    with run.writing():
        runfiles.write_json(run.out / SUMMARY, summary)
    return summary
