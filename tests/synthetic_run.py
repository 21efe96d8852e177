"""Build fake run directories with known contents, for testing the analysis.

The files follow the contract in ``tinygrok/analysis/rundir.py`` exactly, but the numbers are
made up so that the answers are known:

- accuracy curves are logistic functions whose crossing points we choose (``curve``):
  "grok" memorises by step ~130, starts generalising at 500 and groks at 640;
  "dip" is "grok" with val_acc falling to 0.9 at steps 800-820; "fail" memorises but
  val_acc stays at 0.3.
- attention: every head sharpens from uniform attention to a target pattern around its own
  step. Layer 0 heads are purely positional (same target on every probe) and settle at
  steps 150-300; layer 1 heads are content-dependent (the key depends on the probe's
  tokens) and settle at 450-600. In a "fail" run the attention is random at every step.
- embeddings (x_plus_y): element x moves from noise to cos/sin(2 pi k x / p) at frequency
  ``frequency`` in every dimension pair.
"""

import json
from itertools import permutations
from pathlib import Path

import numpy as np

LAYERS, HEADS, TOKENS = 2, 4, 4
PROBES = 12
D_MODEL = 8


def logistic(x):
    return 1 / (1 + np.exp(-x))


def accuracy_curves(steps, curve):
    """(train_acc, val_acc) at the logged steps for one of the named curve shapes."""
    train = logistic((steps - 60) / 15)
    if curve == "fail":
        return train, 0.3 * logistic((steps - 300) / 50)
    val = 0.02 + 0.98 * logistic((steps - 500) / 30)
    if curve == "dip":
        val = np.where((steps >= 800) & (steps <= 820), 0.9, val)
    return train, val


def write_metrics(directory, steps, curve):
    train, val = accuracy_curves(steps, curve)
    lines = ["step,lr,train_loss,train_acc,val_loss,val_acc,weight_norm"]
    for s, t, v in zip(steps, train, val):
        lr = 1e-3 * min(s / 50, 1)
        weight_norm = 20 + 30 * np.exp(-s / 400)
        lines.append(f"{s},{lr},{2.4 * (1 - t) + 0.01},{t},{2.4 * (1 - v) + 0.01},{v},"
                     f"{weight_norm}")
    (directory / "metrics.csv").write_text("\n".join(lines) + "\n")
    timing = ["step,seconds"] + [f"{s},{s * 0.01}" for s in steps]
    (directory / "timing.csv").write_text("\n".join(timing) + "\n")


def causal_softmax(logits):
    """Softmax over keys 0..q of each query row q (later keys get exactly 0)."""
    mask = np.tril(np.ones((TOKENS, TOKENS), dtype=bool))
    shifted = np.where(mask, logits, -np.inf)
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def target_logits(probe_inputs, layer, head):
    """(N, T, T) logits: layer 0 attends by position only, layer 1 by the probe's tokens."""
    logits = np.zeros((len(probe_inputs), TOKENS, TOKENS))
    for q in range(1, TOKENS):
        for n, tokens in enumerate(probe_inputs):
            if layer == 0:
                key = (head + q) % (q + 1)
            else:
                key = (tokens[0] + tokens[2] + head) % (q + 1)
            logits[n, q, key] = 6.0
    return logits


def attention_patterns(attention_steps, probe_inputs, curve, rng):
    patterns = np.empty((len(attention_steps), LAYERS, HEADS, len(probe_inputs),
                         TOKENS, TOKENS))
    settle = [[150, 200, 250, 300], [450, 500, 550, 600]]
    for layer in range(LAYERS):
        for head in range(HEADS):
            target = target_logits(probe_inputs, layer, head)
            for i, step in enumerate(attention_steps):
                if curve == "fail":
                    logits = rng.normal(0, 1.0, target.shape)
                else:
                    logits = logistic((step - settle[layer][head]) / 20) * target
                patterns[i, layer, head] = causal_softmax(logits)
    return patterns.astype(np.float16)


def element_embeddings(embedding_steps, p, frequency, rng):
    """(E, p, d): noise that turns into a pure wave of the given frequency."""
    x = np.arange(p)
    wave = np.zeros((p, D_MODEL))
    wave[:, 0::2] = np.cos(2 * np.pi * frequency * x / p)[:, None]
    wave[:, 1::2] = np.sin(2 * np.pi * frequency * x / p)[:, None]
    noise = rng.normal(0, 1, (p, D_MODEL))
    weights = logistic((embedding_steps - 550) / 40)
    return np.stack([(1 - w) * noise + w * wave for w in weights])


def write_synthetic_run(root, *, task="x_plus_y", p=11, steps=1000, curve="grok",
                        complete=True, frequency=3, seed=0):
    """Write a run directory ``root/<task>-s<seed>`` and return its path."""
    rng = np.random.default_rng(seed)
    directory = Path(root) / f"{task}-s{seed}"
    directory.mkdir(parents=True)
    if task == "permutation":
        elements = ["".join(map(str, perm)) for perm in permutations(range(5))]
    else:
        elements = [str(i) for i in range(p)]
    vocab = ["o", "="] + elements
    config = {
        "task": task, "p": p, "seed": seed, "steps": steps, "batch_size": 512, "lr": 0.001,
        "weight_decay": 0.5, "warmup": 50, "train_frac": 0.5, "d_model": D_MODEL,
        "heads": HEADS, "layers": LAYERS, "log_every": 10, "probe_size": PROBES,
        "embed_every": 100, "checkpoint_every": 500, "threads": 2, "vocab": vocab,
        "num_classes": len(elements), "version": "0.1.0",
    }
    (directory / "config.json").write_text(json.dumps(config))

    log_steps = np.arange(10, steps + 1, 10)
    write_metrics(directory, log_steps, curve)

    attention_steps = np.arange(0, steps + 1, 10)
    x = rng.integers(0, len(elements), PROBES)
    y = rng.integers(0, len(elements), PROBES)
    probe_inputs = np.stack([2 + x, np.zeros(PROBES, int), 2 + y, np.ones(PROBES, int)], 1)
    np.savez(
        directory / "attention.npz",
        steps=attention_steps.astype(np.int64),
        probe_inputs=probe_inputs.astype(np.int64),
        probe_split=(np.arange(PROBES) % 2).astype(np.int8),
        patterns=attention_patterns(attention_steps, probe_inputs, curve, rng),
    )

    embedding_steps = np.arange(0, steps + 1, 100)
    token_embeddings = rng.normal(0, 1, (len(embedding_steps), len(vocab), D_MODEL))
    if task in ("x_plus_y", "x_minus_y"):
        token_embeddings[:, 2:] = element_embeddings(embedding_steps, p, frequency, rng)
    np.savez(directory / "embeddings.npz", steps=embedding_steps.astype(np.int64),
             token_embeddings=token_embeddings.astype(np.float32))

    if complete:
        train, val = accuracy_curves(log_steps, curve)
        grokked = bool(np.any(val > 0.99))
        summary = {
            "final_train_acc": float(train[-1]), "final_val_acc": float(val[-1]),
            "final_train_loss": 0.01, "final_val_loss": 0.01,
            "step_val_acc_99": int(log_steps[np.argmax(val > 0.99)]) if grokked else steps,
            "grokked": grokked, "wall_seconds": 12.5, "steps": steps, "phases": {},
        }
        (directory / "summary.json").write_text(json.dumps(summary))
    return directory
