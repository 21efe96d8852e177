"""Numbers that describe attention patterns and how they change during training.

Shapes: a *pattern* is one head's attention on one probe, a (T, T) matrix whose row q holds
the probabilities with which query q attends to keys 0..q (causal: keys after q get 0). The
run stores ``patterns`` of shape (S, L, H, N, T, T): steps, layers, heads, probes, queries,
keys. Every function here works on any leading axes and names the axes it reduces.

Row 0 is left out of most metrics. The first query can only see itself, so its row is
(1, 0, ..., 0) for every head, probe and step: it carries no information and would only pull
every similarity toward 1 and every entropy toward 0. "Query rows" below means rows 1..T-1.

Entropy (natural log) of a query row a = (a_0, ..., a_q):  H(a) = -sum_k a_k ln a_k, with
0 ln 0 = 0. A row spread evenly over k keys has H = ln k; a one-hot row has H = 0. The last
query (the "=" token, whose output is the answer) has T keys, so its entropy is at most ln T.

Positional and content parts: over the N probes, the mean pattern M = mean_n A_n is what the
head does whatever the input (its *positional* part); the variance V = var_n A_n (population
variance, per entry) is how much it depends on the tokens (its *content* part). Since
mean_n sum A_n^2 = sum M^2 + sum V (sums over the entries of the query rows),

    position score = sum M^2 / (sum M^2 + sum V)

is the share of the patterns' mean energy that is positional: 1 when every probe gets the
same pattern, smaller the more the pattern depends on the input.

Pattern vector: one head at one step is represented by all its query rows on all probes,
flattened into one vector of length N * (T-1) * T. Cosine similarity between two such
vectors compares both the positional and the content behaviour of a head. We use it for
*consistency* (similarity of each logged pattern to the next one: S-1 values per head),
*similarity to final* (to the pattern at the last logged step) and for the *emergence step*:
the first logged step from which the similarity to the final pattern stays >= a threshold
(default 0.9) until the end. The final step itself has similarity 1, so every head has an
emergence step; a head that only settles at the very end emerges at the last step.
"""

from dataclasses import dataclass

import numpy as np

FIRST_QUERY = 1  # rows before this are forced by the causal mask (see the module docstring)
EMERGENCE_SIMILARITY = 0.9


def row_entropy(patterns):
    """Entropy in nats of every query row: (..., T, T) -> (..., T)."""
    p = np.asarray(patterns)
    safe = np.where(p > 0, p, 1)  # log(1) = 0 makes 0 ln 0 count as 0
    return -(p * np.log(safe)).sum(axis=-1)


def mean_query_entropy(patterns):
    """Entropy of the query rows, averaged over rows and probes: (..., N, T, T) -> (...)."""
    return row_entropy(patterns)[..., FIRST_QUERY:].mean(axis=(-2, -1), dtype=np.float64)


def last_query_entropy(patterns):
    """Entropy of the last query row ("="), averaged over probes: (..., N, T, T) -> (...)."""
    return row_entropy(patterns)[..., -1].mean(axis=-1, dtype=np.float64)


def positional_part(patterns):
    """Mean pattern over probes: (..., N, T, T) -> (..., T, T)."""
    return np.asarray(patterns, dtype=np.float64).mean(axis=-3)


def content_part(patterns):
    """Variance of each entry across probes: (..., N, T, T) -> (..., T, T)."""
    return np.asarray(patterns, dtype=np.float64).var(axis=-3)


def position_score(patterns):
    """Share of pattern energy that is positional, over the query rows: (..., N, T, T) -> (...)."""
    rows = np.asarray(patterns)[..., FIRST_QUERY:, :]
    positional = (positional_part(rows) ** 2).sum(axis=(-2, -1))
    content = content_part(rows).sum(axis=(-2, -1))
    return positional / (positional + content)


def pattern_vectors(patterns):
    """Each head's query rows on all probes as one vector: (..., N, T, T) -> (..., N*(T-1)*T)."""
    p = np.asarray(patterns)
    rows = p[..., FIRST_QUERY:, :]
    return rows.reshape(p.shape[:-3] + (-1,))


def cosine_similarity(a, b):
    """Cosine of the angle between vectors along the last axis (0 if either is all zeros)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dot = (a * b).sum(axis=-1)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)


def consistency(vectors):
    """Similarity of each step's vector to the next step's: (S, ..., D) -> (S-1, ...)."""
    return cosine_similarity(vectors[:-1], vectors[1:])


def similarity_to_final(vectors):
    """Similarity of each step's vector to the last step's: (S, ..., D) -> (S, ...)."""
    return cosine_similarity(vectors, vectors[-1:])


def emergence_index(similarities, threshold=EMERGENCE_SIMILARITY):
    """First index from which a 1-D similarity series stays >= threshold to its end."""
    similarities = np.asarray(similarities)
    below = np.flatnonzero(similarities < threshold)
    if below.size == 0:
        return 0
    if below[-1] == len(similarities) - 1:
        raise ValueError(f"the series ends below the threshold {threshold}")
    return int(below[-1]) + 1


def emergence_steps(steps, similarities, threshold=EMERGENCE_SIMILARITY):
    """Emergence step of every head: steps (S,), similarities (S, L, H) -> (L, H) int64."""
    if not 0 < threshold <= 1:
        raise ValueError(f"the emergence threshold must be in (0, 1], got {threshold}")
    steps = np.asarray(steps, dtype=np.int64)
    similarities = np.array(similarities, dtype=np.float64)
    if steps.ndim != 1 or similarities.ndim != 3 or len(similarities) != len(steps) \
            or not len(steps):
        raise ValueError(f"emergence_steps needs steps (S,) and similarities (S, L, H) for the "
                         f"same S >= 1 steps, got shapes {steps.shape} and "
                         f"{similarities.shape}")
    # The last similarity is cos(v, v), which rounding can put a hair under 1.
    similarities[-1] = 1.0
    layers, heads = similarities.shape[1:]
    result = np.empty((layers, heads), dtype=np.int64)
    for layer in range(layers):
        for head in range(heads):
            result[layer, head] = steps[emergence_index(similarities[:, layer, head], threshold)]
    return result


@dataclass
class AttentionTimeline:
    """Every per-head attention metric at every logged step.

    Arrays are indexed [step, layer, head], except ``consistency`` whose first axis has S-1
    entries (entry i compares step i with step i+1) and ``emergence_step`` (layer, head).
    """

    steps: np.ndarray  # (S,)
    entropy_mean: np.ndarray  # mean query-row entropy, nats
    entropy_last: np.ndarray  # entropy of the last ("=") query row, nats
    position_score: np.ndarray
    consistency: np.ndarray  # (S-1, L, H)
    similarity_to_final: np.ndarray
    emergence_step: np.ndarray  # (L, H)
    emergence_threshold: float
    max_entropy_last: float  # ln T, the entropy of a uniform last row

    @property
    def layers(self):
        return self.entropy_mean.shape[1]

    @property
    def heads(self):
        return self.entropy_mean.shape[2]


def attention_timeline(steps, patterns, emergence_threshold=EMERGENCE_SIMILARITY):
    """Compute every metric of an (S, L, H, N, T, T) pattern array, one step at a time."""
    steps = np.asarray(steps, dtype=np.int64)
    patterns = np.asarray(patterns)
    if patterns.ndim != 6 or steps.shape != patterns.shape[:1]:
        raise ValueError(f"attention_timeline needs one step per pattern: steps (S,) and "
                         f"patterns (S, L, H, N, T, T), got {steps.shape} and {patterns.shape}")
    if (np.diff(steps) <= 0).any():  # the last pattern is "final", and emergence is "first"
        raise ValueError("attention_timeline needs its steps in increasing order, each once")
    vectors = pattern_vectors(patterns)
    similarity = similarity_to_final(vectors)
    return AttentionTimeline(
        steps=steps,
        entropy_mean=np.stack([mean_query_entropy(p) for p in patterns]),
        entropy_last=np.stack([last_query_entropy(p) for p in patterns]),
        position_score=np.stack([position_score(p) for p in patterns]),
        consistency=consistency(vectors),
        similarity_to_final=similarity,
        emergence_step=emergence_steps(steps, similarity, emergence_threshold),
        emergence_threshold=float(emergence_threshold),
        max_entropy_last=float(np.log(patterns.shape[-1])),
    )
