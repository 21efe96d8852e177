"""Tests for tinygrok.tasks: every label is checked by brute force with plain Python."""

import itertools
import math
import re
import textwrap
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinygrok import tasks
from tinygrok.tasks import TASK_NAMES, make_task, sample_batch, split

P = 97


def operands(task):
    """The (x, y) element indices of every example, read back from the tokens."""
    return task.inputs[:, 0] - 2, task.inputs[:, 2] - 2


def find_example(task, x, y):
    """The row of the example whose operands are the elements with indices x and y."""
    rows = np.flatnonzero((task.inputs[:, 0] == 2 + x) & (task.inputs[:, 2] == 2 + y))
    assert len(rows) == 1
    return rows[0]


# ---- labels, by brute force -----------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 7, P])
def test_x_plus_y_labels(p):
    task = make_task("x_plus_y", p)
    expected = {(x, y): (x + y) % p for x in range(p) for y in range(p)}
    got = {(int(x), int(y)): int(z) for x, y, z in zip(*operands(task), task.labels)}
    assert got == expected


@pytest.mark.parametrize("p", [2, 7, P])
def test_x_minus_y_labels(p):
    task = make_task("x_minus_y", p)
    expected = {}
    for x in range(p):
        for y in range(p):
            z = x - y
            while z < 0:
                z += p
            expected[(x, y)] = z
    got = {(int(x), int(y)): int(z) for x, y, z in zip(*operands(task), task.labels)}
    assert got == expected


@pytest.mark.parametrize("p", [2, 3, 7, P])
def test_x_div_y_labels(p):
    task = make_task("x_div_y", p)
    pairs = set()
    for x, y, z in zip(*operands(task), task.labels):
        x, y, z = int(x), int(y), int(z)
        assert 0 <= z < p
        assert (z * y) % p == x  # z really is x / y
        assert z == (x * pow(y, -1, p)) % p
        pairs.add((x, y))
    assert pairs == {(x, y) for x in range(p) for y in range(1, p)}


def test_permutation_elements_and_labels():
    task = make_task("permutation")
    elements = list(itertools.permutations(range(5)))
    assert list(task.elements) == elements
    expected = {}
    for i, sigma in enumerate(elements):
        for j, tau in enumerate(elements):
            composed = tuple(sigma[tau[k]] for k in range(5))  # (sigma o tau)(k)
            expected[(i, j)] = elements.index(composed)
    got = {(int(x), int(y)): int(z) for x, y, z in zip(*operands(task), task.labels)}
    assert got == expected


# ---- encoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASK_NAMES)
def test_token_layout(name):
    task = make_task(name, 11)
    assert task.inputs.shape == (task.num_examples, 4)
    assert task.labels.shape == (task.num_examples,)
    assert np.all(task.inputs[:, 1] == 0)  # "o"
    assert np.all(task.inputs[:, 3] == 1)  # "="
    for column in (0, 2):
        assert task.inputs[:, column].min() >= 2
        assert task.inputs[:, column].max() == 2 + task.num_classes - 1
    assert task.labels.min() >= 0 and task.labels.max() < task.num_classes
    for row in task.inputs[:50]:
        assert task.vocab[row[1]] == "o" and task.vocab[row[3]] == "="


@pytest.mark.parametrize("name", ["x_plus_y", "x_minus_y", "x_div_y"])
def test_modular_vocabulary_and_sizes(name):
    task = make_task(name, P)
    assert task.vocab == tuple(["o", "="] + [str(i) for i in range(P)])
    assert task.elements == tuple(range(P))
    assert task.num_classes == P
    assert task.p == P
    assert task.num_examples == (P * (P - 1) if name == "x_div_y" else P * P)


def test_permutation_vocabulary_and_sizes():
    task = make_task("permutation")
    assert task.vocab[:2] == ("o", "=")
    assert task.vocab[2:] == tuple("".join(map(str, s)) for s in itertools.permutations(range(5)))
    assert task.vocab[2 + 1] == "01243"
    assert task.num_classes == 120
    assert task.num_examples == 120 * 120
    assert task.p is None


def test_permutation_ignores_p():
    a, b = make_task("permutation"), make_task("permutation", p=5)
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.labels, b.labels)


def test_task_names_and_registry():
    assert TASK_NAMES == ("x_plus_y", "x_minus_y", "x_div_y", "permutation")
    assert tuple(tasks.TASKS) == TASK_NAMES


def test_arrays_are_read_only():
    task = make_task("x_plus_y", 5)
    with pytest.raises(ValueError):
        task.inputs[0, 0] = 3
    with pytest.raises(ValueError):
        task.labels[0] = 3


def test_generation_is_fast():
    start = time.perf_counter()
    for name in TASK_NAMES:
        make_task(name, P)
    assert time.perf_counter() - start < 1.0  # a few ms in practice


# ---- decode ---------------------------------------------------------------------------------


def test_decode_division_example():
    task = make_task("x_div_y", P)
    answer = next(z for z in range(P) if (z * 5) % P == 12)  # 80, found independently
    row = find_example(task, 12, 5)
    assert task.decode(task.inputs[row], task.labels[row]) == f"12 / 5 = {answer}"
    assert task.example(row) == "12 / 5 = 80"
    assert task.decode(task.inputs[row]) == "12 / 5 ="
    assert task.decode(task.inputs[row], label=3) == "12 / 5 = 3"  # e.g. a wrong prediction


@pytest.mark.parametrize("name, symbol", [("x_plus_y", "+"), ("x_minus_y", "-")])
def test_decode_symbols(name, symbol):
    task = make_task(name, P)
    row = find_example(task, 3, 10)
    answer = (3 + 10) % P if symbol == "+" else (3 - 10) % P
    assert task.example(row) == f"3 {symbol} 10 = {answer}"


def test_decode_permutation():
    task = make_task("permutation")
    sigma, tau = (1, 0, 2, 3, 4), (0, 2, 1, 4, 3)
    elements = list(itertools.permutations(range(5)))
    row = find_example(task, elements.index(sigma), elements.index(tau))
    assert task.example(row) == "10234 ∘ 02143 = 12043"


# ---- errors ---------------------------------------------------------------------------------


def test_division_needs_prime_p():
    message = (
        "x_div_y needs a prime p (got 96): "
        "division mod p is only defined for every y != 0 when p is prime"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        make_task("x_div_y", 96)
    for composite in (4, 9, 91):
        with pytest.raises(ValueError, match="prime"):
            make_task("x_div_y", composite)


def test_non_prime_p_is_fine_for_other_modular_tasks():
    assert make_task("x_plus_y", 96).num_examples == 96 * 96


def test_unknown_task_lists_accepted_names():
    with pytest.raises(ValueError) as error:
        make_task("x_times_y")
    for name in TASK_NAMES:
        assert name in str(error.value)
    assert "x_times_y" in str(error.value)


@pytest.mark.parametrize("p", [1, 0, -7, 2.5, 97.0, "97", None, True])
def test_bad_p(p):
    with pytest.raises(ValueError, match="p must be an int"):
        make_task("x_plus_y", p)


def test_numpy_int_p_is_accepted():
    assert make_task("x_plus_y", np.int64(5)).p == 5


# ---- split ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n, frac", [(9409, 0.5), (9312, 0.5), (14400, 0.3), (10, 0.99), (7, 0.5)])
def test_split_sizes_are_floor(n, frac):
    train, val = split(n, frac, seed=1)
    assert len(train) == math.floor(frac * n)
    assert len(val) == n - math.floor(frac * n)


def test_split_matches_documented_recipe():
    train, val = split(100, 0.5, seed=3)
    order = np.random.default_rng(3).permutation(100)
    assert np.array_equal(train, order[:50]) and np.array_equal(val, order[50:])


def test_split_accepts_a_task():
    task = make_task("x_div_y", P)
    train, val = split(task)
    assert len(train) == P * (P - 1) // 2 and len(val) == P * (P - 1) - len(train)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(task.num_examples))


def test_split_is_deterministic_per_seed():
    a, b, c = split(9409, seed=0), split(9409, seed=0), split(9409, seed=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(np.sort(a[0]), np.sort(c[0]))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 3000), frac=st.floats(0.01, 0.99), seed=st.integers(0, 2**32 - 1))
def test_split_is_disjoint_and_covers_everything(n, frac, seed):
    assume(0 < math.floor(frac * n) < n)  # else an empty side, refused (test below)
    train, val = split(n, frac, seed)
    assert len(train) == math.floor(frac * n)
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert sorted(train.tolist() + val.tolist()) == list(range(n))


@pytest.mark.parametrize("n, frac", [(7, 0.1), (1, 0.5), (0, 0.5), (-5, 0.5)])
def test_split_refuses_an_empty_side(n, frac):
    with pytest.raises(ValueError, match="empty train or validation split"):
        split(n, frac)


@pytest.mark.parametrize("frac", [0, 1, 0.0, 1.0, -0.5, 1.5, float("nan")])
def test_split_rejects_bad_frac(frac):
    with pytest.raises(ValueError, match="train_frac"):
        split(100, frac)


# ---- batches --------------------------------------------------------------------------------


def test_sampler_draws_train_indices_with_replacement():
    train, _ = split(100, 0.5, seed=0)
    batch = sample_batch(np.random.default_rng(0), train, 512)  # more draws than train items
    assert batch.shape == (512,)
    assert set(batch.tolist()) <= set(train.tolist())
    assert len(set(batch.tolist())) < 512  # repeats: drawn with replacement


def test_sampler_matches_documented_recipe():
    train = np.array([5, 9, 11, 42, 77])
    batch = sample_batch(np.random.default_rng(7), train, 20)
    positions = np.random.default_rng(7).integers(0, 5, size=20)
    assert np.array_equal(batch, train[positions])


def test_sampler_is_deterministic_and_resumable():
    train, _ = split(9409, seed=0)
    a = np.random.default_rng(123)
    b = np.random.default_rng(123)
    assert np.array_equal(sample_batch(a, train, 64), sample_batch(b, train, 64))
    saved = a.bit_generator.state  # what a checkpoint stores
    next_batch = sample_batch(a, train, 64)
    restored = np.random.default_rng()
    restored.bit_generator.state = saved
    assert np.array_equal(sample_batch(restored, train, 64), next_batch)
    assert not np.array_equal(sample_batch(a, train, 64), next_batch)  # the stream moves on


def test_sampler_errors():
    with pytest.raises(TypeError, match="Generator"):
        sample_batch(0, np.arange(5), 3)
    with pytest.raises(ValueError, match="empty"):
        sample_batch(np.random.default_rng(0), np.arange(0), 3)


# ---- the "adding an operation" recipe of the module docstring -------------------------------


def recipe_from_docstring():
    """The two code blocks of tasks.__doc__: the function, and the registry line."""
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", tasks.__doc__)
    assert len(blocks) == 2, "the docstring should show the function and the registry line"
    return textwrap.dedent(blocks[0]), textwrap.dedent(blocks[1]).strip()


def test_x2_plus_y2_is_not_registered_by_default():
    assert "x2_plus_y2" not in tasks.TASKS


def test_docstring_recipe_adds_x2_plus_y2(monkeypatch):
    function_code, registry_line = recipe_from_docstring()
    namespace = dict(vars(tasks))
    exec(function_code, namespace)
    entry = eval("{" + registry_line + "}", namespace)
    assert list(entry) == ["x2_plus_y2"]
    monkeypatch.setitem(tasks.TASKS, "x2_plus_y2", entry["x2_plus_y2"])

    p = 13
    task = make_task("x2_plus_y2", p)
    assert task.num_classes == p and task.num_examples == p * p and task.p == p
    expected = {(x, y): (x * x + y * y) % p for x in range(p) for y in range(p)}
    got = {(int(x), int(y)): int(z) for x, y, z in zip(*operands(task), task.labels)}
    assert got == expected
    assert task.example(find_example(task, 3, 4)) == "3 # 4 = 12"  # 25 mod 13
    train, val = split(task, seed=0)
    assert len(train) == math.floor(0.5 * p * p) and len(train) + len(val) == p * p


@pytest.mark.parametrize("batch_size, error", [
    (None, TypeError), (2.5, TypeError), (True, TypeError), ("8", TypeError),
    (0, ValueError), (-3, ValueError)])
def test_sample_batch_refuses_a_batch_size_that_is_not_a_positive_integer(batch_size, error):
    with pytest.raises(error, match="batch_size must be"):
        sample_batch(np.random.default_rng(0), np.arange(10), batch_size)


def test_decode_refuses_tokens_and_labels_outside_the_vocabulary():
    task = make_task("x_div_y", 7)
    assert task.decode(task.inputs[0], task.labels[0]) == task.example(0)
    with pytest.raises(ValueError, match="label must be a class index"):
        task.decode(task.inputs[0], -1)  # would name the "=" token's neighbour, not a class
    with pytest.raises(ValueError, match="label must be a class index"):
        task.decode(task.inputs[0], task.num_classes)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 9\), got \[0, 9, 1, 2\]"):
        task.decode(np.array([0, len(task.vocab), 1, 2]))  # plain numbers in the message
    with pytest.raises(TypeError, match="must be integers"):
        task.decode(task.inputs[0], 2.5)
    assert task.decode([]) == "" and task.decode([], 0) == task.vocab[2]  # as before the checks
    assert task.decode(task.inputs[0], np.array(task.labels[0])) == task.example(0)  # 0-d


def test_only_the_modular_tasks_have_a_modulus():
    assert [tasks.has_modulus(name) for name in TASK_NAMES] == [True, True, True, False]
    assert tasks.has_modulus("x_times_y")  # an unknown name (a foreign config) counts as modular


# -- pinned by a mutation run of tasks.py: each test failed on a mutant the rest let through

@pytest.mark.parametrize("name, first_pairs", [
    ("x_plus_y", [(0, 0), (0, 1), (0, 2)]),
    ("x_div_y", [(0, 1), (0, 2), (0, 3)]),
    ("permutation", [(0, 0), (0, 1), (0, 2)]),
])
def test_examples_are_in_x_major_order(name, first_pairs):
    # The order fixes which examples a seed's split puts in training: y-major order gives
    # the same labels but another train set for the same seed.
    task = make_task(name, 5)
    x, y = task.inputs[:, 0] - 2, task.inputs[:, 2] - 2
    assert list(zip(x[:3].tolist(), y[:3].tolist())) == first_pairs
    assert np.all(np.diff(x) >= 0)  # x never goes back


def test_zero_and_one_are_not_prime():
    assert [n for n in range(-2, 12) if tasks.is_prime(n)] == [2, 3, 5, 7, 11]


def test_a_table_with_an_answer_outside_the_elements_is_refused(monkeypatch):
    def off_by_one(p):
        x, y = tasks.modular_pairs(p)
        return x, y, (x + y) % p + 1  # p itself for some pairs: no such element

    monkeypatch.setitem(tasks.TASKS, "broken", tasks.Operation("+", off_by_one))
    with pytest.raises(ValueError, match=r"element indices in 0\.\.4"):
        make_task("broken", 5)


@pytest.mark.parametrize("train_idx", [np.array([True, False, True]), np.array([0.0, 1.0]),
                                       [0, 1, 2], np.arange(4).reshape(2, 2)],
                         ids=["mask", "floats", "list", "2-D"])
def test_sample_batch_refuses_what_is_not_an_array_of_indices(train_idx):
    # a boolean mask came back as True/False "indices", floats as floats
    with pytest.raises(TypeError, match="train_idx must be a 1-D NumPy array of integer example"):
        sample_batch(np.random.default_rng(0), train_idx, 4)


@pytest.mark.parametrize("examples, train_frac, error", [
    (49.9, 0.5, TypeError), (np.arange(10), 0.5, TypeError), ("10", 0.5, TypeError),
    (10, "0.5", TypeError), (10, True, TypeError)],
    ids=["fractional-count", "an-array", "text", "text-fraction", "bool-fraction"])
def test_split_refuses_what_is_not_a_count_and_a_fraction(examples, train_frac, error):
    # 49.9 was cut to 49 silently; an array failed inside int()
    with pytest.raises(error, match="split takes a Task or a number|train_frac must be a "
                                    "number"):
        split(examples, train_frac)
