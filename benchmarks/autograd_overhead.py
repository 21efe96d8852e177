"""How much does the autograd cost over the same maths written by hand in NumPy?

Forward + backward of a 2-layer MLP, 2048x128 -> 512 -> 128, float32, squared-error loss,
once through tinygrok's Tensor ops and once as hand-written NumPy with the gradients
derived on paper. The two run interleaved, many times, and the script prints the ratio of
the medians: the machine is shared and noisy, so only a ratio measured in one run means
anything.

    python benchmarks/autograd_overhead.py            # prints times and the ratio
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/autograd_overhead.py
"""

import argparse
import time

import numpy as np

from tinygrok.autograd import Tensor, relu


def make_problem(seed=0, rows=2048, d_in=128, hidden=512, d_out=128):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return {
        "x": rng.standard_normal((rows, d_in)).astype(f32),
        "target": rng.standard_normal((rows, d_out)).astype(f32),
        "w1": (rng.standard_normal((d_in, hidden)) / np.sqrt(d_in)).astype(f32),
        "b1": np.zeros(hidden, f32),
        "w2": (rng.standard_normal((hidden, d_out)) / np.sqrt(hidden)).astype(f32),
        "b2": np.zeros(d_out, f32),
    }


def by_hand(p):
    """loss = sum((relu(x W1 + b1) W2 + b2 - target)^2) / (2 N), gradients on paper."""
    n = p["x"].shape[0]
    h = p["x"] @ p["w1"] + p["b1"]
    a = np.maximum(h, 0)
    y = a @ p["w2"] + p["b2"]
    diff = y - p["target"]
    loss = (diff * diff).sum() / (2 * n)
    dy = diff / n
    grads = {"w2": a.T @ dy, "b2": dy.sum(axis=0)}
    dh = (dy @ p["w2"].T) * (h > 0)
    grads["w1"] = p["x"].T @ dh
    grads["b1"] = dh.sum(axis=0)
    return loss, grads


def with_autograd(p, params):
    n = p["x"].shape[0]
    for t in params.values():
        t.grad = None
    y = relu(Tensor(p["x"]) @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    diff = y - Tensor(p["target"])
    loss = (diff * diff).sum() / (2 * n)
    loss.backward()
    return loss.item(), {k: t.grad for k, t in params.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    p = make_problem()
    params = {k: Tensor(p[k], requires_grad=True) for k in ("w1", "b1", "w2", "b2")}

    loss_hand, grads_hand = by_hand(p)
    loss_auto, grads_auto = with_autograd(p, params)
    assert np.isclose(loss_hand, loss_auto, rtol=1e-5)
    for k in grads_hand:
        np.testing.assert_allclose(grads_auto[k], grads_hand[k], rtol=1e-4, atol=1e-6)

    times = {"numpy by hand": [], "autograd": []}
    for _ in range(5):  # warm-up: BLAS threads, page faults
        by_hand(p), with_autograd(p, params)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        by_hand(p)
        t1 = time.perf_counter()
        with_autograd(p, params)
        t2 = time.perf_counter()
        times["numpy by hand"].append(t1 - t0)
        times["autograd"].append(t2 - t1)
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:>14}: {v * 1e3:7.2f} ms  (median of {args.repeats})")
    print(f"ratio autograd / by hand: {med['autograd'] / med['numpy by hand']:.3f}  (floor: <= 1.15)")


if __name__ == "__main__":
    main()
