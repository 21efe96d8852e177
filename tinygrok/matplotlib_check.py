"""Refuse a matplotlib that cannot start, before a command does any work.

tinygrok draws its figures as ``matplotlib.figure.Figure`` objects and needs no backend
(no window, no display). matplotlib still reads the MPLBACKEND environment variable when
it is imported, and raises ValueError for a name it does not know: ``analyze`` and
``report`` would end in a traceback, after their analysis. They ask here first, and turn
the answer into one line and exit status 2.
"""

import importlib
import os


def matplotlib_problem() -> str | None:
    """None if matplotlib imports; else one line that says what is wrong and what to do."""
    try:
        importlib.import_module("matplotlib")
    except ValueError as error:  # what matplotlib raises for a setting it does not accept
        backend = os.environ.get("MPLBACKEND")
        if backend is not None and "backend" in str(error):
            return (f"MPLBACKEND={backend!r} is not a backend matplotlib knows (Agg is one); "
                    f"unset it: tinygrok's figures need no backend")
        return f"matplotlib cannot start: {error}"
    return None
