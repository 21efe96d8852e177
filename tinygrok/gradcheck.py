"""Check a backward pass against finite differences.

For a function ``f`` of some tensors, the analytic gradient from ``backward()`` must agree
with the numerical slope

    df/dx[i]  ~  (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)

(central differences: the error shrinks like eps^2). Functions with a non-scalar output
are reduced to a scalar first, ``L = sum(f(x) * R)`` with a fixed random array R, which
checks the whole vector-Jacobian product at once: a wrong entry anywhere in the Jacobian
changes L's gradient unless R happens to hide it, which has probability zero.

Everything is float64: in float32 the rounding error of f (about 1e-7 relative) divided
by eps would swamp the comparison.
"""

from __future__ import annotations

import numpy as np

from tinygrok.autograd import Tensor


class GradcheckError(AssertionError):
    """An analytic gradient disagreed with the finite-difference one."""


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4,
              seed: int = 0, raise_on_failure: bool = True) -> bool:
    """Compare the gradients of ``fn(*inputs)`` with central finite differences.

    Args:
        fn: takes the input tensors, returns a Tensor (any shape).
        inputs: float64 Tensors; those with ``requires_grad=True`` are checked.
        eps: step of the central difference.
        atol, rtol: an element passes if both gradients are finite and
            |analytic - numeric| <= atol + rtol * |numeric|.
        seed: seeds the random projection R used for non-scalar outputs.
        raise_on_failure: raise ``GradcheckError`` with a report, else return False.

    Returns True when every checked gradient matches.
    """
    if isinstance(inputs, Tensor) or not isinstance(inputs, (list, tuple)):
        raise TypeError(f"gradcheck needs a list of the Tensors that fn takes, e.g. "
                        f"gradcheck(fn, [x]); got a {type(inputs).__name__}")
    inputs = list(inputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or t.dtype != np.float64:
            raise ValueError(f"gradcheck needs float64 Tensors; input {i} is "
                             f"{type(t).__name__} of dtype {getattr(t, 'dtype', None)}")
    checked = [i for i, t in enumerate(inputs) if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, nothing to check")

    probe = fn(*inputs)
    if not isinstance(probe, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor (its graph is what is checked), "
                        f"got {type(probe).__name__}")
    projection = np.random.default_rng(seed).standard_normal(probe.shape)

    def scalar_loss():
        out = fn(*inputs)
        return (out * projection).sum() if out.size != 1 else out.sum()

    for t in inputs:
        t.grad = None
    scalar_loss().backward()
    analytic = [np.zeros_like(t.data) if t.grad is None else t.grad.copy() for t in inputs]

    for i in checked:
        numeric = _numerical_gradient(scalar_loss, inputs[i].data, eps)
        # Where either gradient is not finite the element fails: its error is inf and its
        # allowance 0 (atol + rtol * inf would be inf, and inf <= inf would pass it).
        finite = np.isfinite(analytic[i]) & np.isfinite(numeric)
        with np.errstate(invalid="ignore"):  # inf - inf, discarded by the where
            error = np.where(finite, np.abs(analytic[i] - numeric), np.inf)
        allowed = np.where(finite, atol + rtol * np.abs(numeric), 0.0)
        if np.all(error <= allowed):
            continue
        worst = np.unravel_index(np.argmax(error - allowed), error.shape)
        report = (f"gradcheck failed for input {i} (shape {inputs[i].shape}): at index "
                  f"{tuple(int(j) for j in worst)} analytic {analytic[i][worst]:.8g} vs numeric "
                  f"{numeric[worst]:.8g} (|diff| {error[worst]:.3g} > allowed "
                  f"{allowed[worst]:.3g}); {int(np.sum(error > allowed))} of {error.size} "
                  f"elements disagree")
        if raise_on_failure:
            raise GradcheckError(report)
        return False
    return True


def _numerical_gradient(scalar_loss, data: np.ndarray, eps: float) -> np.ndarray:
    """Central differences of ``scalar_loss()`` with respect to every element of ``data``,
    which is changed in place and restored (also if ``scalar_loss`` raises). Elements are
    visited by index, so this works for any layout (a transposed input's ``reshape(-1)``
    would be a copy, and writing into it would not move the input)."""
    grad = np.zeros_like(data)
    for index in np.ndindex(data.shape):
        original = data[index]
        try:
            data[index] = original + eps
            plus = scalar_loss().item()
            data[index] = original - eps
            minus = scalar_loss().item()
        finally:
            data[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad
