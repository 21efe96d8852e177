"""02 - The attention kernel: same numbers as the formulas, faster, and in plain sight.

What you will see:

1. ``attention_reference`` (the formulas S = Q K^T / sqrt(d), P = softmax(S), O = P V,
   written with autograd ops) and ``attention`` (the Numba kernels) give the same outputs,
   the same attention matrices and the same gradients for Q, K and V.
2. The softmax backward, dS = P * (dP - rowsum(dP * P)), computed by hand and checked
   against the kernel's dQ.
3. gradcheck passes through the kernel's backward (float64).
4. The speed-up at the shape of the experiment (B=512, H=4, T=4, d=32, float32), forward
   and backward, timed both ways on this machine.
5. The attention matrices of a transformer, one (B, H, T, T) array per layer: printed for
   one input and drawn as heatmaps (rows: queries, columns: keys; causal, so each row only
   sees the tokens up to its own position).

What you will learn: what the kernel computes, how we know it is right, and that every
attention matrix the model computes is an ordinary NumPy array you can print.
A few seconds (plus Numba's one-time compilation). ``--full`` times more repetitions and
longer sequences. Writes 02_attention_matrices.png.
"""

# %% Imports and options
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()))
from _quick_run import make_parser, parse  # noqa: E402

from tinygrok.attention import attention, attention_reference  # noqa: E402
from tinygrok.autograd import Tensor, no_grad  # noqa: E402
from tinygrok.gradcheck import gradcheck  # noqa: E402
from tinygrok.model import Transformer  # noqa: E402
from tinygrok.plots import attention_heatmaps_figure, save_figure  # noqa: E402
from tinygrok.tasks import make_task  # noqa: E402

parser = make_parser(__doc__, full_help="time 10x more repetitions, and also longer sequences (T = 32, 128)")
args = parse(parser)
rng = np.random.default_rng(0)


def qkv(B, H, T, d, dtype, requires_grad=True):
    """Random queries, keys and values of shape (B, H, T, d)."""
    return [Tensor(rng.standard_normal((B, H, T, d)).astype(dtype), requires_grad=requires_grad)
            for _ in range(3)]


def gradients(fn, tensors, upstream):
    """Run fn(q, k, v), push `upstream` back through its output, return (out, probs, grads)."""
    for t in tensors:
        t.grad = None
    out, probs = fn(*tensors)
    out.backward(upstream)
    return out.data, probs, [t.grad.copy() for t in tensors]


# %% 1. Kernel and reference agree: values and gradients
q, k, v = qkv(B=3, H=2, T=4, d=8, dtype=np.float64)
upstream = rng.standard_normal((3, 2, 4, 8))  # some dL/dO
ref_out, ref_probs, ref_grads = gradients(attention_reference, (q, k, v), upstream)
out, probs, grads = gradients(attention, (q, k, v), upstream)
print(f"float64, (B, H, T, d) = {q.shape}: largest difference kernel vs reference")
print(f"  output {np.abs(out - ref_out).max():.1e}   probabilities "
      f"{np.abs(probs - ref_probs).max():.1e}")
for name, g, ref in zip(("dQ", "dK", "dV"), grads, ref_grads):
    print(f"  {name}     {np.abs(g - ref).max():.1e}")
assert np.allclose(out, ref_out, atol=1e-12) and np.allclose(probs, ref_probs, atol=1e-12)
assert all(np.allclose(g, ref, atol=1e-12) for g, ref in zip(grads, ref_grads))
print("rows sum to 1:", np.allclose(probs.sum(axis=-1), 1),
      "  masked entries (key after query) exactly 0:", bool(np.all(np.triu(probs[0, 0], 1) == 0)))

# %% 2. The softmax backward by hand, for one (batch, head) pair
# O = P V gives dP = dO V^T. The softmax couples the entries of one row:
# dP_ij/dS_il = P_ij (delta_jl - P_il), which sums to dS = P * (dP - rowsum(dP * P)).
# dQ = dS K / sqrt(d) then follows as for any matrix product (and dK = dS^T Q / sqrt(d)).
P, V, K = probs[0, 0], v.data[0, 0], k.data[0, 0]
dP = upstream[0, 0] @ V.T
dS = P * (dP - (dP * P).sum(axis=1, keepdims=True))
dQ_by_hand = dS @ K / np.sqrt(K.shape[1])
print("dQ of pair (0, 0) by hand matches the kernel:", np.allclose(dQ_by_hand, grads[0][0, 0]))
print("masked entries of dS are 0 (no gradient to keys a query cannot see):",
      bool(np.all(np.triu(dS, 1) == 0)))

# %% 3. gradcheck through the kernel's backward
small = qkv(B=2, H=2, T=4, d=4, dtype=np.float64)
print("gradcheck of attention(q, k, v):", gradcheck(lambda a, b, c: attention(a, b, c)[0], small))
# Only the last query (Tq = 1), as the model's final block computes it:
last_q = Tensor(small[0].data[:, :, -1:].copy(), requires_grad=True)
print("gradcheck with the last query only:",
      gradcheck(lambda a, b, c: attention(a, b, c)[0], [last_q, small[1], small[2]]))


# %% 4. Speed at the experiment's shape
def one_call(fn, tensors, upstream):
    """Seconds of one forward + backward through fn."""
    for t in tensors:
        t.grad = None
    start = time.perf_counter()
    out, _ = fn(*tensors)
    out.backward(upstream)
    return time.perf_counter() - start


shapes = [(512, 4, 4, 32)] + ([(64, 4, 32, 32), (64, 4, 128, 32)] if args.full else [])
repeats = 200 if args.full else 20
print(f"forward + backward, float32, median of {repeats}, {args.threads} thread(s):")
for B, H, T, d in shapes:
    tensors = qkv(B, H, T, d, np.float32)
    upstream = rng.standard_normal((B, H, T, d)).astype(np.float32)
    one_call(attention_reference, tensors, upstream)  # warm-up: caches, compilation
    one_call(attention, tensors, upstream)
    # Interleaved, so both sides see the same background load.
    times = np.array([[one_call(fn, tensors, upstream) for fn in (attention_reference, attention)]
                      for _ in range(repeats)])
    reference, kernel = np.median(times, axis=0)
    print(f"  (B, H, T, d) = ({B}, {H}, {T}, {d}): reference {reference * 1e3:6.2f} ms, "
          f"kernel {kernel * 1e3:6.2f} ms, speed-up {reference / kernel:4.1f}x")
# Timings move with whatever else the machine is doing: on a busy machine, and with more
# threads than free cores, the kernel's parallel loop waits for its slowest thread and
# can even lose. Compare numbers taken in the same run, as here, on an idle machine
# (benchmarks/attention_ratios.py does this more thoroughly).
# These inputs are plain contiguous arrays with no KV cache: the kernels' fastest path.
# Inside the model the queries, keys and values are strided views of one projection, and
# the last block reads a cache, so the kernels copy rows first; the speed-up there is
# smaller (benchmarks/attention_ratios.py measures both).
# The reference is a chain of NumPy calls (two batched matrix products, a masked softmax
# of five ops, their backwards), each a full pass over memory with its own temporaries.
# The kernel does one pass per (batch, head) pair, all in cache, and runs the pairs in
# parallel: they write disjoint parts of the outputs, so no locks are needed.

# %% 5. The attention matrices of a transformer, as plain arrays
task = make_task("x_plus_y", p=23)
model = Transformer(len(task.vocab), task.num_classes, d_model=128, heads=4, layers=2, seed=0)
examples = [60, 250, 400]
with no_grad():
    logits, patterns = model(task.inputs[examples], return_attention=True)
print(f"{len(patterns)} layers, each of shape (B, H, T, T) = {patterns[0].shape}")
print(f"layer 0, head 0 of '{task.example(examples[0])}' (untrained model; rows are the "
      f"queries x, o, y, =; columns the keys):")
print(np.array2string(patterns[0][0, 0], precision=3, suppress_small=True))

stacked = np.stack(patterns).transpose(0, 2, 1, 3, 4)  # (L, H, N, T, T), as runs store them
figure = attention_heatmaps_figure(stacked, 0, task.decode(task.inputs[examples[0]]),
                                   "Attention of an untrained transformer (x + y mod 23)",
                                   mean_text=f"mean over the {len(examples)} inputs",
                                   one_text="one input")
save_figure(figure, args.out / "02_attention_matrices.png")
figure
