"""The figures of one run, drawn from the arrays that ``tinygrok.analysis`` computes.

Every ``*_figure`` function takes plain arrays and returns a ``matplotlib.figure.Figure``
(display it in a notebook, or save it); :func:`make_figures` draws them all for a run and
writes PNGs into its ``figures/`` folder:

- ``accuracy.png``   train and val accuracy on a log step axis, the grokking step dashed,
                     phases shaded, dips marked
- ``loss.png``       train and val loss, log-log
- ``weight_norm.png``the parameters' L2 norm (weight decay at work)
- ``attention_<phase>.png`` layers x heads heatmaps at the end of each phase: one probe
                     example on top, the mean over all probes below
- ``attention_metrics.png`` per-head entropy of the "=" row, position score and
                     consistency over time
- ``head_clusters.png`` the heads' cosine similarity to one another at the end of each
                     phase, each head named with its k-means cluster
- ``fourier.png``    the embedding spectrum at the start, mid-transition and end, and its
                     Gini coefficient over time (modular tasks only)

Figures are built as ``Figure`` objects, not through pyplot, so no window or backend is ever
involved (this module never calls ``matplotlib.use()``) and nothing is kept alive by pyplot's
figure manager: memory does not grow when many runs are drawn. Margins are set by hand
rather than by matplotlib's constrained layout, which measures every text repeatedly and
made the heatmaps several times slower to save.
"""

import io
import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, ScalarFormatter

from tinygrok.analysis.phases import phase_bands
from tinygrok.analysis.run_analysis import (fourier_snapshot_indices, phase_end_name,
                                            phase_end_steps)
from tinygrok.analysis.rundir import load_run, nearest_index
from tinygrok.runfiles import write_atomically
from tinygrok.tasks import OP_TOKEN, TASKS

PHASE_COLORS = {"memorization": "tab:red", "transition": "tab:orange",
                "post_grokking": "tab:green"}
TOKEN_LABELS = ("x", "o", "y", "=")
HEATMAP_CAPTION = "each row is a query position; each column the key position it attends to"
DPI = 100


# ---- helpers -------------------------------------------------------------------------------


def shade_phases(ax, phases):
    """Shade the phases that happened, each in its colour, with a legend label."""
    if not isinstance(phases, dict):
        raise TypeError(f"phases must be the dict of find_phases (analysis.phases), got a "
                        f"{type(phases).__name__}")
    for name, start, end in phase_bands(phases):
        ax.axvspan(start, max(end, start + 1), color=PHASE_COLORS[name], alpha=0.12,
                   label=name.replace("_", "-"))


def log_steps_axis(ax):
    """Steps on a log scale, labelled 10, 100, 1000 (plain numbers are quicker to read)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step (log scale)")


def save_figure(figure, path, dpi=DPI):
    """Render the figure whole in memory, then write it atomically: a run interrupted
    while plotting keeps its old PNG, never an empty or half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = io.BytesIO()
    figure.savefig(image, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    write_atomically(path, image.getvalue())
    return path


def token_labels(tokens):
    """Axis labels for a sequence: x, o, y, = (numbered beyond four tokens)."""
    return [TOKEN_LABELS[i] if i < len(TOKEN_LABELS) else str(i) for i in range(tokens)]


# ---- training curves -----------------------------------------------------------------------


def single_axes(height=4.0):
    """A 7-inch-wide figure with one axes and room for its labels."""
    figure = Figure(figsize=(7, height))
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.13, top=0.9)
    return figure, figure.add_subplot()


def accuracy_figure(metrics, phases, step_val_acc_99=None):
    figure, ax = single_axes()
    shade_phases(ax, phases)
    steps = metrics["step"]
    ax.plot(steps, metrics["train_acc"], label="train", color="tab:blue")
    ax.plot(steps, metrics["val_acc"], label="validation", color="tab:purple")
    if step_val_acc_99 is not None:
        ax.axvline(step_val_acc_99, color="black", linestyle="--", linewidth=1,
                   label=f"val acc > 0.99 at step {step_val_acc_99}")
    for number, dip in enumerate(phases.get("dips", [])):
        ax.plot(dip["min_step"], dip["min_val_acc"], "v", color="black",
                label="lowest point of a dip after grokking" if number == 0 else None)
    title = "Accuracy" if step_val_acc_99 is not None else "Accuracy (val acc never > 0.99)"
    log_steps_axis(ax)
    ax.set(ylim=(0, 1.02), ylabel="accuracy", title=title)
    ax.legend(loc="center left", fontsize=8)
    return figure


def loss_figure(metrics, phases):
    figure, ax = single_axes()
    shade_phases(ax, phases)
    ax.plot(metrics["step"], metrics["train_loss"], label="train", color="tab:blue")
    ax.plot(metrics["step"], metrics["val_loss"], label="validation", color="tab:purple")
    log_steps_axis(ax)
    ax.set(yscale="log", ylabel="cross-entropy loss (log scale)", title="Loss")
    losses = np.concatenate([metrics["train_loss"], metrics["val_loss"]])
    losses = losses[np.isfinite(losses) & (losses > 0)]
    decades = np.log10(losses.max() / losses.min()) if losses.size else np.inf
    plain = FuncFormatter(lambda value, _: f"{value:.2g}")  # 0.5, 2, 4.4
    # On a short log axis matplotlib labels ticks between the powers of ten as 4.4x10^0,
    # wide enough to push the axis label off the figure: plain numbers instead.
    if decades < 0.5:  # within a factor of about 3: matplotlib's fine ticks, relabelled
        ax.yaxis.set_minor_formatter(plain)
    elif decades < 2:  # 1, 2 and 5 times the powers of ten
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_locator(LogLocator(subs=(2, 5)))
        ax.yaxis.set_minor_formatter(plain)
    ax.legend(fontsize=8)
    return figure


def weight_norm_figure(metrics, phases):
    figure, ax = single_axes(3.5)
    shade_phases(ax, phases)
    ax.plot(metrics["step"], metrics["weight_norm"], color="black", label="weight norm")
    log_steps_axis(ax)
    ax.set(ylabel="L2 norm of all parameters", title="Weight norm")
    ax.legend(fontsize=8)
    return figure


# ---- attention -----------------------------------------------------------------------------


def pattern_mosaic(patterns):
    """(L, H, T, T) patterns as one image: layers down, heads across, a blank line between.

    Future keys (above the diagonal, masked by causality) and the gaps are NaN, drawn blank.
    One image in one Axes draws many times faster than L*H separate Axes.
    """
    layers, heads, tokens, _ = patterns.shape
    size = tokens + 1  # a block and its gap
    image = np.full((layers * size - 1, heads * size - 1), np.nan)
    future = np.triu(np.ones((tokens, tokens), dtype=bool), 1)
    for layer in range(layers):
        for head in range(heads):
            block = np.where(future, np.nan, patterns[layer, head])
            image[layer * size:layer * size + tokens, head * size:head * size + tokens] = block
    return image


def draw_patterns(ax, patterns, title):
    """Heatmaps of (L, H, T, T) patterns with their values written in; returns the image."""
    layers, heads, tokens, _ = patterns.shape
    size = tokens + 1
    cmap = colormaps["viridis"].with_extremes(bad="white")
    image = ax.imshow(pattern_mosaic(patterns), vmin=0, vmax=1, cmap=cmap)
    for layer in range(layers):
        for head in range(heads):
            for q in range(tokens):
                for k in range(q + 1):
                    value = patterns[layer, head, q, k]
                    ax.text(head * size + k, layer * size + q, f"{value:.2f}", fontsize=6,
                            ha="center", va="center", color="black" if value > 0.6 else "white")
        ax.text(-1.6, layer * size + (tokens - 1) / 2, f"layer {layer}", rotation=90,
                va="center", fontsize=8)
    for head in range(heads):
        ax.text(head * size + (tokens - 1) / 2, -0.9, f"head {head}", ha="center", fontsize=8)
    labels = token_labels(tokens)
    ax.set_xticks([h * size + k for h in range(heads) for k in range(tokens)],
                  labels * heads, fontsize=7)
    ax.set_yticks([l * size + q for l in range(layers) for q in range(tokens)],
                  labels * layers, fontsize=7)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    ax.set_title(title, fontsize=9, pad=20)
    return image


def attention_heatmaps_figure(layer_patterns, probe, probe_text, title,
                              mean_text="mean over all probes", one_text="one probe"):
    """(L, H, N, T, T) patterns at one step: one probe on top, the mean over probes below.
    (A run's probes are its fixed logged examples; ``one_text`` and ``mean_text`` name them
    otherwise, as example 02 does for inputs that are not a run's.)

    In each heatmap rows are queries and columns keys, labelled x, o, y, =.
    """
    layers, heads = layer_patterns.shape[:2]
    # Sizes in inches: 1.3 a layer of heatmaps, and above each of the two panels 0.9 for
    # its title and "head N" labels; at least 5.5 wide, for the titles and the caption.
    panel, headroom = 1.3 * layers, 0.9
    height = 2 * (panel + headroom) + 0.45
    figure = Figure(figsize=(max(1.3 * heads + 2, 5.5), height))
    figure.subplots_adjust(left=0.08, right=0.84, bottom=0.45 / height,
                           top=1 - headroom / height, hspace=headroom / panel)
    top, bottom = figure.subplots(2, 1)
    image = draw_patterns(top, layer_patterns[:, :, probe], f"{one_text}: {probe_text}")
    draw_patterns(bottom, layer_patterns.mean(axis=2), mean_text)
    colorbar_axes = figure.add_axes([0.87, 0.25, 0.025, 0.5])
    figure.colorbar(image, cax=colorbar_axes, label="attention weight")
    figure.text(0.46, 0.01, HEATMAP_CAPTION, ha="center", fontsize=8)
    figure.suptitle(title, fontsize=10)
    return figure


def attention_metrics_figure(timeline, phases):
    """Rows: entropy of the "=" row, position score, consistency; columns: layers."""
    if timeline is None:
        raise ValueError("no attention timeline: the run has no attention.npz with two "
                         "logged steps (analysis.timeline is None)")
    rows = [
        ("entropy of '=' row (nats)", timeline.steps, timeline.entropy_last),
        ("position score", timeline.steps, timeline.position_score),
        ("consistency (cos to previous)", timeline.steps[1:], timeline.consistency),
    ]
    width, height = 4.5 * timeline.layers, 7.5
    # The legend goes below the panels: as many entries a row as the width holds (about
    # 1.5 inches each), and room for its rows under the step labels.
    entries = timeline.heads + len(phase_bands(phases)) + 1  # heads, phases, the ln T line
    columns = max(1, min(entries, int(width / 1.5)))
    legend_rows = -(-entries // columns)
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=0.1, right=0.97, bottom=(0.55 + 0.2 * legend_rows) / height,
                           top=0.95, hspace=0.15, wspace=0.25)
    axes = figure.subplots(len(rows), timeline.layers, squeeze=False, sharex=True)
    for r, (label, steps, values) in enumerate(rows):
        for layer in range(timeline.layers):
            ax = axes[r, layer]
            shade_phases(ax, phases)
            for head in range(timeline.heads):
                ax.plot(steps, values[:, layer, head], linewidth=1, label=f"head {head}")
            ax.set_ylabel(label, fontsize=8)
            axes[0, layer].set_title(f"layer {layer}")
    for ax in axes[0]:  # the entropy of a uniform "=" row, ln T
        ax.axhline(timeline.max_entropy_last, color="grey", linestyle=":", linewidth=1,
                   label=f"uniform '=' row (ln {len(TOKEN_LABELS)})")
        ax.set_ylim(top=max(ax.get_ylim()[1], 1.04 * timeline.max_entropy_last))  # off the frame
    for ax in axes[-1]:
        ax.set_xlabel("step")
    # One legend for every panel, below them, where it hides no curve.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=columns, fontsize=7)
    return figure


def head_clusters_figure(clusters):
    """Which heads attend alike, at the end of each phase: one panel per phase end.

    ``clusters`` is analysis.json's ``clusters_at_phase_ends`` ({phase: {"step", "k",
    "labels" [layer][head], "similarity" (L*H, L*H)}}). Each panel is the cosine similarity
    of every pair of heads' pattern vectors (1: the same pattern on every probe), and each
    head's name carries its k-means cluster ("c0", "c1", ...). Heads that share a cluster
    are bright where their rows and columns cross; a head that specialises stands apart,
    dark in its own row and column.
    """
    ends = list(clusters.items())
    heads = [(layer, head) for layer, row in enumerate(ends[0][1]["labels"])
             for head in range(len(row))]
    count = len(heads)
    # Sizes in inches: a cell 0.42 while the values are written in (up to 16 heads), else
    # 0.25; at least 2.4 a panel; 0.8 on the left for the head names, 1.1 at the bottom for
    # the turned ones with their clusters, 0.9 above for the titles, 1.0 on the right for
    # the colour bar.
    panel = max(2.4, (0.42 if count <= 16 else 0.25) * count)
    width, height = 0.8 + len(ends) * panel + (len(ends) - 1) * 0.5 + 1.0, panel + 2.0
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=0.8 / width, right=1 - 1.0 / width, bottom=1.1 / height,
                           top=1 - 0.9 / height, wspace=0.5 / panel)
    axes = figure.subplots(1, len(ends), squeeze=False)[0]
    axes[0].set_yticks(range(count), [f"L{layer} H{head}" for layer, head in heads], fontsize=7)
    # Attention weights are never negative, so similarities mostly lie between 0.8 and 1 in
    # a trained model: the colours start at the lowest one (to a tenth), the same in every
    # panel so that the phases compare.
    lowest = min(np.min(found["similarity"]) for _, found in ends)
    low = min(max(np.floor(lowest * 10) / 10, 0.0), 0.9)
    for ax, (label, found) in zip(axes, ends):
        similarity = np.asarray(found["similarity"], dtype=float)
        named = [f"L{layer} H{head}  c{found['labels'][layer][head]}" for layer, head in heads]
        image = ax.imshow(similarity, vmin=low, vmax=1, cmap="viridis")
        if count <= 16:  # the values, while they fit in the cells
            for i in range(count):
                for j in range(count):
                    bright = (similarity[i, j] - low) / (1 - low) > 0.6
                    ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center",
                            fontsize=6, color="black" if bright else "white")
        ax.set_xticks(range(count), named, rotation=90, fontsize=7)  # this phase's clusters
        if ax is not axes[0]:
            ax.set_yticks([])
        ax.tick_params(length=0)
        ax.set_title(f"{phase_end_name(label)}\nstep {found['step']}, k = {found['k']} clusters",
                     fontsize=8)
    colorbar_axes = figure.add_axes([1 - 0.8 / width, 1.1 / height, 0.15 / width,
                                     panel / height])
    step = 0.05 if 1 - low <= 0.25 else 0.1  # round ticks: tenths, or twentieths near 1
    figure.colorbar(image, cax=colorbar_axes, label="cosine similarity", format="%.2f",
                    ticks=np.round(np.arange(low, 1 + step / 2, step), 2))
    figure.text(0.5, 0.1 / height, "cN: the head's k-means cluster at that step", ha="center",
                fontsize=8)
    figure.suptitle("Head specialisation: heads with alike attention patterns", fontsize=10)
    return figure


# ---- Fourier -------------------------------------------------------------------------------


def fourier_figure(spectrum, phases):
    """Left: norm of each frequency at chosen snapshots; right: Gini over time."""
    if spectrum is None:
        raise ValueError("no spectrum: the run has no embeddings.npz, or its task has no "
                         "cyclic group (analysis.fourier is None)")
    snapshots = fourier_snapshot_indices(spectrum, phases)
    figure = Figure(figsize=(10, 2.4 * len(snapshots) + 0.8))
    grid = figure.add_gridspec(len(snapshots), 2, width_ratios=(3, 2), left=0.07, right=0.98,
                               bottom=0.1, top=0.85, hspace=0.6, wspace=0.18)
    frequencies = spectrum.frequencies[1:]
    every = 1 if len(frequencies) <= 24 else 5  # a tick per frequency when they fit
    for row, (label, i) in enumerate(snapshots):
        ax = figure.add_subplot(grid[row, 0])
        norms = spectrum.norms[i, 1:]
        keys = spectrum.key_frequencies(i)
        colors = ["tab:red" if k in keys else "tab:blue" for k in frequencies]
        ax.bar(frequencies, norms, color=colors, width=0.8)
        if norms.size:  # Z_1 (x_div_y with p = 2) has no frequency but 0
            ax.axhline(spectrum.key_ratio * norms.max(), color="grey", linestyle=":",
                       linewidth=1)
        ticks = {int(k) for k in frequencies if k % every == 0}
        if len(keys) <= 8:  # the key frequencies get a tick each, while they fit
            ticks |= set(keys)
        ax.set_xticks(sorted(ticks))
        ax.tick_params(axis="x", labelsize=7)
        named = "all: a flat spectrum" if keys and len(keys) == len(frequencies) else keys
        ax.set_title(f"{label}: step {spectrum.steps[i]}, key frequencies {named}", fontsize=9)
        ax.set_ylabel("norm (own scale)")
    ax.set_xlabel("frequency k")
    figure.legend(handles=[  # above the bars, where it covers none
        Patch(color="tab:red", label="key frequency"),
        Patch(color="tab:blue", label="other frequency"),
        Line2D([], [], color="grey", linestyle=":",
               label=f"{spectrum.key_ratio:g} x the largest norm")],
        loc="upper left", bbox_to_anchor=(0.06, 0.935), ncol=3, fontsize=7, frameon=False)
    ax = figure.add_subplot(grid[:, 1])
    shade_phases(ax, phases)
    ax.plot(spectrum.steps, spectrum.gini, marker=".", color="black", label="Gini")
    ax.set(ylim=(0, 1), xlabel="step", ylabel="Gini of frequency norms",
           title="Sparsity of the spectrum")
    ax.legend(fontsize=7)
    figure.suptitle(f"Embedding spectrum over {spectrum.group}", fontsize=10)
    return figure


# ---- all figures of a run -------------------------------------------------------------------


def probe_description(run, probe):
    """E.g. '12 / 5 = (val)' for one probe, using the run's vocabulary when it has one (and
    the task's operator for the token the vocabulary calls "o", as ``Task.decode`` does)."""
    vocab = run.config.get("vocab")
    operation = TASKS.get(run.config.get("task"))
    tokens = run.probe_inputs[probe]
    words = [operation.symbol if operation and t == OP_TOKEN else
             vocab[t] if vocab and t < len(vocab) else str(t) for t in tokens]
    split = "val" if run.probe_split[probe] == 1 else "train"
    return f"{' '.join(words)} ({split})"


def example_probe(run):
    """The first validation probe (the model never trained on it), else probe 0."""
    validation = np.flatnonzero(run.probe_split == 1)
    return int(validation[0]) if validation.size else 0


def make_figures(run, analysis, out_dir=None):
    """Draw every figure of a run into ``out_dir`` (default: its figures/); return the paths.
    ``run``: what ``load_run`` returns, or a run directory's path (as ``analyze_run`` takes);
    ``analysis``: what ``analyze_run`` returns."""
    if isinstance(run, (str, os.PathLike)):
        run = load_run(run)
    if not hasattr(analysis, "phases"):
        raise TypeError(f"analysis must be what analyze_run returns, got a "
                        f"{type(analysis).__name__}")
    out_dir = Path(out_dir) if out_dir is not None else run.path / "figures"
    phases = analysis.phases
    grok_step = phases["grok_step"]
    drawn = {
        "accuracy": accuracy_figure(run.metrics, phases, grok_step),
        "loss": loss_figure(run.metrics, phases),
        "weight_norm": weight_norm_figure(run.metrics, phases),
    }
    if analysis.timeline is not None:
        probe = example_probe(run)
        for label, step in phase_end_steps(phases):
            i = nearest_index(run.attention_steps, step)
            title = f"Attention at step {run.attention_steps[i]} ({phase_end_name(label)})"
            drawn[f"attention_{label}"] = attention_heatmaps_figure(
                run.patterns[i], probe, probe_description(run, probe), title)
        drawn["attention_metrics"] = attention_metrics_figure(analysis.timeline, phases)
        clusters = analysis.report["attention"].get("clusters_at_phase_ends")
        if clusters:
            drawn["head_clusters"] = head_clusters_figure(clusters)
    if analysis.fourier is not None:
        drawn["fourier"] = fourier_figure(analysis.fourier, phases)
    return [save_figure(figure, out_dir / f"{name}.png") for name, figure in drawn.items()]
