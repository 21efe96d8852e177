"""The report: statistics checked by hand, Table 1, Figure 1, claims and incomplete runs.

The run directories are synthetic (tests/synthetic_run.py) with summary.json rewritten to
numbers chosen here, so every entry of Table 1 is known in advance.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import synthetic_run
from lock_holder import locked_by_another_process
from tinygrok.report import (PAPER_TABLE_1, RunRecord, differing_settings,
                             format_mean_and_error, grokked_count, main as report,
                             mean_and_standard_error, table_notes, write_report)

# x_plus_y: three complete seeds (the third never reaches 99% and counts its budget, 1700),
# one incomplete seed; permutation: one seed that failed.
X_PLUS_Y = {0: dict(final_train_acc=1.0, final_val_acc=0.995, step_val_acc_99=1000, grokked=True),
            1: dict(final_train_acc=1.0, final_val_acc=1.0, step_val_acc_99=1200, grokked=True),
            2: dict(final_train_acc=0.97, final_val_acc=0.5, step_val_acc_99=1700, grokked=False)}
PERMUTATION = dict(final_train_acc=0.99, final_val_acc=0.3, step_val_acc_99=1000, grokked=False)


def write_summary(directory, numbers):
    summary = json.loads((directory / "summary.json").read_text())
    summary.update(numbers)
    (directory / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for seed, numbers in X_PLUS_Y.items():
        curve = "grok" if numbers["grokked"] else "fail"
        write_summary(synthetic_run.write_synthetic_run(root, seed=seed, curve=curve, steps=1700),
                      numbers)
    synthetic_run.write_synthetic_run(root, seed=3, steps=1700, complete=False)
    directory = synthetic_run.write_synthetic_run(root, task="permutation", curve="fail")
    write_summary(directory, PERMUTATION)
    stored = {"claims": {name: {"holds": True, "reason": "stored verdict"} for name in
                         ("position_patterns_first", "clean_patterns_in_transition",
                          "failed_run_stays_chaotic")}}
    (directory / "analysis.json").write_text(json.dumps(stored))
    return root


@pytest.fixture(scope="module")
def report_text(sweep_folder):
    result = CliRunner().invoke(report, [str(sweep_folder)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return (sweep_folder / "report.md").read_text()


def table_row(text, label):
    """The cells of Table 1's row for the task labelled ``label``."""
    row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def section(text, heading):
    """The text of one '## ' section of report.md."""
    return text.split(heading)[1].split("\n## ")[0]


# ---- the statistics, by hand ---------------------------------------------------------------


def test_standard_error_of_three_seeds_by_hand():
    mean, error = mean_and_standard_error([1000, 1200, 1700])
    # deviations -300, -100, 400: squares sum to 260000; / (n - 1) = 130000; sqrt / sqrt(3)
    assert mean == 1300
    assert error == pytest.approx(math.sqrt(130000) / math.sqrt(3))
    assert error == pytest.approx(208.17, abs=0.005)


def test_one_seed_has_no_standard_error():
    assert mean_and_standard_error([0.34]) == (0.34, None)
    assert format_mean_and_error(0.34, None, 2) == "0.34 ± n/a"
    with pytest.raises(ValueError):
        mean_and_standard_error([])


def test_identical_seeds_have_zero_error():
    assert mean_and_standard_error([1.0, 1.0, 1.0]) == (1.0, 0.0)


def test_formatting_and_counting():
    assert format_mean_and_error(1300.0, 208.1666, 0) == "1300 ± 208"
    assert format_mean_and_error(0.83166, 0.16583, 3) == "0.832 ± 0.166"
    assert grokked_count([{"grokked": True}, {"grokked": True}, {"grokked": False}]) == \
        "2/3 seeds grokked"


def test_settings_that_differ_between_seeds_are_found():
    configs = [{"seed": 0, "weight_decay": 0.5, "p": 97}, {"seed": 1, "weight_decay": 1.0, "p": 97}]
    assert differing_settings(configs) == {"weight_decay": [0.5, 1.0]}


# ---- report.md -----------------------------------------------------------------------------


def test_table_1_holds_our_statistics_and_the_per_seed_values(report_text):
    cells = table_row(report_text, "x + y mod 11")
    assert cells[1] == "3"  # the incomplete seed is not counted
    train = mean_and_standard_error([1.0, 1.0, 0.97])
    assert cells[2] == f"{train[0]:.3f} ± {train[1]:.3f} (1.000, 1.000, 0.970)"
    val = mean_and_standard_error([0.995, 1.0, 0.5])
    assert cells[4] == f"{val[0]:.3f} ± {val[1]:.3f} (0.995, 1.000, 0.500)"
    assert cells[6] == "1300 ± 208 (1000, 1200, 1700*)"
    assert cells[8] == "2/3 seeds grokked"


def test_the_papers_numbers_stand_beside_ours(report_text):
    cells = table_row(report_text, "x + y mod 11")
    assert cells[3] == "1.00 ± 0.00" and cells[5] == "0.97 ± 0.01" and cells[7] == "2580 ± 110"
    cells = table_row(report_text, "permutation (S5)")
    assert cells[1] == "1"
    assert cells[2] == "0.990 ± n/a (0.990)"
    assert cells[5] == "0.34 ± 0.05" and cells[7] == "7500 (failed)"
    assert cells[8] == "0/1 seeds grokked"
    assert "mean ± std error over 3 seeds" in report_text
    assert PAPER_TABLE_1["x_div_y"]["step_val_acc_99"] == (4093, 90)
    assert PAPER_TABLE_1["x_minus_y"]["step_val_acc_99"] == (4393, 33)


def test_incomplete_runs_are_listed_not_averaged(report_text):
    assert "| x_plus_y-s3 | x_plus_y | 3 | 1700 | 1700 | stopped |" in section(
        report_text, "## Incomplete runs")
    assert "x_plus_y-s3" not in report_text.split("## Incomplete runs")[0]


def test_settings_off_the_papers_are_pointed_out(report_text):
    assert "p = 11 (paper: 97)" in report_text and "steps = 1000/1700 (paper: 7500)" in report_text


def test_claims_come_from_analysis_json_or_are_computed(report_text):
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in section(report_text, "## The paper's claims").splitlines()
            if line.startswith("| x_") or line.startswith("| permutation")}
    assert set(rows) == {"x_plus_y-s0", "x_plus_y-s1", "x_plus_y-s2", "permutation-s0"}
    assert rows["permutation-s0"][2:] == ["true", "true", "true", "analysis.json"]
    assert rows["x_plus_y-s0"][-1] == "computed by the report"
    assert rows["x_plus_y-s0"][1] == "yes" and rows["x_plus_y-s2"][1] == "no"
    assert all(verdict in ("true", "false", "n/a") for verdict in rows["x_plus_y-s0"][2:5])
    assert "stored verdict" in report_text


def test_without_analysis_runs_are_marked_not_analysed(sweep_folder, tmp_path):
    write_report(sweep_folder, tmp_path, analyze_missing=False)
    text = (tmp_path / "report.md").read_text()
    assert "| x_plus_y-s0 | yes | — | — | — | not analysed |" in text


def test_seeds_trained_differently_are_flagged(tmp_path):
    for seed, decay in ((0, 0.5), (1, 1.0)):
        directory = synthetic_run.write_synthetic_run(tmp_path, seed=seed, steps=200)
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, "weight_decay": decay}))
    write_report(tmp_path, tmp_path, analyze_missing=False)
    assert "not all trained alike (weight_decay: 0.5, 1.0)" in (tmp_path / "report.md").read_text()


# ---- Figure 1 ------------------------------------------------------------------------------


def test_figure_1_is_a_png_with_one_panel_per_task(sweep_folder, report_text):
    from tinygrok.report import figure_1, group_by_task, read_run, find_run_directories

    png = (sweep_folder / "figure1.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "![Figure 1](figure1.png)" in report_text
    figure = figure_1(group_by_task([read_run(d) for d in find_run_directories(sweep_folder)]))
    panels = {ax.get_title(): ax for ax in figure.axes}
    assert set(panels) == {"x + y mod 11: 2/3 seeds grokked", "permutation (S5): 0/1 seeds grokked"}
    ax = panels["x + y mod 11: 2/3 seeds grokked"]
    assert ax.get_xscale() == "log"
    dashed = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert sorted(dashed) == [1000, 1200]  # one per grokked seed; the incomplete one left out
    assert len(ax.get_lines()) == 3 * 2 + 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "val acc > 0.99" in legend and any(text.startswith("train (running") for text in legend)
    # no run of S5 grokked: no dashed line, so no legend entry for one
    permutation = [t.get_text() for t in panels["permutation (S5): 0/1 seeds grokked"]
                   .get_legend().get_texts()]
    assert "val acc > 0.99" not in permutation


# ---- the command ---------------------------------------------------------------------------


def test_a_folder_without_runs_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(report, [str(tmp_path)])
    assert result.exit_code == 2
    assert "no run directories" in result.output and len(result.output.splitlines()) == 1


def test_out_puts_the_report_elsewhere(sweep_folder, tmp_path):
    result = CliRunner().invoke(report, [str(sweep_folder), "--out", str(tmp_path / "r"),
                                         "--no-analyze-missing"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / "figure1.png").is_file()
    assert "4 complete and 1 incomplete run(s)" in result.output


def test_ctrl_c_exits_130_without_a_traceback(sweep_folder, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from tinygrok.report import main

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tinygrok.report.write_report", ctrl_c)
    result = CliRunner().invoke(main, [str(sweep_folder), "--out", str(tmp_path)])
    assert result.exit_code == 130 and "interrupted" in result.output
    assert "Aborted" not in result.output


# ---- what the report refuses, warns about and names ----------------------------------------


def invoke(*args):
    return CliRunner().invoke(report, [str(arg) for arg in args], catch_exceptions=False)


@pytest.mark.parametrize("out, message", [
    ("", "--out: must name a folder, not be empty"),
    ("{file}/sub", "cannot write into"),
    ("{file}", "is a file"),  # click's own check
])
def test_a_bad_out_is_one_line_and_writes_nothing(sweep_folder, tmp_path, out, message):
    (tmp_path / "afile").write_text("not a folder")
    result = CliRunner().invoke(report, [str(sweep_folder), "--out",
                                         out.format(file=tmp_path / "afile")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ")  # one line says it
    assert not (tmp_path / "afile").is_dir()


def test_an_unwritable_folder_without_out_is_one_line_and_nothing_is_computed(
        tmp_path, monkeypatch):
    synthetic_run.write_synthetic_run(tmp_path, seed=0, steps=200)

    def refuse(*args, **kwargs):  # what a folder we may not write into does (we may be root)
        raise PermissionError(13, "Permission denied")

    # tempfile is the standard module: this patches it for the whole process, for this test
    monkeypatch.setattr("tinygrok.runfiles.tempfile.TemporaryFile", refuse)
    monkeypatch.setattr("tinygrok.report.write_report", lambda *args: pytest.fail("computed"))
    result = CliRunner().invoke(report, [str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: cannot write into {tmp_path} (Permission denied)\n"


def test_folders_whose_config_no_run_wrote_are_named_not_read(tmp_path):
    synthetic_run.write_synthetic_run(tmp_path, seed=0, steps=200)
    for name, text in (("eslint", '{"name": "eslint"}'), ("a_list", "[1, 2]"),
                       ("bad_seed", '{"task": "x_plus_y", "version": "0", "seed": "abc"}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(text)
    result = invoke(tmp_path, "--no-analyze-missing")
    assert result.exit_code == 0, result.output
    assert "1 complete and 0 incomplete run(s)" in result.output
    assert "not read as runs" in result.output
    for name in ("eslint", "a_list", "bad_seed"):
        assert str(tmp_path / name) in result.output
    assert "unknown" not in (tmp_path / "report.md").read_text()


def test_a_seed_in_two_folders_is_pointed_out(tmp_path):
    for copy in ("a", "b"):
        synthetic_run.write_synthetic_run(tmp_path / copy, seed=0, steps=200)
    result = invoke(tmp_path, "--no-analyze-missing")
    assert result.exit_code == 0, result.output
    warning = "x_plus_y seed 0 is in 2 folders"
    assert warning in result.output and warning in (tmp_path / "report.md").read_text()


def test_a_run_left_out_of_figure_1_is_said_to_be(tmp_path):
    for seed in (0, 1):
        synthetic_run.write_synthetic_run(tmp_path, seed=seed, steps=200)
    (tmp_path / "x_plus_y-s1" / "metrics.csv").write_text("step,val_acc\n10,oops\n")
    result = invoke(tmp_path, "--no-analyze-missing")
    assert result.exit_code == 0, result.output
    assert "Left out of Figure 1 (their metrics.csv cannot be read): x_plus_y-s1" \
        in result.output


def test_no_complete_run_is_nothing_to_report(tmp_path):
    synthetic_run.write_synthetic_run(tmp_path, seed=0, steps=200, complete=False)
    result = CliRunner().invoke(report, [str(tmp_path)])
    assert result.exit_code == 1
    assert "none of its 1 run(s) is complete yet" in result.output
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "figure1.png").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no flock")
def test_a_run_training_now_is_told_from_one_that_stopped(tmp_path):
    synthetic_run.write_synthetic_run(tmp_path, seed=0, steps=200)
    training = synthetic_run.write_synthetic_run(tmp_path, seed=1, steps=200, complete=False)
    synthetic_run.write_synthetic_run(tmp_path, seed=2, steps=200, complete=False)
    with locked_by_another_process(training):
        assert invoke(tmp_path, "--no-analyze-missing").exit_code == 0
    incomplete = section((tmp_path / "report.md").read_text(), "## Incomplete runs")
    assert "| x_plus_y-s1 | x_plus_y | 1 |" in incomplete
    rows = {line.split("|")[1].strip(): line.strip("|").split("|")[-1].strip()
            for line in incomplete.splitlines() if line.startswith("| x_plus_y")}
    assert rows == {"x_plus_y-s1": "training", "x_plus_y-s2": "stopped"}


# -- when the table's warnings must stay silent (each test written against a mutant that
# -- the suite let through: every warning was tested, but never its absence) ---------------


def record(name, config, complete=True, has_metrics=True):
    return RunRecord(Path(name), config, {"grokked": True} if complete else None,
                     {"step": np.array([10])} if has_metrics else None)


def test_table_notes_are_silent_for_runs_that_do_not_warrant_a_warning():
    def run(seed, **settings):
        return {"task": "x_plus_y", "seed": seed, **settings}

    silent = {
        # an unfinished run trained otherwise is neither "mixed settings" nor "off the paper"
        "incomplete, other settings": [record("a", run(0, weight_decay=0.5)),
                                       record("b", run(1, weight_decay=1.0, steps=10),
                                              complete=False)],
        "a setting missing from config.json": [record("a", run(0))],
        "one folder per seed": [record("a", run(1)), record("b", run(2))],
        "an unfinished copy of a seed": [record("a", run(0)),
                                         record("b", run(0), complete=False)],
        "an unfinished run without metrics.csv": [record("a", run(0)),
                                                  record("b", run(1), complete=False,
                                                         has_metrics=False)],
    }
    for case, records in silent.items():
        assert table_notes({"x_plus_y": records}) == [], case
    permutation = {"task": "permutation", "seed": 0, "p": 11}  # S5 has no modulus to be off
    assert table_notes({"permutation": [record("a", permutation)]}) == []
    # nor to differ in (an older version saved whatever p it was given)
    older = {"task": "permutation", "seed": 1, "p": 97}
    assert table_notes({"permutation": [record("a", permutation), record("b", older)]}) == []


def test_a_setting_missing_from_one_config_counts_as_differing():
    assert differing_settings([{"seed": 0, "weight_decay": 0.5}, {"seed": 1}]) == \
        {"weight_decay": [0.5, None]}
    assert differing_settings([{"seed": 0}, {"seed": 1, "warmup": 10}]) == \
        {"warmup": [None, 10]}  # missing from the first seed's (an older version's) config
    assert grokked_count([{}]) == "0/1 seeds grokked"  # no "grokked" key: not grokked


# -- Table 1 and the claims tally on inputs where a wrong count shows (each written against
# -- a mutant that a mutation run of the report found alive) --------------------------------


def test_table_1_averages_every_complete_seed_in_seed_order(tmp_path):
    from tinygrok.report import group_by_task, task_statistics

    def seed_run(seed, steps):
        return RunRecord(tmp_path / f"x_plus_y-s{seed}", {"task": "x_plus_y", "seed": seed},
                         {"final_train_acc": 1.0, "final_val_acc": 1.0,
                          "step_val_acc_99": steps, "grokked": True}, None)

    # folder names sort s10 < s2 < s3 < s4; seeds sort 2, 3, 4, 10
    records = [seed_run(10, 1000), seed_run(2, 2000), seed_run(3, 3000), seed_run(4, 4000)]
    ordered = group_by_task(records)["x_plus_y"]
    assert [r.seed for r in ordered] == [2, 3, 4, 10]
    statistics = task_statistics(ordered)
    assert statistics["n"] == 4
    assert statistics["step_val_acc_99"]["values"] == [2000, 3000, 4000, 1000]
    assert statistics["step_val_acc_99"]["mean"] == 2500


def test_the_claims_tally_counts_only_the_runs_where_a_claim_applies(tmp_path):
    from tinygrok.report import claims_section

    def run_with_claims(name, holds):
        folder = tmp_path / name
        folder.mkdir()
        claims = {"position_patterns_first": {"holds": True, "reason": "r"},
                  "clean_patterns_in_transition": {"holds": True, "reason": "r"},
                  "failed_run_stays_chaotic": {"holds": holds, "reason": "r"}}
        (folder / "analysis.json").write_text(json.dumps({"claims": claims}))
        return RunRecord(folder, {"task": "x_plus_y", "seed": len(name)}, {"grokked": True},
                         None)

    # claim 3 holds for the failed run and does not apply to the one that grokked
    text = claims_section({"x_plus_y": [run_with_claims("failed", True),
                                        run_with_claims("grokked", None)]},
                          analyze_missing=False)
    assert "- Claim 3 (" in text
    assert [line for line in text.splitlines() if line.startswith("- Claim 3 (")][0].endswith(
        "holds in 1 of 1 runs where it applies.")


def test_the_report_never_imports_the_training_loop(sweep_folder, tmp_path):
    """The design notes (../shared/DESIGN.md): analysis reads run directories and plain
    arrays only. The report once imported the run command for the paper's settings, and
    with it the model, the kernels and Numba; the settings now live in tinygrok/config.py."""
    import subprocess
    script = ("import sys, runpy\n"
              "sys.argv = ['report', sys.argv[1], '--out', sys.argv[2]]\n"
              "try:\n"
              "    runpy.run_module('tinygrok.report', run_name='__main__')\n"
              "except SystemExit as stop:\n"
              "    assert not stop.code, stop.code\n"
              "print(sorted(m for m in ('numba', 'tinygrok.train', 'tinygrok.model',\n"
              "                         'tinygrok.run', 'tinygrok.autograd') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script, str(sweep_folder), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report.md").is_file()
    assert result.stdout.splitlines()[-1] == "[]"
