"""Ctrl-C in the first half second of a command, while Python still imports NumPy and Numba.

Python's own Ctrl-C raises KeyboardInterrupt wherever the import happens to be, and the
command dies with a long traceback through NumPy's or Numba's insides. Sent to
``python -m tinygrok.run`` at 40 moments spread over its first 0.8 s, SIGINT gave 15
tracebacks, and once it was lost altogether (raised inside a callback from C, which
Python can only print). Nothing has been written by then, so there is nothing to save: the
command should just stop, with the shell's exit code.

So when ``python -m`` starts one of the ``COMMANDS``, ``tinygrok/__init__.py`` (imported
first) calls ``exit_quietly_on_signals``: SIGINT and SIGTERM then exit at once with code
128 + the signal's number (130, 143) and no traceback. Each command calls
``restore_handlers`` once its imports are done and before it starts, so that its own
handling of Ctrl-C (saving a checkpoint, stopping a sweep's runs) sees Python's usual
KeyboardInterrupt. Any other program that imports tinygrok keeps Python's Ctrl-C. The
``tinygrok`` console script (``__main__.main``) does the same around its own imports.
"""

import signal
import sys

COMMANDS = ("tinygrok.run", "tinygrok.analyze", "tinygrok.report", "tinygrok.sweep",
            "tinygrok")  # the last: python -m tinygrok run ... (__main__.py)

_received = []  # signals that arrived while the quiet handlers were in place
_previous = {}


def _exit_quietly(number, frame):
    _received.append(number)
    raise SystemExit(128 + number)


def starting_a_command() -> bool:
    """Is Python importing tinygrok to start ``python -m <one of COMMANDS>``? While it
    looks for the module, Python sets ``sys.argv[0]`` to "-m", and keeps the command line
    as typed in ``sys.orig_argv``. There Python's own options come first, one letter each
    and combinable ("-u -m NAME", "-um NAME", "-mNAME"); -W and -X take a value, and -m
    ends them: what follows its module is the program's own arguments."""
    if sys.argv[:1] != ["-m"]:
        return False
    arguments = iter(getattr(sys, "orig_argv", [])[1:])
    for argument in arguments:
        if not argument.startswith("-") or argument.startswith("--"):
            continue  # a long option of Python's, or the value of one
        for position, letter in enumerate(argument[1:], start=2):
            if letter in "mWX":  # takes the rest of the argument, or the next one
                value = argument[position:] or next(arguments, "")
                if letter == "m":
                    return value in COMMANDS
                break
    return False


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
