"""Ctrl-C while a ``python -m tinygrok.<command>`` still imports: exit 130, no traceback."""

import os
import signal
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from tinygrok import startup_signals


def run_python(args, tmp_path, site=None):
    """Run a fresh Python with ``args``, SIGINT at its usual disposition (a process started
    in the background inherits it ignored, as CI may start the tests), and the folder
    ``tmp_path`` first on its path; ``site``: the source of a sitecustomize.py there,
    which Python runs before anything else."""
    if site is not None:
        (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(site))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=tmp_path,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def console_script() -> str:
    """The ``tinygrok`` script that pip installed beside this Python (setup.cfg)."""
    return os.path.join(sysconfig.get_path("scripts"), "tinygrok")


@pytest.mark.parametrize("command", [["-m", "tinygrok.run"], ["-m", "tinygrok", "run"],
                                     ["CONSOLE_SCRIPT", "run"]],
                         ids=["python -m tinygrok.run", "python -m tinygrok run", "tinygrok run"])
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_a_command_imports_numba_exits_quietly(tmp_path, signal_number, command):
    command = [console_script() if part == "CONSOLE_SCRIPT" else part for part in command]
    # The signal arrives in the middle of the command's imports: when Python looks for numba.
    result = run_python([*command, "--help"], tmp_path, site=f"""
        import os, sys

        class SignalWhenNumbaIsImported:
            def find_spec(self, name, path=None, target=None):
                if name == "numba":
                    os.kill(os.getpid(), {int(signal_number)})
                return None

        sys.meta_path.insert(0, SignalWhenNumbaIsImported())
        """)
    assert result.returncode == 128 + signal_number, result
    assert result.stderr == "" and "Usage" not in result.stdout  # no traceback, no help


def test_another_program_run_with_dash_m_keeps_pythons_ctrl_c(tmp_path):
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("import tinygrok\n")
    (tmp_path / "mylab" / "experiment.py").write_text(textwrap.dedent("""
        import os, signal, time
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            print("my own Ctrl-C handling")
        """))
    # its own arguments may name a tinygrok command: they are not Python's -m
    result = run_python(["-m", "mylab.experiment", "-m", "tinygrok.run"], tmp_path)
    assert result.returncode == 0 and result.stdout == "my own Ctrl-C handling\n", result


@pytest.mark.parametrize("typed, expected", [
    (["python", "-m", "tinygrok.run", "--steps", "9"], True),
    (["python", "-m", "tinygrok", "run", "--steps", "9"], True),  # __main__.py's group
    (["python", "-mtinygrok.sweep"], True),
    (["python", "-um", "tinygrok.run"], True),  # flags combined with -m
    (["python", "-W", "ignore", "-Xdev", "-m", "tinygrok.report"], True),
    (["python", "-Wm", "-m", "tinygrok.run"], True),  # "m" as -W's value, not -m
    (["python", "-X", "importtime", "-m", "tinygrok.analyze"], True),
    (["python", "-m", "tinygrok.plots"], False),  # not one of the commands
    (["python", "-m", "mylab.exp", "-m", "tinygrok.run"], False),  # the program's arguments
    (["python", "--check-hash-based-pycs", "default", "-m", "tinygrok.run"], True),
])
def test_which_command_lines_start_a_command(monkeypatch, typed, expected):
    monkeypatch.setattr(sys, "argv", ["-m"])  # as while Python looks for the module
    monkeypatch.setattr(sys, "orig_argv", typed)
    assert startup_signals.starting_a_command() is expected


def test_a_script_given_dash_m_as_its_argument_is_not_a_command(monkeypatch):
    """sys.argv[0] is "-m" only while Python looks for a module; a script's argv[0] is its
    path, whatever its arguments say."""
    monkeypatch.setattr(sys, "argv", ["script.py", "-m", "tinygrok.run"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "script.py", "-m", "tinygrok.run"])
    assert startup_signals.starting_a_command() is False


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
        # a signal whose SystemExit was raised inside a callback from C, printed and dropped:
        # the handler itself remembers it
        monkeypatch.setattr(startup_signals, "_received", [])
        with pytest.raises(SystemExit):
            startup_signals._exit_quietly(signal.SIGINT, None)
        with pytest.raises(SystemExit) as stop:
            startup_signals.restore_handlers()
        assert stop.value.code == 130
        assert {number: real_getsignal(number) for number in before} == before
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
