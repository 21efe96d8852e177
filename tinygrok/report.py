"""``python -m tinygrok.report FOLDER``: the paper's Table 1 and Figure 1 from many runs.

    python -m tinygrok.sweep --out runs/paper ...   # train the runs
    python -m tinygrok.report runs/paper            # -> runs/paper/report.md, figure1.png

Every run directory under FOLDER (a folder with a config.json that a tinygrok run wrote)
is read and grouped by task; folders with another config.json are named in the output
("not read as runs"). ``report.md`` holds:

- **Table 1**: per task, the final train and validation accuracy and the step at which
  validation accuracy first exceeds 99% (``step_val_acc_99``), each as mean ± standard
  error over the seeds with the per-seed values beside it, how many seeds grokked, and the
  paper's numbers in the next column. The standard error is std(ddof=1) / sqrt(n); with one
  seed there is none ("n/a"). A run that never reached 99% counts with its step budget, as
  the paper counts 7500 for its failed permutation runs; it is starred.
- **Figure 1** (``figure1.png``): per task, the train and validation accuracy of every seed
  on a log step axis, with a dashed line where each seed grokked.
- **The paper's claims**: the verdict of ``tinygrok.analysis`` on each claim for every run,
  read from the run's analysis.json (written by the sweep or ``python -m tinygrok.analyze``)
  or computed here if it is missing.
- **Incomplete runs** (no whole summary.json yet): listed, never averaged, each marked as
  training now (another process holds its folder's lock) or stopped.

The warnings under Table 1 (seeds trained differently, a seed found in two folders, a run
left out of Figure 1, settings off the paper's) are also printed. With no complete run
there is nothing to report: the command says so, writes nothing and exits with code 1.

Why the statistics are small pure functions: they are the part a reader must trust, so
each can be checked by hand (see tests/test_report.py).

Figures are ``matplotlib.figure.Figure`` objects, never pyplot, and this module never calls
``matplotlib.use()``: it works without a display (CI sets MPLBACKEND=Agg).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from tinygrok import runfiles
from tinygrok.config import DEFAULTS, saved_settings
from tinygrok.runfiles import read_json_object
from tinygrok.tasks import TASK_NAMES

PAPER_CITATION = (
    'Anonymous authors, "The Emergence of Order: How Attention Patterns Reveal the Mechanics '
    'of Grokking in Transformers" (paper under double-blind review), Table 1: "Performance '
    'across tasks (mean ± std error over 3 seeds)", p = 97, 7,500 steps.')

# The paper's Table 1, quoted: (mean, standard error). For permutation the paper gives no
# error for the steps, only "7500 (failed)": no seed reached 99% in its budget.
PAPER_TABLE_1 = {
    "x_plus_y": {"train_acc": (1.00, 0.00), "val_acc": (0.97, 0.01),
                 "step_val_acc_99": (2580, 110)},
    "x_minus_y": {"train_acc": (1.00, 0.00), "val_acc": (1.00, 0.00),
                  "step_val_acc_99": (4393, 33)},
    "x_div_y": {"train_acc": (1.00, 0.00), "val_acc": (1.00, 0.00),
                "step_val_acc_99": (4093, 90)},
    "permutation": {"train_acc": (0.99, 0.00), "val_acc": (0.34, 0.05),
                    "step_val_acc_99": (7500, None)},
}
PAPER_FAILED = {"permutation"}  # tasks whose steps the paper marks "(failed)"

TASK_SYMBOLS = {"x_plus_y": "x + y", "x_minus_y": "x − y", "x_div_y": "x ÷ y"}
QUANTITIES = (  # (summary.json key, column title, decimals)
    ("final_train_acc", "Train acc", 3),
    ("final_val_acc", "Val acc", 3),
    ("step_val_acc_99", "Steps to 99% val", 0),
)
PAPER_KEYS = {"final_train_acc": "train_acc", "final_val_acc": "val_acc",
              "step_val_acc_99": "step_val_acc_99"}
# config.json entries that may differ between the seeds of one task without mixing
# experiments: the seed, bookkeeping, and what follows from the task and p.
PER_RUN_SETTINGS = {"seed", "version", "threads", "vocab", "num_classes", "num_train", "num_val"}


class ReportUsageError(click.ClickException):
    """One 'Error: ...' line and exit code 2."""

    exit_code = 2


# ---- statistics (pure functions) -----------------------------------------------------------


def mean_and_standard_error(values) -> tuple[float, float | None]:
    """(mean, std(ddof=1) / sqrt(n)); the error is None for a single value.

    >>> mean_and_standard_error([1000, 1200, 1700])  # std = 360.56, / sqrt(3)
    (1300.0, 208.16659994661327)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values to average")
    mean = float(values.mean())
    if values.size == 1:
        return mean, None
    return mean, float(values.std(ddof=1) / math.sqrt(values.size))


def format_number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def format_mean_and_error(mean: float, error: float | None, decimals: int) -> str:
    """'1300 ± 208', or '1300 ± n/a' when there is no error (one seed)."""
    shown = "n/a" if error is None else format_number(error, decimals)
    return f"{format_number(mean, decimals)} ± {shown}"


def grokked_count(summaries: list[dict]) -> str:
    """'2/3 seeds grokked'."""
    grokked = sum(bool(summary.get("grokked")) for summary in summaries)
    return f"{grokked}/{len(summaries)} seeds grokked"


def differing_settings(configs: list[dict]) -> dict[str, list]:
    """{setting: its distinct values} for settings (other than the seed) that differ."""
    names = sorted({name for config in configs for name in config} - PER_RUN_SETTINGS)
    differ = {}
    for name in names:
        values = []
        for config in configs:
            if config.get(name) not in values:
                values.append(config.get(name))
        if len(values) > 1:
            differ[name] = values
    return differ


# ---- reading the runs ----------------------------------------------------------------------


@dataclass
class RunRecord:
    """What the report needs from one run directory."""

    path: Path
    config: dict
    summary: dict | None  # None: incomplete
    metrics: dict | None  # column -> array; None if metrics.csv is missing or unreadable

    @property
    def name(self) -> str:
        return Path(os.path.abspath(self.path)).name  # "." names the folder it is

    @property
    def task(self) -> str:
        return str(self.config.get("task", "unknown"))

    @property
    def seed(self) -> int:
        return self.config["seed"]  # an integer: find_run_directories checked it

    @property
    def complete(self) -> bool:
        return self.summary is not None


def find_run_directories(folder: Path) -> list[Path]:
    """Every folder under ``folder`` (itself included) whose config.json a run wrote."""
    return sorted(path.parent for path in Path(folder).rglob("config.json")
                  if is_run_config(read_json_object(path)))


def other_config_folders(folder: Path) -> list[Path]:
    """Folders under ``folder`` with a config.json that no tinygrok run wrote (another
    tool's, or a damaged one): named in the output, never read as runs."""
    return sorted(path.parent for path in Path(folder).rglob("config.json")
                  if not is_run_config(read_json_object(path)))


def is_run_config(config) -> bool:
    """What a run's config.json holds (``runfiles.is_run_config``), with an integer seed."""
    return (runfiles.is_run_config(config) and isinstance(config.get("seed"), int)
            and not isinstance(config["seed"], bool))


def read_run(path: Path) -> RunRecord:
    from tinygrok.analysis.rundir import RunDirectoryError, read_metrics
    from tinygrok.runfiles import is_summary

    try:
        metrics = read_metrics(path / "metrics.csv")
    except RunDirectoryError:
        metrics = None
    summary = read_json_object(path / "summary.json")  # a damaged one: incomplete, as for the sweep
    return RunRecord(path, read_json_object(path / "config.json") or {},
                     summary if is_summary(summary) else None, metrics)


def task_order(task: str) -> tuple:
    """The paper's order of tasks first, then any others alphabetically."""
    return (TASK_NAMES.index(task), "") if task in TASK_NAMES else (len(TASK_NAMES), task)


def group_by_task(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """{task: its runs ordered by seed}, tasks in the paper's order."""
    groups = {}
    for record in sorted(records, key=lambda r: (task_order(r.task), r.seed, r.name)):
        groups.setdefault(record.task, []).append(record)
    return groups


def task_label(task: str, records: list[RunRecord]) -> str:
    """'x + y mod 97' (the modulus of the runs), 'permutation (S5)'."""
    if task == "permutation":
        return "permutation (S5)"
    if task not in TASK_SYMBOLS:
        return task
    moduli = sorted({r.config.get("p") for r in records if r.config.get("p") is not None})
    return f"{TASK_SYMBOLS[task]} mod {'/'.join(map(str, moduli)) or 'p'}"


# ---- Table 1 -------------------------------------------------------------------------------


def task_statistics(records: list[RunRecord]) -> dict:
    """For the complete runs of one task: per quantity, the per-seed values, mean and error."""
    complete = [r for r in records if r.complete]
    statistics = {"n": len(complete), "seeds": [r.seed for r in complete],
                  "grokked": [bool(r.summary.get("grokked")) for r in complete]}
    for key, _, _ in QUANTITIES:
        values = [float(r.summary[key]) for r in complete]
        mean, error = mean_and_standard_error(values) if values else (math.nan, None)
        statistics[key] = {"values": values, "mean": mean, "error": error}
    return statistics


def ours_cell(statistics: dict, key: str, decimals: int) -> str:
    """'1300 ± 208 (1000, 1200, 1700*)': * marks a seed that did not grok (steps only)."""
    column = statistics[key]
    if not column["values"]:
        return "—"
    values = []
    for value, grokked in zip(column["values"], statistics["grokked"]):
        star = "*" if key == "step_val_acc_99" and not grokked else ""
        values.append(format_number(value, decimals) + star)
    return (f"{format_mean_and_error(column['mean'], column['error'], decimals)} "
            f"({', '.join(values)})")


def paper_cell(task: str, key: str) -> str:
    """The paper's number as printed in its Table 1 ('—' for a task it did not run)."""
    if task not in PAPER_TABLE_1:
        return "—"
    mean, error = PAPER_TABLE_1[task][PAPER_KEYS[key]]
    if key == "step_val_acc_99":
        if task in PAPER_FAILED:
            return f"{mean} (failed)"
        return f"{mean} ± {error}"
    return f"{mean:.2f} ± {error:.2f}"


def table_1(groups: dict[str, list[RunRecord]]) -> str:
    """Table 1 as a markdown table: ours beside the paper's, per task."""
    header = ["Task", "n"]
    for _, title, _ in QUANTITIES:
        header += [f"{title} (ours)", f"{title} (paper)"]
    header.append("Grokked (ours)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, records in groups.items():
        statistics = task_statistics(records)
        if statistics["n"] == 0:
            continue
        row = [task_label(task, records), str(statistics["n"])]
        for key, _, decimals in QUANTITIES:
            row += [ours_cell(statistics, key, decimals), paper_cell(task, key)]
        row.append(grokked_count([r.summary for r in records if r.complete]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def table_notes(groups: dict[str, list[RunRecord]]) -> list[str]:
    """Warnings under Table 1: seeds of one task trained differently, settings off the paper's."""
    notes = []
    for task, records in groups.items():
        configs = [saved_settings(r.config) for r in records if r.complete]
        differ = differing_settings(configs)
        if differ:
            listed = "; ".join(f"{name}: {', '.join(map(str, values))}"
                               for name, values in differ.items())
            notes.append(f"**Warning**: the {task} runs were not all trained alike ({listed}); "
                         f"their average mixes experiments. Give each setting its own folder.")
    paper = {name: value for name, value in DEFAULTS.items() if name not in ("task", "seed")}
    off = {}
    for records in groups.values():
        for record in (r for r in records if r.complete):
            for name, value in paper.items():
                if name == "p" and record.task == "permutation":
                    continue  # the permutation task has no modulus
                if name in record.config and record.config[name] != value:
                    off.setdefault(name, set()).add(record.config[name])
    if off:
        listed = ", ".join(f"{name} = {'/'.join(map(str, sorted(values, key=str)))} (paper: "
                           f"{paper[name]})" for name, values in sorted(off.items()))
        notes.append(f"Our runs differ from the paper's setup in: {listed}. Compare the numbers "
                     f"with that in mind.")
    for task, records in groups.items():
        folders = {}
        for record in (r for r in records if r.complete):
            folders.setdefault(record.seed, []).append(str(record.path))
        for seed, paths in folders.items():
            if len(paths) > 1:
                notes.append(f"**Warning**: {task} seed {seed} is in {len(paths)} folders "
                             f"({', '.join(paths)}) and each counts as a seed: copies of one "
                             f"run would shrink the standard error. Report one folder.")
    left_out = [r.name for records in groups.values() for r in records
                if r.complete and r.metrics is None]
    if left_out:
        notes.append(f"Left out of Figure 1 (their metrics.csv cannot be read): "
                     f"{', '.join(left_out)}. They are in Table 1, from their summary.json.")
    return notes


# ---- Figure 1 ------------------------------------------------------------------------------


def figure_1(groups: dict[str, list[RunRecord]]):
    """Per task a panel: train (dotted) and val (solid) accuracy of every complete seed on a
    log step axis, a dashed vertical line at each seed's step_val_acc_99 if it grokked."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from tinygrok.plots import log_steps_axis

    panels = [(task, [r for r in records if r.complete and r.metrics is not None])
              for task, records in groups.items()]
    panels = [(task, records) for task, records in panels if records]
    columns = min(2, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(6 * columns, 3.8 * rows + 0.6), layout="constrained")
    colors = figure_colors()
    for index, (task, records) in enumerate(panels):
        ax = figure.add_subplot(rows, columns, index + 1)
        for record in records:
            color = colors[record.seed % len(colors)]
            steps = record.metrics["step"]
            # train pale and dotted, validation solid: apart even where the curves cross
            ax.plot(steps, record.metrics["train_acc"], color=color, linestyle=":",
                    linewidth=1.2, alpha=0.5)
            ax.plot(steps, record.metrics["val_acc"], color=color, linewidth=1.5)
            if record.summary.get("grokked"):
                ax.axvline(record.summary["step_val_acc_99"], color=color, linestyle="--",
                           linewidth=1.5)
        log_steps_axis(ax)
        ax.set(ylim=(-0.02, 1.02), ylabel="accuracy",
               title=f"{task_label(task, records)}: "
                     f"{grokked_count([r.summary for r in records])}")
        seeds = [Line2D([], [], color=colors[r.seed % len(colors)], label=f"seed {r.seed}")
                 for r in records]
        styles = [Line2D([], [], color="gray", linestyle=":", alpha=0.5,
                         label="train (running, over each log window's batches)"),
                  Line2D([], [], color="gray", label="validation (whole split)")]
        if any(r.summary.get("grokked") for r in records):  # only a line that is drawn
            styles.append(Line2D([], [], color="gray", linestyle="--", label="val acc > 0.99"))
        ax.legend(handles=seeds + styles, fontsize=7, loc="best")
    figure.suptitle("Figure 1: training vs validation accuracy per task")
    return figure


def figure_colors() -> list:
    from matplotlib import colormaps

    return list(colormaps["tab10"].colors)


# ---- the claims ----------------------------------------------------------------------------


def run_claims(record: RunRecord, analyze_missing: bool) -> tuple[dict | None, str]:
    """(the claims section of the run's analysis, where it came from)."""
    stored = read_json_object(record.path / "analysis.json")
    if stored is not None and "claims" in stored:
        return stored["claims"], "analysis.json"
    if not analyze_missing:
        return None, "not analysed"
    from tinygrok.analysis import analyze_run, load_run

    try:
        return analyze_run(load_run(record.path)).report["claims"], "computed by the report"
    except Exception as error:  # one broken run must not hide the others
        return None, f"analysis failed ({type(error).__name__}: {error})"


def verdict(claim: dict | None) -> str:
    from tinygrok.analysis.claims import verdict_word

    if claim is None:
        return "—"
    return verdict_word(claim.get("holds"))


def claims_section(groups: dict[str, list[RunRecord]], analyze_missing: bool) -> str:
    """A table of every complete run's verdicts, a tally per claim, and the reasons."""
    from tinygrok.analysis.claims import CLAIM_TITLES

    header = ["Run", "Grokked"] + [f"{i}. {title}" for i, title in
                                   enumerate(CLAIM_TITLES.values(), start=1)] + ["Source"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    tally = {name: [] for name in CLAIM_TITLES}
    details = []
    for records in groups.values():
        for record in (r for r in records if r.complete):
            claims, source = run_claims(record, analyze_missing)
            claims = claims or {}
            row = [record.name, "yes" if record.summary.get("grokked") else "no"]
            row += [verdict(claims.get(name)) for name in CLAIM_TITLES]
            lines.append("| " + " | ".join(row + [source]) + " |")
            for number, name in enumerate(CLAIM_TITLES, start=1):
                if claims.get(name) is not None:
                    tally[name].append(claims[name].get("holds"))
                    details.append(f"- {record.name}, claim {number}: {verdict(claims[name])}"
                                   f" ({claims[name].get('reason', '')})")
    summary = []
    for number, (name, title) in enumerate(CLAIM_TITLES.items(), start=1):
        applies = [holds for holds in tally[name] if holds is not None]
        summary.append(f"- Claim {number} ({title}): holds in {sum(applies)} of {len(applies)} "
                       f"runs where it applies.")
    return "\n".join(lines + [""] + summary + ["", "<details><summary>The numbers behind each "
                     "verdict</summary>", ""] + details + ["", "</details>"])


# ---- incomplete runs -----------------------------------------------------------------------


def incomplete_section(groups: dict[str, list[RunRecord]]) -> str:
    """The runs without a whole summary.json: listed, not averaged, training or stopped."""
    from tinygrok.runfiles import in_use_by_another_process

    incomplete = [r for records in groups.values() for r in records if not r.complete]
    if not incomplete:
        return "None: every run finished."
    lines = ["These runs have no whole summary.json yet and are left out of Table 1 and "
             "Figure 1. "
             "Those training now will finish on their own; re-run the sweep (or "
             "`python -m tinygrok.run --out DIR --resume`) to finish those that stopped.",
             "", "| Run | Task | Seed | Last saved step | Step budget | Now |",
             "|---|---|---|---|---|---|"]
    for record in incomplete:
        last = "none"
        if record.metrics is not None and len(record.metrics["step"]):
            last = str(int(record.metrics["step"][-1]))
        now = "training" if in_use_by_another_process(record.path) else "stopped"
        lines.append(f"| {record.name} | {record.task} | {record.seed} | {last} | "
                     f"{record.config.get('steps', '?')} | {now} |")
    return "\n".join(lines)


# ---- the report ----------------------------------------------------------------------------


def report_markdown(groups, folder: Path, analyze_missing: bool) -> str:
    notes = table_notes(groups)
    parts = [
        f"# Grokking report: {folder}", "",
        "## Table 1: performance across tasks", "",
        table_1(groups), "",
        "Ours: mean ± standard error over seeds, SE = std(ddof=1)/√n (n/a for one seed), with "
        "the per-seed values in brackets in seed order. Train acc is measured on the whole "
        "training split after the last step; val acc is the last logged value. Steps to 99% "
        "val is the first logged step with validation accuracy above 0.99; a seed that never "
        "got there (*) counts with its step budget, as the paper counts 7500 for its failed "
        "permutation runs.", "",
        f"Paper: {PAPER_CITATION}", "",
        *[note + "\n" for note in notes],
        "## Figure 1: training vs validation accuracy", "",
        "![Figure 1](figure1.png)", "",
        "Dotted: train accuracy; solid: validation accuracy; dashed: the step where a seed's "
        "validation accuracy first exceeded 0.99.", "",
        "## The paper's claims, run by run", "",
        "Verdicts of `tinygrok.analysis.claims` (thresholds in each run's analysis.json); n/a: "
        "the claim does not apply to that run.", "",
        claims_section(groups, analyze_missing), "",
        "## Incomplete runs", "",
        incomplete_section(groups), "",
    ]
    return "\n".join(parts)


def write_report(folder: Path, out: Path, analyze_missing: bool = True) -> dict:
    """Read every run under ``folder``; write report.md and figure1.png into ``out``."""
    from tinygrok.plots import save_figure
    from tinygrok.runfiles import write_atomically

    directories = find_run_directories(folder)
    if not directories:
        raise ReportUsageError(f"{folder}: no run directories (folders with a config.json "
                               f"that a tinygrok run wrote)")
    groups = group_by_task([read_run(d) for d in directories])
    if not any(r.complete for records in groups.values() for r in records):
        raise click.ClickException(f"{folder}: none of its {len(directories)} run(s) is "
                                   f"complete yet (no whole summary.json); nothing to "
                                   f"report")
    out.mkdir(parents=True, exist_ok=True)
    figure_path = out / "figure1.png"
    save_figure(figure_1(groups), figure_path, dpi=100)
    markdown = report_markdown(groups, folder, analyze_missing)
    # surrogateescape: a folder name that is not valid UTF-8 is written back as its own bytes
    write_atomically(out / "report.md", markdown.encode("utf-8", "surrogateescape"))
    records = [r for records in groups.values() for r in records]
    return {"report": out / "report.md", "figure": figure_path, "groups": groups,
            "complete": sum(r.complete for r in records),
            "incomplete": sum(not r.complete for r in records),
            "notes": table_notes(groups), "others": other_config_folders(folder)}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Where report.md and figure1.png go.  [default: FOLDER]")
@click.option("--analyze-missing/--no-analyze-missing", default=True,
              help="Compute the claims of runs without analysis.json (not written back), "
                   "or mark them 'not analysed'.")
def main(folder, out, analyze_missing):
    """Table 1 (ours beside the paper's), Figure 1 and the claims of every run in FOLDER."""
    from tinygrok.matplotlib_check import matplotlib_problem
    from tinygrok.runfiles import checked_out_folder

    if (problem := matplotlib_problem()) is not None:  # before any work: figure1.png needs it
        raise ReportUsageError(problem)
    hint = "--out: " if out is not None else ""  # without --out the report goes into FOLDER
    try:
        out = checked_out_folder(str(out if out is not None else folder))
    except click.BadParameter as error:
        raise ReportUsageError(hint + error.message) from None
    try:
        written = write_report(folder, out, analyze_missing)
    except KeyboardInterrupt:  # report.md and figure1.png are each written whole, or not
        click.echo("\ninterrupted: each file is whole, but figure1.png may be newer than "
                   "report.md; run the command again", err=True)
        sys.exit(130)
    except OSError as error:  # a full disk, a folder named report.md, ...: files are whole
        # exit code 1, not usage's 2: the command line was fine, the writing failed
        raise click.ClickException(f"cannot write {error.filename}: {error.strerror}") from None
    click.echo(table_1(written["groups"]))
    for note in written["notes"]:
        click.echo(f"\n{note.replace('**', '')}")
    if written["others"]:
        click.echo(f"\nnot read as runs (their config.json is not a tinygrok run's): "
                   f"{', '.join(map(str, written['others']))}")
    click.echo(f"\n{written['complete']} complete and {written['incomplete']} incomplete run(s)"
               f"; wrote {written['report']} and {written['figure']}")


if __name__ == "__main__":
    from tinygrok.startup_signals import restore_handlers

    restore_handlers()  # the imports are done: Ctrl-C is Python's again (startup_signals.py)
    main()
