"""The tasks: binary-operation tables turned into token sequences, a split, and batches.

Grokking is studied on small algebraic tables. Every pair (x, y) of elements is one example;
the model reads four tokens ``[x, o, y, =]`` and must predict the element ``x o y``. Half of
the table is shown in training, the other half is held out: the network first memorises the
train half and, much later, generalises to the held-out half.

Tasks (``TASK_NAMES``):

- ``x_plus_y``    : x + y mod p, elements 0..p-1, p*p examples
- ``x_minus_y``   : x - y mod p, elements 0..p-1, p*p examples
- ``x_div_y``     : x * y^-1 mod p with y != 0 (needs p prime), p*(p-1) examples
- ``permutation`` : sigma o tau in S5, (sigma o tau)(i) = sigma(tau(i)), 120*120 examples.
  The elements are all permutations of range(5) in ``itertools.permutations`` (lexicographic)
  order. This task has no modulus (its ``Task.p`` is None; ``make_task`` checks p but does
  not use it, ``TrainConfig.validate`` refuses any p but the default, and the run command
  any --p). A permutation is written in one-line notation: "20134" is the permutation
  sending 0->2, 1->0, 2->1, 3->3, 4->4.

Encoding: the vocabulary is ``["o", "="] + elements`` (as strings), so "o" is token 0, "=" is
token 1 and the element with index i is token 2 + i. The label is the element index of the
answer, so there are as many classes as elements (p, or 120 for S5).

Adding an operation
-------------------
Write one function that takes p and returns three equal-length int arrays (x, y, result) of
element indices, one entry per example. For x^2 + y^2 mod p::

    def x2_plus_y2(p):
        # x^2 + y^2 mod p, for every pair (x, y) of 0..p-1
        x, y = modular_pairs(p)
        return x, y, (x * x + y * y) % p

then add one line to the ``TASKS`` dict (the symbol is only used to print examples:
``Task.decode`` and the heatmaps' captions)::

    "x2_plus_y2": Operation("#", x2_plus_y2),

and ``make_task("x2_plus_y2", p=97)`` works. Operations whose elements are not 0..p-1 also
pass ``elements=`` (a function of p returning the list of elements), as ``permutation`` does.
"""

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

OP_TOKEN = 0  # the token id of "o"
EQ_TOKEN = 1  # the token id of "="
FIRST_ELEMENT_TOKEN = 2  # the element with index i is token 2 + i
PERMUTATION_SIZE = 5  # the permutation task works in S5


# ---- the operation tables -------------------------------------------------------------------


def modular_pairs(p, nonzero_y=False):
    """Every pair (x, y) with x, y in 0..p-1 (y in 1..p-1 if nonzero_y), x-major order."""
    ys = np.arange(1 if nonzero_y else 0, p, dtype=np.int64)
    x = np.repeat(np.arange(p, dtype=np.int64), len(ys))
    y = np.tile(ys, p)
    return x, y


def x_plus_y(p):
    """x + y mod p for every pair."""
    x, y = modular_pairs(p)
    return x, y, (x + y) % p


def x_minus_y(p):
    """x - y mod p for every pair (NumPy's % is never negative for a positive p)."""
    x, y = modular_pairs(p)
    return x, y, (x - y) % p


def is_prime(n):
    """Trial division; p is small here."""
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def x_div_y(p):
    """x * y^-1 mod p for every pair with y != 0; y^-1 = y^(p-2) mod p (Fermat), p prime."""
    if not is_prime(p):
        raise ValueError(
            f"x_div_y needs a prime p (got {p}): "
            "division mod p is only defined for every y != 0 when p is prime"
        )
    x, y = modular_pairs(p, nonzero_y=True)
    inverse = np.array([pow(v, p - 2, p) for v in range(p)], dtype=np.int64)  # [0] unused
    return x, y, (x * inverse[y]) % p


def all_permutations(k=PERMUTATION_SIZE):
    """All permutations of range(k) as tuples, in lexicographic order."""
    return list(itertools.permutations(range(k)))


def compose_permutations(k=PERMUTATION_SIZE):
    """sigma o tau for every pair of permutations of range(k), as element indices."""
    perms = np.array(all_permutations(k), dtype=np.int64)  # (k!, k), row i is element i
    n = len(perms)
    x = np.repeat(np.arange(n), n)
    y = np.tile(np.arange(n), n)
    composed = np.take_along_axis(perms[x], perms[y], axis=1)  # row: sigma[tau[i]] for each i
    # Find each composed permutation's index: read it as a base-k number, look that up.
    place_values = k ** np.arange(k - 1, -1, -1)
    index_of_code = np.full(k**k, -1, dtype=np.int64)
    index_of_code[perms @ place_values] = np.arange(n)
    return x, y, index_of_code[composed @ place_values]


def permutation(p):
    """sigma o tau for every pair in S5; p is ignored."""
    return compose_permutations(PERMUTATION_SIZE)


def permutation_elements(p):
    """The 120 elements of S5; p is ignored."""
    return all_permutations(PERMUTATION_SIZE)


# ---- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One registry entry.

    symbol:   how ``Task.decode`` prints the operator.
    table:    p -> (x, y, result), int arrays of element indices, one entry per example.
    elements: p -> list of elements; None means the integers 0..p-1 (a modular task).
    """

    symbol: str
    table: Callable
    elements: Optional[Callable] = None


TASKS = {
    "x_plus_y": Operation("+", x_plus_y),
    "x_minus_y": Operation("-", x_minus_y),
    "x_div_y": Operation("/", x_div_y),
    "permutation": Operation("∘", permutation, elements=permutation_elements),
}
TASK_NAMES = tuple(TASKS)


def has_modulus(name: str) -> bool:
    """Whether the task takes a modulus p: the modular ones do, permutation (S5) does not.
    A name not in the registry (an old or foreign config.json) counts as modular."""
    operation = TASKS.get(name)
    return operation is None or operation.elements is None


# ---- a task, encoded ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Task:
    """Every example of one operation, encoded as tokens. The arrays are read-only.

    p is the modulus, or None for a task whose elements do not depend on it (permutation).
    inputs: (N, 4) token ids [x, o, y, =]; labels: (N,) element index of the answer.
    """

    name: str
    p: Optional[int]
    elements: tuple
    symbol: str
    inputs: np.ndarray
    labels: np.ndarray
    vocab: tuple
    num_classes: int

    @property
    def num_examples(self):
        return len(self.labels)

    def decode(self, tokens_row, label=None):
        """Render one input row (and optionally a label), e.g. "12 / 5 = 80" or "12 / 5 =".

        The label is a class index: a true label or a model's prediction.
        """
        tokens_row = np.asarray(tokens_row)
        if tokens_row.size and tokens_row.dtype.kind not in "iu" \
                or label is not None and not _is_integer(label):
            raise TypeError(f"tokens and label must be integers, got {tokens_row.tolist()} "
                            f"and {label!r}")
        if any(not 0 <= t < len(self.vocab) for t in tokens_row):
            raise ValueError(f"tokens must lie in [0, {len(self.vocab)}), got "
                             f"{tokens_row.tolist()}")
        if label is not None and not 0 <= label < self.num_classes:
            raise ValueError(f"label must be a class index in [0, {self.num_classes}), got {label}")
        words = [self.symbol if t == OP_TOKEN else self.vocab[t] for t in tokens_row]
        if label is not None:
            words.append(self.vocab[FIRST_ELEMENT_TOKEN + label])
        return " ".join(words)

    def example(self, i):
        """Example i with its true answer, e.g. "12 / 5 = 80"."""
        return self.decode(self.inputs[i], self.labels[i])


def element_name(element):
    """The token string of an element: "12", or "02134" for a permutation (one-line notation)."""
    if isinstance(element, tuple):
        return "".join(str(i) for i in element)
    return str(element)


def read_only(array):
    """Lock an array so a Task cannot be changed by accident (frozen all the way down)."""
    array.flags.writeable = False
    return array


def make_task(name, p=97):
    """Build every example of task `name` (see TASK_NAMES) with modulus p (an int >= 2)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; accepted names: {', '.join(TASKS)}")
    if not isinstance(p, (int, np.integer)) or p < 2:  # True is 1: rejected too
        raise ValueError(f"p must be an int >= 2 (got {p!r})")
    p = int(p)
    operation = TASKS[name]
    modular = operation.elements is None
    elements = tuple(range(p)) if modular else tuple(operation.elements(p))
    x, y, result = (np.asarray(a, dtype=np.int64) for a in operation.table(p))
    if not (x.shape == y.shape == result.shape and x.ndim == 1):
        raise ValueError(f"{name}: the table must return three 1-D arrays of equal length")
    indices = np.concatenate([x, y, result])
    if indices.min() < 0 or indices.max() >= len(elements):
        raise ValueError(f"{name}: the table must return element indices in 0..{len(elements) - 1}")
    op, eq = np.full_like(x, OP_TOKEN), np.full_like(x, EQ_TOKEN)
    inputs = np.stack([FIRST_ELEMENT_TOKEN + x, op, FIRST_ELEMENT_TOKEN + y, eq], axis=1)
    return Task(
        name=name,
        p=p if modular else None,
        elements=elements,
        symbol=operation.symbol,
        inputs=read_only(inputs),
        labels=read_only(result),
        vocab=("o", "=") + tuple(element_name(e) for e in elements),
        num_classes=len(elements),
    )


# ---- split and batches ----------------------------------------------------------------------


class EmptySplit(ValueError):
    """A train fraction that leaves the train or the validation split without an example."""

    def __init__(self, train_frac, num_examples: int):
        super().__init__(f"train_frac {train_frac} of {num_examples} examples leaves an empty "
                         f"train or validation split")
        self.train_frac, self.num_examples = train_frac, num_examples


def split(task_or_num_examples, train_frac=0.5, seed=0):
    """Seeded train/validation split of all example indices.

    Shuffles 0..N-1 with ``numpy.random.default_rng(seed).permutation(N)``; the first
    ``floor(train_frac * N)`` (the float product, rounded down) are train, the rest validation.
    Both keep that shuffled order. Returns (train_idx, val_idx), int64 arrays.
    """
    if isinstance(task_or_num_examples, Task):
        n = task_or_num_examples.num_examples
    elif _is_integer(task_or_num_examples):  # not 49.9 (it was cut to 49), not an array
        n = int(task_or_num_examples)
    else:
        raise TypeError(f"split takes a Task or a number of examples, got "
                        f"{task_or_num_examples!r:.60}")
    if not (isinstance(train_frac, (int, float, np.integer, np.floating))
            and not isinstance(train_frac, bool)):
        raise TypeError(f"train_frac must be a number, got {train_frac!r}")
    if not 0 < train_frac < 1:  # also False for NaN
        raise ValueError(f"train_frac must be strictly between 0 and 1 (got {train_frac!r})")
    num_train = math.floor(train_frac * n)
    if not 0 < num_train < n:
        raise EmptySplit(train_frac, n)
    order = np.random.default_rng(seed).permutation(n)
    return order[:num_train], order[num_train:]


def _is_integer(value) -> bool:
    """An int, a NumPy integer or a 0-d integer array, but not a bool (which Python counts
    as an int)."""
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "iu"
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def sample_batch(rng, train_idx, batch_size):
    """Draw batch_size example indices uniformly, with replacement, from train_idx.

    rng is the caller's numpy Generator, so a training loop can save and restore
    ``rng.bit_generator.state`` and resume the very same sequence of batches.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (got {type(rng).__name__})")
    if not (isinstance(train_idx, np.ndarray) and train_idx.ndim == 1
            and train_idx.dtype.kind in "iu"):  # a boolean mask gave True/False "indices"
        what = (f"a {train_idx.ndim}-D {train_idx.dtype} array" if isinstance(train_idx, np.ndarray)
                else type(train_idx).__name__)
        raise TypeError(f"train_idx must be a 1-D NumPy array of integer example indices (as "
                        f"split returns), got {what}")
    if len(train_idx) == 0:
        raise ValueError("cannot sample a batch from an empty training split")
    if not _is_integer(batch_size):
        raise TypeError(f"batch_size must be an integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    return train_idx[rng.integers(0, len(train_idx), size=batch_size)]
