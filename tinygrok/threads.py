"""How many CPU threads tinygrok uses: one number for BLAS and for the Numba kernels.

NumPy's matrix products run in OpenBLAS's threads and the kernels in Numba's; both pools
share the same cores, so ``set_threads`` gives them the same count (more threads than
cores only makes them wait for each other). Results are bit-identical for a given thread
count, which is why ``config.json`` records it. The kernels give the same bits at any
thread count; the count that matters is BLAS's, which is what ``current_threads`` reports.

Inside the training loop the kernels run on ONE thread (``kernels_on_one_thread``).
After each matrix product OpenBLAS's worker threads keep spinning on the other cores,
waiting for the next product (that is what makes the next one start at once). A kernel's
extra threads, woken then, find every core busy: on the 2-core machine a GELU over
(9312, 512) that takes 1.2 ms on two idle cores took 2.3 ms right after a product, at two
threads as at one. Each parallel launch also pays the wake-up of the other thread (about
60 us there, against 2 us at one thread), and a training step launches about 50 kernels.
Measured in one process taking turns, whole training steps took 0.93-0.97 of the time
with the kernels on one thread, and evaluations 0.95-1.01 (benchmarks/README.md, "A
seventh session").
"""

import contextlib
import os
import time

import numba
from threadpoolctl import threadpool_info, threadpool_limits


def available_threads() -> int:
    """The most threads a count may ask for: Numba's NUMBA_NUM_THREADS (by default the
    cores; it can be set higher)."""
    return numba.config.NUMBA_NUM_THREADS


def machine_cores() -> int:
    """The cores this process may run on (fewer than the machine's under a CPU limit)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_chosen = None  # the count set_threads last chose


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` threads and return the count. The default is one per core: a
    NUMBA_NUM_THREADS set above the cores (for another program, say) would otherwise make
    every run oversubscribe them (``busy_machine_note`` says how much that costs)."""
    global _chosen
    if threads is None:
        threads = min(available_threads(), machine_cores())
    if not 1 <= threads <= available_threads():
        limit = ("NUMBA_NUM_THREADS" if "NUMBA_NUM_THREADS" in os.environ
                 else "the cores of this machine")
        raise ValueError(f"threads must be between 1 and {available_threads()} ({limit}), "
                         f"got {threads}")
    threadpool_limits(limits=threads, user_api="blas")
    numba.set_num_threads(threads)
    _chosen = threads
    return threads


def current_threads() -> int:
    """The number of threads the matrix products use, which fixes the results: what
    ``set_threads`` chose, or else what the BLAS library uses by default (the largest
    count if several are loaded; if none is found, ``available_threads()``, which
    NUMBA_NUM_THREADS may set above the cores)."""
    if _chosen is not None:
        return _chosen
    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(counts) if counts else available_threads()


@contextlib.contextmanager
def kernels_on_one_thread():
    """Run the Numba kernels on one thread inside the ``with`` block, BLAS unchanged (the
    module docstring says why); the previous count comes back afterwards."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def other_running_threads(loadavg: str = "/proc/loadavg", samples: int = 5,
                          interval: float = 0.02) -> int | None:
    """How many threads besides the calling one are running or waiting for a CPU right
    now, or None where the system does not say (no ``/proc/loadavg``: not Linux). Called
    before training starts, when this process runs on its main thread alone, that is the
    other programs' threads.

    Linux's /proc/loadavg holds "running/total" threads in its fourth field, counting the
    thread that reads it. The count is of this instant, not an average: the load averages
    in the same file still show a run that ended a minute ago. The least of a few samples,
    ``interval`` seconds apart, so that a thread passing through does not count.
    """
    counts = []
    for sample in range(samples):
        if sample:
            time.sleep(interval)
        try:
            with open(loadavg) as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(running - 1)  # less the thread reading the file
    return max(0, min(counts))


def busy_machine_note(threads: int, others: int | None = None, cores: int | None = None,
                      resuming: bool = False) -> str | None:
    """A warning when programs other than this one hold cores that ``threads`` threads
    need, or None.

    BLAS's threads split every matrix product and wait for one another at its end. When one
    of them has to share its core with another program, each product waits until the
    scheduler gives that thread a turn. Measured on the 2-core machine beside another
    single-threaded tinygrok run, two rounds taking turns: 60 training steps (and the
    start-up) took 36.9 and 69.2 s with 2 threads, against 5.4 and 10.1 s with 1.
    ``others``: threads of other programs that are running (default:
    ``other_running_threads()``); ``cores``: default, this machine's. ``resuming``: the
    count is the resumed run's own, which no other count continues exactly, so the note
    suggests none.

    More threads than cores (``--threads 8`` on 2 cores, allowed where NUMBA_NUM_THREADS is
    8) is the same trap without another program: 100 default steps took 248 s with 8
    threads and 4 s with 2, twice each, taking turns, on the 2-core machine.
    """
    cores = cores or machine_cores()
    if threads > cores:
        return (f"note: {threads} threads on this machine's {cores} cores: each matrix product "
                f"waits for threads that share a core, and steps can take many times longer "
                f"(100 steps took 248 s with 8 threads on 2 cores, 4 s with 2); "
                + busy_machine_remedy(cores, resuming))
    others = other_running_threads() if others is None else others
    if others is None:
        return None
    free = max(1, cores - others)
    if threads <= free:
        return None
    return (f"note: other programs keep {min(others, cores)} of this machine's {cores} cores "
            f"busy. With {threads} threads each matrix product waits for a core that another "
            f"program holds, and steps can take several times longer; "
            + busy_machine_remedy(free, resuming))


def busy_machine_remedy(threads: int, resuming: bool) -> str:
    """The end of ``busy_machine_note``: what to do about it (use ``threads``)."""
    if resuming:
        return ("a resumed run keeps the thread count it was started with, the only one "
                "that continues it exactly")
    return (f"--threads {threads} avoids that (another thread count gives slightly different "
            f"numbers)")
