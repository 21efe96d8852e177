"""The rules of a run folder, resume and sweep planning, at their edges.

Each test here was written against a mutant of the code (a flipped comparison, a dropped
check, ...) that the other test files let through: a summary.json missing one key, a lock
taken shared instead of exclusive, a resume of a config.json that lacks a setting, a
sweep that would share the cores with runs it leaves alone, and so on. Each test's name
says which rule it pins.
"""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from lock_holder import locked_by_another_process

from tinygrok import runfiles
from tinygrok.run import main as run_command, remove_run_files
from tinygrok.sweep import (Job, SweepUsageError, failure_message, needs_analysis, parse_seeds,
                            parse_tasks, plan_job, plan_sweep, run_settings, saved_threads,
                            share_cores)
from tinygrok.train import TrainConfig, log_steps, run_state, train

TINY = dict(task="x_plus_y", p=7, steps=40, batch_size=16, d_model=8, heads=2, layers=2,
            log_every=5, probe_size=3, embed_every=10, checkpoint_every=15)


def tiny(**overrides):
    return TrainConfig(**{**TINY, **overrides})


def crashed_run(out):
    def crash(run, row):
        if row["step"] == 35:
            raise RuntimeError("power cut")
    with pytest.raises(RuntimeError):
        train(tiny(), out, on_log=crash)
    return out


# ---- runfiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("missing", runfiles.SUMMARY_KEYS)
def test_a_summary_missing_any_key_is_not_complete(tmp_path, missing):
    out = crashed_run(tmp_path / "run")
    whole = {"final_train_acc": 1.0, "final_val_acc": 1.0, "step_val_acc_99": 40,
             "grokked": True, "steps": 40}
    assert set(whole) == set(runfiles.SUMMARY_KEYS)
    assert runfiles.is_summary(whole)
    del whole[missing]
    (out / "summary.json").write_text(json.dumps(whole))
    assert not runfiles.is_summary(whole)
    assert run_state(out) == "resumable"


@pytest.mark.parametrize("key, value", [("step_val_acc_99", "x"), ("steps", 40.5),
                                        ("step_val_acc_99", 4393.5),
                                        ("grokked", 1), ("final_val_acc", None),
                                        ("final_train_acc", True), ("steps", False)])
def test_a_summary_with_a_value_of_the_wrong_type_is_not_complete(tmp_path, key, value):
    from tinygrok.report import main as report

    out = crashed_run(tmp_path / "run")
    summary = {"final_train_acc": 1.0, "final_val_acc": 1, "step_val_acc_99": 40,
               "grokked": True, "steps": 40}
    assert runfiles.is_summary(summary)  # an int accuracy (1) is still a number
    (out / "summary.json").write_text(json.dumps({**summary, key: value}))
    assert run_state(out) == "resumable"
    result = CliRunner().invoke(report, [str(tmp_path), "--no-analyze-missing"])
    assert not isinstance(result.exception, ValueError)  # it crashed on "x" as a step
    assert "none of its 1 run(s) is complete yet" in result.output


CHECK_FROM_ANOTHER_PROCESS = """
import sys
from tinygrok import runfiles
print(runfiles.in_use_by_another_process(sys.argv[1]))
"""


@pytest.mark.skipif(runfiles.fcntl is None, reason="needs flock")
def test_a_training_lock_is_exclusive_and_not_reported_to_its_holder(tmp_path):
    assert runfiles.lock_run_folder(tmp_path)
    try:
        assert runfiles.in_use_by_another_process(tmp_path) is None  # this process holds it
        seen = subprocess.run([sys.executable, "-c", CHECK_FROM_ANOTHER_PROCESS, str(tmp_path)],
                              capture_output=True, text=True, check=True).stdout
        assert "is in use" in seen, seen
    finally:
        runfiles.unlock_run_folder(tmp_path)


def test_write_atomically_syncs_before_renaming(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(runfiles.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(runfiles.os, "replace",
                        lambda a, b: (calls.append("replace"), real_replace(a, b)))
    runfiles.write_atomically(tmp_path / "x.json", b"{}")
    assert calls == ["fsync", "replace"]


@pytest.mark.skipif(runfiles.fcntl is None or not os.path.exists("/proc/locks"),
                    reason="needs flock and /proc/locks")
def test_a_shared_lock_is_never_named_as_the_trainer(tmp_path):
    with locked_by_another_process(tmp_path, shared=True) as reader:
        assert runfiles.lock_holder(tmp_path.resolve()) is None
        assert runfiles.in_use(tmp_path) == (f"{tmp_path} is in use: process {reader.pid} is "
                                             f"reading it now (an analysis, say)")


# ---- train ------------------------------------------------------------------------------


def test_a_folder_with_unrelated_files_takes_a_new_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    train(tiny(steps=5, log_every=5, embed_every=5), tmp_path)
    assert run_state(tmp_path) == "complete"
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_config_without_version_is_not_a_runs(tmp_path):
    (tmp_path / "config.json").write_text('{"task": "x_plus_y", "model": "theirs"}')
    (tmp_path / "checkpoint.npz").write_text("theirs")
    assert run_state(tmp_path) == "foreign"


def test_the_python_api_never_starts_over_a_resumable_run(tmp_path):
    out = crashed_run(tmp_path / "run")
    checkpoint = (out / "checkpoint.npz").read_bytes()
    with pytest.raises(ValueError, match="resumable run"):
        train(tiny(), out)
    assert (out / "checkpoint.npz").read_bytes() == checkpoint


def test_resume_refuses_a_config_that_lacks_a_setting(tmp_path):
    out = crashed_run(tmp_path / "run")
    saved = json.loads((out / "config.json").read_text())
    del saved["weight_decay"]
    (out / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="different settings"):
        train(tiny(), out, resume=True)


def test_log_steps_includes_the_final_step_and_last():
    assert log_steps(12, 5, 12) == [5, 10, 12]
    assert log_steps(10, 5, 12) == [5, 10]


# ---- run --------------------------------------------------------------------------------


def invoke(*args):
    """The run command in this process; it may set the thread count, so restore it."""
    from tinygrok.threads import current_threads, set_threads

    before = current_threads()
    try:
        return CliRunner().invoke(run_command, list(args))
    finally:
        set_threads(before)


def test_resume_restarts_a_run_whose_metrics_hold_only_the_header(tmp_path):
    out = crashed_run(tmp_path / "run")
    (out / "checkpoint.npz").unlink()
    (out / "metrics.csv").write_text("step,lr,train_loss,train_acc,val_loss,val_acc,weight_norm\n")
    assert run_state(out) == "started"
    result = invoke("--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    assert run_state(out) == "complete"


def test_resume_of_a_complete_run_says_it_is_complete(tmp_path):
    out = tmp_path / "run"
    train(tiny(steps=5, log_every=5, embed_every=5), out)
    result = invoke("--out", str(out), "--resume")
    assert result.exit_code == 2 and "already complete" in result.output, result.output


def test_resume_of_a_complete_run_gives_the_command_that_trains_it_longer(tmp_path):
    out = tmp_path / "run"
    made = invoke("--task", "permutation", "--seed", "3", "--steps", "4", "--batch-size", "8",
                  "--d-model", "8", "--heads", "2", "--layers", "1", "--log-every", "2",
                  "--probe-size", "2", "--lr", "0.002", "--threads", "1", "--out", str(out))
    assert made.exit_code == 0, made.output
    result = invoke("--out", str(out), "--resume")
    assert result.exit_code == 2 and "nothing to resume" in result.output, result.output
    hint = " ".join(result.output.split())  # click may wrap the line
    command = hint.split("python -m tinygrok.run ")[1].split()
    assert command[-2:] == ["--out", str(tmp_path / "run-longer")]
    longer = invoke(*command)  # every setting from the run, twice the steps, a new folder
    assert longer.exit_code == 0, longer.output
    before = json.loads((out / "config.json").read_text())
    after = json.loads((tmp_path / "run-longer" / "config.json").read_text())
    assert after == {**before, "steps": 8}
    # With --steps typed, the hint keeps it when it is more than the run's (a student typed
    # --resume --steps 2000 on a 1,200-step run and was told --steps 2400); else it doubles.
    for typed, suggested in (("20", "--steps 20"), ("3", "--steps 8")):
        said = invoke("--out", str(out), "--resume", "--steps", typed)
        assert said.exit_code == 2 and suggested in " ".join(said.output.split()), said.output


@pytest.mark.parametrize("threads", [0, -1, "2", True])
def test_resume_refuses_a_thread_count_that_is_not_positive(tmp_path, threads):
    out = crashed_run(tmp_path / "run")
    saved = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**saved, "threads": threads}))
    result = invoke("--out", str(out), "--resume")
    assert result.exit_code == 2 and "not a positive integer" in result.output, result.output


def test_resume_accepts_exactly_the_available_thread_count(tmp_path):
    from tinygrok.threads import available_threads, current_threads, set_threads
    before = current_threads()
    out = tmp_path / "run"
    try:
        set_threads(available_threads())
        crashed_run(out)
        set_threads(before)
        result = invoke("--out", str(out), "--resume")
        assert result.exit_code == 0, result.output
        count = available_threads()
        assert f", {count} thread{'' if count == 1 else 's'} ->" in result.output
    finally:
        set_threads(before)


def test_force_removes_every_file_a_run_writes_and_its_analysis_and_figures(tmp_path):
    from tinygrok.train import RUN_FILES

    for name in (*RUN_FILES, "analysis.json"):  # a file added to RUN_FILES is removed too
        (tmp_path / name).write_text("x")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "loss.png").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    remove_run_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_force_deletes_the_summary_before_anything_else(tmp_path, monkeypatch):
    for name in ("summary.json", "checkpoint.npz", "config.json"):
        (tmp_path / name).write_text("x")
    from pathlib import Path
    order = []
    real_unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (
        order.append(self.name), real_unlink(self, missing_ok=missing_ok)))
    remove_run_files(tmp_path)
    assert order[0] == "summary.json"


@pytest.mark.parametrize("name", ["checkpoint.npz", "metrics.csv", "analysis.json"])
def test_force_refuses_a_folder_under_a_run_files_name_and_deletes_nothing(tmp_path, name):
    """A folder named like a run's file is someone's, not the run's. --force once tried to
    unlink it, after compiling the kernels, and died with IsADirectoryError's traceback."""
    out = tmp_path / "run"
    assert invoke("--task", "x_plus_y", "--p", "7", "--steps", "10", "--batch-size", "8",
                  "--d-model", "8", "--heads", "2", "--probe-size", "2", "--threads", "1",
                  "--out", str(out)).exit_code == 0
    (out / name).unlink(missing_ok=True)  # a run writes no analysis.json
    (out / name).mkdir()
    (out / name / "mine.txt").write_text("keep me")
    before = sorted(p.name for p in out.iterdir())
    result = invoke("--task", "x_plus_y", "--steps", "10", "--threads", "1", "--out", str(out),
                    "--force")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.rstrip().splitlines()[-1] == (
        f"Error: {out / name} is a folder, not a file a run writes, and --force deletes only "
        f"a run's own files; move it out of {out} or choose another --out")
    assert sorted(p.name for p in out.iterdir()) == before
    assert (out / name / "mine.txt").read_text() == "keep me"


# ---- sweep ------------------------------------------------------------------------------

SWEEP_TINY = ["--p", "7", "--steps", "40", "--batch-size", "16", "--d-model", "8",
              "--heads", "2", "--log-every", "5", "--probe-size", "3"]


def test_seed_ranges_edges():
    assert parse_seeds("3-3") == [3]
    assert parse_seeds("0,0,1") == [0, 1]
    assert len(parse_seeds("0-9999")) == 10_000
    with pytest.raises(SweepUsageError, match="more than"):
        parse_seeds("0-5000,5001-10000")


def test_no_task_at_all_is_refused():
    with pytest.raises(SweepUsageError):
        parse_tasks(" , ")


def test_share_cores_edges():
    assert share_cores(3, 8) == (3, 2)
    assert share_cores(0, 4) == (1, 4)


def test_saved_threads_reads_only_a_positive_count(tmp_path):
    for text, expected in (('{"threads": 3}', 3), ('{"threads": 0}', None),
                           ('{"threads": -2}', None), ('{"threads": true}', None),
                           ('[1, 2]', None), ('{}', None),
                           ('not json', None)):
        (tmp_path / "config.json").write_text(text)
        assert saved_threads(tmp_path) == expected, text


def test_failure_message_advises_delete_only_for_a_usage_error_of_a_resume(tmp_path):
    error = "Error: cannot resume x: checkpoint.npz is missing or damaged"
    for action, code, line, advised in (("resume", 2, error, True),
                                        ("start", 2, error, False),
                                        ("resume", 1, error, False),
                                        ("resume", 2, "Error: x is in use: process 7", False)):
        job = Job("x_plus_y", 0, tmp_path / "x_plus_y-s0", action)
        job.log.parent.mkdir(exist_ok=True)
        job.log.write_text(f"# cmd\n{line}\n")
        assert ("delete" in failure_message(job, code)) == advised, (action, code, line)


@pytest.mark.parametrize("log, said", [
    ("step 500/7500 ...\n\nerror: cannot write x/metrics.csv: No space left on device (at "
     "step 700); its checkpoint at step 500 is kept.\nOnce the folder can be written again, "
     "continue with:\n  python -m tinygrok.run --out x --resume\n",
     "exit 1: error: cannot write x/metrics.csv: No space left on device (at step 700); its "
     "checkpoint at step 500 is kept. (log:"),
    ("Usage: python -m tinygrok.run [OPTIONS]\nTry 'python -m tinygrok.run -h' for help.\n\n"
     "Error: Invalid value for '--p': 7 is not in the range x>=11.\n",
     "exit 2: Error: Invalid value for '--p'"),
    ("Traceback (most recent call last):\n  File ...\nMemoryError: Unable to allocate\n\n",
     "exit 1: MemoryError: Unable to allocate"),
    ("", "exit 1:  (log:"),
    ("error: cannot write x/metrics.csv: No space left on device (at step 700); ...\n"
     "# 2026-12-01 00:00:00 python -m tinygrok.run --out x --resume\nTraceback ...\n"
     "MemoryError: Unable to allocate\n", "exit 1: MemoryError: Unable to allocate")],
    ids=["advice-after-the-error", "usage", "traceback", "empty", "the-last-attempt"])
def test_failure_message_quotes_the_error_not_the_advice_after_it(tmp_path, log, said):
    job = Job("x_plus_y", 0, tmp_path / "x_plus_y-s0", "start")
    job.log.parent.mkdir(exist_ok=True)
    job.log.write_text(f"# cmd\n{log}")
    code = int(said.split()[1].rstrip(":"))
    assert failure_message(job, code).startswith(said), failure_message(job, code)


def complete_run(out):
    train(tiny(), out)
    return out


def test_needs_analysis_follows_the_files_age(tmp_path):
    run = complete_run(tmp_path / "x_plus_y-s0")
    assert needs_analysis(run)  # no analysis.json
    summary_time = (run / "summary.json").stat().st_mtime
    (run / "analysis.json").write_text("{}")
    os.utime(run / "analysis.json", (summary_time + 10, summary_time + 10))
    assert not needs_analysis(run)
    os.utime(run / "analysis.json", (summary_time - 10, summary_time - 10))
    assert needs_analysis(run)


def test_a_resumable_run_with_other_settings_is_a_conflict(tmp_path):
    crashed_run(tmp_path / "x_plus_y-s0")  # steps 40, p 7, ... but train_frac default
    job = plan_job(tmp_path, "x_plus_y", 0, [*SWEEP_TINY[:-2], "--probe-size", "4"])
    assert job.action == "conflict" and "probe_size 3 (not 4)" in job.note, job


def test_a_restarted_run_gets_the_sweeps_threads_not_its_old_ones(tmp_path):
    d = tmp_path / "x_plus_y-s0"
    d.mkdir()
    (d / "config.json").write_text('{"task": "x_plus_y", "version": "0", "threads": 1}')
    job = plan_job(tmp_path, "x_plus_y", 0, SWEEP_TINY)
    assert job.action == "restart" and job.threads is None


@pytest.mark.skipif(runfiles.fcntl is None, reason="no flock")
def test_a_folder_another_process_trains_in_is_a_conflict(tmp_path):
    d = crashed_run(tmp_path / "x_plus_y-s0")
    with locked_by_another_process(d):
        job = plan_job(tmp_path, "x_plus_y", 0, SWEEP_TINY)
        assert job.action == "conflict" and "is in use" in job.note


def test_conflicts_do_not_count_as_runs_to_share_the_cores_with(tmp_path):
    for seed in (1, 2, 3):
        (tmp_path / f"x_plus_y-s{seed}").write_text("a file")  # blocked: conflict
    plan, parallel, threads = plan_sweep(tmp_path, ["x_plus_y"], [0, 1, 2, 3], SWEEP_TINY,
                                         None, 4)
    assert [j.action for j in plan] == ["start", "conflict", "conflict", "conflict"]
    assert (parallel, threads) == (1, 4)


def test_a_probe_size_typed_above_a_splits_size_is_refused_and_the_default_is_cut(tmp_path):
    """--probe-size 100000 was quietly cut to the split's 4,656, while config.json and the
    report went on saying 100000. A number typed is refused; the default, 64, is still cut
    to a small task's split (p = 7: 24 training pairs), as it always was."""
    refused = invoke("--probe-size", "25", "--p", "7", "--task", "x_plus_y",
                     "--out", str(tmp_path / "refused"))
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert refused.output.rstrip().splitlines()[-1] == (
        "Error: Invalid value for --probe-size: 25 probes are taken from each split, and the "
        "smaller split holds 24 examples: at most 24")
    assert not (tmp_path / "refused").exists()
    exact = invoke("--probe-size", "24", "--p", "7", "--task", "x_plus_y", "--steps", "10",
                   "--threads", "1", "--out", str(tmp_path / "exact"))
    assert exact.exit_code == 0, exact.output
    default = invoke("--p", "7", "--task", "x_plus_y", "--steps", "10", "--threads", "1",
                     "--out", str(tmp_path / "default"))
    assert default.exit_code == 0, default.output
    probes = runfiles.read_npz(tmp_path / "default" / "attention.npz")["probe_inputs"]
    assert len(probes) == 24 + 25  # 64 asked of each split, of 24 and 25 pairs


def test_a_sweep_refuses_a_probe_size_above_a_splits_size():
    with pytest.raises(SweepUsageError, match=r"x_plus_y: .*at most 24"):
        run_settings("x_plus_y", 0, ["--p", "7", "--probe-size", "30"])


def test_an_out_that_the_shell_left_with_its_tilde_means_the_home_folder(tmp_path, monkeypatch):
    """--out=~/runs reaches the command unexpanded (the shell expands ~ only at the start of
    a word); the run went into a folder named ~ in the current one."""
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir(), here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    result = invoke("--task", "x_plus_y", "--p", "7", "--steps", "10", "--threads", "1",
                    "--out=~/runs/a")
    assert result.exit_code == 0, result.output
    assert run_state(home / "runs" / "a") == "complete"
    assert not (here / "~").exists()
    assert runfiles.checked_out_folder("~/report") == home / "report"  # the sweep's, the report's
