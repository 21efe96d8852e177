"""``python -m tinygrok.analyze RUN_DIR``: analyse one finished run.

Reads the run directory (never the model), writes ``RUN_DIR/analysis.json`` (every number
and every threshold, see ``tinygrok.analysis.run_analysis``) and the PNGs of
``tinygrok.plots`` into ``RUN_DIR/figures/``, and prints a short summary: the final
accuracies, the phases, dips after grokking, the emergence step of every head, the head
clusters at the end of each phase (or at the final step), the key Fourier frequencies and
the verdict on each of the paper's three claims with the numbers behind it.

A missing or incomplete run directory (or one a run is training in now) is a usage error:
one line on stderr, exit status 2. A file that cannot be written during the work (a full
disk) is one line too, with exit status 1. An old analysis.json is removed before the
analysis and the new one written last, after the figures: whatever stops an analysis, an
analysis.json in the folder comes from one that finished, and is never older than the
figures beside it.
"""

import json
import shlex
import sys
from pathlib import Path

import click

from tinygrok.analysis import RunDirectoryError, Settings, analyze_run, load_run
from tinygrok.analysis.attention_metrics import EMERGENCE_SIMILARITY
from tinygrok.analysis.claims import CLAIM_TITLES, verdict_word
from tinygrok.analysis.run_analysis import phase_end_name
from tinygrok.matplotlib_check import matplotlib_problem
from tinygrok.runfiles import (FolderInUse, check_writable, is_run_config, is_summary,
                               read_json_object, reading_run_folder, write_atomically)
from tinygrok.tasks import has_modulus

class RunDirectoryUsageError(click.ClickException):
    """A run directory that cannot be analysed: printed as one 'Error: ...' line, exit 2.

    (click.UsageError would also print the usage text; one line is easier to read.)
    """

    exit_code = 2


def finite(ctx, param, value):
    """NaN passes click's range check (every comparison with it is False)."""
    if value != value:
        raise click.BadParameter("nan is not a number")
    return value


def folder_path(ctx, param, value):
    """An empty RUN_DIR is a mistake, not the current folder (which is '.')."""
    if value == "":
        raise click.BadParameter("must name a run directory, not be empty")
    return Path(value)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(), callback=folder_path)
@click.option("--no-figures", is_flag=True, help="Write analysis.json only, no PNGs.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True),
              default=EMERGENCE_SIMILARITY, show_default=True, callback=finite,
              help="Cosine similarity to its final pattern at or above which a head has emerged.")
@click.option("--clusters", type=click.IntRange(min=1), default=None,
              help="Number of head clusters (default: chosen by silhouette).")
def main(run_dir, no_figures, threshold, clusters):
    """Analyse the finished run in RUN_DIR: analysis.json, figures/ and a summary."""
    try:
        analyze_command(run_dir, no_figures, threshold, clusters)
    except KeyboardInterrupt:  # every file is written whole (atomically), or not at all
        click.echo("\ninterrupted: the analysis did not finish; run the command again "
                   "(analysis.json is written last: a folder without one holds no finished "
                   "analysis)", err=True)
        sys.exit(130)


def analyze_command(run_dir, no_figures, threshold, clusters):
    """The work of ``main``, with the run folder locked for reading all along, so that no
    run can start training in it (``runfiles.reading_run_folder``)."""
    try:
        with reading_run_folder(run_dir):
            analyze_folder(run_dir, no_figures, threshold, clusters)
    except FolderInUse as busy:  # "runs/x is in use: process 123 is training in it now"
        raise RunDirectoryUsageError(f"{busy}; analyse it when it has finished") from None


def runs_in(folder: Path) -> dict[str, bool]:
    """The runs just inside ``folder``, if it is not a run itself: {name: complete?}. A run
    is a folder whose config.json a run wrote (it names the task and tinygrok's version)."""
    try:
        if not folder.is_dir() or (folder / "config.json").exists():
            return {}
        children = sorted(folder.iterdir())
    except OSError:  # unreadable: load_run says what is wrong
        return {}
    runs = {}
    for child in children:  # read_json_object: None for a missing or unreadable file
        if is_run_config(read_json_object(child / "config.json")):
            runs[child.name] = is_summary(read_json_object(child / "summary.json"))
    return runs


def analyze_folder(run_dir, no_figures, threshold, clusters):
    """Check, load, analyse, write, print."""
    if not no_figures and (problem := matplotlib_problem()) is not None:
        raise RunDirectoryUsageError(f"{problem} (or analyse with --no-figures)")
    runs_inside = runs_in(run_dir)
    if runs_inside:  # a sweep's folder, say: runs/paper instead of runs/paper/x_div_y-s0
        complete = [name for name, finished in runs_inside.items() if finished]
        example = shlex.quote(str(run_dir / (complete or list(runs_inside))[0]))
        if len(runs_inside) == 1:
            raise RunDirectoryUsageError(f"{run_dir} is not a run but holds one: analyse it "
                                         f"with python -m tinygrok.analyze {example}")
        raise RunDirectoryUsageError(
            f"{run_dir} holds {len(runs_inside)} runs, not one: analyse one of them (python -m "
            f"tinygrok.analyze {example}), or see them side by side with python -m "
            f"tinygrok.report {shlex.quote(str(run_dir))}")
    try:
        run = load_run(run_dir)
    except RunDirectoryError as error:
        raise RunDirectoryUsageError(str(error)) from None
    if not run.complete:
        raise RunDirectoryUsageError(
            f"{run_dir}: incomplete run (no readable summary.json); let it finish or resume "
            f"it first (python -m tinygrok.run --out {shlex.quote(str(run_dir))} --resume), "
            f"or look at it as far as it went in Python, which writes no file: from "
            f"tinygrok.analysis import analyze_run, load_run; "
            f"report = analyze_run(load_run({str(run_dir)!r})).report"
        )
    try:  # before the analysis, which takes a while: analysis.json and figures/ go here
        check_writable(run.path)
        if not no_figures:
            check_writable(run.path / "figures")
    except click.BadParameter as error:
        raise RunDirectoryUsageError(error.message) from None
    heads = run.patterns.shape[1] * run.patterns.shape[2] if run.has_attention else None
    if clusters is not None and heads is not None and clusters > heads:
        raise RunDirectoryUsageError(f"--clusters {clusters}: this run has {heads} heads to "
                                     f"cluster; give at most {heads}")
    json_path = run.path / "analysis.json"
    try:  # the checks above cannot foresee everything (a full disk, a folder in the way)
        # The old analysis.json goes now and the new one comes last: whatever stops this
        # analysis, none is left beside figures half redrawn or settings half applied.
        json_path.unlink(missing_ok=True)
        analysis = analyze_run(run, Settings(emergence_similarity=threshold, clusters=clusters))
        figures = []
        if not no_figures:
            from tinygrok.plots import make_figures  # matplotlib only when figures are wanted

            figures = make_figures(run, analysis)
        write_json(json_path, analysis.report)
    except OSError as error:  # each file is whole or not there (runfiles.write_atomically)
        # exit code 1, not usage's 2: the command line was fine, the writing failed
        raise click.ClickException(f"cannot write {error.filename}: {error.strerror} (the "
                                   f"analysis is not written in full: no analysis.json; run "
                                   f"the command again once that is fixed)") from None
    click.echo(summary_text(analysis.report))
    where = f" and {len(figures)} figures in {run.path / 'figures'}" if figures else ""
    click.echo(f"wrote {json_path}{where}")


def write_json(path, report):
    """analysis.json, written whole or not at all (``runfiles.write_atomically``); strict
    JSON, so a NaN that slipped into the report is an error here, not a file other tools
    cannot read."""
    write_atomically(path, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
    return path


# ---- the printed summary -------------------------------------------------------------------


def summary_text(report):
    lines = [_run_line(report), _final_line(report), _phases_line(report["phases"]),
             _dips_line(report["phases"]["dips"])]
    lines += _emergence_lines(report["attention"])
    lines.append(_fourier_line(report["fourier"]))
    lines.append("claims:")
    for number, (name, title) in enumerate(CLAIM_TITLES.items(), start=1):
        claim = report["claims"][name]
        lines.append(f"  {number}. {title}: {verdict_word(claim['holds'])} ({claim['reason']})")
    lines += [f"note: {note}" for note in report["phases"]["notes"]]
    return "\n".join(lines)


def _run_line(report):
    run = report["run"]
    state = "complete" if run["complete"] else "incomplete"
    modulus = f"p={run['p']}, " if has_modulus(run["task"]) else ""
    return f"{run['name']}: {run['task']}, {modulus}seed {run['seed']}, " \
           f"{run['steps']} steps ({state})"


def _final_line(report):
    final = report["final"]
    if "skipped" in final:
        return f"final: {final['skipped']}"
    # metrics.csv's train accuracy is the running one over the last log window's batches
    # (summary.json's final_train_acc measures the whole training split instead).
    budget = "" if report["phases"]["grokked"] else " (the step budget: val acc never passed 0.99)"
    return (f"final (step {final['step']}): train acc {final['train_acc']:.4f} (last log "
            f"window's batches), val acc {final['val_acc']:.4f}; step_val_acc_99 = "
            f"{final['step_val_acc_99']}{budget}")


def _phases_line(phases):
    parts = []
    for name in ("memorization", "transition", "post_grokking"):
        phase = phases[name]
        label = name.replace("_", "-")
        if phase is None:
            parts.append(f"{label} none")
        else:
            unfinished = "" if phase.get("completed", True) else " (not completed)"
            parts.append(f"{label} {phase['start']}-{phase['end']}{unfinished}")
    return "phases: " + ", ".join(parts)


def _dips_line(dips):
    if not dips:
        return "dips after grokking: none"
    parts = [f"{d['start']}-{d['end'] if d['recovered'] else 'end (not recovered)'} "
             f"(min val acc {d['min_val_acc']:.3f} at {d['min_step']})" for d in dips]
    return "dips after grokking: " + "; ".join(parts)


def _emergence_lines(attention):
    if "skipped" in attention:
        return [f"attention: {attention['skipped']}"]
    last = attention["last_logged_step"]
    lines = [f"emergence step per head (cosine to final pattern >= "
             f"{attention['emergence_threshold']}; * = not before the last logged step):"]
    for layer, steps in enumerate(attention["emergence_step_by_layer_head"]):
        marked = [f"{step}*" if step == last else str(step) for step in steps]
        lines.append(f"  layer {layer}: " + " ".join(marked))
    for label, found in attention["clusters_at_phase_ends"].items():
        groups = "; ".join(f"layer {layer}: " + " ".join(str(c) for c in clusters)
                           for layer, clusters in enumerate(found["labels"]))
        lines.append(f"head clusters at step {found['step']} ({phase_end_name(label)}), "
                     f"k = {found['k']}: {groups}")
    return lines


def _fourier_line(fourier):
    if "skipped" in fourier:
        return f"Fourier: skipped ({fourier['skipped']})"
    keys = fourier["key_frequencies_final"]
    frequencies = len(fourier["norms_final"]) - 1  # norms_final[0] is the constant
    if keys and len(keys) == frequencies:  # nothing stands out, as the figure says too
        keys = f"all {frequencies}, a flat spectrum"
    else:
        keys = ", ".join(str(k) for k in keys) or "none"
    return (f"key frequencies of the final embeddings over {fourier['group']}: {keys} "
            f"(Gini {fourier['gini_first']:.2f} -> {fourier['gini_final']:.2f})")


if __name__ == "__main__":
    from tinygrok.startup_signals import restore_handlers

    restore_handlers()  # the imports are done: Ctrl-C is Python's again (startup_signals.py)
    main()
