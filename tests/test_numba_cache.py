"""Where Numba keeps the kernels when neither of its own places can be written."""

import os

import numba.core.config
import pytest

from tinygrok import numba_cache


@pytest.fixture
def numba_settings(monkeypatch):
    """Numba's cache setting as the process has it, put back after the test."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", "")
    return monkeypatch


def test_nothing_changes_where_numba_can_cache(numba_settings):
    assert numba_cache.use_a_temporary_cache_if_needed() is None
    assert "NUMBA_CACHE_DIR" not in os.environ and numba.core.config.CACHE_DIR == ""


def test_a_temporary_folder_where_nothing_else_can_be_written(numba_settings, tmp_path):
    numba_settings.setattr(numba_cache, "can_write_into", lambda folder: False)
    numba_settings.setattr(numba_cache.tempfile, "gettempdir", lambda: str(tmp_path))
    numba_settings.setenv("USER", "alice")
    folder = numba_cache.use_a_temporary_cache_if_needed()
    assert folder is not None and os.path.dirname(folder) == str(tmp_path)
    assert "alice" in os.path.basename(folder)  # one per user: another's may not be writable
    assert os.environ["NUMBA_CACHE_DIR"] == numba.core.config.CACHE_DIR == folder


def test_the_user_cache_folder_is_enough(numba_settings, tmp_path):
    package = numba_cache.Path(numba_cache.__file__).parent / "__pycache__"
    numba_settings.setattr(numba_cache, "can_write_into", lambda folder: folder != package)
    assert numba_cache.use_a_temporary_cache_if_needed() is None
    assert "NUMBA_CACHE_DIR" not in os.environ


def test_a_cache_folder_you_set_is_left_alone(numba_settings, tmp_path):
    numba_settings.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    numba_settings.setattr(numba_cache, "can_write_into", lambda folder: False)
    assert numba_cache.use_a_temporary_cache_if_needed() is None
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")


def test_can_write_into_makes_the_folder_and_tells_a_file_apart(tmp_path):
    assert numba_cache.can_write_into(tmp_path / "new" / "cache")
    assert (tmp_path / "new" / "cache").is_dir()
    (tmp_path / "a file").write_text("")
    assert not numba_cache.can_write_into(tmp_path / "a file")


@pytest.mark.parametrize("damage", ["emptied", "cut short"])
def test_a_damaged_cached_kernel_is_one_line_that_says_what_to_delete(tmp_path, damage):
    """A cache file emptied or cut short made click print "Aborted!" (pickle's EOFError).
    The real command, in a cache of its own (NUMBA_CACHE_DIR) filled with this checkout's
    cached kernels, one of them damaged."""
    import shutil
    import subprocess
    import sys

    from tinygrok.train import warm_up_kernels

    warm_up_kernels()  # this checkout's cache holds every kernel a run uses now
    ours = numba_cache.kernel_cache_folder()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    where = subprocess.run([sys.executable, "-c", "from tinygrok.numba_cache import "
                            "kernel_cache_folder as f; print(f())"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    shutil.copytree(ours, where, dirs_exist_ok=True, ignore=lambda folder, names: [
        n for n in names if not n.endswith((".nbi", ".nbc"))])
    index = next(numba_cache.Path(where).glob("adamw._adamw_update-*.nbi"))
    index.write_bytes(b"" if damage == "emptied" else index.read_bytes()[:20])
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "tinygrok.run", "--task", "x_plus_y", "--p", "7", "--steps",
         "10", "--batch-size", "8", "--d-model", "8", "--heads", "2", "--log-every", "5",
         "--probe-size", "3", "--threads", "1", "--out", str(out)],  # 1: no busy-machine note
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: Numba's cache of compiled kernels is damaged ("), \
        result.stderr
    assert result.stderr.count("\n") == 1 and "Aborted" not in result.stderr
    assert f"(rm {where}/*.nbi {where}/*.nbc)" in result.stderr
    assert not out.exists()  # nothing written
    # Deleting the files clears it. (Only the damaged kernel's here: compiling all of
    # them again would cost the suite 20 s.)
    for cached in numba_cache.Path(where).glob("adamw._adamw_update-*.nb[ic]"):
        cached.unlink()
    rerun = subprocess.run([sys.executable, "-c", "from tinygrok.train import warm_up_kernels\n"
                            "warm_up_kernels()"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert index.stat().st_size > 20  # compiled and cached again


def test_a_folder_where_no_file_can_be_made_is_not_writable(tmp_path, monkeypatch):
    """The test must make a file: a folder can exist, and even look writable by its mode
    bits to root, and still refuse one (a read-only mount). Otherwise Numba, told the
    folder is fine, fails later with "no locator available"."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    assert numba_cache.can_write_into(tmp_path)
    monkeypatch.setattr(numba_cache.tempfile, "TemporaryFile", refuse)
    assert not numba_cache.can_write_into(tmp_path)
