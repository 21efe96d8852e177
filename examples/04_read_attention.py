"""04 - Read the attention of a run: what the heads look at, and when that settles.

What you will see: the attention patterns that training stored for a fixed set of probe
examples (64 training and 64 validation pairs) every 10 steps, without touching the model:

1. The raw array: patterns[step, layer, head, probe] is a 4 x 4 matrix whose row q says how
   much query token q (x, o, y, =) attends to each token up to and including itself.
2. Heatmaps, layers x heads, at initialisation and at the end of each phase
   (04_attention_by_phase.png): mean over the probes.
3. Three numbers per head over time (04_attention_metrics.png): the entropy of the "="
   row (high: spread out, low: focused), the position score (1: the same pattern whatever
   the input, lower: it depends on the tokens) and the consistency (cosine similarity of
   the patterns to those of the previous logged step). The entropy and the position score
   are computed once by hand here to show what they mean; section 5 computes the
   consistency's cosine similarity by hand too, between two heads instead of two steps.
4. When each head "emerges" (its patterns stay close to their final form), and the
   paper's claims 1 and 2 measured on this run, with the numbers behind the verdicts.
5. Which heads do the same job (04_head_clusters.png): the cosine similarity of two
   heads' patterns by hand, then k-means over all heads with k chosen by silhouette, at
   the end of each phase: the paper's "head specialisation via clustering".

What you will learn: how to turn stored attention matrices into a few interpretable
numbers, and how much (or how little) one run can say about the paper's claims.

Uses the fast run of example 03 (trained now if it is not there yet: about 5 s, 25 s
with the first compile); ``--full`` uses the paper's setup (x / y mod 97) instead
(trained now if missing: long).
"""

# %% Imports and options
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()))
from _quick_run import FAST, FULL, get_run, make_parser, parse  # noqa: E402

from tinygrok.analysis import attention_timeline, evaluate_claims, find_phases, load_run  # noqa: E402
from tinygrok.analysis.attention_metrics import (content_part, pattern_vectors,  # noqa: E402
                                                 positional_part, row_entropy)
from tinygrok.analysis.clustering import cluster_heads  # noqa: E402
from tinygrok.analysis.rundir import nearest_index  # noqa: E402
from tinygrok.analysis.run_analysis import phase_end_name, phase_end_steps  # noqa: E402
from tinygrok.plots import (attention_metrics_figure, draw_patterns,  # noqa: E402
                            head_clusters_figure)
from tinygrok.tasks import make_task  # noqa: E402

parser = make_parser(__doc__, full_help="read the paper's x_div_y run (trained first if missing)")
args = parse(parser)
run = load_run(get_run(FULL if args.full else FAST, args.out / "runs"))
m = run.metrics
phases = find_phases(m["step"], m["train_acc"], m["val_acc"])

# %% 1. The raw array
S, L, H, N, T, _ = run.patterns.shape
print(f"patterns: {S} logged steps x {L} layers x {H} heads x {N} probes x {T} x {T}")
task = make_task(run.config["task"], run.config["p"])  # to print tokens as "2 + 4 ="
probe = int(np.flatnonzero(run.probe_split == 1)[0])  # a validation pair: never trained on
final = run.attention_steps[-1]
print(f"probe {probe} ('{task.decode(run.probe_inputs[probe])}', validation), layer 1, "
      f"head 0, at step {final}:")
print(np.array2string(run.pattern(final, 1)[0, probe], precision=2, suppress_small=True))

# %% 2. Heatmaps at initialisation and at the end of each phase
moments = [("initialisation", 0)] + [
    (f"end of {name.replace('_', '-')}", phases[name]["end"])
    for name in ("memorization", "transition", "post_grokking") if phases[name] is not None]
figure = Figure(figsize=(1.3 * H + 2, len(moments) * (1.3 * L + 0.9)))
figure.subplots_adjust(left=0.08, right=0.86, bottom=0.02, top=0.95, hspace=0.35)
for ax, (label, step) in zip(figure.subplots(len(moments), 1, squeeze=False)[:, 0], moments):
    i = nearest_index(run.attention_steps, step)
    image = draw_patterns(ax, run.patterns[i].mean(axis=2),
                          f"{label}: step {run.attention_steps[i]} (mean over {N} probes)")
figure.colorbar(image, cax=figure.add_axes([0.89, 0.3, 0.02, 0.4]),
                label="attention weight (row: query, column: key)")
figure.savefig(args.out / "04_attention_by_phase.png", dpi=100)
figure

# %% 3a. Entropy of a row, by hand
# H(a) = -sum_k a_k ln a_k: ln(number of keys) when spread evenly, 0 when on one token.
last_row = run.pattern(final, 1)[0, probe, -1]
print(f"'=' row {np.round(last_row, 3)}: entropy {-(last_row * np.log(last_row + 1e-30)).sum():.3f}"
      f" nats (row_entropy: {row_entropy(last_row[None, :])[0]:.3f}; uniform over 4 keys: "
      f"{np.log(4):.3f})")

# %% 3b. Position score, by hand, for one head
# Over the probes, the mean pattern M is what the head does regardless of the input
# (positional); the variance V is how much it depends on the tokens (content).
# position score = sum M^2 / (sum M^2 + sum V), over query rows 1..T-1.
head = run.pattern(final, 0)[0]              # layer 0, head 0: (N, T, T)
M, V = positional_part(head[:, 1:]), content_part(head[:, 1:])
print(f"layer 0 head 0: sum M^2 = {(M ** 2).sum():.3f}, sum V = {V.sum():.3f}, "
      f"position score = {(M ** 2).sum() / ((M ** 2).sum() + V.sum()):.3f}")

# %% 3c. All metrics for all heads at all steps, and their picture
timeline = attention_timeline(run.attention_steps, run.patterns)
figure = attention_metrics_figure(timeline, phases)
figure.savefig(args.out / "04_attention_metrics.png", dpi=100)
print("per head at the last step (and emergence: first step from which the cosine "
      f"similarity to the final patterns stays >= {timeline.emergence_threshold}):")
print("  layer head  entropy('=')  position score  consistency  emerged at step")
for layer in range(L):
    for h in range(H):
        print(f"  {layer:>5} {h:>4}  {timeline.entropy_last[-1, layer, h]:>12.3f}  "
              f"{timeline.position_score[-1, layer, h]:>14.3f}  "
              f"{timeline.consistency[-1, layer, h]:>11.4f}  "
              f"{timeline.emergence_step[layer, h]:>15}")
figure

# %% 4. The paper's claims 1 and 2, measured on this run
# Claim 1: position patterns emerge first (the first layer before the last; the most
# positional heads before the least). Claim 2: in the transition the "=" row's entropy
# falls and the consistency rises. Claim 3 is about runs that fail: see example 06.
claims = evaluate_claims(phases, timeline)
for name in ("position_patterns_first", "clean_patterns_in_transition"):
    claim = claims[name]
    verdict = {True: "holds", False: "does not hold", None: "not applicable"}[claim["holds"]]
    print(f"{name}: {verdict} ({claim['reason']})")
print("One run is one sample: the verdicts depend on the thresholds printed in the claims'"
      " 'thresholds' and can differ between seeds; compare several runs before concluding.")

# %% 5. Head specialisation: which heads attend alike
# A head at one step becomes one vector: its query rows on all probes, flattened. Two
# heads attend alike when their vectors point the same way: cosine similarity
# a.b / (|a| |b|), 1 for the same pattern on every probe. Attention weights are never
# negative, so even unrelated heads score well above 0.
vectors = pattern_vectors(run.patterns[-1])          # (L, H, N * (T-1) * T)
a, b = vectors[0, 0], vectors[0, min(1, H - 1)]
print(f"cosine similarity of layer 0's heads 0 and {min(1, H - 1)} at step {final}: "
      f"{a @ b / (np.linalg.norm(a) * np.linalg.norm(b)):.3f}")
# k-means groups the L*H vectors into k clusters; the silhouette (near 1: tight, well
# separated clusters) picks k. At the end of each phase:
clusters = {}
for name, step in phase_end_steps(phases):  # each phase's end, or the last step if none
    i = nearest_index(run.attention_steps, step)
    found = cluster_heads(pattern_vectors(run.patterns[i]))
    clusters[name] = {"step": run.attention_steps[i], **found}
    silhouettes = ", ".join(f"k={k}: {value:.2f}" for k, value in found["silhouette_by_k"].items())
    print(f"{phase_end_name(name)} (step {run.attention_steps[i]}): k = {found['k']}, clusters "
          f"by layer {found['labels']} (silhouette {silhouettes or found['chosen_by']})")
figure = head_clusters_figure(clusters)
figure.savefig(args.out / "04_head_clusters.png", dpi=100)
lowest = min(np.min(found["similarity"]) for found in clusters.values())
print(f"Every pair of heads scores between {lowest:.2f} and 1 at these steps. k-means "
      f"always finds k groups: read the similarities in the figure before the clusters.")
figure
