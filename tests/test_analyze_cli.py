"""Tests for ``python -m tinygrok.analyze``: errors are one line, a run gets its analysis."""

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from synthetic_run import write_synthetic_run

from tinygrok.analyze import main


def test_a_flat_spectrum_is_named_as_the_figure_names_it():
    from tinygrok.analyze import _fourier_line

    flat = {"group": "Z_7", "key_frequencies_final": [1, 2, 3], "norms_final": [0.1] * 4,
            "gini_first": 0.01, "gini_final": 0.02}
    assert "key frequencies of the final embeddings over Z_7: all 3, a flat spectrum" \
        in _fourier_line(flat)
    assert ": 2 (Gini" in _fourier_line({**flat, "key_frequencies_final": [2]})


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_usage_error(result, text):
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and text in result.output
    assert "Traceback" not in result.output


def test_a_missing_directory_is_a_one_line_error(tmp_path):
    assert_one_line_usage_error(invoke(tmp_path / "nowhere"), "no such run directory")


def test_an_incomplete_run_is_a_one_line_error(tmp_path):
    directory = write_synthetic_run(tmp_path, complete=False)
    result = invoke(directory)
    assert_one_line_usage_error(result, "incomplete run")
    python = result.output.rstrip().split("which writes no file: ")[1]
    assert python == (f"from tinygrok.analysis import analyze_run, load_run; "
                      f"report = analyze_run(load_run({str(directory)!r})).report")
    # ... and that line, pasted, analyses the run as far as it went
    scope = {}
    exec(python, scope)
    report = scope["report"]
    assert report["run"]["complete"] is False
    assert any("the run is not finished" in note for note in report["phases"]["notes"])
    assert not (directory / "analysis.json").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no folder locks")
def test_a_run_still_training_is_named_as_such_not_sent_to_resume(tmp_path):
    from lock_holder import locked_by_another_process

    directory = write_synthetic_run(tmp_path, complete=False)
    with locked_by_another_process(directory) as training:
        result = invoke(directory)
    assert_one_line_usage_error(result, f"{directory} is in use: process {training.pid} is "
                                        f"training in it now; analyse it when it has finished")
    assert "--resume" not in result.output


@pytest.mark.skipif(sys.platform == "win32", reason="no folder locks")
def test_no_run_can_start_in_the_folder_while_it_is_analysed(tmp_path, monkeypatch):
    """run --force would delete the files being read, and the old run's figures would land
    in the new run (a hostile-environment probe saw it happen)."""
    from tinygrok.analysis import analyze_run

    directory = write_synthetic_run(tmp_path)
    tried = []

    def analyse_while_a_run_tries_to_start(run, settings):
        tried.append(subprocess.run([sys.executable, "-c", (
            "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), "
            "fcntl.LOCK_EX | fcntl.LOCK_NB)"), str(directory)], capture_output=True))
        return analyze_run(run, settings)

    monkeypatch.setattr("tinygrok.analyze.analyze_run", analyse_while_a_run_tries_to_start)
    result = invoke(directory, "--no-figures")
    assert result.exit_code == 0, result.output
    assert tried[0].returncode != 0 and b"BlockingIOError" in tried[0].stderr
    assert (directory / "analysis.json").exists()


def test_a_folder_of_runs_names_one_to_analyse_and_the_report(tmp_path):
    sweep = tmp_path / "paper"
    for seed in (1, 0):
        write_synthetic_run(sweep, seed=seed)
    result = invoke(sweep)
    assert_one_line_usage_error(result, f"{sweep} holds 2 runs, not one: analyse one of them "
                                        f"(python -m tinygrok.analyze {sweep / 'x_plus_y-s0'})")
    assert f"python -m tinygrok.report {sweep}" in result.output
    assert_one_line_usage_error(invoke(tmp_path), "missing config.json")  # no runs just inside
    # a finished run is the one suggested, and another project's config.json is no run
    (sweep / "x_plus_y-s0" / "summary.json").unlink()
    (sweep / "notes").mkdir()
    (sweep / "notes" / "config.json").write_text('{"editor": "vim"}')
    assert_one_line_usage_error(invoke(sweep), f"{sweep} holds 2 runs, not one: analyse one of "
                                               f"them (python -m tinygrok.analyze "
                                               f"{sweep / 'x_plus_y-s1'})")
    (sweep / "x_plus_y-s1" / "config.json").unlink()
    assert_one_line_usage_error(invoke(sweep), f"{sweep} is not a run but holds one: analyse it "
                                               f"with python -m tinygrok.analyze "
                                               f"{sweep / 'x_plus_y-s0'}")


def test_a_run_without_metrics_is_a_one_line_error(tmp_path):
    directory = write_synthetic_run(tmp_path)
    (directory / "metrics.csv").unlink()
    assert_one_line_usage_error(invoke(directory), "missing metrics.csv")


def test_python_dash_m_reports_a_missing_directory_on_stderr(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY")}
    process = subprocess.run([sys.executable, "-m", "tinygrok.analyze", str(tmp_path / "x")],
                             capture_output=True, text=True, env=env)
    assert process.returncode == 2
    assert process.stderr.strip().startswith("Error:") and process.stderr.count("\n") == 1
    assert process.stdout == ""


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory):
    directory = write_synthetic_run(tmp_path_factory.mktemp("runs"), curve="dip")
    return directory, invoke(directory)


def test_the_command_writes_analysis_json_and_figures(analysed_run):
    directory, result = analysed_run
    assert result.exit_code == 0, result.output
    report = json.loads((directory / "analysis.json").read_text())
    assert report["phases"]["grok_step"] == 640
    assert report["phases"]["dips"][0]["start"] == 800
    assert report["settings"]["emergence_similarity"] == 0.9
    assert set(report["claims"]) == {"position_patterns_first",
                                     "clean_patterns_in_transition",
                                     "failed_run_stays_chaotic"}
    # accuracy, loss, weight norm, 3 heatmaps, attention metrics, head clusters, spectrum
    assert len(list((directory / "figures").glob("*.png"))) == 9


def test_the_summary_names_phases_dips_heads_frequencies_and_claims(analysed_run):
    output = analysed_run[1].output
    assert "phases: memorization 130-500, transition 500-640, post-grokking 640-1000" in output
    assert "dips after grokking: 800-830" in output
    assert "layer 0: 120 170 220 270" in output
    assert re.search(r"head clusters at step \d+ \(the end of transition\), k = \d+: layer 0: "
                     r"[\d ]+; layer 1: [\d ]+", output)
    assert "key frequencies of the final embeddings over Z_11: 3" in output
    assert "1. position patterns emerge first: true" in output
    assert "3. a failed run keeps chaotic attention: n/a" in output


def test_the_final_line_says_what_its_numbers_are(analysed_run, tmp_path):
    grokked = analysed_run[1].output
    assert "train acc 1.0000 (last log window's batches)" in grokked
    assert "step_val_acc_99 = 640\n" in grokked
    failed = invoke(write_synthetic_run(tmp_path, curve="fail")).output
    # a run that never grokked gets the step budget, and the line says so
    assert "step_val_acc_99 = 1000 (the step budget: val acc never passed 0.99)" in failed


def test_a_run_without_phases_has_its_clusters_at_the_final_step(tmp_path):
    directory = write_synthetic_run(tmp_path, curve="fail")
    metrics = directory / "metrics.csv"
    lines = metrics.read_text().splitlines()
    column = lines[0].split(",").index("train_acc")
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        row[column] = "0.5"  # never memorised: no phase at all
    metrics.write_text("\n".join([lines[0]] + [",".join(row) for row in rows]) + "\n")
    output = invoke(directory).output
    assert re.search(r"head clusters at step 1000 \(the final step\), k = \d+", output), output


def test_the_run_line_gives_no_modulus_for_permutations(tmp_path):
    output = invoke(write_synthetic_run(tmp_path, task="permutation", curve="fail")).output
    assert "permutation-s0: permutation, seed 0, 1000 steps (complete)" in output


def test_options_change_the_threshold_and_skip_figures(tmp_path):
    directory = write_synthetic_run(tmp_path, curve="fail")
    result = invoke(directory, "--no-figures", "--threshold", "0.5", "--clusters", "2")
    assert result.exit_code == 0, result.output
    assert not (directory / "figures").exists()
    report = json.loads((directory / "analysis.json").read_text())
    assert report["settings"]["emergence_similarity"] == 0.5
    assert report["attention"]["clusters_at_phase_ends"]["memorization"]["k"] == 2
    assert report["claims"]["failed_run_stays_chaotic"]["holds"] is True


def test_a_threshold_outside_zero_one_is_rejected(tmp_path):
    result = invoke(write_synthetic_run(tmp_path), "--threshold", "1.5")
    assert result.exit_code == 2 and "--threshold" in result.output


def test_a_nan_threshold_is_rejected(tmp_path):
    result = invoke(write_synthetic_run(tmp_path), "--threshold", "nan")
    assert result.exit_code == 2 and "nan is not a number" in result.output
    assert "Traceback" not in result.output


def test_more_clusters_than_heads_is_a_one_line_error(tmp_path):
    directory = write_synthetic_run(tmp_path)
    heads = json.loads((directory / "config.json").read_text())
    heads = heads["layers"] * heads["heads"]
    assert_one_line_usage_error(invoke(directory, "--clusters", heads + 1),
                                f"this run has {heads} heads")


def test_a_file_is_not_a_run_directory(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert_one_line_usage_error(invoke(tmp_path / "afile"), "a file, not a run directory")


def test_a_damaged_attention_file_is_a_one_line_error(tmp_path):
    directory = write_synthetic_run(tmp_path)
    (directory / "attention.npz").write_bytes(b"PK\x03\x04 cut short")
    assert_one_line_usage_error(invoke(directory), "attention.npz: cannot be read")


def test_dash_h_shows_the_help():
    result = invoke("-h")
    assert result.exit_code == 0 and "--clusters" in result.output


def test_ctrl_c_exits_130_without_a_traceback(tmp_path, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tinygrok.analyze.analyze_run", ctrl_c)
    result = invoke(write_synthetic_run(tmp_path))
    assert result.exit_code == 130 and "interrupted" in result.output
    assert "Aborted" not in result.output


@pytest.mark.parametrize("file, content, message", [
    ("config.json", "[]", "not a JSON object"),
    ("summary.json", "[]", "incomplete run (no readable summary.json)"),
    ("config.json", '{"task": "x_plus_y"}', "no integer modulus p"),
])
def test_json_that_is_not_a_runs_is_a_one_line_error(tmp_path, file, content, message):
    directory = write_synthetic_run(tmp_path)
    (directory / file).write_text(content)
    assert_one_line_usage_error(invoke(directory), message)


@pytest.mark.parametrize("options", [[], ["--no-figures"]], ids=["figures", "no-figures"])
def test_a_run_folder_that_cannot_be_written_is_refused_before_the_analysis(
        tmp_path, monkeypatch, options):
    directory = write_synthetic_run(tmp_path)

    def refuse(*args, **kwargs):  # what a folder we may not write into does (we may be root)
        raise PermissionError(13, "Permission denied")

    # tempfile is the standard module: this patches it for the whole process, for this test
    monkeypatch.setattr("tinygrok.runfiles.tempfile.TemporaryFile", refuse)
    monkeypatch.setattr("tinygrok.analyze.analyze_run", lambda *args: pytest.fail("analysed"))
    assert_one_line_usage_error(invoke(directory, *options), f"cannot write into {directory}")
    assert not (directory / "analysis.json").exists()


def test_ctrl_c_while_analysis_json_is_written_leaves_no_part_of_it(tmp_path, monkeypatch):
    # analysis.json is whole or not there: a truncated one, newer than summary.json, would
    # never be written again, and the report would read broken JSON
    import os as os_module

    directory = write_synthetic_run(tmp_path)
    real_replace = os_module.replace

    def ctrl_c_at_analysis_json(source, target):
        if str(target).endswith("analysis.json"):
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os_module, "replace", ctrl_c_at_analysis_json)
    result = invoke(directory, "--no-figures")
    assert result.exit_code == 130, result.output
    assert not (directory / "analysis.json").exists()
    assert not list(directory.glob(".*.tmp"))  # nor its temporary file


def fail_at_the_third_figure(monkeypatch, error):
    """plots.save_figure writes two figures, then raises ``error`` (a full disk, Ctrl-C)."""
    import tinygrok.plots as plots

    real_save, saved = plots.save_figure, []

    def save_figure(figure, path, *args, **kwargs):
        if len(saved) == 2:
            raise error
        saved.append(path)
        return real_save(figure, path, *args, **kwargs)

    monkeypatch.setattr(plots, "save_figure", save_figure)
    return saved


@pytest.mark.parametrize("stop", ["full disk", "ctrl-c"])
def test_an_analysis_stopped_among_its_figures_leaves_no_analysis_json(
        tmp_path, monkeypatch, stop):
    # A second analysis (another threshold) stopped after two of its figures: the first
    # analysis.json must not stay beside figures that are partly the second's
    directory = write_synthetic_run(tmp_path)
    assert invoke(directory).exit_code == 0
    assert (directory / "analysis.json").exists()
    error = (OSError(28, "No space left on device", str(directory / "figures" / "c.png"))
             if stop == "full disk" else KeyboardInterrupt())
    saved = fail_at_the_third_figure(monkeypatch, error)
    result = invoke(directory, "--threshold", "0.5")
    assert len(saved) == 2
    assert not (directory / "analysis.json").exists()
    last_line = result.output.strip().splitlines()[-1]
    if stop == "full disk":
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert last_line == (f"Error: cannot write {directory / 'figures' / 'c.png'}: No space "
                             f"left on device (the analysis is not written in full: no "
                             f"analysis.json; run the command again once that is fixed)")
    else:
        assert result.exit_code == 130 and "analysis.json is written last" in last_line
    monkeypatch.undo()
    assert invoke(directory, "--threshold", "0.5").exit_code == 0  # the next try completes it
    report = json.loads((directory / "analysis.json").read_text())
    assert report["settings"]["emergence_similarity"] == 0.5


@pytest.mark.parametrize("stop", ["full disk", "ctrl-c"])
def test_an_analysis_stopped_before_its_figures_leaves_no_analysis_json(
        tmp_path, monkeypatch, stop):
    # --no-figures stopped while writing analysis.json, or any analysis stopped while it
    # computes: the earlier analysis.json, with other settings, must not stay
    import tinygrok.analyze as analyze_module

    directory = write_synthetic_run(tmp_path)
    assert invoke(directory).exit_code == 0
    if stop == "full disk":
        def full_disk(path, report):
            raise OSError(28, "No space left on device", str(path))

        monkeypatch.setattr(analyze_module, "write_json", full_disk)
    else:
        def ctrl_c(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(analyze_module, "analyze_run", ctrl_c)
    result = invoke(directory, "--no-figures", "--threshold", "0.5")
    assert result.exit_code == (1 if stop == "full disk" else 130), result.output
    assert not (directory / "analysis.json").exists()
    if stop == "full disk":  # and the message says so
        assert "no analysis.json; run the command again" in result.output


def test_analysis_json_is_written_after_the_figures(tmp_path, monkeypatch):
    import tinygrok.analyze as analyze_module

    directory, order = write_synthetic_run(tmp_path), []
    real_make_figures = __import__("tinygrok.plots", fromlist=["x"]).make_figures
    real_write_json = analyze_module.write_json
    monkeypatch.setattr("tinygrok.plots.make_figures",
                        lambda *a: order.append("figures") or real_make_figures(*a))
    monkeypatch.setattr(analyze_module, "write_json",
                        lambda *a: order.append("analysis.json") or real_write_json(*a))
    assert invoke(directory).exit_code == 0
    assert order == ["figures", "analysis.json"]


def replace_line(path, number, new_line):
    lines = path.read_text().splitlines()
    lines[number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


def test_a_config_that_is_not_text_is_a_one_line_error(tmp_path):
    directory = write_synthetic_run(tmp_path)
    (directory / "config.json").write_bytes(b"\xff\xfe")
    assert_one_line_usage_error(invoke(directory), "config.json: not valid JSON")


def test_metrics_that_are_not_text_are_a_one_line_error(tmp_path):
    directory = write_synthetic_run(tmp_path)
    (directory / "metrics.csv").write_bytes(b"step,\xff\n")
    assert_one_line_usage_error(invoke(directory), "metrics.csv: not a CSV text file")


def test_a_repeated_step_is_a_one_line_error_naming_the_line(tmp_path):
    directory = write_synthetic_run(tmp_path)
    metrics = directory / "metrics.csv"
    header, *rows = metrics.read_text().splitlines()
    second = rows[1].split(",")
    second[header.split(",").index("step")] = rows[0].split(",")[header.split(",").index("step")]
    replace_line(metrics, 3, ",".join(second))
    assert_one_line_usage_error(invoke(directory), "metrics.csv: line 3: step")


@pytest.mark.parametrize("column, value", [("val_acc", "99.5"), ("train_acc", "-0.5")])
def test_an_accuracy_outside_zero_one_is_a_one_line_error(tmp_path, column, value):
    directory = write_synthetic_run(tmp_path)
    metrics = directory / "metrics.csv"
    header, _, row = metrics.read_text().splitlines()[:3]
    fields = row.split(",")
    fields[header.split(",").index(column)] = value
    replace_line(metrics, 3, ",".join(fields))
    assert_one_line_usage_error(invoke(directory),
                                f"line 3: {column} is {float(value)}, not a fraction in [0, 1]")


def test_analyze_run_takes_a_path(tmp_path):
    from tinygrok.analysis import analyze_run

    directory = write_synthetic_run(tmp_path)
    assert analyze_run(str(directory)).report["run"]["name"] == directory.name


# -- the printed summary's branches and the command's checks, each written against a mutant
# -- that a mutation run found alive (only the grokking run's summary had been read) ---------


def test_the_summary_marks_late_heads_open_phases_unrecovered_dips_and_two_of_three_keys():
    from tinygrok.analyze import _dips_line, _emergence_lines, _fourier_line, _phases_line

    lines = _emergence_lines({"last_logged_step": 1000, "emergence_threshold": 0.9,
                              "emergence_step_by_layer_head": [[120, 1000]],
                              "clusters_at_phase_ends": {}})
    assert lines[1] == "  layer 0: 120 1000*"
    assert ": 1, 2 (Gini" in _fourier_line({"key_frequencies_final": [1, 2],
                                           "norms_final": [0, 1, 1, 1], "group": "Z_7",
                                           "gini_first": 0.1, "gini_final": 0.2})
    assert _dips_line([{"start": 800, "end": 1000, "recovered": False, "min_val_acc": 0.5,
                        "min_step": 900}]).startswith("dips after grokking: 800-end (not "
                                                      "recovered)")
    assert "transition 500-900 (not completed)" in _phases_line(
        {"memorization": {"start": 100, "end": 500},
         "transition": {"start": 500, "end": 900, "completed": False},
         "post_grokking": None})


def test_a_failed_run_gets_its_note_and_the_closing_line_counts_the_figures(tmp_path):
    failed = invoke(write_synthetic_run(tmp_path / "failed", curve="fail"))
    assert "note: val_acc never exceeded" in failed.output, failed.output
    directory = write_synthetic_run(tmp_path / "dip", curve="dip")
    result = invoke(directory)
    assert (f"wrote {directory / 'analysis.json'} and 9 figures in "
            f"{directory / 'figures'}") in result.output, result.output


def test_a_file_named_figures_is_refused_before_the_analysis_runs(tmp_path, monkeypatch):
    directory = write_synthetic_run(tmp_path)
    (directory / "figures").write_text("mine")
    monkeypatch.setattr("tinygrok.analyze.analyze_run",
                        lambda *args: pytest.fail("analysed before the check"))
    result = invoke(directory)
    assert result.exit_code == 2, result.output


def test_the_command_suggested_for_a_folder_of_runs_can_be_pasted(tmp_path):
    import shlex

    folder = tmp_path / "my runs"
    write_synthetic_run(folder)
    said = " ".join(invoke(folder).output.split())
    assert shlex.split(said.split("with ")[1]) == ["python", "-m", "tinygrok.analyze",
                                                   str(folder / "x_plus_y-s0")]


def test_a_run_folder_with_another_run_inside_is_analysed_as_a_run(tmp_path):
    directory = write_synthetic_run(tmp_path)
    write_synthetic_run(directory, seed=1)
    result = invoke(directory, "--no-figures")
    assert result.exit_code == 0, result.output


def test_an_analysis_beside_another_reader_is_not_refused(tmp_path):
    from lock_holder import locked_by_another_process

    directory = write_synthetic_run(tmp_path)
    with locked_by_another_process(directory, shared=True):
        result = invoke(directory, "--no-figures")
    assert result.exit_code == 0, result.output


def test_a_run_given_as_dot_is_named_by_its_folder(tmp_path, monkeypatch):
    """``analyze .`` inside the run folder: Path(".").name is "", which was the run's name
    in the summary line, in analysis.json and in the report's claims table."""
    directory = write_synthetic_run(tmp_path, task="permutation", curve="fail")
    monkeypatch.chdir(directory)
    result = invoke(".", "--no-figures")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("permutation-s0: permutation, seed 0")
    assert json.loads((directory / "analysis.json").read_text())["run"]["name"] == "permutation-s0"
    from tinygrok.report import RunRecord
    assert RunRecord(directory / "..", {}, None, None).name == tmp_path.name


def test_a_loaded_run_prints_as_one_short_line(tmp_path):
    """In a notebook, ``run`` after ``run = load_run(...)`` printed every array: 112,000
    characters for a short run."""
    from tinygrok.analysis import load_run
    run = load_run(write_synthetic_run(tmp_path, curve="dip"))
    text = repr(run)
    assert "\n" not in text and len(text) < 200, text
    assert text.startswith(f"Run({str(run.path)!r}: x_plus_y, seed 0, ") and "complete)" in text
