"""The course examples run top to bottom in their fast mode and write their figures.

Each example runs as a subprocess, the way a student runs it, with ``--out`` pointing into
a temporary folder (figures and training runs go there, never into the repository) and
one thread. Examples 03-06 train or read a run and take tens of seconds each: they are
marked ``slow`` (``pytest -m slow tests/test_examples.py``). They share one output folder,
so the fast run that 03 trains is reused by 04-06, as it is for a student.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Every example and the figures its fast mode must write.
FIGURES = {
    "01_autograd_by_hand.py": ["01_finite_differences.png"],
    "02_attention_kernel.py": ["02_attention_matrices.png"],
    "03_train_and_grok.py": ["03_grokking.png"],
    "04_read_attention.py": ["04_attention_by_phase.png", "04_attention_metrics.png",
                             "04_head_clusters.png"],
    "05_fourier_features.py": ["05_division_table.png", "05_fourier.png", "05_clock.png"],
    "06_failed_grokking.py": ["06_failed_vs_grokked.png", "06_final_attention.png"],
}
QUICK = ["01_autograd_by_hand.py", "02_attention_kernel.py"]
SLOW = [name for name in FIGURES if name not in QUICK]


def run_example(name, out, *options, timeout=900):
    """Run examples/<name> with --out and one thread; fail with its output if it fails."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--out", str(out), "--threads", "1", *options],
        cwd=out, env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True,
        timeout=timeout)
    assert result.returncode == 0, (f"{name} exited with {result.returncode}\n--- stdout\n"
                                    f"{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
    return result


def check_figures(name, out):
    missing = [figure for figure in FIGURES[name] if not (out / figure).is_file()]
    assert not missing, f"{name} did not write {missing}"
    empty = [figure for figure in FIGURES[name] if (out / figure).stat().st_size < 1000]
    assert not empty, f"{name} wrote suspiciously small figures {empty}"


def test_every_example_is_tested():
    scripts = {path.name for path in EXAMPLES.glob("[0-9][0-9]_*.py")}
    assert scripts == set(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_example_is_a_notebook_with_a_docstring(name):
    source = (EXAMPLES / name).read_text()
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring and "What you will see" in docstring and "learn" in docstring
    cells = [line for line in source.splitlines() if line.startswith("# %%")]
    assert len(cells) >= 3, f"{name} has {len(cells)} '# %%' cells"


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_help_lists_the_options_and_accepts_full(name, tmp_path):
    # --help exits during argument parsing, before anything is computed: with --full in
    # front it checks that the full mode parses without starting the long run.
    result = run_example(name, tmp_path, "--full", "--help", timeout=120)
    for option in ("--full", "--out", "--threads"):
        assert option in result.stdout
    assert not list(tmp_path.iterdir()), "--help must not write anything"


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGPIPE")
def test_an_example_piped_into_head_ends_without_a_traceback(tmp_path):
    example = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "01_autograd_by_hand.py"), "--out", str(tmp_path),
         "--threads", "1"], cwd=tmp_path, env={**os.environ, "MPLBACKEND": "Agg"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    example.stdout.readline()  # as `| head -1` does: one line, then the pipe closes
    example.stdout.close()
    _, errors = example.communicate(timeout=300)
    assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors


@pytest.mark.parametrize("name", QUICK)
def test_quick_example_runs(name, tmp_path):
    run_example(name, tmp_path)
    check_figures(name, tmp_path)


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory):
    """One output folder for 03-06, so the fast run is trained once."""
    return tmp_path_factory.mktemp("examples")


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_slow_example_runs(name, shared_out):
    result = run_example(name, shared_out)
    check_figures(name, shared_out)
    if name == "03_train_and_grok.py":
        assert "grokking step (val acc > 0.99): None" not in result.stdout, \
            "the fast configuration no longer groks"


@pytest.mark.parametrize("options, message", [
    (["--threads", "0"], "--threads: must be a whole number >= 1, got '0'"),
    (["--threads", "-1"], "--threads: must be a whole number >= 1, got '-1'"),
    (["--out", ""], "--out: must name a folder"),
    (["--out", __file__], f"--out: {__file__} exists and is not a folder"),
    (["--out", "/proc/never"], "--out /proc/never: cannot create it"),
])
def test_bad_options_are_one_usage_error(options, message, tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "01_autograd_by_hand.py"), *options],
                            cwd=tmp_path, env={**os.environ, "MPLBACKEND": "Agg"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_an_interrupted_run_resumes_with_its_own_thread_count(tmp_path, monkeypatch):
    """get_run resumes a run with the threads it was made with (another count would change
    its numbers, and train() refuses it)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from _quick_run import get_run

    from tinygrok.threads import available_threads, current_threads, set_threads
    from tinygrok.train import TrainConfig, run_state, train

    if available_threads() < 2:
        pytest.skip("needs two cores to change the thread count")
    config = TrainConfig(task="x_plus_y", p=7, steps=20, batch_size=16, d_model=8, heads=2,
                         log_every=5, probe_size=3, checkpoint_every=10)
    before = current_threads()
    try:
        set_threads(1)
        with pytest.raises(ZeroDivisionError):  # a crash at step 15, after the checkpoint at 10
            train(config, tmp_path / "run", on_log=lambda run, row: row["step"] != 15 or 1 / 0)
        set_threads(2)
        get_run(config, tmp_path, name="run")
        assert current_threads() == 1 and run_state(tmp_path / "run") == "complete"
    finally:
        set_threads(before)


@pytest.mark.parametrize("others, noted", [(5, True), (0, False)])
def test_an_example_about_to_train_on_a_busy_machine_says_so(tmp_path, monkeypatch, capsys,
                                                            others, noted):
    """As ``python -m tinygrok.run`` does: with other programs on the cores, an example's
    training can take many times longer than with --threads 1, and the student should know."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from _quick_run import get_run

    from tinygrok import threads
    from tinygrok.train import TrainConfig

    monkeypatch.setattr(threads, "other_running_threads", lambda: others)
    before = threads.current_threads()
    try:
        used = threads.set_threads()  # one per core
        config = TrainConfig(task="x_plus_y", p=7, steps=10, batch_size=16, d_model=8,
                             heads=2, log_every=5, probe_size=3)
        get_run(config, tmp_path, name="run")
    finally:
        threads.set_threads(before)
    said = capsys.readouterr().err
    noted = noted and used > 1  # one thread waits for no other
    assert ("note: other programs keep" in said) == noted
    assert ("--threads 1 avoids that" in said) == noted


@pytest.mark.parametrize("where", ["warm-up", "training"])
def test_an_example_that_cannot_go_on_says_so_in_one_line(tmp_path, monkeypatch, where):
    """A damaged kernel cache, or memory running out: one error line, exit status 1, not a
    traceback whose last line a student must find."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import _quick_run

    from tinygrok.numba_cache import DamagedKernelCache
    from tinygrok.train import OutOfMemory, TrainConfig

    def fail(*args, **kwargs):
        if where == "warm-up":
            raise DamagedKernelCache(EOFError("Ran out of input"))
        raise OutOfMemory(MemoryError("Unable to allocate 9.09 MiB"), 11, 0)

    monkeypatch.setattr(_quick_run, "warm_up_kernels" if where == "warm-up" else "train", fail)
    config = TrainConfig(task="x_plus_y", p=7, steps=10, batch_size=16, d_model=8, heads=2,
                         log_every=5, probe_size=3)
    with pytest.raises(SystemExit) as stop:
        _quick_run.get_run(config, tmp_path, name="run")
    said = str(stop.value.code)  # sys.exit(text) prints it to stderr, exit status 1
    if where == "warm-up":
        assert said.startswith("error: Numba's cache of compiled kernels is damaged (EOFError")
    else:
        assert said == ("error: out of memory after step 11 (Unable to allocate 9.09 MiB); run "
                        "the example again to carry on (once there is memory or room)")


# -- get_run's reuse rules and its exits, each written against a mutant that a mutation run
# -- found alive ------------------------------------------------------------------------------


def small_config(**changes):
    from tinygrok.train import TrainConfig

    return TrainConfig(**{**dict(task="x_plus_y", p=7, steps=10, batch_size=16, d_model=8,
                                 heads=2, log_every=5, probe_size=3), **changes})


def test_a_saved_run_with_other_steps_or_another_seed_is_trained_again(tmp_path, monkeypatch,
                                                                        capsys):
    import json

    monkeypatch.syspath_prepend(str(EXAMPLES))
    from _quick_run import get_run

    get_run(small_config(), tmp_path, name="run")
    get_run(small_config(steps=20), tmp_path, name="run")
    assert "reusing" not in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 20
    get_run(small_config(steps=20, seed=1), tmp_path, name="run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 1


def test_an_examples_run_prints_a_progress_line_every_tenth_of_its_steps(tmp_path,
                                                                         monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from _quick_run import get_run

    get_run(small_config(steps=100), tmp_path, name="run")
    assert capsys.readouterr().out.count("  step ") == 10


def test_an_example_stopped_by_sigterm_exits_143(tmp_path, monkeypatch):
    import signal

    monkeypatch.syspath_prepend(str(EXAMPLES))
    import _quick_run

    from tinygrok.train import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted(10, signal.SIGTERM)

    monkeypatch.setattr(_quick_run, "train", stopped)
    with pytest.raises(SystemExit) as stop:
        _quick_run.get_run(small_config(), tmp_path, name="run")
    assert stop.value.code == 128 + signal.SIGTERM


def test_an_example_given_more_threads_than_it_may_use_still_runs(tmp_path):
    """--threads 99 is capped at what Numba may use, not a traceback."""
    result = subprocess.run([sys.executable, str(EXAMPLES / "01_autograd_by_hand.py"),
                             "--out", str(tmp_path), "--threads", "99"], cwd=tmp_path,
                            env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
