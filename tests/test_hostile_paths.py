"""Output paths and arguments that used to crash the commands after their checks.

A fuzz of every command's options found these ending in a traceback (exit 1), some after
the kernels had been compiled and some leaving a folder behind. Each must be one line,
exit code 2, and write nothing.
"""
import os

import pytest
from click.testing import CliRunner
from synthetic_run import write_synthetic_run

from tinygrok.analyze import main as analyze_command
from tinygrok.report import main as report_command
from tinygrok.run import main as run_command
from tinygrok.sweep import main as sweep_command

TINY = ["--task", "x_plus_y", "--p", "7", "--steps", "20", "--batch-size", "8",
        "--d-model", "8", "--heads", "2", "--log-every", "5", "--probe-size", "3"]
TOO_LONG = "n" * 300  # longer than any folder name a Linux filesystem takes (255 bytes)


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def assert_refused(result, text, code=2):
    assert result.exit_code == code, result.output  # (an uncaught exception gives 1)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert text in result.output.strip().splitlines()[-1], result.output


@pytest.mark.parametrize("out, says", [
    ("dangling", "dangling is a symbolic link that leads to no folder"),
    ("dangling/run", "dangling is a symbolic link that leads to no folder"),
    ("loop", "cannot use loop (Too many levels of symbolic links)"),
    (TOO_LONG, "File name too long"),
    (f"new/{TOO_LONG}/run", "a folder name may have at most"),
])
def test_an_out_that_cannot_be_made_is_refused_before_training(tmp_path, monkeypatch, out,
                                                               says):
    monkeypatch.chdir(tmp_path)
    os.symlink("nowhere", "dangling")
    os.symlink("loop", "loop")
    before = listing(tmp_path)
    result = CliRunner().invoke(run_command, [*TINY, "--out", out])
    assert_refused(result, says)
    assert listing(tmp_path) == before  # no "new" folder either


def test_a_seed_too_long_for_the_default_folder_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(run_command, [*TINY, "--seed", "9" * 300])
    assert_refused(result, "a folder name may have at most")
    assert listing(tmp_path) == []  # no runs/ folder


@pytest.mark.parametrize("too_long", ["run folder", "log file"])
def test_a_sweep_whose_run_folder_or_log_names_are_too_long_is_refused(tmp_path, too_long):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    digits = 300 if too_long == "run folder" else limit - len("x_plus_y-s")  # the log: + .log
    result = CliRunner().invoke(sweep_command, ["--out", str(tmp_path / "s"), "--tasks",
                                                "x_plus_y", "--seeds", "9" * digits, "--",
                                                "--p", "7"])
    assert_refused(result, "--seeds: cannot create")
    assert listing(tmp_path) == []


def test_a_report_into_a_dangling_symbolic_link_is_refused(tmp_path):
    write_synthetic_run(tmp_path / "runs")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    result = CliRunner().invoke(report_command, [str(tmp_path / "runs"), "--out",
                                                 str(tmp_path / "dangling")])
    assert_refused(result, "symbolic link that leads to no folder")


def test_analyze_refuses_an_empty_run_dir_rather_than_reading_the_current_folder():
    assert_refused(CliRunner().invoke(analyze_command, [""]), "must name a run directory")


def test_analyze_refuses_a_figures_file_before_writing_analysis_json(tmp_path):
    directory = write_synthetic_run(tmp_path)
    (directory / "figures").write_text("not a folder")
    assert_refused(CliRunner().invoke(analyze_command, [str(directory)]),
                   "figures exists and is not a folder")
    assert not (directory / "analysis.json").exists()
    with_no_figures = CliRunner().invoke(analyze_command, [str(directory), "--no-figures"])
    assert with_no_figures.exit_code == 0, with_no_figures.output


def test_the_thread_limit_names_numba_num_threads_when_that_sets_it(monkeypatch):
    from tinygrok import threads

    monkeypatch.setenv("NUMBA_NUM_THREADS", str(threads.available_threads()))
    with pytest.raises(ValueError, match=r"\(NUMBA_NUM_THREADS\)"):
        threads.set_threads(threads.available_threads() + 1)
    monkeypatch.delenv("NUMBA_NUM_THREADS")
    with pytest.raises(ValueError, match=r"\(the cores of this machine\)"):
        threads.set_threads(threads.available_threads() + 1)


def test_a_write_that_fails_leaves_no_temporary_file_and_names_the_file(tmp_path):
    from tinygrok.runfiles import write_atomically

    (tmp_path / "summary.json").mkdir()  # in the way of the rename
    with pytest.raises(IsADirectoryError) as failed:
        write_atomically(tmp_path / "summary.json", b"{}")
    assert failed.value.filename == str(tmp_path / "summary.json")
    assert listing(tmp_path) == ["summary.json"]


def test_analyze_and_report_say_which_file_they_could_not_write(tmp_path):
    """Exit code 1, as the run command's for a failed write: 2 would say 'bad usage'."""
    directory = write_synthetic_run(tmp_path / "runs")
    (directory / "analysis.json").mkdir()
    assert_refused(CliRunner().invoke(analyze_command, [str(directory), "--no-figures"]),
                   f"cannot write {directory / 'analysis.json'}: Is a directory", code=1)
    (tmp_path / "runs" / "report.md").mkdir()
    assert_refused(CliRunner().invoke(report_command, [str(tmp_path / "runs"),
                                                       "--no-analyze-missing"]),
                   f"cannot write {tmp_path / 'runs' / 'report.md'}: Is a directory", code=1)
    assert not [p for p in listing(tmp_path) if p.endswith(".tmp")]


def test_a_run_where_the_system_has_no_pathconf_or_file_locks(tmp_path, monkeypatch):
    # Windows has neither os.pathconf nor fcntl; checking --out raised AttributeError there.
    from tinygrok import runfiles
    monkeypatch.delattr(os, "pathconf")
    monkeypatch.setattr(runfiles, "fcntl", None)
    out = tmp_path / "new" / "run"
    result = CliRunner().invoke(run_command, [*TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").is_file()


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_an_unknown_matplotlib_backend_is_one_line_before_any_work(tmp_path, command):
    """matplotlib refuses MPLBACKEND=nonsense when it is imported: that was a traceback,
    after the analysis. A fresh interpreter, since this one has matplotlib imported."""
    import subprocess
    import sys

    directory = write_synthetic_run(tmp_path / "runs")
    before = listing(tmp_path)
    folder = directory if command == "analyze" else directory.parent
    result = subprocess.run([sys.executable, "-m", f"tinygrok.{command}", str(folder)],
                            env={**os.environ, "MPLBACKEND": "nonsense"}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: MPLBACKEND='nonsense' is not a backend matplotlib "
                                    "knows (Agg is one); unset it")
    assert listing(tmp_path) == before  # nothing written, nothing removed


def test_run_files_that_are_named_pipes_are_not_read(tmp_path):
    """Opening a named pipe waits for a writer forever: a FIFO called summary.json made the
    report hang, and one called config.json or metrics.csv in --out hung the run command.
    Each is now taken for a file that is not there. Fresh interpreters with a timeout, so
    that the old behaviour fails the test instead of hanging the suite."""
    import subprocess
    import sys

    complete = write_synthetic_run(tmp_path / "runs", seed=0)
    pipe_summary = write_synthetic_run(tmp_path / "runs", seed=1)
    (pipe_summary / "summary.json").unlink()
    os.mkfifo(pipe_summary / "summary.json")
    pipe_config = write_synthetic_run(tmp_path / "other", seed=0)
    (pipe_config / "config.json").unlink()
    os.mkfifo(pipe_config / "config.json")
    pipe_metrics = write_synthetic_run(tmp_path / "started", seed=0)
    (pipe_metrics / "summary.json").unlink()
    (pipe_metrics / "metrics.csv").unlink()
    os.mkfifo(pipe_metrics / "metrics.csv")

    def command(*arguments):
        return subprocess.run([sys.executable, "-m", *arguments], capture_output=True,
                              text=True, timeout=60)

    result = command("tinygrok.report", str(complete.parent))
    assert result.returncode == 0, result.stderr
    assert "1 complete and 1 incomplete run(s)" in result.stdout, result.stdout
    result = command("tinygrok.run", *TINY, "--out", str(pipe_config))
    assert result.returncode == 2, result.stderr
    assert "holds no tinygrok run" in result.stderr.splitlines()[-1], result.stderr
    result = command("tinygrok.run", *TINY, "--out", str(pipe_metrics))
    assert result.returncode == 2, result.stderr
    assert "stopped before its first checkpoint" in result.stderr.splitlines()[-1], result.stderr


def test_a_folder_name_too_long_in_bytes_though_not_in_letters_is_refused_first(tmp_path):
    """Linux limits a name to 255 bytes: 200 letters "é" are 400 bytes in UTF-8. Counted in
    letters, the name passed the check and failed after the kernels had compiled."""
    import click

    from tinygrok import runfiles

    with pytest.raises(click.BadParameter) as refused:
        runfiles.check_writable(tmp_path / "new" / ("é" * 200))
    assert "at most 255 bytes" in refused.value.message
    assert not (tmp_path / "new").exists()
