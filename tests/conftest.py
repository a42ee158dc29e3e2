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
        f'reference fixture not found at {FIXTURE_DIR}; clone the project next to its shared/ folder')
  return FIXTURE_DIR


@pytest.fixture(scope='session')
def fixture_mano_dir(fixture_dir) -> str:
  return os.path.join(fixture_dir, 'mano')
