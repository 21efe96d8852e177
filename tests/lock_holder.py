"""Another process holding a folder's flock, for tests of what must wait for it or refuse.

The holder takes the lock, says so on its standard output, and keeps it until the test ends
(it is killed then). Reading that line waits at most ``timeout`` seconds, so a holder that
cannot take the lock fails the test instead of hanging the suite.
"""
import contextlib
import select
import subprocess
import sys

HOLD = ("import fcntl, os, sys, time; fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), "
        "fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)")


@contextlib.contextmanager
def locked_by_another_process(folder, timeout=60):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)],
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
