"""PyTorch reference for tinygrok: the same model, for timing and for equivalence tests.

PyTorch is a comparison tool only; tinygrok never imports this file. Run it from a separate
virtualenv that has torch (see benchmarks/README.md):

    ../torchvenv/bin/python benchmarks/torch_reference.py --threads 2 [--json OUT]

It prints the median wall time of one training step (forward, cross-entropy, backward, AdamW
step, zero_grad) at batch 512 in float32: the denominator of the speed floor
("tinygrok step time <= 0.6x PyTorch step time").
"""
import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class MLP(nn.Module):
    """fc2(GELU(fc1(h))) with exact (erf) GELU; fc1 is d -> 4d."""

    def __init__(self, d_model):
        super().__init__()
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def forward(self, h):
        return self.fc2(F.gelu(self.fc1(h), approximate="none"))


class Block(nn.Module):
    """Post-LN decoder block: h = LN(x + MHA(x)); out = LN(h + MLP(h))."""

    def __init__(self, d_model, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.attn_norm = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model)
        self.mlp_norm = nn.LayerNorm(d_model)

    def forward(self, x, mask, need_weights=False):
        a, weights = self.attn(x, x, x, attn_mask=mask, need_weights=need_weights,
                               average_attn_weights=False)
        h = self.attn_norm(x + a)
        return self.mlp_norm(h + self.mlp(h)), weights


class TorchGrokTransformer(nn.Module):
    """The model of ../shared/DESIGN.md "The experiment", with PyTorch's default
    initialisation."""

    def __init__(self, vocab_size, num_classes, d_model=128, heads=4, layers=2, max_len=5):
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab_size, d_model)
        self.position_embeddings = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList([Block(d_model, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens, return_attention=False, sdpa=False):
        """tokens (B, T) long -> logits (B, num_classes) from the last position.

        With return_attention=True also returns a list (one per layer) of attention
        probabilities (B, H, T, T): rows are queries, masked entries are exactly 0.
        By default attention takes MHA's explicit path (need_weights=True, as the paper's
        template did; the faster one on CPU at T=4); sdpa=True takes the fused
        scaled_dot_product_attention path instead (same values, slower here).
        """
        T = tokens.shape[1]
        positions = torch.arange(T, device=tokens.device)
        x = self.token_embeddings(tokens) + self.position_embeddings(positions)[None]
        # Boolean mask, True = may not attend (keys after the query).
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=tokens.device), 1)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, mask, need_weights=return_attention or not sdpa)
            attentions.append(weights)
        logits = self.head(self.norm(x[:, -1]))
        return (logits, attentions) if return_attention else logits


def load_numpy_state_dict(model, arrays):
    """Load {state_dict name: np.ndarray} into model; the model takes the arrays' dtype.

    Names and shapes must match the model exactly (all float32 or all float64).
    Returns the model.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise KeyError(f"state dict mismatch: missing {missing}, unexpected {extra}")
    arrays = {k: np.asarray(a) for k, a in arrays.items()}
    dtypes = {a.dtype for a in arrays.values()}
    if dtypes not in ({np.dtype(np.float32)}, {np.dtype(np.float64)}):
        raise TypeError(f"arrays must be all float32 or all float64, got {dtypes}")
    model.to(torch.float64 if dtypes == {np.dtype(np.float64)} else torch.float32)
    tensors = {}
    for name, a in arrays.items():
        if tuple(a.shape) != tuple(expected[name].shape):
            raise ValueError(f"{name}: shape {a.shape}, model has {tuple(expected[name].shape)}")
        tensors[name] = torch.from_numpy(np.array(a, copy=True))
    model.load_state_dict(tensors, strict=True)
    return model


def state_dict_to_numpy(model):
    """The model's parameters as {name: np.ndarray} (copies), the inverse of the loader."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def random_batch(generator, batch, p=97):
    """Random [x, o, y, =] inputs (token ids: o=0, '='=1, element e -> 2+e), targets x+y mod p."""
    x = torch.randint(0, p, (batch,), generator=generator)
    y = torch.randint(0, p, (batch,), generator=generator)
    tokens = torch.stack([x + 2, torch.zeros_like(x), y + 2, torch.ones_like(x)], dim=1)
    return tokens, (x + y) % p


def train_step_benchmark(threads=2, batch=512, warmup=20, steps=200, seed=0,
                         vocab_size=99, num_classes=97, sdpa=False):
    """Time full float32 training steps of the default model; returns a dict (times in ms)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = TorchGrokTransformer(vocab_size, num_classes).float().train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8,
                                  weight_decay=0.5)
    # Pre-draw the batches so that timing covers the step only.
    batches = [random_batch(generator, batch, num_classes) for _ in range(warmup + steps)]

    def step(tokens, targets):
        loss = F.cross_entropy(model(tokens, sdpa=sdpa), targets)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        return loss

    times = []
    for i, (tokens, targets) in enumerate(batches):
        start = time.perf_counter()
        step(tokens, targets)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed * 1e3)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "min_ms": times[0],
        "p10_ms": times[len(times) // 10],
        "p90_ms": times[(9 * len(times)) // 10],
        "steps": steps,
        "warmup": warmup,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "attention": "sdpa" if sdpa else "math",
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (2)")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200, help="timed steps (200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sdpa", action="store_true",
                        help="fused scaled_dot_product_attention (slower on CPU at T=4)")
    parser.add_argument("--json", metavar="OUT", help="also write the result to OUT as JSON")
    args = parser.parse_args(argv)
    result = train_step_benchmark(threads=args.threads, batch=args.batch, warmup=args.warmup,
                                  steps=args.steps, seed=args.seed, sdpa=args.sdpa)
    print(f"torch {result['torch_version']}, {result['threads']} threads, batch "
          f"{result['batch']}, float32, {result['attention']} attention: {result['median_ms']:.2f} ms/step (median of "
          f"{result['steps']}; p10 {result['p10_ms']:.2f}, p90 {result['p90_ms']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return result


if __name__ == "__main__":
    main()
