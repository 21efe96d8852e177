"""Writing a run directory so that an interruption never leaves a broken or misleading file.

Every file is written whole to a temporary name in the same folder, then renamed over the
real name. A rename within one filesystem is atomic: a reader (or a resumed run) sees either
the old complete file or the new complete file, never half of one.

The files (the contract with ``tinygrok.analysis``, which only reads them):

    config.json      every setting of the run command, the thread count, the package version
    metrics.csv      step, lr, train_loss, train_acc, val_loss, val_acc, weight_norm
    timing.csv       step, seconds (wall clock since the run started)
    attention.npz    steps (S,), probe_inputs (N, T), probe_split (N,),
                     patterns (S, L, H, N, T, T) float16
    embeddings.npz   steps (E,), token_embeddings (E, V, d)
    checkpoint.npz   parameters, AdamW state, RNG state, step: everything to resume
    summary.json     written last, only when the run finished: a whole one means "complete"

metrics.csv holds only numbers that the seed determines, so two runs with the same seed and
thread count give byte-identical files; wall-clock times go to timing.csv.

One process at a time trains in a run folder (``lock_run_folder``): a second one, say a
``--resume`` or ``--force`` typed in another terminal while the first still runs, would
overwrite the first one's checkpoint and metrics with its own.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
import time
from pathlib import Path

import click
import numpy as np

try:
    import fcntl  # POSIX file locks; Windows has none, and there nothing is locked
except ImportError:
    fcntl = None

METRIC_COLUMNS = ("step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "weight_norm")
TIMING_COLUMNS = ("step", "seconds")


@contextlib.contextmanager
def atomic_file(path: Path):
    """A file opened for writing ``path``'s new content: really a temporary file, renamed to
    ``path`` once the ``with`` block has written it and it is on disk. If anything fails (a
    full disk, ``path`` a folder, an exception in the block) the temporary file is removed
    and the error raised; an OSError then names ``path``."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as error:  # OSError(errno, ...) is IsADirectoryError etc. again
        temporary.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole, or leave ``path`` as it was (``atomic_file``)."""
    with atomic_file(path) as f:
        f.write(data)


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON; NumPy numbers (say, a seed from ``np.arange``) as plain ones."""
    write_atomically(path, (json.dumps(obj, indent=2, default=_plain_number) + "\n").encode())


def _plain_number(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


def write_csv(path: Path, columns, rows) -> None:
    """Rows of numbers; floats written with ``repr`` so they read back bit-exactly."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([repr(float(row[c])) if isinstance(row[c], float) else row[c]
                         for c in columns])
    write_atomically(path, text.getvalue().encode())


def read_csv(path: Path) -> list[dict]:
    """The rows of a file written by ``write_csv``: step as int, the rest as float."""
    with open(path, newline="") as f:
        return [{k: int(v) if k == "step" else float(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


SUMMARY_KEYS = ("final_train_acc", "final_val_acc", "step_val_acc_99", "grokked", "steps")


def is_summary(saved) -> bool:
    """Does ``saved`` (a parsed summary.json) hold what a finished run writes, each value of
    its type? (A damaged or hand-edited one makes the run incomplete; resume rewrites it.)"""
    if not (isinstance(saved, dict) and all(key in saved for key in SUMMARY_KEYS)):
        return False

    def is_a(value, kind) -> bool:  # True is an int to Python, but not a count of steps
        return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))

    return (is_a(saved["final_train_acc"], (int, float))
            and is_a(saved["final_val_acc"], (int, float)) and is_a(saved["grokked"], bool)
            and is_a(saved["step_val_acc_99"], int) and is_a(saved["steps"], int))


def is_run_config(config) -> bool:
    """Is ``config`` (a parsed config.json, or None) one that a tinygrok run wrote, not some
    other project's? A run's names its task and the package version."""
    return isinstance(config, dict) and {"task", "version"} <= config.keys()


def read_json_object(path: Path) -> dict | None:
    """The JSON object ({...}) in ``path``; None if it is missing, damaged or not an object,
    or not a regular file (reading a named pipe would wait for a writer forever)."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def write_npz(path: Path, **arrays) -> None:
    """The arrays as an uncompressed .npz, written straight into the temporary file: no
    copy of them in memory (the attention log is the largest thing a run keeps)."""
    with atomic_file(path) as f:
        np.savez(f, **arrays)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# ---- output folders a command writes into ---------------------------------------------------


def home_expanded(out: str) -> Path:
    """An --out as typed, with a leading ~ made the home folder, as the shell does at the
    start of a word. ``--out=~/runs`` is not one: the shell hands it over unexpanded, and a
    folder named ~ in the current one is never what was meant."""
    return Path(os.path.expanduser(out))


def checked_out_folder(out: str) -> Path:
    """An --out given on the command line, as a Path (``home_expanded``); click.BadParameter
    if it is empty or cannot be created or written (the run command checks its --out with
    ``check_writable``; the sweep and the report check theirs with this, and the report
    its FOLDER too when it writes there)."""
    if out == "":
        raise click.BadParameter("must name a folder, not be empty", param_hint="--out")
    check_writable(home_expanded(out))
    return home_expanded(out)


def check_writable(out: Path) -> None:
    """The output folder must be creatable and writable: refuse before writing anything.

    A name too long for the filesystem, a folder this user may not look into, or a symbolic
    link that leads to no folder is refused here too, not when the folder is created after
    the kernels have been compiled."""
    existing = nearest_existing(out)
    if existing == out and not out.is_dir():
        raise click.BadParameter(f"{out} exists and is not a folder", param_hint="--out")
    try:
        longest = os.pathconf(existing, "PC_NAME_MAX")  # for the names still to be created
    except (OSError, ValueError, AttributeError):  # the system does not say (Windows has
        longest = None                               # no os.pathconf at all)
    for name in out.parts[len(existing.parts):]:
        if longest is not None and len(os.fsencode(name)) > longest:
            raise click.BadParameter(f"cannot create {out}: a folder name may have at most "
                                     f"{longest} bytes here", param_hint="--out")
    try:  # os.access says yes to root everywhere; only a real write tells
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        problem = f"cannot write into {existing} ({error.strerror})"
        if existing != out:  # say which folder was asked for, not only where it failed
            problem = f"cannot create {out}: {problem}"
        raise click.BadParameter(problem, param_hint="--out") from None


def nearest_existing(out: Path) -> Path:
    """``out`` if it exists, else its closest parent that does. Asks ``os.stat`` itself:
    ``Path.exists()`` hides some errors (and from Python 3.14 all of them) as "missing"."""
    path = out
    while True:
        try:
            os.stat(path)
            return path
        except (FileNotFoundError, NotADirectoryError):  # not there yet: look one level up
            if os.path.islink(path):  # a link to nothing: creating the folder would fail
                raise click.BadParameter(f"{path} is a symbolic link that leads to no "
                                         f"folder", param_hint="--out") from None
        except OSError as error:  # a loop of links, a name too long, no permission, ...
            raise click.BadParameter(f"cannot use {out} ({error.strerror})",
                                     param_hint="--out") from None
        if path.parent == path:  # not even the top exists (the current folder was deleted)
            raise click.BadParameter(f"cannot use {out}: none of the folders on its path "
                                     f"exists", param_hint="--out")
        path = path.parent


# ---- one training process per run folder ----------------------------------------------------


class FolderInUse(Exception):
    """Another process is training in this run folder right now."""


_locked_folders: dict[Path, int] = {}  # folder -> the open descriptor that holds its lock


def lock_run_folder(out: Path, patience: float = 0.5) -> bool:
    """Lock the existing folder ``out`` for this process; raise ``FolderInUse`` if another
    process still holds it after ``patience`` seconds (a report or sweep checking the
    folder holds a shared lock on it for an instant: ``in_use_by_another_process``).
    Returns True if this call took the lock; False if this process already held it, or if
    nothing can be locked here (see below).

    The lock is the operating system's ``flock`` on the folder itself, so it writes nothing
    in the folder, and it ends with the process however the process ends (even
    ``kill -9``): no stale lock is ever left behind.

    A folder deleted, renamed or replaced while its run trains keeps the lock on the old
    folder; the run notices before its next write (``what_became_of``) and stops. What the
    lock does not cover: runs on two machines sharing a network filesystem (a folder's flock
    may be seen by one machine only), and filesystems without locks, where nothing is
    locked (as on Windows).
    """
    folder = Path(out).resolve()
    if folder in _locked_folders or fcntl is None:
        return False
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return False  # a folder that cannot be opened to read: run_state will say why
    deadline = time.monotonic() + patience
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
    except BlockingIOError:
        os.close(descriptor)
        raise FolderInUse(f"{in_use(out)}; wait for it to finish (or stop it), or choose "
                          f"another folder") from None
    except OSError:  # a filesystem without locks (some network ones): go on unlocked
        os.close(descriptor)
        return False
    _locked_folders[folder] = descriptor
    return True


def unlock_run_folder(out: Path) -> None:
    """Release a lock that ``lock_run_folder`` took (closing the folder releases it)."""
    descriptor = _locked_folders.pop(Path(out).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)


def open_folder(out: Path) -> int | None:
    """A descriptor of the folder ``out`` names now. It stays with that folder wherever the
    folder is moved, so ``what_became_of`` can tell later whether ``out`` still names it.
    None where folders cannot be opened (Windows): there is then no telling."""
    try:
        return os.open(out, os.O_RDONLY)
    except OSError:
        return None


def what_became_of(out: Path, descriptor: int | None) -> tuple[str, str | None] | None:
    """None while ``out`` still names the folder that ``descriptor`` was opened on (or there
    is no descriptor). Otherwise ("deleted", None), or ("moved", where the folder is now),
    where is None if the system cannot say (Linux says, through /proc). "moved" also covers
    a path that no longer leads there: a symbolic link pointed elsewhere, a folder
    replaced by another of the same name, a folder in the path renamed."""
    if descriptor is None:
        return None
    held = os.fstat(descriptor)
    try:
        named = os.stat(out)
        if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return None
    except OSError:  # nothing there any more
        pass
    if held.st_nlink == 0:  # a deleted folder has no name left
        return "deleted", None
    try:
        return "moved", os.readlink(f"/proc/self/fd/{descriptor}")
    except OSError:
        return "moved", None


@contextlib.contextmanager
def reading_run_folder(out: Path):
    """Hold a *shared* lock on the folder ``out`` while a command reads the run in it and
    writes its own files beside it (analyze: analysis.json and figures/). Meanwhile no run
    can start training there: a ``--force`` would delete the files being read, and the
    figures of the old run would land in the new one. Raises ``FolderInUse`` if a run is
    training there now. Where there are no file locks, nothing is locked."""
    descriptor = None
    if fcntl is not None:
        try:
            descriptor = os.open(out, os.O_RDONLY)
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise FolderInUse(in_use(out)) from None
        except OSError:  # no such folder (the reader will say so), or no locks here
            if descriptor is not None:
                os.close(descriptor)
            descriptor = None
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)  # closing releases the lock


def in_use_by_another_process(out: Path) -> str | None:
    """Why ``out`` cannot be used now (``FolderInUse``'s message), or None: for a sweep or a
    report, to tell a run that is training from one that stopped. It takes a *shared* lock
    for an instant, which only a training run's exclusive lock refuses, so two such checks
    never mistake each other for a run."""
    folder = Path(out).resolve()
    if fcntl is None or not folder.is_dir() or folder in _locked_folders:
        return None
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return in_use(out)
    except OSError:
        return None
    finally:
        os.close(descriptor)  # closing releases the shared lock
    return None


def in_use(out: Path) -> str:
    """'runs/x is in use: process 123 is training in it now' (the process, where known), or
    '... process 123 is reading it now' for an analysis's shared lock."""
    folder = Path(out).resolve()
    holder, reader = lock_holder(folder), lock_holder(folder, kind="READ")
    if holder is None and reader is not None:
        return f"{out} is in use: process {reader} is reading it now (an analysis, say)"
    who = f"process {holder}" if holder else "another process"
    return f"{out} is in use: {who} is training in it now"


def lock_holder(folder: Path, kind: str = "WRITE") -> int | None:
    """The id of a process holding ``folder``'s exclusive lock (``kind`` "WRITE": a run
    training) or a shared one ("READ": an analysis, or a check for an instant), from
    Linux's /proc/locks (a line per lock: "1: FLOCK ADVISORY WRITE <pid>
    <major>:<minor>:<inode> ...", the device's numbers in hex); None elsewhere."""
    try:
        status = os.stat(folder)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    where = (f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:"
             f"{status.st_ino}")
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1:4] == ["FLOCK", "ADVISORY", kind] \
                and fields[5] == where:
            return int(fields[4])
    return None
