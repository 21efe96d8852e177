"""The training loop: the paper's experiment, logged, checkpointed and resumable.

One step:  draw a batch of 512 train pairs (with replacement) -> forward -> cross-entropy
-> backward -> AdamW.  Every ``log_every`` steps a row goes into metrics.csv: the running
train loss and accuracy of the steps since the last row, the loss and accuracy on the
*whole* validation split, and the total weight norm; the probe set's attention patterns are
stored too. See ``tinygrok.runfiles`` for the run directory.

Nothing is lost on interruption. A checkpoint (parameters, AdamW moments, the batch
sampler's RNG state, the half-finished log window) is written every ``checkpoint_every``
steps and when Ctrl-C is pressed; the metrics, attention and embedding files are rewritten
just before it, so they always reach at least as far as the checkpoint. ``resume=True``
loads the checkpoint, keeps only the logged rows up to its step, and carries on: the
result is bit-identical to a run that was never interrupted (same seed, same threads).

A loss that is not finite stops the run at once; the last good checkpoint is kept.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from pathlib import Path

import numpy as np

from tinygrok import __version__, runfiles
from tinygrok.adamw import AdamW
from tinygrok.autograd import no_grad
from tinygrok.model import Transformer
from tinygrok.tasks import make_task, sample_batch, split
from tinygrok.threads import current_threads, kernels_on_one_thread

CHECKPOINT = "checkpoint.npz"
SUMMARY = "summary.json"


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run. The defaults are the paper's."""
    task: str = "x_div_y"
    p: int = 97
    seed: int = 0
    steps: int = 7500
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.5
    warmup: int = 50
    train_frac: float = 0.5
    d_model: int = 128
    heads: int = 4
    layers: int = 2
    log_every: int = 10
    probe_size: int = 64          # examples from each split whose attention is logged
    embed_every: int = 100
    checkpoint_every: int = 500
    eval_batch_size: int = 8192   # a whole split of the default task (4,656) in one batch

    def validate(self) -> None:
        """Raise ValueError, naming the setting, for anything that cannot run."""
        positive = ("steps", "batch_size", "d_model", "heads", "layers", "log_every",
                    "probe_size", "embed_every", "checkpoint_every", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.train_frac < 1:
            raise ValueError(f"train_frac must lie strictly between 0 and 1, got {self.train_frac}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 steps, got {self.warmup}")
        if self.d_model % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide d_model ({self.d_model})")
        make_task(self.task, self.p)  # unknown task, bad p, non-prime p for division


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; ``step`` says when."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"the loss became {loss} at step {step}; the run stopped and kept its "
                         f"last good checkpoint")
        self.step = step


class Interrupted(RuntimeError):
    """Ctrl-C: the run saved a checkpoint at ``step`` and stopped."""

    def __init__(self, step: int):
        super().__init__(f"interrupted at step {step}; checkpoint saved, continue with --resume")
        self.step = step


def step_val_acc_99(steps, val_acc, budget: int) -> int:
    """The first logged step with validation accuracy above 0.99, else the step budget."""
    above = np.flatnonzero(np.asarray(val_acc) > 0.99)
    return int(np.asarray(steps)[above[0]]) if len(above) else int(budget)


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
    """sqrt of the sum of squares of every parameter (float64 accumulation)."""
    return math.sqrt(sum(float(np.dot(p.data.ravel(), p.data.ravel())) for p in model.parameters()))


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
        self.model = Transformer(len(self.task.vocab), self.task.num_classes, c.d_model,
                                 c.heads, c.layers, max_len=5, seed=c.seed)
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
        self.save_logs()
        arrays = {f"param/{k}": v for k, v in self.model.state_dict().items()}
        arrays.update({f"adamw/{k}": np.asarray(v) for k, v in self.optimizer.state_dict().items()})
        arrays["step"] = np.array(self.step)
        arrays["seconds"] = np.array(seconds)
        arrays["window"] = np.array(json.dumps(self.window))
        arrays["batch_rng"] = np.array(json.dumps(self.batch_rng.bit_generator.state))
        runfiles.write_npz(self.out / CHECKPOINT, **arrays)

    def load_checkpoint(self) -> None:
        saved = runfiles.read_npz(self.out / CHECKPOINT)
        self.model.load_state_dict({k[len("param/"):]: v for k, v in saved.items()
                                    if k.startswith("param/")})
        self.optimizer.load_state_dict({k[len("adamw/"):]: v for k, v in saved.items()
                                        if k.startswith("adamw/")})
        self.step = int(saved["step"])
        self.elapsed_before = float(saved["seconds"])
        self.window = json.loads(str(saved["window"]))
        self.batch_rng.bit_generator.state = json.loads(str(saved["batch_rng"]))
        # Keep what was logged up to the checkpoint, drop anything logged after it.
        self.metrics = [r for r in runfiles.read_csv(self.out / "metrics.csv") if r["step"] <= self.step]
        self.timing = [r for r in runfiles.read_csv(self.out / "timing.csv") if r["step"] <= self.step]
        attention = runfiles.read_npz(self.out / "attention.npz")
        keep = attention["steps"] <= self.step
        self.attention_steps = list(attention["steps"][keep])
        self.patterns = list(attention["patterns"][keep])
        embeddings = runfiles.read_npz(self.out / "embeddings.npz")
        keep = embeddings["steps"] <= self.step
        self.embedding_steps = list(embeddings["steps"][keep])
        self.embeddings = list(embeddings["token_embeddings"][keep])

    def summary(self, seconds: float) -> dict:
        from tinygrok.analysis.phases import find_phases

        m = {k: np.array([r[k] for r in self.metrics]) for k in runfiles.METRIC_COLUMNS}
        train_loss, train_acc = evaluate(self.model, self.task.inputs[self.train_idx],
                                         self.task.labels[self.train_idx],
                                         self.config.eval_batch_size)
        reached = step_val_acc_99(m["step"], m["val_acc"], self.config.steps)
        return {"final_train_acc": train_acc, "final_train_loss": train_loss,
                "final_val_acc": float(m["val_acc"][-1]), "final_val_loss": float(m["val_loss"][-1]),
                "step_val_acc_99": reached, "grokked": bool(np.any(m["val_acc"] > 0.99)),
                "steps": self.step, "wall_seconds": round(seconds, 2),
                "phases": find_phases(m["step"], m["train_acc"], m["val_acc"])}


def warm_up_kernels() -> None:
    """Compile (or load from Numba's cache) every kernel a float32 run uses: one forward,
    backward and AdamW step of a tiny model through the shortcut path, then a forward
    through the full path (the attention probes')."""
    model = Transformer(vocab_size=5, num_classes=3, d_model=8, heads=2, layers=1)
    tokens = np.array([[2, 0, 3, 1]])
    loss, _ = model.loss(tokens, np.array([1]))
    loss.backward()
    AdamW(model.parameters()).step()
    with no_grad():
        model(tokens, return_attention=True)


def run_state(out_dir: Path) -> str:
    """'missing', 'complete' (summary.json exists), 'resumable' (a checkpoint) or 'started'."""
    out = Path(out_dir)
    if (out / SUMMARY).exists():
        return "complete"
    if (out / CHECKPOINT).exists():
        return "resumable"
    if out.exists() and any(out.iterdir()):
        return "started"
    return "missing"


def train(config: TrainConfig, out_dir, resume: bool = False, on_log=None) -> dict:
    """Run (or resume) the experiment in ``out_dir`` and return the summary.

    ``on_log(run, row)`` is called after every metrics row (for progress display).
    Raises ``Interrupted`` after saving a checkpoint on Ctrl-C, ``NonFiniteLoss`` when the
    loss blows up.
    """
    run = Run(config, out_dir)
    run.out.mkdir(parents=True, exist_ok=True)
    c = config
    if resume:
        saved_config = json.loads((run.out / "config.json").read_text())
        if {k: saved_config.get(k) for k in dataclasses.asdict(c)} != dataclasses.asdict(c):
            raise ValueError(f"{run.out} was started with different settings; resume it with "
                             f"the same options (see its config.json)")
        run.load_checkpoint()
    else:
        (run.out / SUMMARY).unlink(missing_ok=True)  # a fresh run must never look complete
        runfiles.write_json(run.out / "config.json", run.config_record())
        run.log_attention()
        run.log_embeddings()
        run.save_checkpoint(0.0)

    # Ctrl-C only raises a flag; the loop checks it between steps, so the checkpoint never
    # catches a half-applied update. (Signals can only be caught in the main thread.)
    interrupted = []
    catch_ctrl_c = threading.current_thread() is threading.main_thread()
    if catch_ctrl_c:
        previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    started = time.perf_counter() - run.elapsed_before
    try:
        # The kernels run on one thread in the loop and BLAS on all of its own: between
        # products BLAS's threads keep the other cores busy (tinygrok/threads.py).
        with kernels_on_one_thread():
            while run.step < c.steps:
                if interrupted:
                    run.save_checkpoint(time.perf_counter() - started)
                    raise Interrupted(run.step)
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
    finally:
        if catch_ctrl_c:
            signal.signal(signal.SIGINT, previous_handler)
    seconds = time.perf_counter() - started
    run.save_checkpoint(seconds)
    summary = run.summary(seconds)
    runfiles.write_json(run.out / SUMMARY, summary)
    return summary
