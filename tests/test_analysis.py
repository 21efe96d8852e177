"""Tests for tinygrok.analysis: hand-built arrays whose answers are known in advance."""

import json
import math
import re

import numpy as np
import pytest
from synthetic_run import write_synthetic_run

from tinygrok import runfiles
from tinygrok.analysis import (
    RunDirectoryError,
    analyze_run,
    attention_metrics,
    claims,
    clustering,
    fourier,
    load_run,
)
from tinygrok.analysis.attention_metrics import AttentionTimeline
from tinygrok.analysis.phases import find_phases, phase_bands

T = 4


def causal_uniform(tokens=T):
    """A (T, T) pattern whose row q spreads evenly over keys 0..q."""
    return np.tril(np.ones((tokens, tokens))) / np.arange(1, tokens + 1)[:, None]


def causal_one_hot(keys):
    """A (T, T) pattern whose row q puts all its weight on key keys[q] (keys[q] <= q)."""
    pattern = np.zeros((len(keys), len(keys)))
    pattern[np.arange(len(keys)), keys] = 1
    return pattern


# ---- entropy -------------------------------------------------------------------------------


def test_uniform_row_over_k_keys_has_entropy_ln_k():
    entropy = attention_metrics.row_entropy(causal_uniform())
    np.testing.assert_allclose(entropy, np.log([1, 2, 3, 4]))


def test_one_hot_rows_have_zero_entropy_and_no_nan():
    with np.errstate(all="raise"):  # 0 * log 0 must not warn or produce NaN
        entropy = attention_metrics.row_entropy(causal_one_hot([0, 1, 0, 2]))
    np.testing.assert_array_equal(entropy, 0)


def test_mean_and_last_query_entropy_average_over_probes():
    probes = np.stack([causal_uniform(), causal_one_hot([0, 0, 0, 0])])  # (N=2, T, T)
    # Query rows 1..3 of the uniform probe: ln 2, ln 3, ln 4; the one-hot probe: 0.
    expected_mean = (np.log(2) + np.log(3) + np.log(4)) / 3 / 2
    assert attention_metrics.mean_query_entropy(probes) == pytest.approx(expected_mean)
    assert attention_metrics.last_query_entropy(probes) == pytest.approx(np.log(4) / 2)


# ---- position score, consistency, emergence ------------------------------------------------


def test_position_score_is_one_when_every_probe_has_the_same_pattern():
    probes = np.stack([causal_uniform()] * 5)
    assert attention_metrics.position_score(probes) == pytest.approx(1.0)


def test_position_score_of_two_opposite_probes_is_one_half():
    # Two tokens, row 1 only: [1, 0] and [0, 1]. Mean (.5, .5): sum M^2 = .5;
    # variance (.25, .25): sum V = .5; score = .5 / (.5 + .5).
    probes = np.stack([causal_one_hot([0, 0]), causal_one_hot([0, 1])])
    assert attention_metrics.position_score(probes) == pytest.approx(0.5)


def test_position_score_drops_below_one_when_patterns_vary():
    rng = np.random.default_rng(0)
    probes = np.stack([causal_one_hot([0, rng.integers(2), rng.integers(3), rng.integers(4)])
                       for _ in range(20)])
    assert attention_metrics.position_score(probes) < 0.99


def test_pattern_vectors_leave_out_the_forced_first_query_row():
    patterns = np.zeros((3, 2, 5, T, T))  # (S, H, N, T, T)
    assert attention_metrics.pattern_vectors(patterns).shape == (3, 2, 5 * (T - 1) * T)


def test_consistency_of_a_constant_series_is_one():
    vectors = np.tile(np.array([0.2, 0.5, 0.3]), (6, 1))
    np.testing.assert_allclose(attention_metrics.consistency(vectors), np.ones(5))


def test_consistency_of_alternating_orthogonal_vectors_is_zero():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(attention_metrics.consistency(vectors), [0, 0])


def test_emergence_is_the_first_step_from_which_similarity_stays_above_threshold():
    similarities = [0.2, 0.95, 0.5, 0.91, 0.93, 1.0]
    assert attention_metrics.emergence_index(similarities, 0.9) == 3
    assert attention_metrics.emergence_index(similarities, 0.4) == 1
    assert attention_metrics.emergence_index(similarities, 0.1) == 0


def test_emergence_steps_maps_indices_to_logged_steps_per_head():
    steps = np.array([0, 10, 20, 30])
    similarities = np.empty((4, 1, 2))
    similarities[:, 0, 0] = [0.1, 0.95, 0.97, 1.0]  # settles at step 10
    similarities[:, 0, 1] = [0.95, 0.2, 0.5, 1.0]  # only at the end
    result = attention_metrics.emergence_steps(steps, similarities, 0.9)
    np.testing.assert_array_equal(result, [[10, 30]])


def test_timeline_of_a_head_that_sharpens_at_step_30():
    steps = np.arange(0, 60, 10)
    target = causal_one_hot([0, 0, 1, 2])
    patterns = np.empty((len(steps), 1, 1, 3, T, T))  # (S, L, H, N, T, T)
    for i, step in enumerate(steps):
        patterns[i, 0, 0] = target if step >= 30 else causal_uniform()
    timeline = attention_metrics.attention_timeline(steps, patterns, 0.9)
    assert timeline.emergence_step[0, 0] == 30
    np.testing.assert_allclose(timeline.entropy_last[:3, 0, 0], np.log(4))
    np.testing.assert_allclose(timeline.entropy_last[3:, 0, 0], 0, atol=1e-12)
    np.testing.assert_allclose(timeline.position_score[:, 0, 0], 1)
    changes = timeline.consistency[:, 0, 0]
    assert changes[2] < 1 and np.allclose(np.delete(changes, 2), 1)


# ---- phases --------------------------------------------------------------------------------

STEPS = np.arange(10, 110, 10)  # 10, 20, ..., 100


def test_phases_of_a_run_that_groks():
    train = [0.5, 0.995, 1, 1, 1, 1, 1, 1, 1, 1]
    val = [0.01, 0.02, 0.03, 0.2, 0.6, 0.9, 0.995, 1, 1, 1]
    phases = find_phases(STEPS, train, val)
    assert phases["memorization"] == {"start": 20, "end": 50}
    assert phases["transition"] == {"start": 50, "end": 70, "completed": True}
    assert phases["post_grokking"] == {"start": 70, "end": 100}
    assert phases["grok_step"] == 70 and phases["grokked"]
    assert phases["dips"] == [] and phases["notes"] == []
    assert phase_bands(phases) == [("memorization", 20, 50), ("transition", 50, 70),
                                   ("post_grokking", 70, 100)]


def test_phases_of_a_run_that_never_groks():
    train = [0.5, 0.995, 1, 1, 1, 1, 1, 1, 1, 1]
    val = [0.01, 0.1, 0.2, 0.3, 0.34, 0.3, 0.33, 0.34, 0.35, 0.34]
    phases = find_phases(STEPS, train, val)
    assert phases["memorization"] == {"start": 20, "end": 100}
    assert phases["transition"] is None and phases["post_grokking"] is None
    assert phases["grok_step"] is None and not phases["grokked"]
    assert any("did not grok" in note for note in phases["notes"])


def test_a_transition_that_never_completes_is_marked_so():
    train = [1] * 10
    val = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8]
    phases = find_phases(STEPS, train, val)
    assert phases["transition"] == {"start": 40, "end": 100, "completed": False}
    assert phases["post_grokking"] is None


def test_dips_after_grokking_recovered_and_not():
    train = [1] * 10
    val = [0.1, 0.995, 1, 0.97, 0.95, 0.999, 1, 0.98, 0.9, 0.8]
    phases = find_phases(STEPS, train, val)
    assert phases["grok_step"] == 20
    first, second = phases["dips"]
    assert first == {"start": 40, "end": 60, "recovered": True, "min_val_acc": 0.95,
                     "min_step": 50, "depth": pytest.approx(0.05), "duration": 20}
    assert second["start"] == 80 and second["end"] is None and not second["recovered"]
    assert second["min_val_acc"] == 0.8 and second["duration"] == 20
    assert second["depth"] == pytest.approx(0.2)


def test_generalising_without_memorising_has_no_memorization_phase():
    train = [0.5, 0.8, 0.97, 1, 1, 1, 1, 1, 1, 1]
    val = [0.4, 0.7, 0.995, 1, 1, 1, 1, 1, 1, 1]
    phases = find_phases(STEPS, train, val)
    assert phases["grok_step"] == 30
    assert phases["memorization"] is None and phases["transition"] is None
    assert phases["post_grokking"] == {"start": 30, "end": 100}
    assert any("without a memorization phase" in note for note in phases["notes"])
    assert phases["grokked"] is True  # it generalised: grokked, though without memorising


def test_training_accuracy_that_never_reaches_99_percent():
    phases = find_phases(STEPS, np.linspace(0.1, 0.9, 10), np.full(10, 0.05))
    assert all(phases[name] is None for name in ("memorization", "transition",
                                                 "post_grokking"))
    assert phases["grok_step"] is None
    assert any("train_acc never exceeded" in note for note in phases["notes"])


def test_a_jump_past_99_percent_gives_a_transition_of_zero_length():
    train = [1] * 10
    val = [0.0, 0.0, 0.1, 0.995, 1, 1, 1, 1, 1, 1]
    phases = find_phases(STEPS, train, val)
    assert phases["memorization"] == {"start": 10, "end": 40}
    assert phases["transition"] == {"start": 40, "end": 40, "completed": True}


def test_a_collapse_after_grokking_is_a_dip_not_a_memorization_phase():
    train = [1] * 10
    val = [0.6, 0.995, 1, 0.2, 0.1, 1, 1, 1, 1, 1]
    phases = find_phases(STEPS, train, val)
    assert phases["memorization"] is None
    assert phases["dips"][0]["start"] == 40 and phases["dips"][0]["min_val_acc"] == 0.1


def test_phases_are_plain_json():
    phases = find_phases(STEPS, [1] * 10, [0.1] * 5 + [0.995] * 5)
    assert json.loads(json.dumps(phases, allow_nan=False)) == phases


def test_phases_reject_curves_of_different_lengths():
    with pytest.raises(ValueError, match="same length"):
        find_phases(STEPS, [1] * 10, [1] * 9)


# ---- Fourier and discrete logarithms ---------------------------------------------------------

PRIMES = [2, 3, 5, 7, 11, 13, 17, 23, 41, 97]


def brute_force_is_primitive_root(g, p):
    return sorted(pow(g, j, p) for j in range(1, p)) == list(range(1, p))


@pytest.mark.parametrize("p", PRIMES)
def test_primitive_root_is_the_smallest_generator(p):
    g = fourier.primitive_root(p)
    assert brute_force_is_primitive_root(g, p)
    assert not any(brute_force_is_primitive_root(h, p) for h in range(1, g))


def test_primitive_roots_of_known_primes():
    assert [fourier.primitive_root(p) for p in (3, 7, 23, 41, 97)] == [2, 3, 5, 6, 5]


def test_primitive_root_rejects_composites():
    with pytest.raises(ValueError, match="not prime"):
        fourier.primitive_root(15)


@pytest.mark.parametrize("p", [5, 13, 97])
def test_discrete_log_turns_division_into_subtraction(p):
    log = fourier.discrete_log_table(p)
    g = fourier.primitive_root(p)
    assert log[0] == -1
    for x in range(1, p):
        assert pow(g, int(log[x]), p) == x
        for y in range(1, p):
            quotient = x * pow(y, -1, p) % p
            assert log[quotient] == (log[x] - log[y]) % (p - 1)


@pytest.mark.parametrize("n", [7, 8, 96, 97])
def test_fourier_basis_is_orthonormal(n):
    basis, frequencies = fourier.fourier_basis(n)
    np.testing.assert_allclose(basis @ basis.T, np.eye(n), atol=1e-12)
    assert frequencies.max() == n // 2


def test_a_pure_cosine_has_one_key_frequency_and_gini_near_one():
    p, k = 97, 7
    x = np.arange(p)
    embeddings = np.outer(np.cos(2 * np.pi * k * x / p), [1.0, -2.0, 0.5])  # (p, d=3)
    norms = fourier.frequency_norms(embeddings)
    assert fourier.key_frequencies(norms) == [k]
    # |cos|^2 over Z_p is p/2, times the squared length of the direction (1 + 4 + 0.25).
    assert norms[k] == pytest.approx(np.sqrt(p / 2 * 5.25))
    assert fourier.gini(norms[1:]) >= 47 / 48 - 1e-9  # (K-1)/K with K = 48 frequencies


@pytest.mark.parametrize("n, k", [(23, 3), (23, 11), (96, 47), (97, 1)])
def test_clock_finds_a_perfect_circle_whatever_its_plane_and_radius(n, k):
    # Embeddings that are exactly a clock at frequency k: element j at angle 2 pi k j / n
    # in a random plane of R^8, with a random radius, starting angle and offset. QR flips
    # the sign of a column for about half of such planes; the fit must be 1 every time.
    rng = np.random.default_rng(n * 100 + k)
    angle = 2 * np.pi * k * np.arange(n) / n
    for _ in range(20):
        plane, _ = np.linalg.qr(rng.standard_normal((8, 2)))
        radius, start = rng.uniform(0.5, 3), rng.uniform(0, 2 * np.pi)
        circle = np.stack([np.cos(angle + start), np.sin(angle + start)], axis=1)
        embeddings = radius * circle @ plane.T + rng.standard_normal(8)
        points, fit = fourier.clock(embeddings, k)
        assert points.shape == (n, 2)
        assert fit == pytest.approx(1, abs=1e-9)
        # The plane's points lie on a circle of that radius (the offset is not in the plane).
        centred = points - points.mean(axis=0)
        np.testing.assert_allclose(np.hypot(*centred.T), radius, rtol=1e-9)


def test_clock_of_a_single_wave_is_not_a_circle():
    # cos only: the points lie on a line, and the fit is 1/sqrt(2), not 1.
    n, k = 23, 4
    embeddings = np.outer(np.cos(2 * np.pi * k * np.arange(n) / n), [1.0, 2.0, -1.0])
    embeddings += 1e-3 * np.random.default_rng(0).standard_normal(embeddings.shape)
    _, fit = fourier.clock(embeddings, k)
    assert fit == pytest.approx(1 / np.sqrt(2), abs=1e-3)
    with pytest.raises(ValueError, match="1 <= k < n/2"):
        fourier.clock(np.zeros((96, 3)), 48)  # k = n/2 has only a cos row
    with pytest.raises(ValueError, match="whole number"):
        fourier.clock(np.zeros((23, 3)), 1.5)
    with pytest.raises(ValueError, match="d >= 2"):
        fourier.clock(np.zeros((23, 1)), 2)
    assert fourier.clock(np.ones((23, 3)), 2)[1] == 0.0  # constant embeddings: no clock
    assert fourier.clock(np.zeros((23, 3)), 2)[1] == 0.0
    # a small clock far from the origin is still a clock
    angle = 2 * np.pi * 2 * np.arange(11) / 11
    far = np.stack([1e9 + np.cos(angle), np.sin(angle), np.zeros(11)], axis=1)
    assert fourier.clock(far, 2)[1] == pytest.approx(1)


def test_gini_of_equal_values_is_zero():
    assert fourier.gini(np.ones(10)) == pytest.approx(0)


def test_division_embeddings_are_analysed_in_discrete_log_order():
    p, k = 13, 2
    g = next(h for h in range(2, p) if brute_force_is_primitive_root(h, p))
    log = {pow(g, j, p): j for j in range(p - 1)}
    token_embeddings = np.zeros((2 + p, 2))
    token_embeddings[2] = 100.0  # element 0 has no logarithm: it must be left out
    for x in range(1, p):
        angle = 2 * np.pi * k * log[x] / (p - 1)
        token_embeddings[2 + x] = [np.cos(angle), np.sin(angle)]
    elements = fourier.group_embeddings(token_embeddings, "x_div_y", p)
    assert elements.shape == (p - 1, 2)
    assert fourier.key_frequencies(fourier.frequency_norms(elements)) == [k]


def test_permutations_have_no_cyclic_spectrum():
    with pytest.raises(ValueError, match="no cyclic group"):
        fourier.group_order("permutation", 97)


# ---- clustering ----------------------------------------------------------------------------


def planted_clusters(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (3, 6))
    labels = np.repeat(np.arange(3), 5)
    return centres[labels] + rng.normal(0, 0.1, (15, 6)), labels


def same_partition(a, b):
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


def test_kmeans_recovers_planted_clusters():
    points, truth = planted_clusters()
    result = clustering.kmeans(points, 3, seed=1)
    assert same_partition(result.labels, truth)


def test_silhouette_chooses_the_planted_number_of_clusters():
    points, _ = planted_clusters()
    k, silhouettes = clustering.choose_k(points, range(2, 8))
    assert k == 3 and silhouettes[3] > 0.9


def test_kmeans_refuses_points_it_cannot_cluster():
    points, _ = planted_clusters()
    points[4, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):  # was: labels from NaN distances
        clustering.kmeans(points, 3)
    with pytest.raises(ValueError, match=r"2-D array .*\(6,\)"):
        clustering.kmeans(np.arange(6.0), 2)


def test_emergence_steps_names_shapes_that_do_not_fit():
    steps = np.array([0, 10, 20])
    for similarities in (np.ones(3), np.ones((2, 1, 1)), np.ones((3, 2))):
        with pytest.raises(ValueError, match=r"steps \(S,\) and similarities \(S, L, H\)"):
            attention_metrics.emergence_steps(steps, similarities, 0.9)
    with pytest.raises(ValueError, match="S >= 1"):
        attention_metrics.emergence_steps([], np.ones((0, 1, 1)), 0.9)


def test_kmeans_is_reproducible_for_a_seed():
    points, _ = planted_clusters(seed=3)
    first = clustering.kmeans(points, 4, seed=7)
    second = clustering.kmeans(points, 4, seed=7)
    np.testing.assert_array_equal(first.labels, second.labels)


def test_cluster_heads_reports_labels_per_layer_and_a_similarity_matrix():
    points, _ = planted_clusters()
    heads = points[:8].reshape(2, 4, 6)  # 2 layers x 4 heads: clusters {0..4}, {5, 6, 7}
    result = clustering.cluster_heads(heads)
    similarity = np.array(result["similarity"])
    assert result["k"] == 2 and result["chosen_by"] == "silhouette"
    assert same_partition(np.ravel(result["labels"]), [0] * 5 + [1] * 3)
    np.testing.assert_allclose(similarity, similarity.T)
    np.testing.assert_allclose(np.diag(similarity), 1, atol=1e-4)


# ---- claims --------------------------------------------------------------------------------


def hand_timeline(emergence, final_position_score, entropy_last, consistency):
    """An AttentionTimeline of 4 steps (0, 10, 20, 30) for 2 layers x 2 heads."""
    shape = (4, 2, 2)
    position_score = np.ones(shape)
    position_score[-1] = final_position_score
    return AttentionTimeline(
        steps=np.array([0, 10, 20, 30]),
        entropy_mean=np.zeros(shape),
        entropy_last=np.broadcast_to(np.reshape(entropy_last, (4, 1, 1)), shape),
        position_score=position_score,
        consistency=np.broadcast_to(np.reshape(consistency, (3, 1, 1)), (3, 2, 2)),
        similarity_to_final=np.ones(shape),
        emergence_step=np.array(emergence),
        emergence_threshold=0.9,
        max_entropy_last=math.log(4),
    )


GROKKED = find_phases([10, 20, 30], [1, 1, 1], [0.1, 0.6, 1.0])  # transition 20 -> 30
FAILED = find_phases([10, 20, 30], [1, 1, 1], [0.1, 0.2, 0.3])


def test_claim_one_holds_when_first_layer_and_positional_heads_settle_first():
    timeline = hand_timeline([[10, 10], [30, 30]], [[1.0, 0.95], [0.5, 0.4]],
                             np.zeros(4), np.ones(3))
    result = claims.position_patterns_first(GROKKED, timeline)
    assert result["holds"] is True
    assert result["mean_emergence_step_by_layer"] == [10, 30]


def test_claim_one_fails_when_the_deeper_layer_settles_first():
    timeline = hand_timeline([[30, 30], [10, 10]], [[1.0, 0.95], [0.5, 0.4]],
                             np.zeros(4), np.ones(3))
    result = claims.position_patterns_first(GROKKED, timeline)
    assert result["holds"] is False
    assert not result["first_layer_earlier"] and not result["most_positional_half_earlier"]


def test_claim_two_compares_transition_start_and_end():
    sharpening = hand_timeline([[0, 0], [0, 0]], np.ones((2, 2)),
                               [1.3, 1.2, 1.0, 0.1], [0.9, 0.95, 0.999])
    result = claims.clean_patterns_in_transition(GROKKED, sharpening, window=1)
    assert result["holds"] is True
    assert result["at_transition_start"]["entropy_last"] == pytest.approx(1.0)
    assert result["at_transition_end"]["entropy_last"] == pytest.approx(0.1)
    blurring = hand_timeline([[0, 0], [0, 0]], np.ones((2, 2)),
                             [0.1, 0.1, 0.1, 1.0], [0.9, 0.95, 0.999])
    assert claims.clean_patterns_in_transition(GROKKED, blurring, window=1)["holds"] is False


def test_claim_two_does_not_apply_without_a_transition():
    timeline = hand_timeline([[0, 0], [0, 0]], np.ones((2, 2)), np.zeros(4), np.ones(3))
    result = claims.clean_patterns_in_transition(FAILED, timeline)
    assert result["holds"] is None and "no completed transition" in result["reason"]


def test_claim_three_only_for_failed_runs_and_uses_stated_thresholds():
    chaotic = hand_timeline([[30, 30], [30, 30]], np.ones((2, 2)),
                            np.full(4, 0.9 * math.log(4)), [0.7, 0.7, 0.7])
    assert claims.failed_run_stays_chaotic(GROKKED, chaotic)["holds"] is None
    result = claims.failed_run_stays_chaotic(FAILED, chaotic)
    assert result["holds"] is True
    assert result["entropy_fraction"] == pytest.approx(0.9)
    assert result["thresholds"]["chaotic_entropy_fraction"] == 0.5
    strict = claims.failed_run_stays_chaotic(FAILED, chaotic, chaotic_entropy_fraction=0.95)
    assert strict["holds"] is False
    clean = hand_timeline([[0, 0], [0, 0]], np.ones((2, 2)), np.zeros(4), np.ones(3))
    assert claims.failed_run_stays_chaotic(FAILED, clean)["holds"] is False


# ---- run directories -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def grokking_run(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("runs"), curve="grok")


def test_load_run_reads_every_file_as_plain_arrays(grokking_run):
    run = load_run(grokking_run)
    assert run.complete and run.name == "x_plus_y-s0"
    assert run.config["task"] == "x_plus_y"
    assert run.metrics["step"].dtype == np.int64 and run.metrics["step"][0] == 10
    assert run.metrics["val_acc"].shape == (100,)
    assert run.patterns.dtype == np.float32 and run.patterns.shape == (101, 2, 4, 12, T, T)
    np.testing.assert_allclose(run.patterns.sum(axis=-1), 1, atol=5e-3)
    assert run.probe_inputs.shape == (12, T) and run.probe_split.dtype == np.int8
    assert run.token_embeddings.shape == (11, 13, 8)
    assert run.pattern(500, 1).shape == (4, 12, T, T)
    assert run.embeddings(300).shape == (13, 8)


def test_wall_clock_comes_from_timing_csv_or_from_metrics_csv(tmp_path):
    directory = write_synthetic_run(tmp_path)
    np.testing.assert_allclose(load_run(directory).metrics["seconds"][:2], [0.1, 0.2])
    (directory / "timing.csv").unlink()
    with open(directory / "metrics.csv") as f:
        rows = f.read().splitlines()
    with_seconds = [rows[0] + ",seconds"] + [row + ",7.5" for row in rows[1:]]
    (directory / "metrics.csv").write_text("\n".join(with_seconds) + "\n")
    np.testing.assert_array_equal(load_run(directory).metrics["seconds"], 7.5)


def test_pattern_at_an_unlogged_step_names_the_nearest_logged_steps(grokking_run):
    with pytest.raises(ValueError, match="nearest logged steps: 10, 20"):
        load_run(grokking_run).pattern(15, 0)


def test_a_run_without_summary_is_incomplete(tmp_path):
    directory = write_synthetic_run(tmp_path, complete=False)
    assert not load_run(directory).complete


def test_load_run_errors_are_one_line(tmp_path):
    with pytest.raises(RunDirectoryError, match="no such run directory"):
        load_run(tmp_path / "nowhere")
    directory = write_synthetic_run(tmp_path)
    (directory / "metrics.csv").unlink()
    with pytest.raises(RunDirectoryError, match="missing metrics.csv") as error:
        load_run(directory)
    assert "\n" not in str(error.value)


def test_metrics_without_a_required_column_are_rejected(tmp_path):
    directory = write_synthetic_run(tmp_path)
    (directory / "metrics.csv").write_text("step,train_acc\n10,0.5\n")
    with pytest.raises(RunDirectoryError, match="missing column"):
        load_run(directory)


def test_analysis_of_a_synthetic_run_is_json_and_finds_what_was_planted(grokking_run):
    report = analyze_run(load_run(grokking_run)).report
    json.dumps(report, allow_nan=False)
    assert report["phases"]["grok_step"] == 640
    assert report["fourier"]["key_frequencies_final"] == [3]
    attention = report["attention"]
    assert attention["emergence_step_by_layer_head"][0] < [300] * 4  # layer 0 settles first
    assert report["claims"]["position_patterns_first"]["holds"] is True
    assert report["claims"]["failed_run_stays_chaotic"]["holds"] is None
    from tinygrok.analysis.claims import CLAIM_TITLES  # the titles name every claim, in order
    assert list(report["claims"]) == list(CLAIM_TITLES)


def test_analysis_of_a_failed_run_evaluates_claim_three(tmp_path):
    report = analyze_run(load_run(write_synthetic_run(tmp_path, curve="fail"))).report
    assert report["claims"]["clean_patterns_in_transition"]["holds"] is None
    assert report["claims"]["failed_run_stays_chaotic"]["holds"] is True


def test_permutation_runs_skip_the_fourier_analysis(tmp_path):
    report = analyze_run(load_run(write_synthetic_run(tmp_path, task="permutation"))).report
    assert "not a cyclic group" in report["fourier"]["skipped"]


def test_a_run_without_attention_or_embeddings_still_gets_phases(tmp_path):
    directory = write_synthetic_run(tmp_path)
    (directory / "attention.npz").unlink()
    (directory / "embeddings.npz").unlink()
    run = load_run(directory)
    assert not run.has_attention and not run.has_embeddings
    report = analyze_run(run).report
    assert report["phases"]["grok_step"] == 640
    assert "skipped" in report["attention"] and "skipped" in report["fourier"]
    assert all(claim["holds"] is None for claim in report["claims"].values())
    from tinygrok.analysis.claims import CLAIM_TITLES
    assert list(report["claims"]) == list(CLAIM_TITLES)


# ---- edge cases an analysis probe found ------------------------------------------------------


def test_constant_embeddings_have_no_key_frequency():
    # all energy at k = 0; the rest is rounding noise of about 1e-16, not a frequency
    spectrum = fourier.fourier_timeline([0], np.full((1, 13, 8), 0.7, np.float32), "x_plus_y", 11)
    assert spectrum.key_frequencies() == [] and spectrum.gini[0] == 0.0


def test_claim_one_leaves_the_heads_out_when_their_scores_tie_across_the_split():
    # every head purely positional (score 1): which half a head lands in would be its number
    for emergence in ([[10, 30], [20, 40]], [[30, 10], [40, 20]]):  # the heads' order swapped
        timeline = hand_timeline(emergence, np.ones((2, 2)), np.zeros(4), np.ones(3))
        result = claims.position_patterns_first(GROKKED, timeline)
        assert result["most_positional_half_earlier"] is None
        assert result["holds"] is True  # the layer test alone: 20 < 30
        assert "tie across the half-way split" in result["reason"]


def test_claim_one_leaves_the_heads_out_when_the_left_out_middle_head_ties_a_half():
    # three heads: the middle one is left out; scores [1, 0.5, 0.5] tie the middle with the
    # least positional head, so swapping heads 1 and 2 would flip the verdict
    for emergence in ([[20, 10, 30]], [[20, 30, 10]]):
        timeline = AttentionTimeline(
            steps=np.array([0, 10]), entropy_mean=np.zeros((2, 1, 3)),
            entropy_last=np.zeros((2, 1, 3)),
            position_score=np.array([[[1.0, 0.5, 0.5]]] * 2),
            consistency=np.ones((1, 1, 3)), similarity_to_final=np.ones((2, 1, 3)),
            emergence_step=np.array(emergence), emergence_threshold=0.9,
            max_entropy_last=math.log(4))
        result = claims.position_patterns_first(GROKKED, timeline)
        assert result["holds"] is None and "tie" in result["reason"]


def test_claim_two_does_not_apply_when_the_transition_falls_within_one_attention_log():
    phases = find_phases([10, 20, 30, 40], [1, 1, 1, 1], [0.1, 0.1, 0.6, 1.0])  # 30 -> 40
    timeline = hand_timeline([[0, 0], [0, 0]], np.ones((2, 2)), [1.0, 1.0, 1.0, 0.5],
                             np.ones(3))
    timeline.steps = np.array([0, 100, 200, 300])  # attention logged every 100 steps
    result = claims.clean_patterns_in_transition(phases, timeline)
    assert result["holds"] is None and "same attention log (step 0)" in result["reason"]


def test_heads_that_all_attend_identically_form_one_cluster():
    nearly = np.ones((1, 3, 12))
    nearly[0, 1] += 1e-12  # equal but for rounding
    assert clustering.cluster_heads(nearly)["k"] == 1
    result = clustering.cluster_heads(np.ones((1, 3, 12)))  # crashed in the silhouette
    assert result["k"] == 1 and result["labels"] == [[0, 0, 0]]
    assert "identically" in result["chosen_by"]
    assert clustering.silhouette_score(np.ones((3, 2)), np.zeros(3, int)) == 0.0


@pytest.mark.parametrize("column", ["train_acc", "val_acc", "step"])
def test_a_metrics_row_with_nan_accuracy_is_a_clear_error(tmp_path, column):
    directory = write_synthetic_run(tmp_path)
    lines = (directory / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[5].split(",")
    row[header.index(column)] = "nan"
    lines[5] = ",".join(row)
    (directory / "metrics.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirectoryError, match=f"line 6: {column} is nan, not a finite number"):
        load_run(directory)


def test_a_run_with_no_logged_step_is_analysed_without_a_crash(tmp_path):
    directory = write_synthetic_run(tmp_path)
    metrics = directory / "metrics.csv"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")  # the header alone
    report = analyze_run(load_run(directory)).report
    assert report["final"] == {"skipped": "no logged steps"}


def test_x_div_y_mod_2_draws_its_empty_spectrum(tmp_path):
    from tinygrok.plots import fourier_figure

    spectrum = fourier.fourier_timeline([0, 10], np.ones((2, 4, 8), np.float32), "x_div_y", 2)
    phases = find_phases([0, 10], [1, 1], [0.5, 1.0])
    fourier_figure(spectrum, phases)  # Z_1: no frequency but 0 (norms.max() of nothing)


def test_an_unfinished_run_is_not_judged_as_a_failed_one(tmp_path):
    run = load_run(write_synthetic_run(tmp_path, curve="fail", complete=False))
    report = analyze_run(run).report
    assert report["run"]["complete"] is False
    assert report["final"]["step_val_acc_99"] is None
    assert "the run is not finished" in report["final"]["unfinished"]
    assert report["claims"]["failed_run_stays_chaotic"]["holds"] is None
    assert any("not finished" in note for note in report["phases"]["notes"])
    finished = analyze_run(load_run(write_synthetic_run(tmp_path / "done", curve="fail")))
    assert finished.report["final"]["step_val_acc_99"] == finished.report["run"]["steps"]


def test_inputs_that_would_give_a_plausible_wrong_answer_are_refused():
    from tinygrok.analysis import attention_timeline, fourier

    patterns = np.full((3, 1, 1, 2, 4, 4), 0.25)
    with pytest.raises(ValueError, match="one step per pattern"):
        attention_timeline([0, 10], patterns)  # a step short: emergence steps would shift
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\] \(not percentages\)"):
        find_phases([10, 20], [50.0, 100.0], [1.0, 99.5])
    with pytest.raises(ValueError, match="is p the run's"):
        fourier.fourier_timeline([0], np.ones((1, 25, 8)), "x_plus_y", 19)  # a p = 23 run


def test_head_clusters_name_a_bad_input():
    with pytest.raises(ValueError, match=r"shape \(layers, heads, D\), got \(4, 8\)"):
        clustering.cluster_heads(np.ones((4, 8)))
    vectors = np.random.default_rng(0).random((2, 4, 6))
    vectors[1, 2, 3] = np.nan  # it used to put every head in cluster 0
    with pytest.raises(ValueError, match="NaN or infinite"):
        clustering.cluster_heads(vectors)


# ---- exact thresholds and edge cases (each of these tests was written against a mutant ----
# ---- of the code that the suite above let through: > for >=, a wrong index, ...) ---------


def test_phase_thresholds_are_strict_where_the_definitions_say_so():
    # val_acc exactly 0.99 has not grokked ("> 0.99"); train_acc exactly 0.99 has not
    # memorised ("> 0.99"); val_acc exactly 0.5 is no longer memorisation ("< 0.5")
    assert find_phases(STEPS, [1] * 10, [0.1] * 5 + [0.99] + [1.0] * 4)["grok_step"] == 70
    assert find_phases([10, 20, 30], [0.99, 1, 1], [0.1] * 3)["memorization"] == \
        {"start": 20, "end": 30}
    assert find_phases([10, 20, 30], [1, 1, 1], [0.5, 0.3, 0.3])["memorization"] == \
        {"start": 20, "end": 30}
    # ... and memorisation ends at the first step where val_acc reaches 0.5 (">= 0.5")
    phases = find_phases([10, 20, 30, 40], [1] * 4, [0.1, 0.5, 0.7, 1.0])
    assert phases["memorization"] == {"start": 10, "end": 20}
    assert phases["transition"] == {"start": 20, "end": 40, "completed": True}


def test_a_dip_starts_at_val_acc_of_exactly_099():
    dips = find_phases([10, 20, 30, 40, 50], [1] * 5, [0.1, 0.995, 0.99, 0.98, 1.0])["dips"]
    assert dips == [{"start": 30, "end": 50, "recovered": True, "min_val_acc": 0.98,
                     "min_step": 40, "depth": pytest.approx(0.015), "duration": 20}]


def test_phase_notes_name_exactly_what_did_not_happen():
    assert "train_acc never exceeded 0.99" in \
        find_phases([10, 20], [0.5, 0.99], [0.1, 0.1])["notes"]
    # a run that neither memorised nor grokked gets those two notes, not a third one about
    # generalising without memorisation
    notes = find_phases(STEPS, np.linspace(0.1, 0.9, 10), np.full(10, 0.05))["notes"]
    assert notes == ["train_acc never exceeded 0.99",
                     "val_acc never exceeded 0.99: the run did not grok"]


def any_timeline(emergence, final_position_score, entropy_last=None, consistency=None,
                 steps=(0, 10, 20, 30)):
    """An AttentionTimeline of any layers x heads (the shape of ``emergence``) and steps."""
    emergence = np.asarray(emergence)
    steps = np.asarray(steps)
    shape = (len(steps), *emergence.shape)
    position_score = np.ones(shape)
    position_score[-1] = final_position_score
    entropy = np.zeros(len(steps)) if entropy_last is None else np.asarray(entropy_last, float)
    agreement = np.ones(len(steps) - 1) if consistency is None else np.asarray(consistency, float)
    return AttentionTimeline(
        steps=steps, entropy_mean=np.zeros(shape),
        entropy_last=np.broadcast_to(entropy[:, None, None], shape),
        position_score=position_score,
        consistency=np.broadcast_to(agreement[:, None, None], (len(steps) - 1, *emergence.shape)),
        similarity_to_final=np.ones(shape), emergence_step=emergence,
        emergence_threshold=0.9, max_entropy_last=math.log(4))


def test_claim_one_needs_both_tests_and_a_tie_is_not_earlier():
    # layers tie (20 = 20): not earlier, so the claim fails though the positional half is
    result = claims.position_patterns_first(
        GROKKED, any_timeline([[10, 30], [20, 20]], [[1.0, 0.4], [0.9, 0.5]]))
    assert result["first_layer_earlier"] is False
    assert result["most_positional_half_earlier"] is True
    assert result["holds"] is False
    # halves tie (15 = 15): not earlier
    result = claims.position_patterns_first(
        GROKKED, any_timeline([[10, 20], [20, 10]], [[1.0, 0.4], [0.9, 0.5]]))
    assert result["most_positional_half_earlier"] is False


def test_claim_one_compares_the_first_layer_with_the_last_and_skips_a_middle_head():
    # three layers: the first (10) against the last (30), whatever the middle one does
    result = claims.position_patterns_first(
        GROKKED, any_timeline([[10], [5], [30]], [[1.0], [0.5], [0.2]]))
    assert result["first_layer_earlier"] is True and result["holds"] is True
    # three heads: the most positional one (10) against the least (20); the middle one's 0
    # belongs to neither half
    result = claims.position_patterns_first(
        GROKKED, any_timeline([[10, 0, 20]], [[1.0, 0.6, 0.2]]))
    assert result["mean_emergence_least_positional_half"] == 20
    assert result["holds"] is True


def test_claim_two_needs_consistency_to_rise_and_reads_only_earlier_intervals():
    flat = any_timeline([[0, 0], [0, 0]], np.ones((2, 2)), [1.3, 1.2, 1.0, 0.1], np.ones(3))
    result = claims.clean_patterns_in_transition(GROKKED, flat, window=1)
    assert result["consistency_rises"] is False and result["holds"] is False
    rising = any_timeline([[0, 0], [0, 0]], np.ones((2, 2)), [1.3, 1.2, 1.0, 0.1],
                          [0.9, 0.95, 0.999])
    result = claims.clean_patterns_in_transition(GROKKED, rising, window=1)
    # at step 20 the last interval is 10 -> 20 (0.95), not 20 -> 30
    assert result["at_transition_start"]["consistency"] == pytest.approx(0.95)
    unfinished = find_phases([10, 20, 30], [1, 1, 1], [0.1, 0.6, 0.8])
    result = claims.clean_patterns_in_transition(unfinished, rising, window=1)
    assert result["holds"] is None and "no completed transition" in result["reason"]


def test_claim_three_window_is_the_last_quarter_and_its_thresholds_are_inclusive():
    chaotic = 0.9 * math.log(4)
    ten_steps = any_timeline(np.full((2, 2), 90), np.ones((2, 2)), np.full(10, chaotic),
                             np.full(9, 0.7), steps=np.arange(0, 100, 10))
    assert claims.failed_run_stays_chaotic(FAILED, ten_steps)["window_start_step"] == 70
    four_steps = any_timeline(np.full((2, 2), 30), np.ones((2, 2)), np.full(4, chaotic),
                              [0.7] * 3)
    assert claims.failed_run_stays_chaotic(FAILED, four_steps)["window_start_step"] == 20
    # entropy of exactly half of ln T is chaotic (>= 0.5); consistency exactly at the
    # stability threshold is stable (unstable needs < it)
    half = any_timeline(np.full((2, 2), 30), np.ones((2, 2)), np.full(4, 0.5 * math.log(4)),
                        [0.7] * 3)
    result = claims.failed_run_stays_chaotic(FAILED, half)
    assert result["entropy_fraction"] == 0.5 and result["high_entropy"] is True
    at_threshold = any_timeline(np.full((2, 2), 30), np.ones((2, 2)), np.full(4, chaotic),
                                [0.75] * 3)
    result = claims.failed_run_stays_chaotic(FAILED, at_threshold, stable_consistency=0.75)
    assert result["consistency"] == 0.75 and result["unstable"] is False
    assert result["holds"] is False


def test_attention_metric_edge_cases():
    assert attention_metrics.cosine_similarity([0.0, 0.0], [1.0, 0.0]) == 0.0  # not NaN
    assert attention_metrics.emergence_index([0.5, 0.9, 1.0], 0.9) == 1  # ">= threshold"
    # threshold 1 is allowed, and the last step counts as similar to itself even when
    # rounding leaves its similarity a hair below 1
    np.testing.assert_array_equal(
        attention_metrics.emergence_steps([0, 10], np.array([[[1.0]], [[1 - 2**-52]]]), 1.0),
        [[0]])
    uniform = np.full((2, 1, 1, 2, 4, 4), 0.25)
    assert attention_metrics.attention_timeline([0, 10], uniform).max_entropy_last == \
        pytest.approx(math.log(4))


def test_silhouette_and_kmeans_by_hand():
    # silhouette of [0, 1 | 10, 11]: a = 1 for every point, b = 10.5 or 9.5 (mean distance
    # to the other cluster), s = (b - a) / b
    score = clustering.silhouette_score([[0.0], [1.0], [10.0], [11.0]], [0, 0, 1, 1])
    assert score == pytest.approx((9.5 / 10.5 + 8.5 / 9.5) / 2)
    # 0..9 in two clusters: {0..4} and {5..9}, centres 2 and 7, inertia 2 * 10
    line = np.arange(10.0)[:, None]
    best = clustering.kmeans(line, 2, seed=0)
    assert best.inertia == pytest.approx(20.0)
    assert sorted(best.centers.ravel()) == pytest.approx([2.0, 7.0])
    # Lloyd's iterations stop at a fixed point: every point at its nearest centre, every
    # centre the mean of its points
    fixed = clustering.lloyd(line, np.array([[0.0], [1.0]]))
    np.testing.assert_array_equal(
        fixed.labels, clustering.squared_distances(line, fixed.centers).argmin(axis=1))
    for j in range(2):
        assert fixed.centers[j, 0] == pytest.approx(line[fixed.labels == j].mean())
    # k-means++ never picks a point twice, and kmeans keeps the best of its restarts
    for seed in range(20):
        centres = clustering.kmeans_plus_plus(np.array([[0.0], [1.0], [100.0]]), 3,
                                              np.random.default_rng(seed))
        assert len(np.unique(centres)) == 3
    points = np.random.default_rng(3).normal(size=(30, 2))
    rng = np.random.default_rng(5)
    restarts = [clustering.lloyd(points, clustering.kmeans_plus_plus(points, 5, rng)).inertia
                for _ in range(10)]
    assert len(set(np.round(restarts, 9))) > 1
    assert clustering.kmeans(points, 5, seed=5, restarts=10).inertia == \
        pytest.approx(min(restarts))


def test_choose_k_tries_2_to_n_minus_1_and_prefers_the_smaller_k_on_a_tie(monkeypatch):
    heads = np.random.default_rng(0).normal(size=(2, 4, 6))
    assert sorted(map(int, clustering.cluster_heads(heads)["silhouette_by_k"])) == \
        list(range(2, 8))
    nearly_equal = np.ones((1, 3, 12))
    nearly_equal[0, 1] *= 1 + 1e-6  # not identical heads: clustered, not all in one
    assert clustering.cluster_heads(nearly_equal)["chosen_by"] == "silhouette"
    monkeypatch.setattr(clustering, "silhouette_score", lambda points, labels: 0.5)
    assert clustering.choose_k(np.arange(10.0)[:, None], range(2, 5))[0] == 2


@pytest.mark.parametrize("damage", ["nan accuracy", "wrong field count", "step backwards",
                                    "accuracy above 1"])
def test_a_damaged_metrics_row_is_named_by_its_line_in_the_file_blank_lines_counted(
        tmp_path, damage):
    # A hand-edited file may hold blank lines; the error must point at the line an editor
    # shows, not at the row's index among the non-blank ones.
    directory = write_synthetic_run(tmp_path)
    lines = (directory / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[5].split(",")
    if damage == "nan accuracy":
        row[header.index("val_acc")] = "nan"
    elif damage == "wrong field count":
        row.append("0")
    elif damage == "step backwards":
        row[header.index("step")] = lines[4].split(",")[header.index("step")]
    else:
        row[header.index("train_acc")] = "1.5"
    lines[5] = ",".join(row)
    lines[2:2] = ["", ""]  # two blank lines before it: the damaged row is now line 8
    (directory / "metrics.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirectoryError, match="metrics.csv: line 8[: ]"):
        load_run(directory)


# -- claims on inputs where a wrong reading gives another verdict (each written against a
# -- mutant that a mutation run of the analysis found alive) -------------------------------


def test_claim_two_reads_the_end_of_the_transition_not_the_last_step():
    phases = find_phases([10, 20, 30, 40, 50], [1] * 5, [0.1, 0.6, 1, 1, 1])  # 20 -> 30
    timeline = any_timeline(np.zeros((2, 2)), np.ones((2, 2)), [1, 0.9, 0.5, 1.2, 1.2],
                            [0.9, 0.95, 0.99, 0.999], steps=(10, 20, 30, 40, 50))
    result = claims.clean_patterns_in_transition(phases, timeline, window=1)
    assert result["at_transition_end"]["step"] == 30
    assert result["holds"] is True  # at the last step (50) entropy had risen again


def test_claim_two_an_entropy_that_stays_the_same_does_not_fall():
    # one-hot rows at both ends: entropy 0 -> 0, while consistency rises
    timeline = any_timeline(np.zeros((2, 2)), np.ones((2, 2)), np.zeros(4), [0.5, 0.6, 0.7])
    result = claims.clean_patterns_in_transition(GROKKED, timeline, window=1)
    assert result["consistency_rises"] is True
    assert result["entropy_falls"] is False and result["holds"] is False


def test_claim_three_window_holds_only_the_intervals_inside_it_and_the_default_threshold():
    # ten steps: the window starts at step 70, so its intervals are 70-80 and 80-90 (0.995
    # each); the interval 60-70 (0.9) ends inside it but began before, and stays out
    chaotic = 0.9 * math.log(4)
    timeline = any_timeline(np.full((2, 2), 90), np.ones((2, 2)), np.full(10, chaotic),
                            [0.5] * 6 + [0.9, 0.995, 0.995], steps=np.arange(0, 100, 10))
    result = claims.failed_run_stays_chaotic(FAILED, timeline)  # the default thresholds
    assert result["consistency"] == pytest.approx(0.995)
    assert result["thresholds"]["stable_consistency"] == 0.99
    assert result["unstable"] is False and result["holds"] is False


def test_claim_one_reports_the_earliest_emergence():
    timeline = hand_timeline([[10, 20], [30, 40]], [[1.0, 0.95], [0.5, 0.4]],
                             np.zeros(4), np.ones(3))
    assert claims.position_patterns_first(GROKKED, timeline)["earliest_emergence_step"] == 10


# -- the report's numbers, each at the step it names (each written against a mutant that a
# -- mutation run of the analysis found alive) ---------------------------------------------


def test_the_report_reads_each_number_at_the_step_it_names(grokking_run):
    from tinygrok.analysis.run_analysis import Settings, phase_end_steps

    run = load_run(grokking_run)
    analysis = analyze_run(run)
    report = analysis.report
    # the synthetic run memorises at 130, starts its transition at 500 and groks at 640;
    # its weight norm is 20 + 30 exp(-step / 400) (tests/synthetic_run.py)
    assert phase_end_steps(analysis.phases) == [("memorization", 500), ("transition", 640),
                                                ("post_grokking", 1000)]
    norm = report["weight_norm"]
    for key, step in (("at_memorization_start", 130), ("at_transition_start", 500),
                      ("at_grok_step", 640)):
        assert norm[key] == pytest.approx(20 + 30 * math.exp(-step / 400), rel=1e-9), key
    # the heads are clustered on the patterns of the step each phase ends at
    settings = Settings()
    vectors = attention_metrics.pattern_vectors(run.patterns)
    for label, step in (("memorization", 500), ("transition", 640), ("post_grokking", 1000)):
        found = report["attention"]["clusters_at_phase_ends"][label]
        expected = clustering.cluster_heads(vectors[list(run.attention_steps).index(step)],
                                            settings.clusters, seed=settings.seed)
        assert found["step"] == step
        np.testing.assert_allclose(found["similarity"], expected["similarity"])
    # the mid-transition Fourier snapshot: the embedding step nearest (500 + 640) / 2
    assert report["fourier"]["snapshots"]["transition"]["step"] == 600


def test_each_heads_final_numbers_are_its_own_at_the_last_logged_step(tmp_path):
    # a failed run, whose patterns still change between the last two logged steps
    analysis = analyze_run(load_run(write_synthetic_run(tmp_path, curve="fail")))
    timeline = analysis.timeline
    assert not np.allclose(timeline.position_score[-1], timeline.position_score[-2])
    for head in analysis.report["attention"]["per_head"]:
        where = (-1, head["layer"], head["head"])
        assert head["final_entropy_last"] == pytest.approx(timeline.entropy_last[where])
        assert head["final_entropy_mean"] == pytest.approx(timeline.entropy_mean[where])
        assert head["final_position_score"] == pytest.approx(timeline.position_score[where])
        assert head["final_consistency"] == pytest.approx(timeline.consistency[where])


def test_an_unfinished_run_that_already_grokked_reports_its_grokking_step(grokking_run,
                                                                           tmp_path):
    import shutil

    unfinished = tmp_path / grokking_run.name
    shutil.copytree(grokking_run, unfinished)
    (unfinished / "summary.json").unlink()
    report = analyze_run(load_run(unfinished)).report
    assert report["final"]["step_val_acc_99"] == 640


def test_the_settings_consistency_window_reaches_the_claims(grokking_run):
    from tinygrok.analysis.run_analysis import Settings

    claim = analyze_run(load_run(grokking_run), Settings(consistency_window=1)).report[
        "claims"]["clean_patterns_in_transition"]
    default = analyze_run(load_run(grokking_run)).report["claims"][
        "clean_patterns_in_transition"]
    assert claim["thresholds"]["consistency_window"] == 1
    assert (claim["at_transition_start"]["consistency"]
            != default["at_transition_start"]["consistency"])


# -- clustering and Fourier formulas on inputs that tell them apart (asymmetric clusters,
# -- norms at the thresholds; each written against a mutant found alive) -------------------


def test_silhouette_and_kmeans_on_an_uneven_clustering_by_hand():
    # points 0, 2 in one cluster and 3 alone: s(0) = (3 - 2) / 3, s(2) = (1 - 2) / 2, and a
    # point alone scores 0, so the mean is (1/3 - 1/2 + 0) / 3 = -1/18
    assert clustering.silhouette_score([[0], [2], [3]], [0, 0, 1]) == pytest.approx(-1 / 18)
    result = clustering.kmeans([[0], [1], [5]], 1)  # the mean, not the median: centre 2
    np.testing.assert_allclose(result.centers, [[2.0]])
    assert result.inertia == pytest.approx(4 + 1 + 9)


def test_key_frequencies_exceed_a_quarter_of_the_largest_and_noise_is_a_millionth():
    assert fourier.key_frequencies([0, 4, 1.5]) == [1, 2]  # 1.5 > 4 / 4
    assert fourier.key_frequencies([0, 4, 1.0]) == [1]  # exactly a quarter does not exceed
    np.testing.assert_allclose(fourier.wave_norms([10, 0.05, 0.05, 1]), [0.05, 0.05, 1])
    # below a millionth of the spectrum's norm is rounding noise, above it a wave
    np.testing.assert_array_equal(fourier.wave_norms([1, 1e-7]), [0])
    np.testing.assert_array_equal(fourier.wave_norms([1, 1e-5]), [1e-5])


@pytest.mark.parametrize("threshold", ["memorized_train_acc", "memorization_max_val_acc",
                                       "grokked_val_acc"])
def test_a_threshold_given_as_a_percentage_is_refused(threshold):
    # grokked_val_acc=99 read every run as never grokked, with no error
    with pytest.raises(ValueError, match=rf"{threshold} must be a fraction in \[0, 1\] \(not "
                                         rf"a percentage\), got 99"):
        find_phases([100, 200, 300], [1, 1, 1], [0.1, 0.995, 1.0], **{threshold: 99})
    with pytest.raises(ValueError, match=rf"{threshold} must be a fraction"):
        find_phases([100, 200, 300], [1, 1, 1], [0.1, 0.995, 1.0], **{threshold: True})


def test_an_attention_timeline_refuses_steps_out_of_order():
    from tinygrok.analysis.attention_metrics import attention_timeline

    patterns = np.full((3, 1, 1, 2, 2, 2), 0.5)
    attention_timeline([0, 10, 20], patterns)  # in order: fine
    for steps in ([20, 10, 0], [0, 10, 10]):
        with pytest.raises(ValueError, match="increasing order"):
            attention_timeline(steps, patterns)


def test_a_nan_accuracy_is_named_as_such():
    # it said "got values from 0.5 to 0.5": nanmin hid the NaN
    with pytest.raises(ValueError, match="val_acc must be fractions in \\[0, 1\\], got NaN or "
                                         "infinity at index 1"):
        find_phases([1, 2], [0.5, 0.5], [0.5, np.nan])


def test_pattern_and_analyze_run_name_a_bad_argument(tmp_path):
    from tinygrok.analysis import analyze_run, load_run

    run = load_run(write_synthetic_run(tmp_path))
    first = int(run.attention_steps[0])
    for step in ("10", True):
        with pytest.raises(ValueError, match=f"step must be a number, got {step!r}"):
            run.pattern(step=step, layer=0)
    with pytest.raises(ValueError, match=r"layer must be an integer from 0 to 1 \(or from -2"):
        run.pattern(step=first, layer=5)
    np.testing.assert_array_equal(run.pattern(first, -1), run.pattern(float(first), 1))
    with pytest.raises(TypeError, match="analyze_run takes a run directory's path"):
        analyze_run(None)
    with pytest.raises(TypeError, match="settings must be a Settings"):
        analyze_run(run, {"grokked_val_acc": 0.9})


# -- numbers and checks of the run reader and the report that a second mutation run found
# -- unpinned: each test below failed on a mutant that every other test let through -------


def test_gini_first_and_final_are_the_first_and_last_snapshots_spectra(grokking_run):
    run = load_run(grokking_run)
    report = analyze_run(run).report["fourier"]

    def gini_of(snapshot):
        grouped = fourier.group_embeddings(run.token_embeddings[snapshot], "x_plus_y", 11)
        return fourier.gini(fourier.wave_norms(fourier.frequency_norms(grouped)))

    assert report["gini_first"] == pytest.approx(gini_of(0), rel=1e-12)
    assert report["gini_final"] == pytest.approx(gini_of(-1), rel=1e-12)
    assert gini_of(0) != pytest.approx(gini_of(1), rel=1e-12)  # so the test can tell them apart


def test_the_transition_snapshot_is_the_one_nearest_the_middle_of_the_transition():
    from types import SimpleNamespace

    from tinygrok.analysis.run_analysis import fourier_snapshot_indices

    spectrum = SimpleNamespace(steps=np.arange(0, 1001, 100))
    phases = {"transition": {"start": 200, "end": 800}}
    assert fourier_snapshot_indices(spectrum, phases) == [("start", 0), ("transition", 5),
                                                          ("end", 10)]
    assert fourier_snapshot_indices(spectrum, {"transition": None}) == [("start", 0),
                                                                       ("end", 10)]


def test_a_nan_weight_norm_row_is_left_out_of_the_maximum(tmp_path):
    directory = write_synthetic_run(tmp_path)
    rows = (directory / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("weight_norm")
    cells = rows[5].split(",")
    cells[column] = "nan"
    rows[5] = ",".join(cells)
    (directory / "metrics.csv").write_text("\n".join(rows) + "\n")
    run = load_run(directory)
    norms = run.metrics["weight_norm"]
    assert np.isnan(norms[4])
    assert analyze_run(run).report["weight_norm"]["max"] == pytest.approx(np.nanmax(norms))


def test_json_ready_turns_nan_and_infinities_into_none():
    from tinygrok.analysis.run_analysis import json_ready

    ready = json_ready({"a": float("nan"), "b": [np.float32("inf"), -math.inf, 1.5],
                        "c": np.array([np.nan, 2.0])})
    assert ready == {"a": None, "b": [None, None, 1.5], "c": [None, 2.0]}
    json.dumps(ready, allow_nan=False)  # what analyze writes analysis.json with


def test_nearest_index_takes_the_earlier_step_on_a_tie():
    from tinygrok.analysis.rundir import nearest_index

    assert nearest_index([0, 10, 20], 5) == 0
    assert nearest_index([0, 10, 20], 15) == 1
    assert nearest_index([0, 10, 20], 16) == 2


def test_the_clock_fit_of_points_on_a_line_is_one_over_root_two():
    angles = 2 * np.pi * 4 * np.arange(23) / 23
    on_a_line = np.outer(np.cos(angles) + np.sin(angles), [1.0, 2.0, -1.0])
    _, fit = fourier.clock(on_a_line, 4)
    assert fit == pytest.approx(1 / math.sqrt(2), rel=1e-9)


def test_a_damaged_summary_makes_load_run_see_an_unfinished_run(tmp_path):
    directory = write_synthetic_run(tmp_path, curve="fail")
    (directory / "summary.json").write_text("{}")
    run = load_run(directory)
    assert not run.complete
    report = analyze_run(run).report
    assert report["claims"]["failed_run_stays_chaotic"]["holds"] is None
    assert report["final"]["step_val_acc_99"] is None


def test_seconds_in_metrics_csv_take_precedence_and_timing_rows_match_by_step(tmp_path):
    directory = write_synthetic_run(tmp_path)
    timing = (directory / "timing.csv").read_text().splitlines()
    (directory / "timing.csv").write_text("\n".join(timing[:3] + timing[4:]) + "\n")
    seconds = load_run(directory).metrics["seconds"]  # the third logged step has no time
    assert len(seconds) == len(timing) - 1 and np.isnan(seconds[2])
    assert not np.isnan(np.delete(seconds, 2)).any()
    np.testing.assert_allclose(seconds[3], float(timing[4].split(",")[1]))
    rows = (directory / "metrics.csv").read_text().splitlines()
    with_seconds = [rows[0] + ",seconds"] + [row + ",7.5" for row in rows[1:]]
    (directory / "metrics.csv").write_text("\n".join(with_seconds) + "\n")
    np.testing.assert_array_equal(load_run(directory).metrics["seconds"], 7.5)


@pytest.mark.parametrize("damage, message", [
    (lambda arrays: {**arrays, "steps": arrays["steps"][:-1]}, "expected (S="),
    (lambda arrays: {**arrays, "probe_inputs": arrays["probe_inputs"][:-1]},
     "disagree on N"),
], ids=["one-step-short", "one-probe-short"])
def test_an_attention_log_whose_arrays_disagree_is_refused(tmp_path, damage, message):
    directory = write_synthetic_run(tmp_path)
    arrays = runfiles.read_npz(directory / "attention.npz")
    np.savez(directory / "attention.npz", **damage(arrays))
    with pytest.raises(RunDirectoryError, match=re.escape(message)):
        load_run(directory)


def test_one_attention_log_is_too_few_for_the_attention_analysis(tmp_path):
    directory = write_synthetic_run(tmp_path)
    arrays = runfiles.read_npz(directory / "attention.npz")
    np.savez(directory / "attention.npz", **{**arrays, "steps": arrays["steps"][:1],
                                              "patterns": arrays["patterns"][:1]})
    report = analyze_run(load_run(directory)).report
    assert "at least two" in report["attention"]["skipped"]
    assert all(claim["holds"] is None for claim in report["claims"].values())


def test_claim_two_says_when_the_transition_is_shorter_than_a_log_interval():
    transition = {**GROKKED["transition"], "start": 30, "end": 30, "completed": True}
    timeline = any_timeline(np.zeros((2, 2)), np.ones((2, 2)), np.zeros(4), np.ones(3))
    result = claims.clean_patterns_in_transition({**GROKKED, "transition": transition},
                                                 timeline)
    assert result["holds"] is None
    assert result["reason"] == "the transition is shorter than one log interval"


def test_claim_three_of_an_unfinished_run_that_grokked_says_it_grokked(grokking_run, tmp_path):
    import shutil

    unfinished = tmp_path / grokking_run.name
    shutil.copytree(grokking_run, unfinished)
    (unfinished / "summary.json").unlink()
    claim = analyze_run(load_run(unfinished)).report["claims"]["failed_run_stays_chaotic"]
    assert claim["holds"] is None and claim["reason"].startswith("the run grokked at step")


def test_claims_one_and_three_do_not_apply_to_a_run_that_never_learnt_its_training_set(
        tmp_path):
    """A 20-step run came out "a failed run keeps chaotic attention: true" (a student's
    walkthrough): a run that neither learnt its training set nor grokked is not the
    paper's failure."""
    short = analyze_run(load_run(write_synthetic_run(tmp_path / "short", curve="fail",
                                                     steps=50))).report
    assert short["phases"]["memorization"] is None and not short["phases"]["grokked"]
    for name in ("position_patterns_first", "failed_run_stays_chaotic"):
        assert short["claims"][name]["holds"] is None
        assert short["claims"][name]["reason"].startswith(
            "the run neither learnt its training set nor grokked")
    failed = analyze_run(load_run(write_synthetic_run(tmp_path / "long", curve="fail"))).report
    assert failed["phases"]["memorization"] is not None  # the same curve, memorised later
    assert failed["claims"]["failed_run_stays_chaotic"]["holds"] is True
    assert failed["claims"]["position_patterns_first"]["holds"] is not None


def test_a_run_that_fit_its_training_set_without_memorising_still_gets_claims_one_and_three():
    """Train acc reaches 1 while val acc is already 0.9, and the run never groks: no
    memorization phase (val acc was never < 0.5), but it learnt its training set and failed
    to generalise, which is what claim 3 is about (a review's case)."""
    steps = np.arange(10, 110, 10)
    train = np.minimum(1.0, steps / 30)
    val = np.full(len(steps), 0.9)
    phases = find_phases(steps, train, val)
    assert phases["memorization"] is None and not phases["grokked"]
    assert phases["fit_training_set"] is True
    assert claims.never_learnt(phases) is None
    short = find_phases(steps[:2], train[:2], val[:2])
    assert short["fit_training_set"] is False
    assert claims.never_learnt(short).startswith("the run neither learnt its training set")
