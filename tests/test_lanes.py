"""Dot products in eight lanes and weighted sums of rows: the documented order, and the
vector code's exact bits."""

import numba
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

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


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="typing errors come from the compiler")
def test_only_contiguous_float_vectors_are_accepted():
    @njit
    def strided(x):
        return lanes.dot(x[::2], x[::2])

    with pytest.raises(TypingError, match="dot_in_vector_lanes"):
        strided(np.ones(8))


def layer_norm_with_scalar_lanes(x, weight, bias, eps, grad_out):
    """kernels.py's LayerNorm, forward and backward, written again in NumPy around the
    scalar ``dot_in_lanes``: the same operations in the same order, so the same bits."""
    dtype, n = x.dtype.type, x.shape[1]
    ones = np.ones(n, x.dtype)
    out, xhat, grad_in = (np.empty_like(x) for _ in range(3))
    for r in range(len(x)):
        centred = x[r] - lanes.dot_in_lanes(x[r], ones) / dtype(n)
        rstd = dtype(1) / np.sqrt(lanes.dot_in_lanes(centred, centred) / dtype(n) + dtype(eps))
        xhat[r] = centred * rstd
        out[r] = xhat[r] * weight + bias
        gh = grad_out[r] * weight
        mean_gh_xhat = lanes.dot_in_lanes(gh, xhat[r]) / dtype(n)
        mean_gh = lanes.dot_in_lanes(gh, ones) / dtype(n)
        grad_in[r] = rstd * (gh - mean_gh - xhat[r] * mean_gh_xhat)
    return out, grad_in


@pytest.mark.parametrize("n", [13, 128])
def test_the_layer_norm_kernels_add_up_with_lanes_dot(n):
    """Bit for bit what the scalar lanes give. This also fails when lanes.py was edited
    and Numba's cache still holds LayerNorm kernels compiled with the old code (see the
    caveat in tinygrok/lanes.py)."""
    from tinygrok import kernels

    rng = np.random.default_rng(9)
    x = (rng.standard_normal((6, n)) * 3 + 1).astype(np.float32)
    weight, bias, grad_out = (rng.standard_normal(shape).astype(np.float32)
                              for shape in (n, n, (6, n)))
    out, xhat, rstd = kernels.layer_norm_forward(x, weight, bias, 1e-5)
    grad_in = kernels.layer_norm_backward_input(grad_out, weight, xhat, rstd)
    expected_out, expected_grad_in = layer_norm_with_scalar_lanes(x, weight, bias, 1e-5,
                                                                  grad_out)
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(grad_in, expected_grad_in)


@pytest.mark.parametrize("dot", [lanes.dot, lanes.dot_in_lanes])
def test_dot_stops_at_the_shorter_vector_like_zip(dot):
    """Never a read past the end of either vector (the vector code has no bounds checks)."""
    x = np.arange(1, 17, dtype=np.float32)
    assert dot(x, np.ones(8, np.float32)) == 36
    assert dot(np.ones(8, np.float32), x) == 36
    assert dot(x, np.ones(0, np.float32)) == 0


@njit
def _weighted_sum(weights, rows, count, out):
    lanes.weighted_sum_of_rows(weights, rows, count, out)


def rows_added_in_order(weights, rows, count, dtype):
    """The order of ``weighted_sum_of_rows`` written once more with NumPy: start at 0 and
    add weight * row for each row in turn, rounding to ``dtype`` after every operation."""
    total = np.zeros(rows.shape[1], dtype)
    for j in range(count):
        total = (total + (weights[j] * rows[j]).astype(dtype)).astype(dtype)
    return total


# 32-column blocks, 8s (one, or two or three after the 32s: 24, 56), leftovers
@pytest.mark.parametrize("d", [1, 7, 8, 13, 24, 32, 40, 56, 71])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_sum_of_rows_adds_the_rows_in_order(d, dtype):
    """Bit for bit, for counts from none to all rows, magnitudes from 1e-6 to 1e6."""
    rng = np.random.default_rng(10)
    rows = (rng.standard_normal((130, d)) * 10.0 ** rng.integers(-6, 7, (130, d))).astype(dtype)
    weights = rng.random(130).astype(dtype)
    for count in (0, 1, 3, 4, 9, 128, 130):
        expected = rows_added_in_order(weights, rows, count, dtype)
        out, scalar = np.full(d, 7, dtype), np.full(d, 7, dtype)
        _weighted_sum(weights, rows, count, out)                  # the vector registers
        lanes.weighted_sum_in_order(weights, rows, count, scalar)  # the scalar code
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(scalar, expected)


@pytest.mark.parametrize("d", [4, 13, 40, 72])  # every path: 32 columns, 8, one by one
@pytest.mark.parametrize("add", [_weighted_sum, lanes.weighted_sum_in_order])
def test_weighted_sum_stays_inside_its_arrays(add, d):
    """count is clipped to the rows and weights there are (and to 0 below); only the
    columns that both a row and out have are written: the numbers around ``out`` in its
    buffer stay as they were."""
    rows = np.arange(3 * d, dtype=np.float32).reshape(3, d)
    ones = np.ones(5, np.float32)
    buffer = np.full(d + 20, -1, np.float32)
    out = buffer[10:10 + d + 4]  # longer than a row: its last 4 must stay -1
    add(ones[:2], rows, 5, out)  # only 2 weights: rows 0 and 1
    np.testing.assert_array_equal(out[:d], rows[0] + rows[1])
    add(ones, rows, 5, out)  # 5 weights but 3 rows: all three rows
    np.testing.assert_array_equal(out[:d], rows[0] + rows[1] + rows[2])
    add(ones, rows, -3, out)
    np.testing.assert_array_equal(out[:d], np.zeros(d))
    assert np.all(buffer[:10] == -1) and np.all(buffer[10 + d:] == -1)
    short = buffer[10:12]  # shorter than a row: only its 2 columns are written
    add(ones, rows, 2, short)
    np.testing.assert_array_equal(short, rows[0, :2] + rows[1, :2])
    assert np.all(buffer[12:] == np.concatenate([np.zeros(d - 2), np.full(10, -1)]))


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="typing errors come from the compiler")
def test_weighted_sum_takes_only_contiguous_arrays_of_one_float_dtype():
    @njit
    def strided(rows, out):
        lanes.weighted_sum_of_rows(rows[0], rows[:, ::2], 2, out)

    with pytest.raises(TypingError, match="weighted_sum_in_vector_registers"):
        strided(np.ones((4, 8)), np.ones(4))
    with pytest.raises(TypingError, match="weighted_sum_in_vector_registers"):
        _weighted_sum(np.ones(4, np.float32), np.ones((4, 4)), 4, np.ones(4))
    with pytest.raises(TypingError, match="weighted_sum_in_vector_registers"):  # unsigned
        _weighted_sum(np.ones(4), np.ones((4, 4)), np.uint64(4), np.ones(4))
