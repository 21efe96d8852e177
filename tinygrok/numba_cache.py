"""Where Numba keeps the compiled kernels, when neither of its own places can be written.

Every kernel is compiled with ``cache=True``: the first run compiles them (10-20 s), later
ones load them (half a second). Numba keeps them next to the source, in
``tinygrok/__pycache__``, or, where that folder cannot be written (a read-only install),
in the user's cache folder (``~/.cache/numba`` on Linux). Where neither can be written (a
read-only install run by a user without a writable home, as in some containers), Numba
does not fall back to compiling each time: it refuses to define the kernels at all, and
``import tinygrok.train`` ends in "RuntimeError: cannot cache function ...: no locator
available". In that case only, ``use_a_temporary_cache_if_needed`` points Numba at a folder
of the system's temporary directory. A ``NUMBA_CACHE_DIR`` you set is always left alone.

Numba writes each cached file whole (a temporary name, then a rename), but a file can
still be damaged from outside: cut short by a crash of the filesystem, emptied by hand.
Numba then fails with pickle's error ("EOFError: Ran out of input") instead of compiling
again; ``train.warm_up_kernels`` turns that into ``DamagedKernelCache``, which says which
folder to clear.
"""

import os
import shlex
import tempfile
from pathlib import Path


def can_write_into(folder) -> bool:
    """Can a file be made in ``folder`` (created if missing)? Numba's own test."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def use_a_temporary_cache_if_needed() -> str | None:
    """Set NUMBA_CACHE_DIR to a temporary folder if Numba could cache the kernels nowhere;
    return that folder, or None when nothing needed changing."""
    if os.environ.get("NUMBA_CACHE_DIR") or can_write_into(Path(__file__).parent / "__pycache__"):
        return None
    import numba.core.config
    from numba.misc.appdirs import AppDirs  # Numba's user cache folder, as Numba finds it

    if can_write_into(AppDirs(appname="numba", appauthor=False).user_cache_dir):
        return None
    user = os.environ.get("USER") or str(os.getuid() if hasattr(os, "getuid") else "")
    folder = os.path.join(tempfile.gettempdir(), f"tinygrok-numba-cache-{user}")
    os.environ["NUMBA_CACHE_DIR"] = folder  # for the processes this one starts (a sweep's)
    numba.core.config.CACHE_DIR = folder  # Numba read its settings when it was imported
    return folder


def kernel_cache_folder() -> str:
    """The folder where Numba keeps tinygrok's compiled kernels (the same for all of them:
    the package's ``__pycache__``, or a folder for it in the user's or NUMBA_CACHE_DIR's
    cache)."""
    from tinygrok.adamw import _adamw_update  # any kernel: they all cache in one folder

    return _adamw_update.stats.cache_path


class DamagedKernelCache(RuntimeError):
    """A cached kernel could not be read: ``pickle``'s error, with the folder to clear."""

    def __init__(self, error: Exception):
        self.folder = kernel_cache_folder()
        folder = shlex.quote(self.folder)
        super().__init__(f"Numba's cache of compiled kernels is damaged ({type(error).__name__}: "
                         f"{error}); delete the cached kernels (rm {folder}/*.nbi "
                         f"{folder}/*.nbc) and run again: they are compiled anew")
