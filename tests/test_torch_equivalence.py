"""tinygrok's model against an equivalent PyTorch model with the same weights.

Optional: runs only where torch is installed (never a dependency of tinygrok), e.g.

    /work/torchvenv/bin/python -m pytest tests/test_torch_equivalence.py
"""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from torch_reference import TorchGrokTransformer, load_numpy_state_dict  # noqa: E402

from tinygrok.adamw import AdamW  # noqa: E402
from tinygrok.autograd import cross_entropy, no_grad  # noqa: E402
from tinygrok.model import Transformer  # noqa: E402


def both_models(dtype=np.float64, seed=0):
    ours = Transformer(vocab_size=99, num_classes=97, seed=seed, dtype=dtype)
    theirs = load_numpy_state_dict(TorchGrokTransformer(99, 97), ours.state_dict())
    return ours, theirs


def batch(n=64, seed=1):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 97, n), rng.integers(0, 97, n)
    tokens = np.stack([x + 2, np.zeros(n, int), y + 2, np.ones(n, int)], axis=1)
    return tokens, (x + y) % 97


def test_same_logits_attention_and_gradients_in_float64():
    ours, theirs = both_models()
    tokens, labels = batch()
    logits, patterns = ours(tokens, return_attention=True)
    t_logits, t_patterns = theirs(torch.from_numpy(tokens), return_attention=True)
    np.testing.assert_allclose(logits.data, t_logits.detach().numpy(), rtol=1e-10, atol=1e-10)
    for p, tp in zip(patterns, t_patterns):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-10, atol=1e-12)

    cross_entropy(ours(tokens), labels).backward()
    torch.nn.functional.cross_entropy(theirs(torch.from_numpy(tokens)),
                                      torch.from_numpy(labels)).backward()
    theirs_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs_grads[name], rtol=1e-8, atol=1e-10, err_msg=name)


def test_twenty_training_steps_match_pytorch_adamw():
    ours, theirs = both_models(seed=3)
    opt = AdamW(ours.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.5,
                warmup_steps=5)
    t_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8,
                              weight_decay=0.5)
    schedule = torch.optim.lr_scheduler.LambdaLR(t_opt, lambda t: min(t / 5, 1))
    for step in range(20):
        tokens, labels = batch(seed=10 + step)
        opt.zero_grad()
        cross_entropy(ours(tokens), labels).backward()
        opt.step()
        t_opt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.from_numpy(tokens)),
                                          torch.from_numpy(labels)).backward()
        t_opt.step()
        schedule.step()
    with no_grad():
        logits = ours(batch(seed=99)[0]).data
    t_logits = theirs(torch.from_numpy(batch(seed=99)[0])).detach().numpy()
    np.testing.assert_allclose(logits, t_logits, rtol=1e-7, atol=1e-7)


def test_step_benchmark_runs_each_framework_in_its_own_process():
    """benchmarks/step_vs_torch.py: the two workers start, take turns and report a ratio."""
    import subprocess

    script = Path(__file__).parent.parent / "benchmarks" / "step_vs_torch.py"
    done = subprocess.run([sys.executable, str(script), "--threads", "1", "--batch", "32",
                           "--blocks", "2", "--steps-per-block", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.strip().startswith("tinygrok:") and " 4 steps," in line for line in lines)
    assert any(line.strip().startswith("torch:") and " 4 steps," in line for line in lines)
    medians = {line.split(":")[0].strip(): float(line.split("median")[1].split()[0])
               for line in lines if " median " in line}
    ratio = float(lines[-1].split(":")[1].split()[0])
    # the medians are printed to 0.1 ms (so each lies within 0.05 ms of the printed one), the
    # ratio to 0.001: it must lie between the ratios those roundings allow
    tiny, torch_ms = medians["tinygrok"], medians["torch"]
    assert (tiny - 0.05) / (torch_ms + 0.05) - 5e-4 <= ratio <= \
        (tiny + 0.05) / (torch_ms - 0.05) + 5e-4


def test_torch_full_run_benchmark_runs():
    """benchmarks/torch_full_run.py: a few steps of PyTorch's version of the default loop."""
    import subprocess

    script = Path(__file__).parent.parent / "benchmarks" / "torch_full_run.py"
    for evaluation in ("whole", "sampled"):
        done = subprocess.run([sys.executable, str(script), "--steps", "20", "--eval",
                               evaluation, "--threads", "1"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"eval {evaluation}: 20 steps in" in done.stdout
