"""The tf.data pipeline: batch format, determinism, process shards, eval padding, TF off the GPU."""

import numpy as np
import pytest
import tensorflow as tf

from dir_jax.data import augment, input_pipeline, normalize, schema, settings
from tests.data import conftest

BATCH = 4


def small_config(**augment_overrides):
  config = settings.pipeline_config()
  config.shuffle_buffer_size = 16
  config.augment.update(augment_overrides)
  return config


@pytest.fixture(scope='module')
def builder(tfds_dirs):
  return input_pipeline.get_builder(tfds_dirs[0])


def train_batches(builder, mano_pair, seed, count, process_index=0, process_count=1, batch_size=BATCH, start_step=0):
  ds = input_pipeline.create_train_dataset(
      builder,
      small_config(),
      mano_pair,
      batch_size=batch_size,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
      start_step=start_step,
  )
  batches = input_pipeline.numpy_batches(ds)
  return [next(batches) for _ in range(count)]


def eval_batches(builder, split='test', batch_size=BATCH, process_index=0, process_count=1, config=None):
  ds, num_steps = input_pipeline.create_eval_dataset(
      builder,
      config or small_config(),
      batch_size=batch_size,
      split=split,
      process_index=process_index,
      process_count=process_count,
  )
  batches = list(input_pipeline.numpy_batches(ds))
  assert len(batches) == num_steps
  return batches


def valid_ids(batches) -> list[int]:
  return [int(i) for batch in batches for i in batch['image_id'][batch['valid']]]


def test_train_batch_format(builder, mano_pair):
  (batch,) = train_batches(builder, mano_pair, seed=0, count=1)
  size = schema.IMAGE_SIZE
  want = {
      'image': ((BATCH, size, size, 3), np.uint8),
      'seg': ((BATCH, size, size), np.int32),
      'dense': ((BATCH, size, size, 3), np.float32),
      'intrinsics': ((BATCH, 3, 3), np.float32),
      'capture': ((BATCH,), np.int32),
      'frame': ((BATCH,), np.int32),
      'image_id': ((BATCH,), np.int32),
  }
  for side in schema.SIDES:
    for key in schema.MANO_KEYS:
      want[augment.mano_feature(side, key)] = ((BATCH,) + schema.MANO_SHAPES[key], np.float32)
  assert set(batch) == set(want)
  for key, (shape, dtype) in want.items():
    assert batch[key].shape == shape and batch[key].dtype == dtype, key
  assert set(np.unique(batch['seg'])) <= {schema.SEG_BACKGROUND, schema.SEG_LEFT, schema.SEG_RIGHT}
  assert 0.0 <= batch['dense'].min() and batch['dense'].max() <= 1.0
  np.testing.assert_array_equal(batch['dense'][batch['seg'] == 0], 0.0)
  assert set(batch['image_id'].tolist()) <= set(conftest.IMAGE_IDS['train'])


def test_train_is_deterministic_for_a_seed(builder, mano_pair):
  first = train_batches(builder, mano_pair, seed=5, count=3)
  again = train_batches(builder, mano_pair, seed=5, count=3)
  other = train_batches(builder, mano_pair, seed=6, count=3)
  for batch, repeat in zip(first, again):
    for key in batch:
      np.testing.assert_array_equal(batch[key], repeat[key], err_msg=key)
  assert not all(np.array_equal(a['image'], b['image']) for a, b in zip(first, other))
  seeds = {input_pipeline.process_seed(seed, index) for seed in (5, 6) for index in (0, 1)}
  assert len(seeds) == 4


@pytest.mark.parametrize('split', ['train', 'test'])
@pytest.mark.parametrize('process_count', [2, 3])
def test_process_shards_are_disjoint_and_cover_the_split(builder, split, process_count):
  shards = [
      valid_ids(eval_batches(builder, split, process_index=i, process_count=process_count))
      for i in range(process_count)
  ]
  every_id = sorted(i for shard in shards for i in shard)
  assert every_id == conftest.IMAGE_IDS[split]
  assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_train_epochs_see_each_example_of_the_process_shard_once(builder, mano_pair):
  # 12 train examples: 2 processes x 2 steps of 3 per epoch.
  for index in range(2):
    shard = sorted(valid_ids(eval_batches(builder, 'train', process_index=index, process_count=2)))
    batches = train_batches(builder, mano_pair, 0, 4, index, 2, batch_size=3)
    epochs = [np.concatenate([b['image_id'] for b in batches[i : i + 2]]) for i in (0, 2)]
    for epoch in epochs:
      assert sorted(epoch.tolist()) == shard
    assert not np.array_equal(epochs[0], epochs[1])


def test_start_step_resumes_the_stream_exactly(builder, mano_pair):
  # 3 steps per epoch: the resumed stream starts inside epoch 0 and crosses into epoch 1.
  fresh = train_batches(builder, mano_pair, seed=2, count=6)
  resumed = train_batches(builder, mano_pair, seed=2, count=4, start_step=2)
  for want, got in zip(fresh[2:], resumed):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_train_steps_per_epoch_is_set_by_the_smallest_shard(builder):
  assert input_pipeline.train_steps_per_epoch(builder, 'train', BATCH, 1) == 3
  assert input_pipeline.train_steps_per_epoch(builder, 'train', 1, 5) == 2  # shards of 3, 3, 2, 2, 2
  with pytest.raises(ValueError, match='fewer than the batch'):
    input_pipeline.train_steps_per_epoch(builder, 'train', 5, 3)


def test_eval_pads_the_last_batch_and_keeps_steps_equal_across_processes(builder):
  single = eval_batches(builder, 'test', batch_size=BATCH)
  assert len(single) == 3  # 9 examples
  np.testing.assert_array_equal([b['valid'].sum() for b in single], [4, 4, 1])
  np.testing.assert_array_equal(single[-1]['valid'], [True, False, False, False])
  assert sorted(valid_ids(single)) == conftest.IMAGE_IDS['test']
  # Shards of 5 and 4 examples: both processes run 2 steps, the second process's last is all padding.
  shards = [eval_batches(builder, 'test', batch_size=BATCH, process_index=i, process_count=2) for i in range(2)]
  assert [len(s) for s in shards] == [2, 2]
  np.testing.assert_array_equal([b['valid'].sum() for b in shards[1]], [4, 0])
  padding = shards[1][-1]
  assert np.all(np.isfinite(padding['intrinsics'])) and np.all(padding['intrinsics'][:, 2, 2] == 1.0)


def test_eval_is_not_augmented(builder, examples):
  """Every valid row is its example as tfds decodes it (`examples`): labels, camera, MANO and image."""
  batches = eval_batches(builder, 'test', batch_size=BATCH)
  by_id = {int(example['image_id']): example for example in examples['test']}
  for batch in batches:
    for row in np.flatnonzero(batch['valid']):
      example = by_id[int(batch['image_id'][row])]
      np.testing.assert_array_equal(batch['seg'][row], example['seg'][..., 0])
      np.testing.assert_allclose(batch['dense'][row], example['dense'] / 255.0, atol=1e-6)
      np.testing.assert_array_equal(batch['intrinsics'][row], example['intrinsics'])
      for side in schema.SIDES:
        for key in schema.MANO_KEYS:
          np.testing.assert_array_equal(batch[augment.mano_feature(side, key)][row], example['mano'][side][key])
      np.testing.assert_array_equal(batch['image'][row], example['image'])
      assert batch['frame'][row] == example['frame'] and batch['capture'][row] == example['capture']
      # The evaluation fields of the real builder (interhand26m >= 1.1.0) pass through as well.
      np.testing.assert_array_equal(batch['joint_3d_cam_m'][row], example['joint_3d_cam_m'])
      np.testing.assert_array_equal(batch['joint_3d_valid'][row], example['joint_3d_valid'])
      assert schema.HAND_TYPES[batch['hand_type'][row]] == example['hand_type'].decode() == 'interacting'


def test_color_on_eval_switch(builder):
  plain = eval_batches(builder, 'test')
  config = small_config(color_on_eval=True)
  noisy, again = eval_batches(builder, 'test', config=config), eval_batches(builder, 'test', config=config)
  assert not np.array_equal(plain[0]['image'], noisy[0]['image'])
  np.testing.assert_array_equal(noisy[0]['image'], again[0]['image'])
  np.testing.assert_array_equal(plain[0]['seg'], noisy[0]['seg'])


def test_builder_directory_is_accepted(tfds_dirs, builder):
  from_directory = input_pipeline.get_builder(tfds_dirs[1])
  assert from_directory.info.splits['test'].num_examples == builder.info.splits['test'].num_examples


def test_missing_dataset_says_how_to_build_it(tmp_path):
  for name, config in (('interhand26m', 'interacting'), ('interhand26m/all', 'all')):
    with pytest.raises(
        FileNotFoundError, match=f'tfds build data_prep/interhand26m --config {config} --manual_dir RAW'
    ):
      input_pipeline.get_builder(str(tmp_path), name)


def test_tensorflow_sees_no_gpu(builder):
  input_pipeline.create_eval_dataset(builder, small_config(), batch_size=BATCH)
  assert tf.config.get_visible_devices('GPU') == []


def test_normalize_image():
  image = np.zeros((2, 4, 4, 3), np.uint8)
  image[1] = 255
  out = np.asarray(normalize.normalize_image(image))
  mean, std = np.array(normalize.IMAGENET_MEAN_RGB), np.array(normalize.IMAGENET_STD_RGB)
  np.testing.assert_allclose(out[0, 0, 0], -mean / std, rtol=1e-6)
  np.testing.assert_allclose(out[1, 3, 3], (1 - mean) / std, rtol=1e-6)
  assert out.dtype == np.float32
