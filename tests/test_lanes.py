"""Dot products in eight lanes: the documented order, and the vector code's exact bits."""

import numpy as np
import pytest
from numba import njit

from tinygrok import lanes


def eight_lane_dot(x, y, dtype):
    """The order of tinygrok/lanes.py written out once more, element by element: lane l
    adds c = l, l + 8, ...; the leftovers beyond the last multiple of 8 go to lane 0;
    the lanes are added pairwise."""
    sums = [dtype(0)] * 8
    blocks = len(x) - len(x) % 8
    for c in range(blocks):
        sums[c % 8] = dtype(sums[c % 8] + x[c] * y[c])
    for c in range(blocks, len(x)):
        sums[0] = dtype(sums[0] + x[c] * y[c])
    return (((sums[0] + sums[1]) + (sums[2] + sums[3]))
            + ((sums[4] + sums[5]) + (sums[6] + sums[7])))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 13, 32, 35, 128, 131])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_adds_in_eight_lanes_in_a_fixed_order(n, dtype):
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((2, n)).astype(dtype)
    expected = eight_lane_dot(x, y, dtype)
    assert lanes.dot(x, y) == expected            # the vector instructions
    assert lanes.dot_in_lanes(x, y) == expected   # the scalar code they mirror
    np.testing.assert_allclose(lanes.dot(x, y), x.astype(np.float64) @ y,
                               rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_dot_matches_the_scalar_lanes_on_rows_of_a_matrix(dtype):
    """Rows start at any offset in memory (unaligned vector loads); magnitudes from 1e-6
    to 1e6, where any other order of additions would round differently."""
    rng = np.random.default_rng(7)
    for n in (3, 8, 16, 31, 32, 33, 64, 129):
        rows = (rng.standard_normal((5, n)) * 10.0 ** rng.integers(-6, 7, (5, n))).astype(dtype)
        for i in range(5):
            for j in range(5):
                assert lanes.dot(rows[i], rows[j]) == lanes.dot_in_lanes(rows[i], rows[j])


def test_a_sum_is_a_dot_product_with_ones():
    """LayerNorm sums a row as its dot product with ones: exactly the eight-lane sum."""
    x = (np.random.default_rng(8).standard_normal(131) * 1e3).astype(np.float32)
    assert lanes.dot(x, np.ones_like(x)) == eight_lane_dot(x, np.ones_like(x), np.float32)
    sums = [np.float32(0)] * 8
    for c in range(128):
        sums[c % 8] = np.float32(sums[c % 8] + x[c])
    for c in range(128, 131):
        sums[0] = np.float32(sums[0] + x[c])
    plain = (((sums[0] + sums[1]) + (sums[2] + sums[3]))
             + ((sums[4] + sums[5]) + (sums[6] + sums[7])))
    assert lanes.dot(x, np.ones_like(x)) == plain


def test_only_contiguous_float_vectors_are_accepted():
    @njit
    def strided(x):
        return lanes.dot(x[::2], x[::2])

    with pytest.raises(Exception, match="dot_in_vector_lanes"):
        strided(np.ones(8))
