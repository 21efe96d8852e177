"""Multi-head softmax attention: a reference built from autograd ops, and Numba kernels.

The maths, for one (batch, head) pair
-------------------------------------
Queries Q (Tq, d), keys K (Tk, d), values V (Tk, d), and scale = 1 / sqrt(d):

    S = scale * Q K^T            (Tq, Tk)  S_ij: how well query i matches key j
    P = softmax(S), row by row   (Tq, Tk)  row i: how query i spreads its attention
    O = P V                      (Tq, d)   row i: the weighted average of the values

Causal masking: query i may look at keys up to its own position only. The queries are the
*last* Tq positions of the sequence (Tq = Tk normally; Tq = 1 when only the last position's
query is needed), so query i sits at absolute position Tk - Tq + i and sees keys
0 .. Tk - Tq + i. Masked entries of P are exactly 0.

The backward, given dO = dL/dO
------------------------------
O is linear in V and in P, and S is linear in Q and in K, so three of the four steps are
ordinary matrix-product rules:

    dV = P^T dO          dP = dO V^T          dQ = scale * dS K          dK = scale * dS^T Q

The softmax is the only step with a twist. With P_ij = exp(S_ij) / sum_l exp(S_il),

    dP_ij / dS_il = P_ij (delta_jl - P_il)          (only entries of the same row interact)

and the chain rule, summing over the entries j of row i that depend on S_il, gives

    dS_il = sum_j dP_ij P_ij (delta_jl - P_il) = P_il (dP_il - sum_j dP_ij P_ij),

that is  dS = P * (dP - rowsum(dP * P)).  A masked entry has P_il = 0, hence dS_il = 0: no
gradient reaches a key that the query could not see.

What is where in this file
--------------------------
1. ``attention_reference``: the formulas above written with autograd ops (matmul, a masked
   softmax, matmul). Obviously right and differentiated by autograd; the tests hold the
   kernels to it.
2. The Numba kernels: ``_attend_pair`` and ``_backprop_pair`` do the maths above for one
   (batch, head) pair as plain loops; ``_forward_kernel`` and ``_backward_kernel`` run them
   for every pair in parallel; ``_compiled`` compiles each once per dtype, on first use.
3. ``attention``: checks the inputs, calls the forward kernel, and records an autograd node
   whose backward calls the backward kernel.

Why the loops run in parallel over (batch, head) pairs
------------------------------------------------------
Every pair reads its own slices of Q, K, V, dO and writes its own slices of O, P, dQ, dK
and dV; no output element is touched by two pairs. A ``prange`` over the B*H pairs therefore
needs no locks or atomic adds, and every element is computed by exactly one thread in a
fixed order, so results are the same bit for bit whatever the number of threads.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import njit, prange, types

from tinygrok import autograd as ag
from tinygrok.autograd import Tensor, accumulate_grad, new_node

# A masked score in the reference: far enough below any real score that exp() of it
# underflows to exactly 0 in float32 and float64 (exp(-1e9) = 0 in both).
_MASKED_SCORE = -1e9


def causal_mask(num_queries: int, num_keys: int) -> np.ndarray:
    """Boolean (Tq, Tk) array, True where query i may attend to key j.

    The queries are the last ``num_queries`` positions: query i sits at position
    Tk - Tq + i and sees keys 0 .. Tk - Tq + i.
    """
    offset = num_keys - num_queries
    return np.arange(num_keys)[None, :] <= offset + np.arange(num_queries)[:, None]


def _check_inputs(q, k, v) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v as Tensors of matching shapes and one float dtype, or a ValueError."""
    arrays = [x.data if isinstance(x, Tensor) else np.asarray(x) for x in (q, k, v)]
    shapes = ", ".join(f"{name} {a.shape} {a.dtype}" for name, a in zip("qkv", arrays))
    if any(a.ndim != 4 for a in arrays):
        raise ValueError(f"attention needs 4-D arrays (batch, heads, positions, head_dim); "
                         f"got {shapes}")
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1 or arrays[0].dtype not in (np.float32, np.float64):
        raise ValueError(f"attention needs q, k, v of one dtype, float32 or float64; got "
                         f"{shapes}")
    (B, H, Tq, d), k_shape = arrays[0].shape, arrays[1].shape
    if k_shape != arrays[2].shape or k_shape[:2] != (B, H) or k_shape[3] != d:
        raise ValueError(f"attention needs q (B, H, Tq, d) and k, v (B, H, Tk, d) with the "
                         f"same B, H and d; got {shapes}")
    if not 1 <= Tq <= k_shape[2] or d == 0:
        raise ValueError(f"attention needs 1 <= Tq <= Tk and d >= 1 (the queries are the "
                         f"last Tq positions); got {shapes}")
    return tuple(x if isinstance(x, Tensor) else Tensor(a) for x, a in zip((q, k, v), arrays))


# --------------------------------------------------------------------------------------
# 1. The reference: the formulas, written with autograd ops
# --------------------------------------------------------------------------------------

def attention_reference(q, k, v, causal: bool = True):
    """Attention from autograd ops; returns ``(out, probs)`` like ``attention``.

    The masked softmax: masked scores get a large negative constant added, so exp() of
    them underflows to 0 and they drop out of every row sum. Multiplying the
    probabilities by the mask afterwards then makes the zeros exact by construction (not
    just by underflow) and also cuts the gradient to masked scores.
    """
    q, k, v = _check_inputs(q, k, v)
    scale = 1 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(0, 1, 3, 2)) * scale                    # (B, H, Tq, Tk)
    if causal:
        allowed = causal_mask(q.shape[2], k.shape[2]).astype(q.dtype)
        scores = scores + (1 - allowed) * _MASKED_SCORE
    probs = ag.exp(ag.log_softmax(scores, axis=-1))                   # rows sum to 1
    if causal:
        probs = probs * allowed
    return probs @ v, probs.data


# --------------------------------------------------------------------------------------
# 2. The kernels
# --------------------------------------------------------------------------------------
#
# Layouts. q, k, v and dO arrive as they are, with any strides: the (B, H, T, d) views of
# a fused QKV projection, transposed views, broadcast gradients with stride 0. The kernels
# take them as Numba arrays of layout 'A' (any strides), read-only; a C-contiguous or a
# writable array converts to that type, so each kernel has ONE compiled signature per
# dtype (see ``_compiled``). The outputs are C-contiguous arrays that the wrapper
# allocates and passes in.
#
# Speed. The compiler turns a loop into SIMD instructions (8 float32 at once) only when
# it walks adjacent elements of a contiguous array, and never for a sum into a single
# variable (that would reorder the additions, which only fastmath allows, and we do not
# use fastmath; see DESIGN.md). So:
# - each pair first copies the rows it reuses (K, V, Q[i], dO[i]: O(T d) numbers against
#   O(T^2 d) work) into small contiguous buffers. Numba moves their np.empty out of the
#   prange loop ("allocation hoisting"): each thread allocates them once and reuses them;
# - products become  row[:] += number * other_row[:]  over adjacent elements wherever
#   possible (O = P V, dV, dQ, dK);
# - the dot products of S = Q K^T and dP = dO V^T go through ``_row_dots``, which picks
#   the loop order that suits the row length.
#
# Constants: the scale is passed in with the inputs' dtype and zeros are built with
# ``q.dtype.type(0)``: a bare Python float would turn float32 arithmetic into float64.

_LONG_ROW = 16  # from this many keys on, _row_dots updates all sums at once (see there)


@njit(cache=True)
def _row_dots(x, rows, cols, n, out):
    """out[j] = sum_c x[c] * rows[j, c] for j < n: a row of S = Q K^T or dP = dO V^T.

    ``rows`` is (Tk, d) with any strides; ``cols`` is either empty or the same numbers
    transposed and contiguous, (d, Tk). Two loop orders compute the same sums:

    - a dot product per key, each a chain of additions into one variable. The compiler
      cannot split that chain across SIMD lanes (that would reorder the additions), so
      this runs one multiply-add at a time; it is the faster order for a few keys.
    - with ``cols``: all n sums at once, one c at a time, out[:n] += x[c] * cols[c, :n],
      a loop over adjacent elements that runs in SIMD: far faster for long rows.

    Both add the same products in the same order (c = 0, 1, ...), so they agree exactly.
    """
    zero = x.dtype.type(0)
    if cols.shape[1] == 0:
        for j in range(n):
            row = rows[j]
            total = zero
            for c in range(x.shape[0]):
                total += x[c] * row[c]
            out[j] = total
    else:
        for j in range(n):
            out[j] = zero
        for c in range(x.shape[0]):
            xc = x[c]
            for j in range(n):
                out[j] += xc * cols[c, j]


@njit(cache=True)
def _attend_pair(Q, K, V, scale, causal, O, P, q_row, v_rows, k_cols):
    """One (batch, head) pair: P = softmax(scale Q K^T, masked) and O = P V.

    Q (Tq, d), K and V (Tk, d): any strides. O (Tq, d), P (Tq, Tk): outputs. q_row (d,),
    v_rows (Tk, d) and k_cols (d, Tk), or (d, 0) for short rows: scratch for contiguous
    copies.
    """
    Tq, d = Q.shape
    Tk = K.shape[0]
    zero = Q.dtype.type(0)
    for j in range(Tk):
        for c in range(d):
            v_rows[j, c] = V[j, c]
    for j in range(k_cols.shape[1]):
        for c in range(d):
            k_cols[c, j] = K[j, c]

    for i in range(Tq):
        seen = Tk - Tq + i + 1 if causal else Tk  # keys 0 .. seen-1 are visible
        row = P[i]
        # Scores: row[j] = Q[i] . K[j] (scaled below); masked keys are never computed.
        for c in range(d):
            q_row[c] = Q[i, c]
        _row_dots(q_row, K, k_cols, seen, row)
        # Stable softmax: subtracting the row maximum keeps every exp() <= 1.
        peak = row[0]
        for j in range(1, seen):
            peak = max(peak, row[j])
        total = zero
        for j in range(seen):
            row[j] = math.exp(scale * (row[j] - peak))
            total += row[j]
        for j in range(seen):
            row[j] /= total
        for j in range(seen, Tk):
            row[j] = zero  # masked keys: exact zeros
        # Output: O[i] = sum_j P[i, j] V[j].
        for c in range(d):
            O[i, c] = zero
        for j in range(seen):
            p = row[j]
            for c in range(d):
                O[i, c] += p * v_rows[j, c]


@njit(cache=True)
def _backprop_pair(Q, K, V, P, dO, scale, causal, dQ, dK, dV, k_rows, v_cols, q_row, g_row,
                   dS):
    """One (batch, head) pair: dQ, dK, dV from dO and the saved P (module docstring).

    Q, K, V, P, dO: any strides. dQ, dK, dV: outputs. k_rows (Tk, d), v_cols (d, Tk) or
    (d, 0), q_row and g_row (d,), dS (Tk,): scratch.
    """
    Tq, d = Q.shape
    Tk = K.shape[0]
    zero = Q.dtype.type(0)
    for j in range(Tk):
        for c in range(d):
            k_rows[j, c] = K[j, c]
    for j in range(Tk):  # a loop of its own: on contiguous rows alone it runs in SIMD
        for c in range(d):
            dK[j, c] = zero
            dV[j, c] = zero
    for j in range(v_cols.shape[1]):
        for c in range(d):
            v_cols[c, j] = V[j, c]

    for i in range(Tq):
        seen = Tk - Tq + i + 1 if causal else Tk
        for c in range(d):
            q_row[c] = Q[i, c]
            g_row[c] = dO[i, c]
        # dV = P^T dO: query i adds P[i, j] dO[i] to every value it saw.
        for j in range(seen):
            p = P[i, j]
            for c in range(d):
                dV[j, c] += p * g_row[c]
        # dP[i, j] = dO[i] . V[j], then dS = P * (dP - rowsum(dP * P)), times the scale
        # of S (so that dQ and dK below need no scale). dS[j] holds dP first.
        _row_dots(g_row, V, v_cols, seen, dS)
        row_dot = zero
        for j in range(seen):
            row_dot += dS[j] * P[i, j]
        for j in range(seen):
            dS[j] = scale * (P[i, j] * (dS[j] - row_dot))
        # dQ[i] = sum_j dS[i, j] K[j]  and  dK[j] += dS[i, j] Q[i].
        for c in range(d):
            dQ[i, c] = zero
        for j in range(seen):
            s = dS[j]
            for c in range(d):
                dQ[i, c] += s * k_rows[j, c]
            for c in range(d):
                dK[j, c] += s * q_row[c]


# The two kernels: a prange over the B*H pairs, flattened into one loop so both threads
# get an even share even when B or H is small. The scratch arrays are allocated inside
# the loop, but Numba hoists loop-invariant allocations out of it: each thread allocates
# them once and reuses them for all its pairs (no malloc per pair).

def _forward_kernel(q, k, v, scale, causal, out, probs):
    """out = softmax(scale q k^T, masked) v and probs = the softmax, for every pair."""
    B, H, Tq, d = q.shape
    Tk = k.shape[2]
    long_rows = Tk if Tk >= _LONG_ROW else 0
    for pair in prange(B * H):
        b, h = pair // H, pair % H
        q_row = np.empty(d, q.dtype)
        v_rows = np.empty((Tk, d), q.dtype)
        k_cols = np.empty((d, long_rows), q.dtype)
        _attend_pair(q[b, h], k[b, h], v[b, h], scale, causal, out[b, h], probs[b, h],
                     q_row, v_rows, k_cols)


def _backward_kernel(q, k, v, probs, grad_out, scale, causal, grad_q, grad_k, grad_v):
    """grad_q, grad_k, grad_v from grad_out = dL/dout and the saved probs, for every pair."""
    B, H, Tq, d = q.shape
    Tk = k.shape[2]
    long_rows = Tk if Tk >= _LONG_ROW else 0
    for pair in prange(B * H):
        b, h = pair // H, pair % H
        k_rows = np.empty((Tk, d), q.dtype)
        v_cols = np.empty((d, long_rows), q.dtype)
        q_row = np.empty(d, q.dtype)
        g_row = np.empty(d, q.dtype)
        dS = np.empty(Tk, q.dtype)
        _backprop_pair(q[b, h], k[b, h], v[b, h], probs[b, h], grad_out[b, h], scale, causal,
                       grad_q[b, h], grad_k[b, h], grad_v[b, h], k_rows, v_cols, q_row,
                       g_row, dS)


@functools.cache
def _compiled(kernel: str, dtype: np.dtype):
    """``_forward_kernel`` or ``_backward_kernel`` (``kernel`` is "forward" or "backward")
    compiled for one dtype, on first use.

    Each gets exactly one signature per dtype: inputs read-only with any strides (layout
    'A'), outputs C-contiguous. ``cache=True`` stores the machine code on disk (in
    __pycache__ next to this file), so a later process loads it in milliseconds instead of
    compiling it for seconds. Only what is used gets compiled: a float32 forward pass
    never waits for the float64 kernels or for the backward.
    """
    real = numba.from_dtype(dtype)
    strided = types.Array(real, 4, "A", readonly=True)
    dense = types.Array(real, 4, "C")
    if kernel == "forward":  # q, k, v, scale, causal -> out, probs
        signature = types.void(strided, strided, strided, real, types.boolean, dense, dense)
        function = _forward_kernel
    else:  # q, k, v, probs, grad_out, scale, causal -> grad_q, grad_k, grad_v
        signature = types.void(strided, strided, strided, strided, strided, real,
                               types.boolean, dense, dense, dense)
        function = _backward_kernel
    return njit(signature, cache=True, parallel=True)(function)


# --------------------------------------------------------------------------------------
# 3. The autograd wrapper
# --------------------------------------------------------------------------------------

def attention(q, k, v, causal: bool = True):
    """Softmax attention of every (batch, head) pair, through the Numba kernels.

    Args:
        q: queries (B, H, Tq, d); k, v: keys and values (B, H, Tk, d), with Tq <= Tk.
            Tensors (gradients flow back into them) or plain arrays, all float32 or all
            float64. Any strides are accepted and read in place, without a copy: for
            example ``qkv.reshape(B, T, 3, H, d)[:, :, 0].transpose(0, 2, 1, 3)``, the
            query view of a fused QKV projection, or a view with swapped axes.
        causal: mask every key after the query's position. The queries are the LAST Tq
            positions: query i sits at position Tk - Tq + i and sees keys 0 .. Tk - Tq + i.
            (Tq = 1 computes just the last position, as the model's final block does.)

    Returns:
        ``(out, probs)``: the output Tensor (B, H, Tq, d), C-contiguous, and the attention
        probabilities as a read-only NumPy array (B, H, Tq, Tk): rows are queries, each
        row sums to 1, masked entries are exactly 0, scores are scaled by 1 / sqrt(d).
        Both have the inputs' dtype.
    """
    q, k, v = _check_inputs(q, k, v)
    B, H, Tq, d = q.shape
    Tk = k.shape[2]
    dtype = q.dtype
    scale = dtype.type(1 / math.sqrt(d))
    causal = bool(causal)
    out = np.empty((B, H, Tq, d), dtype)
    probs = np.empty((B, H, Tq, Tk), dtype)
    _compiled("forward", dtype)(q.data, k.data, v.data, scale, causal, out, probs)

    node = new_node(out, (q, k, v), "attention")
    if node.requires_grad:
        def _backward(grad_out):
            grads = [np.empty(t.shape, dtype) for t in (q, k, v)]
            grad_out = np.asarray(grad_out, dtype)
            _compiled("backward", dtype)(q.data, k.data, v.data, probs, grad_out, scale,
                                         causal, *grads)
            for tensor, grad in zip((q, k, v), grads):
                accumulate_grad(tensor, grad)
        node._backward = _backward
    # The backward reads ``probs``: hand out a read-only view so it cannot be changed.
    visible = probs.view()
    visible.flags.writeable = False
    return node, visible
