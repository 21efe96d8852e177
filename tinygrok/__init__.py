"""tinygrok: a from-scratch NumPy + Numba transformer that groks modular arithmetic on a CPU.

The pieces, in the order data flows through them:

- ``autograd``  : ``Tensor`` and reverse-mode differentiation over NumPy arrays
- ``gradcheck`` : finite-difference check of any gradient
- ``attention`` : Numba softmax-attention kernels that hand back the attention matrices
- ``lanes``     : dot products in eight SIMD lanes and sums of weighted rows in SIMD
                  registers, for the attention and LayerNorm kernels
- ``softmax_exp``: exp() of sixteen float32 at once, for the attention's softmax
- ``nn``, ``model`` : the paper's 2-layer transformer
- ``adamw``     : AdamW with decoupled weight decay and a linear warm-up
- ``tasks``     : x+y, x-y, x/y mod p and permutation composition in S5
- ``config``    : ``TrainConfig``, every setting of a run, and the run command's defaults
- ``train``, ``run`` : the training loop and its command line
- ``trained_model`` : a run's trained model back from its folder (``load_model``)
- ``analysis``, ``plots`` : what a run directory tells about grokking
"""

import os

__version__ = "0.1.0"

# ``python -m tinygrok.run`` (or analyze, report, sweep): Ctrl-C while the command still
# imports NumPy and Numba exits at once with code 130, not with a traceback through their
# insides; each command puts Python's handlers back before it starts (startup_signals.py).
from tinygrok import startup_signals  # noqa: E402  (it imports only signal and sys)

if startup_signals.starting_a_command():
    startup_signals.exit_quietly_on_signals()

# Numba's parallel kernels run on an OpenMP thread pool, and by default OpenMP threads
# keep spinning for a while after each kernel: they hold the cores that NumPy's BLAS
# threads need for the next matrix product. On a 2-core machine that made a training step
# at 2 threads 5x slower (292 ms against 54-63 ms, benchmarks/README.md). PASSIVE lets
# idle threads sleep. It is read when the pool starts (at the first parallel kernel, after
# this import); a value already set in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# glibc's malloc hands big freed blocks back to the system, and the next allocation of the
# same size then pays a page fault per 4 KB. tinygrok allocates such blocks all the time
# (every op's output and gradient), so it asks malloc to keep them (allocator.py). At
# import, not at the first training step: a forward and backward through attention alone
# (B=512, T=4) took 1.06 ms instead of 0.63 when a few arrays held elsewhere left freed
# blocks at the top of the heap (benchmarks/README.md, "An eighth session"). As with
# OMP_WAIT_POLICY, your own setting wins: glibc reads MALLOC_MMAP_THRESHOLD_ and
# MALLOC_TRIM_THRESHOLD_ from the environment itself, and then tinygrok leaves them be.
from tinygrok.allocator import keep_freed_memory  # noqa: E402  (after the setting above)

if not (os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_")):
    keep_freed_memory()

# Numba keeps the compiled kernels in tinygrok/__pycache__ or the user's cache folder; where
# neither can be written it refuses to define them at all, so a cache in the system's
# temporary folder is used then, and only then (numba_cache.py). Your NUMBA_CACHE_DIR wins.
from tinygrok.numba_cache import use_a_temporary_cache_if_needed  # noqa: E402

use_a_temporary_cache_if_needed()
