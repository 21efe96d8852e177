"""The settings of a run: ``TrainConfig``, every one the training loop takes.

Its own small module, apart from the training loop, so that what only reads a run's
settings (the report, comparing seeds with one another and with the paper) does not import
the model and its kernels to do so. ``tinygrok.train`` re-exports ``TrainConfig``.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from tinygrok.tasks import has_modulus, make_task, split


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
        def whole(value) -> bool:  # True is an int to Python, but not a count of steps
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        def real(value) -> bool:
            return isinstance(value, (int, float, np.integer, np.floating)) \
                and not isinstance(value, bool) and math.isfinite(value)

        positive = ("steps", "batch_size", "d_model", "heads", "layers", "log_every",
                    "probe_size", "embed_every", "checkpoint_every", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if not whole(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("seed", "warmup"):
            if not whole(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if not (real(self.train_frac) and 0 < self.train_frac < 1):
            raise ValueError(f"train_frac must lie strictly between 0 and 1, got "
                             f"{self.train_frac!r}")
        if not (real(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (real(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.d_model % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide d_model ({self.d_model})")
        if not whole(self.p) or self.p < 2:
            raise ValueError(f"p must be an integer >= 2, got {self.p!r}")
        if not has_modulus(self.task) and self.p != TrainConfig.p:
            # Another p would train the same run but be written into config.json, where the
            # report and the sweep would read it as a different experiment.
            raise ValueError(f"p applies to the modular tasks only: {self.task} has no "
                             f"modulus (leave p at its default, {TrainConfig.p})")
        self.check_memory()  # before the task's table is built
        task = make_task(self.task, self.p)  # unknown task, bad p, non-prime p for division
        split(task, self.train_frac, self.seed)  # a fraction that leaves one side empty

    def check_memory(self) -> None:
        """Raise ValueError if ``memory_estimate`` says the run cannot fit in this
        machine's memory (with p = 100000 the task's table alone would need 1 TB)."""
        needs = self.memory_estimate()
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not every system says
            return
        if sum(needs.values()) > memory:
            biggest = max(needs, key=needs.get)
            raise ValueError(f"these settings need about {sum(needs.values()) / 1e9:,.0f} GB "
                             f"of memory, most of it for {biggest}; this machine has "
                             f"{memory / 1e9:.0f} GB")

    def memory_estimate(self) -> dict[str, int]:
        """Rough bytes for the biggest things a run holds, so that settings that cannot
        fit are refused before anything is built or written. Generous on purpose: the
        default run estimates about 0.76 GB and measures a 0.33 GB peak."""
        # Python ints: NumPy's (np.int8(7) is a valid p) would overflow in these products
        p, d, layers, heads = int(self.p), int(self.d_model), int(self.layers), int(self.heads)
        pairs = 120 ** 2 if self.task == "permutation" else p ** 2
        vocab = 122 if self.task == "permutation" else p + 2
        parameters = (2 * vocab + 5) * d + layers * (12 * d * d + 13 * d)
        rows = max(int(self.batch_size), min(int(self.eval_batch_size), pairs))  # at once
        log_steps = int(self.steps) // int(self.log_every) + 2
        return {
            "the task's table of pairs": pairs * 100,  # int64 columns, and their copies
            "the model and AdamW": parameters * 4 * 4,  # weights, gradients, two moments
            "the activations of one batch": rows * 5 * d * 4 * 16 * layers,  # ~16 per block
            "the attention log": 2 * log_steps * layers * heads
                                 * min(2 * int(self.probe_size), pairs) * 25 * 2,  # float16
        }


def saved_settings(config: dict) -> dict:
    """A run's config.json settings as runs are compared and resumed: for a task without a
    modulus, p reads as the default. It means nothing there, and runs saved before
    TrainConfig refused another p may hold any (example 06 saved 23), which must not make
    them unresumable or look like another experiment."""
    if "p" in config and isinstance(config.get("task"), str) and not has_modulus(config["task"]):
        return {**config, "p": TrainConfig.p}
    return config


# The run command's options (python -m tinygrok.run) and their defaults: the paper's.
DEFAULTS = {name: getattr(TrainConfig(), name) for name in (
    "task", "seed", "steps", "batch_size", "lr", "weight_decay", "warmup", "train_frac", "p",
    "d_model", "heads", "layers", "log_every", "probe_size")}
