"""The training loop: determinism, checkpoint and resume, NaN handling, the command line."""

import builtins
import contextlib
import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from lock_holder import locked_by_another_process

from tinygrok import runfiles
import tinygrok.run as run_module
from tinygrok.run import main as run_command
from tinygrok.train import Interrupted, NonFiniteLoss, Run, TrainConfig, run_state, train

TINY = dict(task="x_plus_y", p=7, steps=40, batch_size=16, d_model=8, heads=2, layers=2,
            log_every=5, probe_size=3, embed_every=10, checkpoint_every=15)
TINY_CLI = ["--task", "x_plus_y", "--p", "7", "--steps", "20", "--batch-size", "16",
            "--d-model", "8", "--heads", "2", "--log-every", "5", "--probe-size", "3"]


SIGHUP = getattr(signal, "SIGHUP", None)  # Windows has none
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM,
                pytest.param(SIGHUP, marks=pytest.mark.skipif(SIGHUP is None, reason="no SIGHUP"))]


@pytest.fixture(autouse=True)
def a_hangup_reaches_a_harmless_handler():
    """SIGHUP's default ends the process: a run that failed to catch it would end pytest
    instead of failing a test. (Also, pytest may run under nohup, with SIGHUP ignored, and
    a run leaves an ignored signal ignored.)"""
    if SIGHUP is None:
        yield
        return
    previous = signal.signal(SIGHUP, lambda number, frame: None)
    yield
    signal.signal(SIGHUP, previous)


def tiny(**overrides):
    return TrainConfig(**{**TINY, **overrides})


def signal_after_step(monkeypatch, step, signal_number):
    """Make AdamW send ``signal_number`` to this process right after its ``step``-th update
    (in the middle of a training step, as a real Ctrl-C would land); ``monkeypatch.undo()``
    puts AdamW back."""
    from tinygrok.adamw import AdamW

    real_step = AdamW.step

    def step_then_signal(self):
        real_step(self)
        if self.step_count == step:
            os.kill(os.getpid(), signal_number)

    monkeypatch.setattr(AdamW, "step", step_then_signal)


def read_bytes(path):
    return path.read_bytes()


def final_parameters(out):
    saved = runfiles.read_npz(out / "checkpoint.npz")
    return {k: v for k, v in saved.items() if k.startswith(("param/", "adamw/"))}


def assert_same_run(a, b):
    assert read_bytes(a / "metrics.csv") == read_bytes(b / "metrics.csv")
    pa, pb = final_parameters(a), final_parameters(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    for name in ("attention.npz", "embeddings.npz"):
        fa, fb = runfiles.read_npz(a / name), runfiles.read_npz(b / name)
        for k in fa:
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=f"{name}:{k}")


def test_run_directory_is_complete_and_well_formed(tmp_path):
    summary = train(tiny(), tmp_path)
    assert run_state(tmp_path) == "complete"
    rows = runfiles.read_csv(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(5, 41, 5))
    assert all(0 <= r["val_acc"] <= 1 and r["weight_norm"] > 0 for r in rows)
    attention = runfiles.read_npz(tmp_path / "attention.npz")
    assert list(attention["steps"]) == list(range(0, 41, 5))
    assert attention["patterns"].shape == (9, 2, 2, 6, 4, 4)  # (S, L, H, N, T, T)
    assert attention["patterns"].dtype == np.float16
    np.testing.assert_allclose(attention["patterns"].astype(np.float32).sum(-1), 1, atol=3e-3)
    assert list(attention["probe_split"]) == [0, 0, 0, 1, 1, 1]
    embeddings = runfiles.read_npz(tmp_path / "embeddings.npz")
    assert list(embeddings["steps"]) == [0, 10, 20, 30, 40]
    assert embeddings["token_embeddings"].shape == (5, 9, 8)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["task"] == "x_plus_y" and config["vocab"][:3] == ["o", "=", "0"]
    assert summary["steps"] == 40 and "phases" in summary
    above = [r["step"] for r in rows if r["val_acc"] > 0.99]
    assert summary["step_val_acc_99"] == (above[0] if above else 40)


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    train(tiny(), tmp_path / "a")
    train(tiny(), tmp_path / "b")
    train(tiny(seed=1), tmp_path / "c")
    assert_same_run(tmp_path / "a", tmp_path / "b")
    assert read_bytes(tmp_path / "a" / "metrics.csv") != read_bytes(tmp_path / "c" / "metrics.csv")


@pytest.mark.parametrize("signal_number", STOP_SIGNALS, ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_ctrl_c_then_resume_is_bit_identical(tmp_path, monkeypatch, signal_number):
    train(tiny(), tmp_path / "straight")
    signal_after_step(monkeypatch, 23, signal_number)  # in the middle of a log window
    with pytest.raises(Interrupted) as stop:
        train(tiny(), tmp_path / "stopped")
    monkeypatch.undo()
    assert stop.value.step == 23  # the step running when Ctrl-C came was finished first
    assert stop.value.signal_number == signal_number
    assert run_state(tmp_path / "stopped") == "resumable"
    # saved at the step it stopped at, not only at the periodic checkpoint (15) before it
    assert int(runfiles.read_npz(tmp_path / "stopped" / "checkpoint.npz")["step"]) == 23
    train(tiny(), tmp_path / "stopped", resume=True)
    assert_same_run(tmp_path / "straight", tmp_path / "stopped")


def test_ctrl_c_during_the_set_up_still_saves_a_checkpoint(tmp_path, monkeypatch):
    from tinygrok.train import Run

    train(tiny(), tmp_path / "straight")
    real_log_attention = Run.log_attention

    def ctrl_c_then_log(self):  # first called before the first checkpoint is written
        if self.step == 0:
            os.kill(os.getpid(), signal.SIGINT)
        real_log_attention(self)

    monkeypatch.setattr(Run, "log_attention", ctrl_c_then_log)
    with pytest.raises(Interrupted) as stop:
        train(tiny(), tmp_path / "stopped")
    monkeypatch.setattr(Run, "log_attention", real_log_attention)
    assert stop.value.step == 0 and run_state(tmp_path / "stopped") == "resumable"
    train(tiny(), tmp_path / "stopped", resume=True)
    assert_same_run(tmp_path / "straight", tmp_path / "stopped")


def crashed_run(out, steps=40):
    """A run that crashed at step 35, after its checkpoint at step 30."""
    def crash(run, row):
        if row["step"] == 35:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        train(tiny(steps=steps), out, on_log=crash)
    return out


@pytest.mark.parametrize("damage, message", [
    (lambda out: (out / "metrics.csv").write_text(
        "\n".join((out / "metrics.csv").read_text().splitlines()[:3]) + "\n"),
     "metrics.csv holds 2 of the 6 logged steps up to the checkpoint's step 30"),
    (lambda out: (out / "metrics.csv").write_text(""), "metrics.csv holds 0 of the 6"),
    (lambda out: (out / "metrics.csv").write_text("step,lr\n5,0.1,7\n"),
     "metrics.csv is missing or damaged"),
    (lambda out: (out / "checkpoint.npz").write_bytes(b""), "checkpoint.npz is missing or damaged"),
    (lambda out: (out / "checkpoint.npz").write_bytes(b"garbage" * 100),
     "checkpoint.npz is missing or damaged"),
    (lambda out: (out / "checkpoint.npz").write_bytes(
        (out / "checkpoint.npz").read_bytes()[:-200]), "checkpoint.npz is missing or damaged"),
    (lambda out: (out / "attention.npz").unlink(), "attention.npz is missing or damaged"),
], ids=["metrics-cut", "metrics-empty", "metrics-garbled", "checkpoint-empty",
        "checkpoint-garbage", "checkpoint-cut", "attention-missing"])
def test_a_damaged_run_is_refused_not_resumed(tmp_path, damage, message):
    from tinygrok.train import DamagedRun

    out = crashed_run(tmp_path / "run")
    damage(out)
    with pytest.raises(DamagedRun, match=re.escape(message)):
        train(tiny(), out, resume=True)
    result = invoke("--out", str(out), "--resume")
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and run_state(out) == "resumable"


def test_crash_resumes_from_the_last_periodic_checkpoint(tmp_path):
    train(tiny(), tmp_path / "straight")
    crashed_run(tmp_path / "crashed")  # checkpoints were written at 15 and 30
    assert int(runfiles.read_npz(tmp_path / "crashed" / "checkpoint.npz")["step"]) == 30
    train(tiny(), tmp_path / "crashed", resume=True)
    assert_same_run(tmp_path / "straight", tmp_path / "crashed")


def test_resume_refuses_other_settings(tmp_path):
    with pytest.raises(RuntimeError):
        train(tiny(), tmp_path, on_log=lambda run, row: (_ for _ in ()).throw(RuntimeError()))
    with pytest.raises(ValueError, match="different settings"):
        train(tiny(lr=0.01), tmp_path, resume=True)


def stop_at_the_first_log(run, row):
    raise RuntimeError("stopped by the test")


@pytest.mark.parametrize("p", ["7", "97"])
def test_resume_of_a_permutation_run_refuses_p_as_a_new_one_does(tmp_path, p):
    with pytest.raises(RuntimeError):
        train(tiny(task="permutation", p=97), tmp_path, on_log=stop_at_the_first_log)
    result = invoke("--out", str(tmp_path), "--resume", "--p", p)
    assert result.exit_code == 2, result.output
    assert "--p applies to the modular tasks only" in result.output
    assert run_state(tmp_path) == "resumable"


@pytest.mark.parametrize("how", ["command", "python"])
def test_a_permutation_run_saved_with_another_p_by_an_older_version_still_resumes(tmp_path,
                                                                                 how):
    # Before p was refused for permutation, example 06 saved its run with p 23. p changes
    # nothing for S5, so such a run resumes, as if it said 97.
    with pytest.raises(RuntimeError):
        train(tiny(task="permutation", p=97), tmp_path, on_log=stop_at_the_first_log)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "p": 23}))
    if how == "command":
        result = invoke("--out", str(tmp_path), "--resume")
        assert result.exit_code == 0, result.output
    else:
        train(tiny(task="permutation", p=97), tmp_path, resume=True)
    assert run_state(tmp_path) == "complete"


@pytest.mark.parametrize("setting, value, says", [
    ("lr", -1.0, "lr must be a positive number, got -1.0"),
    ("heads", "2", "heads must be a positive integer, got '2'"),
    ("p", 8, "x_div_y needs a prime p (got 8)"),
])
def test_resume_names_a_hand_edited_setting_as_config_json_does(tmp_path, setting, value,
                                                                   says):
    with pytest.raises(RuntimeError):
        train(tiny(task="x_div_y"), tmp_path, on_log=stop_at_the_first_log)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, setting: value}))
    result = invoke("--out", str(tmp_path), "--resume")
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith(f"Error: cannot resume {tmp_path}: config.json holds settings "
                            f"that cannot run (") and says in error, error
    assert run_state(tmp_path) == "resumable"


def test_saved_settings_changes_only_a_permutation_runs_p():
    from tinygrok.train import saved_settings

    assert saved_settings({"task": "permutation", "p": 23, "seed": 1}) == \
        {"task": "permutation", "p": 97, "seed": 1}
    for config in ({"task": "x_plus_y", "p": 23}, {"task": "x_mod", "p": 23},
                   {"task": ["permutation"], "p": 23}, {"p": 23}, {"task": "permutation"}):
        assert saved_settings(config) == config  # a hand-edited task is left to the checks


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, bad):
    from tinygrok.model import Transformer

    real_loss = Transformer.loss
    calls = []

    def loss_that_blows_up(self, tokens, labels):
        loss, logits = real_loss(self, tokens, labels)
        if len(labels) == 16:  # training batches only
            calls.append(1)
            if len(calls) == 18:
                loss.data = np.array(bad, dtype=loss.dtype)
        return loss, logits

    monkeypatch.setattr(Transformer, "loss", loss_that_blows_up)
    with pytest.raises(NonFiniteLoss, match="step 18") as failure:
        train(tiny(), tmp_path)
    assert failure.value.step == 18
    assert int(runfiles.read_npz(tmp_path / "checkpoint.npz")["step"]) == 15
    assert run_state(tmp_path) == "resumable"


def test_a_diverging_run_stops_with_its_step_and_no_numpy_warning_first(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "overflow encountered in matmul"
        with pytest.raises(NonFiniteLoss, match="the loss became nan at step"):
            train(tiny(lr=1e30, log_every=1), tmp_path)  # evaluated at every step too
    assert run_state(tmp_path) == "resumable"


def disk_full_at(monkeypatch, name, call):
    """Make the ``call``-th write of run file ``name`` fail as on a full disk: its temporary
    file is created, then the write raises ENOSPC (as ``open`` inside runfiles sees it)."""
    calls = []

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if "w" in mode and os.path.basename(path) == f".{name}.tmp":
            calls.append(path)
            if len(calls) == call:
                f.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return f

    monkeypatch.setattr(runfiles, "open", open_on_a_full_disk, raising=False)


@pytest.mark.parametrize("name", ["metrics.csv", "attention.npz", "checkpoint.npz"])
def test_a_full_disk_stops_the_run_with_its_checkpoint_kept_and_resume_finishes_it(
        tmp_path, monkeypatch, name):
    from tinygrok.train import CouldNotWrite

    train(tiny(), tmp_path / "straight")
    disk_full_at(monkeypatch, name, call=3)  # checkpoints at steps 0, 15, 30 and 40
    out = tmp_path / "full"
    with pytest.raises(CouldNotWrite) as failure:
        train(tiny(), out)
    monkeypatch.undo()
    assert (failure.value.step, failure.value.checkpoint_step) == (30, 15)
    assert (f"cannot write {out / name}: {os.strerror(errno.ENOSPC)} (at step 30); its "
            f"checkpoint at step 15 is kept") in str(failure.value)
    # no temporary file left behind, nothing that says complete, the checkpoint whole
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["config.json", "metrics.csv", "timing.csv", "attention.npz", "embeddings.npz",
         "checkpoint.npz"])
    assert int(runfiles.read_npz(out / "checkpoint.npz")["step"]) == 15
    assert run_state(out) == "resumable"
    train(tiny(), out, resume=True)
    assert_same_run(tmp_path / "straight", out)


def test_a_full_disk_before_the_first_checkpoint_says_there_is_nothing_to_resume(
        tmp_path, monkeypatch):
    from tinygrok.train import CouldNotWrite

    disk_full_at(monkeypatch, "checkpoint.npz", call=1)
    with pytest.raises(CouldNotWrite, match=r"\(at step 0\); no checkpoint had been saved "
                                            r"yet") as failure:
        train(tiny(), tmp_path / "run")
    assert failure.value.checkpoint_step is None
    assert run_state(tmp_path / "run") == "started"


def test_an_npz_file_is_written_without_a_copy_of_its_arrays_in_memory(tmp_path):
    """The attention log is the biggest thing a run keeps, and its .npz was first built in
    memory, then copied out: at the end of a long run that was where memory ran out."""
    import tracemalloc

    log = np.ones((128, 1024, 256), dtype=np.float32)  # 128 MB
    tracemalloc.start()
    try:
        runfiles.write_npz(tmp_path / "log.npz", patterns=log)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < log.nbytes / 2, peak  # NumPy writes it in 16 MB pieces
    assert np.array_equal(runfiles.read_npz(tmp_path / "log.npz")["patterns"], log)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["log.npz"]


def test_an_npz_file_that_fails_midway_leaves_the_old_one(tmp_path, monkeypatch):
    runfiles.write_npz(tmp_path / "log.npz", steps=np.arange(3))
    real_write_array, written = np.lib.format.write_array, []

    def write_array(*args, **kwargs):  # the second array fails, as when memory runs out
        if written:
            raise MemoryError("Unable to allocate 16.0 MiB")
        written.append(True)
        return real_write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_array)
    with pytest.raises(MemoryError):
        runfiles.write_npz(tmp_path / "log.npz", steps=np.arange(5), patterns=np.ones(4))
    monkeypatch.undo()
    assert list(runfiles.read_npz(tmp_path / "log.npz")["steps"]) == [0, 1, 2]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["log.npz"]


def out_of_memory_at_step(monkeypatch, step):
    """Make the training step that would reach ``step`` fail as NumPy does when it cannot
    allocate an array (a ``ulimit -v``, a machine short of memory). Returns a list that then
    holds a weak reference to an array the failing step had built."""
    import weakref

    real_train_step, built = Run.train_step, []

    def train_step(self):
        if self.step + 1 == step:
            activations = np.ones(1000)
            built.append(weakref.ref(activations))
            raise MemoryError("Unable to allocate 9.09 MiB for an array with shape (4656, "
                              "512) and data type float32")
        return real_train_step(self)

    monkeypatch.setattr(Run, "train_step", train_step)
    return built


def test_out_of_memory_stops_the_run_with_its_checkpoint_kept_and_resume_finishes_it(
        tmp_path, monkeypatch):
    from tinygrok.train import OutOfMemory

    train(tiny(), tmp_path / "straight")
    built = out_of_memory_at_step(monkeypatch, 20)  # checkpoints at steps 0, 15, 30 and 40
    out = tmp_path / "short"
    with pytest.raises(OutOfMemory) as failure:
        train(tiny(), out)
    monkeypatch.undo()
    assert built[0]() is None  # the error does not keep the failed step's arrays alive
    assert (failure.value.step, failure.value.checkpoint_step) == (19, 15)
    assert str(failure.value).startswith(
        "out of memory after step 19 (Unable to allocate 9.09 MiB for an array with shape "
        "(4656, 512) and data type float32); its checkpoint at step 15 is kept")
    assert run_state(out) == "resumable"
    train(tiny(), out, resume=True)
    assert_same_run(tmp_path / "straight", out)


needs_folder_descriptors = pytest.mark.skipif(sys.platform == "win32",
                                              reason="folders cannot be opened there")


@needs_folder_descriptors
@pytest.mark.parametrize("change", ["delete", "move", "delete and make again",
                                    "link pointed elsewhere"])
def test_a_run_whose_folder_goes_away_stops_and_writes_nothing_more(tmp_path, change):
    import shutil

    from tinygrok.train import RunFolderGone

    out, moved = tmp_path / "run", tmp_path / "moved"
    if change == "link pointed elsewhere":  # --out is a link to the run's folder
        (tmp_path / "target").mkdir()
        out.symlink_to(tmp_path / "target")

    def change_the_folder(run, row):
        if row["step"] == 20:  # after the checkpoint at step 15, before the one at 30
            if change == "move":
                out.rename(moved)
            elif change == "link pointed elsewhere":
                (tmp_path / "other").mkdir()
                out.unlink()
                out.symlink_to(tmp_path / "other")
            else:
                shutil.rmtree(out)
            if change == "delete and make again":
                out.mkdir()

    with pytest.raises(RunFolderGone) as failure:
        train(tiny(), out, on_log=change_the_folder)
    assert (failure.value.step, failure.value.checkpoint_step) == (30, 15)
    assert failure.value.__context__ is None or failure.value.__suppress_context__
    if change in ("move", "link pointed elsewhere"):
        where = moved if change == "move" else tmp_path / "target"
        assert f"{out} no longer leads to the run's folder" in str(failure.value)
        if sys.platform == "linux":  # /proc says where the folder is
            assert failure.value.moved_to == str(where)
            assert (f"which is now {where}, while the run trained in it (noticed at step 30)"
                    in str(failure.value))
        if change == "link pointed elsewhere":  # nothing written through the new link
            assert list((tmp_path / "other").iterdir()) == []
        train(tiny(), tmp_path / "straight")
        train(tiny(), where, resume=True)
        assert_same_run(tmp_path / "straight", where)
    else:
        assert "was deleted while the run trained in it (noticed at step 30)" in \
            str(failure.value) and "nothing is kept" in str(failure.value)
        # nothing written into a new folder of the same name: it would look like a run
        assert (list(out.iterdir()) == []) if out.exists() else change == "delete"


@needs_folder_descriptors
def test_a_folder_deleted_during_a_write_is_named_as_deleted(tmp_path, monkeypatch):
    import shutil

    from tinygrok.train import RunFolderGone

    out = tmp_path / "run"
    real_write = runfiles.write_atomically

    def write_after_the_folder_went(path, data):
        if path.name == "metrics.csv" and (out / "checkpoint.npz").exists():
            shutil.rmtree(out)  # between the check before the write and the write itself
        real_write(path, data)

    monkeypatch.setattr(runfiles, "write_atomically", write_after_the_folder_went)
    with pytest.raises(RunFolderGone, match="was deleted while the run trained in it"):
        train(tiny(), out)


@needs_folder_descriptors
def test_the_command_whose_folder_was_deleted_exits_1_saying_nothing_is_kept(tmp_path,
                                                                             monkeypatch):
    import shutil

    out = tmp_path / "run"
    real_log_metrics = run_module.Run.log_metrics

    def log_then_delete(self, lr, seconds):
        row = real_log_metrics(self, lr, seconds)
        if self.step == 10:
            shutil.rmtree(out)
        return row

    monkeypatch.setattr(run_module.Run, "log_metrics", log_then_delete)
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 1, result.output
    assert (f"\nerror: {out} was deleted while the run trained in it (noticed at step 20); "
            f"the run stopped and wrote nothing more; nothing is kept") in result.output
    assert "Traceback" not in result.output and not out.exists()


# -- the command line ---------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(run_command, list(args))


@pytest.mark.parametrize("args, message", [
    (["--task", "x_times_y"], "x_times_y"),
    (["--task", "x_div_y", "--p", "91"], "Invalid value for --p: x_div_y needs a prime"),
    (["--train-frac", "1.0"], "train-frac"),
    (["--train-frac", "0"], "train-frac"),
    (["--batch-size", "0"], "batch-size"),
    (["--steps", "-5"], "steps"),
    (["--heads", "3"], "heads"),
    (["--lr", "0"], "lr"),
    (["--lr", "nan"], "not a finite number"),
    (["--lr", "inf"], "not a finite number"),
    (["--weight-decay", "nan"], "not a finite number"),
    (["--train-frac", "nan"], "not a finite number"),
    (["--train-frac", "0.0001"], "Invalid value for --train-frac: 0.0001 of the 9312 "
                                 "examples leaves the train or the validation split empty"),
    (["--p", "100003"], "memory, most of it for the task's table of pairs"),
    (["--batch-size", "100000000"], "memory, most of it for the activations"),
    (["--d-model", "200000", "--heads", "1"], "memory, most of it for the model"),
    (["--task", "permutation", "--p", "5"], "--p applies to the modular tasks only"),
    # a prime modulus too big for memory (the memory check also runs before the slow
    # primality test, which took minutes for p near 1e18)
    (["--task", "x_div_y", "--p", "1000000000039"], "memory, most of it for the task's table"),
])
def test_bad_options_exit_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    result = invoke("--steps", "2", *args, "--out", str(out))  # short, should one get through
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_the_first_line_names_the_run_and_a_busy_machine_gets_its_note(tmp_path, monkeypatch):
    monkeypatch.setattr("tinygrok.threads.busy_machine_note", lambda threads, resuming:
                        f"note: busy machine, {threads} threads, resuming: {resuming}")
    result = invoke("--task", "permutation", "--steps", "2", "--batch-size", "8", "--d-model",
                    "8", "--heads", "2", "--log-every", "1", "--probe-size", "2",
                    "--threads", "1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    # no modulus for S5 (it used to print the unused default, p=97)
    assert f"tinygrok: permutation, seed 0, 2 steps, 1 thread -> {tmp_path / 'run'}\n" \
        in result.output
    assert "note: busy machine, 1 threads, resuming: False" in result.output
    # a resumed run keeps its thread count: the note must not suggest another
    result = invoke("--out", str(crashed_run(tmp_path / "crashed")), "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming: True" in result.output


def test_a_run_killed_during_its_first_write_can_be_started_again(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".config.json.tmp").write_text('{"task": "x_plus_y", "ver')  # kill -9 mid-write
    assert run_state(out) == "missing"
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert run_state(out) == "complete" and not (out / ".config.json.tmp").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / ".notes.tmp").write_text("someone else's")  # not a name a run writes
    assert run_state(other) == "foreign"


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("--out", str(blocker / "run"))
    assert result.exit_code == 2
    # the folder asked for, then where writing failed
    assert f"cannot create {blocker / 'run'}: cannot write into {blocker}" in result.output


def test_plain_progress_lines_come_every_500_steps_whatever_the_log_interval(capsys):
    progress = run_module.Progress(total=2000)  # pytest's stdout is not a terminal
    run = SimpleNamespace(config=SimpleNamespace(log_every=30))
    for step in [*range(30, 2000, 30), 2000]:
        progress(run, {"step": step, "train_acc": 0.5, "val_acc": 0.25})
    printed = [int(line.split()[1].split("/")[0]) for line in capsys.readouterr().out.splitlines()]
    assert printed == [510, 1020, 1500, 2000]  # the first row at or after each 500, and the end


def test_command_trains_refuses_to_overwrite_and_forces(tmp_path):
    out = tmp_path / "run"
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert re.search(r"step +20/20 +train acc", result.output)  # not a terminal: plain lines
    assert "val acc > 0.99 at" in result.output
    assert run_state(out) == "complete"
    listed = re.search(r"run directory: .*/ \((.*)\)", result.output).group(1).split(", ")
    assert sorted(listed) == sorted(path.name for path in out.iterdir())  # every file, no more
    summary = json.loads((out / "summary.json").read_text())
    assert (f"final train acc {summary['final_train_acc']:.4f} (over the whole train split; "
            f"the progress lines' is over the last batches), val acc "
            f"{summary['final_val_acc']:.4f}\n"
            in result.output)  # two train accuracies, each said to be what it is
    assert "resum" not in result.output
    again = invoke(*TINY_CLI, "--out", str(out))
    assert again.exit_code == 2 and "--force" in again.output
    forced = invoke(*TINY_CLI, "--out", str(out), "--force", "--seed", "1")
    assert forced.exit_code == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 1


def test_command_suggests_resume_for_an_unfinished_run(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        train(tiny(steps=20), out, on_log=lambda run, row: (_ for _ in ()).throw(RuntimeError()))
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 2 and "--resume" in result.output
    mismatch = invoke("--out", str(out), "--resume", "--seed", "3")
    assert mismatch.exit_code == 2 and "--seed" in mismatch.output
    resumed = invoke("--out", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"-> {out}, resuming from its checkpoint at step 0\n" in resumed.output
    assert re.search(r"done in \d+ s of training, counting the time before it was resumed",
                     resumed.output)
    assert run_state(out) == "complete"


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    result = invoke("--out", str(tmp_path / "nothing"), "--resume")
    assert result.exit_code == 2 and "no checkpoint" in result.output


def test_force_checks_everything_before_deleting_a_run(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert invoke(*TINY_CLI, "--out", str(out)).exit_code == 0
    metrics = read_bytes(out / "metrics.csv")
    for bad in (["--lr", "nan"], ["--threads", "100000"], ["--train-frac", "0.001"]):
        result = invoke(*TINY_CLI, "--out", str(out), "--force", *bad)
        assert result.exit_code == 2, result.output
    monkeypatch.setattr("tinygrok.run.warm_up_kernels", lambda: os.kill(os.getpid(), signal.SIGINT))
    interrupted = invoke(*TINY_CLI, "--out", str(out), "--force")
    assert interrupted.exit_code == 130 and "nothing was written" in interrupted.output
    assert run_state(out) == "complete" and read_bytes(out / "metrics.csv") == metrics


def test_ctrl_c_while_force_deletes_says_the_old_run_is_gone(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert invoke(*TINY_CLI, "--out", str(out)).exit_code == 0
    real_remove = run_module.remove_run_files

    def remove_then_ctrl_c(folder):
        real_remove(folder)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(run_module, "remove_run_files", remove_then_ctrl_c)
    result = invoke(*TINY_CLI, "--out", str(out), "--force")
    assert result.exit_code == 130, result.output
    assert f"nothing was written (--force had deleted the run that was in {out})" in result.output
    assert run_state(out) == "missing"


@pytest.mark.parametrize("signal_number", STOP_SIGNALS, ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_before_training_writes_nothing(tmp_path, monkeypatch, signal_number):
    monkeypatch.setattr("tinygrok.run.warm_up_kernels", lambda: os.kill(os.getpid(), signal_number))
    result = invoke(*TINY_CLI, "--out", str(tmp_path / "run"))
    assert result.exit_code == 128 + signal_number and "Traceback" not in result.output
    assert "nothing was written" in result.output
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_the_options_are_checked_exits_130_not_aborted(tmp_path, monkeypatch):
    def ctrl_c(*args):
        raise KeyboardInterrupt  # what Python raises for a SIGINT in the middle of the checks

    monkeypatch.setattr("tinygrok.runfiles.check_writable", ctrl_c)
    result = invoke(*TINY_CLI, "--out", str(tmp_path / "run"))
    assert result.exit_code == 130, result.output  # click said "Aborted!", exit 1
    assert "Aborted" not in result.output and "nothing was written" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("config", [None, '{"name": "another project"}', "[]"])
def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path, config):
    out = tmp_path / "notes"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_text("mine")
    if config is not None:
        (out / "config.json").write_text(config)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for extra in ([], ["--force"], ["--resume"]):
        result = invoke(*TINY_CLI, "--out", str(out), *extra)
        assert result.exit_code == 2 and "holds no tinygrok run" in result.output, result.output
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    empty = invoke(*TINY_CLI, "--out", "")
    assert empty.exit_code == 2 and "--out" in empty.output


def test_a_run_stopped_before_its_first_checkpoint_says_to_start_again(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"task": "x_plus_y", "version": "0.1.0"}')  # all that is left
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 2 and "start it again with --resume" in result.output
    result = invoke("--out", str(out), "--resume")  # its config.json lacks the settings
    assert result.exit_code == 2 and "cannot resume" in result.output
    assert invoke(*TINY_CLI, "--out", str(out), "--force").exit_code == 0
    assert run_state(out) == "complete"


def test_resume_starts_again_a_run_killed_before_its_first_checkpoint(tmp_path, monkeypatch):
    from tinygrok.threads import current_threads, set_threads
    from tinygrok.train import Run

    before = current_threads()
    try:
        straight = tmp_path / "straight"
        assert invoke(*TINY_CLI, "--out", str(straight), "--threads", "1").exit_code == 0

        def killed(self, seconds):  # kill -9 before the step-0 checkpoint
            raise SystemExit(137)

        out = tmp_path / "run"
        monkeypatch.setattr(Run, "save_checkpoint", killed)
        assert invoke(*TINY_CLI, "--out", str(out), "--threads", "1").exit_code == 137
        monkeypatch.undo()
        assert run_state(out) == "started"
        set_threads(before)
        result = invoke("--out", str(out), "--resume")  # its own thread count, not this one
        assert result.exit_code == 0, result.output
        assert "starting it again from step 0 with its own settings" in result.output
        assert ", 1 thread ->" in result.output
        assert json.loads((out / "config.json").read_text())["threads"] == 1
        assert_same_run(straight, out)
    finally:
        set_threads(before)


def test_resume_refuses_a_run_that_logged_steps_but_lost_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    crashed_run(out)
    (out / "checkpoint.npz").unlink()
    assert run_state(out) == "started"
    metrics = read_bytes(out / "metrics.csv")
    result = invoke("--out", str(out), "--resume")
    assert result.exit_code == 2 and "logged steps but no checkpoint" in result.output
    assert read_bytes(out / "metrics.csv") == metrics
    # Started again without --force, it must not send the user back to --resume (the state
    # a --force killed while deleting the files leaves behind).
    again = invoke(*TINY_CLI, "--out", str(out))
    assert again.exit_code == 2 and "logged steps but no checkpoint" in again.output
    assert "--resume" not in again.output and "--force" in again.output


@pytest.mark.skipif(runfiles.fcntl is None, reason="no flock on this system")
def test_a_lock_held_for_an_instant_is_waited_for(tmp_path):
    with locked_by_another_process(tmp_path, seconds=0.2):
        try:
            # It waits rather than refusing at once. (The default patience, 0.5 s, is for a
            # check's lock of microseconds; a loaded machine may take longer to end the
            # holder.)
            assert runfiles.lock_run_folder(tmp_path, patience=10)
        finally:
            runfiles.unlock_run_folder(tmp_path)


@pytest.mark.skipif(runfiles.fcntl is None, reason="no flock on this system")
def test_checking_a_folder_never_looks_like_a_run_to_another_check(tmp_path):
    with locked_by_another_process(tmp_path, shared=True):  # another check
        assert runfiles.in_use_by_another_process(tmp_path) is None
    with locked_by_another_process(tmp_path) as training:
        assert runfiles.in_use_by_another_process(tmp_path) == \
            f"{tmp_path} is in use: process {training.pid} is training in it now"


def test_resume_checks_the_saved_settings_not_the_defaults(tmp_path):
    # x_plus_y with p = 7, d_model 8, 2 heads: each option agrees with the run, though not
    # with the defaults (p = 97 is for x_div_y, 2 heads do not divide 128)
    for i, given in enumerate((["--p", "7"], ["--heads", "2"], ["--d-model", "8"])):
        out = crashed_run(tmp_path / f"run{i}")
        result = invoke("--out", str(out), "--resume", *given)
        assert result.exit_code == 0, result.output
    out = crashed_run(tmp_path / "broken")
    saved = json.loads((out / "config.json").read_text())
    without_key = {k: v for k, v in saved.items() if k != "embed_every"}
    for broken, message in (([], "holds no tinygrok run"),
                            ({**saved, "threads": "x"}, "thread count is 'x'"),
                            ({**saved, "seed": "a"}, "seed must be an integer >= 0, got 'a'"),
                            (without_key, "config.json lacks embed_every")):
        (out / "config.json").write_text(json.dumps(broken))
        result = invoke("--out", str(out), "--resume")
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_resume_keeps_the_runs_thread_count(tmp_path):
    """Another thread count would change the numbers, so resume takes the saved one and
    refuses a different one."""
    from tinygrok.threads import available_threads, current_threads, set_threads

    before = current_threads()
    out = tmp_path / "run"
    try:
        set_threads(1)
        crashed_run(out)
        set_threads(before)
        if available_threads() > 1:
            with pytest.raises(ValueError, match="threads"):
                train(tiny(), out, resume=True)
            other = invoke("--out", str(out), "--resume", "--threads", "2")
            assert other.exit_code == 2 and "--threads 2 differs" in other.output
        saved = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**saved, "threads": 10 ** 6}))
        too_many = invoke("--out", str(out), "--resume")
        assert too_many.exit_code == 2 and "was run with 1000000 threads" in too_many.output
        (out / "config.json").write_text(json.dumps(saved))
        resumed = invoke("--out", str(out), "--resume")
        assert resumed.exit_code == 0 and ", 1 thread ->" in resumed.output, resumed.output
    finally:
        set_threads(before)


WARM_UP_THEN_TRAIN = """
import sys, tempfile
from numba.core.dispatcher import Dispatcher
from tinygrok.train import Run, TrainConfig, warm_up_kernels

def compiled():
    # every Numba kernel of every tinygrok module imported so far, with its signature count
    return {(name, attr): len(value.signatures)
            for name, module in list(sys.modules.items()) if name.startswith("tinygrok")
            for attr, value in vars(module).items() if isinstance(value, Dispatcher)}

warm_up_kernels()
after_warm_up = compiled()
run = Run(TrainConfig(task="x_plus_y", p=7, batch_size=16, d_model=8, heads=2,
                      probe_size=3), tempfile.mkdtemp())
for _ in range(3):
    lr = run.train_step()
run.log_metrics(lr, 0.0)
run.log_attention()
compiled_later = {k: n for k, n in compiled().items() if n != after_warm_up.get(k, 0)}
print("kernels:", len(after_warm_up), "compiled later:", compiled_later)
"""


def test_warm_up_compiles_every_kernel_a_run_uses():
    """The command compiles the kernels before its progress bar starts (issue 5), so a
    training step, an evaluation and the attention probes must find nothing new to
    compile. A fresh process, since this one compiled everything long ago."""
    if os.environ.get("NUMBA_DISABLE_JIT") == "1":
        pytest.skip("nothing is compiled with NUMBA_DISABLE_JIT=1")
    result = subprocess.run([sys.executable, "-c", WARM_UP_THEN_TRAIN], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    counts = re.search(r"kernels: (\d+) compiled later: (.*)", result.stdout)
    assert counts, result.stdout
    assert int(counts.group(1)) >= 8  # the kernels were found at all
    assert counts.group(2) == "{}"


@pytest.mark.parametrize("setting, message", [
    (dict(seed="0"), "seed must be an integer >= 0"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(seed=1.5), "seed must be an integer >= 0"),
    (dict(seed=None), "seed must be an integer >= 0"),
    (dict(steps=True), "steps must be a positive integer"),
    (dict(lr="0.001"), "lr must be a positive number"),
    (dict(lr=None), "lr must be a positive number"),
    (dict(weight_decay=float("inf")), "weight_decay must be a number >= 0"),
    (dict(train_frac="0.5"), "train_frac must lie strictly between 0 and 1"),
    (dict(warmup=2.5), "warmup must be an integer >= 0"),
    (dict(p=618970019642690137449562111), "memory"),
    (dict(p=7.0), "p must be an integer >= 2"),
    # S5 has no modulus: a p would be written into config.json and read as another
    # experiment by the report and the sweep
    (dict(task="permutation", p=7), "p applies to the modular tasks only"),
])
def test_the_python_api_names_a_bad_setting(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        train(tiny(**setting), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_python_api_never_overwrites_a_run_or_anothers_files(tmp_path):
    from tinygrok.train import DamagedRun

    done = tmp_path / "done"
    train(tiny(steps=10), done)
    metrics = read_bytes(done / "metrics.csv")
    with pytest.raises(ValueError, match="already holds a complete run; read it with"):
        train(tiny(steps=10, seed=5), done)
    # Each message points to something that works: resume=True on a complete run says
    # there is nothing to resume instead of sending the user back without it.
    with pytest.raises(DamagedRun, match="already complete, so there is nothing to resume"):
        train(tiny(steps=10, seed=5), done, resume=True)
    assert read_bytes(done / "metrics.csv") == metrics
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model": "resnet"}')
    with pytest.raises(ValueError, match="no run wrote"):
        train(tiny(), other)
    assert (other / "config.json").read_text() == '{"model": "resnet"}'
    with pytest.raises(ValueError, match="must name a folder"):
        train(tiny(), "")
    with pytest.raises(DamagedRun, match="holds no run with a checkpoint"):
        train(tiny(), tmp_path / "nothing", resume=True)
    assert not (tmp_path / "nothing").exists()


# -- one training process per run folder ------------------------------------------------------

TRY_THE_LOCK = """
import fcntl, os, sys
fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)
"""


def another_process_can_lock(folder) -> bool:
    return subprocess.run([sys.executable, "-c", TRY_THE_LOCK, str(folder)],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(runfiles.fcntl is None, reason="no flock on this system")
def test_a_folder_another_process_trains_in_is_never_touched(tmp_path):
    complete, unfinished = tmp_path / "complete", tmp_path / "unfinished"
    assert invoke(*TINY_CLI, "--out", str(complete)).exit_code == 0
    with pytest.raises(RuntimeError):
        train(tiny(steps=20), unfinished,
              on_log=lambda run, row: (_ for _ in ()).throw(RuntimeError()))
    before = {folder: {path.name: path.read_bytes() for path in folder.iterdir()}
              for folder in (complete, unfinished)}
    with locked_by_another_process(complete) as training:
        for extra in ([], ["--force"]):
            result = invoke(*TINY_CLI, "--out", str(complete), *extra)
            assert result.exit_code == 2, result.output
            assert f"is in use: process {training.pid} is training in it now" in result.output
    with locked_by_another_process(unfinished):
        for extra in ([], ["--force"], ["--resume"]):
            result = invoke(*TINY_CLI, "--out", str(unfinished), *extra)
            assert result.exit_code == 2 and "is in use" in result.output, result.output
        with pytest.raises(runfiles.FolderInUse, match="is in use"):
            train(tiny(steps=20), unfinished, resume=True)
    for folder, files in before.items():
        assert {path.name: path.read_bytes() for path in folder.iterdir()} == files


@pytest.mark.skipif(runfiles.fcntl is None, reason="no flock on this system")
def test_no_lock_is_left_behind(tmp_path):
    out = tmp_path / "run"
    train(tiny(steps=10), out)
    assert another_process_can_lock(out)
    refused = invoke(*TINY_CLI, "--out", str(out))  # complete, no --force: refused
    assert refused.exit_code == 2 and another_process_can_lock(out)
    forced = invoke(*TINY_CLI, "--out", str(out), "--force")
    assert forced.exit_code == 0 and another_process_can_lock(out)
    with pytest.raises(ValueError, match="already holds a complete run"):
        train(tiny(steps=10), out)
    assert another_process_can_lock(out)


@pytest.mark.skipif(runfiles.fcntl is None, reason="no flock on this system")
@pytest.mark.parametrize("extra", [[], ["--force"]], ids=["plain", "force"])
def test_a_run_that_takes_a_new_folder_while_another_starts_is_left_alone(tmp_path,
                                                                          monkeypatch, extra):
    """Two runs started into one new folder at once: both see it missing; the first to
    train creates and locks it; the second must not write in it or delete its files."""
    out = tmp_path / "run"

    with contextlib.ExitStack() as winner:
        def another_run_starts_meanwhile():
            out.mkdir()
            (out / "config.json").write_text('{"task": "x_plus_y", "version": "0"}')
            winner.enter_context(locked_by_another_process(out))

        monkeypatch.setattr(run_module, "warm_up_kernels", another_run_starts_meanwhile)
        result = invoke(*TINY_CLI, "--out", str(out), *extra)
    assert result.exit_code == 2 and "is in use" in result.output, result.output
    assert (out / "config.json").read_text() == '{"task": "x_plus_y", "version": "0"}'
    assert [path.name for path in out.iterdir()] == ["config.json"]


def test_a_run_that_finished_in_a_new_folder_while_another_starts_is_left_alone(tmp_path,
                                                                                monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(run_module, "warm_up_kernels", lambda: train(tiny(steps=10), out))
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "changed while this run was starting" in result.output
    assert run_state(out) == "complete"
    assert json.loads((out / "config.json").read_text())["steps"] == 10  # the other run's


def test_ctrl_c_before_training_leaves_no_empty_folder(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(run_module, "warm_up_kernels",
                        lambda: os.kill(os.getpid(), signal.SIGINT))
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 130 and "nothing was written" in result.output
    assert not out.exists()


@pytest.mark.skipif(runfiles.fcntl is None, reason="no flock on this system")
def test_a_filesystem_without_locks_still_trains(tmp_path, monkeypatch):
    import errno

    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runfiles.fcntl, "flock", no_locks)
    result = invoke(*TINY_CLI, "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert run_state(tmp_path / "run") == "complete"


@pytest.mark.parametrize("damaged", ['{"step_val_acc_99": ', "{}", "[]"],
                         ids=["cut-short", "empty", "not-an-object"])
def test_a_damaged_summary_is_written_again_by_resume(tmp_path, damaged):
    out = tmp_path / "run"
    assert invoke(*TINY_CLI, "--out", str(out)).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(damaged)
    assert run_state(out) == "resumable"  # not "complete": nothing could repair it then
    result = invoke("--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    rewritten = json.loads((out / "summary.json").read_text())
    assert {key: rewritten[key] for key in summary if key != "wall_seconds"} == \
        {key: summary[key] for key in summary if key != "wall_seconds"}


def test_a_second_training_in_the_same_process_and_folder_is_refused(tmp_path):
    """The folder lock is per process; train() also refuses its own process's second call
    (from another thread, or here from on_log) while the first is training."""
    out, refused = tmp_path / "run", []

    def try_again(run, row):
        if row["step"] == 10:
            with pytest.raises(runfiles.FolderInUse, match="this process is already training"):
                train(tiny(), out, resume=True)
            refused.append(row["step"])

    straight = train(tiny(), tmp_path / "straight")
    summary = train(tiny(), out, on_log=try_again)
    assert summary["step_val_acc_99"] == straight["step_val_acc_99"]
    assert refused == [10]
    assert_same_run(tmp_path / "straight", out)


def test_numpy_numbers_in_the_settings_are_written_as_plain_ones(tmp_path):
    for seed in np.arange(1):  # a notebook's loop over seeds
        config = tiny(seed=seed, steps=np.int64(10), lr=np.float32(3e-3))
        summary = train(config, tmp_path / f"s{seed}")
        saved = json.loads((tmp_path / f"s{seed}" / "config.json").read_text())
        assert saved["seed"] == 0 and saved["steps"] == 10 and summary["steps"] == 10
        assert saved["lr"] == pytest.approx(3e-3)


def test_the_python_api_names_a_wrong_config_or_folder(tmp_path):
    import dataclasses

    with pytest.raises(TypeError, match="config must be a TrainConfig, got a dict"):
        train(dataclasses.asdict(tiny()), tmp_path / "run")
    (tmp_path / "notes.py").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        train(tiny(), tmp_path / "notes.py")
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_the_progress_bar_is_made_writes_nothing(tmp_path, monkeypatch):
    real_progress = run_module.Progress

    def progress_then_ctrl_c(*args, **kwargs):  # the last moment before train() takes over
        os.kill(os.getpid(), signal.SIGINT)
        return real_progress(*args, **kwargs)

    monkeypatch.setattr(run_module, "Progress", progress_then_ctrl_c)
    result = invoke(*TINY_CLI, "--out", str(tmp_path / "run"))
    assert result.exit_code == 130 and "nothing was written" in result.output, result.output
    assert "Aborted" not in result.output and not (tmp_path / "run").exists()


def test_ctrl_c_after_the_run_finished_changes_nothing(tmp_path, monkeypatch):
    real_say = run_module.say_where_everything_went

    def ctrl_c_then_say(*args):
        os.kill(os.getpid(), signal.SIGINT)
        real_say(*args)

    monkeypatch.setattr(run_module, "say_where_everything_went", ctrl_c_then_say)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as `pytest &`
    result = invoke(*TINY_CLI, "--out", str(tmp_path / "run"))
    assert result.exit_code == 0 and "Aborted" not in result.output, result.output
    assert "analyse it with" in result.output and run_state(tmp_path / "run") == "complete"
    assert signal.getsignal(signal.SIGINT) is before  # put back afterwards


# -- what the summary and the probes are made of (each test written against a mutant of the
# -- code that the suite let through) -------------------------------------------------------


def test_probes_are_distinct_and_each_from_the_split_it_is_labelled_with():
    from tinygrok.train import choose_probes

    train_idx, val_idx = np.arange(10), np.arange(10, 20)
    for seed in range(10):
        probes, split_of = choose_probes(train_idx, val_idx, 5, seed)
        assert len(set(probes.tolist())) == 10
        assert set(probes[split_of == 0].tolist()) <= set(train_idx.tolist())
        assert set(probes[split_of == 1].tolist()) <= set(val_idx.tolist())
    _, split_of = choose_probes(np.arange(3), np.arange(3, 13), 5, 0)  # a small train split
    assert split_of.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]


def test_the_learning_rate_logged_is_the_one_each_step_used(tmp_path):
    """During the warm-up the rate changes every step, so reading it after AdamW's update
    would log the next step's. Step s (counting from 1) uses lr * (s - 1) / warmup: the
    first update has rate 0 and leaves the parameters as they were."""
    config = tiny(warmup=50, steps=20, log_every=10)
    run = Run(config, tmp_path / "steps")
    before = [p.data.copy() for p in run.model.parameters()]
    assert run.train_step() == 0.0
    assert all(np.array_equal(p.data, b) for p, b in zip(run.model.parameters(), before))
    assert run.train_step() == pytest.approx(config.lr / 50, rel=1e-12)
    assert not all(np.array_equal(p.data, b) for p, b in zip(run.model.parameters(), before))
    train(config, tmp_path / "run")
    logged = runfiles.read_csv(tmp_path / "run" / "metrics.csv")
    assert [row["lr"] for row in logged] == pytest.approx(
        [config.lr * 9 / 50, config.lr * 19 / 50], rel=1e-12)


def test_the_whole_split_evaluation_batches_and_builds_no_graph(tmp_path, monkeypatch):
    """evaluate() gives the mean over every example whatever the batch size, and runs
    under no_grad: with a graph the numbers are the same, but every batch would keep its
    activations for a backward that never comes."""
    from tinygrok.train import evaluate

    run = Run(tiny(), tmp_path / "run")
    losses, real_loss = [], run.model.loss

    def loss_seen(tokens, labels):
        loss, logits = real_loss(tokens, labels)
        losses.append(loss)
        return loss, logits

    monkeypatch.setattr(run.model, "loss", loss_seen)
    whole = evaluate(run.model, run.val_inputs, run.val_labels, len(run.val_labels))
    batched = evaluate(run.model, run.val_inputs, run.val_labels, 3)
    assert len(losses) == 1 + -(-len(run.val_labels) // 3)
    assert not any(loss.requires_grad for loss in losses)
    assert batched[1] == whole[1] and batched[0] == pytest.approx(whole[0], rel=1e-6)


def test_after_a_resume_the_plain_progress_lines_start_at_the_next_multiple(capsys):
    """Resumed at step 5000 with rows every 30 steps, the first row (5030) is not a new
    multiple of 500: the first line is at 5510 (a mutant that took the first row for step 0
    printed one at 5030 too)."""
    progress = run_module.Progress(total=7500)
    run = SimpleNamespace(config=SimpleNamespace(log_every=30))
    for step in range(5030, 5600, 30):
        progress(run, {"step": step, "train_acc": 0.5, "val_acc": 0.25})
    printed = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["5510/7500"]


def test_a_run_that_did_not_grok_names_its_budget(tmp_path):
    result = invoke(*TINY_CLI, "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "val acc > 0.99 at: never (budget 20)" in result.output, result.output


def test_the_longer_run_hint_can_be_pasted_for_a_path_with_a_space(tmp_path):
    import shlex

    out = tmp_path / "my run"
    assert invoke(*TINY_CLI, "--out", str(out)).exit_code == 0
    result = invoke("--out", str(out), "--resume")
    hint = " ".join(result.output.split()).split("e.g. ")[1]
    assert shlex.split(hint)[-2:] == ["--out", str(tmp_path / "my run-longer")], result.output


def test_a_run_whose_folder_was_moved_names_where_to_resume_it(tmp_path, monkeypatch):
    from tinygrok.adamw import AdamW

    out, moved = tmp_path / "run", tmp_path / "moved"
    real_step = AdamW.step

    def step_then_move(self):
        real_step(self)
        if self.step_count == 12 and out.exists():
            out.rename(moved)

    monkeypatch.setattr(AdamW, "step", step_then_move)
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 1, result.output
    assert f"--out {moved} --resume" in result.output, result.output


def run_with_logged_rows(folder, val_acc):
    from tinygrok.train import Run

    run = Run(tiny(steps=40, log_every=10), folder)
    run.metrics = [dict(step=step, lr=0.001, train_loss=1.0, train_acc=train, val_loss=1.0,
                        val_acc=val, weight_norm=1.0)
                   for step, train, val in zip([10, 20, 30, 40], [0.5, 1.0, 1.0, 1.0], val_acc)]
    run.step = 40
    return run


def test_the_summary_takes_each_number_from_the_right_place(tmp_path):
    from tinygrok.analysis.phases import find_phases
    from tinygrok.train import evaluate

    run = run_with_logged_rows(tmp_path, [0.1, 0.99, 0.995, 0.97])
    summary = run.summary(1.0)
    loss, accuracy = evaluate(run.model, run.task.inputs[run.train_idx],
                              run.task.labels[run.train_idx], run.config.eval_batch_size)
    assert summary["final_train_acc"] == accuracy and summary["final_train_loss"] == loss
    assert summary["final_val_acc"] == 0.97  # the last logged value, not the best
    assert summary["grokked"] is True and summary["step_val_acc_99"] == 30
    assert summary["phases"] == find_phases([10, 20, 30, 40], [0.5, 1.0, 1.0, 1.0],
                                            [0.1, 0.99, 0.995, 0.97])
    capped = run_with_logged_rows(tmp_path / "capped", [0.1, 0.99, 0.99, 0.97])
    assert capped.summary(1.0)["grokked"] is False  # exactly 0.99 has not grokked
    assert capped.summary(1.0)["step_val_acc_99"] == 40  # the step budget
    early = run_with_logged_rows(tmp_path / "early", [0.1, 0.995, 1.0, 1.0])
    assert early.summary(1.0)["step_val_acc_99"] == 20  # the first step above, not the last


def cross_entropy_and_accuracy(model, inputs, labels):
    """The mean cross-entropy (in float64) and accuracy of ``model`` on these examples, in
    one forward pass: the numbers a metrics row should hold, computed without train.py."""
    from tinygrok.autograd import no_grad

    with no_grad():
        logits = model(inputs).data.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return (-log_probs[np.arange(len(labels)), labels].mean(),
            (logits.argmax(axis=1) == labels).mean())


def test_each_metrics_row_holds_the_numbers_of_its_own_window_and_of_the_validation_split(
        tmp_path, monkeypatch):
    """Computed here, independently: train loss and accuracy averaged over exactly the steps
    since the row before (3, 3, then a short window of 1), each step's batch seen before its
    update; validation loss and accuracy over the whole validation split (in uneven batches:
    a full one, then a single example); the norm of every parameter."""
    import copy

    from tinygrok.tasks import sample_batch
    from tinygrok.train import Run

    per_step = []  # (loss, accuracy) of each step's batch, before the step's update
    train_step = Run.train_step

    def train_step_seen_from_outside(run):
        batch = sample_batch(copy.deepcopy(run.batch_rng), run.train_idx, run.config.batch_size)
        per_step.append(cross_entropy_and_accuracy(run.model, run.task.inputs[batch],
                                                   run.task.labels[batch]))
        return train_step(run)

    monkeypatch.setattr(Run, "train_step", train_step_seen_from_outside)
    rows = []
    num_val = 49 - int(0.5 * 49)  # x_plus_y mod 7: 49 pairs, half of them for training

    def check_row(run, row):
        val = cross_entropy_and_accuracy(run.model, run.task.inputs[run.val_idx],
                                         run.task.labels[run.val_idx])
        norm = np.sqrt(sum((p.astype(np.float64) ** 2).sum()
                           for p in run.model.state_dict().values()))
        rows.append((row, val, norm))
        assert len(run.val_idx) == num_val  # so the evaluation's batches are 24 and 1

    config = tiny(steps=7, log_every=3, eval_batch_size=num_val - 1)
    train(config, tmp_path / "run", on_log=check_row)
    assert [row["step"] for row, _, _ in rows] == [3, 6, 7]
    for (row, (val_loss, val_acc), norm), window in zip(rows, ([0, 1, 2], [3, 4, 5], [6])):
        train_loss = np.mean([per_step[i][0] for i in window])
        train_acc = np.mean([per_step[i][1] for i in window])
        assert row["train_loss"] == pytest.approx(train_loss, rel=1e-5)
        assert row["train_acc"] == pytest.approx(train_acc, abs=1e-12)
        assert row["val_loss"] == pytest.approx(val_loss, rel=1e-5)
        assert row["val_acc"] == pytest.approx(val_acc, abs=1e-12)
        assert row["weight_norm"] == pytest.approx(norm, rel=1e-6)


def test_the_summary_reports_the_last_validation_loss_not_the_lowest(tmp_path):
    run = run_with_logged_rows(tmp_path, [0.1, 0.99, 0.995, 0.97])
    for row, loss in zip(run.metrics, [2.0, 0.5, 0.7, 0.9]):
        row["val_loss"] = loss
    assert run.summary(1.0)["final_val_loss"] == 0.9


# -- the order of the run's files, exit codes and handlers (each test written against a
# -- mutant of the command-line layer that the suite let through) ---------------------------


def test_rows_logged_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    # A process killed between writing metrics.csv and checkpoint.npz leaves rows past the
    # checkpoint's step; the resumed run logs those steps again, once.
    train(tiny(), tmp_path / "straight")
    out = crashed_run(tmp_path / "run")  # checkpoint at 30
    lines = (out / "metrics.csv").read_text().splitlines()
    beyond = lines[-1].split(",")
    beyond[0] = "35"
    (out / "metrics.csv").write_text("\n".join(lines + [",".join(beyond)]) + "\n")
    train(tiny(), out, resume=True)
    assert_same_run(tmp_path / "straight", out)


def test_the_final_checkpoint_is_saved_before_the_summary_says_complete(tmp_path, monkeypatch):
    """summary.json is what makes a run complete, so it comes last: a run stopped in
    between must still hold the final parameters."""
    import tinygrok.train as train_module

    seen = {}
    write_json = runfiles.write_json

    def write_json_seeing_the_checkpoint(path, obj):
        if path.name == "summary.json":
            seen["step"] = int(runfiles.read_npz(path.parent / "checkpoint.npz")["step"])
        write_json(path, obj)

    monkeypatch.setattr(train_module.runfiles, "write_json", write_json_seeing_the_checkpoint)
    train(tiny(steps=20, checkpoint_every=15), tmp_path / "run")
    assert seen["step"] == 20


def test_train_puts_back_the_signal_handlers_it_found(tmp_path):
    def ours(number, frame):
        pass

    numbers = [signal.SIGINT, signal.SIGTERM] + ([SIGHUP] if SIGHUP is not None else [])
    before = {number: signal.getsignal(number) for number in numbers}
    try:
        for number in before:
            signal.signal(number, ours)
        train(tiny(steps=10), tmp_path / "run")
        assert all(signal.getsignal(number) is ours for number in before)
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


@pytest.mark.parametrize("signal_number, code", [
    (signal.SIGINT, 130), (signal.SIGTERM, 143),
    pytest.param(SIGHUP, 129, marks=pytest.mark.skipif(SIGHUP is None, reason="no SIGHUP"))],
    ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_the_command_stopped_mid_run_exits_128_plus_the_signal_and_says_resume(
        tmp_path, monkeypatch, signal_number, code):
    signal_after_step(monkeypatch, 12, signal_number)
    out = tmp_path / "run"
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == code, result.output
    assert "interrupted at step 12; checkpoint saved" in result.output
    assert f"python -m tinygrok.run --out {out} --resume" in result.output
    assert run_state(out) == "resumable"


@pytest.mark.skipif(SIGHUP is None, reason="no SIGHUP on this system")
def test_a_run_started_with_hangups_ignored_trains_on_through_one(tmp_path, monkeypatch):
    """nohup starts a process with SIGHUP ignored: the run must leave it so."""
    signal_after_step(monkeypatch, 12, SIGHUP)
    signal.signal(SIGHUP, signal.SIG_IGN)  # the fixture puts its own back afterwards
    train(tiny(steps=20), tmp_path / "run")
    assert run_state(tmp_path / "run") == "complete"
    assert signal.getsignal(SIGHUP) is signal.SIG_IGN


def test_a_run_started_with_ctrl_c_ignored_still_stops_on_it(tmp_path, monkeypatch):
    """A shell script's `cmd &` starts cmd with SIGINT ignored, and a sweep passes that on
    to its runs; the sweep stops them with SIGINT, so they must catch it all the same."""
    signal_after_step(monkeypatch, 12, signal.SIGINT)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(Interrupted) as stop:
            train(tiny(steps=20), tmp_path / "run")
        assert stop.value.step == 12
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # put back as it was
    finally:
        signal.signal(signal.SIGINT, before)


COMMAND = [sys.executable, "-m", "tinygrok.run", *TINY_CLI]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_closing_the_terminal_stops_the_command_with_a_checkpoint_at_its_step(tmp_path):
    import pty
    import select

    out = tmp_path / "run"
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads (BLAS's, here) may deadlock
        # the child if it needs a lock another thread held. This child only calls execv.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid, terminal = pty.fork()  # the child's controlling terminal is ours to close
    if pid == 0:
        os.execv(sys.executable, [*COMMAND, "--steps", "1000000", "--out", str(out)])
    shown, deadline = b"", time.monotonic() + 120
    # until the progress bar shows a step past the checkpoint at step 0
    while not re.search(rb"[1-9]\d*/1000000", shown) and time.monotonic() < deadline:
        if select.select([terminal], [], [], 1)[0]:
            try:
                shown += os.read(terminal, 4096)
            except OSError:  # the child ended
                break
    os.close(terminal)  # the window closes: the kernel sends SIGHUP, writes fail
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + SIGHUP, shown.decode(errors="replace")
    assert run_state(out) == "resumable"
    saved = int(runfiles.read_npz(out / "checkpoint.npz")["step"])
    assert saved > 0  # not only the checkpoint at step 0: it saved the step it was in
    assert runfiles.read_csv(out / "metrics.csv")[-1]["step"] == saved // 5 * 5


@pytest.mark.skipif(sys.platform == "win32", reason="closes a descriptor before exec")
def test_the_command_with_its_output_closed_trains_all_the_same(tmp_path):
    out = tmp_path / "run"  # as `python -m tinygrok.run ... >&-` starts it
    finished = subprocess.run([*COMMAND, "--out", str(out)], stderr=subprocess.PIPE,
                              preexec_fn=lambda: os.close(1), timeout=300)
    assert finished.returncode == 0, finished.stderr.decode()
    assert run_state(out) == "complete"


def test_a_reader_that_quits_does_not_stop_the_run(tmp_path):
    """python -m tinygrok.run | head -1: the display goes, the run completes quietly."""
    out = tmp_path / "run"
    command = subprocess.Popen([*COMMAND, "--out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert command.stdout.readline().startswith(b"tinygrok: x_plus_y")
    command.stdout.close()  # every later line fails with EPIPE
    errors = command.stderr.read().decode()
    assert command.wait(timeout=300) == 0, errors
    assert run_state(out) == "complete"
    assert "Error" not in errors and "Exception" not in errors, errors


class Terminal(io.StringIO):
    def isatty(self):
        return True


class TinyRun:
    class config:
        log_every = 5


@pytest.mark.parametrize("columns, term, bar", [(80, "xterm", True), (200, "xterm", True),
                                                (60, "xterm", False), (80, "dumb", False)])
def test_the_progress_bar_fits_the_terminal_or_gives_way_to_lines(monkeypatch, columns, term,
                                                                   bar):
    import shutil

    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.setattr(shutil, "get_terminal_size",
                        lambda *args, **kwargs: os.terminal_size((columns, 24)))
    monkeypatch.setenv("TERM", term)
    progress = run_module.Progress(7500)
    for step in range(10, 7501, 10):
        progress(TinyRun, {"step": step, "train_acc": 1.0, "val_acc": 0.5})
    progress.close()
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)
             for line in re.split(r"[\r\n]", sys.stdout.getvalue()) if line.strip()]
    assert (progress.bar is not None) == bar
    if bar:  # every redraw stays within one line of the terminal
        assert max(len(line) for line in lines) <= columns
        assert lines[-1].startswith("[#") and "7500/7500  train acc 1.000  val acc 0.500" in \
            lines[-1]
    else:
        assert lines[0].startswith("step    500/7500  train acc 1.000  val acc 0.500")
        assert len(lines) == 15


@pytest.mark.parametrize("tty", [True, False], ids=["bar", "lines"])
@pytest.mark.parametrize("fails_from", [1, 3], ids=["at-once", "mid-run"])
def test_the_progress_display_goes_quiet_when_its_terminal_fails(monkeypatch, tty, fails_from):
    """A terminal that closes (EIO) or a pipe whose reader quits (EPIPE) mid-run."""
    import shutil

    class ClosingTerminal(io.StringIO):
        writes = 0

        def isatty(self):
            return tty

        def write(self, text):
            self.writes += 1
            if self.writes >= fails_from:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", ClosingTerminal())
    monkeypatch.setattr(shutil, "get_terminal_size",
                        lambda *args, **kwargs: os.terminal_size((100, 24)))
    monkeypatch.setenv("TERM", "xterm")
    progress = run_module.Progress(2000, every=100)
    for step in range(10, 2001, 10):
        progress(TinyRun, {"step": step, "train_acc": 1.0, "val_acc": 0.5})
    progress.close()
    assert progress.gone and progress.bar is None
    assert sys.stdout.writes >= fails_from  # it did fail, at the write it was meant to


def test_the_commands_it_prints_can_be_pasted_into_a_shell(tmp_path, monkeypatch):
    import shlex

    signal_after_step(monkeypatch, 12, signal.SIGINT)
    out = tmp_path / "my run's folder"  # a space and a quote
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 130, result.output
    pasted = result.output.splitlines()[-1].strip()
    assert shlex.split(pasted) == ["python", "-m", "tinygrok.run", "--out", str(out), "--resume"]
    monkeypatch.undo()
    resumed = invoke(*shlex.split(pasted)[3:])
    assert resumed.exit_code == 0, resumed.output
    pasted = resumed.output.splitlines()[-1].removeprefix("analyse it with: ")
    assert shlex.split(pasted) == ["python", "-m", "tinygrok.analyze", str(out)]


def test_the_command_exits_1_naming_the_step_when_the_loss_is_not_finite(tmp_path):
    result = invoke(*TINY_CLI, "--lr", "1e30", "--log-every", "1", "--out", str(tmp_path / "r"))
    assert result.exit_code == 1, result.output
    assert re.search(r"error: .*the loss became nan at step \d+", result.output), result.output


def test_out_of_memory_while_a_resume_reads_the_run_is_one_line(tmp_path, monkeypatch):
    out = crashed_run(tmp_path / "run")
    real_read_npz = runfiles.read_npz

    def read_npz(path):
        if path.name == "attention.npz":
            raise MemoryError("Unable to allocate 2.00 GiB for an array with shape (268435456,) "
                              "and data type float64")
        return real_read_npz(path)

    monkeypatch.setattr(runfiles, "read_npz", read_npz)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    result = invoke("--out", str(out), "--resume")
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: out of memory while reading the run in {out} (Unable to allocate 2.00 GiB for "
        f"an array with shape (268435456,) and data type float64); its files are unchanged: "
        f"with more memory free, run the command again")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_the_command_out_of_memory_exits_1_with_one_error_and_what_to_do(tmp_path, monkeypatch):
    out_of_memory_at_step(monkeypatch, 12)  # the default checkpoints: step 0, then 500
    said = ("out of memory after step 11 (Unable to allocate 9.09 MiB for an array with shape "
            "(4656, 512) and data type float32); its checkpoint at step 0 is kept.\nWith more "
            "memory free (close other programs, or raise the limit), continue with:\n"
            "  python -m tinygrok.run --out {out} --resume\n")
    out = tmp_path / "run"
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "\nerror: " + said.format(out=out) in result.output
    assert "Traceback" not in result.output
    monkeypatch.undo()
    assert invoke("--out", str(out), "--resume").exit_code == 0  # the advice works
    assert run_state(out) == "complete"


@pytest.mark.parametrize("name, call, said", [
    ("attention.npz", 2, "(at step 20); its checkpoint at step 0 is kept.\nOnce the folder "
                         "can be written again, continue with:\n"
                         "  python -m tinygrok.run --out {out} --resume\n"),
    ("attention.npz", 1, "(at step 0); no checkpoint had been saved yet.\nOnce the folder can "
                         "be written again, start it from step 0 with:\n"
                         "  python -m tinygrok.run --out {out} --resume\n"),
    ("config.json", 1, "(at step 0); nothing had been saved yet: run the command again\n")],
    ids=["after-a-checkpoint", "before-any", "before-the-settings"])
def test_the_command_on_a_full_disk_exits_1_with_one_error_and_what_to_do(
        tmp_path, monkeypatch, name, call, said):
    disk_full_at(monkeypatch, name, call=call)  # attention.npz is saved at steps 0 and 20
    out = tmp_path / "run"
    result = invoke(*TINY_CLI, "--out", str(out))
    assert result.exit_code == 1, result.output
    assert (f"\nerror: cannot write {out / name}: {os.strerror(errno.ENOSPC)} "
            + said.format(out=out)) in result.output
    monkeypatch.undo()
    if "--resume" in said:  # the advice works
        assert invoke("--out", str(out), "--resume").exit_code == 0
        assert run_state(out) == "complete"
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit)


def test_resume_and_force_together_are_refused_and_the_run_is_kept(tmp_path):
    out = crashed_run(tmp_path / "run")  # resumable, from its checkpoint at step 30
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    result = invoke("--out", str(out), "--resume", "--force")
    assert result.exit_code == 2 and "--resume and --force contradict" in result.output
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_resume_names_a_differing_option_as_it_is_typed(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ZeroDivisionError):  # a crash at step 15, after the checkpoint at 10
        train(tiny(steps=20, checkpoint_every=10), out,
              on_log=lambda run, row: row["step"] != 15 or 1 / 0)
    result = invoke("--out", str(out), "--resume", "--batch-size", "8")
    assert result.exit_code == 2 and "--batch-size 8 differs" in result.output, result.output


def test_train_refuses_an_on_log_or_resume_of_the_wrong_kind_before_writing(tmp_path):
    # on_log=5 trained to the first log row, then failed; resume="no" resumed
    with pytest.raises(TypeError, match="on_log must be a function"):
        train(tiny(), tmp_path / "a", on_log=5)
    with pytest.raises(TypeError, match="resume must be True or False"):
        train(tiny(), tmp_path / "b", resume="no")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_memory_guard_counts_numpy_integers_without_overflow():
    # p=np.int32(50000): p ** 2 wrapped around, and the estimate said 2.4 GB, not 250
    small = TrainConfig(task="x_plus_y", p=np.int32(50000)).memory_estimate()
    big = TrainConfig(task="x_plus_y", p=50000).memory_estimate()
    assert small == big and sum(big.values()) > 200e9
    assert TrainConfig(task="x_plus_y", p=np.int8(7)).memory_estimate() == \
        TrainConfig(task="x_plus_y", p=7).memory_estimate()
    assert TrainConfig(batch_size=np.int16(512), eval_batch_size=np.int16(8192),
                       d_model=np.int16(128)).memory_estimate() == TrainConfig().memory_estimate()
