"""A tiny synthetic InterHand2.6M (generated twice, same seed) and its builds, shared by the tests."""

import pytest

from data_prep import synthetic
from data_prep.interhand26m import convert, raw
from data_prep.interhand26m.interhand26m_dataset_builder import build
from dir_jax.mano import load_mano_pair

NUM_TRAIN = 4  # one frame seen by all four listed cameras (three portrait, one of them grey)
NUM_TEST = 2  # listed cameras 0 and 1 (1 is grey); no val split: the builder must leave it out
SEED = 3


@pytest.fixture(scope='session')
def synthetic_raw(tmp_path_factory):
  """(raw_dir, generator summary) of the synthetic dataset."""
  folder = str(tmp_path_factory.mktemp('raw_a'))
  return folder, synthetic.generate(folder, num_train=NUM_TRAIN, num_test=NUM_TEST, seed=SEED)


@pytest.fixture(scope='session')
def synthetic_raw_again(tmp_path_factory):
  """The same arguments written to another folder."""
  folder = str(tmp_path_factory.mktemp('raw_b'))
  return folder, synthetic.generate(folder, num_train=NUM_TRAIN, num_test=NUM_TEST, seed=SEED)


@pytest.fixture(scope='session')
def mano_pair(synthetic_raw):
  return load_mano_pair(raw.mano_dir(synthetic_raw[0]))


@pytest.fixture(scope='session')
def local_build(synthetic_raw, tmp_path_factory):
  """The builder prepared in-process from the first raw folder."""
  return build(synthetic_raw[0], str(tmp_path_factory.mktemp('tfds_local')))


@pytest.fixture(scope='session')
def beam_build(synthetic_raw_again, tmp_path_factory):
  """The builder prepared with Beam (one worker process) from the second raw folder, 3 records a
  shard (train: two shards)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(convert, 'RECORDS_PER_SHARD', 3)
    return build(synthetic_raw_again[0], str(tmp_path_factory.mktemp('tfds_beam')), beam=True, num_workers=1)


@pytest.fixture(scope='session')
def all_build(synthetic_raw, tmp_path_factory):
  """The builder's 'all' config (single-hand annotations too) prepared in-process, first raw folder."""
  return build(synthetic_raw[0], str(tmp_path_factory.mktemp('tfds_all')), config='all')
