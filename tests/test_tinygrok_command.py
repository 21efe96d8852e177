"""The ``tinygrok`` command (``tinygrok/__main__.py``): the four commands under one name,
as the console script pip installs and as ``python -m tinygrok``."""

import configparser
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import click
import pytest

from tinygrok import __main__ as tinygrok_command
from tinygrok import startup_signals

# pip puts the script beside this Python (a virtualenv's bin/), or on PATH (--user)
SCRIPT = os.path.join(sysconfig.get_path("scripts"), "tinygrok")
if not os.path.exists(SCRIPT):
    SCRIPT = shutil.which("tinygrok") or SCRIPT
SPELLINGS = {"tinygrok": [SCRIPT], "python -m tinygrok": [sys.executable, "-m", "tinygrok"]}


def tinygrok(spelling, *args, cwd=None):
    return subprocess.run([*SPELLINGS[spelling], *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_the_console_script_is_declared_and_installed():
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).parents[1] / "setup.cfg")
    declared = setup["options.entry_points"]["console_scripts"].split()
    assert declared == ["tinygrok", "=", "tinygrok.__main__:main"]
    scripts = importlib.metadata.entry_points(group="console_scripts")  # as installed
    assert [s.value for s in scripts if s.name == "tinygrok"] == ["tinygrok.__main__:main"]
    assert os.access(SCRIPT, os.X_OK), f"pip installs the tinygrok script at {SCRIPT}"


def test_the_command_runs_with_pythons_own_ctrl_c(monkeypatch):
    """The quiet exit on Ctrl-C lasts only while the commands are imported: once a command
    runs, Ctrl-C must reach its own handling (a run saves a checkpoint)."""
    during, real_getsignal = [], signal.getsignal
    group = click.Group("tinygrok")
    group.add_command(click.Command("probe", callback=lambda: during.append(
        real_getsignal(signal.SIGINT))))
    monkeypatch.setattr(tinygrok_command, "command_group", lambda: group)
    monkeypatch.setattr(sys, "argv", ["tinygrok", "probe"])
    # as at a fresh start, whatever pytest has installed: Python's default handling
    monkeypatch.setattr(startup_signals.signal, "getsignal", lambda number: {
        signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}[number])
    before = real_getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stop:
            tinygrok_command.main()
    finally:
        monkeypatch.setattr(startup_signals.signal, "getsignal", real_getsignal)
        startup_signals.restore_handlers()  # whatever main left, put back
        signal.signal(signal.SIGINT, before)
    assert stop.value.code == 0
    assert during and during[0] is not startup_signals._exit_quietly


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_no_command_lists_the_four_and_is_a_usage_error(spelling):
    result = tinygrok(spelling)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    listed = [line.split()[0] for line in result.stderr.split("Commands:\n")[1].splitlines()
              if line.strip()]
    assert listed == ["run", "analyze", "sweep", "report"]  # in the order of the work
    assert result.stderr.startswith(f"Usage: {spelling} [OPTIONS] COMMAND [ARGS]...")
    assert result.stderr == tinygrok(spelling, "--help").stdout  # the same list either way


def test_each_listed_command_is_its_modules_own_click_command():
    group = tinygrok_command.command_group()
    assert list(group.commands) == list(tinygrok_command.COMMANDS)
    for name, command in group.commands.items():
        module = importlib.import_module(f"tinygrok.{name}")
        assert command is module.main and isinstance(command, click.Command)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_bad_option_is_a_usage_error_under_the_commands_own_name(spelling):
    result = tinygrok(spelling, "run", "--task", "x_times_y")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    assert result.stderr.startswith(f"Usage: {spelling} run [OPTIONS]\n")
    assert result.stderr.rstrip().splitlines()[-1].startswith(
        "Error: Invalid value for '--task': 'x_times_y' is not one of")


def test_an_unknown_command_is_named():
    result = tinygrok("tinygrok", "train", "--task", "x_div_y")
    assert result.returncode == 2 and "Error: No such command 'train'." in result.stderr


def test_a_run_through_the_group_is_the_run_its_module_trains(tmp_path):
    """The group hands every option to ``python -m tinygrok.run`` unchanged: same files,
    same numbers; and ``tinygrok analyze`` then reads the run."""
    options = ["--task", "x_plus_y", "--steps", "20", "--threads", "1"]
    by_group = tinygrok("tinygrok", "run", *options, "--out", str(tmp_path / "group"))
    by_module = subprocess.run([sys.executable, "-m", "tinygrok.run", *options, "--out",
                                str(tmp_path / "module")], capture_output=True, text=True,
                               timeout=300)
    assert by_group.returncode == 0 == by_module.returncode, (by_group, by_module)
    assert ((tmp_path / "group" / "metrics.csv").read_bytes()
            == (tmp_path / "module" / "metrics.csv").read_bytes())
    assert (tmp_path / "group" / "summary.json").is_file()
    analysed = tinygrok("python -m tinygrok", "analyze", str(tmp_path / "group"), "--no-figures")
    assert analysed.returncode == 0, analysed
    assert (tmp_path / "group" / "analysis.json").is_file()
