"""Session fixtures for the input-pipeline tests: a synthetic MANO pair, examples and a tiny tfds dataset."""

import numpy as np
import pytest

from data_prep import synthetic_mano
from dir_jax.mano import load_mano_pair
from tests.data import fake_interhand

NUM_TRAIN = 12
NUM_TEST = 9  # odd, so that process shards and batches leave remainders


@pytest.fixture(scope='session')
def mano_pair(tmp_path_factory):
  folder = tmp_path_factory.mktemp('mano')
  synthetic_mano.write_all(str(folder), seed=3)
  return load_mano_pair(str(folder))


@pytest.fixture(scope='session')
def examples(mano_pair):
  """{split: [example]} in the builder's form; image ids 0..NUM_TRAIN + NUM_TEST - 1."""
  rng = np.random.default_rng(0)
  generated = [fake_interhand.random_example(mano_pair, rng, i) for i in range(NUM_TRAIN + NUM_TEST)]
  return {'train': generated[:NUM_TRAIN], 'test': generated[NUM_TRAIN:]}


@pytest.fixture(scope='session')
def tfds_dirs(tmp_path_factory, examples):
  """(data_dir, builder_dir) of the examples written as tfds `interhand26m` (2 shards per split)."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  return data_dir, fake_interhand.write_dataset(data_dir, examples)
