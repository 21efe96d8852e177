"""The sweep: many tiny runs end to end, skipping, failures, Ctrl-C, options, dask.

Every run here is tiny (p = 5, width 8, 20 steps: about 3 s including start-up) so the whole
file takes well under a minute on two cores.
"""

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from lock_holder import locked_by_another_process

from tinygrok import runfiles
from tinygrok import sweep as sweep_module
from tinygrok.sweep import (THREAD_VARIABLES, main as sweep, parse_seeds, parse_tasks,
                            plan_job, settings_differ, share_cores, thread_environment)
from tinygrok.train import run_state

TINY = ["--p", "5", "--steps", "20", "--d-model", "8", "--heads", "2", "--log-every", "5",
        "--probe-size", "2", "--batch-size", "8"]


def run_sweep(*args):
    return CliRunner().invoke(sweep, [*args], catch_exceptions=False)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """2 tasks x 2 seeds, two at a time, with a weight decay passed through to every run."""
    out = tmp_path_factory.mktemp("sweep")
    result = run_sweep("--tasks", "x_plus_y,x_minus_y", "--seeds", "0,1", "--jobs", "2",
                       "--out", str(out), *TINY, "--weight-decay", "0.7")
    return out, result


# ---- small pieces --------------------------------------------------------------------------


def test_seeds_take_lists_and_ranges():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    assert parse_seeds("4-4") == [4]
    for empty in ("5-4", "0-2,5-4"):  # a typo is named, never silently dropped
        with pytest.raises(sweep_module.SweepUsageError, match="the range '5-4' is empty"):
            parse_seeds(empty)


def test_tasks_are_checked_against_the_registry():
    assert parse_tasks("x_div_y, permutation") == ["x_div_y", "permutation"]


@pytest.mark.parametrize("jobs, cores, expected", [
    (2, 2, (2, 1)), (1, 2, (1, 2)), (4, 2, (2, 1)), (3, 8, (3, 2)), (1, 16, (1, 16))])
def test_jobs_times_threads_never_exceeds_the_cores(jobs, cores, expected):
    parallel, threads = share_cores(jobs, cores)
    assert (parallel, threads) == expected
    assert parallel * threads <= cores


def test_every_thread_pool_gets_the_same_count():
    environment = thread_environment(3)
    assert all(environment[name] == "3" for name in THREAD_VARIABLES)


def test_a_folder_that_is_not_a_run_is_a_conflict_not_overwritten(tmp_path):
    (tmp_path / "x_plus_y-s0").mkdir()
    (tmp_path / "x_plus_y-s0" / "config.json").write_text('{"model": "resnet"}')
    (tmp_path / "x_plus_y-s0" / "checkpoint.npz").write_text("someone else's")
    job = plan_job(tmp_path, "x_plus_y", 0, TINY)
    assert job.action == "conflict" and "not a tinygrok run" in job.note


def test_a_permutation_run_saved_with_another_p_is_not_another_experiment(tmp_path):
    # an older version wrote whatever p it was given into a permutation run's config.json
    (tmp_path / "config.json").write_text('{"task": "permutation", "seed": 0, "p": 23}')
    assert settings_differ(tmp_path, {"task": "permutation", "seed": 0, "p": 97}) == []
    (tmp_path / "config.json").write_text('{"task": "x_plus_y", "seed": 0, "p": 23}')
    assert settings_differ(tmp_path, {"task": "x_plus_y", "seed": 0, "p": 97}) == \
        ["p 23 (not 97)"]


def test_a_run_without_checkpoint_is_restarted_with_force(tmp_path):
    (tmp_path / "x_plus_y-s0").mkdir()  # a run killed before its first checkpoint
    (tmp_path / "x_plus_y-s0" / "config.json").write_text('{"task": "x_plus_y", "version": "0"}')
    (tmp_path / "x_plus_y-s0" / "metrics.csv").write_text("step\n")
    assert plan_job(tmp_path, "x_plus_y", 0, TINY).action == "restart"
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(tmp_path),
                       "--dry-run", *TINY)
    assert result.exit_code == 0
    assert "restart x_plus_y-s0" in result.output and "--force" in result.output


# ---- bad usage: one line, exit 2, nothing written ------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--tasks", "x_plus_y,x_times_y"], "unknown task 'x_times_y'"),
    (["--seeds", "0,one"], "'one' is not a seed"),
    (["--wieght-decay", "1.0"], "No such option"),
    (["--tasks", "x_div_y", "--p", "6"], "prime"),
    (["--seed", "3"], "--seed is set by the sweep"),
    (["--seeds", "0-10000", "--dry-run"], "more than 10,000 seeds"),
    (["--out", "/proc/never"], "--out: cannot create /proc/never"),
    (["--out", ""], "--out: must name a folder"),
    (["--tasks", "x_plus_y", "--p", "100003"], "memory, most of it for the task's table"),
    (["--tasks", "x_div_y", "--p", "618970019642690137449562111"], "memory"),
    (["--tasks", "permutation", "--p", "7"], "--p applies to the modular tasks only"),
    (["--tasks", "x_plus_y,permutation", "--p", "7"],
     "sweep permutation without --p (in a sweep of its own, if other tasks need --p)"),
    (["--out", __file__], "--out: " + __file__ + " exists and is not a folder"),
])
def test_bad_usage_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "never"
    result = CliRunner().invoke(sweep, ["--out", str(out), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


# ---- end to end ----------------------------------------------------------------------------


def test_every_run_completes_with_the_options_passed_through(swept):
    out, result = swept
    assert result.exit_code == 0, result.output
    names = ["x_plus_y-s0", "x_plus_y-s1", "x_minus_y-s0", "x_minus_y-s1"]
    for name in names:
        assert run_state(out / name) == "complete"
        config = json.loads((out / name / "config.json").read_text())
        assert config["weight_decay"] == 0.7 and config["steps"] == 20
        assert (out / name / "analysis.json").is_file()
        assert (out / "logs" / f"{name}.log").is_file()
        summary = json.loads((out / name / "summary.json").read_text())
        line = next(line for line in result.output.splitlines() if f"{name} done in" in line)
        assert line.endswith(f"step_val_acc_99 = {summary['step_val_acc_99']} (grokked)"
                             if summary["grokked"] else
                             "val acc never above 0.99 in 20 steps (did not grok)"), line
    assert "[4/4]" in result.output


def test_a_second_sweep_skips_the_complete_runs(swept):
    out, _ = swept
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    started = time.perf_counter()
    result = run_sweep("--tasks", "x_plus_y,x_minus_y", "--seeds", "0,1", "--out", str(out),
                       *TINY, "--weight-decay", "0.7")
    assert result.exit_code == 0, result.output
    assert "skipped 4 complete run(s)" in result.output and "nothing to run" in result.output
    assert time.perf_counter() - started < 10
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_a_second_sweep_into_the_same_folder_at_once_is_refused(swept):
    out, _ = swept
    lock = out / ".sweep.lock"
    lock.write_text(f"{socket.gethostname()} {os.getpid()}\n")  # held by a live process
    try:
        result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(out), *TINY)
        assert result.exit_code == 2 and "another sweep" in result.output
    finally:
        lock.unlink()


def test_the_lock_of_a_sweep_that_died_is_taken_over(swept):
    out, _ = swept
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (out / ".sweep.lock").write_text(f"{socket.gethostname()} {dead}\n")
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(out), *TINY,
                       "--weight-decay", "0.7")
    assert result.exit_code == 0, result.output
    assert not (out / ".sweep.lock").exists()


def test_a_run_with_other_settings_is_left_alone(swept):
    out, _ = swept
    config = (out / "x_plus_y-s0" / "config.json").read_text()
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(out), *TINY,
                       "--weight-decay", "1.0")
    assert result.exit_code == 1
    assert "weight_decay 0.7 (not 1.0)" in result.output
    assert (out / "x_plus_y-s0" / "config.json").read_text() == config


def test_a_failing_run_does_not_stop_the_others(tmp_path):
    damaged = tmp_path / "x_plus_y-s1"  # a run's folder it cannot resume (no thread count)
    damaged.mkdir()
    (damaged / "config.json").write_text('{"task": "x_plus_y", "version": "0"}')
    (damaged / "checkpoint.npz").write_text("garbage")
    (tmp_path / "x_plus_y-s2").write_text("a file where the run directory should go")
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0,1,2", "--jobs", "2",
                       "--out", str(tmp_path), "--no-analyze", *TINY)
    assert result.exit_code == 1
    assert run_state(tmp_path / "x_plus_y-s0") == "complete"
    log = tmp_path / "logs" / "x_plus_y-s1.log"
    assert "x_plus_y-s1 FAILED" in result.output and "exit 2" in result.output
    assert "did not complete" in result.output and str(log) in result.output
    assert "cannot resume" in log.read_text()
    assert "to start this run again, delete" in result.output
    # a file where a run should go is left alone, not started (where it could only fail)
    assert f"left alone: {tmp_path / 'x_plus_y-s2'} is a file, not a folder" in result.output
    assert not (tmp_path / "logs" / "x_plus_y-s2.log").exists()


def one_complete_run(out):
    """x_plus_y seed 0, trained to the end by a sweep with every core: its folder."""
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(out),
                       "--no-analyze", *TINY)
    assert result.exit_code == 0, result.output
    return out / "x_plus_y-s0"


def test_a_damaged_summary_is_written_again_by_a_resume_with_the_runs_own_threads(tmp_path):
    run = one_complete_run(tmp_path)
    threads = json.loads((run / "config.json").read_text())["threads"]
    assert threads == sweep_module.machine_cores()  # one run: every core
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text('{"steps": 2')  # cut short
    assert run_state(run) == "resumable"
    # With one core for the sweep, a new run would get one thread; this one resumes with
    # its own count (the run command refuses another: the numbers would change).
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(tmp_path),
                       "--no-analyze", "--cores", "1", *TINY)
    assert result.exit_code == 0, result.output
    resume = (tmp_path / "logs" / "x_plus_y-s0.log").read_text().split("\n# ")[-1]
    assert "--resume" in resume and f"--threads {threads} " in resume
    if threads != 1:
        assert f"thread count each started with, so that its numbers match an uninterrupted " \
               f"run: x_plus_y-s0 ({threads})" in result.output
    rewritten = json.loads((run / "summary.json").read_text())
    for key in ("step_val_acc_99", "final_train_acc", "final_val_acc", "phases"):
        assert rewritten[key] == summary[key]


def test_a_run_that_cannot_be_resumed_says_how_to_start_it_again(tmp_path):
    run = one_complete_run(tmp_path)
    (run / "summary.json").unlink()
    (run / "checkpoint.npz").write_bytes(b"garbage")
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(tmp_path),
                       "--no-analyze", *TINY)
    assert result.exit_code == 1
    assert "checkpoint.npz is missing or damaged" in result.output
    assert f"to start this run again, delete {run} and run the sweep again" in result.output
    assert (run / "checkpoint.npz").read_bytes() == b"garbage"  # nothing deleted


def test_a_run_started_with_more_threads_than_this_machine_has_keeps_them(tmp_path):
    run = one_complete_run(tmp_path)
    (run / "summary.json").unlink()
    config = json.loads((run / "config.json").read_text())
    cores = sweep_module.machine_cores()
    (run / "config.json").write_text(json.dumps({**config, "threads": cores + 2}))
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(tmp_path),
                       "--dry-run", *TINY)
    assert result.exit_code == 0, result.output
    assert f"x_plus_y-s0 ({cores + 2})" in result.output  # said, then done: exact, slower
    assert f"--threads {cores + 2} " in result.output and "--resume" in result.output


def test_jobs_pins_the_thread_count_whatever_is_left_to_do(tmp_path):
    cores = sweep_module.machine_cores()
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(tmp_path),
                       "--jobs", "2", "--dry-run", *TINY)
    assert result.exit_code == 0, result.output
    assert f"--threads {max(1, cores // min(2, cores))} " in result.output


def test_delete_is_advised_only_for_a_run_that_cannot_be_resumed(tmp_path):
    from tinygrok.sweep import Job, failure_message

    job = Job("x_plus_y", 0, tmp_path / "x_plus_y-s0", "resume")
    job.log.parent.mkdir()
    for error, advised in (("Error: x_plus_y-s0 is in use: process 7 is training in it now",
                            False),
                           ("Error: cannot resume x_plus_y-s0: checkpoint.npz is missing or "
                            "damaged", True)):
        job.log.write_text(f"# the command\n{error}\n")
        assert ("to start this run again, delete" in failure_message(job, 2)) == advised


def test_a_long_sweep_says_where_its_runs_are(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "PROGRESS_SECONDS", 0.2)
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(tmp_path),
                       "--no-analyze", *TINY, "--steps", "2000", "--log-every", "250")
    assert result.exit_code == 0, result.output
    progress = [line for line in result.output.splitlines() if line.startswith("  ... ")]
    assert progress and all(re.fullmatch(r"  \.\.\. x_plus_y-s0 (starting|at step \d+/2000)",
                                         line) for line in progress), progress


def test_progress_is_the_last_step_a_run_logged(tmp_path):
    from tinygrok.sweep import last_progress

    log = tmp_path / "run.log"
    assert last_progress(log) == "starting"  # no log yet
    log.write_text("# the command\ntinygrok: x_div_y (p=97), seed 0, 7500 steps\n")
    assert last_progress(log) == "starting"
    log.write_text(log.read_text() + "step    500/7500  train acc 0.412  val acc 0.010\n"
                   "step   1000/7500  train acc 0.998  val acc 0.020\n")
    assert last_progress(log) == "at step 1000/7500"


def test_run_files_from_a_cluster_are_written_logs_then_checkpoint_then_summary(
        tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr("tinygrok.runfiles.write_atomically",
                        lambda path, data: written.append(path.name))
    names = ["attention.npz", "checkpoint.npz", "config.json", "embeddings.npz",
             "metrics.csv", "summary.json", "timing.csv"]
    sweep_module.write_run_files(tmp_path / "run", {name: b"" for name in names})
    assert sorted(written) == names
    assert written[0] == "config.json"  # a folder without it would not be a run
    assert written[-2:] == ["checkpoint.npz", "summary.json"]


def test_a_file_named_logs_is_a_usage_error(tmp_path):
    (tmp_path / "logs").write_text("my notes")
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(tmp_path), *TINY)
    assert result.exit_code == 2
    assert f"{tmp_path / 'logs'} is a file" in result.output
    assert (tmp_path / "logs").read_text() == "my notes" and len(list(tmp_path.iterdir())) == 1


def test_cores_beyond_the_machines_are_capped_and_a_lone_run_gets_them_all(tmp_path):
    cores = sweep_module.machine_cores()
    result = run_sweep("--tasks", "x_plus_y", "--seeds", "0", "--out", str(tmp_path),
                       "--cores", str(cores + 6), "--dry-run", *TINY)
    assert result.exit_code == 0, result.output
    assert f"--cores {cores + 6} is more than the {cores} this machine has" in result.output
    assert f"--threads {cores} " in result.output  # one run to do, on every core


@pytest.fixture
def sweep_with_runs_in_their_loops(tmp_path):
    """A sweep of two runs, started as a terminal would start it, once both runs are
    inside their training loops: the process, its options and the runs' logs. Whatever
    the test does, the sweep and its runs are gone afterwards."""
    options = ["--tasks", "x_plus_y", "--seeds", "0,1", "--jobs", "2", "--out", str(tmp_path),
               *TINY, "--steps", "3000", "--log-every", "50", "--no-analyze"]
    # A process started in the background inherits SIGINT *ignored* (as CI may start us);
    # give the sweep the normal disposition, as a terminal would.
    sweep_process = subprocess.Popen([sys.executable, "-m", "tinygrok.sweep", *options],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    logs = [tmp_path / "logs" / f"x_plus_y-s{seed}.log" for seed in (0, 1)]
    try:
        # Generous: each run compiles the kernels first when their cache is cold (about
        # 20 s alone, 40 s on a busy machine).
        deadline = time.monotonic() + 300
        while not all(log.is_file() and "step    500/" in log.read_text() for log in logs):
            assert sweep_process.poll() is None, sweep_process.communicate()[0]
            assert time.monotonic() < deadline, [log.read_text() for log in logs
                                                 if log.is_file()]
            time.sleep(0.2)
        yield sweep_process, options, logs
    finally:
        if sweep_process.poll() is None:  # the test failed before the sweep ended:
            sweep_process.terminate()     # it stops its runs, as tested below
            try:
                sweep_process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                sweep_process.kill()
        sweep_process.communicate()


def runs_still_running_in(folder):
    """The ids of live ``tinygrok.run`` processes training into ``folder`` (Linux's /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:  # it ended meanwhile
            continue
        if b"tinygrok.run" in words and any(str(folder).encode() in w for w in words):
            found.append(int(cmdline.parent.name))
    return found


def assert_each_stopped_run_saved_where_it_stopped(logs):
    """Once the sweep has exited, its runs have ended and saved, each at the step it
    stopped at (which may be 500 itself, if the signal came during that step's save)."""
    if Path("/proc/self/cmdline").exists():
        assert runs_still_running_in(logs[0].parent.parent) == []
    for log in logs:
        stopped = re.search(r"interrupted at step (\d+); checkpoint saved", log.read_text())
        if stopped:
            checkpoint = runfiles.read_npz(log.parent.parent / log.stem / "checkpoint.npz")
            assert int(checkpoint["step"]) == int(stopped.group(1)) >= 500
        else:  # it had finished
            assert run_state(log.parent.parent / log.stem) == "complete", log.read_text()


def test_ctrl_c_stops_every_run_with_a_checkpoint_and_a_rerun_resumes(
        sweep_with_runs_in_their_loops, tmp_path):
    sweep_process, options, logs = sweep_with_runs_in_their_loops
    sweep_process.send_signal(signal.SIGINT)
    output, _ = sweep_process.communicate(timeout=60)
    assert sweep_process.returncode == 130, output
    assert "run the same command again to resume" in output
    assert_each_stopped_run_saved_where_it_stopped(logs)
    states = [run_state(tmp_path / f"x_plus_y-s{seed}") for seed in (0, 1)]
    # A run that raced to its end on a busy machine may be complete; none may be lost.
    assert "resumable" in states and set(states) <= {"resumable", "complete"}, (states, output)
    result = run_sweep(*options)
    assert result.exit_code == 0, (result.output, [log.read_text() for log in logs])
    assert result.output.count("done in") == states.count("resumable")
    for log, state in zip(logs, states):
        assert run_state(log.parent.parent / log.stem) == "complete"
        assert ("--resume" in log.read_text()) == (state == "resumable")


def test_sigterm_stops_every_run_with_a_checkpoint_and_exits_143(
        sweep_with_runs_in_their_loops, tmp_path):
    sweep_process, _, logs = sweep_with_runs_in_their_loops
    sweep_process.send_signal(signal.SIGTERM)
    output, _ = sweep_process.communicate(timeout=60)
    assert sweep_process.returncode == 143, output  # as the run command exits on SIGTERM
    assert "run the same command again to resume" in output
    assert_each_stopped_run_saved_where_it_stopped(logs)
    states = [run_state(tmp_path / f"x_plus_y-s{seed}") for seed in (0, 1)]
    assert "resumable" in states and set(states) <= {"resumable", "complete"}, (states, output)


# ---- a dask.distributed cluster ------------------------------------------------------------


def test_runs_on_a_local_dask_cluster_come_back_complete(tmp_path):
    distributed = pytest.importorskip("distributed")
    # Before it starts a worker, dask's nanny writes MALLOC_TRIM_THRESHOLD_ and
    # OMP/MKL/OPENBLAS_NUM_THREADS=1 into this process's own environment, where the later
    # tests' subprocesses would inherit them: the environment is put back afterwards.
    environment = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                      dashboard_address=":0") as cluster:
            result = run_sweep("--tasks", "x_plus_y", "--seeds", "0,1", "--out", str(tmp_path),
                               "--scheduler", cluster.scheduler_address, *TINY)
    finally:
        os.environ.clear()
        os.environ.update(environment)
    assert result.exit_code == 0, result.output
    for name in ("x_plus_y-s0", "x_plus_y-s1"):
        directory = tmp_path / name
        assert run_state(directory) == "complete"
        for file in ("config.json", "metrics.csv", "attention.npz", "embeddings.npz",
                     "checkpoint.npz", "summary.json", "analysis.json"):
            assert (directory / file).is_file(), file
        assert "on the dask worker" in (tmp_path / "logs" / f"{name}.log").read_text()


def test_ctrl_c_on_a_cluster_still_collects_runs_that_had_finished(monkeypatch):
    """Ctrl-C while the sweep writes back one run: a run that had finished meanwhile, but
    that as_completed had not yet handed out, must have its files written back too."""
    distributed = pytest.importorskip("distributed")

    class FinishedFuture:
        def done(self):
            return True

    class FakeClient:
        def submit(self, *args, **kwargs):
            return FinishedFuture()

    def ctrl_c_after_the_first(futures, timeout=None):
        futures = list(futures)
        yield from futures[:1]
        if timeout is None:  # the main loop: Ctrl-C arrives before the second is handed out
            raise KeyboardInterrupt
        yield from futures[1:]

    class FakeEvent:
        def __init__(self, *args, **kwargs):
            pass

        def set(self):
            pass

    collected = []
    monkeypatch.setattr(distributed, "as_completed", ctrl_c_after_the_first)
    monkeypatch.setattr(distributed, "Event", FakeEvent)
    monkeypatch.setattr(sweep_module, "threads_per_worker", lambda client: {})
    monkeypatch.setattr(sweep_module, "collect",
                        lambda job, future: collected.append(job) or sweep_module.Outcome(
                            job, True, 1.0))
    monkeypatch.setattr(sweep_module, "finished_line", lambda *args: "")
    jobs = [SimpleNamespace(name=name, action="restart") for name in ("A", "B")]
    with pytest.raises(KeyboardInterrupt):
        sweep_module.run_on_cluster(FakeClient(), jobs, [])
    assert sorted(job.name for job in collected) == ["A", "B"]


def test_an_unreachable_scheduler_is_a_usage_error(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(sweep_module, "CONNECT_TIMEOUT", "1s")
    result = CliRunner().invoke(sweep, ["--out", str(tmp_path / "never"),
                                        "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 2 and "cannot reach" in result.output
    assert not (tmp_path / "never").exists()


def test_ctrl_c_before_any_run_exits_130(tmp_path, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tinygrok.sweep.run_settings", ctrl_c)  # while the options are checked
    result = CliRunner().invoke(sweep, ["--out", str(tmp_path / "never"), "--seeds", "0"])
    assert result.exit_code == 130 and "interrupted" in result.output
    assert "Aborted" not in result.output and not (tmp_path / "never").exists()


def test_analysis_is_written_only_into_runs_whose_summary_is_whole(tmp_path):
    from tinygrok.sweep import needs_analysis

    run = one_complete_run(tmp_path)
    assert needs_analysis(run)
    (run / "summary.json").write_text("{}")  # damaged: not a finished run's
    assert not needs_analysis(run)


@pytest.mark.parametrize("name, code", [
    ("SIGTERM", 143),
    pytest.param("SIGHUP", 129, marks=pytest.mark.skipif(not hasattr(signal, "SIGHUP"),
                                                          reason="no SIGHUP"))])
def test_sigterm_or_sighup_while_the_runs_are_analysed_exits_128_plus_it_and_frees_the_folder(
        tmp_path, monkeypatch, name, code):
    number = getattr(signal, name)
    before = signal.signal(number, lambda *_: None)  # not ignored, and harmless if missed
    try:
        def terminated_while_analysing(plan):
            os.kill(os.getpid(), number)
            time.sleep(5)  # the handler stops it first
            return []

        monkeypatch.setattr(sweep_module, "analyse", terminated_while_analysing)
        result = CliRunner().invoke(sweep, ["--tasks", "x_plus_y", "--seeds", "0", "--out",
                                            str(tmp_path), *TINY])
        assert result.exit_code == code, result.output
        assert "run the same command again" in result.output
        assert not (tmp_path / ".sweep.lock").exists()
        assert signal.getsignal(number) is not sweep_module.interrupt_on_signal
    finally:
        signal.signal(number, before)


def test_a_reader_that_quits_leaves_the_sweep_and_its_runs_to_finish(tmp_path):
    """python -m tinygrok.sweep ... | head -1: the display goes, the work does not."""
    command = subprocess.Popen([sys.executable, "-m", "tinygrok.sweep", "--tasks", "x_plus_y",
                                "--seeds", "0,1", "--jobs", "1", "--no-analyze", "--out",
                                str(tmp_path), *TINY], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert command.stdout.readline().startswith(b"running 2 run(s)")
    command.stdout.close()  # every later line fails with EPIPE
    errors = command.stderr.read().decode()
    assert command.wait(timeout=300) == 0, errors
    assert [run_state(tmp_path / f"x_plus_y-s{seed}") for seed in (0, 1)] == ["complete"] * 2
    assert "Error" not in errors and "Exception" not in errors, errors


def test_a_run_that_cannot_start_fails_alone_and_the_others_finish(tmp_path):
    (tmp_path / "logs" / "x_plus_y-s1.log").mkdir(parents=True)  # its log cannot be opened
    result = CliRunner().invoke(sweep, ["--tasks", "x_plus_y", "--seeds", "0,1,2", "--jobs",
                                        "2", "--no-analyze", "--out", str(tmp_path), *TINY])
    assert result.exit_code == 1, result.output
    assert (f"x_plus_y-s1 FAILED after 0 s: could not start: cannot write "
            f"{tmp_path / 'logs' / 'x_plus_y-s1.log'}: Is a directory") in result.output
    assert [run_state(tmp_path / f"x_plus_y-s{seed}") for seed in (0, 1, 2)] == \
        ["complete", "missing", "complete"]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_run_whose_process_cannot_start_leaves_its_log_closed(tmp_path, monkeypatch):
    import builtins

    opened = []

    def recording_open(*args, **kwargs):
        opened.append(builtins.open(*args, **kwargs))
        return opened[-1]

    def no_process(*args, **kwargs):
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(sweep_module, "open", recording_open, raising=False)
    monkeypatch.setattr(sweep_module.subprocess, "Popen", no_process)
    job = sweep_module.Job("x_plus_y", 0, tmp_path / "x_plus_y-s0", "start")
    outcomes = sweep_module.run_locally([job], 1, 1, TINY)
    assert not outcomes[0].ok and "could not start: " in outcomes[0].message
    assert os.strerror(errno.EAGAIN) in outcomes[0].message
    assert opened and all(f.closed for f in opened)


def test_a_sweep_lock_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    class FullDisk:
        def __init__(self, descriptor, mode):
            os.close(descriptor)

        def __enter__(self):
            return self

        def __exit__(self, *error):
            return False

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sweep_module.os, "fdopen", FullDisk)
    result = CliRunner().invoke(sweep, ["--tasks", "x_plus_y", "--seeds", "0", "--out",
                                        str(tmp_path), *TINY])
    assert result.exit_code == 1, result.output
    assert f"cannot write {tmp_path / '.sweep.lock'}: No space left on device" in result.output
    assert not (tmp_path / ".sweep.lock").exists()  # an empty one would refuse every sweep


@pytest.mark.skipif(sys.platform != "linux", reason="needs a filesystem that takes any bytes")
def test_a_folder_name_that_is_not_utf8_is_swept_and_reported(tmp_path):
    out = os.path.join(bytes(tmp_path), b"caf\xe9")  # Latin-1 bytes, not UTF-8
    swept = subprocess.run([sys.executable, "-m", "tinygrok.sweep", "--tasks", "x_plus_y",
                            "--seeds", "0", "--out", out, *TINY], capture_output=True,
                           timeout=300)
    assert swept.returncode == 0, swept.stderr.decode(errors="replace")
    out = Path(os.fsdecode(out))
    assert run_state(out / "x_plus_y-s0") == "complete"
    assert b"caf\xe9" in (out / "logs" / "x_plus_y-s0.log").read_bytes()
    reported = subprocess.run([sys.executable, "-m", "tinygrok.report", out],
                              capture_output=True, timeout=300)
    assert reported.returncode == 0, reported.stderr.decode(errors="replace")
    assert (out / "report.md").exists()


def test_an_empty_sweep_lock_is_a_sweep_starting_now_not_a_dead_one(tmp_path):
    # between creating .sweep.lock and writing "host pid" into it, another sweep must wait
    (tmp_path / ".sweep.lock").write_text("")
    with pytest.raises(sweep_module.SweepUsageError, match="another sweep"):
        sweep_module.take_lock(tmp_path)


@pytest.mark.parametrize("code, ok", [(0, True), (1, False), (130, False), (143, False)])
def test_only_a_run_that_exited_0_is_done(tmp_path, code, ok):
    job = sweep_module.Job(task="x_plus_y", seed=0, directory=tmp_path / "x_plus_y-s0",
                           action="start")
    running = sweep_module.Running.__new__(sweep_module.Running)  # without a process
    running.job, running.started = job, 0.0
    running.log_file = open(tmp_path / "x.log", "w")
    running.process = SimpleNamespace(returncode=code)
    assert running.outcome().ok is ok


@pytest.mark.skipif(runfiles.fcntl is None, reason="no flock on this system")
def test_a_cluster_run_is_not_written_back_into_a_folder_another_process_trains_in(
        tmp_path):
    """A run started by hand in the folder meanwhile holds its lock: the worker's files must
    not be written under it."""
    folder = tmp_path / "x_plus_y-s0"
    folder.mkdir()
    job = sweep_module.Job(task="x_plus_y", seed=0, directory=folder, action="start")
    with locked_by_another_process(folder):
        outcome = sweep_module.receive(job, {"log": "the worker's log\n", "seconds": 1.0,
                                             "code": 0, "files": {"config.json": b"{}"}})
    assert outcome.ok is False and "its files were not written back" in outcome.message
    assert list(folder.iterdir()) == []


# -- the sweep's running parts, each written against a mutant that a mutation run found
# -- alive ------------------------------------------------------------------------------------


def test_the_error_of_a_failed_run_is_its_last_attempts_last_line(tmp_path):
    log = tmp_path / "x_plus_y-s0.log"
    log.write_text("# 2026-01-01 12:00:00 python -m tinygrok.run ...\nError: an old problem\n"
                   "# 2026-01-02 12:00:00 python -m tinygrok.run ...\ntinygrok: x_plus_y\n"
                   "Traceback (most recent call last):\n  File \"x\", line 1\nValueError: new\n")
    assert sweep_module.error_in_log(log) == "ValueError: new"


def test_a_lock_held_on_another_host_counts_as_alive():
    """On a shared filesystem the other machine's processes cannot be seen: taking its lock
    over would train the same runs twice at once."""
    assert sweep_module.holder_is_alive(f"not-{socket.gethostname()} 1")


def test_at_most_jobs_runs_train_at_once(monkeypatch, tmp_path):
    running, most = [], [0]

    class FakeRun:  # stands for a run's process: it finishes at its second poll
        def __init__(self, job, threads, extra):
            self.job, self.polls = job, 0
            running.append(self)
            most[0] = max(most[0], len(running))
            self.process = SimpleNamespace(poll=self.poll)

        def poll(self):
            self.polls += 1
            if self.polls < 2:
                return None
            if self in running:
                running.remove(self)
            return 0

        def outcome(self):
            return sweep_module.Outcome(self.job, True, 0.0)

    monkeypatch.setattr(sweep_module, "Running", FakeRun)
    monkeypatch.setattr(sweep_module, "finished_line", lambda count, outcome: "")
    monkeypatch.setattr(sweep_module.time, "sleep", lambda seconds: None)
    jobs = [sweep_module.Job("x_plus_y", seed, tmp_path / f"x_plus_y-s{seed}", "start")
            for seed in range(3)]
    for parallel in (1, 2):
        most[0] = 0
        assert len(sweep_module.run_locally(jobs, parallel, 1, [])) == 3
        assert most[0] == parallel


def test_an_analysis_older_than_its_summary_is_done_again(tmp_path):
    from synthetic_run import write_synthetic_run

    directory = write_synthetic_run(tmp_path)
    (directory / "analysis.json").write_text("{}")
    finished = (directory / "summary.json").stat().st_mtime
    os.utime(directory / "analysis.json", (finished + 100, finished + 100))
    assert not sweep_module.needs_analysis(directory)
    os.utime(directory / "analysis.json", (finished - 100, finished - 100))
    assert sweep_module.needs_analysis(directory)


def cluster_result(code):
    """What a dask worker sends back for a run: its exit code, log and files."""
    return {"log": "the worker's log\n", "files": {"config.json": b"{}\n"}, "code": code,
            "seconds": 1.0}


def test_a_run_restarted_on_the_cluster_replaces_the_stale_files(tmp_path):
    directory = tmp_path / "x_plus_y-s0"
    directory.mkdir()
    (directory / "analysis.json").write_text("{}")
    (directory / "embeddings.npz").write_text("from the run that died")
    job = sweep_module.Job("x_plus_y", 0, directory, "restart")
    assert sweep_module.receive(job, cluster_result(0)).ok
    assert sorted(path.name for path in directory.iterdir()) == ["config.json"]


def test_a_run_interrupted_on_the_cluster_is_not_counted_done(tmp_path):
    job = sweep_module.Job("x_plus_y", 0, tmp_path / "x_plus_y-s0", "start")
    assert not sweep_module.receive(job, cluster_result(130)).ok
    assert sweep_module.receive(job, cluster_result(0)).ok
