"""``python -m tinygrok``: there is no single command; this lists the four there are."""

import sys

COMMANDS = (
    ("run", "train one run: python -m tinygrok.run --task x_div_y"),
    ("analyze", "phases, attention and Fourier analysis of a run, with figures"),
    ("sweep", "several tasks and seeds, one run each, resumable"),
    ("report", "the paper's Table 1 and Figure 1 from a sweep's runs"),
)


def main() -> int:
    print("tinygrok has four commands; each takes --help:\n", file=sys.stderr)
    for name, what in COMMANDS:
        print(f"  python -m tinygrok.{name:<8} {what}", file=sys.stderr)
    return 2  # as a command line that named no command: a usage error


if __name__ == "__main__":
    sys.exit(main())
