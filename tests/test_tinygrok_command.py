"""The ``tinygrok`` command (``tinygrok/__main__.py``): the four commands under one name,
as the console script pip installs and as ``python -m tinygrok``."""

import importlib.metadata
import os
import subprocess
import sys
import sysconfig

import click
import pytest

from tinygrok import __main__ as tinygrok_command

SCRIPT = os.path.join(sysconfig.get_path("scripts"), "tinygrok")
SPELLINGS = {"tinygrok": [SCRIPT], "python -m tinygrok": [sys.executable, "-m", "tinygrok"]}


def tinygrok(spelling, *args, cwd=None):
    return subprocess.run([*SPELLINGS[spelling], *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_the_console_script_is_declared_and_installed():
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert [s.value for s in scripts if s.name == "tinygrok"] == ["tinygrok.__main__:main"]
    assert os.access(SCRIPT, os.X_OK), f"pip installs the tinygrok script at {SCRIPT}"


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_no_command_lists_the_four_and_is_a_usage_error(spelling):
    result = tinygrok(spelling)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    for name, _ in tinygrok_command.COMMANDS:
        assert f"  tinygrok {name} " in result.stderr


def test_each_listed_command_is_its_modules_own_click_command():
    group = tinygrok_command.command_group()
    assert sorted(group.commands) == sorted(name for name, _ in tinygrok_command.COMMANDS)
    for name, command in group.commands.items():
        module = importlib.import_module(f"tinygrok.{name}")
        assert command is module.main and isinstance(command, click.Command)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_bad_option_is_one_error_line_under_the_commands_own_name(spelling):
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
