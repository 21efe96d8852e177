"""06 - When grokking fails: permutations of five objects against modular arithmetic.

What you will see: the same model, optimiser and number of steps trained on two tasks.
Modular addition groks (example 03). Composition of permutations in S5 (120 elements,
a group that is not commutative and not cyclic) is the task where the paper saw no
grokking. We compare them from the outside and from the inside:

1. accuracy curves: what each run learnt, and whether it generalised;
2. the attention, measured as in example 04: the entropy of the "=" row (how spread
   out the answer's attention is), the position score (how much the pattern ignores
   the tokens) and the consistency (how much the patterns still change between logs);
3. the paper's claim 3, "a failed task keeps chaotic attention", judged on the failed
   run with its thresholds printed beside the verdict (or why it does not apply);
4. the final attention patterns of both runs side by side.

Be careful with what the fast mode can show. Its permutation run uses the fast modular
configuration (d_model 32, 1,500 steps): in that budget it does not even memorise its
7,200 training pairs, so it is a run that has barely started, not one that memorised and
then failed to generalise. The S5 table (14,400 pairs) is also 27 times the mod-23 table:
the fast comparison cannot tell "harder" from "bigger". The script prints which case it
sees. ``--full`` trains both tasks with the paper's settings (7,500 steps each; long), the
comparison the paper makes. (Even there, "failed" means "not yet": trained for 15,000
steps, every permutation seed we tried grokked; see docs/REPRODUCTION.md.) When we ran the fast mode, the permutation run's second layer
ended with a *sharper* "=" row (lower entropy) than the modular run's. A short run that has
not memorised is not the failure the paper describes, so the analysis marks claim 3 "n/a"
for it (its train accuracy never passed 0.99). Its numbers still say which way it leans:
claim 3 averages both layers over the last quarter of the logs, and there its entropy
counted as high (0.63 of ln 4, the claim asks for >= 0.5) but its patterns had stopped
changing (consistency 0.995, the claim asks for < 0.99), so the claim would not have held.

What you will learn: which internal measurements separate a run that generalises from one
that does not, and how far one short run can support a claim.

Fast mode: the modular run of example 03 (reused, or about 5 s) plus a permutation run of
1,500 steps (about 10 s on an idle 2-core machine; its validation split is 7,200 pairs, so
it is evaluated every 50 steps instead of 10).
"""

# %% Imports and options
import dataclasses
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()))
from _quick_run import FAST, FULL, get_run, make_parser, parse  # noqa: E402

from tinygrok.analysis import attention_timeline, evaluate_claims, find_phases, load_run  # noqa: E402
from tinygrok.analysis.claims import STABLE_CONSISTENCY  # noqa: E402
from tinygrok.analysis.phases import GROKKED_VAL_ACC, MEMORIZED_TRAIN_ACC  # noqa: E402
from tinygrok.plots import HEATMAP_CAPTION, draw_patterns  # noqa: E402
from tinygrok.train import TrainConfig  # noqa: E402

parser = make_parser(__doc__, full_help="train both tasks with the paper's settings "
                                         "(7,500 steps each; long)")
args = parse(parser)
modular_config = FULL if args.full else FAST
# The same model and optimiser; permutation has no modulus, so p stays at its default.
permutation_config = dataclasses.replace(
    modular_config, task="permutation", p=TrainConfig().p,
    log_every=modular_config.log_every if args.full else 50)

# %% Train (or reuse) the two runs
runs = {"modular": load_run(get_run(modular_config, args.out / "runs")),
        "permutation": load_run(get_run(permutation_config, args.out / "runs"))}

# %% 1. What each run learnt
phases = {}
for label, run in runs.items():
    m = run.metrics
    phases[label] = find_phases(m["step"], m["train_acc"], m["val_acc"])
    # Judged over the whole run, not the last log alone: a fast run can end in one of the
    # dips of example 03, and one bad log does not undo what the run learnt before it.
    memorised = bool((m["train_acc"] > MEMORIZED_TRAIN_ACC).any())
    generalised = phases[label]["grokked"]
    verdict = ("memorised and generalised" if memorised and generalised else
               "memorised but did not generalise" if memorised else
               "did not even memorise its training pairs in this budget")
    if generalised and m["val_acc"][-1] <= GROKKED_VAL_ACC:
        verdict += " (its last log falls in a dip)"
    print(f"{label:>11} ({run.config['task']}, {run.config['num_train']} training pairs, "
          f"chance {1 / run.config['num_classes']:.3f}): last logged train acc "
          f"{m['train_acc'][-1]:.3f} (over the batches of its last {run.config['log_every']} "
          f"steps), val acc {m['val_acc'][-1]:.3f}: {verdict}")

# %% 2. The attention of both runs, measured on the same steps
# Consistency compares each logged pattern with the previous one, so it depends on the
# interval between logs: measure both runs on the steps they share.
shared = np.intersect1d(runs["modular"].attention_steps, runs["permutation"].attention_steps)
timelines = {}
for label, run in runs.items():
    keep = np.isin(run.attention_steps, shared)
    timelines[label] = attention_timeline(run.attention_steps[keep], run.patterns[keep])
interval = int(np.diff(shared[:2])[0])
print(f"attention compared on {len(shared)} shared steps, {interval} steps apart")

print("at the last step, mean over heads:   entropy('=')   position score   consistency")
for label, timeline in timelines.items():
    for layer in range(timeline.layers):
        print(f"  {label:>11} layer {layer}:   {timeline.entropy_last[-1, layer].mean():>14.3f}"
              f"   {timeline.position_score[-1, layer].mean():>14.3f}"
              f"   {timeline.consistency[-1, layer].mean():>11.5f}")
print(f"  (entropy of a uniform '=' row: ln 4 = {np.log(4):.3f})")

colors = {"modular": "tab:blue", "permutation": "tab:red"}
layers = timelines["modular"].layers
figure = Figure(figsize=(10, 11))
grid = figure.add_gridspec(4, layers, left=0.09, right=0.98, bottom=0.05, top=0.93,
                           hspace=0.4, wspace=0.2)
figure.suptitle("modular (blue) against permutation (red); attention rows: mean over "
                "heads (line), min to max (band)", fontsize=10)
ax = figure.add_subplot(grid[0, :])
for label, run in runs.items():
    m = run.metrics
    ax.plot(m["step"], m["train_acc"], color=colors[label], label=f"{label} train")
    ax.plot(m["step"], m["val_acc"], color=colors[label], linestyle="--", label=f"{label} val")
ax.set(xscale="log", ylim=(0, 1.02), ylabel="accuracy", xlabel="step (log scale)",
       title="accuracy")
ax.legend(fontsize=8, ncol=2)
rows = [("entropy of '=' row (nats)", "entropy_last", False),
        ("position score", "position_score", False),
        ("consistency (cos to previous)", "consistency", True)]
for r, (ylabel, field, between_steps) in enumerate(rows, start=1):
    for layer in range(layers):
        ax = figure.add_subplot(grid[r, layer])
        for label, timeline in timelines.items():
            values = getattr(timeline, field)[:, layer]            # (steps, heads)
            steps = timeline.steps[1:] if between_steps else timeline.steps
            ax.plot(steps, values.mean(axis=1), color=colors[label], label=label)
            ax.fill_between(steps, values.min(axis=1), values.max(axis=1),
                            color=colors[label], alpha=0.15)
        if field == "entropy_last":
            ax.axhline(np.log(4), color="grey", linestyle=":", linewidth=1,
                       label="uniform '=' row (ln 4)")
        if field == "consistency":  # claim 3's line: below it the patterns count as unstable
            ax.axhline(STABLE_CONSISTENCY, color="grey", linestyle="--", linewidth=1,
                       label=f"claim 3's threshold ({STABLE_CONSISTENCY})")
            ax.set_ylim(0.95, 1.002)  # the early, lower values are cut off (see example 04)
            ax.legend(fontsize=7, loc="lower right")
        ax.set(ylabel=ylabel, xlabel="step" if r == len(rows) else "")
        if r == 1:
            ax.set_title(f"layer {layer}")
            if layer == 0:  # one legend, where the curves leave room
                ax.legend(fontsize=7)
figure.savefig(args.out / "06_failed_vs_grokked.png", dpi=100)
figure

# %% 3. Claim 3 on the failed run (and claims 1-2 on the one that grokked)
# Each run is judged on all of its own logs, as example 04 and ``python -m tinygrok.analyze``
# judge it (the shared steps above are only for comparing the two runs): on fewer logs,
# further apart, a verdict can come out the other way.
for label, run in runs.items():
    claims = evaluate_claims(phases[label], attention_timeline(run.attention_steps, run.patterns))
    for name, claim in claims.items():
        verdict = {True: "holds", False: "does not hold", None: "n/a"}[claim["holds"]]
        print(f"{label:>11}: {name}: {verdict} ({claim['reason']})")
# Claim 3 asks for a high-entropy "=" row (>= half of ln 4) AND unstable patterns
# (consistency < 0.99) over the last quarter of the logs. A run that has stopped
# changing fails the second test even if its patterns never became sharp. A run whose
# train accuracy never passed 0.99 (the fast permutation run) gets "n/a": it has not
# failed to generalise what it learnt, it has not learnt yet.

# %% 4. The final attention patterns, side by side
figure = Figure(figsize=(1.3 * timelines["modular"].heads + 2, 2 * (1.3 * layers + 0.9)))
figure.subplots_adjust(left=0.08, right=0.97, bottom=0.03, top=0.92, hspace=0.35)
figure.subplots_adjust(right=0.86, bottom=0.07)
for ax, (label, run) in zip(figure.subplots(2, 1), runs.items()):
    image = draw_patterns(ax, run.patterns[-1].mean(axis=2),
                          f"{label}: {run.name}, step {run.attention_steps[-1]}, mean over "
                          f"its {run.patterns.shape[3]} probe examples")
figure.colorbar(image, cax=figure.add_axes([0.89, 0.3, 0.02, 0.4]), label="attention weight")
figure.text(0.46, 0.01, HEATMAP_CAPTION, ha="center", fontsize=8)
figure.savefig(args.out / "06_final_attention.png", dpi=100)
figure
