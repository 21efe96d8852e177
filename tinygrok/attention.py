"""Multi-head softmax attention: a reference built from autograd ops, and Numba kernels.

The maths, for one (batch, head) pair
-------------------------------------
Queries Q (Tq, d), keys K (Tk, d), values V (Tk, d), and scale = 1 / sqrt(d). Here d is
one head's width, d_model / H: 32 in the paper's model, so the scale is 1 / sqrt(32).

    S = scale * Q K^T            (Tq, Tk)  S_ij: how well query i matches key j
    P = softmax(S), row by row   (Tq, Tk)  row i: how query i spreads its attention
    O = P V                      (Tq, d)   row i: the weighted average of the values

Causal masking: query i may look at keys up to its own position only. The queries are the
*last* Tq positions of the sequence (Tq = Tk without a cache; with the prefix's cached keys
the model asks for Tq = 2 of Tk = 4, and Tq = 1 when only the last position's query is
needed), so query i sits at absolute position Tk - Tq + i and sees keys
0 .. Tk - Tq + i. Masked entries of P are exactly 0.

A KV cache: the keys and values of the first Tp positions may come separately
(``past``), computed once for many sequences that share those positions (model.py does
this for the shared prefix [x, o]). The keys are then the past's Tp followed by the Tn
new ones of k (Tk = Tp + Tn), and so are the values: the same maths as with the two
joined, without building the joined arrays.

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
2. The Numba kernels: ``_shifted_scores`` and ``_softmax_and_output`` (the forward, with
   the exp() between them) and ``_backprop_pair`` do the maths above for one (batch,
   head) pair as plain loops (the dot products by ``lanes.dot`` and each output row, a
   weighted sum of rows, by ``lanes.weighted_sum_of_rows``, both in SIMD), on rows read
   in place from plain contiguous inputs (``_pairs_end_to_end``) or else copied out of
   them by ``_gather_rows`` (found through ``_flat_view``; with a KV cache, the cache's
   rows first); ``_forward_kernel`` and ``_backward_kernel`` run them for every pair in
   parallel; ``_compiled`` compiles each once per dtype, on first use.
3. ``attention``: checks the inputs, calls the forward kernel, and records an autograd node
   whose backward calls the backward kernel.

Why the loops run in parallel over (batch, head) pairs
------------------------------------------------------
Every pair reads its own slices of Q, K, V, dO and writes its own slices of O, P, dQ, dK
and dV; no output element is touched by two pairs. A ``prange`` over the B*H pairs (in
chunks of consecutive pairs) therefore needs no locks or atomic adds, and every element is
computed by exactly one thread in a fixed order, so results are the same bit for bit
whatever the number of threads.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import njit, prange, types

from tinygrok import autograd as ag
from tinygrok.autograd import Tensor, accumulate_grad, new_node
from tinygrok.lanes import dot, weighted_sum_of_rows
from tinygrok.softmax_exp import exp_each

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


def _check_inputs(q, k, v, past=None):
    """q, k, v and the past's keys and values (or None) as Tensors of matching shapes and
    one float dtype, or a ValueError that names every shape and dtype."""
    named = {"q": q, "k": k, "v": v}
    if past is not None:
        if not isinstance(past, (tuple, list)) or len(past) != 2:
            raise ValueError(f"attention's past must be a pair (past_k, past_v) of "
                             f"(B, H, Tp, d) arrays, got {type(past).__name__}")
        named["past_k"], named["past_v"] = past
    arrays = {name: x.data if isinstance(x, Tensor) else np.asarray(x)
              for name, x in named.items()}

    def shapes():
        return ", ".join(f"{name} {a.shape} {a.dtype}" for name, a in arrays.items())

    if any(a.ndim != 4 for a in arrays.values()):
        raise ValueError(f"attention needs 4-D arrays (batch, heads, positions, head_dim); "
                         f"got {shapes()}")
    dtypes = {a.dtype for a in arrays.values()}
    if len(dtypes) != 1 or arrays["q"].dtype not in (np.float32, np.float64):
        raise ValueError(f"attention needs q, k, v (and past) of one dtype, float32 or "
                         f"float64; got {shapes()}")
    (B, H, Tq, d), Tk = arrays["q"].shape, 0
    for keys, values in (("k", "v"), ("past_k", "past_v")):
        if keys not in arrays:
            continue
        shape = arrays[keys].shape
        if shape != arrays[values].shape or shape[:2] != (B, H) or shape[3] != d:
            raise ValueError(f"attention needs q (B, H, Tq, d) and {keys}, {values} "
                             f"(B, H, positions, d) with the same B, H and d; "
                             f"got {shapes()}")
        Tk += shape[2]
    if not 1 <= Tq <= Tk or d == 0:
        raise ValueError(f"attention needs 1 <= Tq <= Tk and d >= 1 (the queries are the "
                         f"last Tq of the Tk positions); got {shapes()}")
    tensors = [x if isinstance(x, Tensor) else Tensor(arrays[name])
               for name, x in named.items()]
    return tensors[0], tensors[1], tensors[2], (tuple(tensors[3:]) or None)


# --------------------------------------------------------------------------------------
# 1. The reference: the formulas, written with autograd ops
# --------------------------------------------------------------------------------------

def attention_reference(q, k, v, causal: bool = True, past=None):
    """Attention from autograd ops; returns ``(out, probs)`` like ``attention``.

    The masked softmax: masked scores get a large negative constant added, so exp() of
    them underflows to 0 and they drop out of every row sum. Multiplying the
    probabilities by the mask afterwards then makes the zeros exact by construction (not
    just by underflow) and also cuts the gradient to masked scores.
    """
    q, k, v, past = _check_inputs(q, k, v, past)
    if past is not None:  # the cached positions come first
        k = ag.concatenate([past[0], k], axis=2)
        v = ag.concatenate([past[1], v], axis=2)
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
# Layouts. q, k, v and dO arrive as they are, with any strides: the model's (B, H, T, d)
# views of (B, T, H, d) heads, transposed views, other slices. In all but the transposed
# ones, the d numbers of one row x[b, h, j] are adjacent in memory, even though the rows
# themselves are scattered. A kernel that knew only "any strides" would have to fetch every
# number on its own, so each input reaches the kernels as two things (``_flat_view`` makes
# them, without copying):
#   - ``flat``: the memory the array spans, as a 1-D contiguous array (a view), and
#   - ``at = (origin, sb, sh, sj, sc)``: x[b, h, j, c] is flat[origin + b sb + h sh + j sj
#     + c sc] (strides counted in elements).
# The plainest layout needs no copying at all: C-contiguous (B, H, T, d) arrays and no
# cache. Each pair's T rows then lie end to end, rows (b H + h) T .. (b H + h) T + T - 1
# of the memory seen as (B H T, d) rows, and the pair reads them there
# (``_pairs_end_to_end``). Otherwise each pair copies the rows it needs into small
# contiguous buffers (``_gather_rows``), a straight block copy when sc == 1, which is all
# the cost the layout adds. At T = 4 those copies were about 40% of the forward's time;
# reading in place takes 0.78-0.81 of the kernels' time on one thread and 0.84-0.88 on
# two (at T = 128: 0.89-0.99, one thread). The model's own calls never take this path
# (its q, k, v are strided views of projections, and most calls have a KV cache); it
# serves callers with plain arrays, such as examples/02 and the benchmarks. With a KV
# cache, a pair's first Tp key rows come from the past's keys and the rest from k
# (values likewise): the same loop, choosing each row's source as it goes.
# Each kernel has ONE compiled signature per dtype (see ``_compiled``) for every layout,
# with or without a cache. The outputs are C-contiguous arrays that the wrapper allocates
# and passes in.
#
# Speed. The compiler turns a loop into SIMD instructions (8 float32 at once) only when
# it walks adjacent elements of a contiguous array, and never for a sum into a single
# variable (that would reorder the additions, which only fastmath allows, and we do not
# use fastmath; see docs/internals.md). So:
# - every output row of a matrix product (O[i] = sum_j P[i, j] V[j]; dQ[i], dK[j] and
#   dV[j] likewise) stays in vector registers while its terms add up
#   (``lanes.weighted_sum_of_rows``), instead of going back to memory after every term
#   as a loop of  row[:] += number * other_row[:]  would: same order, same bits, and
#   0.71 of the time at T = 128, 0.88 at T = 4 (forward + backward, two threads);
# - the dot products of S = Q K^T and dP = dO V^T keep eight partial sums instead of one
#   (``lanes.dot``), in an order fixed by the code rather than the compiler. The eight
#   sums sit side by side in one SIMD register, in vector instructions that lanes.py
#   writes itself, since the compiler will not;
# - the softmax's exp() runs on a whole chunk of pairs at once, sixteen float32 per
#   vector step (``softmax_exp.exp_each``), instead of one call of the C library's expf
#   per score: 0.91 of the time at T = 128 and 0.92-0.97 at T = 4 (forward + backward).
#   Its results are within one unit in the last place of the exactly rounded exp for
#   scores down to ln(FLT_MIN) = -87.34 below the row's largest, and 0 below that;
# - the helpers below are inlined into the kernels (``inline="always"``): at T = 4 a
#   function call per pair and row, with every array passed as a struct, cost more than
#   the arithmetic (it made the kernels ~1.7x slower);
# - the prange runs over at most 64 chunks of consecutive pairs, and each chunk allocates
#   its scratch buffers once for all its pairs: allocating them per pair cost 8-19% of
#   the kernels' time at T = 4 (benchmarks/README.md, "Attention").
#
# Constants: the scale is passed in with the inputs' dtype and zeros are built with
# ``x.dtype.type(0)``: a bare Python float would turn float32 arithmetic into float64.


def _flat_view(x: np.ndarray):
    """``(flat, at)`` for a 4-D array x: ``flat`` is a read-only 1-D contiguous view of the
    memory x spans, and x[b, h, j, c] = flat[origin + b sb + h sh + j sj + c sc] with
    ``at = (origin, sb, sh, sj, sc)``, strides in elements. No copy, except for the rare
    array whose strides are not whole elements."""
    size = x.itemsize
    if x.size == 0:
        return np.empty(0, x.dtype), (0, 0, 0, 0, 0)
    if x.flags.c_contiguous:  # the common case, and the quick one: x's own memory in order
        flat = x.reshape(-1)  # a new view; marking it read-only leaves x writeable
        flat.flags.writeable = False
        # C order puts x[b, h, j, c] at ((b H + h) T + j) d + c, whatever strides NumPy
        # reports for an axis of length 1 (it may report any: they are never used).
        _, H, T, d = x.shape
        return flat, (0, H * T * d, T * d, d, 1)
    if not x.flags.aligned or any(s % size for s in x.strides):
        x = np.ascontiguousarray(x)
    strides = [s // size for s in x.strides]
    # Flip the axes that run backwards (negative strides): x[0, 0, 0, 0] of the flipped
    # view is then the lowest address x touches, where ``flat`` starts, and x[0, 0, 0, 0]
    # itself lies (n - 1) |s| further on for each such axis.
    lowest = x
    if any(s < 0 for s in strides):
        lowest = x[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in strides)]
    span = 1 + sum((n - 1) * abs(s) for n, s in zip(x.shape, strides))
    flat = np.lib.stride_tricks.as_strided(lowest, (span,), (size,), writeable=False)
    origin = sum((n - 1) * -s for n, s in zip(x.shape, strides) if s < 0)
    return flat, (origin, *strides)


# What the kernels get for the keys and values of an absent KV cache: no rows at all.
_NO_CACHE = {np.dtype(t): _flat_view(np.empty((0, 0, 0, 0), t))
             for t in (np.float32, np.float64)}


@njit(cache=True, inline="always")
def _gather_rows(past, past_at, flat, at, past_len, b, h, rows):
    """rows[j] = past[b, h, j] for the first ``past_len`` rows (a KV cache's), then
    rows[j] = x[b, h, j - past_len], with past and x given as (flat, at) pairs. Without a
    cache (past_len 0) every row comes from x."""
    d = rows.shape[1]
    for j in range(rows.shape[0]):
        if j < past_len:
            source, (origin, sb, sh, sj, sc), source_row = past, past_at, j
        else:
            source, (origin, sb, sh, sj, sc), source_row = flat, at, j - past_len
        start = origin + b * sb + h * sh + source_row * sj
        if sc == 1:  # d adjacent numbers: a block copy, in SIMD
            adjacent = source[start:start + d]  # a slice: indices below need no sign checks
            for c in range(d):
                rows[j, c] = adjacent[c]
        else:
            for c in range(d):
                rows[j, c] = source[start + c * sc]


@njit(cache=True, inline="always")
def _pairs_end_to_end(at, H, T, d):
    """True when ``at`` is what ``_flat_view`` gives a C-contiguous (B, H, T, d) array:
    then pair (b, h)'s row j is row (b H + h) T + j of its memory seen as (B H T, d)
    rows."""
    return at == (0, H * T * d, T * d, d, 1)


@njit(cache=True, inline="always")
def _reads_in_place(past_len, q_at, k_at, v_at, H, Tq, Tk, d):
    """True when the pairs can read their rows where they are: no KV cache, and q, k and
    v all C-contiguous. (The backward also asks it of the output gradient.)"""
    return (past_len == 0 and _pairs_end_to_end(q_at, H, Tq, d)
            and _pairs_end_to_end(k_at, H, Tk, d) and _pairs_end_to_end(v_at, H, Tk, d))


@njit(cache=True, inline="always")
def _as_rows(flat, count, d):
    """The first ``count`` rows of d numbers of a 1-D array, as a (count, d) view."""
    return flat[:count * d].reshape((count, d))


@njit(cache=True, inline="always")
def _rows_of_pair(in_place, rows, pair, past, past_at, flat, at, past_len, b, h, scratch):
    """The rows of pair (b, h) = number ``pair``, as a C-contiguous (T, d) array: read in
    place, rows[pair T:(pair + 1) T] (``rows``: the input seen as rows, when ``in_place``),
    or else copied into ``scratch`` (T, d) by ``_gather_rows``."""
    T = scratch.shape[0]
    if in_place:
        return rows[pair * T:(pair + 1) * T]
    _gather_rows(past, past_at, flat, at, past_len, b, h, scratch)
    return scratch


@njit(cache=True, inline="always")
def _visible_keys(i, Tq, Tk, causal):
    """How many keys query i sees: keys 0 .. seen-1 (the queries are the last Tq of the
    Tk positions; without the causal mask, all of them)."""
    return Tk - Tq + i + 1 if causal else Tk


@njit(cache=True, inline="always")
def _shifted_scores(Q, K, scale, causal, P):
    """First half of one pair's forward: P[i, j] = scale (Q[i] . K[j] - max_j' Q[i] . K[j'])
    for the keys j that query i sees, and 0 for the masked ones.

    Q (Tq, d), K (Tk, d): the pair's rows, C-contiguous; P (Tq, Tk): the pair's block of
    the probabilities, which holds these exp() arguments until ``exp_each`` and
    ``_softmax_and_output`` turn them into probabilities. Subtracting the row's largest
    score keeps every argument <= 0, so no exp() overflows (a stable softmax). The dot
    products of all rows come first, then the rows' maxima: they do not wait for each
    other, so the CPU overlaps them.
    """
    Tq, Tk = Q.shape[0], K.shape[0]
    zero = Q.dtype.type(0)
    for i in range(Tq):  # masked keys are never computed
        for j in range(_visible_keys(i, Tq, Tk, causal)):
            P[i, j] = dot(Q[i], K[j])
    for i in range(Tq):
        seen, row = _visible_keys(i, Tq, Tk, causal), P[i]
        peak = row[0]
        for j in range(1, seen):
            peak = max(peak, row[j])
        for j in range(seen):
            row[j] = scale * (row[j] - peak)
        for j in range(seen, Tk):
            row[j] = zero


@njit(cache=True, inline="always")
def _softmax_and_output(V, causal, P, O):
    """Second half of one pair's forward, once P holds the exp() of ``_shifted_scores``:
    each row divided by its sum (masked entries exact zeros), then O[i] = sum_j P[i, j]
    V[j], the output row held in registers while it adds up. V (Tk, d): the pair's values,
    C-contiguous; O (Tq, d): output."""
    Tq, Tk = P.shape
    zero = P.dtype.type(0)
    for i in range(Tq):
        seen, row = _visible_keys(i, Tq, Tk, causal), P[i]
        total = zero
        for j in range(seen):
            total += row[j]
        for j in range(seen):
            row[j] /= total
        for j in range(seen, Tk):
            row[j] = zero  # masked keys: exact zeros
    for i in range(Tq):
        weighted_sum_of_rows(P[i], V, _visible_keys(i, Tq, Tk, causal), O[i])


@njit(cache=True, inline="always")
def _backprop_pair(Q, K, V, P, dO, scale, causal, dQ, dK, dV, dS, column):
    """One (batch, head) pair: dQ, dK, dV from dO and the saved P (module docstring).

    Q, K, V, dO: the pair's rows, C-contiguous; P: the forward's probabilities. dQ, dK,
    dV: outputs. dS (Tq, Tk) and column (Tq,): scratch. Three steps: dS for every query,
    then each dQ row, then each key's dK and dV rows; every output row adds up in vector
    registers (``weighted_sum_of_rows``), its terms in query or key order.
    """
    Tq, Tk = Q.shape[0], K.shape[0]
    zero = Q.dtype.type(0)
    # dP[i, j] = dO[i] . V[j], then dS = P * (dP - rowsum(dP * P)), times the scale of S
    # (so that dQ and dK below need no scale). Each row of dS holds dP first.
    for i in range(Tq):
        seen, row, probs = _visible_keys(i, Tq, Tk, causal), dS[i], P[i]
        for j in range(seen):
            row[j] = dot(dO[i], V[j])
        row_dot = zero
        for j in range(seen):
            row_dot += row[j] * probs[j]
        for j in range(seen):
            row[j] = scale * (probs[j] * (row[j] - row_dot))
    # dQ[i] = sum_j dS[i, j] K[j], over the keys query i saw.
    for i in range(Tq):
        weighted_sum_of_rows(dS[i], K, _visible_keys(i, Tq, Tk, causal), dQ[i])
    # dV[j] = sum_i P[i, j] dO[i] and dK[j] = sum_i dS[i, j] Q[i], over the queries that
    # saw key j: queries first .. Tq-1 (query i sees keys up to Tk - Tq + i). The weights
    # are a column of P or dS, copied into ``column`` so that they lie side by side.
    for j in range(Tk):
        first = max(0, j - (Tk - Tq)) if causal else 0
        for i in range(first, Tq):
            column[i - first] = P[i, j]
        weighted_sum_of_rows(column, dO[first:], Tq - first, dV[j])
        for i in range(first, Tq):
            column[i - first] = dS[i, j]
        weighted_sum_of_rows(column, Q[first:], Tq - first, dK[j])


# The two kernels: the B*H pairs are numbered 0 .. B*H-1 (pair = b*H + h), so both
# threads get an even share even when B or H is small, and cut into ``_CHUNKS`` runs of
# consecutive pairs; the prange is over the runs, each with its own scratch buffers. Each
# input is a (flat, at) pair (see "Layouts" above); ``past_k`` and ``past_v`` hold the
# keys and values of the first ``past_len`` positions (0 without a cache: nothing is read
# there).

_CHUNKS = 64  # prange chunks (fewer when there are fewer pairs); compiled in as a constant


@njit(cache=True, inline="always")
def _chunk_pairs(chunk, chunks, pairs):
    """The pairs of one chunk: range(first, last), ``chunks`` nearly equal runs."""
    return range(chunk * pairs // chunks, (chunk + 1) * pairs // chunks)


def _forward_kernel(q, q_at, k, k_at, v, v_at, past_k, pk_at, past_v, pv_at, past_len,
                    scale, causal, out, probs):
    """out = softmax(scale q k^T, masked) v and probs = the softmax, for every pair; the
    keys are past_k's ``past_len`` rows, then k's (values likewise)."""
    B, H, Tq, d = out.shape
    Tk = probs.shape[3]
    chunks = min(B * H, _CHUNKS)
    every_prob = probs.reshape(B * H * Tq * Tk)  # pair by pair, each a (Tq, Tk) block
    # Plain contiguous inputs and no cache: each pair reads its rows in place (pair p's
    # queries are q_rows[p Tq:(p + 1) Tq]). Otherwise the views are empty, unused.
    in_place = _reads_in_place(past_len, q_at, k_at, v_at, H, Tq, Tk, d)
    pairs_in_place = B * H if in_place else 0
    q_rows = _as_rows(q, pairs_in_place * Tq, d)
    k_rows = _as_rows(k, pairs_in_place * Tk, d)
    v_rows = _as_rows(v, pairs_in_place * Tk, d)
    for chunk in prange(chunks):
        Q_copy = np.empty((Tq, d), out.dtype)  # scratch rows, when they are not in place
        K_copy = np.empty((Tk, d), out.dtype)
        V_copy = np.empty((Tk, d), out.dtype)
        pairs = _chunk_pairs(chunk, chunks, B * H)
        for pair in pairs:
            b, h = pair // H, pair % H
            # (past_len 0 for the queries: every row from q)
            Q = _rows_of_pair(in_place, q_rows, pair, q, q_at, q, q_at, 0, b, h, Q_copy)
            K = _rows_of_pair(in_place, k_rows, pair, past_k, pk_at, k, k_at, past_len, b, h,
                              K_copy)
            _shifted_scores(Q, K, scale, causal, probs[b, h])
        # exp() of all the chunk's scores in one go: its pairs' blocks lie end to end.
        # (The masked entries go through it too, 0 -> 1, and _softmax_and_output sets
        # them back to exact zeros.)
        first, size = pairs.start * Tq * Tk, len(pairs) * Tq * Tk
        exp_each(every_prob[first:first + size], size)
        for pair in pairs:
            b, h = pair // H, pair % H
            V = _rows_of_pair(in_place, v_rows, pair, past_v, pv_at, v, v_at, past_len, b, h,
                              V_copy)
            _softmax_and_output(V, causal, probs[b, h], out[b, h])


def _backward_kernel(q, q_at, k, k_at, v, v_at, past_k, pk_at, past_v, pv_at, past_len,
                     g, g_at, probs, scale, causal, grad_q, grad_k, grad_v):
    """grad_q, grad_k, grad_v from g = dL/dout and the saved probs, for every pair.
    grad_k and grad_v cover all Tk positions, the past's ``past_len`` first."""
    B, H, Tq, d = grad_q.shape
    Tk = probs.shape[3]
    chunks = min(B * H, _CHUNKS)
    in_place = (_reads_in_place(past_len, q_at, k_at, v_at, H, Tq, Tk, d)
                and _pairs_end_to_end(g_at, H, Tq, d))
    pairs_in_place = B * H if in_place else 0
    q_rows = _as_rows(q, pairs_in_place * Tq, d)
    k_rows = _as_rows(k, pairs_in_place * Tk, d)
    v_rows = _as_rows(v, pairs_in_place * Tk, d)
    g_rows = _as_rows(g, pairs_in_place * Tq, d)
    for chunk in prange(chunks):
        Q_copy = np.empty((Tq, d), grad_q.dtype)  # scratch rows, when not in place
        K_copy = np.empty((Tk, d), grad_q.dtype)
        V_copy = np.empty((Tk, d), grad_q.dtype)
        dO_copy = np.empty((Tq, d), grad_q.dtype)
        dS = np.empty((Tq, Tk), grad_q.dtype)
        column = np.empty(Tq, grad_q.dtype)
        for pair in _chunk_pairs(chunk, chunks, B * H):
            b, h = pair // H, pair % H
            Q = _rows_of_pair(in_place, q_rows, pair, q, q_at, q, q_at, 0, b, h, Q_copy)
            K = _rows_of_pair(in_place, k_rows, pair, past_k, pk_at, k, k_at, past_len, b, h,
                              K_copy)
            V = _rows_of_pair(in_place, v_rows, pair, past_v, pv_at, v, v_at, past_len, b, h,
                              V_copy)
            dO = _rows_of_pair(in_place, g_rows, pair, g, g_at, g, g_at, 0, b, h, dO_copy)
            _backprop_pair(Q, K, V, probs[b, h], dO, scale, causal, grad_q[b, h],
                           grad_k[b, h], grad_v[b, h], dS, column)


@functools.cache
def _compiled(kernel: str, dtype: np.dtype):
    """``_forward_kernel`` or ``_backward_kernel`` (``kernel`` is "forward" or "backward")
    compiled for one dtype, on first use.

    Each gets exactly one signature per dtype, whatever the layout of q, k, v and with or
    without a KV cache: every input as a read-only 1-D contiguous ``flat`` and its ``at``
    tuple of five integers, outputs (and the saved probabilities) C-contiguous.
    ``cache=True`` stores the machine code on disk (in __pycache__ next to this file), so
    a later process loads it in milliseconds instead of compiling it for seconds. Only
    what is used gets compiled: a float32 forward pass never waits for the float64
    kernels or for the backward.
    """
    real = numba.from_dtype(dtype)
    flat = types.Array(real, 1, "C", readonly=True)
    at = types.UniTuple(types.intp, 5)
    dense = types.Array(real, 4, "C")
    inputs = (flat, at) * 5 + (types.intp,)  # q, k, v, past_k, past_v, past_len
    if kernel == "forward":  # inputs, scale, causal -> out, probs
        signature = types.void(*inputs, real, types.boolean, dense, dense)
        function = _forward_kernel
    else:  # inputs, grad_out, probs, scale, causal -> grad_q, grad_k, grad_v
        signature = types.void(*inputs, flat, at, dense, real, types.boolean, dense, dense,
                               dense)
        function = _backward_kernel
    return njit(signature, cache=True, parallel=True)(function)


# --------------------------------------------------------------------------------------
# 3. The autograd wrapper
# --------------------------------------------------------------------------------------

def attention(q, k, v, causal: bool = True, past=None):
    """Softmax attention of every (batch, head) pair, through the Numba kernels.

    Args:
        q: queries (B, H, Tq, d); k, v: keys and values (B, H, Tn, d). Tensors (gradients
            flow back into them) or plain arrays, all float32 or all float64. Any strides
            are accepted and read where they are, without a copy of the whole array
            (each pair's rows are copied into small buffers, unless q, k, v are plain
            C-contiguous arrays and there is no cache): for example
            ``qkv.reshape(B, T, 3, H, d)[:, :, 0].transpose(0, 2, 1, 3)``, the query view
            of a fused QKV projection, or a view with swapped axes.
        causal: mask every key after the query's position. The queries are the LAST Tq of
            the Tk positions: query i sits at position Tk - Tq + i and sees keys
            0 .. Tk - Tq + i. (Tq = 1 computes just the last position, as the model's
            final block does.)
        past: optionally a KV cache, a pair (past_k, past_v) of (B, H, Tp, d) arrays or
            Tensors: the keys and values of Tp earlier positions. The keys are then
            past_k's followed by k's (Tk = Tp + Tn), and likewise the values; gradients
            reach the cache too. Without it Tk = Tn.

    Returns:
        ``(out, probs)``: the output Tensor (B, H, Tq, d), C-contiguous, and the attention
        probabilities as a read-only NumPy array (B, H, Tq, Tk): rows are queries, each
        row sums to 1, masked entries are exactly 0, scores are scaled by 1 / sqrt(d).
        Both have the inputs' dtype.
    """
    if not isinstance(causal, (bool, np.bool_)):  # bool("no") would be True
        raise TypeError(f"causal must be True or False, got {causal!r}")
    q, k, v, past = _check_inputs(q, k, v, past)
    B, H, Tq, d = q.shape
    past_len = 0 if past is None else past[0].shape[2]
    Tk = past_len + k.shape[2]
    dtype = q.dtype
    scale = dtype.type(1 / math.sqrt(d))
    causal = bool(causal)
    out = np.empty((B, H, Tq, d), dtype)
    probs = np.empty((B, H, Tq, Tk), dtype)
    if past is None:
        cache = [*_NO_CACHE[dtype], *_NO_CACHE[dtype]]
    else:
        cache = [*_flat_view(past[0].data), *_flat_view(past[1].data)]
    inputs = [*_flat_view(q.data), *_flat_view(k.data), *_flat_view(v.data), *cache, past_len]
    _compiled("forward", dtype)(*inputs, scale, causal, out, probs)

    keys_and_values = (k, v) if past is None else (k, v, *past)
    node = new_node(out, (q, *keys_and_values), "attention")
    if node.requires_grad:
        def _backward(grad_out):
            grad_q = np.empty(q.shape, dtype)
            grad_k, grad_v = (np.empty((B, H, Tk, d), dtype) for _ in range(2))
            grad_out = _flat_view(np.asarray(grad_out, dtype))
            _compiled("backward", dtype)(*inputs, *grad_out, probs, scale, causal, grad_q,
                                         grad_k, grad_v)
            accumulate_grad(q, grad_q)
            # Views of one buffer, the past's positions first (so, with a cache, k.grad
            # is not contiguous: fine, since autograd never writes into a gradient it
            # was handed, only into arrays it allocated itself).
            accumulate_grad(k, grad_k[:, :, past_len:])
            accumulate_grad(v, grad_v[:, :, past_len:])
            if past is not None:
                accumulate_grad(past[0], grad_k[:, :, :past_len])
                accumulate_grad(past[1], grad_v[:, :, :past_len])
        node._backward = _backward
    # The backward reads ``probs``: hand out a read-only view so it cannot be changed.
    visible = probs.view()
    visible.flags.writeable = False
    return node, visible
