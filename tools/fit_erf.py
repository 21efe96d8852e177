"""Fit the float32 erf approximation used by tinygrok/kernels.py, and print its error.

    erf(x) ~ x * P(x^2) / Q(x^2)   for |x| < 4   (erf(4) = 1 - 1.5e-8: beyond it, +-1),
    held within [-1, 1] (the polynomial passes 1 by up to 4e-7 between 3.66 and 4)

P and Q are polynomials in x^2 of degrees 6 and 4. The coefficients come from a weighted
linear least-squares fit of  x P(x^2) - erf(x) Q(x^2) = 0  (Q's constant term fixed to 1),
repeated with weights 1 / Q(x^2) from the previous round (Sanathanan-Koerner iteration), so
that the fit converges to the rational function's own error. Run:

    python tools/fit_erf.py
"""

import math

import numpy as np

P_DEGREE, Q_DEGREE, LIMIT = 6, 4, 4.0


def fit(n_points=4000, rounds=12):
    x = np.linspace(1e-4, LIMIT, n_points)
    erf = np.array([math.erf(v) for v in x])
    s = x * x
    weights = np.ones_like(x)
    for _ in range(rounds):
        # unknowns: p_0..p_P, q_1..q_Q ;  x P(s) - erf (1 + sum q_j s^j) = 0
        columns = [x * s ** i for i in range(P_DEGREE + 1)]
        columns += [-erf * s ** j for j in range(1, Q_DEGREE + 1)]
        A = np.stack(columns, axis=1) * weights[:, None]
        coef, *_ = np.linalg.lstsq(A, erf * weights, rcond=None)
        p, q = coef[:P_DEGREE + 1], np.concatenate([[1.0], coef[P_DEGREE + 1:]])
        weights = 1 / np.polyval(q[::-1], s)
    return p, q


def evaluate_float32(x, p, q):
    """As kernels.erf_float32 computes it: the polynomial at x clamped to [-LIMIT, LIMIT],
    its value clamped to [-1, 1]."""
    x = np.clip(x.astype(np.float32), -LIMIT, LIMIT)
    s = x * x
    num = np.float32(0)
    for c in p[::-1].astype(np.float32):
        num = num * s + c
    den = np.float32(0)
    for c in q[::-1].astype(np.float32):
        den = den * s + c
    return np.clip(x * num / den, np.float32(-1), np.float32(1))


if __name__ == "__main__":
    p, q = fit()
    print("P =", ", ".join(repr(float(np.float32(c))) for c in p))
    print("Q =", ", ".join(repr(float(np.float32(c))) for c in q))
    x = np.linspace(-6, 6, 200001)
    exact = np.array([math.erf(v) for v in x])
    err = np.abs(evaluate_float32(x, p, q).astype(np.float64) - exact)
    print(f"max |error| vs float64 math.erf on [-6, 6]: {err.max():.2e}")
