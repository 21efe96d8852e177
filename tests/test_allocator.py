"""``import tinygrok`` tells glibc's malloc to keep freed memory (tinygrok/allocator.py)."""

import os
import subprocess
import sys

import pytest

from tinygrok import allocator

if not allocator.keep_freed_memory():
    pytest.skip("no glibc mallopt here: the allocator setting does nothing",
                allow_module_level=True)


def fresh_python(code: str, **environment) -> str:
    """What ``code`` prints in a new Python, with none of this process's own malloc settings
    (MALLOC_*) and with ``environment`` added."""
    own = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=dict(own, **environment)).stdout.strip()


def applied_in_a_fresh_interpreter(**environment) -> bool:
    """Whether the setting is on in a new Python that only imports the package (importing
    ``tinygrok.allocator`` runs the package's ``__init__`` first, and nothing else)."""
    return fresh_python("import tinygrok.allocator as a; print(a._done)", **environment) == "True"


def test_importing_tinygrok_sets_the_allocator():
    assert applied_in_a_fresh_interpreter()


def test_your_own_malloc_thresholds_are_left_alone():
    """With MALLOC_TRIM_THRESHOLD_ in the environment glibc applies it itself, and importing
    tinygrok does not override it."""
    assert not applied_in_a_fresh_interpreter(MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied_in_a_fresh_interpreter(MALLOC_MMAP_THRESHOLD_="131072")


def test_a_freed_8_mb_array_stays_in_the_heap_for_the_next_one():
    """The reason the module exists: with glibc's default (a dynamic threshold that starts at
    128 kB) an 8 MB block would come from mmap, and every step would pay its page faults
    again. With tinygrok's threshold (64 MB) it comes from the heap: mallinfo2's hblkhd,
    the bytes in mmap'd blocks, does not grow."""
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")
    code = ("import ctypes, tinygrok\n"
            "class Info(ctypes.Structure):\n"
            "    _fields_ = [(name, ctypes.c_size_t) for name in 'arena ordblks smblks hblks "
            "hblkhd usmblks fsmblks uordblks fordblks keepcost'.split()]\n"
            "libc = ctypes.CDLL(None)\n"
            "libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p\n"
            "before = libc.mallinfo2().hblkhd\n"
            "block = libc.malloc(8 << 20)\n"
            "print(libc.mallinfo2().hblkhd - before)")
    assert fresh_python(code) == "0"
