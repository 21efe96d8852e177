"""A command's terminal: the signals that stop its work, and output that may go away.

A run prints a progress bar for minutes; meanwhile the terminal can close (an ssh session
drops) or the reader of a pipe can quit (``python -m tinygrok.run | head``).

- The closed terminal sends SIGHUP. Like Ctrl-C and SIGTERM, it stops a run at the end of
  its step with a checkpoint, and a sweep stops its runs that way (``stop_signals``).
- A write to the terminal or pipe then fails (EIO, EPIPE), and Python would end the command
  with that error: losing the steps since the last checkpoint, or, in a sweep, leaving its
  runs without the sweep that stops them. The run and sweep commands print through
  ``show`` instead: a line that cannot be written is dropped, and the work goes on.
"""

import signal

import click


def stop_signals() -> list[int]:
    """The signals that stop a run, with a checkpoint at the step it was in: SIGINT (Ctrl-C),
    SIGTERM (``kill``, a job scheduler) and, where the system has it, SIGHUP (the terminal
    was closed, an ssh session dropped). SIGHUP only if this process does not ignore it: a
    run started under ``nohup`` trains on when its terminal goes away. SIGINT is caught even
    when the process started with it ignored (as a shell script's ``cmd &`` starts it),
    because that is how a sweep stops its runs."""
    stops = [signal.SIGINT, signal.SIGTERM]
    hangup = getattr(signal, "SIGHUP", None)  # Windows has none
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
        stops.append(hangup)
    return stops


def show(message: str = "", err: bool = False) -> None:
    """``click.echo(message, err=err)``, unless the terminal or pipe has gone: then the line
    is dropped, and so will every later one be."""
    try:
        click.echo(message, err=err)
    except OSError:
        pass
