"""The fused Numba kernels against plain NumPy / math definitions."""

import math

import numpy as np
import pytest

from tinygrok import kernels


def test_float32_erf_error_is_below_5e_7_everywhere():
    x = np.linspace(-8, 8, 400_001).astype(np.float32)
    exact = np.array([math.erf(float(v)) for v in x])
    phi = kernels.gelu_forward(x)  # x * (1 + erf(x / sqrt 2)) / 2, in float32
    approx_erf = np.array([kernels.erf_float32(v) for v in x[::97]], dtype=np.float64)
    assert np.max(np.abs(approx_erf - exact[::97])) < 5e-7
    gelu_exact = x.astype(np.float64) * 0.5 * (1 + np.array(
        [math.erf(float(v) / math.sqrt(2)) for v in x]))
    assert phi.dtype == np.float32
    # GELU = x (1 + erf) / 2: an erf error e becomes |x| e / 2 (for very negative x the
    # sum 1 + erf cancels, so float32 cannot do much better whatever the erf)
    assert np.all(np.abs(phi - gelu_exact) <= 3e-7 * np.maximum(1, np.abs(x)))


def test_float32_erf_stays_within_one_so_gelu_keeps_its_sign():
    # erf(4) = 1 - 1.5e-8 rounds to 1 in float32, but the polynomial passes 1 from 3.66 on
    # (1 + 2^-22 at 4), which made GELU(-7) = +8e-7 and GELU(-19) = +2e-6, and GELU(x) > x
    # for x in [5.18, 5.66].
    far = np.float32([4, 4.5, 7, 19, 1e4, np.inf])
    assert [kernels.erf_float32(v) for v in far] == [1.0] * len(far)
    assert [kernels.erf_float32(-v) for v in far] == [-1.0] * len(far)
    near_one = np.linspace(3, 4, 20_001, dtype=np.float32)
    assert max(kernels.erf_float32(v) for v in near_one) <= 1
    negative = -np.linspace(0, 40, 40_001, dtype=np.float32)
    out, slope = kernels.gelu_and_slope(negative)
    assert np.all(out <= 0) and np.all(kernels.gelu_forward(negative) <= 0)
    assert np.all(kernels.gelu_forward(-negative) <= -negative)  # GELU(x) <= x for x >= 0
    beyond_six = negative <= -6  # where the density is held at phi(6) = 6.08e-9
    assert np.all(np.abs(slope[beyond_six]) <= 6.1e-9 * np.abs(negative[beyond_six]))
    _, slope = kernels.gelu_and_slope(np.linspace(6, 9.7, 101, dtype=np.float32))
    assert np.all(slope == 1)


def test_float32_gelu_slope_matches_float64():
    x = np.random.default_rng(0).standard_normal((64, 33)) * 3
    out64, exact = kernels.gelu_and_slope(x)
    out32, fast = kernels.gelu_and_slope(x.astype(np.float32))
    assert fast.dtype == out32.dtype == np.float32
    np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-6)
    # the value that comes with the slope is GELU itself, bit for bit
    assert np.array_equal(out32, kernels.gelu_forward(x.astype(np.float32)))
    assert np.array_equal(out64, kernels.gelu_forward(x))


def test_gelu_slope_is_the_derivative():
    """Against a central difference of the exact float64 GELU, from -9 to 9 (0 included)
    and far out."""
    x = np.concatenate([np.linspace(-9, 9, 181), [-30.0, 30.0]])
    h = 1e-6
    numeric = (kernels.gelu_forward(x + h) - kernels.gelu_forward(x - h)) / (2 * h)
    np.testing.assert_allclose(kernels.gelu_and_slope(x)[1], numeric, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("n", [16, 13, 128])  # 13: a row that leaves numbers over the lanes
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_layer_norm_kernel_matches_numpy(dtype, tol, n):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 5, n)) * 4 + 2).astype(dtype)
    w, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    y, xhat, rstd = kernels.layer_norm_forward(x[:, 1:], w, b, 1e-5)  # a strided view
    x64 = x[:, 1:].astype(np.float64)
    expected = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    assert y.dtype == dtype and y.shape == (3, 4, n)
    np.testing.assert_allclose(xhat, expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(y, expected * w + b, rtol=tol, atol=10 * tol)


def test_float64_layer_norm_keeps_eps_in_float64():
    """A row whose variance is far below eps, where eps rounded to float32 would show."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 16)) * 1e-3
    w, b = np.ones(16), np.zeros(16)
    y, _, _ = kernels.layer_norm_forward(x, w, b, 1e-5)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


@pytest.mark.parametrize("n", [13, 128])
def test_float32_layer_norm_backward_matches_float64(n):
    """The float32 input gradient (gh = g * weight; r (gh - mean(gh) - xhat mean(gh xhat)))
    against the same formula in float64, on a row length with and without leftover lanes.
    (The float64 kernel itself is gradchecked in test_autograd.py.)"""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, n)) * 3 + 1
    w, g = rng.standard_normal(n), rng.standard_normal((40, n))
    _, xhat, rstd = kernels.layer_norm_forward(x, w, np.zeros(n), 1e-5)
    gh = g * w
    expected = rstd * (gh - gh.mean(-1, keepdims=True)
                       - xhat * (gh * xhat).mean(-1, keepdims=True))
    x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
    _, xhat32, rstd32 = kernels.layer_norm_forward(x32, w32, np.zeros(n, np.float32), 1e-5)
    got = kernels.layer_norm_backward_input(g32, w32, xhat32, rstd32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_scatter_add_rows_adds_repeated_indices():
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = kernels.scatter_add_rows(np.array([2, 0, 2, 2]), rows, 5)
    expected = np.zeros((5, 3), np.float32)
    np.add.at(expected, [2, 0, 2, 2], rows)
    np.testing.assert_array_equal(out, expected)
