"""The paper's three claims about attention, turned into measurements on one run.

Each claim comes back as ``{"holds": True | False | None, "reason": str, "thresholds": {...},
...numbers}``. ``holds`` is what the numbers say with the thresholds stated beside them; None
means the claim does not apply to this run (``reason`` says why). The thresholds are
parameters, not tuned: change them and the verdict may change, which is why the numbers are
always reported too.

1. *Position patterns emerge before task-specific ones* (paper: "position patterns emerge
   first ... followed by task-specific specialization in deeper layers"). Two tests:
   (a) layers: the mean emergence step of the first layer's heads is earlier than the last
   layer's; (b) heads: rank all heads by their position score at the final step; the top
   half (most positional) has an earlier mean emergence step than the bottom half (with an
   odd number of heads the middle one is left out; when the scores tie across the split,
   test (b) does not apply). The claim holds if every test that applies holds.
   Not applicable to a run that never learnt its training set (see below).
2. *Clean patterns form during the transition*: between the start and the end of the
   transition phase the entropy of the last query row ("=", the row that produces the
   answer; mean over heads and probes) falls and the consistency (mean over heads of the
   cosine similarity between consecutive logged patterns, averaged over the ``window`` log
   intervals up to that step) rises. Not applicable without a completed transition that
   spans at least one log interval and whose start and end fall on different attention
   logs.
3. *A failed task keeps chaotic attention*: only for runs that did not grok. Over the last
   ``final_fraction`` of the logged steps the last-row entropy, as a fraction of its maximum
   ln T, is >= ``chaotic_entropy_fraction`` (high entropy) and the mean consistency is
   < ``stable_consistency`` (unstable). (The paper says "throughout training"; we test the
   end of training, where "keeps" is decided.)

Claims 1 and 3 are about runs that learnt their training set: ones that grokked, or whose
train acc passed 0.99 and then failed to generalise. A run that did neither (20 steps, say,
or a learning rate too small) is not the failure the paper describes, and the patterns it
ends with are not ones it settled on, so neither claim applies to it (``holds`` None).
Without this, a 20-step run came out "a failed run keeps chaotic attention: true".
"""

import numpy as np

from .rundir import nearest_index

CONSISTENCY_WINDOW = 5
CHAOTIC_ENTROPY_FRACTION = 0.5
STABLE_CONSISTENCY = 0.99
FINAL_FRACTION = 0.25

# Each claim's key in the results and its short title, in the paper's order (claims 1-3).
CLAIM_TITLES = {
    "position_patterns_first": "position patterns emerge first",
    "clean_patterns_in_transition": "clean patterns form during the transition",
    "failed_run_stays_chaotic": "a failed run keeps chaotic attention",
}


def verdict_word(holds) -> str:
    """A claim's ``holds`` as a word for tables and summaries."""
    return {True: "true", False: "false", None: "n/a"}[holds]


def evaluate_claims(
    phases,
    timeline,
    *,
    consistency_window=CONSISTENCY_WINDOW,
    chaotic_entropy_fraction=CHAOTIC_ENTROPY_FRACTION,
    stable_consistency=STABLE_CONSISTENCY,
    final_fraction=FINAL_FRACTION,
):
    """All three claims for one run's phases and AttentionTimeline."""
    return {
        "position_patterns_first": position_patterns_first(phases, timeline),
        "clean_patterns_in_transition": clean_patterns_in_transition(
            phases, timeline, window=consistency_window
        ),
        "failed_run_stays_chaotic": failed_run_stays_chaotic(
            phases,
            timeline,
            chaotic_entropy_fraction=chaotic_entropy_fraction,
            stable_consistency=stable_consistency,
            final_fraction=final_fraction,
        ),
    }


def never_learnt(phases):
    """Why claims 1 and 3 do not apply to this run, or None if they do: the run neither
    grokked nor learnt its training set (the module docstring says why). Phases saved
    before ``fit_training_set`` existed count a memorization phase instead."""
    fit = phases.get("fit_training_set", phases["memorization"] is not None)
    if phases["grokked"] or fit:
        return None
    return (f"the run neither learnt its training set nor grokked: its train acc never "
            f"passed {phases['thresholds']['memorized_train_acc']}; the claim is about runs "
            f"that learnt their training set")


def position_patterns_first(phases, timeline):
    """Claim 1: do the first layer and the most positional heads settle first?"""
    not_applicable = never_learnt(phases)
    if not_applicable:
        return {"holds": None, "reason": not_applicable,
                "thresholds": {"emergence_similarity": timeline.emergence_threshold}}
    emergence = timeline.emergence_step.astype(np.float64)
    layer_means = emergence.mean(axis=1)
    layers_test = None
    if timeline.layers >= 2:
        layers_test = bool(layer_means[0] < layer_means[-1])

    final_score = timeline.position_score[-1].ravel()
    ranking = np.argsort(-final_score, kind="stable")  # most positional first
    half = len(ranking) // 2
    heads_test, high_mean, low_mean, heads_tie = None, None, None, False
    if half >= 1:
        most, least = ranking[:half], ranking[-half:]
        # Equal scores across a boundary (purely positional heads all score 1) would let the
        # heads' numbering decide which half a head is in, or which one is left out in the
        # middle: then the heads are not judged.
        ordered = final_score[ranking]
        heads_tie = bool(ordered[half - 1] == ordered[half]
                         or ordered[-half - 1] == ordered[-half])
        if not heads_tie:
            high_mean = float(emergence.ravel()[most].mean())
            low_mean = float(emergence.ravel()[least].mean())
            heads_test = bool(high_mean < low_mean)

    tests = [t for t in (layers_test, heads_test) if t is not None]
    return {
        "holds": all(tests) if tests else None,
        "reason": _position_reason(layers_test, heads_test, heads_tie),
        "thresholds": {"emergence_similarity": timeline.emergence_threshold,
                       "head_split": "top half vs bottom half by final position score"},
        "emergence_step_by_layer_head": timeline.emergence_step.tolist(),
        "mean_emergence_step_by_layer": layer_means.tolist(),
        "final_position_score_by_layer_head": timeline.position_score[-1].tolist(),
        "first_layer_earlier": layers_test,
        "mean_emergence_most_positional_half": high_mean,
        "mean_emergence_least_positional_half": low_mean,
        "most_positional_half_earlier": heads_test,
        "earliest_emergence_step": int(timeline.emergence_step.min()),
        "grok_step": phases["grok_step"],
    }


def clean_patterns_in_transition(phases, timeline, window=CONSISTENCY_WINDOW):
    """Claim 2: from transition start to end, does entropy fall and consistency rise?"""
    transition = phases.get("transition")
    result = {"holds": None, "thresholds": {"consistency_window": window}}
    if transition is None or not transition["completed"]:
        result["reason"] = "no completed transition phase in this run"
        return result
    if transition["start"] == transition["end"]:
        result["reason"] = "the transition is shorter than one log interval"
        return result
    start = _attention_state(timeline, transition["start"], window)
    end = _attention_state(timeline, transition["end"], window)
    if start["step"] == end["step"]:
        result["reason"] = (f"the transition's start and end fall on the same attention log "
                            f"(step {start['step']})")
        return result
    entropy_falls = end["entropy_last"] < start["entropy_last"]
    consistency_rises = end["consistency"] > start["consistency"]
    result.update({
        "holds": bool(entropy_falls and consistency_rises),
        "reason": (f"last-row entropy {start['entropy_last']:.4f} -> {end['entropy_last']:.4f}, "
                   f"consistency {start['consistency']:.5f} -> {end['consistency']:.5f}"),
        "at_transition_start": start,
        "at_transition_end": end,
        "entropy_falls": bool(entropy_falls),
        "consistency_rises": bool(consistency_rises),
    })
    if phases.get("memorization") is not None:
        result["at_memorization_start"] = _attention_state(
            timeline, phases["memorization"]["start"], window
        )
    return result


def failed_run_stays_chaotic(
    phases,
    timeline,
    *,
    chaotic_entropy_fraction=CHAOTIC_ENTROPY_FRACTION,
    stable_consistency=STABLE_CONSISTENCY,
    final_fraction=FINAL_FRACTION,
):
    """Claim 3: for a run that did not grok, is its final attention high-entropy and unstable?"""
    result = {
        "holds": None,
        "thresholds": {
            "chaotic_entropy_fraction": chaotic_entropy_fraction,
            "stable_consistency": stable_consistency,
            "final_fraction": final_fraction,
        },
    }
    if phases["grokked"]:
        result["reason"] = (f"the run grokked at step {phases['grok_step']}; "
                            "the claim is about runs that fail")
        return result
    not_applicable = never_learnt(phases)
    if not_applicable:
        result["reason"] = not_applicable
        return result
    steps = len(timeline.steps)
    first = min(int(np.floor(steps * (1 - final_fraction))), steps - 2)
    entropy_fraction = timeline.entropy_last[first:].mean(axis=0) / timeline.max_entropy_last
    consistency = timeline.consistency[first:].mean(axis=0)  # intervals inside the window
    mean_entropy_fraction = float(entropy_fraction.mean())
    mean_consistency = float(consistency.mean())
    chaotic = mean_entropy_fraction >= chaotic_entropy_fraction
    unstable = mean_consistency < stable_consistency
    result.update({
        "holds": bool(chaotic and unstable),
        "reason": (f"from step {int(timeline.steps[first])}: last-row entropy "
                   f"{mean_entropy_fraction:.3f} of ln T (chaotic if >= "
                   f"{chaotic_entropy_fraction}), consistency {mean_consistency:.5f} "
                   f"(unstable if < {stable_consistency})"),
        "window_start_step": int(timeline.steps[first]),
        "entropy_fraction": mean_entropy_fraction,
        "entropy_fraction_by_layer_head": entropy_fraction.tolist(),
        "consistency": mean_consistency,
        "consistency_by_layer_head": consistency.tolist(),
        "high_entropy": bool(chaotic),
        "unstable": bool(unstable),
    })
    return result


def _attention_state(timeline, step, window):
    """Mean-over-heads entropy and recent consistency at the attention step nearest ``step``."""
    i = nearest_index(timeline.steps, step)
    # The intervals ending by step i (at the first step, which ends none, the first one).
    recent = timeline.consistency[max(i - window, 0):max(i, 1)]
    return {
        "step": int(timeline.steps[i]),
        "entropy_last": float(timeline.entropy_last[i].mean()),
        "entropy_mean": float(timeline.entropy_mean[i].mean()),
        "consistency": float(recent.mean()),
    }


def _position_reason(layers_test, heads_test, heads_tie):
    parts = []
    if layers_test is not None:
        parts.append(f"first layer {'earlier' if layers_test else 'not earlier'} than last")
    if heads_test is not None:
        parts.append(f"most positional heads {'earlier' if heads_test else 'not earlier'}")
    if heads_tie:
        parts.append("heads not compared: their position scores tie across the half-way split")
    return "; ".join(parts) if parts else "needs at least two heads"
