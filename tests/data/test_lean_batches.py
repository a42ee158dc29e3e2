"""Lean training batches: labels at the losses' grid, decoded-only streams for on-device augmentation,
and the device warp of labels on that coarser grid."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from dir_jax import losses
from dir_jax.data import augment, device_augment, input_pipeline, schema, settings

BATCH = 4
LABEL_SIZE = 32  # the released model's head grid
# A training example: the uint8 image at 256x256 plus labels at 32x32, MANO, intrinsics and ids.
MAX_BYTES_PER_EXAMPLE = 0.3e6


@pytest.fixture(scope='module')
def builder(tfds_dirs):
  return input_pipeline.get_builder(tfds_dirs[0])


def first_batches(builder, mano_pair, count=2, label_size=None, augment_on='host', **augment_overrides):
  config = settings.pipeline_config()
  config.shuffle_buffer_size = 16
  config.augment_on = augment_on
  config.augment.update(augment_overrides)
  ds = input_pipeline.create_train_dataset(builder, config, mano_pair, batch_size=BATCH, seed=3, label_size=label_size)
  batches = input_pipeline.numpy_batches(ds)
  return [next(batches) for _ in range(count)]


def test_lean_labels_are_what_the_losses_read_from_the_full_maps(builder, mano_pair):
  full = first_batches(builder, mano_pair)
  lean = first_batches(builder, mano_pair, label_size=LABEL_SIZE)
  for full_batch, lean_batch in zip(full, lean):
    assert lean_batch['seg'].shape == (BATCH, LABEL_SIZE, LABEL_SIZE) and lean_batch['seg'].dtype == np.uint8
    assert lean_batch['dense'].shape == (BATCH, LABEL_SIZE, LABEL_SIZE, 3) and lean_batch['dense'].dtype == np.float32
    np.testing.assert_array_equal(lean_batch['seg'], losses.downsample_seg_nearest(full_batch['seg'], LABEL_SIZE))
    # TensorFlow's and JAX's half-pixel bilinear resize: equal up to float32 rounding.
    np.testing.assert_allclose(
        lean_batch['dense'], losses.downsample_dense_bilinear(full_batch['dense'], LABEL_SIZE), rtol=0, atol=1e-6
    )
    # The loss's own resampling leaves labels already at its grid unchanged.
    np.testing.assert_array_equal(losses.downsample_seg_nearest(lean_batch['seg'], LABEL_SIZE), lean_batch['seg'])
    np.testing.assert_array_equal(
        losses.downsample_dense_bilinear(lean_batch['dense'], LABEL_SIZE), lean_batch['dense']
    )
    for key in full_batch:
      if key not in ('seg', 'dense'):
        np.testing.assert_array_equal(lean_batch[key], full_batch[key], err_msg=key)
  # The labels hold hands: the comparison above is not one of empty maps.
  assert np.isin(lean[0]['seg'], [schema.SEG_RIGHT, schema.SEG_LEFT]).any()


def test_a_lean_example_is_under_0_3_mb(builder, mano_pair):
  (batch,) = first_batches(builder, mano_pair, count=1, label_size=LABEL_SIZE)
  bytes_per_example = sum(value.nbytes for value in batch.values()) / BATCH
  assert batch['image'].dtype == np.uint8 and batch['image'].shape[1:] == (schema.IMAGE_SIZE, schema.IMAGE_SIZE, 3)
  assert bytes_per_example <= MAX_BYTES_PER_EXAMPLE, bytes_per_example


def test_device_mode_ships_the_decoded_examples_in_the_training_order(builder, mano_pair):
  """`augment_on='device'`: the same examples in the same order as the host stream, not augmented (the
  host stream with every augmentation switched off is its decoded examples, up to the rounding of the
  identity warp's camera and MANO updates)."""
  off = dict(flip=False, rotate=False, zoom=False, translate=False, motion_blur=False, color=False)
  decoded = first_batches(builder, mano_pair, label_size=LABEL_SIZE, augment_on='device')
  host_off = first_batches(builder, mano_pair, label_size=LABEL_SIZE, **off)
  augmented = first_batches(builder, mano_pair, label_size=LABEL_SIZE)
  for decoded_batch, off_batch, augmented_batch in zip(decoded, host_off, augmented):
    for key in off_batch:
      if key == 'intrinsics' or key.startswith('mano_'):  # host: the identity warp's K' and w' = R (w + t) - w
        np.testing.assert_allclose(decoded_batch[key], off_batch[key], rtol=1e-6, atol=1e-7, err_msg=key)
      else:
        np.testing.assert_array_equal(decoded_batch[key], off_batch[key], err_msg=key)
    np.testing.assert_array_equal(decoded_batch['image_id'], augmented_batch['image_id'])
    assert not np.array_equal(decoded_batch['image'], augmented_batch['image'])


def test_unknown_augment_on_and_oversized_labels_are_refused(builder, mano_pair):
  with pytest.raises(ValueError, match=r"config.data.augment_on must be one of \('host', 'device'\)"):
    first_batches(builder, mano_pair, augment_on='gpu')
  example = {'seg': tf.zeros([16, 16], tf.int32), 'dense': tf.zeros([16, 16, 3])}
  with pytest.raises(ValueError, match='label_size must be in'):
    input_pipeline.shrink_labels(example, 17)


def _block_labels(rng, grid: int, block: int):
  """(grid * block)^2 seg and dense maps constant on block x block cells, and their (grid)^2 versions."""
  seg_small = rng.integers(0, 3, (grid, grid)).astype(np.int32)
  dense_small = rng.random((grid, grid, 3)).astype(np.float32)
  expand = lambda a: np.repeat(np.repeat(a, block, axis=0), block, axis=1)
  return (expand(seg_small), expand(dense_small)), (seg_small, dense_small)


@pytest.mark.parametrize(
    'geometry',
    [
        dict(flip=True, angle_rad=0.0, translation_px=(0.0, 0.0)),
        dict(flip=False, angle_rad=math.pi / 2, translation_px=(16.0, -8.0)),
        dict(flip=True, angle_rad=-math.pi / 2, translation_px=(-24.0, 8.0)),
    ],
    ids=['flip', 'quarter-turn-shift', 'flip-quarter-turn-shift'],
)
def test_device_warp_of_coarse_labels_equals_the_warp_of_full_labels(mano_pair, geometry):
  """Labels on a grid 8x coarser than the image are warped on their own grid (`grid_scale`): for maps
  constant on 8x8 cells and warps that map cells onto cells (flips, quarter turns, shifts by whole
  cells) this equals warping the full-size maps and taking the losses' nearest samples."""
  block, grid = 8, 8
  size = block * grid
  rng = np.random.default_rng(1)
  (seg_full, dense_full), (seg_small, dense_small) = _block_labels(rng, grid, block)
  example = {
      'image': jnp.asarray(rng.random((size, size, 3)).astype(np.float32) * 255.0),
      'intrinsics': jnp.asarray([[100.0, 0.0, size / 2], [0.0, 100.0, size / 2], [0.0, 0.0, 1.0]], jnp.float32),
  }
  for side in schema.SIDES:
    for key, shape in schema.MANO_SHAPES.items():
      example[augment.mano_feature(side, key)] = jnp.zeros(shape, jnp.float32)
  params = {
      'flip': jnp.asarray(geometry['flip']),
      'angle_rad': jnp.float32(geometry['angle_rad']),
      'zoom': jnp.float32(1.0),
      'translation_px': jnp.asarray(geometry['translation_px'], jnp.float32),
  }
  constants = augment.mano_constants(mano_pair)
  warp = lambda seg, dense: device_augment.apply_geometry(
      dict(example, seg=jnp.asarray(seg), dense=jnp.asarray(dense)), params, constants
  )
  full, coarse = warp(seg_full, dense_full), warp(seg_small, dense_small)
  np.testing.assert_array_equal(coarse['image'], full['image'])
  np.testing.assert_array_equal(coarse['intrinsics'], full['intrinsics'])
  np.testing.assert_array_equal(coarse['seg'], losses.downsample_seg_nearest(full['seg'][None], grid)[0])
  np.testing.assert_array_equal(coarse['dense'], np.asarray(full['dense'])[::block, ::block])
  assert not np.array_equal(coarse['seg'], seg_small)  # the warp moved the labels


def test_labels_on_a_grid_that_is_not_the_image_scaled_down_are_refused():
  with pytest.raises(ValueError, match='scaled down by one factor'):
    device_augment.grid_scale((64, 64), (8, 16))
  with pytest.raises(ValueError, match='scaled down by one factor'):
    device_augment.grid_scale((64, 64), (128, 128))
  assert device_augment.grid_scale((256, 256), (32, 32)) == 0.125


def test_resized_noise_std():
  assert device_augment.resized_noise_std(64, 64) == 1.0
  # 256 -> 64: antialiased linear weights (0.5, 1.5, ..., 3.5, 3.5, ..., 0.5) / 16 per axis, sum of squares.
  np.testing.assert_allclose(device_augment.resized_noise_std(256, 64), 42.0 / 256.0, rtol=1e-6)


def _random_batch(rng, batch_size, size, label_size):
  batch = {
      'image': jnp.asarray(rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)),
      'seg': jnp.asarray(rng.integers(0, 3, (batch_size, label_size, label_size)).astype(np.uint8)),
      'dense': jnp.asarray(rng.random((batch_size, label_size, label_size, 3)).astype(np.float32)),
      'intrinsics': jnp.tile(
          jnp.asarray([[300.0, 0.0, size / 2], [0.0, 310.0, size / 2], [0.0, 0.0, 1.0]]), (batch_size, 1, 1)
      ),
  }
  for side in schema.SIDES:
    for key, shape in schema.MANO_SHAPES.items():
      values = rng.normal(size=(batch_size,) + shape).astype(np.float32) * 0.1
      if key == 'root_rotmat':
        values = np.tile(np.eye(3, dtype=np.float32), (batch_size, 1, 1))
      batch[augment.mano_feature(side, key)] = jnp.asarray(values)
  return batch


def test_augmenting_at_the_input_side_keeps_the_targets_and_resembles_the_full_size_image(mano_pair):
  """`output_size`: the image is resized first and augmented at the network's side; the draws, the
  camera, the MANO parameters and the labels are those of the full-size augmentation, and the image is
  close to the full-size augmented image resized (smooth images: resampling differences are small)."""
  size, side, batch_size = 128, 32, 3
  rng = np.random.default_rng(2)
  batch = _random_batch(rng, batch_size, size, 16)
  # A smooth image, so that resizing and warping nearly commute.
  yy, xx = np.mgrid[0:size, 0:size] / size
  smooth = np.stack([128 + 100 * np.sin(3 * xx + 2 * yy), 128 + 100 * np.cos(2 * xx - yy), 255 * xx * yy], -1)
  batch['image'] = jnp.asarray(np.tile(smooth[None], (batch_size, 1, 1, 1)).round().astype(np.uint8))
  config = settings.augment_config()
  config.color_noise_std = 0.0
  constants = augment.mano_constants(mano_pair)
  key = device_augment.run_key(0)
  full = device_augment.augment_batch(batch, key, 5, constants, config)
  small = device_augment.augment_batch(batch, key, 5, constants, config, output_size=side)
  assert small['image'].shape == (batch_size, side, side, 3) and small['image'].dtype == jnp.uint8
  for name in device_augment.AUGMENTED_KEYS:
    if name != 'image':
      np.testing.assert_array_equal(small[name], full[name], err_msg=name)
  resized = jax.image.resize(full['image'].astype(jnp.float32), small['image'].shape, 'linear', antialias=True)
  inside = np.asarray(resized).min(axis=-1) > 8  # away from the black border the warp brings in
  difference = np.abs(np.asarray(small['image'], np.float32) - np.asarray(resized))[inside]
  assert inside.mean() > 0.3
  # Measured: median 0.24 levels, 95th percentile 0.84 (of 0..255).
  assert np.median(difference) < 1.0 and np.percentile(difference, 95) < 3.0, np.percentile(difference, [50, 95])
