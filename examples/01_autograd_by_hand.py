"""01 - Autograd by hand: where every gradient in tinygrok comes from.

What you will see:

1. A tiny computation, L = (tanh(w . x + b) - t)^2, built from tinygrok Tensors. Calling
   ``L.backward()`` fills ``w.grad``; we derive the same gradient on paper with the chain
   rule and the two agree to the last digit.
2. The graph that ``backward()`` walks: every intermediate tensor, in the order the
   backward pass visits them (a topological order, found without recursion).
3. The accumulation rules: a tensor used twice collects both gradients; a second
   ``backward()`` adds to ``.grad`` until you clear it.
4. ``gradcheck``: the analytic gradient against finite differences, in float64. A plot
   shows why the step size eps matters (truncation error against rounding error).
5. A deliberately wrong operation, written with ``new_node`` and ``accumulate_grad`` as
   every op in tinygrok/autograd.py is, gets caught by gradcheck; the fixed one passes.
6. gradcheck on a whole (tiny) transformer: 5 of its 30 parameter tensors (the token
   embeddings, a QKV projection, an MLP weight, a LayerNorm scale and the head's bias) in
   one call (all 30 with ``--full``).

What you will learn: the chain rule as code, why gradients add up, and how to test any
backward you write. Runs in a few seconds (the first run also compiles Numba kernels).
``--full`` checks every parameter of the tiny transformer instead of a sample.
Writes 01_finite_differences.png.
"""

# %% Imports and options
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()))
from _quick_run import make_parser, parse  # noqa: E402  (the examples' shared options)

from tinygrok import autograd as ag  # noqa: E402
from tinygrok.autograd import Tensor, accumulate_grad, new_node  # noqa: E402
from tinygrok.gradcheck import GradcheckError, gradcheck  # noqa: E402
from tinygrok.model import Transformer  # noqa: E402

parser = make_parser(__doc__, full_help="gradcheck every parameter of the tiny transformer "
                                         "(about 1,900 numbers, a few seconds)")
args = parse(parser)

# %% 1. A small graph, its backward, and the same gradient by hand
rng = np.random.default_rng(0)
x = Tensor(rng.standard_normal(3), name="x")                      # input: no gradient
w = Tensor(rng.standard_normal(3), requires_grad=True, name="w")  # parameters: gradients
b = Tensor(0.1, requires_grad=True, name="b")
t = Tensor(0.5, name="t")                                         # the target: a constant

z = (w * x).sum() + b          # z = w . x + b
y = z.tanh()                   # y = tanh(z)
L = (y - t) ** 2               # L = (y - t)^2
L.backward()                   # fills w.grad and b.grad

# The chain rule on paper: dL/dy = 2 (y - t), dy/dz = 1 - tanh(z)^2, dz/dw = x, dz/db = 1.
dL_dz = 2 * (y.data - t.data) * (1 - np.tanh(z.data) ** 2)
by_hand_w, by_hand_b = dL_dz * x.data, dL_dz
print(f"L = {L.item():.6f}")
print("dL/dw from backward():", w.grad)
print("dL/dw by hand:        ", by_hand_w)
print(f"dL/db: backward() {b.grad.item():.10f}, by hand {by_hand_b:.10f}")
assert np.allclose(w.grad, by_hand_w, rtol=1e-12) and np.isclose(b.grad, by_hand_b, rtol=1e-12)

# %% 2. The graph backward() walks
# topological_order() lists every tensor L depends on, each after its parents; backward()
# runs each node's local _backward() in the reverse of this order, from L to the leaves.
# It uses an explicit stack, not recursion, so a very deep graph cannot overflow Python's
# call stack.
for node in reversed(L.topological_order()):
    parents = ", ".join(p.name or p.op for p in node._parents) or "-"
    role = "leaf, gets a gradient" if node.requires_grad and not node._parents else (
        "constant" if not node.requires_grad else "intermediate")
    print(f"  {node.name or node.op:>10}  shape {str(node.shape):>6}  parents: {parents:<14} ({role})")
# x and the target t are there too, as constants: leaves with requires_grad=False, which
# accumulate_grad() skips. A node keeps no parents at all when no gradient can flow into it
# (try it inside `with ag.no_grad():`).

# %% 3. Gradients add up
# A tensor used twice receives the gradient of both uses: d(a * a)/da = a + a = 2a.
a = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
(a * a).sum().backward()
print("d/da sum(a * a) =", a.grad, "(= 2a)")

# A second backward() adds to the first: leaves keep their .grad until you clear it.
(a * a).sum().backward()
print("after a second backward():", a.grad, "(= 4a: clear with a.grad = None)")
a.grad = None  # what Module.zero_grad() and AdamW.zero_grad() do before every step

# %% 4. gradcheck: the analytic gradient against finite differences
# For each input element, (f(x + eps) - f(x - eps)) / (2 eps) approximates df/dx with an
# error that shrinks like eps^2. A non-scalar output is reduced to a scalar first by a
# fixed random projection, sum(f(x) * R), which checks the whole Jacobian at once.
logits = Tensor(rng.standard_normal((4, 5)), requires_grad=True)
gamma = Tensor(1 + 0.1 * rng.standard_normal(5), requires_grad=True)
beta = Tensor(0.1 * rng.standard_normal(5), requires_grad=True)
print("layer_norm + log_softmax pass gradcheck:",
      gradcheck(lambda u, g, c: ag.log_softmax(ag.layer_norm(u, g, c), axis=-1),
                [logits, gamma, beta]))


# %% Why float64, and why eps = 1e-6
# The finite-difference error has two parts: truncation (the eps^2 term of the Taylor
# series) and rounding (f is computed to about 1e-16 relative in float64, 1e-7 in
# float32, and dividing that by 2 eps magnifies it). Their sum is smallest in between.
# The float32 numbers near 0.7 are about 6e-8 apart. When eps falls below half that
# spacing (about 3e-8), x + eps rounds back to x: the difference is 0, and the error is the
# whole derivative (the float32 curve's flat end).
def central_difference_error(dtype, eps):
    value = np.array(0.7, dtype=dtype)
    step = dtype(eps)
    slope = (np.tanh(value + step) - np.tanh(value - step)) / (2 * step)
    return abs(float(slope) - (1 - np.tanh(0.7) ** 2))


epsilons = np.logspace(-12, -1, 45)
figure = Figure(figsize=(6.5, 4))
ax = figure.add_subplot()
for dtype, color in ((np.float64, "tab:blue"), (np.float32, "tab:red")):
    errors = [max(central_difference_error(dtype, e), 1e-18) for e in epsilons]
    ax.loglog(epsilons, errors, ".-", color=color, label=dtype.__name__)
ax.axvline(1e-6, color="grey", linestyle=":", label="gradcheck's eps = 1e-6")
ax.set(xlabel="step eps", ylabel="|finite difference - exact derivative|",
       title="d tanh(x)/dx at x = 0.7 by central differences")
ax.legend()
figure.tight_layout()
figure.savefig(args.out / "01_finite_differences.png", dpi=100)
figure


# %% 5. A wrong backward gets caught
# Every op in tinygrok/autograd.py has the same three parts: compute the forward with
# NumPy, make the result with new_node (which remembers the parents if a gradient can
# flow), and attach a _backward(grad_out) that turns dL/dout into the parents' gradients
# with accumulate_grad. (It takes the gradient as an argument rather than reading
# out.grad: a closure that refers to `out` would make a reference cycle and keep every
# step's activations alive until the garbage collector runs.)
# Here is x^3 with a classic mistake: the 3 of 3 x^2 is forgotten.
def cube_wrong(a: Tensor) -> Tensor:
    out = new_node(a.data ** 3, (a,), "cube")
    if out.requires_grad:
        out._backward = lambda grad_out: accumulate_grad(a, grad_out * a.data ** 2)  # BUG
    return out


def cube(a: Tensor) -> Tensor:
    out = new_node(a.data ** 3, (a,), "cube")
    if out.requires_grad:
        out._backward = lambda grad_out: accumulate_grad(a, grad_out * 3 * a.data ** 2)
    return out


u = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
try:
    gradcheck(cube_wrong, [u])
    print("the wrong cube slipped through?!")
except GradcheckError as report:
    print("gradcheck caught the wrong backward:\n ", report)
print("the corrected cube passes:", gradcheck(cube, [u]))

# %% 6. gradcheck a whole transformer
# The same check works on a model: its parameters are the inputs, the loss the output.
# Tiny sizes keep it quick; float64 keeps the finite differences accurate.
model = Transformer(vocab_size=7, num_classes=5, d_model=8, heads=2, layers=2, seed=0,
                    dtype=np.float64)
tokens = np.array([[2, 0, 3, 1], [4, 0, 6, 1], [5, 0, 5, 1]])
labels = np.array([0, 3, 4])
named = list(model.named_parameters())
if not args.full:  # a sample: one tensor of each kind, the rest held fixed
    keep = ("token_embeddings.weight", "blocks.0.attn.in_proj_weight",
            "blocks.1.mlp.fc1.weight", "blocks.1.mlp_norm.weight", "head.bias")
    named = [(name, p) for name, p in named if name in keep]
checked = {name for name, _ in named}
for name, p in model.named_parameters():
    p.requires_grad = name in checked
print(f"checking {sum(p.size for _, p in named)} numbers in {len(named)} parameter tensors "
      f"(the model has {model.num_parameters()})")
gradcheck(lambda *params: model.loss(tokens, labels)[0], [p for _, p in named])
print("every checked gradient of the transformer matches its finite differences")
