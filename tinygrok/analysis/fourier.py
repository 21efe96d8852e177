"""Fourier features of the element embeddings, for the modular tasks.

Networks that grok modular addition are known to represent each element x by waves
cos(2 pi k x / n), sin(2 pi k x / n) at a few *key frequencies* k. We measure it directly:
write the embedding matrix in the Fourier basis of the cyclic group and see where its
energy sits.

The group and the ordering of its elements:

- ``x_plus_y``, ``x_minus_y``: the elements 0..p-1 are Z_p, in their natural order (n = p).
- ``x_div_y``: division is not addition in Z_p, but the nonzero elements form a cyclic group
  of order p-1 under multiplication. With a primitive root g (a g whose powers g^0..g^(p-2)
  are all of 1..p-1), write x = g^log(x). Then
  log(x / y) = log(x) - log(y) mod (p-1): division becomes subtraction in Z_{p-1}.
  So we put the embedding of element g^j at position j (n = p-1). Element 0 has no
  logarithm and its row is dropped.
- ``permutation`` (S5) is not cyclic: no spectrum (the functions raise, the analysis skips it).

The Fourier basis of Z_n, as the rows of an n x n matrix, each of unit length:

    constant:  1/sqrt(n)
    k = 1 .. (n-1)//2:  sqrt(2/n) cos(2 pi k j / n)   and   sqrt(2/n) sin(2 pi k j / n)
    k = n/2 (only when n is even):  cos(pi j) / sqrt(n) = (-1)^j / sqrt(n)

These n vectors are orthonormal, so the coefficients C = B @ E of the (n, d) embedding
matrix E keep its total energy (sum of squares). The *norm of frequency k* is the length of
all its coefficients over the d embedding dimensions together:
norm_k = sqrt(|C_cos,k|^2 + |C_sin,k|^2) (and norm_0 = |C_constant| = sqrt(n) |mean embedding|).

Key frequencies: the k >= 1 with norm_k > max_{k>=1} norm_k / 4 (the ratio is a parameter),
after norms of at most 1e-6 of the whole spectrum's norm are set to 0 as rounding noise
(so constant embeddings have no key frequency; ``wave_norms``). The Gini below uses the
same norms.
Sparsity: the Gini coefficient of (norm_1, ..., norm_K), sorted ascending x_1 <= ... <= x_K,
    G = 2 sum_i i x_i / (K sum_i x_i) - (K + 1) / K,
0 when every frequency has the same norm, (K-1)/K (close to 1) when only one is nonzero.
"""

from dataclasses import dataclass

import numpy as np

from tinygrok.tasks import FIRST_ELEMENT_TOKEN, is_prime  # token 2 + i is element i

KEY_FREQUENCY_RATIO = 0.25
# A frequency whose norm is below this fraction of the whole spectrum's is rounding noise
# (float32 embeddings carry about 6e-8 of relative error per number).
NOISE_RATIO = 1e-6
ADDITIVE_TASKS = ("x_plus_y", "x_minus_y")
MULTIPLICATIVE_TASKS = ("x_div_y",)


def primitive_root(p):
    """The smallest g whose powers g^1, ..., g^(p-1) mod p are all of 1..p-1 (p prime)."""
    if not is_prime(p):
        raise ValueError(f"{p} is not prime")
    for g in range(1, p):
        powers = {pow(g, j, p) for j in range(1, p)}
        if len(powers) == p - 1:
            return g
    raise AssertionError("unreachable: every prime has a primitive root")


def powers_of_primitive_root(p):
    """[g^0, g^1, ..., g^(p-2)] mod p: the element at each discrete-log position."""
    g = primitive_root(p)
    return np.array([pow(g, j, p) for j in range(p - 1)], dtype=np.int64)


def discrete_log_table(p):
    """table[x] = j with g^j = x mod p, for x in 1..p-1; table[0] = -1 (0 has no logarithm)."""
    table = np.full(p, -1, dtype=np.int64)
    table[powers_of_primitive_root(p)] = np.arange(p - 1)
    return table


def fourier_basis(n):
    """Orthonormal Fourier basis of Z_n: (n, n) rows, and the frequency k of each row."""
    j = np.arange(n)
    rows = [np.full(n, 1 / np.sqrt(n))]
    frequencies = [0]
    for k in range(1, (n - 1) // 2 + 1):
        angle = 2 * np.pi * k * j / n
        rows += [np.sqrt(2 / n) * np.cos(angle), np.sqrt(2 / n) * np.sin(angle)]
        frequencies += [k, k]
    if n % 2 == 0:
        rows.append(np.cos(np.pi * j) / np.sqrt(n))
        frequencies.append(n // 2)
    return np.array(rows), np.array(frequencies)


def frequency_norms(group_embeddings):
    """norm_k for k = 0..n//2 of an (n, d) matrix whose row j is group element j."""
    embeddings = np.asarray(group_embeddings, dtype=np.float64)
    basis, frequencies = fourier_basis(len(embeddings))
    coefficients = basis @ embeddings  # (n, d)
    energy = (coefficients**2).sum(axis=1)
    return np.sqrt(np.bincount(frequencies, weights=energy))


def wave_norms(norms):
    """The norms of the frequencies k >= 1, with rounding noise set to 0: a norm below
    NOISE_RATIO of the whole spectrum's. (Constant embeddings leave about 1e-16 of it at
    every k >= 1, which would otherwise rank as "key frequencies".)"""
    norms = np.asarray(norms, dtype=np.float64)
    waves = norms[1:].copy()
    waves[waves <= NOISE_RATIO * np.sqrt((norms**2).sum())] = 0
    return waves


def key_frequencies(norms, ratio=KEY_FREQUENCY_RATIO):
    """The frequencies k >= 1 whose norm exceeds ratio times the largest such norm."""
    waves = wave_norms(norms)
    if waves.size == 0 or waves.max() <= 0:
        return []
    return [int(k) + 1 for k in np.flatnonzero(waves > ratio * waves.max())]


def clock(group_embeddings, k):
    """The elements on the plane of frequency k, and how much of them is a perfect clock.

    The plane is spanned by the cos and sin coefficients of k (two d-vectors), made
    orthonormal with QR. QR may flip the sign of either column (its R can have negative
    diagonal entries), which would mirror the plane, so each column is flipped back: then
    direction 1 points along the cos coefficients, and direction 2 along the part of the
    sin coefficients at right angles to direction 1. An element at group position j then
    sits at angle 2 pi k j / n if the embeddings are a clock. The fit is
    |<ideal, c>| / (|ideal| |c|) with both written as complex numbers,
    ideal_j = exp(2 pi i k j / n) and c the points less their mean (the mean embedding is
    frequency 0, not part of the clock): 1 for a perfect circle turned the right way, any
    centre, radius and starting angle; less for an ellipse (cos and sin waves of unequal
    size) or when other frequencies also fall in the plane; 1/sqrt(2) for points on a line
    (one wave alone); 0 when the points do not move at all.

    Returns (points, fit): the (n, 2) projected points and the fit. k must be a whole
    number with a cos and a sin row, 1 <= k < n/2, and the embeddings need two dimensions.
    """
    embeddings = np.asarray(group_embeddings, dtype=np.float64)
    n = len(embeddings)
    if not 1 <= k < n / 2 or int(k) != k:
        raise ValueError(f"frequency k must be a whole number with 1 <= k < n/2 = {n / 2:g} "
                         f"to have a plane; got {k}")
    if embeddings.ndim != 2 or embeddings.shape[1] < 2:
        raise ValueError(f"clock needs (n, d) embeddings with d >= 2 for a plane; got "
                         f"shape {embeddings.shape}")
    basis, frequencies = fourier_basis(n)
    cos_row, sin_row = np.flatnonzero(frequencies == k)
    coefficients = basis @ embeddings
    directions, triangle = np.linalg.qr(np.stack([coefficients[cos_row],
                                                  coefficients[sin_row]]).T)
    directions = directions * np.where(np.diag(triangle) < 0, -1.0, 1.0)
    points = embeddings @ directions
    if np.all(embeddings == embeddings[0]):
        return points, 0.0  # every element at one point: no clock at all
    ideal = np.exp(2j * np.pi * k * np.arange(n) / n)
    centred = points - points.mean(axis=0)
    actual = centred[:, 0] + 1j * centred[:, 1]
    fit = abs(np.vdot(ideal, actual)) / (np.linalg.norm(ideal) * np.linalg.norm(actual))
    return points, float(fit)


def gini(values):
    """Gini coefficient of nonnegative values: 0 = all equal, near 1 = one holds everything."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(2 * (ranks * x).sum() / (n * total) - (n + 1) / n)


def group_order(task, p):
    """The element positions that make the task's operation cyclic, and a description."""
    if task in ADDITIVE_TASKS:
        return np.arange(p), f"Z_{p}"
    if task in MULTIPLICATIVE_TASKS:
        g = primitive_root(p)
        return powers_of_primitive_root(p), f"Z_{p - 1} (position j = element {g}^j, 0 dropped)"
    raise ValueError(f"task {task!r} has no cyclic group structure for a Fourier analysis")


def group_embeddings(token_embeddings, task, p):
    """The element rows of (..., V, d) token embeddings, in group order: (..., n, d)."""
    order, _ = group_order(task, p)
    return np.asarray(token_embeddings)[..., FIRST_ELEMENT_TOKEN + order, :]


@dataclass
class FourierTimeline:
    """The spectrum of the element embeddings at every embedding snapshot."""

    steps: np.ndarray  # (E,)
    norms: np.ndarray  # (E, K+1): norm_k for k = 0..K at each snapshot
    gini: np.ndarray  # (E,): Gini of norm_1..norm_K
    group: str  # which group and ordering was used
    key_ratio: float

    @property
    def frequencies(self):
        return np.arange(self.norms.shape[1])

    def key_frequencies(self, index=-1):
        return key_frequencies(self.norms[index], self.key_ratio)


def fourier_timeline(steps, token_embeddings, task, p, key_ratio=KEY_FREQUENCY_RATIO):
    """The spectrum of every snapshot of (E, V, d) token embeddings."""
    _, group = group_order(task, p)
    vocab = np.shape(token_embeddings)[1] if np.ndim(token_embeddings) == 3 else None
    if vocab != p + 2:  # "o", "=" and the p elements
        raise ValueError(f"token_embeddings must have shape (E, p + 2, d) = (E, {p + 2}, d) "
                         f"for p = {p}, got {np.shape(token_embeddings)}: is p the run's?")
    elements = group_embeddings(token_embeddings, task, p)
    norms = np.stack([frequency_norms(snapshot) for snapshot in elements])
    return FourierTimeline(
        steps=np.asarray(steps, dtype=np.int64),
        norms=norms,
        gini=np.array([gini(wave_norms(n)) for n in norms]),
        group=group,
        key_ratio=float(key_ratio),
    )
