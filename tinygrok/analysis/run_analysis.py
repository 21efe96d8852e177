"""Put every analysis of one run together: what ``analysis.json`` holds.

:func:`analyze_run` takes a loaded :class:`~tinygrok.analysis.rundir.Run` and a
:class:`Settings` (every threshold in one place, written into analysis.json beside the
results) and returns an :class:`Analysis`: the JSON-ready ``report`` plus the arrays
(phases, attention timeline, Fourier timeline) the figures are drawn from.

Sections of the report: ``run`` (identity), ``settings``, ``final`` (metrics.csv's last
row: its train_acc and train_loss are the running values over the batches of the last
log window, which summary.json's ``final_train_acc``, measured on the whole train split
after the last step, need not equal),
``phases`` (see ``phases``), ``weight_norm``, ``attention`` (per-head emergence, position
score, entropy, consistency, and head clusters at the end of each phase), ``fourier``
(modular tasks only), and ``claims`` (see ``claims``). A section that cannot be computed is
``{"skipped": reason}``; a claim that cannot be judged is ``{"holds": None, "reason": ...}``.

A run that is not finished (no whole summary.json) is analysed as far as it went, and says
so: a note in its phases, no ``step_val_acc_99`` unless it already grokked (``final``
says why), and claim 3, about runs that fail, does not apply yet.
"""

import math
import os
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from . import attention_metrics, claims, clustering, fourier, phases as phases_module
from .rundir import Run, load_run, nearest_index


@dataclass(frozen=True)
class Settings:
    """Every threshold of the analysis, with the defaults explained in each module."""

    memorized_train_acc: float = phases_module.MEMORIZED_TRAIN_ACC
    memorization_max_val_acc: float = phases_module.MEMORIZATION_MAX_VAL_ACC
    grokked_val_acc: float = phases_module.GROKKED_VAL_ACC
    emergence_similarity: float = attention_metrics.EMERGENCE_SIMILARITY
    consistency_window: int = claims.CONSISTENCY_WINDOW
    chaotic_entropy_fraction: float = claims.CHAOTIC_ENTROPY_FRACTION
    stable_consistency: float = claims.STABLE_CONSISTENCY
    final_fraction: float = claims.FINAL_FRACTION
    key_frequency_ratio: float = fourier.KEY_FREQUENCY_RATIO
    clusters: Optional[int] = None  # None: choose k by silhouette
    seed: int = 0  # for k-means


@dataclass
class Analysis:
    report: dict  # JSON-ready: what analysis.json holds
    phases: dict
    timeline: Optional[attention_metrics.AttentionTimeline]
    fourier: Optional[fourier.FourierTimeline]


def analyze_run(run, settings=Settings()):
    """Every analysis of one run (see the module docstring). ``run``: what ``load_run``
    returns, or the path of a run directory, which is loaded first."""
    if isinstance(run, (str, os.PathLike)):
        run = load_run(run)
    if not isinstance(run, Run):
        raise TypeError(f"analyze_run takes a run directory's path or what load_run returns, "
                        f"got {run!r:.60}")
    if not isinstance(settings, Settings):
        raise TypeError(f"settings must be a Settings(...), got {settings!r:.60}")
    metrics = run.metrics
    phases = phases_module.find_phases(
        metrics["step"], metrics["train_acc"], metrics["val_acc"],
        memorized_train_acc=settings.memorized_train_acc,
        memorization_max_val_acc=settings.memorization_max_val_acc,
        grokked_val_acc=settings.grokked_val_acc,
    )
    if not run.complete and len(metrics["step"]):
        phases["notes"].append(f"the run is not finished (step {phases['last_step']} of "
                               f"{run.config.get('steps')}): these phases are those of the "
                               f"steps logged so far")
    timeline = _timeline(run, settings)
    spectrum = _fourier(run, settings)
    report = {
        "run": _identity(run),
        "settings": asdict(settings),
        "final": _final_metrics(run, phases),
        "phases": phases,
        "weight_norm": _weight_norm(metrics, phases),
        "attention": _attention_report(run, phases, timeline, settings),
        "fourier": _fourier_report(spectrum, phases, run),
        "claims": _claims(phases, timeline, settings, run.complete),
    }
    return Analysis(report=json_ready(report), phases=phases, timeline=timeline,
                    fourier=spectrum)


def phase_end_name(label):
    """How to say one of ``phase_end_steps``' labels: "the end of post-grokking", or "the
    final step" for a run without phases."""
    return "the final step" if label == "final" else f"the end of {label.replace('_', '-')}"


def phase_end_steps(phases):
    """[(label, step)]: the last step of each phase that happened, or the final step."""
    ends = [(name, phases[name]["end"]) for name in phases_module.PHASE_NAMES
            if phases.get(name) is not None]
    if ends or phases["last_step"] is None:  # no phase, or no logged step at all
        return ends
    return [("final", phases["last_step"])]


def json_ready(value):
    """The same structure with NumPy values made plain, and NaN/inf made None."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _identity(run):
    config = run.config
    return {
        "path": str(run.path), "name": run.name, "task": config.get("task"),
        "p": config.get("p"), "seed": config.get("seed"), "steps": config.get("steps"),
        "complete": run.complete,
    }


def _final_metrics(run, phases):
    metrics = run.metrics
    if len(metrics["step"]) == 0:
        return {"skipped": "no logged steps"}
    final = {name: metrics[name][-1] for name in
             ("step", "train_acc", "val_acc", "train_loss", "val_loss", "weight_norm")}
    budget = run.config.get("steps", phases["last_step"])
    final["step_val_acc_99"] = phases["grok_step"] if phases["grokked"] else budget
    if not run.complete and not phases["grokked"]:  # it may still grok: no budget yet
        final["step_val_acc_99"] = None
        final["unfinished"] = (f"the run is not finished: val acc has not exceeded "
                               f"{phases['thresholds']['grokked_val_acc']} in the "
                               f"{final['step']} steps logged so far")
    return final


def _weight_norm(metrics, phases):
    norms, steps = metrics["weight_norm"], metrics["step"]
    if len(steps) == 0:
        return {"skipped": "no logged steps"}

    def at(step):
        return None if step is None else norms[nearest_index(steps, step)]

    def start_of(phase):
        return None if phases[phase] is None else phases[phase]["start"]

    return {
        "first": norms[0],
        "final": norms[-1],
        "max": np.nanmax(norms) if np.isfinite(norms).any() else None,  # NaN rows aside
        "at_memorization_start": at(start_of("memorization")),
        "at_transition_start": at(start_of("transition")),
        "at_grok_step": at(phases["grok_step"]),
    }


def _timeline(run, settings):
    if not run.has_attention or len(run.attention_steps) < 2:
        return None
    return attention_metrics.attention_timeline(
        run.attention_steps, run.patterns, settings.emergence_similarity
    )


def _attention_report(run, phases, timeline, settings):
    if timeline is None:
        return {"skipped": "no attention.npz with at least two logged steps"}
    heads = []
    for layer in range(timeline.layers):
        for head in range(timeline.heads):
            heads.append({
                "layer": layer, "head": head,
                "emergence_step": timeline.emergence_step[layer, head],
                "final_position_score": timeline.position_score[-1, layer, head],
                "final_entropy_last": timeline.entropy_last[-1, layer, head],
                "final_entropy_mean": timeline.entropy_mean[-1, layer, head],
                "final_consistency": timeline.consistency[-1, layer, head],
            })
    vectors = attention_metrics.pattern_vectors(run.patterns)
    clusters = {}
    for label, step in phase_end_steps(phases):
        i = nearest_index(run.attention_steps, step)
        clusters[label] = {"step": run.attention_steps[i], **clustering.cluster_heads(
            vectors[i], settings.clusters, seed=settings.seed)}
    return {
        "logged_steps": len(timeline.steps),
        "last_logged_step": timeline.steps[-1],
        "layers": timeline.layers,
        "heads": timeline.heads,
        "probes": run.patterns.shape[3],
        "emergence_threshold": timeline.emergence_threshold,
        "emergence_step_by_layer_head": timeline.emergence_step,
        "per_head": heads,
        "clusters_at_phase_ends": clusters,
    }


def _fourier(run, settings):
    task, p = run.config.get("task"), run.config.get("p")
    if not run.has_embeddings or task not in fourier.ADDITIVE_TASKS + fourier.MULTIPLICATIVE_TASKS:
        return None
    return fourier.fourier_timeline(
        run.embedding_steps, run.token_embeddings, task, p, settings.key_frequency_ratio
    )


def fourier_snapshot_indices(spectrum, phases):
    """[(label, index)] of the embedding snapshots at the start, mid-transition and end."""
    chosen = [("start", 0)]
    transition = phases.get("transition")
    if transition is not None:
        middle = (transition["start"] + transition["end"]) / 2
        chosen.append(("transition", nearest_index(spectrum.steps, middle)))
    chosen.append(("end", len(spectrum.steps) - 1))
    return chosen


def _fourier_report(spectrum, phases, run):
    if spectrum is None:
        if not run.has_embeddings:
            return {"skipped": "no embeddings.npz"}
        return {"skipped": f"task {run.config.get('task')!r} is not a cyclic group"}
    snapshots = {
        label: {"step": spectrum.steps[i], "key_frequencies": spectrum.key_frequencies(i),
                "gini": spectrum.gini[i]}
        for label, i in fourier_snapshot_indices(spectrum, phases)
    }
    return {
        "group": spectrum.group,
        "key_frequency_ratio": spectrum.key_ratio,
        "key_frequencies_final": spectrum.key_frequencies(-1),
        "gini_first": spectrum.gini[0],
        "gini_final": spectrum.gini[-1],
        "snapshots": snapshots,
        "norms_final": spectrum.norms[-1].round(6),
    }


def _claims(phases, timeline, settings, complete=True):
    if timeline is None:
        skipped = {"holds": None, "reason": "no attention patterns in this run"}
        return {name: dict(skipped) for name in claims.CLAIM_TITLES}
    found = claims.evaluate_claims(
        phases, timeline,
        consistency_window=settings.consistency_window,
        chaotic_entropy_fraction=settings.chaotic_entropy_fraction,
        stable_consistency=settings.stable_consistency,
        final_fraction=settings.final_fraction,
    )
    if not complete and not phases["grokked"]:  # not failed yet: it may still grok
        found["failed_run_stays_chaotic"] = {
            "holds": None, "reason": "the run is not finished, so it has not failed (yet)"}
    return found
