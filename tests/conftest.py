"""Shared test fixtures: the reference fixture folder in ../shared (present in CI)."""

import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(os.path.dirname(REPO_ROOT), 'shared', 'fixtures', 'dir_reference')


@pytest.fixture(scope='session')
def fixture_dir() -> str:
  """The authors' PyTorch reference outputs (../shared/fixtures/dir_reference)."""
  if not os.path.isdir(FIXTURE_DIR):
    raise FileNotFoundError(
        f'reference fixture not found at {FIXTURE_DIR}; clone the project next to its shared/ folder'
    )
  return FIXTURE_DIR


@pytest.fixture(scope='session')
def fixture_mano_dir(fixture_dir) -> str:
  return os.path.join(fixture_dir, 'mano')


COMPILATION_CACHE_OPTIONS = (
    'jax_enable_compilation_cache',
    'jax_compilation_cache_dir',
    'jax_persistent_cache_min_compile_time_secs',
    'jax_persistent_cache_min_entry_size_bytes',
)


@pytest.fixture(scope='module')
def restore_compilation_cache_options():
  """Puts JAX's persistent-cache options back after the module (the tools under test set them)."""
  import jax  # pylint: disable=import-outside-toplevel  # not at import time: sharding tests set XLA_FLAGS first

  saved = {name: getattr(jax.config, name) for name in COMPILATION_CACHE_OPTIONS}
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
