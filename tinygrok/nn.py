"""Layers with parameters: Linear, Embedding, LayerNorm and the MLP of a transformer block.

A ``Module`` keeps its parameters as Tensor attributes (made with ``requires_grad=True``)
and its sub-layers as Module attributes or lists of Modules. A parameter frozen by setting
``requires_grad = False`` is still a parameter, as in PyTorch: it stays in
``named_parameters()`` and ``state_dict()``, and gets no gradient (so AdamW skips it).
``named_parameters()`` walks them in the order they were assigned and names each one the
way PyTorch does (``blocks.0.mlp.fc1.weight``), which is what makes ``state_dict()``
loadable by an equivalent PyTorch model. Weights are stored with PyTorch's (out, in)
shape too.

Initialisation follows PyTorch's defaults for the same modules, so that training behaves
like the experiment we reproduce:

- ``Linear``: weight and bias uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)]
- ``Embedding``: weight standard normal N(0, 1)
- ``LayerNorm``: weight 1, bias 0

Random numbers come from a ``numpy.random.Generator`` passed in, so a seed fixes a model.
"""

from __future__ import annotations

import numpy as np

from tinygrok import autograd as ag
from tinygrok.autograd import Tensor


class Module:
    """Base class: parameter discovery, zero_grad, and a NumPy state dict."""

    def named_parameters(self, prefix: str = ""):
        """Yield (name, Tensor) for every parameter (every Tensor attribute, frozen or not),
        in assignment order."""
        for attr, value in vars(self).items():
            name = f"{prefix}{attr}"
            if isinstance(value, Tensor):
                yield name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix=f"{name}.")
            elif isinstance(value, list) and value and isinstance(value[0], Module):
                for i, module in enumerate(value):
                    yield from module.named_parameters(prefix=f"{name}.{i}.")

    def parameters(self) -> list[Tensor]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Forget all gradients (backward() adds into .grad, so clear before each step)."""
        for p in self.parameters():
            p.grad = None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter as a plain NumPy array (a copy), keyed by its PyTorch name."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters (in place, keeping each parameter's dtype).

        Refuses, before changing anything, any missing, unknown, non-numeric or mis-shaped
        entry (a Tensor among the values, say, failed after the first parameters had been
        overwritten).
        """
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state))
        unknown = sorted(set(state) - set(params))
        arrays = {k: np.asarray(state[k]) for k in params if k in state
                  and not isinstance(state[k], Tensor)}
        not_numbers = [f"{k} (a Tensor: give its .data)" for k in params if k in state
                       and isinstance(state[k], Tensor)]
        not_numbers += [f"{k} ({a.dtype})" for k, a in arrays.items() if a.dtype.kind not in "fiu"]
        wrong_shape = [f"{k} (expected {params[k].shape}, got {a.shape})"
                       for k, a in arrays.items() if a.shape != params[k].shape]
        problems = [f"{label}: {', '.join(names)}" for label, names in
                    (("missing", missing), ("unknown", unknown), ("not numbers", not_numbers),
                     ("wrong shape", wrong_shape)) if names]
        if problems:
            raise ValueError("load_state_dict refused the state; " + "; ".join(problems))
        for name, p in params.items():
            p.data[...] = arrays[name]

    def num_parameters(self) -> int:
        """How many numbers the parameters hold in all."""
        return int(sum(p.size for p in self.parameters()))


def uniform(rng: np.random.Generator, shape, bound: float, dtype) -> Tensor:
    """A parameter drawn uniformly from [-bound, bound]."""
    check_initialisation(rng, shape)
    return Tensor(rng.uniform(-bound, bound, size=shape).astype(dtype), requires_grad=True)


def check_initialisation(rng, shape) -> None:
    """A layer's random start needs a Generator and positive integer sizes: an int seed
    or a size of 0 or 8.0 failed deep inside NumPy."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got a {type(rng).__name__}")
    if not all(is_size(n) for n in shape):
        raise ValueError(f"a layer's sizes must be positive integers, got {tuple(shape)}")


def is_size(value) -> bool:
    """A positive integer (not a bool, not 8.0)."""
    return (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            and value >= 1)


def constant(value: float, shape, dtype) -> Tensor:
    return Tensor(np.full(shape, value, dtype=dtype), requires_grad=True)


class Linear(Module):
    """y = x W^T + b, with W of shape (out, in) as in PyTorch."""

    def __init__(self, d_in: int, d_out: int, rng, dtype=np.float32):
        check_initialisation(rng, (d_out, d_in))  # before 1 / sqrt(0)
        bound = 1 / np.sqrt(d_in)
        self.weight = uniform(rng, (d_out, d_in), bound, dtype)
        self.bias = uniform(rng, (d_out,), bound, dtype)

    def __call__(self, x: Tensor) -> Tensor:
        return ag.linear(x, self.weight, self.bias)


class Embedding(Module):
    """A table of vectors, one row per token id; lookup is ``weight[ids]``."""

    def __init__(self, num_embeddings: int, dim: int, rng, dtype=np.float32):
        check_initialisation(rng, (num_embeddings, dim))
        self.weight = Tensor(rng.standard_normal((num_embeddings, dim)).astype(dtype),
                             requires_grad=True)

    def __call__(self, ids: np.ndarray) -> Tensor:
        return ag.embedding(self.weight, ids)


class LayerNorm(Module):
    """Normalise the last axis to mean 0 and variance 1, then scale and shift (eps 1e-5)."""

    def __init__(self, dim: int, dtype=np.float32, eps: float = 1e-5):
        self.weight = constant(1.0, (dim,), dtype)
        self.bias = constant(0.0, (dim,), dtype)
        ag.check_layer_norm_eps(eps, dtype)
        self.eps = eps

    def __call__(self, x: Tensor) -> Tensor:
        return ag.layer_norm(x, self.weight, self.bias, self.eps)


class MLP(Module):
    """The feed-forward half of a block: fc2(GELU(fc1(x))), of width ``hidden`` (Block uses 4 d)."""

    def __init__(self, dim: int, hidden: int, rng, dtype=np.float32):
        self.fc1 = Linear(dim, hidden, rng, dtype)
        self.fc2 = Linear(hidden, dim, rng, dtype)

    def __call__(self, x: Tensor) -> Tensor:
        return self.fc2(ag.gelu(self.fc1(x)))
