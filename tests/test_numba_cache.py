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
    folder = numba_cache.use_a_temporary_cache_if_needed()
    assert folder is not None and os.path.dirname(folder) == str(tmp_path)
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
