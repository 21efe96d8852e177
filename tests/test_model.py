"""The paper's transformer: exact shortcut, gradients, attention, causality, state dicts."""

import numpy as np
import pytest

from tinygrok import autograd as ag
from tinygrok.autograd import Tensor, no_grad
from tinygrok.gradcheck import gradcheck
from tinygrok.model import MultiHeadAttention, Transformer, distinct_rows
from tinygrok.nn import Embedding, Linear

SMALL = dict(vocab_size=7, num_classes=5, d_model=8, heads=2, layers=2)


def small_model(dtype=np.float64, seed=0, **overrides):
    return Transformer(**{**SMALL, **overrides}, seed=seed, dtype=dtype)


def tokens_for(batch, vocab=7, seed=1):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, vocab, size=(batch, 4))
    tokens[:, 1], tokens[:, 3] = 0, 1
    return tokens


def test_default_model_matches_the_paper():
    model = Transformer(vocab_size=99, num_classes=97)
    state = model.state_dict()
    assert state["token_embeddings.weight"].shape == (99, 128)
    assert state["position_embeddings.weight"].shape == (5, 128)
    assert state["blocks.1.attn.in_proj_weight"].shape == (384, 128)
    assert state["blocks.0.mlp.fc1.weight"].shape == (512, 128)
    assert state["head.weight"].shape == (97, 128)
    assert "blocks.2.attn.in_proj_bias" not in state
    assert all(a.dtype == np.float32 for a in state.values())


def test_parameter_names_are_pytorchs():
    names = list(small_model(layers=1).state_dict())
    assert names == [
        "token_embeddings.weight", "position_embeddings.weight",
        "blocks.0.attn.in_proj_weight", "blocks.0.attn.in_proj_bias",
        "blocks.0.attn.out_proj.weight", "blocks.0.attn.out_proj.bias",
        "blocks.0.attn_norm.weight", "blocks.0.attn_norm.bias",
        "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias",
        "blocks.0.mlp.fc2.weight", "blocks.0.mlp.fc2.bias",
        "blocks.0.mlp_norm.weight", "blocks.0.mlp_norm.bias",
        "norm.weight", "norm.bias", "head.weight", "head.bias"]


def test_initialisation_follows_pytorch_defaults():
    model = Transformer(vocab_size=99, num_classes=97, seed=3)
    s = model.state_dict()
    assert abs(s["token_embeddings.weight"].std() - 1) < 0.05  # N(0, 1)
    bound = np.sqrt(6 / (128 + 384))  # Xavier-uniform of a (384, 128) matrix
    w = s["blocks.0.attn.in_proj_weight"]
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert not s["blocks.0.attn.in_proj_bias"].any() and not s["blocks.0.attn.out_proj.bias"].any()
    fc2 = s["blocks.0.mlp.fc2.weight"]  # U(-1/sqrt(512), 1/sqrt(512))
    assert np.abs(fc2).max() <= 1 / np.sqrt(512) and np.abs(fc2).max() > 0.95 / np.sqrt(512)
    assert np.all(s["norm.weight"] == 1) and not s["norm.bias"].any()


def test_last_position_shortcut_is_exact():
    model = small_model(seed=4)
    tokens = tokens_for(6)
    with no_grad():
        fast = model(tokens).data
        full, patterns = model(tokens, return_attention=True)
    np.testing.assert_allclose(fast, full.data, rtol=1e-12, atol=1e-14)
    assert [p.shape for p in patterns] == [(6, 2, 4, 4), (6, 2, 4, 4)]


def test_shortcut_is_exact_in_float32_default_model():
    model = Transformer(vocab_size=99, num_classes=97, seed=5)
    tokens = tokens_for(32, vocab=99)
    with no_grad():
        fast = model(tokens).data
        full, _ = model(tokens, return_attention=True)
    np.testing.assert_allclose(fast, full.data, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [1, 3])  # with 1, block 0 is also the last block
@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_shared_prefix_forward_equals_plain_forward(T, layers):
    # random tokens, many sharing their prefix (vocab 4), any length up to max_len
    model = small_model(seed=11, layers=layers)
    tokens = np.random.default_rng(T).integers(0, 4, size=(40, T))
    with no_grad():
        fast = model(tokens).data
        plain, _ = model.forward_plain(tokens)
    np.testing.assert_allclose(fast, plain.data, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("layers", [1, 2])
def test_shared_prefix_gradients_equal_plain_gradients(layers):
    model = small_model(seed=12, layers=layers)
    tokens, labels = tokens_for(30, vocab=5), np.arange(30) % 5  # x repeats: 3 prefixes
    grads = {}
    for name, forward in (("fast", model.forward), ("plain", lambda t: model.forward_plain(t)[0])):
        model.zero_grad()
        ag.cross_entropy(forward(tokens), labels).backward()
        grads[name] = [p.grad.copy() for p in model.parameters()]
    for fast, plain in zip(grads["fast"], grads["plain"]):
        np.testing.assert_allclose(fast, plain, rtol=1e-10, atol=1e-13)


def test_first_block_projects_each_distinct_prefix_and_suffix_once():
    # 40 examples, but only 3 different x (prefixes) and 4 different y (suffixes)
    model = small_model(seed=13)
    rng = np.random.default_rng(3)
    tokens = tokens_for(40)
    tokens[:, 0], tokens[:, 2] = rng.integers(2, 5, 40), rng.integers(2, 6, 40)
    rows_projected = []
    project = model.blocks[0].attn._project

    def spy(x, part, row_of=None):
        rows_projected.append(x.shape[:2])  # (rows, positions)
        return project(x, part, row_of)

    model.blocks[0].attn._project = spy  # this model only
    with no_grad():
        fast = model(tokens).data
        plain, _ = model.forward_plain(tokens)
    np.testing.assert_allclose(fast, plain.data, rtol=1e-12, atol=1e-13)
    # q, k, v of the 3 prefixes [x, o], of the 4 suffixes [y, =], then the plain pass's 40
    # examples. (A shorter prefix, [x] and [o, y, =], gives the same logits more slowly.)
    assert rows_projected == [(3, 2)] * 3 + [(4, 2)] * 3 + [(40, 4)] * 3


def test_the_shortcuts_attend_with_the_fewest_queries_and_keys(monkeypatch):
    """The shortcuts give the plain logits, so a test of values alone cannot tell whether
    one of them still saves its work. This one counts the attention calls' queries and
    keys: the prefix [x, o] once in the first block; then [y, =] attending to the cached
    prefix in the first block; and in the last block only the "=" query."""
    import tinygrok.model as model_module

    calls, real_attention = [], model_module.attention

    def counting_attention(q, k, v, causal, past=None):
        calls.append((q.shape[2], k.shape[2], 0 if past is None else past[0].shape[2]))
        return real_attention(q, k, v, causal=causal, past=past)

    monkeypatch.setattr(model_module, "attention", counting_attention)
    model = small_model()
    with no_grad():
        model(tokens_for(20))
    # (queries, new keys, cached keys) per call
    assert calls == [(2, 2, 0), (2, 2, 2), (1, 2, 2)]


def test_repeated_examples_run_once_and_each_draw_gets_its_logits():
    # 12 draws of 5 different examples, as a batch drawn with replacement holds repeats
    model = small_model(seed=14)
    distinct = tokens_for(5, seed=4)
    assert len(distinct_rows(distinct)[0]) == 5
    draws = np.array([3, 0, 3, 1, 4, 4, 2, 3, 0, 1, 2, 4])
    tokens, labels = distinct[draws], draws % SMALL["num_classes"]
    seen = []
    forward_distinct = model.forward_distinct

    def spy(rows):
        seen.append(rows.copy())
        return forward_distinct(rows)

    model.forward_distinct = spy  # this model only
    logits = model.forward(tokens)
    assert len(seen) == 1 and len(distinct_rows(seen[0])[0]) == len(seen[0]) == 5
    with no_grad():
        plain, _ = model.forward_plain(tokens)
    np.testing.assert_allclose(logits.data, plain.data, rtol=1e-12, atol=1e-13)
    # the gradients: each repeat's share added up, as if every draw had run on its own
    grads = {}
    for name, run in (("fast", lambda: logits), ("plain", lambda: model.forward_plain(tokens)[0])):
        model.zero_grad()
        ag.cross_entropy(run(), labels).backward()
        grads[name] = [p.grad.copy() for p in model.parameters()]
    for fast, plain_grad in zip(grads["fast"], grads["plain"]):
        np.testing.assert_allclose(fast, plain_grad, rtol=1e-10, atol=1e-13)
    # a batch with no repeats goes straight through, in its own order
    seen.clear()
    model.forward(distinct)
    assert len(seen) == 1 and np.array_equal(seen[0], distinct)


@pytest.mark.parametrize("return_attention", [False, True])
def test_loss_gradient_wrt_every_parameter(return_attention):
    # smaller still than SMALL: every parameter element costs two forward passes
    model = Transformer(vocab_size=6, num_classes=4, d_model=4, heads=2, layers=2, seed=6,
                        dtype=np.float64)
    tokens, labels = tokens_for(4, vocab=6), np.array([0, 3, 2, 1])
    tokens[3, 0] = tokens[0, 0]  # two examples share a prefix: its cache gets two gradients
    tokens[2] = tokens[1]  # a repeated example: its logits are copied to two rows
    assert len(distinct_rows(tokens)[0]) == 3 and len(distinct_rows(tokens[:, :2])[0]) == 2
    params = model.parameters()

    def loss(*_):
        logits = model(tokens, return_attention=return_attention)
        logits = logits[0] if return_attention else logits
        return ag.cross_entropy(logits, labels)

    assert gradcheck(loss, params, atol=1e-7, rtol=1e-5)
    model.zero_grad()
    loss().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in params)


@pytest.mark.parametrize("layers", [1, 3])
def test_loss_gradient_through_the_shortcuts_with_one_and_three_blocks(layers):
    """With one block, that block does everything at once: each suffix projected once, the
    prefix's cache, and the last query only. With three, a middle block does none of them."""
    model = Transformer(vocab_size=6, num_classes=4, d_model=4, heads=2, layers=layers,
                        seed=8, dtype=np.float64)
    tokens, labels = tokens_for(5, vocab=6, seed=3), np.array([0, 3, 2, 1, 1])
    tokens[3, 0] = tokens[0, 0]  # a shared prefix
    tokens[4] = tokens[1]  # a repeated example
    assert len(distinct_rows(tokens)[0]) == 4

    def loss(*_):
        return ag.cross_entropy(model(tokens), labels)

    assert gradcheck(loss, model.parameters(), atol=1e-7, rtol=1e-5)


def test_attention_rows_sum_to_one_and_are_causal():
    model = small_model(seed=7)
    with no_grad():
        _, patterns = model(tokens_for(5), return_attention=True)
    for p in patterns:
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
        assert np.all(p[..., np.triu_indices(4, k=1)[0], np.triu_indices(4, k=1)[1]] == 0)


def _activations(model, tokens):
    """Every block's output (B, T, d) and attention, computed through the full path."""
    x = model.embed(tokens)
    outputs = []
    for block in model.blocks:
        x, probs, _ = block(x)
        outputs.append((x.data, probs))
    return outputs


def test_changing_a_later_token_never_changes_earlier_positions():
    model = small_model(seed=8)
    tokens = tokens_for(4)
    with no_grad():
        for position in range(1, 4):
            changed = tokens.copy()
            changed[:, position] = (changed[:, position] + 1) % 7
            for (x, p), (x2, p2) in zip(_activations(model, tokens), _activations(model, changed)):
                np.testing.assert_array_equal(x[:, :position], x2[:, :position])
                np.testing.assert_array_equal(p[:, :, :position], p2[:, :, :position])
                assert not np.array_equal(x[:, position:], x2[:, position:])


def test_state_dict_round_trip_and_refusals():
    a, b = small_model(seed=9), small_model(seed=10)
    tokens = tokens_for(3)
    b.load_state_dict(a.state_dict())
    with no_grad():
        np.testing.assert_array_equal(a(tokens).data, b(tokens).data)
    state = a.state_dict()
    with pytest.raises(ValueError, match="missing: head.bias"):
        b.load_state_dict({k: v for k, v in state.items() if k != "head.bias"})
    with pytest.raises(ValueError, match="unknown: extra.weight"):
        b.load_state_dict({**state, "extra.weight": np.zeros(3)})
    with pytest.raises(ValueError, match=r"wrong shape: norm.bias \(expected \(8,\), got \(9,\)\)"):
        b.load_state_dict({**state, "norm.bias": np.zeros(9)})
    with pytest.raises(ValueError, match=r"wrong shape: head.bias \(expected \(5,\), got "
                                         r"\(1, 5\)\)"):  # as many numbers, another shape
        b.load_state_dict({**state, "head.bias": state["head.bias"].reshape(1, -1)})
    # a Tensor or text among the values: refused before any parameter is overwritten
    before = b.state_dict()
    with pytest.raises(ValueError, match=r"not numbers: head.weight \(a Tensor: give its "
                                         r"\.data\), norm.bias \(<U1\)"):
        b.load_state_dict({**state, "head.weight": a.head.weight,
                           "norm.bias": np.array(["x"] * 8)})
    assert all(np.array_equal(b.state_dict()[k], before[k]) for k in before)


def test_load_state_dict_refuses_booleans_as_weights():
    """np.asarray(True) is a number to NumPy, but a bool array is no trained weight (a mask
    saved under a parameter's name, say): it would load as zeros and ones."""
    model = small_model()
    state = model.state_dict()
    state["head.bias"] = np.ones(state["head.bias"].shape, dtype=bool)
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"not numbers: head.bias \(bool\)"):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_float32_model_stays_float32():
    model = small_model(dtype=np.float32, seed=11)
    loss, logits = model.loss(tokens_for(4), np.array([0, 1, 2, 3]))
    loss.backward()
    assert loss.dtype == np.float32 and logits.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in model.parameters())


def test_bad_configuration_and_input_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        Transformer(vocab_size=7, num_classes=5, d_model=10, heads=4)
    for dtype in (np.int64, np.float16):  # an int64 model used to come out float64
        with pytest.raises(ValueError, match="dtype must be float32 or float64"):
            Transformer(vocab_size=7, num_classes=5, d_model=8, heads=2, dtype=dtype)
    with pytest.raises(ValueError, match="shape"):
        small_model()(np.zeros((2, 6), dtype=int))


@pytest.mark.parametrize("shape, high, dtype", [
    ((512, 2), 99, np.int64), ((40, 1), 7, np.uint8), ((33, 3), 1000, np.int32),
    ((0, 2), 5, np.int64), ((6, 2), 1, np.int64), ((3, 0), 1, np.int64),
    ((300, 8), 200, np.uint64),    # 200**8 < 2**63: the largest codes that still fit
    ((300, 12), 200, np.int64)])   # 200**12 does not: np.unique itself
def test_distinct_rows_equals_numpys_unique_rows(shape, high, dtype):
    tokens = np.random.default_rng(high).integers(0, high, size=shape).astype(dtype)
    if shape[0] > 100:  # make sure some rows repeat
        tokens[shape[0] // 2:] = tokens[:shape[0] - shape[0] // 2]
    rows, index = distinct_rows(tokens)
    expected_rows, expected_index = np.unique(tokens, axis=0, return_inverse=True)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(index, expected_index.reshape(-1))
    np.testing.assert_array_equal(rows[index], tokens)


def test_distinct_rows_is_sorted_where_the_packed_rows_would_pass_int64():
    """60000**4 lies between 2**63 and 2**64: packing each row into one integer would
    overflow int64 there, so such rows must take np.unique's path and still come out
    sorted."""
    tokens = np.array([[59999, 0, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4]])
    rows, index = distinct_rows(tokens)
    expected_rows, expected_index = np.unique(tokens, axis=0, return_inverse=True)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(index, expected_index.reshape(-1))


def test_tokens_outside_the_vocabulary_are_refused():
    model = small_model()
    for bad in ([[0, 1, 7, 1]], [[0, 1, -1, 1]]):
        with pytest.raises(ValueError, match=r"\[0, 7\), got values from"):
            model(np.array(bad))
    with pytest.raises(ValueError, match="integer ids"):
        model(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="1 <= T"):
        model(np.zeros((2, 0), dtype=int))


def test_shortcuts_are_exact_for_long_rows_of_large_tokens():
    # a prefix of 10 tokens out of 200: too long for distinct_rows' integer codes
    model = Transformer(vocab_size=200, num_classes=5, d_model=8, heads=2, layers=2,
                        max_len=12, dtype=np.float64)
    tokens = np.random.default_rng(4).integers(0, 200, size=(30, 12))
    tokens[15:, :10] = tokens[:15, :10]  # shared prefixes
    with no_grad():
        fast = model(tokens).data
        plain, _ = model.forward_plain(tokens)
    np.testing.assert_allclose(fast, plain.data, rtol=1e-12, atol=1e-13)


# -- pinned by a mutation run of the maths core: the tests above compare the model's fast
# -- path with its own plain path, so a change to the architecture in both went unnoticed
# -- (only the optional PyTorch test would see it) -----------------------------------------

def reference_logits(state: dict, tokens: np.ndarray, heads: int) -> np.ndarray:
    """The model of model.py's docstring, written again in plain float64 NumPy from its
    state_dict: token + position embeddings, post-LayerNorm blocks of causal multi-head
    attention and a GELU MLP, a final LayerNorm and the head read at the last position."""
    from math import erf

    def layer_norm(x, name):
        centred = x - x.mean(-1, keepdims=True)
        normed = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-5)
        return normed * state[f"{name}.weight"] + state[f"{name}.bias"]

    def linear(x, name):
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def gelu(x):  # exact: x Phi(x)
        return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))

    B, T = tokens.shape
    x = state["token_embeddings.weight"][tokens] + state["position_embeddings.weight"][:T]
    d = x.shape[-1]
    for i in range(sum(1 for k in state if k.endswith("attn.in_proj_weight"))):
        block = f"blocks.{i}"
        qkv = x @ state[f"{block}.attn.in_proj_weight"].T + state[f"{block}.attn.in_proj_bias"]
        q, k, v = (qkv[..., j * d:(j + 1) * d].reshape(B, T, heads, d // heads)
                   .transpose(0, 2, 1, 3) for j in range(3))  # (B, H, T, d/H)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
        scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)  # causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attended = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
        h = layer_norm(x + linear(attended, f"{block}.attn.out_proj"), f"{block}.attn_norm")
        mlp = linear(gelu(linear(h, f"{block}.mlp.fc1")), f"{block}.mlp.fc2")
        x = layer_norm(h + mlp, f"{block}.mlp_norm")
    return linear(layer_norm(x[:, -1], "norm"), "head")


@pytest.mark.parametrize("layers", [1, 2])
def test_the_model_computes_its_docstrings_equations(layers):
    model = small_model(seed=12, layers=layers)
    rng = np.random.default_rng(13)
    for p in model.parameters():  # biases and norms away from their zero/one start, each
        p.data += rng.standard_normal(p.shape) * 0.1  # its own (so no two norms are equal)
    tokens = tokens_for(6)
    expected = reference_logits(model.state_dict(), tokens, heads=SMALL["heads"])
    with no_grad():
        np.testing.assert_allclose(model(tokens).data, expected, rtol=1e-10, atol=1e-12)
        logits, _ = model(tokens, return_attention=True)
        np.testing.assert_allclose(logits.data, expected, rtol=1e-10, atol=1e-12)


def test_linear_initialises_weight_and_bias_as_pytorch_does():
    from tinygrok.nn import Linear

    layer = Linear(64, 256, np.random.default_rng(14))
    bound = 1 / np.sqrt(64)  # U(-1/sqrt(in), 1/sqrt(in)) for both
    for values in (layer.weight.data, layer.bias.data):
        assert values.min() >= -bound and values.max() <= bound
        assert values.min() < -0.9 * bound and values.max() > 0.9 * bound


def test_layer_norm_module_has_pytorchs_eps_and_uses_the_one_given():
    from tinygrok.nn import LayerNorm

    assert LayerNorm(4).eps == 1e-5
    x = Tensor(np.random.default_rng(15).standard_normal((3, 4)))
    centred = x.data - x.data.mean(-1, keepdims=True)
    expected = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 0.5)
    np.testing.assert_allclose(LayerNorm(4, np.float64, eps=0.5)(x).data, expected, rtol=1e-12)


def test_state_dict_is_a_copy_and_load_state_dict_copies_in_keeping_the_dtype():
    model = small_model(dtype=np.float32, seed=16)
    saved = model.state_dict()
    before = saved["head.bias"].copy()
    model.head.bias.data += 1  # training goes on after the checkpoint
    np.testing.assert_array_equal(saved["head.bias"], before)
    state = {k: v.astype(np.float64) for k, v in saved.items()}
    model.load_state_dict(state)
    assert all(p.dtype == np.float32 for p in model.parameters())
    model.head.bias.data += 1
    np.testing.assert_array_equal(state["head.bias"], before.astype(np.float64))


def test_a_frozen_parameter_is_still_a_parameter_and_adamw_leaves_it_alone():
    # As in PyTorch: requires_grad = False freezes a parameter (say, the embeddings, a
    # common grokking experiment) without hiding it from the state dict or the count.
    from tinygrok.adamw import AdamW
    model = small_model(dtype=np.float64, seed=17)
    names = [name for name, _ in model.named_parameters()]
    count = model.num_parameters()
    model.token_embeddings.weight.requires_grad = False
    assert [name for name, _ in model.named_parameters()] == names
    assert "token_embeddings.weight" in model.state_dict()
    assert model.num_parameters() == count == sum(p.size for p in model.state_dict().values())
    model.load_state_dict(model.state_dict())  # a frozen model's state loads back
    frozen, head = model.token_embeddings.weight.data.copy(), model.head.weight.data.copy()
    optimizer = AdamW(model.parameters(), lr=1e-2, warmup_steps=0)
    model.zero_grad()
    model.loss(np.array([[1, 0, 2, 3], [2, 0, 1, 3]]), np.array([0, 1]))[0].backward()
    assert model.token_embeddings.weight.grad is None
    optimizer.step()
    np.testing.assert_array_equal(model.token_embeddings.weight.data, frozen)
    assert not np.array_equal(model.head.weight.data, head)  # the others did train


@pytest.mark.parametrize("make, error, says", [
    (lambda: Linear(3, 4, 0), TypeError, "rng must be a numpy.random.Generator"),
    (lambda: Linear(0, 4, np.random.default_rng(0)), ValueError, "positive integers"),
    (lambda: Embedding(5, 2.0, np.random.default_rng(0)), ValueError, "positive integers"),
    (lambda: MultiHeadAttention(8, 0, np.random.default_rng(0)), ValueError, "positive"),
    (lambda: Transformer(9, 7, d_model=8.0), ValueError, "d_model must be a positive integer"),
    (lambda: Transformer(9, 7, d_model=8, heads=True), ValueError, "heads must be a positive"),
    (lambda: Transformer(9, 7, d_model=8, heads=2, seed=-1), ValueError, "seed must be an "
                                                                          "integer >= 0"),
    (lambda: Transformer(9, 7, d_model=8, heads=2, seed=True), ValueError, "seed must be")],
    ids=["int-rng", "zero-size", "float-size", "zero-heads", "float-d", "bool-heads",
         "negative-seed", "bool-seed"])
def test_layers_refuse_sizes_and_seeds_that_are_not_what_they_need(make, error, says):
    # each failed deep inside NumPy (or ZeroDivisionError), or was accepted (heads=True)
    with pytest.raises(error, match=says):
        make()
