"""The persistent compilation cache helper: the default folder, JAX's options set, '' turns it off."""

import os

import jax
import pytest

from dir_jax import compilation_cache

pytestmark = pytest.mark.usefixtures('restore_compilation_cache_options')


def test_default_folder_honours_xdg_cache_home(tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compilation_cache.default_cache_dir() == str(tmp_path / 'xdg' / 'dir_jax' / 'jax_cache')
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert compilation_cache.default_cache_dir() == str(tmp_path / 'home' / '.cache' / 'dir_jax' / 'jax_cache')


@pytest.mark.parametrize('given', ['relative/cache', None])
def test_configure_sets_the_jax_options(tmp_path, monkeypatch, given):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  expected = str(tmp_path / 'relative' / 'cache') if given else str(tmp_path / 'xdg' / 'dir_jax' / 'jax_cache')
  assert compilation_cache.configure(given) == expected
  assert os.path.isdir(expected)
  assert jax.config.jax_enable_compilation_cache is True
  assert jax.config.jax_compilation_cache_dir == expected
  assert jax.config.jax_persistent_cache_min_compile_time_secs == compilation_cache.MIN_COMPILE_TIME_S
  assert jax.config.jax_persistent_cache_min_entry_size_bytes == compilation_cache.MIN_ENTRY_SIZE_BYTES


def test_empty_folder_turns_the_cache_off(tmp_path):
  compilation_cache.configure(str(tmp_path / 'cache'))
  assert compilation_cache.configure('') is None
  assert jax.config.jax_enable_compilation_cache is False


def test_a_folder_that_cannot_be_created_is_named(tmp_path):
  (tmp_path / 'file').write_text('')
  path = str(tmp_path / 'file' / 'cache')
  with pytest.raises(compilation_cache.CompilationCacheError, match='--my-flag') as error:
    compilation_cache.configure(path, '--my-flag')
  assert path in str(error.value)
