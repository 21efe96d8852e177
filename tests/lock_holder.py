"""Another process holding a folder's flock, for tests of what must wait for it or refuse.

The holder takes the lock (exclusive, as a training run does, or shared, as a folder check
does), says so on its standard output, and keeps it for ``seconds`` or until the test ends
(it is killed then). Reading that line waits at most ``timeout`` seconds, so a holder that
cannot take the lock fails the test instead of hanging the suite.
"""
import contextlib
import select
import subprocess
import sys

HOLD = ("import fcntl, os, sys, time; fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), "
        "getattr(fcntl, sys.argv[2])); print('locked', flush=True); "
        "time.sleep(float(sys.argv[3]))")


@contextlib.contextmanager
def locked_by_another_process(folder, shared=False, seconds=120, timeout=60):
    """Yield the holder (a ``subprocess.Popen``; its ``pid`` is what error messages name)
    once it holds ``folder``'s lock."""
    kind = "LOCK_SH" if shared else "LOCK_EX"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), kind, str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([holder.stdout], [], [], timeout)
        assert ready and holder.stdout.readline().strip() == "locked", \
            f"the holder did not lock {folder} within {timeout} s"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
