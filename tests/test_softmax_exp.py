"""softmax_exp.exp_each: the vector code against the scalar code (bit for bit), both
against the exactly rounded exp, and its edges: what it must not touch, NaN, the range."""

import math

import numba
import numpy as np
import pytest
from numba import njit

from tinygrok.softmax_exp import LOWEST, exp_each, exp_each_in_order

needs_jit = pytest.mark.skipif(numba.config.DISABLE_JIT,
                               reason="the vector code runs only when Numba compiles")


@njit(cache=False)
def exp_in_kernel(values, count):
    exp_each(values, count)


def exactly_rounded(x: np.ndarray) -> np.ndarray:
    """e^x rounded once to float32 (NumPy's float64 exp is far more accurate than that)."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def units_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float32 lie between a and b (both >= 0): the distance of their bits."""
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


EDGES = np.array([0.0, -0.0, -1e-45, 1e-45, -1e-8, -0.5, -1.0, -20.5, -87.0, -87.33,
                  LOWEST, np.nextafter(LOWEST, np.float32(-np.inf)), -87.34, -88.0,
                  -100.0, -1e30, -np.inf, np.nan, 1.0, 3.0, 87.9, 88.0, 100.0, np.inf],
                 dtype=np.float32)


@needs_jit
@pytest.mark.parametrize("seed", range(3))
def test_vector_lanes_give_the_scalar_codes_bits(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([EDGES, -np.abs(rng.standard_normal(997) * 10).astype(np.float32),
                        rng.uniform(-90, 90, 500).astype(np.float32)])
    rng.shuffle(x)
    vector, scalar = x.copy(), x.copy()
    exp_in_kernel(vector, vector.size)
    exp_each_in_order(scalar, scalar.size)
    np.testing.assert_array_equal(vector.view(np.int32), scalar.view(np.int32))


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 40])
@pytest.mark.parametrize("count", [-3, 0, 1, 5, 16, 17, 100])
def test_only_the_first_count_numbers_change(size, count):
    """The masked last vector reads and writes nothing past count or the array's end:
    guards on both sides of the slice stay as they were."""
    x = -np.arange(size + 8, dtype=np.float32) / 3
    x[:4] = x[-4:] = 1234.5  # guards
    values = x[4:4 + size]
    exp_in_kernel(values, count)
    changed = max(0, min(count, size))
    np.testing.assert_array_equal(x[:4], 1234.5)
    np.testing.assert_array_equal(x[4 + changed:], np.concatenate(
        [-np.arange(changed + 4, size + 4, dtype=np.float32) / 3, [1234.5] * 4]))
    expected = -np.arange(4, 4 + changed, dtype=np.float32) / 3
    assert np.all(units_apart(values[:changed], exactly_rounded(expected)) <= 1)


@needs_jit  # as plain Python, 18 million numbers take a minute
def test_within_one_unit_of_the_exactly_rounded_exp():
    """Every 61st float32 from 0 down to LOWEST (18 million of them): never more than one
    unit in the last place from the exactly rounded e^x, and exact for at least 99%.
    (An exhaustive check of all 1.1 billion gave 99.16% exact, benchmarks/README.md.)"""
    lowest_bits = int(np.array(LOWEST).view(np.uint32))
    x = np.arange(0x80000000, lowest_bits + 1, 61, dtype=np.uint32).view(np.float32)
    y = x.copy()
    exp_in_kernel(y, y.size)
    apart = units_apart(y, exactly_rounded(x))
    assert apart.max() <= 1
    assert np.mean(apart == 0) > 0.99


def test_below_lowest_is_zero_and_nan_stays_nan():
    x = np.array([np.nextafter(LOWEST, np.float32(-np.inf)), -88.0, -103.0, -1e30, -np.inf,
                  np.nan, LOWEST], dtype=np.float32)
    exp_in_kernel(x, x.size)
    np.testing.assert_array_equal(x[:5], 0.0)
    assert np.isnan(x[5])
    assert x[6] > 0 and units_apart(x[6:], exactly_rounded(np.array([LOWEST]))) <= 1


def test_float64_is_the_c_librarys_exp():
    x = np.array([0.0, -0.5, -1.0, -30.25, -700.0, -800.0, 2.0, np.nan])
    expected = np.array([math.exp(v) for v in x])
    exp_in_kernel(x, x.size)
    np.testing.assert_array_equal(x, expected)


def test_the_scalar_code_handles_float64_too():
    """Under NUMBA_DISABLE_JIT the kernels call exp_each_in_order for either dtype."""
    x = np.array([0.0, -0.5, -30.25, -0.1234567, -700.0])
    expected = np.array([math.exp(v) for v in x])  # what the compiled float64 code calls
    exp_each_in_order(x, x.size)
    np.testing.assert_array_equal(x, expected)


def test_exact_down_to_the_smallest_normal_float32_not_only_down_to_lowest():
    """The range is pinned by the maths, not by the constant: every x from -87.3 (just
    above ln of the smallest normal float32, about -87.3365) to -80 gives e^x within one
    unit, and never 0. (A LOWEST moved to -80 would make the test above check less.)"""
    x = np.linspace(-87.3, -80.0, 2001).astype(np.float32)
    y = x.copy()
    exp_in_kernel(y, y.size)
    assert np.all(y > 0) and units_apart(y, exactly_rounded(x)).max() <= 1
