"""The ``tinygrok`` command: the four commands under one name.

    tinygrok run --task x_div_y          # the same as python -m tinygrok.run --task x_div_y
    tinygrok analyze runs/x_div_y-s0
    python -m tinygrok sweep --seeds 0-2   # where the console script is not on PATH

``pip install`` puts a ``tinygrok`` script on PATH (setup.cfg's console_scripts) that calls
``main``; ``python -m tinygrok`` does the same. Each command is also a module of its own,
``python -m tinygrok.run`` and so on, which is how the docs and the commands' own hints
spell them. Given no command, it shows its help (the four commands) and exits with 2, as
for any command line that names none.
"""

import sys

import click

from tinygrok import startup_signals

COMMANDS = ("run", "analyze", "sweep", "report")  # in the order of the work


class CommandsInOrder(click.Group):
    """A click group whose help lists its commands in the order they were added (click's
    own lists them alphabetically: analyze, report, run, sweep)."""

    def list_commands(self, ctx):
        return list(self.commands)


def command_group() -> click.Group:
    """The four commands' own click commands, as the subcommands of one group."""
    from tinygrok import analyze, report, run, sweep  # NumPy, Numba, matplotlib: the slow part

    modules = {"run": run, "analyze": analyze, "sweep": sweep, "report": report}
    group = CommandsInOrder(
        "tinygrok", help="Train a transformer until it groks, and look inside. Each command "
        "takes --help; each is also python -m tinygrok.NAME.",
        context_settings={"help_option_names": ["-h", "--help"]})
    for name in COMMANDS:
        group.add_command(modules[name].main, name=name)
    return group


def main(prog_name: str = "tinygrok") -> int:
    """Run the command the arguments name; given none, list the commands and return 2, as
    for any command line that names no command. Ctrl-C during the imports exits at once
    with 130 and no traceback, as for ``python -m tinygrok.run`` (startup_signals.py)."""
    startup_signals.exit_quietly_on_signals()
    group = command_group()
    startup_signals.restore_handlers()  # the imports are done: Ctrl-C is Python's again
    if len(sys.argv) < 2:
        with click.Context(group, info_name=prog_name, **group.context_settings) as context:
            click.echo(group.get_help(context), err=True)
        return 2
    return group.main(prog_name=prog_name)


if __name__ == "__main__":
    sys.exit(main(prog_name="python -m tinygrok"))
