"""One setting for the whole test session.

A NUMBA_NUM_THREADS below the cores (set for some other program, say) leaves NumPy's
matrix products on every core while the run command accepts at most NUMBA_NUM_THREADS
threads. A run trained from Python in such a process then records more threads than
``python -m tinygrok.run --resume`` may use there, and the command refuses it, as it
should (it names the variable to set). Many tests make a run in Python and resume it with
the command, so in that environment only, the products are limited to Numba's count first.
"""


def pytest_configure(config):
    from tinygrok import threads

    if threads.current_threads() > threads.available_threads():
        threads.set_threads()  # one per core, at most NUMBA_NUM_THREADS
