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


def test_float32_gelu_backward_matches_float64():
    x = np.random.default_rng(0).standard_normal((64, 33)) * 3
    g = np.random.default_rng(1).standard_normal((64, 33))
    exact = kernels.gelu_backward(x, g)
    fast = kernels.gelu_backward(x.astype(np.float32), g.astype(np.float32))
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_layer_norm_kernel_matches_numpy(dtype, tol):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 5, 16)) * 4 + 2).astype(dtype)
    w, b = rng.standard_normal(16).astype(dtype), rng.standard_normal(16).astype(dtype)
    y, xhat, rstd = kernels.layer_norm_forward(x[:, 1:], w, b, 1e-5)  # a strided view
    x64 = x[:, 1:].astype(np.float64)
    expected = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    assert y.dtype == dtype and y.shape == (3, 4, 16)
    np.testing.assert_allclose(xhat, expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(y, expected * w + b, rtol=tol, atol=10 * tol)


def test_scatter_add_rows_adds_repeated_indices():
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = kernels.scatter_add_rows(np.array([2, 0, 2, 2]), rows, 5)
    expected = np.zeros((5, 3), np.float32)
    np.add.at(expected, [2, 0, 2, 2], rows)
    np.testing.assert_array_equal(out, expected)
