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

Four exact shortcuts for training and evaluation
-------------------------------------------------
All give the same logits as the plain computation (tests check it, values and
gradients), for much less work. When the attention patterns are asked for
(``return_attention=True``) the plain computation runs, so every layer's full (B, H, T, T)
pattern is there to look at.

1. The last block's last query. Only the last position's output reaches the head, and in
   the last block nothing flows from one position to another after attention. So that
   block needs keys and values for every position but the query, the attention output and
   the MLP for the last position only: 18 d^2 of its 48 d^2 multiply-adds a sequence
   (keys and values at 4 positions, the rest at one): three eighths of the block's work.

2. The shared prefix. Attention is causal, so positions 0 and 1 ([x, o]) never see y: in
   every layer their activations depend on x alone. A batch of 512 examples holds at most
   97 different x (mod 97; 120 for permutations of S5), so ``forward`` runs those two
   positions once per distinct prefix, keeps each layer's keys and values (a "KV cache",
   as language-model servers keep for a shared prompt), and then runs positions 2 and 3
   for every example, attending to the cached keys and values of its prefix. The first
   layer then costs about 60% of the plain one. The prefix is every position but the
   last two.

3. The first block's projections of the other positions. The first block's input at a
   position is just the token's embedding plus the position's, so its queries, keys and
   values there depend on the token and position alone. A batch holds no more distinct
   [y, =] suffixes than there are values of y, so ``forward`` projects each distinct
   suffix once and copies the result to the examples that have it (the copy's backward
   adds their gradients back up). Only the attention and what follows it run per
   example. This saves about 11% of the multiply-adds of a training step's matrix
   products (0.74 to 0.66 GFLOP forward).

4. Repeated examples. A training batch is drawn with replacement, so 512 draws from the
   4,656 training pairs of x / y mod 97 hold about 485 different ones (466 to 499 in
   2,000 batches). ``forward`` runs each different example once and copies its logits to
   every draw of it; the copy's backward adds the repeats' gradients, which is what the
   repeats would have sent back anyway. Forward products: 0.66 to 0.63 GFLOP a training
   step.
"""

from __future__ import annotations

import numpy as np

from tinygrok import autograd as ag
from tinygrok.attention import attention
from tinygrok.autograd import Tensor
from tinygrok.nn import MLP, Embedding, LayerNorm, Linear, Module, is_size, uniform


def distinct_rows(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of non-negative integers ``tokens`` (N, S), sorted, and for each
    row n the index of its distinct row: ``tokens[n] == rows[index[n]]``.

    The same as ``np.unique(tokens, axis=0, return_inverse=True)``, about ten times
    faster: each row is first read as one integer whose digits, in base (largest token +
    1), are the row's tokens, the first token the most significant digit. Integers then
    sort exactly as the rows sort, and comparing integers is far cheaper than comparing
    rows. (Rows too long for their integer to fit in 63 bits go to ``np.unique``.)
    """
    N, S = tokens.shape
    base = int(tokens.max()) + 1 if tokens.size else 1
    if S == 0 or base ** S >= 2 ** 63:
        rows, index = np.unique(tokens, axis=0, return_inverse=True)
        return rows, index.reshape(N)  # NumPy versions differ in index's shape here
    codes = np.zeros(N, dtype=np.int64)
    for column in tokens.T:  # Horner's rule: codes = codes * base + next digit
        codes = codes * base + column.astype(np.int64)
    _, first, index = np.unique(codes, return_index=True, return_inverse=True)
    return tokens[first], index


class MultiHeadAttention(Module):
    """Causal multi-head self-attention with a fused Q, K, V projection.

    ``in_proj_weight`` (3d, d) stacks the query, key and value projections (in that order,
    as PyTorch does); ``out_proj`` mixes the heads back together. Each head of size
    d / H attends with its own slice of Q, K and V.
    """

    def __init__(self, dim: int, heads: int, rng, dtype=np.float32):
        if not (is_size(dim) and is_size(heads)):
            raise ValueError(f"dim and heads must be positive integers, got {dim!r} and "
                             f"{heads!r}")
        if dim % heads:
            raise ValueError(f"d_model ({dim}) must be divisible by the number of heads ({heads})")
        self.heads = heads
        # PyTorch: Xavier-uniform in-projection (fan_in d, fan_out 3d), zero biases.
        self.in_proj_weight = uniform(rng, (3 * dim, dim), np.sqrt(6 / (4 * dim)), dtype)
        self.in_proj_bias = Tensor(np.zeros(3 * dim, dtype), requires_grad=True)
        self.out_proj = Linear(dim, dim, rng, dtype)
        self.out_proj.bias.data[...] = 0

    def _project(self, x: Tensor, part: int, row_of=None) -> Tensor:
        """Queries (part 0), keys (1) or values (2) of x (B, S, d), split into heads:
        (B, H, S, d/H), a strided view that the attention kernels read without a copy of
        the whole array (each pair's rows are gathered into small buffers).

        ``row_of``: x holds distinct rows only, and example n's positions are x[row_of[n]]
        (an index map as ``distinct_rows`` returns). Each distinct row is projected once,
        then copied to its examples.
        """
        d = x.shape[2]
        rows = slice(part * d, (part + 1) * d)  # this part's rows of the fused projection
        y = ag.linear(x, self.in_proj_weight[rows], self.in_proj_bias[rows])  # x W^T + b
        if row_of is not None:
            y = y[row_of]  # (B, S, d): one copy per example
        B, S = y.shape[:2]
        return y.reshape(B, S, self.heads, d // self.heads).transpose(0, 2, 1, 3)

    def keys_and_values(self, x: Tensor, row_of=None) -> tuple[Tensor, Tensor]:
        """Just the keys and values of x's positions, each (B, H, S, d/H)."""
        return self._project(x, 1, row_of), self._project(x, 2, row_of)

    def __call__(self, x: Tensor, past=None, last_query_only: bool = False, row_of=None):
        """Attention of the S positions in x (B, S, d).

        ``past``: optionally the keys and values of P earlier positions, a pair of
        (B, H, P, d/H) Tensors (a KV cache); x's positions then attend to those too.
        ``last_query_only``: compute the output of x's last position only.
        ``row_of``: x holds distinct rows, and example n's positions are x[row_of[n]]
        (B = len(row_of) examples); the projections run once per distinct row.

        Returns the output (B, Sq, d), the probabilities (B, H, Sq, P + S) and the keys and
        values of x's S positions; Sq = S, or 1 with ``last_query_only``.
        """
        q = self._project(x[:, -1:] if last_query_only else x, 0, row_of)
        k, v = self.keys_and_values(x, row_of)
        B, d = q.shape[0], x.shape[2]
        out, probs = attention(q, k, v, causal=True, past=past)  # (B, H, Sq, d/H)
        out = out.transpose(0, 2, 1, 3).reshape(B, out.shape[2], d)  # heads side by side
        return self.out_proj(out), probs, (k, v)


class Block(Module):
    """One post-LayerNorm transformer block: attention, then the MLP, each with a residual."""

    def __init__(self, dim: int, heads: int, rng, dtype=np.float32):
        self.attn = MultiHeadAttention(dim, heads, rng, dtype)
        self.attn_norm = LayerNorm(dim, dtype)
        self.mlp = MLP(dim, 4 * dim, rng, dtype)
        self.mlp_norm = LayerNorm(dim, dtype)

    def __call__(self, x: Tensor, past=None, last_query_only: bool = False, row_of=None):
        """The block's output for x's positions, the attention probabilities, and the keys
        and values (arguments as for ``MultiHeadAttention``)."""
        attended, probs, keys_values = self.attn(x, past, last_query_only, row_of)
        if row_of is not None:
            x = x[row_of]  # the residual stream, one row per example
        residual = x[:, -1:] if last_query_only else x
        h = self.attn_norm(residual + attended)
        return self.mlp_norm(h + self.mlp(h)), probs, keys_values


class Transformer(Module):
    """Token + position embeddings, ``layers`` blocks, a final LayerNorm and a linear head.

    ``max_len`` is the number of position rows, the longest input it accepts. It is 5, as
    in the paper's "sequence length 5", although the inputs [x, o, y, =] use four: the
    fifth row is never read, so its gradient is zero and weight decay only shrinks it.
    """

    def __init__(self, vocab_size: int, num_classes: int, d_model: int = 128, heads: int = 4,
                 layers: int = 2, max_len: int = 5, seed: int = 0, dtype=np.float32):
        for label, value in (("vocab_size", vocab_size), ("num_classes", num_classes),
                             ("d_model", d_model), ("heads", heads), ("layers", layers),
                             ("max_len", max_len)):
            if not is_size(value):  # 8.0 or True failed later, deep inside NumPy
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if isinstance(seed, bool) or (isinstance(seed, (int, np.integer)) and seed < 0):
            raise ValueError(f"seed must be an integer >= 0 (or anything else "
                             f"np.random.default_rng takes), got {seed!r}")
        if np.dtype(dtype) not in (np.float32, np.float64):  # the kernels' two float types
            raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
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
        if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= self.config["max_len"]:
            raise ValueError(f"tokens must have shape (batch, T) with 1 <= T <= "
                             f"{self.config['max_len']}, got {tokens.shape}")
        if tokens.dtype.kind not in "iu":
            raise ValueError(f"tokens must be integer ids, got {tokens.dtype}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.config["vocab_size"]):
            raise ValueError(f"tokens must lie in [0, {self.config['vocab_size']}), got values "
                             f"from {tokens.min()} to {tokens.max()}")
        if return_attention:
            return self.forward_plain(tokens)
        return self.forward(tokens)

    def embed(self, tokens: np.ndarray, first_position: int = 0) -> Tensor:
        """Token plus position embeddings of tokens (B, S) at positions first_position + 0..S-1."""
        positions = np.arange(first_position, first_position + tokens.shape[1])
        return self.token_embeddings(tokens) + self.position_embeddings(positions)

    def forward_plain(self, tokens: np.ndarray):
        """Every block on every position: the logits and each layer's (B, H, T, T) pattern."""
        x = self.embed(tokens)
        patterns = []
        for block in self.blocks:
            x, probs, _ = block(x)
            patterns.append(probs)
        return self.head(self.norm(x[:, -1])), patterns

    def forward(self, tokens: np.ndarray) -> Tensor:
        """The logits, with the shortcuts of the module docstring (same values, less work).

        As in PyTorch, call the model, ``model(tokens)``, not this: ``__call__`` checks the
        tokens (this does not), then picks this path or ``forward_plain``."""
        examples, example_of = distinct_rows(tokens)  # shortcut 4: each example once
        if len(examples) == len(tokens):
            return self.forward_distinct(tokens)
        return self.forward_distinct(examples)[example_of]  # its row, copied to each draw

    def forward_distinct(self, tokens: np.ndarray) -> Tensor:
        """The logits of examples that are all different, with shortcuts 1 to 3."""
        T = tokens.shape[1]
        P = max(T - 2, 0)  # the shared prefix: [x, o]
        cache = [None] * len(self.blocks)
        if P:
            # Each distinct prefix once; ``prefix_of[n]`` is the row of example n's prefix.
            prefixes, prefix_of = distinct_rows(tokens[:, :P])
            x = self.embed(prefixes)
            for i, block in enumerate(self.blocks):
                if i == len(self.blocks) - 1:  # the last block's prefix outputs reach nothing
                    keys, values = block.attn.keys_and_values(x)
                else:
                    x, _, (keys, values) = block(x)
                cache[i] = (keys[prefix_of], values[prefix_of])  # one copy per example
        # The rest, [y, =]: the first block projects each distinct suffix once (shortcut 3).
        suffixes, suffix_of = distinct_rows(tokens[:, P:])
        x = self.embed(suffixes, first_position=P)
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            row_of = suffix_of if i == 0 else None
            x, _, _ = block(x, past=cache[i], last_query_only=last, row_of=row_of)
        return self.head(self.norm(x[:, -1]))

    def loss(self, tokens: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy of the answer, and the logits (for accuracy)."""
        logits = self(tokens)
        return ag.cross_entropy(logits, labels), logits
