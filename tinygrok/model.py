"""The transformer of the paper, readable top to bottom.

Input: token ids (B, T) laid out [x, o, y, =] (T = 4). Output: logits (B, classes) read
at the last position, the "=" token, whose output is the answer.

    x = token_embeddings[ids] + position_embeddings[0..T-1]          (B, T, d)
    for each of the L blocks (post-LayerNorm, as in the original Transformer):
        h = attn_norm(x + MultiHeadAttention(x))                     causal, H heads
        x = mlp_norm(h + fc2(GELU(fc1(h))))                          MLP width 4 d
    logits = head(norm(x[:, -1]))

d = 128, H = 4 heads of 32, L = 2 by default. Parameter names and (out, in) shapes match
the equivalent PyTorch modules (``nn.MultiheadAttention`` for the attention), so
``state_dict()`` loads straight into a PyTorch copy of this model.

The last block's shortcut. Only the last position's output reaches the head, and in the
last block nothing flows from one position to another after attention. So that block
needs keys and values for every position but the query, the attention output and the MLP
for the last position only. Computing just that gives exactly the same logits (a test
checks it) for about half the block's work. It is used for training and evaluation. When
the attention patterns are asked for (``return_attention=True``) the full block runs, so
every layer's full (B, H, T, T) pattern is there to look at.
"""

from __future__ import annotations

import numpy as np

from tinygrok import autograd as ag
from tinygrok.attention import attention
from tinygrok.autograd import Tensor
from tinygrok.nn import MLP, Embedding, LayerNorm, Linear, Module, uniform


class MultiHeadAttention(Module):
    """Causal multi-head self-attention with a fused Q, K, V projection.

    ``in_proj_weight`` (3d, d) stacks the query, key and value projections (in that order,
    as PyTorch does); ``out_proj`` mixes the heads back together. Each head of size
    d / H attends with its own slice of Q, K and V.
    """

    def __init__(self, dim: int, heads: int, rng, dtype=np.float32):
        if dim % heads:
            raise ValueError(f"d_model ({dim}) must be divisible by the number of heads ({heads})")
        self.heads = heads
        # PyTorch: Xavier-uniform in-projection (fan_in d, fan_out 3d), zero biases.
        self.in_proj_weight = uniform(rng, (3 * dim, dim), np.sqrt(6 / (4 * dim)), dtype)
        self.in_proj_bias = Tensor(np.zeros(3 * dim, dtype), requires_grad=True)
        self.out_proj = Linear(dim, dim, rng, dtype)
        self.out_proj.bias.data[...] = 0

    def _split_heads(self, x: Tensor, parts: int) -> list[Tensor]:
        """(B, T, parts * d) -> ``parts`` views of shape (B, H, T, d/H)."""
        B, T, width = x.shape
        per_head = width // (parts * self.heads)
        x = x.reshape(B, T, parts, self.heads, per_head)
        return [x[:, :, i].transpose(0, 2, 1, 3) for i in range(parts)]

    def __call__(self, x: Tensor, last_query_only: bool = False):
        """Returns the attention output (B, Tq, d) and the probabilities (B, H, Tq, T).

        Tq = T normally; Tq = 1 (the last position) when ``last_query_only``.
        """
        B, T, d = x.shape
        w, b = self.in_proj_weight, self.in_proj_bias
        if last_query_only:
            (q,) = self._split_heads(x[:, -1:] @ w[:d].transpose() + b[:d], 1)
            k, v = self._split_heads(x @ w[d:].transpose() + b[d:], 2)
        else:
            q, k, v = self._split_heads(x @ w.transpose() + b, 3)
        out, probs = attention(q, k, v, causal=True)  # (B, H, Tq, d/H)
        out = out.transpose(0, 2, 1, 3).reshape(B, out.shape[2], d)  # heads side by side
        return self.out_proj(out), probs


class Block(Module):
    """One post-LayerNorm transformer block: attention, then the MLP, each with a residual."""

    def __init__(self, dim: int, heads: int, rng, dtype=np.float32):
        self.attn = MultiHeadAttention(dim, heads, rng, dtype)
        self.attn_norm = LayerNorm(dim, dtype)
        self.mlp = MLP(dim, 4 * dim, rng, dtype)
        self.mlp_norm = LayerNorm(dim, dtype)

    def __call__(self, x: Tensor, last_query_only: bool = False):
        attended, probs = self.attn(x, last_query_only)
        residual = x[:, -1:] if last_query_only else x
        h = self.attn_norm(residual + attended)
        return self.mlp_norm(h + self.mlp(h)), probs


class Transformer(Module):
    """Token + position embeddings, ``layers`` blocks, a final LayerNorm and a linear head."""

    def __init__(self, vocab_size: int, num_classes: int, d_model: int = 128, heads: int = 4,
                 layers: int = 2, max_len: int = 5, seed: int = 0, dtype=np.float32):
        for label, value in (("vocab_size", vocab_size), ("num_classes", num_classes),
                             ("d_model", d_model), ("heads", heads), ("layers", layers),
                             ("max_len", max_len)):
            if int(value) < 1:
                raise ValueError(f"{label} must be a positive integer, got {value}")
        rng = np.random.default_rng(seed)
        self.config = dict(vocab_size=vocab_size, num_classes=num_classes, d_model=d_model,
                           heads=heads, layers=layers, max_len=max_len)
        self.token_embeddings = Embedding(vocab_size, d_model, rng, dtype)
        self.position_embeddings = Embedding(max_len, d_model, rng, dtype)
        self.blocks = [Block(d_model, heads, rng, dtype) for _ in range(layers)]
        self.norm = LayerNorm(d_model, dtype)
        self.head = Linear(d_model, num_classes, rng, dtype)

    def __call__(self, tokens: np.ndarray, return_attention: bool = False):
        """Logits (B, classes); with ``return_attention`` also a list of (B, H, T, T)
        attention probabilities, one NumPy array per layer."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] > self.config["max_len"]:
            raise ValueError(f"tokens must have shape (batch, T) with T <= "
                             f"{self.config['max_len']}, got {tokens.shape}")
        T = tokens.shape[1]
        x = self.token_embeddings(tokens) + self.position_embeddings(np.arange(T))
        patterns = []
        for i, block in enumerate(self.blocks):
            shortcut = i == len(self.blocks) - 1 and not return_attention
            x, probs = block(x, last_query_only=shortcut)
            patterns.append(probs)
        logits = self.head(self.norm(x[:, -1]))
        return (logits, patterns) if return_attention else logits

    def loss(self, tokens: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy of the answer, and the logits (for accuracy)."""
        logits = self(tokens)
        return ag.cross_entropy(logits, labels), logits
