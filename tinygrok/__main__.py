"""The ``tinygrok`` command: the four commands under one name.

    tinygrok run --task x_div_y          # the same as python -m tinygrok.run --task x_div_y
    tinygrok analyze runs/x_div_y-s0
    python -m tinygrok sweep --seeds 0-2   # where the console script is not on PATH

``pip install`` puts a ``tinygrok`` script on PATH (setup.cfg's console_scripts) that calls
``main``; ``python -m tinygrok`` does the same. Each command is also a module of its own,
``python -m tinygrok.run`` and so on, which is how the docs and the commands' own hints
spell them. Given no command, it lists the four and exits with 2, as for any command line
that names none.
"""

import sys

import click

from tinygrok import startup_signals

COMMANDS = (
    ("run", "train one run (--task x_div_y is the paper's experiment)"),
    ("analyze", "phases, attention and Fourier analysis of a run, with figures"),
    ("sweep", "several tasks and seeds, one run each, resumable"),
    ("report", "the paper's Table 1 and Figure 1 from a sweep's runs"),
)


def command_group() -> click.Group:
    """The four commands' click commands as subcommands of one group."""
    from tinygrok import analyze, report, run, sweep  # NumPy, Numba, matplotlib: the slow part

    group = click.Group("tinygrok", help="Train a transformer until it groks, and look inside. "
                        "Each command takes --help.",
                        context_settings={"help_option_names": ["-h", "--help"]})
    for name, module in (("run", run), ("analyze", analyze), ("sweep", sweep),
                         ("report", report)):
        group.add_command(module.main, name=name)
    return group


def list_commands() -> int:
    print("tinygrok has four commands; each takes --help:\n", file=sys.stderr)
    for name, what in COMMANDS:
        print(f"  tinygrok {name:<8} {what}", file=sys.stderr)
    print("\n(or python -m tinygrok.NAME, where the tinygrok script is not on PATH)",
          file=sys.stderr)
    return 2  # as a command line that named no command: a usage error


def main(prog_name: str = "tinygrok") -> int:
    """Run the command the arguments name. Ctrl-C during the imports exits at once with
    130 and no traceback, as for ``python -m tinygrok.run`` (startup_signals.py)."""
    if len(sys.argv) < 2:
        return list_commands()
    startup_signals.exit_quietly_on_signals()
    group = command_group()
    startup_signals.restore_handlers()  # the imports are done: Ctrl-C is Python's again
    return group.main(prog_name=prog_name)


if __name__ == "__main__":
    sys.exit(main(prog_name="python -m tinygrok"))
