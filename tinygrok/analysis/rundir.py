"""Read a run directory into plain NumPy arrays.

A run directory is the only thing the training loop and the analysis share. Analysis never
imports the model or the training loop: everything it knows about a run is in these files,
each of which opens in a notebook with ``json``, ``csv`` or ``numpy.load``.

The contract
------------
``runs/<task>-s<seed>/``

``config.json``
    Every setting the run command takes, with the thread count, split sizes and
    vocabulary, for example::

        {"task": "x_div_y", "p": 97, "seed": 0, "steps": 7500, "batch_size": 512,
         "lr": 0.001, "weight_decay": 0.5, "warmup": 50, "train_frac": 0.5,
         "d_model": 128, "heads": 4, "layers": 2, "log_every": 10, "probe_size": 64,
         "embed_every": 100, "checkpoint_every": 500, "eval_batch_size": 8192,
         "num_train": 4656, "num_val": 4656, "threads": 2,
         "vocab": ["o", "=", "0", "1", ...], "num_classes": 97, "version": "0.1.0"}

    What no setting changes is fixed by the ``version``: AdamW's betas (0.9, 0.98) and eps
    1e-8, LayerNorm's eps 1e-5, the five position rows (the paper's "sequence length 5")
    and float32.

``metrics.csv``
    Header ``step,lr,train_loss,train_acc,val_loss,val_acc,weight_norm`` and one row per
    logged step (10, 20, ..., steps). Accuracies are fractions in [0, 1]. A ``seconds``
    column (wall clock since the start), where the project's first design had it, is read
    too; tinygrok itself writes the wall clock to timing.csv (below).

``timing.csv`` (optional)
    ``step,seconds``: the wall clock, kept apart so that metrics.csv depends only on the
    seed. Its ``seconds`` column is merged into the metrics when metrics.csv has none.

``summary.json``
    Written only when the run completed, so its absence marks an incomplete run:
    ``final_train_acc``, ``final_val_acc``, ``final_train_loss``, ``final_val_loss``,
    ``step_val_acc_99`` (first logged step with val_acc > 0.99, else the step budget),
    ``grokked`` (bool), ``wall_seconds``, ``steps`` and ``phases`` (the dict returned by
    :func:`tinygrok.analysis.phases.find_phases`).

``attention.npz``
    ``steps`` (S,) int64: 0, 10, ..., steps (step 0 is the model at initialisation);
    ``probe_inputs`` (N, T) int64 token ids, T = 4 tokens ``[x, o, y, =]``;
    ``probe_split`` (N,) int8: 0 = a training example, 1 = a validation example;
    ``patterns`` (S, L, H, N, T, T) float16: the attention probabilities of every layer and
    head on every probe; rows are queries, columns keys; causal, so the upper triangle is 0.
    Every row summed to 1 in float32; stored in float16 (three significant digits), a
    row's sum is 1 to within 1e-3 (4.3e-4 at most over a whole default run).

``embeddings.npz``
    ``steps`` (E,) int64: 0, 100, 200, ... and the final step;
    ``token_embeddings`` (E, V, d) float32, V = 2 + number of elements. Token 0 is "o",
    token 1 is "=", and the element with index i is token 2 + i.

``checkpoint.npz`` (not read here) and ``figures/`` (the PNGs analysis writes).

What :func:`load_run` gives back
--------------------------------
A :class:`Run` of plain arrays. The attention patterns are converted once from float16 to
float32 (float16 keeps about 3 significant digits, enough to store but too few to sum
thousands of terms in), so every metric is computed in at least float32.
``attention.npz`` and ``embeddings.npz`` are optional: when a file is missing the matching
attributes are None and the analyses that need them are skipped.
"""

import csv
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from tinygrok.runfiles import is_summary

METRIC_COLUMNS = ("step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "weight_norm")


class RunDirectoryError(ValueError):
    """A run directory that is missing, incomplete or not in the format above."""


@dataclass
class Run:
    """Everything a run directory holds, as plain Python and NumPy objects."""

    path: Path
    config: dict
    metrics: dict  # column name -> (M,) array; "step" is int64, the rest float64
    summary: Optional[dict]  # None while the run is incomplete
    attention_steps: Optional[np.ndarray] = None  # (S,) int64
    probe_inputs: Optional[np.ndarray] = None  # (N, T) int64
    probe_split: Optional[np.ndarray] = None  # (N,) int8, 0 = train, 1 = val
    patterns: Optional[np.ndarray] = None  # (S, L, H, N, T, T) float32
    embedding_steps: Optional[np.ndarray] = None  # (E,) int64
    token_embeddings: Optional[np.ndarray] = None  # (E, V, d) float32

    @property
    def name(self):
        """The folder's own name, also for a path such as "." or "runs/x/.." (made absolute
        first, symbolic links left as they are)."""
        return Path(os.path.abspath(self.path)).name

    def __repr__(self):
        """One line, not the arrays (the default would print every one of them)."""
        attention = (f"{len(self.patterns)} attention snapshots"
                     if self.has_attention else "no attention")
        return (f"Run({str(self.path)!r}: {self.config.get('task')}, seed "
                f"{self.config.get('seed')}, {len(self.metrics.get('step', ()))} logged steps, "
                f"{attention}, {'complete' if self.complete else 'incomplete'})")

    @property
    def complete(self):
        """True once the training loop wrote summary.json."""
        return self.summary is not None

    @property
    def has_attention(self):
        return self.patterns is not None

    @property
    def has_embeddings(self):
        return self.token_embeddings is not None

    def pattern(self, step, layer):
        """The (H, N, T, T) attention patterns of one layer at one logged step."""
        if not self.has_attention:
            raise RunDirectoryError(f"{self.path}: no attention.npz")
        layers = self.patterns.shape[1]
        if not (isinstance(layer, (int, np.integer)) and not isinstance(layer, bool)
                and -layers <= layer < layers):
            raise ValueError(f"layer must be an integer from 0 to {layers - 1} (or from "
                             f"-{layers}, counting from the end), got {layer!r}")
        return self.patterns[exact_index(self.attention_steps, step, "attention"), layer]

    def embeddings(self, step):
        """The (V, d) token-embedding matrix at one snapshot step."""
        if not self.has_embeddings:
            raise RunDirectoryError(f"{self.path}: no embeddings.npz")
        return self.token_embeddings[exact_index(self.embedding_steps, step, "embedding")]


def exact_index(steps, step, what="logged"):
    """The position of ``step`` in ``steps``; a ValueError naming the nearest steps if absent."""
    if not (isinstance(step, (int, float, np.integer, np.floating))
            and not isinstance(step, bool)):
        raise ValueError(f"step must be a number, got {step!r}")
    steps = np.asarray(steps, dtype=np.int64)
    matches = np.flatnonzero(steps == step)
    if matches.size:
        return int(matches[0])
    if steps.size == 0:
        raise ValueError(f"step {step}: there are no {what} steps")
    nearest = sorted(int(s) for s in steps[np.argsort(np.abs(steps - step))[:2]])
    raise ValueError(
        f"step {step} has no {what} snapshot; nearest logged steps: "
        + ", ".join(str(s) for s in nearest)
    )


def nearest_index(steps, step):
    """The position in ``steps`` of the logged step closest to ``step`` (earlier on a tie)."""
    return int(np.argmin(np.abs(np.asarray(steps, dtype=np.int64) - int(step))))


def load_run(path):
    """Read the run directory at ``path`` (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_dir():
        what = "a file, not a run directory" if path.exists() else "no such run directory"
        raise RunDirectoryError(f"{path}: {what}")
    config = _read_json(path / "config.json", required=True)
    if "task" not in config or (config["task"] != "permutation"
                                and not isinstance(config.get("p"), int)):
        raise RunDirectoryError(f"{path / 'config.json'}: no task, or no integer modulus p "
                                f"for a modular task")
    metrics = read_metrics(path / "metrics.csv")
    if "seconds" not in metrics:
        _merge_timing(metrics, path / "timing.csv")
    try:
        summary = _read_json(path / "summary.json", required=False)
    except RunDirectoryError:
        summary = None
    if not is_summary(summary):  # damaged: the run counts as incomplete; --resume rewrites it
        summary = None
    run = Run(path=path, config=config, metrics=metrics, summary=summary)
    _read_attention(run, path / "attention.npz")
    _read_embeddings(run, path / "embeddings.npz")
    return run


def read_metrics(csv_path, required=METRIC_COLUMNS):
    """A CSV file of numbers as {column: array} ("step" as int64); ``required`` must be there."""
    if not csv_path.is_file():
        raise RunDirectoryError(f"{csv_path.parent}: missing {csv_path.name}")
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)  # line_num: the file's line, blank lines counted
            numbered = [(reader.line_num, row) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as error:  # not a text file of rows
        raise RunDirectoryError(f"{csv_path}: not a CSV text file ({error})") from None
    except OSError as error:  # say, no permission to read it
        raise RunDirectoryError(f"{csv_path}: cannot be read ({error.strerror})") from None
    if not numbered:
        raise RunDirectoryError(f"{csv_path}: empty file (no header)")
    header = numbered[0][1]
    line_of = [line for line, _ in numbered[1:]]  # line_of[i]: the line of the i-th row
    body = [row for _, row in numbered[1:]]
    missing = [c for c in required if c not in header]
    if missing:
        raise RunDirectoryError(f"{csv_path}: missing column(s) {', '.join(missing)}")
    bad = [i for i, row in enumerate(body) if len(row) != len(header)]
    if bad:
        raise RunDirectoryError(f"{csv_path}: line {line_of[bad[0]]} has the wrong number of "
                                f"fields")
    try:
        table = np.array(body, dtype=np.float64).reshape(len(body), len(header))
    except ValueError as error:
        raise RunDirectoryError(f"{csv_path}: a value is not a number ({error})") from None
    for name in ("step", "train_acc", "val_acc"):  # what the phases are read from
        if name in header:
            column = table[:, header.index(name)]
            bad = np.flatnonzero(~np.isfinite(column))
            if bad.size:
                raise RunDirectoryError(f"{csv_path}: line {line_of[bad[0]]}: {name} is "
                                        f"{column[bad[0]]}, not a finite number")
    metrics = {name: table[:, i] for i, name in enumerate(header)}
    metrics["step"] = metrics["step"].astype(np.int64)
    backwards = np.flatnonzero(np.diff(metrics["step"]) <= 0)
    if backwards.size:  # the phases are read along the steps in order
        raise RunDirectoryError(f"{csv_path}: line {line_of[backwards[0] + 1]}: step "
                                f"{metrics['step'][backwards[0] + 1]} does not come after "
                                f"{metrics['step'][backwards[0]]}")
    for name in ("train_acc", "val_acc"):
        if name in header:
            outside = np.flatnonzero((metrics[name] < 0) | (metrics[name] > 1))
            if outside.size:
                raise RunDirectoryError(f"{csv_path}: line {line_of[outside[0]]}: {name} is "
                                        f"{metrics[name][outside[0]]}, not a fraction in [0, 1]")
    return metrics


def _merge_timing(metrics, csv_path):
    """Add timing.csv's seconds to the metrics, matched by step (NaN where a step is absent)."""
    if not csv_path.is_file():
        return
    timing = read_metrics(csv_path, required=("step", "seconds"))
    seconds = dict(zip(timing["step"].tolist(), timing["seconds"].tolist()))
    metrics["seconds"] = np.array([seconds.get(s, np.nan) for s in metrics["step"].tolist()])


def _read_json(json_path, required):
    if not json_path.is_file():
        if required:
            raise RunDirectoryError(f"{json_path.parent}: missing {json_path.name}")
        return None
    try:
        with open(json_path, encoding="utf-8") as f:
            content = json.load(f)
    except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError: not UTF-8 text
        raise RunDirectoryError(f"{json_path}: not valid JSON ({error})") from None
    except OSError as error:  # say, no permission to read it
        raise RunDirectoryError(f"{json_path}: cannot be read ({error.strerror})") from None
    if not isinstance(content, dict):
        raise RunDirectoryError(f"{json_path}: not a JSON object of settings or results")
    return content


def _read_npz(npz_path, names):
    """The named arrays of an .npz file, or None if the file does not exist."""
    if not npz_path.is_file():
        return None
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            missing = [n for n in names if n not in archive.files]
            if missing:
                raise RunDirectoryError(f"{npz_path}: missing array(s) {', '.join(missing)}")
            return {n: archive[n] for n in names}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, RunDirectoryError):
            raise
        raise RunDirectoryError(f"{npz_path}: cannot be read ({type(error).__name__}: "
                                f"{error})") from None


def _read_attention(run, npz_path):
    arrays = _read_npz(npz_path, ("steps", "probe_inputs", "probe_split", "patterns"))
    if arrays is None:
        return
    patterns = arrays["patterns"]
    steps = arrays["steps"].astype(np.int64)
    if patterns.ndim != 6 or patterns.shape[0] != len(steps):
        raise RunDirectoryError(
            f"{npz_path}: patterns has shape {patterns.shape}, expected "
            f"(S={len(steps)}, L, H, N, T, T)"
        )
    if patterns.shape[3] != len(arrays["probe_inputs"]):
        raise RunDirectoryError(f"{npz_path}: patterns and probe_inputs disagree on N")
    run.attention_steps = steps
    run.probe_inputs = arrays["probe_inputs"].astype(np.int64)
    run.probe_split = arrays["probe_split"].astype(np.int8)
    run.patterns = patterns.astype(np.float32)


def _read_embeddings(run, npz_path):
    arrays = _read_npz(npz_path, ("steps", "token_embeddings"))
    if arrays is None:
        return
    embeddings = arrays["token_embeddings"]
    if embeddings.ndim != 3 or embeddings.shape[0] != len(arrays["steps"]):
        raise RunDirectoryError(
            f"{npz_path}: token_embeddings has shape {embeddings.shape}, expected (E, V, d)"
        )
    run.embedding_steps = arrays["steps"].astype(np.int64)
    run.token_embeddings = embeddings.astype(np.float32)
