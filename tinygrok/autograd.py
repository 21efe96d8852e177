"""Reverse-mode automatic differentiation over NumPy arrays.

A ``Tensor`` wraps a float32 or float64 NumPy array. Every operation on tensors returns a
new tensor that remembers its inputs (its *parents*) and a small function, ``_backward``,
that knows the operation's local derivative. ``loss.backward()`` then walks the graph from
the loss back to the leaves and applies the chain rule one node at a time:

    if  out = f(a, b)  and we already know  dL/dout  (``out.grad``),
    then  dL/da += dL/dout * df/da   and   dL/db += dL/dout * df/db.

Each operation below is written with its forward and its backward next to each other, so
the maths of one op can be read in one place. All gradients are whole arrays with the same
shape and dtype as the tensor they belong to. An op's ``_backward(grad_out)`` receives
dL/dout as an argument and never refers to ``out`` itself: the graph then holds no
reference cycle, so NumPy frees every activation the moment the loss is dropped (a cycle
would keep each step's graph alive until Python's garbage collector happened to run).

Rules worth knowing:

- Gradients *add up*. Calling ``backward()`` twice adds the second gradient to the first
  in every leaf (a tensor you made yourself, such as a parameter). Clear them by setting
  ``tensor.grad = None`` (``Module.zero_grad()`` and ``AdamW.zero_grad()`` do exactly
  that). Intermediate tensors get fresh gradients on every ``backward()``.
- Treat ``.grad`` arrays as read-only: one gradient array may be shared by several tensors
  (the backward of ``a + b`` hands the same array to both ``a`` and ``b``). So a gradient
  that arrives where one is already stored is added as ``t.grad = t.grad + g``, a new
  array: the in-place ``t.grad += g`` would silently change the gradient of a neighbour
  that shares the array. Only an array that the running ``backward()`` allocated for this
  tensor (it remembers it in ``t._own_grad``) is added into in place. Nothing else can
  hold such an array yet: ``backward()`` visits the tensors from the output back, so a
  tensor passes its gradient on (to its own backward, and so to its parents) only after
  every gradient for it has arrived; and when ``backward()`` returns, it forgets which
  arrays it made. A tensor that collects many gradients then allocates one array, not one
  per gradient.
- Broadcasting works as in NumPy; the backward sums the gradient back to each input's own
  shape (``unbroadcast``).
- dtypes never change: a float32 tensor times a Python float stays float32. Mixing a
  float32 and a float64 tensor in one op is an error, so precision never changes silently.
- Inside ``with no_grad():`` no graph is recorded (evaluation is then as cheap as NumPy).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from tinygrok import kernels

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Run a block without recording a graph: results have ``requires_grad=False``."""
    global _grad_enabled
    previous = _grad_enabled
    _grad_enabled = False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


# --------------------------------------------------------------------------------------
# The Tensor class: data, grad, and how backward() walks the graph
# --------------------------------------------------------------------------------------

class Tensor:
    """A NumPy array plus what is needed to differentiate through it.

    Attributes:
        data: the value, a float32 or float64 ``np.ndarray``.
        grad: ``dL/d(data)`` after ``backward()``, an array of the same shape and dtype,
            or None before any gradient arrived.
        requires_grad: whether gradients should flow into this tensor.
        _own_grad: during ``backward()``, the gradient array that this pass allocated for
            this tensor (so it may add into it in place); None otherwise.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "op", "name",
                 "_own_grad")
    __array_ufunc__ = None  # makes `numpy_array * tensor` call Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False, dtype=None, name: str | None = None):
        array = np.asarray(data, dtype=dtype)
        if array.dtype.kind in "iub":  # integers and booleans become float64
            array = array.astype(np.float64)
        if array.dtype not in (np.float32, np.float64):
            raise ValueError(f"Tensor holds float32 or float64 data, got {array.dtype}")
        self.data = array
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._backward = None
        self.op = "leaf"
        self.name = name
        self._own_grad = None

    # -- basic properties -------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        """The same data, cut off from the graph."""
        return Tensor(self.data)

    def __repr__(self):
        label = f", name={self.name!r}" if self.name else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{grad}{label}, op={self.op!r})"

    # -- backward ---------------------------------------------------------------------
    def backward(self, grad=None) -> None:
        """Fill ``.grad`` of every tensor this one depends on.

        From a scalar (one element) the upstream gradient is 1. From any other tensor pass
        ``grad``, the gradient of some scalar with respect to this tensor (same shape).
        """
        if not self.requires_grad:
            raise ValueError("backward() on a tensor that needs no gradient: it was computed "
                             "under no_grad(), or only from tensors with requires_grad=False, "
                             "so no gradient can reach anything")
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() without a gradient needs a scalar, but this tensor has "
                    f"shape {self.shape}; pass grad=<array of shape {self.shape}>")
            grad = np.ones_like(self.data)
        else:
            # a copy: the array may become a leaf's .grad, which the caller's array must
            # not change afterwards (nor an in-place update of .grad change the caller's)
            grad = np.array(grad, dtype=self.data.dtype)
            if grad.shape != self.shape:
                raise ValueError(
                    f"backward(grad) needs a gradient of shape {self.shape}, got {grad.shape}")
        order = self.topological_order()
        for node in order:  # intermediate gradients belong to one backward pass only
            if node._parents:
                node.grad = None
        try:
            accumulate_grad(self, grad)
            for node in reversed(order):  # from the output back towards the leaves
                if node._backward is not None and node.grad is not None:
                    node._backward(node.grad)
            # Two leaves may have been handed one array, or views of one (a + b sends its
            # gradient to a and to b as it is; a.reshape(...) + b a reshaped view of it):
            # each gets its own, so scaling one in place leaves the other alone.
            held = set()
            for node in order:
                if not node._parents and node.grad is not None:
                    grad = node.grad
                    owner = grad if grad.base is None else grad.base
                    if id(owner) in held:
                        node.grad = grad = grad.copy()
                        owner = grad
                    held.add(id(owner))
        finally:
            for node in order:  # the arrays this pass made may now be held by anyone
                node._own_grad = None

    def topological_order(self) -> list["Tensor"]:
        """Every tensor this one depends on, each listed after all of its parents.

        An explicit stack instead of recursion, so a graph thousands of ops deep does not
        hit Python's recursion limit. A node is written out when it is popped the second
        time, after all its parents have been written out.
        """
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, parents_done = stack.pop()
            if parents_done:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for parent in node._parents:
                if id(parent) not in visited:
                    stack.append((parent, False))
        return order

    # -- operators: each one is a function defined further down -------------------------
    def __add__(self, other):
        return add(self, other)

    def __radd__(self, other):
        return add(other, self)

    def __sub__(self, other):
        return sub(self, other)

    def __rsub__(self, other):
        return sub(other, self)

    def __mul__(self, other):
        return mul(self, other)

    def __rmul__(self, other):
        return mul(other, self)

    def __truediv__(self, other):
        return div(self, other)

    def __rtruediv__(self, other):
        return div(other, self)

    def __neg__(self):
        return neg(self)

    def __pow__(self, exponent):
        return power(self, exponent)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __getitem__(self, index):
        return getitem(self, index)

    def sum(self, axis=None, keepdims=False):
        return sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return max(self, axis, keepdims)

    def reshape(self, *shape):
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list))
                       else shape)

    def transpose(self, *axes):
        return transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else (axes or None))

    permute = transpose

    def exp(self):
        return exp(self)

    def log(self):
        return log(self)

    def tanh(self):
        return tanh(self)

    def relu(self):
        return relu(self)

    def gelu(self):
        return gelu(self)


# --------------------------------------------------------------------------------------
# Plumbing shared by every op
# --------------------------------------------------------------------------------------

def new_node(data: np.ndarray, parents: tuple, op: str) -> Tensor:
    """The result of an op: a tensor that remembers its parents if a gradient may flow.

    When ``out.requires_grad`` is true the caller sets ``out._backward`` to a function of
    one argument, ``grad_out`` (dL/dout), that calls ``accumulate_grad(parent, ...)`` for
    each parent. It should not refer to ``out`` (see the module docstring: no cycles).
    """
    out = Tensor.__new__(Tensor)
    out.data = np.asarray(data)  # a full reduction gives a NumPy scalar; keep an array
    out.grad = None
    out.requires_grad = _grad_enabled and any(p.requires_grad for p in parents)
    out._parents = parents if out.requires_grad else ()
    out._backward = None
    out.op = op
    out.name = None
    out._own_grad = None
    return out


def accumulate_grad(tensor: Tensor, grad: np.ndarray) -> None:
    """Add ``grad`` to ``tensor.grad``, after summing away any broadcast dimensions.

    A first gradient becomes ``tensor.grad`` as it is (no copy unless it is read-only, as
    ``np.broadcast_to`` views are; it may be shared). Later
    ones are added into ``tensor.grad`` in place if this backward pass allocated it
    (``tensor._own_grad``), and otherwise make a new array, which the pass then owns.
    """
    if not tensor.requires_grad:
        return
    grad = unbroadcast(grad, tensor.data.shape)
    if tensor.grad is None:
        # maybe shared; np.array copies read-only views, and makes a NumPy scalar (from a
        # 0-d computation) a 0-d array: gradients are always whole, writable arrays
        tensor.grad = grad if isinstance(grad, np.ndarray) and grad.flags.writeable \
            else np.array(grad)
    elif tensor.grad is tensor._own_grad:
        tensor.grad += grad  # this backward pass made the array: no one else holds it
    else:
        # a new array, this pass's own (asarray: a 0-d sum comes back as a NumPy scalar)
        tensor.grad = tensor._own_grad = np.asarray(tensor.grad + grad)


def accumulate_grad_at(tensor: Tensor, index, grad: np.ndarray) -> None:
    """Add ``grad`` to ``tensor.grad[index]``, for an index that picks each element at
    most once (slices, integers, None, Ellipsis; ``getitem`` sends the rest elsewhere).

    The gradient of ``tensor[index]`` touches only those elements. Padded with zeros to the
    full shape and added as a whole (``accumulate_grad``), each slice would cost two passes
    over the whole tensor; the fused Q, K, V weights of the model's two blocks receive
    eleven slices in a training step. Instead the first slice makes a zeroed gradient of
    the full shape that belongs to this backward pass (``_own_grad``), and every slice is
    added into it in place. A gradient array that came from elsewhere may be shared, so it
    is copied first.
    """
    if not tensor.requires_grad:
        return
    if tensor.grad is None or tensor.grad is not tensor._own_grad:
        own = np.zeros_like(tensor.data) if tensor.grad is None else np.array(tensor.grad)
        tensor.grad = tensor._own_grad = own
    tensor.grad[index] += grad


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` down to ``shape``: the backward of NumPy broadcasting.

    Broadcasting copies an input along new leading axes and along axes of length 1, so
    the input's gradient is the sum of the gradients of all its copies.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def as_tensor(value, dtype) -> Tensor:
    """Tensors pass through; numbers and arrays become constants of the given dtype.

    A float array of another precision is refused rather than rounded (float32 + a float64
    array would silently drop the float64 digits); plain numbers are converted, as NumPy
    does for ``float32_array + 0.5``.
    """
    if isinstance(value, Tensor):
        return value
    if value is None:
        raise TypeError("an operand is None, not a number, array or Tensor")
    if isinstance(value, np.ndarray) and value.ndim and value.dtype.kind == "f" \
            and value.dtype != dtype:
        raise ValueError(f"a {value.dtype} array cannot join {np.dtype(dtype)} Tensors; "
                         f"convert it explicitly, tinygrok never changes precision silently")
    return Tensor(np.asarray(value, dtype=dtype))


def _tensor(a, op: str) -> Tensor:
    """``a``, checked to be a Tensor: an array given here failed deep inside the op (a
    'memoryview' or 'requires_grad' AttributeError)."""
    if not isinstance(a, Tensor):
        raise TypeError(f"{op} takes a Tensor, got {type(a).__name__}; wrap an array as "
                        f"Tensor(array) (with requires_grad=True for its gradient)")
    return a


def _pair(a, b, op: str) -> tuple[Tensor, Tensor]:
    """Two operands of a binary op as tensors of one dtype, or a clear error."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op} needs at least one Tensor")
    dtype = a.dtype if isinstance(a, Tensor) else b.dtype
    a, b = as_tensor(a, dtype), as_tensor(b, dtype)
    if a.dtype != b.dtype:
        raise ValueError(f"{op}: dtypes differ ({a.dtype} and {b.dtype}); convert one "
                         f"explicitly, tinygrok never changes precision silently")
    return a, b


def _check_broadcast(a: Tensor, b: Tensor, op: str) -> None:
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast "
                         f"together") from None


# --------------------------------------------------------------------------------------
# Elementwise arithmetic
# --------------------------------------------------------------------------------------

def add(a, b) -> Tensor:
    """a + b.   d/da = 1, d/db = 1."""
    a, b = _pair(a, b, "add")
    _check_broadcast(a, b, "add")
    out = new_node(a.data + b.data, (a, b), "add")
    if out.requires_grad:
        def _backward(grad_out):
            accumulate_grad(a, grad_out)
            accumulate_grad(b, grad_out)
        out._backward = _backward
    return out


def sub(a, b) -> Tensor:
    """a - b.   d/da = 1, d/db = -1."""
    a, b = _pair(a, b, "sub")
    _check_broadcast(a, b, "sub")
    out = new_node(a.data - b.data, (a, b), "sub")
    if out.requires_grad:
        def _backward(grad_out):
            accumulate_grad(a, grad_out)
            if b.requires_grad:
                accumulate_grad(b, -grad_out)
        out._backward = _backward
    return out


def mul(a, b) -> Tensor:
    """a * b.   d/da = b, d/db = a."""
    a, b = _pair(a, b, "mul")
    _check_broadcast(a, b, "mul")
    out = new_node(a.data * b.data, (a, b), "mul")
    if out.requires_grad:
        def _backward(grad_out):
            if a.requires_grad:
                accumulate_grad(a, grad_out * b.data)
            if b.requires_grad:
                accumulate_grad(b, grad_out * a.data)
        out._backward = _backward
    return out


def div(a, b) -> Tensor:
    """a / b.   d/da = 1/b, d/db = -a/b**2."""
    a, b = _pair(a, b, "div")
    _check_broadcast(a, b, "div")
    quotient = a.data / b.data
    out = new_node(quotient, (a, b), "div")
    if out.requires_grad:
        def _backward(grad_out):
            if a.requires_grad:
                accumulate_grad(a, grad_out / b.data)
            if b.requires_grad:
                accumulate_grad(b, -grad_out * quotient / b.data)
        out._backward = _backward
    return out


def neg(a: Tensor) -> Tensor:
    """-a.   d/da = -1."""
    a = _tensor(a, "neg")
    out = new_node(-a.data, (a,), "neg")
    if out.requires_grad:
        out._backward = lambda grad_out: accumulate_grad(a, -grad_out)
    return out


def power(a: Tensor, exponent) -> Tensor:
    """a ** c for a constant number c.   d/da = c * a**(c-1)."""
    a = _tensor(a, "power")
    if isinstance(exponent, Tensor) or np.ndim(exponent) != 0:
        raise ValueError("power: the exponent must be a plain number (a scalar constant)")
    c = a.dtype.type(exponent)
    out = new_node(a.data ** c, (a,), "pow")
    if out.requires_grad:
        def _backward(grad_out):
            if c == 0:  # a**0 is 1 everywhere, so the slope is 0 (not 0 * a**-1: NaN at 0)
                accumulate_grad(a, np.zeros_like(a.data))
            else:
                accumulate_grad(a, grad_out * c * a.data ** (c - 1))
        out._backward = _backward
    return out


# --------------------------------------------------------------------------------------
# Matrix product
# --------------------------------------------------------------------------------------

def matmul(a, b) -> Tensor:
    """a @ b for a (..., n, k) and b (..., k, m); leading dimensions broadcast.

    With G = dL/d(a @ b):   dL/da = G @ b^T   and   dL/db = a^T @ G,
    each then summed over the leading dimensions the input was broadcast along.
    """
    a, b = _pair(a, b, "matmul")
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul needs operands of at least 2 dimensions, got shapes "
                         f"{a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: inner dimensions differ in shapes {a.shape} and {b.shape}")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: leading dimensions of shapes {a.shape} and {b.shape} "
                         f"cannot be broadcast together") from None
    out = new_node(_matmul_arrays(a.data, b.data), (a, b), "matmul")
    if out.requires_grad:
        def _backward(g):
            if a.requires_grad:
                accumulate_grad(a, _matmul_arrays(g, np.swapaxes(b.data, -1, -2)))
            if b.requires_grad:
                if b.ndim == 2:
                    # A weight shared by every row: one big product instead of a batch of
                    # small ones summed afterwards (same numbers, far less memory).
                    accumulate_grad(b, _as_rows(a.data).T @ _as_rows(g))
                else:
                    accumulate_grad(b, np.swapaxes(a.data, -1, -2) @ g)
        out._backward = _backward
    return out


def linear(x, weight, bias) -> Tensor:
    """y = x W^T + b for x (..., in), W (out, in), b (out,): a whole Linear layer in one op.

    The same numbers as ``x @ weight.transpose() + bias``, in one pass instead of two: the
    rows of x are folded into one 2-D BLAS product and the bias is added into its result
    in place (a matmul node then an add node would allocate and sweep the output twice).
    With G = dL/dy, its rows folded the same way:

        dL/dx = G W          dL/dW = G^T x          dL/db = sum of G's rows
    """
    x, weight = _pair(x, weight, "linear")
    bias = as_tensor(bias, x.dtype)
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1] \
            or bias.shape != (weight.shape[0],) or bias.dtype != x.dtype:
        raise ValueError(f"linear needs x (..., in), weight (out, in) and bias (out,) of one "
                         f"dtype; got x {x.shape} {x.dtype}, weight {weight.shape} "
                         f"{weight.dtype}, bias {bias.shape} {bias.dtype}")
    rows = _as_rows(x.data)
    y = rows @ weight.data.T
    y += bias.data
    out = new_node(y.reshape(*x.shape[:-1], weight.shape[0]), (x, weight, bias), "linear")
    if out.requires_grad:
        def _backward(grad_out):
            g = _as_rows(grad_out)
            if x.requires_grad:
                accumulate_grad(x, (g @ weight.data).reshape(x.shape))
            if weight.requires_grad:
                accumulate_grad(weight, g.T @ rows)
            if bias.requires_grad:
                accumulate_grad(bias, g.sum(axis=0))
        out._backward = _backward
    return out


def _matmul_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, with a stack of rows times one matrix done as a single 2-D product.

    NumPy runs (512, 4, 128) @ (128, 128) as 512 small products; folding the leading
    dimensions into rows first, (2048, 128) @ (128, 128), is one large and much faster
    BLAS call with the same result.
    """
    if b.ndim == 2 and a.ndim > 2:
        return (_as_rows(a) @ b).reshape(*a.shape[:-1], b.shape[-1])
    return a @ b


def _as_rows(a: np.ndarray) -> np.ndarray:
    """a (..., n) as one 2-D stack of rows (rows, n). The same as ``a.reshape(-1, n)``,
    which NumPy refuses for n = 0 (-1 is then ambiguous); empty arrays are allowed."""
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


# --------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------
# ``sum`` and ``max`` are named as NumPy's (``ag.sum(t)``). In this file they therefore hide
# Python's built-in sum() and max(): code here that wants those must write builtins.sum.

def _normalise_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    for ax in axes:  # as NumPy does: an axis out of range is an error, not wrapped around
        whole = isinstance(ax, (int, np.integer)) and not isinstance(ax, bool)
        if not whole or not -ndim <= ax < ndim:
            accepted = f"an integer from {-ndim} to {ndim - 1}" if ndim else "no axis"
            raise ValueError(f"axis {ax!r} is out of range for a {ndim}-d Tensor "
                             f"(it takes {accepted})")
    return tuple(sorted(int(ax) % ndim for ax in axes))


def _expand_reduced(grad: np.ndarray, axes: tuple, keepdims: bool) -> np.ndarray:
    """Put back the reduced axes (as length 1) so the gradient broadcasts to the input."""
    return grad if keepdims else np.expand_dims(grad, axes)


def sum(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 (mirrors numpy)
    """Sum over ``axis``.   Every input element gets the output's gradient."""
    a = _tensor(a, "sum")
    axes = _normalise_axes(axis, a.ndim)
    out = new_node(a.data.sum(axis=axes, keepdims=keepdims), (a,), "sum")
    if out.requires_grad:
        def _backward(grad_out):
            g = _expand_reduced(grad_out, axes, keepdims)
            accumulate_grad(a, np.broadcast_to(g, a.shape))
        out._backward = _backward
    return out


def mean(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis``.   Every input element gets the output's gradient / count."""
    a = _tensor(a, "mean")
    axes = _normalise_axes(axis, a.ndim)
    count = a.dtype.type(math.prod(a.shape[ax] for ax in axes))
    out = new_node(a.data.mean(axis=axes, keepdims=keepdims), (a,), "mean")
    if out.requires_grad:
        def _backward(grad_out):
            g = _expand_reduced(grad_out, axes, keepdims) / count
            accumulate_grad(a, np.broadcast_to(g, a.shape))
        out._backward = _backward
    return out


def max(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over ``axis``.   The gradient goes to the maximal element (split evenly
    between ties, so it still sums to the output's gradient)."""
    a = _tensor(a, "max")
    axes = _normalise_axes(axis, a.ndim)
    peak = a.data.max(axis=axes, keepdims=True)
    out = new_node(peak if keepdims else np.squeeze(peak, axes), (a,), "max")
    if out.requires_grad:
        def _backward(grad_out):
            is_max = a.data == peak
            share = is_max / is_max.sum(axis=axes, keepdims=True).astype(a.dtype)
            accumulate_grad(a, share * _expand_reduced(grad_out, axes, keepdims))
        out._backward = _backward
    return out


# --------------------------------------------------------------------------------------
# Shape and indexing
# --------------------------------------------------------------------------------------

def reshape(a: Tensor, shape) -> Tensor:
    """Same elements, new shape.   The gradient is reshaped back."""
    a = _tensor(a, "reshape")
    out = new_node(a.data.reshape(shape), (a,), "reshape")
    if out.requires_grad:
        out._backward = lambda grad_out: accumulate_grad(a, grad_out.reshape(a.shape))
    return out


def transpose(a: Tensor, axes=None) -> Tensor:
    """Permute the axes (reverse them when ``axes`` is None).   The gradient is permuted
    back with the inverse permutation."""
    a = _tensor(a, "transpose")
    axes = tuple(range(a.ndim))[::-1] if axes is None else tuple(axes)
    data = a.data.transpose(axes)  # NumPy checks that axes is a permutation
    inverse = tuple(np.argsort([axis % a.ndim for axis in axes]))  # -1 is the last axis
    out = new_node(data, (a,), "transpose")
    if out.requires_grad:
        out._backward = lambda grad_out: accumulate_grad(a, grad_out.transpose(inverse))
    return out


def _has_array_index(index) -> bool:
    """Does the index pick elements by integer arrays (which may pick one twice)? Inside
    an index tuple NumPy reads a list or a tuple as an array: ``a[(0, 0, 1), :]``."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (list, tuple, np.ndarray)) for p in parts)


def getitem(a: Tensor, index) -> Tensor:
    """a[index] with slices, integers or integer arrays.

    The backward adds the gradient into the picked elements of a's gradient (zero
    elsewhere). With slices and integers that is ``accumulate_grad_at``. With integer
    arrays (or lists) the same element can be picked twice, so it must receive both
    gradients, where ``grad[index] += g`` would keep only one. A row lookup ``a[rows]``
    (one array of non-negative row numbers: every gather in the model) adds them with the
    Numba loop ``kernels.scatter_add_rows``; any other integer-array index with
    ``np.add.at``.
    """
    a = _tensor(a, "getitem")
    if isinstance(index, Tensor):
        raise ValueError("index a Tensor with NumPy integers, slices or integer arrays")
    out = new_node(a.data[index], (a,), "getitem")
    if out.requires_grad:
        index = kept_for_backward(index)

        def _backward(grad_out):
            if _is_row_lookup(index, a):  # a[rows]: the embedding's scatter-add, faster
                rows = grad_out.reshape(len(index), math.prod(a.shape[1:]))
                grad = kernels.scatter_add_rows(index, rows, a.shape[0]).reshape(a.shape)
                accumulate_grad(a, grad)
            elif _has_array_index(index):
                grad = np.zeros_like(a.data)
                np.add.at(grad, index, grad_out)
                accumulate_grad(a, grad)
            else:
                accumulate_grad_at(a, index, grad_out)
        out._backward = _backward
    return out


def kept_for_backward(index):
    """A private copy of ``index``'s arrays and lists, for a backward to use later. The
    caller's own array may be refilled before ``backward()`` runs (reused for the next
    batch, say): the gradient then went to the wrong rows, and a value out of range made
    the scatter-add kernel write outside its array."""
    if isinstance(index, tuple):
        return tuple(kept_for_backward(part) for part in index)
    if isinstance(index, (np.ndarray, list)):
        kept = np.array(index)  # a copy
        # NumPy reads [] in an index as no integers, but np.array([]) is float
        return kept.astype(np.intp) if isinstance(index, list) and kept.size == 0 else kept
    return index


def _is_row_lookup(index, a: Tensor) -> bool:
    """True for ``a[rows]`` with ``rows`` a 1-D array of non-negative integers."""
    return (isinstance(index, np.ndarray) and index.ndim == 1 and index.dtype.kind in "iu"
            and a.ndim >= 1 and (index.size == 0 or index.min() >= 0))


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along ``axis``.   Each input gets its own slice of the gradient."""
    tensors = [_tensor(t, "concatenate") for t in tensors]
    if not tensors:
        raise ValueError("concatenate needs at least one Tensor")
    ndim = tensors[0].ndim
    if not -ndim <= axis < ndim:  # also 0-d tensors, which have no axis to join along
        raise ValueError(f"concatenate: axis {axis} is out of range for {ndim}-d tensors")
    dtype = tensors[0].dtype
    if any(t.dtype != dtype for t in tensors):
        raise ValueError(f"concatenate: dtypes differ: {[str(t.dtype) for t in tensors]}")
    try:
        data = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError:
        raise ValueError(f"concatenate: shapes {[t.shape for t in tensors]} do not match "
                         f"outside axis {axis}") from None
    out = new_node(data, tuple(tensors), "concatenate")
    if out.requires_grad:
        boundaries = np.cumsum([t.shape[axis] for t in tensors])[:-1]

        def _backward(grad_out):
            for t, g in zip(tensors, np.split(grad_out, boundaries, axis=axis)):
                accumulate_grad(t, g)
        out._backward = _backward
    return out


def split(a: Tensor, sections, axis: int = 0) -> list[Tensor]:
    """Split into pieces along ``axis``, as ``np.split`` (a count or a list of indices).

    Each piece is a ``getitem`` of a slice, so its gradient lands in its own slice.
    """
    a = _tensor(a, "split")
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"split: axis {axis} is out of range for a {a.ndim}-d Tensor")
    axis = axis % a.ndim
    pieces = np.split(np.arange(a.shape[axis]), sections)
    results = []
    for piece in pieces:
        start, stop = (int(piece[0]), int(piece[-1]) + 1) if len(piece) else (0, 0)
        index = (slice(None),) * axis + (slice(start, stop),)
        results.append(getitem(a, index))
    return results


# --------------------------------------------------------------------------------------
# Elementwise functions
# --------------------------------------------------------------------------------------

def exp(a: Tensor) -> Tensor:
    """e^a.   d/da = e^a (the output itself)."""
    a = _tensor(a, "exp")
    result = np.exp(a.data)
    out = new_node(result, (a,), "exp")
    if out.requires_grad:
        out._backward = lambda grad_out: accumulate_grad(a, grad_out * result)
    return out


def log(a: Tensor) -> Tensor:
    """ln a.   d/da = 1/a."""
    a = _tensor(a, "log")
    out = new_node(np.log(a.data), (a,), "log")
    if out.requires_grad:
        out._backward = lambda grad_out: accumulate_grad(a, grad_out / a.data)
    return out


def tanh(a: Tensor) -> Tensor:
    """tanh a.   d/da = 1 - tanh(a)^2."""
    a = _tensor(a, "tanh")
    result = np.tanh(a.data)
    out = new_node(result, (a,), "tanh")
    if out.requires_grad:
        out._backward = lambda grad_out: accumulate_grad(a, grad_out * (1 - result * result))
    return out


def relu(a: Tensor) -> Tensor:
    """max(a, 0).   d/da = 1 where a > 0, else 0."""
    a = _tensor(a, "relu")
    out = new_node(np.maximum(a.data, 0), (a,), "relu")
    if out.requires_grad:
        out._backward = lambda grad_out: accumulate_grad(a, grad_out * (a.data > 0))
    return out


def gelu(a: Tensor) -> Tensor:
    """GELU(a) = a * Phi(a), with Phi the standard normal CDF (the exact erf form).

    Phi(a) = (1 + erf(a / sqrt 2)) / 2.   d/da = Phi(a) + a * phi(a),
    where phi(a) = exp(-a^2 / 2) / sqrt(2 pi) is the normal density.
    NumPy has no erf, so GELU runs in the Numba kernels of ``tinygrok.kernels`` (float64
    with the exact erf, float32 with a polynomial erf good to 4.4e-7). When a gradient will
    be wanted, the same pass also computes the slope d/da, so the backward is one multiply.
    """
    a = _tensor(a, "gelu")
    if not (_grad_enabled and a.requires_grad):  # new_node's rule for a gradient to flow
        return new_node(kernels.gelu_forward(a.data), (a,), "gelu")
    result, slope = kernels.gelu_and_slope(a.data)  # slope: kept until the backward
    out = new_node(result, (a,), "gelu")
    out._backward = lambda grad_out: accumulate_grad(a, grad_out * slope)
    return out


# --------------------------------------------------------------------------------------
# Neural-network building blocks, each one fused op with an analytic backward
# --------------------------------------------------------------------------------------

def embedding(weight: Tensor, indices: np.ndarray) -> Tensor:
    """Row lookup: out[..., :] = weight[indices[...], :].

    The backward adds each output row's gradient into the row it came from. A token that
    occurs many times in a batch collects the sum of all its gradients (scatter-add,
    ``np.add.at(grad, indices, g)``, done by a short Numba loop that is much faster).
    """
    weight = _tensor(weight, "embedding")
    indices = np.asarray(indices)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be a 2-D table (rows, dim), got shape "
                         f"{weight.shape}")
    if indices.dtype.kind not in "iu":
        raise ValueError(f"embedding: indices must be integers, got {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= weight.shape[0]):
        raise ValueError(f"embedding: indices must lie in [0, {weight.shape[0]}), got "
                         f"values from {indices.min()} to {indices.max()}")
    out = new_node(weight.data[indices], (weight,), "embedding")
    if out.requires_grad:
        indices = kept_for_backward(indices)

        def _backward(grad_out):
            accumulate_grad(weight, kernels.scatter_add_rows(indices, grad_out, weight.shape[0]))
        out._backward = _backward
    return out


def check_layer_norm_eps(eps, dtype) -> None:
    """Raise ValueError unless eps is a finite number > 0 in ``dtype``: None or a string
    became NaN in the kernel, and a negative eps, or one that rounds to 0 in float32
    (1e-50), gave NaN on a constant row."""
    value = np.asarray(eps)  # a number, or a 0-d array of one
    is_number = value.ndim == 0 and value.dtype.kind in "fiu"
    if not (is_number and np.isfinite(value) and np.dtype(dtype).type(value) > 0):
        raise ValueError(f"layer_norm's eps must be a finite number > 0 (in {np.dtype(dtype)}), "
                         f"got {eps!r}")


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Normalise each row (last axis) to mean 0 and variance 1, then scale and shift.

    Forward, over the last axis of length n:
        mu = mean(x),  var = mean((x - mu)^2),  r = 1 / sqrt(var + eps)
        xhat = (x - mu) * r,   y = xhat * weight + bias
    Backward, with g = dL/dy and gh = g * weight (the gradient reaching xhat):
        dL/dbias = sum of g over rows,   dL/dweight = sum of g * xhat over rows
        dL/dx = r * (gh - mean(gh) - xhat * mean(gh * xhat))
    The last line is the chain rule through mu and var done once on paper: shifting x
    changes nothing (hence "- mean(gh)") and scaling x changes nothing up to eps (hence the
    xhat term), so the gradient has no component along either direction (the second only
    up to eps; the formula itself is exact).
    The loops over rows run in Numba (``kernels.layer_norm_forward`` and
    ``kernels.layer_norm_backward_input``), one pass each instead of a dozen NumPy ones.
    """
    x, weight = _pair(x, weight, "layer_norm")
    bias = as_tensor(bias, x.dtype)
    n = x.shape[-1] if x.ndim else 0
    if weight.shape != (n,) or bias.shape != (n,) or bias.dtype != x.dtype or n == 0:
        raise ValueError(f"layer_norm needs x (..., n) with n >= 1, and weight and bias of "
                         f"shape (n,), all of one dtype; got x {x.shape} {x.dtype}, weight "
                         f"{weight.shape} {weight.dtype}, bias {bias.shape} {bias.dtype}")
    check_layer_norm_eps(eps, x.dtype)
    y, xhat, rstd = kernels.layer_norm_forward(x.data, weight.data, bias.data, eps)
    out = new_node(y, (x, weight, bias), "layer_norm")
    if out.requires_grad:
        def _backward(g):
            rows = tuple(range(g.ndim - 1))
            if bias.requires_grad:
                accumulate_grad(bias, g.sum(axis=rows))
            if weight.requires_grad:
                accumulate_grad(weight, (g * xhat).sum(axis=rows))
            if x.requires_grad:
                accumulate_grad(x, kernels.layer_norm_backward_input(g, weight.data, xhat, rstd))
        out._backward = _backward
    return out


def _log_softmax_array(z: np.ndarray, axis: int) -> np.ndarray:
    """log softmax computed stably: subtracting the max keeps every exp() <= 1."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax(a: Tensor, axis: int = -1) -> Tensor:
    """y = a - log(sum(exp(a))) along ``axis``.

    d/da: with s = softmax(a) = exp(y),   dL/da = g - s * sum(g).
    """
    a = _tensor(a, "log_softmax")
    result = _log_softmax_array(a.data, axis)
    out = new_node(result, (a,), "log_softmax")
    if out.requires_grad:
        def _backward(grad_out):
            accumulate_grad(a, grad_out - np.exp(result) * grad_out.sum(axis=axis, keepdims=True))
        out._backward = _backward
    return out


def cross_entropy(logits: Tensor, targets: np.ndarray) -> Tensor:
    """Mean over rows of -log softmax(logits)[target]: the classification loss.

    Fused with the softmax because the gradient is then simple and exact:
        dL/dlogits = (softmax(logits) - onehot(target)) / N.
    """
    logits = _tensor(logits, "cross_entropy")
    targets = np.asarray(targets)
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy: logits must be (N, classes) and targets (N,), got "
                         f"{logits.shape} and {targets.shape}")
    if targets.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: targets must be integers, got {targets.dtype}")
    if targets.size and (targets.min() < 0 or targets.max() >= logits.shape[1]):
        # -1 would silently score the last class (NumPy's negative indexing)
        raise ValueError(f"cross_entropy: targets must be class numbers from 0 to "
                         f"{logits.shape[1] - 1}, got values from {targets.min()} to "
                         f"{targets.max()}")
    n = logits.shape[0]
    rows = np.arange(n)
    log_probs = _log_softmax_array(logits.data, axis=1)
    out = new_node(-log_probs[rows, targets].mean(), (logits,), "cross_entropy")
    if out.requires_grad:
        targets = kept_for_backward(targets)

        def _backward(grad_out):
            grad = np.exp(log_probs)
            grad[rows, targets] -= 1
            accumulate_grad(logits, grad * (grad_out / n))
        out._backward = _backward
    return out
