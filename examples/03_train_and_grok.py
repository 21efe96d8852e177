"""03 - Train a transformer and watch it grok.

What you will see: a 2-layer transformer learning x + y mod 23 from half of the table.
Within a couple of hundred steps it gets every training pair right while validation
accuracy is still near chance (1/23): it has *memorised*. For about a thousand steps more,
validation accuracy only creeps up, unevenly (in the fast run, from 0.06 at step 170 to
about 0.5 at step 1,030); then it shoots past 0.99 (step 1,280): it has *generalised*, long
after the training loss stopped telling it anything new. That delay is grokking.

The figure (03_grokking.png) shows, on a log step axis with the phases shaded:
accuracy, loss, and the norm of all weights. Weight decay pulls the norm down, and most of
the fall comes after the training pairs are learnt (in the fast run from 36 to 27.7 by
step 170, when they are, then on to about 19 by step 500 at full training accuracy); it
grows again, to 22 by step 1,030, as validation accuracy takes off, and is back to 20.5
when the run groks. (The shaded "memorization" phase
ends when validation accuracy passes 0.5, analysis/phases.py.) The fast run's curves also
have sharp spikes, where accuracy drops for a step or two and recovers: its large learning
rate makes Adam overshoot now and then. (The paper's setup, ``--full``, has such spikes too,
less often: on seed 0, 25 of its 698 logged steps after memorisation had training accuracy
below 0.95.)

What you will learn: the training loop's pieces (model, AdamW, batches, the run directory),
how the phases are read off the accuracy curves, and how to load a run afterwards.

By default a small fast configuration (see _quick_run.py: d_model 32, p = 23, 1,500 steps,
lr 3e-3, weight decay 1.0): about 5 s of training on an idle 2-core machine (25 s for the
first run, which compiles the kernels); far longer if another program holds a core and
you do not pass --threads 1.
``--full`` trains with the paper's setup instead: x / y mod 97, d_model 128, 7,500 steps of batch
512 (about 4 to 9 minutes with both cores of a 2-core machine; longer on a slower or busy
one). Either run is kept in <out>/runs/ and reused by examples 04-06; run this again and
it is loaded, not retrained.
"""

# %% Imports and options
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()))
from _quick_run import FAST, FULL, get_run, make_parser, parse  # noqa: E402

from tinygrok.analysis import find_phases, load_run  # noqa: E402
from tinygrok.plots import PHASE_COLORS, log_steps_axis, shade_phases  # noqa: E402

parser = make_parser(__doc__, full_help="train the paper's x_div_y run (p=97, d_model 128, "
                                         "7,500 steps) instead of the fast one")
args = parse(parser)
config = FULL if args.full else FAST

# %% Train (or reuse) the run
# get_run() calls tinygrok.train.train(config, folder): every 10 steps a metrics row,
# every 500 a checkpoint, summary.json at the end. See docs/internals.md for the files.
print(config)
run_dir = get_run(config, args.out / "runs")

# %% Load it back: plain arrays, no model needed
run = load_run(run_dir)
m = run.metrics  # column -> array: step, lr, train_loss, train_acc, val_loss, val_acc, ...
print(f"{run.name}: {len(m['step'])} logged steps, "
      f"{run.config['num_train']} training pairs, {run.config['num_val']} validation pairs, "
      f"chance level {1 / run.config['num_classes']:.3f}")

# %% The phases
# find_phases reads them off the curves (see tinygrok/analysis/phases.py):
# memorisation starts at the first step with train acc > 0.99 and val acc < 0.5, the
# transition starts when val acc reaches 0.5, and the run groks at the first step with
# val acc > 0.99.
phases = find_phases(m["step"], m["train_acc"], m["val_acc"])
for name in ("memorization", "transition", "post_grokking"):
    phase = phases[name]
    print(f"  {name:>14}: " + ("did not happen" if phase is None
                               else f"steps {phase['start']} to {phase['end']}"))
print("  grokking step (val acc > 0.99):", phases["grok_step"])
for dip in phases["dips"]:
    print(f"  dip after grokking: val acc down to {dip['min_val_acc']:.2f} at step "
          f"{dip['min_step']}")
for note in phases["notes"]:
    print("  note:", note)


def row_at(step):
    i = int(np.argmin(np.abs(m["step"] - step)))
    return (f"step {m['step'][i]:>5}: train acc {m['train_acc'][i]:.3f}, val acc "
            f"{m['val_acc'][i]:.3f}, train loss {m['train_loss'][i]:.2e}, "
            f"weight norm {m['weight_norm'][i]:.1f}")


if phases["memorization"] is not None and phases["grokked"]:
    memorised, grokked = phases["memorization"]["start"], phases["grok_step"]
    print(f"\nmemorised at step {memorised}, generalised at step {grokked}: "
          f"{grokked / memorised:.1f} times later")
    for step in (memorised, (memorised + grokked) // 2, grokked):
        print("  " + row_at(step))
# summary.json's final_val_acc is the last logged value (its final_train_acc is measured
# afterwards, on the whole training split). A run can end inside one of the spikes listed
# above (the fast run does: it stops during one, at val acc 0.81), so look at the curve,
# not only at the last number.
print("last logged " + row_at(m["step"][-1]))

# %% The picture: accuracy, loss and weight norm on a log step axis
figure = Figure(figsize=(8, 9))
figure.subplots_adjust(left=0.1, right=0.97, bottom=0.06, top=0.95, hspace=0.3)
accuracy, loss, norm = figure.subplots(3, 1, sharex=True)
for ax in (accuracy, loss, norm):
    shade_phases(ax, phases)
    log_steps_axis(ax)
accuracy.plot(m["step"], m["train_acc"], color="tab:blue", label="train")
accuracy.plot(m["step"], m["val_acc"], color="tab:purple", label="validation")
accuracy.axhline(1 / run.config["num_classes"], color="grey", linestyle=":", label="chance")
if phases["grokked"]:
    accuracy.axvline(phases["grok_step"], color="black", linestyle="--", linewidth=1,
                     label=f"val acc > 0.99 (step {phases['grok_step']})")
accuracy.set(ylabel="accuracy", ylim=(0, 1.02),
             title=f"{run.config['task']} mod {run.config['p']}: memorise, then generalise")
accuracy.legend(loc="center left", fontsize=8)
loss.plot(m["step"], m["train_loss"], color="tab:blue", label="train")
loss.plot(m["step"], m["val_loss"], color="tab:purple", label="validation")
loss.set(yscale="log", ylabel="cross-entropy")
loss.legend(fontsize=8)
norm.plot(m["step"], m["weight_norm"], color="black")
norm.set(ylabel="L2 norm of all weights")
for ax in (accuracy, loss):
    ax.set_xlabel("")
figure.savefig(args.out / "03_grokking.png", dpi=100)
print(f"phase colours: {PHASE_COLORS}; figure written to {args.out / '03_grokking.png'}")
figure
