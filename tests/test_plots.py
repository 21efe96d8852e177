"""Tests for tinygrok.plots: every figure is drawn headless into a non-empty PNG."""

import os
import subprocess
import sys

import pytest
from synthetic_run import write_synthetic_run

from tinygrok.analysis import analyze_run, load_run
from tinygrok.plots import make_figures

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
        "fourier.png",
    }
    assert all(p.parent == run.path / "figures" for p in paths)
    for path in paths:
        assert_png(path)


def test_a_failed_permutation_run_has_no_spectrum_and_one_heatmap(tmp_path):
    run = load_run(write_synthetic_run(tmp_path, task="permutation", curve="fail"))
    paths = make_figures(run, analyze_run(run), out_dir=tmp_path / "out")
    assert sorted(p.name for p in paths) == [
        "accuracy.png", "attention_memorization.png", "attention_metrics.png", "loss.png",
        "weight_norm.png",
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
