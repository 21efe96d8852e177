"""Thread settings: the OpenMP wait policy that import sets, and the thread count."""

import json
import os
import subprocess
import sys

import numba
import pytest
from threadpoolctl import threadpool_info

from tinygrok import threads
from tinygrok.train import TrainConfig, train

PRINT_POLICY = "import tinygrok, os; print(os.environ.get('OMP_WAIT_POLICY'))"


def _policy_after_import(env_value):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    result = subprocess.run([sys.executable, "-c", PRINT_POLICY], env=env, check=True,
                            capture_output=True, text=True)
    return result.stdout.strip()


def test_import_makes_idle_openmp_threads_sleep():
    # spinning Numba threads starve BLAS of cores (benchmarks/README.md)
    assert _policy_after_import(None) == "PASSIVE"


def test_a_policy_already_set_is_kept():
    assert _policy_after_import("ACTIVE") == "ACTIVE"


def test_set_threads_checks_the_range_and_applies():
    available, before = threads.available_threads(), threads.current_threads()
    for wrong in (available + 1, 0, -1):  # 0 is not "all of them"
        with pytest.raises(ValueError, match=f"between 1 and {available}"):
            threads.set_threads(wrong)
    try:
        assert threads.set_threads(1) == 1
        assert threads.current_threads() == 1
        # the matrix products themselves run on that many threads (what fixes the numbers)
        pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert pools and all(pool["num_threads"] == 1 for pool in pools)
    finally:
        threads.set_threads(before)


def test_kernels_on_one_thread_restores_the_count_even_after_an_error():
    before = threads.current_threads()
    numba_before = numba.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with threads.kernels_on_one_thread():
            assert numba.get_num_threads() == 1
            assert threads.current_threads() == before  # BLAS keeps its threads
            raise RuntimeError("inside")
    assert numba.get_num_threads() == numba_before


def test_current_threads_reports_blas_threads():
    available, before = threads.available_threads(), threads.current_threads()
    try:
        threads.set_threads(1)
        assert threads.current_threads() == 1
        threads.set_threads(available)
        with threads.kernels_on_one_thread():
            assert threads.current_threads() == available
    finally:
        threads.set_threads(before)


def test_the_training_loop_runs_the_kernels_on_one_thread(tmp_path):
    seen = []
    before = numba.get_num_threads()
    summary = train(TrainConfig(task="x_plus_y", p=7, steps=10, batch_size=8, d_model=8,
                                heads=2, layers=1, log_every=5, probe_size=2),
                    tmp_path / "run", on_log=lambda run, row: seen.append(numba.get_num_threads()))
    assert seen == [1, 1] and summary["steps"] == 10
    assert numba.get_num_threads() == before
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] == \
        threads.current_threads()


def test_a_busy_machine_gets_a_note_suggesting_the_free_cores():
    note = threads.busy_machine_note(2, others=1, cores=2)
    assert "other programs keep 1 of this machine's 2 cores busy" in note
    assert "--threads 1 avoids that" in note
    assert threads.busy_machine_note(2, others=0, cores=2) is None  # quiet: no note
    assert threads.busy_machine_note(1, others=3, cores=2) is None  # one thread waits for no one
    assert threads.busy_machine_note(4, others=2, cores=8) is None  # cores to spare
    assert "--threads 6 avoids" in threads.busy_machine_note(8, others=2, cores=8)


def test_other_running_threads_reads_the_running_count_of_this_instant(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("1.90 1.20 0.80 3/412 12345\n")  # averages high, 3 running now
    assert threads.other_running_threads(str(loadavg), samples=2, interval=0) == 2
    loadavg.write_text("1.90 1.20 0.80 1/412 12345\n")  # a run that just ended: only us
    assert threads.other_running_threads(str(loadavg), samples=2, interval=0) == 0
    assert threads.other_running_threads(str(tmp_path / "none"), samples=1) is None


def test_more_threads_than_cores_gets_its_own_note_whatever_else_runs():
    # --threads 8 on 2 cores (NUMBA_NUM_THREADS=8 allows it): 100 steps took 248 s, not 4
    note = threads.busy_machine_note(8, others=0, cores=2)
    assert note.startswith("note: 8 threads on this machine's 2 cores:")
    assert "--threads 2 avoids that" in note and "other programs" not in note
    assert threads.busy_machine_note(2, others=0, cores=2) is None


@pytest.mark.parametrize("threads_, others", [(8, 0), (2, 1)], ids=["too-many", "busy"])
def test_a_resumed_run_is_not_told_to_change_its_thread_count(threads_, others):
    # --resume refuses another --threads: the note must not suggest one
    note = threads.busy_machine_note(threads_, others=others, cores=2, resuming=True)
    assert note is not None and "--threads" not in note
    assert note.endswith("a resumed run keeps the thread count it was started with, the "
                         "only one that continues it exactly")


def test_the_default_count_is_one_per_core_even_where_numba_may_use_more(monkeypatch):
    if numba.config.NUMBA_NUM_THREADS < threads.machine_cores():
        pytest.skip("NUMBA_NUM_THREADS is set below the cores: Numba cannot use one per core")
    before = threads.current_threads()
    monkeypatch.setattr(threads, "available_threads", lambda: threads.machine_cores() + 6)
    try:
        assert threads.set_threads() == threads.machine_cores()  # not cores + 6
    finally:
        monkeypatch.undo()
        threads.set_threads(before)


# -- each written against a mutant that a mutation run found alive --------------------------


def test_kernels_on_one_thread_puts_back_a_count_below_the_maximum():
    """On a 2-core machine the count before is usually the maximum, which hid a version that
    restored NUMBA_NUM_THREADS instead of the count there was (after --threads 1, say)."""
    before = threads.current_threads()
    try:
        threads.set_threads(1)
        with threads.kernels_on_one_thread():
            pass
        assert numba.get_num_threads() == 1
    finally:
        threads.set_threads(before)


def test_a_refused_count_names_its_limit_and_changes_no_thread_count():
    before = threads.current_threads()
    with pytest.raises(ValueError, match=r"\((NUMBA_NUM_THREADS|the cores of this machine)\)"):
        threads.set_threads(threads.available_threads() + 1)
    assert all(pool["num_threads"] == before for pool in threadpool_info()
               if pool["user_api"] == "blas")


def test_other_running_threads_takes_the_fewest_of_its_samples(tmp_path, monkeypatch):
    """A thread that runs for a moment must not look like a busy machine; the samples are
    /proc/loadavg's running count (4th field, this process's thread included)."""
    samples = iter(["0.5 0.4 0.3 5/400 1\n", "0.5 0.4 0.3 1/400 1\n", "0.5 0.4 0.3 4/400 1\n"])
    loadavg, real_open = tmp_path / "loadavg", open

    def next_sample(*args, **kwargs):  # each sample opens the file anew: a new reading
        loadavg.write_text(next(samples))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(threads, "open", next_sample, raising=False)
    assert threads.other_running_threads(str(loadavg), samples=3, interval=0) == 0
    loadavg.write_text("1.0 2.0\n")  # not what Linux writes: no answer rather than a crash
    monkeypatch.undo()
    assert threads.other_running_threads(str(loadavg), samples=1) is None


def test_the_busy_machine_note_for_more_threads_than_cores_and_more_programs_than_cores():
    assert threads.busy_machine_note(3, others=0, cores=2).startswith(
        "note: 3 threads on this machine's 2 cores")
    assert "keep 2 of this machine's 2 cores busy" in threads.busy_machine_note(2, others=3,
                                                                                 cores=2)
