"""How many CPU threads tinygrok uses: one number for BLAS and for the Numba kernels.

NumPy's matrix products run in OpenBLAS's threads and the kernels in Numba's; both pools
share the same cores, so they get the same count (more threads than cores only makes them
wait for each other). Results are bit-identical for a given thread count, which is why
``config.json`` records it.
"""

import numba
from threadpoolctl import threadpool_limits


def available_threads() -> int:
    return numba.config.NUMBA_NUM_THREADS


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` threads (default: all that Numba may use) and return the count."""
    threads = threads or available_threads()
    if not 1 <= threads <= available_threads():
        raise ValueError(f"threads must be between 1 and {available_threads()} on this "
                         f"machine, got {threads}")
    threadpool_limits(limits=threads, user_api="blas")
    numba.set_num_threads(threads)
    return threads


def current_threads() -> int:
    return numba.get_num_threads()
