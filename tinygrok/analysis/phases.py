"""The phases of a grokking run, read off its accuracy curves.

The paper names three phases: *memorization* (training accuracy > 99% while validation
accuracy < 50%), a *transition* (validation accuracy rises to > 99%) and *post-grokking*.
It gives no rule for where one ends and the next begins, so here is one. With the logged
steps s_1 < s_2 < ... and the default thresholds:

- grokking step g: the first logged step with val_acc > 0.99 (the run "groks" there).
- memorization starts at the first logged step *before g* with train_acc > 0.99 and
  val_acc < 0.5: the training set is learnt, the validation set is not. It ends at the
  first later step with val_acc >= 0.5 (the memorization condition no longer holds
  because the model has started to generalise), or at g if validation accuracy jumps past
  0.99 between two logged steps, or at the last logged step if neither happens.
- transition: from the end of memorization to g. If the run never groks but validation
  accuracy did reach 0.5, the transition runs to the last logged step and is marked
  ``"completed": False``.
- post-grokking: from g to the last logged step. (The paper's post-grokking phase has 100%
  validation accuracy and stable patterns; here it starts at g, and the patterns'
  stability is measured on its own, as consistency, not used to place the phase.)

Neighbouring phases share their boundary step: ``end`` of one phase is ``start`` of the next,
so the phases tile the steps they cover. Before memorization starts the model is still
fitting its training set; that stretch belongs to no phase.

A phase that never happens is None, never a guess: a run that never groks has no transition
(unless val_acc reached 0.5) and no post-grokking; a run whose validation accuracy exceeds
0.99 before it ever memorised has a grokking step but no memorization and no transition
(it generalised without a delay, which the ``notes`` say).

``fit_training_set`` says whether train_acc exceeded 0.99 at any logged step, memorization
or not: a run that fits its training set while val_acc is already >= 0.5 has no
memorization phase, yet it learnt its training set (claims.py asks).

Dips: after g, validation accuracy can fall back. A dip is a maximal run of logged steps
with val_acc <= 0.99 (the grokked condition no longer holds). For each dip we report its
``start`` (first step at or below the threshold), ``end`` (the first step above it again,
None if the run ends inside the dip), ``min_val_acc`` and the ``min_step`` where it is
reached, ``depth`` (the val_acc of the step just before the dip minus the minimum) and
``duration`` (end - start, or last step - start when unrecovered: then a lower bound).

:func:`find_phases` is a pure function of three arrays returning a dict of plain Python
numbers, so the training loop can store its result in summary.json.
"""

import numpy as np

MEMORIZED_TRAIN_ACC = 0.99
MEMORIZATION_MAX_VAL_ACC = 0.5
GROKKED_VAL_ACC = 0.99

PHASE_NAMES = ("memorization", "transition", "post_grokking")


def find_phases(
    steps,
    train_acc,
    val_acc,
    *,
    memorized_train_acc=MEMORIZED_TRAIN_ACC,
    memorization_max_val_acc=MEMORIZATION_MAX_VAL_ACC,
    grokked_val_acc=GROKKED_VAL_ACC,
):
    """The phases, grokking step and dips of one run, as a JSON-serialisable dict."""
    for name, value in (("memorized_train_acc", memorized_train_acc),
                        ("memorization_max_val_acc", memorization_max_val_acc),
                        ("grokked_val_acc", grokked_val_acc)):
        # 99 (a percentage) would read every run as never grokked, with no error
        if not (isinstance(value, (int, float, np.integer, np.floating))
                and not isinstance(value, (bool, np.bool_)) and 0 <= value <= 1):
            raise ValueError(f"{name} must be a fraction in [0, 1] (not a percentage), got "
                             f"{value!r}")
    steps, train_acc, val_acc = _as_curves(steps, train_acc, val_acc)
    n = len(steps)
    grok = _first(val_acc > grokked_val_acc)
    before_grok = n if grok is None else grok
    memorized = (train_acc > memorized_train_acc) & (val_acc < memorization_max_val_acc)
    memorization_start = _first(memorized[:before_grok])
    memorization_end = _memorization_end(
        val_acc, memorization_start, grok, before_grok, memorization_max_val_acc
    )

    def step(i):
        return None if i is None else int(steps[i])

    last = n - 1 if n else None
    result = {
        "thresholds": {
            "memorized_train_acc": memorized_train_acc,
            "memorization_max_val_acc": memorization_max_val_acc,
            "grokked_val_acc": grokked_val_acc,
        },
        "last_step": step(last),
        "grok_step": step(grok),
        "grokked": grok is not None,
        # the training set was learnt at some logged step, memorised or not (claims.py)
        "fit_training_set": bool(np.any(train_acc > memorized_train_acc)),
        "memorization": None,
        "transition": None,
        "post_grokking": None,
        "dips": [] if grok is None else find_dips(steps, val_acc, grok, grokked_val_acc),
        "notes": _notes(train_acc, memorized_train_acc, memorization_start, grok, n,
                        grokked_val_acc),
    }
    if memorization_start is not None:
        end = memorization_end if memorization_end is not None else last
        result["memorization"] = {"start": step(memorization_start), "end": step(end)}
    if memorization_end is not None:
        result["transition"] = {
            "start": step(memorization_end),
            "end": step(last if grok is None else grok),
            "completed": grok is not None,
        }
    if grok is not None:
        result["post_grokking"] = {"start": step(grok), "end": step(last)}
    return result


def find_dips(steps, val_acc, grok_index, threshold=GROKKED_VAL_ACC):
    """Every stretch after the grokking step where val_acc is back at or below threshold."""
    dips = []
    i = grok_index + 1
    while i < len(steps):
        if val_acc[i] > threshold:
            i += 1
            continue
        start = i
        while i < len(steps) and val_acc[i] <= threshold:
            i += 1
        lowest = start + int(np.argmin(val_acc[start:i]))
        recovered = i < len(steps)
        end_step = int(steps[i]) if recovered else None
        dips.append({
            "start": int(steps[start]),
            "end": end_step,
            "recovered": recovered,
            "min_val_acc": float(val_acc[lowest]),
            "min_step": int(steps[lowest]),
            "depth": float(val_acc[start - 1] - val_acc[lowest]),
            "duration": (end_step if recovered else int(steps[-1])) - int(steps[start]),
        })
    return dips


def phase_bands(phases):
    """[(name, start, end), ...] for the phases that happened, in order (for shading plots)."""
    return [
        (name, phases[name]["start"], phases[name]["end"])
        for name in PHASE_NAMES
        if phases.get(name) is not None
    ]


def _memorization_end(val_acc, start, grok, before_grok, max_val_acc):
    """Index where memorization ends: val_acc reaches max_val_acc, else g, else None."""
    if start is None:
        return None
    rising = _first(val_acc[start:before_grok] >= max_val_acc)
    if rising is not None:
        return start + rising
    return grok


def _notes(train_acc, memorized_train_acc, memorization_start, grok, n, grokked_val_acc):
    """Plain-language remarks about the cases where a phase is missing."""
    if n == 0:
        return ["no logged steps"]
    notes = []
    if not np.any(train_acc > memorized_train_acc):
        notes.append(f"train_acc never exceeded {memorized_train_acc}")
    if grok is None:
        notes.append(f"val_acc never exceeded {grokked_val_acc}: the run did not grok")
    elif memorization_start is None:
        notes.append(
            f"val_acc exceeded {grokked_val_acc} without a memorization phase before it "
            "(it generalised without memorising first)"
        )
    return notes


def _as_curves(steps, train_acc, val_acc):
    steps = np.asarray(steps, dtype=np.int64)
    train_acc = np.asarray(train_acc, dtype=np.float64)
    val_acc = np.asarray(val_acc, dtype=np.float64)
    if not (steps.ndim == train_acc.ndim == val_acc.ndim == 1):
        raise ValueError("steps, train_acc and val_acc must be 1-D arrays")
    if not (len(steps) == len(train_acc) == len(val_acc)):
        raise ValueError("steps, train_acc and val_acc must have the same length")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be strictly increasing")
    for name, acc in (("train_acc", train_acc), ("val_acc", val_acc)):
        if acc.size and not np.all(np.isfinite(acc)):  # nanmin below would hide them
            raise ValueError(f"{name} must be fractions in [0, 1], got NaN or infinity at "
                             f"index {int(np.flatnonzero(~np.isfinite(acc))[0])}")
        if acc.size and not (0 <= acc.min() and acc.max() <= 1):
            raise ValueError(f"{name} must be fractions in [0, 1] (not percentages), got "
                             f"values from {acc.min()} to {acc.max()}")
    return steps, train_acc, val_acc


def _first(mask):
    """Index of the first True in a boolean array, or None."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None
