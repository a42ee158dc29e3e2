"""Session fixtures for the input-pipeline and augmentation tests: a tiny InterHand2.6M, built as the real one is.

`data_prep.synthetic` writes a raw InterHand2.6M download (JPEG views, the four annotation JSONs, a
synthetic MANO pair, planted broken entries); the real tfds builder (`data_prep/interhand26m`, config
'interacting') converts it, two shards per split. The tests read the examples back from the built
dataset, so they see exactly what the training and evaluation pipelines read.
"""

import pytest
import tensorflow_datasets as tfds

from data_prep import synthetic
from data_prep.interhand26m import raw
from data_prep.interhand26m.interhand26m_dataset_builder import Interhand26m
from dir_jax.data import input_pipeline
from dir_jax.mano import load_mano_pair

NUM_TRAIN = 12
NUM_TEST = 9  # odd, so that process shards and batches leave remainders
NUM_SHARDS = 2  # TFRecord files per split: the train stream interleaves and shuffles several files
SEED = 3
# The image ids the builder keeps: `synthetic.write_split` lists a split's valid views first in
# data.json and numbers its annotations 100000 * SPLIT_INDEX[split] + k.
IMAGE_IDS = {
    split: [100000 * synthetic.SPLIT_INDEX[split] + k for k in range(count)]
    for split, count in (('train', NUM_TRAIN), ('test', NUM_TEST))
}


@pytest.fixture(scope='session')
def raw_dir(tmp_path_factory) -> str:
  """The synthetic raw InterHand2.6M folder (train and test splits, MANO in `raw.mano_dir`)."""
  folder = str(tmp_path_factory.mktemp('raw'))
  synthetic.generate(folder, num_train=NUM_TRAIN, num_test=NUM_TEST, seed=SEED)
  return folder


@pytest.fixture(scope='session')
def mano_pair(raw_dir):
  """The synthetic MANO pair the raw data was posed with and the builder converted it with."""
  return load_mano_pair(raw.mano_dir(raw_dir))


@pytest.fixture(scope='session')
def tfds_dirs(tmp_path_factory, raw_dir) -> tuple[str, str]:
  """(data_dir, builder_dir) of the raw folder converted by the real builder (config 'interacting').

  Prepared as `interhand26m_dataset_builder.build` prepares it (in-process, no Beam), with
  NUM_SHARDS files per split instead of tfds' automatic one.
  """
  input_pipeline.hide_gpus_from_tensorflow()  # before the build first runs TensorFlow, as the pipeline does
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  builder = Interhand26m(data_dir=data_dir, config='interacting')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=raw_dir, num_shards=NUM_SHARDS))
  for split, ids in IMAGE_IDS.items():
    assert builder.info.splits[split].num_examples == len(ids), f'{split}: the builder kept other views'
  return data_dir, builder.data_dir


@pytest.fixture(scope='session')
def examples(tfds_dirs) -> dict[str, list[dict]]:
  """{split: [example]} read back from the built dataset, in image id order.

  Each example is in the builder's form as tfds decodes it: `image` (256, 256, 3) uint8, `seg`
  (256, 256, 1) uint8 labels, `dense` (256, 256, 3) uint8 (255 x template coordinates),
  `intrinsics` (3, 3) float32 pixels, `mano` {side: {key: float32 array}} in the camera frame
  (metres), the identifiers (`camera` as bytes) and the evaluation fields.
  """
  builder = input_pipeline.get_builder(tfds_dirs[1])
  read = {
      split: sorted(tfds.as_numpy(builder.as_dataset(split=split)), key=lambda example: int(example['image_id']))
      for split in IMAGE_IDS
  }
  for split, ids in IMAGE_IDS.items():
    assert [int(example['image_id']) for example in read[split]] == ids, f'{split}: not the synthetic views'
  return read
