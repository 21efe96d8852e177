"""AdamW with decoupled weight decay, and a linear learning-rate warm-up.

The update, as PyTorch's ``torch.optim.AdamW`` defines it, for one parameter p with gradient g
at step t = 1, 2, ..., where lr is the learning rate of this step (after warm-up, below).
Loshchilov & Hutter (2017) decay by eta_t * wd, eta_t the schedule's multiplier; PyTorch, and
so tinygrok, decay by lr * wd, so weight_decay=0.5 means what it means in PyTorch.

    p  <- p * (1 - lr * wd)                      decoupled weight decay
    m  <- b1 * m + (1 - b1) * g                  running mean of g      ("first moment")
    v  <- b2 * v + (1 - b2) * g**2               running mean of g**2   ("second moment")
    m^ =  m / (1 - b1**t),   v^ = v / (1 - b2**t)   bias correction: m, v start at 0
    p  <- p - lr * m^ / (sqrt(v^) + eps)

Why decouple the decay?  Plain Adam with L2 regularisation adds wd * p to the gradient, and
that term then goes through the same 1 / sqrt(v^) rescaling as the loss gradient: a weight
with large gradients (large v^) is barely decayed, one with tiny gradients is decayed a lot.
AdamW instead shrinks every weight by the same factor (1 - lr * wd) per step, outside Adam.

The last line is computed, as PyTorch does, in the arrangement

    p <- p - (lr / (1 - b1**t)) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)

which is the same maths but rounds like ``torch.optim.AdamW``, so results match it closely.

Learning rate: lr_now = lr * warmup_factor(completed_steps, warmup_steps), with the factor
min(completed / warmup, 1). The first step therefore has lr 0: p does not move, but m, v are
updated and the step counts, exactly as torch.optim.AdamW driven by a LambdaLR scheduler.

A parameter is any object with ``.data`` (float NumPy array, updated in place) and ``.grad``
(array of the same shape, or None: the parameter is skipped that step). As in PyTorch, each
parameter keeps its own update count t for bias correction; warm-up follows the global step.
"""
import math

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _adamw_update(p, g, m, v, shrink, b1, one_minus_b1, b2, one_minus_b2, step_size,
                  bias_correction2_sqrt, eps):
    """One AdamW update of every element, in place, in one pass over memory.

    Line by line the module docstring's maths (in PyTorch's arrangement of the last line);
    a loop in Numba instead of a dozen NumPy calls that each sweep the whole array.
    """
    for i in prange(p.size):
        p[i] *= shrink                                              # decay: 1 - lr wd
        m[i] = m[i] * b1 + g[i] * one_minus_b1                      # first moment
        v[i] = v[i] * b2 + g[i] * one_minus_b2 * g[i]               # second moment
        denominator = np.sqrt(v[i]) / bias_correction2_sqrt + eps
        p[i] -= m[i] / denominator * step_size


def warmup_factor(completed_steps, warmup_steps):
    """Learning-rate multiplier after `completed_steps` updates: min(completed / warmup, 1)."""
    if warmup_steps == 0:
        return 1.0
    return min(completed_steps / warmup_steps, 1.0)


def _is_number(value) -> bool:
    """A finite real number (a bool is not one here, nor a string or an array)."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and math.isfinite(value))


def _check_hyperparameters(lr, betas, eps, weight_decay, warmup_steps):
    if np.shape(betas) != (2,):
        raise ValueError(f"invalid betas={betas!r}: must be two numbers (beta1, beta2)")
    b1, b2 = betas
    # Each rule states what must hold, so NaN (every comparison with it is False) fails too.
    checks = [("lr", lr, lambda x: x >= 0, "a number >= 0"),
              ("beta1", b1, lambda x: 0 <= x < 1, "a number in [0, 1)"),
              ("beta2", b2, lambda x: 0 <= x < 1, "a number in [0, 1)"),
              ("eps", eps, lambda x: x > 0, "a number > 0"),
              ("weight_decay", weight_decay, lambda x: x >= 0, "a number >= 0"),
              ("warmup_steps", warmup_steps,
               lambda x: isinstance(x, (int, np.integer)) and x >= 0, "an integer >= 0")]
    for name, value, holds, rule in checks:
        if not (_is_number(value) and holds(value)):
            raise ValueError(f"invalid {name}={value!r}: must be {rule}")


class AdamW:
    """AdamW over a list of parameters; see the module docstring for the maths.

    Attributes students may want to look at: ``step_count`` (completed steps, drives the
    warm-up), ``param_steps[i]`` (the t of parameter i), ``m[i]`` and ``v[i]`` (its moments).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.5,
                 warmup_steps=50):
        if hasattr(params, "data"):  # list(w) would give w's rows, which never get a .grad
            raise TypeError(f"params must be a list of parameters, such as AdamW([w]) or "
                            f"AdamW(model.parameters()), got a single {type(params).__name__}")
        self.params = list(params)
        if not self.params:
            raise ValueError("AdamW got an empty parameter list")
        for i, p in enumerate(self.params):
            data = getattr(p, "data", None)
            if not (isinstance(data, np.ndarray) and data.dtype.kind == "f"):
                raise TypeError(f"parameter {i} is a {type(p).__name__} without a float NumPy "
                                f"array in .data; AdamW updates objects with .data and .grad, "
                                f"such as Tensor(array, requires_grad=True)")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("AdamW got a parameter listed twice; it would be updated twice "
                             "a step")
        if not all(p.data.flags.c_contiguous for p in self.params):
            raise ValueError("AdamW updates parameters in place through flat views, so "
                             "every parameter array must be C-contiguous")
        _check_hyperparameters(lr, betas, eps, weight_decay, warmup_steps)
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        self.weight_decay, self.warmup_steps = weight_decay, warmup_steps
        self.step_count = 0                                   # completed optimizer steps
        self.param_steps = np.zeros(len(self.params), dtype=np.int64)  # t of each parameter
        # Buffers are allocated once; step() only ever writes into them.
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]

    def current_lr(self):
        """The learning rate the next call to step() will use."""
        return self.lr * warmup_factor(self.step_count, self.warmup_steps)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        """One AdamW update of every parameter that has a gradient, in place. The settings
        (which may have been changed since, ``optimizer.lr = ...``) and every parameter are
        checked first, so a bad one raises before anything is updated."""
        _check_hyperparameters(self.lr, self.betas, self.eps, self.weight_decay,
                               self.warmup_steps)
        lr = self.current_lr()
        b1, b2 = self.betas
        for i, p in enumerate(self.params):
            self._check(i, p)
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            self.param_steps[i] += 1
            t = int(self.param_steps[i])
            # Scalars are computed in Python floats, then cast to the array's dtype, so
            # float32 stays float32 (a float64 scalar would make the update float64).
            c = p.data.dtype.type
            _adamw_update(p.data.reshape(-1), np.ascontiguousarray(g).reshape(-1),
                          self.m[i].reshape(-1), self.v[i].reshape(-1),
                          c(1.0 - lr * self.weight_decay), c(b1), c(1.0 - b1), c(b2),
                          c(1.0 - b2), c(lr / (1.0 - b1 ** t)), c(math.sqrt(1.0 - b2 ** t)),
                          c(self.eps))
        self.step_count += 1

    def _check(self, i, p):
        """Parameter ``i`` can be updated: its .data still has the shape and dtype of its
        moment buffers and is C-contiguous (the kernel writes through a flat view of it),
        and its .grad is None or a NumPy array like .data."""
        data, g = p.data, p.grad
        if (not isinstance(data, np.ndarray) or data.shape != self.m[i].shape
                or data.dtype != self.m[i].dtype or not data.flags.c_contiguous):
            raise ValueError(f"parameter {i}: its .data is no longer a C-contiguous "
                             f"{self.m[i].shape} {self.m[i].dtype} array, as when AdamW was "
                             f"made; make a new AdamW for the new arrays")
        if g is None:
            return
        if not isinstance(g, np.ndarray):
            raise TypeError(f"parameter {i}: grad must be a NumPy array (or None), got a "
                            f"{type(g).__name__}")
        if g.shape != data.shape or g.dtype != data.dtype:
            raise ValueError(f"parameter {i}: grad {g.shape} {g.dtype} does not match data "
                             f"{data.shape} {data.dtype}")

    def state_dict(self):
        """Everything needed to resume, as a flat dict of arrays and numbers (for np.savez)."""
        d = {"step_count": self.step_count, "param_steps": self.param_steps.copy(),
             "lr": self.lr, "beta1": self.betas[0], "beta2": self.betas[1], "eps": self.eps,
             "weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps}
        for i in range(len(self.params)):
            d[f"m_{i}"] = self.m[i].copy()
            d[f"v_{i}"] = self.v[i].copy()
        return d

    def load_state_dict(self, d):
        """Restore a state_dict() (or what np.load gives back for it), copying into our buffers."""
        n = len(self.params)
        n_saved = sum(1 for k in d if k.startswith("m_"))
        if n_saved != n:
            raise ValueError(f"state has {n_saved} parameters, this optimizer has {n}")
        expected = {"step_count": (), "param_steps": (n,), "lr": (), "beta1": (), "beta2": (),
                    "eps": (), "weight_decay": (), "warmup_steps": ()}
        for i in range(n):
            expected[f"m_{i}"] = expected[f"v_{i}"] = self.m[i].shape
        unknown = sorted(set(d) - set(expected))
        if unknown:
            raise ValueError(f"state has keys this optimizer does not know: {unknown}")
        for key, shape in expected.items():
            if key not in d:
                raise ValueError(f"state is missing {key!r}")
            if np.shape(d[key]) != shape:
                raise ValueError(f"{key!r} has shape {np.shape(d[key])}, expected {shape}")
        for key in ("step_count", "param_steps", "warmup_steps"):  # counts: not 2.7, not -1
            count = np.asarray(d[key])
            if count.dtype.kind not in "iu" or (count < 0).any():
                raise ValueError(f"{key!r} must hold integers >= 0, got {d[key]!r}")
        for i in range(n):
            m, v = np.asarray(d[f"m_{i}"]), np.asarray(d[f"v_{i}"])
            if m.dtype.kind != "f" or v.dtype.kind != "f" or (v < 0).any():
                raise ValueError(f"'m_{i}' and 'v_{i}' must be float arrays, v >= 0 (a mean "
                                 f"of squares)")
        hyper = (float(d["lr"]), (float(d["beta1"]), float(d["beta2"])), float(d["eps"]),
                 float(d["weight_decay"]), int(d["warmup_steps"]))
        _check_hyperparameters(*hyper)
        # Only now that everything is checked do we change anything: no half-loaded state.
        self.lr, self.betas, self.eps, self.weight_decay, self.warmup_steps = hyper
        for i in range(n):
            np.copyto(self.m[i], d[f"m_{i}"])
            np.copyto(self.v[i], d[f"v_{i}"])
        np.copyto(self.param_steps, d["param_steps"])
        self.step_count = int(d["step_count"])
