"""Ctrl-C in the first half second of a command, while Python still imports NumPy and Numba.

Python's own Ctrl-C raises KeyboardInterrupt wherever the import happens to be, and the
command dies with a long traceback through NumPy's or Numba's insides (a helper that sent
SIGINT to ``python -m tinygrok.run`` at random moments of its first 0.8 s saw one in
about half of the tries). Nothing has been written by then, so there is nothing to save:
the command should just stop, with the shell's exit code.

So when tinygrok is imported by ``python -m tinygrok.<command>`` (Python sets
``sys.argv[0]`` to "-m" while it looks for the module; ``__init__.py`` checks it),
``exit_quietly_on_signals`` makes SIGINT and SIGTERM exit at once with code 128 + the
signal's number (130, 143) and no traceback. Each command calls ``restore_handlers`` once
its imports are done and before it starts, so that its own handling of Ctrl-C (saving a
checkpoint, stopping a sweep's runs) sees Python's usual KeyboardInterrupt.
"""

import signal

_received = []  # signals that arrived while the quiet handlers were in place
_previous = {}


def _exit_quietly(number, frame):
    _received.append(number)
    raise SystemExit(128 + number)


def exit_quietly_on_signals() -> None:
    """Exit with 128 + the signal's number on SIGINT or SIGTERM, if Python's default
    handling is in place (a process started with SIGINT ignored keeps it ignored)."""
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for number, default in defaults.items():
        if signal.getsignal(number) is default:
            _previous[number] = signal.signal(number, _exit_quietly)


def restore_handlers() -> None:
    """Put back the handlers that were there before, then exit if a signal arrived where
    Python could not stop (an exception raised inside a callback from C code is printed
    and dropped: the signal is remembered here, so it still ends the command)."""
    for number, handler in _previous.items():
        signal.signal(number, handler)
    _previous.clear()
    if _received:
        raise SystemExit(128 + _received[0])
