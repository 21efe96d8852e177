"""Small fused Numba kernels behind the autograd ops GELU and LayerNorm, and the
scatter-add that is the backward of a row lookup (``embedding`` and ``x[rows]``). Each one
does in a single pass what NumPy would do in many.

The maths of each op is written (and explained) next to its autograd op in
``tinygrok/autograd.py``; here is only how it is computed fast. Conventions:

- Kernels take their output arrays as arguments (allocated by the Python wrapper).
- ``prange`` runs over independent rows or elements, so no two threads write the same place.
- Constants come typed from the data (``x.dtype.type(...)``) or as float32 arrays, so a
  float32 computation never silently becomes float64.
- No ``fastmath``: these kernels are inside every gradient check.

GELU needs erf. float64 uses the exact ``math.erf``. float32 uses a rational polynomial,
``erf(x) ~ x P(x^2) / Q(x^2)`` for |x| < 4 (and +-1 beyond, where erf differs from 1 by
less than 2e-8), held within [-1, 1], whose coefficients ``tools/fit_erf.py`` fits and
checks: its largest error against float64 ``math.erf`` is 4.4e-7 over every float32
checked (4.2e-7 against erf rounded to float32; 3.6e-7 on the grid tools/fit_erf.py prints;
tests/test_kernels.py checks < 5e-7). ``math.erf`` is a scalar library call the compiler
cannot vectorise: over a training step's GELU inputs (about 1,650 rows of 512) it costs
milliseconds per step, the polynomial a small fraction of that. For the same reason
GELU's float32 slope (its derivative, computed with the forward when a gradient is
wanted) gets the normal density's exp() from ``exp_negative_float32`` (a Taylor series
and repeated squaring) instead of ``np.exp``.
"""

import math

import numpy as np
from numba import njit, prange

from tinygrok.lanes import dot

ERF_LIMIT = np.float32(4.0)
ERF_P = np.array([1.1283788681030273, 0.20614925026893616, 0.051390696316957474,
                  0.0039670588448643684, 0.00014825277321506292, -1.9774629436142277e-06,
                  1.9664213368741912e-08], dtype=np.float32)
ERF_Q = np.array([1.0, 0.5160241723060608, 0.11756803840398788, 0.01488365139812231,
                  0.0010208024177700281], dtype=np.float32)


@njit(cache=True, inline="always")
def erf_float32(x):
    """erf of a float32 by the rational polynomial above (Horner's rule, in float32),
    held within [-1, 1] as erf is: the polynomial passes 1 by up to 4e-7 from x = 3.66 on,
    which made 1 + erf, and so GELU(x), positive for x below -5.18 (GELU(-7) = +8e-7).
    Beyond +-4 the input is clamped, so the result there is exactly +-1."""
    x = min(max(x, -ERF_LIMIT), ERF_LIMIT)  # x first: max(NaN, -4) keeps the NaN
    s = x * x
    numerator = ERF_P[6]
    for i in range(5, -1, -1):
        numerator = numerator * s + ERF_P[i]
    denominator = ERF_Q[4]
    for i in range(3, -1, -1):
        denominator = denominator * s + ERF_Q[i]
    return min(max(x * numerator / denominator, np.float32(-1)), np.float32(1))


# -- GELU -------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _gelu_forward_float32(x, out):
    half, inv_sqrt2 = np.float32(0.5), np.float32(1 / math.sqrt(2))
    for i in prange(x.size):
        out[i] = half * x[i] * (np.float32(1) + erf_float32(x[i] * inv_sqrt2))


@njit(cache=True, inline="always")
def exp_negative_float32(t):
    """exp(-t) for 0 <= t <= 18, vectorisable: (exp(-t/32))^32.

    exp(-u) for u = t/32 <= 0.57 is its Taylor series to u^9 (truncation error < 1e-9),
    then five squarings raise it to the 32nd power. Squaring doubles the relative error
    each time, so float32 rounding ends at about 5e-6 relative: ample for a gradient.
    """
    v = -t * np.float32(1 / 32)
    r = np.float32(1 / 362880)  # 1/9!
    for inverse_factorial in (1 / 40320, 1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1.0, 1.0):
        r = r * v + np.float32(inverse_factorial)
    for _ in range(5):
        r = r * r
    return r


@njit(cache=True, parallel=True)
def _gelu_and_slope_float32(x, out, slope):
    half, inv_sqrt2 = np.float32(0.5), np.float32(1 / math.sqrt(2))
    inv_sqrt_2pi = np.float32(1 / math.sqrt(2 * math.pi))
    for i in prange(x.size):
        v = x[i]
        one_plus_erf = np.float32(1) + erf_float32(v * inv_sqrt2)
        out[i] = half * v * one_plus_erf  # the same operations as _gelu_forward_float32
        # Beyond |x| = 6 the density is held at phi(6) = 6e-9, which keeps exp_negative in
        # its range; the slope is then off by |x| phi(6) = 6e-9 |x|: for x > 6 it rounds to
        # exactly 1 while x < 9.8 (1 ulp above it up to 29, 2 up to 49, ...); for x < -6 it
        # is -6e-9 |x| instead of about 0.
        clamped = min(abs(v), np.float32(6))
        density = inv_sqrt_2pi * exp_negative_float32(half * clamped * clamped)
        slope[i] = half * one_plus_erf + v * density


@njit(cache=True, parallel=True)
def _gelu_forward_float64(x, out):
    for i in prange(x.size):
        out[i] = 0.5 * x[i] * (1.0 + math.erf(x[i] / math.sqrt(2.0)))


@njit(cache=True, parallel=True)
def _gelu_and_slope_float64(x, out, slope):
    for i in prange(x.size):
        v = x[i]
        one_plus_erf = 1.0 + math.erf(v / math.sqrt(2.0))
        out[i] = 0.5 * v * one_plus_erf
        density = math.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)
        slope[i] = 0.5 * one_plus_erf + v * density


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def gelu_forward(x: np.ndarray) -> np.ndarray:
    """GELU(x), for when no gradient is wanted (evaluation)."""
    out = np.empty(x.shape, dtype=x.dtype)
    kernel = _gelu_forward_float32 if x.dtype == np.float32 else _gelu_forward_float64
    kernel(_flat(x), out.reshape(-1))
    return out


def gelu_and_slope(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GELU(x) and its slope GELU'(x) = Phi(x) + x phi(x), in one pass over x.

    The slope is all the backward needs (dL/dx = dL/dy * slope), and computing it here
    reuses the forward's erf: a separate backward pass would compute erf again and read x
    again, which made GELU's backward about twice its forward."""
    out, slope = np.empty(x.shape, dtype=x.dtype), np.empty(x.shape, dtype=x.dtype)
    kernel = _gelu_and_slope_float32 if x.dtype == np.float32 else _gelu_and_slope_float64
    kernel(_flat(x), out.reshape(-1), slope.reshape(-1))
    return out, slope


# -- LayerNorm over the last axis ----------------------------------------------------------

# LayerNorm adds up each row with ``lanes.dot``: eight running sums in one SIMD register,
# in a fixed order (tinygrok/lanes.py). A plain sum would be one chain of additions, each
# waiting for the one before. A row's sum is its dot product with ones, and the sum of
# its squares its dot product with itself.

@njit(cache=True, parallel=True)
def _layer_norm_forward(x, weight, bias, eps, out, xhat, rstd):
    rows, n = x.shape
    size, one = x.dtype.type(n), x.dtype.type(1)  # typed, so float32 stays float32
    ones = np.ones(n, x.dtype)
    for r in prange(rows):
        row, centred = x[r], xhat[r]
        mean = dot(row, ones) / size
        for j in range(n):
            centred[j] = row[j] - mean
        inv = one / np.sqrt(dot(centred, centred) / size + eps)
        rstd[r] = inv
        for j in range(n):
            centred[j] *= inv  # now xhat
            out[r, j] = centred[j] * weight[j] + bias[j]


@njit(cache=True, parallel=True)
def _layer_norm_backward_input(grad_out, weight, xhat, rstd, grad_in):
    # grad_in's row holds gh = grad_out * weight until it receives the result (so it must
    # not share memory with xhat or grad_out; the wrapper allocates it).
    rows, n = grad_out.shape
    size = grad_out.dtype.type(n)
    ones = np.ones(n, grad_out.dtype)
    for r in prange(rows):
        gh = grad_in[r]
        for j in range(n):
            gh[j] = grad_out[r, j] * weight[j]
        mean_gh_xhat = dot(gh, xhat[r]) / size
        mean_gh = dot(gh, ones) / size
        for j in range(n):
            gh[j] = rstd[r] * (gh[j] - mean_gh - xhat[r, j] * mean_gh_xhat)


def _rows(a: np.ndarray) -> np.ndarray:
    """a (..., n) as contiguous rows (rows, n); reshape(-1, n) would refuse n = 0."""
    return np.ascontiguousarray(a).reshape(math.prod(a.shape[:-1]), a.shape[-1])


def layer_norm_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float):
    """Returns (y, xhat, rstd): the output and what the backward needs."""
    rows = _rows(x)
    out, xhat = np.empty_like(rows), np.empty_like(rows)
    rstd = np.empty(rows.shape[0], dtype=x.dtype)
    _layer_norm_forward(rows, weight, bias, x.dtype.type(eps), out, xhat, rstd)
    return out.reshape(x.shape), xhat.reshape(x.shape), rstd.reshape(*x.shape[:-1], 1)


def layer_norm_backward_input(grad_out: np.ndarray, weight: np.ndarray, xhat: np.ndarray,
                              rstd: np.ndarray) -> np.ndarray:
    g = _rows(grad_out)
    grad_in = np.empty_like(g)
    _layer_norm_backward_input(g, weight, _rows(xhat), rstd.reshape(-1), grad_in)
    return grad_in.reshape(grad_out.shape)


# -- Row lookup backward (embedding, x[rows]): add each row's gradient where it came from -

@njit(cache=True)
def _scatter_add_rows(indices, rows, out):
    # Serial on purpose: two positions with the same token add into the same row.
    # The inner loop is written out: Numba runs ``out[k] += rows[i]`` on whole rows through
    # a temporary array, which made this 2.3x slower for 512 rows of 256.
    for i in range(indices.size):
        target, source = out[indices[i]], rows[i]
        for j in range(source.size):
            target[j] += source[j]


def scatter_add_rows(indices: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """out[indices[i]] += rows[i] for every i, repeated indices adding up (np.add.at)."""
    out = np.zeros((num_rows, rows.shape[-1]), dtype=rows.dtype)
    _scatter_add_rows(np.ascontiguousarray(indices).reshape(-1).astype(np.int64),
                      _rows(rows), out)
    return out
