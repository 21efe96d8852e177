"""05 - Fourier features: the waves inside the embeddings, and division as subtraction.

What you will see:

1. The division table x / y mod p looks like noise. Relabel every nonzero element by its
   discrete logarithm (x = g^i for a primitive root g) and it becomes the subtraction
   table (i - j) mod (p - 1): division in Z_p* *is* subtraction in Z_(p-1). That is why
   x / y can be learnt like x - y, once the elements are put in the right order
   (05_division_table.png).
2. The element embeddings of the trained run, written in the Fourier basis of the cyclic
   group (cosines and sines of 2 pi k j / n): at initialisation the energy is spread over
   every frequency k; as the network generalises it concentrates on a few "key
   frequencies" (05_fourier.png, bars in red), and the Gini coefficient of the spectrum
   (0 = flat, near 1 = one frequency) rises.
3. Projected onto the two directions of a key frequency k, the elements sit around a
   circle in the order of their group position j, at angle about 2 pi k j / n: the network
   has found the "clock" that modular arithmetic runs on (05_clock.png).

What you will learn: the Fourier basis of a cyclic group, primitive roots and discrete
logs, and how to measure how much of a representation is made of a few waves.

Uses the fast run of example 03 (x + y mod 23, trained now if missing: about 5 s, 25 s
with the first compile). It is short: the spectrum is only starting to concentrate when
it stops, and a longer run makes it sparser. ``--full`` uses the paper's x / y mod 97 run, whose
embeddings are ordered by discrete logarithm (trained now if missing: long).
"""

# %% Imports and options
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

sys.path.insert(0, str(Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()))
from _quick_run import FAST, FULL, get_run, make_parser, parse  # noqa: E402

from tinygrok.analysis import (discrete_log_table, find_phases, fourier_basis,  # noqa: E402
                               fourier_timeline, load_run, primitive_root)
from tinygrok.analysis.fourier import clock, group_embeddings, group_order  # noqa: E402
from tinygrok.plots import log_steps_axis, shade_phases  # noqa: E402

parser = make_parser(__doc__, full_help="use the paper's x_div_y run, p = 97 (trained first "
                                         "if missing)")
args = parse(parser)

# %% 1. Primitive root and discrete logarithms
p = 97 if args.full else 23
g = primitive_root(p)
log = discrete_log_table(p)  # log[x] = i with g^i = x mod p; log[0] = -1 (no logarithm)
print(f"p = {p}: the smallest primitive root is g = {g}; its powers g^0 .. g^{p - 2} mod p:")
print("  ", [pow(g, i, p) for i in range(p - 1)])
print(f"every nonzero element exactly once, so log is a relabelling; e.g. log({p - 1}) = "
      f"{log[p - 1]} (g^{log[p - 1]} = {pow(g, int(log[p - 1]), p)})")

# %% The division table, as it is and relabelled by discrete logs
def divide(x, y):
    """x / y mod p for arrays of nonzero elements: x * y^(p-2) (Fermat's little theorem)."""
    inverse = np.array([pow(int(v), p - 2, p) for v in y])
    return (x[:, None] * inverse[None, :]) % p


nonzero = np.arange(1, p)
division = divide(nonzero, nonzero)                     # rows x = 1..p-1, columns y = 1..p-1
powers = np.array([pow(g, i, p) for i in range(p - 1)])  # the element at position i is g^i
relabelled = log[divide(powers, powers)]                 # entry (i, j): log(g^i / g^j)
i, j = np.meshgrid(np.arange(p - 1), np.arange(p - 1), indexing="ij")
assert np.array_equal(relabelled, (i - j) % (p - 1))  # log(x / y) = log x - log y mod (p-1)
print("relabelled by discrete logs, x / y is exactly the subtraction table (i - j) mod (p-1)")

figure = Figure(figsize=(10, 4.6))
figure.subplots_adjust(left=0.06, right=0.94, bottom=0.12, top=0.85, wspace=0.3)
left, right = figure.subplots(1, 2)
image = left.imshow(division, cmap="twilight", extent=(0.5, p - 0.5, p - 0.5, 0.5))
left.set(title=f"x / y mod {p}, natural order\n(colour: the value)", xlabel="y", ylabel="x")
for axis in (left.xaxis, left.yaxis, right.xaxis, right.yaxis):  # no 2.5th row in a table
    axis.set_major_locator(MaxNLocator(integer=True))
figure.colorbar(image, ax=left, fraction=0.046, label="x / y mod p")
image = right.imshow(relabelled, cmap="twilight")
figure.colorbar(image, ax=right, fraction=0.046, label="(i - j) mod (p - 1)")
right.set(title=f"the same table, rows x = {g}^i, columns y = {g}^j\n(colour: log(x / y) "
                f"= (i - j) mod {p - 1})", xlabel="j = log y", ylabel="i = log x")
figure.savefig(args.out / "05_division_table.png", dpi=100)
figure

# %% 2. The trained run's embeddings in the Fourier basis
run = load_run(get_run(FULL if args.full else FAST, args.out / "runs"))
task, p = run.config["task"], run.config["p"]
m = run.metrics
phases = find_phases(m["step"], m["train_acc"], m["val_acc"])
order, group = group_order(task, p)
print(f"{run.name}: elements ordered as {group}")

# The basis: rows are unit vectors: the constant, then a cos row and a sin row for each
# k = 1 .. (n-1)//2, and for even n one last row, cos(pi j), for k = n/2 (its sine is 0).
basis, frequency_of_row = fourier_basis(len(order))
assert np.allclose(basis @ basis.T, np.eye(len(order)))  # orthonormal: energy is kept

spectrum = fourier_timeline(run.embedding_steps, run.token_embeddings, task, p)
final = group_embeddings(run.token_embeddings[-1], task, p)   # (n, d), row j = element order[j]
coefficients = basis @ final                                  # (n, d): one row per wave
print(f"final embeddings {final.shape}: energy {np.sum(final ** 2):.2f}, in the Fourier "
      f"basis {np.sum(coefficients ** 2):.2f} (the same)")
for label, index in (("initialisation", 0), ("final", -1)):
    print(f"  {label:>14} (step {spectrum.steps[index]}): Gini {spectrum.gini[index]:.2f}, "
          f"key frequencies {spectrum.key_frequencies(index)}")

figure = Figure(figsize=(10, 7))
grid = figure.add_gridspec(2, 2, left=0.08, right=0.98, bottom=0.08, top=0.9, hspace=0.45,
                           wspace=0.3)
for column, (label, index) in enumerate((("initialisation", 0), ("final", -1))):
    ax = figure.add_subplot(grid[0, column])
    norms = spectrum.norms[index, 1:]
    keys = spectrum.key_frequencies(index)
    frequencies = np.arange(1, len(norms) + 1)
    ax.bar(frequencies, norms, color=["tab:red" if k in keys else "tab:blue" for k in frequencies])
    threshold = ax.axhline(spectrum.key_ratio * norms.max(), color="grey", linestyle=":",
                           linewidth=1, label=f"{spectrum.key_ratio:g} x the largest")
    every = 1 if len(frequencies) <= 24 else 5  # a tick per frequency when they fit
    ax.set_xticks(sorted({int(k) for k in frequencies if k % every == 0} | set(keys)))
    ax.tick_params(axis="x", labelsize=7)
    named = "all: a flat spectrum" if len(keys) == len(frequencies) else keys
    ax.set(title=f"{label}, step {spectrum.steps[index]}: key frequencies {named}",
           xlabel="frequency k", ylabel="norm (own scale)")
    ax.title.set_fontsize(9)
    ax.legend(handles=[Patch(color="tab:red", label="key frequency"),
                       Patch(color="tab:blue", label="other frequency"), threshold], fontsize=7)
ax = figure.add_subplot(grid[1, 0])
image = ax.imshow(np.abs(coefficients), aspect="auto", cmap="magma")
figure.colorbar(image, ax=ax, fraction=0.046, label="|coefficient|")
final_keys = spectrum.key_frequencies(-1)
labelled = [row for row, k in enumerate(frequency_of_row) if k == 0 or k in final_keys]


def row_label(row):
    """Rows are [const, cos 1, sin 1, cos 2, sin 2, ...]: odd rows are cosines."""
    if row == 0:
        return "const"
    return f"{'cos' if row % 2 else 'sin'} {frequency_of_row[row]}"


ax.set_yticks(labelled, [row_label(row) for row in labelled], fontsize=7)
ax.set(title="final |coefficients|: rows = waves, columns = dimensions", xlabel="dimension")
ax = figure.add_subplot(grid[1, 1])
shade_phases(ax, phases)
ax.plot(spectrum.steps[1:], spectrum.gini[1:], marker=".", color="black")
log_steps_axis(ax)
ax.set(ylim=(0, 1), ylabel="Gini of the frequency norms", title="the spectrum concentrates")
ax.legend(fontsize=7)
figure.suptitle(f"Embeddings of {run.name} over {group}", fontsize=10)
figure.savefig(args.out / "05_fourier.png", dpi=100)
figure

# %% 3. The clock: the elements on the plane of the strongest frequency
# The strongest frequency with a cos and a sin row: 1 <= k < n/2 (for even n, k = n/2 has
# only a cos row, so no plane).
k = max(range(1, (len(order) + 1) // 2), key=lambda k: spectrum.norms[-1, k])
# clock() projects the embeddings on the two directions that carry frequency k (the cos
# and sin coefficients of k, made orthonormal) and compares the points, as complex
# numbers, with the ideal clock exp(2 pi i k j / n): 1 for a perfect circle in that order.
points, fit = clock(final, k)                                  # (n, 2), a number
figure = Figure(figsize=(5.5, 5.5))
ax = figure.add_subplot()
position = np.arange(len(order))
ax.scatter(points[:, 0], points[:, 1], c=(k * position) % len(order), cmap="twilight", s=40)
for j, (x, y) in enumerate(points):
    ax.annotate(str(j), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
ax.set_aspect("equal")
ax.set(title=f"final embeddings projected on frequency k = {k}\n(label: group position j; "
             f"colour: k j mod {len(order)}, which\ngrows by one per step around the circle)",
       xlabel="direction 1", ylabel="direction 2")
figure.tight_layout()
figure.savefig(args.out / "05_clock.png", dpi=100)
print(f"frequency {k}: how much of the projected embeddings is the ideal clock "
      f"exp(2 pi i k j / n): {fit:.2f} (1 = a perfect circle in that order)")
figure
