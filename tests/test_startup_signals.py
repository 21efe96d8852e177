"""Ctrl-C while a ``python -m tinygrok.<command>`` still imports: exit 130, no traceback."""

import signal
import subprocess
import sys

import pytest

from tinygrok import startup_signals


def python_with_sigint_default(code):
    """Run ``code`` in a fresh Python whose SIGINT has its usual disposition (a process
    started in the background inherits it ignored, as CI may start the tests)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_commands_imports_exits_quietly(signal_number):
    # As ``python -m`` does while it imports the package; then a signal arrives in the
    # middle of the imports that follow (numba's, here).
    result = python_with_sigint_default(
        "import sys; sys.argv[0] = '-m'; import tinygrok, os\n"
        f"os.kill(os.getpid(), {int(signal_number)})\n"
        "import numba\n"
        "print('still running')")
    assert result.returncode == 128 + signal_number, result
    assert result.stderr == "" and "still running" not in result.stdout


def test_other_imports_keep_pythons_ctrl_c():
    result = python_with_sigint_default(
        "import signal, tinygrok\n"
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    assert result.stdout.strip() == "True", result


def test_restore_puts_the_handlers_back_and_honours_a_signal_python_dropped(monkeypatch):
    real_getsignal = signal.getsignal
    before = {number: real_getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    # As at a fresh start, whatever pytest has installed: Python's default handling.
    monkeypatch.setattr(signal, "getsignal", lambda number: {
        signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}[number])
    try:
        startup_signals.exit_quietly_on_signals()
        assert real_getsignal(signal.SIGINT) is startup_signals._exit_quietly
        assert real_getsignal(signal.SIGTERM) is startup_signals._exit_quietly
        startup_signals.restore_handlers()
        assert {number: real_getsignal(number) for number in before} == before
        startup_signals.exit_quietly_on_signals()
        # a signal whose SystemExit was raised inside a callback from C, printed and dropped
        monkeypatch.setattr(startup_signals, "_received", [signal.SIGINT])
        with pytest.raises(SystemExit) as stop:
            startup_signals.restore_handlers()
        assert stop.value.code == 130
        assert {number: real_getsignal(number) for number in before} == before
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
