"""``python -m tinygrok.sweep``: many runs (tasks x seeds) in parallel, safe to re-run.

    python -m tinygrok.sweep --tasks x_plus_y,x_minus_y,x_div_y,permutation --seeds 0,1,2 \\
        --jobs 2 --out runs/paper                       # the paper's Table 1: 12 runs
    python -m tinygrok.sweep --tasks x_div_y --seeds 0-4 --out runs/wd1 --weight-decay 1.0
    python -m tinygrok.report runs/paper                # Table 1 and Figure 1

Each (task, seed) is an ordinary run directory ``<out>/<task>-s<seed>``, trained by its own
``python -m tinygrok.run`` process; what that process prints goes to
``<out>/logs/<task>-s<seed>.log``, and every minute the sweep prints the last step each
running run has logged (runs print a line every 500 steps; on this machine only, as a
cluster's logs come back with each finished run).
Running the same command again is always safe: complete runs are skipped, interrupted
runs resume from their checkpoint (``--resume``; a run whose summary.json was damaged
resumes at its last step and writes it again), and a run that died before its first
checkpoint starts again (``--force``). A run whose folder holds different settings (say,
another weight decay), a run still training in another process, and a file in a run's
place are left alone and reported; so is a run too damaged to resume, once it fails: the
sweep never deletes a run that has a checkpoint.

Options the sweep does not know are handed to every run unchanged, so a hyperparameter can
be swept by giving each value its own ``--out``. They are checked (by the run command's own
option parser and ``TrainConfig.validate``) before anything is written.

Why separate processes, started fresh
    Each run is a new Python interpreter (``subprocess.Popen``), not a fork of this one:
    Numba's OpenMP thread pool is not fork-safe, and a fresh process also gives every run
    its own thread settings and its own log. A small loop keeps at most ``--jobs`` of them
    running.

Why the cores are divided
    A run uses threads for NumPy's matrix products (BLAS) and for Numba kernels. Two runs
    that each think they own the machine fight over the cores and both slow down. With J
    jobs on C cores each run gets K = max(1, C // J) threads, set through
    ``--threads K`` and the environment (OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS = K, which must
    be set before NumPy and Numba are imported), so J x K never exceeds C. More jobs than
    cores are capped at one per core, and more ``--cores`` than the machine has at its
    count. Without ``--jobs``, J is one per core, or the number of runs left to do when
    fewer are. One exception: a run being resumed keeps the thread count it started with
    (its config.json), because another count would add up its matrix products in another
    order and change its numbers; the sweep says so when that count differs from K (even
    when it is more than this machine's cores: the run is then exact, only slower).

Ctrl-C
    The runs are started in their own session, so the terminal's Ctrl-C reaches only the
    sweep, which passes one SIGINT to every running run: each saves a checkpoint and stops.
    The sweep then exits with code 130; the same command resumes everything. SIGTERM (a
    batch system's time limit, ``kill``) and SIGHUP (the terminal closed) are handled the
    same way, so no training is orphaned; the sweep then exits with code 143 or 129.

Analysis
    At the end, analysis.json is written into every complete run that lacks an up-to-date
    one (``--no-analyze`` skips it). No figures: they are slow, and the report draws its
    own; ``python -m tinygrok.analyze RUN_DIR`` draws a run's.

One sweep per folder
    Two sweeps into the same ``--out`` would train the same runs twice at once and
    overwrite each other's files, so a sweep holds ``<out>/.sweep.lock`` while it works
    and a second one is refused. A lock left by a sweep that was killed is taken over.

A dask.distributed cluster (``--scheduler tcp://HOST:PORT``)
    Needs the optional extra (``pip install -e ".[dask]"``) and tinygrok installed on every
    worker. Each run becomes one dask task. The task trains in a temporary folder on the
    worker and sends back the run directory's files as ``{file name: bytes}``; the sweep
    writes them into ``<out>/<name>/`` (summary.json last, so a run never looks complete
    before all its files are there). So no filesystem has to be shared between the
    machines; when one is shared, nothing changes. To resume, the sweep sends the
    checkpoint and logs the other way. Each new run uses the cores of its worker's machine
    divided by the number of runs that machine's workers can hold at once (start workers
    with ``--nthreads 1``); a resumed run, its own thread count. On Ctrl-C the workers stop
    their runs, which save a checkpoint and are sent back like a finished run.

Exit codes: 0 all runs complete; 1 a run failed or was left alone (the others still
finish; they are listed at the end with their log or the reason), or the sweep's lock
could not be written; 2 bad usage (one line, nothing written); 130 Ctrl-C; 143 SIGTERM;
129 SIGHUP.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import click

from tinygrok.tasks import TASK_NAMES
from tinygrok.terminal import show, stop_signals
from tinygrok.threads import machine_cores

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")
SET_BY_SWEEP = ("--task", "--seed", "--out", "--resume", "--force", "--threads")
STOP_WAIT_SECONDS = 120  # how long a stopped run may take to save its checkpoint
PROGRESS_SECONDS = 60  # how often the sweep says where its running runs are
CONNECT_TIMEOUT = "10s"  # to reach a dask scheduler
LOCK_NAME = ".sweep.lock"
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # and 128 + n after signal n


class SweepUsageError(click.ClickException):
    """A bad option: one 'Error: ...' line and exit code 2, before anything is written."""

    exit_code = EXIT_USAGE


@dataclasses.dataclass
class Job:
    """One (task, seed) of the sweep and what to do about it."""

    task: str
    seed: int
    directory: Path
    action: str  # "skip" (complete), "start", "resume", "restart", or "conflict"
    note: str = ""  # why, for a conflict
    threads: int | None = None  # a run to resume keeps its own thread count (config.json)

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def log(self) -> Path:
        return self.directory.parent / "logs" / f"{self.name}.log"


@dataclasses.dataclass
class Outcome:
    """How one job ended."""

    job: Job
    ok: bool
    seconds: float = 0.0
    message: str = ""  # for a failure: the exit code and the error in the log


# ---- reading the options -------------------------------------------------------------------


def parse_tasks(text: str) -> list[str]:
    """"x_plus_y,x_div_y" -> ["x_plus_y", "x_div_y"]; an unknown name is a usage error."""
    tasks = unique([t.strip() for t in text.split(",") if t.strip()])
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown or not tasks:
        raise SweepUsageError(f"--tasks: unknown task {', '.join(map(repr, unknown)) or '(none)'};"
                              f" choose from {','.join(TASK_NAMES)}")
    return tasks


MAX_SEEDS = 10_000  # more runs than any sweep on one machine could finish


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" or "0-2" (or a mix, "0-2,7") -> [0, 1, 2]; seeds are integers >= 0."""
    seeds = []
    for part in (p.strip() for p in text.split(",")):
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise SweepUsageError(f"--seeds: {part!r} is not a seed (give integers >= 0, "
                                  f"like 0,1,2 or 0-4)") from None
        if high < low:
            raise SweepUsageError(f"--seeds: the range {part!r} is empty")
        if len(seeds) + high - low + 1 > MAX_SEEDS:  # before a huge range fills memory
            raise SweepUsageError(f"--seeds: {text!r} gives more than {MAX_SEEDS:,} seeds; "
                                  f"a sweep takes at most that many")
        seeds.extend(range(low, high + 1))
    return unique(seeds)


def unique(items: list) -> list:
    """The items in order, each once."""
    return list(dict.fromkeys(items))


def run_settings(task: str, seed: int, extra: list[str]) -> dict:
    """The settings ``python -m tinygrok.run --task T --seed S EXTRA`` would train with.

    The run command's own parser reads the extra options (so a typo or a bad value is caught
    here, with click's message), then the run command's ``check_settings`` checks what only
    the whole combination can show: memory, x_div_y with a modulus that is not prime, ...
    """
    from tinygrok.run import DEFAULTS, check_settings, main as run_main
    from tinygrok.tasks import has_modulus
    from tinygrok.config import TrainConfig

    given = [arg for arg in extra if arg.split("=")[0] in SET_BY_SWEEP]
    if given:
        raise SweepUsageError(f"{given[0].split('=')[0]} is set by the sweep for each run; "
                              f"leave it out of the options passed to the runs")
    try:
        context = run_main.make_context("tinygrok.run",
                                        ["--task", task, "--seed", str(seed), *extra])
    except click.ClickException as error:
        raise SweepUsageError(f"in the options passed to each run: "
                              f"{error.format_message()}") from None
    settings = {name: context.params[name] for name in DEFAULTS}
    p_given = context.get_parameter_source("p") != click.core.ParameterSource.DEFAULT
    probe_given = (context.get_parameter_source("probe_size")
                   != click.core.ParameterSource.DEFAULT)
    try:  # the checks the run command makes (memory, prime p, heads, ...), in its order
        check_settings(TrainConfig(**settings), p_given, probe_given)
    except click.ClickException as error:
        advice = ""
        if p_given and not has_modulus(task):  # the options go to every run of the sweep
            advice = (f"; sweep {task} without --p (in a sweep of its own, if other tasks "
                      f"need --p)")
        raise SweepUsageError(f"{task}: {error.format_message()}{advice}") from None
    return settings


# ---- sharing the cores ---------------------------------------------------------------------


def share_cores(jobs: int, cores: int) -> tuple[int, int]:
    """(runs at once, threads per run) so that their product never exceeds ``cores``."""
    jobs = max(1, min(jobs, cores))
    return jobs, max(1, cores // jobs)


def thread_environment(threads: int) -> dict[str, str]:
    """This process's environment with every thread-count variable set to ``threads``.

    The variables must be set before the run imports NumPy and Numba, which is why they go
    into the environment of a new process. PYTHONUNBUFFERED makes the log file follow the
    run line by line (``tail -f`` works).
    """
    return {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES},
            "PYTHONUNBUFFERED": "1"}


# ---- what each run needs -------------------------------------------------------------------


def directory_state(directory: Path) -> str:
    """train.run_state, plus 'blocked' for a path that exists but is not a folder."""
    from tinygrok.train import run_state

    if directory.exists() and not directory.is_dir():
        return "blocked"
    return run_state(directory)


def settings_differ(directory: Path, expected: dict) -> list[str]:
    """The settings in which the run in ``directory`` differs from ``expected``."""
    from tinygrok.runfiles import read_json_object
    from tinygrok.config import saved_settings

    config_path = directory / "config.json"
    if not config_path.is_file():
        return []
    saved = read_json_object(config_path)
    if saved is None:
        return ["a config.json that cannot be read as settings"]
    saved = saved_settings(saved)
    return [f"{name} {saved[name]} (not {value})" for name, value in expected.items()
            if name in saved and saved[name] != value]


def plan_job(out: Path, task: str, seed: int, extra: list[str]) -> Job:
    """Decide, from its folder, whether a run is skipped, started, resumed or restarted."""
    from tinygrok.runfiles import in_use_by_another_process

    directory = out / f"{task}-s{seed}"
    state = directory_state(directory)
    if state == "foreign":
        return Job(task, seed, directory, "conflict",
                   f"{directory} holds files that are not a tinygrok run; use another --out")
    if state == "blocked":
        return Job(task, seed, directory, "conflict",
                   f"{directory} is a file, not a folder; move it or use another --out")
    busy = in_use_by_another_process(directory)
    if busy:  # say, a run left training by a sweep that was killed
        return Job(task, seed, directory, "conflict", busy)
    if state in ("complete", "resumable"):
        differ = settings_differ(directory, run_settings(task, seed, extra))
        if differ:
            return Job(task, seed, directory, "conflict",
                       f"{directory} holds a run with {', '.join(differ)}; use another --out")
    action = {"complete": "skip", "resumable": "resume", "started": "restart"}.get(state, "start")
    return Job(task, seed, directory, action, threads=saved_threads(directory)
               if action == "resume" else None)


def saved_threads(directory: Path) -> int | None:
    """The thread count a run was started with: resuming it with another would change its
    numbers (matrix products add up in another order), so the run command refuses that."""
    from tinygrok.runfiles import read_json_object

    saved = read_json_object(directory / "config.json")
    if saved is None:
        return None  # the run command will say what is wrong with config.json
    threads = saved.get("threads")
    whole = isinstance(threads, int) and not isinstance(threads, bool)  # true is an int too
    return threads if whole and threads >= 1 else None


def run_command(job: Job, threads: int, extra: list[str], directory: Path | None = None) -> list[str]:
    """The ``python -m tinygrok.run`` command line of one job (into ``directory`` if given),
    with ``threads`` threads (a run to resume: its own, ``job.threads``)."""
    command = [sys.executable, "-m", "tinygrok.run", "--task", job.task, "--seed", str(job.seed),
               "--out", str(directory or job.directory), "--threads", str(threads), *extra]
    if job.action == "resume":
        command.append("--resume")
    elif job.action == "restart":
        command.append("--force")
    return command


def error_in_log(path: Path) -> str:
    """What a failed run's log says went wrong in its last attempt (the log gathers every
    attempt, each after a "# date command" line of the sweep's): the last line that starts
    with "error:" (the run command's own errors, or click's "Error:"), else the last
    non-empty line (a traceback's last line, say); '' for an empty or unreadable log. The
    advice that may follow the error (a --resume command) is not for the sweep, which
    resumes by itself."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = []
    for line in text.splitlines():
        if re.match(r"# \d{4}-\d\d-\d\d ", line):  # another attempt starts here
            lines = []
        elif line.strip() and not line.startswith("# "):
            lines.append(line.strip())
    errors = [line for line in lines if line.lower().startswith("error:")]
    return (errors or lines or [""])[-1]


def last_progress(log: Path) -> str:
    """Where a run is, read from the last progress line in its log ("step 1500/7500  train
    acc ...", as ``run.Progress`` prints it): "at step 1500/7500", or "starting" before the
    first such line."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "starting"
    steps = [line.split()[1] for line in lines if line.startswith("step ") and
             len(line.split()) > 1]
    return f"at step {steps[-1]}" if steps else "starting"


def failure_message(job: Job, code: int | None) -> str:
    """A failed run's exit code and the error in its log (``error_in_log``). A run that
    could not be resumed (a damaged file) is never deleted by the sweep: it says how to
    start it again, since the run command's own advice, --force, is not a sweep option."""
    error = error_in_log(job.log)
    message = f"exit {code}: {error} (log: {job.log})"
    if code == EXIT_USAGE and job.action == "resume" and "cannot resume" in error:
        message += (f"; to start this run again, delete {job.directory} and run the sweep "
                    f"again")
    return message


def finished_line(count: str, outcome: Outcome) -> str:
    """'[3/12] x_div_y-s1 done in 170 s: step_val_acc_99 = 3480 (grokked)' or a failure."""
    job = outcome.job
    if not outcome.ok:
        return f"{count} {job.name} FAILED after {outcome.seconds:.0f} s: {outcome.message}"
    from tinygrok.runfiles import read_json_object

    summary = read_json_object(job.directory / "summary.json") or {}
    if not summary.get("grokked"):
        return (f"{count} {job.name} done in {outcome.seconds:.0f} s: val acc never above "
                f"0.99 in {summary.get('steps')} steps (did not grok)")
    return (f"{count} {job.name} done in {outcome.seconds:.0f} s: step_val_acc_99 = "
            f"{summary.get('step_val_acc_99')} (grokked)")


# ---- one sweep per folder at a time ---------------------------------------------------------


def take_lock(out: Path) -> Path:
    """Create ``<out>/.sweep.lock`` ("host pid"), refusing while another live sweep holds it.

    Two sweeps into one folder would train (and resume) the same runs at the same time and
    overwrite each other's files. A lock left by a sweep that died is taken over.
    """
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_NAME
    for _ in range(3):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = read_lock(lock)
            if holder is None or holder_is_alive(holder):
                raise SweepUsageError(f"another sweep ({holder or 'unknown'}) is running into "
                                      f"{out}; wait for it, or delete {lock} if it is gone")
            lock.unlink(missing_ok=True)  # its sweep died: take over
            continue
        try:
            with os.fdopen(descriptor, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}\n")
        except OSError as error:  # a full disk: an empty lock would stop every later sweep
            lock.unlink(missing_ok=True)
            raise click.ClickException(f"cannot write {lock}: {error.strerror}") from None
        return lock
    raise SweepUsageError(f"cannot take {lock}; delete it if no sweep is running")


def read_lock(lock: Path) -> str | None:
    try:
        return lock.read_text().strip() or None
    except OSError:
        return None


def holder_is_alive(holder: str) -> bool:
    """Whether the "host pid" in a lock is a running process (one on another host counts)."""
    host, _, pid = holder.partition(" ")
    if host != socket.gethostname():
        return True  # a shared filesystem: we cannot see the other machine's processes
    try:
        os.kill(int(pid), 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


# ---- running on this machine ---------------------------------------------------------------


class Running:
    """One run's process, its log file and when it started. Raises OSError if the run
    cannot be started (its log cannot be written, say), leaving no file open."""

    def __init__(self, job: Job, threads: int, extra: list[str]):
        self.job = job
        threads = job.threads or threads
        job.log.parent.mkdir(parents=True, exist_ok=True)
        command = run_command(job, threads, extra)
        self.log_file = open(job.log, "a", encoding="utf-8", errors="surrogateescape")
        try:
            self.log_file.write(f"# {datetime.datetime.now():%Y-%m-%d %H:%M:%S} "
                                f"{shlex.join(command)}\n")
            self.log_file.flush()
            self.started = time.perf_counter()
            # A new session: the terminal's Ctrl-C goes to the sweep only, which forwards it
            # once.
            self.process = subprocess.Popen(command, stdout=self.log_file,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=thread_environment(threads),
                                            start_new_session=True)
        except BaseException:
            self.log_file.close()
            raise

    def outcome(self) -> Outcome:
        """How the finished process ended (call once ``process.poll()`` is not None)."""
        self.log_file.close()
        seconds = time.perf_counter() - self.started
        code = self.process.returncode
        if code == 0:
            return Outcome(self.job, True, seconds)
        return Outcome(self.job, False, seconds, failure_message(self.job, code))

    def stop(self) -> None:
        """Ask the run to save a checkpoint and stop, as Ctrl-C would."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)


def run_locally(jobs: list[Job], parallel: int, threads: int, extra: list[str]) -> list[Outcome]:
    """Run the jobs, at most ``parallel`` at a time, printing a line as each one ends and,
    every ``PROGRESS_SECONDS``, where the running ones are."""
    waiting, running, outcomes = list(jobs), [], []
    next_progress = time.monotonic() + PROGRESS_SECONDS
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                job = waiting.pop(0)
                try:
                    running.append(Running(job, threads, extra))
                except OSError as error:  # a full disk, say: this run fails, the others go on
                    where = f"cannot write {error.filename}: " if error.filename else ""
                    outcomes.append(Outcome(job, False, 0.0, f"could not start: {where}"
                                                             f"{error.strerror or error}"))
                    show(finished_line(f"[{len(outcomes)}/{len(jobs)}]", outcomes[-1]))
            time.sleep(0.2)
            for entry in [r for r in running if r.process.poll() is not None]:
                running.remove(entry)
                outcomes.append(entry.outcome())
                show(finished_line(f"[{len(outcomes)}/{len(jobs)}]", outcomes[-1]))
            if running and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + PROGRESS_SECONDS
                show("  ... " + "; ".join(f"{entry.job.name} {last_progress(entry.job.log)}"
                                          for entry in running))
    except KeyboardInterrupt:
        stop_all(running)
        raise
    return outcomes


def stop_all(running: list[Running]) -> None:
    """SIGINT to every run, then wait for them to save their checkpoints."""
    if running:
        show(f"\nstopping {len(running)} running run(s); each saves a checkpoint...",
             err=True)
    for entry in running:
        entry.stop()
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    for entry in running:
        try:
            entry.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            entry.process.kill()
            entry.process.wait()
            show(f"{entry.job.name} did not stop in time and was killed", err=True)
        entry.log_file.close()


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: handled as Ctrl-C is, but the sweep then exits 128 + the
    signal's number (143, 129)."""

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number


def interrupt_on_signal(number, _frame) -> None:
    """SIGTERM (a job scheduler, `kill`) or SIGHUP (the terminal closed) stops the runs like
    Ctrl-C: no orphaned trainings."""
    raise Terminated(number)


# ---- running on a dask.distributed cluster -------------------------------------------------


def read_run_files(directory: Path) -> dict[str, bytes]:
    """The run directory's files as {name: bytes} (top level only; no temporary files)."""
    if not directory.is_dir():
        return {}
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())
            if path.is_file() and not path.name.startswith(".")}


def write_run_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write {name: bytes} into ``directory``, each file atomically, in the order training
    writes them: config.json, the logs, checkpoint.npz, summary.json. Stopped in between,
    the folder is then never one without config.json (not a run), one whose checkpoint is
    ahead of its logs (which resume refuses) or one that looks complete."""
    from tinygrok.runfiles import write_atomically

    order = {"config.json": -1, "checkpoint.npz": 1, "summary.json": 2}  # the logs are 0
    directory.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda name: order.get(name, 0)):
        write_atomically(directory / name, files[name])


def train_on_worker(job: Job, extra: list[str], files: dict[str, bytes], stop_name: str,
                    threads_by_worker: dict[str, int]) -> dict:
    """A dask task: train one run in a temporary folder and return its files.

    ``files`` are the run's current files (a checkpoint, to resume). The run is stopped
    (SIGINT, so it saves a checkpoint) when the client sets the dask Event ``stop_name``.
    Returns {"code": exit code or None if never started, "seconds", "files", "log"}.
    """
    from distributed import Event, get_worker

    stop = Event(stop_name)
    if stop.is_set():
        return {"code": None, "seconds": 0.0, "files": {}, "log": ""}
    worker = get_worker().address
    threads = job.threads or threads_by_worker.get(worker, 1)
    with tempfile.TemporaryDirectory(prefix="tinygrok-sweep-") as temporary:
        directory = Path(temporary) / job.name
        write_run_files(directory, files)
        log_path = Path(temporary) / "run.log"
        command = run_command(job, threads, extra, directory)
        started = time.perf_counter()
        with open(log_path, "w", encoding="utf-8", errors="surrogateescape") as log:
            log.write(f"on the dask worker {worker}: {shlex.join(command)}\n")
            log.flush()
            process = subprocess.Popen(command, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=thread_environment(threads), start_new_session=True)
            while process.poll() is None:
                if stop.wait(timeout=1):
                    process.send_signal(signal.SIGINT)
                    process.wait(timeout=STOP_WAIT_SECONDS)
        return {"code": process.returncode, "seconds": time.perf_counter() - started,
                "files": read_run_files(directory),
                "log": log_path.read_text(encoding="utf-8", errors="replace")}


def threads_per_worker(client) -> dict[str, int]:
    """{worker address: threads per run}: each machine's cores shared among all the runs its
    workers can hold at once (the sum of their dask threads)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(machine_cores)
    slots = Counter()
    for info in workers.values():
        slots[info["host"]] += info["nthreads"]
    return {address: max(1, cores[address] // slots[info["host"]])
            for address, info in workers.items()}


def connect(address: str):
    """A dask Client for ``address``; a one-line usage error without dask or a scheduler."""
    try:
        from distributed import Client
    except ImportError:
        raise SweepUsageError('--scheduler needs dask.distributed: pip install -e ".[dask]"') \
            from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        raise SweepUsageError(f"--scheduler: cannot reach {address} ({error})") from None


def receive(job: Job, result: dict) -> Outcome:
    """Write what a worker sent back into the run directory and the log."""
    from tinygrok.run import remove_run_files
    from tinygrok.runfiles import FolderInUse, lock_run_folder, unlock_run_folder

    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a", encoding="utf-8", errors="surrogateescape") as log:
        log.write(f"# {datetime.datetime.now():%Y-%m-%d %H:%M:%S} {result['log']}")
        log.write(f"# (paths above are the worker's temporary folder; the files are now in "
                  f"{job.directory})\n")
    job.directory.mkdir(parents=True, exist_ok=True)
    try:  # no run may be training here meanwhile (say, one started by hand)
        took_lock = lock_run_folder(job.directory)
    except FolderInUse as busy:
        return Outcome(job, False, result["seconds"], f"its files were not written back: "
                                                      f"{busy}")
    try:
        if job.action == "restart":
            remove_run_files(job.directory)  # the worker started afresh: drop the stale files
        write_run_files(job.directory, result["files"])
    finally:
        if took_lock:
            unlock_run_folder(job.directory)
    if result["code"] == 0:
        return Outcome(job, True, result["seconds"])
    return Outcome(job, False, result["seconds"], failure_message(job, result["code"]))


def run_on_cluster(client, jobs: list[Job], extra: list[str]) -> list[Outcome]:
    """Submit one dask task per job; write each run's files as its task returns."""
    from distributed import Event, as_completed

    stop_name = f"tinygrok-sweep-stop-{uuid.uuid4().hex}"
    stop = Event(stop_name, client=client)
    threads = threads_per_worker(client)
    show(f"cluster: {len(threads)} worker(s); threads per run: "
         f"{sorted(set(threads.values())) or 'none yet'}")
    futures = {}
    for job in jobs:
        # Only a run to resume needs its files; a restart starts from an empty folder.
        files = read_run_files(job.directory) if job.action == "resume" else {}
        future = client.submit(train_on_worker, job, extra, files, stop_name, threads,
                               key=f"tinygrok-{job.name}-{uuid.uuid4().hex[:8]}", pure=False)
        futures[future] = job
    outcomes = []
    collected = set()  # futures whose files are written back
    try:
        for future in as_completed(futures):
            outcomes.append(collect(futures[future], future))
            collected.add(future)
            show(finished_line(f"[{len(outcomes)}/{len(jobs)}]", outcomes[-1]))
    except KeyboardInterrupt:
        show("\nstopping the runs on the cluster; each saves a checkpoint...", err=True)
        stop.set()  # queued tasks return at once; running ones save a checkpoint first
        try:  # every other run's files, including runs that finished but were not yet handed out
            for future in as_completed([f for f in futures if f not in collected],
                                       timeout=STOP_WAIT_SECONDS):
                collect(futures[future], future)
        except TimeoutError:
            show("some runs did not come back in time; they start afresh next time",
                 err=True)
        raise
    return outcomes


def collect(job: Job, future) -> Outcome:
    """The Outcome of a finished dask task (a task that raised is a failed run)."""
    try:
        result = future.result()
    except Exception as error:  # the worker could not even start the run
        return Outcome(job, False, 0.0, f"the dask task failed: {type(error).__name__}: {error}")
    if result["code"] is None:
        return Outcome(job, False, 0.0, "not started (the sweep was stopped)")
    try:
        return receive(job, result)
    except OSError as error:
        return Outcome(job, False, result["seconds"], f"cannot write the run's files: {error}")


# ---- after the runs: analysis --------------------------------------------------------------


def needs_analysis(directory: Path) -> bool:
    """A complete run whose analysis.json is missing or older than its summary.json."""
    from tinygrok.runfiles import is_summary, read_json_object

    summary, analysis = directory / "summary.json", directory / "analysis.json"
    if not is_summary(read_json_object(summary)):
        return False
    return not analysis.is_file() or analysis.stat().st_mtime < summary.stat().st_mtime


def analyse(jobs: list[Job]) -> list[Outcome]:
    """Write analysis.json into every complete run that lacks an up-to-date one (none, or
    one older than its summary.json). No figures: the report draws its own, and per-run
    figures are one ``python -m tinygrok.analyze DIR`` away."""
    from tinygrok.analysis import analyze_run, load_run
    from tinygrok.analyze import write_json

    failures, count = [], 0
    for job in jobs:
        if not job.directory.is_dir() or not needs_analysis(job.directory):
            continue
        try:
            write_json(job.directory / "analysis.json", analyze_run(load_run(job.directory)).report)
            count += 1
        except Exception as error:  # report it, analyse the others
            failures.append(Outcome(job, False, 0.0, f"analysis failed: {type(error).__name__}: "
                                                     f"{error}"))
    if count:
        show(f"analysed {count} run(s): analysis.json in each run directory")
    return failures


# ---- the command ---------------------------------------------------------------------------


def report_failures(failures: list[Outcome]) -> None:
    show(f"\n{len(failures)} run(s) did not complete:", err=True)
    for outcome in failures:
        show(f"  {outcome.job.name}: {outcome.job.note or outcome.message}", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True,
                                "ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--tasks", default=",".join(TASK_NAMES),
              help=f"Comma-separated tasks, from {','.join(TASK_NAMES)}.")
@click.option("--seeds", default="0,1,2", help='Comma-separated seeds, or ranges: "0-4,7".')
@click.option("--out", type=click.Path(), default="runs",
              help="Folder for the run directories <task>-s<seed> and logs/.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Runs at once on this machine.  [default: one per core]")
@click.option("--cores", type=click.IntRange(min=1), default=None,
              help="Cores the sweep may use (jobs x threads per run never exceeds it, but "
                   "a resumed run keeps its own thread count).  "
                   "[default: all of this machine's]")
@click.option("--analyze/--no-analyze", default=True,
              help="Write analysis.json into every complete run at the end.")
@click.option("--scheduler", metavar="tcp://HOST:PORT", default=None,
              help="Run on a dask.distributed cluster instead (pip install -e \".[dask]\"): "
                   "each run trains in a temporary folder on a worker and its files are sent "
                   "back into --out, so no shared filesystem is needed. --jobs and --cores "
                   "do not apply.")
@click.option("--dry-run", is_flag=True,
              help="Print what would run, run nothing (exit code 1 if a run would be left "
                   "alone).")
@click.pass_context
def main(ctx, tasks, seeds, out, jobs, cores, analyze, scheduler, dry_run):
    """Train every (task, seed) as its own run directory, several at a time.

    \b
      python -m tinygrok.sweep --tasks x_plus_y,x_minus_y,x_div_y,permutation \\
          --seeds 0,1,2 --jobs 2 --out runs/paper
      python -m tinygrok.sweep --tasks x_div_y --seeds 0-4 --out runs/wd1 --weight-decay 1
      python -m tinygrok.report runs/paper

    Other options (after the sweep's own, optionally after --) go to every run, e.g.
    --steps 3000 --weight-decay 1.0; see python -m tinygrok.run --help. Re-running the same
    command skips complete runs and resumes interrupted ones. Exit code 1 if a run failed or
    was left alone (the others still run), 2 for bad usage, 130 after Ctrl-C, 143 after
    SIGTERM, 129 after SIGHUP (the terminal closed).
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():  # before or after the runs
        previous = {number: signal.signal(number, interrupt_on_signal)  # (in the analysis)
                    for number in stop_signals() if number != signal.SIGINT}
    try:
        sweep_command(ctx, tasks, seeds, out, jobs, cores, analyze, scheduler, dry_run)
    except KeyboardInterrupt as stop:  # before, during or after the runs
        show("\ninterrupted: run the same command again to resume", err=True)
        sys.exit(128 + stop.signal_number if isinstance(stop, Terminated)
                 else EXIT_INTERRUPTED)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def sweep_command(ctx, tasks, seeds, out, jobs, cores, analyze, scheduler, dry_run):
    """The work of ``main``: check everything, plan, then run (see ``main``)."""
    extra = [arg for arg in ctx.args if arg != "--"]
    tasks, seeds = parse_tasks(tasks), parse_seeds(seeds)
    for task in tasks:  # every option is checked before anything is written
        run_settings(task, seeds[0], extra)
    from tinygrok.runfiles import check_writable, checked_out_folder
    try:  # empty, a file, or a folder that cannot be created or written
        out = checked_out_folder(out)
    except click.BadParameter as error:
        raise SweepUsageError(f"--out: {error.message}") from None
    if (out / "logs").exists() and not (out / "logs").is_dir():
        raise SweepUsageError(f"--out: {out / 'logs'} is a file; the sweep keeps its runs' "
                              f"logs in a folder of that name")
    try:  # the runs' logs go there
        check_writable(out / "logs")
    except click.BadParameter as error:
        raise SweepUsageError(f"--out: {error.message}") from None
    longest = max((f"{task}-s{seed}" for task in tasks for seed in seeds), key=len)
    for path in (out / longest, out / "logs" / f"{longest}.log"):  # a huge seed's names
        try:
            if not os.path.lexists(path):  # not made yet: its name must fit
                check_writable(path)
        except click.BadParameter as error:
            raise SweepUsageError(f"--seeds: {error.message}") from None
    if scheduler is not None and not scheduler.strip():
        raise SweepUsageError("--scheduler: must name a scheduler, tcp://HOST:PORT (leave it "
                              "out to run here)")
    if scheduler is None and cores and cores > machine_cores():
        show(f"--cores {cores} is more than the {machine_cores()} this machine has: "
             f"using {machine_cores()}")
        cores = machine_cores()
    cores = cores or machine_cores()
    if scheduler is None and jobs and jobs > cores:
        show(f"--jobs {jobs} is more than the {cores} cores: running {cores} at a time")

    if dry_run:
        plan, parallel, threads = plan_sweep(out, tasks, seeds, extra, jobs, cores)
        todo, conflicts = announce(plan, threads)
        for job in todo:
            command = run_command(job, job.threads or threads, extra)
            show(f"{job.action:>8} {job.name}: {shlex.join(command)}")
        if conflicts:  # as the sweep itself would end
            sys.exit(EXIT_FAILED)
        return
    client = connect(scheduler) if scheduler else None  # before anything is written
    lock = take_lock(out)
    try:
        perform_sweep(out, tasks, seeds, extra, jobs, cores, analyze, client)
    finally:
        lock.unlink(missing_ok=True)
        if client is not None:
            client.close()


def plan_sweep(out: Path, tasks: list[str], seeds: list[int], extra: list[str],
               jobs: int | None, cores: int) -> tuple[list[Job], int, int]:
    """Every (task, seed)'s job, and how many run at once with how many threads each.
    ``--jobs`` fixes both (the same command always gives a run the same thread count);
    without it there is one run per core, or fewer runs with more threads each when fewer
    are left to do."""
    plan = [plan_job(out, task, seed, extra) for task in tasks for seed in seeds]
    to_run = sum(job.action not in ("skip", "conflict") for job in plan)
    parallel, threads = share_cores(jobs or min(cores, max(1, to_run)), cores)
    return plan, parallel, threads


def perform_sweep(out: Path, tasks: list[str], seeds: list[int], extra: list[str],
                  jobs: int | None, cores: int, analyze: bool, client) -> None:
    """Plan, run (here, or on the dask ``client``'s cluster), analyse; exit 1 on a failure."""
    plan, parallel, threads = plan_sweep(out, tasks, seeds, extra, jobs, cores)
    todo, failures = announce(plan, None if client else threads)
    if todo:
        own = any(job.threads and job.threads != threads for job in todo)
        where = (f"on {client.scheduler.address}" if client else
                 f"{parallel} at a time, {threads} thread(s) each"
                 + (" (resumed runs: their own)" if own else ""))
        show(f"running {len(todo)} run(s) into {out}/ ({where}); logs in {out / 'logs'}/")
        outcomes = run_all(todo, client, parallel, threads, extra)
        failures += [outcome for outcome in outcomes if not outcome.ok]
    elif not failures:
        show("nothing to run")
    if analyze:
        failures += analyse(plan)
    if failures:
        report_failures(failures)
        sys.exit(EXIT_FAILED)
    show(f"all {len(plan)} run(s) complete. Report: python -m tinygrok.report "
         f"{shlex.quote(str(out))}")


def announce(plan: list[Job], threads: int | None = None) -> tuple[list[Job], list[Outcome]]:
    """Say which runs are skipped or left alone, and which resume with another thread count
    than ``threads``; return the jobs to run and the conflicts."""
    skipped = [job.name for job in plan if job.action == "skip"]
    if skipped:
        show(f"skipped {len(skipped)} complete run(s): {', '.join(skipped)}")
    conflicts = [Outcome(job, False) for job in plan if job.action == "conflict"]
    for outcome in conflicts:
        show(f"left alone: {outcome.job.note}", err=True)
    own = [f"{job.name} ({job.threads})" for job in plan
           if job.action == "resume" and job.threads and job.threads != threads]
    if own:
        show(f"resumed with the thread count each started with, so that its numbers "
             f"match an uninterrupted run: {', '.join(own)}")
    return [job for job in plan if job.action not in ("skip", "conflict")], conflicts


def run_all(todo: list[Job], client, parallel: int, threads: int, extra: list[str]):
    """Run the jobs here or on the cluster. Ctrl-C or SIGTERM (turned into a
    KeyboardInterrupt by ``main``) stops them all; ``main`` then exits 130 or 143."""
    if client is not None:
        return run_on_cluster(client, todo, extra)
    return run_locally(todo, parallel, threads, extra)

if __name__ == "__main__":
    from tinygrok.startup_signals import restore_handlers

    restore_handlers()  # the imports are done: Ctrl-C is Python's again (startup_signals.py)
    main()
