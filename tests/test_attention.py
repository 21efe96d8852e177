"""The attention kernels against the autograd reference: values, probabilities, gradients."""

import numpy as np
import pytest

from tinygrok import attention as att
from tinygrok.attention import attention, attention_reference, causal_mask
from tinygrok.autograd import Tensor, no_grad
from tinygrok.gradcheck import gradcheck

B, H = 2, 3


def make_qkv(layout, T, d, dtype, seed=0, Tq=None):
    """Leaves to differentiate and the (q, k, v) Tensors built from them.

    contiguous: three (B, H, T, d) leaves.
    fused:      one (B, T, 3*H*d) leaf, as a fused QKV projection gives it, reshaped to
                (B, T, 3, H, d) and sliced into (B, H, T, d) views with odd strides.
    transposed: (B, H, d, T) leaves, each seen through swapaxes: the last axis is strided.
    ``Tq`` keeps only the last Tq positions of q.
    """
    rng = np.random.default_rng(seed)

    def leaf(*shape):
        return Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)

    if layout == "contiguous":
        leaves = [leaf(B, H, T, d) for _ in range(3)]
        q, k, v = leaves
    elif layout == "fused":
        qkv = leaf(B, T, 3 * H * d)
        parts = qkv.reshape(B, T, 3, H, d)
        q, k, v = (parts[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        leaves = [qkv]
    elif layout == "transposed":
        leaves = [leaf(B, H, d, T) for _ in range(3)]
        q, k, v = (t.transpose(0, 1, 3, 2) for t in leaves)
    else:
        raise ValueError(layout)
    if Tq is not None:
        q = q[:, :, T - Tq:]
    return leaves, (q, k, v)


def run(fn, layout, T, d, dtype, causal, seed=0, Tq=None):
    """Output, probabilities and leaf gradients of sum(out * R) for a fixed random R."""
    leaves, (q, k, v) = make_qkv(layout, T, d, dtype, seed, Tq)
    out, probs = fn(q, k, v, causal=causal)
    weights = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
    (out * weights).sum().backward()
    return out.data, probs, [t.grad for t in leaves]


def assert_close(actual, expected, dtype):
    """float64: 1e-12; float32: 1e-5, both relative to the array's largest entry."""
    tol = 1e-12 if dtype == np.float64 else 1e-5
    scale = max(np.abs(expected).max(initial=0), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


# -- the kernels agree with the reference ---------------------------------------------

@pytest.mark.parametrize("layout", ["contiguous", "fused", "transposed"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("d", [8, 32])
@pytest.mark.parametrize("T", [1, 2, 4, 17, 64])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_matches_reference(dtype, T, d, causal, layout):
    out, probs, grads = run(attention, layout, T, d, dtype, causal)
    ref_out, ref_probs, ref_grads = run(attention_reference, layout, T, d, dtype, causal)
    assert out.dtype == probs.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert out.shape == (B, H, T, d) and probs.shape == (B, H, T, T)
    assert_close(out, ref_out, dtype)
    assert_close(probs, ref_probs, dtype)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_close(grad, ref_grad, dtype)


def test_chunks_cover_every_pair_exactly_once():
    """The chunks' ranges, in order, are exactly 0 .. pairs-1: no pair left out, none
    twice (the kernels' arithmetic, run as plain Python)."""
    for pairs in [*range(0, 301), 10**9 + 7]:
        chunks = min(pairs, att._CHUNKS)
        chunk_pairs = getattr(att._chunk_pairs, "py_func", att._chunk_pairs)
        covered = [chunk_pairs(c, chunks, pairs) for c in range(chunks)]
        if pairs > 300:  # too many to list: check that the ranges join end to end
            assert covered[0].start == 0 and covered[-1].stop == pairs
            assert all(a.stop == b.start for a, b in zip(covered, covered[1:]))
        else:
            assert [p for r in covered for p in r] == list(range(pairs))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch, heads", [(45, 3), (64, 1), (1, 1)])
def test_every_pair_of_every_chunk_is_computed(batch, heads, dtype):
    """The kernels cut the B*H pairs into at most 64 chunks of consecutive pairs: 135
    pairs give uneven chunks of 2 and 3, 64 one pair each. The outputs start as
    uninitialised memory, so a pair left out would not match the reference. In float32
    the forward's exp() runs once over each chunk's probabilities, so a chunk's blocks
    must all be found there too."""
    rng = np.random.default_rng(4)
    leaves = [Tensor(rng.standard_normal((batch, heads, 4, 8)).astype(dtype),
                     requires_grad=True) for _ in range(3)]
    results = []
    for fn in (attention, attention_reference):
        for t in leaves:
            t.grad = None
        out, probs = fn(*leaves, causal=True)
        (out * out).sum().backward()
        results.append([out.data, probs] + [t.grad for t in leaves])
    for got, expected in zip(*results):
        assert_close(got, expected, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("Tq, Tk", [(1, 1), (1, 4), (3, 4), (1, 17), (5, 17), (9, 64)])
def test_last_queries_equal_last_rows_of_full_attention(Tq, Tk, dtype):
    """q of the last Tq positions gives the last Tq rows of the full computation, and
    the same gradients for k and v when only those rows reach the loss."""
    d = 8
    _, (q, k, v) = make_qkv("contiguous", Tk, d, dtype)
    weights = np.random.default_rng(5).standard_normal((B, H, Tq, d)).astype(dtype)

    full_out, full_probs = attention(q, k, v, causal=True)
    (full_out[:, :, Tk - Tq:] * weights).sum().backward()
    full = [full_out.data[:, :, Tk - Tq:], full_probs[:, :, Tk - Tq:], k.grad, v.grad,
            q.grad[:, :, Tk - Tq:]]
    for t in (q, k, v):
        t.grad = None

    q_last = q[:, :, Tk - Tq:]
    out, probs = attention(q_last, k, v, causal=True)
    (out * weights).sum().backward()
    assert out.shape == (B, H, Tq, d) and probs.shape == (B, H, Tq, Tk)
    last = [out.data, probs, k.grad, v.grad, q.grad[:, :, Tk - Tq:]]
    for actual, expected in zip(last, full):
        assert_close(actual, expected, dtype)
    assert np.all(q.grad[:, :, :Tk - Tq] == 0)  # earlier queries did not take part


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "fused", "transposed"])
def test_last_queries_match_reference(layout, causal):
    out, probs, grads = run(attention, layout, 6, 8, np.float64, causal, Tq=2)
    ref_out, ref_probs, ref_grads = run(attention_reference, layout, 6, 8, np.float64,
                                        causal, Tq=2)
    assert_close(out, ref_out, np.float64)
    assert_close(probs, ref_probs, np.float64)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_close(grad, ref_grad, np.float64)


# -- gradients against finite differences ---------------------------------------------

@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("Tq, Tk", [(3, 3), (1, 4), (2, 5)])
def test_gradcheck_through_kernel(Tq, Tk, causal):
    rng = np.random.default_rng(3)
    q = Tensor(rng.standard_normal((1, 2, Tq, 4)), requires_grad=True)
    k = Tensor(rng.standard_normal((1, 2, Tk, 4)), requires_grad=True)
    v = Tensor(rng.standard_normal((1, 2, Tk, 4)), requires_grad=True)
    assert gradcheck(lambda q, k, v: attention(q, k, v, causal=causal)[0], [q, k, v])


def test_gradcheck_through_fused_qkv_views():
    d, heads, T = 3, 2, 4
    qkv = Tensor(np.random.default_rng(4).standard_normal((2, T, 3 * heads * d)),
                 requires_grad=True)

    def fn(qkv):
        parts = qkv.reshape(2, T, 3, heads, d)
        q, k, v = (parts[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        return attention(q, k, v)[0]

    assert gradcheck(fn, [qkv])


def test_gradient_of_a_plain_sum_arrives_broadcast():
    """out.sum() hands back a read-only stride-0 gradient (autograd copies it before the
    backward kernel sees it); the gradients still match the reference's."""
    results = []
    for fn in (attention, attention_reference):
        _, (q, k, v) = make_qkv("contiguous", 5, 8, np.float64)
        fn(q, k, v)[0].sum().backward()
        results.append([q.grad, k.grad, v.grad])
    for grad, ref_grad in zip(*results):
        assert_close(grad, ref_grad, np.float64)


# -- a KV cache: the first P positions' keys and values passed separately --------------

def cached_inputs(P, S, Tq, d, dtype, layout, seed=0):
    """Leaves, then q (B, H, Tq, d), k, v (B, H, S, d) and the cache (B, H, P, d) x 2.
    ``layout`` is that of k and v (see make_qkv); the cache is contiguous."""
    leaves, (q, k, v) = make_qkv(layout, S, d, dtype, seed)
    rng = np.random.default_rng(seed + 7)
    cache = [Tensor(rng.standard_normal((B, H, P, d)).astype(dtype), requires_grad=True)
             for _ in range(2)]
    q = Tensor(rng.standard_normal((B, H, Tq, d)).astype(dtype), requires_grad=True)
    if layout != "fused":
        leaves = leaves[1:]  # make_qkv's own q is not used
    return [q, *leaves, *cache], (q, k, v), tuple(cache)


# (P, S, Tq, layout of k and v): P cached positions, S new ones, Tq queries
CACHE_CASES = [(P, S, Tq, layout) for P, S, Tq in [(2, 2, 2), (2, 2, 1), (1, 5, 3), (5, 1, 6)]
               for layout in ("contiguous", "fused", "transposed")]
CACHE_CASES += [(3, 0, 2, "contiguous"),  # every key in the cache
                (0, 3, 2, "contiguous")]  # an empty cache


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("P, S, Tq, layout", CACHE_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kv_cache_matches_reference(dtype, P, S, Tq, layout, causal):
    results = []
    for fn in (attention, attention_reference):
        leaves, (q, k, v), past = cached_inputs(P, S, Tq, 8, dtype, layout)
        out, probs = fn(q, k, v, causal=causal, past=past)
        weights = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
        (out * weights).sum().backward()
        results.append((out.data, probs, [t.grad for t in leaves]))
    (out, probs, grads), (ref_out, ref_probs, ref_grads) = results
    assert probs.shape == (B, H, Tq, P + S)
    assert_close(out, ref_out, dtype)
    assert_close(probs, ref_probs, dtype)
    for grad, ref_grad in zip(grads, ref_grads):
        assert grad.shape == ref_grad.shape
        assert_close(grad, ref_grad, dtype)


def test_kv_cache_gives_exactly_what_the_joined_keys_give():
    """The kernel copies the same rows into the same buffers either way: equal bit for bit."""
    leaves, (q, k, v), past = cached_inputs(3, 2, 4, 32, np.float32, "fused")
    joined = [np.concatenate([c.data, x.data], axis=2) for c, x in zip(past, (k, v))]
    out, probs = attention(q, k, v, past=past)
    joined_out, joined_probs = attention(q.data, *joined)
    assert np.array_equal(out.data, joined_out.data) and np.array_equal(probs, joined_probs)


def test_kv_cache_of_plain_arrays_gives_q_k_v_the_same_gradients():
    """A cache that needs no gradient (plain arrays) shapes q's, k's and v's gradients
    exactly as the same cache given as Tensors does, and as the reference's."""
    results = []
    for fn, plain in ((attention, True), (attention, False), (attention_reference, True)):
        leaves, (q, k, v), past = cached_inputs(2, 3, 2, 8, np.float64, "contiguous")
        fn(q, k, v, past=tuple(t.data for t in past) if plain else past)[0].sum().backward()
        results.append([t.grad for t in leaves[:3]])
        assert all(t.grad is not None for t in past) == (not plain)
    plain_grads, tensor_grads, reference = results
    for grad, tensor_grad, ref_grad in zip(plain_grads, tensor_grads, reference):
        np.testing.assert_array_equal(grad, tensor_grad)
        assert_close(grad, ref_grad, np.float64)


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_through_kv_cache(causal):
    leaves, (q, k, v), past = cached_inputs(2, 3, 4, 4, np.float64, "contiguous", seed=9)
    q_leaf, k_leaf, v_leaf, past_k, past_v = leaves
    assert gradcheck(lambda q, k, v, pk, pv: attention(q, k, v, causal, past=(pk, pv))[0],
                     [q_leaf, k_leaf, v_leaf, past_k, past_v])


@pytest.mark.parametrize("d", [13, 32])
def test_gradcheck_at_head_sizes_that_take_the_vector_paths(d):
    """The kernels add up dot products eight lanes at a time (lanes.py): 13 leaves a
    remainder of 5, 32 is the model's head size. With a cache and a single query, as the
    last block runs in training, and without."""
    rng = np.random.default_rng(d)
    q, k, v = (Tensor(rng.standard_normal((1, 2, 3, d)), requires_grad=True) for _ in range(3))
    assert gradcheck(lambda q, k, v: attention(q, k, v)[0], [q, k, v])
    leaves, (q, k, v), past = cached_inputs(2, 2, 1, d, np.float64, "contiguous", seed=d)
    q_leaf, k_leaf, v_leaf, past_k, past_v = leaves
    assert gradcheck(lambda q, k, v, pk, pv: attention(q, k, v, past=(pk, pv))[0],
                     [q_leaf, k_leaf, v_leaf, past_k, past_v])


@pytest.mark.parametrize("fn", [attention, attention_reference])
@pytest.mark.parametrize("past, fragment", [
    ((np.zeros((1, 2, 3, 8)),), "pair"),
    (np.zeros((1, 2, 3, 8)), "pair"),
    ((np.zeros((1, 2, 3, 8)), np.zeros((1, 2, 2, 8))), "same B, H and d"),
    ((np.zeros((1, 3, 3, 8)), np.zeros((1, 3, 3, 8))), "same B, H and d"),
    ((np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3, 4))), "same B, H and d"),
    ((np.zeros((1, 2, 3, 8)), np.zeros((1, 2, 3, 16))), "same B, H and d"),
    ((np.zeros((1, 2, 3, 8), np.float32), np.zeros((1, 2, 3, 8))), "one dtype"),
])
def test_bad_kv_cache_is_refused(fn, past, fragment):
    q = k = v = np.zeros((1, 2, 4, 8))
    with pytest.raises(ValueError, match=fragment) as info:
        fn(q, k, v, past=past)
    if fragment != "pair":
        for array in past:
            assert str(array.shape) in str(info.value)


# -- what the probabilities and outputs look like -------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probabilities_rows_sum_to_one_and_masked_entries_are_exact_zeros(dtype):
    _, (q, k, v) = make_qkv("fused", 7, 8, dtype)
    out, probs = attention(q[:, :, 3:], k, v, causal=True)
    assert probs.dtype == dtype and out.dtype == dtype
    np.testing.assert_allclose(probs.sum(axis=-1), 1, rtol=1e-6 if dtype == np.float32 else 1e-14)
    allowed = causal_mask(4, 7)
    assert np.all(probs[..., ~allowed] == 0)
    assert np.all(probs[..., allowed] > 0)
    assert out.data.flags.c_contiguous
    assert not probs.flags.writeable  # the backward needs them unchanged


def test_causal_mask_places_queries_at_the_end():
    np.testing.assert_array_equal(causal_mask(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(causal_mask(3, 3), np.tril(np.ones((3, 3), bool)))


def test_scores_are_scaled_by_one_over_sqrt_d():
    """One query, two keys: P = softmax(q.k_j / sqrt(d)) written out by hand."""
    d = 4
    q = np.zeros((1, 1, 1, d)); q[..., 0] = 2.0
    k = np.zeros((1, 1, 2, d)); k[0, 0, 0, 0] = 1.0
    v = np.arange(2 * d, dtype=np.float64).reshape(1, 1, 2, d)
    out, probs = attention(q, k, v, causal=False)
    p0 = np.exp(2.0 / np.sqrt(d)) / (np.exp(2.0 / np.sqrt(d)) + 1)
    np.testing.assert_allclose(probs[0, 0, 0], [p0, 1 - p0], rtol=1e-14)
    np.testing.assert_allclose(out.data[0, 0, 0], p0 * v[0, 0, 0] + (1 - p0) * v[0, 0, 1],
                               rtol=1e-14)


def test_gradients_go_only_to_tensors_that_require_them():
    _, (q, k, v) = make_qkv("contiguous", 4, 8, np.float64)
    k.requires_grad = False
    attention(q, k, v)[0].sum().backward()
    assert q.grad is not None and v.grad is not None and k.grad is None
    with no_grad():
        out, _ = attention(q, k, v)
    assert not out.requires_grad


# -- layouts: strided views are read in place, one compiled signature per dtype ---------

def test_fused_qkv_views_reach_the_kernel_without_a_copy(monkeypatch):
    """The kernels get q, k, v as (flat, at) pairs: ``flat`` must be a view into the fused
    QKV array itself (no copy), and ``at`` must say where each view's elements are."""
    seen = []
    compiled = att._compiled

    def recording(kernel, dtype):
        function = compiled(kernel, dtype)

        def spy(*args):
            seen.append((kernel, args))
            return function(*args)
        return spy

    monkeypatch.setattr(att, "_compiled", recording)
    (qkv,), (q, k, v) = make_qkv("fused", 4, 8, np.float32)
    out, probs = attention(q, k, v)
    out.sum().backward()
    assert [kernel for kernel, _ in seen] == ["forward", "backward"]
    low, high = np.lib.array_utils.byte_bounds(qkv.data)
    for _, args in seen:
        for view, flat, at in zip((q, k, v), args[0:6:2], args[1:6:2]):
            flat_low, flat_high = np.lib.array_utils.byte_bounds(flat)
            assert low <= flat_low and flat_high <= high  # inside qkv's own memory
            assert_flat_view_reads(flat, at, view.data)
    ref_out, ref_probs = attention_reference(q, k, v)
    assert_close(out.data, ref_out.data, np.float32)


def assert_flat_view_reads(flat, at, x):
    """x[b, h, j, c] == flat[origin + b sb + h sh + j sj + c sc] for every element."""
    origin, *strides = at
    index = origin + sum(i * s for i, s in zip(np.indices(x.shape), strides))
    np.testing.assert_array_equal(flat[index], x)


def layouts_of(x):
    """The same (B, H, T, d) numbers in many layouts, all views of one array or x itself."""
    B, H, T, d = x.shape
    fused = np.zeros((B, T, 3, H, d), x.dtype)
    fused[:, :, 1] = x.transpose(0, 2, 1, 3)
    transposed = np.ascontiguousarray(x.transpose(0, 1, 3, 2))
    backwards = np.ascontiguousarray(x[:, ::-1, :, ::-1])
    return {
        "contiguous": x,
        "fused": fused[:, :, 1].transpose(0, 2, 1, 3),
        "transposed": transposed.transpose(0, 1, 3, 2),
        "negative strides": backwards[:, ::-1, :, ::-1],
        "every other row": np.repeat(x, 2, axis=2)[:, :, ::2],
        "broadcast": np.broadcast_to(x[:1], x.shape),  # stride 0 along the batch
    }


@pytest.mark.parametrize("name", ["contiguous", "fused", "transposed", "negative strides",
                                  "every other row", "broadcast"])
def test_flat_view_reads_every_layout_in_place(name):
    x = np.random.default_rng(7).standard_normal((2, 3, 4, 5)).astype(np.float32)
    view = layouts_of(x)[name]
    writeable = view.flags.writeable
    flat, at = att._flat_view(view)
    assert np.shares_memory(flat, view) and not flat.flags.writeable
    assert view.flags.writeable == writeable  # the caller's array is left as it was
    assert_flat_view_reads(flat, at, view)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["negative strides", "every other row", "broadcast"])
def test_kernel_matches_reference_on_more_layouts(name, dtype):
    """Layouts that make_qkv does not build, for q, k, v and for the output gradient."""
    rng = np.random.default_rng(8)
    q, k, v, grad = (layouts_of(rng.standard_normal((2, 3, 6, 8)).astype(dtype))[name]
                     for _ in range(4))
    results = []
    for fn in (attention, attention_reference):
        leaves = [Tensor(x, requires_grad=True) for x in (q, k, v)]  # x itself, not a copy
        out, probs = fn(*leaves, causal=True)
        out.backward(grad)
        results.append([out.data, probs] + [t.grad for t in leaves])
    for actual, expected in zip(*results):
        assert_close(actual, expected, dtype)


def spaced(x):
    """The same numbers with every row two rows apart: never read in place."""
    return np.repeat(x, 2, axis=2)[:, :, ::2]


def some_layouts(shape):
    """Arrays of ``shape`` (B, H, T, d), C-contiguous or not, all as NumPy flags them."""
    B, H, T, d = shape
    x = np.zeros(shape, np.float32)
    layouts = [x, spaced(x), np.zeros((B, H, T + 1, d), np.float32)[:, :, 1:],
               np.zeros((B, T, 3, H, d), np.float32)[:, :, 0].transpose(0, 2, 1, 3),
               np.zeros((B, T, H, d), np.float32).transpose(0, 2, 1, 3),
               np.broadcast_to(x[:1], shape), x[:, :, ::-1]]
    if H == 1:  # any stride on an axis of length 1 is still C order
        layouts.append(np.lib.stride_tricks.as_strided(x, shape, (x.strides[0], 7, *x.strides[2:])))
    return layouts


@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (1, 1, 1, 4), (5, 1, 3, 2), (1, 4, 1, 8)])
def test_pairs_end_to_end_exactly_for_c_contiguous_arrays(shape):
    B, H, T, d = shape
    for x in some_layouts(shape):
        flat, at = att._flat_view(x)
        assert att._pairs_end_to_end(at, H, T, d) == x.flags.c_contiguous, (x.strides, at)
        if x.flags.c_contiguous:  # then the (B H T, d) rows are x's rows, pair by pair
            rows = att._as_rows(flat, B * H * T, d)
            np.testing.assert_array_equal(rows.reshape(shape), x)


def test_reads_in_place_only_without_a_cache_and_with_every_input_contiguous():
    H, Tq, Tk, d = 3, 2, 5, 8
    q, k, v = (np.zeros((2, H, T, d), np.float32) for T in (Tq, Tk, Tk))
    at = {name: att._flat_view(x)[1] for name, x in (("q", q), ("k", k), ("v", v))}
    assert att._reads_in_place(0, at["q"], at["k"], at["v"], H, Tq, Tk, d)
    assert not att._reads_in_place(1, at["q"], at["k"], at["v"], H, Tq, Tk, d)  # a cache
    for name, x in (("q", q), ("k", k), ("v", v)):
        apart = dict(at, **{name: att._flat_view(spaced(x))[1]})
        assert not att._reads_in_place(0, apart["q"], apart["k"], apart["v"], H, Tq, Tk, d)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("Tq", [5, 2])
def test_rows_read_in_place_give_the_copied_rows_numbers(Tq, dtype):
    """Plain contiguous inputs are read where they are; any other layout is copied into
    scratch rows first. The arithmetic after that is the same, so every mix of the two
    (q, k, v and the output gradient g each contiguous or not) must give the numbers of
    all four copied, bit for bit, forward and backward. (``backward(g)`` would copy g into
    a contiguous array, so a g "apart" comes through a transpose, whose backward hands on
    a transposed view: the kernel then gets it with its rows not end to end.)"""
    rng = np.random.default_rng(9)
    T = 5
    q = rng.standard_normal((3, 2, Tq, 8)).astype(dtype)
    k, v = (rng.standard_normal((3, 2, T, 8)).astype(dtype) for _ in range(2))
    grad = rng.standard_normal(q.shape).astype(dtype)

    def numbers(apart):
        q_, k_, v_ = (spaced(x) if name in apart else x.copy()
                      for name, x in zip("qkv", (q, k, v)))
        leaves = [Tensor(x, requires_grad=True) for x in (q_, k_, v_)]
        out, probs = attention(*leaves, causal=True)
        if "g" in apart:  # sum(out^T * grad^T): out's gradient is grad, as a transposed view
            grad_t = np.ascontiguousarray(grad.transpose(0, 1, 3, 2))
            (out.transpose(0, 1, 3, 2) * grad_t).sum().backward()
        else:
            (out * grad).sum().backward()
        return [out.data, probs] + [t.grad for t in leaves]

    expected = numbers("qkvg")
    for apart in ("", "q", "k", "v", "g", "kv", "qg", "qkv", "kvg"):
        for actual, wanted in zip(numbers(apart), expected):
            np.testing.assert_array_equal(actual, wanted, err_msg=f"apart: {apart!r}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_compiled_signature_per_dtype(dtype):
    for layout in ("contiguous", "fused", "transposed"):
        for causal in (True, False):
            run(attention, layout, 4, 8, dtype, causal)
            run(attention, layout, 20, 8, dtype, causal, Tq=3)
    for kernel in ("forward", "backward"):
        compiled = att._compiled(kernel, np.dtype(dtype))
        if hasattr(compiled, "signatures"):  # not under NUMBA_DISABLE_JIT
            assert len(compiled.signatures) == 1


# -- bad input ------------------------------------------------------------------------

def arrays(q_shape, k_shape, v_shape, dtypes=(np.float64,) * 3):
    return [np.zeros(s, dt) for s, dt in zip((q_shape, k_shape, v_shape), dtypes)]


@pytest.mark.parametrize("fn", [attention, attention_reference])
@pytest.mark.parametrize("q_shape, k_shape, v_shape, fragment", [
    ((2, 3, 4), (2, 3, 4), (2, 3, 4), "4-D"),
    ((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 5, 8), "same B, H and d"),
    ((1, 2, 4, 8), (1, 3, 4, 8), (1, 3, 4, 8), "same B, H and d"),
    ((1, 2, 4, 8), (1, 2, 4, 4), (1, 2, 4, 4), "same B, H and d"),
    ((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 16), "same B, H and d"),  # v wider than k
    ((1, 2, 4, 8), (1, 2, 4, 8), (2, 2, 4, 8), "same B, H and d"),   # v with another B
    ((1, 2, 5, 8), (1, 2, 4, 8), (1, 2, 4, 8), "Tq <= Tk"),
    ((1, 2, 0, 8), (1, 2, 4, 8), (1, 2, 4, 8), "Tq <= Tk"),
])
def test_bad_shapes_name_every_shape(fn, q_shape, k_shape, v_shape, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        fn(*arrays(q_shape, k_shape, v_shape))
    for shape in (q_shape, k_shape, v_shape):
        assert str(shape) in str(info.value)


@pytest.mark.parametrize("dtypes", [
    (np.int64, np.int64, np.int64),
    (np.float32, np.float64, np.float32),
    (np.float64, np.float64, np.float16),
])
def test_bad_dtypes_name_every_dtype(dtypes):
    shape = (1, 2, 4, 8)
    with pytest.raises(ValueError, match="one dtype") as info:
        attention(*arrays(shape, shape, shape, dtypes))
    for dtype in dtypes:
        assert np.dtype(dtype).name in str(info.value)


@pytest.mark.parametrize("cache_layout", ["transposed", "positions reversed", "heads interleaved"])
def test_kv_cache_in_any_layout_matches_reference(cache_layout):
    """The cache's rows are read in place whatever their strides, like q, k and v."""
    P, S, Tq, d = 3, 2, 2, 8
    stored_shape, view = {
        "transposed": ((B, H, d, P), lambda t: t.transpose(0, 1, 3, 2)),  # a row's numbers apart
        "positions reversed": ((B, H, P, d), lambda t: t[:, :, ::-1]),    # a negative stride
        "heads interleaved": ((B, P, H, d), lambda t: t.transpose(0, 2, 1, 3)),
    }[cache_layout]
    stored_arrays = np.random.default_rng(11).standard_normal((2, *stored_shape))
    results = []
    for fn in (attention, attention_reference):
        leaves, (q, k, v), _ = cached_inputs(P, S, Tq, d, np.float64, "contiguous", seed=3)
        stored = [Tensor(a.copy(), requires_grad=True) for a in stored_arrays]
        out, probs = fn(q, k, v, past=(view(stored[0]), view(stored[1])))
        out.sum().backward()
        results.append((out.data, probs, [t.grad for t in leaves[:3] + stored]))
    (out, probs, grads), (ref_out, ref_probs, ref_grads) = results
    assert_close(out, ref_out, np.float64)
    assert_close(probs, ref_probs, np.float64)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_close(grad, ref_grad, np.float64)


def rows_added_in_order(weights, rows):
    """sum_j weights[j] rows[j] in float32, from 0 and row by row, rounding each step."""
    total = np.zeros(rows.shape[1], np.float32)
    for w, row in zip(weights, rows):
        total = (total + (w * row).astype(np.float32)).astype(np.float32)
    return total


def pair_in_kernel_order(Q, K, V, P, dO, causal):
    """O, dQ, dK, dV of one (batch, head) pair, float32, in the order the kernels add up:
    O[i] and dQ[i] over keys j = 0, 1, ...; dK[j] and dV[j] over the queries that saw key
    j, in query order; dP by the eight-lane dot. P (the forward's softmax, whose exp()
    NumPy cannot reproduce bit for bit) is taken from the kernel."""
    from tinygrok.lanes import dot_in_lanes

    Tq, d = Q.shape
    Tk = K.shape[0]
    scale = np.float32(1 / np.sqrt(d))
    seen = [Tk - Tq + i + 1 if causal else Tk for i in range(Tq)]
    O = np.stack([rows_added_in_order(P[i, :seen[i]], V[:seen[i]]) for i in range(Tq)])
    dS = np.zeros((Tq, Tk), np.float32)
    for i in range(Tq):
        dP = [dot_in_lanes(dO[i], V[j]) for j in range(seen[i])]
        row_dot = np.float32(0)
        for j in range(seen[i]):
            row_dot = np.float32(row_dot + dP[j] * P[i, j])
        for j in range(seen[i]):
            dS[i, j] = scale * (P[i, j] * (dP[j] - row_dot))
    dQ = np.stack([rows_added_in_order(dS[i, :seen[i]], K[:seen[i]]) for i in range(Tq)])
    saw = [[i for i in range(Tq) if j < seen[i]] for j in range(Tk)]
    dK = np.stack([rows_added_in_order(dS[saw[j], j], Q[saw[j]]) for j in range(Tk)])
    dV = np.stack([rows_added_in_order(P[saw[j], j], dO[saw[j]]) for j in range(Tk)])
    return O, dQ, dK, dV


@pytest.mark.parametrize("causal, Tq, Tn, Tp", [(True, 5, 5, 0), (False, 4, 4, 0),
                                                 (True, 2, 2, 3), (False, 1, 2, 3)])
def test_kernels_add_up_in_the_documented_order(causal, Tq, Tn, Tp):
    """Bit for bit: the output and the three gradients of every pair, against NumPy adding
    the same terms in the same order. d = 45 runs the weighted sums' 32-column, 8-column
    and single-column paths. This also fails when tinygrok/lanes.py was edited and Numba's
    cache still holds attention kernels compiled with the old code."""
    rng = np.random.default_rng(12)
    B, H, d = 2, 3, 45
    q = Tensor(rng.standard_normal((B, H, Tq, d)).astype(np.float32), requires_grad=True)
    k, v = (Tensor(rng.standard_normal((B, H, Tn, d)).astype(np.float32), requires_grad=True)
            for _ in range(2))
    past = tuple(Tensor(rng.standard_normal((B, H, Tp, d)).astype(np.float32),
                        requires_grad=True) for _ in range(2)) if Tp else None
    grad = rng.standard_normal((B, H, Tq, d)).astype(np.float32)
    out, probs = attention(q, k, v, causal=causal, past=past)
    out.backward(grad)
    keys = np.concatenate([past[0].data, k.data], axis=2) if Tp else k.data
    values = np.concatenate([past[1].data, v.data], axis=2) if Tp else v.data
    grad_keys = np.concatenate([past[0].grad, k.grad], axis=2) if Tp else k.grad
    grad_values = np.concatenate([past[1].grad, v.grad], axis=2) if Tp else v.grad
    for b in range(B):
        for h in range(H):
            O, dQ, dK, dV = pair_in_kernel_order(q.data[b, h], keys[b, h], values[b, h],
                                                 probs[b, h], grad[b, h], causal)
            np.testing.assert_array_equal(out.data[b, h], O)
            np.testing.assert_array_equal(q.grad[b, h], dQ)
            np.testing.assert_array_equal(grad_keys[b, h], dK)
            np.testing.assert_array_equal(grad_values[b, h], dV)


def test_causal_must_be_a_bool():
    q = np.zeros((1, 1, 2, 4))
    with pytest.raises(TypeError, match="causal must be True or False, got 'no'"):
        attention(q, q, q, causal="no")  # bool("no") is True: it would have masked


# -- pinned by a mutation run of the kernels: the softmax's shift by the row's largest score
# -- was never tested where it matters, on scores far apart -------------------------------

@pytest.mark.parametrize("largest", ["first", "last"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype, spread", [(np.float32, 1000.0), (np.float64, 5000.0)])
def test_scores_far_apart_give_finite_exact_probabilities(dtype, spread, causal, largest):
    """Scores hundreds (float32) or thousands (float64) apart, each row's largest on the
    first or the last key the query sees: without the shift, or with a shift that misses
    one of those keys or is not scaled, e^score overflows and the row turns to NaN."""
    T, d = 4, 8
    q = np.zeros((1, 1, T, d), dtype)
    q[..., 0] = spread
    k = np.zeros((1, 1, T, d), dtype)
    k[..., 0] = np.arange(T) if largest == "last" else np.arange(T)[::-1]  # x spread/sqrt(d)
    v = np.random.default_rng(50).standard_normal((1, 1, T, d)).astype(dtype)
    with no_grad():
        out, probs = attention(Tensor(q), Tensor(k), Tensor(v), causal=causal)
        ref_out, ref_probs = attention_reference(Tensor(q), Tensor(k), Tensor(v),
                                                 causal=causal)
    assert np.all(np.isfinite(out.data)) and np.all(np.isfinite(probs))
    if largest == "first":
        np.testing.assert_array_equal(probs.argmax(-1)[0, 0], 0)
    else:
        np.testing.assert_array_equal(probs.argmax(-1)[0, 0], np.arange(T) if causal else T - 1)
    assert_close(probs, ref_probs, dtype)
    assert_close(out.data, ref_out.data, dtype)
