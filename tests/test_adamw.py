"""Tests for tinygrok.adamw: hand-computed steps, warm-up, in-place updates, state round trip."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from tinygrok.adamw import AdamW, warmup_factor
from tinygrok.autograd import Tensor

LR, WD, B1, B2, EPS = 0.01, 0.5, 0.9, 0.98, 1e-8
GRADS = [[0.5, -1.0], [0.1, 0.3], [-0.2, 0.0]]          # the gradients of steps 1, 2, 3


def param(values, dtype=np.float64):
    return SimpleNamespace(data=np.array(values, dtype=dtype), grad=None)


def run_three_steps(warmup_steps):
    p = param([1.0, -2.0])
    opt = AdamW([p], lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD, warmup_steps=warmup_steps)
    after = []
    for g in GRADS:
        p.grad = np.array(g)
        opt.step()
        after.append(p.data.copy())
    return after, opt


def test_three_steps_by_hand_without_warmup():
    after, _ = run_three_steps(warmup_steps=0)
    # Step 1, g = [0.5, -1.0]: m = 0.1 g and v = 0.02 g^2, so m^ = g and v^ = g^2:
    # the first Adam step moves each weight by lr * g / (|g| + eps), i.e. almost exactly lr.
    p1 = [1.0 * (1 - LR * WD) - LR * 0.5 / (0.5 + EPS),
          -2.0 * (1 - LR * WD) - LR * -1.0 / (1.0 + EPS)]
    assert p1 == pytest.approx([0.985, -1.98], abs=1e-9)
    m1, v1 = [0.1 * 0.5, 0.1 * -1.0], [0.02 * 0.25, 0.02 * 1.0]
    # Step 2, g = [0.1, 0.3], bias corrections 1 - 0.9^2 and 1 - 0.98^2.
    m2 = [0.9 * m1[0] + 0.1 * 0.1, 0.9 * m1[1] + 0.1 * 0.3]
    v2 = [0.98 * v1[0] + 0.02 * 0.1 ** 2, 0.98 * v1[1] + 0.02 * 0.3 ** 2]
    p2 = [p1[i] * (1 - LR * WD)
          - LR * (m2[i] / (1 - 0.9 ** 2)) / (math.sqrt(v2[i] / (1 - 0.98 ** 2)) + EPS)
          for i in range(2)]
    # Step 3, g = [-0.2, 0.0]: the second weight still moves, carried by its momentum m.
    m3 = [0.9 * m2[0] + 0.1 * -0.2, 0.9 * m2[1] + 0.1 * 0.0]
    v3 = [0.98 * v2[0] + 0.02 * 0.04, 0.98 * v2[1] + 0.02 * 0.0]
    p3 = [p2[i] * (1 - LR * WD)
          - LR * (m3[i] / (1 - 0.9 ** 3)) / (math.sqrt(v3[i] / (1 - 0.98 ** 3)) + EPS)
          for i in range(2)]
    for got, want in zip(after, [p1, p2, p3]):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


def test_three_steps_by_hand_with_warmup_2():
    after, opt = run_three_steps(warmup_steps=2)
    # Step 1 has lr 0 (factor 0/2): the weights do not move at all, not even by decay ...
    assert after[0].tolist() == [1.0, -2.0]
    # ... but the moments are updated and t counts, as with torch's AdamW + LambdaLR.
    m1, v1 = [0.1 * 0.5, 0.1 * -1.0], [0.02 * 0.25, 0.02 * 1.0]
    # Step 2 has lr = 0.01 * 1/2, and bias corrections for t = 2.
    lr2 = LR * 0.5
    m2 = [0.9 * m1[0] + 0.1 * 0.1, 0.9 * m1[1] + 0.1 * 0.3]
    v2 = [0.98 * v1[0] + 0.02 * 0.1 ** 2, 0.98 * v1[1] + 0.02 * 0.3 ** 2]
    p2 = [[1.0, -2.0][i] * (1 - lr2 * WD)
          - lr2 * (m2[i] / (1 - 0.9 ** 2)) / (math.sqrt(v2[i] / (1 - 0.98 ** 2)) + EPS)
          for i in range(2)]
    # Step 3 has the full lr (factor min(2/2, 1) = 1), t = 3.
    m3 = [0.9 * m2[0] + 0.1 * -0.2, 0.9 * m2[1] + 0.1 * 0.0]
    v3 = [0.98 * v2[0] + 0.02 * 0.04, 0.98 * v2[1] + 0.02 * 0.0]
    p3 = [p2[i] * (1 - LR * WD)
          - LR * (m3[i] / (1 - 0.9 ** 3)) / (math.sqrt(v3[i] / (1 - 0.98 ** 3)) + EPS)
          for i in range(2)]
    np.testing.assert_allclose(after[1], p2, rtol=1e-13, atol=0)
    np.testing.assert_allclose(after[2], p3, rtol=1e-13, atol=0)
    np.testing.assert_allclose(opt.m[0], m3, rtol=1e-13)
    np.testing.assert_allclose(opt.v[0], v3, rtol=1e-13)
    assert opt.step_count == 3 and opt.param_steps.tolist() == [3]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_gradient_only_decays(dtype):
    p = param([1.5, -0.25, 3.0], dtype)
    opt = AdamW([p], lr=1e-3, weight_decay=0.5, warmup_steps=2)
    for _ in range(2):                                   # through the warm-up
        p.grad = np.zeros_like(p.data)
        opt.step()
    shrink = dtype(1 - 1e-3 * 0.5)
    for _ in range(5):
        expected = p.data * shrink
        p.grad = np.zeros_like(p.data)
        opt.step()
        assert np.array_equal(p.data, expected)          # exactly, bit for bit


def test_grad_none_leaves_parameter_untouched_and_keeps_its_own_t():
    a, b = param([1.0, 2.0]), param([3.0])
    opt = AdamW([a, b], lr=0.1, warmup_steps=0)
    b.grad = np.array([0.7])
    opt.step()                                           # a has no gradient: skipped
    assert a.data.tolist() == [1.0, 2.0]
    assert not opt.m[0].any() and not opt.v[0].any()
    assert opt.step_count == 1 and opt.param_steps.tolist() == [0, 1]
    # a's first real update uses t = 1, so it equals a fresh optimizer's first step.
    a.grad = np.array([0.3, -0.4])
    opt.step()
    fresh = param([1.0, 2.0])
    fresh.grad = a.grad.copy()
    AdamW([fresh], lr=0.1, warmup_steps=0).step()
    assert np.array_equal(a.data, fresh.data)


def test_float32_stays_float32_and_updates_in_place():
    rng = np.random.default_rng(0)
    p = param(rng.standard_normal((4, 3)), np.float32)
    data_before = p.data
    opt = AdamW([p], lr=0.01, warmup_steps=0)
    m_before, v_before = opt.m[0], opt.v[0]
    for _ in range(3):
        p.grad = rng.standard_normal((4, 3)).astype(np.float32)
        opt.step()
    assert p.data is data_before and np.shares_memory(p.data, data_before)
    assert opt.m[0] is m_before and opt.v[0] is v_before
    assert p.data.dtype == opt.m[0].dtype == opt.v[0].dtype == np.float32


def test_float32_close_to_float64():
    rng = np.random.default_rng(1)
    start, grads = rng.standard_normal(10), rng.standard_normal((20, 10))
    results = []
    for dtype in (np.float32, np.float64):
        p = param(start, dtype)
        opt = AdamW([p], lr=0.01, warmup_steps=5)
        for g in grads:
            p.grad = g.astype(dtype)
            opt.step()
        results.append(p.data)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)


def make_params(seed):
    rng = np.random.default_rng(seed)
    return [param(rng.standard_normal(shape), np.float32) for shape in [(3, 4), (4,), (2, 2, 2)]]


def steps(params, opt, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g
        opt.step()


def test_state_dict_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(2)
    params = make_params(0)
    grads = [[rng.standard_normal(p.data.shape).astype(np.float32) for p in params]
             for _ in range(10)]
    opt = AdamW(params, lr=0.01, warmup_steps=3)
    steps(params, opt, grads[:5])
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    copies = [param(p.data.copy(), np.float32) for p in params]
    opt2 = AdamW(copies, lr=123.0, weight_decay=0.0, warmup_steps=0)   # overwritten by load
    with np.load(tmp_path / "opt.npz") as saved:
        opt2.load_state_dict(saved)
    assert opt2.current_lr() == opt.current_lr() and opt2.step_count == 5
    steps(params, opt, grads[5:])
    steps(copies, opt2, grads[5:])
    for p, q in zip(params, copies):
        assert np.array_equal(p.data, q.data)


def test_state_dict_is_a_copy_and_mismatches_are_clear():
    params = make_params(0)
    opt = AdamW(params)
    state = opt.state_dict()
    opt.m[0][...] = 1.0
    assert not state["m_0"].any()
    with pytest.raises(ValueError, match="state has 3 parameters, this optimizer has 2"):
        AdamW(params[:2]).load_state_dict(state)
    bad = dict(state, v_1=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"'v_1' has shape \(5,\), expected \(4,\)"):
        opt.load_state_dict(bad)
    assert opt.m[0].all()                                 # a failed load changed nothing


def test_warmup_factor_and_current_lr():
    assert [warmup_factor(t, 50) for t in (0, 1, 25, 50, 51, 7500)] == [0, 0.02, 0.5, 1, 1, 1]
    assert warmup_factor(0, 0) == 1.0
    p = param([1.0])
    opt = AdamW([p])                                      # defaults: lr 1e-3, warm-up 50
    lrs = []
    for _ in range(52):
        lrs.append(opt.current_lr())
        p.grad = np.array([1.0])
        opt.step()
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(2e-5) and lrs[25] == pytest.approx(5e-4)
    assert lrs[50] == lrs[51] == 1e-3
    opt.zero_grad()
    assert p.grad is None


@pytest.mark.parametrize("kwargs, bad", [
    (dict(lr=-1e-3), "lr=-0.001"), (dict(lr=float("nan")), "lr=nan"),
    (dict(betas=(1.0, 0.98)), "beta1=1.0"), (dict(betas=(0.9, -0.1)), "beta2=-0.1"),
    (dict(eps=0.0), "eps=0.0"), (dict(weight_decay=-0.5), "weight_decay=-0.5"),
    (dict(warmup_steps=-1), "warmup_steps=-1"), (dict(warmup_steps=2.5), "warmup_steps=2.5")])
def test_bad_hyperparameters_are_named(kwargs, bad):
    with pytest.raises(ValueError, match=f"invalid {bad}"):
        AdamW([param([1.0])], **kwargs)


def test_empty_parameter_list_is_rejected():
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([])


def test_matches_torch_adamw_with_lambdalr():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    shapes = [(5, 3), (7,), (2, 3, 4)]
    ours = [param(rng.standard_normal(s)) for s in shapes]
    theirs = [torch.nn.Parameter(torch.tensor(p.data.copy())) for p in ours]
    opt = AdamW(ours, warmup_steps=5, lr=1e-2)
    topt = torch.optim.AdamW(theirs, lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(topt, lambda t: min(t / 5, 1))
    for _ in range(20):
        for p, tp in zip(ours, theirs):
            p.grad = rng.standard_normal(p.data.shape)
            tp.grad = torch.tensor(p.grad.copy())
        opt.step()
        topt.step()
        sched.step()
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=0, atol=1e-6)


def test_parameters_that_cannot_be_updated_are_refused():
    t = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="listed twice"):  # it would be updated twice a step
        AdamW([t, t], lr=0.1, weight_decay=0, warmup_steps=0)
    with pytest.raises(TypeError, match="parameter 1 is a ndarray without a float NumPy array"):
        AdamW([t, np.ones(3)])
    with pytest.raises(TypeError, match="parameter 0 is a SimpleNamespace without a float"):
        AdamW([SimpleNamespace(data=np.arange(3), grad=None)])  # integers cannot step
    optimizer = AdamW([Tensor(np.ones(3, np.float32), requires_grad=True)])
    optimizer.params[0].grad = np.ones(3)  # float64: the update would change the dtype
    with pytest.raises(ValueError, match=r"parameter 0: grad \(3,\) float64 does not match "
                                         r"data \(3,\) float32"):
        optimizer.step()


def test_a_step_without_any_gradient_still_advances_the_warm_up():
    # The warm-up follows the optimizer's own step count, as torch's LambdaLR does, whether
    # or not a parameter received a gradient that step.
    p = param([1.0])
    opt = AdamW([p], lr=1.0, warmup_steps=4)
    opt.step()
    assert p.data.tolist() == [1.0]
    assert opt.step_count == 1 and opt.current_lr() == 0.25


def test_a_warmup_of_one_step_still_starts_at_zero():
    assert [warmup_factor(t, 1) for t in (0, 1, 2)] == [0.0, 1.0, 1.0]


def test_a_saved_state_with_impossible_hyperparameters_is_refused_whole():
    p = Tensor(np.ones(3), requires_grad=True)
    optimizer = AdamW([p], lr=0.1)
    state = optimizer.state_dict()
    for key, value in (("lr", -1.0), ("beta1", 1.0)):
        with pytest.raises(ValueError, match=f"invalid {key}="):
            optimizer.load_state_dict({**state, key: value})
        assert (optimizer.lr, optimizer.betas) == (0.1, (0.9, 0.98))  # nothing loaded


def a_parameter(size=3):
    p = Tensor(np.ones(size, np.float32), requires_grad=True)
    p.grad = np.ones(size, np.float32)
    return p


def test_betas_may_be_any_two_numbers():
    for betas in ((0.9, 0.98), [0.9, 0.98], np.array([0.9, 0.98])):
        assert AdamW([a_parameter()], betas=betas).betas == (0.9, 0.98)


def test_a_single_tensor_is_refused_not_split_into_rows():
    # list(w) gives w's rows: AdamW(w) then updated nothing, silently
    w = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    with pytest.raises(TypeError, match=r"a list of parameters, such as AdamW\(\[w\]\)"):
        AdamW(w)


@pytest.mark.parametrize("settings, named", [
    (dict(lr="1e-3"), "lr"), (dict(lr=None), "lr"), (dict(lr=float("inf")), "lr"),
    (dict(lr=np.array([1e-3])), "lr"), (dict(betas=0.9), "betas"),
    (dict(betas=(0.9,)), "betas"), (dict(warmup_steps=True), "warmup_steps"),
    (dict(eps="small"), "eps")])
def test_hyperparameters_of_the_wrong_type_are_refused_by_name(settings, named):
    with pytest.raises(ValueError, match=rf"invalid {named}="):
        AdamW([a_parameter()], **settings)


@pytest.mark.parametrize("change", ["bigger", "float64", "transposed"])
def test_a_parameter_whose_data_was_replaced_is_refused_before_any_update(change):
    # the kernel writes through a flat view of .data into buffers made for the old array:
    # a bigger array was written out of bounds (a crash), a transposed one not at all
    first, second = a_parameter(), Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    second.grad = np.ones((2, 3), np.float32)
    optimizer = AdamW([first, second], warmup_steps=0)
    if change == "bigger":
        second.data, second.grad = np.ones((2, 30), np.float32), np.ones((2, 30), np.float32)
    elif change == "float64":
        second.data, second.grad = np.ones((2, 3)), np.ones((2, 3))
    else:
        second.data = np.ones((3, 2), np.float32).T
        second.grad = np.ascontiguousarray(second.data)
    with pytest.raises(ValueError, match=r"parameter 1: its \.data is no longer"):
        optimizer.step()
    assert np.all(first.data == 1) and optimizer.step_count == 0  # nothing half-applied


def test_a_gradient_that_is_not_an_array_is_refused_by_name():
    p = a_parameter()
    optimizer = AdamW([p])
    p.grad = Tensor(np.ones(3, np.float32))
    with pytest.raises(TypeError, match=r"parameter 0: grad must be a NumPy array"):
        optimizer.step()


@pytest.mark.parametrize("damage", [
    lambda d: d.update(bogus=1), lambda d: d.update(step_count=2.7),
    lambda d: d.update(step_count=-1), lambda d: d.update(param_steps=np.array([1.5])),
    lambda d: d.update(warmup_steps=10.7), lambda d: d.update(v_0=-np.ones(3, np.float32)),
    lambda d: d.update(m_0=np.array(["x"] * 3))],
    ids=["unknown-key", "fractional-count", "negative-count", "float-param-steps",
         "fractional-warmup", "negative-v", "text-m"])
def test_a_state_that_cannot_be_an_adamw_state_is_refused_and_changes_nothing(damage):
    p = a_parameter()
    optimizer = AdamW([p], lr=0.1, warmup_steps=0)
    optimizer.step()
    state = optimizer.state_dict()
    damage(state)
    before = optimizer.state_dict()
    with pytest.raises(ValueError):
        optimizer.load_state_dict(state)
    after = optimizer.state_dict()
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("change", [("lr", -1.0), ("betas", (0.9, 1.0)), ("eps", 0.0)])
def test_a_setting_changed_after_construction_is_checked_at_the_next_step(change):
    # optimizer.lr = -1 climbed the loss; betas (0.9, 1.0) made the parameters NaN
    p = a_parameter()
    optimizer = AdamW([p], warmup_steps=0)
    setattr(optimizer, *change)
    with pytest.raises(ValueError, match=r"invalid (lr|beta2|eps)="):
        optimizer.step()
    assert np.all(p.data == 1)
