"""Tests for tinygrok.plots: every figure is drawn headless into a non-empty PNG."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from synthetic_run import write_synthetic_run

from tinygrok.analysis import analyze_run, load_run
from tinygrok.analysis.phases import find_phases
from tinygrok.plots import attention_metrics_figure, fourier_figure, make_figures, probe_description

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 2000, path


@pytest.fixture(autouse=True)
def headless(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("DISPLAY", raising=False)


def test_a_grokking_run_gets_every_figure(tmp_path):
    run = load_run(write_synthetic_run(tmp_path, curve="dip"))
    paths = make_figures(run, analyze_run(run))
    assert {p.name for p in paths} == {
        "accuracy.png", "loss.png", "weight_norm.png", "attention_memorization.png",
        "attention_transition.png", "attention_post_grokking.png", "attention_metrics.png",
        "head_clusters.png", "fourier.png",
    }
    assert all(p.parent == run.path / "figures" for p in paths)
    for path in paths:
        assert_png(path)


def test_a_failed_permutation_run_has_no_spectrum_and_one_heatmap(tmp_path):
    run = load_run(write_synthetic_run(tmp_path, task="permutation", curve="fail"))
    paths = make_figures(run, analyze_run(run), out_dir=tmp_path / "out")
    assert sorted(p.name for p in paths) == [
        "accuracy.png", "attention_memorization.png", "attention_metrics.png",
        "head_clusters.png", "loss.png", "weight_norm.png",
    ]
    for path in paths:
        assert_png(path)


def test_plots_never_import_pyplot():
    # Figures are built as matplotlib.figure.Figure objects: no backend, no global state.
    code = "import sys, tinygrok.plots; sys.exit('matplotlib.pyplot' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY")}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_an_interrupted_save_keeps_the_old_png(tmp_path, monkeypatch):
    """A figure is rendered whole before its file is replaced: Ctrl-C while saving leaves
    the previous PNG, not an empty or half-written one."""
    from matplotlib.figure import Figure

    from tinygrok.plots import save_figure

    def half_then_ctrl_c(self, target, **options):
        if hasattr(target, "write"):
            target.write(b"\x89PNG half")
        else:
            with open(target, "wb") as f:
                f.write(b"\x89PNG half")
        raise KeyboardInterrupt

    path = tmp_path / "figure.png"
    path.write_bytes(b"the old png")
    monkeypatch.setattr(Figure, "savefig", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        save_figure(Figure(), path)
    assert path.read_bytes() == b"the old png"


def test_an_interrupted_report_keeps_the_old_figure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from tinygrok.report import write_report

    write_synthetic_run(tmp_path / "runs")
    out = tmp_path / "report"
    write_report(tmp_path / "runs", out, analyze_missing=False)
    before = (out / "figure1.png").read_bytes()

    def half_then_ctrl_c(self, target, **options):
        (target.write if hasattr(target, "write") else open(target, "wb").write)(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path / "runs", out, analyze_missing=False)
    assert (out / "figure1.png").read_bytes() == before


# ---- what a student reads off the figures ----------------------------------------------------


@pytest.mark.parametrize("low, high", [(4.4, 5.0), (0.3, 4.6), (0.06, 5.9), (0.01, 2.4),
                                       (1e-6, 4.6)])
def test_the_loss_axis_label_stays_on_the_figure(low, high):
    from tinygrok.plots import loss_figure

    steps = np.arange(10, 1510, 10)
    metrics = {"step": steps, "train_loss": np.geomspace(high, low, len(steps)),
               "val_loss": np.linspace(high, high * 0.9, len(steps))}
    figure = loss_figure(metrics, find_phases(steps, np.zeros(len(steps)), np.zeros(len(steps))))
    FigureCanvasAgg(figure).draw()  # lay the figure out, as saving it does
    label = figure.axes[0].yaxis.label.get_window_extent(figure.canvas.get_renderer())
    assert label.x0 >= 0, label  # was pushed off the left edge by "4.4x10^0" tick labels
    assert "log scale" in figure.axes[0].get_ylabel()
    ax = figure.axes[0]  # and the tick labels do not overlap one another
    boxes = sorted((t.get_window_extent(figure.canvas.get_renderer()) for t in
                    ax.get_yticklabels() + ax.get_yticklabels(minor=True)
                    if t.get_text() and ax.get_ylim()[0] <= t.get_position()[1] <= ax.get_ylim()[1]),
                   key=lambda box: box.y0)
    assert boxes and all(lower.y1 <= upper.y0 for lower, upper in zip(boxes, boxes[1:])), boxes


def test_figures_without_phases_draw_no_empty_legend(tmp_path):
    from tinygrok.plots import weight_norm_figure

    steps = np.arange(10, 110, 10)
    metrics = {"step": steps, "weight_norm": np.linspace(30, 20, len(steps))}
    never = find_phases(steps, np.zeros(len(steps)), np.zeros(len(steps)))  # no phase at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "No artists with labels found to put in legend"
        weight_norm_figure(metrics, never)


def test_the_spectrum_ticks_its_key_frequencies_and_says_what_the_colours_mean():
    from tinygrok.analysis.fourier import fourier_basis, fourier_timeline

    p, rng = 97, np.random.default_rng(0)
    flat = rng.standard_normal((99, 16))  # at initialisation: every frequency is "key"
    basis, frequency = fourier_basis(p)
    wave = np.zeros((99, 16))
    wave[2:] = basis[frequency == 13].T @ rng.standard_normal((2, 16))  # only k = 13
    spectrum = fourier_timeline([0, 100], np.stack([flat, wave]), "x_plus_y", p)
    steps = np.array([0, 100])
    figure = fourier_figure(spectrum, find_phases(steps, np.ones(2), np.array([0.1, 1.0])))
    first, last = figure.axes[0], figure.axes[-2]  # the bars at step 0 and at step 100
    assert spectrum.key_frequencies(-1) == [13] and 13 in last.get_xticks()
    assert len(first.get_xticks()) <= 20  # not all 48 frequencies, written over each other
    texts = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert texts[:2] == ["key frequency", "other frequency"]


def test_the_attention_metrics_legend_sits_below_the_panels_and_names_the_uniform_line(tmp_path):
    run = load_run(write_synthetic_run(tmp_path))
    analysis = analyze_run(run)
    figure = attention_metrics_figure(analysis.timeline, analysis.phases)
    assert all(ax.get_legend() is None for ax in figure.axes)  # none covering a curve
    texts = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert "head 0" in texts and "uniform '=' row (ln 4)" in texts


@pytest.mark.parametrize("layers, heads", [(1, 4), (2, 8), (1, 1)])
def test_the_attention_metrics_legend_fits_the_figure_below_the_step_labels(layers, heads):
    from tinygrok.analysis.attention_metrics import attention_timeline

    rng = np.random.default_rng(0)
    weights = np.tril(rng.random((6, layers, heads, 3, 4, 4)) + 0.1)
    patterns = weights / weights.sum(axis=-1, keepdims=True)
    steps = np.arange(0, 60, 10)
    timeline = attention_timeline(steps, patterns)
    phases = find_phases(steps, np.ones(6), np.array([0.1, 0.2, 0.6, 1, 1, 1]))
    figure = attention_metrics_figure(timeline, phases)
    FigureCanvasAgg(figure).draw()
    renderer = figure.canvas.get_renderer()
    legend = figure.legends[0].get_window_extent(renderer)
    width = figure.get_figwidth() * figure.dpi
    assert legend.x0 >= 0 and legend.x1 <= width and legend.y0 >= 0, legend
    step_label = figure.axes[-1].xaxis.label.get_window_extent(renderer)
    assert legend.y1 <= step_label.y0, (legend, step_label)


def test_probes_are_described_with_the_tasks_operator(tmp_path):
    run = load_run(write_synthetic_run(tmp_path, curve="dip"))
    paths = make_figures(run, analyze_run(run), out_dir=tmp_path / "out")
    assert "attention_post_grokking.png" in {p.name for p in paths}
    assert " + " in probe_description(run, 0) and " o " not in probe_description(run, 0)


@pytest.mark.parametrize("layers, heads", [(1, 1), (2, 4), (3, 8)])
def test_heatmap_titles_overlap_neither_the_figure_title_nor_the_panel_above(layers, heads):
    from tinygrok.plots import attention_heatmaps_figure

    weights = np.tril(np.random.default_rng(0).random((layers, heads, 3, 4, 4)) + 0.1)
    figure = attention_heatmaps_figure(weights / weights.sum(-1, keepdims=True), 0,
                                       "7 + 6 = (val)", "Attention at step 640 (the end of "
                                       "post-grokking)")
    FigureCanvasAgg(figure).draw()
    renderer = figure.canvas.get_renderer()
    top, bottom = figure.axes[:2]
    assert top.title.get_window_extent(renderer).y1 <= \
        figure._suptitle.get_window_extent(renderer).y0
    # with one layer the lower panel's title sat on the upper panel's x, o, y, = labels
    upper_labels = min(label.get_window_extent(renderer).y0 for label in top.get_xticklabels())
    assert bottom.title.get_window_extent(renderer).y1 <= upper_labels


@pytest.mark.parametrize("layers, heads, phases, lowest", [
    (1, 3, 3, 0.0), (2, 4, 3, 0.0), (3, 8, 3, 0.0),
    (2, 4, 1, 0.8),  # one panel, and the similarities of a real run (0.8 to 1)
])
def test_head_clusters_name_each_phases_own_clusters_inside_the_figure(layers, heads, phases,
                                                                       lowest):
    from tinygrok.plots import head_clusters_figure

    rng = np.random.default_rng(0)
    count = layers * heads
    clusters = {}
    ends = (("memorization", 500), ("transition", 640), ("post_grokking", 1000))[-phases:]
    for label, step in ends:
        similarity = lowest + (1 - lowest) * rng.random((count, count))
        clusters[label] = {"step": step, "k": 2, "similarity": (similarity + similarity.T) / 2,
                           "labels": rng.integers(0, 2, (layers, heads)).tolist()}
    figure = head_clusters_figure(clusters)
    FigureCanvasAgg(figure).draw()
    renderer = figure.canvas.get_renderer()
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == phases
    for ax, found in zip(panels, clusters.values()):
        names = [label.get_text() for label in ax.get_xticklabels()]
        assert names == [f"L{layer} H{head}  c{found['labels'][layer][head]}"
                         for layer in range(layers) for head in range(heads)]
        assert f"step {found['step']}" in ax.get_title()
    box = figure.bbox
    texts = [label for ax in figure.axes
             for label in ax.get_xticklabels() + ax.get_yticklabels() + [ax.yaxis.label]
             if label.get_text()] + [ax.title for ax in panels] + figure.texts
    assert any("cosine similarity" in text.get_text() for text in texts)  # the colour bar's
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, text.get_text()
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1, text.get_text()


def test_figure_functions_name_a_wrong_argument(tmp_path):
    from tinygrok.plots import accuracy_figure

    directory = write_synthetic_run(tmp_path, curve="dip")
    run = load_run(directory)
    analysis = analyze_run(run)
    paths = make_figures(str(directory), analysis, out_dir=tmp_path / "from_a_path")
    assert {path.name for path in paths} >= {"accuracy.png", "head_clusters.png"}
    with pytest.raises(TypeError, match="what analyze_run returns"):
        make_figures(run, analysis.phases)
    with pytest.raises(TypeError, match=r"the dict of find_phases \(analysis.phases\)"):
        accuracy_figure(run.metrics, analysis)
    with pytest.raises(ValueError, match="no attention timeline"):
        attention_metrics_figure(None, analysis.phases)
    with pytest.raises(ValueError, match="no spectrum"):
        fourier_figure(None, analysis.phases)


# -- what each figure draws, read back from its matplotlib objects. Before these, a figure
# -- could plot the wrong column or the wrong step and every test passed: a mutation run
# -- found ten such changes alive (a validation curve drawn from train_acc, every heatmap
# -- at the last step, the mean panel showing one probe, the Gini curve reversed, ...) ------


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """A grokking run with a dip, its analysis, and its figures by name (not saved)."""
    from tinygrok import plots

    run = load_run(write_synthetic_run(tmp_path_factory.mktemp("drawn"), curve="dip"))
    analysis = analyze_run(run)
    figures, real_save = {}, plots.save_figure

    def keep(figure, path, dpi=100):
        figures[os.path.splitext(os.path.basename(path))[0]] = figure
        return path

    plots.save_figure = keep
    try:
        make_figures(run, analysis)
    finally:
        plots.save_figure = real_save
    return run, analysis, figures


def lines_by_label(axes):
    return {line.get_label(): line for line in axes.lines}


def test_the_accuracy_figure_draws_both_curves_the_grokking_step_a_dip_and_the_phases(drawn):
    from tinygrok.analysis.phases import phase_bands

    run, analysis, figures = drawn
    axes = figures["accuracy"].axes[0]
    lines = lines_by_label(axes)
    np.testing.assert_array_equal(lines["train"].get_ydata(), run.metrics["train_acc"])
    np.testing.assert_array_equal(lines["validation"].get_ydata(), run.metrics["val_acc"])
    assert axes.get_title() == "Accuracy"
    assert f"val acc > 0.99 at step {analysis.phases['grok_step']}" in lines
    dip = analysis.phases["dips"][0]
    lowest = lines["lowest point of a dip after grokking"]
    assert (lowest.get_xdata()[0], lowest.get_ydata()[0]) == (dip["min_step"], dip["min_val_acc"])
    assert len(axes.patches) == len(phase_bands(analysis.phases)) == 3  # one band a phase


def test_the_loss_figure_draws_the_validation_loss(drawn):
    run, _, figures = drawn
    lines = lines_by_label(figures["loss"].axes[0])
    np.testing.assert_array_equal(lines["validation"].get_ydata(), run.metrics["val_loss"])
    np.testing.assert_array_equal(lines["train"].get_ydata(), run.metrics["train_loss"])


def test_each_phase_heatmap_shows_its_own_step_one_val_probe_and_the_mean(drawn):
    from tinygrok import plots
    from tinygrok.analysis.run_analysis import phase_end_steps
    from tinygrok.analysis.rundir import nearest_index

    run, analysis, figures = drawn
    probe = plots.example_probe(run)
    assert run.probe_split[probe] == 1 and probe_description(run, probe).endswith("(val)")
    for label, step in phase_end_steps(analysis.phases):
        i = nearest_index(run.attention_steps, step)
        one, mean = figures[f"attention_{label}"].axes[:2]
        np.testing.assert_array_equal(one.images[0].get_array().filled(np.nan),
                                      plots.pattern_mosaic(run.patterns[i][:, :, probe]))
        np.testing.assert_allclose(mean.images[0].get_array().filled(np.nan),
                                   plots.pattern_mosaic(run.patterns[i].mean(axis=2)))


def test_the_attention_metrics_figure_gives_each_layer_its_own_column(drawn):
    _, analysis, figures = drawn
    timeline = analysis.timeline
    assert timeline.layers > 1
    layer_1 = figures["attention_metrics"].axes[1]  # first row, second layer
    np.testing.assert_array_equal(layer_1.lines[0].get_ydata(), timeline.entropy_last[:, 1, 0])


def test_the_fourier_figure_draws_each_snapshots_spectrum_and_the_gini_curve(drawn):
    from tinygrok.analysis.run_analysis import fourier_snapshot_indices

    _, analysis, figures = drawn
    spectrum, axes = analysis.fourier, figures["fourier"].axes
    np.testing.assert_array_equal(axes[-1].lines[0].get_ydata(), spectrum.gini)
    snapshots = fourier_snapshot_indices(spectrum, analysis.phases)
    assert len({i for _, i in snapshots}) > 1  # the snapshots differ, so a mix-up shows
    for panel, (_, i) in zip(axes, snapshots):
        np.testing.assert_allclose([bar.get_height() for bar in panel.patches],
                                   spectrum.norms[i, 1:])
